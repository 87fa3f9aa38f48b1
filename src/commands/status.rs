//! `status`: what a mirror holds, per channel and overall (see [`crate::status`]), as lines
//! for a person or as JSON for a script (`--json`; the fields are documented on
//! [`crate::status::MirrorStatus`] and only ever added to).

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::progress::human_bytes;
use crate::status::{self, human_age, MirrorStatus};

/// Options of `status`.
#[derive(Clone, Debug)]
pub struct StatusOptions {
    /// The mirror directory.
    pub dir: PathBuf,
    /// Print JSON instead of lines.
    pub json: bool,
}

/// Reads the mirror's state and prints it to `out`. Takes no lock and changes nothing.
pub fn run(opts: &StatusOptions, out: &mut dyn Write) -> Result<MirrorStatus> {
    let status = status::read(&opts.dir)?;
    if opts.json {
        serde_json::to_writer_pretty(&mut *out, &status)
            .context("cannot write to standard output")?;
        writeln!(out)?;
    } else {
        print_lines(&status, out)?;
    }
    Ok(status)
}

fn print_lines(s: &MirrorStatus, out: &mut dyn Write) -> Result<()> {
    writeln!(out, "mirror {}", s.dir.display())?;
    let sync = match s.last_sync {
        Some(t) => format!("{} ago", human_age(s.read_at.saturating_sub(t))),
        None => "never".to_string(),
    };
    writeln!(out, "  last complete sync: {sync}")?;
    writeln!(
        out,
        "  disk: {}; binary cache: {} narinfos, {} NARs ({})",
        human_bytes(s.disk_bytes),
        s.cache.narinfos,
        s.cache.nars,
        human_bytes(s.cache.nar_bytes)
    )?;
    if let Some(root) = &s.ipfs_root {
        writeln!(out, "  IPFS root: /ipfs/{root}")?;
    }
    if s.staging.narinfos + s.staging.files > 0 {
        writeln!(
            out,
            "  staging area: {} narinfos and {} files ({}) wait for a normal run",
            s.staging.narinfos,
            s.staging.files,
            human_bytes(s.staging.bytes)
        )?;
    }
    if s.channels.is_empty() {
        writeln!(out, "  no channel yet")?;
    }
    for c in &s.channels {
        let release = match (&c.release, c.complete) {
            (Some(r), true) => r.clone(),
            (Some(r), false) => format!("{r} (incomplete)"),
            (None, _) => "no release (the link leads nowhere)".to_string(),
        };
        writeln!(out, "channel {}: {release}", c.channel)?;
        if let Some(age) = c.age_seconds {
            writeln!(out, "  built {} ago", human_age(age))?;
        }
        if let Some(t) = c.last_success {
            writeln!(
                out,
                "  last succeeded {} ago",
                human_age(s.read_at.saturating_sub(t))
            )?;
        }
        writeln!(
            out,
            "  closure: {} paths ({} roots), {}; {} missing upstream",
            c.closure_paths,
            c.roots,
            human_bytes(c.closure_bytes),
            c.missing_paths
        )?;
        if let Some(cid) = &c.ipfs {
            writeln!(out, "  IPFS: /ipfs/{cid}")?;
        }
    }
    Ok(())
}
