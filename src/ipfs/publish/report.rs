//! What a publication did: the root and where it went, the work done, and a one-line summary
//! of it for the log.

use std::path::PathBuf;

use super::dag::HashStats;
use crate::ipfs::cid::Cid;
use crate::ipfs::upload::SendStats;

/// What a publication did (returned by [`publish`](super::publish)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishReport {
    /// The root CID.
    pub root: Cid,
    /// Cumulative size of the root's DAG.
    pub root_size: u64,
    /// The node's peer ID, when published to a node.
    pub node: Option<String>,
    /// The MFS directory the root was copied to.
    pub mfs_path: Option<String>,
    /// The IPNS name the root was published under.
    pub ipns_name: Option<String>,
    /// The CAR file written.
    pub car_file: Option<PathBuf>,
    /// Each release (published path) and its CID.
    pub releases: Vec<(String, Cid)>,
    /// Hashing work.
    pub hashing: HashStats,
    /// Blocks sent and written.
    pub sent: SendStats,
    /// Whether blocks missing on the node had to be found and sent again.
    pub repaired: bool,
    /// Whether the root was already pinned recursively, so `pin/add` was not needed.
    pub already_pinned: bool,
    /// Paths whose CIDs were checked on the node.
    pub verified_paths: usize,
    /// What was left out and why, and old roots that could not be let go.
    pub warnings: Vec<String>,
    /// Older roots of this mirror unpinned after this publication.
    pub unpinned: Vec<Cid>,
    /// Their MFS copies removed.
    pub mfs_removed: Vec<String>,
    /// Whether the node collected garbage (`repo/gc`) afterwards.
    pub collected: bool,
    /// Whether a collection was asked for but not needed: nothing was let go or sent since
    /// the node's last one.
    pub collection_skipped: bool,
}

impl PublishReport {
    /// A one-line summary of the work.
    pub fn summary(&self) -> String {
        let h = &self.hashing;
        let s = &self.sent;
        let mut line = format!(
            "{} files: {} read ({}), {} from the cache",
            h.files,
            h.files_read,
            crate::progress::human_bytes(h.bytes_read),
            h.files_from_cache
        );
        if self.node.is_some() {
            line.push_str(&format!(
                "; sent {} blocks ({}) in {} dag/import requests",
                s.blocks_sent,
                crate::progress::human_bytes(s.block_bytes_sent),
                s.import_requests
            ));
            if self.already_pinned {
                line.push_str("; the root was already pinned");
            }
            if !self.unpinned.is_empty() || !self.mfs_removed.is_empty() {
                line.push_str(&format!(
                    "; let go of {} old roots and {} MFS copies",
                    self.unpinned.len(),
                    self.mfs_removed.len()
                ));
            }
            if self.collected {
                line.push_str("; the node collected garbage");
            }
            if self.collection_skipped {
                line.push_str("; nothing new to collect on the node");
            }
            if s.add_calls > 0 {
                line.push_str(&format!(
                    ", {} add calls ({})",
                    s.add_calls,
                    crate::progress::human_bytes(s.add_bytes)
                ));
            }
        }
        if let Some(car) = &self.car_file {
            line.push_str(&format!(
                "; wrote {} blocks ({}) to {}",
                s.car_file_blocks,
                crate::progress::human_bytes(s.car_file_bytes),
                car.display()
            ));
        }
        line
    }
}
