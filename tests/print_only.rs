//! `--print-only --print-format aria2c`: the list another downloader is handed. Real `aria2c`
//! fetches it into the mirror, verifying each file against the checksum in the list, and the next
//! normal run finds every NAR in place, checks it down to its signed NarHash, and downloads none.

mod common;

use std::process::Command;
use std::time::Duration;

use common::process::run_command;
use common::{
    assert_success, nix_cache, output_text, run_nixipfs, Compression, TestDir, TestServer,
};

/// A release of a Nix-made cache served on 127.0.0.1, and an empty mirror for it.
struct Setup {
    cache: &'static common::NixCache,
    server: TestServer,
    dir: TestDir,
}

impl Setup {
    fn new(label: &str) -> Setup {
        let cache = nix_cache(Compression::Xz);
        let server = TestServer::builder().static_dir(&cache.dir).start();
        let dir = TestDir::new(label);
        std::fs::create_dir_all(dir.join("release")).unwrap();
        std::fs::write(dir.join("release/store-paths"), cache.store_paths_text()).unwrap();
        Setup { cache, server, dir }
    }

    fn mirror(&self) -> std::path::PathBuf {
        self.dir.join("mirror")
    }

    /// `update-binary-cache` of the release into the mirror, with `extra` arguments.
    fn update(&self, extra: &[&str]) -> std::process::Output {
        let mut args = vec![
            "update-binary-cache".to_string(),
            "--release".into(),
            self.dir.join("release").display().to_string(),
            "--outdir".into(),
            self.mirror().display().to_string(),
            "--cache".into(),
            self.server.url(),
            "--trusted-public-key".into(),
            self.cache.public_key.clone(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run_nixipfs(args)
    }
}

fn nar_requests(server: &TestServer) -> usize {
    server
        .requests()
        .iter()
        .filter(|r| r.path.contains("/nar/"))
        .count()
}

#[test]
fn aria2c_fetches_the_listed_nars_and_the_next_run_downloads_none() {
    let t = Setup::new("print-aria2c");
    let (server, mirror, dir) = (&t.server, t.mirror(), &t.dir);
    let update = |extra: &[&str]| t.update(extra);
    let listed = update(&["--print-only", "--print-format", "aria2c"]);
    assert_success(&listed);
    assert_eq!(nar_requests(server), 0, "--print-only downloaded a NAR");
    let list = String::from_utf8(listed.stdout).unwrap();
    let entries = list.lines().filter(|l| l.starts_with("http")).count();
    assert!(entries > 0, "nothing listed:\n{list}");
    assert_eq!(
        list.lines()
            .filter(|l| l.starts_with("  checksum=sha-256="))
            .count(),
        entries,
        "{list}"
    );
    let cache_dir = mirror.join("binary_cache");
    let narinfos = |d: &std::path::Path| -> usize {
        std::fs::read_dir(d)
            .map(|r| {
                r.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .file_name()
                        .to_string_lossy()
                        .ends_with(".narinfo")
                })
                .count()
            })
            .unwrap_or(0)
    };
    assert_eq!(
        narinfos(&cache_dir),
        0,
        "--print-only put narinfos in the served cache before their NARs"
    );
    let staging = mirror.join(".staging/binary_cache");
    assert!(narinfos(&staging) > 0, "no narinfo was staged");
    let list_file = dir.write("nars.aria2", &list);

    let aria2c = Command::new("aria2c")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success());
    assert!(
        aria2c.is_some(),
        "aria2c is needed to fetch the list: apt-get install aria2 (.ci/run installs it)"
    );
    let fetched = run_command(
        Command::new("aria2c").args([
            "--input-file",
            list_file.to_str().unwrap(),
            "--dir",
            mirror.to_str().unwrap(),
            "--auto-file-renaming=false",
            "--allow-overwrite=false",
            "--check-integrity=true",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--max-concurrent-downloads=4",
        ]),
        Duration::from_secs(120),
    );
    assert_success(&fetched);
    let by_aria2c = nar_requests(server);
    assert_eq!(
        by_aria2c, entries,
        "aria2c made another number of NAR requests"
    );

    // The normal run takes what aria2c placed, checks it fully, and fetches no NAR.
    let out = update(&[]);
    assert_success(&out);
    assert_eq!(
        nar_requests(server),
        by_aria2c,
        "the run downloaded NARs again:\n{}",
        output_text(&out)
    );
    assert!(
        output_text(&out).contains(&format!("{entries} from the staging area")),
        "{}",
        output_text(&out)
    );
    assert_eq!(narinfos(&staging), 0, "staged narinfos were left behind");
    assert_eq!(
        std::fs::read_dir(staging.join("nar")).unwrap().count(),
        0,
        "staged NARs were left behind"
    );
    let verify = run_nixipfs([
        "verify",
        "--dir",
        mirror.to_str().unwrap(),
        "--full",
        "--trusted-public-key",
        &t.cache.public_key,
    ]);
    assert_success(&verify);
}

#[test]
fn a_wrong_file_in_the_staging_area_is_removed_and_the_nar_downloaded() {
    let t = Setup::new("print-staged-bad");
    let (server, mirror, cache) = (&t.server, t.mirror(), &t.cache);
    let listed = t.update(&["--print-only"]);
    assert_success(&listed);
    let lines = String::from_utf8(listed.stdout).unwrap();
    let rel = lines
        .lines()
        .next()
        .and_then(|l| l.split(',').next())
        .expect("a listed NAR")
        .to_string();
    // Another tool put a file of the right name and size but other bytes where it was told.
    let staged = mirror.join(".staging/binary_cache").join(&rel);
    let mut bad = std::fs::read(cache.dir.join(&rel)).unwrap();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::create_dir_all(staged.parent().unwrap()).unwrap();
    std::fs::write(&staged, &bad).unwrap();
    server.clear_requests();
    // The next run checks it, removes it with a warning, and downloads the NAR instead.
    let out = t.update(&[]);
    assert_success(&out);
    assert!(!staged.exists(), "the wrong staged file is still there");
    assert!(
        output_text(&out).contains("does not match its narinfo"),
        "{}",
        output_text(&out)
    );
    assert_eq!(
        std::fs::read(mirror.join("binary_cache").join(&rel)).unwrap(),
        std::fs::read(cache.dir.join(&rel)).unwrap(),
        "the served NAR is not upstream's"
    );
    assert_eq!(
        nar_requests(server),
        lines.lines().count(),
        "each NAR is downloaded once"
    );
}

#[test]
fn a_file_aria2c_got_wrong_is_not_taken_by_the_next_run() {
    let t = Setup::new("print-aria2c-bad");
    let (server, mirror, cache) = (&t.server, t.mirror(), &t.cache);
    let release = t.dir.join("release");
    let listed = t.update(&["--print-only", "--print-format", "url"]);
    assert_success(&listed);
    let urls = String::from_utf8(listed.stdout).unwrap();
    let first = urls.lines().next().expect("a NAR URL").to_string();
    assert!(first.starts_with(&server.url()), "{first}");
    // Another tool put a file of the right name and size but other bytes in place.
    let rel = first.strip_prefix(&format!("{}/", server.url())).unwrap();
    let target = mirror.join("binary_cache").join(rel);
    let good = std::fs::read(cache.dir.join(rel)).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::write(&target, &bad).unwrap();
    // The next run does not take it: the file is checked, found wrong, and the path fails,
    // naming the file; nothing links it into the release.
    let out = t.update(&[]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        output_text(&out).contains(rel.rsplit('/').next().unwrap()),
        "{}",
        output_text(&out)
    );
    assert!(!release.join("binary_cache").join(rel).exists());
}
