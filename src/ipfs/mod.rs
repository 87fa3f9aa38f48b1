//! IPFS publishing: local computation of UnixFS CIDs exactly as kubo's `ipfs add` makes them,
//! CAR files, and publishing the mirror to a node.
//!
//! Pure computation over readers and writers:
//! - [`cid`]: CIDv0/CIDv1 on top of the `cid` and `multihash` crates, and hashing blocks;
//! - [`dagpb`]: the dag-pb block encoding, byte for byte as go-merkledag writes it;
//! - [`unixfs`]: UnixFS `Data`, and [`unixfs::FileHasher`], a streaming file importer
//!   (256 KiB chunks, balanced layout, 174 links per node, raw or dag-pb leaves);
//! - [`directory`]: directory nodes with kubo's link order and cumulative sizes, and kubo's
//!   rule for when a directory becomes HAMT-sharded; [`hamt`] builds sharded directories;
//! - [`profile`]: the named import profiles (`unixfs-v1-2025`, `unixfs-v0-2015`,
//!   `legacy-raw-v0`) and their [`profile::Layout`] of the parameters above;
//! - [`car`]: CARv1 writer and reader.
//!
//! Local paths: [`add_path`], what `ipfs add -r --only-hash` gives for a file or directory.
//!
//! Publishing:
//! - [`api_addr`]: the node's API address from the forms `--ipfsapi` accepts;
//! - [`client`]: the node's RPC API, with a deadline on every call;
//! - [`file_cache`]: `D/ipfs_hashes`, file CIDs across runs and what the node holds;
//! - [`publish`]: what is published where, the DAG of the mirror, and the whole publication
//!   ([`publish::publish`]: node, cache, blocks, pin, MFS, verification, IPNS, result files);
//! - [`upload`]: delivering its blocks to a CAR file and to the node.
//!
//! A file and a directory holding it, written to a CAR (the CID is what
//! `add?wrap-with-directory=true` of `hello.txt` gives):
//! ```
//! use nixipfs::ipfs::{car::CarWriter, directory::DirectoryBuilder};
//! use nixipfs::ipfs::unixfs::{AddOptions, FileHasher};
//! let mut car = CarWriter::new(std::io::Cursor::new(Vec::new()),
//!     &[nixipfs::ipfs::car::placeholder_root(0).unwrap()]).unwrap();
//! let file = FileHasher::new(AddOptions::KUBO_DEFAULT).add(&b"hello\n"[..], &mut car).unwrap();
//! let mut dir = DirectoryBuilder::new(0);
//! dir.add("hello.txt", file.cid, file.tsize).unwrap();
//! let root = dir.build(&mut car).unwrap();
//! car.replace_roots(&[root.cid]).unwrap();
//! assert_eq!(root.cid.to_string(), "QmU5PLEGqjetW4RAmXgHpEFL7nVCL3vFnEyrCKUfRk4MSq");
//! ```

pub mod add_path;
pub mod api_addr;
pub mod car;
pub mod cid;
pub mod client;
pub mod dagpb;
pub mod directory;
pub mod file_cache;
pub mod hamt;
pub mod profile;
pub mod publish;
pub mod unixfs;
pub mod upload;
