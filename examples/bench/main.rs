//! Benchmark: nixipfs against `nix copy`, a Python stand-in for the original scripts, and the
//! raw-download floor (`curl --parallel`), in one run on one machine, against nginx on 127.0.0.1;
//! then publishing the mirror to IPFS (a js-ipfs node on 127.0.0.1, see `ipfs.rs`).
//!
//! ```text
//! cargo build --release && cargo run --release --example bench -- [--small] [--big-nar-gib 2]
//! ```
//!
//! It generates deterministic, valid binary caches (real NARs, hashes, signatures and a DAG of
//! references; see `dataset.rs`), serves them with nginx over HTTP/1.1, runs each
//! case several times, and prints a table of median wall time, peak RSS and the ratio to the
//! floor; the table is written into BENCHMARKS.md between markers (with `--small`, or for a
//! partial run with `--cases` or `--skip`, into the work directory). A benchmark never fails because of a result: it exits non-zero only when it could
//! not run at all. `--help` lists the options.

mod dataset;
mod ipfs;
mod ipfs_hourly;
mod measure;
mod s3;
mod server;
mod tarballs;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{bail, Context, Result};
use clap::Parser;

use dataset::{BandwidthParams, ClosureParams, Dataset};
use measure::{median, Sample};
use server::Nginx;

#[derive(Parser, Debug)]
#[command(
    name = "bench",
    about = "nixipfs against nix copy, a Python stand-in and curl"
)]
struct Args {
    /// Small sizes for a quick run (2,000 narinfos, 1,200-path closure, 4 x 100 MiB bandwidth).
    #[arg(long)]
    small: bool,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where data, mirrors and logs go (default: TARGET/bench, next to the build).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// The nixipfs binary (default: the one next to this example's executable).
    #[arg(long)]
    nixipfs: Option<PathBuf>,
    /// Where the clients write their output (default: WORK/runs). Outputs there are deleted
    /// right after each run: meant for a tmpfs such as /dev/shm, to take the disk and file
    /// system out of the measurement.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Runs of each fast case.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Runs of the slow cases (`nix copy`, the Python stand-in).
    #[arg(long, default_value_t = 1)]
    slow_runs: usize,
    /// Also mirror one single-file NAR of this many GiB (0: off).
    #[arg(long, default_value_t = 0)]
    big_nar_gib: usize,
    /// Only these cases (comma-separated ids, see the table's first column).
    #[arg(long, value_delimiter = ',')]
    cases: Vec<String>,
    /// Skip these cases (comma-separated ids).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Where to write the results (default: BENCHMARKS.md in the source tree; with --small,
    /// BENCHMARKS-small.md in the work directory; with --cases or --skip, a partial run,
    /// BENCHMARKS-partial.md in the work directory, so that it never replaces a full run's
    /// table).
    #[arg(long)]
    output: Option<PathBuf>,
    /// Only serve the data for this many seconds (for profiling by hand), then stop.
    #[arg(long, value_name = "SECS")]
    serve: Option<u64>,
    /// A note printed with the results.
    #[arg(long)]
    note: Option<String>,
    /// `--concurrent` for nixipfs (default: its own default).
    #[arg(long)]
    concurrent: Option<usize>,
    /// Narinfos in the closure dataset.
    #[arg(long)]
    narinfos: Option<usize>,
    /// Roots (the release's store-paths).
    #[arg(long)]
    roots: Option<usize>,
    /// Paths reachable from the roots.
    #[arg(long)]
    closure: Option<usize>,
    /// Large NARs in the closure.
    #[arg(long)]
    big: Option<usize>,
    /// Size of each large NAR in the closure, MiB (before compression).
    #[arg(long)]
    big_mib: Option<usize>,
    /// The js-ipfs command of the ipfs cases (default: tests/ipfs-node/node_modules/.bin/jsipfs).
    #[arg(long)]
    jsipfs: Option<PathBuf>,
    /// `ipfs-seed` publishes only this many narinfos (and their NARs), a deterministic subset
    /// (evenly spaced in name order), and its time for the whole mirror is extrapolated
    /// linearly (0: the whole mirror; at full size that takes about an hour against js-ipfs).
    #[arg(long, default_value_t = 3000)]
    seed_limit: usize,
    /// NARs in the bandwidth dataset (0: no bandwidth case).
    #[arg(long)]
    bw_count: Option<usize>,
    /// Size of each bandwidth NAR, MiB.
    #[arg(long)]
    bw_mib: Option<usize>,
    /// `ipfs-hourly`: simulated hours after the first publication.
    #[arg(long, default_value_t = 30)]
    hourly_hours: usize,
    /// `ipfs-hourly`: store paths of the mirror and of each release's view.
    #[arg(long, default_value_t = 300)]
    hourly_paths: usize,
    /// `ipfs-hourly`: store paths added each hour.
    #[arg(long, default_value_t = 10)]
    hourly_new: usize,
    /// `ipfs-hourly`: `--ipfs-keep` and the releases the mirror keeps (comma-separated: one
    /// run each).
    #[arg(long, value_delimiter = ',', default_value = "3")]
    hourly_keep: Vec<usize>,
    /// `ipfs-hourly`: the NAR size distribution (see examples/bench/hourly_mirror.py).
    #[arg(long, default_value = "lognormal:40960:2.0:200:67108864")]
    hourly_sizes: String,
}

/// One row of the table.
struct Row {
    id: String,
    dataset: String,
    what: String,
    samples: Vec<Sample>,
    check: String,
    /// Bytes the case moves, for MB/s.
    bytes: Option<u64>,
    /// Whether this row is the floor of its dataset.
    floor: bool,
    nixipfs: bool,
}

impl Row {
    fn ok_walls(&self) -> Vec<f64> {
        self.samples
            .iter()
            .filter(|s| s.ok)
            .map(|s| s.wall)
            .collect()
    }
    fn median(&self) -> f64 {
        median(&self.ok_walls())
    }
    fn failed(&self) -> usize {
        self.samples.iter().filter(|s| !s.ok).count()
    }
    fn rss_mib(&self) -> f64 {
        self.samples.iter().map(|s| s.rss_kib).max().unwrap_or(0) as f64 / 1024.0
    }
    fn mbps(&self) -> Option<f64> {
        let m = self.median();
        self.bytes
            .filter(|_| m.is_finite() && m > 0.0)
            .map(|b| b as f64 / 1e6 / m)
    }
}

struct Bench {
    args: Args,
    work: PathBuf,
    /// Where outputs go, and whether they are deleted at once (`--out-dir`).
    out: PathBuf,
    remove_now: bool,
    nixipfs: PathBuf,
    nginx: Nginx,
    rows: Vec<Row>,
    log_dir: PathBuf,
    /// Facts of the ipfs cases for the targets.
    ipfs: ipfs::IpfsFacts,
}

impl Bench {
    fn wanted(&self, id: &str) -> bool {
        (self.args.cases.is_empty() || self.args.cases.iter().any(|c| c == id))
            && !self.args.skip.iter().any(|c| c == id)
    }

    /// Runs a case `runs` times: `prepare(run)` (untimed) gives the program, arguments,
    /// environment and an optional stdout file; `check(run)` (untimed) describes the result.
    #[allow(clippy::too_many_arguments)]
    fn case(
        &mut self,
        id: &str,
        ds: &str,
        what: &str,
        runs: usize,
        bytes: Option<u64>,
        prepare: &mut dyn FnMut(usize) -> Result<Invocation>,
        check: &mut dyn FnMut() -> String,
    ) -> Result<()> {
        if !self.wanted(id) {
            return Ok(());
        }
        let mut samples = Vec::new();
        let mut check_text = String::new();
        for run in 0..runs {
            let inv = prepare(run)?;
            let log = self.log_dir.join(format!("{id}-{run}.log"));
            let s = measure::run(
                &inv.program,
                &inv.args,
                &inv.env,
                &log,
                inv.stdout.as_deref(),
            )?;
            eprintln!(
                "  {id:<16} run {}/{runs}: {:>8.2} s  {:>7.1} MiB  load {:.2}{}",
                run + 1,
                s.wall,
                s.rss_kib as f64 / 1024.0,
                s.load,
                if s.ok { "" } else { "  FAILED" }
            );
            if !s.ok {
                eprintln!(
                    "    see {}:\n{}",
                    log.with_extension("err").display(),
                    measure::tail(&log.with_extension("err"), 8)
                );
            }
            samples.push(s);
            check_text = check();
        }
        self.rows.push(Row {
            id: id.to_string(),
            dataset: ds.to_string(),
            what: what.to_string(),
            samples,
            check: check_text,
            bytes,
            floor: id == "curl" || id.ends_with("-curl"),
            // The mirroring cases, which the memory target is about.
            nixipfs: !id.starts_with("ipfs-")
                && (id.contains("mirror") || id == "print-only" || id.contains("rerun")),
        });
        Ok(())
    }
}

/// What to run.
struct Invocation {
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    stdout: Option<PathBuf>,
}

fn inv(program: impl Into<PathBuf>, args: Vec<String>) -> Invocation {
    Invocation {
        program: program.into(),
        args,
        env: Vec::new(),
        stdout: None,
    }
}

fn s(x: impl AsRef<std::ffi::OsStr>) -> String {
    x.as_ref().to_string_lossy().into_owned()
}

fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .unwrap_or_else(|_| "not found".into())
}

/// Writes a release directory for `ds` under `outdir/releases/bench/NAME` and returns it.
/// Under the web root `hydra` of a stand-in Hydra, the answer to
/// `job/bench/trunk/tested/latest-finished`: build 1 of the bench's release, finished, with no
/// products (the runs take the release from its directory).
fn write_latest_finished(hydra: &Path) -> Result<()> {
    let job = hydra.join("job/bench/trunk/tested");
    fs::create_dir_all(&job)?;
    let build = serde_json::json!({
        "id": 1, "finished": 1, "buildstatus": 0, "timestamp": 1_700_000_000,
        "stoptime": 1_700_000_000, "project": "bench", "jobset": "trunk", "job": "tested",
        "nixname": RELEASE_NAME, "system": "x86_64-linux", "jobsetevals": [1],
        "buildoutputs": {}, "buildproducts": {}, "buildmetrics": {},
    });
    fs::write(job.join("latest-finished"), build.to_string())?;
    Ok(())
}

fn make_release(outdir: &Path, ds: &Dataset, hydra: &str) -> Result<PathBuf> {
    let release = outdir.join("releases/bench").join(RELEASE_NAME);
    fs::create_dir_all(&release)?;
    fs::copy(ds.store_paths_file(), release.join("store-paths"))?;
    let info = serde_json::json!({
        "hydra": hydra, "project": "bench", "jobset": "trunk", "job": "tested",
        "build_id": 1, "eval_id": 1, "build_time": 1_700_000_000,
        "nixname": RELEASE_NAME, "git_revision": GIT_REVISION,
    });
    fs::write(
        release.join("build-info.json"),
        serde_json::to_string_pretty(&info)?,
    )?;
    fs::write(release.join("git-revision"), GIT_REVISION)?;
    Ok(release)
}

const RELEASE_NAME: &str = "bench-1.0.1.0123456789a";
const GIT_REVISION: &str = "0123456789abcdef0123456789abcdef01234567";

/// The environment of a daemon-less, private Nix as root (as the tests run it).
fn nix_env(dir: &Path, public_key: &str) -> Result<Vec<(String, String)>> {
    measure::remove(dir)?;
    for sub in [
        "root", "state", "log", "home", "cache", "config", "data", "conf", "tmp",
    ] {
        fs::create_dir_all(dir.join(sub))?;
    }
    let config = format!(
        "experimental-features = nix-command\n\
         sandbox = false\n\
         build-users-group =\n\
         substituters =\n\
         require-sigs = true\n\
         trusted-public-keys = {public_key}\n\
         narinfo-cache-negative-ttl = 0\n\
         narinfo-cache-positive-ttl = 0\n\
         fsync-metadata = false\n"
    );
    let d = |x: &str| s(dir.join(x));
    Ok(vec![
        ("NIX_REMOTE".into(), format!("local?root={}", d("root"))),
        ("NIX_CONFIG".into(), config),
        ("NIX_CONF_DIR".into(), d("conf")),
        ("NIX_STATE_DIR".into(), d("state")),
        ("NIX_LOG_DIR".into(), d("log")),
        ("HOME".into(), d("home")),
        ("XDG_CACHE_HOME".into(), d("cache")),
        ("XDG_CONFIG_HOME".into(), d("config")),
        ("XDG_DATA_HOME".into(), d("data")),
        ("XDG_STATE_HOME".into(), d("state")),
        ("TMPDIR".into(), d("tmp")),
    ])
}

fn nixipfs_args(b: &Bench, sub: &str, rest: Vec<String>) -> Vec<String> {
    let mut a = vec!["-q".into(), "--progress".into(), "none".into(), sub.into()];
    a.extend(rest);
    if let Some(n) = b.args.concurrent {
        a.push("--concurrent".into());
        a.push(n.to_string());
    }
    a
}

/// A curl config fetching every file of the closure of `ds` into `out`.
fn curl_config(ds: &Dataset, base: &str, out: &Path, file: &Path) -> Result<()> {
    let list = fs::read_to_string(ds.closure_files())?;
    let mut cfg = String::new();
    for rel in list.lines() {
        let _ = writeln!(
            cfg,
            "url = \"{base}/{rel}\"\noutput = \"{}\"",
            out.join(rel).display()
        );
    }
    fs::write(file, cfg)?;
    Ok(())
}

/// How the cases of a dataset reach nginx.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    /// `http://`, HTTP/1.1.
    Http1,
    /// `https://` with the bench's own CA; HTTP/2 by ALPN.
    Http2,
}

/// The mirror / floor / nix / python cases of one dataset (served under `/{www}`).
fn closure_cases(
    b: &mut Bench,
    name: &str,
    www: &str,
    ds: &Dataset,
    full: bool,
    transport: Transport,
) -> Result<()> {
    let (base, curl_extra, nixipfs_extra) = match (transport, &b.nginx.https, &b.nginx.ca_pem) {
        (Transport::Http1, _, _) => (format!("{}/{www}", b.nginx.http1), vec![], vec![]),
        (Transport::Http2, Some(https), Some(ca)) => (
            format!("{https}/{www}"),
            vec!["--http2".to_string(), "--cacert".into(), s(ca)],
            vec!["--ca-cert".to_string(), s(ca)],
        ),
        (Transport::Http2, _, _) => bail!("nginx serves no HTTPS (see the start-up message)"),
    };
    let key = ds.manifest.public_key.clone();
    let runs_dir = b.out.join(name);
    let trash = b.work.join("trash");
    let remove_now = b.remove_now;
    let discard = |p: &Path| -> Result<()> {
        if remove_now {
            measure::remove(p)
        } else {
            measure::discard(p, &trash)
        }
    };
    fs::create_dir_all(&runs_dir)?;
    let n = ds.manifest.closure_paths;
    let bytes = Some(ds.closure_bytes());
    let nixipfs = b.nixipfs.clone();
    let id = |x: &str| {
        if full {
            x.to_string()
        } else {
            format!("{name}-{x}")
        }
    };

    // The floor: curl fetching the known list.
    let out = runs_dir.join("curl");
    let cfg = runs_dir.join("curl.cfg");
    curl_config(ds, &base, &out, &cfg)?;
    b.case(
        &id("curl"),
        name,
        "curl --parallel --parallel-max 64 (known file list; floor)",
        b.args.runs,
        bytes,
        &mut |_| {
            discard(&out)?;
            fs::create_dir_all(&out)?;
            let mut args: Vec<String> = vec![
                "-sS".into(),
                "--fail".into(),
                "--create-dirs".into(),
                "--parallel".into(),
                "--parallel-max".into(),
                "64".into(),
                "-K".into(),
                s(&cfg),
            ];
            args.extend(curl_extra.iter().cloned());
            Ok(inv("/usr/bin/curl", args))
        },
        &mut || {
            format!(
                "{} NAR files, {} narinfos",
                measure::count_files(&out.join("nar"), ""),
                measure::count_files(&out, ".narinfo")
            )
        },
    )?;
    discard(&out)?;

    // nixipfs update-binary-cache, full mirror from nothing.
    for (case, extra, what) in [
        (
            id("mirror"),
            vec![],
            "nixipfs update-binary-cache (full mirror, signatures checked)",
        ),
        (
            id("mirror-nofsync"),
            vec!["--no-fsync".to_string()],
            "nixipfs update-binary-cache --no-fsync",
        ),
        (
            id("mirror-nocheck"),
            vec!["--no-check-nar-hash".to_string()],
            "nixipfs update-binary-cache --no-check-nar-hash (FileHash only)",
        ),
    ] {
        let out = runs_dir.join("mirror");
        let release = out.join("releases/bench").join(RELEASE_NAME);
        let rest_base = vec![
            "--release".to_string(),
            s(&release),
            "--outdir".into(),
            s(&out),
            "--cache".into(),
            base.clone(),
            "--trusted-public-key".into(),
            key.clone(),
        ];
        let args = {
            let mut r = rest_base.clone();
            r.extend(extra);
            r.extend(nixipfs_extra.iter().cloned());
            nixipfs_args(b, "update-binary-cache", r)
        };
        let hydra = format!("{}/hydra", b.nginx.http1);
        b.case(
            &case,
            name,
            what,
            b.args.runs,
            bytes,
            &mut |_| {
                discard(&out)?;
                make_release(&out, ds, &hydra)?;
                Ok(inv(&nixipfs, args.clone()))
            },
            &mut || {
                format!(
                    "{} NARs, {} narinfos, {} links",
                    measure::count_files(&out.join("binary_cache/nar"), ""),
                    measure::count_files(&out.join("binary_cache"), ".narinfo"),
                    walkdir::WalkDir::new(release.join("binary_cache"))
                        .into_iter()
                        .filter_map(|e| e.ok())
                        .filter(|e| e.path_is_symlink())
                        .count()
                )
            },
        )?;
        discard(&out)?;
    }

    if full {
        // --print-only: closure resolution (and narinfo writes) alone.
        let out = runs_dir.join("print-only");
        let release = out.join("releases/bench").join(RELEASE_NAME);
        let listing = runs_dir.join("print-only.txt");
        let args = nixipfs_args(
            b,
            "update-binary-cache",
            vec![
                "--release".into(),
                s(&release),
                "--outdir".into(),
                s(&out),
                "--cache".into(),
                base.clone(),
                "--trusted-public-key".into(),
                key.clone(),
                "--print-only".into(),
            ],
        );
        let hydra = format!("{}/hydra", b.nginx.http1);
        b.case(
            "print-only",
            name,
            "nixipfs update-binary-cache --print-only (closure only)",
            b.args.runs,
            None,
            &mut |_| {
                discard(&out)?;
                make_release(&out, ds, &hydra)?;
                let mut i = inv(&nixipfs, args.clone());
                i.stdout = Some(listing.clone());
                Ok(i)
            },
            &mut || {
                let lines = fs::read_to_string(&listing)
                    .map(|t| t.lines().count())
                    .unwrap_or(0);
                format!("{lines} NARs listed of {n} paths")
            },
        )?;
        discard(&out)?;

        // nix path-info -r: closure listing by Nix.
        let roots = ds.roots()?;
        let nixdir = b.work.join("nix-env");
        let listing = runs_dir.join("path-info.txt");
        b.case(
            "path-info",
            name,
            "nix path-info -r --store http://... (closure only)",
            b.args.runs,
            None,
            &mut |_| {
                let mut a = vec!["path-info".to_string(), "-r".into(), "--store".into()];
                a.push(base.clone());
                a.extend(roots.iter().cloned());
                let mut i = inv("/usr/bin/nix", a);
                i.env = nix_env(&nixdir, &key)?;
                i.stdout = Some(listing.clone());
                Ok(i)
            },
            &mut || {
                let lines = fs::read_to_string(&listing)
                    .map(|t| t.lines().count())
                    .unwrap_or(0);
                format!("{lines} paths of {n}")
            },
        )?;

        // nix copy: what a user would run instead.
        let out = runs_dir.join("nix-copy");
        b.case(
            "nix-copy",
            name,
            "nix copy --from http://... --to file://... (xz, Nix's default)",
            b.args.slow_runs,
            bytes,
            &mut |_| {
                discard(&out)?;
                let mut a = vec![
                    "copy".to_string(),
                    "--from".into(),
                    base.clone(),
                    "--to".into(),
                    format!("file://{}", out.display()),
                ];
                a.extend(roots.iter().cloned());
                let mut i = inv("/usr/bin/nix", a);
                i.env = nix_env(&nixdir, &key)?;
                Ok(i)
            },
            &mut || format!("{} narinfos of {n}", measure::count_files(&out, ".narinfo")),
        )?;
        discard(&out)?;
        measure::remove(&nixdir)?;

        // The original scripts' approach, approximated.
        let out = runs_dir.join("python");
        let script = b.work.join("fetcher.py");
        fs::write(&script, include_str!("fetcher.py"))?;
        let roots_file = ds.store_paths_file();
        b.case(
            "python",
            name,
            "Python urllib, 8 threads, level by level (stand-in for the original scripts; no signature check)",
            b.args.slow_runs,
            bytes,
            &mut |_| {
                discard(&out)?;
                Ok(inv(
                    "/usr/bin/env",
                    vec![
                        "python3".into(),
                        s(&script),
                        base.clone(),
                        s(&roots_file),
                        s(&out),
                        "8".into(),
                    ],
                ))
            },
            &mut || {
                format!(
                    "{} NARs, {} narinfos",
                    measure::count_files(&out.join("nar"), ""),
                    measure::count_files(&out, ".narinfo")
                )
            },
        )?;
        discard(&out)?;

        // Into Garage: directly, and to disk then `rclone sync`.
        if full && transport == Transport::Http1 {
            s3::cases(b, name, &base, &key, &ds.store_paths_file(), &runs_dir)?;
        }

        // No-change reruns: update-binary-cache, then release-nixos against a one-file Hydra;
        // the mirror they keep is the one the ipfs cases publish.
        if b.wanted("rerun") || b.wanted("release-rerun") || ipfs::CASES.iter().any(|c| b.wanted(c))
        {
            let dir = runs_dir.join("kept");
            discard(&dir)?;
            let hydra = format!("{}/hydra", b.nginx.http1);
            let release = make_release(&dir, ds, &hydra)?;
            write_latest_finished(&b.nginx.root.join("hydra"))?;
            let config = dir.join("nixos_release.json");
            let cfg = serde_json::json!({
                "hydra": hydra, "cache": base, "trusted_public_keys": [key],
                "releases": [{ "channel": "bench", "project": "bench", "jobset": "trunk", "job": "tested" }],
            });
            fs::write(&config, serde_json::to_string_pretty(&cfg)?)?;
            let ubc = nixipfs_args(
                b,
                "update-binary-cache",
                vec![
                    "--release".into(),
                    s(&release),
                    "--outdir".into(),
                    s(&dir),
                    "--cache".into(),
                    base.clone(),
                    "--trusted-public-key".into(),
                    key.clone(),
                ],
            );
            let rn = nixipfs_args(
                b,
                "release-nixos",
                vec![
                    "--dir".into(),
                    s(&dir),
                    "--tmpdir".into(),
                    s(dir.join("tmp")),
                    "--config".into(),
                    s(&config),
                    "--no-ipfs".into(),
                ],
            );
            eprintln!("  (untimed) filling the mirror for the reruns");
            let warm = measure::run(&nixipfs, &ubc, &[], &b.log_dir.join("warm-ubc.log"), None)?;
            let warm2 = measure::run(&nixipfs, &rn, &[], &b.log_dir.join("warm-rn.log"), None)?;
            if !warm.ok || !warm2.ok {
                eprintln!("  warm-up failed; see {}", b.log_dir.display());
            }
            // The mirror just written goes to the disk now, not during the cases after it.
            let _ = std::process::Command::new("sync").status();
            b.case(
                "rerun",
                name,
                "nixipfs update-binary-cache, no-change rerun",
                b.args.runs,
                None,
                &mut |_| Ok(inv(&nixipfs, ubc.clone())),
                &mut || String::new(),
            )?;
            b.case(
                "release-rerun",
                name,
                "nixipfs release-nixos --no-ipfs, no-change rerun (one-file fake Hydra)",
                b.args.runs,
                None,
                &mut |_| Ok(inv(&nixipfs, rn.clone())),
                &mut || {
                    fs::read_link(dir.join("channels/bench"))
                        .map(|t| format!("channel -> {}", t.display()))
                        .unwrap_or_else(|_| "no channel link".into())
                },
            )?;
            ipfs::cases(b, name, &dir, &runs_dir.join("ipfs"))?;
            discard(&dir)?;
        }
    }
    Ok(())
}

fn fmt_ratio(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.2}x")
    } else {
        "-".into()
    }
}

/// The results as a Markdown table.
fn table(rows: &[Row]) -> String {
    let mut t = String::new();
    t.push_str("| case | data | what | runs | median s | min–max s | peak RSS MiB | vs floor | MB/s | load (1 min) | result check |\n");
    t.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for r in rows {
        let floor = rows
            .iter()
            .find(|f| f.floor && f.dataset == r.dataset)
            .map(Row::median);
        let walls = r.ok_walls();
        let (lo, hi) = walls
            .iter()
            .fold((f64::INFINITY, 0f64), |(a, b), &w| (a.min(w), b.max(w)));
        let ratio = match (floor, r.bytes) {
            (Some(f), Some(_)) => fmt_ratio(r.median() / f),
            _ => "-".into(),
        };
        let loads: Vec<String> = r.samples.iter().map(|s| format!("{:.1}", s.load)).collect();
        let runs = if r.failed() > 0 {
            format!("{} ({} FAILED)", r.samples.len(), r.failed())
        } else {
            r.samples.len().to_string()
        };
        let _ = writeln!(
            t,
            "| `{}` | {} | {} | {} | {} | {} | {:.1} | {} | {} | {} | {} |",
            r.id,
            r.dataset,
            r.what,
            runs,
            if walls.is_empty() {
                "-".to_string()
            } else {
                format!("{:.2}", r.median())
            },
            if walls.is_empty() {
                "-".to_string()
            } else {
                format!("{lo:.2}–{hi:.2}")
            },
            r.rss_mib(),
            ratio,
            r.mbps().map_or("-".into(), |m| if m < 10.0 {
                format!("{m:.1}")
            } else {
                format!("{m:.0}")
            }),
            loads.join(" "),
            r.check
        );
    }
    t
}

/// One line of the targets: `verdict` is whether it was met, with the numbers, or `None` when
/// the cases it needs did not run.
pub(crate) fn target_line(out: &mut String, name: &str, verdict: Option<(bool, String)>) {
    let v = match verdict {
        Some((true, d)) => format!("met ({d})"),
        Some((false, d)) => format!("**missed** ({d})"),
        None => "not measured".into(),
    };
    let _ = writeln!(out, "- {name}: {v}");
}

/// The targets, each with its verdict.
fn targets(rows: &[Row]) -> String {
    let get = |id: &str| rows.iter().find(|r| r.id == id && r.failed() == 0);
    let mut out = String::new();
    let mut line =
        |name: &str, verdict: Option<(bool, String)>| target_line(&mut out, name, verdict);
    line(
        "full mirror within 1.5x of the curl floor",
        get("mirror").zip(get("curl")).map(|(m, c)| {
            let r = m.median() / c.median();
            (r <= 1.5, format!("{r:.2}x"))
        }),
    );
    line(
        "full mirror at least 20x faster than nix copy",
        get("mirror").zip(get("nix-copy")).map(|(m, n)| {
            let r = n.median() / m.median();
            (r >= 20.0, format!("{r:.1}x faster"))
        }),
    );
    line(
        "closure resolution faster than nix path-info -r",
        get("print-only").zip(get("path-info")).map(|(p, n)| {
            (
                p.median() < n.median(),
                format!("{:.2} s vs {:.2} s", p.median(), n.median()),
            )
        }),
    );
    line(
        "bandwidth case at least 90% of the floor's MB/s",
        get("bandwidth-mirror")
            .zip(get("bandwidth-curl"))
            .map(|(m, c)| {
                let (a, b) = (m.mbps().unwrap_or(0.0), c.mbps().unwrap_or(1.0));
                (
                    a >= 0.9 * b,
                    format!("{a:.0} vs {b:.0} MB/s, {:.0}%", 100.0 * a / b),
                )
            }),
    );
    let nix_rows: Vec<&Row> = rows.iter().filter(|r| r.nixipfs).collect();
    line(
        "peak RSS under 64 MiB in every nixipfs mirroring case",
        (!nix_rows.is_empty()).then(|| {
            let worst = nix_rows
                .iter()
                .max_by(|a, b| a.rss_mib().total_cmp(&b.rss_mib()))
                .map(|r| (r.id.clone(), r.rss_mib()))
                .unwrap_or_default();
            (
                worst.1 < 64.0,
                format!("largest {:.1} MiB in `{}`", worst.1, worst.0),
            )
        }),
    );
    line(
        "no-change rerun under 1 s",
        get("rerun").map(|r| (r.median() < 1.0, format!("{:.2} s", r.median()))),
    );
    out
}

const BEGIN: &str = "<!-- bench:begin (written by `cargo run --release --example bench`) -->";
const END: &str = "<!-- bench:end -->";

/// Replaces the text between the markers of `file` (or appends it), keeping the rest.
fn write_results(file: &Path, body: &str) -> Result<()> {
    let old = fs::read_to_string(file).unwrap_or_default();
    let block = format!("{BEGIN}\n{body}{END}\n");
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if b > a => {
            format!(
                "{}{block}{}",
                &old[..a],
                &old[b + END.len()..].trim_start_matches('\n')
            )
        }
        _ if old.is_empty() => format!("# Benchmarks\n\n{block}"),
        _ => format!("{old}\n{block}"),
    };
    fs::write(file, new).with_context(|| format!("writing {}", file.display()))
}

fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown CPU".into())
}

fn run() -> Result<()> {
    let args = Args::parse();
    let exe = std::env::current_exe()?;
    // TARGET/release/examples/bench
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot tell where this executable lives")?
        .to_path_buf();
    let nixipfs = args
        .nixipfs
        .clone()
        .unwrap_or_else(|| profile_dir.join("nixipfs"));
    if !nixipfs.is_file() {
        bail!(
            "{} does not exist: run `cargo build --release` first, or pass --nixipfs",
            nixipfs.display()
        );
    }
    let target = profile_dir.parent().unwrap_or(&profile_dir).to_path_buf();
    let work = args
        .work_dir
        .clone()
        .unwrap_or_else(|| target.join("bench"));
    fs::create_dir_all(&work)?;
    let work = fs::canonicalize(&work)?;
    // A private copy: a shared target directory may get a new build in the middle of the run.
    let snapshot = work.join("bin/nixipfs");
    fs::create_dir_all(work.join("bin"))?;
    let _ = fs::remove_file(&snapshot);
    fs::copy(&nixipfs, &snapshot)
        .with_context(|| format!("copying {} to {}", nixipfs.display(), snapshot.display()))?;
    let binary_hash = nixipfs::hash::sha256(&fs::read(&snapshot)?).to_hex();
    let nixipfs = snapshot;
    let trash = work.join("trash");
    let removed_marker = work.join("trash-removed-at");
    if trash.exists() {
        measure::remove(&trash)?;
        fs::write(&removed_marker, "")?;
    }
    // Files deleted in the last 30 s slow down creating new ones (see measure::discard).
    if let Ok(age) = fs::metadata(&removed_marker)
        .and_then(|m| m.modified())
        .map(|t| t.elapsed().unwrap_or_default())
    {
        let quiet = std::time::Duration::from_secs(35);
        if age < quiet {
            eprintln!(
                "waiting {:.0} s after the removal of earlier outputs (see measure::discard)",
                (quiet - age).as_secs_f64()
            );
            std::thread::sleep(quiet - age);
        }
    }
    if args.cases.iter().any(|c| c == "ipfs-hourly") {
        // Its own mirror and node, and its own report (WORK/ipfs-hourly-keepK.md).
        for &keep in &args.hourly_keep {
            let opts = ipfs_hourly::HourlyOptions {
                hours: args.hourly_hours,
                paths: args.hourly_paths,
                new: args.hourly_new,
                keep,
                sizes: args.hourly_sizes.clone(),
            };
            let report = ipfs_hourly::run(&work, &nixipfs, args.jsipfs.as_deref(), &opts)?;
            println!("\n{report}");
        }
        if args.cases.iter().all(|c| c == "ipfs-hourly") {
            return Ok(());
        }
    }
    let small = args.small;
    let cp = ClosureParams {
        seed: args.seed,
        narinfos: args.narinfos.unwrap_or(if small { 2_000 } else { 20_000 }),
        roots: args.roots.unwrap_or(if small { 200 } else { 2_000 }),
        closure: args.closure.unwrap_or(if small { 1_200 } else { 12_000 }),
        big: args.big.unwrap_or(if small { 4 } else { 40 }),
        big_mib: args.big_mib.unwrap_or(8),
        small_min: 1024,
        small_max: 8192,
    };
    let bw = BandwidthParams {
        seed: args.seed,
        count: args.bw_count.unwrap_or(if small { 4 } else { 20 }),
        mib: args.bw_mib.unwrap_or(100),
    };
    for tool in ["/usr/bin/curl", "/usr/bin/nix", "/usr/bin/time"] {
        if !Path::new(tool).exists() {
            eprintln!("warning: {tool} is missing (apt-get install -y curl nix-bin time); its cases will fail");
        }
    }
    let nginx_bin = server::find_nginx(true)?;

    let data = work.join("data");
    let closure = dataset::closure_dataset(&data, &cp)?;
    eprintln!(
        "closure dataset: {} narinfos, closure {} paths (depth {}), {:.1} MiB to fetch, in {}",
        closure.manifest.narinfos,
        closure.manifest.closure_paths,
        closure.manifest.depth,
        closure.closure_bytes() as f64 / 1048576.0,
        closure.dir.display()
    );
    let bandwidth = if bw.count > 0 {
        Some(dataset::bandwidth_dataset(&data, "bandwidth", &bw)?)
    } else {
        None
    };
    let big = if args.big_nar_gib > 0 {
        Some(dataset::bandwidth_dataset(
            &data,
            "bignar",
            &BandwidthParams {
                seed: args.seed,
                count: 1,
                mib: args.big_nar_gib * 1024,
            },
        )?)
    } else {
        None
    };

    let sources = tarballs::dataset(&data, args.seed, 2000, 64)?;
    let www = work.join("www");
    measure::remove(&www)?;
    fs::create_dir_all(&www)?;
    std::os::unix::fs::symlink(&sources.dir, www.join("sources"))?;
    std::os::unix::fs::symlink(closure.cache(), www.join("closure"))?;
    if let Some(d) = &bandwidth {
        std::os::unix::fs::symlink(d.cache(), www.join("bandwidth"))?;
    }
    if let Some(d) = &big {
        std::os::unix::fs::symlink(d.cache(), www.join("bignar"))?;
    }
    let nginx = Nginx::start(&nginx_bin, &work.join("nginx"), &www, 2)?;
    let (out_dir, remove_now) = match &args.out_dir {
        Some(d) => {
            fs::create_dir_all(d)?;
            (fs::canonicalize(d)?.join("nixipfs-bench-runs"), true)
        }
        None => (work.join("runs"), false),
    };
    let log_dir = work.join("logs");
    measure::remove(&log_dir)?;
    fs::create_dir_all(&log_dir)?;
    let start_load = measure::loadavg();
    let mut b = Bench {
        args,
        work: work.clone(),
        out: out_dir.clone(),
        remove_now,
        nixipfs: nixipfs.clone(),
        nginx,
        rows: Vec::new(),
        log_dir,
        ipfs: ipfs::IpfsFacts::default(),
    };
    eprintln!("nginx {} on {}", b.nginx.version, b.nginx.http1);
    if let Some(secs) = b.args.serve {
        println!(
            "cache:  {}/closure  (key {})",
            b.nginx.http1, closure.manifest.public_key
        );
        println!("roots:  {}", closure.store_paths_file().display());
        if bandwidth.is_some() {
            println!("cache:  {}/bandwidth", b.nginx.http1);
        }
        println!("serving for {secs} s");
        std::thread::sleep(std::time::Duration::from_secs(secs));
        return Ok(());
    }
    closure_cases(
        &mut b,
        "closure",
        "closure",
        &closure,
        true,
        Transport::Http1,
    )?;
    if b.nginx.https.is_some() && ["h2-curl", "h2-mirror"].iter().any(|c| b.wanted(c)) {
        closure_cases(&mut b, "h2", "closure", &closure, false, Transport::Http2)?;
    }
    if let Some(d) = &bandwidth {
        closure_cases(&mut b, "bandwidth", "bandwidth", d, false, Transport::Http1)?;
    }
    if let Some(d) = &big {
        closure_cases(&mut b, "bignar", "bignar", d, false, Transport::Http1)?;
    }
    tarballs::cases(&mut b, &sources)?;
    let end_load = measure::loadavg();
    let nginx_version = b.nginx.version.clone();
    drop(b.nginx);

    // Report.
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let git = |args: &[&str]| {
        let mut a = vec!["-C", manifest_dir.to_str().unwrap_or(".")];
        a.extend_from_slice(args);
        command_line("git", &a)
    };
    let commit = format!(
        "sources of {} (tree {})",
        git(&[
            "log",
            "-1",
            "--format=%h",
            "--",
            "src",
            "Cargo.toml",
            "Cargo.lock"
        ]),
        git(&["describe", "--always", "--dirty", "--abbrev=12"])
    );
    let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let mut body = String::new();
    let _ = writeln!(
        body,
        "Run on {date}; {} runs per case ({} for `nix-copy` and `python`), median shown.\n",
        b.args.runs, b.args.slow_runs
    );
    if let Some(note) = &b.args.note {
        let _ = writeln!(body, "{note}\n");
    }
    let _ = writeln!(
        body,
        "- machine: {} CPUs ({}), {} MiB RAM; load average before {:.2} {:.2} {:.2}, after {:.2} {:.2} {:.2}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model(),
        fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024,
        start_load.0, start_load.1, start_load.2, end_load.0, end_load.1, end_load.2
    );
    let _ = writeln!(
        body,
        "- versions: nixipfs {commit} ({}, binary sha256 {}…), {}, {}, nginx {}, {}, {}",
        command_line(&s(&nixipfs), &["--version"]),
        &binary_hash[..12],
        command_line("nix", &["--version"]),
        command_line("curl", &["--version"]),
        nginx_version,
        command_line("python3", &["--version"]),
        ipfs::js_ipfs_version(b.args.jsipfs.as_deref()),
    );
    let _ = writeln!(
        body,
        "- `closure` data (seed {}): {} narinfos; the closure of {} roots is {} paths, {} levels deep, \
         {:.1} MiB to fetch ({} NARs of 1–8 KiB before compression and {} of {} MiB, half random bytes; all xz -{}); \
         narinfos signed, signatures checked",
        cp.seed, closure.manifest.narinfos, cp.roots, closure.manifest.closure_paths,
        closure.manifest.depth, closure.closure_bytes() as f64 / 1048576.0,
        closure.manifest.closure_paths - cp.big, cp.big, cp.big_mib, dataset::XZ_PRESET
    );
    if let Some(d) = &bandwidth {
        let _ = writeln!(
            body,
            "- `bandwidth` data: {} single-file NARs of {} MiB of random bytes, `Compression: none`, {:.0} MB in all",
            bw.count, bw.mib, d.closure_bytes() as f64 / 1e6
        );
    }
    if let Some(d) = &big {
        let _ = writeln!(
            body,
            "- `bignar` data: one single-file NAR of {:.2} GiB of random bytes, `Compression: none`",
            d.manifest.closure_file_bytes as f64 / (1u64 << 30) as f64
        );
    }
    let _ = writeln!(
        body,
        "- served by nginx (2 workers, sendfile) on 127.0.0.1, HTTP/1.1 (`h2-*` rows: HTTPS with \
         HTTP/2, a P-256 certificate from a CA made for the run); data in the page cache; \
         every client writes to {}",
        if remove_now {
            format!("{} (`--out-dir`)", out_dir.display())
        } else {
            format!("{} (the same disk)", out_dir.display())
        }
    );
    let _ = writeln!(body, "{}", sources.describe());
    if let Some(line) = ipfs::setup_line(&b.rows) {
        let _ = writeln!(body, "{line}");
    }
    body.push('\n');
    body.push_str(&table(&b.rows));
    body.push_str("\nTargets:\n\n");
    body.push_str(&targets(&b.rows));
    body.push_str(&ipfs::targets(&b.rows, &b.ipfs));
    println!("\n{body}");
    let output = b.args.output.clone().unwrap_or_else(|| {
        if small {
            work.join("BENCHMARKS-small.md")
        } else if !b.args.cases.is_empty() || !b.args.skip.is_empty() {
            work.join("BENCHMARKS-partial.md")
        } else {
            manifest_dir.join("BENCHMARKS.md")
        }
    });
    write_results(&output, &body)?;
    eprintln!("written to {}", output.display());
    measure::remove(&trash)?;
    fs::write(&removed_marker, "")?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
