//! The run of one seed (workload, settle, close) and the invariants checked after the
//! settle phase (on connections no fault touched: everything answered, streams echoed in
//! full, publications delivered) and at the end (every call completed exactly once and
//! rightly, every connection released once, pub/sub's registry empty).

use std::collections::{BTreeMap, BTreeSet};

use ringrpc::simulation::conn_id;
use ringrpc::{CallError, StreamError};

use crate::ledger::{Link, PubEvent, SERVER_BIT, judge, key, tag_of};
use crate::world::{GRACE, World};

/// Steps the settle phase may take before what is missing is reported.
const SETTLE_STEPS: usize = 20_000;
/// Steps the close phase may take before a connection still open is a leak.
const CLOSE_STEPS: usize = 200_000;

/// What one seed found.
#[derive(Debug)]
pub struct Outcome {
    pub violations: Vec<String>,
    pub digest: u64,
    pub tally: crate::world::Tally,
}

pub fn run(seed: u64, trace: bool) -> Outcome {
    let mut w = World::new(seed, trace);
    w.note(|| format!("scenario: {:?}", w.sc));
    for _ in 0..w.sc.steps {
        w.step(true);
    }
    if !w.sc.abrupt_end {
        for _ in 0..SETTLE_STEPS {
            if w.settled() {
                break;
            }
            w.step(false);
        }
        w.check_settled();
    }
    w.note(|| "closing".into());
    if w.sc.drain {
        let now = w.t;
        for link in &mut w.links {
            let unread = link.up.arrived(now);
            link.server.conn.begin_drain(unread);
        }
        w.draining_since = Some(now);
    } else {
        for link in &mut w.links {
            link.client.conn.request_close();
        }
    }
    let mut steps = 0;
    // Bounded by steps, not simulated time: clock jumps eat time, not work.
    while !(w.all_released() && w.timers.is_empty()) && steps < CLOSE_STEPS {
        steps += 1;
        if w.draining_since.is_some_and(|since| w.t - since >= GRACE) {
            for link in &mut w.links {
                link.server.conn.force_close();
            }
        }
        w.step(false);
    }
    for link in &mut w.links {
        for run in &mut link.streams {
            drop(run.stream.take());
        }
    }
    w.take_mail();
    w.check_end();
    {
        let rec = w.shared.lock();
        w.tally.answered = rec.outcomes.iter().filter(|o| o.1.is_ok()).count() as u64;
        w.tally.failed = rec.outcomes.len() as u64 - w.tally.answered;
        for (_, outcome, _) in &rec.outcomes {
            match outcome {
                Err(CallError::Timeout) => w.tally.timeouts += 1,
                Err(CallError::Disconnected) => w.tally.disconnected += 1,
                Err(CallError::Overstocked) => w.tally.overstocked += 1,
                Err(CallError::Remote(_)) => w.tally.refused += 1,
                _ => {}
            }
        }
        w.tally.deliveries = rec.deliveries.len() as u64;
    }
    Outcome {
        violations: std::mem::take(&mut w.violations),
        digest: w.digest.0,
        tally: w.tally,
    }
}

impl World {
    /// Links no fault touched, with both ends still up.
    fn clean_links(&self) -> Vec<usize> {
        (0..self.links.len())
            .filter(|&i| {
                let l = &self.links[i];
                !l.faulted && l.server.live() && l.client.live()
            })
            .collect()
    }

    fn settled(&self) -> bool {
        let rec = self.shared.lock();
        if !rec.deferred.is_empty() {
            return false;
        }
        let done: BTreeSet<u64> = rec.outcomes.iter().map(|o| o.0).collect();
        let server_done: BTreeSet<u64> = rec.server_outcomes.iter().map(|o| o.0).collect();
        let pending_server = rec.server_calls.iter().any(|t| !server_done.contains(t));
        drop(rec);
        let clean = self.clean_links();
        let calls_done = self.calls.plans.iter().all(|(tag, plan)| match plan.link {
            Link::Stream(li) => !clean.contains(&li) || done.contains(tag),
            Link::Datagram(_) => done.contains(tag),
        });
        let streams_done = clean
            .iter()
            .all(|&li| self.links[li].streams.iter().all(|s| s.ended.is_some()));
        // And nothing still on its way: queued publications and pushes have arrived.
        let quiet = clean.iter().all(|&li| {
            let l = &self.links[li];
            let idle = |s: &crate::world::Side| !s.sending && s.conn.gauges().backlog_bytes == 0;
            l.up.len == 0
                && l.down.len == 0
                && idle(&l.server)
                && idle(&l.client)
                && l.ws
                    .as_ref()
                    .is_none_or(|w| w.decoded.is_empty() && w.held.is_empty())
        });
        calls_done && streams_done && !pending_server && quiet
    }

    /// After the settle phase, on the links no fault touched: every call answered, every
    /// server call answered, every stream echoed whole, every publication queued for them
    /// delivered, every push that was not dropped arrived before its Response.
    fn check_settled(&mut self) {
        let clean = self.clean_links();
        let rec = self.shared.lock();
        let mut problems = Vec::new();
        let done: BTreeMap<u64, &Result<bytes::Bytes, CallError>> =
            rec.outcomes.iter().map(|(t, o, _)| (*t, o)).collect();
        for (tag, plan) in &self.calls.plans {
            if let Link::Stream(li) = plan.link {
                if clean.contains(&li) && !done.contains_key(tag) {
                    problems.push(format!(
                        "link {li}: {} tag {tag} never completed",
                        plan.method
                    ));
                }
                if clean.contains(&li)
                    && matches!(done.get(tag), Some(Err(CallError::Disconnected)))
                {
                    problems.push(format!("link {li}: {} tag {tag} disconnected", plan.method));
                }
            }
        }
        let server_done: BTreeSet<u64> = rec.server_outcomes.iter().map(|o| o.0).collect();
        for tag in &rec.server_calls {
            let li = match self.calls.plans.get(&(tag & !SERVER_BIT)).map(|p| p.link) {
                Some(Link::Stream(li)) => li,
                _ => continue,
            };
            if clean.contains(&li) && !server_done.contains(tag) {
                problems.push(format!(
                    "link {li}: the server's call back {tag} never completed"
                ));
            }
        }
        for &li in &clean {
            let link = &self.links[li];
            for s in &link.streams {
                match &s.ended {
                    Some(Ok(())) => {}
                    Some(Err(StreamError::TooManyStreams)) => {}
                    Some(Err(StreamError::Remote(t))) if t.contains("too many open streams") => {}
                    other => problems.push(format!(
                        "link {li}: a stream ended {other:?} with {} of {} bytes echoed",
                        s.received.len(),
                        s.sent.len()
                    )),
                }
            }
            let server = key(link.server.conn.info().id);
            let client = link.client.conn.info().id;
            for &(s, tag) in &self.queued_pubs {
                if s == server && !rec.deliveries.contains(&(client, tag)) {
                    problems.push(format!(
                        "link {li}: publication {tag} queued, never delivered"
                    ));
                }
            }
            if link.notify_drops == 0 {
                for (tag, outcome, _) in &rec.outcomes {
                    let plan = &self.calls.plans[tag];
                    if plan.method == "/push"
                        && plan.link == Link::Stream(li)
                        && outcome.is_ok()
                        && !rec.pushes.contains(&(client, *tag))
                    {
                        problems.push(format!("link {li}: push {tag} answered but never arrived"));
                    }
                }
            }
        }
        drop(rec);
        for p in problems {
            self.violation(p);
        }
    }

    /// The end: every call completed exactly once and rightly, pushes and publications only
    /// where they belong, every connection released exactly once, nothing left registered.
    fn check_end(&mut self) {
        let mut problems = Vec::new();
        let rec = self.shared.lock();
        // How many times each request ran: a datagram request whose resend came after its
        // peer was forgotten (quiet for the dedup window) runs again, as documented.
        let mut runs: BTreeMap<u64, usize> = BTreeMap::new();
        for &(_, tag, _) in &rec.dispatched {
            *runs.entry(tag).or_default() += 1;
        }
        let mut count: BTreeMap<u64, usize> = BTreeMap::new();
        for (tag, outcome, pushed) in &rec.outcomes {
            *count.entry(*tag).or_default() += 1;
            let Some(plan) = self.calls.plans.get(tag) else {
                problems.push(format!("an outcome for tag {tag}, which no call had"));
                continue;
            };
            let (corrupted, datagram) = match plan.link {
                Link::Stream(li) => (self.links[li].corrupted, false),
                Link::Datagram(_) => (false, true),
            };
            let ran_again = datagram && runs.get(tag).copied().unwrap_or(0) > 1;
            let dropped = self.calls.dropped_responders.contains(tag);
            // Garbage shifts the frame boundaries after it: any answer is possible there.
            let verdict = judge(plan, outcome, dropped, ran_again, datagram);
            if let Some(why) = verdict.filter(|_| !corrupted) {
                problems.push(format!("tag {tag}: {why}"));
            }
            let pushed_later = rec.pushes.iter().any(|&(_, t)| t == *tag);
            if plan.method == "/push" && !datagram && outcome.is_ok() && !pushed && pushed_later {
                problems.push(format!("tag {tag}: the push arrived after its Response"));
            }
        }
        for (tag, plan) in &self.calls.plans {
            match count.get(tag).copied().unwrap_or(0) {
                1 => {}
                n => problems.push(format!("{} tag {tag} completed {n} times", plan.method)),
            }
        }
        let mut server_count: BTreeMap<u64, usize> = BTreeMap::new();
        for (tag, outcome) in &rec.server_outcomes {
            *server_count.entry(*tag).or_default() += 1;
            if let Ok(p) = outcome {
                if tag_of(p) != tag & !SERVER_BIT {
                    problems.push(format!("server call {tag} answered with tag {}", tag_of(p)));
                }
            }
        }
        for tag in &rec.server_calls {
            if server_count.get(tag) != Some(&1) {
                problems.push(format!(
                    "server call {tag} completed {:?} times",
                    server_count.get(tag)
                ));
            }
        }
        // Pushes go to the connection whose call caused them, once (over TCP).
        let mut seen = BTreeSet::new();
        for &(conn, tag) in &rec.pushes {
            match self.calls.plans.get(&tag).map(|p| (p.method, p.link)) {
                Some(("/push", Link::Stream(li))) => {
                    if conn != conn_id(1, li as u64 + 1) {
                        problems.push(format!("push {tag} reached {conn}, not link {li}'s client"));
                    }
                    if !seen.insert(tag) {
                        problems.push(format!("push {tag} arrived twice"));
                    }
                }
                Some(("/push", Link::Datagram(_))) => {}
                other => problems.push(format!("a push with tag {tag} ({other:?})")),
            }
        }
        problems.extend(self.check_pubsub(&rec.pubsub, &rec.deliveries));
        let dispatched = rec.dispatched.clone();
        drop(rec);
        problems.extend(self.check_at_most_once(&dispatched));
        for (li, link) in self.links.iter().enumerate() {
            for (who, side) in [("server", &link.server), ("client", &link.client)] {
                if side.releases != 1 {
                    problems.push(format!(
                        "link {li}: the {who} side was released {} times (state {:?} {:?}; recv {:?}, \
                         sending {}, slow until {:?}; up {:?}, down {:?}, ws {:?})",
                        side.releases,
                        side.conn,
                        side.conn.gauges(),
                        side.recv,
                        side.sending,
                        side.slow_until,
                        (link.up.len, link.up.arrived(self.t), link.up.fin, link.up.rst, self.t),
                        (link.down.len, link.down.arrived(self.t), link.down.fin, link.down.rst),
                        link.ws.as_ref().map(|w| (w.upgraded, w.held.len(), w.decoded.len()))
                    ));
                }
            }
        }
        let stats = self.pubsub.stats();
        if stats.subscribers != 0 || stats.topics != 0 || stats.connections != 0 {
            problems.push(format!(
                "pub/sub still holds {stats:?} after every connection closed"
            ));
        }
        for p in problems {
            self.violation(p);
        }
    }

    /// Publications: queued only for subscribers at publish time, delivered only where
    /// queued, at most once.
    fn check_pubsub(&self, log: &[PubEvent], deliveries: &[(ringrpc::ConnId, u64)]) -> Vec<String> {
        let mut problems = Vec::new();
        let mut subs: BTreeMap<Vec<u8>, BTreeSet<(usize, u64)>> = BTreeMap::new();
        let mut allowed = BTreeSet::new();
        for event in log {
            match event {
                PubEvent::Subscribe(c, t) => {
                    subs.entry(t.clone()).or_default().insert(key(*c));
                }
                PubEvent::Unsubscribe(c, t) => {
                    subs.entry(t.clone()).or_default().remove(&key(*c));
                }
                PubEvent::Released(c) => subs.values_mut().for_each(|s| {
                    s.remove(&key(*c));
                }),
                PubEvent::Publish(_, t, tag) => {
                    for c in subs.get(t).into_iter().flatten() {
                        allowed.insert((*c, *tag));
                    }
                }
            }
        }
        for q in &self.queued_pubs {
            if !allowed.contains(q) {
                problems.push(format!(
                    "publication {} queued for {:?}, not a subscriber then",
                    q.1, q.0
                ));
            }
        }
        let mut seen = BTreeSet::new();
        for &(client, tag) in deliveries {
            let server = (0, key(client).1);
            if !self.queued_pubs.contains(&(server, tag)) {
                problems.push(format!(
                    "publication {tag} delivered to {client}, never queued for it"
                ));
            }
            if !seen.insert((key(client), tag)) {
                problems.push(format!("publication {tag} delivered to {client} twice"));
            }
        }
        problems
    }

    /// A datagram request runs at most once within the dedup window.
    fn check_at_most_once(&self, dispatched: &[(ringrpc::ConnId, u64, u64)]) -> Vec<String> {
        let window = self.sc.dedup_window.as_millis() as u64;
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        let mut problems = Vec::new();
        for &(_, tag, at) in dispatched {
            if !matches!(
                self.calls.plans.get(&tag).map(|p| p.link),
                Some(Link::Datagram(_))
            ) {
                continue;
            }
            if let Some(prev) = last.insert(tag, at) {
                if at - prev < window {
                    problems.push(format!(
                        "datagram request {tag} ran twice within {window} ms"
                    ));
                }
            }
        }
        problems
    }
}
