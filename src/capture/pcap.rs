//! Packet captures (pcap and pcapng, from tcpdump, Wireshark or a mirror
//! port) turned into the chunks the annotator reads: packets are read one
//! block at a time by `pcap-parser` (a fixed buffer, so memory does not grow
//! with the file), their headers sliced by `etherparse`, TCP reassembled per
//! connection, and WebSocket connections found by their HTTP upgrade (or a
//! port given with `--port`, for captures that start mid-stream).
//!
//! Reassembly: segments are put in sequence order (wrap-around included);
//! a retransmission or an overlap keeps the first copy, and a copy that
//! differs from it is a note; a SYN sets where a direction starts, and a
//! connection seen without one starts where its first segment does (with a
//! note); bytes the capture never saw (a lost packet, a snapshot length
//! shorter than the packet) become a gap, after which decoding resumes at
//! the next frame header that fits. Out-of-order data is held up to
//! [`MAX_OUT_OF_ORDER`] bytes a direction and [`MAX_OUT_OF_ORDER_TOTAL`] over
//! all connections; past that, what is missing is
//! taken as lost.

use crate::capture::{Chunk, ChunkKind, FileError};
use crate::note::{self, Code, Note, Severity};
use crate::wire::frame::Direction;
use etherparse::{EtherType, LaxNetSlice, LaxSlicedPacket, TcpSlice};
use pcap_parser::traits::PcapReaderIterator;
use pcap_parser::{Block, PcapBlockOwned, PcapError};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};

/// Out-of-order bytes held for one direction of a connection, at most.
pub const MAX_OUT_OF_ORDER: usize = 1 << 20;
/// Out-of-order bytes held over all connections, at most.
pub const MAX_OUT_OF_ORDER_TOTAL: usize = 32 << 20;
/// Notes read from one packet's comments, at most.
const MAX_PACKET_NOTES: usize = 16;

/// Notes an undecided connection holds, at most.
const MAX_HELD_NOTES: usize = 64;

/// Bytes of a connection held before it is known to be WebSocket.
const MAX_UNDECIDED: usize = 16 * 1024;
/// The same over all connections.
const MAX_UNDECIDED_TOTAL: usize = 8 << 20;
/// The reader's buffer: blocks bigger than this are refused.
const MAX_BLOCK: usize = 16 << 20;
/// Delivered bytes kept a direction to compare retransmissions with.
const TAIL: usize = 4096;
/// Connections tracked at once (the oldest are given up beyond it).
const MAX_FLOWS: usize = 65_536;

/// Does this start like a pcap or pcapng file?
pub fn is_capture(magic: &[u8]) -> bool {
    matches!(
        magic,
        [0xd4, 0xc3, 0xb2, 0xa1, ..]
            | [0xa1, 0xb2, 0xc3, 0xd4, ..]
            | [0x4d, 0x3c, 0xb2, 0xa1, ..]
            | [0xa1, 0xb2, 0x3c, 0x4d, ..]
            | [0x0a, 0x0d, 0x0d, 0x0a, ..]
    )
}

/// Settings for reading a packet capture.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Take every TCP connection with this port as WebSocket, upgrade seen
    /// or not (the server is the side with this port).
    pub port: Option<u16>,
}

/// What a capture held besides WebSocket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets read.
    pub packets: u64,
    /// Packets that were not TCP over IP (or could not be sliced).
    pub not_tcp: u64,
    /// TCP connections seen.
    pub tcp_connections: u64,
    /// Of them, WebSocket.
    pub websocket: u64,
    /// Connections that began before the capture (no SYN seen) and were
    /// not decoded: their upgrade was never captured.
    pub mid_stream: u64,
    /// The first of them, client then server.
    pub mid_stream_example: Option<(SocketAddr, SocketAddr)>,
    /// Their server ports, with how many connections each (the first 8
    /// ports seen).
    pub mid_stream_ports: [(u16, u64); 8],
}

impl Counts {
    /// The server port most of the undecoded mid-stream connections went
    /// to, for a `--port` hint.
    pub fn mid_stream_port(&self) -> Option<u16> {
        self.mid_stream_ports
            .iter()
            .filter(|(_, n)| *n > 0)
            .max_by_key(|(_, n)| *n)
            .map(|(p, _)| *p)
    }

    fn note_mid_stream(&mut self, client: SocketAddr, server: SocketAddr) {
        self.mid_stream += 1;
        self.mid_stream_example.get_or_insert((client, server));
        let port = server.port();
        if let Some(slot) = self
            .mid_stream_ports
            .iter_mut()
            .find(|(p, n)| *p == port || *n == 0)
        {
            *slot = (port, slot.1 + 1);
        }
    }
}

/// One endpoint pair, client first once known.
type FlowKey = (SocketAddr, SocketAddr);

#[derive(Debug, Default)]
struct Half {
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
struct Seg {
    data: Vec<u8>,
    pkt: u64,
    time: Option<f64>,
}

#[derive(Debug)]
enum Kind {
    /// Not known yet: bytes (and recorded notes) held until the client's
    /// first bytes say.
    Undecided(Vec<(Direction, Option<f64>, u64, Held)>, usize),
    WebSocket(u64),
    Other,
}

#[derive(Debug)]
struct Flow {
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

/// One TCP segment as sliced from a packet.
struct Segment<'a> {
    src: SocketAddr,
    dst: SocketAddr,
    seq: u32,
    ack: Option<u32>,
    syn: bool,
    fin: bool,
    rst: bool,
    payload: &'a [u8],
    /// Payload bytes the segment really had (more than `payload` when the
    /// capture cut the packet short).
    real_len: usize,
}

/// TCP reassembly over packets, producing chunks for WebSocket connections.
#[derive(Debug, Default)]
pub struct Reassembler {
    opts: Options,
    flows: HashMap<FlowKey, Flow>,
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
}

fn key(a: SocketAddr, b: SocketAddr) -> FlowKey {
    if a <= b {
        (a, b)
    } else {
        (b, a)
    }
}

fn looks_like_upgrade(b: &[u8]) -> Option<bool> {
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
    fn segment(
        &mut self,
        s: Segment<'_>,
        pkt: u64,
        time: Option<f64>,
        notes: Vec<(Option<Direction>, Note)>,
    ) {
        let k = key(s.src, s.dst);
        self.serial += 1;
        if !self.flows.contains_key(&k) && !self.track(k, &s, pkt, time) {
            return;
        }
        let Some(flow) = self.flows.get_mut(&k) else {
            return;
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
        let mut out: Vec<(Direction, Piece)> = notes
            .into_iter()
            .map(|(d, n)| (d.unwrap_or(dir), Piece::Note(n, pkt, time)))
            .collect();
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
        for (d, p) in out {
            self.piece(k, d, p);
        }
        let flow = &self.flows[&k];
        let done = |h: &Half| h.fin.is_some_and(|f| h.next == Some(f));
        if done(&flow.c2s) && done(&flow.s2c) {
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
enum Held {
    Data(Vec<u8>),
    Note(Note),
}

enum Piece {
    Data(Vec<u8>, u64, Option<f64>),
    Gap(u64, u64, Option<f64>),
    Note(Note, u64, Option<f64>),
}

fn remember(h: &mut Half, b: &[u8]) {
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
fn deliver(
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
fn drain_ready(h: &mut Half, out: &mut dyn FnMut(Piece)) {
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
fn drain_all(h: &mut Half, out: &mut dyn FnMut(Piece)) {
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
fn flush_acked(h: &mut Half, out: &mut dyn FnMut(Piece)) {
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

fn compare_tail(
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

fn overlap_note(at: u64, pkt: u64) -> Note {
    note::listener(
        Severity::Warning,
        Code::CaptureOverlapDiffers,
        format!("packet {pkt} carries stream bytes from {at} again with different content: the first copy is kept (a sender that changed data it retransmitted, or a capture of two paths)"),
    )
}

/// A link-layer type this reader slices.
fn slice(linktype: i32, data: &[u8]) -> Option<LaxSlicedPacket<'_>> {
    match linktype {
        // Ethernet (with 802.1Q/802.1ad tags).
        1 => LaxSlicedPacket::from_ethernet(data).ok(),
        // BSD loopback / null: a 4-byte address family, host order.
        0 | 108 => {
            let fam = data.get(..4)?;
            let le = u32::from_le_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let be = u32::from_be_bytes([fam[0], fam[1], fam[2], fam[3]]);
            let ip = &data[4..];
            let v4 = le == 2 || be == 2;
            let v6 = [24, 28, 30].contains(&le) || [24, 28, 30].contains(&be);
            (v4 || v6)
                .then(|| LaxSlicedPacket::from_ip(ip).ok())
                .flatten()
        }
        // Raw IP, IPv4, IPv6.
        12 | 14 | 101 | 228 | 229 => LaxSlicedPacket::from_ip(data).ok(),
        // Linux cooked capture v1: protocol type at bytes 14..16.
        113 => {
            let p = data.get(14..16)?;
            Some(LaxSlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([p[0], p[1]])),
                data.get(16..)?,
            ))
        }
        // Linux cooked capture v2: protocol type at bytes 0..2, 20 bytes.
        276 => {
            let p = data.get(0..2)?;
            Some(LaxSlicedPacket::from_ether_type(
                EtherType(u16::from_be_bytes([p[0], p[1]])),
                data.get(20..)?,
            ))
        }
        _ => None,
    }
}

/// The TCP segment in a packet, if it carries one.
fn tcp_segment<'a>(p: &LaxSlicedPacket<'a>) -> Option<Segment<'a>> {
    let (src, dst, ipp, ip_real) = match p.net.as_ref()? {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            let real = (h.total_len() as usize).saturating_sub(h.ihl() as usize * 4);
            (
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload(),
                real,
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            let ext = v6.payload().payload.as_ptr() as usize
                - (h.slice().as_ptr() as usize + h.slice().len());
            let real = (h.payload_length() as usize).saturating_sub(ext);
            (
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
                real,
            )
        }
        _ => return None,
    };
    if ipp.ip_number != etherparse::IpNumber::TCP || ipp.fragmented {
        return None;
    }
    let tcp = match TcpSlice::from_slice(ipp.payload) {
        Ok(t) => t,
        Err(_) => return None,
    };
    let hl = tcp.header_len();
    let real_len = if ipp.incomplete {
        ip_real.saturating_sub(hl).max(tcp.payload().len())
    } else {
        tcp.payload().len()
    };
    Some(Segment {
        src: SocketAddr::new(src, tcp.source_port()),
        dst: SocketAddr::new(dst, tcp.destination_port()),
        seq: tcp.sequence_number(),
        ack: tcp.ack().then(|| tcp.acknowledgment_number()),
        syn: tcp.syn(),
        fin: tcp.fin(),
        rst: tcp.rst(),
        payload: tcp.payload(),
        real_len,
    })
}

/// A pcapng interface.
#[derive(Debug, Clone, Copy)]
struct Iface {
    linktype: i32,
    resolution: u64,
    offset: i64,
}

/// Reads WebSocket chunks out of a pcap or pcapng stream.
pub struct PcapReader {
    inner: Box<dyn PcapReaderIterator>,
    st: Packets,
    error: Option<FileError>,
    done: bool,
}

/// What the blocks said so far, and the connections they carry.
struct Packets {
    /// Legacy pcap: link type and whether times are in nanoseconds.
    legacy: Option<(i32, bool)>,
    ifaces: Vec<Iface>,
    pkt: u64,
    tcp: Reassembler,
}

impl std::fmt::Debug for PcapReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcapReader")
            .field("pkt", &self.st.pkt)
            .finish()
    }
}

/// Reads until the buffer holds a file header (a pipe may hand over a few
/// bytes at a time), then as the source gives.
struct FirstFull<R> {
    inner: R,
    first: bool,
}

impl<R: Read> Read for FirstFull<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if !self.first {
            return self.inner.read(buf);
        }
        self.first = false;
        let want = buf.len().min(64);
        let mut n = 0;
        while n < want {
            match self.inner.read(&mut buf[n..])? {
                0 => break,
                k => n += k,
            }
        }
        Ok(n)
    }
}

fn file_error(offset: usize, reason: String) -> FileError {
    FileError {
        line: 0,
        offset,
        reason,
    }
}

impl PcapReader {
    /// A reader over a pcap or pcapng file (told apart by its magic number).
    pub fn new<R: Read + 'static>(src: R, opts: Options) -> Result<PcapReader, FileError> {
        let mut magic_src = src;
        // The magic number decides; each reader parses its own header.
        let inner: Box<dyn PcapReaderIterator> = {
            let mut head = [0u8; 4];
            let n = read_up_to(&mut magic_src, &mut head)
                .map_err(|e| file_error(0, format!("cannot read: {e}")))?;
            let chained = std::io::Cursor::new(head[..n].to_vec()).chain(magic_src);
            let chained = FirstFull {
                inner: chained,
                first: true,
            };
            if head[..n] == [0x0a, 0x0d, 0x0d, 0x0a] {
                Box::new(
                    pcap_parser::PcapNGReader::new(1 << 16, chained)
                        .map_err(|e| file_error(0, format!("not a pcapng file: {e}")))?,
                )
            } else {
                Box::new(
                    pcap_parser::LegacyPcapReader::new(1 << 16, chained)
                        .map_err(|e| file_error(0, format!("not a pcap file: {e}")))?,
                )
            }
        };
        Ok(PcapReader {
            inner,
            st: Packets {
                legacy: None,
                ifaces: Vec::new(),
                pkt: 0,
                tcp: Reassembler::new(opts),
            },
            error: None,
            done: false,
        })
    }

    /// The first malformed block, once reading stopped at it.
    pub fn error(&self) -> Option<&FileError> {
        self.error.as_ref()
    }

    /// What the capture held.
    pub fn counts(&self) -> Counts {
        Counts {
            packets: self.st.pkt,
            ..self.st.tcp.counts
        }
    }

    /// The next chunk; `Ok(None)` at the end (or at a malformed block: see
    /// [`PcapReader::error`]).
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Chunk>> {
        loop {
            if let Some(c) = self.st.tcp.ready.pop_front() {
                return Ok(Some(c));
            }
            if self.done {
                return Ok(None);
            }
            self.step();
        }
    }

    /// Read one block.
    fn step(&mut self) {
        let at = self.inner.consumed();
        match self.inner.next() {
            Ok((used, block)) => {
                let r = self.st.block(block, at);
                self.inner.consume(used);
                if let Err(e) = r {
                    self.fail(e);
                }
            }
            Err(PcapError::Eof) => {
                self.st.tcp.finish();
                self.done = true;
            }
            Err(PcapError::UnexpectedEof) => {
                let e = file_error(
                    at,
                    format!(
                        "the file ends inside a block (after packet {}): the capture was cut short",
                        self.st.pkt
                    ),
                );
                self.fail(e);
            }
            Err(PcapError::Incomplete(_)) => {
                if self.inner.reader_exhausted() {
                    let e = file_error(
                        at,
                        format!(
                            "the file ends inside a block (after packet {}): the capture was cut short",
                            self.st.pkt
                        ),
                    );
                    self.fail(e);
                } else if let Err(e) = self.inner.refill() {
                    let e = file_error(at, format!("cannot read on: {e}"));
                    self.fail(e);
                }
            }
            Err(PcapError::BufferTooSmall) => {
                let cap = self.inner.data().len().max(1 << 16) * 2;
                if cap > MAX_BLOCK || !self.inner.grow(cap) {
                    let e = file_error(
                        at,
                        format!("a block over {} MiB (after packet {}): not a capture this reader takes, or a corrupted length", MAX_BLOCK >> 20, self.st.pkt),
                    );
                    self.fail(e);
                }
            }
            Err(e) => {
                let e = file_error(
                    at,
                    format!("malformed block after packet {}: {e}", self.st.pkt),
                );
                self.fail(e);
            }
        }
    }

    fn fail(&mut self, e: FileError) {
        self.st.tcp.finish();
        self.error = Some(e);
        self.done = true;
    }
}

impl Packets {
    fn block(&mut self, block: PcapBlockOwned<'_>, at: usize) -> Result<(), FileError> {
        match block {
            PcapBlockOwned::LegacyHeader(h) => {
                self.legacy = Some((h.network.0, h.is_nanosecond_precision()));
            }
            PcapBlockOwned::Legacy(b) => {
                let (lt, nanos) = self.legacy.unwrap_or((1, false));
                let frac = if nanos {
                    f64::from(b.ts_usec) / 1e9
                } else {
                    f64::from(b.ts_usec) / 1e6
                };
                self.packet(lt, b.data, Some(f64::from(b.ts_sec) + frac), Vec::new());
            }
            PcapBlockOwned::NG(Block::SectionHeader(_)) => self.ifaces.clear(),
            PcapBlockOwned::NG(Block::InterfaceDescription(i)) => self.ifaces.push(Iface {
                linktype: i.linktype.0,
                resolution: i.ts_resolution().unwrap_or(1_000_000),
                offset: i.ts_offset(),
            }),
            PcapBlockOwned::NG(Block::EnhancedPacket(e)) => {
                let Some(i) = self.ifaces.get(e.if_id as usize).copied() else {
                    return Err(file_error(
                        at,
                        format!(
                            "packet {} names interface {} but the section describes {}",
                            self.pkt + 1,
                            e.if_id,
                            self.ifaces.len()
                        ),
                    ));
                };
                let ts = e.decode_ts_f64(i.offset.max(0) as u64, i.resolution.max(1));
                let data = &e.data[..(e.caplen as usize).min(e.data.len())];
                let notes = recorded_notes(&e.options);
                self.packet(i.linktype, data, Some(ts), notes);
            }
            PcapBlockOwned::NG(Block::SimplePacket(s)) => {
                let lt = self.ifaces.first().map_or(1, |i| i.linktype);
                self.packet(lt, s.data, None, Vec::new());
            }
            PcapBlockOwned::NG(_) => {}
        }
        Ok(())
    }

    fn packet(
        &mut self,
        linktype: i32,
        data: &[u8],
        time: Option<f64>,
        notes: Vec<(Option<Direction>, Note)>,
    ) {
        self.pkt += 1;
        let seg = slice(linktype, data).and_then(|p| tcp_segment(&p));
        match seg {
            Some(s) => self.tcp.segment(s, self.pkt, time, notes),
            None => self.tcp.counts.not_tcp += 1,
        }
    }
}

/// Notes a recording by this tool carried as packet comments
/// (`kinetid-wsdump SEVERITY CODE DIR: message`, see `pcapng.rs`); other
/// comments are someone else's and stay unread. At most
/// [`MAX_PACKET_NOTES`] a packet.
fn recorded_notes(options: &[pcap_parser::PcapNGOption<'_>]) -> Vec<(Option<Direction>, Note)> {
    options
        .iter()
        .filter(|o| o.code == pcap_parser::OptionCode::Comment)
        .filter_map(|o| {
            let text = std::str::from_utf8(o.as_bytes().ok()?).ok()?;
            let (head, message) = text.strip_prefix("kinetid-wsdump ")?.split_once(": ")?;
            let mut w = head.split(' ');
            let (sev, code) = (w.next()?, w.next()?);
            let dir = match w.next() {
                Some("c2s") => Some(Direction::C2S),
                Some("s2c") => Some(Direction::S2C),
                _ => None,
            };
            Some((dir, crate::note::listener_note(sev, code, message)?))
        })
        .take(MAX_PACKET_NOTES)
        .collect()
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
