//! A small driver for headless Chromium over the DevTools protocol: open a
//! page, evaluate JavaScript, move and click the mouse like a person, take
//! a screenshot. Loopback only; every wait is bounded.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Browser {
    child: Child,
    profile: PathBuf,
    ws: Ws,
    next: u64,
    /// Events that came while a call waited for its answer.
    events: std::collections::VecDeque<Value>,
    /// One browser at a time per test binary: on two cores, several
    /// Chromiums with their pages, listeners and plugs starve each other.
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

fn turns() -> std::sync::Arc<tokio::sync::Mutex<()>> {
    static T: std::sync::OnceLock<std::sync::Arc<tokio::sync::Mutex<()>>> =
        std::sync::OnceLock::new();
    T.get_or_init(Default::default).clone()
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    // DevTools keeps the connection open: read up to Content-Length.
    let mut r = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        r.extend_from_slice(&buf[..n]);
        let t = String::from_utf8_lossy(&r);
        if let Some((h, b)) = t.split_once("\r\n\r\n") {
            let want = h
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .and_then(|v| v.trim().parse::<usize>().ok())
                })
                .unwrap_or(usize::MAX);
            if b.len() >= want {
                return Some(b.to_string());
            }
        }
    }
    let t = String::from_utf8_lossy(&r).to_string();
    t.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

impl Browser {
    /// Start headless Chromium on `url` (window `w` x `h`) and attach to its page.
    pub async fn open(chromium: &str, url: &str, w: u32, h: u32) -> Browser {
        let turn = turns().lock_owned().await;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let profile = std::env::temp_dir().join(format!(
            "kwd-cdp-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).unwrap();
        let child = Command::new(chromium)
            .args(super::CHROMIUM_FLAGS)
            .args([
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--window-size={w},{h}"))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromium starts");
        let port_file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break p;
            }
            assert!(Instant::now() < deadline, "chromium never opened DevTools");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let ws_url = loop {
            let list = get(port, "/json/list").unwrap_or_default();
            let page = serde_json::from_str::<Value>(&list).ok().and_then(|v| {
                v.as_array()?
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(String::from))
            });
            if let Some(u) = page {
                break u;
            }
            assert!(Instant::now() < deadline, "chromium shows no page");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (ws, _) = tokio_tungstenite::connect_async(ws_url.as_str())
            .await
            .expect("DevTools WebSocket");
        Browser {
            child,
            profile,
            ws,
            next: 1,
            events: Default::default(),
            _turn: turn,
        }
    }

    /// Call a DevTools method and return its result.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next;
        self.next += 1;
        let msg = json!({"id": id, "method": method, "params": params}).to_string();
        self.ws.send(Message::Text(msg)).await.unwrap();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no answer to {method}"))
                .expect("DevTools closed")
                .unwrap();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["id"] == id {
                    assert!(v["error"].is_null(), "{method}: {}", v["error"]);
                    return v["result"].clone();
                }
                if v["method"].is_string() && self.events.len() < 1000 {
                    self.events.push_back(v);
                }
            }
        }
    }

    /// The next event named `method` (its params), within `secs`.
    pub async fn event(&mut self, method: &str, secs: u64) -> Value {
        if let Some(i) = self.events.iter().position(|e| e["method"] == method) {
            return self.events.remove(i).unwrap()["params"].clone();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| panic!("no {method} event"))
                .expect("DevTools closed")
                .unwrap();
            if let Message::Text(t) = m {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["method"] == method {
                    return v["params"].clone();
                }
            }
        }
    }

    /// Evaluate JavaScript in the page (promises awaited), returning its value.
    pub async fn eval(&mut self, expr: &str) -> Value {
        let r = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
            )
            .await;
        assert!(
            r["exceptionDetails"].is_null(),
            "{expr}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Evaluate `expr` until it is truthy (or panic after `secs`); an
    /// exception (the page not loaded yet) counts as not yet.
    pub async fn wait_for(&mut self, expr: &str, secs: u64) -> Value {
        match self.wait_for_or(expr, "null", secs).await {
            Ok(v) => v,
            Err(_) => panic!("timed out waiting for {expr}"),
        }
    }

    /// Like `wait_for`, but on time out returns `Err` with what `explain`
    /// evaluates to then (the page's own account of why).
    pub async fn wait_for_or(
        &mut self,
        expr: &str,
        explain: &str,
        secs: u64,
    ) -> Result<Value, Value> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        let guarded =
            format!("(() => {{ try {{ return ({expr}); }} catch (e) {{ return null; }} }})()");
        loop {
            let v = self.eval(&guarded).await;
            let falsy = v.is_null()
                || v == json!(false)
                || v == json!(0)
                || v == json!("")
                || v.as_array().is_some_and(|a| a.is_empty());
            if !falsy {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                return Err(self.eval(explain).await);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The centre of the element `selector` selects, in CSS pixels.
    pub async fn centre(&mut self, selector: &str) -> (f64, f64) {
        let sel = serde_json::to_string(selector).unwrap();
        let v = self
            .wait_for(
                // The point must hit the element itself (not a row drawn
                // over it or moved into its place by a redraw).
                &format!("(() => {{ const e = document.querySelector({sel}); if (!e) return null; e.scrollIntoView({{block: 'nearest'}}); const r = e.getBoundingClientRect(); if (!r.width) return null; const x = r.x + r.width / 2, y = r.y + r.height / 2; const hit = document.elementFromPoint(x, y); return hit && (hit === e || e.contains(hit)) ? [x, y] : null; }})()"),
                20,
            )
            .await;
        (v[0].as_f64().unwrap(), v[1].as_f64().unwrap())
    }

    /// Move the mouse over an element.
    pub async fn hover(&mut self, selector: &str) {
        let (x, y) = self.centre(selector).await;
        self.call(
            "Input.dispatchMouseEvent",
            json!({"type": "mouseMoved", "x": x, "y": y}),
        )
        .await;
    }

    /// Click an element with the mouse.
    pub async fn click(&mut self, selector: &str) {
        let (x, y) = self.centre(selector).await;
        for t in ["mouseMoved", "mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": t, "x": x, "y": y, "button": "left", "clickCount": 1}),
            )
            .await;
        }
    }

    /// Click an element until `expr` (what the click opens) is truthy: a
    /// page that draws new rows as they come can move a row between the
    /// moment it is found and the click, so a click that opened nothing
    /// is made again (every 3 s, for at most `secs`).
    pub async fn click_until(&mut self, selector: &str, expr: &str, secs: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            self.click(selector).await;
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = left.min(Duration::from_secs(3)).as_secs().max(1);
            if let Ok(v) = self.wait_for_or(expr, "null", wait).await {
                return v;
            }
            if Instant::now() >= deadline {
                panic!("clicked {selector} for {secs} s; still waiting for {expr}");
            }
        }
    }

    /// Save a PNG screenshot of the page.
    pub async fn screenshot(&mut self, path: &Path) {
        use base64::Engine;
        let r = self
            .call("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        let png = base64::engine::general_purpose::STANDARD
            .decode(r["data"].as_str().unwrap())
            .unwrap();
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(path, png).unwrap();
    }
}
