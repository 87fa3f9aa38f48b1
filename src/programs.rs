//! `programs.sqlite`: which package provides which program, the database `command-not-found`
//! reads (`select package from Programs where system = ? and name = ?`).
//!
//! The packages come from evaluating the channel's expressions per system with
//! `nix-env -qaP --out-path --xml` (with an empty `config` and no `overlays`, so that nothing
//! of the host's user configuration enters); the programs of a package are the entries directly under
//! `bin/` of each of its outputs that do not start with `.` and are executable regular files or
//! symlinks, read from the output's NAR in the mirror's binary cache with the NAR reader. When
//! one output is reached by several attribute paths, the shortest path (then the first in
//! byte order) names it. The database goes into the release's `nixexprs.tar.xz` as
//! `programs.sqlite` next to the channel's `default.nix`; the tarball is repacked
//! deterministically (entries sorted, owner and group 0, mtime 1) and its `.sha256` rewritten.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::binary_cache::LocalCache;
use crate::compression::{self, Compression};
use crate::fsutil;
use crate::nar::NarPath;
use crate::nar::{parse, NarVisitor};
use crate::store_path::StorePath;

/// The file name of the database, in the channel directory of the tarball.
pub const FILE: &str = "programs.sqlite";

/// The mtime of every entry of a repacked tarball.
const MTIME: u64 = 1;

/// One package of an evaluation: its attribute path and output paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// e.g. `python3Packages.foo`.
    pub attr_path: String,
    /// Absolute store paths of its outputs.
    pub outputs: Vec<String>,
}

/// Reads the XML of `nix-env -qaP --out-path --xml`.
pub fn parse_nix_env_xml(xml: &str) -> Result<Vec<Package>, String> {
    let mut out = Vec::new();
    for item in xml.split("<item ").skip(1) {
        let (head, body) = item.split_once('>').ok_or("an unterminated <item>")?;
        let attr_path = attribute(head, "attrPath").ok_or("an <item> without attrPath")?;
        let body = body.split("</item>").next().unwrap_or("");
        let outputs: Vec<String> = body
            .split("<output ")
            .skip(1)
            .filter_map(|o| attribute(o.split('>').next().unwrap_or(""), "path"))
            .collect();
        out.push(Package { attr_path, outputs });
    }
    Ok(out)
}

/// The unescaped value of `name="..."` in a tag's attributes.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let start = tag
        .find(&format!(" {name}=\""))
        .map(|i| i + name.len() + 3)
        .or_else(|| {
            tag.strip_prefix(&format!("{name}=\""))
                .map(|_| name.len() + 2)
        })?;
    let rest = &tag[start..];
    let value = &rest[..rest.find('"')?];
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// Each output path with the attribute path that names it: the shortest, then the first in
/// byte order.
pub fn shortest_names(packages: &[Package]) -> BTreeMap<String, String> {
    let mut by_output: BTreeMap<String, String> = BTreeMap::new();
    for p in packages {
        for o in &p.outputs {
            let better = match by_output.get(o) {
                None => true,
                Some(cur) => (p.attr_path.len(), &p.attr_path) < (cur.len(), cur),
            };
            if better {
                by_output.insert(o.clone(), p.attr_path.clone());
            }
        }
    }
    by_output
}

/// The programs of a NAR: names directly under `bin/` that do not start with `.` and are
/// executable files or symlinks.
#[derive(Default)]
pub struct BinLister {
    /// The programs found.
    pub programs: BTreeSet<String>,
}

impl BinLister {
    fn in_bin(path: &NarPath) -> Option<String> {
        let parts: Vec<&[u8]> = path.components().collect();
        match parts[..] {
            [b"bin", name] if !name.starts_with(b".") => {
                Some(String::from_utf8_lossy(name).into_owned())
            }
            _ => None,
        }
    }
}

impl NarVisitor for BinLister {
    fn file(
        &mut self,
        path: &NarPath,
        executable: bool,
        _size: u64,
        _contents: &mut dyn Read,
    ) -> std::io::Result<()> {
        if executable {
            if let Some(name) = Self::in_bin(path) {
                self.programs.insert(name);
            }
        }
        Ok(())
    }

    fn symlink(&mut self, path: &NarPath, _target: &[u8]) -> std::io::Result<()> {
        if let Some(name) = Self::in_bin(path) {
            self.programs.insert(name);
        }
        Ok(())
    }
}

/// The programs under `bin/` of `store_path`, read from its NAR in `cache`; `None` when the
/// cache does not hold it.
pub fn programs_of(cache: &LocalCache, store_path: &str) -> Result<Option<BTreeSet<String>>> {
    let sp = StorePath::from_absolute_path(store_path)
        .with_context(|| format!("nix-env printed {store_path:?}, which is not a store path"))?;
    let Some(info) = cache.read_narinfo(&sp) else {
        return Ok(None);
    };
    let nar = cache.nar_path(&info)?;
    if !cache.nar_present(&nar, &info) {
        return Ok(None);
    }
    let compression = Compression::from_narinfo(&info.compression)?;
    let file =
        std::fs::File::open(&nar).with_context(|| format!("cannot read {}", nar.display()))?;
    let reader = compression::decompressor(compression, BufReader::new(file))?;
    let mut lister = BinLister::default();
    parse(reader, &mut lister).with_context(|| format!("{} is not a valid NAR", nar.display()))?;
    Ok(Some(lister.programs))
}

/// Evaluates the channel in `channel_dir` for `system` with `nix-env`.
pub fn evaluate(channel_dir: &Path, system: &str) -> Result<Vec<Package>> {
    let mut cmd = Command::new("nix-env");
    cmd.arg("--readonly-mode")
        .arg("-f")
        .arg(channel_dir)
        .args(["-qaP", "--out-path", "--xml", "--argstr", "system", system])
        // The channel as it is, whatever the host's ~/.config/nixpkgs says.
        .args(["--arg", "config", "{}", "--arg", "overlays", "[]"])
        .stdin(Stdio::null());
    let out = match cmd.output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "programs.sqlite needs `nix-env`, which is not installed: install Nix (Debian: \
             `apt-get install nix-bin`), or set `\"programs\": false` for the release to leave \
             programs.sqlite out"
        ),
        Err(e) => return Err(e).context("cannot run nix-env"),
    };
    if !out.status.success() {
        bail!(
            "nix-env could not evaluate {} for {system} ({}): {}",
            channel_dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    parse_nix_env_xml(&String::from_utf8_lossy(&out.stdout))
        .map_err(|e| anyhow::anyhow!("nix-env printed XML that cannot be read: {e}"))
}

/// What [`build_database`] found.
#[derive(Debug, Default)]
pub struct ProgramsReport {
    /// Rows written.
    pub rows: usize,
    /// Output paths whose NAR the mirror does not hold (listed in the log).
    pub not_mirrored: usize,
}

/// Writes the database for `channel_dir` to `dest`.
pub fn build_database(
    channel_dir: &Path,
    systems: &[String],
    cache: &LocalCache,
    dest: &Path,
) -> Result<ProgramsReport> {
    let mut report = ProgramsReport::default();
    let db = rusqlite::Connection::open(dest)
        .with_context(|| format!("cannot create {}", dest.display()))?;
    db.execute_batch(
        "create table Programs (name text not null, system text not null, \
         package text not null, primary key (name, system, package));",
    )?;
    let mut listed: BTreeMap<String, Option<BTreeSet<String>>> = BTreeMap::new();
    for system in systems {
        let packages = evaluate(channel_dir, system)?;
        let tx = db.unchecked_transaction()?;
        {
            let mut insert = tx.prepare(
                "insert or ignore into Programs (name, system, package) values (?1, ?2, ?3)",
            )?;
            for (output, attr) in shortest_names(&packages) {
                if !listed.contains_key(&output) {
                    let found = programs_of(cache, &output)?;
                    if found.is_none() {
                        tracing::debug!(
                            "{output} ({attr}) is not in the mirror; no programs from it"
                        );
                        report.not_mirrored += 1;
                    }
                    listed.insert(output.clone(), found);
                }
                for name in listed[&output].iter().flatten() {
                    report.rows += insert.execute(rusqlite::params![name, system, attr])?;
                }
            }
        }
        tx.commit()?;
    }
    Ok(report)
}

/// Adds `programs.sqlite` to the release's `nixexprs.tar.xz` and rewrites its `.sha256`. The
/// tarball is unpacked under `tmpdir`, evaluated there and repacked.
pub fn add_to_release(
    release_dir: &Path,
    systems: &[String],
    cache: &LocalCache,
    tmpdir: &Path,
) -> Result<ProgramsReport> {
    let tarball = release_dir.join("nixexprs.tar.xz");
    let work = tempfile::Builder::new()
        .prefix(".tmp-programs-")
        .tempdir_in(tmpdir)
        .with_context(|| format!("cannot create a directory in {}", tmpdir.display()))?;
    let unpacked = work.path().join("unpacked");
    std::fs::create_dir(&unpacked)?;
    {
        let file = std::fs::File::open(&tarball)
            .with_context(|| format!("cannot read {}", tarball.display()))?;
        let mut archive = tar::Archive::new(xz2::read::XzDecoder::new(BufReader::new(file)));
        archive.set_preserve_permissions(true);
        archive
            .unpack(&unpacked)
            .with_context(|| format!("cannot unpack {}", tarball.display()))?;
    }
    let tops = fsutil::read_dir_sorted(&unpacked)?;
    let [top] = &tops[..] else {
        bail!(
            "{} holds {} top-level entries; a channel tarball holds one directory",
            tarball.display(),
            tops.len()
        );
    };
    if !top.is_dir() || top.is_symlink() {
        bail!("{} does not hold a channel directory", tarball.display());
    }
    let db = top.join(FILE);
    if db.exists() {
        std::fs::remove_file(&db)?;
    }
    let report = build_database(top, systems, cache, &db)?;
    let mut tmp = fsutil::temp_file_in(release_dir)?;
    let sha = {
        let hashing = crate::hash::HashingWriter::new(std::io::BufWriter::new(tmp.as_file_mut()));
        let xz = xz2::write::XzEncoder::new(hashing, 6);
        let xz = pack_sorted(&unpacked, xz)?;
        let (mut out, sha, _) = xz.finish()?.finish();
        std::io::Write::flush(&mut out)?;
        sha
    };
    fsutil::persist(tmp, &tarball, true)
        .with_context(|| format!("cannot write {}", tarball.display()))?;
    fsutil::atomic_write(
        &release_dir.join("nixexprs.tar.xz.sha256"),
        format!("{}  nixexprs.tar.xz\n", sha.to_hex()).as_bytes(),
    )?;
    Ok(report)
}

/// Writes the tree under `root` as a tar stream: entries in byte order of their paths, owner
/// and group 0, mtime 1 (`MTIME`), modes 0755/0644 by the executable bit.
pub fn pack_sorted<W: std::io::Write>(root: &Path, out: W) -> Result<W> {
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    let entries = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by(|a, b| a.file_name().cmp(b.file_name()));
    for entry in entries {
        let entry = entry?;
        let rel: PathBuf = entry.path().strip_prefix(root)?.to_path_buf();
        let meta = entry.path().symlink_metadata()?;
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        let ft = meta.file_type();
        if ft.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            builder.append_data(&mut header, &rel, std::io::empty())?;
        } else if ft.is_symlink() {
            let target = std::fs::read_link(entry.path())?;
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            builder.append_link(&mut header, &rel, &target)?;
        } else if ft.is_file() {
            use std::os::unix::fs::PermissionsExt;
            let exec = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(if exec { 0o755 } else { 0o644 });
            header.set_size(meta.len());
            let file = std::fs::File::open(entry.path())?;
            builder.append_data(&mut header, &rel, file)?;
        } else {
            bail!(
                "{} is not a file, directory or symlink",
                entry.path().display()
            );
        }
    }
    Ok(builder.into_inner()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nix_env_xml_is_read_with_escapes() {
        let xml = r#"<?xml version='1.0' encoding='utf-8'?>
<items>
  <item attrPath="hello" name="hello-1.0" outputName="out" system="x86_64-linux">
    <output name="out" path="/nix/store/0bchd1jwhjxh4sry4rkpc1jbbbrzy1xq-hello-1.0" />
  </item>
  <item attrPath="a.&quot;b&amp;c&quot;" name="x" system="x86_64-linux">
    <output name="bin" path="/nix/store/1bchd1jwhjxh4sry4rkpc1jbbbrzy1xq-x-bin" />
    <output name="out" path="/nix/store/2bchd1jwhjxh4sry4rkpc1jbbbrzy1xq-x" />
  </item>
</items>"#;
        let p = parse_nix_env_xml(xml).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].attr_path, "a.\"b&c\"");
        assert_eq!(p[1].outputs.len(), 2);
    }

    #[test]
    fn the_shortest_attribute_path_names_an_output() {
        let pkg = |a: &str, o: &str| Package {
            attr_path: a.into(),
            outputs: vec![o.into()],
        };
        let names = shortest_names(&[
            pkg("python3Packages.foo", "/o1"),
            pkg("foo", "/o1"),
            pkg("zz", "/o2"),
            pkg("aa", "/o2"),
        ]);
        assert_eq!(names["/o1"], "foo");
        assert_eq!(names["/o2"], "aa");
    }
}
