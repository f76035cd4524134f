//! `certify` against devices: the clean emulator passes every case (and
//! certify gives back what it took), each device bug fails the cases it
//! should and no others, and the JUnit file is read back by a JUnit reader
//! nobody here wrote (Python's `junitparser`) with the report's counts.

mod common;
use common::*;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Run {
    code: i32,
    report: serde_json::Value,
    junit: std::path::PathBuf,
    stderr: String,
}

fn artifacts(name: &str) -> std::path::PathBuf {
    let d = root().join("target/test-artifacts");
    std::fs::create_dir_all(&d).unwrap();
    d.join(format!("{name}-{}", std::process::id()))
}

/// certify on port 0 with `cases`, and an emulator with `quirks` pointed
/// at it; certify's exit code and reports.
fn certify(name: &str, cases: &[&str], quirks: &[&str]) -> Run {
    certify_with(name, cases, &|url: &str| {
        let mut c = Command::new(bin());
        c.args(["emulate-device", "--url", url])
            .args(["--interval", "1s", "--duration", "300s", "--seed", "5"])
            .args(quirks.iter().flat_map(|q| ["--quirk", q]));
        c
    })
}

/// certify on port 0 with `cases`, and the device `device(url)` makes.
fn certify_with(name: &str, cases: &[&str], device: &dyn Fn(&str) -> Command) -> Run {
    let report = artifacts(&format!("{name}.json"));
    let junit = artifacts(&format!("{name}.xml"));
    let mut cmd = Command::new(bin());
    cmd.args([
        "certify",
        "--bind",
        "127.0.0.1:0",
        "--connect-timeout",
        "20s",
    ])
    .arg("--report")
    .arg(&report)
    .arg("--junit")
    .arg(&junit);
    for c in cases {
        cmd.args(["--cases", c]);
    }
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut err, &mut first).unwrap();
    let addr = first
        .split("ws://")
        .nth(1)
        .and_then(|r| r.split('/').next())
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    let rest = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut err, &mut s).ok();
        s
    });
    let mut emu: Child = device(&format!("ws://{addr}/ws"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(300);
    let code = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st.code().unwrap_or(-1);
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = emu.kill();
            panic!("certify did not finish within 300 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = emu.kill();
    let _ = emu.wait();
    let stderr = first + &rest.join().unwrap();
    let report = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    Run {
        code,
        report,
        junit,
        stderr,
    }
}

fn verdicts(r: &Run) -> Vec<(String, String)> {
    r.report["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_string(),
                c["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Python's `websockets` as a minimal Kinetid plug (tests/peers/): a
/// client stack nobody here wrote passes every case.
#[test]
fn a_plug_on_python_websockets_passes_every_case() {
    let Some(py) = python_websockets() else {
        return;
    };
    let script = root().join("tests/peers/websockets-plug.py");
    let r = certify_with("py-websockets", &[], &|url: &str| {
        let mut c = Command::new(&py);
        c.arg(&script).args([url, "KN-0000000000E1", "300"]);
        c
    });
    let failed: Vec<_> = verdicts(&r)
        .into_iter()
        .filter(|(_, v)| v != "pass")
        .collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", r.stderr);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn the_clean_emulator_passes_every_case_and_junit_agrees() {
    let r = certify("clean", &[], &[]);
    let v = verdicts(&r);
    let not_pass: Vec<_> = v.iter().filter(|(_, s)| s != "pass").collect();
    assert!(not_pass.is_empty(), "{not_pass:?}\n{}", r.stderr);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(v.len(), r.report["passed"].as_u64().unwrap() as usize);
    assert!(v.len() >= 30);
    // A line per case on stderr as it ran.
    assert_eq!(
        r.stderr.matches("certify: [").count(),
        v.len(),
        "{}",
        r.stderr
    );
    // The JUnit file through a reader nobody here wrote.
    let Some(py) = python_websockets() else {
        return;
    };
    let script = r#"
import sys
from junitparser import JUnitXml
x = JUnitXml.fromfile(sys.argv[1])
tests = fails = skips = 0
for suite in x:
    for case in suite:
        tests += 1
        for r in case.result:
            if r._tag == "failure": fails += 1
            if r._tag == "skipped": skips += 1
print(tests, fails, skips)
"#;
    let out = Command::new(py)
        .args(["-c", script])
        .arg(&r.junit)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{} 0 0", v.len())
    );
}

#[test]
fn each_device_bug_fails_its_cases_and_no_others() {
    // (quirk, the cases run, the ones that must fail)
    let table: &[(&str, &[&str], &[&str])] = &[
        (
            "no-pong",
            &["control-ping", "shares-a-segment", "kinetid-toggle"],
            &[
                "control-ping-payload",
                "control-ping-125",
                "handshake-101-shares-a-segment",
            ],
        ),
        (
            "empty-pong",
            &["control-ping", "kinetid-toggle"],
            &["control-ping-payload", "control-ping-125"],
        ),
        (
            "silent-close",
            &["control-close", "kinetid-toggle"],
            &["control-close-answered"],
        ),
        (
            "accept-anything",
            &[
                "handshake-wrong-accept",
                "handshake-accept-prefix",
                "handshake-no-upgrade",
                "kinetid-toggle",
            ],
            &[
                "handshake-wrong-accept",
                "handshake-accept-prefix",
                "handshake-no-upgrade",
            ],
        ),
        ("unmasked", &["kinetid-hello"], &["kinetid-hello"]),
    ];
    let handles: Vec<_> = table
        .iter()
        .map(|&(q, cases, fail)| {
            std::thread::spawn(move || {
                let r = certify(q, cases, &[q]);
                (q, fail, verdicts(&r), r.code, r.stderr)
            })
        })
        .collect();
    for h in handles {
        let (q, fail, v, code, stderr) = h.join().unwrap();
        for (id, verdict) in &v {
            let want = if fail.contains(&id.as_str()) {
                "fail"
            } else {
                "pass"
            };
            assert_eq!(verdict, want, "{q}: {id}\n{stderr}");
        }
        assert_eq!(code, 1, "{q}: a failed case exits 1");
    }
}

#[test]
fn certify_lists_its_cases_and_refuses_a_pattern_that_matches_none() {
    let out = Command::new(bin())
        .args(["certify", "--list"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(text.lines().count() >= 30, "{text}");
    assert!(text.contains("RFC 6455 5.5.3"));
    let out = Command::new(bin())
        .args(["certify", "--cases", "no-such-case"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--list"));
}
