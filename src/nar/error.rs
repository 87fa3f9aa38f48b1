//! [`NarError`]: what went wrong while reading, checking or unpacking a NAR, and where.

use std::fmt;
use std::io;
use std::path::PathBuf;

use super::NarPath;

/// An error from reading, checking, extracting or unpacking a NAR.
///
/// It says what is wrong ([`NarError::kind`]), at which byte offset of the (uncompressed) NAR
/// stream the problem was found, and at which node inside the NAR.
#[derive(Debug)]
pub struct NarError {
    /// What is wrong.
    pub kind: NarErrorKind,
    /// The byte offset in the NAR stream where the problem starts. For a NAR that ends early it
    /// is the number of bytes that were there.
    pub offset: u64,
    /// The node inside the NAR that was being read (for entry names: the directory holding the
    /// entry; for [`extract_file`](super::extract_file) results: the requested path).
    pub path: NarPath,
}

impl NarError {
    pub(crate) fn new(kind: NarErrorKind, offset: u64, path: NarPath) -> NarError {
        NarError { kind, offset, path }
    }
}

impl fmt::Display for NarError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (NAR byte {}, path {})",
            self.kind, self.offset, self.path
        )
    }
}

impl std::error::Error for NarError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.kind)
    }
}

/// The kinds of [`NarError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NarErrorKind {
    /// Reading the NAR stream failed (this includes corrupt compressed data).
    #[error("cannot read the NAR")]
    Read(#[source] io::Error),
    /// The NAR stream ends before the archive is complete.
    #[error("the NAR is truncated: the data ends before the archive is complete")]
    Truncated,
    /// The stream does not start with the string `nix-archive-1`.
    #[error("not a NAR: it does not start with the string \"nix-archive-1\"")]
    BadMagic,
    /// A keyword of the grammar was expected and something else was found.
    #[error("expected {expected}, found {found}")]
    UnexpectedToken {
        /// The keywords that were allowed here.
        expected: String,
        /// What was there, quoted (or its length, if too long to be a keyword).
        found: String,
    },
    /// A padding byte after a string is not zero.
    #[error("a padding byte is not zero")]
    NonZeroPadding,
    /// A string is longer than its limit; nothing of it was read.
    #[error("{what} is {len} bytes long, more than the limit of {max}")]
    TooLong {
        /// Which string: `"an entry name"` or `"a symlink target"`.
        what: &'static str,
        /// The declared length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A directory entry name is empty, `.`, `..`, or contains `/` or NUL.
    #[error("invalid entry name {name}: {reason}")]
    InvalidName {
        /// The name, quoted.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A directory entry name is not greater than the one before it.
    #[error("directory entries are not sorted: {name} comes after {previous}")]
    EntriesNotSorted {
        /// The earlier name, quoted.
        previous: String,
        /// The name that should have come first, quoted.
        name: String,
    },
    /// A directory contains the same name twice.
    #[error("duplicate directory entry {name}")]
    DuplicateEntry {
        /// The repeated name, quoted.
        name: String,
    },
    /// A symlink target is empty or contains NUL.
    #[error("invalid symlink target: {reason}")]
    InvalidSymlinkTarget {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Directories are nested more deeply than [`MAX_DEPTH`](super::MAX_DEPTH).
    #[error("directories are nested more than {max} levels deep")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// Bytes follow the end of the archive.
    #[error("data follows the end of the archive")]
    TrailingData,
    /// The consumer of the NAR (the visitor, or the output of an extraction) failed.
    #[error("cannot process the NAR contents")]
    Output(#[source] io::Error),
    /// The path given to [`extract_file`](super::extract_file) is malformed.
    #[error("invalid path inside the NAR {path:?}: {reason}")]
    InvalidPathInside {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The NAR is valid but has no node at the requested path.
    #[error("the NAR has no file at this path")]
    NotFound,
    /// The requested path is a directory, not a regular file.
    #[error("the path is a directory, not a regular file")]
    IsDirectory,
    /// The requested path is a symlink, not a regular file.
    #[error("the path is a symlink to {target}, not a regular file")]
    IsSymlink {
        /// The symlink target, quoted.
        target: String,
    },
    /// The destination of [`unpack`](super::unpack) already exists.
    #[error("cannot unpack into {}: it already exists", path.display())]
    DestinationExists {
        /// The destination.
        path: PathBuf,
    },
}
