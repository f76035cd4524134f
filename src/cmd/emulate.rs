//! `kinetid-wsdump emulate-device`: one Kinetid plug, a home (an active plug
//! with passive plugs behind it over PLC), or a fleet of independent plugs.
//!
//! The plug does the client handshake by hand, frames through
//! [`FrameWriter`] (which can commit the known firmware bugs on purpose) and
//! reads the server through the same [`Annotator`] that `listen` and `replay`
//! use, so `--dump` shows its traffic exactly as the listener would.

use crate::cli::EmulateArgs;
use crate::cmd::{printer, AppError};
use kinetid_wsdump::annotate::{Annotator, Config, Event, EventKind, HandshakeMode};
use kinetid_wsdump::frame::{close_payload, CloseCode, Direction, OpCode};
use kinetid_wsdump::handshake::{self, HeadParse, Limits, KINETID_PROTOCOL};
use kinetid_wsdump::kinetid;
use kinetid_wsdump::meter::{Appliance, Mains, Meter};
use kinetid_wsdump::quirk::{FrameWriter, Quirk};
use kinetid_wsdump::render::Printer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// Counters over all emulated plugs.
#[derive(Debug, Default)]
pub struct FleetStats {
    /// Plugs connected now.
    pub connected: AtomicU64,
    /// Successful handshakes.
    pub connects: AtomicU64,
    /// Handshakes after a lost connection.
    pub reconnects: AtomicU64,
    /// Reports sent (resends included).
    pub reports_sent: AtomicU64,
    /// Reports acknowledged.
    pub reports_acked: AtomicU64,
    /// Switch commands obeyed.
    pub commands: AtomicU64,
    /// Connection or handshake failures.
    pub errors: AtomicU64,
}

impl FleetStats {
    fn json(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "connected": g(&self.connected), "connects": g(&self.connects), "reconnects": g(&self.reconnects),
            "reports_sent": g(&self.reports_sent), "reports_acked": g(&self.reports_acked),
            "commands": g(&self.commands), "errors": g(&self.errors),
        })
    }
}

/// A parsed `ws://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// host:port to connect to.
    pub addr: String,
    /// Host header.
    pub host: String,
    /// Request target.
    pub path: String,
}

/// Parse a `ws://` URL (TLS is not supported: plugs on a bench speak plain TCP).
pub fn parse_url(url: &str) -> Result<WsUrl, String> {
    let rest = url
        .strip_prefix("ws://")
        .ok_or_else(|| format!("{url:?}: only ws:// URLs are supported"))?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if hostport.is_empty() {
        return Err(format!("{url:?}: no host"));
    }
    let addr = if hostport
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !hostport.ends_with(']')
    {
        hostport.to_string()
    } else {
        format!("{hostport}:80")
    };
    Ok(WsUrl {
        addr,
        host: hostport.to_string(),
        path: path.to_string(),
    })
}

/// Id `KN-` + 12 hex digits from a number.
pub fn device_id(n: u64) -> String {
    format!("KN-{:012X}", n & 0xFFFF_FFFF_FFFF)
}

fn parse_id(id: &str) -> Option<u64> {
    if !kinetid::is_device_id(id) {
        return None;
    }
    u64::from_str_radix(&id[3..], 16).ok()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// One metered plug (active or passive).
#[derive(Debug)]
struct Plug {
    id: String,
    meter: Meter,
    on: bool,
    seq: u64,
    last_read: f64,
}

impl Plug {
    fn new(id: String, appliance: Appliance, mains: Mains, seed: u64) -> Plug {
        Plug {
            id,
            meter: Meter::new(appliance, mains, seed),
            on: true,
            seq: 0,
            last_read: unix_now(),
        }
    }

    fn report(&mut self, ts: u64, via: Option<&str>) -> Value {
        let now = unix_now();
        let dt = (now - self.last_read).max(0.0);
        self.last_read = now;
        let r = self.meter.read(dt, self.on);
        self.seq += 1;
        let mut v = json!({"t": "report", "dev": self.id});
        if let Some(a) = via {
            v["via"] = json!(a);
            v["link"] = json!("plc");
        }
        for (k, x) in [
            ("ts", json!(ts)),
            ("seq", json!(self.seq)),
            ("on", json!(self.on)),
            ("power_w", json!(r.power_w)),
            ("voltage_v", json!(r.voltage_v)),
            ("current_a", json!(r.current_a)),
            ("pf", json!(r.pf)),
            ("freq_hz", json!(r.freq_hz)),
            ("energy_wh", json!(r.energy_wh)),
        ] {
            v[k] = x;
        }
        v
    }
}

/// Everything one emulated home keeps across reconnects.
struct Home {
    active: Plug,
    passives: Vec<Plug>,
    /// Unacknowledged reports (body without `id`), oldest first.
    queue: VecDeque<Value>,
    queue_max: usize,
    rng: StdRng,
}

/// Settings shared by all plugs.
#[derive(Clone)]
struct Shared {
    url: WsUrl,
    interval: Duration,
    frame_size: Option<usize>,
    quirks: Vec<Quirk>,
    button_every: Option<Duration>,
    plc_latency: Duration,
    plc_loss: f64,
    mains: Mains,
    dump: Option<Printer>,
    stats: Arc<FleetStats>,
}

/// Run `emulate-device`.
pub fn run(a: EmulateArgs) -> Result<u8, AppError> {
    let url = parse_url(&a.url).map_err(AppError::Usage)?;
    if a.count == 0 {
        return Err(AppError::Usage("--count must be at least 1".into()));
    }
    if !(0.0..=1.0).contains(&a.plc_loss) {
        return Err(AppError::Usage(
            "--plc-loss is a fraction from 0.0 to 1.0".into(),
        ));
    }
    if a.interval < Duration::from_millis(10) {
        return Err(AppError::Usage("--interval must be at least 10ms".into()));
    }
    let seed = a.seed.unwrap_or_else(rand::random);
    let base = match &a.id {
        Some(id) => parse_id(id).ok_or_else(|| {
            AppError::Usage(format!(
                "--id {id:?} is not KN- followed by 12 upper-case hex digits"
            ))
        })?,
        None => StdRng::seed_from_u64(seed).gen::<u64>() & 0xFFFF_FFFF_FFFF,
    };
    let stats = Arc::new(FleetStats::default());
    let shared = Shared {
        url,
        interval: a.interval,
        frame_size: a.frame_size,
        quirks: a.quirks.clone(),
        button_every: a.button_every,
        plc_latency: a.plc_latency,
        plc_loss: a.plc_loss,
        mains: a.mains,
        dump: a.dump.then(|| printer(&a.output)),
        stats: stats.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Io("tokio runtime".into(), e))?;
    let count = a.count;
    let status = count > 1 && std::io::stderr().is_terminal();
    let stats_run = stats.clone();
    rt.block_on(async move {
        let stats = stats_run;
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::with_capacity(count);
        for i in 0..count {
            // Its own stream, distinct from the one the base id came from.
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x4B4E_5EED);
            let id = device_id(base.wrapping_add(i as u64));
            let passives = (0..a.passive)
                .map(|k| Plug::new(device_id(rng.gen::<u64>()), appliance_for(k), a.mains, rng.gen()))
                .collect();
            let home = Home { active: Plug::new(id, a.appliance, a.mains, rng.gen()), passives, queue: VecDeque::new(), queue_max: a.queue.max(1), rng };
            let delay = if count > 1 { a.ramp.mul_f64(i as f64 / count as f64) } else { Duration::ZERO };
            let sh = shared.clone();
            let stop = stop_rx.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                plug_main(home, sh, stop, i as u64 + 1).await
            }));
        }
        let st = stats.clone();
        let status_task = status.then(|| {
            tokio::spawn(async move {
                let mut t = tokio::time::interval(Duration::from_secs(1));
                loop {
                    t.tick().await;
                    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
                    eprint!(
                        "\rconnected {}/{count}  reports {} sent {} acked  commands {}  reconnects {}  errors {}   ",
                        g(&st.connected),
                        g(&st.reports_sent),
                        g(&st.reports_acked),
                        g(&st.commands),
                        g(&st.reconnects),
                        g(&st.errors)
                    );
                }
            })
        });
        let stop_after = async {
            match a.duration {
                Some(d) => tokio::time::sleep(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = stop_after => {}
        }
        let _ = stop_tx.send(true);
        tokio::spawn(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        });
        let _ = tokio::time::timeout(Duration::from_secs(3), async {
            for t in tasks {
                let _ = t.await;
            }
        })
        .await;
        if let Some(t) = status_task {
            t.abort();
            eprintln!();
        }
    });
    let summary = stats.json();
    eprintln!("kinetid-wsdump: emulate-device summary: {summary}");
    if let Some(p) = &a.stats_json {
        std::fs::write(p, format!("{summary}\n"))
            .map_err(|e| AppError::Io(p.display().to_string(), e))?;
    }
    if stats.connects.load(Ordering::Relaxed) == 0 {
        return Err(AppError::Failed(format!(
            "no plug ever connected to {} ({} connection attempts failed; is a backend listening there?)",
            a.url,
            stats.errors.load(Ordering::Relaxed)
        )));
    }
    Ok(0)
}

fn appliance_for(k: usize) -> Appliance {
    [
        Appliance::Fridge,
        Appliance::Tv,
        Appliance::Laptop,
        Appliance::Microwave,
        Appliance::Heater,
    ][k % 5]
}

/// Why a connection ended.
enum End {
    Stopped,
    Lost(String),
}

async fn plug_main(mut home: Home, sh: Shared, mut stop: watch::Receiver<bool>, conn_no: u64) {
    let mut backoff = Duration::from_secs(1);
    let mut first = true;
    // Reports fall due on the period boundary whether or not we are connected.
    let mut next_report = next_boundary(sh.interval);
    loop {
        let welcomed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = connection(
            &mut home,
            &sh,
            &mut stop,
            conn_no,
            first,
            &welcomed,
            &mut next_report,
        )
        .await;
        if welcomed.load(Ordering::Relaxed) {
            backoff = Duration::from_secs(1);
        }
        match r {
            End::Stopped => return,
            End::Lost(why) => {
                sh.stats.errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "{}: {why}; reconnecting in about {:?}",
                    home.active.id,
                    backoff
                );
                if sh.dump.is_some() {
                    eprintln!(
                        "kinetid-wsdump: {}: {why}; reconnecting in about {} ms",
                        home.active.id,
                        backoff.as_millis()
                    );
                }
            }
        }
        first = false;
        let jitter = home.rng.gen_range(0.0..0.5);
        let wait = backoff.mul_f64(1.0 + jitter);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        // Reports due while away are taken now, so none is skipped.
        while tokio::time::Instant::now() >= next_report {
            queue_reports(&mut home, unix_now() as u64);
            next_report += sh.interval;
        }
        backoff = (backoff * 2).min(Duration::from_secs(60));
    }
}

fn next_boundary(period: Duration) -> tokio::time::Instant {
    let p = period.as_secs_f64();
    let now = unix_now();
    let next = (now / p).floor() * p + p;
    tokio::time::Instant::now() + Duration::from_secs_f64((next - now).max(0.0))
}

/// Take a reading of every plug in the home, queue the reports, return them.
fn queue_reports(home: &mut Home, ts: u64) -> Vec<Value> {
    let active_id = home.active.id.clone();
    let mut fresh = vec![home.active.report(ts, None)];
    for p in home.passives.iter_mut() {
        fresh.push(p.report(ts, Some(&active_id)));
    }
    for r in &fresh {
        push_queue(home, r.clone());
    }
    fresh
}

fn push_queue(home: &mut Home, r: Value) {
    home.queue.push_back(r);
    while home.queue.len() > home.queue_max {
        home.queue.pop_front();
    }
}

/// The live side of one connection.
struct Link {
    sock: TcpStream,
    ann: Annotator,
    writer: FrameWriter,
    next_id: u64,
    /// id -> seq/dev of in-flight reports.
    inflight: Vec<(u64, String, u64)>,
    dump: Option<Printer>,
    close_sent: bool,
}

impl Link {
    fn show(&self, ev: &[Event]) {
        if let Some(p) = &self.dump {
            let mut out = Vec::new();
            for e in ev {
                let _ = p.event(&mut out, e);
            }
            let stdout = std::io::stdout();
            let mut l = stdout.lock();
            let _ = l.write_all(&out);
            let _ = l.flush();
        }
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.sock.write_all(bytes).await?;
        let mut ev = Vec::new();
        self.ann
            .feed(Direction::C2S, bytes, Some(unix_now()), &mut ev);
        self.show(&ev);
        Ok(())
    }

    async fn send_json(&mut self, v: &Value) -> std::io::Result<()> {
        let mut b = Vec::new();
        self.writer
            .message(&mut b, OpCode::Text, v.to_string().as_bytes());
        self.send_raw(&b).await
    }

    async fn request(&mut self, mut v: Value) -> std::io::Result<u64> {
        let id = self.next_id;
        self.next_id += 1;
        v["id"] = json!(id);
        // Keep "t" first and "id" second, as the protocol examples do.
        let mut o = serde_json::Map::new();
        if let Some(obj) = v.as_object_mut() {
            o.insert("t".into(), obj.remove("t").unwrap_or(Value::Null));
            o.insert("id".into(), obj.remove("id").unwrap_or(Value::Null));
            o.extend(std::mem::take(obj));
        }
        self.send_json(&Value::Object(o)).await?;
        Ok(id)
    }

    async fn control(&mut self, op: OpCode, payload: &[u8]) -> std::io::Result<()> {
        let mut b = Vec::new();
        self.writer.control(&mut b, op, payload);
        self.send_raw(&b).await
    }
}

async fn handshake(
    sh: &Shared,
    conn_no: u64,
) -> Result<(TcpStream, Annotator, Vec<Event>), String> {
    let mut sock = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&sh.url.addr))
        .await
        .map_err(|_| format!("connect to {} timed out", sh.url.addr))?
        .map_err(|e| format!("connect to {}: {e}", sh.url.addr))?;
    let _ = sock.set_nodelay(true);
    let key = handshake::random_key();
    let req = handshake::client_request(&sh.url.host, &sh.url.path, &key, &[KINETID_PROTOCOL]);
    let mut ann = Annotator::new(
        conn_no,
        Config {
            handshake: HandshakeMode::Expect,
            ..Config::default()
        },
    );
    sock.write_all(&req)
        .await
        .map_err(|e| format!("sending the upgrade request: {e}"))?;
    let mut ev = Vec::new();
    ann.feed(Direction::C2S, &req, Some(unix_now()), &mut ev);
    let mut head = Vec::new();
    let mut buf = vec![0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), sock.read(&mut buf))
            .await
            .map_err(|_| "no handshake response within 10 s".to_string())?
            .map_err(|e| format!("reading the handshake response: {e}"))?;
        if n == 0 {
            return Err("server closed the connection during the handshake".into());
        }
        head.extend_from_slice(&buf[..n]);
        ann.feed(Direction::S2C, &buf[..n], Some(unix_now()), &mut ev);
        match handshake::parse_head(&head, Limits::default()) {
            HeadParse::Partial => continue,
            HeadParse::Invalid(e) => return Err(format!("malformed handshake response: {e}")),
            HeadParse::Complete(h) => {
                let v = handshake::check_response(&h, Some(&key), &[KINETID_PROTOCOL]);
                if let Some(err) = v.error {
                    return Err(format!("handshake refused: {err}"));
                }
                return Ok((sock, ann, ev));
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn connection(
    home: &mut Home,
    sh: &Shared,
    stop: &mut watch::Receiver<bool>,
    conn_no: u64,
    first: bool,
    welcomed: &std::sync::atomic::AtomicBool,
    next_report: &mut tokio::time::Instant,
) -> End {
    let (sock, ann, ev) = tokio::select! {
        r = handshake(sh, conn_no) => match r {
            Ok(x) => x,
            Err(e) => return End::Lost(e),
        },
        _ = stop.changed() => return End::Stopped,
    };
    let mut link = Link {
        sock,
        ann,
        writer: FrameWriter::new(&sh.quirks, sh.frame_size),
        next_id: 1,
        inflight: Vec::new(),
        dump: sh.dump.clone(),
        close_sent: false,
    };
    link.show(&ev);
    sh.stats.connects.fetch_add(1, Ordering::Relaxed);
    if !first {
        sh.stats.reconnects.fetch_add(1, Ordering::Relaxed);
    }
    sh.stats.connected.fetch_add(1, Ordering::Relaxed);
    let r = session(home, sh, stop, &mut link, welcomed, ev, next_report).await;
    sh.stats.connected.fetch_sub(1, Ordering::Relaxed);
    let mut ev = Vec::new();
    link.ann.finish(Some(unix_now()), &mut ev);
    link.show(&ev);
    r
}

#[allow(clippy::too_many_arguments)]
async fn session(
    home: &mut Home,
    sh: &Shared,
    stop: &mut watch::Receiver<bool>,
    link: &mut Link,
    welcomed: &std::sync::atomic::AtomicBool,
    first_events: Vec<Event>,
    next_report: &mut tokio::time::Instant,
) -> End {
    let io = |e: std::io::Error| End::Lost(format!("connection lost: {e}"));
    let passives: Vec<String> = home.passives.iter().map(|p| p.id.clone()).collect();
    let hello = json!({"t": "hello", "dev": home.active.id, "fw": concat!("emu-", env!("CARGO_PKG_VERSION")), "role": "active",
        "mains_v": sh.mains.volts(), "mains_hz": sh.mains.hertz(), "period_s": sh.interval.as_secs_f64().round().max(1.0) as u64, "passives": passives});
    if let Err(e) = link.request(hello).await {
        return io(e);
    }
    let mut after = Vec::new();
    link.writer.after_hello(&mut after);
    if !after.is_empty() {
        if let Err(e) = link.send_raw(&after).await {
            return io(e);
        }
    }
    let mut button = sh
        .button_every
        .map(|d| tokio::time::interval_at(tokio::time::Instant::now() + d, d));
    // Switches for passives wait out the PLC latency: (due, re, dev, on/toggle).
    let mut plc: Vec<(tokio::time::Instant, u64, usize, Option<bool>)> = Vec::new();
    let mut pending_events = first_events;
    let mut buf = vec![0u8; 16 * 1024];
    let mut close_wait: Option<tokio::time::Instant> = None;
    loop {
        // React to what the server sent.
        for e in std::mem::take(&mut pending_events) {
            if e.dir != Direction::S2C {
                continue;
            }
            match e.kind {
                EventKind::Frame(f) => match f.header.opcode {
                    OpCode::Ping if !link.writer.has(Quirk::NoPong) && !link.close_sent => {
                        if let Err(e) = link.control(OpCode::Pong, &f.payload).await {
                            return io(e);
                        }
                    }
                    OpCode::Close => {
                        if link.close_sent {
                            return if *stop.borrow() {
                                End::Stopped
                            } else {
                                End::Lost("closed".into())
                            };
                        }
                        if link.writer.has(Quirk::SilentClose) {
                            return End::Lost(
                                "server closed; answered with nothing (silent-close quirk)".into(),
                            );
                        }
                        let payload = match &f.close {
                            Some((c, _)) if c.is_allowed() => close_payload(Some(*c), ""),
                            _ => Vec::new(),
                        };
                        let _ = link.control(OpCode::Close, &payload).await;
                        let code = f.close.as_ref().map_or(1005, |(c, _)| c.0);
                        return End::Lost(format!("server closed the connection with {code}"));
                    }
                    _ => {}
                },
                EventKind::Message(m) => {
                    let Some(k) = m.kinetid else { continue };
                    match k.t.as_str() {
                        "welcome" => {
                            welcomed.store(true, Ordering::Relaxed);
                            // Resend what the backend has not acknowledged, with original seq and ts.
                            let queued: Vec<Value> = home.queue.iter().cloned().collect();
                            for r in queued {
                                if let Err(e) = send_report(link, sh, r).await {
                                    return io(e);
                                }
                            }
                        }
                        "ack" => {
                            if let Some(re) = k.re {
                                if let Some(pos) =
                                    link.inflight.iter().position(|(id, _, _)| *id == re)
                                {
                                    let (_, dev, seq) = link.inflight.remove(pos);
                                    let before = home.queue.len();
                                    home.queue
                                        .retain(|r| !(r["dev"] == dev.as_str() && r["seq"] == seq));
                                    if home.queue.len() < before {
                                        sh.stats.reports_acked.fetch_add(1, Ordering::Relaxed);
                                    }
                                }
                            }
                        }
                        "switch" => {
                            let (Some(re), Some(dev)) = (k.id, k.dev.clone()) else {
                                continue;
                            };
                            let on = if k.bool("toggle") == Some(true) {
                                None
                            } else {
                                k.bool("on")
                            };
                            if k.bool("toggle") != Some(true) && on.is_none() {
                                let _ = link.send_json(&json!({"t":"error","re":re,"dev":dev,"code":"bad_request","msg":"switch needs on or toggle"})).await;
                                continue;
                            }
                            if dev == home.active.id {
                                let was = home.active.on;
                                home.active.on = on.unwrap_or(!was);
                                sh.stats.commands.fetch_add(1, Ordering::Relaxed);
                                let st = json!({"t":"state","re":re,"dev":dev,"on":home.active.on,"was_on":was,"src":"backend","ts":unix_now() as u64});
                                if let Err(e) = link.send_json(&st).await {
                                    return io(e);
                                }
                            } else if let Some(idx) = home.passives.iter().position(|p| p.id == dev)
                            {
                                plc.push((
                                    tokio::time::Instant::now() + sh.plc_latency,
                                    re,
                                    idx,
                                    on,
                                ));
                            } else {
                                let err = json!({"t":"error","re":re,"dev":dev,"code":"not_found","msg":"no such device in this home"});
                                if let Err(e) = link.send_json(&err).await {
                                    return io(e);
                                }
                            }
                        }
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        let plc_due = plc.iter().map(|p| p.0).min();
        tokio::select! {
            r = link.sock.read(&mut buf) => {
                let n = match r {
                    Ok(0) => return if *stop.borrow() { End::Stopped } else { End::Lost("server closed TCP".into()) },
                    Err(e) => return io(e),
                    Ok(n) => n,
                };
                let mut ev = Vec::new();
                link.ann.feed(Direction::S2C, &buf[..n], Some(unix_now()), &mut ev);
                link.show(&ev);
                pending_events = ev;
            }
            _ = tokio::time::sleep_until(*next_report), if !link.close_sent => {
                *next_report += sh.interval;
                for r in queue_reports(home, unix_now() as u64) {
                    if let Err(e) = send_report(link, sh, r).await {
                        return io(e);
                    }
                }
            }
            _ = async { match button.as_mut() { Some(b) => { b.tick().await; } None => std::future::pending().await } }, if !link.close_sent => {
                let was = home.active.on;
                home.active.on = !was;
                let st = json!({"t":"state","dev":home.active.id,"on":home.active.on,"was_on":was,"src":"button","ts":unix_now() as u64});
                if let Err(e) = link.request(st).await {
                    return io(e);
                }
            }
            _ = async { match plc_due { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                let now = tokio::time::Instant::now();
                let due: Vec<_> = plc.iter().filter(|p| p.0 <= now).cloned().collect();
                plc.retain(|p| p.0 > now);
                for (_, re, idx, on) in due {
                    let dev = home.passives[idx].id.clone();
                    let lost = sh.plc_loss > 0.0 && home.rng.gen_bool(sh.plc_loss);
                    let msg = if lost {
                        json!({"t":"error","re":re,"dev":dev,"code":"unreachable","msg":"PLC timeout"})
                    } else {
                        let p = &mut home.passives[idx];
                        let was = p.on;
                        p.on = on.unwrap_or(!was);
                        sh.stats.commands.fetch_add(1, Ordering::Relaxed);
                        json!({"t":"state","re":re,"dev":dev,"on":p.on,"was_on":was,"src":"backend","ts":unix_now() as u64})
                    };
                    if let Err(e) = link.send_json(&msg).await {
                        return io(e);
                    }
                }
            }
            _ = async { match close_wait { Some(d) => tokio::time::sleep_until(d).await, None => std::future::pending().await } } => {
                return End::Stopped;
            }
            _ = stop.changed(), if !link.close_sent => {
                if link.writer.has(Quirk::DropWithoutClose) {
                    return End::Stopped;
                }
                link.close_sent = true;
                let _ = link.control(OpCode::Close, &close_payload(Some(CloseCode::NORMAL), "emulator stopping")).await;
                close_wait = Some(tokio::time::Instant::now() + Duration::from_secs(1));
            }
        }
    }
}

async fn send_report(link: &mut Link, sh: &Shared, r: Value) -> std::io::Result<()> {
    let dev = r["dev"].as_str().unwrap_or("").to_string();
    let seq = r["seq"].as_u64().unwrap_or(0);
    let id = link.request(r).await?;
    link.inflight.push((id, dev, seq));
    if link.inflight.len() > 4096 {
        link.inflight.remove(0);
    }
    sh.stats.reports_sent.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:8080/ws").unwrap(),
            WsUrl {
                addr: "127.0.0.1:8080".into(),
                host: "127.0.0.1:8080".into(),
                path: "/ws".into()
            }
        );
        assert_eq!(parse_url("ws://example").unwrap().addr, "example:80");
        assert_eq!(parse_url("ws://[::1]:9/x?y").unwrap().addr, "[::1]:9");
        assert!(parse_url("wss://a/").is_err());
        assert!(parse_url("http://a/").is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(device_id(0xA4CF12F0E1B2), "KN-A4CF12F0E1B2");
        assert_eq!(parse_id("KN-A4CF12F0E1B2"), Some(0xA4CF12F0E1B2));
        assert!(kinetid::is_device_id(&device_id(u64::MAX)));
    }
}
