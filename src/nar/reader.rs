//! The streaming, validating NAR parser: [`parse`] with a [`NarVisitor`], and [`validate`].
//!
//! The parser reads its input through its own 64 KiB buffer, holds at most one entry name or
//! symlink target (both bounded) at a time, and hands file contents to the visitor as a
//! [`Read`]er limited to the file's size, so a NAR of any size is checked in bounded memory.
//! Every rule in the [module documentation](super) is checked; the first violation ends the
//! parse with a [`NarError`].

use std::io::{self, Read};

use super::wire::{
    self, CLOSE, CONTENTS, DIRECTORY, EMPTY, ENTRY, EXECUTABLE, MAGIC, MAX_TOKEN_LEN, NAME, NODE,
    OPEN, REGULAR, SYMLINK, TARGET, TYPE,
};
use super::{NarError, NarErrorKind, NarPath, MAX_DEPTH, MAX_NAME_LEN, MAX_TARGET_LEN};

/// The size of the parser's input buffer.
const BUFFER_SIZE: usize = 64 * 1024;

/// Receives the nodes of a NAR from [`parse`], in the order they appear (depth first, entries
/// in name order).
///
/// Every method has a default that does nothing, so a visitor implements only what it needs.
/// An error returned by a method ends the parse with [`NarErrorKind::Output`].
pub trait NarVisitor {
    /// A directory starts; its entries follow.
    fn directory(&mut self, path: &NarPath) -> io::Result<()> {
        let _ = path;
        Ok(())
    }

    /// The directory at `path` has no more entries.
    fn directory_end(&mut self, path: &NarPath) -> io::Result<()> {
        let _ = path;
        Ok(())
    }

    /// A regular file of `size` bytes. `contents` yields at most `size` bytes; the visitor may
    /// read all, some or none of them, and the parser skips what is left. If the NAR ends
    /// inside the contents, `contents` returns an error (never a short read) and the parse
    /// fails with [`NarErrorKind::Truncated`], whatever the visitor returns.
    fn file(
        &mut self,
        path: &NarPath,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()> {
        let _ = (path, executable, size, contents);
        Ok(())
    }

    /// A symlink. `target` is non-empty and contains no NUL byte.
    fn symlink(&mut self, path: &NarPath, target: &[u8]) -> io::Result<()> {
        let _ = (path, target);
        Ok(())
    }
}

/// Counts of what a valid NAR contained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NarSummary {
    /// The size of the NAR in bytes (the narinfo `NarSize`).
    pub nar_size: u64,
    /// The number of regular files.
    pub regular_files: u64,
    /// How many of the regular files are executable.
    pub executables: u64,
    /// The number of directories, the root included if it is one.
    pub directories: u64,
    /// The number of symlinks.
    pub symlinks: u64,
    /// The total size of the contents of all regular files.
    pub content_bytes: u64,
}

/// Parses a whole NAR from `r`, calling `visitor` for every node, and checks that nothing
/// follows the archive.
///
/// `r` need not be buffered. On success the summary's `nar_size` is the number of bytes read.
pub fn parse<R: Read, V: NarVisitor + ?Sized>(
    r: R,
    visitor: &mut V,
) -> Result<NarSummary, NarError> {
    let mut parser = Parser {
        input: Input::new(r),
        visitor,
        path: NarPath::root(),
        summary: NarSummary::default(),
        contents_failure: None,
    };
    parser.archive()?;
    Ok(parser.summary)
}

/// Checks that `r` holds exactly one valid NAR, reading it to the end.
pub fn validate<R: Read>(r: R) -> Result<NarSummary, NarError> {
    struct Nothing;
    impl NarVisitor for Nothing {}
    parse(r, &mut Nothing)
}

/// The buffered input of the parser, which counts the bytes consumed.
struct Input<R> {
    inner: R,
    buf: Box<[u8]>,
    /// The next unread byte of `buf`.
    pos: usize,
    /// The end of the valid bytes in `buf`.
    end: usize,
    /// The stream offset of `buf[0]`.
    base: u64,
}

impl<R: Read> Input<R> {
    fn new(inner: R) -> Input<R> {
        Input {
            inner,
            buf: vec![0; BUFFER_SIZE].into_boxed_slice(),
            pos: 0,
            end: 0,
            base: 0,
        }
    }

    /// The stream offset of the next unread byte.
    fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    /// Makes sure that unread bytes are buffered; `false` at the end of the stream.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos < self.end {
            return Ok(true);
        }
        self.base += self.end as u64;
        self.pos = 0;
        self.end = 0;
        loop {
            match self.inner.read(&mut self.buf) {
                Ok(n) => {
                    self.end = n;
                    return Ok(n > 0);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Reads up to `out.len()` bytes; `Ok(0)` only at the end of the stream (or for an empty
    /// `out`). Large reads bypass the buffer.
    fn read_some(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if out.is_empty() {
            return Ok(0);
        }
        if self.pos == self.end && out.len() >= self.buf.len() {
            self.base += self.end as u64;
            self.pos = 0;
            self.end = 0;
            loop {
                match self.inner.read(out) {
                    Ok(n) => {
                        self.base += n as u64;
                        return Ok(n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        if !self.fill()? {
            return Ok(0);
        }
        let n = out.len().min(self.end - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }

    /// Fills `out` completely; [`NarErrorKind::Truncated`] if the stream ends first.
    fn read_exact(&mut self, out: &mut [u8]) -> Result<(), NarErrorKind> {
        let mut done = 0;
        while done < out.len() {
            match self.read_some(&mut out[done..]) {
                Ok(0) => return Err(NarErrorKind::Truncated),
                Ok(n) => done += n,
                Err(e) => return Err(NarErrorKind::Read(e)),
            }
        }
        Ok(())
    }

    /// Discards `n` bytes; [`NarErrorKind::Truncated`] if the stream ends first.
    fn skip(&mut self, mut n: u64) -> Result<(), NarErrorKind> {
        while n > 0 {
            match self.fill() {
                Ok(true) => {}
                Ok(false) => return Err(NarErrorKind::Truncated),
                Err(e) => return Err(NarErrorKind::Read(e)),
            }
            let available = (self.end - self.pos) as u64;
            let step = available.min(n);
            // `step` is at most `available`, a buffer length, so it fits in usize.
            self.pos += step as usize;
            n -= step;
        }
        Ok(())
    }
}

/// The contents of one regular file, handed to [`NarVisitor::file`].
struct Contents<'a, R> {
    input: &'a mut Input<R>,
    remaining: u64,
    path: &'a NarPath,
    /// Where an input failure is recorded, so that it is reported as such even if the visitor
    /// turns it into its own error or ignores it.
    failure: &'a mut Option<NarError>,
}

impl<R: Read> Read for Contents<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = usize::try_from(self.remaining).map_or(buf.len(), |r| r.min(buf.len()));
        match self.input.read_some(&mut buf[..want]) {
            Ok(0) => {
                *self.failure = Some(NarError::new(
                    NarErrorKind::Truncated,
                    self.input.offset(),
                    self.path.clone(),
                ));
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the NAR ends inside the contents of a file",
                ))
            }
            Ok(n) => {
                self.remaining -= n as u64;
                Ok(n)
            }
            Err(e) => {
                let reported = io::Error::new(e.kind(), "cannot read the NAR");
                *self.failure = Some(NarError::new(
                    NarErrorKind::Read(e),
                    self.input.offset(),
                    self.path.clone(),
                ));
                Err(reported)
            }
        }
    }
}

struct Parser<'v, R, V: ?Sized> {
    input: Input<R>,
    visitor: &'v mut V,
    path: NarPath,
    summary: NarSummary,
    contents_failure: Option<NarError>,
}

impl<R: Read, V: NarVisitor + ?Sized> Parser<'_, R, V> {
    /// An error of `kind` at `offset` in the current node.
    fn error_at(&self, kind: NarErrorKind, offset: u64) -> NarError {
        NarError::new(kind, offset, self.path.clone())
    }

    /// An error of `kind` at the current input position.
    fn error_here(&self, kind: NarErrorKind) -> NarError {
        self.error_at(kind, self.input.offset())
    }

    fn read_exact(&mut self, out: &mut [u8]) -> Result<(), NarError> {
        self.input.read_exact(out).map_err(|k| self.error_here(k))
    }

    fn read_u64(&mut self) -> Result<u64, NarError> {
        let mut b = [0u8; 8];
        self.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads and checks the padding after a string of `len` bytes.
    fn read_padding(&mut self, len: u64) -> Result<(), NarError> {
        let n = wire::padding_len(len);
        let start = self.input.offset();
        let mut pad = [0u8; 8];
        self.read_exact(&mut pad[..n])?;
        match pad[..n].iter().position(|&b| b != 0) {
            None => Ok(()),
            Some(i) => Err(self.error_at(NarErrorKind::NonZeroPadding, start + i as u64)),
        }
    }

    /// Reads a keyword that must be one of `options`, and returns it.
    fn read_token(&mut self, options: &[&'static [u8]]) -> Result<&'static [u8], NarError> {
        let start = self.input.offset();
        let len = self.read_u64()?;
        let expected = || {
            let names: Vec<String> = options.iter().map(|o| wire::show_bytes(o)).collect();
            names.join(" or ")
        };
        if len > MAX_TOKEN_LEN {
            let kind = NarErrorKind::UnexpectedToken {
                expected: expected(),
                found: format!("a string of {len} bytes"),
            };
            return Err(self.error_at(kind, start));
        }
        let mut buf = [0u8; MAX_TOKEN_LEN as usize];
        // `len` is at most MAX_TOKEN_LEN here.
        let word = &mut buf[..len as usize];
        self.read_exact(word)?;
        self.read_padding(len)?;
        match options.iter().find(|o| **o == &word[..]) {
            Some(found) => Ok(found),
            None => {
                let kind = NarErrorKind::UnexpectedToken {
                    expected: expected(),
                    found: wire::show_bytes(word),
                };
                Err(self.error_at(kind, start))
            }
        }
    }

    fn expect(&mut self, token: &'static [u8]) -> Result<(), NarError> {
        self.read_token(&[token]).map(|_| ())
    }

    /// Reads a string of at most `max` bytes; longer ones are rejected before allocating.
    fn read_bounded(&mut self, max: u64, what: &'static str) -> Result<Vec<u8>, NarError> {
        let start = self.input.offset();
        let len = self.read_u64()?;
        if len > max {
            return Err(self.error_at(NarErrorKind::TooLong { what, len, max }, start));
        }
        // `len` is at most `max`, a small constant.
        let mut s = vec![0u8; len as usize];
        self.read_exact(&mut s)?;
        self.read_padding(len)?;
        Ok(s)
    }

    fn visited(&self, offset: u64, r: io::Result<()>) -> Result<(), NarError> {
        r.map_err(|e| self.error_at(NarErrorKind::Output(e), offset))
    }

    fn archive(&mut self) -> Result<(), NarError> {
        let len = self.read_u64()?;
        if len != MAGIC.len() as u64 {
            return Err(self.error_at(NarErrorKind::BadMagic, 0));
        }
        let mut magic = [0u8; 13];
        self.read_exact(&mut magic)?;
        if magic != MAGIC {
            return Err(self.error_at(NarErrorKind::BadMagic, 0));
        }
        self.read_padding(len)?;
        self.node()?;
        self.summary.nar_size = self.input.offset();
        match self.input.fill() {
            Ok(false) => Ok(()),
            Ok(true) => Err(self.error_here(NarErrorKind::TrailingData)),
            Err(e) => Err(self.error_here(NarErrorKind::Read(e))),
        }
    }

    /// `"(" "type" ... ")"`: one node at `self.path`.
    fn node(&mut self) -> Result<(), NarError> {
        self.expect(OPEN)?;
        self.expect(TYPE)?;
        let kind = self.read_token(&[REGULAR, SYMLINK, DIRECTORY])?;
        if kind == REGULAR {
            self.regular()
        } else if kind == SYMLINK {
            self.symlink()
        } else {
            self.directory()
        }
    }

    fn regular(&mut self) -> Result<(), NarError> {
        let executable = self.read_token(&[EXECUTABLE, CONTENTS])? == EXECUTABLE;
        if executable {
            self.expect(EMPTY)?;
            self.expect(CONTENTS)?;
        }
        let size = self.read_u64()?;
        let start = self.input.offset();
        let mut contents = Contents {
            input: &mut self.input,
            remaining: size,
            path: &self.path,
            failure: &mut self.contents_failure,
        };
        let result = self
            .visitor
            .file(&self.path, executable, size, &mut contents);
        let remaining = contents.remaining;
        if let Some(failure) = self.contents_failure.take() {
            return Err(failure);
        }
        self.visited(start, result)?;
        self.input.skip(remaining).map_err(|k| self.error_here(k))?;
        self.read_padding(size)?;
        self.expect(CLOSE)?;
        self.summary.regular_files += 1;
        self.summary.executables += u64::from(executable);
        self.summary.content_bytes += size;
        Ok(())
    }

    fn symlink(&mut self) -> Result<(), NarError> {
        self.expect(TARGET)?;
        let start = self.input.offset();
        let target = self.read_bounded(MAX_TARGET_LEN, "a symlink target")?;
        if let Some(reason) = wire::target_problem(&target) {
            return Err(self.error_at(NarErrorKind::InvalidSymlinkTarget { reason }, start));
        }
        let result = self.visitor.symlink(&self.path, &target);
        self.visited(start, result)?;
        self.expect(CLOSE)?;
        self.summary.symlinks += 1;
        Ok(())
    }

    fn directory(&mut self) -> Result<(), NarError> {
        let start = self.input.offset();
        let result = self.visitor.directory(&self.path);
        self.visited(start, result)?;
        let mut previous: Option<Vec<u8>> = None;
        loop {
            let entry_start = self.input.offset();
            if self.read_token(&[ENTRY, CLOSE])? == CLOSE {
                break;
            }
            if self.path.depth() >= MAX_DEPTH {
                let kind = NarErrorKind::TooDeep { max: MAX_DEPTH };
                return Err(self.error_at(kind, entry_start));
            }
            self.expect(OPEN)?;
            self.expect(NAME)?;
            let name_start = self.input.offset();
            let name = self.read_bounded(MAX_NAME_LEN, "an entry name")?;
            if let Some(reason) = wire::name_problem(&name) {
                let kind = NarErrorKind::InvalidName {
                    name: wire::show_bytes(&name),
                    reason,
                };
                return Err(self.error_at(kind, name_start));
            }
            if let Some(prev) = &previous {
                let kind = match name.as_slice().cmp(prev) {
                    std::cmp::Ordering::Greater => None,
                    std::cmp::Ordering::Equal => Some(NarErrorKind::DuplicateEntry {
                        name: wire::show_bytes(&name),
                    }),
                    std::cmp::Ordering::Less => Some(NarErrorKind::EntriesNotSorted {
                        previous: wire::show_bytes(prev),
                        name: wire::show_bytes(&name),
                    }),
                };
                if let Some(kind) = kind {
                    return Err(self.error_at(kind, name_start));
                }
            }
            self.expect(NODE)?;
            self.path.push(&name);
            self.node()?;
            self.path.pop();
            self.expect(CLOSE)?;
            previous = Some(name);
        }
        let end = self.input.offset();
        let result = self.visitor.directory_end(&self.path);
        self.visited(end, result)?;
        self.summary.directories += 1;
        Ok(())
    }
}
