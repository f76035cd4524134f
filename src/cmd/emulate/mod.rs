//! `kinetid-wsdump emulate-device`: one Kinetid plug, a home (an active plug
//! with passive plugs behind it over PLC), or a fleet of independent plugs.
//!
//! This module holds the flags and the fleet (ids, seeds, ramp, status line,
//! summary); [`plug`] drives one home's connections. What a home does is the
//! engine's [`kinetid_wsdump::engine::device::Home`]; how it speaks RFC 6455
//! is the engine's session.

pub mod plug;

use crate::cli::{EmulateArgs, Shard};
use crate::shell::metrics::{fleet_text, FleetSnapshot};
use crate::shell::{printer, AppError};
use kinetid_wsdump::engine::device::{Home, HomeConfig, Plug};
use kinetid_wsdump::engine::quirk::Quirk;
use kinetid_wsdump::kinetid;
use kinetid_wsdump::kinetid::meter::Appliance;
use kinetid_wsdump::render::Printer;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
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
    /// Unacknowledged reports queued over all homes.
    pub queued: AtomicU64,
    /// Report-to-ack round trips.
    pub rtt: RttHist,
}

/// Buckets of the round-trip histogram: a quarter octave each, from 1 µs
/// up to about 2^28 µs (4.5 min).
const RTT_BUCKETS: usize = 112;

/// A histogram of ack round trips that many plugs add to without a lock:
/// counts in log-spaced buckets (a quantile is known within 19 %).
#[derive(Debug)]
pub struct RttHist(Box<[AtomicU64]>);

impl Default for RttHist {
    fn default() -> Self {
        RttHist((0..RTT_BUCKETS).map(|_| AtomicU64::new(0)).collect())
    }
}

impl RttHist {
    fn bucket(d: Duration) -> usize {
        let us = (d.as_secs_f64() * 1e6).max(1.0);
        ((us.log2() * 4.0) as usize).min(RTT_BUCKETS - 1)
    }

    /// Count one round trip.
    pub fn add(&self, d: Duration) {
        self.0[Self::bucket(d)].fetch_add(1, Ordering::Relaxed);
    }

    /// The counts now.
    pub fn counts(&self) -> Vec<u64> {
        self.0.iter().map(|c| c.load(Ordering::Relaxed)).collect()
    }

    /// The `q` quantile (0..1) of `counts` (or of the difference of two
    /// snapshots): the upper edge of the bucket it falls in.
    pub fn quantile(counts: &[u64], q: f64) -> Option<Duration> {
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64 * q).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(Duration::from_secs_f64(
                    2f64.powf((i + 1) as f64 / 4.0) / 1e6,
                ));
            }
        }
        None
    }
}

/// `3.4 ms`, `120 ms`, `1.2 s`.
fn short_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", ms / 1e3)
    }
}

/// `ack round trip p50 3.4 ms, p99 12 ms`, or nothing without acks.
fn rtt_text(counts: &[u64]) -> String {
    match (
        RttHist::quantile(counts, 0.5),
        RttHist::quantile(counts, 0.99),
    ) {
        (Some(p50), Some(p99)) => format!(
            ", ack round trip p50 {} p99 {}",
            short_duration(p50),
            short_duration(p99)
        ),
        _ => String::new(),
    }
}

impl FleetStats {
    /// A snapshot for a metrics scrape.
    fn snapshot(&self, plugs: u64, shard: Shard) -> FleetSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        FleetSnapshot {
            connected: g(&self.connected),
            connects: g(&self.connects),
            reconnects: g(&self.reconnects),
            reports_sent: g(&self.reports_sent),
            reports_acked: g(&self.reports_acked),
            commands: g(&self.commands),
            errors: g(&self.errors),
            queued: g(&self.queued),
            plugs,
            shard: (shard.k, shard.n),
        }
    }
}

impl FleetStats {
    fn json(&self) -> Value {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        json!({
            "connected": g(&self.connected), "connects": g(&self.connects), "reconnects": g(&self.reconnects),
            "reports_sent": g(&self.reports_sent), "reports_acked": g(&self.reports_acked),
            "commands": g(&self.commands), "errors": g(&self.errors),
            "ack_rtt_p50_ms": RttHist::quantile(&self.rtt.counts(), 0.5).map(|d| d.as_secs_f64() * 1e3),
            "ack_rtt_p99_ms": RttHist::quantile(&self.rtt.counts(), 0.99).map(|d| d.as_secs_f64() * 1e3),
        })
    }
}

/// A parsed `ws://host:port/path` (or `wss://`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsUrl {
    /// `wss://`: TLS.
    pub tls: bool,
    /// host:port to connect to.
    pub addr: String,
    /// Host header.
    pub host: String,
    /// Request target.
    pub path: String,
}

/// Parse a `ws://` or `wss://` URL.
pub fn parse_url(url: &str) -> Result<WsUrl, String> {
    let (tls, rest) = match (url.strip_prefix("ws://"), url.strip_prefix("wss://")) {
        (Some(r), _) => (false, r),
        (_, Some(r)) => (true, r),
        _ => return Err(format!("{url:?}: only ws:// and wss:// URLs are supported")),
    };
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
        format!("{hostport}:{}", if tls { 443 } else { 80 })
    };
    Ok(WsUrl {
        tls,
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

/// Settings shared by all plugs.
#[derive(Clone)]
pub struct Shared {
    /// Where to connect.
    pub url: WsUrl,
    /// Fragment messages larger than this.
    pub frame_size: Option<usize>,
    /// Firmware bugs to commit.
    pub quirks: Vec<Quirk>,
    /// What every home does.
    pub home: HomeConfig,
    /// Show the plug's traffic.
    pub dump: Option<Printer>,
    /// Counters.
    pub stats: Arc<FleetStats>,
    /// Offer permessage-deflate.
    pub deflate: bool,
    /// `wss://`: the TLS client and the name the server is asked for.
    pub tls: Option<(
        tokio_rustls::TlsConnector,
        rustls::pki_types::ServerName<'static>,
    )>,
}

/// Run `emulate-device`.
pub fn run(a: EmulateArgs) -> Result<u8, AppError> {
    let shared = shared(&a)?;
    let stats = shared.stats.clone();
    let shard = a.shard.unwrap_or(Shard { k: 0, n: 1 });
    // Shards must agree on the seed to form one fleet: a fixed one unless given.
    let seed = match (a.seed, a.shard) {
        (Some(s), _) => s,
        (None, Some(_)) => 0x4B4E_5EED,
        (None, None) => rand::random(),
    };
    let base = match &a.id {
        Some(id) => parse_id(id).ok_or_else(|| {
            AppError::Usage(format!(
                "--id {id:?} is not KN- followed by 12 upper-case hex digits"
            ))
        })?,
        None => StdRng::seed_from_u64(seed).gen::<u64>() & 0xFFFF_FFFF_FFFF,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| AppError::Io("tokio runtime".into(), e))?;
    let metrics = match &a.metrics_bind {
        Some(addr) => Some(
            std::net::TcpListener::bind(addr)
                .and_then(|l| l.set_nonblocking(true).map(|_| l))
                .map_err(|e| crate::shell::cannot_listen("--metrics-bind", addr, e))?,
        ),
        None => None,
    };
    rt.block_on(async {
        if let Some(l) = metrics {
            let l = tokio::net::TcpListener::from_std(l)
                .map_err(|e| AppError::Io("metrics listener".into(), e))?;
            if let Ok(at) = l.local_addr() {
                eprintln!("kinetid-wsdump: emulator metrics on http://{at}/metrics");
            }
            let plugs = a.count as u64;
            tokio::spawn(serve_metrics(l, stats.clone(), plugs, shard));
        }
        fleet(&a, shared, seed, base, shard).await;
        Ok::<_, AppError>(())
    })?;
    let summary = stats.json();
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let plural = |n: u64, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    eprintln!(
        "kinetid-wsdump: emulate-device: {} ({} reconnect{}), {} sent, {} acknowledged{}, {} obeyed, {}",
        plural(g(&stats.connects), "connection", "connections"),
        g(&stats.reconnects),
        if g(&stats.reconnects) == 1 { "" } else { "s" },
        plural(g(&stats.reports_sent), "report", "reports"),
        g(&stats.reports_acked),
        rtt_text(&stats.rtt.counts()),
        plural(g(&stats.commands), "switch", "switches"),
        plural(g(&stats.errors), "error", "errors"),
    );
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

/// Check the flags and build what every plug shares.
fn shared(a: &EmulateArgs) -> Result<Shared, AppError> {
    let url = parse_url(&a.url).map_err(AppError::Usage)?;
    if url.tls {
        crate::shell::tls::set_keylog(a.keylog.as_deref())?;
    }
    let tls = match url.tls {
        true => Some((
            crate::shell::tls::client(a.ca.as_deref(), a.insecure)?,
            crate::shell::tls::server_name(&url.host)?,
        )),
        false => None,
    };
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
    Ok(Shared {
        url,
        tls,
        frame_size: a.frame_size,
        quirks: a.quirks.clone(),
        home: HomeConfig {
            interval: a.interval,
            plc_latency: a.plc_latency,
            plc_loss: a.plc_loss,
            button_every: a.button_every,
            mains: a.mains,
            queue_max: a.queue.max(1),
            fw: if a.quirks.contains(&Quirk::Latin1) {
                // Something for the Latin-1 bug to show: a device name with an umlaut.
                concat!("emu-", env!("CARGO_PKG_VERSION"), " Küche").into()
            } else {
                concat!("emu-", env!("CARGO_PKG_VERSION")).into()
            },
        },
        dump: a.dump.then(|| printer(&a.output)),
        stats: Arc::new(FleetStats::default()),
        deflate: a.deflate,
    })
}

/// Home `i` of this shard: its fleet-wide index `g` gives its id (from the
/// base) and its random stream (from the seed, distinct from the stream the
/// base id came from), so shards with one seed never collide.
fn home(a: &EmulateArgs, sh: &Shared, seed: u64, base: u64, g: u64) -> Home {
    let mut rng = StdRng::seed_from_u64(
        seed.wrapping_add(g).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x4B4E_5EED,
    );
    let id = device_id(base.wrapping_add(g));
    let passives = (0..a.passive)
        .map(|k| {
            Plug::new(
                device_id(rng.gen::<u64>()),
                appliance_for(k),
                a.mains,
                rng.gen(),
            )
        })
        .collect();
    let active = Plug::new(id, a.appliance, a.mains, rng.gen());
    Home::new(
        sh.home.clone(),
        active,
        passives,
        rng,
        plug::next_boundary(a.interval),
    )
}

/// Run every home of the fleet until Ctrl-C or --duration.
async fn fleet(a: &EmulateArgs, shared: Shared, seed: u64, base: u64, shard: Shard) {
    // One copy for the fleet: each plug holds a pointer, not its own
    // strings and lists.
    let shared = Arc::new(shared);
    let count = a.count;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = Vec::with_capacity(count);
    let fleet_size = count as u64 * shard.n;
    for i in 0..count {
        let g = shard.k * count as u64 + i as u64;
        let home = home(a, &shared, seed, base, g);
        // Interleaved over the whole fleet: shard K's plugs take the slots
        // K, K+N, K+2N... of the ramp, so N shards started together never
        // connect in one burst.
        let slot = i as u64 * shard.n + shard.k;
        let delay = if fleet_size > 1 {
            a.ramp.mul_f64(slot as f64 / fleet_size as f64)
        } else {
            Duration::ZERO
        };
        let (sh, stop) = (shared.clone(), stop_rx.clone());
        // Offsets after the boundary by the golden ratio: evenly spread
        // whatever the count, and the same for the same plug every run.
        let offset = a.spread.mul_f64((g as f64 * 0.618_033_988_749_895).fract());
        // The plug's future is the task: a wrapper around it would keep a
        // second copy of everything it was given.
        tasks.push(tokio::spawn(plug::run(
            Box::new(home),
            sh,
            stop,
            i as u64 + 1,
            plug::Start { delay, offset },
        )));
    }
    let live_line = count > 1 && std::io::stderr().is_terminal();
    let status = Some(if live_line {
        tokio::spawn(status_line(shared.stats.clone(), count))
    } else {
        tokio::spawn(progress(shared.stats.clone(), count, a.url.clone()))
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
    if let Some(t) = status {
        t.abort();
        if live_line {
            // End the line the status was redrawn on.
            eprintln!();
        }
    }
}

/// Serve `/metrics` (read-only, no state) for Prometheus.
async fn serve_metrics(
    l: tokio::net::TcpListener,
    stats: Arc<FleetStats>,
    plugs: u64,
    shard: Shard,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            // A bounded read of the request head, then one answer.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            let read = async {
                while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(5), read)
                .await
                .is_err()
            {
                return;
            }
            let line = head.split(|&b| b == b'\r').next().unwrap_or(&[]);
            let (status, ctype, body) = if line.starts_with(b"GET /metrics ") {
                let text = fleet_text(&stats.snapshot(plugs, shard));
                ("200 OK", crate::shell::metrics::CONTENT_TYPE, text)
            } else {
                (
                    "404 Not Found",
                    "text/plain",
                    "only /metrics is served here\n".into(),
                )
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ =
                tokio::time::timeout(Duration::from_secs(5), s.write_all(resp.as_bytes())).await;
        });
    }
}

/// What the emulator says when stderr is no terminal (a log, CI) or it
/// runs one plug: when plugs come online or go, and every 5 s while a
/// fleet runs, online plugs, reports per second, reconnects and errors.
async fn progress(st: Arc<FleetStats>, count: usize, url: String) {
    let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
    let mut t = tokio::time::interval(Duration::from_secs(1));
    let mut last = (u64::MAX, 0u64, 0u64);
    let mut at = std::time::Instant::now();
    let mut ticks = 0u64;
    let mut rtt_before = st.rtt.counts();
    loop {
        t.tick().await;
        ticks += 1;
        let online = g(&st.connected);
        let (sent, acked) = (g(&st.reports_sent), g(&st.reports_acked));
        if count == 1 {
            if online != last.0 {
                if online == 1 {
                    eprintln!(
                        "kinetid-wsdump: connected to {url} ({} reconnects so far)",
                        g(&st.reconnects)
                    );
                } else if last.0 != u64::MAX {
                    eprintln!(
                        "kinetid-wsdump: disconnected from {url}; reconnecting with back-off"
                    );
                }
            }
            last.0 = online;
            continue;
        }
        if ticks % 5 != 0 && online == last.0 {
            continue;
        }
        if ticks % 5 == 0 || (online as usize == count && last.0 as usize != count) {
            let dt = at.elapsed().as_secs_f64().max(0.001);
            let rtt_now = st.rtt.counts();
            let window: Vec<u64> = rtt_now
                .iter()
                .zip(&rtt_before)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect();
            rtt_before = rtt_now;
            eprintln!(
                "kinetid-wsdump: {online}/{count} plugs online, reports {sent} sent {acked} acknowledged ({:.0}/s{}), {} switches, {} reconnects, {} errors",
                (acked.saturating_sub(last.2)) as f64 / dt,
                rtt_text(&window),
                g(&st.commands),
                g(&st.reconnects),
                g(&st.errors)
            );
            at = std::time::Instant::now();
            last = (online, sent, acked);
        }
    }
}

/// The live status line of a fleet on a terminal.
async fn status_line(st: Arc<FleetStats>, count: usize) {
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

#[cfg(test)]
mod rtt_tests {
    use super::*;

    #[test]
    fn round_trip_quantiles_are_within_a_bucket() {
        let h = RttHist::default();
        assert_eq!(RttHist::quantile(&h.counts(), 0.5), None);
        for ms in 1..=100u64 {
            h.add(Duration::from_millis(ms));
        }
        let c = h.counts();
        let p50 = RttHist::quantile(&c, 0.5).unwrap().as_secs_f64() * 1e3;
        let p99 = RttHist::quantile(&c, 0.99).unwrap().as_secs_f64() * 1e3;
        assert!((50.0..=50.0 * 1.19 + 1.0).contains(&p50), "{p50}");
        assert!((99.0..=99.0 * 1.19 + 1.0).contains(&p99), "{p99}");
        assert_eq!(short_duration(Duration::from_micros(3400)), "3.4 ms");
        assert_eq!(short_duration(Duration::from_millis(1200)), "1.2 s");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("ws://127.0.0.1:8080/ws").unwrap(),
            WsUrl {
                tls: false,
                addr: "127.0.0.1:8080".into(),
                host: "127.0.0.1:8080".into(),
                path: "/ws".into()
            }
        );
        assert_eq!(parse_url("ws://example").unwrap().addr, "example:80");
        let u = parse_url("wss://example/ws").unwrap();
        assert!(u.tls && u.addr == "example:443");
        assert_eq!(parse_url("ws://[::1]:9/x?y").unwrap().addr, "[::1]:9");
        assert!(parse_url("https://a/").is_err());
        assert!(parse_url("http://a/").is_err());
    }

    #[test]
    fn ids() {
        assert_eq!(device_id(0xA4CF12F0E1B2), "KN-A4CF12F0E1B2");
        assert_eq!(parse_id("KN-A4CF12F0E1B2"), Some(0xA4CF12F0E1B2));
        assert!(kinetid::is_device_id(&device_id(u64::MAX)));
    }
}
