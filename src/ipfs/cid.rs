//! Content identifiers (CIDs), as the `cid`, `multihash` and `multibase` crates read and write
//! them, with what publishing needs on top: hashing blocks into CIDs, checking a block against
//! its CID, reading a CID at the start of a byte string (a CAR section), the base58btc form
//! js-ipfs answers in, and errors that can be compared.
//!
//! Two versions exist:
//! - CIDv0 is a bare sha2-256 multihash of a dag-pb block, written in base58btc (`Qm…`,
//!   46 characters). Its binary form is the 34-byte multihash `0x12 0x20 <digest>`.
//! - CIDv1 is `varint(1) varint(codec) multihash`, written with a multibase prefix. The canonical
//!   text form (kubo's) is base32 lower case (`b…`); js-ipfs answers in base58btc (`z…`), and
//!   [`Cid::parse`] accepts every multibase, the letters of a base32 text in one case only.
//!
//! Equality is by decoded value: `zb2rh…` and `bafk…` of the same block are equal. A CIDv0 and a
//! CIDv1 of the same block are different values; compare them through [`Cid::to_v1`].
//!
//! ```
//! use nixipfs::ipfs::cid::{Cid, DAG_PB};
//! let v0 = Cid::parse("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn").unwrap();
//! assert_eq!(v0.version(), 0);
//! assert_eq!(v0.codec(), DAG_PB);
//! assert_eq!(
//!     v0.to_v1().to_string(),
//!     "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354"
//! );
//! ```

use std::fmt;
use std::str::FromStr;

use cid::Version;
use multibase::Base;
use multihash::Multihash;
use sha2::{Digest, Sha256};

/// Multicodec of raw blocks (file leaves with `raw-leaves`).
pub const RAW: u64 = 0x55;
/// Multicodec of dag-pb blocks (UnixFS nodes).
pub const DAG_PB: u64 = 0x70;
/// Multicodec of dag-cbor blocks (CAR headers use this encoding).
pub const DAG_CBOR: u64 = 0x71;

/// Multihash code of the identity "hash" (the digest is the data itself).
pub const IDENTITY: u64 = 0x00;
/// Multihash code of sha2-256, the only hash kubo uses by default.
pub const SHA2_256: u64 = 0x12;

/// Longest digest a [`Cid`] can hold (sha2-512, blake2b-512).
pub const MAX_DIGEST_LEN: usize = 64;

/// Why a CID could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidError {
    /// The text or byte string was empty.
    #[error("empty CID")]
    Empty,
    /// The multibase prefix character is not one of a known base.
    #[error("CID {input:?}: unknown multibase prefix {prefix:?}")]
    UnknownMultibase {
        /// The text that was parsed.
        input: String,
        /// Its first character.
        prefix: char,
    },
    /// The text is not valid in the base its prefix announces.
    #[error("CID {input:?}: invalid {base:?} text")]
    InvalidBase {
        /// The text that was parsed.
        input: String,
        /// The base.
        base: Base,
    },
    /// The CID version is neither 0 nor 1.
    #[error("unsupported CID version {0}")]
    UnsupportedVersion(u64),
    /// The bytes are not a CID: a varint is malformed or not minimal, a multihash announces
    /// a digest longer than [`MAX_DIGEST_LEN`], or the bytes end inside the CID.
    #[error("malformed CID bytes: {0}")]
    Malformed(String),
    /// The digest is longer than [`MAX_DIGEST_LEN`].
    #[error("CID digest of {0} bytes is longer than {MAX_DIGEST_LEN}")]
    DigestTooLong(usize),
    /// Bytes remain after a complete CID.
    #[error("CID bytes: {0} trailing bytes after the CID")]
    TrailingBytes(usize),
    /// A CIDv0 must be a sha2-256 multihash of a dag-pb block.
    #[error("a CIDv0 must be a 32-byte sha2-256 dag-pb hash (codec {codec:#x}, hash {hash_code:#x}, {digest_len} bytes)")]
    InvalidV0 {
        /// The codec asked for.
        codec: u64,
        /// The multihash code asked for.
        hash_code: u64,
        /// The digest length given.
        digest_len: usize,
    },
}

impl CidError {
    /// The error for `bytes`, which the `cid` crate refused with `error`.
    fn of_bytes(error: cid::Error, bytes: &[u8]) -> CidError {
        match error {
            cid::Error::InvalidCidVersion | cid::Error::InvalidExplicitCidV0 => {
                let version = unsigned_varint::decode::u64(bytes).map_or(0, |(v, _)| v);
                CidError::UnsupportedVersion(version)
            }
            cid::Error::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                CidError::Malformed("the bytes end inside the CID".to_string())
            }
            other => CidError::Malformed(other.to_string()),
        }
    }
}

/// A content identifier: version, codec and multihash (hash code and digest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid(cid::CidGeneric<MAX_DIGEST_LEN>);

impl Cid {
    /// The CID of `version` (0 or 1) with `codec` and the multihash `hash_code` + `digest`. A
    /// CIDv0 must be a sha2-256 hash of a [`DAG_PB`] block.
    pub fn new(version: u8, codec: u64, hash_code: u64, digest: &[u8]) -> Result<Cid, CidError> {
        let version = match version {
            0 => Version::V0,
            1 => Version::V1,
            v => return Err(CidError::UnsupportedVersion(u64::from(v))),
        };
        let hash = Multihash::wrap(hash_code, digest)
            .map_err(|_| CidError::DigestTooLong(digest.len()))?;
        cid::CidGeneric::new(version, codec, hash)
            .map(Cid)
            .map_err(|_| CidError::InvalidV0 {
                codec,
                hash_code,
                digest_len: digest.len(),
            })
    }

    /// The sha2-256 CID of `block`. Version 0 is only possible with the [`DAG_PB`] codec.
    pub fn sha2_256(version: u8, codec: u64, block: &[u8]) -> Result<Cid, CidError> {
        Cid::new(version, codec, SHA2_256, &Sha256::digest(block))
    }

    /// Parses the text form: a 46-character base58btc CIDv0 (`Qm…`), or a multibase CIDv1
    /// (`b…`, `B…`, `z…`, `f…`, …).
    pub fn parse(text: &str) -> Result<Cid, CidError> {
        let prefix = text.chars().next().ok_or(CidError::Empty)?;
        let invalid = |base| CidError::InvalidBase {
            input: text.to_owned(),
            base,
        };
        let bytes = if Version::is_v0_str(text) {
            Base::Base58Btc
                .decode(text)
                .map_err(|_| invalid(Base::Base58Btc))?
        } else {
            let base = Base::from_code(prefix).map_err(|_| CidError::UnknownMultibase {
                input: text.to_owned(),
                prefix,
            })?;
            let body = &text[prefix.len_utf8()..];
            // The multibase crate reads base32 letters in either case; its text is one case.
            let wrong_case = match base {
                Base::Base32Lower => body.bytes().any(|c| c.is_ascii_uppercase()),
                Base::Base32Upper => body.bytes().any(|c| c.is_ascii_lowercase()),
                _ => false,
            };
            if wrong_case {
                return Err(invalid(base));
            }
            base.decode(body).map_err(|_| invalid(base))?
        };
        Cid::from_bytes(&bytes)
    }

    /// Parses the binary form, which must be exactly one CID.
    pub fn from_bytes(bytes: &[u8]) -> Result<Cid, CidError> {
        let (cid, used) = Cid::read_bytes(bytes)?;
        if used != bytes.len() {
            return Err(CidError::TrailingBytes(bytes.len() - used));
        }
        Ok(cid)
    }

    /// Parses one CID at the start of `bytes` (as in a CAR section) and returns it with the
    /// number of bytes it took.
    pub fn read_bytes(bytes: &[u8]) -> Result<(Cid, usize), CidError> {
        if bytes.is_empty() {
            return Err(CidError::Empty);
        }
        let mut rest = bytes;
        let cid =
            cid::CidGeneric::read_bytes(&mut rest).map_err(|e| CidError::of_bytes(e, bytes))?;
        Ok((Cid(cid), bytes.len() - rest.len()))
    }

    /// The binary form: the multihash for CIDv0, `version codec multihash` for CIDv1.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.to_bytes()
    }

    /// Appends the binary form to `out`.
    pub fn write_bytes(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_bytes());
    }

    /// Length of the binary form in bytes (go-cid's `ByteLen`): 34 for a CIDv0, 36 for a
    /// sha2-256 CIDv1 with a one-byte codec.
    pub fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    /// CID version: 0 or 1.
    pub fn version(&self) -> u8 {
        match self.0.version() {
            Version::V0 => 0,
            Version::V1 => 1,
        }
    }

    /// Multicodec of the block ([`RAW`], [`DAG_PB`], …).
    pub fn codec(&self) -> u64 {
        self.0.codec()
    }

    /// Multihash code ([`SHA2_256`], …).
    pub fn hash_code(&self) -> u64 {
        self.0.hash().code()
    }

    /// The digest bytes of the multihash.
    pub fn digest(&self) -> &[u8] {
        self.0.hash().digest()
    }

    /// The same CID as version 1 (a CIDv1 is returned unchanged).
    pub fn to_v1(&self) -> Cid {
        Cid(cid::CidGeneric::new_v1(self.codec(), *self.0.hash()))
    }

    /// The text form in base58btc: `Qm…` for CIDv0, `z…` for CIDv1 (what js-ipfs prints).
    pub fn to_base58btc(&self) -> String {
        // Only a CIDv0 refuses bases, and base58btc is its own.
        self.0
            .to_string_of_base(Base::Base58Btc)
            .unwrap_or_else(|_| self.0.to_string())
    }

    /// Checks that `block` hashes to this CID. Returns `None` when the hash function is not
    /// one this crate computes (only sha2-256 and identity are).
    pub fn verify(&self, block: &[u8]) -> Option<bool> {
        match self.hash_code() {
            SHA2_256 => Some(Sha256::digest(block).as_slice() == self.digest()),
            IDENTITY => Some(block == self.digest()),
            _ => None,
        }
    }
}

impl fmt::Display for Cid {
    /// The canonical text form: base58btc for CIDv0, `b` + base32 lower case for CIDv1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Cid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Cid({self})")
    }
}

impl FromStr for Cid {
    type Err = CidError;

    fn from_str(s: &str) -> Result<Cid, CidError> {
        Cid::parse(s)
    }
}

impl<'de> serde::Deserialize<'de> for Cid {
    /// A CID in text form, as the node's JSON answers hold them.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Cid, D::Error> {
        let text = String::deserialize(deserializer)?;
        Cid::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// A sha2-256 CID whose codec fits in a byte (every block this crate makes, and most a node
/// lists) in 34 bytes: version, codec, digest. A [`Cid`] has room for any digest up to
/// [`MAX_DIGEST_LEN`] bytes and takes about three times as much; this is the form kept per
/// file when a mirror's files are counted in hundreds of thousands.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShortCid([u8; 34]);

impl ShortCid {
    /// The short form of `cid`, if it has one.
    pub fn of(cid: &Cid) -> Option<ShortCid> {
        let digest = cid.digest();
        let codec = u8::try_from(cid.codec()).ok()?;
        if cid.hash_code() != SHA2_256 || digest.len() != 32 {
            return None;
        }
        let mut key = [0u8; 34];
        key[0] = cid.version();
        key[1] = codec;
        key[2..].copy_from_slice(digest);
        Some(ShortCid(key))
    }

    /// Its 34 bytes: version, codec, digest.
    pub fn as_bytes(&self) -> &[u8; 34] {
        &self.0
    }

    /// The CID.
    pub fn cid(&self) -> Cid {
        Cid::new(self.0[0], u64::from(self.0[1]), SHA2_256, &self.0[2..])
            .expect("a short CID holds a valid sha2-256 CID")
    }
}

impl fmt::Debug for ShortCid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ShortCid({})", self.cid())
    }
}

/// A set of CIDs that holds the common ones compactly: a [`ShortCid`] when the CID has one,
/// any other CID as it is. Membership is exact.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CidSet {
    short: std::collections::HashSet<ShortCid>,
    long: std::collections::HashSet<Cid>,
}

/// The compact form of `cid` when it has one (see [`CidSet`]).
fn short_key(cid: &Cid) -> Option<ShortCid> {
    ShortCid::of(cid)
}

impl CidSet {
    /// An empty set.
    pub fn new() -> CidSet {
        CidSet::default()
    }

    /// Adds `cid`; false if it was there already.
    pub fn insert(&mut self, cid: Cid) -> bool {
        match short_key(&cid) {
            Some(key) => self.short.insert(key),
            None => self.long.insert(cid),
        }
    }

    /// Whether `cid` is in the set.
    pub fn contains(&self, cid: &Cid) -> bool {
        match short_key(cid) {
            Some(key) => self.short.contains(&key),
            None => self.long.contains(cid),
        }
    }

    /// Number of CIDs.
    pub fn len(&self) -> usize {
        self.short.len() + self.long.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every CID of the set, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = Cid> + '_ {
        self.short
            .iter()
            .map(ShortCid::cid)
            .chain(self.long.iter().copied())
    }
}

impl FromIterator<Cid> for CidSet {
    fn from_iter<I: IntoIterator<Item = Cid>>(iter: I) -> CidSet {
        let mut set = CidSet::new();
        set.extend(iter);
        set
    }
}

impl Extend<Cid> for CidSet {
    fn extend<I: IntoIterator<Item = Cid>>(&mut self, iter: I) {
        for cid in iter {
            self.insert(cid);
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cid_sets_tell_versions_codecs_and_hashes_apart() {
        let block = b"block";
        let v0 = Cid::sha2_256(0, DAG_PB, block).unwrap();
        let v1 = v0.to_v1();
        let raw = Cid::sha2_256(1, RAW, block).unwrap();
        let identity = Cid::new(1, RAW, IDENTITY, block).unwrap();
        let mut set = CidSet::new();
        assert!(set.insert(v0));
        assert!(!set.insert(v0));
        assert!(set.contains(&v0));
        assert!(!set.contains(&v1) && !set.contains(&raw) && !set.contains(&identity));
        set.extend([raw, identity]);
        assert!(set.contains(&raw) && set.contains(&identity) && !set.contains(&v1));
        assert_eq!(set.len(), 3);
        let mut all: Vec<Cid> = set.iter().collect();
        all.sort();
        let mut expected = vec![v0, raw, identity];
        expected.sort();
        assert_eq!(all, expected);
    }

    use super::*;

    const HELLO_V0: &str = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN";
    const HELLO_RAW: &str = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";
    const EMPTY_DIR_V0: &str = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn";
    const EMPTY_DIR_V1: &str = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354";

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn v0_round_trip() {
        let cid = Cid::parse(HELLO_V0).unwrap();
        assert_eq!(cid.version(), 0);
        assert_eq!(cid.codec(), DAG_PB);
        assert_eq!(cid.hash_code(), SHA2_256);
        assert_eq!(cid.digest().len(), 32);
        assert_eq!(cid.to_string(), HELLO_V0);
        assert_eq!(cid.to_base58btc(), HELLO_V0);
        let bytes = cid.to_bytes();
        assert_eq!(bytes.len(), 34);
        assert_eq!(&bytes[..2], &[0x12, 0x20]);
        assert_eq!(cid.encoded_len(), 34);
        assert_eq!(Cid::from_bytes(&bytes).unwrap(), cid);
    }

    #[test]
    fn v1_round_trip_in_every_base() {
        let cid = Cid::parse(HELLO_RAW).unwrap();
        assert_eq!(cid.version(), 1);
        assert_eq!(cid.codec(), RAW);
        assert_eq!(cid.to_string(), HELLO_RAW);
        assert_eq!(cid.encoded_len(), 36);
        assert_eq!(&cid.to_bytes()[..4], &[0x01, 0x55, 0x12, 0x20]);
        // The sha2-256 of "hello\n".
        assert_eq!(
            hex(cid.digest()),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        let z = cid.to_base58btc();
        assert!(z.starts_with("zb2"), "{z}");
        assert_eq!(Cid::parse(&z).unwrap(), cid);
        assert_eq!(Cid::parse(&HELLO_RAW.to_ascii_uppercase()).unwrap(), cid);
        let base16 = format!("f{}", hex(&cid.to_bytes()));
        assert_eq!(Cid::parse(&base16).unwrap(), cid);
        assert_eq!(HELLO_RAW.parse::<Cid>().unwrap(), cid);
    }

    #[test]
    fn js_ipfs_base58_forms_equal_base32() {
        // What js-ipfs returns for the directory and raw leaf of the known-answer table.
        let dir = Cid::parse(EMPTY_DIR_V1).unwrap();
        let z = dir.to_base58btc();
        assert!(z.starts_with("zdj7"), "{z}");
        assert_eq!(Cid::parse(&z).unwrap(), dir);
        assert_eq!(Cid::parse(EMPTY_DIR_V0).unwrap().to_v1(), dir);
        assert_ne!(Cid::parse(EMPTY_DIR_V0).unwrap(), dir);
    }

    #[test]
    fn hashes_blocks() {
        let raw = Cid::sha2_256(1, RAW, b"hello\n").unwrap();
        assert_eq!(raw.to_string(), HELLO_RAW);
        assert!(raw.verify(b"hello\n").unwrap());
        assert!(!raw.verify(b"hello").unwrap());
        // The empty directory block: PBNode { Data: UnixFS { Type: Directory } }.
        let dir = [0x0a, 0x02, 0x08, 0x01];
        assert_eq!(
            Cid::sha2_256(0, DAG_PB, &dir).unwrap().to_string(),
            EMPTY_DIR_V0
        );
        assert_eq!(
            Cid::sha2_256(1, DAG_PB, &dir).unwrap().to_string(),
            EMPTY_DIR_V1
        );
        assert!(matches!(
            Cid::sha2_256(0, RAW, b""),
            Err(CidError::InvalidV0 { codec: RAW, .. })
        ));
        assert_eq!(
            Cid::sha2_256(2, RAW, b""),
            Err(CidError::UnsupportedVersion(2))
        );
    }

    #[test]
    fn rejects_malformed_text() {
        assert_eq!(Cid::parse(""), Err(CidError::Empty));
        assert!(matches!(
            Cid::parse("xabc"),
            Err(CidError::UnknownMultibase { prefix: 'x', .. })
        ));
        assert!(matches!(
            Cid::parse("b0000"),
            Err(CidError::InvalidBase {
                base: Base::Base32Lower,
                ..
            })
        ));
        // Mixed case in a base32 lower-case CID.
        let mut mixed = HELLO_RAW.to_owned();
        mixed.replace_range(5..6, "E");
        assert!(matches!(
            Cid::parse(&mixed),
            Err(CidError::InvalidBase { .. })
        ));
        // A v0 with an invalid base58 character (0 is not in the alphabet).
        let bad_v0 = format!("Qm0{}", &HELLO_V0[3..]);
        assert!(matches!(
            Cid::parse(&bad_v0),
            Err(CidError::InvalidBase {
                base: Base::Base58Btc,
                ..
            })
        ));
        // A truncated CIDv1.
        let bytes = Cid::parse(HELLO_RAW).unwrap().to_bytes();
        let cut = multibase::encode(Base::Base58Btc, &bytes[..30]);
        assert!(matches!(Cid::parse(&cut), Err(CidError::Malformed(_))));
    }

    #[test]
    fn rejects_malformed_bytes() {
        let good = Cid::parse(HELLO_RAW).unwrap().to_bytes();
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(Cid::from_bytes(&trailing), Err(CidError::TrailingBytes(1)));
        assert_eq!(
            Cid::from_bytes(&[0x02, 0x55, 0x12, 0x00]),
            Err(CidError::UnsupportedVersion(2))
        );
        let malformed = [
            // The codec varint is cut short.
            &[0x01, 0x80][..],
            // The codec varint is not minimal.
            &[0x01, 0xd5, 0x00, 0x12, 0x00][..],
            // A digest announced as 65 bytes.
            &[0x01, 0x55, 0x12, 0x41][..],
            // A CIDv0 digest cut short.
            &[0x12, 0x20, 0x00][..],
        ];
        for bytes in malformed {
            assert!(
                matches!(Cid::from_bytes(bytes), Err(CidError::Malformed(_))),
                "{bytes:02x?}: {:?}",
                Cid::from_bytes(bytes)
            );
        }
        assert_eq!(Cid::from_bytes(&[]), Err(CidError::Empty));
        // read_bytes stops after the CID, as in a CAR section.
        let mut section = good.clone();
        section.extend_from_slice(b"block");
        let (cid, used) = Cid::read_bytes(&section).unwrap();
        assert_eq!(used, good.len());
        assert_eq!(cid.to_string(), HELLO_RAW);
    }

    #[test]
    fn identity_cid() {
        let cid = Cid::new(1, RAW, IDENTITY, b"hi").unwrap();
        assert_eq!(Cid::parse(&cid.to_string()).unwrap(), cid);
        assert_eq!(cid.verify(b"hi"), Some(true));
        assert_eq!(Cid::new(1, RAW, 0x13, &[0; 64]).unwrap().verify(b""), None);
        assert_eq!(
            Cid::new(1, RAW, 0x13, &[0; 65]),
            Err(CidError::DigestTooLong(65))
        );
    }
}
