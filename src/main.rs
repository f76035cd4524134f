//! The `kinetid-wsdump` binary: parse flags, run a command, map errors to an exit code.

use clap::Parser;
mod cli;
mod cmd;

use cli::{Cli, Command};
use std::io::IsTerminal;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KINETID_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        // No colour codes in a redirected stderr (a log file, a CI log).
        .with_ansi(
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::Replay(a) => cmd::replay(a),
        Command::Listen(a) => cmd::listen(a),
        Command::EmulateDevice(a) => cmd::emulate(a),
        Command::Proxy(a) => cmd::proxy(a),
        Command::Certify(a) => cmd::certify::run(a),
        Command::Completions { shell } => {
            use clap::CommandFactory;
            let mut c = Cli::command();
            clap_complete::generate(shell, &mut c, "kinetid-wsdump", &mut std::io::stdout());
            Ok(0)
        }
        Command::Man => {
            use clap::CommandFactory;
            let page = clap_mangen::Man::new(Cli::command());
            match page.render(&mut std::io::stdout()) {
                Ok(()) => Ok(0),
                Err(e) => Err(cmd::AppError::Io("stdout".into(), e)),
            }
        }
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) if e.is_broken_pipe() => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kinetid-wsdump: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}
