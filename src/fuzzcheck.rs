//! Properties the fuzz targets (in `fuzz/`) check on arbitrary input, kept in
//! the library so `cargo test` can replay the corpus and every crash that was
//! ever found without a fuzzer installed.
//!
//! Each function panics when a property fails: no panic elsewhere, bounded
//! memory (the decoder never holds more than one frame's worth), and the same
//! result however the input is split.

use crate::annotate::{Annotator, Config, Event, HandshakeMode};
use crate::frame::Direction;
use crate::handshake::{self, HeadParse, Limits};
use crate::render::{Format, Printer};

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
        handshake: HandshakeMode::Detect,
        resync: false,
        deflate: Some(crate::deflate::ServerPolicy::default()),
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
        assert_eq!(
            render(&whole),
            render(&split),
            "chunking changed the annotation"
        );
    }
}

/// The fixture and capture file parsers, and replaying what they parse.
pub fn files(data: &[u8]) {
    let data = &data[..data.len().min(MAX_INPUT)];
    if let Ok(text) = std::str::from_utf8(data) {
        let p = crate::replay::parse_text(text);
        if let Some(e) = &p.error {
            assert!(e.offset <= text.len() && e.line >= 1);
        }
        let cfg = Config {
            max_frame: 4096,
            max_message: 8192,
            ..Config::default()
        };
        let _ = crate::replay::annotate_all(&p.chunks, cfg, None);
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
    use crate::deflate::{Deflater, InflateError, Inflater, Side};
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
    if !crate::pcap::is_capture(data) {
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
    let Ok(mut r) = crate::pcap::PcapReader::new(std::io::Cursor::new(input), Default::default())
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
    let _ = crate::replay::annotate_all(&chunks, cfg, None);
}
