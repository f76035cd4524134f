//! Fixtures through the annotator: golden outputs, chunking invariance, the
//! replay command's exit codes and error messages.

mod common;
use common::*;
use kinetid_wsdump::capture::replay::{annotate_all, parse_text};
use kinetid_wsdump::capture::{Chunk, ChunkKind};
use kinetid_wsdump::render::Format;
use std::process::Command;

#[test]
fn golden_outputs_match() {
    let mut checked = 0;
    for f in fixtures() {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let parsed = parse_text(&std::fs::read_to_string(&f).unwrap());
        assert_eq!(parsed.error, None, "{name}");
        // As `replay` runs: Kinetid where the traffic is Kinetid.
        let auto = kinetid_wsdump::annotate::Config {
            kinetid_auto: true,
            ..cfg()
        };
        let ev = annotate_all(&parsed.chunks, auto, None);
        for (fmt, ext) in [(Format::Text, "txt"), (Format::Json, "jsonl")] {
            let want =
                std::fs::read_to_string(root().join(format!("fixtures/golden/{name}.{ext}")))
                    .unwrap_or_else(|_| {
                        panic!("missing golden for {name}.{ext}: run scripts/regen-golden.sh")
                    });
            let got = render(&ev, fmt);
            assert!(got == want, "{name}.{ext} differs from its golden output; run scripts/regen-golden.sh and review the diff");
            checked += 1;
        }
    }
    assert!(checked >= 40, "only {checked} golden files checked");
}

/// Split one chunk of the fixture at `cut`.
fn split_at(chunks: &[Chunk], i: usize, cut: usize) -> Vec<Chunk> {
    let mut v = Vec::new();
    for (j, c) in chunks.iter().enumerate() {
        match &c.kind {
            ChunkKind::Data(d, b) if j == i => {
                v.push(Chunk {
                    time: c.time,
                    conn: c.conn,
                    pkt: None,
                    kind: ChunkKind::Data(*d, b[..cut].to_vec()),
                });
                v.push(Chunk {
                    time: c.time,
                    conn: c.conn,
                    pkt: None,
                    kind: ChunkKind::Data(*d, b[cut..].to_vec()),
                });
            }
            _ => v.push(c.clone()),
        }
    }
    v
}

#[test]
fn any_chunking_gives_identical_output() {
    for f in fixtures() {
        let parsed = parse_text(&std::fs::read_to_string(&f).unwrap());
        let whole = render(&annotate_all(&parsed.chunks, cfg(), None), Format::Json);
        for n in [1, 3, 7, 64] {
            let got = render(&annotate_all(&parsed.chunks, cfg(), Some(n)), Format::Json);
            assert!(
                got == whole,
                "{}: pieces of {n} bytes change the output",
                f.display()
            );
        }
        for (i, c) in parsed.chunks.iter().enumerate() {
            let ChunkKind::Data(_, b) = &c.kind else {
                continue;
            };
            // Every offset of every chunk; a stride for the 64 KiB ones.
            let stride = if b.len() > 1024 { b.len() / 16 } else { 1 };
            let mut cut = 0;
            while cut <= b.len() {
                let got = render(
                    &annotate_all(&split_at(&parsed.chunks, i, cut), cfg(), None),
                    Format::Json,
                );
                assert!(
                    got == whole,
                    "{}: split of chunk {i} at {cut} changes the output",
                    f.display()
                );
                cut += stride;
            }
        }
    }
}

#[test]
fn masked_hello_json() {
    let out = Command::new(bin())
        .args(["replay", "--format", "json"])
        .arg(root().join("fixtures/rfc6455-5.7-examples.hex"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let frame = text
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["type"] == "frame" && v["dir"] == "c2s" && v["opcode_name"] == "text")
        .unwrap();
    assert_eq!(frame["mask_key"], "37fa213d");
    assert_eq!(frame["payload_text"], "Hello");
    assert_eq!(frame["masked"], true);
    assert_eq!(frame["len_encoding"], 7);
    assert_eq!(frame["offset"], 0);
    assert_eq!(frame["notes"].as_array().unwrap().len(), 0);
}

#[test]
fn binary_output_equals_golden_text() {
    let f = root().join("fixtures/kinetid-session.hex");
    let out = Command::new(bin())
        .args(["replay", "--color", "never"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(out.status.success());
    let want = std::fs::read_to_string(root().join("fixtures/golden/kinetid-session.txt")).unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
    // And with --chunk 1 the same.
    let out = Command::new(bin())
        .args(["replay", "--color", "never", "--chunk", "1"])
        .arg(&f)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8(out.stdout).unwrap(), want);
}

#[test]
fn strict_exit_codes() {
    let run = |name: &str| {
        Command::new(bin())
            .args(["replay", "--strict", "--format", "summary"])
            .arg(root().join("fixtures").join(name))
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(run("kinetid-session.hex"), Some(0));
    assert_eq!(run("violations.hex"), Some(1));
    assert_eq!(run("bug-unmasked.hex"), Some(1));
    // Warnings alone do not fail --strict.
    assert_eq!(run("bug-zero-mask.hex"), Some(0));
}

#[test]
fn malformed_file_shows_what_decoded_then_names_line_and_byte() {
    let dir = std::env::temp_dir().join(format!("kwd-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.hex");
    std::fs::write(
        &p,
        "# two good frames then junk\n< 81 05 48 65 6c 6c 6f\n< 81 05 48 65 6c 6c 6f\n< 81 0g\n",
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["replay", "--format", "summary"])
        .arg(&p)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches(" frame ").count(), 2, "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("line 4, byte 80"), "{stderr}");
    // A truncated frame at the end of a file is named with its offset.
    std::fs::write(&p, "< 81 05 48 65\n").unwrap();
    let out = Command::new(bin())
        .args(["replay", "--format", "summary"])
        .arg(&p)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("error:truncated-frame"), "{stdout}");
    // Raw binary.
    std::fs::write(
        &p,
        [
            0x81u8, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ],
    )
    .unwrap();
    let out = Command::new(bin())
        .args(["replay", "--raw", "--format", "summary"])
        .arg(&p)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8(out.stdout)
        .unwrap()
        .contains("message text \"Hello\""));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn every_firmware_bug_fixture_is_named() {
    use clap::ValueEnum;
    use kinetid_wsdump::engine::quirk::Quirk;
    for q in Quirk::value_variants() {
        let name = q.to_possible_value().unwrap().get_name().to_string();
        // The contract's bugs have bug-*.hex; the diagnosed causes diag-*.hex.
        if !q.shows_on_the_wire() {
            continue;
        }
        let diag = match name.as_str() {
            "strlen-plus-one" => "c-string",
            n => n,
        };
        let f = [
            format!("fixtures/bug-{name}.hex"),
            format!("fixtures/diag-{diag}.hex"),
        ]
        .into_iter()
        .map(|p| root().join(p))
        .find(|p| p.exists())
        .unwrap_or_default();
        let parsed = parse_text(
            &std::fs::read_to_string(&f).unwrap_or_else(|_| panic!("no fixture for {name}")),
        );
        let ev = annotate_all(&parsed.chunks, cfg(), None);
        assert!(
            ev.iter()
                .any(|e| e.notes().iter().any(|n| n.code == q.note_code())),
            "{name}: no {} note",
            q.note_code()
        );
    }
}

/// A session recorded by `listen --record` from headless Chromium, which
/// offers permessage-deflate: replayed, its compressed messages inflate.
#[test]
fn a_chromium_session_with_compression_replays_inflated() {
    let text = std::fs::read_to_string(root().join("fixtures/chromium-deflate.cap")).unwrap();
    let ev = annotate_all(&parse_text(&text).chunks, cfg(), None);
    let json = render(&ev, Format::Json);
    let msgs: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["type"] == "message")
        .collect();
    let hello = msgs
        .iter()
        .find(|m| m["kinetid"]["t"] == "hello")
        .expect("hello");
    assert!(hello["compressed_len"].as_u64().is_some(), "{hello}");
    let welcome = msgs
        .iter()
        .find(|m| m["kinetid"]["t"] == "welcome")
        .expect("welcome");
    assert!(welcome["compressed_len"].as_u64().is_some(), "{welcome}");
    assert!(ev
        .iter()
        .flat_map(|e| e.notes())
        .all(|n| n.severity != kinetid_wsdump::note::Severity::Error));
}

/// A capture of one Kinetid session with `reports` masked reports and
/// their acks, written line by line as `listen --record` would.
fn session_capture(reports: usize) -> String {
    use kinetid_wsdump::wire::frame::{encode_frame, EncodeOptions, OpCode};
    let mut s = String::from("# kinetid-wsdump capture v1\n1.000000 1 open 127.0.0.1:40000\n");
    let req = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    let resp = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
    s.push_str(&format!("1.000000 1 c2s {}\n", hex::encode(req)));
    s.push_str(&format!("1.000000 1 s2c {}\n", hex::encode(resp)));
    for i in 0..reports {
        let text = format!(
            r#"{{"t":"report","id":{},"dev":"KN-A4CF12F0E1B2","ts":{},"seq":{},"on":true,"power_w":1432.6,"energy_wh":{}}}"#,
            i + 2,
            1767225660 + 60 * i,
            i + 1,
            1000 + i
        );
        let mut f = Vec::new();
        let opts = EncodeOptions {
            mask: Some(kinetid_wsdump::wire::frame::MaskKey([
                1,
                2,
                3,
                (i % 251) as u8,
            ])),
            ..EncodeOptions::server()
        };
        encode_frame(&mut f, OpCode::Text, text.as_bytes(), opts);
        s.push_str(&format!("2.000000 1 c2s {}\n", hex::encode(&f)));
        let mut a = Vec::new();
        let ack = format!(r#"{{"t":"ack","re":{}}}"#, i + 2);
        encode_frame(
            &mut a,
            OpCode::Text,
            ack.as_bytes(),
            EncodeOptions::server(),
        );
        s.push_str(&format!("2.000000 1 s2c {}\n", hex::encode(&a)));
    }
    s
}

#[test]
fn replay_streams_output_starts_before_the_input_ends() {
    use std::io::{BufRead, BufReader, Write};
    let cap = session_capture(3);
    let mut child = Command::new(bin())
        .args(["replay", "--format", "summary", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    // Everything but the end of the file, and the pipe kept open.
    stdin.write_all(cap.as_bytes()).unwrap();
    stdin.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.contains("report id=4")) {
        match rx.recv_timeout(std::time::Duration::from_secs(10)) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no output while the input is still open: {seen:?}"),
        }
    }
    assert!(seen[0].contains(" open "), "{seen:?}");
    drop(stdin);
    assert!(child.wait().unwrap().success());
}

#[test]
fn replay_memory_does_not_grow_with_the_file() {
    // About 40 MB of capture; the whole of it would be read into memory by
    // a replay that did not stream (and took 2x its size then).
    let dir = std::env::temp_dir().join(format!("kw-stream-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("big.cap");
    std::fs::write(&path, session_capture(120_000)).unwrap();
    let size = std::fs::metadata(&path).unwrap().len();
    assert!(size > 30 << 20, "capture is only {size} bytes");
    for format in ["summary", "json"] {
        let child = Command::new(bin())
            .args(["replay", "--format", format])
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The child's own high-water mark (it starts afresh at exec), read
        // until it exits.
        let mut child = child;
        let status_path = format!("/proc/{}/status", child.id());
        let mut peak_kib = 0u64;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let status = loop {
            if let Ok(st) = std::fs::read_to_string(&status_path) {
                if let Some(v) = st
                    .lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                {
                    peak_kib = peak_kib.max(v);
                }
            }
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "replay did not finish"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        assert!(status.success());
        assert!(
            peak_kib < 32 * 1024,
            "{format}: peak RSS {peak_kib} KiB replaying {size} bytes"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
