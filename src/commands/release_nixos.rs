//! `release-nixos`: the cron pipeline. For every release of the config: create the channel
//! release, mirror its closure into the global cache, and move the channel link once both are
//! complete and verified; then optionally collect garbage and publish to IPFS.
//!
//! The whole run holds the mirror's lock (`DIR/.lock`). One failing channel does not stop the
//! others; the report lists every failure. `lastsync` files are written only after a run in which
//! every channel succeeded.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::binary_cache::{LocalCache, BINARY_CACHE_DIR};
use crate::commands::create_channel_release::{
    self, BuildInfo, CreateChannelReleaseOptions, COMPLETION_MARKER,
};
use crate::commands::garbage_collect::{self, GarbageCollectOptions, GcReport};
use crate::commands::update_binary_cache::{self, MirrorJob, UpdateReport};
use crate::config::{Config, Release as ReleaseConfig};
use crate::fetch::{FetchConfig, Fetcher};
use crate::fsutil::{self, DirLock};
use crate::hydra::HydraClient;
use crate::signature::PublicKey;

/// Options of `release-nixos`.
#[derive(Clone, Debug)]
pub struct ReleaseNixosOptions {
    /// The mirror directory.
    pub dir: PathBuf,
    /// Directory for temporary files (NARs of channel files while they are read). A run
    /// removes the temporary files an interrupted run left directly in it, so it must not be
    /// shared with another mirror's runs.
    pub tmpdir: PathBuf,
    /// The validated config.
    pub config: Config,
    /// Resolve closures and list NARs instead of downloading them; channels do not move.
    pub print_only: bool,
    /// Delete old releases and unreferenced cache files after mirroring.
    pub gc: bool,
    /// Wait for the lock instead of failing.
    pub wait_lock: bool,
    /// Let a channel move back to an older release.
    pub force: bool,
    /// HTTP settings.
    pub fetch: FetchConfig,
    /// Keys from the command line (added to the config's).
    pub trusted_keys: Vec<PublicKey>,
    /// Whether narinfo signatures are checked.
    pub check_sigs: bool,
}

/// What happened to one channel.
#[derive(Debug)]
pub struct ChannelOutcome {
    /// The channel.
    pub channel: String,
    /// The release directory, once known.
    pub release: Option<PathBuf>,
    /// The mirror report, once the closure was mirrored.
    pub mirror: Option<UpdateReport>,
    /// Whether the channel link now points at a different release.
    pub moved: bool,
    /// The failure, if any.
    pub error: Option<String>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct ReleaseReport {
    /// One entry per configured release.
    pub channels: Vec<ChannelOutcome>,
    /// Releases deleted by `--gc`.
    pub releases_deleted: Vec<PathBuf>,
    /// The cache collection of `--gc`.
    pub gc: Option<GcReport>,
    /// A failure outside any one channel (GC).
    pub errors: Vec<String>,
}

impl ReleaseReport {
    /// Whether every step succeeded.
    pub fn is_success(&self) -> bool {
        self.errors.is_empty() && self.channels.iter().all(|c| c.error.is_none())
    }
}

/// Runs the pipeline; `--print-only` lines go to `out`. The lock is held until the returned
/// guard is dropped, so a caller can publish to IPFS under the same lock.
pub async fn run(
    opts: &ReleaseNixosOptions,
    out: &mut (dyn std::io::Write + Send),
) -> Result<(ReleaseReport, DirLock)> {
    let dir = fsutil::absolute(&opts.dir)?;
    let lock = DirLock::acquire(&dir, opts.wait_lock)?;
    let releases_dir = dir.join("releases");
    let channels_dir = dir.join("channels");
    for d in [&releases_dir, &channels_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    fsutil::remove_stale_temp_files(&channels_dir)?;
    // What a killed run was downloading; the temp dir is used under this lock only.
    fsutil::remove_stale_temp_files(&opts.tmpdir)?;
    let cache = LocalCache::create(&dir.join(BINARY_CACHE_DIR))?;
    let fetcher = Fetcher::new(opts.fetch.clone())?;
    let hydra = HydraClient::new(fetcher.clone(), &opts.config.hydra);
    let mut given = opts.config.trusted_public_keys.clone();
    given.extend(opts.trusted_keys.iter().cloned());
    let keys = update_binary_cache::effective_keys(&opts.config.cache, &given, opts.check_sigs);

    for rel in opts.config.releases.iter().filter(|r| r.mirror) {
        tracing::warn!(
            "channel {}: `mirror: true` (source tarball mirroring) is not supported; the \
             channel is mirrored without its source tarballs",
            rel.channel
        );
    }
    let mut report = ReleaseReport::default();
    // A NAR shared by two channels is listed once.
    let mut out = UniqueLines::new(out);
    for rel in &opts.config.releases {
        let mut outcome = ChannelOutcome {
            channel: rel.channel.clone(),
            release: None,
            mirror: None,
            moved: false,
            error: None,
        };
        if let Err(e) = mirror_channel(
            opts,
            rel,
            &dir,
            &cache,
            &fetcher,
            &hydra,
            &keys,
            &mut outcome,
            &mut out,
        )
        .await
        {
            tracing::error!("channel {}: {e:#}", rel.channel);
            outcome.error = Some(format!("{e:#}"));
        }
        report.channels.push(outcome);
    }
    out.finish().context("cannot write to standard output")?;

    if opts.gc && !opts.print_only {
        match collect(opts, &dir, &cache) {
            Ok((deleted, gc)) => {
                report.releases_deleted = deleted;
                report.gc = Some(gc);
            }
            Err(e) => {
                tracing::error!("garbage collection: {e:#}");
                report.errors.push(format!("garbage collection: {e:#}"));
            }
        }
    }

    if report.is_success() && !opts.print_only {
        for d in [
            &dir,
            &cache.root().to_path_buf(),
            &channels_dir,
            &releases_dir,
        ] {
            fsutil::write_lastsync(d)?;
        }
    }
    Ok((report, lock))
}

#[allow(clippy::too_many_arguments)]
async fn mirror_channel(
    opts: &ReleaseNixosOptions,
    rel: &ReleaseConfig,
    dir: &Path,
    cache: &LocalCache,
    fetcher: &Fetcher,
    hydra: &HydraClient,
    keys: &[PublicKey],
    outcome: &mut ChannelOutcome,
    out: &mut (dyn std::io::Write + Send),
) -> Result<()> {
    let cr_opts = CreateChannelReleaseOptions {
        channel: rel.channel.clone(),
        project: rel.project.clone(),
        jobset: rel.jobset.clone(),
        job: rel.job.clone(),
        outdir: dir.join("releases"),
        hydra_url: opts.config.hydra.clone(),
        cache_url: opts.config.cache.clone(),
        target_cache: opts.config.target_cache.clone(),
        tmpdir: Some(opts.tmpdir.clone()),
        fetch: opts.fetch.clone(),
        trusted_keys: keys.to_vec(),
        local_cache: Some(cache.root().to_path_buf()),
    };
    let build = hydra
        .latest_finished(&rel.project, &rel.jobset, &rel.job)
        .await?;
    let release =
        create_channel_release::create_from_build(&cr_opts, fetcher, hydra, &build).await?;
    outcome.release = Some(release.dir.clone());
    // A complete release is returned as it is; what an interrupted later write (such as
    // `missing-store-paths`) left in it goes now, under the lock.
    fsutil::remove_stale_temp_files(&release.dir)?;

    let roots = update_binary_cache::read_store_paths(&release.dir.join("store-paths"))?;
    let mirror = update_binary_cache::mirror_closure(
        &MirrorJob {
            cache,
            fetcher,
            cache_url: &opts.config.cache,
            trusted_keys: keys.to_vec(),
            roots,
            release: Some(&release.dir),
            print_only: opts.print_only,
        },
        out,
    )
    .await?;
    tracing::info!("channel {}: {}", rel.channel, mirror.summary());
    let complete = mirror.is_complete();
    let failures = mirror.failures.len();
    outcome.mirror = Some(mirror);
    if opts.print_only {
        return Ok(());
    }
    if !complete {
        anyhow::bail!(
            "the closure of {} is incomplete ({failures} failures); the channel stays where it is",
            release.dir.display()
        );
    }
    outcome.moved = move_channel(dir, &rel.channel, &release.dir, &release.info, opts.force)?;
    Ok(())
}

/// A writer that passes each line on the first time it is written and drops repeats.
struct UniqueLines<'a> {
    inner: &'a mut (dyn std::io::Write + Send),
    seen: HashSet<Vec<u8>>,
    partial: Vec<u8>,
}

impl<'a> UniqueLines<'a> {
    fn new(inner: &'a mut (dyn std::io::Write + Send)) -> Self {
        UniqueLines {
            inner,
            seen: HashSet::new(),
            partial: Vec::new(),
        }
    }

    fn emit(&mut self, line: Vec<u8>) -> std::io::Result<()> {
        if self.seen.contains(&line) {
            return Ok(());
        }
        self.inner.write_all(&line)?;
        self.seen.insert(line);
        Ok(())
    }

    /// Writes what is left of an unfinished last line, and flushes.
    fn finish(&mut self) -> std::io::Result<()> {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.emit(rest)?;
        }
        self.inner.flush()
    }
}

impl std::io::Write for UniqueLines<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.partial.extend_from_slice(buf);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.emit(line)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Points `DIR/channels/CHANNEL` at `release_dir`, unless the current release is newer (and
/// `force` is not given). Returns whether the link changed.
pub fn move_channel(
    dir: &Path,
    channel: &str,
    release_dir: &Path,
    info: &BuildInfo,
    force: bool,
) -> Result<bool> {
    let link = dir.join("channels").join(channel);
    let target = fsutil::relative_path(&dir.join("channels"), release_dir);
    if let Ok(current) = std::fs::read_link(&link) {
        if current == target {
            return Ok(false);
        }
        let current_dir = dir.join("channels").join(&current);
        if let Ok(current_info) = BuildInfo::read(&current_dir) {
            if current_info.order_key() > info.order_key() && !force {
                tracing::warn!(
                    "channel {channel}: Hydra's latest release {} is older than the current {} \
                     (evaluation {} < {}); not moving back (pass --force to move anyway)",
                    info.nixname,
                    current_info.nixname,
                    info.eval_id,
                    current_info.eval_id
                );
                return Ok(false);
            }
        }
    }
    fsutil::atomic_symlink(&target, &link)?;
    tracing::info!("channel {channel} -> {}", target.display());
    Ok(true)
}

/// A release directory found on disk.
struct OnDisk {
    dir: PathBuf,
    info: Option<BuildInfo>,
    complete: bool,
}

/// `--gc`: per channel keep the newest `keep` complete releases and the one the channel points
/// at; delete the rest; then collect the global cache against what remains.
fn collect(
    opts: &ReleaseNixosOptions,
    dir: &Path,
    cache: &LocalCache,
) -> Result<(Vec<PathBuf>, GcReport)> {
    let releases_dir = dir.join("releases");
    let mut deleted = Vec::new();
    let mut remaining = Vec::new();
    for channel_entry in read_dir_sorted(&releases_dir)? {
        if !channel_entry.is_dir() {
            continue;
        }
        let channel = channel_entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let keep = opts
            .config
            .releases
            .iter()
            .find(|r| r.channel == channel)
            .map(|r| r.keep);
        let current = std::fs::read_link(dir.join("channels").join(&channel))
            .ok()
            .map(|t| fsutil::absolute(&dir.join("channels").join(t)))
            .transpose()?;
        let mut found: Vec<OnDisk> = read_dir_sorted(&channel_entry)?
            .into_iter()
            .filter(|p| {
                p.is_dir()
                    && !p
                        .file_name()
                        .is_some_and(|n| fsutil::is_temp_name(&n.to_string_lossy()))
            })
            .map(|p| OnDisk {
                info: BuildInfo::read(&p).ok(),
                complete: p.join(COMPLETION_MARKER).is_file(),
                dir: p,
            })
            .collect();
        // Newest first.
        found.sort_by_key(|r| std::cmp::Reverse(r.info.as_ref().map(BuildInfo::order_key)));
        let Some(keep) = keep else {
            // A channel no longer configured: leave it alone, but protect its files.
            remaining.extend(found.into_iter().filter(|r| r.complete).map(|r| r.dir));
            continue;
        };
        let current_key = current
            .as_ref()
            .and_then(|c| found.iter().find(|r| &r.dir == c))
            .and_then(|r| r.info.as_ref().map(BuildInfo::order_key));
        let mut kept = 0;
        for r in found {
            let is_current = current.as_ref() == Some(&r.dir);
            let keep_it = if is_current {
                true
            } else if r.complete {
                kept < keep.unwrap_or(u32::MAX)
            } else {
                // An unfinished release newer than the channel's may still be completed.
                match (&r.info, current_key) {
                    (Some(i), Some(c)) => i.order_key() > c,
                    (_, None) => true,
                    (None, Some(_)) => false,
                }
            };
            if r.complete && keep_it {
                kept += 1;
            }
            if keep_it {
                if r.dir.join(BINARY_CACHE_DIR).is_dir() {
                    remaining.push(r.dir);
                }
            } else {
                tracing::info!("deleting old release {}", r.dir.display());
                std::fs::remove_dir_all(&r.dir)
                    .with_context(|| format!("cannot delete {}", r.dir.display()))?;
                deleted.push(r.dir);
            }
        }
    }
    let gc = if remaining.is_empty() {
        tracing::warn!("no release with a binary cache remains; the cache is not collected");
        GcReport::default()
    } else {
        let mut sink = std::io::sink();
        garbage_collect::run(
            &GarbageCollectOptions {
                cache: cache.root().to_path_buf(),
                releases: remaining,
                dry_run: false,
            },
            &mut sink,
        )?
    };
    Ok((deleted, gc))
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for e in entries {
        out.push(
            e.with_context(|| format!("cannot list {}", dir.display()))?
                .path(),
        );
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn unique_lines_drop_repeats_across_writes() {
        let mut sink: Vec<u8> = Vec::new();
        {
            let mut out = UniqueLines::new(&mut sink);
            out.write_all(b"nar/a.nar.xz,sha256:1\nnar/b.nar.xz,")
                .expect("write");
            out.write_all(b"sha256:2\nnar/a.nar.xz,sha256:1\n")
                .expect("write");
            out.write_all(b"nar/b.nar.xz,sha256:2\nnar/c")
                .expect("write");
            out.finish().expect("finish");
        }
        assert_eq!(
            String::from_utf8(sink).expect("UTF-8"),
            "nar/a.nar.xz,sha256:1\nnar/b.nar.xz,sha256:2\nnar/c"
        );
    }
}
