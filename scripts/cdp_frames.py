"""How smooth is the inspector page? Attach to headless Chromium's page over
the DevTools protocol, time SECONDS of animation frames and report their
intervals (p50, p99, max), the rows the page keeps and its JavaScript heap.

Usage: python cdp_frames.py PROFILE_DIR SECONDS
(PROFILE_DIR: the --user-data-dir Chromium was started with and
--remote-debugging-port=0; its DevToolsActivePort file names the port.)
Needs the `websockets` package (scripts/setup-peers.sh installs it).
"""
import asyncio
import json
import sys
import time
import urllib.request

import websockets

MEASURE = """
new Promise((done) => {
  const gaps = []; let last = performance.now(); const end = last + %d;
  function f(t) { gaps.push(t - last); last = t; if (t < end) requestAnimationFrame(f); else done(gaps); }
  requestAnimationFrame(f);
})
"""


async def main(profile, secs):
    port = None
    for _ in range(100):
        try:
            port = int(open(f"{profile}/DevToolsActivePort").read().split()[0])
            break
        except (OSError, ValueError, IndexError):
            time.sleep(0.1)
    targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list"))
    page = next(t for t in targets if t["type"] == "page")
    async with websockets.connect(page["webSocketDebuggerUrl"], max_size=None) as ws:
        n = 0

        async def call(method, params):
            nonlocal n
            n += 1
            await ws.send(json.dumps({"id": n, "method": method, "params": params}))
            while True:
                m = json.loads(await ws.recv())
                if m.get("id") == n:
                    return m.get("result", {})

        async def js(expr):
            r = await call("Runtime.evaluate", {"expression": expr, "returnByValue": True, "awaitPromise": True})
            return r.get("result", {}).get("value")

        gaps = await js(MEASURE % (secs * 1000))
        gaps = sorted(gaps or [0])
        q = lambda p: gaps[min(len(gaps) - 1, int(p * len(gaps)))]
        rows = await js("S.items.length")
        conns = await js("S.conns.size")
        heap = await js("performance.memory ? performance.memory.usedJSHeapSize : 0")
        print(f"{len(gaps)} frames in {secs} s: interval p50 {q(0.5):.1f} ms, p99 {q(0.99):.1f} ms, "
              f"max {gaps[-1]:.1f} ms; {rows} rows kept, {conns} connections, JS heap {heap / 2**20:.1f} MiB")


asyncio.run(main(sys.argv[1], int(sys.argv[2])))
