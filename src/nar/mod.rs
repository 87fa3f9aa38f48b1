//! NAR (Nix ARchive): the serialisation of a file system tree that Nix hashes, signs and
//! stores in binary caches.
//!
//! - [`parse`] streams a NAR through a [`NarVisitor`], validating it completely;
//!   [`validate`] only checks it.
//! - [`extract_file`] copies one regular file out of a NAR; [`unpack`] writes the whole tree.
//! - [`dump_path`] serialises a file system tree as `nix-store --dump` does; [`write_nar`]
//!   serialises an in-memory [`NarNode`]; [`write_single_file_nar`] streams a one-file NAR.
//!
//! Everything streams: no NAR and no file in it is ever held in memory whole.
//!
//! # Format
//!
//! A NAR is a sequence of *strings*: a `u64` length (little endian), the bytes, and zero bytes
//! up to a multiple of 8. The only other item is the `u64` size before a file's contents.
//! Written with `"…"` for a string:
//!
//! ```text
//! nar       = "nix-archive-1" node
//! node      = "(" "type" ( regular | symlink | directory ) ")"
//! regular   = "regular" [ "executable" "" ] "contents" u64:size bytes[size] padding
//! symlink   = "symlink" "target" "target-path"
//! directory = "directory" { "entry" "(" "name" "entry-name" "node" node ")" }
//! ```
//!
//! # What the parser checks
//!
//! - the magic string, every keyword, and that every padding byte is zero;
//! - entry names: not empty, not `.` or `..`, no `/` or NUL, at most [`MAX_NAME_LEN`] bytes,
//!   and strictly increasing in byte order within a directory (so no duplicates);
//! - symlink targets: not empty, no NUL, at most [`MAX_TARGET_LEN`] bytes;
//! - directories nest at most [`MAX_DEPTH`] levels;
//! - the stream ends right after the archive: trailing bytes are an error.
//!
//! A length is checked against its limit before anything is allocated for it, so hostile input
//! (say a name that claims to be 2^60 bytes long) fails at once. File sizes have no limit;
//! their contents are streamed. Errors ([`NarError`]) give the byte offset and the path inside
//! the NAR where the problem is.
//!
//! ```
//! use nixipfs::nar::{extract_file, validate, write_nar, NarNode};
//!
//! let tree = NarNode::directory([("bin", NarNode::directory([("hello", NarNode::executable("#!/bin/sh\n"))]))]);
//! let mut nar = Vec::new();
//! write_nar(&tree, &mut nar).unwrap();
//!
//! let summary = validate(&nar[..]).unwrap();
//! assert_eq!((summary.directories, summary.executables), (2, 1));
//!
//! let mut out = Vec::new();
//! let file = extract_file(&nar[..], "/bin/hello", &mut out).unwrap();
//! assert!(file.executable);
//! assert_eq!(out, b"#!/bin/sh\n");
//! ```

mod error;
mod path;
mod reader;
mod unpack;
mod wire;
mod writer;

#[cfg(test)]
mod tests;

pub use error::{NarError, NarErrorKind};
pub use path::NarPath;
pub use reader::{parse, validate, NarSummary, NarVisitor};
pub use unpack::{extract_file, unpack, ExtractedFile, DIRECTORY_MODE, EXECUTABLE_MODE, FILE_MODE};
pub use writer::{dump_path, write_nar, write_single_file_nar, NarNode};

/// The longest entry name accepted, in bytes.
///
/// Nix itself sets no limit. File systems allow 255 bytes (`NAME_MAX` on Linux and macOS), so
/// no NAR made by `nix-store --dump` has longer names; the limit is set well above that, at the
/// Linux `PATH_MAX`, so that no NAR Nix accepts from a real file system is refused, while a
/// hostile length cannot force a large allocation.
pub const MAX_NAME_LEN: u64 = 4096;

/// The longest symlink target accepted, in bytes: `PATH_MAX` on Linux (a target there is at
/// most 4095 bytes).
pub const MAX_TARGET_LEN: u64 = 4096;

/// The deepest nesting of directories accepted: a node may have at most this many path
/// components. Nix sets no limit; this one bounds the parser's recursion.
pub const MAX_DEPTH: usize = 256;
