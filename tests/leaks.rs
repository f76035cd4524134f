//! Every long-running command gives back what it takes. `listen`, `proxy`
//! (plain and `--tls`) and `emulate-device` each go through rounds of
//! sessions that end every way a session can end: a clean Close both ways,
//! the device's FIN first, a reset, the server closing on a protocol
//! error, a refused upgrade, a head that never completes, a TLS handshake
//! that fails, an API request, a connection dropped at once, a cut. After
//! the rounds, open descriptors and tokio tasks (the
//! `kinetid_wsdump_tasks` gauge of each command's metrics) are back at
//! their baseline, and resident memory has not grown with the sessions.
//!
//! A baseline is the least of the figures sampled over a short window (a
//! reconnecting emulator is now connected, now waiting), taken after a
//! warm-up round so that one-time allocations (buffers, tables, the
//! allocator's arenas) are already in it.

mod common;
use common::*;
use std::io::{Read, Write};
use std::time::{Duration, Instant};

/// What a process holds.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Held {
    fds: usize,
    tasks: f64,
    rss_kib: u64,
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A metrics scrape over plain HTTP (no Origin: not a browser).
fn scrape(addr: &str, path: &str) -> String {
    let (status, body) = http(addr, "GET", path, "", "");
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// The least of each figure over `window`, sampled every 50 ms.
fn least(pid: u32, metrics: &dyn Fn() -> String, window: Duration) -> Held {
    let end = Instant::now() + window;
    let mut h = Held {
        fds: usize::MAX,
        tasks: f64::MAX,
        rss_kib: u64::MAX,
    };
    while Instant::now() < end {
        let tasks = metric(&metrics(), "kinetid_wsdump_tasks");
        h.fds = h.fds.min(fds(pid));
        h.tasks = h.tasks.min(tasks);
        h.rss_kib = h.rss_kib.min(proc_kib(pid, "VmRSS"));
        std::thread::sleep(Duration::from_millis(50));
    }
    h
}

/// Wait (10 s at most) until descriptors and tasks are back at `base`;
/// then check memory grew by no more than `rss_slack_kib`.
fn back_at(what: &str, pid: u32, metrics: &dyn Fn() -> String, base: Held, rss_slack_kib: u64) {
    let end = Instant::now() + Duration::from_secs(10);
    let mut now = least(pid, metrics, Duration::from_millis(300));
    while (now.fds > base.fds || now.tasks > base.tasks) && Instant::now() < end {
        now = least(pid, metrics, Duration::from_millis(300));
    }
    assert!(
        now.fds <= base.fds && now.tasks <= base.tasks,
        "{what}: descriptors or tasks not given back: baseline {base:?}, after the rounds {now:?}"
    );
    assert!(
        now.rss_kib <= base.rss_kib + rss_slack_kib,
        "{what}: resident memory grew with the sessions: baseline {base:?}, after {now:?}"
    );
    eprintln!("{what}: baseline {base:?}, after the rounds {now:?}");
}

/// Close a socket with a reset (SO_LINGER 0), as a device losing power
/// mid-write or a NAT dropping state does.
fn reset(s: std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a linger struct of the size given.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &l as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(s);
}

/// One session against a WebSocket server (listen, or a proxy in front of
/// it) that ends the way `kind` says.
fn session(addr: &str, kind: usize) {
    match kind {
        // Clean: the device closes, the server answers and closes TCP first.
        0 => {
            let mut s = raw_upgraded(addr);
            s.write_all(&client_frame(0x8, true, &1000u16.to_be_bytes()))
                .unwrap();
            assert_eq!(read_close_code(&mut s), Some(1000));
            read_all(&mut s);
        }
        // The device's FIN first, without a Close.
        1 => {
            let mut s = raw_upgraded(addr);
            s.shutdown(std::net::Shutdown::Write).unwrap();
            read_all(&mut s);
        }
        // A reset.
        2 => reset(raw_upgraded(addr)),
        // The server closes on a protocol error (an unmasked frame).
        3 => {
            let mut s = raw_upgraded(addr);
            s.write_all(b"\x81\x02hi").unwrap();
            assert_eq!(read_close_code(&mut s), Some(1002));
            read_all(&mut s);
        }
        // A refused upgrade (no such version).
        4 => {
            let mut s = raw(addr);
            s.write_all(
                upgrade_request("")
                    .replace("Version: 13", "Version: 99")
                    .as_bytes(),
            )
            .unwrap();
            let r = read_all(&mut s);
            assert!(!r.starts_with(b"HTTP/1.1 101"), "{r:?}");
        }
        // A head that never completes (the server's head timeout ends it).
        5 => {
            let mut s = raw(addr);
            s.write_all(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                .unwrap();
            read_all(&mut s);
        }
        // A connection dropped before it said anything.
        6 => drop(raw(addr)),
        // A page's request to the server's own API (kept out of view,
        // never among the device connections).
        8 => {
            let (status, _) = http(addr, "GET", "/api/devices", "", "");
            assert_eq!(status, 200);
        }
        // A device that says hello and closes after its welcome.
        _ => {
            let mut s = raw_upgraded(addr);
            s.write_all(&client_frame(
                0x1,
                true,
                hello("KN-0000000000AA", &[]).as_bytes(),
            ))
            .unwrap();
            let mut b = [0u8; 256];
            let _ = s.read(&mut b);
            s.write_all(&client_frame(0x8, true, &1000u16.to_be_bytes()))
                .unwrap();
            read_close_code(&mut s);
            read_all(&mut s);
        }
    }
}

const KINDS: usize = 9;

/// A clean session by a WebSocket client nobody here wrote.
fn tungstenite_session(url: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ws.close(None).await.unwrap();
        use futures_util::StreamExt;
        while let Some(Ok(_)) = ws.next().await {}
    });
}

fn rounds(addr: &str, url: &str, n: usize) {
    for _ in 0..n {
        for kind in 0..KINDS {
            session(addr, kind);
        }
        tungstenite_session(url);
    }
}

#[test]
fn listen_and_proxy_give_back_what_every_kind_of_ending_took() {
    let l = Listener::start(&["--quiet", "--no-console", "--head-timeout", "300ms"]);
    let p = Proxy::start(
        &l.url(),
        &["--quiet", "--no-console", "--head-timeout", "300ms"],
    );
    let (la, pa) = (l.addr(), format!("127.0.0.1:{}", p.port));
    let lm = || scrape(&la, "/metrics");
    let pm = || scrape(&pa, "/api/metrics");
    // Warm-up, then the baselines.
    rounds(&pa, &p.url(), 2);
    rounds(&la, &l.url(), 2);
    let window = Duration::from_millis(500);
    let (lb, pb) = (
        least(l.child.id(), &lm, window),
        least(p.child.id(), &pm, window),
    );
    // Through the proxy, then to listen directly.
    rounds(&pa, &p.url(), 10);
    rounds(&la, &l.url(), 10);
    back_at("proxy", p.child.id(), &pm, pb, 2048);
    back_at("listen", l.child.id(), &lm, lb, 2048);
    // The device that said hello through the proxy is listed offline.
    let (_, devices) = http(&pa, "GET", "/api/devices", "", "");
    let v: serde_json::Value = serde_json::from_str(&devices).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{devices}");
    assert_eq!(rows[0]["id"], "KN-0000000000AA");
    assert_eq!(rows[0]["online"], false, "{devices}");
    assert_eq!(metric(&pm(), "kinetid_wsdump_proxy_connections_open"), 1.0);
    p.stop();
    l.stop();
}

#[test]
fn the_proxy_ends_every_connection_and_says_so() {
    // Each ending leaves its `end` event: with --format json the proxy
    // prints one `open` and one `end` for every connection.
    let l = Listener::start(&["--quiet", "--no-console"]);
    let p = Proxy::start(
        &l.url(),
        &[
            "--no-console",
            "--format",
            "json",
            "--head-timeout",
            "300ms",
        ],
    );
    let pa = format!("127.0.0.1:{}", p.port);
    for kind in 0..KINDS {
        session(&pa, kind);
    }
    tungstenite_session(&p.url());
    // Give the last connection its moment, then stop.
    let pm = || scrape(&pa, "/api/metrics");
    let end = Instant::now() + Duration::from_secs(10);
    while metric(&pm(), "kinetid_wsdump_proxy_connections_open") > 1.0 && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let out = p.stop();
    l.stop();
    let ev = json_lines(&out);
    let count = |ty: &str| ev.iter().filter(|e| e["type"] == ty).count();
    // Every kind but the API request is a device connection, shown, and
    // the tungstenite session too.
    assert!(count("open") > KINDS - 1, "{out}");
    assert_eq!(
        count("end"),
        count("open"),
        "an open without its end:\n{out}"
    );
    // The device that dropped TCP without a Close is named as such.
    assert!(
        note_codes(&ev)
            .iter()
            .any(|c| c == "closed-without-close-frame"),
        "{out}"
    );
}

#[test]
fn a_tls_proxy_gives_back_failed_and_unfinished_handshakes() {
    let l = Listener::start(&["--quiet", "--no-console"]);
    let p = Proxy::start(
        &l.url(),
        &[
            "--quiet",
            "--no-console",
            "--tls",
            "--head-timeout",
            "300ms",
        ],
    );
    let pa = format!("127.0.0.1:{}", p.port);
    // The proxy's API is behind TLS here too; its descriptors and tasks
    // are read from /proc and the metrics of no scrape (tasks: 0 skipped).
    let none = String::new;
    let tls_rounds = |n: usize| {
        for _ in 0..n {
            // Plain HTTP to the TLS port.
            let mut s = raw(&pa);
            s.write_all(upgrade_request("").as_bytes()).unwrap();
            read_all(&mut s);
            // Garbage, a handshake never started, a reset.
            let mut s = raw(&pa);
            s.write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 0, 1, 2])
                .unwrap();
            read_all(&mut s);
            let mut s = raw(&pa);
            read_all(&mut s);
            reset(raw(&pa));
        }
    };
    tls_rounds(2);
    let base = least(p.child.id(), &none, Duration::from_millis(500));
    tls_rounds(15);
    back_at("proxy --tls", p.child.id(), &none, base, 2048);
    p.stop();
    l.stop();
}

#[test]
fn a_reconnecting_emulator_and_a_cutting_proxy_give_back_every_session() {
    let l = Listener::start(&["--quiet", "--no-console"]);
    let p = Proxy::start(&l.url(), &["--quiet", "--no-console", "--cut-after", "3f"]);
    let pa = format!("127.0.0.1:{}", p.port);
    let mut emu = std::process::Command::new(bin())
        .args(["emulate-device", "--url", &p.url(), "--interval", "200ms"])
        .args(["--metrics-bind", "127.0.0.1:0", "--color", "never"])
        .args(["--duration", "60s", "--seed", "7"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(emu.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("metrics on http://") {
        line.clear();
        use std::io::BufRead;
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "emulator said nothing"
        );
    }
    let ea = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap()
        .to_string();
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    let em = || scrape(&ea, "/metrics");
    let pm = || scrape(&pa, "/api/metrics");
    let connects = || metric(&em(), "kinetid_wsdump_emulator_connects_total");
    let wait_connects = |n: f64| {
        let end = Instant::now() + Duration::from_secs(40);
        while connects() < n {
            assert!(Instant::now() < end, "the emulator stopped reconnecting");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // Each session: hello, welcome, report, then cut; the emulator waits
    // its back-off (1 s, reset after each welcome) and comes back.
    wait_connects(3.0);
    let window = Duration::from_millis(1500);
    let (eb, pb) = (
        least(emu.id(), &em, window),
        least(p.child.id(), &pm, window),
    );
    wait_connects(connects() + 8.0);
    back_at("emulate-device", emu.id(), &em, eb, 2048);
    back_at("proxy --cut-after", p.child.id(), &pm, pb, 2048);
    let reconnects = metric(&em(), "kinetid_wsdump_emulator_reconnects_total");
    assert!(reconnects >= 8.0, "reconnects {reconnects}");
    let _ = emu.kill();
    let _ = emu.wait();
    p.stop();
    l.stop();
}
