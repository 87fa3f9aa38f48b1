//! [`NarPath`]: the position of a node inside a NAR.

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The path of a node inside a NAR, as a list of entry names from the root.
///
/// The root node has no components and is shown as `/`; the node reached through the entries
/// `bin` and `hello` is `/bin/hello`. Names are bytes: NAR entry names need not be UTF-8, but
/// the parser guarantees that they are non-empty, not `.` or `..`, and contain neither `/` nor
/// NUL.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct NarPath {
    /// `/name1/name2...`, or empty for the root.
    bytes: Vec<u8>,
    /// Where each component's leading `/` sits in `bytes`.
    starts: Vec<usize>,
}

impl NarPath {
    /// The root of the NAR.
    pub fn root() -> NarPath {
        NarPath::default()
    }

    /// Whether this is the root node.
    pub fn is_root(&self) -> bool {
        self.starts.is_empty()
    }

    /// The number of components: 0 for the root, 1 for its entries, and so on.
    pub fn depth(&self) -> usize {
        self.starts.len()
    }

    /// The entry names from the root down to this node.
    pub fn components(&self) -> impl Iterator<Item = &[u8]> + '_ {
        self.starts.iter().enumerate().map(move |(i, &start)| {
            let end = self.starts.get(i + 1).copied().unwrap_or(self.bytes.len());
            &self.bytes[start + 1..end]
        })
    }

    /// The last component, or `None` for the root.
    pub fn name(&self) -> Option<&[u8]> {
        self.components().last()
    }

    /// The path as bytes: `/a/b`, or the empty string for the root.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The file system path of this node when the NAR is unpacked at `base`: `base` itself for
    /// the root, otherwise `base` joined with each component.
    pub fn to_fs_path(&self, base: &Path) -> PathBuf {
        let mut p = base.to_path_buf();
        for c in self.components() {
            p.push(OsStr::from_bytes(c));
        }
        p
    }

    /// Appends a component. The caller has validated `name`.
    pub(crate) fn push(&mut self, name: &[u8]) {
        self.starts.push(self.bytes.len());
        self.bytes.push(b'/');
        self.bytes.extend_from_slice(name);
    }

    /// Removes the last component, if any.
    pub(crate) fn pop(&mut self) {
        if let Some(start) = self.starts.pop() {
            self.bytes.truncate(start);
        }
    }
}

impl fmt::Display for NarPath {
    /// Shows the path as `/a/b` (`/` for the root), replacing invalid UTF-8.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_root() {
            f.write_str("/")
        } else {
            f.write_str(&String::from_utf8_lossy(&self.bytes))
        }
    }
}

impl fmt::Debug for NarPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NarPath({:?})", self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_pop_and_views() {
        let mut p = NarPath::root();
        assert!(p.is_root());
        assert_eq!(p.to_string(), "/");
        assert_eq!(p.as_bytes(), b"");
        assert_eq!(p.name(), None);
        p.push(b"bin");
        p.push(b"hello");
        assert_eq!(p.depth(), 2);
        assert_eq!(p.to_string(), "/bin/hello");
        assert_eq!(p.as_bytes(), b"/bin/hello");
        assert_eq!(p.components().collect::<Vec<_>>(), [&b"bin"[..], b"hello"]);
        assert_eq!(p.name(), Some(&b"hello"[..]));
        assert_eq!(
            p.to_fs_path(Path::new("/tmp/x")),
            PathBuf::from("/tmp/x/bin/hello")
        );
        p.pop();
        assert_eq!(p.to_string(), "/bin");
        p.pop();
        p.pop();
        assert_eq!(p, NarPath::root());
        assert_eq!(p.to_fs_path(Path::new("/tmp/x")), PathBuf::from("/tmp/x"));
    }

    #[test]
    fn non_utf8_names_are_shown_lossily() {
        let mut p = NarPath::root();
        p.push(b"caf\xe9");
        assert_eq!(p.to_string(), "/caf\u{fffd}");
        assert_eq!(p.as_bytes(), b"/caf\xe9");
    }
}
