//! Running child processes with a deadline: the `nixipfs` binary under test and Nix.
//!
//! Children get no proxy settings (`http_proxy` and friends are removed and `NO_PROXY` covers
//! `127.0.0.1`), so that requests to a [`TestServer`](super::server::TestServer) go straight to
//! it.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long [`run_nixipfs`] lets the binary run.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

const PROXY_VARS: &[&str] = &[
    "http_proxy",
    "https_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
];

/// A child that ran past its deadline and was killed, with what it printed until then.
#[derive(Debug)]
pub struct TimedOut {
    /// The command line.
    pub command: String,
    /// The deadline it missed.
    pub timeout: Duration,
    /// What it wrote to stdout and stderr before it was killed.
    pub partial: Output,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} did not finish within {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.timeout,
            String::from_utf8_lossy(&self.partial.stdout),
            String::from_utf8_lossy(&self.partial.stderr)
        )
    }
}

impl std::error::Error for TimedOut {}

/// Removes proxy settings from `cmd`'s environment.
pub fn without_proxies(cmd: &mut Command) -> &mut Command {
    for var in PROXY_VARS {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
}

/// `cmd` as a shell-like string for messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd`, capturing stdout and stderr; kills it after `timeout`. Stdin is left as `cmd`
/// has it (the commands made here close it).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, TimedOut> {
    let command = describe(cmd);
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {command}: {e}"));
    let stdout = reader_thread(&mut child, true);
    let stderr = reader_thread(&mut child, false);
    let deadline = Instant::now() + timeout;
    let (status, timed_out) = loop {
        match child.try_wait() {
            Ok(Some(status)) => break (status, false),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                break (wait(&mut child, &command), true);
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for {command}: {e}"),
        }
    };
    let output = Output {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    };
    if timed_out {
        Err(TimedOut {
            command,
            timeout,
            partial: output,
        })
    } else {
        Ok(output)
    }
}

fn wait(child: &mut Child, command: &str) -> ExitStatus {
    child
        .wait()
        .unwrap_or_else(|e| panic!("waiting for {command}: {e}"))
}

fn reader_thread(child: &mut Child, stdout: bool) -> thread::JoinHandle<Vec<u8>> {
    let mut pipe: Box<dyn Read + Send> = if stdout {
        Box::new(child.stdout.take().expect("piped stdout"))
    } else {
        Box::new(child.stderr.take().expect("piped stderr"))
    };
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

/// Appends the short retry delay and timeouts the mirroring tests run with, for each of these
/// flags `extra` does not give, and then `extra`.
pub fn with_test_timeouts<'a>(args: &mut Vec<&'a str>, extra: &[&'a str]) {
    for (flag, value) in [
        ("--retry-delay", "0.05"),
        ("--stall-timeout", "5"),
        ("--connect-timeout", "5"),
    ] {
        if !extra.contains(&flag) {
            args.extend([flag, value]);
        }
    }
    args.extend_from_slice(extra);
}

/// A `Command` for the `nixipfs` binary of this package with `args`, without proxy settings
/// with stdin closed and `RUST_BACKTRACE=1`; add environment or a working directory, then pass it to
/// [`run_command`].
pub fn nixipfs_command<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_nixipfs"));
    cmd.args(args)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null());
    without_proxies(&mut cmd);
    cmd
}

/// Runs `cmd` like [`run_with_timeout`], failing the test with its output if it times out.
#[track_caller]
pub fn run_command(cmd: &mut Command, timeout: Duration) -> Output {
    match run_with_timeout(cmd, timeout) {
        Ok(output) => output,
        Err(e) => panic!("{e}"),
    }
}

/// Runs the `nixipfs` binary with `args` (deadline [`DEFAULT_TIMEOUT`]) and returns its exit
/// status and output, whatever the status.
#[track_caller]
pub fn run_nixipfs<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    run_command(&mut nixipfs_command(args), DEFAULT_TIMEOUT)
}

/// Stdout and stderr of `output` for assertion messages.
pub fn output_text(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Fails the test, showing the output, unless the process exited with status 0.
#[track_caller]
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "command failed\n{}",
        output_text(output)
    );
}
