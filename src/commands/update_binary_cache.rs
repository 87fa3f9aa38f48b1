//! `update-binary-cache`: mirror the runtime closure of a release into the global binary cache
//! and link it into the release.
//!
//! The closure walk and the NAR downloads run as one pipeline: a NAR download starts as soon as
//! its narinfo arrives. Each narinfo is written only after its NAR is in place and verified
//! against it: downloaded and hashed, or, when the file is already there and the narinfo was
//! fetched now, hashed on disk. Narinfos of one run that name the same NAR must agree on its
//! `FileHash` and `FileSize`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

use crate::binary_cache::{self, LocalCache, ReleaseView};
use crate::closure::{self, Event, Found, NarInfoSource, Origin};
use crate::fetch::{self, Expected, FetchConfig, Fetcher};
use crate::fsutil;
use crate::hash::Sha256Hash;
use crate::narinfo::NarInfo;
use crate::progress::{self, Phase, Unit};
use crate::signature::{PublicKey, CACHE_NIXOS_ORG_KEY};
use crate::store_path::StorePath;

/// The upstream cache used when none is given.
pub const DEFAULT_CACHE: &str = "https://cache.nixos.org";

/// Options of `update-binary-cache`.
#[derive(Clone, Debug)]
pub struct UpdateBinaryCacheOptions {
    /// The release directory: its `store-paths` is read, its `binary_cache/` is linked.
    pub release: PathBuf,
    /// The mirror directory; the global cache is `outdir/binary_cache`.
    pub outdir: PathBuf,
    /// The upstream binary cache.
    pub cache_url: String,
    /// HTTP settings (concurrency, retries, timeouts).
    pub fetch: FetchConfig,
    /// Write narinfos and list the NARs to fetch instead of downloading them.
    pub print_only: bool,
    /// Keys a fetched narinfo must be signed by; empty means the default for the cache.
    pub trusted_keys: Vec<PublicKey>,
    /// Whether signatures are checked at all.
    pub check_sigs: bool,
}

/// What a run did.
#[derive(Clone, Debug, Default)]
pub struct UpdateReport {
    /// Store paths in the closure that were found.
    pub paths: usize,
    /// Narinfos read from the local cache.
    pub narinfos_local: usize,
    /// Narinfos fetched from upstream.
    pub narinfos_fetched: usize,
    /// NARs downloaded and verified in this run.
    pub nars_fetched: usize,
    /// NARs that were already present.
    pub nars_present: usize,
    /// NARs listed for another downloader (`--print-only`).
    pub nars_listed: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Paths whose narinfo upstream does not have.
    pub missing: Vec<StorePath>,
    /// Failures, each naming the path, URL or file.
    pub failures: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl UpdateReport {
    /// Whether the whole closure (relative to upstream) is mirrored and verified.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty()
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "{} paths ({} narinfos fetched, {} already here), {} NARs downloaded ({}), {} already present{}, {} missing upstream, {} failed, {:.1} s",
            self.paths,
            self.narinfos_fetched,
            self.narinfos_local,
            self.nars_fetched,
            progress::human_bytes(self.bytes),
            self.nars_present,
            if self.nars_listed > 0 {
                format!(", {} listed", self.nars_listed)
            } else {
                String::new()
            },
            self.missing.len(),
            self.failures.len(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Reads a release's `store-paths` file: one absolute store path per line.
pub fn read_store_paths(file: &Path) -> Result<Vec<StorePath>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let p = StorePath::from_absolute_path(line).with_context(|| {
            format!("{}:{}: {line:?} is not a store path", file.display(), n + 1)
        })?;
        out.push(p);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// The keys to check narinfos from `cache_url` against: the given ones, or cache.nixos.org's
/// own key for cache.nixos.org. With none for another cache, says once that signatures are not
/// checked.
pub fn effective_keys(cache_url: &str, given: &[PublicKey], check_sigs: bool) -> Vec<PublicKey> {
    if !check_sigs {
        tracing::warn!(
            "signature checks are off (--no-check-sigs): narinfos from {cache_url} are not checked"
        );
        return Vec::new();
    }
    if !given.is_empty() {
        return given.to_vec();
    }
    let host = url::Url::parse(cache_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string));
    if host.as_deref() == Some("cache.nixos.org") {
        match PublicKey::parse(CACHE_NIXOS_ORG_KEY) {
            Ok(k) => return vec![k],
            Err(e) => tracing::error!("the built-in cache.nixos.org key does not parse: {e}"),
        }
    }
    tracing::warn!(
        "no trusted public key is configured for {cache_url}: narinfo signatures are not checked \
         (pass --trusted-public-key NAME:KEY to check them)"
    );
    Vec::new()
}

/// Runs `update-binary-cache`. `--print-only` lines go to `out`.
pub async fn run(
    opts: &UpdateBinaryCacheOptions,
    out: &mut (dyn Write + Send),
) -> Result<UpdateReport> {
    let roots = read_store_paths(&opts.release.join("store-paths"))?;
    let cache = LocalCache::create(&opts.outdir.join(binary_cache::BINARY_CACHE_DIR))?;
    let fetcher = Fetcher::new(opts.fetch.clone())?;
    let keys = effective_keys(&opts.cache_url, &opts.trusted_keys, opts.check_sigs);
    let report = mirror_closure(
        &MirrorJob {
            cache: &cache,
            fetcher: &fetcher,
            cache_url: &opts.cache_url,
            trusted_keys: keys,
            roots,
            release: Some(&opts.release),
            print_only: opts.print_only,
        },
        out,
    )
    .await?;
    Ok(report)
}

/// One closure to mirror into a local cache.
pub struct MirrorJob<'a> {
    /// The global cache.
    pub cache: &'a LocalCache,
    /// The HTTP client.
    pub fetcher: &'a Fetcher,
    /// Upstream cache URL.
    pub cache_url: &'a str,
    /// Keys to check fetched narinfos against (empty: unchecked).
    pub trusted_keys: Vec<PublicKey>,
    /// Where the closure starts.
    pub roots: Vec<StorePath>,
    /// The release to link (and to write `missing-store-paths` into).
    pub release: Option<&'a Path>,
    /// List instead of download.
    pub print_only: bool,
}

/// Outcome of one NAR task.
struct NarDone {
    nar: PathBuf,
    result: Result<Option<u64>, String>,
}

/// Narinfos whose NARs are in place, waiting to be stored in batches: one `syncfs` makes a
/// whole batch of NARs durable before their narinfos are written, instead of an fsync per file.
/// So a narinfo is never stored before its NAR is on disk, even across a power loss. The
/// release's view links each store path in the same batch, right after its narinfo is stored.
///
/// A batch is stored on a blocking thread while the downloads go on; one batch at a time, so
/// each `syncfs` covers everything written before it.
struct NarInfoBatch {
    cache: LocalCache,
    /// Narinfos to store.
    pending: Vec<NarInfo>,
    /// Store paths (and NAR URLs) to link into the view once `pending` is stored.
    links: Vec<(StorePath, String)>,
    /// The release's view (none with `--print-only` or without a release), while no batch is
    /// being stored.
    view: Option<ReleaseView>,
    /// Whether there is a view at all.
    linking: bool,
    /// The batch being stored, which holds the view meanwhile.
    storing: Option<tokio::task::JoinHandle<(Option<ReleaseView>, Result<()>)>>,
    fsync: bool,
}

impl NarInfoBatch {
    /// Entries stored per batch.
    const SIZE: usize = 2048;

    fn new(cache: LocalCache, view: Option<ReleaseView>, fsync: bool) -> NarInfoBatch {
        NarInfoBatch {
            cache,
            pending: Vec::new(),
            links: Vec::new(),
            linking: view.is_some(),
            view,
            storing: None,
            fsync,
        }
    }

    /// Queues a narinfo to store (and link); starts storing the batch when it is full.
    async fn push(&mut self, info: NarInfo) -> Result<()> {
        if self.linking {
            self.links.push((info.store_path.clone(), info.url.clone()));
        }
        self.pending.push(info);
        self.flush_if_full().await
    }

    /// Queues the links of a narinfo that is already stored.
    async fn push_stored(&mut self, info: NarInfo) -> Result<()> {
        if self.linking {
            self.links.push((info.store_path, info.url));
        }
        self.flush_if_full().await
    }

    async fn flush_if_full(&mut self) -> Result<()> {
        if self.pending.len() + self.links.len() >= Self::SIZE {
            self.start_store().await?;
        }
        Ok(())
    }

    /// Waits for the batch being stored, if any.
    async fn wait(&mut self) -> Result<()> {
        if let Some(task) = self.storing.take() {
            let (view, result) = task.await.context("the narinfo writer failed")?;
            self.view = view;
            result?;
        }
        Ok(())
    }

    /// Once the previous batch is stored, starts making the NARs written so far durable, then
    /// storing the pending narinfos and linking them, off the async threads.
    async fn start_store(&mut self) -> Result<()> {
        self.wait().await?;
        if self.pending.is_empty() && self.links.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut self.pending);
        let links = std::mem::take(&mut self.links);
        let mut view = self.view.take();
        let cache = self.cache.clone();
        let fsync = self.fsync;
        self.storing = Some(tokio::task::spawn_blocking(move || {
            let result = (|| -> Result<()> {
                if fsync && !batch.is_empty() {
                    fsutil::sync_filesystem(cache.root())?;
                }
                for info in &batch {
                    cache.write_narinfo(info, false)?;
                }
                if let Some(view) = view.as_mut() {
                    for (path, url) in &links {
                        view.link(path, url)?;
                    }
                }
                Ok(())
            })();
            (view, result)
        }));
        Ok(())
    }

    /// Stores what is left and, with fsync, makes the narinfos durable too. Returns the view,
    /// to be finished by the caller.
    async fn finish(mut self) -> Result<Option<ReleaseView>> {
        self.start_store().await?;
        self.wait().await?;
        if self.fsync {
            let root = self.cache.root().to_path_buf();
            tokio::task::spawn_blocking(move || fsutil::sync_filesystem(&root))
                .await
                .context("the narinfo writer failed")??;
        }
        Ok(self.view.take())
    }
}

/// Mirrors the closure of `job.roots` into `job.cache`, then links the release.
pub async fn mirror_closure(
    job: &MirrorJob<'_>,
    out: &mut (dyn Write + Send),
) -> Result<UpdateReport> {
    let start = Instant::now();
    let cache = job.cache;
    fsutil::remove_stale_temp_files(cache.root())?;
    fsutil::remove_stale_temp_files(&cache.root().join("nar"))?;
    let fsync = job.fetcher.config().fsync;
    let source = Arc::new(NarInfoSource {
        fetcher: job.fetcher.clone(),
        cache_url: job.cache_url.trim_end_matches('/').to_string(),
        local_dir: Some(cache.root().to_path_buf()),
        trusted_keys: job.trusted_keys.clone(),
    });
    let (tx, mut rx) = mpsc::channel::<Event>(1024);
    let walker = tokio::spawn(closure::walk(source, job.roots.clone(), tx));

    let narinfo_phase = Phase::new("narinfos", Unit::Items, job.roots.len() as u64);
    let bytes_phase = Phase::new("NAR bytes", Unit::Bytes, 0);
    let mut report = UpdateReport::default();
    // NAR path -> the fetched narinfos waiting for it (written once it is verified).
    let mut waiting: HashMap<PathBuf, Vec<NarInfo>> = HashMap::new();
    // NAR path -> the FileHash and FileSize the first narinfo of this run gave it. Another
    // narinfo naming the same file must agree, or it would be stored unverified.
    let mut claims: HashMap<PathBuf, (Option<Sha256Hash>, Option<u64>)> = HashMap::new();
    let mut tasks: JoinSet<NarDone> = JoinSet::new();
    let task_slots = Arc::new(Semaphore::new(job.fetcher.config().concurrency.max(1) * 2));
    let mut dirs_made: std::collections::HashSet<PathBuf> = Default::default();
    let mut walk_done = false;
    let view = match job.release {
        Some(release) if !job.print_only => Some(ReleaseView::open(release, cache)?),
        _ => None,
    };
    let mut batch = NarInfoBatch::new(cache.clone(), view, fsync);

    while !walk_done || !tasks.is_empty() {
        tokio::select! {
            ev = rx.recv(), if !walk_done => {
                let Some(ev) = ev else { walk_done = true; continue };
                narinfo_phase.inc(1);
                match ev {
                    Event::Missing(p) => {
                        tracing::warn!("{p}: the upstream cache has no narinfo for it (404); it is listed in missing-store-paths");
                        report.missing.push(p);
                    }
                    Event::Failed { path, error } => {
                        tracing::error!("{path}: {error}");
                        report.failures.push(format!("{path}: {error}"));
                    }
                    Event::Found(found) => {
                        let Found { narinfo, origin } = *found;
                        narinfo_phase.inc_total(narinfo.references.len() as u64);
                        report.paths += 1;
                        match origin {
                            Origin::Local => report.narinfos_local += 1,
                            Origin::Remote => report.narinfos_fetched += 1,
                        }
                        let nar = match cache.nar_path(&narinfo) {
                            Ok(p) => p,
                            Err(e) => {
                                let msg = format!("{}: {}: refusing the narinfo's URL: {e}", narinfo.store_path, source_url(job, &narinfo));
                                tracing::error!("{msg}");
                                report.failures.push(msg);
                                continue;
                            }
                        };
                        if narinfo.file_hash.is_none() {
                            let msg = format!("{}: {}: has no FileHash, so its NAR cannot be verified", narinfo.store_path, source_url(job, &narinfo));
                            tracing::error!("{msg}");
                            report.failures.push(msg);
                            continue;
                        }
                        let claim = (narinfo.file_hash, narinfo.file_size);
                        match claims.get(&nar) {
                            Some(first) if *first != claim => {
                                let msg = format!(
                                    "{}: {}: names the NAR {} with FileHash {} and FileSize {}, but another narinfo of the closure gives it {} and {}",
                                    narinfo.store_path,
                                    source_url(job, &narinfo),
                                    narinfo.url,
                                    describe(claim.0),
                                    describe(claim.1),
                                    describe(first.0),
                                    describe(first.1),
                                );
                                tracing::error!("{msg}");
                                report.failures.push(msg);
                                continue;
                            }
                            Some(_) => {}
                            None => {
                                claims.insert(nar.clone(), claim);
                            }
                        }
                        let present = cache.nar_present(&nar, &narinfo);
                        if job.print_only {
                            if present {
                                report.nars_present += 1;
                            } else if let std::collections::hash_map::Entry::Vacant(slot) = waiting.entry(nar) {
                                let hash = narinfo.file_hash.map(|h| h.to_string()).unwrap_or_default();
                                writeln!(out, "{},{}", narinfo.url, hash).context("cannot write to standard output")?;
                                report.nars_listed += 1;
                                slot.insert(Vec::new());
                            }
                            if origin == Origin::Remote {
                                batch.push(narinfo).await?;
                            }
                            continue;
                        }
                        if present && origin == Origin::Local {
                            // Stored together, each verified against the other when written.
                            report.nars_present += 1;
                            batch.push_stored(narinfo).await?;
                            continue;
                        }
                        if let Some(list) = waiting.get_mut(&nar) {
                            // Another narinfo's download or check of the same file is under way.
                            list.push(narinfo);
                            continue;
                        }
                        let expected = Expected { size: narinfo.file_size, sha256: narinfo.file_hash };
                        if present {
                            // A narinfo fetched now for a NAR that is already here: the file is
                            // hashed against it before the narinfo is stored.
                            let permit = task_slots.clone().acquire_owned().await?;
                            let nar_path = nar.clone();
                            let url = narinfo.url.clone();
                            waiting.insert(nar, vec![narinfo]);
                            tasks.spawn(async move {
                                let _permit = permit;
                                let file = nar_path.clone();
                                let checked = tokio::task::spawn_blocking(move || fetch::verify_file(&file, expected)).await;
                                let result = match checked {
                                    Ok(Ok(Ok(()))) => Ok(None),
                                    Ok(Ok(Err(mismatch))) => Err(format!(
                                        "{} is already in the cache and does not match this narinfo: {mismatch}",
                                        nar_path.display()
                                    )),
                                    Ok(Err(e)) => Err(format!("cannot read {}: {e}", nar_path.display())),
                                    Err(e) => Err(format!("checking {url} failed: {e}")),
                                };
                                NarDone { nar: nar_path, result }
                            });
                            continue;
                        }
                        if let Some(dir) = nar.parent() {
                            if dirs_made.insert(dir.to_path_buf()) {
                                fsutil::create_dir_all_within(cache.root(), dir)?;
                            }
                        }
                        bytes_phase.inc_total(narinfo.file_size.unwrap_or(0));
                        let url = format!("{}/{}", job.cache_url.trim_end_matches('/'), narinfo.url);
                        let fetcher = job.fetcher.clone();
                        let permit = task_slots.clone().acquire_owned().await?;
                        let phase = bytes_phase.clone();
                        let nar_path = nar.clone();
                        waiting.insert(nar, vec![narinfo]);
                        tasks.spawn(async move {
                            let _permit = permit;
                            // A large NAR is fsynced on its own: that costs little next to its
                            // size and overlaps the other downloads, where leaving it to the
                            // batch's syncfs would make the run wait for it at the end.
                            let result = if expected.size.is_some_and(|s| s <= fetch::IN_MEMORY_MAX) {
                                fetcher.download_unsynced(&url, &nar_path, expected).await
                            } else {
                                fetcher.download(&url, &nar_path, expected).await
                            };
                            let result = match result {
                                Ok(d) => { phase.inc(d.size); Ok(Some(d.size)) }
                                Err(e) => Err(e.to_string()),
                            };
                            NarDone { nar: nar_path, result }
                        });
                    }
                }
            }
            done = tasks.join_next(), if !tasks.is_empty() => {
                let Some(done) = done else { continue };
                let done = done.context("a download task failed")?;
                let infos = waiting.remove(&done.nar).unwrap_or_default();
                match done.result {
                    Ok(size) => {
                        match size {
                            Some(bytes) => {
                                report.nars_fetched += 1;
                                report.bytes += bytes;
                            }
                            None => report.nars_present += 1,
                        }
                        for info in infos {
                            batch.push(info).await?;
                        }
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        for info in &infos {
                            report.failures.push(format!("{}: NAR {}: {e}", info.store_path, info.url));
                        }
                    }
                }
            }
        }
    }
    let _ = walker.await;
    let view = batch.finish().await?;
    narinfo_phase.finish();
    bytes_phase.finish();

    report.missing.sort();
    if let Some(release) = job.release {
        write_missing(release, &report.missing)?;
    }
    if let Some(view) = view {
        view.finish()?;
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// A narinfo field's value for messages, or `none`.
fn describe<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn source_url(job: &MirrorJob<'_>, info: &NarInfo) -> String {
    format!(
        "{}/{}.narinfo",
        job.cache_url.trim_end_matches('/'),
        info.hash_part()
    )
}

/// Writes `release/missing-store-paths` (or removes a stale one when nothing is missing).
fn write_missing(release: &Path, missing: &[StorePath]) -> Result<()> {
    let file = release.join("missing-store-paths");
    if missing.is_empty() {
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", file.display())),
        }
    } else {
        let mut text = String::new();
        for p in missing {
            text.push_str(&p.to_absolute_path());
            text.push('\n');
        }
        fsutil::atomic_write(&file, text.as_bytes())
    }
}
