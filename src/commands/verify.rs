//! `verify`: check a mirror's invariants (see [`crate::verify`]) and report every problem.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;

use crate::verify::{verify_mirror, VerifyReport};

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
    let report = verify_mirror(&opts.dir, opts.quick)?;
    for p in &report.problems {
        writeln!(out, "{p}")?;
    }
    Ok(report)
}
