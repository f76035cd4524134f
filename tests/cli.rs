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
