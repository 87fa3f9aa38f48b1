//! Channel releases in a bucket, laid out as on disk under the target's prefix:
//! `PREFIX/releases/CHANNEL/NIXNAME/FILE`, and the channel pointer `PREFIX/channels/CHANNEL`.
//!
//! A release is made in a local directory as for the disk target, then [`upload`]ed: every file
//! but `git-revision` first, `git-revision` last, so that a release whose `git-revision` is in
//! the bucket is complete there. Each object carries the SHA-256 of its bytes as metadata
//! ([`SHA256_META`]): an object already there is kept when it has the same, and refused
//! otherwise, so no object of a release is ever replaced by different bytes.
//!
//! The channel pointer is an object carrying `x-amz-website-redirect-location` to the release,
//! as channels.nixos.org serves its channels: the bucket's website endpoint answers it with a
//! redirect. Its body names the release (`releases/CHANNEL/NIXNAME`), for the readers that use
//! the S3 API ([`channel_target`]). It is written by [`move_channel`] once the release and its
//! closure are complete.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use anyhow::{bail, Context, Result};
use bytes::Bytes;

use super::{BuildInfo, BUILD_INFO, COMPLETION_MARKER};
use crate::binary_cache::BINARY_CACHE_DIR;
use crate::fsutil;
use crate::storage::S3Store;

/// The user metadata naming an object's SHA-256 (hex).
pub const SHA256_META: &str = "sha256";

/// `releases/CHANNEL/NIXNAME`: the release's place under the prefix.
pub fn release_key(channel: &str, nixname: &str) -> String {
    format!("releases/{channel}/{nixname}")
}

/// `channels/CHANNEL`: the channel pointer's key under the prefix.
pub fn channel_key(channel: &str) -> String {
    format!("channels/{channel}")
}

/// What [`upload`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Uploaded {
    /// Files uploaded.
    pub files: usize,
    /// Files that were in the bucket already, with the same bytes.
    pub kept: usize,
    /// Whether the release was complete in the bucket before (nothing was written).
    pub was_complete: bool,
}

/// Uploads the release in the local directory `dir` to `releases/CHANNEL/NIXNAME/` under
/// `root`: see the module documentation. Its `binary_cache/` view (links into a local cache),
/// hidden and temporary names stay local. `listing` is what is under the release in the bucket
/// (relative to it), from one listing.
pub async fn upload(
    root: &S3Store,
    dir: &Path,
    channel: &str,
    nixname: &str,
    listing: &HashMap<String, u64>,
) -> Result<Uploaded> {
    let key = release_key(channel, nixname);
    let store = root.sub(&key);
    let mut report = Uploaded::default();
    if listing.contains_key(COMPLETION_MARKER) {
        report.was_complete = true;
        return Ok(report);
    }
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1).sort_by_file_name() {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        let rel = entry.path().strip_prefix(dir).unwrap_or(entry.path());
        let hidden = rel.components().any(|c| {
            let name = c.as_os_str().to_string_lossy();
            name.starts_with('.') || fsutil::is_temp_name(&name)
        });
        if hidden || rel.starts_with(BINARY_CACHE_DIR) || !entry.file_type().is_file() {
            continue;
        }
        let Some(rel) = rel.to_str() else {
            bail!("{} has a name that is not UTF-8", entry.path().display());
        };
        files.push(rel.to_string());
    }
    if !files.iter().any(|f| f == COMPLETION_MARKER) {
        bail!(
            "{} has no {COMPLETION_MARKER}: it is not complete, so it is not uploaded",
            dir.display()
        );
    }
    // `git-revision` last: its presence in the bucket means the release is complete.
    files.retain(|f| f != COMPLETION_MARKER);
    files.push(COMPLETION_MARKER.to_string());
    for rel in &files {
        let file = dir.join(rel);
        let sha = {
            let file = file.clone();
            tokio::task::spawn_blocking(move || sha256_of(&file))
                .await
                .context("hashing a release file failed")??
        };
        if listing.contains_key(rel.as_str()) {
            let head = store.head(rel).await?;
            let same = head
                .as_ref()
                .and_then(|h| h.meta.get(SHA256_META))
                .is_some_and(|s| *s == sha);
            if same {
                report.kept += 1;
                continue;
            }
            if head.is_some() {
                bail!(
                    "{} is in the bucket with other bytes than {}: an object is never \
                     replaced by different bytes; remove the unfinished release {} from the \
                     bucket to have it uploaded again",
                    store.url_of(rel),
                    file.display(),
                    root.url_of(&key)
                );
            }
        }
        store
            .upload_file_with(&file, rel, &[(SHA256_META, sha)])
            .await?;
        report.files += 1;
    }
    Ok(report)
}

/// The SHA-256 (hex) of the file at `path`, read in pieces.
fn sha256_of(path: &Path) -> Result<String> {
    use sha2::{Digest, Sha256};
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The release the channel pointer of `channel` names (`releases/CHANNEL/NIXNAME`), if there
/// is a pointer; an error when its body is not a release of that channel.
pub async fn channel_target(root: &S3Store, channel: &str) -> Result<Option<String>> {
    let key = channel_key(channel);
    let Some(body) = root.get(&key).await? else {
        return Ok(None);
    };
    let text = String::from_utf8_lossy(&body).trim().to_string();
    let prefix = format!("releases/{channel}/");
    match text.strip_prefix(&prefix) {
        Some(name) if fsutil::check_file_name(name).is_ok() => Ok(Some(text)),
        _ => bail!(
            "{} does not name a release of {channel} (it says {text:?})",
            root.url_of(&key)
        ),
    }
}

/// The `build-info.json` of the release `key` in the bucket, if it has a readable one.
pub async fn build_info(root: &S3Store, key: &str) -> Result<Option<BuildInfo>> {
    let rel = format!("{key}/{BUILD_INFO}");
    let Some(bytes) = root.get(&rel).await? else {
        return Ok(None);
    };
    match serde_json::from_slice(&bytes) {
        Ok(info) => Ok(Some(info)),
        Err(e) => {
            tracing::warn!("{} is not valid: {e}", root.url_of(&rel));
            Ok(None)
        }
    }
}

/// Points `channels/CHANNEL` at the release `NIXNAME` (complete in the bucket), unless the
/// release it points at is newer and `force` is not given. Returns whether it changed.
pub async fn move_channel(
    root: &S3Store,
    channel: &str,
    nixname: &str,
    info: &BuildInfo,
    force: bool,
) -> Result<bool> {
    let target = release_key(channel, nixname);
    if let Some(current) = channel_target(root, channel).await? {
        if current == target {
            return Ok(false);
        }
        if let Some(current_info) = build_info(root, &current).await? {
            if super::would_move_back(channel, info, &current_info, force) {
                return Ok(false);
            }
        }
    }
    let location = root.web_path_of(&target);
    root.put_redirect(
        &channel_key(channel),
        &location,
        Bytes::from(format!("{target}\n")),
    )
    .await?;
    tracing::info!("channel {channel} -> {location}");
    Ok(true)
}
