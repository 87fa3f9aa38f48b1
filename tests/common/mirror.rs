//! A mirror of the fixture's two channels, made by the built binary's `release-nixos --no-ipfs`
//! from the fake Hydra and the Nix-made binary cache, for tests that look at a finished mirror.

use std::path::PathBuf;
use std::process::Output;

use serde_json::{json, Value};

use super::hydra::names::*;
use super::hydra::{release_data, FakeHydra};
use super::{assert_success, run_nixipfs, TestDir, TestServer};

/// The mirror, its servers (kept running) and its config.
pub struct FixtureMirror {
    _hydra: TestServer,
    _cache: TestServer,
    /// The test's directory: the mirror is `mirror/`, its temp dir `tmp/`.
    pub dir: TestDir,
    /// The config file.
    pub config: PathBuf,
    /// The key the cache's narinfos are signed by.
    pub key: String,
}

impl FixtureMirror {
    /// Makes the mirror (the run must succeed).
    pub fn made(label: &str) -> FixtureMirror {
        let data = release_data();
        let hydra = FakeHydra::standard(data).start();
        let cache = TestServer::builder().static_dir(&data.cache).start();
        let dir = TestDir::new(label);
        let releases: Vec<Value> = [
            (NIXOS_CHANNEL, NIXOS_PROJECT, NIXOS_JOBSET, NIXOS_JOB),
            (
                NIXPKGS_CHANNEL,
                NIXPKGS_PROJECT,
                NIXPKGS_JOBSET,
                NIXPKGS_JOB,
            ),
        ]
        .iter()
        .map(|(c, p, s, j)| json!({"channel": c, "project": p, "jobset": s, "job": j}))
        .collect();
        let config = json!({
            "hydra": hydra.url(),
            "cache": cache.url(),
            "max_threads": 4,
            "trusted_public_keys": [data.public_key],
            "releases": releases,
        });
        let config = dir.write(
            "nixos_release.json",
            serde_json::to_string_pretty(&config).unwrap(),
        );
        let m = FixtureMirror {
            _hydra: hydra,
            _cache: cache,
            dir,
            config,
            key: data.public_key.clone(),
        };
        assert_success(&m.release());
        m
    }

    /// The mirror directory.
    pub fn d(&self) -> PathBuf {
        self.dir.join("mirror")
    }

    /// Runs `release-nixos --no-ipfs` on the mirror again.
    pub fn release(&self) -> Output {
        self.release_with(&[])
    }

    /// Runs `release-nixos --no-ipfs EXTRA...` on the mirror again.
    pub fn release_with(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "release-nixos".to_string(),
            "--dir".into(),
            self.d().display().to_string(),
            "--tmpdir".into(),
            self.dir.join("tmp").display().to_string(),
            "--config".into(),
            self.config.display().to_string(),
            "--no-ipfs".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        run_nixipfs(args)
    }
}
