//! `garbage-collect`: delete the narinfos and NARs of the global cache that no given release
//! links to (the collector is [`crate::gc`]), and the mirror's source tarballs that no release
//! of the mirror names ([`crate::tarballs::collect`]). In a bucket (`--target
//! s3://BUCKET/PREFIX`) the cache is `PREFIX/binary_cache/`, listed once, and the releases are
//! local release directories or releases in the bucket ([`crate::gc::collect_bucket_cache`]).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::fetch::FetchConfig;
use crate::fsutil::{self, DirLock};
use crate::gc::{self, GcReport};
use crate::storage::{S3Location, S3Lock, S3Store};
use crate::tarballs;

/// The cache a collection works on.
#[derive(Clone, Debug)]
pub enum GcTarget {
    /// The global binary cache directory; the mirror's lock is in the directory above it.
    Dir(PathBuf),
    /// The cache of a bucket (`PREFIX/binary_cache/`), reached with these HTTP settings; each
    /// release is a local release directory or a release in the bucket
    /// (`releases/CHANNEL/NIXNAME`, relative to the prefix). The lock is `PREFIX/.lock`.
    Bucket(S3Location, FetchConfig),
}

/// Options of `garbage-collect`.
#[derive(Clone, Debug)]
pub struct GarbageCollectOptions {
    /// The cache.
    pub target: GcTarget,
    /// Every release whose files must stay.
    pub releases: Vec<PathBuf>,
    /// Only list what would be deleted.
    pub dry_run: bool,
    /// Wait for the mirror's lock instead of failing when another run holds it.
    pub wait_lock: bool,
}

/// Runs the collector under the mirror's lock; each deleted file is printed to `out` (`would
/// delete` with `--dry-run`).
pub async fn run(opts: &GarbageCollectOptions, out: &mut (dyn Write + Send)) -> Result<GcReport> {
    let cache = match &opts.target {
        GcTarget::Dir(cache) => cache,
        GcTarget::Bucket(location, fetch) => return run_bucket(opts, location, fetch, out).await,
    };
    // The mirror's lock lives in the directory above the cache, where update-binary-cache and
    // release-nixos take it.
    let cache_dir = fsutil::absolute(cache)?;
    if !cache_dir.is_dir() {
        bail!(
            "the binary cache {} is not a directory",
            cache_dir.display()
        );
    }
    let mirror_dir = cache_dir.parent().unwrap_or(&cache_dir);
    let _lock = DirLock::acquire(mirror_dir, opts.wait_lock)?;
    let report = gc::collect_cache(cache, &opts.releases, opts.dry_run, out)?;
    // The mirror's source tarballs that no release in it names (with the refusals of
    // `tarballs::collect`): each deleted file is printed too.
    if mirror_dir.join(tarballs::TARBALLS_DIR).is_dir() {
        let collected = tarballs::collect(mirror_dir, opts.dry_run, out)?;
        tracing::info!("source tarballs: {}", collected.summary(opts.dry_run));
    }
    Ok(report)
}

/// `garbage-collect --target s3://BUCKET/PREFIX`, under the bucket's lock.
async fn run_bucket(
    opts: &GarbageCollectOptions,
    location: &S3Location,
    fetch: &FetchConfig,
    out: &mut (dyn Write + Send),
) -> Result<GcReport> {
    let root = S3Store::connect(location, fetch)?;
    let lock = S3Lock::acquire(&root, opts.wait_lock).await?;
    let result = async {
        let listing = root.list().await?;
        let mut roots = Vec::new();
        for release in &opts.releases {
            if release.is_dir() {
                let store_paths = crate::release::read_store_paths(release).with_context(|| {
                    format!(
                        "release {} has no readable store-paths: refusing to collect garbage",
                        release.display()
                    )
                })?;
                let missing_file = release.join("missing-store-paths");
                let missing = if missing_file.is_file() {
                    crate::release::read_store_paths_file(&missing_file)?
                } else {
                    Vec::new()
                };
                roots.push(gc::BucketRoots {
                    name: release.display().to_string(),
                    roots: store_paths,
                    missing: missing.into_iter().collect(),
                });
                continue;
            }
            let key = release
                .to_str()
                .map(|k| k.trim_matches('/').to_string())
                .filter(|k| listing.contains_key(&format!("{k}/store-paths")));
            let Some(key) = key else {
                bail!(
                    "release {} is neither a release directory nor a release with store-paths \
                     in {}: refusing to collect garbage against an incomplete view",
                    release.display(),
                    root.url_of("")
                );
            };
            roots.push(gc::bucket_roots(&root, &key).await?);
        }
        let cache = root.sub(crate::binary_cache::BINARY_CACHE_DIR);
        let prefix = format!("{}/", crate::binary_cache::BINARY_CACHE_DIR);
        let cache_listing = listing
            .iter()
            .filter_map(|(k, v)| k.strip_prefix(&prefix).map(|rel| (rel.to_string(), *v)))
            .collect();
        gc::collect_bucket_cache(&cache, &cache_listing, &roots, opts.dry_run, out).await
    }
    .await;
    if let Err(e) = lock.release().await {
        tracing::warn!("cannot release the lock: {e:#}");
    }
    result
}
