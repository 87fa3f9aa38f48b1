//! `release-nixos`: the cron pipeline. For every release of the config: create the channel
//! release ([`crate::release::create`]), mirror its closure into the global cache
//! ([`crate::mirror`]), for `mirror: true` its source tarballs ([`crate::tarballs`]), and move
//! the channel link once all are complete and verified (sources upstream lacks are listed); then
//! optionally collect garbage ([`crate::gc`]) and publish to IPFS ([`crate::ipfs::publish`]).
//!
//! The whole run holds the mirror's lock (`DIR/.lock`). One failing channel does not stop the
//! others; the report lists every failure. IPFS is the last step: a failure there leaves the
//! mirror on disk complete and valid, and is reported as a failure of the run. `lastsync` files
//! are written only after a run in which every step succeeded; then `index.html`, the mirror's
//! front page ([`crate::front_page`]), shows the mirror as the run leaves it.
//!
//! With a bucket (`bucket`), releases are made in the local `dir`, their closures mirrored into
//! the bucket's cache, then each release is uploaded and its channel object written
//! ([`crate::release::bucket`]), all under the bucket's lock (`PREFIX/.lock`); `--gc` works on
//! the bucket ([`crate::gc::collect_bucket`]). What needs the mirror on disk (IPFS, source
//! tarballs, `programs.sqlite`) is refused before anything is done.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::binary_cache::{self, LocalCache, Upstream, BINARY_CACHE_DIR};
use crate::config::{Config, Release as ReleaseConfig};
use crate::fetch::{FetchConfig, Fetcher};
use crate::front_page;
use crate::fsutil::{self, DirLock};
use crate::gc::{self, GcReport};
use crate::hydra::HydraClient;
use crate::ipfs::publish::{self, PublishOptions, PublishReport};
use crate::mirror::{self, MirrorJob, MirrorReport, PrintFormat};
use crate::release::{self, create::NewRelease};
use crate::signature::PublicKey;
use crate::status::{self, MirrorStatus};
use crate::storage::{CacheStore, S3Location, S3Lock, S3Store};
use crate::tarballs::{self, TarballGcReport, TarballJob, TarballReport};

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
    /// How `print_only` lists the NARs to fetch.
    pub print_format: PrintFormat,
    /// Delete old releases and unreferenced cache files after mirroring.
    pub gc: bool,
    /// Wait for the lock instead of failing.
    pub wait_lock: bool,
    /// Let a channel move back to an older release.
    pub force: bool,
    /// Leave images out of releases copied from a published channel.
    pub skip_images: bool,
    /// HTTP settings.
    pub fetch: FetchConfig,
    /// Keys from the command line (added to the config's).
    pub trusted_keys: Vec<PublicKey>,
    /// Whether narinfo signatures are checked.
    pub check_sigs: bool,
    /// Whether each NAR is decompressed and checked against its narinfo's signed `NarHash`
    /// and `NarSize` (else only `FileHash` and `FileSize`, which no signature covers).
    pub check_nar_hash: bool,
    /// Publish the mirror to IPFS at the end (never with `print_only`).
    pub ipfs: Option<PublishOptions>,
    /// Mirror into this bucket (`s3://BUCKET/PREFIX`) instead of `dir`, which then is only
    /// where releases are made before they are uploaded.
    pub bucket: Option<S3Location>,
}

/// What happened to one channel.
#[derive(Debug)]
pub struct ChannelOutcome {
    /// The channel.
    pub channel: String,
    /// The release directory, once known.
    pub release: Option<PathBuf>,
    /// The mirror report, once the closure was mirrored.
    pub mirror: Option<MirrorReport>,
    /// The sources of the release, for a channel with `mirror: true`, once mirrored.
    pub tarballs: Option<TarballReport>,
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
    /// The source tarball collection of `--gc`.
    pub tarballs_gc: Option<TarballGcReport>,
    /// The IPFS publication, when it was asked for and succeeded.
    pub ipfs: Option<PublishReport>,
    /// The mirror as the run left it (what the front page shows); none with `--print-only` or
    /// when it could not be read (then counted in `errors`).
    pub state: Option<MirrorStatus>,
    /// A failure outside any one channel (GC, IPFS, the front page).
    pub errors: Vec<String>,
}

impl ReleaseReport {
    /// Whether every step succeeded.
    pub fn is_success(&self) -> bool {
        self.errors.is_empty() && self.channels.iter().all(|c| c.error.is_none())
    }
}

/// Makes sure `--tmpdir` is a directory nixipfs can write to, creating it if missing.
fn check_tmpdir(tmpdir: &Path) -> Result<()> {
    fsutil::check_dir_arg(tmpdir, "temporary directory (--tmpdir)")?;
    if let Err(e) = std::fs::create_dir_all(tmpdir) {
        bail!(
            "cannot create the temporary directory (--tmpdir) {}: {e}",
            tmpdir.display()
        );
    }
    if let Err(e) = fsutil::temp_file_in(tmpdir) {
        bail!(
            "cannot write to the temporary directory (--tmpdir) {}: {e}; pass a directory \
             nixipfs can write to",
            tmpdir.display()
        );
    }
    Ok(())
}

/// Runs the pipeline under the mirror's lock; `--print-only` lines, and the result lines of the
/// IPFS publication, go to `out`.
pub async fn run(
    opts: &ReleaseNixosOptions,
    out: &mut (dyn std::io::Write + Send),
) -> Result<ReleaseReport> {
    let dir = fsutil::absolute(&opts.dir)?;
    if opts.bucket.is_some() {
        check_bucket_run(opts)?;
    }
    let _lock = DirLock::acquire(&dir, opts.wait_lock)?;
    // Before Hydra is asked anything: a run that cannot write its downloads fails at once.
    check_tmpdir(&opts.tmpdir)?;
    let Some(location) = &opts.bucket else {
        let cache = LocalCache::create(&dir.join(BINARY_CACHE_DIR))?;
        return run_locked(opts, &dir, CacheStore::dir(cache), None, out).await;
    };
    // A bucket: its lock (none with `--print-only`, which writes nothing there), and its cache
    // known from one listing.
    let root = S3Store::connect(location, &opts.fetch)?;
    let lock = if opts.print_only {
        None
    } else {
        Some(S3Lock::acquire(&root, opts.wait_lock).await?)
    };
    let result = async {
        let store = CacheStore::open_bucket(
            root.sub(BINARY_CACHE_DIR),
            Some(&opts.tmpdir),
            !opts.print_only,
        )
        .await?;
        run_locked(opts, &dir, store, Some(&root), out).await
    }
    .await;
    if let Some(lock) = lock {
        if let Err(e) = lock.release().await {
            tracing::warn!("cannot release the lock: {e:#}");
        }
    }
    result
}

/// What a bucket target cannot do yet is refused before anything is done.
fn check_bucket_run(opts: &ReleaseNixosOptions) -> Result<()> {
    if opts.ipfs.is_some() && !opts.print_only {
        bail!(
            "publishing to IPFS reads the mirror from disk, so it needs the disk target; pass \
             --no-ipfs with a bucket target (or mirror to a directory with --dir)"
        );
    }
    for (i, rel) in opts.config.releases.iter().enumerate() {
        if rel.mirror {
            bail!(
                "releases[{i}].mirror (channel {}): source tarballs are mirrored to disk only; \
                 set `mirror: false` for a bucket target",
                rel.channel
            );
        }
        if rel.source.is_none() && rel.programs {
            bail!(
                "releases[{i}].programs (channel {}): programs.sqlite is made from the NARs of \
                 a cache on disk; set `programs: false` for a bucket target, or copy the \
                 published release with `source`",
                rel.channel
            );
        }
    }
    Ok(())
}

/// The run, under the locks.
async fn run_locked(
    opts: &ReleaseNixosOptions,
    dir: &Path,
    store: CacheStore,
    root: Option<&S3Store>,
    out: &mut (dyn std::io::Write + Send),
) -> Result<ReleaseReport> {
    let dir = dir.to_path_buf();
    let releases_dir = dir.join("releases");
    let channels_dir = dir.join("channels");
    for d in [&releases_dir, &channels_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    fsutil::remove_stale_temp_files(&channels_dir)?;
    // What a killed run was downloading; the temp dir is used under this lock only.
    fsutil::remove_stale_temp_files(&opts.tmpdir)?;
    let cache = store.work().clone();
    let fetcher = Fetcher::new(opts.fetch.clone())?;
    let hydra = HydraClient::new(fetcher.clone(), &opts.config.hydra);
    let mut given = opts.config.trusted_public_keys.clone();
    given.extend(opts.trusted_keys.iter().cloned());
    let keys = binary_cache::trusted_keys_for(&opts.config.cache, &given, opts.check_sigs);
    let upstream = Upstream::new(fetcher, &opts.config.cache, keys);

    for rel in opts.config.releases.iter() {
        if rel.source.is_none() && !rel.programs {
            tracing::warn!(
                "channel {}: `programs: false`: its releases have no programs.sqlite, so \
                 command-not-found finds nothing on their clients",
                rel.channel
            );
        }
    }
    let mut report = ReleaseReport::default();
    // A NAR shared by two channels is listed once.
    let mut listed = UniqueLines::new(out);
    for rel in &opts.config.releases {
        let mut outcome = ChannelOutcome {
            channel: rel.channel.clone(),
            release: None,
            mirror: None,
            tarballs: None,
            moved: false,
            error: None,
        };
        if let Err(e) = mirror_channel(
            opts,
            rel,
            &dir,
            &store,
            root,
            &upstream,
            &hydra,
            &mut outcome,
            &mut listed,
        )
        .await
        {
            tracing::error!("channel {}: {e:#}", rel.channel);
            outcome.error = Some(format!("{e:#}"));
        }
        report.channels.push(outcome);
    }
    listed.finish().context("cannot write to standard output")?;
    if !opts.print_only {
        // When each channel last succeeded, whatever the others did.
        let succeeded: Vec<&str> = report
            .channels
            .iter()
            .filter(|c| c.error.is_none())
            .map(|c| c.channel.as_str())
            .collect();
        status::record_channel_success(&dir, &succeeded)?;
        if succeeded.len() == report.channels.len() {
            // Every release is complete: what another downloader left unused is not needed.
            match cache.clear_staging() {
                Ok(0) => {}
                Ok(n) => tracing::info!("removed the staging area ({n} files left unused)"),
                Err(e) => tracing::warn!("{e:#}"),
            }
        }
    }

    if opts.gc && !opts.print_only {
        let keep: Vec<(String, Option<u32>)> = opts
            .config
            .releases
            .iter()
            .map(|r| (r.channel.clone(), r.keep))
            .collect();
        let collected = match root {
            Some(root) => collect_bucket(&keep, root).await,
            None => {
                let (gc_dir, gc_cache) = (dir.clone(), cache.clone());
                tokio::task::spawn_blocking(move || collect(&keep, &gc_dir, &gc_cache))
                    .await
                    .context("the garbage collector failed")
                    .and_then(|r| r)
            }
        };
        match collected {
            Ok((deleted, gc, tarballs_gc)) => {
                report.releases_deleted = deleted;
                report.gc = Some(gc);
                report.tarballs_gc = tarballs_gc;
            }
            Err(e) => {
                tracing::error!("garbage collection: {e:#}");
                report.errors.push(format!("garbage collection: {e:#}"));
            }
        }
    }

    if let Some(ipfs) = opts.ipfs.as_ref().filter(|_| !opts.print_only) {
        match publish::publish(ipfs, out).await {
            Ok(published) => report.ipfs = Some(published),
            Err(e) => {
                tracing::error!("publishing to IPFS failed: {e:#}");
                report.errors.push(format!("IPFS: {e:#}"));
            }
        }
    }

    // Last: only a run in which every step, IPFS included, succeeded counts as a sync.
    if report.is_success() && !opts.print_only {
        if let Some(root) = root {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            for key in [
                "lastsync",
                "binary_cache/lastsync",
                "channels/lastsync",
                "releases/lastsync",
            ] {
                root.put(key, bytes::Bytes::from(format!("{now}\n")))
                    .await?;
            }
            return Ok(report);
        }
        for d in [
            &dir,
            &cache.root().to_path_buf(),
            &channels_dir,
            &releases_dir,
        ] {
            fsutil::write_lastsync(d)?;
        }
        let tarballs_dir = dir.join(tarballs::TARBALLS_DIR);
        if tarballs_dir.is_dir() {
            fsutil::write_lastsync(&tarballs_dir)?;
        }
    }

    // The front page shows the mirror as this run leaves it (on disk: a bucket has none).
    if !opts.print_only && root.is_none() {
        let keys = upstream
            .trusted_keys()
            .iter()
            .map(|k| k.to_string())
            .collect();
        match write_front_page(&dir, keys) {
            Ok(state) => report.state = Some(state),
            Err(e) => {
                tracing::error!("{e:#}");
                report.errors.push(format!("{e:#}"));
            }
        }
    }
    Ok(report)
}

/// Writes `DIR/index.html` from the mirror's state ([`crate::front_page`]); returns that state.
fn write_front_page(dir: &Path, trusted_keys: Vec<String>) -> Result<MirrorStatus> {
    let status = status::read(dir).context("cannot read the mirror for its front page")?;
    let page = front_page::render(&status, &front_page::PageOptions { trusted_keys });
    fsutil::write_if_changed(&dir.join(front_page::FILE), page.as_bytes())?;
    Ok(status)
}

/// Creates the channel's latest release, mirrors its closure and, once both are complete,
/// moves the channel link.
#[allow(clippy::too_many_arguments)]
async fn mirror_channel(
    opts: &ReleaseNixosOptions,
    rel: &ReleaseConfig,
    dir: &Path,
    store: &CacheStore,
    root: Option<&S3Store>,
    upstream: &Upstream,
    hydra: &HydraClient,
    outcome: &mut ChannelOutcome,
    out: &mut (dyn std::io::Write + Send),
) -> Result<()> {
    let cache = store.work();
    let release = if let Some(source) = &rel.source {
        let copied = release::published::copy_latest(&release::published::PublishedRelease {
            channel: &rel.channel,
            source,
            outdir: &dir.join("releases"),
            channels_dir: &dir.join("channels"),
            fetcher: upstream.fetcher(),
            hydra: Some(hydra),
            skip_images: opts.skip_images,
            force: opts.force,
            staging: Some(&dir.join(crate::binary_cache::STAGING_DIR)),
            print: opts.print_only.then_some(opts.print_format),
        })
        .await?;
        match copied {
            release::published::Outcome::Release(r) => r,
            release::published::Outcome::Older {
                nixname,
                eval_id,
                current,
            } => {
                tracing::warn!(
                    "channel {}: the published release {nixname} is older than the current {} \
                     (evaluation {eval_id} < {}); not copied, the channel stays (pass --force \
                     to move anyway)",
                    rel.channel,
                    current.nixname,
                    current.eval_id
                );
                return Ok(());
            }
        }
    } else {
        let new = NewRelease {
            channel: &rel.channel,
            project: &rel.project,
            jobset: &rel.jobset,
            job: &rel.job,
            outdir: &dir.join("releases"),
            hydra,
            upstream,
            target_cache: Some(opts.config.binary_cache_url()),
            tmpdir: Some(&opts.tmpdir),
            local: Some(cache),
            lock: None,
            print: opts.print_only.then_some(opts.print_format),
        };
        if rel.programs {
            release::create::create_latest_pending(&new).await?
        } else {
            release::create::create_latest(&new).await?
        }
    };
    outcome.release = Some(release.dir.clone());
    for entry in &release.listed {
        out.write_all(entry.as_bytes())
            .context("cannot write to standard output")?;
    }
    // A complete release is returned as it is; what an interrupted later write (such as
    // `missing-store-paths`) left in it goes now, under the lock.
    fsutil::remove_stale_temp_files(&release.dir)?;

    let roots = release::read_store_paths(&release.dir)?;
    let mirror = mirror::mirror_closure(
        &MirrorJob {
            cache: store,
            upstream,
            roots,
            release: Some(&release.dir),
            print_only: opts.print_only,
            print_format: opts.print_format,
            check_nar_hash: opts.check_nar_hash,
        },
        out,
    )
    .await?;
    tracing::info!("channel {}: {}", rel.channel, mirror.summary());
    let complete = mirror.is_complete();
    let failures = mirror.failures.len();
    outcome.mirror = Some(mirror);
    if !complete && !opts.print_only {
        anyhow::bail!(
            "the closure of {} is incomplete ({failures} failures); the channel stays where it is",
            release.dir.display()
        );
    }
    if rel.mirror {
        let sources = tarballs::mirror_sources(
            &TarballJob {
                dir,
                release: &release.dir,
                upstream,
                local: Some(cache),
                tmpdir: &opts.tmpdir,
                print_only: opts.print_only,
                print_format: opts.print_format,
                fsync: opts.fetch.fsync,
            },
            out,
        )
        .await
        .context("source tarballs (`mirror: true`)")?;
        tracing::info!("channel {}: {}", rel.channel, sources.summary());
        outcome.tarballs = Some(sources);
    }
    if opts.print_only {
        return Ok(());
    }
    if !release.complete && rel.programs {
        // A release made now from Hydra gets programs.sqlite, then its git-revision.
        let (dir, systems, cache, tmp) = (
            release.dir.clone(),
            rel.systems.clone(),
            cache.clone(),
            opts.tmpdir.clone(),
        );
        let made = tokio::task::spawn_blocking(move || {
            crate::programs::add_to_release(&dir, &systems, &cache, &tmp)
        })
        .await
        .context("making programs.sqlite failed")?
        .with_context(|| format!("cannot add programs.sqlite to {}", release.dir.display()))?;
        tracing::info!(
            "channel {}: programs.sqlite has {} programs ({} package outputs not in the mirror)",
            rel.channel,
            made.rows,
            made.not_mirrored
        );
        release::create::complete(&release)?;
    }
    let Some(root) = root else {
        outcome.moved =
            release::move_channel(dir, &rel.channel, &release.dir, &release.info, opts.force)?;
        return Ok(());
    };
    // A bucket: the release's files (`git-revision` last), then the channel pointer.
    let nixname = release
        .dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("a release directory has no name")?;
    let key = release::bucket::release_key(&rel.channel, nixname);
    let listing = root.sub(&key).list().await?;
    let uploaded =
        release::bucket::upload(root, &release.dir, &rel.channel, nixname, &listing).await?;
    if !uploaded.was_complete {
        tracing::info!(
            "channel {}: {} uploaded ({} files, {} there already)",
            rel.channel,
            root.url_of(&key),
            uploaded.files,
            uploaded.kept
        );
    }
    outcome.moved =
        release::bucket::move_channel(root, &rel.channel, nixname, &release.info, opts.force)
            .await?;
    // The bucket holds the release now: the local copies of the channel's other releases
    // (images included) are not needed any more; this one is kept so that a rerun does not
    // fetch its files again.
    prune_local_releases(&release.dir)?;
    Ok(())
}

/// Removes the channel's releases in the local directory of a bucket run, all but `keep`.
fn prune_local_releases(keep: &Path) -> Result<()> {
    let Some(channel_dir) = keep.parent() else {
        return Ok(());
    };
    for other in fsutil::read_dir_sorted(channel_dir)? {
        if other.file_name() != keep.file_name() && other.is_dir() && !other.is_symlink() {
            std::fs::remove_dir_all(&other)
                .with_context(|| format!("cannot remove {}", other.display()))?;
        }
    }
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

/// `--gc`: per channel keep the newest `keep` complete releases and the one the channel points
/// at; delete the rest; then collect the global cache against what remains.
/// `keep` gives each channel's number of releases to keep. Blocking.
fn collect(
    keep: &[(String, Option<u32>)],
    dir: &Path,
    cache: &LocalCache,
) -> Result<(Vec<PathBuf>, GcReport, Option<TarballGcReport>)> {
    let pruned = gc::prune_releases(dir, |channel| {
        keep.iter().find(|(c, _)| c == channel).map(|(_, k)| *k)
    })?;
    let report = if pruned.remaining.is_empty() {
        tracing::warn!("no release with a binary cache remains; the cache is not collected");
        GcReport::default()
    } else {
        gc::collect_cache(cache.root(), &pruned.remaining, false, &mut std::io::sink())?
    };
    // The source tarballs no remaining release needs.
    let sources = if dir.join(tarballs::TARBALLS_DIR).is_dir() {
        let collected = tarballs::collect(dir, false, &mut std::io::sink())?;
        tracing::info!("source tarballs: {}", collected.summary(false));
        Some(collected)
    } else {
        None
    };
    Ok((pruned.deleted, report, sources))
}

/// `--gc` in a bucket: as [`collect`], on one listing of the bucket ([`gc::collect_bucket`]).
async fn collect_bucket(
    keep: &[(String, Option<u32>)],
    root: &S3Store,
) -> Result<(Vec<PathBuf>, GcReport, Option<TarballGcReport>)> {
    let (deleted, report) = gc::collect_bucket(
        root,
        |channel| keep.iter().find(|(c, _)| c == channel).map(|(_, k)| *k),
        &mut std::io::sink(),
    )
    .await?;
    Ok((
        deleted
            .iter()
            .map(|k| PathBuf::from(root.url_of(k)))
            .collect(),
        report,
        None,
    ))
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
