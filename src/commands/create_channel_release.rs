//! `create-channel-release`: turn the latest finished build of a Hydra job into a channel release
//! directory `OUTDIR/CHANNEL/NIXNAME/`.
//!
//! Files: `src-url`, `binary-cache-url`, `store-paths`, `store-paths.xz`, `build-info.json`, the
//! channel tarball as `nixexprs.tar.xz`, for nixos channels the ISO/OVA images (each with a
//! `.sha256` file), and `git-revision`, written last: its presence means the release is complete,
//! and a release that has it is returned at once. Every file is written under a temporary name
//! and renamed into place; a failure leaves no `git-revision`. A complete release without
//! `build-info.json` (the 2017 scripts wrote none) gets one from the build, without asking
//! Hydra for more.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::binary_cache::LocalCache;
use crate::fetch::{FetchConfig, Fetcher};
use crate::fsutil;
use crate::hydra::{Build, HydraClient};
use crate::signature::PublicKey;
use crate::store_file::{self, CacheAccess, StoreFile};
use crate::store_path::StorePath;

/// The file whose presence marks a complete release.
pub const COMPLETION_MARKER: &str = "git-revision";
/// What a release records about the Hydra build it came from.
pub const BUILD_INFO: &str = "build-info.json";

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
    /// Keys the narinfos of the fetched files must be signed by (empty: unchecked).
    pub trusted_keys: Vec<PublicKey>,
    /// A local binary cache whose NARs are used when present.
    pub local_cache: Option<PathBuf>,
}

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
}

/// A file of the release that comes from a Hydra job's build product.
struct ProductSpec {
    /// The job in the evaluation.
    job: String,
    /// The product's `subtype`.
    subtype: &'static str,
    /// Whether a missing job is an error (else a warning).
    required: bool,
    /// The file name in the release (default: the product's own name).
    file_name: Option<&'static str>,
}

/// The files a channel's release holds, as the original scripts chose them.
fn products_for(channel: &str) -> Vec<ProductSpec> {
    let mut out = Vec::new();
    if channel.starts_with("nixos") {
        out.push(ProductSpec {
            job: "nixos.channel".into(),
            subtype: "source-dist",
            required: true,
            file_name: Some("nixexprs.tar.xz"),
        });
        let mut images = vec![("nixos.iso_minimal.x86_64-linux", "iso")];
        if !channel.ends_with("-small") {
            images.extend([
                ("nixos.iso_minimal.i686-linux", "iso"),
                ("nixos.iso_graphical.x86_64-linux", "iso"),
                ("nixos.ova.x86_64-linux", "ova"),
            ]);
        }
        for (job, subtype) in images {
            out.push(ProductSpec {
                job: job.into(),
                subtype,
                required: false,
                file_name: None,
            });
        }
    } else {
        out.push(ProductSpec {
            job: "tarball".into(),
            subtype: "source-dist",
            required: true,
            file_name: Some("nixexprs.tar.xz"),
        });
    }
    out
}

/// Runs `create-channel-release`.
pub async fn run(opts: &CreateChannelReleaseOptions) -> Result<ChannelRelease> {
    check_channel_name(&opts.channel)?;
    let fetcher = Fetcher::new(opts.fetch.clone())?;
    let hydra = HydraClient::new(fetcher.clone(), &opts.hydra_url);
    let build = hydra
        .latest_finished(&opts.project, &opts.jobset, &opts.job)
        .await?;
    create_from_build(opts, &fetcher, &hydra, &build).await
}

/// Creates the release of `build` (the latest finished build of the job).
pub async fn create_from_build(
    opts: &CreateChannelReleaseOptions,
    fetcher: &Fetcher,
    hydra: &HydraClient,
    build: &Build,
) -> Result<ChannelRelease> {
    check_channel_name(&opts.channel)?;
    if !build.is_success() {
        bail!(
            "Hydra build {} of {}:{}:{} did not succeed; no release is made from it",
            build.id,
            opts.project,
            opts.jobset,
            opts.job
        );
    }
    let nixname = build.release_name()?.to_string();
    let eval_id = build.eval_id()?;
    let outdir = fsutil::absolute(&opts.outdir)?;
    let dir = outdir.join(&opts.channel).join(&nixname);

    if dir.join(COMPLETION_MARKER).is_file() {
        let info = match BuildInfo::read(&dir) {
            Ok(info) => info,
            // A release made before build-info.json existed (the 2017 scripts made none): what
            // it records is known from the build and the release's own git-revision.
            Err(e) if !dir.join(BUILD_INFO).exists() => {
                tracing::info!("{e:#}; writing it from Hydra build {}", build.id);
                let marker = dir.join(COMPLETION_MARKER);
                let git_revision = std::fs::read_to_string(&marker)
                    .with_context(|| format!("cannot read {}", marker.display()))?
                    .trim()
                    .to_string();
                let info = build_info(opts, build, eval_id, &nixname, git_revision);
                write_build_info(&dir, &info)?;
                info
            }
            Err(e) => return Err(e),
        };
        tracing::info!("{} is complete already", dir.display());
        return Ok(ChannelRelease {
            dir,
            info,
            created: false,
        });
    }
    fsutil::create_dir_all_within(&outdir, &dir)?;
    fsutil::remove_stale_temp_files(&dir)?;
    tracing::info!(
        "creating {} from Hydra build {} (evaluation {eval_id})",
        dir.display(),
        build.id
    );

    let eval = hydra.eval(eval_id).await?;
    let git_revision = eval.nixpkgs_revision()?;
    let store_paths = hydra.eval_store_paths(eval_id).await?;

    let local = match &opts.local_cache {
        Some(p) if p.is_dir() => Some(LocalCache::open(p)?),
        _ => None,
    };
    let access = CacheAccess {
        fetcher,
        cache_url: &opts.cache_url,
        trusted_keys: &opts.trusted_keys,
        local: local.as_ref(),
    };
    let tmpdir = opts.tmpdir.clone().unwrap_or_else(|| dir.clone());
    for spec in products_for(&opts.channel) {
        fetch_product(&access, hydra, eval_id, &spec, &dir, &tmpdir).await?;
    }

    let hydra_url = opts.hydra_url.trim_end_matches('/');
    let info = build_info(opts, build, eval_id, &nixname, git_revision.clone());
    let target = opts.target_cache.as_deref().unwrap_or(&opts.cache_url);
    fsutil::atomic_write(
        &dir.join("src-url"),
        format!("{hydra_url}/eval/{eval_id}").as_bytes(),
    )?;
    fsutil::atomic_write(&dir.join("binary-cache-url"), target.as_bytes())?;
    write_store_paths(&dir, &store_paths)?;
    write_build_info(&dir, &info)?;
    // Last: the marker that everything above is in place.
    fsutil::atomic_write(&dir.join(COMPLETION_MARKER), git_revision.as_bytes())?;
    Ok(ChannelRelease {
        dir,
        info,
        created: true,
    })
}

/// What a release of `build` records about it.
fn build_info(
    opts: &CreateChannelReleaseOptions,
    build: &Build,
    eval_id: u64,
    nixname: &str,
    git_revision: String,
) -> BuildInfo {
    BuildInfo {
        hydra: opts.hydra_url.trim_end_matches('/').to_string(),
        project: opts.project.clone(),
        jobset: opts.jobset.clone(),
        job: opts.job.clone(),
        build_id: build.id,
        eval_id,
        build_time: build.stoptime.or(build.timestamp).unwrap_or(0),
        nixname: nixname.to_string(),
        git_revision,
    }
}

fn write_build_info(dir: &Path, info: &BuildInfo) -> Result<()> {
    fsutil::atomic_write(
        &dir.join(BUILD_INFO),
        format!("{}\n", serde_json::to_string_pretty(info)?).as_bytes(),
    )
}

/// Refuses a channel name that is not a plain file name (it becomes a directory name).
fn check_channel_name(channel: &str) -> Result<()> {
    fsutil::check_file_name(channel)
        .with_context(|| format!("channel name {channel:?} is not a plain file name"))
}

fn write_store_paths(dir: &Path, paths: &[StorePath]) -> Result<()> {
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

async fn fetch_product(
    access: &CacheAccess<'_>,
    hydra: &HydraClient,
    eval_id: u64,
    spec: &ProductSpec,
    dir: &Path,
    tmpdir: &Path,
) -> Result<()> {
    let Some(build) = hydra.eval_job(eval_id, &spec.job).await? else {
        if spec.required {
            bail!(
                "evaluation {eval_id} has no job {}; the channel tarball is required",
                spec.job
            );
        }
        tracing::warn!("evaluation {eval_id} has no job {}; skipping it", spec.job);
        return Ok(());
    };
    let Some(product) = build.product_by_subtype(spec.subtype) else {
        if spec.required {
            bail!(
                "Hydra build {} ({}) has no build product of subtype {:?}",
                build.id,
                spec.job,
                spec.subtype
            );
        }
        tracing::warn!(
            "Hydra build {} ({}) has no {:?} product; skipping it",
            build.id,
            spec.job,
            spec.subtype
        );
        return Ok(());
    };
    let file_name = match spec.file_name {
        Some(n) => n.to_string(),
        None => product.file_name()?.to_string(),
    };
    let (store_path, inner) = product.store_path_and_inner()?;
    let sha256 = product.sha256()?;
    let dest = dir.join(&file_name);
    let sha_file = dir.join(format!("{file_name}.sha256"));
    let sha_line = format!("{}  {file_name}\n", sha256.to_hex());
    let already = dest.is_file()
        && std::fs::read_to_string(&sha_file).is_ok_and(|s| s == sha_line)
        && crate::fetch::verify_file(
            &dest,
            crate::fetch::Expected {
                size: product.filesize,
                sha256: Some(sha256),
            },
        )
        .is_ok_and(|r| r.is_ok());
    if already {
        tracing::info!("{file_name} is in place already");
        return Ok(());
    }
    tracing::info!("fetching {file_name} from {store_path}{inner}");
    let size = store_file::fetch_store_file(
        access,
        &StoreFile {
            store_path: &store_path,
            inner: &inner,
            sha256,
            size: product.filesize,
            dest: &dest,
        },
        tmpdir,
    )
    .await
    .with_context(|| {
        format!(
            "cannot fetch {file_name} (Hydra build {}, {})",
            build.id, spec.job
        )
    })?;
    fsutil::atomic_write(&sha_file, sha_line.as_bytes())?;
    tracing::info!(
        "{file_name}: {} verified",
        crate::progress::human_bytes(size)
    );
    Ok(())
}
