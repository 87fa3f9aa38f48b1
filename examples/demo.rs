//! A complete mirror run on one machine, with no internet: a local Hydra and a local binary
//! cache on 127.0.0.1 serve the fixture data in `tests/fixtures/` (a NixOS 17.09 evaluation, its
//! channel tarball and ISO, and a binary cache made and signed by real Nix), and `release-nixos`
//! mirrors it into a directory.
//!
//! ```text
//! cargo run --example demo -- [MIRROR_DIR]     # run the whole pipeline (default: ./demo-mirror)
//! cargo run --example demo -- --serve          # only serve Hydra on :8081 and the cache on :8082,
//!                                              # for `nixipfs release-nixos --config examples/nixos_release.local.json`
//! ```

#[path = "../tests/common/server.rs"]
#[allow(dead_code)]
mod server;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nixipfs::commands::release_nixos::{self, ReleaseNixosOptions};
use nixipfs::fetch::FetchConfig;
use server::TestServer;

const FIXTURE_KEY: &str = "nixipfs-fixture-1:5Ub9Kt9Do89gtXlhSQzzyiOhS72CMY40E2eEItZUFWo=";

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn start(section: &str, port: u16) -> TestServer {
    let scenario = fixtures().join("routes-scenario.json");
    let builder = TestServer::builder().scenario(&scenario, section);
    if port == 0 {
        builder.start()
    } else {
        builder.port(port).start()
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--serve") {
        let hydra = start("hydra", 8081);
        let cache = start("binary_cache", 8082);
        println!("Hydra:        {}", hydra.url());
        println!("binary cache: {}", cache.url());
        println!("Now run, in another terminal:");
        println!("  nixipfs release-nixos --dir demo-mirror --tmpdir demo-tmp --config examples/nixos_release.local.json --no-ipfs");
        println!("Press Ctrl-C to stop.");
        loop {
            std::thread::park();
        }
    }
    let dir = PathBuf::from(args.first().map(String::as_str).unwrap_or("demo-mirror"));
    let hydra = start("hydra", 0);
    let cache = start("binary_cache", 0);
    let config_text = format!(
        r#"{{
  "hydra": "{}",
  "cache": "{}",
  "max_threads": 8,
  "trusted_public_keys": ["{FIXTURE_KEY}"],
  "releases": [
    {{ "channel": "nixos-17.09", "project": "nixos", "jobset": "release-17.09", "job": "tested", "keep": 2 }}
  ]
}}
"#,
        hydra.url(),
        cache.url()
    );
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("error: cannot create {}: {e}", dir.display());
        return ExitCode::FAILURE;
    }
    let config_file = dir.join("nixos_release.json");
    if let Err(e) = std::fs::write(&config_file, &config_text) {
        eprintln!("error: cannot write {}: {e}", config_file.display());
        return ExitCode::FAILURE;
    }
    tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = match nixipfs::config::load(&config_file) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    let opts = ReleaseNixosOptions {
        dir: dir.clone(),
        tmpdir: dir.join("tmp"),
        config,
        print_only: false,
        print_format: Default::default(),
        gc: true,
        wait_lock: false,
        force: false,
        fetch: FetchConfig::default(),
        trusted_keys: Vec::new(),
        check_sigs: true,
        check_nar_hash: true,
        ipfs: None,
    };
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let mut stdout = std::io::stdout();
    let result = runtime.block_on(release_nixos::run(&opts, &mut stdout));
    match result {
        Ok(report) if report.is_success() => {
            println!("\nThe mirror is in {}:", dir.display());
            for entry in walkdir::WalkDir::new(&dir).sort_by_file_name().min_depth(1) {
                let Ok(entry) = entry else { continue };
                let rel = entry.path().strip_prefix(&dir).unwrap_or(entry.path());
                if rel.starts_with("tmp") {
                    continue;
                }
                match std::fs::read_link(entry.path()) {
                    Ok(t) => println!("  {} -> {}", rel.display(), t.display()),
                    Err(_) => println!("  {}", rel.display()),
                }
            }
            println!(
                "\nServe it with any static web server, e.g.:\n  python3 -m http.server -d {} 8000\n\
                 and use http://HOST:8000/binary_cache as a substituter (trusted key {FIXTURE_KEY}).",
                dir.display()
            );
            ExitCode::SUCCESS
        }
        Ok(report) => {
            for c in &report.channels {
                if let Some(e) = &c.error {
                    eprintln!("error: {}: {e}", c.channel);
                }
            }
            for e in &report.errors {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
