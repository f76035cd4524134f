//! Which events to show: by connection, by device, by time, or only those
//! with a warning or an error. `replay` and `listen` share it; it decides
//! what is printed, never what is counted or answered.

use crate::annotate::{Event, EventKind};
use crate::note::Severity;
use crate::Map as HashMap;

/// Events of a connection held while its device is not known yet, at most.
const HELD: usize = 256;

/// What to show.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Only these connections (empty: all).
    pub conns: Vec<u64>,
    /// Only connections that carry this device (its own messages or a
    /// passive plug's it relays).
    pub device: Option<String>,
    /// Only events with a note of severity warning or error (and heads
    /// that were refused).
    pub only_notes: bool,
    /// Only events at or after this Unix time (events without a time pass).
    pub since: Option<f64>,
    /// Only events at or before this Unix time.
    pub until: Option<f64>,
}

impl Spec {
    /// Does it let everything through?
    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
            && self.device.is_none()
            && !self.only_notes
            && self.since.is_none()
            && self.until.is_none()
    }
}

/// A connection's standing with `--device`.
#[derive(Debug)]
enum Dev {
    /// Not known yet: its events so far.
    Unknown(Vec<Event>),
    Matches,
}

/// A filter over a stream of events.
#[derive(Debug, Default)]
pub struct Filter {
    spec: Spec,
    devs: HashMap<u64, Dev>,
}

/// Does the event carry a warning or an error?
pub fn has_problem(e: &Event) -> bool {
    match &e.kind {
        EventKind::HeadError(_) => true,
        EventKind::Request {
            verdict: Some(v), ..
        } if !v.accepted() => true,
        EventKind::Response { verdict, .. } if verdict.error.is_some() => true,
        _ => e.notes().iter().any(|n| n.severity != Severity::Info),
    }
}

/// Device ids an event names.
fn devices(e: &Event) -> impl Iterator<Item = &str> {
    let m = match &e.kind {
        EventKind::Message(m) => m.kinetid.as_ref(),
        _ => None,
    };
    m.and_then(|k| k.dev.as_deref()).into_iter()
}

impl Filter {
    /// A filter for `spec`.
    pub fn new(spec: Spec) -> Self {
        Filter {
            spec,
            devs: HashMap::default(),
        }
    }

    /// Is this a filter that lets everything through?
    pub fn is_empty(&self) -> bool {
        self.spec.is_empty()
    }

    fn simple(&self, e: &Event) -> bool {
        let s = &self.spec;
        (s.conns.is_empty() || s.conns.contains(&e.conn))
            && (!s.only_notes || has_problem(e))
            && s.since.is_none_or(|t| e.time.is_none_or(|x| x >= t))
            && s.until.is_none_or(|t| e.time.is_none_or(|x| x <= t))
    }

    /// Pass `e` on to `out` if it is to be shown (held back while its
    /// connection's device is not known yet).
    pub fn pass(&mut self, e: Event, out: &mut Vec<Event>) {
        let Some(want) = self.spec.device.clone() else {
            if self.simple(&e) {
                out.push(e);
            }
            return;
        };
        let conn = e.conn;
        let ended = matches!(e.kind, EventKind::End { .. });
        let named = devices(&e).any(|d| d == want);
        let st = self
            .devs
            .entry(conn)
            .or_insert_with(|| Dev::Unknown(Vec::new()));
        match st {
            Dev::Matches => {
                if self.simple(&e) {
                    out.push(e);
                }
            }
            Dev::Unknown(held) if named => {
                let held = std::mem::take(held);
                *st = Dev::Matches;
                for h in held.into_iter().chain(std::iter::once(e)) {
                    if self.simple(&h) {
                        out.push(h);
                    }
                }
            }
            Dev::Unknown(held) => {
                if held.len() >= HELD {
                    held.remove(0);
                }
                held.push(e);
            }
        }
        if ended {
            // A connection that ended without naming the device is dropped.
            if let Some(Dev::Unknown(_)) = self.devs.get(&conn) {
                self.devs.remove(&conn);
            }
        }
    }
}

/// A time for `--since`/`--until`: Unix seconds (`1767225600.5`) or UTC as
/// `2026-01-01T00:00:00Z` (fractions of a second allowed).
pub fn parse_time(s: &str) -> Result<f64, String> {
    if let Ok(t) = s.parse::<f64>() {
        if t.is_finite() {
            return Ok(t);
        }
    }
    let bad = || format!("{s:?} is neither Unix seconds nor a UTC time like 2026-01-01T00:00:00Z");
    let s2 = s.strip_suffix('Z').ok_or_else(bad)?;
    let (date, time) = s2.split_once('T').ok_or_else(bad)?;
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let (hms, frac) = match time.split_once('.') {
        Some((a, f)) => (a, format!("0.{f}").parse::<f64>().map_err(|_| bad())?),
        None => (time, 0.0),
    };
    let t: Vec<i64> = hms
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    if d.len() != 3
        || t.len() != 3
        || !(1..=12).contains(&d[1])
        || !(1..=31).contains(&d[2])
        || t[0] > 23
        || t[1] > 59
        || t[2] > 60
    {
        return Err(bad());
    }
    // Days from the civil date (proleptic Gregorian).
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok((days * 86_400 + t[0] * 3600 + t[1] * 60 + t[2]) as f64 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1767225600").unwrap(), 1_767_225_600.0);
        assert_eq!(parse_time("2026-01-01T00:00:00Z").unwrap(), 1_767_225_600.0);
        assert_eq!(parse_time("1970-01-01T00:00:01.5Z").unwrap(), 1.5);
        assert_eq!(parse_time("2000-03-01T00:00:00Z").unwrap(), 951_868_800.0);
        assert!(parse_time("yesterday").is_err());
        assert!(parse_time("2026-13-01T00:00:00Z").is_err());
    }
}
