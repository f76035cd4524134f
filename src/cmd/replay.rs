//! `kinetid-wsdump replay`: files (or standard input) through the annotator.

use super::{config, printer, AppError};
use crate::cli::{DirArg, ReplayArgs};
use kinetid_wsdump::capture::{Chunk, ChunkKind};
use kinetid_wsdump::escape::Esc;
use kinetid_wsdump::frame::Direction;
use kinetid_wsdump::render::Format;
use kinetid_wsdump::replay::{self, Replayer, Stats};
use std::io::Write;

/// Run `replay` from flags.
pub fn run(a: ReplayArgs) -> Result<u8, AppError> {
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
