//! Stable replay of the `websocket`, `udp` and `stream` fuzz corpora (fuzz/corpus/TARGET)
//! through their checks (`ringrpc::fuzzing`), plus a short pass of generated inputs per
//! check, so CI exercises them without nightly. The corpora's seeds are generated here
//! (`seeds`): set `RINGRPC_WRITE_SEEDS=1` to write them after changing one.
mod common;

use std::fs;

use common::{corpus, corpus_dir};
use proptest::prelude::*;
use ringrpc::fuzzing::{check_streams, check_udp, check_websocket};
use ringrpc_protocol::fuzzing::encode_input;
use ringrpc_protocol::{Frame, Topic};

/// A masked client frame item of the `websocket` input's item form: `[b0][len][payload]`.
fn item(b0: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![b0, payload.len() as u8];
    v.extend_from_slice(payload);
    v
}

/// The hand-made seeds of each target: name, bytes.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let echo = Frame::request(1, "/echo", "hi").to_bytes().to_vec();
    let ping = Frame::ping().to_bytes().to_vec();
    let upgrade = |flags: u8, items: &[Vec<u8>], chunks: &[usize]| {
        let mut v = vec![flags];
        v.extend(encode_input(0, chunks, &items.concat()));
        v
    };
    let (first, second) = echo.split_at(10);
    let mut raw_upgrade = vec![0u8];
    raw_upgrade.extend(encode_input(
        1,
        &[3, 50],
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ));
    let topic = Topic::new("news", "x", 1)
        .unwrap()
        .encode()
        .unwrap()
        .to_vec();
    let udp_request = |peer: u8, seq: u8, method: u8, payload: &[u8]| {
        let mut v = vec![4 | peer, 1, seq, method, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    };
    let asked = Frame::request(1 << 48 | 7, "/echo", "x");
    let response = Frame::response_to(&asked.header, "/echo", "yes").to_bytes();
    let mut other_core = vec![peer_raw(2), 1, response.len() as u8];
    other_core.extend_from_slice(&response);
    let mut raw_datagram = vec![peer_raw(1), 0, echo.len() as u8];
    raw_datagram.extend_from_slice(&echo);
    vec![
        (
            "websocket",
            "upgrade-echo-ping",
            upgrade(
                6,
                &[item(0x82, &echo), item(0x89, b"p"), item(0x82, &ping)],
                &[],
            ),
        ),
        (
            "websocket",
            "upgrade-fragmented-echo",
            upgrade(
                6,
                &[item(0x02, first), item(0x89, b""), item(0x80, second)],
                &[7, 1, 30],
            ),
        ),
        (
            "websocket",
            "undecided-upgrade-then-close",
            upgrade(
                7,
                &[item(0x82, &echo), item(0x88, &1000u16.to_be_bytes())],
                &[2],
            ),
        ),
        ("websocket", "undecided-raw-arpc", {
            let mut v = vec![1u8];
            v.extend(encode_input(
                0,
                &[5],
                &[echo.clone(), ping.clone()].concat(),
            ));
            v
        }),
        (
            "websocket",
            "bad-reserved-bits",
            upgrade(6, &[item(0xC2, &echo)], &[]),
        ),
        ("websocket", "bad-unmasked-text", {
            let mut v = vec![2u8];
            v.extend(encode_input(0, &[], &[0x81, 2, b'h', b'i']));
            v
        }),
        ("websocket", "bad-not-http", {
            let mut v = vec![0u8];
            v.extend(encode_input(0, &[], b"hello there\r\n\r\n"));
            v
        }),
        ("websocket", "raw-upgrade-request", raw_upgrade),
        (
            "udp",
            "echo-and-retry",
            [
                vec![0u8],
                udp_request(1, 7, 0, b"hi"),
                udp_request(1, 7, 0, b"hi"),
            ]
            .concat(),
        ),
        (
            "udp",
            "defer-answer-retry",
            [
                vec![0u8],
                udp_request(2, 9, 1, b"x"),
                udp_request(2, 9, 1, b"x"),
                vec![8 | 2, 0],
                udp_request(2, 9, 1, b"x"),
            ]
            .concat(),
        ),
        (
            "udp",
            "sweep-then-replay",
            [
                vec![1u8],
                udp_request(0, 3, 0, b"a"),
                vec![12, 60],
                udp_request(0, 3, 0, b"a"),
            ]
            .concat(),
        ),
        (
            "udp",
            "publish-and-garbage",
            [
                vec![0u8],
                udp_request(3, 5, 3, &topic),
                vec![3, 0, 4, 1, 2, 3, 4],
            ]
            .concat(),
        ),
        ("udp", "raw-echo", [vec![8u8], raw_datagram].concat()),
        // A peer's Response naming core 1 in its seq: handed back to forward (found by fuzz).
        (
            "udp",
            "response-for-another-core",
            [vec![0u8], other_core].concat(),
        ),
        (
            "stream",
            "open-send-read",
            vec![
                1, 0, 2, 0, 40, 0, 1, 0x00, 3, b'a', b'b', b'c', 4, 0, 4, 6, 255, 3, 0,
            ],
        ),
        (
            "stream",
            "peer-echo-and-burst",
            vec![
                0, 9, 0x80, 2, b'h', b'i', 0, 9, 0xC0, 1, b'!', 0, 11, 0x82, 3, b'x', b'y', b'z',
                6, 255,
            ],
        ),
        (
            "stream",
            "slow-reader-holds",
            [
                vec![1, 1],
                (0..6)
                    .flat_map(|_| {
                        let mut v = vec![0, 1, 0x01, 200];
                        v.extend([7u8; 200]);
                        v
                    })
                    .collect(),
                vec![4, 0, 7, 0, 1, 0x41, 1, b'z', 4, 0, 7],
            ]
            .concat(),
        ),
        (
            "stream",
            "too-many-and-errors",
            vec![
                1, 0, 1, 1, 1, 2, 1, 3, 0, 2, 0x20, 4, b'b', b'o', b'o', b'm', 0, 5, 0x83, 1, b'q',
                5, 1, 4, 0, 7,
            ],
        ),
    ]
}

fn peer_raw(peer: u8) -> u8 {
    peer & 3
}

#[test]
fn seeds_are_committed() {
    let write = std::env::var_os("RINGRPC_WRITE_SEEDS").is_some();
    for (target, name, data) in seeds() {
        let path = corpus_dir(target).join(name);
        if write {
            fs::create_dir_all(corpus_dir(target)).unwrap();
            fs::write(&path, &data).unwrap();
        }
        let committed = fs::read(&path).unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
        assert_eq!(
            committed, data,
            "{target}/{name} differs from its generator"
        );
    }
}

#[test]
fn websocket_corpus_passes_and_seeds_get_their_answers() {
    for (name, data) in corpus("websocket") {
        let outcome = check_websocket(&data);
        match name.as_str() {
            "upgrade-echo-ping" => {
                assert_eq!(outcome.status, Some(101));
                assert_eq!(outcome.frames, 2, "the echo's Response and the arpc Pong");
                assert_eq!(outcome.control, 1, "the WebSocket Pong");
            }
            "upgrade-fragmented-echo" => {
                assert_eq!((outcome.status, outcome.frames), (Some(101), 1))
            }
            "undecided-upgrade-then-close" => assert!(outcome.ended && outcome.frames == 1),
            "undecided-raw-arpc" => assert_eq!((outcome.status, outcome.frames), (None, 2)),
            "bad-reserved-bits" | "bad-unmasked-text" => assert!(outcome.ended, "{name}"),
            "bad-not-http" => assert_eq!(outcome.status, Some(400)),
            "raw-upgrade-request" => assert_eq!(outcome.status, Some(101)),
            _ => {}
        }
    }
}

#[test]
fn udp_corpus_passes_and_seeds_run_each_request_once() {
    for (name, data) in corpus("udp") {
        let outcome = check_udp(&data);
        match name.as_str() {
            "echo-and-retry" => assert_eq!((outcome.ran, outcome.sent), (1, 2)),
            "defer-answer-retry" => assert_eq!(outcome.ran, 1),
            "sweep-then-replay" => assert_eq!(outcome.ran, 2, "forgotten by the sweep, run again"),
            "raw-echo" => assert_eq!(outcome.sent, 1),
            _ => {}
        }
    }
}

#[test]
fn stream_corpus_passes() {
    let files = corpus("stream");
    assert!(files.len() >= 4);
    for (name, data) in files {
        let outcome = check_streams(&data);
        if name == "open-send-read" {
            assert_eq!(outcome.read, 3, "the peer's abc on our stream");
        }
        if name == "peer-echo-and-burst" {
            assert!(outcome.frames_out >= 4, "{outcome:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn generated_websocket_inputs_pass(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_websocket(&data);
    }

    #[test]
    fn generated_udp_inputs_pass(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_udp(&data);
    }

    #[test]
    fn generated_stream_inputs_pass(data in proptest::collection::vec(any::<u8>(), 0..400)) {
        check_streams(&data);
    }
}
