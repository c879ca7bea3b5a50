// Test support: runs the real ringrpc `engine` binary as a child process.
//
// The binary is $RINGRPC_ENGINE, else $CARGO_TARGET_DIR/debug/engine, else
// ../../target/debug/engine relative to this package (build it with
// `cargo build -p ringrpc-cli`, or run ./run-tests.sh which does).
//
// With RINGRPC_JS_TLS_CERT and RINGRPC_JS_TLS_KEY set (PEM files for localhost), every
// engine serves TLS on its port and `url` is wss://localhost:PORT/ws: run-tests.sh runs the
// engine and browser tests a second time so, with NODE_EXTRA_CA_CERTS trusting the
// certificate in Node and its key pinned in Chromium (see chromium.js).

import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const pkgRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export function enginePath() {
  const candidates = [];
  if (process.env.RINGRPC_ENGINE) return path.resolve(process.env.RINGRPC_ENGINE);
  if (process.env.CARGO_TARGET_DIR) candidates.push(path.resolve(process.env.CARGO_TARGET_DIR, 'debug/engine'));
  candidates.push(path.resolve(pkgRoot, '../../target/debug/engine'));
  for (const c of candidates) if (existsSync(c)) return c;
  throw new Error(`engine binary not found (tried ${candidates.join(', ')}); build it with \`cargo build -p ringrpc-cli\` or set RINGRPC_ENGINE`);
}

/**
 * Starts an engine: `--cores 1 --no-pin --listen HOST:PORT` plus `args`. Resolves once it
 * printed its `engine listening on ADDR ...` line (ADDR is the fourth word).
 * @returns {Promise<{proc, addr: string, port: number, url: string, stop(): Promise<void>, kill(sig?): Promise<void>, signal(sig): void}>}
 */
export function startEngine({ args = [], port = 0 } = {}) {
  const bin = enginePath();
  const tls = testTls();
  const tlsArgs = tls ? ['--tls-cert', tls.cert, '--tls-key', tls.key] : [];
  const proc = spawn(bin, ['--cores', '1', '--no-pin', '--listen', `127.0.0.1:${port}`, '--log', 'warn', ...tlsArgs, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d) => {
    stderr += d;
  });
  const exited = new Promise((resolve) => proc.once('exit', (code, sig) => resolve({ code, sig })));
  return new Promise((resolve, reject) => {
    let out = '';
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`engine did not start within 20 s; stdout: ${out} stderr: ${stderr}`));
    }, 20000);
    const onData = (d) => {
      out += d;
      const line = out.split('\n').find((l) => l.startsWith('engine listening on '));
      if (!line) return;
      clearTimeout(timer);
      proc.stdout.off('data', onData);
      proc.stdout.resume();
      const addr = line.split(' ')[3];
      const p = Number(addr.slice(addr.lastIndexOf(':') + 1));
      const e = {
        proc,
        addr,
        port: p,
        url: tls ? `wss://localhost:${p}/ws` : `ws://${addr}/ws`,
        exited,
        signal(sig) {
          try {
            proc.kill(sig);
          } catch {
            /* gone */
          }
        },
        /** SIGSTOP, then waits until every thread is stopped (so nothing more is answered). */
        async pause() {
          proc.kill('SIGSTOP');
          await until(() => allThreadsStopped(proc.pid), 5000, 'the engine to stop');
        },
        resume() {
          e.signal('SIGCONT');
        },
        async kill(sig = 'SIGKILL') {
          if (proc.exitCode === null && proc.signalCode === null) {
            // SIGKILL ends a stopped process too; any other signal needs it running (and
            // SIGCONT first would let it answer what it had received).
            if (sig !== 'SIGKILL') proc.kill('SIGCONT');
            proc.kill(sig);
          }
          await exited;
        },
        async stop() {
          await e.kill('SIGKILL');
        },
      };
      resolve(e);
    };
    proc.stdout.on('data', onData);
    exited.then(({ code, sig }) => {
      clearTimeout(timer);
      reject(new Error(`engine exited (${code ?? sig}) before listening; stderr: ${stderr}`));
    });
  });
}

/** The certificate and key the engines serve TLS with, or null for plaintext. */
export function testTls() {
  const cert = process.env.RINGRPC_JS_TLS_CERT;
  const key = process.env.RINGRPC_JS_TLS_KEY;
  return cert && key ? { cert, key } : null;
}

/** Whether every thread of `pid` is in state T (stopped); Linux /proc. */
function allThreadsStopped(pid) {
  try {
    return readdirSync(`/proc/${pid}/task`).every((tid) => {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      return stat.slice(stat.lastIndexOf(')') + 2)[0] === 'T';
    });
  } catch {
    return false;
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves when `pred()` is true, polling; rejects after `ms`. */
export async function until(pred, ms = 10000, what = 'condition') {
  const end = Date.now() + ms;
  while (!(await pred())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** Resolves with the first `event` the client emits (rejects after `ms`). */
export function once(client, event, ms = 15000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`no ${event} event within ${ms} ms`));
    }, ms);
    const off = client.on(event, (arg) => {
      clearTimeout(t);
      off();
      resolve(arg);
    });
  });
}
