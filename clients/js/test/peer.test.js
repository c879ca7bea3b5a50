// Traffic the server starts: the `engine` binary never calls its clients or opens streams to
// them, so a scripted peer (a `ws` server speaking the wire with this package's codec) plays
// the server here: Requests with seqs from its own counter (past 256 and 2^32), Notifies,
// Pings, streams it opens, metadata and answers that never come.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket, { WebSocketServer } from 'ws';
import {
  RingClient,
  Cmd,
  CMD_STREAM_EOF,
  CMD_STREAM_LOCAL,
  FLAG_ASYNC,
  FLAG_ERROR,
  FrameReader,
  TimeoutError,
  bytesToText,
  decodeFrame,
  encodeFrame,
} from '../ringrpc.js';
import { sleep } from '../support/engine.js';

let server;
let url;
let peer; // the server side of the latest connection
const clients = [];

/** The server's end of one connection: send frames, await the frames the client sends. */
class Peer {
  constructor(ws) {
    this.ws = ws;
    this.reader = new FrameReader();
    this.frames = [];
    this.waiters = [];
    this.answerCalls = true;
    ws.on('message', (data) => {
      for (const raw of this.reader.push(new Uint8Array(data))) {
        const f = decodeFrame(raw);
        if (this.answerCalls && f.cmd === Cmd.REQUEST && f.method.startsWith('/srv/')) {
          this.answer(f);
          continue;
        }
        this.frames.push(f);
        this.wake();
      }
    });
  }

  answer(f) {
    if (f.method === '/srv/silent') return;
    if (f.method === '/srv/md') {
      return this.send({ cmd: Cmd.RESPONSE, seq: f.seq, method: f.method, payload: f.payload, metadata: { echo: f.metadata?.get('k') ?? 'none', n: '1' } });
    }
    this.send({ cmd: Cmd.RESPONSE, flag: f.flag & FLAG_ASYNC, seq: f.seq, method: f.method, payload: f.payload });
  }

  wake() {
    for (const w of this.waiters.splice(0)) w();
  }

  send(f) {
    this.ws.send(encodeFrame(f));
  }

  /** The next client frame matching `pred` (removed from the list). */
  async next(pred = () => true, ms = 5000) {
    const end = Date.now() + ms;
    for (;;) {
      const i = this.frames.findIndex(pred);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      if (Date.now() > end) throw new Error('no matching frame from the client');
      await new Promise((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
  }
}

before(async () => {
  server = new WebSocketServer({ host: '127.0.0.1', port: 0, path: '/ws' });
  server.on('connection', (ws) => {
    peer = new Peer(ws);
  });
  await new Promise((r) => server.once('listening', r));
  url = `ws://127.0.0.1:${server.address().port}/ws`;
});

after(async () => {
  for (const c of clients) c.close();
  await new Promise((r) => server.close(r));
});

async function connect(opts = {}) {
  const c = await RingClient.connect(url, { WebSocket, reconnect: false, timeout: 5000, ...opts });
  clients.push(c);
  await sleep(20); // the server's 'connection' event
  return c;
}

test('server Requests reach handlers; seqs past 256 and 2^32 echoed exactly', async () => {
  const c = await connect();
  c.handle('/add', (payload, ctx) => {
    assert.equal(ctx.method, '/add');
    const [a, b] = bytesToText(payload).split('+').map(Number);
    return String(a + b);
  });
  c.handle('/slow', async (payload) => {
    await sleep(30);
    return payload;
  });
  const seqs = [1n, 255n, 256n, 257n, 300n, 65536n, (1n << 32n) - 1n, 1n << 32n, (1n << 32n) + 5n, (1n << 64n) - 1n];
  for (const seq of seqs) peer.send({ cmd: Cmd.REQUEST, seq, method: '/add', payload: `${seq & 0xffn}+1` });
  for (const seq of seqs) {
    const r = await peer.next((f) => f.cmd === Cmd.RESPONSE && f.seq === seq);
    assert.equal(r.method, '/add');
    assert.equal(r.isError, false);
    assert.equal(bytesToText(r.payload), String(Number(seq & 0xffn) + 1));
  }
  // An async-flagged Request keeps its bit in the Response; a slow handler answers later.
  peer.send({ cmd: Cmd.REQUEST, flag: FLAG_ASYNC, seq: 900n, method: '/slow', payload: 'later' });
  const slow = await peer.next((f) => f.seq === 900n);
  assert.equal(slow.isAsync, true);
  assert.equal(bytesToText(slow.payload), 'later');
});

test('handler errors and unknown methods become error Responses', async () => {
  const c = await connect();
  c.handle('/boom', () => {
    throw new Error('kaboom');
  });
  c.handle('/reject', async () => Promise.reject(new Error('async kaboom')));
  peer.send({ cmd: Cmd.REQUEST, seq: 1n, method: '/boom' });
  peer.send({ cmd: Cmd.REQUEST, seq: 2n, method: '/reject' });
  peer.send({ cmd: Cmd.REQUEST, seq: 3n, method: '/missing' });
  const r1 = await peer.next((f) => f.seq === 1n);
  const r2 = await peer.next((f) => f.seq === 2n);
  const r3 = await peer.next((f) => f.seq === 3n);
  assert.deepEqual([r1, r2, r3].map((r) => [r.isError, bytesToText(r.payload)]), [
    [true, 'kaboom'],
    [true, 'async kaboom'],
    [true, 'method not found'],
  ]);
  assert.equal(r3.method, '/missing');
});

test('server Notifies reach onNotify; Pings get Pongs', async () => {
  const c = await connect();
  const got = [];
  c.onNotify('/news', (payload, ctx) => got.push([bytesToText(payload), ctx.seq]));
  peer.send({ cmd: Cmd.NOTIFY, seq: 0n, method: '/news', payload: 'one' });
  peer.send({ cmd: Cmd.NOTIFY, seq: 0n, method: '/other', payload: 'ignored' });
  peer.send({ cmd: Cmd.PING });
  peer.send({ cmd: Cmd.NOTIFY, seq: 0n, method: '/news', payload: 'two' });
  const pong = await peer.next((f) => f.cmd === Cmd.PONG);
  assert.equal(pong.seq, 0n);
  await sleep(50);
  assert.deepEqual(got, [['one', 0n], ['two', 0n]]);
  assert.equal(c.stats.pongsSent, 1);
  // A Notify is never answered.
  assert.equal(peer.frames.filter((f) => f.cmd === Cmd.RESPONSE).length, 0);
});

test('streams the server opens reach handleStream', async () => {
  const c = await connect();
  c.handleStream('/upper', async (stream) => {
    for await (const chunk of stream) await stream.send(bytesToText(chunk).toUpperCase());
    // returning closes the sending side
  });
  const open = { cmd: Cmd.STREAM | CMD_STREAM_LOCAL, seq: 7n, method: '/upper' };
  peer.send({ ...open, payload: 'a' });
  peer.send({ ...open, payload: 'b' });
  peer.send({ ...open, cmd: open.cmd | CMD_STREAM_EOF });
  const a = await peer.next((f) => f.cmd === Cmd.STREAM && f.seq === 7n);
  const b = await peer.next((f) => f.cmd === Cmd.STREAM && f.seq === 7n);
  const eof = await peer.next((f) => f.cmd === Cmd.STREAM && f.seq === 7n);
  assert.deepEqual([bytesToText(a.payload), bytesToText(b.payload)], ['A', 'B']);
  assert.equal(a.streamLocal, false); // frames back to the opener carry 0x80 clear
  assert.equal(eof.streamEof, true);
  assert.equal(eof.isError, false);
  assert.equal(c._peerStreams.size, 0);

  // The server's stream 7 and the client's own stream 7 are different streams.
  c.handleStream('/fail', async () => {
    throw new Error('nope');
  });
  peer.send({ cmd: Cmd.STREAM | CMD_STREAM_LOCAL | CMD_STREAM_EOF, seq: 8n, method: '/fail', payload: 'x' });
  const failEnd = await peer.next((f) => f.seq === 8n);
  assert.equal(failEnd.streamEof && failEnd.isError, true);
  assert.equal(bytesToText(failEnd.payload), 'nope');

  peer.send({ cmd: Cmd.STREAM | CMD_STREAM_LOCAL, seq: 9n, method: '/unknown', payload: 'x' });
  const nf = await peer.next((f) => f.seq === 9n);
  assert.equal(nf.streamEof && nf.isError, true);
  assert.equal(bytesToText(nf.payload), 'stream method not found');
});

test('a stream the client opened is told apart from the peer stream of the same id', async () => {
  const c = await connect({ firstSeq: 5n });
  const s = c.openStream('/mine');
  assert.equal(s.id, 5n);
  await s.send('hi');
  const f = await peer.next((x) => x.cmd === Cmd.STREAM);
  assert.equal(f.streamLocal, true);
  assert.equal(f.seq, 5n);
  // A peer-opened frame with id 5 must not land in the client's stream 5.
  peer.send({ cmd: Cmd.STREAM | CMD_STREAM_LOCAL, seq: 5n, method: '/mine', payload: 'wrong' });
  peer.send({ cmd: Cmd.STREAM, seq: 5n, method: '/mine', payload: 'right' });
  peer.send({ cmd: Cmd.STREAM | CMD_STREAM_EOF, flag: FLAG_ERROR, seq: 5n, method: '/mine', payload: 'done badly' });
  assert.equal(bytesToText(await s.recv()), 'right');
  await assert.rejects(s.recv(), /done badly/);
});

test('metadata both ways, and a Response that never comes times out without throwing', async () => {
  const c = await connect();
  const r = await c.callWithMetadata('/srv/md', 'body', { metadata: { k: 'v1' } });
  assert.equal(bytesToText(r.payload), 'body');
  assert.deepEqual([...r.metadata.keys()], ['echo', 'n']);
  assert.equal(bytesToText(r.metadata.get('echo')), 'v1');

  c.handle('/withmd', (payload, ctx) => {
    ctx.replyMetadata = { got: ctx.metadata.get('x') };
    return 'ok';
  });
  peer.send({ cmd: Cmd.REQUEST, seq: 44n, method: '/withmd', metadata: { x: 'y' } });
  const resp = await peer.next((f) => f.seq === 44n);
  assert.equal(bytesToText(resp.metadata.get('got')), 'y');

  const t0 = Date.now();
  await assert.rejects(c.call('/srv/silent', 'x', { timeout: 150 }), TimeoutError);
  assert.ok(Date.now() - t0 < 2000);
  assert.equal(c._pending.size, 0);
  assert.equal(await c.callText('/srv/echo', 'after'), 'after');
});

test('a protocol violation from the server closes the connection and fails pending calls', async () => {
  const c = await connect();
  const pending = c.call('/srv/silent', 'x', { timeout: 10000 });
  const bad = new Uint8Array(16);
  bad[5] = 9; // unknown command
  peer.ws.send(bad);
  await assert.rejects(pending, /unknown command 9/);
  assert.equal(c.connected, false);
});
