//! `verify`: check a mirror's invariants (see [`crate::verify`]) and report every problem; with
//! `--repair`, remove what is broken so that the next run fetches it again, and check again.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::binary_cache::BINARY_CACHE_DIR;
use crate::fetch::FetchConfig;
use crate::fsutil::DirLock;
use crate::signature::PublicKey;
use crate::storage::{S3Location, S3Store};
use crate::verify::{
    repair, verify_bucket, verify_mirror_with, NarCheck, Repair, VerifyChecks, VerifyReport,
};

/// Options of `verify`.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// The mirror directory.
    pub dir: PathBuf,
    /// How far each NAR is checked.
    pub nars: NarCheck,
    /// Keys every narinfo must carry a valid signature by (empty: signatures not checked).
    pub trusted_keys: Vec<PublicKey>,
    /// After checking, remove what is broken (under the mirror lock) and check again.
    pub repair: bool,
    /// With `repair`, wait for another run holding the lock instead of failing at once.
    pub wait_lock: bool,
}

/// What `verify` found, and with `repair` what it did.
#[derive(Debug)]
pub struct VerifyOutcome {
    /// The last check: after the repairs, if any were made.
    pub report: VerifyReport,
    /// What was done about each problem of the first check (empty without `repair`).
    pub repairs: Vec<Repair>,
}

/// Options of `verify --target s3://BUCKET/PREFIX`.
#[derive(Clone, Debug)]
pub struct VerifyBucketOptions {
    /// The bucket and prefix; the cache checked is `PREFIX/binary_cache/`.
    pub location: S3Location,
    /// Retries and timeouts of the requests.
    pub fetch: FetchConfig,
    /// How far each NAR is checked.
    pub nars: NarCheck,
    /// Keys every narinfo must carry a valid signature by (empty: signatures not checked).
    pub trusted_keys: Vec<PublicKey>,
}

/// Checks the binary cache in a bucket ([`verify_bucket`]); each problem is printed to `out`,
/// one per line. Only reads: no lock is taken.
pub async fn run_bucket(opts: &VerifyBucketOptions, out: &mut dyn Write) -> Result<VerifyReport> {
    let store = S3Store::connect(&opts.location, &opts.fetch)?.sub(BINARY_CACHE_DIR);
    let checks = VerifyChecks {
        nars: opts.nars,
        trusted_keys: opts.trusted_keys.clone(),
    };
    let report = verify_bucket(&store, &checks).await?;
    for p in &report.problems {
        writeln!(out, "{p}")?;
    }
    Ok(report)
}

/// Runs the checks; each problem is printed to `out`, one per line. With `repair`, each repair
/// follows (`removed FILE: REASON` or `left alone: PROBLEM (WHY)`), then each problem that
/// remains (`remains: PROBLEM`). A directory that is not a mirror is an error, not a mirror
/// without problems.
pub fn run(opts: &VerifyOptions, out: &mut dyn Write) -> Result<VerifyOutcome> {
    crate::status::check_mirror_dir(&opts.dir)?;
    let checks = VerifyChecks {
        nars: opts.nars,
        trusted_keys: opts.trusted_keys.clone(),
    };
    if !opts.repair {
        let report = run_checks(&opts.dir, &checks, out)?;
        return Ok(VerifyOutcome {
            report,
            repairs: Vec::new(),
        });
    }
    let _lock = DirLock::acquire(&opts.dir, opts.wait_lock)?;
    let first = run_checks(&opts.dir, &checks, out)?;
    if first.is_ok() {
        return Ok(VerifyOutcome {
            report: first,
            repairs: Vec::new(),
        });
    }
    let repairs = repair(&opts.dir, &first.found)?;
    for r in &repairs {
        writeln!(out, "{r}")?;
    }
    let report = verify_mirror_with(&opts.dir, &checks)?;
    for p in &report.problems {
        writeln!(out, "remains: {p}")?;
    }
    Ok(VerifyOutcome { report, repairs })
}

/// Runs `checks` on the mirror at `dir`; each problem is printed to `out`, one per line.
fn run_checks(dir: &Path, checks: &VerifyChecks, out: &mut dyn Write) -> Result<VerifyReport> {
    let report = verify_mirror_with(dir, checks)?;
    for p in &report.problems {
        writeln!(out, "{p}")?;
    }
    Ok(report)
}
