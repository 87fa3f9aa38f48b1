//! Fetching one file from inside a store path through a binary cache, without a `nix` binary:
//! the narinfo of the store path, its NAR (verified against `FileHash`), streamed through
//! decompression and the NAR reader to the file at a path inside the NAR, whose sha256 must be
//! the one expected (e.g. Hydra's `sha256hash` of a build product).
//!
//! The NAR is taken from the local binary cache when it is there; otherwise it is downloaded to a
//! temporary file in the given temp directory and removed afterwards. The extracted file is
//! written under a temporary name in its destination directory and renamed into place only when
//! it is complete and verified.

use std::io::{BufReader, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::binary_cache::{LocalCache, PrintFormat, Upstream, UpstreamNarInfoError};
use crate::compression::{self, Compression};
use crate::fetch::Expected;
use crate::fsutil;
use crate::hash::{HashingReader, HashingWriter, Sha256Hash};
use crate::nar;
use crate::narinfo::NarInfo;
use crate::store_path::StorePath;

/// Where to get store paths from.
#[derive(Clone, Copy)]
pub struct CacheAccess<'a> {
    /// The upstream binary cache, with the keys its narinfos must be signed by.
    pub upstream: &'a Upstream,
    /// A local binary cache to take narinfos and NARs from when present; its staging area
    /// ([`crate::binary_cache::staging`]) is looked in too.
    pub local: Option<&'a LocalCache>,
    /// List a NAR that is not here for another downloader instead of downloading it
    /// (`--print-only`); its narinfo is kept in the local cache's staging area.
    pub print: Option<PrintFormat>,
}

/// What [`fetch_store_file`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The file is in place, verified: this many bytes.
    File(u64),
    /// The NAR holding the file is not here and is for another downloader
    /// ([`CacheAccess::print`]): its entry in the list, or `None` when it was placed in the
    /// staging area already. The file is not written.
    Listed(Option<String>),
}

/// One file to fetch.
pub struct StoreFile<'a> {
    /// The store path holding the file.
    pub store_path: &'a StorePath,
    /// The path inside it (`""` when the store path is the file itself).
    pub inner: &'a str,
    /// The file's sha256.
    pub sha256: Sha256Hash,
    /// The file's size, when known.
    pub size: Option<u64>,
    /// Where to put it.
    pub dest: &'a Path,
}

/// Fetches the narinfo of `path`, checked like the closure walk does: from the local cache or
/// its staging area when there is one there signed by a trusted key, else from upstream (and,
/// with [`CacheAccess::print`], kept in the staging area).
pub async fn fetch_narinfo(access: &CacheAccess<'_>, path: &StorePath) -> Result<NarInfo> {
    let caches = access.local.map(|l| [l.clone(), l.staging()]);
    for cache in caches.iter().flatten() {
        let Some(info) = cache.read_narinfo(path) else {
            continue;
        };
        match access.upstream.check_signatures(vec![info]).pop() {
            Some(Ok(info)) => return Ok(info),
            Some(Err((_, error))) => tracing::warn!(
                "{}: the narinfo stored for {path} is refused ({error}); fetching it again",
                cache.narinfo_path(path).display()
            ),
            None => {}
        }
    }
    let info = access
        .upstream
        .fetch_narinfo(path)
        .await
        .map_err(|e| match e {
            UpstreamNarInfoError::NotFound => anyhow::anyhow!(
                "{}: the cache has no narinfo for {path}",
                access.upstream.narinfo_url(path)
            ),
            UpstreamNarInfoError::Refused(msg) => anyhow::anyhow!(msg),
        })?;
    if let (Some(_), Some(local)) = (access.print, access.local) {
        let staging = local.staging();
        staging.create_dirs()?;
        staging.write_narinfo(&info, true)?;
    }
    Ok(info)
}

/// Fetches `file` into place. `tmpdir` holds the NAR while it is read. A NAR another
/// downloader put in the staging area is used there (its `NarHash` checked as it is read, and
/// the file against its expected hash).
pub async fn fetch_store_file(
    access: &CacheAccess<'_>,
    file: &StoreFile<'_>,
    tmpdir: &Path,
) -> Result<Fetched> {
    let info = fetch_narinfo(access, file.store_path).await?;
    let compression = Compression::from_narinfo(&info.compression).with_context(|| {
        format!(
            "the narinfo of {} names an unsupported compression",
            file.store_path
        )
    })?;
    fsutil::check_relative_path(&info.url)
        .with_context(|| format!("the narinfo of {} has an unsafe URL", file.store_path))?;

    // The NAR: from the local cache when it is there, or from its staging area; else listed
    // for another downloader, or downloaded to a temp file.
    let in_cache = |l: &LocalCache| {
        let p = l.nar_path(&info).ok()?;
        l.nar_present(&p, &info).then_some(p)
    };
    let local_nar = access.local.and_then(in_cache);
    let staged_nar = match local_nar {
        Some(_) => None,
        None => access
            .local
            .map(|l| l.staging())
            .as_ref()
            .and_then(in_cache),
    };
    if let (Some(format), None) = (access.print, &local_nar) {
        return Ok(Fetched::Listed(match staged_nar {
            Some(_) => None,
            None => Some(format.entry(&access.upstream.nar_url(&info), &info.url, info.file_hash)),
        }));
    }
    let (nar_path, _cleanup, from_staging) = match (local_nar, staged_nar) {
        (Some(p), _) => (p, None, false),
        (None, Some(p)) => (p, None, true),
        (None, None) => {
            std::fs::create_dir_all(tmpdir)
                .with_context(|| format!("cannot create {}", tmpdir.display()))?;
            let tmp = tmpdir.join(format!("{}nar-{}", fsutil::TEMP_PREFIX, info.hash_part()));
            let url = access.upstream.nar_url(&info);
            access
                .upstream
                .fetcher()
                .download(
                    &url,
                    &tmp,
                    Expected {
                        size: info.file_size,
                        sha256: info.file_hash,
                        nar: None,
                    },
                )
                .await?;
            (tmp.clone(), Some(fsutil::RemoveOnDrop(tmp)), false)
        }
    };

    let dest = file.dest.to_path_buf();
    let inner = file.inner.to_string();
    let want_sha = file.sha256;
    let want_size = file.size;
    let store_path = file.store_path.to_string();
    let nar_hash = info.nar_hash;
    let size = tokio::task::spawn_blocking(move || {
        extract_verified(
            &nar_path,
            compression,
            &inner,
            &dest,
            want_sha,
            want_size,
            nar_hash,
        )
        .with_context(|| format!("cannot extract {store_path}{inner}"))
    })
    .await
    .context("the extraction task failed")??;
    if from_staging {
        // Left in place: the closure may need the same NAR. The staging area is emptied once
        // a whole run has succeeded ([`LocalCache::clear_staging`]).
        tracing::info!("{}: taken from the staging area", file.store_path);
    }
    Ok(Fetched::File(size))
}

fn extract_verified(
    nar_path: &Path,
    compression: Compression,
    inner: &str,
    dest: &Path,
    want_sha: Sha256Hash,
    want_size: Option<u64>,
    nar_hash: Sha256Hash,
) -> Result<u64> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let nar_file = std::fs::File::open(nar_path)
        .with_context(|| format!("cannot open {}", nar_path.display()))?;
    let decompressed = compression::decompressor(compression, BufReader::new(nar_file))
        .with_context(|| format!("cannot decompress {}", nar_path.display()))?;
    // The NAR's hash is checked while it is read.
    let mut reader = HashingReader::new(decompressed);
    let tmp = fsutil::temp_file_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let mut out = HashingWriter::new(std::io::BufWriter::with_capacity(256 * 1024, tmp));
    nar::extract_file(&mut reader, inner, &mut out)?;
    let (_, got_nar, _) = reader.finish();
    if got_nar != nar_hash {
        bail!("the NAR's hash is {got_nar}, but its narinfo says {nar_hash}");
    }
    let (buf, got, size) = out.finish();
    let mut tmp = buf.into_inner().map_err(|e| e.into_error())?;
    tmp.flush()?;
    if got != want_sha {
        bail!(
            "the file's sha256 is {}, but Hydra says {}; it was not kept",
            got.to_hex(),
            want_sha.to_hex()
        );
    }
    if let Some(s) = want_size.filter(|&s| s != size) {
        bail!("the file has {size} bytes, but Hydra says {s}; it was not kept");
    }
    fsutil::persist(tmp, dest, true).with_context(|| format!("cannot write {}", dest.display()))?;
    Ok(size)
}
