//! `update-binary-cache`: mirror the runtime closure of a release into the global binary cache
//! and link it into the release (the pipeline is [`crate::mirror`]). The cache is a mirror
//! directory's, or a bucket's (`s3://BUCKET/PREFIX`, whose cache is `PREFIX/binary_cache/`).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use bytes::Bytes;

use crate::binary_cache::{self, LocalCache, Upstream, BINARY_CACHE_DIR};
use crate::fetch::{FetchConfig, Fetcher};
use crate::fsutil::DirLock;
use crate::mirror::{self, MirrorJob, MirrorReport, PrintFormat};
use crate::release;
use crate::signature::PublicKey;
use crate::storage::{CacheStore, S3Location, S3Lock, S3Store, Target};

/// Options of `update-binary-cache`.
#[derive(Clone, Debug)]
pub struct UpdateBinaryCacheOptions {
    /// The release directory: its `store-paths` is read, its `binary_cache/` is linked (for
    /// a directory target).
    pub release: PathBuf,
    /// The mirror directory (the global cache is `DIR/binary_cache`, the lock `DIR/.lock`), or
    /// a bucket (the cache is `PREFIX/binary_cache/`, the lock `PREFIX/.lock`).
    pub target: Target,
    /// The upstream binary cache.
    pub cache_url: String,
    /// HTTP settings (concurrency, retries, timeouts).
    pub fetch: FetchConfig,
    /// Write narinfos and list the NARs to fetch instead of downloading them.
    pub print_only: bool,
    /// How `print_only` lists the NARs to fetch.
    pub print_format: PrintFormat,
    /// Keys a fetched narinfo must be signed by; empty means the default for the cache.
    pub trusted_keys: Vec<PublicKey>,
    /// Whether signatures are checked at all.
    pub check_sigs: bool,
    /// Whether each NAR is decompressed and checked against its narinfo's signed `NarHash`
    /// and `NarSize` (else only `FileHash` and `FileSize`, which no signature covers).
    pub check_nar_hash: bool,
    /// Wait for the mirror's lock instead of failing when another run holds it.
    pub wait_lock: bool,
}

/// Runs `update-binary-cache` under the mirror's lock. `--print-only` lines go to `out`.
pub async fn run(
    opts: &UpdateBinaryCacheOptions,
    out: &mut (dyn Write + Send),
) -> Result<MirrorReport> {
    let outdir = match &opts.target {
        Target::Dir(dir) => dir,
        Target::S3(location) => return run_bucket(opts, location, out).await,
    };
    let _lock = DirLock::acquire(outdir, opts.wait_lock)?;
    let roots = release::read_store_paths(&opts.release)?;
    let cache = CacheStore::dir(LocalCache::create(&outdir.join(BINARY_CACHE_DIR))?);
    mirror_into(opts, &cache, roots, out).await
}

/// Runs `update-binary-cache` into a bucket, under the bucket's lock (none with
/// `--print-only`, which writes nothing to the bucket). After a complete run,
/// `PREFIX/binary_cache/lastsync` says when it ended.
async fn run_bucket(
    opts: &UpdateBinaryCacheOptions,
    location: &S3Location,
    out: &mut (dyn Write + Send),
) -> Result<MirrorReport> {
    let roots = release::read_store_paths(&opts.release)?;
    let root = S3Store::connect(location, &opts.fetch)?;
    let lock = if opts.print_only {
        None
    } else {
        Some(S3Lock::acquire(&root, opts.wait_lock).await?)
    };
    let result = async {
        let store = root.sub(BINARY_CACHE_DIR);
        let cache = CacheStore::open_bucket(store.clone(), None, !opts.print_only).await?;
        let report = mirror_into(opts, &cache, roots, out).await?;
        if report.is_complete() && !opts.print_only {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            store
                .put("lastsync", Bytes::from(format!("{now}\n")))
                .await?;
        }
        Ok(report)
    }
    .await;
    if let Some(lock) = lock {
        if let Err(e) = lock.release().await {
            tracing::warn!("cannot release the lock: {e:#}");
        }
    }
    result
}

async fn mirror_into(
    opts: &UpdateBinaryCacheOptions,
    cache: &CacheStore,
    roots: Vec<crate::store_path::StorePath>,
    out: &mut (dyn Write + Send),
) -> Result<MirrorReport> {
    let keys = binary_cache::trusted_keys_for(&opts.cache_url, &opts.trusted_keys, opts.check_sigs);
    let upstream = Upstream::new(Fetcher::new(opts.fetch.clone())?, &opts.cache_url, keys);
    mirror::mirror_closure(
        &MirrorJob {
            cache,
            upstream: &upstream,
            roots,
            release: Some(&opts.release),
            print_only: opts.print_only,
            print_format: opts.print_format,
            check_nar_hash: opts.check_nar_hash,
        },
        out,
    )
    .await
}
