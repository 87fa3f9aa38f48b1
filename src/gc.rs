//! Garbage collection: deleting old releases, and the narinfos and NARs of the global cache that
//! no remaining release links to.
//!
//! [`prune_releases`] keeps, per channel, the newest complete releases (as many as configured)
//! and the one the channel points at, and deletes the rest. [`collect_cache`] then deletes what
//! no given release needs. The set of live files is built from the given releases' `binary_cache/` views, plus the NAR of
//! every live narinfo (a NAR shared by two narinfos stays while either is live). The collector
//! refuses to run, deleting nothing, when any given release is missing, has no `binary_cache/`,
//! or links to a file that is not there: a half-visible world must never look like garbage. Only
//! what is plainly not a release among the given paths (the `lastsync` stamp a shell glob such as
//! `releases/*` also matches, hidden and temporary names) is skipped.
//!
//! In a bucket, [`collect_bucket`] does both from one listing, and [`collect_bucket_cache`]
//! takes a release's needs from the closure of its `store-paths` in the cache's own narinfos
//! (a bucket holds no views), with the same refusals.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use futures::StreamExt;

use crate::binary_cache::{self, LocalCache, BINARY_CACHE_DIR};
use crate::fsutil;
use crate::narinfo::NarInfo;
use crate::progress::human_bytes;
use crate::release::{self, BuildInfo, COMPLETION_MARKER};
use crate::storage::{marker_subject, narinfo_key, S3Store};
use crate::store_path::StorePath;

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

/// Whether a path given as a release is plainly something else: a regular file named
/// `lastsync` (the stamp beside the releases), or a hidden or temporary name. A missing path or
/// any other name is not: it is refused as a missing or incomplete release.
pub fn plainly_not_a_release(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    if name.starts_with('.') || fsutil::is_temp_name(name) {
        return true;
    }
    name == "lastsync" && fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// Deletes the files of the cache at `cache_dir` that none of `releases` needs (with `dry_run`,
/// only lists them); each file is printed to `out` (`would delete` with `dry_run`). Deletes
/// nothing when a release is missing or its view is incomplete.
pub fn collect_cache(
    cache_dir: &Path,
    releases: &[PathBuf],
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<GcReport> {
    // A shell glob such as `releases/*` also matches the `lastsync` stamp and hidden or
    // temporary entries: those are skipped, while every other name must be a complete release.
    let given = releases.len();
    let releases: Vec<&PathBuf> = releases
        .iter()
        .filter(|r| {
            let skip = plainly_not_a_release(r);
            if skip {
                tracing::debug!("{}: not a release, skipped", r.display());
            }
            !skip
        })
        .collect();
    if releases.is_empty() && given > 0 {
        bail!(
            "none of the {given} paths given is a release (a `lastsync` stamp, hidden and \
             temporary names are skipped): refusing to collect, since every file would look \
             like garbage"
        );
    }
    if releases.is_empty() {
        bail!("no release given: refusing to collect, since every file would look like garbage");
    }
    let cache = LocalCache::open(cache_dir)
        .with_context(|| format!("cannot open the binary cache {}", cache_dir.display()))?;
    // Files are listed and printed under the name given; links are matched against the
    // resolved name, whatever symlinks lead to it.
    let root = fsutil::absolute(cache_dir)?;

    // Everything the releases link to; any problem aborts before a single deletion.
    let mut live: BTreeSet<PathBuf> = BTreeSet::new();
    for release in releases {
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
            if !dry_run {
                remove(entry.path())?;
            }
            writeln!(out, "{} {}", verb(dry_run), entry.path().display())?;
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
    for (files, count) in [
        (&dead_narinfos, &mut report.narinfos),
        (&dead_nars, &mut report.nars),
    ] {
        for (path, size) in files {
            if !dry_run {
                remove(path)?;
            }
            writeln!(out, "{} {}", verb(dry_run), path.display())?;
            *count += 1;
            report.bytes += size;
        }
    }
    Ok(report)
}

impl GcReport {
    /// The one-line summary; `dry_run` says what would be done.
    pub fn summary(&self, dry_run: bool) -> String {
        format!(
            "{} {} narinfos and {} NARs, {} {} bytes ({}); kept {} files",
            verb(dry_run),
            self.narinfos,
            self.nars,
            if dry_run { "would free" } else { "freed" },
            self.bytes,
            human_bytes(self.bytes),
            self.kept
        )
    }
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

/// What [`prune_releases`] left and took.
#[derive(Clone, Debug, Default)]
pub struct Pruned {
    /// Releases deleted.
    pub deleted: Vec<PathBuf>,
    /// Releases kept that have a binary cache view: what the cache must still serve.
    pub remaining: Vec<PathBuf>,
}

/// A release directory found on disk.
struct OnDisk {
    dir: PathBuf,
    info: Option<BuildInfo>,
    complete: bool,
}

/// Deletes old releases under `DIR/releases`: per channel, keeps the one `DIR/channels/CHANNEL`
/// points at, the newest `keep` complete ones, and unfinished ones newer than the channel's
/// (they may still be completed). `keep_of(channel)` says how many to keep: `None` for a channel
/// no longer configured, whose releases are all kept; `Some(None)` to keep them all.
pub fn prune_releases(dir: &Path, keep_of: impl Fn(&str) -> Option<Option<u32>>) -> Result<Pruned> {
    let releases_dir = dir.join("releases");
    let mut pruned = Pruned::default();
    for channel_entry in fsutil::read_dir_sorted(&releases_dir)? {
        if !channel_entry.is_dir() {
            continue;
        }
        let channel = channel_entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let keep = keep_of(&channel);
        let current = fs::read_link(dir.join("channels").join(&channel))
            .ok()
            .map(|t| fsutil::absolute(&dir.join("channels").join(t)))
            .transpose()?;
        let mut found: Vec<OnDisk> = fsutil::read_dir_sorted(&channel_entry)?
            .into_iter()
            .filter(|p| {
                p.is_dir()
                    && !p
                        .file_name()
                        .is_some_and(|n| fsutil::is_temp_name(&n.to_string_lossy()))
            })
            .map(|p| OnDisk {
                info: BuildInfo::read(&p).ok(),
                complete: p.join(COMPLETION_MARKER).is_file(),
                dir: p,
            })
            .collect();
        // Newest first.
        found.sort_by_key(|r| std::cmp::Reverse(r.info.as_ref().map(BuildInfo::order_key)));
        let Some(keep) = keep else {
            // A channel no longer configured: leave it alone, but protect its files.
            pruned
                .remaining
                .extend(found.into_iter().filter(|r| r.complete).map(|r| r.dir));
            continue;
        };
        let current_key = current
            .as_ref()
            .and_then(|c| found.iter().find(|r| &r.dir == c))
            .and_then(|r| r.info.as_ref().map(BuildInfo::order_key));
        let mut kept = 0;
        for r in found {
            let is_current = current.as_ref() == Some(&r.dir);
            let keep_it = keeps(
                is_current,
                r.complete,
                r.info.as_ref(),
                current_key,
                keep,
                &mut kept,
            );
            if keep_it {
                if r.dir.join(BINARY_CACHE_DIR).is_dir() {
                    pruned.remaining.push(r.dir);
                }
            } else {
                tracing::info!("deleting old release {}", r.dir.display());
                fs::remove_dir_all(&r.dir)
                    .with_context(|| format!("cannot delete {}", r.dir.display()))?;
                pruned.deleted.push(r.dir);
            }
        }
    }
    Ok(pruned)
}

/// Whether a release of a channel stays, the releases taken newest first, on disk or in a
/// bucket: the channel's current release; a complete one while fewer than `keep` complete ones
/// were kept (`kept` counts them); an unfinished one newer than the current release, which may
/// still be completed.
fn keeps(
    is_current: bool,
    complete: bool,
    info: Option<&BuildInfo>,
    current_key: Option<(u64, i64, u64)>,
    keep: Option<u32>,
    kept: &mut u32,
) -> bool {
    let keep_it = if is_current {
        true
    } else if complete {
        *kept < keep.unwrap_or(u32::MAX)
    } else {
        match (info, current_key) {
            (Some(i), Some(c)) => i.order_key() > c,
            (_, None) => true,
            (None, Some(_)) => false,
        }
    };
    if complete && keep_it {
        *kept += 1;
    }
    keep_it
}

/// What a kept release needs of a bucket's cache: the closure of its store paths, less what
/// upstream lacks.
#[derive(Clone, Debug)]
pub struct BucketRoots {
    /// The release, for messages.
    pub name: String,
    /// Its `store-paths`.
    pub roots: Vec<StorePath>,
    /// Its `missing-store-paths`: paths upstream does not have, so neither does the cache.
    pub missing: HashSet<StorePath>,
}

/// Narinfos read at once while a bucket's live closure is walked.
const NARINFO_GETS: usize = 16;
/// Objects deleted at once.
const DELETES: usize = 16;

/// Deletes the narinfos and NARs of the cache in the bucket `cache` (its objects: `listing`,
/// relative keys → sizes, from one listing) that none of `releases` needs (with `dry_run`,
/// only lists them); each object is printed to `out`. The live set is the closure of each
/// release's store paths, read from the cache's own narinfos, with the NAR of every live
/// narinfo. Deletes nothing when no release is given, or when a release needs a narinfo or NAR
/// the bucket lacks (a path upstream lacks, listed in `missing-store-paths`, excepted).
/// Narinfos go before NARs, so that each narinfo left has its NAR at every moment; the
/// markers of deleted NARs ([`crate::storage::CHECKED_PREFIX`]) go last.
pub async fn collect_bucket_cache(
    cache: &S3Store,
    listing: &HashMap<String, u64>,
    releases: &[BucketRoots],
    dry_run: bool,
    out: &mut dyn Write,
) -> Result<GcReport> {
    if releases.is_empty() {
        bail!("no release given: refusing to collect, since every object would look like garbage");
    }
    let mut live: HashSet<String> = HashSet::new();
    for release in releases {
        let mut seen: HashSet<StorePath> = HashSet::new();
        let mut frontier: Vec<StorePath> = Vec::new();
        for p in &release.roots {
            if seen.insert(p.clone()) {
                frontier.push(p.clone());
            }
        }
        while !frontier.is_empty() {
            let mut wanted = Vec::new();
            for path in frontier.drain(..) {
                let key = narinfo_key(&path);
                if live.contains(&key) {
                    // Its closure is live already (walked for an earlier release).
                    continue;
                }
                if !listing.contains_key(&key) {
                    if release.missing.contains(&path) {
                        continue;
                    }
                    bail!(
                        "release {} needs {}, which is not in the bucket: refusing to collect \
                         garbage against an incomplete cache; mirror the release again first",
                        release.name,
                        cache.url_of(&key)
                    );
                }
                wanted.push((path, key));
            }
            let mut reads = futures::stream::iter(wanted.into_iter().map(|(path, key)| {
                let cache = cache.clone();
                async move {
                    let got = cache.get(&key).await?;
                    Ok::<_, anyhow::Error>((path, key, got))
                }
            }))
            .buffer_unordered(NARINFO_GETS);
            while let Some(read) = reads.next().await {
                let (path, key, got) = read?;
                let url = cache.url_of(&key);
                let Some(bytes) = got else {
                    bail!("{url} was listed but cannot be read: refusing to collect garbage");
                };
                let info = std::str::from_utf8(&bytes)
                    .map_err(|e| e.to_string())
                    .and_then(|t| NarInfo::parse(t).map_err(|e| e.to_string()))
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "{url} is not a valid narinfo ({e}): refusing to collect garbage"
                        )
                    })?;
                if info.store_path != path {
                    bail!(
                        "{url} describes {}, not {path}: refusing to collect garbage",
                        info.store_path
                    );
                }
                fsutil::check_relative_path(&info.url)
                    .with_context(|| format!("{url} has an unsafe URL"))?;
                if !listing.contains_key(&info.url) {
                    bail!(
                        "{url} names the NAR {}, which is not in the bucket: refusing to \
                         collect garbage against an incomplete cache",
                        cache.url_of(&info.url)
                    );
                }
                live.insert(key);
                live.insert(info.url.clone());
                for r in info.references {
                    if seen.insert(r.clone()) {
                        frontier.push(r);
                    }
                }
            }
        }
    }

    let mut report = GcReport::default();
    let mut dead_narinfos = Vec::new();
    let mut dead_nars = Vec::new();
    let mut dead_markers = Vec::new();
    let mut keys: Vec<(&String, &u64)> = listing.iter().collect();
    keys.sort();
    for (key, size) in keys {
        if let Some(url) = marker_subject(key) {
            // The marker of a checked NAR goes with its NAR.
            if !live.contains(url) {
                dead_markers.push((key.clone(), *size));
            }
            continue;
        }
        let is_narinfo = !key.contains('/') && key.ends_with(".narinfo");
        let is_nar = key.starts_with("nar/");
        if !is_narinfo && !is_nar {
            continue;
        }
        if live.contains(key.as_str()) {
            report.kept += 1;
        } else if is_narinfo {
            dead_narinfos.push((key.clone(), *size));
        } else {
            dead_nars.push((key.clone(), *size));
        }
    }
    let mut markers = 0;
    for (objects, count) in [
        (&dead_narinfos, &mut report.narinfos),
        (&dead_nars, &mut report.nars),
        (&dead_markers, &mut markers),
    ] {
        if !dry_run {
            let mut deletes = futures::stream::iter(objects.iter().map(|(key, _)| {
                let cache = cache.clone();
                async move { cache.delete(key).await }
            }))
            .buffer_unordered(DELETES);
            while let Some(done) = deletes.next().await {
                done?;
            }
        }
        for (key, size) in objects {
            writeln!(out, "{} {}", verb(dry_run), cache.url_of(key))?;
            *count += 1;
            report.bytes += size;
        }
    }
    Ok(report)
}

/// A release found in a bucket's listing.
struct InBucket {
    key: String,
    info: Option<BuildInfo>,
    complete: bool,
    has_store_paths: bool,
}

/// `release-nixos --gc` and `garbage-collect` on a mirror in a bucket (`root`, its prefix):
/// from one listing, deletes old releases as [`prune_releases`] does on disk (their
/// `git-revision` first, so that a release half deleted is never complete), then collects the
/// cache against the releases kept ([`collect_bucket_cache`]). Returns the releases deleted
/// (keys under the prefix) and the collection's report.
pub async fn collect_bucket(
    root: &S3Store,
    keep_of: impl Fn(&str) -> Option<Option<u32>>,
    out: &mut dyn Write,
) -> Result<(Vec<String>, GcReport)> {
    let listing = root.list().await?;
    // releases/CHANNEL/NIXNAME/FILE
    let mut by_channel: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for key in listing.keys() {
        let mut parts = key.splitn(4, '/');
        if let (Some("releases"), Some(channel), Some(name), Some(file)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        {
            by_channel
                .entry(channel.to_string())
                .or_default()
                .entry(name.to_string())
                .or_default()
                .push(file.to_string());
        }
    }
    let mut deleted = Vec::new();
    let mut remaining = Vec::new();
    for (channel, releases) in &by_channel {
        let keep = keep_of(channel);
        let current = release::bucket::channel_target(root, channel).await?;
        let mut found = Vec::new();
        for (name, files) in releases {
            let key = release::bucket::release_key(channel, name);
            found.push(InBucket {
                info: release::bucket::build_info(root, &key).await?,
                complete: files.iter().any(|f| f == COMPLETION_MARKER),
                has_store_paths: files.iter().any(|f| f == "store-paths"),
                key,
            });
        }
        found.sort_by_key(|r| std::cmp::Reverse(r.info.as_ref().map(BuildInfo::order_key)));
        let Some(keep) = keep else {
            remaining.extend(found.into_iter().filter(|r| r.complete).map(|r| r.key));
            continue;
        };
        let current_key = current
            .as_ref()
            .and_then(|c| found.iter().find(|r| &r.key == c))
            .and_then(|r| r.info.as_ref().map(BuildInfo::order_key));
        let mut kept = 0;
        for r in found {
            let is_current = current.as_ref() == Some(&r.key);
            let keep_it = keeps(
                is_current,
                r.complete,
                r.info.as_ref(),
                current_key,
                keep,
                &mut kept,
            );
            if keep_it {
                if r.complete || r.has_store_paths {
                    remaining.push(r.key);
                }
                continue;
            }
            tracing::info!("deleting old release {}", root.url_of(&r.key));
            let mut files = releases[r.key.rsplit('/').next().unwrap_or_default()].clone();
            files.sort_by_key(|f| f != COMPLETION_MARKER);
            for file in files {
                root.delete(&format!("{}/{file}", r.key)).await?;
            }
            deleted.push(r.key);
        }
    }
    if remaining.is_empty() {
        tracing::warn!("no release with a binary cache remains; the cache is not collected");
        return Ok((deleted, GcReport::default()));
    }
    let mut roots = Vec::new();
    for key in &remaining {
        roots.push(bucket_roots(root, key).await?);
    }
    let cache = root.sub(BINARY_CACHE_DIR);
    let cache_listing: HashMap<String, u64> = listing
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix(&format!("{BINARY_CACHE_DIR}/"))
                .map(|rel| (rel.to_string(), *v))
        })
        .collect();
    let report = collect_bucket_cache(&cache, &cache_listing, &roots, false, out).await?;
    Ok((deleted, report))
}

/// The store paths of the release `key` in the bucket `root` (and those upstream lacks); an
/// error when it has no `store-paths`.
pub async fn bucket_roots(root: &S3Store, key: &str) -> Result<BucketRoots> {
    let file = format!("{key}/store-paths");
    let Some(text) = root.get(&file).await? else {
        bail!(
            "release {} has no store-paths: refusing to collect garbage against an incomplete \
             view",
            root.url_of(key)
        );
    };
    let name = root.url_of(key);
    let roots = parse_paths(&text, &root.url_of(&file))?;
    let missing = match root.get(&format!("{key}/missing-store-paths")).await? {
        Some(text) => parse_paths(&text, &root.url_of(&format!("{key}/missing-store-paths")))?,
        None => Vec::new(),
    };
    Ok(BucketRoots {
        name,
        roots,
        missing: missing.into_iter().collect(),
    })
}

/// The store paths of a file's text, one a line; `origin` names it in errors.
fn parse_paths(text: &[u8], origin: &str) -> Result<Vec<StorePath>> {
    let text = std::str::from_utf8(text).with_context(|| format!("{origin} is not UTF-8"))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        out.push(
            StorePath::from_absolute_path(line)
                .with_context(|| format!("{origin}:{}: {line:?} is not a store path", n + 1))?,
        );
    }
    Ok(out)
}
