//! The IPFS publishing cases, run on the benchmark world's mirror (the one the `rerun` cases
//! build) against js-ipfs 0.66.1 from `tests/ipfs-node`, each node offline on 127.0.0.1 with a
//! fresh repository:
//!
//! - `ipfs-hash`: `create-nixipfs --no-node --car FILE`, every CID computed here and the DAG
//!   written as a CAR file, no node;
//! - `ipfs-import`: the node's own import of that CAR (`dag/import`, roots pinned), by curl;
//! - `ipfs-publish`: `create-nixipfs --ipfsapi 127.0.0.1 PORT` from nothing (caches removed)
//!   against a fresh node: import, pin, MFS copy, verification and IPNS;
//! - `ipfs-rerun`: the same command again against the same node, nothing changed;
//! - `ipfs-seed`: `seed_ipfs.py`, a stand-in for the original scripts (one `add` and one
//!   `files/cp` per file, sequential), against a fresh node;
//! - `ipfs-hash-v0`, `ipfs-hash-legacy`: `ipfs-hash` in the profiles `unixfs-v0-2015` and
//!   `legacy-raw-v0` (`ipfs-hash` uses the default, `unixfs-v1-2025`);
//! - `ipfs-scale-hash`, `ipfs-scale-rerun`: a mirror of [`SCALE_PATHS`] store paths written by
//!   `scale_mirror.py`, hashed from nothing with a CAR file, then again with nothing changed.
//!
//! A node is started (untimed) before each run that needs a fresh one, and timing starts once
//! it answers `version`. Peak RSS in the table is that of the timed client; the node's own
//! peak (`VmHWM` of the daemon) is given in the result check. A node is killed when its
//! [`IpfsNode`] is dropped, and also when the benchmark process goes away. Each node runs with
//! [`READ_CAP`] preloaded, which bounds its concurrent block reads (see there why).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{inv, measure, s, Bench, Invocation};

/// The ids of the cases, in the order they run.
pub const CASES: [&str; 9] = [
    "ipfs-hash",
    "ipfs-hash-v0",
    "ipfs-hash-legacy",
    "ipfs-import",
    "ipfs-publish",
    "ipfs-rerun",
    "ipfs-seed",
    "ipfs-scale-hash",
    "ipfs-scale-rerun",
];

/// Store paths of the scale cases' mirror (two files each: 234,000 files, about 700 MB).
pub const SCALE_PATHS: usize = 117_000;

/// How long a node may take to answer after its start.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// Whole-file reads the node may have under way at once (see [`READ_CAP`]).
pub const MAX_READS: usize = 4096;

/// A script preloaded into the node (`node --require`) that caps the whole-file reads under
/// way at once. js-ipfs reads each block with `fs.promises.readFile`, and its recursive pin
/// (`fetchCompleteDag`, also behind `dag/import` with pinned roots) starts a read for every
/// link of every node at once, without bound: on the benchmark mirror (the same 12,000-entry
/// directories twice, in `binary_cache/` and in the release's view) that opens more than the
/// 20,000 files this machine allows a process, and `pin/add` fails with EMFILE in most runs.
/// The hard limit cannot be raised here; with the cap the node pins reliably, and no slower.
const READ_CAP: &str = r#"// Caps the fs.promises.readFile calls under way at once (see examples/bench/ipfs.rs).
const fs = require('fs');
const max = Number(process.env.BENCH_MAX_READS) || 4096;
const readFile = fs.promises.readFile;
let active = 0;
const waiting = [];
function acquire () {
  if (active < max) { active++; return Promise.resolve(); }
  return new Promise((resolve) => waiting.push(resolve));
}
function release () {
  const next = waiting.shift();
  if (next) { next(); } else { active--; }
}
fs.promises.readFile = async function (...args) {
  await acquire();
  try { return await readFile.apply(this, args); } finally { release(); }
};
"#;

/// The `jsipfs` command: `explicit`, or the one installed in `tests/ipfs-node`.
pub fn jsipfs(explicit: Option<&Path>) -> PathBuf {
    explicit.map(Path::to_path_buf).unwrap_or_else(|| {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ipfs-node/node_modules/.bin/jsipfs")
    })
}

/// `js-ipfs VERSION (Node.js VERSION)` of the installed node, from its package.json.
pub fn js_ipfs_version(explicit: Option<&Path>) -> String {
    let bin = jsipfs(explicit);
    let package = fs::canonicalize(&bin)
        .ok()
        .and_then(|p| {
            p.ancestors()
                .map(|a| a.join("package.json"))
                .find(|f| f.is_file())
        })
        .and_then(|f| fs::read_to_string(f).ok())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_string));
    let node = Command::new("node")
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    match package {
        Some(v) => format!("js-ipfs {v} (Node.js {node})"),
        None => "js-ipfs not installed".into(),
    }
}

/// A running js-ipfs daemon with a fresh repository under `dir`.
pub struct IpfsNode {
    child: Child,
    stdin: Option<ChildStdin>,
    port: u16,
    dir: PathBuf,
    trash: PathBuf,
    daemon_pid: Option<u32>,
}

fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// POSTs to `/api/v0/<command>` and returns the status and body, `None` when nothing answers.
pub fn post(port: u16, command: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "POST /api/v0/{command} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map_or("", |x| x.1);
    Some((status, body.to_string()))
}

impl IpfsNode {
    /// Initialises a repository in `dir` (removed first) and starts the daemon on a free
    /// port; returns once it answers. `trash` receives the repository when the node stops.
    pub fn start(jsipfs: &Path, dir: &Path, trash: &Path) -> Result<IpfsNode> {
        IpfsNode::start_niced(jsipfs, dir, trash, 0)
    }

    /// [`IpfsNode::start`], the daemon running under `nice -n NICENESS` (0: not niced).
    pub fn start_niced(jsipfs: &Path, dir: &Path, trash: &Path, niceness: u32) -> Result<IpfsNode> {
        measure::remove(dir)?;
        fs::create_dir_all(dir)?;
        let port = free_port()?;
        let repo = dir.join("repo");
        let init = dir.join("init.json");
        fs::write(
            &init,
            format!(
                r#"{{"Addresses":{{"API":"/ip4/127.0.0.1/tcp/{port}","Gateway":"","RPC":"","Swarm":[]}},
"Bootstrap":[],"Discovery":{{"MDNS":{{"Enabled":false}},"webRTCStar":{{"Enabled":false}}}}}}"#
            ),
        )?;
        let mut cmd = Command::new(jsipfs);
        cmd.args(["init", "--profile", "test", "--emptyRepo"])
            .arg(&init)
            .env("IPFS_PATH", &repo)
            .env("NO_UPDATE_NOTIFIER", "1")
            .stdin(Stdio::null());
        measure::without_proxies(&mut cmd);
        let out = cmd
            .output()
            .with_context(|| format!("running {} init", jsipfs.display()))?;
        if !out.status.success() {
            bail!(
                "jsipfs init failed:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The shell runs the daemon until its own standard input (a pipe from this process)
        // closes: when the node is dropped, or when this process ends in any way.
        let script = r#""$JSIPFS" daemon --offline </dev/null >"$LOG" 2>&1 &
daemon=$!
echo "$daemon" >"$PIDFILE"
read _ignored
kill "$daemon" 2>/dev/null
(sleep 10; kill -9 "$daemon" 2>/dev/null) &
killer=$!
wait "$daemon" 2>/dev/null
kill "$killer" 2>/dev/null
exit 0"#;
        let pid_file = dir.join("daemon.pid");
        let cap = dir.join("read-cap.cjs");
        fs::write(&cap, READ_CAP)?;
        let mut cmd = Command::new("nice");
        cmd.arg("-n")
            .arg(niceness.to_string())
            .arg("sh")
            .arg("-c")
            .arg(script)
            .env("JSIPFS", jsipfs)
            .env("LOG", dir.join("daemon.log"))
            .env("PIDFILE", &pid_file)
            .env("IPFS_PATH", &repo)
            .env("NO_UPDATE_NOTIFIER", "1")
            .env("NODE_OPTIONS", format!("--require {}", cap.display()))
            .env("BENCH_MAX_READS", MAX_READS.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        measure::without_proxies(&mut cmd);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd.spawn().context("starting the js-ipfs daemon")?;
        let stdin = child.stdin.take();
        let mut node = IpfsNode {
            child,
            stdin,
            port,
            dir: dir.to_path_buf(),
            trash: trash.to_path_buf(),
            daemon_pid: None,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some((200, body)) = post(port, "version") {
                if body.contains("Version") {
                    break;
                }
            }
            if let Some(status) = node.child.try_wait()? {
                bail!(
                    "the js-ipfs daemon exited ({status}) before it answered:\n{}",
                    node.log_tail()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the js-ipfs daemon did not answer within {START_TIMEOUT:?}:\n{}",
                    node.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        node.daemon_pid = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse().ok());
        Ok(node)
    }

    /// The API port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The daemon's peak resident set size so far, MiB (`VmHWM`).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = fs::read_to_string(format!("/proc/{}/status", self.daemon_pid?)).ok()?;
        let kib: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    fn log_tail(&self) -> String {
        measure::tail(&self.dir.join("daemon.log"), 20)
    }
}

impl Drop for IpfsNode {
    fn drop(&mut self) {
        // Closing stdin makes the shell stop the daemon (TERM, then KILL after 10 s).
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut gone = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !gone {
            let _ = Command::new("kill")
                .args(["-KILL", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = measure::discard(&self.dir, &self.trash);
    }
}

/// Removes what makes a publication of `dir` not start from nothing: `ipfs_hashes`,
/// `ipfs_root`, each release's `ipfs_hash` and any `.nixipfs-tmp-*` file.
pub fn remove_caches(dir: &Path) -> Result<()> {
    for entry in walkdir::WalkDir::new(dir) {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy();
        let top = entry.depth() == 1;
        if (top && (name == "ipfs_hashes" || name == "ipfs_root"))
            || name == "ipfs_hash"
            || name.starts_with(".nixipfs-tmp-")
        {
            if entry.file_type().is_dir() {
                measure::remove(entry.path())?;
            } else {
                fs::remove_file(entry.path())
                    .with_context(|| format!("removing {}", entry.path().display()))?;
            }
        }
    }
    Ok(())
}

/// Files and bytes that a publication of `dir` hashes: the regular files of `binary_cache/`
/// and of the release directories (the releases' views link to the former), without the
/// `lastsync` stamps, hidden files and `ipfs_hash`. (Narinfos are counted as on disk, without
/// the `IPFSHash` line that publishing adds.)
fn published_size(dir: &Path) -> (u64, u64) {
    let mut files = 0;
    let mut bytes = 0;
    for sub in ["binary_cache", "releases"] {
        for e in walkdir::WalkDir::new(dir.join(sub))
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| {
                let name = e.file_name().to_string_lossy();
                e.file_type().is_file()
                    && name != "ipfs_hash"
                    && name != "lastsync"
                    && !name.starts_with('.')
            })
        {
            files += 1;
            bytes += e.metadata().map_or(0, |m| m.len());
        }
    }
    (files, bytes)
}

/// The narinfos (and their NARs) that `seed_ipfs.py --limit N` publishes, the same choice
/// made the same way (`limit` 0: all). Returns (narinfos, files, bytes) of the global cache.
fn seed_subset(dir: &Path, limit: usize) -> Result<(usize, u64, u64)> {
    let cache = dir.join("binary_cache");
    let mut names: Vec<String> = fs::read_dir(&cache)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".narinfo"))
        .collect();
    names.sort();
    let all = names.len();
    if limit > 0 && limit < all {
        let step = all as f64 / limit as f64;
        names = (0..limit)
            .map(|i| names[(i as f64 * step) as usize].clone())
            .collect();
    }
    let mut bytes = 0;
    let mut files = 0;
    for n in &names {
        let text = fs::read_to_string(cache.join(n))?;
        bytes += text.len() as u64;
        files += 1;
        if let Some(url) = text.lines().find_map(|l| l.strip_prefix("URL: ")) {
            bytes += fs::metadata(cache.join(url.trim())).map_or(0, |m| m.len());
            files += 1;
        }
    }
    Ok((names.len(), files, bytes))
}

/// The root CID that a `create-nixipfs` run printed (`nixfs: /ipfs/CID`).
fn printed_root(out: &Path) -> Option<String> {
    fs::read_to_string(out).ok()?.lines().find_map(|l| {
        l.strip_prefix("nixfs: /ipfs/")
            .map(|c| c.trim().to_string())
    })
}

/// The summary line `create-nixipfs` logged (`N files: ...`).
fn logged_summary(err: &Path) -> Option<String> {
    fs::read_to_string(err).ok()?.lines().rev().find_map(|l| {
        l.split_once("create-nixipfs: ")
            .map(|(_, rest)| rest.trim().to_string())
    })
}

/// The number of blocks a summary says were sent (`sent N blocks`).
pub fn blocks_sent(summary: &str) -> Option<u64> {
    summary
        .split_once("sent ")?
        .1
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// File CIDs from nixipfs's cache file (`f ... CID ... KEY` lines), by key.
fn cached_cids(cache_file: &Path) -> HashMap<String, String> {
    let text = fs::read_to_string(cache_file).unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("f "))
        .filter_map(|l| {
            let fields: Vec<&str> = l.split(' ').collect();
            Some((fields.last()?.to_string(), fields.get(7)?.to_string()))
        })
        .collect()
}

/// How many `KEY CID` lines of the seed's listing agree with `cids`, and how many lines.
fn compare_listing(listing: &Path, cids: &HashMap<String, String>) -> (usize, usize) {
    let text = fs::read_to_string(listing).unwrap_or_default();
    let mut same = 0;
    let mut all = 0;
    for line in text.lines() {
        if let Some((key, cid)) = line.split_once(' ') {
            all += 1;
            if cids.get(key).is_some_and(|c| c == cid) {
                same += 1;
            }
        }
    }
    (same, all)
}

/// Whether a `dag/import` answer names `root` as its root, pinned without error.
fn import_pinned(answer: &str, root: &str) -> bool {
    answer
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| {
            let r = &v["Root"];
            r["Cid"]["/"].as_str() == Some(root)
                && r["PinErrorMsg"].as_str().unwrap_or("").is_empty()
        })
}

/// Single-core SHA-256 speed of this machine, MB/s, over 64 MiB in memory.
pub fn sha256_mbps() -> f64 {
    let data: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let start = Instant::now();
    let mut sink = 0u8;
    for chunk in data.chunks(256 << 10) {
        sink ^= nixipfs::hash::sha256(chunk).to_hex().as_bytes()[0];
    }
    let secs = start.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    data.len() as f64 / 1e6 / secs
}

fn nixipfs_publish(nixipfs: &Path, dir: &Path, port: u16) -> Invocation {
    inv(
        nixipfs,
        vec![
            "--progress".into(),
            "none".into(),
            "create-nixipfs".into(),
            "--dir".into(),
            s(dir),
            "--ipfsapi".into(),
            "127.0.0.1".into(),
            port.to_string(),
        ],
    )
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / 1048576.0
}

fn node_rss(node: &RefCell<Option<IpfsNode>>) -> String {
    node.borrow()
        .as_ref()
        .and_then(IpfsNode::peak_rss_mib)
        .map_or("node peak RSS unknown".into(), |m| {
            format!("node peak RSS {m:.0} MiB (not in the RSS column)")
        })
}

/// Extra facts for the report: the bytes published and the seed's extrapolation.
#[derive(Default)]
pub struct IpfsFacts {
    /// Files and bytes hashed by a publication.
    pub published: (u64, u64),
    /// Narinfos of the global cache, and how many the seed published.
    pub seed_narinfos: (usize, usize),
    /// Single-core SHA-256 speed, MB/s.
    pub sha256_mbps: f64,
}

/// Runs the IPFS cases on the mirror `kept`; outputs (the CAR file) go to `out`.
pub fn cases(b: &mut Bench, name: &str, kept: &Path, out: &Path) -> Result<()> {
    if !CASES.iter().any(|c| b.wanted(c)) {
        return Ok(());
    }
    let jsipfs = jsipfs(b.args.jsipfs.as_deref());
    if !jsipfs.exists() {
        eprintln!(
            "warning: {} is missing (cd tests/ipfs-node && npm ci): the ipfs cases are not run",
            jsipfs.display()
        );
        return Ok(());
    }
    let ds = format!("{name} mirror");
    let nixipfs = b.nixipfs.clone();
    let log_dir = b.log_dir.clone();
    let nodes_dir = b.work.join("ipfs-nodes");
    let trash = b.work.join("trash");
    fs::create_dir_all(out)?;
    let car = out.join("mirror.car");
    remove_caches(kept)?;
    let (files, bytes) = published_size(kept);
    b.ipfs.published = (files, bytes);
    b.ipfs.sha256_mbps = sha256_mbps();
    let what_size = format!("{files} files, {:.1} MiB", mib(bytes));
    let serial = Cell::new(0usize);
    let start_node = |label: &str| -> Result<IpfsNode> {
        let n = serial.get();
        serial.set(n + 1);
        IpfsNode::start(&jsipfs, &nodes_dir.join(format!("{label}-{n}")), &trash)
    };

    // 1. Local hashing and the CAR file, no node.
    let hash_root: RefCell<Option<String>> = RefCell::new(None);
    let run_no = Cell::new(0usize);
    let hash_args = vec![
        "--progress".to_string(),
        "none".into(),
        "create-nixipfs".into(),
        "--dir".into(),
        s(kept),
        "--no-node".into(),
        "--car".into(),
        s(&car),
    ];
    // Writes the CAR file untimed; false (with the reason printed) when that failed.
    let make_car = |b: &Bench| -> Result<bool> {
        remove_caches(kept)?;
        let _ = fs::remove_file(&car);
        let log = b.log_dir.join("ipfs-car.log");
        let sample = measure::run(&nixipfs, &hash_args, &[], &log, None)?;
        if !sample.ok {
            eprintln!(
                "  writing the CAR file failed, ipfs-import is not run:\n{}",
                measure::tail(&log.with_extension("err"), 8)
            );
            return Ok(false);
        }
        *hash_root.borrow_mut() = printed_root(&log.with_extension("out"));
        Ok(true)
    };
    b.case(
        "ipfs-hash",
        &ds,
        &format!(
            "nixipfs create-nixipfs --no-node --car FILE: every CID computed locally, DAG written as a CAR ({what_size}; caches removed before each run)"
        ),
        b.args.runs,
        Some(bytes),
        &mut |run| {
            run_no.set(run);
            remove_caches(kept)?;
            let _ = fs::remove_file(&car);
            Ok(inv(&nixipfs, hash_args.clone()))
        },
        &mut || {
            let log = log_dir.join(format!("ipfs-hash-{}.log", run_no.get()));
            let root = printed_root(&log.with_extension("out"));
            *hash_root.borrow_mut() = root.clone();
            format!(
                "root {}; CAR {:.1} MiB; {}",
                root.as_deref().unwrap_or("MISSING"),
                mib(fs::metadata(&car).map_or(0, |m| m.len())),
                logged_summary(&log.with_extension("err"))
                    .map_or(String::new(), |s| s.split(';').next().unwrap_or("").into())
            )
        },
    )?;
    // The CIDs of every file, as computed here, for the seed's check.
    let local_cids = cached_cids(&kept.join("ipfs_hashes"));

    // 2. The node's own import of the CAR.
    let have_car = if car.is_file() && hash_root.borrow().is_some() {
        true
    } else if b.wanted("ipfs-import") {
        eprintln!("  (untimed) writing the CAR file for ipfs-import");
        make_car(b)?
    } else {
        false
    };
    if b.wanted("ipfs-import") && have_car {
        let node: RefCell<Option<IpfsNode>> = RefCell::new(None);
        let answer = out.join("import-answer.json");
        let car_mib = mib(fs::metadata(&car).map_or(0, |m| m.len()));
        b.case(
            "ipfs-import",
            &ds,
            &format!(
                "js-ipfs dag/import of that CAR ({car_mib:.0} MiB; roots pinned), sent by curl; fresh node per run, node start not timed"
            ),
            b.args.runs,
            Some(bytes),
            &mut |_| {
                node.borrow_mut().take();
                let n = start_node("import")?;
                let url = format!(
                    "http://127.0.0.1:{}/api/v0/dag/import?pin-roots=true",
                    n.port()
                );
                *node.borrow_mut() = Some(n);
                let mut i = inv(
                    "/usr/bin/curl",
                    vec![
                        "-sS".into(),
                        "--fail".into(),
                        "--max-time".into(),
                        "3600".into(),
                        "-H".into(),
                        "Expect:".into(),
                        "-F".into(),
                        format!("file=@{};type=application/octet-stream", car.display()),
                        url,
                    ],
                );
                i.stdout = Some(answer.clone());
                Ok(i)
            },
            &mut || {
                let text = fs::read_to_string(&answer).unwrap_or_default();
                let want = hash_root.borrow().clone().unwrap_or_default();
                let ok = import_pinned(&text, &want);
                format!(
                    "{}; {}",
                    if ok {
                        "root imported and pinned".to_string()
                    } else {
                        format!("UNEXPECTED answer: {}", text.trim())
                    },
                    node_rss(&node)
                )
            },
        )?;
        node.borrow_mut().take();
    }

    // 3. The real command, from nothing, against a fresh node; 4. its no-change rerun.
    let node: RefCell<Option<IpfsNode>> = RefCell::new(None);
    let publish_root: RefCell<Option<String>> = RefCell::new(None);
    let root_check = |root: Option<String>| -> String {
        match (root, hash_root.borrow().as_ref()) {
            (None, _) => "no root printed".into(),
            (Some(r), Some(h)) if &r == h => "root = ipfs-hash's".into(),
            (Some(r), Some(_)) => format!("root {r} DIFFERS from ipfs-hash's"),
            (Some(r), None) => format!("root {r}"),
        }
    };
    b.case(
        "ipfs-publish",
        &ds,
        "nixipfs create-nixipfs --ipfsapi 127.0.0.1 PORT from nothing (caches removed), fresh node per run: \
         hashing + dag/import + pin + files/cp + files/stat checks + IPNS; node start not timed",
        b.args.runs,
        Some(bytes),
        &mut |run| {
            run_no.set(run);
            node.borrow_mut().take();
            remove_caches(kept)?;
            let n = start_node("publish")?;
            let i = nixipfs_publish(&nixipfs, kept, n.port());
            *node.borrow_mut() = Some(n);
            Ok(i)
        },
        &mut || {
            let log = log_dir.join(format!("ipfs-publish-{}.log", run_no.get()));
            let root = printed_root(&log.with_extension("out"));
            *publish_root.borrow_mut() = root.clone();
            let summary = logged_summary(&log.with_extension("err")).unwrap_or_default();
            format!(
                "{}; {}; {}",
                root_check(root),
                summary.split_once("; ").map_or("", |x| x.1),
                node_rss(&node)
            )
        },
    )?;
    let mut published = node.borrow().is_some() && publish_root.borrow().is_some();
    if b.wanted("ipfs-rerun") && !published {
        eprintln!("  (untimed) publishing once for ipfs-rerun");
        node.borrow_mut().take();
        remove_caches(kept)?;
        let n = start_node("publish")?;
        let i = nixipfs_publish(&nixipfs, kept, n.port());
        *node.borrow_mut() = Some(n);
        let log = b.log_dir.join("ipfs-first-publish.log");
        let sample = measure::run(&i.program, &i.args, &[], &log, None)?;
        published = sample.ok;
        if !sample.ok {
            eprintln!(
                "  the first publication failed, ipfs-rerun is not run:\n{}",
                measure::tail(&log.with_extension("err"), 8)
            );
        }
    }
    if b.wanted("ipfs-rerun") && published {
        let port = node.borrow().as_ref().map(IpfsNode::port).unwrap_or(0);
        let sent = RefCell::new(Vec::new());
        b.case(
            "ipfs-rerun",
            &ds,
            "nixipfs create-nixipfs, no-change rerun against the same node (caches kept)",
            b.args.runs,
            None,
            &mut |run| {
                run_no.set(run);
                Ok(nixipfs_publish(&nixipfs, kept, port))
            },
            &mut || {
                let log = log_dir.join(format!("ipfs-rerun-{}.log", run_no.get()));
                let summary = logged_summary(&log.with_extension("err")).unwrap_or_default();
                sent.borrow_mut()
                    .push(blocks_sent(&summary).map_or("?".to_string(), |n| n.to_string()));
                format!(
                    "{}; blocks sent per run: {}; {}",
                    root_check(printed_root(&log.with_extension("out"))),
                    sent.borrow().join(", "),
                    summary.split_once("; ").map_or("", |x| x.0)
                )
            },
        )?;
    }
    node.borrow_mut().take();

    // 5. The original scripts' approach (a stand-in), against a fresh node.
    if b.wanted("ipfs-seed") {
        let script = b.work.join("seed_ipfs.py");
        fs::write(&script, include_str!("seed_ipfs.py"))?;
        let limit = b.args.seed_limit;
        let (chosen, seed_files, seed_bytes) = seed_subset(kept, limit)?;
        let (all, _, _) = seed_subset(kept, 0)?;
        b.ipfs.seed_narinfos = (all, chosen);
        let listing = out.join("seed-listing.txt");
        let stdout = out.join("seed-out.txt");
        let subset = chosen < all;
        let mut what = String::from(
            "STAND-IN for the original create_nixipfs.py: Python, sequential like it, one kept-alive connection; \
             one add (pin=false, raw-leaves) and one files/cp per file of binary_cache/ (narinfos with an IPFSHash line), \
             one files/cp per file of the release's view, files/flush per directory, files/stat, pin/add, name/publish; \
             files/cp with flush=true, as js-ipfs hangs on flush=false; fresh node per run, node start not timed",
        );
        if subset {
            let _ = write!(
                what,
                "; SUBSET: {chosen} of {all} narinfos and their NARs ({seed_files} files, {:.1} MiB), \
                 see the targets for the extrapolation",
                mib(seed_bytes)
            );
        } else {
            let _ = write!(what, " ({what_size})");
        }
        b.case(
            "ipfs-seed",
            &ds,
            &what,
            b.args.slow_runs,
            Some(if subset { seed_bytes } else { bytes }),
            &mut |_| {
                node.borrow_mut().take();
                let n = start_node("seed")?;
                let mut a = vec![
                    "python3".to_string(),
                    s(&script),
                    "127.0.0.1".into(),
                    n.port().to_string(),
                    s(kept),
                    "--listing".into(),
                    s(&listing),
                ];
                if subset {
                    a.push("--limit".into());
                    a.push(limit.to_string());
                }
                *node.borrow_mut() = Some(n);
                let _ = fs::remove_file(&listing);
                let mut i = inv("/usr/bin/env", a);
                i.stdout = Some(stdout.clone());
                Ok(i)
            },
            &mut || {
                let text = fs::read_to_string(&stdout).unwrap_or_default();
                let (same, n) = compare_listing(&listing, &local_cids);
                let mut c = text.trim().to_string();
                if local_cids.is_empty() {
                    let _ = write!(c, "; file CIDs not compared (ipfs-hash not run)");
                } else {
                    let _ = write!(c, "; {same} of {n} file CIDs equal nixipfs's");
                }
                let _ = write!(c, "; {}", node_rss(&node));
                c
            },
        )?;
        node.borrow_mut().take();
    }
    remove_caches(kept)?;
    let _ = fs::remove_file(&car);

    // 6. The same hashing in the other profiles.
    for (id, profile) in [
        ("ipfs-hash-v0", "unixfs-v0-2015"),
        ("ipfs-hash-legacy", "legacy-raw-v0"),
    ] {
        let mut args = hash_args.clone();
        args.extend(["--cid-profile".to_string(), profile.to_string()]);
        let log_dir = b.log_dir.clone();
        let run_no = Cell::new(0usize);
        b.case(
            id,
            &ds,
            &format!("the same as `ipfs-hash` with --cid-profile {profile} ({what_size})"),
            b.args.runs,
            Some(bytes),
            &mut |run| {
                run_no.set(run);
                remove_caches(kept)?;
                let _ = fs::remove_file(&car);
                Ok(inv(&nixipfs, args.clone()))
            },
            &mut || {
                let log = log_dir.join(format!("{id}-{}.log", run_no.get()));
                format!(
                    "root {}; CAR {:.1} MiB",
                    printed_root(&log.with_extension("out"))
                        .as_deref()
                        .unwrap_or("MISSING"),
                    mib(fs::metadata(&car).map_or(0, |m| m.len()))
                )
            },
        )?;
    }
    remove_caches(kept)?;
    let _ = fs::remove_file(&car);
    scale_cases(b, out)
}

/// The scale cases: a mirror of [`SCALE_PATHS`] store paths written by `scale_mirror.py`
/// (untimed), published with `--no-node --car` from nothing (`ipfs-scale-hash`); then
/// published to a node (untimed) and again with nothing changed (`ipfs-scale-rerun`, caches
/// kept: what an hourly run does when nothing changed).
fn scale_cases(b: &mut Bench, out: &Path) -> Result<()> {
    if !b.wanted("ipfs-scale-hash") && !b.wanted("ipfs-scale-rerun") {
        return Ok(());
    }
    let dir = b.work.join("ipfs-scale");
    let made = dir.join(".made");
    if !made.exists() {
        let _ = measure::remove(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bench/scale_mirror.py");
        eprintln!("  (untimed) writing the scale mirror in {}", dir.display());
        let status = Command::new("python3")
            .arg(&script)
            .arg(&dir)
            .arg(SCALE_PATHS.to_string())
            .status()
            .context("running scale_mirror.py")?;
        if !status.success() {
            bail!("scale_mirror.py failed ({status})");
        }
        fs::write(&made, "")?;
    }
    let (files, bytes) = published_size(&dir);
    let ds = "scale mirror".to_string();
    let car = out.join("scale.car");
    let nixipfs = b.nixipfs.clone();
    let log_dir = b.log_dir.clone();
    let base = |car: Option<&Path>| {
        let mut a = vec![
            "--progress".to_string(),
            "none".into(),
            "create-nixipfs".into(),
            "--dir".into(),
            s(&dir),
            "--no-node".into(),
        ];
        if let Some(car) = car {
            a.extend(["--car".to_string(), s(car)]);
        }
        a
    };
    let check = |id: &str, run: usize| {
        let log = log_dir.join(format!("{id}-{run}.log"));
        format!(
            "root {}; {}",
            printed_root(&log.with_extension("out"))
                .as_deref()
                .unwrap_or("MISSING"),
            logged_summary(&log.with_extension("err")).map_or(String::new(), |s| s
                .split(';')
                .next()
                .unwrap_or("")
                .into())
        )
    };
    let run_no = Cell::new(0usize);
    b.case(
        "ipfs-scale-hash",
        &ds,
        &format!(
            "nixipfs create-nixipfs --no-node --car FILE from nothing (caches removed) on {SCALE_PATHS} store paths ({files} files, {:.1} MiB; the release's view links to them)",
            mib(bytes)
        ),
        b.args.runs,
        Some(bytes),
        &mut |run| {
            run_no.set(run);
            remove_caches(&dir)?;
            let _ = fs::remove_file(&car);
            Ok(inv(&nixipfs, base(Some(&car))))
        },
        &mut || check("ipfs-scale-hash", run_no.get()),
    )?;
    let _ = fs::remove_file(&car);
    if b.wanted("ipfs-scale-rerun") {
        // One node for the rerun, given the mirror untimed by a first publication.
        let jsipfs = jsipfs(b.args.jsipfs.as_deref());
        let node = IpfsNode::start(
            &jsipfs,
            &b.work.join("ipfs-nodes/scale"),
            &b.work.join("trash"),
        )?;
        remove_caches(&dir)?;
        eprintln!("  (untimed) publishing the scale mirror to the node");
        let first = nixipfs_publish(&nixipfs, &dir, node.port());
        let log = b.log_dir.join("ipfs-scale-first.log");
        let sample = measure::run(&first.program, &first.args, &[], &log, None)?;
        if !sample.ok {
            bail!(
                "the first publication of the scale mirror failed:\n{}",
                measure::tail(&log.with_extension("err"), 8)
            );
        }
        eprintln!("  (untimed) first publication: {:.1} s", sample.wall);
        let port = node.port();
        b.case(
            "ipfs-scale-rerun",
            &ds,
            "nixipfs create-nixipfs --ipfsapi 127.0.0.1 PORT again, nothing changed, against the node it published to (caches kept)",
            b.args.runs,
            None,
            &mut |run| {
                run_no.set(run);
                Ok(nixipfs_publish(&nixipfs, &dir, port))
            },
            &mut || check("ipfs-scale-rerun", run_no.get()),
        )?;
        drop(node);
    }
    Ok(())
}

/// The line of the report that describes the IPFS setup, when an ipfs case ran.
pub fn setup_line(rows: &[crate::Row]) -> Option<String> {
    rows.iter().any(|r| r.id.starts_with("ipfs-")).then(|| {
        format!(
            "- `closure mirror`: the mirror the rerun cases keep (binary_cache/, the release with its \
             view of the cache, the channel), published by the ipfs cases to js-ipfs nodes on 127.0.0.1 \
             (`jsipfs daemon --offline`, test profile, fresh repository per node, on the same disk), \
             each started before its run and timed only once it answers; peak RSS is that of the client, \
             the node's is in the result check; the nodes run with at most {MAX_READS} block reads at once \
             (a preloaded script: js-ipfs's recursive pin opens every block at once and fails with EMFILE \
             at this machine's limit of 20,000 open files)"
        )
    })
}

/// The IPFS lines of the targets, in the form of [`crate::targets`].
pub fn targets(rows: &[crate::Row], facts: &IpfsFacts) -> String {
    let get = |id: &str| rows.iter().find(|r| r.id == id && r.failed() == 0);
    let mut out = String::new();
    let mut line =
        |name: &str, verdict: Option<(bool, String)>| crate::target_line(&mut out, name, verdict);
    let hash = get("ipfs-hash");
    let import = get("ipfs-import");
    let publish = get("ipfs-publish");
    line(
        "IPFS publishing within 2x hashing + node import",
        hash.zip(import).zip(publish).map(|((h, i), p)| {
            let bound = 2.0 * h.median() + i.median();
            (
                p.median() <= bound,
                format!(
                    "`ipfs-publish` {:.2} s vs 2 x {:.2} s (`ipfs-hash`) + {:.2} s (`ipfs-import`) = {bound:.2} s: {:.2}x the bound",
                    p.median(),
                    h.median(),
                    i.median(),
                    p.median() / bound
                ),
            )
        }),
    );
    line(
        "no-change IPFS rerun sends no block",
        get("ipfs-rerun").map(|r| {
            let counts = r
                .check
                .split_once("blocks sent per run: ")
                .map(|x| x.1.split(';').next().unwrap_or("").to_string())
                .unwrap_or_default();
            let zero = !counts.is_empty() && counts.split(", ").all(|n| n.trim() == "0");
            (
                zero,
                format!("blocks sent per run: {counts}; {:.2} s", r.median()),
            )
        }),
    );
    let seed = get("ipfs-seed");
    let (all, chosen) = facts.seed_narinfos;
    line(
        "`ipfs-publish` faster than the original's approach (`ipfs-seed`, a stand-in)",
        publish.zip(seed).map(|(p, s)| {
            let scale = if chosen > 0 && chosen < all {
                all as f64 / chosen as f64
            } else {
                1.0
            };
            let seed_full = s.median() * scale;
            let mut text = String::new();
            if scale > 1.0 {
                let _ = write!(
                    text,
                    "`ipfs-seed` ran on {chosen} of {all} narinfos (and their NARs) in {:.1} s, \
                     EXTRAPOLATED linearly to {seed_full:.0} s for the whole mirror (a lower bound: \
                     js-ipfs's files/cp gets slower as the directory grows); ",
                    s.median()
                );
            } else {
                let _ = write!(text, "`ipfs-seed` {seed_full:.1} s; ");
            }
            let _ = write!(
                text,
                "`ipfs-publish` {:.2} s: {:.1}x faster",
                p.median(),
                seed_full / p.median()
            );
            (p.median() < seed_full, text)
        }),
    );
    if let Some(h) = hash {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let _ = writeln!(
            out,
            "- local CID computation (`ipfs-hash`, no node, CAR file written): {:.0} MB/s over {:.1} MiB \
             in {} files; for scale, SHA-256 alone runs at {:.0} MB/s on one core here ({cores} cores)",
            h.mbps().unwrap_or(0.0),
            mib(facts.published.1),
            facts.published.0,
            facts.sha256_mbps
        );
    }
    out
}
