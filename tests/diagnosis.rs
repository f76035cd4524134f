//! Diagnosis (docs/diagnosis.md): every cause named from fixtures, and from
//! bytes built here with other sizes and offsets than the fixtures and the
//! emulator's quirks use; and no false alarm from real peers.

mod common;

use common::*;
use futures_util::{SinkExt, StreamExt};
use kinetid_wsdump::annotate::{Config, Event, HandshakeMode};
use kinetid_wsdump::capture::replay::{annotate_all, parse_text};
use kinetid_wsdump::capture::{Chunk, ChunkKind};
use kinetid_wsdump::note::Severity;
use kinetid_wsdump::wire::frame::{encode_frame, Direction, EncodeOptions, MaskKey, OpCode};
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
        ("diag-length-address", "hint-length-not-a-length"),
        ("diag-torn-frame", "hint-torn-frame"),
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

/// A torn write of a text report, other sizes than the fixture's: the
/// next report's header sits inside the payload the torn one declared.
/// Found however the stream is cut into reads; a broken frame with no
/// torn write behind it gets no such hint.
#[test]
fn a_torn_frame_is_found_inside_the_payload_it_cut() {
    let key = [0x5a, 0x11, 0xc3, 0x08];
    let first = masked(OpCode::Text, &report(1, 300), key);
    let hdr = 4 + 4; // 16-bit length, masked
    let written = 41;
    let mut c2s = first[..hdr + written].to_vec();
    c2s.extend(masked(OpCode::Text, &report(2, 420), [7, 0x70, 9, 0x77]));
    c2s.extend(masked(OpCode::Ping, b"k", [1, 2, 3, 4]));
    let whole = codes(&frames_only(&c2s, false));
    assert!(whole.contains(&"hint-torn-frame".into()), "{whole:?}");
    // The same bytes in 7-byte reads.
    let chunks: Vec<Chunk> = c2s
        .chunks(7)
        .map(|b| Chunk {
            time: None,
            conn: 1,
            pkt: None,
            kind: ChunkKind::Data(Direction::C2S, b.to_vec()),
        })
        .collect();
    let cfg = Config {
        handshake: HandshakeMode::None,
        ..cfg()
    };
    let cut = codes(&annotate_all(&chunks, cfg, None));
    assert_eq!(
        cut.iter().filter(|c| *c == "hint-torn-frame").count(),
        1,
        "{cut:?}"
    );
    // A frame broken on its own (RSV bits) after a whole report: no hint.
    let mut alone = masked(OpCode::Text, &report(1, 300), key);
    let mut bad = masked(OpCode::Text, &report(2, 0), key);
    bad[0] |= 0x30;
    alone.extend(bad);
    alone.extend(masked(OpCode::Ping, b"k", [1, 2, 3, 4]));
    let c = codes(&frames_only(&alone, false));
    assert!(c.contains(&"rsv-without-extension".into()), "{c:?}");
    assert!(!c.contains(&"hint-torn-frame".into()), "{c:?}");
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
        let o = std::process::Command::new(&py)
            .arg("-c")
            .arg(script)
            .arg(l.url())
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // websocket-client (synchronous: send a report, then read) and
        // aiohttp, two more stacks nobody here wrote.
        let sync = r#"
import json, sys, websocket
ws = websocket.create_connection(sys.argv[1], subprotocols=["kinetid.v1"])
ws.send(json.dumps({"t":"hello","id":1,"dev":"KN-0000000000CE","fw":"wsc","role":"active","period_s":60}))
ws.recv()
for i in range(3):
    ws.send(json.dumps({"t":"report","id":2 + i,"dev":"KN-0000000000CE","ts":1767225600 + 60 * i,"seq":1 + i,"on":True,"power_w":1.0,"energy_wh":1.0 + i}))
    ws.recv()
ws.close()
"#;
        let aio = r#"
import asyncio, json, sys, aiohttp
async def main():
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(sys.argv[1], protocols=["kinetid.v1"]) as ws:
            await ws.send_str(json.dumps({"t":"hello","id":1,"dev":"KN-0000000000CF","fw":"aiohttp","role":"active","period_s":60}))
            await ws.receive()
            await ws.send_str(json.dumps({"t":"report","id":2,"dev":"KN-0000000000CF","ts":1767225600,"seq":1,"on":True,"power_w":1.0,"energy_wh":1.0}))
            await ws.receive()
asyncio.run(main())
"#;
        for script in [sync, aio] {
            let o = std::process::Command::new(&py)
                .arg("-c")
                .arg(script)
                .arg(l.url())
                .output()
                .unwrap();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
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

/// Timed chunks of one connection without a handshake.
fn timed(chunks: &[(f64, Direction, Vec<u8>)], auto: bool) -> Vec<Event> {
    let chunks: Vec<Chunk> = chunks
        .iter()
        .map(|(t, d, b)| Chunk {
            time: Some(1_767_225_600.0 + t),
            conn: 1,
            pkt: None,
            kind: ChunkKind::Data(*d, b.clone()),
        })
        .collect();
    let cfg = Config {
        handshake: HandshakeMode::None,
        kinetid_auto: auto,
        ..cfg()
    };
    annotate_all(&chunks, cfg, None)
}

fn server(op: OpCode, p: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_frame(&mut v, op, p, EncodeOptions::server());
    v
}

#[test]
fn a_busy_client_that_answers_its_pings_late_is_not_called_deaf() {
    // A synchronous client: it sends a report, then reads; the pong for
    // ping "1" comes 1.9 s late, after ping "2" went out.
    use Direction::{C2S, S2C};
    let k = [9, 8, 7, 6];
    let ev = timed(
        &[
            (0.0, C2S, masked(OpCode::Text, &report(1, 0), k)),
            (0.1, S2C, server(OpCode::Ping, b"1")),
            (0.5, C2S, masked(OpCode::Text, &report(2, 0), k)),
            (1.1, S2C, server(OpCode::Ping, b"2")),
            (2.0, C2S, masked(OpCode::Pong, b"1", k)),
            (2.1, C2S, masked(OpCode::Pong, b"2", k)),
        ],
        false,
    );
    let c = codes(&ev);
    assert!(!c.iter().any(|c| c.starts_with("ping-")), "{c:?}");
}

#[test]
fn a_client_that_never_answers_is_named_once_the_pong_is_overdue() {
    use Direction::{C2S, S2C};
    let mut script = Vec::new();
    for i in 0..8u64 {
        let t = i as f64;
        script.push((t, S2C, server(OpCode::Ping, i.to_string().as_bytes())));
        let k = [9, 8, 7, i as u8];
        script.push((t + 0.5, C2S, masked(OpCode::Text, &report(i, 0), k)));
    }
    let c = codes(&timed(&script, false));
    let n = c.iter().filter(|c| *c == "ping-not-answered").count();
    assert_eq!(n, 1, "{c:?}");
    // The note is on the first ping that comes once the oldest one has
    // waited past the 5 s limit, not on the second.
    let ev = timed(&script, false);
    let at = ev
        .iter()
        .find(|e| {
            e.notes()
                .iter()
                .any(|n| n.code.as_str() == "ping-not-answered")
        })
        .unwrap();
    assert!(at.time.unwrap() - 1_767_225_600.0 > 5.0, "{:?}", at.time);
}

#[test]
fn a_pong_that_does_not_echo_its_ping_is_named() {
    use Direction::{C2S, S2C};
    let k = [9, 8, 7, 6];
    let ev = timed(
        &[
            (0.0, S2C, server(OpCode::Ping, b"1")),
            (0.1, C2S, masked(OpCode::Pong, b"", k)),
            (1.0, S2C, server(OpCode::Ping, b"2")),
            (1.1, C2S, masked(OpCode::Pong, b"2", k)),
            // Unsolicited: allowed, judged on nothing.
            (2.0, C2S, masked(OpCode::Pong, b"hb", k)),
        ],
        false,
    );
    let c = codes(&ev);
    assert_eq!(
        c.iter().filter(|c| *c == "pong-payload-mismatch").count(),
        1,
        "{c:?}"
    );
}

#[test]
fn a_one_byte_close_is_explained_as_the_low_byte_of_its_code() {
    let ev = frames_only(&masked(OpCode::Close, &[0xE8], [1, 2, 3, 4]), false);
    let n = ev
        .iter()
        .flat_map(|e| e.notes())
        .find(|n| n.code.as_str() == "close-payload-one-byte")
        .unwrap();
    assert!(n.message.contains("low byte of 1000"), "{}", n.message);
}

#[test]
fn other_protocols_are_shown_as_plain_websocket_unless_forced() {
    // A message bus: JSON arrays and objects without `t`.
    use Direction::{C2S, S2C};
    let script = [
        (
            0.0,
            C2S,
            masked(OpCode::Text, br#"["SUBSCRIBE","plugs/+"]"#, [3, 1, 4, 1]),
        ),
        (
            0.1,
            S2C,
            server(OpCode::Text, br#"{"topic":"plugs/a","v":1}"#),
        ),
        (
            0.2,
            C2S,
            masked(OpCode::Text, br#"{"op":"ping"}"#, [2, 7, 1, 8]),
        ),
        (
            0.3,
            C2S,
            masked(OpCode::Close, &1000u16.to_be_bytes(), [1, 4, 1, 4]),
        ),
        (0.4, S2C, server(OpCode::Close, &1000u16.to_be_bytes())),
    ];
    let auto = timed(&script, true);
    let c = codes(&auto);
    assert_eq!(c, vec!["not-kinetid".to_string()], "{c:?}");
    assert!(auto
        .iter()
        .flat_map(|e| e.notes())
        .all(|n| n.severity == Severity::Info));
    // Forced (what listen does, and --kinetid): judged as Kinetid.
    let forced = codes(&timed(&script, false));
    assert!(
        forced.iter().any(|c| c.starts_with("kinetid-")),
        "{forced:?}"
    );
    // A Kinetid first message keeps the layer on in auto mode.
    let kin = [(
        0.0,
        C2S,
        masked(OpCode::Text, br#"{"t":"report"}"#, [5, 5, 5, 5]),
    )];
    let c = codes(&timed(&kin, true));
    assert!(c.iter().any(|c| c == "kinetid-missing-field"), "{c:?}");
}

#[test]
fn a_refused_upgrade_ends_as_a_refusal_not_as_a_websocket_without_close() {
    let l = Listener::start(&["--no-console", "--format", "json"]);
    let mut s = raw(&l.addr());
    use std::io::Write;
    s.write_all(upgrade_request("Origin: http://elsewhere.example\r\n").as_bytes())
        .unwrap();
    let r = read_all(&mut s);
    assert!(
        r.starts_with(b"HTTP/1.1 403"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    let mut l = l;
    let summary = {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &l.child.id().to_string()])
            .status();
        l.stderr_until(" refused), ", Duration::from_secs(10))
            .unwrap()
    };
    let _ = l.child.wait();
    assert!(summary.contains("1 connection (1 refused)"), "{summary}");
    assert!(summary.contains(" 0 error notes"), "{summary}");
}

/// Causes across connections, from an emulated plug that restarts its key
/// generator on every connection (as firmware with an unseeded generator
/// does at every boot), against `listen` and through `proxy`; the same
/// plug without the bug raises none of them.
#[test]
fn predictable_keys_across_connections_are_found_live_and_clean_plugs_raise_nothing() {
    let across = [
        "mask-keys-repeat-across-connections",
        "handshake-key-reused",
        "reconnect-storm",
        "reconnect-no-backoff",
        "kinetid-reports-forgotten",
        "kinetid-clock-off",
    ];
    let rec = root().join(format!(
        "target/test-artifacts/seeded-{}.cap",
        std::process::id()
    ));
    std::fs::create_dir_all(rec.parent().unwrap()).unwrap();
    for quirk in [None, Some("seeded-keys")] {
        let l = Listener::start(&[
            "--format",
            "json",
            "--no-console",
            "--record",
            rec.to_str().unwrap(),
        ]);
        let p = Proxy::start(&l.url(), &["--format", "json", "--no-console"]);
        for _ in 0..2 {
            let mut c = std::process::Command::new(bin());
            c.args([
                "emulate-device",
                "--url",
                &p.url(),
                "--id",
                "KN-0000000000C1",
            ])
            .args(["--interval", "300ms", "--duration", "1s"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
            if let Some(q) = quirk {
                c.args(["--quirk", q]);
            }
            assert!(c.status().unwrap().success());
        }
        let (out_p, out_l) = (p.stop(), l.stop());
        // And replay of the recording: a capture with many connections.
        let replayed = std::process::Command::new(bin())
            .args(["replay", "--format", "json"])
            .arg(&rec)
            .output()
            .unwrap();
        let out_r = String::from_utf8(replayed.stdout).unwrap();
        for (who, out) in [("proxy", &out_p), ("listen", &out_l), ("replay", &out_r)] {
            let ev = json_lines(out);
            let found: Vec<(u64, String)> = ev
                .iter()
                .flat_map(|e| {
                    let conn = e["conn"].as_u64().unwrap_or(0);
                    e["notes"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .map(move |n| (conn, n["code"].as_str().unwrap_or("").to_string()))
                })
                .filter(|(_, c)| across.contains(&c.as_str()))
                .collect();
            match quirk {
                None => assert!(found.is_empty(), "{who}: {found:?}"),
                Some(_) => {
                    for code in [
                        "mask-keys-repeat-across-connections",
                        "handshake-key-reused",
                    ] {
                        let on: Vec<u64> = found
                            .iter()
                            .filter(|(_, c)| c == code)
                            .map(|(n, _)| *n)
                            .collect();
                        assert_eq!(
                            on,
                            [2],
                            "{who}: {code} once, on the second connection: {found:?}"
                        );
                    }
                }
            }
        }
    }
}

/// docs/diagnosis.md names every note code the tool can raise.
#[test]
fn the_diagnosis_guide_names_every_note_code() {
    let doc = std::fs::read_to_string(root().join("docs/diagnosis.md")).unwrap();
    let missing: Vec<&str> = kinetid_wsdump::note::Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| !doc.contains(&format!("`{c}`")))
        .collect();
    assert!(missing.is_empty(), "not in docs/diagnosis.md: {missing:?}");
}
