//! `verify`: check a mirror's invariants (see [`crate::verify`]) and report every problem.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::verify::{verify_mirror_with, NarCheck, VerifyChecks, VerifyReport};

/// Options of `verify`.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// The mirror directory.
    pub dir: PathBuf,
    /// Check NARs by size only, without hashing them.
    pub quick: bool,
}

/// Runs the checks; each problem is printed to `out`, one per line.
pub fn run(opts: &VerifyOptions, out: &mut dyn Write) -> Result<VerifyReport> {
    let checks = VerifyChecks {
        nars: if opts.quick {
            NarCheck::Size
        } else {
            NarCheck::FileHash
        },
        trusted_keys: Vec::new(),
    };
    run_checks(&opts.dir, &checks, out)
}

/// Runs `checks` on the mirror at `dir`; each problem is printed to `out`, one per line.
pub fn run_checks(dir: &Path, checks: &VerifyChecks, out: &mut dyn Write) -> Result<VerifyReport> {
    let report = verify_mirror_with(dir, checks)?;
    for p in &report.problems {
        writeln!(out, "{p}")?;
    }
    Ok(report)
}
