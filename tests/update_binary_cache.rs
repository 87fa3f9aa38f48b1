//! Whole-command tests of `nixipfs update-binary-cache` against binary caches made by real Nix,
//! served over HTTP by the test server.
//!
//! Each test has its own mirror directory and server; the Nix-built caches are shared (and never
//! changed: a test that needs a different narinfo serves it through a route). The checks look at
//! the files left behind (byte for byte against what the cache served), the release's symlinks,
//! the server's request log, and, for the main path, at a real Nix client installing the mirrored
//! closure.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::nixcache::store_path_hash;
use common::{
    assert_no_temp_files, nix_cache, nix_install_from, output_text, run_nixipfs, Compression,
    Fault, NixCache, Response, TestDir, TestServer,
};

/// What `nix-cache-info` must say, in the global cache and in every release.
const NIX_CACHE_INFO: &str = "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n";

/// A store path that no cache has.
const ABSENT_PATH: &str = "/nix/store/1111111111111111111111111111111z-nixipfs-test-absent";

/// A mirror directory with one release, `releases/test-channel/test-release-1`, as the
/// release scripts lay them out.
struct Mirror {
    dir: TestDir,
}

impl Mirror {
    fn new(label: &str) -> Mirror {
        Mirror {
            dir: TestDir::new(label),
        }
    }

    fn outdir(&self) -> PathBuf {
        self.dir.join("mirror")
    }

    fn cache_dir(&self) -> PathBuf {
        self.outdir().join("binary_cache")
    }

    fn release(&self) -> PathBuf {
        self.outdir().join("releases/test-channel/test-release-1")
    }

    /// Writes the release's `store-paths`.
    fn write_store_paths(&self, text: &str) {
        let file = self.release().join("store-paths");
        fs::create_dir_all(self.release()).unwrap();
        fs::write(&file, text).unwrap();
    }

    /// Runs `update-binary-cache` for the release against `cache_url`, with fast retries, and
    /// `extra` arguments.
    fn run(&self, cache_url: &str, extra: &[&str]) -> Output {
        self.run_with_env(cache_url, extra, &[])
    }

    /// Like [`Mirror::run`], with `env` added to the environment.
    fn run_with_env(&self, cache_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let release = self.release();
        let outdir = self.outdir();
        let mut args: Vec<&str> = vec![
            "update-binary-cache",
            "--release",
            release.to_str().unwrap(),
            "--outdir",
            outdir.to_str().unwrap(),
            "--cache",
            cache_url,
            "--progress",
            "none",
        ];
        common::process::with_test_timeouts(&mut args, extra);
        let mut cmd = common::process::nixipfs_command(args);
        cmd.envs(env.iter().copied());
        common::process::run_command(&mut cmd, common::process::DEFAULT_TIMEOUT)
    }

    /// Runs with the cache's own key trusted.
    fn run_trusting(&self, cache: &NixCache, url: &str, extra: &[&str]) -> Output {
        let mut args = vec!["--trusted-public-key", cache.public_key.as_str()];
        args.extend_from_slice(extra);
        self.run(url, &args)
    }
}

/// A server for the unchanged cache.
fn serve(cache: &NixCache) -> TestServer {
    TestServer::builder().static_dir(&cache.dir).start()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "update-binary-cache failed\n{}",
        output_text(out)
    );
}

#[track_caller]
fn assert_failed(out: &Output) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "update-binary-cache should have failed with status 1\n{}",
        output_text(out)
    );
}

/// Every file and symlink under `dir` (not following symlinks), as relative paths.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    if !dir.exists() {
        return out;
    }
    for entry in walkdir::WalkDir::new(dir).min_depth(1) {
        let entry = entry.unwrap();
        if !entry.file_type().is_dir() {
            let rel = entry.path().strip_prefix(dir).unwrap();
            out.insert(rel.to_string_lossy().into_owned());
        }
    }
    out
}

/// The `URL:` of the narinfo of `path`.
fn nar_url(cache: &NixCache, path: &str) -> String {
    cache.narinfo_field(path, "URL").expect("URL field")
}

fn narinfo_name(path: &str) -> String {
    format!("{}.narinfo", store_path_hash(path))
}

/// The files a cache holding `paths` has: their narinfos and NARs, and `nix-cache-info`.
fn cache_files(cache: &NixCache, paths: &[String]) -> BTreeSet<String> {
    let mut files: BTreeSet<String> = paths
        .iter()
        .flat_map(|p| [narinfo_name(p), nar_url(cache, p)])
        .collect();
    files.insert("nix-cache-info".into());
    files
}

/// The URL paths of the narinfo and the NAR of every path in `paths`.
fn served_paths(cache: &NixCache, paths: &[String]) -> BTreeSet<String> {
    paths
        .iter()
        .flat_map(|p| [cache.narinfo_url_path(p), cache.nar_url_path(p)])
        .collect()
}

/// Checks that the mirror holds exactly `paths` (narinfos byte-identical to the cache's, NARs
/// equal), that the release links exactly those with relative symlinks that resolve, that both
/// have the right `nix-cache-info`, and that no temporary file is left.
#[track_caller]
fn assert_mirrored(cache: &NixCache, m: &Mirror, paths: &[String]) {
    let global = m.cache_dir();
    let mut found = tree(&global);
    found.remove("lastsync");
    assert_eq!(
        found,
        cache_files(cache, paths),
        "files of {}",
        global.display()
    );
    assert_eq!(
        fs::read_to_string(global.join("nix-cache-info")).unwrap(),
        NIX_CACHE_INFO
    );
    for p in paths {
        for rel in [narinfo_name(p), nar_url(cache, p)] {
            let file = global.join(&rel);
            assert!(
                fs::symlink_metadata(&file).unwrap().is_file(),
                "{} is a regular file",
                file.display()
            );
            assert!(
                fs::read(&file).unwrap() == fs::read(cache.dir.join(&rel)).unwrap(),
                "{} differs from what the cache served",
                file.display()
            );
        }
    }
    let view = m.release().join("binary_cache");
    assert_eq!(
        tree(&view),
        cache_files(cache, paths),
        "files of {}",
        view.display()
    );
    assert!(fs::symlink_metadata(view.join("nix-cache-info"))
        .unwrap()
        .is_file());
    assert_eq!(
        fs::read_to_string(view.join("nix-cache-info")).unwrap(),
        NIX_CACHE_INFO
    );
    for p in paths {
        let name = narinfo_name(p);
        let link = view.join(&name);
        assert_eq!(
            fs::read_link(&link).unwrap(),
            PathBuf::from(format!("../../../../binary_cache/{name}")),
            "target of {}",
            link.display()
        );
        assert!(fs::read(&link).unwrap() == fs::read(cache.narinfo_file(p)).unwrap());
        let url = nar_url(cache, p);
        let link = view.join(&url);
        assert_eq!(
            fs::read_link(&link).unwrap(),
            PathBuf::from(format!("../../../../../binary_cache/{url}")),
            "target of {}",
            link.display()
        );
        assert!(fs::read(&link).unwrap() == fs::read(cache.dir.join(&url)).unwrap());
    }
    assert_no_temp_files(m.dir.path());
}

/// The recorded requests other than those for the narinfos and NARs of `allowed`.
fn unexpected_requests(srv: &TestServer, cache: &NixCache, allowed: &[String]) -> Vec<String> {
    let ok = served_paths(cache, allowed);
    srv.requests()
        .into_iter()
        .filter(|r| !ok.contains(&r.path))
        .map(|r| format!("{} {}", r.method, r.target))
        .collect()
}

/// Installs the whole closure with a real Nix client from a server serving `dir`, signatures
/// required.
#[track_caller]
fn assert_nix_installs(cache: &NixCache, dir: &Path) {
    let srv = TestServer::builder().static_dir(dir).start();
    let store = nix_install_from(&srv.url(), &cache.public_key, &cache.top_level)
        .unwrap_or_else(|e| panic!("installing from {}: {e}", dir.display()));
    assert_eq!(
        store.closure,
        cache.closure,
        "installed from {}",
        dir.display()
    );
    for p in &cache.closure {
        assert!(
            srv.count(&cache.nar_url_path(p)) >= 1,
            "Nix fetched the NAR of {p} from {}",
            dir.display()
        );
    }
}

/// Mirrors the closure of the cache's top level, checks the files and the requests, then
/// installs it with Nix from the global cache and from the release.
fn mirror_and_install(compression: Compression) {
    let cache = nix_cache(compression);
    let srv = serve(cache);
    let m = Mirror::new(&format!("ubc-{}", compression.nix_name()));
    m.write_store_paths(&cache.store_paths_text());
    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert_ok(&out);
    assert_eq!(stdout(&out), "", "nothing on stdout without --print-only");
    assert_mirrored(cache, &m, &cache.closure);
    assert!(!m.release().join("missing-store-paths").exists());
    for p in &cache.closure {
        assert_eq!(srv.count(&cache.narinfo_url_path(p)), 1, "narinfo of {p}");
        assert_eq!(srv.count(&cache.nar_url_path(p)), 1, "NAR of {p}");
    }
    assert_eq!(
        unexpected_requests(&srv, cache, &cache.closure),
        Vec::<String>::new()
    );
    assert_nix_installs(cache, &m.cache_dir());
    assert_nix_installs(cache, &m.release().join("binary_cache"));
}

#[test]
fn mirrors_an_xz_cache_that_nix_installs_from() {
    mirror_and_install(Compression::Xz);
}

#[test]
fn mirrors_a_bzip2_cache_that_nix_installs_from() {
    mirror_and_install(Compression::Bzip2);
}

#[test]
fn mirrors_a_zstd_cache_that_nix_installs_from() {
    mirror_and_install(Compression::Zstd);
}

#[test]
fn mirrors_an_uncompressed_cache_that_nix_installs_from() {
    mirror_and_install(Compression::None);
}

#[test]
fn one_request_at_a_time_still_mirrors_everything() {
    let cache = nix_cache(Compression::Xz);
    let srv = serve(cache);
    let m = Mirror::new("ubc-concurrent-1");
    m.write_store_paths(&cache.store_paths_text());
    let out = m.run_trusting(cache, &srv.url(), &["--concurrent", "1"]);
    assert_ok(&out);
    assert_mirrored(cache, &m, &cache.closure);
    // `--concurrency` is accepted as another name of the flag.
    let m2 = Mirror::new("ubc-concurrency-2");
    m2.write_store_paths(&cache.store_paths_text());
    assert_ok(&m2.run_trusting(cache, &srv.url(), &["--concurrency", "2"]));
    assert_mirrored(cache, &m2, &cache.closure);
}

/// Inode and modification time of every file of the global cache.
fn identities(dir: &Path) -> BTreeMap<String, (u64, i64, i64)> {
    tree(dir)
        .into_iter()
        .map(|rel| {
            let meta = fs::symlink_metadata(dir.join(&rel)).unwrap();
            (rel, (meta.ino(), meta.mtime(), meta.mtime_nsec()))
        })
        .collect()
}

#[test]
fn a_rerun_makes_no_request_and_rewrites_nothing() {
    let cache = nix_cache(Compression::Xz);
    let srv = serve(cache);
    let m = Mirror::new("ubc-rerun");
    m.write_store_paths(&cache.store_paths_text());
    assert_ok(&m.run_trusting(cache, &srv.url(), &[]));
    let before = identities(&m.cache_dir());
    srv.clear_requests();

    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert_ok(&out);
    assert_eq!(srv.log_summary(), "", "a complete mirror needs no request");
    assert_eq!(identities(&m.cache_dir()), before, "no file was rewritten");
    assert_mirrored(cache, &m, &cache.closure);
}

#[test]
fn a_rerun_fetches_only_what_is_gone_or_damaged() {
    let cache = nix_cache(Compression::Xz);
    let srv = serve(cache);
    let m = Mirror::new("ubc-repair");
    m.write_store_paths(&cache.store_paths_text());
    assert_ok(&m.run_trusting(cache, &srv.url(), &[]));
    srv.clear_requests();

    let hello = cache.path_named("nixipfs-test-hello").to_string();
    let data = cache.path_named("nixipfs-test-data").to_string();
    let lib = cache.path_named("nixipfs-test-lib").to_string();
    // A NAR deleted, a narinfo deleted, a NAR cut short by someone else, leftovers of a crash.
    fs::remove_file(m.cache_dir().join(nar_url(cache, &hello))).unwrap();
    fs::remove_file(m.cache_dir().join(narinfo_name(&data))).unwrap();
    let lib_nar = m.cache_dir().join(nar_url(cache, &lib));
    let bytes = fs::read(&lib_nar).unwrap();
    fs::write(&lib_nar, &bytes[..bytes.len() / 2]).unwrap();
    fs::write(
        m.cache_dir().join(".nixipfs-tmp-0123456789abcdef"),
        b"partial",
    )
    .unwrap();
    fs::write(
        m.cache_dir().join("nar/.nixipfs-tmp-fedcba9876543210"),
        b"partial",
    )
    .unwrap();

    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert_ok(&out);
    let requested: BTreeSet<String> = srv.requests().into_iter().map(|r| r.path).collect();
    let expected: BTreeSet<String> = [
        cache.nar_url_path(&hello),
        cache.narinfo_url_path(&data),
        cache.nar_url_path(&lib),
    ]
    .into_iter()
    .collect();
    assert_eq!(requested, expected, "requests:\n{}", srv.log_summary());
    assert_eq!(srv.requests().len(), 3, "requests:\n{}", srv.log_summary());
    assert_mirrored(cache, &m, &cache.closure);
}

/// The `URL,FileHash` lines of the NARs of `paths`.
fn print_only_lines(cache: &NixCache, paths: &[String]) -> BTreeSet<String> {
    paths
        .iter()
        .map(|p| {
            format!(
                "{},{}",
                nar_url(cache, p),
                cache.narinfo_field(p, "FileHash").unwrap()
            )
        })
        .collect()
}

#[test]
fn print_only_writes_narinfos_and_lists_the_nars() {
    let cache = nix_cache(Compression::Zstd);
    for flag in ["--print-only", "--print_only"] {
        let srv = serve(cache);
        let m = Mirror::new("ubc-print-only");
        m.write_store_paths(&cache.store_paths_text());
        let out = m.run_trusting(cache, &srv.url(), &[flag]);
        assert_ok(&out);
        let text = stdout(&out);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            cache.closure.len(),
            "{flag}: one line per NAR:\n{text}"
        );
        assert!(text.ends_with('\n'), "{flag}: {text:?}");
        assert_eq!(
            lines.iter().map(|l| l.to_string()).collect::<BTreeSet<_>>(),
            print_only_lines(cache, &cache.closure),
            "{flag}"
        );
        let nar_requests: Vec<_> = srv
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/nar/"))
            .map(|r| r.target)
            .collect();
        assert_eq!(
            nar_requests,
            Vec::<String>::new(),
            "{flag}: no NAR is downloaded"
        );
        // The narinfos wait in the staging area, as served; the served cache gets none of
        // them before their NARs.
        let staging = m.outdir().join(".staging/binary_cache");
        for p in &cache.closure {
            assert!(
                fs::read(staging.join(narinfo_name(p))).unwrap()
                    == fs::read(cache.narinfo_file(p)).unwrap(),
                "{flag}: narinfo of {p} staged as served"
            );
            assert!(
                !m.cache_dir().join(narinfo_name(p)).exists(),
                "{flag}: narinfo of {p} reached the served cache before its NAR"
            );
        }
        assert!(tree(&m.cache_dir().join("nar")).is_empty(), "{flag}");
        assert_no_temp_files(m.dir.path());

        if flag == "--print-only" {
            // A full run then downloads every NAR once and reads the narinfos from disk.
            srv.clear_requests();
            assert_ok(&m.run_trusting(cache, &srv.url(), &[]));
            let requested: Vec<String> = srv.requests().into_iter().map(|r| r.path).collect();
            let nars: BTreeSet<String> = cache
                .closure
                .iter()
                .map(|p| cache.nar_url_path(p))
                .collect();
            assert_eq!(requested.len(), nars.len(), "{}", srv.log_summary());
            assert_eq!(requested.into_iter().collect::<BTreeSet<_>>(), nars);
            assert_mirrored(cache, &m, &cache.closure);
            assert_eq!(
                tree(&staging),
                BTreeSet::new(),
                "the staging area keeps what was taken"
            );
            // With everything present there is nothing left to list.
            let out = m.run_trusting(cache, &srv.url(), &[flag]);
            assert_ok(&out);
            assert_eq!(stdout(&out), "", "nothing to fetch");
        }
    }
}

#[test]
fn a_path_missing_upstream_is_a_warning_and_listed() {
    let cache = nix_cache(Compression::Xz);
    let srv = serve(cache);
    let m = Mirror::new("ubc-missing");
    m.write_store_paths(&format!("{}{ABSENT_PATH}\n", cache.store_paths_text()));
    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert_ok(&out);
    let err = stderr(&out);
    assert!(
        err.contains(ABSENT_PATH),
        "the warning names the path:\n{err}"
    );
    assert!(err.contains("WARN"), "{err}");
    assert_eq!(
        fs::read_to_string(m.release().join("missing-store-paths")).unwrap(),
        format!("{ABSENT_PATH}\n")
    );
    assert_mirrored(cache, &m, &cache.closure);

    // Once the path is gone from store-paths, so is the list.
    m.write_store_paths(&cache.store_paths_text());
    assert_ok(&m.run_trusting(cache, &srv.url(), &[]));
    assert!(!m.release().join("missing-store-paths").exists());
}

/// The fixture key of this repository: a valid key that did not sign the Nix-built caches.
fn other_key() -> String {
    fs::read_to_string(common::fixtures_dir().join("mini-cache/fixture-signing-key.pub"))
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn narinfos_signed_by_an_untrusted_key_are_refused() {
    let cache = nix_cache(Compression::Xz);
    let base64 = other_key().split_once(':').unwrap().1.to_string();
    // A key of another name, and a key with the cache's key name but other bytes.
    for key in [other_key(), format!("test-cache-1:{base64}")] {
        let srv = serve(cache);
        let m = Mirror::new("ubc-wrong-key");
        m.write_store_paths(&cache.store_paths_text());
        let out = m.run(&srv.url(), &["--trusted-public-key", &key]);
        assert_failed(&out);
        let err = stderr(&out);
        for p in &cache.top_level {
            let url = srv.url_for(&cache.narinfo_url_path(p));
            assert!(err.contains(&url), "{key}: the error names {url}:\n{err}");
        }
        let nar_requests = srv
            .requests()
            .iter()
            .filter(|r| r.path.starts_with("/nar/"))
            .count();
        assert_eq!(nar_requests, 0, "{key}: {}", srv.log_summary());
        let mut files = tree(&m.cache_dir());
        files.remove("lastsync");
        assert_eq!(
            files,
            BTreeSet::from(["nix-cache-info".to_string()]),
            "{key}: no refused narinfo is stored"
        );
        assert_no_temp_files(m.dir.path());
    }
}

/// The narinfo of `path` with `field`'s line replaced by `line` (or removed if `line` is empty).
fn edited_narinfo(cache: &NixCache, path: &str, field: &str, line: &str) -> String {
    let text = fs::read_to_string(cache.narinfo_file(path)).unwrap();
    let prefix = format!("{field}:");
    assert!(
        text.lines().any(|l| l.starts_with(&prefix)),
        "{field} in {text}"
    );
    text.lines()
        .filter_map(|l| {
            if l.starts_with(&prefix) {
                (!line.is_empty()).then(|| format!("{line}\n"))
            } else {
                Some(format!("{l}\n"))
            }
        })
        .collect()
}

fn narinfo_response(text: impl Into<Vec<u8>>) -> Response {
    Response::new(200)
        .content_type("text/x-nix-narinfo")
        .body(text.into())
}

#[test]
fn a_narinfo_without_a_valid_signature_is_refused_alone() {
    let cache = nix_cache(Compression::Xz);
    let hello = cache.path_named("nixipfs-test-hello").to_string();
    let data = cache.path_named("nixipfs-test-data").to_string();
    let lib = cache.path_named("nixipfs-test-lib").to_string();
    // hello claims the NAR hash of lib (its signature no longer matches); data is not signed.
    let lib_hash = cache.narinfo_field(&lib, "NarHash").unwrap();
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .route(
            &cache.narinfo_url_path(&hello),
            narinfo_response(edited_narinfo(
                cache,
                &hello,
                "NarHash",
                &format!("NarHash: {lib_hash}"),
            )),
        )
        .route(
            &cache.narinfo_url_path(&data),
            narinfo_response(edited_narinfo(cache, &data, "Sig", "")),
        )
        .start();
    let m = Mirror::new("ubc-bad-sig");
    m.write_store_paths(&cache.store_paths_text());
    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert_failed(&out);
    let err = stderr(&out);
    for p in [&hello, &data] {
        let url = srv.url_for(&cache.narinfo_url_path(p));
        assert!(err.contains(&url), "the error names {url}:\n{err}");
        assert_eq!(
            srv.count(&cache.nar_url_path(p)),
            0,
            "no NAR for the refused {p}"
        );
        assert!(!m.cache_dir().join(narinfo_name(p)).exists());
    }
    assert!(err.contains("does not verify"), "{err}");
    assert!(err.contains("not signed by a trusted key"), "{err}");
    // Everything else (lib is also referenced by tool) is mirrored and linked.
    let rest: Vec<String> = cache
        .closure
        .iter()
        .filter(|p| **p != hello && **p != data)
        .cloned()
        .collect();
    assert_mirrored(cache, &m, &rest);

    // Without signature checks the same narinfos are taken as they are, but a NarHash that is
    // not that of the NAR is still caught when the NAR is checked.
    let m = Mirror::new("ubc-no-check-sigs");
    m.write_store_paths(&cache.store_paths_text());
    let out = m.run(
        &srv.url(),
        &["--trusted-public-key", &other_key(), "--no-check-sigs"],
    );
    assert_failed(&out);
    let err = stderr(&out);
    assert!(err.contains("--no-check-sigs"), "{err}");
    assert!(
        err.contains(&format!("{hello}: ")) && err.contains("the NAR inside has NarHash"),
        "{err}"
    );
    assert!(!m.cache_dir().join(narinfo_name(&hello)).exists());
    assert!(
        fs::read_to_string(m.cache_dir().join(narinfo_name(&data)))
            .unwrap()
            .find("Sig:")
            .is_none(),
        "the unsigned narinfo is stored as served"
    );
}

#[test]
fn no_check_sigs_accepts_narinfos_the_key_would_refuse() {
    let cache = nix_cache(Compression::Bzip2);
    let srv = serve(cache);
    let m = Mirror::new("ubc-no-check-sigs");
    m.write_store_paths(&cache.store_paths_text());
    for flag in ["--no-check-sigs", "--no_check_sigs"] {
        let out = m.run(&srv.url(), &["--trusted-public-key", &other_key(), flag]);
        assert_ok(&out);
        assert_mirrored(cache, &m, &cache.closure);
        fs::remove_dir_all(m.cache_dir()).unwrap();
    }
}

#[test]
fn without_a_key_it_says_once_that_signatures_are_not_checked() {
    let cache = nix_cache(Compression::Xz);
    let srv = serve(cache);
    let m = Mirror::new("ubc-no-key");
    m.write_store_paths(&cache.store_paths_text());
    let out = m.run(&srv.url(), &[]);
    assert_ok(&out);
    let err = stderr(&out);
    assert_eq!(
        err.matches("not checked").count(),
        1,
        "one warning about unchecked signatures:\n{err}"
    );
    assert!(
        err.contains(&srv.url()),
        "the warning names the cache:\n{err}"
    );
    assert_mirrored(cache, &m, &cache.closure);
}

#[test]
fn transient_faults_are_retried_until_the_files_are_right() {
    let cache = nix_cache(Compression::None);
    let p = |name: &str| cache.path_named(name).to_string();
    let (app, hello, data, lib, tool, link) = (
        p("nixipfs-test-app"),
        p("nixipfs-test-hello"),
        p("nixipfs-test-data"),
        p("nixipfs-test-lib"),
        p("nixipfs-test-tool"),
        p("nixipfs-test-link"),
    );
    let narinfo_faults: Vec<(&String, Vec<Fault>)> = vec![
        (&app, vec![Fault::Status(503), Fault::Status(503)]),
        (
            &hello,
            vec![Fault::TooManyRequests {
                retry_after_secs: 1,
            }],
        ),
        (&lib, vec![Fault::ResetMidBody]),
        (&data, vec![Fault::TruncatedBody]),
        (
            &link,
            vec![Fault::CloseBeforeHeaders, Fault::ResetBeforeHeaders],
        ),
        (&tool, vec![Fault::Status(500), Fault::Status(504)]),
    ];
    let nar_faults: Vec<(&String, Vec<Fault>)> = vec![
        (&app, vec![Fault::Status(503), Fault::Status(502)]),
        (
            &hello,
            vec![Fault::TooManyRequests {
                retry_after_secs: 1,
            }],
        ),
        (&data, vec![Fault::ResetMidBody, Fault::TruncatedBody]),
        (&lib, vec![Fault::FlipByte]),
        (&tool, vec![Fault::ContentLengthTooLarge(10)]),
        (
            &link,
            vec![Fault::ContentLengthTooSmall(5), Fault::FlipByteAt(0)],
        ),
    ];
    let mut builder = TestServer::builder().static_dir(&cache.dir);
    for (path, faults) in &narinfo_faults {
        builder = builder.fault(&cache.narinfo_url_path(path), faults.clone());
    }
    for (path, faults) in &nar_faults {
        builder = builder.fault(&cache.nar_url_path(path), faults.clone());
    }
    let srv = builder.start();
    let m = Mirror::new("ubc-faults");
    m.write_store_paths(&cache.store_paths_text());
    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert_ok(&out);
    assert_mirrored(cache, &m, &cache.closure);
    for (path, faults) in &narinfo_faults {
        assert_eq!(
            srv.count(&cache.narinfo_url_path(path)),
            faults.len() + 1,
            "narinfo of {path}:\n{}",
            srv.log_summary()
        );
    }
    for (path, faults) in &nar_faults {
        assert_eq!(
            srv.count(&cache.nar_url_path(path)),
            faults.len() + 1,
            "NAR of {path}:\n{}",
            srv.log_summary()
        );
    }
    // Retry-After is honoured (the retry delay alone is 50 ms).
    for url_path in [cache.narinfo_url_path(&hello), cache.nar_url_path(&hello)] {
        let gaps = srv.gaps_for(&url_path);
        assert!(
            gaps[0] >= Duration::from_millis(900),
            "{url_path} retried after {gaps:?} despite Retry-After: 1"
        );
    }
}

#[test]
fn a_nar_that_never_verifies_fails_the_run_and_leaves_nothing() {
    let cache = nix_cache(Compression::Xz);
    let hello = cache.path_named("nixipfs-test-hello").to_string();
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .fault_always(&cache.nar_url_path(&hello), Fault::FlipByte)
        .start();
    let m = Mirror::new("ubc-always-flipped");
    m.write_store_paths(&cache.store_paths_text());
    let out = m.run_trusting(cache, &srv.url(), &["--retries", "2"]);
    assert_failed(&out);
    let err = stderr(&out);
    let url = srv.url_for(&cache.nar_url_path(&hello));
    assert!(err.contains(&url), "the error names {url}:\n{err}");
    assert_eq!(
        srv.count(&cache.nar_url_path(&hello)),
        3,
        "{}",
        srv.log_summary()
    );
    assert!(!m.cache_dir().join(nar_url(cache, &hello)).exists());
    assert!(
        !m.cache_dir().join(narinfo_name(&hello)).exists(),
        "a narinfo is only stored once its NAR is"
    );
    let rest: Vec<String> = cache
        .closure
        .iter()
        .filter(|p| **p != hello)
        .cloned()
        .collect();
    assert_mirrored(cache, &m, &rest);

    // Once the cache serves it right, a rerun completes the mirror with that NAR alone.
    let srv2 = serve(cache);
    assert_ok(&m.run_trusting(cache, &srv2.url(), &[]));
    assert_eq!(
        srv2.requests()
            .into_iter()
            .map(|r| r.path)
            .collect::<Vec<_>>(),
        vec![cache.narinfo_url_path(&hello), cache.nar_url_path(&hello)]
    );
    assert_mirrored(cache, &m, &cache.closure);
}

#[test]
fn permanent_errors_fail_the_run_naming_the_url() {
    let cache = nix_cache(Compression::Xz);
    let data = cache.path_named("nixipfs-test-data").to_string();
    let tool = cache.path_named("nixipfs-test-tool").to_string();
    for (label, fault, requests) in [
        ("404", Fault::Status(404), 1),
        ("403", Fault::Status(403), 1),
        ("503 forever", Fault::Status(503), 3),
    ] {
        let srv = TestServer::builder()
            .static_dir(&cache.dir)
            .fault_always(&cache.nar_url_path(&data), fault.clone())
            .fault_always(&cache.narinfo_url_path(&tool), fault)
            .start();
        let m = Mirror::new("ubc-permanent");
        m.write_store_paths(&cache.store_paths_text());
        let out = m.run_trusting(cache, &srv.url(), &["--retries", "2"]);
        assert_failed(&out);
        let err = stderr(&out);
        for url_path in [cache.nar_url_path(&data), cache.narinfo_url_path(&tool)] {
            assert_eq!(
                srv.count(&url_path),
                requests,
                "{label}: {}",
                srv.log_summary()
            );
        }
        let nar_url_full = srv.url_for(&cache.nar_url_path(&data));
        assert!(
            err.contains(&nar_url_full),
            "{label}: the error names {nar_url_full}:\n{err}"
        );
        assert!(
            !m.cache_dir().join(nar_url(cache, &data)).exists(),
            "{label}"
        );
        assert!(!m.cache_dir().join(narinfo_name(&data)).exists(), "{label}");
        assert!(!m.cache_dir().join(narinfo_name(&tool)).exists(), "{label}");
        let missing = fs::read_to_string(m.release().join("missing-store-paths")).ok();
        if label == "404" {
            // A narinfo the cache does not have is missing upstream, a warning.
            assert_eq!(missing, Some(format!("{tool}\n")), "{label}");
        } else {
            // A narinfo that cannot be fetched is an error, not "missing upstream".
            let url = srv.url_for(&cache.narinfo_url_path(&tool));
            assert!(err.contains(&url), "{label}: the error names {url}:\n{err}");
            assert_eq!(missing, None, "{label}");
        }
        assert_no_temp_files(m.dir.path());
    }
}

#[test]
fn a_stalled_body_is_abandoned_and_retried() {
    let cache = nix_cache(Compression::None);
    let data = cache.path_named("nixipfs-test-data").to_string();
    let app = cache.path_named("nixipfs-test-app").to_string();
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .fault(&cache.nar_url_path(&data), [Fault::StallAfter(1000)])
        .fault(&cache.narinfo_url_path(&app), [Fault::StallAfter(10)])
        .start();
    let m = Mirror::new("ubc-stall");
    m.write_store_paths(&cache.store_paths_text());
    let started = Instant::now();
    let out = m.run_trusting(cache, &srv.url(), &["--stall-timeout", "1"]);
    let took = started.elapsed();
    assert_ok(&out);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert_eq!(
        srv.count(&cache.nar_url_path(&data)),
        2,
        "{}",
        srv.log_summary()
    );
    assert_eq!(
        srv.count(&cache.narinfo_url_path(&app)),
        2,
        "{}",
        srv.log_summary()
    );
    assert_mirrored(cache, &m, &cache.closure);

    // A body that always stalls gives up after the retries.
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .fault_always(&cache.nar_url_path(&data), Fault::StallAfter(1000))
        .start();
    let m = Mirror::new("ubc-stall-always");
    m.write_store_paths(&cache.store_paths_text());
    let started = Instant::now();
    let out = m.run_trusting(
        cache,
        &srv.url(),
        &["--stall-timeout", "1", "--retries", "1"],
    );
    let took = started.elapsed();
    assert_failed(&out);
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(stderr(&out).contains(&srv.url_for(&cache.nar_url_path(&data))));
    assert!(!m.cache_dir().join(nar_url(cache, &data)).exists());
    assert_no_temp_files(m.dir.path());
}

/// Serves the cache with the narinfo of `path` replaced by `text`; runs with `extra` flags and
/// checks that the run fails naming that narinfo, leaving nothing of it behind.
#[track_caller]
fn assert_narinfo_refused(label: &str, path: &str, text: Vec<u8>, extra: &[&str]) -> String {
    let cache = nix_cache(Compression::Xz);
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .route(&cache.narinfo_url_path(path), narinfo_response(text))
        .start();
    let m = Mirror::new("ubc-hostile");
    m.write_store_paths(&cache.store_paths_text());
    let started = Instant::now();
    let out = m.run_trusting(cache, &srv.url(), extra);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{label}: no hang"
    );
    assert_failed(&out);
    let err = stderr(&out);
    let url = srv.url_for(&cache.narinfo_url_path(path));
    assert!(err.contains(&url), "{label}: the error names {url}:\n{err}");
    assert!(
        !m.cache_dir().join(narinfo_name(path)).exists(),
        "{label}: the refused narinfo is not stored"
    );
    // Nothing outside the mirror, nothing but the cache's own files inside it.
    let outside: Vec<String> = fs::read_dir(m.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(outside, vec!["mirror".to_string()], "{label}");
    let stored = tree(&m.cache_dir());
    let known = cache_files(cache, &cache.closure);
    assert!(
        stored.iter().all(|f| known.contains(f) || f == "lastsync"),
        "{label}: unexpected files {stored:?}"
    );
    let unexpected = unexpected_requests(&srv, cache, &cache.closure);
    assert_eq!(unexpected, Vec::<String>::new(), "{label}");
    assert_no_temp_files(m.dir.path());
    err
}

#[test]
fn nar_urls_that_leave_the_cache_are_refused() {
    let cache = nix_cache(Compression::Xz);
    let tool = cache.path_named("nixipfs-test-tool").to_string();
    let scratch = TestDir::new("ubc-absolute-target");
    let absolute = scratch.join("evil.nar.xz");
    let absolute = absolute.to_str().unwrap();
    // The URL is not covered by the signature, so these narinfos still verify with the key.
    for url in [
        "../../evil",
        "nar/../../../evil.nar.xz",
        absolute,
        "/etc/passwd",
        "nar/%2e%2e/x",
        "http://127.0.0.1:9/nar/x.nar.xz",
        "nar//x.nar.xz",
        "nar/./x.nar.xz",
        "",
    ] {
        let text = edited_narinfo(cache, &tool, "URL", &format!("URL: {url}"));
        let err = assert_narinfo_refused(url, &tool, text.into_bytes(), &[]);
        assert!(err.contains("URL"), "{url}: {err}");
    }
    assert!(!Path::new(absolute).exists());
    assert_eq!(fs::read_dir(scratch.path()).unwrap().count(), 0);
}

#[test]
fn a_narinfo_for_another_store_path_is_refused() {
    let cache = nix_cache(Compression::Xz);
    let tool = cache.path_named("nixipfs-test-tool").to_string();
    let unrelated = cache.unrelated[0].clone();
    let text = fs::read(cache.narinfo_file(&unrelated)).unwrap();
    let err = assert_narinfo_refused("other store path", &tool, text, &["--no-check-sigs"]);
    assert!(err.contains(&unrelated), "{err}");
}

#[test]
fn an_oversized_narinfo_is_refused_without_hanging() {
    let cache = nix_cache(Compression::Xz);
    let tool = cache.path_named("nixipfs-test-tool").to_string();
    let mut text = fs::read(cache.narinfo_file(&tool)).unwrap();
    while text.len() < 10 << 20 {
        text.extend_from_slice(b"X-Padding: 0123456789abcdef0123456789abcdef0123456789abcdef\n");
    }
    let err = assert_narinfo_refused("10 MB narinfo", &tool, text, &["--no-check-sigs"]);
    assert!(err.contains("bytes"), "{err}");

    // A body that never ends is cut off too.
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .fault_always(
            &cache.narinfo_url_path(&tool),
            Fault::HugeBody { declared: 1 << 40 },
        )
        .start();
    let m = Mirror::new("ubc-huge-narinfo");
    m.write_store_paths(&cache.store_paths_text());
    let started = Instant::now();
    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_failed(&out);
    assert!(stderr(&out).contains(&srv.url_for(&cache.narinfo_url_path(&tool))));
    assert_eq!(srv.count(&cache.narinfo_url_path(&tool)), 1, "not retried");
}

#[test]
fn two_narinfos_sharing_a_nar_download_it_once() {
    let cache = nix_cache(Compression::Xz);
    let tool = cache.path_named("nixipfs-test-tool").to_string();
    // Another store path whose narinfo names the same NAR.
    let twin = "/nix/store/2222222222222222222222222222222z-nixipfs-test-tool".to_string();
    let text = fs::read_to_string(cache.narinfo_file(&tool))
        .unwrap()
        .replace(&tool, &twin);
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .route(
            &cache.narinfo_url_path(&twin),
            narinfo_response(text.clone()),
        )
        .start();
    let m = Mirror::new("ubc-shared-nar");
    m.write_store_paths(&format!("{tool}\n{twin}\n"));
    let out = m.run(&srv.url(), &["--no-check-sigs"]);
    assert_ok(&out);
    assert_eq!(
        srv.count(&cache.nar_url_path(&tool)),
        1,
        "{}",
        srv.log_summary()
    );
    assert_eq!(
        fs::read_to_string(m.cache_dir().join(narinfo_name(&twin))).unwrap(),
        text
    );
    let lib = cache.path_named("nixipfs-test-lib").to_string();
    let mut files = cache_files(cache, &[tool.clone(), lib]);
    files.insert(narinfo_name(&twin));
    assert_eq!(tree(&m.cache_dir()), files);
    assert_eq!(tree(&m.release().join("binary_cache")), files);
}

#[test]
fn release_links_stay_inside_the_mirror_when_paths_go_through_symlinks() {
    let cache = nix_cache(Compression::Xz);
    let srv = serve(cache);
    let m = Mirror::new("ubc-alias");
    m.write_store_paths(&cache.store_paths_text());
    // Another name for the mirror directory, as a symlink outside it.
    let alias = m.dir.join("alias");
    std::os::unix::fs::symlink(m.outdir(), &alias).unwrap();
    let alias_release = alias.join("releases/test-channel/test-release-1");
    for (outdir, release) in [
        (alias.clone(), m.release()),
        (m.outdir(), alias_release.clone()),
        (alias.clone(), alias_release.clone()),
    ] {
        let out = run_nixipfs([
            "update-binary-cache",
            "--release",
            release.to_str().unwrap(),
            "--outdir",
            outdir.to_str().unwrap(),
            "--cache",
            &srv.url(),
            "--trusted-public-key",
            &cache.public_key,
            "--progress",
            "none",
        ]);
        assert_ok(&out);
        // The links are the same relative ones as without the symlink, so the mirror can move.
        assert_mirrored(cache, &m, &cache.closure);
    }
}

/// A narinfo for a store path named like `tool` but with another hash, naming tool's NAR, with
/// its `FileHash` replaced by `file_hash` if given.
fn twin_narinfo(cache: &NixCache, twin: &str, file_hash: Option<&str>) -> String {
    let tool = cache.path_named("nixipfs-test-tool");
    let text = fs::read_to_string(cache.narinfo_file(tool))
        .unwrap()
        .replace(tool, twin);
    match file_hash {
        Some(h) => {
            let old = cache.narinfo_field(tool, "FileHash").unwrap();
            text.replace(&format!("FileHash: {old}"), &format!("FileHash: {h}"))
        }
        None => text,
    }
}

#[test]
fn a_narinfo_is_only_stored_with_a_file_hash_its_nar_has() {
    let cache = nix_cache(Compression::Xz);
    let tool = cache.path_named("nixipfs-test-tool").to_string();
    let lib = cache.path_named("nixipfs-test-lib").to_string();
    let nar = nar_url(cache, &tool);
    let good = "/nix/store/2222222222222222222222222222222z-nixipfs-test-tool";
    let bad = "/nix/store/3333333333333333333333333333333z-nixipfs-test-tool";
    // The FileHash of another NAR: well-formed, but not that of the file at tool's URL.
    let wrong_hash = cache.narinfo_field(&lib, "FileHash").unwrap();
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .route(
            &cache.narinfo_url_path(good),
            narinfo_response(twin_narinfo(cache, good, None)),
        )
        .route(
            &cache.narinfo_url_path(bad),
            narinfo_response(twin_narinfo(cache, bad, Some(&wrong_hash))),
        )
        .start();
    let m = Mirror::new("ubc-file-hash");
    m.write_store_paths(&format!("{tool}\n"));
    assert_ok(&m.run(&srv.url(), &["--no-check-sigs"]));
    let nar_file = m.cache_dir().join(&nar);
    let nar_bytes = fs::read(&nar_file).unwrap();

    // A narinfo fetched later for a NAR already here is checked against the file, which is
    // not downloaded again.
    srv.clear_requests();
    m.write_store_paths(&format!("{good}\n"));
    assert_ok(&m.run(&srv.url(), &["--no-check-sigs"]));
    assert_eq!(srv.count(&format!("/{nar}")), 0, "{}", srv.log_summary());
    assert!(m.cache_dir().join(narinfo_name(good)).exists());

    m.write_store_paths(&format!("{bad}\n"));
    let out = m.run(&srv.url(), &["--no-check-sigs"]);
    assert_failed(&out);
    let err = stderr(&out);
    assert!(
        err.contains(store_path_hash(bad)),
        "the error names {bad}:\n{err}"
    );
    assert!(err.contains(&nar), "the error names {nar}:\n{err}");
    assert!(!m.cache_dir().join(narinfo_name(bad)).exists());
    assert_eq!(srv.count(&format!("/{nar}")), 0, "{}", srv.log_summary());
    assert!(
        fs::read(&nar_file).unwrap() == nar_bytes,
        "the NAR is left as it was"
    );

    // Two narinfos of one run that disagree on the NAR's hash: the wrong one is never stored,
    // whichever arrives first.
    let m = Mirror::new("ubc-file-hash-same-run");
    m.write_store_paths(&format!("{tool}\n{bad}\n"));
    let out = m.run(&srv.url(), &["--no-check-sigs"]);
    assert_failed(&out);
    let err = stderr(&out);
    assert!(
        err.contains(store_path_hash(bad)),
        "the error names {bad}:\n{err}"
    );
    assert!(!m.cache_dir().join(narinfo_name(bad)).exists());
    let tool_narinfo = m.cache_dir().join(narinfo_name(&tool));
    if tool_narinfo.exists() {
        assert!(fs::read(&tool_narinfo).unwrap() == fs::read(cache.narinfo_file(&tool)).unwrap());
    }
    if m.cache_dir().join(&nar).exists() {
        assert!(fs::read(m.cache_dir().join(&nar)).unwrap() == nar_bytes);
    }
    assert_no_temp_files(m.dir.path());

    // The wrong one arriving while the good one's download is under way: it is refused, and
    // the good one is stored with its NAR.
    let slow = TestServer::builder()
        .static_dir(&cache.dir)
        .route(
            &cache.narinfo_url_path(bad),
            narinfo_response(twin_narinfo(cache, bad, Some(&wrong_hash))),
        )
        .fault_always(
            &cache.narinfo_url_path(bad),
            Fault::DelayHeaders(Duration::from_millis(300)),
        )
        .fault_always(
            &format!("/{nar}"),
            Fault::DelayHeaders(Duration::from_secs(2)),
        )
        .start();
    let m = Mirror::new("ubc-file-hash-joined");
    m.write_store_paths(&format!("{tool}\n{bad}\n"));
    let out = m.run(&slow.url(), &["--no-check-sigs"]);
    assert_failed(&out);
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{bad}: ")) && err.contains(&format!("but {tool} gives it")),
        "the error names {bad} and {tool}:\n{err}"
    );
    assert!(!m.cache_dir().join(narinfo_name(bad)).exists());
    assert!(
        fs::read(m.cache_dir().join(narinfo_name(&tool))).unwrap()
            == fs::read(cache.narinfo_file(&tool)).unwrap()
    );
    assert!(fs::read(m.cache_dir().join(&nar)).unwrap() == nar_bytes);
    assert_eq!(slow.count(&format!("/{nar}")), 1, "{}", slow.log_summary());
    assert_no_temp_files(m.dir.path());
}

/// Runs `update-binary-cache` for `m`'s release against `http://cache.nixos.org`, reaching it
/// through `proxy` (a test server answering the absolute request targets a proxy gets).
fn run_via_proxy(m: &Mirror, proxy: &TestServer, extra: &[&str]) -> Output {
    let release = m.release();
    let outdir = m.outdir();
    let mut cmd = common::process::nixipfs_command([
        "update-binary-cache",
        "--release",
        release.to_str().unwrap(),
        "--outdir",
        outdir.to_str().unwrap(),
        "--cache",
        "http://cache.nixos.org",
        "--progress",
        "none",
        "--retry-delay",
        "0.05",
    ]);
    cmd.args(extra)
        .env("http_proxy", proxy.url())
        .env("HTTP_PROXY", proxy.url());
    common::process::run_command(&mut cmd, Duration::from_secs(60))
}

#[test]
fn cache_nixos_org_narinfos_are_checked_with_its_key_by_default() {
    let cache = nix_cache(Compression::Xz);
    // A proxy that serves the test cache as if it were cache.nixos.org.
    let mut builder = TestServer::builder();
    for p in cache.closure.iter().chain(&cache.unrelated) {
        for url_path in [cache.narinfo_url_path(p), cache.nar_url_path(p)] {
            let body = fs::read(cache.dir.join(url_path.trim_start_matches('/'))).unwrap();
            builder = builder.route(
                &format!("http://cache.nixos.org{url_path}"),
                Response::ok(body),
            );
        }
    }
    let proxy = builder.start();
    let m = Mirror::new("ubc-default-key");
    m.write_store_paths(&cache.store_paths_text());
    let out = run_via_proxy(&m, &proxy, &[]);
    assert_failed(&out);
    let err = stderr(&out);
    assert!(err.contains("cache.nixos.org-1"), "{err}");
    assert!(!err.contains("not checked"), "{err}");
    for p in &cache.top_level {
        let url = format!("http://cache.nixos.org{}", cache.narinfo_url_path(p));
        assert!(err.contains(&url), "the error names {url}:\n{err}");
    }
    assert!(
        proxy
            .requests()
            .iter()
            .all(|r| r.path.ends_with(".narinfo")),
        "no NAR of a refused narinfo is fetched:\n{}",
        proxy.log_summary()
    );
    assert!(
        !proxy.requests().is_empty(),
        "the requests went to the proxy"
    );

    // A key given on the command line replaces the default.
    let out = run_via_proxy(&m, &proxy, &["--trusted-public-key", &cache.public_key]);
    assert_ok(&out);
    assert_mirrored(cache, &m, &cache.closure);
}

#[test]
fn a_smaller_closure_shrinks_the_release_view_but_not_the_cache() {
    let cache = nix_cache(Compression::Xz);
    let srv = serve(cache);
    let m = Mirror::new("ubc-shrink");
    m.write_store_paths(&cache.store_paths_text());
    assert_ok(&m.run_trusting(cache, &srv.url(), &[]));
    let tool = cache.path_named("nixipfs-test-tool").to_string();
    let lib = cache.path_named("nixipfs-test-lib").to_string();
    m.write_store_paths(&format!("{tool}\n"));
    srv.clear_requests();
    assert_ok(&m.run_trusting(cache, &srv.url(), &[]));
    assert_eq!(srv.log_summary(), "");
    assert_eq!(
        tree(&m.release().join("binary_cache")),
        cache_files(cache, &[tool, lib])
    );
    let mut global = tree(&m.cache_dir());
    global.remove("lastsync");
    assert_eq!(
        global,
        cache_files(cache, &cache.closure),
        "the GC's job, not this one's"
    );
}

#[test]
fn a_bad_store_paths_file_is_an_error_naming_it() {
    let cache = nix_cache(Compression::Xz);
    let srv = serve(cache);
    let m = Mirror::new("ubc-bad-store-paths");
    fs::create_dir_all(m.release()).unwrap();
    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert_failed(&out);
    assert!(stderr(&out).contains("store-paths"), "{}", stderr(&out));

    m.write_store_paths(&format!("{}not-a-store-path\n", cache.store_paths_text()));
    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert_failed(&out);
    let err = stderr(&out);
    assert!(
        err.contains("store-paths:3"),
        "the error gives the line:\n{err}"
    );
    assert!(err.contains("not-a-store-path"), "{err}");
    assert!(
        srv.requests().is_empty(),
        "nothing is fetched:\n{}",
        srv.log_summary()
    );
}

#[test]
fn a_run_killed_mid_download_leaves_no_partial_file_behind() {
    let cache = nix_cache(Compression::None);
    let data = cache.path_named("nixipfs-test-data").to_string();
    let data_nar = cache.nar_url_path(&data);
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .fault(&data_nar, [Fault::StallAfter(40_000)])
        .start();
    let m = Mirror::new("ubc-killed");
    m.write_store_paths(&cache.store_paths_text());
    let release = m.release();
    let outdir = m.outdir();
    let mut child = common::process::nixipfs_command([
        "update-binary-cache",
        "--release",
        release.to_str().unwrap(),
        "--outdir",
        outdir.to_str().unwrap(),
        "--cache",
        &srv.url(),
        "--no-check-sigs",
        "--progress",
        "none",
        "--stall-timeout",
        "60",
    ])
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::null())
    .spawn()
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while srv.count(&data_nar) == 0 {
        assert!(Instant::now() < deadline, "the NAR was never requested");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Let part of the body arrive, then kill the run.
    std::thread::sleep(Duration::from_millis(300));
    child.kill().unwrap();
    child.wait().unwrap();
    let final_path = m.cache_dir().join(nar_url(cache, &data));
    assert!(
        !final_path.exists(),
        "a partial NAR reached {}",
        final_path.display()
    );
    assert!(!m.cache_dir().join(narinfo_name(&data)).exists());

    // The next run cleans up and completes.
    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert_ok(&out);
    assert_mirrored(cache, &m, &cache.closure);
}

#[test]
fn relative_paths_are_taken_from_the_working_directory() {
    let cache = nix_cache(Compression::Xz);
    let srv = serve(cache);
    let m = Mirror::new("ubc-relative");
    m.write_store_paths(&cache.store_paths_text());
    let mut cmd = common::process::nixipfs_command([
        "update_binary_cache",
        "--release",
        "mirror/releases/test-channel/test-release-1",
        "--outdir",
        "mirror",
        "--cache",
        &format!("{}/", srv.url()),
        "--trusted_public_key",
        &cache.public_key,
        "--progress",
        "none",
    ]);
    cmd.current_dir(m.dir.path());
    let out = common::process::run_command(&mut cmd, Duration::from_secs(60));
    assert_ok(&out);
    assert_mirrored(cache, &m, &cache.closure);
    assert_eq!(
        unexpected_requests(&srv, cache, &cache.closure),
        Vec::<String>::new()
    );
}

/// The narinfo of `path` with `FileHash` and `FileSize` taken from the narinfo of `other`: its
/// signature (which covers neither) still verifies.
fn narinfo_naming_the_file_of(cache: &NixCache, path: &str, other: &str) -> String {
    let mut text = fs::read_to_string(cache.narinfo_file(path)).unwrap();
    for field in ["FileHash", "FileSize"] {
        let old = cache.narinfo_field(path, field).unwrap();
        let new = cache.narinfo_field(other, field).unwrap();
        text = text.replace(&format!("{field}: {old}\n"), &format!("{field}: {new}\n"));
    }
    text
}

/// An upstream whose narinfo of `hello` names, and whose NAR URL of `hello` serves, the NAR
/// file of `lib`: a valid, well-compressed file that matches the narinfo's `FileHash` and
/// `FileSize`, under a valid signature.
fn serve_swapped_nar(cache: &NixCache) -> TestServer {
    let hello = cache.path_named("nixipfs-test-hello");
    let lib = cache.path_named("nixipfs-test-lib");
    TestServer::builder()
        .static_dir(&cache.dir)
        .route(
            &cache.narinfo_url_path(hello),
            narinfo_response(narinfo_naming_the_file_of(cache, hello, lib)),
        )
        .route(
            &cache.nar_url_path(hello),
            Response::ok(fs::read(cache.dir.join(nar_url(cache, lib))).unwrap()),
        )
        .start()
}

#[test]
fn a_nar_swapped_with_its_file_hash_is_caught_by_the_nar_hash() {
    for compression in Compression::ALL {
        let cache = nix_cache(compression);
        let hello = cache.path_named("nixipfs-test-hello").to_string();
        let srv = serve_swapped_nar(cache);
        let m = Mirror::new("ubc-swapped-nar");
        m.write_store_paths(&cache.store_paths_text());
        let out = m.run_trusting(cache, &srv.url(), &[]);
        assert_failed(&out);
        let err = stderr(&out);
        let url = srv.url_for(&cache.nar_url_path(&hello));
        for needle in [hello.as_str(), url.as_str(), "the NAR inside"] {
            assert!(
                err.contains(needle),
                "{compression:?}: the error names {needle}:\n{err}"
            );
        }
        assert!(
            !m.cache_dir().join(nar_url(cache, &hello)).exists(),
            "{compression:?}: the swapped NAR is not kept"
        );
        assert!(!m.cache_dir().join(narinfo_name(&hello)).exists());
        assert!(!m
            .release()
            .join("binary_cache")
            .join(narinfo_name(&hello))
            .exists());
        let rest: Vec<String> = cache
            .closure
            .iter()
            .filter(|p| **p != hello)
            .cloned()
            .collect();
        assert_mirrored(cache, &m, &rest);
    }
}

#[test]
fn without_nar_hash_checks_the_library_takes_what_file_hash_allows() {
    use nixipfs::binary_cache::{LocalCache, Upstream};
    use nixipfs::fetch::{FetchConfig, Fetcher};
    use nixipfs::mirror::{mirror_closure, MirrorJob};
    use nixipfs::signature::PublicKey;
    use nixipfs::store_path::StorePath;

    let cache = nix_cache(Compression::Xz);
    let hello = cache.path_named("nixipfs-test-hello").to_string();
    let srv = serve_swapped_nar(cache);
    let m = Mirror::new("ubc-swapped-nar-unchecked");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let run = |check_nar_hash: bool| {
        let local = nixipfs::storage::CacheStore::dir(LocalCache::create(&m.cache_dir()).unwrap());
        let fetcher = Fetcher::new(FetchConfig {
            backoff_base: Duration::from_millis(10),
            ..FetchConfig::default()
        })
        .unwrap();
        let key = PublicKey::parse(&cache.public_key).unwrap();
        let upstream = Upstream::new(fetcher, &srv.url(), vec![key]);
        let job = MirrorJob {
            cache: &local,
            upstream: &upstream,
            roots: vec![StorePath::from_absolute_path(&hello).unwrap()],
            release: None,
            print_only: false,
            print_format: Default::default(),
            check_nar_hash,
        };
        rt.block_on(mirror_closure(&job, &mut std::io::sink()))
            .unwrap()
    };
    let report = run(true);
    assert!(!report.is_complete(), "{report:?}");
    assert!(!m.cache_dir().join(narinfo_name(&hello)).exists());
    // With the check off the file's hash is all there is, and it matches.
    let report = run(false);
    assert!(report.is_complete(), "{report:?}");
    assert!(m.cache_dir().join(narinfo_name(&hello)).exists());
}

/// On disk, `path`'s NAR file becomes `other`'s, and its narinfo names that file's hash and size
/// (fields no signature covers): only a check down to the NAR tells them apart.
fn swap_nar_on_disk(m: &Mirror, cache: &NixCache, path: &str, other: &str) {
    let nar_file = m.cache_dir().join(nar_url(cache, path));
    fs::remove_file(&nar_file).unwrap();
    fs::copy(cache.dir.join(nar_url(cache, other)), &nar_file).unwrap();
    fs::write(
        m.cache_dir().join(narinfo_name(path)),
        narinfo_naming_the_file_of(cache, path, other),
    )
    .unwrap();
}

#[test]
fn a_nar_here_is_trusted_only_when_marked_as_checked() {
    let cache = nix_cache(Compression::Zstd);
    let hello = cache.path_named("nixipfs-test-hello").to_string();
    let lib = cache.path_named("nixipfs-test-lib").to_string();
    let srv = serve(cache);
    let m = Mirror::new("ubc-checked-marker");
    m.write_store_paths(&cache.store_paths_text());
    assert_ok(&m.run_trusting(cache, &srv.url(), &[]));
    // On disk, hello's NAR file becomes lib's and its narinfo names that file's hash and size
    // (fields no signature covers): only a check down to the NAR tells them apart.
    swap_nar_on_disk(&m, cache, &hello, &lib);
    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert_failed(&out);
    let err = stderr(&out);
    assert!(
        err.contains(&hello) && err.contains("the NAR inside"),
        "{err}"
    );
}

#[test]
fn a_narinfo_tampered_on_disk_is_fetched_again() {
    let cache = nix_cache(Compression::Xz);
    let hello = cache.path_named("nixipfs-test-hello").to_string();
    let lib = cache.path_named("nixipfs-test-lib").to_string();
    let srv = serve(cache);
    let m = Mirror::new("ubc-tampered-narinfo");
    m.write_store_paths(&cache.store_paths_text());
    assert_ok(&m.run_trusting(cache, &srv.url(), &[]));
    let stored = m.cache_dir().join(narinfo_name(&hello));
    let lib_hash = cache.narinfo_field(&lib, "NarHash").unwrap();
    fs::write(
        &stored,
        edited_narinfo(cache, &hello, "NarHash", &format!("NarHash: {lib_hash}")),
    )
    .unwrap();

    // verify with the key sees it.
    let checks = nixipfs::verify::VerifyChecks {
        nars: nixipfs::verify::NarCheck::Full,
        trusted_keys: vec![nixipfs::signature::PublicKey::parse(&cache.public_key).unwrap()],
    };
    let report = nixipfs::verify::verify_mirror_with(&m.outdir(), &checks).unwrap();
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&narinfo_name(&hello)) && p.contains("does not verify")),
        "{:?}",
        report.problems
    );

    // The next run refuses it, fetches it again and replaces it.
    srv.clear_requests();
    let out = m.run_trusting(cache, &srv.url(), &[]);
    assert_ok(&out);
    assert_eq!(
        srv.count(&cache.narinfo_url_path(&hello)),
        1,
        "{}",
        srv.log_summary()
    );
    assert!(fs::read(&stored).unwrap() == fs::read(cache.narinfo_file(&hello)).unwrap());
    assert_mirrored(cache, &m, &cache.closure);
    let report = nixipfs::verify::verify_mirror_with(&m.outdir(), &checks).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}

#[test]
fn verify_full_catches_a_nar_swapped_with_its_file_hash() {
    let cache = nix_cache(Compression::Bzip2);
    let hello = cache.path_named("nixipfs-test-hello").to_string();
    let lib = cache.path_named("nixipfs-test-lib").to_string();
    let srv = serve(cache);
    let m = Mirror::new("ubc-verify-full");
    m.write_store_paths(&cache.store_paths_text());
    assert_ok(&m.run_trusting(cache, &srv.url(), &[]));
    swap_nar_on_disk(&m, cache, &hello, &lib);
    let verify = |nars| {
        let checks = nixipfs::verify::VerifyChecks {
            nars,
            trusted_keys: vec![nixipfs::signature::PublicKey::parse(&cache.public_key).unwrap()],
        };
        nixipfs::verify::verify_mirror_with(&m.outdir(), &checks).unwrap()
    };
    assert!(verify(nixipfs::verify::NarCheck::FileHash).is_ok());
    let report = verify(nixipfs::verify::NarCheck::Full);
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.contains(&nar_url(cache, &hello))),
        "{:?}",
        report.problems
    );
}

#[test]
fn a_panicking_task_fails_the_path_it_was_for() {
    let cache = nix_cache(Compression::Xz);
    let hello = cache.path_named("nixipfs-test-hello").to_string();
    let srv = serve(cache);
    for site in ["narinfo-fetch", "walk", "nar-download"] {
        let m = Mirror::new("ubc-panic");
        m.write_store_paths(&cache.store_paths_text());
        let hook = format!("{site}:{}", store_path_hash(&hello));
        let out = m.run_with_env(
            &srv.url(),
            &["--trusted-public-key", &cache.public_key],
            &[("NIXIPFS_TEST_PANIC", &hook)],
        );
        assert_failed(&out);
        let err = stderr(&out);
        assert!(
            err.contains(&format!("{hello}: ")),
            "{site}: the error names {hello}:\n{err}"
        );
        assert!(!m
            .release()
            .join("binary_cache")
            .join(narinfo_name(&hello))
            .exists());
    }
    // A walk that dies: the paths it had yet to visit are failed, named by their hash parts.
    let m = Mirror::new("ubc-panic-walk");
    m.write_store_paths(&cache.store_paths_text());
    let hook = format!("walk-queue:{}", store_path_hash(&hello));
    let out = m.run_with_env(
        &srv.url(),
        &["--trusted-public-key", &cache.public_key],
        &[("NIXIPFS_TEST_PANIC", &hook)],
    );
    assert_failed(&out);
    let err = stderr(&out);
    let named = format!("/nix/store/{}: not mirrored", store_path_hash(&hello));
    assert!(err.contains(&named), "the error names {named}:\n{err}");
    assert!(!m
        .release()
        .join("binary_cache")
        .join(narinfo_name(&hello))
        .exists());
}
