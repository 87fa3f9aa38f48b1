//! Producing NARs: [`dump_path`] serialises a file system tree as `nix-store --dump` does,
//! [`write_nar`] serialises an in-memory [`NarNode`], and [`write_single_file_nar`] streams a
//! single-file NAR of any size from a reader.
//!
//! All three refuse to produce a NAR that the [reader](super::parse) would reject (bad names,
//! bad symlink targets, too deep nesting), so their output always validates.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::wire::{
    self, CLOSE, CONTENTS, DIRECTORY, EMPTY, ENTRY, EXECUTABLE, MAGIC, NAME, NODE, OPEN, REGULAR,
    SYMLINK, TARGET, TYPE,
};
use super::{MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN};

/// The size of the buffers used for writing and for copying file contents.
const BUFFER_SIZE: usize = 64 * 1024;

/// A file system tree held in memory, for producing small NARs with [`write_nar`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NarNode {
    /// A regular file.
    File {
        /// Whether the file is executable.
        executable: bool,
        /// The contents.
        contents: Vec<u8>,
    },
    /// A symbolic link.
    Symlink {
        /// Where the link points; must be non-empty and without NUL.
        target: String,
    },
    /// A directory. Names must be valid NAR entry names; the map keeps them in byte order,
    /// which is the order of the NAR.
    Directory(BTreeMap<String, NarNode>),
}

impl NarNode {
    /// A regular file that is not executable.
    pub fn file(contents: impl Into<Vec<u8>>) -> NarNode {
        NarNode::File {
            executable: false,
            contents: contents.into(),
        }
    }

    /// An executable regular file.
    pub fn executable(contents: impl Into<Vec<u8>>) -> NarNode {
        NarNode::File {
            executable: true,
            contents: contents.into(),
        }
    }

    /// A symlink to `target`.
    pub fn symlink(target: impl Into<String>) -> NarNode {
        NarNode::Symlink {
            target: target.into(),
        }
    }

    /// A directory with the given entries.
    pub fn directory<N: Into<String>>(entries: impl IntoIterator<Item = (N, NarNode)>) -> NarNode {
        NarNode::Directory(entries.into_iter().map(|(n, e)| (n.into(), e)).collect())
    }
}

/// Writes `node` as a NAR to `w` and returns the number of bytes written.
///
/// An invalid name or symlink target, or nesting deeper than [`MAX_DEPTH`], is an
/// [`io::ErrorKind::InvalidInput`] error.
pub fn write_nar<W: Write>(node: &NarNode, w: W) -> io::Result<u64> {
    let mut sink = Sink::new(w);
    sink.string(MAGIC)?;
    write_node(&mut sink, node, 0)?;
    sink.finish()
}

fn write_node<W: Write>(sink: &mut Sink<W>, node: &NarNode, depth: usize) -> io::Result<()> {
    match node {
        NarNode::File {
            executable,
            contents,
        } => {
            sink.file_header(*executable, contents.len() as u64)?;
            sink.raw(contents)?;
            sink.file_end(contents.len() as u64)
        }
        NarNode::Symlink { target } => sink.symlink(target.as_bytes()),
        NarNode::Directory(entries) => {
            sink.strings(&[OPEN, TYPE, DIRECTORY])?;
            for (name, child) in entries {
                sink.entry_start(name.as_bytes(), depth)?;
                write_node(sink, child, depth + 1)?;
                sink.string(CLOSE)?;
            }
            sink.string(CLOSE)
        }
    }
}

/// Writes a NAR whose root is a regular file of `size` bytes read from `contents`, and returns
/// the number of bytes written: `size`, its padding to a multiple of 8, and 112 bytes of
/// framing (144 if `executable`).
///
/// Exactly `size` bytes are read; if `contents` ends earlier the result is an
/// [`io::ErrorKind::UnexpectedEof`] error. Memory use does not depend on `size`.
pub fn write_single_file_nar<R: Read, W: Write>(
    mut contents: R,
    size: u64,
    executable: bool,
    w: W,
) -> io::Result<u64> {
    let mut sink = Sink::new(w);
    sink.string(MAGIC)?;
    sink.file_header(executable, size)?;
    let mut buf = vec![0u8; BUFFER_SIZE];
    copy_exact(&mut contents, &mut sink, size, &mut buf)?;
    sink.file_end(size)?;
    sink.finish()
}

/// Serialises the file system object at `path` as a NAR, exactly as `nix-store --dump` does,
/// and returns the number of bytes written.
///
/// Symlinks are not followed (a symlink at `path` gives a symlink NAR). A regular file is
/// executable in the NAR if its owner may execute it (`S_IXUSR`). Directory entries are written
/// in byte order of their names. Sockets, FIFOs and devices cannot be represented and are
/// [`io::ErrorKind::InvalidInput`] errors, as are file names or symlink targets that the NAR
/// reader would reject and directories nested deeper than [`MAX_DEPTH`]. A file whose size
/// changes while it is read is an error. Every I/O error names the file it concerns.
pub fn dump_path<W: Write>(path: &Path, w: W) -> io::Result<u64> {
    let mut sink = Sink::new(w);
    sink.string(MAGIC)?;
    let mut buf = vec![0u8; BUFFER_SIZE];
    dump(&mut sink, path, 0, &mut buf)?;
    sink.finish()
}

fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn dump<W: Write>(sink: &mut Sink<W>, path: &Path, depth: usize, buf: &mut [u8]) -> io::Result<()> {
    let meta = fs::symlink_metadata(path).map_err(|e| with_path(e, path))?;
    let ft = meta.file_type();
    if ft.is_file() {
        let executable = meta.permissions().mode() & 0o100 != 0;
        let size = meta.len();
        let mut f = File::open(path).map_err(|e| with_path(e, path))?;
        sink.file_header(executable, size)?;
        copy_exact(&mut f, sink, size, buf).map_err(|e| with_path(e, path))?;
        // A file that grew while it was read would give a NAR that matches no single state.
        if read_retrying(&mut f, &mut buf[..1]).map_err(|e| with_path(e, path))? != 0 {
            let msg = format!(
                "{}: the file grew while it was being dumped",
                path.display()
            );
            return Err(io::Error::new(io::ErrorKind::InvalidData, msg));
        }
        sink.file_end(size)
    } else if ft.is_symlink() {
        let target = fs::read_link(path).map_err(|e| with_path(e, path))?;
        sink.symlink(target.as_os_str().as_bytes())
            .map_err(|e| with_path(e, path))
    } else if ft.is_dir() {
        let mut names = Vec::new();
        for entry in fs::read_dir(path).map_err(|e| with_path(e, path))? {
            let entry = entry.map_err(|e| with_path(e, path))?;
            names.push(entry.file_name());
        }
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        sink.strings(&[OPEN, TYPE, DIRECTORY])?;
        for name in names {
            let child = path.join(&name);
            sink.entry_start(name.as_bytes(), depth)
                .map_err(|e| with_path(e, &child))?;
            dump(sink, &child, depth + 1, buf)?;
            sink.string(CLOSE)?;
        }
        sink.string(CLOSE)
    } else {
        let msg = format!(
            "{}: a NAR can only hold regular files, directories and symlinks",
            path.display()
        );
        Err(io::Error::new(io::ErrorKind::InvalidInput, msg))
    }
}

fn read_retrying(r: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match r.read(buf) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Copies exactly `size` bytes from `r` to the sink.
fn copy_exact<W: Write>(
    r: &mut dyn Read,
    sink: &mut Sink<W>,
    size: u64,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left).map_or(buf.len(), |l| l.min(buf.len()));
        let n = read_retrying(r, &mut buf[..want])?;
        if n == 0 {
            let msg = format!("the contents ended after {} of {size} bytes", size - left);
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, msg));
        }
        sink.raw(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

fn invalid_input(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

/// The NAR framing on top of a buffered writer that counts what it writes.
struct Sink<W: Write> {
    w: BufWriter<W>,
    written: u64,
}

impl<W: Write> Sink<W> {
    fn new(w: W) -> Sink<W> {
        Sink {
            w: BufWriter::with_capacity(BUFFER_SIZE, w),
            written: 0,
        }
    }

    fn raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.w.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn u64(&mut self, n: u64) -> io::Result<()> {
        self.raw(&n.to_le_bytes())
    }

    fn padding(&mut self, len: u64) -> io::Result<()> {
        self.raw(&[0u8; 8][..wire::padding_len(len)])
    }

    fn string(&mut self, s: &[u8]) -> io::Result<()> {
        self.u64(s.len() as u64)?;
        self.raw(s)?;
        self.padding(s.len() as u64)
    }

    fn strings(&mut self, ss: &[&[u8]]) -> io::Result<()> {
        ss.iter().try_for_each(|s| self.string(s))
    }

    /// `( type regular [executable ""] contents <size>`; the contents follow.
    fn file_header(&mut self, executable: bool, size: u64) -> io::Result<()> {
        self.strings(&[OPEN, TYPE, REGULAR])?;
        if executable {
            self.strings(&[EXECUTABLE, EMPTY])?;
        }
        self.string(CONTENTS)?;
        self.u64(size)
    }

    /// The padding after `size` bytes of contents, and the closing `)`.
    fn file_end(&mut self, size: u64) -> io::Result<()> {
        self.padding(size)?;
        self.string(CLOSE)
    }

    fn symlink(&mut self, target: &[u8]) -> io::Result<()> {
        if let Some(problem) = wire::target_problem(target) {
            return Err(invalid_input(problem.to_owned()));
        }
        if target.len() as u64 > MAX_TARGET_LEN {
            return Err(invalid_input(format!(
                "the symlink target is {} bytes long, more than the limit of {MAX_TARGET_LEN}",
                target.len()
            )));
        }
        self.strings(&[OPEN, TYPE, SYMLINK, TARGET, target, CLOSE])
    }

    /// `entry ( name <name> node`, for an entry of a directory at `depth`; the node follows.
    fn entry_start(&mut self, name: &[u8], depth: usize) -> io::Result<()> {
        if let Some(problem) = wire::name_problem(name) {
            let shown = wire::show_bytes(name);
            return Err(invalid_input(format!(
                "invalid entry name {shown}: {problem}"
            )));
        }
        if name.len() as u64 > MAX_NAME_LEN {
            return Err(invalid_input(format!(
                "the entry name is {} bytes long, more than the limit of {MAX_NAME_LEN}",
                name.len()
            )));
        }
        if depth >= MAX_DEPTH {
            return Err(invalid_input(format!(
                "directories are nested more than {MAX_DEPTH} levels deep"
            )));
        }
        self.strings(&[ENTRY, OPEN, NAME, name, NODE])
    }

    fn finish(mut self) -> io::Result<u64> {
        self.w.flush()?;
        Ok(self.written)
    }
}
