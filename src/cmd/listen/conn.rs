//! One device connection: the task that owns its socket and its annotator,
//! and drives the engine's [`Session`] (RFC 6455) and [`Backend`] (Kinetid)
//! for it. It moves bytes and applies what the engine says; the rules live
//! in the engine.
//!
//! Every byte read or written goes through [`Conn::observe`], which records
//! it (before it is acted on), feeds the annotator, renders the events and
//! accounts the memory the connection holds. Writes are bounded by
//! `--write-timeout`, a started frame by `--frame-timeout`, and the memory
//! all connections hold together by `--max-buffered`.

use super::api::{self, Request};
use super::hub::{Claim, Cmd, ConnCmd, Door, Hub};
use super::lane::Lane;
use crate::shell::now;
use crate::shell::tap::Tap;
use kinetid_wsdump::annotate::{Event, EventKind};
use kinetid_wsdump::engine::backend::{Backend, BackendConfig, Effect};
use kinetid_wsdump::engine::quirk::server_frame;
use kinetid_wsdump::engine::session::{Output, Session, SessionConfig};
use kinetid_wsdump::note::{self, Code, Note, Severity};
use kinetid_wsdump::wire::frame::{encode_frame, Direction, EncodeOptions, OpCode, Role};
use kinetid_wsdump::wire::handshake::{self, error_response, RequestKind};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, mpsc};

/// Below this, a connection is never the one closed for the global budget.
const BUDGET_FLOOR: usize = 64 * 1024;

/// Why the connection task stops serving.
#[derive(Debug, thiserror::Error)]
enum Stop {
    /// The session is over (closing handshake done, or TCP to be dropped).
    #[error("the session ended")]
    Ended,
    /// A write failed or timed out.
    #[error("write failed: {0}")]
    Write(#[from] std::io::Error),
}

/// A device's socket: plain TCP, or TLS with `--tls`.
pub type ListenSock = crate::shell::sock::Sock<tokio_rustls::server::TlsStream<TcpStream>>;

/// One connection.
pub struct Conn {
    id: u64,
    peer: SocketAddr,
    sock: ListenSock,
    /// Read buffer of a TLS connection (a plain one reads into the thread's).
    tls_buf: Vec<u8>,
    /// The TLS session, said at the top of the connection.
    tls: Option<String>,
    hub: Arc<Hub>,
    /// Record, annotate, show.
    tap: Tap,
    /// Bytes this connection counts in the hub's budget.
    held: usize,
    registry_full_noted: bool,
    /// permessage-deflate for what the server sends, when agreed.
    deflater: Option<kinetid_wsdump::wire::deflate::Deflater>,
    /// The listener's port the device connected to (for the Host check).
    pub local_port: Option<u16>,
    /// The command lane of an upgraded plain connection (see [`Lane`]).
    lane: Option<Arc<Lane>>,
    /// A Close frame is among what the task writes next: the lane shuts
    /// with that write.
    closing: bool,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Before the socket is dropped (fields drop after this).
        if let Some(l) = &self.lane {
            l.gate().shut();
        }
        self.hub.buffered.fetch_sub(self.held, Ordering::Relaxed);
    }
}

impl Conn {
    /// A connection accepted from `peer`.
    pub fn new(
        id: u64,
        peer: SocketAddr,
        sock: ListenSock,
        hub: Arc<Hub>,
        tls: Option<String>,
    ) -> Conn {
        let tap = Tap::new(id, hub.s.cfg, hub.outs.clone(), hub.clone());
        Conn {
            id,
            peer,
            sock,
            tls_buf: Vec::new(),
            tls,
            hub,
            tap,
            held: 0,
            registry_full_noted: false,
            deflater: None,
            local_port: None,
            lane: None,
            closing: false,
        }
    }

    /// Record, annotate, render and account bytes seen in `dir` (what the
    /// lane wrote first: the device's bytes may answer it).
    fn observe(&mut self, dir: Direction, bytes: &[u8]) -> Vec<Event> {
        if let (Direction::C2S, Some(lane)) = (dir, self.lane.clone()) {
            let written = std::mem::take(&mut lane.gate().written);
            for (t, b) in written {
                self.observe_at(Direction::S2C, &b, t);
            }
        }
        self.observe_at(dir, bytes, now())
    }

    /// [`Conn::observe`] of bytes seen at `t`, alone.
    fn observe_at(&mut self, dir: Direction, bytes: &[u8], t: f64) -> Vec<Event> {
        let ev = self.tap.bytes(dir, bytes, t);
        let c = &self.hub.counters;
        match dir {
            Direction::C2S => c.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed),
            Direction::S2C => c.bytes_out.fetch_add(bytes.len() as u64, Ordering::Relaxed),
        };
        self.hub.metrics.wire_bytes(dir).inc_by(bytes.len() as u64);
        let held = self.tap.annotator().held_bytes();
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

    /// Count the HTTP status a head got.
    fn handshake_outcome(&self, status: u16) {
        self.hub
            .metrics
            .handshakes
            .with_label_values(&[&status.to_string()])
            .inc();
    }

    /// Is the listener over its memory budget, with this connection holding
    /// a share worth closing?
    fn over_budget(&self) -> bool {
        self.held > BUDGET_FLOOR
            && self.hub.buffered.load(Ordering::Relaxed) > self.hub.s.max_buffered
    }

    /// A note from the listener about this connection: shown, counted, recorded.
    fn notice(&mut self, n: Note) {
        self.tap.notice(Direction::C2S, n, now());
    }

    /// Record and annotate, then write, within the write timeout.
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<Vec<Event>> {
        if self.lane.is_some() {
            let mut b = bytes.to_vec();
            return self.flush(&mut b).await.map(|_| Vec::new());
        }
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
        self.encode_frame(&mut b, op, payload);
        // The lane shuts with a Close written this way too.
        self.closing |= op == OpCode::Close;
        self.send(&b).await.map(|_| ())
    }

    /// Append a frame to `b` (compressed when permessage-deflate was agreed).
    fn encode_frame(&mut self, b: &mut Vec<u8>, op: OpCode, payload: &[u8]) {
        match self.deflater.as_mut().filter(|_| !op.is_control()) {
            // A compressed message: RSV1 on its (only) frame (RFC 7692 6).
            Some(d) => {
                let z = d.deflate(payload);
                let opts = EncodeOptions {
                    rsv: 0x4,
                    ..EncodeOptions::server()
                };
                encode_frame(b, op, &z, opts);
            }
            None => server_frame(b, op, payload),
        }
    }

    /// Queue a frame of a burst: recorded and annotated now, written with
    /// the rest of the burst by [`Conn::flush`] (one write, not one a frame).
    fn queue_frame(&mut self, out: &mut Vec<u8>, op: OpCode, payload: &[u8]) {
        let at = out.len();
        self.encode_frame(out, op, payload);
        if self.lane.is_some() {
            // Observed in wire order with the lane's, when written.
            self.closing |= op == OpCode::Close;
            return;
        }
        self.observe(Direction::S2C, &out[at..]);
    }

    /// Write a burst's frames.
    async fn flush(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        if let Some(lane) = self.lane.clone() {
            let r = match self.write_gated(&lane, out) {
                Ok(None) => Ok(()),
                Ok(Some(mut tail)) => {
                    // The lane waits (busy) while the tail goes out.
                    let r = self.write_bounded(&mut tail).await;
                    lane.gate().set_busy(false);
                    r
                }
                Err(e) => Err(e),
            };
            out.clear();
            return r;
        }
        self.write_bounded(out).await
    }

    /// Under the gate: observe what the lane wrote, then `out`, and write
    /// the lane's unfinished tail and `out` as far as the socket takes
    /// them now. `Some(tail)`: what is still to go (the gate is busy).
    fn write_gated(&mut self, lane: &Lane, out: &[u8]) -> std::io::Result<Option<Vec<u8>>> {
        let mut g = lane.gate();
        for (t, b) in std::mem::take(&mut g.written) {
            self.observe_at(Direction::S2C, &b, t);
        }
        if !out.is_empty() {
            self.observe_at(Direction::S2C, out, now());
        }
        if self.closing {
            g.shut();
        }
        // The lane's unfinished tail first (rare): then the two go as one.
        let joined;
        let all: &[u8] = if g.rest.is_empty() {
            out
        } else {
            let mut r = std::mem::take(&mut g.rest);
            r.extend_from_slice(out);
            joined = r;
            &joined
        };
        if all.is_empty() {
            return Ok(None);
        }
        let n = match lane.send_now(all) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(e),
        };
        if n == all.len() {
            g.set_busy(false);
            return Ok(None);
        }
        g.set_busy(true);
        Ok(Some(all[n..].to_vec()))
    }

    /// Write, within the write timeout.
    async fn write_bounded(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let limit = self.hub.s.write_timeout;
        let r = match tokio::time::timeout(limit, self.sock.write_all(out)).await {
            Ok(r) => r,
            Err(_) => {
                self.notice(note::listener(
                    Severity::Error,
                    Code::WriteTimeout,
                    format!(
                        "the device read nothing for {} s while the server had {} bytes to send: it stopped reading; connection dropped",
                        limit.as_secs_f64(),
                        out.len()
                    ),
                ));
                Err(std::io::ErrorKind::TimedOut.into())
            }
        };
        out.clear();
        r
    }

    /// Serve the connection to its end.
    pub async fn run(&mut self, mut shutdown: broadcast::Receiver<()>) {
        self.tap.open(&self.peer.to_string(), now());
        if let Some(m) = self.tls.take() {
            self.notice(note::listener(Severity::Info, Code::TlsSession, m));
        }
        // Boxed: its buffers and state live only while the head is read,
        // not in every upgraded connection's future.
        let upgraded = Box::pin(self.handshake(&mut shutdown)).await;
        self.tap.release();
        if let Some(leftover) = upgraded {
            let (tx, rx) = mpsc::channel(64);
            self.lane = match &self.sock {
                crate::shell::sock::Sock::Plain(s) if self.deflater.is_none() => {
                    use std::os::fd::AsRawFd;
                    Some(Arc::new(Lane::new(s.as_raw_fd())))
                }
                _ => None,
            };
            let door = Door {
                tx,
                lane: self.lane.clone(),
            };
            self.hub.conns.lock().expect("conns").insert(self.id, door);
            self.websocket(leftover, rx, &mut shutdown).await;
            self.hub.forget_conn(self.id);
            if let Some(lane) = self.lane.clone() {
                // Shut, then what it wrote is annotated before the end.
                lane.gate().shut();
                let _ = self.write_gated(&lane, &[]);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.sock.shutdown()).await;
        self.tap.finish(now());
    }

    /// Read and answer the HTTP head. Returns the handshake's outcome: for an
    /// upgrade, the events the frames after the head already produced.
    async fn handshake(&mut self, shutdown: &mut broadcast::Receiver<()>) -> Option<Vec<Event>> {
        let deadline = tokio::time::Instant::now() + self.hub.s.head_timeout;
        let mut raw: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match tokio::time::timeout_at(deadline, self.sock.read(&mut buf)).await {
                Err(_) => {
                    let why = format!(
                        "request head not finished within {} s",
                        self.hub.s.head_timeout.as_secs_f64()
                    );
                    self.handshake_outcome(408);
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
            self.tap.head_seen(&raw);
            for (i, e) in ev.iter().enumerate() {
                match &e.kind {
                    EventKind::HeadError(he) => {
                        self.handshake_outcome(he.status);
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
                        let path = head.start_line.split(' ').nth(1).unwrap_or("");
                        if self
                            .tap
                            .web()
                            .plain_request(path.split('?').next().unwrap_or(""))
                        {
                            let c = &self.hub.counters;
                            c.connections.fetch_sub(1, Ordering::Relaxed);
                            c.web.fetch_add(1, Ordering::Relaxed);
                        }
                        self.plain_http(*head, body, shutdown).await;
                        return None;
                    }
                    EventKind::Request {
                        head,
                        verdict: Some(v),
                        ..
                    } => {
                        if !self.answer_upgrade(head, v).await {
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

    /// Answer a WebSocket upgrade request (the Host and Origin rules, the
    /// quirks asked for): true when it was accepted and the 101 went out.
    async fn answer_upgrade(
        &mut self,
        head: &handshake::HttpHead,
        v: &handshake::ServerVerdict,
    ) -> bool {
        if let Some(n) = self
            .local_port
            .and_then(|p| kinetid_wsdump::annotate::host_without_port(head, p))
        {
            self.notice(n);
        }
        let mut resp =
            match api::check_upgrade(head, &self.hub.s.allow_hosts, &self.hub.s.allow_origins) {
                Err((status, why)) => error_response(status, "", &why),
                Ok(()) => handshake::server_response(v),
            };
        for q in &self.hub.s.quirks {
            resp = q.apply(&resp);
        }
        let ok = v.accepted() && resp.starts_with(b"HTTP/1.1 101");
        if let (true, Some(a)) = (ok, v.deflate) {
            self.deflater = Some(kinetid_wsdump::wire::deflate::Deflater::new(a.server));
        }
        let status = std::str::from_utf8(&resp[9..12.min(resp.len())])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        self.handshake_outcome(status);
        self.send(&resp).await.is_ok() && ok
    }

    async fn plain_http(
        &mut self,
        head: handshake::HttpHead,
        mut body: Vec<u8>,
        shutdown: &mut broadcast::Receiver<()>,
    ) {
        let parts: Vec<&str> = head.start_line.split(' ').collect();
        let method = parts.first().copied().unwrap_or("").to_string();
        let target = parts.get(1).copied().unwrap_or("").to_string();
        let path = target.split('?').next().unwrap_or("").to_string();
        if path == "/api/events" && method == "GET" {
            let req = Request {
                method: &method,
                path: &path,
                head: &head,
                body: &[],
                peer: self.peer,
            };
            if let Some(deny) = api::gate(&self.hub, &req) {
                let _ = self.send(&deny).await;
                return;
            }
            // The stream itself is not annotated: events about the events
            // a page reads would feed themselves.
            let hub = self.hub.clone();
            let end = crate::shell::inspect::stream(&hub.outs.bus, &mut self.sock, true, async {
                let _ = shutdown.recv().await;
            })
            .await;
            if let Some(why) = end.why() {
                hub.notice(format!(
                    "kinetid-wsdump: the browser on connection {} ({}) {why} and was disconnected from /api/events (devices are never slowed for a page)",
                    self.id, self.peer
                ));
            }
            return;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        let read = crate::shell::http::read_body(&mut self.sock, &head, &mut body, deadline, |b| {
            seen.extend_from_slice(b)
        })
        .await;
        if !seen.is_empty() {
            self.observe(Direction::C2S, &seen);
        }
        let resp = match read {
            Err(too_big) => too_big,
            Ok(()) => {
                let req = Request {
                    method: &method,
                    path: &path,
                    head: &head,
                    body: &body,
                    peer: self.peer,
                };
                api::respond(&self.hub, &req).await
            }
        };
        let _ = self.send(&resp).await;
    }

    async fn websocket(
        &mut self,
        first: Vec<Event>,
        mut rx: mpsc::Receiver<Box<Cmd>>,
        shutdown: &mut broadcast::Receiver<()>,
    ) {
        // The settings by reference: a copy would sit in every
        // connection's future, lists and all.
        let hub = self.hub.clone();
        let s = &hub.s;
        let now = Instant::now();
        let mut sess = Session::new(
            SessionConfig {
                ping_interval: Some(s.ping_interval).filter(|p| !p.is_zero()),
                idle_timeout: Some(s.idle_timeout),
                lenient: s.lenient,
                ..SessionConfig::new(Role::Server)
            },
            now,
        );
        let mut backend = (!s.echo).then(|| {
            let cfg = BackendConfig {
                hello_timeout: s.hello_timeout,
                refuse: s.refuse.clone(),
            };
            Backend::new(cfg, now)
        });
        let mut frame_deadline: Option<Instant> = None;
        let mut outs = sess.on_peer(first, now);
        outs.extend(sess.on_partial(self.tap.annotator_mut(), now));
        if self.apply(&mut sess, &mut backend, outs).await.is_err() {
            return;
        }
        loop {
            let deadline = [
                sess.next_deadline(),
                backend.as_ref().and_then(Backend::next_deadline),
                frame_deadline,
            ]
            .into_iter()
            .flatten()
            .min();
            let step = tokio::select! {
                r = self.sock.wait_read(&mut self.tls_buf) => {
                    let ev = match r {
                        Err(_) | Ok(Some(0)) => return,
                        // TLS: the bytes are in the connection's buffer.
                        Ok(Some(n)) => {
                            let buf = std::mem::take(&mut self.tls_buf);
                            let ev = self.observe(Direction::C2S, &buf[..n]);
                            self.tls_buf = buf;
                            ev
                        }
                        Ok(None) => match self.read_now() {
                            Read::Events(ev) => ev,
                            Read::WouldBlock => continue,
                            Read::Closed => return,
                        },
                    };
                    if self.over_budget() {
                        self.fail_budget(&mut sess).await;
                        return;
                    }
                    // A frame must make progress: the deadline is set when one starts.
                    frame_deadline = match (self.tap.annotator().mid_frame(Direction::C2S), frame_deadline) {
                        (false, _) => None,
                        (true, None) => Some(Instant::now() + s.frame_timeout),
                        (true, d) => d,
                    };
                    let now = Instant::now();
                    let mut outs = sess.on_peer(ev, now);
                    outs.extend(sess.on_partial(self.tap.annotator_mut(), now));
                    self.apply(&mut sess, &mut backend, outs).await
                }
                // Commands and timers are rare: their futures are boxed, so
                // every connection's future is not as large as theirs.
                Some(cmd) = rx.recv() => Box::pin(self.command(*cmd, &mut sess, &mut backend)).await,
                _ = sleep_opt(deadline) => Box::pin(self.tick(&mut sess, &mut backend, &mut frame_deadline)).await,
                _ = shutdown.recv(), if sess.is_open() => {
                    let outs = sess.close(1001, "server shutting down", Instant::now());
                    self.apply(&mut sess, &mut backend, outs).await
                }
            };
            if step.is_err() || sess.is_done() {
                return;
            }
        }
    }

    /// The timers of the session, the backend and the frame in progress.
    async fn tick(
        &mut self,
        sess: &mut Session,
        backend: &mut Option<Backend>,
        frame_deadline: &mut Option<Instant>,
    ) -> Result<(), Stop> {
        let now = Instant::now();
        if frame_deadline.is_some_and(|d| now >= d) {
            *frame_deadline = None;
            if sess.is_open() {
                self.notice(note::listener(
                    Severity::Error,
                    Code::FrameTimeout,
                    format!(
                        "a frame started but was not finished within --frame-timeout {} s: closed with 1008",
                        self.hub.s.frame_timeout.as_secs_f64()
                    ),
                ));
                let outs = sess.fail(1008, "frame not finished in time", now);
                self.apply(sess, backend, outs).await?;
            }
        }
        let mut work: VecDeque<Work> = sess.on_tick(now).into_iter().map(Work::Out).collect();
        if let Some(b) = backend.as_mut() {
            work.extend(b.on_tick(now).into_iter().map(Work::Effect));
        }
        self.run_work(sess, backend, work).await
    }

    /// Apply what the session said.
    async fn apply(
        &mut self,
        sess: &mut Session,
        backend: &mut Option<Backend>,
        outs: Vec<Output>,
    ) -> Result<(), Stop> {
        let work = outs.into_iter().map(Work::Out).collect();
        self.run_work(sess, backend, work).await
    }

    /// Carry out session outputs and backend effects until none is left
    /// (a delivered message yields effects, an effect may close the session).
    async fn run_work(
        &mut self,
        sess: &mut Session,
        backend: &mut Option<Backend>,
        mut work: VecDeque<Work>,
    ) -> Result<(), Stop> {
        // What one read (or tick, or command) makes the server say goes out
        // in one write.
        let mut out = Vec::new();
        while let Some(w) = work.pop_front() {
            match w {
                Work::Out(Output::Frame { opcode, payload }) => {
                    self.queue_frame(&mut out, opcode, &payload)
                }
                Work::Out(Output::CloseTcp) => {
                    self.flush(&mut out).await?;
                    return Err(Stop::Ended);
                }
                Work::Out(Output::Deliver(m)) => match backend.as_mut() {
                    // Echo mode: every data message goes back as it came.
                    None => self.queue_frame(&mut out, m.opcode, &m.payload),
                    Some(b) => work.extend(b.on_message(&m, now()).into_iter().map(Work::Effect)),
                },
                Work::Effect(Effect::Send(text)) if sess.is_open() => {
                    self.queue_frame(&mut out, OpCode::Text, text.as_bytes())
                }
                Work::Effect(Effect::Send(_)) => {}
                Work::Effect(Effect::Close(code, reason)) => work.extend(
                    sess.close(code, reason, Instant::now())
                        .into_iter()
                        .map(Work::Out),
                ),
                Work::Effect(Effect::Claim {
                    dev,
                    role,
                    via,
                    take_over,
                }) => self.claim(&dev, role, via.as_deref(), now(), take_over),
                Work::Effect(Effect::Reading(r)) => self.hub.reading(self.id, &r, now()),
                Work::Effect(Effect::Relay { dev, on }) => self.hub.relay(self.id, &dev, on, now()),
                Work::Effect(Effect::Answer { re, result }) => self.hub.answer(self.id, re, result),
            }
        }
        self.flush(&mut out).await?;
        Ok(())
    }

    /// Over the global memory budget: say so, send 1013 and drop TCP at once
    /// (the peer's Close would be stuck behind the frame it is sending).
    async fn fail_budget(&mut self, sess: &mut Session) {
        let total = self.hub.buffered.load(Ordering::Relaxed);
        self.notice(note::listener(
            Severity::Error,
            Code::MemoryBudgetExceeded,
            format!(
                "this connection holds {} bytes of unfinished frames and messages; all connections together hold {total}, over --max-buffered {}: closed with 1013 (try again later)",
                self.held, self.hub.s.max_buffered
            ),
        ));
        for o in sess.fail(1013, "server memory budget exhausted", Instant::now()) {
            if let Output::Frame { opcode, payload } = o {
                let _ = self.send_frame(opcode, &payload).await;
            }
        }
    }

    /// A command from the API, the console or another connection.
    async fn command(
        &mut self,
        cmd: Cmd,
        sess: &mut Session,
        backend: &mut Option<Backend>,
    ) -> Result<(), Stop> {
        let Cmd { kind, done, asked } = cmd;
        if !sess.is_open() {
            if let Some(d) = done {
                let _ = d.send(Err(
                    "the connection is closing (a Close was already sent)".into()
                ));
            }
            return Ok(());
        }
        let now = Instant::now();
        let outs = match kind {
            ConnCmd::Text(t) => vec![Output::Frame {
                opcode: OpCode::Text,
                payload: t.into_bytes(),
            }],
            ConnCmd::Ping(p) => vec![Output::Frame {
                opcode: OpCode::Ping,
                payload: p,
            }],
            ConnCmd::Close(code, reason) => sess.close(code, &reason, now),
            // run_work's flush observes the lane's frames and writes a tail.
            ConnCmd::CatchUp => Vec::new(),
            ConnCmd::Replaced { dev, by, peer } => {
                self.notice(note::listener(
                    Severity::Warning,
                    Code::DeviceReplaced,
                    format!("connection {by} from {peer} said hello as {dev}, which this connection carried: the newer connection wins (kinetid v1), this one is closed with 4001 replaced"),
                ));
                sess.close(4001, "replaced", now)
            }
        };
        let r = self.apply(sess, backend, outs).await;
        if let (Some(t), true) = (asked, r.is_ok()) {
            self.hub
                .metrics
                .command_seconds
                .observe(t.elapsed().as_secs_f64());
            self.hub.metrics.commands_by_path[1].inc();
        }
        if let Some(d) = done {
            let _ = d.send(r.as_ref().map(|_| ()).map_err(|e| format!("not sent: {e}")));
        }
        r
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
}

/// What a read of a readable socket gave.
enum Read {
    /// Bytes arrived: their events.
    Events(Vec<Event>),
    /// Nothing after all (a spurious wake-up).
    WouldBlock,
    /// The peer closed, or the socket failed.
    Closed,
}

impl Conn {
    /// Read what the socket has, without waiting, and observe it (in the
    /// thread's shared read buffer: an idle connection holds none).
    fn read_now(&mut self) -> Read {
        crate::shell::with_read_buffer(|b| match self.sock.try_read_plain(b) {
            Ok(0) => Read::Closed,
            Ok(n) => Read::Events(self.observe(Direction::C2S, &b[..n])),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Read::WouldBlock,
            Err(_) => Read::Closed,
        })
    }
}

/// One step of the work a read, a tick or a command produced.
enum Work {
    Out(Output),
    Effect(Effect),
}

async fn sleep_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
