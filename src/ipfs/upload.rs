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
//!   every file and directory of the last DAG that was imported and pinned on this node
//!   (recognised by its peer ID): the directories' CIDs, and a mark on each file's entry. A
//!   pinned DAG is complete, so a marked file or a directory whose CID is among them needs no
//!   block at all, and an unchanged file is not even read. This is what makes a no-change
//!   rerun send nothing.
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
//!
//! The CAR file gets every block once, but for a block that recurs far apart in the DAG
//! (see `RecentBlocks`).
//!
//! No lock is held during a network call, so a slow node never stalls the threads that hash:
//! the `dag/import` requests are made by a thread of their own, fed through a queue of a few
//! blocks (a hashing thread waits only when that queue is full), and `add` and `block/put`
//! run on the calling thread, several at once.

use std::fmt;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use tempfile::NamedTempFile;

use super::car::{self, CarError, CarWriter};
use super::cid::{Cid, CidSet};
use super::client::{block_key, DagImport, IpfsClient, IpfsError};
use super::file_cache::MarkedFiles;
use super::profile::Layout;
use crate::progress::{Phase, Unit};

/// What is known about the blocks a node holds (see the module documentation).
#[derive(Debug, Clone, Default)]
pub struct NodeKnowledge {
    /// CIDs whose whole DAG the node holds.
    pub known: CidSet,
    /// Every block the node holds ([`block_key`]s), when it was asked (`refs/local`).
    pub blocks: Option<CidSet>,
    /// Whether a DAG whose root block the node holds counts as complete. True for a first
    /// publication (an import sends a file's root block after its leaves); false when
    /// repairing.
    pub trust_roots: bool,
    /// The files the cache of file CIDs marks as on this node (each has its whole DAG on
    /// it), when its marks are for this node; their CIDs are read from the cache when first
    /// needed (a run that sends nothing never reads them).
    pub marked: Option<Arc<MarkedCids>>,
}

/// CIDs whose whole DAG the node holds, read from the cache of file CIDs when first asked for.
#[derive(Debug)]
pub struct MarkedCids {
    source: Mutex<Option<MarkedFiles>>,
    set: std::sync::OnceLock<CidSet>,
}

impl MarkedCids {
    /// The CIDs of the files `marked`, to be read when first asked for.
    pub fn new(marked: MarkedFiles) -> MarkedCids {
        MarkedCids {
            source: Mutex::new(Some(marked)),
            set: std::sync::OnceLock::new(),
        }
    }

    /// Whether `cid` is one of them.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.set
            .get_or_init(|| {
                lock(&self.source)
                    .take()
                    .map(MarkedFiles::read)
                    .unwrap_or_default()
            })
            .contains(cid)
    }
}

impl NodeKnowledge {
    /// Whether the node holds the block `cid` (it lists it, or it is the root of a DAG the
    /// node holds: an unchanged small file under a new name, a file identical to another).
    pub fn has_block(&self, cid: &Cid) -> bool {
        self.known.contains(cid)
            || self.marked.as_ref().is_some_and(|m| m.contains(cid))
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
    writer: CarWriter<BufWriter<WritingBack>>,
    written: RecentBlocks,
}

/// Bytes of the CAR file written between two hand-overs to the kernel's write-back.
const WRITE_BACK_BYTES: u64 = 16 << 20;

/// The CAR file being written, its bytes handed to the kernel's write-back as they go (every
/// [`WRITE_BACK_BYTES`]), so that making the file durable at the end waits for little.
struct WritingBack {
    file: NamedTempFile,
    written: u64,
    handed: u64,
}

impl WritingBack {
    fn new(file: NamedTempFile) -> WritingBack {
        WritingBack {
            file,
            written: 0,
            handed: 0,
        }
    }
}

impl io::Write for WritingBack {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.written += n as u64;
        if self.written - self.handed >= WRITE_BACK_BYTES {
            start_write_back(self.file.as_file(), self.handed, self.written - self.handed);
            self.handed = self.written;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl io::Seek for WritingBack {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        self.file.seek(pos)
    }
}

/// Starts writing `len` bytes of `file` from `offset` back to the disk, without waiting (a
/// hint: a failure shows when the file is synced).
fn start_write_back(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return;
        };
        // SAFETY: sync_file_range reads no memory of ours; the descriptor is open for the
        // call's duration (borrowed from `file`).
        unsafe {
            libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// The blocks written last, to write a block once however often the DAG holds it: two
/// generations of at most [`RECENT_BLOCKS`] CIDs, so that memory stays the same whatever the
/// size of the mirror. A block that recurs only after more blocks than that (the same small
/// file in two places far apart) is written again, which a CAR file allows.
#[derive(Debug, Default)]
struct RecentBlocks {
    current: CidSet,
    previous: CidSet,
}

/// CIDs per generation of [`RecentBlocks`].
const RECENT_BLOCKS: usize = 64 * 1024;

impl RecentBlocks {
    /// Adds `cid`; false if it was written recently.
    fn insert(&mut self, cid: Cid) -> bool {
        if self.previous.contains(&cid) || !self.current.insert(cid) {
            return false;
        }
        if self.current.len() >= RECENT_BLOCKS {
            self.previous = std::mem::take(&mut self.current);
        }
        true
    }
}

/// Blocks queued for the thread that streams them to `dag/import`: enough to keep it busy,
/// few enough to bound the memory they take (at most this many chunks).
const IMPORT_QUEUE_BLOCKS: usize = 16;

/// A block on its way to the `dag/import` thread.
type QueuedBlock = (Cid, Vec<u8>);

/// The node side of the router. Nothing here is locked during a network call: `add` and
/// `block/put` run on the calling thread with no lock held, and `dag/import` requests are made
/// by one thread of their own, fed through a bounded queue.
struct NodeSide {
    client: IpfsClient,
    runtime: tokio::runtime::Handle,
    knowledge: NodeKnowledge,
    /// Blocks already given to the node in this run ([`block_key`]s).
    sent: Mutex<CidSet>,
    phase: Phase,
    /// The queue of the `dag/import` thread, and the thread.
    import: Option<(SyncSender<QueuedBlock>, JoinHandle<SendStats>)>,
}

/// Takes the blocks of the DAG from the threads that build it and delivers them (see the
/// module documentation). Shared by reference between those threads.
pub struct Router {
    car: Mutex<Option<CarOut>>,
    node: Option<NodeSide>,
    /// What `add` and `block/put` sent (the `dag/import` thread counts its own).
    stats: Mutex<SendStats>,
    /// The first failure; it stops the router.
    failure: Arc<Mutex<Option<UploadError>>>,
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

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        let failure = Arc::new(Mutex::new(None));
        let node_method = node.as_ref().map(|n| n.method);
        let node = node.map(|target| {
            let phase = Phase::new("Sending blocks", Unit::Bytes, 0);
            let import = (target.method == NodeMethod::DagImport).then(|| {
                let (queue, blocks) = sync_channel(IMPORT_QUEUE_BLOCKS);
                let sender = ImportSender {
                    client: target.client.clone(),
                    runtime: target.runtime.clone(),
                    segment_bytes: target.segment_bytes,
                    phase: phase.clone(),
                    failure: Arc::clone(&failure),
                };
                let thread = std::thread::Builder::new()
                    .name("dag-import".into())
                    .spawn(move || sender.run(blocks))
                    .expect("starting the dag/import thread");
                (queue, thread)
            });
            NodeSide {
                client: target.client,
                runtime: target.runtime,
                knowledge: target.knowledge,
                sent: Mutex::new(CidSet::new()),
                phase,
                import,
            }
        });
        Ok(Router {
            car: Mutex::new(car),
            node,
            stats: Mutex::new(SendStats::default()),
            failure,
            node_method,
        })
    }

    /// How blocks reach the node, if there is one.
    pub fn node_method(&self) -> Option<NodeMethod> {
        self.node_method
    }

    /// Whether a CAR file is being written.
    pub fn writes_car(&self) -> bool {
        lock(&self.car).is_some()
    }

    /// Whether the node holds the whole DAG under `cid` (false without a node).
    pub fn node_has_dag(&self, cid: &Cid) -> bool {
        self.node.as_ref().is_some_and(|n| n.knowledge.has_dag(cid))
    }

    /// Whether the cache's marks of files are for the node (false without a node).
    pub fn node_marks_hold(&self) -> bool {
        self.node
            .as_ref()
            .is_some_and(|n| n.knowledge.marked.is_some())
    }

    /// The failure that stopped the router, if any (taken: later calls see none).
    pub fn take_failure(&self) -> Option<UploadError> {
        lock(&self.failure).take()
    }

    /// The failure that stopped the router, as the I/O error block sinks return.
    fn stopped(&self) -> io::Result<()> {
        match &*lock(&self.failure) {
            Some(failure) => Err(io::Error::other(failure.to_string())),
            None => Ok(()),
        }
    }

    /// Records `error` as the failure (unless there is one already) and returns it as an I/O
    /// error; [`Router::take_failure`] gives it back typed.
    fn fail(&self, error: UploadError) -> io::Error {
        let io = io::Error::other(error.to_string());
        lock(&self.failure).get_or_insert(error);
        io
    }

    /// Takes one block: into the CAR file (once per CID), and — if `to_node` and the node
    /// lacks it and it was not sent yet — to the node. With [`NodeMethod::Add`] blocks go to
    /// the node by `block/put`, so only directory blocks should be given `to_node` there.
    pub fn put(&self, cid: &Cid, block: &[u8], to_node: bool) -> io::Result<()> {
        self.stopped()?;
        if let Some(car) = lock(&self.car).as_mut() {
            if car.written.insert(*cid) {
                car.writer.write_block(cid, block).map_err(|source| {
                    self.fail(UploadError::Car {
                        path: car.path.clone(),
                        source: Box::new(source),
                    })
                })?;
            }
        }
        let Some(node) = &self.node else {
            return Ok(());
        };
        if !to_node || node.knowledge.has_block(cid) || !lock(&node.sent).insert(block_key(cid)) {
            return Ok(());
        }
        let len = block.len() as u64;
        match &node.import {
            Some((queue, _)) => {
                // Waits only while the queue is full; the thread counts what it sends.
                if queue.send((*cid, block.to_vec())).is_err() {
                    // The thread stopped after recording its failure.
                    self.stopped()?;
                    return Err(io::Error::other("the dag/import thread stopped"));
                }
            }
            None => {
                let client = node.client.clone();
                node.runtime
                    .block_on(client.block_put(cid, block.to_vec()))
                    .map_err(|e| self.fail(e.into()))?;
                let mut stats = lock(&self.stats);
                stats.blocks_sent += 1;
                stats.block_bytes_sent += len;
                node.phase.inc_total(len);
                node.phase.inc(len);
            }
        }
        Ok(())
    }

    /// `add`s one file to the node (the fallback method) with the layout's CID version,
    /// leaves and chunks, and checks that the node's CID is `expected` (`add` cannot be told
    /// the links per node: a file of more chunks than the node's default links per node gets
    /// another CID where the layout's differ, which is this error). Several threads may add
    /// at once.
    pub fn add(&self, source: AddSource<'_>, expected: &Cid, layout: &Layout) -> io::Result<()> {
        self.stopped()?;
        let Some(node) = &self.node else {
            return Ok(());
        };
        let (options, chunk) = (layout.add, layout.chunk_size);
        let client = node.client.clone();
        let result = match source {
            AddSource::Path(path) => node
                .runtime
                .block_on(client.add_file_chunked(path, options, chunk))
                .map(|answer| {
                    let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
                    (path.display().to_string(), answer, len)
                }),
            AddSource::Bytes(name, bytes) => node
                .runtime
                .block_on(client.add_bytes_chunked(name, bytes.to_vec(), options, chunk))
                .map(|answer| (name.to_string(), answer, bytes.len() as u64)),
        };
        let (what, answer, len) = result.map_err(|e| self.fail(e.into()))?;
        if answer.cid != *expected {
            return Err(self.fail(UploadError::CidMismatch {
                what,
                expected: expected.to_string(),
                got: answer.cid.to_string(),
            }));
        }
        let mut stats = lock(&self.stats);
        stats.add_calls += 1;
        stats.add_bytes += len;
        node.phase.inc_total(len);
        node.phase.inc(len);
        Ok(())
    }

    /// Ends the last `dag/import` request, sets the CAR file's root to `root` and moves it
    /// into place; returns what was sent and written.
    pub fn finish(self, root: &Cid) -> Result<SendStats, UploadError> {
        let Router {
            car,
            node,
            stats,
            failure,
            ..
        } = self;
        let mut stats = stats.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(node) = node {
            if let Some((queue, thread)) = node.import {
                drop(queue);
                let imported = thread.join().map_err(|_| {
                    UploadError::Stopped("the dag/import thread panicked".to_string())
                })?;
                stats.add(&imported);
            }
            node.phase.finish();
        }
        if let Some(failure) = lock(&failure).take() {
            return Err(failure);
        }
        let car = car.into_inner().unwrap_or_else(|p| p.into_inner());
        if let Some(car) = car {
            let path = car.path.clone();
            let err = |source: CarError| UploadError::Car {
                path: path.clone(),
                source: Box::new(source),
            };
            let mut writer = car.writer;
            writer.replace_roots(&[*root]).map_err(err)?;
            stats.car_file_blocks = writer.blocks_written();
            stats.car_file_bytes = writer.bytes_written();
            let buffered = writer.finish().map_err(err)?;
            let file = buffered
                .into_inner()
                .map_err(|e| err(CarError::Io(e.into_error())))?
                .file;
            file.as_file()
                .sync_all()
                .map_err(|e| err(CarError::Io(e)))?;
            file.persist(&car.path)
                .map_err(|e| err(CarError::Io(e.error)))?;
        }
        Ok(stats)
    }
}

/// The thread that streams queued blocks to the node as CARs, one `dag/import` request per
/// `segment_bytes`.
struct ImportSender {
    client: IpfsClient,
    runtime: tokio::runtime::Handle,
    segment_bytes: u64,
    phase: Phase,
    failure: Arc<Mutex<Option<UploadError>>>,
}

impl ImportSender {
    /// Sends until the queue is closed; a failure is recorded and ends the thread (closing
    /// the queue, so that the next block given to the router reports it).
    fn run(self, blocks: Receiver<QueuedBlock>) -> SendStats {
        let mut stats = SendStats::default();
        if let Err(e) = self.send_all(&blocks, &mut stats) {
            lock(&self.failure).get_or_insert(e);
        }
        stats
    }

    fn send_all(
        &self,
        blocks: &Receiver<QueuedBlock>,
        stats: &mut SendStats,
    ) -> Result<(), UploadError> {
        let mut current: Option<DagImport> = None;
        for (cid, block) in blocks {
            let import = match current.as_mut() {
                Some(import) => import,
                None => {
                    let import = {
                        let _guard = self.runtime.enter();
                        self.client.start_dag_import(&cid)
                    };
                    stats.import_requests += 1;
                    current.insert(import)
                }
            };
            self.runtime.block_on(import.send(&cid, &block))?;
            let len = block.len() as u64;
            stats.blocks_sent += 1;
            stats.block_bytes_sent += len;
            self.phase.inc_total(len);
            self.phase.inc(len);
            if import.progress().car_bytes >= self.segment_bytes {
                if let Some(import) = current.take() {
                    let answer = self.runtime.block_on(import.finish())?;
                    stats.car_bytes_sent += answer.car_bytes;
                }
            }
        }
        if let Some(import) = current.take() {
            let answer = self.runtime.block_on(import.finish())?;
            stats.car_bytes_sent += answer.car_bytes;
        }
        Ok(())
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
    let writer = CarWriter::new(
        BufWriter::with_capacity(1 << 20, WritingBack::new(file)),
        &[placeholder],
    )
    .map_err(err)?;
    Ok(CarOut {
        path: path.to_path_buf(),
        writer,
        written: RecentBlocks::default(),
    })
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

    /// Reads one HTTP request (head and a body of `Content-Length` bytes); returns the head.
    fn read_request(stream: &mut std::net::TcpStream) -> String {
        use std::io::Read;
        let mut data = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the request ended early");
            data.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8_lossy(&data[..head_end]).to_string();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        while data.len() < head_end + len {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "the body ended early");
            data.extend_from_slice(&buf[..n]);
        }
        head
    }

    #[test]
    fn a_slow_node_call_does_not_stall_the_other_threads() {
        use std::io::Write;
        use std::sync::mpsc::channel;
        use std::time::Duration;
        // A node whose `add` answers only when told to: the test tells it after another
        // thread has put a block, which that thread could not do if the add held a lock it
        // needs.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let layout = crate::ipfs::profile::Profile::LegacyRawV0.layout();
        let expected = layout
            .file_hasher()
            .add(&b"hello\n"[..], &mut |_: &Cid, _: &[u8]| Ok(()))
            .unwrap()
            .cid;
        let (got_add, add_arrived) = channel();
        let (release, released) = channel::<()>();
        let answer = format!(r#"{{"Name":"hello","Hash":"{expected}","Size":"6"}}"#);
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let head = read_request(&mut stream);
            assert!(head.contains("/api/v0/add"), "{head}");
            got_add.send(()).unwrap();
            let _ = released.recv_timeout(Duration::from_secs(60));
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{answer}",
                answer.len()
            )
            .unwrap();
        });
        let runtime = tokio::runtime::Runtime::new().unwrap();
        let client = IpfsClient::new(
            crate::ipfs::api_addr::ApiAddr::new("127.0.0.1", port).unwrap(),
            crate::ipfs::client::Timeouts::default(),
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let router = Router::new(
            Some(&dir.path().join("out.car")),
            1,
            Some(NodeTarget {
                client,
                runtime: runtime.handle().clone(),
                method: NodeMethod::Add,
                knowledge: NodeKnowledge::default(),
                segment_bytes: 1 << 20,
            }),
        )
        .unwrap();
        let block = Cid::sha2_256(1, RAW, b"a").unwrap();
        std::thread::scope(|scope| {
            let adding = scope
                .spawn(|| router.add(AddSource::Bytes("hello", b"hello\n"), &expected, &layout));
            add_arrived
                .recv_timeout(Duration::from_secs(30))
                .expect("the add reached the node");
            let (put_done, put_finished) = channel();
            let (router, block) = (&router, &block);
            scope.spawn(move || put_done.send(router.put(block, b"a", false)).unwrap());
            let put = put_finished.recv_timeout(Duration::from_secs(10));
            release.send(()).unwrap();
            put.expect("a block was put while the node was slow to answer an add")
                .unwrap();
            adding.join().unwrap().unwrap();
        });
        let stats = router.finish(&block).unwrap();
        assert_eq!((stats.add_calls, stats.car_file_blocks), (1, 1));
    }

    #[test]
    fn unwritable_car_location_is_an_error() {
        let err = Router::new(Some(Path::new("/nonexistent-dir/x.car")), 0, None).unwrap_err();
        assert!(err.to_string().contains("/nonexistent-dir/x.car"), "{err}");
    }
}
