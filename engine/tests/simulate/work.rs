//! The random workload: calls (echo, deferred answers, server pushes, calls back to the
//! client), notifies, streams with windows and slow consumers, pub/sub subscribes,
//! unsubscribes and publishes, datagram calls with retries; and the harness's part of the
//! server: answering (or dropping) the responders `/defer` took.

use std::collections::VecDeque;
use std::time::Duration;

use bytes::Bytes;
use ringrpc::{BiStream, Retry, StreamError, Topic};

use crate::ledger::{CallPlan, Link, tagged};
use crate::world::{Timer, World};

/// One stream a client opened to `/echo/stream`.
#[derive(Debug)]
pub struct StreamRun {
    pub stream: Option<BiStream>,
    pub to_send: VecDeque<Vec<u8>>,
    /// Bytes sent (accepted by `send`), in order.
    pub sent: Vec<u8>,
    pub received: Vec<u8>,
    pub close_sent: bool,
    pub ended: Option<Result<(), StreamError>>,
    pub slow_until: Duration,
}

const TOPICS: [&str; 3] = ["news", "chat", "ops"];

impl World {
    fn tag(&mut self) -> u64 {
        self.next_tag += 1;
        self.next_tag
    }

    fn payload_len(&mut self) -> usize {
        let max = self.sc.max_payload;
        match self.rng.below(100) {
            0..=69 => self.rng.usize(8, 64.min(max).max(8)),
            70..=94 => self.rng.usize(8, 2048.min(max).max(8)),
            _ => self.rng.usize(8, max.max(8)),
        }
    }

    /// A live link whose client still takes work.
    fn pick_link(&mut self) -> Option<usize> {
        let live: Vec<usize> = (0..self.links.len())
            .filter(|&i| self.links[i].client.live())
            .collect();
        (!live.is_empty()).then(|| live[self.rng.below(live.len() as u64) as usize])
    }

    pub fn workload_op(&mut self) {
        let udp = !self.udp_clients.is_empty();
        match self.rng.below(100) {
            0..=29 => self.call_op("/echo", None),
            30..=39 => self.call_op("/defer", None),
            40..=47 => self.call_op("/push", None),
            48..=53 => self.call_op("/callback", None),
            54..=57 => self.notify_op(),
            58..=64 => self.open_stream(),
            65..=69 => self.pubsub_op("in_S"),
            70..=72 => self.pubsub_op("in_U"),
            73..=81 => self.pubsub_op("in_P"),
            82..=95 if udp => self.udp_op(),
            96 => {
                if let Some(li) = self.pick_link() {
                    self.note(|| format!("link {li}: the client closes"));
                    self.links[li].faulted = true;
                    self.links[li].client.conn.request_close();
                }
            }
            _ => {}
        }
    }

    /// Starts a call from a client; `payload`: given bytes (pub/sub), else a tagged one.
    fn call_op(&mut self, method: &'static str, given: Option<(u64, Vec<u8>)>) {
        let Some(li) = self.pick_link() else { return };
        let (tag, payload) = match given {
            Some(g) => g,
            None => {
                let tag = self.tag();
                let len = self.payload_len();
                (tag, tagged(tag, len))
            }
        };
        let expect = match method {
            "/echo" | "/defer" => payload.clone(),
            _ => Vec::new(),
        };
        self.calls.plans.insert(
            tag,
            CallPlan {
                link: Link::Stream(li),
                method,
                expect,
            },
        );
        self.tally.calls += 1;
        let shared = self.shared.clone();
        let completed = self.links[li].completed.clone();
        let done = Box::new(move |outcome| {
            completed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut rec = shared.lock();
            let pushed = rec.pushes.iter().any(|&(_, t)| t == tag);
            rec.outcomes.push((tag, outcome, pushed));
        });
        let deadline = self.now() + self.sc.call_timeout;
        let link = &mut self.links[li];
        // Counted as started first: a call refused at once completes inside start_call.
        link.started += 1;
        if let Some(seq) = link
            .client
            .conn
            .start_call(method.as_bytes(), &payload, deadline, done)
        {
            self.timers.insert((deadline, Timer::Client(li, seq)));
        }
        self.note(|| {
            format!(
                "link {li}: call {method} tag {tag} ({} bytes)",
                payload.len()
            )
        });
    }

    fn notify_op(&mut self) {
        let Some(li) = self.pick_link() else { return };
        let tag = self.tag();
        let payload = tagged(tag, 16);
        let method: &[u8] = if self.rng.percent(50) {
            b"/echo"
        } else {
            b"/nowhere"
        };
        self.links[li].client.conn.notify(method, &payload);
    }

    fn pubsub_op(&mut self, method: &'static str) {
        let tag = self.tag();
        let name = self.rng.pick(&TOPICS);
        let data = if method == "in_P" {
            tagged(tag, 12)
        } else {
            Vec::new()
        };
        let topic = Topic::new(Bytes::from_static(name.as_bytes()), Bytes::from(data), 1)
            .and_then(|t| t.encode())
            .expect("a valid topic");
        if method == "in_P" {
            self.tally.publications += 1;
        }
        self.call_op(method, Some((tag, topic.to_vec())));
    }

    fn open_stream(&mut self) {
        let Some(li) = self.pick_link() else { return };
        let Ok(stream) = self.links[li]
            .client
            .conn
            .handle()
            .open_stream("/echo/stream")
        else {
            return;
        };
        let frames = self.rng.usize(1, 12);
        let to_send = (0..frames)
            .map(|_| {
                let tag = self.tag();
                let len = self.rng.usize(8, 3000);
                tagged(tag, len)
            })
            .collect();
        self.links[li].streams.push(StreamRun {
            stream: Some(stream),
            to_send,
            sent: Vec::new(),
            received: Vec::new(),
            close_sent: false,
            ended: None,
            slow_until: Duration::ZERO,
        });
    }

    fn udp_op(&mut self) {
        let c = self.rng.below(self.udp_clients.len() as u64) as usize;
        let tag = self.tag();
        let method = self.rng.pick(&["/echo", "/echo", "/defer", "/push"]);
        let payload = tagged(tag, self.rng.usize(8, 600));
        let expect = if method == "/push" {
            Vec::new()
        } else {
            payload.clone()
        };
        self.calls.plans.insert(
            tag,
            CallPlan {
                link: Link::Datagram(c),
                method,
                expect,
            },
        );
        self.tally.calls += 1;
        let shared = self.shared.clone();
        let done = Box::new(move |outcome| {
            let mut rec = shared.lock();
            let pushed = rec.pushes.iter().any(|&(_, t)| t == tag);
            rec.outcomes.push((tag, outcome, pushed));
        });
        let retry = Retry {
            first_after: Duration::from_millis(self.rng.range(5, 200)),
            max_attempts: self.rng.range(1, 6) as u32,
        };
        let timeout = Duration::from_millis(self.rng.range(200, 3000));
        let (now, to) = (self.now(), self.udp_addr);
        let core = &mut self.udp_clients[c].core;
        if let Some((seq, at)) =
            core.start_call(now, to, method.as_bytes(), &payload, timeout, retry, done)
        {
            self.timers.insert((at, Timer::Udp(c, seq)));
        }
        self.flush_datagrams();
    }

    /// The harness's `/defer` worker: answers some responders (all of them when
    /// `all`), drops a few unanswered.
    pub fn answer_responders(&mut self, all: bool) {
        loop {
            let n = self.shared.lock().deferred.len();
            if n == 0 || !(all || self.rng.percent(30)) {
                return;
            }
            let i = self.rng.below(n as u64) as usize;
            let (responder, payload) = self.shared.lock().deferred.swap_remove(i);
            if !all && self.rng.percent(3) {
                self.calls
                    .dropped_responders
                    .insert(crate::ledger::tag_of(&payload));
                drop(responder);
            } else {
                responder.reply(&payload);
            }
            if !all {
                return;
            }
        }
    }

    /// Each stream sends its next frame, closes its side when done, and (unless it is a
    /// slow consumer for now) receives what came back; `finish`: close and read everything.
    pub fn pump_streams(&mut self, finish: bool) {
        let now = self.t;
        let mut problems = Vec::new();
        for li in 0..self.links.len() {
            let slow_roll: Vec<u64> = (0..self.links[li].streams.len())
                .map(|_| self.rng.below(100))
                .collect();
            let corrupted = self.links[li].corrupted;
            for (run, roll) in self.links[li].streams.iter_mut().zip(slow_roll) {
                let Some(stream) = run.stream.as_ref() else {
                    continue;
                };
                if run.ended.is_some() {
                    continue;
                }
                if let Some(frame) = run.to_send.front() {
                    match stream.send(Bytes::copy_from_slice(frame)) {
                        Ok(()) => {
                            run.sent.extend_from_slice(frame);
                            run.to_send.pop_front();
                        }
                        Err(StreamError::WouldBlock) => {}
                        Err(_) => run.to_send.clear(),
                    }
                } else if !run.close_sent && (finish || roll < 30) {
                    run.close_sent = stream.close_send().is_ok();
                }
                if !finish && run.slow_until > now {
                    continue;
                }
                if !finish && roll >= 97 {
                    run.slow_until = now + Duration::from_millis(roll * 10);
                }
                for _ in 0..8 {
                    match stream.recv() {
                        Ok(Some(data)) => {
                            self.tally.stream_frames += 1;
                            run.received.extend_from_slice(&data);
                            if !run.sent.starts_with(&run.received) && !corrupted {
                                problems.push(format!(
                                    "link {li}: stream {} received {} bytes that are not what was sent",
                                    stream.id(),
                                    run.received.len()
                                ));
                                run.ended = Some(Err(StreamError::Disconnected));
                                break;
                            }
                        }
                        Ok(None) => {
                            if (run.received != run.sent || !run.close_sent) && !corrupted {
                                problems.push(format!(
                                    "link {li}: stream {} ended cleanly with {} of {} bytes echoed",
                                    stream.id(),
                                    run.received.len(),
                                    run.sent.len()
                                ));
                            }
                            run.ended = Some(Ok(()));
                            break;
                        }
                        Err(StreamError::WouldBlock) => break,
                        Err(e) => {
                            run.ended = Some(Err(e));
                            break;
                        }
                    }
                }
            }
        }
        for p in problems {
            self.violation(p);
        }
    }
}
