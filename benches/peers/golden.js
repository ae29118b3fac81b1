// The golden journey for k6 (https://k6.io), verifying what a minimal k6 check would: the
// eleven event types in order and gap-free seq. Run by benches/peers/compare.sh.
import http from 'k6/http';
import ws from 'k6/ws';
import { check } from 'k6';

export const options = {
  vus: Number(__ENV.VUS || 20),
  iterations: Number(__ENV.JOURNEYS || 2000),
  // A failed check fails the run, so a fast but wrong k6 run cannot count.
  thresholds: { checks: ['rate==1.0'] },
};

const BASE = __ENV.TARGET || 'http://127.0.0.1:8000';
const EVENTS = [
  'agent_started', 'agent_thinking', 'tool_executing', 'tool_completed',
  'agent_thinking', 'tool_executing', 'tool_completed',
  'agent_thinking', 'tool_executing', 'tool_completed', 'agent_completed',
];

export default function () {
  const login = http.post(`${BASE}/api/auth/login`,
    JSON.stringify({ email: 'vu@apex.test', password: 'correct-horse' }),
    { headers: { 'Content-Type': 'application/json' } });
  const token = login.json('access_token');
  let index = 0;
  let last = 0;
  let inOrder = true;
  ws.connect(`${BASE.replace('http', 'ws')}/ws`, { headers: { Authorization: `Bearer ${token}` } }, (socket) => {
    socket.on('open', () => socket.send(JSON.stringify({
      type: 'user_message',
      payload: { content: 'Where am I wasting money?', message_id: `k6-${__VU}-${__ITER}` },
    })));
    socket.on('message', (data) => {
      const frame = JSON.parse(data);
      if (frame.seq === undefined) return;
      if (frame.type !== EVENTS[index] || frame.seq !== last + 1) inOrder = false;
      last = frame.seq;
      index += 1;
      if (frame.type === 'agent_completed') {
        socket.send(JSON.stringify({ type: 'ack', seq: last }));
        socket.close();
      }
    });
    socket.setTimeout(() => socket.close(), 10000);
  });
  check(inOrder && index === EVENTS.length, { 'golden path in order': (ok) => ok });
}
