//! Fixtures through the annotator: golden outputs, chunking invariance, the
//! replay command's exit codes and error messages.

mod common;
use common::*;
use kinetid_wsdump::capture::{Chunk, ChunkKind};
use kinetid_wsdump::render::Format;
use kinetid_wsdump::replay::{annotate_all, parse_text};
use std::process::Command;

#[test]
fn golden_outputs_match() {
    let mut checked = 0;
    for f in fixtures() {
        let name = f.file_stem().unwrap().to_string_lossy().to_string();
        let parsed = parse_text(&std::fs::read_to_string(&f).unwrap());
        assert_eq!(parsed.error, None, "{name}");
        let ev = annotate_all(&parsed.chunks, cfg(), None);
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
                    kind: ChunkKind::Data(*d, b[..cut].to_vec()),
                });
                v.push(Chunk {
                    time: c.time,
                    conn: c.conn,
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
    use kinetid_wsdump::quirk::Quirk;
    for q in Quirk::value_variants() {
        let name = q.to_possible_value().unwrap().get_name().to_string();
        // The contract's bugs have bug-*.hex; the diagnosed causes diag-*.hex.
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
