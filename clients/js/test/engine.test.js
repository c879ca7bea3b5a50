// The client against a real ringrpc engine over WebSocket (ws package on Node 20).

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { RingClient, RpcError, TimeoutError, DisconnectedError, bytesToText } from '../ringrpc.js';
import { startEngine, sleep, until, once } from '../support/engine.js';

let engine;
const clients = [];
const engines = [];
const tmpDirs = [];

function tmpDir() {
  const d = mkdtempSync(path.join(tmpdir(), 'ringrpc-js-'));
  tmpDirs.push(d);
  return d;
}

async function client(url, opts = {}) {
  const c = await RingClient.connect(url, { WebSocket, timeout: 10000, reconnect: false, ...opts });
  clients.push(c);
  return c;
}

async function engineWith(args = [], port = 0) {
  const e = await startEngine({ args, port });
  engines.push(e);
  return e;
}

before(async () => {
  engine = await engineWith(['--pubsub']);
});

after(async () => {
  for (const c of clients) c.close();
  await Promise.all(engines.map((e) => e.kill()));
  for (const d of tmpDirs) rmSync(d, { recursive: true, force: true });
});

test('call /echo with UTF-8 and binary payloads', async () => {
  const c = await client(engine.url);
  assert.equal(await c.callText('/echo', 'héllo wörld 🌍'), 'héllo wörld 🌍');
  const bin = Uint8Array.from({ length: 70000 }, (_, i) => (i * 31) & 0xff);
  assert.deepEqual(await c.call('/echo', bin), bin);
  assert.equal((await c.call('/echo', '')).length, 0);
  assert.equal((await c.call('/echo')).length, 0);
  assert.deepEqual([...(await c.call('/echo', new Uint16Array([1, 258]).buffer))], [1, 0, 2, 1]);
});

test('1000 concurrent calls: answers matched by seq past 256', async () => {
  const c = await client(engine.url);
  const n = 1000;
  const answers = await Promise.all(Array.from({ length: n }, (_, i) => c.callText('/echo', `call ${i}`)));
  answers.forEach((a, i) => assert.equal(a, `call ${i}`));
  assert.ok(c._nextSeq > 1000n);
});

test('seq across 2^32 and near 2^64 round-trips through the engine', async () => {
  for (const first of [(1n << 32n) - 3n, (1n << 64n) - 3n]) {
    const c = await client(engine.url, { firstSeq: first });
    const answers = await Promise.all(Array.from({ length: 8 }, (_, i) => c.callText('/echo', `s${i}`)));
    answers.forEach((a, i) => assert.equal(a, `s${i}`));
  }
});

test('error Response rejects with the server text', async () => {
  const c = await client(engine.url);
  await assert.rejects(c.call('/nope', 'x'), (e) => e instanceof RpcError && e.message === 'method not found' && e.method === '/nope');
  assert.equal(await c.callText('/echo', 'still fine'), 'still fine');
});

test('notify is never answered and the connection stays usable', async () => {
  const c = await client(engine.url);
  c.notify('/echo', 'fire and forget');
  c.notify('/unknown', 'also fine');
  assert.equal(await c.callText('/echo', 'after'), 'after');
});

test('metadata is sent in the md block the engine strips', async () => {
  const c = await client(engine.url);
  const r = await c.callWithMetadata('/echo', 'payload', { metadata: { trace: 'abc', bin: new Uint8Array([0, 1, 2]) } });
  assert.equal(bytesToText(r.payload), 'payload');
  assert.equal(r.metadata, null);
  assert.equal(await c.callText('/echo', 'x', { async: true, userFlags: 0x20 }), 'x');
});

test('call timeout: a stopped engine never answers; the timer rejects, nothing throws', async () => {
  const e = await engineWith();
  const c = await client(e.url);
  assert.equal(await c.callText('/echo', 'up'), 'up');
  await e.pause();
  try {
    const t0 = Date.now();
    await assert.rejects(c.call('/echo', 'never', { timeout: 300 }), TimeoutError);
    const took = Date.now() - t0;
    assert.ok(took >= 290 && took < 3000, `took ${took} ms`);
  } finally {
    e.resume();
  }
  // The late answer (if any) is ignored, and the connection still works.
  assert.equal(await c.callText('/echo', 'again'), 'again');
});

test('disconnect fails every pending call at once', async () => {
  const e = await engineWith();
  const c = await client(e.url, { timeout: 60000 });
  await e.pause();
  const calls = Array.from({ length: 20 }, (_, i) => c.call('/echo', `p${i}`));
  const s = c.openStream('/echo/stream');
  await s.send('x');
  await sleep(100);
  const t0 = Date.now();
  await e.kill('SIGKILL');
  const results = await Promise.allSettled([...calls, s.recv()]);
  const took = Date.now() - t0;
  for (const r of results) {
    assert.equal(r.status, 'rejected');
    assert.ok(r.reason instanceof DisconnectedError, String(r.reason));
  }
  assert.ok(took < 2000, `pending calls failed after ${took} ms`);
  await assert.rejects(c.call('/echo', 'later'), DisconnectedError);
  assert.throws(() => c.notify('/echo', 'later'), DisconnectedError);
});

test('reconnect with backoff after the engine restarts on the same port', async () => {
  const e = await engineWith();
  const c = await client(e.url, { reconnect: { initial: 50, max: 400, attempts: 100 } });
  const delays = [];
  c.on('reconnecting', ({ delay }) => delays.push(delay));
  const disconnected = once(c, 'disconnect');
  await e.kill('SIGKILL');
  await disconnected;
  assert.equal(c.connected, false);
  await sleep(1200); // several failed attempts: the delay doubles up to the cap
  assert.ok(delays.length >= 3, `delays ${delays}`);
  assert.deepEqual(delays.slice(0, 3), [50, 100, 200]);
  assert.ok(delays.every((d) => d <= 400), `delays ${delays}`);
  const connected = once(c, 'connect');
  const e2 = await engineWith([], e.port);
  assert.deepEqual(await connected, { reconnected: true });
  assert.equal(await c.callText('/echo', 'back'), 'back');
  assert.equal(c.stats.reconnects, 1);
  await e2.kill();
});

test('reconnect gives up after the attempt cap', async () => {
  const e = await engineWith();
  const c = await client(e.url, { reconnect: { initial: 20, max: 40, attempts: 3 } });
  const closed = once(c, 'close');
  const failed = [];
  c.on('reconnectFailed', (err) => failed.push(err));
  await e.kill();
  const err = await closed;
  assert.match(err.message, /gave up reconnecting .* after 3 attempts/);
  assert.equal(failed.length, 3);
  assert.equal(c.closed, true);
});

test('stream /echo/stream: send, half-close, iterate to the end', async () => {
  const c = await client(engine.url);
  const s = c.openStream('/echo/stream');
  await s.send('a');
  await s.send(new Uint8Array([0xff, 0x00]));
  await s.send('c');
  await s.closeSend();
  const got = [];
  for await (const chunk of s) got.push(Buffer.from(chunk).toString('hex'));
  assert.deepEqual(got, ['61', 'ff00', '63']);
  assert.equal(await s.recv(), null);
  assert.equal(c._streams.size, 0);
  await assert.rejects(s.send('late'), /already closed/);
});

test('many streams at once, interleaved', async () => {
  const c = await client(engine.url);
  const streams = Array.from({ length: 50 }, () => c.openStream('/echo/stream'));
  for (let round = 0; round < 3; round++) {
    for (const [i, s] of streams.entries()) await s.send(`${i}:${round};`);
  }
  for (const s of streams) await s.closeSend();
  const texts = await Promise.all(streams.map(async (s) => bytesToText(await s.readAll())));
  texts.forEach((t, i) => assert.equal(t, `${i}:0;${i}:1;${i}:2;`));
});

test('subscribe via /echo/stream: one reply then the end', async () => {
  const c = await client(engine.url);
  const replies = [];
  for await (const r of c.subscribe('/echo/stream', 'subscribe me')) replies.push(bytesToText(r));
  assert.deepEqual(replies, ['subscribe me']);
});

test('stream to an unknown method ends with an error', async () => {
  const c = await client(engine.url);
  const s = c.openStream('/no/such/stream');
  await s.send('hello');
  await assert.rejects(s.recv(), (e) => e instanceof RpcError && e.message === 'stream method not found');
  const sub = c.subscribe('/nope', 'x');
  await assert.rejects(async () => {
    for await (const _ of sub);
  }, /stream method not found/);
  assert.equal(await c.callText('/echo', 'ok'), 'ok');
});

test('stream timeout sends an error end and rejects with TimeoutError', async () => {
  const c = await client(engine.url);
  const s = c.openStream('/echo/stream', { timeout: 200 });
  await s.send('x');
  assert.equal(bytesToText(await s.recv()), 'x');
  await assert.rejects(s.recv(), TimeoutError);
  assert.equal(await c.callText('/echo', 'fine'), 'fine');
});

test('keepalive: the client pings when idle and answers the server pings', async () => {
  const e = await engineWith(['--keepalive', '0.2']);
  // A client that pings every 100 ms of quiet is never quiet for the server's 200 ms.
  const pinging = await client(e.url, { keepalive: 100 });
  const quiet = await client(e.url);
  await until(() => pinging.stats.pongsReceived >= 2 && quiet.stats.pingsReceived >= 2, 10000, 'pings both ways');
  assert.equal(quiet.stats.pongsSent, quiet.stats.pingsReceived);
  assert.equal(pinging.stats.pingsReceived, 0);
  assert.ok((await quiet.ping()) >= 0);
  assert.equal(await quiet.callText('/echo', 'alive'), 'alive');
  assert.equal(await pinging.callText('/echo', 'alive'), 'alive');
});

test('keepalive notices a peer that stopped answering', async () => {
  const e = await engineWith();
  const c = await client(e.url, { keepalive: 100, keepaliveTimeout: 300 });
  const disconnected = once(c, 'disconnect', 10000);
  await e.pause();
  const err = await disconnected;
  assert.match(err.message, /keepalive/);
  e.resume();
});

test('pub/sub between two clients, publishToOne, unsubscribe', async () => {
  const a = await client(engine.url);
  const b = await client(engine.url);
  await a.pubsubAuth('anything'); // no password configured: in_A always succeeds
  const gotA = [];
  const gotB = [];
  await a.subscribeTopic('news', (t) => gotA.push(t));
  const unsubB = await b.subscribeTopic('news', (t) => gotB.push(t.text()));
  await b.publish('news', 'héllo', { timestamp: 42n });
  await until(() => gotA.length === 1 && gotB.length === 1, 5000, 'publication');
  assert.equal(gotA[0].name, 'news');
  assert.equal(bytesToText(gotA[0].data), 'héllo');
  assert.equal(gotA[0].timestamp, 42n);
  assert.deepEqual(gotB, ['héllo']);

  for (let i = 0; i < 4; i++) await a.publishToOne('news', `one${i}`);
  await until(() => gotA.length + gotB.length === 6, 5000, 'publishToOne');
  assert.equal(gotA.length, 3); // in turn: two each
  assert.equal(gotB.length, 3);

  await unsubB();
  await a.publish('news', 'after');
  await until(() => gotA.length === 4, 5000, 'publication after unsubscribe');
  await sleep(100);
  assert.equal(gotB.length, 3);
  await assert.rejects(a.publish('', 'x'), RangeError);
});

test('pub/sub with a password, re-authenticated and re-subscribed after reconnect', async () => {
  const dir = tmpDir();
  const pwFile = path.join(dir, 'pw');
  writeFileSync(pwFile, 's3cret\n');
  const e = await engineWith(['--pubsub', '--pubsub-password-file', pwFile]);
  const sub = await client(e.url, { reconnect: { initial: 50, max: 200 } });
  await assert.rejects(sub.subscribeTopic('t', () => {}), /not authenticated/);
  await assert.rejects(sub.pubsubAuth('wrong'), (err) => err instanceof RpcError && err.message === 'invalid password');
  await sub.pubsubAuth('s3cret');
  const got = [];
  await sub.subscribeTopic('t', (t) => got.push(t.text()));
  assert.deepEqual(sub.topics, ['t']);

  const disconnected = once(sub, 'disconnect');
  await e.kill();
  await disconnected;
  const resubscribed = once(sub, 'resubscribed');
  const e2 = await engineWith(['--pubsub', '--pubsub-password-file', pwFile], e.port);
  assert.deepEqual(await resubscribed, ['t']);

  const pub = await client(e2.url);
  await pub.pubsubAuth('s3cret');
  await pub.publish('t', 'after restart');
  await until(() => got.length === 1, 5000, 'publication after reconnect');
  assert.deepEqual(got, ['after restart']);
});

test('/_auth: the right secret connects, a wrong one fails with the server text', async () => {
  const dir = tmpDir();
  const f = path.join(dir, 'secret');
  writeFileSync(f, 'open sesame\n');
  const e = await engineWith(['--auth-secret-file', f]);
  const c = await client(e.url, { auth: 'open sesame' });
  assert.equal(await c.callText('/echo', 'authed'), 'authed');
  await assert.rejects(client(e.url, { auth: 'wrong' }), (err) => err instanceof RpcError && /authentication required/.test(err.message));
  const noAuth = await client(e.url);
  await assert.rejects(noAuth.call('/echo', 'x'), /authentication required/);
});

test('gzip frames from the engine are inflated (DecompressionStream)', async () => {
  const e = await engineWith(['--gzip-threshold', '64']);
  const c = await client(e.url);
  const big = 'compress me '.repeat(1000);
  const answers = await Promise.all([c.callText('/echo', big), c.callText('/echo', 'small'), c.callText('/echo', big + '!')]);
  assert.deepEqual(answers, [big, 'small', big + '!']);
  const s = c.openStream('/echo/stream');
  await s.send(big);
  await s.send('tiny');
  await s.closeSend();
  const chunks = [];
  for await (const ch of s) chunks.push(bytesToText(ch));
  assert.deepEqual(chunks, [big, 'tiny']);
});

test('close() fails pending work at once and stops for good', async () => {
  const e = await engineWith();
  const c = await client(e.url, { reconnect: { initial: 10 } });
  await e.pause();
  const p = c.call('/echo', 'x');
  const closed = once(c, 'close');
  c.close();
  await assert.rejects(p, /client closed/);
  assert.equal(await closed, null);
  await assert.rejects(c.call('/echo', 'y'), /client closed/);
  e.resume();
});

test('connect to a closed port rejects', async () => {
  const e = await engineWith();
  const url = e.url;
  await e.kill();
  await assert.rejects(RingClient.connect(url, { WebSocket, reconnect: false, connectTimeout: 5000 }), DisconnectedError);
});
