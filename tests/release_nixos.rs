//! `nixipfs release-nixos` as cron runs it, against a fake Hydra and a binary cache made by real
//! Nix (see `tests/common/hydra.rs`): a first run, a rerun that does nothing, a new evaluation
//! with `--gc`, `--print-only`, files failing verification, NARs failing beyond the retries,
//! store paths missing upstream, an older evaluation after a newer one, a run killed with
//! SIGKILL, bad configs, the lock, publishing to IPFS (and its failure), and a real Nix client
//! installing from the mirror.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use common::hydra::names::*;
use common::hydra::{
    assert_release, hash_part, release_data, ExpectedRelease, FakeHydra, ReleaseData,
};
use common::process::nixipfs_command;
use common::*;

/// A fake Hydra, the release cache, a mirror directory `D`, a temp directory `T` and a config.
struct Mirror {
    data: &'static ReleaseData,
    hydra: FakeHydra,
    hydra_srv: TestServer,
    cache_srv: TestServer,
    dir: TestDir,
}

/// The config's release of the nixos channel.
fn nixos_release(keep: Option<u32>) -> Value {
    let mut r = json!({
        "channel": NIXOS_CHANNEL,
        "project": NIXOS_PROJECT,
        "jobset": NIXOS_JOBSET,
        "job": NIXOS_JOB,
    });
    if let Some(k) = keep {
        r["keep"] = json!(k);
    }
    r
}

/// The config's release of the nixpkgs channel.
fn nixpkgs_release(keep: Option<u32>) -> Value {
    let mut r = json!({
        "channel": NIXPKGS_CHANNEL,
        "project": NIXPKGS_PROJECT,
        "jobset": NIXPKGS_JOBSET,
        "job": NIXPKGS_JOB,
        "mirror": false,
    });
    if let Some(k) = keep {
        r["keep"] = json!(k);
    }
    r
}

impl Mirror {
    /// A mirror of both channels of `hydra` (no `keep`).
    fn new(label: &str, hydra: FakeHydra) -> Mirror {
        let data = release_data();
        let m = Mirror {
            data,
            hydra_srv: hydra.start(),
            hydra,
            cache_srv: TestServer::builder().static_dir(&data.cache).start(),
            dir: TestDir::new(label),
        };
        m.write_config(&[nixos_release(None), nixpkgs_release(None)], None);
        m
    }

    fn standard(label: &str) -> Mirror {
        Mirror::new(label, FakeHydra::standard(release_data()))
    }

    /// `D`.
    fn d(&self) -> PathBuf {
        self.dir.join("mirror")
    }

    /// `T`.
    fn t(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("nixos_release.json")
    }

    fn write_config(&self, releases: &[Value], target_cache: Option<&str>) {
        let mut config = json!({
            "hydra": self.hydra_srv.url(),
            "cache": self.cache_srv.url(),
            "max_threads": 4,
            "trusted_public_keys": [self.data.public_key],
            "releases": releases,
        });
        if let Some(t) = target_cache {
            config["target_cache"] = json!(t);
        }
        fs::write(
            self.config_path(),
            serde_json::to_string_pretty(&config).expect("JSON"),
        )
        .expect("writing the config");
    }

    /// The arguments of a run: `--dir D --tmpdir T --config C`, quick retries, then `extra`.
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "release-nixos".into(),
            "--dir".into(),
            self.d().display().to_string(),
            "--tmpdir".into(),
            self.t().display().to_string(),
            "--config".into(),
            self.config_path().display().to_string(),
            "--retries".into(),
            "2".into(),
            "--retry-delay".into(),
            "0.05".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Runs `release-nixos ... extra` (add `--no-ipfs` yourself).
    fn run(&self, extra: &[&str]) -> Output {
        run_nixipfs(self.args(extra))
    }

    /// Runs with `--no-ipfs` and fails the test unless it succeeds.
    #[track_caller]
    fn run_ok(&self, extra: &[&str]) -> Output {
        let mut all = vec!["--no-ipfs"];
        all.extend_from_slice(extra);
        let out = self.run(&all);
        assert_success(&out);
        out
    }

    /// `D/releases/CHANNEL/NIXNAME` of the build.
    fn release_dir(&self, channel: &str, build: u64) -> PathBuf {
        self.d()
            .join("releases")
            .join(channel)
            .join(&self.hydra.builds[&build].nixname)
    }

    /// Where `D/channels/CHANNEL` points, if it is a symlink.
    fn channel(&self, channel: &str) -> Option<PathBuf> {
        fs::read_link(self.d().join("channels").join(channel)).ok()
    }

    /// The link target `channels/CHANNEL` must have for the build.
    fn channel_target(&self, channel: &str, build: u64) -> PathBuf {
        PathBuf::from(format!(
            "../releases/{channel}/{}",
            self.hydra.builds[&build].nixname
        ))
    }

    fn point(&self, build: u64) {
        FakeHydra::point_latest(
            &self.hydra_srv,
            NIXOS_PROJECT,
            NIXOS_JOBSET,
            NIXOS_JOB,
            build,
        );
    }

    /// The release of the build as it must be.
    fn expected<'a>(&'a self, tested: u64, urls: &'a (String, String)) -> ExpectedRelease<'a> {
        let build = &self.hydra.builds[&tested];
        let eval = &self.hydra.evals[&build.eval];
        let (tarball, images) = match build.eval {
            101 => (&self.data.tarball1, vec![&self.data.iso1]),
            102 | 103 => (
                &self.data.tarball2,
                vec![&self.data.iso2, &self.data.graphical2, &self.data.ova2],
            ),
            _ => (&self.data.tarball_np, vec![]),
        };
        ExpectedRelease {
            hydra_url: &urls.0,
            binary_cache_url: &urls.1,
            eval,
            build,
            tarball,
            images,
            programs: true,
        }
    }

    /// `(hydra URL, cache URL)`.
    fn urls(&self) -> (String, String) {
        (self.hydra_srv.url(), self.cache_srv.url())
    }

    /// The closure of an evaluation's store paths.
    fn eval_closure(&self, eval: u64) -> Vec<String> {
        let mut roots = self.hydra.evals[&eval].store_paths.clone();
        roots.sort();
        roots.dedup();
        self.data.closure_of(&roots)
    }

    /// Fails unless the whole `closure` is in `D/binary_cache` (narinfos and NARs byte for byte
    /// as upstream has them) and `release`'s `binary_cache/` view holds exactly relative links
    /// to them plus `nix-cache-info`.
    #[track_caller]
    fn assert_closure_mirrored(&self, release: &Path, closure: &[String]) {
        let cache = self.d().join("binary_cache");
        let mut want_view: BTreeSet<String> = BTreeSet::from(["nix-cache-info".to_string()]);
        for p in closure {
            let name = format!("{}.narinfo", hash_part(p));
            let nar = self.data.nar_url(p);
            for rel in [&name, &nar] {
                let got = fs::read(cache.join(rel))
                    .unwrap_or_else(|e| panic!("{p}: {rel} is not in the mirror: {e}"));
                let want = fs::read(self.data.cache.join(rel)).expect("upstream file");
                assert!(got == want, "{rel} differs from upstream");
                let link = release.join("binary_cache").join(rel);
                let target = fs::read_link(&link)
                    .unwrap_or_else(|e| panic!("{} is not a symlink: {e}", link.display()));
                assert!(
                    target.is_relative(),
                    "{} -> {}",
                    link.display(),
                    target.display()
                );
                let resolved = fs::canonicalize(&link).expect("link resolves");
                assert_eq!(
                    resolved,
                    fs::canonicalize(cache.join(rel)).expect("cache file"),
                    "{} resolves elsewhere",
                    link.display()
                );
            }
            want_view.insert(name);
            want_view.insert(nar);
        }
        let view: BTreeSet<String> = files_under(&release.join("binary_cache"))
            .into_iter()
            .collect();
        assert_eq!(view, want_view, "the release's binary_cache/ view");
        assert_eq!(
            fs::read_to_string(release.join("binary_cache/nix-cache-info")).expect("view info"),
            fs::read_to_string(cache.join("nix-cache-info")).expect("cache info")
        );
    }

    /// The narinfo and NAR files in `D/binary_cache` (relative), sorted.
    fn cache_files(&self) -> BTreeSet<String> {
        files_under(&self.d().join("binary_cache"))
            .into_iter()
            .filter(|f| f.ends_with(".narinfo") || f.starts_with("nar/"))
            .collect()
    }

    /// The narinfo and NAR file names of `closure`.
    fn files_of(&self, closure: &[String]) -> BTreeSet<String> {
        closure
            .iter()
            .flat_map(|p| [format!("{}.narinfo", hash_part(p)), self.data.nar_url(p)])
            .collect()
    }

    /// The Hydra request paths, sorted.
    fn hydra_paths(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .hydra_srv
            .requests()
            .into_iter()
            .map(|r| r.path)
            .collect();
        v.sort();
        v
    }

    fn clear_logs(&self) {
        self.hydra_srv.clear_requests();
        self.cache_srv.clear_requests();
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Every non-directory entry under `dir` (recursively, symlinks not followed), relative, sorted;
/// empty when `dir` does not exist.
fn files_under(dir: &Path) -> Vec<String> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut out: Vec<String> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.expect("walking"))
        .filter(|e| !e.file_type().is_dir())
        .map(|e| {
            e.path()
                .strip_prefix(dir)
                .expect("under dir")
                .display()
                .to_string()
        })
        .collect();
    out.sort();
    out
}

/// Every entry under `dir` with its size and modification time, to see that nothing changed.
fn snapshot(dir: &Path) -> Vec<(String, u64, SystemTime, Option<PathBuf>)> {
    if !dir.exists() {
        return Vec::new();
    }
    let mut out: Vec<_> = walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .map(|e| e.expect("walking"))
        .map(|e| {
            let meta = e.path().symlink_metadata().expect("metadata");
            (
                e.path().display().to_string(),
                meta.len(),
                meta.modified().expect("mtime"),
                fs::read_link(e.path()).ok(),
            )
        })
        .collect();
    out.sort();
    out
}

/// [`snapshot`] without the `lastsync` files, which every successful run rewrites.
fn snapshot_without_lastsync(dir: &Path) -> Vec<(String, u64, SystemTime, Option<PathBuf>)> {
    snapshot(dir)
        .into_iter()
        .filter(|e| !e.0.ends_with("/lastsync"))
        .collect()
}

/// The `lastsync` files of a successful run: each a unix time within `[from, to]`.
#[track_caller]
fn assert_lastsync(d: &Path, from: u64, to: u64) {
    for sub in ["", "binary_cache", "channels", "releases"] {
        let file = d.join(sub).join("lastsync");
        let text =
            fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        let t: u64 = text
            .trim()
            .parse()
            .unwrap_or_else(|e| panic!("{}: {text:?} is not an integer: {e}", file.display()));
        assert!(
            (from..=to).contains(&t),
            "{}: {t} is not within [{from}, {to}]",
            file.display()
        );
    }
}

fn assert_no_lastsync(d: &Path) {
    for sub in ["", "binary_cache", "channels", "releases"] {
        let file = d.join(sub).join("lastsync");
        assert!(!file.exists(), "{} was written", file.display());
    }
}

/// Fails unless `out` failed and its stderr says `what`.
#[track_caller]
fn assert_failed_with(out: &Output, what: &[&str]) {
    assert!(
        !out.status.success(),
        "expected a failure\n{}",
        output_text(out)
    );
    for w in what {
        assert!(
            stderr(out).contains(w),
            "stderr does not mention {w:?}\n{}",
            output_text(out)
        );
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn a_first_run_mirrors_every_channel_and_a_rerun_fetches_nothing() {
    let m = Mirror::standard("rn-first");
    let start = now();
    let out = m.run_ok(&[]);
    let end = now();
    let urls = m.urls();

    let nixos = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    let nixpkgs = m.release_dir(NIXPKGS_CHANNEL, NIXPKGS_TARBALL);
    assert_release(&nixos, &m.expected(NIXOS_TESTED[0], &urls));
    assert_release(&nixpkgs, &m.expected(NIXPKGS_TARBALL, &urls));
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0]))
    );
    assert_eq!(
        m.channel(NIXPKGS_CHANNEL),
        Some(m.channel_target(NIXPKGS_CHANNEL, NIXPKGS_TARBALL))
    );
    // The channel links lead to the releases.
    assert!(m
        .d()
        .join("channels")
        .join(NIXOS_CHANNEL)
        .join("git-revision")
        .is_file());

    let nixos_closure = m.eval_closure(NIXOS_EVALS[0]);
    let nixpkgs_closure = m.eval_closure(NIXPKGS_EVAL);
    m.assert_closure_mirrored(&nixos, &nixos_closure);
    m.assert_closure_mirrored(&nixpkgs, &nixpkgs_closure);
    let mut all = nixos_closure.clone();
    all.extend(nixpkgs_closure.iter().cloned());
    assert_eq!(
        m.cache_files(),
        m.files_of(&all),
        "nothing else in the cache"
    );
    assert_eq!(
        fs::read_to_string(m.d().join("binary_cache/nix-cache-info")).expect("nix-cache-info"),
        "StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"
    );
    assert!(!nixos.join("missing-store-paths").exists());
    assert_lastsync(&m.d(), start, end);
    assert_no_temp_files(m.dir.path());
    // The shared library was downloaded once.
    let common_nar = m.data.nar_url_path(&m.data.paths.common);
    assert_eq!(m.cache_srv.count(&common_nar), 1, "{}", output_text(&out));

    // A rerun with nothing new: Hydra is asked only for each job's latest-finished build and
    // the cache not at all.
    let before = snapshot_without_lastsync(&m.d().join("releases"));
    let channels_before = snapshot_without_lastsync(&m.d().join("channels"));
    m.clear_logs();
    let start = now();
    let out = m.run_ok(&[]);
    let end = now();
    let mut want = vec![
        FakeHydra::latest_finished_path(NIXOS_PROJECT, NIXOS_JOBSET, NIXOS_JOB),
        format!("/build/{}", NIXOS_TESTED[0]),
        FakeHydra::latest_finished_path(NIXPKGS_PROJECT, NIXPKGS_JOBSET, NIXPKGS_JOB),
        format!("/build/{NIXPKGS_TARBALL}"),
    ];
    want.sort();
    assert_eq!(m.hydra_paths(), want, "Hydra requests of a no-op rerun");
    assert!(
        m.cache_srv.requests().is_empty(),
        "the cache was asked in a no-op rerun:\n{}\n{}",
        m.cache_srv.log_summary(),
        output_text(&out)
    );
    assert_eq!(
        snapshot_without_lastsync(&m.d().join("releases")),
        before,
        "releases changed"
    );
    assert_eq!(
        snapshot_without_lastsync(&m.d().join("channels")),
        channels_before,
        "channel links changed"
    );
    assert_lastsync(&m.d(), start, end);
    assert_no_temp_files(m.dir.path());
}

#[test]
fn a_real_nix_client_installs_from_the_mirror_and_from_a_release() {
    let m = Mirror::standard("rn-nix-client");
    m.run_ok(&[]);
    let served = TestServer::builder().static_dir(m.d()).start();
    let p = &m.data.paths;
    let roots = vec![p.pkg1.clone(), p.channel1.clone(), p.pkgnp.clone()];
    let installed = nix_install_from(&served.url_for("/binary_cache"), &m.data.public_key, &roots)
        .unwrap_or_else(|e| panic!("installing from the global cache: {e}"));
    assert_eq!(installed.closure, m.data.closure_of(&roots));

    let nixname = &m.hydra.builds[&NIXOS_TESTED[0]].nixname;
    for base in [
        format!("/releases/{NIXOS_CHANNEL}/{nixname}/binary_cache"),
        format!("/channels/{NIXOS_CHANNEL}/binary_cache"),
    ] {
        let roots = vec![p.pkg1.clone(), p.iso1.clone()];
        let installed = nix_install_from(&served.url_for(&base), &m.data.public_key, &roots)
            .unwrap_or_else(|e| panic!("installing from {base}: {e}"));
        assert_eq!(installed.closure, m.data.closure_of(&roots));
        // A path of the other channel is not in this release's view.
        let other = nix_install_from(
            &served.url_for(&base),
            &m.data.public_key,
            std::slice::from_ref(&p.pkgnp),
        );
        assert!(other.is_err(), "{base} serves a path outside its closure");
    }
}

#[test]
fn a_new_evaluation_moves_the_channel_and_gc_deletes_the_old_release_and_its_own_files() {
    let m = Mirror::standard("rn-gc");
    m.write_config(
        &[nixos_release(Some(1)), nixpkgs_release(Some(1))],
        Some("https://mirror.example.org/cache"),
    );
    m.run_ok(&[]);
    let old = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    assert!(old.join("git-revision").is_file());

    m.point(NIXOS_TESTED[1]);
    m.clear_logs();
    m.run_ok(&["--gc"]);
    let new = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[1]);
    let urls = (
        m.hydra_srv.url(),
        "https://mirror.example.org/cache".to_string(),
    );
    assert_release(&new, &m.expected(NIXOS_TESTED[1], &urls));
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[1]))
    );
    assert!(!old.exists(), "the old release was kept with keep = 1");
    let nixpkgs = m.release_dir(NIXPKGS_CHANNEL, NIXPKGS_TARBALL);
    assert!(
        nixpkgs.join("git-revision").is_file(),
        "the other channel's release was deleted"
    );

    let new_closure = m.eval_closure(NIXOS_EVALS[1]);
    let np_closure = m.eval_closure(NIXPKGS_EVAL);
    m.assert_closure_mirrored(&new, &new_closure);
    m.assert_closure_mirrored(&nixpkgs, &np_closure);
    let mut live = new_closure.clone();
    live.extend(np_closure.iter().cloned());
    assert_eq!(
        m.cache_files(),
        m.files_of(&live),
        "exactly the files of the remaining releases stay"
    );
    let p = &m.data.paths;
    for gone in [&p.pkg1, &p.channel1, &p.iso1] {
        assert!(
            !m.d()
                .join("binary_cache")
                .join(m.data.nar_url(gone))
                .exists(),
            "the NAR of {gone}, used only by the deleted release, is still there"
        );
    }
    assert!(m
        .d()
        .join("binary_cache")
        .join(m.data.nar_url(&p.common))
        .is_file());
    // The shared library was not fetched again.
    assert_eq!(m.cache_srv.count(&m.data.narinfo_url_path(&p.common)), 0);
    assert_eq!(m.cache_srv.count(&m.data.nar_url_path(&p.common)), 0);
    assert_no_temp_files(m.dir.path());
}

#[test]
fn gc_keeps_the_newest_releases_by_build_time_not_by_creation_time() {
    let m = Mirror::standard("rn-gc-order");
    m.write_config(&[nixos_release(Some(2))], None);
    // Created in the order 102, 103, 101: the oldest build is the newest directory.
    m.point(NIXOS_TESTED[1]);
    // (The underscore forms of the original scripts work too.)
    assert_success(&m.run(&["--no_ipfs", "--wait_lock"]));
    m.point(NIXOS_TESTED[2]);
    m.run_ok(&[]);
    thread::sleep(Duration::from_millis(20));
    m.point(NIXOS_TESTED[0]);
    m.run_ok(&[]);
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[2]))
    );
    for b in NIXOS_TESTED {
        assert!(m
            .release_dir(NIXOS_CHANNEL, b)
            .join("git-revision")
            .is_file());
    }
    m.run_ok(&["--gc"]);
    assert!(
        !m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]).exists(),
        "the release of the oldest build survived"
    );
    assert!(m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[1]).is_dir());
    assert!(m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[2]).is_dir());
    let live = m.eval_closure(NIXOS_EVALS[1]);
    assert_eq!(m.cache_files(), m.files_of(&live));
}

#[test]
fn gc_always_keeps_the_release_the_channel_points_at() {
    let m = Mirror::standard("rn-gc-current");
    m.write_config(&[nixos_release(Some(1))], None);
    for b in NIXOS_TESTED {
        m.point(b);
        m.run_ok(&[]);
    }
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[2]))
    );
    // Moved back by hand to the oldest release, then collected with keep = 1: the newest and
    // the current one stay.
    m.point(NIXOS_TESTED[0]);
    m.run_ok(&["--force", "--gc"]);
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0]))
    );
    assert!(m
        .release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0])
        .join("git-revision")
        .is_file());
    assert!(m
        .release_dir(NIXOS_CHANNEL, NIXOS_TESTED[2])
        .join("git-revision")
        .is_file());
    assert!(!m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[1]).exists());
    let mut live = m.eval_closure(NIXOS_EVALS[0]);
    live.extend(m.eval_closure(NIXOS_EVALS[2]));
    assert_eq!(m.cache_files(), m.files_of(&live));
    m.assert_closure_mirrored(
        &m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]),
        &m.eval_closure(NIXOS_EVALS[0]),
    );
}

#[test]
fn print_only_lists_every_nar_once_and_moves_no_channel() {
    for (i, flag) in ["--print-only", "--print_only"].into_iter().enumerate() {
        let m = Mirror::standard(&format!("rn-print-only-{i}"));
        let out = m.run(&[flag]);
        assert_success(&out);
        let mut closure = m.eval_closure(NIXOS_EVALS[0]);
        closure.extend(m.eval_closure(NIXPKGS_EVAL));
        closure.sort();
        closure.dedup();
        let want: BTreeSet<String> = closure
            .iter()
            .map(|p| {
                format!(
                    "{},{}",
                    m.data.nar_url(p),
                    m.data.narinfo_field(p, "FileHash")
                )
            })
            .collect();
        let lines: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
        let got: BTreeSet<String> = lines.iter().cloned().collect();
        assert_eq!(got, want, "{flag}: the listed NARs\n{}", output_text(&out));
        assert_eq!(
            lines.len(),
            got.len(),
            "{flag}: a NAR was listed twice\n{}",
            output_text(&out)
        );
        assert_eq!(
            files_under(&m.d().join("channels")),
            Vec::<String>::new(),
            "{flag}: a channel moved"
        );
        let nars: Vec<String> = files_under(&m.d().join("binary_cache"))
            .into_iter()
            .filter(|f| f.starts_with("nar/"))
            .collect();
        assert_eq!(nars, Vec::<String>::new(), "{flag}: NARs were downloaded");
        let nar_requests: Vec<String> = m
            .cache_srv
            .requests()
            .into_iter()
            .map(|r| r.path)
            .filter(|p| p.contains("/nar/"))
            .collect();
        assert_eq!(
            nar_requests,
            Vec::<String>::new(),
            "{flag}: NARs were downloaded (the release's files included)"
        );
        assert_no_lastsync(&m.d());
        assert_no_temp_files(m.dir.path());

        if i == 0 {
            // A normal run afterwards completes the mirror.
            m.run_ok(&[]);
            let nixos = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
            m.assert_closure_mirrored(&nixos, &m.eval_closure(NIXOS_EVALS[0]));
            assert_eq!(
                m.channel(NIXOS_CHANNEL),
                Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0]))
            );
        }
    }
}

/// The round trip of `--print-only` with another downloader: the list is all the mirror host
/// downloads nothing for, real aria2c fetches it into the staging area, and the next normal run
/// takes every file from there (the release's own files included), moves the channels, and
/// leaves no staging area behind.
#[test]
fn print_only_round_trip_through_aria2c_downloads_each_nar_once() {
    let m = Mirror::standard("rn-print-round-trip");
    let listed = m.run(&["--print-only", "--print-format", "aria2c"]);
    assert_success(&listed);
    let nar_requests = || {
        m.cache_srv
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/nar/"))
            .count()
    };
    assert_eq!(nar_requests(), 0, "--print-only downloaded a NAR");
    assert_eq!(
        files_under(&m.d().join("binary_cache"))
            .into_iter()
            .filter(|f| f.ends_with(".narinfo"))
            .collect::<Vec<_>>(),
        Vec::<String>::new(),
        "--print-only put narinfos in the served cache"
    );
    let list = stdout(&listed);
    let entries = list.lines().filter(|l| l.starts_with("http")).count();
    assert!(entries > 0, "{}", output_text(&listed));
    let list_file = m.dir.join("nars.aria2");
    fs::write(&list_file, &list).unwrap();
    assert!(
        Command::new("aria2c")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success()),
        "aria2c is needed: apt-get install aria2 (.ci/run installs it)"
    );
    let fetched = common::process::run_command(
        Command::new("aria2c").args([
            "--input-file",
            list_file.to_str().unwrap(),
            "--dir",
            m.d().to_str().unwrap(),
            "--auto-file-renaming=false",
            "--allow-overwrite=false",
            "--check-integrity=true",
            "--console-log-level=warn",
            "--summary-interval=0",
        ]),
        Duration::from_secs(120),
    );
    assert_success(&fetched);
    assert_eq!(nar_requests(), entries, "aria2c fetched another number");
    let staging = || -> Value {
        let out = run_nixipfs(["status", "--json", "--dir", m.d().to_str().unwrap()]);
        assert_success(&out);
        serde_json::from_slice::<Value>(&out.stdout).unwrap()["staging"].clone()
    };
    let waiting = staging();
    assert_eq!(waiting["files"], json!(entries), "status: {waiting}");
    assert!(
        waiting["narinfos"].as_u64().unwrap() > 0,
        "status: {waiting}"
    );

    m.run_ok(&[]);
    assert_eq!(
        nar_requests(),
        entries,
        "the normal run downloaded NARs another tool had placed"
    );
    let nixos = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    m.assert_closure_mirrored(&nixos, &m.eval_closure(NIXOS_EVALS[0]));
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0]))
    );
    assert!(
        !m.d().join(".staging").exists(),
        "the staging area outlived a complete run"
    );
    assert_eq!(
        staging(),
        json!({"narinfos": 0, "files": 0, "bytes": 0}),
        "status after the run"
    );
}

#[test]
fn a_tarball_failing_verification_fails_only_its_channel_and_a_fixed_rerun_finishes() {
    let mut hydra = FakeHydra::standard(release_data());
    let bad = hydra.build_mut(NIXOS_TESTED[1] + 1).products[0].clone();
    hydra.build_mut(NIXOS_TESTED[1] + 1).products[0].sha256hash =
        common::hydra::sha256_hex(b"not the tarball");
    let m = Mirror::new("rn-bad-tarball", hydra);
    m.write_config(&[nixos_release(None)], None);
    let start = now();
    m.run_ok(&[]);
    let end = now();
    assert_lastsync(&m.d(), start, end);
    // Marked, to see that a failed run leaves them alone.
    for sub in ["", "binary_cache", "channels", "releases"] {
        fs::write(m.d().join(sub).join("lastsync"), "12345\n").expect("marking lastsync");
    }

    m.write_config(&[nixos_release(None), nixpkgs_release(None)], None);
    m.point(NIXOS_TESTED[1]);
    let out = m.run(&["--no-ipfs"]);
    assert_failed_with(&out, &[NIXOS_CHANNEL, "sha256"]);
    let failed = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[1]);
    assert!(!failed.join("git-revision").exists());
    assert!(!failed.join("nixexprs.tar.xz").exists());
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0])),
        "the channel moved to a release that failed"
    );
    // The other channel was done.
    let urls = m.urls();
    let nixpkgs = m.release_dir(NIXPKGS_CHANNEL, NIXPKGS_TARBALL);
    assert_release(&nixpkgs, &m.expected(NIXPKGS_TARBALL, &urls));
    m.assert_closure_mirrored(&nixpkgs, &m.eval_closure(NIXPKGS_EVAL));
    assert_eq!(
        m.channel(NIXPKGS_CHANNEL),
        Some(m.channel_target(NIXPKGS_CHANNEL, NIXPKGS_TARBALL))
    );
    assert!(
        !stderr(&out).contains(&format!("  {NIXPKGS_CHANNEL}:")),
        "the summary names a channel that succeeded\n{}",
        output_text(&out)
    );
    // A failed run leaves the lastsync files of the last good one.
    assert_lastsync(&m.d(), 12345, 12345);
    assert_no_temp_files(m.dir.path());

    // Hydra's answer fixed: the next run finishes the release and moves the channel.
    let mut fixed = m.hydra.builds[&(NIXOS_TESTED[1] + 1)].clone();
    fixed.products[0] = bad;
    m.hydra_srv.set_route(
        &format!("/build/{}", fixed.id),
        Response::json(serde_json::to_vec(&fixed.to_json()).expect("JSON")),
    );
    m.run_ok(&[]);
    assert_release(&failed, &m.expected(NIXOS_TESTED[1], &urls));
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[1]))
    );
    assert_no_temp_files(m.dir.path());
}

#[test]
fn a_nar_failing_beyond_the_retries_holds_the_channel_back_until_a_rerun() {
    let m = Mirror::standard("rn-nar-503");
    m.run_ok(&[]);
    m.point(NIXOS_TESTED[1]);
    let pkg2 = m.data.paths.pkg2.clone();
    let nar = m.data.nar_url_path(&pkg2);
    m.cache_srv.set_fault_always(&nar, Some(Fault::Status(503)));
    let out = m.run(&["--no-ipfs"]);
    assert_failed_with(&out, &[NIXOS_CHANNEL, "incomplete"]);
    assert_eq!(m.cache_srv.count(&nar), 3, "one try and two retries");
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0]))
    );
    assert!(
        !m.d()
            .join("binary_cache")
            .join(format!("{}.narinfo", hash_part(&pkg2)))
            .exists(),
        "a narinfo without its NAR was written"
    );
    assert_no_temp_files(m.dir.path());

    m.cache_srv.set_fault_always(&nar, None);
    m.run_ok(&[]);
    let new = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[1]);
    m.assert_closure_mirrored(&new, &m.eval_closure(NIXOS_EVALS[1]));
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[1]))
    );
}

#[test]
fn a_panicking_task_holds_the_channel_back_and_names_the_path() {
    let m = Mirror::standard("rn-panic");
    m.run_ok(&[]);
    m.point(NIXOS_TESTED[1]);
    let pkg2 = m.data.paths.pkg2.clone();
    for site in ["narinfo-fetch", "walk"] {
        let hook = format!("{site}:{}", hash_part(&pkg2));
        let mut cmd = common::process::nixipfs_command(m.args(&["--no-ipfs"]));
        cmd.env("NIXIPFS_TEST_PANIC", &hook);
        let out = common::process::run_command(&mut cmd, common::process::DEFAULT_TIMEOUT);
        assert_failed_with(&out, &[NIXOS_CHANNEL, "incomplete", &format!("{pkg2}: ")]);
        assert_eq!(
            m.channel(NIXOS_CHANNEL),
            Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0])),
            "{site}: the channel moved"
        );
    }
}

#[test]
fn transient_narinfo_and_hydra_errors_beyond_the_retries_fail_their_channels_only() {
    let m = Mirror::standard("rn-transient");
    let narinfo = m.data.narinfo_url_path(&m.data.paths.pkg1);
    m.cache_srv
        .set_fault_always(&narinfo, Some(Fault::Status(502)));
    let latest = FakeHydra::latest_finished_path(NIXPKGS_PROJECT, NIXPKGS_JOBSET, NIXPKGS_JOB);
    m.hydra_srv
        .set_fault_always(&latest, Some(Fault::Status(503)));
    let out = m.run(&["--no-ipfs"]);
    assert_failed_with(
        &out,
        &[
            &format!("  {NIXOS_CHANNEL}:"),
            &format!("  {NIXPKGS_CHANNEL}:"),
            "502",
            "503",
        ],
    );
    assert_eq!(m.cache_srv.count(&narinfo), 3);
    assert_eq!(m.hydra_srv.count(&latest), 3);
    assert_eq!(m.channel(NIXOS_CHANNEL), None);
    assert_eq!(m.channel(NIXPKGS_CHANNEL), None);
    assert_no_lastsync(&m.d());

    m.cache_srv.set_fault_always(&narinfo, None);
    m.hydra_srv.set_fault_always(&latest, None);
    m.run_ok(&[]);
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0]))
    );
    assert_eq!(
        m.channel(NIXPKGS_CHANNEL),
        Some(m.channel_target(NIXPKGS_CHANNEL, NIXPKGS_TARBALL))
    );
    m.assert_closure_mirrored(
        &m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]),
        &m.eval_closure(NIXOS_EVALS[0]),
    );
}

#[test]
fn temporary_files_left_by_a_crash_anywhere_are_removed_by_the_next_run() {
    let m = Mirror::standard("rn-stale-temp");
    m.run_ok(&[]);
    let release = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    let planted = [
        m.t().join(".nixipfs-tmp-0123456789abcdef"),
        m.d().join("channels/.nixipfs-tmp-0123456789abcdef"),
        m.d().join("binary_cache/.nixipfs-tmp-0123456789abcdef"),
        m.d().join("binary_cache/nar/.nixipfs-tmp-0123456789abcdef"),
        release.join(".nixipfs-tmp-0123456789abcdef"),
        release.join("binary_cache/.nixipfs-tmp-0123456789abcdef"),
        release.join("binary_cache/nar/.nixipfs-tmp-0123456789abcdef"),
    ];
    for f in &planted {
        fs::create_dir_all(f.parent().expect("parent")).expect("creating a directory");
        fs::write(f, b"partial").expect("planting a temp file");
    }
    m.run_ok(&[]);
    assert_no_temp_files(m.dir.path());
    m.assert_closure_mirrored(&release, &m.eval_closure(NIXOS_EVALS[0]));
}

#[test]
fn a_complete_release_without_build_info_such_as_the_old_scripts_made_is_adopted() {
    let m = Mirror::standard("rn-old-release");
    m.run_ok(&[]);
    let release = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    let info = fs::read(release.join("build-info.json")).expect("build-info.json");
    fs::remove_file(release.join("build-info.json")).expect("removing build-info.json");
    m.clear_logs();
    let out = m.run_ok(&[]);
    assert!(
        fs::read(release.join("build-info.json")).ok() == Some(info),
        "build-info.json was not restored as it was\n{}",
        output_text(&out)
    );
    assert!(
        m.hydra_paths().iter().all(|p| !p.starts_with("/eval/")),
        "the complete release was made again: {:?}",
        m.hydra_paths()
    );
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0]))
    );
}

#[test]
fn a_narinfo_whose_signature_does_not_verify_holds_the_channel_back() {
    let m = Mirror::standard("rn-bad-sig");
    let pkg1 = m.data.paths.pkg1.clone();
    let text = fs::read_to_string(m.data.narinfo_file(&pkg1)).expect("narinfo");
    // The same narinfo claiming another NAR size: its signature no longer matches.
    let nar_size = m.data.narinfo_field(&pkg1, "NarSize");
    let forged = text.replace(
        &format!("NarSize: {nar_size}"),
        &format!("NarSize: {}", nar_size.parse::<u64>().expect("size") + 8),
    );
    assert_ne!(forged, text);
    m.cache_srv
        .set_route(&m.data.narinfo_url_path(&pkg1), Response::text(forged));
    let out = m.run(&["--no-ipfs"]);
    assert_failed_with(&out, &[NIXOS_CHANNEL, "signature"]);
    assert_eq!(m.channel(NIXOS_CHANNEL), None);
    assert!(!m
        .d()
        .join("binary_cache")
        .join(format!("{}.narinfo", hash_part(&pkg1)))
        .exists());
    assert!(m.cache_srv.count(&m.data.nar_url_path(&pkg1)) == 0);
    assert_eq!(
        m.channel(NIXPKGS_CHANNEL),
        Some(m.channel_target(NIXPKGS_CHANNEL, NIXPKGS_TARBALL))
    );
}

#[test]
fn a_store_path_missing_upstream_is_listed_and_the_channel_still_moves() {
    let mut hydra = FakeHydra::standard(release_data());
    let missing = "/nix/store/1111111111111111111111111111111z-reltest-gone".to_string();
    hydra
        .eval_mut(NIXPKGS_EVAL)
        .store_paths
        .push(missing.clone());
    let m = Mirror::new("rn-missing", hydra);
    let out = m.run_ok(&[]);
    let release = m.release_dir(NIXPKGS_CHANNEL, NIXPKGS_TARBALL);
    assert_eq!(
        fs::read_to_string(release.join("missing-store-paths")).expect("missing-store-paths"),
        format!("{missing}\n"),
        "{}",
        output_text(&out)
    );
    m.assert_closure_mirrored(
        &release,
        &m.data
            .closure_of(&[m.data.paths.pkgnp.clone(), m.data.paths.channelnp.clone()]),
    );
    assert_eq!(
        m.channel(NIXPKGS_CHANNEL),
        Some(m.channel_target(NIXPKGS_CHANNEL, NIXPKGS_TARBALL))
    );
    assert!(!m
        .release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0])
        .join("missing-store-paths")
        .exists());
}

#[test]
fn an_older_evaluation_after_a_newer_one_does_not_move_the_channel_back_unless_forced() {
    let m = Mirror::standard("rn-older");
    m.point(NIXOS_TESTED[1]);
    m.run_ok(&[]);
    let newer = m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[1]);
    assert_eq!(m.channel(NIXOS_CHANNEL), Some(newer.clone()));

    m.point(NIXOS_TESTED[0]);
    let out = m.run_ok(&[]);
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(newer),
        "the channel moved back\n{}",
        output_text(&out)
    );
    assert!(
        stderr(&out).contains("--force"),
        "the log says how to move back\n{}",
        output_text(&out)
    );
    let older = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    let urls = m.urls();
    assert_release(&older, &m.expected(NIXOS_TESTED[0], &urls));

    m.run_ok(&["--force"]);
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0]))
    );
    m.assert_closure_mirrored(&older, &m.eval_closure(NIXOS_EVALS[0]));
}

/// Starts `release-nixos` with `args` in the background, stderr to `log`.
fn spawn(args: &[String], log: &Path) -> Child {
    let mut cmd: Command = nixipfs_command(args);
    cmd.stdout(Stdio::null())
        .stderr(fs::File::create(log).expect("creating the log"));
    cmd.spawn().expect("starting nixipfs")
}

/// Waits until `cond` holds, failing after `timeout`.
#[track_caller]
fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for `child` to exit within `timeout`.
#[track_caller]
fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("nixipfs did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// Leaves a partial download in `dir`, as a run killed during a large download does.
fn plant_partial_file(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    fs::write(
        dir.join(format!("{}killed-run-partial", common::TEMP_FILE_PREFIX)),
        b"partial",
    )
    .unwrap();
    assert!(!common::dirs::temp_files(dir).is_empty());
}

#[test]
fn a_run_killed_partway_is_finished_by_the_next_run() {
    let m = Mirror::standard("rn-sigkill");
    let p = m.data.paths.clone();
    // Every NAR here is smaller than 2 KB: this makes each download take seconds.
    let slow = Fault::Trickle {
        bytes: 16,
        interval: Duration::from_millis(100),
    };
    let mut args = m.args(&["--no-ipfs"]);
    args.extend(["--stall-timeout".to_string(), "30".to_string()]);

    // Killed while the channel tarball's NAR comes in.
    let tarball_nar = m.data.nar_url_path(&p.channel1);
    m.cache_srv
        .set_fault_always(&tarball_nar, Some(slow.clone()));
    let log = m.dir.join("run1.log");
    let mut child = spawn(&args, &log);
    wait_until("the tarball download", Duration::from_secs(60), || {
        m.cache_srv.count(&tarball_nar) > 0
    });
    thread::sleep(Duration::from_millis(150));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaping");
    let release = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    assert!(!release.join("git-revision").exists());
    assert_eq!(m.channel(NIXOS_CHANNEL), None);
    // Small files are received in memory, so the killed run may have left no partial file;
    // one is planted where a large download would have left it.
    plant_partial_file(&m.t());
    m.cache_srv.set_fault_always(&tarball_nar, None);

    // Killed while the closure's NARs come in.
    let pkg_nar = m.data.nar_url_path(&p.pkg1);
    let common_nar = m.data.nar_url_path(&p.common);
    m.cache_srv.set_fault_always(&pkg_nar, Some(slow.clone()));
    m.cache_srv.set_fault_always(&common_nar, Some(slow));
    let log = m.dir.join("run2.log");
    let mut child = spawn(&args, &log);
    wait_until("the closure downloads", Duration::from_secs(60), || {
        m.cache_srv.count(&pkg_nar) > 0 && m.cache_srv.count(&common_nar) > 0
    });
    thread::sleep(Duration::from_millis(150));
    child.kill().expect("SIGKILL");
    child.wait().expect("reaping");
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        None,
        "the channel moved before its closure was complete\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    for nar in [&p.pkg1, &p.common] {
        assert!(!m
            .d()
            .join("binary_cache")
            .join(format!("{}.narinfo", hash_part(nar)))
            .exists());
    }
    plant_partial_file(&m.d().join("binary_cache/nar"));
    m.cache_srv.set_fault_always(&pkg_nar, None);
    m.cache_srv.set_fault_always(&common_nar, None);

    // The next run finishes everything and leaves no temporary files.
    let out = m.run_ok(&[]);
    let urls = m.urls();
    assert_release(&release, &m.expected(NIXOS_TESTED[0], &urls));
    m.assert_closure_mirrored(&release, &m.eval_closure(NIXOS_EVALS[0]));
    let nixpkgs = m.release_dir(NIXPKGS_CHANNEL, NIXPKGS_TARBALL);
    m.assert_closure_mirrored(&nixpkgs, &m.eval_closure(NIXPKGS_EVAL));
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0]))
    );
    assert_no_temp_files(m.dir.path());
    assert_eq!(
        files_under(&m.t()),
        Vec::<String>::new(),
        "files left in the temp dir\n{}",
        output_text(&out)
    );
}

#[test]
fn a_bad_config_is_refused_before_anything_is_touched() {
    let m = Mirror::standard("rn-bad-config");
    let hydra = m.hydra_srv.url();
    let good_release = nixos_release(None);
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            "{\n  \"releases\": [\n    {\"channel\": \"x\",\n".to_string(),
            vec!["line"],
        ),
        (
            json!({"hydra": hydra, "releases": [{"channel": "nixos-20.09", "project": "nixos",
                   "jobset": "release-20.09", "keep": 0}]})
            .to_string(),
            vec!["releases[0].keep"],
        ),
        (
            json!({"hydra": hydra, "releases": [{"chanel": "nixos-20.09", "project": "nixos",
                   "jobset": "release-20.09"}]})
            .to_string(),
            vec!["releases[0].chanel"],
        ),
        (
            json!({"hydra": hydra, "releases": [good_release.clone(),
                   {"channel": "../x", "project": "nixos", "jobset": "j"}]})
            .to_string(),
            vec!["releases[1].channel"],
        ),
        (
            json!({"hydra": hydra, "releases": [good_release.clone(), good_release.clone()]})
                .to_string(),
            vec!["releases[1].channel"],
        ),
        (
            json!({"hydra": hydra, "max_threads": "many", "releases": [good_release]}).to_string(),
            vec!["max_threads"],
        ),
        (json!({"hydra": hydra}).to_string(), vec!["releases"]),
    ];
    let config = m.config_path();
    let config_name = config.display().to_string();
    for (text, what) in cases {
        fs::write(&config, &text).expect("writing the config");
        let out = m.run(&["--no-ipfs"]);
        let mut all = what.clone();
        all.push(&config_name);
        assert_failed_with(&out, &all);
        assert!(
            !m.d().exists(),
            "the mirror directory was created for {text}"
        );
        assert!(!m.t().exists(), "the temp directory was created for {text}");
    }
    // A config that does not exist.
    fs::remove_file(&config).expect("removing the config");
    let out = m.run(&["--no-ipfs"]);
    assert_failed_with(&out, &[&config_name]);
    assert!(!m.d().exists());
    assert!(m.hydra_srv.requests().is_empty(), "Hydra was asked");
}

#[test]
fn a_second_run_exits_at_once_while_the_lock_is_held_and_waits_with_wait_lock() {
    let m = Mirror::standard("rn-lock");
    fs::create_dir_all(m.d()).expect("creating D");
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(m.d().join(".lock"))
        .expect("opening the lock file");
    assert!(
        fs4::fs_std::FileExt::try_lock_exclusive(&lock).expect("locking"),
        "the lock is free"
    );

    let started = Instant::now();
    let out = m.run(&["--no-ipfs"]);
    assert_failed_with(&out, &["lock", "--wait-lock"]);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it did not exit at once"
    );
    assert!(m.hydra_srv.requests().is_empty(), "Hydra was asked");
    assert_eq!(files_under(&m.d()), vec![".lock".to_string()]);

    let log = m.dir.join("wait.log");
    let mut child = spawn(&m.args(&["--no-ipfs", "--wait-lock"]), &log);
    thread::sleep(Duration::from_millis(1500));
    assert!(
        child.try_wait().expect("polling").is_none(),
        "--wait-lock did not wait\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        m.hydra_srv.requests().is_empty(),
        "Hydra was asked under a held lock"
    );
    drop(lock);
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(
        status.success(),
        "{status}\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
    assert_eq!(
        m.channel(NIXOS_CHANNEL),
        Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0]))
    );
}

#[test]
fn a_second_binary_is_refused_while_a_first_is_stalled() {
    let m = Mirror::standard("rn-lock-live");
    // The first run hangs on Hydra.
    let latest = FakeHydra::latest_finished_path(NIXOS_PROJECT, NIXOS_JOBSET, NIXOS_JOB);
    m.hydra_srv
        .add_faults(&latest, [Fault::DelayHeaders(Duration::from_secs(3))]);
    let log = m.dir.join("first.log");
    let mut first = spawn(&m.args(&["--no-ipfs"]), &log);
    wait_until("the first run's request", Duration::from_secs(30), || {
        m.hydra_srv.count(&latest) > 0
    });
    let out = m.run(&["--no-ipfs"]);
    assert_failed_with(&out, &["lock"]);
    assert_eq!(m.hydra_srv.count(&latest), 1, "the second run asked Hydra");
    let status = wait_exit(&mut first, Duration::from_secs(60));
    assert!(
        status.success(),
        "{status}\n{}",
        fs::read_to_string(&log).unwrap_or_default()
    );
}

#[test]
fn an_ipfs_failure_leaves_the_mirror_complete_and_fails_the_run() {
    let m = Mirror::standard("rn-ipfs-down");
    let port = common::ipfs_node::free_port().to_string();
    let out = m.run(&["--ipfsapi", "127.0.0.1", &port, "--ipfs-timeout", "5"]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = stderr(&out);
    assert!(err.contains("IPFS"), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "the error does not name the address: {err}"
    );
    // Mirroring came first and is complete: the channel moved and the invariants hold.
    assert!(
        m.channel(NIXOS_CHANNEL).is_some(),
        "the channel did not move"
    );
    let report = nixipfs::verify::verify_mirror(&m.d(), false).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    assert!(!m.d().join("ipfs_root").exists());
    // The run failed, so it is not a sync.
    assert_no_lastsync(&m.d());
}

#[test]
fn publishes_the_mirror_to_a_real_ipfs_node() {
    let node = common::ipfs_node::IpfsNode::start();
    let m = Mirror::standard("rn-ipfs");
    let port = node.port().to_string();
    let out = m.run(&["--gc", "--ipfsapi", "127.0.0.1", &port]);
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let root_line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("nixfs: /ipfs/"))
        .unwrap_or_else(|| panic!("no `nixfs: /ipfs/CID` line in {stdout}"));
    assert!(stdout.contains("published: /ipns/"), "{stdout}");
    let root = fs::read_to_string(m.d().join("ipfs_root")).unwrap();
    assert_eq!(root.trim(), root_line.trim());
    // The node has the tree: the channel's release and its narinfos resolve through the root.
    let release = m.release_dir(NIXOS_CHANNEL, NIXOS_TESTED[0]);
    let release_cid = fs::read_to_string(release.join("ipfs_hash")).unwrap();
    let nixname = release.file_name().unwrap().to_str().unwrap().to_string();
    let (status, body) = common::ipfs_node::post(
        node.port(),
        &format!(
            "files/stat?arg=/ipfs/{}/releases/{NIXOS_CHANNEL}/{nixname}",
            root.trim()
        ),
    )
    .expect("the node answers");
    assert_eq!(status, 200, "{body}");
    let stat: serde_json::Value = serde_json::from_str(&body).unwrap();
    let got = nixipfs::ipfs::cid::Cid::parse(stat["Hash"].as_str().unwrap()).unwrap();
    let want = nixipfs::ipfs::cid::Cid::parse(release_cid.trim()).unwrap();
    assert_eq!(got, want);
    // A rerun with nothing new sends no block.
    let again = m.run(&["--ipfsapi", "127.0.0.1", &port]);
    assert_success(&again);
    let text = output_text(&again);
    assert!(text.contains("sent 0 blocks"), "{text}");
}

#[test]
fn killed_after_each_of_many_requests_the_mirror_stays_sound_and_a_rerun_converges() {
    // Every path a complete run asks for, from a first run.
    let probe = Mirror::standard("rn-kill-probe");
    probe.run_ok(&["--gc"]);
    let paths = |srv: &TestServer| -> BTreeSet<String> {
        srv.requests().iter().map(|r| r.path.clone()).collect()
    };
    let (hydra_paths, cache_paths) = (paths(&probe.hydra_srv), paths(&probe.cache_srv));
    let total = probe.hydra_srv.requests().len() + probe.cache_srv.requests().len();
    let mut killed = 0;
    let mut points = 0;
    for k in (1..total).step_by(3) {
        points += 1;
        let m = Mirror::standard("rn-kill-loop");
        // A short delay on every answer keeps the run going long enough to be killed in it.
        let delay = Fault::DelayHeaders(Duration::from_millis(10));
        for (srv, list) in [(&m.hydra_srv, &hydra_paths), (&m.cache_srv, &cache_paths)] {
            for path in list {
                srv.set_fault_always(path, Some(delay.clone()));
            }
        }
        let log = m.dir.join(format!("kill-{k}.log"));
        let mut child = spawn(&m.args(&["--no-ipfs", "--gc"]), &log);
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut was_killed = false;
        loop {
            if child.try_wait().expect("waiting").is_some() {
                break;
            }
            if m.hydra_srv.requests().len() + m.cache_srv.requests().len() >= k {
                child.kill().expect("SIGKILL");
                child.wait().expect("reaping");
                was_killed = true;
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the run neither made {k} requests nor ended"
            );
            thread::sleep(Duration::from_millis(1));
        }
        killed += usize::from(was_killed);
        if m.d().exists() {
            let problems: Vec<String> = nixipfs::verify::verify_mirror(&m.d(), false)
                .expect("verify runs")
                .problems
                .into_iter()
                .filter(|p| !p.contains("temporary file"))
                .collect();
            assert_eq!(
                problems,
                Vec::<String>::new(),
                "right after a kill at request {k}"
            );
        }
        m.run_ok(&["--gc"]);
        let report = nixipfs::verify::verify_mirror(&m.d(), false).expect("verify runs");
        assert!(
            report.is_ok(),
            "after the rerun (kill at {k}): {:?}",
            report.problems
        );
        assert_eq!(
            m.channel(NIXOS_CHANNEL),
            Some(m.channel_target(NIXOS_CHANNEL, NIXOS_TESTED[0])),
            "kill at {k}"
        );
        assert_no_temp_files(&m.d());
        assert_no_temp_files(&m.t());
    }
    assert!(
        killed * 2 >= points,
        "only {killed} of {points} runs were killed mid-way"
    );
}
