//! The mirror's invariants, checked: what `nixipfs verify` reports and what the crash tests
//! assert after every interrupted run.
//!
//! 1. Every narinfo in `binary_cache/` parses, names a safe URL, and its NAR is there with the
//!    narinfo's `FileSize` and `FileHash` ([`NarCheck`] says how far NARs are checked: by size
//!    only, by `FileHash`, or decompressed down to the signed `NarHash` and `NarSize`); with
//!    trusted keys, every narinfo carries a valid signature by one of them.
//! 2. Every channel link points at a release that has `git-revision`.
//! 3. A complete release has every file its `git-revision` promises (`src-url`,
//!    `binary-cache-url`, `store-paths`, `store-paths.xz`, `nixexprs.tar.xz`, `build-info.json`),
//!    and each `FILE.sha256` matches its file; the files of a release copied from a published
//!    channel match the hashes its `build-info.json` records (`published`).
//! 4. A release a channel points at has its whole closure in its `binary_cache/` view: every
//!    path of `store-paths` (less `missing-store-paths`) and every reference of every linked
//!    narinfo is linked, and every link resolves.
//! 5. No temporary file is left anywhere, and no link of a complete release's `binary_cache/`
//!    view dangles.
//!
//! Each problem is a [`Problem`]; [`repair`] removes what a problem says is broken, so that the
//! next run fetches or links it again.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rayon::prelude::*;

use crate::binary_cache::BINARY_CACHE_DIR;
use crate::compression::Compression;
use crate::fetch::{verify_file, Expected, ExpectedNar};
use crate::fsutil;
use crate::hash::Sha256Hash;
use crate::narinfo::{NarInfo, SignatureCheck};
use crate::signature::PublicKey;
use crate::storage::S3Store;
use crate::store_path::StorePath;

/// How far the NARs of the cache are checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NarCheck {
    /// By size only (`FileSize`).
    Size,
    /// By size and sha256 of the file (`FileSize`, `FileHash`).
    FileHash,
    /// Also decompressed, down to the NAR inside (`NarHash`, `NarSize`): the only check that
    /// a narinfo's signature vouches for.
    Full,
}

/// What [`verify_mirror_with`] checks beyond the structure of the mirror.
#[derive(Clone, Debug)]
pub struct VerifyChecks {
    /// How far NARs are checked.
    pub nars: NarCheck,
    /// Keys every narinfo must carry a valid signature by; empty: signatures are not checked.
    pub trusted_keys: Vec<PublicKey>,
}

/// Files a release with `git-revision` must have.
pub const RELEASE_FILES: &[&str] = &[
    "src-url",
    "binary-cache-url",
    "store-paths",
    "store-paths.xz",
    "nixexprs.tar.xz",
    "build-info.json",
];

/// What was checked and what is wrong.
#[derive(Debug, Default)]
pub struct VerifyReport {
    /// Narinfos checked.
    pub narinfos: usize,
    /// NARs checked.
    pub nars: usize,
    /// Releases checked.
    pub releases: usize,
    /// Channels checked.
    pub channels: usize,
    /// Every problem, one line each, naming the file (the lines of [`VerifyReport::found`]).
    pub problems: Vec<String>,
    /// Every problem, as found.
    pub found: Vec<Problem>,
}

/// One way the mirror breaks its invariants; displayed as one line naming the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A temporary file left behind by an interrupted run.
    TempFile { path: PathBuf },
    /// A problem of the source tarball tree or of a release's `tarballs-manifest`.
    Tarballs { path: PathBuf, problem: String },
    /// A narinfo that cannot be read or does not parse.
    NarInfoUnreadable { narinfo: PathBuf, error: String },
    /// A narinfo stored under the name of another store path.
    NarInfoMisnamed {
        narinfo: PathBuf,
        store_path: String,
        hash_part: String,
    },
    /// A narinfo whose URL leads outside the cache.
    UnsafeUrl { narinfo: PathBuf, error: String },
    /// A narinfo whose compression is unknown (checked with [`NarCheck::Full`] only).
    UnknownCompression { narinfo: PathBuf, error: String },
    /// A NAR that is not there; `narinfos` name it.
    NarMissing {
        nar: PathBuf,
        narinfos: Vec<PathBuf>,
    },
    /// A NAR that is there but is not a regular file.
    NarNotAFile {
        nar: PathBuf,
        narinfos: Vec<PathBuf>,
    },
    /// A NAR that fails its check against its narinfo.
    NarMismatch {
        nar: PathBuf,
        mismatch: String,
        narinfos: Vec<PathBuf>,
    },
    /// A NAR that cannot be read.
    NarUnreadable { nar: PathBuf, error: String },
    /// A narinfo whose signature by a trusted key does not verify.
    SignatureInvalid { narinfo: PathBuf, key_name: String },
    /// A narinfo without a signature by any of the trusted keys.
    NotSigned { narinfo: PathBuf, keys: Vec<String> },
    /// A channel link that points at a release without `git-revision`.
    ChannelIncomplete { link: PathBuf, release: PathBuf },
    /// A complete release that lacks one of [`RELEASE_FILES`].
    ReleaseLacksFile {
        release: PathBuf,
        file: &'static str,
    },
    /// A release's `FILE.sha256` that holds no sha256.
    ReleaseShaUnreadable { release: PathBuf, sha_file: PathBuf },
    /// A release's file that does not match its `FILE.sha256`.
    ReleaseFileMismatch {
        release: PathBuf,
        file: PathBuf,
        mismatch: String,
    },
    /// A release's file named by a `FILE.sha256` that cannot be read.
    ReleaseFileUnreadable {
        release: PathBuf,
        file: PathBuf,
        error: String,
    },
    /// A line of a release's `store-paths` that is not a store path.
    StorePathLine {
        release: PathBuf,
        line: String,
        error: String,
    },
    /// A path of a release's closure not linked into its view.
    ClosureLacks {
        release: PathBuf,
        store_path: String,
        link: PathBuf,
    },
    /// A narinfo of a release's view that does not parse.
    ViewNarInfoInvalid { link: PathBuf },
    /// A narinfo of a release's view whose URL leads outside the view.
    ViewUnsafeUrl { link: PathBuf, error: String },
    /// A NAR of a release's closure that cannot be reached from its view.
    ViewNarUnreachable {
        nar_link: PathBuf,
        store_path: String,
    },
    /// A NAR link of a release's view that leads outside the cache.
    ViewNarOutsideCache { nar_link: PathBuf, cache: PathBuf },
    /// A link of a complete release's view that leads nowhere.
    DanglingLink { link: PathBuf },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Tarballs { path, problem } => write!(f, "{}: {problem}", path.display()),
            Problem::TempFile { path } => {
                write!(f, "{}: temporary file left behind", path.display())
            }
            Problem::NarInfoUnreadable { narinfo, error }
            | Problem::UnsafeUrl { narinfo, error }
            | Problem::UnknownCompression { narinfo, error } => {
                write!(f, "{}: {error}", narinfo.display())
            }
            Problem::NarInfoMisnamed {
                narinfo,
                store_path,
                hash_part,
            } => write!(
                f,
                "{}: describes {store_path}, whose narinfo would be named {hash_part}.narinfo",
                narinfo.display()
            ),
            Problem::NarMissing { nar, narinfos } => write!(
                f,
                "{}: missing (named by {})",
                nar.display(),
                first(narinfos)
            ),
            Problem::NarNotAFile { nar, narinfos } => write!(
                f,
                "{}: not a regular file (named by {})",
                nar.display(),
                first(narinfos)
            ),
            Problem::NarMismatch {
                nar,
                mismatch,
                narinfos,
            } => write!(f, "{}: {mismatch} (per {})", nar.display(), first(narinfos)),
            Problem::NarUnreadable { nar, error } => {
                write!(f, "{}: cannot read: {error}", nar.display())
            }
            Problem::SignatureInvalid { narinfo, key_name } => write!(
                f,
                "{}: its signature by {key_name} does not verify (the signed fields were changed)",
                narinfo.display()
            ),
            Problem::NotSigned { narinfo, keys } => write!(
                f,
                "{}: not signed by a trusted key ({})",
                narinfo.display(),
                keys.join(", ")
            ),
            Problem::ChannelIncomplete { link, release } => write!(
                f,
                "{} points at {}, which is not a complete release (no git-revision)",
                link.display(),
                release.display()
            ),
            Problem::ReleaseLacksFile { release, file } => write!(
                f,
                "{}: complete (has git-revision) but lacks {file}",
                release.display()
            ),
            Problem::ReleaseShaUnreadable { sha_file, .. } => {
                write!(f, "{}: not a sha256 line", sha_file.display())
            }
            Problem::ReleaseFileMismatch { file, mismatch, .. } => {
                write!(f, "{}: {mismatch}", file.display())
            }
            Problem::ReleaseFileUnreadable { file, error, .. } => {
                write!(f, "{}: cannot read: {error}", file.display())
            }
            Problem::StorePathLine {
                release,
                line,
                error,
            } => write!(f, "{}/store-paths: {line:?}: {error}", release.display()),
            Problem::ClosureLacks {
                release,
                store_path,
                link,
            } => write!(
                f,
                "{}: the closure lacks {store_path} (no {})",
                release.display(),
                link.display()
            ),
            Problem::ViewNarInfoInvalid { link } => {
                write!(f, "{}: not a valid narinfo", link.display())
            }
            Problem::ViewUnsafeUrl { link, error } => write!(f, "{}: {error}", link.display()),
            Problem::ViewNarUnreachable {
                nar_link,
                store_path,
            } => write!(
                f,
                "{}: the NAR of {store_path} is not reachable from the release",
                nar_link.display()
            ),
            Problem::ViewNarOutsideCache { nar_link, cache } => write!(
                f,
                "{}: does not lead into {}",
                nar_link.display(),
                cache.display()
            ),
            Problem::DanglingLink { link } => {
                write!(f, "{}: dangling link", link.display())
            }
        }
    }
}

/// The first of `paths`, displayed (the narinfo a NAR problem names).
fn first(paths: &[PathBuf]) -> String {
    paths
        .first()
        .map(|p| p.display().to_string())
        .unwrap_or_default()
}

impl VerifyReport {
    /// Whether the mirror is sound.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks the mirror at `dir`. With `quick`, NARs are checked by size only, otherwise by
/// `FileHash`; signatures are not checked.
pub fn verify_mirror(dir: &Path, quick: bool) -> Result<VerifyReport> {
    let checks = VerifyChecks {
        nars: if quick {
            NarCheck::Size
        } else {
            NarCheck::FileHash
        },
        trusted_keys: Vec::new(),
    };
    verify_mirror_with(dir, &checks)
}

/// Checks the mirror at `dir` as `checks` says.
pub fn verify_mirror_with(dir: &Path, checks: &VerifyChecks) -> Result<VerifyReport> {
    let dir = fsutil::absolute(dir)?;
    let mut report = VerifyReport::default();
    check_temp_files(&dir, &mut report)?;
    check_cache(&dir.join(BINARY_CACHE_DIR), checks, &mut report)?;
    for (path, problem) in crate::tarballs::verify(&dir, checks.nars == NarCheck::Size)? {
        report.found.push(Problem::Tarballs { path, problem });
    }
    for release in release_dirs(&dir)? {
        if release.join("git-revision").is_file() {
            report.releases += 1;
            check_release_files(&release, &mut report);
            check_published_files(&release, &mut report);
            check_dangling_links(&release.join(BINARY_CACHE_DIR), &mut report)?;
        }
    }
    for link in fsutil::read_dir_sorted(&dir.join("channels"))? {
        let Some(release) = channel_target(&dir, &link)? else {
            continue;
        };
        report.channels += 1;
        if !release.join("git-revision").is_file() {
            report
                .found
                .push(Problem::ChannelIncomplete { link, release });
            continue;
        }
        check_release_closure(&release, &dir.join(BINARY_CACHE_DIR), &mut report)?;
    }
    report.problems = report.found.iter().map(Problem::to_string).collect();
    Ok(report)
}

/// Every release directory, `DIR/releases/CHANNEL/NIXNAME`.
fn release_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut releases = Vec::new();
    for channel in fsutil::read_dir_sorted(&dir.join("releases"))? {
        if channel.is_dir() {
            for release in fsutil::read_dir_sorted(&channel)? {
                if release.is_dir() {
                    releases.push(release);
                }
            }
        }
    }
    Ok(releases)
}

/// The release the channel link `link` points at (absolute), or `None` if it is not a link.
fn channel_target(dir: &Path, link: &Path) -> Result<Option<PathBuf>> {
    let Ok(target) = fs::read_link(link) else {
        return Ok(None);
    };
    Ok(Some(fsutil::absolute(
        &link.parent().unwrap_or(dir).join(&target),
    )?))
}

fn check_temp_files(dir: &Path, report: &mut VerifyReport) -> Result<()> {
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if fsutil::is_temp_name(&entry.file_name().to_string_lossy()) {
            report.found.push(Problem::TempFile {
                path: entry.path().to_path_buf(),
            });
        }
    }
    Ok(())
}

/// Reports every link under the view `view` that leads nowhere.
fn check_dangling_links(view: &Path, report: &mut VerifyReport) -> Result<()> {
    if !view.is_dir() {
        return Ok(());
    }
    for entry in walkdir::WalkDir::new(view).min_depth(1).sort_by_file_name() {
        let entry = entry.with_context(|| format!("cannot list {}", view.display()))?;
        if entry.path_is_symlink() && fs::metadata(entry.path()).is_err() {
            report.found.push(Problem::DanglingLink {
                link: entry.path().to_path_buf(),
            });
        }
    }
    Ok(())
}

/// A NAR to check: its path, what its first narinfo expects, and every narinfo naming it.
struct NarToCheck {
    nar: PathBuf,
    expected: Expected,
    narinfos: Vec<PathBuf>,
}

/// Checks every narinfo and its NAR.
fn check_cache(cache: &Path, checks: &VerifyChecks, report: &mut VerifyReport) -> Result<()> {
    let mut nars: Vec<NarToCheck> = Vec::new();
    let mut signed: Vec<(NarInfo, PathBuf)> = Vec::new();
    let mut seen_nars: BTreeMap<PathBuf, usize> = BTreeMap::new();
    for path in fsutil::read_dir_sorted(cache)? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(hash) = name.strip_suffix(".narinfo") else {
            continue;
        };
        report.narinfos += 1;
        let parsed = fs::read_to_string(&path)
            .map_err(anyhow::Error::from)
            .and_then(|t| NarInfo::parse(&t).map_err(anyhow::Error::from));
        let Some(info) = read_narinfo(&mut report.found, &path, hash, parsed) else {
            continue;
        };
        match fsutil::safe_join(cache, &info.url) {
            Err(e) => report.found.push(Problem::UnsafeUrl {
                narinfo: path.clone(),
                error: e.to_string(),
            }),
            Ok(nar) => {
                if let Some(&i) = seen_nars.get(&nar) {
                    nars[i].narinfos.push(path.clone());
                } else {
                    let (expected, error) = expected_nar(&info, checks.nars);
                    if let Some(error) = error {
                        report.found.push(Problem::UnknownCompression {
                            narinfo: path.clone(),
                            error,
                        });
                    }
                    seen_nars.insert(nar.clone(), nars.len());
                    nars.push(NarToCheck {
                        nar,
                        expected,
                        narinfos: vec![path.clone()],
                    });
                }
            }
        }
        if !checks.trusted_keys.is_empty() {
            signed.push((info, path));
        }
    }
    check_signatures(&signed, &checks.trusted_keys, report);
    report.nars = nars.len();
    // Hash the NARs on every core, each NAR a task of its own (their sizes differ widely).
    let mut problems: Vec<Problem> = nars
        .par_iter()
        .with_max_len(1)
        .filter_map(nar_problem)
        .collect();
    problems.sort_by_cached_key(Problem::to_string);
    report.found.extend(problems);
    Ok(())
}

/// Reports every narinfo of `signed` without a valid signature by one of `keys`.
fn check_signatures(signed: &[(NarInfo, PathBuf)], keys: &[PublicKey], report: &mut VerifyReport) {
    let infos: Vec<&NarInfo> = signed.iter().map(|(info, _)| info).collect();
    let checks = NarInfo::verify_signatures_batch(&infos, keys);
    for ((_, file), check) in signed.iter().zip(checks) {
        match check {
            SignatureCheck::Valid { .. } => {}
            SignatureCheck::Invalid { key_name } => report.found.push(Problem::SignatureInvalid {
                narinfo: file.clone(),
                key_name: key_name.to_string(),
            }),
            SignatureCheck::NoTrustedSignature => report.found.push(Problem::NotSigned {
                narinfo: file.clone(),
                keys: keys.iter().map(|k| k.name().to_string()).collect(),
            }),
        }
    }
}

/// What is wrong with a NAR, if anything.
fn nar_problem(check: &NarToCheck) -> Option<Problem> {
    let nar = check.nar.clone();
    let narinfos = check.narinfos.clone();
    match fs::symlink_metadata(&check.nar) {
        Err(_) => Some(Problem::NarMissing { nar, narinfos }),
        Ok(m) if !m.is_file() => Some(Problem::NarNotAFile { nar, narinfos }),
        Ok(_) => match verify_file(&check.nar, check.expected) {
            Ok(Ok(())) => None,
            Ok(Err(mismatch)) => Some(Problem::NarMismatch {
                nar,
                mismatch: mismatch.to_string(),
                narinfos,
            }),
            Err(e) => Some(Problem::NarUnreadable {
                nar,
                error: e.to_string(),
            }),
        },
    }
}

fn check_release_files(release: &Path, report: &mut VerifyReport) {
    for f in RELEASE_FILES {
        if !release.join(f).is_file() {
            report.found.push(Problem::ReleaseLacksFile {
                release: release.to_path_buf(),
                file: f,
            });
        }
    }
    let Ok(entries) = fsutil::read_dir_sorted(release) else {
        return;
    };
    for sha_file in entries {
        let Some(name) = sha_file.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(target) = name.strip_suffix(".sha256") else {
            continue;
        };
        let line = fs::read_to_string(&sha_file).unwrap_or_default();
        let hex = line.split_whitespace().next().unwrap_or("");
        let Ok(hash) = Sha256Hash::from_hex(hex) else {
            report.found.push(Problem::ReleaseShaUnreadable {
                release: release.to_path_buf(),
                sha_file,
            });
            continue;
        };
        let file = release.join(target);
        match verify_file(
            &file,
            Expected {
                size: None,
                sha256: Some(hash),
                nar: None,
            },
        ) {
            Ok(Ok(())) => {}
            Ok(Err(m)) => report.found.push(Problem::ReleaseFileMismatch {
                release: release.to_path_buf(),
                file,
                mismatch: m.to_string(),
            }),
            Err(e) => report.found.push(Problem::ReleaseFileUnreadable {
                release: release.to_path_buf(),
                file,
                error: e.to_string(),
            }),
        }
    }
}

/// A published release's files against the hashes its publisher gave
/// (`build-info.json`'s `published`).
fn check_published_files(release: &Path, report: &mut VerifyReport) {
    let Ok(info) = crate::release::BuildInfo::read(release) else {
        return;
    };
    for (name, hex) in &info.published {
        let file = match fsutil::safe_join(release, name) {
            Ok(f) => f,
            Err(e) => {
                report.found.push(Problem::ReleaseFileUnreadable {
                    release: release.to_path_buf(),
                    file: release.join(crate::release::BUILD_INFO),
                    error: format!("names a published file {name:?} that is not safe: {e}"),
                });
                continue;
            }
        };
        let checked = Sha256Hash::from_hex(hex)
            .map_err(|e| std::io::Error::other(format!("published sha256 {hex:?}: {e}")))
            .and_then(|hash| {
                let expected = Expected {
                    size: None,
                    sha256: Some(hash),
                    nar: None,
                };
                verify_file(&file, expected)
            });
        match checked {
            Ok(Ok(())) => {}
            Ok(Err(m)) => report.found.push(Problem::ReleaseFileMismatch {
                release: release.to_path_buf(),
                file,
                mismatch: format!("{m} (its published sha256)"),
            }),
            Err(e) => report.found.push(Problem::ReleaseFileUnreadable {
                release: release.to_path_buf(),
                file,
                error: e.to_string(),
            }),
        }
    }
}

fn check_release_closure(release: &Path, cache: &Path, report: &mut VerifyReport) -> Result<()> {
    let view = release.join(BINARY_CACHE_DIR);
    let read_paths = |name: &str| -> BTreeSet<String> {
        fs::read_to_string(release.join(name))
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    };
    let missing = read_paths("missing-store-paths");
    let mut wanted: Vec<StorePath> = Vec::new();
    for p in read_paths("store-paths") {
        if missing.contains(&p) {
            continue;
        }
        match StorePath::from_absolute_path(&p) {
            Ok(sp) => wanted.push(sp),
            Err(e) => report.found.push(Problem::StorePathLine {
                release: release.to_path_buf(),
                line: p,
                error: e.to_string(),
            }),
        }
    }
    let mut seen = BTreeSet::new();
    while let Some(sp) = wanted.pop() {
        if !seen.insert(sp.clone()) {
            continue;
        }
        let link = view.join(format!("{}.narinfo", sp.hash_part()));
        let text = match fs::read_to_string(&link) {
            Ok(t) => t,
            Err(_) => {
                if !missing.contains(&sp.to_absolute_path()) {
                    report.found.push(Problem::ClosureLacks {
                        release: release.to_path_buf(),
                        store_path: sp.to_string(),
                        link,
                    });
                }
                continue;
            }
        };
        let Ok(info) = NarInfo::parse(&text) else {
            report.found.push(Problem::ViewNarInfoInvalid { link });
            continue;
        };
        let nar_link = match fsutil::safe_join(&view, &info.url) {
            Ok(p) => p,
            Err(e) => {
                report.found.push(Problem::ViewUnsafeUrl {
                    link,
                    error: e.to_string(),
                });
                continue;
            }
        };
        match fs::metadata(&nar_link) {
            Ok(m) if m.is_file() => {
                let target = fsutil::absolute(
                    &nar_link
                        .parent()
                        .unwrap_or(&view)
                        .join(fs::read_link(&nar_link).unwrap_or_default()),
                )?;
                if !target.starts_with(cache) {
                    report.found.push(Problem::ViewNarOutsideCache {
                        nar_link,
                        cache: cache.to_path_buf(),
                    });
                }
            }
            _ => report.found.push(Problem::ViewNarUnreachable {
                nar_link,
                store_path: sp.to_string(),
            }),
        }
        for r in &info.references {
            if !seen.contains(r) {
                wanted.push(r.clone());
            }
        }
    }
    Ok(())
}

/// What [`repair`] did about one problem.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Repair {
    /// `path` was removed, so that the next run fetches or links it again.
    Removed { path: PathBuf, reason: String },
    /// The problem cannot be repaired by removing a file; nothing was changed for it.
    LeftAlone { problem: String, why: String },
}

impl fmt::Display for Repair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Repair::Removed { path, reason } => {
                write!(f, "removed {}: {reason}", path.display())
            }
            Repair::LeftAlone { problem, why } => write!(f, "left alone: {problem} ({why})"),
        }
    }
}

/// Removes what `problems` (found in the mirror at `dir`) say is broken, so that the next
/// `update-binary-cache` or `release-nixos` run fetches or links it again: a NAR failing its
/// check and every narinfo naming it (the narinfos first, so that no narinfo is left without
/// its NAR), a narinfo that does not parse, has an unsafe URL, lacks its NAR or a valid
/// signature, the `git-revision` of a release that lacks a file or fails a `.sha256` (never of
/// a release a channel points at), dangling links of a release's view and temporary files.
/// Every other problem is left alone. The caller holds the mirror lock.
pub fn repair(dir: &Path, problems: &[Problem]) -> Result<Vec<Repair>> {
    let dir = fsutil::absolute(dir)?;
    let mut pointed_at = BTreeSet::new();
    for link in fsutil::read_dir_sorted(&dir.join("channels"))? {
        if let Some(release) = channel_target(&dir, &link)? {
            pointed_at.insert(release);
        }
    }
    let mut repairs = Repairs {
        done: Vec::new(),
        removed: BTreeSet::new(),
    };
    for problem in problems {
        match problem {
            Problem::TempFile { path } => {
                repairs.remove(path, "temporary file left behind".to_string())?
            }
            Problem::NarInfoUnreadable { narinfo, .. }
            | Problem::UnsafeUrl { narinfo, .. }
            | Problem::SignatureInvalid { narinfo, .. }
            | Problem::NotSigned { narinfo, .. } => {
                repairs.remove(narinfo, problem_detail(problem, narinfo))?
            }
            Problem::NarMissing { nar, narinfos } => {
                for narinfo in narinfos {
                    repairs.remove(narinfo, format!("its NAR {} is missing", nar.display()))?;
                }
            }
            Problem::NarMismatch {
                nar,
                mismatch,
                narinfos,
            } => {
                for narinfo in narinfos {
                    repairs.remove(
                        narinfo,
                        format!("its NAR {} fails its check", nar.display()),
                    )?;
                }
                repairs.remove(nar, mismatch.clone())?;
            }
            Problem::ReleaseLacksFile { release, .. }
            | Problem::ReleaseShaUnreadable { release, .. }
            | Problem::ReleaseFileMismatch { release, .. }
            | Problem::ReleaseFileUnreadable { release, .. } => {
                if pointed_at.contains(release) {
                    repairs.leave(
                        problem,
                        "a channel points at this release; it is not touched",
                    );
                } else {
                    repairs.remove(
                        &release.join("git-revision"),
                        format!("the release is incomplete: {problem}"),
                    )?;
                }
            }
            Problem::DanglingLink { link } => repairs.remove(link, "dangling link".to_string())?,
            Problem::ClosureLacks { .. } | Problem::ViewNarUnreachable { .. } => {
                repairs.leave(problem, "nothing to remove; the next run links it")
            }
            Problem::NarInfoMisnamed { .. }
            | Problem::Tarballs { .. }
            | Problem::UnknownCompression { .. }
            | Problem::NarNotAFile { .. }
            | Problem::NarUnreadable { .. }
            | Problem::ChannelIncomplete { .. }
            | Problem::StorePathLine { .. }
            | Problem::ViewNarInfoInvalid { .. }
            | Problem::ViewUnsafeUrl { .. }
            | Problem::ViewNarOutsideCache { .. } => {
                repairs.leave(problem, "removing a file does not repair it")
            }
        }
    }
    Ok(repairs.done)
}

/// A problem's line less the leading `PATH: `.
fn problem_detail(problem: &Problem, path: &Path) -> String {
    let line = problem.to_string();
    let prefix = format!("{}: ", path.display());
    line.strip_prefix(&prefix).unwrap_or(&line).to_string()
}

/// The repairs done so far, and the paths removed (each is removed once).
struct Repairs {
    done: Vec<Repair>,
    removed: BTreeSet<PathBuf>,
}

impl Repairs {
    /// Removes the file, link or (temporary) directory `path` unless it is gone already.
    fn remove(&mut self, path: &Path, reason: String) -> Result<()> {
        if !self.removed.insert(path.to_path_buf()) {
            return Ok(());
        }
        let result = match fs::symlink_metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Ok(m) if m.is_dir() => fs::remove_dir_all(path),
            _ => fs::remove_file(path),
        };
        result.with_context(|| format!("cannot remove {}", path.display()))?;
        self.done.push(Repair::Removed {
            path: path.to_path_buf(),
            reason,
        });
        Ok(())
    }

    fn leave(&mut self, problem: &Problem, why: &str) {
        self.done.push(Repair::LeftAlone {
            problem: problem.to_string(),
            why: why.to_string(),
        });
    }
}

/// NAR objects read back at once by [`verify_bucket`].
const BUCKET_READS: usize = 4;

/// Checks the binary cache in a bucket (`cache` is `PREFIX/binary_cache`) as
/// [`verify_mirror_with`] checks a directory's (point 1 of the module documentation): every
/// narinfo object parses, is named for its store path, names a safe URL and, with keys, carries
/// a valid signature; every NAR object it names is listed with its `FileSize` and, unless
/// `checks.nars` is [`NarCheck::Size`], is read back into a scratch file under `TMPDIR` and
/// checked like a file on disk. Objects are named by their `s3://` URLs. What is there comes
/// from one listing.
pub async fn verify_bucket(cache: &S3Store, checks: &VerifyChecks) -> Result<VerifyReport> {
    use futures::StreamExt;
    let listing = cache.list().await?;
    let mut report = VerifyReport::default();
    let mut nars: Vec<(String, NarToCheck)> = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut signed: Vec<(NarInfo, PathBuf)> = Vec::new();
    let names: BTreeSet<&String> = listing.keys().filter(|k| !k.contains('/')).collect();
    for key in names {
        let Some(hash) = key.strip_suffix(".narinfo") else {
            continue;
        };
        report.narinfos += 1;
        let name = PathBuf::from(cache.url_of(key));
        let parsed = cache.get(key).await.and_then(|b| {
            let b = b.context("listed, but gone when read")?;
            let text = String::from_utf8(b.to_vec()).context("not UTF-8")?;
            NarInfo::parse(&text).map_err(anyhow::Error::from)
        });
        let Some(info) = read_narinfo(&mut report.found, &name, hash, parsed) else {
            continue;
        };
        if let Err(e) = fsutil::check_relative_path(&info.url) {
            report.found.push(Problem::UnsafeUrl {
                narinfo: name.clone(),
                error: e.to_string(),
            });
        } else if let Some(&i) = seen.get(&info.url) {
            nars[i].1.narinfos.push(name.clone());
        } else {
            let (expected, error) = expected_nar(&info, checks.nars);
            if let Some(error) = error {
                report.found.push(Problem::UnknownCompression {
                    narinfo: name.clone(),
                    error,
                });
            }
            seen.insert(info.url.clone(), nars.len());
            nars.push((
                info.url.clone(),
                NarToCheck {
                    nar: PathBuf::from(cache.url_of(&info.url)),
                    expected,
                    narinfos: vec![name.clone()],
                },
            ));
        }
        if !checks.trusted_keys.is_empty() {
            signed.push((info, name));
        }
    }
    check_signatures(&signed, &checks.trusted_keys, &mut report);
    report.nars = nars.len();
    let scratch = tempfile::Builder::new()
        .prefix("nixipfs-verify-")
        .tempdir()
        .context("cannot create a scratch directory")?;
    let listing = &listing;
    let scratch_dir = scratch.path();
    let mut problems: Vec<Problem> = futures::stream::iter(nars.into_iter().enumerate())
        .map(|(i, (rel, check))| async move {
            let size = listing.get(&rel).copied();
            let (nar, narinfos) = (check.nar.clone(), check.narinfos.clone());
            match (size, check.expected.size) {
                (None, _) => return Some(Problem::NarMissing { nar, narinfos }),
                (Some(got), Some(want)) if got != want => {
                    return Some(Problem::NarMismatch {
                        nar,
                        mismatch: format!("{got} bytes, FileSize says {want}"),
                        narinfos,
                    })
                }
                _ if check.expected.sha256.is_none() && check.expected.nar.is_none() => {
                    return None
                }
                _ => {}
            }
            let file = scratch_dir.join(format!("nar-{i}"));
            let _remove = fsutil::RemoveOnDrop(file.clone());
            if let Err(e) = cache.download_file(&rel, &file).await {
                return Some(Problem::NarUnreadable {
                    nar,
                    error: format!("{e:#}"),
                });
            }
            let expected = check.expected;
            let checked = tokio::task::spawn_blocking(move || verify_file(&file, expected)).await;
            match checked {
                Ok(Ok(Ok(()))) => None,
                Ok(Ok(Err(mismatch))) => Some(Problem::NarMismatch {
                    nar,
                    mismatch: mismatch.to_string(),
                    narinfos,
                }),
                Ok(Err(e)) => Some(Problem::NarUnreadable {
                    nar,
                    error: e.to_string(),
                }),
                Err(e) => Some(Problem::NarUnreadable {
                    nar,
                    error: e.to_string(),
                }),
            }
        })
        .buffer_unordered(BUCKET_READS)
        .filter_map(|p| async move { p })
        .collect()
        .await;
    problems.sort_by_cached_key(Problem::to_string);
    report.found.extend(problems);
    report.problems = report.found.iter().map(Problem::to_string).collect();
    Ok(report)
}

/// The narinfo `narinfo` (named by `hash`) as read and parsed into `parsed`, or `None` when it
/// could not be; a narinfo that cannot be read or describes another path is a problem.
fn read_narinfo(
    found: &mut Vec<Problem>,
    narinfo: &Path,
    hash: &str,
    parsed: Result<NarInfo>,
) -> Option<NarInfo> {
    let info = match parsed {
        Ok(i) => i,
        Err(e) => {
            found.push(Problem::NarInfoUnreadable {
                narinfo: narinfo.to_path_buf(),
                error: format!("{e:#}"),
            });
            return None;
        }
    };
    if info.hash_part() != hash {
        found.push(Problem::NarInfoMisnamed {
            narinfo: narinfo.to_path_buf(),
            store_path: info.store_path.to_string(),
            hash_part: info.hash_part().to_string(),
        });
    }
    Some(info)
}

/// What the NAR of `info` must match under `check`, and, under [`NarCheck::Full`], the error of
/// a compression that cannot be decoded (the file itself is still checked then).
fn expected_nar(info: &NarInfo, check: NarCheck) -> (Expected, Option<String>) {
    let (nar, error) = match (check, Compression::from_narinfo(&info.compression)) {
        (NarCheck::Full, Ok(compression)) => (
            Some(ExpectedNar {
                compression,
                hash: info.nar_hash,
                size: info.nar_size,
            }),
            None,
        ),
        (NarCheck::Full, Err(e)) => (None, Some(e.to_string())),
        _ => (None, None),
    };
    let expected = Expected {
        size: info.file_size,
        sha256: match check {
            NarCheck::Size => None,
            _ => info.file_hash,
        },
        nar,
    };
    (expected, error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, b"x").unwrap();
    }

    #[test]
    fn problems_read_as_one_line_naming_the_file() {
        let narinfos = vec![PathBuf::from("/m/binary_cache/a.narinfo")];
        assert_eq!(
            Problem::NarMissing {
                nar: PathBuf::from("/m/binary_cache/nar/x.nar.xz"),
                narinfos,
            }
            .to_string(),
            "/m/binary_cache/nar/x.nar.xz: missing (named by /m/binary_cache/a.narinfo)"
        );
        assert_eq!(
            Problem::NotSigned {
                narinfo: PathBuf::from("/m/binary_cache/a.narinfo"),
                keys: vec!["k1".into(), "k2".into()],
            }
            .to_string(),
            "/m/binary_cache/a.narinfo: not signed by a trusted key (k1, k2)"
        );
    }

    #[test]
    fn repair_removes_narinfos_before_their_nar_and_spares_a_release_a_channel_points_at() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = fsutil::absolute(tmp.path()).unwrap();
        let cache = dir.join(BINARY_CACHE_DIR);
        let (a, b, nar) = (
            cache.join("a.narinfo"),
            cache.join("b.narinfo"),
            cache.join("nar/x.nar.xz"),
        );
        let pointed = dir.join("releases/c/c-1");
        let other = dir.join("releases/c/c-2");
        for f in [&a, &b, &nar] {
            touch(f);
        }
        touch(&pointed.join("git-revision"));
        touch(&other.join("git-revision"));
        fs::create_dir_all(dir.join("channels")).unwrap();
        std::os::unix::fs::symlink("../releases/c/c-1", dir.join("channels/c")).unwrap();
        let problems = vec![
            Problem::NarMismatch {
                nar: nar.clone(),
                mismatch: "got size 2, expected 1".into(),
                narinfos: vec![a.clone(), b.clone()],
            },
            Problem::ReleaseLacksFile {
                release: pointed.clone(),
                file: "src-url",
            },
            Problem::ReleaseLacksFile {
                release: other.clone(),
                file: "src-url",
            },
            Problem::ReleaseLacksFile {
                release: other.clone(),
                file: "store-paths",
            },
        ];
        let done = repair(&dir, &problems).unwrap();
        let removed: Vec<&Path> = done
            .iter()
            .filter_map(|r| match r {
                Repair::Removed { path, .. } => Some(path.as_path()),
                Repair::LeftAlone { .. } => None,
            })
            .collect();
        let marker = other.join("git-revision");
        assert_eq!(
            removed,
            vec![a.as_path(), b.as_path(), nar.as_path(), marker.as_path()]
        );
        assert!(pointed.join("git-revision").is_file());
        assert!(done.iter().any(|r| matches!(r, Repair::LeftAlone { .. })));
        for p in removed {
            assert!(fs::symlink_metadata(p).is_err());
        }
    }
}
