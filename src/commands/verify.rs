//! `verify`: check a mirror's invariants (see [`crate::verify`]) and report every problem.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::signature::PublicKey;
use crate::verify::{verify_mirror_with, NarCheck, VerifyChecks, VerifyReport};

/// Options of `verify`.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// The mirror directory.
    pub dir: PathBuf,
    /// How far each NAR is checked.
    pub nars: NarCheck,
    /// Keys every narinfo must carry a valid signature by (empty: signatures not checked).
    pub trusted_keys: Vec<PublicKey>,
}

/// Runs the checks; each problem is printed to `out`, one per line. A directory that is not a
/// mirror is an error, not a mirror without problems.
pub fn run(opts: &VerifyOptions, out: &mut dyn Write) -> Result<VerifyReport> {
    crate::status::check_mirror_dir(&opts.dir)?;
    let checks = VerifyChecks {
        nars: opts.nars,
        trusted_keys: opts.trusted_keys.clone(),
    };
    run_checks(&opts.dir, &checks, out)
}

/// Runs `checks` on the mirror at `dir`; each problem is printed to `out`, one per line.
fn run_checks(dir: &Path, checks: &VerifyChecks, out: &mut dyn Write) -> Result<VerifyReport> {
    let report = verify_mirror_with(dir, checks)?;
    for p in &report.problems {
        writeln!(out, "{p}")?;
    }
    Ok(report)
}
