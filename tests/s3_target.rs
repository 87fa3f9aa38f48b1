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
    let got: Vec<String> = objects.keys().cloned().collect();
    assert_eq!(got, expected, "the objects under {prefix}");
    assert_eq!(
        garage.get(&prefix, "nix-cache-info").as_deref(),
        Some(&b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 40\n"[..])
    );
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
