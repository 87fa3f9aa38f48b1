//! Publishing the mirror to IPFS: what is published where, and how its DAG is built from the
//! files on disk, with CIDs computed here exactly as kubo's `ipfs add` would compute them.
//!
//! # What is published
//!
//! One directory, the root, copied into the node's MFS as `/nixfs_<unixtime>`:
//! ```text
//! binary_cache/                the global binary cache (D/binary_cache):
//!     nix-cache-info
//!     HASH.narinfo             each narinfo whose NAR is present, as served upstream with one
//!                              line added at the end: `IPFSHash: <CID of its NAR>` (the file
//!                              on disk stays as it is)
//!     nar/FILE                 every file of D/binary_cache/nar
//! releases/CHANNEL/NIXNAME/    each complete release (one that has its git-revision file):
//!     FILE                     every regular file of the release directory except ipfs_hash:
//!                              src-url, binary-cache-url, git-revision, store-paths,
//!                              store-paths.xz, nixexprs.tar.xz, *.iso, *.iso.sha256, *.ova,
//!                              and missing-store-paths and build-info.json where present
//!     binary_cache/            the release's view of the binary cache: nix-cache-info and the
//!         nix-cache-info       narinfos and NARs that its symlink farm links to, each with the
//!         HASH.narinfo         same published bytes (so the same CIDs, and no extra block) as
//!         nar/FILE             in the global binary_cache/
//! channels/CHANNEL/            the release that D/channels/CHANNEL points at: the same
//!                              directory (same CID) as releases/CHANNEL/NIXNAME/
//! ```
//! Not published: the `lastsync` stamps, `ipfs_hash`, `ipfs_hashes`, `ipfs_root`, hidden,
//! lock and temporary files (names starting with `.`), releases still being written (no
//! `git-revision`), narinfos whose NAR is missing or that do not parse (both warned about), and
//! links that lead nowhere (warned about).
//!
//! # How the DAG is built
//!
//! Every file is a source, keyed by its real path relative to the mirror (links resolved),
//! so the NAR a release's view links to and the NAR of the global cache are one source,
//! hashed once. Files are hashed with [`FileHasher`] (256 KiB chunks, balanced layout, raw
//! leaves, dag-pb nodes of the chosen CID version) on several threads; narinfos after the
//! NARs, since their published bytes hold their NAR's CID. Directories are then built bottom
//! up with kubo's link order, sizes and HAMT sharding ([`DirectoryBuilder`]). A file whose
//! [`FileCache`] entry still matches is not read, unless its blocks are needed (for a CAR
//! file, or because the node lacks them). Every block goes to a [`Router`], which writes it
//! to the CAR file and sends it to the node as needed.
//!
//! A release whose `ipfs_hash` file names a CID that the cache knows (with its size) and that
//! the node is known to hold entirely is not looked at again: that CID is used as it is.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use super::cid::Cid;
use super::client::{IpfsClient, IpfsError};
use super::directory::{DirectoryBuilder, DirectoryError};
use super::file_cache::{Dependency, FileCache, FileEntry, FileStamp};
use super::unixfs::{AddOptions, Added, FileHasher, ImportError};
use super::upload::{AddSource, NodeMethod, Router, SendStats, UploadError};
use crate::narinfo::{NarInfo, NarInfoError};
use crate::progress::{Phase, Unit};

/// The name of the file in a release directory that holds the release's CID once published.
pub const IPFS_HASH_FILE: &str = "ipfs_hash";
/// The name of the file in the mirror directory that holds the last published root CID.
pub const IPFS_ROOT_FILE: &str = "ipfs_root";
/// The narinfo field that names the CID of the NAR.
pub const IPFS_HASH_FIELD: &str = "IPFSHash";

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A file or directory of the mirror could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Hashing a file failed.
    #[error("hashing {path}: {source}")]
    Hash {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: ImportError,
    },
    /// A narinfo that parsed when the mirror was scanned no longer does.
    #[error("narinfo {path}: {source}")]
    Narinfo {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: NarInfoError,
    },
    /// A directory node could not be built.
    #[error("building directory {key:?}: {source}")]
    Directory {
        /// The published path of the directory.
        key: String,
        /// The error.
        #[source]
        source: DirectoryError,
    },
    /// Delivering blocks failed.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// A call to the node failed.
    #[error(transparent)]
    Node(#[from] IpfsError),
    /// The node holds another CID at a published path than the one computed here.
    #[error("verification failed: the node has {got} at {path}, but {expected} was computed here")]
    Verification {
        /// The MFS path.
        path: String,
        /// The CID computed here.
        expected: String,
        /// The CID the node answered.
        got: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A source file ([`MirrorTree::sources`] index).
    File(usize),
    /// A directory ([`MirrorTree::dirs`] index).
    Dir(usize),
    /// A directory taken as it is, by CID (a release with a trusted `ipfs_hash`).
    Fixed(Added),
}

/// How a source's published bytes are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// The file as it is.
    Plain,
    /// A narinfo, with an `IPFSHash` line naming the CID of the NAR source `nar`.
    Narinfo {
        /// The NAR's source index.
        nar: usize,
    },
}

/// One file to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its real path relative to the mirror (or absolute, when a link leads out of it).
    pub key: String,
    /// Its real path.
    pub path: PathBuf,
    /// Size, time and inode when scanned.
    pub stamp: FileStamp,
    /// How its published bytes are made.
    pub kind: SourceKind,
}

/// One directory to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dir {
    /// Its path in the published tree (`""` for the root).
    pub key: String,
    /// Its entries by name.
    pub entries: BTreeMap<String, Entry>,
}

/// A release directory of the mirror and where it is in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Its path in the published tree (`releases/CHANNEL/NIXNAME`).
    pub key: String,
    /// Its real path on disk.
    pub path: PathBuf,
    /// Its directory.
    pub entry: Entry,
}

/// The published tree of a mirror, before hashing (see the module documentation).
#[derive(Debug, Clone)]
pub struct MirrorTree {
    /// The mirror directory (real path).
    pub mirror: PathBuf,
    /// Every file, each once.
    pub sources: Vec<Source>,
    /// Every directory, children before parents; the root is the last.
    pub dirs: Vec<Dir>,
    /// Every release, in tree order.
    pub releases: Vec<Release>,
    /// What was left out and why.
    pub warnings: Vec<String>,
    /// Published paths of releases taken by their `ipfs_hash` (their files were not scanned).
    pub fixed_releases: Vec<String>,
}

/// What [`MirrorTree::scan`] needs to know.
pub struct ScanOptions<'a> {
    /// The add options (a cache entry for other options is not used).
    pub add: AddOptions,
    /// The cache of earlier runs.
    pub cache: &'a FileCache,
    /// Whether a release's `ipfs_hash` CID may be used without looking at its files: true
    /// when the node is known to hold that whole DAG and no CAR file needs its blocks.
    pub trust_release: &'a (dyn Fn(&Cid) -> bool + Sync),
}

struct Scanner<'a> {
    mirror: PathBuf,
    opts: &'a ScanOptions<'a>,
    sources: Vec<Source>,
    index: HashMap<String, usize>,
    dirs: Vec<Dir>,
    releases: Vec<Release>,
    release_by_path: HashMap<PathBuf, Entry>,
    /// Directories resolved so far (see [`Scanner::resolve`]).
    real_dirs: HashMap<PathBuf, PathBuf>,
    warnings: Vec<String>,
    fixed: Vec<String>,
}

fn join_key(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

impl<'a> Scanner<'a> {
    fn warn(&mut self, message: String) {
        tracing::warn!("{message}");
        self.warnings.push(message);
    }

    /// The entries of a directory, sorted by name, without hidden and non-UTF-8 names.
    fn list(&mut self, dir: &Path) -> Result<Vec<(String, PathBuf)>, PublishError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            match entry.file_name().into_string() {
                Ok(name) if name.starts_with('.') => {}
                Ok(name) => out.push((name, entry.path())),
                Err(name) => self.warn(format!(
                    "{}: skipped: the name {name:?} is not UTF-8",
                    dir.display()
                )),
            }
        }
        out.sort();
        Ok(out)
    }

    fn key_of(&self, real: &Path) -> String {
        match real.strip_prefix(&self.mirror) {
            Ok(rel) => rel.to_string_lossy().into_owned(),
            Err(_) => real.to_string_lossy().into_owned(),
        }
    }

    /// Resolves `path` to a real file and returns its source, creating it on first sight;
    /// `None` (with a warning) for a link that leads nowhere or to something else than a file.
    fn source(&mut self, path: &Path, narinfo: bool) -> Result<Option<usize>, PublishError> {
        let (real, meta) = match self.resolve(path) {
            Ok(found) => found,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!(
                    "{}: skipped: it is a link to nothing",
                    path.display()
                ));
                return Ok(None);
            }
            Err(e) => return Err(io_error(path)(e)),
        };
        let key = self.key_of(&real);
        if let Some(&i) = self.index.get(&key) {
            return Ok(Some(i));
        }
        if !meta.is_file() {
            self.warn(format!("{}: skipped: not a regular file", path.display()));
            return Ok(None);
        }
        let stamp = FileStamp::of(&meta);
        let kind = if narinfo {
            match self.narinfo_nar(&key, &real, &stamp)? {
                Some(nar) => SourceKind::Narinfo { nar },
                None => return Ok(None),
            }
        } else {
            SourceKind::Plain
        };
        let i = self.sources.len();
        self.sources.push(Source {
            key: key.clone(),
            path: real,
            stamp,
            kind,
        });
        self.index.insert(key, i);
        Ok(Some(i))
    }

    /// `path` with every symlink resolved, and the metadata of what it names. The same as
    /// `fs::canonicalize` and `fs::metadata`, but each directory is resolved once: a file or a
    /// link to a file costs one or three calls instead of one per path component, which
    /// matters for the tens of thousands of links of the release views.
    fn resolve(&mut self, path: &Path) -> io::Result<(PathBuf, fs::Metadata)> {
        let slow = |path: &Path| -> io::Result<(PathBuf, fs::Metadata)> {
            let real = fs::canonicalize(path)?;
            let meta = fs::metadata(&real)?;
            Ok((real, meta))
        };
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return slow(path);
        };
        let meta = fs::symlink_metadata(path)?;
        if !meta.file_type().is_symlink() {
            return Ok((self.real_dir(parent)?.join(name), meta));
        }
        let target = parent.join(fs::read_link(path)?);
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            return slow(path);
        };
        let real = self.real_dir(dir)?.join(name);
        match fs::symlink_metadata(&real) {
            // A link to a link: let the system follow the chain.
            Ok(meta) if meta.file_type().is_symlink() => slow(path),
            Ok(meta) => Ok((real, meta)),
            Err(e) => Err(e),
        }
    }

    /// A directory with every symlink resolved, remembered by the name it was asked for.
    fn real_dir(&mut self, dir: &Path) -> io::Result<PathBuf> {
        if let Some(real) = self.real_dirs.get(dir) {
            return Ok(real.clone());
        }
        let real = fs::canonicalize(dir)?;
        self.real_dirs.insert(dir.to_path_buf(), real.clone());
        Ok(real)
    }

    /// The NAR source of a narinfo: from the cache entry while the narinfo is unchanged, else
    /// from its `URL` field.
    fn narinfo_nar(
        &mut self,
        key: &str,
        real: &Path,
        stamp: &FileStamp,
    ) -> Result<Option<usize>, PublishError> {
        let cached = self
            .opts
            .cache
            .file(key, stamp, self.opts.add)
            .and_then(|e| e.dep.clone());
        let nar_path = match cached {
            Some(dep) if Path::new(&dep.key).is_absolute() => PathBuf::from(dep.key),
            Some(dep) => self.mirror.join(dep.key),
            None => {
                let text = fs::read(real).map_err(io_error(real))?;
                let info = match std::str::from_utf8(&text)
                    .map_err(|_| "not UTF-8 text".to_string())
                    .and_then(|t| NarInfo::parse(t).map_err(|e| e.to_string()))
                {
                    Ok(info) => info,
                    Err(e) => {
                        self.warn(format!("{}: skipped: {e}", real.display()));
                        return Ok(None);
                    }
                };
                if let Err(e) = crate::fsutil::check_relative_path(&info.url) {
                    self.warn(format!("{}: skipped: its URL: {e}", real.display()));
                    return Ok(None);
                }
                real.parent().unwrap_or(Path::new("/")).join(&info.url)
            }
        };
        if !nar_path.exists() {
            self.warn(format!(
                "{}: skipped: its NAR {} is missing",
                real.display(),
                nar_path.display()
            ));
            return Ok(None);
        }
        self.source(&nar_path, false)
    }

    fn push_dir(&mut self, key: String, entries: BTreeMap<String, Entry>) -> Entry {
        self.dirs.push(Dir { key, entries });
        Entry::Dir(self.dirs.len() - 1)
    }

    /// A binary cache directory: the global one or a release's view.
    fn binary_cache(&mut self, dir: &Path, key: &str) -> Result<Entry, PublishError> {
        let mut entries = BTreeMap::new();
        for (name, path) in self.list(dir)? {
            let source = if name == "nar" && path.is_dir() {
                let mut nars = BTreeMap::new();
                for (nar_name, nar_path) in self.list(&path)? {
                    if let Some(i) = self.source(&nar_path, false)? {
                        nars.insert(nar_name, Entry::File(i));
                    }
                }
                entries.insert(name.clone(), self.push_dir(join_key(key, "nar"), nars));
                continue;
            } else if name == "nix-cache-info" {
                self.source(&path, false)?
            } else if name.ends_with(".narinfo") {
                self.source(&path, true)?
            } else {
                continue;
            };
            if let Some(i) = source {
                entries.insert(name, Entry::File(i));
            }
        }
        Ok(self.push_dir(key.to_string(), entries))
    }

    /// A release directory, or `None` when it is not complete.
    fn release(&mut self, dir: &Path, key: &str) -> Result<Option<Entry>, PublishError> {
        let real = match fs::canonicalize(dir) {
            Ok(real) => real,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!(
                    "{}: skipped: it is a link to nothing",
                    dir.display()
                ));
                return Ok(None);
            }
            Err(e) => return Err(io_error(dir)(e)),
        };
        if let Some(entry) = self.release_by_path.get(&real) {
            return Ok(Some(*entry));
        }
        if !real.is_dir() {
            return Ok(None);
        }
        if !real.join("git-revision").is_file() {
            self.warn(format!(
                "{}: skipped: the release is not complete (no git-revision)",
                real.display()
            ));
            return Ok(None);
        }
        let entry = match self.trusted_ipfs_hash(&real, key) {
            Some(added) => {
                self.fixed.push(key.to_string());
                Entry::Fixed(added)
            }
            None => {
                let mut entries = BTreeMap::new();
                for (name, path) in self.list(&real)? {
                    if name == IPFS_HASH_FILE {
                        continue;
                    }
                    if name == "binary_cache" && path.is_dir() {
                        let view = self.binary_cache(&path, &join_key(key, &name))?;
                        entries.insert(name, view);
                    } else if path.is_file() {
                        if let Some(i) = self.source(&path, false)? {
                            entries.insert(name, Entry::File(i));
                        }
                    }
                }
                self.push_dir(key.to_string(), entries)
            }
        };
        self.release_by_path.insert(real.clone(), entry);
        self.releases.push(Release {
            key: key.to_string(),
            path: real,
            entry,
        });
        Ok(Some(entry))
    }

    fn trusted_ipfs_hash(&self, real: &Path, key: &str) -> Option<Added> {
        let text = fs::read_to_string(real.join(IPFS_HASH_FILE)).ok()?;
        let cid = Cid::parse(text.trim()).ok()?;
        let known = self.opts.cache.dir(key)?;
        (known.cid == cid
            && cid.version() == self.opts.add.cid_version
            && (self.opts.trust_release)(&cid))
        .then_some(known)
    }
}

impl MirrorTree {
    /// Looks at the mirror in `mirror` (see the module documentation for what is taken).
    pub fn scan(mirror: &Path, opts: &ScanOptions<'_>) -> Result<MirrorTree, PublishError> {
        let real = fs::canonicalize(mirror).map_err(io_error(mirror))?;
        let mut s = Scanner {
            mirror: real.clone(),
            opts,
            sources: Vec::new(),
            index: HashMap::new(),
            dirs: Vec::new(),
            releases: Vec::new(),
            release_by_path: HashMap::new(),
            real_dirs: HashMap::new(),
            warnings: Vec::new(),
            fixed: Vec::new(),
        };
        let mut root = BTreeMap::new();
        let cache_dir = real.join("binary_cache");
        if cache_dir.is_dir() {
            let entry = s.binary_cache(&cache_dir, "binary_cache")?;
            root.insert("binary_cache".to_string(), entry);
        } else {
            s.warn(format!("{}: there is no binary cache", cache_dir.display()));
        }
        let releases_dir = real.join("releases");
        if releases_dir.is_dir() {
            let mut channels = BTreeMap::new();
            for (channel, channel_path) in s.list(&releases_dir)? {
                if !channel_path.is_dir() {
                    continue;
                }
                let channel_key = format!("releases/{channel}");
                let mut releases = BTreeMap::new();
                for (name, path) in s.list(&channel_path)? {
                    if let Some(entry) = s.release(&path, &join_key(&channel_key, &name))? {
                        releases.insert(name, entry);
                    }
                }
                if !releases.is_empty() {
                    channels.insert(channel, s.push_dir(channel_key, releases));
                }
            }
            if !channels.is_empty() {
                root.insert(
                    "releases".to_string(),
                    s.push_dir("releases".into(), channels),
                );
            }
        }
        let channels_dir = real.join("channels");
        if channels_dir.is_dir() {
            let mut channels = BTreeMap::new();
            for (channel, path) in s.list(&channels_dir)? {
                if let Some(entry) = s.release(&path, &format!("channels/{channel}"))? {
                    channels.insert(channel, entry);
                }
            }
            if !channels.is_empty() {
                root.insert(
                    "channels".to_string(),
                    s.push_dir("channels".into(), channels),
                );
            }
        }
        s.push_dir(String::new(), root);
        Ok(MirrorTree {
            mirror: real,
            sources: s.sources,
            dirs: s.dirs,
            releases: s.releases,
            warnings: s.warnings,
            fixed_releases: s.fixed,
        })
    }

    /// The cache keys of this tree's sources and directories (what the cache keeps, with
    /// whatever is inside [`MirrorTree::fixed_releases`]).
    pub fn keys(&self) -> HashSet<&str> {
        self.sources
            .iter()
            .map(|s| s.key.as_str())
            .chain(self.dirs.iter().map(|d| d.key.as_str()))
            .collect()
    }
}

/// How [`build`] works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildOptions {
    /// The add options.
    pub add: AddOptions,
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
    /// New cache entries for the files read.
    pub file_entries: Vec<(String, FileEntry)>,
    /// What was done.
    pub stats: HashStats,
}

impl Built {
    /// The CID and size of an entry.
    pub fn entry(&self, entry: Entry) -> Added {
        match entry {
            Entry::File(i) => self.files[i],
            Entry::Dir(i) => self.dirs[i],
            Entry::Fixed(added) => added,
        }
    }

    /// Every CID of a file or directory root in the tree (what the node holds entirely once
    /// the root is pinned).
    pub fn all_cids(&self, tree: &MirrorTree) -> HashSet<Cid> {
        let mut cids: HashSet<Cid> = self.files.iter().map(|a| a.cid).collect();
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
        if let Some(root) = tree.dirs.len().checked_sub(1) {
            self.walk(tree, root, "", &mut out);
        }
        out
    }

    fn walk(
        &self,
        tree: &MirrorTree,
        dir: usize,
        prefix: &str,
        out: &mut Vec<(String, Cid, bool)>,
    ) {
        for (name, entry) in &tree.dirs[dir].entries {
            let path = join_key(prefix, name);
            match *entry {
                Entry::File(i) => out.push((path, self.files[i].cid, false)),
                Entry::Fixed(added) => out.push((path, added.cid, true)),
                Entry::Dir(j) => {
                    out.push((path.clone(), self.dirs[j].cid, true));
                    self.walk(tree, j, &path, out);
                }
            }
        }
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
    results: Vec<OnceLock<(Added, Option<FileEntry>)>>,
    stats: Mutex<HashStats>,
}

impl Builder<'_> {
    fn node_lacks(&self, cid: &Cid) -> bool {
        self.router.node_method().is_some() && !self.router.node_has_dag(cid)
    }

    fn nar_of(&self, i: usize) -> Option<(usize, Added)> {
        match self.tree.sources[i].kind {
            SourceKind::Narinfo { nar } => self.results[nar].get().map(|r| (nar, r.0)),
            SourceKind::Plain => None,
        }
    }

    fn plan(&self, i: usize) -> Plan {
        let source = &self.tree.sources[i];
        let entry = self.cache.file(&source.key, &source.stamp, self.opts.add);
        let cached = entry
            .filter(|e| match self.nar_of(i) {
                Some((nar, added)) => {
                    e.dep
                        == Some(Dependency {
                            key: self.tree.sources[nar].key.clone(),
                            cid: added.cid,
                        })
                }
                None => e.dep.is_none(),
            })
            .map(|e| e.root);
        let read = match cached {
            None => true,
            Some(added) => {
                self.opts.read_all || self.router.writes_car() || self.node_lacks(&added.cid)
            }
        };
        Plan { cached, read }
    }

    fn hash(&self, i: usize, plan: &Plan) -> Result<Added, PublishError> {
        let source = &self.tree.sources[i];
        // Blocks go to the node unless it holds the file's whole DAG already.
        let to_node = match plan.cached {
            None => true,
            Some(c) => self.opts.read_all || self.node_lacks(&c.cid),
        };
        let by_add = to_node && self.router.node_method() == Some(NodeMethod::Add);
        let blocks_to_node = to_node && !by_add;
        let mut sink = |cid: &Cid, block: &[u8]| self.router.put(cid, block, blocks_to_node);
        let hasher = FileHasher::new(self.opts.add);
        let hash_err = |source: ImportError| PublishError::Hash {
            path: self.tree.sources[i].path.clone(),
            source,
        };
        let sink_err = |e: io::Error| PublishError::Hash {
            path: self.tree.sources[i].path.clone(),
            source: ImportError::Sink(e),
        };
        let (added, read) = match self.nar_of(i) {
            None => {
                let file = fs::File::open(&source.path).map_err(io_error(&source.path))?;
                let mut reader = Counting {
                    inner: file,
                    phase: &self.phase,
                    count: 0,
                };
                let file = hasher.add(&mut reader, &mut sink).map_err(hash_err)?;
                if by_add {
                    self.router
                        .add(AddSource::Path(&source.path), &file.cid, self.opts.add)
                        .map_err(sink_err)?;
                }
                (Added::from(file), reader.count)
            }
            Some((_, nar)) => {
                let text = fs::read(&source.path).map_err(io_error(&source.path))?;
                self.phase.inc(text.len() as u64);
                let text = String::from_utf8(text).map_err(|_| PublishError::Io {
                    path: source.path.clone(),
                    source: io::Error::new(io::ErrorKind::InvalidData, "narinfo is not UTF-8"),
                })?;
                let info = NarInfo::parse(&text).map_err(|e| PublishError::Narinfo {
                    path: source.path.clone(),
                    source: e,
                })?;
                let published = info.with_extra_field(IPFS_HASH_FIELD, &nar.cid.to_string());
                let file = hasher
                    .add(published.as_bytes(), &mut sink)
                    .map_err(hash_err)?;
                if by_add {
                    let name = source.path.file_name().map(|n| n.to_string_lossy());
                    self.router
                        .add(
                            AddSource::Bytes(
                                name.as_deref().unwrap_or("narinfo"),
                                published.as_bytes(),
                            ),
                            &file.cid,
                            self.opts.add,
                        )
                        .map_err(sink_err)?;
                }
                (Added::from(file), text.len() as u64)
            }
        };
        let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.files_read += 1;
        stats.bytes_read += read;
        if plan.cached.is_some_and(|c| c != added) {
            stats.cache_mismatches += 1;
            tracing::warn!(
                "{}: its content changed without a change of size or time; hashed again",
                source.path.display()
            );
        }
        Ok(added)
    }

    fn process(&self, i: usize, plan: &Plan) -> Result<(), PublishError> {
        let source = &self.tree.sources[i];
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
        let entry = fresh.then(|| FileEntry {
            stamp: source.stamp,
            options: self.opts.add,
            root: added,
            dep: self.nar_of(i).map(|(nar, nar_added)| Dependency {
                key: self.tree.sources[nar].key.clone(),
                cid: nar_added.cid,
            }),
        });
        let _ = self.results[i].set((added, entry));
        Ok(())
    }

    fn wave(&self, items: &[usize]) -> Result<(), PublishError> {
        let plans: Vec<Plan> = items.iter().map(|&i| self.plan(i)).collect();
        let total: u64 = items
            .iter()
            .zip(&plans)
            .filter(|(_, p)| p.read)
            .map(|(&i, _)| self.tree.sources[i].stamp.size)
            .sum();
        self.phase.inc_total(total);
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let failure: Mutex<Option<PublishError>> = Mutex::new(None);
        let threads = self.opts.concurrency.clamp(1, 64).min(items.len().max(1));
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= items.len() || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Err(e) = self.process(items[n], &plans[n]) {
                        stop.store(true, Ordering::Relaxed);
                        let mut slot = failure.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                        break;
                    }
                });
            }
        });
        match failure.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(self
                .router
                .take_failure()
                .map(PublishError::from)
                .unwrap_or(e)),
            None => Ok(()),
        }
    }
}

/// Hashes every file of `tree` and builds its directories, giving every block to `router`
/// (see the module documentation). Runs on the calling thread and `concurrency` others; call
/// it from a blocking context.
pub fn build(
    tree: &MirrorTree,
    cache: &FileCache,
    router: &Router,
    opts: BuildOptions,
) -> Result<Built, PublishError> {
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
    builder.wave(&plain)?;
    builder.wave(&narinfos)?;
    builder.phase.finish();

    let mut files = Vec::with_capacity(tree.sources.len());
    let mut file_entries = Vec::new();
    for (i, slot) in builder.results.into_iter().enumerate() {
        let Some((added, entry)) = slot.into_inner() else {
            return Err(PublishError::Io {
                path: tree.sources[i].path.clone(),
                source: io::Error::other("the file was not hashed"),
            });
        };
        files.push(added);
        if let Some(entry) = entry {
            file_entries.push((tree.sources[i].key.clone(), entry));
        }
    }

    let mut dirs: Vec<Added> = Vec::with_capacity(tree.dirs.len());
    for dir in &tree.dirs {
        let dir_err = |source| PublishError::Directory {
            key: dir.key.clone(),
            source,
        };
        let mut b = DirectoryBuilder::new(opts.add.cid_version);
        for (name, entry) in &dir.entries {
            let added = match *entry {
                Entry::File(i) => files[i],
                Entry::Dir(j) => dirs[j],
                Entry::Fixed(added) => added,
            };
            b.add(name, added.cid, added.tsize).map_err(dir_err)?;
        }
        let mut blocks = Vec::new();
        let root = b
            .build(&mut |cid: &Cid, block: &[u8]| {
                blocks.push((*cid, block.to_vec()));
                Ok(())
            })
            .map_err(dir_err)?;
        let to_node = !router.node_has_dag(&root.cid) || opts.read_all;
        for (cid, block) in &blocks {
            if let Err(e) = router.put(cid, block, to_node) {
                return Err(router.take_failure().map(PublishError::from).unwrap_or(
                    PublishError::Directory {
                        key: dir.key.clone(),
                        source: DirectoryError::Sink(e),
                    },
                ));
            }
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
        file_entries,
        stats,
    })
}

/// Records what was built in the cache: new file entries, every directory, and nothing that
/// is no longer in the tree.
pub fn update_cache(cache: &mut FileCache, tree: &MirrorTree, built: &Built) {
    for (key, entry) in &built.file_entries {
        cache.insert_file(key.clone(), entry.clone());
    }
    for (dir, added) in tree.dirs.iter().zip(&built.dirs) {
        cache.insert_dir(dir.key.clone(), *added);
    }
    let keys = tree.keys();
    cache.retain(|k| {
        keys.contains(k)
            || tree
                .fixed_releases
                .iter()
                .any(|r| k == r || k.starts_with(&format!("{r}/")))
    });
}

/// Picks the published paths to check on the node: every directory down to the releases and
/// channels, the first and last narinfo and NAR, and files spread evenly over the rest, at
/// most `max_files` files in all.
pub fn verification_sample(paths: &[(String, Cid, bool)], max_files: usize) -> Vec<(String, Cid)> {
    let mut picked: Vec<usize> = Vec::new();
    let mut files = Vec::new();
    for (i, (path, _, is_dir)) in paths.iter().enumerate() {
        if *is_dir {
            if path.matches('/').count() <= 2 {
                picked.push(i);
            }
        } else {
            files.push(i);
        }
    }
    let mut chosen_files: Vec<usize> = Vec::new();
    let firsts_and_lasts = |pred: &dyn Fn(&str) -> bool| {
        let matching: Vec<usize> = files
            .iter()
            .copied()
            .filter(|&i| pred(&paths[i].0))
            .collect();
        [matching.first().copied(), matching.last().copied()]
    };
    for i in firsts_and_lasts(&|p: &str| p.starts_with("binary_cache/") && p.ends_with(".narinfo"))
        .into_iter()
        .chain(firsts_and_lasts(&|p: &str| {
            p.starts_with("binary_cache/nar/")
        }))
        .chain(firsts_and_lasts(&|p: &str| {
            p.starts_with("releases/") && !p.contains("/binary_cache/")
        }))
        .flatten()
    {
        if !chosen_files.contains(&i) && chosen_files.len() < max_files {
            chosen_files.push(i);
        }
    }
    let room = max_files.saturating_sub(chosen_files.len());
    if room > 0 && !files.is_empty() {
        let step = files.len().div_ceil(room).max(1);
        for &i in files.iter().step_by(step) {
            if !chosen_files.contains(&i) && chosen_files.len() < max_files {
                chosen_files.push(i);
            }
        }
    }
    picked.extend(chosen_files);
    picked.sort_unstable();
    picked
        .into_iter()
        .map(|i| (paths[i].0.clone(), paths[i].1))
        .collect()
}

/// Checks with `files/stat` that the node has `root` at `mfs_root`, and each sampled path
/// below it with the CID computed here (decoded CIDs are compared, not their text). Returns
/// the number of paths checked.
pub async fn verify_on_node(
    client: &IpfsClient,
    mfs_root: &str,
    root: &Cid,
    sample: &[(String, Cid)],
) -> Result<usize, PublishError> {
    let mut checked = 0;
    let root_entry = (String::new(), *root);
    for (path, expected) in std::iter::once(&root_entry).chain(sample) {
        let mfs_path = if path.is_empty() {
            mfs_root.to_string()
        } else {
            format!("{mfs_root}/{path}")
        };
        match client.files_stat(&mfs_path).await? {
            Some(stat) if stat.cid == *expected => checked += 1,
            Some(stat) => {
                return Err(PublishError::Verification {
                    path: mfs_path,
                    expected: expected.to_string(),
                    got: stat.cid.to_string(),
                })
            }
            None => {
                return Err(PublishError::Verification {
                    path: mfs_path,
                    expected: expected.to_string(),
                    got: "nothing".to_string(),
                })
            }
        }
    }
    Ok(checked)
}

/// What a publication did (returned by `create-nixipfs`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// The root CID.
    pub root: Cid,
    /// Cumulative size of the root's DAG.
    pub root_size: u64,
    /// The node's peer ID, when published to a node.
    pub node: Option<String>,
    /// The MFS directory the root was copied to.
    pub mfs_path: Option<String>,
    /// The IPNS name the root was published under.
    pub ipns_name: Option<String>,
    /// The CAR file written.
    pub car_file: Option<PathBuf>,
    /// Each release (published path) and its CID.
    pub releases: Vec<(String, Cid)>,
    /// Hashing work.
    pub hashing: HashStats,
    /// Blocks sent and written.
    pub sent: SendStats,
    /// Whether blocks missing on the node had to be found and sent again.
    pub repaired: bool,
    /// Whether the root was already pinned recursively, so `pin/add` was not needed.
    pub already_pinned: bool,
    /// Paths whose CIDs were checked on the node.
    pub verified_paths: usize,
    /// What was left out and why.
    pub warnings: Vec<String>,
}

impl PublishReport {
    /// A one-line summary of the work.
    pub fn summary(&self) -> String {
        let h = &self.hashing;
        let s = &self.sent;
        let mut line = format!(
            "{} files: {} read ({}), {} from the cache",
            h.files,
            h.files_read,
            crate::progress::human_bytes(h.bytes_read),
            h.files_from_cache
        );
        if self.node.is_some() {
            line.push_str(&format!(
                "; sent {} blocks ({}) in {} dag/import requests",
                s.blocks_sent,
                crate::progress::human_bytes(s.block_bytes_sent),
                s.import_requests
            ));
            if self.already_pinned {
                line.push_str("; the root was already pinned");
            }
            if s.add_calls > 0 {
                line.push_str(&format!(
                    ", {} add calls ({})",
                    s.add_calls,
                    crate::progress::human_bytes(s.add_bytes)
                ));
            }
        }
        if let Some(car) = &self.car_file {
            line.push_str(&format!(
                "; wrote {} blocks ({}) to {}",
                s.car_file_blocks,
                crate::progress::human_bytes(s.car_file_bytes),
                car.display()
            ));
        }
        line
    }
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
    use super::*;
    use crate::ipfs::car::CarReader;
    use crate::ipfs::dagpb::PbNode;
    use std::os::unix::fs::symlink;

    /// A small mirror: a global cache with two NARs and narinfos, a release linking one of
    /// them, a channel link, an incomplete release and some files that are not published.
    pub(crate) fn small_mirror(dir: &Path) {
        let w = |rel: &str, data: &[u8]| {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        };
        let narinfo = |hash: &str, nar: &str| {
            format!(
                "StorePath: /nix/store/{hash}-x\nURL: nar/{nar}\nCompression: xz\nNarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\nNarSize: 10\nReferences: \n"
            )
        };
        let h1 = "w9yy7v61ipb5rx6i35zq1mvc2iqfmps1";
        let h2 = "r29rfw7xvs9kc6lxma5aqdqbci3af4vg";
        w(
            "binary_cache/nix-cache-info",
            b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
        );
        w("binary_cache/lastsync", b"1700000000\n");
        w("binary_cache/nar/a.nar.xz", &vec![7u8; 300_000]);
        w("binary_cache/nar/b.nar.xz", b"nar b");
        w(
            &format!("binary_cache/{h1}.narinfo"),
            narinfo(h1, "a.nar.xz").as_bytes(),
        );
        w(
            &format!("binary_cache/{h2}.narinfo"),
            narinfo(h2, "b.nar.xz").as_bytes(),
        );
        w(
            "binary_cache/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.narinfo",
            narinfo("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "missing.nar.xz").as_bytes(),
        );
        w("binary_cache/.nixipfs-tmp-123", b"temp");
        let rel = "releases/nixos-24.05/nixos-24.05.1.abc";
        w(&format!("{rel}/git-revision"), b"abc\n");
        w(&format!("{rel}/src-url"), b"https://hydra/eval/1\n");
        w(&format!("{rel}/nixexprs.tar.xz"), b"tarball");
        w(
            &format!("{rel}/binary_cache/nix-cache-info"),
            b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
        );
        fs::create_dir_all(dir.join(format!("{rel}/binary_cache/nar"))).unwrap();
        symlink(
            format!("../../../../binary_cache/{h1}.narinfo"),
            dir.join(format!("{rel}/binary_cache/{h1}.narinfo")),
        )
        .unwrap();
        symlink(
            "../../../../../binary_cache/nar/a.nar.xz",
            dir.join(format!("{rel}/binary_cache/nar/a.nar.xz")),
        )
        .unwrap();
        w(
            "releases/nixos-24.05/nixos-24.05.2.def/src-url",
            b"incomplete",
        );
        fs::create_dir_all(dir.join("channels")).unwrap();
        symlink(
            "../releases/nixos-24.05/nixos-24.05.1.abc",
            dir.join("channels/nixos-24.05"),
        )
        .unwrap();
        symlink("../releases/nowhere", dir.join("channels/dangling")).unwrap();
    }

    fn trust_none(_: &Cid) -> bool {
        false
    }

    #[test]
    fn resolve_agrees_with_canonicalize() {
        use std::os::unix::fs::{symlink, MetadataExt};
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(root.join("real/sub")).unwrap();
        fs::write(root.join("real/sub/file"), b"x").unwrap();
        fs::create_dir_all(root.join("view/nar")).unwrap();
        symlink("real", root.join("alias")).unwrap();
        let links: [(&str, PathBuf); 7] = [
            ("view/nar/relative", "../../real/sub/file".into()),
            ("view/nar/absolute", root.join("real/sub/file")),
            ("view/nar/through-alias", "../../alias/sub/file".into()),
            ("view/nar/chain", "relative".into()),
            ("view/nar/dangling", "../../real/sub/nothing".into()),
            ("view/nar/no-dir", "../../nowhere/file".into()),
            ("view/nar/to-dir", "../../real/sub".into()),
        ];
        for (link, target) in &links {
            symlink(target, root.join(link)).unwrap();
        }
        let cache = FileCache::new();
        let opts = ScanOptions {
            add: AddOptions::V0_RAW_LEAVES,
            cache: &cache,
            trust_release: &trust_none,
        };
        let mut s = Scanner {
            mirror: root.clone(),
            opts: &opts,
            sources: Vec::new(),
            index: HashMap::new(),
            dirs: Vec::new(),
            releases: Vec::new(),
            release_by_path: HashMap::new(),
            real_dirs: HashMap::new(),
            warnings: Vec::new(),
            fixed: Vec::new(),
        };
        let mut names: Vec<&str> = links.iter().map(|(l, _)| *l).collect();
        names.extend(["real/sub/file", "alias/sub/file", "real/sub/nothing"]);
        for name in names {
            let path = root.join(name);
            let expected = fs::canonicalize(&path)
                .and_then(|real| fs::metadata(&real).map(|m| (real, m.is_file(), m.ino())));
            let got = s
                .resolve(&path)
                .map(|(real, m)| (real, m.is_file(), m.ino()));
            match (&expected, &got) {
                (Ok(e), Ok(g)) => assert_eq!(e, g, "{name}"),
                (Err(e), Err(g)) => assert_eq!(e.kind(), g.kind(), "{name}"),
                _ => panic!("{name}: {expected:?} against {got:?}"),
            }
        }
    }

    #[test]
    fn scan_takes_the_published_files_only() {
        let dir = tempfile::tempdir().unwrap();
        small_mirror(dir.path());
        let cache = FileCache::new();
        let opts = ScanOptions {
            add: AddOptions::V0_RAW_LEAVES,
            cache: &cache,
            trust_release: &trust_none,
        };
        let tree = MirrorTree::scan(dir.path(), &opts).unwrap();
        let mut keys: Vec<&str> = tree.sources.iter().map(|s| s.key.as_str()).collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "binary_cache/nar/a.nar.xz",
                "binary_cache/nar/b.nar.xz",
                "binary_cache/nix-cache-info",
                "binary_cache/r29rfw7xvs9kc6lxma5aqdqbci3af4vg.narinfo",
                "binary_cache/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo",
                "releases/nixos-24.05/nixos-24.05.1.abc/binary_cache/nix-cache-info",
                "releases/nixos-24.05/nixos-24.05.1.abc/git-revision",
                "releases/nixos-24.05/nixos-24.05.1.abc/nixexprs.tar.xz",
                "releases/nixos-24.05/nixos-24.05.1.abc/src-url",
            ]
        );
        let dir_keys: Vec<&str> = tree.dirs.iter().map(|d| d.key.as_str()).collect();
        assert_eq!(
            dir_keys,
            [
                "binary_cache/nar",
                "binary_cache",
                "releases/nixos-24.05/nixos-24.05.1.abc/binary_cache/nar",
                "releases/nixos-24.05/nixos-24.05.1.abc/binary_cache",
                "releases/nixos-24.05/nixos-24.05.1.abc",
                "releases/nixos-24.05",
                "releases",
                "channels",
                "",
            ]
        );
        assert_eq!(tree.releases.len(), 1);
        let warnings = tree.warnings.join("\n");
        assert!(warnings.contains("missing.nar.xz is missing"), "{warnings}");
        assert!(
            warnings.contains("nixos-24.05.2.def: skipped: the release is not complete"),
            "{warnings}"
        );
        assert!(
            warnings.contains("dangling: skipped: it is a link to nothing"),
            "{warnings}"
        );
        // The channel is the release's directory itself.
        let channels = &tree.dirs[7];
        assert_eq!(channels.entries["nixos-24.05"], tree.releases[0].entry);
    }

    fn build_to_car(dir: &Path, cache: &FileCache, car: &Path) -> (MirrorTree, Built, SendStats) {
        let opts = ScanOptions {
            add: AddOptions::V0_RAW_LEAVES,
            cache,
            trust_release: &trust_none,
        };
        let tree = MirrorTree::scan(dir, &opts).unwrap();
        let router = Router::new(Some(car), 0, None).unwrap();
        let built = build(
            &tree,
            cache,
            &router,
            BuildOptions {
                add: AddOptions::V0_RAW_LEAVES,
                concurrency: 3,
                read_all: false,
            },
        )
        .unwrap();
        let stats = router.finish(&built.root.cid).unwrap();
        (tree, built, stats)
    }

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
            add: AddOptions::V0_RAW_LEAVES,
            cache: &cache,
            trust_release: &trust_none,
        };
        let build_opts = BuildOptions {
            add: AddOptions::V0_RAW_LEAVES,
            concurrency: 2,
            read_all: false,
        };
        let tree = MirrorTree::scan(dir.path(), &opts).unwrap();
        let first = build(&tree, &cache, &router, build_opts).unwrap();
        let mut cache = FileCache::new();
        update_cache(&mut cache, &tree, &first);
        let path = out.path().join("ipfs_hashes");
        cache.save(&path).unwrap();
        let (cache, _) = FileCache::load(&path).unwrap();

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

    #[test]
    fn the_sample_covers_directories_and_spread_files() {
        let dir = tempfile::tempdir().unwrap();
        small_mirror(dir.path());
        let out = tempfile::tempdir().unwrap();
        let (tree, built, _) =
            build_to_car(dir.path(), &FileCache::new(), &out.path().join("m.car"));
        let paths = built.paths(&tree);
        let sample = verification_sample(&paths, 4);
        let names: Vec<&str> = sample.iter().map(|(p, _)| p.as_str()).collect();
        for expected in [
            "binary_cache",
            "channels",
            "channels/nixos-24.05",
            "releases",
            "releases/nixos-24.05",
            "releases/nixos-24.05/nixos-24.05.1.abc",
            "binary_cache/r29rfw7xvs9kc6lxma5aqdqbci3af4vg.narinfo",
        ] {
            assert!(names.contains(&expected), "{expected} not in {names:?}");
        }
        assert_eq!(
            sample
                .iter()
                .filter(
                    |(p, _)| !tree.dirs.iter().any(|d| &d.key == p) && !p.starts_with("channels/")
                )
                .count(),
            4
        );
    }
}
