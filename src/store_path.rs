//! Nix store paths: `/nix/store/<32 nix32 chars>-<name>`, validated on construction.
//!
//! A [`StorePath`] holds the 20-byte digest and the name. It is only ever built from input that
//! passed the same checks Nix makes: the hash part is the canonical nix32 encoding of 20 bytes,
//! and the name has 1 to 211 characters from `[A-Za-z0-9+-._?=]` and does not start with `.`.
//! Store paths order exactly as their textual forms do, which is the order Nix uses when it
//! sorts references (for example in signature fingerprints).
//!
//! [`parse_store_path_prefix`] splits a path inside a store path, as Hydra reports build
//! products, into the store path and the rest.
//!
//! ```
//! use nixipfs::store_path::StorePath;
//! let p = StorePath::from_absolute_path("/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10")?;
//! assert_eq!(p.hash_part(), "w9yy7v61ipb5rx6i35zq1mvc2iqfmps1");
//! assert_eq!(p.name(), "hello-2.10");
//! assert_eq!(p.basename(), "w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10");
//! # Ok::<(), nixipfs::store_path::StorePathError>(())
//! ```

use std::cmp::Ordering;
use std::fmt;

use thiserror::Error;

use crate::nixbase32;
use crate::text::shorten;

/// Characters of untrusted input quoted in an error message.
const SHORTEN: usize = 300;

/// The store directory all paths handled here live in.
pub const STORE_DIR: &str = "/nix/store";

/// Length of the store path digest in bytes.
pub const DIGEST_LEN: usize = 20;

/// Length of the hash part of a store path basename in characters.
pub const HASH_PART_LEN: usize = nixbase32::encoded_len(DIGEST_LEN);

/// Longest name Nix accepts (a basename is then at most 244 characters).
pub const MAX_NAME_LEN: usize = 211;

/// Why a string is not a store path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum StorePathError {
    /// An absolute path that does not start with `/nix/store/`.
    #[error("{path:?} is not in {STORE_DIR}")]
    NotInStore {
        /// The input, shortened.
        path: String,
    },
    /// An absolute store path followed by a `/` (a trailing slash or a path inside it).
    #[error(
        "{path:?} has a trailing slash or a subpath; expected exactly {STORE_DIR}/<hash>-<name>"
    )]
    HasSubpath {
        /// The input, shortened.
        path: String,
    },
    /// A basename too short to hold a hash part, a dash and a name.
    #[error("store path basename {basename:?} is too short: expected <32-char hash>-<name>")]
    TooShort {
        /// The basename, shortened.
        basename: String,
    },
    /// The hash part is not 32 valid nix32 characters.
    #[error("store path {basename:?} has an invalid hash part: expected 32 nix32 characters")]
    InvalidHashPart {
        /// The basename, shortened.
        basename: String,
    },
    /// No `-` between the hash part and the name.
    #[error("store path {basename:?} has no '-' after the 32-character hash part")]
    MissingDash {
        /// The basename, shortened.
        basename: String,
    },
    /// The name is empty.
    #[error("store path name is empty")]
    EmptyName,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("store path name is {len} bytes long, more than the maximum of {MAX_NAME_LEN}")]
    NameTooLong {
        /// Length of the name in bytes.
        len: usize,
    },
    /// The name starts with a dot, which Nix forbids.
    #[error("store path name {name:?} starts with '.'")]
    NameStartsWithDot {
        /// The name, shortened.
        name: String,
    },
    /// The name contains a character outside `[A-Za-z0-9+-._?=]`.
    #[error("store path name {name:?} contains the invalid character {character:?} at position {position}")]
    InvalidNameChar {
        /// The name, shortened.
        name: String,
        /// The offending character.
        character: char,
        /// Byte offset of the character in the name.
        position: usize,
    },
    /// The part after the store path is not a plain relative path.
    #[error("path {path:?} inside the store path has an empty, '.' or '..' component")]
    InvalidSubpath {
        /// The input, shortened.
        path: String,
    },
}

/// A validated Nix store path.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct StorePath {
    digest: [u8; DIGEST_LEN],
    name: String,
}

impl StorePath {
    /// Builds a store path from its digest and name, validating the name.
    pub fn new(digest: [u8; DIGEST_LEN], name: &str) -> Result<Self, StorePathError> {
        validate_name(name)?;
        Ok(Self {
            digest,
            name: name.to_string(),
        })
    }

    /// Parses `/nix/store/<hash>-<name>`, with nothing after the name.
    pub fn from_absolute_path(s: &str) -> Result<Self, StorePathError> {
        let basename = strip_store_dir(s)?;
        if basename.contains('/') {
            return Err(StorePathError::HasSubpath {
                path: shorten(s, SHORTEN),
            });
        }
        Self::from_basename(basename)
    }

    /// Parses a basename `<hash>-<name>` (the form used in narinfo `References`).
    pub fn from_basename(s: &str) -> Result<Self, StorePathError> {
        let bytes = s.as_bytes();
        if bytes.len() < HASH_PART_LEN + 2 {
            return Err(StorePathError::TooShort {
                basename: shorten(s, SHORTEN),
            });
        }
        let digest = s
            .get(..HASH_PART_LEN)
            .and_then(|hash| nixbase32::decode_fixed::<DIGEST_LEN>(hash).ok())
            .ok_or_else(|| StorePathError::InvalidHashPart {
                basename: shorten(s, SHORTEN),
            })?;
        if bytes[HASH_PART_LEN] != b'-' {
            return Err(StorePathError::MissingDash {
                basename: shorten(s, SHORTEN),
            });
        }
        Self::new(digest, &s[HASH_PART_LEN + 1..])
    }

    /// The 20-byte digest.
    pub fn digest(&self) -> &[u8; DIGEST_LEN] {
        &self.digest
    }

    /// The 32-character nix32 hash part, which also names the path's `.narinfo`.
    pub fn hash_part(&self) -> String {
        nixbase32::encode(&self.digest)
    }

    /// The name after the hash part.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<hash>-<name>`.
    pub fn basename(&self) -> String {
        let mut out = String::with_capacity(HASH_PART_LEN + 1 + self.name.len());
        out.push_str(&self.hash_part());
        out.push('-');
        out.push_str(&self.name);
        out
    }

    /// `/nix/store/<hash>-<name>` (same as `Display`).
    pub fn to_absolute_path(&self) -> String {
        format!("{STORE_DIR}/{}", self.basename())
    }
}

impl Ord for StorePath {
    /// Orders as the textual paths do. The nix32 alphabet is in ASCII order and the hash part
    /// encodes the digest as a little-endian number, so comparing the digests from their last
    /// byte down compares the hash parts; equal hash parts are followed by `-` and the name.
    fn cmp(&self, other: &Self) -> Ordering {
        self.digest
            .iter()
            .rev()
            .cmp(other.digest.iter().rev())
            .then_with(|| self.name.cmp(&other.name))
    }
}

impl PartialOrd for StorePath {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for StorePath {
    /// Writes the absolute path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{STORE_DIR}/{}-{}", self.hash_part(), self.name)
    }
}

impl fmt::Debug for StorePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StorePath({self})")
    }
}

impl serde::Serialize for StorePath {
    /// Serializes as the absolute path.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for StorePath {
    /// Deserializes from the absolute path.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_absolute_path(&s).map_err(serde::de::Error::custom)
    }
}

/// Splits `/nix/store/<hash>-<name>/some/inner/path` into the store path and the rest, which is
/// `""` or starts with `/` (`"/some/inner/path"`). The rest must be a plain path: no empty
/// (so no trailing slash or `//`), `.` or `..` components.
pub fn parse_store_path_prefix(s: &str) -> Result<(StorePath, &str), StorePathError> {
    let after_dir = strip_store_dir(s)?;
    let (basename, rest) = match after_dir.find('/') {
        Some(slash) => after_dir.split_at(slash),
        None => (after_dir, ""),
    };
    let store_path = StorePath::from_basename(basename)?;
    if !rest.is_empty()
        && rest[1..]
            .split('/')
            .any(|component| matches!(component, "" | "." | ".."))
    {
        return Err(StorePathError::InvalidSubpath {
            path: shorten(s, SHORTEN),
        });
    }
    Ok((store_path, rest))
}

/// Whether `s` is a store path hash part: 32 characters of canonical nix32 for 20 bytes.
pub fn is_valid_hash_part(s: &str) -> bool {
    nixbase32::is_valid(s, DIGEST_LEN)
}

/// Checks a store path name the way Nix does.
pub fn validate_name(name: &str) -> Result<(), StorePathError> {
    if name.is_empty() {
        return Err(StorePathError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(StorePathError::NameTooLong { len: name.len() });
    }
    if name.starts_with('.') {
        return Err(StorePathError::NameStartsWithDot {
            name: shorten(name, SHORTEN),
        });
    }
    if let Some((position, character)) = name.char_indices().find(|&(_, c)| !is_name_char(c)) {
        return Err(StorePathError::InvalidNameChar {
            name: shorten(name, SHORTEN),
            character,
            position,
        });
    }
    Ok(())
}

/// Whether `c` may appear in a store path name.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.' | '_' | '?' | '=')
}

/// The part of `s` after `/nix/store/`.
fn strip_store_dir(s: &str) -> Result<&str, StorePathError> {
    s.strip_prefix(STORE_DIR)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| StorePathError::NotInStore {
            path: shorten(s, SHORTEN),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "/nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10";
    const HASH: &str = "w9yy7v61ipb5rx6i35zq1mvc2iqfmps1";

    #[test]
    fn parses_and_prints() {
        let p = StorePath::from_absolute_path(HELLO).unwrap();
        assert_eq!(p.hash_part(), HASH);
        assert_eq!(p.name(), "hello-2.10");
        assert_eq!(p.basename(), &HELLO[11..]);
        assert_eq!(p.to_absolute_path(), HELLO);
        assert_eq!(p.to_string(), HELLO);
        assert_eq!(format!("{p:?}"), format!("StorePath({HELLO})"));
        assert_eq!(StorePath::from_basename(&HELLO[11..]).unwrap(), p);
        assert_eq!(nixbase32::encode(p.digest()), HASH);
        assert_eq!(StorePath::new(*p.digest(), "hello-2.10").unwrap(), p);
        // All allowed name characters, and the longest allowed name.
        let odd = format!("{STORE_DIR}/{HASH}-aZ09+-._?=");
        assert_eq!(
            StorePath::from_absolute_path(&odd).unwrap().name(),
            "aZ09+-._?="
        );
        let longest = format!("{HASH}-{}", "x".repeat(MAX_NAME_LEN));
        assert_eq!(
            StorePath::from_basename(&longest).unwrap().basename(),
            longest
        );
        // Names may start with a dash and contain further dashes.
        assert_eq!(
            StorePath::from_basename(&format!("{HASH}--x"))
                .unwrap()
                .name(),
            "-x"
        );
    }

    #[test]
    fn rejects_bad_paths() {
        use StorePathError as E;
        type Check = fn(&E) -> bool;
        let cases: Vec<(String, Check)> = vec![
            (format!("/nix/store2/{HASH}-hello"), |e| {
                matches!(e, E::NotInStore { .. })
            }),
            (format!("nix/store/{HASH}-hello"), |e| {
                matches!(e, E::NotInStore { .. })
            }),
            (format!("/gnu/store/{HASH}-hello"), |e| {
                matches!(e, E::NotInStore { .. })
            }),
            (format!("{HELLO}/"), |e| matches!(e, E::HasSubpath { .. })),
            (format!("{HELLO}/bin/hello"), |e| {
                matches!(e, E::HasSubpath { .. })
            }),
            (format!("/nix/store/{HASH}"), |e| {
                matches!(e, E::TooShort { .. })
            }),
            (format!("/nix/store/{HASH}-"), |e| {
                matches!(e, E::TooShort { .. })
            }),
            (format!("/nix/store/{HASH}_hello"), |e| {
                matches!(e, E::MissingDash { .. })
            }),
            (format!("/nix/store/e{}-hello", &HASH[1..]), |e| {
                matches!(e, E::InvalidHashPart { .. })
            }),
            (format!("/nix/store/W{}-hello", &HASH[1..]), |e| {
                matches!(e, E::InvalidHashPart { .. })
            }),
            (format!("/nix/store/é{}-hello", &HASH[2..]), |e| {
                matches!(e, E::InvalidHashPart { .. })
            }),
            (format!("/nix/store/{}-hello", &HASH[1..]), |e| {
                matches!(e, E::InvalidHashPart { .. })
            }),
            (format!("/nix/store/{HASH}-.hidden"), |e| {
                matches!(e, E::NameStartsWithDot { .. })
            }),
            (format!("/nix/store/{HASH}-.."), |e| {
                matches!(e, E::NameStartsWithDot { .. })
            }),
            (format!("/nix/store/{HASH}-hel lo"), |e| {
                matches!(
                    e,
                    E::InvalidNameChar {
                        character: ' ',
                        position: 3,
                        ..
                    }
                )
            }),
            (format!("/nix/store/{HASH}-héllo"), |e| {
                matches!(
                    e,
                    E::InvalidNameChar {
                        character: 'é',
                        position: 1,
                        ..
                    }
                )
            }),
            (format!("/nix/store/{HASH}-a:b"), |e| {
                matches!(e, E::InvalidNameChar { character: ':', .. })
            }),
            (
                format!("/nix/store/{HASH}-{}", "x".repeat(MAX_NAME_LEN + 1)),
                |e| matches!(e, E::NameTooLong { len: 212 }),
            ),
        ];
        for (input, check) in cases {
            let err = StorePath::from_absolute_path(&input).unwrap_err();
            assert!(check(&err), "{input}: unexpected {err:?}");
            assert!(!err.to_string().is_empty());
        }
        assert_eq!(StorePath::new([0; 20], ""), Err(E::EmptyName));
        // The first character of a 32-char hash part carries no spare bits, so every valid
        // character is canonical; only the alphabet and the length matter.
        assert!(is_valid_hash_part(HASH));
        assert!(is_valid_hash_part("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"));
        assert!(!is_valid_hash_part(&HASH[1..]));
        assert!(!is_valid_hash_part(&format!("{HASH}0")));
        assert!(!is_valid_hash_part("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee"));
        assert!(!is_valid_hash_part(""));
    }

    #[test]
    fn splits_paths_inside_store_paths() {
        let channel =
            "/nix/store/00svgrbd1srnd74fkhik86izj3qxysx7-nixos-channel-17.09.1234.abcdef01234";
        let file = format!("{channel}/tarballs/nixos-17.09.1234.abcdef01234.tar.xz");
        let (p, rest) = parse_store_path_prefix(&file).unwrap();
        assert_eq!(p.to_string(), channel);
        assert_eq!(rest, "/tarballs/nixos-17.09.1234.abcdef01234.tar.xz");
        let (p, rest) = parse_store_path_prefix(channel).unwrap();
        assert_eq!((p.to_string().as_str(), rest), (channel, ""));
        let spaced = format!("{channel}/a b/ü");
        let (_, rest) = parse_store_path_prefix(&spaced).unwrap();
        assert_eq!(rest, "/a b/ü");
        for bad in [
            format!("{channel}/"),
            format!("{channel}//x"),
            format!("{channel}/x/"),
            format!("{channel}/../x"),
            format!("{channel}/x/./y"),
            format!("{channel}/x/.."),
        ] {
            assert!(
                matches!(
                    parse_store_path_prefix(&bad),
                    Err(StorePathError::InvalidSubpath { .. })
                ),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_store_path_prefix("/tmp/x"),
            Err(StorePathError::NotInStore { .. })
        ));
        assert!(matches!(
            parse_store_path_prefix(&format!("/nix/store/{HASH}/x")),
            Err(StorePathError::TooShort { .. })
        ));
    }

    #[test]
    fn orders_like_the_path_strings() {
        // Real hash parts from the fixtures, plus same-hash and prefix-name cases.
        let mut paths: Vec<StorePath> = [
            "0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0",
            "6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115",
            "j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12",
            "yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n",
            "0d71ygfwbmy1xjlbj1v027dfmy9cqavy-libffi-3.3",
            "0dbbrvlw2rahvzi69bmpqy1z9mvzg62s-gdbm-1.19",
            "0d71ygfwbmy1xjlbj1v027dfmy9cqavy-libffi",
            "0d71ygfwbmy1xjlbj1v027dfmy9cqavy-libffi-3.3-dev",
            "0d71ygfwbmy1xjlbj1v027dfmy9cqavy-Libffi",
            "00000000000000000000000000000000-a",
            "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz-a",
            "0000000000000000000000000000000z-a",
            "z0000000000000000000000000000000-a",
        ]
        .iter()
        .map(|b| StorePath::from_basename(b).unwrap())
        .collect();
        // Digests that differ in every byte position, generated deterministically.
        for k in 0..200u32 {
            let mut digest = [0u8; 20];
            for (i, b) in digest.iter_mut().enumerate() {
                *b = (k.wrapping_mul(2_654_435_761).rotate_left(i as u32) >> 7) as u8;
            }
            let name = ["a", "b", "a-b", "A"][k as usize % 4];
            paths.push(StorePath::new(digest, name).unwrap());
        }
        let mut by_ord = paths.clone();
        by_ord.sort();
        let mut by_string = paths.clone();
        by_string.sort_by_key(|p| p.to_string());
        assert_eq!(by_ord, by_string);
    }

    #[test]
    fn serde_uses_the_absolute_path() {
        let p = StorePath::from_absolute_path(HELLO).unwrap();
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(json, format!("\"{HELLO}\""));
        assert_eq!(serde_json::from_str::<StorePath>(&json).unwrap(), p);
        assert!(serde_json::from_str::<StorePath>("\"/nix/store/x\"").is_err());
    }
}
