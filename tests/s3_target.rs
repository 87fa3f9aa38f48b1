//! `update-binary-cache --target s3://BUCKET/PREFIX` against a real Garage cluster started by
//! the test (tests/common/garage.rs), with the objects read back by rclone and a real Nix
//! client installing the closure through Garage's website endpoint.

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::process::Output;
use std::time::{SystemTime, UNIX_EPOCH};

use common::garage::{Garage, REGION};
use common::nixcache::store_path_hash;
use common::{
    nix_cache, nix_install_from, output_text, Compression, Fault, NixCache, TestDir, TestServer,
};

/// The prefix the tests mirror into.
const PREFIX: &str = "mirror";

/// A release directory (its `store-paths`) next to nothing else: the bucket is the target.
struct Run {
    dir: TestDir,
}

impl Run {
    fn new(label: &str, cache: &NixCache) -> Run {
        let dir = TestDir::new(label);
        dir.write("release/store-paths", cache.store_paths_text());
        Run { dir }
    }

    fn release(&self) -> PathBuf {
        self.dir.join("release")
    }

    /// `update-binary-cache` from `upstream` into `PREFIX` of the bucket through `endpoint`.
    fn mirror(
        &self,
        garage: &Garage,
        endpoint: &str,
        cache: &NixCache,
        upstream: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Output {
        let release = self.release();
        let target = format!("s3://{}/{PREFIX}", garage.bucket);
        let mut args = vec![
            "update-binary-cache",
            "--release",
            release.to_str().unwrap(),
            "--target",
            &target,
            "--s3-endpoint",
            endpoint,
            "--s3-region",
            REGION,
            "--cache",
            upstream,
            "--trusted-public-key",
            &cache.public_key,
            "--progress",
            "none",
        ];
        common::process::with_test_timeouts(&mut args, extra);
        let mut cmd = common::process::nixipfs_command(args);
        cmd.envs(garage.env());
        cmd.envs(env.iter().copied());
        common::process::run_command(&mut cmd, common::process::DEFAULT_TIMEOUT)
    }
}

#[track_caller]
fn assert_ok(out: &Output) {
    assert!(
        out.status.success(),
        "update-binary-cache failed\n{}",
        output_text(out)
    );
}

/// The `URL:` of a narinfo's text.
fn url_of(narinfo: &[u8]) -> String {
    String::from_utf8_lossy(narinfo)
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .expect("narinfo has a URL")
        .to_string()
}

/// Checks that every narinfo under the cache prefix has its NAR object, with the size the
/// narinfo gives; returns how many narinfos there are.
#[track_caller]
fn assert_no_narinfo_without_nar(garage: &Garage) -> usize {
    let prefix = format!("{PREFIX}/binary_cache");
    let objects = garage.list(&prefix);
    let mut narinfos = 0;
    for key in objects.keys().filter(|k| k.ends_with(".narinfo")) {
        narinfos += 1;
        let text = garage.get(&prefix, key).expect("listed narinfo readable");
        let url = url_of(&text);
        let size: u64 = String::from_utf8_lossy(&text)
            .lines()
            .find_map(|l| l.strip_prefix("FileSize: "))
            .and_then(|s| s.parse().ok())
            .expect("FileSize");
        assert_eq!(
            objects.get(&url),
            Some(&size),
            "{key} is in the bucket but its NAR {url} is not (with {size} bytes)"
        );
    }
    narinfos
}

/// Checks that the bucket holds exactly the closure: each narinfo byte-identical to the
/// upstream one, each NAR equal to upstream's, `nix-cache-info`, and nothing else but
/// `lastsync`.
#[track_caller]
fn assert_mirrored(garage: &Garage, cache: &NixCache) {
    let prefix = format!("{PREFIX}/binary_cache");
    let objects = garage.list(&prefix);
    let mut expected: Vec<String> = vec!["nix-cache-info".into(), "lastsync".into()];
    for p in &cache.closure {
        let name = format!("{}.narinfo", store_path_hash(p));
        let want = fs::read(cache.narinfo_file(p)).unwrap();
        assert_eq!(
            garage.get(&prefix, &name).as_deref(),
            Some(&want[..]),
            "{name}"
        );
        let url = url_of(&want);
        let nar = fs::read(cache.dir.join(&url)).unwrap();
        assert_eq!(
            garage.get(&prefix, &url).as_deref(),
            Some(&nar[..]),
            "{url}"
        );
        expected.push(name);
        expected.push(url);
    }
    expected.sort();
    expected.dedup();
    let got: Vec<String> = objects
        .keys()
        .filter(|k| !k.starts_with(".checked/"))
        .cloned()
        .collect();
    assert_eq!(got, expected, "the objects under {prefix}");
    // Each NAR, checked down to its NarHash before it went up, has its marker.
    for p in &cache.closure {
        let url = url_of(&fs::read(cache.narinfo_file(p)).unwrap());
        assert_eq!(
            markers_of(&objects, &url),
            1,
            "{url} has one marker: {objects:?}"
        );
    }
    assert_eq!(
        garage.get(&prefix, "nix-cache-info").as_deref(),
        Some(&b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"[..])
    );
}

/// How many check markers (`.checked/URL/MARK`) the NAR object `url` has in `objects`.
fn markers_of(objects: &BTreeMap<String, u64>, url: &str) -> usize {
    let prefix = format!(".checked/{url}/");
    objects.keys().filter(|k| k.starts_with(&prefix)).count()
}

/// Object key → (size, modification time), listed by rclone.
fn listing_with_times(garage: &Garage) -> BTreeMap<String, String> {
    let prefix = format!("{PREFIX}/binary_cache");
    garage
        .list_times(&prefix)
        .into_iter()
        .filter(|(k, _)| k != "lastsync")
        .collect()
}

#[test]
fn mirrors_into_garage_and_nix_installs_through_the_website_endpoint() {
    let garage = Garage::start(1, "localhost");
    let cache = nix_cache(Compression::Xz);
    let srv = TestServer::builder().static_dir(&cache.dir).start();
    let run = Run::new("s3-mirror", cache);
    // Parts of 1 KiB: the NARs above it go up as multipart uploads.
    let out = run.mirror(
        &garage,
        &garage.endpoint(),
        cache,
        &srv.url(),
        &[],
        &[("NIXIPFS_TEST_S3_PART_SIZE", "1024")],
    );
    assert_ok(&out);
    assert_mirrored(&garage, cache);
    assert_eq!(assert_no_narinfo_without_nar(&garage), cache.closure.len());
    assert!(
        garage.get(PREFIX, ".lock").is_none(),
        "the lock is given up at the end"
    );
    let lastsync = garage
        .get(&format!("{PREFIX}/binary_cache"), "lastsync")
        .expect("lastsync written after a complete run");
    let stamp: u64 = String::from_utf8_lossy(&lastsync).trim().parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now - stamp < 600, "lastsync {stamp} is the time of the run");
    assert!(
        run.dir
            .join("release/binary_cache")
            .symlink_metadata()
            .is_err(),
        "no local view is made for a bucket"
    );

    // A rerun knows what is there from one listing: it downloads and uploads nothing.
    let before = listing_with_times(&garage);
    let nar_requests = |srv: &TestServer| {
        cache
            .closure
            .iter()
            .map(|p| srv.count(&cache.nar_url_path(p)))
            .sum::<usize>()
    };
    let fetched = nar_requests(&srv);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = run.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &[], &[]);
    assert_ok(&again);
    assert_eq!(nar_requests(&srv), fetched, "the rerun fetched no NAR");
    assert_eq!(
        listing_with_times(&garage),
        before,
        "the rerun rewrote no object"
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("0 NARs downloaded"),
        "{}",
        output_text(&again)
    );

    // A real Nix client, signatures required, through the website endpoint.
    let url = format!("{}/{PREFIX}/binary_cache", garage.web_url_of(0));
    let store = nix_install_from(&url, &cache.public_key, &cache.top_level)
        .unwrap_or_else(|e| panic!("installing from {url}: {e}"));
    assert_eq!(store.closure, cache.closure);
}

#[test]
fn print_only_lists_what_the_bucket_misses_and_writes_nothing() {
    let garage = Garage::start(1, "print-only");
    let cache = nix_cache(Compression::Zstd);
    let srv = TestServer::builder().static_dir(&cache.dir).start();
    let run = Run::new("s3-print-only", cache);
    let out = run.mirror(
        &garage,
        &garage.endpoint(),
        cache,
        &srv.url(),
        &["--print-only", "--print-format", "url"],
        &[],
    );
    assert_ok(&out);
    let mut listed: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    listed.sort();
    let mut want: Vec<String> = cache
        .closure
        .iter()
        .map(|p| srv.url_for(&cache.nar_url_path(p)))
        .collect();
    want.sort();
    want.dedup();
    assert_eq!(listed, want);
    assert!(
        garage.list("").is_empty(),
        "--print-only wrote to the bucket"
    );
    assert!(!run.release().join("missing-store-paths").exists());

    assert_ok(&run.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &[], &[]));
    let out = run.mirror(
        &garage,
        &garage.endpoint(),
        cache,
        &srv.url(),
        &["--print-only"],
        &[],
    );
    assert_ok(&out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "",
        "nothing is missing now"
    );
}

#[test]
fn a_live_lock_in_the_bucket_stops_a_run_and_a_stale_one_is_taken_over() {
    let garage = Garage::start(1, "locked");
    let cache = nix_cache(Compression::Xz);
    let srv = TestServer::builder().static_dir(&cache.dir).start();
    let run = Run::new("s3-lock", cache);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    garage.put(
        PREFIX,
        ".lock",
        format!("otherhost-42-ab {now}\n").as_bytes(),
    );
    let out = run.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &[], &[]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let text = output_text(&out);
    assert!(
        text.contains("otherhost-42-ab") && text.contains("holds the lock"),
        "{text}"
    );
    assert!(
        garage.list(&format!("{PREFIX}/binary_cache")).is_empty(),
        "nothing written without the lock"
    );

    // A lock not refreshed for a long time was left by a run that died.
    garage.put(PREFIX, ".lock", b"otherhost-42-ab 1000\n");
    let out = run.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &[], &[]);
    assert_ok(&out);
    assert!(
        output_text(&out).contains("taking it over"),
        "{}",
        output_text(&out)
    );
    assert_mirrored(&garage, cache);

    // `verify` reads the bucket back: clean, then a NAR object with one byte changed.
    let verify = |extra: &[&str]| {
        let target = format!("s3://{}/{PREFIX}", garage.bucket);
        let endpoint = garage.endpoint();
        let mut args = vec![
            "verify",
            "--target",
            &target,
            "--s3-endpoint",
            &endpoint,
            "--s3-region",
            REGION,
            "--trusted-public-key",
            &cache.public_key,
        ];
        args.extend_from_slice(extra);
        let mut cmd = common::process::nixipfs_command(args);
        cmd.envs(garage.env());
        common::process::run_command(&mut cmd, common::process::DEFAULT_TIMEOUT)
    };
    assert_ok(&verify(&["--full"]));
    let lib = cache.path_named("nixipfs-test-lib");
    let url = cache.nar_url_path(lib).trim_start_matches('/').to_string();
    let prefix = format!("{PREFIX}/binary_cache");
    let mut bytes = garage.get(&prefix, &url).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    garage.put(&prefix, &url, &bytes);
    for extra in [&[][..], &["--full"][..]] {
        let out = verify(extra);
        assert!(!out.status.success(), "{}", output_text(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains(&url) && stdout.lines().count() == 1,
            "{}",
            output_text(&out)
        );
    }
    // By size only, the changed byte goes unseen.
    assert_ok(&verify(&["--quick"]));
}

#[test]
fn of_two_runs_started_together_one_mirrors_and_the_other_stops() {
    let garage = Garage::start(1, "racing");
    let cache = nix_cache(Compression::Xz);
    let srv = TestServer::builder().static_dir(&cache.dir).start();
    let (a, b) = (Run::new("s3-race-a", cache), Run::new("s3-race-b", cache));
    let (out_a, out_b) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &[], &[]));
        let tb = s.spawn(|| b.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &[], &[]));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    let ok = [&out_a, &out_b]
        .iter()
        .filter(|o| o.status.success())
        .count();
    assert_eq!(
        ok,
        1,
        "exactly one run holds the lock\n{}\n{}",
        output_text(&out_a),
        output_text(&out_b)
    );
    let failed = if out_a.status.success() {
        &out_b
    } else {
        &out_a
    };
    assert!(
        output_text(failed).contains("lock"),
        "{}",
        output_text(failed)
    );
    assert_mirrored(&garage, cache);
}

#[test]
fn bad_targets_are_refused_with_clear_errors() {
    let cache = nix_cache(Compression::Xz);
    let run = Run::new("s3-bad", cache);
    let release = run.release();
    for (target, extra, message) in [
        ("s3:///x", vec![], "bucket name is missing"),
        ("ftp://host/x", vec![], "unsupported target"),
        (
            "some/dir",
            vec!["--s3-endpoint", "http://127.0.0.1:1"],
            "for an s3:// target",
        ),
    ] {
        let mut args = vec![
            "update-binary-cache",
            "--release",
            release.to_str().unwrap(),
            "--target",
            target,
        ];
        args.extend(extra);
        let out = common::run_nixipfs(args);
        assert!(!out.status.success(), "{target}: {}", output_text(&out));
        assert!(
            output_text(&out).contains(message),
            "{target}: {}",
            output_text(&out)
        );
    }
    // The commands that read the mirror's files say they need a directory.
    for args in [
        vec![
            "create-nixipfs",
            "--dir",
            "s3://bucket/mirror",
            "--no-node",
            "--car",
            "x.car",
        ],
        vec!["verify", "--dir", "s3://bucket/mirror"],
        vec!["status", "--dir", "s3://bucket/mirror"],
    ] {
        let out = common::run_nixipfs(&args);
        let text = output_text(&out);
        assert!(!out.status.success(), "{args:?}: {text}");
        assert!(
            text.contains(&format!(
                "{} works on a mirror directory, not on a bucket",
                args[0]
            )),
            "{args:?}: {text}"
        );
        assert!(!PathBuf::from("x.car").exists());
    }
}

/// A server for `cache` whose NAR of the `app` top-level path answers only after `delay`, and
/// that path's NAR URL.
fn serve_with_slow_nar(cache: &NixCache, delay: std::time::Duration) -> (TestServer, String) {
    let slow = cache.nar_url_path(cache.path_named("nixipfs-test-app"));
    let srv = TestServer::builder()
        .static_dir(&cache.dir)
        .fault_always(&slow, Fault::DelayHeaders(delay))
        .start();
    (srv, slow)
}

/// Waits until `srv` has had a request for `path` (the run is past its lock and listing).
fn wait_for_request(srv: &TestServer, path: &str) {
    let start = std::time::Instant::now();
    while srv.count(path) == 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(120),
            "no request for {path}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn a_three_node_cluster_losing_one_node_mid_run_still_takes_the_mirror() {
    let mut garage = Garage::start(3, "one-down");
    let cache = nix_cache(Compression::Xz);
    let (srv, slow) = serve_with_slow_nar(cache, std::time::Duration::from_secs(3));
    let run = Run::new("s3-one-down", cache);
    let extra = ["--stall-timeout", "30"];
    let out = std::thread::scope(|s| {
        let mirror =
            s.spawn(|| run.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &extra, &[]));
        wait_for_request(&srv, &slow);
        garage.signal_kill(2);
        mirror.join().unwrap()
    });
    garage.kill(2);
    assert_ok(&out);
    assert_mirrored(&garage, cache);
    assert_eq!(assert_no_narinfo_without_nar(&garage), cache.closure.len());
}

#[test]
fn a_cluster_stopped_mid_run_fails_the_run_leaves_no_narinfo_without_its_nar_and_a_rerun_finishes()
{
    let mut garage = Garage::start(3, "all-down");
    let cache = nix_cache(Compression::Xz);
    let (srv, slow) = serve_with_slow_nar(cache, std::time::Duration::from_secs(3));
    let run = Run::new("s3-all-down", cache);
    let extra = ["--stall-timeout", "30"];
    let out = std::thread::scope(|s| {
        let mirror =
            s.spawn(|| run.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &extra, &[]));
        wait_for_request(&srv, &slow);
        // The other NARs are up and their narinfos written meanwhile.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        for i in 0..3 {
            garage.signal_kill(i);
        }
        mirror.join().unwrap()
    });
    garage.kill_all();
    assert!(
        !out.status.success(),
        "the run succeeded without storage\n{}",
        output_text(&out)
    );
    let app = cache.path_named("nixipfs-test-app");
    let app_nar = cache.nar_url_path(app);
    assert!(
        output_text(&out).contains(app_nar.trim_start_matches('/')),
        "{}",
        output_text(&out)
    );

    for i in 0..3 {
        garage.restart(i);
    }
    garage.wait_ready();
    let narinfos = assert_no_narinfo_without_nar(&garage);
    assert!(
        narinfos < cache.closure.len(),
        "the narinfo of the NAR that could not be uploaded is not there"
    );
    let prefix = format!("{PREFIX}/binary_cache");
    assert!(
        garage.get(&prefix, "lastsync").is_none(),
        "no lastsync after a failed run"
    );
    // The run that failed could not give its lock up; the rerun, on the same host, sees that
    // its process is gone and takes the lock over.
    assert!(garage.get(PREFIX, ".lock").is_some());
    let again = run.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &extra, &[]);
    assert_ok(&again);
    assert!(
        output_text(&again).contains("taking it over"),
        "{}",
        output_text(&again)
    );
    assert_mirrored(&garage, cache);
}

/// `GET path` on `base` (`http://localhost:PORT`) over HTTP/1.0, redirects not followed: the
/// status, the `location` header and the body.
fn web_get(base: &str, path: &str) -> (u16, Option<String>, Vec<u8>) {
    use std::io::{Read, Write};
    let port: u16 = base.rsplit(':').next().unwrap().parse().unwrap();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("website endpoint");
    s.set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).unwrap();
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let head = String::from_utf8_lossy(&raw[..end]).to_string();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let location = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("location")
            .then(|| v.trim().to_string())
    });
    (status, location, raw[end + 4..].to_vec())
}

/// The fake Hydra's two channels mirrored by `release-nixos` into a bucket named in the config.
struct BucketMirror {
    garage: Garage,
    hydra: common::hydra::FakeHydra,
    hydra_srv: TestServer,
    _cache_srv: TestServer,
    dir: TestDir,
    config: PathBuf,
}

impl BucketMirror {
    fn new(label: &str) -> BucketMirror {
        use common::hydra::names::*;
        let garage = Garage::start(1, "localhost");
        let data = common::hydra::release_data();
        let hydra = common::hydra::FakeHydra::standard(data);
        let hydra_srv = hydra.start();
        let cache_srv = TestServer::builder().static_dir(&data.cache).start();
        let dir = TestDir::new(label);
        let config = serde_json::json!({
            "hydra": hydra_srv.url(),
            "cache": cache_srv.url(),
            "target_cache": format!("{}/{PREFIX}/binary_cache", garage.web_url_of(0)),
            "trusted_public_keys": [data.public_key],
            "target": format!("s3://{}/{PREFIX}", garage.bucket),
            "s3_endpoint": garage.endpoint(),
            "s3_region": REGION,
            "releases": [
                {"channel": NIXOS_CHANNEL, "project": NIXOS_PROJECT, "jobset": NIXOS_JOBSET,
                 "job": NIXOS_JOB, "keep": 1, "programs": false},
                {"channel": NIXPKGS_CHANNEL, "project": NIXPKGS_PROJECT,
                 "jobset": NIXPKGS_JOBSET, "job": NIXPKGS_JOB, "keep": 1, "programs": false},
            ],
        });
        let config = dir.write(
            "nixos_release.json",
            serde_json::to_string_pretty(&config).unwrap(),
        );
        BucketMirror {
            garage,
            hydra,
            hydra_srv,
            _cache_srv: cache_srv,
            dir,
            config,
        }
    }

    fn run(&self, extra: &[&str]) -> Output {
        let tmp = self.dir.join("tmp");
        let mut args = vec![
            "release-nixos",
            "--tmpdir",
            tmp.to_str().unwrap(),
            "--config",
            self.config.to_str().unwrap(),
            "--no-ipfs",
            "--progress",
            "none",
        ];
        args.extend(extra);
        let mut cmd = common::process::nixipfs_command(args);
        cmd.envs(self.garage.env());
        common::process::run_command(&mut cmd, common::process::DEFAULT_TIMEOUT)
    }

    fn nixname(&self, build: u64) -> String {
        self.hydra.builds[&build].nixname.clone()
    }

    /// The closure of an evaluation's store paths.
    fn eval_closure(&self, eval: u64) -> Vec<String> {
        let mut roots = self.hydra.evals[&eval].store_paths.clone();
        roots.sort();
        roots.dedup();
        common::hydra::release_data().closure_of(&roots)
    }
}

#[test]
fn release_nixos_into_a_bucket_serves_channels_as_redirects_and_gc_keeps_what_releases_need() {
    use common::hydra::names::*;
    let m = BucketMirror::new("s3-release");
    let data = common::hydra::release_data();
    let out = m.run(&[]);
    assert!(out.status.success(), "{}", output_text(&out));
    let web = m.garage.web_url_of(0);
    let first = m.nixname(NIXOS_TESTED[0]);
    let release_key = format!("releases/{NIXOS_CHANNEL}/{first}");
    let objects = m.garage.list(PREFIX);
    for file in [
        "git-revision",
        "store-paths",
        "store-paths.xz",
        "build-info.json",
        "binary-cache-url",
        "nixexprs.tar.xz",
    ] {
        assert!(
            objects.contains_key(&format!("{release_key}/{file}")),
            "{release_key}/{file} is not in the bucket: {objects:?}"
        );
    }
    assert!(
        !objects
            .keys()
            .any(|k| k.contains("/binary_cache/") && k.starts_with("releases/")),
        "no release view goes to the bucket"
    );
    for stamp in [
        "lastsync",
        "binary_cache/lastsync",
        "channels/lastsync",
        "releases/lastsync",
    ] {
        assert!(objects.contains_key(stamp), "{stamp} after a complete run");
    }
    assert!(!objects.contains_key(".lock"), "the lock is given up");

    // The channel, as channels.nixos.org serves it: a redirect to the release.
    let (status, location, _) = web_get(&web, &format!("/{PREFIX}/channels/{NIXOS_CHANNEL}"));
    assert_eq!(status, 301, "the website endpoint redirects the channel");
    let location = location.expect("a location");
    assert_eq!(location, format!("/{PREFIX}/{release_key}"));
    let (status, _, tarball) = web_get(&web, &format!("{location}/nixexprs.tar.xz"));
    assert_eq!(status, 200);
    assert_eq!(
        tarball,
        data.tarball1.bytes(),
        "the channel's nixexprs.tar.xz"
    );
    let (status, _, cache_url) = web_get(&web, &format!("{location}/binary-cache-url"));
    assert_eq!(status, 200);
    let cache_url = String::from_utf8(cache_url).unwrap();
    assert_eq!(cache_url.trim(), format!("{web}/{PREFIX}/binary_cache"));

    // A real Nix client, signatures required, installs the release from the bucket's cache.
    let mut roots = m.hydra.evals[&NIXOS_EVALS[0]].store_paths.clone();
    roots.sort();
    roots.dedup();
    let store = nix_install_from(cache_url.trim(), &data.public_key, &roots)
        .unwrap_or_else(|e| panic!("installing from {cache_url}: {e}"));
    assert_eq!(store.closure, m.eval_closure(NIXOS_EVALS[0]));
    assert_no_narinfo_without_nar(&m.garage);

    // A rerun rewrites nothing: no release file, no NAR, not the channel.
    let before: BTreeMap<String, String> = m
        .garage
        .list_times(PREFIX)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("lastsync"))
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let again = m.run(&[]);
    assert!(again.status.success(), "{}", output_text(&again));
    let after: BTreeMap<String, String> = m
        .garage
        .list_times(PREFIX)
        .into_iter()
        .filter(|(k, _)| !k.ends_with("lastsync"))
        .collect();
    assert_eq!(after, before, "the rerun rewrote no object");

    // A new evaluation: the channel moves, and --gc deletes the old release and what only it
    // needed, keeping what the releases left need.
    common::hydra::FakeHydra::point_latest(
        &m.hydra_srv,
        NIXOS_PROJECT,
        NIXOS_JOBSET,
        NIXOS_JOB,
        NIXOS_TESTED[1],
    );
    let gc = m.run(&["--gc"]);
    assert!(gc.status.success(), "{}", output_text(&gc));
    let second = m.nixname(NIXOS_TESTED[1]);
    let local = m.dir.join("tmp/s3-releases/releases").join(NIXOS_CHANNEL);
    assert!(local.join(&second).join("git-revision").is_file());
    assert!(
        !local.join(&first).exists(),
        "the local copy of a release the bucket holds and the channel left is removed"
    );
    let (status, location, _) = web_get(&web, &format!("/{PREFIX}/channels/{NIXOS_CHANNEL}"));
    assert_eq!(status, 301);
    assert_eq!(
        location.as_deref(),
        Some(format!("/{PREFIX}/releases/{NIXOS_CHANNEL}/{second}").as_str())
    );
    let objects = m.garage.list(PREFIX);
    assert!(
        !objects
            .keys()
            .any(|k| k.starts_with(&format!("{release_key}/"))),
        "the old release was kept with keep = 1"
    );
    let mut live = m.eval_closure(NIXOS_EVALS[1]);
    live.extend(m.eval_closure(NIXPKGS_EVAL));
    live.sort();
    live.dedup();
    let mut want: Vec<String> = Vec::new();
    for p in &live {
        want.push(format!("{}.narinfo", store_path_hash(p)));
        want.push(data.nar_url(p));
    }
    want.sort();
    want.dedup();
    let cache_objects: Vec<String> = m
        .garage
        .list(&format!("{PREFIX}/binary_cache"))
        .into_keys()
        .filter(|k| k.ends_with(".narinfo") || k.starts_with("nar/"))
        .collect();
    assert_eq!(
        cache_objects, want,
        "exactly the narinfos and NARs of the releases left stay"
    );
    assert!(
        !cache_objects.contains(&data.nar_url(&data.paths.pkg1)),
        "the NAR only the old release needed is gone"
    );
    assert_no_narinfo_without_nar(&m.garage);
}

#[test]
fn release_nixos_with_a_bucket_refuses_what_needs_a_disk() {
    let m = BucketMirror::new("s3-release-refusals");
    let tmp = m.dir.join("tmp");
    // IPFS publishing reads the mirror from disk.
    let mut cmd = common::process::nixipfs_command([
        "release-nixos",
        "--tmpdir",
        tmp.to_str().unwrap(),
        "--config",
        m.config.to_str().unwrap(),
        "--progress",
        "none",
    ]);
    cmd.envs(m.garage.env());
    let out = common::process::run_command(&mut cmd, common::process::DEFAULT_TIMEOUT);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("needs the disk target; pass --no-ipfs"),
        "{}",
        output_text(&out)
    );
    assert!(
        m.garage.list(PREFIX).is_empty(),
        "nothing was written to the bucket"
    );
}

#[test]
fn a_release_object_with_other_bytes_is_never_replaced_and_the_release_stays_incomplete() {
    use common::hydra::names::*;
    let m = BucketMirror::new("s3-release-conflict");
    let first = m.nixname(NIXOS_TESTED[0]);
    let release = format!("{PREFIX}/releases/{NIXOS_CHANNEL}/{first}");
    // What another writer left where this run's release goes.
    m.garage.put(&release, "store-paths", b"not these bytes\n");
    let out = m.run(&[]);
    let text = output_text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("is in the bucket with other bytes") && text.contains("store-paths"),
        "{text}"
    );
    assert_eq!(
        m.garage.get(&release, "store-paths").as_deref(),
        Some(&b"not these bytes\n"[..]),
        "the object was not replaced"
    );
    let objects = m.garage.list(PREFIX);
    assert!(
        !objects.contains_key(&format!("releases/{NIXOS_CHANNEL}/{first}/git-revision")),
        "a release whose files did not all go up has no git-revision"
    );
    assert!(
        !objects.contains_key(&format!("channels/{NIXOS_CHANNEL}")),
        "the channel does not point at an incomplete release"
    );
    // The other channel is complete and points at its release.
    assert!(
        objects.contains_key(&format!("channels/{NIXPKGS_CHANNEL}")),
        "{objects:?}"
    );
    assert!(!objects.contains_key("lastsync"), "not a complete run");
}

/// The closure of `roots` in `cache`, from its narinfos' `References`.
fn closure_in(cache: &NixCache, roots: &[&str]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    let mut queue: Vec<String> = roots.iter().map(|r| r.to_string()).collect();
    while let Some(p) = queue.pop() {
        if seen.contains(&p) {
            continue;
        }
        let refs = cache.narinfo_field(&p, "References").unwrap_or_default();
        for r in refs.split_whitespace() {
            queue.push(format!("/nix/store/{r}"));
        }
        seen.push(p);
    }
    seen.sort();
    seen
}

#[test]
fn garbage_collect_in_a_bucket_deletes_only_what_no_release_needs_and_refuses_a_partial_view() {
    let garage = Garage::start(1, "collect");
    let cache = nix_cache(Compression::Xz);
    let srv = TestServer::builder().static_dir(&cache.dir).start();
    let run = Run::new("s3-gc", cache);
    assert_ok(&run.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &[], &[]));
    let prefix = format!("{PREFIX}/binary_cache");
    let all = garage.list(&prefix);

    // The release kept: `tool` and a path upstream lacks (so the bucket lacks it too).
    let tool = cache.path_named("nixipfs-test-tool").to_string();
    let unrelated = cache.unrelated[0].clone();
    let kept = run.dir.join("kept");
    run.dir
        .write("kept/store-paths", format!("{tool}\n{unrelated}\n"));
    let gc = |releases: &[&str], extra: &[&str]| {
        let target = format!("s3://{}/{PREFIX}", garage.bucket);
        let endpoint = garage.endpoint();
        let mut args = vec![
            "garbage-collect",
            "--target",
            &target,
            "--s3-endpoint",
            &endpoint,
            "--s3-region",
            REGION,
            "--releases",
        ];
        args.extend_from_slice(releases);
        args.extend_from_slice(extra);
        let mut cmd = common::process::nixipfs_command(args);
        cmd.envs(garage.env());
        common::process::run_command(&mut cmd, common::process::DEFAULT_TIMEOUT)
    };
    let kept_arg = kept.to_str().unwrap();
    let refused = |out: &Output, message: &str| {
        let text = output_text(out);
        assert!(!out.status.success(), "{text}");
        assert!(text.contains(message), "expected {message:?}: {text}");
        assert_eq!(garage.list(&prefix), all, "nothing is deleted: {text}");
    };

    // A release that is not there, one without store-paths, one whose closure needs a narinfo
    // the bucket lacks (upstream's lack is not recorded yet): nothing is deleted.
    refused(
        &gc(&["releases/none/x"], &[]),
        "neither a release directory",
    );
    run.dir.write("empty/nix-cache-info", "");
    let empty = run.dir.join("empty");
    refused(
        &gc(&[kept_arg, empty.to_str().unwrap()], &[]),
        "no readable store-paths",
    );
    refused(
        &gc(&[kept_arg], &[]),
        &format!(
            "{}.narinfo, which is not in the bucket",
            store_path_hash(&unrelated)
        ),
    );
    run.dir
        .write("kept/missing-store-paths", format!("{unrelated}\n"));
    // A narinfo of the closure whose NAR object is gone.
    let lib = cache.path_named("nixipfs-test-lib");
    assert!(closure_in(cache, &[&tool]).contains(&lib.to_string()));
    let lib_nar = cache.nar_url_path(lib).trim_start_matches('/').to_string();
    let lib_bytes = garage.get(&prefix, &lib_nar).unwrap();
    garage.delete(&prefix, &lib_nar);
    let without_nar = garage.list(&prefix);
    let out = gc(&[kept_arg], &[]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(&format!(
            "names the NAR s3://collect/{PREFIX}/binary_cache/{lib_nar}"
        )),
        "{}",
        output_text(&out)
    );
    assert_eq!(garage.list(&prefix), without_nar, "nothing is deleted");
    garage.put(&prefix, &lib_nar, &lib_bytes);
    assert_eq!(garage.list(&prefix), all);

    // A dry run lists what would go; the run deletes exactly that, under the lock.
    let live = closure_in(cache, &[&tool]);
    let mut dead: Vec<String> = Vec::new();
    for p in cache.closure.iter().filter(|p| !live.contains(p)) {
        dead.push(format!("{}.narinfo", store_path_hash(p)));
        let url = cache.nar_url_path(p).trim_start_matches('/').to_string();
        // Its check marker goes with it.
        let marker = format!(".checked/{url}/");
        dead.extend(all.keys().filter(|k| k.starts_with(&marker)).cloned());
        dead.push(url);
    }
    assert!(!dead.is_empty());
    let dry = gc(&[kept_arg], &["--dry-run"]);
    assert_ok(&dry);
    let printed = String::from_utf8_lossy(&dry.stdout).to_string();
    for key in &dead {
        assert!(
            printed.contains(&format!("would delete s3://collect/{prefix}/{key}")),
            "{key}: {printed}"
        );
    }
    assert_eq!(garage.list(&prefix), all, "a dry run deletes nothing");
    let out = gc(&[kept_arg], &[]);
    assert_ok(&out);
    let left = garage.list(&prefix);
    let mut want: Vec<String> = all.keys().filter(|k| !dead.contains(k)).cloned().collect();
    want.sort();
    assert_eq!(left.keys().cloned().collect::<Vec<_>>(), want);
    assert!(left.contains_key("nix-cache-info"));
    assert!(
        garage.get(PREFIX, ".lock").is_none(),
        "the lock is given up"
    );
    assert_no_narinfo_without_nar(&garage);

    // The release in the bucket can be named by its key too; a held lock stops the collector.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    garage.put(
        PREFIX,
        ".lock",
        format!("otherhost-42-ab {now}\n").as_bytes(),
    );
    let out = gc(&[kept_arg], &[]);
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("holds the lock"),
        "{}",
        output_text(&out)
    );
}

#[test]
fn a_nar_object_without_its_check_marker_is_checked_again_before_it_is_trusted() {
    let garage = Garage::start(1, "marks");
    let cache = nix_cache(Compression::Xz);
    let srv = TestServer::builder().static_dir(&cache.dir).start();
    let run = Run::new("s3-marks", cache);
    let mirror = || run.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &[], &[]);
    assert_ok(&mirror());
    let prefix = format!("{PREFIX}/binary_cache");
    let lib = cache.path_named("nixipfs-test-lib");
    let url = cache.nar_url_path(lib).trim_start_matches('/').to_string();
    assert_eq!(markers_of(&garage.list(&prefix), &url), 1);
    let original = garage.get(&prefix, &url).unwrap();

    // The object replaced by other bytes of the same size: its marker was for the object as
    // it was, so the rerun checks it, finds it wrong and fails that path.
    let mut bytes = original.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    garage.put(&prefix, &url, &bytes);
    let out = mirror();
    let text = output_text(&out);
    assert!(!out.status.success(), "the changed NAR was trusted: {text}");
    assert!(
        text.contains(&url) && text.contains("does not match this narinfo"),
        "{text}"
    );

    // The right bytes again, and the marker gone: the object is checked once more (the rerun
    // succeeds), then marked; the next rerun trusts it and writes nothing.
    garage.put(&prefix, &url, &original);
    let markers: Vec<String> = garage
        .list(&prefix)
        .into_keys()
        .filter(|k| k.starts_with(&format!(".checked/{url}/")))
        .collect();
    garage.delete(&prefix, &markers[0]);
    assert_eq!(markers_of(&garage.list(&prefix), &url), 0);
    assert_ok(&mirror());
    assert_eq!(
        markers_of(&garage.list(&prefix), &url),
        1,
        "the object checked again got its marker back"
    );
    let before = listing_with_times(&garage);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_ok(&mirror());
    assert_eq!(
        listing_with_times(&garage),
        before,
        "a marked object is not checked again"
    );
}

#[test]
fn release_nixos_print_only_with_a_bucket_lists_the_nars_and_writes_nothing_there() {
    use common::hydra::names::*;
    let m = BucketMirror::new("s3-release-print");
    let data = common::hydra::release_data();
    let out = m.run(&["--print-only"]);
    assert!(out.status.success(), "{}", output_text(&out));
    let listed = String::from_utf8_lossy(&out.stdout).to_string();
    for p in m.eval_closure(NIXOS_EVALS[0]) {
        assert!(listed.contains(&data.nar_url(&p)), "{p}: {listed}");
    }
    assert!(
        m.garage.list(PREFIX).is_empty(),
        "--print-only wrote to the bucket"
    );
}

#[test]
fn garbage_collect_reads_every_page_of_a_long_listing() {
    let garage = Garage::start(1, "pages");
    let cache = nix_cache(Compression::Xz);
    let srv = TestServer::builder().static_dir(&cache.dir).start();
    let run = Run::new("s3-gc-pages", cache);
    assert_ok(&run.mirror(&garage, &garage.endpoint(), cache, &srv.url(), &[], &[]));
    let prefix = format!("{PREFIX}/binary_cache");
    let mirrored = garage.list(&prefix);
    // 1500 NAR objects no narinfo names: more than one page of a listing (S3 and Garage give
    // 1000 keys a page), sorted after and among the live ones.
    for i in 0..1500 {
        run.dir
            .write(format!("stray/nar/{i:05}-stray.nar.xz"), format!("{i}"));
    }
    garage.put_dir(&prefix, &run.dir.join("stray"));
    assert_eq!(garage.list(&prefix).len(), mirrored.len() + 1500);
    let target = format!("s3://{}/{PREFIX}", garage.bucket);
    let endpoint = garage.endpoint();
    let release = run.release();
    let mut cmd = common::process::nixipfs_command([
        "garbage-collect",
        "--target",
        &target,
        "--s3-endpoint",
        &endpoint,
        "--s3-region",
        REGION,
        "--releases",
        release.to_str().unwrap(),
    ]);
    cmd.envs(garage.env());
    let out = common::process::run_command(&mut cmd, common::process::DEFAULT_TIMEOUT);
    assert_ok(&out);
    assert_eq!(
        garage.list(&prefix),
        mirrored,
        "every stray object went, whatever page it was listed on, and nothing else"
    );
}

#[test]
fn a_bucket_channel_does_not_move_back_to_an_older_release_without_force() {
    use common::hydra::names::*;
    let m = BucketMirror::new("s3-release-back");
    let web = m.garage.web_url_of(0);
    let channel = format!("/{PREFIX}/channels/{NIXOS_CHANNEL}");
    let points_at = |build: u64| {
        let (status, location, _) = web_get(&web, &channel);
        assert_eq!(status, 301);
        assert_eq!(
            location.as_deref(),
            Some(format!("/{PREFIX}/releases/{NIXOS_CHANNEL}/{}", m.nixname(build)).as_str())
        );
    };
    let point = |build: u64| {
        common::hydra::FakeHydra::point_latest(
            &m.hydra_srv,
            NIXOS_PROJECT,
            NIXOS_JOBSET,
            NIXOS_JOB,
            build,
        )
    };
    point(NIXOS_TESTED[1]);
    let out = m.run(&[]);
    assert!(out.status.success(), "{}", output_text(&out));
    points_at(NIXOS_TESTED[1]);
    point(NIXOS_TESTED[0]);
    let out = m.run(&[]);
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains("not moving back"),
        "{}",
        output_text(&out)
    );
    points_at(NIXOS_TESTED[1]);
    let out = m.run(&["--force"]);
    assert!(out.status.success(), "{}", output_text(&out));
    points_at(NIXOS_TESTED[0]);
}
