//! One emulated home's connections: connect, hand-made client handshake,
//! then move bytes between the socket and the engine (a [`Session`] in the
//! client role and the [`Home`]), reconnecting with back-off.

use super::{FleetStats, Shared};
use kinetid_wsdump::annotate::{Annotator, Config, Event, EventKind, HandshakeMode};
use kinetid_wsdump::engine::device::{Home, Out};
use kinetid_wsdump::engine::quirk::{FrameWriter, Quirk};
use kinetid_wsdump::engine::session::{Output, Session, SessionConfig};
use kinetid_wsdump::kinetid::msg::Msg;
use kinetid_wsdump::render::Printer;
use kinetid_wsdump::wire::deflate::Deflater;
use kinetid_wsdump::wire::frame::{Direction, OpCode, Role};
use kinetid_wsdump::wire::handshake::{self, KINETID_PROTOCOL};
use std::io::Write;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Why a connection ended (other than being asked to stop).
#[derive(Debug, Error)]
pub enum LinkError {
    /// TCP connect failed or timed out.
    #[error("connect to {addr}: {why}")]
    Connect {
        /// Where.
        addr: String,
        /// What happened.
        why: String,
    },
    /// The upgrade went wrong.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The server closed the WebSocket.
    #[error("server closed the connection with {0}")]
    Closed(u16),
    /// The server closed and this plug answered nothing (the quirk).
    #[error("server closed; answered with nothing (silent-close quirk)")]
    SilentClose,
    /// TCP ended or failed.
    #[error("connection lost: {0}")]
    Io(String),
}

/// How a connection ended.
enum End {
    Stopped,
    Lost(LinkError),
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The next report boundary of the wall clock, as a monotonic instant.
pub fn next_boundary(period: Duration) -> Instant {
    let p = period.as_secs_f64();
    let now = unix_now();
    let next = (now / p).floor() * p + p;
    Instant::now() + Duration::from_secs_f64((next - now).max(0.0))
}

/// When a plug starts.
pub struct Start {
    /// Its place in the ramp.
    pub delay: Duration,
    /// How long after each period boundary it reports.
    pub offset: Duration,
}

/// Run one home until told to stop: wait for its place in the ramp, then
/// connect, serve, back off, reconnect. The home is boxed and the shared
/// settings behind a pointer: this future is what a plug costs while idle.
pub async fn run(
    mut home: Box<Home>,
    sh: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    conn_no: u64,
    start: Start,
) {
    tokio::select! {
        _ = tokio::time::sleep(start.delay) => {}
        _ = stop.changed() => return,
    }
    let offset = start.offset;
    home.set_next_report(next_boundary(sh.home.interval) + offset);
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    let mut queued = 0;
    loop {
        home.on_attempt();
        let r = connection(&mut home, &sh, &mut stop, conn_no, first, &mut queued).await;
        if sh.quirks.contains(&Quirk::ForgetUnacked) {
            home.forget_unacked();
        }
        sync_queue(&home, &sh.stats, &mut queued);
        if home.welcomed() {
            backoff = Duration::from_secs(1);
        }
        let why = match r {
            End::Stopped => return,
            End::Lost(why) => why,
        };
        sh.stats.errors.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            "{}: {why}; reconnecting in about {backoff:?}",
            home.active.id
        );
        if sh.dump.is_some() {
            eprintln!(
                "kinetid-wsdump: {}: {why}; reconnecting in about {} ms",
                home.active.id,
                backoff.as_millis()
            );
        }
        first = false;
        let wait = if sh.quirks.contains(&Quirk::NoBackoff) {
            Duration::from_millis(100)
        } else {
            backoff.mul_f64(1.0 + home.jitter())
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        // Reports due while away are taken now, so none is skipped.
        home.on_tick(Instant::now(), unix_now());
        sync_queue(&home, &sh.stats, &mut queued);
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

/// The live side of one connection: socket, annotator, frame writer.
struct Link {
    sock: PlugSock,
    /// Read buffer of a TLS link (a plain one reads into the thread's).
    tls_buf: Vec<u8>,
    ann: Annotator,
    writer: FrameWriter,
    dump: Option<Printer>,
    /// With the json-concat quirk: a report waiting to share a message with the next.
    held_report: Option<String>,
    /// permessage-deflate for what the plug sends, when agreed.
    deflater: Option<Deflater>,
}

impl Link {
    /// `--dump`: printed at once, under stdout's lock. Not the shell's tap:
    /// its line sink drops lines when the reader stalls, and a dump is read
    /// to account for every report (`tests/nothing_lost.rs`); the emulator
    /// records and publishes nothing besides.
    fn show(&self, ev: &[Event]) {
        if let Some(p) = &self.dump {
            let mut out = Vec::new();
            for e in ev {
                let _ = p.event(&mut out, e);
            }
            let stdout = std::io::stdout();
            let mut l = stdout.lock();
            let _ = l.write_all(&out);
            let _ = l.flush();
        }
    }

    /// What a read gave (`Some(n)`: TLS read `n` bytes into the link's
    /// buffer; `None`: a plain socket is readable, read now into the
    /// thread's shared buffer, so an idle plug holds none), annotated:
    /// `Ok(None)` at the end of the stream.
    fn took(&mut self, tls: Option<usize>) -> std::io::Result<Option<Vec<Event>>> {
        let mut ev = Vec::new();
        match tls {
            Some(0) => Ok(None),
            Some(n) => {
                let bytes = &self.tls_buf[..n];
                self.ann
                    .feed(Direction::S2C, bytes, Some(unix_now()), &mut ev);
                Ok(Some(ev))
            }
            None => crate::shell::with_read_buffer(|b| match self.sock.try_read_plain(b) {
                Ok(n) if n > 0 => {
                    self.ann
                        .feed(Direction::S2C, &b[..n], Some(unix_now()), &mut ev);
                    Ok(Some(ev))
                }
                Ok(_) => Ok(None),
                Err(e) => Err(e),
            }),
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> Result<(), LinkError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.sock
            .write_all(bytes)
            .await
            .map_err(|e| LinkError::Io(e.to_string()))?;
        let mut ev = Vec::new();
        self.ann
            .feed(Direction::C2S, bytes, Some(unix_now()), &mut ev);
        self.show(&ev);
        Ok(())
    }

    /// A frame the session asked for: control frames through the writer's
    /// control path (where the control-frame quirks live).
    async fn frame(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), LinkError> {
        let mut b = Vec::new();
        if opcode.is_control() {
            self.writer.control(&mut b, opcode, payload);
        } else if let Some(d) = self.deflater.as_mut() {
            let z = d.deflate(&self.writer.as_sent(opcode, payload));
            self.writer.compressed_message(&mut b, opcode, &z);
        } else {
            self.writer.message(&mut b, opcode, payload);
        }
        self.send_raw(&b).await
    }
}

/// The offer `--deflate` sends.
const DEFLATE_OFFER: &str = "permessage-deflate; client_max_window_bits";

type Upgraded = (PlugSock, Annotator, Vec<Event>, Option<Deflater>);

/// A plug's socket: plain TCP, or TLS for `wss://`.
pub type PlugSock = crate::shell::sock::Sock<tokio_rustls::client::TlsStream<TcpStream>>;

/// The TCP connection (and TLS for `wss://`), each within its time.
async fn connect(sh: &Shared) -> Result<PlugSock, LinkError> {
    let addr = sh.url.addr.clone();
    let connect_err = |why: String| LinkError::Connect {
        addr: addr.clone(),
        why,
    };
    let sock = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&addr))
        .await
        .map_err(|_| connect_err("timed out".into()))?
        .map_err(|e| connect_err(e.to_string()))?;
    let _ = sock.set_nodelay(true);
    let sock = match &sh.tls {
        None => crate::shell::sock::Sock::Plain(sock),
        Some((connector, name)) => {
            let s = tokio::time::timeout(
                Duration::from_secs(10),
                connector.connect(name.clone(), sock),
            )
            .await
            .map_err(|_| connect_err("TLS handshake timed out".into()))?
            .map_err(|e| connect_err(format!("TLS: {e}")))?;
            crate::shell::sock::Sock::Tls(Box::new(s))
        }
    };
    Ok(sock)
}

/// Connect and upgrade. The annotator judges the server's response (the
/// accept key, the subprotocol); its verdict is the one acted on.
async fn handshake(sh: &Shared, conn_no: u64) -> Result<Upgraded, LinkError> {
    let quirks_accept_anything = sh.quirks.contains(&Quirk::AcceptAnything);
    let mut sock = connect(sh).await?;
    // The seeded-keys bug draws the handshake key from the generator its
    // masking keys come from, restarted on every connection.
    let key = if sh.quirks.contains(&Quirk::SeededKeys) {
        kinetid_wsdump::engine::quirk::SeededKeys::new().handshake_key()
    } else {
        handshake::random_key()
    };
    let mut req = handshake::client_request(&sh.url.host, &sh.url.path, &key, &[KINETID_PROTOCOL]);
    if sh.deflate {
        req.truncate(req.len() - 2);
        req.extend_from_slice(
            format!("Sec-WebSocket-Extensions: {DEFLATE_OFFER}\r\n\r\n").as_bytes(),
        );
    }
    let mut ann = Annotator::new(
        conn_no,
        Config {
            handshake: HandshakeMode::Expect,
            ..Config::default()
        },
    );
    let hs = |why: String| LinkError::Handshake(why);
    sock.write_all(&req)
        .await
        .map_err(|e| hs(format!("sending the upgrade request: {e}")))?;
    let mut ev = Vec::new();
    ann.feed(Direction::C2S, &req, Some(unix_now()), &mut ev);
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let n = tokio::time::timeout_at(deadline, sock.read(&mut buf))
            .await
            .map_err(|_| hs("no handshake response within 10 s".into()))?
            .map_err(|e| hs(format!("reading the response: {e}")))?;
        if n == 0 {
            return Err(hs(
                "server closed the connection during the handshake".into()
            ));
        }
        let from = ev.len();
        ann.feed(Direction::S2C, &buf[..n], Some(unix_now()), &mut ev);
        let mut answer = None;
        for (i, e) in ev[from..].iter().enumerate() {
            match &e.kind {
                EventKind::HeadError(he) => {
                    return Err(hs(format!("malformed response: {}", he.reason)))
                }
                EventKind::Response { verdict, .. } => {
                    let any = quirks_accept_anything && verdict.status == 101;
                    if let (Some(err), false) = (&verdict.error, any) {
                        return Err(hs(format!("refused: {err}")));
                    }
                    answer = Some((from + i + 1, verdict.deflate));
                    break;
                }
                _ => {}
            }
        }
        if let Some((end, deflate)) = answer {
            // The drop-after-101 bug: what came in the same read as the
            // head is thrown away with the read buffer (the annotator saw
            // it arrive; the plug never acts on it).
            if sh.quirks.contains(&Quirk::DropAfter101) {
                ev.truncate(end);
            }
            let d = deflate.map(|a| Deflater::new(a.client));
            return Ok((sock, ann, ev, d));
        }
    }
}

/// Keep the fleet's resend-queue gauge in step with this home's queue.
fn sync_queue(home: &Home, stats: &FleetStats, seen: &mut u64) {
    let now = home.queued() as u64;
    if now >= *seen {
        stats.queued.fetch_add(now - *seen, Ordering::Relaxed);
    } else {
        stats.queued.fetch_sub(*seen - now, Ordering::Relaxed);
    }
    *seen = now;
}

fn count(stats: &FleetStats, out: &Out) {
    let c = match out {
        Out::ReportSent => &stats.reports_sent,
        Out::ReportAcked(rtt) => {
            stats.rtt.add(*rtt);
            &stats.reports_acked
        }
        Out::Command => &stats.commands,
        Out::Send(_) => return,
    };
    c.fetch_add(1, Ordering::Relaxed);
}

async fn connection(
    home: &mut Home,
    sh: &Shared,
    stop: &mut watch::Receiver<bool>,
    conn_no: u64,
    first: bool,
    queued: &mut u64,
) -> End {
    // Boxed: only while connecting, so an upgraded plug does not carry
    // the handshake's space.
    let (sock, ann, ev, deflater) = tokio::select! {
        r = Box::pin(handshake(sh, conn_no)) => match r {
            Ok(x) => x,
            Err(e) => return End::Lost(e),
        },
        _ = stop.changed() => return End::Stopped,
    };
    let mut link = Link {
        sock,
        tls_buf: Vec::new(),
        ann,
        writer: FrameWriter::new(&sh.quirks, sh.frame_size),
        dump: sh.dump.clone(),
        held_report: None,
        deflater,
    };
    link.show(&ev);
    sh.stats.connects.fetch_add(1, Ordering::Relaxed);
    if !first {
        sh.stats.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    sh.stats.connected.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        "{}: connected to {} (connection {conn_no}{})",
        home.active.id,
        sh.url.addr,
        if first { "" } else { ", a reconnect" }
    );
    let r = serve(home, sh, stop, &mut link, ev, queued).await;
    home.on_disconnected();
    sh.stats.connected.fetch_sub(1, Ordering::Relaxed);
    let mut ev = Vec::new();
    link.ann.finish(Some(unix_now()), &mut ev);
    link.show(&ev);
    r
}

/// Serve one upgraded connection until it ends.
async fn serve(
    home: &mut Home,
    sh: &Shared,
    stop: &mut watch::Receiver<bool>,
    link: &mut Link,
    first_events: Vec<Event>,
    queued: &mut u64,
) -> End {
    let now = Instant::now();
    let mut sess = Session::new(
        SessionConfig {
            // A plug that hears nothing for 90 s drops the link (kinetid v1).
            idle_timeout: Some(Duration::from_secs(90)),
            close_timeout: Duration::from_secs(1),
            answer_pings: !link.writer.has(Quirk::NoPong),
            empty_pongs: link.writer.has(Quirk::EmptyPong),
            answer_close: !link.writer.has(Quirk::SilentClose),
            lenient: link.writer.has(Quirk::LenientFrames),
            ..SessionConfig::new(Role::Client)
        },
        now,
    );
    let hello = home.on_connected(now);
    if let Err(e) = apply_home(link, sh, &sess, &home.active.id, hello).await {
        return End::Lost(e);
    }
    let mut after = Vec::new();
    link.writer.after_hello(&mut after);
    if let Err(e) = link.send_raw(&after).await {
        return End::Lost(e);
    }
    let mut pending = sess.on_peer(first_events, now);
    loop {
        if let Err(e) = apply_session(link, sh, home, &mut sess, std::mem::take(&mut pending)).await
        {
            return End::Lost(e);
        }
        sync_queue(home, &sh.stats, queued);
        if sess.is_done() {
            return ended(&sess, stop, link);
        }
        let deadline = [sess.next_deadline(), home.next_deadline()]
            .into_iter()
            .flatten()
            .min();
        tokio::select! {
            r = link.sock.wait_read(&mut link.tls_buf) => {
                let got = match r {
                    Err(e) => return End::Lost(LinkError::Io(e.to_string())),
                    Ok(tls) => link.took(tls),
                };
                match got {
                    Ok(Some(ev)) => {
                        link.show(&ev);
                        let now = Instant::now();
                        pending = sess.on_peer(ev, now);
                        pending.extend(sess.on_partial(&mut link.ann, now));
                    }
                    Ok(None) => return ended(&sess, stop, link),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(e) => return End::Lost(LinkError::Io(e.to_string())),
                }
            }
            _ = sleep_opt(deadline) => {
                let now = Instant::now();
                pending = sess.on_tick(now);
                let outs = home.on_tick(now, unix_now());
                if let Err(e) = apply_home(link, sh, &sess, &home.active.id, outs).await {
                    return End::Lost(e);
                }
            }
            _ = stop.changed(), if sess.is_open() => {
                if link.writer.has(Quirk::DropWithoutClose) {
                    return End::Stopped;
                }
                pending = sess.close(1000, "emulator stopping", Instant::now());
            }
        }
    }
}

/// How the connection ended, once TCP is gone or the session says so.
fn ended(sess: &Session, stop: &watch::Receiver<bool>, link: &Link) -> End {
    if *stop.borrow() {
        return End::Stopped;
    }
    End::Lost(match sess.peer_close() {
        Some(_) if link.writer.has(Quirk::SilentClose) => LinkError::SilentClose,
        Some(code) => LinkError::Closed(code),
        None if sess.close_sent() => LinkError::Io(
            "this plug closed the link (nothing heard for 90 s, or a protocol violation)".into(),
        ),
        None => LinkError::Io("server closed TCP".into()),
    })
}

/// Send what the home says (while the session is open) and count it.
async fn apply_home(
    link: &mut Link,
    sh: &Shared,
    sess: &Session,
    who: &str,
    outs: Vec<Out>,
) -> Result<(), LinkError> {
    for o in outs {
        // A report that does not go out (the session is closing) stays
        // queued for the next connection: it is not counted as sent.
        if matches!(o, Out::ReportSent) && !sess.is_open() {
            continue;
        }
        count(&sh.stats, &o);
        // -v: what each plug does; -vv: every report and ack too.
        match &o {
            Out::Command => tracing::info!("{who}: obeyed a switch"),
            Out::ReportAcked(rtt) => tracing::debug!("{who}: report acknowledged after {rtt:?}"),
            Out::Send(m) => tracing::debug!("{who}: sends {}", m.to_json()),
            Out::ReportSent => {}
        }
        let Out::Send(m) = o else { continue };
        if !sess.is_open() {
            continue;
        }
        let mut text = m.to_json();
        if link.writer.has(Quirk::JsonConcat) && matches!(*m, Msg::Report(_)) {
            // The bug: a report appended to the send buffer before the last one went out.
            match link.held_report.take() {
                None => {
                    link.held_report = Some(text);
                    continue;
                }
                Some(prev) => text = prev + &text,
            }
        }
        link.frame(OpCode::Text, text.as_bytes()).await?;
    }
    Ok(())
}

/// Carry out the session's outputs; delivered messages go to the home.
async fn apply_session(
    link: &mut Link,
    sh: &Shared,
    home: &mut Home,
    sess: &mut Session,
    outs: Vec<Output>,
) -> Result<(), LinkError> {
    for o in outs {
        match o {
            Output::Frame { opcode, payload } => link.frame(opcode, &payload).await?,
            // The fragment-as-message bug: each fragment parsed alone is
            // no JSON, so a fragmented command is never acted on.
            Output::Deliver(m) if m.frames > 1 && sh.quirks.contains(&Quirk::FragmentAsMessage) => {
                tracing::debug!(
                    "{}: a message in {} fragments, taken as {} broken messages",
                    home.active.id,
                    m.frames,
                    m.frames
                );
            }
            Output::Deliver(m) => {
                let outs = home.on_message(&m, Instant::now(), unix_now());
                apply_home(link, sh, sess, &home.active.id, outs).await?;
            }
            Output::CloseTcp => return Ok(()),
        }
    }
    Ok(())
}

async fn sleep_opt(d: Option<Instant>) {
    match d {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
