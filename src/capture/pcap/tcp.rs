//! TCP reassembly: each flow's two directions in sequence order, out of
//! order segments held (bounded), retransmissions compared, gaps named;
//! which flows are WebSocket, and the chunks the annotator gets.

use super::*;

/// One endpoint pair, the lower address first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct FlowKey(SocketAddr, SocketAddr);

/// Hashed as four words, not field by field through `SocketAddr`'s own
/// `Hash` (a dozen small writes, every packet).
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        fn words(a: &SocketAddr) -> (u64, u64) {
            match a {
                SocketAddr::V4(v) => (u64::from(v.ip().to_bits()), u64::from(v.port())),
                SocketAddr::V6(v) => {
                    let b = v.ip().to_bits();
                    (b as u64 ^ (b >> 64) as u64, u64::from(v.port()) | 1 << 32)
                }
            }
        }
        let (a, b) = (words(&self.0), words(&self.1));
        h.write_u64(a.0);
        h.write_u64(a.1 | b.1 << 33);
        h.write_u64(b.0);
    }
}

#[derive(Debug, Default)]
pub(super) struct Half {
    /// Next expected sequence number, once known.
    next: Option<u32>,
    /// Out-of-order segments by their distance past `next`... stored by
    /// absolute stream position.
    ooo: BTreeMap<u64, Seg>,
    ooo_bytes: usize,
    /// Stream position of `next`.
    pos: u64,
    /// Sequence number of the FIN, once seen.
    fin: Option<u32>,
    /// The last bytes delivered, to compare retransmissions with.
    tail: Vec<u8>,
    syn: bool,
    /// Highest acknowledgement the other side sent for this half.
    acked: Option<u32>,
}

#[derive(Debug)]
pub(super) struct Seg {
    data: Vec<u8>,
    pkt: u64,
    time: Option<f64>,
}

#[derive(Debug)]
pub(super) enum Kind {
    /// Not known yet: bytes (and recorded notes) held until the client's
    /// first bytes say.
    Undecided(Vec<(Direction, Option<f64>, u64, Held)>, usize),
    WebSocket(u64),
    Other,
}

#[derive(Debug)]
pub(super) struct Flow {
    /// `a` is the client (device) side when known.
    client: SocketAddr,
    server: SocketAddr,
    c2s: Half,
    s2c: Half,
    kind: Kind,
    /// Neither SYN was captured.
    mid_stream: bool,
    seen: u64,
}

impl Flow {
    fn half(&mut self, d: Direction) -> &mut Half {
        match d {
            Direction::C2S => &mut self.c2s,
            Direction::S2C => &mut self.s2c,
        }
    }
}

/// TCP reassembly over packets, producing chunks for WebSocket connections.
#[derive(Debug, Default)]
pub struct Reassembler {
    opts: Options,
    flows: crate::Map<FlowKey, Flow>,
    next_conn: u64,
    serial: u64,
    /// Chunks ready, oldest first.
    pub ready: VecDeque<Chunk>,
    /// What was seen.
    pub counts: Counts,
    /// Out-of-order bytes held over all connections.
    held: usize,
    /// Bytes held of connections not known yet to be WebSocket.
    undecided: usize,
    /// What one segment hands on (empty between segments).
    pieces: Vec<(Direction, Piece)>,
}

pub(super) fn key(a: SocketAddr, b: SocketAddr) -> FlowKey {
    if a <= b {
        FlowKey(a, b)
    } else {
        FlowKey(b, a)
    }
}

pub(super) fn looks_like_upgrade(b: &[u8]) -> Option<bool> {
    let head_end = b.windows(4).position(|w| w == b"\r\n\r\n");
    let starts_get = b.len() < 4 || b.starts_with(b"GET ");
    if !starts_get {
        return Some(false);
    }
    match head_end {
        Some(e) => {
            let head = String::from_utf8_lossy(&b[..e]).to_ascii_lowercase();
            Some(head.lines().any(|l| {
                l.split_once(':')
                    .is_some_and(|(n, v)| n.trim() == "upgrade" && v.contains("websocket"))
            }))
        }
        None if b.len() >= MAX_UNDECIDED => Some(false),
        None => None,
    }
}

impl Reassembler {
    /// A reassembler.
    pub fn new(opts: Options) -> Self {
        Reassembler {
            opts,
            ..Default::default()
        }
    }

    fn push(&mut self, conn: u64, time: Option<f64>, pkt: Option<u64>, kind: ChunkKind) {
        self.ready.push_back(Chunk {
            time,
            conn,
            pkt,
            kind,
        });
    }

    /// One TCP segment of packet `pkt`.
    pub(super) fn segment(
        &mut self,
        s: Segment<'_>,
        pkt: u64,
        time: Option<f64>,
        notes: Vec<(Option<Direction>, Note)>,
    ) {
        let k = key(s.src, s.dst);
        self.serial += 1;
        // One lookup a packet where the flow is known (nearly every one).
        let flow = match self.flows.get_mut(&k) {
            Some(f) => f,
            None => {
                if !self.track(k, &s, pkt, time) {
                    return;
                }
                let Some(f) = self.flows.get_mut(&k) else {
                    return;
                };
                f
            }
        };
        flow.seen = self.serial;
        let dir = if s.src == flow.client {
            Direction::C2S
        } else {
            Direction::S2C
        };
        if let Some(a) = s.ack {
            let other = flow.half(dir.other());
            if other.acked.is_none_or(|x| (a.wrapping_sub(x) as i32) > 0) {
                other.acked = Some(a);
            }
        }
        if s.rst {
            self.close(k, time, Some(pkt));
            return;
        }
        // Notes a recording carried on this packet come before its bytes.
        // A list kept from packet to packet: one allocation, not one each.
        let mut out = std::mem::take(&mut self.pieces);
        out.extend(
            notes
                .into_iter()
                .map(|(d, n)| (d.unwrap_or(dir), Piece::Note(n, pkt, time))),
        );
        let room = MAX_OUT_OF_ORDER_TOTAL.saturating_sub(self.held);
        {
            let before = flow.c2s.ooo_bytes + flow.s2c.ooo_bytes;
            let h = flow.half(dir);
            if s.syn {
                h.syn = true;
                h.next = Some(s.seq.wrapping_add(1));
            }
            if h.next.is_none() {
                h.next = Some(s.seq);
            }
            let seq = if s.syn { s.seq.wrapping_add(1) } else { s.seq };
            if s.real_len > 0 {
                let limit = MAX_OUT_OF_ORDER.min(h.ooo_bytes + room);
                deliver(h, seq, s.payload, s.real_len, limit, pkt, time, &mut |p| {
                    out.push((dir, p))
                });
            }
            if s.fin {
                h.fin = Some(seq.wrapping_add(s.real_len as u32));
            }
            // What the peer acknowledged it has: data missing before it
            // was lost to the capture.
            flush_acked(flow.half(dir.other()), &mut |p| out.push((dir.other(), p)));
            let after = flow.c2s.ooo_bytes + flow.s2c.ooo_bytes;
            self.held = (self.held + after).saturating_sub(before);
        }
        let done = |h: &Half| h.fin.is_some_and(|f| h.next == Some(f));
        // Pieces do not move either half's FIN or next byte.
        let both_done = done(&flow.c2s) && done(&flow.s2c);
        match flow.kind {
            // Known WebSocket: handed on without looking the flow up again.
            Kind::WebSocket(c) => {
                for (d, p) in out.drain(..) {
                    self.emit(c, d, p);
                }
            }
            _ => {
                for (d, p) in out.drain(..) {
                    self.piece(k, d, p);
                }
            }
        }
        self.pieces = out;
        if both_done {
            self.close(k, time, Some(pkt));
        }
    }

    /// A flow seen for the first time: which side is the client, and
    /// whether it is WebSocket already (`--port`). False: not worth
    /// tracking (a reset, or a bare ACK of a connection not seen start).
    fn track(&mut self, k: FlowKey, s: &Segment<'_>, pkt: u64, time: Option<f64>) -> bool {
        if s.rst || (s.payload.is_empty() && !s.syn) {
            return false;
        }
        if self.flows.len() >= MAX_FLOWS {
            self.evict(time);
        }
        self.counts.tcp_connections += 1;
        // The client: who sent the SYN (without ACK), else the side
        // away from --port, else the side whose first bytes are a
        // request, else the side with the higher port.
        let (client, server) = if s.syn {
            if s.ack.is_none() {
                (s.src, s.dst)
            } else {
                (s.dst, s.src)
            }
        } else if let Some(p) = self.opts.port {
            if s.dst.port() == p {
                (s.src, s.dst)
            } else {
                (s.dst, s.src)
            }
        } else if s.payload.starts_with(b"GET ") || s.src.port() > s.dst.port() {
            (s.src, s.dst)
        } else {
            (s.dst, s.src)
        };
        let forced = self.opts.port == Some(server.port());
        let kind = if forced {
            self.next_conn += 1;
            self.counts.websocket += 1;
            Kind::WebSocket(self.next_conn)
        } else {
            Kind::Undecided(Vec::new(), 0)
        };
        let flow = Flow {
            client,
            server,
            c2s: Half::default(),
            s2c: Half::default(),
            kind,
            mid_stream: !s.syn,
            seen: self.serial,
        };
        self.flows.insert(k, flow);
        if let Kind::WebSocket(c) = self.flows[&k].kind {
            self.open(k, c, time, pkt);
        }
        true
    }

    fn open(&mut self, k: FlowKey, conn: u64, time: Option<f64>, pkt: u64) {
        let f = &self.flows[&k];
        let peer = format!("{} -> {}", f.client, f.server);
        let mid = f.mid_stream;
        self.push(conn, time, Some(pkt), ChunkKind::Open(peer));
        if mid {
            self.push(conn, time, Some(pkt), ChunkKind::Gap(Direction::C2S, 0));
            self.push(conn, time, Some(pkt), ChunkKind::Gap(Direction::S2C, 0));
        }
    }

    /// Bytes (or a gap, or a note) of one direction, in stream order.
    fn piece(&mut self, k: FlowKey, d: Direction, p: Piece) {
        let Some(flow) = self.flows.get_mut(&k) else {
            return;
        };
        match &mut flow.kind {
            Kind::Other => {}
            Kind::WebSocket(c) => {
                let c = *c;
                self.emit(c, d, p);
            }
            Kind::Undecided(held, size) => {
                let mut gap = None;
                match p {
                    Piece::Data(bytes, pkt, time) => {
                        *size += bytes.len();
                        self.undecided += bytes.len();
                        held.push((d, time, pkt, Held::Data(bytes)));
                    }
                    // A note a recording carried: kept in its place.
                    Piece::Note(n, pkt, time) => {
                        if held.len() < MAX_HELD_NOTES {
                            held.push((d, time, pkt, Held::Note(n)));
                        }
                        return;
                    }
                    // A gap before the head is whole: judged on what came.
                    other => gap = Some(other),
                }
                let client: Vec<u8> = held
                    .iter()
                    .filter(|(d, ..)| *d == Direction::C2S)
                    .flat_map(|(.., h)| match h {
                        Held::Data(b) => b.as_slice(),
                        Held::Note(_) => &[],
                    })
                    .copied()
                    .take(MAX_UNDECIDED)
                    .collect();
                // Bounded over all connections too: past it, a connection
                // still undecided is taken for something else.
                let full = self.undecided > MAX_UNDECIDED_TOTAL;
                let verdict = match &gap {
                    _ if full => Some(false),
                    Some(_) => Some(
                        client.starts_with(b"GET ")
                            && client
                                .to_ascii_lowercase()
                                .windows(9)
                                .any(|w| w == b"websocket"),
                    ),
                    None if client.is_empty() => (*size >= MAX_UNDECIDED).then_some(false),
                    None => looks_like_upgrade(&client),
                };
                if verdict.is_some() {
                    self.undecided = self.undecided.saturating_sub(*size);
                }
                match verdict {
                    None => {}
                    Some(false) => flow.kind = Kind::Other,
                    Some(true) => {
                        let held = std::mem::take(held);
                        self.next_conn += 1;
                        self.counts.websocket += 1;
                        let c = self.next_conn;
                        flow.kind = Kind::WebSocket(c);
                        let first_pkt = held.first().map_or(0, |h| h.2);
                        let first_time = held.first().and_then(|h| h.1);
                        self.open(k, c, first_time, first_pkt);
                        for (d, time, pkt, h) in held {
                            let p = match h {
                                Held::Data(b) => Piece::Data(b, pkt, time),
                                Held::Note(n) => Piece::Note(n, pkt, time),
                            };
                            self.emit(c, d, p);
                        }
                        if let Some(g) = gap {
                            self.emit(c, d, g);
                        }
                    }
                }
            }
        }
    }

    fn emit(&mut self, conn: u64, d: Direction, p: Piece) {
        match p {
            Piece::Data(b, pkt, time) => self.push(conn, time, Some(pkt), ChunkKind::Data(d, b)),
            Piece::Gap(n, pkt, time) => self.push(conn, time, Some(pkt), ChunkKind::Gap(d, n)),
            Piece::Note(n, pkt, time) => self.push(conn, time, Some(pkt), ChunkKind::Note(d, n)),
        }
    }

    /// The connection ended (both FINs, a RST, or the capture's end).
    fn close(&mut self, k: FlowKey, time: Option<f64>, pkt: Option<u64>) {
        let Some(mut flow) = self.flows.remove(&k) else {
            return;
        };
        self.held = self
            .held
            .saturating_sub(flow.c2s.ooo_bytes + flow.s2c.ooo_bytes);
        if let Kind::Undecided(_, size) = flow.kind {
            self.undecided = self.undecided.saturating_sub(size);
        }
        let conn = match flow.kind {
            Kind::WebSocket(c) => c,
            _ => {
                if flow.mid_stream {
                    self.counts.note_mid_stream(flow.client, flow.server);
                }
                return;
            }
        };
        for d in [Direction::C2S, Direction::S2C] {
            let mut out = Vec::new();
            drain_all(flow.half(d), &mut |p| out.push(p));
            for p in out {
                self.emit(conn, d, p);
            }
        }
        self.push(conn, time, pkt, ChunkKind::Eof);
    }

    /// Give up the connection seen longest ago (the table is full).
    fn evict(&mut self, time: Option<f64>) {
        if let Some(k) = self
            .flows
            .iter()
            .min_by_key(|(_, f)| f.seen)
            .map(|(k, _)| *k)
        {
            self.close(k, time, None);
        }
    }

    /// The capture ended: every connection still open ends, in the order
    /// they were numbered.
    pub fn finish(&mut self) {
        let mut keys: Vec<(u64, FlowKey)> = self
            .flows
            .iter()
            .map(|(k, f)| {
                (
                    match f.kind {
                        Kind::WebSocket(c) => c,
                        _ => u64::MAX,
                    },
                    *k,
                )
            })
            .collect();
        keys.sort();
        for (_, k) in keys {
            self.close(k, None, None);
        }
    }
}

/// What one direction hands on, in order.
/// What an undecided connection holds.
#[derive(Debug)]
pub(super) enum Held {
    Data(Vec<u8>),
    Note(Note),
}

#[derive(Debug)]
pub(super) enum Piece {
    Data(Vec<u8>, u64, Option<f64>),
    Gap(u64, u64, Option<f64>),
    Note(Note, u64, Option<f64>),
}

pub(super) fn remember(h: &mut Half, b: &[u8]) {
    // At least the last TAIL bytes; trimmed now and then, not per segment.
    if h.tail.len() + b.len() > 2 * TAIL {
        let keep = TAIL.saturating_sub(b.len()).min(h.tail.len());
        let cut = h.tail.len() - keep;
        h.tail.drain(..cut);
    }
    h.tail.extend_from_slice(b);
}

/// A segment of `real_len` bytes at `seq`, of which `data` was captured.
#[allow(clippy::too_many_arguments)]
pub(super) fn deliver(
    h: &mut Half,
    seq: u32,
    data: &[u8],
    real_len: usize,
    limit: usize,
    pkt: u64,
    time: Option<f64>,
    out: &mut dyn FnMut(Piece),
) {
    let next = h.next.unwrap_or(seq);
    let d = i64::from(seq.wrapping_sub(next) as i32);
    if d + real_len as i64 <= 0 {
        // All of it came before: a retransmission.
        compare_tail(h, d, data, pkt, time, out);
        return;
    }
    if d > 0 {
        let at = h.pos + d as u64;
        if h.ooo_bytes + data.len() <= limit {
            if let Some(prev) = h.ooo.get(&at) {
                if prev.data[..prev.data.len().min(data.len())]
                    != data[..prev.data.len().min(data.len())]
                {
                    out(Piece::Note(overlap_note(at, pkt), pkt, time));
                }
                if prev.data.len() >= data.len() {
                    return;
                }
            }
            h.ooo_bytes += data.len();
            let mut seg = data.to_vec();
            if real_len > data.len() {
                // Cut short by the snapshot length: what is missing of it is
                // a gap when its turn comes (kept as a marker by length).
                seg.truncate(data.len());
            }
            if let Some(old) = h.ooo.insert(
                at,
                Seg {
                    data: seg,
                    pkt,
                    time,
                },
            ) {
                h.ooo_bytes -= old.data.len();
            }
            return;
        }
        // Too much held: what is missing before this segment is lost.
        drain_all(h, out);
        let d = i64::from(seq.wrapping_sub(h.next.unwrap_or(seq)) as i32);
        if d > 0 {
            out(Piece::Gap(d as u64, pkt, time));
            h.pos += d as u64;
            h.next = Some(seq);
        }
    }
    let d = i64::from(seq.wrapping_sub(h.next.unwrap_or(seq)) as i32);
    // d <= 0 here: the first -d bytes were delivered already.
    let skip = (-d) as usize;
    if skip > 0 {
        compare_tail(h, d, &data[..skip.min(data.len())], pkt, time, out);
    }
    let fresh = &data[skip.min(data.len())..];
    let fresh_real = real_len - skip;
    if !fresh.is_empty() {
        remember(h, fresh);
        out(Piece::Data(fresh.to_vec(), pkt, time));
    }
    if fresh_real > fresh.len() {
        out(Piece::Gap((fresh_real - fresh.len()) as u64, pkt, time));
    }
    h.pos += fresh_real as u64;
    h.next = Some(h.next.unwrap_or(seq).wrapping_add(fresh_real as u32));
    drain_ready(h, out);
}

/// Held segments that are now next in line.
pub(super) fn drain_ready(h: &mut Half, out: &mut dyn FnMut(Piece)) {
    while let Some((&at, _)) = h.ooo.first_key_value() {
        if at > h.pos {
            return;
        }
        let seg = h.ooo.remove(&at).expect("present");
        h.ooo_bytes -= seg.data.len();
        let skip = (h.pos - at) as usize;
        if skip >= seg.data.len() {
            continue;
        }
        let fresh = &seg.data[skip..];
        remember(h, fresh);
        out(Piece::Data(fresh.to_vec(), seg.pkt, seg.time));
        h.pos += fresh.len() as u64;
        h.next = h.next.map(|n| n.wrapping_add(fresh.len() as u32));
    }
}

/// Everything held, with gaps where bytes are missing (the connection
/// ended, or too much is held).
pub(super) fn drain_all(h: &mut Half, out: &mut dyn FnMut(Piece)) {
    while let Some((&at, seg)) = h.ooo.first_key_value() {
        if at > h.pos {
            let n = at - h.pos;
            out(Piece::Gap(n, seg.pkt, seg.time));
            h.pos = at;
            h.next = h.next.map(|x| x.wrapping_add(n as u32));
        }
        drain_ready(h, out);
    }
}

/// The peer acknowledged bytes this direction's capture never had: they
/// were lost to the capture, not to the peer.
pub(super) fn flush_acked(h: &mut Half, out: &mut dyn FnMut(Piece)) {
    let (Some(next), Some(acked)) = (h.next, h.acked) else {
        return;
    };
    let ahead = acked.wrapping_sub(next) as i32;
    if ahead <= 0 || h.ooo.is_empty() {
        return;
    }
    // Fill gaps up to the acknowledged point from what is held.
    let limit = h.pos + ahead as u64;
    while let Some((&at, seg)) = h.ooo.first_key_value() {
        if at >= limit {
            break;
        }
        if at > h.pos {
            let n = at - h.pos;
            out(Piece::Gap(n, seg.pkt, seg.time));
            h.pos = at;
            h.next = h.next.map(|x| x.wrapping_add(n as u32));
        }
        drain_ready(h, out);
    }
}

pub(super) fn compare_tail(
    h: &Half,
    d: i64,
    data: &[u8],
    pkt: u64,
    time: Option<f64>,
    out: &mut dyn FnMut(Piece),
) {
    // `data` starts -d bytes before the next expected byte.
    let back = (-d) as usize;
    if back > h.tail.len() || data.is_empty() {
        return;
    }
    let from = h.tail.len() - back;
    let n = data.len().min(back);
    if h.tail[from..from + n] != data[..n] {
        let at = h.pos - back as u64;
        out(Piece::Note(overlap_note(at, pkt), pkt, time));
    }
}

pub(super) fn overlap_note(at: u64, pkt: u64) -> Note {
    note::listener(
        Severity::Warning,
        Code::CaptureOverlapDiffers,
        format!("packet {pkt} carries stream bytes from {at} again with different content: the first copy is kept (a sender that changed data it retransmitted, or a capture of two paths)"),
    )
}
