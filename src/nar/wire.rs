//! The tokens and framing of the NAR wire format, shared by the reader and the writer.
//!
//! Every item on the wire is either a little-endian `u64` or a string: its length as a `u64`,
//! its bytes, and zero bytes up to the next multiple of 8.

/// The magic string that starts every NAR.
pub(crate) const MAGIC: &[u8] = b"nix-archive-1";
pub(crate) const OPEN: &[u8] = b"(";
pub(crate) const CLOSE: &[u8] = b")";
pub(crate) const TYPE: &[u8] = b"type";
pub(crate) const REGULAR: &[u8] = b"regular";
pub(crate) const EXECUTABLE: &[u8] = b"executable";
pub(crate) const EMPTY: &[u8] = b"";
pub(crate) const CONTENTS: &[u8] = b"contents";
pub(crate) const SYMLINK: &[u8] = b"symlink";
pub(crate) const TARGET: &[u8] = b"target";
pub(crate) const DIRECTORY: &[u8] = b"directory";
pub(crate) const ENTRY: &[u8] = b"entry";
pub(crate) const NAME: &[u8] = b"name";
pub(crate) const NODE: &[u8] = b"node";

/// The longest keyword the grammar has (`nix-archive-1`), rounded up. A keyword whose declared
/// length exceeds this is rejected before any of it is read.
pub(crate) const MAX_TOKEN_LEN: u64 = 16;

/// The number of zero bytes that follow a string of `len` bytes.
pub(crate) fn padding_len(len: u64) -> usize {
    // The result is below 8, so the cast cannot truncate.
    ((8 - len % 8) % 8) as usize
}

/// Why a directory entry name is invalid, or `None` if it is a valid name.
///
/// The length limit is checked separately, before the name is read.
pub(crate) fn name_problem(name: &[u8]) -> Option<&'static str> {
    if name.is_empty() {
        Some("the name is empty")
    } else if name == b"." || name == b".." {
        Some("\".\" and \"..\" are not allowed as names")
    } else if name.contains(&b'/') {
        Some("the name contains '/'")
    } else if name.contains(&0) {
        Some("the name contains a NUL byte")
    } else {
        None
    }
}

/// Why a symlink target is invalid, or `None` if it is valid.
pub(crate) fn target_problem(target: &[u8]) -> Option<&'static str> {
    if target.is_empty() {
        Some("the symlink target is empty")
    } else if target.contains(&0) {
        Some("the symlink target contains a NUL byte")
    } else {
        None
    }
}

/// A short printable form of bytes from the NAR, for error messages: quoted, escaped, and cut
/// after 64 bytes.
pub(crate) fn show_bytes(bytes: &[u8]) -> String {
    const SHOWN: usize = 64;
    let cut = bytes.len().min(SHOWN);
    let mut s = format!("{:?}", String::from_utf8_lossy(&bytes[..cut]));
    if bytes.len() > SHOWN {
        s.push_str(&format!("... ({} bytes)", bytes.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding() {
        let pads: Vec<usize> = (0..=16).map(padding_len).collect();
        assert_eq!(pads, [0, 7, 6, 5, 4, 3, 2, 1, 0, 7, 6, 5, 4, 3, 2, 1, 0]);
        assert_eq!(padding_len(u64::MAX), 1);
    }

    #[test]
    fn names() {
        assert_eq!(name_problem(b"hello"), None);
        assert_eq!(name_problem(b"..."), None);
        assert_eq!(name_problem(b".hidden"), None);
        for bad in [&b""[..], b".", b"..", b"a/b", b"/", b"a\0b"] {
            assert!(name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn targets() {
        assert_eq!(target_problem(b"../bin/hello"), None);
        assert!(target_problem(b"").is_some());
        assert!(target_problem(b"/bin\0").is_some());
    }

    #[test]
    fn shown_bytes_are_bounded() {
        assert_eq!(show_bytes(b"regular"), "\"regular\"");
        assert_eq!(show_bytes(b"a\nb"), "\"a\\nb\"");
        let long = show_bytes(&[b'x'; 1000]);
        assert!(long.len() < 100 && long.ends_with("(1000 bytes)"), "{long}");
    }
}
