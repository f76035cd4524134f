//! State shared by every connection of a listener: the device registry, the
//! commands waiting for a device's answer, the counters and the sinks.
//!
//! The registry is keyed by device id, and only ids that follow the contract
//! (`KN-` and 12 upper-case hex digits) ever become keys. It is bounded: when
//! it is full the device offline the longest makes room, and when every
//! device is online a new one is not registered (a note says so).

use super::lane::{Lane, Offer};
use super::Settings;
use crate::shell::control::{Commands, LISTEN_IDS};
use crate::shell::metrics::ListenMetrics;
use crate::shell::sinks::{LineSink, Recorder};
use crate::shell::tap::{Count, Outputs};
use kinetid_wsdump::annotate::{Event, EventKind};
use kinetid_wsdump::capture::replay::Stats;
pub use kinetid_wsdump::engine::devices::{Claim, Device, DeviceTable};
use kinetid_wsdump::engine::quirk::server_frame;
use kinetid_wsdump::kinetid;
use kinetid_wsdump::kinetid::msg::Report;
use kinetid_wsdump::wire::frame::{Direction, OpCode};
use serde_json::Value;
use std::collections::HashMap;
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
    /// Observe what the command lane wrote (and write its tail).
    CatchUp,
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

/// How commands reach a connection: its queue, and for a plain one the
/// lane the control thread writes a frame through itself.
#[derive(Debug, Clone)]
pub struct Door {
    /// The connection task's queue.
    pub tx: CmdTx,
    /// Its command lane, when it has one.
    pub lane: Option<Arc<Lane>>,
}

/// A command and, for those who wait, where to say whether it went out.
#[derive(Debug)]
pub struct Cmd {
    /// The command.
    pub kind: ConnCmd,
    /// Told `Ok` once the frame is written, or why it was not.
    pub done: Option<oneshot::Sender<Result<(), String>>>,
    /// When the API or the console asked for it (the start of the
    /// delivery time); `None` for the listener's own.
    pub asked: Option<std::time::Instant>,
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
    pub(super) devices: Mutex<DeviceTable>,
    pub(super) conns: Mutex<HashMap<u64, Door>>,
    /// Commands waiting for a device's answer.
    pub(super) commands: Commands,
    pub(super) next_conn: AtomicU64,
    /// Counters.
    pub counters: Counters,
    /// Where every connection's events go.
    pub outs: Arc<Outputs>,
    /// Notices for people (stderr), never blocking.
    pub err: LineSink,
    /// Payload and buffer bytes held by all connections together.
    pub buffered: AtomicUsize,
    /// Prometheus metrics (`/metrics`).
    pub metrics: ListenMetrics,
    /// When the listener started (Unix seconds): a page tells a restarted
    /// listener by it.
    pub started: f64,
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
        let outs = Arc::new(Outputs {
            printer: s.printer.clone(),
            out,
            record,
            bus: crate::shell::inspect::Bus::new(s.history, crate::shell::inspect::HISTORY_BYTES),
            across: Some(Mutex::new(kinetid_wsdump::annotate::across::Across::new())),
            filter: s.filter.clone(),
            show_http: s.show_http,
        });
        Hub {
            outs,
            started: crate::shell::now(),
            devices: Mutex::new(DeviceTable::new(s.max_devices)),
            s,
            conns: Mutex::new(HashMap::new()),
            commands: Commands::new(LISTEN_IDS),
            next_conn: AtomicU64::new(0),
            counters: Counters::default(),
            err,
            buffered: AtomicUsize::new(0),
            metrics: ListenMetrics::new(),
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
        let online = self.devices.lock().expect("devices").online();
        self.metrics.devices_online.set(online as i64);
        let dropped = self.outs.out.as_ref().map_or(0, LineSink::dropped_lines);
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
        self.devices.lock().expect("devices").json()
    }

    /// One device as JSON, with its recent readings (`history`: `[time,
    /// power_w, energy_wh]`, oldest first).
    pub fn device_json(&self, id: &str) -> Option<Value> {
        let d = self.devices.lock().expect("devices");
        d.get(id).map(Device::json_with_history)
    }

    /// A snapshot of the device table, sorted by id.
    pub fn devices(&self) -> Vec<Device> {
        let d = self.devices.lock().expect("devices");
        d.rows().into_iter().cloned().collect()
    }

    fn conn_of(&self, id: &str) -> Option<(u64, Door)> {
        let conn = self.devices.lock().expect("devices").online_conn(id)?;
        self.conns
            .lock()
            .expect("conns")
            .get(&conn)
            .map(|d| (conn, d.clone()))
    }

    /// A text or ping command through the connection's lane, when it has
    /// one and the lane takes it: true when it is on the wire (or its
    /// tail left to the task, which is nudged), its delivery time counted.
    fn through_lane(&self, door: &Door, kind: &ConnCmd, asked: std::time::Instant) -> bool {
        let Some(lane) = &door.lane else {
            return false;
        };
        let mut frame = Vec::new();
        match kind {
            ConnCmd::Text(t) => server_frame(&mut frame, OpCode::Text, t.as_bytes()),
            ConnCmd::Ping(p) => server_frame(&mut frame, OpCode::Ping, p),
            _ => return false,
        }
        if lane.offer(frame) == Offer::Declined {
            return false;
        }
        self.metrics
            .command_seconds
            .observe(asked.elapsed().as_secs_f64());
        self.metrics.commands_by_path[0].inc();
        // The task annotates what the lane wrote (and writes a tail) when
        // it next runs; this tells it to run. A full queue has commands
        // that will.
        let _ = door.tx.try_send(Box::new(Cmd {
            kind: ConnCmd::CatchUp,
            done: None,
            asked: None,
        }));
        true
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
        let asked = std::time::Instant::now();
        let Some((conn, door)) = self.conn_of(id) else {
            return Err(SwitchError::NotFound(format!("no connected device {id}")));
        };
        let (cmd, rrx) = self.commands.start(conn);
        let kind = ConnCmd::Text(kinetid::switch(cmd, id, on));
        if !self.through_lane(&door, &kind, asked) {
            let c = Cmd {
                kind,
                done: None,
                asked: Some(asked),
            };
            if let Err(e) = Self::queue(&door.tx, id, c) {
                self.commands.forget(conn, cmd);
                return Err(e);
            }
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
                self.commands.forget(conn, cmd);
                Err(SwitchError::Timeout)
            }
        }
    }

    /// Send a raw command to the connection carrying a device and wait (at
    /// most a few seconds) until it is written or refused.
    pub async fn command(&self, id: &str, c: ConnCmd) -> Result<(), CommandError> {
        let asked = std::time::Instant::now();
        let id_s = || id.to_string();
        let (_, door) = self
            .conn_of(id)
            .ok_or_else(|| CommandError::NotConnected(id_s()))?;
        if self.through_lane(&door, &c, asked) {
            return Ok(());
        }
        let (dtx, drx) = oneshot::channel();
        let cmd = Cmd {
            kind: c,
            done: Some(dtx),
            asked: Some(asked),
        };
        door.tx.try_send(Box::new(cmd)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => CommandError::Busy(id_s()),
            mpsc::error::TrySendError::Closed(_) => CommandError::Disconnected(id_s()),
        })?;
        match tokio::time::timeout(std::time::Duration::from_secs(5), drx).await {
            Ok(Ok(r)) => r.map_err(CommandError::Refused),
            Ok(Err(_)) => Err(CommandError::Disconnected(id_s())),
            Err(_) => Err(CommandError::Timeout(id_s())),
        }
    }

    /// Register `id` as carried by connection `conn` (see
    /// [`DeviceTable::claim`]).
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
        let mut d = self.devices.lock().expect("devices");
        d.claim(id, role, via, conn, peer, t, take_over)
    }

    /// A report for a device this connection carries.
    pub fn reading(&self, conn: u64, r: &Report, t: f64) {
        self.devices.lock().expect("devices").reading(conn, r, t);
    }

    /// A relay state for a device this connection carries.
    pub fn relay(&self, conn: u64, dev: &str, on: bool, t: f64) {
        self.devices
            .lock()
            .expect("devices")
            .relay(conn, dev, on, t);
    }

    /// A device's answer to command `re` sent on connection `conn`.
    pub fn answer(&self, conn: u64, re: u64, result: Result<Value, Value>) {
        self.commands.answer(conn, re, result);
    }

    /// A connection ended: its devices go offline, its pending commands fail.
    pub fn forget_conn(&self, conn: u64) {
        self.conns.lock().expect("conns").remove(&conn);
        self.devices.lock().expect("devices").depart(conn);
        self.commands.forget_conn(conn);
    }

    /// Tell a connection that a newer one took its device id over.
    pub fn replace(&self, old: u64, dev: &str, by: u64, peer: &str) {
        if let Some(d) = self.conns.lock().expect("conns").get(&old) {
            let _ = d.tx.try_send(Box::new(Cmd {
                kind: ConnCmd::Replaced {
                    dev: dev.to_string(),
                    by,
                    peer: peer.to_string(),
                },
                done: None,
                asked: None,
            }));
        }
    }
}

impl Count for Hub {
    /// Metrics and the exit summary's counters.
    fn event(&self, e: &Event) {
        self.metrics.observe(e);
        let mut one = Stats::default();
        one.add(e);
        let c = &self.counters;
        c.errors.fetch_add(one.errors, Ordering::Relaxed);
        c.warnings.fetch_add(one.warnings, Ordering::Relaxed);
        c.refused.fetch_add(one.refused, Ordering::Relaxed);
        let n = match (&e.kind, e.dir) {
            (EventKind::Frame(_), Direction::C2S) => &c.frames_in,
            (EventKind::Frame(_), Direction::S2C) => &c.frames_out,
            (EventKind::Message(_), Direction::C2S) => &c.messages_in,
            _ => return,
        };
        n.fetch_add(1, Ordering::Relaxed);
    }
}
