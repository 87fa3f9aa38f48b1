//! Where a mirror's binary cache is written: the local directory, or an S3-compatible bucket
//! ([`s3`]). [`CacheStore`] is the one type the mirror pipeline writes through.
//!
//! The pipeline downloads and verifies every NAR into a local file exactly as it does for the
//! disk target; [`CacheStore::commit_nar`] then makes the verified file the cache's: on disk it
//! is already at its final name (the download renamed it there after its check); in a bucket it
//! is uploaded (streamed, multipart when large) and the local file removed. Narinfos are
//! written by [`CacheStore::write_narinfos`] only after their NARs are committed.
//!
//! What a bucket holds is known from one paginated listing when the store is opened
//! ([`CacheStore::open_bucket`]), kept up to date as objects are written, never from a HEAD per
//! object.
//!
//! A NAR object that was checked down to its signed `NarHash` has a marker object beside the
//! cache's files, `.checked/URL/MARK` ([`CHECKED_PREFIX`]), written after the upload that
//! followed the check (or after a later check of the object): `MARK` is a digest of the fields
//! it was checked against and of the object's ETag, so a marker says nothing of an object
//! written since, nor for a narinfo that says anything else. Markers come with the listing; a
//! NAR object without its marker is downloaded and checked again before it is trusted, as a
//! file without its extended attribute is on disk.

pub mod s3;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bytes::Bytes;
use futures::StreamExt;

use crate::binary_cache::{narinfo_text, LocalCache, NIX_CACHE_INFO};
use crate::fetch::{self, Expected};
use crate::narinfo::NarInfo;
use crate::store_path::StorePath;
pub use s3::{ObjectHead, S3Location, S3Lock, S3Store};

/// Where a command writes: a mirror directory, or a prefix in a bucket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The mirror directory (the default).
    Dir(PathBuf),
    /// `s3://BUCKET/PREFIX`.
    S3(S3Location),
}

impl Target {
    /// `s3://BUCKET/PREFIX`, or a directory path.
    pub fn parse(target: &str) -> Result<Target> {
        if target.starts_with("s3://") {
            Ok(Target::S3(S3Location::parse(target)?))
        } else if target.contains("://") {
            anyhow::bail!(
                "{target}: unsupported target (expected a directory or s3://BUCKET/PREFIX)"
            )
        } else {
            Ok(Target::Dir(PathBuf::from(target)))
        }
    }

    /// The directory, or an error naming the command that needs one.
    pub fn dir(&self, command: &str) -> Result<&Path> {
        match self {
            Target::Dir(d) => Ok(d),
            Target::S3(l) => anyhow::bail!(
                "{command} works on a mirror directory, not on a bucket ({}); mirror to a \
                 directory for it",
                l.url()
            ),
        }
    }
}

/// Concurrent narinfo writes to a bucket.
const NARINFO_PUTS: usize = 16;

/// The binary cache the mirror pipeline writes: see the module documentation.
#[derive(Clone, Debug)]
pub struct CacheStore {
    /// On disk: the cache itself. For a bucket: a scratch directory where NARs are verified
    /// before they are uploaded.
    work: LocalCache,
    bucket: Option<Arc<Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    /// The bucket under `PREFIX/binary_cache`.
    store: S3Store,
    /// Key (relative to the cache) → size and ETag, of every object there.
    index: Mutex<HashMap<String, (u64, Option<String>)>>,
    /// Removed with the store.
    _scratch: tempfile::TempDir,
}

impl CacheStore {
    /// The cache directory `cache`.
    pub fn dir(cache: LocalCache) -> CacheStore {
        CacheStore {
            work: cache,
            bucket: None,
        }
    }

    /// The cache under `store` (`PREFIX/binary_cache`): lists it once; with `write`, writes its
    /// `nix-cache-info` unless it says the right thing already. NARs are verified in a scratch
    /// directory under `scratch_in` (default: the system's temporary directory, `TMPDIR`).
    pub async fn open_bucket(
        store: S3Store,
        scratch_in: Option<&Path>,
        write: bool,
    ) -> Result<CacheStore> {
        let index = store.list_tagged().await?;
        let scratch = match scratch_in {
            Some(dir) => tempfile::Builder::new()
                .prefix(crate::fsutil::TEMP_PREFIX)
                .tempdir_in(dir),
            None => tempfile::Builder::new().prefix("nixipfs-s3-").tempdir(),
        }
        .context("cannot create a scratch directory for NAR files")?;
        let work = LocalCache::create(&scratch.path().join(crate::binary_cache::BINARY_CACHE_DIR))?;
        if write {
            let current = store.get("nix-cache-info").await?;
            if current.as_deref() != Some(NIX_CACHE_INFO.as_bytes()) {
                store
                    .put(
                        "nix-cache-info",
                        Bytes::from_static(NIX_CACHE_INFO.as_bytes()),
                    )
                    .await?;
            }
        }
        Ok(CacheStore {
            work,
            bucket: Some(Arc::new(Bucket {
                store,
                index: Mutex::new(index),
                _scratch: scratch,
            })),
        })
    }

    /// The local directory NAR files are verified in (on disk, the cache itself).
    pub fn work(&self) -> &LocalCache {
        &self.work
    }

    /// Whether the cache is a bucket.
    pub fn is_bucket(&self) -> bool {
        self.bucket.is_some()
    }

    /// The bucket's store, if the cache is one.
    pub fn bucket_store(&self) -> Option<&S3Store> {
        self.bucket.as_ref().map(|b| &b.store)
    }

    /// The cache's object or file `rel`, for messages.
    pub fn describe(&self, rel: &str) -> String {
        match &self.bucket {
            Some(b) => b.store.url_of(rel),
            None => self.work.root().join(rel).display().to_string(),
        }
    }

    fn indexed(&self, rel: &str) -> Option<u64> {
        let b = self.bucket.as_ref()?;
        b.index.lock().expect("index lock").get(rel).map(|e| e.0)
    }

    /// The key of the marker saying that the NAR object `url`, as it is in the bucket now, was
    /// checked against `expected`; `None` when `expected` has no NAR to check or the object
    /// is not there with an ETag.
    fn marker_key(&self, url: &str, expected: &Expected) -> Option<String> {
        let b = self.bucket.as_ref()?;
        let etag = b.index.lock().expect("index lock").get(url)?.1.clone()?;
        checked_marker_key(url, &etag, expected)
    }

    /// The object `url` of the NAR file `nar` (a file of [`CacheStore::work`]).
    fn url_of_file(&self, nar: &Path) -> Option<String> {
        let rel = nar.strip_prefix(self.work.root()).ok()?;
        rel.to_str().map(str::to_string)
    }

    /// For a bucket: writes the marker of the NAR object of `info`, which has just passed a
    /// check against `expected`, NAR included (nothing on disk, where the check marked the
    /// file). A marker that cannot be written is warned about: the object is checked again on
    /// the next run.
    pub async fn mark_checked(&self, info: &NarInfo, expected: &Expected) {
        let Some(b) = &self.bucket else {
            return;
        };
        let Some(key) = self.marker_key(&info.url, expected) else {
            return;
        };
        if self.indexed(&key).is_some() {
            return;
        }
        match b.store.put(&key, Bytes::new()).await {
            Ok(()) => {
                b.index.lock().expect("index lock").insert(key, (0, None));
            }
            Err(e) => tracing::warn!(
                "{e:#}; {} will be checked again on the next run",
                b.store.url_of(&info.url)
            ),
        }
    }

    /// Whether the NAR of `info` (its local file `nar`) is in the cache with the size the
    /// narinfo gives.
    pub fn nar_present(&self, nar: &Path, info: &NarInfo) -> bool {
        match &self.bucket {
            Some(_) => self
                .indexed(&info.url)
                .is_some_and(|size| info.file_size.map_or(true, |s| s == size)),
            None => self.work.nar_present(nar, info),
        }
    }

    /// Whether a NAR in the cache was checked against `expected`, NAR included, when it was
    /// stored or since. On disk a marker on the file says so, in a bucket a marker object
    /// (see the module documentation).
    pub fn nar_trusted(&self, nar: &Path, expected: &Expected) -> bool {
        match &self.bucket {
            Some(_) => self
                .url_of_file(nar)
                .and_then(|url| self.marker_key(&url, expected))
                .is_some_and(|key| self.indexed(&key).is_some()),
            None => fetch::nar_checked(nar, expected),
        }
    }

    /// Whether the bucket holds the narinfo of `path` (always false on disk, where the walk
    /// reads the file itself).
    pub fn has_narinfo(&self, path: &StorePath) -> bool {
        self.indexed(&narinfo_key(path)).is_some()
    }

    /// The narinfo of `path` in the bucket, if there is a usable one (as
    /// [`LocalCache::read_narinfo`] does for a file).
    pub async fn read_bucket_narinfo(&self, path: &StorePath) -> Result<Option<NarInfo>> {
        let Some(b) = &self.bucket else {
            return Ok(None);
        };
        let key = narinfo_key(path);
        let Some(bytes) = b.store.get(&key).await? else {
            return Ok(None);
        };
        let url = b.store.url_of(&key);
        let parsed = std::str::from_utf8(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|t| NarInfo::parse(t).map_err(|e| e.to_string()));
        match parsed {
            Ok(info) if info.store_path == *path => Ok(Some(info)),
            Ok(info) => {
                tracing::warn!(
                    "{url} describes {}, not {path}; fetching it again",
                    info.store_path
                );
                Ok(None)
            }
            Err(e) => {
                tracing::warn!("{url} is not a valid narinfo ({e}); fetching it again");
                Ok(None)
            }
        }
    }

    /// Where the narinfo of `path` lives, for messages.
    pub fn narinfo_location(&self, path: &StorePath) -> String {
        match &self.bucket {
            Some(b) => b.store.url_of(&narinfo_key(path)),
            None => self.work.narinfo_path(path).display().to_string(),
        }
    }

    /// Makes the NAR file `nar`, verified against `expected`, the cache's NAR of `info`:
    /// nothing to do on disk; for a bucket, uploads it, removes the file and, when `expected`
    /// covered the NAR, writes its marker.
    pub async fn commit_nar(&self, nar: &Path, info: &NarInfo, expected: &Expected) -> Result<()> {
        let Some(b) = &self.bucket else {
            return Ok(());
        };
        let uploaded = b.store.upload_file_with(nar, &info.url, &[]).await;
        let _ = tokio::fs::remove_file(nar).await;
        let (size, etag) = uploaded?;
        b.index
            .lock()
            .expect("index lock")
            .insert(info.url.clone(), (size, etag));
        self.mark_checked(info, expected).await;
        Ok(())
    }

    /// For a bucket: downloads the NAR object of `info` to `nar`, to be checked there (and
    /// removed after). On disk the file is there already.
    pub async fn fetch_for_check(&self, nar: &Path, info: &NarInfo) -> Result<()> {
        match &self.bucket {
            Some(b) => b.store.download_file(&info.url, nar).await,
            None => Ok(()),
        }
    }

    /// Writes narinfos whose NARs are committed (to a bucket, several at once).
    pub async fn write_narinfos(&self, infos: Vec<NarInfo>) -> Result<()> {
        let Some(b) = &self.bucket else {
            for info in &infos {
                self.work.write_narinfo(info, false)?;
            }
            return Ok(());
        };
        let mut puts = futures::stream::iter(infos.into_iter().map(|info| {
            let store = b.store.clone();
            async move {
                let key = narinfo_key(&info.store_path);
                store.put(&key, Bytes::from(narinfo_text(&info))).await?;
                Ok::<_, anyhow::Error>(key)
            }
        }))
        .buffer_unordered(NARINFO_PUTS);
        while let Some(done) = puts.next().await {
            let key = done?;
            b.index.lock().expect("index lock").insert(key, (0, None));
        }
        Ok(())
    }
}

/// Where the markers of checked NAR objects are, relative to the cache.
pub const CHECKED_PREFIX: &str = ".checked/";

/// `.checked/URL/MARK`: the marker of the NAR object `url` with the ETag `etag` checked
/// against `expected`; `None` without a NAR, file hash or size to check.
fn checked_marker_key(url: &str, etag: &str, expected: &Expected) -> Option<String> {
    use sha2::{Digest, Sha256};
    let nar = expected.nar?;
    let fields = format!(
        "nixipfs-checked-1 {etag} {} {} {} {} {}",
        expected.sha256?, expected.size?, nar.compression, nar.hash, nar.size
    );
    let digest = Sha256::digest(fields.as_bytes());
    let mark: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("{CHECKED_PREFIX}{url}/{mark}"))
}

/// The NAR object a marker key (`.checked/URL/MARK`) is about.
pub fn marker_subject(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(CHECKED_PREFIX)?;
    rest.rsplit_once('/').map(|(url, _)| url)
}

/// The key of the narinfo of `path`, relative to the cache.
pub fn narinfo_key(path: &StorePath) -> String {
    format!("{}.narinfo", path.hash_part())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compression::Compression;
    use crate::fetch::ExpectedNar;
    use crate::hash::Sha256Hash;

    fn expected(nar_byte: char) -> Expected {
        let hex = |c: char| Sha256Hash::from_hex(&c.to_string().repeat(64)).unwrap();
        Expected {
            size: Some(10),
            sha256: Some(hex('a')),
            nar: Some(ExpectedNar {
                compression: Compression::Xz,
                hash: hex(nar_byte),
                size: 20,
            }),
        }
    }

    #[test]
    fn a_marker_names_its_nar_and_changes_with_the_object_and_the_narinfo() {
        let url = "nar/0abc.nar.xz";
        let key = checked_marker_key(url, "etag1", &expected('b')).unwrap();
        assert!(key.starts_with(".checked/nar/0abc.nar.xz/"), "{key}");
        assert_eq!(marker_subject(&key), Some(url));
        assert_eq!(
            checked_marker_key(url, "etag1", &expected('b')).as_deref(),
            Some(key.as_str())
        );
        // Another object (ETag) or another NarHash: another marker.
        assert_ne!(
            checked_marker_key(url, "etag2", &expected('b')).unwrap(),
            key
        );
        assert_ne!(
            checked_marker_key(url, "etag1", &expected('c')).unwrap(),
            key
        );
        // Nothing to mark without a NAR check.
        let mut file_only = expected('b');
        file_only.nar = None;
        assert_eq!(checked_marker_key(url, "etag1", &file_only), None);
        assert_eq!(marker_subject("nar/0abc.nar.xz"), None);
    }
}
