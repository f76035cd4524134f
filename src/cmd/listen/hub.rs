//! State shared by every connection of a listener: the device registry, the
//! commands waiting for a device's answer, the counters and the sinks.
//!
//! The registry is keyed by device id, and only ids that follow the contract
//! (`KN-` and 12 upper-case hex digits) ever become keys. It is bounded: when
//! it is full the device offline the longest makes room, and when every
//! device is online a new one is not registered (a note says so).

use super::Settings;
use crate::shell::metrics::ListenMetrics;
use crate::shell::sinks::{LineSink, Recorder};
use kinetid_wsdump::kinetid;
use kinetid_wsdump::kinetid::msg::Report;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// What a connection task can be told to do.
#[derive(Debug)]
pub enum ConnCmd {
    /// Send a text message.
    Text(String),
    /// Send a ping.
    Ping(Vec<u8>),
    /// Close with a code and reason.
    Close(u16, String),
    /// A newer connection said hello with this connection's device id.
    Replaced {
        /// The device id.
        dev: String,
        /// The newer connection.
        by: u64,
        /// Its peer.
        peer: String,
    },
}

/// A connection's command queue. Commands travel boxed: the queue's
/// blocks hold one pointer a slot, not a whole command, which keeps an idle
/// connection small.
pub type CmdTx = mpsc::Sender<Box<Cmd>>;

/// A command and, for those who wait, where to say whether it went out.
#[derive(Debug)]
pub struct Cmd {
    /// The command.
    pub kind: ConnCmd,
    /// Told `Ok` once the frame is written, or why it was not.
    pub done: Option<oneshot::Sender<Result<(), String>>>,
}

/// Where a device's answer to a command goes: its `state` or its `error`.
pub type Reply = oneshot::Sender<Result<Value, Value>>;

/// One row of the device table.
#[derive(Debug, Clone)]
pub struct Device {
    /// Device id (always a valid `KN-` id).
    pub id: String,
    /// `active`, `passive` or `unknown` (what the device said, if one of those).
    pub role: &'static str,
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
    pub(super) recent_seqs: VecDeque<u64>,
    /// Recent readings for the inspector's chart: (time, power_w,
    /// energy_wh), the last hour, at most [`HISTORY_POINTS`].
    pub(super) history: VecDeque<(f64, f64, f64)>,
}

/// Readings kept per device: an hour at the contract's one-minute period.
pub const HISTORY_POINTS: usize = 64;

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
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// No such device, or it is offline.
    #[error("{0}")]
    NotFound(String),
    /// The device's connection has too many commands queued.
    #[error("{0}")]
    Busy(String),
    /// The device answered `error`.
    #[error("device answered error {0}")]
    Device(Value),
    /// No answer in time.
    #[error("no answer in time")]
    Timeout,
}

/// Why a raw command (console `send`, `ping`, `close`) was not sent.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// No such device online.
    #[error("no connected device {0}")]
    NotConnected(String),
    /// Its connection has too many commands queued.
    #[error("device {0} has too many commands waiting (it is not reading); try again later")]
    Busy(String),
    /// Its connection ended before taking the command.
    #[error("device {0} disconnected")]
    Disconnected(String),
    /// Its connection did not take the command in time.
    #[error("device {0} did not take the command within 5 s")]
    Timeout(String),
    /// The connection refused it (closing, or the write failed).
    #[error("{0}")]
    Refused(String),
}

/// What registering a device id did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Registered (new, or back on the connection it was on).
    Ok,
    /// The id was online on another connection, which this one replaces.
    Replaced {
        /// The older connection.
        conn: u64,
        /// Its peer.
        peer: String,
    },
    /// The id was online on another connection, which keeps it.
    Kept {
        /// The connection that keeps it.
        conn: u64,
    },
    /// Not a valid device id: not registered.
    Invalid,
    /// The registry is full of online devices: not registered.
    Full,
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
    /// Requests for the tool's own page, API and metrics (not shown, not
    /// among the connections; `--show-http` shows them as connections).
    pub web: AtomicU64,
}

/// State shared by every connection.
pub struct Hub {
    /// Settings.
    pub s: Settings,
    pub(super) devices: Mutex<HashMap<String, Device>>,
    pub(super) conns: Mutex<HashMap<u64, CmdTx>>,
    pub(super) pending: Mutex<HashMap<(u64, u64), Reply>>,
    pub(super) next_conn: AtomicU64,
    next_cmd: AtomicU64,
    /// Counters.
    pub counters: Counters,
    /// Annotated output (None with --quiet).
    pub out: Option<LineSink>,
    /// Notices for people (stderr), never blocking.
    pub err: LineSink,
    /// The recording.
    pub record: Option<Arc<Recorder>>,
    /// Payload and buffer bytes held by all connections together.
    pub buffered: AtomicUsize,
    /// Prometheus metrics (`/metrics`).
    pub metrics: ListenMetrics,
    /// Events for the browser inspector.
    pub bus: crate::shell::inspect::Bus,
    /// When the listener started (Unix seconds): a page tells a restarted
    /// listener by it.
    pub started: f64,
    /// What devices do from one connection to the next (see
    /// `kinetid_wsdump::annotate::across`).
    pub across: Mutex<kinetid_wsdump::annotate::across::Across>,
    dropped_seen: AtomicU64,
}

impl Hub {
    /// A hub with empty tables.
    pub fn new(
        s: Settings,
        out: Option<LineSink>,
        err: LineSink,
        record: Option<Arc<Recorder>>,
    ) -> Hub {
        let bus = crate::shell::inspect::Bus::new(s.history, crate::shell::inspect::HISTORY_BYTES);
        Hub {
            bus,
            started: crate::shell::now(),
            s,
            devices: Mutex::new(HashMap::new()),
            conns: Mutex::new(HashMap::new()),
            pending: Mutex::new(HashMap::new()),
            next_conn: AtomicU64::new(0),
            next_cmd: AtomicU64::new(0),
            counters: Counters::default(),
            out,
            err,
            record,
            buffered: AtomicUsize::new(0),
            metrics: ListenMetrics::new(),
            across: Mutex::new(kinetid_wsdump::annotate::across::Across::new()),
            dropped_seen: AtomicU64::new(0),
        }
    }

    /// A line for people on stderr (never blocks; dropped if stderr is stalled).
    pub fn notice(&self, line: impl Into<String>) {
        let mut l = line.into();
        l.push('\n');
        self.err.push(l.into_bytes());
    }

    /// The metrics text, with the values only known at scrape time.
    pub fn metrics_text(&self) -> String {
        let online = self
            .devices
            .lock()
            .expect("devices")
            .values()
            .filter(|d| d.online)
            .count();
        self.metrics.devices_online.set(online as i64);
        let dropped = self.out.as_ref().map_or(0, LineSink::dropped_lines);
        let seen = self.dropped_seen.swap(dropped, Ordering::Relaxed);
        self.metrics
            .output_dropped
            .inc_by(dropped.saturating_sub(seen));
        let mut t = self.metrics.encode();
        t.push_str(&crate::shell::metrics::process_text());
        t
    }

    /// All devices as JSON.
    pub fn devices_json(&self) -> Value {
        let d = self.devices.lock().expect("devices");
        let mut v: Vec<&Device> = d.values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        Value::Array(v.into_iter().map(Device::json).collect())
    }

    /// One device as JSON, with its recent readings (`history`: `[time,
    /// power_w, energy_wh]`, oldest first).
    pub fn device_json(&self, id: &str) -> Option<Value> {
        let d = self.devices.lock().expect("devices");
        let dev = d.get(id)?;
        let mut v = dev.json();
        v["history"] = dev
            .history
            .iter()
            .map(|&(t, p, e)| json!([t, p, if e.is_nan() { None } else { Some(e) }]))
            .collect();
        Some(v)
    }

    /// A snapshot of the device table, sorted by id.
    pub fn devices(&self) -> Vec<Device> {
        let d = self.devices.lock().expect("devices");
        let mut v: Vec<Device> = d.values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn conn_of(&self, id: &str) -> Option<(u64, CmdTx)> {
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

    /// Queue a command for a connection without waiting: a connection whose
    /// queue is full (a device that stopped reading) makes the caller fail
    /// fast instead of hanging.
    fn queue(tx: &CmdTx, id: &str, cmd: Cmd) -> Result<(), SwitchError> {
        tx.try_send(Box::new(cmd)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SwitchError::Busy(format!(
                "device {id} has too many commands waiting (it is not reading); try again later"
            )),
            mpsc::error::TrySendError::Closed(_) => {
                SwitchError::NotFound(format!("device {id} disconnected"))
            }
        })
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
        let text = kinetid::switch(cmd, id, on);
        if let Err(e) = Self::queue(
            &tx,
            id,
            Cmd {
                kind: ConnCmd::Text(text),
                done: None,
            },
        ) {
            self.pending.lock().expect("pending").remove(&(conn, cmd));
            return Err(e);
        }
        let sent = std::time::Instant::now();
        match tokio::time::timeout(self.s.reply_timeout, rrx).await {
            Ok(Ok(Ok(state))) => {
                self.metrics
                    .switch_seconds
                    .observe(sent.elapsed().as_secs_f64());
                Ok(state)
            }
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

    /// Send a raw command to the connection carrying a device and wait (at
    /// most a few seconds) until it is written or refused.
    pub async fn command(&self, id: &str, c: ConnCmd) -> Result<(), CommandError> {
        let id_s = || id.to_string();
        let (_, tx) = self
            .conn_of(id)
            .ok_or_else(|| CommandError::NotConnected(id_s()))?;
        let (dtx, drx) = oneshot::channel();
        let cmd = Cmd {
            kind: c,
            done: Some(dtx),
        };
        tx.try_send(Box::new(cmd)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CommandError::Busy(id_s()),
            mpsc::error::TrySendError::Closed(_) => CommandError::Disconnected(id_s()),
        })?;
        match tokio::time::timeout(std::time::Duration::from_secs(5), drx).await {
            Ok(Ok(r)) => r.map_err(CommandError::Refused),
            Ok(Err(_)) => Err(CommandError::Disconnected(id_s())),
            Err(_) => Err(CommandError::Timeout(id_s())),
        }
    }

    /// Register `id` as carried by connection `conn`. `take_over` says
    /// whether a claim on an id online elsewhere wins (a `hello`: the newer
    /// connection wins, as after a reboot) or loses (a relayed report).
    #[allow(clippy::too_many_arguments)]
    pub fn learn(
        &self,
        id: &str,
        role: &'static str,
        via: Option<&str>,
        conn: u64,
        peer: &str,
        t: f64,
        take_over: bool,
    ) -> Claim {
        if !kinetid::is_device_id(id) || via.is_some_and(|v| !kinetid::is_device_id(v)) {
            return Claim::Invalid;
        }
        let mut d = self.devices.lock().expect("devices");
        let mut claim = Claim::Ok;
        match d.get(id) {
            Some(e) if e.online && e.conn != conn => {
                if !take_over {
                    return Claim::Kept { conn: e.conn };
                }
                claim = Claim::Replaced {
                    conn: e.conn,
                    peer: e.peer.clone(),
                };
            }
            Some(_) => {}
            None if d.len() >= self.s.max_devices => {
                // Make room: forget the device offline the longest.
                let oldest = d
                    .values()
                    .filter(|e| !e.online)
                    .min_by(|a, b| a.last_seen.total_cmp(&b.last_seen))
                    .map(|e| e.id.clone());
                match oldest {
                    Some(o) => {
                        d.remove(&o);
                    }
                    None => return Claim::Full,
                }
            }
            None => {}
        }
        let e = d.entry(id.to_string()).or_insert_with(|| Device {
            id: id.to_string(),
            role,
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
            history: VecDeque::new(),
        });
        if e.conn != conn || !e.online {
            e.since = t;
        }
        e.role = role;
        e.via = via.map(str::to_string);
        e.conn = conn;
        e.peer = peer.to_string();
        e.online = true;
        e.last_seen = t;
        claim
    }

    /// A report for a device this connection carries: its row is updated,
    /// a (dev, seq) seen recently is counted as a duplicate.
    pub fn reading(&self, conn: u64, r: &Report, t: f64) {
        let Some(dev) = r.dev.as_deref() else { return };
        let mut d = self.devices.lock().expect("devices");
        let Some(e) = d.get_mut(dev).filter(|e| e.conn == conn) else {
            return;
        };
        e.last_seen = t;
        if r.seq.is_some_and(|s| e.recent_seqs.contains(&s)) {
            e.duplicates += 1;
            return;
        }
        if let Some(s) = r.seq {
            e.recent_seqs.push_back(s);
            if e.recent_seqs.len() > 1024 {
                e.recent_seqs.pop_front();
            }
            e.seq = Some(s);
        }
        e.reports += 1;
        e.on = r.on.or(e.on);
        e.power_w = r.power_w;
        e.energy_wh = r.energy_wh;
        if let Some(p) = r.power_w {
            // Reception time: a plug's clock may be wrong.
            let at = t;
            e.history
                .push_back((at, p, r.energy_wh.unwrap_or(f64::NAN)));
            while e.history.len() > HISTORY_POINTS
                || e.history.front().is_some_and(|h| h.0 < at - 3600.0)
            {
                e.history.pop_front();
            }
        }
    }

    /// A relay state for a device this connection carries.
    pub fn relay(&self, conn: u64, dev: &str, on: bool, t: f64) {
        let mut d = self.devices.lock().expect("devices");
        if let Some(e) = d.get_mut(dev).filter(|e| e.conn == conn) {
            e.on = Some(on);
            e.last_seen = t;
        }
    }

    /// A device's answer to command `re` sent on connection `conn`.
    pub fn answer(&self, conn: u64, re: u64, result: Result<Value, Value>) {
        let tx = self.pending.lock().expect("pending").remove(&(conn, re));
        if let Some(tx) = tx {
            let _ = tx.send(result);
        }
    }

    /// A connection ended: its devices go offline, its pending commands fail.
    pub fn forget_conn(&self, conn: u64) {
        self.conns.lock().expect("conns").remove(&conn);
        for dev in self.devices.lock().expect("devices").values_mut() {
            if dev.conn == conn {
                dev.online = false;
            }
        }
        self.pending
            .lock()
            .expect("pending")
            .retain(|(c, _), _| *c != conn);
    }

    /// Tell a connection that a newer one took its device id over.
    pub fn replace(&self, old: u64, dev: &str, by: u64, peer: &str) {
        if let Some(tx) = self.conns.lock().expect("conns").get(&old) {
            let _ = tx.try_send(Box::new(Cmd {
                kind: ConnCmd::Replaced {
                    dev: dev.to_string(),
                    by,
                    peer: peer.to_string(),
                },
                done: None,
            }));
        }
    }
}
