//! Every message of the Kinetid v1 contract as a typed struct.
//!
//! The backend, the device emulator and the decoder share these: what the
//! tools send is built from them (never from JSON literals), and what they
//! receive is read into them. Reading is lenient, field by field: a field
//! of the wrong type reads as absent, so a buggy device's message still
//! yields everything that is usable, while the annotator names what is
//! wrong. Field order is the contract's, so the bytes on the wire read like
//! its examples.

use super::obj::Val;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A field that reads as `None` when it is missing or of the wrong type.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: serde::de::DeserializeOwned,
{
    let v = Value::deserialize(d)?;
    Ok(serde_json::from_value(v).ok())
}

/// One Kinetid message; `t` is the tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "lowercase")]
pub enum Msg {
    /// Device: first message of a connection.
    Hello(Hello),
    /// Device: a meter reading (its own, or a passive's it relays).
    Report(Report),
    /// Device: the relay state (answering a switch, or after a button).
    State(State),
    /// Either side: a failure, answering a request or not.
    Error(ErrorMsg),
    /// Backend: the answer to hello.
    Welcome(Welcome),
    /// Backend: the answer to a report or an unsolicited state.
    Ack(Ack),
    /// Backend: switch a relay.
    Switch(Switch),
}

/// `hello`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hello {
    /// Request id.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<u64>,
    /// The device id.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub dev: Option<String>,
    /// Firmware version.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub fw: Option<String>,
    /// `active` or `passive`.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub role: Option<String>,
    /// Nominal mains voltage.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub mains_v: Option<f64>,
    /// Nominal mains frequency.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub mains_hz: Option<f64>,
    /// Report period in seconds.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub period_s: Option<u64>,
    /// Passive plugs behind this one.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub passives: Option<Vec<String>>,
}

/// `report`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Request id.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<u64>,
    /// The plug the reading is of.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub dev: Option<String>,
    /// For a relayed reading: the active plug relaying it.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub via: Option<String>,
    /// For a relayed reading: how it reached the active plug (`plc`).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub link: Option<String>,
    /// Unix seconds of the reading.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub ts: Option<u64>,
    /// Per-plug sequence number.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub seq: Option<u64>,
    /// Relay on?
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub on: Option<bool>,
    /// Power, W.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub power_w: Option<f64>,
    /// Voltage, V.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub voltage_v: Option<f64>,
    /// Current, A.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub current_a: Option<f64>,
    /// Power factor.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub pf: Option<f64>,
    /// Frequency, Hz.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub freq_hz: Option<f64>,
    /// Energy counter, Wh.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub energy_wh: Option<f64>,
}

/// `state`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    /// Request id (an unsolicited state).
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<u64>,
    /// The switch this answers.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub re: Option<u64>,
    /// The plug.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub dev: Option<String>,
    /// Relay on now?
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub on: Option<bool>,
    /// Relay on before?
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub was_on: Option<bool>,
    /// What switched it: `backend` or `button`.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub src: Option<String>,
    /// Unix seconds.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub ts: Option<u64>,
}

/// `error`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ErrorMsg {
    /// The request this answers.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub re: Option<u64>,
    /// The plug it is about.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub dev: Option<String>,
    /// `bad_request`, `unknown_device`, `not_found`, `unreachable`.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub code: Option<String>,
    /// For people.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub msg: Option<String>,
}

/// `welcome`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Welcome {
    /// The hello's id.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub re: Option<u64>,
    /// Backend time, Unix seconds.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub ts: Option<u64>,
    /// Report period the backend wants.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub period_s: Option<u64>,
}

/// `ack`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The request acknowledged.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub re: Option<u64>,
}

/// `switch`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Switch {
    /// Command id.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub id: Option<u64>,
    /// The plug.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub dev: Option<String>,
    /// Switch on or off...
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub on: Option<bool>,
    /// ...or toggle.
    #[serde(
        default,
        deserialize_with = "lenient",
        skip_serializing_if = "Option::is_none"
    )]
    pub toggle: Option<bool>,
}

impl Msg {
    /// The message as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Read a message; `None` for anything that is not an object with a
    /// known `t`.
    pub fn from_value(v: &Value) -> Option<Msg> {
        // Dispatched on `t` by hand: the derived internally-tagged form
        // buffers the whole object first, which costs more than the read.
        fn de<T: serde::de::DeserializeOwned>(v: &Value) -> Option<T> {
            T::deserialize(v).ok()
        }
        let t = v.as_object()?.get("t")?.as_str()?;
        Some(match t {
            "hello" => Msg::Hello(de(v)?),
            "report" => Msg::Report(de(v)?),
            "state" => Msg::State(de(v)?),
            "error" => Msg::Error(de(v)?),
            "welcome" => Msg::Welcome(de(v)?),
            "ack" => Msg::Ack(de(v)?),
            "switch" => Msg::Switch(de(v)?),
            _ => return None,
        })
    }

    /// Read a message of type `t` from its object, straight into its
    /// struct; `None` for an unknown `t`.
    pub(crate) fn from_obj(t: &str, o: &super::obj::Obj<'_>) -> Option<Msg> {
        Some(match t {
            "hello" => Msg::Hello(o.read()?),
            // A report and an ack come with every reading: read field by
            // field, as the lenient fields would (tested against them).
            "report" => Msg::Report(Report::from_obj(o)),
            "ack" => Msg::Ack(Ack {
                re: o.get("re").and_then(super::obj::Val::as_u64),
            }),
            "state" => Msg::State(o.read()?),
            "error" => Msg::Error(o.read()?),
            "welcome" => Msg::Welcome(o.read()?),
            "switch" => Msg::Switch(o.read()?),
            _ => return None,
        })
    }

    /// An `error` (for `bad_request` and the like).
    pub fn error(re: Option<u64>, dev: Option<&str>, code: &str, msg: &str) -> Msg {
        Msg::Error(ErrorMsg {
            re,
            dev: dev.map(str::to_string),
            code: Some(code.to_string()),
            msg: Some(msg.to_string()),
        })
    }
}

impl Report {
    /// The report in an object: each field as `lenient` reads it (`None`
    /// when missing or of another type; the last of repeated keys).
    fn from_obj(o: &super::obj::Obj<'_>) -> Report {
        ReportFields::of(o).read()
    }
}

/// A report's fields, each found in one pass over its object (of a
/// repeated key the last, as a lookup finds it). The summary and the typed
/// reading both use them: a report's dozen keys matched once each, not
/// looked up two dozen times by name.
#[derive(Debug, Default)]
pub(super) struct ReportFields<'o, 'a> {
    pub(super) id: Option<&'o Val<'a>>,
    pub(super) dev: Option<&'o Val<'a>>,
    pub(super) via: Option<&'o Val<'a>>,
    pub(super) link: Option<&'o Val<'a>>,
    pub(super) ts: Option<&'o Val<'a>>,
    pub(super) seq: Option<&'o Val<'a>>,
    pub(super) on: Option<&'o Val<'a>>,
    pub(super) power_w: Option<&'o Val<'a>>,
    pub(super) voltage_v: Option<&'o Val<'a>>,
    pub(super) current_a: Option<&'o Val<'a>>,
    pub(super) pf: Option<&'o Val<'a>>,
    pub(super) freq_hz: Option<&'o Val<'a>>,
    pub(super) energy_wh: Option<&'o Val<'a>>,
}

impl<'o, 'a> ReportFields<'o, 'a> {
    /// The fields of `o` a report has.
    pub(super) fn of(o: &'o super::obj::Obj<'a>) -> ReportFields<'o, 'a> {
        let mut r = ReportFields::default();
        for (k, v) in o.iter() {
            let slot = match k {
                "id" => &mut r.id,
                "dev" => &mut r.dev,
                "via" => &mut r.via,
                "link" => &mut r.link,
                "ts" => &mut r.ts,
                "seq" => &mut r.seq,
                "on" => &mut r.on,
                "power_w" => &mut r.power_w,
                "voltage_v" => &mut r.voltage_v,
                "current_a" => &mut r.current_a,
                "pf" => &mut r.pf,
                "freq_hz" => &mut r.freq_hz,
                "energy_wh" => &mut r.energy_wh,
                _ => continue,
            };
            *slot = Some(v);
        }
        r
    }

    /// The typed report.
    pub(super) fn read(&self) -> Report {
        let u = |v: Option<&Val<'_>>| v.and_then(Val::as_u64);
        let f = |v: Option<&Val<'_>>| v.and_then(Val::as_f64);
        let s = |v: Option<&Val<'_>>| v.and_then(Val::as_str).map(str::to_string);
        Report {
            id: u(self.id),
            dev: s(self.dev),
            via: s(self.via),
            link: s(self.link),
            ts: u(self.ts),
            seq: u(self.seq),
            on: self.on.and_then(Val::as_bool),
            power_w: f(self.power_w),
            voltage_v: f(self.voltage_v),
            current_a: f(self.current_a),
            pf: f(self.pf),
            freq_hz: f(self.freq_hz),
            energy_wh: f(self.energy_wh),
        }
    }
}

impl Switch {
    /// What the command asks: `Some(Some(on))`, `Some(None)` for toggle,
    /// or `None` when it asks neither.
    pub fn target(&self) -> Option<Option<bool>> {
        match (self.toggle, self.on) {
            (Some(true), _) => Some(None),
            (_, Some(on)) => Some(Some(on)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_and_acks_read_by_hand_as_serde_reads_them() {
        let values = [
            "1",
            "0",
            "-3",
            "2.5",
            "5.0",
            "18446744073709551615",
            "\"7\"",
            "\"KN-1\"",
            "true",
            "false",
            "null",
            "[1]",
            "{}",
        ];
        let fields = [
            "id",
            "dev",
            "via",
            "link",
            "ts",
            "seq",
            "on",
            "power_w",
            "voltage_v",
            "current_a",
            "pf",
            "freq_hz",
            "energy_wh",
            "re",
            "extra",
        ];
        let mut n = 0;
        for (i, f) in fields.iter().enumerate() {
            for (j, v) in values.iter().enumerate() {
                // Each field with each value, beside a second field, and repeated.
                let g = fields[(i + j + 1) % fields.len()];
                let w = values[(i * 7 + j) % values.len()];
                for text in [
                    format!(r#"{{"{f}":{v},"{g}":{w}}}"#),
                    format!(r#"{{"{f}":{w},"{g}":{v},"{f}":{v}}}"#),
                ] {
                    let Ok(super::super::obj::Top::Object(o)) = super::super::obj::parse(&text)
                    else {
                        panic!("{text}")
                    };
                    let want: Report = o.read().unwrap();
                    assert_eq!(Report::from_obj(&o), want, "{text}");
                    let want: Ack = o.read().unwrap();
                    assert_eq!(Msg::from_obj("ack", &o), Some(Msg::Ack(want)), "{text}");
                    n += 1;
                }
            }
        }
        assert_eq!(n, fields.len() * values.len() * 2);
    }

    #[test]
    fn the_contract_examples_round_trip_byte_for_byte() {
        for m in [
            r#"{"t":"hello","id":1,"dev":"KN-A4CF12F0E1B2","fw":"1.4.2","role":"active","mains_v":230.0,"mains_hz":50.0,"period_s":60,"passives":["KN-00A1B2C3D4E5"]}"#,
            r#"{"t":"report","id":3,"dev":"KN-00A1B2C3D4E5","via":"KN-A4CF12F0E1B2","link":"plc","ts":1767225662,"seq":7,"on":true,"power_w":3.1,"voltage_v":230.9,"current_a":0.02,"pf":0.55,"freq_hz":50.0,"energy_wh":88.2}"#,
            r#"{"t":"state","re":9001,"dev":"KN-A4CF12F0E1B2","on":false,"was_on":true,"src":"backend","ts":1767225671}"#,
            r#"{"t":"state","id":4,"dev":"KN-A4CF12F0E1B2","on":true,"was_on":false,"src":"button","ts":1767225700}"#,
            r#"{"t":"error","re":9002,"dev":"KN-00A1B2C3D4E5","code":"unreachable","msg":"PLC timeout"}"#,
            r#"{"t":"welcome","re":1,"ts":1767225600,"period_s":60}"#,
            r#"{"t":"ack","re":2}"#,
            r#"{"t":"switch","id":9001,"dev":"KN-A4CF12F0E1B2","on":false}"#,
            r#"{"t":"switch","id":9003,"dev":"KN-A4CF12F0E1B2","toggle":true}"#,
            r#"{"t":"error","code":"bad_request","msg":"expected a JSON object with field t"}"#,
        ] {
            let v: Value = serde_json::from_str(m).unwrap();
            let msg = Msg::from_value(&v).unwrap_or_else(|| panic!("{m}"));
            assert_eq!(msg.to_json(), m);
        }
    }

    #[test]
    fn wrong_types_read_as_absent() {
        let v: Value = serde_json::from_str(
            r#"{"t":"hello","id":"one","dev":"KN-A4CF12F0E1B2","period_s":"60","passives":[1,2]}"#,
        )
        .unwrap();
        let Some(Msg::Hello(h)) = Msg::from_value(&v) else {
            panic!()
        };
        assert_eq!((h.id, h.period_s, h.passives), (None, None, None));
        assert_eq!(h.dev.as_deref(), Some("KN-A4CF12F0E1B2"));
        for bad in [r#"{"t":"dance"}"#, r#"[1]"#, r#"{"id":1}"#] {
            let v: Value = serde_json::from_str(bad).unwrap();
            assert_eq!(Msg::from_value(&v), None, "{bad}");
        }
    }

    #[test]
    fn switch_targets() {
        let s = |on, toggle| Switch {
            id: Some(1),
            dev: None,
            on,
            toggle,
        };
        assert_eq!(s(Some(true), None).target(), Some(Some(true)));
        assert_eq!(s(None, Some(true)).target(), Some(None));
        assert_eq!(s(None, None).target(), None);
    }
}
