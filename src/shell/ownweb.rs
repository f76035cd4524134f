//! The tool's own web traffic (its page, API, event stream and metrics)
//! kept out of the output, the inspector and the counts, unless
//! `--show-http` asks for it. A browser polling `/api/devices` would
//! otherwise print a 20-line HTTP block a second and be counted as a
//! device connection. The bytes still go to `--record`.
//!
//! A connection's events are held back from its first byte until its
//! request line names the path: any other path (`/ws`, a typo, a scanner)
//! is shown at once with what was held. A request for one of the tool's
//! own paths stays held until its head is complete: a plain request is then
//! dropped from view, an upgrade (a device that uses `/` as its path) is
//! shown in full.

use kinetid_wsdump::annotate::Event;

/// Events held while a request line is read: at most this many, then they
/// are shown (a head is one event, so only a pathological request gets here).
const HELD_MAX: usize = 64;
/// A request line longer than this is not the tool's own: shown.
const LINE_MAX: usize = 2048;

/// Paths the tool's own web server answers on (listen's page, the plug
/// page, the API, the event stream, metrics; the proxy's `/api/`).
pub fn own_path(path: &str) -> bool {
    matches!(
        path,
        "/" | "/index.html" | "/client" | "/metrics" | "/favicon.ico"
    ) || path.starts_with("/api/")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// The request line is not yet read: events wait.
    Deciding,
    /// A request for an own path: events wait for the head to complete.
    OwnPath,
    /// Shown as any connection.
    Shown,
    /// The tool's own web request: not shown, not counted.
    Hidden,
}

/// Per connection: whether its events are shown.
#[derive(Debug)]
pub struct OwnWeb {
    state: State,
    held: Vec<Event>,
}

impl OwnWeb {
    /// With `show` (`--show-http`) every connection is shown as it goes.
    pub fn new(show: bool) -> OwnWeb {
        OwnWeb {
            state: if show { State::Shown } else { State::Deciding },
            held: Vec::new(),
        }
    }

    /// Events to show now, of `ev` (the rest is held or dropped).
    pub fn pass<'a>(&mut self, ev: &'a [Event]) -> Option<&'a [Event]> {
        match self.state {
            State::Shown => Some(ev),
            State::Hidden => None,
            State::Deciding | State::OwnPath => {
                self.held.extend_from_slice(ev);
                None
            }
        }
    }

    /// Held events that must be shown now (the caller shows them before
    /// anything else): after each read of the head, given the bytes so far.
    pub fn head_bytes(&mut self, raw: &[u8]) -> Vec<Event> {
        if self.state != State::Deciding {
            return self.overflow();
        }
        match raw.iter().position(|&b| b == b'\n') {
            None if raw.len() < LINE_MAX => self.overflow(),
            None => self.show(),
            Some(i) => {
                let line = String::from_utf8_lossy(&raw[..i]);
                let target = line.split(' ').nth(1).unwrap_or("");
                let path = target.split('?').next().unwrap_or("");
                if own_path(path) {
                    self.state = State::OwnPath;
                    self.overflow()
                } else {
                    self.show()
                }
            }
        }
    }

    fn overflow(&mut self) -> Vec<Event> {
        if self.held.len() > HELD_MAX {
            self.show()
        } else {
            Vec::new()
        }
    }

    /// The head is complete and is a plain request for this path: hidden
    /// when it is one of the tool's own. True when it was hidden.
    pub fn plain_request(&mut self, path: &str) -> bool {
        if matches!(self.state, State::Deciding | State::OwnPath) && own_path(path) {
            self.state = State::Hidden;
            self.held = Vec::new();
            true
        } else {
            false
        }
    }

    /// Whatever happened, show from now on: the held events, to be shown
    /// first (empty once hidden or shown).
    pub fn show(&mut self) -> Vec<Event> {
        if matches!(self.state, State::Deciding | State::OwnPath) {
            self.state = State::Shown;
            std::mem::take(&mut self.held)
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinetid_wsdump::annotate::{Annotator, Config};
    use kinetid_wsdump::wire::frame::Direction;

    fn events(bytes: &[u8]) -> Vec<Event> {
        let mut a = Annotator::new(1, Config::default());
        let mut ev = Vec::new();
        a.open("127.0.0.1:1", None, &mut ev);
        a.feed(Direction::C2S, bytes, None, &mut ev);
        ev
    }

    #[test]
    fn the_page_is_hidden_and_a_device_path_is_shown_at_once() {
        let req = b"GET /api/devices HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut w = OwnWeb::new(false);
        let ev = events(req);
        assert!(w.pass(&ev).is_none());
        assert!(w.head_bytes(req).is_empty());
        assert!(w.plain_request("/api/devices"));
        assert!(w.show().is_empty());
        assert!(w.pass(&ev).is_none());

        let req = b"GET /ws HTTP/1.1\r\nHost: x\r\n";
        let mut w = OwnWeb::new(false);
        let ev = events(req);
        assert!(w.pass(&ev).is_none());
        assert_eq!(w.head_bytes(req).len(), ev.len());
        assert!(w.pass(&ev).is_some());
        assert!(!w.plain_request("/ws"));
    }

    #[test]
    fn an_upgrade_on_an_own_path_is_shown_and_show_http_shows_all() {
        let req = b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n";
        let mut w = OwnWeb::new(false);
        let ev = events(req);
        let _ = w.pass(&ev);
        assert!(w.head_bytes(req).is_empty());
        assert_eq!(w.show().len(), ev.len());
        let mut w = OwnWeb::new(true);
        assert!(w.pass(&ev).is_some());
        assert!(!w.plain_request("/api/devices"));
        // A request line that never ends is not kept from view.
        let mut w = OwnWeb::new(false);
        let _ = w.pass(&ev);
        assert_eq!(w.head_bytes(&[b'G'; LINE_MAX]).len(), ev.len());
    }
}
