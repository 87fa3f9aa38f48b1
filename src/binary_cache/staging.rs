//! The staging area of a mirror, `DIR/.staging/binary_cache`: where `--print-only` keeps the
//! narinfos it fetched, and where another downloader puts the NAR files it was handed, with the
//! cache's own layout (`HASH.narinfo`, `nar/FILE`).
//!
//! Nothing in it is served or published: it is a hidden directory (left out of IPFS
//! publications; the README's server examples refuse hidden names), and no narinfo in it is
//! linked from anywhere. A normal run takes a narinfo from it like one fetched from upstream
//! (its signatures checked, stored in the cache only after its NAR), and a NAR file from it only
//! after checking it like a download, down to its `NarHash`; each is moved or removed once it
//! is taken.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::{LocalCache, BINARY_CACHE_DIR};
use crate::hash::Sha256Hash;
use crate::store_path::StorePath;

/// The staging directory's name in a mirror directory.
pub const STAGING_DIR: &str = ".staging";

impl LocalCache {
    /// The staging area of the mirror this cache belongs to (`DIR/.staging/binary_cache` for
    /// the cache `DIR/binary_cache`). It is not created here: see [`LocalCache::create_dirs`].
    pub fn staging(&self) -> LocalCache {
        let mirror = self.root.parent().unwrap_or(&self.root);
        LocalCache {
            root: staging_root(mirror),
        }
    }

    /// Creates this cache's directory (and its `nar/`) if it is missing.
    pub fn create_dirs(&self) -> Result<()> {
        let nar = self.root.join("nar");
        std::fs::create_dir_all(&nar).with_context(|| format!("cannot create {}", nar.display()))
    }

    /// Removes the narinfo of `path`, if there is one.
    pub fn remove_narinfo(&self, path: &StorePath) -> Result<()> {
        let file = self.narinfo_path(path);
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(e).with_context(|| format!("cannot remove {}", file.display()))
            }
            _ => Ok(()),
        }
    }

    /// Removes the staging area of the mirror this cache belongs to, with whatever is left in
    /// it; returns how many files that was. Only for when every release of the mirror is
    /// complete: nothing in it is needed then.
    pub fn clear_staging(&self) -> Result<usize> {
        let staging = self.staging();
        let dir = staging.root.parent().unwrap_or(&staging.root).to_path_buf();
        if !dir.is_dir() {
            return Ok(0);
        }
        let files = walkdir::WalkDir::new(&dir)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| !e.file_type().is_dir())
            .count();
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove the staging area {}", dir.display()))?;
        Ok(files)
    }

    /// Whether this cache's directory exists.
    pub fn exists(&self) -> bool {
        self.root.is_dir()
    }
}

/// The staging area of the mirror directory `mirror`.
pub fn staging_root(mirror: &Path) -> PathBuf {
    mirror.join(STAGING_DIR).join(BINARY_CACHE_DIR)
}

/// How `--print-only` lists the NARs another downloader is to fetch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrintFormat {
    /// `URL,FILEHASH`: the narinfo's relative `URL` and its `FileHash` (`sha256:` nix32), as
    /// the 2017 scripts printed them.
    #[default]
    Plain,
    /// The NAR's full URL on the upstream cache, one a line (for `wget -i`, `curl -K`-style
    /// lists).
    Url,
    /// An input file for `aria2c -i LIST -d MIRROR_DIR`: the full URL, then `out=` (the file's
    /// path in the mirror's staging area) and `checksum=sha-256=` (the file's hash in hex), so
    /// that aria2c puts each file where the next run looks for it and verifies it itself.
    Aria2c,
}

impl PrintFormat {
    /// The entry of a file of a release copied as published: its full URL, its path `rel`
    /// under the mirror directory where the next run looks for it (in the staging area), and
    /// its sha256; ends with a newline. `plain` prints `URL,sha256:NIX32`.
    pub fn file_entry(self, url: &str, rel: &str, sha256: Sha256Hash) -> String {
        match self {
            PrintFormat::Plain => format!("{url},{sha256}\n"),
            PrintFormat::Url => format!("{url}\n"),
            PrintFormat::Aria2c => format!(
                "{url}\n  out={rel}\n  checksum=sha-256={}\n",
                sha256.to_hex()
            ),
        }
    }

    /// The entry of the NAR at `url` (its full URL), at `rel` in the cache's layout, whose
    /// sha256 is `hash`; ends with a newline.
    pub fn entry(self, url: &str, rel: &str, hash: Option<Sha256Hash>) -> String {
        match self {
            PrintFormat::Plain => format!(
                "{rel},{}\n",
                hash.map(|h| h.to_string()).unwrap_or_default()
            ),
            PrintFormat::Url => format!("{url}\n"),
            PrintFormat::Aria2c => {
                let mut e = format!("{url}\n  out={STAGING_DIR}/{BINARY_CACHE_DIR}/{rel}\n");
                if let Some(h) = hash {
                    e.push_str(&format!("  checksum=sha-256={}\n", h.to_hex()));
                }
                e
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_staging_area_sits_beside_the_cache_in_a_hidden_directory() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::create(&dir.path().join("binary_cache")).unwrap();
        let staging = cache.staging();
        let mirror = std::fs::canonicalize(dir.path()).unwrap();
        assert_eq!(staging.root(), mirror.join(".staging/binary_cache"));
        assert!(!staging.exists());
        staging.create_dirs().unwrap();
        assert!(staging.root().join("nar").is_dir());
    }

    #[test]
    fn aria2c_entries_put_files_in_the_staging_area() {
        let h = Sha256Hash([7; 32]);
        let e = PrintFormat::Aria2c.entry("http://c/nar/x.nar.xz", "nar/x.nar.xz", Some(h));
        assert_eq!(
            e,
            format!(
                "http://c/nar/x.nar.xz\n  out=.staging/binary_cache/nar/x.nar.xz\n  checksum=sha-256={}\n",
                h.to_hex()
            )
        );
        assert_eq!(
            PrintFormat::Plain.entry("http://c/nar/x.nar.xz", "nar/x.nar.xz", Some(h)),
            format!("nar/x.nar.xz,{h}\n")
        );
    }
}
