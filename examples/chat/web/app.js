// The chat page: the same routes and pushes as chat-client (see examples/chat/src/protocol.rs),
// over the server's WebSocket with ringrpc.js. Everything the server sends is shown with
// textContent, never parsed as HTML.
import { RingClient, RpcError } from '/ringrpc.js';

const $ = (id) => document.getElementById(id);
const json = (value) => JSON.stringify(value);
const parse = (bytes) => JSON.parse(new TextDecoder().decode(bytes));
const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`;

let client = null;
let me = null;

function log(text, cls, from) {
  const li = document.createElement('li');
  li.className = cls;
  if (from) {
    const b = document.createElement('b');
    b.textContent = from;
    li.append(b, ': ');
  }
  li.append(text);
  $('log').append(li);
  li.scrollIntoView({ block: 'end' });
}

function showLogin(message) {
  me = null;
  $('app').hidden = true;
  $('logout').hidden = true;
  $('login').hidden = false;
  $('who').textContent = '';
  $('login-error').textContent = message ?? '';
}

function showChat() {
  $('login').hidden = true;
  $('app').hidden = false;
  $('logout').hidden = false;
  $('who').textContent = `logged in as ${me}`;
  $('send').elements.text.focus();
}

// A call whose success answer is a Reply ({text, ...}); errors are logged.
async function command(method, request) {
  try {
    const reply = parse(await client.call(method, request === undefined ? '' : json(request)));
    log(reply.text, 'reply');
    return reply;
  } catch (e) {
    log(e instanceof RpcError ? e.message : `${e.name}: ${e.message}`, 'error');
    return null;
  }
}

async function refreshOnline() {
  if (!me) return;
  let users = [];
  try {
    users = parse(await client.call('/chat/whoelse')).users ?? [];
  } catch {
    return;
  }
  const list = $('online');
  const options = $('users');
  list.replaceChildren();
  options.replaceChildren();
  for (const user of users) {
    const li = document.createElement('li');
    const name = document.createElement('a');
    name.href = '#';
    name.textContent = user;
    name.onclick = (ev) => {
      ev.preventDefault();
      $('send').elements.to.value = user;
      $('send').elements.text.focus();
    };
    li.append(name);
    list.append(li);
    const option = document.createElement('option');
    option.value = user;
    options.append(option);
  }
  if (users.length === 0) list.textContent = 'no one else';
}

async function connect() {
  if (client && client.connected) return client;
  // A new connection is a new, logged-out session: no silent reconnects.
  client = await RingClient.connect(url, { reconnect: false, timeout: 30000 });
  client.handle('/chat/msg', (payload) => {
    const msg = parse(payload);
    const cls = msg.kind === 'broadcast' ? 'broadcast' : msg.offline ? 'offline' : 'private';
    log(msg.text, cls, msg.from);
    return 'ok'; // the receipt: the server forgets the message
  });
  client.onNotify('/chat/notice', (payload) => {
    const notice = parse(payload);
    log(notice.text, 'notice');
    if (notice.kind === 'timeout') showLogin(notice.text);
    else refreshOnline();
  });
  client.on('close', () => {
    if (me) showLogin('disconnected from the server; log in again');
  });
  return client;
}

$('login').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const user = form.elements.user.value.trim();
  try {
    await connect();
    const reply = parse(await client.call('/chat/login', json({ user, password: form.elements.password.value })));
    if (!reply.ok) {
      $('login-error').textContent = reply.text;
      if (reply.refusal === 'wrong_password' || reply.refusal === 'blocked') form.elements.password.value = '';
      return;
    }
    me = user;
    form.elements.password.value = '';
    showChat();
    log(reply.text, 'reply');
    refreshOnline();
  } catch (e) {
    $('login-error').textContent = `cannot log in: ${e.message}`;
  }
});

$('send').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const form = ev.target;
  const to = form.elements.to.value.trim();
  const text = form.elements.text.value;
  if (to) log(text, 'private mine', `to ${to}`);
  else log(text, 'broadcast mine', 'to everyone');
  form.elements.text.value = '';
  if (to) await command('/chat/message', { to, text });
  else await command('/chat/broadcast', { text });
});

$('block-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const op = ev.submitter?.value === 'unblock' ? 'unblock' : 'block';
  await command(`/chat/${op}`, { user: ev.target.elements.user.value.trim() });
});

$('since-form').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  await command('/chat/whoelsesince', { seconds: Number(ev.target.elements.seconds.value) || 0 });
});

$('logout').addEventListener('click', async () => {
  await command('/chat/logout');
  showLogin('logged out');
});
