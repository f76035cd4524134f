//! Prometheus metrics on `listen` and `emulate-device`, fleets sharded over
//! several processes, and the Kubernetes manifests.

mod common;

use common::*;
use serde_json::Value;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn emulator(args: &[&str]) -> Child {
    Command::new(bin())
        .arg("emulate-device")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn stop(mut c: Child) {
    let _ = Command::new("kill")
        .args(["-INT", &c.id().to_string()])
        .status();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if c.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
}

fn scrape(addr: &str) -> String {
    let (status, body) = http(addr, "GET", "/metrics", "", "");
    assert_eq!(status, 200, "{body}");
    body
}

/// Poll until `f` holds (bounded).
fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn metrics_move_as_a_home_reports_and_is_switched() {
    let l = Listener::start(&["--quiet", "--no-console"]);
    let a = l.addr();
    let mport = free_port();
    let maddr = format!("127.0.0.1:{mport}");
    let emu = emulator(&[
        "--url",
        &l.url(),
        "--interval",
        "500ms",
        "--passive",
        "1",
        "--seed",
        "7",
        "--metrics-bind",
        &maddr,
    ]);
    wait_for("two devices", 20, || {
        let (_, b) = http(&a, "GET", "/api/devices", "", "");
        serde_json::from_str::<Value>(&b)
            .map(|v| v.as_array().map_or(0, |x| x.len()) == 2)
            .unwrap_or(false)
    });
    let first = scrape(&a);
    std::thread::sleep(Duration::from_millis(1200));
    let (_, b) = http(&a, "GET", "/api/devices", "", "");
    let id = serde_json::from_str::<Value>(&b).unwrap()[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        http(
            &a,
            "POST",
            &format!("/api/devices/{id}/switch"),
            "",
            r#"{"on":false}"#
        )
        .0,
        200
    );
    let second = scrape(&a);
    for m in [
        "kinetid_wsdump_reports_received_total",
        "kinetid_wsdump_acks_sent_total",
        "kinetid_wsdump_frames_total",
        "kinetid_wsdump_wire_bytes_total",
    ] {
        assert!(metric(&second, m) > metric(&first, m), "{m} did not move");
    }
    assert_eq!(metric(&second, "kinetid_wsdump_devices_online"), 2.0);
    assert_eq!(
        metric(&second, "kinetid_wsdump_switch_round_trip_seconds_count"),
        1.0
    );
    assert!(
        second.contains("kinetid_wsdump_handshakes_total{status=\"101\"} 1"),
        "{second}"
    );
    let emu_text = {
        let (st, body) = http(&maddr, "GET", "/metrics", "", "");
        assert_eq!(st, 200);
        body
    };
    assert_eq!(
        metric(&emu_text, "kinetid_wsdump_emulator_plugs_connected"),
        1.0
    );
    assert!(
        metric(&emu_text, "kinetid_wsdump_emulator_reports_acked_total") >= 2.0,
        "{emu_text}"
    );
    assert_eq!(
        metric(&emu_text, "kinetid_wsdump_emulator_commands_total"),
        1.0
    );
    if let Some(p) = promtool() {
        promtool_check(p, &second);
        promtool_check(p, &emu_text);
    }
    // /metrics follows the API's rules: no other site, no rebinding name.
    assert_eq!(
        http(&a, "GET", "/metrics", "Origin: http://evil.example\r\n", "").0,
        403
    );
    stop(emu);
}

#[test]
fn metrics_need_the_token_when_one_is_set() {
    let l = Listener::start(&["--quiet", "--no-console", "--api-token", "t0ken"]);
    assert_eq!(http(&l.addr(), "GET", "/metrics", "", "").0, 401);
    assert_eq!(
        http(
            &l.addr(),
            "GET",
            "/metrics",
            "Authorization: Bearer t0ken\r\n",
            ""
        )
        .0,
        200
    );
}

#[test]
fn four_shards_of_250_form_one_fleet_of_1000() {
    let l = Listener::start(&["--quiet", "--no-console", "--max-connections", "2000"]);
    let a = l.addr();
    let mut shards = Vec::new();
    let mut maddrs = Vec::new();
    for k in 0..4 {
        let maddr = format!("127.0.0.1:{}", free_port());
        let shard = format!("{k}/4");
        shards.push(emulator(&[
            "--url",
            &l.url(),
            "--count",
            "250",
            "--shard",
            &shard,
            "--interval",
            "2s",
            "--ramp",
            "2s",
            "--metrics-bind",
            &maddr,
        ]));
        maddrs.push(maddr);
    }
    let mut ids = HashSet::new();
    wait_for("1000 devices online", 60, || {
        let (_, b) = http(&a, "GET", "/api/devices", "", "");
        let v: Value = serde_json::from_str(&b).unwrap_or(Value::Null);
        let online: Vec<String> = v
            .as_array()
            .map(|d| {
                d.iter()
                    .filter(|d| d["online"] == true)
                    .map(|d| d["id"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        ids = online.iter().cloned().collect();
        assert_eq!(ids.len(), online.len(), "duplicate ids online");
        ids.len() >= 1000
    });
    assert_eq!(ids.len(), 1000);
    let connected: f64 = maddrs
        .iter()
        .map(|m| {
            metric(
                &http(m, "GET", "/metrics", "", "").1,
                "kinetid_wsdump_emulator_plugs_connected",
            )
        })
        .sum();
    assert_eq!(connected, 1000.0);
    let text = scrape(&a);
    assert_eq!(metric(&text, "kinetid_wsdump_devices_online"), 1000.0);
    for s in shards {
        stop(s);
    }
}

#[test]
fn a_shard_takes_its_index_from_the_indexed_job() {
    let o = Command::new(bin())
        .args([
            "emulate-device",
            "--shard",
            "12",
            "--url",
            "ws://127.0.0.1:1/ws",
            "--duration",
            "100ms",
        ])
        .env("JOB_COMPLETION_INDEX", "11")
        .env("KINETID_LOG", "off")
        .output()
        .unwrap();
    // It ran (and failed to connect), rather than refusing the flag.
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = Command::new(bin())
        .args([
            "emulate-device",
            "--shard",
            "12",
            "--url",
            "ws://127.0.0.1:1/ws",
        ])
        .env_remove("JOB_COMPLETION_INDEX")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("JOB_COMPLETION_INDEX"));
}

#[test]
fn the_kubernetes_manifests_carry_what_an_indexed_job_needs() {
    use yaml_rust2::YamlLoader;
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/emulator-job.yaml")).unwrap();
    let docs = YamlLoader::load_from_str(&text).expect("valid YAML");
    let job = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Job"))
        .expect("a Job");
    assert_eq!(job["apiVersion"].as_str(), Some("batch/v1"));
    let spec = &job["spec"];
    assert_eq!(spec["completionMode"].as_str(), Some("Indexed"));
    let n = spec["completions"].as_i64().expect("completions");
    assert_eq!(spec["parallelism"].as_i64(), Some(n));
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"].as_str(), Some("Never"));
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert_eq!(args[0], "emulate-device");
    let after = |flag: &str| args.iter().position(|a| *a == flag).map(|i| args[i + 1]);
    assert_eq!(
        after("--shard"),
        Some(n.to_string().as_str()),
        "--shard N with K from JOB_COMPLETION_INDEX"
    );
    assert!(after("--seed").is_some(), "shards must share a seed");
    assert!(after("--metrics-bind").unwrap().ends_with(":9100"));
    assert_eq!(c["ports"][0]["containerPort"].as_i64(), Some(9100));
    let count: i64 = after("--count").unwrap().parse().unwrap();
    assert!(count * n >= 200_000, "{count} x {n}");
    let ann = &job["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(ann["prometheus.io/scrape"].as_str(), Some("true"));
    let pm = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("PodMonitor"))
        .expect("a PodMonitor");
    assert_eq!(
        pm["spec"]["podMetricsEndpoints"][0]["port"].as_str(),
        Some("metrics")
    );
}

/// Every manifest under deploy/kubernetes against the Kubernetes API
/// schemas (strict: an unknown field fails), by a validator nobody here
/// wrote. The PodMonitor is a Prometheus Operator resource the Kubernetes
/// schemas do not cover: its shape is checked by the test above.
#[test]
fn the_kubernetes_manifests_pass_the_kubernetes_schemas() {
    let Some(kv) = kubernetes_validate() else {
        return;
    };
    let dir = root().join("deploy/kubernetes");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in &files {
        let out = std::process::Command::new(&kv)
            .arg("--strict")
            .arg(f)
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {said}", f.display());
        assert!(said.contains("passed for resource job/"), "{said}");
        for line in said.lines().filter(|l| l.starts_with("WARN")) {
            assert!(
                line.contains("kind PodMonitor"),
                "unexpected warning: {line}"
            );
        }
    }
    // The validator does reject what is wrong: a field the Job schema lacks.
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let bad = text.replacen("completionMode:", "completionMood:", 1);
    assert_ne!(bad, text);
    let tmp = root().join(format!(
        "target/test-artifacts/bad-job-{}.yaml",
        std::process::id()
    ));
    std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    std::fs::write(&tmp, bad).unwrap();
    let out = std::process::Command::new(&kv)
        .arg("--strict")
        .arg(&tmp)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a misspelt field passed");
    let _ = std::fs::remove_file(&tmp);
}
