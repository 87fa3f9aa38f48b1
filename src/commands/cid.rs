//! `cid`: the CID of each path given, as `ipfs add -r --only-hash` computes it with an import
//! profile ([`crate::ipfs::add_path`]), without a node. One line per path, `CID  PATH`; a path
//! that cannot be read is reported and the others are still done.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::ipfs::add_path::add_path;
use crate::ipfs::cid::Cid;
use crate::ipfs::profile::Profile;

/// Options of `cid`.
#[derive(Clone, Debug)]
pub struct CidOptions {
    /// Files, directories or links.
    pub paths: Vec<PathBuf>,
    /// The import profile.
    pub profile: Profile,
}

/// What `cid` did.
#[derive(Debug, Default)]
pub struct CidReport {
    /// Each path and its CID.
    pub cids: Vec<(PathBuf, Cid)>,
    /// Paths that could not be added, and why.
    pub failures: Vec<String>,
}

/// Prints `CID  PATH` to `out` for each path.
pub fn run(opts: &CidOptions, out: &mut dyn Write) -> Result<CidReport> {
    let layout = opts.profile.layout();
    let mut report = CidReport::default();
    for path in &opts.paths {
        match add_path(path, &layout, &mut |_: &Cid, _: &[u8]| Ok(())) {
            Ok(added) => {
                writeln!(out, "{}  {}", added.cid, path.display())
                    .context("cannot write to standard output")?;
                report.cids.push((path.clone(), added.cid));
            }
            Err(e) => {
                tracing::error!("{e}");
                report.failures.push(e.to_string());
            }
        }
    }
    out.flush().context("cannot write to standard output")?;
    Ok(report)
}
