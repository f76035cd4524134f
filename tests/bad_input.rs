//! The bad-input suite: hostile inputs against a running `listen`, each with
//! its expected outcome (HTTP status, close code, or silence) and the note the
//! annotation must carry; after them all, the listener still serves a
//! well-behaved device and its recording replays completely. The firmware
//! quirks of `emulate-device` are paired with `listen` in tests/emulate.rs.

mod common;
use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

#[derive(Debug, Clone, Copy)]
enum Want {
    Status(u16),
    Close(u16),
    /// The connection stays usable: a Kinetid reply arrives and a normal close works.
    StaysOpen,
    /// Nothing to answer (the peer vanished); only the note matters.
    Silent,
}

struct Case {
    name: &'static str,
    upgrade: bool,
    bytes: Vec<u8>,
    want: Want,
    note: &'static str,
}

fn req(f: impl Fn(String) -> String) -> Vec<u8> {
    f(upgrade_request("")).into_bytes()
}

fn masked(op: u8, fin: bool, p: &[u8]) -> Vec<u8> {
    client_frame(op, fin, p)
}

fn header(first: u8, len: u64) -> Vec<u8> {
    let mut v = vec![first, 0xff];
    v.extend_from_slice(&len.to_be_bytes());
    v.extend_from_slice(&[9, 8, 7, 6]);
    v
}

fn cases() -> Vec<Case> {
    let c = |name, upgrade, bytes, want, note| Case {
        name,
        upgrade,
        bytes,
        want,
        note,
    };
    let big = "a".repeat(9000);
    let many: String = (0..101).map(|i| format!("X-{i}: y\r\n")).collect();
    let mut v = vec![
        c(
            "truncated request line",
            false,
            b"GET /ws HTT".to_vec(),
            Want::Silent,
            "truncated-handshake",
        ),
        c(
            "oversized request line",
            false,
            format!("GET /{big} HTTP/1.1\r\n\r\n").into_bytes(),
            Want::Status(431),
            "",
        ),
        c(
            "oversized header",
            false,
            req(|r| r.replace("\r\n\r\n", &format!("\r\nX-Big: {big}\r\n\r\n"))),
            Want::Status(431),
            "",
        ),
        c(
            "101 header lines",
            false,
            req(|r| r.replace("\r\n\r\n", &format!("\r\n{many}\r\n"))),
            Want::Status(431),
            "",
        ),
        c(
            "header folding",
            false,
            req(|r| r.replace("Host: 127.0.0.1\r\n", "Host: 127.0.0.1\r\n  folded\r\n")),
            Want::Status(400),
            "",
        ),
        c(
            "duplicate key",
            false,
            req(|r| {
                r.replace(
                    "\r\n\r\n",
                    "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                )
            }),
            Want::Status(400),
            "",
        ),
        c(
            "empty key",
            false,
            req(|r| r.replace("dGhlIHNhbXBsZSBub25jZQ==", "")),
            Want::Status(400),
            "",
        ),
        c(
            "key of 15 bytes",
            false,
            req(|r| r.replace("dGhlIHNhbXBsZSBub25jZQ==", "AAECAwQFBgcICQoLDA0O")),
            Want::Status(400),
            "",
        ),
        c(
            "key of 17 bytes",
            false,
            req(|r| r.replace("dGhlIHNhbXBsZSBub25jZQ==", "AAECAwQFBgcICQoLDA0ODxA=")),
            Want::Status(400),
            "",
        ),
        c(
            "key not base64",
            false,
            req(|r| r.replace("dGhlIHNhbXBsZSBub25jZQ==", "!!!!!!!!!!!!!!!!!!!!!!==")),
            Want::Status(400),
            "",
        ),
        c(
            "Upgrade: websocket2",
            false,
            req(|r| r.replace("Upgrade: websocket", "Upgrade: websocket2")),
            Want::Status(400),
            "",
        ),
        c(
            "no Connection: Upgrade",
            false,
            req(|r| r.replace("Connection: Upgrade\r\n", "")),
            Want::Status(400),
            "",
        ),
        c(
            "version 8",
            false,
            req(|r| r.replace("Version: 13", "Version: 8")),
            Want::Status(426),
            "",
        ),
        c(
            "no version",
            false,
            req(|r| r.replace("Sec-WebSocket-Version: 13\r\n", "")),
            Want::Status(426),
            "",
        ),
        c(
            "POST upgrade",
            false,
            req(|r| r.replacen("GET", "POST", 1)),
            Want::Status(405),
            "",
        ),
        c(
            "HTTP/1.0",
            false,
            req(|r| r.replace("HTTP/1.1", "HTTP/1.0")),
            Want::Status(400),
            "",
        ),
        c(
            "no Host",
            false,
            req(|r| r.replace("Host: 127.0.0.1\r\n", "")),
            Want::Status(400),
            "",
        ),
        c(
            "two Host headers",
            false,
            req(|r| r.replace("Host: 127.0.0.1\r\n", "Host: a\r\nHost: b\r\n")),
            Want::Status(400),
            "",
        ),
        c(
            "NUL in a header",
            false,
            req(|r| r.replace("Host: 127.0.0.1", "Host: 127\0.0.1")),
            Want::Status(400),
            "",
        ),
        c(
            "header without colon",
            false,
            req(|r| r.replace("Host: 127.0.0.1", "Host 127.0.0.1")),
            Want::Status(400),
            "",
        ),
        c(
            "space before colon",
            false,
            req(|r| r.replace("Host: 127.0.0.1", "Host : 127.0.0.1")),
            Want::Status(400),
            "",
        ),
        c(
            "binary garbage instead of HTTP",
            false,
            (0u8..=255).cycle().take(600).collect(),
            Want::Status(400),
            "",
        ),
        c(
            "slowloris (head never finished)",
            false,
            b"GET /ws HTTP/1.1\r\nHost: a\r\n".to_vec(),
            Want::Status(408),
            "",
        ),
        c(
            "frame declaring 2^63-1 bytes",
            true,
            header(0x82, (1 << 63) - 1),
            Want::Close(1009),
            "payload-too-big",
        ),
        c(
            "64-bit length with the top bit set",
            true,
            header(0x82, 1 << 63),
            Want::Close(1002),
            "length-top-bit",
        ),
        c(
            "100 MiB frame against the 16 MiB limit",
            true,
            [header(0x82, 100 << 20), vec![0u8; 65536]].concat(),
            Want::Close(1009),
            "payload-too-big",
        ),
        c(
            "endless continuation frames",
            true,
            {
                let mut v = masked(2, false, &[0u8; 1000]);
                for _ in 0..40 {
                    v.extend(masked(0, false, &[0u8; 1 << 19]));
                }
                v
            },
            Want::Close(1009),
            "message-too-big",
        ),
        c(
            "invalid UTF-8 split across fragments",
            true,
            [masked(1, false, b"ok \xe2\x82"), masked(0, true, b"\x28")].concat(),
            Want::Close(1007),
            "text-invalid-utf8",
        ),
        c(
            "invalid UTF-8 in one frame",
            true,
            masked(1, true, b"\xff\xfe"),
            Want::Close(1007),
            "text-invalid-utf8",
        ),
        c(
            "close with code 1005",
            true,
            masked(8, true, &1005u16.to_be_bytes()),
            Want::Close(1002),
            "close-code-invalid",
        ),
        c(
            "close with code 999",
            true,
            masked(8, true, &999u16.to_be_bytes()),
            Want::Close(1002),
            "close-code-invalid",
        ),
        c(
            "close with a 1-byte payload",
            true,
            masked(8, true, &[3]),
            Want::Close(1002),
            "close-payload-one-byte",
        ),
        c(
            "close reason not UTF-8",
            true,
            masked(8, true, b"\x03\xe8\xc0\xaf"),
            Want::Close(1007),
            "close-reason-invalid-utf8",
        ),
        c(
            "bytes after close",
            true,
            [
                masked(8, true, &1000u16.to_be_bytes()),
                masked(1, true, b"late"),
            ]
            .concat(),
            Want::Close(1000),
            "data-after-close",
        ),
        c(
            "reserved data opcode",
            true,
            masked(3, true, b"x"),
            Want::Close(1002),
            "reserved-opcode",
        ),
        c(
            "reserved control opcode",
            true,
            masked(0xB, true, b"x"),
            Want::Close(1002),
            "reserved-opcode",
        ),
        c(
            "RSV1 without extension",
            true,
            {
                let mut v = masked(1, true, b"{}");
                v[0] |= 0x40;
                v
            },
            Want::Close(1002),
            "rsv-without-extension",
        ),
        c(
            "RSV2 and RSV3",
            true,
            {
                let mut v = masked(2, true, b"x");
                v[0] |= 0x30;
                v
            },
            Want::Close(1002),
            "rsv-without-extension",
        ),
        c(
            "unmasked client frame",
            true,
            b"\x81\x02{}".to_vec(),
            Want::Close(1002),
            "client-frame-unmasked",
        ),
        c(
            "ping of 126 bytes",
            true,
            masked(9, true, &[1u8; 126]),
            Want::Close(1002),
            "control-too-long",
        ),
        c(
            "fragmented ping",
            true,
            masked(9, false, b"a"),
            Want::Close(1002),
            "control-fragmented",
        ),
        c(
            "continuation without start",
            true,
            masked(0, true, b"a"),
            Want::Close(1002),
            "continuation-without-start",
        ),
        c(
            "new message inside a fragmented one",
            true,
            [masked(1, false, b"a"), masked(1, true, b"b")].concat(),
            Want::Close(1002),
            "data-frame-in-fragmented-message",
        ),
        c(
            "non-minimal length (legal, warned)",
            true,
            {
                let mut v = vec![0x81, 0xfe, 0, 2, 0, 0, 0, 0];
                v.extend_from_slice(b"{}");
                v
            },
            Want::StaysOpen,
            "length-non-minimal",
        ),
        c(
            "all-zero masking key (legal, warned)",
            true,
            {
                let mut v = vec![0x81, 0x82, 0, 0, 0, 0];
                v.extend_from_slice(b"{}");
                v
            },
            Want::StaysOpen,
            "mask-key-zero",
        ),
        c(
            "abrupt reset mid-frame",
            true,
            masked(1, true, b"hello there")[..5].to_vec(),
            Want::Silent,
            "truncated-frame",
        ),
    ];
    // A ping flood: every ping answered, the connection stays.
    v.push(c(
        "ping flood (2000 pings)",
        true,
        (0..2000)
            .flat_map(|i: u32| masked(9, true, &i.to_be_bytes()))
            .collect(),
        Want::StaysOpen,
        "",
    ));
    v
}

fn run_case(addr: &str, case: &Case) {
    let mut s = if case.upgrade {
        raw_upgraded(addr)
    } else {
        raw(addr)
    };
    if case.upgrade && matches!(case.want, Want::StaysOpen) {
        // One id per case: two connections saying hello with one id is
        // itself a finding (the newer replaces the older with 4001).
        let id = format!(
            "KN-{:012X}",
            case.name
                .bytes()
                .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(b as u64))
                & 0xffff_ffff_ffff
        );
        s.write_all(&masked(1, true, hello(&id, &[]).as_bytes()))
            .unwrap();
    }
    let _ = s.write_all(&case.bytes);
    match case.want {
        Want::Status(st) => {
            let resp = String::from_utf8_lossy(&read_all(&mut s)).to_string();
            assert!(
                resp.starts_with(&format!("HTTP/1.1 {st} ")),
                "{}: expected {st}, got {:?}",
                case.name,
                resp.lines().next()
            );
        }
        Want::Close(code) => assert_eq!(read_close_code(&mut s), Some(code), "{}", case.name),
        Want::StaysOpen => {
            s.write_all(&masked(8, true, &1000u16.to_be_bytes()))
                .unwrap();
            assert_eq!(
                read_close_code(&mut s),
                Some(1000),
                "{}: no normal close",
                case.name
            );
        }
        Want::Silent => {
            // Reset: SO_LINGER 0 would be ideal; a plain drop with unread data also resets.
            drop(s);
        }
    }
}

#[test]
fn hostile_inputs_get_the_right_answer_and_the_listener_survives() {
    let dir = std::env::temp_dir().join(format!("kwd-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rec = dir.join("bad.cap");
    let l = Listener::start(&[
        "--format",
        "summary",
        "--no-console",
        "--head-timeout",
        "2s",
        "--max-message",
        "4194304",
        "--record",
        rec.to_str().unwrap(),
    ]);
    let addr = l.addr();
    let cases = cases();
    assert!(cases.len() >= 40, "{} cases", cases.len());
    // Independent cases run a few at a time, as hostile clients would.
    std::thread::scope(|sc| {
        for chunk in cases.chunks(8) {
            let hs: Vec<_> = chunk
                .iter()
                .map(|c| sc.spawn(|| run_case(&addr, c)))
                .collect();
            for h in hs {
                h.join().unwrap();
            }
        }
    });
    // 10,000 connections that never send a byte: all answered 408, none crashes it.
    let mut idle: Vec<TcpStream> = Vec::new();
    for _ in 0..10_000 {
        match TcpStream::connect(&addr) {
            Ok(s) => idle.push(s),
            Err(e) => panic!("connect {} failed: {e}", idle.len()),
        }
    }
    let pid = l.child.id();
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        rss_kib < 512 * 1024,
        "listener uses {rss_kib} KiB with 10,000 idle connections"
    );
    std::thread::sleep(Duration::from_millis(2500));
    let mut answered = 0;
    for s in idle.iter_mut().take(100) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if String::from_utf8_lossy(&read_all(s)).starts_with("HTTP/1.1 408") {
            answered += 1;
        }
    }
    assert_eq!(answered, 100, "idle connections not answered 408");
    drop(idle);
    // Still serving a well-behaved device.
    let mut s = raw_upgraded(&addr);
    s.write_all(&client_frame(
        1,
        true,
        hello("KN-A4CF12F0E1B2", &[]).as_bytes(),
    ))
    .unwrap();
    s.write_all(&client_frame(8, true, &1000u16.to_be_bytes()))
        .unwrap();
    assert_eq!(read_close_code(&mut s), Some(1000));
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    let live = l.stop();
    for case in cases.iter().filter(|c| !c.note.is_empty()) {
        assert!(
            live.contains(&format!(":{}", case.note)),
            "{}: no {} note in the annotation",
            case.name,
            case.note
        );
    }
    // The recording is complete: every connection opened and ended, and it replays.
    let text = std::fs::read_to_string(&rec).unwrap();
    let opens = text
        .lines()
        .filter(|l| l.split(' ').nth(2) == Some("open"))
        .count();
    let eofs = text
        .lines()
        .filter(|l| l.split(' ').nth(2) == Some("eof"))
        .count();
    assert_eq!(opens, eofs, "recording lost connection ends");
    assert!(opens >= 10_000 + cases.len());
    let out = std::process::Command::new(bin())
        .args(["replay", "--format", "summary"])
        .arg(&rec)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}
