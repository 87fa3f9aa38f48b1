//! Rough edges of the command line: arguments that name the wrong kind of thing are refused with
//! a message that says what is wrong, before anything is contacted or written.

mod common;

use std::process::Output;

use common::{output_text, run_nixipfs, TestDir, TestServer};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_mirror_directory_that_is_a_file_or_cannot_be_created_is_refused_first() {
    let dir = TestDir::new("mirror-dir-arg");
    let release = dir.join("release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join("store-paths"), "").unwrap();
    let file = dir.write("a-file", "not a directory");
    let server = TestServer::builder().start();
    let update = |outdir: &std::path::Path| {
        run_nixipfs([
            "update-binary-cache".as_ref(),
            "--release".as_ref(),
            release.as_os_str(),
            "--outdir".as_ref(),
            outdir.as_os_str(),
            "--cache".as_ref(),
            server.url().as_ref(),
            "--no-check-sigs".as_ref(),
        ])
    };

    let out = update(&file);
    assert!(!out.status.success(), "{}", output_text(&out));
    let want = format!(
        "the mirror directory {} is a file, not a directory",
        file.display()
    );
    assert!(stderr(&out).contains(&want), "{}", output_text(&out));
    assert!(
        !stderr(&out).contains("File exists"),
        "{}",
        output_text(&out)
    );

    let below = file.join("mirror");
    let out = update(&below);
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = stderr(&out);
    let want = format!("cannot create the mirror directory {}: ", below.display());
    assert!(err.contains(&want), "{}", output_text(&out));
    assert_eq!(err.matches("os error").count(), 1, "{}", output_text(&out));

    let out = run_nixipfs([
        "create-channel-release".as_ref(),
        "--channel".as_ref(),
        "nixos-test".as_ref(),
        "--project".as_ref(),
        "nixos".as_ref(),
        "--jobset".as_ref(),
        "trunk".as_ref(),
        "--job".as_ref(),
        "tested".as_ref(),
        "--outdir".as_ref(),
        file.as_os_str(),
        "--hydra".as_ref(),
        server.url().as_ref(),
        "--cache".as_ref(),
        server.url().as_ref(),
    ]);
    assert!(!out.status.success(), "{}", output_text(&out));
    let want = format!(
        "the output directory {} is a file, not a directory",
        file.display()
    );
    assert!(stderr(&out).contains(&want), "{}", output_text(&out));
    assert!(server.requests().is_empty(), "{}", server.log_summary());
}

/// A mirror without Nix: an empty cache holding one file no release links to, and one release
/// with an empty view.
fn bare_mirror(dir: &TestDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let cache = dir.join("mirror/binary_cache");
    std::fs::create_dir_all(&cache).unwrap();
    std::fs::write(cache.join("nix-cache-info"), "StoreDir: /nix/store\n").unwrap();
    std::fs::write(cache.join("unused.narinfo"), "StorePath: x\n").unwrap();
    let releases = dir.join("mirror/releases");
    std::fs::create_dir_all(releases.join("nixos-24.11/binary_cache")).unwrap();
    (cache, releases)
}

fn garbage_collect(cache: &std::path::Path, releases: &[std::path::PathBuf]) -> Output {
    let mut args = vec![
        "garbage-collect".into(),
        "--progress".into(),
        "none".into(),
        "--cache".into(),
        cache.as_os_str().to_owned(),
        "--releases".into(),
    ];
    args.extend(releases.iter().map(|r| r.as_os_str().to_owned()));
    run_nixipfs::<_, std::ffi::OsString>(args)
}

/// What `releases/*` expands to in a shell (which leaves out hidden names), plus a temporary
/// name given explicitly.
fn glob_all(releases: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(releases)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_str().unwrap().starts_with('.'))
        .collect();
    v.sort();
    v.push(releases.join(".nixipfs-tmp-half-made"));
    v
}

#[test]
fn a_release_glob_that_matches_lastsync_collects_but_a_missing_release_is_refused() {
    let dir = TestDir::new("gc-glob");
    let (cache, releases) = bare_mirror(&dir);
    std::fs::write(releases.join("lastsync"), "1700000000\n").unwrap();
    std::fs::create_dir_all(releases.join(".nixipfs-tmp-half-made")).unwrap();

    // A named directory that is missing is still refused, and nothing is deleted.
    let mut with_gone = glob_all(&releases);
    with_gone.push(releases.join("gone"));
    let out = garbage_collect(&cache, &with_gone);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("does not exist"),
        "{}",
        output_text(&out)
    );
    assert!(cache.join("unused.narinfo").exists());

    // `lastsync` alone is no release: refused as an empty list.
    let out = garbage_collect(&cache, &[releases.join("lastsync")]);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(cache.join("unused.narinfo").exists());

    let out = garbage_collect(&cache, &glob_all(&releases));
    assert!(out.status.success(), "{}", output_text(&out));
    assert!(!stderr(&out).contains("lastsync"), "{}", output_text(&out));
    assert!(
        !cache.join("unused.narinfo").exists(),
        "{}",
        output_text(&out)
    );
}

/// A config of one release whose Hydra and cache are `server`.
fn release_config(dir: &TestDir, server: &TestServer) -> std::path::PathBuf {
    let config = format!(
        r#"{{"hydra": "{url}", "cache": "{url}", "releases": [{{"channel": "nixos-test",
            "project": "nixos", "jobset": "trunk", "job": "tested"}}]}}"#,
        url = server.url()
    );
    dir.write("nixos_release.json", config)
}

fn release_nixos(dir: &TestDir, config: &std::path::Path, tmpdir: &std::path::Path) -> Output {
    run_nixipfs([
        "release-nixos".as_ref(),
        "--dir".as_ref(),
        dir.join("mirror").as_os_str(),
        "--tmpdir".as_ref(),
        tmpdir.as_os_str(),
        "--config".as_ref(),
        config.as_os_str(),
        "--no-ipfs".as_ref(),
        "--retries".as_ref(),
        "1".as_ref(),
        "--retry-delay".as_ref(),
        "0.05".as_ref(),
    ])
}

#[test]
fn release_nixos_checks_its_tmpdir_before_asking_hydra() {
    let dir = TestDir::new("tmpdir-arg");
    let server = TestServer::builder().start();
    let config = release_config(&dir, &server);

    let file = dir.write("a-file", "not a directory");
    let out = release_nixos(&dir, &config, &file);
    assert!(!out.status.success(), "{}", output_text(&out));
    let want = format!(
        "the temporary directory (--tmpdir) {} is a file, not a directory",
        file.display()
    );
    assert!(stderr(&out).contains(&want), "{}", output_text(&out));
    assert!(server.requests().is_empty(), "{}", server.log_summary());

    // A directory nobody can create a file in, even root.
    let out = release_nixos(&dir, &config, std::path::Path::new("/proc/self"));
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(
        stderr(&out).contains("cannot write to the temporary directory (--tmpdir) /proc/self: "),
        "{}",
        output_text(&out)
    );
    assert!(server.requests().is_empty(), "{}", server.log_summary());

    // A missing one is created before the run goes on (here to a Hydra that knows nothing).
    let missing = dir.join("tmp/downloads");
    let out = release_nixos(&dir, &config, &missing);
    assert!(!out.status.success(), "{}", output_text(&out));
    assert!(missing.is_dir(), "{}", output_text(&out));
    assert!(!server.requests().is_empty(), "{}", server.log_summary());
}

/// A TLS endpoint that never completes a handshake: it accepts each connection, counts it and
/// closes it at once.
struct HandshakeRefuser {
    addr: std::net::SocketAddr,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl HandshakeRefuser {
    fn start() -> HandshakeRefuser {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = accepted.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                drop(conn);
            }
        });
        HandshakeRefuser { addr, accepted }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A release of `n` made-up store paths.
fn release_of(dir: &TestDir, n: usize) -> std::path::PathBuf {
    let release = dir.join("release");
    std::fs::create_dir_all(&release).unwrap();
    let paths: String = (0..n)
        .map(|i| {
            format!(
                "/nix/store/{:0>32}-path-{i}\n",
                format!("{i}").replace('0', "a")
            )
        })
        .collect();
    std::fs::write(release.join("store-paths"), paths).unwrap();
    release
}

fn update_from(dir: &TestDir, release: &std::path::Path, cache: &str) -> Output {
    run_nixipfs([
        "update-binary-cache".as_ref(),
        "--release".as_ref(),
        release.as_os_str(),
        "--outdir".as_ref(),
        dir.join("mirror").as_os_str(),
        "--cache".as_ref(),
        cache.as_ref(),
        "--no-check-sigs".as_ref(),
        "--concurrent".as_ref(),
        "4".as_ref(),
        "--retries".as_ref(),
        "4".as_ref(),
        "--retry-delay".as_ref(),
        "0.05".as_ref(),
        "--progress".as_ref(),
        "none".as_ref(),
    ])
}

#[test]
fn a_cache_host_that_cannot_be_connected_to_stops_the_run_early() {
    const PATHS: usize = 40;
    const ATTEMPTS_PER_PATH: usize = 5;
    let dir = TestDir::new("host-down");
    let release = release_of(&dir, PATHS);

    // Every TLS handshake fails; each attempt is one accepted connection.
    let refuser = HandshakeRefuser::start();
    let host = refuser.addr.to_string();
    let out = update_from(&dir, &release, &format!("https://{host}"));
    assert!(!out.status.success(), "{}", output_text(&out));
    let err = stderr(&out);
    let message = format!("cannot connect to {host}: ");
    assert_eq!(err.matches(&message).count(), 1, "{}", output_text(&out));
    assert!(err.contains("check that the URL"), "{}", output_text(&out));
    assert!(!err.contains("retrying"), "{}", output_text(&out));
    let attempts = refuser.accepted();
    assert!(
        attempts < PATHS,
        "{attempts} attempts for {PATHS} paths of {ATTEMPTS_PER_PATH} attempts each\n{}",
        output_text(&out)
    );

    // Nothing listens on the port of a server that is gone.
    let gone = TestServer::builder().start();
    let host = gone.addr().to_string();
    drop(gone);
    let out = update_from(&dir, &release, &format!("http://{host}"));
    assert!(!out.status.success(), "{}", output_text(&out));
    let message = format!("cannot connect to {host}: ");
    assert_eq!(
        stderr(&out).matches(&message).count(),
        1,
        "{}",
        output_text(&out)
    );
}
