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
use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::net::{IpAddr, SocketAddr};

/// Out-of-order bytes held for one direction of a connection, at most.
mod ahead;
mod tcp;

pub use ahead::ReadAhead;
pub use tcp::Reassembler;

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

/// One TCP segment as sliced from a packet.
#[derive(Debug, PartialEq)]
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

/// Most packets of a capture by hand: Ethernet II, IPv4 without options,
/// whole and unfragmented, TCP. Anything else (VLAN tags, IP options,
/// IPv6, a packet cut short, a length that does not add up) is `None` and
/// goes through etherparse as before, which gives the same answer on these.
fn ethernet_v4_tcp(d: &[u8]) -> Option<Segment<'_>> {
    let be16 = |i: usize| u16::from_be_bytes([d[i], d[i + 1]]);
    let be32 = |i: usize| u32::from_be_bytes([d[i], d[i + 1], d[i + 2], d[i + 3]]);
    if d.len() < 14 + 20 + 20 || be16(12) != 0x0800 || d[14] != 0x45 || d[23] != 6 {
        return None;
    }
    let total = usize::from(be16(16));
    // Fragmented (more fragments, or an offset): not handled here.
    if be16(20) & 0x3fff != 0 || total < 40 || 14 + total > d.len() {
        return None;
    }
    let t = 14 + 20;
    let hl = usize::from(d[t + 12] >> 4) * 4;
    if hl < 20 || 20 + hl > total {
        return None;
    }
    let ip = |i: usize| std::net::Ipv4Addr::new(d[i], d[i + 1], d[i + 2], d[i + 3]);
    let flags = d[t + 13];
    let payload = &d[t + hl..14 + total];
    Some(Segment {
        src: SocketAddr::new(IpAddr::V4(ip(26)), be16(t)),
        dst: SocketAddr::new(IpAddr::V4(ip(30)), be16(t + 2)),
        seq: be32(t + 4),
        ack: (flags & 0x10 != 0).then(|| be32(t + 8)),
        syn: flags & 0x02 != 0,
        fin: flags & 0x01 != 0,
        rst: flags & 0x04 != 0,
        payload,
        real_len: payload.len(),
    })
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
    inner: Box<dyn PcapReaderIterator + Send>,
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

/// The reader's buffer: the file is read into it this much at a time (the
/// source need not be buffered as well: that would copy every byte once
/// more).
const READ_BUF: usize = 256 * 1024;

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
    pub fn new<R: Read + Send + 'static>(src: R, opts: Options) -> Result<PcapReader, FileError> {
        let mut magic_src = src;
        // The magic number decides; each reader parses its own header.
        let inner: Box<dyn PcapReaderIterator + Send> = {
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
                    pcap_parser::PcapNGReader::new(READ_BUF, chained)
                        .map_err(|e| file_error(0, format!("not a pcapng file: {e}")))?,
                )
            } else {
                Box::new(
                    pcap_parser::LegacyPcapReader::new(READ_BUF, chained)
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
                // Without the shift `consume` makes each time half the
                // buffer is read (moving the other half, 32 KiB, to its
                // front): the few bytes of a block cut at the buffer's end
                // are moved when it is refilled.
                self.inner.consume_noshift(used);
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
        let seg = match linktype {
            1 => ethernet_v4_tcp(data),
            _ => None,
        }
        .or_else(|| slice(linktype, data).and_then(|p| tcp_segment(&p)));
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Whatever the hand-sliced path reads, etherparse reads the same.
    #[test]
    fn the_fast_slice_agrees_with_etherparse() {
        let mut base = Vec::new();
        etherparse::PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
            .ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .tcp(50000, 8080, 0xfffffff0, 1024)
            .ack(77)
            .psh()
            .write(&mut base, b"\x81\x85abcdhello")
            .unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut fast_hits = 0;
        for round in 0..50_000 {
            let mut p = base.clone();
            if round > 0 {
                for _ in 0..(next() % 3 + 1) {
                    let at = (next() % 60) as usize;
                    p[at] = next() as u8;
                }
                match next() % 4 {
                    0 => p.truncate((next() as usize) % (p.len() + 1)),
                    1 => p.extend(std::iter::repeat_n(0, (next() % 20) as usize)),
                    _ => {}
                }
            }
            let slow = slice(1, &p).and_then(|x| tcp_segment(&x));
            if let Some(f) = ethernet_v4_tcp(&p) {
                fast_hits += 1;
                assert_eq!(Some(&f), slow.as_ref(), "{p:02x?}");
            }
        }
        assert!(fast_hits > 5_000, "{fast_hits}");
        assert!(ethernet_v4_tcp(&base).is_some());
    }
}
