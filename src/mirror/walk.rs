//! The closure walk: from a set of store paths, find the narinfo of every path in their runtime
//! closure (narinfo `References`, transitively).
//!
//! The walk is pipelined, not level by level: as soon as one narinfo arrives its references are
//! queued, and up to the fetcher's concurrency requests are in flight at any time. Each path is
//! visited once. A narinfo already present in the local cache directory is read from disk instead
//! of being fetched. Results are streamed to the caller as [`Event`]s, so downloads of NARs can
//! start while the walk goes on. A path whose narinfo the cache does not have (404) is reported as
//! [`Event::Missing`]; any other failure as [`Event::Failed`]; neither stops the rest of the walk.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::binary_cache::{LocalCache, Upstream, UpstreamNarInfoError};
use crate::narinfo::NarInfo;
use crate::store_path::StorePath;

/// Where a narinfo was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Read from the local cache directory.
    Local,
    /// Fetched from the upstream cache (and checked against the trusted keys).
    Remote,
}

/// A narinfo of the closure.
#[derive(Clone, Debug)]
pub struct Found {
    /// The parsed narinfo; `to_string()` gives the bytes exactly as served.
    pub narinfo: NarInfo,
    /// Where it came from.
    pub origin: Origin,
}

/// One result of the walk.
#[derive(Debug)]
pub enum Event {
    /// A narinfo was found.
    Found(Box<Found>),
    /// The upstream cache does not have this path (404).
    Missing(StorePath),
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
    /// Narinfos read from the local cache.
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
}

impl Source {
    /// Fetches the upstream narinfo of `path`; its signatures are checked by the caller, in
    /// batches.
    async fn fetch_remote(&self, path: &StorePath) -> Result<NarInfo, Event> {
        match self.upstream.fetch_narinfo_unchecked(path).await {
            Ok(info) => Ok(info),
            Err(UpstreamNarInfoError::NotFound) => Err(Event::Missing(path.clone())),
            Err(UpstreamNarInfoError::Refused(error)) => Err(Event::Failed {
                path: path.clone(),
                error,
            }),
        }
    }

    /// The event of each of a batch of fetched narinfos, once their signatures are checked.
    fn check(&self, infos: Vec<NarInfo>) -> impl Iterator<Item = Event> {
        self.upstream
            .check_signatures(infos)
            .into_iter()
            .map(|checked| match checked {
                Ok(narinfo) => Event::Found(Box::new(Found {
                    narinfo,
                    origin: Origin::Remote,
                })),
                Err((path, error)) => Event::Failed { path, error },
            })
    }
}

/// Fetched narinfos checked together: up to this many, or fewer when the walk would otherwise
/// wait for them.
const SIGNATURE_BATCH: usize = 64;

/// Walks the closure of `roots`, sending every result to `events`. Returns when every path of
/// the closure has been reported (or the receiver was dropped).
pub async fn walk(
    source: Arc<Source>,
    roots: Vec<StorePath>,
    events: mpsc::Sender<Event>,
) -> WalkStats {
    let max_in_flight = source.upstream.fetcher().config().concurrency.max(1) * 2;
    let mut stats = WalkStats::default();
    let mut seen: HashSet<StorePath> = HashSet::new();
    let mut queue: VecDeque<StorePath> = VecDeque::new();
    for r in roots {
        if seen.insert(r.clone()) {
            queue.push_back(r);
        }
    }
    let mut in_flight: JoinSet<Result<NarInfo, Event>> = JoinSet::new();
    // Fetched narinfos whose signatures are still to be checked; their references are only
    // followed once they are.
    let mut unchecked: Vec<NarInfo> = Vec::new();
    loop {
        // Start work until the queue is empty or enough requests are in flight.
        while in_flight.len() < max_in_flight {
            let Some(path) = queue.pop_front() else { break };
            if let Some(info) = source.local.as_ref().and_then(|l| l.read_narinfo(&path)) {
                stats.local += 1;
                let event = Event::Found(Box::new(Found {
                    narinfo: info,
                    origin: Origin::Local,
                }));
                if !handle(event, &mut seen, &mut queue, &mut stats, &events).await {
                    return stats;
                }
                continue;
            }
            let src = source.clone();
            in_flight.spawn(async move { src.fetch_remote(&path).await });
        }
        // Check a full batch, or what there is when the fetches run short of work.
        if unchecked.len() >= SIGNATURE_BATCH
            || (!unchecked.is_empty() && queue.is_empty() && in_flight.len() <= max_in_flight / 2)
        {
            for event in source.check(std::mem::take(&mut unchecked)) {
                if let Event::Found(_) = &event {
                    stats.remote += 1;
                }
                if !handle(event, &mut seen, &mut queue, &mut stats, &events).await {
                    return stats;
                }
            }
            continue;
        }
        let Some(joined) = in_flight.join_next().await else {
            if queue.is_empty() {
                return stats;
            }
            continue;
        };
        let event = match joined {
            Ok(Ok(info)) if !source.upstream.trusted_keys().is_empty() => {
                unchecked.push(info);
                continue;
            }
            Ok(Ok(info)) => {
                stats.remote += 1;
                Event::Found(Box::new(Found {
                    narinfo: info,
                    origin: Origin::Remote,
                }))
            }
            Ok(Err(ev)) => ev,
            Err(e) => {
                // A panicking task is a bug; keep the walk going and report it.
                tracing::error!("a narinfo fetch task failed: {e}");
                continue;
            }
        };
        if !handle(event, &mut seen, &mut queue, &mut stats, &events).await {
            return stats;
        }
    }
}

/// Queues the references of a found narinfo and passes the event on. Returns false when the
/// receiver is gone.
async fn handle(
    event: Event,
    seen: &mut HashSet<StorePath>,
    queue: &mut VecDeque<StorePath>,
    stats: &mut WalkStats,
    events: &mpsc::Sender<Event>,
) -> bool {
    match &event {
        Event::Found(found) => {
            for r in &found.narinfo.references {
                if !seen.contains(r) {
                    seen.insert(r.clone());
                    queue.push_back(r.clone());
                }
            }
        }
        Event::Missing(_) => stats.missing += 1,
        Event::Failed { .. } => stats.failed += 1,
    }
    events.send(event).await.is_ok()
}
