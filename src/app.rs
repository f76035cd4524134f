//! Command entry points: turn flags into config and run.

use crate::annotate::Config;
use crate::capture::{Chunk, ChunkKind};
use crate::cli::{ColorChoice, DirArg, EmulateArgs, LimitArgs, ListenArgs, OutputArgs, ReplayArgs};
use crate::escape::Esc;
use crate::frame::Direction;
use crate::handshake::Limits;
use crate::render::{Format, Printer};
use crate::replay::{self, Replayer, Stats};
use std::fmt;
use std::io::{IsTerminal, Write};

/// Errors a command ends with.
#[derive(Debug)]
pub enum AppError {
    /// Reading or writing failed.
    Io(String, std::io::Error),
    /// The user asked for something that cannot work.
    Usage(String),
    /// A runtime failure (network, handshake).
    Failed(String),
}

impl AppError {
    /// Writing to a closed pipe (`| head`) is not an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, AppError::Io(_, e) if e.kind() == std::io::ErrorKind::BrokenPipe)
    }
    /// Exit status: 2 for usage and input problems, 3 for runtime failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            AppError::Usage(_) | AppError::Io(..) => 2,
            AppError::Failed(_) => 3,
        }
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Io(what, e) => write!(f, "{what}: {e}"),
            AppError::Usage(s) | AppError::Failed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for AppError {}

/// Build a printer from flags.
pub fn printer(o: &OutputArgs) -> Printer {
    let color = match o.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    };
    Printer {
        format: o.format,
        color,
        max_dump: o.max_dump,
    }
}

/// Build the annotator config from flags.
pub fn config(l: &LimitArgs, kinetid: bool) -> Config {
    Config {
        max_frame: l.max_frame,
        max_message: l.max_message,
        limits: Limits {
            max_head_bytes: l.max_head,
            max_headers: l.max_headers,
        },
        kinetid,
        handshake: crate::annotate::HandshakeMode::Expect,
    }
}

/// `replay`.
pub fn replay(a: ReplayArgs) -> Result<u8, AppError> {
    let p = printer(&a.output);
    let cfg = config(&a.limits, !a.no_kinetid);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut total = Stats::default();
    let mut file_error = false;
    let several = a.files.len() > 1;
    // Connections are numbered across files, so "conn 3" names one connection.
    let mut conn_base = 0u64;
    for path in &a.files {
        let stdin = path.as_os_str() == "-";
        let name = if stdin {
            "standard input".to_string()
        } else {
            path.display().to_string()
        };
        let bytes = if stdin {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b)
                .map_err(|e| AppError::Io(name.clone(), e))?;
            b
        } else {
            std::fs::read(path).map_err(|e| AppError::Io(name.clone(), e))?
        };
        if bytes.is_empty() {
            eprintln!(
                "kinetid-wsdump: {}: empty file: nothing to replay",
                Esc(&name)
            );
            file_error = true;
            continue;
        }
        if several {
            let line = match p.format {
                Format::Json => format!("{}\n", serde_json::json!({"type": "file", "path": name})),
                Format::Text => format!("=== {} ===\n", Esc(&name)),
                Format::Summary => format!("# {}\n", Esc(&name)),
            };
            out.write_all(line.as_bytes())
                .map_err(|e| AppError::Io("stdout".into(), e))?;
        }
        let parsed = if a.raw {
            let dir = if a.dir == DirArg::C2s {
                Direction::C2S
            } else {
                Direction::S2C
            };
            replay::Parsed {
                chunks: vec![Chunk {
                    time: None,
                    conn: 1,
                    kind: ChunkKind::Data(dir, bytes),
                }],
                error: None,
            }
        } else {
            match std::str::from_utf8(&bytes) {
                Ok(t) => replay::parse_text(t),
                Err(e) => {
                    return Err(AppError::Usage(format!(
                        "{name}: byte {}: not a text fixture or capture (invalid UTF-8); use --raw for binary files",
                        e.valid_up_to()
                    )))
                }
            }
        };
        let mut r = Replayer::new(cfg);
        let mut events = Vec::new();
        let emit =
            |events: &mut Vec<_>, out: &mut dyn Write, total: &mut Stats| -> Result<(), AppError> {
                for e in events.drain(..) {
                    total.add(&e);
                    p.event(out, &e)
                        .map_err(|e| AppError::Io("stdout".into(), e))?;
                }
                Ok(())
            };
        let mut last_conn = conn_base;
        for c in &parsed.chunks {
            let mut c = c.clone();
            c.conn += conn_base;
            last_conn = last_conn.max(c.conn);
            r.chunk_split(&c, a.chunk, &mut events);
            emit(&mut events, &mut out, &mut total)?;
        }
        conn_base = last_conn;
        r.finish(&mut events);
        emit(&mut events, &mut out, &mut total)?;
        out.flush().map_err(|e| AppError::Io("stdout".into(), e))?;
        if let Some(err) = parsed.error {
            eprintln!(
                "kinetid-wsdump: {}: {err} (everything before it is shown above)",
                Esc(&name)
            );
            file_error = true;
        }
    }
    if file_error {
        return Ok(2);
    }
    if a.strict && total.errors > 0 {
        eprintln!(
            "kinetid-wsdump: --strict: {} error notes, {} warnings",
            total.errors, total.warnings
        );
        return Ok(1);
    }
    Ok(0)
}

/// `listen`.
pub fn listen(a: ListenArgs) -> Result<u8, AppError> {
    crate::listen::run(a)
}

/// `emulate-device`.
pub fn emulate(a: EmulateArgs) -> Result<u8, AppError> {
    crate::emulate::run(a)
}
