//! The harness as the kernel: recv completions (data split anywhere, ENOBUFS, cancellations
//! racing data, EOF, resets), send completions (short writes, back-pressure from full socket
//! buffers, EPIPE), the close of a released socket (FIN, or RST over unread input), the
//! WebSocket client's framing, datagrams, and the faults a seed turns on.

use std::time::Duration;

use ringrpc::simulation::ws;

use crate::net::Pipe;
use crate::world::{Link, Recv, Side, World, WsClient};

const ECONNRESET: i32 = 104;
const EPIPE: i32 = 32;
const EAGAIN: i32 = 11;

/// What a side's input holds now.
enum Input {
    Nothing,
    Data(Vec<u8>),
    Eof,
    Reset,
}

/// The arpc bytes a side can read: its pipe, or (the WebSocket client) what its decoder
/// took out of the server's frames.
fn available(pipe: &Pipe, ws: Option<&WsClient>, now: Duration) -> usize {
    match ws {
        Some(ws) => ws.decoded.len(),
        None => pipe.arrived(now),
    }
}

fn read_input(pipe: &mut Pipe, ws: Option<&mut WsClient>, now: Duration, max: usize) -> Input {
    match ws {
        Some(ws) => {
            if !ws.decoded.is_empty() {
                let n = max.min(ws.decoded.len());
                return Input::Data(ws.decoded.drain(..n).collect());
            }
            if pipe.at_reset(now) {
                Input::Reset
            } else if pipe.at_eof() {
                Input::Eof
            } else {
                Input::Nothing
            }
        }
        None => {
            if pipe.arrived(now) > 0 {
                Input::Data(pipe.read(now, max))
            } else if pipe.at_reset(now) {
                Input::Reset
            } else if pipe.at_eof() {
                Input::Eof
            } else {
                Input::Nothing
            }
        }
    }
}

impl World {
    /// Moves one link's bytes and completions, both ways.
    pub fn link_io(&mut self, li: usize) {
        let now = self.t;
        let at = self.now();
        let max_chunk = self.sc.max_chunk;
        let link = &mut self.links[li];
        // The WebSocket client's kernel: decode the server's frames as they arrive.
        if let Some(ws) = link.ws.as_mut() {
            while ws.decoded.len() < link.capacity && link.down.arrived(now) > 0 {
                let chunk = link.down.read(now, 4096);
                match ws.decoder.feed(&chunk) {
                    Ok(events) => {
                        for e in events {
                            match e {
                                ws::ServerEvent::Status(101) => ws.upgraded = true,
                                ws::ServerEvent::Status(s) => {
                                    let text = format!("link {li}: upgrade answered {s}");
                                    self.violations.push(text);
                                }
                                ws::ServerEvent::Data(d) => ws.decoded.extend(d),
                                ws::ServerEvent::Pong => {}
                                ws::ServerEvent::Close(_) => ws.closed_by_server = true,
                            }
                        }
                    }
                    Err(e) => {
                        self.violations
                            .push(format!("link {li}: the server's frames: {e}"));
                        link.down.reset(now);
                    }
                }
            }
            if ws.upgraded && !ws.held.is_empty() {
                let held = std::mem::take(&mut ws.held);
                let framed = frame_for_ws(&mut self.rng, &held);
                link.up.push(now, link.up_latency, framed);
            }
        }
        let rng = &mut self.rng;
        // A tick reaps several completions of a connection's multishot recv.
        let rounds = rng.usize(1, 4);
        for server in [true, false].repeat(rounds) {
            let Link {
                server: srv,
                client: cli,
                up,
                down,
                ws,
                capacity,
                ..
            } = link;
            let (side, input, ws) = if server {
                (srv, up, None)
            } else {
                (cli, down, ws.as_mut())
            };
            if !side.live() || side.slow_until > now {
                continue;
            }
            let got = match side.recv {
                Recv::Armed if rng.percent(2) => {
                    side.conn.recv_no_buffers();
                    side.recv = Recv::Idle;
                    continue;
                }
                Recv::Armed => read_input(input, ws, now, chunk(rng, max_chunk)),
                Recv::Direct => {
                    let want = side.conn.direct_want().unwrap_or(0);
                    let ready = available(input, ws.as_deref(), now);
                    // MSG_WAITALL: it completes once it has them all, or what a full socket
                    // buffer holds, or early now and then.
                    let full = ready >= *capacity / 2;
                    if ready >= want || full || rng.percent(20) || input.at_eof() || input.rst {
                        read_input(input, ws, now, want)
                    } else {
                        Input::Nothing
                    }
                }
                Recv::Cancelling(direct) => {
                    if !direct && rng.percent(25) && available(input, ws.as_deref(), now) > 0 {
                        read_input(input, ws, now, chunk(rng, max_chunk))
                    } else {
                        side.conn.recv_cancelled();
                        side.recv = Recv::Idle;
                        continue;
                    }
                }
                Recv::Idle => Input::Nothing,
            };
            self.tally.direct_recvs += u64::from(side.recv == Recv::Direct);
            if self.trace {
                let what = match &got {
                    Input::Data(d) => format!("{} bytes", d.len()),
                    Input::Eof => "EOF".into(),
                    Input::Reset => "reset".into(),
                    Input::Nothing => String::new(),
                };
                if !what.is_empty() {
                    eprintln!(
                        "[{now:>10.3?}] link {li} {} recv ({:?}): {what}",
                        if server { "server" } else { "client" },
                        side.recv
                    );
                }
            }
            deliver(side, got, at, rng);
        }
        // Sends complete when the socket takes the bytes.
        for server in [true, false] {
            let Link {
                server: srv,
                client: cli,
                up,
                down,
                ws,
                up_latency,
                down_latency,
                capacity,
                ..
            } = link;
            let peer_gone = if server { !cli.live() } else { !srv.live() };
            let (side, out, back, latency, ws) = if server {
                (srv, down, up, *down_latency, None)
            } else {
                (cli, up, down, *up_latency, ws.as_mut())
            };
            if !side.sending || !rng.percent(60) {
                continue;
            }
            if side.write_broken || out.rst {
                side.sending = false;
                side.conn.send_done(Err(EPIPE));
                continue;
            }
            if peer_gone {
                // The peer's socket is closed: the kernel takes the bytes, the peer answers
                // with a reset, and later writes fail.
                let n = side.conn.sending_len();
                side.write_broken = true;
                back.reset(now);
                side.sending = false;
                side.conn.send_done(Ok(n));
                continue;
            }
            let room = capacity.saturating_sub(out.len);
            let total = side.conn.sending_len();
            if room == 0 && total > 0 {
                continue; // blocked: the send waits for the peer to read
            }
            let mut n = total.min(room);
            if n > 1 && rng.percent(20) {
                n = rng.usize(1, n);
            }
            let bytes: Vec<u8> = side.conn.sending().flatten().copied().take(n).collect();
            self.digest.num(n as u64);
            match ws {
                Some(ws) if !ws.upgraded => ws.held.extend_from_slice(&bytes),
                Some(_) => out.push(now, latency, frame_for_ws(rng, &bytes)),
                None => out.push(now, latency, bytes),
            }
            side.sending = false;
            if self.trace {
                eprintln!(
                    "[{now:>10.3?}] link {li} {} sent {n} of {total}",
                    if server { "server" } else { "client" }
                );
            }
            side.conn.send_done(Ok(n));
        }
    }

    /// Polls one side and carries out its actions.
    pub fn poll_side(&mut self, li: usize, server: bool) {
        let now = self.t;
        let at = self.now();
        let link = &mut self.links[li];
        let (side, input, out, peer) = if server {
            (
                &mut link.server,
                &mut link.up,
                &mut link.down,
                &mut link.client,
            )
        } else {
            (
                &mut link.client,
                &mut link.down,
                &mut link.up,
                &mut link.server,
            )
        };
        if !side.live() {
            return;
        }
        let unread = if server {
            input.arrived(now)
        } else {
            link.ws
                .as_ref()
                .map_or_else(|| input.arrived(now), |w| w.decoded.len())
        };
        let actions = side.conn.poll(at, unread);
        // Now and then the ring refuses what the poll asked for (a full submission queue):
        // the connection closes with that error.
        let mut actions = actions;
        let mut refused_op = false;
        if self.sc.resets && self.rng.per_mille(2) {
            let refused = if actions.start_send {
                actions.start_send = false;
                side.conn.send_refused(EAGAIN);
                true
            } else if actions.arm_recv || actions.start_direct {
                actions.arm_recv = false;
                actions.start_direct = false;
                side.conn.arm_refused(EAGAIN);
                true
            } else {
                false
            };
            if refused {
                self.tally.faults += 1;
                refused_op = true;
            }
        }
        if actions.start_send {
            side.sending = true;
        }
        if actions.cancel_recv {
            side.recv = match side.recv {
                Recv::Armed => Recv::Cancelling(false),
                Recv::Direct => Recv::Cancelling(true),
                other => other,
            };
        }
        if actions.arm_recv {
            side.recv = Recv::Armed;
        }
        if actions.start_direct {
            side.recv = Recv::Direct;
        }
        if actions.shut_write || actions.shut_both {
            out.fin = true;
        }
        if actions.shut_both {
            // shutdown(SHUT_RDWR) wakes a send blocked on a full socket: it fails.
            side.write_broken = true;
        }
        if actions.overstocked {
            self.tally.overstocks += 1;
        }
        if let Some(reason) = actions.released {
            side.releases += 1;
            side.reason = Some(reason.to_string());
            // close(): unread input (arrived or on its way) turns it into a reset.
            if input.len > 0 {
                out.reset(now);
                input.reset(now);
                peer.write_broken = true;
            } else {
                out.fin = true;
            }
            side.sending = false;
            side.recv = Recv::Idle;
            let id = side.conn.info().id;
            self.digest.num(li as u64 * 2 + u64::from(server));
            self.note(|| {
                format!(
                    "link {li} {} released: {reason}",
                    if server { "server" } else { "client" }
                )
            });
            if server {
                self.log_release(id);
            }
        }
        if refused_op {
            // The lifecycle decided to close: the next poll carries it out.
            self.links[li].faulted = true;
            self.poll_side(li, server);
        }
    }

    /// Datagrams due are delivered; whatever the endpoints queued goes on the air.
    pub fn datagrams(&mut self) {
        let now = self.t;
        let at = self.now();
        for d in self.air.due(now) {
            self.tally.datagrams += 1;
            self.digest.add(&d.bytes);
            if d.to == self.udp_addr {
                self.udp_server.on_datagram(at, d.from, &d.bytes);
            } else if let Some(c) = self.udp_clients.iter_mut().find(|c| c.addr == d.to) {
                c.core.on_datagram(at, d.from, &d.bytes);
            }
        }
        self.flush_datagrams();
    }

    pub fn flush_datagrams(&mut self) {
        let now = self.t;
        for (to, bytes) in self.udp_server.take_out() {
            self.air.send(&mut self.rng, now, self.udp_addr, to, &bytes);
        }
        for c in &mut self.udp_clients {
            for (to, bytes) in c.core.take_out() {
                self.air.send(&mut self.rng, now, c.addr, to, &bytes);
            }
        }
    }

    /// The faults this seed has on: resets, half-closes, garbage, slow readers.
    pub fn faults(&mut self) {
        let now = self.t;
        let n = self.links.len() as u64;
        let li = self.rng.below(n) as usize;
        let sc = &self.sc;
        let link = &mut self.links[li];
        if sc.resets && self.rng.per_mille(4) {
            link.up.reset(now);
            link.down.reset(now);
            link.server.write_broken = true;
            link.client.write_broken = true;
            link.faulted = true;
            self.tally.faults += 1;
            self.note(|| format!("fault: link {li} reset"));
        } else if sc.half_closes && self.rng.per_mille(4) && !link.up.fin {
            // The client's socket shut for writing behind its connection's back.
            link.up.fin = true;
            link.client.write_broken = true;
            link.faulted = true;
            self.tally.faults += 1;
            self.note(|| format!("fault: link {li} half-closed by the client"));
        } else if sc.garbage && self.rng.per_mille(3) {
            let mut junk = vec![0x10, 0, 0, 0, 0, 0xEE, 0, 0];
            junk.extend((0..self.rng.below(40)).map(|i| i as u8));
            link.up.push(now, link.up_latency, junk);
            link.faulted = true;
            link.corrupted = true;
            self.tally.faults += 1;
            self.note(|| format!("fault: link {li} got garbage"));
        } else if sc.slow_readers && self.rng.per_mille(20) {
            let pause = Duration::from_millis(self.rng.range(10, 2000));
            if self.rng.percent(50) {
                link.client.slow_until = now + pause;
            } else {
                link.server.slow_until = now + pause;
            }
        }
    }
}

/// How many bytes one recv completion carries: mostly up to the seed's chunk size, at times
/// a whole buffer's worth.
fn chunk(rng: &mut crate::rng::Rng, max_chunk: usize) -> usize {
    if rng.percent(80) {
        rng.usize(1, max_chunk)
    } else {
        rng.usize(1, 65_536)
    }
}

/// One recv completion for `side` with what its input held.
fn deliver(side: &mut Side, got: Input, at: std::time::Instant, rng: &mut crate::rng::Rng) {
    match (side.recv, got) {
        (_, Input::Nothing) => {}
        (Recv::Direct, Input::Data(d)) => {
            side.recv = Recv::Idle;
            side.conn.direct_done(at, &d);
        }
        (Recv::Cancelling(_), Input::Data(d)) => {
            side.conn.recv(at, &d, true);
        }
        (_, Input::Data(d)) => {
            let more = !rng.percent(5);
            if !more {
                side.recv = Recv::Idle;
            }
            side.conn.recv(at, &d, more);
        }
        (_, Input::Eof) => {
            side.recv = Recv::Idle;
            side.conn.recv_eof();
        }
        (_, Input::Reset) => {
            side.recv = Recv::Idle;
            side.conn.recv_error(ECONNRESET, false);
        }
    }
}

/// Client bytes as masked WebSocket frames: one message cut in up to three fragments, a
/// Ping between some of them.
fn frame_for_ws(rng: &mut crate::rng::Rng, bytes: &[u8]) -> Vec<u8> {
    let mask = rng.next_u64().to_le_bytes()[..4].try_into().unwrap();
    let cuts: Vec<usize> = (0..rng.below(3))
        .map(|_| rng.usize(1, bytes.len().max(1)))
        .collect();
    let pings: Vec<usize> = (0..3).filter(|_| rng.percent(10)).collect();
    ws::client_message(bytes, &cuts, &pings, mask)
}
