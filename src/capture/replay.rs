//! Replaying recorded or hand-written byte streams through the annotator.

use crate::annotate::{Annotator, Config, Event, EventKind, HandshakeMode};
pub use crate::capture::Parsed;
use crate::capture::{self, Chunk, ChunkKind};
use crate::note::Severity;
use std::collections::BTreeMap;

/// Counts over a run, for `--strict` and the exit summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames decoded.
    pub frames: u64,
    /// Messages completed.
    pub messages: u64,
    /// Notes of severity error.
    pub errors: u64,
    /// Notes of severity warning.
    pub warnings: u64,
    /// Notes of severity info.
    pub infos: u64,
    /// Upgrade requests the server answered with another status than 101
    /// (a refusal is the server's decision, not a broken rule).
    pub refused: u64,
}

impl Stats {
    /// Count one event.
    pub fn add(&mut self, e: &Event) {
        match &e.kind {
            EventKind::Frame(_) => self.frames += 1,
            EventKind::Message(_) => self.messages += 1,
            EventKind::HeadError(_) => self.errors += 1,
            EventKind::Request {
                verdict: Some(v), ..
            } if !v.accepted() => self.errors += 1,
            EventKind::Response { verdict, .. }
                if verdict.status != 101 && verdict.error.is_some() =>
            {
                self.refused += 1
            }
            EventKind::Response { verdict, .. } if verdict.error.is_some() => self.errors += 1,
            _ => {}
        }
        for n in e.notes() {
            match n.severity {
                Severity::Error => self.errors += 1,
                Severity::Warning => self.warnings += 1,
                Severity::Info => self.infos += 1,
            }
        }
    }
}

/// Feeds chunks of many connections to their annotators.
#[derive(Debug)]
pub struct Replayer {
    cfg: Config,
    anns: BTreeMap<u64, Annotator>,
    /// What devices do from one connection to the next.
    across: crate::annotate::across::Across,
}

impl Replayer {
    /// A replayer with annotator settings (`handshake` is decided per connection).
    pub fn new(cfg: Config) -> Self {
        Replayer {
            cfg,
            anns: BTreeMap::new(),
            across: crate::annotate::across::Across::new(),
        }
    }

    /// Process one chunk.
    pub fn chunk(&mut self, c: &Chunk, out: &mut Vec<Event>) {
        let from = out.len();
        self.chunk_events(c, out);
        if c.pkt.is_some() {
            for e in &mut out[from..] {
                e.pkt = c.pkt;
            }
        }
        self.across_connections(from, out);
    }

    /// Causes across connections, found in the events from `from` on.
    fn across_connections(&mut self, from: usize, out: &mut Vec<Event>) {
        let mut more = Vec::new();
        for e in &out[from..] {
            self.across.observe(e, &mut more);
        }
        out.extend(more);
    }

    /// The connection's annotator; one seen first without an `open` (a
    /// fixture, a capture cut at its start) detects whether a head comes.
    fn seen(&mut self, conn: u64) -> &mut Annotator {
        let cfg = Config {
            handshake: HandshakeMode::Detect,
            ..self.cfg
        };
        self.anns
            .entry(conn)
            .or_insert_with(|| Annotator::new(conn, cfg))
    }

    fn chunk_events(&mut self, c: &Chunk, out: &mut Vec<Event>) {
        match &c.kind {
            ChunkKind::Open(peer) => {
                let mut ann = Annotator::new(
                    c.conn,
                    Config {
                        handshake: HandshakeMode::Expect,
                        ..self.cfg
                    },
                );
                // A capture's "client -> server:port".
                if let Some(port) = peer
                    .split_once(" -> ")
                    .and_then(|(_, srv)| srv.rsplit(':').next())
                    .and_then(|p| p.parse().ok())
                {
                    ann.set_server_port(port);
                }
                ann.open(peer, c.time, out);
                self.anns.insert(c.conn, ann);
            }
            ChunkKind::Data(dir, bytes) => {
                self.seen(c.conn).feed(*dir, bytes, c.time, out);
            }
            ChunkKind::Note(dir, n) => {
                if let Some(a) = self.anns.get(&c.conn) {
                    a.notice(*dir, n.clone(), c.time, out);
                }
            }
            ChunkKind::Gap(dir, n) => {
                self.seen(c.conn).gap(*dir, *n, c.time, out);
            }
            ChunkKind::Eof => {
                if let Some(mut a) = self.anns.remove(&c.conn) {
                    a.finish(c.time, out);
                }
            }
        }
    }

    /// End every connection still open.
    pub fn finish(&mut self, out: &mut Vec<Event>) {
        let from = out.len();
        for (_, mut a) in std::mem::take(&mut self.anns) {
            a.finish(None, out);
        }
        self.across_connections(from, out);
    }
}

/// Parse a file's text in whichever text format it is in.
pub fn parse_text(text: &str) -> Parsed {
    capture::parse_text(text)
}

impl Replayer {
    /// Process one chunk, re-split into pieces of `split` bytes when given
    /// (the output must not change: that is what `--chunk` demonstrates).
    pub fn chunk_split(&mut self, c: &Chunk, split: Option<usize>, out: &mut Vec<Event>) {
        match (&c.kind, split) {
            (ChunkKind::Data(d, b), Some(n)) if n > 0 => {
                for piece in b.chunks(n) {
                    let kind = ChunkKind::Data(*d, piece.to_vec());
                    self.chunk(
                        &Chunk {
                            time: c.time,
                            conn: c.conn,
                            pkt: c.pkt,
                            kind,
                        },
                        out,
                    );
                }
            }
            _ => self.chunk(c, out),
        }
    }
}

/// Annotate whole chunks, optionally re-split into pieces of `split` bytes.
pub fn annotate_all(chunks: &[Chunk], cfg: Config, split: Option<usize>) -> Vec<Event> {
    let mut r = Replayer::new(cfg);
    let mut out = Vec::new();
    for c in chunks {
        r.chunk_split(c, split, &mut out);
    }
    r.finish(&mut out);
    out
}
