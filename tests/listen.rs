//! `listen` against real peers: tokio-tungstenite, raw TCP, Python's websockets.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as TCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "kinetid.v1".parse().unwrap());
    let (ws, resp) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(req),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        resp.headers().get("sec-websocket-protocol").unwrap(),
        "kinetid.v1"
    );
    ws
}

async fn next_text(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .expect("no message within 10 s")
            .expect("stream ended")
            .unwrap()
        {
            Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tungstenite_session_is_served_and_annotated() {
    let l = Listener::start(&[
        "--format",
        "json",
        "--no-console",
        "--ping-interval",
        "300ms",
    ]);
    let mut ws = connect(&l.url()).await;
    ws.send(Message::Text(hello("KN-A4CF12F0E1B2", &[])))
        .await
        .unwrap();
    let w = next_text(&mut ws).await;
    assert_eq!(w["t"], "welcome");
    assert_eq!(w["re"], 1);
    ws.send(Message::Text(json!({"t":"report","id":2,"dev":"KN-A4CF12F0E1B2","ts":1,"seq":1,"on":true,"power_w":10.0,"energy_wh":5.0}).to_string())).await.unwrap();
    assert_eq!(next_text(&mut ws).await, json!({"t":"ack","re":2}));
    ws.send(Message::Binary(vec![1, 2, 3])).await.unwrap();
    assert_eq!(next_text(&mut ws).await["code"], "bad_request");
    ws.send(Message::Text("{\"t\":".into())).await.unwrap();
    assert_eq!(next_text(&mut ws).await["code"], "bad_request");
    ws.send(Message::Ping(b"tt".to_vec())).await.unwrap();
    // The server's own pings are answered by tungstenite; wait for one round.
    let mut got_pong = false;
    let mut got_ping = false;
    while !(got_pong && got_ping) {
        match tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            Message::Pong(p) if p == b"tt" => got_pong = true,
            Message::Ping(_) => got_ping = true,
            _ => {}
        }
    }
    ws.close(Some(CloseFrame {
        code: TCloseCode::Normal,
        reason: "done".into(),
    }))
    .await
    .unwrap();
    while let Some(Ok(m)) = ws.next().await {
        if let Message::Close(c) = m {
            assert_eq!(c.unwrap().code, TCloseCode::Normal);
        }
    }
    let out = l.stop();
    let ev = json_lines(&out);
    let req = ev.iter().find(|e| e["type"] == "request").unwrap();
    assert_eq!(req["status"], 101);
    assert_eq!(req["protocol"], "kinetid.v1");
    assert!(req["accept"]["sha1_hex"].as_str().unwrap().len() == 40);
    let frames: Vec<&Value> = ev.iter().filter(|e| e["type"] == "frame").collect();
    assert!(frames
        .iter()
        .filter(|f| f["dir"] == "c2s")
        .all(|f| f["masked"] == true && f["mask_key"].as_str().unwrap().len() == 8));
    assert!(frames
        .iter()
        .filter(|f| f["dir"] == "s2c")
        .all(|f| f["masked"] == false));
    assert!(frames
        .iter()
        .any(|f| f["dir"] == "s2c" && f["opcode_name"] == "pong" && f["payload_text"] == "tt"));
    assert!(frames
        .iter()
        .any(|f| f["dir"] == "s2c" && f["opcode_name"] == "ping"));
    assert!(frames.iter().any(|f| f["dir"] == "c2s"
        && f["opcode_name"] == "close"
        && f["close_code"] == 1000
        && f["close_reason"] == "done"));
    assert!(frames
        .iter()
        .any(|f| f["dir"] == "s2c" && f["opcode_name"] == "close" && f["close_code"] == 1000));
    let msgs: Vec<&Value> = ev.iter().filter(|e| e["type"] == "message").collect();
    assert!(msgs
        .iter()
        .any(|m| m["dir"] == "s2c" && m["kinetid"]["t"] == "welcome"));
    assert!(msgs
        .iter()
        .any(|m| m["dir"] == "c2s" && m["kinetid"]["t"] == "report"));
    // A clean session: no error notes at all.
    let end = ev.iter().find(|e| e["type"] == "end").unwrap();
    assert_eq!(end["notes"], json!([]));
    let errors: Vec<&Value> = ev
        .iter()
        .flat_map(|e| e["notes"].as_array().into_iter().flatten())
        .filter(|n| {
            n["severity"] == "error" && !n["code"].as_str().unwrap().starts_with("kinetid-")
        })
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn malformed_handshakes_get_the_right_status_and_the_listener_keeps_serving() {
    let l = Listener::start(&[
        "--format",
        "summary",
        "--no-console",
        "--head-timeout",
        "1s",
    ]);
    let a = l.addr();
    let good = upgrade_request("");
    let cases: Vec<(String, u16, &str)> = vec![
        (good.replace("GET", "POST"), 405, "Allow: GET"),
        (
            good.replace("Version: 13", "Version: 8"),
            426,
            "Sec-WebSocket-Version: 13",
        ),
        (
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "AAECAwQFBgcICQoLDA0O"),
            400,
            "16",
        ),
        (
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "AAECAwQFBgcICQoLDA0ODxA="),
            400,
            "17 bytes",
        ),
        (
            good.replace(
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
                "Sec-WebSocket-Key: \r\n",
            ),
            400,
            "empty",
        ),
        (good.replace("Host: 127.0.0.1\r\n", ""), 400, "Host"),
        (
            good.replace("Upgrade: websocket", "Upgrade: websocket2"),
            400,
            "Upgrade",
        ),
        (
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            400,
            "Connection",
        ),
        (
            good.replace("Host: 127.0.0.1\r\n", "Host: 127.0.0.1\r\n x\r\n"),
            400,
            "folding",
        ),
        (good.replace("HTTP/1.1", "HTTP/1.0"), 400, "HTTP version"),
        (
            good.replace("Origin", "X").replace(
                "\r\n\r\n",
                &format!("\r\nX-Big: {}\r\n\r\n", "a".repeat(9000)),
            ),
            431,
            "8192",
        ),
        (
            "GET /nothing HTTP/1.1\r\nHost: a\r\n\r\n".into(),
            404,
            "nothing at",
        ),
    ];
    for (req, status, needle) in cases {
        let mut s = raw(&a);
        s.write_all(req.as_bytes()).unwrap();
        let resp = String::from_utf8_lossy(&read_all(&mut s)).to_string();
        assert!(
            resp.starts_with(&format!("HTTP/1.1 {status} ")),
            "{req:?} -> {resp:?}"
        );
        assert!(
            resp.contains(needle),
            "{req:?} -> {resp:?} lacks {needle:?}"
        );
    }
    // Slowloris: half a head, then nothing: 408 after the head timeout.
    let mut s = raw(&a);
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: a\r\n").unwrap();
    let resp = String::from_utf8_lossy(&read_all(&mut s)).to_string();
    assert!(resp.starts_with("HTTP/1.1 408 "), "{resp}");
    // The page.
    let (st, body) = http(&a, "GET", "/", "", "");
    assert_eq!(st, 200);
    assert!(body.contains("kinetid-wsdump inspector"));
    let (st, body) = http(&a, "GET", "/client", "", "");
    assert_eq!(st, 200);
    assert!(body.contains("new WebSocket"));
    // Still serving a good client.
    let mut s = raw_upgraded(&a);
    s.write_all(&client_frame(
        1,
        true,
        hello("KN-A4CF12F0E1B2", &[]).as_bytes(),
    ))
    .unwrap();
    s.write_all(&client_frame(8, true, &1000u16.to_be_bytes()))
        .unwrap();
    assert_eq!(read_close_code(&mut s), Some(1000));
    l.stop();
}

#[test]
fn violations_fail_the_connection_with_the_right_code() {
    let l = Listener::start(&["--format", "json", "--no-console", "--max-frame", "1024"]);
    let a = l.addr();
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            {
                let mut v = vec![0x81, 0x05];
                v.extend_from_slice(b"clear");
                v
            },
            1002,
        ),
        (client_frame(3, true, b"x"), 1002),
        (client_frame(1, true, b"\xce\x41"), 1007),
        (
            [
                client_frame(1, false, b"\xce"),
                client_frame(0, true, b"\x41"),
            ]
            .concat(),
            1007,
        ),
        (client_frame(8, true, &[0x03, 0xed]), 1002),
        (client_frame(2, true, &[0u8; 2000]), 1009),
        (client_frame(9, true, &[0u8; 126]), 1002),
        (client_frame(0, true, b"orphan"), 1002),
        (
            vec![
                0x82, 0xff, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
            ],
            1009,
        ),
    ];
    for (bytes, code) in cases {
        let mut s = raw_upgraded(&a);
        s.write_all(&bytes).unwrap();
        assert_eq!(
            read_close_code(&mut s),
            Some(code),
            "{}",
            hex::encode(&bytes[..bytes.len().min(16)])
        );
    }
    let out = l.stop();
    let codes = note_codes(&json_lines(&out));
    for c in [
        "client-frame-unmasked",
        "reserved-opcode",
        "text-invalid-utf8",
        "close-code-invalid",
        "payload-too-big",
        "control-too-long",
        "continuation-without-start",
    ] {
        assert!(codes.iter().any(|x| x == c), "no {c} note");
    }
}

#[test]
fn lenient_keeps_broken_firmware_connected() {
    let l = Listener::start(&["--format", "summary", "--no-console", "--lenient"]);
    let mut s = raw_upgraded(&l.addr());
    // Unmasked hello: annotated as an error, but answered.
    let h = hello("KN-A4CF12F0E1B2", &[]);
    let mut f = vec![0x81, 126];
    f.extend_from_slice(&(h.len() as u16).to_be_bytes());
    f.extend_from_slice(h.as_bytes());
    s.write_all(&f).unwrap();
    let mut d = kinetid_wsdump::wire::frame::Decoder::new(1 << 20);
    let mut buf = [0u8; 4096];
    let n = std::io::Read::read(&mut s, &mut buf).unwrap();
    d.feed(&buf[..n]);
    let kinetid_wsdump::wire::frame::Decoded::Frame(w) = d.next_frame() else {
        panic!("no frame")
    };
    assert!(String::from_utf8_lossy(&w.payload).contains("welcome"));
    drop(s);
    let out = l.stop();
    assert!(out.contains("error:client-frame-unmasked"), "{out}");
}

/// A device written with tokio-tungstenite: answers switch for `dev` with
/// state, for ids in `refuse` with error, ignores ids in `ignore`, and
/// relays for `passives`.
async fn tt_device(
    url: String,
    dev: &'static str,
    passives: &'static [&'static str],
    refuse: &'static [&'static str],
    ignore: &'static [&'static str],
) {
    let mut ws = connect(&url).await;
    ws.send(Message::Text(hello(dev, passives))).await.unwrap();
    let mut on: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
    while let Some(Ok(m)) = ws.next().await {
        let Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["t"] != "switch" {
            continue;
        }
        let target = v["dev"].as_str().unwrap().to_string();
        if ignore.contains(&target.as_str()) {
            continue;
        }
        let reply = if refuse.contains(&target.as_str()) {
            json!({"t":"error","re":v["id"],"dev":target,"code":"unreachable","msg":"PLC timeout"})
        } else {
            let was = *on.get(&target).unwrap_or(&true);
            let now = if v["toggle"] == true {
                !was
            } else {
                v["on"].as_bool().unwrap()
            };
            on.insert(target.clone(), now);
            json!({"t":"state","re":v["id"],"dev":target,"on":now,"was_on":was,"src":"backend","ts":1})
        };
        ws.send(Message::Text(reply.to_string())).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn api_switches_devices_and_reports_failures() {
    let l = Listener::start(&[
        "--format",
        "summary",
        "--no-console",
        "--reply-timeout",
        "1s",
    ]);
    let a = l.addr();
    const ACTIVE: &str = "KN-A4CF12F0E1B2";
    const PASSIVE: &str = "KN-00A1B2C3D4E5";
    const LOST: &str = "KN-00000000DEAD";
    const MUTE: &str = "KN-00000000BEEF";
    tokio::spawn(tt_device(
        l.url(),
        ACTIVE,
        &[PASSIVE, LOST, MUTE],
        &[LOST],
        &[MUTE],
    ));
    let api = |m: &'static str, p: String, h: &'static str, b: &'static str| {
        let a = a.clone();
        tokio::task::spawn_blocking(move || http(&a, m, &p, h, b))
    };
    // Wait for the device to be known.
    for _ in 0..100 {
        if api("GET", format!("/api/devices/{ACTIVE}"), "", "")
            .await
            .unwrap()
            .0
            == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (st, body) = api(
        "POST",
        format!("/api/devices/{ACTIVE}/switch"),
        "",
        r#"{"on":false}"#,
    )
    .await
    .unwrap();
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["t"].as_str(), v["on"].as_bool(), v["was_on"].as_bool()),
        (Some("state"), Some(false), Some(true))
    );
    let (st, body) = api(
        "POST",
        format!("/api/devices/{ACTIVE}/switch"),
        "",
        r#"{"toggle":true}"#,
    )
    .await
    .unwrap();
    assert_eq!(
        (
            st,
            serde_json::from_str::<Value>(&body).unwrap()["on"].as_bool()
        ),
        (200, Some(true))
    );
    // A passive plug: the command goes to its active plug, which relays it.
    let (st, body) = api(
        "POST",
        format!("/api/devices/{PASSIVE}/switch"),
        "",
        r#"{"on":false}"#,
    )
    .await
    .unwrap();
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["dev"],
        PASSIVE
    );
    let (st, body) = api("GET", format!("/api/devices/{PASSIVE}"), "", "")
        .await
        .unwrap();
    assert_eq!(st, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["role"].as_str(), v["via"].as_str(), v["on"].as_bool()),
        (Some("passive"), Some(ACTIVE), Some(false))
    );
    assert_eq!(
        api(
            "POST",
            "/api/devices/KN-FFFFFFFFFFFF/switch".into(),
            "",
            r#"{"on":true}"#
        )
        .await
        .unwrap()
        .0,
        404
    );
    let (st, body) = api(
        "POST",
        format!("/api/devices/{LOST}/switch"),
        "",
        r#"{"on":true}"#,
    )
    .await
    .unwrap();
    assert_eq!(st, 502, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["code"],
        "unreachable"
    );
    assert_eq!(
        api(
            "POST",
            format!("/api/devices/{MUTE}/switch"),
            "",
            r#"{"on":true}"#
        )
        .await
        .unwrap()
        .0,
        504
    );
    assert_eq!(
        api(
            "POST",
            format!("/api/devices/{ACTIVE}/switch"),
            "",
            r#"{"dim":3}"#
        )
        .await
        .unwrap()
        .0,
        400
    );
    let (st, body) = api("GET", "/api/devices".into(), "", "").await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        4
    );
    l.stop();

    // With a token the API wants it.
    let l = Listener::start(&[
        "--format",
        "summary",
        "--no-console",
        "--api-token",
        "s3cret",
    ]);
    let a = l.addr();
    let a2 = a.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || http(&a2, "GET", "/api/devices", "", ""))
            .await
            .unwrap()
            .0,
        401
    );
    let a2 = a.clone();
    assert_eq!(
        tokio::task::spawn_blocking(move || http(
            &a2,
            "GET",
            "/api/devices",
            "Authorization: Bearer nope\r\n",
            ""
        ))
        .await
        .unwrap()
        .0,
        401
    );
    assert_eq!(
        tokio::task::spawn_blocking(move || http(
            &a,
            "GET",
            "/api/devices",
            "Authorization: Bearer s3cret\r\n",
            ""
        ))
        .await
        .unwrap()
        .0,
        200
    );
    l.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn console_switches_a_device() {
    let l = Listener::start_with_stdin(
        &["--format", "summary", "--console"],
        std::process::Stdio::piped(),
    );
    const ACTIVE: &str = "KN-A4CF12F0E1B2";
    tokio::spawn(tt_device(l.url(), ACTIVE, &["KN-00A1B2C3D4E5"], &[], &[]));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut l = l;
    let mut stdin = l.child.stdin.take().unwrap();
    writeln!(stdin, "devices").unwrap();
    assert!(l
        .stderr_until("2 devices", Duration::from_secs(5))
        .is_some());
    writeln!(stdin, "off {ACTIVE}").unwrap();
    let line = l
        .stderr_until(&format!("{ACTIVE}: state"), Duration::from_secs(5))
        .expect("no state reply on the console");
    assert!(line.contains("\"on\":false"), "{line}");
    writeln!(stdin, "toggle KN-00A1B2C3D4E5").unwrap();
    let line = l
        .stderr_until("KN-00A1B2C3D4E5: state", Duration::from_secs(5))
        .expect("no state for the passive");
    assert!(line.contains("\"on\":false"), "{line}");
    writeln!(stdin, "off KN-FFFFFFFFFFFF").unwrap();
    assert!(l
        .stderr_until("no connected device", Duration::from_secs(5))
        .is_some());
    l.stop();
}

#[tokio::test(flavor = "multi_thread")]
async fn recording_replays_to_the_same_annotation_and_shutdown_closes_1001() {
    let dir = std::env::temp_dir().join(format!("kwd-rec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("session.cap");
    let l = Listener::start(&[
        "--format",
        "json",
        "--no-console",
        "--record",
        rec.to_str().unwrap(),
    ]);
    let mut ws = connect(&l.url()).await;
    ws.send(Message::Text(hello("KN-A4CF12F0E1B2", &[])))
        .await
        .unwrap();
    next_text(&mut ws).await;
    ws.send(Message::Text("x".repeat(300))).await.unwrap();
    next_text(&mut ws).await;
    // An abrupt device on a second connection: half a frame, then gone.
    let mut s = raw_upgraded(&l.addr());
    s.write_all(&client_frame(1, true, b"hello there")[..7])
        .unwrap();
    drop(s);
    tokio::time::sleep(Duration::from_millis(200)).await;
    // SIGINT: the device gets close 1001 and answers it (tungstenite does).
    let reader = tokio::spawn(async move {
        let mut code = None;
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Close(Some(c)) = m {
                code = Some(u16::from(c.code));
            }
        }
        code
    });
    let live = tokio::task::spawn_blocking(move || l.stop()).await.unwrap();
    assert_eq!(reader.await.unwrap(), Some(1001));
    let out = std::process::Command::new(bin())
        .args(["replay", "--format", "json"])
        .arg(&rec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let replayed = String::from_utf8(out.stdout).unwrap();
    // Connections interleave differently on stdout; per connection, every line is identical.
    let by_conn = |s: &str| {
        let mut m: std::collections::BTreeMap<u64, Vec<String>> = Default::default();
        for l in s.lines() {
            let v: Value = serde_json::from_str(l).unwrap();
            m.entry(v["conn"].as_u64().unwrap())
                .or_default()
                .push(l.to_string());
        }
        m
    };
    let (a, b) = (by_conn(&live), by_conn(&replayed));
    assert_eq!(a.len(), 2);
    assert_eq!(a, b);
    assert!(live.contains("truncated-frame"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn python_websockets_client_is_served() {
    let Some(py) = python_websockets() else {
        return;
    };
    let l = Listener::start(&["--format", "summary", "--no-console"]);
    let script = r#"
import asyncio, json, sys
from websockets.asyncio.client import connect
async def main():
    async with connect(sys.argv[1], subprotocols=["kinetid.v1"]) as ws:
        assert ws.subprotocol == "kinetid.v1"
        await ws.send(json.dumps({"t":"hello","id":1,"dev":"KN-0123456789AB","fw":"py","role":"active","mains_v":120,"mains_hz":60,"period_s":60,"passives":[]}))
        w = json.loads(await ws.recv()); assert w["t"] == "welcome", w
        await ws.send(json.dumps({"t":"report","id":2,"dev":"KN-0123456789AB","ts":1,"seq":1,"on":True,"power_w":1.0,"energy_wh":1.0}))
        a = json.loads(await ws.recv()); assert a == {"t":"ack","re":2}, a
        await ws.ping(b"py")
        print("ok")
asyncio.run(main())
"#;
    let out = std::process::Command::new(py)
        .arg("-c")
        .arg(script)
        .arg(l.url())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    let text = l.stop();
    assert!(text.contains("report id=2 dev=KN-0123456789AB"), "{text}");
    assert!(!text.contains("[error:"), "{text}");
}

#[test]
fn connection_limit_answers_503() {
    let l = Listener::start(&[
        "--format",
        "summary",
        "--no-console",
        "--max-connections",
        "2",
    ]);
    let a = l.addr();
    let _s1 = raw(&a);
    let _s2 = raw(&a);
    std::thread::sleep(Duration::from_millis(200));
    let mut s3 = raw(&a);
    let resp = String::from_utf8_lossy(&read_all(&mut s3)).to_string();
    assert!(resp.starts_with("HTTP/1.1 503 "), "{resp}");
    l.stop();
}

/// The browser page in headless Chromium: it connects, sends a hello, and the
/// listener shows Chromium's masked frame, the welcome, and the 101 whose
/// accept key Chromium checked (it would not have opened otherwise).
#[test]
fn browser_page_in_headless_chromium() {
    let Some(chromium) = chromium() else {
        return;
    };
    let l = Listener::start(&["--format", "json", "--no-console"]);
    let dom = chromium_dom(
        chromium,
        &format!("http://127.0.0.1:{}/client?autotest", l.port),
        5000,
    );
    assert!(
        dom.contains("received {\"t\":\"welcome\""),
        "page did not get a welcome: {dom}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let ev = json_lines(&l.stop());
    let req = ev
        .iter()
        .find(|e| e["type"] == "request" && e["websocket"] == true)
        .expect("no upgrade request");
    assert_eq!(req["status"], 101);
    assert_eq!(req["protocol"], "kinetid.v1");
    let accept = req["accept"]["accept"].as_str().unwrap();
    let resp = ev
        .iter()
        .find(|e| e["type"] == "response" && e["conn"] == req["conn"])
        .unwrap();
    assert!(resp["head"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "Sec-WebSocket-Accept" && h[1] == accept));
    let hello = ev
        .iter()
        .find(|e| {
            e["type"] == "frame"
                && e["dir"] == "c2s"
                && e["conn"] == req["conn"]
                && e["opcode_name"] == "text"
        })
        .unwrap();
    assert_eq!(hello["masked"], true);
    // Chromium offers permessage-deflate and listen accepts it: the hello
    // goes compressed (RSV1) and the annotation shows it inflated.
    let offered = req["offered_extensions"].as_array().unwrap();
    assert!(
        offered
            .iter()
            .any(|o| o.as_str().unwrap().starts_with("permessage-deflate")),
        "{offered:?}"
    );
    assert!(resp["head"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|h| h[0] == "Sec-WebSocket-Extensions"
            && h[1].as_str().unwrap().starts_with("permessage-deflate")));
    assert_eq!(hello["rsv1"], true, "{hello}");
    let msg = ev
        .iter()
        .find(|e| e["type"] == "message" && e["dir"] == "c2s" && e["conn"] == req["conn"])
        .unwrap();
    assert_eq!(msg["kinetid"]["t"], "hello", "{msg}");
    assert!(
        msg["compressed_len"].as_u64().unwrap() < msg["len"].as_u64().unwrap() + 10,
        "{msg}"
    );
    assert!(msg["text"].as_str().unwrap().contains("\"t\":\"hello\""));
    assert!(ev.iter().any(|e| e["type"] == "message"
        && e["dir"] == "s2c"
        && e["conn"] == req["conn"]
        && e["kinetid"]["t"] == "welcome"));
}

#[test]
fn no_hello_and_unknown_devices_are_closed_with_1008() {
    let l = Listener::start(&[
        "--format",
        "summary",
        "--no-console",
        "--hello-timeout",
        "500ms",
        "--refuse",
        "KN-0000000BAD00",
    ]);
    // Silent after the upgrade: 1008 when the hello time runs out.
    let mut s = raw_upgraded(&l.addr());
    assert_eq!(read_close_code(&mut s), Some(1008));
    // A refused device: error unknown_device, then 1008.
    let mut s = raw_upgraded(&l.addr());
    s.write_all(&client_frame(
        1,
        true,
        hello("KN-0000000BAD00", &[]).as_bytes(),
    ))
    .unwrap();
    let mut d = kinetid_wsdump::wire::frame::Decoder::new(1 << 20);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    'read: loop {
        let n = std::io::Read::read(&mut s, &mut buf).unwrap();
        assert!(n > 0, "closed early: {got:?}");
        d.feed(&buf[..n]);
        while let kinetid_wsdump::wire::frame::Decoded::Frame(f) = d.next_frame() {
            got.push((f.header.opcode.name(), f.payload.clone()));
            if f.header.opcode == kinetid_wsdump::wire::frame::OpCode::Close {
                break 'read;
            }
        }
    }
    assert!(
        String::from_utf8_lossy(&got[0].1).contains("unknown_device"),
        "{got:?}"
    );
    assert_eq!(got.last().unwrap().1[..2], 1008u16.to_be_bytes());
    l.stop();
}

#[test]
fn the_tools_own_web_traffic_is_out_of_view_unless_asked() {
    let dir = root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join(format!("own-web-{}.txt", std::process::id()));
    let rec_s = rec.to_str().unwrap();
    for show in [false, true] {
        let mut args = vec!["--no-console", "--record", rec_s];
        if show {
            args.push("--show-http");
        }
        let l = Listener::start(&args);
        // A page polling the API, its favicon, the metrics.
        for path in ["/api/devices", "/api/devices", "/favicon.ico", "/metrics"] {
            let (status, _) = http(&l.addr(), "GET", path, "", "");
            assert!(status == 200 || status == 404, "{path}: {status}");
        }
        // A device that forgot its Upgrade header is a device's bug: shown.
        let (status, body) = http(&l.addr(), "GET", "/ws", "", "");
        assert!(
            status == 404 && body.contains("with an Upgrade"),
            "{status} {body}"
        );
        let (summary, out) = l.stop_with_summary();
        assert!(out.contains("GET /ws HTTP/1.1"), "{out}");
        let recorded = std::fs::read_to_string(&rec).unwrap();
        assert!(
            recorded.contains(&hex::encode("GET /api/devices")),
            "not in --record"
        );
        if show {
            assert!(out.contains("GET /api/devices"), "{out}");
            assert!(summary.contains("5 connections"), "{summary}");
            assert!(!summary.contains("not shown"), "{summary}");
        } else {
            assert!(
                !out.contains("/api/devices") && !out.contains("favicon"),
                "{out}"
            );
            assert!(
                summary.contains("1 connection ")
                    && summary
                        .contains("4 requests to this tool's page, API and metrics not shown"),
                "{summary}"
            );
        }
    }
    let _ = std::fs::remove_file(&rec);
}

/// A device whose TLS library offers TLS 1.1 at most is told so (rustls
/// alone says only that the peer is incompatible).
#[test]
fn a_client_hello_below_tls_1_2_is_named() {
    let data = std::env::temp_dir().join(format!("kw-tls11-{}", std::process::id()));
    let env = [("KINETID_WSDUMP_DATA", data.to_str().unwrap())];
    let l = Listener::start_env(&["--tls", "--quiet", "--no-console"], &env);
    // A TLS 1.1 ClientHello: legacy version 0x0302, no supported_versions.
    let mut h = vec![0x03, 0x02];
    h.extend([7u8; 32]);
    h.push(0);
    h.extend([0x00, 0x02, 0x00, 0x2f]); // TLS_RSA_WITH_AES_128_CBC_SHA
    h.extend([1, 0]);
    h.extend([0, 0]); // no extensions
    let mut hs = vec![1, 0];
    hs.extend((h.len() as u16).to_be_bytes());
    hs.extend(h);
    let mut rec = vec![0x16, 3, 2];
    rec.extend((hs.len() as u16).to_be_bytes());
    rec.extend(hs);
    let mut s = raw(&l.addr());
    s.write_all(&rec).unwrap();
    let said = l
        .stderr_until(
            "TLS handshake with the device failed",
            Duration::from_secs(10),
        )
        .expect("a failure line");
    assert!(
        said.contains("offers TLS 1.1 at most") && said.contains("TLS 1.2 or later"),
        "{said}"
    );
    drop(s);
    l.stop();
    let _ = std::fs::remove_dir_all(&data);
}

/// What an upgrade shows of the device's library: a Host without the port
/// it connected to, and a subprotocol of the library's own instead of
/// kinetid.v1; a correct head raises neither.
#[test]
fn host_without_port_and_a_foreign_subprotocol_are_named() {
    let l = Listener::start(&["--format", "json", "--no-console"]);
    let head = |host: &str, proto: &str| {
        format!("GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {proto}\r\n\r\n")
    };
    for req in [
        head("127.0.0.1", "kinetid.v1"),
        head(&l.addr(), "arduino"),
        head(&l.addr(), "kinetid.v1"),
    ] {
        let mut s = raw(&l.addr());
        s.write_all(req.as_bytes()).unwrap();
        let _ = read_close_code(&mut s);
    }
    let ev = json_lines(&l.stop());
    let on = |conn: u64| -> Vec<String> {
        note_codes(
            &ev.iter()
                .filter(|e| e["conn"] == conn)
                .cloned()
                .collect::<Vec<_>>(),
        )
    };
    assert!(
        on(1).contains(&"hint-host-without-port".to_string()),
        "{:?}",
        on(1)
    );
    assert!(
        on(2).contains(&"hint-other-subprotocol".to_string()),
        "{:?}",
        on(2)
    );
    assert!(
        !on(2).contains(&"hint-host-without-port".to_string()),
        "{:?}",
        on(2)
    );
    assert!(!on(3).iter().any(|c| c.starts_with("hint-")), "{:?}", on(3));
}

/// A switch goes out through the connection's command lane (written by the
/// listener's control thread): the device gets it, the listener shows it
/// before the state answering it, and the delivery histogram counts it.
#[tokio::test(flavor = "multi_thread")]
async fn lane_commands_are_shown_before_their_answers_and_timed() {
    let l = Listener::start(&["--format", "json", "--no-console"]);
    let a = l.addr();
    const DEV: &str = "KN-A4CF12F0E1B2";
    tokio::spawn(tt_device(l.url(), DEV, &[], &[], &[]));
    let api = |m: &'static str, p: String, b: &'static str| {
        let a = a.clone();
        tokio::task::spawn_blocking(move || http(&a, m, &p, "", b))
    };
    for _ in 0..100 {
        if api("GET", format!("/api/devices/{DEV}"), "")
            .await
            .unwrap()
            .0
            == 200
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    const N: usize = 20;
    for i in 0..N {
        let body = if i % 2 == 0 {
            r#"{"on":false}"#
        } else {
            r#"{"on":true}"#
        };
        let (st, b) = api("POST", format!("/api/devices/{DEV}/switch"), body)
            .await
            .unwrap();
        assert_eq!(st, 200, "{b}");
    }
    let (st, m) = api("GET", "/metrics".into(), "").await.unwrap();
    assert_eq!(st, 200);
    let count = m
        .lines()
        .find_map(|l| l.strip_prefix("kinetid_wsdump_command_delivery_seconds_count "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(count, Some(N as f64), "{m}");
    // Both paths show the same order; that the lane wrote at all is seen
    // in how the commands went (a gate busy with the task's own write may
    // send one through the queue).
    let path = |p: &str| {
        m.lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "kinetid_wsdump_commands_written_total{{path=\"{p}\"}} "
                ))
            })
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (lane, queue) = (path("lane"), path("queue"));
    assert_eq!(lane + queue, N as u64, "{m}");
    assert!(lane > 0, "no command took the lane:\n{m}");
    let out = l.stop();
    // In the order shown: each switch (server to device), then its state.
    let mut open = Vec::new();
    let mut answered = 0;
    for e in json_lines(&out) {
        if e["type"] != "message" {
            continue;
        }
        let Some(t) = e["text"].as_str() else {
            continue;
        };
        let v: Value = serde_json::from_str(t).unwrap();
        match (e["dir"].as_str(), v["t"].as_str()) {
            (Some("s2c"), Some("switch")) => open.push(v["id"].clone()),
            (Some("c2s"), Some("state")) => {
                assert!(
                    open.contains(&v["re"]),
                    "state {v} shown before its switch:\n{out}"
                );
                open.retain(|id| *id != v["re"]);
                answered += 1;
            }
            _ => {}
        }
    }
    assert_eq!(answered, N, "{out}");
    assert!(open.is_empty(), "{open:?}");
}
