// A Kinetid plug played by Node's `ws` client (a stack nobody here wrote):
// hello, three reports each waited for its ack, a ping, a Close 1000.
// Usage: node ws-device.js URL DEVICE-ID [deflate]
'use strict';
const WebSocket = require('ws');
const [url, dev, mode] = process.argv.slice(2);
const ws = new WebSocket(url, ['kinetid.v1'], { perMessageDeflate: mode === 'deflate' });
const timer = setTimeout(() => { console.error('ws-device: timed out'); process.exit(2); }, 10000);
let id = 1;
let seq = 0;
const send = (m) => ws.send(JSON.stringify(Object.assign({ id: id++, dev }, m)));
const report = () => {
  seq += 1;
  send({ t: 'report', ts: 1767225600 + 60 * seq, seq, on: true, power_w: 1.5, energy_wh: seq });
};
ws.on('open', () => send({ t: 'hello', fw: 'node-ws', role: 'active', period_s: 60 }));
ws.on('message', (data) => {
  const m = JSON.parse(data.toString());
  if (m.t === 'welcome') report();
  else if (m.t === 'ack' && seq < 3) report();
  else if (m.t === 'ack') { ws.ping('nd'); }
});
ws.on('pong', () => ws.close(1000, 'bye'));
ws.on('close', () => { clearTimeout(timer); process.exit(0); });
ws.on('error', (e) => { console.error('ws-device:', e.message); process.exit(1); });
