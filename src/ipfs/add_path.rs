//! The CID of a local file or directory, as `ipfs add -r --only-hash` computes it with a given
//! [`Layout`]: a file is imported with the layout's chunks and links; a directory holds its
//! entries, recursively, except hidden ones (names starting with `.`, as `ipfs add -r` without
//! `--hidden`); a symbolic link is not followed but becomes a UnixFS symlink holding its target.
//! The path given itself is taken as it is, even when hidden or a link.
//!
//! ```
//! use nixipfs::ipfs::add_path::add_path;
//! use nixipfs::ipfs::profile::Profile;
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::write(dir.path().join("hello.txt"), b"hello\n").unwrap();
//! let layout = Profile::UnixfsV0_2015.layout();
//! let file = add_path(&dir.path().join("hello.txt"), &layout, &mut |_: &_, _: &[u8]| Ok(()));
//! assert_eq!(file.unwrap().cid.to_string(), "QmZULkCELmmk5XNfCgTnCyFgAVxBRBXyDHGGMVoLFLiXEN");
//! ```

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::cid::CidError;
use super::directory::DirectoryError;
use super::profile::Layout;
use super::unixfs::{symlink_block, Added, BlockSink, ImportError};

/// Why a path could not be added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddPathError {
    /// Reading the path failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// Importing a file failed.
    #[error("{path}: {source}")]
    Import {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: ImportError,
    },
    /// Building a directory or a symlink node failed.
    #[error("{path}: {source}")]
    Directory {
        /// The directory.
        path: PathBuf,
        /// The error.
        #[source]
        source: DirectoryError,
    },
    /// A name that a UnixFS directory cannot hold (not UTF-8).
    #[error("{0}: the name is not UTF-8")]
    Name(PathBuf),
    /// A device, socket or pipe.
    #[error("{0}: neither a file, a directory nor a symbolic link")]
    Unsupported(PathBuf),
}

/// Adds `path` (see the module documentation), giving every block to `sink`, and returns its
/// root.
pub fn add_path<S: BlockSink + ?Sized>(
    path: &Path,
    layout: &Layout,
    sink: &mut S,
) -> Result<Added, AddPathError> {
    let io_err = |source| AddPathError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = fs::symlink_metadata(path).map_err(io_err)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = fs::read_link(path).map_err(io_err)?;
        let dir_err = |source| AddPathError::Directory {
            path: path.to_path_buf(),
            source,
        };
        let node = symlink_block(target.as_os_str().as_bytes(), layout.add.cid_version)
            .map_err(|e: CidError| dir_err(e.into()))?;
        sink.put_block(&node.cid, &node.block)
            .map_err(|e| dir_err(DirectoryError::Sink(e)))?;
        Ok(Added {
            cid: node.cid,
            tsize: node.tsize,
        })
    } else if kind.is_file() {
        let file = fs::File::open(path).map_err(io_err)?;
        let added = layout
            .file_hasher()
            .add(io::BufReader::with_capacity(1 << 20, file), sink)
            .map_err(|source| AddPathError::Import {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(added.into())
    } else if kind.is_dir() {
        let mut dir = layout.directory();
        for entry in fs::read_dir(path).map_err(io_err)? {
            let entry = entry.map_err(io_err)?;
            let child = entry.path();
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                return Err(AddPathError::Name(child));
            };
            if name.starts_with('.') {
                continue;
            }
            let added = add_path(&child, layout, sink)?;
            dir.add(&name, added.cid, added.tsize)
                .map_err(|source| AddPathError::Directory {
                    path: child.clone(),
                    source,
                })?;
        }
        dir.build(sink).map_err(|source| AddPathError::Directory {
            path: path.to_path_buf(),
            source,
        })
    } else {
        Err(AddPathError::Unsupported(path.to_path_buf()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipfs::cid::Cid;
    use crate::ipfs::profile::Profile;

    fn cid_of(path: &Path, profile: Profile) -> String {
        add_path(path, &profile.layout(), &mut |_: &Cid, _: &[u8]| Ok(()))
            .unwrap()
            .cid
            .to_string()
    }

    /// `dir1/{hello.txt = "hello\n", sub/world.txt = "world\n"}`, and hidden files beside.
    fn dir1(root: &Path) -> PathBuf {
        let dir = root.join("dir1");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("hello.txt"), b"hello\n").unwrap();
        fs::write(dir.join("sub/world.txt"), b"world\n").unwrap();
        fs::write(dir.join(".hidden"), b"not added").unwrap();
        fs::create_dir(dir.join("sub/.git")).unwrap();
        dir
    }

    #[test]
    fn known_answers_of_the_table() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = dir1(tmp.path());
        assert_eq!(
            cid_of(&dir, Profile::UnixfsV0_2015),
            "QmYCTjyRvygoxFxcvizAceYYAtnbKKJwk5z6tJpHvx4NTe"
        );
        assert_eq!(
            cid_of(&dir, Profile::LegacyRawV0),
            "QmYwMk71acMYzHu38dpYWLUT3USz7RAaES5H5FKhMyksg4"
        );
        // Small enough that chunks and links do not matter: the v1 column.
        assert_eq!(
            cid_of(&dir, Profile::UnixfsV1_2025),
            "bafybeie5c2xqxv72fokquxqckoo3equu5ifbxw2aoprbnycswjq7bqdjyu"
        );
        let empty = tmp.path().join("empty");
        fs::create_dir(&empty).unwrap();
        assert_eq!(
            cid_of(&empty, Profile::UnixfsV0_2015),
            "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"
        );
        // A hidden path given itself is added.
        assert_eq!(
            cid_of(&dir.join(".hidden"), Profile::LegacyRawV0),
            cid_of(&dir.join(".hidden"), Profile::UnixfsV1_2025)
        );
    }

    #[test]
    fn symlinks_are_not_followed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = dir1(tmp.path());
        std::os::unix::fs::symlink("hello.txt", dir.join("link")).unwrap();
        let link = add_path(
            &dir.join("link"),
            &Profile::UnixfsV0_2015.layout(),
            &mut |_: &Cid, _: &[u8]| Ok(()),
        )
        .unwrap();
        assert_eq!(
            link.cid,
            symlink_block(b"hello.txt", 0).unwrap().cid,
            "the link itself, not hello.txt"
        );
        assert_ne!(
            cid_of(&dir, Profile::UnixfsV0_2015),
            "QmYCTjyRvygoxFxcvizAceYYAtnbKKJwk5z6tJpHvx4NTe"
        );
        let err = add_path(
            &tmp.path().join("missing"),
            &Profile::DEFAULT.layout(),
            &mut |_: &Cid, _: &[u8]| Ok(()),
        )
        .unwrap_err();
        assert!(matches!(err, AddPathError::Io { .. }), "{err}");
    }
}
