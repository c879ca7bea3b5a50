//! Session cases after the upgrade (RFC 6455 §5.4–§5.5, §7), each asserting the exact
//! event and the exact frames sent back (decoded by a client-side decoder):
//! single-frame binary and text; fragmented binary (3 pieces) and fragmented text with a
//! character split across fragments; a ping between fragments answered at once while the
//! message stays intact; unsolicited pong (nothing sent); a stream of mixed frames fed
//! split at every offset gives the same events; oversize single frame and oversize
//! across fragments → 1009; bad UTF-8 in one frame, in an early fragment (fails before the
//! message ends) and cut at the end → 1007; close with each valid code → same code echoed;
//! empty close → empty echo; close payload of one byte → 1002; close codes 0, 999, 1004,
//! 1005, 1006, 1015, 1016, 2999, 5000, 65535 → 1002; close reason not UTF-8 → 1007;
//! continuation without a message and a new message inside a fragmented one → 1002;
//! unmasked frame, reserved bits, unknown opcode, long and fragmented control frames →
//! 1002 through the session; after closing, input is ignored and nothing more is sent;
//! our close: one Close sent, pings no longer answered, the peer's Close ends it without
//! an echo; an arpc frame wrapped as one binary message decodes to the frame unchanged.

use super::*;
use crate::transport::ws::frame::tests::{LenForm, client_frame};

const MAX: usize = 1000;

fn fin(op: Opcode) -> u8 {
    0x80 | op.bits()
}

fn run(session: &mut WsSession, bytes: &[u8]) -> Vec<WsEvent> {
    let mut input = BytesMut::from(bytes);
    let mut events = Vec::new();
    while let Some(e) = session.poll(&mut input) {
        events.push(e);
    }
    events
}

/// The frames the session queued, decoded as a client would.
fn sent(session: &mut WsSession) -> Vec<(Opcode, Vec<u8>)> {
    let mut out = BytesMut::from(&session.take_output().unwrap_or_default()[..]);
    let limits = Limits {
        max_payload: usize::MAX,
        expect_masked: false,
    };
    let mut frames = Vec::new();
    while let Some(f) = frame::decode(&mut out, &limits).unwrap() {
        assert!(f.fin);
        frames.push((f.opcode, f.payload.to_vec()));
    }
    assert!(out.is_empty());
    frames
}

/// Feeds `bytes`, expects a failure with `code` and exactly one Close carrying it.
fn fails_with(bytes: &[u8], code: u16) {
    let mut s = WsSession::new(MAX);
    let events = run(&mut s, bytes);
    let Some(WsEvent::Failed(e)) = events.last() else {
        panic!("no failure: {events:?}");
    };
    assert_eq!(e.close_code(), code, "{e}");
    assert_eq!(
        sent(&mut s),
        vec![(Opcode::Close, code.to_be_bytes().to_vec())]
    );
    assert!(s.is_closed());
}

fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

fn msg(text: bool, data: &[u8]) -> WsEvent {
    WsEvent::Message {
        text,
        data: Bytes::copy_from_slice(data),
    }
}

#[test]
fn single_frame_messages() {
    let mut s = WsSession::new(MAX);
    let mut b = client_frame(fin(Opcode::Binary), &[0, 1, 255], LenForm::Short);
    b.extend(client_frame(
        fin(Opcode::Text),
        "héllo".as_bytes(),
        LenForm::Mid,
    ));
    assert_eq!(
        run(&mut s, &b),
        vec![msg(false, &[0, 1, 255]), msg(true, "héllo".as_bytes())]
    );
    assert!(s.take_output().is_none());
}

fn fragmented_stream() -> (Vec<u8>, Vec<WsEvent>) {
    let mut b = client_frame(Opcode::Binary.bits(), b"ab", LenForm::Short);
    b.extend(client_frame(
        Opcode::Continuation.bits(),
        b"cd",
        LenForm::Long,
    ));
    b.extend(client_frame(fin(Opcode::Ping), b"p1", LenForm::Short));
    b.extend(client_frame(fin(Opcode::Continuation), b"ef", LenForm::Mid));
    // "é" (C3 A9) split across two text fragments.
    b.extend(client_frame(
        Opcode::Text.bits(),
        b"caf\xC3",
        LenForm::Short,
    ));
    b.extend(client_frame(fin(Opcode::Pong), b"", LenForm::Short));
    b.extend(client_frame(
        fin(Opcode::Continuation),
        b"\xA9!",
        LenForm::Short,
    ));
    let events = vec![
        WsEvent::Ping(Bytes::from_static(b"p1")),
        msg(false, b"abcdef"),
        WsEvent::Pong(Bytes::new()),
        msg(true, "café!".as_bytes()),
    ];
    (b, events)
}

#[test]
fn fragments_with_interleaved_control_frames() {
    let (b, events) = fragmented_stream();
    let mut s = WsSession::new(MAX);
    assert_eq!(run(&mut s, &b), events);
    assert_eq!(sent(&mut s), vec![(Opcode::Pong, b"p1".to_vec())]);
}

#[test]
fn every_split_offset_same_events() {
    let (b, events) = fragmented_stream();
    for cut in 0..=b.len() {
        let mut s = WsSession::new(MAX);
        let mut input = BytesMut::from(&b[..cut]);
        let mut got = Vec::new();
        while let Some(e) = s.poll(&mut input) {
            got.push(e);
        }
        input.extend_from_slice(&b[cut..]);
        while let Some(e) = s.poll(&mut input) {
            got.push(e);
        }
        assert_eq!(got, events, "cut {cut}");
        assert!(input.is_empty());
    }
}

#[test]
fn oversize_1009() {
    fails_with(
        &client_frame(fin(Opcode::Binary), &[0; MAX + 1], LenForm::Mid),
        1009,
    );
    let mut b = client_frame(Opcode::Binary.bits(), &[0; 600], LenForm::Mid);
    b.extend(client_frame(
        fin(Opcode::Continuation),
        &[0; 401],
        LenForm::Mid,
    ));
    fails_with(&b, 1009);
    // Exactly at the limit across fragments is fine.
    let mut b = client_frame(Opcode::Binary.bits(), &[0; 600], LenForm::Mid);
    b.extend(client_frame(
        fin(Opcode::Continuation),
        &[0; 400],
        LenForm::Mid,
    ));
    assert_eq!(
        run(&mut WsSession::new(MAX), &b),
        vec![msg(false, &[0; MAX])]
    );
    // The oversize header alone is enough: nothing of the payload is needed.
    let header = &client_frame(fin(Opcode::Binary), &[0; MAX + 1], LenForm::Mid)[..8];
    fails_with(header, 1009);
}

#[test]
fn bad_utf8_text_1007() {
    fails_with(
        &client_frame(fin(Opcode::Text), b"ok\xFFno", LenForm::Short),
        1007,
    );
    // Fails on the first fragment, before the message ends.
    fails_with(
        &client_frame(Opcode::Text.bits(), b"\xC3\x28", LenForm::Short),
        1007,
    );
    // A character cut at the very end of the message.
    let mut b = client_frame(Opcode::Text.bits(), b"a", LenForm::Short);
    b.extend(client_frame(
        fin(Opcode::Continuation),
        b"\xE2\x82",
        LenForm::Short,
    ));
    fails_with(&b, 1007);
    // Binary is never validated.
    let ok = client_frame(fin(Opcode::Binary), b"\xFF", LenForm::Short);
    assert_eq!(
        run(&mut WsSession::new(MAX), &ok),
        vec![msg(false, b"\xFF")]
    );
}

#[test]
fn close_echoes_valid_codes() {
    for code in [
        1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ] {
        let mut s = WsSession::new(MAX);
        let b = client_frame(
            fin(Opcode::Close),
            &close_payload(code, b"bye"),
            LenForm::Short,
        );
        assert_eq!(
            run(&mut s, &b),
            vec![WsEvent::Closed {
                code: Some(code),
                reason: "bye".into()
            }]
        );
        assert_eq!(
            sent(&mut s),
            vec![(Opcode::Close, code.to_be_bytes().to_vec())]
        );
        assert!(s.is_closed());
    }
    let mut s = WsSession::new(MAX);
    let b = client_frame(fin(Opcode::Close), b"", LenForm::Short);
    assert_eq!(
        run(&mut s, &b),
        vec![WsEvent::Closed {
            code: None,
            reason: String::new()
        }]
    );
    assert_eq!(sent(&mut s), vec![(Opcode::Close, Vec::new())]);
}

#[test]
fn invalid_close_1002_and_bad_reason_1007() {
    fails_with(
        &client_frame(fin(Opcode::Close), &[0x03], LenForm::Short),
        1002,
    );
    for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
        fails_with(
            &client_frame(
                fin(Opcode::Close),
                &close_payload(code, b""),
                LenForm::Short,
            ),
            1002,
        );
    }
    fails_with(
        &client_frame(
            fin(Opcode::Close),
            &close_payload(1000, b"\xCE\xBA\xE1"),
            LenForm::Short,
        ),
        1007,
    );
}

#[test]
fn fragmentation_errors_1002() {
    fails_with(
        &client_frame(fin(Opcode::Continuation), b"x", LenForm::Short),
        1002,
    );
    let mut b = client_frame(Opcode::Binary.bits(), b"a", LenForm::Short);
    b.extend(client_frame(fin(Opcode::Text), b"b", LenForm::Short));
    fails_with(&b, 1002);
}

#[test]
fn frame_errors_through_session_1002() {
    fails_with(&[0x82, 0x01, b'x'], 1002); // unmasked
    fails_with(&client_frame(0xC2, b"x", LenForm::Short), 1002); // RSV1
    fails_with(&client_frame(0x83, b"x", LenForm::Short), 1002); // opcode 3
    fails_with(&client_frame(0x8B, b"x", LenForm::Short), 1002); // opcode 0xB
    fails_with(
        &client_frame(fin(Opcode::Ping), &[0; 126], LenForm::Mid),
        1002,
    );
    fails_with(
        &client_frame(Opcode::Ping.bits(), b"x", LenForm::Short),
        1002,
    );
}

#[test]
fn nothing_after_close() {
    let mut s = WsSession::new(MAX);
    let mut b = client_frame(
        fin(Opcode::Close),
        &close_payload(1000, b""),
        LenForm::Short,
    );
    b.extend(client_frame(fin(Opcode::Ping), b"x", LenForm::Short));
    b.extend(client_frame(fin(Opcode::Binary), b"y", LenForm::Short));
    let events = run(&mut s, &b);
    assert_eq!(events.len(), 1);
    assert_eq!(sent(&mut s), vec![(Opcode::Close, vec![0x03, 0xE8])]);
    assert!(!s.send(false, b"late"));
    assert!(!s.close(1000, ""));
    assert!(s.take_output().is_none());
    // After a failure too.
    let mut s = WsSession::new(MAX);
    run(&mut s, &[0x82, 0x00]);
    s.take_output();
    assert!(
        run(
            &mut s,
            &client_frame(fin(Opcode::Ping), b"", LenForm::Short)
        )
        .is_empty()
    );
    assert!(s.take_output().is_none());
}

#[test]
fn our_close_then_peer_reply() {
    let mut s = WsSession::new(MAX);
    assert!(s.close(1001, "going away"));
    assert!(!s.is_open() && !s.is_closed());
    assert_eq!(
        sent(&mut s),
        vec![(Opcode::Close, close_payload(1001, b"going away"))]
    );
    assert!(!s.close(1000, ""), "only one Close");
    // Pings are no longer answered; data still arrives.
    let mut b = client_frame(fin(Opcode::Ping), b"x", LenForm::Short);
    b.extend(client_frame(fin(Opcode::Binary), b"y", LenForm::Short));
    b.extend(client_frame(
        fin(Opcode::Close),
        &close_payload(1001, b""),
        LenForm::Short,
    ));
    assert_eq!(
        run(&mut s, &b),
        vec![
            WsEvent::Ping(Bytes::from_static(b"x")),
            msg(false, b"y"),
            WsEvent::Closed {
                code: Some(1001),
                reason: String::new()
            }
        ]
    );
    assert!(s.take_output().is_none(), "no echo of the reply");
    assert!(s.is_closed());
    // Codes that may not be sent, and a reason cut at a character boundary.
    let mut s = WsSession::new(MAX);
    assert!(!s.close(1005, ""));
    assert!(s.close(1000, &"é".repeat(100)));
    let (_, p) = sent(&mut s).remove(0);
    assert_eq!(p.len(), 2 + 122);
    assert!(std::str::from_utf8(&p[2..]).is_ok());
}

#[test]
fn arpc_frame_wrapped_as_one_binary_message() {
    let arpc = ringrpc_protocol::Frame::request(7, "/echo", "hi").to_bytes();
    let header = binary_message_header(arpc.len());
    let mut wire = BytesMut::from(header.as_bytes());
    wire.extend_from_slice(&arpc);
    let limits = Limits {
        max_payload: usize::MAX,
        expect_masked: false,
    };
    let f = frame::decode(&mut wire, &limits).unwrap().unwrap();
    assert!(f.fin);
    assert_eq!(f.opcode, Opcode::Binary);
    assert_eq!(&f.payload[..], &arpc[..]);
    let mut s = WsSession::new(MAX);
    assert!(s.send(false, &arpc));
    assert_eq!(sent(&mut s), vec![(Opcode::Binary, arpc.to_vec())]);
}

proptest::proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..400)) {
        let mut s = WsSession::new(64);
        let mut input = BytesMut::from(&bytes[..]);
        while s.poll(&mut input).is_some() {}
    }
}
