//! Handshake cases (RFC 6455 §4.2.1, §4.2.2, §4.4), each asserting the exact status:
//! the RFC's example key; a valid request accepted at every split point (incomplete →
//! `Ok(None)`) and bytes after the head left unconsumed; the exact 101 response with and
//! without a subprotocol; subprotocol choice in the client's order; Upgrade/Connection
//! tokens case-insensitive and in lists; 400 for malformed HTTP, HTTP/1.0, missing Host,
//! Upgrade, Connection, version, key, a key not 16 bytes and duplicate keys; 403 for an
//! origin outside the allow-list or missing; 404 for another path; 405 for POST; 426 (with
//! `Sec-WebSocket-Version: 13`) for version 8; 431 for an over-limit head, both complete and
//! still incomplete, and for too many header lines; garbage never panics.

use super::*;

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

fn request_with(lines: &[&str]) -> Vec<u8> {
    let mut s = String::from("GET /ws HTTP/1.1\r\n");
    for l in lines {
        s.push_str(l);
        s.push_str("\r\n");
    }
    s.push_str("\r\n");
    s.into_bytes()
}

fn good_lines() -> Vec<String> {
    vec![
        "Host: example.com".into(),
        "Upgrade: websocket".into(),
        "Connection: Upgrade".into(),
        format!("Sec-WebSocket-Key: {KEY}"),
        "Sec-WebSocket-Version: 13".into(),
    ]
}

fn without(name: &str) -> Vec<u8> {
    let lines = good_lines();
    let kept: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|l| {
            !l.to_ascii_lowercase()
                .starts_with(&name.to_ascii_lowercase())
        })
        .collect();
    request_with(&kept)
}

fn with_extra(extra: &[&str]) -> Vec<u8> {
    let lines = good_lines();
    let mut all: Vec<&str> = lines.iter().map(String::as_str).collect();
    all.extend_from_slice(extra);
    request_with(&all)
}

/// The accepted upgrade in a parse result (panics on anything else).
fn upgrade(parsed: Option<(Parsed, usize)>) -> (Request, usize) {
    match parsed {
        Some((Parsed::Upgrade(req), consumed)) => (req, consumed),
        other => panic!("expected an upgrade, got {other:?}"),
    }
}

fn status(cfg: &HandshakeConfig, bytes: &[u8]) -> u16 {
    match cfg.parse(bytes) {
        Ok(Some((Parsed::Upgrade(_), _))) => 101,
        Ok(Some((Parsed::Asset(_), _))) => 200,
        Ok(None) => 0,
        Err(e) => e.status(),
    }
}

#[test]
fn rfc_example_accept_key() {
    assert_eq!(accept_key(KEY), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

#[test]
fn accepts_valid_request_with_exact_response() {
    let mut bytes = with_extra(&[]);
    let head = bytes.len();
    bytes.extend_from_slice(&[0x82, 0x80, 1, 2, 3, 4]);
    let (req, consumed) = upgrade(HandshakeConfig::default().parse(&bytes).unwrap());
    assert_eq!(consumed, head);
    assert_eq!(req.target, "/ws");
    assert_eq!(req.protocol, None);
    assert_eq!(
        req.response(),
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
            .to_vec()
    );
}

#[test]
fn incomplete_at_every_split_then_accepted() {
    let bytes = with_extra(&[]);
    let cfg = HandshakeConfig::default();
    for cut in 0..bytes.len() {
        assert_eq!(cfg.parse(&bytes[..cut]), Ok(None), "cut {cut}");
    }
    assert!(cfg.parse(&bytes).unwrap().is_some());
}

#[test]
fn tokens_are_case_insensitive_and_listed() {
    let bytes = request_with(&[
        "host: x",
        "UPGRADE: WebSocket",
        "connection: keep-alive, UPGRADE",
        &format!("sec-websocket-key: {KEY}"),
        "sec-websocket-version: 13",
    ]);
    assert_eq!(status(&HandshakeConfig::default(), &bytes), 101);
}

#[test]
fn query_string_is_ignored_for_path() {
    let bytes = String::from_utf8(with_extra(&[]))
        .unwrap()
        .replacen("/ws", "/ws?token=1", 1);
    let (req, _) = upgrade(HandshakeConfig::default().parse(bytes.as_bytes()).unwrap());
    assert_eq!(req.target, "/ws?token=1");
}

#[test]
fn subprotocol_first_offered_supported() {
    let cfg = HandshakeConfig {
        protocols: vec!["arpc".into(), "chat".into()],
        ..HandshakeConfig::default()
    };
    let bytes = with_extra(&["Sec-WebSocket-Protocol: foo, chat, arpc"]);
    let (req, _) = upgrade(cfg.parse(&bytes).unwrap());
    assert_eq!(req.protocol.as_deref(), Some("chat"));
    let resp = String::from_utf8(req.response()).unwrap();
    assert!(
        resp.ends_with("Sec-WebSocket-Protocol: chat\r\n\r\n"),
        "{resp}"
    );

    let none = with_extra(&["Sec-WebSocket-Protocol: foo"]);
    let (req, _) = upgrade(cfg.parse(&none).unwrap());
    assert_eq!(req.protocol, None);
    assert!(
        !String::from_utf8(req.response())
            .unwrap()
            .contains("Sec-WebSocket-Protocol")
    );
}

#[test]
fn bad_requests_are_400() {
    let cfg = HandshakeConfig::default();
    assert_eq!(status(&cfg, b"GARBAGE\x00\x01 / HTTP/1.1\r\n\r\n"), 400);
    let v10 = String::from_utf8(with_extra(&[]))
        .unwrap()
        .replacen("HTTP/1.1", "HTTP/1.0", 1);
    assert_eq!(status(&cfg, v10.as_bytes()), 400);
    for h in [
        "Host",
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Key",
        "Sec-WebSocket-Version",
    ] {
        assert_eq!(status(&cfg, &without(h)), 400, "without {h}");
    }
    let lines = good_lines();
    let mut wrong_upgrade: Vec<&str> = lines.iter().map(String::as_str).collect();
    wrong_upgrade[1] = "Upgrade: h2c";
    assert_eq!(status(&cfg, &request_with(&wrong_upgrade)), 400);
    let mut short_key: Vec<&str> = lines.iter().map(String::as_str).collect();
    short_key[3] = "Sec-WebSocket-Key: AAAA";
    assert_eq!(status(&cfg, &request_with(&short_key)), 400);
    short_key[3] = "Sec-WebSocket-Key: not base64 at all!!";
    assert_eq!(status(&cfg, &request_with(&short_key)), 400);
    let dup = format!("Sec-WebSocket-Key: {KEY}");
    assert_eq!(status(&cfg, &with_extra(&[&dup])), 400);
}

#[test]
fn refusal_response_bytes() {
    assert_eq!(
        HandshakeError::BadRequest("x").response(),
        b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n".to_vec()
    );
    let r426 = String::from_utf8(HandshakeError::UpgradeRequired.response()).unwrap();
    assert!(r426.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
    assert!(r426.contains("\r\nSec-WebSocket-Version: 13\r\n"));
    let r405 = String::from_utf8(HandshakeError::MethodNotAllowed.response()).unwrap();
    assert!(r405.starts_with("HTTP/1.1 405 Method Not Allowed\r\nAllow: GET\r\n"));
    let r431 = String::from_utf8(HandshakeError::HeadersTooLarge.response()).unwrap();
    assert!(r431.starts_with("HTTP/1.1 431 "));
}

#[test]
fn origin_allow_list_403() {
    let cfg = HandshakeConfig {
        allowed_origins: Some(vec!["https://chat.example".into()]),
        ..HandshakeConfig::default()
    };
    assert_eq!(
        status(&cfg, &with_extra(&["Origin: https://CHAT.example"])),
        101
    );
    assert_eq!(
        status(&cfg, &with_extra(&["Origin: https://evil.example"])),
        403
    );
    assert_eq!(status(&cfg, &with_extra(&[])), 403);
    // Without an allow-list any origin is fine.
    assert_eq!(
        status(
            &HandshakeConfig::default(),
            &with_extra(&["Origin: https://evil.example"])
        ),
        101
    );
}

#[test]
fn other_path_404_and_configurable_path() {
    let other = String::from_utf8(with_extra(&[]))
        .unwrap()
        .replacen("/ws", "/chat", 1);
    assert_eq!(status(&HandshakeConfig::default(), other.as_bytes()), 404);
    let cfg = HandshakeConfig {
        path: "/chat".into(),
        ..HandshakeConfig::default()
    };
    assert_eq!(status(&cfg, other.as_bytes()), 101);
}

#[test]
fn non_get_405() {
    let post = String::from_utf8(with_extra(&[]))
        .unwrap()
        .replacen("GET", "POST", 1);
    assert_eq!(status(&HandshakeConfig::default(), post.as_bytes()), 405);
}

#[test]
fn wrong_version_426() {
    let lines = good_lines();
    let mut v8: Vec<&str> = lines.iter().map(String::as_str).collect();
    v8[4] = "Sec-WebSocket-Version: 8";
    let err = HandshakeConfig::default()
        .parse(&request_with(&v8))
        .unwrap_err();
    assert_eq!(err, HandshakeError::UpgradeRequired);
    assert_eq!(err.status(), 426);
}

#[test]
fn oversize_head_431_before_buffering_more() {
    let cfg = HandshakeConfig {
        max_header_bytes: 256,
        ..HandshakeConfig::default()
    };
    // Incomplete and already at the limit: refused without waiting for more.
    let mut partial = b"GET /ws HTTP/1.1\r\nX-Pad: ".to_vec();
    partial.resize(256, b'a');
    assert_eq!(cfg.parse(&partial), Err(HandshakeError::HeadersTooLarge));
    assert_eq!(cfg.parse(&partial[..255]), Ok(None));
    // Complete but over the limit.
    let pad = format!("X-Pad: {}", "a".repeat(300));
    assert_eq!(status(&cfg, &with_extra(&[&pad])), 431);
    // Too many header lines.
    let many: Vec<String> = (0..MAX_HEADERS).map(|i| format!("X-{i}: 1")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(status(&HandshakeConfig::default(), &with_extra(&many)), 431);
}

proptest::proptest! {
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
        let _ = HandshakeConfig::default().parse(&bytes);
    }
}

mod assets {
    //! Static assets over plain HTTP: GET and HEAD of a registered path answered 200 with
    //! its type and length; other methods 405; unknown paths 404; the upgrade path unchanged.
    use super::*;

    fn config() -> HandshakeConfig {
        let mut assets = HashMap::new();
        assets.insert(
            "/index.html".to_owned(),
            Asset {
                content_type: "text/html; charset=utf-8".into(),
                body: Bytes::from_static(b"<h1>hi</h1>"),
            },
        );
        HandshakeConfig {
            assets: Arc::new(assets),
            ..HandshakeConfig::default()
        }
    }

    fn answer(method: &str, path: &str) -> Result<String, u16> {
        let req = format!("{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n");
        match config().parse(req.as_bytes()) {
            Ok(Some((Parsed::Asset(bytes), n))) => {
                assert_eq!(n, req.len());
                Ok(String::from_utf8(bytes.to_vec()).unwrap())
            }
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e.status()),
        }
    }

    #[test]
    fn get_and_head_of_an_asset_are_answered() {
        let get = answer("GET", "/index.html?v=2").unwrap();
        assert!(get.starts_with("HTTP/1.1 200 OK\r\n"), "{get}");
        assert!(get.contains("Content-Type: text/html; charset=utf-8\r\n"));
        assert!(get.contains("Content-Length: 11\r\n"));
        assert!(get.ends_with("\r\n\r\n<h1>hi</h1>"));
        let head = answer("HEAD", "/index.html").unwrap();
        assert!(head.ends_with("Connection: close\r\n\r\n"), "{head}");
        assert!(head.contains("Content-Length: 11\r\n"));
    }

    #[test]
    fn other_methods_and_paths_are_refused() {
        assert_eq!(answer("POST", "/index.html"), Err(405));
        assert_eq!(answer("GET", "/missing.js"), Err(404));
        assert_eq!(answer("HEAD", "/missing.js"), Err(404));
        assert_eq!(answer("DELETE", "/missing.js"), Err(405));
        // The upgrade path still wants an upgrade.
        assert_eq!(answer("GET", "/ws"), Err(400));
    }
}
