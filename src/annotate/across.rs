//! Causes that span connections: what one device does from one connection
//! to the next, which no single connection shows.
//!
//! * the same masking keys, in the same order, on every connection (RFC
//!   6455 5.3 and 10.3 want unpredictable keys: a generator seeded the same
//!   at every boot sends the same sequence, as Go's `math/rand` did before
//!   it was seeded by default);
//! * the same `Sec-WebSocket-Key` on every connection (RFC 6455 4.1: a
//!   fresh random nonce per connection);
//! * reconnects with no back-off: a storm of connections a fraction of a
//!   second apart, or retries at one fixed interval (the Kinetid contract's
//!   back-off starts at 1 s and doubles to 60 s, reset after a `welcome`);
//! * `seq` reset, or unacknowledged reports not resent, across a reconnect
//!   (the contract resends them after the next `welcome` with their
//!   original `seq` and `ts`);
//! * a report `ts` a whole number of hours (or half hours) off the clock
//!   the bytes were seen by: a device clock on local time instead of UTC.
//!
//! A device is known by the id its `hello` gives; before that (a refused
//! upgrade, a connection that never says hello) by its IP address. Fed
//! every event of every connection in order, like the annotator it follows;
//! pure, bounded (a fixed number of devices and connections remembered),
//! and each note is raised once per device and cause.

use crate::annotate::{Event, EventKind};
use crate::kinetid::msg::Msg;
use crate::note::{Code, Note};
use crate::wire::frame::Direction;
use crate::Map as HashMap;
use std::collections::{BTreeSet, VecDeque};

/// Masking keys compared per connection: the first this many c2s frames.
const KEYS: usize = 3;
/// Devices (or addresses) remembered; past it the table starts again.
const MAX_WHO: usize = 4096;
/// Connections followed at once; past it the oldest are forgotten.
const MAX_CONNS: usize = 65_536;
/// Unacknowledged reports remembered per plug.
const MAX_UNACKED: usize = 256;
/// A reconnect sooner than this after the previous connection ended is
/// no back-off at all (the contract's first wait is 1 s, plus jitter).
const STORM_GAP_S: f64 = 0.5;
/// Reconnects that sooner in a row make a storm.
const STORM_COUNT: usize = 3;
/// Retries without a welcome in between whose waits never grow, in a row,
/// to say the back-off does not double.
const FLAT_COUNT: usize = 4;
/// Tolerance around a whole (or half) hour for a clock on local time.
const CLOCK_SLACK_S: f64 = 90.0;

#[derive(Debug, Default)]
struct Conn {
    ip: String,
    dev: Option<String>,
    start: Option<f64>,
    ws_key: Option<String>,
    keys: Vec<[u8; 4]>,
    keys_judged: bool,
    key_judged: bool,
    backoff_judged: bool,
    welcomed: bool,
    clock_told: bool,
    /// Report ids sent on this connection: (plug, seq).
    sent: HashMap<u64, (std::sync::Arc<str>, u64)>,
    /// Reports seen on this connection, per plug (the first few are
    /// judged against what earlier connections left unacknowledged).
    reports: HashMap<String, u32>,
    ended: bool,
}

#[derive(Debug, Default)]
struct Past {
    /// Connection number and its first masking keys.
    key_seqs: VecDeque<(u64, Vec<[u8; 4]>)>,
    /// Connection number and its Sec-WebSocket-Key.
    ws_keys: VecDeque<(u64, String)>,
    /// When the last connection ended, and whether it got a welcome.
    last_end: Option<(f64, bool)>,
    /// Waits before recent reconnects (seconds), none welcomed since.
    waits: VecDeque<f64>,
    told: BTreeSet<Code>,
}

#[derive(Debug, Default)]
struct Plug {
    max_sent: Option<u64>,
    /// Sent and not acknowledged: seq, and the connection it was last
    /// sent on (a resend moves it to the new one).
    unacked: std::collections::BTreeMap<u64, u64>,
    told_forgotten: bool,
    told_reset: bool,
}

/// The memory across connections (one per listener, proxy or replay run).
#[derive(Debug, Default)]
pub struct Across {
    conns: HashMap<u64, Conn>,
    order: VecDeque<u64>,
    who: HashMap<String, Past>,
    /// Keyed by a shared name: a report's id remembers its plug without
    /// a copy of the name each.
    plugs: HashMap<std::sync::Arc<str>, Plug>,
}

fn ip_of(peer: &str) -> String {
    // "192.0.2.1:5000", "[::1]:5000", or a capture's "a:1 -> b:2".
    let client = peer.split(" -> ").next().unwrap_or(peer);
    match client.strip_prefix('[') {
        Some(r) => r.split(']').next().unwrap_or(r).to_string(),
        None => client
            .rsplit_once(':')
            .map_or(client, |(h, _)| h)
            .to_string(),
    }
}

fn hexkeys(k: &[[u8; 4]]) -> String {
    k.iter().map(hex::encode).collect::<Vec<_>>().join(" ")
}

impl Across {
    /// A new, empty memory.
    pub fn new() -> Across {
        Across::default()
    }

    /// Look at one event; notes found are returned as notice events on
    /// the connection that shows them.
    pub fn observe(&mut self, e: &Event, out: &mut Vec<Event>) {
        let mut notes: Vec<Note> = Vec::new();
        match &e.kind {
            EventKind::Open { peer } => {
                if self.conns.len() >= MAX_CONNS {
                    if let Some(old) = self.order.pop_front() {
                        self.conns.remove(&old);
                    }
                }
                self.order.push_back(e.conn);
                self.conns.insert(
                    e.conn,
                    Conn {
                        ip: ip_of(peer),
                        start: e.time,
                        ..Conn::default()
                    },
                );
            }
            EventKind::Request { head, .. } => {
                if let Some(c) = self.conns.get_mut(&e.conn) {
                    c.ws_key = head.get("sec-websocket-key").map(str::to_string);
                }
            }
            EventKind::Frame(f) if e.dir == Direction::C2S => {
                let Some(c) = self.conns.get_mut(&e.conn) else {
                    return;
                };
                if c.keys.len() < KEYS {
                    if let Some(k) = f.header.mask {
                        c.keys.push(k.0);
                    }
                    if c.keys.len() == KEYS && c.dev.is_some() {
                        self.judge_keys(e.conn, &mut notes);
                    }
                }
            }
            EventKind::Message(m) => {
                if let Some(k) = &m.kinetid {
                    self.message(e, &k.typed, &mut notes);
                }
            }
            EventKind::End { .. } => self.ended(e, &mut notes),
            _ => {}
        }
        for note in notes {
            out.push(Event {
                conn: e.conn,
                dir: Direction::C2S,
                offset: e.offset,
                time: e.time,
                pkt: e.pkt,
                kind: EventKind::Notice { note },
            });
        }
    }

    /// A Kinetid message: who a connection is (hello), whether it was
    /// welcomed, its reports and their acks.
    fn message(&mut self, e: &Event, typed: &Option<Msg>, notes: &mut Vec<Note>) {
        match (typed, e.dir) {
            (Some(Msg::Hello(h)), Direction::C2S) => {
                if let (Some(dev), Some(c)) = (&h.dev, self.conns.get_mut(&e.conn)) {
                    if c.dev.is_none() {
                        c.dev = Some(dev.clone());
                        self.identified(e.conn, notes);
                    }
                }
            }
            (Some(Msg::Welcome(_)), Direction::S2C) => {
                if let Some(c) = self.conns.get_mut(&e.conn) {
                    c.welcomed = true;
                }
            }
            (Some(Msg::Report(r)), Direction::C2S) => {
                if let (Some(dev), Some(seq)) = (&r.dev, r.seq) {
                    self.report(e, dev, seq, r.id, notes);
                }
                if let (Some(ts), Some(t)) = (r.ts, e.time) {
                    self.clock(e.conn, r.dev.as_deref(), ts, t, notes);
                }
            }
            (Some(Msg::Ack(a)), Direction::S2C) => {
                let sent =
                    a.re.and_then(|re| self.conns.get_mut(&e.conn)?.sent.remove(&re));
                if let Some((dev, seq)) = sent {
                    if let Some(p) = self.plugs.get_mut(&*dev) {
                        p.unacked.remove(&seq);
                    }
                }
            }
            _ => {}
        }
    }

    /// Who a connection is: its device, else its address.
    fn who_of(c: &Conn) -> String {
        match &c.dev {
            Some(d) => d.clone(),
            None => format!("address {}", c.ip),
        }
    }

    fn past(&mut self, who: &str) -> &mut Past {
        if !self.who.contains_key(who) && self.who.len() >= MAX_WHO {
            self.who.clear();
        }
        self.who.entry(who.to_string()).or_default()
    }

    /// The device said who it is: judge what waited for that.
    fn identified(&mut self, conn: u64, notes: &mut Vec<Note>) {
        self.judge_backoff(conn, notes);
        self.judge_ws_key(conn, notes);
        if self.conns.get(&conn).is_some_and(|c| c.keys.len() == KEYS) {
            self.judge_keys(conn, notes);
        }
    }

    fn ended(&mut self, e: &Event, notes: &mut Vec<Note>) {
        let conn = e.conn;
        // A connection that never said who it is is judged by its address.
        self.judge_backoff(conn, notes);
        self.judge_ws_key(conn, notes);
        self.judge_keys(conn, notes);
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        c.ended = true;
        let (who, welcomed) = (Self::who_of(c), c.welcomed);
        let at = e.time.or(c.start);
        if let Some(t) = at {
            self.past(&who).last_end = Some((t, welcomed));
        }
        self.conns.remove(&conn);
    }

    fn judge_keys(&mut self, conn: u64, notes: &mut Vec<Note>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.keys_judged || c.keys.len() < KEYS {
            return;
        }
        c.keys_judged = true;
        let keys = c.keys.clone();
        if keys.windows(2).all(|w| w[0] == w[1]) {
            // One key repeated: the per-frame warning already says so.
            return;
        }
        let who = Self::who_of(c);
        let past = self.past(&who);
        let earlier = past
            .key_seqs
            .iter()
            .find(|(_, k)| *k == keys)
            .map(|(n, _)| *n);
        if past.key_seqs.len() >= 8 {
            past.key_seqs.pop_front();
        }
        past.key_seqs.push_back((conn, keys.clone()));
        if let Some(n) = earlier {
            if past.told.insert(Code::MaskKeysRepeatAcross) {
                notes.push(Note::warning(
                    Code::MaskKeysRepeatAcross,
                    "RFC 6455 5.3, 10.3",
                    format!("{who} masks its first {KEYS} frames with the same keys ({}) as on connection {n}: its key generator starts from the same seed on every connection or boot (an unseeded pseudo-random generator, such as Go's math/rand before Go 1.20 or rand() without srand()), so its keys are predictable; seed it from a hardware random source", hexkeys(&keys)),
                ));
            }
        }
    }

    fn judge_ws_key(&mut self, conn: u64, notes: &mut Vec<Note>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.key_judged {
            return;
        }
        c.key_judged = true;
        let Some(key) = c.ws_key.clone() else {
            return;
        };
        let who = Self::who_of(c);
        let past = self.past(&who);
        let earlier = past
            .ws_keys
            .iter()
            .find(|(_, k)| *k == key)
            .map(|(n, _)| *n);
        if past.ws_keys.len() >= 8 {
            past.ws_keys.pop_front();
        }
        past.ws_keys.push_back((conn, key.clone()));
        if let Some(n) = earlier {
            if past.told.insert(Code::HandshakeKeyReused) {
                notes.push(Note::warning(
                    Code::HandshakeKeyReused,
                    "RFC 6455 4.1",
                    format!("{who} sent Sec-WebSocket-Key {key} again, as on connection {n}: the key must be a fresh random 16-byte nonce for every connection; a constant key, or one from an unseeded generator, lets a cache or proxy replay an old answer"),
                ));
            }
        }
    }

    fn judge_backoff(&mut self, conn: u64, notes: &mut Vec<Note>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.backoff_judged {
            return;
        }
        c.backoff_judged = true;
        let Some(start) = c.start else { return };
        let who = Self::who_of(c);
        let past = self.past(&who);
        let Some((end, welcomed)) = past.last_end else {
            return;
        };
        let wait = start - end;
        if welcomed {
            // The back-off starts again after a welcome.
            past.waits.clear();
        }
        if !(0.0..3600.0).contains(&wait) {
            return;
        }
        past.waits.push_back(wait);
        if past.waits.len() > 8 {
            past.waits.pop_front();
        }
        let w: Vec<f64> = past.waits.iter().copied().collect();
        let n = w.len();
        if n >= STORM_COUNT
            && w[n - STORM_COUNT..].iter().all(|x| *x < STORM_GAP_S)
            && past.told.insert(Code::ReconnectStorm)
        {
            notes.push(Note::warning(
                Code::ReconnectStorm,
                "kinetid v1",
                format!("{who} reconnected {STORM_COUNT} times in a row within {STORM_GAP_S} s of losing the connection (last waits {}): no back-off; the contract waits 1 s, then doubles to 60 s with jitter, so a fleet does not hammer a backend that is down", waits_text(&w[n - STORM_COUNT..])),
            ));
        } else if n >= FLAT_COUNT
            && w[n - FLAT_COUNT..]
                .iter()
                .all(|x| *x >= STORM_GAP_S && *x < 30.0)
            && w[n - FLAT_COUNT..].windows(2).all(|p| p[1] < p[0] * 1.5)
            && past.told.insert(Code::ReconnectNoBackoff)
        {
            notes.push(Note::warning(
                Code::ReconnectNoBackoff,
                "kinetid v1",
                format!("{who} retried {FLAT_COUNT} times without a welcome at waits that do not grow ({}): the back-off does not double (the contract: 1 s, 2 s, 4 s ... up to 60 s, with jitter, reset after a welcome)", waits_text(&w[n - FLAT_COUNT..])),
            ));
        }
    }

    fn report(&mut self, e: &Event, dev: &str, seq: u64, id: Option<u64>, notes: &mut Vec<Note>) {
        let Some(c) = self.conns.get_mut(&e.conn) else {
            return;
        };
        let name = match self.plugs.get_key_value(dev) {
            Some((k, _)) => k.clone(),
            None => {
                if self.plugs.len() >= MAX_WHO {
                    self.plugs.clear();
                }
                let k: std::sync::Arc<str> = dev.into();
                self.plugs.insert(k.clone(), Plug::default());
                k
            }
        };
        if let Some(id) = id {
            if c.sent.len() < 4096 {
                c.sent.insert(id, (name, seq));
            }
        }
        // Looked up by the borrowed id: a key is copied only when new.
        let full = c.reports.len() >= 4096;
        let nth = match c.reports.get_mut(dev) {
            Some(n) => {
                *n = n.saturating_add(1);
                *n
            }
            None if !full => {
                c.reports.insert(dev.to_string(), 1);
                1
            }
            None => u32::MAX,
        };
        let p = self.plugs.get_mut(dev).expect("just made");
        // A resend of a report an earlier connection left unacknowledged.
        let was_unacked = p.unacked.contains_key(&seq);
        if was_unacked {
            p.unacked.insert(seq, e.conn);
        }
        if nth == 1 && !was_unacked {
            if let Some(max) = p.max_sent {
                if seq + 1 < max && !p.told_reset {
                    p.told_reset = true;
                    notes.push(Note::warning(
                        Code::KinetidSeqReset,
                        crate::kinetid::SPEC,
                        format!("{dev} starts this connection at seq {seq} after reaching {max} on an earlier one: the counter was reset (a reboot that lost it); the contract keeps seq counting up across reconnects so the backend can drop duplicates"),
                    ));
                }
            }
        }
        // Resends come first after a welcome: a new report among the
        // connection's first few, past reports an earlier connection left
        // unacknowledged and this one has not resent, means they were
        // forgotten. (Bounded: at most MAX_UNACKED looked at, 16 times a
        // connection.)
        if nth <= 16 && !was_unacked && !p.told_forgotten {
            let forgotten: Vec<u64> = p
                .unacked
                .iter()
                .filter(|(s, conn)| **s < seq && **conn != e.conn)
                .map(|(s, _)| *s)
                .collect();
            if !forgotten.is_empty() {
                p.told_forgotten = true;
                notes.push(Note::warning(
                    Code::KinetidReportsForgotten,
                    crate::kinetid::SPEC,
                    format!("{dev} sent seq {seq} without first resending {} unacknowledged from an earlier connection ({}): the firmware forgets reports that were not acknowledged; the contract resends them after the next welcome with their original seq and ts", forgotten.len(), seq_list(&forgotten)),
                ));
                for s in &forgotten {
                    p.unacked.remove(s);
                }
            }
        }
        p.max_sent = Some(p.max_sent.map_or(seq, |m| m.max(seq)));
        if id.is_some() {
            p.unacked.insert(seq, e.conn);
            while p.unacked.len() > MAX_UNACKED {
                p.unacked.pop_first();
            }
        }
    }

    fn clock(&mut self, conn: u64, dev: Option<&str>, ts: u64, seen: f64, notes: &mut Vec<Note>) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if c.clock_told {
            return;
        }
        let off = ts as f64 - seen;
        let halves = (off / 1800.0).round();
        if halves.abs() < 2.0
            || halves.abs() > 28.0
            || (off - halves * 1800.0).abs() > CLOCK_SLACK_S
        {
            return;
        }
        c.clock_told = true;
        let hours = halves / 2.0;
        let dev = dev.unwrap_or("the device");
        notes.push(Note::warning(
            Code::KinetidClockOff,
            crate::kinetid::SPEC,
            format!("{dev}'s report ts is {} h {} the clock these bytes were seen by: a device clock on local time (UTC{:+}) instead of UTC, which the contract's ts is; reports then land {} h off in the backend", hours.abs(), if off > 0.0 { "ahead of" } else { "behind" }, hours, hours.abs()),
        ));
    }
}

fn waits_text(w: &[f64]) -> String {
    w.iter()
        .map(|x| format!("{x:.2} s"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn seq_list(s: &[u64]) -> String {
    if s.len() <= 6 {
        s.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
    } else {
        format!("{} to {}", s[0], s[s.len() - 1])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotate::{Annotator, Config};
    use crate::wire::frame::{encode_frame, EncodeOptions, MaskKey, OpCode};

    /// One connection's events: open at `t`, upgrade with `ws_key`, the
    /// device's messages masked with `keys` (cycled), the server's
    /// answers, then the end at `t + 1`.
    struct Run {
        across: Across,
        next: u64,
        notes: Vec<(u64, String)>,
    }

    impl Run {
        fn new() -> Run {
            Run {
                across: Across::new(),
                next: 0,
                notes: Vec::new(),
            }
        }

        fn conn(&mut self, t: f64, ws_key: &str, keys: &[[u8; 4]], c2s: &[String], s2c: &[String]) {
            self.next += 1;
            let mut a = Annotator::new(self.next, Config::default());
            let mut ev = Vec::new();
            a.open("192.0.2.7:40000", Some(t), &mut ev);
            let req = format!("GET /ws HTTP/1.1\r\nHost: h:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {ws_key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: kinetid.v1\r\n\r\n");
            a.feed(Direction::C2S, req.as_bytes(), Some(t), &mut ev);
            let resp = crate::wire::handshake::accept_key(ws_key);
            let resp = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {resp}\r\nSec-WebSocket-Protocol: kinetid.v1\r\n\r\n");
            a.feed(Direction::S2C, resp.as_bytes(), Some(t), &mut ev);
            for (i, m) in c2s.iter().enumerate() {
                let mut b = Vec::new();
                encode_frame(
                    &mut b,
                    OpCode::Text,
                    m.as_bytes(),
                    EncodeOptions {
                        mask: Some(MaskKey(keys[i % keys.len()])),
                        ..EncodeOptions::client()
                    },
                );
                a.feed(Direction::C2S, &b, Some(t + 0.1), &mut ev);
                if let Some(r) = s2c.get(i) {
                    let mut b = Vec::new();
                    encode_frame(&mut b, OpCode::Text, r.as_bytes(), EncodeOptions::server());
                    a.feed(Direction::S2C, &b, Some(t + 0.2), &mut ev);
                }
            }
            a.finish(Some(t + 1.0), &mut ev);
            let mut out = Vec::new();
            for e in &ev {
                self.across.observe(e, &mut out);
            }
            for e in out {
                if let EventKind::Notice { note } = e.kind {
                    self.notes.push((e.conn, note.code.as_str().to_string()));
                }
            }
        }

        fn codes(&self) -> Vec<&str> {
            self.notes.iter().map(|(_, c)| c.as_str()).collect()
        }
    }

    const DEV: &str = "KN-A4CF12F0E1B2";

    fn hello() -> String {
        format!(r#"{{"t":"hello","id":1,"dev":"{DEV}","role":"active"}}"#)
    }

    fn report(id: u64, seq: u64, ts: u64) -> String {
        format!(
            r#"{{"t":"report","id":{id},"dev":"{DEV}","ts":{ts},"seq":{seq},"on":true,"power_w":1.0,"energy_wh":1.0}}"#
        )
    }

    fn welcome() -> String {
        r#"{"t":"welcome","re":1,"ts":1767225600,"period_s":60}"#.to_string()
    }

    fn ack(re: u64) -> String {
        format!(r#"{{"t":"ack","re":{re}}}"#)
    }

    const T0: f64 = 1_767_225_600.0;
    const K: [[u8; 4]; 3] = [
        [0x42, 0x04, 0xcb, 0x9a],
        [0x1e, 0x34, 0xc5, 0xf0],
        [0x8e, 0x9b, 0x20, 0xaa],
    ];

    #[test]
    fn a_healthy_device_raises_nothing() {
        let mut r = Run::new();
        let mut t = T0;
        for n in 0..4u64 {
            let keys = [[n as u8, 1, 2, 3], [n as u8, 4, 5, 6], [n as u8, 7, 8, 9]];
            let key = crate::wire::handshake::random_key();
            r.conn(
                t,
                &key,
                &keys,
                &[hello(), report(2, 10 + n, T0 as u64 + 60 * n)],
                &[welcome(), ack(2)],
            );
            t += 60.0 * 2f64.powi(n as i32) + 1.0;
        }
        assert!(r.codes().is_empty(), "{:?}", r.codes());
    }

    #[test]
    fn the_same_keys_and_nonce_on_every_connection_are_found_once() {
        let mut r = Run::new();
        for n in 0..3 {
            r.conn(
                T0 + 10.0 * n as f64,
                "dGhlIHNhbXBsZSBub25jZQ==",
                &K,
                &[
                    hello(),
                    report(2, 1 + n, T0 as u64),
                    report(3, 2 + n, T0 as u64),
                ],
                &[welcome(), ack(2), ack(3)],
            );
        }
        let c = r.codes();
        assert_eq!(
            c.iter()
                .filter(|c| **c == "mask-keys-repeat-across-connections")
                .count(),
            1,
            "{c:?}"
        );
        assert_eq!(
            c.iter().filter(|c| **c == "handshake-key-reused").count(),
            1,
            "{c:?}"
        );
        assert_eq!(r.notes[0].0, 2, "said on the second connection");
    }

    #[test]
    fn a_storm_and_a_flat_retry_are_named() {
        let mut r = Run::new();
        let mut t = T0;
        for _ in 0..4 {
            r.conn(
                t,
                &crate::wire::handshake::random_key(),
                &K[..1],
                &[hello()],
                &[],
            );
            t += 1.1; // ended at t + 1, back 0.1 s later
        }
        assert_eq!(r.codes(), ["reconnect-storm"]);
        let mut r = Run::new();
        let mut t = T0;
        for _ in 0..6 {
            r.conn(
                t,
                &crate::wire::handshake::random_key(),
                &K[..1],
                &[hello()],
                &[],
            );
            t += 6.0; // a fixed 5 s retry
        }
        assert_eq!(r.codes(), ["reconnect-no-backoff"]);
    }

    #[test]
    fn unacknowledged_reports_forgotten_and_a_seq_reset_across_reconnects() {
        let mut r = Run::new();
        let ts = T0 as u64;
        // seq 5 acked, 6 and 7 never; then the plug goes on at 8.
        r.conn(
            T0,
            &crate::wire::handshake::random_key(),
            &K[..1],
            &[
                hello(),
                report(2, 5, ts),
                report(3, 6, ts),
                report(4, 7, ts),
            ],
            &[welcome(), ack(2)],
        );
        r.conn(
            T0 + 5.0,
            &crate::wire::handshake::random_key(),
            &K[..1],
            &[hello(), report(2, 8, ts)],
            &[welcome(), ack(2)],
        );
        assert_eq!(r.codes(), ["kinetid-reports-forgotten"]);
        // A plug that resends them first is fine; one that starts at 1 again is reset.
        let mut r = Run::new();
        r.conn(
            T0,
            &crate::wire::handshake::random_key(),
            &K[..1],
            &[hello(), report(2, 5, ts), report(3, 6, ts)],
            &[welcome(), ack(2)],
        );
        r.conn(
            T0 + 5.0,
            &crate::wire::handshake::random_key(),
            &K[..1],
            &[hello(), report(2, 6, ts), report(3, 7, ts)],
            &[welcome(), ack(2), ack(3)],
        );
        assert!(r.codes().is_empty(), "{:?}", r.codes());
        r.conn(
            T0 + 10.0,
            &crate::wire::handshake::random_key(),
            &K[..1],
            &[hello(), report(2, 1, ts)],
            &[welcome(), ack(2)],
        );
        assert_eq!(r.codes(), ["kinetid-seq-reset"]);
    }

    #[test]
    fn a_clock_on_local_time_is_told_and_a_few_seconds_are_not() {
        let mut r = Run::new();
        r.conn(
            T0,
            &crate::wire::handshake::random_key(),
            &K[..1],
            &[hello(), report(2, 1, T0 as u64 + 7200 + 3)],
            &[welcome(), ack(2)],
        );
        assert_eq!(r.codes(), ["kinetid-clock-off"]);
        assert!(r.notes.len() == 1);
        let mut r = Run::new();
        r.conn(
            T0,
            &crate::wire::handshake::random_key(),
            &K[..1],
            &[hello(), report(2, 1, T0 as u64 + 40)],
            &[welcome(), ack(2)],
        );
        assert!(r.codes().is_empty());
        assert_eq!(ip_of("[::1]:80"), "::1");
        assert_eq!(ip_of("192.0.2.1:5 -> 192.0.2.2:8080"), "192.0.2.1");
    }
}
