//! Publishing the mirror to IPFS: what is published where, and how its DAG is built from the
//! files on disk, with CIDs computed here exactly as kubo's `ipfs add` would compute them.
//!
//! # What is published
//!
//! One directory, the root, copied into the node's MFS as `/nixfs_<unixtime>`:
//! ```text
//! binary_cache/                the global binary cache (D/binary_cache):
//!     nix-cache-info
//!     HASH.narinfo             each narinfo whose NAR is present, as served upstream with one
//!                              line added at the end: `IPFSHash: <CID of its NAR>` (the file
//!                              on disk stays as it is)
//!     nar/FILE                 every file of D/binary_cache/nar
//! releases/CHANNEL/NIXNAME/    each complete release (one that has its git-revision file):
//!     FILE                     every regular file of the release directory except ipfs_hash:
//!                              src-url, binary-cache-url, git-revision, store-paths,
//!                              store-paths.xz, nixexprs.tar.xz, *.iso, *.iso.sha256, *.ova,
//!                              and missing-store-paths and build-info.json where present
//!     binary_cache/            the release's view of the binary cache: nix-cache-info and the
//!         nix-cache-info       narinfos and NARs that its symlink farm links to, each with the
//!         HASH.narinfo         same published bytes (so the same CIDs, and no extra block) as
//!         nar/FILE             in the global binary_cache/
//! channels/CHANNEL/            the release that D/channels/CHANNEL points at: the same
//!                              directory (same CID) as releases/CHANNEL/NIXNAME/
//! ```
//! Not published: the `lastsync` stamps, `ipfs_hash`, `ipfs_hashes`, `ipfs_root`,
//! `ipfs_roots`, hidden, lock and temporary files (names starting with `.`), releases still
//! being written (no `git-revision`), narinfos whose NAR is missing or that do not parse (both
//! warned about), and links that lead nowhere (warned about).
//!
//! # How the DAG is built
//!
//! Every file is a source, keyed by its real path relative to the mirror (links resolved),
//! so the NAR a release's view links to and the NAR of the global cache are one source,
//! hashed once. Files are hashed with [`FileHasher`](crate::ipfs::unixfs::FileHasher) with the
//! chunks, leaves, links per node and CID version of the import profile
//! ([`crate::ipfs::profile`]) on several threads, in batches as the walk finds them; narinfos
//! after the NARs, since their published bytes hold their NAR's CID. Each directory is built
//! as soon as its entries are known, with kubo's link order, sizes and the profile's HAMT
//! sharding rule ([`DirectoryBuilder`](crate::ipfs::directory::DirectoryBuilder)), and only
//! its root is kept: memory follows the largest directory, not the mirror. A file whose
//! [`FileCache`](crate::ipfs::file_cache::FileCache) entry still matches is not read, unless its blocks are needed (for a CAR
//! file, or because the node lacks them). Every block goes to a [`Router`](crate::ipfs::upload::Router), which writes it
//! to the CAR file and sends it to the node as needed.
//!
//! A release whose `ipfs_hash` file names a CID that the cache knows (with its size) and that
//! the node is known to hold entirely is not looked at again: that CID is used as it is.
//!
//! # Where each step is
//!
//! - [`pipeline`]: the publication from the node's first call to the files written at the
//!   end ([`publish`]), the steps below included;
//! - [`scan`]: the walk of the mirror on disk, links resolved, hashing and building as it
//!   goes ([`walk`], giving what was [`Walked`]);
//! - [`dag`]: hashing a batch of sources on a pool of threads, and building a directory;
//! - [`verify`]: the sample of published paths checked on the node, and the check;
//! - [`lifecycle`]: the roots published from the mirror (`D/ipfs_roots`), and letting go of
//!   the old ones once a newer root serves;
//! - [`report`]: what a publication did, and its one-line summary.

use std::io;
use std::path::{Path, PathBuf};

use super::client::IpfsError;
use super::directory::DirectoryError;
use super::unixfs::ImportError;
use super::upload::UploadError;
use crate::narinfo::NarInfoError;

pub mod dag;
pub mod lifecycle;
pub mod pipeline;
pub mod report;
pub mod scan;
pub mod verify;

pub use dag::{BuildOptions, HashStats, Root};
pub use pipeline::{publish, PublishOptions, SendMethod};
pub use report::PublishReport;
pub use scan::{walk, Release, Source, SourceKind, WalkOptions, Walked};
pub use verify::{verify_on_node, Sampler};

/// The name of the file in a release directory that holds the release's CID once published.
pub const IPFS_HASH_FILE: &str = "ipfs_hash";
/// The name of the file in the mirror directory that holds the last published root CID.
pub const IPFS_ROOT_FILE: &str = "ipfs_root";
/// The narinfo field that names the CID of the NAR.
pub const IPFS_HASH_FIELD: &str = "IPFSHash";

/// Why publishing failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// A file or directory of the mirror could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Hashing a file failed.
    #[error("hashing {path}: {source}")]
    Hash {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: ImportError,
    },
    /// A narinfo that parsed when the mirror was scanned no longer does.
    #[error("narinfo {path}: {source}")]
    Narinfo {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: NarInfoError,
    },
    /// A directory node could not be built.
    #[error("building directory {key:?}: {source}")]
    Directory {
        /// The published path of the directory.
        key: String,
        /// The error.
        #[source]
        source: DirectoryError,
    },
    /// The threads hashing files could not be started.
    #[error("starting the threads that hash files: {0}")]
    Threads(#[source] rayon::ThreadPoolBuildError),
    /// Delivering blocks failed.
    #[error(transparent)]
    Upload(#[from] UploadError),
    /// A call to the node failed.
    #[error(transparent)]
    Node(#[from] IpfsError),
    /// The node holds another CID at a published path than the one computed here.
    #[error("verification failed: the node has {got} at {path}, but {expected} was computed here")]
    Verification {
        /// The MFS path.
        path: String,
        /// The CID computed here.
        expected: String,
        /// The CID the node answered.
        got: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> PublishError + '_ {
    move |source| PublishError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A mirror to publish in tests, and the steps that take it to a CAR file.
#[cfg(test)]
pub(crate) mod fixtures {
    use std::fs;
    use std::os::unix::fs::symlink;
    use std::path::Path;

    use super::{walk, BuildOptions, WalkOptions, Walked};
    use crate::ipfs::cid::Cid;
    use crate::ipfs::file_cache::{CacheWriter, FileCache};
    use crate::ipfs::upload::{Router, SendStats};

    /// A small mirror: a global cache with two NARs and narinfos, a release linking one of
    /// them, a channel link, an incomplete release and some files that are not published.
    pub(crate) fn small_mirror(dir: &Path) {
        let w = |rel: &str, data: &[u8]| {
            let p = dir.join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, data).unwrap();
        };
        let narinfo = |hash: &str, nar: &str| {
            format!(
                "StorePath: /nix/store/{hash}-x\nURL: nar/{nar}\nCompression: xz\nNarHash: sha256:1mi14cqk363wv368ffiiy01knardmnlyphi6h9xv6dkjz44hk30i\nNarSize: 10\nReferences: \n"
            )
        };
        let h1 = "w9yy7v61ipb5rx6i35zq1mvc2iqfmps1";
        let h2 = "r29rfw7xvs9kc6lxma5aqdqbci3af4vg";
        w(
            "binary_cache/nix-cache-info",
            b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
        );
        w("binary_cache/lastsync", b"1700000000\n");
        w("binary_cache/nar/a.nar.xz", &vec![7u8; 300_000]);
        w("binary_cache/nar/b.nar.xz", b"nar b");
        w(
            &format!("binary_cache/{h1}.narinfo"),
            narinfo(h1, "a.nar.xz").as_bytes(),
        );
        w(
            &format!("binary_cache/{h2}.narinfo"),
            narinfo(h2, "b.nar.xz").as_bytes(),
        );
        w(
            "binary_cache/zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz.narinfo",
            narinfo("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "missing.nar.xz").as_bytes(),
        );
        w("binary_cache/.nixipfs-tmp-123", b"temp");
        let rel = "releases/nixos-24.05/nixos-24.05.1.abc";
        w(&format!("{rel}/git-revision"), b"abc\n");
        w(&format!("{rel}/src-url"), b"https://hydra/eval/1\n");
        w(&format!("{rel}/nixexprs.tar.xz"), b"tarball");
        w(
            &format!("{rel}/binary_cache/nix-cache-info"),
            b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n",
        );
        fs::create_dir_all(dir.join(format!("{rel}/binary_cache/nar"))).unwrap();
        symlink(
            format!("../../../../binary_cache/{h1}.narinfo"),
            dir.join(format!("{rel}/binary_cache/{h1}.narinfo")),
        )
        .unwrap();
        symlink(
            "../../../../../binary_cache/nar/a.nar.xz",
            dir.join(format!("{rel}/binary_cache/nar/a.nar.xz")),
        )
        .unwrap();
        w(
            "releases/nixos-24.05/nixos-24.05.2.def/src-url",
            b"incomplete",
        );
        fs::create_dir_all(dir.join("channels")).unwrap();
        symlink(
            "../releases/nixos-24.05/nixos-24.05.1.abc",
            dir.join("channels/nixos-24.05"),
        )
        .unwrap();
        symlink("../releases/nowhere", dir.join("channels/dangling")).unwrap();
    }

    /// Trusts no release's `ipfs_hash`.
    pub(crate) fn trust_none(_: &Cid) -> bool {
        false
    }

    /// Walks the mirror in `dir` (profile `legacy-raw-v0`, every path recorded), writing its
    /// blocks to the CAR file `car` if given and its cache entries to `writer` if given.
    pub(crate) fn walk_mirror(
        dir: &Path,
        cache: &FileCache,
        car: Option<&Path>,
        writer: Option<&mut CacheWriter>,
    ) -> (Walked, SendStats) {
        let layout = crate::ipfs::profile::Profile::LegacyRawV0.layout();
        let opts = WalkOptions {
            build: BuildOptions {
                layout,
                concurrency: 3,
                read_all: false,
            },
            cache,
            trust_release: &trust_none,
            verify_files: 4,
            record_paths: true,
        };
        let router = Router::new(car, 0, None).unwrap();
        let walked = walk(dir, &opts, &router, writer).unwrap();
        let stats = router.finish(&walked.root.cid).unwrap();
        (walked, stats)
    }

    /// Walks the mirror in `dir` into the CAR file `car`, without a node.
    pub(crate) fn build_to_car(dir: &Path, cache: &FileCache, car: &Path) -> (Walked, SendStats) {
        walk_mirror(dir, cache, Some(car), None)
    }
}
