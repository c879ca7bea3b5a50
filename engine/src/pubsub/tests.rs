//! The registry and delivery without sockets: handles whose mailboxes the tests drain.

use std::net::SocketAddr;

use super::*;
use crate::ids::ConnInfo;
use crate::reactor::mailbox::{Command, Mailbox};

fn handle(slot: u32, mailbox: &Arc<Mailbox>) -> ConnHandle {
    let info = ConnInfo::new(
        ConnId {
            core: 0,
            slot,
            serial: u64::from(slot) + 1,
        },
        SocketAddr::from(([127, 0, 0, 1], 9)),
    );
    ConnHandle::new(info, mailbox.clone())
}

fn subscribe(ps: &PubSub, conn: &ConnHandle, name: &[u8]) {
    let mut guard = ps.state.write();
    let registry = &mut *guard;
    let key = Bytes::copy_from_slice(name);
    if registry
        .conns
        .entry(conn.id())
        .or_default()
        .insert(key.clone())
    {
        registry.subscriptions += 1;
        registry.topics.entry(key).or_default().add(conn.clone());
    }
}

/// (connection slot, frame) of every Notify posted so far, tallied as queued the way a
/// reactor does.
fn drained(mailbox: &Mailbox) -> Vec<(u32, Bytes)> {
    mailbox
        .drain()
        .filter_map(|cmd| match cmd {
            Command::NotifyCounted { conn, frame, tally } => {
                tally.queued.fetch_add(1, Ordering::Relaxed);
                Some((conn.slot, frame))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn a_publication_is_one_shared_frame_for_every_subscriber() {
    let mailbox = Arc::new(Mailbox::new(100));
    let ps = PubSub::new();
    let (a, b, c) = (
        handle(1, &mailbox),
        handle(2, &mailbox),
        handle(3, &mailbox),
    );
    subscribe(&ps, &a, b"news");
    subscribe(&ps, &b, b"news");
    subscribe(&ps, &c, b"other");
    assert_eq!(ps.publish("news", b"hi").unwrap(), 2);
    let got = drained(&mailbox);
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), [1, 2]);
    // One encoding: both frames point at the same bytes.
    assert_eq!(got[0].1.as_ptr(), got[1].1.as_ptr());
    let frame = &got[0].1;
    assert_eq!(frame[5], 3, "a Notify");
    assert_eq!(&frame[16..20], b"in_P");
    let topic = Topic::decode(&frame.slice(20..)).unwrap();
    assert_eq!(
        (&topic.name[..], &topic.data[..]),
        (&b"news"[..], &b"hi"[..])
    );
    assert_eq!(ps.publish("nobody", b"x").unwrap(), 0);
    assert_eq!(ps.publish("", b"x"), Err(TopicError::EmptyName));
    let stats = ps.stats();
    assert_eq!(
        (
            stats.published,
            stats.delivered,
            stats.skipped,
            stats.subscribers,
            stats.topics
        ),
        (2, 2, 0, 3, 2)
    );
}

#[test]
fn publish_to_one_takes_turns_and_passes_over_a_full_inbox() {
    let open = Arc::new(Mailbox::new(100));
    let full = Arc::new(Mailbox::new(0));
    let ps = PubSub::new();
    for slot in 1..=3 {
        subscribe(&ps, &handle(slot, &open), b"t");
    }
    for _ in 0..6 {
        assert!(ps.publish_to_one("t", b"x").unwrap());
    }
    let mut turns: Vec<u32> = drained(&open).into_iter().map(|g| g.0).collect();
    assert_eq!(turns.len(), 6);
    turns.sort_unstable();
    assert_eq!(turns, [1, 1, 2, 2, 3, 3]);
    // A subscriber whose core refuses mail is passed over and counted as skipped.
    subscribe(&ps, &handle(9, &full), b"u");
    subscribe(&ps, &handle(4, &open), b"u");
    for _ in 0..4 {
        assert!(ps.publish_to_one("u", b"x").unwrap());
    }
    assert!(drained(&open).iter().all(|g| g.0 == 4));
    assert!(ps.stats().skipped >= 2);
    assert!(!ps.publish_to_one("none", b"x").unwrap());
}

#[test]
fn unsubscribe_and_disconnect_leave_no_entry_behind() {
    let mailbox = Arc::new(Mailbox::new(100));
    let ps = PubSub::new();
    let (a, b, c) = (
        handle(1, &mailbox),
        handle(2, &mailbox),
        handle(3, &mailbox),
    );
    for conn in [&a, &b, &c] {
        subscribe(&ps, conn, b"t");
        subscribe(&ps, conn, b"t"); // idempotent
    }
    subscribe(&ps, &a, b"only-a");
    assert_eq!((ps.stats().subscribers, ps.stats().topics), (4, 2));
    // Swap-removing the first keeps the others reachable.
    ps.state.write().unsubscribe(a.id(), b"t");
    ps.state.write().unsubscribe(a.id(), b"never");
    assert_eq!(ps.publish("t", b"x").unwrap(), 2);
    let mut to: Vec<u32> = drained(&mailbox).into_iter().map(|g| g.0).collect();
    to.sort_unstable();
    assert_eq!(to, [2, 3]);
    let hook = ps.disconnect_hook();
    hook(a.info(), &crate::DisconnectReason::PeerClosed);
    hook(b.info(), &crate::DisconnectReason::PeerClosed);
    assert_eq!((ps.stats().subscribers, ps.stats().topics), (1, 1));
    hook(c.info(), &crate::DisconnectReason::PeerClosed);
    let registry = ps.state.read();
    assert!(registry.topics.is_empty() && registry.conns.is_empty());
    assert_eq!(registry.subscriptions, 0);
}

#[test]
fn drops_at_the_reactor_count_as_skipped_not_delivered() {
    let mailbox = Arc::new(Mailbox::new(100));
    let ps = PubSub::new();
    subscribe(&ps, &handle(1, &mailbox), b"t");
    ps.publish("t", b"x").unwrap();
    ps.publish("t", b"y").unwrap();
    // What the reactor does for a subscriber over its send-queue limit.
    for cmd in mailbox.drain() {
        if let Command::NotifyCounted { tally, .. } = cmd {
            tally.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
    let stats = ps.stats();
    assert_eq!((stats.delivered, stats.skipped), (0, 2));
}

#[test]
fn config_knobs_build_a_pubsub_and_refuse_a_lone_or_empty_password() {
    let off = Config::builder().build().unwrap();
    assert!(PubSub::from_config(&off).is_none());
    let on = Config::builder()
        .pubsub(true)
        .pubsub_password(Some("pw"))
        .build()
        .unwrap();
    let ps = PubSub::from_config(&on).unwrap();
    assert_eq!(ps.password.as_deref(), Some(&b"pw"[..]));
    let e = Config::builder()
        .pubsub_password(Some("pw"))
        .build()
        .unwrap_err();
    assert_eq!(e.knob(), Some(crate::Knob::PubsubPassword));
    assert!(e.to_string().contains("pubsub is off"), "{e}");
    let e = Config::builder()
        .pubsub(true)
        .pubsub_password(Some(""))
        .build()
        .unwrap_err();
    assert_eq!(e.to_string(), "pubsub_password must not be empty");
}
