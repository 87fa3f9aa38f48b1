//! The `nixipfs` binary: parse the command line, run the subcommand, print the error chain once.
//!
//! Exit codes: 0 success; 1 failure (including an incomplete mirror); 2 usage errors and
//! subcommands that are not available.

mod cli;

use std::io::Write;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use cli::{Cli, Command};
use nixipfs::commands::{
    cid, create_channel_release, create_nixipfs, garbage_collect, release_nixos, status,
    update_binary_cache, verify,
};
use nixipfs::ipfs::profile::Profile;
use nixipfs::verify::NarCheck;

/// Requests in flight when neither the command line nor the config says.
const DEFAULT_CONCURRENCY: usize = 32;
use nixipfs::progress;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            if is_broken_pipe(&err) {
                return ExitCode::SUCCESS;
            }
            progress::suspend(|| eprintln!("error: {err:#}"));
            ExitCode::FAILURE
        }
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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
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

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::UpdateBinaryCache(a) => {
            let opts = update_binary_cache::UpdateBinaryCacheOptions {
                release: a.release,
                outdir: a.outdir,
                cache_url: a.cache,
                fetch: a.fetch.to_config(DEFAULT_CONCURRENCY)?,
                print_only: a.print_only,
                trusted_keys: a.sigs.keys()?,
                check_sigs: !a.sigs.no_check_sigs,
                check_nar_hash: !a.nar_check.no_check_nar_hash,
                wait_lock: a.wait_lock,
            };
            let mut stdout = std::io::stdout();
            let report = runtime()?.block_on(update_binary_cache::run(&opts, &mut stdout))?;
            stdout.flush().context("cannot write to standard output")?;
            tracing::info!("update-binary-cache: {}", report.summary());
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
            let opts = garbage_collect::GarbageCollectOptions {
                cache: a.cache,
                releases: a.releases,
                dry_run: a.dry_run,
                wait_lock: a.wait_lock,
            };
            let mut stdout = std::io::stdout().lock();
            garbage_collect::run(&opts, &mut stdout)?;
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
                publish: a
                    .ipfs
                    .to_options(a.dir.clone(), !a.no_node, 4, Profile::DEFAULT)?,
                wait_lock: a.wait_lock,
            };
            let mut stdout = std::io::stdout();
            let report = runtime()?.block_on(create_nixipfs::run(&opts, &mut stdout))?;
            stdout.flush().context("cannot write to standard output")?;
            tracing::info!("create-nixipfs: {}", report.summary());
            Ok(ExitCode::SUCCESS)
        }
        Command::ReleaseNixos(a) => release_nixos_cmd(a),
        Command::Status(a) => {
            let opts = status::StatusOptions {
                dir: a.dir,
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
            let opts = verify::VerifyOptions {
                dir: a.dir,
                nars: match (a.quick, a.full) {
                    (true, _) => NarCheck::Size,
                    (false, true) => NarCheck::Full,
                    (false, false) => NarCheck::FileHash,
                },
                trusted_keys: cli::parse_keys(&a.trusted_public_keys)?,
            };
            let mut stdout = std::io::stdout().lock();
            let report = verify::run(&opts, &mut stdout)?;
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

fn release_nixos_cmd(a: cli::ReleaseNixosArgs) -> Result<ExitCode> {
    let config = nixipfs::config::load(&a.config)?;
    let ipfs = if !a.no_ipfs && !a.print_only {
        let threads = config.max_ipfs_threads.unwrap_or(4);
        let profile = config.cid_profile.unwrap_or(Profile::DEFAULT);
        Some(a.ipfs.to_options(a.dir.clone(), true, threads, profile)?)
    } else {
        None
    };
    let opts = release_nixos::ReleaseNixosOptions {
        fetch: a.fetch.to_config(config.max_threads)?,
        dir: a.dir,
        tmpdir: a.tmpdir,
        print_only: a.print_only,
        gc: a.gc,
        wait_lock: a.wait_lock,
        force: a.force,
        trusted_keys: a.sigs.keys()?,
        check_sigs: !a.sigs.no_check_sigs,
        check_nar_hash: !a.nar_check.no_check_nar_hash,
        ipfs,
        config,
    };
    let mut stdout = std::io::stdout();
    let report = runtime()?.block_on(release_nixos::run(&opts, &mut stdout))?;
    stdout.flush().context("cannot write to standard output")?;
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
