// The unbundled module in a real headless browser (Chromium) against a real engine: the page
// imports ringrpc.js from a tiny static server and talks to ws://127.0.0.1:PORT/ws with the
// browser's own WebSocket. Chromium is driven over the DevTools protocol with the `ws`
// package, so no Playwright or Puppeteer is needed.
//
// The browser is $RINGRPC_CHROMIUM, else the first of chromium, chromium-browser,
// google-chrome found on PATH (Debian: `apt-get install chromium`). Without one the test is
// skipped, unless RINGRPC_REQUIRE_BROWSER=1 makes that a failure (CI).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:http';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';
import { startEngine } from '../support/engine.js';

const pkgRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function findBrowser() {
  if (process.env.RINGRPC_CHROMIUM) return process.env.RINGRPC_CHROMIUM;
  for (const name of ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']) {
    for (const dir of (process.env.PATH ?? '').split(':')) {
      const p = path.join(dir, name);
      if (dir && existsSync(p)) return p;
    }
  }
  return null;
}

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>ringrpc browser test</title>
<script type="module">
import { RingClient, RpcError, bytesToText } from '/ringrpc.js';

window.runTests = async (url) => {
  const out = {};
  const c = await RingClient.connect(url, { timeout: 10000, reconnect: false });
  out.text = await c.callText('/echo', 'héllo from the browser 🌍');
  const bin = new Uint8Array(100000).map((_, i) => (i * 7) & 0xff);
  const back = await c.call('/echo', bin);
  out.binaryOk = back.length === bin.length && back.every((b, i) => b === bin[i]);
  const many = await Promise.all(Array.from({ length: 300 }, (_, i) => c.callText('/echo', 'n' + i)));
  out.manyOk = many.every((t, i) => t === 'n' + i);
  out.lastSeq = String(c._nextSeq);
  try {
    await c.call('/missing', 'x');
    out.error = 'no error';
  } catch (e) {
    out.error = (e instanceof RpcError ? 'RpcError: ' : 'other: ') + e.message;
  }
  const s = c.openStream('/echo/stream');
  await s.send('a');
  await s.send('b');
  await s.closeSend();
  out.stream = [];
  for await (const chunk of s) out.stream.push(bytesToText(chunk));
  out.subscribe = [];
  for await (const r of c.subscribe('/echo/stream', 'sub')) out.subscribe.push(bytesToText(r));
  out.pingMs = await c.ping();
  c.close();
  out.closed = c.closed;
  return out;
};
window.moduleLoaded = true;
</script>
`;

/** A minimal DevTools protocol client over one WebSocket (flattened sessions). */
class Cdp {
  constructor(wsUrl) {
    this.ws = new WebSocket(wsUrl, { perMessageDeflate: false });
    this.nextId = 1;
    this.calls = new Map();
    this.ws.on('message', (data) => {
      const msg = JSON.parse(data);
      const call = this.calls.get(msg.id);
      if (!call) return;
      this.calls.delete(msg.id);
      if (msg.error) call.reject(new Error(`${call.method}: ${msg.error.message}`));
      else call.resolve(msg.result);
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
  }

  send(method, params = {}, sessionId) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject, method });
      this.ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  close() {
    this.ws.close();
  }
}

function launch(bin, userDir) {
  const proc = spawn(bin, [
    '--headless=new',
    '--no-sandbox', // root in a container has no usable sandbox
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-extensions',
    '--remote-debugging-address=127.0.0.1',
    '--remote-debugging-port=0',
    `--user-data-dir=${userDir}`,
    'about:blank',
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const endpoint = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`chromium printed no DevTools endpoint in 45 s: ${err.slice(-2000)}`)), 45000);
    proc.stderr.on('data', (d) => {
      err += d;
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    proc.once('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`chromium exited (${code ?? sig}) before listening: ${err.slice(-2000)}`));
    });
  });
  return { proc, endpoint };
}

const browser = findBrowser();
const skip = !browser && process.env.RINGRPC_REQUIRE_BROWSER !== '1'
  ? 'no Chromium found (install it, e.g. apt-get install chromium, or set RINGRPC_CHROMIUM)'
  : false;

test('ringrpc.js in headless Chromium: calls, errors, streams and subscribe against the engine', { skip, timeout: 120000 }, async () => {
  assert.ok(browser, 'RINGRPC_REQUIRE_BROWSER=1 but no Chromium found (set RINGRPC_CHROMIUM)');
  const engine = await startEngine();
  const http = createServer((req, res) => {
    if (req.url === '/ringrpc.js') {
      res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' });
      res.end(readFileSync(path.join(pkgRoot, 'ringrpc.js')));
    } else if (req.url === '/' || req.url === '/index.html') {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end(PAGE);
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise((r) => http.listen(0, '127.0.0.1', r));
  const pageUrl = `http://127.0.0.1:${http.address().port}/`;
  const userDir = mkdtempSync(path.join(tmpdir(), 'ringrpc-chromium-'));
  const { proc, endpoint } = launch(browser, userDir);
  let cdp;
  try {
    cdp = new Cdp(await endpoint);
    await cdp.opened;
    const { targetId } = await cdp.send('Target.createTarget', { url: pageUrl });
    const { sessionId } = await cdp.send('Target.attachToTarget', { targetId, flatten: true });
    const evaluate = async (expression) => {
      const r = await cdp.send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true }, sessionId);
      if (r.exceptionDetails) {
        const d = r.exceptionDetails;
        throw new Error(`in the page: ${d.exception?.description ?? d.text}`);
      }
      return r.result.value;
    };
    const loadedBy = Date.now() + 30000;
    while (!(await evaluate('window.moduleLoaded === true'))) {
      if (Date.now() > loadedBy) throw new Error('the page did not load ringrpc.js within 30 s');
      await new Promise((r) => setTimeout(r, 100));
    }
    const out = await evaluate(`window.runTests(${JSON.stringify(engine.url)})`);
    assert.equal(out.text, 'héllo from the browser 🌍');
    assert.equal(out.binaryOk, true);
    assert.equal(out.manyOk, true);
    assert.ok(BigInt(out.lastSeq) > 300n);
    assert.equal(out.error, 'RpcError: method not found');
    assert.deepEqual(out.stream, ['a', 'b']);
    assert.deepEqual(out.subscribe, ['sub']);
    assert.equal(typeof out.pingMs, 'number');
    assert.equal(out.closed, true);
    await cdp.send('Browser.close').catch(() => {});
  } finally {
    cdp?.close();
    if (proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((r) => proc.once('exit', r));
      setTimeout(() => proc.kill('SIGKILL'), 3000).unref();
      await gone;
    }
    await new Promise((r) => http.close(r));
    await engine.kill();
    rmSync(userDir, { recursive: true, force: true });
  }
});
