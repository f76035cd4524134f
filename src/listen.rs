//! `kinetid-wsdump listen`: a raw TCP listener that performs the upgrade by
//! hand, annotates every byte both ways through the same core as `replay`,
//! plays the Kinetid backend, and forwards on/off commands to devices.
//!
//! One task per connection owns its socket and its [`Annotator`]; every byte
//! read or written goes through [`Conn::observe`], which feeds the annotator,
//! appends to the recording and renders the events. The backend reacts to
//! the annotator's events, so what is shown is exactly what was acted on.

use crate::annotate::{close_code_for, Annotator, Config, Event, EventKind};
use crate::app::{config, printer, AppError};
use crate::capture::{capture_line, Chunk, ChunkKind, CAPTURE_MAGIC};
use crate::cli::ListenArgs;
use crate::frame::{close_payload, CloseCode, Direction, OpCode};
use crate::handshake::{self, error_response, RequestKind};
use crate::note::Severity;
use crate::quirk::server_frame;
use crate::render::Printer;
use crate::{kinetid, replay::Stats};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, mpsc, oneshot, Semaphore};

const PAGE: &str = include_str!("page.html");

/// Unix time in seconds, rounded to the microsecond (what a capture stores).
pub fn now() -> f64 {
    let us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros())
        .unwrap_or(0) as u64;
    us as f64 / 1e6
}

/// Settings of a running listener (built from the flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Annotator config.
    pub cfg: Config,
    /// Renderer.
    pub printer: Printer,
    /// No per-event output.
    pub quiet: bool,
    /// Keep connections open on violations.
    pub lenient: bool,
    /// Echo mode (no Kinetid layer).
    pub echo: bool,
    /// Ping period (zero: none).
    pub ping_interval: Duration,
    /// Close a device silent this long.
    pub idle_timeout: Duration,
    /// Time allowed for hello.
    pub hello_timeout: Duration,
    /// Time allowed for the HTTP head.
    pub head_timeout: Duration,
    /// API bearer token.
    pub api_token: Option<String>,
    /// Devices refused at hello.
    pub refuse: Vec<String>,
    /// How long a switch waits for the device.
    pub reply_timeout: Duration,
}

/// What a connection task can be told to do.
#[derive(Debug)]
pub enum ConnCmd {
    /// Send a text message.
    Text(String),
    /// Send a ping.
    Ping(Vec<u8>),
    /// Close with a code and reason.
    Close(u16, String),
}

/// Where a device's answer to a command goes: its `state` or its `error`.
type Reply = oneshot::Sender<Result<Value, Value>>;

/// One row of the device table.
#[derive(Debug, Clone)]
pub struct Device {
    /// Device id.
    pub id: String,
    /// active or passive.
    pub role: String,
    /// For passives: the active plug relaying them.
    pub via: Option<String>,
    /// Connection carrying it.
    pub conn: u64,
    /// Peer address of that connection.
    pub peer: String,
    /// When it (or its active plug) connected.
    pub since: f64,
    /// Last message about it.
    pub last_seen: f64,
    /// Relay state as last reported.
    pub on: Option<bool>,
    /// Last report's power.
    pub power_w: Option<f64>,
    /// Last report's energy.
    pub energy_wh: Option<f64>,
    /// Last report's seq.
    pub seq: Option<u64>,
    /// Reports accepted (duplicates by seq not counted).
    pub reports: u64,
    /// Duplicate reports dropped.
    pub duplicates: u64,
    /// Still connected?
    pub online: bool,
    recent_seqs: VecDeque<u64>,
}

impl Device {
    fn json(&self) -> Value {
        json!({
            "id": self.id, "role": self.role, "via": self.via, "conn": self.conn, "peer": self.peer,
            "online": self.online, "connected_since": self.since, "last_seen": self.last_seen,
            "on": self.on, "power_w": self.power_w, "energy_wh": self.energy_wh, "seq": self.seq,
            "reports": self.reports, "duplicates": self.duplicates,
        })
    }
}

/// Why a switch command did not produce a state.
#[derive(Debug)]
pub enum SwitchError {
    /// No such device, or it is offline.
    NotFound(String),
    /// The device answered `error`.
    Device(Value),
    /// No answer in time.
    Timeout,
}

/// Counters printed at exit.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections accepted.
    pub connections: AtomicU64,
    /// Connections refused with 503.
    pub refused: AtomicU64,
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// Data messages received.
    pub messages_in: AtomicU64,
    /// Bytes received.
    pub bytes_in: AtomicU64,
    /// Bytes sent.
    pub bytes_out: AtomicU64,
    /// Error notes raised.
    pub errors: AtomicU64,
    /// Warning notes raised.
    pub warnings: AtomicU64,
}

/// State shared by every connection.
pub struct Hub {
    /// Settings.
    pub s: Settings,
    devices: Mutex<HashMap<String, Device>>,
    conns: Mutex<HashMap<u64, mpsc::Sender<ConnCmd>>>,
    pending: Mutex<HashMap<(u64, u64), Reply>>,
    next_conn: AtomicU64,
    next_cmd: AtomicU64,
    /// Counters.
    pub counters: Counters,
    out: Option<mpsc::Sender<Vec<u8>>>,
    record: Option<mpsc::Sender<String>>,
}

impl Hub {
    /// All devices as JSON.
    pub fn devices_json(&self) -> Value {
        let d = self.devices.lock().expect("devices");
        let mut v: Vec<&Device> = d.values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Value::Array(v.into_iter().map(Device::json).collect())
    }

    /// One device as JSON.
    pub fn device_json(&self, id: &str) -> Option<Value> {
        self.devices
            .lock()
            .expect("devices")
            .get(id)
            .map(Device::json)
    }

    fn conn_of(&self, id: &str) -> Option<(u64, mpsc::Sender<ConnCmd>)> {
        let conn = {
            let d = self.devices.lock().expect("devices");
            let dev = d.get(id)?;
            if !dev.online {
                return None;
            }
            dev.conn
        };
        self.conns
            .lock()
            .expect("conns")
            .get(&conn)
            .map(|tx| (conn, tx.clone()))
    }

    /// Send `switch` to a device (through its active plug for a passive) and
    /// wait for its `state` or `error`.
    pub async fn switch(&self, id: &str, on: Option<bool>) -> Result<Value, SwitchError> {
        let Some((conn, tx)) = self.conn_of(id) else {
            return Err(SwitchError::NotFound(format!("no connected device {id}")));
        };
        let cmd = 9000 + self.next_cmd.fetch_add(1, Ordering::Relaxed) + 1;
        let (rtx, rrx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending")
            .insert((conn, cmd), rtx);
        if tx
            .send(ConnCmd::Text(kinetid::switch(cmd, id, on)))
            .await
            .is_err()
        {
            self.pending.lock().expect("pending").remove(&(conn, cmd));
            return Err(SwitchError::NotFound(format!("device {id} disconnected")));
        }
        match tokio::time::timeout(self.s.reply_timeout, rrx).await {
            Ok(Ok(Ok(state))) => Ok(state),
            Ok(Ok(Err(err))) => Err(SwitchError::Device(err)),
            Ok(Err(_)) => Err(SwitchError::NotFound(format!(
                "device {id} disconnected before answering"
            ))),
            Err(_) => {
                self.pending.lock().expect("pending").remove(&(conn, cmd));
                Err(SwitchError::Timeout)
            }
        }
    }

    /// Send a raw command to the connection carrying a device.
    pub async fn command(&self, id: &str, c: ConnCmd) -> Result<(), String> {
        let (_, tx) = self
            .conn_of(id)
            .ok_or_else(|| format!("no connected device {id}"))?;
        tx.send(c)
            .await
            .map_err(|_| format!("device {id} disconnected"))
    }

    fn learn(&self, id: &str, role: &str, via: Option<&str>, conn: u64, peer: &str, t: f64) {
        let mut d = self.devices.lock().expect("devices");
        let e = d.entry(id.to_string()).or_insert_with(|| Device {
            id: id.to_string(),
            role: role.to_string(),
            via: None,
            conn,
            peer: peer.to_string(),
            since: t,
            last_seen: t,
            on: None,
            power_w: None,
            energy_wh: None,
            seq: None,
            reports: 0,
            duplicates: 0,
            online: true,
            recent_seqs: VecDeque::new(),
        });
        if e.conn != conn || !e.online {
            e.since = t;
        }
        e.role = role.to_string();
        e.via = via.map(str::to_string);
        e.conn = conn;
        e.peer = peer.to_string();
        e.online = true;
        e.last_seen = t;
    }
}

/// Run `listen` from flags.
pub fn run(a: ListenArgs) -> Result<u8, AppError> {
    let settings = Settings {
        cfg: config(&a.limits, !a.echo),
        printer: printer(&a.output),
        quiet: a.quiet,
        lenient: a.lenient,
        echo: a.echo,
        ping_interval: a.ping_interval,
        idle_timeout: a.idle_timeout,
        hello_timeout: a.hello_timeout,
        head_timeout: a.head_timeout,
        api_token: a.api_token.clone(),
        refuse: a.refuse.clone(),
        reply_timeout: a.reply_timeout,
    };
    let console = !a.no_console && (a.console || std::io::stdin().is_terminal());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Io("tokio runtime".into(), e))?;
    let r = rt.block_on(serve(
        a.bind.clone(),
        a.max_connections,
        a.record.clone(),
        console,
        settings,
    ));
    // The console's stdin read sits in a blocking thread that never ends by itself.
    rt.shutdown_timeout(Duration::from_millis(200));
    r
}

async fn serve(
    bind: String,
    max_conns: usize,
    record: Option<std::path::PathBuf>,
    console: bool,
    s: Settings,
) -> Result<u8, AppError> {
    let listener = TcpListener::bind(&bind)
        .await
        .map_err(|e| AppError::Failed(format!("cannot listen on {bind}: {e}")))?;
    let local = listener
        .local_addr()
        .map_err(|e| AppError::Io("local address".into(), e))?;
    // The first line on stderr says where we are: tests and scripts read it.
    eprintln!("kinetid-wsdump: listening on {local} (ws://{local}/ws, page http://{local}/, API http://{local}/api/devices)");

    let quiet = s.quiet;
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>(4096);
    let writer = (!quiet).then(|| tokio::task::spawn_blocking(move || stdout_writer(out_rx)));
    let (rec_tx, rec_task) = match record {
        Some(path) => {
            let f = std::fs::File::create(&path)
                .map_err(|e| AppError::Io(path.display().to_string(), e))?;
            let (tx, rx) = mpsc::channel::<String>(65536);
            (Some(tx), Some(tokio::spawn(record_writer(f, rx))))
        }
        None => (None, None),
    };
    let hub = Arc::new(Hub {
        s,
        devices: Mutex::new(HashMap::new()),
        conns: Mutex::new(HashMap::new()),
        pending: Mutex::new(HashMap::new()),
        next_conn: AtomicU64::new(0),
        next_cmd: AtomicU64::new(0),
        counters: Counters::default(),
        out: (!quiet).then_some(out_tx),
        record: rec_tx,
    });
    let (shutdown_tx, _) = broadcast::channel::<()>(1);
    let sem = Arc::new(Semaphore::new(max_conns));
    let tasks = tokio_util_tasks();
    if console {
        tokio::spawn(console_loop(hub.clone()));
    }
    let mut sigterm = signal_term();
    loop {
        tokio::select! {
            acc = listener.accept() => {
                let (sock, peer) = match acc {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = sock.set_nodelay(true);
                let hub = hub.clone();
                match sem.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let id = hub.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
                        hub.counters.connections.fetch_add(1, Ordering::Relaxed);
                        let sd = shutdown_tx.subscribe();
                        let t = tokio::spawn(async move {
                            let mut c = Conn::new(id, peer, sock, hub);
                            c.run(sd).await;
                            drop(permit);
                        });
                        tasks.lock().expect("tasks").push(t);
                    }
                    Err(_) => {
                        hub.counters.refused.fetch_add(1, Ordering::Relaxed);
                        tokio::spawn(async move {
                            let mut sock = sock;
                            let _ = sock.write_all(&error_response(503, "Retry-After: 5\r\n", "connection limit reached")).await;
                            let _ = sock.shutdown().await;
                        });
                    }
                }
                let mut t = tasks.lock().expect("tasks");
                if t.len() > 1024 {
                    t.retain(|h| !h.is_finished());
                }
            }
            _ = tokio::signal::ctrl_c() => break,
            _ = sigterm.recv() => break,
        }
    }
    eprintln!("kinetid-wsdump: shutting down: close 1001 to every device (up to 2 s; Ctrl-C again to quit now)");
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    let _ = shutdown_tx.send(());
    let handles: Vec<_> = std::mem::take(&mut *tasks.lock().expect("tasks"));
    let _ = tokio::time::timeout(Duration::from_millis(2500), async {
        for h in handles {
            let _ = h.await;
        }
    })
    .await;
    let c = &hub.counters;
    let summary = format!(
        "kinetid-wsdump: {} connections ({} refused), {} frames in, {} frames out, {} messages in, {} bytes in, {} bytes out, {} error notes, {} warnings",
        c.connections.load(Ordering::Relaxed),
        c.refused.load(Ordering::Relaxed),
        c.frames_in.load(Ordering::Relaxed),
        c.frames_out.load(Ordering::Relaxed),
        c.messages_in.load(Ordering::Relaxed),
        c.bytes_in.load(Ordering::Relaxed),
        c.bytes_out.load(Ordering::Relaxed),
        c.errors.load(Ordering::Relaxed),
        c.warnings.load(Ordering::Relaxed),
    );
    // An empty item tells each writer to flush and end (tasks still holding the
    // hub, like the console, would keep the channels open forever).
    if let Some(o) = &hub.out {
        let _ = o.send(Vec::new()).await;
    }
    if let Some(r) = &hub.record {
        let _ = r.send(String::new()).await;
    }
    if let Some(w) = writer {
        let _ = w.await;
    }
    if let Some(r) = rec_task {
        let _ = r.await;
    }
    eprintln!("{summary}");
    Ok(0)
}

type Tasks = Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>;
fn tokio_util_tasks() -> Tasks {
    Arc::new(Mutex::new(Vec::new()))
}

#[cfg(unix)]
fn signal_term() -> SigTerm {
    SigTerm(tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok())
}
#[cfg(not(unix))]
fn signal_term() -> SigTerm {
    SigTerm(())
}
#[cfg(unix)]
struct SigTerm(Option<tokio::signal::unix::Signal>);
#[cfg(not(unix))]
struct SigTerm(());
impl SigTerm {
    async fn recv(&mut self) {
        #[cfg(unix)]
        if let Some(s) = self.0.as_mut() {
            s.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

fn stdout_writer(mut rx: mpsc::Receiver<Vec<u8>>) {
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let mut broken = false;
    while let Some(b) = rx.blocking_recv() {
        if b.is_empty() {
            break;
        }
        if broken {
            continue;
        }
        if w.write_all(&b).is_err() {
            broken = true;
            continue;
        }
        // Flush when nothing else is waiting, so output is live but batched under load.
        if rx.is_empty() && w.flush().is_err() {
            broken = true;
        }
    }
    let _ = w.flush();
}

async fn record_writer(f: std::fs::File, mut rx: mpsc::Receiver<String>) {
    let mut w = std::io::BufWriter::new(f);
    let _ = writeln!(w, "{CAPTURE_MAGIC}");
    let _ = w.flush();
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            line = rx.recv() => match line {
                Some(l) if !l.is_empty() => { let _ = w.write_all(l.as_bytes()); }
                _ => break,
            },
            _ = tick.tick() => { let _ = w.flush(); }
        }
    }
    let _ = w.flush();
}

/// One connection.
struct Conn {
    id: u64,
    peer: SocketAddr,
    sock: TcpStream,
    hub: Arc<Hub>,
    ann: Annotator,
    stats: Stats,
    hello: Option<String>,
    close_sent: bool,
    close_received: bool,
    failed: bool,
    last_seen: Instant,
    ping_seq: u64,
}

impl Conn {
    fn new(id: u64, peer: SocketAddr, sock: TcpStream, hub: Arc<Hub>) -> Conn {
        let ann = Annotator::new(id, hub.s.cfg);
        Conn {
            id,
            peer,
            sock,
            hub,
            ann,
            stats: Stats::default(),
            hello: None,
            close_sent: false,
            close_received: false,
            failed: false,
            last_seen: Instant::now(),
            ping_seq: 0,
        }
    }

    /// Feed bytes to the annotator, record them, render and count the events.
    fn observe(&mut self, dir: Direction, bytes: &[u8]) -> Vec<Event> {
        let t = now();
        let mut ev = Vec::new();
        self.ann.feed(dir, bytes, Some(t), &mut ev);
        self.record(Chunk {
            time: Some(t),
            conn: self.id,
            kind: ChunkKind::Data(dir, bytes.to_vec()),
        });
        let c = &self.hub.counters;
        match dir {
            Direction::C2S => c.bytes_in.fetch_add(bytes.len() as u64, Ordering::Relaxed),
            Direction::S2C => c.bytes_out.fetch_add(bytes.len() as u64, Ordering::Relaxed),
        };
        self.emit(&ev);
        ev
    }

    fn record(&self, c: Chunk) {
        if let Some(r) = &self.hub.record {
            // A recording loses nothing: when the disk falls behind, connections wait.
            if send_or_wait(r, capture_line(&c)).is_err() {
                tracing::error!(
                    "recording closed: capture line for connection {} not written",
                    self.id
                );
            }
        }
    }

    fn emit(&mut self, ev: &[Event]) {
        let c = &self.hub.counters;
        for e in ev {
            let before = self.stats;
            self.stats.add(e);
            c.errors
                .fetch_add(self.stats.errors - before.errors, Ordering::Relaxed);
            c.warnings
                .fetch_add(self.stats.warnings - before.warnings, Ordering::Relaxed);
            match (&e.kind, e.dir) {
                (EventKind::Frame(_), Direction::C2S) => {
                    c.frames_in.fetch_add(1, Ordering::Relaxed)
                }
                (EventKind::Frame(_), Direction::S2C) => {
                    c.frames_out.fetch_add(1, Ordering::Relaxed)
                }
                (EventKind::Message(_), Direction::C2S) => {
                    c.messages_in.fetch_add(1, Ordering::Relaxed)
                }
                _ => 0,
            };
        }
        if let Some(out) = &self.hub.out {
            let mut buf = Vec::new();
            for e in ev {
                let _ = self.hub.s.printer.event(&mut buf, e);
            }
            if !buf.is_empty() {
                // Back-pressure: a slow terminal slows the connections, never loses output.
                let _ = send_or_wait(out, buf);
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<Vec<Event>> {
        self.sock.write_all(bytes).await?;
        Ok(self.observe(Direction::S2C, bytes))
    }

    async fn send_frame(&mut self, op: OpCode, payload: &[u8]) -> std::io::Result<()> {
        let mut b = Vec::with_capacity(payload.len() + 10);
        server_frame(&mut b, op, payload);
        self.send(&b).await.map(|_| ())
    }

    async fn send_close(&mut self, code: u16, reason: &str) -> std::io::Result<()> {
        if self.close_sent {
            return Ok(());
        }
        self.close_sent = true;
        self.send_frame(OpCode::Close, &close_payload(Some(CloseCode(code)), reason))
            .await
    }

    async fn run(&mut self, mut shutdown: broadcast::Receiver<()>) {
        let t = now();
        let mut ev = Vec::new();
        self.ann.open(&self.peer.to_string(), Some(t), &mut ev);
        self.record(Chunk {
            time: Some(t),
            conn: self.id,
            kind: ChunkKind::Open(self.peer.to_string()),
        });
        self.emit(&ev);
        let upgraded = self.handshake().await;
        if let Some(leftover) = upgraded {
            let (tx, rx) = mpsc::channel(64);
            self.hub.conns.lock().expect("conns").insert(self.id, tx);
            self.websocket(leftover, rx, &mut shutdown).await;
            self.hub.conns.lock().expect("conns").remove(&self.id);
            let mut d = self.hub.devices.lock().expect("devices");
            for dev in d.values_mut() {
                if dev.conn == self.id {
                    dev.online = false;
                }
            }
            drop(d);
            self.hub
                .pending
                .lock()
                .expect("pending")
                .retain(|(c, _), _| *c != self.id);
        }
        let _ = self.sock.shutdown().await;
        let t = now();
        let mut ev = Vec::new();
        self.ann.finish(Some(t), &mut ev);
        self.record(Chunk {
            time: Some(t),
            conn: self.id,
            kind: ChunkKind::Eof,
        });
        self.emit(&ev);
    }

    /// Read and answer the HTTP head. Returns the handshake's outcome: for an
    /// upgrade, the events the frames after the head already produced.
    async fn handshake(&mut self) -> Option<Vec<Event>> {
        let deadline = tokio::time::Instant::now() + self.hub.s.head_timeout;
        let mut raw: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            let n = match tokio::time::timeout_at(deadline, self.sock.read(&mut buf)).await {
                Err(_) => {
                    let _ = self
                        .send(&error_response(
                            408,
                            "",
                            &format!(
                                "request head not finished within {} s",
                                self.hub.s.head_timeout.as_secs_f64()
                            ),
                        ))
                        .await;
                    return None;
                }
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(n)) => n,
            };
            if raw.len() < self.hub.s.cfg.limits.max_head_bytes + 4096 {
                raw.extend_from_slice(&buf[..n]);
            }
            let ev = self.observe(Direction::C2S, &buf[..n]);
            for (i, e) in ev.iter().enumerate() {
                match &e.kind {
                    EventKind::HeadError(he) => {
                        let _ = self.send(&error_response(he.status, "", &he.reason)).await;
                        return None;
                    }
                    EventKind::Request {
                        head,
                        kind: RequestKind::Plain,
                        ..
                    } => {
                        let body = raw[head.len.min(raw.len())..].to_vec();
                        let head = head.clone();
                        self.plain_http(head, body).await;
                        return None;
                    }
                    EventKind::Request {
                        verdict: Some(v), ..
                    } => {
                        let resp = handshake::server_response(v);
                        let ok = v.accepted();
                        if !ok {
                            let _ = self.send(&resp).await;
                            return None;
                        }
                        if self.sock.write_all(&resp).await.is_err() {
                            return None;
                        }
                        self.observe(Direction::S2C, &resp);
                        // Frames that came in the same read as the head.
                        return Some(ev[i + 1..].to_vec());
                    }
                    _ => {}
                }
            }
        }
    }

    async fn plain_http(&mut self, head: handshake::HttpHead, mut body: Vec<u8>) {
        let parts: Vec<&str> = head.start_line.split(' ').collect();
        let (method, target) = (
            parts.first().copied().unwrap_or(""),
            parts.get(1).copied().unwrap_or(""),
        );
        let path = target.split('?').next().unwrap_or("");
        let resp = if path == "/" || path == "/index.html" {
            if method == "GET" || method == "HEAD" {
                http_response(200, "text/html; charset=utf-8", PAGE.as_bytes())
            } else {
                error_response(405, "Allow: GET\r\n", "the page is GET only")
            }
        } else if let Some(api) = path.strip_prefix("/api/") {
            let want = head
                .get("content-length")
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if want > 64 * 1024 {
                error_response(413, "", "API bodies are at most 64 KiB")
            } else {
                let mut buf = vec![0u8; 4096];
                while body.len() < want {
                    match tokio::time::timeout(Duration::from_secs(10), self.sock.read(&mut buf))
                        .await
                    {
                        Ok(Ok(n)) if n > 0 => {
                            body.extend_from_slice(&buf[..n]);
                            self.observe(Direction::C2S, &buf[..n]);
                        }
                        _ => break,
                    }
                }
                body.truncate(want);
                self.api(method, api, &head, &body).await
            }
        } else {
            error_response(404, "", &format!("nothing at {path}: the page is /, devices connect to any path with an Upgrade, the API is under /api/"))
        };
        let _ = self.send(&resp).await;
    }

    async fn api(
        &mut self,
        method: &str,
        path: &str,
        head: &handshake::HttpHead,
        body: &[u8],
    ) -> Vec<u8> {
        match &self.hub.s.api_token {
            Some(tok) => {
                let ok = head
                    .get("authorization")
                    .is_some_and(|v| v.strip_prefix("Bearer ").is_some_and(|t| t.trim() == tok));
                if !ok {
                    return json_response(
                        401,
                        &json!({"error": "missing or wrong Authorization: Bearer token"}),
                        "WWW-Authenticate: Bearer\r\n",
                    );
                }
            }
            None if !self.peer.ip().is_loopback() => {
                return json_response(
                    403,
                    &json!({"error": "the API answers loopback peers only; start listen with --api-token to open it"}),
                    "",
                );
            }
            None => {}
        }
        let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        match (method, segs.as_slice()) {
            ("GET", ["devices"]) => json_response(200, &self.hub.devices_json(), ""),
            ("GET", ["devices", id]) => match self.hub.device_json(id) {
                Some(v) => json_response(200, &v, ""),
                None => json_response(404, &json!({"error": format!("unknown device {id}")}), ""),
            },
            ("POST", ["devices", id, "switch"]) => {
                let v: Value = match serde_json::from_slice(body) {
                    Ok(v) => v,
                    Err(e) => {
                        return json_response(
                            400,
                            &json!({"error": format!("body must be JSON like {{\"on\":true}}: {e}")}),
                            "",
                        )
                    }
                };
                let on = if v.get("toggle").and_then(Value::as_bool) == Some(true) {
                    None
                } else if let Some(b) = v.get("on").and_then(Value::as_bool) {
                    Some(b)
                } else {
                    return json_response(
                        400,
                        &json!({"error": "body must be {\"on\":true}, {\"on\":false} or {\"toggle\":true}"}),
                        "",
                    );
                };
                let id = id.to_string();
                match self.hub.switch(&id, on).await {
                    Ok(state) => json_response(200, &state, ""),
                    Err(SwitchError::NotFound(m)) => json_response(404, &json!({"error": m}), ""),
                    Err(SwitchError::Device(e)) => json_response(502, &e, ""),
                    Err(SwitchError::Timeout) => json_response(
                        504,
                        &json!({"error": format!("device {id} did not answer within {} s", self.hub.s.reply_timeout.as_secs_f64())}),
                        "",
                    ),
                }
            }
            (_, ["devices"]) | (_, ["devices", _]) | (_, ["devices", _, "switch"]) => {
                error_response(405, "", "method not allowed here")
            }
            _ => json_response(
                404,
                &json!({"error": format!("no API endpoint /api/{path}")}),
                "",
            ),
        }
    }

    async fn websocket(
        &mut self,
        first: Vec<Event>,
        mut rx: mpsc::Receiver<ConnCmd>,
        shutdown: &mut broadcast::Receiver<()>,
    ) {
        let s = self.hub.s.clone();
        let start = tokio::time::Instant::now();
        let mut ping = tokio::time::interval_at(
            start + s.ping_interval.max(Duration::from_millis(1)),
            s.ping_interval.max(Duration::from_millis(1)),
        );
        let hello_deadline = start + s.hello_timeout;
        let mut close_deadline: Option<tokio::time::Instant> = None;
        let mut buf = vec![0u8; 64 * 1024];
        if self.handle(first).await.is_err() {
            return;
        }
        loop {
            if self.close_sent && self.close_received {
                return;
            }
            let idle_at = tokio::time::Instant::from_std(self.last_seen + s.idle_timeout);
            let hello_wait = self.hello.is_none() && !s.echo && !self.close_sent;
            tokio::select! {
                r = self.sock.read(&mut buf) => {
                    let n = match r { Ok(0) | Err(_) => return, Ok(n) => n };
                    self.last_seen = Instant::now();
                    if self.failed {
                        // After failing the connection nothing more is processed (RFC 6455 7.1.7), but it is still shown.
                        let ev = self.observe(Direction::C2S, &buf[..n]);
                        // Its Close ends the closing handshake: the server drops TCP first (RFC 6455 7.1.1).
                        if ev.iter().any(|e| matches!(&e.kind, EventKind::Frame(f) if f.header.opcode == OpCode::Close)) {
                            return;
                        }
                        continue;
                    }
                    let ev = self.observe(Direction::C2S, &buf[..n]);
                    if self.handle(ev).await.is_err() { return; }
                }
                Some(cmd) = rx.recv() => {
                    if self.close_sent { continue; }
                    let r = match cmd {
                        ConnCmd::Text(t) => self.send_frame(OpCode::Text, t.as_bytes()).await,
                        ConnCmd::Ping(p) => self.send_frame(OpCode::Ping, &p).await,
                        ConnCmd::Close(code, reason) => { close_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2)); self.send_close(code, &reason).await }
                    };
                    if r.is_err() { return; }
                }
                _ = ping.tick(), if !s.ping_interval.is_zero() && !self.close_sent => {
                    self.ping_seq += 1;
                    let p = self.ping_seq.to_string();
                    if self.send_frame(OpCode::Ping, p.as_bytes()).await.is_err() { return; }
                }
                _ = tokio::time::sleep_until(hello_deadline), if hello_wait => {
                    close_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    if self.send_close(1008, "no hello within the time allowed").await.is_err() { return; }
                }
                _ = tokio::time::sleep_until(idle_at), if !self.close_sent => {
                    close_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    if self.send_close(1001, "nothing heard for too long").await.is_err() { return; }
                }
                _ = async { match close_deadline { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                    // The peer never answered our Close: drop TCP.
                    return;
                }
                _ = shutdown.recv(), if !self.close_sent => {
                    close_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
                    if self.send_close(1001, "server shutting down").await.is_err() { return; }
                }
            }
            if self.close_sent && close_deadline.is_none() {
                close_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(2));
            }
        }
    }

    /// React to the annotator's events for bytes the device sent.
    async fn handle(&mut self, ev: Vec<Event>) -> Result<(), ()> {
        for e in ev {
            if e.dir != Direction::C2S || self.failed {
                continue;
            }
            match e.kind {
                EventKind::Frame(f) => {
                    let fail = f
                        .notes
                        .iter()
                        .filter(|n| n.severity == Severity::Error)
                        .find_map(|n| close_code_for(n).map(|c| (c, n.code)));
                    if let (Some((code, why)), false) = (fail, self.hub.s.lenient) {
                        self.failed = true;
                        self.send_close(code.0, why).await.map_err(|_| ())?;
                        if f.header.opcode == OpCode::Close {
                            // The faulty frame was the peer's Close: the handshake is over.
                            return Err(());
                        }
                        // Failing the connection: give the peer a moment for its Close, then go.
                        return Ok(());
                    }
                    match f.header.opcode {
                        OpCode::Ping if !self.close_sent => self
                            .send_frame(OpCode::Pong, &f.payload)
                            .await
                            .map_err(|_| ())?,
                        OpCode::Close => {
                            self.close_received = true;
                            if !self.close_sent {
                                // Echo the code (RFC 6455 5.5.1); none if none was sent.
                                let payload = match &f.close {
                                    Some((c, _)) if c.is_allowed() => close_payload(Some(*c), ""),
                                    Some(_) => close_payload(Some(CloseCode::PROTOCOL), ""),
                                    None => Vec::new(),
                                };
                                self.close_sent = true;
                                self.send_frame(OpCode::Close, &payload)
                                    .await
                                    .map_err(|_| ())?;
                            }
                            return Err(());
                        }
                        _ => {}
                    }
                }
                EventKind::Message(m) if !self.close_sent => {
                    if self.hub.s.echo {
                        self.send_frame(m.opcode, &m.payload)
                            .await
                            .map_err(|_| ())?;
                    } else {
                        self.backend(*m, e.time.unwrap_or_else(now))
                            .await
                            .map_err(|_| ())?;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The Kinetid backend's answer to one device message.
    async fn backend(&mut self, m: crate::annotate::MessageEvent, t: f64) -> std::io::Result<()> {
        let Some(k) = m.kinetid else {
            let why = if m.opcode == OpCode::Binary {
                "binary messages are not part of kinetid.v1"
            } else {
                "expected a JSON object with field t"
            };
            return self
                .send_frame(
                    OpCode::Text,
                    kinetid::error(None, None, "bad_request", why).as_bytes(),
                )
                .await;
        };
        if k.t.is_empty() {
            return self
                .send_frame(
                    OpCode::Text,
                    kinetid::error(
                        None,
                        None,
                        "bad_request",
                        "expected a JSON object with field t",
                    )
                    .as_bytes(),
                )
                .await;
        }
        let peer = self.peer.to_string();
        if self.hello.is_none() && k.t != "hello" {
            self.send_frame(
                OpCode::Text,
                kinetid::error(k.id, None, "bad_request", "the first message must be hello")
                    .as_bytes(),
            )
            .await?;
            return self.send_close(1008, "first message was not hello").await;
        }
        match k.t.as_str() {
            "hello" => {
                let dev = k.dev.clone().unwrap_or_default();
                if !kinetid::is_device_id(&dev) || self.hub.s.refuse.iter().any(|r| r == &dev) {
                    self.send_frame(
                        OpCode::Text,
                        kinetid::error(
                            k.id,
                            Some(&dev),
                            "unknown_device",
                            "this backend does not know the device",
                        )
                        .as_bytes(),
                    )
                    .await?;
                    return self.send_close(1008, "unknown device").await;
                }
                self.hub.learn(
                    &dev,
                    k.str("role").unwrap_or("active"),
                    None,
                    self.id,
                    &peer,
                    t,
                );
                if let Some(ps) = k.value.get("passives").and_then(Value::as_array) {
                    for p in ps
                        .iter()
                        .filter_map(Value::as_str)
                        .filter(|p| kinetid::is_device_id(p))
                    {
                        self.hub.learn(p, "passive", Some(&dev), self.id, &peer, t);
                    }
                }
                self.hello = Some(dev);
                let period = k.f64("period_s").filter(|p| *p >= 1.0).unwrap_or(60.0) as u64;
                self.send_frame(
                    OpCode::Text,
                    kinetid::welcome(k.id.unwrap_or(0), t as u64, period).as_bytes(),
                )
                .await
            }
            "report" => {
                if let Some(dev) = &k.dev {
                    if let Some(via) = k.str("via") {
                        self.hub.learn(dev, "passive", Some(via), self.id, &peer, t);
                    }
                    let mut d = self.hub.devices.lock().expect("devices");
                    if let Some(e) = d.get_mut(dev) {
                        e.last_seen = t;
                        let seq = k.value.get("seq").and_then(Value::as_u64);
                        let dup = seq.is_some_and(|s| e.recent_seqs.contains(&s));
                        if dup {
                            e.duplicates += 1;
                        } else {
                            if let Some(s) = seq {
                                e.recent_seqs.push_back(s);
                                if e.recent_seqs.len() > 1024 {
                                    e.recent_seqs.pop_front();
                                }
                                e.seq = Some(s);
                            }
                            e.reports += 1;
                            e.on = k.bool("on").or(e.on);
                            e.power_w = k.f64("power_w");
                            e.energy_wh = k.f64("energy_wh");
                        }
                    }
                }
                match k.id {
                    Some(id) => {
                        self.send_frame(OpCode::Text, kinetid::ack(id).as_bytes())
                            .await
                    }
                    None => {
                        self.send_frame(
                            OpCode::Text,
                            kinetid::error(
                                None,
                                k.dev.as_deref(),
                                "bad_request",
                                "report without id",
                            )
                            .as_bytes(),
                        )
                        .await
                    }
                }
            }
            "state" => {
                if let Some(dev) = &k.dev {
                    if let Some(e) = self.hub.devices.lock().expect("devices").get_mut(dev) {
                        e.on = k.bool("on").or(e.on);
                        e.last_seen = t;
                    }
                }
                if let Some(re) = k.re {
                    if let Some(tx) = self
                        .hub
                        .pending
                        .lock()
                        .expect("pending")
                        .remove(&(self.id, re))
                    {
                        let _ = tx.send(Ok(k.value.clone()));
                    }
                    Ok(())
                } else if let Some(id) = k.id {
                    self.send_frame(OpCode::Text, kinetid::ack(id).as_bytes())
                        .await
                } else {
                    Ok(())
                }
            }
            "error" => {
                if let Some(re) = k.re {
                    if let Some(tx) = self
                        .hub
                        .pending
                        .lock()
                        .expect("pending")
                        .remove(&(self.id, re))
                    {
                        let _ = tx.send(Err(k.value.clone()));
                    }
                }
                Ok(())
            }
            "ack" | "welcome" => Ok(()),
            other => {
                let msg = format!("unknown message type {other:?}");
                self.send_frame(
                    OpCode::Text,
                    kinetid::error(k.id, None, "bad_request", &msg).as_bytes(),
                )
                .await
            }
        }
    }
}

/// Queue an item for a writer task; only when its queue is full (the terminal
/// or the disk is far behind) does the connection wait, blocking in place.
fn send_or_wait<T>(out: &mpsc::Sender<T>, buf: T) -> Result<(), ()> {
    match out.try_send(buf) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(buf)) => {
            tokio::task::block_in_place(|| out.blocking_send(buf)).map_err(|_| ())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
    }
}

fn http_response(status: u16, ctype: &str, body: &[u8]) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        handshake::reason_phrase(status),
        body.len()
    )
    .into_bytes();
    v.extend_from_slice(body);
    v
}

fn json_response(status: u16, v: &Value, extra: &str) -> Vec<u8> {
    let body = format!("{v}\n");
    let mut r = format!(
        "HTTP/1.1 {status} {}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        handshake::reason_phrase(status),
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

const CONSOLE_HELP: &str = "commands: devices | on ID | off ID | toggle ID | send ID TEXT | ping ID | close ID [CODE [REASON]] | help";

async fn console_loop(hub: Arc<Hub>) {
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    eprintln!("kinetid-wsdump: console ready; {CONSOLE_HELP}");
    while let Ok(Some(line)) = lines.next_line().await {
        let hub = hub.clone();
        // Each command runs on its own so a slow device does not block the console.
        tokio::spawn(async move {
            let out = console_command(&hub, line.trim()).await;
            if !out.is_empty() {
                eprintln!("{out}");
            }
        });
    }
}

/// Run one console command and return what to print.
pub async fn console_command(hub: &Hub, line: &str) -> String {
    let mut it = line.splitn(2, ' ');
    let cmd = it.next().unwrap_or("");
    let rest = it.next().unwrap_or("").trim();
    let switch = |on: Option<bool>| async move {
        match hub.switch(rest, on).await {
            Ok(v) => format!("{rest}: state {v}"),
            Err(SwitchError::NotFound(m)) => format!("{rest}: {m}"),
            Err(SwitchError::Device(e)) => format!("{rest}: device answered error {e}"),
            Err(SwitchError::Timeout) => format!(
                "{rest}: no answer within {} s",
                hub.s.reply_timeout.as_secs_f64()
            ),
        }
    };
    match cmd {
        "" => String::new(),
        "help" | "?" => CONSOLE_HELP.to_string(),
        "devices" | "ls" => {
            let v = hub.devices_json();
            let rows: Vec<String> = v
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|d| {
                            format!(
                                "  {} {:<7} {} via={} on={} power={} W energy={} Wh peer={}",
                                d["id"].as_str().unwrap_or("?"),
                                d["role"].as_str().unwrap_or("?"),
                                if d["online"] == true {
                                    "online "
                                } else {
                                    "offline"
                                },
                                d["via"].as_str().unwrap_or("-"),
                                d["on"],
                                d["power_w"],
                                d["energy_wh"],
                                d["peer"].as_str().unwrap_or("?")
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if rows.is_empty() {
                "no devices".into()
            } else {
                format!("{} devices:\n{}", rows.len(), rows.join("\n"))
            }
        }
        "on" => switch(Some(true)).await,
        "off" => switch(Some(false)).await,
        "toggle" => switch(None).await,
        "send" => {
            let mut p = rest.splitn(2, ' ');
            let (id, text) = (p.next().unwrap_or(""), p.next().unwrap_or(""));
            match hub.command(id, ConnCmd::Text(text.to_string())).await {
                Ok(()) => format!("{id}: sent {} bytes", text.len()),
                Err(e) => e,
            }
        }
        "ping" => match hub.command(rest, ConnCmd::Ping(b"console".to_vec())).await {
            Ok(()) => format!("{rest}: ping sent"),
            Err(e) => e,
        },
        "close" => {
            let mut p = rest.splitn(3, ' ');
            let id = p.next().unwrap_or("");
            let code = p.next().and_then(|c| c.parse::<u16>().ok()).unwrap_or(1000);
            let reason = p.next().unwrap_or("closed from the console").to_string();
            match hub.command(id, ConnCmd::Close(code, reason)).await {
                Ok(()) => format!("{id}: close {code} sent"),
                Err(e) => e,
            }
        }
        other => format!("unknown command {other:?}; {CONSOLE_HELP}"),
    }
}
