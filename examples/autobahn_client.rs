//! An echo client for the Autobahn|Testsuite's `fuzzingserver` mode, built on
//! the same engine as `emulate-device`: the hand-made client handshake, the
//! annotator (decoder, fragment reassembly, UTF-8 checks, notes), the
//! client-role [`Session`] (pings, closes, failing the connection) and the
//! client-side encoder. Used by `scripts/autobahn.sh`; blocking I/O, so it
//! also shows the engine needs no async runtime.
//!
//! Usage: autobahn_client ws://127.0.0.1:9001 AGENT

use kinetid_wsdump::annotate::{Annotator, Config, Event, EventKind, HandshakeMode};
use kinetid_wsdump::engine::session::{Output, Session, SessionConfig};
use kinetid_wsdump::wire::deflate::Deflater;
use kinetid_wsdump::wire::frame::{
    close_payload, encode_frame, encode_message, CloseCode, Direction, EncodeOptions, OpCode, Role,
};
use kinetid_wsdump::wire::handshake::{self, Limits};
use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Connect, do the handshake, return the socket and any bytes read past the head.
type Opened = (TcpStream, Annotator, Vec<Event>, Option<Deflater>);

/// The extension offered on every connection: permessage-deflate, any window.
const OFFER: &str = "permessage-deflate; client_max_window_bits";

fn open(base: &str, path: &str) -> Result<Opened, String> {
    let hostport = base
        .strip_prefix("ws://")
        .ok_or("ws:// URL expected")?
        .trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).map_err(|e| format!("connect {hostport}: {e}"))?;
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let key = handshake::random_key();
    let mut req = handshake::client_request(hostport, path, &key, &[]);
    req.truncate(req.len() - 2);
    req.extend_from_slice(format!("Sec-WebSocket-Extensions: {OFFER}\r\n\r\n").as_bytes());
    s.write_all(&req).map_err(|e| e.to_string())?;
    let mut ann = Annotator::new(
        1,
        Config {
            max_frame: 64 << 20,
            max_message: 64 << 20,
            kinetid: false,
            kinetid_auto: false,
            handshake: HandshakeMode::Expect,
            limits: Limits::default(),
            resync: false,
            deflate: None,
        },
    );
    let mut ev = Vec::new();
    ann.feed(Direction::C2S, &req, None, &mut ev);
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("EOF during handshake".into());
        }
        // The annotator judges the response; bytes after it are frames it keeps.
        let from = ev.len();
        ann.feed(Direction::S2C, &buf[..n], None, &mut ev);
        for e in &ev[from..] {
            match &e.kind {
                EventKind::HeadError(he) => return Err(he.reason.clone()),
                EventKind::Response { verdict, .. } => {
                    return match &verdict.error {
                        Some(err) => Err(err.to_string()),
                        None => {
                            let d = verdict.deflate.map(|a| Deflater::new(a.client));
                            Ok((s, ann, ev, d))
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

fn frame(op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 14);
    encode_frame(&mut v, op, payload, EncodeOptions::client());
    v
}

/// Echo every message until the connection closes.
fn run_case(base: &str, path: &str) -> Result<(), String> {
    let (mut s, mut ann, first, mut deflater) = open(base, path)?;
    let mut sess = Session::new(SessionConfig::new(Role::Client), Instant::now());
    let mut buf = vec![0u8; 256 * 1024];
    let mut pending = sess.on_peer(first, Instant::now());
    loop {
        for o in pending.drain(..) {
            let bytes = match o {
                Output::Frame { opcode, payload } => frame(opcode, &payload),
                Output::Deliver(m) => {
                    let mut out = Vec::with_capacity(m.payload.len() + 14);
                    match deflater.as_mut() {
                        // Compressed when agreed: RSV1 on the (only) frame.
                        Some(d) => {
                            let z = d.deflate(&m.payload);
                            let opts = EncodeOptions {
                                rsv: 0x4,
                                ..EncodeOptions::client()
                            };
                            encode_frame(&mut out, m.opcode, &z, opts);
                        }
                        None => encode_message(&mut out, m.opcode, &m.payload, Role::Client, None),
                    }
                    out
                }
                Output::CloseTcp => return Ok(()),
            };
            if s.write_all(&bytes).is_err() {
                return Ok(());
            }
        }
        if sess.is_done() {
            return Ok(());
        }
        // Read until the next deadline of the session, then tick it.
        let now = Instant::now();
        let wait = sess
            .next_deadline()
            .map_or(Duration::from_secs(120), |d| {
                d.saturating_duration_since(now)
            })
            .max(Duration::from_millis(1));
        s.set_read_timeout(Some(wait)).ok();
        match s.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                let mut ev = Vec::new();
                ann.feed(Direction::S2C, &buf[..n], None, &mut ev);
                let now = Instant::now();
                pending = sess.on_peer(ev, now);
                pending.extend(sess.on_partial(&mut ann, now));
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                pending = sess.on_tick(Instant::now());
            }
            Err(_) => return Ok(()),
        }
    }
}

fn drain(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let mut b = [0u8; 4096];
    while matches!(s.read(&mut b), Ok(n) if n > 0) {}
}

fn text_message(base: &str, path: &str) -> Result<String, String> {
    let (mut s, mut ann, first, _) = open(base, path)?;
    let mut buf = [0u8; 4096];
    let mut ev: Vec<Event> = first;
    loop {
        for e in ev.drain(..) {
            if let EventKind::Message(m) = e.kind {
                let _ = s.write_all(&frame(
                    OpCode::Close,
                    &close_payload(Some(CloseCode::NORMAL), ""),
                ));
                return m
                    .text()
                    .map(str::to_string)
                    .ok_or_else(|| "not text".to_string());
            }
        }
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("EOF".into());
        }
        ann.feed(Direction::S2C, &buf[..n], None, &mut ev);
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: autobahn_client ws://HOST:PORT AGENT");
        std::process::exit(2);
    }
    let (base, agent) = (&args[1], &args[2]);
    let count: u32 = text_message(base, "/getCaseCount")
        .and_then(|t| t.trim().parse().map_err(|e| format!("{e}")))
        .unwrap_or_else(|e| {
            eprintln!("getCaseCount: {e}");
            std::process::exit(1);
        });
    println!("case count: {count}");
    for i in 1..=count {
        if let Err(e) = run_case(base, &format!("/runCase?case={i}&agent={agent}")) {
            eprintln!("case {i}: {e}");
        }
    }
    let _ = open(base, &format!("/updateReports?agent={agent}")).map(|(mut s, _, _, _)| {
        let _ = s.write_all(&frame(
            OpCode::Close,
            &close_payload(Some(CloseCode::NORMAL), ""),
        ));
        drain(&mut s);
    });
}
