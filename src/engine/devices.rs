//! The device table: which plugs are where, as the Kinetid messages said.
//!
//! One table for every role that sees devices: `listen` (playing the
//! backend) and `proxy` (between a plug and a real backend) feed it the
//! same facts, the [`Effect`](super::backend::Effect)s a
//! [`Backend`](super::backend::Backend) draws from each message.
//!
//! The table is keyed by device id, and only ids that follow the contract
//! (`KN-` and 12 upper-case hex digits) ever become keys. One rule decides
//! where a device is: a `hello` claims its id (and its passive plugs')
//! for its connection and wins over an older connection (as after a
//! reboot); a relayed report claims a passive plug only through the active
//! plug that said hello on that connection, and never takes an id online
//! elsewhere. The table is bounded: when it is full the device offline the
//! longest makes room, and when every device is online a new one is not
//! registered.

use crate::kinetid::is_device_id;
use crate::kinetid::msg::Report;
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};

/// Readings kept per device: an hour at the contract's one-minute period.
pub const HISTORY_POINTS: usize = 64;

/// Report seqs remembered per device, to drop duplicates.
const RECENT_SEQS: usize = 1024;

/// One row of the device table.
#[derive(Debug, Clone)]
pub struct Device {
    /// Device id (always a valid `KN-` id).
    pub id: String,
    /// `active`, `passive` or `unknown` (what the device said, if one of those).
    pub role: &'static str,
    /// For passives: the active plug relaying them.
    pub via: Option<String>,
    /// Connection carrying it (the last one, once offline).
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
    /// Recent readings for the inspector's chart: (time, power_w,
    /// energy_wh), the last hour, at most [`HISTORY_POINTS`].
    history: VecDeque<(f64, f64, f64)>,
}

impl Device {
    fn new(id: &str, role: &'static str, conn: u64, peer: &str, t: f64) -> Device {
        Device {
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
        }
    }

    /// The row as the APIs show it.
    pub fn json(&self) -> Value {
        json!({
            "id": self.id, "role": self.role, "via": self.via, "conn": self.conn, "peer": self.peer,
            "online": self.online, "connected_since": self.since, "last_seen": self.last_seen,
            "on": self.on, "power_w": self.power_w, "energy_wh": self.energy_wh, "seq": self.seq,
            "reports": self.reports, "duplicates": self.duplicates,
        })
    }

    /// The row with its recent readings (`history`: `[time, power_w,
    /// energy_wh]`, oldest first).
    pub fn json_with_history(&self) -> Value {
        let mut v = self.json();
        v["history"] = self
            .history
            .iter()
            .map(|&(t, p, e)| json!([t, p, if e.is_nan() { None } else { Some(e) }]))
            .collect();
        v
    }
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

/// The device table (no locks: the driver holds it behind one).
#[derive(Debug)]
pub struct DeviceTable {
    devices: HashMap<String, Device>,
    max: usize,
}

impl DeviceTable {
    /// An empty table of at most `max` devices.
    pub fn new(max: usize) -> DeviceTable {
        DeviceTable {
            devices: HashMap::new(),
            max,
        }
    }

    /// Register `id` as carried by connection `conn`. `take_over` says
    /// whether a claim on an id online elsewhere wins (a `hello`: the newer
    /// connection wins, as after a reboot) or loses (a relayed report).
    #[allow(clippy::too_many_arguments)]
    pub fn claim(
        &mut self,
        id: &str,
        role: &'static str,
        via: Option<&str>,
        conn: u64,
        peer: &str,
        t: f64,
        take_over: bool,
    ) -> Claim {
        if !is_device_id(id) || via.is_some_and(|v| !is_device_id(v)) {
            return Claim::Invalid;
        }
        let mut claim = Claim::Ok;
        match self.devices.get(id) {
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
            None if self.devices.len() >= self.max => {
                // Make room: forget the device offline the longest.
                let oldest = self
                    .devices
                    .values()
                    .filter(|e| !e.online)
                    .min_by(|a, b| a.last_seen.total_cmp(&b.last_seen))
                    .map(|e| e.id.clone());
                match oldest {
                    Some(o) => {
                        self.devices.remove(&o);
                    }
                    None => return Claim::Full,
                }
            }
            None => {}
        }
        let e = self
            .devices
            .entry(id.to_string())
            .or_insert_with(|| Device::new(id, role, conn, peer, t));
        if e.conn != conn || !e.online {
            e.since = t;
        }
        e.role = role;
        e.via = via.map(str::to_string);
        e.conn = conn;
        if e.peer != peer {
            e.peer = peer.to_string();
        }
        e.online = true;
        e.last_seen = t;
        claim
    }

    /// A report for a device this connection carries: its row is updated,
    /// a (dev, seq) seen recently is counted as a duplicate.
    pub fn reading(&mut self, conn: u64, r: &Report, t: f64) {
        let Some(dev) = r.dev.as_deref() else { return };
        let Some(e) = self.devices.get_mut(dev).filter(|e| e.conn == conn) else {
            return;
        };
        e.last_seen = t;
        if r.seq.is_some_and(|s| e.recent_seqs.contains(&s)) {
            e.duplicates += 1;
            return;
        }
        if let Some(s) = r.seq {
            e.recent_seqs.push_back(s);
            if e.recent_seqs.len() > RECENT_SEQS {
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
            e.history.push_back((t, p, r.energy_wh.unwrap_or(f64::NAN)));
            while e.history.len() > HISTORY_POINTS
                || e.history.front().is_some_and(|h| h.0 < t - 3600.0)
            {
                e.history.pop_front();
            }
        }
    }

    /// A relay state for a device this connection carries.
    pub fn relay(&mut self, conn: u64, dev: &str, on: bool, t: f64) {
        if let Some(e) = self.devices.get_mut(dev).filter(|e| e.conn == conn) {
            e.on = Some(on);
            e.last_seen = t;
        }
    }

    /// A connection ended: the devices it carried go offline.
    pub fn depart(&mut self, conn: u64) {
        for dev in self.devices.values_mut() {
            if dev.conn == conn {
                dev.online = false;
            }
        }
    }

    /// The connection carrying `id`, if it is online.
    pub fn online_conn(&self, id: &str) -> Option<u64> {
        self.devices.get(id).filter(|d| d.online).map(|d| d.conn)
    }

    /// One device.
    pub fn get(&self, id: &str) -> Option<&Device> {
        self.devices.get(id)
    }

    /// Every device, sorted by id.
    pub fn rows(&self) -> Vec<&Device> {
        let mut v: Vec<&Device> = self.devices.values().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// Devices online.
    pub fn online(&self) -> usize {
        self.devices.values().filter(|d| d.online).count()
    }

    /// Every device as JSON, sorted by id.
    pub fn json(&self) -> Value {
        Value::Array(self.rows().into_iter().map(Device::json).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "KN-00000000000A";
    const B: &str = "KN-00000000000B";

    fn report(dev: &str, seq: u64, power: f64) -> Report {
        Report {
            dev: Some(dev.into()),
            seq: Some(seq),
            power_w: Some(power),
            ..Report::default()
        }
    }

    #[test]
    fn a_hello_takes_over_and_a_relayed_report_does_not() {
        let mut t = DeviceTable::new(10);
        assert_eq!(t.claim(A, "active", None, 1, "p1", 0.0, true), Claim::Ok);
        assert_eq!(
            t.claim(A, "active", None, 2, "p2", 1.0, true),
            Claim::Replaced {
                conn: 1,
                peer: "p1".into()
            }
        );
        assert_eq!(t.online_conn(A), Some(2));
        assert_eq!(
            t.claim(A, "passive", Some(B), 3, "p3", 2.0, false),
            Claim::Kept { conn: 2 }
        );
        assert_eq!(
            t.claim("kn-bad", "active", None, 3, "p3", 2.0, true),
            Claim::Invalid
        );
        assert_eq!(
            t.claim(B, "active", Some("x"), 3, "p3", 2.0, true),
            Claim::Invalid
        );
    }

    #[test]
    fn a_full_table_forgets_the_device_offline_longest() {
        let mut t = DeviceTable::new(2);
        t.claim(A, "active", None, 1, "p", 0.0, true);
        t.claim(B, "active", None, 2, "p", 5.0, true);
        let c = "KN-00000000000C";
        assert_eq!(t.claim(c, "active", None, 3, "p", 6.0, true), Claim::Full);
        t.depart(1);
        assert_eq!(t.online_conn(A), None);
        assert_eq!(t.claim(c, "active", None, 3, "p", 7.0, true), Claim::Ok);
        assert!(t.get(A).is_none());
        assert_eq!(t.online(), 2);
    }

    #[test]
    fn readings_count_once_per_seq_and_only_from_the_carrying_connection() {
        let mut t = DeviceTable::new(10);
        t.claim(A, "active", None, 1, "p", 0.0, true);
        t.reading(1, &report(A, 1, 10.0), 60.0);
        t.reading(1, &report(A, 1, 10.0), 61.0);
        t.reading(2, &report(A, 2, 99.0), 62.0);
        t.reading(1, &report(A, 2, 20.0), 120.0);
        let d = t.get(A).unwrap();
        assert_eq!((d.reports, d.duplicates, d.seq), (2, 1, Some(2)));
        assert_eq!(d.power_w, Some(20.0));
        let h = t.get(A).unwrap().json_with_history();
        assert_eq!(h["history"].as_array().unwrap().len(), 2);
        assert_eq!(h["history"][0][2], Value::Null, "no energy given");
        t.relay(1, A, true, 130.0);
        assert_eq!(t.get(A).unwrap().on, Some(true));
        assert_eq!(t.json()[0]["id"], A);
    }

    #[test]
    fn history_is_bounded() {
        let mut t = DeviceTable::new(10);
        t.claim(A, "active", None, 1, "p", 0.0, true);
        for i in 0..200 {
            t.reading(1, &report(A, i, 1.0), i as f64);
        }
        let h = t.get(A).unwrap().json_with_history();
        assert_eq!(h["history"].as_array().unwrap().len(), HISTORY_POINTS);
    }
}
