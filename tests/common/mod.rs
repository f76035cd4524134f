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

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// A running `listen` on an ephemeral loopback port.
pub struct Listener {
    pub child: Child,
    pub port: u16,
    stdout: Option<std::thread::JoinHandle<String>>,
    stderr_lines: mpsc::Receiver<String>,
}

impl Listener {
    /// Start `listen --bind 127.0.0.1:0` with extra flags.
    pub fn start(args: &[&str]) -> Listener {
        Self::start_with_stdin(args, Stdio::null())
    }

    pub fn start_with_stdin(args: &[&str], stdin: Stdio) -> Listener {
        Self::spawn(args, stdin, &[])
    }

    /// Start with extra environment variables.
    pub fn start_env(args: &[&str], env: &[(&str, &str)]) -> Listener {
        Self::spawn(args, Stdio::null(), env)
    }

    /// Start on a given address (a restart on the port a first run got).
    pub fn start_at(bind: &str, args: &[&str]) -> Listener {
        Self::spawn_at(bind, args, Stdio::null(), &[])
    }

    fn spawn(args: &[&str], stdin: Stdio, env: &[(&str, &str)]) -> Listener {
        Self::spawn_at("127.0.0.1:0", args, stdin, env)
    }

    fn spawn_at(bind: &str, args: &[&str], stdin: Stdio, env: &[(&str, &str)]) -> Listener {
        let mut child = Command::new(bin())
            .args(["listen", "--bind", bind, "--color", "never"])
            .args(args)
            .envs(env.iter().copied())
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start listen");
        let mut out = child.stdout.take().unwrap();
        let stdout = std::thread::spawn(move || {
            let mut s = String::new();
            out.read_to_string(&mut s).ok();
            s
        });
        let err = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // Lines before it (the TLS certificate's) are passed over.
        let mut first = String::new();
        for _ in 0..20 {
            first = rx
                .recv_timeout(Duration::from_secs(20))
                .expect("listen printed nothing");
            if first.contains("listening on ") {
                break;
            }
        }
        let addr = first
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
        let port = addr.rsplit(':').next().unwrap().parse().unwrap();
        Listener {
            child,
            port,
            stdout: Some(stdout),
            stderr_lines: rx,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Wait for a stderr line containing `needle`.
    pub fn stderr_until(&self, needle: &str, timeout: Duration) -> Option<String> {
        let end = std::time::Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(std::time::Instant::now()) {
            match self.stderr_lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return Some(l),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    }

    /// SIGINT, wait for exit, return stdout.
    pub fn stop(self) -> String {
        self.stop_with_summary().1
    }

    /// SIGINT, wait for exit; the summary line on stderr and stdout.
    pub fn stop_with_summary(mut self) -> (String, String) {
        Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status()
            .unwrap();
        let summary = self
            .stderr_until("output lines dropped", Duration::from_secs(10))
            .unwrap_or_default();
        let end = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                assert!(st.success(), "listen exited with {st}");
                break;
            }
            assert!(
                std::time::Instant::now() < end,
                "listen did not exit within 10 s of SIGINT"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        (summary, self.stdout.take().unwrap().join().unwrap())
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Parse JSON lines.
pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// All note codes in JSON events.
pub fn note_codes(events: &[serde_json::Value]) -> Vec<String> {
    events
        .iter()
        .flat_map(|e| e["notes"].as_array().cloned().unwrap_or_default())
        .map(|n| n["code"].as_str().unwrap_or("").to_string())
        .collect()
}

/// A raw TCP connection with a read timeout.
pub fn raw(addr: &str) -> std::net::TcpStream {
    let s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Read until EOF or timeout.
pub fn read_all(s: &mut std::net::TcpStream) -> Vec<u8> {
    let mut v = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return v,
            Ok(n) => v.extend_from_slice(&buf[..n]),
        }
    }
}

/// A valid upgrade request.
pub fn upgrade_request(extra: &str) -> String {
    format!("GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n")
}

/// Do a raw upgrade and return the socket positioned after the 101 head.
pub fn raw_upgraded(addr: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = raw(addr);
    s.write_all(upgrade_request("").as_bytes()).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "EOF in handshake response");
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s
}

/// A masked client frame.
pub fn client_frame(op: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    kinetid_wsdump::wire::frame::encode_frame(
        &mut v,
        kinetid_wsdump::wire::frame::OpCode::from_u8(op),
        payload,
        kinetid_wsdump::wire::frame::EncodeOptions {
            fin,
            rsv: 0,
            mask: Some(kinetid_wsdump::wire::frame::MaskKey([1, 2, 3, 4])),
            len_encoding: None,
        },
    );
    v
}

/// Read server frames until a Close arrives; return its code.
pub fn read_close_code(s: &mut std::net::TcpStream) -> Option<u16> {
    use kinetid_wsdump::wire::frame::{Decoded, Decoder, OpCode};
    let mut d = Decoder::new(1 << 20);
    let mut buf = [0u8; 4096];
    loop {
        loop {
            match d.next_frame() {
                Decoded::Frame(f) if f.header.opcode == OpCode::Close => {
                    return (f.payload.len() >= 2)
                        .then(|| u16::from_be_bytes([f.payload[0], f.payload[1]]));
                }
                Decoded::Frame(_) => continue,
                _ => break,
            }
        }
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => d.feed(&buf[..n]),
        }
    }
}

/// Hello for a device id.
pub fn hello(dev: &str, passives: &[&str]) -> String {
    serde_json::json!({"t":"hello","id":1,"dev":dev,"fw":"test","role":"active","mains_v":230,"mains_hz":50,"period_s":60,"passives":passives}).to_string()
}

/// A blocking HTTP request to the listener; returns (status, body).
pub fn http(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> (u16, String) {
    use std::io::Write;
    let mut s = raw(addr);
    // What the page's fetch() sends; a test that wants otherwise says so.
    let ctype = if method == "POST" && !headers.to_ascii_lowercase().contains("content-type:") {
        "Content-Type: application/json\r\n"
    } else {
        ""
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}{ctype}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let r = String::from_utf8_lossy(&read_all(&mut s)).to_string();
    let status = r
        .split(' ')
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or(0);
    let body = r.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// Headless Chromium, if installed. Absent: the calling test skips with a
/// printed reason, except under CI=true, where a skipped peer test fails.
pub fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"].into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if found.is_none() {
        assert!(
            std::env::var("CI").is_err(),
            "chromium is missing under CI: scripts/setup-peers.sh must install it"
        );
        eprintln!("SKIPPED: chromium is not installed (scripts/setup-peers.sh installs it)");
    }
    found
}

/// Flags every headless Chromium of the tests runs with: no sandbox (tests
/// may run as root), nothing fetched from the network on its own.
pub const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Start a command whose first stderr line names the address it serves
/// (the text after `marker`, up to `end`); returns it and that address.
pub fn spawn_serving(cmd: &mut Command, marker: &str, end: char) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let addr = line
        .split(marker)
        .nth(1)
        .and_then(|r| r.split(end).next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_string();
    // Keep reading, so the child never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    (child, addr)
}

/// Run headless Chromium on a URL and return the DOM after `budget_ms` of virtual time.
pub fn chromium_dom(chromium: &str, url: &str, budget_ms: u32) -> String {
    let profile =
        std::env::temp_dir().join(format!("kwd-chromium-{}-{}", std::process::id(), url.len()));
    let out = Command::new(chromium)
        .args(CHROMIUM_FLAGS)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--virtual-time-budget={budget_ms}"))
        .arg("--dump-dom")
        .arg(url)
        .output()
        .unwrap();
    std::fs::remove_dir_all(&profile).ok();
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A field of /proc/PID/status in KiB (VmRSS, VmHWM).
pub fn proc_kib(pid: u32, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The Python interpreter of the venv that has `websockets`, if set up.
/// Absent: the calling test skips with a printed reason, except under
/// CI=true, where a skipped peer test fails.
/// The `kubernetes-validate` command from the peers' venv; a test without
/// it skips, except under CI=true (scripts/setup-peers.sh installs it).
pub fn kubernetes_validate() -> Option<PathBuf> {
    let kv = root().join("target/peers-venv/bin/kubernetes-validate");
    if kv.exists() {
        return Some(kv);
    }
    assert!(
        std::env::var("CI").is_err(),
        "kubernetes-validate is missing under CI: scripts/setup-peers.sh must install it"
    );
    eprintln!("SKIPPED: kubernetes-validate is not set up (scripts/setup-peers.sh does it)");
    None
}

pub fn python_websockets() -> Option<PathBuf> {
    let py = root().join("target/peers-venv/bin/python");
    if py.exists() {
        return Some(py);
    }
    assert!(
        std::env::var("CI").is_err(),
        "Python websockets is missing under CI: scripts/setup-peers.sh must install it"
    );
    eprintln!("SKIPPED: Python websockets is not set up (scripts/setup-peers.sh does it)");
    None
}

/// Prometheus's `promtool`, if installed. Absent: skip with a reason, or
/// fail under CI=true (scripts/setup-peers.sh installs it).
pub fn promtool() -> Option<&'static str> {
    if Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("promtool");
    }
    assert!(
        std::env::var("CI").is_err(),
        "promtool is missing under CI: scripts/setup-peers.sh must install it"
    );
    eprintln!("SKIPPED: promtool is not installed (scripts/setup-peers.sh installs it)");
    None
}

/// Run `promtool check metrics` on a scrape; panics with its complaint.
pub fn promtool_check(promtool: &str, text: &str) {
    use std::io::Write;
    let mut c = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = c.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "promtool check metrics: {}{}\n{text}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A metric's value (summed over its label sets) in a scrape.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split([' ', '{']).next() == Some(name))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Debian's `tshark`, if installed. Absent: skip with a reason, or fail
/// under CI=true (scripts/setup-peers.sh installs it).
pub fn tshark() -> Option<&'static str> {
    if Command::new("tshark")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("tshark");
    }
    assert!(
        std::env::var("CI").is_err(),
        "tshark is missing under CI: scripts/setup-peers.sh must install it"
    );
    eprintln!("SKIPPED: tshark is not installed (scripts/setup-peers.sh installs it)");
    None
}

/// Debian's `tcpdump`, when it can capture on the loopback interface here.
/// Absent: skip with a reason, or fail under CI=true.
/// tcpdump capturing `filter` on loopback into `file`, once it says it
/// captures; [`Capture::stop`] ends it (SIGINT) and returns what it said.
pub struct Capture {
    child: Child,
    said: Option<std::thread::JoinHandle<String>>,
}

impl Capture {
    pub fn start(tcpdump: &str, file: &std::path::Path, filter: &str) -> Capture {
        let mut child = Command::new(tcpdump)
            .args([
                "-i",
                "lo",
                "-U",
                "--immediate-mode",
                "-n",
                "-Z",
                "root",
                "-s",
                "0",
                "-w",
            ])
            .arg(file)
            .arg(filter)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("listening on"), "tcpdump: {line}");
        let said = std::thread::spawn(move || {
            let mut s = String::new();
            err.read_to_string(&mut s).ok();
            s
        });
        Capture {
            child,
            said: Some(said),
        }
    }

    pub fn stop(mut self) -> String {
        // SAFETY: signalling the tcpdump child this value started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        self.child.wait().unwrap();
        self.said.take().unwrap().join().unwrap()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

pub fn tcpdump() -> Option<&'static str> {
    if Command::new("tcpdump")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        return Some("tcpdump");
    }
    assert!(
        std::env::var("CI").is_err(),
        "tcpdump is missing under CI: scripts/setup-peers.sh must install it"
    );
    eprintln!("SKIPPED: tcpdump is not installed (scripts/setup-peers.sh installs it)");
    None
}
pub mod cdp;

/// A running `proxy` on an ephemeral loopback port.
pub struct Proxy {
    pub child: Child,
    pub port: u16,
    tail: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Proxy {
    pub fn start(upstream: &str, extra: &[&str]) -> Proxy {
        Self::start_env(upstream, extra, &[]).0
    }

    /// Start with environment variables; also returns the start-up lines
    /// on stderr before "listening on".
    pub fn start_env(upstream: &str, extra: &[&str], env: &[(&str, &str)]) -> (Proxy, String) {
        let mut child = Command::new(bin())
            .envs(env.iter().copied())
            .args([
                "proxy",
                "--upstream",
                upstream,
                "--bind",
                "127.0.0.1:0",
                "--color",
                "never",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut said = String::new();
        let mut line = String::new();
        while !line.contains("listening on") {
            line.clear();
            if err.read_line(&mut line).unwrap() == 0 {
                panic!("proxy exited: {said}");
            }
            said.push_str(&line);
        }
        let port = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split([',', ' ']).next())
            .and_then(|a| a.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        // The last lines on stderr, for a proxy that does not stop.
        let tail = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let t2 = tail.clone();
        std::thread::spawn(move || {
            for l in err.lines().map_while(Result::ok) {
                let mut t = t2.lock().unwrap();
                t.push(l);
                if t.len() > 20 {
                    t.remove(0);
                }
            }
        });
        (Proxy { child, port, tail }, said)
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// SIGINT, wait (10 s at most: a proxy that does not exit fails the
    /// test instead of hanging it), return stdout.
    pub fn stop(mut self) -> String {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let mut stdout = self.child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            stdout.read_to_string(&mut out).ok();
            out
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                // What its threads were doing, and what it last said.
                let pid = self.child.id();
                let mut threads = String::new();
                for t in std::fs::read_dir(format!("/proc/{pid}/task"))
                    .into_iter()
                    .flatten()
                    .flatten()
                {
                    let p = t.path();
                    let stat = std::fs::read_to_string(p.join("stat")).unwrap_or_default();
                    let wchan = std::fs::read_to_string(p.join("wchan")).unwrap_or_default();
                    threads.push_str(&format!("{} wchan={wchan}\n", stat.trim()));
                }
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "the proxy did not exit within 10 s of SIGINT\nthreads:\n{threads}stderr:\n{}",
                    self.tail.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        reader.join().unwrap()
    }
}
