//! The probe against scripted devices, case by case.

use super::*;
use crate::annotate::{Annotator, Config};
use crate::wire::frame::Direction;

/// A scripted well-behaved device: feeds its bytes to an annotator and
/// the probe, and answers what the probe writes as a correct plug does.
struct Rig {
    ann: Annotator,
    probe: Probe,
    t0: Instant,
}

const DEV: &str = "KN-A4CF12F0E1B2";

impl Rig {
    fn new(id: &str) -> Rig {
        let c = suite().into_iter().find(|c| c.id == id).unwrap();
        let t0 = Instant::now();
        Rig {
            ann: Annotator::new(1, Config::default()),
            probe: Probe::new(c, t0),
            t0,
        }
    }
    fn device(&mut self, b: &[u8], ms: u64) -> Vec<Act> {
        let mut ev = Vec::new();
        self.ann.feed(Direction::C2S, b, None, &mut ev);
        let acts = self
            .probe
            .on_events(&ev, self.t0 + Duration::from_millis(ms), 1.0e9);
        for a in &acts {
            if let Act::Write(b) | Act::WriteBytewise(b) = a {
                let mut e = Vec::new();
                self.ann.feed(Direction::S2C, b, None, &mut e);
            }
        }
        acts
    }
    fn connect(&mut self) -> Vec<Act> {
        let req = handshake::client_request(
            "127.0.0.1:1",
            "/ws",
            "dGhlIHNhbXBsZSBub25jZQ==",
            &["kinetid.v1"],
        );
        self.device(&req, 0)
    }
    /// The device connects again at `ms` (a new connection: a new
    /// annotator) and says hello.
    fn back(&mut self, ms: u64) {
        self.probe.on_reconnect(self.t0 + Duration::from_millis(ms));
        self.ann = Annotator::new(2, Config::default());
        self.connect();
        self.hello();
    }
    fn hello(&mut self) -> Vec<Act> {
        let h = format!(
            r#"{{"t":"hello","id":1,"dev":"{DEV}","fw":"t","role":"active","period_s":1,"passives":[]}}"#
        );
        self.device(&client(OpCode::Text, h.as_bytes()), 10)
    }
}

fn client(op: OpCode, p: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_frame(&mut v, op, p, EncodeOptions::client());
    v
}

fn written(acts: &[Act]) -> Vec<u8> {
    acts.iter()
        .flat_map(|a| match a {
            Act::Write(b) | Act::WriteBytewise(b) => b.clone(),
            Act::CloseTcp => Vec::new(),
        })
        .collect()
}

#[test]
fn every_case_has_a_unique_id_and_a_rule() {
    let s = suite();
    let mut ids: Vec<_> = s.iter().map(|c| c.id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), s.len());
    assert!(s.iter().all(|c| !c.rule.is_empty()
        && c.id
            .starts_with(c.family.as_str().split('-').next().unwrap())));
}

#[test]
fn backoff_must_double_from_about_a_second() {
    let t0 = Instant::now();
    let at = |s: &[f64]| -> Vec<Instant> {
        s.iter().map(|&x| t0 + Duration::from_secs_f64(x)).collect()
    };
    assert!(matches!(
        backoff_verdict(&at(&[0.0, 2.2, 7.9, 16.4])),
        Verdict::Pass(_)
    ));
    // Constant, none at all, and starting far too late.
    for tries in [
        &[0.0, 1.2, 2.4, 3.6][..],
        &[0.0, 0.1, 0.2, 0.3],
        &[0.0, 20.0, 40.0, 80.0],
    ] {
        assert!(
            matches!(backoff_verdict(&at(tries)), Verdict::Fail(_)),
            "{tries:?}"
        );
    }
    // At the 60 s cap the waits stop doubling.
    assert!(matches!(
        backoff_verdict(&at(&[0.0, 2.0, 6.0, 14.0, 30.0, 62.0, 122.0, 182.0])),
        Verdict::Pass(_)
    ));
}

#[test]
fn sni_must_name_the_host_unless_it_is_an_address() {
    let s = |sni: Option<&str>| Some(("TLS 1.3".to_string(), sni.map(str::to_string)));
    let pass = |v: Verdict| matches!(v, Verdict::Pass(_));
    assert!(pass(tls_session_verdict(
        s(Some("localhost")).as_ref(),
        Some("localhost:8443")
    )));
    assert!(pass(tls_session_verdict(
        s(None).as_ref(),
        Some("127.0.0.1:8443")
    )));
    assert!(pass(tls_session_verdict(
        s(None).as_ref(),
        Some("[::1]:8443")
    )));
    assert!(!pass(tls_session_verdict(
        s(None).as_ref(),
        Some("plug.example:8443")
    )));
    assert!(!pass(tls_session_verdict(
        s(Some("other.example")).as_ref(),
        Some("plug.example")
    )));
    assert!(matches!(
        tls_session_verdict(None, Some("localhost")),
        Verdict::NotObserved(_)
    ));
}

#[test]
fn a_101_in_other_case_is_still_one_a_client_accepts() {
    let mut r = Rig::new("handshake-other-case");
    let head = written(&r.connect());
    let text = String::from_utf8_lossy(&head);
    assert!(text.contains("UPGRADE:   WebSocket") && text.contains("X-Certify-Case"));
    let handshake::HeadParse::Complete(h) = handshake::parse_head(&head, Default::default()) else {
        panic!("{text}")
    };
    let v =
        handshake::check_response_with(&h, Some("dGhlIHNhbXBsZSBub25jZQ=="), &["kinetid.v1"], &[]);
    assert!(
        v.status == 101 && v.error.is_none(),
        "{text}: {:?}",
        v.error
    );
}

#[test]
fn hello_passes_and_the_connection_is_closed_normally() {
    let mut r = Rig::new("kinetid-hello");
    let a = r.connect();
    assert!(String::from_utf8_lossy(&written(&a)).starts_with("HTTP/1.1 101"));
    let a = r.hello();
    assert!(
        matches!(r.probe.verdict(), Some(Verdict::Pass(_))),
        "{:?}",
        r.probe.verdict()
    );
    // welcome, then our Close.
    let w = written(&a);
    assert!(String::from_utf8_lossy(&w).contains(r#""t":"welcome""#));
    assert_eq!(w[w.len() - 2 - 2 - 18..][0], 0x88);
    r.device(&client(OpCode::Close, &1000u16.to_be_bytes()), 20);
    assert!(r.probe.is_done());
}

#[test]
fn a_device_that_accepts_a_wrong_accept_fails_and_one_that_drops_passes() {
    let mut r = Rig::new("handshake-wrong-accept");
    let a = r.connect();
    let head = String::from_utf8_lossy(&written(&a)).into_owned();
    assert!(
        head.starts_with("HTTP/1.1 101")
            && !head.contains(&handshake::accept_key("dGhlIHNhbXBsZSBub25jZQ=="))
    );
    r.hello();
    assert!(matches!(r.probe.verdict(), Some(Verdict::Fail(_))));
    let mut r = Rig::new("handshake-wrong-accept");
    r.connect();
    r.probe.on_eof(r.t0 + Duration::from_millis(5));
    assert!(
        matches!(r.probe.verdict(), Some(Verdict::Pass(_))),
        "{:?}",
        r.probe.verdict()
    );
}

#[test]
fn a_pong_must_echo_and_silence_fails_on_time() {
    let mut r = Rig::new("control-ping-payload");
    r.connect();
    let a = r.hello();
    assert!(written(&a)
        .windows(20)
        .any(|w| w == b"kinetid-certify-1f2e"));
    r.device(&client(OpCode::Pong, b""), 30);
    assert!(matches!(r.probe.verdict(), Some(Verdict::Fail(e)) if e.contains("carries")));
    let mut r = Rig::new("control-ping-payload");
    r.connect();
    r.hello();
    r.probe.on_tick(r.t0 + Duration::from_secs(11));
    assert!(matches!(r.probe.verdict(), Some(Verdict::Fail(e)) if e.contains("no pong")));
}

#[test]
fn a_switch_is_passed_by_its_state_and_the_next_report() {
    let mut r = Rig::new("kinetid-switch-off");
    r.connect();
    let a = r.hello();
    assert!(String::from_utf8_lossy(&written(&a)).contains(r#""on":false"#));
    let st = format!(
        r#"{{"t":"state","re":{SWITCH_ID},"dev":"{DEV}","on":false,"was_on":true,"src":"backend","ts":1}}"#
    );
    r.device(&client(OpCode::Text, st.as_bytes()), 40);
    assert!(r.probe.verdict().is_none(), "waits for the report");
    let rep = format!(
        r#"{{"t":"report","id":3,"dev":"{DEV}","ts":2,"seq":5,"on":false,"power_w":0.0,"energy_wh":1.0}}"#
    );
    r.device(&client(OpCode::Text, rep.as_bytes()), 900);
    assert!(
        matches!(r.probe.verdict(), Some(Verdict::Pass(_))),
        "{:?}",
        r.probe.verdict()
    );
}

#[test]
fn a_bad_frame_must_fail_the_connection_with_its_code() {
    let mut r = Rig::new("bad-masked-frame");
    r.connect();
    r.hello();
    r.device(&client(OpCode::Close, &1002u16.to_be_bytes()), 30);
    assert!(
        matches!(r.probe.verdict(), Some(Verdict::Pass(_))),
        "{:?}",
        r.probe.verdict()
    );
    // Invalid UTF-8: 1007 or 1002; a normal 1000 is no failure.
    let mut r = Rig::new("bad-invalid-utf8");
    r.connect();
    r.hello();
    r.device(&client(OpCode::Close, &1000u16.to_be_bytes()), 30);
    assert!(matches!(r.probe.verdict(), Some(Verdict::Fail(e)) if e.contains("1007")));
    // Dropping TCP without a Close fails the connection too (7.1.7).
    let mut r = Rig::new("bad-rsv1");
    r.connect();
    r.hello();
    r.probe.on_eof(r.t0 + Duration::from_millis(40));
    assert!(matches!(r.probe.verdict(), Some(Verdict::Pass(e)) if e.contains("7.1.7")));
}

#[test]
fn a_reconnect_is_timed_from_the_drop() {
    let mut r = Rig::new("resilience-reconnect");
    r.connect();
    let a = r.hello();
    assert!(a.contains(&Act::CloseTcp));
    assert!(r.probe.awaits_connection());
    r.probe.on_reconnect(r.t0 + Duration::from_millis(60));
    assert!(matches!(r.probe.verdict(), Some(Verdict::Fail(e)) if e.contains("no back-off")));
}

fn report(seq: u64, id: u64) -> Vec<u8> {
    let r = format!(
        r#"{{"t":"report","id":{id},"dev":"{DEV}","ts":{},"seq":{seq},"on":true,"power_w":1.0,"energy_wh":1.0}}"#,
        1000 + seq
    );
    client(OpCode::Text, r.as_bytes())
}

#[test]
fn a_resend_is_judged_on_the_next_connection_not_on_what_shared_the_drop_read() {
    // A plug back from a long back-off resends a burst at once: the probe
    // drops the link on the first report, and the second, in the same read
    // on the dropped connection, says nothing about the resend.
    let mut r = Rig::new("resilience-resend");
    r.connect();
    r.hello();
    let mut burst = report(56, 2);
    burst.extend(report(57, 3));
    let a = r.device(&burst, 20);
    assert!(a.contains(&Act::CloseTcp));
    assert!(r.probe.verdict().is_none(), "{:?}", r.probe.verdict());
    assert!(r.probe.awaits_connection());
    // Back: 56 again first is the pass.
    r.back(1200);
    r.device(&report(56, 2), 1300);
    assert!(
        matches!(r.probe.verdict(), Some(Verdict::Pass(e)) if e.contains("seq 56")),
        "{:?}",
        r.probe.verdict()
    );
    // A plug that comes back with 57 and never 56 forgot it.
    let mut r = Rig::new("resilience-resend");
    r.connect();
    r.hello();
    r.device(&report(56, 2), 20);
    r.back(1200);
    r.device(&report(57, 2), 1300);
    assert!(
        matches!(r.probe.verdict(), Some(Verdict::Fail(e)) if e.contains("forgotten")),
        "{:?}",
        r.probe.verdict()
    );
}
