//! Packet captures: synthetic pcaps for every reassembly case and link type
//! (scripts/make_pcaps.py), the frames compared with tshark's WebSocket
//! dissector, chunking invariance, and pcap against the text capture of
//! the same session.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The synthetic captures, made once per test binary run.
fn pcaps() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("kw-pcaps-{}", std::process::id()));
        let st = Command::new("python3")
            .arg(root().join("scripts/make_pcaps.py"))
            .arg(&dir)
            .status()
            .expect("python3");
        assert!(st.success(), "make_pcaps.py failed");
        dir
    })
    .clone()
}

struct Run {
    events: Vec<Value>,
    stderr: String,
    code: i32,
}

fn replay(file: &Path, extra: &[&str]) -> Run {
    let out = Command::new(bin())
        .args(["replay", "--format", "json"])
        .args(extra)
        .arg(file)
        .output()
        .unwrap();
    let events = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    Run {
        events,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

fn of_type<'a>(ev: &'a [Value], t: &str) -> Vec<&'a Value> {
    ev.iter().filter(|e| e["type"] == t).collect()
}

fn codes(ev: &[Value]) -> Vec<String> {
    let mut c: Vec<String> = ev
        .iter()
        .flat_map(|e| e["notes"].as_array().cloned().unwrap_or_default())
        .map(|n| n["code"].as_str().unwrap().to_string())
        .collect();
    c.sort();
    c.dedup();
    c
}

#[test]
fn every_synthetic_capture_gives_what_it_should() {
    let dir = pcaps();
    let cases: serde_json::Map<String, Value> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    assert!(cases.len() >= 20, "{} cases", cases.len());
    for (name, want) in &cases {
        let mut extra = Vec::new();
        let port;
        if let Some(p) = want["port"].as_u64() {
            port = p.to_string();
            extra = vec!["--port", port.as_str()];
        }
        let r = replay(&dir.join(name), &extra);
        let frames = of_type(&r.events, "frame").len() as u64;
        let conns = of_type(&r.events, "open").len() as u64;
        assert_eq!(
            conns,
            want["conns"].as_u64().unwrap(),
            "{name}: connections\n{}",
            r.stderr
        );
        if let Some(n) = want["frames"].as_u64() {
            assert_eq!(frames, n, "{name}: frames\n{}", r.stderr);
        }
        if let Some(n) = want["frames_at_least"].as_u64() {
            assert!(frames >= n, "{name}: {frames} frames, wanted at least {n}");
        }
        let got = codes(&r.events);
        for c in want["notes"].as_array().unwrap_or(&vec![]) {
            assert!(
                got.contains(&c.as_str().unwrap().to_string()),
                "{name}: no {c} in {got:?}"
            );
        }
        if want["notes"].as_array().is_some_and(|n| n.is_empty()) {
            let capture: Vec<&String> = got.iter().filter(|c| c.starts_with("capture-")).collect();
            assert!(capture.is_empty(), "{name}: unexpected {capture:?}");
        }
        match want["error"].as_str() {
            Some(e) => {
                assert_eq!(r.code, 2, "{name}: exit status\n{}", r.stderr);
                assert!(
                    r.stderr.contains("byte ") && r.stderr.contains(e),
                    "{name}: {}",
                    r.stderr
                );
            }
            None => assert_eq!(r.code, 0, "{name}: exit status\n{}", r.stderr),
        }
        // Every frame carries the packet that completed it.
        for f in of_type(&r.events, "frame") {
            assert!(f["pkt"].as_u64().is_some_and(|p| p >= 1), "{name}: {f}");
        }
        if name == "mixed.pcap" {
            assert!(
                r.stderr
                    .contains("1 other connection and 1 packet that is not TCP skipped"),
                "{}",
                r.stderr
            );
        }
    }
}

/// (packet, FIN, opcode, masked, length, masking key, text or close code)
/// of every frame, as tshark's WebSocket dissector reads them.
fn tshark_frames(tshark: &str, file: &Path) -> Vec<String> {
    tshark_frames_with(tshark, file, &[])
}

fn tshark_frames_with(tshark: &str, file: &Path, extra: &[&str]) -> Vec<String> {
    let out = Command::new(tshark)
        .args(["-r"])
        .arg(file)
        .args(extra)
        .args([
            "-Y",
            "websocket",
            "-T",
            "fields",
            "-E",
            "separator=\u{1f}",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=\u{1e}",
        ])
        .args([
            "-e",
            "frame.number",
            "-e",
            "websocket.fin",
            "-e",
            "websocket.opcode",
            "-e",
            "websocket.mask",
        ])
        .args([
            "-e",
            "websocket.payload_length",
            "-e",
            "websocket.payload_length_ext_16",
            "-e",
            "websocket.payload_length_ext_64",
        ])
        .args([
            "-e",
            "websocket.masking_key",
            "-e",
            "websocket.payload.text",
            "-e",
            "websocket.payload.close.status_code",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut v = Vec::new();
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split('\u{1f}').collect();
        // One packet may complete several frames: tshark lists each field
        // once per frame, joined by the aggregator.
        let col = |i: usize| f[i].split('\u{1e}').map(str::to_string).collect::<Vec<_>>();
        let (fin, op, mask, l7, l16, l64, key, text, close) = (
            col(1),
            col(2),
            col(3),
            col(4),
            col(5),
            col(6),
            col(7),
            col(8),
            col(9),
        );
        let mut ki = 0;
        let mut ci = 0;
        let (mut l16i, mut l64i) = (0, 0);
        for i in 0..fin.len() {
            let len = match l7[i].parse::<u64>().unwrap() {
                126 => {
                    l16i += 1;
                    l16[l16i - 1].clone()
                }
                127 => {
                    l64i += 1;
                    l64[l64i - 1].clone()
                }
                n => n.to_string(),
            };
            let masked = mask[i] == "1" || mask[i] == "True";
            let k = if masked {
                ki += 1;
                key[ki - 1].clone()
            } else {
                "-".into()
            };
            let what = match op[i].as_str() {
                "1" => text.get(i).cloned().unwrap_or_default(),
                "8" => {
                    ci += 1;
                    close.get(ci - 1).cloned().unwrap_or_default()
                }
                _ => String::new(),
            };
            v.push(format!(
                "{}|{}|{}|{}|{}|{}|{}",
                f[0],
                u8::from(fin[i] == "1" || fin[i] == "True"),
                op[i],
                u8::from(masked),
                len,
                k,
                what
            ));
        }
    }
    v
}

/// Our frames in packet order (after a gap, bytes that came early are held
/// until the capture shows they were not merely reordered, so a frame may
/// be shown after one from a later packet).
fn our_frames(file: &Path) -> Vec<String> {
    let r = replay(file, &[]);
    let mut frames = of_type(&r.events, "frame");
    frames.sort_by_key(|f| f["pkt"].as_u64());
    frames
        .iter()
        .map(|f| {
            let what = match f["opcode"].as_u64().unwrap() {
                1 => f["payload_text"].as_str().unwrap_or("").to_string(),
                8 => f["close_code"]
                    .as_u64()
                    .map_or(String::new(), |c| c.to_string()),
                _ => String::new(),
            };
            format!(
                "{}|{}|{}|{}|{}|{}|{}",
                f["pkt"],
                u8::from(f["fin"] == true),
                f["opcode"],
                u8::from(f["masked"] == true),
                f["payload_len"],
                f["mask_key"].as_str().unwrap_or("-"),
                what
            )
        })
        .collect()
}

#[test]
fn frames_equal_tsharks_dissection() {
    let Some(tshark) = tshark() else { return };
    let dir = pcaps();
    for name in [
        // (reorder.pcap is left out: tshark finds no WebSocket in it, as
        // its response packets come before the request's.)
        "session.pcap",
        "nanos.pcap",
        "split.pcap",
        "wrap.pcap",
        "ipv6.pcap",
        "vlan.pcap",
        "sll.pcap",
        "sll2.pcap",
        "null.pcap",
        "two-ifaces.pcapng",
        "mixed.pcap",
    ] {
        let ours = our_frames(&dir.join(name));
        let theirs = tshark_frames(tshark, &dir.join(name));
        assert_eq!(ours.len(), 12, "{name}: {ours:#?}");
        assert_eq!(ours, theirs, "{name}");
    }
    // What replay --write converts to pcapng, tshark dissects as we do
    // (from a packet capture and from the text capture format).
    for (from, to) in [
        ("split.pcap", "conv-split.pcapng"),
        ("gap.pcap", "conv-gap.pcapng"),
    ] {
        let out = dir.join(to);
        let st = Command::new(bin())
            .args(["replay", "--write"])
            .arg(&out)
            .arg(dir.join(from))
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let ours = our_frames(&out);
        assert!(ours.len() >= 11, "{to}: {ours:?}");
        assert_eq!(ours, tshark_frames(tshark, &out), "{to}");
    }
    // A bigger session, every report and ack.
    let big = dir.join("big.pcap");
    let st = Command::new("python3")
        .arg(root().join("scripts/gen_session.py"))
        .args(["600", "--pcap"])
        .arg(&big)
        .status()
        .unwrap();
    assert!(st.success());
    let ours = our_frames(&big);
    assert_eq!(ours.len(), 600);
    assert_eq!(ours, tshark_frames(tshark, &big));
}

#[test]
fn chunking_a_capture_changes_nothing() {
    let dir = pcaps();
    for name in ["split.pcap", "reorder.pcap", "gap.pcap", "retransmit.pcap"] {
        let whole = replay(&dir.join(name), &[]).events;
        for n in ["1", "3", "64"] {
            let split = replay(&dir.join(name), &["--chunk", n]).events;
            assert_eq!(whole, split, "{name} --chunk {n}");
        }
    }
}

#[test]
fn a_pcap_and_the_text_capture_of_one_session_annotate_alike() {
    let dir = pcaps();
    let (cap, pcap) = (dir.join("same.cap"), dir.join("same.pcap"));
    let st = Command::new("python3")
        .arg(root().join("scripts/gen_session.py"))
        .args(["40", "--cap"])
        .arg(&cap)
        .arg("--pcap")
        .arg(&pcap)
        .status()
        .unwrap();
    assert!(st.success());
    let strip = |ev: Vec<Value>| -> Vec<Value> {
        ev.into_iter()
            .map(|mut e| {
                let o = e.as_object_mut().unwrap();
                o.remove("pkt");
                o.remove("time");
                o.remove("peer");
                e
            })
            .collect()
    };
    let a = strip(replay(&cap, &[]).events);
    let b = strip(replay(&pcap, &[]).events);
    assert!(a.len() > 80, "{}", a.len());
    assert_eq!(a, b);
}

#[test]
fn a_capture_from_a_pipe_streams() {
    use std::io::{BufRead, BufReader, Write};
    let data = std::fs::read(pcaps().join("session.pcap")).unwrap();
    let mut child = Command::new(bin())
        .args(["replay", "--format", "summary", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // All but the last packets (the FINs), the pipe kept open.
    stdin.write_all(&data[..data.len() - 200]).unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("report id=4")) {
        match rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no output while the capture is still open: {seen:?}"),
        }
    }
    stdin.write_all(&data[data.len() - 200..]).unwrap();
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

/// A capture from a file is read ahead on a second thread when the
/// summary is written on this one; from standard input it is read in
/// place. Both give the same lines, notes, counts, errors and exit code,
/// on every synthetic and public capture, whole and cut short.
#[test]
fn a_capture_read_ahead_gives_what_it_gives_read_in_place() {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in [pcaps(), root().join("fixtures/public/zeek")] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
            if ext == "pcap" || ext == "pcapng" {
                files.push(p);
            }
        }
    }
    files.sort();
    assert!(files.len() >= 25, "{} captures", files.len());
    let cut_dir = std::env::temp_dir().join(format!("kw-cut-{}", std::process::id()));
    std::fs::create_dir_all(&cut_dir).unwrap();
    let mut cut = Vec::new();
    for f in &files {
        let b = std::fs::read(f).unwrap();
        let c = cut_dir.join(format!("cut-{}", f.file_name().unwrap().to_str().unwrap()));
        std::fs::write(&c, &b[..b.len() * 3 / 5]).unwrap();
        cut.push(c);
    }
    files.extend(cut);
    for f in &files {
        for args in [
            &["--format", "summary"][..],
            &["--format", "summary", "--no-kinetid"],
        ] {
            let file = Command::new(bin())
                .arg("replay")
                .args(args)
                .arg(f)
                .output()
                .unwrap();
            let pipe = Command::new(bin())
                .arg("replay")
                .args(args)
                .arg("-")
                .stdin(std::fs::File::open(f).unwrap())
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&file.stdout),
                String::from_utf8_lossy(&pipe.stdout),
                "{} {args:?}",
                f.display()
            );
            let name = f.display().to_string();
            assert_eq!(
                String::from_utf8_lossy(&file.stderr).replace(&name, "standard input"),
                String::from_utf8_lossy(&pipe.stderr),
                "{} {args:?}",
                f.display()
            );
            assert_eq!(file.status.code(), pipe.status.code(), "{}", f.display());
        }
    }
    std::fs::remove_dir_all(&cut_dir).unwrap();
}

/// A capture from a file has its reports decoded on the reading thread
/// (`-vv` says how many), and the lines are the ones read in place give.
#[test]
fn a_capture_read_ahead_has_its_reports_decoded_on_the_reading_thread() {
    let f = pcaps().join("session.pcap");
    let run = |args: &[&str], stdin: bool| {
        let mut c = Command::new(bin());
        c.args(["replay", "--format", "summary", "-vv"]).args(args);
        if stdin {
            c.arg("-").stdin(std::fs::File::open(&f).unwrap());
        } else {
            c.arg(&f);
        }
        c.output().unwrap()
    };
    let ahead = run(&[], false);
    let err = String::from_utf8_lossy(&ahead.stderr);
    let n: u64 = err
        .split("Kinetid messages decoded there")
        .next()
        .and_then(|s| s.rsplit("; ").next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("no count in {err}"));
    let reports = String::from_utf8_lossy(&ahead.stdout)
        .matches("message text report")
        .count() as u64;
    assert!(
        reports > 0 && n >= reports,
        "{n} decoded ahead, {reports} reports"
    );
    assert_eq!(ahead.stdout, run(&[], true).stdout);
    let off = run(&["--no-kinetid"], false);
    assert!(
        String::from_utf8_lossy(&off.stderr).contains("; 0 Kinetid messages decoded there"),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
}

/// Frames, messages and heads of a run, without what differs between a
/// live listener and a capture of it (connection number, times, packets),
/// each direction in its own order (how the two directions interleave is
/// when the listener saw them, not when the packets crossed the wire).
fn comparable(ev: &[Value]) -> Vec<Value> {
    let mut v = comparable_in_order(ev);
    v.sort_by_key(|e| {
        (
            e["dir"].as_str().unwrap_or("").to_string(),
            e["offset"].as_u64(),
        )
    });
    v
}

fn comparable_in_order(ev: &[Value]) -> Vec<Value> {
    ev.iter()
        .filter(|e| {
            e["type"] == "frame"
                || e["type"] == "message"
                || e["type"] == "request"
                || e["type"] == "response"
        })
        .map(|e| {
            let mut e = e.clone();
            let o = e.as_object_mut().unwrap();
            for k in ["conn", "time", "pkt"] {
                o.remove(k);
            }
            e
        })
        .collect()
}

#[test]
fn a_tcpdump_capture_of_a_live_session_replays_as_listen_showed_it() {
    let Some(tcpdump) = tcpdump() else { return };
    let dir = pcaps();
    let file = dir.join("live.pcap");
    let l = Listener::start(&["--format", "json", "--no-console"]);
    let td = Capture::start(tcpdump, &file, &format!("tcp port {}", l.port));
    let st = Command::new(bin())
        .args([
            "emulate-device",
            "--url",
            &l.url(),
            "--interval",
            "200ms",
            "--passive",
            "1",
        ])
        .args(["--duration", "1500ms", "--color", "never"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let live: Vec<Value> = l
        .stop()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let td_said = td.stop();
    let replayed = replay(&file, &[]);
    assert_eq!(replayed.code, 0, "{}", replayed.stderr);
    let (a, b) = (comparable(&live), comparable(&replayed.events));
    assert!(a.len() > 20, "only {} live events", a.len());
    if a != b {
        let show = |v: &[Value]| {
            v.iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        };
        std::fs::write(dir.join("live.json"), show(&a)).unwrap();
        std::fs::write(dir.join("replayed.json"), show(&b)).unwrap();
        panic!(
            "live and replayed annotations differ: see {} (tcpdump: {td_said})",
            dir.display()
        );
    }
}

#[test]
fn listen_records_pcapng_that_tshark_dissects_as_it_annotated() {
    let dir = pcaps();
    let file = dir.join("listen.pcapng");
    let l = Listener::start(&[
        "--format",
        "json",
        "--no-console",
        "--record",
        file.to_str().unwrap(),
    ]);
    let st = Command::new(bin())
        .args([
            "emulate-device",
            "--url",
            &l.url(),
            "--interval",
            "200ms",
            "--passive",
            "1",
        ])
        .args(["--duration", "1200ms", "--color", "never"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let port = l.port;
    let live: Vec<Value> = l
        .stop()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // Our own replay of the recording shows what listen showed.
    let replayed = replay(&file, &[]);
    assert_eq!(replayed.code, 0, "{}", replayed.stderr);
    assert_eq!(comparable(&live), comparable(&replayed.events));
    let frames = of_type(&replayed.events, "frame").len();
    assert!(frames > 10, "{frames} frames");
    // tshark opens it and finds the same frames (HTTP on the listener's port).
    let Some(tshark) = tshark() else { return };
    let out = Command::new(tshark)
        .arg("-r")
        .arg(&file)
        .args([
            "-d",
            &format!("tcp.port=={port},http"),
            "-Y",
            "websocket",
            "-T",
            "fields",
            "-e",
            "frame.number",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs = String::from_utf8_lossy(&out.stdout).lines().count();
    // tshark lists a packet once however many frames it completes.
    let packets: std::collections::BTreeSet<u64> = of_type(&replayed.events, "frame")
        .iter()
        .map(|f| f["pkt"].as_u64().unwrap())
        .collect();
    assert_eq!(
        theirs,
        packets.len(),
        "tshark and replay disagree on the packets with frames"
    );
    let ours = our_frames(&file);
    let mut theirs = Vec::new();
    // And frame by frame, with the port given as HTTP.
    for f in tshark_frames_with(tshark, &file, &["-d", &format!("tcp.port=={port},http")]) {
        theirs.push(f);
    }
    assert_eq!(ours, theirs);
}

#[test]
fn filters_choose_what_is_shown() {
    let dir = pcaps();
    let all = replay(&dir.join("gap.pcap"), &[]).events;
    // Only what has a warning or an error: the gap's note, the end.
    let notes = replay(&dir.join("gap.pcap"), &["--only-notes"]).events;
    assert!(!notes.is_empty() && notes.len() < all.len());
    assert!(notes.iter().all(|e| e["notes"]
        .as_array()
        .is_some_and(|n| n.iter().any(|n| n["severity"] != "info"))));
    // By device: all of its connection, from the open; another: nothing.
    let dev = replay(&dir.join("session.pcap"), &["--device", "KN-A4CF12F0E1B2"]).events;
    assert_eq!(
        dev.len(),
        replay(&dir.join("session.pcap"), &[]).events.len()
    );
    assert_eq!(dev[0]["type"], "open");
    assert!(
        replay(&dir.join("session.pcap"), &["--device", "KN-000000000000"])
            .events
            .is_empty()
    );
    // By time: the first report is at 00:01:00 UTC, the handshake at 00:00:00.
    let early = replay(
        &dir.join("session.pcap"),
        &["--until", "2026-01-01T00:00:30Z"],
    )
    .events;
    assert!(early
        .iter()
        .all(|e| e["time"].as_f64().unwrap() <= 1_767_225_630.0));
    assert!(early.iter().any(|e| e["type"] == "request"));
    let late = replay(&dir.join("session.pcap"), &["--since", "1767225630"]).events;
    let whole = replay(&dir.join("session.pcap"), &[]).events;
    assert_eq!(early.len() + late.len(), whole.len());
    // By connection, numbered across files.
    let second = replay(&dir.join("session.pcap"), &["--conn", "2"]).events;
    assert!(second.is_empty());
}

#[test]
fn listen_shows_only_the_device_asked_for() {
    let l = Listener::start(&[
        "--format",
        "json",
        "--no-console",
        "--device",
        "KN-0000000000A1",
    ]);
    let emu = |id: &str| {
        Command::new(bin())
            .args([
                "emulate-device",
                "--url",
                &l.url(),
                "--id",
                id,
                "--interval",
                "200ms",
            ])
            .args(["--duration", "800ms", "--color", "never"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let (mut a, mut b) = (emu("KN-0000000000A1"), emu("KN-0000000000B2"));
    assert!(a.wait().unwrap().success() && b.wait().unwrap().success());
    let out = l.stop();
    let ev: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let devs: std::collections::BTreeSet<&str> = ev
        .iter()
        .filter_map(|e| e["kinetid"]["dev"].as_str())
        .collect();
    assert_eq!(
        devs.into_iter().collect::<Vec<_>>(),
        ["KN-0000000000A1"],
        "{out}"
    );
    let conns: std::collections::BTreeSet<u64> =
        ev.iter().filter_map(|e| e["conn"].as_u64()).collect();
    assert_eq!(conns.len(), 1);
    assert!(ev.iter().any(|e| e["type"] == "open"));
}

#[test]
fn listener_notes_ride_in_the_pcapng_recording_as_packet_comments() {
    let dir = pcaps();
    let file = dir.join("listen-tls.pcapng");
    let data = dir.join("tls-data");
    let l = Listener::start_env(
        &[
            "--tls",
            "--tls-name",
            "localhost",
            "--no-console",
            "--quiet",
            "--record",
            file.to_str().unwrap(),
        ],
        &[("KINETID_WSDUMP_DATA", data.to_str().unwrap())],
    );
    let st = Command::new(bin())
        .args([
            "emulate-device",
            "--url",
            &format!("wss://localhost:{}/ws", l.port),
            "--insecure",
            "--interval",
            "200ms",
            "--duration",
            "800ms",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    l.stop();
    let Some(tshark) = tshark() else { return };
    let out = Command::new(tshark)
        .arg("-r")
        .arg(&file)
        .args(["-T", "fields", "-e", "frame.comment"])
        .output()
        .unwrap();
    let comments = String::from_utf8_lossy(&out.stdout);
    assert!(
        comments.contains("kinetid-wsdump info tls-session") && comments.contains("TLS"),
        "{comments}"
    );
    // Replayed, the comments are the listener's notes again, in place:
    // the TLS session right after the connection opened, as live.
    let replayed = replay(&file, &[]);
    assert_eq!(replayed.code, 0, "{}", replayed.stderr);
    assert!(!of_type(&replayed.events, "frame").is_empty());
    let kinds: Vec<&str> = replayed
        .events
        .iter()
        .filter(|e| e["conn"] == 1)
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(&kinds[..3], ["open", "note", "request"], "{kinds:?}");
    let tls = of_type(&replayed.events, "note")
        .into_iter()
        .find(|e| e["notes"][0]["code"] == "tls-session")
        .unwrap_or_else(|| panic!("no tls-session note: {:?}", replayed.events));
    assert_eq!(tls["dir"], "c2s");
    assert!(
        tls["notes"][0]["message"].as_str().unwrap().contains("TLS"),
        "{tls}"
    );
}

#[test]
fn a_capture_that_starts_mid_connection_names_it_and_the_port_to_give() {
    let f = pcaps().join("midstream.pcap");
    let r = replay(&f, &[]);
    assert_eq!(r.code, 0);
    assert!(of_type(&r.events, "open").is_empty());
    assert!(
        r.stderr
            .contains("1 TCP connection began before the capture did (192.168.1.23:49152 -> 192.168.1.10:8080)")
            && r.stderr.contains("replay --port 8080"),
        "{}",
        r.stderr
    );
    // With the port: decoded, and the report period, never captured (no
    // hello, no welcome), is not assumed to be 60 s.
    let r = replay(&f, &["--port", "8080"]);
    let got = codes(&r.events);
    assert!(got.contains(&"capture-start-missed".to_string()), "{got:?}");
    assert!(
        !got.iter().any(|c| c.starts_with("kinetid-report-")),
        "{got:?}"
    );
    assert!(!r.stderr.contains("began before"), "{}", r.stderr);
}

/// Public captures of other applications' WebSocket traffic (Zeek's test
/// suite, BSD licence; fixtures/README.md): frames as tshark dissects
/// them, and only the notes that the traffic really earns.
#[test]
fn public_captures_agree_with_tshark_and_raise_only_what_is_there() {
    let dir = root().join("fixtures/public/zeek");
    // (file, tshark's extra options, the warning and error codes expected)
    let cases: &[(&str, &[&str], &[&str])] = &[
        // The server closes TCP without answering the client's Close.
        (
            "broker-websocket.pcap",
            &[],
            &["warning:close-not-answered"],
        ),
        ("fragmented-http-reply.pcap", &[], &[]),
        // Through a reverse proxy (X-Forwarded-For): its Host is the proxy's.
        (
            "jupyter-websocket.pcap",
            &["-d", "tcp.port==51185,http"],
            &[],
        ),
        ("message-too-big-status.pcap", &[], &[]),
        // A 258-byte Close in the 64-bit form; the client may fail the
        // connection without answering it.
        (
            "oversized-close-frame.pcapng",
            &[],
            &["error:control-too-long", "warning:length-non-minimal"],
        ),
        ("reply-ping-coalesced.pcap", &[], &[]),
        ("reply-ping-separate.pcap", &[], &[]),
        ("two-binary-fragments.pcap", &[], &[]),
        // The client refuses a wrong accept and sends nothing: no alarm.
        ("wrong-accept-header.pcap", &[], &[]),
        // This wstunnel client sends its frames unmasked.
        ("wstunnel-http.pcap", &[], &["error:client-frame-unmasked"]),
        ("wstunnel-https.pcap", &[], &[]),
        // The server never answers the client's keep-alive pings.
        ("wstunnel-ssh.pcap", &[], &["warning:ping-not-answered"]),
    ];
    let tshark = tshark();
    for (name, extra, want) in cases {
        let file = dir.join(name);
        let r = replay(&file, &[]);
        assert_eq!(r.code, 0, "{name}: {}", r.stderr);
        let mut got: Vec<String> = r
            .events
            .iter()
            .flat_map(|e| e["notes"].as_array().cloned().unwrap_or_default())
            .filter(|n| n["severity"] != "info")
            .map(|n| {
                format!(
                    "{}:{}",
                    n["severity"].as_str().unwrap(),
                    n["code"].as_str().unwrap()
                )
            })
            .collect();
        got.sort();
        got.dedup();
        assert_eq!(got, *want, "{name}");
        if let Some(tshark) = tshark {
            let ours = our_frames(&file);
            assert!(!ours.is_empty(), "{name}");
            assert_eq!(ours, tshark_frames_with(tshark, &file, extra), "{name}");
        }
    }
    // The refused answer is said, once, as what the client did right.
    let r = replay(&dir.join("wrong-accept-header.pcap"), &[]);
    assert!(codes(&r.events).contains(&"bad-answer-refused".to_string()));
}
