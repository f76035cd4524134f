//! Nothing a plug was told is safe is lost, checked by `(dev, seq)`:
//! a fleet reports while `listen` is killed with SIGKILL and restarted, and
//! while a proxy in front of it cuts every connection. The plugs' own
//! annotated traffic (`emulate-device --dump --format json`) says which
//! reports were acknowledged; every one of them must be in one of the
//! listeners' recordings, and each plug's reports there must count up
//! without a gap (a report sent before a cut and never acknowledged is
//! resent with its original `seq` after the reconnect).

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Reports by (dev, seq).
type Reports = BTreeSet<(String, u64)>;

fn scratch(name: &str) -> PathBuf {
    let d = root()
        .join("target/test-artifacts")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fleet of `count` plugs reporting every 200 ms for `secs`.
fn fleet(url: &str, count: u32, secs: u32) -> Child {
    Command::new(bin())
        .args(["emulate-device", "--url", url, "--interval", "200ms"])
        .args(["--count", &count.to_string(), "--seed", "21"])
        .args(["--duration", &format!("{secs}s")])
        .args(["--dump", "--format", "json", "--color", "never"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Reports as (dev, seq) with their connection's ids, from JSON events of
/// one connection-numbered stream: what was sent (c2s) and which of them
/// were acknowledged (an s2c `ack` whose `re` is the report's `id`).
fn reports(events: &[serde_json::Value]) -> (Reports, Reports) {
    let mut sent = BTreeSet::new();
    let mut acked = BTreeSet::new();
    // (conn, id) -> (dev, seq)
    let mut by_id: HashMap<(u64, u64), (String, u64)> = HashMap::new();
    for e in events.iter().filter(|e| e["type"] == "message") {
        let Some(v) = e["text"]
            .as_str()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(t).ok())
        else {
            continue;
        };
        let conn = e["conn"].as_u64().unwrap_or(0);
        match (e["dir"].as_str(), v["t"].as_str()) {
            (Some("c2s"), Some("report")) => {
                let key = (
                    v["dev"].as_str().unwrap().to_string(),
                    v["seq"].as_u64().unwrap(),
                );
                by_id.insert((conn, v["id"].as_u64().unwrap()), key.clone());
                sent.insert(key);
            }
            (Some("s2c"), Some("ack")) => {
                if let Some(k) = v["re"].as_u64().and_then(|re| by_id.get(&(conn, re))) {
                    acked.insert(k.clone());
                }
            }
            _ => {}
        }
    }
    (sent, acked)
}

/// Every recording in `dir`, read back with `replay --format json`.
fn recorded(dir: &Path) -> Reports {
    let mut all = BTreeSet::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let out = Command::new(bin())
            .args(["replay", "--format", "json"])
            .arg(&f)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let (sent, _) = reports(&json_lines(&text));
        all.extend(sent);
    }
    all
}

/// What the fleet printed, once it has ended (within `limit`).
fn fleet_events(mut child: Child, limit: Duration) -> Vec<serde_json::Value> {
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut out, &mut s).ok();
        s
    });
    let end = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the fleet did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    json_lines(&reader.join().unwrap())
}

/// Each plug's recorded reports count up without a gap, and every report
/// a plug saw acknowledged is recorded.
fn nothing_lost(recorded: &Reports, acked: &Reports, plugs: usize) {
    let mut per_dev: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for (d, s) in recorded {
        per_dev.entry(d).or_default().push(*s);
    }
    assert_eq!(per_dev.len(), plugs, "plugs recorded: {:?}", per_dev.keys());
    for (d, seqs) in &per_dev {
        let (lo, hi) = (seqs[0], seqs[seqs.len() - 1]);
        assert_eq!(
            seqs.len() as u64,
            hi - lo + 1,
            "{d}: a gap in the recorded seqs {lo}..={hi}: {seqs:?}"
        );
    }
    let missing: Vec<_> = acked.difference(recorded).collect();
    assert!(
        missing.is_empty(),
        "acknowledged but in no recording: {missing:?}"
    );
    assert!(acked.len() >= plugs * 10, "only {} acks", acked.len());
}

#[test]
fn sigkill_and_restart_of_listen_under_a_fleet_loses_no_acknowledged_report() {
    let dir = scratch("nothing-lost-kill");
    let rec = |k: usize| dir.join(format!("rec-{k}.txt")).display().to_string();
    let args = |r: &str| -> Vec<String> {
        ["--quiet", "--no-console", "--record", r]
            .iter()
            .map(|s| s.to_string())
            .collect()
    };
    let a0 = args(&rec(0));
    let first = Listener::start(&a0.iter().map(String::as_str).collect::<Vec<_>>());
    let bind = first.addr();
    let plugs = 20;
    let child = fleet(&first.url(), plugs, 14);
    let mut l = first;
    for k in 1..=4 {
        std::thread::sleep(Duration::from_millis(2200));
        // SIGKILL: no shutdown, no flush beyond what was written.
        let _ = l.child.kill();
        let _ = l.child.wait();
        let ak = args(&rec(k));
        l = Listener::start_at(&bind, &ak.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let events = fleet_events(child, Duration::from_secs(40));
    l.stop();
    let (_, acked) = reports(&events);
    nothing_lost(&recorded(&dir), &acked, plugs as usize);
}

#[test]
fn a_proxy_that_cuts_every_connection_loses_no_acknowledged_report() {
    let dir = scratch("nothing-lost-cuts");
    let rec = dir.join("rec-0.txt").display().to_string();
    let l = Listener::start(&["--quiet", "--no-console", "--record", &rec]);
    let p = Proxy::start(
        &l.url(),
        &[
            "--quiet",
            "--no-console",
            "--cut-after",
            "25f",
            "--delay",
            "5ms",
        ],
    );
    let plugs = 20;
    let child = fleet(&p.url(), plugs, 10);
    let events = fleet_events(child, Duration::from_secs(40));
    let pm = scrape_total(p.port);
    p.stop();
    l.stop();
    assert!(
        pm > plugs as f64 * 2.0,
        "the proxy cut too little: {pm} connections"
    );
    let (_, acked) = reports(&events);
    nothing_lost(&recorded(&dir), &acked, plugs as usize);
}

fn scrape_total(port: u16) -> f64 {
    let (_, body) = http(&format!("127.0.0.1:{port}"), "GET", "/api/metrics", "", "");
    metric(&body, "kinetid_wsdump_proxy_connections_total")
}
