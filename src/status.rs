//! What a mirror holds, read from its directory alone: per channel the release it points at,
//! when that release was built, its closure and what upstream lacked of it, the last successful
//! sync and the last IPFS root; and the disk the mirror takes.
//!
//! [`MirrorStatus`] is what `nixipfs status --json` prints and what the front page
//! ([`crate::front_page`]) shows. Its JSON form is stable: fields are only ever added, and
//! [`SCHEMA`] grows when one changes meaning. Reading takes no lock and changes nothing; a mirror
//! being written shows the state of the moment (each file is replaced atomically).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::binary_cache::BINARY_CACHE_DIR;
use crate::fsutil;
use crate::release::{BuildInfo, COMPLETION_MARKER};

/// The version of the JSON form.
pub const SCHEMA: u32 = 1;

/// A mirror's state.
#[derive(Clone, Debug, Serialize)]
pub struct MirrorStatus {
    /// [`SCHEMA`].
    pub schema: u32,
    /// The mirror directory.
    pub dir: PathBuf,
    /// When this status was read (unix seconds).
    pub read_at: u64,
    /// The end of the last run in which everything succeeded (`DIR/lastsync`), if any.
    pub last_sync: Option<u64>,
    /// The root CID last published to IPFS (`DIR/ipfs_root`), if any.
    pub ipfs_root: Option<String>,
    /// Bytes of every regular file under the mirror directory (links not followed).
    pub disk_bytes: u64,
    /// The global binary cache.
    pub cache: CacheStatus,
    /// One entry per channel link, sorted by name.
    pub channels: Vec<ChannelStatus>,
    /// What waits in the staging area (`DIR/.staging`): files another downloader is to fill
    /// in or has put there after a `--print-only` run, not yet taken by a normal run.
    pub staging: StagingStatus,
}

/// The staging area's contents.
#[derive(Clone, Debug, Default, Serialize)]
pub struct StagingStatus {
    /// Narinfos kept by `--print-only`.
    pub narinfos: u64,
    /// Other files (NARs, release files, source tarballs) put there.
    pub files: u64,
    /// Bytes of those files.
    pub bytes: u64,
}

/// The global binary cache's size.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CacheStatus {
    /// Narinfo files.
    pub narinfos: u64,
    /// NAR files.
    pub nars: u64,
    /// Bytes of the NAR files.
    pub nar_bytes: u64,
}

/// One channel and the release it points at.
#[derive(Clone, Debug, Serialize)]
pub struct ChannelStatus {
    /// The channel's name.
    pub channel: String,
    /// The release directory's name (`NIXNAME`), when the link resolves to one.
    pub release: Option<String>,
    /// Whether that release is complete (has `git-revision`).
    pub complete: bool,
    /// The nixpkgs revision of the release.
    pub git_revision: Option<String>,
    /// The Hydra evaluation it came from.
    pub eval_id: Option<u64>,
    /// When the release was built (unix seconds), from `build-info.json`.
    pub built_at: Option<i64>,
    /// Seconds since it was built, when that is known.
    pub age_seconds: Option<u64>,
    /// When the channel last succeeded in a `release-nixos` run (`DIR/channels-lastsync`,
    /// unix seconds), if it ever did.
    pub last_success: Option<u64>,
    /// Store paths of the release's `store-paths` (the roots of its closure).
    pub roots: u64,
    /// Store paths linked into the release's view of the cache (its closure).
    pub closure_paths: u64,
    /// Bytes of the closure's NAR files.
    pub closure_bytes: u64,
    /// Store paths upstream did not have (`missing-store-paths`).
    pub missing_paths: u64,
    /// The release's CID once published to IPFS (`ipfs_hash`).
    pub ipfs: Option<String>,
    /// The release's own files (tarball, images, lists), with their sizes, sorted by name.
    pub files: Vec<ReleaseFile>,
}

/// A file of a release.
#[derive(Clone, Debug, Serialize)]
pub struct ReleaseFile {
    /// Its name in the release directory.
    pub name: String,
    /// Its size.
    pub bytes: u64,
}

/// `dir` made absolute, once it is known to be a mirror directory: one that has `channels/`,
/// `releases/` or `binary_cache/`. Anything else is an error naming it, so that a command that
/// reads a mirror never reports on the wrong directory as if it were an empty mirror.
pub fn check_mirror_dir(dir: &Path) -> Result<PathBuf> {
    let dir = fsutil::absolute(dir)?;
    if !dir.is_dir() {
        bail!("the mirror directory {} does not exist", dir.display());
    }
    if !["channels", "releases", BINARY_CACHE_DIR]
        .iter()
        .any(|d| dir.join(d).is_dir())
    {
        bail!(
            "{} is not a mirror: it has no channels/, releases/ or {BINARY_CACHE_DIR}/ \
             (pass the directory given to release-nixos --dir)",
            dir.display()
        );
    }
    Ok(dir)
}

/// Reads the state of the mirror in `dir` (see [`check_mirror_dir`]).
pub fn read(dir: &Path) -> Result<MirrorStatus> {
    let dir = check_mirror_dir(dir)?;
    let read_at = now();
    let successes = read_channel_successes(&dir)?;
    let mut channels = Vec::new();
    for link in fsutil::read_dir_sorted(&dir.join("channels"))? {
        let Some(name) = link.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            continue;
        };
        if fsutil::is_temp_name(&name) || name == "lastsync" || name.starts_with('.') {
            continue;
        }
        let mut status = channel_status(&link, name, read_at)?;
        status.last_success = successes.get(&status.channel).copied();
        channels.push(status);
    }
    Ok(MirrorStatus {
        schema: SCHEMA,
        last_sync: read_trimmed(&dir.join("lastsync"))?.and_then(|s| s.parse().ok()),
        ipfs_root: read_trimmed(&dir.join("ipfs_root"))?,
        disk_bytes: disk_bytes(&dir)?,
        cache: cache_status(&dir.join(BINARY_CACHE_DIR))?,
        staging: staging_status(&dir.join(crate::binary_cache::STAGING_DIR))?,
        channels,
        read_at,
        dir,
    })
}

fn channel_status(link: &Path, channel: String, read_at: u64) -> Result<ChannelStatus> {
    let mut status = ChannelStatus {
        channel,
        release: None,
        complete: false,
        git_revision: None,
        eval_id: None,
        built_at: None,
        age_seconds: None,
        last_success: None,
        roots: 0,
        closure_paths: 0,
        closure_bytes: 0,
        missing_paths: 0,
        ipfs: None,
        files: Vec::new(),
    };
    let release = match fs::canonicalize(link) {
        Ok(r) if r.is_dir() => r,
        // A link that leads nowhere: the channel is shown without a release.
        _ => return Ok(status),
    };
    status.release = release
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    status.complete = release.join(COMPLETION_MARKER).is_file();
    status.git_revision = read_trimmed(&release.join(COMPLETION_MARKER))?;
    if let Ok(info) = BuildInfo::read(&release) {
        status.eval_id = Some(info.eval_id);
        status.built_at = Some(info.build_time).filter(|&t| t > 0);
        status.age_seconds = status
            .built_at
            .map(|t| read_at.saturating_sub(u64::try_from(t).unwrap_or(0)));
    }
    status.roots = count_lines(&release.join("store-paths"))?;
    status.missing_paths = count_lines(&release.join("missing-store-paths"))?;
    status.ipfs = read_trimmed(&release.join("ipfs_hash"))?;
    for entry in fsutil::read_dir_sorted(&release)? {
        let name = entry
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        match fs::symlink_metadata(&entry) {
            Ok(m) if m.is_file() => status.files.push(ReleaseFile {
                name,
                bytes: m.len(),
            }),
            _ => {}
        }
    }
    let view = release.join(BINARY_CACHE_DIR);
    if view.is_dir() {
        for entry in walkdir::WalkDir::new(&view).min_depth(1) {
            let entry = entry.with_context(|| format!("cannot list {}", view.display()))?;
            if !entry.path_is_symlink() {
                continue;
            }
            let rel = entry.path().strip_prefix(&view).unwrap_or(entry.path());
            if rel.starts_with("nar") {
                // The link's target: the NAR in the global cache.
                if let Ok(m) = fs::metadata(entry.path()) {
                    status.closure_bytes += m.len();
                }
            } else if rel.extension().is_some_and(|e| e == "narinfo") {
                status.closure_paths += 1;
            }
        }
    }
    Ok(status)
}

fn cache_status(cache: &Path) -> Result<CacheStatus> {
    let mut status = CacheStatus::default();
    for entry in fsutil::read_dir_sorted(cache)? {
        if entry.extension().is_some_and(|e| e == "narinfo") {
            status.narinfos += 1;
        }
    }
    let nar_dir = cache.join("nar");
    if nar_dir.is_dir() {
        for entry in walkdir::WalkDir::new(&nar_dir).min_depth(1) {
            let entry = entry.with_context(|| format!("cannot list {}", nar_dir.display()))?;
            if entry.file_type().is_file()
                && !fsutil::is_temp_name(&entry.file_name().to_string_lossy())
            {
                status.nars += 1;
                status.nar_bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    Ok(status)
}

fn staging_status(staging: &Path) -> Result<StagingStatus> {
    let mut status = StagingStatus::default();
    if !staging.is_dir() {
        return Ok(status);
    }
    for entry in walkdir::WalkDir::new(staging).min_depth(1) {
        let entry = entry.with_context(|| format!("cannot list {}", staging.display()))?;
        if !entry.file_type().is_file() {
            continue;
        }
        let name = entry.file_name().to_string_lossy();
        if name.ends_with(".narinfo") {
            status.narinfos += 1;
        } else if !fsutil::is_temp_name(&name) {
            status.files += 1;
            status.bytes += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok(status)
}

fn disk_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if entry.file_type().is_file() {
            total += entry.metadata().map(|m| m.len()).unwrap_or(0);
        }
    }
    Ok(total)
}

/// The file that records when each channel last succeeded: `CHANNEL UNIXTIME` lines.
pub const CHANNEL_SUCCESS_FILE: &str = "channels-lastsync";

/// When each channel last succeeded, from `DIR/channels-lastsync`.
fn read_channel_successes(dir: &Path) -> Result<BTreeMap<String, u64>> {
    let file = dir.join(CHANNEL_SUCCESS_FILE);
    Ok(read_trimmed(&file)?
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (channel, t) = l.trim().split_once(' ')?;
            Some((channel.to_string(), t.trim().parse().ok()?))
        })
        .collect())
}

/// Records that `channels` succeeded now in `DIR/channels-lastsync`, keeping the others'
/// times; the file is replaced atomically.
pub fn record_channel_success(dir: &Path, channels: &[&str]) -> Result<()> {
    if channels.is_empty() {
        return Ok(());
    }
    let mut times = read_channel_successes(dir)?;
    let t = now();
    for c in channels {
        times.insert((*c).to_string(), t);
    }
    let text: String = times.iter().map(|(c, t)| format!("{c} {t}\n")).collect();
    fsutil::atomic_write(&dir.join(CHANNEL_SUCCESS_FILE), text.as_bytes())
}

/// The file's text, trimmed; `None` when it does not exist or is empty.
fn read_trimmed(file: &Path) -> Result<Option<String>> {
    match fs::read_to_string(file) {
        Ok(text) => Ok(Some(text.trim().to_string()).filter(|t| !t.is_empty())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", file.display())),
    }
}

/// Non-empty lines of the file; 0 when it does not exist.
fn count_lines(file: &Path) -> Result<u64> {
    Ok(read_trimmed(file)?
        .map(|t| t.lines().filter(|l| !l.trim().is_empty()).count() as u64)
        .unwrap_or(0))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `seconds` as a short age: `42 s`, `5 min`, `3 h`, `12 d`.
pub fn human_age(seconds: u64) -> String {
    match seconds {
        s if s < 120 => format!("{s} s"),
        s if s < 2 * 3600 => format!("{} min", s / 60),
        s if s < 2 * 86400 => format!("{} h", s / 3600),
        s => format!("{} d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(human_age(5), "5 s");
        assert_eq!(human_age(600), "10 min");
        assert_eq!(human_age(5 * 3600), "5 h");
        assert_eq!(human_age(3 * 86400), "3 d");
    }

    #[test]
    fn a_directory_that_is_not_a_mirror_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(format!("{err:#}").contains("is not a mirror"), "{err:#}");
        let err = read(&dir.path().join("nope")).unwrap_err();
        assert!(format!("{err:#}").contains("does not exist"), "{err:#}");
    }
}
