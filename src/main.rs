//! The `portcullis` binary: parse the command line (`cli`), then serve (`app`) or run
//! one of the other commands (`commands`).

mod app;
mod cli;
mod commands;

use std::process::ExitCode;

use clap::Parser;
use portcullis::observe::access_log::LogFormat;

use cli::{Cli, Command};

/// mimalloc's per-thread heaps: glibc's malloc (arena locks, consolidation of freed
/// chunks) was a tenth of the CPU of a proxied request and a third of a compile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    keep_huge_pages_off();
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("portcullis: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Transparent huge pages off for this process: mimalloc asks for them on its arenas,
/// and a 2 MiB page is resident whole once any of it is touched. With them an idle
/// keep-alive connection cost 34.5 KiB, without them 22.6 KiB (`bench/idle.sh`, 10,000
/// connections); the allocator's own switch (`MIMALLOC_ALLOW_THP`) is read before
/// `main` runs, so this asks the kernel instead.
fn keep_huge_pages_off() {
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and touches no memory of ours.
    let _ = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Crd(args) if args.markdown => {
            print!("{}", commands::crd_markdown()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Crd(_) => {
            print!("{}", commands::crd_yaml()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check(args) => Ok(commands::check(&args)),
        Command::ClientJwks(args) => {
            print!("{}", commands::client_jwks(&args.key)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Diagnose(args) => runtime()?.block_on(commands::diagnose(args)),
        Command::Explain(command) => commands::explain(command),
        Command::Demo(args) => {
            app::init_tracing(LogFormat::Alb);
            runtime()?.block_on(portcullis::demo::run(portcullis::demo::DemoOptions {
                port: args.port,
                ports_file: args.ports_file,
            }))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => {
            app::init_tracing(args.proxy.log_format);
            runtime()?.block_on(app::serve(*args))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run(args) => {
            app::init_tracing(args.proxy.log_format);
            runtime()?.block_on(app::run_in_cluster(*args))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
