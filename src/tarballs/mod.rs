//! Source tarball mirroring (`mirror: true`): the fixed-output sources of a release, stored by
//! content as tarballs.nixos.org stores them, so that a mirror can rebuild a release without
//! the projects' own download sites.
//!
//! For one release ([`mirror_sources`]): the sources are listed by evaluating the channel
//! tarball ([`find`]), each one not yet in the tree ([`tree`]) is taken from the binary cache
//! or its URLs ([`fetch`]) and kept only when its declared hash matches; the release then
//! records what it needs in `tarballs-manifest`, and what could not be had, with why, in
//! `missing-tarballs` (upstream lacking a source does not hold the channel back). A release
//! that has a manifest is not evaluated again. [`collect`] deletes what no release needs;
//! [`verify`] checks the tree.

pub mod fetch;
pub mod find;
pub mod source;
pub mod tree;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use futures::StreamExt;

use crate::binary_cache::{LocalCache, Upstream};
use crate::fsutil;
use crate::mirror::PrintFormat;
use crate::progress::human_bytes;
use crate::store_file::CacheAccess;
use fetch::{FetchContext, Origin};
use source::{Source, MANIFEST, MISSING};
pub use tree::{Tree, TARBALLS_DIR};

/// One release's sources to mirror.
pub struct TarballJob<'a> {
    /// The mirror directory (the tree is `DIR/tarballs`).
    pub dir: &'a Path,
    /// The release directory (with `nixexprs.tar.xz`).
    pub release: &'a Path,
    /// The upstream binary cache.
    pub upstream: &'a Upstream,
    /// The mirror's own binary cache, looked at first.
    pub local: Option<&'a LocalCache>,
    /// Where the channel tarball is unpacked and NARs are held.
    pub tmpdir: &'a Path,
    /// List what is missing on `out` instead of fetching it; nothing is written.
    pub print_only: bool,
    /// How `print_only` lists.
    pub print_format: PrintFormat,
    /// Whether files are fsynced before they are renamed into place.
    pub fsync: bool,
}

/// What mirroring a release's sources did.
#[derive(Clone, Debug, Default)]
pub struct TarballReport {
    /// Sources the release needs.
    pub sources: usize,
    /// Already in the tree.
    pub present: usize,
    /// Taken from the binary cache.
    pub from_cache: usize,
    /// Downloaded from their URLs.
    pub from_urls: usize,
    /// Placed by another downloader and checked.
    pub placed_by_hand: usize,
    /// Bytes put into the tree.
    pub bytes: u64,
    /// Listed for another downloader (`--print-only`).
    pub listed: usize,
    /// Sources that could not be had: `(ALGO:HEX NAME, why)`.
    pub missing: Vec<(String, String)>,
    /// Entries of the evaluation that are not usable sources (no or bad hash).
    pub refused: Vec<String>,
}

impl TarballReport {
    /// One line for the run's summary.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} sources: {} present, {} from the binary cache, {} from their URLs",
            self.sources, self.present, self.from_cache, self.from_urls
        );
        if self.placed_by_hand > 0 {
            s.push_str(&format!(", {} placed by hand", self.placed_by_hand));
        }
        s.push_str(&format!(" ({})", human_bytes(self.bytes)));
        if self.listed > 0 {
            s.push_str(&format!(", {} listed", self.listed));
        }
        s.push_str(&format!(
            ", {} missing (listed in {MISSING})",
            self.missing.len()
        ));
        if !self.refused.is_empty() {
            s.push_str(&format!(", {} entries not usable", self.refused.len()));
        }
        s
    }
}

/// Mirrors the sources of `job.release` into the tree; `--print-only` lines go to `out`.
pub async fn mirror_sources(
    job: &TarballJob<'_>,
    out: &mut (dyn Write + Send),
) -> Result<TarballReport> {
    let tree = Tree::of_mirror(job.dir);
    let manifest_file = job.release.join(MANIFEST);
    let mut report = TarballReport::default();
    let sources: Vec<Source> = match std::fs::read_to_string(&manifest_file) {
        Ok(text) => source::parse_manifest(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", manifest_file.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let nixexprs = job.release.join("nixexprs.tar.xz");
            if job.print_only && !nixexprs.is_file() {
                // Its NAR is listed for another downloader; the run after it lists the sources.
                tracing::warn!(
                    "{}: the channel tarball is not here yet, so its sources are not listed; \
                     a run after it is fetched lists them",
                    job.release.display()
                );
                return Ok(report);
            }
            let listed = find::list_sources(&nixexprs, job.tmpdir).await?;
            for r in &listed.refused {
                tracing::warn!("{}: source not usable: {r}", job.release.display());
            }
            report.refused = listed.refused;
            listed.sources
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", manifest_file.display()))
        }
    };
    report.sources = sources.len();
    if !job.print_only {
        tree.create()?;
        fsutil::remove_stale_temp_files(tree.root())?;
    }

    let mut wanted = Vec::new();
    for s in &sources {
        if tree.lookup(&s.hash).is_some() {
            report.present += 1;
        } else if job.print_only {
            if let Some(url) = s.fetchable_urls().next() {
                out.write_all(print_entry(job.print_format, &tree, s, url).as_bytes())
                    .context("cannot write to standard output")?;
                report.listed += 1;
            }
        } else {
            wanted.push(s);
        }
    }
    if job.print_only {
        return Ok(report);
    }

    let ctx = FetchContext {
        access: CacheAccess {
            upstream: job.upstream,
            local: job.local,
            print: None,
        },
        tree: &tree,
        tmpdir: job.tmpdir,
        // One sync of the file system below makes the new files durable before the manifest
        // names them, instead of an fsync per file.
        fsync: false,
    };
    // Twice the requests in flight: a source's hashing and storing overlaps another's download.
    let concurrency = 2 * job.upstream.fetcher().config().concurrency.max(1);
    let mut results = futures::stream::iter(wanted)
        .map(|s| {
            let ctx = &ctx;
            async move { (s, fetch::fetch_source(ctx, s).await) }
        })
        .buffer_unordered(concurrency);
    let mut missing: Vec<(Source, String)> = Vec::new();
    let mut fatal = None;
    while let Some((s, result)) = results.next().await {
        match result {
            Ok(Ok(got)) => {
                report.bytes += got.bytes;
                match got.origin {
                    Origin::Cache => report.from_cache += 1,
                    Origin::Url(url) => {
                        tracing::info!("{}: fetched from {url}", s.name);
                        report.from_urls += 1
                    }
                    Origin::PlacedByHand => report.placed_by_hand += 1,
                }
            }
            Ok(Err(why)) => {
                tracing::warn!("source {} ({}) cannot be had: {why}", s.name, s.hash);
                missing.push((s.clone(), why));
            }
            Err(e) => {
                fatal.get_or_insert(e);
            }
        }
    }
    drop(results);
    if let Some(e) = fatal {
        return Err(e.context(format!(
            "cannot mirror the sources of {}",
            job.release.display()
        )));
    }
    let stored = report.from_cache + report.from_urls + report.placed_by_hand;
    if job.fsync && stored > 0 {
        fsutil::sync_filesystem(tree.root())?;
    }
    missing.sort_by(|a, b| a.0.hash.cmp(&b.0.hash));
    // What is missing first: the manifest, once written, says the step is done.
    let missing_file = job.release.join(MISSING);
    if missing.is_empty() {
        match std::fs::remove_file(&missing_file) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(e).with_context(|| format!("cannot remove {}", missing_file.display()))
            }
        }
    } else {
        fsutil::write_if_changed(&missing_file, source::missing_text(&missing).as_bytes())?;
    }
    fsutil::write_if_changed(&manifest_file, source::manifest_text(&sources).as_bytes())?;
    report.missing = missing
        .into_iter()
        .map(|(s, why)| (format!("{} {}", s.hash, s.name), why))
        .collect();
    Ok(report)
}

/// The `--print-only` entry of source `s` at `url`.
fn print_entry(format: PrintFormat, tree: &Tree, s: &Source, url: &str) -> String {
    match format {
        PrintFormat::Plain => format!("{url},{}:{}\n", s.hash.algo, s.hash.nix32()),
        PrintFormat::Url => format!("{url}\n"),
        PrintFormat::Aria2c => {
            let mirror = tree.root().parent().unwrap_or(tree.root());
            let rel = tree
                .hand_path(&s.hash)
                .strip_prefix(mirror)
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            format!(
                "{url}\n  out={rel}\n  checksum={}={}\n",
                s.hash.algo.aria2c_name(),
                s.hash.hex()
            )
        }
    }
}

/// What [`collect`] deleted (or would delete).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TarballGcReport {
    /// Files deleted.
    pub files: usize,
    /// Links deleted.
    pub links: usize,
    /// Temporary files removed.
    pub temp_files: usize,
    /// Bytes freed.
    pub bytes: u64,
    /// Files kept.
    pub kept: usize,
}

/// Every release directory under `DIR/releases`, hidden and temporary names left out.
fn release_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for channel in fsutil::read_dir_sorted(&dir.join("releases"))? {
        if !channel.is_dir() || crate::gc::plainly_not_a_release(&channel) {
            continue;
        }
        for release in fsutil::read_dir_sorted(&channel)? {
            if release.is_dir() && !crate::gc::plainly_not_a_release(&release) {
                out.push(release);
            }
        }
    }
    Ok(out)
}

/// The sha512 keys of the files the releases under `DIR/releases` need. Refuses when a
/// release's manifest cannot be read, or names a source that is neither in the tree nor
/// listed in its `missing-tarballs`: a half-visible world never looks like garbage.
fn live_files(dir: &Path, tree: &Tree) -> Result<BTreeSet<String>> {
    let releases = release_dirs(dir)?;
    if releases.is_empty() {
        bail!(
            "no release under {}: refusing to collect source tarballs, since every file would \
             look like garbage",
            dir.join("releases").display()
        );
    }
    let mut live = BTreeSet::new();
    for release in releases {
        let manifest = release.join(MANIFEST);
        let text = match std::fs::read_to_string(&manifest) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                        "cannot read {}: refusing to collect source tarballs",
                        manifest.display()
                    )
                })
            }
        };
        let sources = source::parse_manifest(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}: refusing to collect source tarballs",
                manifest.display()
            )
        })?;
        let missing = match std::fs::read_to_string(release.join(MISSING)) {
            Ok(t) => source::parse_missing(&t),
            Err(_) => BTreeSet::new(),
        };
        for s in sources {
            match tree.lookup(&s.hash) {
                Some(key) => {
                    live.insert(key);
                }
                None if missing.contains(&s.hash) => {}
                None => bail!(
                    "{} needs {} ({}), which is neither in {} nor listed in its {MISSING}: \
                     refusing to collect source tarballs against an incomplete view",
                    release.display(),
                    s.hash,
                    s.name,
                    tree.root().display()
                ),
            }
        }
    }
    Ok(live)
}

/// Deletes the files of `DIR/tarballs` that no release under `DIR/releases` needs (with
/// `dry_run`, only lists them), then the links left without their file; prints each deleted
/// path to `out`. Deletes nothing when `live_files` refuses.
pub fn collect(dir: &Path, dry_run: bool, out: &mut dyn Write) -> Result<TarballGcReport> {
    let tree = Tree::of_mirror(dir);
    let mut report = TarballGcReport::default();
    if !tree.root().is_dir() {
        return Ok(report);
    }
    let live = live_files(dir, &tree)?;
    let verb = if dry_run { "would delete" } else { "deleted" };
    let remove = |p: &Path| -> Result<()> {
        if dry_run {
            return Ok(());
        }
        match std::fs::remove_file(p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e).with_context(|| format!("cannot delete {}", p.display())),
        }
    };
    // Files first (each link then still leads to its file or to nothing), then links.
    let mut gone = BTreeSet::new();
    for (path, name) in tree.entries(source::HashAlgo::Sha512)? {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if !meta.is_file() || !tree::is_sha512_hex(&name) {
            continue;
        }
        if live.contains(&name) {
            report.kept += 1;
            continue;
        }
        remove(&path)?;
        writeln!(out, "{verb} {}", path.display())?;
        report.files += 1;
        report.bytes += meta.len();
        gone.insert(name);
    }
    for algo in source::HashAlgo::ALL {
        for (path, name) in tree.entries(algo)? {
            if fsutil::is_temp_name(&name) {
                if !dry_run {
                    fsutil::remove_stale_temp_files(path.parent().unwrap_or(tree.root()))?;
                }
                report.temp_files += 1;
                continue;
            }
            let Ok(target) = std::fs::read_link(&path) else {
                continue;
            };
            let dead = match tree::link_key(&target) {
                Some(key) => gone.contains(&key) || !tree.file_path(&key).is_file(),
                None => !path.exists(),
            };
            if dead {
                remove(&path)?;
                writeln!(out, "{verb} {}", path.display())?;
                report.links += 1;
            }
        }
    }
    for name in fsutil::read_dir_sorted(tree.root())? {
        if name
            .file_name()
            .is_some_and(|n| fsutil::is_temp_name(&n.to_string_lossy()))
        {
            report.temp_files += 1;
        }
    }
    if !dry_run {
        fsutil::remove_stale_temp_files(tree.root())?;
    }
    Ok(report)
}

impl TarballGcReport {
    /// One line for the run's summary.
    pub fn summary(&self, dry_run: bool) -> String {
        format!(
            "{} {} source files and {} links, {} {} ({}); kept {} files",
            if dry_run { "would delete" } else { "deleted" },
            self.files,
            self.links,
            if dry_run { "would free" } else { "freed" },
            self.bytes,
            human_bytes(self.bytes),
            self.kept
        )
    }
}

/// A problem of the tree: the path and what is wrong.
pub type TreeProblem = (PathBuf, String);

/// Checks `DIR/tarballs`: every file in `sha512/` is named by its sha512 (hashed unless
/// `quick`), every link leads to such a file, no unchecked file sits at a hash's path, and
/// every complete release's manifest is readable and has each source in the tree or listed in
/// its `missing-tarballs`.
pub fn verify(dir: &Path, quick: bool) -> Result<Vec<TreeProblem>> {
    let tree = Tree::of_mirror(dir);
    let mut problems = Vec::new();
    if tree.root().is_dir() {
        for algo in source::HashAlgo::ALL {
            for (path, name) in tree.entries(algo)? {
                if fsutil::is_temp_name(&name) {
                    continue; // reported as a temporary file
                }
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.file_type().is_symlink() {
                    let ok = std::fs::read_link(&path)
                        .ok()
                        .and_then(|t| tree::link_key(&t))
                        .is_some_and(|key| tree.file_path(&key).is_file());
                    if !ok {
                        problems.push((path, "link does not lead to a file in sha512/".into()));
                    }
                } else if meta.is_file()
                    && algo == source::HashAlgo::Sha512
                    && tree::is_sha512_hex(&name)
                {
                    if !quick {
                        match tree::hash_file(&path) {
                            Ok(h) if source::to_hex(&h.sha512) == name => {}
                            Ok(h) => problems.push((
                                path,
                                format!(
                                    "its sha512 is {}, not its name",
                                    source::to_hex(&h.sha512)
                                ),
                            )),
                            Err(e) => problems.push((path, format!("cannot be read: {e}"))),
                        }
                    }
                } else {
                    problems.push((
                        path,
                        "is not a source file named by its sha512 nor a link to one".into(),
                    ));
                }
            }
        }
    }
    for release in release_dirs(dir)? {
        if !release.join(crate::release::COMPLETION_MARKER).is_file() {
            continue;
        }
        let manifest = release.join(MANIFEST);
        let Ok(text) = std::fs::read_to_string(&manifest) else {
            continue;
        };
        let sources = match source::parse_manifest(&text) {
            Ok(s) => s,
            Err(e) => {
                problems.push((manifest, e));
                continue;
            }
        };
        let missing = std::fs::read_to_string(release.join(MISSING))
            .map(|t| source::parse_missing(&t))
            .unwrap_or_default();
        for s in sources {
            if tree.lookup(&s.hash).is_none() && !missing.contains(&s.hash) {
                problems.push((
                    manifest.clone(),
                    format!(
                        "needs {} ({}), which is neither in {} nor listed in {MISSING}",
                        s.hash,
                        s.name,
                        tree.root().display()
                    ),
                ));
            }
        }
    }
    Ok(problems)
}

/// What IPFS publishing takes of the tree: per hash directory (`md5`, `sha1`, `sha256`,
/// `sha512`), each name a client may ask for and the file it resolves to. A link becomes the
/// file itself (the same bytes, so the same CID), since gateways do not follow symlinks;
/// temporary names, links that lead nowhere and files not named by their sha512 are left out.
pub fn published_files(
    dir: &Path,
) -> Result<std::collections::BTreeMap<String, std::collections::BTreeMap<String, PathBuf>>> {
    let tree = Tree::of_mirror(dir);
    let mut out = std::collections::BTreeMap::new();
    if !tree.root().is_dir() {
        return Ok(out);
    }
    for algo in source::HashAlgo::ALL {
        let mut files = std::collections::BTreeMap::new();
        for (path, name) in tree.entries(algo)? {
            if fsutil::is_temp_name(&name) || name.starts_with('.') {
                continue;
            }
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            let file = if meta.file_type().is_symlink() {
                match std::fs::read_link(&path)
                    .ok()
                    .and_then(|t| tree::link_key(&t))
                {
                    Some(key) => tree.file_path(&key),
                    None => continue,
                }
            } else if algo == source::HashAlgo::Sha512 && tree::is_sha512_hex(&name) {
                path.clone()
            } else {
                continue;
            };
            if file.is_file() {
                files.insert(name, file);
            }
        }
        if !files.is_empty() {
            out.insert(algo.name().to_string(), files);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishing_takes_every_name_as_the_file_itself() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::of_mirror(dir.path());
        tree.create().unwrap();
        let mut tmp = tree.temp_file().unwrap();
        std::io::Write::write_all(&mut tmp, b"bytes").unwrap();
        let hashes = tree::hash_reader(&b"bytes"[..]).unwrap();
        let key = tree.place(tmp, &hashes, false).unwrap();
        std::os::unix::fs::symlink("../sha512/nowhere", tree.root().join("md5/dangling")).unwrap();
        let listed = published_files(dir.path()).unwrap();
        let names: usize = listed.values().map(|m| m.len()).sum();
        assert_eq!(names, 6, "{listed:?}");
        assert!(listed
            .values()
            .flat_map(|m| m.values())
            .all(|f| *f == tree.file_path(&key)));
        assert!(!listed["md5"].contains_key("dangling"));
    }
}
