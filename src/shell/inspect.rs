//! The browser inspector: the page (embedded, no build step, no CDN) and its
//! event stream, `GET /api/events`, served by `listen`, `proxy` and
//! `replay --serve`.
//!
//! The stream is Server-Sent Events: each record's `data:` is one event
//! exactly as `--format json` writes it (one schema, `docs/events.md`), its
//! `id:` a counter. On connect the last `--history` events are sent first,
//! then live ones. Every browser has a bounded queue: one that falls
//! behind by more than [`QUEUE`] events gets a `dropped` record and is
//! disconnected (its page reconnects and starts again from the history);
//! the devices never wait for a browser.

use kinetid_wsdump::annotate::{Event, EventKind};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;

/// The inspector page.
pub const PAGE: &str = include_str!("inspect.html");

/// The inspector page's response: the page with a Content-Security-Policy
/// that lets only its own script run (by hash: an injected `<script>` or
/// `onerror=` would not, even if markup ever got in), load nothing from
/// elsewhere and talk only to its own origin.
pub fn page_response(head_only: bool) -> Vec<u8> {
    static CSP: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let csp = CSP.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let script = PAGE
            .split_once("<script>")
            .and_then(|(_, r)| r.split_once("</script>"))
            .map_or("", |(s, _)| s);
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script));
        format!("default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
    });
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nContent-Security-Policy: {csp}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
        PAGE.len()
    )
    .into_bytes();
    if !head_only {
        r.extend_from_slice(PAGE.as_bytes());
    }
    r
}

/// The plain WebSocket client page (`/client`).
pub const CLIENT_PAGE: &str = include_str!("client.html");

/// Events a browser may fall behind by before it is dropped.
pub const QUEUE: usize = 4096;

/// An event whose JSON is longer than this is not put on the stream; an
/// `omitted` record says what it was (`--format json` shows it whole).
pub const MAX_EVENT_JSON: usize = 256 * 1024;

/// Bytes of history kept at most, whatever `--history` says.
pub const HISTORY_BYTES: usize = 32 * 1024 * 1024;

/// Where events go for browsers: the recent history and the live stream.
///
/// The history keeps the events themselves (a copy costs a fraction of
/// writing their JSON); JSON is written only when a browser reads: for
/// the history when a page connects, for live events while one is
/// connected. With no page open, a device's bytes cost the inspector one
/// copy of each event.
pub struct Bus {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<str>>,
    keep: usize,
    keep_bytes: usize,
    /// Browsers dropped for falling behind.
    pub dropped_clients: AtomicU64,
    /// Pages reading the live stream (read without a lock on every batch).
    readers: std::sync::atomic::AtomicUsize,
}

/// What an `omitted` record says of the event it stands for.
#[derive(Clone, Copy)]
struct Gist {
    conn: u64,
    dir: &'static str,
    offset: u64,
    event: &'static str,
    payload: usize,
}

impl Gist {
    fn of(e: &Event, payload: usize) -> Gist {
        Gist {
            conn: e.conn,
            dir: e.dir.as_str(),
            offset: e.offset,
            event: kinetid_wsdump::render::json::type_name(&e.kind),
            payload,
        }
    }
}

/// One entry of the history.
#[derive(Clone)]
enum Kept {
    /// An event, as the annotator made it.
    Event(Event),
    /// A frame or message too big for the stream.
    Omitted(Gist),
    /// An SSE record already written (`replay --serve`).
    Record(Arc<str>),
}

impl Kept {
    fn of(e: &Event) -> Kept {
        // A big payload is never copied nor rendered (its hex alone is
        // twice its size): an `omitted` record stands for it.
        let payload = match &e.kind {
            EventKind::Frame(f) => f.payload.len(),
            EventKind::Message(m) => m.payload.len(),
            _ => 0,
        };
        if payload > MAX_EVENT_JSON / 4 {
            Kept::Omitted(Gist::of(e, payload))
        } else {
            Kept::Event(e.clone())
        }
    }

    /// Bytes it holds, roughly (for the history's byte bound).
    fn size(&self) -> usize {
        match self {
            Kept::Event(e) => {
                256 + match &e.kind {
                    EventKind::Frame(f) => f.payload.len() + f.head.len(),
                    EventKind::Message(m) => m.payload.len(),
                    EventKind::Request { head, .. } | EventKind::Response { head, .. } => {
                        head.len * 2
                    }
                    _ => 0,
                }
            }
            Kept::Omitted(_) => 64,
            Kept::Record(r) => r.len(),
        }
    }

    /// Its SSE record.
    fn record(&self, id: u64, json: &mut Vec<u8>) -> Arc<str> {
        json.clear();
        let g = match self {
            Kept::Record(r) => return r.clone(),
            Kept::Omitted(g) => *g,
            Kept::Event(e) => {
                kinetid_wsdump::render::json::event(json, e);
                json.pop(); // the newline
                if json.len() <= MAX_EVENT_JSON {
                    return record(id, None, json);
                }
                Gist::of(e, 0)
            }
        };
        json.clear();
        json.extend_from_slice(
            format!(
                "{{\"type\":\"omitted\",\"conn\":{},\"dir\":\"{}\",\"offset\":{},\"event\":\"{}\",\"payload_bytes\":{},\"why\":\"longer than the stream carries ({MAX_EVENT_JSON} bytes of JSON); --format json shows it whole\"}}",
                g.conn, g.dir, g.offset, g.event, g.payload
            )
            .as_bytes(),
        );
        record(id, None, json)
    }
}

struct Ring {
    q: VecDeque<(u64, Kept)>,
    bytes: usize,
    next_id: u64,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Bus(keep {})", self.keep)
    }
}

impl Bus {
    /// A bus keeping the last `keep` events (and at most `keep_bytes`).
    pub fn new(keep: usize, keep_bytes: usize) -> Bus {
        let (tx, _) = broadcast::channel(QUEUE);
        Bus {
            ring: Mutex::new(Ring {
                q: VecDeque::new(),
                bytes: 0,
                next_id: 1,
            }),
            tx,
            keep,
            keep_bytes,
            dropped_clients: AtomicU64::new(0),
            readers: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Put events on the stream (one lock for the batch).
    pub fn publish(&self, ev: &[Event]) {
        // Without history and without a reader there is nothing to do; a
        // page subscribing at this very moment sees the events that come
        // after (no history was kept to give it anyway).
        if ev.is_empty() || (self.keep == 0 && self.readers.load(Ordering::Relaxed) == 0) {
            return;
        }
        let mut json = Vec::new();
        let mut ring = self.ring.lock().expect("bus");
        // Read under the lock subscribers take: an event is either in a
        // new page's history or on its stream, never lost between.
        let live = self.readers.load(Ordering::Relaxed) > 0;
        for e in ev {
            let id = ring.next_id;
            ring.next_id += 1;
            let kept = Kept::of(e);
            if live {
                // Receivers may be gone since: not an error.
                let _ = self.tx.send(kept.record(id, &mut json));
            }
            self.keep_entry(&mut ring, id, kept);
        }
    }

    fn keep_entry(&self, ring: &mut Ring, id: u64, kept: Kept) {
        if self.keep == 0 {
            return;
        }
        ring.bytes += kept.size();
        ring.q.push_back((id, kept));
        while ring.q.len() > self.keep || (ring.bytes > self.keep_bytes && ring.q.len() > 1) {
            if let Some((_, old)) = ring.q.pop_front() {
                ring.bytes -= old.size();
            }
        }
    }

    /// The history (as SSE records) and a receiver for what comes after
    /// it, with nothing lost or repeated in between. The caller is counted
    /// as a reader until it calls [`Bus::unsubscribe`].
    pub fn subscribe(&self) -> (Vec<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let (snapshot, rx) = {
            let ring = self.ring.lock().expect("bus");
            self.readers.fetch_add(1, Ordering::Relaxed);
            let snap: Vec<(u64, Kept)> = ring.q.iter().cloned().collect();
            (snap, self.tx.subscribe())
        };
        let mut json = Vec::new();
        let history = snapshot
            .iter()
            .map(|(id, k)| k.record(*id, &mut json))
            .collect();
        (history, rx)
    }

    /// A reader from [`Bus::subscribe`] is gone.
    pub fn unsubscribe(&self) {
        self.readers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Events kept.
    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.ring.lock().expect("bus").q.len()
    }
}

impl Bus {
    /// Put one JSON line (without its newline) on the stream.
    pub fn publish_line(&self, json: &[u8]) {
        let mut ring = self.ring.lock().expect("bus");
        let id = ring.next_id;
        ring.next_id += 1;
        let rec = record(id, None, json);
        let _ = self.tx.send(rec.clone());
        self.keep_entry(&mut ring, id, Kept::Record(rec));
    }
}

/// `replay --serve`: collects the JSON lines replay writes, up to a bound
/// (the first events are kept; a capture is browsed from its start).
pub struct Collector {
    /// Where the lines go.
    pub bus: Arc<Bus>,
    part: Vec<u8>,
    bytes: usize,
    /// Events kept.
    pub events: u64,
    /// Events not kept (over [`SERVE_BYTES`]).
    pub left_out: u64,
}

/// JSON bytes `replay --serve` keeps in memory.
pub const SERVE_BYTES: usize = 512 * 1024 * 1024;

impl Collector {
    /// An empty collector.
    pub fn new() -> Collector {
        Collector {
            bus: Arc::new(Bus::new(usize::MAX, usize::MAX)),
            part: Vec::new(),
            bytes: 0,
            events: 0,
            left_out: 0,
        }
    }

    fn line(&mut self, l: &[u8]) {
        if l.is_empty() {
            return;
        }
        if self.bytes + l.len() > SERVE_BYTES {
            self.left_out += 1;
            return;
        }
        self.bytes += l.len();
        self.events += 1;
        self.bus.publish_line(l);
    }
}

impl std::io::Write for Collector {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'\n') {
            if self.part.is_empty() {
                self.line(&rest[..i]);
            } else {
                self.part.extend_from_slice(&rest[..i]);
                let l = std::mem::take(&mut self.part);
                self.line(&l);
            }
            rest = &rest[i + 1..];
        }
        if self.part.len() + rest.len() <= MAX_EVENT_JSON * 64 {
            self.part.extend_from_slice(rest);
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Serve the inspector over collected events until Ctrl-C: the page, its
/// info call and the event stream (all events, then an `end` record).
/// Loopback peers only, pages of this server only (the listener's Host
/// and Origin rules).
pub fn serve_replay(c: Collector, bind: &str, label: &str) -> Result<u8, super::AppError> {
    use super::AppError;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| AppError::Io("tokio runtime".into(), e))?;
    rt.block_on(async move {
        let l = tokio::net::TcpListener::bind(bind)
            .await
            .map_err(|e| crate::shell::cannot_listen("--serve=", bind, e))?;
        let addr = l
            .local_addr()
            .map_err(|e| AppError::Io("listener".into(), e))?;
        eprintln!(
            "kinetid-wsdump: inspector at http://{addr}/ over {} events of {}{} (Ctrl-C stops)",
            c.events,
            kinetid_wsdump::escape::Esc(label),
            if c.left_out > 0 {
                format!(
                    "; {} later events not loaded (more than {} MiB of JSON)",
                    c.left_out,
                    SERVE_BYTES >> 20
                )
            } else {
                String::new()
            }
        );
        let info = serde_json::json!({
            "mode": "replay", "file": label, "events": c.events, "left_out": c.left_out,
            "started": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()),
            "version": env!("CARGO_PKG_VERSION"),
        });
        let shared = Arc::new((c.bus, info));
        loop {
            let (sock, peer) = tokio::select! {
                r = l.accept() => match r {
                    Ok(x) => x,
                    Err(_) => { tokio::time::sleep(Duration::from_millis(50)).await; continue; }
                },
                _ = tokio::signal::ctrl_c() => return Ok(0),
            };
            let sh = shared.clone();
            tokio::spawn(async move { replay_http(sh, sock, peer).await });
        }
    })
}

async fn replay_http(
    sh: Arc<(Arc<Bus>, serde_json::Value)>,
    mut sock: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
) {
    use super::http::{check_browser, is_loopback, json_response};
    let limits = kinetid_wsdump::annotate::Config::default().limits;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let h = match super::http::read_head(&mut sock, limits, deadline).await {
        Ok((h, _)) => h,
        Err(refusal) => {
            if let Some(r) = refusal {
                let _ = sock.write_all(&r).await;
            }
            return;
        }
    };
    let (method, path) = super::http::method_and_path(&h);
    let err =
        |status: u16, msg: &str| json_response(status, &serde_json::json!({ "error": msg }), "");
    let resp = if !is_loopback(&peer) {
        err(403, "replay --serve answers this machine only")
    } else if let Err((status, why)) = check_browser(&h, &[]) {
        err(status, &why)
    } else {
        match (method, path) {
            ("GET" | "HEAD", "/" | "/index.html") => page_response(method == "HEAD"),
            ("GET", "/api/info") => json_response(200, &sh.1, ""),
            ("GET", "/api/devices") => json_response(200, &serde_json::json!([]), ""),
            ("GET", "/api/events") => {
                stream(&sh.0, &mut sock, false, std::future::pending()).await;
                return;
            }
            ("OPTIONS", _) => super::http::state_change_refused(method, &h).unwrap_or_default(),
            _ => err(404, "replay --serve has the page (/), /api/info and /api/events; nothing can be switched in a capture"),
        }
    };
    let _ = sock.write_all(&resp).await;
    let _ = sock.shutdown().await;
}

/// One SSE record.
fn record(id: u64, event: Option<&str>, data: &[u8]) -> Arc<str> {
    let mut s = String::with_capacity(data.len() + 32);
    s.push_str("id: ");
    s.push_str(&id.to_string());
    s.push('\n');
    if let Some(e) = event {
        s.push_str("event: ");
        s.push_str(e);
        s.push('\n');
    }
    s.push_str("data: ");
    // JSON lines never hold a raw newline; the event's bytes are UTF-8
    // (the JSON writer escapes everything else).
    s.push_str(&String::from_utf8_lossy(data));
    s.push_str("\n\n");
    Arc::from(s)
}

/// How a browser's stream ended.
#[derive(Debug, PartialEq, Eq)]
pub enum StreamEnd {
    /// The browser went away (or the server is stopping).
    Gone,
    /// It fell behind by more than [`QUEUE`] events.
    Dropped(u64),
    /// Writes to it did not finish in time.
    Stalled,
    /// `replay --serve`: everything was sent.
    Complete,
}

impl StreamEnd {
    /// Why a page was cut off, for a line on stderr (None: it left, or
    /// got everything).
    pub fn why(&self) -> Option<String> {
        match self {
            StreamEnd::Dropped(n) => Some(format!("fell {n} events behind")),
            StreamEnd::Stalled => Some("read nothing for 10 s".to_string()),
            StreamEnd::Gone | StreamEnd::Complete => None,
        }
    }
}

/// The response head of the event stream.
pub const STREAM_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n";

/// Write what is gathered for a page, within 10 s (a page that reads no
/// more is let go), and clear it.
async fn put<W: AsyncWrite + Unpin>(w: &mut W, out: &mut Vec<u8>) -> Result<(), StreamEnd> {
    match tokio::time::timeout(Duration::from_secs(10), w.write_all(out)).await {
        Ok(Ok(())) => {
            out.clear();
            Ok(())
        }
        Ok(Err(_)) => Err(StreamEnd::Gone),
        Err(_) => Err(StreamEnd::Stalled),
    }
}

/// Stream events to a browser until it goes away, falls behind or
/// `stop` fires. `live`: keep streaming after the history (`listen`,
/// `proxy`), or end with an `end` record (`replay --serve`).
pub async fn stream<W: AsyncWrite + Unpin>(
    bus: &Bus,
    w: &mut W,
    live: bool,
    stop: impl std::future::Future<Output = ()>,
) -> StreamEnd {
    tokio::pin!(stop);
    struct Reading<'a>(&'a Bus);
    impl Drop for Reading<'_> {
        fn drop(&mut self) {
            self.0.unsubscribe();
        }
    }
    let (history, mut rx) = bus.subscribe();
    let _reading = Reading(bus);
    let mut out = Vec::with_capacity(64 * 1024);
    out.extend_from_slice(STREAM_HEAD);
    // A comment first, so the browser sees the stream open at once.
    out.extend_from_slice(b": kinetid-wsdump events\n\n");
    let mut sent = 0u64;
    for rec in &history {
        out.extend_from_slice(rec.as_bytes());
        sent += 1;
        if out.len() >= 64 * 1024 {
            if let Err(end) = put(w, &mut out).await {
                return end;
            }
        }
    }
    if !live {
        let end =
            format!("event: end\ndata: {{\"type\":\"end_of_capture\",\"events\":{sent}}}\n\n");
        out.extend_from_slice(end.as_bytes());
        if let Err(end) = put(w, &mut out).await {
            return end;
        }
        let _ = w.flush().await;
        return StreamEnd::Complete;
    }
    let mut beat = tokio::time::interval(Duration::from_secs(15));
    beat.tick().await;
    loop {
        if !out.is_empty() {
            if let Err(end) = put(w, &mut out).await {
                return end;
            }
            if out.capacity() > 256 * 1024 {
                out = Vec::with_capacity(64 * 1024);
            }
        }
        let first = tokio::select! {
            r = rx.recv() => r,
            _ = beat.tick() => {
                out.extend_from_slice(b": keep-alive\n\n");
                continue;
            }
            _ = &mut stop => return StreamEnd::Gone,
        };
        let mut next = Some(first);
        // Take what is already waiting, up to 256 KiB a write.
        while let Some(r) = next.take() {
            match r {
                Ok(rec) => out.extend_from_slice(rec.as_bytes()),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    bus.dropped_clients.fetch_add(1, Ordering::Relaxed);
                    let msg = format!(
                        "event: dropped\ndata: {{\"type\":\"dropped\",\"missed\":{n},\"why\":\"this page fell more than {QUEUE} events behind; devices are never slowed for a browser, so the stream ends here (reload to start again from the history)\"}}\n\n"
                    );
                    out.extend_from_slice(msg.as_bytes());
                    let _ = tokio::time::timeout(Duration::from_secs(1), w.write_all(&out)).await;
                    return StreamEnd::Dropped(n);
                }
                Err(broadcast::error::RecvError::Closed) => return StreamEnd::Gone,
            }
            if out.len() < 256 * 1024 {
                next = match rx.try_recv() {
                    Ok(rec) => Some(Ok(rec)),
                    Err(broadcast::error::TryRecvError::Lagged(n)) => {
                        Some(Err(broadcast::error::RecvError::Lagged(n)))
                    }
                    Err(_) => None,
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinetid_wsdump::annotate::Annotator;
    use kinetid_wsdump::wire::frame::Direction;

    fn events(n: usize) -> Vec<Event> {
        let mut a = Annotator::new(1, kinetid_wsdump::annotate::Config::default());
        let mut ev = Vec::new();
        a.feed(
            Direction::C2S,
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            None,
            &mut ev,
        );
        ev.truncate(1);
        ev.iter().cycle().take(n).cloned().collect()
    }

    #[test]
    fn history_is_bounded_by_count_and_bytes() {
        let bus = Bus::new(10, HISTORY_BYTES);
        bus.publish(&events(25));
        assert_eq!(bus.kept(), 10);
        let (h, _) = bus.subscribe();
        assert!(h[0].starts_with("id: 16\n"), "{}", h[0]);
        // The byte bound, not the count, limits this one.
        let small = Bus::new(1000, 2000);
        small.publish(&events(100));
        let kept = small.kept();
        assert!(kept > 0 && kept < 100, "{kept}");
        assert!(small.ring.lock().unwrap().bytes <= 2000);
        let (h, _) = small.subscribe();
        assert_eq!(h.len(), kept);
    }

    #[test]
    fn records_carry_the_json_line() {
        let bus = Bus::new(5, HISTORY_BYTES);
        let ev = events(1);
        bus.publish(&ev);
        let (h, _) = bus.subscribe();
        let mut line = Vec::new();
        kinetid_wsdump::render::json::event(&mut line, &ev[0]);
        let want = format!("id: 1\ndata: {}\n", String::from_utf8(line).unwrap());
        assert_eq!(&*h[0], want);
    }

    #[tokio::test]
    async fn a_browser_that_falls_behind_is_dropped_with_a_record() {
        let bus = Bus::new(0, 0);
        // A writer that never finishes a write stands for a stalled browser;
        // a sink that accepts everything, for one that keeps up. Here: the
        // receiver is created, then more than QUEUE events arrive before it
        // reads any.
        let (mut a, mut b) = tokio::io::duplex(1 << 20);
        let bus = Arc::new(bus);
        let b2 = bus.clone();
        let task =
            tokio::spawn(async move { stream(&b2, &mut a, true, std::future::pending()).await });
        // Let the stream subscribe.
        while bus.tx.receiver_count() == 0 {
            tokio::task::yield_now().await;
        }
        bus.publish(&events(QUEUE + 100));
        let end = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(end, StreamEnd::Dropped(_)), "{end:?}");
        let mut got = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut b, &mut got).await;
        let got = String::from_utf8_lossy(&got);
        assert!(got.contains("event: dropped"), "{got}");
        assert_eq!(bus.dropped_clients.load(Ordering::Relaxed), 1);
    }
}
