//! A complete mirror run on one machine, with no internet: a local Hydra and a local binary
//! cache on 127.0.0.1 serve the fixture data in `tests/fixtures/` (a NixOS 17.09 evaluation, its
//! channel tarball and ISO, and a binary cache made and signed by real Nix), and the `nixipfs`
//! binary mirrors it into a directory, computes its IPFS CIDs into a CAR file (no IPFS node
//! needed), and shows what the mirror holds.
//!
//! ```text
//! cargo build --release && cargo run --release --example demo -- [MIRROR_DIR]
//!     # the whole pipeline (default: ./demo-mirror), with target/release/nixipfs
//! cargo run --example demo -- --serve
//!     # only serve Hydra on :8081 and the cache on :8082, for
//!     # `nixipfs release-nixos --config examples/nixos_release.local.json ...` by hand
//! ```

#[path = "../tests/common/server.rs"]
#[allow(dead_code)]
mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use server::TestServer;

const FIXTURE_KEY: &str = "nixipfs-fixture-1:5Ub9Kt9Do89gtXlhSQzzyiOhS72CMY40E2eEItZUFWo=";

/// Where the mirror is served from in the instructions the demo prints; releases record it as
/// their `binary-cache-url`.
const SERVE_URL: &str = "http://localhost:8000";

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

/// The `nixipfs` binary built beside this example (`target/PROFILE/nixipfs`).
fn nixipfs() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the demo itself: {e}"))?;
    // target/PROFILE/examples/demo -> target/PROFILE/nixipfs
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("nixipfs"))
        .ok_or("cannot find the target directory")?;
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} does not exist: build it first with `cargo build --release` \
             (or `cargo build` for a debug demo)",
            bin.display()
        ))
    }
}

/// Runs `nixipfs ARGS`, its output going to the terminal; false when it failed.
fn run(bin: &Path, args: &[&str]) -> bool {
    println!("\n$ nixipfs {}", args.join(" "));
    match Command::new(bin).args(args).status() {
        Ok(status) => status.success(),
        Err(e) => {
            eprintln!("error: cannot run {}: {e}", bin.display());
            false
        }
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
    let bin = match nixipfs() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let dir = PathBuf::from(args.first().map(String::as_str).unwrap_or("demo-mirror"));
    let hydra = start("hydra", 0);
    let cache = start("binary_cache", 0);
    let config_text = format!(
        r#"{{
  "hydra": "{}",
  "cache": "{}",
  "target_cache": "{SERVE_URL}/binary_cache",
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
    let config_file = dir.with_extension("json");
    if let Err(e) = std::fs::write(&config_file, &config_text) {
        eprintln!("error: cannot write {}: {e}", config_file.display());
        return ExitCode::FAILURE;
    }
    let d = dir.display().to_string();
    let tmp = dir.with_extension("tmp").display().to_string();
    let car = dir.with_extension("car").display().to_string();
    let steps: [Vec<&str>; 4] = [
        vec![
            "release-nixos",
            "--dir",
            &d,
            "--tmpdir",
            &tmp,
            "--config",
            config_file.to_str().unwrap_or_default(),
            "--gc",
            "--no-ipfs",
        ],
        vec![
            "verify",
            "--dir",
            &d,
            "--full",
            "--trusted-public-key",
            FIXTURE_KEY,
        ],
        vec!["create-nixipfs", "--dir", &d, "--no-node", "--car", &car],
        vec!["status", "--dir", &d],
    ];
    for step in &steps {
        if !run(&bin, step) {
            eprintln!("error: `nixipfs {}` failed", step.join(" "));
            return ExitCode::FAILURE;
        }
    }
    println!("\nThe mirror is in {d}:");
    for entry in walkdir::WalkDir::new(&dir).sort_by_file_name().min_depth(1) {
        let Ok(entry) = entry else { continue };
        let rel = entry.path().strip_prefix(&dir).unwrap_or(entry.path());
        match std::fs::read_link(entry.path()) {
            Ok(t) => println!("  {} -> {}", rel.display(), t.display()),
            Err(_) => println!("  {}", rel.display()),
        }
    }
    println!(
        "\nServe it with any static web server that follows symlinks, e.g.\n  \
         python3 -m http.server -d {d} 8000\n\
         then open {SERVE_URL}/ (the front page, index.html) and use {SERVE_URL}/binary_cache \
         as a substituter (trusted key {FIXTURE_KEY}).\n\
         Its IPFS DAG is in {car}: `ipfs dag import {car}` on a node publishes it."
    );
    ExitCode::SUCCESS
}
