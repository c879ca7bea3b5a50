// Compiled with `tsc --noEmit --strict` (run-tests.sh) to check ringrpc.d.ts; never run.
import RingClientDefault, {
  RingClient,
  RpcError,
  TimeoutError,
  DisconnectedError,
  Stream,
  Publication,
  Cmd,
  CMD_STREAM_LOCAL,
  encodeFrame,
  decodeFrame,
  encodeTopic,
  decodeTopic,
  bytesToText,
} from '../../ringrpc.js';
import type { WebSocketConstructor } from '../../ringrpc.js';

// On Node 20 this is the ws package's WebSocket (its own types are not needed here).
declare const WebSocket: WebSocketConstructor;

export async function usage(): Promise<void> {
  const c: RingClient = await RingClient.connect('ws://127.0.0.1:8888/ws', {
    WebSocket,
    timeout: 5000,
    keepalive: 10000,
    reconnect: { initial: 100, max: 5000, attempts: 20 },
    auth: 'secret',
  });
  const again: RingClient = new RingClientDefault('ws://x/ws', { reconnect: false });
  again.close();

  const bytes: Uint8Array = await c.call('/echo', 'hi', { timeout: 1000 });
  const text: string = await c.callText('/echo', new Uint8Array([1, 2]));
  const full = await c.callWithMetadata('/echo', null, { metadata: { trace: 'abc' } });
  const seq: bigint = full.seq;
  full.metadata?.get('trace');
  c.notify('/log', 'line');
  const rtt: number = await c.ping();

  c.handle('/add', (payload, ctx) => {
    ctx.replyMetadata = { k: 'v' };
    return String(Number(bytesToText(payload)) + ctx.userFlags);
  });
  c.handle('/async', async (payload) => payload);
  c.onNotify('/news', (payload, ctx) => console.log(bytesToText(payload), ctx.seq));
  c.handleStream('/upper', async (s: Stream) => {
    for await (const chunk of s) await s.send(bytesToText(chunk).toUpperCase());
  });

  const s = c.openStream('/echo/stream', { timeout: 5000 });
  await s.send('a');
  await s.sendAndClose(new Uint8Array(0));
  const next: Uint8Array | null = await s.recv();
  for await (const chunk of c.subscribe('/feed', 'q')) console.log(chunk.length);
  s.closeWithError('bye');

  await c.pubsubAuth('pw');
  const unsubscribe = await c.subscribeTopic('news', (t: Publication) => console.log(t.name, t.text(), t.timestamp));
  await c.publish('news', 'hello', { timestamp: 1n });
  await c.publishToOne('news', new Uint8Array([1]));
  await unsubscribe();
  await c.unsubscribeTopic('news');

  const off = c.on('reconnecting', ({ attempt, delay }) => console.log(attempt, delay));
  off();
  c.on('close', (err) => console.log(err?.message));
  c.on('connect', ({ reconnected }) => console.log(reconnected));

  try {
    await c.call('/x');
  } catch (e) {
    if (e instanceof RpcError) console.log(e.method);
    if (e instanceof TimeoutError || e instanceof DisconnectedError) console.log(e.name);
  }

  const frame = decodeFrame(encodeFrame({ cmd: Cmd.STREAM | CMD_STREAM_LOCAL, seq: 1n << 40n, method: '/m', payload: 'x' }));
  const id: bigint = frame.seq;
  const topic = decodeTopic(encodeTopic('news', 'hi'));
  console.log(bytes, text, seq, rtt, next, id, topic.name, c.stats.pongsReceived, c.connected, c.topics);
}
