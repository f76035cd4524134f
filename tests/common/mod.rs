//! Helpers shared by the integration tests.
#![allow(dead_code)]

use kinetid_wsdump::annotate::{Config, Event};
use kinetid_wsdump::render::{Format, Printer};
use std::path::PathBuf;

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every hex fixture, sorted.
pub fn fixtures() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hex"))
        .collect();
    v.sort();
    v
}

/// Render events in a format without colour.
pub fn render(events: &[Event], format: Format) -> String {
    let p = Printer {
        format,
        color: false,
        max_dump: 512,
    };
    let mut out = Vec::new();
    for e in events {
        p.event(&mut out, e).unwrap();
    }
    String::from_utf8(out).unwrap()
}

/// Default annotator config.
pub fn cfg() -> Config {
    Config::default()
}

/// The binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kinetid-wsdump"))
}
