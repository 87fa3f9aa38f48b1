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
//!    and each `FILE.sha256` matches its file.
//! 4. A release a channel points at has its whole closure in its `binary_cache/` view: every
//!    path of `store-paths` (less `missing-store-paths`) and every reference of every linked
//!    narinfo is linked, and every link resolves.
//! 5. No temporary file is left anywhere.

use std::collections::BTreeSet;
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
    /// Every problem, one line each, naming the file.
    pub problems: Vec<String>,
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
    let releases_dir = dir.join("releases");
    let mut releases = Vec::new();
    for channel in fsutil::read_dir_sorted(&releases_dir)? {
        if channel.is_dir() {
            for release in fsutil::read_dir_sorted(&channel)? {
                if release.is_dir() {
                    releases.push(release);
                }
            }
        }
    }
    for release in &releases {
        if release.join("git-revision").is_file() {
            report.releases += 1;
            check_release_files(release, &mut report);
        }
    }
    for link in fsutil::read_dir_sorted(&dir.join("channels"))? {
        let Ok(target) = fs::read_link(&link) else {
            continue;
        };
        report.channels += 1;
        let release = fsutil::absolute(&link.parent().unwrap_or(&dir).join(&target))?;
        if !release.join("git-revision").is_file() {
            report.problems.push(format!(
                "{} points at {}, which is not a complete release (no git-revision)",
                link.display(),
                release.display()
            ));
            continue;
        }
        check_release_closure(&release, &dir.join(BINARY_CACHE_DIR), &mut report)?;
    }
    Ok(report)
}

fn check_temp_files(dir: &Path, report: &mut VerifyReport) -> Result<()> {
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if fsutil::is_temp_name(&entry.file_name().to_string_lossy()) {
            report.problems.push(format!(
                "{}: temporary file left behind",
                entry.path().display()
            ));
        }
    }
    Ok(())
}

/// Checks every narinfo and its NAR.
fn check_cache(cache: &Path, checks: &VerifyChecks, report: &mut VerifyReport) -> Result<()> {
    let mut nars: Vec<(PathBuf, Expected, String)> = Vec::new();
    let mut signed: Vec<(NarInfo, PathBuf)> = Vec::new();
    let mut seen_nars = BTreeSet::new();
    for path in fsutil::read_dir_sorted(cache)? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(hash) = name.strip_suffix(".narinfo") else {
            continue;
        };
        report.narinfos += 1;
        let info = match fs::read_to_string(&path)
            .map_err(anyhow::Error::from)
            .and_then(|t| NarInfo::parse(&t).map_err(anyhow::Error::from))
        {
            Ok(i) => i,
            Err(e) => {
                report.problems.push(format!("{}: {e:#}", path.display()));
                continue;
            }
        };
        if info.hash_part() != hash {
            report.problems.push(format!(
                "{}: describes {}, whose narinfo would be named {}.narinfo",
                path.display(),
                info.store_path,
                info.hash_part()
            ));
        }
        match fsutil::safe_join(cache, &info.url) {
            Err(e) => report.problems.push(format!("{}: {e}", path.display())),
            Ok(nar) => {
                if seen_nars.insert(nar.clone()) {
                    let full = match checks.nars {
                        NarCheck::Full => match Compression::from_narinfo(&info.compression) {
                            Ok(compression) => Some(ExpectedNar {
                                compression,
                                hash: info.nar_hash,
                                size: info.nar_size,
                            }),
                            Err(e) => {
                                report.problems.push(format!("{}: {e}", path.display()));
                                None
                            }
                        },
                        _ => None,
                    };
                    let expected = Expected {
                        size: info.file_size,
                        sha256: match checks.nars {
                            NarCheck::Size => None,
                            _ => info.file_hash,
                        },
                        nar: full,
                    };
                    nars.push((nar, expected, path.display().to_string()));
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
    let mut problems: Vec<String> = nars
        .par_iter()
        .with_max_len(1)
        .filter_map(|(nar, expected, narinfo)| nar_problem(nar, *expected, narinfo))
        .collect();
    problems.sort();
    report.problems.extend(problems);
    Ok(())
}

/// Reports every narinfo of `signed` without a valid signature by one of `keys`.
fn check_signatures(signed: &[(NarInfo, PathBuf)], keys: &[PublicKey], report: &mut VerifyReport) {
    let infos: Vec<&NarInfo> = signed.iter().map(|(info, _)| info).collect();
    let checks = NarInfo::verify_signatures_batch(&infos, keys);
    for ((_, file), check) in signed.iter().zip(checks) {
        match check {
            SignatureCheck::Valid { .. } => {}
            SignatureCheck::Invalid { key_name } => report.problems.push(format!(
                "{}: its signature by {key_name} does not verify (the signed fields were changed)",
                file.display()
            )),
            SignatureCheck::NoTrustedSignature => {
                let names: Vec<&str> = keys.iter().map(|k| k.name()).collect();
                report.problems.push(format!(
                    "{}: not signed by a trusted key ({})",
                    file.display(),
                    names.join(", ")
                ))
            }
        }
    }
}

/// What is wrong with the NAR `nar` that `narinfo` describes as `expected`, if anything.
fn nar_problem(nar: &Path, expected: Expected, narinfo: &str) -> Option<String> {
    match fs::symlink_metadata(nar) {
        Err(_) => Some(format!("{}: missing (named by {narinfo})", nar.display())),
        Ok(m) if !m.is_file() => Some(format!(
            "{}: not a regular file (named by {narinfo})",
            nar.display()
        )),
        Ok(_) => match verify_file(nar, expected) {
            Ok(Ok(())) => None,
            Ok(Err(mismatch)) => Some(format!("{}: {mismatch} (per {narinfo})", nar.display())),
            Err(e) => Some(format!("{}: cannot read: {e}", nar.display())),
        },
    }
}

fn check_release_files(release: &Path, report: &mut VerifyReport) {
    for f in RELEASE_FILES {
        if !release.join(f).is_file() {
            report.problems.push(format!(
                "{}: complete (has git-revision) but lacks {f}",
                release.display()
            ));
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
            report
                .problems
                .push(format!("{}: not a sha256 line", sha_file.display()));
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
            Ok(Err(m)) => report.problems.push(format!("{}: {m}", file.display())),
            Err(e) => report
                .problems
                .push(format!("{}: cannot read: {e}", file.display())),
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
            Err(e) => report
                .problems
                .push(format!("{}/store-paths: {p:?}: {e}", release.display())),
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
                    report.problems.push(format!(
                        "{}: the closure lacks {sp} (no {})",
                        release.display(),
                        link.display()
                    ));
                }
                continue;
            }
        };
        let Ok(info) = NarInfo::parse(&text) else {
            report
                .problems
                .push(format!("{}: not a valid narinfo", link.display()));
            continue;
        };
        let nar_link = match fsutil::safe_join(&view, &info.url) {
            Ok(p) => p,
            Err(e) => {
                report.problems.push(format!("{}: {e}", link.display()));
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
                    report.problems.push(format!(
                        "{}: does not lead into {}",
                        nar_link.display(),
                        cache.display()
                    ));
                }
            }
            _ => report.problems.push(format!(
                "{}: the NAR of {sp} is not reachable from the release",
                nar_link.display()
            )),
        }
        for r in &info.references {
            if !seen.contains(r) {
                wanted.push(r.clone());
            }
        }
    }
    Ok(())
}
