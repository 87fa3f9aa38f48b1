//! nixipfs mirrors NixOS channel releases from a Hydra CI server and the runtime closure of each
//! release from a Nix binary cache onto local disk, and publishes the mirror to IPFS.
//!
//! The library is layered from the bottom up:
//! - encodings and hashes: [`nixbase32`], [`hash`], [`store_path`], [`signature`], and the
//!   [`text`] helpers their error messages share;
//! - pure store formats: [`narinfo`], [`nar`], [`compression`];
//! - I/O building blocks: [`fsutil`], [`fetch`], [`progress`];
//! - remote services: [`hydra`] (the CI server's JSON API) and [`ipfs`] (local CIDs, CARs and the node);
//! - mirroring logic: [`closure`], [`binary_cache`], and the release configuration in [`config`];
//! - one module per subcommand under [`commands`].
//!
//! Nothing below [`commands`] knows about the command line.

pub mod binary_cache;
pub mod commands;
pub mod compression;
pub mod config;
pub mod fetch;
pub mod fsutil;
pub mod gc;
pub mod hash;
pub mod hydra;
pub mod ipfs;
pub mod mirror;
pub mod nar;
pub mod narinfo;
pub mod nixbase32;
pub mod progress;
pub mod release;
pub mod signature;
pub mod store_file;
pub mod store_path;
pub mod text;
pub mod verify;
