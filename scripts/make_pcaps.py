#!/usr/bin/env python3
"""Writes synthetic packet captures for the pcap tests into OUTDIR.

Every case is one Kinetid session (scripts/gen_session.py) put on the wire
in a different way: reordered, retransmitted, with a lost segment, starting
mid-stream, with sequence numbers that wrap, over IPv6, VLAN-tagged, Linux
cooked (SLL, SLL2), BSD loopback, as pcapng with two interfaces of different
timestamp resolutions, cut short, snapshot-limited, corrupted, gzipped, and
next to traffic that is not WebSocket. Each file's expectations are written
to OUTDIR/cases.json for the test that reads them.

Usage: python3 scripts/make_pcaps.py OUTDIR
"""
import gzip, json, os, struct, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gen_session import csum, session  # noqa: E402

DEV4, SRV4 = bytes([192, 168, 1, 23]), bytes([192, 168, 1, 10])
DEV6 = bytes.fromhex("fd000000000000000000000000000023")
SRV6 = bytes.fromhex("fd000000000000000000000000000010")
DEV_PORT, SRV_PORT = 49152, 8080
SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def tcp_segments(recs, isn_c=1000, isn_s=5000, split=None, handshake=True):
    """(time, dir, flags, seq, ack, payload) for a session, with SYN/FIN."""
    seq = {"c2s": isn_c, "s2c": isn_s}
    out = []
    t0 = recs[0][0] - 0.001

    def add(t, d, flags, payload):
        other = "s2c" if d == "c2s" else "c2s"
        out.append((t, d, flags, seq[d] & 0xFFFFFFFF, seq[other] & 0xFFFFFFFF, payload))
        seq[d] += len(payload) + (1 if flags & (SYN | FIN) else 0)

    if handshake:
        add(t0, "c2s", SYN, b"")
        out[-1] = out[-1][:4] + (0,) + out[-1][5:]
        add(t0 + 0.0001, "s2c", SYN | ACK, b"")
        add(t0 + 0.0002, "c2s", ACK, b"")
    for t, d, b in recs:
        if split and len(b) > split:
            for k in range(0, len(b), split):
                add(t, d, PSH | ACK, b[k:k + split])
        else:
            add(t, d, PSH | ACK, b)
    t = recs[-1][0] + 0.001
    add(t, "s2c", FIN | ACK, b"")
    add(t + 0.0001, "c2s", FIN | ACK, b"")
    add(t + 0.0002, "s2c", ACK, b"")
    return out


def ip_tcp(seg, v6=False):
    t, d, flags, seq, ack, payload = seg
    if v6:
        sip, dip = (DEV6, SRV6) if d == "c2s" else (SRV6, DEV6)
    else:
        sip, dip = (DEV4, SRV4) if d == "c2s" else (SRV4, DEV4)
    sp, dp = (DEV_PORT, SRV_PORT) if d == "c2s" else (SRV_PORT, DEV_PORT)
    tcp = struct.pack("!HHIIBBHHH", sp, dp, seq, ack, 5 << 4, flags, 65535, 0, 0)
    if v6:
        pseudo = sip + dip + struct.pack("!IxxxB", len(tcp) + len(payload), 6)
    else:
        pseudo = sip + dip + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
    c = csum(pseudo + tcp + payload)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    if v6:
        ip = struct.pack("!IHBB16s16s", 6 << 28, len(tcp) + len(payload), 6, 64, sip, dip)
        return ip + tcp + payload, 0x86DD
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), 1, 0x4000, 64, 6, 0, sip, dip)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + tcp + payload, 0x0800


def link(linktype, pkt, ethertype, d, vlan=False):
    dmac, smac = bytes.fromhex("020000000001"), bytes.fromhex("a4cf12f0e1b2")
    if d == "s2c":
        dmac, smac = smac, dmac
    if linktype == 1:
        if vlan:
            return dmac + smac + struct.pack("!HHH", 0x8100, 42, ethertype) + pkt
        return dmac + smac + struct.pack("!H", ethertype) + pkt
    if linktype == 113:  # SLL: type, ARPHRD, addr len, addr(8), protocol
        return struct.pack("!HHH8sH", 0 if d == "s2c" else 4, 1, 6, smac + b"\0\0", ethertype) + pkt
    if linktype == 276:  # SLL2: protocol, reserved, ifindex, ARPHRD, type, addr len, addr(8)
        return struct.pack("!HHIHBB8s", ethertype, 0, 1, 1, 0 if d == "s2c" else 4, 6, smac + b"\0\0") + pkt
    if linktype == 0:  # BSD loopback: family in host (little-endian) order
        return struct.pack("<I", 2 if ethertype == 0x0800 else 30) + pkt
    if linktype == 101:
        return pkt
    raise ValueError(linktype)


def write_pcap(path, segs, linktype=1, v6=False, vlan=False, snaplen=262144, nanos=False):
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype))
        for seg in segs:
            pkt, et = ip_tcp(seg, v6)
            frame = link(linktype, pkt, et, seg[1], vlan)
            cap = frame[:snaplen]
            t = seg[0]
            sec = int(t)
            frac = int(round((t - sec) * (1e9 if nanos else 1e6)))
            f.write(struct.pack("<IIII", sec, frac, len(cap), len(frame)) + cap)


def pcapng_block(btype, body):
    body += b"\0" * (-len(body) % 4)
    n = len(body) + 12
    return struct.pack("<II", btype, n) + body + struct.pack("<I", n)


def write_pcapng_two_ifaces(path, segs):
    """Interface 0: microseconds; interface 1: nanoseconds (if_tsresol 9).
    Device-to-server packets go on interface 0, the others on 1."""
    with open(path, "wb") as f:
        f.write(pcapng_block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1)))
        f.write(pcapng_block(1, struct.pack("<HHI", 1, 0, 262144) + struct.pack("<HH", 0, 0)))
        opt = struct.pack("<HHB", 9, 1, 9) + b"\0\0\0" + struct.pack("<HH", 0, 0)
        f.write(pcapng_block(1, struct.pack("<HHI", 1, 0, 262144) + opt))
        for seg in segs:
            pkt, et = ip_tcp(seg)
            frame = link(1, pkt, et, seg[1])
            iface = 0 if seg[1] == "c2s" else 1
            ts = int(round(seg[0] * (1e6 if iface == 0 else 1e9)))
            body = struct.pack("<IIIII", iface, ts >> 32, ts & 0xFFFFFFFF, len(frame), len(frame)) + frame
            f.write(pcapng_block(6, body))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    recs = session(12)  # handshake, hello/welcome, 4 reports and acks, closes
    frames = sum(1 for r in recs if r[2][:3] not in (b"GET", b"HTT"))
    cases = {}

    def case(name, segs, expect, **kw):
        write_pcap(os.path.join(out, name), segs, **kw)
        cases[name] = expect

    base = tcp_segments(recs)
    whole = {"conns": 1, "frames": frames, "notes": []}
    case("session.pcap", base, whole)
    case("nanos.pcap", base, whole, nanos=True)
    case("split.pcap", tcp_segments(recs, split=7), whole)
    # Out of order: every pair of data segments swapped.
    ro = base[:3]
    data = base[3:-3]
    for k in range(0, len(data) - 1, 2):
        ro += [data[k + 1], data[k]]
    if len(data) % 2:
        ro.append(data[-1])
    case("reorder.pcap", ro + base[-3:], whole)
    # Retransmissions: every data segment twice, one with different bytes.
    rt = base[:3]
    for k, s in enumerate(data):
        rt.append(s)
        if k == 4:
            bad = bytearray(s[5]); bad[-1] ^= 0x20
            rt.append(s[:5] + (bytes(bad),))
        else:
            rt.append(s)
    case("retransmit.pcap", rt + base[-3:], {"conns": 1, "frames": frames, "notes": ["capture-overlap-differs"]})
    # A lost device-to-server segment (the third report): the server's ack
    # covers it, so the capture missed it, not the server.
    lost_at = [i for i, s in enumerate(base) if s[1] == "c2s" and len(s[5]) > 100][2]
    case("gap.pcap", base[:lost_at] + base[lost_at + 1:],
         {"conns": 1, "frames": frames - 1, "notes": ["capture-gap"]})
    # Sequence numbers that wrap around 2^32 in both directions.
    case("wrap.pcap", tcp_segments(recs, isn_c=0xFFFFFF00, isn_s=0xFFFFFFF0), whole)
    # Started mid-stream: no SYN, no upgrade; found with --port 8080.
    case("midstream.pcap", tcp_segments(recs, handshake=False)[6:],
         {"conns": 1, "frames": frames - 4, "notes": ["capture-start-missed"], "port": 8080})
    case("ipv6.pcap", base, whole, v6=True)
    case("vlan.pcap", base, whole, vlan=True)
    case("sll.pcap", base, whole, linktype=113)
    case("sll2.pcap", base, whole, linktype=276)
    case("null.pcap", base, whole, linktype=0)
    case("raw.pcap", base, whole, linktype=101)
    # A snapshot length that cuts the reports short.
    case("snaplen.pcap", base, {"conns": 1, "frames_at_least": 3, "notes": ["capture-gap"]}, snaplen=200)
    write_pcapng_two_ifaces(os.path.join(out, "two-ifaces.pcapng"), base)
    cases["two-ifaces.pcapng"] = whole
    # Cut inside the last packet.
    full = open(os.path.join(out, "session.pcap"), "rb").read()
    open(os.path.join(out, "truncated.pcap"), "wb").write(full[:-30])
    cases["truncated.pcap"] = {"conns": 1, "frames_at_least": frames - 1, "error": "cut short"}
    # A pcapng block whose length is garbage, after a few packets.
    ng = open(os.path.join(out, "two-ifaces.pcapng"), "rb").read()
    blocks, pos = [], 0
    while pos < len(ng):
        n = struct.unpack_from("<I", ng, pos + 4)[0]
        blocks.append(ng[pos:pos + n]); pos += n
    bad = bytearray(blocks[10]); bad[4:8] = struct.pack("<I", 0xFFFFFFF0)
    open(os.path.join(out, "corrupt.pcapng"), "wb").write(b"".join(blocks[:10]) + bytes(bad) + b"".join(blocks[11:]))
    cases["corrupt.pcapng"] = {"conns": 1, "frames_at_least": 1, "error": "byte"}
    with open(os.path.join(out, "session.pcap"), "rb") as src, gzip.open(os.path.join(out, "session.pcap.gz"), "wb") as dst:
        dst.write(src.read())
    cases["session.pcap.gz"] = whole
    # Other traffic: a plain HTTP connection on another port, and UDP.
    other = []
    for s in tcp_segments([(recs[0][0], "c2s", b"GET /index.html HTTP/1.1\r\nHost: x\r\n\r\n"),
                           (recs[0][0] + 0.001, "s2c", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")]):
        other.append(s)
    path = os.path.join(out, "mixed.pcap")
    write_pcap(path, base)
    with open(path, "ab") as f:
        for seg in other:
            pkt, et = ip_tcp(seg)
            at = 20 if seg[1] == "c2s" else 22  # another client port
            pkt = pkt[:at] + struct.pack("!H", 40000) + pkt[at + 2:]
            frame = link(1, pkt, et, seg[1])
            f.write(struct.pack("<IIII", int(seg[0]), 0, len(frame), len(frame)) + frame)
        udp = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28, 1, 0, 64, 17, 0, DEV4, SRV4) + struct.pack("!HHHH", 5353, 5353, 8, 0)
        frame = link(1, udp, 0x0800, "c2s")
        f.write(struct.pack("<IIII", int(recs[0][0]), 0, len(frame), len(frame)) + frame)
    cases["mixed.pcap"] = dict(whole, other_conns=1, not_tcp=1)
    json.dump(cases, open(os.path.join(out, "cases.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
