//! Closure resolution: from a set of store paths, find the narinfo of every path in their runtime
//! closure (narinfo `References`, transitively).
//!
//! The walk is pipelined, not level by level: as soon as one narinfo arrives its references are
//! queued, and up to the fetcher's concurrency requests are in flight at any time. Each path is
//! visited once. A narinfo already present in the local cache directory is read from disk instead
//! of being fetched. Results are streamed to the caller as [`Event`]s, so downloads of NARs can
//! start while the walk goes on. A path whose narinfo the cache does not have (404) is reported as
//! [`Event::Missing`]; any other failure as [`Event::Failed`]; neither stops the rest of the walk.

use std::collections::{HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::fetch::Fetcher;
use crate::narinfo::{NarInfo, SignatureCheck, MAX_NARINFO_SIZE};
use crate::signature::PublicKey;
use crate::store_path::StorePath;

/// Where narinfos come from.
pub struct NarInfoSource {
    /// The shared HTTP client.
    pub fetcher: Fetcher,
    /// Base URL of the upstream binary cache, without a trailing slash.
    pub cache_url: String,
    /// A local binary cache directory whose `HASH.narinfo` files are used when present.
    pub local_dir: Option<PathBuf>,
    /// Keys whose signature a fetched narinfo must carry; empty to accept any narinfo.
    pub trusted_keys: Vec<PublicKey>,
}

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

impl NarInfoSource {
    /// The URL of a narinfo on the upstream cache.
    pub fn narinfo_url(&self, path: &StorePath) -> String {
        narinfo_url(&self.cache_url, path)
    }

    /// Reads the local narinfo of `path`, if there is a usable one.
    fn read_local(&self, path: &StorePath) -> Option<NarInfo> {
        let dir = self.local_dir.as_ref()?;
        let file = dir.join(format!("{}.narinfo", path.hash_part()));
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("cannot read {}: {e}; fetching it again", file.display());
                return None;
            }
        };
        match NarInfo::parse(&text) {
            Ok(info) if info.store_path == *path => Some(info),
            Ok(info) => {
                tracing::warn!(
                    "{} describes {}, not {path}; fetching it again",
                    file.display(),
                    info.store_path
                );
                None
            }
            Err(e) => {
                tracing::warn!(
                    "{} is not a valid narinfo ({e}); fetching it again",
                    file.display()
                );
                None
            }
        }
    }

    /// Fetches and parses the upstream narinfo of `path`; its signatures are checked by the
    /// caller, in batches.
    async fn fetch_remote(&self, path: &StorePath) -> Result<NarInfo, Event> {
        match fetch_unchecked(&self.fetcher, &self.cache_url, path).await {
            Ok(info) => Ok(info),
            Err(UpstreamNarInfoError::NotFound) => Err(Event::Missing(path.clone())),
            Err(UpstreamNarInfoError::Refused(error)) => Err(Event::Failed {
                path: path.clone(),
                error,
            }),
        }
    }

    /// Checks the signatures of fetched narinfos (one batch verification for all of them),
    /// giving the event of each.
    fn check(&self, infos: Vec<NarInfo>) -> Vec<Event> {
        let refs: Vec<&NarInfo> = infos.iter().collect();
        let checks = NarInfo::verify_signatures_batch(&refs, &self.trusted_keys);
        infos
            .into_iter()
            .zip(checks)
            .map(|(info, check)| {
                let url = self.narinfo_url(&info.store_path);
                match signature_refusal(&url, check, &self.trusted_keys) {
                    None => Event::Found(Box::new(Found {
                        narinfo: info,
                        origin: Origin::Remote,
                    })),
                    Some(error) => Event::Failed {
                        path: info.store_path,
                        error,
                    },
                }
            })
            .collect()
    }
}

/// Why an upstream narinfo was not taken.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamNarInfoError {
    /// The cache does not have it (404).
    #[error("the cache has no narinfo for it")]
    NotFound,
    /// Fetching failed, or it was malformed, for another path, or not signed by a trusted key;
    /// the message names the URL.
    #[error("{0}")]
    Refused(String),
}

/// Fetches the narinfo of `path` from the cache at `cache_url`, and checks that it parses,
/// describes `path`, and (when `trusted_keys` is not empty) carries a valid signature by one
/// of them.
pub async fn fetch_checked(
    fetcher: &Fetcher,
    cache_url: &str,
    trusted_keys: &[PublicKey],
    path: &StorePath,
) -> Result<NarInfo, UpstreamNarInfoError> {
    let info = fetch_unchecked(fetcher, cache_url, path).await?;
    if !trusted_keys.is_empty() {
        let url = narinfo_url(cache_url, path);
        let check = info.verify_signatures(trusted_keys);
        if let Some(error) = signature_refusal(&url, check, trusted_keys) {
            return Err(UpstreamNarInfoError::Refused(error));
        }
    }
    Ok(info)
}

fn narinfo_url(cache_url: &str, path: &StorePath) -> String {
    format!(
        "{}/{}.narinfo",
        cache_url.trim_end_matches('/'),
        path.hash_part()
    )
}

/// [`fetch_checked`] without the signature check.
async fn fetch_unchecked(
    fetcher: &Fetcher,
    cache_url: &str,
    path: &StorePath,
) -> Result<NarInfo, UpstreamNarInfoError> {
    use UpstreamNarInfoError::Refused;
    let url = narinfo_url(cache_url, path);
    let body = match fetcher.get_bytes(&url, None, MAX_NARINFO_SIZE as u64).await {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Err(UpstreamNarInfoError::NotFound),
        Err(e) => return Err(Refused(e.to_string())),
    };
    let text =
        std::str::from_utf8(&body).map_err(|_| Refused(format!("{url} is not UTF-8 text")))?;
    let info =
        NarInfo::parse(text).map_err(|e| Refused(format!("{url} is not a valid narinfo: {e}")))?;
    if info.store_path != *path {
        return Err(Refused(format!(
            "{url} describes {} instead of {path}",
            info.store_path
        )));
    }
    Ok(info)
}

/// Why the narinfo at `url` is refused after its signatures were checked, if it is. With no
/// trusted keys, every narinfo is taken.
fn signature_refusal(
    url: &str,
    check: SignatureCheck,
    trusted_keys: &[PublicKey],
) -> Option<String> {
    if trusted_keys.is_empty() {
        return None;
    }
    match check {
        SignatureCheck::Valid { .. } => None,
        SignatureCheck::Invalid { key_name } => Some(format!(
            "{url} has a signature by {key_name} that does not verify"
        )),
        SignatureCheck::NoTrustedSignature => {
            let names: Vec<&str> = trusted_keys.iter().map(|k| k.name()).collect();
            Some(format!(
                "{url} is not signed by a trusted key ({}); pass --trusted-public-key \
                 with the cache's key, or --no-check-sigs",
                names.join(", ")
            ))
        }
    }
}

/// Fetched narinfos checked together: up to this many, or fewer when the walk would otherwise
/// wait for them.
const SIGNATURE_BATCH: usize = 64;

/// Walks the closure of `roots`, sending every result to `events`. Returns when every path of
/// the closure has been reported (or the receiver was dropped).
pub async fn walk(
    source: Arc<NarInfoSource>,
    roots: Vec<StorePath>,
    events: mpsc::Sender<Event>,
) -> WalkStats {
    let max_in_flight = source.fetcher.config().concurrency.max(1) * 2;
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
            if let Some(info) = source.read_local(&path) {
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
            Ok(Ok(info)) if !source.trusted_keys.is_empty() => {
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

/// The whole closure, collected.
#[derive(Debug, Default)]
pub struct Closure {
    /// Every narinfo found, in the order they arrived.
    pub found: Vec<Found>,
    /// Paths missing upstream, sorted.
    pub missing: Vec<StorePath>,
    /// Paths that failed, with the reason, sorted.
    pub failed: Vec<(StorePath, String)>,
}

/// Walks the closure of `roots` and collects every result.
pub async fn resolve(source: Arc<NarInfoSource>, roots: Vec<StorePath>) -> Closure {
    let (tx, mut rx) = mpsc::channel(1024);
    let walker = tokio::spawn(walk(source, roots, tx));
    let mut closure = Closure::default();
    while let Some(ev) = rx.recv().await {
        match ev {
            Event::Found(f) => closure.found.push(*f),
            Event::Missing(p) => closure.missing.push(p),
            Event::Failed { path, error } => closure.failed.push((path, error)),
        }
    }
    let _ = walker.await;
    closure.missing.sort();
    closure.failed.sort_by(|a, b| a.0.cmp(&b.0));
    closure
}
