//! `.narinfo` files: the per-store-path metadata of a Nix binary cache.
//!
//! A narinfo is a list of `Key: value` lines, each ending in `\n`:
//!
//! ```text
//! StorePath: /nix/store/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10
//! URL: nar/15zk4zszw9lgkdkkwy7w11m5vag11n5dhv2i6hj308qpxczvdddx.nar.xz
//! Compression: xz
//! FileHash: sha256:15zk4zszw9lgkdkkwy7w11m5vag11n5dhv2i6hj308qpxczvdddx
//! FileSize: 41232
//! NarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i
//! NarSize: 205968
//! References: 9df65igwjmf2wbw0gbrrgair6piqjgmi-glibc-2.31 w9yy7v61ipb5rx6i35zq1mvc2iqfmps1-hello-2.10
//! Sig: cache.nixos.org-1:uP5KU8MCmyRnKGlN5oEv6xWJBI5EO/Pf5aFztZuLSz8BpCcZ1fdBnJkVXhBAlxkdm/CemsgQskhwvyd2yghTAg==
//! ```
//!
//! [`NarInfo::parse`] reads one in a single pass into typed fields. It is stricter than Nix
//! where leniency would hide a damaged file: every line must end in `\n` (so a truncated
//! download fails), carriage returns are rejected, known fields may not repeat (except `Sig`),
//! and every value must parse. Unknown fields (for example `IPFSHash`) are kept in order.
//!
//! Printing: a parsed narinfo remembers its text, and `Display` writes that text back byte for
//! byte as long as the typed fields still hold what was parsed. Once a field is changed (or
//! for a narinfo built with [`NarInfo::new`]), `Display` writes the canonical form of
//! [`NarInfo::to_canonical_string`]: the fields in the order Nix writes them.
//!
//! Signatures cover the [fingerprint](NarInfo::fingerprint)
//! `1;<StorePath>;<NarHash>;<NarSize>;<sorted, comma-joined full reference paths>`, so URL,
//! compression, file hash and size, deriver and CA are not signed.
//!
//! Building a narinfo for a synthetic cache:
//!
//! ```
//! use nixipfs::hash::sha256;
//! use nixipfs::narinfo::NarInfo;
//! use nixipfs::signature::SecretKey;
//! use nixipfs::store_path::StorePath;
//!
//! let path = StorePath::from_basename("r29rfw7xvs9kc6lxma5aqdqbci3af4vg-hello-2.10")?;
//! let nar_hash = sha256(b"the NAR bytes");
//! let mut info = NarInfo::new(path.clone(), format!("nar/{}.nar", nar_hash.to_nix32()), "none", nar_hash, 13);
//! info.references = vec![path];
//! let key = SecretKey::generate("example-1", [1; 32])?;
//! info.sign(&key);
//! let text = info.to_string();
//! assert_eq!(NarInfo::parse(&text)?.to_string(), text);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::hash::{HashError, Sha256Hash};
use crate::signature::{PublicKey, SecretKey, Signature, SignatureError};
use crate::store_path::{StorePath, StorePathError};
use crate::text::shorten;

/// Characters of untrusted input quoted in an error message.
const SHORTEN: usize = 100;

/// Largest narinfo accepted, in bytes. Real ones are well under 10 KiB.
pub const MAX_NARINFO_SIZE: usize = 1 << 20;

/// The `Compression` Nix assumes when the field is absent.
pub const DEFAULT_COMPRESSION: &str = "bzip2";

/// The `Deriver` value Nix writes for an unknown deriver; it parses as no deriver.
const UNKNOWN_DERIVER: &str = "unknown-deriver";

/// Why a narinfo could not be parsed. Line numbers start at 1.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum NarInfoError {
    /// The input is larger than [`MAX_NARINFO_SIZE`].
    #[error("narinfo is {size} bytes, more than the maximum of {MAX_NARINFO_SIZE}")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
    },
    /// The last line has no terminating `\n` (often a truncated download).
    #[error("narinfo line {line} does not end with a newline (truncated?)")]
    MissingNewline {
        /// The line number.
        line: usize,
    },
    /// A line contains `\r`; narinfos use `\n` line endings only.
    #[error("narinfo line {line} contains a carriage return: CRLF line endings are not valid")]
    CarriageReturn {
        /// The line number.
        line: usize,
    },
    /// A line that is not `Key: value`.
    #[error("narinfo line {line} is not of the form `Key: value`: {content:?}")]
    MalformedLine {
        /// The line number.
        line: usize,
        /// The line, shortened.
        content: String,
    },
    /// A field name with spaces or non-ASCII characters.
    #[error("narinfo line {line} has an invalid field name {name:?}")]
    InvalidFieldName {
        /// The line number.
        line: usize,
        /// The field name, shortened.
        name: String,
    },
    /// A field other than `Sig` given twice.
    #[error("narinfo line {line}: duplicate {field} field (first given on line {first_line})")]
    DuplicateField {
        /// The line number of the repetition.
        line: usize,
        /// The field name.
        field: &'static str,
        /// The line number where the field was first given.
        first_line: usize,
    },
    /// A required field (StorePath, URL, NarHash, NarSize) is absent.
    #[error("narinfo has no {field} field")]
    MissingField {
        /// The field name.
        field: &'static str,
    },
    /// A field whose value must not be empty.
    #[error("narinfo line {line}: {field} is empty")]
    EmptyValue {
        /// The line number.
        line: usize,
        /// The field name.
        field: &'static str,
    },
    /// `StorePath` or an entry of `References` is not a valid store path.
    #[error("narinfo line {line}: invalid store path in {field}")]
    InvalidStorePath {
        /// The line number.
        line: usize,
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        source: StorePathError,
    },
    /// `NarHash` or `FileHash` is not a valid SHA-256 hash.
    #[error("narinfo line {line}: invalid {field}")]
    InvalidHash {
        /// The line number.
        line: usize,
        /// The field name.
        field: &'static str,
        /// What is wrong with it.
        source: HashError,
    },
    /// `NarSize` or `FileSize` is not a decimal number that fits in 64 bits.
    #[error("narinfo line {line}: {field} {value:?} is not a non-negative 64-bit decimal number")]
    InvalidNumber {
        /// The line number.
        line: usize,
        /// The field name.
        field: &'static str,
        /// The value, shortened.
        value: String,
    },
    /// A `Sig` line that is not `name:base64-of-64-bytes`.
    #[error("narinfo line {line}: invalid Sig")]
    InvalidSignature {
        /// The line number.
        line: usize,
        /// What is wrong with it.
        source: SignatureError,
    },
    /// A field name or value given to [`NarInfo::try_with_extra_field`] that would not parse.
    #[error("cannot add narinfo field {key:?}: the name must be non-empty printable ASCII without ':' and the value must not contain line breaks")]
    InvalidExtraField {
        /// The field name, shortened.
        key: String,
    },
}

/// Result of checking a narinfo's signatures against a set of trusted keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureCheck {
    /// A signature by a trusted key verifies.
    Valid {
        /// Name of the key whose signature verified.
        key_name: String,
    },
    /// No signature is by a trusted key (by name); includes having no signatures at all.
    NoTrustedSignature,
    /// Signatures by trusted key names exist, but none verifies: the signed fields were
    /// changed, or the signature is forged.
    Invalid {
        /// Name of the first trusted key whose signature failed.
        key_name: String,
    },
}

/// A parsed or built narinfo.
///
/// The fields are public; changing one makes `Display` switch from the original text to the
/// canonical form (see the module documentation). String fields must not contain line breaks.
/// Equality compares the fields and the remembered text; `Display` of a parsed narinfo parses
/// the remembered text again to see whether the fields changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NarInfo {
    /// `StorePath`: the store path described.
    pub store_path: StorePath,
    /// `URL`: where the (compressed) NAR is, relative to the cache root, e.g. `nar/<hash>.nar.xz`.
    /// It comes from the cache: check it before joining it onto a local path.
    pub url: String,
    /// `Compression` of the file at `url`: `xz`, `zstd`, `bzip2`, `none`, ... ([`DEFAULT_COMPRESSION`] when absent).
    pub compression: String,
    /// `FileHash`: SHA-256 of the file at `url`.
    pub file_hash: Option<Sha256Hash>,
    /// `FileSize`: size of the file at `url` in bytes.
    pub file_size: Option<u64>,
    /// `NarHash`: SHA-256 of the uncompressed NAR.
    pub nar_hash: Sha256Hash,
    /// `NarSize`: size of the uncompressed NAR in bytes.
    pub nar_size: u64,
    /// `References`: the store paths this one refers to (empty when the field is absent or empty).
    pub references: Vec<StorePath>,
    /// `Deriver`: basename of the derivation, as written (`unknown-deriver` reads as `None`).
    pub deriver: Option<String>,
    /// `Sig` lines, in order.
    pub sigs: Vec<Signature>,
    /// `CA`: the content address, as written (e.g. `fixed:r:sha256:...`).
    pub ca: Option<String>,
    /// `System`: found in some old narinfos.
    pub system: Option<String>,
    /// Unknown `Key: value` lines, in order.
    pub extra_fields: Vec<(String, String)>,
    /// The text this was parsed from; `None` when built in code.
    source: Option<String>,
}

impl NarInfo {
    /// A narinfo with the required fields and the compression; the optional fields are empty.
    pub fn new(
        store_path: StorePath,
        url: impl Into<String>,
        compression: impl Into<String>,
        nar_hash: Sha256Hash,
        nar_size: u64,
    ) -> Self {
        Self {
            store_path,
            url: url.into(),
            compression: compression.into(),
            file_hash: None,
            file_size: None,
            nar_hash,
            nar_size,
            references: Vec::new(),
            deriver: None,
            sigs: Vec::new(),
            ca: None,
            system: None,
            extra_fields: Vec::new(),
            source: None,
        }
    }

    /// Parses a narinfo, keeping its text for printing.
    pub fn parse(text: &str) -> Result<Self, NarInfoError> {
        let mut info = Self::parse_fields(text)?;
        info.source = Some(text.to_string());
        Ok(info)
    }

    /// The text this narinfo was parsed from, if it was parsed.
    pub fn source(&self) -> Option<&str> {
        self.source.as_deref()
    }

    /// The hash part of the store path, which names the `<hash>.narinfo` file.
    pub fn hash_part(&self) -> String {
        self.store_path.hash_part()
    }

    /// The string that `Sig` signs:
    /// `1;<StorePath>;<NarHash as sha256:nix32>;<NarSize>;<comma-joined sorted full reference paths>`.
    pub fn fingerprint(&self) -> String {
        let mut references: Vec<&StorePath> = self.references.iter().collect();
        references.sort();
        let references: Vec<String> = references.iter().map(|p| p.to_absolute_path()).collect();
        format!(
            "1;{};{};{};{}",
            self.store_path,
            self.nar_hash,
            self.nar_size,
            references.join(",")
        )
    }

    /// Checks the signatures against `keys`: [`SignatureCheck::Valid`] as soon as one signature
    /// by a key in `keys` (same name) verifies.
    pub fn verify_signatures(&self, keys: &[PublicKey]) -> SignatureCheck {
        let fingerprint = self.fingerprint();
        let mut failed: Option<&str> = None;
        for sig in &self.sigs {
            let mut trusted = false;
            for key in keys.iter().filter(|k| k.name() == sig.key_name()) {
                trusted = true;
                if key.verify(fingerprint.as_bytes(), sig) {
                    return SignatureCheck::Valid {
                        key_name: sig.key_name().to_string(),
                    };
                }
            }
            if trusted && failed.is_none() {
                failed = Some(sig.key_name());
            }
        }
        match failed {
            Some(key_name) => SignatureCheck::Invalid {
                key_name: key_name.to_string(),
            },
            None => SignatureCheck::NoTrustedSignature,
        }
    }

    /// [`NarInfo::verify_signatures`] for many narinfos, with one batch verification of one
    /// trusted signature each; only when the batch fails are they checked one by one. The
    /// results are in the order of `infos`.
    pub fn verify_signatures_batch(infos: &[&NarInfo], keys: &[PublicKey]) -> Vec<SignatureCheck> {
        let fingerprints: Vec<String> = infos.iter().map(|i| i.fingerprint()).collect();
        let mut results: Vec<Option<SignatureCheck>> = vec![None; infos.len()];
        let mut batch: Vec<(&[u8], &Signature, &PublicKey)> = Vec::new();
        let mut in_batch: Vec<(usize, &str)> = Vec::new();
        for (i, info) in infos.iter().enumerate() {
            let candidate = info.sigs.iter().find_map(|sig| {
                keys.iter()
                    .find(|k| k.name() == sig.key_name())
                    .map(|k| (sig, k))
            });
            match candidate {
                Some((sig, key)) => {
                    batch.push((fingerprints[i].as_bytes(), sig, key));
                    in_batch.push((i, sig.key_name()));
                }
                None => results[i] = Some(SignatureCheck::NoTrustedSignature),
            }
        }
        if crate::signature::verify_batch(&batch) {
            for (i, key_name) in in_batch {
                results[i] = Some(SignatureCheck::Valid {
                    key_name: key_name.to_string(),
                });
            }
        }
        results
            .into_iter()
            .zip(infos)
            .map(|(r, info)| r.unwrap_or_else(|| info.verify_signatures(keys)))
            .collect()
    }

    /// Signs the fingerprint with `key`, replacing any earlier signature by a key of that name.
    pub fn sign(&mut self, key: &SecretKey) {
        let sig = key.sign(self.fingerprint().as_bytes());
        self.sigs.retain(|s| s.key_name() != key.name());
        self.sigs.push(sig);
    }

    /// The narinfo in the form Nix writes: StorePath, URL, Compression, FileHash, FileSize,
    /// NarHash, NarSize, References (sorted, always present), Deriver, Sig (in order), CA,
    /// then System and the unknown fields in order. Hashes are written as `sha256:<nix32>`.
    pub fn to_canonical_string(&self) -> String {
        let mut out = String::with_capacity(1024);
        let mut line = |key: &str, value: &dyn fmt::Display| {
            use fmt::Write as _;
            // Writing to a String cannot fail.
            let _ = writeln!(out, "{key}: {value}");
        };
        line("StorePath", &self.store_path);
        line("URL", &self.url);
        line("Compression", &self.compression);
        if let Some(file_hash) = &self.file_hash {
            line("FileHash", file_hash);
        }
        if let Some(file_size) = self.file_size {
            line("FileSize", &file_size);
        }
        line("NarHash", &self.nar_hash);
        line("NarSize", &self.nar_size);
        let mut references: Vec<&StorePath> = self.references.iter().collect();
        references.sort();
        let references: Vec<String> = references.iter().map(|p| p.basename()).collect();
        line("References", &references.join(" "));
        if let Some(deriver) = &self.deriver {
            line("Deriver", deriver);
        }
        for sig in &self.sigs {
            line("Sig", sig);
        }
        if let Some(ca) = &self.ca {
            line("CA", ca);
        }
        if let Some(system) = &self.system {
            line("System", system);
        }
        for (key, value) in &self.extra_fields {
            line(key, value);
        }
        out
    }

    /// This narinfo's text (see `Display`) with the line `key: value` appended, after removing
    /// any earlier lines of that field. Used to add `IPFSHash: <cid>` for publishing without
    /// touching the stored copy. `key` is meant to be a fixed field name: characters that would
    /// break the format (`:`, whitespace and control characters in `key`; line breaks in
    /// `value`) are replaced by `_` and spaces. [`NarInfo::try_with_extra_field`] rejects them
    /// instead.
    pub fn with_extra_field(&self, key: &str, value: &str) -> String {
        let key: String = key
            .chars()
            .map(|c| if is_field_name_char(c) { c } else { '_' })
            .collect();
        let key = if key.is_empty() { "_".to_string() } else { key };
        let value: String = value
            .chars()
            .map(|c| if matches!(c, '\n' | '\r') { ' ' } else { c })
            .collect();
        self.append_field(&key, &value)
    }

    /// Like [`NarInfo::with_extra_field`], but fails on a key or value that would not parse.
    pub fn try_with_extra_field(&self, key: &str, value: &str) -> Result<String, NarInfoError> {
        if key.is_empty() || !key.chars().all(is_field_name_char) || value.contains(['\n', '\r']) {
            return Err(NarInfoError::InvalidExtraField {
                key: shorten(key, SHORTEN),
            });
        }
        Ok(self.append_field(key, value))
    }

    fn append_field(&self, key: &str, value: &str) -> String {
        let text = self.to_string();
        let mut out = String::with_capacity(text.len() + key.len() + value.len() + 3);
        for line in text.split_inclusive('\n') {
            if line.split_once(':').map(|(k, _)| k) != Some(key) {
                out.push_str(line);
            }
        }
        out.push_str(key);
        out.push_str(": ");
        out.push_str(value);
        out.push('\n');
        out
    }

    /// Whether the typed fields of `self` and `other` are equal (the source text aside).
    fn same_fields(&self, other: &Self) -> bool {
        let Self {
            store_path,
            url,
            compression,
            file_hash,
            file_size,
            nar_hash,
            nar_size,
            references,
            deriver,
            sigs,
            ca,
            system,
            extra_fields,
            source: _,
        } = self;
        *store_path == other.store_path
            && *url == other.url
            && *compression == other.compression
            && *file_hash == other.file_hash
            && *file_size == other.file_size
            && *nar_hash == other.nar_hash
            && *nar_size == other.nar_size
            && *references == other.references
            && *deriver == other.deriver
            && *sigs == other.sigs
            && *ca == other.ca
            && *system == other.system
            && *extra_fields == other.extra_fields
    }

    /// Parses the fields without keeping the text.
    fn parse_fields(text: &str) -> Result<Self, NarInfoError> {
        if text.len() > MAX_NARINFO_SIZE {
            return Err(NarInfoError::TooLarge { size: text.len() });
        }
        let mut store_path = Slot::default();
        let mut url = Slot::default();
        let mut compression = Slot::default();
        let mut file_hash = Slot::default();
        let mut file_size = Slot::default();
        let mut nar_hash = Slot::default();
        let mut nar_size = Slot::default();
        let mut references = Slot::default();
        let mut deriver = Slot::default();
        let mut ca = Slot::default();
        let mut system = Slot::default();
        let mut sigs = Vec::new();
        let mut extra_fields = Vec::new();

        for (index, raw) in text.split_inclusive('\n').enumerate() {
            let line = index + 1;
            let Some(content) = raw.strip_suffix('\n') else {
                return Err(NarInfoError::MissingNewline { line });
            };
            if content.contains('\r') {
                return Err(NarInfoError::CarriageReturn { line });
            }
            let Some((key, value)) = content
                .split_once(':')
                .and_then(|(key, rest)| Some((key, rest.strip_prefix(' ')?)))
            else {
                return Err(NarInfoError::MalformedLine {
                    line,
                    content: shorten(content, SHORTEN),
                });
            };
            if key.is_empty() || !key.chars().all(is_field_name_char) {
                return Err(NarInfoError::InvalidFieldName {
                    line,
                    name: shorten(key, SHORTEN),
                });
            }
            match key {
                "StorePath" => store_path.set(line, "StorePath", || {
                    StorePath::from_absolute_path(value).map_err(|source| {
                        NarInfoError::InvalidStorePath {
                            line,
                            field: "StorePath",
                            source,
                        }
                    })
                })?,
                "URL" => url.set(line, "URL", || non_empty(line, "URL", value))?,
                "Compression" => compression.set(line, "Compression", || {
                    non_empty(line, "Compression", value)
                })?,
                "FileHash" => file_hash.set(line, "FileHash", || hash(line, "FileHash", value))?,
                "FileSize" => {
                    file_size.set(line, "FileSize", || number(line, "FileSize", value))?
                }
                "NarHash" => nar_hash.set(line, "NarHash", || hash(line, "NarHash", value))?,
                "NarSize" => nar_size.set(line, "NarSize", || number(line, "NarSize", value))?,
                "References" => references.set(line, "References", || {
                    value
                        .split(' ')
                        .filter(|r| !r.is_empty())
                        .map(|r| {
                            StorePath::from_basename(r).map_err(|source| {
                                NarInfoError::InvalidStorePath {
                                    line,
                                    field: "References",
                                    source,
                                }
                            })
                        })
                        .collect::<Result<Vec<_>, _>>()
                })?,
                "Deriver" => deriver.set(line, "Deriver", || {
                    non_empty(line, "Deriver", value).map(|d| (d != UNKNOWN_DERIVER).then_some(d))
                })?,
                "Sig" => sigs.push(
                    Signature::parse(value)
                        .map_err(|source| NarInfoError::InvalidSignature { line, source })?,
                ),
                "CA" => ca.set(line, "CA", || non_empty(line, "CA", value))?,
                "System" => system.set(line, "System", || Ok(value.to_string()))?,
                _ => extra_fields.push((key.to_string(), value.to_string())),
            }
        }

        Ok(Self {
            store_path: store_path.required("StorePath")?,
            url: url.required("URL")?,
            compression: compression
                .value
                .unwrap_or_else(|| DEFAULT_COMPRESSION.to_string()),
            file_hash: file_hash.value,
            file_size: file_size.value,
            nar_hash: nar_hash.required("NarHash")?,
            nar_size: nar_size.required("NarSize")?,
            references: references.value.unwrap_or_default(),
            deriver: deriver.value.flatten(),
            sigs,
            ca: ca.value,
            system: system.value,
            extra_fields,
            source: None,
        })
    }
}

impl fmt::Display for NarInfo {
    /// Writes the parsed text unchanged if the fields still match it, else the canonical form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(source) = &self.source {
            if Self::parse_fields(source).is_ok_and(|original| self.same_fields(&original)) {
                return f.write_str(source);
            }
        }
        f.write_str(&self.to_canonical_string())
    }
}

impl FromStr for NarInfo {
    type Err = NarInfoError;

    /// Same as [`NarInfo::parse`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A field that may be given at most once, with the line it was given on.
struct Slot<T> {
    value: Option<T>,
    line: usize,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            value: None,
            line: 0,
        }
    }
}

impl<T> Slot<T> {
    /// Stores the value made by `parse`, failing if the field was already given.
    fn set(
        &mut self,
        line: usize,
        field: &'static str,
        parse: impl FnOnce() -> Result<T, NarInfoError>,
    ) -> Result<(), NarInfoError> {
        if self.value.is_some() {
            return Err(NarInfoError::DuplicateField {
                line,
                field,
                first_line: self.line,
            });
        }
        self.value = Some(parse()?);
        self.line = line;
        Ok(())
    }

    fn required(self, field: &'static str) -> Result<T, NarInfoError> {
        self.value.ok_or(NarInfoError::MissingField { field })
    }
}

fn non_empty(line: usize, field: &'static str, value: &str) -> Result<String, NarInfoError> {
    if value.is_empty() {
        Err(NarInfoError::EmptyValue { line, field })
    } else {
        Ok(value.to_string())
    }
}

fn hash(line: usize, field: &'static str, value: &str) -> Result<Sha256Hash, NarInfoError> {
    Sha256Hash::parse_nix(value).map_err(|source| NarInfoError::InvalidHash {
        line,
        field,
        source,
    })
}

/// A decimal number of ASCII digits only (`u64::from_str` would also take a leading `+`).
fn number(line: usize, field: &'static str, value: &str) -> Result<u64, NarInfoError> {
    let invalid = || NarInfoError::InvalidNumber {
        line,
        field,
        value: shorten(value, SHORTEN),
    };
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    value.parse().map_err(|_| invalid())
}

/// Field names are printable ASCII without `:` or spaces.
fn is_field_name_char(c: char) -> bool {
    c.is_ascii_graphic() && c != ':'
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signature::CACHE_NIXOS_ORG_KEY;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    /// (hash part, text) of the cache.nixos.org narinfos.
    const REAL: &[(&str, &str)] = &[
        (
            "5ka41zhii1bjss3f60rzd2npz9mxj060",
            include_str!("testdata/narinfo/real/5ka41zhii1bjss3f60rzd2npz9mxj060.narinfo"),
        ),
        (
            "7k3vlmpvzjqrc7lbmz1csbhg5d1rn4fw",
            include_str!("testdata/narinfo/real/7k3vlmpvzjqrc7lbmz1csbhg5d1rn4fw.narinfo"),
        ),
        (
            "axp6zlky4x2v3jwcbq24a2cz25hzlw9b",
            include_str!("testdata/narinfo/real/axp6zlky4x2v3jwcbq24a2cz25hzlw9b.narinfo"),
        ),
        (
            "gdh8165b7rg4y53v64chjys7mbbw89f9",
            include_str!("testdata/narinfo/real/gdh8165b7rg4y53v64chjys7mbbw89f9.narinfo"),
        ),
        (
            "mg5riyrz6hva7njw82gr5ghvajklkccq",
            include_str!("testdata/narinfo/real/mg5riyrz6hva7njw82gr5ghvajklkccq.narinfo"),
        ),
        (
            "p4pclmv1gyja5kzc26npqpia1qqxrf0l",
            include_str!("testdata/narinfo/real/p4pclmv1gyja5kzc26npqpia1qqxrf0l.narinfo"),
        ),
        (
            "syd87l2rxw8cbsxmxl853h0r6pdwhwjr",
            include_str!("testdata/narinfo/real/syd87l2rxw8cbsxmxl853h0r6pdwhwjr.narinfo"),
        ),
        (
            "w9yy7v61ipb5rx6i35zq1mvc2iqfmps1",
            include_str!("testdata/narinfo/real/w9yy7v61ipb5rx6i35zq1mvc2iqfmps1.narinfo"),
        ),
    ];

    /// (hash part, text) of the synthetic cache signed with the fixture key.
    const MINI: &[(&str, &str)] = &[
        (
            "00svgrbd1srnd74fkhik86izj3qxysx7",
            include_str!("testdata/narinfo/mini-cache/00svgrbd1srnd74fkhik86izj3qxysx7.narinfo"),
        ),
        (
            "4flqhl9kzg41khyi6pam1n0005mvkr28",
            include_str!("testdata/narinfo/mini-cache/4flqhl9kzg41khyi6pam1n0005mvkr28.narinfo"),
        ),
        (
            "r29rfw7xvs9kc6lxma5aqdqbci3af4vg",
            include_str!("testdata/narinfo/mini-cache/r29rfw7xvs9kc6lxma5aqdqbci3af4vg.narinfo"),
        ),
        (
            "wanm1lanl5y7az5skr8drx9sbl9qykdq",
            include_str!("testdata/narinfo/mini-cache/wanm1lanl5y7az5skr8drx9sbl9qykdq.narinfo"),
        ),
    ];

    const FIXTURE_PUB: &str = include_str!("testdata/keys/fixture-signing-key.pub");
    const FIXTURE_SEC: &str = include_str!("testdata/keys/fixture-signing-key.sec");

    const CURL: &str = REAL[6].1;
    const SOURCE: &str = REAL[4].1;

    fn nixos_key() -> PublicKey {
        PublicKey::parse(CACHE_NIXOS_ORG_KEY).unwrap()
    }

    fn fixture_key() -> PublicKey {
        PublicKey::parse(FIXTURE_PUB).unwrap()
    }

    fn valid(key_name: &str) -> SignatureCheck {
        SignatureCheck::Valid {
            key_name: key_name.to_string(),
        }
    }

    #[test]
    fn batch_verification_agrees_with_checking_one_by_one() {
        let nixos = PublicKey::parse(CACHE_NIXOS_ORG_KEY).unwrap();
        let fixture = PublicKey::parse(FIXTURE_PUB).unwrap();
        let keys = [nixos.clone(), fixture.clone()];
        let mut infos: Vec<NarInfo> = REAL
            .iter()
            .chain(MINI)
            .map(|(_, t)| NarInfo::parse(t).unwrap())
            .collect();
        let check = |infos: &[NarInfo], keys: &[PublicKey]| {
            let refs: Vec<&NarInfo> = infos.iter().collect();
            let batch = NarInfo::verify_signatures_batch(&refs, keys);
            let single: Vec<SignatureCheck> =
                infos.iter().map(|i| i.verify_signatures(keys)).collect();
            assert_eq!(batch, single);
            batch
        };
        let all = check(&infos, &keys);
        assert!(all
            .iter()
            .all(|c| matches!(c, SignatureCheck::Valid { .. })));
        assert_eq!(
            all[0],
            SignatureCheck::Valid {
                key_name: "cache.nixos.org-1".into()
            }
        );
        // Only the cache.nixos.org key: the fixture-signed ones have no trusted signature.
        let only_nixos = check(&infos, std::slice::from_ref(&nixos));
        assert_eq!(
            only_nixos[REAL.len()..],
            vec![SignatureCheck::NoTrustedSignature; MINI.len()][..]
        );
        // A changed signed field fails that narinfo alone, whichever position it is in.
        for bad in [0, 3, REAL.len() + 1] {
            let mut changed = infos.clone();
            changed[bad].nar_size += 1;
            let results = check(&changed, &keys);
            for (i, r) in results.iter().enumerate() {
                if i == bad {
                    assert!(matches!(r, SignatureCheck::Invalid { .. }), "{i}: {r:?}");
                } else {
                    assert!(matches!(r, SignatureCheck::Valid { .. }), "{i}: {r:?}");
                }
            }
        }
        // A second signature that verifies still counts when the first trusted one does not.
        let secret = SecretKey::parse(FIXTURE_SEC).unwrap();
        let mut twice = infos[0].clone();
        let forged =
            crate::signature::Signature::parse(&format!("{}:{}", secret.name(), BASE64_64_ZEROES))
                .unwrap();
        twice.sigs = vec![forged];
        twice.sign(&SecretKey::generate("other-1", [3; 32]).unwrap());
        infos.push(twice.clone());
        let results = check(&infos, &keys);
        assert!(matches!(
            results.last(),
            Some(SignatureCheck::Invalid { .. })
        ));
        let other = SecretKey::generate("other-1", [3; 32]).unwrap().to_public();
        let results = check(&infos, &[fixture, other]);
        assert!(matches!(
            results.last(),
            Some(SignatureCheck::Valid { key_name }) if key_name == "other-1"
        ));
        // Nothing to check, and no keys at all.
        assert!(NarInfo::verify_signatures_batch(&[], &keys).is_empty());
        let none = check(&infos[..2], &[]);
        assert_eq!(none, vec![SignatureCheck::NoTrustedSignature; 2]);
    }

    /// Base64 of 64 zero bytes: a well-formed signature that verifies nothing.
    const BASE64_64_ZEROES: &str =
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==";

    #[test]
    fn real_narinfos_parse_round_trip_and_verify() {
        for (hash_part, text) in REAL {
            let info = NarInfo::parse(text).unwrap_or_else(|e| panic!("{hash_part}: {e}"));
            assert_eq!(info.hash_part(), *hash_part);
            assert_eq!(info.to_string(), *text, "{hash_part}");
            assert_eq!(info.source(), Some(*text));
            assert_eq!(info.sigs.len(), 1);
            assert_eq!(
                info.verify_signatures(&[nixos_key()]),
                valid("cache.nixos.org-1"),
                "{hash_part}"
            );
            assert_eq!(
                info.verify_signatures(&[fixture_key()]),
                SignatureCheck::NoTrustedSignature
            );
            assert_eq!(
                info.verify_signatures(&[fixture_key(), nixos_key()]),
                valid("cache.nixos.org-1")
            );
        }
    }

    #[test]
    fn typed_fields() {
        let info = NarInfo::parse(CURL).unwrap();
        assert_eq!(
            info.store_path.to_string(),
            "/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin"
        );
        assert_eq!(
            info.url,
            "nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz"
        );
        assert_eq!(info.compression, "xz");
        assert_eq!(
            info.file_hash.unwrap().to_nix32(),
            "05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56"
        );
        assert_eq!(info.file_size, Some(68852));
        assert_eq!(
            info.nar_hash.to_string(),
            "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0"
        );
        assert_eq!(info.nar_size, 196040);
        let refs: Vec<String> = info.references.iter().map(|r| r.basename()).collect();
        assert_eq!(
            refs,
            [
                "0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0",
                "6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115",
                "j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12",
                "yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n",
            ]
        );
        assert_eq!(
            info.deriver.as_deref(),
            Some("5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv")
        );
        assert_eq!(info.sigs[0].key_name(), "cache.nixos.org-1");
        assert_eq!((&info.ca, &info.system), (&None, &None));
        assert!(info.extra_fields.is_empty());

        // No References line, a CA line, no Deriver.
        let source = NarInfo::parse(SOURCE).unwrap();
        assert!(source.references.is_empty());
        assert_eq!(
            source.ca.as_deref(),
            Some("fixed:r:sha256:0555pg9zcr3aazyxqb6g6q8vq3lc5zz3rnqx8ga1i3bs2q04yb4q")
        );
        assert_eq!(source.deriver, None);
        assert_eq!(source.nar_size, 185066208);
        assert!(source.fingerprint().ends_with(";185066208;"));

        let ripgrep = NarInfo::parse(REAL[2].1).unwrap();
        assert_eq!(ripgrep.compression, "zstd");
        assert_eq!(ripgrep.references.len(), 3);
        assert_eq!(NarInfo::parse(REAL[5].1).unwrap().references.len(), 12);
    }

    #[test]
    fn fingerprint_matches_test_vector() {
        let info = NarInfo::parse(CURL).unwrap();
        assert_eq!(
            info.fingerprint(),
            "1;/nix/store/syd87l2rxw8cbsxmxl853h0r6pdwhwjr-curl-7.82.0-bin;\
             sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0;196040;\
             /nix/store/0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0,\
             /nix/store/6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115,\
             /nix/store/j5jxw3iy7bbz4a57fh9g2xm2gxmyal8h-zlib-1.2.12,\
             /nix/store/yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n"
        );
        // The fingerprint sorts references, whatever their order in the file.
        let shuffled = CURL.replace(
            "0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0 6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115",
            "6w8g7njm4mck5dmjxws0z1xnrxvl81xa-glibc-2.34-115 0jqd0rlxzra1rs38rdxl43yh6rxchgc6-curl-7.82.0",
        );
        assert_ne!(shuffled, CURL);
        let reordered = NarInfo::parse(&shuffled).unwrap();
        assert_eq!(reordered.fingerprint(), info.fingerprint());
        assert_eq!(reordered.to_string(), shuffled);
        assert_eq!(reordered.to_canonical_string(), CURL);
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let check = |text: &str| {
            NarInfo::parse(text)
                .unwrap()
                .verify_signatures(&[nixos_key()])
        };
        let invalid = SignatureCheck::Invalid {
            key_name: "cache.nixos.org-1".into(),
        };
        assert_eq!(
            check(&CURL.replace("NarSize: 196040", "NarSize: 196041")),
            invalid
        );
        assert_eq!(
            check(&CURL.replace("zlib-1.2.12", "zlib-1.2.13")),
            invalid,
            "changed reference"
        );
        assert_eq!(
            check(&CURL.replace(" yxvjs9drzsphm9pcf42a4byzj1kb9m7k-openssl-1.1.1n", "")),
            invalid,
            "dropped reference"
        );
        assert_eq!(
            check(&CURL.replace("curl-7.82.0-bin", "curl-7.82.1-bin")),
            invalid
        );
        assert_eq!(
            check(&CURL.replace(
                "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys0",
                "sha256:1b4sb93wp679q4zx9k1ignby1yna3z7c4c2ri3wphylbc2dwsys1"
            )),
            invalid
        );
        // Unsigned fields can change without invalidating the signature.
        assert_eq!(
            check(&CURL.replace("FileSize: 68852", "FileSize: 1")),
            valid("cache.nixos.org-1")
        );
        // A signature under another name is not trusted at all.
        let renamed = CURL.replace("Sig: cache.nixos.org-1:", "Sig: cache.example.org-1:");
        assert_eq!(check(&renamed), SignatureCheck::NoTrustedSignature);
        let unsigned: String = CURL
            .lines()
            .filter(|l| !l.starts_with("Sig:"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(check(&unsigned), SignatureCheck::NoTrustedSignature);
        // One good signature is enough, even next to a bad one by the same key name.
        let forged_sig = "Sig: cache.nixos.org-1:u47N81GjFd/qpAQ8bRz3Ve584pYwp/gWswtHa6PwWSzhfYvw7oTBW0DThOzapKGuxqqnvw9HfKRnggOniyPBDw==\n";
        assert_eq!(check(&format!("{unsigned}{forged_sig}")), invalid);
        assert_eq!(
            check(&format!("{forged_sig}{CURL}")),
            valid("cache.nixos.org-1")
        );
    }

    #[test]
    fn mini_cache_verifies_only_with_the_fixture_key() {
        for (hash_part, text) in MINI {
            let info = NarInfo::parse(text).unwrap();
            assert_eq!(info.hash_part(), *hash_part);
            assert_eq!(info.to_string(), *text);
            assert_eq!(
                info.verify_signatures(&[fixture_key()]),
                valid("nixipfs-fixture-1")
            );
            assert_eq!(
                info.verify_signatures(&[nixos_key()]),
                SignatureCheck::NoTrustedSignature
            );
            assert_eq!(
                info.verify_signatures(&[]),
                SignatureCheck::NoTrustedSignature
            );
        }
    }

    #[test]
    fn canonical_form_is_what_nix_writes() {
        for (hash_part, text) in REAL.iter().chain(MINI) {
            let info = NarInfo::parse(text).unwrap();
            if *hash_part == "mg5riyrz6hva7njw82gr5ghvajklkccq" {
                // Nix always writes References, even when empty (with a trailing space).
                let with_refs = text.replace("Sig:", "References: \nSig:");
                assert_eq!(info.to_canonical_string(), with_refs);
                let reparsed = NarInfo::parse(&with_refs).unwrap();
                assert!(reparsed.references.is_empty());
                assert_eq!(reparsed.to_string(), with_refs);
                assert_eq!(
                    reparsed.verify_signatures(&[nixos_key()]),
                    valid("cache.nixos.org-1")
                );
            } else {
                assert_eq!(info.to_canonical_string(), *text, "{hash_part}");
            }
        }
    }

    #[test]
    fn builds_and_signs_like_nix() {
        // r29rfw7x...-hello-2.10 of the mini cache, from its values.
        let key = SecretKey::parse(FIXTURE_SEC).unwrap();
        let hash = |s: &str| Sha256Hash::parse_nix(s).unwrap();
        let path = |s: &str| StorePath::from_basename(s).unwrap();
        let mut info = NarInfo::new(
            path("r29rfw7xvs9kc6lxma5aqdqbci3af4vg-hello-2.10"),
            "nar/183kf0lz9bqd235f3mdcjmvkzwjmjrzhi2cn0g426s9z3cbjbf23.nar.xz",
            "xz",
            hash("sha256:16160n4f46zqkmhbbz2nq8h17f2srnfd5y2ajlbdynwcrf3i72h0"),
            960,
        );
        info.file_hash = Some(hash(
            "sha256:183kf0lz9bqd235f3mdcjmvkzwjmjrzhi2cn0g426s9z3cbjbf23",
        ));
        info.file_size = Some(324);
        // Given unsorted: Nix writes them sorted.
        info.references = vec![
            path("wanm1lanl5y7az5skr8drx9sbl9qykdq-glibc-2.25"),
            path("r29rfw7xvs9kc6lxma5aqdqbci3af4vg-hello-2.10"),
        ];
        info.deriver = Some("1ab8mp7cv8k3pwq6a0d9dvb3y5lg2s7z-hello-2.10.drv".into());
        assert_eq!(info.source(), None);
        info.sign(&key);
        info.sign(&key);
        assert_eq!(info.sigs.len(), 1, "re-signing replaces the signature");
        assert_eq!(info.to_string(), MINI[2].1);

        // Every mini-cache narinfo, re-signed after dropping its signature, comes out the same.
        for (_, text) in MINI {
            let mut info = NarInfo::parse(text).unwrap();
            info.sigs.clear();
            assert_eq!(
                info.verify_signatures(&[fixture_key()]),
                SignatureCheck::NoTrustedSignature
            );
            info.sign(&key);
            assert_eq!(info.to_string(), *text);
        }
    }

    #[test]
    fn changed_fields_print_canonically() {
        let mut info = NarInfo::parse(SOURCE).unwrap();
        assert_eq!(info.to_string(), SOURCE);
        info.url = "nar/other.nar.xz".into();
        let printed = info.to_string();
        assert!(printed.contains("URL: nar/other.nar.xz\n"));
        assert!(printed.contains("References: \n"));
        assert_eq!(NarInfo::parse(&printed).unwrap().url, "nar/other.nar.xz");
        // Changing it back restores the original text.
        info.url = NarInfo::parse(SOURCE).unwrap().url;
        assert_eq!(info.to_string(), SOURCE);
    }

    #[test]
    fn unknown_fields_and_quirks_are_kept() {
        let text = format!(
            "{}IPFSHash: QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG\nSystem: x86_64-linux\nX-Empty: \n",
            CURL.replace("Compression: xz\n", "")
                .replace("Deriver: 5rwxzi7pal3qhpsyfc16gzkh939q1np6-curl-7.82.0.drv", "Deriver: unknown-deriver")
                .replace(
                    "FileHash: sha256:05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56",
                    "FileHash: sha256:0e53b66a55c66b9497f0a54e20d5fef7f6d7e8c1d3e9c71e46e93f0d96e7f0e1"
                )
        );
        let info = NarInfo::parse(&text).unwrap();
        assert_eq!(info.compression, DEFAULT_COMPRESSION);
        assert_eq!(info.deriver, None);
        assert_eq!(info.system.as_deref(), Some("x86_64-linux"));
        assert_eq!(
            info.file_hash.unwrap().to_hex(),
            "0e53b66a55c66b9497f0a54e20d5fef7f6d7e8c1d3e9c71e46e93f0d96e7f0e1"
        );
        assert_eq!(
            info.extra_fields,
            [
                (
                    "IPFSHash".to_string(),
                    "QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG".to_string()
                ),
                ("X-Empty".to_string(), String::new()),
            ]
        );
        assert_eq!(info.to_string(), text);
        assert_eq!(
            info.verify_signatures(&[nixos_key()]),
            valid("cache.nixos.org-1")
        );
    }

    #[test]
    fn with_extra_field_appends_one_line() {
        let cid = "bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi";
        let info = NarInfo::parse(CURL).unwrap();
        let extended = info.with_extra_field("IPFSHash", cid);
        assert_eq!(extended, format!("{CURL}IPFSHash: {cid}\n"));
        let reparsed = NarInfo::parse(&extended).unwrap();
        assert_eq!(
            reparsed.extra_fields,
            [("IPFSHash".to_string(), cid.to_string())]
        );
        assert_eq!(
            reparsed.verify_signatures(&[nixos_key()]),
            valid("cache.nixos.org-1")
        );
        // Setting it again replaces the earlier line.
        assert_eq!(
            reparsed.with_extra_field("IPFSHash", "other"),
            format!("{CURL}IPFSHash: other\n")
        );
        assert_eq!(
            info.try_with_extra_field("IPFSHash", cid).unwrap(),
            extended
        );
        for (key, value) in [
            ("", "x"),
            ("IPFS Hash", "x"),
            ("A:B", "x"),
            ("K", "a\nb"),
            ("K", "a\r"),
        ] {
            assert!(matches!(
                info.try_with_extra_field(key, value),
                Err(NarInfoError::InvalidExtraField { .. })
            ));
            // The lenient form still yields a narinfo that parses.
            let text = info.with_extra_field(key, value);
            assert_eq!(
                NarInfo::parse(&text).unwrap().extra_fields.len(),
                1,
                "{key:?} {value:?}"
            );
        }
    }

    #[test]
    fn errors_name_the_line_and_field() {
        use NarInfoError as E;
        let drop_line = |prefix: &str| -> String {
            CURL.split_inclusive('\n')
                .filter(|l| !l.starts_with(prefix))
                .collect()
        };
        type Check = fn(&NarInfoError) -> bool;
        let cases: Vec<(&str, String, Check)> = vec![
            ("empty input", String::new(), |e| {
                matches!(e, E::MissingField { field: "StorePath" })
            }),
            ("no StorePath", drop_line("StorePath:"), |e| {
                matches!(e, E::MissingField { field: "StorePath" })
            }),
            ("no URL", drop_line("URL:"), |e| {
                matches!(e, E::MissingField { field: "URL" })
            }),
            ("no NarHash", drop_line("NarHash:"), |e| {
                matches!(e, E::MissingField { field: "NarHash" })
            }),
            ("no NarSize", drop_line("NarSize:"), |e| {
                matches!(e, E::MissingField { field: "NarSize" })
            }),
            (
                "duplicate NarSize",
                format!("{CURL}NarSize: 196040\n"),
                |e| {
                    matches!(
                        e,
                        E::DuplicateField {
                            line: 11,
                            field: "NarSize",
                            first_line: 7
                        }
                    )
                },
            ),
            (
                "duplicate References",
                format!("{CURL}References: \n"),
                |e| {
                    matches!(
                        e,
                        E::DuplicateField {
                            line: 11,
                            field: "References",
                            first_line: 8
                        }
                    )
                },
            ),
            (
                "bad NarHash",
                CURL.replace("NarHash: sha256:1b4", "NarHash: sha256:eb4"),
                |e| {
                    matches!(
                        e,
                        E::InvalidHash {
                            line: 6,
                            field: "NarHash",
                            source: HashError::Nix32(_)
                        }
                    )
                },
            ),
            (
                "md5 FileHash",
                CURL.replace(
                    "FileHash: sha256:05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56",
                    "FileHash: md5:ea9b55537dd4c7e104515b2ccfaf4100",
                ),
                |e| {
                    matches!(
                        e,
                        E::InvalidHash {
                            line: 4,
                            field: "FileHash",
                            source: HashError::UnsupportedAlgorithm { .. }
                        }
                    )
                },
            ),
            (
                "bad store path",
                CURL.replace("/nix/store/syd87l2", "/nix/store/syd87e2"),
                |e| {
                    matches!(
                        e,
                        E::InvalidStorePath {
                            line: 1,
                            field: "StorePath",
                            source: StorePathError::InvalidHashPart { .. }
                        }
                    )
                },
            ),
            (
                "basename as StorePath",
                CURL.replace("StorePath: /nix/store/", "StorePath: "),
                |e| {
                    matches!(
                        e,
                        E::InvalidStorePath {
                            line: 1,
                            field: "StorePath",
                            source: StorePathError::NotInStore { .. }
                        }
                    )
                },
            ),
            (
                "bad reference",
                CURL.replace("-zlib-1.2.12", "-zlib 1.2.12"),
                |e| {
                    matches!(
                        e,
                        E::InvalidStorePath {
                            line: 8,
                            field: "References",
                            ..
                        }
                    )
                },
            ),
            (
                "absolute reference",
                CURL.replace("References: ", "References: /nix/store/"),
                |e| {
                    matches!(
                        e,
                        E::InvalidStorePath {
                            line: 8,
                            field: "References",
                            ..
                        }
                    )
                },
            ),
            (
                "signed NarSize",
                CURL.replace("NarSize: 196040", "NarSize: +196040"),
                |e| {
                    matches!(
                        e,
                        E::InvalidNumber {
                            line: 7,
                            field: "NarSize",
                            ..
                        }
                    )
                },
            ),
            (
                "overflowing FileSize",
                CURL.replace("FileSize: 68852", "FileSize: 18446744073709551616"),
                |e| {
                    matches!(
                        e,
                        E::InvalidNumber {
                            line: 5,
                            field: "FileSize",
                            ..
                        }
                    )
                },
            ),
            (
                "empty NarSize",
                CURL.replace("NarSize: 196040", "NarSize: "),
                |e| {
                    matches!(
                        e,
                        E::InvalidNumber {
                            line: 7,
                            field: "NarSize",
                            ..
                        }
                    )
                },
            ),
            (
                "empty URL",
                CURL.replace(
                    "URL: nar/05ra3y72i3qjri7xskf9qj8kb29r6naqy1sqpbs3azi3xcigmj56.nar.xz",
                    "URL: ",
                ),
                |e| {
                    matches!(
                        e,
                        E::EmptyValue {
                            line: 2,
                            field: "URL"
                        }
                    )
                },
            ),
            (
                "bad Sig",
                CURL.replace("Sig: cache.nixos.org-1:", "Sig: cache.nixos.org-1"),
                |e| matches!(e, E::InvalidSignature { line: 10, .. }),
            ),
            ("CRLF", CURL.replace('\n', "\r\n"), |e| {
                matches!(e, E::CarriageReturn { line: 1 })
            }),
            ("no final newline", CURL.trim_end().to_string(), |e| {
                matches!(e, E::MissingNewline { line: 10 })
            }),
            (
                "no space after colon",
                CURL.replace("NarSize: ", "NarSize:"),
                |e| matches!(e, E::MalformedLine { line: 7, .. }),
            ),
            ("no colon", format!("{CURL}garbage\n"), |e| {
                matches!(e, E::MalformedLine { line: 11, .. })
            }),
            ("empty line", format!("{CURL}\n"), |e| {
                matches!(e, E::MalformedLine { line: 11, .. })
            }),
            ("indented key", CURL.replace("URL:", " URL:"), |e| {
                matches!(e, E::InvalidFieldName { line: 2, .. })
            }),
            (
                "oversize",
                format!("{CURL}{}", "X: y\n".repeat(MAX_NARINFO_SIZE / 5)),
                |e| matches!(e, E::TooLarge { .. }),
            ),
        ];
        for (what, input, check) in cases {
            let err = NarInfo::parse(&input).unwrap_err();
            assert!(check(&err), "{what}: unexpected {err:?}");
            assert!(!err.to_string().is_empty());
        }
        // Just under the cap is fine.
        let padding = "X: y\n".repeat((MAX_NARINFO_SIZE - CURL.len()) / 5);
        let big = format!("{CURL}{padding}");
        assert!(big.len() <= MAX_NARINFO_SIZE);
        assert_eq!(NarInfo::parse(&big).unwrap().to_string(), big);
        // Repeated Sig lines are allowed.
        let sig_line = CURL.lines().find(|l| l.starts_with("Sig:")).unwrap();
        let twice = format!("{CURL}{sig_line}\n");
        assert_eq!(NarInfo::parse(&twice).unwrap().sigs.len(), 2);
        // Messages say where.
        let err = NarInfo::parse(&format!("{CURL}NarSize: 1\n")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "narinfo line 11: duplicate NarSize field (first given on line 7)"
        );
    }

    /// Mutates real narinfos at random (seeded) and checks that parsing never panics, and that
    /// whatever parses prints back byte for byte.
    #[test]
    fn mutated_input_never_panics() {
        const ALPHABET: &[char] = &[
            ':',
            ' ',
            '\n',
            '\r',
            '\0',
            '-',
            '/',
            '.',
            '=',
            '+',
            '0',
            '1',
            'z',
            'e',
            'a',
            'A',
            'é',
            'ß',
            '€',
            '\u{10ffff}',
            ';',
            ',',
        ];
        let mut rng = StdRng::seed_from_u64(0x006e_6978_6970_6673);
        let seeds: Vec<Vec<char>> = REAL
            .iter()
            .chain(MINI)
            .map(|(_, t)| t.chars().collect())
            .collect();
        let keys = [nixos_key(), fixture_key()];
        let mut parsed_ok = 0;
        for _ in 0..4000 {
            let mut text = seeds[rng.gen_range(0..seeds.len())].clone();
            for _ in 0..rng.gen_range(1..=4) {
                if text.is_empty() {
                    break;
                }
                let at = rng.gen_range(0..text.len());
                match rng.gen_range(0..6) {
                    0 => text[at] = ALPHABET[rng.gen_range(0..ALPHABET.len())],
                    1 => {
                        text.remove(at);
                    }
                    2 => text.insert(at, ALPHABET[rng.gen_range(0..ALPHABET.len())]),
                    3 => text.truncate(at),
                    4 => {
                        // Duplicate a stretch of text (often a whole line).
                        let end = (at + rng.gen_range(1..80)).min(text.len());
                        let stretch: Vec<char> = text[at..end].to_vec();
                        let to = rng.gen_range(0..=text.len());
                        text.splice(to..to, stretch);
                    }
                    _ => text[at] = char::from(rng.gen_range(0x20u8..0x7f)),
                }
            }
            let text: String = text.into_iter().collect();
            if let Ok(info) = NarInfo::parse(&text) {
                parsed_ok += 1;
                assert_eq!(info.to_string(), text);
                // The canonical form parses back to the same fields, with sorted references.
                let reparsed = NarInfo::parse(&info.to_canonical_string()).unwrap();
                let mut sorted = info.clone();
                sorted.references.sort();
                assert!(reparsed.same_fields(&sorted), "{text:?}");
                // Verifying is slow in debug builds: check a sample.
                if parsed_ok % 16 == 0 {
                    let _ = info.verify_signatures(&keys);
                }
            }
        }
        // Many mutations hit unsigned or free-form values and still parse.
        assert!(parsed_ok > 100, "only {parsed_ok} mutated inputs parsed");
    }
}
