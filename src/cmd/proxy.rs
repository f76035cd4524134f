//! `kinetid-wsdump proxy`: stands between a device and its real backend.
//!
//! Each device connection gets its own upstream connection. The device's
//! HTTP upgrade request goes upstream with only `Host` rewritten (the
//! device's own key, so the upstream's accept is checked against what the
//! device sent); the upstream's response goes back unchanged; then every
//! byte is forwarded unchanged both ways, chunk by chunk as it arrives, and
//! annotated once per direction by the same core as `listen` and `replay`.
//! The proxy repairs nothing: what a device gets wrong reaches the backend
//! as it was sent, and is named in the output.
//!
//! What a failure looks like to the device: a head that is not HTTP gets
//! 400, an upstream that cannot be reached 502 and one that does not answer
//! in time 504, each with the reason in the body and a line on stderr.

use crate::cli::ProxyArgs;
use crate::shell::control::{Commands, PROXY_IDS};
use crate::shell::sinks::{LineSink, Recorder};
use crate::shell::sock::Sock;
use crate::shell::tap::{NoCount, Outputs, Tap};
use crate::shell::{config, printer, AppError};
use kinetid_wsdump::annotate::{Config, Event, HandshakeMode};
use kinetid_wsdump::engine::backend::{Backend, BackendConfig, Effect};
use kinetid_wsdump::engine::devices::DeviceTable;
use kinetid_wsdump::engine::relay::{Cut, End, Faults, Relay, RelayConfig, Seen, Transmit};
use kinetid_wsdump::escape::Esc;
use kinetid_wsdump::note::{Code, Severity};
use kinetid_wsdump::wire::frame::Direction;
use kinetid_wsdump::wire::handshake::{self, error_response, HeadParse};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A `ws://` or `wss://` upstream.
#[derive(Debug, Clone)]
pub struct Upstream {
    /// `host:port` to connect to.
    pub addr: String,
    /// What `Host` says upstream.
    pub host: String,
    /// `wss://`: TLS to the upstream.
    pub tls: bool,
}

/// The device's socket, plain or TLS.
type Dev = Sock<tokio_rustls::server::TlsStream<TcpStream>>;
/// The upstream's socket, plain or TLS.
type Up = Sock<tokio_rustls::client::TlsStream<TcpStream>>;

/// Read `ws://HOST[:PORT][/PATH]`. The path is the device's own: only where
/// to connect comes from the URL.
pub fn parse_upstream(url: &str) -> Result<Upstream, String> {
    let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => {
            return Err(format!(
                "{url:?}: the upstream must be a ws:// or wss:// URL"
            ))
        }
    };
    let hostport = rest.split(['/', '?']).next().unwrap_or("");
    if hostport.is_empty() || hostport.contains('@') {
        return Err(format!("{url:?}: no host"));
    }
    let port_ok = |p: &str| p.parse::<u16>().is_ok();
    let has_port = if hostport.starts_with('[') {
        hostport.rsplit_once("]:").is_some_and(|(_, p)| port_ok(p))
    } else {
        hostport.rsplit_once(':').is_some_and(|(_, p)| port_ok(p))
    };
    let addr = if has_port {
        hostport.to_string()
    } else {
        format!("{hostport}:{}", if tls { 443 } else { 80 })
    };
    Ok(Upstream {
        addr,
        host: hostport.to_string(),
        tls,
    })
}

/// The device's head with its `Host` value replaced; everything else
/// byte for byte as the device sent it.
fn rewrite_host(head: &[u8], host: &str) -> (Vec<u8>, Option<String>) {
    let mut out = Vec::with_capacity(head.len() + host.len());
    let mut old = None;
    let mut first = true;
    for line in head.split_inclusive(|&b| b == b'\n') {
        let is_host =
            !first && old.is_none() && line.len() > 5 && line[..5].eq_ignore_ascii_case(b"host:");
        first = false;
        if is_host {
            let value = &line[5..];
            let end = value.len()
                - value
                    .iter()
                    .rev()
                    .take_while(|b| **b == b'\n' || **b == b'\r')
                    .count();
            old = Some(String::from_utf8_lossy(&value[..end]).trim().to_string());
            out.extend_from_slice(b"Host: ");
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(&value[end..]);
        } else {
            out.extend_from_slice(line);
        }
    }
    (out, old)
}

/// What every connection shares.
struct Shared {
    cfg: Config,
    /// Where every connection's events go.
    outs: Arc<Outputs>,
    err: LineSink,
    upstream: Upstream,
    /// `--tls`: TLS toward devices.
    tls_server: Option<tokio_rustls::TlsAcceptor>,
    /// `wss://` upstream: TLS toward it, and the name it is asked for.
    tls_client: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
    /// Faults device->upstream and upstream->device.
    faults: (Faults, Faults),
    /// Connections being forwarded: where to send injected frames, and the
    /// device each carries once it said hello.
    conns: std::sync::Mutex<HashMap<u64, Entry>>,
    /// `--cut-after`.
    cut: Option<Cut>,
    /// How long a device has for its TLS handshake and its head, and the
    /// upstream to connect and answer.
    head_timeout: Duration,
    next_conn: AtomicU64,
    /// The port devices connect to (for the Host check).
    local_port: u16,
    /// Requests for the proxy's own API and page, out of view.
    web: AtomicU64,
    /// Device connections whose task is still running.
    open: AtomicU64,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    /// Switches injected through the API waiting for the device's answer.
    commands: Commands,
    /// When the proxy started (Unix seconds).
    started: f64,
    /// Set when the proxy is stopping (ends the event streams).
    stopping: tokio::sync::watch::Sender<bool>,
    /// The devices seen through the proxy, online and offline.
    devices: std::sync::Mutex<DeviceTable>,
}

/// Run `proxy` from flags.
pub fn run(a: ProxyArgs) -> Result<u8, AppError> {
    let upstream = parse_upstream(&a.upstream).map_err(AppError::Usage)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Failed(format!("runtime: {e}")))?;
    let r = rt.block_on(serve(a, upstream));
    // The console's stdin read sits in a blocking thread that never ends by
    // itself; nothing else may hold the exit up either.
    rt.shutdown_timeout(Duration::from_millis(200));
    r
}

async fn serve(a: ProxyArgs, upstream: Upstream) -> Result<u8, AppError> {
    // Listening for the signals from here on, once, before "listening on"
    // is printed: a signal sent as soon as that line appears is not lost
    // (nor ignored, when the proxy was started with SIGINT ignored, as a
    // shell's background job is), and one that arrives while a connection
    // is being accepted is not lost either. However the connections
    // behave, the process ends: the watchdog exits 5 s after the signal.
    let mut stop = crate::shell::shutdown::watch_signals(crate::shell::shutdown::Watchdog {
        after: Duration::from_secs(5),
        status: 1,
        who: Some("proxy"),
    });
    if a.tls.tls || upstream.tls {
        crate::shell::tls::set_keylog(a.tls.keylog.as_deref())?;
    }
    let tls_server =
        crate::shell::tls::from_args(&crate::shell::tls::with_lan_names(&a.tls, &a.bind))?;
    let tls_client = match upstream.tls {
        true => {
            if a.upstream_insecure {
                eprintln!("kinetid-wsdump: --upstream-insecure: the upstream's certificate is not verified (the link is encrypted, but to whom is not checked)");
            }
            let c = crate::shell::tls::client(a.upstream_ca.as_deref(), a.upstream_insecure)?;
            Some((c, crate::shell::tls::server_name(&upstream.host)?))
        }
        false => None,
    };
    let (listener, local) = crate::shell::listen_on("--bind", &a.bind).await?;
    eprintln!(
        "kinetid-wsdump: proxy listening on {local} ({}), forwarding to {}://{}",
        if tls_server.is_some() { "wss" } else { "ws" },
        if upstream.tls { "wss" } else { "ws" },
        upstream.host
    );
    crate::shell::tell_lan_urls(
        local,
        if tls_server.is_some() { "wss" } else { "ws" },
        Some("the proxy's API answers this machine only"),
    );
    let record = match &a.record {
        Some(p) => Some(
            Recorder::for_path(p, local).map_err(|e| AppError::Io(p.display().to_string(), e))?,
        ),
        None => None,
    };
    let sh = Arc::new(Shared {
        cfg: Config {
            handshake: HandshakeMode::Expect,
            kinetid_auto: !a.kinetid,
            ..config(&a.limits, !a.no_kinetid, false, Some(Default::default()))
        },
        outs: Arc::new(Outputs {
            printer: printer(&a.output),
            out: (!a.quiet)
                .then(|| LineSink::spawn("stdout", Box::new(std::io::stdout()), 4 << 20)),
            record,
            bus: crate::shell::inspect::Bus::new(
                a.session.history(a.quiet),
                crate::shell::inspect::HISTORY_BYTES,
            ),
            across: Default::default(),
            filter: a.filter.spec(),
            show_http: a.session.show_http,
        }),
        err: LineSink::spawn("stderr", Box::new(std::io::stderr()), 1 << 20),
        upstream,
        tls_server,
        tls_client,
        faults: faults(&a)?,
        conns: Default::default(),
        head_timeout: a.head_timeout,
        cut: a
            .cut_after
            .as_deref()
            .map(parse_cut)
            .transpose()
            .map_err(AppError::Usage)?,
        next_conn: AtomicU64::new(0),
        local_port: local.port(),
        web: AtomicU64::new(0),
        open: AtomicU64::new(0),
        bytes_up: AtomicU64::new(0),
        bytes_down: AtomicU64::new(0),
        commands: Commands::new(PROXY_IDS),
        stopping: tokio::sync::watch::channel(false).0,
        started: crate::shell::now(),
        devices: std::sync::Mutex::new(DeviceTable::new(DEVICES_MAX)),
    });
    if a.session.console() {
        tokio::spawn(console(sh.clone()));
    }
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => {
                let Ok((sock, peer)) = r else { continue };
                let _ = sock.set_nodelay(true);
                let id = sh.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
                let sh = sh.clone();
                tasks.spawn(async move { connection(sh, id, sock, peer).await });
                while tasks.try_join_next().is_some() {}
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    sh.stopping.send_replace(true);
    // Connections get a moment to finish what they are forwarding.
    let _ = tokio::time::timeout(Duration::from_millis(1500), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
    if let Some(r) = &sh.outs.record {
        r.sync();
    }
    if let Some(o) = &sh.outs.out {
        o.close(Duration::from_millis(1000));
    }
    let web = sh.web.load(Ordering::Relaxed);
    let conns = sh.next_conn.load(Ordering::Relaxed) - web;
    eprintln!(
        "kinetid-wsdump: {conns} connection{}, {} bytes device->upstream, {} bytes upstream->device{}",
        if conns == 1 { "" } else { "s" },
        sh.bytes_up.load(Ordering::Relaxed),
        sh.bytes_down.load(Ordering::Relaxed),
        match web {
            0 => String::new(),
            w => format!(
                "; {w} request{} to the proxy's API and page not shown (--show-http shows them)",
                if w == 1 { "" } else { "s" }
            ),
        }
    );
    sh.err.close(Duration::from_millis(500));
    Ok(0)
}

/// A connection in the registry.
struct Entry {
    /// Frames to inject, and which way.
    tx: tokio::sync::mpsc::Sender<(Direction, Vec<u8>)>,
    peer: SocketAddr,
}

/// Devices the proxy's table holds, at most (as `listen --max-devices`).
const DEVICES_MAX: usize = 100_000;

/// One device connection and its upstream.
struct Link {
    sh: Arc<Shared>,
    id: u64,
    peer: SocketAddr,
    /// Record, annotate, show.
    tap: Tap,
    /// The backend's reading of the device's messages (its answers unused:
    /// the upstream gives its own).
    backend: Backend,
}

impl Link {
    /// Record, annotate and print bytes seen in `dir`.
    fn observe(&mut self, dir: Direction, bytes: &[u8]) {
        let ev = self.tap.bytes(dir, bytes, crate::shell::now());
        let answered = if dir == Direction::C2S {
            self.learn(&ev)
        } else {
            Vec::new()
        };
        for re in answered {
            self.notice(
                Direction::C2S,
                tls_note(
                    Severity::Info,
                    Code::ProxyInjected,
                    format!("the device's answer to the switch the proxy injected (id {re}) goes on to the upstream as the device sent it; the upstream never sent that command"),
                ),
            );
        }
    }

    /// What the device's messages say, as the backend would draw it: the
    /// devices this connection carries, into the table; a device's answer
    /// to a switch injected through the API, to the API call waiting.
    fn learn(&mut self, ev: &[Event]) -> Vec<u64> {
        let mut answered = Vec::new();
        for e in ev {
            let kinetid_wsdump::annotate::EventKind::Message(m) = &e.kind else {
                continue;
            };
            let at = e.time.unwrap_or_else(crate::shell::now);
            // The real backend answers; only the facts are kept here.
            for fx in self.backend.on_message(m, at) {
                match fx {
                    Effect::Claim {
                        dev,
                        role,
                        via,
                        take_over,
                    } => {
                        let peer = self.peer.to_string();
                        let mut d = self.sh.devices.lock().expect("devices");
                        d.claim(&dev, role, via.as_deref(), self.id, &peer, at, take_over);
                    }
                    Effect::Reading(r) => {
                        let mut d = self.sh.devices.lock().expect("devices");
                        d.reading(self.id, &r, at);
                    }
                    Effect::Relay { dev, on } => {
                        let mut d = self.sh.devices.lock().expect("devices");
                        d.relay(self.id, &dev, on, at);
                    }
                    Effect::Answer { re, result } => {
                        if self.sh.commands.answer(self.id, re, result) {
                            answered.push(re);
                        }
                    }
                    Effect::Send(_) | Effect::Close(..) => {}
                }
            }
        }
        answered
    }

    /// What the relay hands back: bytes of a direction's stream, or its note.
    fn seen(&mut self, dir: Direction, s: Seen<'_>) {
        match s {
            Seen::Bytes(b) => self.observe(dir, b),
            Seen::Note(n) => self.notice(dir, n),
        }
    }

    fn notice(&mut self, dir: Direction, n: kinetid_wsdump::note::Note) {
        self.tap.notice(dir, n, crate::shell::now());
    }
}

/// Counts a connection open for as long as its task lives (however it
/// ends, aborted at shutdown included).
struct OpenGuard(Arc<Shared>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

async fn connection(sh: Arc<Shared>, id: u64, sock: TcpStream, peer: SocketAddr) {
    sh.open.fetch_add(1, Ordering::Relaxed);
    let _open = OpenGuard(sh.clone());
    let mut link = Link {
        sh: sh.clone(),
        id,
        peer,
        tap: Tap::new(id, sh.cfg, sh.outs.clone(), Arc::new(NoCount)),
        backend: Backend::new(
            BackendConfig {
                hello_timeout: Duration::MAX,
                refuse: Vec::new(),
            },
            Instant::now(),
        ),
    };
    link.tap.open(&peer.to_string(), crate::shell::now());
    if let Some(mut dev) = device_side(&mut link, sock).await {
        let upgraded = upgrade(&mut link, &mut dev).await;
        link.tap.release();
        if let Some(mut up) = upgraded {
            let (tx, rx) = tokio::sync::mpsc::channel(16);
            sh.conns
                .lock()
                .expect("conns")
                .insert(id, Entry { tx, peer });
            pump(&mut link, &mut dev, &mut up, rx).await;
            sh.conns.lock().expect("conns").remove(&id);
            sh.devices.lock().expect("devices").depart(id);
            sh.commands.forget_conn(id);
        }
    }
    // A connection that ended before its request line (a failed TLS
    // handshake, a silent peer) is shown with what it did.
    link.tap.finish(crate::shell::now());
}

fn tls_note(sev: Severity, code: Code, msg: String) -> kinetid_wsdump::note::Note {
    kinetid_wsdump::note::listener(sev, code, msg)
}

/// Say on stderr why a connection went no further.
fn tell(link: &Link, why: &str) {
    link.sh
        .err
        .push(format!("kinetid-wsdump: connection {}: {}\n", link.id, Esc(why)).into_bytes());
}

/// The device's socket: as it is, or after the TLS handshake with `--tls`
/// (a device that speaks plain bytes to the TLS port, or whose handshake
/// fails or never finishes, gets a note and a clear answer).
async fn device_side(link: &mut Link, sock: TcpStream) -> Option<Dev> {
    let Some(acceptor) = link.sh.tls_server.clone() else {
        return Some(Sock::Plain(sock));
    };
    match crate::shell::tls::accept_device(&acceptor, sock, link.sh.head_timeout).await {
        Ok((s, msg)) => {
            link.notice(
                Direction::C2S,
                tls_note(Severity::Info, Code::TlsSession, msg),
            );
            Some(Sock::Tls(Box::new(s)))
        }
        Err(why) => {
            link.notice(
                Direction::C2S,
                tls_note(Severity::Error, Code::TlsFailed, why.clone()),
            );
            tell(link, &why);
            None
        }
    }
}

/// Read the device's head, open the upstream, forward the head with `Host`
/// rewritten, and the upstream's response back. Returns the upstream once
/// both heads went through.
async fn upgrade(link: &mut Link, dev: &mut Dev) -> Option<Up> {
    let sh = link.sh.clone();
    let deadline = tokio::time::Instant::now() + sh.head_timeout;
    let (head, used) = read_request(link, dev, deadline).await?;
    let (mut forwarded, old) = rewrite_host(&head[..used], &sh.upstream.host);
    // Bytes the device sent after its head go up right after it.
    forwarded.extend_from_slice(&head[used..]);
    if let Some(old) = old.filter(|o| *o != sh.upstream.host) {
        link.notice(
            Direction::C2S,
            kinetid_wsdump::note::listener(
                kinetid_wsdump::note::Severity::Info,
                kinetid_wsdump::note::Code::ProxyHostRewritten,
                format!("the proxy sends this head upstream with Host {:?} instead of {:?}; every other byte as the device sent it", sh.upstream.host, old),
            ),
        );
    }
    let mut up = connect_upstream(link, dev, deadline).await?;
    if up.write_all(&forwarded).await.is_err() {
        refuse(link, dev, 502, "the upstream closed the connection at once").await;
        return None;
    }
    forward_response(link, dev, &mut up, deadline).await?;
    // 101 or not, what follows is forwarded as it comes (a refusal's
    // body, or frames).
    sh.bytes_up
        .fetch_add(forwarded.len() as u64, Ordering::Relaxed);
    Some(up)
}

/// The device's request head, read and annotated: the bytes read and where
/// the head ends in them. `None` when it went no further (refused, a
/// request for the proxy's own API, or the device gone).
async fn read_request(
    link: &mut Link,
    dev: &mut Dev,
    deadline: tokio::time::Instant,
) -> Option<(Vec<u8>, usize)> {
    let sh = link.sh.clone();
    let mut head = Vec::new();
    let mut buf = vec![0u8; 4096];
    let used = loop {
        let n = match tokio::time::timeout_at(deadline, dev.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) => return None,
            Err(_) => {
                refuse(link, dev, 408, "request head not finished in time").await;
                return None;
            }
        };
        link.observe(Direction::C2S, &buf[..n]);
        head.extend_from_slice(&buf[..n]);
        link.tap.head_seen(&head);
        match handshake::parse_head(&head, sh.cfg.limits) {
            HeadParse::Partial => continue,
            HeadParse::Invalid(e) => {
                refuse(link, dev, e.status, &e.reason).await;
                return None;
            }
            HeadParse::Complete(h) => {
                let path = h.start_line.split(' ').nth(1).unwrap_or("");
                if handshake::request_kind(&h) == handshake::RequestKind::Plain
                    && path.starts_with("/api/")
                {
                    let rest = head[h.len..].to_vec();
                    if link
                        .tap
                        .web()
                        .plain_request(path.split('?').next().unwrap_or(""))
                    {
                        sh.web.fetch_add(1, Ordering::Relaxed);
                    }
                    api(link, dev, &h, rest).await;
                    return None;
                }
                if handshake::request_kind(&h) == handshake::RequestKind::WebSocket {
                    if let Some(n) = kinetid_wsdump::annotate::host_without_port(&h, sh.local_port)
                    {
                        link.notice(Direction::C2S, n);
                    }
                }
                break h.len;
            }
        }
    };
    Some((head, used))
}

/// A connection to the upstream (TLS if it is `wss://`), or the device
/// told why not.
async fn connect_upstream(
    link: &mut Link,
    dev: &mut Dev,
    deadline: tokio::time::Instant,
) -> Option<Up> {
    let sh = link.sh.clone();
    let tcp = match tokio::time::timeout_at(deadline, TcpStream::connect(&sh.upstream.addr)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let why = format!("upstream {} unreachable: {e}", sh.upstream.addr);
            refuse(link, dev, 502, &why).await;
            return None;
        }
        Err(_) => {
            let why = format!(
                "upstream {} did not accept the connection in time",
                sh.upstream.addr
            );
            refuse(link, dev, 504, &why).await;
            return None;
        }
    };
    let _ = tcp.set_nodelay(true);
    let up: Up = match &sh.tls_client {
        None => Sock::Plain(tcp),
        Some((connector, name)) => {
            match tokio::time::timeout_at(deadline, connector.connect(name.clone(), tcp)).await {
                Ok(Ok(s)) => {
                    let (_, c) = s.get_ref();
                    let cert = c
                        .peer_certificates()
                        .and_then(|p| p.first())
                        .map_or("no certificate".to_string(), |d| {
                            crate::shell::tls::cert_summary(d)
                        });
                    let msg = format!(
                        "upstream TLS: {}; {cert}",
                        crate::shell::tls::session_summary(c)
                    );
                    link.notice(
                        Direction::S2C,
                        tls_note(Severity::Info, Code::TlsSession, msg),
                    );
                    Sock::Tls(Box::new(s))
                }
                Ok(Err(e)) => {
                    let why = format!("TLS to upstream {} failed: {e}", sh.upstream.addr);
                    refuse(link, dev, 502, &why).await;
                    return None;
                }
                Err(_) => {
                    let why = format!(
                        "upstream {} did not finish the TLS handshake in time",
                        sh.upstream.addr
                    );
                    refuse(link, dev, 504, &why).await;
                    return None;
                }
            }
        }
    };
    Some(up)
}

/// The upstream's response head, forwarded to the device as it comes,
/// whatever it says (a refusal is the device's to see). `None` when the
/// connection ends here.
async fn forward_response(
    link: &mut Link,
    dev: &mut Dev,
    up: &mut Up,
    deadline: tokio::time::Instant,
) -> Option<()> {
    let sh = link.sh.clone();
    let mut buf = vec![0u8; 4096];
    // The response head: forwarded as it comes, whatever it says (a
    // refusal is the device's to see).
    let mut resp = Vec::new();
    loop {
        let n = match tokio::time::timeout_at(deadline, up.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            Ok(_) if resp.is_empty() => {
                refuse(
                    link,
                    dev,
                    502,
                    "the upstream closed the connection without answering",
                )
                .await;
                return None;
            }
            Ok(_) => {
                // Closed mid-head: what came was forwarded already.
                return None;
            }
            Err(_) if resp.is_empty() => {
                let why = format!(
                    "upstream {} did not answer the upgrade in time",
                    sh.upstream.addr
                );
                refuse(link, dev, 504, &why).await;
                return None;
            }
            Err(_) => return None,
        };
        link.observe(Direction::S2C, &buf[..n]);
        link.sh.bytes_down.fetch_add(n as u64, Ordering::Relaxed);
        if dev.write_all(&buf[..n]).await.is_err() {
            return None;
        }
        resp.extend_from_slice(&buf[..n]);
        match handshake::parse_head(&resp, sh.cfg.limits) {
            HeadParse::Partial => continue,
            // Whatever it was, the device has it; the annotation says what
            // is wrong with it.
            HeadParse::Invalid(_) => return None,
            HeadParse::Complete(_) => return Some(()),
        }
    }
}

/// The proxy's own API, on the port devices use, for this machine only
/// (loopback peers, the same Host/Origin/content-type rules as `listen`):
///
/// * `GET /api/devices`: the connections being forwarded and their devices;
/// * `POST /api/devices/ID/switch` with `{"on":true}`, `{"on":false}` or
///   `{"toggle":true}`: a Kinetid `switch` to the device, as if from the
///   backend (its `state` answer goes on to the backend);
/// * `POST /api/conns/N/inject` with `{"dir":"down"|"up"}` and one of
///   `"text"`, `"hex"` (a binary frame), `"ping"` or `"close"` (a code, and
///   `"reason"`): a frame to the device (`down`) or, masked with a fresh
///   key, to the upstream (`up`).
///
/// Injected frames go between forwarded frames, never inside one, and are
/// marked in the output. Answers `202` once the frame is queued.
async fn api(link: &mut Link, dev: &mut Dev, h: &handshake::HttpHead, mut body: Vec<u8>) {
    use crate::shell::http::{check_browser, is_loopback, json_response};
    let reply = |status: u16, v: serde_json::Value| json_response(status, &v, "");
    let err = |status: u16, msg: &str| reply(status, serde_json::json!({ "error": msg }));
    let (method, path) = crate::shell::http::method_and_path(h);
    let (method, path) = (method.to_string(), path.to_string());
    let resp = 'r: {
        if !is_loopback(&link.peer) {
            break 'r err(403, "the proxy's API answers this machine only");
        }
        if let Err((status, why)) = check_browser(h, &[]) {
            break 'r err(status, &why);
        }
        match (method.as_str(), path.as_str()) {
            ("GET" | "HEAD", "/api/inspector") => {
                break 'r crate::shell::inspect::page_response(method == "HEAD");
            }
            ("GET", "/api/metrics") => {
                let sh = &link.sh;
                let text = crate::shell::metrics::proxy_text(
                    sh.next_conn.load(Ordering::Relaxed),
                    sh.open.load(Ordering::Relaxed),
                    sh.bytes_up.load(Ordering::Relaxed),
                    sh.bytes_down.load(Ordering::Relaxed),
                );
                break 'r crate::shell::http::http_response(
                    200,
                    crate::shell::metrics::CONTENT_TYPE,
                    text.as_bytes(),
                    false,
                );
            }
            ("GET", "/api/info") => {
                break 'r reply(
                    200,
                    serde_json::json!({
                        "mode": "proxy",
                        "started": link.sh.started,
                        "upstream": format!("{}://{}", if link.sh.upstream.tls { "wss" } else { "ws" }, link.sh.upstream.host),
                        "version": env!("CARGO_PKG_VERSION"),
                    }),
                );
            }
            ("GET", "/api/events") => {
                // Not annotated: events about the events a page reads
                // would feed themselves.
                let mut stop = link.sh.stopping.subscribe();
                let sh = link.sh.clone();
                let end = crate::shell::inspect::stream(&sh.outs.bus, dev, true, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
                if let Some(why) = end.why() {
                    tell(link, &format!("the browser {why} and was disconnected from /api/events (the devices are never slowed for a page)"));
                }
                return;
            }
            _ => {}
        }
        let deadline = tokio::time::Instant::now() + link.sh.head_timeout;
        let read = crate::shell::http::read_body(dev, h, &mut body, deadline, |b| {
            link.observe(Direction::C2S, b)
        });
        if let Err(too_big) = read.await {
            break 'r too_big;
        }
        if let Some(deny) = crate::shell::http::state_change_refused(&method, h) {
            break 'r deny;
        }
        let segs: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["devices"]) => reply(200, devices_json(&link.sh)),
            ("POST", ["devices", id, "switch"]) => {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    break 'r err(400, "the body is not JSON");
                };
                let on = match (v["on"].as_bool(), v["toggle"].as_bool()) {
                    (_, Some(true)) => None,
                    (Some(on), _) => Some(on),
                    _ => break 'r err(400, r#"the body is {"on":true}, {"on":false} or {"toggle":true}"#),
                };
                match switch_device(&link.sh, id, on).await {
                    Ok(v) => reply(200, v),
                    Err((status, v)) => reply(status, v),
                }
            }
            ("POST", ["conns", n, "inject"]) => {
                let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) else {
                    break 'r err(400, "the body is not JSON");
                };
                let Some(d) = v["dir"].as_str() else {
                    break 'r err(400, INJECT_BODY);
                };
                let dir = match d {
                    "down" => Direction::S2C,
                    "up" => Direction::C2S,
                    _ => break 'r err(400, r#""dir" is "down" (to the device) or "up" (to the upstream)"#),
                };
                let Ok(n) = n.parse::<u64>() else {
                    break 'r err(404, &format!("no connection {n} is being forwarded"));
                };
                match inject(&link.sh, n, dir, &v) {
                    Ok(text) => reply(202, serde_json::json!({"conn": n, "dir": d, "injected": text})),
                    Err((status, why)) => err(status, &why),
                }
            }
            _ => err(404, "no such API call (GET /api/devices, POST /api/devices/ID/switch, POST /api/conns/N/inject)"),
        }
    };
    link.observe(Direction::S2C, &resp);
    let _ = tokio::time::timeout(Duration::from_secs(2), dev.write_all(&resp)).await;
}

/// The devices seen through the proxy, as `listen`'s `/api/devices` lists
/// them (the fields a proxy can know), sorted by id.
fn devices_json(sh: &Shared) -> serde_json::Value {
    sh.devices.lock().expect("devices").json()
}

/// Send a Kinetid switch to a device as if from the backend (`on`: None
/// toggles) and wait for its answer: its `state`, or an HTTP status and a
/// JSON error.
async fn switch_device(
    sh: &Shared,
    id: &str,
    on: Option<bool>,
) -> Result<serde_json::Value, (u16, serde_json::Value)> {
    let e = |status: u16, msg: String| (status, serde_json::json!({ "error": msg }));
    let target = sh
        .devices
        .lock()
        .expect("devices")
        .online_conn(id)
        .and_then(|n| Some((n, sh.conns.lock().expect("conns").get(&n)?.tx.clone())));
    let Some((conn, tx)) = target else {
        return Err(e(
            404,
            format!("no device {id} is connected through the proxy"),
        ));
    };
    let (cmd, arx) = sh.commands.start(conn);
    let text = kinetid_wsdump::kinetid::switch(cmd, id, on);
    let mut frame = Vec::new();
    kinetid_wsdump::engine::quirk::server_frame(
        &mut frame,
        kinetid_wsdump::wire::frame::OpCode::Text,
        text.as_bytes(),
    );
    if tx.try_send((Direction::S2C, frame)).is_err() {
        sh.commands.forget(conn, cmd);
        return Err(e(
            503,
            "that connection has too many injections waiting".into(),
        ));
    }
    // The device's state (or error) answers; it also goes on to the
    // upstream, as the device sent it (noted there).
    let answer = tokio::time::timeout(SWITCH_WAIT, arx).await;
    sh.commands.forget(conn, cmd);
    match answer {
        Ok(Ok(Err(v))) => Err((
            502,
            serde_json::json!({"error": "the device answered error", "answer": v, "conn": conn, "injected": text}),
        )),
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Err(_)) => Err(e(502, "the device's connection ended before it answered".into())),
        Err(_) => Err(e(
            504,
            format!(
                "the switch was injected (connection {conn}, id {cmd}) but the device did not answer within {} s",
                SWITCH_WAIT.as_secs()
            ),
        )),
    }
}

/// Queue a frame described by an injection body (`text`, `hex`, `ping`,
/// `close`) for connection `n` in `dir`; what was queued, or why not.
fn inject(
    sh: &Shared,
    n: u64,
    dir: Direction,
    v: &serde_json::Value,
) -> Result<String, (u16, String)> {
    let (op, payload) = injected_frame(v).map_err(|why| (400, why))?;
    let mut frame = Vec::new();
    let opts = kinetid_wsdump::wire::frame::EncodeOptions {
        mask: (dir == Direction::C2S).then(|| kinetid_wsdump::wire::frame::MaskKey(rand::random())),
        ..kinetid_wsdump::wire::frame::EncodeOptions::server()
    };
    kinetid_wsdump::wire::frame::encode_frame(&mut frame, op, &payload, opts);
    let text = format!("{} frame, {} payload bytes", op.name(), payload.len());
    let tx = sh
        .conns
        .lock()
        .expect("conns")
        .get(&n)
        .map(|e| e.tx.clone());
    match tx {
        None => Err((404, format!("no connection {n} is being forwarded"))),
        Some(tx) => match tx.try_send((dir, frame)) {
            Ok(()) => Ok(text),
            Err(_) => Err((
                503,
                "that connection has too many injections waiting".into(),
            )),
        },
    }
}

/// The console's help line.
const CONSOLE_HELP: &str = "commands: conns | on ID | off ID | toggle ID | down N TEXT | up N TEXT | ping N [TEXT] | close N [CODE [REASON]] | help (N: a connection number; down: to the device, up: to the upstream)";

/// Read commands from stdin until it ends; outcomes on stderr.
async fn console(sh: Arc<Shared>) {
    let say = {
        let sh = sh.clone();
        move |s: String| {
            sh.err.push(format!("{s}\n").into_bytes());
        }
    };
    crate::shell::console::run(CONSOLE_HELP, say, move |line| {
        let sh = sh.clone();
        async move { console_command(&sh, &line).await }
    })
    .await;
}

/// Run one console command and return what to print.
async fn console_command(sh: &Shared, line: &str) -> String {
    use kinetid_wsdump::escape::Esc;
    let mut it = line.splitn(2, ' ');
    let cmd = it.next().unwrap_or("");
    let rest = it.next().unwrap_or("").trim();
    let conn_and = |rest: &str| -> Result<(u64, String), String> {
        let mut p = rest.splitn(2, ' ');
        let n = p.next().unwrap_or("");
        n.parse::<u64>()
            .map(|n| (n, p.next().unwrap_or("").to_string()))
            .map_err(|_| {
                format!(
                    "{:?} is not a connection number; {CONSOLE_HELP}",
                    Esc(n).to_string()
                )
            })
    };
    let injected = |n: u64, r: Result<String, (u16, String)>| match r {
        Ok(t) => format!("connection {n}: {t} queued"),
        Err((_, why)) => Esc(&why).to_string(),
    };
    match cmd {
        "" => String::new(),
        "help" | "?" => CONSOLE_HELP.to_string(),
        "conns" | "devices" | "ls" => {
            let conns = sh.conns.lock().expect("conns");
            let table = sh.devices.lock().expect("devices");
            let rows = table.rows();
            let mut rows: Vec<(u64, String)> = conns
                .iter()
                .map(|(n, e)| {
                    let devs: Vec<String> = rows
                        .iter()
                        .filter(|d| d.online && d.conn == *n)
                        .map(|d| match d.on {
                            Some(on) => {
                                format!("{} ({}, {})", d.id, d.role, if on { "on" } else { "off" })
                            }
                            None => format!("{} ({})", d.id, d.role),
                        })
                        .collect();
                    let devs = if devs.is_empty() {
                        "(no hello yet)".to_string()
                    } else {
                        devs.join(", ")
                    };
                    (*n, format!("  {n:>5}  {:<22} {}", e.peer, Esc(&devs)))
                })
                .collect();
            rows.sort();
            if rows.is_empty() {
                return "no connection is being forwarded".into();
            }
            let mut s = format!(
                "{} connections:\n   conn  peer                   devices",
                rows.len()
            );
            for (_, r) in rows {
                s.push('\n');
                s.push_str(&r);
            }
            s
        }
        "on" | "off" | "toggle" => {
            let on = match cmd {
                "on" => Some(true),
                "off" => Some(false),
                _ => None,
            };
            match switch_device(sh, rest, on).await {
                Ok(v) => format!("{}: {}", Esc(rest), Esc(&v.to_string())),
                Err((status, v)) => format!("{}: {status} {}", Esc(rest), Esc(&v.to_string())),
            }
        }
        "down" | "up" => match conn_and(rest) {
            Ok((n, text)) => {
                let dir = if cmd == "down" {
                    Direction::S2C
                } else {
                    Direction::C2S
                };
                injected(n, inject(sh, n, dir, &serde_json::json!({ "text": text })))
            }
            Err(e) => e,
        },
        "ping" => match conn_and(rest) {
            Ok((n, text)) => injected(
                n,
                inject(sh, n, Direction::S2C, &serde_json::json!({ "ping": text })),
            ),
            Err(e) => e,
        },
        "close" => match conn_and(rest) {
            Ok((n, args)) => match crate::shell::control::close_args(&args) {
                Ok((code, reason)) => injected(
                    n,
                    inject(
                        sh,
                        n,
                        Direction::S2C,
                        &serde_json::json!({ "close": code, "reason": reason }),
                    ),
                ),
                Err(e) => e,
            },
            Err(e) => e,
        },
        other => format!(
            "unknown command {:?}; {CONSOLE_HELP}",
            Esc(other).to_string()
        ),
    }
}

/// How long `POST /api/devices/ID/switch` waits for the device's answer.
const SWITCH_WAIT: Duration = Duration::from_secs(10);

/// What `POST /api/conns/N/inject` takes besides `dir`.
const INJECT_BODY: &str = r#"the body is {"dir":"down"|"up"} with one of "text":"...", "hex":"0a1b..." (binary), "ping":"..." or "close":CODE (and "reason":"...")"#;

/// The frame an injection body asks for: its opcode and payload, checked
/// (a control frame's payload is at most 125 bytes; a close code must be
/// one a Close frame may carry).
fn injected_frame(
    v: &serde_json::Value,
) -> Result<(kinetid_wsdump::wire::frame::OpCode, Vec<u8>), String> {
    use kinetid_wsdump::wire::frame::{close_payload, CloseCode, OpCode};
    if let Some(t) = v["text"].as_str() {
        return Ok((OpCode::Text, t.as_bytes().to_vec()));
    }
    if let Some(h) = v["hex"].as_str() {
        return hex::decode(h.trim())
            .map(|b| (OpCode::Binary, b))
            .map_err(|e| format!("\"hex\" is not hex: {e}"));
    }
    if let Some(p) = v["ping"].as_str() {
        if p.len() > 125 {
            return Err("a ping carries at most 125 bytes (RFC 6455 5.5)".into());
        }
        return Ok((OpCode::Ping, p.as_bytes().to_vec()));
    }
    if let Some(c) = v.get("close") {
        let code = c
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .map(CloseCode)
            .filter(|c| c.is_allowed())
            .ok_or(
                "\"close\" is a code a Close frame may carry (1000-1003, 1007-1014, 3000-4999)",
            )?;
        let payload = close_payload(Some(code), v["reason"].as_str().unwrap_or(""));
        if payload.len() > 125 {
            return Err("a Close frame carries at most 125 bytes: the reason is too long".into());
        }
        return Ok((OpCode::Close, payload));
    }
    Err(INJECT_BODY.into())
}

/// Answer the device with an error status (shown, recorded) and say why on
/// stderr.
async fn refuse(link: &mut Link, dev: &mut Dev, status: u16, why: &str) {
    link.sh.err.push(
        format!(
            "kinetid-wsdump: connection {}: {status} {}: {}\n",
            link.id,
            handshake::reason_phrase(status),
            Esc(why)
        )
        .into_bytes(),
    );
    let resp = error_response(status, "", why);
    link.observe(Direction::S2C, &resp);
    let _ = tokio::time::timeout(Duration::from_secs(2), dev.write_all(&resp)).await;
}

/// Read `--cut-after 30s` or `--cut-after 20f` (frames).
pub fn parse_cut(s: &str) -> Result<Cut, String> {
    if let Some(n) = s.strip_suffix('f') {
        return n
            .parse()
            .map(Cut::Frames)
            .map_err(|_| format!("{s:?}: a number of frames is written like 20f"));
    }
    crate::cli::parse_duration(s).map(Cut::After)
}

/// Apply `[up:|down:]VALUE` flags: `set` on the direction named, or both.
fn each<T: Copy>(
    vals: &[String],
    flag: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    faults: &mut (Faults, Faults),
    set: impl Fn(&mut Faults, T),
) -> Result<(), AppError> {
    for v in vals {
        let (u, d, x) = match (v.strip_prefix("up:"), v.strip_prefix("down:")) {
            (Some(r), _) => (true, false, r),
            (_, Some(r)) => (false, true, r),
            _ => (true, true, v.as_str()),
        };
        let t = parse(x).map_err(|e| AppError::Usage(format!("{flag}: {e}")))?;
        if u {
            set(&mut faults.0, t);
        }
        if d {
            set(&mut faults.1, t);
        }
    }
    Ok(())
}

/// Apply `up|down|both` flags.
fn sides(
    vals: &[String],
    flag: &str,
    faults: &mut (Faults, Faults),
    set: impl Fn(&mut Faults),
) -> Result<(), AppError> {
    for v in vals {
        let (u, d) = match v.as_str() {
            "up" => (true, false),
            "down" => (false, true),
            "both" => (true, true),
            other => {
                return Err(AppError::Usage(format!(
                    "{flag}: {other:?}: up, down or both"
                )))
            }
        };
        if u {
            set(&mut faults.0);
        }
        if d {
            set(&mut faults.1);
        }
    }
    Ok(())
}

/// The faults of both directions (device to upstream, upstream to device).
pub fn faults(a: &ProxyArgs) -> Result<(Faults, Faults), AppError> {
    let mut f = (Faults::default(), Faults::default());
    let time = |x: &str| crate::cli::parse_duration(x);
    each(&a.delay, "--delay", time, &mut f, |f, t| f.delay = t)?;
    each(&a.jitter, "--jitter", time, &mut f, |f, t| f.jitter = t)?;
    let rate = |x: &str| match crate::cli::parse_size(x.trim_end_matches("/s"))? {
        0 => Err("must be above 0".to_string()),
        r => Ok(r),
    };
    each(&a.bandwidth, "--bandwidth", rate, &mut f, |f, r| {
        f.bandwidth = Some(r)
    })?;
    sides(&a.drop_pings, "--drop-pings", &mut f, |f| {
        f.drop_pings = true
    })?;
    sides(&a.stall, "--stall", &mut f, |f| f.stall = true)?;
    Ok(f)
}

async fn sleep_until(t: Option<std::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Forward both ways until the relay says the connection is over: every
/// read goes to the relay (which hands back what to annotate and what to
/// write when), every due write goes out.
async fn pump(
    link: &mut Link,
    dev: &mut Dev,
    up: &mut Up,
    mut inject: tokio::sync::mpsc::Receiver<(Direction, Vec<u8>)>,
) {
    let (up_faults, down_faults) = link.sh.faults;
    let cfg = RelayConfig {
        up: up_faults,
        down: down_faults,
        cut: link.sh.cut,
        seed: rand::random(),
    };
    let mut relay = Relay::new(cfg, Instant::now(), &mut |d: Direction, s: Seen<'_>| {
        link.seen(d, s)
    });
    // TLS reads into these (a plain socket reads into the thread's buffer,
    // so an idle forwarded connection holds no read buffer).
    let (mut dev_tls, mut up_tls) = (Vec::new(), Vec::new());
    loop {
        // What is due goes out now: a timer, even one already expired,
        // fires on the timer's next millisecond tick, which would add up
        // to 2 ms to every chunk forwarded without a fault.
        while let Some((dir, t)) = relay.poll_transmit(Instant::now()) {
            if !write(link, dir, t, dev, up).await {
                return;
            }
        }
        match relay.poll_end(Instant::now()) {
            Some(End::Closed) => return,
            Some(End::Drop(n)) => return link.notice(Direction::C2S, n),
            None => {}
        }
        let wake = relay.poll_timeout();
        let mut seen = |d: Direction, s: Seen<'_>| link.seen(d, s);
        tokio::select! {
            r = dev.wait_read(&mut dev_tls), if relay.readable(Direction::C2S) => {
                took(&mut relay, Direction::C2S, r, dev, &dev_tls, &mut seen)
            }
            r = up.wait_read(&mut up_tls), if relay.readable(Direction::S2C) => {
                took(&mut relay, Direction::S2C, r, up, &up_tls, &mut seen)
            }
            // Only taken while the relay has room: past that the channel
            // fills and the API answers 503.
            Some((dir, frame)) = inject.recv(), if relay.can_inject() => {
                let _ = relay.inject(dir, frame, Instant::now(), &mut seen);
            }
            _ = sleep_until(wake) => {}
        }
    }
}

/// What a side's socket gave, to the relay: bytes (TLS has read them into
/// `tls`; a plain socket is read now, into the thread's buffer), or its end.
fn took<T: tokio::io::AsyncRead + Unpin>(
    relay: &mut Relay,
    dir: Direction,
    r: std::io::Result<Option<usize>>,
    sock: &Sock<T>,
    tls: &[u8],
    seen: &mut dyn FnMut(Direction, Seen<'_>),
) {
    match r {
        Ok(Some(n)) if n > 0 => relay.on_read(dir, &tls[..n], Instant::now(), seen),
        Ok(None) => crate::shell::with_read_buffer(|buf| match sock.try_read_plain(buf) {
            Ok(n) if n > 0 => relay.on_read(dir, &buf[..n], Instant::now(), seen),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            _ => relay.on_eof(dir, Instant::now()),
        }),
        _ => relay.on_eof(dir, Instant::now()),
    }
}

/// One write the relay asked for (false: that side is gone).
async fn write(link: &Link, dir: Direction, t: Transmit, dev: &mut Dev, up: &mut Up) -> bool {
    match dir {
        Direction::C2S => send(up, t, &link.sh.bytes_up).await,
        Direction::S2C => send(dev, t, &link.sh.bytes_down).await,
    }
}

async fn send<S: tokio::io::AsyncWrite + Unpin>(
    to: &mut S,
    t: Transmit,
    counter: &AtomicU64,
) -> bool {
    match t {
        Transmit::Bytes(b) => {
            counter.fetch_add(b.len() as u64, Ordering::Relaxed);
            to.write_all(&b).await.is_ok()
        }
        Transmit::Shutdown => {
            let _ = to.shutdown().await;
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls() {
        let u = parse_upstream("ws://127.0.0.1:9000/ws").unwrap();
        assert_eq!(
            (u.addr.as_str(), u.host.as_str()),
            ("127.0.0.1:9000", "127.0.0.1:9000")
        );
        let u = parse_upstream("ws://backend.example").unwrap();
        assert_eq!(u.addr, "backend.example:80");
        let u = parse_upstream("ws://[::1]:9000/x").unwrap();
        assert_eq!(u.addr, "[::1]:9000");
        assert!(parse_upstream("http://x").is_err());
        let u = parse_upstream("wss://backend.example/ws").unwrap();
        assert!(u.tls && u.addr == "backend.example:443");
        assert!(parse_upstream("ws:///x").is_err());
    }

    #[test]
    fn only_host_changes() {
        let head = b"GET /ws HTTP/1.1\r\nhost: 10.0.0.5:8080\r\nUpgrade: websocket\r\nX-Host: keep\r\n\r\n";
        let (out, old) = rewrite_host(head, "127.0.0.1:9000");
        assert_eq!(old.as_deref(), Some("10.0.0.5:8080"));
        assert_eq!(
            out,
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUpgrade: websocket\r\nX-Host: keep\r\n\r\n"
        );
        // A bare-LF head keeps its line ends.
        let (out, _) = rewrite_host(b"GET / HTTP/1.1\nHost: a\n\n", "b");
        assert_eq!(out, b"GET / HTTP/1.1\nHost: b\n\n");
    }
}
