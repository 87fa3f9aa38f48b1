//! File-system building blocks that keep the mirror consistent: atomic writes (temp file in the
//! same directory, fsync, rename), joins of untrusted relative paths that cannot escape their base,
//! atomic symlink swaps, relative symlink targets, `lastsync` stamps, and the mirror lock.
//!
//! Every temporary file nixipfs creates starts with [`TEMP_PREFIX`], so that an interrupted run's
//! leftovers can be recognised and removed by the next one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use tempfile::NamedTempFile;
use thiserror::Error;

/// Prefix of every temporary file or directory nixipfs creates.
pub const TEMP_PREFIX: &str = ".nixipfs-tmp-";

/// Whether a file name is one of our temporary files.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_PREFIX)
}

/// A relative path taken from untrusted input was refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnsafePath {
    #[error("path {0:?} is empty")]
    Empty(String),
    #[error("path {0:?} is absolute or has a scheme; only plain relative paths are allowed")]
    Absolute(String),
    #[error("path {0:?} has a `.`, `..` or empty component")]
    Traversal(String),
    #[error("path {0:?} has a character outside [A-Za-z0-9._+=-] in a component")]
    BadCharacter(String),
    #[error("path {0:?} is longer than {1} bytes")]
    TooLong(String, usize),
}

const MAX_RELATIVE_PATH: usize = 1024;

/// Checks that `rel` is a plain relative path made of `/`-separated components of the characters
/// `[A-Za-z0-9._+=-]`, none of them empty, `.` or `..`. Percent signs, backslashes, colons (URL
/// schemes), NUL and the like are all refused, so the path means the same thing on disk and in a URL.
pub fn check_relative_path(rel: &str) -> Result<(), UnsafePath> {
    if rel.is_empty() {
        return Err(UnsafePath::Empty(rel.to_string()));
    }
    if rel.len() > MAX_RELATIVE_PATH {
        return Err(UnsafePath::TooLong(rel.to_string(), MAX_RELATIVE_PATH));
    }
    if rel.starts_with('/') || rel.contains("://") {
        return Err(UnsafePath::Absolute(rel.to_string()));
    }
    for component in rel.split('/') {
        if component.is_empty() || component == "." || component == ".." {
            return Err(UnsafePath::Traversal(rel.to_string()));
        }
        if !component
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+=-".contains(&b))
        {
            return Err(UnsafePath::BadCharacter(rel.to_string()));
        }
    }
    Ok(())
}

/// Joins an untrusted relative path onto `base`, refusing anything that could leave `base`
/// (see [`check_relative_path`]).
pub fn safe_join(base: &Path, rel: &str) -> Result<PathBuf, UnsafePath> {
    check_relative_path(rel)?;
    Ok(base.join(rel))
}

/// Checks that a name from a remote server is a plain file name: not empty, not `.` or `..`, and
/// without `/` or NUL.
pub fn check_file_name(name: &str) -> Result<(), UnsafePath> {
    if name.is_empty() {
        return Err(UnsafePath::Empty(name.to_string()));
    }
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(UnsafePath::Traversal(name.to_string()));
    }
    if name.len() > 255 {
        return Err(UnsafePath::TooLong(name.to_string(), 255));
    }
    Ok(())
}

/// Creates `dir` and its parents under `base`, refusing to pass through a symlink below `base`,
/// so that a link planted inside the mirror cannot redirect writes elsewhere.
pub fn create_dir_all_within(base: &Path, dir: &Path) -> Result<()> {
    let rel = dir
        .strip_prefix(base)
        .with_context(|| format!("{} is not inside {}", dir.display(), base.display()))?;
    fs::create_dir_all(base).with_context(|| format!("cannot create {}", base.display()))?;
    let mut cur = base.to_path_buf();
    for c in rel.components() {
        match c {
            Component::Normal(n) => cur.push(n),
            _ => bail!(
                "{} is not a plain path inside {}",
                dir.display(),
                base.display()
            ),
        }
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => bail!(
                "{} is a symlink; refusing to write through it (remove it and run again)",
                cur.display()
            ),
            Ok(_) => bail!("{} exists and is not a directory", cur.display()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => match fs::create_dir(&cur) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && cur.is_dir() => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", cur.display()))
                }
            },
            Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", cur.display())),
        }
    }
    Ok(())
}

/// A new temporary file in `dir` (which must exist), named with [`TEMP_PREFIX`] and created
/// with the permissions a new file gets (0666 less the umask), since it becomes a served file;
/// removed on drop unless [`persist`]ed.
pub fn temp_file_in(dir: &Path) -> io::Result<NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .rand_bytes(16)
        .permissions(fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
}

/// Flushes `tmp` to disk (if `sync`) and renames it to `dest`, replacing what is there.
pub fn persist(tmp: NamedTempFile, dest: &Path, sync: bool) -> io::Result<()> {
    if sync {
        tmp.as_file().sync_all()?;
    }
    tmp.persist(dest).map(drop).map_err(|e| e.error)
}

/// Writes `bytes` to `dest` atomically: a temp file in the same directory, fsync, rename.
pub fn atomic_write(dest: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(dest, bytes, true)
}

/// Like [`atomic_write`] but without the fsync: safe against a crash of nixipfs (the rename
/// still makes the file appear whole), not against a power loss.
pub fn atomic_write_nosync(dest: &Path, bytes: &[u8]) -> Result<()> {
    atomic_write_with(dest, bytes, false)
}

fn atomic_write_with(dest: &Path, bytes: &[u8], sync: bool) -> Result<()> {
    let dir = parent_dir(dest);
    let mut tmp = temp_file_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    tmp.write_all(bytes)
        .and_then(|()| persist(tmp, dest, sync))
        .with_context(|| format!("cannot write {}", dest.display()))
}

/// The entries of `dir`, as paths, sorted by name; none when `dir` does not exist.
pub fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for e in entries {
        out.push(
            e.with_context(|| format!("cannot list {}", dir.display()))?
                .path(),
        );
    }
    out.sort();
    Ok(out)
}

/// Writes `bytes` to `dest` atomically (as [`atomic_write`]) unless it already holds exactly them,
/// so that a rerun that changes nothing leaves the file and its timestamps alone.
pub fn write_if_changed(dest: &Path, bytes: &[u8]) -> Result<()> {
    match fs::read(dest) {
        Ok(existing) if existing == bytes => Ok(()),
        _ => atomic_write(dest, bytes),
    }
}

/// Creates (or atomically replaces) the symlink `link` pointing at `target`.
pub fn atomic_symlink(target: &Path, link: &Path) -> Result<()> {
    let dir = parent_dir(link);
    // Fast path: the link already says the right thing.
    if let Ok(existing) = fs::read_link(link) {
        if existing == target {
            return Ok(());
        }
    }
    loop {
        let tmp = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
        match std::os::unix::fs::symlink(target, &tmp) {
            Ok(()) => {
                return fs::rename(&tmp, link)
                    .inspect_err(|_| {
                        let _ = fs::remove_file(&tmp);
                    })
                    .with_context(|| format!("cannot replace {}", link.display()));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create a symlink in {}", dir.display()))
            }
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The relative path that leads from directory `from` to `to`. Both must be absolute (or both
/// relative to the same directory) and free of `.`/`..` components.
pub fn relative_path(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c.as_os_str());
    }
    out
}

/// Makes `path` absolute and lexically normal (without resolving symlinks in its last component).
pub fn absolute(path: &Path) -> Result<PathBuf> {
    let abs = std::path::absolute(path)
        .with_context(|| format!("cannot make {} absolute", path.display()))?;
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// Flushes every file of the file system that holds `dir` to disk (`syncfs`): one call that
/// makes a whole batch of files durable, instead of an fsync per file.
pub fn sync_filesystem(dir: &Path) -> Result<()> {
    let handle = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
    rustix::fs::syncfs(&handle)
        .with_context(|| format!("cannot sync the file system of {}", dir.display()))
}

/// Writes the current unix time (integer seconds) to `dir/lastsync`.
pub fn write_lastsync(dir: &Path) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    atomic_write(&dir.join("lastsync"), format!("{now}\n").as_bytes())
}

/// Removes temporary files left by an interrupted run directly inside `dir`; returns how many.
pub fn remove_stale_temp_files(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", dir.display())),
    };
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
        if entry.file_name().to_str().is_some_and(is_temp_name) {
            let path = entry.path();
            let res = if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            match res {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot remove {}", path.display()))
                }
            }
        }
    }
    Ok(removed)
}

/// Refuses a directory argument (`what`: "mirror directory", "output directory") that names
/// something other than a directory, before anything is created or contacted; a missing one is
/// fine (it is created when the lock is taken).
pub fn check_dir_arg(dir: &Path, what: &str) -> Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if !meta.is_dir() => bail!(
            "the {what} {} is a file, not a directory; name a directory (it is created if \
             missing)",
            dir.display()
        ),
        _ => Ok(()),
    }
}

/// Makes sure the mirror directory exists (creating it and its parents), refusing a path that
/// names a file.
pub fn ensure_mirror_dir(dir: &Path) -> Result<()> {
    check_dir_arg(dir, "mirror directory")?;
    if let Err(e) = fs::create_dir_all(dir) {
        // A file in the way (`create_dir_all` says "File exists" for it).
        check_dir_arg(dir, "mirror directory")?;
        bail!("cannot create the mirror directory {}: {e}", dir.display());
    }
    Ok(())
}

/// An exclusive lock on a mirror directory, held until dropped.
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

impl DirLock {
    /// Takes the lock file `dir/.lock`. With `wait`, blocks until the other holder is done;
    /// otherwise fails at once when another process holds it.
    pub fn acquire(dir: &Path, wait: bool) -> Result<DirLock> {
        use fs4::fs_std::FileExt;
        ensure_mirror_dir(dir)?;
        let path = dir.join(".lock");
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        if wait {
            file.lock_exclusive()
                .with_context(|| format!("cannot lock {}", path.display()))?;
        } else {
            match file.try_lock_exclusive() {
                Ok(true) => {}
                Ok(false) => bail!(
                    "another nixipfs run holds the lock {}; it exits when that run is done \
                     (pass --wait-lock to wait for it instead)",
                    path.display()
                ),
                Err(e) => return Err(e).with_context(|| format!("cannot lock {}", path.display())),
            }
        }
        Ok(DirLock { _file: file, path })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Removes the file at its path when dropped (a temporary download, whatever becomes of it).
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_that_stay_inside_are_accepted() {
        for ok in ["nar/0abc.nar.xz", "a", "nar/x+y=z_1-2.nar.zst", "a/b/c"] {
            assert_eq!(check_relative_path(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn traversal_and_absolute_paths_are_refused() {
        let cases = [
            ("", "Empty"),
            ("/etc/passwd", "Absolute"),
            ("http://evil/x", "Absolute"),
            ("nar/../../x", "Traversal"),
            ("..", "Traversal"),
            ("nar//x", "Traversal"),
            ("nar/./x", "Traversal"),
            ("nar/", "Traversal"),
            ("nar/%2e%2e/x", "BadCharacter"),
            ("nar\\..\\x", "BadCharacter"),
            ("nar/x\0y", "BadCharacter"),
            ("nar/x y", "BadCharacter"),
        ];
        for (input, kind) in cases {
            let err = check_relative_path(input).expect_err(input);
            assert!(format!("{err:?}").starts_with(kind), "{input}: {err:?}");
        }
        assert!(matches!(
            check_relative_path(&"a".repeat(2000)),
            Err(UnsafePath::TooLong(..))
        ));
    }

    #[test]
    fn file_names() {
        assert!(check_file_name("nixos-17.09.iso").is_ok());
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(check_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn relative_path_between_dirs() {
        assert_eq!(
            relative_path(
                Path::new("/m/releases/c/n/binary_cache"),
                Path::new("/m/binary_cache/x.narinfo")
            ),
            PathBuf::from("../../../../binary_cache/x.narinfo")
        );
        assert_eq!(
            relative_path(Path::new("/m/channels"), Path::new("/m/releases/c/n")),
            PathBuf::from("../releases/c/n")
        );
    }

    #[test]
    fn atomic_write_leaves_no_temp_file_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn dropped_temp_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path;
        {
            let mut t = temp_file_in(dir.path()).unwrap();
            t.write_all(b"partial").unwrap();
            path = t.path().to_path_buf();
            assert!(path.exists());
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(is_temp_name(&name), "{name}");
        }
        assert!(!path.exists());
    }

    #[test]
    fn symlink_swap() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("chan");
        atomic_symlink(Path::new("../a"), &link).unwrap();
        atomic_symlink(Path::new("../b"), &link).unwrap();
        assert_eq!(fs::read_link(&link).unwrap(), PathBuf::from("../b"));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn create_dir_refuses_planted_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("nar")).unwrap();
        let err = create_dir_all_within(dir.path(), &dir.path().join("nar/sub")).unwrap_err();
        assert!(format!("{err:#}").contains("is a symlink"), "{err:#}");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn stale_temp_files_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}abc")), b"x").unwrap();
        fs::write(dir.path().join("keep.narinfo"), b"x").unwrap();
        assert_eq!(remove_stale_temp_files(dir.path()).unwrap(), 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn lock_excludes_a_second_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path(), false).unwrap();
        let err = DirLock::acquire(dir.path(), false)
            .err()
            .expect("second lock must fail");
        assert!(format!("{err:#}").contains("holds the lock"));
        drop(first);
        DirLock::acquire(dir.path(), false).unwrap();
    }
}
