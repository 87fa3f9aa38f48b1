//! `create-nixipfs`: publish the mirror in `--dir` to an IPFS node, or write it as a CAR file.
//!
//! The publication itself, from the node's first call to the `ipfs_hash`, `ipfs_root` and
//! `ipfs_hashes` files written at the end and the older roots let go of (`ipfs_roots`), is
//! [`crate::ipfs::publish::publish`]; this command takes the mirror's lock and gives it its
//! options and output, where the result lines go (`nixfs: /ipfs/<CID>`,
//! `published: /ipns/<NAME>` and, with a CAR file, `car: <FILE>`).

use std::io::Write;

use anyhow::{bail, Result};

use crate::fsutil::{self, DirLock};
use crate::ipfs::publish::{self, PublishOptions, PublishReport};

/// Options of `create-nixipfs`.
#[derive(Clone, Debug)]
pub struct CreateNixipfsOptions {
    /// What to publish, and where to.
    pub publish: PublishOptions,
    /// Wait for the mirror's lock instead of failing when another run holds it.
    pub wait_lock: bool,
}

/// Publishes the mirror under its lock; the result lines go to `out`.
pub async fn run(
    opts: &CreateNixipfsOptions,
    out: &mut (dyn Write + Send),
) -> Result<PublishReport> {
    let dir = &opts.publish.dir;
    fsutil::check_dir_arg(dir, "mirror directory")?;
    if !dir.is_dir() {
        bail!("the mirror directory {} does not exist", dir.display());
    }
    let _lock = DirLock::acquire(dir, opts.wait_lock)?;
    publish::publish(&opts.publish, out).await
}
