//! The `tls` fuzz check (feature `tls`): bytes into a server connection with TLS beside
//! plaintext (the first bytes decide) or TLS required, split anywhere; or a real rustls
//! client, in memory, handshaking with it and sending the input's bytes as plaintext.
//!
//! Input: byte 0 holds flags — bit 0: TLS required (no sniffing); bit 1: a real client
//! handshakes first (the stream is then its plaintext); bit 2: the server asks for a client
//! certificate (the client offers none, so that handshake must fail). The rest is the
//! stream layout of `ringrpc_protocol::fuzzing` (body limit, chunk sizes, bytes).
//!
//! Checks: nothing panics; the first bytes decide once (as `sniff` says of the first
//! [`SNIFF_LEN`]) and the choice never changes; what is held stays within the framing's
//! bound plus the sniff's bytes; nothing is dispatched before the handshake ends; every
//! byte the server sends under TLS is whole TLS records; the real client's handshake ends
//! (unless a client certificate was asked for), and what it gets back is whole arpc
//! frames, none of them an unprompted Request.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::BytesMut;
use ringrpc_protocol::fuzzing::Input;
use ringrpc_protocol::{Command, Decoder};

use crate::conn::Conn;
use crate::router::Router;
use crate::transport::tls::{ALPN_ARPC, SNIFF_LEN, ServerTls, Sniff, TlsFiles, sniff};
use crate::transport::tls_state::TlsState;
use crate::transport::ws::frame;

/// The fixture's files (a CA and a leaf for `localhost` it signed; test keys only).
fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/sim/fuzz/tls_fixture")
        .join(name)
}

thread_local! {
    static ROUTER: Router = Router::with_builtins();
    /// The servers' settings, by `flags & 5` (required, client CA), loaded once.
    static SERVERS: Vec<Arc<ServerTls>> = (0..4)
        .map(|i| {
            let files = TlsFiles {
                cert: fixture("leaf.pem"),
                key: fixture("leaf.key"),
                client_ca: (i & 2 != 0).then(|| fixture("ca.pem")),
            };
            Arc::new(ServerTls::load(files, i & 1 != 0).expect("the fixture loads"))
        })
        .collect();
    static CLIENT: Arc<rustls::ClientConfig> = client_config();
}

/// The real client's settings: the fixture's CA, ALPN `arpc`, and X25519 alone for its key
/// share (the default set made every handshake also compute P-384 keys without hardware
/// help, about 70% of this target's time).
fn client_config() -> Arc<rustls::ClientConfig> {
    use rustls::crypto::{CryptoProvider, ring};
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(fixture("ca.pem")).expect("the fixture's CA") {
        roots
            .add(cert.expect("a PEM certificate"))
            .expect("a usable CA");
    }
    let provider = CryptoProvider {
        kx_groups: vec![ring::kx_group::X25519],
        ..ring::default_provider()
    };
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_safe_default_protocol_versions()
        .expect("TLS 1.3 and 1.2")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_ARPC.to_vec()];
    Arc::new(config)
}

/// Largest TLS record a peer may send: 2^14 plaintext plus the expansion TLS 1.2 allows.
const MAX_RECORD: usize = (1 << 14) + 2048;

/// What happened.
#[derive(Debug, Default)]
pub struct TlsOutcome {
    /// The first bytes chose TLS (or TLS was required).
    pub tls: bool,
    /// The handshake finished.
    pub handshake_done: bool,
    /// arpc frames the real client got back.
    pub answers: usize,
    /// The server ended the connection with an error.
    pub ended: bool,
}

/// Runs the check; panics on any violation (that is the finding).
pub fn check_tls(data: &[u8]) -> TlsOutcome {
    let (&flags, rest) = data.split_first().unwrap_or((&0, &[]));
    let input = Input::parse(rest);
    let server = SERVERS.with(|s| s[usize::from(flags & 1) | usize::from(flags & 4) >> 1].clone());
    let mut conn = super::raw_conn(input.max_body);
    conn.tls = TlsState::for_server(Some(&server)).expect("rustls starts");
    let sizes: Vec<usize> = input.chunks.iter().map(|c| c.len().max(1)).collect();
    let mut server = Server {
        conn,
        max_message: input.max_body as usize + ringrpc_protocol::HEADER_LEN,
        fed: Vec::new(),
        records: BytesMut::new(),
        outcome: TlsOutcome::default(),
    };
    ROUTER.with(|router| {
        if flags & 2 != 0 {
            with_client(&mut server, router, input.stream, &sizes, flags & 4 != 0);
        } else {
            let mut at = 0;
            for size in sizes.iter().cycle().chain(std::iter::repeat(&usize::MAX)) {
                if at >= input.stream.len() || server.outcome.ended {
                    break;
                }
                let end = at.saturating_add(*size).min(input.stream.len());
                server.feed(&input.stream[at..end], router);
                at = end;
            }
        }
    });
    server.outcome
}

/// The server side and what the check knows of it.
struct Server {
    conn: Conn,
    max_message: usize,
    /// Every byte fed so far (the sniff's view).
    fed: Vec<u8>,
    /// Ciphertext sent, not yet whole records.
    records: BytesMut,
    outcome: TlsOutcome,
}

impl Server {
    /// Feeds one chunk, checks, and returns what the server sent.
    fn feed(&mut self, chunk: &[u8], router: &Router) -> Vec<u8> {
        let was_off = self.conn.tls.is_off();
        let was_on = matches!(self.conn.tls, TlsState::On(_));
        self.fed.extend_from_slice(chunk);
        let result = self.conn.handle_recv(chunk, router);
        let decided = match &self.conn.tls {
            TlsState::Off => Some(Sniff::Plain),
            TlsState::On(_) => Some(Sniff::Tls),
            TlsState::Sniffing(_) => None,
        };
        assert!(
            !was_off || decided == Some(Sniff::Plain),
            "plaintext turned to TLS"
        );
        assert!(
            !was_on || decided == Some(Sniff::Tls),
            "TLS turned to plaintext"
        );
        match decided {
            None => assert!(
                self.fed.len() < SNIFF_LEN,
                "undecided after {SNIFF_LEN} bytes"
            ),
            Some(d) if !was_on && !was_off && result.is_ok() => {
                let first = &self.fed[..self.fed.len().min(SNIFF_LEN)];
                assert_eq!(d, sniff(first), "decided against the sniff of {first:?}");
            }
            Some(_) => {}
        }
        let handshaking = matches!(&self.conn.tls, TlsState::On(t) if t.is_handshaking());
        if handshaking {
            assert!(
                self.conn.session.out.is_empty(),
                "an answer before the handshake ended"
            );
            assert!(
                self.conn.session.info().tls.is_none(),
                "TLS info before the end"
            );
        }
        if matches!(&self.conn.tls, TlsState::On(_)) {
            self.outcome.tls = true;
            self.outcome.handshake_done |= !handshaking;
        }
        let bound = SNIFF_LEN + 8 * 1024 + 2 * (self.max_message + frame::MAX_HEADER_LEN);
        let held = self.conn.partial_len();
        assert!(held <= bound, "holds {held} bytes, bound {bound}");
        self.outcome.ended |= result.is_err();
        self.drain()
    }

    /// Everything the server would send now, as one fully successful write per batch;
    /// under TLS, checked to be whole records.
    fn drain(&mut self) -> Vec<u8> {
        let mut sent = Vec::new();
        let mut batch = Vec::new();
        while self.conn.has_output() {
            self.conn.take_batch(&mut batch);
            let len: usize = batch.iter().map(|b| b.len()).sum();
            if len == 0 {
                break;
            }
            for seg in &batch {
                sent.extend_from_slice(seg);
            }
            self.conn.sent(&mut batch, len);
        }
        if matches!(self.conn.tls, TlsState::On(_)) {
            self.records.extend_from_slice(&sent);
            while let [kind, major, _, hi, lo, ..] = self.records[..] {
                assert!((20..=23).contains(&kind), "record type {kind}");
                assert_eq!(major, 3, "record version");
                let len = usize::from(u16::from_be_bytes([hi, lo]));
                assert!(len <= MAX_RECORD, "a record of {len} bytes");
                if self.records.len() < 5 + len {
                    break;
                }
                let _ = self.records.split_to(5 + len);
            }
            assert!(self.records.len() < 5 + MAX_RECORD, "a record never ends");
        }
        sent
    }
}

/// A real rustls client handshakes with the server over memory, cut at `sizes`, then sends
/// `plaintext`; what it gets back must be whole arpc frames.
fn with_client(server: &mut Server, router: &Router, plaintext: &[u8], sizes: &[usize], ca: bool) {
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a server name");
    let mut client =
        rustls::ClientConnection::new(CLIENT.with(Arc::clone), name).expect("a client starts");
    client.set_buffer_limit(None);
    client
        .writer()
        .write_all(plaintext)
        .expect("buffered until the handshake ends");
    let mut received = BytesMut::new();
    let mut client_failed = false;
    let mut cut = sizes.iter().cycle();
    for _round in 0..64 {
        let mut wire = Vec::new();
        while client.wants_write() {
            client.write_tls(&mut wire).expect("writing to memory");
        }
        let mut progress = !wire.is_empty();
        let mut from_server = Vec::new();
        let mut at = 0;
        while at < wire.len() && !server.outcome.ended {
            let end = at
                .saturating_add(*cut.next().unwrap_or(&usize::MAX))
                .min(wire.len());
            from_server.extend(server.feed(&wire[at..end], router));
            at = end;
        }
        from_server.extend(server.drain());
        progress |= !from_server.is_empty();
        let mut slice = &from_server[..];
        while !slice.is_empty() && !client_failed {
            if client.read_tls(&mut slice).is_err() || client.process_new_packets().is_err() {
                client_failed = true;
            }
        }
        let mut buf = [0u8; 4096];
        while let Ok(n) = client.reader().read(&mut buf) {
            if n == 0 {
                break;
            }
            received.extend_from_slice(&buf[..n]);
        }
        if !progress || server.outcome.ended || client_failed {
            break;
        }
    }
    if ca {
        assert!(
            !server.outcome.handshake_done,
            "a handshake without the asked certificate"
        );
        assert!(
            received.is_empty(),
            "answers to a client that gave no certificate"
        );
    } else if !server.outcome.ended && !client_failed {
        assert!(server.outcome.handshake_done, "the handshake stalled");
        let info = server
            .conn
            .session
            .info()
            .tls
            .clone()
            .expect("TLS info after the handshake");
        assert_eq!(info.server_name.as_deref(), Some("localhost"));
    }
    let decoder = Decoder::default();
    while let Some(f) = decoder
        .decode(&mut received)
        .expect("the server sent a bad frame")
    {
        assert!(f.header.cmd != Command::Request, "an unprompted request");
        server.outcome.answers += 1;
    }
    if !server.outcome.ended && !client_failed {
        assert!(received.is_empty(), "the server sent part of a frame");
    }
}
