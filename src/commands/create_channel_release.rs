//! `create-channel-release`: turn the latest finished build of a Hydra job into a channel release
//! directory `OUTDIR/CHANNEL/NIXNAME/` (the work is [`crate::release::create`]).
//!
//! It writes under a lock, like every command that writes a mirror, taken just before the first
//! write (so that a release refused earlier leaves nothing behind): the mirror's (`DIR/.lock`)
//! when `OUTDIR` is the `releases` directory of a mirror `DIR` (one with `.lock`,
//! `binary_cache/` or `channels/`), so that a `release-nixos` or `garbage-collect` on that mirror
//! cannot delete a release or a temporary file it is still writing; otherwise `OUTDIR/.lock`, so
//! that no lock file is ever written outside the output.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::binary_cache::{self, Upstream};
use crate::fetch::{FetchConfig, Fetcher};
use crate::fsutil;
use crate::hydra::HydraClient;
use crate::release::create::{self, NewRelease};
use crate::release::ChannelRelease;
use crate::signature::PublicKey;

/// Options of `create-channel-release`.
#[derive(Clone, Debug)]
pub struct CreateChannelReleaseOptions {
    /// Channel name, e.g. `nixos-24.11`.
    pub channel: String,
    /// Hydra project.
    pub project: String,
    /// Hydra jobset.
    pub jobset: String,
    /// Hydra job.
    pub job: String,
    /// Directory under which `CHANNEL/NIXNAME` is created.
    pub outdir: PathBuf,
    /// Hydra server URL.
    pub hydra_url: String,
    /// Binary cache the files are fetched through.
    pub cache_url: String,
    /// What `binary-cache-url` says (default: `cache_url`).
    pub target_cache: Option<String>,
    /// Directory for NARs while they are read (default: the release directory).
    pub tmpdir: Option<PathBuf>,
    /// HTTP settings.
    pub fetch: FetchConfig,
    /// Keys the narinfos of the fetched files must be signed by; empty means the default for
    /// the cache.
    pub trusted_keys: Vec<PublicKey>,
    /// Whether signatures are checked at all.
    pub check_sigs: bool,
}

/// Runs `create-channel-release`.
pub async fn run(opts: &CreateChannelReleaseOptions) -> Result<ChannelRelease> {
    let outdir = fsutil::absolute(&opts.outdir)?;
    fsutil::check_dir_arg(&outdir, "output directory")?;
    let keys = binary_cache::trusted_keys_for(&opts.cache_url, &opts.trusted_keys, opts.check_sigs);
    let fetcher = Fetcher::new(opts.fetch.clone())?;
    let hydra = HydraClient::new(fetcher.clone(), &opts.hydra_url);
    let upstream = Upstream::new(fetcher, &opts.cache_url, keys);
    create::create_latest(&NewRelease {
        channel: &opts.channel,
        project: &opts.project,
        jobset: &opts.jobset,
        job: &opts.job,
        outdir: &opts.outdir,
        hydra: &hydra,
        upstream: &upstream,
        target_cache: opts.target_cache.as_deref(),
        tmpdir: opts.tmpdir.as_deref(),
        local: None,
        lock: Some(lock_dir(&outdir)),
        print: None,
    })
    .await
}

/// The directory whose lock guards a release written under `outdir` (see the module
/// documentation).
pub fn lock_dir(outdir: &Path) -> &Path {
    if outdir.file_name().is_some_and(|n| n == "releases") {
        if let Some(mirror) = outdir.parent() {
            if mirror.join(".lock").is_file()
                || mirror.join(crate::binary_cache::BINARY_CACHE_DIR).is_dir()
                || mirror.join("channels").is_dir()
            {
                return mirror;
            }
        }
    }
    outdir
}

#[cfg(test)]
mod tests {
    use super::lock_dir;

    #[test]
    fn the_lock_of_a_mirror_release_is_the_mirrors() {
        let dir = tempfile::tempdir().unwrap();
        let releases = dir.path().join("releases");
        std::fs::create_dir_all(&releases).unwrap();
        // A directory named `releases` that is not in a mirror is locked on its own.
        assert_eq!(lock_dir(&releases), releases);
        std::fs::create_dir_all(dir.path().join("binary_cache")).unwrap();
        assert_eq!(lock_dir(&releases), dir.path());
        let standalone = dir.path().join("out");
        assert_eq!(lock_dir(&standalone), standalone);
    }
}
