//! SHA-256 hashes as Nix writes them, and streaming helpers that hash while copying.
//!
//! [`Sha256Hash`] parses the three forms found in narinfos, Hydra responses and Nix output:
//! `sha256:<52 nix32 chars>`, `sha256:<64 hex chars>` (also `sha256:<base64>`) and the SRI
//! form `sha256-<base64>`. It prints as `sha256:<nix32>`, the form Nix writes in narinfo files
//! and signature fingerprints.
//!
//! [`HashingReader`] and [`HashingWriter`] wrap a [`Read`] or [`Write`] and hash every byte
//! that passes through, counting them; [`Sha256Hasher`] does the same for code that receives
//! chunks (for example an async download stream).
//!
//! ```
//! use nixipfs::hash::{sha256, Sha256Hash};
//! let h = sha256(b"abc");
//! assert_eq!(h.to_string(), "sha256:1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s");
//! assert_eq!(Sha256Hash::parse_nix(&h.to_string()), Ok(h));
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::nixbase32;
use crate::text::shorten;

/// Characters of untrusted input quoted in an error message.
const SHORTEN: usize = 80;

/// Length of a SHA-256 digest in bytes.
pub const SHA256_LEN: usize = 32;

/// Length of a SHA-256 digest in nix32 characters.
pub const SHA256_NIX32_LEN: usize = nixbase32::encoded_len(SHA256_LEN);

/// Length of a SHA-256 digest in hexadecimal characters.
pub const SHA256_HEX_LEN: usize = 2 * SHA256_LEN;

/// Length of a SHA-256 digest in padded base64 characters.
pub const SHA256_BASE64_LEN: usize = 44;

/// Why a string is not a SHA-256 hash.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HashError {
    /// The string has neither a `sha256:` nor a `sha256-` prefix.
    #[error("hash {input:?} does not start with `sha256:` or `sha256-`")]
    MissingPrefix {
        /// The input, shortened to 80 characters.
        input: String,
    },
    /// The string names another hash algorithm.
    #[error("unsupported hash algorithm {algorithm:?}: only sha256 is supported")]
    UnsupportedAlgorithm {
        /// The algorithm name before the separator.
        algorithm: String,
    },
    /// The digest has a length that matches none of the encodings.
    #[error("sha256 digest has {len} characters: expected 52 (nix32), 64 (hex) or 44 (base64)")]
    BadLength {
        /// Length of the digest part in bytes.
        len: usize,
    },
    /// The digest is not valid nix32.
    #[error("invalid nix32 sha256 digest: {0}")]
    Nix32(#[from] nixbase32::DecodeError),
    /// The digest is not valid hexadecimal.
    #[error("invalid hex sha256 digest: {character:?} at position {position} is not a hex digit")]
    Hex {
        /// The offending character.
        character: char,
        /// Byte offset of the character in the digest.
        position: usize,
    },
    /// The digest is not valid base64 of 32 bytes.
    #[error("invalid base64 sha256 digest: {reason}")]
    Base64 {
        /// What the base64 decoder reported.
        reason: String,
    },
}

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Hash(pub [u8; 32]);

impl Sha256Hash {
    /// Parses `sha256:<nix32>`, `sha256:<hex>`, `sha256:<base64>` or SRI `sha256-<base64>`.
    pub fn parse_nix(s: &str) -> Result<Self, HashError> {
        let Some(separator) = s.find([':', '-']) else {
            return Err(HashError::MissingPrefix {
                input: shorten(s, SHORTEN),
            });
        };
        let (algorithm, digest) = (&s[..separator], &s[separator + 1..]);
        if algorithm != "sha256" {
            return Err(HashError::UnsupportedAlgorithm {
                algorithm: shorten(algorithm, SHORTEN),
            });
        }
        if s.as_bytes()[separator] == b'-' {
            // SRI hashes are always base64.
            return Self::from_base64(digest);
        }
        match digest.len() {
            SHA256_NIX32_LEN => Self::from_nix32(digest),
            SHA256_HEX_LEN => Self::from_hex(digest),
            SHA256_BASE64_LEN => Self::from_base64(digest),
            len => Err(HashError::BadLength { len }),
        }
    }

    /// Parses a bare 52-character nix32 digest (no `sha256:` prefix).
    pub fn from_nix32(s: &str) -> Result<Self, HashError> {
        Ok(Self(nixbase32::decode_fixed::<32>(s)?))
    }

    /// Parses a bare 64-character hexadecimal digest (either case), as Hydra's `sha256hash`.
    pub fn from_hex(s: &str) -> Result<Self, HashError> {
        if s.len() != SHA256_HEX_LEN {
            return Err(HashError::BadLength { len: s.len() });
        }
        let input = s.as_bytes();
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            let high = hex_digit(input, 2 * i)?;
            let low = hex_digit(input, 2 * i + 1)?;
            *byte = (high << 4) | low;
        }
        Ok(Self(out))
    }

    /// Parses a bare padded base64 digest (44 characters).
    pub fn from_base64(s: &str) -> Result<Self, HashError> {
        let bytes = BASE64.decode(s).map_err(|e| HashError::Base64 {
            reason: e.to_string(),
        })?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| HashError::Base64 {
            reason: format!("decodes to {} bytes, expected 32", b.len()),
        })?;
        Ok(Self(bytes))
    }

    /// `sha256:<nix32>`, as in narinfo files and fingerprints (same as `Display`).
    pub fn to_nix32_string(&self) -> String {
        format!("sha256:{}", self.to_nix32())
    }

    /// The bare 52-character nix32 digest, as in NAR file names (`nar/<nix32>.nar.xz`).
    pub fn to_nix32(&self) -> String {
        nixbase32::encode(&self.0)
    }

    /// The bare lowercase hexadecimal digest.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(SHA256_HEX_LEN);
        for &b in &self.0 {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0xf)]));
        }
        out
    }

    /// The SRI form `sha256-<base64>`.
    pub fn to_sri(&self) -> String {
        format!("sha256-{}", BASE64.encode(self.0))
    }
}

impl fmt::Display for Sha256Hash {
    /// Writes `sha256:<nix32>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_nix32())
    }
}

impl fmt::Debug for Sha256Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Hash({self})")
    }
}

impl FromStr for Sha256Hash {
    type Err = HashError;

    /// Same as [`Sha256Hash::parse_nix`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_nix(s)
    }
}

/// The value of the hex digit at `position` of `input`.
fn hex_digit(input: &[u8], position: usize) -> Result<u8, HashError> {
    let c = input[position];
    match c {
        b'0'..=b'9' => Ok(c - b'0'),
        b'a'..=b'f' => Ok(c - b'a' + 10),
        b'A'..=b'F' => Ok(c - b'A' + 10),
        _ => Err(HashError::Hex {
            character: std::str::from_utf8(&input[position..])
                .ok()
                .and_then(|rest| rest.chars().next())
                .unwrap_or(char::REPLACEMENT_CHARACTER),
            position,
        }),
    }
}

/// SHA-256 of `bytes`.
pub fn sha256(bytes: &[u8]) -> Sha256Hash {
    Sha256Hash(Sha256::digest(bytes).into())
}

/// The first 16 bytes of the SHA-256 of `bytes`: a key for sets with an entry per store path,
/// where a full path or digest would cost several times the memory. Two different inputs share
/// one with a probability of 2^-128.
pub fn fingerprint128(bytes: &[u8]) -> u128 {
    let digest = Sha256::digest(bytes);
    u128::from_le_bytes(digest[..16].try_into().expect("a SHA-256 has 32 bytes"))
}

/// A set of [`fingerprint128`]s. They are SHA-256 bytes already, so the set takes their own
/// bits as its hash instead of hashing them again.
pub type FingerprintSet = std::collections::HashSet<u128, FingerprintBuildHasher>;

/// A map keyed by [`fingerprint128`]s (see [`FingerprintSet`]).
pub type FingerprintMap<V> = std::collections::HashMap<u128, V, FingerprintBuildHasher>;

/// The hasher of [`FingerprintSet`] and [`FingerprintMap`].
pub type FingerprintBuildHasher = std::hash::BuildHasherDefault<FingerprintHasher>;

/// Folds a [`fingerprint128`] to 64 bits (see [`FingerprintSet`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for u128 keys; any other key still gets a usable (if weak) hash.
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = (self.0.rotate_left(5) ^ u64::from_le_bytes(word))
                .wrapping_mul(0x517c_c1b7_2722_0a95);
        }
    }

    fn write_u128(&mut self, n: u128) {
        self.0 ^= (n as u64) ^ ((n >> 64) as u64);
    }
}

/// Incremental SHA-256 that also counts the bytes it has seen.
#[derive(Clone, Default)]
pub struct Sha256Hasher {
    hasher: Sha256,
    len: u64,
}

impl Sha256Hasher {
    /// A hasher that has seen no bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feeds `bytes` into the hash.
    pub fn update(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.len += bytes.len() as u64;
    }

    /// Number of bytes fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no bytes have been fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The hash and byte count of everything fed.
    pub fn finish(self) -> (Sha256Hash, u64) {
        (Sha256Hash(self.hasher.finalize().into()), self.len)
    }
}

impl fmt::Debug for Sha256Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sha256Hasher")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// A [`Write`] adapter that hashes and counts every byte the inner writer accepts.
#[derive(Debug)]
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256Hasher,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256Hasher::new(),
        }
    }

    /// Number of bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.hasher.len()
    }

    /// The inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Returns the inner writer (not flushed), the hash and the number of bytes written.
    pub fn finish(self) -> (W, Sha256Hash, u64) {
        let (hash, len) = self.hasher.finish();
        (self.inner, hash, len)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A [`Read`] adapter that hashes and counts every byte read through it.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256Hasher,
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            hasher: Sha256Hasher::new(),
        }
    }

    /// Number of bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.hasher.len()
    }

    /// The inner reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Returns the inner reader, the hash and the number of bytes read so far.
    pub fn finish(self) -> (R, Sha256Hash, u64) {
        let (hash, len) = self.hasher.finish();
        (self.inner, hash, len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_sets_find_what_they_hold() {
        let mut set = FingerprintSet::default();
        let mut map = FingerprintMap::default();
        for i in 0u32..10_000 {
            let id = fingerprint128(&i.to_le_bytes());
            assert!(set.insert(id));
            map.insert(id, i);
        }
        for i in 0u32..10_000 {
            let id = fingerprint128(&i.to_le_bytes());
            assert!(!set.insert(id));
            assert_eq!(map.get(&id), Some(&i));
        }
        assert!(!set.contains(&fingerprint128(b"absent")));
        assert_eq!(set.len(), 10_000);
    }

    const ABC_HEX: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    const ABC_NIX32: &str = "1b8m03r63zqhnjf7l5wnldhh7c134ap5vpj0850ymkq1iyzicy5s";
    const ABC_BASE64: &str = "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=";

    #[test]
    fn known_answers() {
        let abc = sha256(b"abc");
        assert_eq!(abc.to_hex(), ABC_HEX);
        assert_eq!(abc.to_nix32(), ABC_NIX32);
        assert_eq!(abc.to_nix32_string(), format!("sha256:{ABC_NIX32}"));
        assert_eq!(abc.to_string(), format!("sha256:{ABC_NIX32}"));
        assert_eq!(abc.to_sri(), format!("sha256-{ABC_BASE64}"));
        assert_eq!(
            sha256(b"").to_nix32(),
            "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"
        );
        assert_eq!(
            sha256(b"SMASH THE STATE").to_nix32(),
            "0d9n3r2i4m1zgy0wpqbsyabsfzgs952066bfp8gwvcg4mkr4r5g8"
        );
    }

    #[test]
    fn parses_every_form() {
        let abc = sha256(b"abc");
        for input in [
            format!("sha256:{ABC_NIX32}"),
            format!("sha256:{ABC_HEX}"),
            format!("sha256:{}", ABC_HEX.to_uppercase()),
            format!("sha256:{ABC_BASE64}"),
            format!("sha256-{ABC_BASE64}"),
        ] {
            assert_eq!(Sha256Hash::parse_nix(&input), Ok(abc), "{input}");
            assert_eq!(input.parse::<Sha256Hash>(), Ok(abc), "{input}");
        }
        assert_eq!(Sha256Hash::from_hex(ABC_HEX), Ok(abc));
        assert_eq!(Sha256Hash::from_nix32(ABC_NIX32), Ok(abc));
    }

    #[test]
    fn rejects_bad_hashes() {
        let e = |s: &str| Sha256Hash::parse_nix(s).unwrap_err();
        assert!(matches!(e(ABC_NIX32), HashError::MissingPrefix { .. }));
        assert!(matches!(e(""), HashError::MissingPrefix { .. }));
        assert_eq!(
            e(&format!("sha512:{ABC_NIX32}")),
            HashError::UnsupportedAlgorithm {
                algorithm: "sha512".into()
            }
        );
        assert_eq!(
            e("md5:ea9b55537dd4c7e104515b2ccfaf4100"),
            HashError::UnsupportedAlgorithm {
                algorithm: "md5".into()
            }
        );
        assert_eq!(
            e(&format!("sha256:{}", &ABC_NIX32[1..])),
            HashError::BadLength { len: 51 }
        );
        assert!(matches!(
            e(&format!("sha256:e{}", &ABC_NIX32[1..])),
            HashError::Nix32(nixbase32::DecodeError::InvalidChar { character: 'e', .. })
        ));
        assert_eq!(
            e(&format!("sha256:{}g", &ABC_HEX[..63])),
            HashError::Hex {
                character: 'g',
                position: 63
            }
        );
        assert_eq!(
            e(&format!("sha256:{}é", &ABC_HEX[..62])),
            HashError::Hex {
                character: 'é',
                position: 62
            }
        );
        assert!(matches!(e("sha256-AAAA"), HashError::Base64 { .. }));
        assert!(matches!(
            e(&format!("sha256-{}", &ABC_BASE64[..43])),
            HashError::Base64 { .. }
        ));
        assert_eq!(
            Sha256Hash::from_hex(&ABC_HEX[2..]),
            Err(HashError::BadLength { len: 62 })
        );
    }

    #[test]
    fn hashing_writer_and_reader() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 256) as u8).collect();
        let expected = sha256(&data);

        let mut writer = HashingWriter::new(Vec::new());
        for chunk in data.chunks(4093) {
            writer.write_all(chunk).unwrap();
        }
        assert_eq!(writer.bytes_written(), data.len() as u64);
        let (out, hash, len) = writer.finish();
        assert_eq!((hash, len), (expected, data.len() as u64));
        assert_eq!(out, data);

        let mut reader = HashingReader::new(&data[..]);
        let mut head = [0u8; 1000];
        reader.read_exact(&mut head).unwrap();
        assert_eq!(reader.bytes_read(), 1000);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).unwrap();
        let (_, hash, len) = reader.finish();
        assert_eq!((hash, len), (expected, data.len() as u64));

        let mut hasher = Sha256Hasher::new();
        assert!(hasher.is_empty());
        hasher.update(b"a");
        hasher.update(b"bc");
        assert_eq!(hasher.finish(), (sha256(b"abc"), 3));
    }

    /// A writer that accepts at most 3 bytes per call: only accepted bytes may be hashed.
    struct Trickle(Vec<u8>);

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn hashing_writer_hashes_only_accepted_bytes() {
        let mut writer = HashingWriter::new(Trickle(Vec::new()));
        assert_eq!(writer.write(b"SMASH THE STATE").unwrap(), 3);
        writer.write_all(b"SH THE STATE").unwrap();
        let (inner, hash, len) = writer.finish();
        assert_eq!(inner.0, b"SMASH THE STATE");
        assert_eq!((hash, len), (sha256(b"SMASH THE STATE"), 15));
    }
}
