//! The `nixipfs` binary: parse the command line, run the subcommand, print the error chain once.
//!
//! Exit codes: 0 success; 1 failure (including an incomplete mirror); 2 usage errors and
//! subcommands that are not available.

mod cli;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command};
use nixipfs::commands::{
    cid, create_channel_release, create_nixipfs, garbage_collect, release_nixos, status,
    update_binary_cache, verify,
};
use nixipfs::ipfs::profile::Profile;
use nixipfs::metrics::Metrics;
use nixipfs::mirror::MirrorReport;
use nixipfs::verify::NarCheck;

/// Sets two glibc allocator parameters for `command` before any thread exists; an operator's
/// own `MALLOC_MMAP_THRESHOLD_` or `MALLOC_ARENA_MAX` (glibc's variables) is left to stand.
///
/// - Every allocation of 256 KiB or more gets its own mapping, returned to the system when
///   freed (4 MiB for `create-nixipfs`, which decodes no NAR: the walk of a large mirror
///   allocates and frees buffers of a few hundred KiB by the thousand, and fresh mappings
///   cost it a tenth of its time in page faults). Left to itself, glibc raises that threshold
///   to the size of the largest block freed so far, and from then on keeps the NAR decoders'
///   windows (8 MiB each, one per decoder) in its per-thread arenas, where they stay resident
///   after the decoder is gone: with many download threads that alone was most of a mirror
///   run's memory.
/// - At most two arenas. glibc gives each thread that meets contention an arena of its own, up
///   to eight per core; the runtime's blocking threads (writers, decoders, file checks) are
///   dozens, and each arena kept its own free memory: about 4 MiB of a mirror run's peak at
///   200,000 paths, for no measured gain in speed (BENCHMARKS.md).
fn tune_allocator(command: &str) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            let threshold = if command == "create-nixipfs" {
                4 << 20
            } else {
                256 << 10
            };
            // SAFETY: mallopt only sets an allocator parameter; it is called before any other
            // thread exists.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, threshold);
            }
        }
        if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
        }
    }
}

/// Requests in flight when neither the command line nor the config says.
const DEFAULT_CONCURRENCY: usize = 32;
use nixipfs::progress;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.name();
    tune_allocator(command);
    init_logging(&cli);
    let metrics_file = cli.metrics_file.clone();
    let started = Instant::now();
    let mut metrics = Metrics::new();
    let code = match run(cli, &mut metrics) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            progress::suspend(|| eprintln!("error: {err:#}"));
            ExitCode::FAILURE
        }
    };
    let Some(file) = metrics_file else {
        return code;
    };
    let labels = [("command", command)];
    metrics.gauge(
        "nixipfs_run_success",
        "1 if the last run of the command succeeded, else 0.",
        &labels,
        if code == ExitCode::SUCCESS { 1.0 } else { 0.0 },
    );
    metrics.gauge(
        "nixipfs_run_duration_seconds",
        "Wall time of the last run of the command.",
        &labels,
        started.elapsed().as_secs_f64(),
    );
    metrics.gauge(
        "nixipfs_run_end_timestamp_seconds",
        "When the last run of the command ended (unix seconds).",
        &labels,
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64()),
    );
    match metrics.write(&file) {
        Ok(()) => code,
        Err(e) => {
            eprintln!("error: cannot write the metrics file: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Adds the numbers of a mirroring run to `metrics`.
fn mirror_metrics(metrics: &mut Metrics, labels: &[(&str, &str)], r: &MirrorReport) {
    let gauges: [(&str, &str, f64); 6] = [
        (
            "nixipfs_closure_paths",
            "Store paths in the closure mirrored by the last run.",
            r.paths as f64,
        ),
        (
            "nixipfs_narinfos_fetched",
            "Narinfos fetched from upstream by the last run.",
            r.narinfos_fetched as f64,
        ),
        (
            "nixipfs_nars_fetched",
            "NAR files downloaded and verified by the last run.",
            r.nars_fetched as f64,
        ),
        (
            "nixipfs_bytes_fetched",
            "Bytes of NAR files downloaded by the last run.",
            r.bytes as f64,
        ),
        (
            "nixipfs_paths_missing_upstream",
            "Store paths of the closure that upstream does not have.",
            r.missing.len() as f64,
        ),
        (
            "nixipfs_failures",
            "Failures of the last run (paths, files, channels).",
            r.failures.len() as f64,
        ),
    ];
    for (name, help, value) in gauges {
        metrics.gauge(name, help, labels, value);
    }
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("NIXIPFS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("nixipfs={level},warn")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(progress::LogWriter)
        .with_target(false)
        .with_ansi(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && std::env::var_os("NO_COLOR").map_or(true, |v| v.is_empty()),
        )
        .without_time()
        .init();
    progress::init(match cli.progress {
        cli::ProgressArg::Auto if cli.quiet => progress::Mode::Hidden,
        cli::ProgressArg::Auto => progress::mode(),
        cli::ProgressArg::Bars => progress::Mode::Bars,
        cli::ProgressArg::Plain => progress::Mode::Plain,
        cli::ProgressArg::None => progress::Mode::Hidden,
    });
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| {
        e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli, metrics: &mut Metrics) -> Result<ExitCode> {
    match cli.command {
        Command::UpdateBinaryCache(a) => {
            let opts = update_binary_cache::UpdateBinaryCacheOptions {
                target: a.s3.target(a.outdir, a.target.as_deref())?,
                release: a.release,
                cache_url: a.cache,
                fetch: a.fetch.to_config(DEFAULT_CONCURRENCY)?,
                print_only: a.print.print_only,
                print_format: a.print.print_format.format(),
                trusted_keys: a.sigs.keys()?,
                check_sigs: !a.sigs.no_check_sigs,
                check_nar_hash: !a.nar_check.no_check_nar_hash,
                wait_lock: a.wait_lock,
            };
            let mut stdout = std::io::stdout();
            let report = runtime()?.block_on(update_binary_cache::run(&opts, &mut stdout))?;
            stdout.flush().context("cannot write to standard output")?;
            tracing::info!("update-binary-cache: {}", report.summary());
            mirror_metrics(metrics, &[("command", "update-binary-cache")], &report);
            if report.is_complete() {
                Ok(ExitCode::SUCCESS)
            } else {
                eprintln!(
                    "error: the closure of {} is incomplete: {} failures:",
                    opts.release.display(),
                    report.failures.len()
                );
                for f in &report.failures {
                    eprintln!("  {f}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        Command::GarbageCollect(a) => {
            let target = match a.cache {
                Some(cache) => garbage_collect::GcTarget::Dir(on_disk(cache, "garbage-collect")?),
                None => match a.s3.target(None, a.target.as_deref())? {
                    nixipfs::storage::Target::S3(location) => garbage_collect::GcTarget::Bucket(
                        location,
                        nixipfs::fetch::FetchConfig::default(),
                    ),
                    nixipfs::storage::Target::Dir(_) => anyhow::bail!(
                        "--target: garbage-collect takes s3://BUCKET/PREFIX there; name a \
                         directory's cache with --cache"
                    ),
                },
            };
            let opts = garbage_collect::GarbageCollectOptions {
                target,
                releases: a.releases,
                dry_run: a.dry_run,
                wait_lock: a.wait_lock,
            };
            let mut stdout = std::io::stdout();
            let report = runtime()?.block_on(garbage_collect::run(&opts, &mut stdout))?;
            tracing::info!("garbage-collect: {}", report.summary(opts.dry_run));
            let labels = [("command", "garbage-collect")];
            metrics.gauge(
                "nixipfs_gc_narinfos_deleted",
                "Narinfos deleted by the last collection.",
                &labels,
                report.narinfos as f64,
            );
            metrics.gauge(
                "nixipfs_gc_nars_deleted",
                "NAR files deleted by the last collection.",
                &labels,
                report.nars as f64,
            );
            metrics.gauge(
                "nixipfs_gc_bytes_freed",
                "Bytes freed by the last collection.",
                &labels,
                report.bytes as f64,
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CreateChannelRelease(a) => {
            let opts = create_channel_release::CreateChannelReleaseOptions {
                trusted_keys: a.sigs.keys()?,
                check_sigs: !a.sigs.no_check_sigs,
                channel: a.channel,
                project: a.project,
                jobset: a.jobset,
                job: a.job,
                outdir: a.outdir,
                hydra_url: a.hydra.trim_end_matches('/').to_string(),
                cache_url: a.cache.trim_end_matches('/').to_string(),
                target_cache: a.target_cache,
                tmpdir: a.tmpdir,
                fetch: a.fetch.to_config(DEFAULT_CONCURRENCY)?,
            };
            let release = runtime()?.block_on(create_channel_release::run(&opts))?;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", release.dir.display())
                .context("cannot write to standard output")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CreateNixipfs(a) => {
            let opts = create_nixipfs::CreateNixipfsOptions {
                publish: a.ipfs.to_options(
                    on_disk(a.dir.clone(), "create-nixipfs")?,
                    !a.no_node,
                    4,
                    Profile::DEFAULT,
                )?,
                wait_lock: a.wait_lock,
            };
            let mut stdout = std::io::stdout();
            let report = runtime()?.block_on(create_nixipfs::run(&opts, &mut stdout))?;
            stdout.flush().context("cannot write to standard output")?;
            tracing::info!("create-nixipfs: {}", report.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::ReleaseNixos(a) => release_nixos_cmd(a, metrics),
        Command::Status(a) => {
            let opts = status::StatusOptions {
                dir: on_disk(a.dir, "status")?,
                json: a.json,
            };
            let mut stdout = std::io::stdout().lock();
            status::run(&opts, &mut stdout)?;
            stdout.flush().context("cannot write to standard output")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions(a) => {
            let mut command = <Cli as clap::CommandFactory>::command();
            let mut stdout = std::io::stdout().lock();
            clap_complete::generate(a.shell, &mut command, "nixipfs", &mut stdout);
            stdout.flush().context("cannot write to standard output")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            let command = <Cli as clap::CommandFactory>::command();
            let mut stdout = std::io::stdout().lock();
            clap_mangen::Man::new(command)
                .render(&mut stdout)
                .context("cannot write to standard output")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Cid(a) => {
            let opts = cid::CidOptions {
                paths: a.paths,
                profile: a.profile.map_or(Profile::DEFAULT, |p| p.profile()),
            };
            let mut stdout = std::io::stdout().lock();
            let report = cid::run(&opts, &mut stdout)?;
            Ok(if report.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Verify(a) => {
            let nars = match (a.quick, a.full) {
                (true, _) => NarCheck::Size,
                (false, true) => NarCheck::Full,
                (false, false) => NarCheck::FileHash,
            };
            let trusted_keys = cli::parse_keys(&a.trusted_public_keys)?;
            let target = match a.dir {
                Some(dir) => nixipfs::storage::Target::Dir(on_disk(dir, "verify")?),
                None => a.s3.target(None, a.target.as_deref())?,
            };
            let mut stdout = std::io::stdout().lock();
            let report = match target {
                nixipfs::storage::Target::Dir(dir) => {
                    let opts = verify::VerifyOptions {
                        dir,
                        nars,
                        trusted_keys,
                        repair: a.repair,
                        wait_lock: a.wait_lock,
                    };
                    verify::run(&opts, &mut stdout)?.report
                }
                nixipfs::storage::Target::S3(location) => {
                    let opts = verify::VerifyBucketOptions {
                        location,
                        fetch: a.fetch.to_config(DEFAULT_CONCURRENCY)?,
                        nars,
                        trusted_keys,
                    };
                    runtime()?.block_on(verify::run_bucket(&opts, &mut stdout))?
                }
            };
            metrics.gauge(
                "nixipfs_verify_problems",
                "Problems the last verify found.",
                &[("command", "verify")],
                report.problems.len() as f64,
            );
            tracing::info!(
                "verify: {} narinfos, {} NARs, {} complete releases, {} channels: {} problems",
                report.narinfos,
                report.nars,
                report.releases,
                report.channels,
                report.problems.len()
            );
            Ok(if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}

/// Adds the numbers of a `release-nixos` run, and of the mirror it leaves, to `metrics`.
fn release_metrics(metrics: &mut Metrics, report: &release_nixos::ReleaseReport) {
    let mut total = MirrorReport::default();
    for c in &report.channels {
        if let Some(m) = &c.mirror {
            total.paths += m.paths;
            total.narinfos_fetched += m.narinfos_fetched;
            total.nars_fetched += m.nars_fetched;
            total.bytes += m.bytes;
            total.missing.extend(m.missing.iter().cloned());
            total.failures.extend(m.failures.iter().cloned());
        }
        let labels = [("channel", c.channel.as_str())];
        metrics.gauge(
            "nixipfs_channel_success",
            "1 if the channel's release and closure were complete in the last run, else 0.",
            &labels,
            if c.error.is_none() { 1.0 } else { 0.0 },
        );
        if let Some(t) = &c.tarballs {
            metrics.gauge(
                "nixipfs_channel_tarballs",
                "Source tarballs the channel's release needs (mirror: true).",
                &labels,
                t.sources as f64,
            );
            metrics.gauge(
                "nixipfs_channel_tarballs_missing",
                "Source tarballs of the channel's release that could not be had (missing-tarballs).",
                &labels,
                t.missing.len() as f64,
            );
        }
    }
    total.missing.sort();
    total.missing.dedup();
    mirror_metrics(metrics, &[("command", "release-nixos")], &total);
    // What the mirror holds after the run.
    let Some(state) = &report.state else {
        return;
    };
    if let Some(t) = state.last_sync {
        metrics.gauge(
            "nixipfs_last_sync_timestamp_seconds",
            "End of the last run in which everything succeeded (DIR/lastsync).",
            &[],
            t as f64,
        );
    }
    metrics.gauge(
        "nixipfs_disk_bytes",
        "Bytes of every file of the mirror.",
        &[],
        state.disk_bytes as f64,
    );
    for c in &state.channels {
        let labels = [("channel", c.channel.as_str())];
        if let Some(age) = c.age_seconds {
            metrics.gauge(
                "nixipfs_channel_release_age_seconds",
                "Age of the release the channel points at (since its Hydra build).",
                &labels,
                age as f64,
            );
        }
        if let Some(t) = c.last_success {
            metrics.gauge(
                "nixipfs_channel_last_success_timestamp_seconds",
                "End of the last release-nixos run in which the channel succeeded.",
                &labels,
                t as f64,
            );
        }
        metrics.gauge(
            "nixipfs_channel_closure_bytes",
            "Bytes of the NAR files of the channel's release.",
            &labels,
            c.closure_bytes as f64,
        );
    }
}

/// A directory argument of a command that works on disk only: an `s3://` URL is refused with
/// an error naming the command.
fn on_disk(dir: PathBuf, command: &str) -> Result<PathBuf> {
    if let Some(url) = dir.to_str().filter(|s| s.starts_with("s3://")) {
        nixipfs::storage::Target::parse(url)?.dir(command)?;
    }
    Ok(dir)
}

fn release_nixos_cmd(a: cli::ReleaseNixosArgs, metrics: &mut Metrics) -> Result<ExitCode> {
    let config = nixipfs::config::load(&a.config)?;
    // --dir, else --target, else the config's target (with its endpoint and region, which the
    // flags override).
    let target = match (a.dir.clone(), a.target.as_deref(), config.target.as_deref()) {
        (Some(dir), _, _) => nixipfs::storage::Target::Dir(on_disk(dir, "release-nixos")?),
        (None, Some(t), _) => a.s3.target(None, Some(t))?,
        (None, None, Some(t)) => {
            let s3 = cli::S3Args {
                s3_endpoint: a.s3.s3_endpoint.clone().or(config.s3_endpoint.clone()),
                s3_region: a.s3.s3_region.clone().or(config.s3_region.clone()),
            };
            s3.target(None, Some(t))
                .with_context(|| format!("{}: target", a.config.display()))?
        }
        (None, None, None) => anyhow::bail!(
            "release-nixos needs --dir DIR, --target DIR|s3://BUCKET/PREFIX, or a `target` in \
             the config"
        ),
    };
    let (dir, bucket) = match target {
        nixipfs::storage::Target::Dir(dir) => (dir, None),
        nixipfs::storage::Target::S3(location) => (a.tmpdir.join("s3-releases"), Some(location)),
    };
    let ipfs = if !a.no_ipfs && !a.print.print_only {
        let threads = config.max_ipfs_threads.unwrap_or(4);
        let profile = config.cid_profile.unwrap_or(Profile::DEFAULT);
        Some(a.ipfs.to_options(dir.clone(), true, threads, profile)?)
    } else {
        None
    };
    let opts = release_nixos::ReleaseNixosOptions {
        fetch: a.fetch.to_config(config.max_threads)?,
        dir,
        bucket,
        tmpdir: a.tmpdir,
        print_only: a.print.print_only,
        print_format: a.print.print_format.format(),
        gc: a.gc,
        wait_lock: a.wait_lock,
        force: a.force,
        skip_images: a.skip_images,
        trusted_keys: a.sigs.keys()?,
        check_sigs: !a.sigs.no_check_sigs,
        check_nar_hash: !a.nar_check.no_check_nar_hash,
        ipfs,
        config,
    };
    let mut stdout = std::io::stdout();
    let report = runtime()?.block_on(release_nixos::run(&opts, &mut stdout))?;
    stdout.flush().context("cannot write to standard output")?;
    release_metrics(metrics, &report);
    for c in &report.channels {
        if let (None, Some(r)) = (&c.error, &c.release) {
            tracing::info!(
                "{}: {}{}",
                c.channel,
                r.display(),
                if c.moved { " (channel moved)" } else { "" }
            );
        }
    }
    if let Some(gc) = &report.gc {
        tracing::info!(
            "gc: deleted {} releases, {} narinfos and {} NARs ({})",
            report.releases_deleted.len(),
            gc.narinfos,
            gc.nars,
            progress::human_bytes(gc.bytes)
        );
    }
    if let Some(published) = &report.ipfs {
        tracing::info!("create-nixipfs: {}", published.summary());
    }
    if report.is_success() {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("error: release-nixos finished with failures:");
    for c in &report.channels {
        if let Some(e) = &c.error {
            eprintln!("  {}: {e}", c.channel);
        }
    }
    for e in &report.errors {
        eprintln!("  {e}");
    }
    Ok(ExitCode::FAILURE)
}
