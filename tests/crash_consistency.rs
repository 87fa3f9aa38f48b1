//! Crash consistency: the binary is killed with SIGKILL at many points of a run; right after
//! each kill the mirror's invariants hold (every narinfo has its verified NAR), and a rerun
//! finishes the job with nothing left behind.

mod common;

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::process::nixipfs_command;
use common::{
    assert_no_temp_files, nix_cache, run_nixipfs, Compression, Fault, TestDir, TestServer,
};
use nixipfs::verify::verify_mirror;

/// Problems other than temporary files (which a killed run may leave; the next run removes them).
fn problems_besides_temp_files(dir: &Path) -> Vec<String> {
    verify_mirror(dir, false)
        .expect("verify runs")
        .problems
        .into_iter()
        .filter(|p| !p.contains("temporary file"))
        .collect()
}

fn kill_after(mut child: Child, server: &TestServer, requests: usize) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if server.requests().len() >= requests {
            let _ = child.kill();
            let _ = child.wait();
            return true;
        }
        assert!(
            Instant::now() < deadline,
            "the run neither made {requests} requests nor ended"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn update_binary_cache_killed_at_every_request_then_rerun_converges() {
    let cache = nix_cache(Compression::Xz);
    let mut killed = 0;
    // Enough points to land before, between and after every narinfo and NAR request.
    for k in 1..=14 {
        let dir = TestDir::new("crash-ubc");
        let release = dir.join("release");
        std::fs::create_dir_all(&release).unwrap();
        std::fs::write(release.join("store-paths"), cache.store_paths_text()).unwrap();
        let mut builder = TestServer::builder().static_dir(&cache.dir);
        // Slow every answer down a little so that the kill lands inside the run.
        for p in &cache.closure {
            builder = builder
                .fault_always(
                    &cache.narinfo_url_path(p),
                    Fault::DelayHeaders(Duration::from_millis(15)),
                )
                .fault_always(
                    &cache.nar_url_path(p),
                    Fault::DelayHeaders(Duration::from_millis(15)),
                );
        }
        let server = builder.start();
        let out = dir.join("mirror");
        let args = [
            "update-binary-cache".to_string(),
            "--release".into(),
            release.display().to_string(),
            "--outdir".into(),
            out.display().to_string(),
            "--cache".into(),
            server.url(),
            "--trusted-public-key".into(),
            cache.public_key.clone(),
            "--concurrent".into(),
            "2".into(),
        ];
        let child = nixipfs_command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nixipfs");
        if kill_after(child, &server, k) {
            killed += 1;
        }
        if out.exists() {
            assert_eq!(
                problems_besides_temp_files(&out),
                Vec::<String>::new(),
                "after a kill at request {k}"
            );
        }
        let rerun = run_nixipfs(&args);
        assert!(
            rerun.status.success(),
            "rerun after a kill at request {k} failed: {}",
            common::output_text(&rerun)
        );
        let report = verify_mirror(&out, false).unwrap();
        assert!(
            report.is_ok(),
            "after the rerun (kill at {k}): {:?}",
            report.problems
        );
        assert_eq!(report.narinfos, cache.closure.len(), "kill at {k}");
        assert_no_temp_files(&out);
        // The release links its whole closure.
        for p in &cache.closure {
            let hash = &p["/nix/store/".len().."/nix/store/".len() + 32];
            let link = release.join("binary_cache").join(format!("{hash}.narinfo"));
            assert!(link.is_file(), "kill at {k}: {} missing", link.display());
        }
    }
    assert!(killed >= 10, "only {killed} of 14 runs were killed mid-way");
}

#[test]
fn garbage_collect_killed_midway_keeps_every_narinfo_with_its_nar() {
    use nixipfs::hash::sha256;
    use nixipfs::narinfo::NarInfo;
    use nixipfs::store_path::StorePath;

    let mut midway = 0;
    for attempt in 0..3 {
        let dir = TestDir::new("crash-gc");
        let mirror = dir.join("mirror");
        let cache = mirror.join("binary_cache");
        std::fs::create_dir_all(cache.join("nar")).unwrap();
        // A cache of 4000 paths, none of them linked by the release: all garbage.
        for i in 0..4000u32 {
            let nar = format!("nar contents {i}");
            let file_hash = sha256(nar.as_bytes());
            let url = format!("nar/{}.nar", file_hash.to_nix32());
            std::fs::write(cache.join(&url), &nar).unwrap();
            let mut digest = [0u8; 20];
            digest[..4].copy_from_slice(&i.to_le_bytes());
            let sp = StorePath::new(digest, &format!("p{i}")).unwrap();
            let mut info = NarInfo::new(sp, url, "none", file_hash, nar.len() as u64);
            info.file_hash = Some(file_hash);
            info.file_size = Some(nar.len() as u64);
            std::fs::write(
                cache.join(format!("{}.narinfo", info.hash_part())),
                info.to_string(),
            )
            .unwrap();
        }
        std::fs::write(
            cache.join("nix-cache-info"),
            nixipfs::binary_cache::NIX_CACHE_INFO,
        )
        .unwrap();
        let release = mirror.join("releases/c/r");
        std::fs::create_dir_all(release.join("binary_cache")).unwrap();
        let mut child = nixipfs_command([
            "garbage-collect",
            "--cache",
            cache.to_str().unwrap(),
            "--releases",
            release.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
        // Kill once it has deleted something but (most likely) not everything.
        let deadline = Instant::now() + Duration::from_secs(30);
        let total = 8000;
        loop {
            let left = walkdir::WalkDir::new(&cache)
                .into_iter()
                .filter_map(Result::ok)
                .filter(|e| e.file_type().is_file())
                .count();
            if left < total || child.try_wait().unwrap().is_some() {
                break;
            }
            assert!(Instant::now() < deadline);
            std::thread::sleep(Duration::from_micros(200));
        }
        let _ = child.kill();
        let _ = child.wait();
        let left = walkdir::WalkDir::new(&cache)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && e.file_name() != "nix-cache-info")
            .count();
        if left > 0 && left < total {
            midway += 1;
        }
        let problems = problems_besides_temp_files(&mirror);
        assert_eq!(problems, Vec::<String>::new(), "attempt {attempt}");
    }
    assert!(midway > 0, "no garbage collection was killed mid-way");
}
