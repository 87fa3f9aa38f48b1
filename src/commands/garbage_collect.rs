//! `garbage-collect`: delete the narinfos and NARs of the global cache that no release links to.
//!
//! The set of live files is built from the given releases' `binary_cache/` views, plus the NAR of
//! every live narinfo (a NAR shared by two narinfos stays while either is live). The collector
//! refuses to run, deleting nothing, when any given release is missing, has no `binary_cache/`,
//! or links to a file that is not there: a half-visible world must never look like garbage.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::binary_cache::{self, LocalCache};
use crate::fsutil;
use crate::narinfo::NarInfo;
use crate::progress::human_bytes;

/// Options of `garbage-collect`.
#[derive(Clone, Debug)]
pub struct GarbageCollectOptions {
    /// The global binary cache directory.
    pub cache: PathBuf,
    /// Every release whose files must stay.
    pub releases: Vec<PathBuf>,
    /// Only list what would be deleted.
    pub dry_run: bool,
}

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

/// Runs the collector; each deleted file is printed to `out` (`would delete` with `--dry-run`).
pub fn run(opts: &GarbageCollectOptions, out: &mut dyn Write) -> Result<GcReport> {
    if opts.releases.is_empty() {
        bail!("no release given: refusing to collect, since every file would look like garbage");
    }
    let cache = LocalCache::open(&opts.cache)
        .with_context(|| format!("cannot open the binary cache {}", opts.cache.display()))?;
    // Files are listed and printed under the name given; links are matched against the
    // resolved name, whatever symlinks lead to it.
    let root = fsutil::absolute(&opts.cache)?;

    // Everything the releases link to; any problem aborts before a single deletion.
    let mut live: BTreeSet<PathBuf> = BTreeSet::new();
    for release in &opts.releases {
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
            if !opts.dry_run {
                remove(entry.path())?;
            }
            writeln!(out, "{} {}", verb(opts.dry_run), entry.path().display())?;
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
    for (path, size) in &dead_narinfos {
        if !opts.dry_run {
            remove(path)?;
        }
        writeln!(out, "{} {}", verb(opts.dry_run), path.display())?;
        report.narinfos += 1;
        report.bytes += size;
    }
    for (path, size) in &dead_nars {
        if !opts.dry_run {
            remove(path)?;
        }
        writeln!(out, "{} {}", verb(opts.dry_run), path.display())?;
        report.nars += 1;
        report.bytes += size;
    }
    tracing::info!(
        "garbage-collect: {} {} narinfos and {} NARs, {} {} bytes ({}); kept {} files",
        verb(opts.dry_run),
        report.narinfos,
        report.nars,
        if opts.dry_run { "would free" } else { "freed" },
        report.bytes,
        human_bytes(report.bytes),
        report.kept
    );
    Ok(report)
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
