//! The listener against hostile web pages, hostile devices, stalled
//! terminals and crashes (docs/security.md), and the small things a
//! newcomer trips over.

mod common;

use common::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const DEV: &str = "KN-A4CF12F0E1B2";

/// A raw device: upgraded, hello sent, welcome read.
fn device(addr: &str, id: &str) -> TcpStream {
    let mut s = raw_upgraded(addr);
    s.write_all(&client_frame(1, true, hello(id, &[]).as_bytes()))
        .unwrap();
    let f = read_text(&mut s).expect("welcome");
    assert!(f.contains("welcome"), "{f}");
    s
}

/// Read one server text frame (unmasked, short) from a raw socket.
fn read_text(s: &mut TcpStream) -> Option<String> {
    let mut h = [0u8; 2];
    loop {
        s.read_exact(&mut h).ok()?;
        let mut len = (h[1] & 0x7f) as usize;
        if len == 126 {
            let mut e = [0u8; 2];
            s.read_exact(&mut e).ok()?;
            len = u16::from_be_bytes(e) as usize;
        }
        let mut p = vec![0u8; len];
        s.read_exact(&mut p).ok()?;
        if h[0] & 0x0f == 1 {
            return Some(String::from_utf8_lossy(&p).into_owned());
        }
    }
}

/// Serve one HTML page on another loopback port (another origin).
fn evil_site(page: String) -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming().take(20) {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
    port
}

#[test]
fn a_page_on_another_origin_cannot_switch_a_plug() {
    let Some(chromium) = chromium() else { return };
    // --show-http: the requests the page made are judged from the output.
    let l = Listener::start(&["--format", "json", "--no-console", "--show-http"]);
    let mut dev = device(&l.addr(), DEV);
    dev.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let target = format!("http://127.0.0.1:{}/api/devices/{DEV}/switch", l.port);
    let page = format!(
        r#"<!doctype html><html><body><div id="r">start</div>
<iframe name="sink"></iframe>
<form id="f" method="POST" enctype="text/plain" target="sink" action="{target}"><input name='{{"on":false,"x":"' value='"}}'></form>
<script>
const r = document.getElementById("r");
fetch("{target}", {{method: "POST", mode: "no-cors", body: '{{"on":false}}'}})
  .then(() => r.textContent += " no-cors-sent", () => r.textContent += " no-cors-failed");
fetch("{target}", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: '{{"on":false}}'}})
  .then(x => r.textContent += " cors-" + x.status, () => r.textContent += " cors-blocked");
setTimeout(() => document.getElementById("f").submit(), 300);
</script></body></html>"#
    );
    let evil = evil_site(page);
    let dom = chromium_dom(chromium, &format!("http://127.0.0.1:{evil}/"), 4000);
    assert!(
        dom.contains("no-cors-sent"),
        "the attack did not run: {dom}"
    );
    assert!(dom.contains("cors-blocked"), "{dom}");
    // The device never heard a switch.
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_millis(600) {
        if let Some(t) = read_text(&mut dev) {
            panic!("the device received {t}");
        }
    }
    let (st, body) = http(&l.addr(), "GET", &format!("/api/devices/{DEV}"), "", "");
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["on"],
        Value::Null
    );
    let ev = json_lines(&l.stop());
    let requests: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "request" && e["websocket"] == false)
        .collect();
    let posts = requests
        .iter()
        .filter(|e| {
            e["head"]["start_line"]
                .as_str()
                .unwrap()
                .starts_with("POST /api/devices/")
        })
        .count();
    assert!(
        posts >= 2,
        "the no-cors fetch and the form reached the listener: {posts}"
    );
    let attacks: Vec<&&Value> = requests
        .iter()
        .filter(|e| {
            !e["head"]["start_line"]
                .as_str()
                .unwrap()
                .starts_with("GET ")
        })
        .collect();
    let statuses: Vec<u64> = ev
        .iter()
        .filter(|e| e["type"] == "response" && attacks.iter().any(|r| r["conn"] == e["conn"]))
        .filter_map(|e| e["status"].as_u64())
        .collect();
    assert!(
        statuses.iter().all(|s| *s == 403 || *s == 415),
        "{statuses:?}"
    );
    assert!(statuses.len() >= 2, "{statuses:?}");
}

#[test]
fn rebinding_hosts_foreign_origins_forms_and_preflights_are_refused() {
    let l = Listener::start(&["--format", "summary", "--no-console"]);
    let a = l.addr();
    let _dev = device(&a, DEV);
    let sw = format!("/api/devices/{DEV}/switch");
    let body = r#"{"on":false}"#;
    let cases: &[(&str, &str, &str, u16)] = &[
        ("POST", &sw, "Host: evil.example:8080\r\n", 421),
        ("GET", "/api/devices", "Host: evil.example\r\n", 421),
        ("GET", "/", "Host: evil.example\r\n", 421),
        ("POST", &sw, "Origin: http://evil.example\r\n", 403),
        ("POST", &sw, "Origin: null\r\n", 403),
        ("POST", &sw, "Sec-Fetch-Site: cross-site\r\n", 403),
        ("POST", &sw, "Content-Type: text/plain\r\n", 415),
        (
            "POST",
            &sw,
            "Content-Type: application/x-www-form-urlencoded\r\n",
            415,
        ),
        (
            "OPTIONS",
            &sw,
            "Origin: http://evil.example\r\nAccess-Control-Request-Method: POST\r\n",
            403,
        ),
    ];
    for (m, p, h, want) in cases {
        // The helper sends Host: 127.0.0.1:PORT; a second Host header is a 400,
        // so rebinding cases speak raw HTTP.
        let got = if h.starts_with("Host:") {
            let mut s = raw(&a);
            write!(s, "{m} {p} HTTP/1.1\r\n{h}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
            let r = String::from_utf8_lossy(&read_all(&mut s)).to_string();
            r.split(' ')
                .nth(1)
                .and_then(|x| x.parse().ok())
                .unwrap_or(0)
        } else {
            http(&a, m, p, h, body).0
        };
        assert_eq!(got, *want, "{m} {p} with {h:?}");
    }
    // The same page, same origin, is served.
    let (st, _) = http(
        &a,
        "POST",
        &sw,
        &format!("Origin: http://{a}\r\n"),
        r#"{"toggle":true}"#,
    );
    assert_eq!(st, 504, "same-origin request reaches the (silent) device");
    // A WebSocket upgrade from a browser page elsewhere is refused; devices send no Origin.
    let mut s = raw(&a);
    s.write_all(upgrade_request("Origin: http://evil.example\r\n").as_bytes())
        .unwrap();
    let r = String::from_utf8_lossy(&read_all(&mut s)).to_string();
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let mut s = raw(&a);
    s.write_all(
        upgrade_request(&format!("Origin: http://{a}\r\n"))
            .replace("Host: 127.0.0.1\r\n", &format!("Host: {a}\r\n"))
            .as_bytes(),
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    // HEAD / has headers and no body.
    let mut s = raw(&a);
    write!(s, "HEAD / HTTP/1.1\r\nHost: {a}\r\n\r\n").unwrap();
    let r = String::from_utf8_lossy(&read_all(&mut s)).to_string();
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    assert!(r.ends_with("\r\n\r\n"), "HEAD answered with a body: {r:?}");
    assert!(r.contains("Content-Length: ") && !r.contains("Content-Length: 0\r\n"));
}

#[test]
fn api_tokens_from_env_and_file_any_case_and_never_empty() {
    let l = Listener::start_env(
        &["--no-console", "--quiet"],
        &[("KINETID_API_TOKEN", "s3cret")],
    );
    let a = l.addr();
    assert_eq!(http(&a, "GET", "/api/devices", "", "").0, 401);
    assert_eq!(
        http(
            &a,
            "GET",
            "/api/devices",
            "Authorization: Bearer s3creT\r\n",
            ""
        )
        .0,
        401
    );
    assert_eq!(
        http(
            &a,
            "GET",
            "/api/devices",
            "Authorization: Bearer s3cret\r\n",
            ""
        )
        .0,
        200
    );
    assert_eq!(
        http(
            &a,
            "GET",
            "/api/devices",
            "Authorization: bearer s3cret\r\n",
            ""
        )
        .0,
        200
    );
    drop(l);
    let f = std::env::temp_dir().join(format!("kwd-token-{}", std::process::id()));
    std::fs::write(&f, "from-file\n").unwrap();
    let l = Listener::start(&[
        "--no-console",
        "--quiet",
        "--api-token-file",
        f.to_str().unwrap(),
    ]);
    assert_eq!(
        http(
            &l.addr(),
            "GET",
            "/api/devices",
            "Authorization: Bearer from-file\r\n",
            ""
        )
        .0,
        200
    );
    drop(l);
    std::fs::remove_file(&f).ok();
    for args in [&["--api-token", ""][..], &["--api-token", "  "][..]] {
        let o = Command::new(bin())
            .args(["listen", "--bind", "127.0.0.1:0", "--no-console"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("empty"));
    }
}

#[test]
fn ipv4_clients_of_a_dual_stack_listener_are_loopback() {
    let mut child = Command::new(bin())
        .args(["listen", "--bind", "[::]:0", "--no-console", "--quiet"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let mut err = child.stderr.take().unwrap();
    let mut b = [0u8; 1];
    while !first.ends_with('\n') && err.read(&mut b).unwrap_or(0) == 1 {
        first.push(b[0] as char);
    }
    let port = first
        .split("]:")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .unwrap();
    let r = std::panic::catch_unwind(|| {
        http(&format!("127.0.0.1:{port}"), "GET", "/api/devices", "", "").0
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(r.unwrap(), 200, "an IPv4-mapped loopback peer is loopback");
}

#[test]
fn a_stalled_stdout_neither_freezes_devices_nor_blocks_sigterm() {
    // stdout is a pipe nobody reads: after 64 KiB the writer blocks for good.
    let mut child = Command::new(bin())
        .args([
            "listen",
            "--bind",
            "127.0.0.1:0",
            "--no-console",
            "--color",
            "never",
            "--max-dump",
            "8192",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _stdout = child.stdout.take();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for l in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    let addr = first
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string();
    // Far more output than the pipe and the output queue hold: 400 reports
    // of 4 KiB, each several screens of hex dump.
    let mut s = device(&addr, DEV);
    let pad = "x".repeat(4000);
    for i in 0..400 {
        let r = format!(
            r#"{{"t":"report","id":{},"dev":"{DEV}","ts":1767225660,"seq":{i},"on":true,"power_w":1.0,"energy_wh":{i}.0,"pad":"{pad}"}}"#,
            i + 2
        );
        s.write_all(&client_frame(1, true, r.as_bytes())).unwrap();
        let ack = read_text(&mut s).expect("ack while stdout is stalled");
        assert!(ack.contains("\"ack\""), "{ack}");
    }
    // New devices and the API are still served at once.
    let t0 = Instant::now();
    let _other = device(&addr, "KN-00000000CAFE");
    assert_eq!(http(&addr, "GET", "/api/devices", "", "").0, 200);
    assert!(t0.elapsed() < Duration::from_secs(2));
    let dropped = (0..50).find_map(|_| {
        rx.recv_timeout(Duration::from_millis(100))
            .ok()
            .filter(|l| l.contains("lines dropped"))
    });
    assert!(dropped.is_some(), "no notice that output was dropped");
    // SIGTERM ends it within the grace, stdout still stalled.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(8),
            "SIGTERM ignored with stdout stalled"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(st.success(), "{st}");
}

#[test]
fn escape_sequences_from_a_device_reach_the_terminal_spelled_out() {
    let l = Listener::start(&["--no-console", "--lenient"]);
    let mut s = raw_upgraded(&l.addr());
    let evil = "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m\u{202e}gnp.exe";
    let hello =
        serde_json::json!({"t":"hello","id":1,"dev":DEV,"fw":evil,"role":evil,"period_s":60})
            .to_string();
    s.write_all(&client_frame(1, true, hello.as_bytes()))
        .unwrap();
    read_text(&mut s).unwrap();
    let unknown = serde_json::json!({"t":evil,"id":2}).to_string();
    s.write_all(&client_frame(1, true, unknown.as_bytes()))
        .unwrap();
    read_text(&mut s).unwrap();
    let mut close = 1000u16.to_be_bytes().to_vec();
    close.extend_from_slice(evil.as_bytes());
    s.write_all(&client_frame(8, true, &close)).unwrap();
    read_close_code(&mut s);
    std::thread::sleep(Duration::from_millis(200));
    let out = l.stop();
    for bad in ['\u{1b}', '\u{7}', '\u{9b}', '\u{202e}'] {
        assert!(!out.contains(bad), "raw {:?} in the text output", bad);
    }
    assert!(out.contains("\\u{1b}]0;pwned\\u{7}"), "{out}");
    assert!(out.contains("\\u{202e}gnp.exe"));
}

#[test]
fn a_second_hello_with_a_live_id_replaces_the_first_with_4001() {
    let l = Listener::start(&["--no-console", "--format", "json"]);
    let a = l.addr();
    let mut first = device(&a, DEV);
    let mut second = device(&a, DEV);
    assert_eq!(read_close_code(&mut first), Some(4001));
    // Commands now go to the newer connection.
    let a2 = a.clone();
    let api = std::thread::spawn(move || {
        http(
            &a2,
            "POST",
            &format!("/api/devices/{DEV}/switch"),
            "",
            r#"{"on":false}"#,
        )
    });
    let sw = read_text(&mut second).unwrap();
    assert!(sw.contains("\"switch\""), "{sw}");
    let id = serde_json::from_str::<Value>(&sw).unwrap()["id"].clone();
    let state = serde_json::json!({"t":"state","re":id,"dev":DEV,"on":false,"was_on":true,"src":"backend","ts":1});
    second
        .write_all(&client_frame(1, true, state.to_string().as_bytes()))
        .unwrap();
    assert_eq!(api.join().unwrap().0, 200);
    // A relayed report cannot claim ids: not for another plug's id, not an invalid one.
    let spoof = serde_json::json!({"t":"report","id":5,"dev":"\u{1b}[2Jfake","via":DEV,"seq":1});
    second
        .write_all(&client_frame(1, true, spoof.to_string().as_bytes()))
        .unwrap();
    read_text(&mut second).unwrap();
    let other = serde_json::json!({"t":"report","id":6,"dev":"KN-00000000BEEF","via":"KN-111111111111","seq":1});
    second
        .write_all(&client_frame(1, true, other.to_string().as_bytes()))
        .unwrap();
    read_text(&mut second).unwrap();
    let (_, body) = http(&a, "GET", "/api/devices", "", "");
    let ids: Vec<String> = serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, vec![DEV.to_string()]);
    let ev = json_lines(&l.stop());
    let notes: Vec<(u64, String)> = ev
        .iter()
        .filter(|e| e["type"] == "note")
        .map(|e| {
            (
                e["conn"].as_u64().unwrap(),
                e["notes"][0]["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(notes.contains(&(1, "device-replaced".into())), "{notes:?}");
    assert!(
        notes.contains(&(2, "device-id-duplicate".into())),
        "{notes:?}"
    );
}

#[test]
fn sigkill_mid_burst_loses_no_frame_the_device_received() {
    let dir = std::env::temp_dir().join(format!("kwd-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("burst.cap");
    let mut l = Listener::start(&["--no-console", "--quiet", "--record", rec.to_str().unwrap()]);
    let mut s = raw(&l.addr());
    s.write_all(upgrade_request("").as_bytes()).unwrap();
    s.write_all(&client_frame(1, true, hello(DEV, &[]).as_bytes()))
        .unwrap();
    for i in 0..200 {
        let r = format!(
            r#"{{"t":"report","id":{},"dev":"{DEV}","ts":1,"seq":{i},"on":true,"power_w":1.0,"energy_wh":1.0}}"#,
            i + 2
        );
        s.write_all(&client_frame(1, true, r.as_bytes())).unwrap();
    }
    // Read what the server sent until about half the acks are in, then kill it.
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while got.windows(5).filter(|w| w == b"\"ack\"").count() < 100 {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0);
        got.extend_from_slice(&buf[..n]);
    }
    l.child.kill().unwrap();
    l.child.wait().unwrap();
    // Whatever else was already in flight to us counts too.
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let text = std::fs::read_to_string(&rec).unwrap();
    let mut recorded = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() == 4 && f[2] == "s2c" {
            recorded.extend_from_slice(&hex::decode(f[3]).unwrap());
        }
    }
    assert!(
        recorded.len() >= got.len() && recorded[..got.len()] == got[..],
        "the capture holds {} server bytes, the device received {}",
        recorded.len(),
        got.len()
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_device_that_stops_reading_is_dropped_after_the_write_timeout() {
    let l = Listener::start(&[
        "--no-console",
        "--format",
        "summary",
        "--echo",
        "--write-timeout",
        "1s",
    ]);
    let s = raw_upgraded(&l.addr());
    // Send 1 MiB messages to echo and never read the echoes.
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    let writer = std::thread::spawn(move || {
        let m = client_frame(2, true, &vec![7u8; 1 << 20]);
        for _ in 0..64 {
            if w.write_all(&m).is_err() {
                return;
            }
        }
    });
    let _ = writer.join();
    // Served again at once.
    let mut d = raw_upgraded(&l.addr());
    d.write_all(&client_frame(1, true, b"still there?"))
        .unwrap();
    assert_eq!(read_text(&mut d).as_deref(), Some("still there?"));
    let out = l.stop();
    assert!(out.contains("error:write-timeout"), "{out}");
}

#[test]
fn commands_beyond_the_queue_are_answered_503_not_left_hanging() {
    let l = Listener::start(&[
        "--no-console",
        "--quiet",
        "--write-timeout",
        "30s",
        "--reply-timeout",
        "2s",
    ]);
    let a = l.addr();
    let s = device(&a, DEV);
    // Make the server's writes block: pings it must answer, never read back.
    let mut w = s.try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    std::thread::spawn(move || {
        let p = client_frame(9, true, &[0x55; 125]);
        let burst: Vec<u8> = p.iter().copied().cycle().take(p.len() * 1000).collect();
        for _ in 0..200 {
            if w.write_all(&burst).is_err() {
                return;
            }
        }
    });
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    let hs: Vec<_> = (0..100)
        .map(|_| {
            let a = a.clone();
            std::thread::spawn(move || {
                http(
                    &a,
                    "POST",
                    &format!("/api/devices/{DEV}/switch"),
                    "",
                    r#"{"on":true}"#,
                )
                .0
            })
        })
        .collect();
    let codes: Vec<u16> = hs.into_iter().map(|h| h.join().unwrap()).collect();
    assert!(t0.elapsed() < Duration::from_secs(10), "requests hung");
    assert!(codes.contains(&503), "{codes:?}");
    assert!(codes.iter().all(|c| *c == 503 || *c == 504), "{codes:?}");
    drop(s);
}

#[test]
fn memory_is_bounded_and_given_back() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = Listener::start(&[
        "--no-console",
        "--quiet",
        "--max-buffered",
        "256MiB",
        "--frame-timeout",
        "3s",
    ]);
    let pid = l.child.id();
    let addr = l.addr();
    std::thread::sleep(Duration::from_millis(300));
    let base = proc_kib(pid, "VmRSS");
    let rt = tokio::runtime::Runtime::new().unwrap();
    // 2,000 connections, each sending one 1 MiB frame, 500 at a time.
    let frame = std::sync::Arc::new(client_frame(2, true, &vec![1u8; 1 << 20]));
    let up = upgrade_request("");
    rt.block_on(async {
        let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(500));
        let mut hs = Vec::new();
        for _ in 0..2000 {
            let (f, a, up, p) = (
                frame.clone(),
                addr.clone(),
                up.clone(),
                sem.clone().acquire_owned().await.unwrap(),
            );
            hs.push(tokio::spawn(async move {
                let _p = p;
                let Ok(mut s) = tokio::net::TcpStream::connect(&a).await else {
                    return;
                };
                let _ = s.write_all(up.as_bytes()).await;
                let _ = tokio::time::timeout(Duration::from_secs(10), s.write_all(&f)).await;
                let mut b = [0u8; 512];
                let _ = tokio::time::timeout(Duration::from_millis(50), s.read(&mut b)).await;
            }));
        }
        for h in hs {
            let _ = h.await;
        }
    });
    let peak = proc_kib(pid, "VmHWM");
    // 100 connections each holding a 16 MiB frame one byte short.
    let big = std::sync::Arc::new(client_frame(2, true, &vec![2u8; 16 << 20]));
    let closes = rt.block_on(async {
        let mut hs = Vec::new();
        for _ in 0..100 {
            let (f, a, up) = (big.clone(), addr.clone(), up.clone());
            hs.push(tokio::spawn(async move {
                let mut s = tokio::net::TcpStream::connect(&a).await.ok()?;
                s.write_all(up.as_bytes()).await.ok()?;
                let _ =
                    tokio::time::timeout(Duration::from_secs(8), s.write_all(&f[..f.len() - 1]))
                        .await;
                let mut got = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(8), s.read_to_end(&mut got)).await;
                // The Close is the last frame: 0x88, length, code.
                let i = got.windows(2).rposition(|w| w[0] == 0x88)?;
                got.get(i + 2..i + 4)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
            }));
        }
        let mut v = Vec::new();
        for h in hs {
            v.push(h.await.ok().flatten());
        }
        v
    });
    let peak_big = proc_kib(pid, "VmHWM");
    std::thread::sleep(Duration::from_millis(1500));
    let after = proc_kib(pid, "VmRSS");
    eprintln!("RSS baseline {base} KiB, peak after 2000 x 1 MiB {peak} KiB, peak after 100 x 16 MiB {peak_big} KiB, after all left {after} KiB; closes {closes:?}");
    assert!(
        closes.iter().all(|c| matches!(c, Some(1013) | Some(1008))),
        "{closes:?}"
    );
    assert!(closes.contains(&Some(1013)), "{closes:?}");
    assert!(peak_big < 640 * 1024, "peak RSS {peak_big} KiB");
    assert!(
        after < base + 32 * 1024,
        "RSS {after} KiB after the peers left (baseline {base})"
    );
}

#[test]
fn console_survives_bad_lines_and_checks_what_it_sends() {
    let mut l = Listener::start_with_stdin(&["--console", "--quiet"], Stdio::piped());
    let mut s = device(&l.addr(), DEV);
    let mut stdin = l.child.stdin.take().unwrap();
    stdin.write_all(b"\xff\xfe bad\n").unwrap();
    assert!(l
        .stderr_until("not valid UTF-8", Duration::from_secs(5))
        .is_some());
    writeln!(stdin, "close {DEV} 99999").unwrap();
    assert!(l
        .stderr_until("cannot be sent", Duration::from_secs(5))
        .is_some());
    writeln!(stdin, "close {DEV} 4000 bye").unwrap();
    assert!(l
        .stderr_until("close 4000 sent", Duration::from_secs(5))
        .is_some());
    assert_eq!(read_close_code(&mut s), Some(4000));
    writeln!(stdin, "ping {DEV}").unwrap();
    assert!(l.stderr_until("closing", Duration::from_secs(5)).is_some());
    writeln!(stdin, "devices").unwrap();
    assert!(l.stderr_until(DEV, Duration::from_secs(5)).is_some());
}

#[test]
fn sizes_take_units_and_a_failed_emulator_says_so() {
    let l = Listener::start(&[
        "--no-console",
        "--quiet",
        "--max-frame",
        "16MiB",
        "--max-message",
        "64KiB",
        "--max-head",
        "8KiB",
    ]);
    drop(l);
    let o = Command::new(bin())
        .args([
            "-v",
            "emulate-device",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--duration",
            "1500ms",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no plug ever connected"), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "colour codes in a redirected stderr: {err:?}"
    );
}

#[test]
fn replay_reads_stdin_numbers_connections_across_files_and_refuses_empty_files() {
    let fx = root().join("fixtures/bug-zero-mask.hex");
    let mut c = Command::new(bin())
        .args(["replay", "--format", "summary", "-"])
        .arg(&fx)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&fx).unwrap())
        .unwrap();
    let o = c.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("# standard input\n1 c2s"), "{out}");
    assert!(out.contains(&format!("# {}\n2 c2s", fx.display())), "{out}");
    let empty = std::env::temp_dir().join(format!("kwd-empty-{}.hex", std::process::id()));
    std::fs::write(&empty, "").unwrap();
    let o = Command::new(bin())
        .arg("replay")
        .arg(&empty)
        .output()
        .unwrap();
    std::fs::remove_file(&empty).ok();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("empty file"));
}
