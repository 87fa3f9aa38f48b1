//! `create-channel-release`: turn the latest finished build of a Hydra job into a channel release
//! directory `OUTDIR/CHANNEL/NIXNAME/` (the work is [`crate::release::create`]).

use std::path::PathBuf;

use anyhow::Result;

use crate::binary_cache::{self, Upstream};
use crate::fetch::{FetchConfig, Fetcher};
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
    })
    .await
}
