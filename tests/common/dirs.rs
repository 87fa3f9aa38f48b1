//! Temporary directories for tests and checks on what a command leaves in them.
//!
//! A [`TestDir`] lives under `CARGO_TARGET_TMPDIR/test-dirs/` and is removed when dropped. With
//! `NIXIPFS_KEEP_TEST_DIRS=1` a directory is kept when its test fails (it is dropped while the
//! thread panics), and with `NIXIPFS_KEEP_TEST_DIRS=all` it is always kept; its path is printed
//! to stderr in both cases.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// The prefix of the names of the temporary files `nixipfs` writes before renaming them into
/// place.
pub const TEMP_FILE_PREFIX: &str = ".nixipfs-tmp-";

/// The environment variable that keeps test directories (`1`: on failure, `all`: always).
pub const KEEP_ENV: &str = "NIXIPFS_KEEP_TEST_DIRS";

/// A unique directory for one test, removed on drop unless kept (see the module documentation).
#[derive(Debug)]
pub struct TestDir {
    path: PathBuf,
}

impl TestDir {
    /// Creates a new empty directory whose name starts with `nixipfs-<label>-`.
    pub fn new(label: &str) -> TestDir {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let parent = Path::new(env!("CARGO_TARGET_TMPDIR")).join("test-dirs");
        fs::create_dir_all(&parent)
            .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        loop {
            let n = COUNTER.fetch_add(1, Ordering::SeqCst);
            let label: String = label
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let path = parent.join(format!(
                "nixipfs-{label}-{}-{n}-{nanos:08x}",
                std::process::id()
            ));
            match fs::create_dir(&path) {
                Ok(()) => return TestDir { path },
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!("creating {}: {e}", path.display()),
            }
        }
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory joined with `rel`.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.path.join(rel)
    }

    /// Writes `contents` to `rel` (creating parent directories) and returns the full path.
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let file = self.path.join(rel);
        if let Some(parent) = file.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("creating {}: {e}", parent.display()));
        }
        fs::write(&file, contents).unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        file
    }

    /// Keeps the directory on disk and returns its path.
    pub fn keep(self) -> PathBuf {
        let path = self.path.clone();
        std::mem::forget(self);
        path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let keep = std::env::var(KEEP_ENV).unwrap_or_default();
        if keep == "all" || (keep == "1" && std::thread::panicking()) {
            eprintln!("keeping test directory {}", self.path.display());
            return;
        }
        remove_tree(&self.path);
    }
}

/// Removes a directory tree, first making read-only directories (such as a Nix store's)
/// writable. Errors are ignored.
pub fn remove_tree(path: &Path) {
    if fs::remove_dir_all(path).is_ok() || !path.exists() {
        return;
    }
    make_writable(path);
    let _ = fs::remove_dir_all(path);
}

fn make_writable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    if !meta.is_dir() {
        return;
    }
    let mut perms = meta.permissions();
    perms.set_mode(perms.mode() | 0o700);
    let _ = fs::set_permissions(path, perms);
    if let Ok(entries) = fs::read_dir(path) {
        for entry in entries.flatten() {
            make_writable(&entry.path());
        }
    }
}

/// Whether a file name looks like a leftover temporary file.
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with(TEMP_FILE_PREFIX)
        || name.starts_with(".tmp")
        || name.ends_with(".tmp")
        || name.ends_with(".part")
}

/// Every entry under `dir` (recursively, not following symlinks) whose name looks temporary
/// (see [`is_temp_name`]), sorted.
pub fn temp_files(dir: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let entries =
            fs::read_dir(dir).unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()));
            let path = entry.path();
            if is_temp_name(&entry.file_name().to_string_lossy()) {
                found.push(path.clone());
            }
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                walk(&path, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(dir, &mut found);
    found.sort();
    found
}

/// Fails the test, listing them, if any temporary files are left under `dir`.
#[track_caller]
pub fn assert_no_temp_files(dir: &Path) {
    let found = temp_files(dir);
    assert!(
        found.is_empty(),
        "temporary files left under {}:\n  {}",
        dir.display(),
        found
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join("\n  ")
    );
}
