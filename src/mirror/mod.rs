//! The mirroring pipeline: the runtime closure of a set of store paths, from an upstream binary
//! cache into the local one, and linked into a release's view.
//!
//! The steps run at once, as one pipeline, and each has its module:
//! 1. [`walk`]: the closure walk reads local narinfos and fetches the others, checking their
//!    signatures in batches, and streams each narinfo as soon as it is taken;
//! 2. `nars`: each narinfo's NAR is found in place, downloaded and verified, or hashed on
//!    disk against a narinfo fetched now (a NAR download starts as soon as its narinfo
//!    arrives);
//! 3. `batch`: narinfos are stored in batches after their NARs are made durable, and each
//!    store path is linked into the release's view right after its narinfo is stored;
//! 4. at the end, the view drops what is no longer in the closure and the release gets its
//!    `missing-store-paths`.
//!
//! Each narinfo is written only after its NAR is in place and verified against it. Narinfos of
//! one run that name the same NAR must agree on its `FileHash` and `FileSize`. A path upstream
//! does not have is listed as missing and does not make the closure incomplete; any other
//! failure does, and is counted in [`MirrorReport::failures`].

mod batch;
mod nars;
pub mod walk;

use std::collections::HashSet;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use tokio::sync::mpsc;

use crate::binary_cache::{ReleaseView, Upstream};
use crate::fsutil;
use crate::progress::{self, Phase, Unit};
use crate::release;
use crate::storage::CacheStore;
use crate::store_path::StorePath;
use batch::{NarInfoBatch, Sink};
use nars::{Admitted, NarGot, Nars};
use walk::{Event, Found, Origin};

/// One closure to mirror into a cache.
pub struct MirrorJob<'a> {
    /// The global cache: a directory or a bucket.
    pub cache: &'a CacheStore,
    /// The upstream cache and the keys its narinfos must be signed by.
    pub upstream: &'a Upstream,
    /// Where the closure starts.
    pub roots: Vec<StorePath>,
    /// The release to link (and to write `missing-store-paths` into).
    pub release: Option<&'a Path>,
    /// List the NARs to fetch (in `print_format`) instead of downloading them; the narinfos are
    /// kept in the staging area ([`crate::binary_cache::staging`]), where the other host's
    /// files are to be put too, and nothing reaches the cache or a view.
    pub print_only: bool,
    /// How `print_only` lists a NAR.
    pub print_format: PrintFormat,
    /// Decompress every NAR and check it against its narinfo's signed `NarHash` and `NarSize`,
    /// besides `FileHash` and `FileSize` (which no signature covers). Off, one warning says so.
    pub check_nar_hash: bool,
}

pub use crate::binary_cache::PrintFormat;

/// What a mirroring run did.
#[derive(Clone, Debug, Default)]
pub struct MirrorReport {
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
    /// NARs found in the staging area: taken from it after their check (a normal run), or
    /// placed there already and so not listed (`--print-only`).
    pub nars_staged: usize,
    /// Bytes downloaded.
    pub bytes: u64,
    /// Paths whose narinfo upstream does not have.
    pub missing: Vec<StorePath>,
    /// Failures, each naming the path, URL or file.
    pub failures: Vec<String>,
    /// Wall time.
    pub elapsed: Duration,
}

impl MirrorReport {
    /// Whether the whole closure (relative to upstream) is mirrored and verified.
    pub fn is_complete(&self) -> bool {
        self.failures.is_empty()
    }

    /// The one-line summary.
    pub fn summary(&self) -> String {
        format!(
            "{} paths ({} narinfos fetched, {} already here), {} NARs downloaded ({}), {} already present{}{}, {} missing upstream, {} failed, {:.1} s",
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
            if self.nars_staged > 0 {
                format!(", {} from the staging area", self.nars_staged)
            } else {
                String::new()
            },
            self.missing.len(),
            self.failures.len(),
            self.elapsed.as_secs_f64()
        )
    }

    fn fail(&mut self, message: String) {
        tracing::error!("{message}");
        self.failures.push(message);
    }
}

/// In debug builds, panics at `site` for `path` when `NIXIPFS_TEST_PANIC` says
/// `SITE:HASHPART`: how the tests make a task of the mirror fail. Release builds have no such
/// hook.
pub(crate) fn failpoint(site: &str, path: &StorePath) {
    #[cfg(debug_assertions)]
    if std::env::var("NIXIPFS_TEST_PANIC")
        .is_ok_and(|v| v == format!("{site}:{}", path.hash_part()))
    {
        panic!("NIXIPFS_TEST_PANIC: {site} of {path}");
    }
    #[cfg(not(debug_assertions))]
    let _ = (site, path);
}

/// Mirrors the closure of `job.roots` into `job.cache` and links the release; `--print-only`
/// lines go to `out`. An error is returned only when the run cannot go on (the cache cannot be
/// written, `out` is gone, the upstream cache's host cannot be connected to); a path that fails
/// is counted in the report and the rest go on.
pub async fn mirror_closure(
    job: &MirrorJob<'_>,
    out: &mut (dyn Write + Send),
) -> Result<MirrorReport> {
    let start = Instant::now();
    let store = job.cache;
    let bucket = store.is_bucket();
    let cache = store.work();
    fsutil::remove_stale_temp_files(cache.root())?;
    fsutil::remove_stale_temp_files(&cache.root().join("nar"))?;
    let staging = cache.staging();
    // For a bucket, `--print-only` writes nothing at all: it only lists what is missing.
    if job.print_only && !bucket {
        staging.create_dirs()?;
    }
    fsutil::remove_stale_temp_files(staging.root())?;
    fsutil::remove_stale_temp_files(&staging.root().join("nar"))?;
    let source = Arc::new(walk::Source {
        upstream: job.upstream.clone(),
        local: (!bucket).then(|| cache.clone()),
        staged: Some(staging.clone()),
        bucket: bucket.then(|| store.clone()),
    });
    let (tx, mut rx) = mpsc::channel::<Event>(256);
    if !job.check_nar_hash && !job.print_only {
        tracing::warn!(
            "NAR hashes are not checked (--no-check-nar-hash): NAR files are checked against \
             their narinfos' FileHash and FileSize only, which no signature covers"
        );
    }
    let walker = tokio::spawn(walk::walk(source, job.roots.clone(), tx));

    let narinfo_phase = Phase::new("narinfos", Unit::Items, job.roots.len() as u64);
    let bytes_phase = Phase::new("NAR bytes", Unit::Bytes, 0);
    let mut report = MirrorReport::default();
    let mut nars = Nars::new(
        store,
        job.upstream,
        job.print_only.then_some(job.print_format),
        job.check_nar_hash,
        bytes_phase.clone(),
    );
    let view = match job.release {
        Some(release) if !job.print_only && !bucket => Some(ReleaseView::open(release, cache)?),
        _ => None,
    };
    let fsync = job.upstream.fetcher().config().fsync;
    // `--print-only` stores the narinfos it fetched in the staging area, never in the cache;
    // a normal run removes those it takes from there.
    let mut batch = match (job.print_only, bucket) {
        (true, true) => NarInfoBatch::new(Sink::Nowhere, None, None, fsync),
        (true, false) => NarInfoBatch::new(Sink::Dir(staging.clone()), None, None, fsync),
        (false, true) => NarInfoBatch::new(Sink::Bucket(store.clone()), None, None, fsync),
        (false, false) => {
            NarInfoBatch::new(Sink::Dir(cache.clone()), Some(staging.clone()), view, fsync)
        }
    };
    let mut walk_done = false;
    // The paths the walk is yet to report: the roots, and the references it queued on the
    // narinfos it reported (each path is queued once, before it is reported, so this is the
    // walk's frontier, not the closure). Should the walk fail, these are what it left unvisited.
    // Digests only (20 bytes a path): the frontier of a wide closure holds tens of thousands.
    let mut unreported: HashSet<[u8; 20]> = job.roots.iter().map(|p| *p.digest()).collect();

    while !walk_done || !nars.is_idle() {
        tokio::select! {
            ev = rx.recv(), if !walk_done => {
                let Some(ev) = ev else { walk_done = true; continue };
                if let Event::HostDown(error) = ev {
                    narinfo_phase.finish();
                    bytes_phase.finish();
                    bail!("{error}");
                }
                narinfo_phase.inc(1);
                let digest = *match &ev {
                    Event::Missing(p) | Event::Failed { path: p, .. } => p,
                    Event::Found(found) => &found.narinfo.store_path,
                    Event::HostDown(_) => unreachable!("handled above"),
                }
                .digest();
                unreported.remove(&digest);
                match ev {
                    Event::Missing(p) => {
                        tracing::warn!("{p}: the upstream cache has no narinfo for it (404); it is listed in missing-store-paths");
                        report.missing.push(p);
                    }
                    Event::Failed { path, error } => report.fail(format!("{path}: {error}")),
                    Event::HostDown(_) => unreachable!("handled above"),
                    Event::Found(found) => {
                        let Found { narinfo, origin, queued } = *found;
                        for i in queued {
                            unreported.insert(*narinfo.references[i as usize].digest());
                        }
                        narinfo_phase.inc_total(narinfo.references.len() as u64);
                        report.paths += 1;
                        match origin {
                            Origin::Local | Origin::Staged => report.narinfos_local += 1,
                            Origin::Remote => report.narinfos_fetched += 1,
                        }
                        match nars.admit(narinfo, origin, out, &mut report).await? {
                            Admitted::Stored(info) => batch.push_stored(info).await?,
                            Admitted::Store(info) => batch.push(info).await?,
                            Admitted::Pending => {}
                            Admitted::Refused(msg) => report.fail(msg),
                        }
                    }
                }
            }
            done = nars.next_done(), if !nars.is_idle() => {
                let Some(done) = done else { continue };
                match done.result {
                    Ok(got) => {
                        match got {
                            NarGot::Downloaded(bytes) => {
                                report.nars_fetched += 1;
                                report.bytes += bytes;
                            }
                            NarGot::Present => report.nars_present += 1,
                            NarGot::Staged => report.nars_staged += 1,
                        }
                        for (info, origin) in done.infos {
                            match origin {
                                Origin::Remote | Origin::Staged => batch.push(info).await?,
                                Origin::Local => batch.push_stored(info).await?,
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!("{e}");
                        for (info, _) in &done.infos {
                            report.failures.push(format!("{}: NAR {}: {e}", info.store_path, info.url));
                        }
                    }
                }
            }
        }
    }
    if let Err(e) = walker.await {
        // Named by their hash parts: the frontier keeps no names.
        let mut unvisited: Vec<String> = unreported
            .iter()
            .map(|d| crate::nixbase32::encode(d))
            .collect();
        unvisited.sort();
        for hash in unvisited {
            report.fail(format!(
                "{}/{hash}: not mirrored: the closure walk failed before it got there ({e})",
                crate::store_path::STORE_DIR
            ));
        }
        report.fail(format!("the closure walk failed: {e}"));
    }
    let view = batch.finish().await?;
    narinfo_phase.finish();
    bytes_phase.finish();

    report.missing.sort();
    // A bucket's `--print-only` writes nothing anywhere.
    if let Some(release) = job.release.filter(|_| !(bucket && job.print_only)) {
        release::write_missing_store_paths(release, &report.missing)?;
    }
    if let Some(view) = view {
        view.finish()?;
    }
    report.elapsed = start.elapsed();
    Ok(report)
}
