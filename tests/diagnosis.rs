//! Diagnosis (docs/diagnosis.md): every cause named from fixtures, and from
//! bytes built here with other sizes and offsets than the fixtures and the
//! emulator's quirks use; and no false alarm from real peers.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use kinetid_wsdump::annotate::{Config, Event, HandshakeMode};
use kinetid_wsdump::capture::{Chunk, ChunkKind};
use kinetid_wsdump::frame::{encode_frame, Direction, EncodeOptions, MaskKey, OpCode};
use kinetid_wsdump::note::Severity;
use kinetid_wsdump::replay::{annotate_all, parse_text};
use serde_json::{json, Value};
use std::time::Duration;

fn codes(ev: &[Event]) -> Vec<String> {
    ev.iter()
        .flat_map(|e| e.notes())
        .map(|n| n.code.as_str().to_string())
        .collect()
}

fn frames_only(c2s: &[u8], resync: bool) -> Vec<Event> {
    let chunks = [Chunk {
        time: None,
        conn: 1,
        pkt: None,
        kind: ChunkKind::Data(Direction::C2S, c2s.to_vec()),
    }];
    let cfg = Config {
        handshake: HandshakeMode::None,
        resync,
        ..cfg()
    };
    annotate_all(&chunks, cfg, None)
}

fn masked(op: OpCode, p: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_frame(
        &mut v,
        op,
        p,
        EncodeOptions {
            mask: Some(MaskKey(key)),
            ..EncodeOptions::client()
        },
    );
    v
}

fn report(seq: u64, pad: usize) -> Vec<u8> {
    json!({"t":"report","id":seq + 1,"dev":"KN-0000000000AB","ts":1767225600 + 60 * seq,"seq":seq,"on":true,"power_w":2.5,"energy_wh":seq as f64,"pad":"p".repeat(pad)})
        .to_string()
        .into_bytes()
}

#[test]
fn every_diagnosis_fixture_names_its_cause() {
    for (file, code) in [
        ("diag-truncated", "truncated-frame"),
        ("diag-length-le", "hint-length-byte-order"),
        ("diag-length-not-a-length", "hint-length-not-a-length"),
        ("diag-mask-restart", "hint-mask-restart"),
        ("diag-mask-not-applied", "hint-mask-not-applied"),
        ("diag-mask-other-key", "hint-mask-key-mismatch"),
        ("diag-c-string", "hint-c-string"),
        ("diag-latin1", "hint-latin1"),
        ("diag-json-concat", "hint-json-concat"),
        ("diag-accept", "hint-accept-hex"),
        ("diag-accept-guid", "hint-accept-wrong-guid"),
        ("diag-bare-lf", "hint-bare-lf"),
        ("diag-kinetid-sequence", "kinetid-seq-gap"),
        ("diag-kinetid-sequence", "kinetid-seq-duplicate"),
        ("diag-kinetid-sequence", "kinetid-seq-reset"),
        ("diag-kinetid-sequence", "kinetid-energy-backwards"),
        ("diag-kinetid-sequence", "kinetid-report-off-boundary"),
        ("diag-kinetid-sequence", "kinetid-state-contradicts"),
    ] {
        let text = std::fs::read_to_string(root().join(format!("fixtures/{file}.hex"))).unwrap();
        let ev = annotate_all(&parse_text(&text).chunks, cfg(), None);
        assert!(
            codes(&ev).iter().any(|c| c == code),
            "{file}: no {code} in {:?}",
            codes(&ev)
        );
    }
}

#[test]
fn a_truncated_frame_is_shown_with_what_arrived() {
    let f = masked(OpCode::Binary, &[7u8; 500], [1, 2, 3, 4]);
    let ev = frames_only(&f[..f.len() - 123], false);
    let json = render(&ev, kinetid_wsdump::render::Format::Json);
    let frame: Value = json
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["type"] == "frame")
        .unwrap();
    assert_eq!(
        (
            frame["truncated"].as_bool(),
            frame["missing_bytes"].as_u64(),
            frame["payload_len"].as_u64()
        ),
        (Some(true), Some(123), Some(500))
    );
    assert_eq!(frame["payload_hex"].as_str().unwrap().len(), 2 * 377);
}

#[test]
fn byte_swapped_lengths_of_other_sizes_and_resync() {
    // Sizes whose swapped length is longer than the payload (the frame never
    // completes); a swapped length shorter than it is not diagnosed yet.
    for pad in [60, 700, 2000] {
        let r = report(3, pad);
        let mut f = masked(OpCode::Text, &r, [9, 8, 7, 6]);
        f.swap(2, 3);
        let next = masked(OpCode::Text, &report(4, 1), [5, 4, 3, 2]);
        let stream = [f, next].concat();
        let ev = frames_only(&stream, false);
        assert!(
            codes(&ev).contains(&"hint-length-byte-order".into()),
            "{pad}: {:?}",
            codes(&ev)
        );
        // With --resync, the report after it is decoded.
        let ev = frames_only(&stream, true);
        let msgs = render(&ev, kinetid_wsdump::render::Format::Summary);
        assert!(msgs.contains("report id=5"), "{pad}: {msgs}");
    }
}

#[test]
fn mask_restarts_at_other_offsets_and_other_mistakes() {
    let key = [0x11, 0x22, 0x33, 0x44];
    let r = report(5, 40);
    for every in [7usize, 21, 45, 99] {
        let mut f = masked(OpCode::Text, &r, key);
        let hl = f.len() - r.len();
        for (i, b) in f[hl..].iter_mut().enumerate() {
            *b = r[i] ^ key[(i % every) % 4];
        }
        let ev = frames_only(&f, false);
        let hint = ev
            .iter()
            .flat_map(|e| e.notes())
            .find(|n| n.code.as_str() == "hint-mask-restart");
        let hint = hint.unwrap_or_else(|| panic!("{every}: {:?}", codes(&ev)));
        assert!(
            hint.message.contains(&format!("payload byte {every}")),
            "{every}: {}",
            hint.message
        );
    }
    // A Latin-1 device name of another length, a C string in a 96-byte buffer.
    let hello = "{\"t\":\"hello\",\"id\":1,\"dev\":\"KN-0000000000AB\",\"fw\":\"Gartenhaus B\u{e4}r \u{b0}\"}";
    let latin: Vec<u8> = hello.chars().map(|c| c as u32 as u8).collect();
    assert!(
        codes(&frames_only(&masked(OpCode::Text, &latin, key), false))
            .contains(&"hint-latin1".into())
    );
    let mut buf = report(1, 0);
    buf.resize(buf.len().max(96) + 7, 0);
    assert!(codes(&frames_only(&masked(OpCode::Text, &buf, key), false))
        .contains(&"hint-c-string".into()));
    let two = [report(1, 3), report(2, 9)].concat();
    assert!(codes(&frames_only(&masked(OpCode::Text, &two, key), false))
        .contains(&"hint-json-concat".into()));
}

#[test]
fn a_pong_long_after_its_ping_is_late() {
    let ping = {
        let mut v = Vec::new();
        encode_frame(&mut v, OpCode::Ping, b"1", EncodeOptions::server());
        v
    };
    let pong = masked(OpCode::Pong, b"1", [1, 1, 2, 2]);
    let cap = format!(
        "# kinetid-wsdump capture v1\n100.000000 1 s2c {}\n108.500000 1 c2s {}\n",
        hex::encode(&ping),
        hex::encode(&pong)
    );
    let ev = annotate_all(
        &parse_text(&cap).chunks,
        Config {
            handshake: HandshakeMode::None,
            ..cfg()
        },
        None,
    );
    assert!(
        codes(&ev).contains(&"ping-answered-late".into()),
        "{:?}",
        codes(&ev)
    );
    let quick = cap.replace("108.500000", "100.200000");
    let ev = annotate_all(
        &parse_text(&quick).chunks,
        Config {
            handshake: HandshakeMode::None,
            ..cfg()
        },
        None,
    );
    assert!(!codes(&ev).contains(&"ping-answered-late".into()));
}

/// Valid traffic from stacks nobody here wrote raises no warning and no error.
#[tokio::test(flavor = "multi_thread")]
async fn no_false_alarms_from_real_peers() {
    let l = Listener::start(&[
        "--format",
        "json",
        "--no-console",
        "--ping-interval",
        "200ms",
    ]);
    // tokio-tungstenite: hello, reports on the boundary, a ping, a masked Close with a code.
    let (mut ws, _) = tokio_tungstenite::connect_async(l.url()).await.unwrap();
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::Text(hello("KN-0000000000AB", &[])))
        .await
        .unwrap();
    for seq in 1..4u64 {
        ws.send(Message::Text(String::from_utf8(report(seq, 0)).unwrap()))
            .await
            .unwrap();
    }
    ws.send(Message::Ping(b"tt".to_vec())).await.unwrap();
    let mut acks = 0;
    while acks < 3 {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Text(t) if t.contains("\"ack\"") => acks += 1,
            _ => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    ws.close(None).await.unwrap();
    while let Some(Ok(_)) = ws.next().await {}
    // Python websockets, when set up.
    if let Some(py) = python_websockets() {
        let script = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1], subprotocols=["kinetid.v1"]) as ws:
        await ws.send(json.dumps({"t":"hello","id":1,"dev":"KN-0000000000CD","fw":"py","role":"active","period_s":60}))
        await ws.recv()
        await ws.send(json.dumps({"t":"report","id":2,"dev":"KN-0000000000CD","ts":1767225600,"seq":1,"on":True,"power_w":1.0,"energy_wh":1.0}))
        await ws.recv()
asyncio.run(main())
"#;
        let o = std::process::Command::new(py)
            .arg("-c")
            .arg(script)
            .arg(l.url())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    // Our own emulator, a home with a passive plug, stopping with 1000.
    let o = std::process::Command::new(bin())
        .args([
            "emulate-device",
            "--url",
            &l.url(),
            "--interval",
            "1s",
            "--passive",
            "1",
            "--duration",
            "2500ms",
        ])
        .output()
        .unwrap();
    assert!(o.status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ev = json_lines(&l.stop());
    let alarms: Vec<String> = ev
        .iter()
        .flat_map(|e| e["notes"].as_array().cloned().unwrap_or_default())
        .filter(|n| n["severity"] != Severity::Info.as_str())
        .map(|n| format!("{}: {}", n["code"], n["message"]))
        .collect();
    assert!(alarms.is_empty(), "{alarms:#?}");
    assert!(ev.iter().filter(|e| e["type"] == "open").count() >= 2);
}

#[test]
fn a_head_without_its_blank_line_is_named() {
    let req = b"GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Version: 13\r\n";
    let chunks = [Chunk {
        time: None,
        conn: 1,
        pkt: None,
        kind: ChunkKind::Data(Direction::C2S, req.to_vec()),
    }];
    let ev = annotate_all(&chunks, cfg(), None);
    assert!(
        codes(&ev).contains(&"hint-no-blank-line".into()),
        "{:?}",
        codes(&ev)
    );
}
