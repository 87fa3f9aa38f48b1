//! nixipfs mirrors NixOS channel releases from a Hydra CI server and the runtime closure of each
//! release from a Nix binary cache onto local disk, and publishes the mirror to IPFS.
//!
//! The library is layered from the bottom up (ARCHITECTURE.md draws it); a module uses only the
//! layers below its own:
//! - encodings, hashes and pure formats, no I/O: [`nixbase32`], [`hash`], [`store_path`],
//!   [`signature`], [`narinfo`], [`nar`], [`compression`], and the [`text`] helpers their error
//!   messages share; kubo's DAG layout in [`ipfs`] (`cid`, `dagpb`, `unixfs`, `directory`,
//!   `hamt`, `car`);
//! - I/O building blocks: [`fsutil`] (atomic writes, safe joins, the mirror lock), [`fetch`]
//!   (HTTP with retries and verified downloads), [`progress`], [`metrics`] (Prometheus text);
//! - remote services and inputs: [`hydra`] (the CI server's JSON API and client), the IPFS
//!   node's client in [`ipfs`], and the release configuration in [`config`];
//! - storage: [`binary_cache`] (the local cache, a release's view of it, the upstream narinfo
//!   client), [`store_file`] (one file out of a store path) and [`storage`] (the cache store the
//!   mirror writes through: that directory, or an S3-compatible bucket);
//! - pipelines: [`mirror`] (a closure into the cache), [`release`] (release directories and
//!   channel links, made from Hydra builds), [`gc`], [`verify`], and `ipfs::publish`; what a
//!   mirror holds, read back: [`status`], shown by the [`front_page`];
//! - one module per subcommand under [`commands`], each orchestrating the pipelines: options in,
//!   report out.
//!
//! Nothing below [`commands`] knows about the command line, and no command uses another.

pub mod binary_cache;
pub mod commands;
pub mod compression;
pub mod config;
pub mod fetch;
pub mod front_page;
pub mod fsutil;
pub mod gc;
pub mod hash;
pub mod hydra;
pub mod ipfs;
pub mod metrics;
pub mod mirror;
pub mod nar;
pub mod narinfo;
pub mod nixbase32;
pub mod programs;
pub mod progress;
pub mod release;
pub mod signature;
pub mod status;
pub mod storage;
pub mod store_file;
pub mod store_path;
pub mod tarballs;
pub mod text;
pub mod verify;
