//! Content identifiers (CIDs): parsing, binary and text forms, and hashing blocks into CIDs.
//!
//! Two versions exist:
//! - CIDv0 is a bare sha2-256 multihash of a dag-pb block, written in base58btc (`Qm…`,
//!   46 characters). Its binary form is the 34-byte multihash `0x12 0x20 <digest>`.
//! - CIDv1 is `varint(1) varint(codec) multihash`, written with a multibase prefix. The canonical
//!   text form (kubo's) is base32 lower case (`b…`); js-ipfs answers in base58btc (`z…`), and
//!   [`Cid::parse`] accepts both, as well as base32 upper case (`B…`) and base16 (`f…`/`F…`).
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

use sha2::{Digest, Sha256};

use super::varint::{self, VarintError};

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

/// Length of a CIDv0 in text form.
const V0_TEXT_LEN: usize = 46;
/// Length of a CIDv0 in binary form.
const V0_BYTES_LEN: usize = 34;

/// Why a CID could not be parsed or built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CidError {
    /// The text or byte string was empty.
    #[error("empty CID")]
    Empty,
    /// The multibase prefix character is not one this parser knows.
    #[error("CID {input:?}: unsupported multibase prefix {prefix:?}")]
    UnknownMultibase {
        /// The text that was parsed.
        input: String,
        /// Its first character.
        prefix: char,
    },
    /// The text is not valid in the base its prefix announces.
    #[error("CID {input:?}: invalid {base} text")]
    InvalidBase {
        /// The text that was parsed.
        input: String,
        /// The name of the base.
        base: &'static str,
    },
    /// A varint (version, codec, hash code or digest length) is malformed.
    #[error("CID bytes: {what}: {error}")]
    Varint {
        /// Which field.
        what: &'static str,
        /// What is wrong with it.
        error: VarintErrorKind,
    },
    /// The CID version is neither 0 nor 1.
    #[error("unsupported CID version {0}")]
    UnsupportedVersion(u64),
    /// The bytes end before the digest does.
    #[error("CID bytes: digest announced as {expected} bytes, {found} present")]
    TruncatedDigest {
        /// Announced digest length.
        expected: u64,
        /// Bytes actually left.
        found: usize,
    },
    /// The digest is longer than [`MAX_DIGEST_LEN`].
    #[error("CID digest of {0} bytes is longer than {MAX_DIGEST_LEN}")]
    DigestTooLong(u64),
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

/// A [`VarintError`] in public form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VarintErrorKind(VarintError);

impl fmt::Display for VarintErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A content identifier: version, codec and multihash (hash code and digest).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cid {
    version: u8,
    codec: u64,
    hash_code: u64,
    digest_len: u8,
    // Bytes past `digest_len` are always zero, so the derived comparisons are by value.
    digest: [u8; MAX_DIGEST_LEN],
}

impl Cid {
    /// A CIDv0 (dag-pb, sha2-256) from its digest.
    pub fn new_v0(digest: [u8; 32]) -> Cid {
        let mut d = [0u8; MAX_DIGEST_LEN];
        d[..32].copy_from_slice(&digest);
        Cid {
            version: 0,
            codec: DAG_PB,
            hash_code: SHA2_256,
            digest_len: 32,
            digest: d,
        }
    }

    /// A CIDv1 from its codec, multihash code and digest.
    pub fn new_v1(codec: u64, hash_code: u64, digest: &[u8]) -> Result<Cid, CidError> {
        if digest.len() > MAX_DIGEST_LEN {
            return Err(CidError::DigestTooLong(digest.len() as u64));
        }
        let mut d = [0u8; MAX_DIGEST_LEN];
        d[..digest.len()].copy_from_slice(digest);
        Ok(Cid {
            version: 1,
            codec,
            hash_code,
            digest_len: digest.len() as u8,
            digest: d,
        })
    }

    /// The sha2-256 CID of `block`. Version 0 is only possible with the [`DAG_PB`] codec.
    pub fn sha2_256(version: u8, codec: u64, block: &[u8]) -> Result<Cid, CidError> {
        let digest: [u8; 32] = Sha256::digest(block).into();
        match version {
            0 if codec == DAG_PB => Ok(Cid::new_v0(digest)),
            0 => Err(CidError::InvalidV0 {
                codec,
                hash_code: SHA2_256,
                digest_len: 32,
            }),
            1 => Cid::new_v1(codec, SHA2_256, &digest),
            v => Err(CidError::UnsupportedVersion(u64::from(v))),
        }
    }

    /// Parses the text form: a 46-character base58btc CIDv0 (`Qm…`), or a multibase CIDv1
    /// (`b…`, `B…`, `z…`, `f…`, `F…`).
    pub fn parse(text: &str) -> Result<Cid, CidError> {
        if text.is_empty() {
            return Err(CidError::Empty);
        }
        if text.len() == V0_TEXT_LEN && text.starts_with("Qm") {
            let bytes = bs58::decode(text)
                .into_vec()
                .map_err(|_| CidError::InvalidBase {
                    input: text.to_owned(),
                    base: "base58btc",
                })?;
            return Cid::from_bytes(&bytes);
        }
        let mut chars = text.chars();
        let prefix = chars.next().ok_or(CidError::Empty)?;
        let body = chars.as_str();
        let invalid = |base| CidError::InvalidBase {
            input: text.to_owned(),
            base,
        };
        let bytes = match prefix {
            'b' => data_encoding::BASE32_NOPAD
                .decode(body.to_ascii_uppercase().as_bytes())
                .map_err(|_| invalid("base32"))
                .and_then(|b| {
                    // The lower-case form must really be lower case.
                    if body.bytes().any(|c| c.is_ascii_uppercase()) {
                        Err(invalid("base32"))
                    } else {
                        Ok(b)
                    }
                })?,
            'B' => data_encoding::BASE32_NOPAD
                .decode(body.as_bytes())
                .map_err(|_| invalid("base32upper"))?,
            'z' => bs58::decode(body)
                .into_vec()
                .map_err(|_| invalid("base58btc"))?,
            'f' | 'F' => data_encoding::HEXLOWER_PERMISSIVE
                .decode(body.as_bytes())
                .map_err(|_| invalid("base16"))?,
            _ => {
                return Err(CidError::UnknownMultibase {
                    input: text.to_owned(),
                    prefix,
                })
            }
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
        if bytes.len() >= 2 && bytes[0] == SHA2_256 as u8 && bytes[1] == 32 {
            // A CIDv0: the bare multihash.
            if bytes.len() < V0_BYTES_LEN {
                return Err(CidError::TruncatedDigest {
                    expected: 32,
                    found: bytes.len() - 2,
                });
            }
            let mut digest = [0u8; 32];
            digest.copy_from_slice(&bytes[2..V0_BYTES_LEN]);
            return Ok((Cid::new_v0(digest), V0_BYTES_LEN));
        }
        let mut pos = 0;
        let mut next = |what: &'static str| -> Result<u64, CidError> {
            let (value, used) = varint::decode(&bytes[pos..], varint::MULTIFORMATS_MAX_LEN, true)
                .map_err(|error| CidError::Varint {
                what,
                error: VarintErrorKind(error),
            })?;
            pos += used;
            Ok(value)
        };
        let version = next("version")?;
        if version != 1 {
            return Err(CidError::UnsupportedVersion(version));
        }
        let codec = next("codec")?;
        let hash_code = next("multihash code")?;
        let digest_len = next("digest length")?;
        if digest_len > MAX_DIGEST_LEN as u64 {
            return Err(CidError::DigestTooLong(digest_len));
        }
        let rest = &bytes[pos..];
        if (rest.len() as u64) < digest_len {
            return Err(CidError::TruncatedDigest {
                expected: digest_len,
                found: rest.len(),
            });
        }
        let digest_len = digest_len as usize;
        let cid = Cid::new_v1(codec, hash_code, &rest[..digest_len])?;
        Ok((cid, pos + digest_len))
    }

    /// The binary form: the multihash for CIDv0, `version codec multihash` for CIDv1.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len());
        self.write_bytes(&mut out);
        out
    }

    /// Appends the binary form to `out`.
    pub fn write_bytes(&self, out: &mut Vec<u8>) {
        if self.version == 1 {
            varint::encode(1, out);
            varint::encode(self.codec, out);
        }
        varint::encode(self.hash_code, out);
        varint::encode(u64::from(self.digest_len), out);
        out.extend_from_slice(self.digest());
    }

    /// Length of the binary form in bytes (go-cid's `ByteLen`): 34 for a CIDv0, 36 for a
    /// sha2-256 CIDv1 with a one-byte codec.
    pub fn encoded_len(&self) -> usize {
        let multihash = varint::encoded_len(self.hash_code)
            + varint::encoded_len(u64::from(self.digest_len))
            + usize::from(self.digest_len);
        if self.version == 1 {
            1 + varint::encoded_len(self.codec) + multihash
        } else {
            multihash
        }
    }

    /// CID version: 0 or 1.
    pub fn version(&self) -> u8 {
        self.version
    }

    /// Multicodec of the block ([`RAW`], [`DAG_PB`], …).
    pub fn codec(&self) -> u64 {
        self.codec
    }

    /// Multihash code ([`SHA2_256`], …).
    pub fn hash_code(&self) -> u64 {
        self.hash_code
    }

    /// The digest bytes of the multihash.
    pub fn digest(&self) -> &[u8] {
        &self.digest[..usize::from(self.digest_len)]
    }

    /// The same CID as version 1 (a CIDv1 is returned unchanged).
    pub fn to_v1(&self) -> Cid {
        Cid {
            version: 1,
            ..*self
        }
    }

    /// The text form in base58btc: `Qm…` for CIDv0, `z…` for CIDv1 (what js-ipfs prints).
    pub fn to_base58btc(&self) -> String {
        let encoded = bs58::encode(self.to_bytes()).into_string();
        if self.version == 0 {
            encoded
        } else {
            format!("z{encoded}")
        }
    }

    /// Checks that `block` hashes to this CID. Returns `None` when the hash function is not
    /// one this crate computes (only sha2-256 and identity are).
    pub fn verify(&self, block: &[u8]) -> Option<bool> {
        match self.hash_code {
            SHA2_256 => Some(Sha256::digest(block).as_slice() == self.digest()),
            IDENTITY => Some(block == self.digest()),
            _ => None,
        }
    }
}

impl fmt::Display for Cid {
    /// The canonical text form: base58btc for CIDv0, `b` + base32 lower case for CIDv1.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.version == 0 {
            f.write_str(&bs58::encode(self.to_bytes()).into_string())
        } else {
            let mut text = String::with_capacity(1 + self.encoded_len() * 8 / 5 + 1);
            text.push('b');
            text.push_str(&data_encoding::BASE32_NOPAD.encode(&self.to_bytes()));
            text[1..].make_ascii_lowercase();
            f.write_str(&text)
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO_V0: &str = "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN";
    const HELLO_RAW: &str = "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am";
    const EMPTY_DIR_V0: &str = "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn";
    const EMPTY_DIR_V1: &str = "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354";

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
            data_encoding::HEXLOWER.encode(cid.digest()),
            "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
        );
        let z = cid.to_base58btc();
        assert!(z.starts_with("zb2"), "{z}");
        assert_eq!(Cid::parse(&z).unwrap(), cid);
        assert_eq!(Cid::parse(&HELLO_RAW.to_ascii_uppercase()).unwrap(), cid);
        let hex = format!("f{}", data_encoding::HEXLOWER.encode(&cid.to_bytes()));
        assert_eq!(Cid::parse(&hex).unwrap(), cid);
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
            Err(CidError::InvalidBase { base: "base32", .. })
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
                base: "base58btc",
                ..
            })
        ));
        // A truncated CIDv1.
        let bytes = Cid::parse(HELLO_RAW).unwrap().to_bytes();
        let cut = format!("z{}", bs58::encode(&bytes[..30]).into_string());
        assert!(matches!(
            Cid::parse(&cut),
            Err(CidError::TruncatedDigest { expected: 32, .. })
        ));
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
        assert!(matches!(
            Cid::from_bytes(&[0x01, 0x80]),
            Err(CidError::Varint { what: "codec", .. })
        ));
        assert_eq!(
            Cid::from_bytes(&[0x01, 0x55, 0x12, 0x41]),
            Err(CidError::DigestTooLong(0x41))
        );
        assert!(matches!(
            Cid::from_bytes(&[0x12, 0x20, 0x00]),
            Err(CidError::TruncatedDigest {
                expected: 32,
                found: 1
            })
        ));
        // read_bytes stops after the CID, as in a CAR section.
        let mut section = good.clone();
        section.extend_from_slice(b"block");
        let (cid, used) = Cid::read_bytes(&section).unwrap();
        assert_eq!(used, good.len());
        assert_eq!(cid.to_string(), HELLO_RAW);
    }

    #[test]
    fn identity_cid() {
        let cid = Cid::new_v1(RAW, IDENTITY, b"hi").unwrap();
        assert_eq!(Cid::parse(&cid.to_string()).unwrap(), cid);
        assert_eq!(cid.verify(b"hi"), Some(true));
        assert_eq!(Cid::new_v1(RAW, 0x13, &[0; 64]).unwrap().verify(b""), None);
    }
}
