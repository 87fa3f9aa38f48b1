//! The closure walk: from a set of store paths, find the narinfo of every path in their runtime
//! closure (narinfo `References`, transitively).
//!
//! The walk is pipelined, not level by level: as soon as one narinfo arrives its references are
//! queued, and up to the fetcher's concurrency requests are in flight at any time. Each path is
//! visited once. A narinfo already present in the local cache directory is read from disk instead
//! of being fetched. Results are streamed to the caller as [`Event`]s, so downloads of NARs can
//! start while the walk goes on. A path whose narinfo the cache does not have (404) is reported as
//! [`Event::Missing`]; any other failure as [`Event::Failed`]; neither stops the rest of the walk.
//! A cache host that cannot be connected to is reported as [`Event::HostDown`], on which the
//! caller stops.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::failpoint;
use crate::binary_cache::{LocalCache, Upstream, UpstreamNarInfoError};
use crate::narinfo::NarInfo;
use crate::storage::CacheStore;
use crate::store_path::StorePath;

/// Where a narinfo was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Read from the local cache directory.
    Local,
    /// Fetched from the upstream cache (and checked against the trusted keys).
    Remote,
    /// Read from the staging area, where a `--print-only` run left it (and checked against the
    /// trusted keys): stored in the cache like a fetched one, once its NAR is in place.
    Staged,
}

/// A narinfo of the closure.
#[derive(Clone, Debug)]
pub struct Found {
    /// The parsed narinfo; `to_string()` gives the bytes exactly as served.
    pub narinfo: NarInfo,
    /// Where it came from.
    pub origin: Origin,
    /// Indexes into `narinfo.references` of the paths the walk queued on this narinfo, i.e.
    /// met for the first time: each path of the closure is queued once, before it is reported,
    /// so a receiver can know what is yet to come without a set of its own.
    pub queued: Vec<u32>,
}

/// One result of the walk.
#[derive(Debug)]
pub enum Event {
    /// A narinfo was found.
    Found(Box<Found>),
    /// The upstream cache does not have this path (404).
    Missing(StorePath),
    /// The upstream cache's host cannot be connected to
    /// ([`crate::fetch::FetchError::HostDown`]): the mirror stops, since every other path
    /// would fail the same way.
    HostDown(String),
    /// The narinfo could not be fetched or was refused.
    Failed {
        /// The store path whose narinfo failed.
        path: StorePath,
        /// What went wrong, naming the URL or file.
        error: String,
    },
}

/// Counters of a finished walk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Narinfos read from the local cache or the staging area.
    pub local: usize,
    /// Narinfos fetched from upstream.
    pub remote: usize,
    /// Paths missing upstream.
    pub missing: usize,
    /// Paths that failed.
    pub failed: usize,
}

/// Where the walk takes narinfos from.
pub struct Source {
    /// The upstream cache, which knows the keys fetched narinfos must be signed by.
    pub upstream: Upstream,
    /// A local cache whose narinfos are used when present.
    pub local: Option<LocalCache>,
    /// A staging area whose narinfos are used when the local cache has none.
    pub staged: Option<LocalCache>,
    /// A bucket whose narinfos are used when present (read concurrently, like fetches).
    pub bucket: Option<CacheStore>,
}

impl Source {
    /// The narinfo of `path` from the local cache, or else from the staging area.
    fn read_local(&self, path: &StorePath) -> Option<(NarInfo, Origin)> {
        if let Some(info) = self.local.as_ref().and_then(|l| l.read_narinfo(path)) {
            return Some((info, Origin::Local));
        }
        let staged = self.staged.as_ref().filter(|s| s.exists())?;
        staged.read_narinfo(path).map(|info| (info, Origin::Staged))
    }

    /// The file a narinfo of `origin` was read from.
    fn file_of(&self, path: &StorePath, origin: Origin) -> String {
        if let (Origin::Local, Some(bucket)) = (origin, &self.bucket) {
            return bucket.narinfo_location(path);
        }
        let cache = match origin {
            Origin::Local => self.local.as_ref(),
            Origin::Staged => self.staged.as_ref(),
            Origin::Remote => None,
        };
        cache
            .map(|c| c.narinfo_path(path).display().to_string())
            .unwrap_or_default()
    }
}

impl Source {
    /// The narinfo of `path` from the bucket when it has one, else from upstream.
    async fn fetch(&self, path: &StorePath) -> Result<(NarInfo, Origin), Event> {
        if let Some(bucket) = self.bucket.as_ref().filter(|b| b.has_narinfo(path)) {
            match bucket.read_bucket_narinfo(path).await {
                Ok(Some(info)) => return Ok((info, Origin::Local)),
                Ok(None) => {}
                Err(e) => {
                    return Err(Event::Failed {
                        path: path.clone(),
                        error: format!("{e:#}"),
                    })
                }
            }
        }
        self.fetch_remote(path).await.map(|i| (i, Origin::Remote))
    }

    /// Fetches the upstream narinfo of `path`; its signatures are checked by the caller, in
    /// batches.
    async fn fetch_remote(&self, path: &StorePath) -> Result<NarInfo, Event> {
        failpoint("narinfo-fetch", path);
        match self.upstream.fetch_narinfo_unchecked(path).await {
            Ok(info) => Ok(info),
            Err(UpstreamNarInfoError::NotFound) => Err(Event::Missing(path.clone())),
            Err(UpstreamNarInfoError::Refused(error)) => match self.upstream.host_down() {
                Some(down) => Err(Event::HostDown(down.to_string())),
                None => Err(Event::Failed {
                    path: path.clone(),
                    error,
                }),
            },
        }
    }

    /// Each of a batch of narinfos, once their signatures are checked: found, or refused with
    /// the reason.
    fn check(
        &self,
        infos: Vec<(NarInfo, Origin)>,
    ) -> impl Iterator<Item = Result<Found, (StorePath, Origin, String)>> {
        let (infos, origins): (Vec<NarInfo>, Vec<Origin>) = infos.into_iter().unzip();
        self.upstream
            .check_signatures(infos)
            .into_iter()
            .zip(origins)
            .map(|(checked, origin)| match checked {
                Ok(narinfo) => Ok(Found {
                    narinfo,
                    origin,
                    queued: Vec::new(),
                }),
                Err((path, error)) => Err((path, origin, error)),
            })
    }
}

/// Narinfos checked together: up to this many, or fewer when the walk would otherwise wait for
/// them.
const SIGNATURE_BATCH: usize = 64;

/// Walks the closure of `roots`, sending every result to `events`. Returns when every path of
/// the closure has been reported (or the receiver was dropped).
///
/// With trusted keys, a narinfo of the local cache is checked like a fetched one: one without
/// a valid signature by a trusted key is fetched again (and, once its NAR is checked against
/// it, replaces the local one); it is never passed on as it is.
pub async fn walk(
    source: Arc<Source>,
    roots: Vec<StorePath>,
    events: mpsc::Sender<Event>,
) -> WalkStats {
    let max_in_flight = source.upstream.fetcher().config().concurrency.max(1) * 2;
    let check_sigs = !source.upstream.trusted_keys().is_empty();
    let mut stats = WalkStats::default();
    // Digests only: the walk's memory is per path, and a closure has hundreds of thousands.
    let mut seen: HashSet<[u8; 20]> = HashSet::new();
    // Paths still to visit, taken depth first: the last queued is visited next. A closure is
    // deep and wide (a path has dozens of references); taken breadth first, the queue and the
    // mirror's frontier held a whole level of it at a time.
    let mut queue: Vec<StorePath> = Vec::new();
    for r in roots.into_iter().rev() {
        if seen.insert(*r.digest()) {
            queue.push(r);
        }
    }
    let mut in_flight: JoinSet<Result<(NarInfo, Origin), Event>> = JoinSet::new();
    // The path each fetch task is for, to name it should the task panic.
    let mut task_paths: HashMap<tokio::task::Id, StorePath> = HashMap::new();
    // Narinfos whose signatures are still to be checked; their references are only followed
    // once they are.
    let mut unchecked: Vec<(NarInfo, Origin)> = Vec::new();
    loop {
        // Start work until the queue is empty, enough requests are in flight or a batch of
        // signatures is waiting.
        while in_flight.len() < max_in_flight && unchecked.len() < SIGNATURE_BATCH {
            let Some(path) = queue.pop() else { break };
            failpoint("walk-queue", &path);
            if let Some((info, origin)) = source.read_local(&path) {
                if check_sigs {
                    unchecked.push((info, origin));
                    continue;
                }
                stats.local += 1;
                let event = Event::Found(Box::new(Found {
                    narinfo: info,
                    origin,
                    queued: Vec::new(),
                }));
                if !handle(event, &mut seen, &mut queue, &mut stats, &events).await {
                    return stats;
                }
                continue;
            }
            let src = source.clone();
            let fetched = path.clone();
            let task = in_flight.spawn(async move { src.fetch(&fetched).await });
            task_paths.insert(task.id(), path);
        }
        // Check a full batch, or what there is when the fetches run short of work.
        if unchecked.len() >= SIGNATURE_BATCH
            || (!unchecked.is_empty() && queue.is_empty() && in_flight.len() <= max_in_flight / 2)
        {
            for checked in source.check(std::mem::take(&mut unchecked)) {
                let event = match checked {
                    Ok(found) => {
                        match found.origin {
                            Origin::Local | Origin::Staged => stats.local += 1,
                            Origin::Remote => stats.remote += 1,
                        }
                        Event::Found(Box::new(found))
                    }
                    Err((path, origin @ (Origin::Local | Origin::Staged), error)) => {
                        let file = source.file_of(&path, origin);
                        tracing::warn!(
                            "{file}: the narinfo stored for {path} is refused ({error}); \
                             fetching it again"
                        );
                        let src = source.clone();
                        let fetched = path.clone();
                        let task = in_flight.spawn(async move {
                            src.fetch_remote(&fetched)
                                .await
                                .map(|i| (i, Origin::Remote))
                        });
                        task_paths.insert(task.id(), path);
                        continue;
                    }
                    Err((path, Origin::Remote, error)) => Event::Failed { path, error },
                };
                if !handle(event, &mut seen, &mut queue, &mut stats, &events).await {
                    return stats;
                }
            }
            continue;
        }
        let Some(joined) = in_flight.join_next_with_id().await else {
            if queue.is_empty() && unchecked.is_empty() {
                return stats;
            }
            continue;
        };
        let event = match joined {
            Ok((id, result)) => {
                task_paths.remove(&id);
                match result {
                    Ok((info, origin)) if check_sigs => {
                        unchecked.push((info, origin));
                        continue;
                    }
                    Ok((info, origin)) => {
                        match origin {
                            Origin::Local | Origin::Staged => stats.local += 1,
                            Origin::Remote => stats.remote += 1,
                        }
                        Event::Found(Box::new(Found {
                            narinfo: info,
                            origin,
                            queued: Vec::new(),
                        }))
                    }
                    Err(event) => event,
                }
            }
            Err(e) => match task_paths.remove(&e.id()) {
                Some(path) => Event::Failed {
                    path,
                    error: format!("the task fetching its narinfo failed: {e}"),
                },
                None => {
                    tracing::error!("a narinfo fetch task failed: {e}");
                    continue;
                }
            },
        };
        if !handle(event, &mut seen, &mut queue, &mut stats, &events).await {
            return stats;
        }
    }
}

/// Queues the references of a found narinfo and passes the event on. Returns false when the
/// receiver is gone.
async fn handle(
    mut event: Event,
    seen: &mut HashSet<[u8; 20]>,
    queue: &mut Vec<StorePath>,
    stats: &mut WalkStats,
    events: &mpsc::Sender<Event>,
) -> bool {
    if let Event::Found(found) = &mut event {
        // A panic while queuing fails this path, not the walk: the rest of the closure goes on.
        let queued = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            failpoint("walk", &found.narinfo.store_path);
            let mut queued = Vec::new();
            for (i, r) in found.narinfo.references.iter().enumerate() {
                if seen.insert(*r.digest()) {
                    queue.push(r.clone());
                    queued.push(i as u32);
                }
            }
            queued
        }));
        match queued {
            Ok(queued) => found.queued = queued,
            Err(panic) => {
                let why = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic".to_string());
                event = Event::Failed {
                    path: found.narinfo.store_path.clone(),
                    error: format!("following its references failed: {why}"),
                };
            }
        }
    }
    match &event {
        Event::Found(_) => {}
        Event::Missing(_) => stats.missing += 1,
        Event::Failed { .. } | Event::HostDown(_) => stats.failed += 1,
    }
    events.send(event).await.is_ok()
}
