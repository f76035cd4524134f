//! One device connection: the task that owns its socket and its annotator.
//!
//! Every byte read or written goes through [`Conn::observe`], which records
//! it (before it is acted on), feeds the annotator, renders the events and
//! accounts the memory the connection holds. Writes are bounded by
//! `--write-timeout`, a started frame by `--frame-timeout`, and the memory
//! all connections hold together by `--max-buffered`.

use super::api::{self, Request};
use super::hub::{role_of, Claim, Cmd, ConnCmd, Hub};
use super::now;
use kinetid_wsdump::annotate::{close_code_for, Annotator, Event, EventKind, MessageEvent};
use kinetid_wsdump::capture::{capture_line, Chunk, ChunkKind};
use kinetid_wsdump::frame::{close_payload, CloseCode, Direction, OpCode};
use kinetid_wsdump::handshake::{self, error_response, RequestKind};
use kinetid_wsdump::kinetid;
use kinetid_wsdump::note::{self, Code, Note, Severity};
use kinetid_wsdump::quirk::server_frame;
use kinetid_wsdump::replay::Stats;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};
use tokio::time::Instant as TInstant;

/// Below this, a connection is never the one closed for the global budget.
const BUDGET_FLOOR: usize = 64 * 1024;

/// Why the connection task stops.
type Stop = ();

/// One connection.
pub struct Conn {
    id: u64,
    peer: SocketAddr,
    sock: TcpStream,
    hub: Arc<Hub>,
    ann: Annotator,
    stats: Stats,
    hello: Option<String>,
    close_sent: bool,
    close_received: bool,
    failed: bool,
    last_seen: Instant,
    ping_seq: u64,
    /// Bytes this connection counts in the hub's budget.
    held: usize,
    registry_full_noted: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.hub.buffered.fetch_sub(self.held, Ordering::Relaxed);
    }
}

impl Conn {
    /// A connection accepted from `peer`.
    pub fn new(id: u64, peer: SocketAddr, sock: TcpStream, hub: Arc<Hub>) -> Conn {
        let ann = Annotator::new(id, hub.s.cfg);
        Conn {
            id,
            peer,
            sock,
            hub,
            ann,
            stats: Stats::default(),
            hello: None,
            close_sent: false,
            close_received: false,
            failed: false,
            last_seen: Instant::now(),
            ping_seq: 0,
            held: 0,
            registry_full_noted: false,
        }
    }

    /// Record, annotate, render and account bytes seen in `dir`.
    fn observe(&mut self, dir: Direction, bytes: &[u8]) -> Vec<Event> {
        let t = now();
        self.record(Chunk {
            time: Some(t),
            conn: self.id,
            kind: ChunkKind::Data(dir, bytes.to_vec()),
        });
        let mut ev = Vec::new();
        self.ann.feed(dir, bytes, Some(t), &mut ev);
        let c = &self.hub.counters;
        match dir {
            Direction::C2S => c.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed),
            Direction::S2C => c.bytes_out.fetch_add(bytes.len() as u64, Ordering::Relaxed),
        };
        self.emit(&ev);
        let held = self.ann.held_bytes();
        if held >= self.held {
            self.hub
                .buffered
                .fetch_add(held - self.held, Ordering::Relaxed);
        } else {
            self.hub
                .buffered
                .fetch_sub(self.held - held, Ordering::Relaxed);
        }
        self.held = held;
        ev
    }

    /// Is the listener over its memory budget, with this connection holding
    /// a share worth closing?
    fn over_budget(&self) -> bool {
        self.held > BUDGET_FLOOR
            && self.hub.buffered.load(Ordering::Relaxed) > self.hub.s.max_buffered
    }

    fn record(&self, c: Chunk) {
        if let Some(r) = &self.hub.record {
            r.write(capture_line(&c).as_bytes());
        }
    }

    /// A note from the listener about this connection: shown, counted, recorded.
    fn notice(&mut self, n: Note) {
        let t = now();
        self.record(Chunk {
            time: Some(t),
            conn: self.id,
            kind: ChunkKind::Note(Direction::C2S, n.clone()),
        });
        let mut ev = Vec::new();
        self.ann.notice(Direction::C2S, n, Some(t), &mut ev);
        self.emit(&ev);
    }

    fn emit(&mut self, ev: &[Event]) {
        let c = &self.hub.counters;
        for e in ev {
            let before = self.stats;
            self.stats.add(e);
            c.errors
                .fetch_add(self.stats.errors - before.errors, Ordering::Relaxed);
            c.warnings
                .fetch_add(self.stats.warnings - before.warnings, Ordering::Relaxed);
            match (&e.kind, e.dir) {
                (EventKind::Frame(_), Direction::C2S) => {
                    c.frames_in.fetch_add(1, Ordering::Relaxed)
                }
                (EventKind::Frame(_), Direction::S2C) => {
                    c.frames_out.fetch_add(1, Ordering::Relaxed)
                }
                (EventKind::Message(_), Direction::C2S) => {
                    c.messages_in.fetch_add(1, Ordering::Relaxed)
                }
                _ => 0,
            };
        }
        if let Some(out) = &self.hub.out {
            let mut buf = Vec::new();
            for e in ev {
                let _ = self.hub.s.printer.event(&mut buf, e);
            }
            // Never waits: a stalled reader loses lines (counted), not devices.
            out.push(buf);
        }
    }

    /// Record and annotate, then write, within the write timeout.
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<Vec<Event>> {
        let ev = self.observe(Direction::S2C, bytes);
        let limit = self.hub.s.write_timeout;
        match tokio::time::timeout(limit, self.sock.write_all(bytes)).await {
            Ok(r) => r.map(|_| ev),
            Err(_) => {
                self.notice(note::listener(
                    Severity::Error,
                    Code::WriteTimeout,
                    format!(
                        "the device read nothing for {} s while the server had {} bytes to send: it stopped reading; connection dropped",
                        limit.as_secs_f64(),
                        bytes.len()
                    ),
                ));
                Err(std::io::ErrorKind::TimedOut.into())
            }
        }
    }

    async fn send_frame(&mut self, op: OpCode, payload: &[u8]) -> std::io::Result<()> {
        let mut b = Vec::with_capacity(payload.len() + 10);
        server_frame(&mut b, op, payload);
        self.send(&b).await.map(|_| ())
    }

    async fn send_text(&mut self, text: &str) -> std::io::Result<()> {
        self.send_frame(OpCode::Text, text.as_bytes()).await
    }

    async fn send_close(&mut self, code: u16, reason: &str) -> std::io::Result<()> {
        if self.close_sent {
            return Ok(());
        }
        self.close_sent = true;
        self.send_frame(OpCode::Close, &close_payload(Some(CloseCode(code)), reason))
            .await
    }

    /// Serve the connection to its end.
    pub async fn run(&mut self, mut shutdown: broadcast::Receiver<()>) {
        let t = now();
        let mut ev = Vec::new();
        self.ann.open(&self.peer.to_string(), Some(t), &mut ev);
        self.record(Chunk {
            time: Some(t),
            conn: self.id,
            kind: ChunkKind::Open(self.peer.to_string()),
        });
        self.emit(&ev);
        if let Some(leftover) = self.handshake().await {
            let (tx, rx) = mpsc::channel(64);
            self.hub.conns.lock().expect("conns").insert(self.id, tx);
            self.websocket(leftover, rx, &mut shutdown).await;
            self.hub.forget_conn(self.id);
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.sock.shutdown()).await;
        let t = now();
        let mut ev = Vec::new();
        self.ann.finish(Some(t), &mut ev);
        self.record(Chunk {
            time: Some(t),
            conn: self.id,
            kind: ChunkKind::Eof,
        });
        self.emit(&ev);
    }

    /// Read and answer the HTTP head. Returns the handshake's outcome: for an
    /// upgrade, the events the frames after the head already produced.
    async fn handshake(&mut self) -> Option<Vec<Event>> {
        let deadline = TInstant::now() + self.hub.s.head_timeout;
        let mut raw: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match tokio::time::timeout_at(deadline, self.sock.read(&mut buf)).await {
                Err(_) => {
                    let why = format!(
                        "request head not finished within {} s",
                        self.hub.s.head_timeout.as_secs_f64()
                    );
                    let _ = self.send(&error_response(408, "", &why)).await;
                    return None;
                }
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => n,
            };
            if raw.len() < self.hub.s.cfg.limits.max_head_bytes + 4096 {
                raw.extend_from_slice(&buf[..n]);
            }
            let ev = self.observe(Direction::C2S, &buf[..n]);
            for (i, e) in ev.iter().enumerate() {
                match &e.kind {
                    EventKind::HeadError(he) => {
                        let _ = self.send(&error_response(he.status, "", &he.reason)).await;
                        return None;
                    }
                    EventKind::Request {
                        head,
                        kind: RequestKind::Plain,
                        ..
                    } => {
                        let body = raw[head.len.min(raw.len())..].to_vec();
                        let head = head.clone();
                        self.plain_http(head, body).await;
                        return None;
                    }
                    EventKind::Request {
                        head,
                        verdict: Some(v),
                        ..
                    } => {
                        let resp = match api::check_upgrade(head, &self.hub.s.allow_hosts) {
                            Err((status, why)) => error_response(status, "", &why),
                            Ok(()) => handshake::server_response(v),
                        };
                        let ok = v.accepted() && resp.starts_with(b"HTTP/1.1 101");
                        if self.send(&resp).await.is_err() || !ok {
                            return None;
                        }
                        // Frames that came in the same read as the head.
                        return Some(ev[i + 1..].to_vec());
                    }
                    _ => {}
                }
            }
        }
    }

    async fn plain_http(&mut self, head: handshake::HttpHead, mut body: Vec<u8>) {
        let parts: Vec<&str> = head.start_line.split(' ').collect();
        let method = parts.first().copied().unwrap_or("").to_string();
        let target = parts.get(1).copied().unwrap_or("").to_string();
        let path = target.split('?').next().unwrap_or("").to_string();
        let want = head
            .get("content-length")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(0);
        let resp = if want > 64 * 1024 {
            error_response(413, "", "request bodies are at most 64 KiB")
        } else {
            let mut buf = vec![0u8; 4096];
            let deadline = TInstant::now() + Duration::from_secs(10);
            while body.len() < want {
                match tokio::time::timeout_at(deadline, self.sock.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => {
                        body.extend_from_slice(&buf[..n]);
                        self.observe(Direction::C2S, &buf[..n]);
                    }
                    _ => break,
                }
            }
            body.truncate(want);
            let req = Request {
                method: &method,
                path: &path,
                head: &head,
                body: &body,
                peer: self.peer,
            };
            api::respond(&self.hub, &req).await
        };
        let _ = self.send(&resp).await;
    }

    async fn websocket(
        &mut self,
        first: Vec<Event>,
        mut rx: mpsc::Receiver<Cmd>,
        shutdown: &mut broadcast::Receiver<()>,
    ) {
        let s = self.hub.s.clone();
        let start = TInstant::now();
        let period = s.ping_interval.max(Duration::from_millis(1));
        let mut ping = tokio::time::interval_at(start + period, period);
        let hello_deadline = start + s.hello_timeout;
        let mut close_deadline: Option<TInstant> = None;
        let mut frame_deadline: Option<TInstant> = None;
        let mut buf = vec![0u8; 64 * 1024];
        if self.handle(first).await.is_err() {
            return;
        }
        loop {
            if self.close_sent && self.close_received {
                return;
            }
            let idle_at = TInstant::from_std(self.last_seen + s.idle_timeout);
            let hello_wait = self.hello.is_none() && !s.echo && !self.close_sent;
            tokio::select! {
                r = self.sock.read(&mut buf) => {
                    let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                    self.last_seen = Instant::now();
                    let ev = self.observe(Direction::C2S, &buf[..n]);
                    if self.over_budget() {
                        self.fail_budget().await;
                        return;
                    }
                    // A frame must make progress: the deadline is set when one starts.
                    frame_deadline = match (self.ann.mid_frame(Direction::C2S), frame_deadline) {
                        (false, _) => None,
                        (true, None) => Some(TInstant::now() + s.frame_timeout),
                        (true, d) => d,
                    };
                    if self.failed {
                        // After failing the connection nothing more is processed
                        // (RFC 6455 7.1.7), but it is still shown. Its Close ends
                        // the closing handshake: the server drops TCP first (7.1.1).
                        if ev.iter().any(|e| matches!(&e.kind, EventKind::Frame(f) if f.header.opcode == OpCode::Close)) {
                            return;
                        }
                        continue;
                    }
                    if self.handle(ev).await.is_err() { return; }
                }
                Some(cmd) = rx.recv() => {
                    if self.command(cmd, &mut close_deadline).await.is_err() { return; }
                }
                _ = ping.tick(), if !s.ping_interval.is_zero() && !self.close_sent => {
                    self.ping_seq += 1;
                    let p = self.ping_seq.to_string();
                    if self.send_frame(OpCode::Ping, p.as_bytes()).await.is_err() { return; }
                }
                _ = tokio::time::sleep_until(hello_deadline), if hello_wait => {
                    if self.send_close(1008, "no hello within the time allowed").await.is_err() { return; }
                }
                _ = tokio::time::sleep_until(idle_at), if !self.close_sent => {
                    if self.send_close(1001, "nothing heard for too long").await.is_err() { return; }
                }
                _ = sleep_opt(frame_deadline), if !self.close_sent => {
                    frame_deadline = None;
                    self.notice(note::listener(Severity::Error, Code::FrameTimeout, format!(
                        "a frame started but was not finished within --frame-timeout {} s: closed with 1008",
                        s.frame_timeout.as_secs_f64()
                    )));
                    self.failed = true;
                    if self.send_close(1008, "frame not finished in time").await.is_err() { return; }
                }
                _ = sleep_opt(close_deadline) => {
                    // The peer never answered our Close: drop TCP.
                    return;
                }
                _ = shutdown.recv(), if !self.close_sent => {
                    if self.send_close(1001, "server shutting down").await.is_err() { return; }
                }
            }
            if self.close_sent && close_deadline.is_none() {
                close_deadline = Some(TInstant::now() + Duration::from_secs(2));
            }
        }
    }

    /// Over the global memory budget: say so, send 1013 and drop TCP at once
    /// (the peer's Close would be stuck behind the frame it is sending).
    async fn fail_budget(&mut self) {
        let total = self.hub.buffered.load(Ordering::Relaxed);
        self.notice(note::listener(
            Severity::Error,
            Code::MemoryBudgetExceeded,
            format!(
                "this connection holds {} bytes of unfinished frames and messages; all connections together hold {total}, over --max-buffered {}: closed with 1013 (try again later)",
                self.held, self.hub.s.max_buffered
            ),
        ));
        self.failed = true;
        let _ = self
            .send_close(1013, "server memory budget exhausted")
            .await;
    }

    /// A command from the API, the console or another connection.
    async fn command(
        &mut self,
        cmd: Cmd,
        close_deadline: &mut Option<TInstant>,
    ) -> Result<(), Stop> {
        let Cmd { kind, done } = cmd;
        if self.close_sent {
            if let Some(d) = done {
                let _ = d.send(Err(
                    "the connection is closing (a Close was already sent)".into()
                ));
            }
            return Ok(());
        }
        let r = match kind {
            ConnCmd::Text(t) => self.send_text(&t).await,
            ConnCmd::Ping(p) => self.send_frame(OpCode::Ping, &p).await,
            ConnCmd::Close(code, reason) => {
                *close_deadline = Some(TInstant::now() + Duration::from_secs(2));
                self.send_close(code, &reason).await
            }
            ConnCmd::Replaced { dev, by, peer } => {
                self.notice(note::listener(
                    Severity::Warning,
                    Code::DeviceReplaced,
                    format!("connection {by} from {peer} said hello as {dev}, which this connection carried: the newer connection wins (kinetid v1), this one is closed with 4001 replaced"),
                ));
                self.send_close(4001, "replaced").await
            }
        };
        if let Some(d) = done {
            let _ = d.send(r.as_ref().map(|_| ()).map_err(|e| format!("not sent: {e}")));
        }
        r.map_err(|_| ())
    }

    /// React to the annotator's events for bytes the device sent.
    async fn handle(&mut self, ev: Vec<Event>) -> Result<(), Stop> {
        for e in ev {
            if e.dir != Direction::C2S || self.failed {
                continue;
            }
            match e.kind {
                EventKind::Frame(f) => {
                    let fail = f
                        .notes
                        .iter()
                        .filter(|n| n.severity == Severity::Error)
                        .find_map(|n| close_code_for(n).map(|c| (c, n.code)));
                    if let (Some((code, why)), false) = (fail, self.hub.s.lenient) {
                        self.failed = true;
                        self.send_close(code.0, why.as_str())
                            .await
                            .map_err(|_| ())?;
                        if f.header.opcode == OpCode::Close {
                            // The faulty frame was the peer's Close: the handshake is over.
                            return Err(());
                        }
                        // Failing the connection: give the peer a moment for its Close, then go.
                        return Ok(());
                    }
                    match f.header.opcode {
                        OpCode::Ping if !self.close_sent => self
                            .send_frame(OpCode::Pong, &f.payload)
                            .await
                            .map_err(|_| ())?,
                        OpCode::Close => {
                            self.close_received = true;
                            if !self.close_sent {
                                // Echo the code (RFC 6455 5.5.1); none if none was sent.
                                let payload = match &f.close {
                                    Some((c, _)) if c.is_allowed() => close_payload(Some(*c), ""),
                                    Some(_) => close_payload(Some(CloseCode::PROTOCOL), ""),
                                    None => Vec::new(),
                                };
                                self.close_sent = true;
                                self.send_frame(OpCode::Close, &payload)
                                    .await
                                    .map_err(|_| ())?;
                            }
                            return Err(());
                        }
                        _ => {}
                    }
                }
                EventKind::Message(m) if !self.close_sent => {
                    if self.hub.s.echo {
                        self.send_frame(m.opcode, &m.payload)
                            .await
                            .map_err(|_| ())?;
                    } else {
                        self.backend(*m, e.time.unwrap_or_else(now))
                            .await
                            .map_err(|_| ())?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Register a device id for this connection, with the notes the outcome needs.
    fn claim(&mut self, id: &str, role: &'static str, via: Option<&str>, t: f64, take_over: bool) {
        let peer = self.peer.to_string();
        match self.hub.learn(id, role, via, self.id, &peer, t, take_over) {
            Claim::Ok | Claim::Invalid => {}
            Claim::Replaced { conn, peer: old } => {
                self.notice(note::listener(
                    Severity::Warning,
                    Code::DeviceIdDuplicate,
                    format!("{id} is already connected on connection {conn} from {old}: this newer connection takes it over (as after a reboot); the older one is closed with 4001 replaced"),
                ));
                self.hub.replace(conn, id, self.id, &peer);
            }
            Claim::Kept { conn } => self.notice(note::listener(
                Severity::Warning,
                Code::DeviceIdDuplicate,
                format!(
                    "a relayed message names {id}, which connection {conn} carries: not taken over"
                ),
            )),
            Claim::Full if !self.registry_full_noted => {
                self.registry_full_noted = true;
                self.notice(note::listener(
                    Severity::Warning,
                    Code::DeviceRegistryFull,
                    format!(
                        "the device table is full ({} devices online, --max-devices): {id} is served but not registered",
                        self.hub.s.max_devices
                    ),
                ));
            }
            Claim::Full => {}
        }
    }

    /// The Kinetid backend's answer to one device message.
    async fn backend(&mut self, m: MessageEvent, t: f64) -> std::io::Result<()> {
        const NEED_T: &str = "expected a JSON object with field t";
        let Some(k) = m.kinetid else {
            let why = if m.opcode == OpCode::Binary {
                "binary messages are not part of kinetid.v1"
            } else {
                NEED_T
            };
            return self
                .send_text(&kinetid::error(None, None, "bad_request", why))
                .await;
        };
        if k.t.is_empty() {
            return self
                .send_text(&kinetid::error(None, None, "bad_request", NEED_T))
                .await;
        }
        if self.hello.is_none() && k.t != "hello" {
            let e = kinetid::error(k.id, None, "bad_request", "the first message must be hello");
            self.send_text(&e).await?;
            return self.send_close(1008, "first message was not hello").await;
        }
        match k.t.as_str() {
            "hello" => self.on_hello(&k, t).await,
            "report" => self.on_report(&k, t).await,
            "state" => self.on_state(&k, t).await,
            "error" => {
                self.answer(k.re, Err(k.value.clone()));
                Ok(())
            }
            "ack" | "welcome" => Ok(()),
            other => {
                let msg = format!("unknown message type {other:?}");
                self.send_text(&kinetid::error(k.id, None, "bad_request", &msg))
                    .await
            }
        }
    }

    async fn on_hello(&mut self, k: &kinetid::Message, t: f64) -> std::io::Result<()> {
        let dev = k.dev.clone().unwrap_or_default();
        if !kinetid::is_device_id(&dev) || self.hub.s.refuse.iter().any(|r| r == &dev) {
            let e = kinetid::error(
                k.id,
                Some(&dev),
                "unknown_device",
                "this backend does not know the device",
            );
            self.send_text(&e).await?;
            return self.send_close(1008, "unknown device").await;
        }
        self.claim(&dev, role_of(k.str("role")), None, t, true);
        if let Some(ps) = k.value.get("passives").and_then(Value::as_array) {
            for p in ps.iter().filter_map(Value::as_str) {
                self.claim(p, "passive", Some(&dev), t, true);
            }
        }
        self.hello = Some(dev);
        let period = k.f64("period_s").filter(|p| *p >= 1.0).unwrap_or(60.0) as u64;
        self.send_text(&kinetid::welcome(k.id.unwrap_or(0), t as u64, period))
            .await
    }

    async fn on_report(&mut self, k: &kinetid::Message, t: f64) -> std::io::Result<()> {
        if let Some(dev) = &k.dev {
            // A relayed report registers its plug only through the active
            // plug that said hello on this connection, and never takes an id
            // another connection carries.
            if let (Some(via), Some(me)) = (k.str("via"), self.hello.clone()) {
                if via == me && dev != &me {
                    self.claim(dev, "passive", Some(via), t, false);
                }
            }
            self.count_report(dev, k, t);
        }
        match k.id {
            Some(id) => self.send_text(&kinetid::ack(id)).await,
            None => {
                let e = kinetid::error(None, k.dev.as_deref(), "bad_request", "report without id");
                self.send_text(&e).await
            }
        }
    }

    /// Update the device's row from a report, dropping duplicates by seq.
    fn count_report(&self, dev: &str, k: &kinetid::Message, t: f64) {
        let mut d = self.hub.devices.lock().expect("devices");
        let Some(e) = d.get_mut(dev).filter(|e| e.conn == self.id) else {
            return;
        };
        e.last_seen = t;
        let seq = k.value.get("seq").and_then(Value::as_u64);
        if seq.is_some_and(|s| e.recent_seqs.contains(&s)) {
            e.duplicates += 1;
            return;
        }
        if let Some(s) = seq {
            e.recent_seqs.push_back(s);
            if e.recent_seqs.len() > 1024 {
                e.recent_seqs.pop_front();
            }
            e.seq = Some(s);
        }
        e.reports += 1;
        e.on = k.bool("on").or(e.on);
        e.power_w = k.f64("power_w");
        e.energy_wh = k.f64("energy_wh");
    }

    async fn on_state(&mut self, k: &kinetid::Message, t: f64) -> std::io::Result<()> {
        if let Some(dev) = &k.dev {
            let mut d = self.hub.devices.lock().expect("devices");
            if let Some(e) = d.get_mut(dev).filter(|e| e.conn == self.id) {
                e.on = k.bool("on").or(e.on);
                e.last_seen = t;
            }
        }
        if k.re.is_some() {
            self.answer(k.re, Ok(k.value.clone()));
            Ok(())
        } else if let Some(id) = k.id {
            self.send_text(&kinetid::ack(id)).await
        } else {
            Ok(())
        }
    }

    /// Hand a device's answer to whoever sent the command it answers.
    fn answer(&self, re: Option<u64>, v: Result<Value, Value>) {
        let Some(re) = re else { return };
        let tx = self
            .hub
            .pending
            .lock()
            .expect("pending")
            .remove(&(self.id, re));
        if let Some(tx) = tx {
            let _ = tx.send(v);
        }
    }
}

async fn sleep_opt(d: Option<TInstant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
