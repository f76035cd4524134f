//! Properties the fuzz targets (in `fuzz/`) check on arbitrary input, kept in
//! the library so `cargo test` can replay the corpus and every crash that was
//! ever found without a fuzzer installed.
//!
//! Each function panics when a property fails: no panic elsewhere, bounded
//! memory (the decoder never holds more than one frame's worth), and the same
//! result however the input is split.

use crate::annotate::{Annotator, Config, Event, HandshakeMode};
use crate::render::{Format, Printer};
use crate::wire::frame::Direction;
use crate::wire::handshake::{self, HeadParse, Limits};

/// Inputs are cut to this length (the limits below are scaled to match).
const MAX_INPUT: usize = 2 * 1024;

fn render(ev: &[Event]) -> Vec<u8> {
    let p = Printer {
        format: Format::Json,
        color: false,
        max_dump: 64,
    };
    let mut out = Vec::new();
    for e in ev {
        let at = out.len();
        p.event(&mut out, e).expect("render to memory");
        // The streaming JSON writer says exactly what the value form says.
        let mut v = serde_json::to_vec(&p.json(e)).expect("serialise");
        v.push(b'\n');
        assert_eq!(
            String::from_utf8_lossy(&out[at..]),
            String::from_utf8_lossy(&v),
            "JSON writers disagree"
        );
    }
    out
}

/// Chunk sizes taken from the input's first bytes, so the fuzzer explores splits.
fn chunk_plan(data: &[u8]) -> (Vec<usize>, &[u8]) {
    if data.len() < 4 {
        return (vec![1], data);
    }
    let plan = data[..4].iter().map(|&b| (b as usize % 31) + 1).collect();
    (plan, &data[4..])
}

/// The handshake request parser: pure, bounded, and a prefix of a complete
/// head is never judged differently from what the whole head gets.
pub fn request(data: &[u8]) {
    let limits = Limits {
        max_head_bytes: 2048,
        max_headers: 32,
    };
    let whole = handshake::parse_head(data, limits);
    if let HeadParse::Complete(h) = &whole {
        assert!(h.len <= data.len() && h.len <= limits.max_head_bytes);
        let v = handshake::check_request(h);
        let resp = handshake::server_response(&v);
        assert!(resp.starts_with(b"HTTP/1.1 "));
        // Every strict prefix of the head is incomplete.
        for cut in [0, h.len / 2, h.len.saturating_sub(1)] {
            if cut < h.len {
                assert!(matches!(
                    handshake::parse_head(&data[..cut], limits),
                    HeadParse::Partial | HeadParse::Invalid(_)
                ));
            }
        }
    }
}

/// The 101 response parser and checker.
pub fn response(data: &[u8]) {
    if let HeadParse::Complete(h) = handshake::parse_head(data, Limits::default()) {
        let v = handshake::check_response(&h, Some("dGhlIHNhbXBsZSBub25jZQ=="), &["kinetid.v1"]);
        assert!(
            v.status != 101
                || v.error.is_some()
                || h.get("sec-websocket-accept") == Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        );
    }
}

/// The annotator (frame decoder, fragments, UTF-8, Kinetid layer) in both
/// roles: the events are identical whether the bytes come whole or in the
/// chunk sizes the input chose.
pub fn frames(data: &[u8]) {
    // Longer inputs only repeat what shorter ones reach, at a hundredth of the speed.
    let data = &data[..data.len().min(MAX_INPUT)];
    let (plan, body) = chunk_plan(data);
    let cfg = Config {
        max_frame: 4096,
        max_message: 8192,
        limits: Limits::default(),
        kinetid: true,
        kinetid_auto: false,
        handshake: HandshakeMode::Detect,
        resync: false,
        deflate: Some(crate::wire::deflate::ServerPolicy::default()),
    };
    for dir in [Direction::C2S, Direction::S2C] {
        let mut a = Annotator::new(1, cfg);
        let mut whole = Vec::new();
        a.feed(dir, body, None, &mut whole);
        a.finish(None, &mut whole);
        let mut b = Annotator::new(1, cfg);
        let mut split = Vec::new();
        let mut pos = 0;
        let mut i = 0;
        while pos < body.len() {
            let n = plan[i % plan.len()].min(body.len() - pos);
            b.feed(dir, &body[pos..pos + n], None, &mut split);
            pos += n;
            i += 1;
        }
        b.finish(None, &mut split);
        let (w, sp) = (render(&whole), render(&split));
        if w != sp {
            let (w, sp) = (String::from_utf8_lossy(&w), String::from_utf8_lossy(&sp));
            let at = w.lines().zip(sp.lines()).position(|(a, b)| a != b);
            panic!(
                "chunking changed the annotation at line {at:?}:\nwhole: {}\nsplit: {}",
                at.and_then(|i| w.lines().nth(i)).unwrap_or("(ends)"),
                at.and_then(|i| sp.lines().nth(i)).unwrap_or("(ends)")
            );
        }
    }
}

/// The fixture and capture file parsers, and replaying what they parse.
pub fn files(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT)];
    if let Ok(text) = std::str::from_utf8(data) {
        let p = crate::capture::replay::parse_text(text);
        if let Some(e) = &p.error {
            assert!(e.offset <= text.len() && e.line >= 1);
        }
        let cfg = Config {
            max_frame: 4096,
            max_message: 8192,
            ..Config::default()
        };
        let _ = crate::capture::replay::annotate_all(&p.chunks, cfg, None);
        let _ = crate::capture::parse_capture(text);
    }
}

/// The Kinetid JSON decoder, both directions.
pub fn kinetid(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        for dir in [Direction::C2S, Direction::S2C] {
            let d = crate::kinetid::decode(text, dir);
            assert!(d.msg.is_some() || !d.notes.is_empty());
        }
    }
}

/// permessage-deflate: inflating any bytes with any agreed parameters never
/// panics and never returns more than the limit; and any bytes deflated
/// with those parameters inflate back to themselves. The first byte picks
/// the window and the context takeover.
pub fn inflate(data: &[u8]) {
    use crate::wire::deflate::{Deflater, InflateError, Inflater, Side};
    let Some((&p, rest)) = data.split_first() else {
        return;
    };
    let side = Side {
        no_context_takeover: p & 0x80 != 0,
        window_bits: 8 + (p & 0x7),
    };
    let limit = 64 * 1024;
    let mut i = Inflater::new(side);
    for piece in rest.split(|&b| b == 0xa5).take(8) {
        match i.inflate(piece, limit) {
            Ok(out) => assert!(out.len() as u64 <= limit),
            Err(InflateError::TooBig { limit: l }) => assert_eq!(l, limit),
            Err(InflateError::Invalid { at, .. }) => assert!(at <= piece.len() as u64 + 4),
        }
    }
    let mut d = Deflater::new(side);
    let mut i = Inflater::new(side);
    for piece in rest.chunks(97).take(8) {
        let z = d.deflate(piece);
        assert_eq!(i.inflate(&z, limit).as_deref(), Ok(piece));
    }
}

/// The packet capture reader: any bytes (after a pcap header, when they do
/// not start with one, so the fuzzer reaches the packets) are read without
/// a panic, an error names an offset inside the input, and what was read
/// replays through the annotator.
pub fn pcap(data: &[u8]) {
    let data = &data[..data.len().min(8 * MAX_INPUT)];
    let mut input = Vec::with_capacity(data.len() + 24);
    if !crate::capture::pcap::is_capture(data) {
        // A legacy header: little-endian, microseconds, link type from the
        // first byte (Ethernet, raw IP, SLL, SLL2, loopback).
        let lt: u32 = match data.first().map(|b| b % 5) {
            Some(0) => 101,
            Some(1) => 113,
            Some(2) => 276,
            Some(3) => 0,
            _ => 1,
        };
        input.extend_from_slice(&0xA1B2_C3D4u32.to_le_bytes());
        input.extend_from_slice(&[2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        input.extend_from_slice(&65535u32.to_le_bytes());
        input.extend_from_slice(&lt.to_le_bytes());
    }
    input.extend_from_slice(data);
    let len = input.len();
    let Ok(mut r) =
        crate::capture::pcap::PcapReader::new(std::io::Cursor::new(input), Default::default())
    else {
        return;
    };
    let mut chunks = Vec::new();
    for _ in 0..100_000 {
        match r.next_chunk() {
            Ok(Some(c)) => chunks.push(c),
            _ => break,
        }
    }
    if let Some(e) = r.error() {
        assert!(
            e.offset <= len,
            "error offset {} past the input ({len})",
            e.offset
        );
    }
    let cfg = Config {
        max_frame: 4096,
        max_message: 8192,
        ..Config::default()
    };
    let _ = crate::capture::replay::annotate_all(&chunks, cfg, None);
}

/// Messages a peer sends, for [`machines`] to build frames from (random
/// bytes would almost never reach the Kinetid layer).
const PEER_TEXT: &[&str] = &[
    r#"{"t":"hello","id":1,"dev":"KN-A4CF12F0E1B2","fw":"1","role":"active","period_s":60,"passives":["KN-00A1B2C3D4E5"]}"#,
    r#"{"t":"report","id":2,"dev":"KN-A4CF12F0E1B2","ts":1767225660,"seq":41,"on":true,"power_w":1432.6,"energy_wh":12.5}"#,
    r#"{"t":"report","id":3,"dev":"KN-00A1B2C3D4E5","via":"KN-A4CF12F0E1B2","ts":1767225660,"seq":7,"on":true,"power_w":3.1,"energy_wh":1.5}"#,
    r#"{"t":"state","re":9001,"dev":"KN-A4CF12F0E1B2","on":false,"was_on":true,"src":"backend","ts":1767225671}"#,
    r#"{"t":"welcome","re":1,"ts":1767225600,"period_s":60}"#,
    r#"{"t":"ack","re":2}"#,
    r#"{"t":"switch","id":9001,"dev":"KN-A4CF12F0E1B2","on":false}"#,
    r#"{"t":"switch","id":9002,"dev":"KN-00A1B2C3D4E5","toggle":true}"#,
    r#"{"t":"switch","id":9003,"dev":"KN-FFFFFFFFFFFF","on":true}"#,
    r#"{"t":"switch","id":9004,"dev":"KN-A4CF12F0E1B2"}"#,
    r#"{"t":"error","code":"bad_request","msg":"x"}"#,
    r#"{"no":"type"}"#,
    "not json",
];

/// The connection's state machines ([`Session`], [`Backend`] and [`Home`])
/// driven by an arbitrary sequence of events: bytes and whole frames from
/// the peer, the clock moving on, a close asked for by the application,
/// the end of the stream. Invariants, in both roles:
///
/// * nothing is sent after the session said to drop TCP; after its Close,
///   no data frame and no second Close; no message delivered after it;
/// * a session that sent its Close always has a deadline, and the clock
///   ends it;
/// * every `switch` with an id given to a home is answered (`state` or
///   `error` with that `re`) once its power-line time has passed;
/// * the annotator's buffers, the home's queue and every control payload
///   stay within their bounds.
///
/// [`Session`]: crate::engine::session::Session
/// [`Backend`]: crate::engine::backend::Backend
/// [`Home`]: crate::engine::device::Home
// One property per state machine, each a short script: kept together so
// the fuzz target and its regression test run the same list.
pub fn machines(data: &[u8]) {
    use crate::engine::backend::{Backend, BackendConfig, Effect};
    use crate::engine::device::{Home, HomeConfig, Out, Plug};
    use crate::engine::session::{Output, Session, SessionConfig};
    use crate::kinetid::meter::{Appliance, Mains};
    use crate::kinetid::msg::Msg;
    use crate::wire::frame::{encode_frame, EncodeOptions, MaskKey, OpCode, Role};
    use rand::SeedableRng;
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    let data = &data[..data.len().min(MAX_INPUT)];
    let Some((&first, mut rest)) = data.split_first() else {
        return;
    };
    let role = if first & 1 == 0 {
        Role::Server
    } else {
        Role::Client
    };
    let peer_dir = match role {
        Role::Server => Direction::C2S,
        Role::Client => Direction::S2C,
    };
    let t0 = Instant::now();
    let mut now = t0;
    let unix = |now: Instant| 1_767_225_600.0 + (now - t0).as_secs_f64();
    let mut sess = Session::new(
        SessionConfig {
            ping_interval: Some(Duration::from_secs(30)),
            idle_timeout: Some(Duration::from_secs(90)),
            lenient: first & 2 != 0,
            ..SessionConfig::new(role)
        },
        now,
    );
    let max_message = 8192;
    let mut ann = Annotator::new(
        1,
        Config {
            handshake: HandshakeMode::None,
            max_frame: 4096,
            max_message,
            ..Config::default()
        },
    );
    let mut backend = Backend::new(
        BackendConfig {
            hello_timeout: Duration::from_secs(10),
            refuse: vec!["KN-DEADDEADDEAD".into()],
        },
        now,
    );
    let queue_max = 4;
    let plc = Duration::from_millis(40);
    let mut home = Home::new(
        HomeConfig {
            interval: Duration::from_secs(60),
            plc_latency: plc,
            plc_loss: 0.0,
            button_every: None,
            mains: Mains::Eu,
            queue_max,
            fw: "fuzz".into(),
        },
        Plug::new("KN-A4CF12F0E1B2".into(), Appliance::Kettle, Mains::Eu, 1),
        vec![Plug::new(
            "KN-00A1B2C3D4E5".into(),
            Appliance::Fridge,
            Mains::Eu,
            2,
        )],
        rand::rngs::StdRng::seed_from_u64(u64::from(first)),
        t0 + Duration::from_secs(60),
    );
    if role == Role::Client {
        home.on_connected(now);
    }

    // What the session has said so far.
    #[derive(Default)]
    struct Said {
        close_sent: bool,
        tcp_closed: bool,
    }
    let mut said = Said::default();
    // Switch ids given to the home and not answered yet (ids may repeat).
    let mut unanswered: HashMap<u64, u32> = HashMap::new();

    let check = |said: &mut Said, out: &[Output]| {
        for o in out {
            assert!(!said.tcp_closed, "output after CloseTcp: {o:?}");
            match o {
                Output::Frame { opcode, payload } => {
                    if opcode.is_control() {
                        assert!(payload.len() <= 125, "{opcode:?} of {}", payload.len());
                    }
                    if said.close_sent {
                        assert!(
                            opcode.is_control() && *opcode != OpCode::Close,
                            "{opcode:?} after our Close"
                        );
                    }
                    if *opcode == OpCode::Close {
                        said.close_sent = true;
                    }
                }
                Output::Deliver(_) => {
                    assert!(!said.close_sent, "a message delivered after our Close")
                }
                Output::CloseTcp => said.tcp_closed = true,
            }
        }
    };

    // Hand what the session delivers to the application's machine; what
    // that machine asks to send goes through the session's own rules.
    let apply = |sess: &mut Session,
                 said: &mut Said,
                 backend: &mut Backend,
                 home: &mut Home,
                 unanswered: &mut HashMap<u64, u32>,
                 out: Vec<Output>,
                 now: Instant| {
        check(said, &out);
        for o in out {
            let Output::Deliver(m) = o else { continue };
            match role {
                Role::Server => {
                    for e in backend.on_message(&m, unix(now)) {
                        if let Effect::Close(code, why) = e {
                            let c = sess.close(code, why, now);
                            check(said, &c);
                        }
                    }
                }
                Role::Client => {
                    if let Some(Msg::Switch(s)) = m.kinetid.as_ref().and_then(|k| k.typed.as_ref())
                    {
                        if let (Some(id), Some(_)) = (s.id, &s.dev) {
                            *unanswered.entry(id).or_default() += 1;
                        }
                    }
                    let outs = home.on_message(&m, now, unix(now));
                    answered(unanswered, &outs);
                }
            }
        }
    };
    fn answered(unanswered: &mut HashMap<u64, u32>, outs: &[Out]) {
        for o in outs {
            let Out::Send(msg) = o else { continue };
            let v: serde_json::Value = serde_json::from_str(&msg.to_json()).expect("JSON");
            if let Some(re) = v["re"].as_u64() {
                if let Some(n) = unanswered.get_mut(&re) {
                    *n -= 1;
                    if *n == 0 {
                        unanswered.remove(&re);
                    }
                }
            }
        }
    }

    let mut ended = false;
    while let Some((&op, r)) = rest.split_first() {
        rest = r;
        let mut take = |n: usize| {
            let n = n.min(rest.len());
            let (a, b) = rest.split_at(n);
            rest = b;
            a
        };
        let mut bytes = Vec::new();
        match op % 6 {
            // Raw bytes from the peer.
            0 => {
                let n = take(1).first().map_or(0, |&b| b as usize % 64);
                bytes.extend_from_slice(take(n));
            }
            // A frame from the peer: opcode, flags, a known message or raw
            // bytes as payload.
            1 | 2 => {
                let p = take(3);
                let (o, flags, pick) = match p {
                    [o, f, k] => (*o, *f, *k),
                    _ => (1, 0x80, 0),
                };
                let payload: Vec<u8> = if pick & 0x80 == 0 {
                    PEER_TEXT[pick as usize % PEER_TEXT.len()]
                        .as_bytes()
                        .to_vec()
                } else {
                    let n = (pick & 0x3f) as usize;
                    take(n).to_vec()
                };
                let masked = (role == Role::Server) != (flags & 0x08 != 0);
                let opcode = if op % 6 == 1 {
                    OpCode::Text
                } else {
                    OpCode::from_u8(o & 0x0f)
                };
                encode_frame(
                    &mut bytes,
                    opcode,
                    &payload,
                    EncodeOptions {
                        fin: flags & 0x80 == 0 || op % 6 == 1,
                        rsv: (flags >> 4) & 0x7 & if flags & 0x01 != 0 { 7 } else { 0 },
                        mask: masked.then_some(MaskKey([o, flags, pick, 0x5a])),
                        len_encoding: None,
                    },
                );
                // Sometimes only a part of it arrives now.
                if flags & 0x02 != 0 && bytes.len() > 2 {
                    bytes.truncate(bytes.len() / 2 + 1);
                }
            }
            // The clock moves on.
            3 => {
                let dt = take(1).first().map_or(1, |&b| u64::from(b));
                now += Duration::from_millis(dt * 250);
                let out = sess.on_tick(now);
                check(&mut said, &out);
                match role {
                    Role::Server => {
                        for e in backend.on_tick(now) {
                            if let Effect::Close(code, why) = e {
                                let c = sess.close(code, why, now);
                                check(&mut said, &c);
                            }
                        }
                    }
                    Role::Client => {
                        let outs = home.on_tick(now, unix(now));
                        answered(&mut unanswered, &outs);
                    }
                }
            }
            // The application closes.
            4 => {
                let c = take(2);
                let code = match c {
                    [a, b] => u16::from_be_bytes([*a, *b]) % 5000,
                    _ => 1000,
                };
                let before = said.close_sent || sess.is_done();
                let out = sess.close(code, "app", now);
                assert!(
                    before
                        || out.iter().any(|o| matches!(
                            o,
                            Output::Frame {
                                opcode: OpCode::Close,
                                ..
                            }
                        )),
                    "a close asked for and nothing sent"
                );
                check(&mut said, &out);
            }
            // The stream ends.
            _ => {
                let mut ev = Vec::new();
                ann.finish(Some(unix(now)), &mut ev);
                ended = true;
                break;
            }
        }
        if !bytes.is_empty() && !sess.is_done() {
            let mut ev = Vec::new();
            ann.feed(peer_dir, &bytes, Some(unix(now)), &mut ev);
            let mut out = sess.on_peer(ev, now);
            out.extend(sess.on_partial(&mut ann, now));
            apply(
                &mut sess,
                &mut said,
                &mut backend,
                &mut home,
                &mut unanswered,
                out,
                now,
            );
        }
        assert!(
            ann.held_bytes() <= 4 * (max_message as usize + 16 * 1024),
            "annotator holds {} bytes",
            ann.held_bytes()
        );
        assert!(home.queued() <= queue_max, "home queue {}", home.queued());
        if said.close_sent && !sess.is_done() {
            assert!(sess.next_deadline().is_some(), "closing with no deadline");
        }
    }
    // The clock ends whatever was closing, and answers what was switched.
    if !ended {
        for _ in 0..4 {
            now += Duration::from_secs(3600);
            let out = sess.on_tick(now);
            check(&mut said, &out);
            if role == Role::Client {
                let outs = home.on_tick(now, unix(now));
                answered(&mut unanswered, &outs);
            }
        }
        if said.close_sent {
            assert!(sess.is_done(), "a Close sent and the session never ended");
        }
    }
    if role == Role::Client {
        now += plc * 2;
        let outs = home.on_tick(now, unix(now));
        answered(&mut unanswered, &outs);
        assert!(
            unanswered.is_empty(),
            "switches never answered: {unanswered:?}"
        );
    }
}
