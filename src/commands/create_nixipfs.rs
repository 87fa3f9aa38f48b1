//! `create-nixipfs`: publish the mirror in `--dir` to an IPFS node, or write it as a CAR file.
//!
//! The steps (the work itself is in [`crate::ipfs`]):
//! 1. Reach the node (`version`) before anything else: an unreachable node is an error that
//!    names the address, unless a CAR file was asked for, which is then written alone.
//! 2. Learn the node's peer ID and whether it has `dag/import`; load `D/ipfs_hashes`; when
//!    that cache holds no record for this node, ask the node which blocks it has
//!    (`refs/local`).
//! 3. Scan the mirror and build its DAG ([`crate::ipfs::publish`]), streaming the blocks the
//!    node lacks to `dag/import` (or `add`/`block/put` without it) and every block to the CAR
//!    file.
//! 4. Pin the root unless `pin/ls` shows it pinned already (`pin/add`, which also proves that
//!    the node holds every block; if it fails, ask `refs/local` and send what is missing,
//!    then pin again), copy it into MFS as `/nixfs_<unixtime>`, check with `files/stat` that
//!    the root and a sample of paths have the CIDs computed here, and publish it to IPNS.
//! 5. Write each release's `ipfs_hash`, `D/ipfs_root` and `D/ipfs_hashes` (atomically, and
//!    only these files: a failure leaves the mirror as it was, apart from the cache of file
//!    CIDs, which stays valid).
//!
//! Standard output gets `nixfs: /ipfs/<CID>`, `published: /ipns/<NAME>` and, with a CAR
//! file, `car: <FILE>`. This command takes no lock: the caller holds the mirror's lock.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};

use crate::ipfs::api_addr::ApiAddr;
use crate::ipfs::cid::Cid;
use crate::ipfs::client::{IpfsClient, IpfsError, Timeouts};
use crate::ipfs::file_cache::{FileCache, LoadOutcome, CACHE_FILE};
use crate::ipfs::publish::{
    self, BuildOptions, Built, MirrorTree, PublishError, ScanOptions, IPFS_HASH_FILE,
    IPFS_ROOT_FILE,
};
use crate::ipfs::unixfs::AddOptions;
use crate::ipfs::upload::{NodeKnowledge, NodeMethod, NodeTarget, Router, SendStats};

pub use crate::ipfs::publish::PublishReport;

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

/// Options of `create-nixipfs` (and of the IPFS step of `release-nixos`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateNixipfsOptions {
    /// The mirror directory (`--dir`).
    pub dir: PathBuf,
    /// The node's API (`--ipfsapi`); `None` to write only the CAR file.
    pub api: Option<ApiAddr>,
    /// Write the whole DAG to this CAR file (`--car`).
    pub car: Option<PathBuf>,
    /// CID version of dag-pb nodes, 0 or 1 (`--cid-version`). Leaves are raw either way.
    pub cid_version: u8,
    /// Publish the root to IPNS (off with `--no-ipns`).
    pub publish_ipns: bool,
    /// Lifetime of the IPNS record (`--ipns-lifetime`, 2h by default).
    pub ipns_lifetime: Duration,
    /// Key to publish under (`--ipns-key`); the node's own key when `None`.
    pub ipns_key: Option<String>,
    /// Threads hashing files (`--concurrency`).
    pub concurrency: usize,
    /// MFS path prefix; the root goes to `<prefix>_<unixtime>` (`/nixfs` as the original).
    pub mfs_prefix: String,
    /// Deadlines of the node's calls (`--timeout`, `--long-timeout`).
    pub timeouts: Timeouts,
    /// Bytes of CAR per `dag/import` request.
    pub segment_bytes: u64,
    /// How blocks reach the node.
    pub method: SendMethod,
    /// Files to check on the node with `files/stat` after publishing (directories down to
    /// the releases are always checked).
    pub verify_files: usize,
    /// Print the result lines on standard output.
    pub print: bool,
}

impl Default for CreateNixipfsOptions {
    fn default() -> Self {
        CreateNixipfsOptions {
            dir: PathBuf::from("."),
            api: Some(ApiAddr::default()),
            car: None,
            cid_version: 0,
            publish_ipns: true,
            ipns_lifetime: Duration::from_secs(2 * 3600),
            ipns_key: None,
            concurrency: 4,
            mfs_prefix: "/nixfs".to_string(),
            timeouts: Timeouts::default(),
            segment_bytes: 1 << 30,
            method: SendMethod::Auto,
            verify_files: 16,
            print: true,
        }
    }
}

struct Node {
    client: IpfsClient,
    peer: String,
    method: NodeMethod,
}

/// Everything one pass over the mirror produced.
struct Pass {
    cache: FileCache,
    tree: MirrorTree,
    built: Built,
    sent: SendStats,
}

/// Scans the mirror and builds its DAG on a blocking thread, delivering blocks to `car` and
/// `node`.
async fn pass(
    dir: PathBuf,
    cache: FileCache,
    add: AddOptions,
    car: Option<PathBuf>,
    node: Option<NodeTarget>,
    concurrency: usize,
    read_all: bool,
) -> Result<Pass, PublishError> {
    tokio::task::spawn_blocking(move || {
        let can_trust = car.is_none() && node.is_some();
        let knowledge = node
            .as_ref()
            .map(|n| n.knowledge.clone())
            .unwrap_or_default();
        let trust = move |cid: &Cid| can_trust && knowledge.known.contains(cid);
        let tree = MirrorTree::scan(
            &dir,
            &ScanOptions {
                add,
                cache: &cache,
                trust_release: &trust,
            },
        )?;
        let router = Router::new(car.as_deref(), add.cid_version, node)?;
        let built = publish::build(
            &tree,
            &cache,
            &router,
            BuildOptions {
                add,
                concurrency,
                read_all,
            },
        )?;
        let sent = router.finish(&built.root.cid)?;
        Ok(Pass {
            cache,
            tree,
            built,
            sent,
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

fn check_options(opts: &CreateNixipfsOptions) -> Result<()> {
    if opts.cid_version > 1 {
        bail!("--cid-version must be 0 or 1, not {}", opts.cid_version);
    }
    if !opts.mfs_prefix.starts_with('/')
        || opts.mfs_prefix.ends_with('/')
        || opts.mfs_prefix.contains("//")
    {
        bail!(
            "the MFS prefix {:?} must be an absolute MFS path without a trailing /",
            opts.mfs_prefix
        );
    }
    if opts.api.is_none() && opts.car.is_none() {
        bail!("nothing to do: neither an IPFS API address nor a CAR file (--car) was given");
    }
    if !opts.dir.is_dir() {
        bail!("the mirror directory {} does not exist", opts.dir.display());
    }
    Ok(())
}

/// Reaches the node; `Ok(None)` when it cannot be reached and a CAR file is written instead.
async fn connect(opts: &CreateNixipfsOptions) -> Result<Option<Node>> {
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

/// Publishes the mirror (see the module documentation).
pub async fn run(opts: &CreateNixipfsOptions) -> Result<PublishReport> {
    check_options(opts)?;
    let node = connect(opts).await?;
    let dir = crate::fsutil::absolute(&opts.dir)?;
    let add = AddOptions {
        cid_version: opts.cid_version,
        raw_leaves: true,
    };
    let cache_path = dir.join(CACHE_FILE);
    let (cache, outcome) = FileCache::load(&cache_path)
        .with_context(|| format!("reading {}", cache_path.display()))?;
    match &outcome {
        LoadOutcome::Ignored { reason } => tracing::warn!(
            "{}: not used ({reason}); every file is hashed again",
            cache_path.display()
        ),
        LoadOutcome::Loaded { files, .. } => {
            tracing::debug!("{}: {files} files", cache_path.display())
        }
        LoadOutcome::Missing => {}
    }

    let mut target = None;
    let mut known_before = Default::default();
    if let Some(node) = &node {
        let known = cache.known_on_node(&node.peer);
        known_before = known.clone();
        let blocks = if known.is_empty() {
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
        target = Some(NodeTarget {
            client: node.client.clone(),
            runtime: tokio::runtime::Handle::current(),
            method: node.method,
            knowledge: NodeKnowledge {
                known,
                blocks,
                trust_roots: true,
            },
            segment_bytes: opts.segment_bytes.max(1),
        });
    }
    let car = opts
        .car
        .as_ref()
        .map(|c| crate::fsutil::absolute(c))
        .transpose()?;
    let Pass {
        mut cache,
        tree,
        built,
        sent,
    } = pass(
        dir.clone(),
        cache,
        add,
        car.clone(),
        target,
        opts.concurrency,
        false,
    )
    .await
    .context("building the DAG of the mirror")?;
    let root = built.root.cid;
    publish::update_cache(&mut cache, &tree, &built);

    let mut report = PublishReport {
        root,
        root_size: built.root.tsize,
        node: node.as_ref().map(|n| n.peer.clone()),
        mfs_path: None,
        ipns_name: None,
        car_file: car,
        releases: publish::release_cids(&tree, &built)
            .into_iter()
            .map(|(key, _, cid)| (key, cid))
            .collect(),
        hashing: built.stats.clone(),
        sent,
        repaired: false,
        already_pinned: false,
        verified_paths: 0,
        warnings: tree.warnings.clone(),
    };

    if let Some(node) = &node {
        let outcome = finish_on_node(opts, node, &dir, add, &tree, &built, &mut report).await;
        let known_now = match outcome {
            Err(e) => {
                if let Err(save) = cache.save(&cache_path) {
                    tracing::warn!("{save:#}");
                }
                return Err(e);
            }
            // After a repair only what was checked is known.
            Ok(Some(repaired)) => repaired,
            // The DAGs known before are still pinned (and they hold the insides of the
            // releases taken by their ipfs_hash, which this pass did not look at).
            Ok(None) => {
                let mut known = built.all_cids(&tree);
                known.extend(known_before);
                known
            }
        };
        cache.set_known_on_node(&node.peer, known_now);
        for (_, path, cid) in publish::release_cids(&tree, &built) {
            crate::fsutil::write_if_changed(
                &path.join(IPFS_HASH_FILE),
                format!("{cid}\n").as_bytes(),
            )?;
        }
        crate::fsutil::write_if_changed(&dir.join(IPFS_ROOT_FILE), format!("{root}\n").as_bytes())?;
    }
    cache
        .save(&cache_path)
        .with_context(|| format!("writing {}", cache_path.display()))?;

    tracing::info!("{}", report.summary());
    if opts.print {
        println!("nixfs: /ipfs/{root}");
        if let Some(name) = &report.ipns_name {
            println!("published: /ipns/{name}");
        }
        if let Some(car) = &report.car_file {
            println!("car: {}", car.display());
        }
    }
    Ok(report)
}

/// Pin (with repair), MFS copy, verification and IPNS. After a repair, returns every CID of
/// the DAG that was checked.
async fn finish_on_node(
    opts: &CreateNixipfsOptions,
    node: &Node,
    dir: &Path,
    add: AddOptions,
    tree: &MirrorTree,
    built: &Built,
    report: &mut PublishReport,
) -> Result<Option<HashSet<Cid>>> {
    let root = built.root.cid;
    let mut repaired = None;
    // A root pinned recursively has every block on the node, and pinning it again makes
    // some nodes walk the whole DAG: on a rerun with nothing new, that is most of the time.
    report.already_pinned = matches!(
        node.client.pin_ls(&root).await.ok().flatten().as_deref(),
        Some("recursive")
    );
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
        let target = NodeTarget {
            client: node.client.clone(),
            runtime: tokio::runtime::Handle::current(),
            method: node.method,
            knowledge: NodeKnowledge {
                known: Default::default(),
                blocks: Some(blocks),
                trust_roots: false,
            },
            segment_bytes: opts.segment_bytes.max(1),
        };
        let repair = pass(
            dir.to_path_buf(),
            FileCache::new(),
            add,
            None,
            Some(target),
            opts.concurrency,
            true,
        )
        .await
        .context("sending the blocks missing on the node")?;
        if repair.built.root.cid != root {
            bail!(
                "the mirror changed while it was published (root {root}, then {}); run again",
                repair.built.root.cid
            );
        }
        add_stats(&mut report.sent, &repair.sent);
        report.repaired = true;
        repaired = Some(repair.built.all_cids(&repair.tree));
        node.client
            .pin_add(&root)
            .await
            .with_context(|| format!("pinning {root} after sending the missing blocks"))?;
    }

    let mfs_path = format!("{}_{}", opts.mfs_prefix, unix_time());
    copy_to_mfs(&node.client, &root, &mfs_path).await?;
    report.mfs_path = Some(mfs_path.clone());

    let sample = publish::verification_sample(&built.paths(tree), opts.verify_files);
    report.verified_paths = publish::verify_on_node(&node.client, &mfs_path, &root, &sample)
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
    Ok(repaired)
}

fn add_stats(total: &mut SendStats, more: &SendStats) {
    total.blocks_sent += more.blocks_sent;
    total.block_bytes_sent += more.block_bytes_sent;
    total.import_requests += more.import_requests;
    total.car_bytes_sent += more.car_bytes_sent;
    total.add_calls += more.add_calls;
    total.add_bytes += more.add_bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn options_are_checked_before_anything_happens() {
        let dir = tempfile::tempdir().unwrap();
        let base = CreateNixipfsOptions {
            dir: dir.path().to_path_buf(),
            ..CreateNixipfsOptions::default()
        };
        let cases = [
            (
                CreateNixipfsOptions {
                    cid_version: 2,
                    ..base.clone()
                },
                "--cid-version",
            ),
            (
                CreateNixipfsOptions {
                    api: None,
                    ..base.clone()
                },
                "nothing to do",
            ),
            (
                CreateNixipfsOptions {
                    mfs_prefix: "nixfs".into(),
                    ..base.clone()
                },
                "MFS prefix",
            ),
            (
                CreateNixipfsOptions {
                    dir: dir.path().join("missing"),
                    ..base.clone()
                },
                "does not exist",
            ),
        ];
        for (opts, expected) in cases {
            let err = run(&opts).await.unwrap_err();
            assert!(format!("{err:#}").contains(expected), "{err:#}");
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
        let report = run(&CreateNixipfsOptions {
            dir: dir.path().to_path_buf(),
            api: None,
            car: Some(car.clone()),
            print: false,
            ..CreateNixipfsOptions::default()
        })
        .await
        .unwrap();
        assert!(report.node.is_none() && report.ipns_name.is_none());
        let bytes = std::fs::read(&car).unwrap();
        let reader = crate::ipfs::car::CarReader::new(&bytes[..]).unwrap();
        assert_eq!(reader.roots(), &[report.root]);
        assert!(dir.path().join(CACHE_FILE).is_file());
        assert!(!dir.path().join(IPFS_ROOT_FILE).exists());
    }
}
