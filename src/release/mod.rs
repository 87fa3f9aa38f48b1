//! A channel release directory, `DIR/releases/CHANNEL/NIXNAME/`, and the channel link
//! `DIR/channels/CHANNEL` that points at one.
//!
//! Files: `src-url`, `binary-cache-url`, `store-paths`, `store-paths.xz`, `build-info.json`, the
//! channel tarball as `nixexprs.tar.xz`, for nixos channels the ISO/OVA images (each with a
//! `.sha256` file), `git-revision`, written last: its presence means the release is complete,
//! and `missing-store-paths` when upstream lacks part of the closure. The release's view of the
//! binary cache is [`crate::binary_cache::view`]. [`create`] makes a release from a Hydra build;
//! [`published`] copies a release as a channel server publishes it.

pub mod bucket;
pub mod create;
pub mod published;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::store_path::StorePath;

/// The file whose presence marks a complete release.
pub const COMPLETION_MARKER: &str = "git-revision";
/// What a release records about the Hydra build it came from.
pub const BUILD_INFO: &str = "build-info.json";

/// The names of the files and directories a release holds besides its build products: a
/// product by one of these names would overwrite them (an early `git-revision` would mark a
/// half-made release complete), so none is taken.
pub const RESERVED_NAMES: &[&str] = &[
    COMPLETION_MARKER,
    BUILD_INFO,
    "src-url",
    "binary-cache-url",
    "store-paths",
    "store-paths.xz",
    "missing-store-paths",
    "binary_cache",
    "nix-cache-info",
    "lastsync",
];

/// What the release records about its origin, in `build-info.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct BuildInfo {
    /// Hydra server.
    pub hydra: String,
    /// Project, jobset and job.
    pub project: String,
    /// Hydra jobset.
    pub jobset: String,
    /// Hydra job.
    pub job: String,
    /// The build's id.
    pub build_id: u64,
    /// The evaluation's id.
    pub eval_id: u64,
    /// The build's time (unix seconds): `stoptime`, else `timestamp`, else 0.
    pub build_time: i64,
    /// The release name (`nixname`).
    pub nixname: String,
    /// The nixpkgs revision.
    pub git_revision: String,
    /// The channel URL a published release was copied from; `None` for a release made from a
    /// Hydra build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The sha256 (hex) its publisher gives for each file of a published release, by file name:
    /// what `verify` checks those files against.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub published: BTreeMap<String, String>,
}

impl BuildInfo {
    /// Reads `release_dir/build-info.json`.
    pub fn read(release_dir: &Path) -> Result<BuildInfo> {
        let file = release_dir.join(BUILD_INFO);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid", file.display()))
    }

    /// The order of releases: newer evaluation, then newer build.
    pub fn order_key(&self) -> (u64, i64, u64) {
        (self.eval_id, self.build_time, self.build_id)
    }
}

/// A channel release on disk.
#[derive(Clone, Debug)]
pub struct ChannelRelease {
    /// `OUTDIR/CHANNEL/NIXNAME`.
    pub dir: PathBuf,
    /// Where it came from.
    pub info: BuildInfo,
    /// Whether this run created it (false: it was complete already).
    pub created: bool,
    /// With `--print-only`: the list entries of the NARs holding its files that are to be
    /// fetched by another downloader (see [`crate::store_file::Fetched::Listed`]). While any
    /// file waits for one, the release has no `git-revision`.
    pub listed: Vec<String>,
    /// Whether it is complete (has its `git-revision`).
    pub complete: bool,
}

/// Refuses a channel name that is not a plain file name (it becomes a directory name).
pub fn check_channel_name(channel: &str) -> Result<()> {
    fsutil::check_file_name(channel)
        .with_context(|| format!("channel name {channel:?} is not a plain file name"))
}

/// Writes `release_dir/build-info.json`.
pub fn write_build_info(dir: &Path, info: &BuildInfo) -> Result<()> {
    fsutil::atomic_write(
        &dir.join(BUILD_INFO),
        format!("{}\n", serde_json::to_string_pretty(info)?).as_bytes(),
    )
}

/// Writes `store-paths` and `store-paths.xz`: the paths sorted, one a line.
pub fn write_store_paths(dir: &Path, paths: &[StorePath]) -> Result<()> {
    let mut sorted: Vec<String> = paths.iter().map(|p| p.to_absolute_path()).collect();
    sorted.sort();
    sorted.dedup();
    let mut text = sorted.join("\n");
    if !text.is_empty() {
        text.push('\n');
    }
    fsutil::atomic_write(&dir.join("store-paths"), text.as_bytes())?;
    let mut xz = Vec::new();
    {
        let mut enc = xz2::write::XzEncoder::new(&mut xz, 9);
        std::io::Write::write_all(&mut enc, text.as_bytes())?;
        enc.finish()?;
    }
    fsutil::atomic_write(&dir.join("store-paths.xz"), &xz)
}

/// Reads a release's `store-paths`: one absolute store path a line, sorted, without repeats.
pub fn read_store_paths(release_dir: &Path) -> Result<Vec<StorePath>> {
    read_store_paths_file(&release_dir.join("store-paths"))
}

/// Reads a file of absolute store paths, one a line (`store-paths`, `missing-store-paths`):
/// sorted, without repeats.
pub fn read_store_paths_file(file: &Path) -> Result<Vec<StorePath>> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let p = StorePath::from_absolute_path(line).with_context(|| {
            format!("{}:{}: {line:?} is not a store path", file.display(), n + 1)
        })?;
        out.push(p);
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Writes `release_dir/missing-store-paths`, or removes a stale one when nothing is missing.
pub fn write_missing_store_paths(release_dir: &Path, missing: &[StorePath]) -> Result<()> {
    let file = release_dir.join("missing-store-paths");
    if missing.is_empty() {
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot remove {}", file.display())),
        }
    } else {
        let mut text = String::new();
        for p in missing {
            text.push_str(&p.to_absolute_path());
            text.push('\n');
        }
        fsutil::atomic_write(&file, text.as_bytes())
    }
}

/// Points `DIR/channels/CHANNEL` at `release_dir`, unless the current release is newer (and
/// `force` is not given). Returns whether the link changed.
pub fn move_channel(
    dir: &Path,
    channel: &str,
    release_dir: &Path,
    info: &BuildInfo,
    force: bool,
) -> Result<bool> {
    let link = dir.join("channels").join(channel);
    let target = fsutil::relative_path(&dir.join("channels"), release_dir);
    if let Ok(current) = std::fs::read_link(&link) {
        if current == target {
            return Ok(false);
        }
        let current_dir = dir.join("channels").join(&current);
        if let Ok(current_info) = BuildInfo::read(&current_dir) {
            if would_move_back(channel, info, &current_info, force) {
                return Ok(false);
            }
        }
    }
    fsutil::atomic_symlink(&target, &link)?;
    tracing::info!("channel {channel} -> {}", target.display());
    Ok(true)
}

/// Whether moving `channel` from `current` to `latest` would move it back to an older release
/// without `force`; if so, a warning says why the channel stays.
pub(crate) fn would_move_back(
    channel: &str,
    latest: &BuildInfo,
    current: &BuildInfo,
    force: bool,
) -> bool {
    let back = current.order_key() > latest.order_key() && !force;
    if back {
        tracing::warn!(
            "channel {channel}: the latest release {} is older than the current {} \
             (evaluation {} < {}); not moving back (pass --force to move anyway)",
            latest.nixname,
            current.nixname,
            latest.eval_id,
            current.eval_id
        );
    }
    back
}
