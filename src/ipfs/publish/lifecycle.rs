//! The roots this mirror published, kept in `D/ipfs_roots`, and their removal from the node once
//! newer ones serve.
//!
//! Every publication records its root before it pins it (`pending`), and marks the record
//! `published` once the root is pinned, copied into MFS, checked there, published to IPNS and
//! written to `D/ipfs_root`. A root published before from this mirror to the node (nothing
//! changed since) is not recorded again: its newest published record is taken up, with its MFS
//! copy, and becomes the newest ([`RootLog::republish`]). Only once the publication
//! succeeded are older roots of the same node let go ([`RootLog::prune`]): the records of the
//! newest `keep` published roots stay; every older record, and every pending one left by a
//! failed run, is dropped. A dropped record's MFS copy is removed when the path still holds
//! its root; its root is unpinned when no kept record has the same root and the pin was made
//! by this mirror (a root that was pinned already when this mirror published it, by someone
//! else, keeps its pin). A removal that fails keeps its record, so the next run tries again.
//! Records of other nodes are kept and never acted on.
//!
//! Garbage collection (`--ipfs-gc`) is asked of a node only when there can be something to
//! collect: when this run unpinned a root, removed the MFS copy of a root no kept record
//! holds, or sent blocks, or when an earlier run did so without a collection that succeeded.
//! `D/ipfs_gc_pending` lists the peer IDs of such nodes, one a line. So a publication with
//! nothing new costs the node no `repo/gc`, which walks every pinned tree, and no MFS copy.
//!
//! The file is text, written atomically; a line per record, oldest first (the MFS path escaped
//! as the keys of `D/ipfs_hashes` are):
//! ```text
//! nixipfs-ipfs-roots 1
//! ROOT_CID NODE_PEER_ID UNIXTIME pending|published PINNED_HERE MFS_PATH
//! ```

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::ipfs::cid::Cid;
use crate::ipfs::client::{ApiErrorKind, IpfsClient, IpfsError};
use crate::ipfs::file_cache::{escape, unescape};

/// Name of the file in the mirror directory that lists the roots published from it.
pub const ROOTS_FILE: &str = "ipfs_roots";

/// Name of the file in the mirror directory that lists the nodes that may hold garbage this
/// mirror left (see the module documentation).
pub const GC_PENDING_FILE: &str = "ipfs_gc_pending";

const HEADER: &str = "nixipfs-ipfs-roots 1";

/// How far a publication got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootState {
    /// Begun: the root may be pinned and copied into MFS, but the run did not finish.
    Pending,
    /// Pinned, copied into MFS, checked on the node and written to `D/ipfs_root`.
    Published,
}

/// One publication of a root to a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRecord {
    /// The root.
    pub root: Cid,
    /// The node's peer ID.
    pub node: String,
    /// When the publication began (seconds since the epoch).
    pub time: u64,
    /// How far it got.
    pub state: RootState,
    /// Whether the root's pin is this mirror's: it was not pinned before this mirror pinned
    /// it (or an earlier record of this mirror holds that pin).
    pub pinned_here: bool,
    /// The MFS directory the root was copied to.
    pub mfs_path: String,
}

/// What [`RootLog::prune`] removed from the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pruned {
    /// Roots unpinned.
    pub unpinned: Vec<Cid>,
    /// MFS copies removed.
    pub mfs_removed: Vec<String>,
    /// Whether `repo/gc` ran.
    pub collected: bool,
    /// Whether `repo/gc` was asked for but not needed: nothing was let go or sent since the
    /// node's last collection.
    pub collection_skipped: bool,
    /// Blocks the node said it removed in `repo/gc`.
    pub collected_blocks: u64,
    /// Removals that failed (their records are kept for the next run).
    pub warnings: Vec<String>,
}

/// The roots published from a mirror (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RootLog {
    path: PathBuf,
    records: Vec<RootRecord>,
}

impl RootLog {
    /// Reads the log at `path`; a missing file is an empty log. A damaged file is an error:
    /// replacing it would forget roots that only it names.
    pub fn load(path: &Path) -> Result<RootLog> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(RootLog {
                    path: path.to_path_buf(),
                    records: Vec::new(),
                })
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let mut lines = text.lines();
        if lines.next() != Some(HEADER) {
            bail!(
                "{}: the first line is not {HEADER:?}; repair or move the file (it lists the \
                 roots this mirror pinned on its IPFS node)",
                path.display()
            );
        }
        let mut records = Vec::new();
        for (n, line) in lines.enumerate() {
            if line.is_empty() {
                continue;
            }
            let Some(record) = parse_record(line) else {
                bail!(
                    "{}: line {} is damaged: {line:?}; repair or move the file",
                    path.display(),
                    n + 2
                );
            };
            records.push(record);
        }
        Ok(RootLog {
            path: path.to_path_buf(),
            records,
        })
    }

    /// The records, oldest first.
    pub fn records(&self) -> &[RootRecord] {
        &self.records
    }

    /// The text of the file.
    pub fn to_text(&self) -> String {
        let mut out = format!("{HEADER}\n");
        for r in &self.records {
            out.push_str(&format!(
                "{} {} {} {} {} {}\n",
                r.root,
                escape(&r.node),
                r.time,
                match r.state {
                    RootState::Pending => "pending",
                    RootState::Published => "published",
                },
                u8::from(r.pinned_here),
                escape(&r.mfs_path)
            ));
        }
        out
    }

    /// Writes the log atomically.
    pub fn save(&self) -> Result<()> {
        crate::fsutil::atomic_write(&self.path, self.to_text().as_bytes())
    }

    /// Whether a record of this mirror holds the pin of `root` on `node`.
    pub fn owns_pin(&self, node: &str, root: &Cid) -> bool {
        self.records
            .iter()
            .any(|r| r.node == node && r.root == *root && r.pinned_here)
    }

    /// Records a publication that begins and saves the log; returns the record's index.
    pub fn begin(&mut self, record: RootRecord) -> Result<usize> {
        self.records.push(record);
        self.save()?;
        Ok(self.records.len() - 1)
    }

    /// Marks record `index` published and saves the log.
    pub fn mark_published(&mut self, index: usize) -> Result<()> {
        if let Some(r) = self.records.get_mut(index) {
            r.state = RootState::Published;
        }
        self.save()
    }

    /// The records of `node` to drop when the newest `keep` published roots stay: the older
    /// published ones, an older record of a root that a newer one keeps (its MFS copy is a
    /// second one) and every pending one. Indices, oldest first.
    pub fn to_drop(&self, node: &str, keep: usize) -> Vec<usize> {
        let mut kept: Vec<&Cid> = Vec::new();
        let mut drop = Vec::new();
        for (i, r) in self.records.iter().enumerate().rev() {
            if r.node != node {
                continue;
            }
            if r.state == RootState::Published
                && kept.len() < keep.max(1)
                && !kept.contains(&&r.root)
            {
                kept.push(&r.root);
            } else {
                drop.push(i);
            }
        }
        drop.reverse();
        drop
    }

    /// The index of the newest published record of `root` on `node`, when there is one: a
    /// publication of the same root again (nothing changed) takes it up instead of adding a
    /// copy ([`RootLog::republish`]).
    pub fn published(&self, node: &str, root: &Cid) -> Option<usize> {
        self.records
            .iter()
            .rposition(|r| r.node == node && r.root == *root && r.state == RootState::Published)
    }

    /// Takes up record `index` again: it becomes the newest record, with the time `time` (its
    /// MFS path stays) and `pinned_here` when this run pins the root. Saves the log and
    /// returns the record's new index.
    pub fn republish(&mut self, index: usize, time: u64, pinned_here: bool) -> Result<usize> {
        let mut record = self.records.remove(index);
        record.time = time;
        record.pinned_here |= pinned_here;
        self.records.push(record);
        self.save()?;
        Ok(self.records.len() - 1)
    }

    /// The file listing the nodes that may hold garbage of this mirror.
    fn gc_pending_path(&self) -> PathBuf {
        self.path.with_file_name(GC_PENDING_FILE)
    }

    /// The peer IDs listed in [`GC_PENDING_FILE`]; a missing file lists none.
    fn gc_pending(&self) -> Result<Vec<String>> {
        let path = self.gc_pending_path();
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text
                .lines()
                .filter(|l| !l.is_empty())
                .map(str::to_string)
                .collect()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Lists `node` in [`GC_PENDING_FILE`] (`pending`) or takes it off.
    fn set_gc_pending(&self, node: &str, pending: bool) -> Result<()> {
        let mut nodes = self.gc_pending()?;
        let listed = nodes.iter().any(|n| n == node);
        if listed == pending {
            return Ok(());
        }
        if pending {
            nodes.push(node.to_string());
        } else {
            nodes.retain(|n| n != node);
        }
        let path = self.gc_pending_path();
        if nodes.is_empty() {
            return fs::remove_file(&path)
                .or_else(|e| match e.kind() {
                    io::ErrorKind::NotFound => Ok(()),
                    _ => Err(e),
                })
                .with_context(|| format!("removing {}", path.display()));
        }
        let text: String = nodes.iter().map(|n| format!("{n}\n")).collect();
        crate::fsutil::atomic_write(&path, text.as_bytes())
    }

    /// Lets go of the roots of `node` beyond the newest `keep` published ones (see the module
    /// documentation), then asks the node to collect garbage when `gc` is set and there can be
    /// garbage: this run let go of something or `sent_blocks`, or an earlier run left some
    /// uncollected. Call it only once the newest root is published. Failures of single
    /// removals are warnings; the log is saved with the records still to drop.
    pub async fn prune(
        &mut self,
        client: &IpfsClient,
        node: &str,
        keep: usize,
        gc: bool,
        sent_blocks: bool,
    ) -> Result<Pruned> {
        let drop = self.to_drop(node, keep);
        let kept: Vec<&RootRecord> = self
            .records
            .iter()
            .enumerate()
            .filter(|(i, r)| r.node == node && !drop.contains(i))
            .map(|(_, r)| r)
            .collect();
        let kept_roots: HashSet<Cid> = kept.iter().map(|r| r.root).collect();
        let kept_paths: HashSet<&str> = kept.iter().map(|r| r.mfs_path.as_str()).collect();
        let mut pruned = Pruned::default();
        let mut failed: HashSet<usize> = HashSet::new();
        // Whether a removal may have left blocks that nothing holds any more.
        let mut released = false;

        for &i in &drop {
            let r = &self.records[i];
            if kept_paths.contains(r.mfs_path.as_str()) {
                continue;
            }
            match client.files_stat(&r.mfs_path).await {
                Ok(Some(stat)) if stat.cid == r.root => match client.files_rm(&r.mfs_path).await {
                    Ok(()) => {
                        pruned.mfs_removed.push(r.mfs_path.clone());
                        // A copy of a root that a kept record still holds frees nothing.
                        released |= !kept_roots.contains(&r.root);
                    }
                    Err(IpfsError::Api {
                        kind: ApiErrorKind::NotFound,
                        ..
                    }) => {}
                    Err(e) => {
                        warn(
                            &mut pruned,
                            format!("removing the MFS copy {}: {e}", r.mfs_path),
                        );
                        failed.insert(i);
                    }
                },
                Ok(Some(stat)) => tracing::info!(
                    "{} holds {} now, not the root {} published there: left alone",
                    r.mfs_path,
                    stat.cid,
                    r.root
                ),
                Ok(None) => {}
                Err(e) => {
                    warn(
                        &mut pruned,
                        format!("looking at the MFS copy {}: {e}", r.mfs_path),
                    );
                    failed.insert(i);
                }
            }
        }

        let mut unpin: Vec<Cid> = Vec::new();
        for &i in &drop {
            let r = &self.records[i];
            if r.pinned_here && !kept_roots.contains(&r.root) && !unpin.contains(&r.root) {
                unpin.push(r.root);
            }
        }
        for root in unpin {
            match client.pin_rm(&root).await {
                Ok(()) => pruned.unpinned.push(root),
                Err(IpfsError::Api {
                    kind: ApiErrorKind::NotPinned,
                    ..
                }) => {}
                Err(e) => {
                    warn(&mut pruned, format!("unpinning the old root {root}: {e}"));
                    for &i in &drop {
                        if self.records[i].root == root {
                            failed.insert(i);
                        }
                    }
                }
            }
        }

        let mut index = 0;
        self.records.retain(|_| {
            let keep_record = !drop.contains(&index) || failed.contains(&index);
            index += 1;
            keep_record
        });
        self.save()?;

        let left_garbage = sent_blocks || released || !pruned.unpinned.is_empty();
        let pending = left_garbage || self.gc_pending()?.iter().any(|n| n == node);
        // Listed before the collection, so that a run that stops during it leaves the mark.
        self.set_gc_pending(node, pending)?;
        if gc && !pending {
            pruned.collection_skipped = true;
            tracing::info!(
                "nothing was let go or sent since node {node} last collected garbage: \
                 not asking it to (repo/gc)"
            );
        } else if gc {
            match client.repo_gc().await {
                Ok(answer) => {
                    pruned.collected = true;
                    self.set_gc_pending(node, false)?;
                    pruned.collected_blocks = answer.removed;
                    tracing::info!(
                        "the node collected garbage: {} blocks removed",
                        answer.removed
                    );
                    if answer.errors > 0 {
                        warn(
                            &mut pruned,
                            format!(
                                "collecting garbage on the node: {} blocks could not be removed ({})",
                                answer.errors,
                                answer.first_error.unwrap_or_default()
                            ),
                        );
                    }
                }
                Err(e) => warn(&mut pruned, format!("collecting garbage on the node: {e}")),
            }
        }
        if !pruned.unpinned.is_empty() || !pruned.mfs_removed.is_empty() {
            tracing::info!(
                "let go of {} old roots and {} MFS copies on node {node}",
                pruned.unpinned.len(),
                pruned.mfs_removed.len()
            );
        }
        Ok(pruned)
    }
}

fn warn(pruned: &mut Pruned, message: String) {
    tracing::warn!("{message}");
    pruned.warnings.push(message);
}

fn parse_record(line: &str) -> Option<RootRecord> {
    let fields: Vec<&str> = line.split(' ').collect();
    let [root, node, time, state, pinned, mfs] = fields.as_slice() else {
        return None;
    };
    Some(RootRecord {
        root: Cid::parse(root).ok()?,
        node: unescape(node)?,
        time: time.parse().ok()?,
        state: match *state {
            "pending" => RootState::Pending,
            "published" => RootState::Published,
            _ => return None,
        },
        pinned_here: match *pinned {
            "0" => false,
            "1" => true,
            _ => return None,
        },
        mfs_path: unescape(mfs).filter(|p| p.starts_with('/'))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: u8, node: &str, state: RootState, pinned_here: bool) -> RootRecord {
        let mut dir = crate::ipfs::directory::DirectoryBuilder::new(0);
        let file = crate::ipfs::unixfs::FileHasher::new(crate::ipfs::unixfs::AddOptions::V1)
            .add(&[n][..], &mut |_: &Cid, _: &[u8]| Ok(()))
            .unwrap();
        dir.add("f", file.cid, file.tsize).unwrap();
        RootRecord {
            root: dir.build_basic().unwrap().cid,
            node: node.to_string(),
            time: 1_700_000_000 + u64::from(n),
            state,
            pinned_here,
            mfs_path: format!("/nixfs_{n} x"),
        }
    }

    #[test]
    fn round_trip_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ROOTS_FILE);
        let mut log = RootLog::load(&path).unwrap();
        assert!(log.records().is_empty());
        log.begin(record(1, "12D3KooWa", RootState::Published, true))
            .unwrap();
        let i = log
            .begin(record(2, "12D3KooWa", RootState::Pending, false))
            .unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("nixipfs-ipfs-roots 1\n"), "{text}");
        assert!(text.contains(" pending 0 /nixfs_2%20x\n"), "{text}");
        log.mark_published(i).unwrap();
        let loaded = RootLog::load(&path).unwrap();
        assert_eq!(loaded, log);
        assert_eq!(loaded.records()[1].state, RootState::Published);
        assert!(loaded.owns_pin("12D3KooWa", &loaded.records()[0].root));
        assert!(!loaded.owns_pin("12D3KooWa", &loaded.records()[1].root));
        assert!(!loaded.owns_pin("12D3KooWb", &loaded.records()[0].root));

        fs::write(&path, "QmX 1 2\n").unwrap();
        assert!(format!("{:#}", RootLog::load(&path).unwrap_err()).contains("first line"));
        fs::write(&path, format!("{HEADER}\nbroken line\n")).unwrap();
        assert!(format!("{:#}", RootLog::load(&path).unwrap_err()).contains("line 2"));
    }

    #[test]
    fn the_newest_published_stay_and_other_nodes_are_left_alone() {
        use RootState::{Pending, Published};
        let records = vec![
            record(1, "a", Published, true),
            record(2, "b", Published, true),
            record(3, "a", Pending, true),
            record(4, "a", Published, true),
            record(5, "a", Published, true),
            record(6, "a", Published, true),
        ];
        let log = RootLog {
            path: PathBuf::new(),
            records,
        };
        assert_eq!(log.to_drop("a", 3), vec![0, 2]);
        assert_eq!(log.to_drop("a", 1), vec![0, 2, 3, 4]);
        assert_eq!(log.to_drop("a", 0), vec![0, 2, 3, 4]);
        assert_eq!(log.to_drop("a", 10), vec![2]);
        assert_eq!(log.to_drop("b", 1), Vec::<usize>::new());
        assert_eq!(log.to_drop("c", 1), Vec::<usize>::new());
    }

    #[test]
    fn keep_counts_roots_and_a_root_published_again_is_taken_up() {
        use RootState::{Pending, Published};
        let dir = tempfile::tempdir().unwrap();
        let mut log = RootLog {
            path: dir.path().join(ROOTS_FILE),
            records: Vec::new(),
        };
        let (one, two) = (
            record(1, "a", Published, true),
            record(2, "a", Published, false),
        );
        // Records of one root, written by runs that added a copy each time.
        let mut again = two.clone();
        again.mfs_path = "/nixfs_2 again".to_string();
        for r in [
            one.clone(),
            two.clone(),
            again.clone(),
            record(3, "a", Pending, true),
        ] {
            log.begin(r).unwrap();
        }
        // Two roots stay with keep 2; the older copy of the second root goes.
        assert_eq!(log.to_drop("a", 2), vec![1, 3]);
        assert_eq!(log.to_drop("a", 1), vec![0, 1, 3]);

        // The first root published again: its record becomes the newest, its path stays.
        assert_eq!(log.published("a", &one.root), Some(0));
        assert_eq!(log.published("b", &one.root), None);
        let i = log.republish(0, 1_800_000_000, false).unwrap();
        assert_eq!(i, 3);
        let taken = &log.records()[3];
        assert_eq!(
            (
                taken.root,
                taken.time,
                taken.mfs_path.as_str(),
                taken.pinned_here
            ),
            (one.root, 1_800_000_000, one.mfs_path.as_str(), true)
        );
        assert_eq!(RootLog::load(&log.path).unwrap(), log);
        // Pinned by this run now: the pin is this mirror's. The newest copy of a root is the
        // one taken up; a pending record is none.
        let newest_two = log.published("a", &two.root).unwrap();
        assert_eq!(newest_two, 1);
        assert_eq!(log.republish(newest_two, 1_800_000_001, true).unwrap(), 3);
        assert!(log.records()[3].pinned_here);
        assert_eq!(log.records()[3].mfs_path, "/nixfs_2 again");
        assert_eq!(
            log.published("a", &record(3, "a", Pending, true).root),
            None
        );
        assert_eq!(log.records().len(), 4);
    }
}
