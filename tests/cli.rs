//! The packaging the flags give: shell completions a shell accepts, a
//! manual page, and a version that names the commit.

mod common;
use common::bin;
use std::process::Command;

#[test]
fn bash_completions_parse_and_know_every_command() {
    let out = Command::new(bin())
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let script = String::from_utf8(out.stdout).unwrap();
    for c in [
        "listen",
        "emulate-device",
        "replay",
        "proxy",
        "certify",
        "--allow-origin",
    ] {
        assert!(script.contains(c), "{c}");
    }
    let dir = common::root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join(format!("completions-{}.bash", std::process::id()));
    std::fs::write(&f, &script).unwrap();
    let st = Command::new("bash").arg("-n").arg(&f).status().unwrap();
    assert!(st.success(), "bash -n rejects the completion script");
}

#[test]
fn the_man_page_and_the_version() {
    let out = Command::new(bin()).arg("man").output().unwrap();
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") && page.contains(".TH kinetid-wsdump 1"),
        "{page}"
    );
    assert!(page.contains("certify"));
    let v = Command::new(bin()).arg("--version").output().unwrap();
    let v = String::from_utf8(v.stdout).unwrap();
    // "kinetid-wsdump 0.1.0 (0123456789ab)" from a checkout.
    assert!(v.starts_with("kinetid-wsdump ") && v.contains('('), "{v}");
}

#[test]
fn a_port_in_use_is_said_the_same_way_by_every_command() {
    // Hold a port, then ask each command that listens for it.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    for args in [
        vec!["listen", "--no-console", "--bind", &addr],
        vec![
            "proxy",
            "--no-console",
            "--upstream",
            "ws://127.0.0.1:9",
            "--bind",
            &addr,
        ],
        vec!["certify", "--bind", &addr],
    ] {
        let out = Command::new(bin())
            .args(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains(&format!(
                "cannot listen on {addr} (--bind): the port is in use"
            )) && err.contains("--bind HOST:PORT"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn help_is_grouped_and_shows_units() {
    let out = Command::new(bin()).args(["listen", "-h"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for h in [
        "Network:",
        "Timers:",
        "Page and API:",
        "Limits:",
        "Output:",
        "TLS:",
    ] {
        assert!(help.contains(h), "{h} missing:\n{help}");
    }
    assert!(help.contains("--ping-interval <TIME>") && help.contains("[default: 30s]"));
    assert!(help.contains("--max-frame <SIZE>") && help.contains("[default: 16MiB]"));
    let out = Command::new(bin()).args(["replay", "-h"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("--chunk <BYTES>"), "{help}");
    let out = Command::new(bin())
        .args(["emulate-device", "-h"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("--frame-size <BYTES>") && help.contains("[default: whole messages"));
}
