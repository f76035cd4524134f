#!/usr/bin/env python3
"""A soak of every long-running command together, on 127.0.0.1 only.

    soak.py BIN DURATION_S [--plugs N] [--every S] [--dir DIR]

One `listen` (recording) behind two proxies: a steady fleet through the
first (`--delay 1ms --jitter 2ms`), and churn through the second, which cuts
every connection after 40 frames: short-lived emulators joining and leaving,
one in three killed with SIGKILL. Meanwhile API switches (round trip timed)
go to the steady plugs, text frames are injected down through the first
proxy, and a reader follows listen's inspector event stream, reconnecting
now and then. Every --every seconds a line gives each process's descriptors,
RSS and tasks, the reports sent and acknowledged, and the switch round trip
p99. At the end, with every emulator stopped:

* nothing lost: every report a plug saw acknowledged (from the plugs' own
  annotated traffic) is in listen's recording, and each plug's recorded
  seqs count up without a gap, checked by (dev, seq);
* nothing held: listen's and the proxies' descriptors and tasks are back at
  what they were before the first plug came.

The last line is the verdict: `soak: PASS ...` or `soak: FAIL ...` (exit 1).
Only the standard library is used.
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import urllib.request


def log(msg):
    print(msg, flush=True)


def start(bin_, args, stdout=subprocess.DEVNULL):
    """Start a command that prints 'listening on ADDR' on stderr; its address."""
    p = subprocess.Popen([bin_] + args, stdout=stdout, stderr=subprocess.PIPE, text=True)
    for _ in range(50):
        line = p.stderr.readline()
        if not line:
            raise SystemExit(f"soak: {args[0]} exited: {p.wait()}")
        if "listening on " in line:
            addr = line.split("listening on ")[1].split()[0].rstrip(",")
            threading.Thread(target=lambda: [None for _ in p.stderr], daemon=True).start()
            return p, addr
    raise SystemExit(f"soak: {args[0]} never said where it listens")


def http(addr, method, path, body=None, timeout=15):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"http://{addr}{path}", data=data, method=method)
    if body is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()
    except OSError as e:
        return 0, str(e)


def metric(text, name):
    total = 0.0
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key = line.split(" ")[0].split("{")[0]
        if key == name:
            try:
                total += float(line.rsplit(" ", 1)[1])
            except ValueError:
                pass
    return total


def held(pid, metrics_addr, path):
    """Descriptors, RSS (KiB) and tasks of a process."""
    try:
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        rss = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
    except OSError:
        return None
    tasks = metric(http(metrics_addr, "GET", path)[1], "kinetid_wsdump_tasks") if metrics_addr else 0
    return {"fds": fds, "rss_kib": rss, "tasks": int(tasks)}


class Acks:
    """Reads one emulator's `--dump --format json` stream: reports sent and
    the ones acknowledged, by (dev, seq)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.sent = 0
        self.acks = 0
        self.acked = set()

    def follow(self, stream, tag):
        by_id = {}
        for line in stream:
            if '"message"' not in line:
                continue
            try:
                e = json.loads(line)
                v = json.loads(e.get("text") or "null")
            except ValueError:
                continue
            if not isinstance(v, dict):
                continue
            key = (tag, e.get("conn"))
            if e.get("dir") == "c2s" and v.get("t") == "report":
                by_id[key + (v.get("id"),)] = (v.get("dev"), v.get("seq"))
                with self.lock:
                    self.sent += 1
            elif e.get("dir") == "s2c" and v.get("t") == "ack":
                k = by_id.pop(key + (v.get("re"),), None)
                if k:
                    with self.lock:
                        self.acks += 1
                        self.acked.add(k)


def emulator(bin_, url, acks, tag, count, seed, duration, interval="1s"):
    p = subprocess.Popen(
        [bin_, "emulate-device", "--url", url, "--count", str(count), "--seed", str(seed),
         "--interval", interval, "--duration", f"{duration}s", "--dump", "--format", "json",
         "--color", "never"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    threading.Thread(target=acks.follow, args=(p.stdout, tag), daemon=True).start()
    return p


def p99(xs):
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, int(len(s) * 0.99))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin")
    ap.add_argument("duration", type=float)
    ap.add_argument("--plugs", type=int, default=40)
    ap.add_argument("--every", type=float, default=60)
    ap.add_argument("--dir", default="target/soak")
    a = ap.parse_args()
    os.makedirs(a.dir, exist_ok=True)
    rec = os.path.join(a.dir, f"listen-{os.getpid()}.txt")
    bin_ = a.bin
    rng = random.Random(6455)

    lp, laddr = start(bin_, ["listen", "--bind", "127.0.0.1:0", "--quiet", "--no-console",
                             "--record", rec, "--ping-interval", "5s"])
    up = f"ws://{laddr}/ws"
    common = ["--bind", "127.0.0.1:0", "--quiet", "--no-console", "--color", "never"]
    pa, paddr = start(bin_, ["proxy", "--upstream", up, "--delay", "1ms", "--jitter", "2ms"] + common)
    pb, pbaddr = start(bin_, ["proxy", "--upstream", up, "--cut-after", "40f"] + common)
    procs = {"listen": (lp, laddr, "/metrics"), "proxy": (pa, paddr, "/api/metrics"),
             "proxy-cut": (pb, pbaddr, "/api/metrics")}
    time.sleep(0.5)
    base = {k: held(p.pid, addr, path) for k, (p, addr, path) in procs.items()}
    log(f"soak: {a.duration:.0f} s, {a.plugs} steady plugs via {paddr}, churn via {pbaddr}, "
        f"listen {laddr} recording {rec}")
    log(f"soak: baseline {json.dumps(base)}")

    acks = Acks()
    stop = threading.Event()
    steady = emulator(bin_, f"ws://{paddr}/ws", acks, "steady", a.plugs, 1, int(a.duration) + 5)
    rtts, switch_fail, injected = [], [0], [0]
    churned, killed = [0], [0]

    def switches():
        while not stop.wait(2.0):
            st, body = http(laddr, "GET", "/api/devices")
            try:
                devs = [d["id"] for d in json.loads(body) if d.get("online")]
            except (ValueError, TypeError, KeyError):
                continue
            if not devs:
                continue
            t0 = time.monotonic()
            st, _ = http(laddr, "POST", f"/api/devices/{rng.choice(devs)}/switch", {"toggle": True})
            if st == 200:
                rtts.append((time.monotonic() - t0) * 1000)
            else:
                switch_fail[0] += 1

    def injections():
        while not stop.wait(5.0):
            st, body = http(paddr, "GET", "/api/devices")
            try:
                conns = sorted({d["conn"] for d in json.loads(body) if d.get("online")})
            except (ValueError, TypeError, KeyError):
                continue
            if conns:
                st, _ = http(paddr, "POST", f"/api/conns/{rng.choice(conns)}/inject",
                             {"dir": "down", "text": '{"t":"soak-probe"}'})
                if st == 202:
                    injected[0] += 1

    def page():
        # Listen's inspector stream, read for a while, then again.
        import socket
        while not stop.is_set():
            try:
                host, port = laddr.rsplit(":", 1)
                s = socket.create_connection((host, int(port)), timeout=5)
                s.sendall(f"GET /api/events HTTP/1.1\r\nHost: {laddr}\r\n\r\n".encode())
                end = time.monotonic() + 20
                while time.monotonic() < end and not stop.is_set():
                    try:
                        if not s.recv(65536):
                            break
                    except socket.timeout:
                        pass
                s.close()
            except OSError:
                stop.wait(1)

    def churn():
        # A pool of seeds, round robin: a plug that leaves comes back later
        # (as after a power cut: its seq starts again), so the device table
        # stays the size of the fleet; no two live emulators share a seed
        # (the pool outlasts the longest life, 12 x 3 s > 15 s).
        n = 0
        live = []
        while not stop.wait(3.0):
            n += 1
            seed = 1000 + n % 12
            p = emulator(bin_, f"ws://{pbaddr}/ws", acks, f"churn{n}", 3, seed,
                         rng.randint(4, 15), interval="500ms")
            live.append((p, n % 3 == 0, time.monotonic() + rng.uniform(2, 6)))
            churned[0] += 1
            for item in list(live):
                p, kill, at = item
                if p.poll() is not None:
                    live.remove(item)
                elif kill and time.monotonic() > at:
                    p.kill()
                    killed[0] += 1
                    live.remove(item)
        for p, _, _ in live:
            p.send_signal(signal.SIGINT)
        for p, _, _ in live:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()

    threads = [threading.Thread(target=f, daemon=True) for f in (switches, injections, page)]
    churner = threading.Thread(target=churn)
    for t in threads + [churner]:
        t.start()
    t0 = time.monotonic()
    next_line = t0 + a.every
    while time.monotonic() - t0 < a.duration:
        time.sleep(min(1.0, max(0.0, next_line - time.monotonic())))
        if time.monotonic() >= next_line:
            next_line += a.every
            now = {k: held(p.pid, addr, path) for k, (p, addr, path) in procs.items()}
            with acks.lock:
                sent, acked = acks.sent, acks.acks
            log(f"soak: t={time.monotonic() - t0:.0f}s " + " ".join(
                f"{k} fds={v['fds']} rss={v['rss_kib'] // 1024}MiB tasks={v['tasks']}"
                for k, v in now.items() if v) +
                f" | reports sent={sent} acked={acked} | switches {len(rtts)} p99={p99(rtts):.1f}ms "
                f"failed={switch_fail[0]} | injected={injected[0]} churned={churned[0]} killed={killed[0]}")
    stop.set()
    churner.join()
    steady.send_signal(signal.SIGINT)
    try:
        steady.wait(timeout=20)
    except subprocess.TimeoutExpired:
        steady.kill()
    time.sleep(1.0)
    # Nothing held: every device gone, the servers back at their baseline.
    settle = time.monotonic() + 15
    while True:
        after = {k: held(p.pid, addr, path) for k, (p, addr, path) in procs.items()}
        leaks = [k for k in base if after[k] is None or after[k]["fds"] > base[k]["fds"]
                 or after[k]["tasks"] > base[k]["tasks"]]
        if not leaks or time.monotonic() > settle:
            break
        time.sleep(0.5)
    log(f"soak: after {json.dumps(after)}")
    for p, _, _ in procs.values():
        p.send_signal(signal.SIGINT)
    for p, _, _ in procs.values():
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
            leaks.append("a process that did not stop")

    # Nothing lost, by (dev, seq).
    out = subprocess.run([bin_, "replay", "--format", "json", rec], capture_output=True, text=True)
    recorded, by_id = set(), {}
    for line in out.stdout.splitlines():
        if '"report"' not in line:
            continue
        e = json.loads(line)
        try:
            v = json.loads(e.get("text") or "null")
        except ValueError:
            continue
        if isinstance(v, dict) and e.get("dir") == "c2s" and v.get("t") == "report":
            recorded.add((v.get("dev"), v.get("seq")))
    missing = sorted(acks.acked - recorded)
    per_dev = {}
    for d, s in recorded:
        per_dev.setdefault(d, []).append(s)
    gaps = {d: (min(s), max(s), len(s)) for d, s in per_dev.items()
            if max(s) - min(s) + 1 != len(s)}
    problems = []
    if missing:
        problems.append(f"{len(missing)} acknowledged reports in no recording, e.g. {missing[:3]}")
    if gaps:
        problems.append(f"seq gaps for {len(gaps)} plugs, e.g. {list(gaps.items())[:3]}")
    if leaks:
        problems.append(f"not back at baseline: {leaks}")
    if not acks.acked:
        problems.append("no report was acknowledged")
    summary = (f"{len(acks.acked)} acknowledged reports of {len(per_dev)} plugs all recorded, "
               f"no seq gap; {len(rtts)} switches p99 {p99(rtts):.1f} ms ({switch_fail[0]} failed); "
               f"{churned[0]} emulators churned, {killed[0]} killed; {injected[0]} injections")
    if problems:
        log("soak: FAIL " + "; ".join(problems) + f" ({summary})")
        sys.exit(1)
    log(f"soak: PASS nothing lost, nothing held: {summary}")


if __name__ == "__main__":
    main()
