//! The HTTP upgrade as the annotator meets it: the request's verdict and
//! hints, the response's verdict, and what each decides about the bytes
//! that follow (frames, or a body, or whatever a refused upgrade sends).

use super::*;

impl Annotator {
    /// A complete request head from the client.
    pub(super) fn on_request(&mut self, head: HttpHead, out: &mut Vec<Event>) {
        let cfg = self.cfg;
        let dir = Direction::C2S;
        let kind = handshake::request_kind(&head);
        let verdict = (kind == RequestKind::WebSocket)
            .then(|| Box::new(handshake::check_request_with(&head, cfg.deflate)));
        if let Some(v) = &verdict {
            self.offered_ext = v.offered_extensions.clone();
            if v.offered_protocols
                .iter()
                .any(|p| p == crate::wire::handshake::KINETID_PROTOCOL)
            {
                self.kin = Some(true);
            }
        }
        self.upgrade_asked = Some(kind == RequestKind::WebSocket);
        match &verdict {
            Some(v) if v.accepted() => {
                self.key = v.accept.as_ref().map(|a| a.key.clone());
                self.protocols = v.offered_protocols.clone();
                self.c2s.phase = Phase::Frames;
            }
            Some(_) => self.c2s.phase = Phase::Raw("after a refused upgrade request".into()),
            None => {
                self.c2s.phase =
                    Phase::Raw("after a plain HTTP request (body or further requests)".into())
            }
        }
        let mut hints = head_hints(&head, None, None);
        if let Some(v) = &verdict {
            hints.extend(upgrade_hints(
                &head,
                &v.offered_protocols,
                self.server_port,
                cfg.kinetid && !cfg.kinetid_auto,
            ));
        }
        out.push(self.event(
            dir,
            0,
            EventKind::Request {
                head: Box::new(head),
                kind,
                verdict,
            },
        ));
        for note in hints {
            out.push(self.event(dir, 0, EventKind::Notice { note }));
        }
    }

    /// A complete response head from the server.
    pub(super) fn on_response(&mut self, head: HttpHead, out: &mut Vec<Event>) {
        let dir = Direction::S2C;
        let offered: Vec<&str> = self.protocols.iter().map(String::as_str).collect();
        let verdict = if self.upgrade_asked == Some(false) {
            handshake::plain_response(&head)
        } else {
            handshake::check_response_with(&head, self.key.as_deref(), &offered, &self.offered_ext)
        };
        if let (101, Some(a)) = (verdict.status, verdict.deflate) {
            self.deflate = Some(a);
            self.c2s.inflater = Some(crate::wire::deflate::Inflater::new(a.client));
            self.s2c.inflater = Some(crate::wire::deflate::Inflater::new(a.server));
        }
        if verdict.status == 101 && verdict.error.is_some() {
            self.bad_answer = Some(false);
        }
        self.s2c.phase = if verdict.status == 101 {
            Phase::Frames
        } else {
            Phase::Raw("after a non-101 response (body)".into())
        };
        // A refused upgrade never became a WebSocket:
        // what the client sends on is not frames, and its
        // end is no WebSocket close.
        if verdict.status != 101 && self.c2s.phase == Phase::Frames {
            self.c2s.phase = Phase::Raw(format!(
                "after a refused upgrade (the server answered {})",
                verdict.status
            ));
        }
        let hints = head_hints(&head, self.key.as_deref(), Some(&verdict));
        out.push(self.event(
            dir,
            0,
            EventKind::Response {
                head: Box::new(head),
                verdict: Box::new(verdict),
            },
        ));
        for note in hints {
            out.push(self.event(dir, 0, EventKind::Notice { note }));
        }
    }
}
