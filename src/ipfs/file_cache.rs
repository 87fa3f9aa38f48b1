//! The cache of CIDs across runs, kept in `D/ipfs_hashes`: what each file hashed to, and which
//! DAGs the IPFS node is known to hold.
//!
//! A file entry is trusted only while the file's size, modification time (to the nanosecond)
//! and inode number are those recorded, and the add options (CID version, raw leaves) are the
//! same; a narinfo entry also names the NAR whose CID went into its `IPFSHash` line, and is
//! trusted only while that NAR still has that CID. Anything else makes the file be hashed
//! again. Directory entries remember the CID and cumulative size of published directories
//! (what a release's `ipfs_hash` file alone cannot tell), and the SHA-256 of the listing they
//! were built from (each entry's name, CID and cumulative size, in name order): a directory
//! listed the same again has the same CID, and need not be built while nothing needs its
//! blocks.
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
//! d CID TSIZE ON_NODE LISTING KEY
//! ```
//! (`DEP_CID` and `DEP_KEY` are `-` for files that depend on nothing; `LISTING` is the
//! listing's digest in hex, and a `d` line without it, as older versions wrote, is read as a
//! directory whose listing is not known.) The original scripts'
//! `NAME:CID` file carries no size or time, so it is not trusted: it is replaced.
//!
//! The `f` lines are sorted by key (byte-wise, unescaped) and come before the `d` lines. The
//! cache is never held whole: [`FileCache`] looks the last run's entries up in the file
//! (forward while keys increase, by bisection otherwise), and [`CacheWriter`] writes the next
//! run's entries in sorted runs to a temporary file and merges them at the end, so memory does
//! not grow with the number of files.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write as _};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::cid::{Cid, CidSet};
use super::unixfs::{AddOptions, Added};
use crate::hash::Sha256Hash;

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

    /// The stamp of a file from what `stat` answered (the same fields as [`FileStamp::of`]).
    pub fn of_stat(stat: &rustix::fs::Stat) -> FileStamp {
        FileStamp {
            size: u64::try_from(stat.st_size).unwrap_or(0),
            mtime_sec: stat.st_mtime,
            mtime_nsec: u32::try_from(stat.st_mtime_nsec).unwrap_or(0),
            inode: stat.st_ino,
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

/// A file's entry as the cache file holds it ([`FileCache::file`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cached {
    /// What the file hashed to.
    pub entry: FileEntry,
    /// Whether its DAG is on the cache's node.
    pub on_node: bool,
    /// Its line in the cache file, and where the line starts: a [`CacheWriter`] keeps an
    /// unchanged entry as it is.
    line: Box<str>,
    offset: u64,
}

impl Cached {
    /// Whether the entry still describes the file stamped `stamp`, hashed with `options`.
    pub fn describes(&self, stamp: &FileStamp, options: AddOptions) -> bool {
        self.entry.stamp == *stamp && self.entry.options == options
    }
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

/// [`unescape`], without a copy when there is nothing to unescape.
fn unescape_key(text: &str) -> Option<std::borrow::Cow<'_, str>> {
    if text.contains('%') {
        unescape(text).map(std::borrow::Cow::Owned)
    } else {
        Some(std::borrow::Cow::Borrowed(text))
    }
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

/// The escaped key of an `f` line (its last field).
fn line_key(line: &str) -> &str {
    line.rsplit(' ').next().unwrap_or("")
}

/// An `f` line: its key (escaped), entry and "on the node" mark.
fn parse_file_line(line: &str) -> Option<(&str, FileEntry, bool)> {
    let mut fields = [""; 13];
    let mut count = 0;
    for field in line.split(' ') {
        *fields.get_mut(count)? = field;
        count += 1;
    }
    let ["f", size, msec, mnsec, inode, version, raw, cid, tsize, on, dep_cid, dep_key, key] =
        fields
    else {
        return None;
    };
    if count != 13 {
        return None;
    }
    let cid = Cid::parse(cid).ok()?;
    let cid_version: u8 = version.parse().ok()?;
    if cid_version > 1 {
        return None;
    }
    let dep = match (dep_cid, dep_key) {
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
    Some((key, entry, flag(on)?))
}

/// A directory's entry in the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedDir {
    /// Its root CID and cumulative size.
    pub added: Added,
    /// Whether its DAG is on the cache's node.
    pub on_node: bool,
    /// The digest of the listing it was built from, when recorded.
    pub listing: Option<Sha256Hash>,
}

/// A `d` line: its key and directory.
fn parse_dir_line(line: &str) -> Option<(String, CachedDir)> {
    let fields: Vec<&str> = line.split(' ').collect();
    let (cid, tsize, on, listing, key) = match fields[..] {
        ["d", cid, tsize, on, key] => (cid, tsize, on, None, key),
        ["d", cid, tsize, on, listing, key] => (
            cid,
            tsize,
            on,
            Some(Sha256Hash::from_hex(listing).ok()?),
            key,
        ),
        _ => return None,
    };
    let added = Added {
        cid: Cid::parse(cid).ok()?,
        tsize: tsize.parse().ok()?,
    };
    let dir = CachedDir {
        added,
        on_node: flag(on)?,
        listing,
    };
    Some((unescape(key)?, dir))
}

/// Writes the `f` line of `key` (without its newline).
fn write_file_line(
    out: &mut impl io::Write,
    key: &str,
    e: &FileEntry,
    on_node: bool,
) -> io::Result<()> {
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
        u8::from(on_node),
    )?;
    match &e.dep {
        Some(d) => write!(out, "{} {} ", d.cid, escape(&d.key))?,
        None => out.write_all(b"- - ")?,
    }
    write!(out, "{}", escape(key))
}

/// Reads lines of a file from a byte offset, with positioned reads (several readers can share
/// one open file).
struct LineReader<'a> {
    file: &'a fs::File,
    /// Offset of `buf[0]`.
    buf_pos: u64,
    buf: Vec<u8>,
    /// Next unread byte in `buf`.
    at: usize,
    end: u64,
    /// Bytes to read next (doubling up to 64 KiB: a lookup reads little).
    chunk: usize,
}

impl<'a> LineReader<'a> {
    fn new(file: &'a fs::File, start: u64, end: u64) -> LineReader<'a> {
        LineReader {
            file,
            buf_pos: start,
            buf: Vec::new(),
            at: 0,
            end,
            chunk: 1 << 16,
        }
    }

    /// A reader that reads 1 KiB first, for a lookup that may need one line.
    fn for_lookup(file: &'a fs::File, start: u64, end: u64) -> LineReader<'a> {
        LineReader {
            chunk: 1 << 10,
            ..LineReader::new(file, start, end)
        }
    }

    /// Offset of the next line.
    fn pos(&self) -> u64 {
        self.buf_pos + self.at as u64
    }

    /// The next line, without its newline, or `None` at the end.
    fn next_line(&mut self, line: &mut String) -> io::Result<Option<()>> {
        use std::os::unix::fs::FileExt;
        let mut bytes = std::mem::take(line).into_bytes();
        bytes.clear();
        loop {
            if self.at == self.buf.len() {
                let pos = self.pos();
                if pos >= self.end {
                    break;
                }
                let want = (self.end - pos).min(self.chunk as u64) as usize;
                self.chunk = (self.chunk * 2).min(1 << 16);
                self.buf.resize(want, 0);
                let n = self.file.read_at(&mut self.buf, pos)?;
                self.buf.truncate(n);
                self.buf_pos = pos;
                self.at = 0;
                if n == 0 {
                    break;
                }
            }
            let rest = &self.buf[self.at..];
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    bytes.extend_from_slice(&rest[..i]);
                    self.at += i + 1;
                    return finish_line(bytes, line).map(Some);
                }
                None => {
                    bytes.extend_from_slice(rest);
                    self.at = self.buf.len();
                }
            }
        }
        if bytes.is_empty() {
            *line = String::from_utf8(bytes).unwrap_or_default();
            return Ok(None);
        }
        finish_line(bytes, line).map(Some)
    }
}

fn finish_line(mut bytes: Vec<u8>, line: &mut String) -> io::Result<()> {
    if bytes.last() == Some(&b'\r') {
        bytes.pop();
    }
    *line = String::from_utf8(bytes)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))?;
    Ok(())
}

/// Lines a lookup passes over before it bisects the rest of the file instead (the walk jumps
/// over a whole directory's entries at times: the NARs between two narinfos).
const SKIP_BEFORE_BISECTING: usize = 64;

/// Where lookups are in the `f` lines: the bytes of the file from `pos` as far as they were
/// read, the next line at `at`; all lines before it have keys below `below`.
struct Cursor {
    buf: Vec<u8>,
    pos: u64,
    at: usize,
    /// Bytes to read next (doubling up to 64 KiB from a jump: a lookup there reads little).
    chunk: usize,
    below: String,
}

impl Cursor {
    /// Moves to the line at `pos`, forgetting what was read.
    fn jump(&mut self, pos: u64) {
        self.buf.clear();
        self.pos = pos;
        self.at = 0;
        self.chunk = 1 << 12;
    }

    /// The next line (without its newline) as a range of `buf`, reading on from `file` up to
    /// `end` as needed; `None` at the end. The cursor moves past it.
    fn next_line(
        &mut self,
        file: &fs::File,
        end: u64,
    ) -> io::Result<Option<std::ops::Range<usize>>> {
        use std::os::unix::fs::FileExt;
        loop {
            let rest = &self.buf[self.at..];
            let read_to = self.pos + self.buf.len() as u64;
            let line = match rest.iter().position(|&b| b == b'\n') {
                Some(i) => Some(self.at..self.at + i),
                None if read_to >= end && !rest.is_empty() => Some(self.at..self.buf.len()),
                None if read_to >= end => return Ok(None),
                None => None,
            };
            if let Some(mut line) = line {
                self.at = (line.end + 1).min(self.buf.len());
                if self.buf[line.clone()].last() == Some(&b'\r') {
                    line.end -= 1;
                }
                return Ok(Some(line));
            }
            // Keep the partial line, read the next chunk after it.
            self.buf.drain(..self.at);
            self.pos += self.at as u64;
            self.at = 0;
            let have = self.buf.len();
            let want = (end - self.pos - have as u64).min(self.chunk as u64) as usize;
            self.chunk = (self.chunk * 2).min(1 << 16);
            self.buf.resize(have + want, 0);
            let n = file.read_at(&mut self.buf[have..], self.pos + have as u64)?;
            self.buf.truncate(have + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the cache file became shorter",
                ));
            }
        }
    }

    /// The offset of the line at `at` (the next one).
    fn offset(&self) -> u64 {
        self.pos + self.at as u64
    }
}

/// The `f` lines of a cache file: sorted by key, looked up where they are on disk.
struct FileLines {
    file: fs::File,
    start: u64,
    end: u64,
    cursor: std::sync::Mutex<Cursor>,
}

impl FileLines {
    /// The offset of the first line whose key is not below `key` (or a line before it),
    /// among the lines from `lo` on.
    fn seek(&self, key: &str, lo: u64) -> io::Result<u64> {
        const SCAN: u64 = 1 << 14;
        let (mut lo, mut hi) = (lo, self.end);
        let mut line = String::new();
        while hi - lo > SCAN {
            let mid = lo + (hi - lo) / 2;
            let mut reader = LineReader::for_lookup(&self.file, mid - 1, hi);
            // The rest of the line holding byte `mid - 1`: the next line starts after it.
            if reader.next_line(&mut line)?.is_none() {
                break;
            }
            let at = reader.pos();
            if at >= hi || reader.next_line(&mut line)?.is_none() {
                break;
            }
            match unescape_key(line_key(&line)) {
                Some(k) if &*k < key => lo = reader.pos(),
                _ => hi = at,
            }
        }
        Ok(lo)
    }

    /// The line of `key` and its offset, if there is one.
    fn find(&self, key: &str) -> io::Result<Option<(u64, String)>> {
        let mut cursor = self.cursor.lock().unwrap_or_else(|p| p.into_inner());
        let cursor = &mut *cursor;
        if key < cursor.below.as_str() {
            let pos = self.seek(key, self.start)?;
            cursor.jump(pos);
        }
        let mut skipped = 0;
        let found = loop {
            let Some(range) = cursor.next_line(&self.file, self.end)? else {
                break None;
            };
            // Where the line starts (reading on may have moved the bytes kept).
            let at = range.start;
            let line = &cursor.buf[range];
            let escaped = line.rsplit(|&b| b == b' ').next().unwrap_or_default();
            let order = if escaped.contains(&b'%') {
                match std::str::from_utf8(escaped).ok().and_then(unescape) {
                    Some(k) => k.as_str().cmp(key),
                    None => continue,
                }
            } else {
                escaped.cmp(key.as_bytes())
            };
            match order {
                std::cmp::Ordering::Less => {
                    skipped += 1;
                    if skipped == SKIP_BEFORE_BISECTING {
                        let pos = self.seek(key, cursor.offset())?;
                        if pos > cursor.offset() {
                            cursor.jump(pos);
                        }
                    }
                }
                std::cmp::Ordering::Equal => {
                    let line = std::str::from_utf8(line)
                        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8"))?
                        .to_string();
                    // The same key may be asked again: the cursor stays on its line.
                    let offset = cursor.pos + at as u64;
                    cursor.at = at;
                    break Some((offset, line));
                }
                std::cmp::Ordering::Greater => {
                    cursor.at = at;
                    break None;
                }
            }
        };
        cursor.below.clear();
        cursor.below.push_str(key);
        Ok(found)
    }
}

/// The cache file of the last run, read for lookups (see the module documentation). Its
/// file entries stay on disk and are looked up where they are (a run of lookups in key order
/// reads the file once, forward); its few directory entries are held.
#[derive(Default)]
pub struct FileCache {
    lines: Option<FileLines>,
    files: usize,
    /// Whether it was read from a file (a [`CacheWriter`] may then leave that file as it is).
    loaded: bool,
    /// The sum of the offsets of the `f` lines (wrapping), and how many are not marked.
    offsets: u64,
    unmarked: usize,
    /// The `layout` line of the file, as it was.
    layout_line: Option<String>,
    dirs: HashMap<String, CachedDir>,
    node: Option<String>,
    layout: Option<String>,
}

impl std::fmt::Debug for FileCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileCache")
            .field("files", &self.files)
            .field("dirs", &self.dirs.len())
            .field("node", &self.node)
            .field("layout", &self.layout)
            .finish()
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

    /// Opens `path` for the import layout `layout` (a descriptor), reading it once through
    /// to check it. A missing file gives an empty cache; a file in another format, with a
    /// damaged line, with file entries out of order or made with another layout gives an
    /// empty cache and [`LoadOutcome::Ignored`]. Only a read error fails.
    pub fn load(path: &Path, layout: &str) -> io::Result<(FileCache, LoadOutcome)> {
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
        let len = file.metadata()?.len();
        let mut reader = LineReader::new(&file, 0, len);
        let mut line = String::new();
        let not_utf8 = |e: &io::Error| e.kind() == io::ErrorKind::InvalidData;
        match reader.next_line(&mut line) {
            Ok(Some(())) if line == HEADER => {}
            Ok(Some(())) if line.contains(':') => {
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
        // The file lines are one sorted block: [start, end).
        let (mut start, mut end) = (None, None);
        let mut last_key: Option<String> = None;
        let mut n = 1;
        loop {
            n += 1;
            let at = reader.pos();
            match reader.next_line(&mut line) {
                Ok(None) => break,
                Ok(Some(())) => {}
                Err(e) if not_utf8(&e) => return ignored("not UTF-8 text".to_string()),
                Err(e) => return Err(e),
            }
            let damaged = || ignored(format!("line {n} is damaged: {line:?}"));
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("f ") {
                if end.is_some() || rest.split(' ').count() != 12 {
                    return damaged();
                }
                cache.offsets = cache.offsets.wrapping_add(at);
                if line.split(' ').nth(9) != Some("1") {
                    cache.unmarked += 1;
                }
                start.get_or_insert(at);
                let Some(key) = unescape_key(line_key(&line)) else {
                    return damaged();
                };
                if last_key.as_deref().is_some_and(|last| last >= &*key) {
                    return ignored(format!("line {n}: the file entries are not in order"));
                }
                match &mut last_key {
                    Some(last) => {
                        last.clear();
                        last.push_str(&key);
                    }
                    None => last_key = Some(key.into_owned()),
                }
                cache.files += 1;
                continue;
            }
            if start.is_some() && end.is_none() {
                end = Some(at);
            }
            let mut fields = line.splitn(2, ' ');
            match (fields.next(), fields.next()) {
                (Some("node"), Some(id)) if !id.is_empty() && !id.contains(' ') => {
                    cache.node = Some(id.to_string())
                }
                (Some("layout"), Some(l)) if !l.is_empty() && !l.contains(' ') => {
                    cache.layout = Some(l.to_string())
                }
                (Some("d"), Some(_)) => match parse_dir_line(&line) {
                    Some((key, dir)) => {
                        cache.dirs.insert(key, dir);
                    }
                    None => return damaged(),
                },
                _ => return damaged(),
            }
        }
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
        cache.layout_line = cache.layout.replace(layout.to_string());
        cache.loaded = true;
        if let Some(start) = start {
            cache.lines = Some(FileLines {
                file,
                start,
                end: end.unwrap_or(len),
                cursor: std::sync::Mutex::new(Cursor {
                    buf: Vec::new(),
                    pos: start,
                    at: 0,
                    chunk: 1 << 12,
                    below: String::new(),
                }),
            });
        }
        let outcome = LoadOutcome::Loaded {
            files: cache.files,
            dirs: cache.dirs.len(),
        };
        Ok((cache, outcome))
    }

    /// The entry of `key` (its line, parsed), whatever file it describes (see
    /// [`Cached::describes`]).
    pub fn entry(&self, key: &str) -> Option<Cached> {
        let (offset, line) = match self.lines.as_ref()?.find(key) {
            Ok(found) => found?,
            Err(e) => {
                tracing::debug!("reading the file cache: {e}");
                return None;
            }
        };
        let (_, entry, on_node) = parse_file_line(&line)?;
        Some(Cached {
            entry,
            on_node,
            line: line.into_boxed_str(),
            offset,
        })
    }

    /// The entry of `key` if it still describes the file (same stamp and options), with
    /// whether its DAG was on the cache's node. Lookups in increasing key order read the file
    /// forward; a key below the last one looked up is found again by bisection.
    pub fn file(&self, key: &str, stamp: &FileStamp, options: AddOptions) -> Option<Cached> {
        self.entry(key).filter(|c| c.describes(stamp, options))
    }

    /// Number of file entries.
    pub fn file_count(&self) -> usize {
        self.files
    }

    /// The recorded CID and cumulative size of the directory published at `key`.
    pub fn dir(&self, key: &str) -> Option<Added> {
        self.dirs.get(key).map(|d| d.added)
    }

    /// The recorded CID and cumulative size of the directory published at `key`, when it was
    /// built from the listing whose digest is `listing`.
    pub fn dir_listed(&self, key: &str, listing: &Sha256Hash) -> Option<Added> {
        self.dirs
            .get(key)
            .filter(|d| d.listing.as_ref() == Some(listing))
            .map(|d| d.added)
    }

    /// The node the "on the node" marks are for.
    pub fn node(&self) -> Option<&str> {
        self.node.as_deref()
    }

    /// The layout descriptor the cache is for.
    pub fn layout(&self) -> Option<&str> {
        self.layout.as_deref()
    }

    /// The directories whose whole DAG node `node_id` holds; empty for any other node. A
    /// file's mark comes with its entry ([`Cached::on_node`]).
    pub fn known_on_node(&self, node_id: &str) -> CidSet {
        let mut set = CidSet::new();
        if self.node.as_deref() != Some(node_id) {
            return set;
        }
        set.extend(
            self.dirs
                .values()
                .filter(|d| d.on_node)
                .map(|d| d.added.cid),
        );
        set
    }

    /// The files marked as on node `node_id`, to be read when needed (none for another node).
    pub fn marked_files(&self, node_id: &str) -> Option<MarkedFiles> {
        if self.node.as_deref() != Some(node_id) || self.unmarked == self.files {
            return None;
        }
        let lines = self.lines.as_ref()?;
        Some(MarkedFiles {
            file: lines.file.try_clone().ok()?,
            start: lines.start,
            end: lines.end,
        })
    }

    /// Whether the marks are for node `node_id` and mark anything as on it.
    pub fn marks_anything_on(&self, node_id: &str) -> bool {
        self.node.as_deref() == Some(node_id)
            && (self.unmarked < self.files || self.dirs.values().any(|d| d.on_node))
    }

    /// Calls `f` with the line of every file entry whose key is under the directory
    /// `prefix` (its offset, and whether it is marked), in key order.
    fn for_each_under(
        &self,
        prefix: &str,
        f: &mut dyn FnMut(u64, &str, bool) -> io::Result<()>,
    ) -> io::Result<()> {
        let Some(lines) = &self.lines else {
            return Ok(());
        };
        let dir = format!("{prefix}/");
        let start = lines.seek(&dir, lines.start)?;
        let mut reader = LineReader::new(&lines.file, start, lines.end);
        let mut line = String::new();
        loop {
            let at = reader.pos();
            if reader.next_line(&mut line)?.is_none() {
                break;
            }
            let Some((key, _, on)) = parse_file_line(&line) else {
                continue;
            };
            let Some(key) = unescape_key(key) else {
                continue;
            };
            if &*key < dir.as_str() {
                continue;
            }
            if !key.starts_with(&dir) {
                break;
            }
            f(at, &line, on)?;
        }
        Ok(())
    }
}

/// The files a cache marks as on its node, read from the cache file (once more) by
/// [`MarkedFiles::read`].
#[derive(Debug)]
pub struct MarkedFiles {
    file: fs::File,
    start: u64,
    end: u64,
}

impl MarkedFiles {
    /// The root CIDs of the marked files.
    pub fn read(self) -> CidSet {
        let mut set = CidSet::new();
        let mut reader = LineReader::new(&self.file, self.start, self.end);
        let mut line = String::new();
        while let Ok(Some(())) = reader.next_line(&mut line) {
            let mut fields = line.split(' ').skip(7);
            if let (Some(cid), _, Some("1")) = (fields.next(), fields.next(), fields.next()) {
                if let Ok(cid) = Cid::parse(cid) {
                    set.insert(cid);
                }
            }
        }
        set
    }
}

/// The next cache file, written as the mirror is walked: file entries come in sorted runs
/// (a directory's at a time) into an unnamed temporary file beside the cache, and
/// [`CacheWriter::finish`] merges the runs into the cache file. Memory holds one run and the
/// directory entries, never the whole list. A writer made [`CacheWriter::replacing`] a cache
/// leaves its file as it is when every entry comes back unchanged (a rerun with nothing new).
pub struct CacheWriter {
    dir: std::path::PathBuf,
    runs_file: io::BufWriter<fs::File>,
    written: u64,
    runs: Vec<(u64, u64)>,
    dirs: Vec<(String, CachedDir)>,
    layout: Option<String>,
    node: Option<String>,
    baseline: Option<Baseline>,
    /// Entries written as their lines were: how many, the sum of the lines' offsets, how
    /// many of them were not marked; and entries written anew.
    kept: usize,
    kept_offsets: u64,
    kept_unmarked: usize,
    changed: usize,
}

/// What the cache file being replaced holds, in brief.
struct Baseline {
    files: usize,
    offsets: u64,
    unmarked: usize,
    dirs: HashMap<String, CachedDir>,
    layout_line: Option<String>,
    node: Option<String>,
}

/// A file entry for the next cache file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NextEntry {
    /// The file's key.
    pub key: String,
    /// What it hashed to.
    pub entry: FileEntry,
    /// Whether its DAG is on the node.
    pub on_node: bool,
    /// Its entry in the cache being replaced, if it had one.
    pub was: Option<Cached>,
}

impl CacheWriter {
    /// A writer of the cache file that will be in `dir`, for `layout` (a descriptor), its
    /// marks for `node`.
    pub fn new(dir: &Path, layout: Option<&str>, node: Option<&str>) -> io::Result<CacheWriter> {
        let file = tempfile::tempfile_in(dir)?;
        Ok(CacheWriter {
            dir: dir.to_path_buf(),
            runs_file: io::BufWriter::with_capacity(1 << 16, file),
            written: 0,
            runs: Vec::new(),
            dirs: Vec::new(),
            layout: layout.map(str::to_string),
            node: node.map(str::to_string),
            baseline: None,
            kept: 0,
            kept_offsets: 0,
            kept_unmarked: 0,
            changed: 0,
        })
    }

    /// A writer of the cache file that replaces `cache` in `dir`, for the same layout, its
    /// marks for the same node.
    pub fn replacing(dir: &Path, cache: &FileCache) -> io::Result<CacheWriter> {
        let mut writer = CacheWriter::new(dir, cache.layout(), cache.node())?;
        writer.baseline = cache.loaded.then(|| Baseline {
            files: cache.files,
            offsets: cache.offsets,
            unmarked: cache.unmarked,
            dirs: cache.dirs.clone(),
            layout_line: cache.layout_line.clone(),
            node: cache.node.clone(),
        });
        Ok(writer)
    }

    /// Writes the line of an entry that is as the cache being replaced has it.
    fn keep_line(&mut self, offset: u64, line: &str, on_node: bool) -> io::Result<()> {
        self.runs_file.write_all(line.as_bytes())?;
        self.runs_file.write_all(b"\n")?;
        self.written += line.len() as u64 + 1;
        self.kept += 1;
        self.kept_offsets = self.kept_offsets.wrapping_add(offset);
        self.kept_unmarked += usize::from(!on_node);
        Ok(())
    }

    /// Adds file entries, in any order; each key once across the whole cache.
    pub fn files(&mut self, mut entries: Vec<NextEntry>) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        entries.sort_unstable_by(|a, b| a.key.cmp(&b.key));
        let start = self.written;
        let mut line = Vec::with_capacity(256);
        for e in &entries {
            match &e.was {
                Some(was) if was.entry == e.entry && was.on_node == e.on_node => {
                    self.keep_line(was.offset, &was.line, was.on_node)?;
                }
                _ => {
                    line.clear();
                    write_file_line(&mut line, &e.key, &e.entry, e.on_node)?;
                    line.push(b'\n');
                    self.runs_file.write_all(&line)?;
                    self.written += line.len() as u64;
                    self.changed += 1;
                }
            }
        }
        self.runs.push((start, self.written));
        Ok(())
    }

    /// Adds file entries that are as the cache being replaced has them (each key once across
    /// the whole cache, as for [`CacheWriter::files`]), in any order.
    pub fn keep(&mut self, mut entries: Vec<(String, Box<Cached>)>) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let start = self.written;
        for (_, was) in &entries {
            self.keep_line(was.offset, &was.line, was.on_node)?;
        }
        self.runs.push((start, self.written));
        Ok(())
    }

    /// Keeps the entries of `cache` under the directory `prefix` (a release taken by its CID,
    /// whose files were not looked at).
    pub fn keep_under(&mut self, cache: &FileCache, prefix: &str) -> io::Result<()> {
        let start = self.written;
        cache.for_each_under(prefix, &mut |offset, line, on| {
            self.keep_line(offset, line, on)
        })?;
        if self.written > start {
            self.runs.push((start, self.written));
        }
        for (key, dir) in &cache.dirs {
            if key.starts_with(prefix)
                && (key.len() == prefix.len() || key[prefix.len()..].starts_with('/'))
            {
                self.dir(key.clone(), *dir);
            }
        }
        Ok(())
    }

    /// Adds the directory published at `key`.
    pub fn dir(&mut self, key: String, dir: CachedDir) {
        self.dirs.push((key, dir));
    }

    /// Merges the runs into the cache file at `path`, written atomically. With
    /// `node_holds_all`, every entry is marked as on the node `node` (its root was pinned
    /// there); else the marks are those given, for the node given to [`CacheWriter::new`].
    pub fn finish(
        self,
        path: &Path,
        node: Option<&str>,
        node_holds_all: bool,
    ) -> anyhow::Result<()> {
        use anyhow::Context;
        if self.unchanged(node, node_holds_all) {
            // A rerun with nothing new: the file stays, not read, not written.
            return Ok(());
        }
        let result = self.merge(path, node, node_holds_all);
        result.with_context(|| format!("cannot write {}", path.display()))
    }

    /// Whether the file [`CacheWriter::finish`] would write is the one being replaced: every
    /// entry of that file written back as it was and nothing else, the same directories,
    /// layout and node, every mark already set when `node_holds_all`.
    fn unchanged(&self, node: Option<&str>, node_holds_all: bool) -> bool {
        let Some(old) = &self.baseline else {
            return false;
        };
        let node = if node_holds_all {
            node
        } else {
            self.node.as_deref()
        };
        if self.changed > 0
            || self.kept != old.files
            || self.kept_offsets != old.offsets
            || (node_holds_all && (self.kept_unmarked > 0 || old.unmarked > 0))
            || node != old.node.as_deref()
            || self.layout != old.layout_line
        {
            return false;
        }
        // The directories as the merge writes them: the first of each key.
        let mut dirs: HashMap<&str, CachedDir> = HashMap::with_capacity(self.dirs.len());
        for (key, dir) in &self.dirs {
            dirs.entry(key.as_str()).or_insert(CachedDir {
                on_node: dir.on_node || node_holds_all,
                ..*dir
            });
        }
        dirs.len() == old.dirs.len()
            && dirs
                .iter()
                .all(|(key, dir)| old.dirs.get(*key) == Some(dir))
    }

    fn merge(self, path: &Path, node: Option<&str>, node_holds_all: bool) -> io::Result<()> {
        let CacheWriter {
            dir,
            runs_file,
            runs,
            mut dirs,
            layout,
            node: old_node,
            ..
        } = self;
        let runs_file = runs_file.into_inner().map_err(|e| e.into_error())?;
        let tmp = crate::fsutil::temp_file_in(&dir)?;
        let mut out = io::BufWriter::with_capacity(1 << 16, tmp);
        writeln!(out, "{HEADER}")?;
        if let Some(layout) = &layout {
            writeln!(out, "layout {layout}")?;
        }
        let node = if node_holds_all {
            node.map(str::to_string)
        } else {
            old_node
        };
        if let Some(node) = &node {
            writeln!(out, "node {node}")?;
        }
        // A k-way merge of the sorted runs, by key.
        let mut readers: Vec<LineReader<'_>> = runs
            .iter()
            .map(|&(start, end)| LineReader::new(&runs_file, start, end))
            .collect();
        let mut heads: std::collections::BinaryHeap<std::cmp::Reverse<(String, usize, String)>> =
            std::collections::BinaryHeap::new();
        let next = |i: usize, readers: &mut Vec<LineReader<'_>>| -> io::Result<_> {
            let mut line = String::new();
            Ok(match readers[i].next_line(&mut line)? {
                Some(()) => {
                    let key = unescape(line_key(&line)).unwrap_or_default();
                    Some(std::cmp::Reverse((key, i, line)))
                }
                None => None,
            })
        };
        for i in 0..readers.len() {
            if let Some(head) = next(i, &mut readers)? {
                heads.push(head);
            }
        }
        let mut last: Option<String> = None;
        while let Some(std::cmp::Reverse((key, i, line))) = heads.pop() {
            if let Some(head) = next(i, &mut readers)? {
                heads.push(head);
            }
            if last.as_ref() == Some(&key) {
                continue;
            }
            if node_holds_all {
                let mut fields: Vec<&str> = line.split(' ').collect();
                if let Some(on) = fields.get_mut(9) {
                    *on = "1";
                }
                out.write_all(fields.join(" ").as_bytes())?;
            } else {
                out.write_all(line.as_bytes())?;
            }
            out.write_all(b"\n")?;
            last = Some(key);
        }
        dirs.sort_by(|a, b| a.0.cmp(&b.0));
        dirs.dedup_by(|a, b| a.0 == b.0);
        for (key, d) in &dirs {
            write!(
                out,
                "d {} {} {} ",
                d.added.cid,
                d.added.tsize,
                u8::from(d.on_node || node_holds_all),
            )?;
            if let Some(listing) = &d.listing {
                write!(out, "{} ", listing.to_hex())?;
            }
            writeln!(out, "{}", escape(key))?;
        }
        let tmp = out.into_inner().map_err(|e| e.into_error())?;
        if same_bytes(tmp.as_file(), path)? {
            // Unchanged (a rerun with nothing new): the file stays, no sync, no rename.
            return Ok(());
        }
        crate::fsutil::persist(tmp, path, true)
    }
}

/// Whether the file at `path` holds the bytes of `file`.
fn same_bytes(file: &fs::File, path: &Path) -> io::Result<bool> {
    use std::os::unix::fs::FileExt;
    let old = match fs::File::open(path) {
        Ok(old) => old,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    if old.metadata()?.len() != len {
        return Ok(false);
    }
    let (mut a, mut b) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    let mut pos = 0;
    while pos < len {
        let n = (len - pos).min(a.len() as u64) as usize;
        file.read_exact_at(&mut a[..n], pos)?;
        old.read_exact_at(&mut b[..n], pos)?;
        if a[..n] != b[..n] {
            return Ok(false);
        }
        pos += n as u64;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(text: &str) -> Cid {
        Cid::parse(text).unwrap()
    }

    const NAR: &str = "binary_cache/nar/a b%.nar.xz";

    fn stamp() -> FileStamp {
        FileStamp {
            size: 6,
            mtime_sec: 1_700_000_000,
            mtime_nsec: 123_456_789,
            inode: 42,
        }
    }

    /// A new entry, with no entry in the cache before.
    fn next(key: &str, entry: FileEntry, on_node: bool) -> NextEntry {
        NextEntry {
            key: key.to_string(),
            entry,
            on_node,
            was: None,
        }
    }

    fn hello() -> Cid {
        cid("bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am")
    }

    /// Two file entries (a NAR and its narinfo) and two directories, written to `path`.
    fn write_sample(path: &Path, layout: Option<&str>) {
        let nar = FileEntry {
            stamp: stamp(),
            options: AddOptions::V0_RAW_LEAVES,
            root: Added {
                cid: hello(),
                tsize: 6,
            },
            dep: None,
        };
        let narinfo = FileEntry {
            stamp: FileStamp { size: 7, ..stamp() },
            options: AddOptions::V0_RAW_LEAVES,
            root: Added {
                cid: cid("QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN"),
                tsize: 14,
            },
            dep: Some(Dependency {
                key: NAR.to_string(),
                cid: hello(),
            }),
        };
        let mut w = CacheWriter::new(path.parent().unwrap(), layout, Some("12D3KooWtest")).unwrap();
        w.files(vec![next("binary_cache/x.narinfo", narinfo, false)])
            .unwrap();
        w.files(vec![next(NAR, nar, true)]).unwrap();
        let dir = cid("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
        let added = Added { cid: dir, tsize: 4 };
        let top = CachedDir {
            added,
            on_node: true,
            listing: Some(crate::hash::sha256(b"the listing")),
        };
        w.dir(String::new(), top);
        // As older versions recorded a directory: without its listing.
        let release = CachedDir {
            added,
            on_node: false,
            listing: None,
        };
        w.dir("releases/c/n".to_string(), release);
        w.finish(path, None, false).unwrap();
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CACHE_FILE);
        write_sample(&path, Some(LEGACY_LAYOUTS[0]));
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with(
                "nixipfs-ipfs-hashes 1\nlayout v0-raw-262144-174-kubo\nnode 12D3KooWtest\nf 6 "
            ),
            "{text}"
        );
        assert!(
            text.contains(" binary_cache/nar/a%20b%25.nar.xz\nf 7 "),
            "the runs are merged in key order: {text}"
        );
        assert!(
            text.ends_with(
                " %00\nd QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn 4 0 releases/c/n\n"
            ),
            "{text}"
        );
        let (loaded, outcome) = FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap();
        assert_eq!(outcome, LoadOutcome::Loaded { files: 2, dirs: 2 });
        let nar = loaded
            .file(NAR, &stamp(), AddOptions::V0_RAW_LEAVES)
            .unwrap();
        assert_eq!(
            (nar.entry.root.cid, nar.entry.root.tsize, nar.on_node),
            (hello(), 6, true)
        );
        let narinfo_stamp = FileStamp { size: 7, ..stamp() };
        let narinfo = loaded
            .file(
                "binary_cache/x.narinfo",
                &narinfo_stamp,
                AddOptions::V0_RAW_LEAVES,
            )
            .unwrap();
        assert!(!narinfo.on_node);
        assert_eq!(narinfo.entry.dep.unwrap().key, NAR);
        assert_eq!(loaded.dir("").unwrap().tsize, 4);
        // A directory is known by its listing only when that was recorded.
        let listing = crate::hash::sha256(b"the listing");
        assert!(
            text.contains(&format!(" 4 1 {} %00\n", listing.to_hex())),
            "{text}"
        );
        assert_eq!(loaded.dir_listed("", &listing).unwrap().tsize, 4);
        assert_eq!(
            loaded.dir_listed("", &crate::hash::sha256(b"another")),
            None
        );
        assert_eq!(loaded.dir_listed("releases/c/n", &listing), None);
        assert!(loaded.dir("releases/c/n").is_some());
        // The marked directory; the files' marks come with their entries.
        assert_eq!(loaded.known_on_node("12D3KooWtest").len(), 1);
        assert!(loaded.known_on_node("12D3KooWother").is_empty());
        assert!(loaded.marks_anything_on("12D3KooWtest"));
        assert!(!loaded.marks_anything_on("12D3KooWother"));
        let marked = loaded.marked_files("12D3KooWtest").unwrap().read();
        assert_eq!(marked.len(), 1);
        assert!(marked.contains(&hello()));
        assert!(loaded.marked_files("12D3KooWother").is_none());

        // Pinned on another node: every mark is for it.
        let (_, _) = (loaded, ());
        let (old, _) = FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap();
        let mut w = CacheWriter::new(dir.path(), old.layout(), old.node()).unwrap();
        w.keep_under(&old, "binary_cache").unwrap();
        w.finish(&path, Some("12D3KooWother"), true).unwrap();
        let (again, _) = FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap();
        assert_eq!(again.node(), Some("12D3KooWother"));
        assert!(again.marks_anything_on("12D3KooWother"));
        let narinfo = again
            .file(
                "binary_cache/x.narinfo",
                &narinfo_stamp,
                AddOptions::V0_RAW_LEAVES,
            )
            .unwrap();
        assert!(narinfo.on_node);

        // The same entries again: the file is left as it is (same inode, no rename); other
        // entries replace it.
        let inode = |p: &Path| fs::metadata(p).unwrap().ino();
        let before = inode(&path);
        let text = fs::read_to_string(&path).unwrap();
        let mut w = CacheWriter::new(dir.path(), again.layout(), again.node()).unwrap();
        w.keep_under(&again, "binary_cache").unwrap();
        w.finish(&path, Some("12D3KooWother"), true).unwrap();
        assert_eq!(inode(&path), before);
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        let mut w = CacheWriter::new(dir.path(), again.layout(), again.node()).unwrap();
        w.keep_under(&again, "binary_cache/nar").unwrap();
        w.finish(&path, Some("12D3KooWother"), true).unwrap();
        assert_ne!(inode(&path), before);
        assert_eq!(
            FileCache::load(&path, LEGACY_LAYOUTS[0])
                .unwrap()
                .0
                .file_count(),
            1
        );
        // No temporary file is left either way.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [std::ffi::OsString::from(CACHE_FILE)]);
    }

    #[test]
    fn entries_are_trusted_only_for_the_same_stamp_and_options() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CACHE_FILE);
        write_sample(&path, Some(LEGACY_LAYOUTS[0]));
        let (cache, _) = FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap();
        let stamp = stamp();
        assert!(cache.file(NAR, &stamp, AddOptions::V0_RAW_LEAVES).is_some());
        assert!(cache.file(NAR, &stamp, AddOptions::V1).is_none());
        for changed in [
            FileStamp { size: 7, ..stamp },
            FileStamp {
                mtime_sec: stamp.mtime_sec + 1,
                ..stamp
            },
            FileStamp {
                mtime_nsec: 0,
                ..stamp
            },
            FileStamp { inode: 43, ..stamp },
        ] {
            assert!(cache
                .file(NAR, &changed, AddOptions::V0_RAW_LEAVES)
                .is_none());
        }
        assert!(cache
            .file("other", &stamp, AddOptions::V0_RAW_LEAVES)
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
        write_sample(&path, Some(LEGACY_LAYOUTS[0]));
        let good = fs::read_to_string(&path).unwrap();
        let damaged = [
            good.clone() + "f 1 2 3\n",
            // File entries after the directories, or out of order.
            good.clone() + &good.lines().nth(3).unwrap().replace(" binary", " zz") + "\n",
            good.replacen(" binary_cache/x.narinfo", " binary_cache/a.narinfo", 1),
        ];
        for text in damaged {
            fs::write(&path, &text).unwrap();
            let (cache, outcome) = FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap();
            assert!(
                matches!(outcome, LoadOutcome::Ignored { ref reason } if reason.contains("line")),
                "{outcome:?} for {text}"
            );
            assert_eq!(cache.file_count(), 0);
            assert!(cache
                .file(NAR, &stamp(), AddOptions::V0_RAW_LEAVES)
                .is_none());
        }
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
        write_sample(&path, Some("v1-raw-1048576-1024-block"));
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("\nlayout v1-raw-1048576-1024-block\n"),
            "{text}"
        );
        let (loaded, outcome) = FileCache::load(&path, "v1-raw-1048576-1024-block").unwrap();
        assert_eq!(outcome, LoadOutcome::Loaded { files: 2, dirs: 2 });
        assert!(loaded
            .file(NAR, &stamp(), AddOptions::V0_RAW_LEAVES)
            .is_some());
        let (other, outcome) = FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap();
        assert!(
            matches!(outcome, LoadOutcome::Ignored { ref reason } if reason.contains("layout")),
            "{outcome:?}"
        );
        assert_eq!(other.file_count(), 0);
        assert_eq!(other.layout(), Some(LEGACY_LAYOUTS[0]));
        // Without a layout line: the legacy layouts only.
        write_sample(&path, None);
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

    /// Thousands of entries in interleaved runs: merged in order, each key once, and found
    /// by lookups in any order (forward, backward, absent keys), as in memory.
    #[test]
    fn runs_merge_in_order_and_lookups_find_every_entry_in_any_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CACHE_FILE);
        let key = |i: usize| format!("d{}/file {i:05}", i % 7);
        let entry = |i: usize| FileEntry {
            stamp: FileStamp {
                size: i as u64,
                ..stamp()
            },
            options: AddOptions::V1,
            root: Added {
                cid: Cid::sha2_256(1, crate::ipfs::cid::RAW, &i.to_le_bytes()).unwrap(),
                tsize: i as u64,
            },
            dep: None,
        };
        let n = 6000;
        let mut w = CacheWriter::new(dir.path(), Some("v1"), None).unwrap();
        for run in 0..3 {
            w.files(
                (0..n)
                    .filter(|i| i % 3 == run)
                    .map(|i| next(&key(i), entry(i), false))
                    .collect(),
            )
            .unwrap();
        }
        w.finish(&path, None, false).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        let keys: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("f "))
            .map(|l| unescape(line_key(l)).unwrap())
            .collect();
        let mut sorted: Vec<String> = (0..n).map(key).collect();
        sorted.sort();
        assert_eq!(keys, sorted);
        let (cache, outcome) = FileCache::load(&path, "v1").unwrap();
        assert_eq!(outcome, LoadOutcome::Loaded { files: n, dirs: 0 });
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&i| key(i));
        let backward: Vec<usize> = order.iter().rev().copied().collect();
        let scattered: Vec<usize> = (0..n).map(|i| (i * 4099) % n).collect();
        for lookups in [order, backward, scattered] {
            for i in lookups {
                let found = cache
                    .file(&key(i), &entry(i).stamp, AddOptions::V1)
                    .unwrap_or_else(|| panic!("{} not found", key(i)));
                assert_eq!(found.entry, entry(i));
                assert!(cache.entry(&format!("{}x", key(i))).is_none());
            }
        }
        assert!(cache.entry("").is_none() && cache.entry("zzz").is_none());
        // The entries under one directory, kept as they are.
        let mut w = CacheWriter::new(dir.path(), Some("v1"), None).unwrap();
        w.keep_under(&cache, "d3").unwrap();
        let kept = dir.path().join("kept");
        w.finish(&kept, None, false).unwrap();
        let (kept, _) = FileCache::load(&kept, "v1").unwrap();
        assert_eq!(kept.file_count(), (0..n).filter(|i| i % 7 == 3).count());
    }

    /// A writer replacing a cache leaves its file alone exactly when it would write the same
    /// file: every entry back as it was, nothing else, the same directories and marks.
    #[test]
    fn an_unchanged_cache_is_left_as_it_is_and_any_change_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CACHE_FILE);
        write_sample(&path, Some(LEGACY_LAYOUTS[0]));
        let (cache, _) = FileCache::load(&path, LEGACY_LAYOUTS[0]).unwrap();
        let narinfo_key = "binary_cache/x.narinfo";
        let narinfo_stamp = FileStamp { size: 7, ..stamp() };
        let found = |key: &str, stamp: &FileStamp| {
            cache.file(key, stamp, AddOptions::V0_RAW_LEAVES).unwrap()
        };
        let again = |c: Cached, key: &str| NextEntry {
            key: key.to_string(),
            entry: c.entry.clone(),
            on_node: c.on_node,
            was: Some(c),
        };
        let dirs = |w: &mut CacheWriter, top_on: bool, listing: &[u8]| {
            let d = cid("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
            let dir = |on_node, listing| CachedDir {
                added: Added { cid: d, tsize: 4 },
                on_node,
                listing,
            };
            w.dir(
                String::new(),
                dir(top_on, Some(crate::hash::sha256(listing))),
            );
            w.dir("releases/c/n".into(), dir(false, None));
        };
        // (entries, directory mark, node_holds_all) → unchanged?
        let writer = |entries: Vec<NextEntry>, top_on: bool| {
            let mut w = CacheWriter::replacing(dir.path(), &cache).unwrap();
            w.files(entries).unwrap();
            dirs(&mut w, top_on, b"the listing");
            w
        };
        let nar = found(NAR, &stamp());
        let narinfo = found(narinfo_key, &narinfo_stamp);
        let same = || vec![again(nar.clone(), NAR), again(narinfo.clone(), narinfo_key)];
        assert!(writer(same(), true).unchanged(None, false));
        // Entries kept as they were, given as such.
        let mut w = CacheWriter::replacing(dir.path(), &cache).unwrap();
        w.keep(vec![
            (narinfo_key.to_string(), Box::new(narinfo.clone())),
            (NAR.to_string(), Box::new(nar.clone())),
        ])
        .unwrap();
        dirs(&mut w, true, b"the listing");
        assert!(w.unchanged(None, false));
        // A directory listed otherwise.
        let mut w = CacheWriter::replacing(dir.path(), &cache).unwrap();
        w.files(same()).unwrap();
        dirs(&mut w, true, b"another listing");
        assert!(!w.unchanged(None, false));
        // The narinfo was not marked: pinned now, its mark changes.
        assert!(!writer(same(), true).unchanged(Some("12D3KooWtest"), true));
        // A directory's mark, an entry left out, an entry changed, an entry added.
        assert!(!writer(same(), false).unchanged(None, false));
        assert!(!writer(vec![again(nar.clone(), NAR)], true).unchanged(None, false));
        let mut changed = same();
        changed[0].entry.root.tsize += 1;
        assert!(!writer(changed.clone(), true).unchanged(None, false));
        let mut more = same();
        more.push(next("binary_cache/y.narinfo", nar.entry.clone(), false));
        assert!(!writer(more, true).unchanged(None, false));
        // A changed entry is written; an unchanged one keeps its line.
        let before = fs::read_to_string(&path).unwrap();
        writer(changed, true).finish(&path, None, false).unwrap();
        let after = fs::read_to_string(&path).unwrap();
        assert_ne!(after, before);
        assert_eq!(after.lines().count(), before.lines().count());
        let narinfo_line = before.lines().find(|l| l.ends_with(narinfo_key)).unwrap();
        assert!(after.lines().any(|l| l == narinfo_line), "{after}");
    }
}
