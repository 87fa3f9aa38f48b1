//! Copying a release as a channel server publishes it, instead of making it from a Hydra build.
//!
//! A channel URL such as `https://channels.nixos.org/nixos-24.11` answers with a redirect to the
//! release, `https://releases.nixos.org/nixos/24.11/nixos-24.11.711815.abcdef012345`; that URL
//! (without a trailing `/`) serves the release's index page, a table of its files with their
//! sizes and sha256 hashes ([`parse_index`]), and `URL/FILE` serves each file. The files are
//! copied byte for byte, each checked against the size and sha256 of the index, an image's
//! `FILE.sha256` also against the index's hash of the image, and `nixexprs.tar.xz` also against
//! the channel tarball of the Hydra evaluation named by `src-url` when that is the configured
//! Hydra and it answers. `git-revision` comes last, after `store-paths` (unpacked from
//! `store-paths.xz`) and `build-info.json`, which records the evaluation and the published
//! hashes (`verify` checks the files against them).
//!
//! Order: a published release is as new as the Hydra evaluation its `src-url` names
//! (`.../eval/N`); a release of an older evaluation than the channel's current one is not
//! copied, and the channel stays (unless forced). A redirect to a release of another channel
//! (`nixos-24.05.x` for `nixos-24.11`) is refused.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::{check_channel_name, write_build_info, BuildInfo, ChannelRelease, COMPLETION_MARKER};
use crate::binary_cache::{PrintFormat, STAGING_DIR};
use crate::fetch::{verify_file, Expected, FetchConfig, Fetcher};
use crate::fsutil;
use crate::hash::Sha256Hash;
use crate::hydra::HydraClient;
use crate::store_path::StorePath;

/// The files a published release must have.
pub const REQUIRED_FILES: &[&str] = &[
    "git-revision",
    "src-url",
    "store-paths.xz",
    "nixexprs.tar.xz",
];

/// Files of the release that nixipfs writes itself: a published file by one of these names is
/// refused.
const OWN_FILES: &[&str] = &[
    super::BUILD_INFO,
    "store-paths",
    "missing-store-paths",
    "binary_cache",
    "nix-cache-info",
    "lastsync",
    "ipfs_hash",
];

/// The largest index page, `src-url` or `git-revision` read into memory.
const SMALL_LIMIT: u64 = 4 << 20;
/// The largest `store-paths` unpacked from `store-paths.xz`.
const STORE_PATHS_LIMIT: u64 = 512 << 20;

/// One file of a published release, as its index page lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedFile {
    /// The file name.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its sha256.
    pub sha256: Sha256Hash,
}

/// Reads the table of a release's index page: one row per file, with the file name (a link),
/// the size and the sha256 in hex, as `mirror-nixos-branch.pl` writes it. Rows of another shape
/// (the header) are passed over; a file listed twice is an error.
pub fn parse_index(html: &str) -> Result<Vec<PublishedFile>, String> {
    let mut out: Vec<PublishedFile> = Vec::new();
    for row in html.split("<tr").skip(1) {
        let row = row.split("</tr>").next().unwrap_or("");
        let cells: Vec<String> = row
            .split("<td")
            .skip(1)
            .map(|cell| {
                let inner = cell.split_once('>').map_or("", |(_, rest)| rest);
                strip_tags(inner.split("</td>").next().unwrap_or(""))
            })
            .collect();
        let [name, size, hash] = &cells[..] else {
            continue;
        };
        let (Ok(size), Ok(sha256)) = (
            size.trim().parse::<u64>(),
            Sha256Hash::from_hex(hash.trim()),
        ) else {
            continue;
        };
        let name = name.trim().to_string();
        if out.iter().any(|f| f.name == name) {
            return Err(format!("the index lists {name:?} twice"));
        }
        out.push(PublishedFile { name, size, sha256 });
    }
    if out.is_empty() {
        return Err("the page has no table of files with sizes and sha256 hashes".into());
    }
    Ok(out)
}

/// The text of an HTML fragment without its tags.
fn strip_tags(s: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in s.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}

/// Whether a file is an installation image (left out by `--skip-images`), or its checksum.
pub fn is_image(name: &str) -> bool {
    let name = name.strip_suffix(".sha256").unwrap_or(name);
    [".iso", ".ova"].iter().any(|ext| name.ends_with(ext))
}

/// The evaluation id a `src-url` names (`https://hydra.nixos.org/eval/1409852`).
pub fn eval_id_of(src_url: &str) -> Option<u64> {
    let (_, id) = src_url.trim().trim_end_matches('/').rsplit_once("/eval/")?;
    id.parse().ok()
}

/// Refuses a release name that is not one of the channel's: `channel` is the last segment of
/// the channel URL (`nixos-24.11-small`), `nixname` the release (`nixos-24.11small.1.abc`).
/// The release must start with the channel's family (`nixos-`), and for a channel of a version
/// (`24.11`) carry that version.
pub fn check_release_of_channel(channel: &str, nixname: &str) -> Result<(), String> {
    let refuse = || {
        Err(format!(
            "the channel {channel} redirects to the release {nixname}, which is not one of \
             its releases"
        ))
    };
    let Some((family, rest)) = channel.split_once('-') else {
        return if nixname.starts_with(channel) {
            Ok(())
        } else {
            refuse()
        };
    };
    let Some(version) = nixname
        .strip_prefix(family)
        .and_then(|v| v.strip_prefix('-'))
    else {
        return refuse();
    };
    let wanted = rest.split('-').next().unwrap_or("");
    let is_version =
        wanted.contains('.') && wanted.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    if is_version {
        let after = version.strip_prefix(wanted).and_then(|r| r.chars().next());
        // `24.11.` or `24.11small.`, and not `24.110`.
        if !matches!(after, Some(c) if !c.is_ascii_digit()) {
            return refuse();
        }
    }
    Ok(())
}

/// Where a published release comes from and where it goes.
#[derive(Clone, Copy)]
pub struct PublishedRelease<'a> {
    /// The local channel name.
    pub channel: &'a str,
    /// The channel URL, which redirects to the release.
    pub source: &'a str,
    /// Directory under which `CHANNEL/NIXNAME` is created.
    pub outdir: &'a Path,
    /// The mirror's `channels` directory: the current release is read from its link.
    pub channels_dir: &'a Path,
    /// HTTP.
    pub fetcher: &'a Fetcher,
    /// The configured Hydra, to cross-check `nixexprs.tar.xz` when `src-url` names it.
    pub hydra: Option<&'a HydraClient>,
    /// Leave ISO and OVA images out.
    pub skip_images: bool,
    /// Copy a release even if it is older than the channel's current one.
    pub force: bool,
    /// Where another downloader puts the release's files (`DIR/.staging`), and where the
    /// copy looks for them first; `None`: nowhere.
    pub staging: Option<&'a Path>,
    /// `--print-only`: copy only what the closure needs (`store-paths.xz` and the small
    /// files), list the others for another downloader (into `staging`), and leave the release
    /// without `git-revision`.
    pub print: Option<PrintFormat>,
}

/// What [`copy_latest`] did.
#[derive(Debug)]
pub enum Outcome {
    /// The release is complete on disk (copied now or before).
    Release(ChannelRelease),
    /// The published release is older than the channel's current one; nothing was copied.
    Older {
        /// The published release.
        nixname: String,
        /// Its evaluation.
        eval_id: u64,
        /// The channel's current release.
        current: BuildInfo,
    },
}

/// Follows the channel URL to its release and copies the release, unless it is older than the
/// channel's current one.
pub async fn copy_latest(new: &PublishedRelease<'_>) -> Result<Outcome> {
    check_channel_name(new.channel)?;
    let release_url = resolve(new.fetcher.config(), new.source).await?;
    let source_channel = last_segment(new.source).unwrap_or_default();
    let nixname = last_segment(&release_url)
        .with_context(|| format!("the release URL {release_url} has no release name"))?;
    fsutil::check_file_name(&nixname).with_context(|| {
        format!("the release name {nixname:?} (from {release_url}) is not a plain file name")
    })?;
    check_release_of_channel(&source_channel, &nixname).map_err(|e| {
        anyhow::anyhow!(
            "{e} ({} redirects to {release_url}); nothing is copied",
            new.source
        )
    })?;

    let page = new
        .fetcher
        .get_bytes(&release_url, None, SMALL_LIMIT)
        .await
        .with_context(|| format!("cannot read the release page {release_url}"))?;
    let files = parse_index(&String::from_utf8_lossy(&page))
        .map_err(|e| anyhow::anyhow!("{release_url}: {e}"))?;
    check_names(&files, &release_url)?;

    let src_url = small_file(new.fetcher, &release_url, &files, "src-url").await?;
    let src_url = String::from_utf8_lossy(&src_url).trim().to_string();
    let eval_id = eval_id_of(&src_url).with_context(|| {
        format!(
            "{release_url}/src-url is {src_url:?}, which names no Hydra evaluation \
             (`.../eval/N`): the age of the release is not known, so it is not copied"
        )
    })?;
    if let Some(current) = current_release(new.channels_dir, new.channel) {
        if current.eval_id > eval_id && !new.force {
            return Ok(Outcome::Older {
                nixname,
                eval_id,
                current,
            });
        }
    }

    let outdir = fsutil::absolute(new.outdir)?;
    let dir = outdir.join(new.channel).join(&nixname);
    if dir.join(COMPLETION_MARKER).is_file() {
        if let Ok(info) = BuildInfo::read(&dir) {
            tracing::info!("{} is complete already", dir.display());
            return Ok(Outcome::Release(ChannelRelease {
                dir,
                info,
                created: false,
                listed: Vec::new(),
                complete: true,
            }));
        }
    }
    fsutil::create_dir_all_within(&outdir, &dir)?;
    fsutil::remove_stale_temp_files(&dir)?;
    tracing::info!(
        "copying {} from {release_url} (evaluation {eval_id})",
        dir.display()
    );

    let wanted: Vec<&PublishedFile> = files
        .iter()
        .filter(|f| !(new.skip_images && is_image(&f.name)))
        .collect();
    if new.skip_images {
        let skipped = files.len() - wanted.len();
        if skipped > 0 {
            tracing::info!("{nixname}: {skipped} image files left out (--skip-images)");
        }
    }
    if let Some(hydra) = new.hydra {
        cross_check_with_hydra(hydra, &src_url, eval_id, &files).await?;
    }
    // Where another downloader puts this release's files, relative to the mirror directory.
    let staged_rel = format!("{STAGING_DIR}/releases/{}/{nixname}", new.channel);
    let staged_dir = new
        .staging
        .map(|s| s.join("releases").join(new.channel).join(&nixname));
    let mut listed = Vec::new();
    for f in wanted.iter().filter(|f| f.name != COMPLETION_MARKER) {
        let staged = staged_dir.as_ref().map(|d| d.join(&f.name));
        if let (Some(format), false) = (new.print, copied_when_printing(&f.name)) {
            let in_place = file_matches(&dir.join(&f.name), f).await;
            let placed = match &staged {
                Some(p) => file_matches(p, f).await,
                None => false,
            };
            if !in_place && !placed {
                listed.push(format.file_entry(
                    &format!("{release_url}/{}", f.name),
                    &format!("{staged_rel}/{}", f.name),
                    f.sha256,
                ));
            }
            if !in_place {
                continue;
            }
        }
        copy_file(new.fetcher, &release_url, f, &dir, staged.as_deref()).await?;
    }
    if new.print.is_some() {
        let dir2 = dir.clone();
        tokio::task::spawn_blocking(move || write_store_paths_from_xz(&dir2))
            .await
            .context("unpacking store-paths.xz failed")??;
        let info = build_info(new, &src_url, eval_id, &nixname, String::new(), &[]);
        return Ok(Outcome::Release(ChannelRelease {
            dir,
            info,
            created: true,
            listed,
            complete: false,
        }));
    }
    check_sha256_files(&dir, &wanted)?;
    let git_revision_bytes =
        small_file(new.fetcher, &release_url, &files, COMPLETION_MARKER).await?;
    let git_revision = String::from_utf8_lossy(&git_revision_bytes)
        .trim()
        .to_string();
    {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || write_store_paths_from_xz(&dir))
            .await
            .context("unpacking store-paths.xz failed")??;
    }
    let info = build_info(new, &src_url, eval_id, &nixname, git_revision, &wanted);
    write_build_info(&dir, &info)?;
    // Last: the marker that everything above is in place, as published (checked above).
    fsutil::atomic_write(&dir.join(COMPLETION_MARKER), &git_revision_bytes)?;
    Ok(Outcome::Release(ChannelRelease {
        dir,
        info,
        created: true,
        listed: Vec::new(),
        complete: true,
    }))
}

/// What a release copied from `new.source` records: where it came from, and the published
/// sha256 of each file of `wanted`.
fn build_info(
    new: &PublishedRelease<'_>,
    src_url: &str,
    eval_id: u64,
    nixname: &str,
    git_revision: String,
    wanted: &[&PublishedFile],
) -> BuildInfo {
    BuildInfo {
        hydra: src_url
            .rsplit_once("/eval/")
            .map_or(String::new(), |(base, _)| base.to_string()),
        project: String::new(),
        jobset: String::new(),
        job: String::new(),
        build_id: 0,
        eval_id,
        build_time: 0,
        nixname: nixname.to_string(),
        git_revision,
        source: Some(new.source.to_string()),
        published: wanted
            .iter()
            .map(|f| (f.name.clone(), f.sha256.to_hex()))
            .collect(),
    }
}

/// The last non-empty path segment of a URL.
fn last_segment(url: &str) -> Option<String> {
    let parsed = url::Url::parse(url).ok()?;
    let seg = parsed.path_segments()?.rev().find(|s| !s.is_empty())?;
    Some(seg.to_string())
}

/// The release the channel link points at, if it has `build-info.json`.
fn current_release(channels_dir: &Path, channel: &str) -> Option<BuildInfo> {
    let link = channels_dir.join(channel);
    let target = std::fs::read_link(&link).ok()?;
    BuildInfo::read(&channels_dir.join(target)).ok()
}

/// Refuses an index without the files a release needs, or with a name that is not a plain file
/// name or that nixipfs writes itself.
fn check_names(files: &[PublishedFile], release_url: &str) -> Result<()> {
    for f in files {
        if fsutil::check_file_name(&f.name).is_err() || f.name.starts_with('.') {
            bail!(
                "{release_url} lists a file {:?}, which is not a plain file name; nothing is \
                 copied",
                f.name
            );
        }
        if OWN_FILES.contains(&f.name.as_str()) {
            bail!(
                "{release_url} lists a file {:?}, a name nixipfs keeps for its own file of the \
                 release; nothing is copied",
                f.name
            );
        }
    }
    for name in REQUIRED_FILES {
        if !files.iter().any(|f| f.name == *name) {
            bail!("{release_url} lists no {name}; it is not a complete release");
        }
    }
    Ok(())
}

/// Reads a small file of the release into memory, checked against the index.
async fn small_file(
    fetcher: &Fetcher,
    release_url: &str,
    files: &[PublishedFile],
    name: &str,
) -> Result<Vec<u8>> {
    let f = files
        .iter()
        .find(|f| f.name == name)
        .with_context(|| format!("{release_url} lists no {name}"))?;
    let url = format!("{release_url}/{name}");
    let bytes = fetcher
        .get_bytes(&url, None, SMALL_LIMIT)
        .await
        .with_context(|| format!("cannot fetch {url}"))?;
    let got = crate::hash::sha256(&bytes);
    if bytes.len() as u64 != f.size || got != f.sha256 {
        bail!(
            "{url} does not match its published sha256 ({} bytes, sha256 {}; the index says {} \
             bytes, sha256 {}); the release is not copied",
            bytes.len(),
            got.to_hex(),
            f.size,
            f.sha256.to_hex()
        );
    }
    Ok(bytes.to_vec())
}

/// Whether `--print-only` copies the file `name` of a published release rather than listing
/// it: what the closure and the release's age need, all of them small.
fn copied_when_printing(name: &str) -> bool {
    matches!(
        name,
        "store-paths.xz" | "src-url" | "binary-cache-url" | COMPLETION_MARKER
    ) || name.ends_with(".sha256")
}

/// Whether the file at `path` is there with the size and sha256 the index gives `f` (hashed
/// off the async threads).
async fn file_matches(path: &Path, f: &PublishedFile) -> bool {
    if !path.is_file() {
        return false;
    }
    let expected = Expected {
        size: Some(f.size),
        sha256: Some(f.sha256),
        nar: None,
    };
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || verify_file(&path, expected))
        .await
        .is_ok_and(|r| r.is_ok_and(|m| m.is_ok()))
}

/// Copies one file into `dir` (temp file, check, rename), unless it is there and matches; a
/// copy another downloader put at `staged` is taken instead when it matches (and removed,
/// with a warning, when it does not).
async fn copy_file(
    fetcher: &Fetcher,
    release_url: &str,
    f: &PublishedFile,
    dir: &Path,
    staged: Option<&Path>,
) -> Result<()> {
    let dest = dir.join(&f.name);
    let expected = Expected {
        size: Some(f.size),
        sha256: Some(f.sha256),
        nar: None,
    };
    if file_matches(&dest, f).await {
        tracing::info!("{} is in place already", f.name);
        return Ok(());
    }
    if let Some(staged) = staged.filter(|p| p.is_file()) {
        if file_matches(staged, f).await {
            std::fs::rename(staged, &dest).with_context(|| {
                format!("cannot move {} to {}", staged.display(), dest.display())
            })?;
            tracing::info!("{}: taken from the staging area, verified", f.name);
            return Ok(());
        }
        tracing::warn!(
            "{} does not match its published sha256; it was removed, and the file is \
             downloaded instead",
            staged.display()
        );
        let _ = std::fs::remove_file(staged);
    }
    let url = format!("{release_url}/{}", f.name);
    fetcher
        .download(&url, &dest, expected)
        .await
        .with_context(|| {
            format!("cannot copy {url} (checked against its published sha256); the release is not complete")
        })?;
    tracing::info!(
        "{}: {} verified",
        f.name,
        crate::progress::human_bytes(f.size)
    );
    Ok(())
}

/// Checks each copied `FILE.sha256` against the index's hash of `FILE`.
fn check_sha256_files(dir: &Path, wanted: &[&PublishedFile]) -> Result<()> {
    for sha in wanted {
        let Some(of) = sha.name.strip_suffix(".sha256") else {
            continue;
        };
        let Some(target) = wanted.iter().find(|f| f.name == of) else {
            continue;
        };
        let file = dir.join(&sha.name);
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let hex = text.split_whitespace().next().unwrap_or("");
        if Sha256Hash::from_hex(hex).ok() != Some(target.sha256) {
            bail!(
                "{} gives sha256 {hex:?} for {of}, but the release's index gives {}; the \
                 release is not complete",
                file.display(),
                target.sha256.to_hex()
            );
        }
    }
    Ok(())
}

/// When `src-url` names an evaluation of the configured Hydra, checks the published
/// `nixexprs.tar.xz` against the channel tarball Hydra gives for it. A Hydra that does not
/// answer is a warning: the published hash is still checked.
async fn cross_check_with_hydra(
    hydra: &HydraClient,
    src_url: &str,
    eval_id: u64,
    files: &[PublishedFile],
) -> Result<()> {
    if src_url.trim_end_matches('/') != hydra.eval_url(eval_id) {
        tracing::info!(
            "src-url {src_url} is not an evaluation of the configured Hydra {}; nixexprs.tar.xz \
             is checked against its published sha256 only",
            hydra.base()
        );
        return Ok(());
    }
    let Some(tarball) = files.iter().find(|f| f.name == "nixexprs.tar.xz") else {
        return Ok(());
    };
    let mut found = None;
    for job in ["nixos.channel", "tarball"] {
        match hydra.eval_job(eval_id, job).await {
            Ok(Some(build)) => {
                found = build
                    .product_by_subtype("source-dist")
                    .map(|p| p.sha256())
                    .transpose()?;
                if found.is_some() {
                    break;
                }
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(
                    "Hydra evaluation {eval_id} cannot be asked for its channel tarball ({e}); \
                     nixexprs.tar.xz is checked against its published sha256 only"
                );
                return Ok(());
            }
        }
    }
    match found {
        Some(h) if h != tarball.sha256 => bail!(
            "the published nixexprs.tar.xz has sha256 {}, but Hydra evaluation {eval_id} built \
             one with sha256 {}; the release is not copied",
            tarball.sha256.to_hex(),
            h.to_hex()
        ),
        Some(_) => tracing::info!("nixexprs.tar.xz matches Hydra evaluation {eval_id}"),
        None => tracing::warn!(
            "Hydra evaluation {eval_id} has no channel tarball job; nixexprs.tar.xz is checked \
             against its published sha256 only"
        ),
    }
    Ok(())
}

/// Writes `store-paths` from the release's `store-paths.xz`, sorted; each line must be a store
/// path.
fn write_store_paths_from_xz(dir: &Path) -> Result<()> {
    let xz_file = dir.join("store-paths.xz");
    let file = std::fs::File::open(&xz_file)
        .with_context(|| format!("cannot read {}", xz_file.display()))?;
    let mut text = String::new();
    xz2::read::XzDecoder::new(std::io::BufReader::new(file))
        .take(STORE_PATHS_LIMIT)
        .read_to_string(&mut text)
        .with_context(|| format!("{} is not xz-compressed text", xz_file.display()))?;
    let mut paths = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        StorePath::from_absolute_path(line).with_context(|| {
            format!(
                "{}:{}: {line:?} is not a store path",
                xz_file.display(),
                n + 1
            )
        })?;
        paths.push(line.to_string());
    }
    paths.sort();
    paths.dedup();
    let mut out = paths.join("\n");
    if !out.is_empty() {
        out.push('\n');
    }
    fsutil::atomic_write(&dir.join("store-paths"), out.as_bytes())
}

/// Asks `url` where it redirects to, without following: a channel URL answers with a redirect
/// to its release. Transient failures are retried as the fetch settings say.
pub async fn resolve(config: &FetchConfig, url: &str) -> Result<String> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("nixipfs/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.connect_timeout)
        .read_timeout(config.stall_timeout)
        .redirect(reqwest::redirect::Policy::none());
    for path in &config.ca_certs {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read the CA certificate {}", path.display()))?;
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("{} holds no usable PEM certificate", path.display()))?
        {
            builder = builder.add_root_certificate(cert);
        }
    }
    let client = builder.build().context("cannot set up the HTTP client")?;
    let mut delay = config.backoff_base;
    let mut attempt = 0;
    loop {
        let failure = match client.get(url).send().await {
            Ok(resp) if resp.status().is_redirection() => {
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|l| l.to_str().ok())
                    .with_context(|| {
                        format!("{url} answers HTTP {} without a Location", resp.status())
                    })?;
                let target = resp.url().join(location).with_context(|| {
                    format!("{url} redirects to {location:?}, which is not a URL")
                })?;
                if !matches!(target.scheme(), "http" | "https") {
                    bail!("{url} redirects to {target}, which is not an http(s) URL");
                }
                return Ok(target.as_str().trim_end_matches('/').to_string());
            }
            Ok(resp) if resp.status().is_server_error() => {
                format!("{url} answers HTTP {}", resp.status())
            }
            Ok(resp) => bail!(
                "{url} answers HTTP {} instead of a redirect to a release; is it a channel URL \
                 (`https://channels.nixos.org/CHANNEL`)?",
                resp.status()
            ),
            Err(e) => format!("cannot reach {url}: {e}"),
        };
        if attempt >= config.retries {
            bail!("{failure} (after {} attempts)", attempt + 1);
        }
        attempt += 1;
        tokio::time::sleep(delay).await;
        delay = (delay * 2)
            .min(config.backoff_max)
            .max(Duration::from_millis(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture_page() -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(
            "tests/fixtures/channel-release/releases.nixos.org/nixos/17.09/\
             nixos-17.09.1234.abcdef01234.index.html",
        );
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn the_index_of_a_real_release_lists_its_files() {
        let files = parse_index(&fixture_page()).unwrap();
        let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "binary-cache-url",
                "git-revision",
                "nixexprs.tar.xz",
                "nixos-minimal-17.09.1234.abcdef01234-x86_64-linux.iso",
                "src-url",
                "store-paths.xz",
            ]
        );
        let tarball = &files[2];
        assert_eq!(tarball.size, 440);
        assert_eq!(
            tarball.sha256.to_hex(),
            "91a0d323fb0543bf9a4d0559bfdb4719a90843a2162f78cf1ec1b74fffe9633b"
        );
        check_names(&files, "u").unwrap();
    }

    #[test]
    fn pages_without_a_table_or_with_repeats_are_refused() {
        assert!(parse_index("<html>Not Found</html>").is_err());
        let row = "<tr><td><a href='x'>x</a></td><td>1</td><td><tt>\
                   91a0d323fb0543bf9a4d0559bfdb4719a90843a2162f78cf1ec1b74fffe9633b</tt></td></tr>";
        assert!(parse_index(&format!("{row}{row}"))
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn release_names_must_belong_to_the_channel() {
        for (channel, nixname) in [
            ("nixos-24.11", "nixos-24.11.711815.abcdef012345"),
            ("nixos-24.11-small", "nixos-24.11small.711815.abcdef012345"),
            ("nixos-unstable", "nixos-25.05pre711815.abcdef012345"),
            ("nixpkgs-unstable", "nixpkgs-25.05pre711815.abcdef012345"),
            ("nixos-17.09", "nixos-17.09.1234.abcdef01234"),
        ] {
            check_release_of_channel(channel, nixname).unwrap();
        }
        for (channel, nixname) in [
            ("nixos-24.11", "nixos-24.05.711815.abcdef012345"),
            ("nixos-24.11", "nixpkgs-24.11.711815.abcdef012345"),
            ("nixos-24.1", "nixos-24.11.711815.abcdef012345"),
            ("nixos-unstable", "nixpkgs-25.05pre1.abc"),
        ] {
            let e = check_release_of_channel(channel, nixname).unwrap_err();
            assert!(e.contains(channel) && e.contains(nixname), "{e}");
        }
    }

    #[test]
    fn images_and_evaluations() {
        assert!(is_image("nixos-minimal-24.11-x86_64-linux.iso"));
        assert!(is_image("nixos-minimal-24.11-x86_64-linux.iso.sha256"));
        assert!(is_image("nixos-24.11-x86_64-linux.ova"));
        assert!(!is_image("nixexprs.tar.xz"));
        assert_eq!(
            eval_id_of("https://hydra.nixos.org/eval/1409852"),
            Some(1409852)
        );
        assert_eq!(eval_id_of("https://hydra.nixos.org/eval/x"), None);
        assert_eq!(eval_id_of("https://example.org/"), None);
    }
}
