//! `update-binary-cache`: mirror the runtime closure of a release into the global binary cache
//! and link it into the release (the pipeline is [`crate::mirror`]).

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::binary_cache::{self, LocalCache, Upstream, BINARY_CACHE_DIR};
use crate::fetch::{FetchConfig, Fetcher};
use crate::fsutil::DirLock;
use crate::mirror::{self, MirrorJob, MirrorReport, PrintFormat};
use crate::release;
use crate::signature::PublicKey;

/// Options of `update-binary-cache`.
#[derive(Clone, Debug)]
pub struct UpdateBinaryCacheOptions {
    /// The release directory: its `store-paths` is read, its `binary_cache/` is linked.
    pub release: PathBuf,
    /// The mirror directory; the global cache is `outdir/binary_cache`, the lock `outdir/.lock`.
    pub outdir: PathBuf,
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
    let _lock = DirLock::acquire(&opts.outdir, opts.wait_lock)?;
    let roots = release::read_store_paths(&opts.release)?;
    let cache = LocalCache::create(&opts.outdir.join(BINARY_CACHE_DIR))?;
    let keys = binary_cache::trusted_keys_for(&opts.cache_url, &opts.trusted_keys, opts.check_sigs);
    let upstream = Upstream::new(Fetcher::new(opts.fetch.clone())?, &opts.cache_url, keys);
    mirror::mirror_closure(
        &MirrorJob {
            cache: &cache,
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
