// The codec against docs/protocol.md's golden vectors and edge cases; no engine needed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  Cmd,
  CMD_STREAM_EOF,
  CMD_STREAM_LOCAL,
  FLAG_ASYNC,
  FLAG_ERROR,
  FrameReader,
  ProtocolError,
  bytesToText,
  decodeFrame,
  decodeTopic,
  encodeFrame,
  encodeMetadata,
  encodeTopic,
  inflateFrame,
  isCompressed,
  splitMetadata,
} from '../ringrpc.js';

const hex = (s) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b) => Buffer.from(b).toString('hex');

test('golden vectors encode byte for byte and decode back', () => {
  const cases = [
    [{ cmd: Cmd.REQUEST, seq: 2, method: '/echo', payload: 'hello' }, '0a000000 00 01 00 05 0200000000000000 2f6563686f 68656c6c6f'],
    [{ cmd: Cmd.RESPONSE, seq: 2, method: '/echo', payload: 'hello' }, '0a000000 00 02 00 05 0200000000000000 2f6563686f 68656c6c6f'],
    [{ cmd: Cmd.RESPONSE, flag: FLAG_ERROR, seq: 5, method: '/fail', payload: 'boom' }, '09000000 00 02 01 05 0500000000000000 2f6661696c 626f6f6d'],
    [{ cmd: Cmd.REQUEST, flag: FLAG_ASYNC, seq: 7, method: '/echo', payload: 'hi' }, '07000000 00 01 02 05 0700000000000000 2f6563686f 6869'],
    [{ cmd: Cmd.PING }, '00000000 00 04 00 00 0000000000000000'],
    [{ cmd: Cmd.PONG }, '00000000 00 05 00 00 0000000000000000'],
  ];
  for (const [f, want] of cases) {
    const bytes = encodeFrame(f);
    assert.equal(toHex(bytes), toHex(hex(want)));
    const d = decodeFrame(bytes);
    assert.equal(d.cmd, f.cmd);
    assert.equal(d.seq, BigInt(f.seq ?? 0));
    assert.equal(d.method, f.method ?? '');
    assert.equal(bytesToText(d.payload), f.payload ?? '');
    assert.equal(d.isError, f.flag === FLAG_ERROR);
    assert.equal(d.isAsync, f.flag === FLAG_ASYNC);
  }
});

test('64-bit seq: every byte of it counts (arpc JS decodes seq >= 256 wrongly)', () => {
  const seqs = [0n, 1n, 255n, 256n, 257n, 65535n, 65536n, 0xffffffffn, 1n << 32n, (1n << 32n) + 1n, (1n << 53n) + 1n, (1n << 64n) - 1n];
  for (const seq of seqs) {
    const bytes = encodeFrame({ cmd: Cmd.REQUEST, seq, method: '/m', payload: 'x' });
    const le = Buffer.from(bytes.subarray(8, 16)).readBigUInt64LE(0);
    assert.equal(le, seq, `encoded seq ${seq}`);
    assert.equal(decodeFrame(bytes).seq, seq, `decoded seq ${seq}`);
  }
  assert.equal(decodeFrame(hex('0000000000040000 0001000000000000')).seq, 256n);
  assert.throws(() => encodeFrame({ cmd: Cmd.REQUEST, seq: 1n << 64n, method: '/m' }), RangeError);
  assert.throws(() => encodeFrame({ cmd: Cmd.REQUEST, seq: -1n, method: '/m' }), RangeError);
});

test('stream bits and the stream example of the spec', () => {
  const a = encodeFrame({ cmd: Cmd.STREAM | CMD_STREAM_LOCAL, seq: 2, method: '/stream', payload: 'a' });
  assert.equal(toHex(a), toHex(hex('08000000 00 86 00 07 0200000000000000 2f73747265616d 61')));
  const eof = encodeFrame({ cmd: Cmd.STREAM | CMD_STREAM_LOCAL | CMD_STREAM_EOF, seq: 2, method: '/stream' });
  assert.equal(toHex(eof), toHex(hex('07000000 00 c6 00 07 0200000000000000 2f73747265616d')));
  const back = decodeFrame(hex('07000000 00 46 00 07 0200000000000000 2f73747265616d'));
  assert.equal(back.cmd, Cmd.STREAM);
  assert.equal(back.streamEof, true);
  assert.equal(back.streamLocal, false);
  const errEnd = decodeFrame(encodeFrame({ cmd: Cmd.STREAM | CMD_STREAM_EOF, flag: FLAG_ERROR, seq: 9, method: '/s', payload: 'stream timed out' }));
  assert.equal(errEnd.isError, true);
  assert.equal(bytesToText(errEnd.payload), 'stream timed out');
});

test('UTF-8 and binary payloads, user_flags carried', () => {
  const bin = Uint8Array.from({ length: 256 }, (_, i) => i);
  const d = decodeFrame(encodeFrame({ cmd: Cmd.NOTIFY, method: '/ünï', payload: bin, userFlags: 0x42 }));
  assert.deepEqual([...d.payload], [...bin]);
  assert.equal(d.method, '/ünï');
  assert.equal(d.userFlags, 0x42);
  const t = decodeFrame(encodeFrame({ cmd: Cmd.REQUEST, seq: 1, method: '/echo', payload: 'héllo 🌍' }));
  assert.equal(bytesToText(t.payload), 'héllo 🌍');
});

test('invalid frames are protocol errors', () => {
  const bad = [
    '00000000 00 00 00 00 0000000000000000', // command 0
    '00000000 00 07 00 00 0000000000000000', // command 7
    '01000000 00 04 00 00 0000000000000000 00', // ping with a body
    '01000000 00 01 00 00 0100000000000000 00', // request without method
    '01000000 00 02 00 02 0100000000000000 00', // method longer than body
    '80000000 00 02 00 80 0100000000000000' + '00'.repeat(128), // method_len 128
  ];
  for (const h of bad) assert.throws(() => decodeFrame(hex(h)), ProtocolError, h);
  assert.throws(() => encodeFrame({ cmd: Cmd.REQUEST, method: '' }), RangeError);
  assert.throws(() => encodeFrame({ cmd: Cmd.REQUEST, method: 'x'.repeat(128) }), RangeError);
});

test('FrameReader splits a byte stream at every point', () => {
  const frames = [
    encodeFrame({ cmd: Cmd.REQUEST, seq: 1, method: '/echo', payload: 'one' }),
    encodeFrame({ cmd: Cmd.PING }),
    encodeFrame({ cmd: Cmd.RESPONSE, seq: 300, method: '/echo', payload: new Uint8Array(40).fill(7) }),
  ];
  const all = new Uint8Array(frames.reduce((n, f) => n + f.length, 0));
  let o = 0;
  for (const f of frames) {
    all.set(f, o);
    o += f.length;
  }
  for (let cut = 0; cut <= all.length; cut++) {
    const r = new FrameReader();
    const got = [...r.push(all.slice(0, cut)), ...r.push(all.slice(cut))];
    assert.equal(got.length, 3, `cut ${cut}`);
    assert.deepEqual(got.map((g) => decodeFrame(g).seq), [1n, 0n, 300n]);
  }
  const r = new FrameReader(100);
  assert.throws(() => r.push(hex('65000000 00 01 00 01 0100000000000000')), ProtocolError);
});

test('metadata: the worked example of the spec, both ways', () => {
  const want = hex('19000000 01 01 00 05 0200000000000000 2f6563686f 68656c6c6f 6d64 05 7472616365 0300 616263 000f');
  const bytes = encodeFrame({ cmd: Cmd.REQUEST, seq: 2, method: '/echo', payload: 'hello', metadata: { trace: 'abc' } });
  assert.equal(toHex(bytes), toHex(want));
  const d = decodeFrame(want);
  assert.equal(bytesToText(d.payload), 'hello');
  assert.equal(d.userFlags, 0);
  assert.equal(bytesToText(d.metadata.get('trace')), 'abc');
  assert.equal(toHex(encodeMetadata(new Map())), '6d640004');
  assert.throws(() => splitMetadata(hex('6d64 00 0005')));
  assert.throws(() => splitMetadata(hex('7878 0004')));
  const bad = decodeFrame(hex('0a000000 01 01 00 05 0200000000000000 2f6563686f 68656c6c6f'));
  assert.match(bad.metadataError, /invalid metadata/);
});

test('topic bytes: the spec example, parsed from the end', () => {
  const b = encodeTopic('news', 'hi', 42n);
  assert.equal(toHex(b), '68696e6577730400' + '2a00000000000000');
  const t = decodeTopic(b);
  assert.equal(t.name, 'news');
  assert.equal(bytesToText(t.data), 'hi');
  assert.equal(t.timestamp, 42n);
  const publish = hex('14 00 00 00 00 01 00 04 0a 00 00 00 00 00 00 00  69 6e 5f 50  68 69 6e 65 77 73 04 00 2a 00 00 00 00 00 00 00');
  assert.equal(toHex(encodeFrame({ cmd: Cmd.REQUEST, seq: 10, method: 'in_P', payload: b })), toHex(publish));
  assert.throws(() => decodeTopic(new Uint8Array(9)));
  assert.throws(() => decodeTopic(hex('0000 2a00000000000000')));
  assert.throws(() => decodeTopic(hex('0500 2a00000000000000')));
});

test('gzip: the worked example of the spec inflates', async () => {
  const z = hex('1c000000 80 1f8b0800000000000203 63646065628000fdd4e48cfc8cd49c9c7c05fa9300 eb56fc8f 88000000');
  assert.ok(isCompressed(z));
  const plain = await inflateFrame(z);
  const d = decodeFrame(plain);
  assert.equal(d.cmd, Cmd.REQUEST);
  assert.equal(d.seq, 2n);
  assert.equal(d.method, '/echo');
  assert.equal(bytesToText(d.payload), 'hello '.repeat(20));
  await assert.rejects(inflateFrame(hex('10000000 80 1f8b0800000000000203 0102030405')), ProtocolError);
  await assert.rejects(inflateFrame(z, 50), /over the maximum/);
});
