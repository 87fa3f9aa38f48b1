//! Getting data out of a NAR: [`extract_file`] copies one regular file, [`unpack`] writes the
//! whole tree to disk. Both stream the NAR and validate all of it.

use std::ffi::OsStr;
use std::fs::{self, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use super::reader::{parse, NarSummary, NarVisitor};
use super::{wire, NarError, NarErrorKind, NarPath};

/// The size of the buffer used to copy file contents.
const COPY_BUFFER_SIZE: usize = 64 * 1024;

/// The mode of unpacked regular files that are not executable (as in the Nix store).
pub const FILE_MODE: u32 = 0o444;
/// The mode of unpacked executable files (as in the Nix store).
pub const EXECUTABLE_MODE: u32 = 0o555;
/// The mode of unpacked directories. Unlike in the Nix store they stay writable by their owner,
/// so that the tree can be removed or replaced without changing modes first.
pub const DIRECTORY_MODE: u32 = 0o755;

/// The regular file that [`extract_file`] copied out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractedFile {
    /// The size of the file, which is the number of bytes written to the output.
    pub size: u64,
    /// Whether the file is executable.
    pub executable: bool,
    /// What the whole NAR contained.
    pub summary: NarSummary,
}

/// Copies the contents of the regular file at `path_inside` from the NAR `r` to `out`.
///
/// `path_inside` is `/`-separated, like `/tarballs/nixos-17.09.tar.xz`; `""` or `"/"` names
/// the root, for a NAR that is a single file. The leading `/` is optional. Components are
/// compared byte for byte; empty, `.` and `..` components are refused
/// ([`NarErrorKind::InvalidPathInside`]).
///
/// The whole NAR is read and validated, so a truncated or corrupt NAR is an error even when the
/// wanted file came before the damage. The error is [`NarErrorKind::NotFound`],
/// [`NarErrorKind::IsDirectory`] or [`NarErrorKind::IsSymlink`] if the NAR is valid but has no
/// regular file at that path. On any error `out` may already have received some or all of the
/// contents: write to a temporary file and discard it on error.
pub fn extract_file<R: Read, W: Write>(
    r: R,
    path_inside: &str,
    out: &mut W,
) -> Result<ExtractedFile, NarError> {
    let wanted = parse_path_inside(path_inside).map_err(|reason| {
        let kind = NarErrorKind::InvalidPathInside {
            path: path_inside.to_owned(),
            reason,
        };
        NarError::new(kind, 0, NarPath::root())
    })?;
    let mut visitor = Extractor {
        wanted: wanted.as_bytes().to_vec(),
        out,
        found: Found::Nothing,
        buf: Vec::new(),
    };
    let summary = parse(r, &mut visitor)?;
    let at_end = |kind| NarError::new(kind, summary.nar_size, wanted.clone());
    match visitor.found {
        Found::File { size, executable } => Ok(ExtractedFile {
            size,
            executable,
            summary,
        }),
        Found::Nothing => Err(at_end(NarErrorKind::NotFound)),
        Found::Directory => Err(at_end(NarErrorKind::IsDirectory)),
        Found::Symlink(target) => Err(at_end(NarErrorKind::IsSymlink {
            target: wire::show_bytes(&target),
        })),
    }
}

/// Splits a path for [`extract_file`] into a [`NarPath`], or says what is wrong with it.
fn parse_path_inside(p: &str) -> Result<NarPath, &'static str> {
    let mut path = NarPath::root();
    if p.is_empty() || p == "/" {
        return Ok(path);
    }
    for c in p.strip_prefix('/').unwrap_or(p).split('/') {
        match c {
            "" => return Err("it has an empty component (\"//\" or a trailing '/')"),
            "." | ".." => return Err("\".\" and \"..\" components are not allowed"),
            c if c.contains('\0') => return Err("it contains a NUL byte"),
            c => path.push(c.as_bytes()),
        }
    }
    Ok(path)
}

enum Found {
    Nothing,
    File { size: u64, executable: bool },
    Directory,
    Symlink(Vec<u8>),
}

struct Extractor<'a, W> {
    /// The wanted path in the form of [`NarPath::as_bytes`].
    wanted: Vec<u8>,
    out: &'a mut W,
    found: Found,
    buf: Vec<u8>,
}

impl<W: Write> NarVisitor for Extractor<'_, W> {
    fn directory(&mut self, path: &NarPath) -> io::Result<()> {
        if path.as_bytes() == self.wanted {
            self.found = Found::Directory;
        }
        Ok(())
    }

    fn file(
        &mut self,
        path: &NarPath,
        executable: bool,
        size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()> {
        if path.as_bytes() == self.wanted {
            copy(contents, self.out, &mut self.buf)?;
            self.out.flush()?;
            self.found = Found::File { size, executable };
        }
        Ok(())
    }

    fn symlink(&mut self, path: &NarPath, target: &[u8]) -> io::Result<()> {
        if path.as_bytes() == self.wanted {
            self.found = Found::Symlink(target.to_vec());
        }
        Ok(())
    }
}

/// Copies `r` to `w` through `buf`, which is allocated on first use.
fn copy(r: &mut dyn Read, w: &mut dyn Write, buf: &mut Vec<u8>) -> io::Result<u64> {
    if buf.is_empty() {
        buf.resize(COPY_BUFFER_SIZE, 0);
    }
    let mut total = 0;
    loop {
        let n = match r.read(buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        w.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Unpacks the NAR `r` as a file system tree at `dest`, which must not exist yet (its parent
/// must).
///
/// Regular files get mode [`FILE_MODE`] or [`EXECUTABLE_MODE`], directories
/// [`DIRECTORY_MODE`]; modification times are left as they fall. Symlinks are created as they
/// are, pointing wherever their target says; since every node is created fresh (files with
/// `O_EXCL`) inside directories created by this function, and names cannot contain `/` or be
/// `..`, nothing is ever written through a symlink or outside `dest`.
///
/// The NAR is validated while it is unpacked. On error a partial tree may remain at `dest`;
/// the caller should remove it.
pub fn unpack<R: Read>(r: R, dest: &Path) -> Result<NarSummary, NarError> {
    match fs::symlink_metadata(dest) {
        Ok(_) => {
            let kind = NarErrorKind::DestinationExists {
                path: dest.to_path_buf(),
            };
            return Err(NarError::new(kind, 0, NarPath::root()));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            let e = with_path(e, "cannot inspect", dest);
            return Err(NarError::new(NarErrorKind::Output(e), 0, NarPath::root()));
        }
    }
    let mut visitor = Unpacker {
        dest,
        buf: Vec::new(),
    };
    parse(r, &mut visitor)
}

/// Adds what was being done, and to which file, to an I/O error.
fn with_path(e: io::Error, doing: &str, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
}

struct Unpacker<'a> {
    dest: &'a Path,
    buf: Vec<u8>,
}

impl NarVisitor for Unpacker<'_> {
    fn directory(&mut self, path: &NarPath) -> io::Result<()> {
        let p = path.to_fs_path(self.dest);
        fs::create_dir(&p).map_err(|e| with_path(e, "cannot create directory", &p))?;
        fs::set_permissions(&p, Permissions::from_mode(DIRECTORY_MODE))
            .map_err(|e| with_path(e, "cannot set the mode of", &p))
    }

    fn file(
        &mut self,
        path: &NarPath,
        executable: bool,
        _size: u64,
        contents: &mut dyn Read,
    ) -> io::Result<()> {
        let p = path.to_fs_path(self.dest);
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)
            .map_err(|e| with_path(e, "cannot create file", &p))?;
        // If reading the NAR failed, the parser reports that instead of this error.
        copy(contents, &mut f, &mut self.buf).map_err(|e| with_path(e, "cannot write", &p))?;
        let mode = if executable {
            EXECUTABLE_MODE
        } else {
            FILE_MODE
        };
        f.set_permissions(Permissions::from_mode(mode))
            .map_err(|e| with_path(e, "cannot set the mode of", &p))
    }

    fn symlink(&mut self, path: &NarPath, target: &[u8]) -> io::Result<()> {
        let p = path.to_fs_path(self.dest);
        std::os::unix::fs::symlink(OsStr::from_bytes(target), &p)
            .map_err(|e| with_path(e, "cannot create symlink", &p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_inside() {
        let ok = |p: &str| parse_path_inside(p).map(|p| p.to_string());
        assert_eq!(ok(""), Ok("/".to_owned()));
        assert_eq!(ok("/"), Ok("/".to_owned()));
        assert_eq!(ok("/bin/hello"), Ok("/bin/hello".to_owned()));
        assert_eq!(ok("bin/hello"), Ok("/bin/hello".to_owned()));
        for bad in ["//", "/bin/", "/a//b", "/./a", "/a/..", "..", "a/\0"] {
            assert!(parse_path_inside(bad).is_err(), "{bad:?}");
        }
    }
}
