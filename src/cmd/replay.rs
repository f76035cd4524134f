//! `kinetid-wsdump replay`: files (or standard input) through the annotator.

use super::{config, printer, AppError};
use crate::cli::{DirArg, ReplayArgs};
use kinetid_wsdump::annotate::{Config, Event};
use kinetid_wsdump::capture::{Chunk, ChunkKind};
use kinetid_wsdump::escape::Esc;
use kinetid_wsdump::frame::Direction;
use kinetid_wsdump::render::Format;
use kinetid_wsdump::render::Printer;
use kinetid_wsdump::replay::{self, Replayer, Stats};
use std::io::Write;
use std::path::Path;

/// Run `replay` from flags.
pub fn run(a: ReplayArgs) -> Result<u8, AppError> {
    let p = printer(&a.output);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut run = Run {
        a: &a,
        p,
        cfg: config(
            &a.limits,
            !a.no_kinetid,
            a.resync,
            Some(kinetid_wsdump::deflate::ServerPolicy::default()),
        ),
        total: Stats::default(),
        file_error: false,
        conn_base: 0,
    };
    for path in &a.files {
        run.file(path, &mut out)?;
    }
    if run.file_error {
        return Ok(2);
    }
    if a.strict && run.total.errors > 0 {
        eprintln!(
            "kinetid-wsdump: --strict: {} error notes, {} warnings",
            run.total.errors, run.total.warnings
        );
        return Ok(1);
    }
    Ok(0)
}

/// One `replay` run over its files.
struct Run<'a> {
    a: &'a ReplayArgs,
    p: Printer,
    cfg: Config,
    total: Stats,
    file_error: bool,
    /// Connections are numbered across files, so "conn 3" names one connection.
    conn_base: u64,
}

fn stdout_err(e: std::io::Error) -> AppError {
    AppError::Io("stdout".into(), e)
}

impl Run<'_> {
    fn file(&mut self, path: &Path, out: &mut dyn Write) -> Result<(), AppError> {
        let (name, bytes) = read_input(path)?;
        if bytes.is_empty() {
            eprintln!(
                "kinetid-wsdump: {}: empty file: nothing to replay",
                Esc(&name)
            );
            self.file_error = true;
            return Ok(());
        }
        if self.a.files.len() > 1 {
            let line = match self.p.format {
                Format::Json => format!("{}\n", serde_json::json!({"type": "file", "path": name})),
                Format::Text => format!("=== {} ===\n", Esc(&name)),
                Format::Summary => format!("# {}\n", Esc(&name)),
            };
            out.write_all(line.as_bytes()).map_err(stdout_err)?;
        }
        let parsed = self.parse(&name, bytes)?;
        let mut r = Replayer::new(self.cfg);
        let mut events = Vec::new();
        let mut last_conn = self.conn_base;
        for c in &parsed.chunks {
            let mut c = c.clone();
            c.conn += self.conn_base;
            last_conn = last_conn.max(c.conn);
            r.chunk_split(&c, self.a.chunk, &mut events);
            self.emit(&mut events, out)?;
        }
        self.conn_base = last_conn;
        r.finish(&mut events);
        self.emit(&mut events, out)?;
        out.flush().map_err(stdout_err)?;
        if let Some(err) = parsed.error {
            eprintln!(
                "kinetid-wsdump: {}: {err} (everything before it is shown above)",
                Esc(&name)
            );
            self.file_error = true;
        }
        Ok(())
    }

    fn parse(&self, name: &str, bytes: Vec<u8>) -> Result<replay::Parsed, AppError> {
        if self.a.raw {
            let dir = match self.a.dir {
                DirArg::C2s => Direction::C2S,
                DirArg::S2c => Direction::S2C,
            };
            return Ok(replay::Parsed {
                chunks: vec![Chunk {
                    time: None,
                    conn: 1,
                    kind: ChunkKind::Data(dir, bytes),
                }],
                error: None,
            });
        }
        match std::str::from_utf8(&bytes) {
            Ok(t) => Ok(replay::parse_text(t)),
            Err(e) => Err(AppError::Usage(format!(
                "{}: byte {}: not a text fixture or capture (invalid UTF-8); use --raw for binary files",
                Esc(name),
                e.valid_up_to()
            ))),
        }
    }

    fn emit(&mut self, events: &mut Vec<Event>, out: &mut dyn Write) -> Result<(), AppError> {
        for e in events.drain(..) {
            self.total.add(&e);
            self.p.event(out, &e).map_err(stdout_err)?;
        }
        Ok(())
    }
}

/// A file's name for messages and its bytes; `-` is standard input.
fn read_input(path: &Path) -> Result<(String, Vec<u8>), AppError> {
    if path.as_os_str() == "-" {
        let name = "standard input".to_string();
        let mut b = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut b)
            .map_err(|e| AppError::Io(name.clone(), e))?;
        return Ok((name, b));
    }
    let name = path.display().to_string();
    let b = std::fs::read(path).map_err(|e| AppError::Io(name.clone(), e))?;
    Ok((name, b))
}
