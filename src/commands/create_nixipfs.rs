//! `create-nixipfs`: publish the mirror in `--dir` to an IPFS node, or write it as a CAR file.
//!
//! The publication itself, from the node's first call to the `ipfs_hash`, `ipfs_root` and
//! `ipfs_hashes` files written at the end, is [`crate::ipfs::publish::publish`]; this command
//! gives it its options and standard output, where the result lines go (`nixfs: /ipfs/<CID>`,
//! `published: /ipns/<NAME>` and, with a CAR file, `car: <FILE>`). This command takes no
//! lock: the caller holds the mirror's lock.

use anyhow::Result;

pub use crate::ipfs::publish::{PublishOptions as CreateNixipfsOptions, PublishReport, SendMethod};

/// Publishes the mirror; the result lines go to standard output.
pub async fn run(opts: &CreateNixipfsOptions) -> Result<PublishReport> {
    crate::ipfs::publish::publish(opts, &mut std::io::stdout()).await
}
