//! Prometheus metrics for `listen` and `emulate-device`, in the text
//! exposition format (the `prometheus` crate's encoder), with names and
//! units after the Prometheus naming conventions: a `kinetid_wsdump_`
//! prefix, `_total` on counters, base units (`_seconds`, `_bytes`).
//!
//! Every label's values come from a bounded set (directions, opcode names,
//! note codes, HTTP statuses, close codes a Close frame may carry), so a
//! hostile peer cannot grow the series without bound.

use kinetid_wsdump::annotate::{Event, EventKind};
use kinetid_wsdump::wire::frame::CloseCode;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// The content type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

/// A histogram with these buckets, registered.
fn histogram(r: &Registry, name: &str, help: &str, buckets: &[f64]) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// Encode a registry.
pub fn encode(r: &Registry) -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&r.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

/// What the process holds now: tokio tasks alive, open descriptors and
/// resident memory (the last two under Prometheus's standard process
/// names). Appended to every command's metrics, so a leak shows on a
/// dashboard, and the leak tests read the same figures.
pub fn process_text() -> String {
    let r = Registry::new();
    let tasks = tokio::runtime::Handle::try_current()
        .map(|h| h.metrics().num_alive_tasks())
        .unwrap_or(0);
    gauge(
        &r,
        "kinetid_wsdump_tasks",
        "Tokio tasks alive in this process (connections, pages, timers)",
    )
    .set(tasks as i64);
    if let Ok(d) = std::fs::read_dir("/proc/self/fd") {
        gauge(&r, "process_open_fds", "Number of open file descriptors")
            .set(d.count().saturating_sub(1) as i64);
    }
    if let Some(kib) = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
    {
        gauge(
            &r,
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
        )
        .set(kib * 1024);
    }
    encode(&r)
}

/// The proxy's metrics: connections and bytes forwarded, then the
/// process's own figures.
pub fn proxy_text(connections: u64, open: u64, bytes_up: u64, bytes_down: u64) -> String {
    let r = Registry::new();
    let p = "kinetid_wsdump_proxy_";
    counter(
        &r,
        &format!("{p}connections_total"),
        "Device connections accepted",
    )
    .inc_by(connections);
    gauge(
        &r,
        &format!("{p}connections_open"),
        "Device connections open now",
    )
    .set(open as i64);
    counter(
        &r,
        &format!("{p}bytes_up_total"),
        "Bytes forwarded device to upstream",
    )
    .inc_by(bytes_up);
    counter(
        &r,
        &format!("{p}bytes_down_total"),
        "Bytes forwarded upstream to device",
    )
    .inc_by(bytes_down);
    let mut t = encode(&r);
    t.push_str(&process_text());
    t
}

/// A close code as a label: the code itself when a Close frame may carry
/// it, `none` for a Close without one, `invalid` otherwise.
fn close_label(c: Option<CloseCode>) -> String {
    match c {
        None => "none".into(),
        Some(c) if c.is_allowed() => c.0.to_string(),
        Some(_) => "invalid".into(),
    }
}

/// What `listen` measures.
pub struct ListenMetrics {
    registry: Registry,
    /// Connections open now.
    pub connections_open: IntGauge,
    /// Connections accepted.
    pub connections: IntCounter,
    /// Connections refused, by reason.
    pub refused: IntCounterVec,
    /// Answers to upgrade requests, by HTTP status.
    pub handshakes: IntCounterVec,
    frames: IntCounterVec,
    /// Bytes on the wire, device to server and server to device (the two
    /// series of one labelled family, resolved once: counted per read).
    bytes: [IntCounter; 2],
    notes: IntCounterVec,
    closes: IntCounterVec,
    /// Devices online (set at scrape time).
    pub devices_online: IntGauge,
    reports: IntCounter,
    acks: IntCounter,
    /// Switch commands from sending to the device's answer.
    pub switch_seconds: Histogram,
    /// Commands from the API or console asking to their frame written.
    pub command_seconds: Histogram,
    /// Commands written, by path: `[lane, queue]` (the control thread
    /// wrote the frame itself, or the connection's task did).
    pub commands_by_path: [IntCounter; 2],
    /// Output lines dropped because stdout did not keep up.
    pub output_dropped: IntCounter,
}

impl Default for ListenMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ListenMetrics {
    /// All metrics, zero.
    // A table: one registration per metric.
    pub fn new() -> ListenMetrics {
        let r = Registry::new();
        let p = "kinetid_wsdump_";
        let switch_seconds = histogram(
            &r,
            &format!("{p}switch_round_trip_seconds"),
            "Time from sending a switch command to the device's state or error",
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        );
        let command_seconds = histogram(
            &r,
            &format!("{p}command_delivery_seconds"),
            "Time from a command's request (API or console: switch, send, ping, close) to its frame written to the device's socket",
            &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0],
        );
        let by_path = counter_vec(
            &r,
            &format!("{p}commands_written_total"),
            "Commands from the API or console written to their device, by path: lane (written at once by the control thread) or queue (handed to the connection's task, as with TLS, permessage-deflate, or a socket busy writing)",
            &["path"],
        );
        ListenMetrics {
            commands_by_path: [
                by_path.with_label_values(&["lane"]),
                by_path.with_label_values(&["queue"]),
            ],
            connections_open: gauge(
                &r,
                &format!("{p}connections_open"),
                "TCP connections open now",
            ),
            connections: counter(
                &r,
                &format!("{p}connections_total"),
                "TCP connections accepted",
            ),
            refused: counter_vec(
                &r,
                &format!("{p}connections_refused_total"),
                "TCP connections refused, by reason",
                &["reason"],
            ),
            handshakes: counter_vec(
                &r,
                &format!("{p}handshakes_total"),
                "Answers to WebSocket upgrade requests, by HTTP status",
                &["status"],
            ),
            frames: counter_vec(
                &r,
                &format!("{p}frames_total"),
                "WebSocket frames, by direction and opcode",
                &["dir", "opcode"],
            ),
            bytes: {
                let v = counter_vec(
                    &r,
                    &format!("{p}wire_bytes_total"),
                    "Bytes on the wire, by direction",
                    &["dir"],
                );
                [v.with_label_values(&["c2s"]), v.with_label_values(&["s2c"])]
            },
            notes: counter_vec(
                &r,
                &format!("{p}notes_total"),
                "Notes raised, by code and severity",
                &["code", "severity"],
            ),
            closes: counter_vec(
                &r,
                &format!("{p}close_frames_total"),
                "Close frames, by direction and close code",
                &["dir", "code"],
            ),
            devices_online: gauge(
                &r,
                &format!("{p}devices_online"),
                "Devices in the registry that are online",
            ),
            reports: counter(
                &r,
                &format!("{p}reports_received_total"),
                "Kinetid reports received from devices",
            ),
            acks: counter(
                &r,
                &format!("{p}acks_sent_total"),
                "Kinetid acks sent to devices",
            ),
            switch_seconds,
            command_seconds,
            output_dropped: counter(
                &r,
                &format!("{p}output_lines_dropped_total"),
                "Annotation lines dropped because stdout did not keep up",
            ),
            registry: r,
        }
    }

    /// The wire-bytes counter for a direction.
    pub fn wire_bytes(&self, dir: kinetid_wsdump::wire::frame::Direction) -> &IntCounter {
        match dir {
            kinetid_wsdump::wire::frame::Direction::C2S => &self.bytes[0],
            kinetid_wsdump::wire::frame::Direction::S2C => &self.bytes[1],
        }
    }

    /// Count what an annotation event shows.
    pub fn observe(&self, e: &Event) {
        let dir = e.dir.as_str();
        match &e.kind {
            EventKind::Frame(f) => {
                self.frames
                    .with_label_values(&[dir, f.header.opcode.name()])
                    .inc();
                if f.header.opcode == kinetid_wsdump::wire::frame::OpCode::Close {
                    let code = close_label(f.close.as_ref().map(|(c, _)| *c));
                    self.closes.with_label_values(&[dir, &code]).inc();
                }
            }
            EventKind::Message(m) => match m.kinetid.as_ref().map(|k| &*k.t) {
                Some("report") if dir == "c2s" => self.reports.inc(),
                Some("ack") if dir == "s2c" => self.acks.inc(),
                _ => {}
            },
            _ => {}
        }
        for n in e.notes() {
            self.notes
                .with_label_values(&[n.code.as_str(), n.severity.as_str()])
                .inc();
        }
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

/// A snapshot of the emulator's counters, for one scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct FleetSnapshot {
    /// Plugs connected now.
    pub connected: u64,
    /// Successful handshakes.
    pub connects: u64,
    /// Handshakes after a lost connection.
    pub reconnects: u64,
    /// Reports sent (resends included).
    pub reports_sent: u64,
    /// Reports acknowledged.
    pub reports_acked: u64,
    /// Switch commands obeyed.
    pub commands: u64,
    /// Connection or handshake failures.
    pub errors: u64,
    /// Unacknowledged reports queued over all homes.
    pub queued: u64,
    /// Plugs in this process (active plugs).
    pub plugs: u64,
    /// This shard's index and the shard count.
    pub shard: (u64, u64),
}

/// The emulator's metrics from a snapshot.
pub fn fleet_text(s: &FleetSnapshot) -> String {
    let r = Registry::new();
    let p = "kinetid_wsdump_emulator_";
    let set = |name: &str, help: &str, v: u64| counter(&r, &format!("{p}{name}"), help).inc_by(v);
    set(
        "connects_total",
        "Successful WebSocket handshakes",
        s.connects,
    );
    set(
        "reconnects_total",
        "Handshakes after a lost connection",
        s.reconnects,
    );
    set(
        "reports_sent_total",
        "Reports sent, resends included",
        s.reports_sent,
    );
    set(
        "reports_acked_total",
        "Reports acknowledged by the backend",
        s.reports_acked,
    );
    set("commands_total", "Switch commands obeyed", s.commands);
    set("errors_total", "Connection or handshake failures", s.errors);
    let g = |name: &str, help: &str, v: u64| gauge(&r, &format!("{p}{name}"), help).set(v as i64);
    g("plugs_connected", "Plugs connected now", s.connected);
    g("plugs", "Active plugs this process emulates", s.plugs);
    g(
        "resend_queue_depth",
        "Unacknowledged reports waiting, over all homes",
        s.queued,
    );
    g(
        "shard_index",
        "This process's shard index (K of K/N)",
        s.shard.0,
    );
    g("shards", "Shards in the fleet (N of K/N)", s.shard.1);
    let mut t = encode(&r);
    t.push_str(&process_text());
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        let m = ListenMetrics::new();
        m.connections.inc();
        m.refused.with_label_values(&["connection_limit"]).inc();
        let t = m.encode();
        assert!(
            t.contains("# TYPE kinetid_wsdump_connections_total counter"),
            "{t}"
        );
        assert!(
            t.contains("kinetid_wsdump_connections_refused_total{reason=\"connection_limit\"} 1")
        );
        for line in t.lines().filter(|l| l.starts_with("# TYPE")) {
            let f: Vec<&str> = line.split(' ').collect();
            if f[3] == "counter" {
                assert!(f[2].ends_with("_total"), "{line}");
            }
        }
        let f = fleet_text(&FleetSnapshot {
            reports_sent: 7,
            shard: (2, 4),
            ..Default::default()
        });
        assert!(
            f.contains("kinetid_wsdump_emulator_reports_sent_total 7"),
            "{f}"
        );
        assert!(f.contains("kinetid_wsdump_emulator_shards 4"));
    }

    #[test]
    fn close_codes_are_a_bounded_label() {
        assert_eq!(close_label(Some(CloseCode(1000))), "1000");
        assert_eq!(close_label(Some(CloseCode(4001))), "4001");
        assert_eq!(close_label(Some(CloseCode(65535))), "invalid");
        assert_eq!(close_label(None), "none");
    }
}
