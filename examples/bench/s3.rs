//! The S3 cases, on the `closure` data, against one Garage 2.5.0 node on 127.0.0.1 started by
//! the bench (sqlite metadata, data on the work directory's disk):
//!
//! - `s3-mirror`: `update-binary-cache --target s3://bench/run-N` straight into the bucket
//!   (verified locally, streamed up, narinfos after their NARs);
//! - `s3-rclone`: the two-step route an operator has without it: `update-binary-cache --outdir`
//!   to disk, then `rclone sync` of the cache directory to the bucket (`--transfers 32`,
//!   `--checkers 32`), one shell command timed as a whole; its peak RSS is the larger of the
//!   two programs';
//! - `s3-rerun`: `s3-mirror` again over its complete prefix: one listing, nothing uploaded.
//!
//! Each run writes to a fresh prefix, so no run finds another's objects. Garage is found as
//! the tests find it (`NIXIPFS_GARAGE`, `~/.cache/garage-2.5.0/bin/garage`, `PATH`); without
//! it, or without rclone, the cases are skipped with a message (a benchmark is not a test).

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{inv, measure, nixipfs_args, s, Bench, RELEASE_NAME};

/// The ids of the cases, in the order they run.
pub const CASES: [&str; 3] = ["s3-mirror", "s3-rclone", "s3-rerun"];

/// A running single-node Garage with a bucket and a key.
struct Garage {
    child: Child,
    bin: PathBuf,
    config: PathBuf,
    endpoint: String,
    key_id: String,
    secret: String,
}

impl Drop for Garage {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn garage_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NIXIPFS_GARAGE") {
        return Some(PathBuf::from(p));
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    let bin = cache.join("garage-2.5.0/bin/garage");
    if bin.exists() {
        return Some(bin);
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join("garage"))
        .find(|p| p.is_file())
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Garage {
    fn start(dir: &Path, bin: PathBuf) -> Result<Garage> {
        measure::remove(dir)?;
        fs::create_dir_all(dir)?;
        let (rpc, s3, web, admin) = (free_port()?, free_port()?, free_port()?, free_port()?);
        let secret = "6a1f".repeat(16);
        let config = dir.join("garage.toml");
        fs::write(
            &config,
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\n\
                 replication_factor = 1\nrpc_bind_addr = \"127.0.0.1:{rpc}\"\n\
                 rpc_public_addr = \"127.0.0.1:{rpc}\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{s3}\"\n\
                 root_domain = \".s3.garage.localhost\"\n[s3_web]\n\
                 bind_addr = \"127.0.0.1:{web}\"\nroot_domain = \".web.garage.localhost\"\n\
                 index = \"index.html\"\n[admin]\napi_bind_addr = \"127.0.0.1:{admin}\"\n\
                 admin_token = \"{secret}\"\n",
                d = dir.display()
            ),
        )?;
        let log = fs::File::create(dir.join("garage.log"))?;
        let child = Command::new(&bin)
            .arg("-c")
            .arg(&config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let mut g = Garage {
            child,
            bin,
            config,
            endpoint: format!("http://127.0.0.1:{s3}"),
            key_id: String::new(),
            secret: String::new(),
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", s3)).is_err() {
            if start.elapsed() > Duration::from_secs(60) {
                bail!(
                    "Garage did not start (see {})",
                    dir.join("garage.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let id = g.cli(&["node", "id", "-q"])?;
        let id = id.trim().split('@').next().unwrap_or("").to_string();
        g.cli(&["layout", "assign", "-z", "dc1", "-c", "100G", &id])?;
        g.cli(&["layout", "apply", "--version", "1"])?;
        g.cli(&["bucket", "create", "bench"])?;
        let key = g.cli(&["key", "create", "bench"])?;
        let field = |name: &str| {
            key.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == name).then(|| v.trim().to_string())
            })
        };
        g.key_id = field("Key ID").context("no key ID from garage key create")?;
        g.secret = field("Secret key").context("no secret from garage key create")?;
        g.cli(&[
            "bucket", "allow", "--read", "--write", "--owner", "bench", "--key", "bench",
        ])?;
        Ok(g)
    }

    /// `garage ARGS`, retried for up to 30 s while the node settles; its stdout.
    fn cli(&self, args: &[&str]) -> Result<String> {
        let start = Instant::now();
        loop {
            let out = Command::new(&self.bin)
                .arg("-c")
                .arg(&self.config)
                .args(args)
                .output()?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "garage {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    fn env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID".into(), self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY".into(), self.secret.clone()),
        ]
    }

    /// rclone's connection string for `bench/prefix`.
    fn rclone_remote(&self, prefix: &str) -> String {
        format!(
            ":s3,provider=Other,env_auth=false,access_key_id={},secret_access_key={},\
             endpoint='{}',region=garage,force_path_style=true:bench/{prefix}",
            self.key_id, self.secret, self.endpoint
        )
    }

    /// Objects and bytes under `bench/prefix`, by rclone.
    fn size(&self, prefix: &str) -> String {
        Command::new("rclone")
            .env_remove("AWS_CA_BUNDLE")
            .args(["size", "--json"])
            .arg(self.rclone_remote(prefix))
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .map(|v| {
                format!(
                    "{} objects, {:.0} MB",
                    v["count"],
                    v["bytes"].as_f64().unwrap_or(0.0) / 1e6
                )
            })
            .unwrap_or_else(|| "rclone size failed".into())
    }
}

/// The S3 cases on `ds` served at `base` (see the module documentation).
pub fn cases(
    b: &mut Bench,
    name: &str,
    base: &str,
    key: &str,
    store_paths: &Path,
    runs_dir: &Path,
) -> Result<()> {
    if !CASES.iter().any(|c| b.wanted(c)) {
        return Ok(());
    }
    let Some(bin) = garage_bin() else {
        eprintln!("  s3 cases skipped: no Garage (cargo install garage --locked --version 2.5.0)");
        return Ok(());
    };
    if Command::new("rclone").arg("version").output().is_err() {
        eprintln!("  s3 cases skipped: no rclone (apt-get install rclone)");
        return Ok(());
    }
    let garage = Garage::start(&b.work.join("garage"), bin)?;
    let nixipfs = b.nixipfs.clone();
    let release = runs_dir.join("s3-release").join(RELEASE_NAME);
    fs::create_dir_all(&release)?;
    fs::copy(store_paths, release.join("store-paths"))?;
    let upstream = vec![
        "--release".to_string(),
        s(&release),
        "--cache".into(),
        base.to_string(),
        "--trusted-public-key".into(),
        key.to_string(),
    ];
    let mut env = garage.env();
    // The scratch directory of the direct route on the same disk as the two-step one's mirror.
    let scratch = runs_dir.join("s3-tmp");
    fs::create_dir_all(&scratch)?;
    env.push(("TMPDIR".into(), s(&scratch)));

    let direct = |prefix: &str| {
        let mut a = upstream.clone();
        a.extend([
            "--target".into(),
            format!("s3://bench/{prefix}"),
            "--s3-endpoint".into(),
            garage.endpoint.clone(),
            "--s3-region".into(),
            "garage".into(),
        ]);
        nixipfs_args(b, "update-binary-cache", a)
    };
    let runs = b.args.runs;
    let direct_args: Vec<Vec<String>> = (0..runs).map(|r| direct(&format!("direct-{r}"))).collect();
    let rerun_args = direct(&format!("direct-{}", runs.saturating_sub(1)));
    let two_step = runs_dir.join("s3-two-step");
    let ubc = {
        let mut a = upstream.clone();
        a.extend(["--outdir".into(), s(&two_step)]);
        nixipfs_args(b, "update-binary-cache", a)
    };
    b.case(
        "s3-mirror",
        name,
        "nixipfs update-binary-cache --target s3://... (into Garage, verified, streamed)",
        runs,
        None,
        &mut |run| {
            let mut i = inv(&nixipfs, direct_args[run].clone());
            i.env = env.clone();
            Ok(i)
        },
        &mut || garage.size(&format!("direct-{}/binary_cache", runs - 1)),
    )?;
    b.case(
        "s3-rerun",
        name,
        "nixipfs update-binary-cache --target s3://..., no-change rerun",
        runs,
        None,
        &mut |_| {
            let mut i = inv(&nixipfs, rerun_args.clone());
            i.env = env.clone();
            Ok(i)
        },
        &mut || String::new(),
    )?;

    let last = std::cell::RefCell::new(String::new());
    b.case(
        "s3-rclone",
        name,
        "nixipfs update-binary-cache --outdir, then rclone sync to Garage",
        b.args.runs,
        None,
        &mut |run| {
            measure::remove(&two_step)?;
            let prefix = format!("rclone-{run}");
            *last.borrow_mut() = prefix.clone();
            let quoted = |v: &[String]| {
                v.iter()
                    .map(|x| format!("'{}'", x.replace('\'', "'\\''")))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let script = format!(
                "{} {} && env -u AWS_CA_BUNDLE rclone sync --transfers 32 --checkers 32 '{}' \"{}\"",
                s(&nixipfs),
                quoted(&ubc),
                s(two_step.join("binary_cache")),
                garage
                    .rclone_remote(&format!("{prefix}/binary_cache"))
                    .replace('"', "\\\"")
            );
            let mut i = inv("/bin/sh", vec!["-c".into(), script]);
            i.env = env.clone();
            Ok(i)
        },
        &mut || garage.size(&format!("{}/binary_cache", last.borrow())),
    )?;
    measure::remove(&two_step)?;
    Ok(())
}
