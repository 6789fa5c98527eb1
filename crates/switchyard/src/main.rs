//! `switchyard`: the command-line entry point. Parses arguments with clap and hands each
//! subcommand to its module under `cli/`; the only place that decides exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cli;

/// mimalloc instead of glibc's malloc: the data plane allocates on its threads and the log
/// writer frees on its own, where glibc's `free` was the largest single cost per request.
/// Built without transparent huge pages (`no_thp`): with them the gateway's memory grew in
/// 2 MiB steps (BENCHMARKS.md, "Proxy cost").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Gateway and controller for safe ML model rollouts.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Play the whole story (shadow, canary, rollback, A/B, blue-green) on shipped models.
    Demo(cli::demo::DemoArgs),
    /// Run the gateway from a configuration file.
    Serve(cli::serve::ServeArgs),
    /// Validate a configuration file and list every problem.
    Check(cli::serve::CheckArgs),
    /// Bearer tokens for named credentials: `token new` makes one, `token hash` hashes one.
    Token(cli::token::TokenArgs),
    /// Judge a candidate on recorded requests (a CSV or JSONL file, or the prediction log)
    /// with the shadow's rules, before it sees live traffic.
    Replay(cli::replay::ReplayArgs),
    /// Run a statistical test directly (the engine the controller uses for its decisions).
    Stats(cli::stats::StatsArgs),
    /// Operator commands over the admin API: apply, status, promote, rollback, pause, resume,
    /// approve, abort, events, report, audit.
    #[command(flatten)]
    Admin(cli::admin::AdminCommand),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("SWITCHYARD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Demo(args) => cli::demo::run(args),
        Command::Serve(args) => cli::serve::serve(args),
        Command::Check(args) => cli::serve::check(args),
        Command::Replay(args) => cli::replay::run(args),
        Command::Stats(args) => cli::stats::run(args),
        Command::Token(args) => cli::token::run(args),
        Command::Admin(command) => cli::admin::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if let Some(verdict) = err.downcast_ref::<cli::replay::Verdict>() {
                eprintln!("{verdict}");
                return ExitCode::from(verdict.exit_code());
            }
            eprintln!("error: {err:#}");
            if err.downcast_ref::<cli::InputError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
