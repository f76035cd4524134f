//! `emulate-device` against `listen` and against a tokio-tungstenite server.
#![allow(clippy::result_large_err)]

mod common;
use common::*;
use futures_util::{SinkExt, StreamExt};
use kinetid_wsdump::engine::quirk::Quirk;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

fn emulator(args: &[&str]) -> Command {
    let mut c = Command::new(bin());
    c.arg("emulate-device").args(args).stdin(Stdio::null());
    c
}

#[test]
fn a_home_reports_and_its_passive_plug_is_switched_through_the_api() {
    let l = Listener::start(&["--format", "json", "--no-console"]);
    let url = l.url();
    let stats = std::env::temp_dir().join(format!("kwd-emu-{}.json", std::process::id()));
    let mut emu = emulator(&[
        "--url",
        &url,
        "--interval",
        "500ms",
        "--passive",
        "2",
        "--seed",
        "7",
        "--duration",
        "4s",
        "--stats-json",
        stats.to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let (st, body) = http(&l.addr(), "GET", "/api/devices", "", "");
    assert_eq!(st, 200);
    let devices: Value = serde_json::from_str(&body).unwrap();
    let devices = devices.as_array().unwrap();
    assert_eq!(devices.len(), 3, "{body}");
    let active = devices.iter().find(|d| d["role"] == "active").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let passive = devices.iter().find(|d| d["role"] == "passive").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (st, body) = http(
        &l.addr(),
        "POST",
        &format!("/api/devices/{passive}/switch"),
        "",
        r#"{"on":false}"#,
    );
    assert_eq!(st, 200, "{body}");
    let (st, body) = http(
        &l.addr(),
        "POST",
        &format!("/api/devices/{active}/switch"),
        "",
        r#"{"on":false}"#,
    );
    assert_eq!(st, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (v["on"].as_bool(), v["was_on"].as_bool(), v["src"].as_str()),
        (Some(false), Some(true), Some("backend"))
    );
    // Unknown device in the home: not_found from the plug, 502 from the API.
    assert!(emu.wait().unwrap().success());
    let out = l.stop();
    let ev = json_lines(&out);
    let reports: Vec<&Value> = ev
        .iter()
        .filter(|e| e["type"] == "message" && e["kinetid"]["t"] == "report")
        .collect();
    assert!(reports.len() >= 9, "{} reports", reports.len());
    // After the switches, reports of both plugs say off and 0 W.
    let text: Vec<String> = reports
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    let last_of = |dev: &str| {
        text.iter()
            .rev()
            .map(|t| serde_json::from_str::<Value>(t).unwrap())
            .find(|v| v["dev"] == dev)
            .unwrap()
    };
    for dev in [&active, &passive] {
        let r = last_of(dev);
        assert_eq!(
            (r["on"].as_bool(), r["power_w"].as_f64()),
            (Some(false), Some(0.0)),
            "{r}"
        );
    }
    assert_eq!(last_of(&passive)["via"], active.as_str());
    // No RFC violation, no contract violation, clean close.
    let bad: Vec<String> = note_codes(&ev);
    assert!(bad.is_empty(), "{bad:?}");
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    assert!(s["reports_acked"].as_u64().unwrap() >= 9, "{s}");
    assert_eq!(s["commands"], 2);
    std::fs::remove_file(&stats).ok();
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_are_accepted_by_tokio_tungstenite_and_switch_is_obeyed() {
    let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/ws", server.local_addr().unwrap());
    let mut child = tokio::process::Command::new(bin())
        .args([
            "emulate-device",
            "--url",
            &url,
            "--interval",
            "300ms",
            "--frame-size",
            "64",
            "--id",
            "KN-00000000C0DE",
            "--duration",
            "10s",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (sock, _) = tokio::time::timeout(Duration::from_secs(10), server.accept())
        .await
        .unwrap()
        .unwrap();
    // tungstenite's server handshake checks the request; its reader rejects any RFC violation.
    let cb = |req: &tokio_tungstenite::tungstenite::handshake::server::Request,
              mut resp: tokio_tungstenite::tungstenite::handshake::server::Response| {
        assert_eq!(
            req.headers().get("sec-websocket-protocol").unwrap(),
            "kinetid.v1"
        );
        resp.headers_mut()
            .insert("Sec-WebSocket-Protocol", "kinetid.v1".parse().unwrap());
        Ok(resp)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(sock, cb).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let hello: Value = serde_json::from_str(&first.into_text().unwrap()).unwrap();
    assert_eq!(
        (
            hello["t"].as_str(),
            hello["dev"].as_str(),
            hello["id"].as_u64()
        ),
        (Some("hello"), Some("KN-00000000C0DE"), Some(1))
    );
    ws.send(Message::Text(
        json!({"t":"welcome","re":1,"ts":1,"period_s":1}).to_string(),
    ))
    .await
    .unwrap();
    let mut seen_report = false;
    let mut switched = false;
    for _ in 0..20 {
        let m = serde_json::from_str::<Value>(
            &tokio::time::timeout(Duration::from_secs(10), ws.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap()
                .into_text()
                .unwrap(),
        )
        .unwrap();
        match m["t"].as_str() {
            Some("report") => {
                seen_report = true;
                ws.send(Message::Text(json!({"t":"ack","re":m["id"]}).to_string()))
                    .await
                    .unwrap();
                if !switched {
                    ws.send(Message::Text(
                        json!({"t":"switch","id":77,"dev":"KN-00000000C0DE","on":false})
                            .to_string(),
                    ))
                    .await
                    .unwrap();
                    switched = true;
                } else if m["on"] == false {
                    assert_eq!(m["power_w"], 0.0);
                    break;
                }
            }
            Some("state") => {
                assert_eq!(
                    (m["re"].as_u64(), m["on"].as_bool()),
                    (Some(77), Some(false))
                );
            }
            other => panic!("unexpected {other:?}: {m}"),
        }
    }
    assert!(seen_report && switched);
    ws.close(None).await.unwrap();
    let _ = child.kill().await;
}

#[test]
fn reconnects_after_a_restart_and_loses_no_report() {
    // A fixed port, so the restarted listener is found again.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    drop(probe);
    let bind = format!("127.0.0.1:{port}");
    let start = || {
        let mut c = Command::new(bin())
            .args([
                "listen",
                "--bind",
                &bind,
                "--format",
                "json",
                "--no-console",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = c.stdout.take().unwrap();
        let h = std::thread::spawn(move || std::io::read_to_string(out).unwrap());
        (c, h)
    };
    let stop = |(c, h): (std::process::Child, std::thread::JoinHandle<String>)| {
        Command::new("kill")
            .args(["-INT", &c.id().to_string()])
            .status()
            .unwrap();
        let mut c = c;
        c.wait().unwrap();
        h.join().unwrap()
    };
    let l1 = start();
    std::thread::sleep(Duration::from_millis(300));
    let mut emu = emulator(&[
        "--url",
        &format!("ws://{bind}/ws"),
        "--interval",
        "250ms",
        "--seed",
        "3",
        "--duration",
        "7s",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let out1 = stop(l1);
    // Down for a while: reports keep falling due and are queued.
    std::thread::sleep(Duration::from_millis(1200));
    let l2 = start();
    std::thread::sleep(Duration::from_millis(3500));
    assert!(emu.wait().unwrap().success());
    let out2 = stop(l2);
    let seqs = |out: &str| -> Vec<u64> {
        json_lines(out)
            .iter()
            .filter(|e| e["type"] == "message" && e["kinetid"]["t"] == "report")
            .map(|e| {
                serde_json::from_str::<Value>(e["text"].as_str().unwrap()).unwrap()["seq"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    let (a, b) = (seqs(&out1), seqs(&out2));
    assert!(!a.is_empty() && !b.is_empty(), "{a:?} {b:?}");
    let mut all: Vec<u64> = a.iter().chain(b.iter()).copied().collect();
    all.sort();
    all.dedup();
    // Every seq from 1 to the last arrived, none skipped.
    assert_eq!(
        all,
        (1..=*all.last().unwrap()).collect::<Vec<_>>(),
        "first run {a:?}, second run {b:?}"
    );
    // The ones queued while the listener was down came after the reconnect.
    assert!(
        b.first().unwrap() <= &(a.last().unwrap() + 1),
        "{a:?} {b:?}"
    );
}

/// Each quirk: the emulator's own bytes, decoded by the core (`--dump`), and
/// the listener both name the bug.
#[test]
fn every_quirk_is_named_by_the_core_and_by_listen() {
    use clap::ValueEnum;
    let handles: Vec<_> = Quirk::value_variants()
        .iter()
        .filter(|q| q.shows_on_the_wire())
        .map(|&q| {
            std::thread::spawn(move || {
                let name = q.to_possible_value().unwrap().get_name().to_string();
                let l = Listener::start(&[
                    "--format",
                    "json",
                    "--no-console",
                    "--lenient",
                    "--ping-interval",
                    "300ms",
                ]);
                let mut cmd = emulator(&[
                    "--url",
                    &l.url(),
                    "--interval",
                    "300ms",
                    "--quirk",
                    &name,
                    "--dump",
                    "--format",
                    "json",
                    "--duration",
                    // A ping is named unanswered once it has waited past
                    // the 5 s a pong may take.
                    if q == Quirk::NoPong { "7s" } else { "3s" },
                ]);
                let emu = cmd
                    .stdout(Stdio::piped())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap();
                let (emu_out, live) = if q == Quirk::SilentClose {
                    // The server must close first: stop the listener while the plug runs.
                    std::thread::sleep(Duration::from_millis(1500));
                    let live = l.stop();
                    (emu.wait_with_output().unwrap(), live)
                } else {
                    let o = emu.wait_with_output().unwrap();
                    std::thread::sleep(Duration::from_millis(200));
                    (o, l.stop())
                };
                let core = note_codes(&json_lines(&String::from_utf8(emu_out.stdout).unwrap()));
                let listen = note_codes(&json_lines(&live));
                (
                    name,
                    q.note_code(),
                    core.iter().any(|c| c == q.note_code().as_str()),
                    listen.iter().any(|c| c == q.note_code().as_str()),
                )
            })
        })
        .collect();
    let mut missing = Vec::new();
    for h in handles {
        let (name, code, core, listen) = h.join().unwrap();
        if !core || !listen {
            missing.push(format!("{name}: {code} core={core} listen={listen}"));
        }
    }
    assert!(missing.is_empty(), "{missing:#?}");
}

#[test]
fn a_fleet_of_1000_plugs_connects_and_reports() {
    let l = Listener::start(&["--quiet", "--no-console"]);
    let stats = std::env::temp_dir().join(format!("kwd-fleet-{}.json", std::process::id()));
    let st = emulator(&[
        "--url",
        &l.url(),
        "--count",
        "1000",
        "--interval",
        "1s",
        "--ramp",
        "2s",
        "--duration",
        "6s",
        "--seed",
        "11",
        "--stats-json",
        stats.to_str().unwrap(),
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .status()
    .unwrap();
    assert!(st.success());
    l.stop();
    let s: Value = serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap();
    std::fs::remove_file(&stats).ok();
    assert_eq!(s["connects"], 1000, "{s}");
    assert_eq!(s["errors"], 0, "{s}");
    // Each plug reports about once a second for about 4 s after the ramp.
    assert!(s["reports_acked"].as_u64().unwrap() >= 2000, "{s}");
}

/// `--deflate`: the plug offers permessage-deflate, listen accepts it, both
/// sides compress, and the annotation shows every message inflated.
#[test]
fn a_home_with_compression_is_served_and_switched() {
    let l = Listener::start(&["--format", "json", "--no-console"]);
    let a = l.addr();
    let emu = emulator(&[
        "--url",
        &l.url(),
        "--interval",
        "500ms",
        "--passive",
        "1",
        "--deflate",
        "--duration",
        "3s",
        "--seed",
        "5",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut id = String::new();
    for _ in 0..100 {
        let (_, b) = http(&a, "GET", "/api/devices", "", "");
        if let Some(d) = serde_json::from_str::<Value>(&b).ok().and_then(|v| {
            v.as_array()
                .and_then(|x| x.iter().find(|d| d["role"] == "active").cloned())
        }) {
            if d["reports"].as_u64().unwrap_or(0) >= 1 {
                id = d["id"].as_str().unwrap().to_string();
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!id.is_empty(), "no device reported");
    let (st, body) = http(
        &a,
        "POST",
        &format!("/api/devices/{id}/switch"),
        "",
        r#"{"on":false}"#,
    );
    assert_eq!(st, 200, "{body}");
    emu.wait_with_output().unwrap();
    let ev = json_lines(&l.stop());
    let resp = ev
        .iter()
        .find(|e| e["type"] == "response" && e["status"] == 101)
        .unwrap();
    assert!(
        resp["head"]["headers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h[0] == "Sec-WebSocket-Extensions"),
        "{resp}"
    );
    let msgs: Vec<&Value> = ev.iter().filter(|e| e["type"] == "message").collect();
    for (dir, t) in [
        ("c2s", "hello"),
        ("c2s", "report"),
        ("c2s", "state"),
        ("s2c", "welcome"),
        ("s2c", "ack"),
        ("s2c", "switch"),
    ] {
        let m = msgs
            .iter()
            .find(|m| m["dir"] == dir && m["kinetid"]["t"] == t)
            .unwrap_or_else(|| panic!("no {dir} {t}"));
        assert!(
            m["compressed_len"].as_u64().is_some(),
            "{dir} {t} not compressed: {m}"
        );
    }
    let errors: Vec<&Value> = ev
        .iter()
        .flat_map(|e| e["notes"].as_array().into_iter().flatten())
        .filter(|n| n["severity"] == "error")
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
}

/// The emulator says what it does on a stderr that is no terminal: a line
/// when its plug connects, progress every 5 s for a fleet, and a readable
/// summary at the end.
#[test]
fn the_emulator_says_what_it_does() {
    let l = Listener::start(&["--quiet", "--no-console"]);
    let one = emulator(&["--url", &l.url(), "--interval", "500ms", "--duration", "2s"])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&one.stderr);
    assert!(err.contains(&format!("connected to {}", l.url())), "{err}");
    assert!(
        err.contains("emulate-device: 1 connection (0 reconnects)"),
        "{err}"
    );
    let fleet = emulator(&[
        "--url",
        &l.url(),
        "--count",
        "3",
        "--interval",
        "500ms",
        "--duration",
        "6s",
    ])
    .stdout(Stdio::null())
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&fleet.stderr);
    assert!(err.contains("3/3 plugs online, reports"), "{err}");
    assert!(err.contains("ack round trip p50 "), "{err}");
    assert!(err.contains("emulate-device: 3 connections"), "{err}");
    assert!(!err.contains("\"connected\""), "no raw JSON: {err}");
    // -v: a line per plug, in the style of every other message (no
    // timestamp, no module path).
    let verbose = emulator(&[
        "-v",
        "--url",
        &l.url(),
        "--count",
        "2",
        "--interval",
        "500ms",
        "--duration",
        "1s",
    ])
    .stdout(Stdio::null())
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&verbose.stderr);
    let per_plug = err
        .lines()
        .filter(|l| l.starts_with("kinetid-wsdump: info: KN-") && l.contains(": connected to "))
        .count();
    assert_eq!(per_plug, 2, "{err}");
    assert!(
        err.lines()
            .all(|l| l.is_empty() || l.starts_with("kinetid-wsdump: ")),
        "one message style: {err}"
    );
    l.stop();
}
