//! The format side of source tarballs: declared hashes, the sources an evaluation lists, their
//! fixed-output store paths, and the two files a release keeps about them
//! (`tarballs-manifest`, `missing-tarballs`). No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io::Write;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use sha2::Digest;

use crate::nixbase32;
use crate::store_path::{StorePath, DIGEST_LEN, STORE_DIR};
use crate::text::shorten;

/// A hash algorithm a fixed-output source may be declared with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlgo {
    /// MD5 (old expressions).
    Md5,
    /// SHA-1.
    Sha1,
    /// SHA-256, nearly every source.
    Sha256,
    /// SHA-512.
    Sha512,
}

impl HashAlgo {
    /// Every algorithm, in the order of the tree's directories.
    pub const ALL: [HashAlgo; 4] = [
        HashAlgo::Md5,
        HashAlgo::Sha1,
        HashAlgo::Sha256,
        HashAlgo::Sha512,
    ];

    /// The name Nix uses (`sha256`), also the directory of the tree.
    pub fn name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// The name aria2c's `checksum=` option takes.
    pub fn aria2c_name(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha-1",
            HashAlgo::Sha256 => "sha-256",
            HashAlgo::Sha512 => "sha-512",
        }
    }

    /// Digest length in bytes.
    pub fn digest_len(self) -> usize {
        match self {
            HashAlgo::Md5 => 16,
            HashAlgo::Sha1 => 20,
            HashAlgo::Sha256 => 32,
            HashAlgo::Sha512 => 64,
        }
    }

    /// Parses a name as Nix writes it.
    pub fn parse(s: &str) -> Option<HashAlgo> {
        HashAlgo::ALL.into_iter().find(|a| a.name() == s)
    }
}

impl fmt::Display for HashAlgo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A declared hash: the algorithm and the digest.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceHash {
    /// The algorithm.
    pub algo: HashAlgo,
    /// The digest, [`HashAlgo::digest_len`] bytes.
    pub digest: Vec<u8>,
}

impl SourceHash {
    /// Parses a hash as a derivation declares it: `outputHash` in hex, nix32 or base64 with
    /// `outputHashAlgo` naming the algorithm, or an SRI hash (`sha256-<base64>`) with the
    /// algorithm empty or the same. `algo:digest` is accepted too.
    pub fn parse(algo: Option<&str>, hash: &str) -> Result<SourceHash, String> {
        let algo = algo.filter(|a| !a.is_empty());
        let (algo_name, digest, sri) = if let Some((a, d)) = hash
            .split_once('-')
            .filter(|(a, _)| HashAlgo::parse(a).is_some())
        {
            (a, d, true)
        } else if let Some((a, d)) = hash.split_once(':') {
            (a, d, false)
        } else {
            match algo {
                Some(a) => (a, hash, false),
                None => {
                    return Err(format!(
                        "hash {:?} names no algorithm (no outputHashAlgo, not an SRI hash)",
                        shorten(hash, 200)
                    ))
                }
            }
        };
        let parsed = HashAlgo::parse(algo_name)
            .ok_or_else(|| format!("unsupported hash algorithm {:?}", shorten(algo_name, 50)))?;
        if let Some(other) = algo.filter(|a| *a != algo_name) {
            return Err(format!(
                "hash {:?} is {algo_name} but outputHashAlgo says {:?}",
                shorten(hash, 200),
                shorten(other, 50)
            ));
        }
        let n = parsed.digest_len();
        let bytes = if sri || digest.len() == base64_len(n) {
            BASE64
                .decode(digest)
                .map_err(|e| format!("hash {:?}: invalid base64: {e}", shorten(hash, 200)))?
        } else if digest.len() == 2 * n {
            from_hex(digest)
                .ok_or_else(|| format!("hash {:?}: invalid hexadecimal", shorten(hash, 200)))?
        } else if digest.len() == nixbase32::encoded_len(n) {
            nixbase32::decode(digest)
                .map_err(|e| format!("hash {:?}: invalid nix32: {e}", shorten(hash, 200)))?
        } else {
            return Err(format!(
                "{algo_name} hash {:?} has {} characters: expected {} (hex), {} (nix32) or {} \
                 (base64)",
                shorten(hash, 200),
                digest.len(),
                2 * n,
                nixbase32::encoded_len(n),
                base64_len(n)
            ));
        };
        if bytes.len() != n {
            return Err(format!(
                "hash {:?} decodes to {} bytes, {algo_name} has {n}",
                shorten(hash, 200),
                bytes.len()
            ));
        }
        Ok(SourceHash {
            algo: parsed,
            digest: bytes,
        })
    }

    /// The digest in lowercase hexadecimal.
    pub fn hex(&self) -> String {
        to_hex(&self.digest)
    }

    /// The digest in nix32.
    pub fn nix32(&self) -> String {
        nixbase32::encode(&self.digest)
    }
}

impl fmt::Display for SourceHash {
    /// `algo:hex`, the form of the manifest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algo, self.hex())
    }
}

fn base64_len(n: usize) -> usize {
    n.div_ceil(3) * 4
}

/// Lowercase hexadecimal.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// Parses hexadecimal (either case).
pub fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// One fixed-output source of a release: a flat file with a declared hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    /// The derivation's name, which the fixed-output store path carries.
    pub name: String,
    /// The declared hash.
    pub hash: SourceHash,
    /// The URLs to fetch it from, in order (`mirror://` already expanded where possible).
    pub urls: Vec<String>,
    /// Changed after download (`postFetch`): only the binary cache has the declared bytes.
    pub is_patch: bool,
}

impl Source {
    /// The store path Nix gives this source: `makeFixedOutputPath` for a flat file.
    pub fn store_path(&self) -> Result<StorePath, String> {
        fixed_output_path(&self.hash, &self.name)
    }

    /// The URLs nixipfs can fetch (http and https).
    pub fn fetchable_urls(&self) -> impl Iterator<Item = &str> {
        self.urls
            .iter()
            .map(String::as_str)
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
    }
}

/// The store path of a flat fixed-output file (`outputHashMode = "flat"`) named `name`:
/// `sha256("fixed:out:<algo>:<hex>:")` as the inner hash, then the path of type `output:out`.
pub fn fixed_output_path(hash: &SourceHash, name: &str) -> Result<StorePath, String> {
    let inner = sha2::Sha256::digest(format!("fixed:out:{}:{}:", hash.algo, hash.hex()));
    let fingerprint = format!("output:out:sha256:{}:{STORE_DIR}:{name}", to_hex(&inner));
    let full = sha2::Sha256::digest(fingerprint.as_bytes());
    let mut digest = [0u8; DIGEST_LEN];
    for (i, b) in full.iter().enumerate() {
        digest[i % DIGEST_LEN] ^= b;
    }
    StorePath::new(digest, name).map_err(|e| format!("source name {name:?}: {e}"))
}

/// The digests of one file in every algorithm, as the tree names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileHashes {
    /// MD5.
    pub md5: [u8; 16],
    /// SHA-1.
    pub sha1: [u8; 20],
    /// SHA-256.
    pub sha256: [u8; 32],
    /// SHA-512: the file's name in the tree.
    pub sha512: [u8; 64],
    /// Bytes hashed.
    pub size: u64,
}

impl FileHashes {
    /// The digest in `algo`.
    pub fn get(&self, algo: HashAlgo) -> &[u8] {
        match algo {
            HashAlgo::Md5 => &self.md5,
            HashAlgo::Sha1 => &self.sha1,
            HashAlgo::Sha256 => &self.sha256,
            HashAlgo::Sha512 => &self.sha512,
        }
    }

    /// Whether the file is the one `hash` declares.
    pub fn matches(&self, hash: &SourceHash) -> bool {
        self.get(hash.algo) == hash.digest.as_slice()
    }
}

/// A writer computing [`FileHashes`] of everything written to it.
#[derive(Clone, Default)]
pub struct MultiHasher {
    md5: md5::Md5,
    sha1: sha1::Sha1,
    sha256: sha2::Sha256,
    sha512: sha2::Sha512,
    size: u64,
}

impl MultiHasher {
    /// A hasher that has seen nothing.
    pub fn new() -> MultiHasher {
        MultiHasher::default()
    }

    /// Adds bytes.
    pub fn update(&mut self, bytes: &[u8]) {
        self.md5.update(bytes);
        self.sha1.update(bytes);
        self.sha256.update(bytes);
        self.sha512.update(bytes);
        self.size += bytes.len() as u64;
    }

    /// The digests.
    pub fn finish(self) -> FileHashes {
        FileHashes {
            md5: self.md5.finalize().into(),
            sha1: self.sha1.finalize().into(),
            sha256: self.sha256.finalize().into(),
            sha512: self.sha512.finalize().into(),
            size: self.size,
        }
    }
}

/// A writer that hashes what passes through it into a [`MultiHasher`].
pub struct HashingTee<W> {
    /// Where the bytes go.
    pub inner: W,
    /// What has passed.
    pub hasher: MultiHasher,
}

impl<W: Write> Write for HashingTee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// What the evaluation listed, turned into sources: each distinct declared hash once, and the
/// entries that could not be taken, with why.
#[derive(Debug, Default)]
pub struct Listed {
    /// The sources, sorted by hash.
    pub sources: Vec<Source>,
    /// Entries refused (bad hash, bad name), one message each.
    pub refused: Vec<String>,
}

/// Reads the JSON list `find-tarballs.nix` prints: entries with `hash` (or `outputHash`),
/// `type` (or `outputHashAlgo`), `name`, `urls` (or `url`) and optionally `isPatch`.
/// `mirrors` expands `mirror://NAME/PATH` URLs (nixpkgs' `fetchurl/mirrors.nix`).
pub fn parse_listed(
    json: &serde_json::Value,
    mirrors: &BTreeMap<String, Vec<String>>,
) -> Result<Listed, String> {
    let entries = json
        .as_array()
        .ok_or("the evaluation did not return a list of sources")?;
    let mut by_hash: BTreeMap<SourceHash, Source> = BTreeMap::new();
    let mut listed = Listed::default();
    for (i, e) in entries.iter().enumerate() {
        let field = |names: &[&str]| names.iter().find_map(|n| e.get(*n)).cloned();
        let str_field = |names: &[&str]| field(names).and_then(|v| v.as_str().map(str::to_string));
        let name = str_field(&["name"]).unwrap_or_default();
        let Some(hash_text) = str_field(&["hash", "outputHash"]) else {
            listed
                .refused
                .push(format!("entry {i} ({name:?}) has no hash"));
            continue;
        };
        let algo = str_field(&["type", "outputHashAlgo"]);
        let hash = match SourceHash::parse(algo.as_deref(), &hash_text) {
            Ok(h) => h,
            Err(why) => {
                listed.refused.push(format!("entry {i} ({name:?}): {why}"));
                continue;
            }
        };
        let mut urls: Vec<String> = match field(&["urls", "url"]) {
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect(),
            Some(serde_json::Value::String(s)) => vec![s],
            _ => Vec::new(),
        };
        urls = expand_mirrors(&urls, mirrors);
        urls.retain(|u| !u.is_empty() && !u.chars().any(char::is_whitespace));
        let is_patch = e.get("isPatch").and_then(|v| v.as_bool()).unwrap_or(false);
        let source = Source {
            name,
            hash: hash.clone(),
            urls,
            is_patch,
        };
        if let Err(why) = source.store_path() {
            listed.refused.push(format!("entry {i}: {why}"));
            continue;
        }
        match by_hash.get_mut(&hash) {
            // The same file under two names or from two places: one entry, every URL.
            Some(have) => {
                for u in source.urls {
                    if !have.urls.contains(&u) {
                        have.urls.push(u);
                    }
                }
                have.is_patch &= source.is_patch;
            }
            None => {
                by_hash.insert(hash, source);
            }
        }
    }
    listed.sources = by_hash.into_values().collect();
    Ok(listed)
}

/// `mirror://NAME/PATH` becomes one URL per mirror of NAME (in order); other URLs stay.
/// An unknown mirror stays as it is (and is not fetchable).
pub fn expand_mirrors(urls: &[String], mirrors: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let mut out = Vec::new();
    for u in urls {
        let expanded = u
            .strip_prefix("mirror://")
            .and_then(|rest| rest.split_once('/'))
            .and_then(|(name, path)| {
                mirrors.get(name).map(|bases| {
                    bases
                        .iter()
                        .map(|b| format!("{}/{path}", b.trim_end_matches('/')))
                        .collect::<Vec<_>>()
                })
            });
        for e in expanded.unwrap_or_else(|| vec![u.clone()]) {
            if !out.contains(&e) {
                out.push(e);
            }
        }
    }
    out
}

/// The file a release lists its sources in.
pub const MANIFEST: &str = "tarballs-manifest";
/// The file a release lists the sources it lacks in.
pub const MISSING: &str = "missing-tarballs";

/// The text of `tarballs-manifest`: one source a line, `ALGO:HEX NAME [patch] URL...`.
pub fn manifest_text(sources: &[Source]) -> String {
    let mut out = String::new();
    for s in sources {
        out.push_str(&format!("{} {}", s.hash, s.name));
        if s.is_patch {
            out.push_str(" patch");
        }
        for u in &s.urls {
            out.push(' ');
            out.push_str(u);
        }
        out.push('\n');
    }
    out
}

/// Parses `tarballs-manifest`; an error names the line.
pub fn parse_manifest(text: &str) -> Result<Vec<Source>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(hash), Some(name)) = (words.next(), words.next()) else {
            return Err(format!("line {}: expected `ALGO:HEX NAME URL...`", n + 1));
        };
        let hash = SourceHash::parse(None, hash).map_err(|e| format!("line {}: {e}", n + 1))?;
        let mut is_patch = false;
        let mut urls = Vec::new();
        for w in words {
            if w == "patch" && urls.is_empty() && !is_patch {
                is_patch = true;
            } else {
                urls.push(w.to_string());
            }
        }
        let source = Source {
            name: name.to_string(),
            hash,
            urls,
            is_patch,
        };
        source
            .store_path()
            .map_err(|e| format!("line {}: {e}", n + 1))?;
        out.push(source);
    }
    Ok(out)
}

/// The text of `missing-tarballs`: `ALGO:HEX NAME: REASON`, one a line.
pub fn missing_text(missing: &[(Source, String)]) -> String {
    missing
        .iter()
        .map(|(s, why)| format!("{} {}: {}\n", s.hash, s.name, why.replace('\n', " ")))
        .collect()
}

/// The hashes `missing-tarballs` lists.
pub fn parse_missing(text: &str) -> BTreeSet<SourceHash> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|h| SourceHash::parse(None, h).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_parse_in_every_form_nix_writes() {
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        let want = SourceHash {
            algo: HashAlgo::Sha256,
            digest: from_hex(hex).unwrap(),
        };
        let nix32 = want.nix32();
        let b64 = BASE64.encode(&want.digest);
        for (algo, text) in [
            (Some("sha256"), hex.to_string()),
            (Some("sha256"), hex.to_uppercase()),
            (Some("sha256"), nix32.clone()),
            (Some("sha256"), b64.clone()),
            (None, format!("sha256-{b64}")),
            (Some(""), format!("sha256-{b64}")),
            (Some("sha256"), format!("sha256-{b64}")),
            (None, format!("sha256:{nix32}")),
        ] {
            assert_eq!(SourceHash::parse(algo, &text), Ok(want.clone()), "{text}");
        }
        let md5 = SourceHash::parse(Some("md5"), "d41d8cd98f00b204e9800998ecf8427e").unwrap();
        assert_eq!(md5.algo, HashAlgo::Md5);
        assert_eq!(md5.to_string(), "md5:d41d8cd98f00b204e9800998ecf8427e");
    }

    #[test]
    fn bad_hashes_are_refused_with_a_reason() {
        for (algo, text, says) in [
            (None, "abc", "names no algorithm"),
            (Some("sha384"), "abc", "unsupported hash algorithm"),
            (Some("sha1"), "sha256-AAAA", "outputHashAlgo says"),
            (Some("sha256"), "abcd", "has 4 characters"),
            (Some("sha256"), &"z".repeat(64), "invalid hexadecimal"),
        ] {
            let err = SourceHash::parse(algo, text).unwrap_err();
            assert!(err.contains(says), "{text}: {err}");
        }
    }

    #[test]
    fn fixed_output_paths_are_computed_as_nix_does() {
        // `builtins.derivation { name = "foo"; outputHashMode = "flat"; outputHashAlgo =
        // "sha256"; outputHash = "00...0" (52 zeros); ... }.outPath`, as nix-instantiate 2.8
        // prints it.
        let h = SourceHash::parse(Some("sha256"), &"0".repeat(52)).unwrap();
        assert_eq!(
            fixed_output_path(&h, "foo").unwrap().to_absolute_path(),
            "/nix/store/a3qrxr9fv07qngjdfd543q16dz6907hh-foo"
        );
    }

    #[test]
    fn listed_sources_are_merged_by_hash_and_mirrors_expanded() {
        let json = serde_json::json!([
            {"name": "a.tar.gz", "hash": "sha256-" , "type": "sha256", "urls": ["http://x/a"]},
            {"name": "b.tar.gz", "type": "sha256", "hash": "0".repeat(52),
             "urls": ["mirror://gnu/b.tar.gz", "http://y/b"]},
            {"name": "b-again.tar.gz", "outputHashAlgo": "sha256", "outputHash": "0".repeat(64),
             "url": "http://z/b"},
            {"name": "p.patch", "type": "sha256", "hash": "1".repeat(52), "urls": ["http://p"],
             "isPatch": true},
        ]);
        let mirrors = BTreeMap::from([(
            "gnu".to_string(),
            vec!["http://m1/gnu/".to_string(), "http://m2/gnu".to_string()],
        )]);
        let listed = parse_listed(&json, &mirrors).unwrap();
        assert_eq!(listed.refused.len(), 1, "{:?}", listed.refused);
        assert_eq!(listed.sources.len(), 2);
        let b = &listed.sources[0];
        assert_eq!(b.name, "b.tar.gz");
        assert_eq!(
            b.urls,
            [
                "http://m1/gnu/b.tar.gz",
                "http://m2/gnu/b.tar.gz",
                "http://y/b",
                "http://z/b"
            ]
        );
        assert!(listed.sources[1].is_patch);
        let text = manifest_text(&listed.sources);
        assert_eq!(parse_manifest(&text).unwrap(), listed.sources);
        let missing = missing_text(&[(b.clone(), "gone\neverywhere".into())]);
        assert_eq!(missing.lines().count(), 1);
        assert!(parse_missing(&missing).contains(&b.hash));
    }

    #[test]
    fn every_digest_of_a_file() {
        let mut h = MultiHasher::new();
        h.update(b"abc");
        let got = h.finish();
        assert_eq!(to_hex(&got.md5), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            to_hex(&got.sha1),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert!(got.matches(
            &SourceHash::parse(
                Some("sha256"),
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
            )
            .unwrap()
        ));
        assert_eq!(got.size, 3);
    }
}
