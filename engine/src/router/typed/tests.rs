//! Replies, errors and extractors without sockets.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::*;
use crate::conn::responder::Deferred;
use crate::ids::{ConnId, ConnInfo};
use crate::reactor::mailbox::Mailbox;
use crate::router::context::Context;
use crate::router::request::Extensions;
use crate::transport::outqueue::OutQueue;
use ringrpc_protocol::{Frame, parse_frame};

/// Runs `f` with the context of a Request carrying `payload`, as a handler would see it.
fn with_ctx<R>(payload: &[u8], f: impl FnOnce(&Context<'_>) -> R) -> R {
    let info = ConnInfo::new(
        ConnId {
            core: 0,
            slot: 3,
            serial: 9,
        },
        SocketAddr::from(([127, 0, 0, 1], 4000)),
    );
    let mut extensions = Extensions::default();
    extensions.insert(41u32);
    let extensions = Arc::new(extensions);
    let wire = Frame::request(1, "/m", payload.to_vec()).to_bytes();
    let (frame, _) = parse_frame(&wire, u32::MAX).unwrap().unwrap();
    let mailbox = Arc::new(Mailbox::new(4));
    let in_flight = Deferred::default();
    let mut out = OutQueue::default();
    let ctx = Context::new(
        &frame,
        None,
        &info,
        &mailbox,
        &in_flight,
        &mut out,
        &extensions,
    );
    f(&ctx)
}

#[derive(Debug, Deserialize, Serialize, PartialEq)]
struct Args {
    a: i64,
    b: i64,
}

#[test]
fn values_become_replies_and_errors_their_text() {
    assert_eq!(().into_reply(), Reply::ok(Bytes::new()));
    assert_eq!("hi".into_reply(), Reply::ok(Bytes::from_static(b"hi")));
    assert_eq!(Json(5).into_reply(), Reply::ok(Bytes::from_static(b"5")));
    let failed: Result<Bytes, HandlerError> = Err(crate::CallError::Timeout.into());
    assert_eq!(failed.into_reply(), Reply::error("call timed out"));
    let text: Result<(), String> = Err("no such user".into());
    assert!(text.into_reply().is_error());
}

#[cfg(feature = "msgpack")]
#[test]
fn msgpack_values_become_replies_and_payloads_arguments() {
    let packed = MsgPack(Args { a: 1, b: 2 }).into_reply();
    let Ok(body) = packed.body else { panic!() };
    assert_eq!(
        rmp_serde::from_slice::<Args>(&body).unwrap(),
        Args { a: 1, b: 2 }
    );
    let packed = rmp_serde::to_vec_named(&Args { a: 7, b: 8 }).unwrap();
    let MsgPack(args) = with_ctx(&packed, MsgPack::<Args>::from_request).unwrap();
    assert_eq!(args, Args { a: 7, b: 8 });
    assert!(with_ctx(b"\xc1", MsgPack::<Args>::from_request).is_err());
}

#[test]
fn extractors_parse_the_payload_and_name_the_type_when_they_cannot() {
    let Json(args) = with_ctx(br#"{"a":2,"b":3}"#, Json::<Args>::from_request).unwrap();
    assert_eq!(args, Args { a: 2, b: 3 });
    let bad = with_ctx(b"not json", Json::<Args>::from_request).unwrap_err();
    let text = bad.to_string();
    assert!(
        text.starts_with("bad request body: expected JSON for "),
        "{text}"
    );
    assert!(text.contains("Args"), "{text}");
    assert_eq!(with_ctx(b"raw", Bytes::from_request).unwrap(), &b"raw"[..]);
    assert_eq!(
        with_ctx(b"", State::<u32>::from_request).unwrap(),
        State(41)
    );
    let missing = with_ctx(b"", State::<String>::from_request).unwrap_err();
    assert!(
        missing.to_string().contains("no state of type"),
        "{missing}"
    );
}

#[test]
fn handlers_of_several_extractors_run_with_them_in_order() {
    fn sum(Json(args): Json<Args>, State(base): State<u32>) -> Json<i64> {
        Json(args.a + args.b + i64::from(base))
    }
    let out = with_ctx(br#"{"a":1,"b":1}"#, |c| TypedHandler::call(&sum, c)).unwrap();
    assert_eq!(out.into_reply(), Reply::ok(Bytes::from_static(b"43")));
    // The first argument that cannot be built rejects the request.
    assert!(with_ctx(b"{}", |c| TypedHandler::call(&sum, c)).is_err());
}
