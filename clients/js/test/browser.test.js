// The unbundled module in a real headless browser (Chromium) against a real engine: the page
// imports ringrpc.js from a tiny static server and talks to ws://127.0.0.1:PORT/ws (wss://localhost:PORT/ws in the TLS run) with the
// browser's own WebSocket. Chromium is driven over the DevTools protocol with the `ws`
// package (support/chromium.js), so no Playwright or Puppeteer is needed.
//
// The browser is $RINGRPC_CHROMIUM, else the first of chromium, chromium-browser,
// google-chrome found on PATH (Debian: `apt-get install chromium`). Without one the test is
// skipped, unless RINGRPC_REQUIRE_BROWSER=1 makes that a failure (CI).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { browserSkip, findBrowser, startBrowser } from '../support/chromium.js';
import { startEngine } from '../support/engine.js';

const pkgRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

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

const browser = findBrowser();
const skip = browserSkip(browser);

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
  let chromium;
  try {
    chromium = await startBrowser(browser);
    const { evaluate } = await chromium.cdp.openPage(pageUrl);
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
  } finally {
    await chromium?.close();
    await new Promise((r) => http.close(r));
    await engine.kill();
  }
});
