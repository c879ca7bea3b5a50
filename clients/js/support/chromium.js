// Test support: a headless Chromium driven over the DevTools protocol with the `ws` package
// (no Playwright or Puppeteer). Used by this package's browser test and by the chat
// application's end-to-end test (examples/chat/web/test/), which runs with this package's
// node_modules.
//
// The browser is $RINGRPC_CHROMIUM, else the first of chromium, chromium-browser,
// google-chrome found on PATH (Debian: `apt-get install chromium`). Tests skip without one
// unless RINGRPC_REQUIRE_BROWSER=1 (see `browserSkip`).

import { spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';
import { testTls } from './engine.js';

/**
 * Under the TLS run (see engine.js), the flag that makes Chromium trust the test
 * certificate's key: the base64 SHA-256 of its SubjectPublicKeyInfo.
 */
function trustTestCertificate() {
  const tls = testTls();
  if (!tls) return [];
  const spki = new X509Certificate(readFileSync(tls.cert)).publicKey.export({ type: 'spki', format: 'der' });
  return [`--ignore-certificate-errors-spki-list=${createHash('sha256').update(spki).digest('base64')}`];
}

/** The browser binary, or null when there is none. */
export function findBrowser() {
  if (process.env.RINGRPC_CHROMIUM) return process.env.RINGRPC_CHROMIUM;
  for (const name of ['chromium', 'chromium-browser', 'google-chrome', 'google-chrome-stable']) {
    for (const dir of (process.env.PATH ?? '').split(':')) {
      const p = path.join(dir, name);
      if (dir && existsSync(p)) return p;
    }
  }
  return null;
}

/** node:test's `skip` option for a browser test: a reason when there is no browser and none is required. */
export function browserSkip(browser = findBrowser()) {
  return !browser && process.env.RINGRPC_REQUIRE_BROWSER !== '1'
    ? 'no Chromium found (install it, e.g. apt-get install chromium, or set RINGRPC_CHROMIUM)'
    : false;
}

/** A minimal DevTools protocol client over one WebSocket (flattened sessions). */
export class Cdp {
  constructor(wsUrl) {
    this.ws = new WebSocket(wsUrl, { perMessageDeflate: false, maxPayload: 256 << 20 });
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
    // A browser that went away answers nothing more: fail what is waiting.
    this.ws.on('close', () => {
      for (const call of this.calls.values()) call.reject(new Error(`${call.method}: the DevTools connection closed`));
      this.calls.clear();
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', resolve);
      this.ws.once('error', reject);
    });
  }

  send(method, params = {}, sessionId) {
    const id = this.nextId++;
    if (this.ws.readyState !== WebSocket.OPEN) return Promise.reject(new Error(`${method}: the DevTools connection is not open`));
    return new Promise((resolve, reject) => {
      this.calls.set(id, { resolve, reject, method });
      this.ws.send(JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) }));
    });
  }

  /**
   * Opens `url` in a new tab (in `browserContextId` when given: a separate profile, with
   * its own storage) and attaches to it.
   * @returns {Promise<{targetId: string, sessionId: string, send(method, params?): Promise<any>, evaluate(expression: string): Promise<any>}>}
   */
  async openPage(url, browserContextId) {
    const { targetId } = await this.send('Target.createTarget', {
      url,
      ...(browserContextId ? { browserContextId } : {}),
    });
    const { sessionId } = await this.send('Target.attachToTarget', { targetId, flatten: true });
    const send = (method, params) => this.send(method, params, sessionId);
    const evaluate = async (expression) => {
      const r = await send('Runtime.evaluate', { expression, awaitPromise: true, returnByValue: true });
      if (r.exceptionDetails) {
        const d = r.exceptionDetails;
        throw new Error(`in the page: ${d.exception?.description ?? d.text}`);
      }
      return r.result.value;
    };
    return { targetId, sessionId, send, evaluate };
  }

  close() {
    this.ws.close();
  }
}

/** Starts `bin` headless with a DevTools endpoint on a free port; `endpoint` resolves to its URL. */
export function launch(bin, userDir) {
  const proc = spawn(bin, [
    '--headless=new',
    '--no-sandbox', // root in a container has no usable sandbox
    '--disable-gpu',
    '--disable-dev-shm-usage',
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-extensions',
    '--hide-scrollbars',
    '--remote-debugging-address=127.0.0.1',
    '--remote-debugging-port=0',
    `--user-data-dir=${userDir}`,
    ...trustTestCertificate(),
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

/**
 * Launches `bin` (a fresh profile in a temp dir) and connects to it.
 * @returns {Promise<{cdp: Cdp, proc, close(): Promise<void>}>} `close` ends the browser and
 * removes the profile; call it in a `finally`.
 */
export async function startBrowser(bin) {
  const userDir = mkdtempSync(path.join(tmpdir(), 'ringrpc-chromium-'));
  const { proc, endpoint } = launch(bin, userDir);
  let cdp;
  const close = async () => {
    if (cdp) await cdp.send('Browser.close').catch(() => {});
    cdp?.close();
    if (proc.exitCode === null && proc.signalCode === null) {
      const gone = new Promise((r) => proc.once('exit', r));
      setTimeout(() => proc.kill('SIGKILL'), 3000).unref();
      await gone;
    }
    rmSync(userDir, { recursive: true, force: true });
  };
  try {
    cdp = new Cdp(await endpoint);
    await cdp.opened;
  } catch (e) {
    await close();
    throw e;
  }
  return { cdp, proc, close };
}
