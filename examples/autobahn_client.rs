//! An echo client for the Autobahn|Testsuite's `fuzzingserver` mode, built on
//! the same core as `emulate-device`: the hand-made client handshake, the
//! annotator (decoder, fragment reassembly, UTF-8 checks, notes) and the
//! client-side encoder. Used by `scripts/autobahn.sh`.
//!
//! Usage: autobahn_client ws://127.0.0.1:9001 AGENT

use kinetid_wsdump::annotate::{
    close_code_for, Annotator, Config, Event, EventKind, HandshakeMode,
};
use kinetid_wsdump::frame::{
    close_payload, encode_frame, encode_message, CloseCode, Direction, EncodeOptions, OpCode, Role,
};
use kinetid_wsdump::handshake::{self, HeadParse, Limits};
use kinetid_wsdump::note::Severity;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Connect, do the handshake, return the socket and any bytes read past the head.
fn open(base: &str, path: &str) -> Result<(TcpStream, Annotator, Vec<Event>), String> {
    let hostport = base
        .strip_prefix("ws://")
        .ok_or("ws:// URL expected")?
        .trim_end_matches('/');
    let mut s = TcpStream::connect(hostport).map_err(|e| format!("connect {hostport}: {e}"))?;
    s.set_nodelay(true).ok();
    s.set_read_timeout(Some(Duration::from_secs(120))).ok();
    let key = handshake::random_key();
    let req = handshake::client_request(hostport, path, &key, &[]);
    s.write_all(&req).map_err(|e| e.to_string())?;
    let mut ann = Annotator::new(
        1,
        Config {
            max_frame: 64 << 20,
            max_message: 64 << 20,
            kinetid: false,
            handshake: HandshakeMode::Expect,
            limits: Limits::default(),
        },
    );
    let mut ev = Vec::new();
    ann.feed(Direction::C2S, &req, None, &mut ev);
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = s.read(&mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("EOF during handshake".into());
        }
        head.extend_from_slice(&buf[..n]);
        match handshake::parse_head(&head, Limits::default()) {
            HeadParse::Partial => continue,
            HeadParse::Invalid(e) => return Err(e.to_string()),
            HeadParse::Complete(h) => {
                let v = handshake::check_response(&h, Some(&key), &[]);
                if let Some(e) = v.error {
                    return Err(e.to_string());
                }
                // Bytes after the head are frames: the annotator keeps them.
                ann.feed(Direction::S2C, &head, None, &mut ev);
                return Ok((s, ann, ev));
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
    let (mut s, mut ann, first) = open(base, path)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut close_sent = false;
    let mut ev: Vec<Event> = first;
    loop {
        for e in ev.drain(..) {
            if e.dir != Direction::S2C {
                continue;
            }
            match e.kind {
                EventKind::Frame(f) => {
                    if let Some(code) = f
                        .notes
                        .iter()
                        .filter(|n| n.severity == Severity::Error)
                        .find_map(close_code_for)
                    {
                        // Fail the connection (RFC 6455 7.1.7): Close, then no more processing.
                        if !close_sent {
                            let _ =
                                s.write_all(&frame(OpCode::Close, &close_payload(Some(code), "")));
                        }
                        let _ = s.shutdown(std::net::Shutdown::Write);
                        drain(&mut s);
                        return Ok(());
                    }
                    match f.header.opcode {
                        OpCode::Ping if !close_sent => s
                            .write_all(&frame(OpCode::Pong, &f.payload))
                            .map_err(|e| e.to_string())?,
                        OpCode::Close => {
                            if !close_sent {
                                let p = match f.close {
                                    Some((c, _)) => close_payload(Some(c), ""),
                                    None => Vec::new(),
                                };
                                let _ = s.write_all(&frame(OpCode::Close, &p));
                            }
                            // The server closes TCP first (RFC 6455 7.1.1).
                            drain(&mut s);
                            return Ok(());
                        }
                        _ => {}
                    }
                }
                EventKind::Message(m) if !close_sent => {
                    if m.notes.iter().any(|n| n.severity == Severity::Error) {
                        continue;
                    }
                    let mut out = Vec::with_capacity(m.payload.len() + 14);
                    encode_message(&mut out, m.opcode, &m.payload, Role::Client, None);
                    if s.write_all(&out).is_err() {
                        close_sent = true;
                    }
                }
                _ => {}
            }
        }
        let n = match s.read(&mut buf) {
            Ok(0) | Err(_) => return Ok(()),
            Ok(n) => n,
        };
        ann.feed(Direction::S2C, &buf[..n], None, &mut ev);
    }
}

fn drain(s: &mut TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(2))).ok();
    let mut b = [0u8; 4096];
    while matches!(s.read(&mut b), Ok(n) if n > 0) {}
}

fn text_message(base: &str, path: &str) -> Result<String, String> {
    let (mut s, mut ann, first) = open(base, path)?;
    let mut buf = [0u8; 4096];
    let mut ev: Vec<Event> = first;
    loop {
        for e in ev.drain(..) {
            if let EventKind::Message(m) = e.kind {
                let _ = s.write_all(&frame(
                    OpCode::Close,
                    &close_payload(Some(CloseCode::NORMAL), ""),
                ));
                return m.text.ok_or_else(|| "not text".to_string());
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
    let _ = open(base, &format!("/updateReports?agent={agent}")).map(|(mut s, _, _)| {
        let _ = s.write_all(&frame(
            OpCode::Close,
            &close_payload(Some(CloseCode::NORMAL), ""),
        ));
        drain(&mut s);
    });
}
