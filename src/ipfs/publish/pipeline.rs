//! The publication from start to end, as `create-nixipfs` and the IPFS step of `release-nixos`
//! run it:
//! 1. Reach the node (`version`) before anything else: an unreachable node is an error that
//!    names the address, unless a CAR file was asked for, which is then written alone.
//! 2. Learn the node's peer ID and whether it has `dag/import`; load `D/ipfs_hashes`; when
//!    that cache holds no record for this node, ask the node which blocks it has
//!    (`refs/local`).
//! 3. Scan the mirror and build its DAG ([`super::scan`], [`super::dag`]), streaming the
//!    blocks the node lacks to `dag/import` (or `add`/`block/put` without it) and every block
//!    to the CAR file.
//! 4. Record the root in `D/ipfs_roots` as pending ([`super::lifecycle`]), then pin it unless
//!    `pin/ls` shows it pinned already (`pin/add`, which also proves that the node holds every
//!    block; if it fails, ask `refs/local` and send what is missing, then pin again), copy it
//!    into MFS as `<prefix>_<unixtime>`, check with `files/stat` that
//!    the root and a sample of paths have the CIDs computed here ([`super::verify`]), and
//!    publish it to IPNS.
//! 5. Write each release's `ipfs_hash`, `D/ipfs_root` and `D/ipfs_hashes` (atomically, and
//!    only these files: a failure leaves the mirror as it was, apart from the cache of file
//!    CIDs, which stays valid).
//! 6. Mark the root published in `D/ipfs_roots` and only then let go of the older roots
//!    beyond the newest [`PublishOptions::keep`] (their MFS copies and this mirror's pins),
//!    and ask the node for `repo/gc` when [`PublishOptions::gc`] is set.
//!
//! The result lines `nixfs: /ipfs/<CID>`, `published: /ipns/<NAME>` and, with a CAR file,
//! `car: <FILE>` go to the writer given. No lock is taken: the caller holds the mirror's lock.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use super::lifecycle::{RootLog, RootRecord, RootState, ROOTS_FILE};
use super::{
    verify_on_node, walk, BuildOptions, PublishError, PublishReport, WalkOptions, Walked,
    IPFS_HASH_FILE, IPFS_ROOT_FILE,
};
use crate::ipfs::api_addr::ApiAddr;
use crate::ipfs::cid::{Cid, CidSet};
use crate::ipfs::client::{IpfsClient, IpfsError, Timeouts};
use crate::ipfs::file_cache::{CacheWriter, FileCache, LoadOutcome, CACHE_FILE};
use crate::ipfs::profile::{Layout, Profile};
use crate::ipfs::upload::{MarkedCids, NodeKnowledge, NodeMethod, NodeTarget, Router, SendStats};

/// How blocks are sent to the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SendMethod {
    /// `dag/import` when the node has it, else `add`.
    #[default]
    Auto,
    /// Always `dag/import`.
    DagImport,
    /// Always `add` per file and `block/put` per directory block.
    Add,
}

/// What to publish, where, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// The mirror directory.
    pub dir: PathBuf,
    /// The node's API; `None` to write only the CAR file.
    pub api: Option<ApiAddr>,
    /// Write the whole DAG to this CAR file.
    pub car: Option<PathBuf>,
    /// The import profile: chunks, leaves, links, CID version and HAMT rule.
    pub profile: Profile,
    /// CID version of dag-pb nodes instead of the profile's, 0 or 1 (`--cid-version`).
    pub cid_version: Option<u8>,
    /// Publish the root to IPNS.
    pub publish_ipns: bool,
    /// Lifetime of the IPNS record (2h by default).
    pub ipns_lifetime: Duration,
    /// Key to publish under; the node's own key when `None`.
    pub ipns_key: Option<String>,
    /// Threads hashing files.
    pub concurrency: usize,
    /// MFS path prefix; the root goes to `<prefix>_<unixtime>` (`/nixfs` as the original).
    pub mfs_prefix: String,
    /// Deadlines of the node's calls.
    pub timeouts: Timeouts,
    /// Bytes of CAR per `dag/import` request.
    pub segment_bytes: u64,
    /// How blocks reach the node.
    pub method: SendMethod,
    /// Files to check on the node with `files/stat` after publishing (directories down to
    /// the releases are always checked).
    pub verify_files: usize,
    /// Published roots of this mirror that stay pinned and in MFS, the newest included (at
    /// least 1); older ones are let go after a successful publication.
    pub keep: usize,
    /// Ask the node to collect garbage (`repo/gc`) after letting go of old roots.
    pub gc: bool,
}

impl Default for PublishOptions {
    fn default() -> Self {
        PublishOptions {
            dir: PathBuf::from("."),
            api: Some(ApiAddr::default()),
            car: None,
            profile: Profile::DEFAULT,
            cid_version: None,
            publish_ipns: true,
            ipns_lifetime: Duration::from_secs(2 * 3600),
            ipns_key: None,
            concurrency: 4,
            mfs_prefix: "/nixfs".to_string(),
            timeouts: Timeouts::default(),
            segment_bytes: 1 << 30,
            method: SendMethod::Auto,
            verify_files: 16,
            keep: 3,
            gc: false,
        }
    }
}

impl PublishOptions {
    /// Checks the options without touching the node or the mirror's files.
    fn check(&self) -> Result<()> {
        if let Some(version @ 2..) = self.cid_version {
            bail!("--cid-version must be 0 or 1, not {version}");
        }
        if !self.mfs_prefix.starts_with('/')
            || self.mfs_prefix.ends_with('/')
            || self.mfs_prefix.contains("//")
        {
            bail!(
                "the MFS prefix {:?} must be an absolute MFS path without a trailing /",
                self.mfs_prefix
            );
        }
        if self.keep == 0 {
            bail!("--ipfs-keep must be at least 1: the root just published stays");
        }
        if self.api.is_none() && self.car.is_none() {
            bail!("nothing to do: neither an IPFS API address nor a CAR file (--car) was given");
        }
        if !self.dir.is_dir() {
            bail!("the mirror directory {} does not exist", self.dir.display());
        }
        Ok(())
    }

    /// The profile's parameters, with [`PublishOptions::cid_version`] when given.
    pub fn layout(&self) -> Layout {
        let layout = self.profile.layout();
        match self.cid_version {
            Some(version) => layout.with_cid_version(version),
            None => layout,
        }
    }
}

/// The node published to.
struct Node {
    client: IpfsClient,
    peer: String,
    method: NodeMethod,
}

impl Node {
    /// The node as a destination of blocks, with what is known of what it holds.
    fn target(&self, knowledge: NodeKnowledge, opts: &PublishOptions) -> NodeTarget {
        NodeTarget {
            client: self.client.clone(),
            runtime: tokio::runtime::Handle::current(),
            method: self.method,
            knowledge,
            segment_bytes: opts.segment_bytes.max(1),
        }
    }
}

/// Everything one pass over the mirror produced.
struct Pass {
    walked: Walked,
    sent: SendStats,
    writer: Option<CacheWriter>,
}

/// How a pass works.
struct PassOptions {
    layout: Layout,
    car: Option<PathBuf>,
    concurrency: usize,
    read_all: bool,
    verify_files: usize,
}

/// Walks the mirror and builds its DAG on a blocking thread, delivering blocks to `car` and
/// `node` and the cache entries to `writer`.
async fn pass(
    dir: PathBuf,
    cache: FileCache,
    mut writer: Option<CacheWriter>,
    node: Option<NodeTarget>,
    opts: PassOptions,
) -> Result<Pass, PublishError> {
    let PassOptions {
        layout,
        car,
        concurrency,
        read_all,
        verify_files,
    } = opts;
    tokio::task::spawn_blocking(move || {
        let can_trust = car.is_none() && node.is_some();
        let knowledge = node
            .as_ref()
            .map(|n| n.knowledge.clone())
            .unwrap_or_default();
        let trust = move |cid: &Cid| can_trust && knowledge.known.contains(cid);
        let router = Router::new(car.as_deref(), layout.add.cid_version, node)?;
        let walked = walk(
            &dir,
            &WalkOptions {
                build: BuildOptions {
                    layout,
                    concurrency,
                    read_all,
                },
                cache: &cache,
                trust_release: &trust,
                verify_files,
                record_paths: false,
            },
            &router,
            writer.as_mut(),
        )?;
        let sent = router.finish(&walked.root.cid)?;
        Ok(Pass {
            walked,
            sent,
            writer,
        })
    })
    .await
    .unwrap_or_else(|join| {
        Err(PublishError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(format!("the hashing task failed: {join}")),
        })
    })
}

fn unix_time() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reaches the node; `Ok(None)` when it cannot be reached and a CAR file is written instead.
async fn connect(opts: &PublishOptions) -> Result<Option<Node>> {
    let Some(addr) = &opts.api else {
        return Ok(None);
    };
    let client = IpfsClient::new(addr.clone(), opts.timeouts)?;
    let version = match client.version().await {
        Ok(version) => version,
        Err(e @ (IpfsError::Unreachable { .. } | IpfsError::Timeout { .. })) => {
            if let Some(car) = &opts.car {
                tracing::warn!("{e}; writing the CAR file {} only", car.display());
                return Ok(None);
            }
            return Err(e).with_context(|| {
                format!("no IPFS node answers at {addr} (start one, or give --car FILE to write a CAR file instead)")
            });
        }
        Err(e) => {
            return Err(e).with_context(|| format!("the IPFS API at {addr} does not work"));
        }
    };
    let peer = client.id().await?;
    let method = match opts.method {
        SendMethod::DagImport => NodeMethod::DagImport,
        SendMethod::Add => NodeMethod::Add,
        SendMethod::Auto => {
            if client.has_command("dag/import").await? {
                NodeMethod::DagImport
            } else {
                tracing::info!("the node has no dag/import: files are sent with add");
                NodeMethod::Add
            }
        }
    };
    tracing::info!(
        "IPFS node {} ({} {}) at {addr}",
        peer,
        version.agent,
        version.version
    );
    Ok(Some(Node {
        client,
        peer,
        method,
    }))
}

/// Reads the cache of file CIDs made with `layout`; one that cannot be used (made with another
/// layout, or damaged) is replaced at the end.
fn load_cache(path: &Path, layout: &Layout) -> Result<FileCache> {
    let (cache, outcome) = FileCache::load(path, &layout.descriptor())
        .with_context(|| format!("reading {}", path.display()))?;
    match &outcome {
        LoadOutcome::Ignored { reason } => tracing::warn!(
            "{}: not used ({reason}); every file is hashed again",
            path.display()
        ),
        LoadOutcome::Loaded { files, .. } => {
            tracing::debug!("{}: {files} files", path.display())
        }
        LoadOutcome::Missing => {}
    }
    Ok(cache)
}

/// What is known of the blocks `node` holds before this publication: the DAGs the cache
/// records as on it, or, without such a record, what it lists (`refs/local`).
async fn knowledge_of(node: &Node, cache: &FileCache) -> NodeKnowledge {
    let known = cache.known_on_node(&node.peer);
    let blocks = if !cache.marks_anything_on(&node.peer) {
        tracing::info!(
            "no record of what node {} holds: asking it (refs/local)",
            node.peer
        );
        match node.client.refs_local().await {
            Ok(blocks) => Some(blocks),
            Err(e) => {
                tracing::warn!("refs/local failed ({e}); every block is sent");
                None
            }
        }
    } else {
        None
    };
    NodeKnowledge {
        known,
        blocks,
        trust_roots: true,
        marked: cache
            .marked_files(&node.peer)
            .map(|m| std::sync::Arc::new(MarkedCids::new(m))),
    }
}

/// Copies the root into MFS at `path` (keeping what is there if it is the same root).
async fn copy_to_mfs(client: &IpfsClient, root: &Cid, path: &str) -> Result<()> {
    match client.files_stat(path).await? {
        Some(stat) if stat.cid == *root => Ok(()),
        Some(stat) => bail!(
            "the MFS path {path} already holds {}; not replacing it with {root}",
            stat.cid
        ),
        None => Ok(client
            .files_cp(&format!("/ipfs/{root}"), path, true)
            .await
            .with_context(|| format!("copying /ipfs/{root} to MFS {path}"))?),
    }
}

/// Publishes the mirror in `opts.dir` (see the module documentation) and writes the result
/// lines to `out`.
pub async fn publish(opts: &PublishOptions, out: &mut (dyn Write + Send)) -> Result<PublishReport> {
    opts.check()?;
    let node = connect(opts).await?;
    let dir = crate::fsutil::absolute(&opts.dir)?;
    let layout = opts.layout();
    let cache_path = dir.join(CACHE_FILE);
    let cache = load_cache(&cache_path, &layout)?;
    let mut roots = match &node {
        Some(_) => Some(RootLog::load(&dir.join(ROOTS_FILE))?),
        None => None,
    };

    let mut target = None;
    if let Some(node) = &node {
        let knowledge = knowledge_of(node, &cache).await;
        target = Some(node.target(knowledge, opts));
    }
    let car = opts
        .car
        .as_ref()
        .map(|c| crate::fsutil::absolute(c))
        .transpose()?;
    let writer = CacheWriter::replacing(&dir, &cache)
        .with_context(|| format!("cannot write a temporary file in {}", dir.display()))?;
    let Pass {
        walked,
        sent,
        writer,
    } = pass(
        dir.clone(),
        cache,
        Some(writer),
        target,
        PassOptions {
            layout,
            car: car.clone(),
            concurrency: opts.concurrency,
            read_all: false,
            verify_files: opts.verify_files,
        },
    )
    .await
    .context("building the DAG of the mirror")?;
    let writer = writer.expect("the pass gives its cache writer back");
    let root = walked.root.cid;

    let mut report = PublishReport {
        root,
        root_size: walked.root.tsize,
        node: node.as_ref().map(|n| n.peer.clone()),
        mfs_path: None,
        ipns_name: None,
        car_file: car,
        releases: walked
            .releases
            .iter()
            .map(|r| (r.key.clone(), r.root.cid))
            .collect(),
        hashing: walked.stats.clone(),
        sent,
        repaired: false,
        already_pinned: false,
        verified_paths: 0,
        warnings: walked.warnings.clone(),
        unpinned: Vec::new(),
        mfs_removed: Vec::new(),
        collected: false,
        collection_skipped: false,
    };

    let mut begun = None;
    let mut node_holds_all = false;
    if let (Some(node), Some(roots)) = (&node, roots.as_mut()) {
        let outcome = finish_on_node(
            opts,
            node,
            &dir,
            layout,
            &walked,
            roots,
            &mut begun,
            &mut report,
        )
        .await;
        if let Err(e) = outcome {
            // The entries stay valid, with the marks of what was known before.
            if let Err(save) = writer.finish(&cache_path, None, false) {
                tracing::warn!("{save:#}");
            }
            return Err(e);
        }
        // The root is pinned: the node holds every DAG of the tree (and the insides of the
        // releases taken by their ipfs_hash, which this pass did not look at).
        node_holds_all = true;
        for release in &walked.releases {
            crate::fsutil::write_if_changed(
                &release.path.join(IPFS_HASH_FILE),
                format!("{}\n", release.root.cid).as_bytes(),
            )?;
        }
        crate::fsutil::write_if_changed(&dir.join(IPFS_ROOT_FILE), format!("{root}\n").as_bytes())?;
    }
    writer.finish(
        &cache_path,
        node.as_ref().map(|n| n.peer.as_str()),
        node_holds_all,
    )?;

    if let (Some(node), Some(roots), Some(index)) = (&node, roots.as_mut(), begun) {
        roots.mark_published(index)?;
        let pruned = roots
            .prune(
                &node.client,
                &node.peer,
                opts.keep,
                opts.gc,
                report.sent.blocks_sent > 0 || report.sent.add_calls > 0,
            )
            .await?;
        report.unpinned = pruned.unpinned;
        report.mfs_removed = pruned.mfs_removed;
        report.collected = pruned.collected;
        report.collection_skipped = pruned.collection_skipped;
        report.warnings.extend(pruned.warnings);
    }

    write_result(&report, out).context("cannot write the result of the publication")?;
    Ok(report)
}

/// The result lines: `nixfs: /ipfs/<CID>`, then `published: /ipns/<NAME>` and `car: <FILE>`
/// when they apply.
fn write_result(report: &PublishReport, out: &mut (dyn Write + Send)) -> std::io::Result<()> {
    writeln!(out, "nixfs: /ipfs/{}", report.root)?;
    if let Some(name) = &report.ipns_name {
        writeln!(out, "published: /ipns/{name}")?;
    }
    if let Some(car) = &report.car_file {
        writeln!(out, "car: {}", car.display())?;
    }
    out.flush()
}

/// Record in `roots` (its index in `begun`), pin (with repair), MFS copy, verification and
/// IPNS.
#[allow(clippy::too_many_arguments)]
async fn finish_on_node(
    opts: &PublishOptions,
    node: &Node,
    dir: &Path,
    layout: Layout,
    walked: &Walked,
    roots: &mut RootLog,
    begun: &mut Option<usize>,
    report: &mut PublishReport,
) -> Result<()> {
    let root = walked.root.cid;
    // A root pinned recursively has every block on the node, and pinning it again makes
    // some nodes walk the whole DAG: on a rerun with nothing new, that is most of the time.
    report.already_pinned = node.client.pinned_recursively(&root).await.unwrap_or(false);
    // Recorded before the pin, so that a run that stops after pinning leaves a record. A root
    // published from here before (nothing changed since) takes up its record and MFS copy,
    // unless that path holds something else now.
    let time = unix_time();
    let prefix = format!("{}_", opts.mfs_prefix);
    // The earlier record, and whether its MFS path still holds the root.
    let mut earlier = None;
    if let Some(index) = roots.published(&node.peer, &root) {
        let path = &roots.records()[index].mfs_path;
        if path.starts_with(&prefix) {
            match node.client.files_stat(path).await? {
                Some(stat) if stat.cid != root => {}
                stat => earlier = Some((index, stat.is_some())),
            }
        }
    }
    let (mfs_path, in_mfs) = match earlier {
        Some((index, in_mfs)) => {
            let index = roots.republish(index, time, !report.already_pinned)?;
            let path = roots.records()[index].mfs_path.clone();
            tracing::info!("{root} was published from this mirror before, at MFS {path}");
            *begun = Some(index);
            (path, in_mfs)
        }
        None => {
            let mfs_path = format!("{prefix}{time}");
            *begun = Some(roots.begin(RootRecord {
                root,
                node: node.peer.clone(),
                time,
                state: RootState::Pending,
                pinned_here: !report.already_pinned || roots.owns_pin(&node.peer, &root),
                mfs_path: mfs_path.clone(),
            })?);
            (mfs_path, false)
        }
    };
    if report.already_pinned {
        tracing::info!("{root} is already pinned");
    } else if let Err(e) = node.client.pin_add(&root).await {
        tracing::warn!(
            "pinning {root} failed ({e}): some blocks are missing on the node; \
             asking it which it has and sending the others"
        );
        let blocks = node
            .client
            .refs_local()
            .await
            .context("listing the node's blocks to repair the publication")?;
        let knowledge = NodeKnowledge {
            known: CidSet::new(),
            blocks: Some(blocks),
            trust_roots: false,
            marked: None,
        };
        let repair = pass(
            dir.to_path_buf(),
            FileCache::new(),
            None,
            Some(node.target(knowledge, opts)),
            PassOptions {
                layout,
                car: None,
                concurrency: opts.concurrency,
                read_all: true,
                verify_files: 0,
            },
        )
        .await
        .context("sending the blocks missing on the node")?;
        if repair.walked.root.cid != root {
            bail!(
                "the mirror changed while it was published (root {root}, then {}); run again",
                repair.walked.root.cid
            );
        }
        report.sent.add(&repair.sent);
        report.repaired = true;
        node.client
            .pin_add(&root)
            .await
            .with_context(|| format!("pinning {root} after sending the missing blocks"))?;
    }

    if !in_mfs {
        copy_to_mfs(&node.client, &root, &mfs_path).await?;
    }
    report.mfs_path = Some(mfs_path.clone());

    report.verified_paths = verify_on_node(&node.client, &mfs_path, &root, &walked.sample)
        .await
        .context("checking the published tree on the node")?;

    if opts.publish_ipns {
        let published = node
            .client
            .name_publish(&root, opts.ipns_lifetime, opts.ipns_key.as_deref())
            .await
            .context("publishing the root to IPNS")?;
        report.ipns_name = Some(published.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn options_are_checked_before_anything_happens() {
        let dir = tempfile::tempdir().unwrap();
        let base = PublishOptions {
            dir: dir.path().to_path_buf(),
            ..PublishOptions::default()
        };
        let cases = [
            (
                PublishOptions {
                    cid_version: Some(2),
                    ..base.clone()
                },
                "--cid-version",
            ),
            (
                PublishOptions {
                    api: None,
                    ..base.clone()
                },
                "nothing to do",
            ),
            (
                PublishOptions {
                    keep: 0,
                    ..base.clone()
                },
                "--ipfs-keep",
            ),
            (
                PublishOptions {
                    mfs_prefix: "nixfs".into(),
                    ..base.clone()
                },
                "MFS prefix",
            ),
            (
                PublishOptions {
                    dir: dir.path().join("missing"),
                    ..base.clone()
                },
                "does not exist",
            ),
        ];
        for (opts, expected) in cases {
            let mut out = Vec::new();
            let err = publish(&opts, &mut out).await.unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{err:#}");
            assert!(out.is_empty());
        }
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none());
    }

    #[tokio::test]
    async fn car_only_needs_no_node() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("binary_cache/nar")).unwrap();
        std::fs::write(
            dir.path().join("binary_cache/nix-cache-info"),
            b"StoreDir: /nix/store\n",
        )
        .unwrap();
        let car = dir.path().join("out.car");
        let mut out = Vec::new();
        let report = publish(
            &PublishOptions {
                dir: dir.path().to_path_buf(),
                api: None,
                car: Some(car.clone()),
                ..PublishOptions::default()
            },
            &mut out,
        )
        .await
        .unwrap();
        assert!(report.node.is_none() && report.ipns_name.is_none());
        let bytes = std::fs::read(&car).unwrap();
        let reader = crate::ipfs::car::CarReader::new(&bytes[..]).unwrap();
        assert_eq!(reader.roots(), &[report.root]);
        assert!(dir.path().join(CACHE_FILE).is_file());
        assert!(!dir.path().join(IPFS_ROOT_FILE).exists());
        let car_file = report.car_file.as_ref().unwrap();
        assert!(car_file.is_absolute() && car_file.ends_with("out.car"));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            format!(
                "nixfs: /ipfs/{}\ncar: {}\n",
                report.root,
                car_file.display()
            )
        );
    }
}
