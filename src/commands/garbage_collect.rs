//! `garbage-collect`: delete the narinfos and NARs of the global cache that no given release
//! links to (the collector is [`crate::gc`]), and the mirror's source tarballs that no release
//! of the mirror names ([`crate::tarballs::collect`]).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};

use crate::fsutil::{self, DirLock};
use crate::gc::{self, GcReport};
use crate::tarballs;

/// Options of `garbage-collect`.
#[derive(Clone, Debug)]
pub struct GarbageCollectOptions {
    /// The global binary cache directory; the mirror's lock is in the directory above it.
    pub cache: PathBuf,
    /// Every release whose files must stay.
    pub releases: Vec<PathBuf>,
    /// Only list what would be deleted.
    pub dry_run: bool,
    /// Wait for the mirror's lock instead of failing when another run holds it.
    pub wait_lock: bool,
}

/// Runs the collector under the mirror's lock; each deleted file is printed to `out` (`would
/// delete` with `--dry-run`).
pub fn run(opts: &GarbageCollectOptions, out: &mut dyn Write) -> Result<GcReport> {
    // The mirror's lock lives in the directory above the cache, where update-binary-cache and
    // release-nixos take it.
    let cache_dir = fsutil::absolute(&opts.cache)?;
    if !cache_dir.is_dir() {
        bail!(
            "the binary cache {} is not a directory",
            cache_dir.display()
        );
    }
    let mirror_dir = cache_dir.parent().unwrap_or(&cache_dir);
    let _lock = DirLock::acquire(mirror_dir, opts.wait_lock)?;
    let report = gc::collect_cache(&opts.cache, &opts.releases, opts.dry_run, out)?;
    // The mirror's source tarballs that no release in it names (with the refusals of
    // `tarballs::collect`): each deleted file is printed too.
    if mirror_dir.join(tarballs::TARBALLS_DIR).is_dir() {
        let collected = tarballs::collect(mirror_dir, opts.dry_run, out)?;
        tracing::info!("source tarballs: {}", collected.summary(opts.dry_run));
    }
    Ok(report)
}
