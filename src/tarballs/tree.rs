//! The tarball tree, laid out as tarballs.nixos.org is: each file once at
//! `tarballs/sha512/<hex>`, and relative symlinks to it from `md5/<hex>`, `sha1/<hex>`,
//! `sha256/<hex>`, `sha256/<nix32>` and `sha512/<nix32>`, so that a client asking for any
//! hash form `fetchurl` may use (`<mirror>/<algo>/<hash>`) gets the file.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

use super::source::{from_hex, to_hex, FileHashes, HashAlgo, MultiHasher, SourceHash};
use crate::binary_cache::staging::STAGING_DIR;
use crate::fsutil;
use crate::nixbase32;

/// The tree's directory under the mirror.
pub const TARBALLS_DIR: &str = "tarballs";

/// The tree at `DIR/tarballs`.
#[derive(Clone, Debug)]
pub struct Tree {
    root: PathBuf,
}

impl Tree {
    /// The tree of the mirror `dir`, not created.
    pub fn of_mirror(dir: &Path) -> Tree {
        Tree {
            root: dir.join(TARBALLS_DIR),
        }
    }

    /// Creates the tree's directories.
    pub fn create(&self) -> Result<()> {
        for algo in HashAlgo::ALL {
            let d = self.root.join(algo.name());
            fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        Ok(())
    }

    /// The entries of the directory of `algo` (`DIR/tarballs/ALGO/`), sorted, each with its
    /// file name (lossily as text); none when the directory does not exist.
    pub fn entries(&self, algo: HashAlgo) -> Result<Vec<(PathBuf, String)>> {
        Ok(fsutil::read_dir_sorted(&self.root.join(algo.name()))?
            .into_iter()
            .map(|path| {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                (path, name)
            })
            .collect())
    }

    /// `DIR/tarballs`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where a file with this sha512 (hex) lives.
    pub fn file_path(&self, sha512_hex: &str) -> PathBuf {
        self.root.join("sha512").join(sha512_hex)
    }

    /// The path a client asks for with this declared hash in hex.
    pub fn hash_path(&self, hash: &SourceHash) -> PathBuf {
        self.root.join(hash.algo.name()).join(hash.hex())
    }

    /// The sha512 (hex) of the file the tree holds for `hash`, if it holds one: for sha512 the
    /// file itself, else a link `../sha512/<hex>` to a file that is there. Nothing is hashed.
    pub fn lookup(&self, hash: &SourceHash) -> Option<String> {
        let path = self.hash_path(hash);
        if hash.algo == HashAlgo::Sha512 {
            let meta = fs::symlink_metadata(&path).ok()?;
            return meta.is_file().then(|| hash.hex());
        }
        let target = fs::read_link(&path).ok()?;
        let key = link_key(&target)?;
        fs::symlink_metadata(self.file_path(&key))
            .is_ok_and(|m| m.is_file())
            .then_some(key)
    }

    /// A regular file another downloader put at [`Tree::hand_path`]: the path, if there is
    /// one.
    pub fn placed_by_hand(&self, hash: &SourceHash) -> Option<PathBuf> {
        let path = self.hand_path(hash);
        fs::symlink_metadata(&path)
            .is_ok_and(|m| m.is_file())
            .then_some(path)
    }

    /// Where another downloader (`--print-only --print-format aria2c`) is told to put the file
    /// of `hash`: `DIR/.staging/tarballs/ALGO/HEX` (for sha512 the nix32 name, as the hex one is
    /// the file's final name), in the mirror's staging area, which is neither served nor
    /// published; the next run checks it there before it takes it.
    pub fn hand_path(&self, hash: &SourceHash) -> PathBuf {
        let name = if hash.algo == HashAlgo::Sha512 {
            hash.nix32()
        } else {
            hash.hex()
        };
        self.staging_root().join(hash.algo.name()).join(name)
    }

    /// `DIR/.staging/tarballs`.
    pub fn staging_root(&self) -> PathBuf {
        let mirror = self.root.parent().unwrap_or(&self.root);
        mirror.join(STAGING_DIR).join(TARBALLS_DIR)
    }

    /// A new temporary file in the tree (same file system as its final place).
    pub fn temp_file(&self) -> Result<NamedTempFile> {
        fsutil::temp_file_in(&self.root)
            .with_context(|| format!("cannot create a file in {}", self.root.display()))
    }

    /// Puts a verified file into place under its sha512 and links every other form to it;
    /// returns the sha512 in hex. A file already there (the same bytes under another source)
    /// is kept and `tmp` dropped.
    pub fn place(&self, tmp: NamedTempFile, hashes: &FileHashes, fsync: bool) -> Result<String> {
        let key = to_hex(&hashes.sha512);
        let dest = self.file_path(&key);
        if !fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file()) {
            fsutil::persist(tmp, &dest, fsync)
                .with_context(|| format!("cannot write {}", dest.display()))?;
        }
        self.link(hashes)?;
        Ok(key)
    }

    /// Creates the links of every hash form to the file of `hashes`.
    pub fn link(&self, hashes: &FileHashes) -> Result<()> {
        let key = to_hex(&hashes.sha512);
        let target = PathBuf::from("..").join("sha512").join(&key);
        for (algo, name) in link_names(hashes) {
            let link = self.root.join(algo.name()).join(name);
            if algo == HashAlgo::Sha512 {
                // `sha512/<nix32>` sits beside the file.
                fsutil::atomic_symlink(Path::new(&key), &link)?;
            } else {
                fsutil::atomic_symlink(&target, &link)?;
            }
        }
        Ok(())
    }
}

/// The links of a file: `(directory, name)` for each form but the file's own name.
pub fn link_names(hashes: &FileHashes) -> Vec<(HashAlgo, String)> {
    vec![
        (HashAlgo::Md5, to_hex(&hashes.md5)),
        (HashAlgo::Sha1, to_hex(&hashes.sha1)),
        (HashAlgo::Sha256, to_hex(&hashes.sha256)),
        (HashAlgo::Sha256, nixbase32::encode(&hashes.sha256)),
        (HashAlgo::Sha512, nixbase32::encode(&hashes.sha512)),
    ]
}

/// The sha512 (hex) a link target names: `../sha512/<hex>` or, beside the file, `<hex>`.
pub fn link_key(target: &Path) -> Option<String> {
    let s = target.to_str()?;
    let key = s.strip_prefix("../sha512/").unwrap_or(s);
    is_sha512_hex(key).then(|| key.to_string())
}

/// Whether `name` is 128 lowercase hex digits (a file's name in `sha512/`).
pub fn is_sha512_hex(name: &str) -> bool {
    name.len() == 128
        && name
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && from_hex(name).is_some()
}

/// Every digest of what `r` yields.
pub fn hash_reader(mut r: impl Read) -> io::Result<FileHashes> {
    let mut h = MultiHasher::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(h.finish()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Every digest of the file at `path`.
pub fn hash_file(path: &Path) -> io::Result<FileHashes> {
    hash_reader(fs::File::open(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_placed_file_is_found_under_every_hash_form() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::of_mirror(dir.path());
        tree.create().unwrap();
        let mut tmp = tree.temp_file().unwrap();
        tmp.write_all(b"source bytes").unwrap();
        let hashes = hash_reader(&b"source bytes"[..]).unwrap();
        let key = tree.place(tmp, &hashes, false).unwrap();
        assert_eq!(fs::read(tree.file_path(&key)).unwrap(), b"source bytes");
        for algo in HashAlgo::ALL {
            let h = SourceHash {
                algo,
                digest: hashes.get(algo).to_vec(),
            };
            assert_eq!(tree.lookup(&h).as_deref(), Some(key.as_str()), "{algo}");
            assert_eq!(fs::read(tree.hash_path(&h)).unwrap(), b"source bytes");
            let nix32 = tree.root().join(algo.name()).join(h.nix32());
            if matches!(algo, HashAlgo::Sha256 | HashAlgo::Sha512) {
                assert_eq!(fs::read(nix32).unwrap(), b"source bytes");
            }
        }
        // A link whose file is gone finds nothing.
        fs::remove_file(tree.file_path(&key)).unwrap();
        let h = SourceHash {
            algo: HashAlgo::Sha256,
            digest: hashes.sha256.to_vec(),
        };
        assert_eq!(tree.lookup(&h), None);
    }
}
