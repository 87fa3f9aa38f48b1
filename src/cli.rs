//! The command line: clap definitions only, and their conversion into the library's option
//! structs. The flags of the original release scripts (`--print_only`, `--no_ipfs`,
//! `--ipfsapi HOST PORT`, ...) are accepted beside the kebab-case forms.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};

use nixipfs::config;
use nixipfs::fetch::FetchConfig;
use nixipfs::ipfs::api_addr::ApiAddr;
use nixipfs::ipfs::client::{parse_duration, Timeouts};
use nixipfs::ipfs::profile::Profile;
use nixipfs::ipfs::publish::{PublishOptions, SendMethod};
use nixipfs::mirror::PrintFormat;
use nixipfs::signature::PublicKey;

/// The heading of the options every subcommand takes, listed after its own.
const GLOBAL: &str = "Global options";

/// Mirror NixOS channel releases and their binary cache closure from Hydra to disk and IPFS.
#[derive(Debug, Parser)]
#[command(name = "nixipfs", version, about, long_about = None, max_term_width = 100)]
pub struct Cli {
    /// More log output (-v: debug, -vv: trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true, help_heading = GLOBAL)]
    pub verbose: u8,
    /// Only warnings and errors.
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = GLOBAL
    )]
    pub quiet: bool,
    /// How to show progress: auto (bars on a terminal, plain lines otherwise), bars, plain, none.
    #[arg(
        long,
        global = true,
        default_value = "auto",
        value_name = "MODE",
        help_heading = GLOBAL
    )]
    pub progress: ProgressArg,
    /// After the run, write its numbers to FILE (Prometheus text format, for node_exporter's
    /// textfile collector), replacing it atomically; written for a failed run too.
    #[arg(long, global = true, value_name = "FILE", help_heading = GLOBAL)]
    pub metrics_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// Progress display.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProgressArg {
    Auto,
    Bars,
    Plain,
    None,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a channel release directory from the latest finished build of a Hydra job.
    #[command(alias = "create_channel_release")]
    CreateChannelRelease(CreateChannelReleaseArgs),
    /// Mirror the runtime closure of a release into the global binary cache.
    #[command(alias = "update_binary_cache")]
    UpdateBinaryCache(UpdateBinaryCacheArgs),
    /// Delete cache files that no release links to.
    #[command(alias = "garbage_collect")]
    GarbageCollect(GarbageCollectArgs),
    /// Publish the mirror to IPFS.
    #[command(alias = "create_nixipfs")]
    CreateNixipfs(CreateNixipfsArgs),
    /// Mirror every release of a config: channel releases, binary cache, GC and IPFS.
    #[command(alias = "release_nixos")]
    ReleaseNixos(ReleaseNixosArgs),
    /// Check a mirror: every narinfo has its verified NAR, every channel's release is complete
    /// with its whole closure, no temporary file is left.
    Verify(VerifyArgs),
    /// Show what a mirror holds: per channel its release, age, closure and IPFS CID; the last
    /// sync; the disk it takes.
    Status(StatusArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to standard output.
    Completions(CompletionsArgs),
    /// Print the manual page (roff) to standard output.
    Man,
    /// Print the CID of each file or directory as `ipfs add -r --only-hash` computes it with an
    /// import profile (hidden entries left out, links kept as UnixFS symlinks); no node needed.
    Cid(CidArgs),
}

impl Command {
    /// The subcommand's name, as typed.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateChannelRelease(_) => "create-channel-release",
            Command::UpdateBinaryCache(_) => "update-binary-cache",
            Command::GarbageCollect(_) => "garbage-collect",
            Command::CreateNixipfs(_) => "create-nixipfs",
            Command::ReleaseNixos(_) => "release-nixos",
            Command::Verify(_) => "verify",
            Command::Status(_) => "status",
            Command::Completions(_) => "completions",
            Command::Man => "man",
            Command::Cid(_) => "cid",
        }
    }
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The mirror directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Print JSON (the fields are listed in the README; new ones may be added, none removed).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct CidArgs {
    /// The import profile [default: the one create-nixipfs publishes with, unixfs-v1-2025].
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<ProfileArg>,
    /// Files, directories or symbolic links.
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// An import profile (IPIP-499 names, and the layout nixipfs has always published).
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum ProfileArg {
    /// CIDv1, raw leaves, 1 MiB chunks, 1024 links, HAMT past 256 KiB of block bytes.
    #[value(name = "unixfs-v1-2025")]
    UnixfsV1_2025,
    /// kubo's default add: CIDv0, dag-pb leaves, 256 KiB chunks, 174 links.
    #[value(name = "unixfs-v0-2015")]
    UnixfsV0_2015,
    /// CIDv0 directories over raw leaves, 256 KiB chunks, 174 links (the original scripts').
    #[value(name = "legacy-raw-v0")]
    LegacyRawV0,
}

impl ProfileArg {
    pub fn profile(self) -> Profile {
        match self {
            ProfileArg::UnixfsV1_2025 => Profile::UnixfsV1_2025,
            ProfileArg::UnixfsV0_2015 => Profile::UnixfsV0_2015,
            ProfileArg::LegacyRawV0 => Profile::LegacyRawV0,
        }
    }
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The mirror directory.
    #[arg(long, required_unless_present = "target", conflicts_with = "target")]
    pub dir: Option<PathBuf>,
    /// A binary cache in a bucket, s3://BUCKET/PREFIX (its PREFIX/binary_cache/), instead of a
    /// mirror directory.
    #[arg(long, value_name = "s3://BUCKET/PREFIX", conflicts_with = "repair")]
    pub target: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    #[command(flatten)]
    pub fetch: FetchArgs,
    /// Check NARs by size only, without hashing them.
    #[arg(long, conflicts_with = "full")]
    pub quick: bool,
    /// Also decompress every NAR and check it against its narinfo's signed NarHash and NarSize.
    #[arg(long)]
    pub full: bool,
    /// Every narinfo must carry a valid signature by one of these keys, as NAME:BASE64
    /// (repeatable).
    #[arg(
        long = "trusted-public-key",
        alias = "trusted_public_key",
        value_name = "KEY"
    )]
    pub trusted_public_keys: Vec<String>,
    /// After checking, remove what is broken (a NAR failing its check with every narinfo naming
    /// it, a bad narinfo, the git-revision of an incomplete release no channel points at,
    /// dangling links of a release's view, temporary files) so that the next run fetches it
    /// again; then check again. Takes the mirror lock.
    #[arg(long)]
    pub repair: bool,
    /// With --repair, wait for another run holding the mirror lock instead of exiting at once.
    #[arg(long, requires = "repair")]
    pub wait_lock: bool,
}

/// HTTP settings shared by the commands that download.
#[derive(Debug, Args, Clone)]
pub struct FetchArgs {
    /// Requests in flight at most [default: 32; for release-nixos, the config's max_threads].
    #[arg(long, alias = "concurrency", value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub concurrent: Option<u32>,
    /// Retries of a request that failed transiently (connection error, 5xx, 429, stall).
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub retries: u32,
    /// Seconds before the first retry; doubled (with jitter) for each further retry.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub retry_delay: f64,
    /// Seconds a response may send nothing before it is abandoned and retried.
    #[arg(long, alias = "timeout", default_value_t = 60.0, value_name = "SECS")]
    pub stall_timeout: f64,
    /// Seconds allowed to open a connection.
    #[arg(long, default_value_t = 15.0, value_name = "SECS")]
    pub connect_timeout: f64,
    /// Skip fsync of downloaded files (safe against crashes of nixipfs, not against power loss).
    #[arg(long)]
    pub no_fsync: bool,
    /// Also trust the certificate authorities in this PEM file for HTTPS (repeatable), e.g.
    /// for a cache or Hydra behind a private CA. The built-in Mozilla roots stay trusted.
    #[arg(long, alias = "ca_cert", value_name = "FILE")]
    pub ca_cert: Vec<PathBuf>,
}

impl FetchArgs {
    /// The fetch settings; `default_concurrency` applies when `--concurrent` is not given.
    pub fn to_config(&self, default_concurrency: usize) -> Result<FetchConfig> {
        let secs = |name: &str, v: f64| -> Result<Duration> {
            Duration::try_from_secs_f64(v)
                .with_context(|| format!("--{name} {v} is not a valid number of seconds"))
        };
        Ok(FetchConfig {
            concurrency: self.concurrent.map_or(default_concurrency, |c| c as usize),
            retries: self.retries,
            connect_timeout: secs("connect-timeout", self.connect_timeout)?,
            stall_timeout: secs("stall-timeout", self.stall_timeout)?,
            backoff_base: secs("retry-delay", self.retry_delay)?,
            backoff_max: Duration::from_secs(60).max(secs("retry-delay", self.retry_delay)?),
            fsync: !self.no_fsync,
            ca_certs: self.ca_cert.clone(),
        })
    }
}

/// Signature settings.
#[derive(Debug, Args, Clone)]
pub struct SigArgs {
    /// A key narinfos must be signed by, as NAME:BASE64 (repeatable). Default: cache.nixos.org's
    /// key when the cache is cache.nixos.org.
    #[arg(
        long = "trusted-public-key",
        alias = "trusted_public_key",
        value_name = "KEY"
    )]
    pub trusted_public_keys: Vec<String>,
    /// Accept narinfos without checking their signatures.
    #[arg(long, alias = "no_check_sigs")]
    pub no_check_sigs: bool,
}

impl SigArgs {
    pub fn keys(&self) -> Result<Vec<PublicKey>> {
        parse_keys(&self.trusted_public_keys)
    }
}

/// The keys of `--trusted-public-key` options.
pub fn parse_keys(keys: &[String]) -> Result<Vec<PublicKey>> {
    keys.iter()
        .map(|k| {
            PublicKey::parse(k).with_context(|| {
                format!("--trusted-public-key {k:?} is not NAME:BASE64 of a 32-byte ed25519 key")
            })
        })
        .collect()
}

/// Listing the NARs to fetch instead of fetching them.
#[derive(Debug, Args, Clone)]
pub struct PrintArgs {
    /// Resolve the closure but download no NAR: list each NAR not yet in the mirror on standard
    /// output, for another downloader to put in DIR/.staging/binary_cache; the narinfos wait
    /// there too, nothing is served before the next normal run checks it, channels do not move.
    #[arg(long, alias = "print_only")]
    pub print_only: bool,
    /// How --print-only lists the NARs to fetch: plain (URL,FileHash), url, or aria2c (an input
    /// file for `aria2c -i FILE -d DIR`).
    #[arg(
        long,
        alias = "print_format",
        value_name = "FORMAT",
        default_value = "plain",
        requires = "print_only"
    )]
    pub print_format: PrintFormatArg,
}

/// How `--print-only` lists the NARs to fetch.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum PrintFormatArg {
    /// URL,FILEHASH: the narinfo's relative URL and its FileHash, as the original scripts.
    Plain,
    /// The full URL of each NAR, one a line.
    Url,
    /// An input file for `aria2c -i FILE -d DIR`: URL, out= and checksum= per NAR, so aria2c
    /// puts each file in place and verifies it.
    Aria2c,
}

impl PrintFormatArg {
    pub fn format(self) -> PrintFormat {
        match self {
            PrintFormatArg::Plain => PrintFormat::Plain,
            PrintFormatArg::Url => PrintFormat::Url,
            PrintFormatArg::Aria2c => PrintFormat::Aria2c,
        }
    }
}

/// How an s3:// target is reached.
#[derive(Debug, Args, Clone)]
pub struct S3Args {
    /// The S3 API endpoint of an s3:// target, e.g. http://127.0.0.1:3900 (default: AWS).
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,
    /// The region of an s3:// target (Garage: garage; default: AWS_REGION or us-east-1).
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,
}

impl S3Args {
    /// The target named by `--outdir` or `--target`, with the endpoint and region.
    pub fn target(
        &self,
        outdir: Option<PathBuf>,
        target: Option<&str>,
    ) -> Result<nixipfs::storage::Target> {
        use nixipfs::storage::Target;
        let target = match (outdir, target) {
            (Some(dir), _) => Target::Dir(dir),
            (None, Some(t)) => Target::parse(t).context("--target")?,
            (None, None) => anyhow::bail!("--outdir or --target is required"),
        };
        match target {
            Target::S3(mut location) => {
                location.endpoint = self.s3_endpoint.clone();
                location.region = self.s3_region.clone();
                Ok(Target::S3(location))
            }
            Target::Dir(dir) => {
                if self.s3_endpoint.is_some() || self.s3_region.is_some() {
                    anyhow::bail!(
                        "--s3-endpoint and --s3-region are for an s3:// target, not the \
                         directory {}",
                        dir.display()
                    );
                }
                Ok(Target::Dir(dir))
            }
        }
    }
}

/// Turning the NAR check off.
#[derive(Debug, Args, Clone)]
pub struct NarCheckArgs {
    /// Do not decompress NARs to check them against their narinfo's signed NarHash and
    /// NarSize; only FileHash and FileSize, which no signature covers, are then checked.
    #[arg(long, alias = "no_check_nar_hash")]
    pub no_check_nar_hash: bool,
}

#[derive(Debug, Args)]
pub struct CreateChannelReleaseArgs {
    /// Channel name, e.g. nixos-24.11.
    #[arg(long)]
    pub channel: String,
    /// Hydra project.
    #[arg(long)]
    pub project: String,
    /// Hydra jobset.
    #[arg(long)]
    pub jobset: String,
    /// Hydra job whose latest finished build makes the release.
    #[arg(long)]
    pub job: String,
    /// Directory under which CHANNEL/NIXNAME is created.
    #[arg(long)]
    pub outdir: PathBuf,
    /// Hydra server.
    #[arg(long, default_value = config::DEFAULT_HYDRA)]
    pub hydra: String,
    /// Binary cache the release's files are fetched from.
    #[arg(long, default_value = config::DEFAULT_CACHE)]
    pub cache: String,
    /// What the release's binary-cache-url says (default: --cache).
    #[arg(long, alias = "target_cache")]
    pub target_cache: Option<String>,
    /// Directory for temporary files (default: inside the release directory).
    #[arg(long)]
    pub tmpdir: Option<PathBuf>,
    #[command(flatten)]
    pub fetch: FetchArgs,
    #[command(flatten)]
    pub sigs: SigArgs,
}

#[derive(Debug, Args)]
pub struct UpdateBinaryCacheArgs {
    /// The release directory (its store-paths is read, its binary_cache/ linked).
    #[arg(long)]
    pub release: PathBuf,
    /// The mirror directory; the cache goes to OUTDIR/binary_cache.
    #[arg(long, required_unless_present = "target", conflicts_with = "target")]
    pub outdir: Option<PathBuf>,
    /// Where the cache goes: a mirror directory (as --outdir) or s3://BUCKET/PREFIX (the cache
    /// is PREFIX/binary_cache/, the lock PREFIX/.lock; credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY, or the AWS_PROFILE profile of ~/.aws/credentials).
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub target: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Upstream binary cache.
    #[arg(long, default_value = config::DEFAULT_CACHE)]
    pub cache: String,
    #[command(flatten)]
    pub print: PrintArgs,
    /// Wait for another run holding OUTDIR/.lock instead of exiting.
    #[arg(long, alias = "wait_lock")]
    pub wait_lock: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
    #[command(flatten)]
    pub sigs: SigArgs,
    #[command(flatten)]
    pub nar_check: NarCheckArgs,
}

#[derive(Debug, Args)]
pub struct GarbageCollectArgs {
    /// The global binary cache directory.
    #[arg(long, required_unless_present = "target", conflicts_with = "target")]
    pub cache: Option<PathBuf>,
    /// A mirror in a bucket, s3://BUCKET/PREFIX (its cache PREFIX/binary_cache/), instead of
    /// --cache; --releases then names release directories or releases in the bucket
    /// (releases/CHANNEL/NIXNAME).
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    pub target: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Every release directory whose files must stay (with --target, also releases in the
    /// bucket: releases/CHANNEL/NIXNAME).
    #[arg(long, num_args = 1.., required = true)]
    pub releases: Vec<PathBuf>,
    /// Only print what would be deleted.
    #[arg(long, alias = "dry_run")]
    pub dry_run: bool,
    /// Wait for another run holding the mirror's lock (the cache's parent/.lock) instead of exiting.
    #[arg(long, alias = "wait_lock")]
    pub wait_lock: bool,
}

#[derive(Debug, Args)]
pub struct CreateNixipfsArgs {
    /// The mirror directory.
    #[arg(long)]
    pub dir: PathBuf,
    /// Write only the CAR file (--car); do not contact a node.
    #[arg(long, alias = "no_node", requires = "car")]
    pub no_node: bool,
    /// Wait for another run holding DIR/.lock instead of exiting.
    #[arg(long, alias = "wait_lock")]
    pub wait_lock: bool,
    #[command(flatten)]
    pub ipfs: IpfsArgs,
}

/// How the mirror is published to IPFS.
#[derive(Debug, Args, Clone)]
pub struct IpfsArgs {
    /// The IPFS API: PORT, HOST PORT, http://HOST:PORT or /ip4/HOST/tcp/PORT.
    #[arg(long, num_args = 1..=2, value_names = ["HOST", "PORT"], default_values = ["127.0.0.1", "5001"])]
    pub ipfsapi: Vec<String>,
    /// Also write the whole DAG as a CARv1 file (for `ipfs dag import` on another host); used
    /// alone when no node is reachable.
    #[arg(long, value_name = "FILE")]
    pub car: Option<PathBuf>,
    /// The import profile [default: the config's cid_profile, else unixfs-v1-2025].
    #[arg(long, alias = "cid_profile", value_name = "PROFILE")]
    pub cid_profile: Option<ProfileArg>,
    /// CID version of directory and file nodes instead of the profile's.
    #[arg(long, alias = "cid_version", value_parser = clap::value_parser!(u8).range(0..=1))]
    pub cid_version: Option<u8>,
    /// Do not publish the root to IPNS.
    #[arg(long, alias = "no_ipns")]
    pub no_ipns: bool,
    /// Lifetime of the IPNS record (Go duration syntax, e.g. 2h, 90m).
    #[arg(
        long,
        alias = "ipns_lifetime",
        default_value = "2h",
        value_name = "DURATION"
    )]
    pub ipns_lifetime: String,
    /// The node's key to publish under (default: the node's own key).
    #[arg(long, alias = "ipns_key", value_name = "NAME")]
    pub ipns_key: Option<String>,
    /// Threads hashing files [default: 4; for release-nixos, the config's max_ipfs_threads].
    #[arg(
        long = "ipfs-concurrency",
        alias = "ipfs_concurrency",
        value_name = "N"
    )]
    pub concurrency: Option<usize>,
    /// Seconds allowed for an ordinary call to the node.
    #[arg(
        long = "ipfs-timeout",
        alias = "ipfs_timeout",
        default_value_t = 120.0,
        value_name = "SECS"
    )]
    pub timeout: f64,
    /// Seconds allowed for the long calls (pinning, IPNS, the answer to an import).
    #[arg(
        long = "ipfs-long-timeout",
        alias = "ipfs_long_timeout",
        default_value_t = 1800.0,
        value_name = "SECS"
    )]
    pub long_timeout: f64,
    /// How blocks reach the node: auto (dag/import when the node has it), dag-import, add.
    #[arg(
        long,
        alias = "send_method",
        default_value = "auto",
        value_name = "METHOD"
    )]
    pub send_method: SendMethodArg,
    /// Files to check on the node with files/stat after publishing.
    #[arg(long, alias = "verify_files", default_value_t = 16, value_name = "N")]
    pub verify_files: usize,
    /// Roots published from this mirror that stay pinned and in MFS, the new one included
    /// (a root published again counts once); older ones are unpinned and their MFS copies
    /// removed after a successful publication.
    #[arg(long = "ipfs-keep", alias = "ipfs_keep", default_value_t = 3, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..))]
    pub ipfs_keep: u32,
    /// Ask the node to collect garbage (repo/gc) after letting go of old roots.
    #[arg(long = "ipfs-gc", alias = "ipfs_gc")]
    pub ipfs_gc: bool,
}

/// `--send-method`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum SendMethodArg {
    Auto,
    DagImport,
    Add,
}

impl IpfsArgs {
    /// The publishing options for mirror `dir`; `node` false writes only the CAR;
    /// `default_profile` applies without `--cid-profile`.
    pub fn to_options(
        &self,
        dir: PathBuf,
        node: bool,
        default_concurrency: usize,
        default_profile: Profile,
    ) -> Result<PublishOptions> {
        let api = if node {
            Some(ApiAddr::parse(&self.ipfsapi).with_context(|| {
                format!(
                    "--ipfsapi {} is not an IPFS API address",
                    self.ipfsapi.join(" ")
                )
            })?)
        } else {
            None
        };
        let secs = |name: &str, v: f64| -> Result<Duration> {
            Duration::try_from_secs_f64(v)
                .with_context(|| format!("--{name} {v} is not a valid number of seconds"))
        };
        let defaults = PublishOptions::default();
        Ok(PublishOptions {
            dir,
            api,
            car: self.car.clone(),
            profile: self.cid_profile.map_or(default_profile, |p| p.profile()),
            cid_version: self.cid_version,
            publish_ipns: !self.no_ipns,
            ipns_lifetime: parse_duration(&self.ipns_lifetime)
                .map_err(|e| anyhow::anyhow!("--ipns-lifetime {:?}: {e}", self.ipns_lifetime))?,
            ipns_key: self.ipns_key.clone(),
            concurrency: self.concurrency.unwrap_or(default_concurrency).max(1),
            timeouts: Timeouts {
                call: secs("ipfs-timeout", self.timeout)?,
                long: secs("ipfs-long-timeout", self.long_timeout)?,
                ..defaults.timeouts
            },
            method: match self.send_method {
                SendMethodArg::Auto => SendMethod::Auto,
                SendMethodArg::DagImport => SendMethod::DagImport,
                SendMethodArg::Add => SendMethod::Add,
            },
            verify_files: self.verify_files,
            keep: self.ipfs_keep as usize,
            gc: self.ipfs_gc,
            ..defaults
        })
    }
}

#[derive(Debug, Args)]
pub struct ReleaseNixosArgs {
    /// The mirror directory (or --target, or `target` in the config).
    #[arg(long, conflicts_with = "target")]
    pub dir: Option<PathBuf>,
    /// Where the mirror goes: a directory (as --dir) or s3://BUCKET/PREFIX (releases, channels
    /// and the binary cache under PREFIX; releases are made under TMPDIR/s3-releases first).
    /// Overrides the config's `target`.
    #[arg(long, value_name = "DIR|s3://BUCKET/PREFIX")]
    pub target: Option<String>,
    #[command(flatten)]
    pub s3: S3Args,
    /// Directory for temporary files.
    #[arg(long)]
    pub tmpdir: PathBuf,
    /// The release config (nixos_release.json).
    #[arg(long)]
    pub config: PathBuf,
    #[command(flatten)]
    pub print: PrintArgs,
    /// Delete old releases and unreferenced cache files.
    #[arg(long)]
    pub gc: bool,
    /// Do not publish to IPFS.
    #[arg(long, alias = "no_ipfs")]
    pub no_ipfs: bool,
    #[command(flatten)]
    pub ipfs: IpfsArgs,
    /// Wait for another run holding the lock instead of exiting.
    #[arg(long, alias = "wait_lock")]
    pub wait_lock: bool,
    /// Let a channel move back to an older release.
    #[arg(long)]
    pub force: bool,
    /// Leave ISO and OVA images out of releases copied from a published channel (`source`).
    #[arg(long)]
    pub skip_images: bool,
    #[command(flatten)]
    pub fetch: FetchArgs,
    #[command(flatten)]
    pub sigs: SigArgs,
    #[command(flatten)]
    pub nar_check: NarCheckArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        // Flattened argument groups share one namespace of argument names.
        <Cli as clap::CommandFactory>::command().debug_assert();
    }
}
