//! Writing pcapng: what the tool records (or converts) as packets Wireshark
//! opens. Each connection becomes a TCP connection between the device and
//! the server on a synthetic Ethernet link: a three-way handshake at its
//! `open`, one segment per chunk of bytes (cut at 64,000 bytes), correct
//! sequence and acknowledgement numbers and checksums, and FINs at its end.
//! Bytes a capture missed (`gap`) advance the sequence numbers, so Wireshark
//! sees the same hole. The section header names the tool; there is one
//! interface, microsecond timestamps.

use crate::capture::{Chunk, ChunkKind};
use crate::wire::frame::Direction;
use crate::Map as HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Largest TCP payload of one synthesised segment.
const SEGMENT: usize = 64_000;

const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
const FIN: u8 = 0x01;

#[derive(Debug)]
struct Conn {
    client: SocketAddr,
    server: SocketAddr,
    /// Next sequence number of each side.
    seq_c: u32,
    seq_s: u32,
    /// Notes (TLS facts, proxy faults, listener decisions) waiting to ride
    /// on this connection's next packet as pcapng comments.
    comments: Vec<String>,
}

/// Turns chunks into pcapng blocks.
#[derive(Debug)]
pub struct PcapngWriter {
    server: SocketAddr,
    conns: HashMap<u64, Conn>,
}

fn block(kind: u32, body: &[u8]) -> Vec<u8> {
    let pad = body.len().next_multiple_of(4) - body.len();
    let len = (12 + body.len() + pad) as u32;
    let mut b = Vec::with_capacity(len as usize);
    b.extend_from_slice(&kind.to_le_bytes());
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.resize(b.len() + pad, 0);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

fn option(b: &mut Vec<u8>, code: u16, value: &[u8]) {
    b.extend_from_slice(&code.to_le_bytes());
    b.extend_from_slice(&(value.len() as u16).to_le_bytes());
    b.extend_from_slice(value);
    b.resize(b.len().next_multiple_of(4), 0);
}

/// The Internet checksum of `parts` laid end to end (each part even-length
/// but the last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    let mut odd: Option<u8> = None;
    for p in parts {
        for &x in *p {
            match odd.take() {
                None => odd = Some(x),
                Some(hi) => sum += u32::from(u16::from_be_bytes([hi, x])),
            }
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An endpoint from an `open` line: `ADDR:PORT`, or `A -> B` (client,
/// server) as packet captures name their connections.
fn endpoints(peer: &str, server: SocketAddr) -> (SocketAddr, SocketAddr) {
    if let Some((a, b)) = peer.split_once(" -> ") {
        if let (Ok(a), Ok(b)) = (a.trim().parse(), b.trim().parse()) {
            return (a, b);
        }
    }
    let client = peer.trim().parse().unwrap_or(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
        49152,
    ));
    let server = match (client.ip(), server.ip()) {
        (IpAddr::V4(_), IpAddr::V6(_)) => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), server.port())
        }
        (IpAddr::V6(_), IpAddr::V4(v4)) => {
            SocketAddr::new(v4.to_ipv6_mapped().into(), server.port())
        }
        _ => server,
    };
    (client, server)
}

impl PcapngWriter {
    /// A writer whose connections go to `server` (the listener's address;
    /// an unspecified one is recorded as loopback).
    pub fn new(server: SocketAddr) -> Self {
        let ip = match server.ip() {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        PcapngWriter {
            server: SocketAddr::new(ip, server.port()),
            conns: HashMap::default(),
        }
    }

    /// The section header and the interface description: the file's start.
    pub fn header(&self) -> Vec<u8> {
        let mut shb = Vec::new();
        shb.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        shb.extend_from_slice(&1u16.to_le_bytes());
        shb.extend_from_slice(&0u16.to_le_bytes());
        shb.extend_from_slice(&(-1i64).to_le_bytes());
        let tool = concat!("kinetid-wsdump ", env!("CARGO_PKG_VERSION"));
        option(&mut shb, 1, format!("recorded by {tool}: WebSocket traffic as seen by the tool, on a synthetic Ethernet link").as_bytes());
        option(&mut shb, 4, tool.as_bytes());
        option(&mut shb, 0, &[]);
        let mut idb = Vec::new();
        idb.extend_from_slice(&1u16.to_le_bytes()); // Ethernet
        idb.extend_from_slice(&0u16.to_le_bytes());
        idb.extend_from_slice(&262_144u32.to_le_bytes());
        option(&mut idb, 2, b"kinetid-wsdump");
        option(&mut idb, 0, &[]);
        let mut out = block(0x0A0D_0D0A, &shb);
        out.extend(block(1, &idb));
        out
    }

    /// The blocks for one chunk (none for what has no packet: notes).
    pub fn chunk(&mut self, c: &Chunk) -> Vec<u8> {
        let t = c.time.unwrap_or(0.0);
        let mut out = Vec::new();
        match &c.kind {
            ChunkKind::Open(peer) => {
                let (client, server) = endpoints(peer, self.server);
                // Initial sequence numbers from the connection number, so a
                // file is the same for the same input.
                let isn = (c.conn as u32).wrapping_mul(0x9E37_79B9);
                let mut k = Conn {
                    client,
                    server,
                    seq_c: isn,
                    seq_s: isn ^ 0x5A5A_5A5A,
                    comments: Vec::new(),
                };
                self.packet(&mut out, &mut k, t, Direction::C2S, SYN, &[]);
                self.packet(&mut out, &mut k, t, Direction::S2C, SYN | ACK, &[]);
                self.packet(&mut out, &mut k, t, Direction::C2S, ACK, &[]);
                self.conns.insert(c.conn, k);
            }
            ChunkKind::Data(d, bytes) => {
                let mut k = self.take(c.conn);
                for piece in bytes.chunks(SEGMENT) {
                    self.packet(&mut out, &mut k, t, *d, PSH | ACK, piece);
                }
                self.conns.insert(c.conn, k);
            }
            ChunkKind::Gap(d, n) => {
                let mut k = self.take(c.conn);
                match d {
                    Direction::C2S => k.seq_c = k.seq_c.wrapping_add(*n as u32),
                    Direction::S2C => k.seq_s = k.seq_s.wrapping_add(*n as u32),
                }
                self.conns.insert(c.conn, k);
            }
            ChunkKind::Eof => {
                let mut k = self.take(c.conn);
                self.packet(&mut out, &mut k, t, Direction::C2S, FIN | ACK, &[]);
                self.packet(&mut out, &mut k, t, Direction::S2C, FIN | ACK, &[]);
                self.packet(&mut out, &mut k, t, Direction::C2S, ACK, &[]);
            }
            // No packet of its own: a comment on the connection's next
            // packet (Wireshark shows it as frame.comment). Notes of a
            // connection already ended have none to ride on.
            ChunkKind::Note(d, n) => {
                if let Some(k) = self.conns.get_mut(&c.conn) {
                    if k.comments.len() < 64 {
                        k.comments.push(format!(
                            "kinetid-wsdump {} {} {}: {}",
                            n.severity.as_str(),
                            n.code.as_str(),
                            d.as_str(),
                            n.message
                        ));
                    }
                }
            }
        }
        out
    }

    /// A connection's state; one seen first mid-way (no `open`) gets one.
    fn take(&mut self, conn: u64) -> Conn {
        self.conns.remove(&conn).unwrap_or_else(|| {
            let isn = (conn as u32).wrapping_mul(0x9E37_79B9);
            Conn {
                client: SocketAddr::new(
                    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                    49152 + (conn % 16000) as u16,
                ),
                server: self.server,
                seq_c: isn,
                seq_s: isn ^ 0x5A5A_5A5A,
                comments: Vec::new(),
            }
        })
    }

    fn packet(
        &self,
        out: &mut Vec<u8>,
        k: &mut Conn,
        t: f64,
        d: Direction,
        flags: u8,
        payload: &[u8],
    ) {
        let (src, dst, seq, ack) = match d {
            Direction::C2S => (k.client, k.server, k.seq_c, k.seq_s),
            Direction::S2C => (k.server, k.client, k.seq_s, k.seq_c),
        };
        let ack = if flags & ACK != 0 { ack } else { 0 };
        let mut tcp = Vec::with_capacity(20 + payload.len());
        tcp.extend_from_slice(&src.port().to_be_bytes());
        tcp.extend_from_slice(&dst.port().to_be_bytes());
        tcp.extend_from_slice(&seq.to_be_bytes());
        tcp.extend_from_slice(&ack.to_be_bytes());
        tcp.push(5 << 4);
        tcp.push(flags);
        tcp.extend_from_slice(&65535u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 0]);
        tcp.extend_from_slice(payload);
        let (ip, ethertype) = ip_header(src.ip(), dst.ip(), &mut tcp);
        let (dmac, smac): ([u8; 6], [u8; 6]) = match d {
            Direction::C2S => ([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]),
            Direction::S2C => ([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1]),
        };
        let mut frame = Vec::with_capacity(14 + ip.len() + tcp.len());
        frame.extend_from_slice(&dmac);
        frame.extend_from_slice(&smac);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(&ip);
        frame.extend_from_slice(&tcp);
        let us = (t.max(0.0) * 1e6).round() as u64;
        let mut epb = Vec::with_capacity(20 + frame.len());
        epb.extend_from_slice(&0u32.to_le_bytes());
        epb.extend_from_slice(&((us >> 32) as u32).to_le_bytes());
        epb.extend_from_slice(&(us as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        epb.extend_from_slice(&frame);
        epb.resize(epb.len().next_multiple_of(4), 0);
        if !k.comments.is_empty() {
            for c in k.comments.drain(..) {
                let mut end = c.len().min(60_000);
                while !c.is_char_boundary(end) {
                    end -= 1;
                }
                option(&mut epb, 1, &c.as_bytes()[..end]);
            }
            option(&mut epb, 0, &[]);
        }
        out.extend(block(6, &epb));
        let used = payload.len() as u32 + u32::from(flags & (SYN | FIN) != 0);
        match d {
            Direction::C2S => k.seq_c = k.seq_c.wrapping_add(used),
            Direction::S2C => k.seq_s = k.seq_s.wrapping_add(used),
        }
    }
}

/// The IP header for a TCP segment between `src` and `dst` (IPv4, or IPv6
/// with a v4 address mapped), the TCP checksum filled in on the way.
fn ip_header(src: IpAddr, dst: IpAddr, tcp: &mut [u8]) -> (Vec<u8>, u16) {
    let tcp_len = tcp.len();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(dd)) => {
            let pseudo = [
                &s.octets()[..],
                &dd.octets()[..],
                &[0, 6],
                &(tcp_len as u16).to_be_bytes(),
            ]
            .concat();
            let c = checksum(&[&pseudo, tcp]);
            tcp[16..18].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0x45, 0];
            ip.extend_from_slice(&((20 + tcp_len) as u16).to_be_bytes());
            ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 6, 0, 0]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&dd.octets());
            let c = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&c.to_be_bytes());
            (ip, 0x0800u16)
        }
        (s, dd) => {
            let v6 = |a: IpAddr| match a {
                IpAddr::V6(a) => a,
                IpAddr::V4(a) => a.to_ipv6_mapped(),
            };
            let (s, dd) = (v6(s), v6(dd));
            let pseudo = [
                &s.octets()[..],
                &dd.octets()[..],
                &(tcp_len as u32).to_be_bytes(),
                &[0, 0, 0, 6],
            ]
            .concat();
            let c = checksum(&[&pseudo, tcp]);
            tcp[16..18].copy_from_slice(&c.to_be_bytes());
            let mut ip = vec![0x60, 0, 0, 0];
            ip.extend_from_slice(&(tcp_len as u16).to_be_bytes());
            ip.extend_from_slice(&[6, 64]);
            ip.extend_from_slice(&s.octets());
            ip.extend_from_slice(&dd.octets());
            (ip, 0x86DDu16)
        }
    }
}
