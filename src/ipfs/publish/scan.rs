//! Scanning the mirror: what is published, found on disk with every symlink resolved, as a
//! [`MirrorTree`] of sources (files, each once) and directories (children before parents).
//!
//! A file reached through several links (a NAR in the global cache and in each release's view)
//! is one source, keyed by its real path relative to the mirror. Directories are resolved once
//! each and remembered, so the tens of thousands of links of the release views cost a few
//! system calls each. A release whose `ipfs_hash` the cache and the node vouch for is taken by
//! its CID, without looking inside.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::{io_error, PublishError, IPFS_HASH_FILE};
use crate::ipfs::cid::Cid;
use crate::ipfs::file_cache::{FileCache, FileStamp};
use crate::ipfs::profile::Layout;
use crate::ipfs::unixfs::Added;
use crate::narinfo::NarInfo;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// A source file ([`MirrorTree::sources`] index).
    File(usize),
    /// A directory ([`MirrorTree::dirs`] index).
    Dir(usize),
    /// A directory taken as it is, by CID (a release with a trusted `ipfs_hash`): its
    /// [`MirrorTree::fixed`] index (an index keeps every entry small).
    Fixed(usize),
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
    /// Its real path when that is not the mirror joined with `key` (a name that is not
    /// UTF-8); see [`Source::path`].
    pub real_path: Option<PathBuf>,
    /// Size, time and inode when scanned.
    pub stamp: FileStamp,
    /// How its published bytes are made.
    pub kind: SourceKind,
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
    /// The CIDs and sizes of the directories taken as they are ([`Entry::Fixed`]).
    pub fixed: Vec<Added>,
}

/// What [`MirrorTree::scan`] needs to know.
pub struct ScanOptions<'a> {
    /// The import parameters (a cache entry for other options is not used).
    pub layout: Layout,
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
    /// Sources by inode number, and by key those whose inode another source has already
    /// (a hard link): a key is not kept twice.
    by_inode: HashMap<u64, usize>,
    by_key: HashMap<String, usize>,
    dirs: Vec<Dir>,
    releases: Vec<Release>,
    release_by_path: HashMap<PathBuf, Entry>,
    /// Directories resolved so far (see [`Scanner::resolve`]).
    real_dirs: HashMap<PathBuf, PathBuf>,
    warnings: Vec<String>,
    fixed: Vec<String>,
    fixed_roots: Vec<Added>,
}

pub(super) fn join_key(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

impl<'a> Scanner<'a> {
    /// A scanner of the mirror whose real path is `mirror`, nothing seen yet.
    fn new(mirror: PathBuf, opts: &'a ScanOptions<'a>) -> Scanner<'a> {
        Scanner {
            mirror,
            opts,
            sources: Vec::new(),
            by_inode: HashMap::new(),
            by_key: HashMap::new(),
            dirs: Vec::new(),
            releases: Vec::new(),
            release_by_path: HashMap::new(),
            real_dirs: HashMap::new(),
            warnings: Vec::new(),
            fixed: Vec::new(),
            fixed_roots: Vec::new(),
        }
    }

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
                self.warn_dangling(path);
                return Ok(None);
            }
            Err(e) => return Err(io_error(path)(e)),
        };
        self.source_at(path, real, meta, narinfo)
    }

    /// [`Scanner::source`] of `path`, resolved to `real` whose metadata is `meta`.
    fn source_at(
        &mut self,
        path: &Path,
        real: PathBuf,
        meta: fs::Metadata,
        narinfo: bool,
    ) -> Result<Option<usize>, PublishError> {
        let key = self.key_of(&real);
        if let Some(i) = self.known_source(&key, meta.ino()) {
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
        if let Some(j) = self.by_inode.insert(stamp.inode, i) {
            // Keep the first source of this inode where it was; this one goes by its key.
            self.by_inode.insert(stamp.inode, j);
            self.by_key.insert(key.clone(), i);
        }
        let real_path = (self.mirror.join(&key) != real).then_some(real);
        self.sources.push(Source {
            key,
            real_path,
            stamp,
            kind,
        });
        Ok(Some(i))
    }

    /// The source of `key`, whose inode number is `inode`, if it was seen already.
    fn known_source(&self, key: &str, inode: u64) -> Option<usize> {
        self.by_inode
            .get(&inode)
            .copied()
            .filter(|&i| self.sources[i].key == key)
            .or_else(|| self.by_key.get(key).copied())
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
            .file(key, stamp, self.opts.layout.add)
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
        match self.resolve(&nar_path) {
            Ok((nar_real, meta)) => self.source_at(&nar_path, nar_real, meta, false),
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
                self.warn_dangling(dir);
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
                self.fixed_roots.push(added);
                Entry::Fixed(self.fixed_roots.len() - 1)
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
            && cid.version() == self.opts.layout.add.cid_version
            && (self.opts.trust_release)(&cid))
        .then_some(known)
    }
}

impl MirrorTree {
    /// Looks at the mirror in `mirror` (see the module documentation for what is taken).
    pub fn scan(mirror: &Path, opts: &ScanOptions<'_>) -> Result<MirrorTree, PublishError> {
        let real = fs::canonicalize(mirror).map_err(io_error(mirror))?;
        let mut s = Scanner::new(real.clone(), opts);
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
        // Source tarballs, as tarballs.nixos.org lays them out: each algorithm's directory,
        // whose links lead to the files under `sha512/` (each hashed once).
        let tarballs_dir = real.join("tarballs");
        if tarballs_dir.is_dir() {
            let mut algos = BTreeMap::new();
            for algo in ["md5", "sha1", "sha256", "sha512"] {
                let algo_dir = tarballs_dir.join(algo);
                if !algo_dir.is_dir() {
                    continue;
                }
                let mut files = BTreeMap::new();
                for (name, path) in s.list(&algo_dir)? {
                    if let Some(i) = s.source(&path, false)? {
                        files.insert(name, Entry::File(i));
                    }
                }
                if !files.is_empty() {
                    let key = format!("tarballs/{algo}");
                    algos.insert(algo.to_string(), s.push_dir(key, files));
                }
            }
            if !algos.is_empty() {
                root.insert("tarballs".to_string(), s.push_dir("tarballs".into(), algos));
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
            fixed: s.fixed_roots,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::publish::fixtures::{small_mirror, trust_none};

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
            layout: crate::ipfs::profile::Profile::LegacyRawV0.layout(),
            cache: &cache,
            trust_release: &trust_none,
        };
        let mut s = Scanner::new(root.clone(), &opts);
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
    fn scan_publishes_the_tarball_tree_with_each_file_once() {
        let dir = tempfile::tempdir().unwrap();
        small_mirror(dir.path());
        let t = dir.path().join("tarballs");
        std::fs::create_dir_all(t.join("sha512")).unwrap();
        std::fs::create_dir_all(t.join("sha256")).unwrap();
        std::fs::write(t.join("sha512/abcd"), b"source").unwrap();
        std::os::unix::fs::symlink("../sha512/abcd", t.join("sha256/ef01")).unwrap();
        std::fs::write(t.join("lastsync"), b"1").unwrap();
        std::fs::create_dir_all(dir.path().join(".staging/tarballs/sha256")).unwrap();
        std::fs::write(dir.path().join(".staging/tarballs/sha256/99"), b"x").unwrap();
        let cache = FileCache::new();
        let opts = ScanOptions {
            layout: crate::ipfs::profile::Profile::LegacyRawV0.layout(),
            cache: &cache,
            trust_release: &trust_none,
        };
        let tree = MirrorTree::scan(dir.path(), &opts).unwrap();
        let keys: Vec<&str> = tree
            .sources
            .iter()
            .map(|s| s.key.as_str())
            .filter(|k| k.contains("tarballs"))
            .collect();
        assert_eq!(keys, ["tarballs/sha512/abcd"]);
        let dirs: Vec<&str> = tree
            .dirs
            .iter()
            .map(|d| d.key.as_str())
            .filter(|k| k.contains("tarballs"))
            .collect();
        assert_eq!(dirs, ["tarballs/sha256", "tarballs/sha512", "tarballs"]);
    }

    #[test]
    fn scan_takes_the_published_files_only() {
        let dir = tempfile::tempdir().unwrap();
        small_mirror(dir.path());
        let cache = FileCache::new();
        let opts = ScanOptions {
            layout: crate::ipfs::profile::Profile::LegacyRawV0.layout(),
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
}
