//! `proxy` between real peers: emulate-device to `listen`, tokio-tungstenite
//! on both ends, a device with a firmware bug whose bytes must arrive
//! unchanged, and upstreams that cannot be reached or refuse the upgrade.

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Run emulate-device with `args` to its end; its counters.
fn emulate(args: &[&str], stats: &std::path::Path) -> serde_json::Value {
    let st = Command::new(bin())
        .arg("emulate-device")
        .args(args)
        .args(["--color", "never", "--stats-json"])
        .arg(stats)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success(), "emulate-device {args:?}");
    serde_json::from_str(&std::fs::read_to_string(stats).unwrap()).unwrap()
}

fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_plug_through_the_proxy_talks_to_listen_and_both_ways_are_annotated() {
    let dir = std::env::temp_dir().join(format!("kw-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (lrec, prec) = (dir.join("listen.cap"), dir.join("proxy.cap"));
    let l = Listener::start(&[
        "--quiet",
        "--no-console",
        "--record",
        lrec.to_str().unwrap(),
    ]);
    let p = Proxy::start(
        &l.url(),
        &["--format", "json", "--record", prec.to_str().unwrap()],
    );
    // A plug with a firmware bug (an all-zero masking key): the proxy must
    // not repair it.
    let stats = dir.join("stats.json");
    let s = emulate(
        &[
            "--url",
            &p.url(),
            "--interval",
            "200ms",
            "--passive",
            "1",
            "--quirk",
            "zero-mask",
            "--duration",
            "1200ms",
        ],
        &stats,
    );
    assert!(s["reports_acked"].as_u64().unwrap() >= 4, "{s}");
    let out = p.stop();
    l.stop();
    let ev = json_lines(&out);
    let frames = |dir: &str| {
        ev.iter()
            .filter(|e| e["type"] == "frame" && e["dir"] == dir)
            .count()
    };
    assert!(frames("c2s") >= 5 && frames("s2c") >= 5, "{out}");
    assert!(ev
        .iter()
        .any(|e| e["type"] == "response" && e["status"] == 101));
    let codes: Vec<&str> = ev
        .iter()
        .flat_map(|e| e["notes"].as_array().into_iter().flatten())
        .filter_map(|n| n["code"].as_str())
        .collect();
    assert!(codes.contains(&"mask-key-zero"), "{codes:?}");
    // What listen received after the head is byte for byte what the proxy
    // got from the device.
    let bytes = |f: &std::path::Path, d: &str| -> Vec<u8> {
        let p = kinetid_wsdump::capture::replay::parse_text(&std::fs::read_to_string(f).unwrap());
        p.chunks
            .iter()
            .filter_map(|c| match &c.kind {
                kinetid_wsdump::capture::ChunkKind::Data(dir, b) if dir.as_str() == d => {
                    Some(b.clone())
                }
                _ => None,
            })
            .flatten()
            .collect()
    };
    let (at_listen, at_proxy) = (bytes(&lrec, "c2s"), bytes(&prec, "c2s"));
    let head_end = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(
        at_listen[head_end(&at_listen)..],
        at_proxy[head_end(&at_proxy)..]
    );
    assert_eq!(
        bytes(&lrec, "s2c"),
        bytes(&prec, "s2c"),
        "the device got what listen sent"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_tungstenite_on_both_ends() {
    // Upstream: a tokio-tungstenite echo server.
    let up = echo_upstream().await;
    let p = Proxy::start(&format!("ws://{up}"), &["--format", "summary"]);
    let (mut ws, _) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::connect_async(p.url()),
    )
    .await
    .unwrap()
    .unwrap();
    for i in 0..20 {
        let m = format!("message {i}");
        ws.send(tokio_tungstenite::tungstenite::Message::Text(m.clone()))
            .await
            .unwrap();
        let back = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(back.into_text().unwrap(), m);
    }
    ws.close(None).await.unwrap();
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.next()).await;
    let out = tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    assert_eq!(out.matches("message text").count(), 40, "{out}");
}

fn raw_upgrade(port: u16) -> String {
    String::from_utf8_lossy(&raw_upgrade_bytes(port)).into_owned()
}

/// Send an upgrade request by hand; everything that comes back.
fn raw_upgrade_bytes(port: u16) -> Vec<u8> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn an_upstream_that_cannot_be_reached_is_a_502_with_the_reason() {
    // A port nobody listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let p = Proxy::start(&format!("ws://127.0.0.1:{port}"), &["--format", "summary"]);
    let resp = raw_upgrade(p.port);
    assert!(resp.starts_with("HTTP/1.1 502 Bad Gateway"), "{resp}");
    assert!(resp.contains("unreachable"), "{resp}");
    p.stop();
}

#[test]
fn an_upstream_that_refuses_the_upgrade_is_shown_and_forwarded_as_it_came() {
    // An upstream that answers 200 to anything.
    let up = one_shot_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nno");
    let p = Proxy::start(&format!("ws://{up}"), &["--format", "json"]);
    let resp = raw_upgrade(p.port);
    assert!(resp.starts_with("HTTP/1.1 200 OK"), "{resp}");
    let out = p.stop();
    let ev = json_lines(&out);
    let r = ev
        .iter()
        .find(|e| e["type"] == "response")
        .expect("response shown");
    assert_eq!(r["status"], 200);
    assert!(r["error"].as_str().is_some(), "{r}");
}

#[test]
fn tls_on_both_sides_with_python_and_a_chained_proxy() {
    let Some(python) = python_websockets() else {
        return;
    };
    let data = std::env::temp_dir().join(format!("kw-tls-{}", std::process::id()));
    let env = [("KINETID_WSDUMP_DATA", data.to_str().unwrap())];
    let l = Listener::start(&["--quiet", "--no-console"]);
    // A: TLS toward devices, a self-signed certificate made and kept.
    let (a, said) = Proxy::start_env(&l.url(), &["--tls", "--format", "json"], &env);
    let fp = said
        .split("SHA-256 ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no fingerprint in {said:?}"))
        .to_string();
    let cert = data.join("tls/cert.pem");
    assert!(cert.exists());
    // Python's websockets over TLS, verifying the certificate by name.
    let out = Command::new(&python)
        .arg("-c")
        .arg(format!(
            r#"
import asyncio, ssl, websockets
async def main():
    ctx = ssl.create_default_context(cafile={cert:?})
    async with websockets.connect("wss://localhost:{port}/ws", ssl=ctx, open_timeout=10) as ws:
        await ws.send('{{"t":"hello","id":1,"dev":"KN-0000000000C1","fw":"py","role":"active"}}')
        print(await asyncio.wait_for(ws.recv(), 10))
asyncio.run(main())
"#,
            cert = cert.to_str().unwrap(),
            port = a.port
        ))
        .output()
        .unwrap();
    let got = String::from_utf8_lossy(&out.stdout);
    assert!(
        got.contains("welcome"),
        "{got} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // emulate-device over wss:// straight to A, trusting the CA file, and
    // with --insecure.
    for trust in [vec!["--ca", cert.to_str().unwrap()], vec!["--insecure"]] {
        let st = Command::new(bin())
            .args([
                "emulate-device",
                "--url",
                &format!("wss://localhost:{}/ws", a.port),
            ])
            .args(&trust)
            .args([
                "--interval",
                "200ms",
                "--duration",
                "700ms",
                "--color",
                "never",
            ])
            .arg("--stats-json")
            .arg(data.join("wss.json"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{trust:?}");
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(data.join("wss.json")).unwrap()).unwrap();
        assert!(s["reports_acked"].as_u64().unwrap() >= 2, "{trust:?} {s}");
    }
    // Without trusting it, the certificate is refused: no plug connects.
    let st = Command::new(bin())
        .args([
            "emulate-device",
            "--url",
            &format!("wss://localhost:{}/ws", a.port),
            "--duration",
            "500ms",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(
        st.code(),
        Some(3),
        "an untrusted certificate must not connect"
    );
    // B: plain toward devices, wss:// upstream (A) verified with the CA file.
    let b = Proxy::start(
        &format!("wss://localhost:{}", a.port),
        &["--upstream-ca", cert.to_str().unwrap(), "--format", "json"],
    );
    let stats = data.join("stats.json");
    let s = emulate(
        &["--url", &b.url(), "--interval", "200ms", "--duration", "1s"],
        &stats,
    );
    assert!(s["reports_acked"].as_u64().unwrap() >= 3, "{s}");
    let (out_b, out_a) = (b.stop(), a.stop());
    l.stop();
    let note = |out: &str, code: &str| -> Vec<String> {
        json_lines(out)
            .iter()
            .flat_map(|e| e["notes"].as_array().cloned().unwrap_or_default())
            .filter(|n| n["code"] == code)
            .map(|n| n["message"].as_str().unwrap().to_string())
            .collect()
    };
    let dev_tls = note(&out_a, "tls-session");
    assert!(
        dev_tls
            .iter()
            .any(|m| m.contains("TLS 1.3") && m.contains("SNI localhost")),
        "{dev_tls:?}"
    );
    let up_tls = note(&out_b, "tls-session");
    assert!(
        up_tls
            .iter()
            .any(|m| m.contains("upstream TLS") && m.contains(&fp)),
        "{up_tls:?} {fp}"
    );
    // The certificate is kept: a second start reuses it.
    let (again, said2) = Proxy::start_env(&l_url_unused(), &["--tls"], &env);
    again.stop();
    assert!(said2.contains(&fp), "{said2}");
    let _ = std::fs::remove_dir_all(&data);
}

/// An upstream URL for a proxy started only to print its certificate.
fn l_url_unused() -> String {
    "ws://127.0.0.1:9".into()
}

#[test]
fn plain_bytes_on_a_tls_port_and_tls_to_a_plain_upstream_are_told() {
    let data = std::env::temp_dir().join(format!("kw-tls2-{}", std::process::id()));
    let env = [("KINETID_WSDUMP_DATA", data.to_str().unwrap())];
    let l = Listener::start(&["--quiet", "--no-console"]);
    let (p, _) = Proxy::start_env(&l.url(), &["--tls", "--format", "summary"], &env);
    let resp = raw_upgrade(p.port);
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("speaks TLS"),
        "{resp}"
    );
    let out = p.stop();
    assert!(out.contains("tls-failed"), "{out}");
    // wss:// to an upstream that speaks plain HTTP: 502 with the reason.
    let q = Proxy::start(&format!("wss://{}", l.addr()), &["--upstream-insecure"]);
    let resp = raw_upgrade(q.port);
    assert!(
        resp.starts_with("HTTP/1.1 502") && resp.contains("TLS to upstream"),
        "{resp}"
    );
    q.stop();
    l.stop();
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn listen_speaks_tls_to_plugs_and_python() {
    let data = std::env::temp_dir().join(format!("kw-tls3-{}", std::process::id()));
    let l = Listener::start_env(
        &["--tls", "--format", "json", "--no-console"],
        &[("KINETID_WSDUMP_DATA", data.to_str().unwrap())],
    );
    let url = format!("wss://localhost:{}/ws", l.port);
    let cert = data.join("tls/cert.pem");
    let stats = data.join("stats.json");
    let s = emulate(
        &[
            "--url",
            &url,
            "--ca",
            cert.to_str().unwrap(),
            "--interval",
            "200ms",
            "--passive",
            "1",
            "--duration",
            "900ms",
        ],
        &stats,
    );
    assert!(s["reports_acked"].as_u64().unwrap() >= 4, "{s}");
    if let Some(python) = python_websockets() {
        let out = Command::new(&python)
            .arg("-c")
            .arg(format!(
                r#"
import asyncio, ssl, websockets
async def main():
    ctx = ssl.create_default_context(cafile={cert:?})
    async with websockets.connect({url:?}, ssl=ctx, open_timeout=10) as ws:
        await ws.send('{{"t":"hello","id":1,"dev":"KN-0000000000C2","fw":"py","role":"active"}}')
        print(await asyncio.wait_for(ws.recv(), 10))
asyncio.run(main())
"#,
                cert = cert.to_str().unwrap(),
            ))
            .output()
            .unwrap();
        let got = String::from_utf8_lossy(&out.stdout);
        assert!(
            got.contains("welcome"),
            "{got} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Plain bytes on the TLS port: a 400 that says so.
    let resp = raw_upgrade(l.port);
    assert!(
        resp.starts_with("HTTP/1.1 400") && resp.contains("speaks TLS"),
        "{resp}"
    );
    let out = l.stop();
    let ev = json_lines(&out);
    let tls_notes: Vec<&serde_json::Value> = ev
        .iter()
        .flat_map(|e| e["notes"].as_array().into_iter().flatten())
        .filter(|n| n["code"] == "tls-session")
        .collect();
    assert!(tls_notes.len() >= 2, "{tls_notes:?}");
    assert!(tls_notes
        .iter()
        .all(|n| n["message"].as_str().unwrap().contains("SNI localhost")));
    let _ = std::fs::remove_dir_all(&data);
}

/// A tokio-tungstenite echo server; its address.
async fn echo_upstream() -> std::net::SocketAddr {
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = server.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                    return;
                };
                while let Some(Ok(m)) = ws.next().await {
                    if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    up
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_have_their_effect_on_the_peer() {
    use tokio_tungstenite::tungstenite::Message;
    let up = echo_upstream().await;
    let connect = |p: &Proxy| {
        let url = p.url();
        async move {
            tokio::time::timeout(
                Duration::from_secs(10),
                tokio_tungstenite::connect_async(url),
            )
            .await
            .unwrap()
            .unwrap()
            .0
        }
    };
    // Delay both ways: a round trip takes at least twice the delay.
    let p = Proxy::start(
        &format!("ws://{up}"),
        &["--delay", "100ms", "--format", "summary"],
    );
    let mut ws = connect(&p).await;
    let t0 = std::time::Instant::now();
    ws.send(Message::Text("ping?".into())).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.into_text().unwrap(), "ping?");
    let rtt = t0.elapsed();
    assert!(
        rtt >= Duration::from_millis(190),
        "round trip {rtt:?} with 100 ms each way"
    );
    drop(ws);
    let out = tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    assert!(
        out.contains("proxy-fault") && out.contains("delay 100 ms"),
        "{out}"
    );
    // Bandwidth up: 10 kB/s, 12 kB go up in about a second.
    let p = Proxy::start(
        &format!("ws://{up}"),
        &["--bandwidth", "up:10kB/s", "--quiet"],
    );
    let mut ws = connect(&p).await;
    let t0 = std::time::Instant::now();
    ws.send(Message::Binary(vec![7u8; 12_000])).await.unwrap();
    let m = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(m.into_data().len(), 12_000);
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    drop(ws);
    tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    // Stall down: what the upstream says never reaches the device.
    let p = Proxy::start(&format!("ws://{up}"), &["--stall", "down", "--quiet"]);
    let mut ws = connect(&p).await;
    ws.send(Message::Text("hello?".into())).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_millis(600), ws.next())
        .await
        .is_err());
    drop(ws);
    tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    // Cut after 3 frames: the peer sees the connection end without a Close.
    let p = Proxy::start(
        &format!("ws://{up}"),
        &["--cut-after", "3f", "--format", "summary"],
    );
    let mut ws = connect(&p).await;
    ws.send(Message::Text("one".into())).await.unwrap();
    let _ = ws.next().await;
    let _ = ws.send(Message::Text("two".into())).await;
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap();
    assert!(
        !matches!(
            end,
            Some(Ok(Message::Close(_))) | Some(Ok(Message::Text(_)))
        ),
        "a Close or an echo came through: {end:?}"
    );
    let out = tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    assert!(out.contains("dropped after 3 frames"), "{out}");
}

/// An upstream that reads a head and answers `reply`, then closes.
fn one_shot_upstream(reply: &'static [u8]) -> std::net::SocketAddr {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let up = server.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = server.accept() {
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let _ = s.write_all(reply);
        }
    });
    up
}

#[test]
fn hostile_upstreams_are_forwarded_as_they_are_and_named() {
    let cases: [(&[u8], &str); 3] = [
        (
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: AAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n",
            "accept",
        ),
        (b"HTTP/1.1 10", "head"),
        (b"\x00\xff\xfegarbage\r\n\r\n", "HTTP"),
    ];
    for (reply, what) in cases {
        let up = one_shot_upstream(reply);
        let p = Proxy::start(&format!("ws://{up}"), &["--format", "json"]);
        let resp = raw_upgrade_bytes(p.port);
        // The device gets exactly what the upstream sent.
        assert_eq!(resp, reply, "{what}");
        let out = p.stop();
        let ev = json_lines(&out);
        let problems: Vec<String> = ev
            .iter()
            .filter(|e| {
                e["type"] == "head_error"
                    || (e["type"] == "response" && e["error"].is_string())
                    || e["notes"]
                        .as_array()
                        .is_some_and(|n| n.iter().any(|n| n["severity"] == "error"))
            })
            .map(|e| e.to_string())
            .collect();
        assert!(!problems.is_empty(), "{what}: nothing named in {out}");
    }
}

#[test]
fn a_tls_handshake_that_never_finishes_is_bounded() {
    let data = std::env::temp_dir().join(format!("kw-tls4-{}", std::process::id()));
    let (p, _) = Proxy::start_env(
        "ws://127.0.0.1:9",
        &["--tls", "--head-timeout", "500ms", "--format", "summary"],
        &[("KINETID_WSDUMP_DATA", data.to_str().unwrap())],
    );
    let mut s = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    // The first byte of a TLS record, then nothing.
    s.write_all(&[0x16]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "the proxy closes the connection");
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let out = p.stop();
    assert!(out.contains("tls-failed"), "{out}");
    let _ = std::fs::remove_dir_all(&data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_pings_takes_the_pings_out_and_nothing_else() {
    use tokio_tungstenite::tungstenite::Message;
    let l = Listener::start(&[
        "--echo",
        "--quiet",
        "--no-console",
        "--ping-interval",
        "150ms",
    ]);
    let mut pings = Vec::new();
    for flags in [vec!["--quiet"], vec!["--quiet", "--drop-pings", "down"]] {
        let p = Proxy::start(&l.url(), &flags);
        let (mut ws, _) = tokio_tungstenite::connect_async(p.url()).await.unwrap();
        let end = tokio::time::Instant::now() + Duration::from_millis(800);
        let (mut seen, mut echoes) = (0, 0);
        ws.send(Message::Text("still here".into())).await.unwrap();
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(end, ws.next()).await {
            match m {
                Message::Ping(_) => seen += 1,
                Message::Text(t) if t == "still here" => echoes += 1,
                _ => {}
            }
        }
        assert_eq!(echoes, 1, "{flags:?}: data passes");
        pings.push(seen);
        drop(ws);
        tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    }
    assert!(
        pings[0] >= 3,
        "listen pings through a plain proxy: {pings:?}"
    );
    assert_eq!(pings[1], 0, "{pings:?}");
    tokio::task::spawn_blocking(move || l.stop()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_through_the_proxy_to_an_upstream() {
    let Some(chromium) = chromium() else { return };
    // Upstream: a page whose script opens a WebSocket to its own origin,
    // and a tokio-tungstenite echo for that WebSocket.
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = server.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = server.accept().await {
            tokio::spawn(async move {
                let mut peek = [0u8; 2048];
                let n = s.peek(&mut peek).await.unwrap_or(0);
                let head = String::from_utf8_lossy(&peek[..n]).to_ascii_lowercase();
                if head.contains("upgrade: websocket") {
                    let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                        return;
                    };
                    while let Some(Ok(m)) = ws.next().await {
                        if m.is_text() && ws.send(m).await.is_err() {
                            return;
                        }
                    }
                } else {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let page = "<!doctype html><title>waiting</title><p id=r>waiting</p><script>\
                        const ws = new WebSocket('ws://' + location.host + '/ws');\
                        ws.onopen = () => ws.send('through the proxy');\
                        ws.onmessage = (e) => { document.getElementById('r').textContent = 'echo: ' + e.data; };\
                        </script>";
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    );
                    let _ = s.write_all(resp.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            });
        }
    });
    let p = Proxy::start(&format!("ws://{up}"), &["--format", "json"]);
    let url = format!("http://127.0.0.1:{}/", p.port);
    // Headless Chromium's virtual time does not wait for a WebSocket: on a
    // busy machine the echo may come after the budget, so a few tries,
    // each a whole new page load through the proxy.
    let dom = tokio::task::spawn_blocking(move || {
        let mut dom = String::new();
        for budget in [5000, 10000, 20000] {
            dom = chromium_dom(chromium, &url, budget);
            if dom.contains("echo: through the proxy") {
                break;
            }
        }
        dom
    })
    .await
    .unwrap();
    assert!(dom.contains("echo: through the proxy"), "{dom}");
    let out = tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    let ev = json_lines(&out);
    let texts: Vec<&str> = ev
        .iter()
        .filter(|e| e["type"] == "message")
        .filter_map(|e| e["text"].as_str())
        .collect();
    // What went through is the page's message and its echo, as sent.
    assert!(
        !texts.is_empty() && texts.iter().all(|t| *t == "through the proxy"),
        "{out}"
    );
    // Chromium's upgrade request, annotated with its checks.
    assert!(ev
        .iter()
        .any(|e| e["type"] == "request" && e["websocket"] == true && e["status"] == 101));
}

#[test]
fn switches_and_messages_injected_through_the_api_reach_their_peer() {
    let dir = std::env::temp_dir().join(format!("kw-inject-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let l = Listener::start(&["--format", "json", "--no-console"]);
    let p = Proxy::start(&l.url(), &["--format", "json"]);
    let addr = format!("127.0.0.1:{}", p.port);
    let stats = dir.join("stats.json");
    let emu = Command::new(bin())
        .args([
            "emulate-device",
            "--url",
            &p.url(),
            "--id",
            "KN-0000000000D1",
            "--interval",
            "200ms",
        ])
        .args(["--duration", "2500ms", "--color", "never", "--stats-json"])
        .arg(&stats)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The registry names the plug once it said hello.
    let mut conn = None;
    for _ in 0..50 {
        let (st, body) = http(&addr, "GET", "/api/devices", "", "");
        assert_eq!(st, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        conn = v
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["id"] == "KN-0000000000D1")
            .and_then(|d| d["conn"].as_u64());
        if conn.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let conn = conn.expect("the plug never appeared in /api/devices");
    let inject = format!("/api/conns/{conn}/inject");
    // A switch to the plug, as if from the backend.
    let (st, body) = http(
        &addr,
        "POST",
        "/api/devices/KN-0000000000D1/switch",
        "",
        r#"{"on":false}"#,
    );
    // The call waits for the plug's answer, as listen's does.
    assert_eq!(st, 200, "{body}");
    let state: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(state["t"], "state", "{body}");
    assert_eq!(state["on"], false, "{body}");
    // The proxy's table follows the plug's own messages, as listen's does.
    let (_, body) = http(&addr, "GET", "/api/devices", "", "");
    let rows: serde_json::Value = serde_json::from_str(&body).unwrap();
    let row = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == "KN-0000000000D1")
        .cloned()
        .unwrap_or_else(|| panic!("{body}"));
    assert_eq!(row["on"], false, "{row}");
    assert_eq!(row["role"], "active", "{row}");
    assert_eq!(row["conn"], conn, "{row}");
    // A message to the backend, as if from the plug (masked on the way).
    let marker = r#"{"t":"report","id":99,"dev":"KN-0000000000D1","note":"injected"}"#;
    let body = serde_json::json!({"dir": "up", "text": marker}).to_string();
    let (st, resp) = http(&addr, "POST", &inject, "", &body);
    assert_eq!(st, 202, "{resp}");
    // A ping to the plug, as if from the backend: the plug answers it.
    let ping = serde_json::json!({"dir": "down", "ping": "are you there"}).to_string();
    let (st, resp) = http(&addr, "POST", &inject, "", &ping);
    assert_eq!(st, 202, "{resp}");
    // Frames that may not be sent are refused before anything is sent.
    for bad in [
        serde_json::json!({"dir": "down", "close": 1005}),
        serde_json::json!({"dir": "down", "ping": "x".repeat(126)}),
        serde_json::json!({"dir": "up", "hex": "zz"}),
        serde_json::json!({"dir": "sideways", "text": "?"}),
    ] {
        let (st, resp) = http(&addr, "POST", &inject, "", &bad.to_string());
        assert_eq!(st, 400, "{bad}: {resp}");
    }
    // Refusals: another origin, a non-JSON body, an unknown device.
    let (st, _) = http(
        &addr,
        "POST",
        &inject,
        "Origin: http://evil.example\r\n",
        &body,
    );
    assert_eq!(st, 403);
    let (st, _) = http(
        &addr,
        "POST",
        &inject,
        "Content-Type: text/plain\r\n",
        &body,
    );
    assert_eq!(st, 415);
    let (st, _) = http(
        &addr,
        "POST",
        "/api/devices/KN-00000000FFFF/switch",
        "",
        r#"{"on":true}"#,
    );
    assert_eq!(st, 404);
    let mut emu = emu;
    assert!(emu.wait().unwrap().success());
    let s: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert!(
        s["commands"].as_u64().unwrap() >= 1,
        "the plug obeyed no switch: {s}"
    );
    let (out_p, out_l) = (p.stop(), l.stop());
    // listen received the injected message as a frame of its own, masked,
    // with no framing error around it.
    let lev = json_lines(&out_l);
    assert!(
        lev.iter()
            .any(|e| e["type"] == "message" && e["text"] == marker),
        "{out_l}"
    );
    assert!(!lev.iter().any(|e| e["type"] == "frame"
        && e["notes"]
            .as_array()
            .is_some_and(|n| n.iter().any(|n| n["severity"] == "error"))));
    // The proxy marked both injections and annotated the frames.
    let pev = json_lines(&out_p);
    // Its own API requests were answered but kept out of its output.
    assert!(
        !out_p.contains("/api/devices") && !out_p.contains("/inject"),
        "the proxy printed its own API traffic: {out_p}"
    );
    let marks = pev
        .iter()
        .flat_map(|e| e["notes"].as_array().cloned().unwrap_or_default())
        .filter(|n| n["code"] == "proxy-injected")
        .count();
    // Three injections, and the plug's answer to the injected switch
    // going on to the backend.
    assert_eq!(marks, 4, "{out_p}");
    assert!(
        out_p.contains("the upstream never sent that command"),
        "{out_p}"
    );
    // The injected ping went down and the plug's pong came back up.
    let frame_with = |dir: &str, op: &str| {
        pev.iter().any(|e| {
            e["type"] == "frame"
                && e["dir"] == dir
                && e["opcode_name"] == op
                && e["payload_text"] == "are you there"
        })
    };
    assert!(
        frame_with("s2c", "ping") && frame_with("c2s", "pong"),
        "{out_p}"
    );
    assert!(pev
        .iter()
        .any(|e| e["type"] == "message" && e["dir"] == "s2c" && e["kinetid"]["t"] == "switch"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn console_switches_and_injects_through_the_proxy() {
    let l = Listener::start(&["--quiet", "--no-console"]);
    let mut p = Command::new(bin())
        .args(["proxy", "--bind", "127.0.0.1:0", "--quiet", "--console"])
        .arg("--upstream")
        .arg(format!("ws://{}", l.addr()))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let err = p.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let until = |needle: &str| -> String {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        let mut seen = String::new();
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match rx.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(l) => {
                    seen.push_str(&l);
                    seen.push('\n');
                }
                Err(_) => break,
            }
        }
        panic!("no stderr line with {needle:?}; saw:\n{seen}");
    };
    let addr = until("listening on")
        .split("listening on ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap()
        .to_string();
    until("console ready");
    let mut plug = Command::new(bin())
        .args(["emulate-device", "--url", &format!("ws://{addr}/ws")])
        .args(["--interval", "1s", "--duration", "20s", "--seed", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = p.stdin.take().unwrap();
    let mut say = |line: &str| writeln!(stdin, "{line}").unwrap();
    // Wait until the plug said hello through the proxy.
    let dev = loop {
        say("conns");
        let l = until("connection");
        if l.contains("connections:") {
            let _header = until("conn  peer");
            let row = until("127.0.0.1:");
            if let Some(d) = row.split_whitespace().find(|w| w.starts_with("KN-")) {
                break d.to_string();
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    say(&format!("off {dev}"));
    let answer = until(&format!("{dev}: {{"));
    assert!(
        answer.contains("\"t\":\"state\"") && answer.contains("\"on\":false"),
        "{answer}"
    );
    say("ping 1 from the console");
    assert!(until("connection 1:").contains("ping frame, 16 payload bytes queued"));
    say("close 1 1005");
    assert!(until("close code").contains("cannot be sent"));
    say("up 99 hello");
    assert!(until("no connection 99").contains("being forwarded"));
    say("bogus");
    assert!(until("unknown command").contains("commands:"));
    let _ = plug.kill();
    let _ = plug.wait();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(p.id() as i32, libc::SIGINT) };
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while p.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < end,
            "proxy with a console did not exit on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--keylog`: a tcpdump of wss:// through `proxy --tls` to a `listen
/// --tls` upstream opens decrypted in tshark with the key file, both legs;
/// without it, no WebSocket is seen.
#[test]
fn a_keylog_lets_tshark_decrypt_both_tls_legs_of_the_proxy() {
    let (Some(tcpdump), Some(tshark)) = (tcpdump(), tshark()) else {
        return;
    };
    let dir = root().join(format!(
        "target/test-artifacts/keylog-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("data");
    let env = [("KINETID_WSDUMP_DATA", data.to_str().unwrap())];
    let keys = dir.join("keys.txt");
    let l = Listener::start_env(&["--tls", "--quiet", "--no-console"], &env);
    let (p, said) = Proxy::start_env(
        &format!("wss://{}", l.addr()),
        &[
            "--tls",
            "--upstream-insecure",
            "--quiet",
            "--no-console",
            "--keylog",
            keys.to_str().unwrap(),
        ],
        &env,
    );
    assert!(
        said.contains("TLS session secrets are written to"),
        "{said}"
    );
    let (lp, pp) = (l.port, p.port);
    let cap = dir.join("wss.pcap");
    let td = Capture::start(tcpdump, &cap, &format!("tcp port {lp} or tcp port {pp}"));
    let st = Command::new(bin())
        .args([
            "emulate-device",
            "--url",
            &format!("wss://127.0.0.1:{}/ws", p.port),
        ])
        .args(["--insecure", "--interval", "300ms", "--duration", "1500ms"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(300));
    td.stop();
    p.stop();
    l.stop();
    let texts = |with_keys: bool| {
        let mut c = Command::new(tshark);
        c.arg("-r").arg(&cap);
        if with_keys {
            c.arg("-o")
                .arg(format!("tls.keylog_file:{}", keys.display()));
        }
        for port in [lp, pp] {
            c.args(["-d", &format!("tcp.port=={port},tls")]);
            c.args(["-d", &format!("tls.port=={port},http")]);
        }
        let out = c
            .args([
                "-Y",
                "websocket.payload",
                "-T",
                "fields",
                "-e",
                "tcp.dstport",
            ])
            .args(["-e", "websocket.payload.text"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let plain = texts(true);
    let hellos: Vec<&str> = plain
        .lines()
        .filter(|l| l.contains(r#""t":"hello""#))
        .collect();
    // The device's hello on the device leg and again on the upstream leg.
    assert!(
        hellos.iter().any(|h| h.starts_with(&pp.to_string()))
            && hellos.iter().any(|h| h.starts_with(&lp.to_string())),
        "{plain}"
    );
    assert!(plain.contains(r#""t":"ack""#), "{plain}");
    assert!(
        texts(false).trim().is_empty(),
        "decrypted without the keys?"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
