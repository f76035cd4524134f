#!/usr/bin/env python3
"""Writes one Kinetid session of N frames, for benchmarks and tests.

The session is what a well-behaved active plug and the backend exchange:
the HTTP upgrade, hello/welcome, then a report (masked, device to server)
and its ack (server to device) per minute, and a close handshake at the
end. Every byte is computed here (RFC 6455 5.2 framing, masking keys from
a seeded generator, so the same N gives the same files).

Outputs, any of them:
  --cap FILE     the tool's text capture format (`listen --record`)
  --pcap FILE    classic pcap, Ethernet + IPv4 + TCP, one segment per
                 read/write, correct sequence numbers and checksums
  --hex FILE     a hex fixture

Usage: python3 scripts/gen_session.py N [--cap F] [--pcap F] [--hex F]
"""
import argparse, base64, hashlib, json, random, struct

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
DEV = "KN-A4CF12F0E1B2"
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
T0 = 1767225600


def frame(op, payload, mask=None):
    b = bytearray([0x80 | op])
    n = len(payload)
    m = 0x80 if mask is not None else 0
    if n <= 125:
        b.append(m | n)
    elif n <= 0xFFFF:
        b.append(m | 126); b += struct.pack(">H", n)
    else:
        b.append(m | 127); b += struct.pack(">Q", n)
    if mask is not None:
        b += mask
        k = (mask * (n // 4 + 1))[:n]
        b += bytes(x ^ y for x, y in zip(payload, k))
    else:
        b += payload
    return bytes(b)


def j(o):
    return json.dumps(o, separators=(",", ":")).encode()


def session(n):
    """(time, direction, bytes) records; n frames after the handshake."""
    rng = random.Random(6455)
    key = lambda: bytes(rng.getrandbits(8) for _ in range(4))
    req = (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: kinetid.v1\r\n\r\n")
    acc = base64.b64encode(hashlib.sha1((KEY + GUID).encode()).digest()).decode()
    resp = (f"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {acc}\r\nSec-WebSocket-Protocol: kinetid.v1\r\n\r\n")
    t = float(T0)
    out = [(t, "c2s", req.encode()), (t + 0.0005, "s2c", resp.encode())]
    hello = j({"t": "hello", "id": 1, "dev": DEV, "fw": "1.4.2", "role": "active", "mains_v": 230,
               "mains_hz": 50, "period_s": 60, "passives": []})
    out.append((t + 0.01, "c2s", frame(1, hello, key())))
    out.append((t + 0.0105, "s2c", frame(1, j({"t": "welcome", "re": 1, "ts": T0, "period_s": 60}))))
    i, seq = 2, 1
    energy = 123456.7
    remaining = max(n - 4, 0)  # hello, welcome and the two closes count
    while remaining >= 2:
        ts = T0 + 60 * seq
        power = round(1400 + rng.random() * 60, 1)
        energy = round(energy + power / 60, 1)
        rep = j({"t": "report", "id": i, "dev": DEV, "ts": ts, "seq": seq, "on": True, "power_w": power,
                 "voltage_v": 231.4, "current_a": round(power / 231.4, 2), "pf": 1.0, "freq_hz": 50.01,
                 "energy_wh": energy})
        out.append((float(ts), "c2s", frame(1, rep, key())))
        out.append((ts + 0.0004, "s2c", frame(1, j({"t": "ack", "re": i}))))
        i += 1; seq += 1; remaining -= 2
    t = float(T0 + 60 * seq)
    out.append((t, "c2s", frame(8, struct.pack(">H", 1000), key())))
    out.append((t + 0.0004, "s2c", frame(8, struct.pack(">H", 1000))))
    return out


def write_cap(path, recs):
    with open(path, "w") as f:
        f.write("# kinetid-wsdump capture v1\n")
        f.write(f"{recs[0][0]:.6f} 1 open 192.168.1.23:49152\n")
        for t, d, b in recs:
            f.write(f"{t:.6f} 1 {d} {b.hex()}\n")
        f.write(f"{recs[-1][0]:.6f} 1 eof\n")


def write_hex(path, recs):
    with open(path, "w") as f:
        f.write("# a generated Kinetid session (scripts/gen_session.py)\n")
        for _, d, b in recs:
            mark = ">" if d == "c2s" else "<"
            for k in range(0, len(b), 32):
                f.write(f"{mark} {b[k:k + 32].hex(' ')}\n")


def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def write_pcap(path, recs):
    dev_ip, srv_ip = bytes([192, 168, 1, 23]), bytes([192, 168, 1, 10])
    dev_port, srv_port = 49152, 8080
    dev_mac, srv_mac = bytes.fromhex("a4cf12f0e1b2"), bytes.fromhex("020000000001")
    seq = {"c2s": 1000, "s2c": 5000}
    ident = [1]

    def packet(t, d, flags, payload):
        if d == "c2s":
            sip, dip, sp, dp, smac, dmac, other = dev_ip, srv_ip, dev_port, srv_port, dev_mac, srv_mac, "s2c"
        else:
            sip, dip, sp, dp, smac, dmac, other = srv_ip, dev_ip, srv_port, dev_port, srv_mac, dev_mac, "c2s"
        tcp = struct.pack("!HHIIBBHHH", sp, dp, seq[d] & 0xFFFFFFFF, seq[other] & 0xFFFFFFFF, 5 << 4, flags, 65535, 0, 0)
        pseudo = sip + dip + struct.pack("!BBH", 0, 6, len(tcp) + len(payload))
        c = csum(pseudo + tcp + payload)
        tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp) + len(payload), ident[0] & 0xFFFF, 0x4000, 64, 6, 0, sip, dip)
        ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
        ident[0] += 1
        eth = dmac + smac + b"\x08\x00"
        pkt = eth + ip + tcp + payload
        sec = int(t)
        usec = int(round((t - sec) * 1e6))
        f.write(struct.pack("<IIII", sec, usec, len(pkt), len(pkt)) + pkt)
        seq[d] += len(payload) + (1 if flags & 0x03 else 0)

    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 262144, 1))
        t0 = recs[0][0] - 0.001
        SYN, ACK, PSH, FIN = 0x02, 0x10, 0x08, 0x01
        packet(t0, "c2s", SYN, b"")
        packet(t0 + 0.0001, "s2c", SYN | ACK, b"")
        packet(t0 + 0.0002, "c2s", ACK, b"")
        for t, d, b in recs:
            packet(t, d, PSH | ACK, b)
        t = recs[-1][0] + 0.001
        packet(t, "s2c", FIN | ACK, b"")
        packet(t + 0.0001, "c2s", FIN | ACK, b"")
        packet(t + 0.0002, "s2c", ACK, b"")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("frames", type=int)
    ap.add_argument("--cap")
    ap.add_argument("--pcap")
    ap.add_argument("--hex")
    a = ap.parse_args()
    recs = session(a.frames)
    if a.cap:
        write_cap(a.cap, recs)
    if a.pcap:
        write_pcap(a.pcap, recs)
    if a.hex:
        write_hex(a.hex, recs)


if __name__ == "__main__":
    main()
