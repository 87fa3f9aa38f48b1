//! Walking the mirror: what is published, found on disk with every symlink resolved, hashed
//! and built into directories as it is found, so that memory follows the largest directory,
//! not the number of files.
//!
//! A file reached through several links (a NAR in the global cache and in each release's view)
//! is one source, keyed by its real path relative to the mirror, hashed once: the walk keeps
//! the root of every source it has hashed under a 16-byte fingerprint of its key (about 70
//! bytes per file, the one thing kept per file). Directories are resolved once each and
//! remembered, so the tens of thousands of links of the release views cost a few system calls
//! each. New sources wait in a batch of at most [`BATCH`] files, hashed together on the
//! pool of threads ([`super::dag`]); a directory is built as soon as its entries are known,
//! its blocks delivered, and only its root kept. A file whose cache entry still describes it,
//! and whose blocks nothing needs (no CAR file is written, the node holds them), is not
//! batched: its root is taken from the entry at once (a narinfo's when its NAR hashed to the
//! CID the entry names). The global `binary_cache/nar` comes before
//! the narinfos that name its files, so a narinfo's NAR is known when the narinfo is hashed.
//! A release whose `ipfs_hash` the cache and the node vouch for is taken by its CID, without
//! looking inside.
//!
//! The files of a large directory (`nar/`, the narinfos, a tarball algorithm's directory) are
//! resolved on the pool 2,048 entries at a time, then taken in name order
//! on the walking thread, so the result is the one a walk one entry at a time gives. The
//! regular files of the next 2,048 are probed, and their cache entries looked up, while the
//! walking thread takes the ones before (that needs nothing of the walk's state). A probe
//! asks relative to the open directory (`stat`, `readlink`), takes a link from the listing's
//! entry type, does not `stat` a link's target that the walk has seen already (a release
//! view's links to the global cache), and reads a new narinfo there once: its bytes go with
//! the source to the hashing, which does not read it again.
//!
//! The cache entries of the files hashed (or found in the cache) go to a [`CacheWriter`] a
//! batch at a time; the verification sample is picked as the walk goes
//! ([`super::verify::Sampler`]).

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rayon::prelude::*;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, CWD};

use super::dag::{listing_digest, BuildOptions, HashStats, Hasher, Root, RootMap};
use super::verify::Sampler;
use super::{io_error, PublishError, IPFS_HASH_FILE};
use crate::hash::{fingerprint128, FingerprintSet};
use crate::ipfs::cid::{Cid, ShortCid};
use crate::ipfs::file_cache::{CacheWriter, Cached, CachedDir, FileCache, FileStamp, NextEntry};
use crate::ipfs::unixfs::{AddOptions, Added};
use crate::ipfs::upload::Router;
use crate::narinfo::NarInfo;
use crate::progress::{Phase, Unit};

/// New files hashed together at most (a batch waits in memory with its keys).
pub const BATCH: usize = 4096;

/// How a source's published bytes are made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// The file as it is.
    Plain,
    /// A narinfo, with an `IPFSHash` line naming the CID of its NAR.
    Narinfo {
        /// The NAR's key.
        nar_key: String,
        /// The fingerprint of the NAR's key.
        nar: u128,
        /// The narinfo's bytes when the walk read them already (to find its NAR), so that
        /// hashing does not read the file again.
        text: Option<Vec<u8>>,
    },
}

/// One file to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Its real path relative to the mirror (or absolute, when a link leads out of it).
    pub key: String,
    /// The fingerprint of `key`.
    pub id: u128,
    /// Its real path when that is not the mirror joined with `key` (a name that is not
    /// UTF-8); see [`Source::path`].
    pub real_path: Option<PathBuf>,
    /// Size, time and inode when scanned.
    pub stamp: FileStamp,
    /// How its published bytes are made.
    pub kind: SourceKind,
    /// Its entry in the cache, when the walk looked it up already (a narinfo's, to find its
    /// NAR).
    pub cached: Lookup,
}

/// Whether and what the walk found of a source in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// Not looked up yet.
    NotDone,
    /// No entry that still describes the file.
    Miss,
    /// Its entry, which still describes the file.
    Hit(Box<Cached>),
}

impl Source {
    /// Its real path, in the mirror whose real path is `mirror`.
    pub fn path(&self, mirror: &Path) -> PathBuf {
        match &self.real_path {
            Some(path) => path.clone(),
            None => mirror.join(&self.key),
        }
    }
}

/// A release directory of the mirror.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    /// Its path in the published tree (`releases/CHANNEL/NIXNAME`).
    pub key: String,
    /// Its real path on disk.
    pub path: PathBuf,
    /// Its DAG.
    pub root: Added,
}

/// What a walk of the mirror gave (see the module documentation).
#[derive(Debug, Clone)]
pub struct Walked {
    /// The mirror directory (real path).
    pub mirror: PathBuf,
    /// The root directory.
    pub root: Added,
    /// Every release, in the order walked.
    pub releases: Vec<Release>,
    /// What was left out and why.
    pub warnings: Vec<String>,
    /// Published paths of releases taken by their `ipfs_hash` (their files were not looked
    /// at).
    pub fixed_releases: Vec<String>,
    /// The published paths to check on the node.
    pub sample: Vec<(String, Cid)>,
    /// Every published path with its CID and whether it is a directory, in the order the
    /// directories were built, when [`WalkOptions::record_paths`] asked for it.
    pub paths: Vec<(String, Cid, bool)>,
    /// What was done.
    pub stats: HashStats,
}

/// What [`walk`] needs to know.
pub struct WalkOptions<'a> {
    /// How files are hashed and directories built.
    pub build: BuildOptions,
    /// The cache of earlier runs.
    pub cache: &'a FileCache,
    /// Whether a release's `ipfs_hash` CID may be used without looking at its files: true
    /// when the node is known to hold that whole DAG and no CAR file needs its blocks.
    pub trust_release: &'a (dyn Fn(&Cid) -> bool + Sync),
    /// Published files to check on the node (besides the directories near the top).
    pub verify_files: usize,
    /// Keep every published path in [`Walked::paths`] (for tests: it grows with the mirror).
    pub record_paths: bool,
}

/// A directory entry while its directory is being listed.
#[derive(Debug, Clone, Copy)]
enum Entry {
    /// A source in the batch, by the fingerprint of its key.
    Pending(u128),
    /// A file already hashed.
    File(Root),
    /// A directory.
    Dir(Root),
}

/// Resolves paths of the mirror, each directory once; shared by the threads that probe a
/// directory's entries.
pub(super) struct Resolver {
    /// Directories resolved so far (see [`Resolver::resolve`]).
    real_dirs: Mutex<HashMap<PathBuf, PathBuf>>,
}

impl Resolver {
    pub(super) fn new() -> Resolver {
        Resolver {
            real_dirs: Mutex::new(HashMap::new()),
        }
    }

    /// `path` with every symlink resolved, and the metadata of what it names. The same as
    /// `fs::canonicalize` and `fs::metadata`, but each directory is resolved once: a file or a
    /// link to a file costs one or three calls instead of one per path component, which
    /// matters for the tens of thousands of links of the release views.
    pub(super) fn resolve(&self, path: &Path) -> io::Result<(PathBuf, fs::Metadata)> {
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return canonical(path);
        };
        let meta = fs::symlink_metadata(path)?;
        if !meta.file_type().is_symlink() {
            return Ok((self.real_dir(parent)?.join(name), meta));
        }
        let target = parent.join(fs::read_link(path)?);
        let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
            return canonical(path);
        };
        let real = self.real_dir(dir)?.join(name);
        match fs::symlink_metadata(&real) {
            // A link to a link: let the system follow the chain.
            Ok(meta) if meta.file_type().is_symlink() => canonical(path),
            Ok(meta) => Ok((real, meta)),
            Err(e) => Err(e),
        }
    }

    /// A directory with every symlink resolved, remembered by the name it was asked for.
    fn real_dir(&self, dir: &Path) -> io::Result<PathBuf> {
        let lock = || self.real_dirs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(real) = lock().get(dir) {
            return Ok(real.clone());
        }
        let real = fs::canonicalize(dir)?;
        lock().insert(dir.to_path_buf(), real.clone());
        Ok(real)
    }
}

/// `path` with every symlink resolved by the system, and the metadata of what it names: the
/// way of [`Resolver::resolve`] and [`Prober::probe`] when a link leads to a link.
fn canonical(path: &Path) -> io::Result<(PathBuf, fs::Metadata)> {
    let real = fs::canonicalize(path)?;
    let meta = fs::metadata(&real)?;
    Ok((real, meta))
}

/// What is known of a file found by the walk: whether it is a regular file, and its stamp.
#[derive(Debug, Clone, Copy)]
struct Meta {
    is_file: bool,
    stamp: FileStamp,
}

impl Meta {
    fn of(meta: &fs::Metadata) -> Meta {
        Meta {
            is_file: meta.is_file(),
            stamp: FileStamp::of(meta),
        }
    }

    fn of_stat(stat: &rustix::fs::Stat) -> Meta {
        Meta {
            is_file: FileType::from_raw_mode(stat.st_mode) == FileType::RegularFile,
            stamp: FileStamp::of_stat(stat),
        }
    }
}

fn is_symlink(stat: &rustix::fs::Stat) -> bool {
    FileType::from_raw_mode(stat.st_mode) == FileType::Symlink
}

/// A directory entry resolved to a real file: its real path, key and the key's fingerprint,
/// and its metadata unless the walk knows that file already (then it is not asked for).
struct Probe {
    real: PathBuf,
    key: String,
    id: u128,
    meta: Option<Meta>,
}

/// Resolves the entries of one directory on several threads: the walk's state is only read.
struct Prober<'a> {
    mirror: &'a Path,
    resolver: &'a Resolver,
    done: &'a RootMap,
    in_batch: &'a FingerprintSet,
}

impl Prober<'_> {
    fn key_of(&self, real: &Path) -> String {
        key_of(self.mirror, real)
    }

    /// Whether the file with key fingerprint `id` was seen already (hashed or waiting).
    fn known(&self, id: u128) -> bool {
        self.in_batch.contains(&id) || self.done.get(&id).is_some()
    }

    fn probe_of(&self, real: PathBuf, meta: Option<Meta>) -> Probe {
        let key = self.key_of(&real);
        let id = fingerprint128(key.as_bytes());
        Probe {
            real,
            key,
            id,
            meta,
        }
    }

    /// Resolves `name` in `dir` (open as `dirfd`; `file_type` as the listing gave it), the
    /// same as [`Resolver::resolve`], in fewer calls: a file costs one `stat` relative to its
    /// directory, a link one `readlink` when its target is known to the walk already and one
    /// `stat` more when not.
    fn probe(
        &self,
        dirfd: BorrowedFd<'_>,
        dir: &Path,
        real_dir: &Path,
        name: &str,
        file_type: Option<fs::FileType>,
    ) -> io::Result<Probe> {
        let slow = |path: &Path| -> io::Result<Probe> {
            let (real, meta) = canonical(path)?;
            Ok(self.probe_of(real, Some(Meta::of(&meta))))
        };
        if !file_type.is_some_and(|t| t.is_symlink()) {
            let dir_key = self.key_of(real_dir);
            if let Some(probe) = probe_file(dirfd, real_dir, &dir_key, name)? {
                return Ok(probe);
            }
        }
        let target = rustix::fs::readlinkat(dirfd, name, Vec::new())?;
        let target = dir.join(std::ffi::OsStr::from_bytes(target.as_bytes()));
        let (Some(target_dir), Some(target_name)) = (target.parent(), target.file_name()) else {
            return slow(&dir.join(name));
        };
        let real = self.resolver.real_dir(target_dir)?.join(target_name);
        let probe = self.probe_of(real, None);
        if self.known(probe.id) {
            // A regular file when it was seen: its metadata is not needed again.
            return Ok(probe);
        }
        let stat = rustix::fs::statat(CWD, &probe.real, AtFlags::SYMLINK_NOFOLLOW)?;
        if is_symlink(&stat) {
            // A link to a link: let the system follow the chain.
            return slow(&dir.join(name));
        }
        Ok(Probe {
            meta: Some(Meta::of_stat(&stat)),
            ..probe
        })
    }

    /// `path` resolved like [`Prober::probe`], by path.
    fn resolve(&self, path: &Path) -> io::Result<Probe> {
        if let (Some(dir), Some(name)) = (path.parent(), path.file_name()) {
            let real = self.resolver.real_dir(dir)?.join(name);
            let probe = self.probe_of(real, None);
            if self.known(probe.id) {
                return Ok(probe);
            }
        }
        let (real, meta) = self.resolver.resolve(path)?;
        Ok(self.probe_of(real, Some(Meta::of(&meta))))
    }
}

/// Whether `real` is `mirror` joined with `key` (compared as bytes: both are real paths).
fn is_at_key(mirror: &Path, key: &str, real: &Path) -> bool {
    let (mirror, real) = (mirror.as_os_str().as_bytes(), real.as_os_str().as_bytes());
    real.len() == mirror.len() + 1 + key.len()
        && real.starts_with(mirror)
        && real[mirror.len()] == b'/'
        && real.ends_with(key.as_bytes())
}

/// The key of the file whose real path is `real`, in the mirror whose real path is `mirror`.
fn key_of(mirror: &Path, real: &Path) -> String {
    match real.strip_prefix(mirror) {
        Ok(rel) => rel.to_string_lossy().into_owned(),
        Err(_) => real.to_string_lossy().into_owned(),
    }
}

/// A directory entry probed ahead of the walk ([`probe_files`]).
struct Ahead {
    /// Its probe, when the entry is a file (else it is probed in order).
    probe: Option<io::Result<Probe>>,
    /// What the cache holds of the file, when it was looked up.
    lookup: Lookup,
}

/// Probes the entries of `chunk` that the listing says are files (in `dirfd`, whose real
/// path is `real_dir`, in the mirror `mirror`) and looks their keys up in `cache`, at once
/// (call it on the pool): an entry found there that still describes the file (hashed with
/// `options`) is a hit. An entry that is no file is left to the walk.
fn probe_files(
    dirfd: BorrowedFd<'_>,
    real_dir: &Path,
    mirror: &Path,
    cache: &FileCache,
    options: AddOptions,
    chunk: &[(String, Option<fs::FileType>)],
) -> Vec<Ahead> {
    let dir_key = key_of(mirror, real_dir);
    let keys: Vec<Option<String>> = chunk
        .iter()
        .map(|(name, file_type)| {
            file_type
                .is_some_and(|t| t.is_file())
                .then(|| join_key(&dir_key, name))
        })
        .collect();
    // The files are asked about on the pool while their keys are looked up in order (the
    // cache is read forward).
    let (stats, found): (Vec<_>, Vec<_>) = rayon::join(
        || {
            chunk
                .par_iter()
                .zip(&keys)
                .map(|((name, _), key)| {
                    let key = key.as_ref()?;
                    let stat = rustix::fs::statat(dirfd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW);
                    Some((stat, fingerprint128(key.as_bytes())))
                })
                .collect()
        },
        || {
            keys.iter()
                .map(|key| key.as_ref().and_then(|key| cache.entry(key)))
                .collect()
        },
    );
    chunk
        .iter()
        .zip(keys)
        .zip(stats.into_iter().zip(found))
        .map(|(((name, _), key), (stat, found))| {
            let (Some(key), Some((stat, id))) = (key, stat) else {
                return Ahead {
                    probe: None,
                    lookup: Lookup::NotDone,
                };
            };
            match stat.map(|stat| file_probe(&stat, real_dir, name, key, id)) {
                Ok(Some(probe)) => {
                    let lookup = found
                        .filter(|c| probe.meta.is_some_and(|m| c.describes(&m.stamp, options)))
                        .map_or(Lookup::Miss, |c| Lookup::Hit(Box::new(c)));
                    Ahead {
                        probe: Some(Ok(probe)),
                        lookup,
                    }
                }
                // Became a link since it was listed: probed in order.
                Ok(None) => Ahead {
                    probe: None,
                    lookup: Lookup::NotDone,
                },
                Err(e) => Ahead {
                    probe: Some(Err(e.into())),
                    lookup: Lookup::NotDone,
                },
            }
        })
        .collect()
}

/// `name` in `dirfd` (whose real path is `real_dir`, its key `dir_key`) when it is not a
/// link: its probe, with one `stat` relative to the directory.
fn probe_file(
    dirfd: BorrowedFd<'_>,
    real_dir: &Path,
    dir_key: &str,
    name: &str,
) -> io::Result<Option<Probe>> {
    let stat = rustix::fs::statat(dirfd, name, AtFlags::SYMLINK_NOFOLLOW)?;
    let key = join_key(dir_key, name);
    let id = fingerprint128(key.as_bytes());
    Ok(file_probe(&stat, real_dir, name, key, id))
}

/// The probe of `name` in the directory whose real path is `real_dir`, from its `stat`
/// (its key `key`, fingerprint `id`); `None` when it is a link.
fn file_probe(
    stat: &rustix::fs::Stat,
    real_dir: &Path,
    name: &str,
    key: String,
    id: u128,
) -> Option<Probe> {
    (!is_symlink(stat)).then(|| Probe {
        real: real_dir.join(name),
        key,
        id,
        meta: Some(Meta::of_stat(stat)),
    })
}

/// What the walk found of a narinfo before taking it in order.
enum NarinfoFound {
    /// Its cache entry, which matches and names its NAR.
    Cached(Box<Cached>),
    /// Its bytes (or why they could not be read).
    Text(io::Result<Vec<u8>>),
    /// Neither: to be read.
    Unread,
}

/// Directory entries probed on the pool at a time (their results wait in memory).
const PROBE_CHUNK: usize = 2048;

struct Walker<'a> {
    mirror: PathBuf,
    opts: &'a WalkOptions<'a>,
    hasher: Hasher<'a>,
    writer: Option<&'a mut CacheWriter>,
    resolver: Resolver,
    /// The sources waiting to be hashed, and their fingerprints.
    batch: Vec<Source>,
    in_batch: FingerprintSet,
    /// Files taken from the cache since the last flush, and their entries when a cache file
    /// is written (each kept as it was).
    taken: u64,
    kept: Vec<(String, Box<Cached>)>,
    /// The root of every source hashed, by the fingerprint of its key.
    done: RootMap,
    releases: Vec<Release>,
    release_by_path: HashMap<PathBuf, Root>,
    warnings: Vec<String>,
    fixed: Vec<String>,
    sampler: Sampler,
    paths: Vec<(String, Cid, bool)>,
}

pub(super) fn join_key(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        let mut key = String::with_capacity(parent.len() + 1 + name.len());
        key.push_str(parent);
        if !parent.ends_with('/') {
            key.push('/');
        }
        key.push_str(name);
        key
    }
}

impl Walker<'_> {
    fn warn(&mut self, message: String) {
        tracing::warn!("{message}");
        self.warnings.push(message);
    }

    /// Warns that `link` leads nowhere (it is left out).
    fn warn_dangling(&mut self, link: &Path) {
        self.warn(format!(
            "{}: skipped: it is a link to nothing",
            link.display()
        ));
    }

    /// The entries of a directory, sorted by name, without hidden and non-UTF-8 names.
    fn list(&mut self, dir: &Path) -> Result<Vec<String>, PublishError> {
        Ok(self.list_typed(dir)?.into_iter().map(|(n, _)| n).collect())
    }

    /// [`Walker::list`], with each entry's type as the listing gives it (no call per entry
    /// where the file system records it).
    fn list_typed(
        &mut self,
        dir: &Path,
    ) -> Result<Vec<(String, Option<fs::FileType>)>, PublishError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_error(dir))? {
            let entry = entry.map_err(io_error(dir))?;
            match entry.file_name().into_string() {
                Ok(name) if name.starts_with('.') => {}
                Ok(name) => out.push((name, entry.file_type().ok())),
                Err(name) => self.warn(format!(
                    "{}: skipped: the name {name:?} is not UTF-8",
                    dir.display()
                )),
            }
        }
        out.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn prober(&self) -> Prober<'_> {
        Prober {
            mirror: &self.mirror,
            resolver: &self.resolver,
            done: &self.done,
            in_batch: &self.in_batch,
        }
    }

    /// Resolves `path` to a real file and returns its entry, adding it to the batch on first
    /// sight; `None` (with a warning) for a link that leads nowhere or to something else than
    /// a file.
    fn source(&mut self, path: &Path, narinfo: bool) -> Result<Option<Entry>, PublishError> {
        let probe = match self.resolver.resolve(path) {
            Ok((real, meta)) => self.prober().probe_of(real, Some(Meta::of(&meta))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn_dangling(path);
                return Ok(None);
            }
            Err(e) => return Err(io_error(path)(e)),
        };
        self.source_at(|| path.to_path_buf(), probe, narinfo, None, Lookup::NotDone)
    }

    /// The entries of the files `names` of `dir` (each `narinfo` or not), added to
    /// `entries` as [`Walker::source`] would add them one by one: the entries are resolved
    /// (and narinfos read) on the pool a chunk at a time, then taken in order; the files of
    /// the next chunk are probed while the walk takes this one.
    fn sources_into(
        &mut self,
        dir: &Path,
        names: &[(String, Option<fs::FileType>)],
        narinfo: bool,
        entries: &mut Vec<(String, Entry)>,
    ) -> Result<(), PublishError> {
        if names.is_empty() {
            return Ok(());
        }
        let dirfd = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_error(dir)(e.into()))?;
        let real_dir = self.resolver.real_dir(dir).map_err(io_error(dir))?;
        // The files of the next chunk are probed (and their cache entries looked up) on the
        // pool while the walk takes this one in order: that needs nothing of the walk's state.
        // The other entries (links) are probed when their chunk's turn comes.
        let pool = std::sync::Arc::clone(&self.hasher.pool);
        let mirror = self.mirror.clone();
        let cache = self.opts.cache;
        let options = self.opts.build.layout.add;
        let fd = dirfd.as_fd();
        std::thread::scope(|scope| {
            let (ahead_tx, ahead_rx) = std::sync::mpsc::sync_channel(1);
            let (real_dir, mirror) = (real_dir.as_path(), mirror.as_path());
            scope.spawn(move || {
                for chunk in names.chunks(PROBE_CHUNK) {
                    let ahead =
                        pool.install(|| probe_files(fd, real_dir, mirror, cache, options, chunk));
                    if ahead_tx.send(ahead).is_err() {
                        break;
                    }
                }
            });
            for chunk in names.chunks(PROBE_CHUNK) {
                let Ok(ahead) = ahead_rx.recv() else {
                    return Err(PublishError::Io {
                        path: dir.to_path_buf(),
                        source: io::Error::other("probing the directory's files stopped"),
                    });
                };
                self.chunk_into(dir, &dirfd, real_dir, chunk, ahead, narinfo, entries)?;
            }
            Ok(())
        })
    }

    /// [`Walker::sources_into`] for one chunk of names, whose files were probed ahead.
    #[allow(clippy::too_many_arguments)]
    fn chunk_into(
        &mut self,
        dir: &Path,
        dirfd: &rustix::fd::OwnedFd,
        real_dir: &Path,
        chunk: &[(String, Option<fs::FileType>)],
        ahead: Vec<Ahead>,
        narinfo: bool,
        entries: &mut Vec<(String, Entry)>,
    ) -> Result<(), PublishError> {
        let (probes, lookups): (Vec<Option<io::Result<Probe>>>, Vec<Lookup>) =
            ahead.into_iter().map(|a| (a.probe, a.lookup)).unzip();
        let probes: Vec<io::Result<Probe>> = {
            let prober = self.prober();
            let fd = dirfd.as_fd();
            self.hasher.pool.install(|| {
                chunk
                    .par_iter()
                    .zip(probes)
                    .map(|((name, file_type), probe)| match probe {
                        Some(probe) => probe,
                        None => prober.probe(fd, dir, real_dir, name, *file_type),
                    })
                    .collect()
            })
        };
        // A narinfo's lookup goes with what was found of it; a plain file's with its source.
        let (found, lookups) = if narinfo {
            (self.narinfo_texts(&probes, lookups), Vec::new())
        } else {
            (Vec::new(), lookups)
        };
        let mut found = found.into_iter();
        let mut lookups = lookups.into_iter();
        for ((name, _), probe) in chunk.iter().zip(probes) {
            let text = found.next().flatten();
            let lookup = lookups.next().unwrap_or(Lookup::NotDone);
            // Its path is made only for a message.
            let path = || dir.join(name);
            let probe = match probe {
                Ok(probe) => probe,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.warn_dangling(&path());
                    continue;
                }
                Err(e) => return Err(io_error(&path())(e)),
            };
            if let Some(e) = self.source_at(path, probe, narinfo, text, lookup)? {
                self.push(entries, name.clone(), e)?;
            }
        }
        Ok(())
    }

    /// The cache entry of narinfo `key` while it matches `stamp` and names a NAR.
    fn cached_nar(&self, key: &str, stamp: &FileStamp) -> Option<Cached> {
        self.opts
            .cache
            .file(key, stamp, self.opts.build.layout.add)
            .filter(|c| c.entry.dep.is_some())
    }

    /// For each probed narinfo that is new to the walk: its NAR as its cache entry names it
    /// while that entry matches (`lookups`, else looked up now), else its bytes, read on the
    /// pool.
    fn narinfo_texts(
        &self,
        probes: &[io::Result<Probe>],
        lookups: Vec<Lookup>,
    ) -> Vec<Option<NarinfoFound>> {
        let found: Vec<Option<NarinfoFound>> = probes
            .iter()
            .zip(lookups)
            .map(|(probe, lookup)| {
                let probe = probe.as_ref().ok()?;
                let meta = probe.meta?;
                if !meta.is_file || self.prober().known(probe.id) {
                    return None;
                }
                let cached = match lookup {
                    Lookup::Hit(c) => Some(c).filter(|c| c.entry.dep.is_some()),
                    Lookup::Miss => None,
                    Lookup::NotDone => self.cached_nar(&probe.key, &meta.stamp).map(Box::new),
                };
                cached
                    .map(NarinfoFound::Cached)
                    .or(Some(NarinfoFound::Unread))
            })
            .collect();
        self.hasher.pool.install(|| {
            found
                .into_par_iter()
                .zip(probes)
                .map(|(found, probe)| match (found, probe) {
                    (Some(NarinfoFound::Unread), Ok(probe)) => {
                        Some(NarinfoFound::Text(fs::read(&probe.real)))
                    }
                    (found, _) => found,
                })
                .collect()
        })
    }

    /// [`Walker::source`] of the path `path` makes, resolved as `probe`; a narinfo's bytes
    /// may have been read already (`found`), a file's cache entry looked up already
    /// (`lookup`).
    fn source_at(
        &mut self,
        path: impl FnOnce() -> PathBuf,
        probe: Probe,
        narinfo: bool,
        found: Option<NarinfoFound>,
        lookup: Lookup,
    ) -> Result<Option<Entry>, PublishError> {
        let Probe {
            real,
            key,
            id,
            meta,
        } = probe;
        if let Some(root) = self.done.get(&id) {
            return Ok(Some(Entry::File(root)));
        }
        if self.in_batch.contains(&id) {
            return Ok(Some(Entry::Pending(id)));
        }
        let meta = match meta {
            Some(meta) => meta,
            // Seen when probed, not any more: looked at again.
            None => Meta::of(&fs::metadata(&real).map_err(io_error(&real))?),
        };
        if !meta.is_file {
            self.warn(format!("{}: skipped: not a regular file", path().display()));
            return Ok(None);
        }
        // A file whose cache entry still describes it, and whose blocks nothing needs, is
        // taken as the entry says, without waiting for a batch.
        let lookup = match lookup {
            Lookup::Hit(cached)
                if !narinfo && cached.entry.dep.is_none() && !self.hasher.must_read(&cached) =>
            {
                return self.take_cached(key, id, cached)
            }
            lookup => lookup,
        };
        let found = match found {
            Some(NarinfoFound::Cached(cached))
                if narinfo && self.nar_as_cached(&cached) && !self.hasher.must_read(&cached) =>
            {
                return self.take_cached(key, id, cached)
            }
            found => found,
        };
        let stamp = meta.stamp;
        let (kind, cached) = if narinfo {
            match self.narinfo_nar(&key, &real, &stamp, found)? {
                Some((nar_key, nar, text, cached)) => {
                    let cached = cached.map_or(Lookup::Miss, Lookup::Hit);
                    (SourceKind::Narinfo { nar_key, nar, text }, cached)
                }
                None => return Ok(None),
            }
        } else {
            (SourceKind::Plain, lookup)
        };
        let real_path = (!is_at_key(&self.mirror, &key, &real)).then_some(real);
        self.in_batch.insert(id);
        self.batch.push(Source {
            key,
            id,
            real_path,
            stamp,
            kind,
            cached,
        });
        Ok(Some(Entry::Pending(id)))
    }

    /// Takes the file `key` (fingerprint `id`) as its cache entry `cached` says.
    fn take_cached(
        &mut self,
        key: String,
        id: u128,
        cached: Box<Cached>,
    ) -> Result<Option<Entry>, PublishError> {
        let root = Root::of(cached.entry.root, &key)?;
        self.done.insert(id, root);
        self.taken += 1;
        if self.writer.is_some() {
            self.kept.push((key, cached));
        }
        Ok(Some(Entry::File(root)))
    }

    /// Whether the NAR that the narinfo entry `cached` names is the one this walk hashed at
    /// the same key, with the same CID (then the narinfo's published bytes are as cached).
    fn nar_as_cached(&self, cached: &Cached) -> bool {
        cached.entry.dep.as_ref().is_some_and(|dep| {
            self.done
                .get(&fingerprint128(dep.key.as_bytes()))
                .is_some_and(|root| Some(root.cid) == ShortCid::of(&dep.cid))
        })
    }

    /// The NAR of a narinfo (its key and fingerprint, after adding it to the batch if it is
    /// new): from the cache entry while the narinfo is unchanged, else from its `URL` field
    /// (the narinfo read then, its bytes returned). What was found of it already is `found`.
    /// The narinfo's cache entry comes back too, when it matches.
    #[allow(clippy::type_complexity)]
    fn narinfo_nar(
        &mut self,
        key: &str,
        real: &Path,
        stamp: &FileStamp,
        found: Option<NarinfoFound>,
    ) -> Result<Option<(String, u128, Option<Vec<u8>>, Option<Box<Cached>>)>, PublishError> {
        let (cached, text) = match found {
            Some(NarinfoFound::Cached(cached)) => (Some(cached), None),
            Some(NarinfoFound::Text(text)) => (None, Some(text)),
            Some(NarinfoFound::Unread) | None => (self.cached_nar(key, stamp).map(Box::new), None),
        };
        let mut kept = None;
        let dep_key = cached
            .as_ref()
            .and_then(|c| c.entry.dep.as_ref())
            .map(|dep| dep.key.as_str());
        let nar_path = match dep_key {
            Some(dep) if Path::new(dep).is_absolute() => PathBuf::from(dep),
            Some(dep) => self.mirror.join(dep),
            None => {
                let text = match text {
                    Some(text) => text,
                    None => fs::read(real),
                }
                .map_err(io_error(real))?;
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
                let nar_path = real.parent().unwrap_or(Path::new("/")).join(&info.url);
                kept = Some(text);
                nar_path
            }
        };
        match self.prober().resolve(&nar_path) {
            Ok(probe) => {
                let nar_key = probe.key.clone();
                let nar = probe.id;
                Ok(self
                    .source_at(|| nar_path.clone(), probe, false, None, Lookup::NotDone)?
                    .map(|_| (nar_key, nar, kept, cached)))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn(format!(
                    "{}: skipped: its NAR {} is missing",
                    real.display(),
                    nar_path.display()
                ));
                Ok(None)
            }
            Err(e) => Err(io_error(&nar_path)(e)),
        }
    }

    /// Hashes the batch: its sources join the ones done, their cache entries go to the
    /// writer.
    fn flush(&mut self) -> Result<(), PublishError> {
        if self.taken > 0 {
            self.hasher
                .count_from_cache(std::mem::take(&mut self.taken));
        }
        if !self.kept.is_empty() {
            let kept = std::mem::take(&mut self.kept);
            if let Some(writer) = self.writer.as_deref_mut() {
                writer.keep(kept).map_err(|e| PublishError::Io {
                    path: "the cache of file CIDs (temporary file)".into(),
                    source: e,
                })?;
            }
        }
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut batch = std::mem::take(&mut self.batch);
        self.in_batch.clear();
        // In key order, the cache is read forward.
        batch.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let hashed = self.hasher.hash_batch(&mut batch, &mut self.done)?;
        if let Some(writer) = self.writer.as_deref_mut() {
            let entries = batch
                .into_iter()
                .zip(hashed)
                .map(|(source, h)| NextEntry {
                    key: source.key,
                    entry: h.entry,
                    on_node: h.on_node,
                    was: h.was,
                })
                .collect();
            writer.files(entries).map_err(|e| PublishError::Io {
                path: "the cache of file CIDs (temporary file)".into(),
                source: e,
            })?;
        }
        Ok(())
    }

    /// Adds an entry to `entries`, hashing the batch when it is full.
    fn push(
        &mut self,
        entries: &mut Vec<(String, Entry)>,
        name: String,
        entry: Entry,
    ) -> Result<(), PublishError> {
        entries.push((name, entry));
        if self.batch.len() >= BATCH || self.kept.len() >= BATCH {
            // Its entries stay pending until their directory is built.
            self.flush()?;
        }
        Ok(())
    }

    /// Builds the directory published at `key` from `entries` (hashing what waits first).
    fn dir(&mut self, key: &str, entries: Vec<(String, Entry)>) -> Result<Entry, PublishError> {
        self.flush()?;
        let mut entries = entries;
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut roots = Vec::with_capacity(entries.len());
        let mut kinds = Vec::with_capacity(entries.len());
        for (name, entry) in entries {
            let (root, is_dir) = match entry {
                Entry::Pending(id) => match self.done.get(&id) {
                    Some(root) => (root, false),
                    None => {
                        return Err(PublishError::Io {
                            path: self.mirror.join(key).join(&name),
                            source: io::Error::other("the file was not hashed"),
                        })
                    }
                },
                Entry::File(root) => (root, false),
                Entry::Dir(root) => (root, true),
            };
            roots.push((name, root));
            kinds.push(is_dir);
        }
        for ((name, root), is_dir) in roots.iter().zip(kinds) {
            let path = join_key(key, name);
            let cid = root.cid.cid();
            if self.opts.record_paths {
                self.paths.push((path.clone(), cid, is_dir));
            }
            if is_dir {
                self.sampler.dir(&path, cid);
            } else {
                self.sampler.file(&path, cid);
            }
        }
        // Listed as when it was recorded: the same CID, built only when its blocks are needed.
        let listing = listing_digest(&roots);
        let added = match self.opts.cache.dir_listed(key, &listing) {
            Some(added) if !self.hasher.must_build(&added.cid) => {
                self.hasher.count_dir_from_cache();
                added
            }
            _ => self.hasher.directory(key, roots)?,
        };
        if let Some(writer) = self.writer.as_deref_mut() {
            let dir = CachedDir {
                added,
                on_node: false,
                listing: Some(listing),
            };
            writer.dir(key.to_string(), dir);
        }
        Ok(Entry::Dir(Root::of(added, key)?))
    }

    /// A binary cache directory: the global one or a release's view. Its `nar` directory
    /// comes first, so that its narinfos find their NARs hashed.
    fn binary_cache(&mut self, dir: &Path, key: &str) -> Result<Entry, PublishError> {
        let names = self.list_typed(dir)?;
        let mut entries = Vec::new();
        let nar_path = dir.join("nar");
        if names.iter().any(|(n, _)| n == "nar") && nar_path.is_dir() {
            let nar_names = self.list_typed(&nar_path)?;
            let mut nars = Vec::new();
            self.sources_into(&nar_path, &nar_names, false, &mut nars)?;
            let nar_dir = self.dir(&join_key(key, "nar"), nars)?;
            self.push(&mut entries, "nar".to_string(), nar_dir)?;
        }
        let (info, narinfos): (Vec<_>, Vec<_>) = names
            .into_iter()
            .filter(|(n, _)| n == "nix-cache-info" || n.ends_with(".narinfo"))
            .partition(|(n, _)| n == "nix-cache-info");
        self.sources_into(dir, &info, false, &mut entries)?;
        self.sources_into(dir, &narinfos, true, &mut entries)?;
        self.dir(key, entries)
    }

    /// A release directory, or `None` when it is not complete.
    fn release(&mut self, dir: &Path, key: &str) -> Result<Option<Entry>, PublishError> {
        let real = match fs::canonicalize(dir) {
            Ok(real) => real,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.warn_dangling(dir);
                return Ok(None);
            }
            Err(e) => return Err(io_error(dir)(e)),
        };
        if let Some(root) = self.release_by_path.get(&real) {
            return Ok(Some(Entry::Dir(*root)));
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
        let root = match self.trusted_ipfs_hash(&real, key) {
            Some(root) => {
                self.fixed.push(key.to_string());
                if let Some(writer) = self.writer.as_deref_mut() {
                    writer
                        .keep_under(self.opts.cache, key)
                        .map_err(|e| PublishError::Io {
                            path: "the cache of file CIDs".into(),
                            source: e,
                        })?;
                }
                root
            }
            None => {
                let mut entries = Vec::new();
                for name in self.list(&real)? {
                    if name == IPFS_HASH_FILE {
                        continue;
                    }
                    let path = real.join(&name);
                    if name == "binary_cache" && path.is_dir() {
                        let view = self.binary_cache(&path, &join_key(key, &name))?;
                        self.push(&mut entries, name, view)?;
                    } else if path.is_file() {
                        if let Some(e) = self.source(&path, false)? {
                            self.push(&mut entries, name, e)?;
                        }
                    }
                }
                match self.dir(key, entries)? {
                    Entry::Dir(root) => root,
                    _ => unreachable!("a directory's entry"),
                }
            }
        };
        self.release_by_path.insert(real.clone(), root);
        self.releases.push(Release {
            key: key.to_string(),
            path: real,
            root: root.added(),
        });
        Ok(Some(Entry::Dir(root)))
    }

    fn trusted_ipfs_hash(&self, real: &Path, key: &str) -> Option<Root> {
        let text = fs::read_to_string(real.join(IPFS_HASH_FILE)).ok()?;
        let cid = Cid::parse(text.trim()).ok()?;
        let known = self.opts.cache.dir(key)?;
        let trusted = known.cid == cid
            && cid.version() == self.opts.build.layout.add.cid_version
            && (self.opts.trust_release)(&cid);
        let short = ShortCid::of(&cid)?;
        trusted.then_some(Root {
            cid: short,
            tsize: known.tsize,
        })
    }

    /// A directory of entries that are each a directory or nothing.
    fn dirs_of(
        &mut self,
        key: &str,
        children: Vec<(String, Option<Entry>)>,
    ) -> Result<Option<Entry>, PublishError> {
        let entries: Vec<(String, Entry)> = children
            .into_iter()
            .filter_map(|(name, e)| e.map(|e| (name, e)))
            .collect();
        if entries.is_empty() {
            return Ok(None);
        }
        self.dir(key, entries).map(Some)
    }
}

/// Walks the mirror in `mirror`, hashing its files and building its directories as it goes
/// (see the module documentation); every block goes to `router`, the cache entries to
/// `writer`. Files are hashed on a pool of `concurrency` threads (at most 64) while the
/// calling thread waits: call it from a blocking context.
pub fn walk(
    mirror: &Path,
    opts: &WalkOptions<'_>,
    router: &Router,
    writer: Option<&mut CacheWriter>,
) -> Result<Walked, PublishError> {
    let real = fs::canonicalize(mirror).map_err(io_error(mirror))?;
    let threads = opts.build.concurrency.clamp(1, 64);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("nixipfs-hash-{i}"))
        .build()
        .map_err(PublishError::Threads)?;
    let mut w = Walker {
        mirror: real.clone(),
        opts,
        hasher: Hasher {
            mirror: &real,
            cache: opts.cache,
            router,
            opts: opts.build,
            pool: std::sync::Arc::new(pool),
            phase: Phase::new("Hashing files", Unit::Bytes, 0),
            stats: std::sync::Mutex::new(HashStats::default()),
            dirs_delivered: std::sync::Mutex::new(HashSet::new()),
        },
        writer,
        resolver: Resolver::new(),
        batch: Vec::new(),
        in_batch: FingerprintSet::default(),
        taken: 0,
        kept: Vec::new(),
        done: RootMap::default(),
        releases: Vec::new(),
        release_by_path: HashMap::new(),
        warnings: Vec::new(),
        fixed: Vec::new(),
        sampler: Sampler::new(opts.verify_files),
        paths: Vec::new(),
    };
    let mut root = Vec::new();
    let cache_dir = real.join("binary_cache");
    if cache_dir.is_dir() {
        let entry = w.binary_cache(&cache_dir, "binary_cache")?;
        root.push(("binary_cache".to_string(), entry));
    } else {
        w.warn(format!("{}: there is no binary cache", cache_dir.display()));
    }
    let releases_dir = real.join("releases");
    if releases_dir.is_dir() {
        let mut channels = Vec::new();
        for channel in w.list(&releases_dir)? {
            let channel_path = releases_dir.join(&channel);
            if !channel_path.is_dir() {
                continue;
            }
            let channel_key = format!("releases/{channel}");
            let mut releases = Vec::new();
            for name in w.list(&channel_path)? {
                let entry = w.release(&channel_path.join(&name), &join_key(&channel_key, &name))?;
                releases.push((name, entry));
            }
            let entry = w.dirs_of(&channel_key, releases)?;
            channels.push((channel, entry));
        }
        if let Some(entry) = w.dirs_of("releases", channels)? {
            root.push(("releases".to_string(), entry));
        }
    }
    let channels_dir = real.join("channels");
    if channels_dir.is_dir() {
        let mut channels = Vec::new();
        for channel in w.list(&channels_dir)? {
            let entry = w.release(&channels_dir.join(&channel), &format!("channels/{channel}"))?;
            channels.push((channel, entry));
        }
        if let Some(entry) = w.dirs_of("channels", channels)? {
            root.push(("channels".to_string(), entry));
        }
    }
    // Source tarballs, as tarballs.nixos.org lays them out: each algorithm's directory, whose
    // links lead to the files under `sha512/` (each hashed once; `sha512/` first, so that the
    // links find their files hashed).
    let tarballs_dir = real.join("tarballs");
    if tarballs_dir.is_dir() {
        let mut algos = Vec::new();
        for algo in ["sha512", "md5", "sha1", "sha256"] {
            let algo_dir = tarballs_dir.join(algo);
            if !algo_dir.is_dir() {
                continue;
            }
            let mut files = Vec::new();
            let names = w.list_typed(&algo_dir)?;
            w.sources_into(&algo_dir, &names, false, &mut files)?;
            let entry = if files.is_empty() {
                None
            } else {
                Some(w.dir(&format!("tarballs/{algo}"), files)?)
            };
            algos.push((algo.to_string(), entry));
        }
        if let Some(entry) = w.dirs_of("tarballs", algos)? {
            root.push(("tarballs".to_string(), entry));
        }
    }
    let root = match w.dir("", root)? {
        Entry::Dir(root) => root.added(),
        _ => unreachable!("a directory's entry"),
    };
    w.hasher.phase.finish();
    let stats = w
        .hasher
        .stats
        .into_inner()
        .unwrap_or_else(|p| p.into_inner());
    Ok(Walked {
        mirror: real.clone(),
        root,
        releases: w.releases,
        warnings: w.warnings,
        fixed_releases: w.fixed,
        sample: w.sampler.finish(),
        paths: w.paths,
        stats,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::publish::fixtures::{build_to_car, small_mirror};

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
        let s = Resolver::new();
        let (done, in_batch) = (RootMap::default(), FingerprintSet::default());
        let prober = Prober {
            mirror: &root,
            resolver: &s,
            done: &done,
            in_batch: &in_batch,
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
            // The same, relative to the open directory, with the type the listing gives.
            let dir = path.parent().unwrap();
            let file_name = path.file_name().unwrap().to_str().unwrap();
            let probed = rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty())
                .map_err(io::Error::from)
                .and_then(|fd| {
                    let file_type = fs::symlink_metadata(&path).map(|m| m.file_type()).ok();
                    let real_dir = fs::canonicalize(dir)?;
                    prober.probe(fd.as_fd(), dir, &real_dir, file_name, file_type)
                })
                .map(|p| {
                    let meta = p.meta.unwrap();
                    (p.real, meta.is_file, meta.stamp.inode)
                });
            for got in [got, probed] {
                match (&expected, &got) {
                    (Ok(e), Ok(g)) => assert_eq!(e, g, "{name}"),
                    (Err(e), Err(g)) => assert_eq!(e.kind(), g.kind(), "{name}"),
                    _ => panic!("{name}: {expected:?} against {got:?}"),
                }
            }
        }
    }

    #[test]
    fn the_tarball_tree_is_published_with_each_file_once() {
        let dir = tempfile::tempdir().unwrap();
        small_mirror(dir.path());
        let t = dir.path().join("tarballs");
        fs::create_dir_all(t.join("sha512")).unwrap();
        fs::create_dir_all(t.join("sha256")).unwrap();
        fs::write(t.join("sha512/abcd"), b"source").unwrap();
        std::os::unix::fs::symlink("../sha512/abcd", t.join("sha256/ef01")).unwrap();
        fs::write(t.join("lastsync"), b"1").unwrap();
        fs::create_dir_all(dir.path().join(".staging/tarballs/sha256")).unwrap();
        fs::write(dir.path().join(".staging/tarballs/sha256/99"), b"x").unwrap();
        let out = tempfile::tempdir().unwrap();
        let (walked, _) = build_to_car(dir.path(), &FileCache::new(), &out.path().join("m.car"));
        let tarballs: Vec<(&str, bool)> = walked
            .paths
            .iter()
            .filter(|(p, _, _)| p.starts_with("tarballs"))
            .map(|(p, _, d)| (p.as_str(), *d))
            .collect();
        assert_eq!(
            tarballs,
            [
                ("tarballs/sha512/abcd", false),
                ("tarballs/sha256/ef01", false),
                ("tarballs/sha256", true),
                ("tarballs/sha512", true),
                ("tarballs", true),
            ]
        );
        let cid = |p: &str| walked.paths.iter().find(|(q, _, _)| q == p).unwrap().1;
        assert_eq!(cid("tarballs/sha512/abcd"), cid("tarballs/sha256/ef01"));
        // 9 files of the small mirror and one tarball: the link is not hashed again.
        assert_eq!(walked.stats.files, 10);
        assert_eq!(walked.stats.files_read, 10);
    }

    #[test]
    fn the_walk_takes_the_published_files_only() {
        let dir = tempfile::tempdir().unwrap();
        small_mirror(dir.path());
        let out = tempfile::tempdir().unwrap();
        let (walked, _) = build_to_car(dir.path(), &FileCache::new(), &out.path().join("m.car"));
        let rel = "releases/nixos-24.05/nixos-24.05.1.abc";
        let mut paths: Vec<&str> = walked.paths.iter().map(|(p, _, _)| p.as_str()).collect();
        paths.sort();
        let expected = [
            "binary_cache".to_string(),
            "binary_cache/nar".into(),
            "binary_cache/nar/a.nar.xz".into(),
            "binary_cache/nar/b.nar.xz".into(),
            "binary_cache/nix-cache-info".into(),
            "binary_cache/r29rfw7xvs9kc6lxma5aqdqbci3af4vg.narinfo".into(),
            "binary_cache/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo".into(),
            "channels".into(),
            "channels/nixos-24.05".into(),
            "releases".into(),
            "releases/nixos-24.05".into(),
            rel.to_string(),
            format!("{rel}/binary_cache"),
            format!("{rel}/binary_cache/nar"),
            format!("{rel}/binary_cache/nar/a.nar.xz"),
            format!("{rel}/binary_cache/nix-cache-info"),
            format!("{rel}/binary_cache/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo"),
            format!("{rel}/git-revision"),
            format!("{rel}/nixexprs.tar.xz"),
            format!("{rel}/src-url"),
        ];
        assert_eq!(
            paths,
            expected.iter().map(String::as_str).collect::<Vec<_>>()
        );
        // 9 files: the release's view shares the global NAR and narinfo.
        assert_eq!(walked.stats.files, 9);
        assert_eq!(walked.releases.len(), 1);
        let warnings = walked.warnings.join("\n");
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
        let cid = |p: &str| walked.paths.iter().find(|(q, _, _)| q == p).unwrap().1;
        assert_eq!(cid("channels/nixos-24.05"), cid(rel));
        assert_eq!(walked.releases[0].root.cid, cid(rel));
    }

    /// More files than a batch, in the global cache and a release's view: every file once,
    /// the same roots as with one batch per directory.
    #[test]
    fn batches_give_the_same_dag() {
        let dir = tempfile::tempdir().unwrap();
        small_mirror(dir.path());
        let nar_dir = dir.path().join("binary_cache/nar");
        let view = dir
            .path()
            .join("releases/nixos-24.05/nixos-24.05.1.abc/binary_cache/nar");
        let n = BATCH + BATCH / 2;
        for i in 0..n {
            fs::write(nar_dir.join(format!("f{i:05}.nar")), i.to_string()).unwrap();
            if i % 3 == 0 {
                std::os::unix::fs::symlink(
                    format!("../../../../../binary_cache/nar/f{i:05}.nar"),
                    view.join(format!("f{i:05}.nar")),
                )
                .unwrap();
            }
        }
        let out = tempfile::tempdir().unwrap();
        let (walked, _) = build_to_car(dir.path(), &FileCache::new(), &out.path().join("m.car"));
        assert_eq!(walked.stats.files, 9 + n as u64);
        assert_eq!(walked.stats.files_read, 9 + n as u64);
        // Each directory alone, as DirectoryBuilder makes it from the files' CIDs.
        let layout = crate::ipfs::profile::Profile::LegacyRawV0.layout();
        let hash = |data: &[u8]| {
            let file = layout
                .file_hasher()
                .add(data, &mut |_: &Cid, _: &[u8]| Ok(()))
                .unwrap();
            (file.cid, file.tsize)
        };
        let mut global = layout.directory();
        let mut in_view = layout.directory();
        for (name, data) in [
            ("a.nar.xz", vec![7u8; 300_000]),
            ("b.nar.xz", b"nar b".to_vec()),
        ] {
            let (cid, tsize) = hash(&data);
            global.add(name, cid, tsize).unwrap();
            if name == "a.nar.xz" {
                in_view.add(name, cid, tsize).unwrap();
            }
        }
        for i in 0..n {
            let (cid, tsize) = hash(i.to_string().as_bytes());
            global.add(&format!("f{i:05}.nar"), cid, tsize).unwrap();
            if i % 3 == 0 {
                in_view.add(&format!("f{i:05}.nar"), cid, tsize).unwrap();
            }
        }
        let none = &mut |_: &Cid, _: &[u8]| Ok(());
        let cid = |p: &str| walked.paths.iter().find(|(q, _, _)| q == p).unwrap().1;
        assert_eq!(cid("binary_cache/nar"), global.build(none).unwrap().cid);
        assert_eq!(
            cid("releases/nixos-24.05/nixos-24.05.1.abc/binary_cache/nar"),
            in_view.build(none).unwrap().cid
        );
    }

    #[test]
    fn the_cache_spares_reading_and_gives_the_same_dag() {
        use crate::ipfs::file_cache::CacheWriter;
        use crate::ipfs::publish::fixtures::walk_mirror;
        let dir = tempfile::tempdir().unwrap();
        small_mirror(dir.path());
        let out = tempfile::tempdir().unwrap();
        let path = out.path().join("ipfs_hashes");
        let legacy = crate::ipfs::profile::Profile::LegacyRawV0
            .layout()
            .descriptor();
        let run = |cache: &FileCache| {
            let mut writer = CacheWriter::new(out.path(), Some(&legacy), None).unwrap();
            let (walked, _) = walk_mirror(dir.path(), cache, None, Some(&mut writer));
            writer.finish(&path, None, false).unwrap();
            walked
        };
        let first = run(&FileCache::new());
        assert_eq!(first.stats.files_read, 9);
        let (cache, _) = FileCache::load(&path, &legacy).unwrap();
        assert_eq!(cache.file_count(), 9);
        let before = fs::read(&path).unwrap();
        let second = run(&cache);
        assert_eq!(second.root, first.root);
        assert_eq!(second.stats.files_read, 0);
        assert_eq!(second.stats.files_from_cache, 9);
        // Every directory is listed as recorded: none is built again.
        assert!(first.stats.dirs_built > 3, "{:?}", first.stats);
        assert_eq!(first.stats.dirs_from_cache, 0);
        assert_eq!(second.stats.dirs_built, 0);
        assert_eq!(second.stats.dirs_from_cache, first.stats.dirs_built);
        // Every entry taken from the cache is kept as it was.
        assert_eq!(fs::read(&path).unwrap(), before);

        // A NAR that changes changes its narinfo's published bytes too.
        let (cache, _) = FileCache::load(&path, &legacy).unwrap();
        fs::write(
            dir.path().join("binary_cache/nar/b.nar.xz"),
            b"nar b, rebuilt",
        )
        .unwrap();
        let third = run(&cache);
        assert_eq!(third.stats.files_read, 2, "the NAR and its narinfo");
        assert_ne!(third.root, first.root);
        // The directories that hold them are built again, the others not.
        assert!(third.stats.dirs_built >= 3, "{:?}", third.stats);
        assert!(third.stats.dirs_from_cache > 0, "{:?}", third.stats);
        // A CAR file needs every block: every file is read, with the same roots.
        let (cache, _) = FileCache::load(&path, &legacy).unwrap();
        let car = out.path().join("m.car");
        let (fourth, stats) = walk_mirror(dir.path(), &cache, Some(&car), None);
        assert_eq!((fourth.root, fourth.stats.files_read), (third.root, 9));
        assert_eq!(
            fourth.stats.dirs_from_cache, 0,
            "a CAR file needs every directory"
        );
        let bytes = fs::read(&car).unwrap();
        let mut reader = crate::ipfs::car::CarReader::new(&bytes[..]).unwrap();
        let mut blocks = 0;
        while let Some((cid, block)) = reader.next_block().unwrap() {
            assert_eq!(cid.verify(&block), Some(true));
            blocks += 1;
        }
        assert_eq!(blocks, stats.car_file_blocks);
    }
}
