//! A full disk (ENOSPC) fails the run with a clear error and leaves no partial file, neither at
//! a final path nor as a temporary file. The mirror lives on a small tmpfs mounted by the test
//! (it runs as root, as CI does).

mod common;

use std::process::Command;

use common::{nix_cache, output_text, run_nixipfs, Compression, TestDir, TestServer};

struct Mount(std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_fails_the_run_and_leaves_no_partial_file() {
    let cache = nix_cache(Compression::None);
    let dir = TestDir::new("enospc");
    let release = dir.join("release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join("store-paths"), cache.store_paths_text()).unwrap();
    let out = dir.join("mirror");
    std::fs::create_dir_all(&out).unwrap();
    // Room for a few small files only: tmpfs counts whole 4 KiB pages.
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=20k", "tmpfs"])
        .arg(&out)
        .status()
        .expect("running mount");
    assert!(
        status.success(),
        "cannot mount a tmpfs on {} (the test needs root and the `mount` command from util-linux)",
        out.display()
    );
    let _mount = Mount(out.clone());
    let server = TestServer::builder().static_dir(&cache.dir).start();
    let run = run_nixipfs([
        "update-binary-cache",
        "--release",
        release.to_str().unwrap(),
        "--outdir",
        out.to_str().unwrap(),
        "--cache",
        &server.url(),
        "--trusted-public-key",
        &cache.public_key,
        "--retries",
        "0",
    ]);
    let text = output_text(&run);
    assert!(
        !run.status.success(),
        "the run succeeded on a full disk: {text}"
    );
    assert!(text.contains("No space left on device"), "{text}");
    // Whatever did land is whole and verified; nothing partial or temporary is left.
    let report = nixipfs::verify::verify_mirror(&out, false).unwrap();
    assert!(report.is_ok(), "{:?}", report.problems);
    common::assert_no_temp_files(&out);
}
