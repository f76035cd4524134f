"""A Kinetid plug on Python's `websockets` client (a stack nobody here
wrote), minimal but to the contract: hello first, reports on period_s with
seq counting up across reconnects, unacknowledged reports resent with their
seq and ts, switch answered by state, unknown devices by not_found,
reconnect with back-off from 1 s doubling (reset after welcome).
It relays one passive plug (its id with the last digit changed), whose
switches it answers as if sent over the power line.
Usage: python websockets-plug.py URL DEVICE-ID SECONDS"""
import asyncio, json, random, sys, time
from websockets.asyncio.client import connect

url, dev, budget = sys.argv[1], sys.argv[2], float(sys.argv[3])
passive = dev[:-1] + ("0" if dev[-1] != "0" else "1")
passive_on = True
seq, on, energy, unacked = 0, True, 0.0, {}


welcomed = False


async def session():
    global seq, on, energy, welcomed, passive_on
    async with connect(url, subprotocols=["kinetid.v1"], open_timeout=5,
                       max_size=1 << 20, ping_interval=None) as ws:
        rid, sent = 0, {}

        def req(m):
            nonlocal rid
            rid += 1
            m.update(id=rid, dev=dev)
            if m["t"] == "report":
                sent[rid] = m["seq"]
            return json.dumps(m)

        await ws.send(req({"t": "hello", "fw": "py-websockets", "role": "active", "period_s": 60,
                            "passives": [passive]}))
        period, resend = 60.0, True
        next_at = time.time() + 3600
        while True:
            try:
                raw = await asyncio.wait_for(ws.recv(), max(0.01, next_at - time.time()))
            except asyncio.TimeoutError:
                seq += 1
                energy += 0.1
                r = {"t": "report", "ts": int(time.time()), "seq": seq, "on": on,
                     "power_w": 1.5 if on else 0.0, "energy_wh": round(energy, 3)}
                unacked[seq] = r
                await ws.send(req(dict(r)))
                next_at += period
                continue
            try:
                m = json.loads(raw)
            except (ValueError, TypeError):
                continue
            if not isinstance(m, dict):
                continue
            t = m.get("t")
            if t == "welcome":
                welcomed = True
                period = float(m.get("period_s", 60))
                next_at = time.time() + period
                if resend:
                    for r in list(unacked.values()):
                        await ws.send(req(dict(r)))
                    resend = False
            elif t == "ack":
                unacked.pop(sent.pop(m.get("re"), None), None)
            elif t == "switch":
                if m.get("dev") == passive:
                    was = passive_on
                    passive_on = (not was) if m.get("toggle") else bool(m.get("on"))
                    await ws.send(json.dumps({"t": "state", "re": m.get("id"), "dev": passive,
                                              "on": passive_on, "was_on": was, "src": "backend",
                                              "ts": int(time.time())}))
                    continue
                if m.get("dev") != dev:
                    await ws.send(json.dumps({"t": "error", "re": m.get("id"), "dev": m.get("dev"),
                                              "code": "not_found", "msg": "no such plug here"}))
                    continue
                was = on
                on = (not on) if m.get("toggle") else bool(m.get("on"))
                await ws.send(json.dumps({"t": "state", "re": m.get("id"), "dev": dev, "on": on,
                                          "was_on": was, "src": "backend", "ts": int(time.time())}))


async def main():
    global welcomed
    end = time.time() + budget
    backoff = 1.0
    while time.time() < end:
        welcomed = False
        try:
            await session()
        except Exception:
            pass
        if welcomed:
            backoff = 1.0
        await asyncio.sleep(backoff * (1 + random.random() * 0.2))
        backoff = min(backoff * 2, 60)

asyncio.run(main())
