//! Creating a channel release from the latest finished build of a Hydra job.
//!
//! Every file is written under a temporary name and renamed into place; `git-revision` is
//! written last, and a failure leaves none. A release that has it is returned at once. A
//! complete release without `build-info.json` (the 2017 scripts wrote none) gets one from the
//! build, without asking Hydra for more. The channel's files (tarball, images) are taken from
//! the build products' store paths through the binary cache, each verified against the hash
//! Hydra gives ([`crate::store_file`]).

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{
    check_channel_name, write_build_info, write_store_paths, BuildInfo, ChannelRelease, BUILD_INFO,
    COMPLETION_MARKER, RESERVED_NAMES,
};
use crate::binary_cache::PrintFormat;
use crate::binary_cache::{LocalCache, Upstream};
use crate::fetch::{verify_file, Expected};
use crate::fsutil;
use crate::hash::Sha256Hash;
use crate::hydra::{Build, HydraClient};
use crate::store_file::{self, CacheAccess, Fetched, StoreFile};

/// Where a release comes from and where it goes.
#[derive(Clone, Copy)]
pub struct NewRelease<'a> {
    /// Channel name, e.g. `nixos-24.11`.
    pub channel: &'a str,
    /// Hydra project.
    pub project: &'a str,
    /// Hydra jobset.
    pub jobset: &'a str,
    /// Hydra job.
    pub job: &'a str,
    /// Directory under which `CHANNEL/NIXNAME` is created.
    pub outdir: &'a Path,
    /// The Hydra server.
    pub hydra: &'a HydraClient,
    /// The binary cache the files are fetched through.
    pub upstream: &'a Upstream,
    /// What `binary-cache-url` says (default: the upstream cache's URL).
    pub target_cache: Option<&'a str>,
    /// Directory for NARs while they are read (default: the release directory).
    pub tmpdir: Option<&'a Path>,
    /// `--print-only`: list the NARs of the release's files that are not here yet for another
    /// downloader, instead of downloading them; the release is then left without its
    /// `git-revision` until a later run finds those NARs in the staging area.
    pub print: Option<PrintFormat>,
    /// A local binary cache whose narinfos and NARs are used when present.
    pub local: Option<&'a LocalCache>,
    /// The directory whose lock ([`fsutil::DirLock`]) to take just before the first write, and
    /// to hold until the release is made; `None` when the caller holds the mirror's lock
    /// already. Taken that late, a release refused before anything is written leaves nothing,
    /// not even a lock file.
    pub lock: Option<&'a Path>,
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

/// Creates the release of the latest finished build of the job.
pub async fn create_latest(new: &NewRelease<'_>) -> Result<ChannelRelease> {
    check_channel_name(new.channel)?;
    let build = new
        .hydra
        .latest_finished(new.project, new.jobset, new.job)
        .await?;
    create_from_build(new, &build).await
}

/// Like [`create_latest`], but a release made now is left without `git-revision`, for the
/// caller to add to it (`programs.sqlite`) and then [`complete`] it. A rerun finds it
/// incomplete and fetches (and checks against Hydra) what the caller changed again.
pub async fn create_latest_pending(new: &NewRelease<'_>) -> Result<ChannelRelease> {
    check_channel_name(new.channel)?;
    let build = new
        .hydra
        .latest_finished(new.project, new.jobset, new.job)
        .await?;
    create_from_build_with(new, &build, false).await
}

/// Writes `git-revision` into a release made by [`create_latest_pending`]: the last write.
pub fn complete(release: &ChannelRelease) -> Result<()> {
    fsutil::atomic_write(
        &release.dir.join(COMPLETION_MARKER),
        release.info.git_revision.as_bytes(),
    )
}

/// Creates the release of `build` (the latest finished build of the job).
pub async fn create_from_build(new: &NewRelease<'_>, build: &Build) -> Result<ChannelRelease> {
    create_from_build_with(new, build, true).await
}

async fn create_from_build_with(
    new: &NewRelease<'_>,
    build: &Build,
    mark_complete: bool,
) -> Result<ChannelRelease> {
    check_channel_name(new.channel)?;
    if !build.is_success() {
        bail!(
            "Hydra build {} of {}:{}:{} did not succeed; no release is made from it",
            build.id,
            new.project,
            new.jobset,
            new.job
        );
    }
    let nixname = build.release_name()?.to_string();
    let eval_id = build.eval_id()?;
    let outdir = fsutil::absolute(new.outdir)?;
    let dir = outdir.join(new.channel).join(&nixname);

    let mut lock = None;
    if dir.join(COMPLETION_MARKER).is_file() {
        let info = match BuildInfo::read(&dir) {
            Ok(info) => info,
            // A release made before build-info.json existed (the 2017 scripts made none): what
            // it records is known from the build and the release's own git-revision.
            Err(e) if !dir.join(BUILD_INFO).exists() => {
                tracing::info!("{e:#}; writing it from Hydra build {}", build.id);
                take_lock(new, &mut lock)?;
                let marker = dir.join(COMPLETION_MARKER);
                let git_revision = std::fs::read_to_string(&marker)
                    .with_context(|| format!("cannot read {}", marker.display()))?
                    .trim()
                    .to_string();
                let info = build_info(new, build, eval_id, &nixname, git_revision);
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
            listed: Vec::new(),
            complete: true,
        });
    }
    take_lock(new, &mut lock)?;
    fsutil::create_dir_all_within(&outdir, &dir)?;
    fsutil::remove_stale_temp_files(&dir)?;
    tracing::info!(
        "creating {} from Hydra build {} (evaluation {eval_id})",
        dir.display(),
        build.id
    );

    let eval = new.hydra.eval(eval_id).await?;
    let git_revision = eval.nixpkgs_revision()?;
    let store_paths = new.hydra.eval_store_paths(eval_id).await?;

    let access = CacheAccess {
        upstream: new.upstream,
        local: new.local,
        print: new.print,
    };
    let tmpdir = new.tmpdir.unwrap_or(&dir);
    let mut taken = Vec::new();
    let mut listed = Vec::new();
    let mut waiting = 0;
    for spec in products_for(new.channel) {
        if let Fetched::Listed(entry) =
            fetch_product(&access, new.hydra, eval_id, &spec, &dir, tmpdir, &mut taken).await?
        {
            waiting += 1;
            listed.extend(entry);
        }
    }

    let info = build_info(new, build, eval_id, &nixname, git_revision.clone());
    let target = new.target_cache.unwrap_or(new.upstream.url());
    fsutil::atomic_write(&dir.join("src-url"), new.hydra.eval_url(eval_id).as_bytes())?;
    fsutil::atomic_write(&dir.join("binary-cache-url"), target.as_bytes())?;
    {
        // `store-paths.xz` is compressed with xz -9: off the async threads.
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || write_store_paths(&dir, &store_paths))
            .await
            .context("writing store-paths failed")??;
    }
    write_build_info(&dir, &info)?;
    if waiting > 0 {
        tracing::info!(
            "{}: {waiting} of its files wait for another downloader; it stays incomplete",
            dir.display()
        );
        return Ok(ChannelRelease {
            dir,
            info,
            created: true,
            listed,
            complete: false,
        });
    }
    // Last: the marker that everything above is in place.
    if mark_complete {
        fsutil::atomic_write(&dir.join(COMPLETION_MARKER), git_revision.as_bytes())?;
    }
    Ok(ChannelRelease {
        dir,
        info,
        created: true,
        listed,
        complete: mark_complete,
    })
}

/// Takes the lock `new.lock` names, unless it is held (in `lock`) already.
fn take_lock(new: &NewRelease<'_>, lock: &mut Option<fsutil::DirLock>) -> Result<()> {
    if let (Some(dir), None) = (new.lock, lock.as_ref()) {
        *lock = Some(fsutil::DirLock::acquire(dir, false)?);
    }
    Ok(())
}

/// Whether the file at `path` has `size` bytes (if given) and sha256 `sha256`. Hashing a whole
/// image takes a while, so it runs off the async threads.
async fn file_matches(path: &Path, size: Option<u64>, sha256: Sha256Hash) -> bool {
    let path = path.to_path_buf();
    let expected = Expected {
        size,
        sha256: Some(sha256),
        nar: None,
    };
    tokio::task::spawn_blocking(move || verify_file(&path, expected))
        .await
        .is_ok_and(|checked| checked.is_ok_and(|matched| matched.is_ok()))
}

/// What a release of `build` records about it.
fn build_info(
    new: &NewRelease<'_>,
    build: &Build,
    eval_id: u64,
    nixname: &str,
    git_revision: String,
) -> BuildInfo {
    BuildInfo {
        hydra: new.hydra.base().to_string(),
        project: new.project.to_string(),
        jobset: new.jobset.to_string(),
        job: new.job.to_string(),
        build_id: build.id,
        eval_id,
        build_time: build.stoptime.or(build.timestamp).unwrap_or(0),
        nixname: nixname.to_string(),
        git_revision,
        source: None,
        published: Default::default(),
    }
}

/// Why a build product may not be stored as `name` in a release that already holds the
/// products `taken`, if it may not.
fn name_conflict(name: &str, taken: &[String]) -> Option<String> {
    let sha_of = name.strip_suffix(".sha256");
    if RESERVED_NAMES.contains(&name) {
        Some("is a file of the release itself".into())
    } else if let Some(of) = sha_of {
        Some(format!("would be taken for the checksum of {of:?}"))
    } else if taken.iter().any(|t| t == name) {
        Some("another product of the release has".into())
    } else {
        None
    }
}

async fn fetch_product(
    access: &CacheAccess<'_>,
    hydra: &HydraClient,
    eval_id: u64,
    spec: &ProductSpec,
    dir: &Path,
    tmpdir: &Path,
    taken: &mut Vec<String>,
) -> Result<Fetched> {
    let Some(build) = hydra.eval_job(eval_id, &spec.job).await? else {
        if spec.required {
            bail!(
                "evaluation {eval_id} has no job {}; the channel tarball is required",
                spec.job
            );
        }
        tracing::warn!("evaluation {eval_id} has no job {}; skipping it", spec.job);
        return Ok(Fetched::File(0));
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
        return Ok(Fetched::File(0));
    };
    let file_name = match spec.file_name {
        Some(n) => n.to_string(),
        None => product.file_name()?.to_string(),
    };
    if let Some(why) = name_conflict(&file_name, taken) {
        bail!(
            "Hydra build {} ({}) has a product named {file_name:?}, which {why}; refusing it \
             (nothing of the release is overwritten)",
            build.id,
            spec.job
        );
    }
    taken.push(file_name.clone());
    let (store_path, inner) = product.store_path_and_inner()?;
    let sha256 = product.sha256()?;
    let dest = dir.join(&file_name);
    let sha_file = dir.join(format!("{file_name}.sha256"));
    let sha_line = format!("{}  {file_name}\n", sha256.to_hex());
    let already = dest.is_file()
        && std::fs::read_to_string(&sha_file).is_ok_and(|s| s == sha_line)
        && file_matches(&dest, product.filesize, sha256).await;
    if already {
        tracing::info!("{file_name} is in place already");
        return Ok(Fetched::File(0));
    }
    tracing::info!("fetching {file_name} from {store_path}{inner}");
    let fetched = store_file::fetch_store_file(
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
    let Fetched::File(size) = fetched else {
        tracing::info!("{file_name}: its NAR is for another downloader");
        return Ok(fetched);
    };
    fsutil::atomic_write(&sha_file, sha_line.as_bytes())?;
    tracing::info!(
        "{file_name}: {} verified",
        crate::progress::human_bytes(size)
    );
    Ok(fetched)
}

#[cfg(test)]
mod tests {
    use super::name_conflict;

    #[test]
    fn products_may_not_take_the_names_of_release_files() {
        let taken = vec!["nixexprs.tar.xz".to_string()];
        for name in [
            "git-revision",
            "store-paths",
            "store-paths.xz",
            "build-info.json",
            "src-url",
            "binary-cache-url",
            "nixexprs.tar.xz",
            "nixexprs.tar.xz.sha256",
            "x.iso.sha256",
        ] {
            assert!(name_conflict(name, &taken).is_some(), "{name}");
        }
        for name in ["nixos-minimal-24.11-x86_64-linux.iso", "git-revision.iso"] {
            assert_eq!(name_conflict(name, &taken), None, "{name}");
        }
    }
}
