//! Utilities shared by the whole-command tests of `nixipfs`.
//!
//! - [`server`]: an HTTP/1.1 test server with scripted routes, static files, fault injection
//!   per path and attempt, and a record of every request;
//! - [`nixcache`]: binary caches made and checked by real Nix, in private stores;
//! - [`dirs`]: unique test directories and the check for leftover temporary files;
//! - [`process`]: running the `nixipfs` binary (and other commands) with a deadline.
//!
//! Each test crate includes this with `mod common;`, so not every crate uses every item.
#![allow(dead_code, unused_imports)]

pub mod certs;
pub mod dirs;
pub mod garage;
pub mod hydra;
pub mod ipfs_node;
pub mod mirror;
pub mod nixcache;
pub mod process;
pub mod server;

pub use dirs::{assert_no_temp_files, TestDir, TEMP_FILE_PREFIX};
pub use nixcache::{
    nix_cache, nix_caches, nix_install_from, Compression, NixCache, NixEnv, NixError,
};
pub use process::{assert_success, output_text, run_nixipfs};
pub use server::{Fault, RecordedRequest, Response, TestServer};

/// The directory of the test fixtures copied into this repository.
pub fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}
