//! The `kinetid-wsdump` binary: parse flags, run a command, map errors to an exit code.

use clap::Parser;
mod cli;
mod cmd;
mod shell;

use cli::{Cli, Command};
use std::io::IsTerminal;
use std::process::ExitCode;

/// Log lines in the style of every other message the tool prints:
/// `kinetid-wsdump: warning: ...` (no timestamp, no module path).
struct OneStyle;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for OneStyle
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut w: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(w, "kinetid-wsdump: {level}: ")?;
        ctx.field_format().format_fields(w.by_ref(), event)?;
        writeln!(w)
    }
}

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
        .event_format(OneStyle)
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
                Err(e) => Err(shell::AppError::Io("stdout".into(), e)),
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
