//! The mirror lock: a garbage collection, an IPFS publication or a second update while an update
//! runs on the same mirror exits at once with a clear message, and `--wait-lock` waits instead.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::process::nixipfs_command;
use common::{nix_cache, output_text, run_nixipfs, Compression, Fault, TestDir, TestServer};

#[test]
fn gc_publication_and_second_update_are_excluded_while_an_update_runs() {
    let cache = nix_cache(Compression::Xz);
    let dir = TestDir::new("lock");
    let release = dir.join("release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join("store-paths"), cache.store_paths_text()).unwrap();
    let first = &cache.top_level[0];
    // The first narinfo request stalls, so the update holds the lock for a while.
    let server = TestServer::builder()
        .static_dir(&cache.dir)
        .fault(&cache.narinfo_url_path(first), [Fault::StallAfter(0)])
        .start();
    let out = dir.join("mirror");
    let update_args = |extra: &[&str]| {
        let mut v = vec![
            "update-binary-cache".to_string(),
            "--release".into(),
            release.display().to_string(),
            "--outdir".into(),
            out.display().to_string(),
            "--cache".into(),
            server.url(),
            "--no-check-sigs".into(),
            "--stall-timeout".into(),
            "3".into(),
            "--retry-delay".into(),
            "0.05".into(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let mut holder = nixipfs_command(update_args(&[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the holder has made its first request (it has the lock by then).
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.requests().is_empty() {
        assert!(
            Instant::now() < deadline,
            "the first update made no request"
        );
        std::thread::sleep(Duration::from_millis(5));
    }

    let second = run_nixipfs(update_args(&[]));
    assert!(!second.status.success());
    assert!(
        output_text(&second).contains("holds the lock"),
        "{}",
        output_text(&second)
    );

    std::fs::create_dir_all(out.join("releases/c/r/binary_cache")).unwrap();
    let gc = run_nixipfs([
        "garbage-collect",
        "--cache",
        out.join("binary_cache").to_str().unwrap(),
        "--releases",
        out.join("releases/c/r").to_str().unwrap(),
    ]);
    assert!(!gc.status.success());
    assert!(
        output_text(&gc).contains("holds the lock"),
        "{}",
        output_text(&gc)
    );

    // Publishing would read a mirror half written: refused before anything is written.
    let car = dir.join("mirror.car");
    let publish = run_nixipfs([
        "create-nixipfs",
        "--dir",
        out.to_str().unwrap(),
        "--no-node",
        "--car",
        car.to_str().unwrap(),
    ]);
    assert!(!publish.status.success());
    assert!(
        output_text(&publish).contains("holds the lock"),
        "{}",
        output_text(&publish)
    );
    assert!(!car.exists(), "create-nixipfs wrote {}", car.display());

    // With --wait-lock the second update waits for the first and then finds nothing to do.
    let started = Instant::now();
    let waiting = run_nixipfs(update_args(&["--wait-lock"]));
    assert!(waiting.status.success(), "{}", output_text(&waiting));
    let holder_status = holder.wait().unwrap();
    assert!(holder_status.success(), "the first update failed");
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "--wait-lock did not wait"
    );
    let report = nixipfs::verify::verify_mirror(&out, false).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
}
