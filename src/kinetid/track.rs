//! What a Kinetid conversation says over time, across messages: reports
//! off the period boundary or too frequent, `seq` gaps, duplicates and
//! resets, an energy counter going backwards, a `state` that contradicts
//! the `switch` it answers. One [`Tracker`] per connection, fed every
//! decoded message in order; pure, like the rest of the annotator.

use super::msg::Msg;
use super::{Message, SPEC};
use crate::note::{Code, Note};
use crate::wire::frame::Direction;
use crate::Map as HashMap;
use std::collections::VecDeque;

/// Seconds a direct report may sit off its period boundary (timers fire a
/// little late; relayed reports wait out the power line and are not judged).
const BOUNDARY_SLACK: u64 = 2;

#[derive(Debug, Default)]
struct Plug {
    seq: u64,
    ts: Option<u64>,
    energy: Option<f64>,
    recent: VecDeque<u64>,
}

/// The per-connection memory of a Kinetid conversation.
#[derive(Debug, Default)]
pub struct Tracker {
    /// The report period in force: the welcome's `period_s`, else the
    /// hello's, else the contract's 60 s once a hello or welcome was seen.
    /// Unknown (no boundary judged) on a connection whose start was not
    /// captured: a period never seen is not assumed.
    period: Option<u64>,
    plugs: HashMap<String, Plug>,
    /// Switch commands seen, by id: the plug and what was asked.
    switches: HashMap<u64, (String, Option<bool>)>,
}

impl Tracker {
    /// Judge one decoded message sent in direction `dir`.
    pub fn observe(&mut self, m: &Message, dir: Direction) -> Vec<Note> {
        let mut notes = Vec::new();
        self.observe_into(m, dir, &mut notes);
        notes
    }

    /// [`Tracker::observe`], its notes added to `notes` (a message's own,
    /// without a vector of their own on the way).
    pub fn observe_into(&mut self, m: &Message, dir: Direction, notes: &mut Vec<Note>) {
        match (&m.typed, dir) {
            (Some(Msg::Hello(h)), Direction::C2S) => {
                self.period = Some(h.period_s.filter(|p| *p >= 1).unwrap_or(60));
            }
            (Some(Msg::Welcome(w)), Direction::S2C) => {
                if let Some(p) = w.period_s.filter(|p| *p >= 1) {
                    self.period = Some(p);
                } else if self.period.is_none() {
                    self.period = Some(60);
                }
            }
            (Some(Msg::Report(r)), Direction::C2S) => {
                if let (Some(dev), Some(seq)) = (&r.dev, r.seq) {
                    self.report(dev, seq, r.ts, r.energy_wh, r.via.is_none(), notes);
                }
            }
            (Some(Msg::Switch(s)), Direction::S2C) => {
                if let (Some(id), Some(dev)) = (s.id, &s.dev) {
                    if self.switches.len() >= 1024 {
                        self.switches.clear();
                    }
                    self.switches
                        .insert(id, (dev.clone(), s.target().flatten()));
                }
            }
            (Some(Msg::State(st)), Direction::C2S) => {
                if let (Some(re), Some(on)) = (st.re, st.on) {
                    if let Some((dev, Some(asked))) = self.switches.remove(&re) {
                        if asked != on && st.dev.as_deref() == Some(dev.as_str()) {
                            notes.push(Note::error(
                                Code::KinetidStateContradicts,
                                SPEC,
                                format!("switch {re} asked {dev} for on={asked}, but this state answering it says on={on}: the relay did not move, or the firmware reports the old state"),
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn report(
        &mut self,
        dev: &str,
        seq: u64,
        ts: Option<u64>,
        energy: Option<f64>,
        direct: bool,
        notes: &mut Vec<Note>,
    ) {
        if let (Some(ts), true, Some(period)) = (ts, direct, self.period) {
            let off = ts % period;
            let off = off.min(period - off);
            if off > BOUNDARY_SLACK {
                // A plug on a free-running timer says this on every
                // report: written in place, not through the formatter.
                let mut m = String::with_capacity(160);
                m.push_str("report ts ");
                m.push_str(itoa::Buffer::new().format(ts));
                m.push_str(" is ");
                m.push_str(itoa::Buffer::new().format(off));
                m.push_str(" s off the ");
                m.push_str(itoa::Buffer::new().format(period));
                m.push_str("-s period boundary: the firmware reports on a free-running timer instead of the wall clock's boundary");
                notes.push(Note::warning(Code::KinetidReportOffBoundary, SPEC, m));
            }
        }
        let Some(p) = self.plugs.get_mut(dev) else {
            self.plugs.insert(
                dev.to_string(),
                Plug {
                    seq,
                    ts,
                    energy,
                    recent: VecDeque::from([seq]),
                },
            );
            return;
        };
        // Every seq remembered is at most the highest: a higher one is new.
        if seq <= p.seq && p.recent.contains(&seq) {
            notes.push(Note::warning(
                Code::KinetidSeqDuplicate,
                SPEC,
                format!("{dev} sent seq {seq} again on this connection: a resend of a report that was already acknowledged, or a counter that did not advance"),
            ));
            return;
        }
        if seq < p.seq {
            notes.push(Note::warning(
                Code::KinetidSeqReset,
                SPEC,
                format!("{dev}'s seq went from {} back to {seq}: the plug restarted its counter (a reboot that lost it); the contract keeps seq counting up across reconnects", p.seq),
            ));
        } else if seq > p.seq + 1 {
            notes.push(Note::warning(
                Code::KinetidSeqGap,
                SPEC,
                format!("{dev}'s seq jumped from {} to {seq}: {} reports never arrived (lost, or dropped from a full resend queue)", p.seq, seq - p.seq - 1),
            ));
        }
        if let (Some(e), Some(prev)) = (energy, p.energy) {
            if seq > p.seq && e + 0.05 < prev {
                notes.push(Note::error(
                    Code::KinetidEnergyBackwards,
                    SPEC,
                    format!("{dev}'s energy counter went from {prev} Wh down to {e} Wh; it may only grow (a counter that was reset, or a float that overflowed)"),
                ));
            }
        }
        if let (Some(t), Some(prev), true, Some(period)) = (ts, p.ts, direct, self.period) {
            if seq > p.seq && t > prev && t - prev < period {
                notes.push(Note::warning(
                    Code::KinetidReportTooFrequent,
                    SPEC,
                    format!(
                        "{dev} reported {} s after its previous report; the period is {period} s",
                        t - prev
                    ),
                ));
            }
        }
        if seq > p.seq {
            p.seq = seq;
            p.ts = ts.or(p.ts);
            p.energy = energy.or(p.energy);
        }
        p.recent.push_back(seq);
        if p.recent.len() > 256 {
            p.recent.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinetid::decode;

    fn run(script: &[(Direction, &str)]) -> Vec<Code> {
        let mut t = Tracker::default();
        script
            .iter()
            .flat_map(|(d, s)| t.observe(&decode(s, *d).msg.unwrap(), *d))
            .map(|n| n.code)
            .collect()
    }

    const HELLO: (Direction, &str) = (
        Direction::C2S,
        r#"{"t":"hello","id":1,"dev":"KN-A4CF12F0E1B2","period_s":60}"#,
    );

    fn rep(seq: u64, ts: u64, e: f64) -> String {
        format!(
            r#"{{"t":"report","id":{},"dev":"KN-A4CF12F0E1B2","ts":{ts},"seq":{seq},"on":true,"power_w":1,"energy_wh":{e}}}"#,
            seq + 1
        )
    }

    #[test]
    fn a_good_conversation_raises_nothing() {
        let r: Vec<String> = (1..5)
            .map(|i| rep(i, 1767225600 + 60 * i, i as f64))
            .collect();
        let mut s = vec![HELLO];
        s.extend(r.iter().map(|x| (Direction::C2S, x.as_str())));
        s.push((
            Direction::S2C,
            r#"{"t":"switch","id":9001,"dev":"KN-A4CF12F0E1B2","on":false}"#,
        ));
        s.push((
            Direction::C2S,
            r#"{"t":"state","re":9001,"dev":"KN-A4CF12F0E1B2","on":false,"was_on":true}"#,
        ));
        assert!(run(&s).is_empty(), "{:?}", run(&s));
    }

    #[test]
    fn timing_and_sequence_mistakes_are_named() {
        let c = Direction::C2S;
        let (a, b) = (rep(7, 1767225600, 10.0), rep(11, 1767225660, 11.0));
        assert_eq!(run(&[HELLO, (c, &a), (c, &b)]), [Code::KinetidSeqGap]);
        let b = rep(7, 1767225660, 11.0);
        assert_eq!(run(&[HELLO, (c, &a), (c, &b)]), [Code::KinetidSeqDuplicate]);
        let b = rep(1, 1767225660, 11.0);
        assert_eq!(run(&[HELLO, (c, &a), (c, &b)]), [Code::KinetidSeqReset]);
        let b = rep(8, 1767225660, 9.0);
        assert_eq!(
            run(&[HELLO, (c, &a), (c, &b)]),
            [Code::KinetidEnergyBackwards]
        );
        let b = rep(8, 1767225630, 11.0);
        assert_eq!(
            run(&[HELLO, (c, &a), (c, &b)]),
            [
                Code::KinetidReportOffBoundary,
                Code::KinetidReportTooFrequent
            ]
        );
        let sw = (
            Direction::S2C,
            r#"{"t":"switch","id":5,"dev":"KN-A4CF12F0E1B2","on":false}"#,
        );
        let st = (
            c,
            r#"{"t":"state","re":5,"dev":"KN-A4CF12F0E1B2","on":true,"was_on":true}"#,
        );
        assert_eq!(run(&[HELLO, sw, st]), [Code::KinetidStateContradicts]);
    }
}
