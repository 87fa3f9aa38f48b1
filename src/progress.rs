//! Progress reporting for long phases (narinfos resolved, NARs and bytes downloaded, blocks sent).
//!
//! On a terminal each phase is an indicatif bar on standard error; otherwise (cron, pipes) a plain
//! line is logged every few seconds and once at the end, so logs stay readable. Standard output is
//! never touched: it belongs to `--print-only` listings and printed paths.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Bars on a terminal.
    Bars,
    /// A plain line every [`PLAIN_INTERVAL`].
    Plain,
    /// Nothing.
    Hidden,
}

/// How often plain progress lines are written.
pub const PLAIN_INTERVAL: Duration = Duration::from_secs(10);

static MODE: OnceLock<Mode> = OnceLock::new();
static MULTI: OnceLock<MultiProgress> = OnceLock::new();

/// Sets the progress mode for the whole process (the first call wins).
pub fn init(mode: Mode) {
    let _ = MODE.set(mode);
}

/// The mode in force: [`Mode::Bars`] when standard error is a terminal, unless set by [`init`].
pub fn mode() -> Mode {
    *MODE.get_or_init(|| {
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            Mode::Bars
        } else {
            Mode::Plain
        }
    })
}

fn multi() -> &'static MultiProgress {
    MULTI.get_or_init(|| MultiProgress::with_draw_target(ProgressDrawTarget::stderr()))
}

/// Runs `f` with the bars hidden, so that a log line does not garble them.
pub fn suspend<R>(f: impl FnOnce() -> R) -> R {
    match (mode(), MULTI.get()) {
        (Mode::Bars, Some(m)) => m.suspend(f),
        _ => f(),
    }
}

/// What a phase counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Items (narinfos, files, blocks).
    Items,
    /// Bytes.
    Bytes,
}

/// One phase of work, shared between tasks.
#[derive(Clone)]
pub struct Phase {
    inner: Arc<PhaseInner>,
}

struct PhaseInner {
    name: String,
    unit: Unit,
    done: AtomicU64,
    total: AtomicU64,
    bar: Option<ProgressBar>,
    start: Instant,
    last_line: Mutex<Instant>,
    finished: AtomicBool,
}

impl Phase {
    /// Starts a phase; `total` may grow later with [`Phase::inc_total`].
    pub fn new(name: &str, unit: Unit, total: u64) -> Phase {
        let bar = match mode() {
            Mode::Bars => {
                let bar = multi().add(ProgressBar::new(total));
                let template = match unit {
                    Unit::Items => "{prefix:>22} [{bar:30}] {pos}/{len} ({per_sec}, {elapsed})",
                    Unit::Bytes => {
                        "{prefix:>22} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {elapsed})"
                    }
                };
                if let Ok(style) = ProgressStyle::with_template(template) {
                    bar.set_style(style.progress_chars("=> "));
                }
                bar.set_prefix(name.to_string());
                bar.enable_steady_tick(Duration::from_millis(200));
                Some(bar)
            }
            _ => None,
        };
        Phase {
            inner: Arc::new(PhaseInner {
                name: name.to_string(),
                unit,
                done: AtomicU64::new(0),
                total: AtomicU64::new(total),
                bar,
                start: Instant::now(),
                last_line: Mutex::new(Instant::now()),
                finished: AtomicBool::new(false),
            }),
        }
    }

    /// Adds to the amount of work done.
    pub fn inc(&self, n: u64) {
        self.inner.done.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.inner.bar {
            bar.inc(n);
        } else {
            self.maybe_plain_line();
        }
    }

    /// Adds to the total amount of work.
    pub fn inc_total(&self, n: u64) {
        self.inner.total.fetch_add(n, Ordering::Relaxed);
        if let Some(bar) = &self.inner.bar {
            bar.inc_length(n);
        }
    }

    /// Work done so far.
    pub fn done(&self) -> u64 {
        self.inner.done.load(Ordering::Relaxed)
    }

    fn maybe_plain_line(&self) {
        if mode() != Mode::Plain {
            return;
        }
        let Ok(mut last) = self.inner.last_line.try_lock() else {
            return;
        };
        if last.elapsed() >= PLAIN_INTERVAL {
            *last = Instant::now();
            drop(last);
            tracing::info!("{}", self.line());
        }
    }

    fn line(&self) -> String {
        let done = self.inner.done.load(Ordering::Relaxed);
        let total = self.inner.total.load(Ordering::Relaxed);
        let secs = self.inner.start.elapsed().as_secs_f64();
        match self.inner.unit {
            Unit::Items => format!("{}: {done}/{total} ({secs:.1} s)", self.inner.name),
            Unit::Bytes => format!(
                "{}: {}/{} ({secs:.1} s)",
                self.inner.name,
                human_bytes(done),
                human_bytes(total)
            ),
        }
    }

    /// Ends the phase: clears its bar, and in plain mode writes a last line.
    pub fn finish(&self) {
        if self.inner.finished.swap(true, Ordering::Relaxed) {
            return;
        }
        if let Some(bar) = &self.inner.bar {
            bar.finish_and_clear();
            if let Some(m) = MULTI.get() {
                m.remove(bar);
            }
        } else if mode() == Mode::Plain && self.inner.start.elapsed() >= PLAIN_INTERVAL {
            tracing::info!("{}", self.line());
        }
    }
}

impl Drop for PhaseInner {
    fn drop(&mut self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Formats a byte count with a binary unit, e.g. `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A `tracing` writer that hides the progress bars while a log line is written.
#[derive(Clone, Copy, Default)]
pub struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        suspend(|| std::io::stderr().write(buf))
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> Self::Writer {
        LogWriter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human_readable() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
    }
}
