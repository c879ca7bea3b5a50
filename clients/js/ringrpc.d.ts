// TypeScript declarations for ringrpc.js: the ringrpc / Go arpc wire over WebSocket.

/** What a payload may be given as: UTF-8 text, bytes, or nothing (empty). */
export type Payload = string | Uint8Array | ArrayBuffer | ArrayBufferView | null | undefined;

/** Metadata entries for an `md` block: values as text or bytes. */
export type MetadataInput =
  | Map<string, string | Uint8Array>
  | ReadonlyArray<readonly [string, string | Uint8Array]>
  | Record<string, string | Uint8Array>;

/** Metadata received: key to value bytes, in the order sent. */
export type Metadata = Map<string, Uint8Array>;

// ---- constants ------------------------------------------------------------------------

export declare const Cmd: Readonly<{
  REQUEST: 1;
  RESPONSE: 2;
  NOTIFY: 3;
  PING: 4;
  PONG: 5;
  STREAM: 6;
}>;
export declare const CMD_STREAM_LOCAL: 0x80;
export declare const CMD_STREAM_EOF: 0x40;
export declare const FLAG_ERROR: 0x01;
export declare const FLAG_ASYNC: 0x02;
export declare const USER_FLAG_METADATA: 0x01;
export declare const USER_FLAG_GZIP: 0x80;
export declare const HEADER_LEN: 16;
export declare const MAX_METHOD_LEN: 127;
export declare const DEFAULT_MAX_BODY: number;
/** Whether this runtime can inflate gzip frames (has DecompressionStream). */
export declare const canInflate: boolean;

// ---- errors -----------------------------------------------------------------------------

/** An error Response or a stream's error end: `message` is the peer's text. */
export declare class RpcError extends Error {
  constructor(message: string, method?: string);
  name: 'RpcError';
  method: string | undefined;
  /** Set on the error a refused `/_auth` secret gives. */
  auth?: boolean;
}

/** No answer in time (call, ping, stream or subscription timeout, connecting). */
export declare class TimeoutError extends Error {
  constructor(message: string);
  name: 'TimeoutError';
}

/** The connection is down or the client closed; pending work fails with this at once. */
export declare class DisconnectedError extends Error {
  constructor(message: string, cause?: unknown);
  name: 'DisconnectedError';
  auth?: boolean;
}

/** The peer broke the wire format (the connection is closed). */
export declare class ProtocolError extends Error {
  constructor(message: string);
  name: 'ProtocolError';
}

// ---- codec ------------------------------------------------------------------------------

export interface FrameInit {
  /** Command (Cmd.*), optionally with CMD_STREAM_LOCAL / CMD_STREAM_EOF. */
  cmd: number;
  flag?: number;
  userFlags?: number;
  seq?: bigint | number;
  method?: string;
  payload?: Payload;
  metadata?: MetadataInput | null;
}

export interface Frame {
  /** The command, without the stream bits. */
  cmd: number;
  streamLocal: boolean;
  streamEof: boolean;
  flag: number;
  isError: boolean;
  isAsync: boolean;
  /** user_flags, with the metadata bit cleared once its block was taken off. */
  userFlags: number;
  seq: bigint;
  method: string;
  payload: Uint8Array;
  metadata: Metadata | null;
  /** Why a block announced by user_flags bit 0 could not be read, if it could not. */
  metadataError: string | null;
}

export interface Header {
  bodyLen: number;
  userFlags: number;
  cmdByte: number;
  flag: number;
  methodLen: number;
  seq: bigint;
}

export declare function toBytes(data: Payload): Uint8Array;
export declare function bytesToText(bytes: Uint8Array): string;
export declare function encodeFrame(frame: FrameInit): Uint8Array;
export declare function decodeHeader(bytes: Uint8Array): Header;
/** @throws {ProtocolError} */
export declare function decodeFrame(bytes: Uint8Array): Frame;
export declare function isCompressed(frame: Uint8Array): boolean;
/** @throws {ProtocolError} */
export declare function inflateFrame(frame: Uint8Array, maxBody?: number): Promise<Uint8Array>;
export declare function encodeMetadata(metadata: MetadataInput): Uint8Array;
export declare function splitMetadata(payload: Uint8Array): { payload: Uint8Array; metadata: Metadata };

/** Splits a byte stream into whole frames. */
export declare class FrameReader {
  constructor(maxBody?: number);
  maxBody: number;
  /** @throws {ProtocolError} when a header declares a body over the limit */
  push(chunk: Uint8Array): Uint8Array[];
}

/** A pub/sub publication. */
export interface Topic {
  name: string;
  data: Uint8Array;
  /** The publisher's clock, nanoseconds since the Unix epoch. */
  timestamp: bigint;
}

/** A publication as handed to `subscribeTopic` functions. */
export interface Publication extends Topic {
  /** `data` as UTF-8 text. */
  text(): string;
}

export declare function encodeTopic(name: string, data: Payload, timestamp?: bigint | number): Uint8Array;
export declare function decodeTopic(bytes: Uint8Array): Topic;

// ---- client -----------------------------------------------------------------------------

/** The WebSocket constructor: the browser's, or e.g. the `ws` package's on Node 20. */
export interface WebSocketConstructor {
  new (url: string, protocols?: string | string[], options?: unknown): WebSocketLike;
}

export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  send(data: Uint8Array): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: any) => any) | null;
  onmessage: ((ev: any) => any) | null;
  onerror: ((ev: any) => any) | null;
  onclose: ((ev: any) => any) | null;
}

export interface ReconnectOptions {
  /** First delay in ms (default 100). */
  initial?: number;
  /** Largest delay in ms: the cap of the backoff (default 10000). */
  max?: number;
  /** Growth of the delay per failed attempt (default 2). */
  factor?: number;
  /** Attempts in a row before giving up and closing (default Infinity). */
  attempts?: number;
  /** 0..1: each delay is shortened by up to this fraction at random (default 0). */
  jitter?: number;
}

export interface ClientOptions {
  /** WebSocket constructor; default `globalThis.WebSocket` (browsers, Node >= 22). */
  WebSocket?: WebSocketConstructor;
  /** Default call timeout in ms; 0 or Infinity for none (default 30000). */
  timeout?: number;
  /** Timeout of each connection attempt (and its `/_auth`), ms (default 10000). */
  connectTimeout?: number;
  /** Send a Ping after this many ms without traffic; 0 = off (default). */
  keepalive?: number;
  /** Drop the connection when a Ping got nothing back for this long (default max(2 × keepalive, 1000)). */
  keepaliveTimeout?: number;
  /** Reconnect with exponential backoff (default on); false for never. */
  reconnect?: boolean | ReconnectOptions;
  /** Shared secret sent as the `/_auth` Request first on every connection. */
  auth?: string | Uint8Array | null;
  /** Largest frame body accepted (default 64 MiB − 16). */
  maxBody?: number;
  /** Stream sends wait while the socket holds more unsent bytes than this (default 1 MiB). */
  sendHighWater?: number;
  /** First seq to use (default 1); any u64. */
  firstSeq?: bigint | number;
  /** WebSocket subprotocols. */
  protocols?: string | string[];
  /** Third argument of the WebSocket constructor (e.g. ws's options; Node only). */
  wsOptions?: unknown;
}

export interface CallOptions {
  /** ms; 0 or Infinity for none; default the client's `timeout`. */
  timeout?: number;
  /** Metadata to send with the Request. */
  metadata?: MetadataInput;
  /** user_flags bits for the application (bits 1..=6; 0 and 7 belong to the codec). */
  userFlags?: number;
  /** Set the async flag (arpc's CallAsync); the server echoes it. */
  async?: boolean;
}

export interface CallResult {
  payload: Uint8Array;
  metadata: Metadata | null;
  userFlags: number;
  seq: bigint;
}

/** What handlers get besides the payload. */
export interface HandlerContext {
  client: RingClient;
  method: string;
  seq: bigint;
  userFlags: number;
  metadata: Metadata | null;
  isAsync: boolean;
  /** Set in a Request handler to attach metadata to its Response. */
  replyMetadata: MetadataInput | undefined;
}

export type RequestHandler = (payload: Uint8Array, ctx: HandlerContext) => Payload | Promise<Payload>;
export type NotifyHandler = (payload: Uint8Array, ctx: HandlerContext) => void | Promise<void>;
export type StreamHandler = (stream: Stream, ctx: HandlerContext) => void | Promise<void>;

export interface StreamOptions {
  /** ms for the whole stream (both ways ended); then a TimeoutError here and an error end there. */
  timeout?: number;
}

export interface ClientEvents {
  connect: { reconnected: boolean };
  disconnect: Error;
  reconnecting: { attempt: number; delay: number };
  reconnectFailed: Error;
  /** Pub/sub state restored after a reconnect: the topics subscribed again. */
  resubscribed: string[];
  /** The client is done: null after close(), the reason when reconnecting gave up. */
  close: Error | null;
  /** Errors of notify/topic handlers and of restoring pub/sub. */
  error: unknown;
}

export interface ClientStats {
  pingsReceived: number;
  pongsSent: number;
  pingsSent: number;
  pongsReceived: number;
  reconnects: number;
  framesIn: number;
  framesOut: number;
}

/**
 * One stream, either side's: async-iterable over the received chunks until the peer's EOF;
 * an error end rejects with RpcError, a disconnect with DisconnectedError.
 */
export declare class Stream implements AsyncIterable<Uint8Array> {
  private constructor();
  readonly id: bigint;
  readonly method: string;
  /** Whether this side opened it. */
  readonly local: boolean;
  /** Metadata of the first frame that carried some. */
  readonly metadata: Metadata | null;
  readonly sendClosed: boolean;
  readonly recvClosed: boolean;
  send(data: Payload): Promise<void>;
  sendAndClose(data: Payload): Promise<void>;
  closeSend(): Promise<void>;
  closeWithError(text: string): void;
  /** The next chunk, or null after the peer's EOF. */
  recv(): Promise<Uint8Array | null>;
  /** Every remaining chunk until EOF, concatenated. */
  readAll(): Promise<Uint8Array>;
  [Symbol.asyncIterator](): AsyncIterator<Uint8Array>;
}

export declare class RingClient {
  /** Connects (and authenticates); rejects if that first attempt fails. */
  static connect(url: string, options?: ClientOptions): Promise<RingClient>;
  constructor(url: string, options?: ClientOptions);

  readonly url: string;
  readonly connected: boolean;
  readonly closed: boolean;
  readonly stats: ClientStats;
  /** The pub/sub topics subscribed to. */
  readonly topics: string[];

  on<E extends keyof ClientEvents>(event: E, fn: (arg: ClientEvents[E]) => void): () => void;
  off<E extends keyof ClientEvents>(event: E, fn: (arg: ClientEvents[E]) => void): void;

  /** Resolves with the Response payload; RpcError / TimeoutError / DisconnectedError otherwise. */
  call(method: string, payload?: Payload, options?: CallOptions): Promise<Uint8Array>;
  callText(method: string, payload?: Payload, options?: CallOptions): Promise<string>;
  callWithMetadata(method: string, payload?: Payload, options?: CallOptions): Promise<CallResult>;
  /** @throws {DisconnectedError} when not connected */
  notify(method: string, payload?: Payload, options?: Pick<CallOptions, 'metadata' | 'userFlags'>): void;
  /** Round-trip time in ms. */
  ping(options?: { timeout?: number }): Promise<number>;

  /** Serves Requests the server sends; null removes. */
  handle(method: string, fn: RequestHandler | null): void;
  /** Receives Notifies the server sends; null removes. */
  onNotify(method: string, fn: NotifyHandler | null): void;
  /** Serves streams the server opens; null removes. */
  handleStream(method: string, fn: StreamHandler | null): void;

  openStream(method: string, options?: StreamOptions): Stream;
  /** Sends `payload` with EOF on a new stream and returns it to iterate the replies. */
  subscribe(method: string, payload?: Payload, options?: StreamOptions): Stream;

  pubsubAuth(password: string | Uint8Array, options?: CallOptions): Promise<void>;
  /** Resolves with a function that unsubscribes `fn`. */
  subscribeTopic(name: string, fn: (topic: Publication) => void | Promise<void>, options?: CallOptions): Promise<() => Promise<void>>;
  unsubscribeTopic(name: string, fn?: (topic: Publication) => void | Promise<void>, options?: CallOptions): Promise<void>;
  publish(name: string, data: Payload, options?: CallOptions & { timestamp?: bigint }): Promise<void>;
  publishToOne(name: string, data: Payload, options?: CallOptions & { timestamp?: bigint }): Promise<void>;

  /** Closes for good: pending work fails at once, no reconnect. */
  close(): void;
}

export default RingClient;
