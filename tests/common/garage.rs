//! A real Garage cluster for tests (Garage 2.5.0, S3-compatible), on 127.0.0.1 with fresh
//! directories and free ports, killed when dropped.
//!
//! [`Garage::start`] starts `n` nodes (replication factor `n`: 1 or 3), connects them, assigns
//! each a zone and capacity, applies the layout, then creates a bucket, a key allowed to read
//! and write it, and opens the bucket to the website endpoint. The objects are read back with
//! `rclone` (an S3 client of its own) and over the website endpoint, never with nixipfs.
//!
//! The `garage` binary is `NIXIPFS_GARAGE`, else
//! `${XDG_CACHE_HOME:-$HOME/.cache}/garage-2.5.0/bin/garage` (where `.ci/run` installs it),
//! else `garage` on `PATH`; without one the start panics with the command that installs it.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::dirs::TestDir;
use super::ipfs_node::free_port;
use super::process::{output_text, run_with_timeout, without_proxies};

/// The command that installs Garage where the tests look for it.
pub const INSTALL_COMMAND: &str = "cargo install garage --locked --version 2.5.0 \
     --root \"${XDG_CACHE_HOME:-$HOME/.cache}/garage-2.5.0\"";

/// The region Garage's S3 API answers for.
pub const REGION: &str = "garage";

/// The `garage` binary (see the module documentation).
pub fn garage_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("NIXIPFS_GARAGE") {
        return PathBuf::from(p);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")));
    if let Some(bin) = cache
        .map(|c| c.join("garage-2.5.0/bin/garage"))
        .filter(|b| b.exists())
    {
        return bin;
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("garage").is_file() {
                return dir.join("garage");
            }
        }
    }
    panic!(
        "Garage is not installed (no NIXIPFS_GARAGE, no ~/.cache/garage-2.5.0/bin/garage, no \
         garage on PATH): run `{INSTALL_COMMAND}` (about 15 minutes), or .ci/run"
    );
}

/// `rclone`; panics with the command that installs it when missing.
pub fn rclone() -> &'static str {
    let found = Command::new("rclone")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        panic!("rclone is not installed: run `apt-get install rclone` (or .ci/run)");
    }
    "rclone"
}

struct Node {
    child: Option<Child>,
    config: PathBuf,
    s3_port: u16,
    web_port: u16,
    rpc_port: u16,
}

/// A running Garage cluster with one bucket (see the module documentation).
pub struct Garage {
    nodes: Vec<Node>,
    /// The node IDs.
    ids: Vec<String>,
    /// The bucket.
    pub bucket: String,
    /// The access key allowed on the bucket.
    pub key_id: String,
    /// Its secret.
    pub secret: String,
    dir: TestDir,
}

impl Garage {
    /// Starts a cluster of `nodes` nodes holding the bucket `bucket`.
    pub fn start(nodes: usize, bucket: &str) -> Garage {
        let bin = garage_bin();
        let dir = TestDir::new("garage");
        let secret: String = (0..64)
            .map(|i| char::from_digit(((i * 7 + std::process::id() as usize) % 16) as u32, 16))
            .map(Option::unwrap)
            .collect();
        let mut started = Vec::new();
        for i in 0..nodes {
            let (rpc_port, s3_port, web_port, admin_port) =
                (free_port(), free_port(), free_port(), free_port());
            let d = dir.join(format!("node{i}"));
            let config = dir.write(
                format!("node{i}.toml"),
                format!(
                    r#"metadata_dir = "{d}/meta"
data_dir = "{d}/data"
db_engine = "sqlite"
replication_factor = {nodes}
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{secret}"
[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"
[s3_web]
bind_addr = "127.0.0.1:{web_port}"
root_domain = ".web.garage.localhost"
index = "index.html"
[admin]
api_bind_addr = "127.0.0.1:{admin_port}"
admin_token = "{secret}"
"#,
                    d = d.display()
                ),
            );
            let child = spawn_node(&bin, &config, &dir.join(format!("node{i}.log")));
            started.push(Node {
                child: Some(child),
                config,
                s3_port,
                web_port,
                rpc_port,
            });
        }
        let mut g = Garage {
            nodes: started,
            ids: Vec::new(),
            bucket: bucket.to_string(),
            key_id: String::new(),
            secret: String::new(),
            dir,
        };
        for n in &g.nodes {
            wait_for_port(n.s3_port);
        }
        let ids: Vec<String> = (0..nodes)
            .map(|i| {
                let out = g.cli_on(i, &["node", "id", "-q"]);
                let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
                id.split('@').next().unwrap().to_string()
            })
            .collect();
        g.ids = ids.clone();
        g.connect();
        for (i, id) in ids.iter().enumerate() {
            let zone = format!("dc{}", i + 1);
            g.cli_retrying(&["layout", "assign", "-z", &zone, "-c", "1G", id]);
        }
        g.cli_retrying(&["layout", "apply", "--version", "1"]);
        g.cli_retrying(&["bucket", "create", bucket]);
        let key = g.cli_retrying(&["key", "create", "nixipfs-test"]);
        let text = String::from_utf8_lossy(&key.stdout).into_owned();
        g.key_id = field(&text, "Key ID").unwrap_or_else(|| panic!("no key ID in\n{text}"));
        g.secret = field(&text, "Secret key").unwrap_or_else(|| panic!("no secret in\n{text}"));
        g.cli_retrying(&[
            "bucket",
            "allow",
            "--read",
            "--write",
            "--owner",
            bucket,
            "--key",
            "nixipfs-test",
        ]);
        g.cli_retrying(&["bucket", "website", "--allow", bucket]);
        g
    }

    /// Runs `garage ARGS` against node `i`.
    pub fn cli_on(&self, i: usize, args: &[&str]) -> Output {
        let mut cmd = Command::new(garage_bin());
        cmd.arg("-c").arg(&self.nodes[i].config).args(args);
        without_proxies(&mut cmd);
        run_with_timeout(&mut cmd, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("garage {args:?}: {e}"))
    }

    /// Runs `garage ARGS` against the first live node until it succeeds (the cluster may
    /// still be settling), for at most 60 s.
    fn cli_retrying(&self, args: &[&str]) -> Output {
        let start = Instant::now();
        loop {
            let i = self.nodes.iter().position(|n| n.child.is_some()).unwrap();
            let out = self.cli_on(i, args);
            if out.status.success() {
                return out;
            }
            if start.elapsed() > Duration::from_secs(60) {
                panic!("garage {args:?} failed\n{}", output_text(&out));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The S3 API endpoint of node `i`.
    pub fn endpoint_of(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.nodes[i].s3_port)
    }

    /// The S3 API endpoint of the first node.
    pub fn endpoint(&self) -> String {
        self.endpoint_of(0)
    }

    /// The website endpoint of node `i` as `http://localhost:PORT` (the bucket must be named
    /// `localhost` to be served there).
    pub fn web_url_of(&self, i: usize) -> String {
        format!("http://localhost:{}", self.nodes[i].web_port)
    }

    /// The credentials, for a command's environment.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }

    /// `rclone` arguments naming `PREFIX` in the bucket, through node `i`.
    fn rclone_remote(&self, i: usize, prefix: &str) -> String {
        format!(
            ":s3,provider=Other,env_auth=false,access_key_id={},secret_access_key={},\
             endpoint='{}',region={REGION},force_path_style=true:{}/{}",
            self.key_id,
            self.secret,
            self.endpoint_of(i),
            self.bucket,
            prefix
        )
    }

    /// Every object under `prefix` (relative key → size), listed by rclone.
    pub fn list(&self, prefix: &str) -> BTreeMap<String, u64> {
        self.lsjson(prefix, &["--no-modtime"])
            .iter()
            .map(|v| {
                (
                    v["Path"].as_str().unwrap().to_string(),
                    v["Size"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// Every object under `prefix`: relative key → its size and modification time, listed by
    /// rclone.
    pub fn list_times(&self, prefix: &str) -> BTreeMap<String, String> {
        self.lsjson(prefix, &[])
            .iter()
            .map(|v| {
                (
                    v["Path"].as_str().unwrap().to_string(),
                    format!("{} {}", v["Size"], v["ModTime"]),
                )
            })
            .collect()
    }

    /// The objects under `prefix` as `rclone lsjson -R --files-only` (with `extra` flags)
    /// describes them.
    fn lsjson(&self, prefix: &str, extra: &[&str]) -> Vec<serde_json::Value> {
        let mut cmd = Command::new(rclone());
        // rclone cannot use a custom CA bundle with its HTTP transport; the endpoint is plain HTTP.
        cmd.env_remove("AWS_CA_BUNDLE");
        cmd.args(["lsjson", "-R", "--files-only"])
            .args(extra)
            .arg(self.rclone_remote(self.live_node(), prefix));
        without_proxies(&mut cmd);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(60)).unwrap();
        assert!(out.status.success(), "rclone lsjson\n{}", output_text(&out));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// The object `prefix/rel`, read by rclone; `None` when there is none.
    pub fn get(&self, prefix: &str, rel: &str) -> Option<Vec<u8>> {
        // `rclone cat` of a missing object prints nothing and succeeds.
        if !self.list(prefix).contains_key(rel) {
            return None;
        }
        let mut cmd = Command::new(rclone());
        // rclone cannot use a custom CA bundle with its HTTP transport; the endpoint is plain HTTP.
        cmd.env_remove("AWS_CA_BUNDLE");
        cmd.arg("cat").arg(format!(
            "{}/{rel}",
            self.rclone_remote(self.live_node(), prefix)
        ));
        without_proxies(&mut cmd);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(60)).unwrap();
        out.status.success().then_some(out.stdout)
    }

    /// Writes the object `prefix/rel` with rclone.
    pub fn put(&self, prefix: &str, rel: &str, bytes: &[u8]) {
        let file = self.dir.write("upload.tmp", bytes);
        let mut cmd = Command::new(rclone());
        // rclone cannot use a custom CA bundle with its HTTP transport; the endpoint is plain HTTP.
        cmd.env_remove("AWS_CA_BUNDLE");
        cmd.arg("copyto").arg(&file).arg(format!(
            "{}/{rel}",
            self.rclone_remote(self.live_node(), prefix)
        ));
        without_proxies(&mut cmd);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(60)).unwrap();
        assert!(out.status.success(), "rclone copyto\n{}", output_text(&out));
    }

    /// Copies the files under the local directory `dir` to `prefix/` (keys relative to `dir`)
    /// with one rclone run.
    pub fn put_dir(&self, prefix: &str, dir: &std::path::Path) {
        let mut cmd = Command::new(rclone());
        // rclone cannot use a custom CA bundle with its HTTP transport; the endpoint is plain HTTP.
        cmd.env_remove("AWS_CA_BUNDLE");
        cmd.arg("copy")
            .arg(dir)
            .arg(self.rclone_remote(self.live_node(), prefix));
        without_proxies(&mut cmd);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(300)).unwrap();
        assert!(out.status.success(), "rclone copy\n{}", output_text(&out));
    }

    /// Removes the object `prefix/rel` with rclone.
    pub fn delete(&self, prefix: &str, rel: &str) {
        let mut cmd = Command::new(rclone());
        // rclone cannot use a custom CA bundle with its HTTP transport; the endpoint is plain HTTP.
        cmd.env_remove("AWS_CA_BUNDLE");
        cmd.arg("deletefile").arg(format!(
            "{}/{rel}",
            self.rclone_remote(self.live_node(), prefix)
        ));
        without_proxies(&mut cmd);
        let out = run_with_timeout(&mut cmd, Duration::from_secs(60)).unwrap();
        assert!(
            out.status.success(),
            "rclone deletefile\n{}",
            output_text(&out)
        );
    }

    fn live_node(&self) -> usize {
        self.nodes
            .iter()
            .position(|n| n.child.is_some())
            .unwrap_or(0)
    }

    /// Kills node `i` (SIGKILL).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The pid of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.nodes[i].child.as_ref().map(|c| c.id())
    }

    /// Starts node `i` again, on its data, and waits until the bucket answers through it.
    pub fn restart(&mut self, i: usize) {
        if self.nodes[i].child.is_none() {
            let log = self.dir.join(format!("node{i}.log"));
            self.nodes[i].child = Some(spawn_node(&garage_bin(), &self.nodes[i].config, &log));
        }
        wait_for_port(self.nodes[i].s3_port);
    }

    /// Connects the first live node to every other live one.
    fn connect(&self) {
        let first = self.live_node();
        for (i, id) in self.ids.iter().enumerate() {
            if i != first && self.nodes[i].child.is_some() {
                let addr = format!("{id}@127.0.0.1:{}", self.nodes[i].rpc_port);
                self.cli_retrying(&["node", "connect", &addr]);
            }
        }
    }

    /// Connects the live nodes again (as an operator would after restarting them all) and
    /// waits until rclone can list the bucket through one (the cluster has its quorum again),
    /// for at most 120 s.
    pub fn wait_ready(&self) {
        self.connect();
        let start = Instant::now();
        loop {
            let mut cmd = Command::new(rclone());
            // rclone cannot use a custom CA bundle with its HTTP transport; the endpoint is plain HTTP.
            cmd.env_remove("AWS_CA_BUNDLE");
            cmd.args([
                "lsf",
                "--max-depth",
                "1",
                "--retries",
                "1",
                "--low-level-retries",
                "1",
            ])
            .args(["--contimeout", "5s", "--timeout", "10s"])
            .arg(self.rclone_remote(self.live_node(), ""));
            without_proxies(&mut cmd);
            let out = run_with_timeout(&mut cmd, Duration::from_secs(60)).unwrap();
            if out.status.success() {
                return;
            }
            if start.elapsed() > Duration::from_secs(120) {
                panic!("the bucket did not answer again\n{}", output_text(&out));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Sends SIGKILL to node `i` without waiting (usable while the cluster is shared with a
    /// running command); [`Garage::kill`] reaps it after.
    pub fn signal_kill(&self, i: usize) {
        if let Some(pid) = self.pid(i) {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }

    /// Kills every node.
    pub fn kill_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Starts `garage -c config server`, appending its output to `log`.
fn spawn_node(bin: &std::path::Path, config: &std::path::Path, log: &std::path::Path) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(config)
        .arg("server")
        .env("RUST_LOG", "garage=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    without_proxies(&mut cmd);
    cmd.spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", bin.display()))
}

/// The value after `name:` on a line of `garage key create`'s output.
fn field(text: &str, name: &str) -> Option<String> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

fn wait_for_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if start.elapsed() > Duration::from_secs(60) {
            panic!("Garage did not listen on 127.0.0.1:{port} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
