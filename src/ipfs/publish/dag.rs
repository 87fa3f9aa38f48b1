//! The DAG of the mirror: every source of a [`MirrorTree`] hashed into its UnixFS DAG on a
//! pool of threads (narinfos after the NARs their published bytes name), then its directories
//! built bottom up, each block handed to a [`Router`] on its way to the CAR file and the node.
//! A source whose cache entry still matches is not read unless its blocks are needed.

use std::fs;
use std::io::{self, Read};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

use rayon::prelude::*;

use super::scan::{Entry, MirrorTree, Source, SourceKind};
use super::{io_error, PublishError, IPFS_HASH_FIELD};
use crate::ipfs::cid::{Cid, CidSet};
use crate::ipfs::directory::DirectoryError;
use crate::ipfs::file_cache::{Dependency, FileCache, FileEntry};
use crate::ipfs::profile::Layout;
use crate::ipfs::unixfs::{AddOptions, Added, ImportError};
use crate::ipfs::upload::{AddSource, NodeMethod, Router};
use crate::narinfo::NarInfo;
use crate::progress::{Phase, Unit};

/// How [`build`] works.
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
}

/// The DAG of a [`MirrorTree`].
#[derive(Debug, Clone)]
pub struct Built {
    /// Per source: its published DAG.
    pub files: Vec<Added>,
    /// Per directory: its DAG.
    pub dirs: Vec<Added>,
    /// The root.
    pub root: Added,
    /// Per source: whether it was read, so that its cache entry is new (see [`update_cache`]).
    pub fresh: Vec<bool>,
    /// The options the files were hashed with.
    pub options: AddOptions,
    /// The directories taken as they are ([`MirrorTree::fixed`]).
    pub fixed: Vec<Added>,
    /// What was done.
    pub stats: HashStats,
}

impl Built {
    /// The CID and size of an entry.
    pub fn entry(&self, entry: Entry) -> Added {
        match entry {
            Entry::File(i) => self.files[i],
            Entry::Dir(i) => self.dirs[i],
            Entry::Fixed(i) => self.fixed[i],
        }
    }

    /// Every CID of a file or directory root in the tree (what the node holds entirely once
    /// the root is pinned).
    pub fn all_cids(&self, tree: &MirrorTree) -> CidSet {
        let mut cids: CidSet = self.files.iter().map(|a| a.cid).collect();
        cids.extend(self.dirs.iter().map(|a| a.cid));
        for release in &tree.releases {
            cids.insert(self.entry(release.entry).cid);
        }
        cids
    }

    /// Every published path below the root with its CID, in tree order (`is_dir` marks
    /// directories). Directories taken by CID are listed, not their insides.
    pub fn paths(&self, tree: &MirrorTree) -> Vec<(String, Cid, bool)> {
        let mut out = Vec::new();
        self.visit(tree, &mut |path, cid, is_dir| {
            out.push((path.to_string(), *cid, is_dir))
        });
        out
    }

    /// Calls `f` with every published path below the root, its CID and whether it is a
    /// directory, in the order of [`Built::paths`], without listing them in memory.
    pub fn visit(&self, tree: &MirrorTree, f: &mut dyn FnMut(&str, &Cid, bool)) {
        if let Some(root) = tree.dirs.len().checked_sub(1) {
            let mut path = String::new();
            self.walk(tree, root, &mut path, f);
        }
    }

    fn walk(
        &self,
        tree: &MirrorTree,
        dir: usize,
        path: &mut String,
        f: &mut dyn FnMut(&str, &Cid, bool),
    ) {
        let prefix = path.len();
        for (name, entry) in &tree.dirs[dir].entries {
            path.truncate(prefix);
            if prefix > 0 {
                path.push('/');
            }
            path.push_str(name);
            match *entry {
                Entry::File(i) => f(path, &self.files[i].cid, false),
                Entry::Fixed(k) => f(path, &self.fixed[k].cid, true),
                Entry::Dir(j) => {
                    f(path, &self.dirs[j].cid, true);
                    self.walk(tree, j, path, f);
                }
            }
        }
        path.truncate(prefix);
    }
}

/// The root of `entry`, given the roots of the files, of the directories built so far and of
/// the directories taken as they are.
fn entry_root(entry: Entry, files: &[Added], dirs: &[Added], fixed: &[Added]) -> Added {
    match entry {
        Entry::File(i) => files[i],
        Entry::Dir(j) => dirs[j],
        Entry::Fixed(k) => fixed[k],
    }
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

/// The failure of `router` if it failed (the cause of `error`), else `error`.
fn first_cause(router: &Router, error: PublishError) -> PublishError {
    router
        .take_failure()
        .map(PublishError::from)
        .unwrap_or(error)
}

struct Plan {
    cached: Option<Added>,
    read: bool,
}

struct Builder<'a> {
    tree: &'a MirrorTree,
    cache: &'a FileCache,
    router: &'a Router,
    opts: BuildOptions,
    phase: Phase,
    /// Per source: its root, and whether it was read.
    results: Vec<OnceLock<(Added, bool)>>,
    stats: Mutex<HashStats>,
}

impl Builder<'_> {
    /// See [`node_needs`].
    fn node_needs(&self, cid: &Cid) -> bool {
        node_needs(self.router, self.opts, cid)
    }

    /// The NAR whose CID source `i`'s published bytes hold, once that NAR is hashed.
    fn dependency(&self, i: usize) -> Option<Dependency> {
        match self.tree.sources[i].kind {
            SourceKind::Narinfo { nar } => self.results[nar].get().map(|r| Dependency {
                key: self.tree.sources[nar].key.clone(),
                cid: r.0.cid,
            }),
            SourceKind::Plain => None,
        }
    }

    fn plan(&self, i: usize) -> Plan {
        let source = &self.tree.sources[i];
        let cached = self
            .cache
            .file(&source.key, &source.stamp, self.opts.layout.add)
            .filter(|e| e.dep == self.dependency(i))
            .map(|e| e.root);
        let read = match cached {
            None => true,
            Some(added) => {
                self.opts.read_all || self.router.writes_car() || self.node_needs(&added.cid)
            }
        };
        Plan { cached, read }
    }

    fn hash(&self, i: usize, plan: &Plan) -> Result<Added, PublishError> {
        let source = &self.tree.sources[i];
        let path = source.path(&self.tree.mirror);
        // Blocks go to the node unless it holds the file's whole DAG already.
        let to_node = match plan.cached {
            None => true,
            Some(c) => self.node_needs(&c.cid),
        };
        let by_add = to_node && self.router.node_method() == Some(NodeMethod::Add);
        let blocks_to_node = to_node && !by_add;
        let mut sink = |cid: &Cid, block: &[u8]| self.router.put(cid, block, blocks_to_node);
        let hasher = self.opts.layout.file_hasher();
        let hash_err = |error: ImportError| PublishError::Hash {
            path: path.clone(),
            source: error,
        };
        let name;
        let published;
        let (file, read, add_source) = match self.dependency(i) {
            None => {
                let file = fs::File::open(&path).map_err(io_error(&path))?;
                let mut reader = Counting {
                    inner: file,
                    phase: &self.phase,
                    count: 0,
                };
                let file = hasher.add(&mut reader, &mut sink).map_err(hash_err)?;
                (file, reader.count, AddSource::Path(&path))
            }
            Some(nar) => {
                let text = fs::read(&path).map_err(io_error(&path))?;
                self.phase.inc(text.len() as u64);
                let text = String::from_utf8(text).map_err(|_| PublishError::Io {
                    path: path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "narinfo is not UTF-8"),
                })?;
                let info = NarInfo::parse(&text).map_err(|e| PublishError::Narinfo {
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
            self.router
                .add(add_source, &file.cid, &self.opts.layout)
                .map_err(|e| hash_err(ImportError::Sink(e)))?;
        }
        let added = Added::from(file);
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.files_read += 1;
        stats.bytes_read += read;
        if plan.cached.is_some_and(|c| c != added) {
            stats.cache_mismatches += 1;
            tracing::warn!(
                "{}: its content changed without a change of size or time; hashed again",
                path.display()
            );
        }
        Ok(added)
    }

    fn process(&self, i: usize, plan: &Plan) -> Result<(), PublishError> {
        let (added, fresh) = match (plan.read, plan.cached) {
            (false, Some(cached)) => {
                self.stats
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .files_from_cache += 1;
                (cached, false)
            }
            _ => (self.hash(i, plan)?, true),
        };
        let _ = self.results[i].set((added, fresh));
        Ok(())
    }

    /// Processes `items` on `pool`, each item a task of its own so that idle threads take
    /// over the rest while one reads a large file. The first failure stops the others from
    /// starting new items; a failure of the router is the one returned, being the cause.
    fn wave(&self, pool: &rayon::ThreadPool, items: &[usize]) -> Result<(), PublishError> {
        let plans: Vec<Plan> = items.iter().map(|&i| self.plan(i)).collect();
        let total: u64 = items
            .iter()
            .zip(&plans)
            .filter(|(_, p)| p.read)
            .map(|(&i, _)| self.tree.sources[i].stamp.size)
            .sum();
        self.phase.inc_total(total);
        pool.install(|| {
            items
                .par_iter()
                .zip(&plans)
                .with_max_len(1)
                .try_for_each(|(&i, plan)| self.process(i, plan))
        })
        .map_err(|e| first_cause(self.router, e))
    }
}

/// Hashes every file of `tree` and builds its directories, giving every block to `router`
/// (see the module documentation). Files are hashed on a pool of `concurrency` threads (at
/// most 64) while the calling thread waits: call it from a blocking context.
pub fn build(
    tree: &MirrorTree,
    cache: &FileCache,
    router: &Router,
    opts: BuildOptions,
) -> Result<Built, PublishError> {
    let threads = opts.concurrency.clamp(1, 64).min(tree.sources.len().max(1));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("nixipfs-hash-{i}"))
        .build()
        .map_err(PublishError::Threads)?;
    let builder = Builder {
        tree,
        cache,
        router,
        opts,
        phase: Phase::new("Hashing files", Unit::Bytes, 0),
        results: (0..tree.sources.len()).map(|_| OnceLock::new()).collect(),
        stats: Mutex::new(HashStats {
            files: tree.sources.len() as u64,
            ..HashStats::default()
        }),
    };
    let (plain, narinfos): (Vec<usize>, Vec<usize>) =
        (0..tree.sources.len()).partition(|&i| tree.sources[i].kind == SourceKind::Plain);
    builder.wave(&pool, &plain)?;
    builder.wave(&pool, &narinfos)?;
    builder.phase.finish();

    let mut files = Vec::with_capacity(tree.sources.len());
    let mut fresh = Vec::with_capacity(tree.sources.len());
    for (i, slot) in builder.results.into_iter().enumerate() {
        let Some((added, read)) = slot.into_inner() else {
            return Err(PublishError::Io {
                path: tree.sources[i].path(&tree.mirror),
                source: io::Error::other("the file was not hashed"),
            });
        };
        files.push(added);
        fresh.push(read);
    }

    let mut dirs: Vec<Added> = Vec::with_capacity(tree.dirs.len());
    for dir in &tree.dirs {
        let dir_err = |source| PublishError::Directory {
            key: dir.key.clone(),
            source,
        };
        let mut b = opts.layout.directory();
        for (name, entry) in &dir.entries {
            let added = entry_root(*entry, &files, &dirs, &tree.fixed);
            b.add(name, added.cid, added.tsize).map_err(dir_err)?;
        }
        let mut blocks = Vec::new();
        let root = b
            .build(&mut |cid: &Cid, block: &[u8]| {
                blocks.push((*cid, block.to_vec()));
                Ok(())
            })
            .map_err(dir_err)?;
        let to_node = node_needs(router, opts, &root.cid);
        for (cid, block) in &blocks {
            router
                .put(cid, block, to_node)
                .map_err(|e| first_cause(router, dir_err(DirectoryError::Sink(e))))?;
        }
        dirs.push(root);
    }
    let root = *dirs.last().ok_or_else(|| PublishError::Io {
        path: tree.mirror.clone(),
        source: io::Error::other("the tree has no root directory"),
    })?;
    let stats = builder
        .stats
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    Ok(Built {
        files,
        dirs,
        root,
        fresh,
        options: opts.layout.add,
        fixed: tree.fixed.clone(),
        stats,
    })
}

/// Records what was built in the cache: the entries of the files read, every directory, and
/// nothing that is no longer in the tree.
pub fn update_cache(cache: &mut FileCache, tree: &MirrorTree, built: &Built) {
    let entry = |(i, source): (usize, &Source)| {
        let dep = match source.kind {
            SourceKind::Narinfo { nar } => Some(Dependency {
                key: tree.sources[nar].key.clone(),
                cid: built.files[nar].cid,
            }),
            SourceKind::Plain => None,
        };
        let entry = FileEntry {
            stamp: source.stamp,
            options: built.options,
            root: built.files[i],
            dep,
        };
        (source.key.clone(), entry)
    };
    let new_keys = tree
        .sources
        .iter()
        .enumerate()
        .filter(|&(i, source)| built.fresh[i] && !cache.has_file(&source.key))
        .count();
    cache.reserve_files(new_keys);
    cache.insert_files(
        tree.sources
            .iter()
            .enumerate()
            .filter(|&(i, _)| built.fresh[i])
            .map(entry),
    );
    for (dir, added) in tree.dirs.iter().zip(&built.dirs) {
        cache.insert_dir(dir.key.clone(), *added);
    }
    let keys = tree.keys();
    cache.retain(|k| {
        keys.contains(k)
            || tree.fixed_releases.iter().any(|r| {
                k.strip_prefix(r.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    });
}

/// Releases and their CIDs, for the `ipfs_hash` files and the report.
pub fn release_cids(tree: &MirrorTree, built: &Built) -> Vec<(String, PathBuf, Cid)> {
    tree.releases
        .iter()
        .map(|r| (r.key.clone(), r.path.clone(), built.entry(r.entry).cid))
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::ipfs::car::CarReader;
    use crate::ipfs::dagpb::PbNode;
    use crate::ipfs::profile::Profile;
    use crate::ipfs::publish::fixtures::{build_to_car, small_mirror, trust_none};
    use crate::ipfs::publish::ScanOptions;
    use crate::ipfs::unixfs::{AddOptions, FileHasher};

    #[test]
    fn built_dag_matches_the_files_and_the_car_holds_it_all() {
        let dir = tempfile::tempdir().unwrap();
        small_mirror(dir.path());
        let out = tempfile::tempdir().unwrap();
        let car_path = out.path().join("mirror.car");
        let (tree, built, stats) = build_to_car(dir.path(), &FileCache::new(), &car_path);
        assert_eq!(built.stats.files_read, 9);
        assert_eq!(built.stats.files_from_cache, 0);

        let bytes = fs::read(&car_path).unwrap();
        let mut reader = CarReader::new(&bytes[..]).unwrap();
        assert_eq!(reader.roots(), &[built.root.cid]);
        let mut blocks = HashMap::new();
        while let Some((cid, block)) = reader.next_block().unwrap() {
            assert!(blocks.insert(cid, block).is_none(), "{cid} written twice");
        }
        assert_eq!(blocks.len() as u64, stats.car_file_blocks);

        // Every file's CID is what FileHasher gives for its published bytes.
        let hash = |data: &[u8]| {
            FileHasher::new(AddOptions::V0_RAW_LEAVES)
                .add(data, &mut |_: &Cid, _: &[u8]| Ok(()))
                .unwrap()
                .cid
        };
        let paths = built.paths(&tree);
        let find = |p: &str| paths.iter().find(|(q, _, _)| q == p).unwrap().1;
        let nar_a = find("binary_cache/nar/a.nar.xz");
        assert_eq!(nar_a, hash(&vec![7u8; 300_000]));
        assert_eq!(nar_a.version(), 0, "a two-chunk file has a dag-pb root");
        let narinfo_cid = find("binary_cache/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo");
        let on_disk = fs::read_to_string(
            dir.path()
                .join("binary_cache/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo"),
        )
        .unwrap();
        let published = format!("{on_disk}IPFSHash: {nar_a}\n");
        assert_eq!(narinfo_cid, hash(published.as_bytes()));
        // The single-chunk narinfo is one raw block holding exactly the published bytes.
        assert_eq!(blocks[&narinfo_cid], published.as_bytes());
        // The release's view and the channel share the global entries.
        let rel = "releases/nixos-24.05/nixos-24.05.1.abc";
        assert_eq!(
            find(&format!(
                "{rel}/binary_cache/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo"
            )),
            narinfo_cid
        );
        assert_eq!(find(&format!("{rel}/binary_cache/nar/a.nar.xz")), nar_a);
        assert_eq!(find("channels/nixos-24.05"), find(rel));
        assert!(paths.iter().all(|(p, _, _)| !p.ends_with("lastsync")
            && !p.contains("tmp")
            && !p.ends_with(".def")));

        // Directory blocks list their entries in name order with cumulative sizes.
        let root = PbNode::decode(&blocks[&built.root.cid]).unwrap();
        let names: Vec<&str> = root.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["binary_cache", "channels", "releases"]);
        assert_eq!(release_cids(&tree, &built)[0].2, find(rel));
    }

    #[test]
    fn the_cache_spares_reading_and_gives_the_same_dag() {
        let dir = tempfile::tempdir().unwrap();
        small_mirror(dir.path());
        let out = tempfile::tempdir().unwrap();
        let router = Router::new(None, 0, None).unwrap();
        let cache = FileCache::new();
        let opts = ScanOptions {
            layout: Profile::LegacyRawV0.layout(),
            cache: &cache,
            trust_release: &trust_none,
        };
        let build_opts = BuildOptions {
            layout: Profile::LegacyRawV0.layout(),
            concurrency: 2,
            read_all: false,
        };
        let tree = MirrorTree::scan(dir.path(), &opts).unwrap();
        let first = build(&tree, &cache, &router, build_opts).unwrap();
        let mut cache = FileCache::new();
        update_cache(&mut cache, &tree, &first);
        let path = out.path().join("ipfs_hashes");
        cache.save(&path).unwrap();
        let legacy = Profile::LegacyRawV0.layout().descriptor();
        let (cache, _) = FileCache::load(&path, &legacy).unwrap();

        let opts = ScanOptions {
            cache: &cache,
            ..opts
        };
        let tree = MirrorTree::scan(dir.path(), &opts).unwrap();
        let second = build(&tree, &cache, &router, build_opts).unwrap();
        assert_eq!(second.root, first.root);
        assert_eq!(second.stats.files_read, 0);
        assert_eq!(second.stats.files_from_cache, 9);

        // A NAR that changes changes its narinfo's published bytes too.
        let nar = dir.path().join("binary_cache/nar/b.nar.xz");
        fs::write(&nar, b"nar b, rebuilt").unwrap();
        let tree = MirrorTree::scan(dir.path(), &opts).unwrap();
        let third = build(&tree, &cache, &router, build_opts).unwrap();
        assert_eq!(third.stats.files_read, 2, "the NAR and its narinfo");
        assert_ne!(third.root, first.root);
    }
}
