//! The `ipfs-hourly` case: a mirror published to one js-ipfs node every simulated hour, with
//! the mirror's and the node's garbage collection in between, as a mirror run from cron does.
//!
//! `hourly_mirror.py init` writes a mirror of `--hourly-paths` store paths whose NAR sizes
//! follow `--hourly-sizes`, and hour 0 publishes it to a fresh node (`jsipfs daemon
//! --offline`, under `nice`). Each of the `--hourly-hours` next hours, `hourly_mirror.py
//! hour` adds `--hourly-new` paths and a release whose view slides over the newest paths,
//! keeps `--hourly-keep` releases and collects the rest of the mirror; then
//! `create-nixipfs --ipfs-keep K --ipfs-gc --car FILE` publishes it.
//!
//! Per hour, it records: the bytes the mirror publishes (each real file once), the bytes of
//! the blocks of the DAGs the node must keep (the union of the last K DAGs, each block once,
//! from the CAR files), the node's `RepoSize` and `NumObjects` (`repo/stat`), the blocks sent
//! and the blocks of this DAG that the previous one lacked, the wall and CPU time of nixipfs
//! (`/usr/bin/time`), and the time of each call nixipfs made to the node (its debug lines
//! under `nixipfs::ipfs::calls`). The table is printed and written to
//! `WORK/ipfs-hourly-keepK.md` (and the rows so far to `WORK/ipfs-hourly-keepK.partial.md`
//! after each hour). It runs only when `--cases` names it, before any other case and without
//! the other cases' data.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::ipfs::{jsipfs, post, IpfsNode};
use crate::{measure, s};

/// The sizes and length of the run.
#[derive(Debug, Clone)]
pub struct HourlyOptions {
    /// Simulated hours after the first publication.
    pub hours: usize,
    /// Store paths of the mirror (and of each release's view).
    pub paths: usize,
    /// Store paths added each hour.
    pub new: usize,
    /// `--ipfs-keep` and the releases the mirror keeps.
    pub keep: usize,
    /// The NAR size distribution (`hourly_mirror.py`'s SIZES).
    pub sizes: String,
}

/// The node calls whose time gets a column of its own, in the order of an hour.
const CALLS: [&str; 7] = [
    "dag/import",
    "pin/add",
    "files/cp",
    "files/rm",
    "pin/rm",
    "repo/gc",
    "pin/ls",
];

/// One publication.
struct Hour {
    mirror_bytes: u64,
    kept_dag_bytes: u64,
    dag_blocks: usize,
    new_blocks: usize,
    sent: Option<u64>,
    repo_size: Option<u64>,
    repo_objects: Option<u64>,
    wall: f64,
    user: f64,
    system: f64,
    rss_kib: u64,
    calls: BTreeMap<String, (usize, f64)>,
    ok: bool,
}

/// The blocks of a CARv1 file, keyed by multihash as blockstores are, with their lengths.
fn car_blocks(path: &Path) -> Result<HashMap<Vec<u8>, u64>> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut reader = nixipfs::ipfs::car::CarReader::new(std::io::BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut blocks = HashMap::new();
    while let Some((cid, block)) = reader
        .next_block()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let key = nixipfs::ipfs::client::block_key(&cid);
        blocks.insert(key.digest().to_vec(), block.len() as u64);
    }
    Ok(blocks)
}

/// `RepoSize` and `NumObjects` of the node's `repo/stat`.
fn repo_stat(port: u16) -> (Option<u64>, Option<u64>) {
    let Some((200, body)) = post(port, "repo/stat") else {
        return (None, None);
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(body.trim()) else {
        return (None, None);
    };
    let num = |key: &str| {
        v[key]
            .as_u64()
            .or_else(|| v[key].as_str().and_then(|t| t.parse().ok()))
    };
    (num("RepoSize"), num("NumObjects"))
}

/// The last word of the last line `hourly_mirror.py` printed: the mirror's published bytes.
fn run_generator(args: &[String]) -> Result<u64> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/bench/hourly_mirror.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
        .context("running hourly_mirror.py")?;
    if !out.status.success() {
        bail!(
            "hourly_mirror.py {} failed ({})",
            args.join(" "),
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .last()
        .and_then(|w| w.parse().ok())
        .with_context(|| format!("hourly_mirror.py printed {text:?}"))
}

/// Runs `create-nixipfs` once, under `/usr/bin/time`, with the call times logged.
fn publish(
    nixipfs: &Path,
    dir: &Path,
    port: u16,
    keep: usize,
    car: &Path,
    log: &Path,
) -> Result<Hour> {
    let times = log.with_extension("time");
    let err = log.with_extension("err");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%e %U %S %M")
        .arg("-o")
        .arg(&times)
        .arg(nixipfs)
        .args(["--progress", "none", "create-nixipfs", "--dir"])
        .arg(dir)
        .args(["--ipfsapi", &format!("127.0.0.1:{port}"), "--no-ipns"])
        .args(["--ipfs-keep", &keep.to_string(), "--ipfs-gc", "--car"])
        .arg(car)
        .env(
            "NIXIPFS_LOG",
            format!(
                "nixipfs=info,{}=debug",
                nixipfs::ipfs::client::CALL_TIMES_TARGET
            ),
        )
        .stdin(Stdio::null())
        .stdout(fs::File::create(log.with_extension("out"))?)
        .stderr(fs::File::create(&err)?);
    measure::without_proxies(&mut cmd);
    let status = cmd.status().context("running create-nixipfs")?;
    let timed = fs::read_to_string(&times).unwrap_or_default();
    let fields: Vec<f64> = timed
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let field = |i: usize| fields.get(i).copied().unwrap_or(f64::NAN);
    let text = fs::read_to_string(&err).unwrap_or_default();
    let mut calls: BTreeMap<String, (usize, f64)> = BTreeMap::new();
    let mut sent = None;
    for line in text.lines() {
        if let Some(rest) = line.split_once("IPFS call ").map(|x| x.1) {
            if let Some((command, secs)) = rest.split_once(": ") {
                let secs: f64 = secs
                    .split_whitespace()
                    .next()
                    .and_then(|w| w.parse().ok())
                    .unwrap_or(0.0);
                let entry = calls.entry(command.to_string()).or_default();
                entry.0 += 1;
                entry.1 += secs;
            }
        }
        if let Some(n) = line
            .split_once("create-nixipfs: ")
            .and_then(|(_, rest)| crate::ipfs::blocks_sent(rest))
        {
            sent = Some(n);
        }
    }
    Ok(Hour {
        mirror_bytes: 0,
        kept_dag_bytes: 0,
        dag_blocks: 0,
        new_blocks: 0,
        sent,
        repo_size: None,
        repo_objects: None,
        wall: field(0),
        user: field(1),
        system: field(2),
        rss_kib: fields.get(3).map_or(0, |&k| k as u64),
        calls,
        ok: status.success(),
    })
}

fn percent(part: Option<u64>, whole: u64) -> String {
    match part {
        Some(p) if whole > 0 => format!("{:+.1} %", (p as f64 / whole as f64 - 1.0) * 100.0),
        _ => "?".into(),
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("?".into(), |v| v.to_string())
}

/// The markdown table of the hours so far.
fn table(hours: &[Hour]) -> String {
    let mut out = String::from(
        "| hour | mirror bytes | kept DAGs' block bytes | RepoSize (vs mirror) | NumObjects | blocks sent | new in DAG / DAG blocks | nixipfs wall s | user + sys s | RSS MiB |",
    );
    for c in CALLS {
        let _ = write!(out, " `{c}` s |");
    }
    out.push_str(" other calls s |\n|");
    for _ in 0..10 + CALLS.len() + 1 {
        out.push_str("---|");
    }
    out.push('\n');
    for (h, r) in hours.iter().enumerate() {
        let _ = write!(
            out,
            "| {h}{} | {} | {} ({}) | {} ({}) | {} | {} | {} / {} | {:.1} | {:.2} + {:.2} | {:.1} |",
            if r.ok { "" } else { " FAILED" },
            r.mirror_bytes,
            r.kept_dag_bytes,
            percent(Some(r.kept_dag_bytes), r.mirror_bytes),
            opt(r.repo_size),
            percent(r.repo_size, r.mirror_bytes),
            opt(r.repo_objects),
            opt(r.sent),
            r.new_blocks,
            r.dag_blocks,
            r.wall,
            r.user,
            r.system,
            r.rss_kib as f64 / 1024.0
        );
        for c in CALLS {
            match r.calls.get(c) {
                Some((_, secs)) => {
                    let _ = write!(out, " {secs:.2} |");
                }
                None => out.push_str(" – |"),
            }
        }
        let other: f64 = r
            .calls
            .iter()
            .filter(|(c, _)| !CALLS.contains(&c.as_str()))
            .map(|(_, (_, secs))| secs)
            .sum();
        let _ = writeln!(out, " {other:.2} |");
    }
    out
}

/// Runs the case; returns the report (also written to `WORK/ipfs-hourly-keepK.md`).
pub fn run(
    work: &Path,
    nixipfs: &Path,
    jsipfs_arg: Option<&Path>,
    opts: &HourlyOptions,
) -> Result<String> {
    if opts.keep == 0 {
        bail!("--hourly-keep must be at least 1");
    }
    let jsipfs = jsipfs(jsipfs_arg);
    if !jsipfs.exists() {
        bail!(
            "{} is missing (cd tests/ipfs-node && npm ci, or pass --jsipfs)",
            jsipfs.display()
        );
    }
    let base = work.join(format!("ipfs-hourly-keep{}", opts.keep));
    measure::remove(&base)?;
    let dir = base.join("mirror");
    let cars = base.join("cars");
    let logs = base.join("logs");
    fs::create_dir_all(&cars)?;
    fs::create_dir_all(&logs)?;
    let start_load = measure::loadavg();
    let started = Instant::now();
    eprintln!("  (untimed) writing the hourly mirror in {}", dir.display());
    let first_bytes = run_generator(&[
        "init".into(),
        s(&dir),
        opts.paths.to_string(),
        opts.sizes.clone(),
    ])?;
    let node = IpfsNode::start_niced(&jsipfs, &base.join("node"), &work.join("trash"), 10)?;
    let port = node.port();
    let mut hours: Vec<Hour> = Vec::new();
    let mut kept: VecDeque<HashMap<Vec<u8>, u64>> = VecDeque::new();
    let mut previous: Option<HashMap<Vec<u8>, u64>> = None;
    for h in 0..=opts.hours {
        let mirror_bytes = if h == 0 {
            first_bytes
        } else {
            run_generator(&[
                "hour".into(),
                s(&dir),
                h.to_string(),
                opts.new.to_string(),
                opts.keep.to_string(),
                opts.sizes.clone(),
            ])?
        };
        let car: PathBuf = cars.join(format!("hour-{h}.car"));
        let mut hour = publish(
            nixipfs,
            &dir,
            port,
            opts.keep,
            &car,
            &logs.join(format!("hour-{h}.log")),
        )?;
        hour.mirror_bytes = mirror_bytes;
        let (size, objects) = repo_stat(port);
        hour.repo_size = size;
        hour.repo_objects = objects;
        if hour.ok {
            let blocks = car_blocks(&car)?;
            let _ = fs::remove_file(&car);
            hour.dag_blocks = blocks.len();
            hour.new_blocks = match &previous {
                Some(p) => blocks.keys().filter(|k| !p.contains_key(*k)).count(),
                None => blocks.len(),
            };
            kept.push_back(blocks.clone());
            while kept.len() > opts.keep {
                kept.pop_front();
            }
            previous = Some(blocks);
        }
        let mut union: HashMap<&[u8], u64> = HashMap::new();
        for dag in &kept {
            for (k, len) in dag {
                union.insert(k.as_slice(), *len);
            }
        }
        hour.kept_dag_bytes = union.values().sum();
        let node_secs: f64 = hour.calls.values().map(|(_, secs)| secs).sum();
        eprintln!(
            "  ipfs-hourly keep {} hour {h}: mirror {} B, RepoSize {} ({}), sent {}, nixipfs {:.1} s ({:.2} s CPU), node calls {:.1} s{}",
            opts.keep,
            hour.mirror_bytes,
            opt(hour.repo_size),
            percent(hour.repo_size, hour.mirror_bytes),
            opt(hour.sent),
            hour.wall,
            hour.user + hour.system,
            node_secs,
            if hour.ok { "" } else { "  FAILED" }
        );
        let failed = !hour.ok;
        hours.push(hour);
        // The table so far, in case the run is stopped.
        let partial = work.join(format!("ipfs-hourly-keep{}.partial.md", opts.keep));
        let _ = fs::write(&partial, table(&hours));
        if failed {
            eprintln!(
                "    see {}:\n{}",
                logs.join(format!("hour-{h}.err")).display(),
                measure::tail(&logs.join(format!("hour-{h}.err")), 8)
            );
            break;
        }
    }
    let node_rss = node.peak_rss_mib();
    drop(node);
    let end_load = measure::loadavg();
    let mut report = String::new();
    let _ = writeln!(
        report,
        "`ipfs-hourly`, --ipfs-keep {}: {} paths ({}), {} new paths an hour, {} hours after the first publication; \
         {:.0} s in all; load average before {:.2} {:.2} {:.2}, after {:.2} {:.2} {:.2}; node peak RSS {}\n",
        opts.keep,
        opts.paths,
        opts.sizes,
        opts.new,
        opts.hours,
        started.elapsed().as_secs_f64(),
        start_load.0,
        start_load.1,
        start_load.2,
        end_load.0,
        end_load.1,
        end_load.2,
        node_rss.map_or("unknown".into(), |m| format!("{m:.0} MiB")),
    );
    report.push_str(&table(&hours));
    let file = work.join(format!("ipfs-hourly-keep{}.md", opts.keep));
    fs::write(&file, &report).with_context(|| format!("writing {}", file.display()))?;
    eprintln!("written to {}", file.display());
    Ok(report)
}
