//! Ed25519 keys and signatures in Nix's textual format, `<key name>:<base64>`.
//!
//! - [`PublicKey`]: `name:` + base64 of the 32-byte public key, as in `trusted-public-keys`.
//! - [`SecretKey`]: `name:` + base64 of 64 bytes (the 32-byte seed followed by the 32-byte
//!   public key, libsodium's layout), as written by `nix-store --generate-binary-cache-key`.
//! - [`Signature`]: `name:` + base64 of the 64-byte signature, as in narinfo `Sig:` lines.
//!
//! A signature only counts for a key of the same name: [`PublicKey::verify`] checks the name
//! before the cryptography. Verification is strict (RFC 8032 with small-order points rejected),
//! matching libsodium, which Nix uses.
//!
//! ```
//! use nixipfs::signature::SecretKey;
//! let key = SecretKey::generate("example-1", [7; 32])?;
//! let sig = key.sign(b"hello");
//! assert!(key.to_public().verify(b"hello", &sig));
//! assert!(!key.to_public().verify(b"hullo", &sig));
//! # Ok::<(), nixipfs::signature::SignatureError>(())
//! ```

use std::fmt;

use crate::text::shorten;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use thiserror::Error;

/// Characters of untrusted input quoted in an error message.
const SHORTEN: usize = 120;

/// The public key that signs cache.nixos.org (Nix's default `trusted-public-keys`).
pub const CACHE_NIXOS_ORG_KEY: &str =
    "cache.nixos.org-1:6NCHdD59X431o0gWypbMrAURkbJ16ZPMQFGspcDShjY=";

/// Why a key or signature string is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SignatureError {
    /// No `:` separating the key name from the base64 data.
    #[error("{what} {input:?} has no ':' between the key name and the base64 data")]
    MissingColon {
        /// What was being parsed: "public key", "secret key" or "signature".
        what: &'static str,
        /// The input, shortened (never a secret).
        input: String,
    },
    /// The key name is empty or contains characters that cannot appear in it.
    #[error("{what} has an invalid key name {name:?}: it must be non-empty, without ':', whitespace or control characters")]
    InvalidName {
        /// What was being parsed.
        what: &'static str,
        /// The name, shortened.
        name: String,
    },
    /// The data after the name is not valid base64.
    #[error("{what} for key {name:?} is not valid base64: {reason}")]
    Base64 {
        /// What was being parsed.
        what: &'static str,
        /// The key name.
        name: String,
        /// What the base64 decoder reported.
        reason: String,
    },
    /// The data decodes to the wrong number of bytes.
    #[error("{what} for key {name:?} decodes to {len} bytes, expected {expected}")]
    WrongLength {
        /// What was being parsed.
        what: &'static str,
        /// The key name.
        name: String,
        /// Decoded length.
        len: usize,
        /// Required length.
        expected: usize,
    },
    /// The public key bytes are not a point on the curve.
    #[error("public key {name:?} is not a valid Ed25519 point")]
    InvalidPoint {
        /// The key name.
        name: String,
    },
    /// The public half of a secret key does not belong to its seed.
    #[error("secret key {name:?} is corrupt: its public half does not match its seed")]
    SecretKeyMismatch {
        /// The key name.
        name: String,
    },
}

/// An Ed25519 public key with its Nix key name.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PublicKey {
    name: String,
    key: VerifyingKey,
}

impl PublicKey {
    /// Parses `name:base64` (surrounding whitespace, such as a file's final newline, is ignored).
    pub fn parse(s: &str) -> Result<Self, SignatureError> {
        const WHAT: &str = "public key";
        let (name, bytes) = split_and_decode::<32>(s.trim(), WHAT)?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| SignatureError::InvalidPoint { name: name.clone() })?;
        Ok(Self { name, key })
    }

    /// The key name, e.g. `cache.nixos.org-1`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The 32 key bytes.
    pub fn key_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// Whether `sig` was made by this key over `msg`: the key names must match and the
    /// signature must verify.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> bool {
        sig.key_name == self.name
            && self
                .key
                .verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig.bytes))
                .is_ok()
    }
}

/// Checks many signatures at once with Ed25519 batch verification, which costs about half as
/// much per signature as checking them one by one. True only when every item verifies and each
/// signature's key name is its key's; false says nothing about which failed, so the caller then
/// checks them one by one with [`PublicKey::verify`].
///
/// A batch that passes proves each signature was made with its key; unlike
/// [`PublicKey::verify`], it does not also refuse the non-canonical encodings an honest signer
/// never produces.
///
/// ```
/// use nixipfs::signature::{verify_batch, SecretKey};
/// let key = SecretKey::generate("example-1", [7; 32])?;
/// let public = key.to_public();
/// let (a, b) = (key.sign(b"one"), key.sign(b"two"));
/// assert!(verify_batch(&[(&b"one"[..], &a, &public), (&b"two"[..], &b, &public)]));
/// assert!(!verify_batch(&[(&b"one"[..], &a, &public), (&b"two"[..], &a, &public)]));
/// # Ok::<(), nixipfs::signature::SignatureError>(())
/// ```
pub fn verify_batch(items: &[(&[u8], &Signature, &PublicKey)]) -> bool {
    if items.iter().any(|(_, sig, key)| sig.key_name != key.name) {
        return false;
    }
    match items {
        [] => true,
        [(msg, sig, key)] => key.verify(msg, sig),
        _ => {
            let messages: Vec<&[u8]> = items.iter().map(|(m, _, _)| *m).collect();
            let signatures: Vec<ed25519_dalek::Signature> = items
                .iter()
                .map(|(_, s, _)| ed25519_dalek::Signature::from_bytes(&s.bytes))
                .collect();
            let keys: Vec<VerifyingKey> = items.iter().map(|(_, _, k)| k.key).collect();
            ed25519_dalek::verify_batch(&messages, &signatures, &keys).is_ok()
        }
    }
}

impl fmt::Display for PublicKey {
    /// Writes `name:base64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.name, BASE64.encode(self.key.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({self})")
    }
}

/// A detached Ed25519 signature with the name of the key that made it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Signature {
    key_name: String,
    bytes: [u8; 64],
}

impl Signature {
    /// Parses `name:base64`, exactly (no surrounding whitespace).
    pub fn parse(s: &str) -> Result<Self, SignatureError> {
        let (key_name, bytes) = split_and_decode::<64>(s, "signature")?;
        Ok(Self { key_name, bytes })
    }

    /// The name of the key that made the signature.
    pub fn key_name(&self) -> &str {
        &self.key_name
    }

    /// The 64 signature bytes.
    pub fn bytes(&self) -> &[u8; 64] {
        &self.bytes
    }
}

impl fmt::Display for Signature {
    /// Writes `name:base64`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.key_name, BASE64.encode(self.bytes))
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({self})")
    }
}

/// An Ed25519 signing key with its Nix key name. `Debug` does not show the secret.
#[derive(Clone)]
pub struct SecretKey {
    name: String,
    key: SigningKey,
}

impl SecretKey {
    /// Parses Nix's secret key format, `name:` + base64 of seed || public key (surrounding
    /// whitespace is ignored). The public half must match the seed.
    pub fn parse(s: &str) -> Result<Self, SignatureError> {
        let (name, bytes) = split_and_decode::<64>(s.trim(), "secret key")?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&bytes[..32]);
        let key = SigningKey::from_bytes(&seed);
        if key.verifying_key().as_bytes()[..] != bytes[32..] {
            return Err(SignatureError::SecretKeyMismatch { name });
        }
        Ok(Self { name, key })
    }

    /// Derives the key pair named `name` from a 32-byte seed.
    pub fn generate(name: &str, seed: [u8; 32]) -> Result<Self, SignatureError> {
        check_name(name, "secret key")?;
        Ok(Self {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Signs `msg`, giving a signature tagged with this key's name.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature {
            key_name: self.name.clone(),
            bytes: self.key.sign(msg).to_bytes(),
        }
    }

    /// The matching public key, with the same name.
    pub fn to_public(&self) -> PublicKey {
        PublicKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }
}

impl fmt::Display for SecretKey {
    /// Writes the secret key file format `name:base64(seed || public key)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = [0u8; 64];
        bytes[..32].copy_from_slice(self.key.as_bytes());
        bytes[32..].copy_from_slice(self.key.verifying_key().as_bytes());
        write!(f, "{}:{}", self.name, BASE64.encode(bytes))
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretKey")
            .field("name", &self.name)
            .field("public", &self.to_public().to_string())
            .finish_non_exhaustive()
    }
}

/// Splits `name:base64` at the first `:` and decodes exactly `N` bytes.
fn split_and_decode<const N: usize>(
    s: &str,
    what: &'static str,
) -> Result<(String, [u8; N]), SignatureError> {
    let Some((name, data)) = s.split_once(':') else {
        return Err(SignatureError::MissingColon {
            what,
            // Never echo what could be a secret key.
            input: if what == "secret key" {
                "<redacted>".to_string()
            } else {
                shorten(s, SHORTEN)
            },
        });
    };
    check_name(name, what)?;
    let name = name.to_string();
    let bytes = BASE64.decode(data).map_err(|e| SignatureError::Base64 {
        what,
        name: name.clone(),
        reason: e.to_string(),
    })?;
    let bytes: [u8; N] = bytes
        .try_into()
        .map_err(|b: Vec<u8>| SignatureError::WrongLength {
            what,
            name: name.clone(),
            len: b.len(),
            expected: N,
        })?;
    Ok((name, bytes))
}

/// Key names must be non-empty and free of `:`, whitespace and control characters, so that
/// they survive a round trip through narinfo lines and key files.
fn check_name(name: &str, what: &'static str) -> Result<(), SignatureError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(SignatureError::InvalidName {
            what,
            name: shorten(name, SHORTEN),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha512};

    const FIXTURE_PUB: &str = include_str!("testdata/keys/fixture-signing-key.pub");
    const FIXTURE_SEC: &str = include_str!("testdata/keys/fixture-signing-key.sec");

    fn hex(s: &str) -> Vec<u8> {
        data_encoding::HEXLOWER_PERMISSIVE
            .decode(s.as_bytes())
            .unwrap()
    }

    /// RFC 8032 §7.1 "TEST SHA(abc)", also used by NixOS/nix's local-keys tests.
    #[test]
    fn rfc8032_sha_abc_vector() {
        let seed: [u8; 32] =
            hex("833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42")
                .try_into()
                .unwrap();
        let public = hex("ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf");
        let message = hex(concat!(
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a",
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        ));
        let expected_sig = hex(concat!(
            "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b589",
            "09351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704"
        ));
        // The message is SHA-512("abc").
        assert_eq!(Sha512::digest(b"abc")[..], message[..]);

        let key = SecretKey::generate("rfc8032", seed).unwrap();
        assert_eq!(key.to_public().key_bytes()[..], public[..]);
        let sig = key.sign(&message);
        assert_eq!(sig.bytes()[..], expected_sig[..]);
        assert_eq!(sig.key_name(), "rfc8032");

        // The same key through the textual formats.
        let public_text = format!("rfc8032:{}", BASE64.encode(&public));
        let pk = PublicKey::parse(&public_text).unwrap();
        assert_eq!(pk.to_string(), public_text);
        let sig_text = format!("rfc8032:{}", BASE64.encode(&expected_sig));
        let parsed_sig = Signature::parse(&sig_text).unwrap();
        assert_eq!(parsed_sig, sig);
        assert_eq!(parsed_sig.to_string(), sig_text);
        assert!(pk.verify(&message, &parsed_sig));
        assert!(!pk.verify(&message[1..], &parsed_sig));

        let mut secret = seed.to_vec();
        secret.extend_from_slice(&public);
        let secret_text = format!("rfc8032:{}", BASE64.encode(&secret));
        assert_eq!(key.to_string(), secret_text);
        assert_eq!(SecretKey::parse(&secret_text).unwrap().sign(&message), sig);
    }

    #[test]
    fn fixture_key_pair() {
        let secret = SecretKey::parse(FIXTURE_SEC).unwrap();
        let public = PublicKey::parse(FIXTURE_PUB).unwrap();
        assert_eq!(secret.name(), "nixipfs-fixture-1");
        assert_eq!(public.name(), "nixipfs-fixture-1");
        assert_eq!(secret.to_public(), public);
        assert_eq!(secret.to_string(), FIXTURE_SEC.trim());
        assert_eq!(public.to_string(), FIXTURE_PUB.trim());
        // The fixture seed is sha256("nixipfs fixture signing key (TEST ONLY)").
        let seed = crate::hash::sha256(b"nixipfs fixture signing key (TEST ONLY)").0;
        let generated = SecretKey::generate("nixipfs-fixture-1", seed).unwrap();
        assert_eq!(generated.to_string(), FIXTURE_SEC.trim());
        // Debug never shows the secret half.
        let debug = format!("{secret:?}");
        assert!(!debug.contains(&FIXTURE_SEC.trim()[18..]));
        assert!(debug.contains(FIXTURE_PUB.trim()));

        let sig = secret.sign(b"some fingerprint");
        assert!(public.verify(b"some fingerprint", &sig));
        let nixos = PublicKey::parse(CACHE_NIXOS_ORG_KEY).unwrap();
        assert!(!nixos.verify(b"some fingerprint", &sig));
    }

    #[test]
    fn names_must_match() {
        let key = SecretKey::generate("a-1", [1; 32]).unwrap();
        let sig = key.sign(b"msg");
        // Same key bytes under another name: the signature does not count.
        let renamed =
            PublicKey::parse(&key.to_public().to_string().replacen("a-1", "b-1", 1)).unwrap();
        assert!(!renamed.verify(b"msg", &sig));
        let resigned = Signature::parse(&sig.to_string().replacen("a-1", "b-1", 1)).unwrap();
        assert!(renamed.verify(b"msg", &resigned));
        assert!(!key.to_public().verify(b"msg", &resigned));
    }

    #[test]
    fn rejects_malformed_text() {
        use SignatureError as E;
        let nixos_sig = "cache.nixos.org-1:TsTTb3WGTZKphvYdBHXwo6weVILmTytUjLB+vcX89fOjjRicCHmKA4RCPMVLkj6TMJ4GMX3HPVWRdD1hkeKZBQ==";
        assert!(Signature::parse(nixos_sig).is_ok());
        assert!(matches!(
            Signature::parse("no-colon-here"),
            Err(E::MissingColon { .. })
        ));
        assert!(matches!(
            Signature::parse(&nixos_sig[17..]),
            Err(E::InvalidName { .. })
        ));
        assert!(matches!(
            Signature::parse(&format!("{nixos_sig} ")),
            Err(E::Base64 { .. })
        ));
        assert!(matches!(
            Signature::parse(&format!("a b{}", &nixos_sig[17..])),
            Err(E::InvalidName { .. })
        ));
        assert!(matches!(
            Signature::parse(CACHE_NIXOS_ORG_KEY),
            Err(E::WrongLength {
                len: 32,
                expected: 64,
                ..
            })
        ));
        assert!(matches!(
            PublicKey::parse(nixos_sig),
            Err(E::WrongLength {
                len: 64,
                expected: 32,
                ..
            })
        ));
        // y = 2 is not the y coordinate of any curve point.
        let mut not_a_point = [0u8; 32];
        not_a_point[0] = 2;
        assert!(matches!(
            PublicKey::parse(&format!("k:{}", BASE64.encode(not_a_point))),
            Err(E::InvalidPoint { .. })
        ));
        assert!(PublicKey::parse(&format!("  {CACHE_NIXOS_ORG_KEY}\n")).is_ok());

        // A secret key whose public half belongs to another seed.
        let mut corrupt = BASE64
            .decode(FIXTURE_SEC.trim().split_once(':').unwrap().1)
            .unwrap();
        corrupt[40] ^= 1;
        assert!(matches!(
            SecretKey::parse(&format!("k:{}", BASE64.encode(&corrupt))),
            Err(E::SecretKeyMismatch { .. })
        ));
        let err = SecretKey::parse(&FIXTURE_SEC.replace(':', "")).unwrap_err();
        assert!(!err.to_string().contains(&FIXTURE_SEC[18..40]));
        for bad_name in ["", "a:b", "a b", "a\nb"] {
            assert!(matches!(
                SecretKey::generate(bad_name, [0; 32]),
                Err(E::InvalidName { .. })
            ));
        }
    }
}
