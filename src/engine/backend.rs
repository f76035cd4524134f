//! The Kinetid backend's side of one connection, without I/O.
//!
//! [`Backend`] reads each complete message a device sends and answers it by
//! the contract: `hello` gets `welcome` (or `error unknown_device` and close
//! 1008), reports and unsolicited states get `ack`, malformed messages get
//! `error bad_request`, a connection that does not say `hello` in time is
//! closed with 1008. What concerns more than this connection (the device
//! table, commands waiting for an answer) comes out as [`Effect`]s for the
//! driver to apply to its shared state.

use crate::annotate::MessageEvent;
use crate::kinetid::msg::{Msg, Report};
use crate::kinetid::{self, is_device_id};
use crate::wire::frame::OpCode;
use serde_json::Value;
use std::time::{Duration, Instant};

/// How the backend behaves.
#[derive(Debug, Clone)]
pub struct BackendConfig {
    /// Time allowed for `hello` after the upgrade.
    pub hello_timeout: Duration,
    /// Device ids refused at `hello`.
    pub refuse: Vec<String>,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Send a text message to the device.
    Send(String),
    /// Close the connection.
    Close(u16, &'static str),
    /// Register `dev` as carried by this connection.
    Claim {
        /// The device.
        dev: String,
        /// `active`, `passive` or `unknown`.
        role: &'static str,
        /// The active plug relaying it.
        via: Option<String>,
        /// Whether the claim wins over another connection's (a `hello`) or
        /// not (a relayed report).
        take_over: bool,
    },
    /// A report for the device table (the table drops duplicates by seq).
    Reading(Report),
    /// A relay state for the device table.
    Relay {
        /// The device.
        dev: String,
        /// On?
        on: bool,
    },
    /// The device answered command `re`: its `state` or its `error`.
    Answer {
        /// The command's id.
        re: u64,
        /// `Ok(state)` or `Err(error)`, as JSON.
        result: Result<Value, Value>,
    },
}

/// The role a device claims, kept only when it is one the contract names.
pub fn role_of(s: Option<&str>) -> &'static str {
    match s {
        Some("active") | None => "active",
        Some("passive") => "passive",
        Some(_) => "unknown",
    }
}

/// One connection's backend.
#[derive(Debug)]
pub struct Backend {
    cfg: BackendConfig,
    hello: Option<String>,
    hello_deadline: Option<Instant>,
}

const NEED_T: &str = "expected a JSON object with field t";

impl Backend {
    /// A backend for a connection upgraded at `now`.
    pub fn new(cfg: BackendConfig, now: Instant) -> Backend {
        // `Duration::MAX` (no deadline) must not overflow the clock.
        let hello_deadline = now.checked_add(cfg.hello_timeout);
        Backend {
            cfg,
            hello: None,
            hello_deadline,
        }
    }

    /// The device that said `hello` on this connection.
    pub fn device(&self) -> Option<&str> {
        self.hello.as_deref()
    }

    /// When [`Backend::on_tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.hello_deadline
    }

    /// Timers: `hello` must come in time.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Effect> {
        match self.hello_deadline {
            Some(d) if now >= d => {
                self.hello_deadline = None;
                vec![Effect::Close(1008, "no hello within the time allowed")]
            }
            _ => Vec::new(),
        }
    }

    fn bad_request(re: Option<u64>, dev: Option<&str>, why: &str) -> Effect {
        Effect::Send(kinetid::error(re, dev, "bad_request", why))
    }

    /// A complete message from the device, at Unix time `unix`.
    pub fn on_message(&mut self, m: &MessageEvent, unix: f64) -> Vec<Effect> {
        let Some(k) = &m.kinetid else {
            let why = if m.opcode == OpCode::Binary {
                "binary messages are not part of kinetid.v1"
            } else {
                NEED_T
            };
            return vec![Self::bad_request(None, None, why)];
        };
        if k.t.is_empty() {
            return vec![Self::bad_request(None, None, NEED_T)];
        }
        if self.hello.is_none() && k.t != "hello" {
            return vec![
                Self::bad_request(k.id, None, "the first message must be hello"),
                Effect::Close(1008, "first message was not hello"),
            ];
        }
        match &k.typed {
            Some(Msg::Hello(h)) => self.hello(h, unix),
            Some(Msg::Report(r)) => self.report(r),
            Some(Msg::State(s)) => self.state(s, k.value.as_ref().unwrap_or(&Value::Null)),
            Some(Msg::Error(e)) => {
                e.re.map(|re| Effect::Answer {
                    re,
                    result: Err(k.value.clone().unwrap_or(Value::Null)),
                })
                .into_iter()
                .collect()
            }
            Some(Msg::Ack(_) | Msg::Welcome(_)) => Vec::new(),
            Some(Msg::Switch(_)) | None => vec![Self::bad_request(
                k.id,
                None,
                &format!("unknown message type {:?}", k.t),
            )],
        }
    }

    fn hello(&mut self, h: &kinetid::msg::Hello, unix: f64) -> Vec<Effect> {
        let dev = h.dev.clone().unwrap_or_default();
        if !is_device_id(&dev) || self.cfg.refuse.contains(&dev) {
            let e = kinetid::error(
                h.id,
                Some(&dev),
                "unknown_device",
                "this backend does not know the device",
            );
            return vec![Effect::Send(e), Effect::Close(1008, "unknown device")];
        }
        let mut out = vec![Effect::Claim {
            dev: dev.clone(),
            role: role_of(h.role.as_deref()),
            via: None,
            take_over: true,
        }];
        for p in h.passives.iter().flatten() {
            out.push(Effect::Claim {
                dev: p.clone(),
                role: "passive",
                via: Some(dev.clone()),
                take_over: true,
            });
        }
        self.hello = Some(dev);
        self.hello_deadline = None;
        let period = h.period_s.filter(|p| *p >= 1).unwrap_or(60);
        out.push(Effect::Send(kinetid::welcome(
            h.id.unwrap_or(0),
            unix as u64,
            period,
        )));
        out
    }

    fn report(&mut self, r: &Report) -> Vec<Effect> {
        let mut out = Vec::new();
        if let Some(dev) = &r.dev {
            // A relayed report registers its plug only through the active
            // plug that said hello here, and never takes another's id.
            if let (Some(via), Some(me)) = (&r.via, &self.hello) {
                if via == me && dev != me {
                    out.push(Effect::Claim {
                        dev: dev.clone(),
                        role: "passive",
                        via: Some(via.clone()),
                        take_over: false,
                    });
                }
            }
            out.push(Effect::Reading(r.clone()));
        }
        out.push(match r.id {
            Some(id) => Effect::Send(kinetid::ack(id)),
            None => Self::bad_request(None, r.dev.as_deref(), "report without id"),
        });
        out
    }

    fn state(&mut self, s: &kinetid::msg::State, raw: &Value) -> Vec<Effect> {
        let mut out = Vec::new();
        if let (Some(dev), Some(on)) = (&s.dev, s.on) {
            out.push(Effect::Relay {
                dev: dev.clone(),
                on,
            });
        }
        if let Some(re) = s.re {
            out.push(Effect::Answer {
                re,
                result: Ok(raw.clone()),
            });
        } else if let Some(id) = s.id {
            out.push(Effect::Send(kinetid::ack(id)));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::Direction;

    const DEV: &str = "KN-A4CF12F0E1B2";

    fn message(text: &str) -> MessageEvent {
        crate::engine::test_message(text, Direction::C2S)
    }

    fn backend() -> (Backend, Instant) {
        let t0 = Instant::now();
        let cfg = BackendConfig {
            hello_timeout: Duration::from_secs(10),
            refuse: vec!["KN-00000000DEAD".into()],
        };
        (Backend::new(cfg, t0), t0)
    }

    fn hello(b: &mut Backend) -> Vec<Effect> {
        b.on_message(
            &message(&format!(r#"{{"t":"hello","id":1,"dev":"{DEV}","fw":"1","role":"active","period_s":30,"passives":["KN-00A1B2C3D4E5"]}}"#)),
            1767225600.0,
        )
    }

    #[test]
    fn hello_gets_welcome_and_registers_the_home() {
        let (mut b, _) = backend();
        let out = hello(&mut b);
        assert_eq!(
            out,
            vec![
                Effect::Claim {
                    dev: DEV.into(),
                    role: "active",
                    via: None,
                    take_over: true
                },
                Effect::Claim {
                    dev: "KN-00A1B2C3D4E5".into(),
                    role: "passive",
                    via: Some(DEV.into()),
                    take_over: true
                },
                Effect::Send(r#"{"t":"welcome","re":1,"ts":1767225600,"period_s":30}"#.into()),
            ]
        );
        assert_eq!(b.device(), Some(DEV));
        assert_eq!(b.next_deadline(), None);
    }

    #[test]
    fn unknown_and_invalid_devices_are_refused_with_1008() {
        for dev in ["KN-00000000DEAD", "kn-bad", ""] {
            let (mut b, _) = backend();
            let out = b.on_message(
                &message(&format!(r#"{{"t":"hello","id":7,"dev":"{dev}"}}"#)),
                0.0,
            );
            assert!(
                matches!(&out[0], Effect::Send(s) if s.contains("unknown_device") && s.contains("\"re\":7"))
            );
            assert_eq!(out[1], Effect::Close(1008, "unknown device"));
        }
    }

    #[test]
    fn hello_must_come_first_and_in_time() {
        let (mut b, t0) = backend();
        let out = b.on_message(&message(r#"{"t":"report","id":2}"#), 0.0);
        assert_eq!(out[1], Effect::Close(1008, "first message was not hello"));
        let (mut b, t0b) = backend();
        assert!(b.on_tick(t0b + Duration::from_secs(9)).is_empty());
        assert_eq!(
            b.on_tick(t0b + Duration::from_secs(10)),
            vec![Effect::Close(1008, "no hello within the time allowed")]
        );
        assert!(b.on_tick(t0 + Duration::from_secs(11)).is_empty(), "once");
    }

    #[test]
    fn reports_and_unsolicited_states_are_acked_replies_are_not() {
        let (mut b, _) = backend();
        hello(&mut b);
        let out = b.on_message(
            &message(&format!(
                r#"{{"t":"report","id":2,"dev":"{DEV}","seq":41,"on":true,"power_w":5.0}}"#
            )),
            0.0,
        );
        assert!(matches!(&out[0], Effect::Reading(r) if r.seq == Some(41)));
        assert_eq!(out[1], Effect::Send(r#"{"t":"ack","re":2}"#.into()));
        let out = b.on_message(
            &message(&format!(
                r#"{{"t":"state","id":4,"dev":"{DEV}","on":false}}"#
            )),
            0.0,
        );
        assert_eq!(
            out,
            vec![
                Effect::Relay {
                    dev: DEV.into(),
                    on: false
                },
                Effect::Send(r#"{"t":"ack","re":4}"#.into())
            ]
        );
        let out = b.on_message(
            &message(&format!(
                r#"{{"t":"state","re":9001,"dev":"{DEV}","on":true}}"#
            )),
            0.0,
        );
        assert!(matches!(
            &out[1],
            Effect::Answer {
                re: 9001,
                result: Ok(_)
            }
        ));
        let out = b.on_message(
            &message(r#"{"t":"error","re":9002,"code":"unreachable"}"#),
            0.0,
        );
        assert!(matches!(
            &out[0],
            Effect::Answer {
                re: 9002,
                result: Err(_)
            }
        ));
        for quiet in [
            r#"{"t":"ack","re":1}"#,
            r#"{"t":"welcome","re":1}"#,
            r#"{"t":"error","code":"x"}"#,
        ] {
            assert!(b.on_message(&message(quiet), 0.0).is_empty(), "{quiet}");
        }
    }

    #[test]
    fn a_report_without_id_and_malformed_messages_get_bad_request_and_stay_open() {
        let (mut b, _) = backend();
        hello(&mut b);
        for m in [
            format!(r#"{{"t":"report","dev":"{DEV}"}}"#),
            "not json".into(),
            "{}".into(),
            r#"{"t":"dance","id":3}"#.into(),
        ] {
            let out = b.on_message(&message(&m), 0.0);
            let last = out.last().unwrap();
            assert!(
                matches!(last, Effect::Send(s) if s.contains("bad_request")),
                "{m}: {out:?}"
            );
            assert!(!out.iter().any(|e| matches!(e, Effect::Close(..))), "{m}");
        }
    }

    #[test]
    fn relayed_reports_claim_only_through_this_connections_active_plug() {
        let (mut b, _) = backend();
        hello(&mut b);
        let out = b.on_message(
            &message(&format!(
                r#"{{"t":"report","id":5,"dev":"KN-00A1B2C3D4E6","via":"{DEV}","seq":1}}"#
            )),
            0.0,
        );
        assert!(matches!(
            &out[0],
            Effect::Claim {
                take_over: false,
                ..
            }
        ));
        let out = b.on_message(
            &message(
                r#"{"t":"report","id":6,"dev":"KN-00A1B2C3D4E7","via":"KN-111111111111","seq":1}"#,
            ),
            0.0,
        );
        assert!(!out.iter().any(|e| matches!(e, Effect::Claim { .. })));
    }
}
