//! Getting one source into the tree: from the binary cache first (its fixed-output store path's
//! narinfo, the NAR verified against `FileHash` and `NarHash`, the single file inside it), else
//! from its URLs in order. Either way the file is kept only when its hash is the declared one.
//! A source's own failures (not in the cache, URLs dead, wrong bytes) come back as reasons; a
//! failure of the mirror's own disk is an error.

use std::io::BufReader;
use std::path::Path;

use anyhow::{Context, Result};

use super::source::{FileHashes, HashAlgo, HashingTee, Source};
use super::tree::{hash_file, Tree};
use crate::compression::{self, Compression};
use crate::fetch::{Expected, FetchError};
use crate::fsutil;
use crate::hash::{HashingReader, Sha256Hash};
use crate::nar;
use crate::narinfo::NarInfo;
use crate::store_file::{self, CacheAccess};

/// What fetching needs.
#[derive(Clone, Copy)]
pub struct FetchContext<'a> {
    /// The binary caches (local first, then upstream).
    pub access: CacheAccess<'a>,
    /// The tree files go into.
    pub tree: &'a Tree,
    /// Where NARs are held while they are read.
    pub tmpdir: &'a Path,
    /// Whether files are fsynced before they are renamed into place.
    pub fsync: bool,
}

/// Where a source came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The binary cache.
    Cache,
    /// This URL.
    Url(String),
    /// A file another downloader put at its hash's path.
    PlacedByHand,
}

/// A source now in the tree.
#[derive(Clone, Debug)]
pub struct Got {
    /// Its sha512 in hex (its name in the tree).
    pub key: String,
    /// Its size.
    pub bytes: u64,
    /// Where it came from.
    pub origin: Origin,
}

/// Gets `src` into the tree. `Ok(Err(reason))`: it could not be had (every way tried is in
/// the reason).
pub async fn fetch_source(ctx: &FetchContext<'_>, src: &Source) -> Result<Result<Got, String>> {
    let got = fetch_source_inner(ctx, src).await?;
    // aria2c's control file of a download it did not finish: the source is settled now.
    let mut control = ctx.tree.hand_path(&src.hash).into_os_string();
    control.push(".aria2");
    match std::fs::remove_file(&control) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("cannot remove {}", control.to_string_lossy()))
        }
    }
    Ok(got)
}

async fn fetch_source_inner(ctx: &FetchContext<'_>, src: &Source) -> Result<Result<Got, String>> {
    let mut reasons = Vec::new();
    if let Some(placed) = ctx.tree.placed_by_hand(&src.hash) {
        match adopt(ctx, src, &placed).await? {
            Ok(got) => return Ok(Ok(got)),
            Err(why) => reasons.push(why),
        }
    }
    match from_cache(ctx, src).await? {
        Ok(got) => return Ok(Ok(got)),
        Err(why) => reasons.push(format!("binary cache: {why}")),
    }
    if src.is_patch {
        reasons.push(
            "changed after download (postFetch): its URLs do not give the declared bytes".into(),
        );
        return Ok(Err(reasons.join("; ")));
    }
    let mut tried = 0;
    for url in src.fetchable_urls() {
        tried += 1;
        match from_url(ctx, src, url).await? {
            Ok(got) => return Ok(Ok(got)),
            Err(why) => reasons.push(why),
        }
    }
    if tried == 0 {
        let urls = if src.urls.is_empty() {
            "none".to_string()
        } else {
            src.urls.join(" ")
        };
        reasons.push(format!("no http(s) URL to fetch it from (URLs: {urls})"));
    }
    Ok(Err(reasons.join("; ")))
}

/// A regular file at `tarballs/<algo>/<hex>` (an `aria2c -i` list puts it there): moved under
/// its sha512 and linked when its hash is right, removed otherwise.
async fn adopt(ctx: &FetchContext<'_>, src: &Source, placed: &Path) -> Result<Result<Got, String>> {
    let path = placed.to_path_buf();
    let hashes = tokio::task::spawn_blocking(move || hash_file(&path))
        .await
        .context("the hashing task failed")?
        .with_context(|| format!("cannot read {}", placed.display()))?;
    if !hashes.matches(&src.hash) {
        std::fs::remove_file(placed)
            .with_context(|| format!("cannot remove {}", placed.display()))?;
        return Ok(Err(format!(
            "{} was not {} ({}); removed",
            placed.display(),
            src.hash,
            src.name
        )));
    }
    let key = place_path(ctx, placed, &hashes)?;
    Ok(Ok(Got {
        key,
        bytes: hashes.size,
        origin: Origin::PlacedByHand,
    }))
}

/// Renames the verified file at `path` into place and links it.
fn place_path(ctx: &FetchContext<'_>, path: &Path, hashes: &FileHashes) -> Result<String> {
    let key = super::source::to_hex(&hashes.sha512);
    let dest = ctx.tree.file_path(&key);
    if ctx.fsync {
        std::fs::File::open(path)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("cannot sync {}", path.display()))?;
    }
    std::fs::rename(path, &dest)
        .with_context(|| format!("cannot move {} to {}", path.display(), dest.display()))?;
    ctx.tree.link(hashes)?;
    Ok(key)
}

async fn from_cache(ctx: &FetchContext<'_>, src: &Source) -> Result<Result<Got, String>> {
    let store_path = match src.store_path() {
        Ok(p) => p,
        Err(why) => return Ok(Err(why)),
    };
    let info = match store_file::fetch_narinfo(&ctx.access, &store_path).await {
        Ok(i) => i,
        Err(e) => return Ok(Err(format!("{e:#}"))),
    };
    let want_ca = format!("fixed:{}:{}", src.hash.algo, src.hash.nix32());
    if let Some(ca) = info.ca.as_deref().filter(|ca| *ca != want_ca) {
        return Ok(Err(format!(
            "the narinfo of {store_path} says `CA: {ca}`, expected `{want_ca}`"
        )));
    }
    let compression = match Compression::from_narinfo(&info.compression) {
        Ok(c) => c,
        Err(e) => return Ok(Err(format!("the narinfo of {store_path}: {e}"))),
    };
    if let Err(e) = fsutil::check_relative_path(&info.url) {
        return Ok(Err(format!(
            "the narinfo of {store_path} has an unsafe URL: {e}"
        )));
    }
    let local_nar = ctx.access.local.and_then(|l| {
        let p = l.nar_path(&info).ok()?;
        l.nar_present(&p, &info).then_some(p)
    });
    let (nar_path, _cleanup) = match local_nar {
        Some(p) => (p, None),
        None => {
            let tmp = ctx
                .tmpdir
                .join(format!("{}src-{}", fsutil::TEMP_PREFIX, info.hash_part()));
            let url = ctx.access.upstream.nar_url(&info);
            let expected = Expected {
                size: info.file_size,
                sha256: info.file_hash,
                nar: None,
            };
            match ctx
                .access
                .upstream
                .fetcher()
                .download(&url, &tmp, expected)
                .await
            {
                Ok(_) => {}
                Err(e @ FetchError::Io { .. }) => return Err(e.into()),
                Err(e) => return Ok(Err(e.to_string())),
            }
            (tmp.clone(), Some(fsutil::RemoveOnDrop(tmp)))
        }
    };
    let tree = ctx.tree.clone();
    let src2 = src.clone();
    let fsync = ctx.fsync;
    let extracted = tokio::task::spawn_blocking(move || {
        extract_verified(&nar_path, compression, &info, &src2, &tree, fsync)
    })
    .await
    .context("the extraction task failed")??;
    Ok(extracted.map(|(key, bytes)| Got {
        key,
        bytes,
        origin: Origin::Cache,
    }))
}

/// Reads the single file out of the NAR at `nar_path`, checking the NAR against `NarHash` and
/// the file against the declared hash, and puts it into place.
fn extract_verified(
    nar_path: &Path,
    compression: Compression,
    info: &NarInfo,
    src: &Source,
    tree: &Tree,
    fsync: bool,
) -> Result<Result<(String, u64), String>> {
    let file = std::fs::File::open(nar_path)
        .with_context(|| format!("cannot open {}", nar_path.display()))?;
    let decompressed = match compression::decompressor(compression, BufReader::new(file)) {
        Ok(d) => d,
        Err(e) => {
            return Ok(Err(format!(
                "cannot decompress the NAR of {}: {e}",
                info.store_path
            )))
        }
    };
    let mut reader = HashingReader::new(decompressed);
    let tmp = tree.temp_file()?;
    let mut out = HashingTee {
        inner: std::io::BufWriter::with_capacity(256 * 1024, tmp),
        hasher: Default::default(),
    };
    if let Err(e) = nar::extract_file(&mut reader, "", &mut out) {
        return Ok(Err(format!(
            "the NAR of {} is not a single file: {e}",
            info.store_path
        )));
    }
    let (_, nar_hash, nar_size) = reader.finish();
    if nar_hash != info.nar_hash || nar_size != info.nar_size {
        return Ok(Err(format!(
            "the NAR of {} has {nar_hash} ({nar_size} bytes), its narinfo says {} ({} bytes)",
            info.store_path, info.nar_hash, info.nar_size
        )));
    }
    let hashes = out.hasher.finish();
    if !hashes.matches(&src.hash) {
        return Ok(Err(format!(
            "the file in {} is not {} (it has {}:{})",
            info.store_path,
            src.hash,
            src.hash.algo,
            super::source::to_hex(hashes.get(src.hash.algo))
        )));
    }
    let tmp = out
        .inner
        .into_inner()
        .map_err(|e| e.into_error())
        .context("cannot write a source file")?;
    let key = tree.place(tmp, &hashes, fsync)?;
    Ok(Ok((key, hashes.size)))
}

async fn from_url(ctx: &FetchContext<'_>, src: &Source, url: &str) -> Result<Result<Got, String>> {
    let dl = ctx.tree.root().join(format!(
        "{}dl-{}-{}",
        fsutil::TEMP_PREFIX,
        src.hash.algo,
        src.hash.hex()
    ));
    // sha256 is checked while the file streams (a mismatch is retried like any download);
    // every declared hash is checked below.
    let expected = Expected {
        size: None,
        sha256: (src.hash.algo == HashAlgo::Sha256)
            .then(|| src.hash.digest.as_slice().try_into().ok().map(Sha256Hash))
            .flatten(),
        nar: None,
    };
    match ctx
        .access
        .upstream
        .fetcher()
        .download(url, &dl, expected)
        .await
    {
        Ok(_) => {}
        Err(e @ FetchError::Io { .. }) => return Err(e.into()),
        Err(e) => return Ok(Err(e.to_string())),
    }
    let _cleanup = fsutil::RemoveOnDrop(dl.clone());
    let path = dl.clone();
    let hashes = tokio::task::spawn_blocking(move || hash_file(&path))
        .await
        .context("the hashing task failed")?
        .with_context(|| format!("cannot read {}", dl.display()))?;
    if !hashes.matches(&src.hash) {
        return Ok(Err(format!(
            "{url} is not {} (it has {}:{})",
            src.hash,
            src.hash.algo,
            super::source::to_hex(hashes.get(src.hash.algo))
        )));
    }
    let key = place_path(ctx, &dl, &hashes)?;
    Ok(Ok(Got {
        key,
        bytes: hashes.size,
        origin: Origin::Url(url.to_string()),
    }))
}
