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
    /// The next chunk's Kinetid reading, read ahead ([`Replayer::offer`]).
    ahead: Option<Box<crate::kinetid::ahead::Ahead>>,
}

impl Replayer {
    /// A replayer with annotator settings (`handshake` is decided per connection).
    pub fn new(cfg: Config) -> Self {
        Replayer {
            cfg,
            anns: BTreeMap::new(),
            across: crate::annotate::across::Across::new(),
            ahead: None,
        }
    }

    /// The Kinetid reading of the next chunk, made where it was read: its
    /// connection's annotator uses it if a message's text is the text it
    /// was made of (see [`crate::kinetid::ahead`]).
    pub fn offer(&mut self, a: Box<crate::kinetid::ahead::Ahead>) {
        self.ahead = Some(a);
    }

    /// What [`Replayer::offer`] was given, after the chunk (its reading
    /// taken out if a message used it), to be freed where it was made.
    pub fn unclaimed(&mut self) -> Option<Box<crate::kinetid::ahead::Ahead>> {
        self.ahead.take()
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
                let offered = self.ahead.take();
                let a = self.seen(c.conn);
                if let Some(r) = offered {
                    a.offer(*dir, r);
                }
                a.feed(*dir, bytes, c.time, out);
                self.ahead = a.unclaimed(*dir);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinetid::ahead::Ahead;
    use crate::wire::frame::{encode_frame, Direction, EncodeOptions, OpCode};

    fn report(seq: u64) -> String {
        format!(
            r#"{{"t":"report","id":{},"dev":"KN-A4CF12F0E1B2","ts":{},"seq":{seq},"on":true,"power_w":12.5,"energy_wh":100.25}}"#,
            seq + 2,
            1_700_000_040 + 60 * seq
        )
    }

    fn chunk(text: &str) -> Chunk {
        let mut b = Vec::new();
        encode_frame(
            &mut b,
            OpCode::Text,
            text.as_bytes(),
            EncodeOptions::for_role(Direction::C2S.sender()),
        );
        Chunk {
            time: Some(1.0),
            conn: 1,
            pkt: None,
            kind: ChunkKind::Data(Direction::C2S, b),
        }
    }

    /// A reading offered with a chunk is used when a message's text is the
    /// one it was made of, and only then; the events are the same either way.
    #[test]
    fn an_offered_reading_is_used_for_its_own_text_only_and_changes_nothing() {
        let texts: Vec<String> = (0..4).map(report).collect();
        let chunks: Vec<Chunk> = texts.iter().map(|t| chunk(t)).collect();
        let plain = annotate_all(&chunks, Config::default(), None);
        let mut r = Replayer::new(Config::default());
        let mut got = Vec::new();
        let mut used = 0;
        for (i, c) in chunks.iter().enumerate() {
            // The third chunk is offered the reading of another text.
            let of = if i == 2 { &chunks[3] } else { c };
            let ChunkKind::Data(dir, b) = &of.kind else {
                unreachable!()
            };
            r.offer(Ahead::of_frame(*dir, b).expect("a whole text frame"));
            let from = got.len();
            r.chunk(c, &mut got);
            let back = r.unclaimed().expect("the reading comes back");
            let gave = got[from..].iter().any(|e| match &e.kind {
                EventKind::Message(m) => m.kinetid.as_deref().is_some_and(|k| back.gave(k)),
                _ => false,
            });
            assert_eq!(gave, i != 2, "chunk {i}");
            used += usize::from(gave);
        }
        r.finish(&mut got);
        assert_eq!(used, 3);
        assert_eq!(format!("{got:?}"), format!("{plain:?}"));
    }
}
