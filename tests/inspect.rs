//! The browser inspector: its event stream (`/api/events`), its rules, and
//! the page itself driven in headless Chromium like a person would.

mod common;
use common::cdp::Browser;
use common::*;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn emulate(url: &str, args: &[&str]) -> std::process::Child {
    Command::new(bin())
        .args(["emulate-device", "--url", url])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Read the event stream for up to `secs` (or until `n` records), returning
/// each record's (event name, data).
fn read_events(addr: &str, headers: &str, n: usize, secs: u64) -> (String, Vec<(String, String)>) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    write!(
        s,
        "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{headers}\r\n"
    )
    .unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut raw = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(k) => raw.extend_from_slice(&buf[..k]),
            Err(_) => {}
        }
        let text = String::from_utf8_lossy(&raw);
        if Instant::now() > end || text.matches("\n\n").count() > n.saturating_add(1) {
            break;
        }
    }
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut recs = Vec::new();
    for r in body.split("\n\n") {
        let mut ev = String::from("message");
        let mut data = String::new();
        for l in r.lines() {
            if let Some(v) = l.strip_prefix("event: ") {
                ev = v.to_string();
            } else if let Some(v) = l.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        if !data.is_empty() {
            recs.push((ev, data));
        }
    }
    (head.to_string(), recs)
}

#[test]
fn event_stream_carries_the_json_output_with_history() {
    let l = Listener::start(&["--format", "json", "--no-console"]);
    let mut e = emulate(
        &l.url(),
        &["--passive", "1", "--interval", "1s", "--duration", "3s"],
    );
    assert!(e.wait().unwrap().success());
    std::thread::sleep(Duration::from_millis(300));
    // The history replayed on connect: every event so far, as --format json wrote it.
    let (head, recs) = read_events(&l.addr(), "", usize::MAX, 2);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("Content-Type: text/event-stream"), "{head}");
    let stdout = l.stop();
    let printed: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("\"conn\":1,"))
        .collect();
    let streamed: Vec<&str> = recs
        .iter()
        .map(|(_, d)| d.as_str())
        .filter(|d| d.contains("\"conn\":1,"))
        .collect();
    assert!(printed.len() > 10, "{stdout}");
    assert_eq!(streamed, printed, "the stream and --format json differ");
    let kinds: Vec<String> = json_lines(&streamed.join("\n"))
        .iter()
        .map(|v| v["type"].as_str().unwrap().to_string())
        .collect();
    for k in ["open", "request", "response", "frame", "message", "end"] {
        assert!(kinds.iter().any(|x| x == k), "no {k} event: {kinds:?}");
    }
}

#[test]
fn event_stream_follows_the_api_rules() {
    let l = Listener::start(&["--api-token", "s3cret-token", "--quiet", "--no-console"]);
    let a = l.addr();
    let (head, _) = read_events(&a, "", 0, 1);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = read_events(&a, "Authorization: Bearer wrong\r\n", 0, 1);
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = read_events(
        &a,
        "Authorization: Bearer s3cret-token\r\nOrigin: http://evil.example\r\n",
        0,
        1,
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let (head, _) = read_events(
        &a,
        "Authorization: Bearer s3cret-token\r\nSec-Fetch-Site: cross-site\r\n",
        0,
        1,
    );
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    // A rebinding host name: the page would be another site's.
    let mut s = std::net::TcpStream::connect(&a).unwrap();
    write!(s, "GET /api/events HTTP/1.1\r\nHost: attacker.example:{}\r\nAuthorization: Bearer s3cret-token\r\n\r\n", l.port).unwrap();
    let r = String::from_utf8_lossy(&read_all(&mut s)).to_string();
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
    let (head, _) = read_events(&a, "Authorization: Bearer s3cret-token\r\n", 0, 1);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // The page and its info call follow the same rules.
    let (st, _) = http(&a, "GET", "/api/info", "", "");
    assert_eq!(st, 401);
    let (st, body) = http(
        &a,
        "GET",
        "/api/info",
        "Authorization: Bearer s3cret-token\r\n",
        "",
    );
    assert_eq!(st, 200);
    assert!(body.contains("\"mode\":\"listen\""), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_that_does_not_read_is_dropped_and_devices_keep_going() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let l = Listener::start(&["--echo", "--quiet", "--no-console", "--history", "0"]);
    // A page that opens the stream and never reads it.
    let mut stalled = std::net::TcpStream::connect(l.addr()).unwrap();
    write!(
        stalled,
        "GET /api/events HTTP/1.1\r\nHost: {}\r\n\r\n",
        l.addr()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (ws, _) = tokio_tungstenite::connect_async(l.url()).await.unwrap();
    let payload = "x".repeat(2000);
    let n = 20_000;
    let start = Instant::now();
    let (mut tx, mut rx) = ws.split();
    let sender = tokio::spawn(async move {
        for _ in 0..n {
            tx.send(Message::Text(payload.clone())).await.unwrap();
        }
        tx
    });
    let mut got = 0;
    while got < n {
        match tokio::time::timeout(Duration::from_secs(20), rx.next()).await {
            Ok(Some(Ok(Message::Text(_)))) => got += 1,
            Ok(Some(Ok(_))) => {}
            other => panic!("echo stopped after {got} of {n}: {other:?}"),
        }
    }
    let mut tx = sender.await.unwrap();
    let _ = tx.close().await;
    eprintln!("{n} echoes in {:?} with a stalled page", start.elapsed());
    let line = l
        .stderr_until("disconnected from /api/events", Duration::from_secs(20))
        .expect("no notice about the dropped page");
    assert!(
        line.contains("events behind") || line.contains("read nothing"),
        "{line}"
    );
    drop(stalled);
}

#[test]
fn replay_serve_streams_a_capture_and_ends() {
    let f = root().join("fixtures/kinetid-session.hex");
    let (mut child, addr) = spawn_serving(
        Command::new(bin())
            .args(["replay", "--serve=127.0.0.1:0"])
            .arg(&f),
        "http://",
        '/',
    );
    let (head, recs) = read_events(&addr, "", usize::MAX, 5);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (last, data) = recs.last().unwrap();
    assert_eq!(last, "end", "{data}");
    let out = Command::new(bin())
        .args(["replay", "--format", "json"])
        .arg(&f)
        .output()
        .unwrap();
    let want: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    let got: Vec<String> = recs[..recs.len() - 1]
        .iter()
        .map(|(_, d)| d.clone())
        .collect();
    assert_eq!(got, want);
    let (st, body) = http(&addr, "GET", "/api/info", "", "");
    assert_eq!(st, 200);
    assert!(body.contains("\"mode\":\"replay\""), "{body}");
    let (st, _) = http(&addr, "GET", "/", "", "");
    assert_eq!(st, 200);
    // Nothing to switch in a capture.
    let (st, _) = http(
        &addr,
        "POST",
        "/api/devices/KN-A4CF12F0E1B2/switch",
        "Content-Type: application/json\r\n",
        "{\"on\":false}",
    );
    assert_eq!(st, 404);
    let (st, _) = http(
        &addr,
        "GET",
        "/api/events",
        "Origin: http://evil.example\r\n",
        "",
    );
    assert_eq!(st, 403);
    // The page over the capture: every frame listed, the byte map works.
    if let Some(chrome) = chromium() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut b = Browser::open(chrome, &format!("http://{addr}/"), 1600, 1000).await;
            b.wait_for("document.getElementById('status')?.textContent.startsWith('capture loaded')", 30)
                .await;
            let frames = want.iter().filter(|l| l.contains("\"type\":\"frame\"")).count();
            let shown = b
                .eval("S.items.filter(i => i.kind === 'frame').length")
                .await;
            assert_eq!(shown.as_u64().unwrap() as usize, frames);
            b.click("#frames .row[data-kind=frame]").await;
            b.hover("#bytemap .b[data-i='1']").await;
            let t = b
                .wait_for("document.getElementById('hover').textContent.includes('MASK') && document.getElementById('hover').textContent", 10)
                .await;
            assert!(t.as_str().unwrap().contains("payload length"), "{t}");
        });
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn screenshot_path(name: &str) -> std::path::PathBuf {
    root().join("target/test-artifacts").join(name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_in_chromium_shows_frames_bytes_and_switches_a_plug() {
    let Some(chrome) = chromium() else { return };
    let l = Listener::start(&["--format", "summary", "--no-console"]);
    let mut dev = emulate(
        &l.url(),
        &[
            "--passive",
            "1",
            "--interval",
            "1s",
            "--duration",
            "60s",
            "--seed",
            "7",
        ],
    );
    let url = format!("http://127.0.0.1:{}/", l.port);
    let mut b = Browser::open(chrome, &url, 1700, 1000).await;
    // Frames appear as they come.
    b.wait_for(
        "document.querySelectorAll('#frames .row[data-kind=frame]').length >= 4",
        30,
    )
    .await;
    let conns = b
        .eval("[...document.querySelectorAll('#conns .row')].map(r => r.textContent)")
        .await;
    assert!(conns.to_string().contains("KN-"), "{conns}");
    // The upgrade row: both heads, their checks, the accept derivation.
    b.eval("document.getElementById('follow').checked = false")
        .await;
    let acc = b
        .click_until(
            "#frames .row[data-kind=request]",
            "document.getElementById('accept')?.textContent",
            15,
        )
        .await;
    assert!(
        acc.as_str()
            .unwrap()
            .contains("258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
        "{acc}"
    );
    let checks = b
        .eval("[...document.querySelectorAll('table.checks td.ok')].length")
        .await;
    assert!(checks.as_u64().unwrap() >= 8, "{checks}");
    // Click the device's hello (a masked frame with a 16-bit length).
    b.eval("document.getElementById('follow').checked = false")
        .await;
    let title = b
        .click_until(
            "#frames .row[data-kind=frame][data-dir=c2s]",
            "document.getElementById('frame-title')?.textContent",
            15,
        )
        .await;
    assert!(title.as_str().unwrap().contains("masked"), "{title}");
    // Hover the first byte: FIN, RSV and opcode share it.
    b.hover("#bytemap .b[data-i='0']").await;
    let t = b.wait_for("document.getElementById('hover').textContent.includes('opcode') && document.getElementById('hover').textContent", 10).await;
    assert!(t.as_str().unwrap().contains("FIN = 1"), "{t}");
    // The masking key, and a payload byte with its unmasking.
    b.hover("#bytemap .b[data-g='gkey']").await;
    let t = b.wait_for("document.getElementById('hover').textContent.includes('masking key') && document.getElementById('hover').textContent", 10).await;
    assert!(t.as_str().unwrap().contains("XOR key"), "{t}");
    let lit = b
        .eval("document.querySelectorAll('#bytemap .b.hl').length")
        .await;
    assert_eq!(lit, 4, "hovering a key byte lights the whole key");
    b.hover("#bytemap .b[data-g='gpay']").await;
    let t = b.wait_for("document.getElementById('hover').textContent.includes('payload byte 0') && document.getElementById('hover').textContent", 10).await;
    assert!(t.as_str().unwrap().contains("XOR key byte 0"), "{t}");
    let text = b
        .eval("document.getElementById('msgtext')?.textContent || ''")
        .await;
    assert!(text.as_str().unwrap().contains("\"hello\""), "{text}");
    // Filters: one direction, then text search.
    b.eval("(() => { const f = document.getElementById('f-dir'); f.value = 's2c'; f.dispatchEvent(new Event('input')); })()")
        .await;
    let arrows = b
        .wait_for("(() => { const r = [...document.querySelectorAll('#frames .row')].map(r => r.children[2].textContent); return r.length && r.every(a => a === '←') && r.length; })()", 10)
        .await;
    assert!(arrows.as_u64().unwrap() >= 1, "{arrows}");
    b.eval("(() => { const f = document.getElementById('f-dir'); f.value = ''; f.dispatchEvent(new Event('input')); const t = document.getElementById('f-text'); t.value = 'welcome'; t.dispatchEvent(new Event('input')); })()")
        .await;
    let rows = b
        .wait_for("(() => { const r = [...document.querySelectorAll('#frames .row')].map(r => r.textContent); return r.length && r.every(t => t.includes('welcome')) && r.length; })()", 10)
        .await;
    assert_eq!(rows, 1, "one welcome");
    b.eval("(() => { const t = document.getElementById('f-text'); t.value = ''; t.dispatchEvent(new Event('input')); document.getElementById('frames').scrollTop = 0; })()")
        .await;
    b.click("#frames .row[data-kind=frame][data-dir=c2s]").await;
    // The picture (README): the key lit.
    b.hover("#bytemap .b[data-g='gkey']").await;
    b.wait_for(
        "document.getElementById('hover').textContent.includes('masking key')",
        10,
    )
    .await;
    screenshot_frame(&mut b).await;
    // Devices: switch the active plug off, see the state and the chart follow.
    b.click("#tab-devices").await;
    let active = b
        .wait_for("(() => { const r = [...document.querySelectorAll('#devices .row')].find(r => r.textContent.includes('active')); return r && r.dataset.dev; })()", 20)
        .await;
    let sel = format!("#devices .row[data-dev='{}']", active.as_str().unwrap());
    b.click(&sel).await;
    b.wait_for(
        "Number(document.getElementById('chart')?.dataset.points) >= 2",
        20,
    )
    .await;
    let before = b
        .eval("Number(document.getElementById('chart').dataset.last)")
        .await;
    assert!(before.as_f64().unwrap() > 0.0, "{before}");
    b.click("#btn-off").await;
    let r = b
        .wait_for("(() => { const t = document.getElementById('switch-result').textContent; return t !== 'sending…' && t; })()", 15)
        .await;
    assert!(r.as_str().unwrap().starts_with("HTTP 200"), "{r}");
    b.wait_for(
        "document.getElementById('dev-state').textContent.includes('relay off')",
        10,
    )
    .await;
    // The next report says 0 W: the chart's last point drops to zero.
    b.wait_for("document.getElementById('chart').dataset.last === '0'", 10)
        .await;
    let energy = b
        .eval("document.getElementById('energy').textContent")
        .await;
    assert!(
        energy.as_str().unwrap().contains("energy counter"),
        "{energy}"
    );
    b.screenshot(&screenshot_path("inspector-devices.png"))
        .await;
    let _ = dev.kill();
    let _ = dev.wait();
}

async fn screenshot_frame(b: &mut Browser) {
    b.screenshot(&screenshot_path("inspector-frames.png")).await;
    if let Ok(p) = std::env::var("KINETID_INSPECTOR_SCREENSHOT") {
        b.screenshot(std::path::Path::new(&p)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_strings_reach_the_page_as_text_never_as_markup() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let Some(chrome) = chromium() else { return };
    let l = Listener::start(&["--format", "summary", "--no-console", "--lenient"]);
    let (mut ws, _) = tokio_tungstenite::connect_async(l.url()).await.unwrap();
    let evil_id = "KN-<img src=x onerror=window.__xss=1>";
    let hello = serde_json::json!({"t": "hello", "id": 1, "dev": evil_id, "fw": "<script>window.__xss=2</script>", "role": "active", "mains_v": 230, "mains_hz": 50, "period_s": 60, "passives": []});
    ws.send(Message::Text(hello.to_string())).await.unwrap();
    let err = serde_json::json!({"t": "error", "re": 1, "dev": evil_id, "code": "<b>bad</b>", "message": "<img src=y onerror=window.__xss=3>"});
    ws.send(Message::Text(err.to_string())).await.unwrap();
    ws.send(Message::Text("<svg onload=window.__xss=4></svg>".into()))
        .await
        .unwrap();
    ws.send(Message::Binary(
        b"<iframe src=javascript:window.__xss=5>".to_vec(),
    ))
    .await
    .unwrap();
    // Defence in depth: only the page's own script may run.
    let mut raw_page = raw(&l.addr());
    raw_page
        .write_all(format!("GET / HTTP/1.1\r\nHost: {}\r\n\r\n", l.addr()).as_bytes())
        .unwrap();
    let resp = String::from_utf8_lossy(&read_all(&mut raw_page)).to_string();
    assert!(
        resp.contains("Content-Security-Policy: default-src 'none'; script-src 'sha256-"),
        "{resp}"
    );
    let mut b = Browser::open(chrome, &format!("http://127.0.0.1:{}/", l.port), 1600, 1000).await;
    b.wait_for(
        "document.querySelectorAll('#frames .row[data-kind=frame]').length >= 4",
        30,
    )
    .await;
    // Show every row's detail (payloads, messages, notes, handshake).
    let rows = b
        .eval("document.querySelectorAll('#frames .row').length")
        .await
        .as_u64()
        .unwrap();
    for i in 0..rows {
        b.click(&format!("#frames .row:nth-child({})", i + 1)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.click("#conns .row").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = b.eval("document.body.innerText").await;
    let seen = seen.as_str().unwrap();
    assert!(seen.contains(evil_id), "the id is shown as text: {seen}");
    let marks = b
        .eval("[window.__xss === undefined, document.querySelectorAll('img, svg, iframe, b').length, document.scripts.length]")
        .await;
    assert_eq!(marks, serde_json::json!([true, 0, 1]), "{seen}");
    let _ = ws.close(None).await;
    let _ = ws.next().await;
}

#[test]
fn proxy_serves_the_inspector_and_its_stream() {
    let l = Listener::start(&["--quiet", "--no-console"]);
    let (mut p, addr) = spawn_serving(
        Command::new(bin())
            .args([
                "proxy",
                "--bind",
                "127.0.0.1:0",
                "--quiet",
                "--history",
                "1000",
            ])
            .arg("--upstream")
            .arg(format!("ws://{}", l.addr())),
        "listening on ",
        ' ',
    );
    let mut e = emulate(
        &format!("ws://{addr}/ws"),
        &["--interval", "1s", "--duration", "2s"],
    );
    assert!(e.wait().unwrap().success());
    let (st, page) = http(&addr, "GET", "/api/inspector", "", "");
    assert_eq!(st, 200);
    assert!(page.contains("kinetid-wsdump inspector"));
    let (st, info) = http(&addr, "GET", "/api/info", "", "");
    assert_eq!(st, 200);
    assert!(info.contains("\"mode\":\"proxy\""), "{info}");
    let (head, recs) = read_events(&addr, "", usize::MAX, 2);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let ev = json_lines(
        &recs
            .iter()
            .map(|(_, d)| d.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    // Both directions of the forwarded connection, annotated once each.
    for dir in ["c2s", "s2c"] {
        assert!(
            ev.iter()
                .any(|e| e["type"] == "message" && e["dir"] == dir && e["conn"] == 1),
            "no {dir} message: {recs:?}"
        );
    }
    let (st, _) = http(
        &addr,
        "GET",
        "/api/events",
        "Origin: http://evil.example\r\n",
        "",
    );
    assert_eq!(st, 403);
    let _ = p.kill();
    let _ = p.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_asks_for_it_and_then_shows_the_devices() {
    let Some(chrome) = chromium() else { return };
    let l = Listener::start(&[
        "--format",
        "summary",
        "--no-console",
        "--api-token",
        "page-token-1",
    ]);
    let mut dev = emulate(&l.url(), &["--interval", "1s", "--duration", "30s"]);
    let mut b = Browser::open(chrome, &format!("http://127.0.0.1:{}/", l.port), 1400, 900).await;
    // Nothing is shown without the token; the page asks for it.
    b.wait_for(
        "getComputedStyle(document.getElementById('tokenbox')).display !== 'none'",
        20,
    )
    .await;
    let rows = b
        .eval("document.querySelectorAll('#frames .row').length")
        .await;
    assert_eq!(rows, 0);
    b.eval("document.getElementById('token').value = 'page-token-1'; document.getElementById('tokenset').click()")
        .await;
    let shown = b
        .wait_for_or(
            "document.querySelectorAll('#frames .row[data-kind=frame]').length >= 2",
            "document.getElementById('status').textContent",
            30,
        )
        .await;
    assert!(
        shown.is_ok(),
        "no frames after the token was given; status: {shown:?}"
    );
    // The token lives in the tab's session storage, never in a URL.
    let url = b.eval("location.href").await;
    assert!(!url.as_str().unwrap().contains("page-token-1"), "{url}");
    let _ = dev.kill();
    let _ = dev.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_proxy_page_in_chromium_shows_both_ways_and_switches_through_the_proxy() {
    let Some(chrome) = chromium() else { return };
    let l = Listener::start(&["--quiet", "--no-console"]);
    let (mut p, addr) = spawn_serving(
        Command::new(bin())
            .args(["proxy", "--bind", "127.0.0.1:0", "--format", "summary"])
            .arg("--upstream")
            .arg(format!("ws://{}", l.addr())),
        "listening on ",
        ' ',
    );
    let mut dev = emulate(
        &format!("ws://{addr}/ws"),
        &["--interval", "1s", "--duration", "40s"],
    );
    let mut b = Browser::open(chrome, &format!("http://{addr}/api/inspector"), 1500, 900).await;
    b.wait_for(
        "document.querySelectorAll('#frames .row[data-kind=frame][data-dir=s2c]').length >= 2",
        30,
    )
    .await;
    let mode = b.eval("document.getElementById('mode').textContent").await;
    assert!(
        mode.as_str().unwrap().starts_with("proxy to ws://"),
        "{mode}"
    );
    // A note of its own (the Host the proxy rewrote) is a row too.
    let note = b
        .wait_for("(() => { const r = document.querySelector('#frames .row[data-kind=note]'); return r && r.textContent; })()", 10)
        .await;
    assert!(note.as_str().unwrap().contains("Host"), "{note}");
    b.click("#tab-devices").await;
    let id = b
        .wait_for("(() => { const r = [...document.querySelectorAll('#devices .row')].find(r => r.textContent.includes('active')); return r && r.dataset.dev; })()", 20)
        .await;
    b.click(&format!(
        "#devices .row[data-dev='{}']",
        id.as_str().unwrap()
    ))
    .await;
    b.click("#btn-off").await;
    let r = b
        .wait_for("(() => { const t = document.getElementById('switch-result').textContent; return t !== 'sending…' && t; })()", 15)
        .await;
    assert!(
        r.as_str().unwrap().starts_with("HTTP 200") && r.as_str().unwrap().contains("\"on\":false"),
        "{r}"
    );
    let _ = dev.kill();
    let _ = dev.wait();
    let _ = p.kill();
    let _ = p.wait();
}

/// How many characters the summary cells in `rows` have room for, at the
/// least, over the rows that have a summary (the width of a digit in the
/// cell's font measures a character); 0 when no row has one.
const VISIBLE_CHARS: &str = "(rows) => { const g = document.createElement('canvas').getContext('2d'); const room = [...document.querySelectorAll(rows)].map((r) => r.querySelector('.sum')).filter((s) => s && s.textContent.length).map((s) => { g.font = getComputedStyle(s).font; return Math.floor(s.clientWidth / g.measureText('0').width); }); return room.length ? Math.min(...room) : 0; }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inspector_at_1280_px_reads_switches_in_one_click_and_draws_each_reading_once() {
    let Some(chrome) = chromium() else { return };
    let l = Listener::start(&["--format", "summary", "--no-console"]);
    let mut dev = emulate(
        &l.url(),
        &[
            "--passive",
            "1",
            "--interval",
            "1s",
            "--duration",
            "90s",
            "--seed",
            "11",
        ],
    );
    let url = format!("http://127.0.0.1:{}/", l.port);
    let mut b = Browser::open(chrome, &url, 1280, 800).await;
    b.wait_for(
        "document.querySelectorAll('#frames .row[data-kind=frame] .sum').length >= 6",
        30,
    )
    .await;
    // Nothing picked: the detail pane is narrow, the summaries long.
    let rows = "'#frames .row[data-kind=frame]'";
    let seen = b.eval(&format!("({VISIBLE_CHARS})({rows})")).await;
    assert!(
        seen.as_f64().unwrap() >= 40.0,
        "summary shows {seen} characters"
    );
    let ids = b.eval(&format!("({VISIBLE_CHARS})('#conns .row')")).await;
    assert!(
        ids.as_f64().unwrap() >= 15.0,
        "device id shows {ids} characters"
    );
    // A frame picked: the detail pane opens, the summaries stay readable.
    b.eval("document.getElementById('follow').checked = false")
        .await;
    b.click_until(
        "#frames .row[data-kind=frame][data-dir=c2s]",
        "document.getElementById('frame-title')?.textContent",
        15,
    )
    .await;
    let seen = b.eval(&format!("({VISIBLE_CHARS})({rows})")).await;
    assert!(
        seen.as_f64().unwrap() >= 20.0,
        "summary shows {seen} characters with the detail open"
    );
    let detail = b
        .eval("document.getElementById('right').getBoundingClientRect().width")
        .await;
    assert!(detail.as_f64().unwrap() >= 280.0, "detail pane {detail} px");
    // One click switches a plug from its connection's details...
    b.click("#conns .row").await;
    b.click("[data-switch=conn-off]").await;
    let r = b
        .wait_for("(() => { const t = document.getElementById('toast').textContent; return t.includes('HTTP') && t; })()", 15)
        .await;
    assert!(r.as_str().unwrap().contains("HTTP 200"), "{r}");
    // ... and from the device list, without picking the device first.
    b.eval("document.getElementById('toast').textContent = ''")
        .await;
    b.click("#tab-devices").await;
    b.click("#devices .row [data-switch=row-on]").await;
    let r = b
        .wait_for("(() => { const t = document.getElementById('toast').textContent; return t.includes('HTTP') && t; })()", 15)
        .await;
    assert!(r.as_str().unwrap().contains("HTTP 200"), "{r}");
    // The chart: each reading once (the listener's history and the live
    // events overlap), round ticks.
    let active = b
        .wait_for("(() => { const r = [...document.querySelectorAll('#devices .row')].find(r => r.textContent.includes('active')); return r && r.dataset.dev; })()", 20)
        .await;
    let id = active.as_str().unwrap().to_string();
    b.click(&format!("#devices .row[data-dev='{id}'] .id"))
        .await;
    b.wait_for(
        "Number(document.getElementById('chart')?.dataset.points) >= 4",
        20,
    )
    .await;
    let points = b
        .eval("Number(document.getElementById('chart').dataset.points)")
        .await
        .as_u64()
        .unwrap();
    let (_, body) = http(&l.addr(), "GET", &format!("/api/devices/{id}"), "", "");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let reports = v["reports"].as_u64().unwrap();
    assert!(
        points <= reports && points + 3 >= reports,
        "{points} points drawn for {reports} reports"
    );
    let yt = b
        .eval("document.getElementById('chart').dataset.yticks")
        .await;
    let yt: Vec<f64> = yt
        .as_str()
        .unwrap()
        .split('|')
        .map(|t| t.trim_end_matches(" W").parse().unwrap())
        .collect();
    let step = yt[1] - yt[0];
    let mant = step / 10f64.powf(step.log10().floor());
    assert!(
        [1.0, 2.0, 2.5, 5.0].iter().any(|m| (m - mant).abs() < 1e-9),
        "y step {step}: {yt:?}"
    );
    let xt = b
        .eval("document.getElementById('chart').dataset.xticks")
        .await;
    for t in xt.as_str().unwrap().split('|') {
        let ok = t == "now"
            || t.strip_prefix('-')
                .and_then(|r| r.strip_suffix(" s").or_else(|| r.strip_suffix(" min")))
                .is_some_and(|n| n.parse::<u32>().is_ok());
        assert!(ok, "x tick {t:?} in {xt}");
    }
    b.screenshot(&screenshot_path("inspector-1280.png")).await;
    let _ = dev.kill();
    let _ = dev.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_says_why_the_server_refused_it() {
    let Some(chrome) = chromium() else { return };
    let l = Listener::start(&["--quiet", "--no-console"]);
    let url = format!("http://127.0.0.1:{}/", l.port);
    let mut b = Browser::open(chrome, &url, 1280, 800).await;
    b.wait_for(
        "document.getElementById('status').textContent === 'live'",
        20,
    )
    .await;
    // What another machine's browser gets from /api/info (its peer is not
    // loopback; tests stay on loopback, so the answer is put in its place).
    b.call(
        "Fetch.enable",
        serde_json::json!({"patterns": [{"urlPattern": "*/api/info*"}]}),
    )
    .await;
    b.call("Page.reload", serde_json::json!({})).await;
    let paused = b.event("Fetch.requestPaused", 20).await;
    use base64::Engine;
    let body = r#"{"error":"the API answers loopback peers only; start listen with --api-token (or KINETID_API_TOKEN) to open it"}"#;
    b.call(
        "Fetch.fulfillRequest",
        serde_json::json!({
            "requestId": paused["requestId"],
            "responseCode": 403,
            "responseHeaders": [{"name": "Content-Type", "value": "application/json"}],
            "body": base64::engine::general_purpose::STANDARD.encode(body),
        }),
    )
    .await;
    let st = b
        .wait_for("(() => { const s = document.getElementById('status'); return s.className === 'bad' && s.textContent; })()", 20)
        .await;
    let st = st.as_str().unwrap();
    assert!(
        st.contains("HTTP 403") && st.contains("loopback peers only") && st.contains("--api-token"),
        "{st}"
    );
    let banner = b
        .eval("document.getElementById('banner').textContent")
        .await;
    assert!(
        banner.as_str().unwrap().contains("another machine"),
        "{banner}"
    );
}
