//! Client stacks nobody here wrote, each played as a Kinetid plug against
//! `listen` (and two of them through `proxy`): Node's `ws` with and
//! without permessage-deflate, Go's gorilla/websocket and libwebsockets
//! (tests/peers/, built by scripts/setup-peers.sh). Their standard exchange
//! raises no warning and no error; what they really get wrong is found:
//! gorilla/websocket on Debian's Go takes its masking keys from an
//! unseeded generator, so every run of a device sends the same keys, and a
//! libwebsockets client given a Host without the port sends it so. The
//! listener gives back every descriptor and task afterwards.

mod common;
use common::*;
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// A peer program under target/, or `None` (a failure under CI, where
/// scripts/setup-peers.sh must have built it).
fn peer(rel: &str) -> Option<PathBuf> {
    let p = root().join(rel);
    if p.exists() {
        return Some(p);
    }
    assert!(
        std::env::var("CI").is_err(),
        "{rel} is missing under CI: scripts/setup-peers.sh must build it"
    );
    eprintln!("SKIPPED: {rel} is not set up (scripts/setup-peers.sh does it)");
    None
}

/// Run a peer device to its end (10 s at most, it times out on its own).
fn run(cmd: &mut Command, what: &str) {
    let o = cmd.output().unwrap();
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

fn node(url: &str, dev: &str, deflate: bool) -> Option<Command> {
    let modules = peer("target/peers-node/node_modules/ws")?;
    let mut c = Command::new("node");
    c.env("NODE_PATH", modules.parent().unwrap())
        .arg(root().join("tests/peers/ws-device.js"))
        .args([url, dev]);
    if deflate {
        c.arg("deflate");
    }
    Some(c)
}

fn gorilla(url: &str, dev: &str, first_seq: u32) -> Option<Command> {
    let mut c = Command::new(peer("target/peers/bin/gorilla-device")?);
    c.args([url, dev, &first_seq.to_string()]);
    Some(c)
}

fn lws(port: u16, dev: &str, host: Option<&str>) -> Option<Command> {
    let mut c = Command::new(peer("target/peers/bin/lws-device")?);
    c.args(["127.0.0.1", &port.to_string(), "/ws", dev]);
    if let Some(h) = host {
        c.arg(h);
    }
    Some(c)
}

/// Every warning and error note, with its connection.
fn alarms(ev: &[Value]) -> Vec<String> {
    ev.iter()
        .flat_map(|e| {
            let conn = e["conn"].clone();
            e["notes"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(move |n| (conn.clone(), n))
        })
        .filter(|(_, n)| n["severity"] != "info")
        .map(|(c, n)| format!("conn {c}: {}: {}", n["code"], n["message"]))
        .collect()
}

fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn tasks(addr: &str) -> f64 {
    let (status, body) = http(addr, "GET", "/metrics", "", "");
    assert_eq!(status, 200, "{body}");
    metric(&body, "kinetid_wsdump_tasks")
}

#[test]
fn real_stacks_raise_nothing_on_their_exchange_and_their_real_faults_are_found() {
    let l = Listener::start(&[
        "--format",
        "json",
        "--no-console",
        "--ping-interval",
        "200ms",
    ]);
    let pid = l.child.id();
    let base = (fds(pid), tasks(&l.addr()));
    let url = l.url();
    // The standard exchange of each stack: hello, reports and their acks,
    // the listener's pings answered, a Close 1000.
    let mut ran = Vec::new();
    let devices: Vec<(&str, Option<Command>)> = vec![
        ("node ws", node(&url, "KN-00000000D001", false)),
        ("node ws + deflate", node(&url, "KN-00000000D002", true)),
        ("gorilla", gorilla(&url, "KN-00000000D003", 1)),
        (
            "libwebsockets",
            lws(l.port, "KN-00000000D004", Some(&l.addr())),
        ),
    ];
    for (what, cmd) in devices {
        if let Some(mut c) = cmd {
            run(&mut c, what);
            ran.push(what);
        }
    }
    // Two of them through the proxy, in front of a second listener.
    let up = Listener::start(&["--format", "json", "--no-console"]);
    let p = Proxy::start(&up.url(), &["--format", "json", "--no-console"]);
    for (what, cmd) in [
        (
            "node ws via proxy",
            node(&p.url(), "KN-00000000D005", false),
        ),
        ("gorilla via proxy", gorilla(&p.url(), "KN-00000000D006", 1)),
    ] {
        if let Some(mut c) = cmd {
            run(&mut c, what);
            ran.push(what);
        }
    }
    let (proxied, upstream) = (p.stop(), up.stop());
    for (who, out) in [("proxy", &proxied), ("listen behind it", &upstream)] {
        let ev = json_lines(out);
        assert!(alarms(&ev).is_empty(), "{who}: {:#?}", alarms(&ev));
    }
    // The listener gave back what the sessions took. Each scrape of the
    // task count is itself a connection, so the descriptors are counted
    // a moment after it (its socket closing is not a leak), and the least
    // of a few samples is what is compared.
    let sample = || {
        let t = tasks(&l.addr());
        std::thread::sleep(Duration::from_millis(50));
        (fds(pid), t)
    };
    let least = || {
        (0..4)
            .map(|_| sample())
            .fold((usize::MAX, f64::MAX), |(f, t), (f2, t2)| {
                (f.min(f2), t.min(t2))
            })
    };
    let end = Instant::now() + Duration::from_secs(10);
    let mut now = least();
    while (now.0 > base.0 || now.1 > base.1) && Instant::now() < end {
        now = least();
    }
    assert!(
        now.0 <= base.0 && now.1 <= base.1,
        "descriptors {} (were {}), tasks {} (were {})",
        now.0,
        base.0,
        now.1,
        base.1
    );
    let out = l.stop();
    let ev = json_lines(&out);
    assert!(alarms(&ev).is_empty(), "{ran:?}: {:#?}", alarms(&ev));
    let opens = ev.iter().filter(|e| e["type"] == "open").count();
    assert_eq!(opens, ran.iter().filter(|r| !r.contains("proxy")).count());
    // The deflate run did negotiate it (Node's ws offers it when asked).
    if ran.contains(&"node ws + deflate") {
        assert!(out.contains("permessage-deflate"), "no deflate negotiated");
    }

    // What these stacks really get wrong, found.
    let l = Listener::start(&["--format", "json", "--no-console"]);
    let url = l.url();
    let mut want = Vec::new();
    // The same gorilla device run twice (its seq counting on): the same
    // masking keys on both connections.
    if let (Some(mut a), Some(mut b)) = (
        gorilla(&url, "KN-00000000D007", 1),
        gorilla(&url, "KN-00000000D007", 4),
    ) {
        run(&mut a, "gorilla, first run");
        run(&mut b, "gorilla, second run");
        want.push("mask-keys-repeat-across-connections");
    }
    // libwebsockets told to send Host without the port.
    if let Some(mut c) = lws(l.port, "KN-00000000D008", Some("127.0.0.1")) {
        run(&mut c, "libwebsockets, Host without port");
        want.push("hint-host-without-port");
    }
    let ev = json_lines(&l.stop());
    let mut got: Vec<String> = alarms(&ev)
        .iter()
        .map(|a| a.split('"').nth(1).unwrap_or("").to_string())
        .collect();
    got.sort();
    let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(got, want, "{:#?}", alarms(&ev));
}
