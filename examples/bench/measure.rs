//! Running one command under `/usr/bin/time` and collecting wall time, peak RSS and the load.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result};

/// One run of a command.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Wall time, seconds.
    pub wall: f64,
    /// Peak resident set size of the process, KiB (`ru_maxrss` from `/usr/bin/time`).
    pub rss_kib: u64,
    /// Whether it exited with 0.
    pub ok: bool,
    /// The 1-minute load average just before the run.
    pub load: f64,
}

/// The 1-, 5- and 15-minute load averages.
pub fn loadavg() -> (f64, f64, f64) {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let v: Vec<f64> = text
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    match v.as_slice() {
        [a, b, c] => (*a, *b, *c),
        _ => (0.0, 0.0, 0.0),
    }
}

/// Runs `program args` with `env`, stdout and stderr to `log.out` / `log.err`, under
/// `/usr/bin/time -f %M`.
pub fn run(
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
    stdout: Option<&Path>,
) -> Result<Sample> {
    let rss_file = log.with_extension("rss");
    let out_file: PathBuf = stdout
        .map(Path::to_path_buf)
        .unwrap_or_else(|| log.with_extension("out"));
    let mut cmd = Command::new("/usr/bin/time");
    cmd.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&rss_file)
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_file)?)
        .stderr(fs::File::create(log.with_extension("err"))?);
    for (k, v) in env {
        cmd.env(k, v);
    }
    without_proxies(&mut cmd);
    let load = loadavg().0;
    let start = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("running {}", program.display()))?;
    let wall = start.elapsed().as_secs_f64();
    let rss_text = fs::read_to_string(&rss_file).unwrap_or_default();
    // With a non-zero exit, time writes "Command exited with non-zero status N" first.
    let rss_kib = rss_text
        .lines()
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or(0);
    Ok(Sample {
        wall,
        rss_kib,
        ok: status.success(),
        load,
    })
}

/// The median of `v` (mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// The last lines of a file, for error reports.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Number of regular files under `dir` (recursively) whose name ends with `suffix`.
pub fn count_files(dir: &Path, suffix: &str) -> usize {
    walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file() && e.file_name().to_string_lossy().ends_with(suffix))
        .count()
}

/// Moves a directory tree (if it exists) into `trash`, to be deleted after the measurements:
/// on ext4, creating files soon after deleting many makes inode allocation scan the recently
/// deleted ones (`recently_deleted` in the kernel profile), which would slow down whichever
/// case runs next.
pub fn discard(dir: &Path, trash: &Path) -> Result<()> {
    if fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    fs::create_dir_all(trash)?;
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dest = trash.join(format!("{}-{n}", std::process::id()));
    fs::rename(dir, &dest)
        .with_context(|| format!("moving {} to {}", dir.display(), dest.display()))
}

/// Removes a directory tree if it exists.
pub fn remove(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", dir.display())),
    }
}

/// Removes the proxy settings from `cmd`'s environment: every client talks to 127.0.0.1.
pub fn without_proxies(cmd: &mut Command) {
    for k in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(k);
    }
}
