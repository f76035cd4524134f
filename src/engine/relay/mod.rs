//! The proxy's relay: what goes from one side to the other, and when.
//!
//! A [`Relay`] sits between a device and its upstream after the upgrade. It
//! follows the frames of both directions as the bytes stream by (only a
//! header, at most 14 bytes, is ever held), applies the faults asked for
//! (delay, jitter, bandwidth, stall, pings taken out), slips injected frames
//! in at frame boundaries, and decides when the connection ends: both sides
//! done, one side gone quiet after the other ended its own, or a cut asked
//! for. It takes bytes, ends of stream, injections and the clock, and
//! returns what to write to which side and when to wake; the driver moves
//! bytes and nothing else.
//!
//! What a side sent (or what was injected into its stream) is handed back
//! through the `seen` callback exactly as it went on the wire of that
//! direction, for the annotator, with the relay's own notes at the point
//! in the stream where they apply.

use crate::note::{self, Code, Note, Severity};
use crate::wire::codes::{Direction, OpCode};
use crate::wire::frame::{parse_header, HeaderParse};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Faults applied to one direction of every connection (toxiproxy-style),
/// for testing how firmware copes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    /// Added before each chunk is forwarded.
    pub delay: Duration,
    /// Up to this much more, at random, per chunk (order is kept).
    pub jitter: Duration,
    /// Bytes per second at most.
    pub bandwidth: Option<u64>,
    /// Stop reading this direction at all.
    pub stall: bool,
    /// Take ping frames out of this direction (every other byte passes).
    pub drop_pings: bool,
}

impl Faults {
    /// No fault at all.
    pub fn is_none(&self) -> bool {
        *self == Faults::default()
    }

    /// The faults in words, for the note that says they apply.
    pub fn describe(&self) -> String {
        let mut v = Vec::new();
        if !self.delay.is_zero() || !self.jitter.is_zero() {
            let jitter = if self.jitter.is_zero() {
                String::new()
            } else {
                format!(" + up to {} ms jitter", self.jitter.as_millis())
            };
            v.push(format!("delay {} ms{jitter}", self.delay.as_millis()));
        }
        if let Some(b) = self.bandwidth {
            v.push(format!("at most {b} bytes/s"));
        }
        if self.stall {
            v.push("stalled (never read)".into());
        }
        if self.drop_pings {
            v.push("ping frames dropped".into());
        }
        v.join(", ")
    }
}

/// When to drop both connections without a Close.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cut {
    /// This long after the upgrade.
    After(Duration),
    /// After this many frames (both directions, injected ones included).
    Frames(u64),
}

/// What the relay was set up with.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RelayConfig {
    /// Faults of device-to-upstream bytes.
    pub up: Faults,
    /// Faults of upstream-to-device bytes.
    pub down: Faults,
    /// Drop both sides at some point.
    pub cut: Option<Cut>,
    /// Seed of the jitter's random numbers.
    pub seed: u64,
}

/// Bytes waiting in one direction, at most (then that side is not read
/// until they drain).
pub const LANE_MAX: usize = 16 << 20;

/// How long one side may stay open after the other ended its side.
pub const HALF_OPEN_LINGER: Duration = Duration::from_secs(10);

/// Injected frames waiting for a boundary, at most (past that the driver's
/// channel fills and the API answers 503).
pub const PENDING_MAX: usize = 16;

/// Something to do to one side's socket.
#[derive(Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Write these bytes.
    Bytes(Vec<u8>),
    /// End the writing side (the other side ended its own).
    Shutdown,
}

/// Why the relay is done with the connection.
#[derive(Debug, Clone, PartialEq)]
pub enum End {
    /// Both sides ended theirs and everything was written.
    Closed,
    /// Close both connections now, with this note (a cut, a half-open
    /// connection left too long) shown first.
    Drop(Note),
}

/// What the relay hands back about a direction's stream, in stream order.
#[derive(Debug, PartialEq)]
pub enum Seen<'a> {
    /// These bytes went into the stream (from its sender, or injected).
    Bytes(&'a [u8]),
    /// A note of the relay's, at this point of the stream.
    Note(Note),
}

/// One direction's forwarding: what is due when.
#[derive(Debug)]
struct Lane {
    faults: Faults,
    /// Chunks to write, with when; `None` is the end (half-close).
    queue: VecDeque<(Instant, Option<Vec<u8>>)>,
    queued: usize,
    /// When the link is free again (bandwidth), and the last due time.
    free_at: Instant,
    last_due: Instant,
    /// The reading side is still open.
    open: bool,
    /// Bytes left of the frame being passed (or dropped), and a header
    /// being gathered.
    frame_left: u64,
    dropping: bool,
    header: Vec<u8>,
    /// Injected frames waiting for the next frame boundary.
    pending: VecDeque<Vec<u8>>,
}

/// What [`Lane::walk`] found in a chunk.
struct Walked {
    /// The bytes to forward (without dropped pings).
    out: Vec<u8>,
    /// Ping frames taken out.
    dropped: u32,
    /// Frames that ended in the chunk.
    ended: u64,
    /// The first frame boundary, as (offset in the chunk, offset in `out`).
    first_bound: Option<(usize, usize)>,
}

impl Lane {
    fn new(faults: Faults, now: Instant) -> Lane {
        Lane {
            faults,
            queue: VecDeque::new(),
            queued: 0,
            free_at: now,
            last_due: now,
            open: true,
            frame_left: 0,
            dropping: false,
            header: Vec::new(),
            pending: VecDeque::new(),
        }
    }

    /// Follow the frames through `b`.
    fn walk(&mut self, mut b: &[u8]) -> Walked {
        let total = b.len();
        let mut w = Walked {
            out: Vec::with_capacity(b.len()),
            dropped: 0,
            ended: 0,
            first_bound: None,
        };
        while !b.is_empty() {
            if self.frame_left == 0 {
                self.header.push(b[0]);
                b = &b[1..];
                let HeaderParse::Header(h) = parse_header(&self.header) else {
                    continue;
                };
                self.dropping = self.faults.drop_pings && h.opcode == OpCode::Ping;
                if self.dropping {
                    w.dropped += 1;
                } else {
                    w.out.extend_from_slice(&self.header);
                }
                self.header.clear();
                self.frame_left = h.payload_len;
            } else {
                let n = self.frame_left.min(b.len() as u64) as usize;
                if !self.dropping {
                    w.out.extend_from_slice(&b[..n]);
                }
                self.frame_left -= n as u64;
                b = &b[n..];
            }
            if self.at_boundary() {
                w.ended += 1;
                w.first_bound.get_or_insert((total - b.len(), w.out.len()));
            }
        }
        w
    }

    /// Is the stream read so far at a frame boundary?
    fn at_boundary(&self) -> bool {
        self.frame_left == 0 && self.header.is_empty()
    }

    fn readable(&self) -> bool {
        self.open && !self.faults.stall && self.queued < LANE_MAX
    }

    /// Queue a chunk (or the end) to go out when the faults allow.
    fn push(&mut self, bytes: Option<Vec<u8>>, now: Instant, random: f64) {
        let f = self.faults;
        let mut due = now + f.delay + f.jitter.mul_f64(random);
        if let (Some(rate), Some(b)) = (f.bandwidth, &bytes) {
            let start = self.free_at.max(now);
            self.free_at = start + Duration::from_secs_f64(b.len() as f64 / rate as f64);
            due = due.max(self.free_at);
        }
        // Order is kept: nothing overtakes what came before it.
        due = due.max(self.last_due);
        self.last_due = due;
        self.queued += bytes.as_ref().map_or(0, Vec::len);
        self.queue.push_back((due, bytes));
    }

    fn next_due(&self) -> Option<Instant> {
        self.queue.front().map(|(d, _)| *d)
    }
}

/// The relay of one proxied connection (both directions).
#[derive(Debug)]
pub struct Relay {
    /// Device to upstream, upstream to device.
    lanes: [Lane; 2],
    cut: Option<Cut>,
    cut_at: Option<Instant>,
    /// Frames that ended, both ways.
    frames: u64,
    /// Set once one side has ended: the other must end by then.
    linger: Option<Instant>,
    rng: u64,
}

fn lane_of(dir: Direction) -> usize {
    usize::from(dir == Direction::S2C)
}

fn side(dir: Direction) -> &'static str {
    match dir {
        Direction::C2S => "device",
        Direction::S2C => "upstream",
    }
}

impl Relay {
    /// A relay for a connection upgraded at `now`. The notes that say which
    /// faults apply are handed to `seen` at once.
    pub fn new(cfg: RelayConfig, now: Instant, seen: &mut dyn FnMut(Direction, Seen<'_>)) -> Relay {
        for (dir, f, way) in [
            (Direction::C2S, cfg.up, "device->upstream"),
            (Direction::S2C, cfg.down, "upstream->device"),
        ] {
            if !f.is_none() {
                let what = format!("fault applied to {way}: {}", f.describe());
                seen(
                    dir,
                    Seen::Note(relay_note(Severity::Info, Code::ProxyFault, what)),
                );
            }
        }
        Relay {
            lanes: [Lane::new(cfg.up, now), Lane::new(cfg.down, now)],
            cut: cfg.cut,
            cut_at: match cfg.cut {
                Some(Cut::After(d)) => Some(now + d),
                _ => None,
            },
            frames: 0,
            linger: None,
            rng: cfg.seed | 1,
        }
    }

    /// A number in [0, 1) for the jitter (xorshift64*).
    fn random(&mut self) -> f64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn push(&mut self, k: usize, bytes: Option<Vec<u8>>, now: Instant) {
        // A header still being gathered: nothing to write yet.
        if bytes.as_ref().is_some_and(Vec::is_empty) {
            return;
        }
        let r = if self.lanes[k].faults.jitter.is_zero() {
            0.0
        } else {
            self.random()
        };
        self.lanes[k].push(bytes, now, r);
    }

    /// Should the driver read from the side that sends in `dir`?
    pub fn readable(&self, dir: Direction) -> bool {
        self.lanes[lane_of(dir)].readable()
    }

    /// May another frame be injected now?
    pub fn can_inject(&self) -> bool {
        self.lanes.iter().map(|l| l.pending.len()).sum::<usize>() < PENDING_MAX
    }

    /// Frames that ended so far, both ways.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Bytes read from the side sending in `dir`.
    pub fn on_read(
        &mut self,
        dir: Direction,
        chunk: &[u8],
        now: Instant,
        seen: &mut dyn FnMut(Direction, Seen<'_>),
    ) {
        let k = lane_of(dir);
        let w = self.lanes[k].walk(chunk);
        self.frames += w.ended;
        if w.dropped > 0 {
            let what = format!(
                "fault applied: {} ping frame(s) taken out of this direction",
                w.dropped
            );
            seen(
                dir,
                Seen::Note(relay_note(Severity::Info, Code::ProxyFault, what)),
            );
        }
        match w.first_bound {
            // Injected frames wait for the first boundary: the chunk is
            // split there, for the wire and for the annotator alike.
            Some((at, out_at)) if !self.lanes[k].pending.is_empty() => {
                let mut out = w.out;
                let rest = out.split_off(out_at);
                seen(dir, Seen::Bytes(&chunk[..at]));
                self.push(k, Some(out), now);
                self.inject_pending(dir, now, seen);
                seen(dir, Seen::Bytes(&chunk[at..]));
                self.push(k, Some(rest), now);
            }
            _ => {
                seen(dir, Seen::Bytes(chunk));
                self.push(k, Some(w.out), now);
            }
        }
    }

    /// The side sending in `dir` ended its stream (or failed).
    pub fn on_eof(&mut self, dir: Direction, now: Instant) {
        let k = lane_of(dir);
        if !self.lanes[k].open {
            return;
        }
        self.lanes[k].open = false;
        self.push(k, None, now);
        self.linger.get_or_insert(now + HALF_OPEN_LINGER);
    }

    /// A frame to slip into `dir`'s stream: at once at a frame boundary,
    /// else after the frame being read. Refused (returned) when
    /// [`Relay::can_inject`] says no.
    pub fn inject(
        &mut self,
        dir: Direction,
        frame: Vec<u8>,
        now: Instant,
        seen: &mut dyn FnMut(Direction, Seen<'_>),
    ) -> Result<(), Vec<u8>> {
        if !self.can_inject() {
            return Err(frame);
        }
        let k = lane_of(dir);
        self.lanes[k].pending.push_back(frame);
        if self.lanes[k].at_boundary() {
            self.inject_pending(dir, now, seen);
        }
        Ok(())
    }

    /// Send the injected frames waiting in `dir` (its stream is at a frame
    /// boundary), each marked.
    fn inject_pending(
        &mut self,
        dir: Direction,
        now: Instant,
        seen: &mut dyn FnMut(Direction, Seen<'_>),
    ) {
        let k = lane_of(dir);
        while let Some(frame) = self.lanes[k].pending.pop_front() {
            let what = format!(
                "injected by the proxy: the next frame ({} bytes) is not from the {}",
                frame.len(),
                side(dir)
            );
            seen(
                dir,
                Seen::Note(relay_note(Severity::Info, Code::ProxyInjected, what)),
            );
            seen(dir, Seen::Bytes(&frame));
            self.frames += 1;
            self.push(k, Some(frame), now);
        }
    }

    /// The next write that is due by `now`, as (direction of travel, what):
    /// `C2S` goes to the upstream, `S2C` to the device.
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(Direction, Transmit)> {
        for (k, dir) in [(0, Direction::C2S), (1, Direction::S2C)] {
            let lane = &mut self.lanes[k];
            if lane.next_due().is_some_and(|d| d <= now) {
                let (_, b) = lane.queue.pop_front()?;
                return Some(match b {
                    Some(b) => {
                        lane.queued -= b.len();
                        (dir, Transmit::Bytes(b))
                    }
                    None => (dir, Transmit::Shutdown),
                });
            }
        }
        None
    }

    /// When the driver must call again if nothing arrives.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let due = self.lanes.iter().filter_map(Lane::next_due);
        due.chain(self.linger).chain(self.cut_at).min()
    }

    /// Is the connection over? Ask after writing what is due.
    pub fn poll_end(&mut self, now: Instant) -> Option<End> {
        if let Some(Cut::Frames(n)) = self.cut {
            if self.frames >= n {
                return Some(cut(&format!("after {} frames", self.frames)));
            }
        }
        // The last side's end is queued as a marker: once it is written,
        // nothing else can come.
        if self.lanes.iter().all(|l| !l.open && l.queue.is_empty()) {
            return Some(End::Closed);
        }
        if self.cut_at.is_some_and(|t| t <= now) {
            let after = match self.cut {
                Some(Cut::After(d)) => format!("{} s after the upgrade", d.as_secs_f64()),
                _ => String::new(),
            };
            return Some(cut(&after));
        }
        if self.linger.is_some_and(|t| t <= now) {
            let (gone, open) = if self.lanes[0].open {
                ("upstream", "device")
            } else {
                ("device", "upstream")
            };
            let what = format!(
                "the {gone} ended its side {} s ago and the {open} never ended its own; both connections closed",
                HALF_OPEN_LINGER.as_secs()
            );
            return Some(End::Drop(relay_note(
                Severity::Warning,
                Code::HalfOpenTimeout,
                what,
            )));
        }
        None
    }
}

fn relay_note(sev: Severity, code: Code, what: String) -> Note {
    note::listener(sev, code, what)
}

/// A cut: both connections dropped without a Close, as a cable pulled.
fn cut(when: &str) -> End {
    let what = format!(
        "fault applied: both connections dropped {when}, without a Close (the peers see 1006)"
    );
    End::Drop(relay_note(Severity::Warning, Code::ProxyFault, what))
}

#[cfg(test)]
mod tests;
