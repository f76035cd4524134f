//! A Kinetid home (one active plug and its passive plugs), without I/O.
//!
//! [`Home`] keeps what survives reconnects (meters, relay states, `seq`,
//! the queue of unacknowledged reports) and plays the device side of the
//! contract: `hello` on connect, a report per plug on every period boundary,
//! the queue sent again after `welcome` with original `seq` and `ts`,
//! `switch` obeyed and answered with `state` (for a passive plug after the
//! power-line latency, or `error unreachable` when the exchange is lost),
//! `error not_found` for an id it does not know, and button presses. The
//! driver feeds it messages and the clock and sends what comes out.

use crate::annotate::MessageEvent;
use crate::kinetid::meter::{Appliance, Mains, Meter};
use crate::kinetid::msg::{Hello, Msg, Report, State};
use rand::rngs::StdRng;
use rand::Rng;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// How a home behaves.
#[derive(Debug, Clone)]
pub struct HomeConfig {
    /// Report period.
    pub interval: Duration,
    /// Power-line latency for a passive plug's switch.
    pub plc_latency: Duration,
    /// Fraction of power-line exchanges lost.
    pub plc_loss: f64,
    /// Press the active plug's button this often.
    pub button_every: Option<Duration>,
    /// The grid.
    pub mains: Mains,
    /// Unacknowledged reports kept, at most.
    pub queue_max: usize,
    /// Firmware version sent in `hello`.
    pub fw: String,
}

/// What the driver must do or count.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    /// Send this message (a request already carries its `id`).
    Send(Box<Msg>),
    /// A report was sent (for the counters).
    ReportSent,
    /// A report was acknowledged, this long after it was sent on this
    /// connection (the ack's round trip).
    ReportAcked(Duration),
    /// A switch was obeyed.
    Command,
}

fn send(m: Msg) -> Out {
    Out::Send(Box::new(m))
}

/// One metered plug (active or passive).
#[derive(Debug)]
pub struct Plug {
    /// Its id.
    pub id: String,
    meter: Meter,
    /// Relay on?
    pub on: bool,
    seq: u64,
    last_read: Option<f64>,
}

impl Plug {
    /// A plug with its relay on.
    pub fn new(id: String, appliance: Appliance, mains: Mains, seed: u64) -> Plug {
        Plug {
            id,
            meter: Meter::new(appliance, mains, seed),
            on: true,
            seq: 0,
            last_read: None,
        }
    }

    fn report(&mut self, ts: u64, unix: f64, via: Option<&str>) -> Report {
        let dt = self.last_read.map_or(0.0, |t| (unix - t).max(0.0));
        self.last_read = Some(unix);
        let r = self.meter.read(dt, self.on);
        self.seq += 1;
        Report {
            id: None,
            dev: Some(self.id.clone()),
            via: via.map(str::to_string),
            link: via.map(|_| "plc".to_string()),
            ts: Some(ts),
            seq: Some(self.seq),
            on: Some(self.on),
            power_w: Some(r.power_w),
            voltage_v: Some(r.voltage_v),
            current_a: Some(r.current_a),
            pf: Some(r.pf),
            freq_hz: Some(r.freq_hz),
            energy_wh: Some(r.energy_wh),
        }
    }
}

/// A switch for a passive plug, waiting out the power-line latency.
#[derive(Debug, Clone)]
struct PlcJob {
    due: Instant,
    re: u64,
    plug: usize,
    on: Option<bool>,
}

/// One home: what it keeps across reconnects and the current link's state.
#[derive(Debug)]
pub struct Home {
    cfg: HomeConfig,
    /// The active plug.
    pub active: Plug,
    /// The passive plugs behind it.
    pub passives: Vec<Plug>,
    queue: VecDeque<Report>,
    rng: StdRng,
    next_report: Instant,
    // The current connection.
    connected: bool,
    welcomed: bool,
    next_id: u64,
    inflight: VecDeque<(u64, String, u64, Instant)>,
    plc: Vec<PlcJob>,
    next_button: Option<Instant>,
}

impl Home {
    /// A home whose first report falls due at `first_report` (the driver
    /// aligns it to the period boundary of the wall clock).
    pub fn new(
        cfg: HomeConfig,
        active: Plug,
        passives: Vec<Plug>,
        rng: StdRng,
        first_report: Instant,
    ) -> Home {
        Home {
            cfg,
            active,
            passives,
            queue: VecDeque::new(),
            rng,
            next_report: first_report,
            connected: false,
            welcomed: false,
            next_id: 1,
            inflight: VecDeque::new(),
            plc: Vec::new(),
            next_button: None,
        }
    }

    /// Reports fall due from `at` on (the driver sets it when the home
    /// starts, after any ramp delay, so a late start is no burst of readings).
    pub fn set_next_report(&mut self, at: Instant) {
        self.next_report = at;
    }

    /// Unacknowledged reports waiting.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Has the backend welcomed the current connection?
    pub fn welcomed(&self) -> bool {
        self.welcomed
    }

    /// A draw from the home's random stream (the driver's back-off jitter).
    pub fn jitter(&mut self) -> f64 {
        self.rng.gen_range(0.0..0.5)
    }

    fn request(&mut self, mut m: Msg) -> Msg {
        let id = self.next_id;
        self.next_id += 1;
        match &mut m {
            Msg::Hello(h) => h.id = Some(id),
            Msg::Report(r) => r.id = Some(id),
            Msg::State(s) => s.id = Some(id),
            _ => {}
        }
        m
    }

    fn send_report(&mut self, r: Report, now: Instant, out: &mut Vec<Out>) {
        let Msg::Report(r) = self.request(Msg::Report(r)) else {
            return;
        };
        self.inflight.push_back((
            r.id.unwrap_or(0),
            r.dev.clone().unwrap_or_default(),
            r.seq.unwrap_or(0),
            now,
        ));
        if self.inflight.len() > 4096 {
            self.inflight.pop_front();
        }
        out.push(send(Msg::Report(r)));
        out.push(Out::ReportSent);
    }

    /// A new connection is up: say `hello`.
    pub fn on_connected(&mut self, now: Instant) -> Vec<Out> {
        self.connected = true;
        self.welcomed = false;
        self.next_id = 1;
        self.inflight.clear();
        self.plc.clear();
        self.next_button = self.cfg.button_every.map(|d| now + d);
        let hello = Msg::Hello(Hello {
            id: None,
            dev: Some(self.active.id.clone()),
            fw: Some(self.cfg.fw.clone()),
            role: Some("active".into()),
            mains_v: Some(self.cfg.mains.volts()),
            mains_hz: Some(self.cfg.mains.hertz()),
            period_s: Some(self.cfg.interval.as_secs_f64().round().max(1.0) as u64),
            passives: Some(self.passives.iter().map(|p| p.id.clone()).collect()),
        });
        vec![send(self.request(hello))]
    }

    /// A new connection attempt: no welcome yet (one that fails before its
    /// upgrade must not reset the back-off).
    pub fn on_attempt(&mut self) {
        self.welcomed = false;
    }

    /// Forget the reports not yet acknowledged (the `forget-unacked` bug).
    pub fn forget_unacked(&mut self) {
        self.queue.clear();
    }

    /// Does the queue hold a report this connection has not carried yet
    /// (one the welcome will send again)?
    fn resend_waiting(&self) -> bool {
        self.queue.iter().any(|r| {
            !self
                .inflight
                .iter()
                .any(|(_, d, q, _)| r.dev.as_deref() == Some(d.as_str()) && r.seq == Some(*q))
        })
    }

    /// The connection is gone; what is due meanwhile is queued by `on_tick`.
    pub fn on_disconnected(&mut self) {
        self.connected = false;
    }

    /// Read every plug, queue the reports (oldest dropped past the bound).
    fn take_readings(&mut self, unix: f64) -> Vec<Report> {
        let ts = unix as u64;
        let active_id = self.active.id.clone();
        let mut fresh = vec![self.active.report(ts, unix, None)];
        for p in self.passives.iter_mut() {
            fresh.push(p.report(ts, unix, Some(&active_id)));
        }
        for r in &fresh {
            self.queue.push_back(r.clone());
            while self.queue.len() > self.cfg.queue_max.max(1) {
                self.queue.pop_front();
            }
        }
        fresh
    }

    /// When [`Home::on_tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let plc = self.plc.iter().map(|j| j.due).min();
        let button = self.next_button.filter(|_| self.connected);
        [Some(self.next_report), plc, button]
            .into_iter()
            .flatten()
            .min()
    }

    /// Timers: reports on the period boundary (queued while disconnected,
    /// so none is skipped), button presses, power-line answers.
    pub fn on_tick(&mut self, now: Instant, unix: f64) -> Vec<Out> {
        let mut out = Vec::new();
        while now >= self.next_report {
            self.next_report += self.cfg.interval;
            // Older reports waiting for the welcome go first: a fresh one
            // waits with them, so a reconnect sends them in seq order.
            let waiting = !self.welcomed && self.resend_waiting();
            let fresh = self.take_readings(unix);
            if self.connected && !waiting {
                for r in fresh {
                    self.send_report(r, now, &mut out);
                }
            }
        }
        if !self.connected {
            return out;
        }
        if let (Some(at), Some(every)) = (self.next_button, self.cfg.button_every) {
            if now >= at {
                self.next_button = Some(now + every);
                let was = self.active.on;
                self.active.on = !was;
                let st = Msg::State(State {
                    id: None,
                    re: None,
                    dev: Some(self.active.id.clone()),
                    on: Some(self.active.on),
                    was_on: Some(was),
                    src: Some("button".into()),
                    ts: Some(unix as u64),
                });
                out.push(send(self.request(st)));
            }
        }
        let due: Vec<PlcJob> = self.plc.iter().filter(|j| j.due <= now).cloned().collect();
        self.plc.retain(|j| j.due > now);
        for j in due {
            let lost = self.cfg.plc_loss > 0.0 && self.rng.gen_bool(self.cfg.plc_loss.min(1.0));
            let dev = self.passives[j.plug].id.clone();
            if lost {
                out.push(send(Msg::error(
                    Some(j.re),
                    Some(&dev),
                    "unreachable",
                    "PLC timeout",
                )));
            } else {
                let p = &mut self.passives[j.plug];
                out.push(Out::Command);
                out.push(send(switched(p, j.re, j.on, unix)));
            }
        }
        out
    }

    /// A complete message from the backend.
    pub fn on_message(&mut self, m: &MessageEvent, now: Instant, unix: f64) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(msg) = m.kinetid.as_ref().and_then(|k| k.typed.as_ref()) else {
            return out;
        };
        match msg {
            Msg::Welcome(_) => {
                self.welcomed = true;
                // Resend what the backend has not acknowledged, with original
                // seq and ts; not what this connection already carries.
                let inflight = &self.inflight;
                let queued: Vec<Report> = self
                    .queue
                    .iter()
                    .filter(|r| {
                        !inflight.iter().any(|(_, d, q, _)| {
                            r.dev.as_deref() == Some(d.as_str()) && r.seq == Some(*q)
                        })
                    })
                    .cloned()
                    .collect();
                for r in queued {
                    self.send_report(r, now, &mut out);
                }
            }
            Msg::Ack(a) => {
                let Some(re) = a.re else { return out };
                let Some(pos) = self.inflight.iter().position(|(id, ..)| *id == re) else {
                    return out;
                };
                let Some((_, dev, seq, sent)) = self.inflight.remove(pos) else {
                    return out;
                };
                let before = self.queue.len();
                self.queue
                    .retain(|r| !(r.dev.as_deref() == Some(dev.as_str()) && r.seq == Some(seq)));
                if self.queue.len() < before {
                    out.push(Out::ReportAcked(now.saturating_duration_since(sent)));
                }
            }
            Msg::Switch(s) => self.switch(s, now, unix, &mut out),
            _ => {}
        }
        out
    }

    fn switch(
        &mut self,
        s: &crate::kinetid::msg::Switch,
        now: Instant,
        unix: f64,
        out: &mut Vec<Out>,
    ) {
        let (Some(re), Some(dev)) = (s.id, s.dev.clone()) else {
            return;
        };
        let Some(on) = s.target() else {
            out.push(send(Msg::error(
                Some(re),
                Some(&dev),
                "bad_request",
                "switch needs on or toggle",
            )));
            return;
        };
        if dev == self.active.id {
            out.push(Out::Command);
            out.push(send(switched(&mut self.active, re, on, unix)));
        } else if let Some(plug) = self.passives.iter().position(|p| p.id == dev) {
            self.plc.push(PlcJob {
                due: now + self.cfg.plc_latency,
                re,
                plug,
                on,
            });
        } else {
            out.push(send(Msg::error(
                Some(re),
                Some(&dev),
                "not_found",
                "no such device in this home",
            )));
        }
    }
}

/// Obey a switch and build the `state` that answers it.
fn switched(p: &mut Plug, re: u64, on: Option<bool>, unix: f64) -> Msg {
    let was = p.on;
    p.on = on.unwrap_or(!was);
    Msg::State(State {
        id: None,
        re: Some(re),
        dev: Some(p.id.clone()),
        on: Some(p.on),
        was_on: Some(was),
        src: Some("backend".into()),
        ts: Some(unix as u64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::Direction;
    use rand::SeedableRng;

    const A: &str = "KN-A4CF12F0E1B2";
    const P: &str = "KN-00A1B2C3D4E5";

    fn message(text: &str) -> MessageEvent {
        crate::engine::test_message(text, Direction::S2C)
    }

    fn home(t0: Instant, loss: f64) -> Home {
        let cfg = HomeConfig {
            interval: Duration::from_secs(60),
            plc_latency: Duration::from_millis(40),
            plc_loss: loss,
            button_every: None,
            mains: Mains::Eu,
            queue_max: 3,
            fw: "test".into(),
        };
        let active = Plug::new(A.into(), Appliance::Kettle, Mains::Eu, 1);
        let passive = Plug::new(P.into(), Appliance::Fridge, Mains::Eu, 2);
        Home::new(
            cfg,
            active,
            vec![passive],
            StdRng::seed_from_u64(3),
            t0 + Duration::from_secs(60),
        )
    }

    fn sent(out: &[Out]) -> Vec<String> {
        out.iter()
            .filter_map(|o| match o {
                Out::Send(m) => Some(m.to_json()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn hello_first_then_reports_on_the_boundary_for_every_plug() {
        let t0 = Instant::now();
        let mut h = home(t0, 0.0);
        let out = h.on_connected(t0);
        assert_eq!(
            sent(&out),
            vec![format!(
                r#"{{"t":"hello","id":1,"dev":"{A}","fw":"test","role":"active","mains_v":230.0,"mains_hz":50.0,"period_s":60,"passives":["{P}"]}}"#
            )]
        );
        assert!(h.on_tick(t0 + Duration::from_secs(59), 0.0).is_empty());
        let out = sent(&h.on_tick(t0 + Duration::from_secs(60), 1767225660.0));
        assert_eq!(out.len(), 2);
        assert!(
            out[0].starts_with(&format!(
                r#"{{"t":"report","id":2,"dev":"{A}","ts":1767225660,"seq":1,"on":true"#
            )),
            "{}",
            out[0]
        );
        assert!(
            out[1].contains(&format!(r#""dev":"{P}","via":"{A}","link":"plc""#)),
            "{}",
            out[1]
        );
    }

    #[test]
    fn unacked_reports_are_resent_after_welcome_with_their_seq_and_the_queue_is_bounded() {
        let t0 = Instant::now();
        let mut h = home(t0, 0.0);
        h.on_connected(t0);
        h.on_disconnected();
        // Three periods away: 6 readings, the queue keeps the newest 3.
        h.on_tick(t0 + Duration::from_secs(180), 1.0);
        assert_eq!(h.queued(), 3);
        h.on_connected(t0 + Duration::from_secs(181));
        let out = sent(&h.on_message(
            &message(r#"{"t":"welcome","re":1,"ts":1,"period_s":60}"#),
            t0,
            2.0,
        ));
        assert!(h.welcomed());
        let seqs: Vec<String> = out
            .iter()
            .map(|m| {
                m.split("\"seq\":")
                    .nth(1)
                    .unwrap()
                    .split(',')
                    .next()
                    .unwrap()
                    .to_string()
            })
            .collect();
        assert_eq!(seqs, ["2", "3", "3"], "{out:?}");
        // An ack removes exactly its report.
        let out = h.on_message(
            &message(r#"{"t":"ack","re":2}"#),
            t0 + Duration::from_millis(30),
            2.0,
        );
        assert!(
            matches!(out[..], [Out::ReportAcked(rtt)] if rtt >= Duration::from_millis(30)),
            "{out:?}"
        );
        assert_eq!(h.queued(), 2);
        assert!(
            h.on_message(&message(r#"{"t":"ack","re":2}"#), t0, 2.0)
                .is_empty(),
            "acked once"
        );
    }

    #[test]
    fn a_report_due_before_the_welcome_waits_behind_the_queued_ones() {
        let t0 = Instant::now();
        let mut h = home(t0, 0.0);
        // Away for a period: its reports are queued.
        h.on_tick(t0 + Duration::from_secs(60), 1.0);
        assert_eq!(h.queued(), 2);
        h.on_connected(t0 + Duration::from_secs(61));
        // The next period falls due before the welcome: nothing goes yet.
        let due = h.on_tick(t0 + Duration::from_secs(120), 2.0);
        assert!(sent(&due).is_empty(), "{due:?}");
        let out = h.on_message(&message(r#"{"t":"welcome","re":1}"#), t0, 3.0);
        let reports: Vec<(String, u64)> = sent(&out)
            .iter()
            .filter_map(|t| serde_json::from_str::<serde_json::Value>(t).ok())
            .filter(|v| v["t"] == "report")
            .filter_map(|v| Some((v["dev"].as_str()?.to_string(), v["seq"].as_u64()?)))
            .collect();
        // The queue's bound (3) kept the newest: all of them go, each
        // plug's in seq order, the one that fell due last among them.
        assert_eq!(reports.len(), 3, "{out:?}");
        for dev in reports.iter().map(|(d, _)| d) {
            let seqs: Vec<u64> = reports
                .iter()
                .filter(|(d, _)| d == dev)
                .map(|r| r.1)
                .collect();
            assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{dev}: {seqs:?}");
        }
        assert_eq!(reports.last().map(|r| r.1), Some(2));
    }

    #[test]
    fn reports_already_sent_on_this_connection_are_not_resent_at_welcome() {
        let t0 = Instant::now();
        let mut h = home(t0, 0.0);
        h.on_connected(t0);
        // Due before the welcome arrives: sent at once.
        assert_eq!(sent(&h.on_tick(t0 + Duration::from_secs(60), 1.0)).len(), 2);
        let out = h.on_message(&message(r#"{"t":"welcome","re":1}"#), t0, 2.0);
        assert!(sent(&out).is_empty(), "{out:?}");
        assert_eq!(h.queued(), 2);
    }

    #[test]
    fn switches_for_the_active_plug_a_passive_and_a_stranger() {
        let t0 = Instant::now();
        let mut h = home(t0, 0.0);
        h.on_connected(t0);
        let out = sent(&h.on_message(
            &message(&format!(
                r#"{{"t":"switch","id":9001,"dev":"{A}","on":false}}"#
            )),
            t0,
            5.0,
        ));
        assert_eq!(
            out,
            vec![format!(
                r#"{{"t":"state","re":9001,"dev":"{A}","on":false,"was_on":true,"src":"backend","ts":5}}"#
            )]
        );
        assert!(!h.active.on);
        // The passive answers after the PLC latency.
        assert!(sent(&h.on_message(
            &message(&format!(
                r#"{{"t":"switch","id":9002,"dev":"{P}","toggle":true}}"#
            )),
            t0,
            5.0
        ))
        .is_empty());
        assert_eq!(h.next_deadline(), Some(t0 + Duration::from_millis(40)));
        let out = sent(&h.on_tick(t0 + Duration::from_millis(40), 6.0));
        assert_eq!(
            out,
            vec![format!(
                r#"{{"t":"state","re":9002,"dev":"{P}","on":false,"was_on":true,"src":"backend","ts":6}}"#
            )]
        );
        let out = sent(&h.on_message(
            &message(r#"{"t":"switch","id":9003,"dev":"KN-FFFFFFFFFFFF","on":true}"#),
            t0,
            7.0,
        ));
        assert!(out[0].contains("not_found"), "{out:?}");
        let out = sent(&h.on_message(
            &message(&format!(r#"{{"t":"switch","id":9004,"dev":"{A}"}}"#)),
            t0,
            7.0,
        ));
        assert!(out[0].contains("bad_request"), "{out:?}");
    }

    #[test]
    fn a_lost_power_line_exchange_is_unreachable() {
        let t0 = Instant::now();
        let mut h = home(t0, 1.0);
        h.on_connected(t0);
        h.on_message(
            &message(&format!(
                r#"{{"t":"switch","id":7,"dev":"{P}","on":false}}"#
            )),
            t0,
            1.0,
        );
        let out = sent(&h.on_tick(t0 + Duration::from_millis(40), 1.0));
        assert_eq!(
            out,
            vec![format!(
                r#"{{"t":"error","re":7,"dev":"{P}","code":"unreachable","msg":"PLC timeout"}}"#
            )]
        );
        assert!(h.passives[0].on);
    }
}
