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

mod api;
mod console;
mod flags;
mod pump;
mod upgrade;

use api::*;
use console::*;
pub use flags::*;
use pump::*;
use upgrade::*;

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

/// `wss://` upstream: the TLS client and the name the upstream is asked for.
type UpstreamTls = Option<(
    tokio_rustls::TlsConnector,
    rustls::pki_types::ServerName<'static>,
)>;

/// The device's socket, plain or TLS.
type Dev = Sock<tokio_rustls::server::TlsStream<TcpStream>>;
/// The upstream's socket, plain or TLS.
type Up = Sock<tokio_rustls::client::TlsStream<TcpStream>>;

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
    tls_client: UpstreamTls,
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
    let (tls_server, tls_client) = tls_sides(&a, &upstream)?;
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
    let sh = shared(&a, upstream, local, tls_server, tls_client)?;
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
    goodbye(&sh);
    sh.err.close(Duration::from_millis(500));
    Ok(0)
}

/// TLS toward devices (`--tls`) and toward a `wss://` upstream.
fn tls_sides(
    a: &ProxyArgs,
    upstream: &Upstream,
) -> Result<(Option<tokio_rustls::TlsAcceptor>, UpstreamTls), AppError> {
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
    Ok((tls_server, tls_client))
}

/// What every connection shares, from the flags.
fn shared(
    a: &ProxyArgs,
    upstream: Upstream,
    local: SocketAddr,
    tls_server: Option<tokio_rustls::TlsAcceptor>,
    tls_client: UpstreamTls,
) -> Result<Arc<Shared>, AppError> {
    let record = match &a.record {
        Some(p) => Some(
            Recorder::for_path(p, local).map_err(|e| AppError::Io(p.display().to_string(), e))?,
        ),
        None => None,
    };
    Ok(Arc::new(Shared {
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
            across: Some(Default::default()),
            filter: a.filter.spec(),
            show_http: a.session.show_http,
        }),
        err: LineSink::spawn("stderr", Box::new(std::io::stderr()), 1 << 20),
        upstream,
        tls_server,
        tls_client,
        faults: faults(a)?,
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
    }))
}

/// The exit summary, once the output is flushed.
fn goodbye(sh: &Shared) {
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
