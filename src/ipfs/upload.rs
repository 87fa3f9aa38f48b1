//! Where the blocks of the DAG go while it is being built: into a CAR file, and to the node —
//! as a CAR streamed to `dag/import`, or, for a node without `dag/import`, through `add` (one
//! call per file) and `block/put` (one call per directory block).
//!
//! # Which blocks the node already has
//!
//! Asking the node block by block (`block/stat`) is no good: js-ipfs never answers for a block
//! it lacks, so each absent block would cost a whole timeout, and a mirror has hundreds of
//! thousands of blocks. Instead [`NodeKnowledge`] combines two sources:
//! - **What was published before**, from the cache file (see [`crate::ipfs::file_cache`]):
//!   the CIDs of every file and directory of the last DAG that was imported and pinned on this
//!   node (recognised by its peer ID). A pinned DAG is complete, so a file or directory whose
//!   CID is among them needs no block at all, and an unchanged file is not even read. This
//!   is what makes a no-change rerun send nothing.
//! - **What the node says it holds** (`refs/local`, one streamed call listing every block),
//!   used when there is no record for this node (first publication, another node, a lost
//!   cache) and to repair: blocks it lists are not sent again, so an interrupted first
//!   publication resumes where it stopped.
//!
//! A record can be wrong (someone unpinned and garbage-collected, or a long import was
//! collected before its pin). The recursive `pin/add` of the new root, which needs every
//! block, catches that: publishing then asks `refs/local` and sends whatever is missing
//! (see [`crate::ipfs::publish::pipeline`]).
//!
//! Blocks go to the node in few large requests: one `dag/import` per `segment_bytes` of CAR
//! (the first block of each request names itself as the CAR's root; roots are not pinned on
//! import, the published root is pinned afterwards). A block is sent at most once per run.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tempfile::NamedTempFile;

use super::car::{self, CarError, CarWriter};
use super::cid::Cid;
use super::client::{block_key, DagImport, IpfsClient, IpfsError};
use super::profile::Layout;
use crate::progress::{Phase, Unit};

/// What is known about the blocks a node holds (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct NodeKnowledge {
    /// CIDs whose whole DAG the node holds.
    pub known: HashSet<Cid>,
    /// Every block the node holds ([`block_key`]s), when it was asked (`refs/local`).
    pub blocks: Option<HashSet<Cid>>,
    /// Whether a DAG whose root block the node holds counts as complete. True for a first
    /// publication (an import sends a file's root block after its leaves); false when
    /// repairing.
    pub trust_roots: bool,
}

impl NodeKnowledge {
    /// Whether the node holds the block `cid` (it lists it, or it is the root of a DAG the
    /// node holds: an unchanged small file under a new name, a file identical to another).
    pub fn has_block(&self, cid: &Cid) -> bool {
        self.known.contains(cid)
            || self
                .blocks
                .as_ref()
                .is_some_and(|b| b.contains(&block_key(cid)))
    }

    /// Whether the node holds the whole DAG under `cid`.
    pub fn has_dag(&self, cid: &Cid) -> bool {
        self.known.contains(cid) || (self.trust_roots && self.has_block(cid))
    }
}

/// How blocks reach the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeMethod {
    /// CARs streamed to `dag/import`.
    DagImport,
    /// `add` per file and `block/put` per directory block (nodes without `dag/import`).
    Add,
}

/// The node blocks are sent to.
#[derive(Debug)]
pub struct NodeTarget {
    /// Its client.
    pub client: IpfsClient,
    /// The runtime the client's calls run on (the router is driven from blocking threads).
    pub runtime: tokio::runtime::Handle,
    /// How blocks reach it.
    pub method: NodeMethod,
    /// What it already has.
    pub knowledge: NodeKnowledge,
    /// Bytes of CAR per `dag/import` request before a new one starts.
    pub segment_bytes: u64,
}

/// Counts of what was sent and written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendStats {
    /// Blocks sent to the node (in CARs or by `block/put`; `add` calls are counted apart).
    pub blocks_sent: u64,
    /// Bytes of those blocks.
    pub block_bytes_sent: u64,
    /// `dag/import` requests made.
    pub import_requests: u64,
    /// Bytes of CAR sent (headers and framing included).
    pub car_bytes_sent: u64,
    /// `add` calls made (the fallback for nodes without `dag/import`).
    pub add_calls: u64,
    /// Bytes sent by `add`.
    pub add_bytes: u64,
    /// Blocks written to the CAR file.
    pub car_file_blocks: u64,
    /// Bytes of the CAR file.
    pub car_file_bytes: u64,
}

impl SendStats {
    /// Adds what another pass sent to the node (the CAR file's counts are its own).
    pub fn add(&mut self, more: &SendStats) {
        self.blocks_sent += more.blocks_sent;
        self.block_bytes_sent += more.block_bytes_sent;
        self.import_requests += more.import_requests;
        self.car_bytes_sent += more.car_bytes_sent;
        self.add_calls += more.add_calls;
        self.add_bytes += more.add_bytes;
    }
}

/// Why blocks could not be delivered.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The node refused or failed.
    #[error(transparent)]
    Node(#[from] IpfsError),
    /// Writing the CAR file failed.
    #[error("writing the CAR file {path}: {source}")]
    Car {
        /// The CAR file.
        path: PathBuf,
        /// The error.
        #[source]
        source: Box<CarError>,
    },
    /// The node stored a file under another CID than the one computed here.
    #[error("the node added {what} as {got}, but it hashes to {expected} here")]
    CidMismatch {
        /// The file.
        what: String,
        /// The CID computed here.
        expected: String,
        /// The CID the node answered.
        got: String,
    },
    /// An earlier failure stopped the router.
    #[error("sending blocks stopped after an earlier failure: {0}")]
    Stopped(String),
}

struct CarOut {
    path: PathBuf,
    writer: CarWriter<BufWriter<NamedTempFile>>,
    written: HashSet<Cid>,
}

struct NodeState {
    target: NodeTarget,
    current: Option<DagImport>,
    sent: HashSet<Cid>,
    phase: Phase,
}

impl NodeState {
    /// Counts `len` bytes sent in the progress display.
    fn progress(&self, len: u64) {
        self.phase.inc_total(len);
        self.phase.inc(len);
    }
}

struct State {
    car: Option<CarOut>,
    node: Option<NodeState>,
    stats: SendStats,
    failure: Option<UploadError>,
}

/// Takes the blocks of the DAG from the threads that build it and delivers them (see the
/// module documentation). Shared by reference between those threads.
pub struct Router {
    state: Mutex<State>,
    node_method: Option<NodeMethod>,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router")
            .field("node_method", &self.node_method)
            .finish()
    }
}

/// A file to `add`: on disk, or bytes made here (a narinfo with its `IPFSHash` line).
#[derive(Debug, Clone, Copy)]
pub enum AddSource<'a> {
    /// A file on disk.
    Path(&'a Path),
    /// Bytes, with the name to send.
    Bytes(&'a str, &'a [u8]),
}

impl Router {
    /// A router writing every block to a new CAR file at `car` (if given; its root is set by
    /// [`Router::finish`], `cid_version` being that of the root) and sending to `node` what it
    /// lacks (if given).
    pub fn new(
        car: Option<&Path>,
        cid_version: u8,
        node: Option<NodeTarget>,
    ) -> Result<Router, UploadError> {
        let car = match car {
            Some(path) => Some(open_car(path, cid_version)?),
            None => None,
        };
        let node_method = node.as_ref().map(|n| n.method);
        let node = node.map(|target| NodeState {
            target,
            current: None,
            sent: HashSet::new(),
            phase: Phase::new("Sending blocks", Unit::Bytes, 0),
        });
        Ok(Router {
            state: Mutex::new(State {
                car,
                node,
                stats: SendStats::default(),
                failure: None,
            }),
            node_method,
        })
    }

    /// How blocks reach the node, if there is one.
    pub fn node_method(&self) -> Option<NodeMethod> {
        self.node_method
    }

    /// Whether a CAR file is being written.
    pub fn writes_car(&self) -> bool {
        self.lock().car.is_some()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the node holds the whole DAG under `cid` (false without a node).
    pub fn node_has_dag(&self, cid: &Cid) -> bool {
        self.lock()
            .node
            .as_ref()
            .is_some_and(|n| n.target.knowledge.has_dag(cid))
    }

    /// The failure that stopped the router, if any (taken: later calls see none).
    pub fn take_failure(&self) -> Option<UploadError> {
        self.lock().failure.take()
    }

    /// Takes one block: into the CAR file (once per CID), and — if `to_node` and the node
    /// lacks it and it was not sent yet — to the node. With [`NodeMethod::Add`] blocks go to
    /// the node by `block/put`, so only directory blocks should be given `to_node` there.
    pub fn put(&self, cid: &Cid, block: &[u8], to_node: bool) -> io::Result<()> {
        self.with_state(|state| put_locked(state, cid, block, to_node))
    }

    /// Runs `work` on the state unless an earlier failure stopped the router; a failure of
    /// `work` stops it. The caller gets the failure as an I/O error, as block sinks return
    /// them; [`Router::take_failure`] gives it back typed.
    fn with_state(
        &self,
        work: impl FnOnce(&mut State) -> Result<(), UploadError>,
    ) -> io::Result<()> {
        let mut state = self.lock();
        if let Some(failure) = &state.failure {
            return Err(io::Error::other(failure.to_string()));
        }
        work(&mut state).map_err(|e| {
            let error = io::Error::other(e.to_string());
            state.failure = Some(e);
            error
        })
    }

    /// `add`s one file to the node (the fallback method) with the layout's CID version,
    /// leaves and chunks, and checks that the node's CID is `expected` (`add` cannot be told
    /// the links per node: a file of more chunks than the node's default links per node gets
    /// another CID where the layout's differ, which is this error).
    pub fn add(&self, source: AddSource<'_>, expected: &Cid, layout: &Layout) -> io::Result<()> {
        let (options, chunk) = (layout.add, layout.chunk_size);
        self.with_state(|state| {
            let Some(node) = state.node.as_mut() else {
                return Ok(());
            };
            let client = node.target.client.clone();
            let runtime = &node.target.runtime;
            let (what, answer, len) = match source {
                AddSource::Path(path) => (
                    path.display().to_string(),
                    runtime.block_on(client.add_file_chunked(path, options, chunk))?,
                    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
                ),
                AddSource::Bytes(name, bytes) => (
                    name.to_string(),
                    runtime.block_on(client.add_bytes_chunked(
                        name,
                        bytes.to_vec(),
                        options,
                        chunk,
                    ))?,
                    bytes.len() as u64,
                ),
            };
            if answer.cid != *expected {
                return Err(UploadError::CidMismatch {
                    what,
                    expected: expected.to_string(),
                    got: answer.cid.to_string(),
                });
            }
            state.stats.add_calls += 1;
            state.stats.add_bytes += len;
            node.progress(len);
            Ok(())
        })
    }

    /// Ends the last `dag/import` request, sets the CAR file's root to `root` and moves it
    /// into place; returns what was sent and written.
    pub fn finish(self, root: &Cid) -> Result<SendStats, UploadError> {
        let mut state = self
            .state
            .into_inner()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(failure) = state.failure.take() {
            return Err(failure);
        }
        if let Some(node) = state.node.as_mut() {
            finish_import(node, &mut state.stats)?;
            node.phase.finish();
        }
        if let Some(car) = state.car.take() {
            let path = car.path.clone();
            let err = |source: CarError| UploadError::Car {
                path: path.clone(),
                source: Box::new(source),
            };
            let mut writer = car.writer;
            writer.replace_roots(&[*root]).map_err(err)?;
            state.stats.car_file_blocks = writer.blocks_written();
            state.stats.car_file_bytes = writer.bytes_written();
            let buffered = writer.finish().map_err(err)?;
            let file = buffered
                .into_inner()
                .map_err(|e| err(CarError::Io(e.into_error())))?;
            file.as_file()
                .sync_all()
                .map_err(|e| err(CarError::Io(e)))?;
            file.persist(&car.path)
                .map_err(|e| err(CarError::Io(e.error)))?;
        }
        Ok(state.stats)
    }
}

fn open_car(path: &Path, cid_version: u8) -> Result<CarOut, UploadError> {
    let err = |source: CarError| UploadError::Car {
        path: path.to_path_buf(),
        source: Box::new(source),
    };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Named and made like every other file of nixipfs: readable as a new file is (0666 less
    // the umask), since it is handed to another host or served.
    let file = crate::fsutil::temp_file_in(dir).map_err(|e| err(CarError::Io(e)))?;
    let placeholder = car::placeholder_root(cid_version).map_err(|e| {
        err(CarError::Cid {
            location: "root".to_string(),
            error: e,
        })
    })?;
    let writer =
        CarWriter::new(BufWriter::with_capacity(1 << 20, file), &[placeholder]).map_err(err)?;
    Ok(CarOut {
        path: path.to_path_buf(),
        writer,
        written: HashSet::new(),
    })
}

fn put_locked(
    state: &mut State,
    cid: &Cid,
    block: &[u8],
    to_node: bool,
) -> Result<(), UploadError> {
    if let Some(car) = state.car.as_mut() {
        if car.written.insert(*cid) {
            car.writer
                .write_block(cid, block)
                .map_err(|source| UploadError::Car {
                    path: car.path.clone(),
                    source: Box::new(source),
                })?;
        }
    }
    let Some(node) = state.node.as_mut() else {
        return Ok(());
    };
    if !to_node || node.target.knowledge.has_block(cid) || !node.sent.insert(block_key(cid)) {
        return Ok(());
    }
    let len = block.len() as u64;
    match node.target.method {
        NodeMethod::Add => {
            let client = node.target.client.clone();
            node.target
                .runtime
                .block_on(client.block_put(cid, block.to_vec()))?;
        }
        NodeMethod::DagImport => {
            let import = match node.current.as_mut() {
                Some(import) => import,
                None => {
                    let import = {
                        let _guard = node.target.runtime.enter();
                        node.target.client.start_dag_import(cid)
                    };
                    state.stats.import_requests += 1;
                    node.current.insert(import)
                }
            };
            node.target.runtime.block_on(import.send(cid, block))?;
            if import.progress().car_bytes >= node.target.segment_bytes {
                finish_import(node, &mut state.stats)?;
            }
        }
    }
    state.stats.blocks_sent += 1;
    state.stats.block_bytes_sent += len;
    node.progress(len);
    Ok(())
}

fn finish_import(node: &mut NodeState, stats: &mut SendStats) -> Result<(), UploadError> {
    if let Some(import) = node.current.take() {
        let answer = node.target.runtime.block_on(import.finish())?;
        stats.car_bytes_sent += answer.car_bytes;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::car::CarReader;
    use crate::ipfs::cid::RAW;

    #[test]
    fn car_file_gets_every_block_once_and_the_real_root() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.car");
        let router = Router::new(Some(&path), 0, None).unwrap();
        assert!(router.writes_car());
        assert_eq!(router.node_method(), None);
        let a = Cid::sha2_256(1, RAW, b"a").unwrap();
        let b = Cid::sha2_256(1, RAW, b"b").unwrap();
        router.put(&a, b"a", true).unwrap();
        router.put(&b, b"b", false).unwrap();
        router.put(&a, b"a", true).unwrap();
        let root = crate::ipfs::directory::DirectoryBuilder::new(0)
            .build_basic()
            .unwrap();
        router.put(&root.cid, &root.block, true).unwrap();
        let stats = router.finish(&root.cid).unwrap();
        assert_eq!(stats.car_file_blocks, 3);
        assert_eq!(stats.blocks_sent, 0);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(stats.car_file_bytes, bytes.len() as u64);
        let mut reader = CarReader::new(&bytes[..]).unwrap();
        assert_eq!(reader.roots(), &[root.cid]);
        let mut cids = Vec::new();
        while let Some((cid, _)) = reader.next_block().unwrap() {
            cids.push(cid);
        }
        assert_eq!(cids, vec![a, b, root.cid]);
        // No temporary file is left next to it.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("out.car")]);
    }

    #[test]
    fn knowledge_of_blocks_and_dags() {
        let a = Cid::sha2_256(1, RAW, b"a").unwrap();
        let v0 = Cid::parse("QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn").unwrap();
        let mut k = NodeKnowledge::default();
        assert!(!k.has_block(&a) && !k.has_dag(&a));
        k.known.insert(a);
        assert!(k.has_dag(&a) && k.has_block(&a));
        k.blocks = Some([block_key(&v0)].into_iter().collect());
        assert!(k.has_block(&v0) && k.has_block(&v0.to_v1()));
        assert!(!k.has_dag(&v0));
        k.trust_roots = true;
        assert!(k.has_dag(&v0));
    }

    #[test]
    fn unwritable_car_location_is_an_error() {
        let err = Router::new(Some(Path::new("/nonexistent-dir/x.car")), 0, None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.car"), "{err}");
    }
}
