//! Garbage collection: deleting old releases, and the narinfos and NARs of the global cache that
//! no remaining release links to.
//!
//! [`prune_releases`] keeps, per channel, the newest complete releases (as many as configured)
//! and the one the channel points at, and deletes the rest. [`collect_cache`] then deletes what
//! no given release needs. The set of live files is built from the given releases' `binary_cache/` views, plus the NAR of
//! every live narinfo (a NAR shared by two narinfos stays while either is live). The collector
//! refuses to run, deleting nothing, when any given release is missing, has no `binary_cache/`,
//! or links to a file that is not there: a half-visible world must never look like garbage. Only
//! what is plainly not a release among the given paths (the `lastsync` stamp a shell glob such as
//! `releases/*` also matches, hidden and temporary names) is skipped.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::binary_cache::{self, LocalCache, BINARY_CACHE_DIR};
use crate::fsutil;
use crate::narinfo::NarInfo;
use crate::progress::human_bytes;
use crate::release::{BuildInfo, COMPLETION_MARKER};

/// What a collection did (or would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Narinfos deleted.
    pub narinfos: usize,
    /// NARs deleted.
    pub nars: usize,
    /// Stale temp files removed.
    pub temp_files: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Files kept.
    pub kept: usize,
}

/// Whether a path given as a release is plainly something else: a regular file named
/// `lastsync` (the stamp beside the releases), or a hidden or temporary name. A missing path or
/// any other name is not: it is refused as a missing or incomplete release.
pub fn plainly_not_a_release(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') || fsutil::is_temp_name(name) {
        return true;
    }
    name == "lastsync" && fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Deletes the files of the cache at `cache_dir` that none of `releases` needs (with `dry_run`,
/// only lists them); each file is printed to `out` (`would delete` with `dry_run`). Deletes
/// nothing when a release is missing or its view is incomplete.
pub fn collect_cache(
    cache_dir: &Path,
    releases: &[PathBuf],
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<GcReport> {
    // A shell glob such as `releases/*` also matches the `lastsync` stamp and hidden or
    // temporary entries: those are skipped, while every other name must be a complete release.
    let given = releases.len();
    let releases: Vec<&PathBuf> = releases
        .iter()
        .filter(|r| {
            let skip = plainly_not_a_release(r);
            if skip {
                tracing::debug!("{}: not a release, skipped", r.display());
            }
            !skip
        })
        .collect();
    if releases.is_empty() && given > 0 {
        bail!(
            "none of the {given} paths given is a release (a `lastsync` stamp, hidden and \
             temporary names are skipped): refusing to collect, since every file would look \
             like garbage"
        );
    }
    if releases.is_empty() {
        bail!("no release given: refusing to collect, since every file would look like garbage");
    }
    let cache = LocalCache::open(cache_dir)
        .with_context(|| format!("cannot open the binary cache {}", cache_dir.display()))?;
    // Files are listed and printed under the name given; links are matched against the
    // resolved name, whatever symlinks lead to it.
    let root = fsutil::absolute(cache_dir)?;

    // Everything the releases link to; any problem aborts before a single deletion.
    let mut live: BTreeSet<PathBuf> = BTreeSet::new();
    for release in releases {
        let release = fsutil::absolute(release)?;
        if !release.is_dir() {
            bail!(
                "release {} does not exist: refusing to collect garbage against an incomplete view",
                release.display()
            );
        }
        live.extend(binary_cache::release_links(&release, cache.root())?);
    }
    // The NAR of every live narinfo stays too.
    let mut live_nars = BTreeSet::new();
    for rel in &live {
        if rel.extension().is_some_and(|e| e == "narinfo") && rel.parent() == Some(Path::new("")) {
            let file = root.join(rel);
            let text = fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let info = NarInfo::parse(&text)
                .with_context(|| format!("{} is not a valid narinfo", file.display()))?;
            fsutil::check_relative_path(&info.url)
                .with_context(|| format!("{} has an unsafe URL", file.display()))?;
            live_nars.insert(PathBuf::from(&info.url));
        }
    }
    live.extend(live_nars);

    let mut report = GcReport::default();
    let mut dead_narinfos = Vec::new();
    let mut dead_nars = Vec::new();
    let mut walk = walkdir::WalkDir::new(&root).min_depth(1).into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.with_context(|| format!("cannot list {}", root.display()))?;
        let name = entry.file_name().to_string_lossy();
        if fsutil::is_temp_name(&name) {
            if entry.file_type().is_dir() {
                // Removed whole; its contents are not listed on their own.
                walk.skip_current_dir();
            }
            if !dry_run {
                remove(entry.path())?;
            }
            writeln!(out, "{} {}", verb(dry_run), entry.path().display())?;
            report.temp_files += 1;
            continue;
        }
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(&root).unwrap_or(entry.path());
        let is_narinfo = rel.parent() == Some(Path::new("")) && name.ends_with(".narinfo");
        let is_nar = rel.starts_with("nar");
        if !is_narinfo && !is_nar {
            continue;
        }
        if live.contains(rel) {
            report.kept += 1;
            continue;
        }
        let size = entry.metadata().map(|m| m.len()).unwrap_or(0);
        if is_narinfo {
            dead_narinfos.push((entry.path().to_path_buf(), size));
        } else {
            dead_nars.push((entry.path().to_path_buf(), size));
        }
    }
    // Narinfos first, so that at every moment each remaining narinfo still has its NAR.
    for (files, count) in [
        (&dead_narinfos, &mut report.narinfos),
        (&dead_nars, &mut report.nars),
    ] {
        for (path, size) in files {
            if !dry_run {
                remove(path)?;
            }
            writeln!(out, "{} {}", verb(dry_run), path.display())?;
            *count += 1;
            report.bytes += size;
        }
    }
    Ok(report)
}

impl GcReport {
    /// The one-line summary; `dry_run` says what would be done.
    pub fn summary(&self, dry_run: bool) -> String {
        format!(
            "{} {} narinfos and {} NARs, {} {} bytes ({}); kept {} files",
            verb(dry_run),
            self.narinfos,
            self.nars,
            if dry_run { "would free" } else { "freed" },
            self.bytes,
            human_bytes(self.bytes),
            self.kept
        )
    }
}

fn verb(dry_run: bool) -> &'static str {
    if dry_run {
        "would delete"
    } else {
        "deleted"
    }
}

fn remove(path: &Path) -> Result<()> {
    let res = if fs::symlink_metadata(path).is_ok_and(|m| m.is_dir()) {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match res {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("cannot delete {}", path.display())),
    }
}

/// What [`prune_releases`] left and took.
#[derive(Clone, Debug, Default)]
pub struct Pruned {
    /// Releases deleted.
    pub deleted: Vec<PathBuf>,
    /// Releases kept that have a binary cache view: what the cache must still serve.
    pub remaining: Vec<PathBuf>,
}

/// A release directory found on disk.
struct OnDisk {
    dir: PathBuf,
    info: Option<BuildInfo>,
    complete: bool,
}

/// Deletes old releases under `DIR/releases`: per channel, keeps the one `DIR/channels/CHANNEL`
/// points at, the newest `keep` complete ones, and unfinished ones newer than the channel's
/// (they may still be completed). `keep_of(channel)` says how many to keep: `None` for a channel
/// no longer configured, whose releases are all kept; `Some(None)` to keep them all.
pub fn prune_releases(dir: &Path, keep_of: impl Fn(&str) -> Option<Option<u32>>) -> Result<Pruned> {
    let releases_dir = dir.join("releases");
    let mut pruned = Pruned::default();
    for channel_entry in fsutil::read_dir_sorted(&releases_dir)? {
        if !channel_entry.is_dir() {
            continue;
        }
        let channel = channel_entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let keep = keep_of(&channel);
        let current = fs::read_link(dir.join("channels").join(&channel))
            .ok()
            .map(|t| fsutil::absolute(&dir.join("channels").join(t)))
            .transpose()?;
        let mut found: Vec<OnDisk> = fsutil::read_dir_sorted(&channel_entry)?
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
            pruned
                .remaining
                .extend(found.into_iter().filter(|r| r.complete).map(|r| r.dir));
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
                    pruned.remaining.push(r.dir);
                }
            } else {
                tracing::info!("deleting old release {}", r.dir.display());
                fs::remove_dir_all(&r.dir)
                    .with_context(|| format!("cannot delete {}", r.dir.display()))?;
                pruned.deleted.push(r.dir);
            }
        }
    }
    Ok(pruned)
}
