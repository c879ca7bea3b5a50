// ringrpc JS client: Go arpc's wire format over WebSocket, for browsers and Node.
//
// One ES module, no dependencies, no build step. The wire is docs/protocol.md of the ringrpc
// repository: a 16-byte header (body_len u32 LE, user_flags, cmd, flag, method_len, seq u64
// LE), the method, the payload. Sequence numbers are BigInts end to end, so every u64 value
// round-trips (arpc's own JS client mis-decodes any seq >= 256).

// ---------------------------------------------------------------------------------------
// Constants

/** Commands (the low six bits of the cmd byte). */
export const Cmd = Object.freeze({
  REQUEST: 1,
  RESPONSE: 2,
  NOTIFY: 3,
  PING: 4,
  PONG: 5,
  STREAM: 6,
});

/** Bits of the cmd byte above the command. */
export const CMD_STREAM_LOCAL = 0x80;
export const CMD_STREAM_EOF = 0x40;
const CMD_MASK = 0x3f;

/** Bits of the flag byte. */
export const FLAG_ERROR = 0x01;
export const FLAG_ASYNC = 0x02;

/** Bits of the user_flags byte that ringrpc (and arpc's coders) give a meaning. */
export const USER_FLAG_METADATA = 0x01;
export const USER_FLAG_GZIP = 0x80;

export const HEADER_LEN = 16;
export const MAX_METHOD_LEN = 127;
/** arpc's default largest body: 64 MiB - 16. */
export const DEFAULT_MAX_BODY = 64 * 1024 * 1024 - 16;
const U64_MAX = (1n << 64n) - 1n;

const METHOD_NOT_FOUND = 'method not found';
const STREAM_METHOD_NOT_FOUND = 'stream method not found';

// ---------------------------------------------------------------------------------------
// Errors

/** An error Response (or a stream's error end): `message` is the peer's text. */
export class RpcError extends Error {
  constructor(message, method) {
    super(message);
    this.name = 'RpcError';
    this.method = method;
  }
}

/** A call, subscription or ping that got no answer in time. */
export class TimeoutError extends Error {
  constructor(message) {
    super(message);
    this.name = 'TimeoutError';
  }
}

/** The connection is down (or the client closed): pending work fails with this at once. */
export class DisconnectedError extends Error {
  constructor(message, cause) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'DisconnectedError';
  }
}

/** The peer broke the wire format; the connection is closed. */
export class ProtocolError extends Error {
  constructor(message) {
    super(message);
    this.name = 'ProtocolError';
  }
}

// ---------------------------------------------------------------------------------------
// Bytes

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();
const EMPTY = new Uint8Array(0);

/**
 * Payload bytes from a string (UTF-8), Uint8Array, ArrayBuffer, other ArrayBuffer view, or
 * null/undefined (empty).
 */
export function toBytes(data) {
  if (data === undefined || data === null) return EMPTY;
  if (typeof data === 'string') return utf8Encoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('payload must be a string, Uint8Array, ArrayBuffer or ArrayBuffer view');
}

/** UTF-8 text of bytes (invalid sequences become U+FFFD). */
export function bytesToText(bytes) {
  return utf8Decoder.decode(bytes);
}

function methodBytes(method, allowEmpty = false) {
  if (typeof method !== 'string') throw new TypeError('method must be a string');
  const b = utf8Encoder.encode(method);
  if ((b.length === 0 && !allowEmpty) || b.length > MAX_METHOD_LEN) {
    throw new RangeError(`method must be 1..=${MAX_METHOD_LEN} bytes of UTF-8, got ${b.length}`);
  }
  return b;
}

function toSeq(seq) {
  const s = typeof seq === 'bigint' ? seq : BigInt(seq);
  if (s < 0n || s > U64_MAX) throw new RangeError(`seq ${s} is not a u64`);
  return s;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a, 0);
  out.set(b, a.length);
  return out;
}

// ---------------------------------------------------------------------------------------
// Frames

/**
 * Encodes one frame.
 * @param {object} f
 * @param {number} f.cmd command (Cmd.*), optionally with CMD_STREAM_LOCAL / CMD_STREAM_EOF
 * @param {number} [f.flag] flag byte (FLAG_ERROR | FLAG_ASYNC | ...)
 * @param {number} [f.userFlags] user_flags byte (bit 0 is set when metadata is given)
 * @param {bigint|number} [f.seq]
 * @param {string} [f.method]
 * @param {*} [f.payload]
 * @param {Map|object|Array} [f.metadata] entries of an `md` block to append
 */
export function encodeFrame(f) {
  const cmd = f.cmd & 0xff;
  const command = cmd & CMD_MASK;
  if (command < Cmd.REQUEST || command > Cmd.STREAM) throw new RangeError(`unknown command ${command}`);
  const m = f.method === undefined ? EMPTY : methodBytes(f.method, command === Cmd.RESPONSE || command === Cmd.PING || command === Cmd.PONG);
  let payload = toBytes(f.payload);
  let userFlags = (f.userFlags ?? 0) & 0xff;
  if (userFlags & USER_FLAG_GZIP) throw new RangeError('user_flags bit 7 (gzip) is set by the codec only');
  if (f.metadata !== undefined && f.metadata !== null) {
    payload = concat(payload, encodeMetadata(f.metadata));
    userFlags |= USER_FLAG_METADATA;
  }
  const bodyLen = m.length + payload.length;
  if (bodyLen > 0xffffffff) throw new RangeError('frame body too large');
  const out = new Uint8Array(HEADER_LEN + bodyLen);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, bodyLen, true);
  out[4] = userFlags;
  out[5] = cmd;
  out[6] = (f.flag ?? 0) & 0xff;
  out[7] = m.length;
  dv.setBigUint64(8, toSeq(f.seq ?? 0n), true);
  out.set(m, HEADER_LEN);
  out.set(payload, HEADER_LEN + m.length);
  return out;
}

/**
 * Decodes the header of `bytes` (at least 16 bytes) without checking it.
 * @returns {{bodyLen:number,userFlags:number,cmdByte:number,flag:number,methodLen:number,seq:bigint}}
 */
export function decodeHeader(bytes) {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, HEADER_LEN);
  return {
    bodyLen: dv.getUint32(0, true),
    userFlags: bytes[4],
    cmdByte: bytes[5],
    flag: bytes[6],
    methodLen: bytes[7],
    seq: dv.getBigUint64(8, true),
  };
}

/**
 * Decodes one whole, uncompressed frame (exactly 16 + body_len bytes), validating it as
 * docs/protocol.md says. The payload is a view into `bytes`. With user_flags bit 0, the
 * `md` block is taken off the payload into `metadata` (a Map of key to Uint8Array).
 * @throws {ProtocolError}
 */
export function decodeFrame(bytes) {
  if (bytes.length < HEADER_LEN) throw new ProtocolError(`frame of ${bytes.length} bytes is shorter than its header`);
  const h = decodeHeader(bytes);
  if (h.userFlags & USER_FLAG_GZIP) throw new ProtocolError('gzip-compressed frame: inflate it first (inflateFrame)');
  if (bytes.length !== HEADER_LEN + h.bodyLen) {
    throw new ProtocolError(`frame declares a body of ${h.bodyLen} bytes but has ${bytes.length - HEADER_LEN}`);
  }
  const cmd = h.cmdByte & CMD_MASK;
  if (cmd < Cmd.REQUEST || cmd > Cmd.STREAM) throw new ProtocolError(`unknown command ${cmd}`);
  if (h.methodLen > MAX_METHOD_LEN) throw new ProtocolError(`method length ${h.methodLen} over ${MAX_METHOD_LEN}`);
  if (h.methodLen > h.bodyLen) throw new ProtocolError(`method length ${h.methodLen} longer than the body (${h.bodyLen})`);
  if ((cmd === Cmd.PING || cmd === Cmd.PONG) && (h.bodyLen !== 0 || h.methodLen !== 0)) {
    throw new ProtocolError('ping or pong with a body');
  }
  if ((cmd === Cmd.REQUEST || cmd === Cmd.NOTIFY || cmd === Cmd.STREAM) && h.methodLen === 0) {
    throw new ProtocolError('request, notify or stream frame without a method');
  }
  const method = bytesToText(bytes.subarray(HEADER_LEN, HEADER_LEN + h.methodLen));
  let payload = bytes.subarray(HEADER_LEN + h.methodLen);
  let metadata = null;
  let metadataError = null;
  let userFlags = h.userFlags;
  if ((userFlags & USER_FLAG_METADATA) && cmd !== Cmd.PING && cmd !== Cmd.PONG) {
    try {
      const md = splitMetadata(payload);
      payload = md.payload;
      metadata = md.metadata;
      userFlags &= ~USER_FLAG_METADATA;
    } catch (e) {
      metadataError = e.message;
    }
  }
  return {
    cmd,
    streamLocal: (h.cmdByte & CMD_STREAM_LOCAL) !== 0,
    streamEof: (h.cmdByte & CMD_STREAM_EOF) !== 0,
    flag: h.flag,
    isError: (h.flag & FLAG_ERROR) !== 0,
    isAsync: (h.flag & FLAG_ASYNC) !== 0,
    userFlags,
    seq: h.seq,
    method,
    payload,
    metadata,
    metadataError,
  };
}

/**
 * Splits a byte stream into frames. Feed it chunks with `push`; it returns the whole frames
 * so far as Uint8Arrays (a frame may span chunks, a chunk may hold several). A compressed
 * frame (user_flags bit 7) comes out still compressed: pass it to `inflateFrame`.
 */
export class FrameReader {
  constructor(maxBody = DEFAULT_MAX_BODY) {
    this.maxBody = maxBody;
    this.buf = EMPTY;
  }

  /** @returns {Uint8Array[]} @throws {ProtocolError} when a header declares a body over the limit */
  push(chunk) {
    this.buf = this.buf.length === 0 ? chunk : concat(this.buf, chunk);
    const frames = [];
    let off = 0;
    while (this.buf.length - off >= HEADER_LEN) {
      const dv = new DataView(this.buf.buffer, this.buf.byteOffset + off, 4);
      const bodyLen = dv.getUint32(0, true);
      if (bodyLen > this.maxBody) {
        throw new ProtocolError(`frame body of ${bodyLen} bytes is over the limit of ${this.maxBody}`);
      }
      const end = off + HEADER_LEN + bodyLen;
      if (end > this.buf.length) break;
      frames.push(this.buf.subarray(off, end));
      off = end;
    }
    this.buf = off === this.buf.length ? EMPTY : this.buf.subarray(off);
    return frames;
  }
}

/** Whether `frame` (whole frame bytes) is gzip-compressed (user_flags bit 7). */
export function isCompressed(frame) {
  return frame.length > 4 && (frame[4] & USER_FLAG_GZIP) !== 0;
}

/** Whether this JS runtime can inflate compressed frames (has DecompressionStream). */
export const canInflate = typeof globalThis.DecompressionStream === 'function';

/**
 * Inflates an arpc gzip frame: bytes 5.. are a gzip stream of the plain frame's bytes 5..
 * Returns the plain frame bytes (bit 7 cleared, body_len set).
 * @returns {Promise<Uint8Array>}
 * @throws {ProtocolError} without DecompressionStream, or for bad gzip data or a body too large
 */
export async function inflateFrame(frame, maxBody = DEFAULT_MAX_BODY) {
  if (!canInflate) {
    throw new ProtocolError('gzip-compressed frame received but this runtime has no DecompressionStream; ask the server not to compress (no gzip threshold)');
  }
  let inflated;
  try {
    const ds = new DecompressionStream('gzip');
    const writer = ds.writable.getWriter();
    writer.write(frame.subarray(5)).catch(() => {});
    writer.close().catch(() => {});
    const reader = ds.readable.getReader();
    const parts = [];
    let total = 0;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      total += value.length;
      if (total > maxBody + 11) {
        reader.cancel().catch(() => {});
        throw new ProtocolError(`gzip-compressed frame inflates to a body over the maximum of ${maxBody} bytes`);
      }
      parts.push(value);
    }
    inflated = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      inflated.set(p, o);
      o += p.length;
    }
  } catch (e) {
    if (e instanceof ProtocolError) throw e;
    throw new ProtocolError(`gzip-compressed frame: ${e && e.message ? e.message : e}`);
  }
  if (inflated.length < 11) throw new ProtocolError('gzip-compressed frame inflates to fewer than 11 bytes');
  const out = new Uint8Array(5 + inflated.length);
  new DataView(out.buffer).setUint32(0, inflated.length - 11, true);
  out[4] = frame[4] & ~USER_FLAG_GZIP;
  out.set(inflated, 5);
  return out;
}

// ---------------------------------------------------------------------------------------
// Metadata (docs/protocol.md "Metadata": the `md` appender on user_flags bit 0)

const MD_NAME = utf8Encoder.encode('md');
const MD_MAX = 4096;

function metadataEntries(md) {
  if (md instanceof Map) return [...md.entries()];
  if (Array.isArray(md)) return md;
  if (typeof md === 'object') return Object.entries(md);
  throw new TypeError('metadata must be a Map, an array of [key, value] or an object');
}

/** The `md` block (name, entries, total_len u16 BE) for the given entries. */
export function encodeMetadata(md) {
  const parts = [];
  let len = MD_NAME.length + 2;
  const seen = new Set();
  for (const [k, v] of metadataEntries(md)) {
    const kb = utf8Encoder.encode(String(k));
    const vb = toBytes(v);
    if (kb.length < 1 || kb.length > 255) throw new RangeError(`metadata key must be 1..=255 bytes, got ${kb.length}`);
    if (seen.has(k)) throw new RangeError(`metadata key ${k} repeated`);
    seen.add(k);
    if (vb.length > 0xffff) throw new RangeError('metadata value over 65535 bytes');
    parts.push(kb, vb);
    len += 1 + kb.length + 2 + vb.length;
  }
  if (len > MD_MAX) throw new RangeError(`metadata block of ${len} bytes is over ${MD_MAX}`);
  const out = new Uint8Array(len);
  out.set(MD_NAME, 0);
  let o = MD_NAME.length;
  for (let i = 0; i < parts.length; i += 2) {
    const kb = parts[i];
    const vb = parts[i + 1];
    out[o++] = kb.length;
    out.set(kb, o);
    o += kb.length;
    out[o++] = vb.length & 0xff;
    out[o++] = vb.length >> 8;
    out.set(vb, o);
    o += vb.length;
  }
  out[o++] = len >> 8;
  out[o++] = len & 0xff;
  return out;
}

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Takes the `md` block off the end of `payload`.
 * @returns {{payload: Uint8Array, metadata: Map<string, Uint8Array>}}
 * @throws {Error} for a malformed block
 */
export function splitMetadata(payload) {
  const n = payload.length;
  if (n < 2) throw new Error('invalid metadata: trailer missing');
  const total = (payload[n - 2] << 8) | payload[n - 1];
  if (total < 4 || total > MD_MAX || total > n) throw new Error(`invalid metadata: block length ${total}`);
  const start = n - total;
  if (payload[start] !== MD_NAME[0] || payload[start + 1] !== MD_NAME[1]) throw new Error('invalid metadata: not an md block');
  const metadata = new Map();
  let o = start + 2;
  const end = n - 2;
  while (o < end) {
    const kl = payload[o++];
    if (kl === 0) throw new Error('invalid metadata: empty key');
    if (o + kl + 2 > end) throw new Error('invalid metadata: entry runs past the block');
    let key;
    try {
      key = strictUtf8.decode(payload.subarray(o, o + kl));
    } catch {
      throw new Error('invalid metadata: key is not UTF-8');
    }
    o += kl;
    const vl = payload[o] | (payload[o + 1] << 8);
    o += 2;
    if (o + vl > end) throw new Error('invalid metadata: entry runs past the block');
    if (metadata.has(key)) throw new Error(`invalid metadata: key ${key} repeated`);
    metadata.set(key, payload.subarray(o, o + vl));
    o += vl;
  }
  return { payload: payload.subarray(0, start), metadata };
}

// ---------------------------------------------------------------------------------------
// Pub/sub topic bytes: data | name | name_len u16 LE | timestamp u64 LE (ns)

/** Topic bytes for `name` carrying `data`, stamped `timestamp` (ns since the epoch). */
export function encodeTopic(name, data, timestamp) {
  const nb = utf8Encoder.encode(name);
  if (nb.length < 1 || nb.length > 1024) throw new RangeError(`topic name must be 1..=1024 bytes, got ${nb.length}`);
  const db = toBytes(data);
  const out = new Uint8Array(db.length + nb.length + 10);
  out.set(db, 0);
  out.set(nb, db.length);
  const dv = new DataView(out.buffer);
  dv.setUint16(db.length + nb.length, nb.length, true);
  dv.setBigUint64(db.length + nb.length + 2, timestamp === undefined ? nowNanos() : toSeq(timestamp), true);
  return out;
}

/**
 * Parses topic bytes from the end.
 * @returns {{name: string, data: Uint8Array, timestamp: bigint}}
 */
export function decodeTopic(bytes) {
  const n = bytes.length;
  if (n < 10) throw new Error(`invalid topic bytes: ${n} bytes, at least 10 needed`);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, n);
  const timestamp = dv.getBigUint64(n - 8, true);
  const nameLen = dv.getUint16(n - 10, true);
  if (nameLen === 0 || nameLen > 1024) throw new Error(`invalid topic name length ${nameLen}`);
  if (nameLen > n - 10) throw new Error(`invalid topic bytes: name_len ${nameLen} but only ${n - 10} bytes precede the trailer`);
  const nameStart = n - 10 - nameLen;
  return {
    name: bytesToText(bytes.subarray(nameStart, n - 10)),
    data: bytes.subarray(0, nameStart),
    timestamp,
  };
}

function nowNanos() {
  return BigInt(Date.now()) * 1000000n;
}

// ---------------------------------------------------------------------------------------
// Streams

/**
 * One stream: a direction each way, each closed on its own. Opened by `client.openStream`
 * (ours), `client.subscribe`, or by the peer (handed to `client.handleStream` handlers).
 * Async-iterable: yields each received chunk (Uint8Array) until the peer's EOF; an error
 * end or a disconnect throws.
 */
export class Stream {
  /** @internal */
  constructor(client, id, method, local) {
    this._client = client;
    /** The stream id (the opener's seq). */
    this.id = id;
    this.method = method;
    /** Whether this side opened it. */
    this.local = local;
    this.metadata = null;
    this._queue = [];
    this._waiters = [];
    this._recvDone = false; // the peer's EOF (or an error) has been queued
    this._error = null;
    this._sendDone = false;
    this._timer = null;
  }

  /** Whether the sending direction is closed. */
  get sendClosed() {
    return this._sendDone;
  }

  /** Whether the receiving direction has ended (all chunks may not be consumed yet). */
  get recvClosed() {
    return this._recvDone;
  }

  _frame(payload, eof, error) {
    let cmd = Cmd.STREAM;
    if (this.local) cmd |= CMD_STREAM_LOCAL;
    if (eof) cmd |= CMD_STREAM_EOF;
    return { cmd, flag: error ? FLAG_ERROR : 0, seq: this.id, method: this.method, payload };
  }

  _checkSend() {
    if (this._sendDone) throw new Error(`stream ${this.method} #${this.id}: sending side already closed`);
    if (this._error) throw this._error;
  }

  /** Sends one chunk. Resolves once the socket's buffer has room (back-pressure). */
  async send(data) {
    this._checkSend();
    const payload = toBytes(data);
    if (payload.length === 0) return; // an empty non-EOF frame carries nothing
    this._client._sendFrame(this._frame(payload, false, false));
    await this._client._drain();
  }

  /** Sends a last chunk with EOF (arpc's SendAndClose). */
  async sendAndClose(data) {
    this._checkSend();
    this._sendDone = true;
    this._client._sendFrame(this._frame(toBytes(data), true, false));
    this._maybeForget();
    await this._client._drain();
  }

  /** Half-closes: an empty EOF frame (arpc's CloseSend). Receiving goes on. */
  async closeSend() {
    this._checkSend();
    this._sendDone = true;
    this._client._sendFrame(this._frame(EMPTY, true, false));
    this._maybeForget();
    await this._client._drain();
  }

  /**
   * Ends the stream with an error end (EOF + error flag, `text` as payload) and stops
   * receiving on this side.
   */
  closeWithError(text) {
    if (!this._sendDone && this._client.connected) {
      this._client._sendFrame(this._frame(utf8Encoder.encode(String(text)), true, true));
    }
    this._sendDone = true;
    this._end(new RpcError(String(text), this.method));
  }

  /**
   * The next chunk, or null once the peer sent EOF.
   * @returns {Promise<Uint8Array|null>}
   * @throws {RpcError} on the peer's error end, {DisconnectedError}, {TimeoutError}
   */
  recv() {
    if (this._queue.length > 0) return Promise.resolve(this._queue.shift());
    if (this._error) return Promise.reject(this._error);
    if (this._recvDone) return Promise.resolve(null);
    return new Promise((resolve, reject) => this._waiters.push({ resolve, reject }));
  }

  /** Every remaining chunk until EOF, concatenated. */
  async readAll() {
    const parts = [];
    for await (const c of this) parts.push(c);
    let total = 0;
    for (const p of parts) total += p.length;
    const out = new Uint8Array(total);
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      const chunk = await this.recv();
      if (chunk === null) return;
      yield chunk;
    }
  }

  /** @internal a frame from the peer */
  _onFrame(f) {
    if (this._recvDone) return;
    if (f.metadata && !this.metadata) this.metadata = f.metadata;
    if (f.streamEof && f.isError) {
      this._end(new RpcError(bytesToText(f.payload), this.method));
      return;
    }
    if (f.payload.length > 0) this._push(f.payload);
    if (f.streamEof) {
      this._recvDone = true;
      for (const w of this._waiters.splice(0)) w.resolve(null);
      this._maybeForget();
    }
  }

  _push(chunk) {
    const w = this._waiters.shift();
    if (w) w.resolve(chunk);
    else this._queue.push(chunk);
  }

  /** @internal ends receiving with an error (chunks already queued are still delivered first) */
  _end(err) {
    if (this._error) return;
    this._recvDone = true;
    this._error = err;
    this._sendDone = true; // after an error end or a disconnect nothing more may be sent
    for (const w of this._waiters.splice(0)) w.reject(err);
    if (this._timer) clearTimeout(this._timer);
    this._timer = null;
    this._client._forgetStream(this);
  }

  _maybeForget() {
    if (this._sendDone && this._recvDone) {
      if (this._timer) clearTimeout(this._timer);
      this._timer = null;
      this._client._forgetStream(this);
    }
  }
}

// ---------------------------------------------------------------------------------------
// Client

const OPEN = 1;

function normalizeReconnect(r) {
  if (r === false || r === null) return null;
  const o = r === true || r === undefined ? {} : r;
  return {
    initial: o.initial ?? 100,
    max: o.max ?? 10000,
    factor: o.factor ?? 2,
    attempts: o.attempts ?? Infinity,
    jitter: o.jitter ?? 0,
  };
}

/**
 * A connection to a ringrpc (or Go arpc) server over WebSocket. Create it with
 * `RingClient.connect(url, options)`.
 */
export class RingClient {
  /**
   * Opens a client and waits for its first connection (and `/_auth`, when `auth` is given).
   * Rejects if that first attempt fails.
   */
  static async connect(url, options = {}) {
    const c = new RingClient(url, options);
    await c._open(false);
    return c;
  }

  /** Prefer `RingClient.connect`. */
  constructor(url, options = {}) {
    this.url = url;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new TypeError('no WebSocket: pass options.WebSocket (for example the ws package\'s WebSocket on Node 20)');
    }
    this.timeout = options.timeout ?? 30000;
    this.connectTimeout = options.connectTimeout ?? 10000;
    this.keepalive = options.keepalive ?? 0;
    this.keepaliveTimeout = options.keepaliveTimeout ?? (this.keepalive > 0 ? Math.max(2 * this.keepalive, 1000) : 0);
    this.reconnect = normalizeReconnect(options.reconnect);
    this.auth = options.auth === undefined || options.auth === null ? null : toBytes(options.auth);
    this.maxBody = options.maxBody ?? DEFAULT_MAX_BODY;
    this.sendHighWater = options.sendHighWater ?? 1 << 20;
    this.wsProtocols = options.protocols;
    this.wsOptions = options.wsOptions;

    /** Counters, for monitoring and tests. */
    this.stats = { pingsReceived: 0, pongsSent: 0, pingsSent: 0, pongsReceived: 0, reconnects: 0, framesIn: 0, framesOut: 0 };

    this._nextSeq = options.firstSeq === undefined ? 1n : toSeq(options.firstSeq);
    this._ws = null;
    this._connected = false;
    this._closed = false;
    this._pending = new Map(); // seq -> {resolve, reject, timer, method, full}
    this._streams = new Map(); // ours: id -> Stream
    this._peerStreams = new Map(); // the peer's: id -> Stream
    this._handlers = new Map();
    this._notifyHandlers = new Map();
    this._streamHandlers = new Map();
    this._listeners = new Map();
    this._pings = [];
    this._topics = new Map(); // name -> Set<fn>
    this._pubsubPassword = null;
    this._reader = null;
    this._rxChain = null;
    this._rxPendingAsync = 0;
    this._lastRx = 0;
    this._lastTx = 0;
    this._kaTimer = null;
    this._reconnectTimer = null;
    this._attempt = 0;
    this._drainWaiters = [];
    this._drainTimer = null;
    this._notifyHandlers.set('in_P', (payload) => this._onPublish(payload));
  }

  // ---- events ----------------------------------------------------------------------

  /**
   * Listens for 'connect' ({reconnected}), 'disconnect' (error), 'reconnecting'
   * ({attempt, delay}), 'reconnectFailed' (error), 'close' (error|null: the client is done),
   * 'error' (errors from handlers and re-subscription).
   * @returns {() => void} removes the listener
   */
  on(event, fn) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this._listeners.get(event)?.delete(fn);
  }

  _emit(event, arg) {
    for (const fn of [...(this._listeners.get(event) ?? [])]) {
      try {
        fn(arg);
      } catch (e) {
        if (event !== 'error') this._emit('error', e);
      }
    }
  }

  /** Whether a connection is up (and authenticated). */
  get connected() {
    return this._connected;
  }

  /** Whether `close()` was called or reconnecting gave up. */
  get closed() {
    return this._closed;
  }

  // ---- connection ------------------------------------------------------------------

  _open(reconnected) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = this.wsOptions === undefined
          ? new this.WebSocket(this.url, this.wsProtocols)
          : new this.WebSocket(this.url, this.wsProtocols, this.wsOptions);
      } catch (e) {
        reject(new DisconnectedError(`cannot connect to ${this.url}: ${e.message}`, e));
        return;
      }
      ws.binaryType = 'arraybuffer';
      this._ws = ws;
      this._reader = new FrameReader(this.maxBody);
      this._rxChain = null;
      this._rxPendingAsync = 0;
      let settled = false;
      const fail = (err) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this._teardown(ws, err);
        reject(err);
      };
      const timer = setTimeout(() => fail(new TimeoutError(`connecting to ${this.url} timed out after ${this.connectTimeout} ms`)), this.connectTimeout);
      ws.onopen = async () => {
        this._lastRx = this._lastTx = Date.now();
        if (this.auth) {
          try {
            await this._rawCall('/_auth', this.auth, this.connectTimeout, true);
          } catch (e) {
            const err = e instanceof RpcError ? e : new DisconnectedError(`authentication failed: ${e.message}`, e);
            err.auth = true;
            fail(err);
            return;
          }
        }
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this._connected = true;
        this._attempt = 0;
        this._startKeepalive();
        this._emit('connect', { reconnected });
        resolve();
        if (reconnected) this._restorePubsub();
      };
      ws.onmessage = (ev) => this._onMessage(ws, ev.data);
      ws.onerror = (ev) => {
        if (!settled) fail(new DisconnectedError(`cannot connect to ${this.url}: ${ev && ev.message ? ev.message : 'WebSocket error'}`));
      };
      ws.onclose = (ev) => {
        const why = `connection to ${this.url} closed${ev && ev.code ? ` (code ${ev.code}${ev.reason ? `: ${ev.reason}` : ''})` : ''}`;
        if (!settled) {
          fail(new DisconnectedError(why));
          return;
        }
        this._lost(ws, new DisconnectedError(why));
      };
    });
  }

  /** The connection `ws` is gone: fail everything pending at once, then maybe reconnect. */
  _lost(ws, err) {
    if (ws !== this._ws) return;
    const wasConnected = this._connected;
    this._teardown(ws, err);
    if (wasConnected) this._emit('disconnect', err);
    if (this._closed) return;
    if (this.reconnect) this._scheduleReconnect();
    else this._finish(err);
  }

  _teardown(ws, err) {
    this._connected = false;
    this._stopKeepalive();
    if (this._ws === ws) this._ws = null;
    ws.onopen = ws.onmessage = ws.onerror = ws.onclose = null;
    if (typeof ws.on === 'function') ws.on('error', () => {}); // ws (Node): never an unhandled 'error'
    try {
      if (ws.readyState <= OPEN) ws.close();
    } catch {
      /* already closing */
    }
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const p of pending) {
      clearTimeout(p.timer);
      p.reject(new DisconnectedError(`${err.message}; call ${p.method} failed`, err));
    }
    for (const s of [...this._streams.values(), ...this._peerStreams.values()]) {
      s._end(new DisconnectedError(`${err.message}; stream ${s.method} ended`, err));
    }
    this._streams.clear();
    this._peerStreams.clear();
    for (const p of this._pings.splice(0)) {
      clearTimeout(p.timer);
      p.reject(new DisconnectedError(err.message, err));
    }
    this._wakeDrain();
  }

  _scheduleReconnect() {
    const r = this.reconnect;
    if (this._attempt >= r.attempts) {
      this._finish(new DisconnectedError(`gave up reconnecting to ${this.url} after ${this._attempt} attempts`));
      return;
    }
    let delay = Math.min(r.max, r.initial * Math.pow(r.factor, this._attempt));
    if (r.jitter > 0) delay *= 1 - r.jitter * Math.random();
    this._attempt += 1;
    const attempt = this._attempt;
    this._emit('reconnecting', { attempt, delay });
    this._reconnectTimer = setTimeout(async () => {
      this._reconnectTimer = null;
      if (this._closed) return;
      try {
        await this._open(true);
        this.stats.reconnects += 1;
      } catch (e) {
        if (this._closed) return;
        this._emit('reconnectFailed', e);
        if (e.auth && e instanceof RpcError) {
          this._finish(e); // a refused secret will not get better
          return;
        }
        this._scheduleReconnect();
      }
    }, delay);
  }

  _finish(err) {
    if (this._closed) return;
    this._closed = true;
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    this._emit('close', err ?? null);
  }

  /** Closes the connection for good: pending calls and streams fail at once, no reconnect. */
  close() {
    if (this._closed) return;
    this._closed = true;
    if (this._reconnectTimer) clearTimeout(this._reconnectTimer);
    this._reconnectTimer = null;
    const ws = this._ws;
    const err = new DisconnectedError('client closed');
    const wasConnected = this._connected;
    if (ws) this._teardown(ws, err);
    if (wasConnected) this._emit('disconnect', err);
    this._emit('close', null);
  }

  _notConnected(what) {
    return new DisconnectedError(this._closed ? `client closed; ${what} failed` : `not connected to ${this.url}; ${what} failed`);
  }

  // ---- sending ---------------------------------------------------------------------

  /** @internal */
  _sendFrame(f, ws = this._ws) {
    if (!ws || ws.readyState !== OPEN) throw this._notConnected(f.method ? `sending to ${f.method}` : 'sending');
    ws.send(encodeFrame(f));
    this._lastTx = Date.now();
    this.stats.framesOut += 1;
  }

  /** @internal resolves when the socket's unsent bytes are under the high-water mark */
  _drain() {
    const ws = this._ws;
    if (!ws || !(ws.bufferedAmount > this.sendHighWater)) return Promise.resolve();
    return new Promise((resolve) => {
      this._drainWaiters.push(resolve);
      if (!this._drainTimer) {
        const poll = () => {
          const w = this._ws;
          if (!w || !(w.bufferedAmount > this.sendHighWater)) {
            this._drainTimer = null;
            this._wakeDrain();
          } else {
            this._drainTimer = setTimeout(poll, 5);
          }
        };
        this._drainTimer = setTimeout(poll, 5);
      }
    });
  }

  _wakeDrain() {
    if (this._drainTimer) clearTimeout(this._drainTimer);
    this._drainTimer = null;
    for (const w of this._drainWaiters.splice(0)) w();
  }

  _takeSeq() {
    const s = this._nextSeq;
    this._nextSeq = s === U64_MAX ? 1n : s + 1n;
    return s;
  }

  _rawCall(method, payload, timeout, full, opts = {}) {
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return Promise.reject(this._notConnected(`call ${method}`));
    const seq = this._takeSeq();
    let frame;
    try {
      frame = encodeFrame({
        cmd: Cmd.REQUEST,
        flag: opts.async ? FLAG_ASYNC : 0,
        userFlags: opts.userFlags,
        seq,
        method,
        payload,
        metadata: opts.metadata,
      });
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise((resolve, reject) => {
      const p = { resolve, reject, timer: null, method, full };
      if (timeout > 0 && timeout !== Infinity) {
        p.timer = setTimeout(() => {
          if (this._pending.get(seq) === p) this._pending.delete(seq);
          reject(new TimeoutError(`call ${method} timed out after ${timeout} ms`));
        }, timeout);
      }
      this._pending.set(seq, p);
      ws.send(frame);
      this._lastTx = Date.now();
      this.stats.framesOut += 1;
    });
  }

  /**
   * Calls `method`; resolves with the Response payload. An error Response rejects with an
   * RpcError carrying the server's text; no answer within the timeout rejects with a
   * TimeoutError; a disconnect rejects at once with a DisconnectedError.
   * @param {object} [opts] {timeout (ms, 0 = none), metadata, userFlags, async}
   * @returns {Promise<Uint8Array>}
   */
  call(method, payload, opts = {}) {
    return this._rawCall(method, payload, opts.timeout ?? this.timeout, false, opts);
  }

  /** As `call`, resolving with the UTF-8 text of the answer. */
  async callText(method, payload, opts = {}) {
    return bytesToText(await this.call(method, payload, opts));
  }

  /**
   * As `call`, resolving with `{payload, metadata, userFlags, seq}` (metadata: a Map of key
   * to Uint8Array, or null when the Response carried none).
   */
  callWithMetadata(method, payload, opts = {}) {
    return this._rawCall(method, payload, opts.timeout ?? this.timeout, true, opts);
  }

  /** Sends a Notify (never answered). Throws a DisconnectedError when not connected. */
  notify(method, payload, opts = {}) {
    this._sendFrame({ cmd: Cmd.NOTIFY, seq: 0n, method, payload, metadata: opts.metadata, userFlags: opts.userFlags });
  }

  /** Sends a Ping; resolves with the round-trip time in ms when a Pong comes back. */
  ping(opts = {}) {
    const timeout = opts.timeout ?? this.timeout;
    const ws = this._ws;
    if (!ws || ws.readyState !== OPEN) return Promise.reject(this._notConnected('ping'));
    return new Promise((resolve, reject) => {
      const start = Date.now();
      const p = { resolve: () => resolve(Date.now() - start), reject, timer: null };
      if (timeout > 0 && timeout !== Infinity) {
        p.timer = setTimeout(() => {
          const i = this._pings.indexOf(p);
          if (i >= 0) this._pings.splice(i, 1);
          reject(new TimeoutError(`ping timed out after ${timeout} ms`));
        }, timeout);
      }
      try {
        this._sendPing();
      } catch (e) {
        clearTimeout(p.timer);
        reject(e);
        return;
      }
      this._pings.push(p);
    });
  }

  _sendPing() {
    this._sendFrame({ cmd: Cmd.PING });
    this.stats.pingsSent += 1;
  }

  // ---- keepalive -------------------------------------------------------------------

  _startKeepalive() {
    if (!(this.keepalive > 0)) return;
    let pingSentAt = 0;
    const tick = () => {
      const ws = this._ws;
      if (!ws || !this._connected) return;
      const now = Date.now();
      if (pingSentAt && this._lastRx < pingSentAt && now - pingSentAt >= this.keepaliveTimeout) {
        this._lost(ws, new DisconnectedError(`no answer from ${this.url} for ${now - this._lastRx} ms (keepalive)`));
        return;
      }
      if (this._lastRx >= pingSentAt) pingSentAt = 0;
      if (!pingSentAt && now - Math.max(this._lastRx, this._lastTx) >= this.keepalive) {
        try {
          this._sendPing();
          pingSentAt = Date.now();
        } catch {
          /* the close event follows */
        }
      }
      this._kaTimer = setTimeout(tick, Math.max(10, Math.min(this.keepalive, this.keepaliveTimeout) / 4));
    };
    this._kaTimer = setTimeout(tick, Math.max(10, this.keepalive / 4));
  }

  _stopKeepalive() {
    if (this._kaTimer) clearTimeout(this._kaTimer);
    this._kaTimer = null;
  }

  // ---- receiving -------------------------------------------------------------------

  _onMessage(ws, data) {
    if (ws !== this._ws) return;
    this._lastRx = Date.now();
    let chunk;
    if (data instanceof ArrayBuffer) chunk = new Uint8Array(data);
    else if (ArrayBuffer.isView(data)) chunk = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    else if (typeof data === 'string') chunk = utf8Encoder.encode(data);
    else {
      this._lost(ws, new ProtocolError('unexpected WebSocket message type (set binaryType to arraybuffer)'));
      return;
    }
    let frames;
    try {
      frames = this._reader.push(chunk);
    } catch (e) {
      this._lost(ws, e);
      return;
    }
    for (const raw of frames) {
      if (isCompressed(raw) || this._rxPendingAsync > 0) {
        // Inflating is asynchronous: later frames wait behind it so order is kept.
        this._rxPendingAsync += 1;
        const prev = this._rxChain ?? Promise.resolve();
        this._rxChain = prev.then(async () => {
          if (ws !== this._ws) return;
          try {
            const plain = isCompressed(raw) ? await inflateFrame(raw, this.maxBody) : raw;
            if (ws === this._ws) this._onFrame(ws, plain);
          } catch (e) {
            this._lost(ws, e instanceof ProtocolError ? e : new ProtocolError(String(e)));
          } finally {
            this._rxPendingAsync -= 1;
          }
        });
      } else {
        this._onFrame(ws, raw);
        if (ws !== this._ws) return;
      }
    }
  }

  _onFrame(ws, raw) {
    let f;
    try {
      f = decodeFrame(raw);
    } catch (e) {
      this._lost(ws, e);
      return;
    }
    this.stats.framesIn += 1;
    switch (f.cmd) {
      case Cmd.RESPONSE:
        return this._onResponse(f);
      case Cmd.REQUEST:
        return this._onRequest(ws, f);
      case Cmd.NOTIFY:
        return this._onNotify(f);
      case Cmd.PING:
        this.stats.pingsReceived += 1;
        try {
          this._sendFrame({ cmd: Cmd.PONG }, ws);
          this.stats.pongsSent += 1;
        } catch {
          /* closing */
        }
        return;
      case Cmd.PONG: {
        this.stats.pongsReceived += 1;
        const p = this._pings.shift();
        if (p) {
          clearTimeout(p.timer);
          p.resolve();
        }
        return;
      }
      case Cmd.STREAM:
        return this._onStream(ws, f);
    }
  }

  _onResponse(f) {
    const p = this._pending.get(f.seq);
    if (!p) return; // unknown, answered or timed out: ignored
    this._pending.delete(f.seq);
    clearTimeout(p.timer);
    if (f.metadataError) {
      p.reject(new ProtocolError(`${f.metadataError} (response to ${p.method})`));
    } else if (f.isError) {
      p.reject(new RpcError(bytesToText(f.payload), p.method));
    } else if (p.full) {
      p.resolve({ payload: f.payload, metadata: f.metadata, userFlags: f.userFlags, seq: f.seq });
    } else {
      p.resolve(f.payload);
    }
  }

  _ctx(f) {
    return { client: this, method: f.method, seq: f.seq, userFlags: f.userFlags, metadata: f.metadata, isAsync: f.isAsync, replyMetadata: undefined };
  }

  async _onRequest(ws, f) {
    const reply = (payload, isError, metadata) => {
      if (ws !== this._ws) return; // that connection is gone: the peer's call fails there
      try {
        this._sendFrame({
          cmd: Cmd.RESPONSE,
          flag: (isError ? FLAG_ERROR : 0) | (f.flag & FLAG_ASYNC),
          seq: f.seq,
          method: f.method,
          payload,
          metadata,
        }, ws);
      } catch (e) {
        if (!(e instanceof DisconnectedError)) this._emit('error', e);
      }
    };
    if (f.metadataError) return reply(f.metadataError, true);
    const h = this._handlers.get(f.method);
    if (!h) return reply(METHOD_NOT_FOUND, true);
    const ctx = this._ctx(f);
    try {
      const out = await h(f.payload, ctx);
      let bytes;
      try {
        bytes = toBytes(out);
      } catch (e) {
        return reply(`handler returned a bad reply: ${e.message}`, true);
      }
      reply(bytes, false, ctx.replyMetadata);
    } catch (e) {
      reply(e && e.message !== undefined ? String(e.message) : String(e), true);
    }
  }

  _onNotify(f) {
    if (f.metadataError) return;
    const h = this._notifyHandlers.get(f.method);
    if (!h) return;
    try {
      const r = h(f.payload, this._ctx(f));
      if (r && typeof r.then === 'function') r.then(undefined, (e) => this._emit('error', e));
    } catch (e) {
      this._emit('error', e);
    }
  }

  _onStream(ws, f) {
    if (f.metadataError) return; // dropped, as the engine does
    if (!f.streamLocal) {
      // A stream this side opened.
      const s = this._streams.get(f.seq);
      if (s && s.method === f.method) s._onFrame(f);
      return;
    }
    let s = this._peerStreams.get(f.seq);
    if (s) {
      s._onFrame(f);
      return;
    }
    const h = this._streamHandlers.get(f.method);
    if (!h) {
      if (!(f.streamEof && f.isError)) {
        try {
          this._sendFrame({ cmd: Cmd.STREAM | CMD_STREAM_EOF, flag: FLAG_ERROR, seq: f.seq, method: f.method, payload: STREAM_METHOD_NOT_FOUND }, ws);
        } catch {
          /* closing */
        }
      }
      return;
    }
    if (f.payload.length === 0 && !f.streamEof) return; // carries nothing, opens nothing
    s = new Stream(this, f.seq, f.method, false);
    this._peerStreams.set(f.seq, s);
    s._onFrame(f);
    Promise.resolve()
      .then(() => h(s, this._ctx(f)))
      .then(
        () => {
          if (!s.sendClosed && this._peerStreams.get(s.id) === s && this._ws === ws) {
            s.closeSend().catch(() => {});
          }
        },
        (e) => {
          if (this._ws === ws && !s.sendClosed) s.closeWithError(e && e.message !== undefined ? e.message : String(e));
        },
      );
  }

  /** @internal */
  _forgetStream(s) {
    const map = s.local ? this._streams : this._peerStreams;
    if (map.get(s.id) === s) map.delete(s.id);
  }

  // ---- handlers --------------------------------------------------------------------

  /**
   * Serves Requests the server sends for `method`: `fn(payload, ctx)` returns (or resolves
   * with) the reply payload; a throw answers with an error Response carrying its message.
   * Set `ctx.replyMetadata` to attach metadata. Pass null to remove.
   */
  handle(method, fn) {
    methodBytes(method);
    if (fn === null) this._handlers.delete(method);
    else this._handlers.set(method, fn);
  }

  /** Receives Notifies the server sends for `method`: `fn(payload, ctx)`. Null removes. */
  onNotify(method, fn) {
    methodBytes(method);
    if (method === 'in_P') throw new RangeError('in_P is the pub/sub route: use subscribeTopic');
    if (fn === null) this._notifyHandlers.delete(method);
    else this._notifyHandlers.set(method, fn);
  }

  /**
   * Serves streams the server opens for `method`: `fn(stream, ctx)`. When `fn` returns (or
   * its promise resolves) the sending side is closed if still open; a throw ends the
   * stream with an error end carrying its message. Null removes.
   */
  handleStream(method, fn) {
    methodBytes(method);
    if (fn === null) this._streamHandlers.delete(method);
    else this._streamHandlers.set(method, fn);
  }

  // ---- streams ---------------------------------------------------------------------

  /**
   * Opens a stream to `method` (the server's stream handler serves it). Nothing is sent
   * until the first `send`. `opts.timeout` (ms) ends it with a TimeoutError and an error end
   * `stream timed out` if it has not ended both ways by then.
   */
  openStream(method, opts = {}) {
    methodBytes(method);
    if (!this._ws || this._ws.readyState !== OPEN) throw this._notConnected(`stream ${method}`);
    const s = new Stream(this, this._takeSeq(), method, true);
    this._streams.set(s.id, s);
    const timeout = opts.timeout ?? 0;
    if (timeout > 0 && timeout !== Infinity) {
      s._timer = setTimeout(() => {
        s._timer = null;
        if (!s._sendDone && this._connected) {
          try {
            this._sendFrame(s._frame(utf8Encoder.encode('stream timed out'), true, true));
          } catch {
            /* closing */
          }
        }
        s._sendDone = true;
        s._end(new TimeoutError(`stream ${method} timed out after ${timeout} ms`));
      }, timeout);
    }
    return s;
  }

  /**
   * arpc's subscribe: opens a stream, sends `payload` with EOF, and returns the stream,
   * async-iterable over the server's replies until its EOF (an error end throws an
   * RpcError). `opts.timeout` bounds the whole subscription (default: none).
   */
  subscribe(method, payload, opts = {}) {
    const s = this.openStream(method, opts);
    s.sendAndClose(payload).catch(() => {});
    return s;
  }

  // ---- pub/sub (Go arpc's extension) -------------------------------------------------

  /** Authenticates for pub/sub (`in_A`); remembered and sent again after a reconnect. */
  async pubsubAuth(password, opts = {}) {
    const pw = toBytes(password);
    await this.call('in_A', pw, opts);
    this._pubsubPassword = pw;
  }

  /**
   * Subscribes to topic `name`; `fn({name, data, timestamp, text()})` gets each
   * publication. Several functions may share a topic. Re-subscribed after a reconnect.
   * @returns {Promise<() => Promise<void>>} resolves (once the server agreed) with an unsubscribe function
   */
  async subscribeTopic(name, fn, opts = {}) {
    if (typeof fn !== 'function') throw new TypeError('subscribeTopic needs a function');
    let set = this._topics.get(name);
    const fresh = !set;
    if (fresh) this._topics.set(name, (set = new Set()));
    set.add(fn);
    if (fresh) {
      try {
        await this.call('in_S', encodeTopic(name, EMPTY), opts);
      } catch (e) {
        set.delete(fn);
        if (set.size === 0 && this._topics.get(name) === set) this._topics.delete(name);
        throw e;
      }
    }
    return () => this.unsubscribeTopic(name, fn, opts);
  }

  /** Removes `fn` (or every function, when omitted) from topic `name`; the last one sends `in_U`. */
  async unsubscribeTopic(name, fn, opts = {}) {
    const set = this._topics.get(name);
    if (!set) return;
    if (fn) set.delete(fn);
    else set.clear();
    if (set.size > 0) return;
    this._topics.delete(name);
    if (this._connected) await this.call('in_U', encodeTopic(name, EMPTY), opts);
  }

  /** Publishes `data` to every subscriber of topic `name` (`in_P`). */
  async publish(name, data, opts = {}) {
    await this.call('in_P', encodeTopic(name, data, opts.timestamp), opts);
  }

  /** Publishes `data` to one subscriber of topic `name`, in turn (`in_P1`). */
  async publishToOne(name, data, opts = {}) {
    await this.call('in_P1', encodeTopic(name, data, opts.timestamp), opts);
  }

  /** The topics this client is subscribed to. */
  get topics() {
    return [...this._topics.keys()];
  }

  _onPublish(payload) {
    let t;
    try {
      t = decodeTopic(payload);
    } catch (e) {
      this._emit('error', e);
      return;
    }
    const set = this._topics.get(t.name);
    if (!set) return;
    t.text = function text() {
      return bytesToText(this.data);
    };
    for (const fn of [...set]) {
      try {
        const r = fn(t);
        if (r && typeof r.then === 'function') r.then(undefined, (e) => this._emit('error', e));
      } catch (e) {
        this._emit('error', e);
      }
    }
  }

  async _restorePubsub() {
    const ws = this._ws;
    try {
      if (this._pubsubPassword) await this.call('in_A', this._pubsubPassword);
      for (const name of [...this._topics.keys()]) {
        await this.call('in_S', encodeTopic(name, EMPTY));
      }
      if (ws === this._ws) this._emit('resubscribed', this.topics);
    } catch (e) {
      this._emit('error', e);
    }
  }
}

export default RingClient;
