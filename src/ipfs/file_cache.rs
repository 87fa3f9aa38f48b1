//! The cache of CIDs across runs, kept in `D/ipfs_hashes`: what each file hashed to, and which
//! DAGs the IPFS node is known to hold.
//!
//! A file entry is trusted only while the file's size, modification time (to the nanosecond)
//! and inode number are those recorded, and the add options (CID version, raw leaves) are the
//! same; a narinfo entry also names the NAR whose CID went into its `IPFSHash` line, and is
//! trusted only while that NAR still has that CID. Anything else makes the file be hashed
//! again. Directory entries remember the CID and cumulative size of published directories
//! (what a release's `ipfs_hash` file alone cannot tell).
//!
//! The whole cache is for one import layout ([`crate::ipfs::profile::Layout::descriptor`]): a
//! cache made with another layout is not used but replaced, so that switching profiles hashes
//! every file again once and never mixes CIDs of two layouts. A cache without a `layout` line
//! was made before profiles existed, with the layout of `legacy-raw-v0` (at CID version 0 or 1).
//!
//! "On the node" marks are kept for one node (by peer ID): a CID is marked once a root whose
//! DAG contains it has been imported and pinned there, so its whole DAG is on that node. A
//! run against another node starts with no marks.
//!
//! The file is text, written atomically; a line per entry, the key last (escaped with `%XX`
//! for `%`, whitespace and control characters):
//! ```text
//! nixipfs-ipfs-hashes 1
//! layout v0-raw-262144-174-kubo
//! node 12D3KooW…
//! f SIZE MTIME_SEC MTIME_NSEC INODE CID_VERSION RAW_LEAVES CID TSIZE ON_NODE DEP_CID DEP_KEY KEY
//! d CID TSIZE ON_NODE KEY
//! ```
//! (`DEP_CID` and `DEP_KEY` are `-` for files that depend on nothing.) The original scripts'
//! `NAME:CID` file carries no size or time, so it is not trusted: it is replaced.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::cid::{Cid, CidSet};
use super::unixfs::{AddOptions, Added};

/// Name of the cache file in the mirror directory.
pub const CACHE_FILE: &str = "ipfs_hashes";

const HEADER: &str = "nixipfs-ipfs-hashes 1";

/// The layouts of caches without a `layout` line: `legacy-raw-v0` at CID version 0 or 1.
const LEGACY_LAYOUTS: [&str; 2] = ["v0-raw-262144-174-kubo", "v1-raw-262144-174-kubo"];

/// What identifies one version of a file on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FileStamp {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds since the epoch.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds within the second.
    pub mtime_nsec: u32,
    /// Inode number (a file replaced by rename gets a new one).
    pub inode: u64,
}

impl FileStamp {
    /// The stamp of a file from its metadata.
    pub fn of(meta: &fs::Metadata) -> FileStamp {
        FileStamp {
            size: meta.len(),
            mtime_sec: meta.mtime(),
            mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            inode: meta.ino(),
        }
    }
}

/// A file whose content another file's published form depends on (the NAR of a narinfo).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dependency {
    /// Its key (path relative to the mirror).
    pub key: String,
    /// Its CID when the entry was made.
    pub cid: Cid,
}

/// What a file hashed to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    /// The file as it was hashed.
    pub stamp: FileStamp,
    /// The options it was hashed with.
    pub options: AddOptions,
    /// Root CID and cumulative size of its DAG (of the published bytes, which for a narinfo
    /// include the `IPFSHash` line).
    pub root: Added,
    /// What the published bytes also depend on.
    pub dep: Option<Dependency>,
}

/// How [`FileCache::load`] found the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadOutcome {
    /// No cache file: everything is hashed.
    Missing,
    /// Read: this many file and directory entries.
    Loaded {
        /// File entries.
        files: usize,
        /// Directory entries.
        dirs: usize,
    },
    /// The original scripts' `NAME:CID` format, or a damaged file: not used (it is replaced
    /// at the end of the run).
    Ignored {
        /// Why.
        reason: String,
    },
}

/// The cache (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileCache {
    /// File entries sorted by key, each key once (a sorted list takes a third of the memory
    /// of a hash map of the same entries, and the file is written in this order).
    files: Vec<(String, FileEntry)>,
    dirs: HashMap<String, Added>,
    node: Option<String>,
    on_node: CidSet,
    layout: Option<String>,
}

pub(crate) fn escape(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for c in key.chars() {
        if c == '%' || c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

pub(crate) fn unescape(text: &str) -> Option<String> {
    if text == "%00" {
        return Some(String::new());
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn flag(text: &str) -> Option<bool> {
    match text {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

impl FileCache {
    /// An empty cache.
    pub fn new() -> FileCache {
        FileCache::default()
    }

    /// An empty cache for the import layout `layout` (a descriptor).
    pub fn for_layout(layout: &str) -> FileCache {
        FileCache {
            layout: Some(layout.to_string()),
            ..FileCache::default()
        }
    }

    /// Reads `path` for the import layout `layout` (a descriptor). A missing file gives an
    /// empty cache; a file in another format, with a damaged line or made with another layout
    /// gives an empty cache and [`LoadOutcome::Ignored`]. Only a read error fails.
    pub fn load(path: &Path, layout: &str) -> io::Result<(FileCache, LoadOutcome)> {
        use io::BufRead;
        let file = match fs::File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok((FileCache::for_layout(layout), LoadOutcome::Missing))
            }
            Err(e) => return Err(e),
        };
        let ignored = |reason: String| {
            Ok((
                FileCache::for_layout(layout),
                LoadOutcome::Ignored { reason },
            ))
        };
        // Read line by line: the file is as long as the mirror has files.
        let mut reader = io::BufReader::with_capacity(1 << 16, file);
        let mut buf = String::new();
        let mut next_line = |buf: &mut String| -> io::Result<Option<()>> {
            buf.clear();
            match reader.read_line(buf) {
                Ok(0) => Ok(None),
                Ok(_) => {
                    if buf.ends_with('\n') {
                        buf.pop();
                        if buf.ends_with('\r') {
                            buf.pop();
                        }
                    }
                    Ok(Some(()))
                }
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    Err(io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))
                }
                Err(e) => Err(e),
            }
        };
        let not_utf8 = |e: &io::Error| e.kind() == io::ErrorKind::InvalidData;
        match next_line(&mut buf) {
            Ok(Some(())) if buf == HEADER => {}
            Ok(Some(())) if buf.contains(':') => {
                return ignored(
                    "NAME:CID lines of the original scripts (no size or time to check them by)"
                        .to_string(),
                )
            }
            Ok(_) => return ignored(format!("the first line is not {HEADER:?}")),
            Err(e) if not_utf8(&e) => return ignored("not UTF-8 text".to_string()),
            Err(e) => return Err(e),
        }
        let mut cache = FileCache::new();
        let mut n = 1;
        loop {
            n += 1;
            match next_line(&mut buf) {
                Ok(None) => break,
                Ok(Some(())) => {}
                Err(e) if not_utf8(&e) => return ignored("not UTF-8 text".to_string()),
                Err(e) => return Err(e),
            }
            if buf.is_empty() {
                continue;
            }
            if cache.parse_line(&buf).is_none() {
                return ignored(format!("line {n} is damaged: {buf:?}"));
            }
        }
        cache.normalize();
        let made_with = match cache.layout.as_deref() {
            Some(made_with) => made_with == layout,
            None => LEGACY_LAYOUTS.contains(&layout),
        };
        if !made_with {
            return ignored(format!(
                "made with the import layout {}, not {layout}",
                cache.layout.as_deref().unwrap_or("of legacy-raw-v0")
            ));
        }
        cache.layout = Some(layout.to_string());
        let outcome = LoadOutcome::Loaded {
            files: cache.files.len(),
            dirs: cache.dirs.len(),
        };
        Ok((cache, outcome))
    }

    fn parse_line(&mut self, line: &str) -> Option<()> {
        let mut fields = [""; 13];
        let mut count = 0;
        for field in line.split(' ') {
            *fields.get_mut(count)? = field;
            count += 1;
        }
        match &fields[..count] {
            ["node", id] if !id.is_empty() => self.node = Some(id.to_string()),
            ["layout", layout] if !layout.is_empty() => self.layout = Some(layout.to_string()),
            ["f", size, msec, mnsec, inode, version, raw, cid, tsize, on, dep_cid, dep_key, key] => {
                let cid = Cid::parse(cid).ok()?;
                let cid_version: u8 = version.parse().ok()?;
                if cid_version > 1 {
                    return None;
                }
                let dep = match (*dep_cid, *dep_key) {
                    ("-", "-") => None,
                    (dep_cid, dep_key) => Some(Dependency {
                        key: unescape(dep_key)?,
                        cid: Cid::parse(dep_cid).ok()?,
                    }),
                };
                let entry = FileEntry {
                    stamp: FileStamp {
                        size: size.parse().ok()?,
                        mtime_sec: msec.parse().ok()?,
                        mtime_nsec: mnsec.parse().ok()?,
                        inode: inode.parse().ok()?,
                    },
                    options: AddOptions {
                        cid_version,
                        raw_leaves: flag(raw)?,
                    },
                    root: Added {
                        cid,
                        tsize: tsize.parse().ok()?,
                    },
                    dep,
                };
                if flag(on)? {
                    self.on_node.insert(cid);
                }
                self.files.push((unescape(key)?, entry));
            }
            ["d", cid, tsize, on, key] => {
                let cid = Cid::parse(cid).ok()?;
                if flag(on)? {
                    self.on_node.insert(cid);
                }
                self.dirs.insert(
                    unescape(key)?,
                    Added {
                        cid,
                        tsize: tsize.parse().ok()?,
                    },
                );
            }
            _ => return None,
        }
        Some(())
    }

    /// The text of the cache file (entries sorted by key).
    pub fn to_text(&self) -> String {
        let mut out = Vec::new();
        self.write_to(&mut out)
            .expect("writing to a Vec<u8> cannot fail");
        String::from_utf8(out).expect("the cache text is UTF-8")
    }

    /// Writes the text of the cache file to `out`, line by line (see [`FileCache::to_text`]).
    pub fn write_to(&self, out: &mut impl io::Write) -> io::Result<()> {
        writeln!(out, "{HEADER}")?;
        if let Some(layout) = &self.layout {
            writeln!(out, "layout {layout}")?;
        }
        if let Some(node) = &self.node {
            writeln!(out, "node {node}")?;
        }
        let on = |cid: &Cid| u8::from(self.on_node.contains(cid));
        for (key, e) in &self.files {
            write!(
                out,
                "f {} {} {} {} {} {} {} {} {} ",
                e.stamp.size,
                e.stamp.mtime_sec,
                e.stamp.mtime_nsec,
                e.stamp.inode,
                e.options.cid_version,
                u8::from(e.options.raw_leaves),
                e.root.cid,
                e.root.tsize,
                on(&e.root.cid),
            )?;
            match &e.dep {
                Some(d) => write!(out, "{} {} ", d.cid, escape(&d.key))?,
                None => out.write_all(b"- - ")?,
            }
            writeln!(out, "{}", escape(key))?;
        }
        let mut dirs: Vec<_> = self.dirs.iter().collect();
        dirs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (key, d) in dirs {
            writeln!(
                out,
                "d {} {} {} {}",
                d.cid,
                d.tsize,
                on(&d.cid),
                escape(key)
            )?;
        }
        Ok(())
    }

    /// Writes the cache to `path` atomically, streaming (the text is never whole in memory).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use anyhow::Context;
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let written = crate::fsutil::temp_file_in(dir).and_then(|tmp| {
            let mut out = io::BufWriter::with_capacity(1 << 16, tmp);
            self.write_to(&mut out)?;
            let tmp = out.into_inner().map_err(|e| e.into_error())?;
            crate::fsutil::persist(tmp, path, true)
        });
        written.with_context(|| format!("cannot write {}", path.display()))
    }

    /// The entry of `key` if it still describes the file (same stamp and options).
    pub fn file(&self, key: &str, stamp: &FileStamp, options: AddOptions) -> Option<&FileEntry> {
        self.files
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .ok()
            .map(|i| &self.files[i].1)
            .filter(|e| e.stamp == *stamp && e.options == options)
    }

    /// Whether there is an entry for `key` (whatever its stamp).
    pub fn has_file(&self, key: &str) -> bool {
        self.files
            .binary_search_by(|(k, _)| k.as_str().cmp(key))
            .is_ok()
    }

    /// Makes room for `additional` more file entries at once (the list then does not grow by
    /// doubling, which for a while holds it twice).
    pub fn reserve_files(&mut self, additional: usize) {
        self.files.reserve_exact(additional);
    }

    /// Records what `key` hashed to.
    pub fn insert_file(&mut self, key: String, entry: FileEntry) {
        self.insert_files(std::iter::once((key, entry)));
    }

    /// Records what each key hashed to (insert many at once: one pass over the entries).
    pub fn insert_files(&mut self, entries: impl IntoIterator<Item = (String, FileEntry)>) {
        let known = self.files.len();
        for (key, entry) in entries {
            match self.files[..known].binary_search_by(|(k, _)| k.as_str().cmp(&key)) {
                Ok(i) => self.files[i].1 = entry,
                Err(_) => self.files.push((key, entry)),
            }
        }
        if self.files.len() > known {
            self.normalize();
        }
    }

    /// Sorts the file entries by key and keeps the last one given of each key, without a
    /// second copy of the entries (a stable sort of the entries themselves would take scratch
    /// space for half of them): the duplicates are found on a list of indices first.
    fn normalize(&mut self) {
        if self.files.windows(2).all(|w| w[0].0 < w[1].0) {
            return;
        }
        let mut order: Vec<usize> = (0..self.files.len()).collect();
        order.sort_by(|&a, &b| self.files[a].0.cmp(&self.files[b].0));
        let mut dropped = vec![false; self.files.len()];
        let mut any = false;
        for pair in order.windows(2) {
            if self.files[pair[0]].0 == self.files[pair[1]].0 {
                dropped[pair[0]] = true;
                any = true;
            }
        }
        if any {
            let mut i = 0;
            self.files.retain(|_| {
                i += 1;
                !dropped[i - 1]
            });
        }
        self.files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }

    /// The recorded CID and cumulative size of the directory published at `key`.
    pub fn dir(&self, key: &str) -> Option<Added> {
        self.dirs.get(key).copied()
    }

    /// Records the directory published at `key`.
    pub fn insert_dir(&mut self, key: String, dir: Added) {
        self.dirs.insert(key, dir);
    }

    /// Keeps only the entries whose key `keep` accepts (drops files and directories that are
    /// no longer part of the mirror).
    pub fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.files.retain(|(k, _)| keep(k));
        self.dirs.retain(|k, _| keep(k));
    }

    /// Number of file entries.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// The node the "on the node" marks are for.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The CIDs whose whole DAG node `node_id` holds; empty for any other node.
    pub fn known_on_node(&self, node_id: &str) -> CidSet {
        if self.node.as_deref() == Some(node_id) {
            self.on_node.clone()
        } else {
            CidSet::new()
        }
    }

    /// Records that `node_id` holds the whole DAG of each CID in `cids` (replacing the marks
    /// of any other node).
    pub fn set_known_on_node(&mut self, node_id: &str, cids: CidSet) {
        self.node = Some(node_id.to_string());
        self.on_node = cids;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(text: &str) -> Cid {
        Cid::parse(text).unwrap()
    }

    fn sample() -> FileCache {
        let mut cache = FileCache::for_layout(LEGACY_LAYOUTS[0]);
        let stamp = FileStamp {
            size: 6,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 123_456_789,
            inode: 42,
        };
        let hello = cid("bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am");
        cache.insert_file(
            "binary_cache/nar/a b%.nar.xz".to_string(),
            FileEntry {
                stamp,
                options: AddOptions::V0_RAW_LEAVES,
                root: Added {
                    cid: hello,
                    tsize: 6,
                },
                dep: None,
            },
        );
        cache.insert_file(
            "binary_cache/x.narinfo".to_string(),
            FileEntry {
                stamp: FileStamp { size: 7, ..stamp },
                options: AddOptions::V0_RAW_LEAVES,
                root: Added {
                    cid: cid("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"),
                    tsize: 14,
                },
                dep: Some(Dependency {
                    key: "binary_cache/nar/a b%.nar.xz".to_string(),
                    cid: hello,
                }),
            },
        );
        let dir = cid("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
        cache.insert_dir(String::new(), Added { cid: dir, tsize: 4 });
        cache.insert_dir("releases/c/n".to_string(), Added { cid: dir, tsize: 4 });
        cache.set_known_on_node("12D3KooWtest", [hello, dir].into_iter().collect());
        cache
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CACHE_FILE);
        let cache = sample();
        cache.save(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(
                "nixipfs-ipfs-hashes 1\nlayout v0-raw-262144-174-kubo\nnode 12D3KooWtest\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(" binary_cache/nar/a%20b%25.nar.xz\n"),
            "{text}"
        );
        let (loaded, outcome) = FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap();
        assert_eq!(outcome, LoadOutcome::Loaded { files: 2, dirs: 2 });
        assert_eq!(loaded, cache);
        assert_eq!(loaded.dir(""), cache.dir(""));
        assert_eq!(loaded.known_on_node("12D3KooWtest").len(), 2);
        assert!(loaded.known_on_node("12D3KooWother").is_empty());
    }

    #[test]
    fn entries_are_trusted_only_for_the_same_stamp_and_options() {
        let cache = sample();
        let key = "binary_cache/nar/a b%.nar.xz";
        let entry = cache
            .files
            .iter()
            .find(|(k, _)| k == key)
            .unwrap()
            .1
            .clone();
        assert!(cache
            .file(key, &entry.stamp, AddOptions::V0_RAW_LEAVES)
            .is_some());
        assert!(cache.file(key, &entry.stamp, AddOptions::V1).is_none());
        for changed in [
            FileStamp {
                size: 7,
                ..entry.stamp
            },
            FileStamp {
                mtime_sec: entry.stamp.mtime_sec + 1,
                ..entry.stamp
            },
            FileStamp {
                mtime_nsec: 0,
                ..entry.stamp
            },
            FileStamp {
                inode: 43,
                ..entry.stamp
            },
        ] {
            assert!(cache
                .file(key, &changed, AddOptions::V0_RAW_LEAVES)
                .is_none());
        }
        assert!(cache
            .file("other", &entry.stamp, AddOptions::V0_RAW_LEAVES)
            .is_none());
    }

    #[test]
    fn stamps_follow_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        fs::write(&path, b"one").unwrap();
        let first = FileStamp::of(&fs::metadata(&path).unwrap());
        assert_eq!(first.size, 3);
        fs::write(&path, b"two").unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(5))
            .unwrap();
        let second = FileStamp::of(&fs::metadata(&path).unwrap());
        assert_eq!((second.mtime_sec, second.mtime_nsec), (5, 0));
        assert_ne!(first, second);
    }

    #[test]
    fn other_formats_are_ignored_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CACHE_FILE);
        assert_eq!(
            FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap().1,
            LoadOutcome::Missing
        );
        fs::write(
            &path,
            "x.nar.xz:QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN\nnixos.iso:QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
        )
        .unwrap();
        let (cache, outcome) = FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap();
        assert!(
            matches!(outcome, LoadOutcome::Ignored { ref reason } if reason.contains("NAME:CID"))
        );
        assert_eq!(cache.file_count(), 0);
        let mut text = sample().to_text();
        text.push_str("f 1 2 3\n");
        fs::write(&path, text).unwrap();
        let (cache, outcome) = FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap();
        assert!(matches!(outcome, LoadOutcome::Ignored { ref reason } if reason.contains("line")));
        assert_eq!(cache, FileCache::for_layout(LEGACY_LAYOUTS[0]));
        fs::write(&path, b"\xff\xfe").unwrap();
        assert!(matches!(
            FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap().1,
            LoadOutcome::Ignored { .. }
        ));
    }

    #[test]
    fn a_cache_of_another_layout_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CACHE_FILE);
        let mut cache = sample();
        cache.layout = Some("v1-raw-1048576-1024-block".to_string());
        cache.save(&path).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\nlayout v1-raw-1048576-1024-block\n"),
            "{text}"
        );
        let (loaded, outcome) = FileCache::load(&path, "v1-raw-1048576-1024-block").unwrap();
        assert_eq!(outcome, LoadOutcome::Loaded { files: 2, dirs: 2 });
        assert_eq!(loaded, cache);
        let (other, outcome) = FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap();
        assert!(
            matches!(outcome, LoadOutcome::Ignored { ref reason } if reason.contains("layout")),
            "{outcome:?}"
        );
        assert_eq!(other, FileCache::for_layout(LEGACY_LAYOUTS[0]));
        assert!(other
            .to_text()
            .contains("\nlayout v0-raw-262144-174-kubo\n"));
        // Without a layout line: the legacy layouts only.
        cache.layout = None;
        cache.save(&path).unwrap();
        for (layout, used) in [
            (LEGACY_LAYOUTS[0], true),
            (LEGACY_LAYOUTS[1], true),
            ("v0-pb-262144-174-links", false),
        ] {
            let (_, outcome) = FileCache::load(&path, layout).unwrap();
            assert_eq!(
                matches!(outcome, LoadOutcome::Loaded { .. }),
                used,
                "{layout}"
            );
        }
    }

    #[test]
    fn keys_escape_and_unescape() {
        for key in ["", "a", "a b", "%", "tab\there", "new\nline", "ünï"] {
            let escaped = escape(key);
            assert!(!escaped.contains([' ', '\n', '\t']), "{escaped}");
            assert_eq!(unescape(&escaped).as_deref(), Some(key));
        }
        assert_eq!(unescape("%zz"), None);
        assert_eq!(unescape("%4"), None);
    }

    #[test]
    fn entries_stay_sorted_and_the_last_given_wins() {
        let mut cache = sample();
        let key = "binary_cache/nar/a b%.nar.xz";
        let old = cache
            .files
            .iter()
            .find(|(k, _)| k == key)
            .unwrap()
            .1
            .clone();
        let mut newer = old.clone();
        newer.stamp.size += 1;
        cache.insert_files([
            ("zz".to_string(), old.clone()),
            (key.to_string(), old.clone()),
            (key.to_string(), newer.clone()),
            ("a".to_string(), old.clone()),
        ]);
        let keys: Vec<&str> = cache.files.iter().map(|(k, _)| k.as_str()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(keys, sorted);
        assert!(cache.file(key, &newer.stamp, newer.options).is_some());
        assert!(cache.file(key, &old.stamp, old.options).is_none());
        assert!(cache.file("a", &old.stamp, old.options).is_some());
    }

    #[test]
    fn retain_drops_entries_no_longer_in_the_mirror() {
        let mut cache = sample();
        cache.retain(|k| !k.ends_with(".narinfo") && k != "releases/c/n");
        assert_eq!(cache.file_count(), 1);
        assert!(cache.dir("releases/c/n").is_none());
        assert!(cache.dir("").is_some());
    }
}
