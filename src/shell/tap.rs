//! The tap: where a driver hands every chunk of bytes it saw and every
//! note it has, and what happens to them, the same for every command:
//! record (`--record`) -> annotate -> hold the tool's own web traffic out of
//! view -> causes across connections -> count -> publish (the inspector) ->
//! filter -> print (a line sink that never blocks the connection).

use crate::shell::inspect::Bus;
use crate::shell::ownweb::OwnWeb;
use crate::shell::sinks::{LineSink, Recorder};
use kinetid_wsdump::annotate::across::Across;
use kinetid_wsdump::annotate::filter::{Filter, Spec};
use kinetid_wsdump::annotate::{Annotator, Config, Event};
use kinetid_wsdump::capture::{Chunk, ChunkKind};
use kinetid_wsdump::note::Note;
use kinetid_wsdump::render::Printer;
use kinetid_wsdump::wire::frame::Direction;
use std::sync::{Arc, Mutex};

/// Counting what is shown (metrics, exit summaries): a command's own.
pub trait Count: Send + Sync {
    /// One event shown of a connection (the tool's own web traffic is not).
    fn event(&self, e: &Event);
}

/// Counting nothing.
pub struct NoCount;

impl Count for NoCount {
    fn event(&self, _: &Event) {}
}

/// Where the events of every connection of a command go.
pub struct Outputs {
    /// How events are printed.
    pub printer: Printer,
    /// The annotated output (`None` with `--quiet`).
    pub out: Option<LineSink>,
    /// `--record`.
    pub record: Option<Arc<Recorder>>,
    /// The inspector's event bus.
    pub bus: Bus,
    /// Causes that span connections (`None`: a driver whose connections are
    /// its own doing, as certify's reconnects are).
    pub across: Option<Mutex<Across>>,
    /// What to show (`--conn`, `--device`, ...); empty shows everything.
    pub filter: Spec,
    /// `--show-http`: the tool's own web traffic shown too.
    pub show_http: bool,
}

/// One connection's tap.
pub struct Tap {
    conn: u64,
    ann: Annotator,
    filter: Option<Box<Filter>>,
    web: OwnWeb,
    outs: Arc<Outputs>,
    count: Arc<dyn Count>,
}

impl Tap {
    /// The tap of connection `conn`.
    pub fn new(conn: u64, cfg: Config, outs: Arc<Outputs>, count: Arc<dyn Count>) -> Tap {
        Tap {
            conn,
            ann: Annotator::new(conn, cfg),
            filter: (!outs.filter.is_empty()).then(|| Box::new(Filter::new(outs.filter.clone()))),
            web: OwnWeb::new(outs.show_http),
            outs,
            count,
        }
    }

    /// The connection's annotator.
    pub fn annotator(&self) -> &Annotator {
        &self.ann
    }

    /// The connection's annotator, to ask or set up.
    pub fn annotator_mut(&mut self) -> &mut Annotator {
        &mut self.ann
    }

    /// Whether this connection is the tool's own web traffic.
    pub fn web(&mut self) -> &mut OwnWeb {
        &mut self.web
    }

    fn record(&self, t: f64, kind: ChunkKind) {
        if let Some(r) = &self.outs.record {
            r.record(&Chunk {
                time: Some(t),
                conn: self.conn,
                pkt: None,
                kind,
            });
        }
    }

    /// The connection opened, from `peer`.
    pub fn open(&mut self, peer: &str, t: f64) {
        self.record(t, ChunkKind::Open(peer.to_string()));
        let mut ev = Vec::new();
        self.ann.open(peer, Some(t), &mut ev);
        self.emit(&ev);
    }

    /// Bytes seen in `dir` at `t`: recorded, annotated and shown. The
    /// events are returned for the driver's state machines.
    pub fn bytes(&mut self, dir: Direction, bytes: &[u8], t: f64) -> Vec<Event> {
        if self.outs.record.is_some() {
            self.record(t, ChunkKind::Data(dir, bytes.to_vec()));
        }
        let mut ev = Vec::new();
        self.ann.feed(dir, bytes, Some(t), &mut ev);
        self.emit(&ev);
        ev
    }

    /// A note of the driver's about `dir`, at `t`.
    pub fn notice(&mut self, dir: Direction, n: Note, t: f64) {
        self.record(t, ChunkKind::Note(dir, n.clone()));
        let mut ev = Vec::new();
        self.ann.notice(dir, n, Some(t), &mut ev);
        self.emit(&ev);
    }

    /// The connection ended at `t`: what was held is shown, the end too.
    pub fn finish(&mut self, t: f64) {
        self.release();
        self.record(t, ChunkKind::Eof);
        let mut ev = Vec::new();
        self.ann.finish(Some(t), &mut ev);
        self.emit(&ev);
    }

    /// Show what the own-web check holds (its request line was not the
    /// tool's own after all, or the connection is going no further).
    pub fn release(&mut self) {
        let held = self.web.show();
        self.emit_now(&held);
    }

    /// Show events the own-web check held for a head that is now whole.
    pub fn head_seen(&mut self, head: &[u8]) {
        let held = self.web.head_bytes(head);
        self.emit_now(&held);
    }

    fn emit(&mut self, ev: &[Event]) {
        if let Some(ev) = self.web.pass(ev) {
            self.emit_now(ev);
        }
    }

    fn emit_now(&mut self, ev: &[Event]) {
        if ev.is_empty() {
            return;
        }
        let mut more = Vec::new();
        if let Some(across) = &self.outs.across {
            let mut across = across.lock().expect("across");
            for e in ev {
                across.observe(e, &mut more);
            }
        }
        self.batch(ev);
        if !more.is_empty() {
            self.batch(&more);
        }
    }

    fn batch(&mut self, ev: &[Event]) {
        for e in ev {
            self.count.event(e);
        }
        self.outs.bus.publish(ev);
        let Some(out) = &self.outs.out else { return };
        let mut buf = Vec::new();
        match self.filter.as_mut() {
            None => {
                for e in ev {
                    let _ = self.outs.printer.event(&mut buf, e);
                }
            }
            Some(f) => {
                let mut shown = Vec::new();
                for e in ev {
                    f.pass(e.clone(), &mut shown);
                }
                for e in &shown {
                    let _ = self.outs.printer.event(&mut buf, e);
                }
            }
        }
        // Never waits: a stalled reader loses lines (counted), not devices.
        out.push(buf);
    }
}
