//! `kinetid-wsdump listen`: a raw TCP listener that performs the upgrade by
//! hand, annotates every byte both ways through the same core as `replay`,
//! plays the Kinetid backend, and forwards on/off commands to devices.
//!
//! * [`conn`]: one task per connection owns its socket and its annotator.
//! * [`hub`]: the device registry, pending commands, counters and sinks.
//! * [`api`]: the page and the REST API, with the checks that keep other
//!   web pages out.
//! * [`console`]: commands typed on stdin.
//!
//! Two runtimes: the devices' connections run on a multi-threaded one,
//! whose workers take the burst of reports at each period boundary; the
//! accept loop, the API and metrics, the console and the housekeeping run
//! on a thread of their own ("control"). A switch from the API is then
//! never queued behind that burst: the control thread reads the request
//! at once, and the device's task, woken from outside its runtime, is
//! taken from the runtime's injection queue within a few dozen polls, not
//! after every task the burst woke (`command_delivery_seconds` measures
//! it; docs/scale.md). Which runtime serves a plain connection is decided
//! from its request line, peeked, not read: the connection itself reads
//! and annotates every byte as before.
//!
//! Output never stalls the network path (a full stdout queue drops lines
//! and counts them), the recording is written before the bytes it holds
//! are acted on, and SIGINT/SIGTERM are watched on a thread of their own so
//! they end the process within the shutdown grace whatever else is stuck.

pub mod api;
pub mod conn;
pub mod console;
pub mod hub;
pub mod lane;
pub mod memory;

use crate::cli::ListenArgs;
use crate::shell::sinks::{LineSink, Recorder};
use crate::shell::{config, printer, AppError};
use hub::Hub;
use kinetid_wsdump::annotate::Config;
use kinetid_wsdump::render::Printer;
use kinetid_wsdump::wire::handshake::error_response;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::{broadcast, watch, Semaphore};

/// Annotated output waiting for a slow stdout, at most (then lines are
/// dropped and counted, as tcpdump drops packets).
const STDOUT_QUEUE: usize = 4 << 20;

/// How long connections get to finish their closing handshakes at shutdown.
const GRACE: Duration = Duration::from_millis(2500);

/// The TLS acceptor of `--tls`.
#[derive(Clone)]
pub struct TlsServer(pub tokio_rustls::TlsAcceptor);

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsServer")
    }
}

/// Settings of a running listener (built from the flags).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Annotator config.
    pub cfg: Config,
    /// Renderer.
    pub printer: Printer,
    /// `--tls`: TLS toward devices.
    pub tls: Option<TlsServer>,
    /// What to show (`--conn`, `--device`, `--only-notes`, `--since`, `--until`).
    pub filter: kinetid_wsdump::annotate::filter::Spec,
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
    /// Time allowed for the rest of a started frame.
    pub frame_timeout: Duration,
    /// Time a write may wait for a peer that does not read.
    pub write_timeout: Duration,
    /// API bearer token.
    pub api_token: Option<String>,
    /// Host names (besides IP literals and localhost) the page and API answer to.
    pub allow_hosts: Vec<String>,
    /// `--allow-origin`: pages whose WebSocket may connect as a device.
    pub allow_origins: Vec<String>,
    /// Devices refused at hello.
    pub refuse: Vec<String>,
    /// How long a switch waits for the device.
    pub reply_timeout: Duration,
    /// Bytes all connections may hold in unfinished frames and messages.
    pub max_buffered: usize,
    /// Rows in the device table.
    pub max_devices: usize,
    /// Backend bugs committed on purpose.
    pub quirks: Vec<kinetid_wsdump::engine::quirk::ServerQuirk>,
    /// Events kept for the inspector's history.
    pub history: usize,
    /// `--show-http`: show and count the tool's own web requests.
    pub show_http: bool,
}

/// The API token from the flag, the environment or a file; an empty one is
/// refused (it would lock the API, or open it, depending on the reader).
fn api_token(a: &ListenArgs) -> Result<Option<String>, AppError> {
    let tok = if let Some(t) = &a.api_token {
        Some(t.clone())
    } else if let Some(p) = &a.api_token_file {
        let t = std::fs::read_to_string(p).map_err(|e| AppError::Io(p.display().to_string(), e))?;
        Some(t.trim_end_matches(['\n', '\r']).to_string())
    } else {
        std::env::var("KINETID_API_TOKEN").ok()
    };
    match tok {
        Some(t) if t.trim().is_empty() => Err(AppError::Usage(
            "the API token is empty: give a non-empty token (--api-token, --api-token-file or KINETID_API_TOKEN)".into(),
        )),
        Some(t) if t.chars().any(|c| c.is_whitespace() || c.is_control()) => Err(AppError::Usage(
            "the API token must not contain spaces or control characters".into(),
        )),
        t => Ok(t),
    }
}

/// Run `listen` from flags.
pub fn run(a: ListenArgs) -> Result<u8, AppError> {
    if a.tls.tls {
        crate::shell::tls::set_keylog(a.tls.keylog.as_deref())?;
    }
    let settings = Settings {
        cfg: config(
            &a.limits,
            !a.echo,
            a.resync,
            (!a.no_deflate).then(|| a.deflate.unwrap_or_default()),
        ),
        printer: printer(&a.output),
        tls: crate::shell::tls::from_args(&crate::shell::tls::with_lan_names(&a.tls, &a.bind))?
            .map(TlsServer),
        filter: a.filter.spec(),
        quiet: a.quiet,
        lenient: a.lenient,
        echo: a.echo,
        ping_interval: a.ping_interval,
        idle_timeout: a.idle_timeout,
        hello_timeout: a.hello_timeout,
        head_timeout: a.head_timeout,
        frame_timeout: a.frame_timeout,
        write_timeout: a.write_timeout,
        api_token: api_token(&a)?,
        allow_hosts: a.allow_host.clone(),
        allow_origins: a.allow_origin.clone(),
        refuse: a.refuse.clone(),
        reply_timeout: a.reply_timeout,
        max_buffered: a.max_buffered as usize,
        max_devices: a.max_devices,
        quirks: a.quirks.clone(),
        history: a.session.history(a.quiet),
        show_http: a.session.show_http,
    };
    memory::return_freed_memory();
    let console = a.session.console();
    let stop = crate::shell::shutdown::watch_signals(crate::shell::shutdown::Watchdog {
        after: GRACE + Duration::from_millis(1500),
        status: 0,
        who: None,
    });
    let devices = tokio::runtime::Builder::new_multi_thread()
        .thread_name("devices")
        .enable_all()
        .build()
        .map_err(|e| AppError::Io("tokio runtime".into(), e))?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Io("tokio runtime".into(), e))?;
    let r = rt.block_on(serve(
        a.bind.clone(),
        a.max_connections,
        a.record.clone(),
        console,
        settings,
        stop,
        devices.handle().clone(),
    ));
    // The console's stdin read sits in a blocking thread that never ends by itself.
    rt.shutdown_timeout(Duration::from_millis(200));
    devices.shutdown_timeout(Duration::from_millis(200));
    r
}

async fn serve(
    bind: String,
    max_conns: usize,
    record: Option<std::path::PathBuf>,
    console: bool,
    s: Settings,
    mut stop: watch::Receiver<bool>,
    devices: Handle,
) -> Result<u8, AppError> {
    let (listener, local) = crate::shell::listen_on("--bind", &bind).await?;
    // The first line on stderr says where we are: tests and scripts read it.
    let (ws, http) = if s.tls.is_some() {
        ("wss", "https")
    } else {
        ("ws", "http")
    };
    eprintln!("kinetid-wsdump: listening on {local} ({ws}://{local}/ws, page {http}://{local}/, API {http}://{local}/api/devices)");
    crate::shell::tell_lan_urls(
        local,
        ws,
        s.api_token.is_none().then_some(
            "the page and API answer this machine only; give --api-token-file FILE to open them to the LAN",
        ),
    );

    let out =
        (!s.quiet).then(|| LineSink::spawn("stdout", Box::new(std::io::stdout()), STDOUT_QUEUE));
    let err = LineSink::spawn("stderr", Box::new(std::io::stderr()), 1 << 20);
    let rec = match &record {
        Some(path) => Some(
            Recorder::for_path(path, local)
                .map_err(|e| AppError::Io(path.display().to_string(), e))?,
        ),
        None => None,
    };
    let hub = Arc::new(Hub::new(s, out, err, rec));
    let (shutdown_tx, _) = broadcast::channel::<()>(1);
    let sem = Arc::new(Semaphore::new(max_conns));
    let tasks: Tasks = Arc::default();
    if console {
        tokio::spawn(console::run(hub.clone()));
    }
    tokio::spawn(housekeeping(hub.clone()));
    loop {
        tokio::select! {
            acc = listener.accept() => match acc {
                Ok((sock, peer)) => accept(&hub, &sem, &shutdown_tx, &tasks, &devices, sock, peer),
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
    hub.notice("kinetid-wsdump: shutting down: close 1001 to every device (up to 2.5 s; Ctrl-C again to quit now)");
    let _ = shutdown_tx.send(());
    let handles: Vec<_> = std::mem::take(&mut *tasks.lock().expect("tasks"));
    let _ = tokio::time::timeout(GRACE, async {
        for h in handles {
            let _ = h.await;
        }
    })
    .await;
    finish(&hub);
    Ok(0)
}

type Tasks = Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>;

/// Serve a new connection in a task of its own, or answer 503 over the limit.
fn accept(
    hub: &Arc<Hub>,
    sem: &Arc<Semaphore>,
    shutdown: &broadcast::Sender<()>,
    tasks: &Tasks,
    devices: &Handle,
    sock: TcpStream,
    peer: SocketAddr,
) {
    let _ = sock.set_nodelay(true);
    let hub = hub.clone();
    let hub_tls = hub.s.tls.is_some();
    let Ok(permit) = sem.clone().try_acquire_owned() else {
        hub.counters.refused.fetch_add(1, Ordering::Relaxed);
        hub.metrics
            .refused
            .with_label_values(&["connection_limit"])
            .inc();
        tokio::spawn(async move {
            let mut sock = sock;
            let r = error_response(503, "Retry-After: 5\r\n", "connection limit reached");
            let _ = tokio::time::timeout(Duration::from_secs(2), sock.write_all(&r)).await;
            let _ = sock.shutdown().await;
        });
        return;
    };
    let id = hub.next_conn.fetch_add(1, Ordering::Relaxed) + 1;
    let local_port = sock.local_addr().ok().map(|a| a.port());
    hub.counters.connections.fetch_add(1, Ordering::Relaxed);
    hub.metrics.connections.inc();
    hub.metrics.connections_open.inc();
    let sd = shutdown.subscribe();
    let serve = move |sock: TcpStream| async move {
        let (sock, tls) = match &hub.s.tls {
            None => (crate::shell::sock::Sock::Plain(sock), None),
            Some(t) => match Box::pin(crate::shell::tls::accept_device(
                &t.0,
                sock,
                hub.s.head_timeout,
            ))
            .await
            {
                Ok((s, m)) => (crate::shell::sock::Sock::Tls(Box::new(s)), Some(m)),
                Err(why) => {
                    hub.notice(format!(
                        "kinetid-wsdump: connection {id} from {peer}: {why}"
                    ));
                    hub.metrics.connections_open.dec();
                    drop(permit);
                    return;
                }
            },
        };
        let mut c = conn::Conn::new(id, peer, sock, hub.clone(), tls);
        c.local_port = local_port;
        c.run(sd).await;
        drop(c);
        hub.metrics.connections_open.dec();
        drop(permit);
    };
    // Over TLS the request line cannot be peeked: the devices' runtime
    // serves every connection (the API too).
    if hub_tls {
        keep(tasks, devices.spawn(moved(sock, serve)));
        return;
    }
    let (tasks2, devices) = (tasks.clone(), devices.clone());
    let t = tokio::spawn(async move {
        match lane_of(&sock).await {
            Lane::Control => serve(sock).await,
            Lane::Devices => keep(&tasks2, devices.spawn(moved(sock, serve))),
        }
    });
    keep(tasks, t);
}

/// Keep a connection's task, to wait for it at shutdown.
fn keep(tasks: &Tasks, t: tokio::task::JoinHandle<()>) {
    let mut t0 = tasks.lock().expect("tasks");
    t0.push(t);
    if t0.len() > 1024 {
        t0.retain(|h| !h.is_finished());
    }
}

/// A socket accepted on the control thread, served on the runtime this
/// future is spawned on (registered again with that runtime's reactor,
/// so its readiness is not the control thread's work).
async fn moved<F, Fut>(sock: TcpStream, serve: F)
where
    F: FnOnce(TcpStream) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    match sock.into_std().and_then(TcpStream::from_std) {
        Ok(s) => serve(s).await,
        Err(e) => tracing::warn!("moving an accepted connection to the devices' runtime: {e}"),
    }
}

/// Which runtime serves a plain connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// The control thread: the API and the metrics.
    Control,
    /// The devices' runtime: devices, the page, the event stream, and
    /// whatever cannot be told in time.
    Devices,
}

/// Peek (not read) the request line until its target is known: at most
/// about 100 ms for a client that says nothing or very slowly.
async fn lane_of(sock: &TcpStream) -> Lane {
    let mut b = [0u8; 96];
    let deadline = tokio::time::Instant::now() + Duration::from_millis(100);
    loop {
        let n = match tokio::time::timeout_at(deadline, sock.peek(&mut b)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Lane::Devices,
        };
        match lane_of_request_line(&b[..n]) {
            Some(l) => return l,
            None if n == b.len() => return Lane::Devices,
            None => {}
        }
        // Peeking leaves the socket readable: wait for more bytes by time.
        if tokio::time::Instant::now() >= deadline {
            return Lane::Devices;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// `METHOD SP TARGET ...`: the API (but its event stream) and the metrics
/// go to the control thread. `None` while the target is not complete.
fn lane_of_request_line(b: &[u8]) -> Option<Lane> {
    let sp = b.iter().position(|&c| c == b' ')?;
    let rest = &b[sp + 1..];
    let end = rest
        .iter()
        .position(|&c| matches!(c, b' ' | b'?' | b'\r' | b'\n'))?;
    let path = &rest[..end];
    let api = path.starts_with(b"/api/") && path != b"/api/events";
    Some(if api || path == b"/metrics" {
        Lane::Control
    } else {
        Lane::Devices
    })
}

/// Periodic chores: fsync the recording, say when output is being dropped.
async fn housekeeping(hub: Arc<Hub>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut dropped_told = 0;
    let mut was_high = false;
    loop {
        tick.tick().await;
        // After a burst of big frames has drained, give the pages back.
        let held = hub.buffered.load(Ordering::Relaxed);
        if was_high && held < (1 << 20) {
            memory::trim();
        }
        was_high = held >= (16 << 20) || (was_high && held >= (1 << 20));
        if let Some(r) = hub.outs.record.clone() {
            let _ = tokio::task::spawn_blocking(move || r.sync()).await;
        }
        let dropped = hub.outs.out.as_ref().map_or(0, LineSink::dropped_lines);
        if dropped > dropped_told {
            dropped_told = dropped;
            hub.notice(format!("kinetid-wsdump: stdout is not keeping up: {dropped} output lines dropped so far (devices are not slowed; --quiet, --format summary or --record keep up)"));
        }
    }
}

/// Flush what can be flushed, within bounds, and print the summary.
fn finish(hub: &Hub) {
    if let Some(r) = &hub.outs.record {
        r.sync();
    }
    let stdout_ok = hub
        .outs
        .out
        .as_ref()
        .is_none_or(|o| o.close(Duration::from_millis(1000)));
    let c = &hub.counters;
    let dropped = hub.outs.out.as_ref().map_or(0, LineSink::dropped_lines);
    let n = |v: &std::sync::atomic::AtomicU64, one: &str, many: &str| {
        let v = v.load(Ordering::Relaxed);
        format!("{v} {}", if v == 1 { one } else { many })
    };
    hub.notice(format!(
        "kinetid-wsdump: {} ({} refused), {} in, {} out, {} in, {} in, {} out, {}, {}, {} output lines dropped{}{}",
        n(&c.connections, "connection", "connections"),
        c.refused.load(Ordering::Relaxed),
        n(&c.frames_in, "frame", "frames"),
        n(&c.frames_out, "frame", "frames"),
        n(&c.messages_in, "message", "messages"),
        n(&c.bytes_in, "byte", "bytes"),
        n(&c.bytes_out, "byte", "bytes"),
        n(&c.errors, "error note", "error notes"),
        n(&c.warnings, "warning", "warnings"),
        dropped,
        if stdout_ok { "" } else { " (stdout stalled: its last lines were not written)" },
        match c.web.load(Ordering::Relaxed) {
            0 => String::new(),
            w => format!(
                "; {w} request{} to this tool's page, API and metrics not shown (--show-http shows them)",
                if w == 1 { "" } else { "s" }
            ),
        },
    ));
    hub.err.close(Duration::from_millis(500));
}

#[cfg(test)]
mod tests {
    use super::{lane_of_request_line, Lane};

    #[test]
    fn the_api_and_metrics_go_to_the_control_thread_and_the_rest_to_the_devices() {
        let l = |b: &[u8]| lane_of_request_line(b);
        assert_eq!(
            l(b"POST /api/devices/KN-A4CF12F0E1B2/switch HTTP/1.1\r\n"),
            Some(Lane::Control)
        );
        assert_eq!(l(b"GET /metrics HTTP/1.1\r\n"), Some(Lane::Control));
        assert_eq!(l(b"GET /api/devices?x=1 HTTP/1.1"), Some(Lane::Control));
        assert_eq!(l(b"GET /api/events HTTP/1.1\r\n"), Some(Lane::Devices));
        assert_eq!(l(b"GET /ws HTTP/1.1\r\n"), Some(Lane::Devices));
        assert_eq!(l(b"GET / HTTP/1.1\r\n"), Some(Lane::Devices));
        // Not yet known: the target is still arriving.
        assert_eq!(l(b"GET /api/dev"), None);
        assert_eq!(l(b"GET"), None);
    }
}
