//! Hashing the files of the mirror and building its directories, as the walk
//! ([`super::scan`]) hands them over: a batch of sources is hashed on a pool of threads
//! (narinfos after the NARs their published bytes name), and a directory is built as soon as
//! its entries are known, each block handed to a [`Router`] on its way to the CAR file and the
//! node. A source whose cache entry still matches is not read unless its blocks are needed.

use std::fs;
use std::io::{self, Read};
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;
use sha2::{Digest, Sha256};

use super::scan::{Lookup, Source, SourceKind};
use super::{io_error, PublishError, IPFS_HASH_FIELD};
use crate::hash::{FingerprintMap, Sha256Hash};
use crate::ipfs::cid::{Cid, ShortCid};
use crate::ipfs::directory::DirectoryError;
use crate::ipfs::file_cache::{Cached, Dependency, FileCache, FileEntry};
use crate::ipfs::profile::Layout;
use crate::ipfs::unixfs::{Added, ImportError};
use crate::ipfs::upload::{AddSource, NodeMethod, Router};
use crate::narinfo::NarInfo;
use crate::progress::Phase;

/// How files are hashed and directories built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// The import parameters.
    pub layout: Layout,
    /// Threads hashing files.
    pub concurrency: usize,
    /// Read every file, even those whose cached DAG the node holds (to repair a node).
    pub read_all: bool,
}

/// Counts of the hashing work.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HashStats {
    /// Files in the tree.
    pub files: u64,
    /// Files read (hashed, and their blocks delivered).
    pub files_read: u64,
    /// Bytes read.
    pub bytes_read: u64,
    /// Files whose CID came from the cache without reading them.
    pub files_from_cache: u64,
    /// Files whose cache entry matched by size and time but whose content hashed to another
    /// CID (changed without changing its time).
    pub cache_mismatches: u64,
    /// Directories built (their blocks made and hashed).
    pub dirs_built: u64,
    /// Directories whose CID came from the cache: listed as when it was recorded, and their
    /// blocks not needed.
    pub dirs_from_cache: u64,
}

/// The root of a file or directory DAG as kept per file: a [`ShortCid`] and the cumulative
/// size (48 bytes instead of the 104 of an [`Added`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    /// Root CID.
    pub cid: ShortCid,
    /// Cumulative size.
    pub tsize: u64,
}

impl Root {
    /// The short form of `added`; an error names `what` when its CID has none (a CID this
    /// crate computes always has one).
    pub fn of(added: Added, what: &str) -> Result<Root, PublishError> {
        match ShortCid::of(&added.cid) {
            Some(cid) => Ok(Root {
                cid,
                tsize: added.tsize,
            }),
            None => Err(PublishError::Io {
                path: what.into(),
                source: io::Error::other(format!("{} is not a sha2-256 CID", added.cid)),
            }),
        }
    }

    /// The root as an [`Added`].
    pub fn added(&self) -> Added {
        Added {
            cid: self.cid.cid(),
            tsize: self.tsize,
        }
    }
}

/// The roots of the files hashed so far, by the fingerprint of their keys, in 58 bytes each:
/// a sorted list, and the newest (up to 65,536) in a hash map, merged into the list in place
/// when it fills (a hash map of every file would take two to three times as much). The list
/// is indexed by the first 16 bits of the fingerprints (uniform: a lookup searches a few
/// entries).
#[derive(Debug, Default)]
pub(super) struct RootMap {
    sorted: Vec<PackedRoot>,
    /// `index[p]`: the first entry of `sorted` whose fingerprint starts with `p` or more.
    index: Vec<u32>,
    recent: FingerprintMap<Root>,
}

/// One entry of a [`RootMap`]'s list (no padding: byte arrays only).
#[derive(Debug, Clone, Copy)]
struct PackedRoot {
    id: [u8; 16],
    cid: ShortCid,
    tsize: [u8; 8],
}

/// Entries of a [`RootMap`] kept in its hash map before they join the list.
const RECENT_ROOTS: usize = 64 * 1024;

impl RootMap {
    /// The root of the file whose key has the fingerprint `id`.
    pub(super) fn get(&self, id: &u128) -> Option<Root> {
        if let Some(root) = self.recent.get(id) {
            return Some(*root);
        }
        let prefix = (id >> 112) as usize;
        let (&lo, &hi) = (self.index.get(prefix)?, self.index.get(prefix + 1)?);
        let range = &self.sorted[lo as usize..hi as usize];
        // Compared as numbers: the big-endian bytes sort as the number does.
        range
            .binary_search_by(|p| u128::from_be_bytes(p.id).cmp(id))
            .ok()
            .map(|i| Root {
                cid: range[i].cid,
                tsize: u64::from_le_bytes(range[i].tsize),
            })
    }

    /// Records the root of the file whose key has the fingerprint `id`.
    pub(super) fn insert(&mut self, id: u128, root: Root) {
        self.recent.insert(id, root);
        if self.recent.len() >= RECENT_ROOTS {
            self.merge();
        }
    }

    /// Number of roots.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    /// Moves the hash map's entries into the list, merging from the back (no second list).
    fn merge(&mut self) {
        let mut new: Vec<PackedRoot> = self
            .recent
            .drain()
            .map(|(id, root)| PackedRoot {
                id: id.to_be_bytes(),
                cid: root.cid,
                tsize: root.tsize.to_le_bytes(),
            })
            .collect();
        new.sort_unstable_by_key(|p| p.id);
        let old = self.sorted.len();
        self.sorted.reserve_exact(new.len());
        let filler = new[0];
        self.sorted.resize(old + new.len(), filler);
        let (mut i, mut j, mut k) = (old, new.len(), old + new.len());
        while j > 0 {
            if i > 0 && self.sorted[i - 1].id > new[j - 1].id {
                self.sorted[k - 1] = self.sorted[i - 1];
                i -= 1;
            } else {
                self.sorted[k - 1] = new[j - 1];
                j -= 1;
            }
            k -= 1;
        }
        self.index.clear();
        self.index.reserve_exact((1 << 16) + 1);
        let mut at = 0;
        for prefix in 0..=(1u32 << 16) {
            while at < self.sorted.len()
                && u32::from(u16::from_be_bytes([
                    self.sorted[at].id[0],
                    self.sorted[at].id[1],
                ])) < prefix
            {
                at += 1;
            }
            self.index.push(at as u32);
        }
    }
}

/// The digest of the listing a directory is built from: its entries' names, CIDs and
/// cumulative sizes, in the order given (name order); see [`FileCache::dir_listed`].
pub(super) fn listing_digest(entries: &[(String, Root)]) -> Sha256Hash {
    let mut hasher = Sha256::new();
    for (name, root) in entries {
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name.as_bytes());
        hasher.update(root.cid.as_bytes());
        hasher.update(root.tsize.to_le_bytes());
    }
    Sha256Hash(hasher.finalize().into())
}

/// Reads through to a progress phase.
struct Counting<'a, R> {
    inner: R,
    phase: &'a Phase,
    count: u64,
}

impl<R: Read> Read for Counting<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        self.phase.inc(n as u64);
        Ok(n)
    }
}

/// Whether the node behind `router` needs the blocks of the DAG under `cid`: it lacks that DAG,
/// or every block is sent again (repair). False without a node.
fn node_needs(router: &Router, opts: BuildOptions, cid: &Cid) -> bool {
    router.node_method().is_some() && (opts.read_all || !router.node_has_dag(cid))
}

/// Whether the node behind `router` needs the blocks of a file whose cache entry is `cached`:
/// as [`node_needs`], where the entry's mark also tells that the node holds the DAG.
fn node_needs_file(router: &Router, opts: BuildOptions, cached: &Cached) -> bool {
    if cached.on_node && router.node_marks_hold() && !opts.read_all {
        return false;
    }
    node_needs(router, opts, &cached.entry.root.cid)
}

/// The failure of `router` if it failed (the cause of `error`), else `error`.
fn first_cause(router: &Router, error: PublishError) -> PublishError {
    router
        .take_failure()
        .map(PublishError::from)
        .unwrap_or(error)
}

struct Plan {
    cached: Option<Cached>,
    /// The NAR whose CID the file's published bytes hold (a narinfo's).
    dep: Option<Dependency>,
    read: bool,
}

/// What hashing a source gave: its cache entry, whether its DAG is known on the node, and its
/// entry in the cache being replaced.
pub(super) struct Hashed {
    pub(super) entry: FileEntry,
    pub(super) on_node: bool,
    pub(super) was: Option<Cached>,
}

/// Hashes files and builds directories for one walk of the mirror.
pub(super) struct Hasher<'a> {
    pub(super) mirror: &'a std::path::Path,
    pub(super) cache: &'a FileCache,
    pub(super) router: &'a Router,
    pub(super) opts: BuildOptions,
    pub(super) pool: std::sync::Arc<rayon::ThreadPool>,
    pub(super) phase: Phase,
    pub(super) stats: Mutex<HashStats>,
    /// The roots of the directories whose blocks were delivered.
    pub(super) dirs_delivered: Mutex<std::collections::HashSet<ShortCid>>,
}

/// One batch being hashed.
struct Batch<'a, 'b> {
    h: &'b Hasher<'a>,
    sources: &'b [Source],
    done: &'b RootMap,
    /// Per source: its root, and whether it was read.
    results: Vec<OnceLock<(Added, bool)>>,
}

impl Batch<'_, '_> {
    /// The NAR whose CID source `i`'s published bytes hold, once that NAR is hashed.
    fn dependency(&self, i: usize) -> Option<Dependency> {
        match &self.sources[i].kind {
            SourceKind::Narinfo { nar_key, nar, .. } => self.done.get(nar).map(|r| Dependency {
                key: nar_key.clone(),
                cid: r.cid.cid(),
            }),
            SourceKind::Plain => None,
        }
    }

    /// What to do with source `i`, whose lookup in the cache the walk gave as `lookup`.
    fn plan(&self, i: usize, lookup: Lookup) -> Plan {
        let source = &self.sources[i];
        let opts = self.h.opts;
        let dep = self.dependency(i);
        let cached = match lookup {
            Lookup::Hit(cached) => Some(*cached),
            Lookup::Miss => None,
            Lookup::NotDone => self
                .h
                .cache
                .file(&source.key, &source.stamp, opts.layout.add),
        }
        .filter(|c| c.entry.dep == dep);
        let read = match &cached {
            None => true,
            Some(cached) => self.h.must_read(cached),
        };
        Plan { cached, dep, read }
    }

    fn hash(&self, i: usize, plan: &Plan) -> Result<Added, PublishError> {
        let h = self.h;
        let source = &self.sources[i];
        let path = source.path(h.mirror);
        // Blocks go to the node unless it holds the file's whole DAG already.
        let to_node = match &plan.cached {
            None => true,
            Some(c) => node_needs_file(h.router, h.opts, c),
        };
        let by_add = to_node && h.router.node_method() == Some(NodeMethod::Add);
        let blocks_to_node = to_node && !by_add;
        let mut sink = |cid: &Cid, block: &[u8]| h.router.put(cid, block, blocks_to_node);
        let hasher = h.opts.layout.file_hasher();
        let hash_err = |error: ImportError| PublishError::Hash {
            path: path.clone(),
            source: error,
        };
        let name;
        let published;
        let (file, read, add_source) = match &plan.dep {
            None => {
                let file = fs::File::open(&path).map_err(io_error(&path))?;
                let mut reader = Counting {
                    inner: file,
                    phase: &h.phase,
                    count: 0,
                };
                let file = hasher.add(&mut reader, &mut sink).map_err(hash_err)?;
                (file, reader.count, AddSource::Path(&path))
            }
            Some(nar) => {
                let from_disk;
                let bytes: &[u8] = match &source.kind {
                    SourceKind::Narinfo {
                        text: Some(text), ..
                    } => text,
                    _ => {
                        from_disk = fs::read(&path).map_err(io_error(&path))?;
                        &from_disk
                    }
                };
                h.phase.inc(bytes.len() as u64);
                let text = std::str::from_utf8(bytes).map_err(|_| PublishError::Io {
                    path: path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "narinfo is not UTF-8"),
                })?;
                let info = NarInfo::parse(text).map_err(|e| PublishError::Narinfo {
                    path: path.clone(),
                    source: e,
                })?;
                published = info.with_extra_field(IPFS_HASH_FIELD, &nar.cid.to_string());
                let file = hasher
                    .add(published.as_bytes(), &mut sink)
                    .map_err(hash_err)?;
                name = path.file_name().map(|n| n.to_string_lossy());
                let name = name.as_deref().unwrap_or("narinfo");
                let bytes = AddSource::Bytes(name, published.as_bytes());
                (file, text.len() as u64, bytes)
            }
        };
        if by_add {
            h.router
                .add(add_source, &file.cid, &h.opts.layout)
                .map_err(|e| hash_err(ImportError::Sink(e)))?;
        }
        let added = Added::from(file);
        let mut stats = h.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.files_read += 1;
        stats.bytes_read += read;
        if plan.cached.as_ref().is_some_and(|c| c.entry.root != added) {
            stats.cache_mismatches += 1;
            tracing::warn!(
                "{}: its content changed without a change of size or time; hashed again",
                path.display()
            );
        }
        Ok(added)
    }

    fn process(&self, i: usize, plan: &Plan) -> Result<(), PublishError> {
        let (added, fresh) = match (plan.read, &plan.cached) {
            (false, Some(cached)) => {
                self.h
                    .stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .files_from_cache += 1;
                (cached.entry.root, false)
            }
            _ => (self.hash(i, plan)?, true),
        };
        let _ = self.results[i].set((added, fresh));
        Ok(())
    }

    /// Processes `items` on the pool, each item a task of its own so that idle threads take
    /// over the rest while one reads a large file. The first failure stops the others from
    /// starting new items; a failure of the router is the one returned, being the cause.
    fn wave(&self, items: &[usize], lookups: &mut [Lookup]) -> Result<Vec<Plan>, PublishError> {
        let plans: Vec<Plan> = items
            .iter()
            .map(|&i| self.plan(i, std::mem::replace(&mut lookups[i], Lookup::NotDone)))
            .collect();
        let total: u64 = items
            .iter()
            .zip(&plans)
            .filter(|(_, p)| p.read)
            .map(|(&i, _)| self.sources[i].stamp.size)
            .sum();
        self.h.phase.inc_total(total);
        if plans.iter().all(|p| !p.read) {
            // Nothing to read (a rerun): no work for the pool.
            for (&i, plan) in items.iter().zip(&plans) {
                self.process(i, plan)?;
            }
            return Ok(plans);
        }
        self.h
            .pool
            .install(|| {
                items
                    .par_iter()
                    .zip(&plans)
                    .with_max_len(1)
                    .try_for_each(|(&i, plan)| self.process(i, plan))
            })
            .map_err(|e| first_cause(self.h.router, e))?;
        Ok(plans)
    }
}

impl Hasher<'_> {
    /// Whether a file whose cache entry `cached` still describes it is read all the same:
    /// every file is (`read_all`), its blocks go to a CAR file, or the node needs them.
    pub(super) fn must_read(&self, cached: &Cached) -> bool {
        self.opts.read_all
            || self.router.writes_car()
            || node_needs_file(self.router, self.opts, cached)
    }

    /// Whether the directory whose recorded root is `cid` is built all the same: everything
    /// is read (`read_all`), its blocks go to a CAR file, or the node needs them.
    pub(super) fn must_build(&self, cid: &Cid) -> bool {
        self.opts.read_all || self.router.writes_car() || node_needs(self.router, self.opts, cid)
    }

    /// Counts a directory taken from the cache.
    pub(super) fn count_dir_from_cache(&self) {
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dirs_from_cache += 1;
    }

    /// Counts `n` files the walk took from the cache itself (see [`Hasher::must_read`]).
    pub(super) fn count_from_cache(&self, n: u64) {
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.files += n;
        stats.files_from_cache += n;
    }

    /// Hashes `sources` (sorted by key, each new), the plain files first and then the
    /// narinfos, whose NARs are then in `done`; adds each root to `done` and returns each
    /// source's cache entry.
    pub(super) fn hash_batch(
        &self,
        sources: &mut [Source],
        done: &mut RootMap,
    ) -> Result<Vec<Hashed>, PublishError> {
        // What the walk found in the cache is taken, not copied.
        let mut lookups: Vec<Lookup> = sources
            .iter_mut()
            .map(|s| std::mem::replace(&mut s.cached, Lookup::NotDone))
            .collect();
        let sources = &*sources;
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).files += sources.len() as u64;
        let (plain, narinfos): (Vec<usize>, Vec<usize>) =
            (0..sources.len()).partition(|&i| sources[i].kind == SourceKind::Plain);
        let mut plans: Vec<Option<Plan>> = (0..sources.len()).map(|_| None).collect();
        let mut results: Vec<Option<(Added, bool)>> = vec![None; sources.len()];
        for items in [plain, narinfos] {
            if items.is_empty() {
                continue;
            }
            let batch = Batch {
                h: self,
                sources,
                done: &*done,
                results: (0..sources.len()).map(|_| OnceLock::new()).collect(),
            };
            let wave_plans = batch.wave(&items, &mut lookups)?;
            for (&i, plan) in items.iter().zip(wave_plans) {
                plans[i] = Some(plan);
            }
            for (i, slot) in batch.results.into_iter().enumerate() {
                if let Some(result) = slot.into_inner() {
                    results[i] = Some(result);
                }
            }
            for &i in &items {
                let Some((added, _)) = results[i] else {
                    return Err(PublishError::Io {
                        path: sources[i].path(self.mirror),
                        source: io::Error::other("the file was not hashed"),
                    });
                };
                done.insert(sources[i].id, Root::of(added, &sources[i].key)?);
            }
        }
        let mut out = Vec::with_capacity(sources.len());
        for (i, source) in sources.iter().enumerate() {
            let (added, _) = results[i].expect("every source was hashed");
            let plan = plans[i].take().expect("every source was planned");
            let dep = plan.dep;
            // A mark of the cache stays while the CID does; a new CID is not known there.
            let was = plan.cached;
            let on_node = was
                .as_ref()
                .is_some_and(|c| c.on_node && c.entry.root == added);
            out.push(Hashed {
                entry: FileEntry {
                    stamp: source.stamp,
                    options: self.opts.layout.add,
                    root: added,
                    dep,
                },
                on_node,
                was,
            });
        }
        Ok(out)
    }

    /// Builds the directory published at `key` from its entries (names and roots, in any
    /// order; in name order they cost least) and gives its blocks to the router.
    pub(super) fn directory(
        &self,
        key: &str,
        entries: Vec<(String, Root)>,
    ) -> Result<Added, PublishError> {
        let dir_err = |source| PublishError::Directory {
            key: key.to_string(),
            source,
        };
        self.stats
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dirs_built += 1;
        let mut b = self.opts.layout.directory();
        b.reserve(entries.len());
        for (name, root) in entries {
            b.insert(name, root.cid.cid(), root.tsize)
                .map_err(dir_err)?;
        }
        let sink_err = |e| first_cause(self.router, dir_err(DirectoryError::Sink(e)));
        // The blocks wait for the root: a directory built before (a release's view the same
        // as the global cache, a channel) is not delivered again, and whether the node needs
        // them depends on the root.
        let mut blocks = Vec::new();
        // A large directory's shards are built on the pool.
        let root = self
            .pool
            .install(|| {
                b.build_parallel(&mut |cid: &Cid, block: &[u8]| {
                    blocks.push((*cid, block.to_vec()));
                    Ok(())
                })
            })
            .map_err(dir_err)?;
        drop(b);
        let new = ShortCid::of(&root.cid).map_or(true, |short| {
            self.dirs_delivered
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(short)
        });
        if !new {
            return Ok(root);
        }
        let to_node = node_needs(self.router, self.opts, &root.cid);
        for (cid, block) in &blocks {
            self.router.put(cid, block, to_node).map_err(sink_err)?;
        }
        Ok(root)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_map_finds_every_root_across_merges() {
        let root = |i: u64| Root {
            cid: ShortCid::of(&Cid::sha2_256(1, crate::ipfs::cid::RAW, &i.to_le_bytes()).unwrap())
                .unwrap(),
            tsize: i,
        };
        let id = |i: u64| crate::hash::fingerprint128(&i.to_le_bytes());
        let mut map = RootMap::default();
        let n = 3 * RECENT_ROOTS as u64 + 123;
        for i in 0..n {
            map.insert(id(i), root(i));
        }
        assert_eq!(map.len() as u64, n);
        assert_eq!(map.sorted.len(), 3 * RECENT_ROOTS);
        assert!(map.sorted.windows(2).all(|w| w[0].id < w[1].id));
        for i in 0..n {
            assert_eq!(map.get(&id(i)), Some(root(i)), "{i}");
        }
        assert_eq!(map.get(&id(n)), None);
    }
}
