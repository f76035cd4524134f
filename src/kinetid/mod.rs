//! The Kinetid device protocol, version 1: one JSON object per text message.
//!
//! This module decodes a message into a one-line summary plus contract
//! notes, and builds the messages the backend and the emulator send. The
//! contract itself is described in `docs/protocol.md`.

pub mod ahead;
pub mod meter;
pub mod msg;
mod obj;
pub mod track;

use obj::{Obj, Top, Val};

use crate::note::{Code, Note};
use crate::wire::frame::Direction;
use serde_json::Value;
use std::fmt::Write as _;

/// Where contract notes point.
pub const SPEC: &str = "kinetid v1";

/// Largest message the protocol allows (a plug's receive buffer).
pub const MAX_MESSAGE: usize = 16 * 1024;

/// Is `s` a device id: `KN-` and 12 upper-case hex digits?
pub fn is_device_id(s: &str) -> bool {
    s.len() == 15
        && s.starts_with("KN-")
        && s[3..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

/// A decoded Kinetid message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The `t` field (the contract's types held without a copy).
    pub t: std::borrow::Cow<'static, str>,
    /// Request id.
    pub id: Option<u64>,
    /// Id of the request this answers.
    pub re: Option<u64>,
    /// Device the message is about.
    pub dev: Option<String>,
    /// The whole object, for `state` and `error` (the API answers a switch
    /// with it as it came); `None` for other types.
    pub value: Option<Value>,
    /// The object read as a typed message (`None` for an unknown `t`).
    pub typed: Option<msg::Msg>,
    /// One line for humans.
    pub summary: String,
}

/// Outcome of decoding one text message.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The message, when it is a JSON object (boxed where it is made: it
    /// is several hundred bytes, and an event holds it boxed).
    pub msg: Option<Box<Message>>,
    /// Contract violations.
    pub notes: Vec<Note>,
    /// The JSON ended early (used to spot messages split into FIN frames).
    pub incomplete_json: bool,
}

fn num(v: &Obj<'_>, k: &str) -> Option<f64> {
    v.get(k).and_then(Val::as_f64)
}

/// ` VALUE` of a number as `{}` prints its f64 (its digits as written when
/// they say it: most meter readings); false when it is no number.
fn push_num(s: &mut String, v: &Val<'_>) -> bool {
    if let Some(d) = v.shortest() {
        s.push(' ');
        s.push_str(d);
        return true;
    }
    match v.as_f64() {
        Some(x) => {
            s.push(' ');
            push_f64(s, x);
            true
        }
        None => false,
    }
}

/// `x` exactly as `{x}` prints it (shortest digits that read back, never an
/// exponent, no `.0` on whole numbers): in the range of meter readings by a
/// formatter several times faster than the standard one, elsewhere the
/// standard way.
fn push_f64(s: &mut String, x: f64) {
    if x == 0.0 || (1e-4..1e15).contains(&x.abs()) {
        let mut b = zmij::Buffer::new();
        let t = b.format_finite(x);
        // With at most 15 significant digits the shortest form is unique
        // (doubles hold 15.95 digits), so both formatters agree; with more,
        // they may pick different last digits.
        let digits = t
            .bytes()
            .filter(u8::is_ascii_digit)
            .skip_while(|&d| d == b'0')
            .count();
        if !t.contains(['e', 'E']) && digits <= 15 {
            s.push_str(t.strip_suffix(".0").unwrap_or(t));
            return;
        }
    }
    let _ = write!(s, "{x}");
}

const DEVICE_TYPES: &[&str] = &["hello", "report", "state", "error"];
const BACKEND_TYPES: &[&str] = &["welcome", "ack", "switch", "error"];

/// Is `t` the type of a message the contract names (either direction)?
pub fn is_message_type(t: &str) -> bool {
    DEVICE_TYPES.contains(&t) || BACKEND_TYPES.contains(&t)
}

/// A message being summarised: its object and the fields every type has.
struct Ctx<'a> {
    obj: &'a Obj<'a>,
    t: &'a str,
    id: Option<u64>,
    re: Option<u64>,
    dev: Option<&'a str>,
}

impl Ctx<'_> {
    /// A contract note for each required field that is missing.
    fn need(&self, notes: &mut Vec<Note>, fields: &[&str]) {
        for f in fields {
            if !self.obj.contains_key(f) {
                notes.push(Note::error(
                    Code::KinetidMissingField,
                    SPEC,
                    format!("{} without field {f}", self.t),
                ));
            }
        }
    }

    fn onoff(&self, k: &str) -> &'static str {
        match self.obj.get(k).and_then(Val::as_bool) {
            Some(true) => "on",
            Some(false) => "off",
            None => "?",
        }
    }

    fn str(&self, k: &str) -> &str {
        self.obj.get(k).and_then(Val::as_str).unwrap_or("?")
    }

    fn id_s(&self) -> String {
        self.id.map_or("-".into(), |x| x.to_string())
    }

    fn hello(&self, notes: &mut Vec<Note>) -> String {
        self.need(notes, &["id", "dev", "fw", "role"]);
        let passives = self
            .obj
            .get("passives")
            .and_then(Val::as_array)
            .map(|a| a.len())
            .unwrap_or(0);
        format!(
            "hello id={} dev={} fw={} role={} mains={}V/{}Hz period={}s passives={passives}",
            self.id_s(),
            self.dev.unwrap_or("-"),
            self.str("fw"),
            self.str("role"),
            num(self.obj, "mains_v").unwrap_or(0.0),
            num(self.obj, "mains_hz").unwrap_or(0.0),
            num(self.obj, "period_s").unwrap_or(0.0),
        )
    }

    fn report(&self, r: &msg::ReportFields<'_, '_>, notes: &mut Vec<Note>) -> String {
        let required = [
            ("id", r.id),
            ("dev", r.dev),
            ("ts", r.ts),
            ("seq", r.seq),
            ("on", r.on),
            ("power_w", r.power_w),
            ("energy_wh", r.energy_wh),
        ];
        for (f, v) in required {
            if v.is_none() {
                notes.push(Note::error(
                    Code::KinetidMissingField,
                    SPEC,
                    format!("{} without field {f}", self.t),
                ));
            }
        }
        let reading = |s: &mut String, v: Option<&Val<'_>>, unit: &str| {
            if v.is_some_and(|v| push_num(s, v)) {
                s.push(' ');
                s.push_str(unit);
            }
        };
        // One string written in place: this runs for every report.
        let mut s = String::with_capacity(128);
        s.push_str("report id=");
        match self.id {
            Some(x) => s.push_str(itoa::Buffer::new().format(x)),
            None => s.push('-'),
        }
        s.push_str(" dev=");
        s.push_str(self.dev.unwrap_or("-"));
        s.push_str(" seq=");
        match r.seq {
            Some(v) if v.is_u64() => {
                s.push_str(itoa::Buffer::new().format(v.as_u64().unwrap_or(0)))
            }
            Some(v) => {
                let _ = write!(s, "{v}");
            }
            None => s.push('-'),
        }
        s.push(' ');
        s.push_str(match r.on.and_then(Val::as_bool) {
            Some(true) => "on",
            Some(false) => "off",
            None => "?",
        });
        reading(&mut s, r.power_w, "W");
        reading(&mut s, r.voltage_v, "V");
        reading(&mut s, r.current_a, "A");
        if let Some(x) = r.pf.filter(|v| v.as_f64().is_some()) {
            s.push_str(" pf");
            push_num(&mut s, x);
        }
        reading(&mut s, r.energy_wh, "Wh");
        if let Some(v) = r.via.and_then(Val::as_str) {
            let link = r.link.and_then(Val::as_str).unwrap_or("?");
            let _ = write!(s, " via {v} ({link})");
        }
        s
    }

    fn state(&self, notes: &mut Vec<Note>) -> String {
        self.need(notes, &["dev", "on"]);
        if self.id.is_none() && self.re.is_none() {
            notes.push(Note::error(
                Code::KinetidNoIdOrRe,
                SPEC,
                "state needs id (unsolicited) or re (answer to switch)",
            ));
        }
        let which = match (self.re, self.id) {
            (Some(r), _) => format!("re={r}"),
            (None, Some(i)) => format!("id={i}"),
            (None, None) => String::new(),
        };
        format!(
            "state {which} dev={} {} (was {}) src={}",
            self.dev.unwrap_or("-"),
            self.onoff("on"),
            self.onoff("was_on"),
            self.str("src")
        )
    }

    fn reply(&self, notes: &mut Vec<Note>) -> String {
        if self.re.is_none() {
            notes.push(Note::error(
                Code::KinetidReplyWithoutRe,
                SPEC,
                format!("{} is a reply and must carry re", self.t),
            ));
        }
        let extra = if self.t == "welcome" {
            num(self.obj, "period_s").map_or(String::new(), |p| format!(" period={p}s"))
        } else {
            String::new()
        };
        // An ack per report: written in place.
        let mut s = String::with_capacity(self.t.len() + 24 + extra.len());
        s.push_str(self.t);
        s.push_str(" re=");
        match self.re {
            Some(x) => s.push_str(itoa::Buffer::new().format(x)),
            None => s.push('-'),
        }
        s.push_str(&extra);
        s
    }

    fn switch(&self, notes: &mut Vec<Note>) -> String {
        self.need(notes, &["id", "dev"]);
        let what = if self.obj.get("toggle").and_then(Val::as_bool) == Some(true) {
            "toggle"
        } else {
            self.onoff("on")
        };
        format!(
            "switch id={} dev={} {what}",
            self.id_s(),
            self.dev.unwrap_or("-")
        )
    }

    fn error(&self, notes: &mut Vec<Note>) -> String {
        self.need(notes, &["code"]);
        let msg = self.obj.get("msg").and_then(Val::as_str).unwrap_or("");
        format!(
            "error{} {}{}{}",
            self.re.map_or(String::new(), |x| format!(" re={x}")),
            self.str("code"),
            self.dev.map_or(String::new(), |d| format!(" dev={d}")),
            if msg.is_empty() {
                String::new()
            } else {
                format!(": {msg}")
            }
        )
    }
}

/// The fields every message may carry, found in one pass over its object
/// (of a repeated key the last, as a lookup finds it).
#[derive(Default)]
struct Envelope<'o, 'a> {
    t: Option<&'o Val<'a>>,
    id: Option<&'o Val<'a>>,
    re: Option<&'o Val<'a>>,
    dev: Option<&'o Val<'a>>,
    via: Option<&'o Val<'a>>,
}

impl<'o, 'a> Envelope<'o, 'a> {
    fn of(o: &'o Obj<'a>) -> Envelope<'o, 'a> {
        let mut e = Envelope::default();
        for (k, v) in o.iter() {
            let slot = match k {
                "t" => &mut e.t,
                "id" => &mut e.id,
                "re" => &mut e.re,
                "dev" => &mut e.dev,
                "via" => &mut e.via,
                _ => continue,
            };
            *slot = Some(v);
        }
        e
    }
}

/// Contract notes on what every message carries: `id`, `dev`, `via`, and
/// a type the sender may send.
fn envelope_notes(env: &Envelope<'_, '_>, t: &str, dir: Direction, notes: &mut Vec<Note>) {
    if let Some(v) = env.id {
        if v.as_u64().is_none_or(|x| x > u32::MAX as u64) {
            notes.push(Note::error(
                Code::KinetidBadId,
                SPEC,
                format!("id must be a u32, got {v}"),
            ));
        }
    }
    if let Some(d) = env.dev.and_then(Val::as_str) {
        if !is_device_id(d) {
            notes.push(Note::error(
                Code::KinetidBadDeviceId,
                SPEC,
                format!("device id {d:?} is not KN- followed by 12 upper-case hex digits"),
            ));
        }
    }
    if let Some(v) = env.via.and_then(Val::as_str) {
        if !is_device_id(v) {
            notes.push(Note::error(
                Code::KinetidBadDeviceId,
                SPEC,
                format!("via {v:?} is not a device id"),
            ));
        }
    }
    let allowed = if dir == Direction::C2S {
        DEVICE_TYPES
    } else {
        BACKEND_TYPES
    };
    if !t.is_empty() && !allowed.contains(&t) {
        let known = DEVICE_TYPES.contains(&t) || BACKEND_TYPES.contains(&t);
        notes.push(Note::error(
            Code::KinetidUnknownType,
            SPEC,
            if known {
                format!(
                    "type {t:?} is not sent by the {}",
                    if dir == Direction::C2S {
                        "device"
                    } else {
                        "backend"
                    }
                )
            } else {
                format!("unknown message type {t:?}")
            },
        ));
    }
}

/// Decode a text message sent in direction `dir` (c2s = device to backend).
pub fn decode(text: &str, dir: Direction) -> Decoded {
    let mut notes = Vec::new();
    let top = match obj::parse(text) {
        Ok(v) => v,
        Err(e) => {
            let incomplete = e.is_eof();
            notes.push(Note::error(
                Code::KinetidNotJson,
                SPEC,
                format!("not valid JSON: {e} (the backend answers error bad_request)"),
            ));
            return Decoded {
                msg: None,
                notes,
                incomplete_json: incomplete,
            };
        }
    };
    let Top::Object(obj) = &top else {
        notes.push(Note::error(
            Code::KinetidNotObject,
            SPEC,
            "a Kinetid message is a JSON object",
        ));
        return Decoded {
            msg: None,
            notes,
            incomplete_json: false,
        };
    };
    let env = Envelope::of(obj);
    let t: std::borrow::Cow<'static, str> = match env.t.and_then(Val::as_str) {
        // The contract's types are named, not copied.
        Some(t) => match DEVICE_TYPES.iter().chain(BACKEND_TYPES).find(|k| **k == t) {
            Some(k) => (*k).into(),
            None => t.to_string().into(),
        },
        None => {
            notes.push(Note::error(
                Code::KinetidNoType,
                SPEC,
                "object has no string field t (the backend answers error bad_request)",
            ));
            "".into()
        }
    };
    let id = env.id.and_then(Val::as_u64);
    let re = env.re.and_then(Val::as_u64);
    let dev = env.dev.and_then(Val::as_str).map(str::to_string);
    envelope_notes(&env, &t, dir, &mut notes);
    let c = Ctx {
        obj,
        t: &t,
        id,
        re,
        dev: dev.as_deref(),
    };
    // A report's fields, found once for its summary and its typed reading.
    let mut report = None;
    let summary = match &*t {
        "hello" => c.hello(&mut notes),
        "report" => c.report(report.insert(msg::ReportFields::of(obj)), &mut notes),
        "state" => c.state(&mut notes),
        "welcome" | "ack" => c.reply(&mut notes),
        "switch" => c.switch(&mut notes),
        "error" => c.error(&mut notes),
        "" => "(no type)".to_string(),
        other => format!("{other} (unknown type)"),
    };
    let typed = match &report {
        Some(r) => Some(msg::Msg::Report(r.read())),
        None => msg::Msg::from_obj(&t, obj),
    };
    // What the API hands on as the device sent it; other messages are
    // read into their struct only.
    let value = matches!(&*t, "state" | "error").then(|| obj.to_value());
    Decoded {
        msg: Some(Box::new(Message {
            t,
            id,
            re,
            dev,
            value,
            typed,
            summary,
        })),
        notes,
        incomplete_json: false,
    }
}

/// `welcome` for a `hello` with id `re`.
pub fn welcome(re: u64, ts: u64, period_s: u64) -> String {
    msg::Msg::Welcome(msg::Welcome {
        re: Some(re),
        ts: Some(ts),
        period_s: Some(period_s),
    })
    .to_json()
}

/// `ack` for a request with id `re`.
pub fn ack(re: u64) -> String {
    msg::Msg::Ack(msg::Ack { re: Some(re) }).to_json()
}

/// A `switch` command: `Some(on)`, or `None` to toggle.
pub fn switch(id: u64, dev: &str, on: Option<bool>) -> String {
    msg::Msg::Switch(msg::Switch {
        id: Some(id),
        dev: Some(dev.to_string()),
        on,
        toggle: on.is_none().then_some(true),
    })
    .to_json()
}

/// An `error`, optionally answering a request.
pub fn error(re: Option<u64>, dev: Option<&str>, code: &str, msg: &str) -> String {
    msg::Msg::error(re, dev, code, msg).to_json()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_as_the_standard_formatter_prints_them() {
        let mut seed = 0x9E37_79B9_7F4A_7C15u64;
        let check = |x: f64| {
            let mut s = String::new();
            push_f64(&mut s, x);
            assert_eq!(s, format!("{x}"), "{:#x}", x.to_bits());
        };
        for k in -200_000..200_000 {
            check(k as f64 / 10.0);
            check(k as f64 / 100.0);
            check(k as f64 * 1.5e9);
        }
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..300_000 {
            check(f64::from_bits(next()));
            // Any digits at every magnitude of the fast range.
            let unit = (next() >> 11) as f64 / (1u64 << 53) as f64;
            let exp = (next() % 17) as i32 - 4;
            check(unit * 10f64.powi(exp));
            check(-unit * 10f64.powi(exp));
        }
        for x in [
            0.0,
            -0.0,
            1e15,
            1e16,
            1e17,
            1e21,
            1e-5,
            1e-7,
            5e-324,
            f64::MAX,
            f64::NAN,
            f64::INFINITY,
        ] {
            check(x);
        }
    }

    #[test]
    fn ids() {
        assert!(is_device_id("KN-A4CF12F0E1B2"));
        assert!(!is_device_id("KN-a4cf12f0e1b2"));
        assert!(!is_device_id("KN-A4CF12F0E1B"));
        assert!(!is_device_id("XX-A4CF12F0E1B2"));
    }

    #[test]
    fn contract_examples_decode_cleanly() {
        let c2s = [
            r#"{"t":"hello","id":1,"dev":"KN-A4CF12F0E1B2","fw":"1.4.2","role":"active","mains_v":230,"mains_hz":50,"period_s":60,"passives":["KN-00A1B2C3D4E5"]}"#,
            r#"{"t":"report","id":2,"dev":"KN-A4CF12F0E1B2","ts":1767225660,"seq":41,"on":true,"power_w":1432.6,"voltage_v":231.4,"current_a":6.19,"pf":1.0,"freq_hz":50.01,"energy_wh":123456.7}"#,
            r#"{"t":"state","re":9001,"dev":"KN-A4CF12F0E1B2","on":false,"was_on":true,"src":"backend","ts":1767225671}"#,
            r#"{"t":"error","re":9002,"dev":"KN-00A1B2C3D4E5","code":"unreachable","msg":"PLC timeout"}"#,
        ];
        for m in c2s {
            let d = decode(m, Direction::C2S);
            assert!(d.notes.is_empty(), "{m}: {:?}", d.notes);
        }
        let s2c = [
            r#"{"t":"welcome","re":1,"ts":1767225600,"period_s":60}"#,
            r#"{"t":"ack","re":2}"#,
            r#"{"t":"switch","id":9003,"dev":"KN-A4CF12F0E1B2","toggle":true}"#,
        ];
        for m in s2c {
            let d = decode(m, Direction::S2C);
            assert!(d.notes.is_empty(), "{m}: {:?}", d.notes);
        }
        let d = decode(c2s[1], Direction::C2S);
        assert_eq!(
            d.msg.unwrap().summary,
            "report id=2 dev=KN-A4CF12F0E1B2 seq=41 on 1432.6 W 231.4 V 6.19 A pf 1 123456.7 Wh"
        );
    }

    #[test]
    fn violations() {
        let codes = |s: &str, d| {
            decode(s, d)
                .notes
                .iter()
                .map(|n| n.code)
                .collect::<Vec<_>>()
        };
        assert_eq!(codes("{\"t\":\"hel", Direction::C2S), ["kinetid-not-json"]);
        assert!(decode("{\"t\":\"hel", Direction::C2S).incomplete_json);
        assert_eq!(codes("{}", Direction::C2S), ["kinetid-no-type"]);
        assert_eq!(
            codes(r#"{"t":"ack"}"#, Direction::S2C),
            ["kinetid-reply-without-re"]
        );
        assert_eq!(
            codes(r#"{"t":"dance"}"#, Direction::C2S),
            ["kinetid-unknown-type"]
        );
        assert!(codes(
            r#"{"t":"state","id":3,"dev":"KN-1","on":true}"#,
            Direction::C2S
        )
        .contains(&Code::KinetidBadDeviceId));
    }
}
