// The chat application end to end with real people's tools: the real `chat-server`, two
// browser users (alice, bob) on the real page in headless Chromium, each in its own browser
// context (separate storage, like two people), and one terminal user (carol) as a real
// `chat-client` process driven through its standard input, its output read as it arrives.
// The pages are used as a person would: form fields filled in and buttons clicked; what
// they show is read from the DOM.
//
// Run it with ../run-tests.sh (builds the binaries, installs clients/js's locked `ws`, which
// the shared DevTools driver clients/js/support/chromium.js imports). Environment:
//   RINGRPC_CHAT_SERVER, RINGRPC_CHAT_CLIENT  the binaries (default: $CARGO_TARGET_DIR/debug,
//                                             else target/debug at the repository root)
//   RINGRPC_CHROMIUM                          the browser (default: chromium etc. on PATH)
//   RINGRPC_REQUIRE_BROWSER=1                 no browser is a failure, not a skip
//   RINGRPC_WRITE_SCREENSHOT=1                write alice's page mid-conversation to
//                                             docs/chat.png (the README's screenshot)
//
// Built for a loaded 2-core machine: every wait polls until what is expected shows up, with
// generous deadlines; an absence is checked only after something later on the same
// connection has arrived.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { browserSkip, findBrowser, startBrowser } from '../../../../clients/js/support/chromium.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../..');
const DEADLINE = 30000;
const USERS = '# e2e accounts\nalice pa\nbob pb\ncarol pc\n';

function binary(name, envVar) {
  if (process.env[envVar]) return path.resolve(process.env[envVar]);
  const candidates = [];
  if (process.env.CARGO_TARGET_DIR) candidates.push(path.resolve(root, process.env.CARGO_TARGET_DIR, 'debug', name));
  candidates.push(path.join(root, 'target/debug', name));
  for (const c of candidates) if (existsSync(c)) return c;
  throw new Error(`${name} not found (tried ${candidates.join(', ')}); build it with \`cargo build -p ringrpc-chat\` or set ${envVar}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls `pred` until true; on timeout the error says what was awaited and what `state()` showed. */
async function until(what, pred, state = async () => '', ms = DEADLINE) {
  const end = Date.now() + ms;
  for (;;) {
    if (await pred()) return;
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}; saw:\n${await state()}`);
    await sleep(50);
  }
}

/** A child process whose stdout and stderr are collected as they arrive. */
function run(bin, args, opts = {}) {
  const proc = spawn(bin, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  const p = { proc, out: '', err: '' };
  proc.stdout.setEncoding('utf8').on('data', (d) => { p.out += d; });
  proc.stderr.setEncoding('utf8').on('data', (d) => { p.err += d; });
  p.exited = new Promise((resolve) => proc.once('exit', (code, sig) => resolve({ code, sig })));
  p.running = () => proc.exitCode === null && proc.signalCode === null;
  return p;
}

async function startServer(dir) {
  const users = path.join(dir, 'users');
  writeFileSync(users, USERS);
  const server = run(binary('chat-server', 'RINGRPC_CHAT_SERVER'), [
    '--listen', '127.0.0.1:0', '--users', users, '--block-duration', '60', '--timeout', '0',
    '--data', path.join(dir, 'data'), '--cores', '1',
  ]);
  const line = () => server.out.split('\n').find((l) => l.startsWith('chat-server listening on '));
  await until('chat-server to listen', async () => {
    if (!server.running()) throw new Error(`chat-server exited before listening: ${server.out}${server.err}`);
    return line() !== undefined;
  }, async () => server.out + server.err);
  server.addr = line().split(' ')[3]; // "chat-server listening on ADDR (...)"
  return server;
}

/** The terminal user: a chat-client on `addr`, commands written to its stdin. */
function terminal(addr) {
  const t = run(binary('chat-client', 'RINGRPC_CHAT_CLIENT'), [addr]);
  t.type = (line) => t.proc.stdin.write(`${line}\n`);
  t.sees = (text) => until(`the terminal to print ${JSON.stringify(text)}`, async () => t.out.includes(text), async () => t.out + t.err);
  return t;
}

/** A browser user's page, opened in a browser context of its own. */
async function openUser(cdp, url, name) {
  const { browserContextId } = await cdp.send('Target.createBrowserContext');
  const page = await cdp.openPage(url, browserContextId);
  page.name = name;
  // The log as [{cls, text}] (textContent: what a person reads, less the CSS-added labels).
  page.log = () => page.evaluate(`[...document.querySelectorAll('#log li')].map((li) => ({ cls: li.className, text: li.textContent }))`);
  const logText = async () => (await page.log()).map((e) => `  [${e.cls}] ${e.text}`).join('\n');
  /** Waits for a log line of class `cls` reading exactly `text`. */
  page.sees = (cls, text) => until(`${name}'s page to show [${cls}] ${JSON.stringify(text)}`,
    async () => (await page.log()).some((e) => e.cls === cls && e.text === text), logText);
  page.online = () => page.evaluate(`[...document.querySelectorAll('#online a')].map((a) => a.textContent)`);
  page.logText = logText;
  // Fills in a form's fields and clicks one of its buttons, as a person would.
  page.submit = (formId, fields, button = 'button') => page.evaluate(`(() => {
    const form = document.getElementById(${JSON.stringify(formId)});
    for (const [name, value] of Object.entries(${JSON.stringify(fields)})) form.elements[name].value = value;
    form.querySelector(${JSON.stringify(button)}).click();
    return true;
  })()`);
  // Module scripts run before the document leaves 'loading': app.js's handlers are in place.
  await until(`${name}'s page to load`, () => page.evaluate(`document.readyState === 'complete' && !!document.getElementById('login')`));
  return page;
}

async function browserLogin(page, password) {
  await page.submit('login', { user: page.name, password });
  await until(`${page.name} to be logged in`,
    () => page.evaluate(`document.getElementById('who').textContent === 'logged in as ${page.name}' && document.getElementById('login').hidden`),
    () => page.evaluate(`document.getElementById('login-error').textContent`));
  await page.sees('reply', `welcome, ${page.name}`);
}

const browser = findBrowser();

test('chat: two browser users and a terminal user exchange private messages and broadcasts, and a block holds', { skip: browserSkip(browser), timeout: 240000 }, async () => {
  assert.ok(browser, 'RINGRPC_REQUIRE_BROWSER=1 but no Chromium found (set RINGRPC_CHROMIUM)');
  const dir = mkdtempSync(path.join(tmpdir(), 'ringrpc-chat-e2e-'));
  let server;
  let carol;
  let chromium;
  try {
    server = await startServer(dir);
    const url = `http://${server.addr}/`;
    chromium = await startBrowser(browser);
    const alice = await openUser(chromium.cdp, url, 'alice');
    const bob = await openUser(chromium.cdp, url, 'bob');
    // alice's page is the README's screenshot: a desktop-sized window.
    await alice.send('Emulation.setDeviceMetricsOverride', { width: 1000, height: 700, deviceScaleFactor: 1, mobile: false });

    // Logins, in order, so each one's presence notice has someone to reach.
    await browserLogin(alice, 'pa');
    assert.deepEqual(await alice.online(), []);
    await browserLogin(bob, 'pb');
    await alice.sees('notice', 'bob logged in');
    carol = terminal(server.addr);
    await carol.sees('Username:');
    carol.type('carol');
    await carol.sees('Password:');
    carol.type('pc');
    await carol.sees('welcome, carol');
    await alice.sees('notice', 'carol logged in');
    await bob.sees('notice', 'carol logged in');
    await until("alice's online list to show bob and carol", async () => (await alice.online()).join() === 'bob,carol', async () => (await alice.online()).join());

    // Private messages around the triangle: browser → browser, browser → terminal, terminal → browser.
    await alice.submit('send', { to: 'bob', text: 'hi bob, lunch at noon?' });
    await alice.sees('private mine', 'to bob: hi bob, lunch at noon?');
    await bob.sees('private', 'alice: hi bob, lunch at noon?');
    await alice.sees('reply', 'message sent to bob');

    await bob.submit('send', { to: 'carol', text: 'carol, are you joining us?' });
    await carol.sees('bob: carol, are you joining us?');
    await bob.sees('reply', 'message sent to carol');

    carol.type('message alice yes, from my terminal');
    await carol.sees('message sent to alice');
    await alice.sees('private', 'carol: yes, from my terminal');

    // Broadcasts: from the terminal to both pages, from a page to the others.
    carol.type('broadcast build is green, shipping at 3');
    await carol.sees('broadcast sent to 2 users');
    await alice.sees('broadcast', 'carol: build is green, shipping at 3');
    await bob.sees('broadcast', 'carol: build is green, shipping at 3');

    await alice.submit('send', { to: '', text: 'nice work, everyone' });
    await alice.sees('broadcast mine', 'to everyone: nice work, everyone');
    await alice.sees('reply', 'broadcast sent to 2 users');
    await bob.sees('broadcast', 'alice: nice work, everyone');
    await carol.sees('alice (broadcast): nice work, everyone');

    // bob blocks carol from his page: her private message is refused and she is told; her
    // broadcast misses him, and she is told that too.
    await bob.submit('block-form', { user: 'carol' }, 'button[value=block]');
    await bob.sees('reply', 'blocked carol: they cannot message you, and you no longer get their broadcasts or presence notices');
    carol.type('message bob did you get my last one?');
    await carol.sees('error: bob has blocked you; your message was not delivered');
    carol.type('broadcast see you all tomorrow');
    await carol.sees('broadcast sent to 1 of 2 online users; some did not receive it: 1 user blocked you');
    await alice.sees('broadcast', 'carol: see you all tomorrow');

    // The screenshot: alice mid-conversation (notices, private and broadcast messages, the
    // online list), with a message being typed.
    await alice.evaluate(`(() => {
      const f = document.getElementById('send');
      f.elements.to.value = 'carol';
      f.elements.text.value = 'see you!';
      f.elements.text.focus();
      return true;
    })()`);
    const shot = await alice.send('Page.captureScreenshot', { format: 'png' });
    const png = Buffer.from(shot.data, 'base64');
    assert.ok(png.subarray(1, 4).toString() === 'PNG', 'a PNG screenshot');
    if (process.env.RINGRPC_WRITE_SCREENSHOT === '1') writeFileSync(path.join(root, 'docs/chat.png'), png);

    // carol leaves: alice is told and her online list follows; bob, who blocked carol, is not
    // told. Checked once a later push on bob's connection has arrived: alice's message, sent
    // only after she saw the notice, so after any notice bob would have got.
    carol.type('logout');
    await carol.sees('goodbye, carol');
    assert.deepEqual(await carol.exited, { code: 0, sig: null }, `chat-client exited badly: ${carol.out}${carol.err}`);
    await alice.sees('notice', 'carol logged out');
    await until("alice's online list to show only bob", async () => (await alice.online()).join() === 'bob', async () => (await alice.online()).join());
    await alice.submit('send', { to: 'bob', text: 'carol left' });
    await bob.sees('private', 'alice: carol left');

    const bobLog = await bob.log();
    assert.ok(!bobLog.some((e) => e.text.includes('did you get my last one')), `bob got a blocked message:\n${await bob.logText()}`);
    assert.ok(!bobLog.some((e) => e.text.includes('see you all tomorrow')), `bob got a blocked broadcast:\n${await bob.logText()}`);
    assert.ok(!bobLog.some((e) => e.text === 'carol logged out'), `bob got a blocked user's notice:\n${await bob.logText()}`);
    // Nothing went wrong on either page.
    for (const page of [alice, bob]) {
      const errors = (await page.log()).filter((e) => e.cls === 'error');
      assert.deepEqual(errors, [], `${page.name}'s page showed errors`);
    }
    // Nothing a person reads was sent as HTML: the page shows text only.
    assert.equal(await alice.evaluate(`document.querySelectorAll('#log li *:not(b)').length`), 0);
  } finally {
    await chromium?.close();
    if (carol?.running()) {
      carol.proc.kill('SIGKILL');
      await carol.exited;
    }
    if (server?.running()) {
      server.proc.kill('SIGTERM');
      const late = setTimeout(() => server.proc.kill('SIGKILL'), 10000);
      await server.exited;
      clearTimeout(late);
    }
    rmSync(dir, { recursive: true, force: true });
  }
  // A clean stop, nothing logged as a problem.
  assert.deepEqual(await server.exited, { code: 0, sig: null }, `chat-server: ${server.out}${server.err}`);
  assert.equal(server.err, '', 'chat-server wrote to stderr');
});
