//! `--metrics-file`: the numbers of a run, in a file that a real Prometheus text parser reads
//! (`prometheus_client` of Python, as node_exporter's textfile collector would), written for a
//! failed run too.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::hydra::names::*;
use common::mirror::FixtureMirror;
use common::process::run_command;
use common::{
    assert_success, nix_cache, output_text, run_nixipfs, Compression, TestDir, TestServer,
};

/// `name{labels}` -> value, as the Prometheus client library parses `file`.
fn parse(file: &Path) -> HashMap<String, f64> {
    let script = r#"
import json, sys
try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.exit("the Prometheus parser is needed: python3 -m pip install prometheus-client (.ci/run installs it)")
out = {}
for family in text_string_to_metric_families(open(sys.argv[1]).read()):
    for s in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out[f"{s.name}{{{labels}}}"] = s.value
print(json.dumps(out))
"#;
    let out = run_command(
        Command::new("python3").args(["-c", script, file.to_str().unwrap()]),
        Duration::from_secs(30),
    );
    assert_success(&out);
    serde_json::from_slice(&out.stdout).expect("the parser's JSON")
}

#[test]
fn a_mirroring_run_writes_what_it_fetched_and_a_failed_run_says_so() {
    let cache = nix_cache(Compression::Xz);
    let server = TestServer::builder().static_dir(&cache.dir).start();
    let dir = TestDir::new("metrics");
    let release = dir.join("release");
    std::fs::create_dir_all(&release).unwrap();
    std::fs::write(release.join("store-paths"), cache.store_paths_text()).unwrap();
    let mirror = dir.join("mirror");
    let metrics = dir.join("nixipfs.prom");
    let run = |cache_url: &str| {
        run_nixipfs([
            "update-binary-cache",
            "--release",
            release.to_str().unwrap(),
            "--outdir",
            mirror.to_str().unwrap(),
            "--cache",
            cache_url,
            "--trusted-public-key",
            &cache.public_key,
            "--retries",
            "0",
            "--metrics-file",
            metrics.to_str().unwrap(),
        ])
    };
    let out = run(&server.url());
    assert_success(&out);
    let m = parse(&metrics);
    let cmd = r#"command="update-binary-cache""#;
    assert_eq!(m[&format!("nixipfs_run_success{{{cmd}}}")], 1.0, "{m:?}");
    assert!(m[&format!("nixipfs_run_duration_seconds{{{cmd}}}")] > 0.0);
    assert_eq!(m[&format!("nixipfs_failures{{{cmd}}}")], 0.0);
    // What it says it fetched is what is on disk.
    let mut nars = 0.0;
    let mut bytes = 0.0;
    for e in walkdir::WalkDir::new(mirror.join("binary_cache/nar")).min_depth(1) {
        let e = e.unwrap();
        if e.file_type().is_file() {
            nars += 1.0;
            bytes += e.metadata().unwrap().len() as f64;
        }
    }
    assert!(nars > 0.0);
    assert_eq!(m[&format!("nixipfs_nars_fetched{{{cmd}}}")], nars);
    assert_eq!(m[&format!("nixipfs_bytes_fetched{{{cmd}}}")], bytes);

    // Nothing listens there: the run fails, and the file says so.
    let dead = TestServer::builder().start();
    let dead_url = dead.url();
    drop(dead);
    std::fs::remove_dir_all(&mirror).unwrap();
    let out = run(&dead_url);
    assert!(!out.status.success(), "{}", output_text(&out));
    let m = parse(&metrics);
    assert_eq!(m[&format!("nixipfs_run_success{{{cmd}}}")], 0.0, "{m:?}");
}

#[test]
fn a_release_run_writes_each_channel_and_the_mirror_it_leaves() {
    let m = FixtureMirror::made("metrics-release");
    let metrics = m.dir.join("release.prom");
    let out = m.release_with(&["--metrics-file", metrics.to_str().unwrap()]);
    assert_success(&out);
    let g = parse(&metrics);
    assert_eq!(
        g[r#"nixipfs_run_success{command="release-nixos"}"#], 1.0,
        "{g:?}"
    );
    let state: serde_json::Value = serde_json::from_slice(
        &run_nixipfs(["status", "--dir", m.d().to_str().unwrap(), "--json"]).stdout,
    )
    .unwrap();
    assert_eq!(
        g["nixipfs_disk_bytes{}"],
        state["disk_bytes"].as_f64().unwrap()
    );
    for channel in [NIXOS_CHANNEL, NIXPKGS_CHANNEL] {
        let c = state["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == channel)
            .unwrap();
        let label = format!("{{channel=\"{channel}\"}}");
        assert_eq!(g[&format!("nixipfs_channel_success{label}")], 1.0);
        assert_eq!(
            g[&format!("nixipfs_channel_closure_bytes{label}")],
            c["closure_bytes"].as_f64().unwrap()
        );
        assert_eq!(
            g[&format!("nixipfs_channel_last_success_timestamp_seconds{label}")],
            c["last_success"].as_f64().unwrap()
        );
    }
}
