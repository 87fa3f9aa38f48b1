//! UnixFS directories as kubo builds them with `ipfs add -r`: one dag-pb node with
//! `Data { Type: Directory }` and a link per entry, sorted by name (byte-wise, as boxo's
//! `sort.Stable(LinkSlice)` sorts), each link's Tsize being the whole size of the entry's DAG —
//! or, for large directories, a HAMT-sharded directory (see [`crate::ipfs::hamt`]).
//!
//! When kubo shards: boxo estimates a basic directory's size as the sum over its entries of
//! `len(name) + len(cid bytes)` (34 for a CIDv0, 36 for a sha2-256 CIDv1) and switches to a
//! HAMT when that estimate reaches [`HAMT_SHARDING_SIZE`] (256 KiB): `estimate >= 262144` in
//! the boxo of kubo 0.22 (`HAMTShardingSize`, `needsToSwitchToHAMTDir`). Later boxo releases
//! switch only *above* the threshold (`>`) and can be told to estimate differently
//! (`Import.UnixFSHAMTDirectorySizeThreshold`, `…SizeEstimation`); [`Sharding::Kubo`] follows
//! the kubo 0.22 rule. js-ipfs 0.66 instead shards any directory of 1000 entries or more
//! (`shardSplitThreshold`), with the same HAMT layout.
//!
//! ```
//! use nixipfs::ipfs::directory::DirectoryBuilder;
//! let empty = DirectoryBuilder::new(0).build_basic().unwrap();
//! assert_eq!(empty.cid.to_string(), "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn");
//! assert_eq!(empty.block, [0x0a, 0x02, 0x08, 0x01]);
//! ```

use std::io;

use super::cid::{Cid, CidError, ShortCid};
use super::dagpb::{PbLink, PbNode};
use super::hamt::{self, HamtError};
use super::unixfs::{Added, BlockSink, DataType, UnixfsData};

/// boxo's `HAMTShardingSize`: the estimated directory size at which kubo shards.
pub const HAMT_SHARDING_SIZE: usize = 256 * 1024;

/// When to build a HAMT-sharded directory instead of a single node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharding {
    /// As kubo 0.22 decides: when [`DirectoryBuilder::estimated_size`] reaches
    /// [`HAMT_SHARDING_SIZE`].
    #[default]
    Kubo,
    /// When [`DirectoryBuilder::estimated_size`] (the link bytes) is strictly greater than
    /// [`HAMT_SHARDING_SIZE`] (IPIP-499's `unixfs-v0-2015`, kubo 0.40).
    LinkBytesAbove,
    /// When the single-node form's serialized dag-pb block is strictly greater than
    /// [`HAMT_SHARDING_SIZE`] bytes (IPIP-499's `unixfs-v1-2025`).
    BlockBytesAbove,
    /// Never: always one node, however large.
    Never,
    /// Always, even for small directories (js-ipfs does so from 1000 entries on).
    Always,
}

/// Why a directory could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DirectoryError {
    /// A name that cannot be a directory entry.
    #[error("invalid directory entry name {0:?} (empty, \".\", \"..\", or containing '/' or NUL)")]
    InvalidName(String),
    /// The same name added twice.
    #[error("duplicate directory entry name {0:?}")]
    DuplicateName(String),
    /// [`DirectoryBuilder::build_basic`] on a directory that kubo would shard.
    #[error("directory of {entries} entries has an estimated size of {estimated} bytes, past the threshold of {HAMT_SHARDING_SIZE}: it would be sharded")]
    WouldShard {
        /// Number of entries.
        entries: usize,
        /// [`DirectoryBuilder::estimated_size`].
        estimated: usize,
    },
    /// Two names whose 64-bit HAMT hashes are equal: the trie cannot hold both.
    #[error("HAMT hash collision between entries {0:?} and {1:?}")]
    HashCollision(String, String),
    /// The CID version is not 0 or 1.
    #[error("directory CID: {0}")]
    Cid(#[from] CidError),
    /// The block sink failed.
    #[error("storing a directory block: {0}")]
    Sink(#[source] io::Error),
}

impl From<HamtError> for DirectoryError {
    fn from(e: HamtError) -> Self {
        match e {
            HamtError::TooDeep(a, b) => DirectoryError::HashCollision(a, b),
            HamtError::Io(e) => DirectoryError::Sink(e),
            HamtError::Cid(e) => DirectoryError::Cid(e),
        }
    }
}

/// A directory node in block form.
pub use super::dagpb::NodeBlock as DirectoryBlock;

/// An entry's DAG as the builder keeps it: a [`ShortCid`] when the CID has one (48 bytes
/// instead of the 104 of an [`Added`]; directories of the mirror have 100,000 entries and more).
#[derive(Debug, Clone)]
enum Target {
    Short(ShortCid, u64),
    Long(Box<Added>),
}

impl Target {
    fn new(cid: Cid, tsize: u64) -> Target {
        match ShortCid::of(&cid) {
            Some(short) => Target::Short(short, tsize),
            None => Target::Long(Box::new(Added { cid, tsize })),
        }
    }

    fn added(&self) -> Added {
        match self {
            Target::Short(cid, tsize) => Added {
                cid: cid.cid(),
                tsize: *tsize,
            },
            Target::Long(added) => **added,
        }
    }
}

/// Collects entries `(name, CID, Tsize)` and builds the directory DAG.
#[derive(Debug, Clone)]
pub struct DirectoryBuilder {
    cid_version: u8,
    sharding: Sharding,
    /// Sorted by name (entries added in name order are appended).
    entries: Vec<(String, Target)>,
    estimated_size: usize,
}

impl DirectoryBuilder {
    /// An empty directory whose nodes get CIDs of `cid_version` (0 or 1; checked when built).
    pub fn new(cid_version: u8) -> Self {
        DirectoryBuilder {
            cid_version,
            sharding: Sharding::Kubo,
            entries: Vec::new(),
            estimated_size: 0,
        }
    }

    /// Sets the sharding policy (default [`Sharding::Kubo`]).
    pub fn with_sharding(mut self, sharding: Sharding) -> Self {
        self.sharding = sharding;
        self
    }

    /// Adds an entry: the root `cid` of its DAG and that DAG's cumulative size `tsize`.
    pub fn add(&mut self, name: &str, cid: Cid, tsize: u64) -> Result<(), DirectoryError> {
        self.insert(name.to_owned(), cid, tsize)
    }

    /// [`DirectoryBuilder::add`] of a name given by value (entries given in name order cost
    /// no search and no move).
    pub fn insert(&mut self, name: String, cid: Cid, tsize: u64) -> Result<(), DirectoryError> {
        if name.is_empty()
            || name == "."
            || name == ".."
            || name.contains('/')
            || name.contains('\0')
        {
            return Err(DirectoryError::InvalidName(name));
        }
        let at = match self.entries.last() {
            Some((last, _)) if *last < name => self.entries.len(),
            None => 0,
            Some(_) => match self
                .entries
                .binary_search_by(|(n, _)| n.as_str().cmp(&name))
            {
                Ok(_) => return Err(DirectoryError::DuplicateName(name)),
                Err(at) => at,
            },
        };
        self.estimated_size += name.len() + cid.encoded_len();
        self.entries.insert(at, (name, Target::new(cid, tsize)));
        Ok(())
    }

    /// Makes room for `additional` more entries at once.
    pub fn reserve(&mut self, additional: usize) {
        self.entries.reserve_exact(additional);
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// boxo's size estimate of the single-node form: the sum of `len(name) + len(cid bytes)`.
    pub fn estimated_size(&self) -> usize {
        self.estimated_size
    }

    /// Whether [`DirectoryBuilder::build`] will make a HAMT under the current policy.
    pub fn is_sharded(&self) -> bool {
        match self.sharding {
            Sharding::Kubo => self.estimated_size >= HAMT_SHARDING_SIZE,
            Sharding::LinkBytesAbove => self.estimated_size > HAMT_SHARDING_SIZE,
            Sharding::BlockBytesAbove => {
                // The block holds the link bytes and at most 24 more bytes per link (field
                // tags, lengths, Tsize) and 4 of Data: measure it only when that can matter.
                self.estimated_size > HAMT_SHARDING_SIZE
                    || (self.estimated_size + 24 * self.entries.len() + 4 > HAMT_SHARDING_SIZE
                        && self.basic_node().encoded_len() > HAMT_SHARDING_SIZE)
            }
            Sharding::Never => false,
            Sharding::Always => true,
        }
    }

    /// Builds the single-node (basic) form, unless the policy says the directory is sharded.
    pub fn build_basic(&self) -> Result<DirectoryBlock, DirectoryError> {
        if self.is_sharded() {
            return Err(DirectoryError::WouldShard {
                entries: self.entries.len(),
                estimated: self.estimated_size,
            });
        }
        Ok(self.basic_node().to_block(self.cid_version)?)
    }

    /// The single-node form: a link per entry in name order, `Data { Type: Directory }`.
    fn basic_node(&self) -> PbNode {
        PbNode {
            links: self
                .entries
                .iter()
                .map(|(name, target)| {
                    let target = target.added();
                    PbLink {
                        hash: target.cid,
                        name: name.clone(),
                        tsize: target.tsize,
                    }
                })
                .collect(),
            data: Some(UnixfsData::new(DataType::Directory).encode()),
        }
    }

    /// Builds the directory, basic or sharded as the policy says, gives its blocks to `sink`
    /// (the root last) and returns the root.
    pub fn build<S: BlockSink + ?Sized>(&self, sink: &mut S) -> Result<Added, DirectoryError> {
        self.build_with(sink, false)
    }

    /// [`DirectoryBuilder::build`], a sharded directory's top shards built at once on the
    /// current rayon pool (the same blocks, in the same order).
    pub fn build_parallel<S: BlockSink + ?Sized>(
        &self,
        sink: &mut S,
    ) -> Result<Added, DirectoryError> {
        self.build_with(sink, true)
    }

    fn build_with<S: BlockSink + ?Sized>(
        &self,
        sink: &mut S,
        parallel: bool,
    ) -> Result<Added, DirectoryError> {
        if !self.is_sharded() {
            let dir = self.build_basic()?;
            sink.put_block(&dir.cid, &dir.block)
                .map_err(DirectoryError::Sink)?;
            return Ok(Added {
                cid: dir.cid,
                tsize: dir.tsize,
            });
        }
        if self.cid_version > 1 {
            return Err(CidError::UnsupportedVersion(u64::from(self.cid_version)).into());
        }
        let entry = |(i, (name, _)): (usize, &(String, _))| hamt::Entry::new(i, name);
        let mut entries: Vec<hamt::Entry> = if parallel {
            use rayon::prelude::*;
            self.entries.par_iter().enumerate().map(entry).collect()
        } else {
            self.entries.iter().enumerate().map(entry).collect()
        };
        let target = |i: usize| {
            let (name, target) = &self.entries[i];
            (name.as_str(), target.added())
        };
        if parallel {
            Ok(hamt::build_parallel(
                &mut entries,
                &target,
                self.cid_version,
                sink,
            )?)
        } else {
            Ok(hamt::build(&mut entries, &target, self.cid_version, sink)?)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::dagpb::PbNode;
    use crate::ipfs::unixfs::{AddOptions, DataType, FileHasher, UnixfsData};
    use std::collections::HashMap;

    fn file(data: &[u8], options: AddOptions) -> Added {
        FileHasher::new(options)
            .add(data, &mut |_: &Cid, _: &[u8]| Ok(()))
            .unwrap()
            .into()
    }

    /// `dir1/{hello.txt = "hello\n", sub/world.txt = "world\n"}`, built bottom-up.
    fn dir1(options: AddOptions) -> (Added, Vec<(Cid, Vec<u8>)>) {
        let mut blocks = Vec::new();
        let mut sink = |cid: &Cid, block: &[u8]| {
            blocks.push((*cid, block.to_vec()));
            Ok(())
        };
        let mut sub = DirectoryBuilder::new(options.cid_version);
        let world = file(b"world\n", options);
        sub.add("world.txt", world.cid, world.tsize).unwrap();
        let sub = sub.build(&mut sink).unwrap();
        let mut top = DirectoryBuilder::new(options.cid_version);
        // Added out of order on purpose: the links come out sorted.
        top.add("sub", sub.cid, sub.tsize).unwrap();
        let hello = file(b"hello\n", options);
        top.add("hello.txt", hello.cid, hello.tsize).unwrap();
        let root = top.build(&mut sink).unwrap();
        (root, blocks)
    }

    #[test]
    fn known_answer_directories() {
        let columns = [
            (
                AddOptions::KUBO_DEFAULT,
                "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
                "QmYCTjyRvygoxFxcvizAceYYAtnbKKJwk5z6tJpHvx4NTe",
            ),
            (
                AddOptions::V0_RAW_LEAVES,
                "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn",
                "QmYwMk71acMYzHu38dpYWLUT3USz7RAaES5H5FKhMyksg4",
            ),
            (
                AddOptions::V1,
                "bafybeiczsscdsbs7ffqz55asqdf3smv6klcw3gofszvwlyarci47bgf354",
                "bafybeie5c2xqxv72fokquxqckoo3equu5ifbxw2aoprbnycswjq7bqdjyu",
            ),
        ];
        for (options, empty, tree) in columns {
            let mut blocks = Vec::new();
            let root = DirectoryBuilder::new(options.cid_version)
                .build(&mut |cid: &Cid, block: &[u8]| {
                    blocks.push((*cid, block.to_vec()));
                    Ok(())
                })
                .unwrap();
            assert_eq!(root.cid.to_string(), empty, "{options:?}");
            assert_eq!(root.tsize, 4);
            assert_eq!(blocks.len(), 1);
            let (root, _) = dir1(options);
            assert_eq!(root.cid.to_string(), tree, "{options:?}");
        }
    }

    #[test]
    fn answers_of_js_ipfs_add() {
        // `add` of dir1 through js-ipfs 0.66: CIDs in base58btc for v1, and the Size field.
        for (options, js, size) in [
            (
                AddOptions::KUBO_DEFAULT,
                "QmYCTjyRvygoxFxcvizAceYYAtnbKKJwk5z6tJpHvx4NTe",
                183,
            ),
            (
                AddOptions::V0_RAW_LEAVES,
                "QmYwMk71acMYzHu38dpYWLUT3USz7RAaES5H5FKhMyksg4",
                171,
            ),
            (
                AddOptions::V1,
                "zdj7Wg179cLU9Q57v9M5BfJWqX9nM5jpbRKbLA3bQyH7zY7pY",
                173,
            ),
        ] {
            let (root, _) = dir1(options);
            assert_eq!(root.cid, Cid::parse(js).unwrap(), "{options:?}");
            assert_eq!(root.tsize, size, "{options:?}");
        }
        let empty = DirectoryBuilder::new(1).build_basic().unwrap();
        assert_eq!(
            empty.cid,
            Cid::parse("zdj7WbTaiJT1fgatdet9Ei9iDB5hdCxkbVyhyh8YTUnXMiwYi").unwrap()
        );
    }

    /// `big/` of 1500 files `f0000.txt`… holding `content 0\n`…, as js-ipfs 0.66 adds it:
    /// one node by default, and a HAMT with `shard-split-threshold=1000`.
    fn big(options: AddOptions, sharding: Sharding) -> (Added, HashMap<Cid, Vec<u8>>) {
        let mut blocks = HashMap::new();
        let mut sink = |cid: &Cid, block: &[u8]| {
            blocks.insert(*cid, block.to_vec());
            Ok(())
        };
        let mut dir = DirectoryBuilder::new(options.cid_version).with_sharding(sharding);
        for i in 0..1500 {
            let f = file(format!("content {i}\n").as_bytes(), options);
            dir.add(&format!("f{i:04}.txt"), f.cid, f.tsize).unwrap();
        }
        let root = dir.build(&mut sink).unwrap();
        (root, blocks)
    }

    #[test]
    fn large_directory_matches_js_ipfs_add() {
        for (options, js, size) in [
            (
                AddOptions::KUBO_DEFAULT,
                "QmdPDgB9tnSnGVYYNNiZgcWBJpgmtcJdv1c5KFhcK7scpU",
                106_894,
            ),
            (
                AddOptions::V1,
                "zdj7Wbg7G4cvaC6gMpeoNCi7LYTPpxuwL3Jo3n7KcVTFJiC3e",
                97_894,
            ),
        ] {
            // 1500 entries of 9 + 34 or 36 bytes: far below kubo's threshold.
            let (root, blocks) = big(options, Sharding::Kubo);
            assert_eq!(root.cid, Cid::parse(js).unwrap(), "{options:?}");
            assert_eq!(root.tsize, size, "{options:?}");
            assert_eq!(
                blocks.len(),
                1,
                "only the directory block reaches this sink"
            );
        }
    }

    #[test]
    fn hamt_matches_js_ipfs_add() {
        for (options, js, size) in [
            (
                AddOptions::KUBO_DEFAULT,
                "QmVzAAnfiHQe3Pjphf4c41mzuimfoJ9qNfPZd7JyjSzK1s",
                132_262,
            ),
            (
                AddOptions::V1,
                "zdj7Wch7dGqrucoeix6Q4f6r3qb7Sd9tUgyd1cS9SQu7CiaSE",
                123_798,
            ),
        ] {
            let (root, blocks) = big(options, Sharding::Always);
            assert_eq!(root.cid, Cid::parse(js).unwrap(), "{options:?}");
            assert_eq!(root.tsize, size, "{options:?}");
            // The root shard: one bit per used slot, one link per bit, some to sub-shards
            // (names of 2 characters), others to files (slot + name).
            let node = PbNode::decode(&blocks[&root.cid]).unwrap();
            let data = UnixfsData::decode(node.data.as_deref().unwrap()).unwrap();
            assert_eq!(data.data_type, DataType::HamtShard);
            assert_eq!(data.fanout, Some(256));
            assert_eq!(data.hash_type, Some(0x22));
            let bitfield = data.data.unwrap();
            assert_eq!(bitfield.len(), 32);
            let used: u32 = bitfield.iter().map(|b| b.count_ones()).sum();
            assert_eq!(node.links.len(), used as usize);
            assert!(node.links.iter().any(|l| l.name.len() == 2));
            assert!(node.links.iter().any(|l| l.name.len() > 2));
            assert_eq!(node.links[0].name[..2], *"00");
            assert_eq!(node.links.last().unwrap().name[..2], *"FF");
            assert!(blocks.len() > 1, "sub-shards were emitted");
        }
    }

    #[test]
    fn small_hamt_with_trimmed_bitfield() {
        // `two/{hello, hello.txt}`, both "hello\n", added by js-ipfs with
        // `cid-version=1&shard-split-threshold=1`.
        let target = file(b"hello\n", AddOptions::V1);
        let mut dir = DirectoryBuilder::new(1).with_sharding(Sharding::Always);
        dir.add("hello.txt", target.cid, target.tsize).unwrap();
        dir.add("hello", target.cid, target.tsize).unwrap();
        let mut blocks = Vec::new();
        let root = dir
            .build(&mut |cid: &Cid, block: &[u8]| {
                blocks.push((*cid, block.to_vec()));
                Ok(())
            })
            .unwrap();
        assert_eq!(
            root.cid,
            Cid::parse("zdj7WfujoXRDcSEEH5pfbVPWTxSHrSLD3ZKY744phUcbtEdYq").unwrap()
        );
        assert_eq!(root.tsize, 157);
        assert_eq!(blocks.len(), 1);
        let node = PbNode::decode(&blocks[0].1).unwrap();
        // murmur3 of "hello" starts with 0xcb, of "hello.txt" with 0xdf.
        let names: Vec<&str> = node.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["CBhello", "DFhello.txt"]);
        let data = UnixfsData::decode(node.data.as_deref().unwrap()).unwrap();
        let mut bits = [0u8; 32];
        bits[31 - 0xcb / 8] |= 1 << (0xcb % 8);
        bits[31 - 0xdf / 8] |= 1 << (0xdf % 8);
        assert_eq!(data.data.as_deref(), Some(&bits[31 - 0xdf / 8..]));
    }

    #[test]
    fn links_sorted_with_cumulative_tsize() {
        let (root, blocks) = dir1(AddOptions::KUBO_DEFAULT);
        let by_cid: HashMap<Cid, Vec<u8>> = blocks.into_iter().collect();
        let node = PbNode::decode(&by_cid[&root.cid]).unwrap();
        let names: Vec<&str> = node.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["hello.txt", "sub"]);
        // hello.txt is one 14-byte leaf; sub is its own block plus world.txt's leaf.
        assert_eq!(node.links[0].tsize, 14);
        let sub_block = &by_cid[&node.links[1].hash];
        assert_eq!(node.links[1].tsize, sub_block.len() as u64 + 14);
        assert_eq!(
            root.tsize,
            by_cid[&root.cid].len() as u64 + 14 + node.links[1].tsize
        );
    }

    #[test]
    fn byte_wise_name_order() {
        let target = file(b"x", AddOptions::V1);
        let mut dir = DirectoryBuilder::new(1);
        for name in ["b", "B", "a", "é", "Z", "_", "aa", "a.b"] {
            dir.add(name, target.cid, target.tsize).unwrap();
        }
        let built = dir.build_basic().unwrap();
        let node = PbNode::decode(&built.block).unwrap();
        let names: Vec<&str> = node.links.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["B", "Z", "_", "a", "a.b", "aa", "b", "é"]);
    }

    #[test]
    fn rejects_bad_names() {
        let target = file(b"x", AddOptions::V1);
        let mut dir = DirectoryBuilder::new(1);
        for name in ["", ".", "..", "a/b", "nul\0"] {
            assert!(
                matches!(
                    dir.add(name, target.cid, target.tsize),
                    Err(DirectoryError::InvalidName(_))
                ),
                "{name:?}"
            );
        }
        dir.add("a", target.cid, target.tsize).unwrap();
        assert!(matches!(
            dir.add("a", target.cid, target.tsize),
            Err(DirectoryError::DuplicateName(n)) if n == "a"
        ));
        assert!(matches!(
            DirectoryBuilder::new(2).build_basic(),
            Err(DirectoryError::Cid(CidError::UnsupportedVersion(2)))
        ));
    }

    #[test]
    fn kubo_sharding_threshold() {
        // Entries of 94 + 34 = 128 bytes each with CIDv0: 2048 of them make exactly 256 KiB.
        let target = file(b"x", AddOptions::KUBO_DEFAULT);
        let mut dir = DirectoryBuilder::new(0);
        for i in 0..2047 {
            dir.add(&format!("{i:094}"), target.cid, target.tsize)
                .unwrap();
        }
        assert_eq!(dir.estimated_size(), HAMT_SHARDING_SIZE - 128);
        assert!(!dir.is_sharded());
        assert!(dir.build_basic().is_ok());
        dir.add(&format!("{:094}", 2047), target.cid, target.tsize)
            .unwrap();
        assert_eq!(dir.estimated_size(), HAMT_SHARDING_SIZE);
        assert!(dir.is_sharded());
        assert!(matches!(
            dir.build_basic(),
            Err(DirectoryError::WouldShard {
                entries: 2048,
                estimated: HAMT_SHARDING_SIZE
            })
        ));
        let never = dir.clone().with_sharding(Sharding::Never);
        assert!(!never.is_sharded());
        assert!(never.build_basic().is_ok());
        // Strictly greater: exactly 256 KiB of link bytes stays one node.
        let above = dir.clone().with_sharding(Sharding::LinkBytesAbove);
        assert!(!above.is_sharded());
        let mut one_more = above.clone();
        one_more.add("x", target.cid, target.tsize).unwrap();
        assert!(one_more.is_sharded());
    }

    #[test]
    fn block_bytes_threshold() {
        // Each link of a 100-byte name over a CIDv1 with a Tsize of 1: 3 bytes of framing,
        // (1 + 1 + 36) of Hash, (1 + 1 + 100) of Name, (1 + 1) of Tsize = 145 bytes; the node
        // adds 4 bytes of Data.
        let target = file(b"x", AddOptions::V1);
        assert_eq!(target.tsize, 1);
        let mut dir = DirectoryBuilder::new(1).with_sharding(Sharding::BlockBytesAbove);
        let fits = (HAMT_SHARDING_SIZE - 4) / 145;
        for i in 0..fits {
            dir.add(&format!("{i:0100}"), target.cid, target.tsize)
                .unwrap();
        }
        let block = dir.build_basic().unwrap().block;
        assert_eq!(block.len(), 4 + 145 * fits);
        assert!(block.len() <= HAMT_SHARDING_SIZE && !dir.is_sharded());
        // Link bytes alone (136 each) stay far below the threshold, the block does not.
        dir.add(&format!("{fits:0100}"), target.cid, target.tsize)
            .unwrap();
        assert!(dir.estimated_size() < HAMT_SHARDING_SIZE);
        assert!(dir.is_sharded());
        let padded = dir.clone().with_sharding(Sharding::LinkBytesAbove);
        assert!(!padded.is_sharded());
    }

    /// Built in parallel, a sharded directory has the same blocks, given in the same order,
    /// as built on one thread; so has a directory too small to shard.
    #[test]
    fn parallel_build_gives_the_same_blocks_in_the_same_order() {
        for (count, sharded) in [(20_000, true), (40, false)] {
            let mut dir = DirectoryBuilder::new(1);
            for i in 0..count {
                let f = file(format!("{i}").as_bytes(), AddOptions::V1);
                dir.add(&format!("{i:08x}.narinfo"), f.cid, f.tsize)
                    .unwrap();
            }
            assert_eq!(dir.is_sharded(), sharded);
            let build = |parallel: bool| {
                let mut blocks = Vec::new();
                let mut sink = |cid: &Cid, block: &[u8]| {
                    blocks.push((*cid, block.to_vec()));
                    Ok(())
                };
                let root = if parallel {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(3)
                        .build()
                        .unwrap();
                    pool.install(|| dir.build_parallel(&mut sink)).unwrap()
                } else {
                    dir.build(&mut sink).unwrap()
                };
                (root, blocks)
            };
            let (one, one_blocks) = build(false);
            let (many, many_blocks) = build(true);
            assert_eq!(one, many);
            assert_eq!(one_blocks, many_blocks);
            assert_eq!(one_blocks.last().unwrap().0, one.cid);
            assert!(one_blocks.len() > if sharded { 256 } else { 0 });
        }
    }
}
