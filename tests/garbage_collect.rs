//! Whole-command tests of `nixipfs garbage-collect` on mirrors built by
//! `nixipfs update-binary-cache` from binary caches made by real Nix.
//!
//! The mirrors hold several releases whose closures overlap; the checks compare the files left
//! in the global cache with what the live releases link to, the printed list with what was
//! deleted, and make sure a refused collection deletes nothing at all.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::nixcache::store_path_hash;
use common::{
    assert_no_temp_files, nix_cache, nix_install_from, output_text, run_nixipfs, Compression,
    NixCache, Response, TestDir, TestServer,
};

/// A store path of the same NAR as `nixipfs-test-tool`, served only by [`serve`].
const TWIN: &str = "/nix/store/2222222222222222222222222222222z-nixipfs-test-tool";

/// A mirror directory with releases under `releases/test-channel/`.
struct Mirror {
    dir: TestDir,
    cache: &'static NixCache,
    server: TestServer,
}

impl Mirror {
    /// A mirror of the xz cache, served with one more narinfo: [`TWIN`], naming tool's NAR.
    fn new(label: &str) -> Mirror {
        let cache = nix_cache(Compression::Xz);
        let server = TestServer::builder()
            .static_dir(&cache.dir)
            .route(
                &cache.narinfo_url_path(TWIN),
                Response::new(200)
                    .content_type("text/x-nix-narinfo")
                    .body(twin_narinfo(cache)),
            )
            .start();
        Mirror {
            dir: TestDir::new(label),
            cache,
            server,
        }
    }

    fn outdir(&self) -> PathBuf {
        self.dir.join("mirror")
    }

    fn cache_dir(&self) -> PathBuf {
        self.outdir().join("binary_cache")
    }

    fn release(&self, name: &str) -> PathBuf {
        self.outdir().join("releases/test-channel").join(name)
    }

    fn path(&self, name: &str) -> String {
        self.cache.path_named(name).to_string()
    }

    /// Mirrors a release named `name` whose store-paths are `roots`.
    fn add_release(&self, name: &str, roots: &[String]) -> PathBuf {
        let release = self.release(name);
        fs::create_dir_all(&release).unwrap();
        let text: String = roots.iter().map(|r| format!("{r}\n")).collect();
        fs::write(release.join("store-paths"), text).unwrap();
        let out = run_nixipfs([
            "update-binary-cache",
            "--release",
            release.to_str().unwrap(),
            "--outdir",
            self.outdir().to_str().unwrap(),
            "--cache",
            &self.server.url(),
            "--no-check-sigs",
            "--progress",
            "none",
        ]);
        assert!(out.status.success(), "{}", output_text(&out));
        release
    }

    /// The narinfo file name of `path` and its NAR's path, relative to the cache.
    fn files_of(&self, path: &str) -> Vec<String> {
        let name = format!("{}.narinfo", store_path_hash(path));
        if path == TWIN {
            return vec![name];
        }
        let url = self.cache.narinfo_field(path, "URL").unwrap();
        vec![name, url]
    }

    fn files_of_all(&self, paths: &[&str]) -> BTreeSet<String> {
        paths.iter().flat_map(|p| self.files_of(p)).collect()
    }
}

/// The narinfo of [`TWIN`]: tool's, under another store path.
fn twin_narinfo(cache: &NixCache) -> String {
    let tool = cache.path_named("nixipfs-test-tool");
    fs::read_to_string(cache.narinfo_file(tool))
        .unwrap()
        .replace(tool, TWIN)
}

/// Runs `garbage-collect` on the mirror's cache for `releases`, with `extra` arguments first.
fn gc(m: &Mirror, releases: &[&Path], extra: &[&str]) -> Output {
    let cache = m.cache_dir();
    let mut args: Vec<&str> = vec![
        "garbage-collect",
        "--progress",
        "none",
        "--cache",
        cache.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    if !releases.is_empty() {
        args.push("--releases");
        args.extend(releases.iter().map(|r| r.to_str().unwrap()));
    }
    run_nixipfs(args)
}

/// Every file and symlink under `dir` (not following symlinks), as relative paths.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry.unwrap();
        if !entry.file_type().is_dir() {
            let rel = entry.path().strip_prefix(dir).unwrap();
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    out
}

/// Size, inode and modification time of every entry under `dir`, directories included.
fn snapshot(dir: &Path) -> BTreeMap<String, (u64, u64, i64, i64)> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(dir).unwrap();
            (
                rel.to_string_lossy().into_owned(),
                (meta.len(), meta.ino(), meta.mtime(), meta.mtime_nsec()),
            )
        })
        .collect()
}

/// The cache files other than the narinfos and NARs.
fn cache_meta_files() -> BTreeSet<String> {
    BTreeSet::from(["nix-cache-info".to_string()])
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "garbage-collect failed\n{}",
        output_text(out)
    );
}

#[track_caller]
fn assert_refused(out: &Output, reason: &str) {
    assert!(
        !out.status.success(),
        "garbage-collect should have refused\n{}",
        output_text(out)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(reason), "the error says {reason:?}:\n{err}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "nothing is listed as deleted"
    );
}

/// The lines `garbage-collect` prints for deleting `files` of the mirror's cache.
fn deletion_lines(m: &Mirror, verb: &str, files: &BTreeSet<String>) -> BTreeSet<String> {
    files
        .iter()
        .map(|f| format!("{verb} {}", m.cache_dir().join(f).display()))
        .collect()
}

fn stdout_lines(out: &Output) -> BTreeSet<String> {
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let set: BTreeSet<String> = lines.iter().cloned().collect();
    assert_eq!(lines.len(), set.len(), "each file is printed once:\n{text}");
    set
}

fn total_size(m: &Mirror, files: &BTreeSet<String>) -> u64 {
    files
        .iter()
        .map(|f| fs::metadata(m.cache_dir().join(f)).unwrap().len())
        .sum()
}

#[test]
fn only_files_no_live_release_links_to_are_deleted() {
    let m = Mirror::new("gc-releases");
    let (app, tool, lib) = (
        m.path("nixipfs-test-app"),
        m.path("nixipfs-test-tool"),
        m.path("nixipfs-test-lib"),
    );
    let unrelated = m.cache.unrelated[0].clone();
    // `app` holds the whole closure, `tool` shares tool and lib with it.
    let rel_app = m.add_release("app", std::slice::from_ref(&app));
    let rel_tool = m.add_release("tool", std::slice::from_ref(&tool));
    let rel_unrelated = m.add_release("unrelated", std::slice::from_ref(&unrelated));
    let all: Vec<&str> = m
        .cache
        .closure
        .iter()
        .chain(&m.cache.unrelated)
        .map(String::as_str)
        .collect();
    let mut everything = m.files_of_all(&all);
    everything.extend(cache_meta_files());
    assert_eq!(tree(&m.cache_dir()), everything);

    // Every release still listed: nothing to delete.
    let before = snapshot(&m.outdir());
    let out = gc(&m, &[&rel_app, &rel_tool, &rel_unrelated], &[]);
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), BTreeSet::new());
    assert_eq!(snapshot(&m.outdir()), before);

    // A dry run lists what goes without the release `app`, and deletes nothing.
    let app_only: Vec<&str> = ["app", "hello", "data", "link"]
        .iter()
        .map(|n| m.cache.path_named(&format!("nixipfs-test-{n}")))
        .collect();
    let mut dead = m.files_of_all(&app_only);
    dead.extend(m.files_of(&unrelated));
    for flag in ["--dry-run", "--dry_run"] {
        let out = gc(&m, &[&rel_tool], &[flag]);
        assert_ok(&out);
        assert_eq!(
            stdout_lines(&out),
            deletion_lines(&m, "would delete", &dead),
            "{flag}"
        );
        assert_eq!(snapshot(&m.outdir()), before, "{flag} changes nothing");
    }

    // Dropping `unrelated` deletes its two files only.
    let dead_unrelated: BTreeSet<String> = m.files_of(&unrelated).into_iter().collect();
    let freed = total_size(&m, &dead_unrelated);
    let out = gc(&m, &[&rel_app, &rel_tool], &[]);
    assert_ok(&out);
    assert_eq!(
        stdout_lines(&out),
        deletion_lines(&m, "deleted", &dead_unrelated)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{freed} bytes")),
        "bytes freed:\n{err}"
    );
    let mut left = m.files_of_all(
        &m.cache
            .closure
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    left.extend(cache_meta_files());
    assert_eq!(tree(&m.cache_dir()), left);

    // Dropping `app` too leaves what `tool` needs.
    let dead_app = m.files_of_all(&app_only);
    let freed = total_size(&m, &dead_app);
    let out = gc(&m, &[&rel_tool], &[]);
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), deletion_lines(&m, "deleted", &dead_app));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{freed} bytes")),
        "bytes freed:\n{err}"
    );
    let mut left = m.files_of_all(&[&tool, &lib]);
    left.extend(cache_meta_files());
    assert_eq!(tree(&m.cache_dir()), left);
    assert_no_temp_files(m.dir.path());

    // Collecting again finds nothing, and the kept release still installs with Nix.
    let out = gc(&m, &[&rel_tool], &[]);
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), BTreeSet::new());
    let srv = TestServer::builder()
        .static_dir(rel_tool.join("binary_cache"))
        .start();
    let store = nix_install_from(&srv.url(), &m.cache.public_key, std::slice::from_ref(&tool))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut want = vec![tool.clone(), lib.clone()];
    want.sort();
    assert_eq!(store.closure, want);
}

#[test]
fn a_nar_stays_while_any_live_narinfo_names_it() {
    let m = Mirror::new("gc-shared-nar");
    let (tool, lib) = (m.path("nixipfs-test-tool"), m.path("nixipfs-test-lib"));
    let rel_tool = m.add_release("tool", std::slice::from_ref(&tool));
    let rel_twin = m.add_release("twin", &[TWIN.to_string()]);
    let rel_lib = m.add_release("lib", std::slice::from_ref(&lib));
    let nar = m.cache.narinfo_field(&tool, "URL").unwrap();
    assert_eq!(
        m.server.count(&format!("/{nar}")),
        1,
        "the shared NAR is downloaded once:\n{}",
        m.server.log_summary()
    );

    // The twin release loses its link to the NAR but still links the narinfo naming it.
    fs::remove_file(rel_twin.join("binary_cache").join(&nar)).unwrap();
    let out = gc(&m, &[&rel_twin], &[]);
    assert_ok(&out);
    let tool_narinfo: BTreeSet<String> =
        BTreeSet::from([format!("{}.narinfo", store_path_hash(&tool))]);
    assert_eq!(
        stdout_lines(&out),
        deletion_lines(&m, "deleted", &tool_narinfo)
    );
    let mut left = m.files_of_all(&[TWIN, &lib]);
    left.insert(nar.clone());
    left.extend(cache_meta_files());
    assert_eq!(tree(&m.cache_dir()), left);

    // Once no live narinfo names it, it goes.
    let out = gc(&m, &[&rel_lib], &[]);
    assert_ok(&out);
    let dead = BTreeSet::from([format!("{}.narinfo", store_path_hash(TWIN)), nar]);
    assert_eq!(stdout_lines(&out), deletion_lines(&m, "deleted", &dead));
    let mut left = m.files_of_all(&[&lib]);
    left.extend(cache_meta_files());
    assert_eq!(tree(&m.cache_dir()), left);
    drop(rel_tool);
}

#[test]
fn an_incomplete_view_of_the_releases_deletes_nothing() {
    let m = Mirror::new("gc-refuse");
    let tool = m.path("nixipfs-test-tool");
    let app = m.path("nixipfs-test-app");
    let rel_tool = m.add_release("tool", std::slice::from_ref(&tool));
    let rel_app = m.add_release("app", std::slice::from_ref(&app));
    let no_view = m.release("no-view");
    fs::create_dir_all(&no_view).unwrap();
    fs::write(no_view.join("store-paths"), format!("{tool}\n")).unwrap();
    let gone = m.release("gone");
    let before = snapshot(&m.outdir());

    let out = gc(&m, &[&rel_tool, &gone], &[]);
    assert_refused(&out, &gone.display().to_string());
    assert_eq!(snapshot(&m.outdir()), before, "a missing release");

    let out = gc(&m, &[&rel_tool, &no_view], &[]);
    assert_refused(&out, "binary_cache");
    assert_eq!(
        snapshot(&m.outdir()),
        before,
        "a release without binary_cache/"
    );

    let out = gc(&m, &[&rel_tool, &no_view], &["--dry-run"]);
    assert_refused(&out, "binary_cache");

    let out = gc(&m, &[], &[]);
    assert_eq!(out.status.code(), Some(2), "{}", output_text(&out));
    assert_eq!(snapshot(&m.outdir()), before, "no release given");

    // A release links to a file that is gone: it is incomplete, so its other files would
    // look like garbage.
    let data = m.path("nixipfs-test-data");
    let data_nar = m.cache.narinfo_field(&data, "URL").unwrap();
    fs::remove_file(m.cache_dir().join(&data_nar)).unwrap();
    let before = snapshot(&m.outdir());
    let out = gc(&m, &[&rel_app], &[]);
    assert_refused(&out, "missing");
    assert_eq!(snapshot(&m.outdir()), before, "a dangling link");

    // A release whose links lead out of the cache was not mirrored into it.
    fs::write(m.cache_dir().join(&data_nar), b"back").unwrap();
    let stray = rel_tool.join("binary_cache/stray.narinfo");
    std::os::unix::fs::symlink("../store-paths", &stray).unwrap();
    let before = snapshot(&m.outdir());
    let out = gc(&m, &[&rel_tool], &[]);
    assert_refused(&out, "outside the cache");
    assert_eq!(snapshot(&m.outdir()), before, "a link out of the cache");
    fs::remove_file(&stray).unwrap();
    let before = snapshot(&m.outdir());

    // The cache itself must exist.
    let out = run_nixipfs([
        "garbage-collect",
        "--progress",
        "none",
        "--cache",
        m.dir.join("no-such-cache").to_str().unwrap(),
        "--releases",
        rel_tool.to_str().unwrap(),
    ]);
    assert_refused(&out, "no-such-cache");
    assert_eq!(snapshot(&m.outdir()), before);
}

#[test]
fn stale_temporary_files_are_removed() {
    let m = Mirror::new("gc-temp");
    let tool = m.path("nixipfs-test-tool");
    let rel_tool = m.add_release("tool", std::slice::from_ref(&tool));
    let stale = [
        ".nixipfs-tmp-0123456789abcdef",
        "nar/.nixipfs-tmp-fedcba9876543210",
    ];
    for f in stale {
        fs::write(m.cache_dir().join(f), b"left by a crash").unwrap();
    }
    let stale_dir = m.cache_dir().join("nar/.nixipfs-tmp-00000000000000aa");
    fs::create_dir_all(&stale_dir).unwrap();
    fs::write(stale_dir.join("inner"), b"x").unwrap();

    let before = snapshot(&m.outdir());
    let out = gc(&m, &[&rel_tool], &["--dry-run"]);
    assert_ok(&out);
    let mut listed: BTreeSet<String> = stale.iter().map(|s| s.to_string()).collect();
    listed.insert("nar/.nixipfs-tmp-00000000000000aa".into());
    assert_eq!(
        stdout_lines(&out),
        deletion_lines(&m, "would delete", &listed)
    );
    assert_eq!(snapshot(&m.outdir()), before);

    let out = gc(&m, &[&rel_tool], &[]);
    assert_ok(&out);
    assert_eq!(stdout_lines(&out), deletion_lines(&m, "deleted", &listed));
    assert_no_temp_files(m.dir.path());
    let mut left = m.files_of_all(&[&tool, &m.path("nixipfs-test-lib")]);
    left.extend(cache_meta_files());
    assert_eq!(tree(&m.cache_dir()), left);
}

#[test]
fn paths_given_through_symlinks_keep_the_live_files() {
    let m = Mirror::new("gc-symlinked");
    let tool = m.path("nixipfs-test-tool");
    let rel_tool = m.add_release("tool", std::slice::from_ref(&tool));
    let unrelated = m.cache.unrelated[0].clone();
    m.add_release("unrelated", std::slice::from_ref(&unrelated));
    // Another name for the mirror directory, as a symlink.
    let alias = m.dir.join("alias");
    std::os::unix::fs::symlink(m.outdir(), &alias).unwrap();
    let dead: BTreeSet<String> = m.files_of(&unrelated).into_iter().collect();

    for (cache, release) in [
        (alias.join("binary_cache"), rel_tool.clone()),
        (m.cache_dir(), alias.join("releases/test-channel/tool")),
        (
            alias.join("binary_cache"),
            alias.join("releases/test-channel/tool"),
        ),
    ] {
        let out = run_nixipfs([
            "garbage-collect",
            "--progress",
            "none",
            "--dry-run",
            "--cache",
            cache.to_str().unwrap(),
            "--releases",
            release.to_str().unwrap(),
        ]);
        assert_ok(&out);
        let listed: BTreeSet<String> = stdout_lines(&out)
            .into_iter()
            .map(|l| {
                let p = l.strip_prefix("would delete ").unwrap().to_string();
                let p = Path::new(&p);
                p.strip_prefix(&cache)
                    .unwrap_or(p)
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(
            listed,
            dead,
            "cache {} release {}",
            cache.display(),
            release.display()
        );
    }
}
