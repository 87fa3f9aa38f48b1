//! The local binary cache directory (`DIR/binary_cache`), a release's view of it ([`view`]),
//! and the upstream cache it is filled from ([`upstream`]).
//!
//! Layout: `HASH.narinfo` files exactly as the upstream cache served them, the NAR files at the
//! narinfo's `URL` (normally `nar/FILEHASH.nar.xz`), `nix-cache-info`, and `lastsync`. A narinfo
//! is only ever written after its NAR is in place and verified, so every narinfo in the cache has
//! its NAR (except after `--print-only`, which writes narinfos for another host to fill in).

pub mod staging;
pub mod upstream;
pub mod view;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::fsutil::{self, UnsafePath};
use crate::narinfo::NarInfo;
use crate::store_path::StorePath;

pub use staging::{PrintFormat, STAGING_DIR};
pub use upstream::{trusted_keys_for, Upstream, UpstreamNarInfoError};
pub use view::{release_links, LinkStats, ReleaseView};

/// The `nix-cache-info` nixipfs serves.
pub const NIX_CACHE_INFO: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";

/// Name of the binary cache directory, both globally and inside a release.
pub const BINARY_CACHE_DIR: &str = "binary_cache";

/// A local binary cache directory.
#[derive(Clone, Debug)]
pub struct LocalCache {
    root: PathBuf,
}

impl LocalCache {
    /// Opens (creating if needed) the cache at `root`, with its `nix-cache-info`.
    pub fn create(root: &Path) -> Result<LocalCache> {
        let root = fsutil::absolute(root)?;
        fs::create_dir_all(&root)
            .with_context(|| format!("cannot create the binary cache {}", root.display()))?;
        let cache = LocalCache {
            root: canonical(&root)?,
        };
        cache.write_nix_cache_info()?;
        Ok(cache)
    }

    /// Opens an existing cache directory without changing it.
    pub fn open(root: &Path) -> Result<LocalCache> {
        let root = fsutil::absolute(root)?;
        if !root.is_dir() {
            bail!("{} is not a directory", root.display());
        }
        Ok(LocalCache {
            root: canonical(&root)?,
        })
    }

    /// The cache directory, with every symlink on the way resolved, so that the relative links
    /// of a release are the same whatever name the mirror directory was given by.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `nix-cache-info` unless it already says the right thing.
    pub fn write_nix_cache_info(&self) -> Result<()> {
        fsutil::write_if_changed(&self.root.join("nix-cache-info"), NIX_CACHE_INFO.as_bytes())
    }

    /// Where the narinfo of `path` lives.
    pub fn narinfo_path(&self, path: &StorePath) -> PathBuf {
        self.root.join(format!("{}.narinfo", path.hash_part()))
    }

    /// Where the NAR of `info` lives; refuses a URL that would leave the cache directory.
    pub fn nar_path(&self, info: &NarInfo) -> Result<PathBuf, UnsafePath> {
        fsutil::safe_join(&self.root, &info.url)
    }

    /// Whether the NAR of `info` is in place with the size the narinfo gives. Files reach their
    /// final name only after verification, so the size check guards against outside meddling;
    /// `nixipfs verify` re-hashes everything.
    pub fn nar_present(&self, nar: &Path, info: &NarInfo) -> bool {
        match fs::symlink_metadata(nar) {
            Ok(m) if m.file_type().is_file() => info.file_size.map_or(true, |s| s == m.len()),
            _ => false,
        }
    }

    /// The narinfo of `path` stored here, if there is a usable one. A file that cannot be
    /// read, does not parse or describes another path is warned about and taken as absent, so
    /// that the caller fetches it again.
    pub fn read_narinfo(&self, path: &StorePath) -> Option<NarInfo> {
        let file = self.narinfo_path(path);
        let text = match fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!("cannot read {}: {e}; fetching it again", file.display());
                return None;
            }
        };
        match NarInfo::parse(&text) {
            Ok(info) if info.store_path == *path => Some(info),
            Ok(info) => {
                tracing::warn!(
                    "{} describes {}, not {path}; fetching it again",
                    file.display(),
                    info.store_path
                );
                None
            }
            Err(e) => {
                tracing::warn!(
                    "{} is not a valid narinfo ({e}); fetching it again",
                    file.display()
                );
                None
            }
        }
    }

    /// Stores a narinfo's text exactly as served.
    pub fn write_narinfo(&self, info: &NarInfo, fsync: bool) -> Result<()> {
        let text = narinfo_text(info);
        let dest = self.narinfo_path(&info.store_path);
        if fsync {
            fsutil::atomic_write(&dest, text.as_bytes())
        } else {
            fsutil::atomic_write_nosync(&dest, text.as_bytes())
        }
    }
}

/// The bytes of a narinfo as served (its source text when parsed).
pub fn narinfo_text(info: &NarInfo) -> String {
    match info.source() {
        Some(s) => s.to_string(),
        None => info.to_string(),
    }
}

/// `path` with every symlink resolved (it must exist).
fn canonical(path: &Path) -> Result<PathBuf> {
    fs::canonicalize(path).with_context(|| format!("cannot resolve {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::Sha256Hash;

    /// A narinfo of a made-up store path named `name`, with its NAR at `url`.
    pub(crate) fn info(name: &str, url: &str) -> NarInfo {
        let sp =
            StorePath::from_basename(&format!("{}-{name}", "0".repeat(32).replacen('0', "1", 1)))
                .unwrap();
        let mut i = NarInfo::new(sp, url, "xz", Sha256Hash([0; 32]), 1);
        i.file_size = Some(3);
        i
    }

    #[test]
    fn nar_url_may_not_escape() {
        let dir = tempfile::tempdir().unwrap();
        let cache = LocalCache::create(dir.path()).unwrap();
        for bad in [
            "../x.nar",
            "/etc/passwd",
            "nar/../../x",
            "http://h/x",
            "nar/%2e%2e/x",
        ] {
            assert!(cache.nar_path(&info("a", bad)).is_err(), "{bad}");
        }
        assert_eq!(
            cache.nar_path(&info("a", "nar/abc.nar.xz")).unwrap(),
            cache.root().join("nar/abc.nar.xz")
        );
    }
}
