//! TLS on the reactors (feature `tls`), against rustls clients and ringrpc's own: calls on a
//! port shared with plaintext and on a TLS-only one, mutual TLS and the identity handlers
//! see, reloads, and every kind of bad input closing only its own connection. Certificates
//! are made here at run time (rcgen); nothing that expires is committed.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use common::{Client as RawClient, IO_TIMEOUT};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use ringrpc::{Client, ClientTls, Config, ConfigError, Context, Knob, RunningServer, Server};
use ringrpc_protocol::{Decoder, Frame};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// A CA and the files made from it, in a directory of their own.
struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("ringrpc-tls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} test CA"));
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// Issues a certificate for `names` (CN = `cn`), writes `stem.pem` and `stem.key`.
    fn issue(
        &self,
        stem: &str,
        cn: &str,
        names: &[&str],
        key: KeyPair,
        expired: bool,
    ) -> (PathBuf, PathBuf) {
        let mut params =
            CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Acme");
        params.subject_alt_names.push(SanType::URI(
            format!("spiffe://acme/{cn}").try_into().unwrap(),
        ));
        if expired {
            params.not_before = rcgen::date_time_ymd(2000, 1, 1);
            params.not_after = rcgen::date_time_ymd(2001, 1, 1);
        }
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        let (pem, key_file) = (
            self.path(&format!("{stem}.pem")),
            self.path(&format!("{stem}.key")),
        );
        std::fs::write(&pem, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        (pem, key_file)
    }

    fn server_cert(&self) -> (PathBuf, PathBuf) {
        self.issue(
            "server",
            "localhost",
            &["localhost", "127.0.0.1"],
            KeyPair::generate().unwrap(),
            false,
        )
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// Answers what the connection's TLS settled: version, ALPN, client CN and URIs.
fn whoami(ctx: &mut Context<'_>) {
    let text = match &ctx.info().tls {
        None => "plaintext".to_string(),
        Some(tls) => format!(
            "{} alpn={} cn={} uris={:?}",
            tls.version,
            tls.alpn.as_deref().unwrap_or("-"),
            ctx.info()
                .peer_certificate()
                .and_then(|p| p.common_name.clone())
                .unwrap_or_else(|| "-".into()),
            ctx.info()
                .peer_certificate()
                .map(|p| p.uris.clone())
                .unwrap_or_default(),
        ),
    };
    ctx.reply(text.as_bytes());
}

fn serve(config: ringrpc::ConfigBuilder) -> RunningServer {
    let config = config
        .cores(1)
        .listen("127.0.0.1:0")
        .build()
        .expect("valid config");
    Server::builder()
        .config(config)
        .route("/whoami", whoami)
        .build()
        .expect("bind")
        .start()
        .expect("start")
}

/// A rustls client config trusting `ca`, with an optional client certificate, offering `alpn`.
fn client_config(
    ca: &Path,
    identity: Option<(&Path, &Path)>,
    alpn: &[&[u8]],
) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                CertificateDer::pem_file_iter(cert)
                    .unwrap()
                    .map(Result::unwrap)
                    .collect(),
                PrivateKeyDer::from_pem_file(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// arpc frames over a rustls client connection.
struct TlsClient {
    tls: rustls::StreamOwned<rustls::ClientConnection, TcpStream>,
    buf: BytesMut,
}

impl TlsClient {
    fn connect(addr: SocketAddr, config: Arc<rustls::ClientConfig>) -> std::io::Result<TlsClient> {
        let sock = TcpStream::connect(addr)?;
        sock.set_read_timeout(Some(IO_TIMEOUT))?;
        let conn =
            rustls::ClientConnection::new(config, ServerName::try_from("localhost").unwrap())
                .unwrap();
        let mut tls = rustls::StreamOwned::new(conn, sock);
        while tls.conn.is_handshaking() {
            tls.conn.complete_io(&mut tls.sock)?;
        }
        Ok(TlsClient {
            tls,
            buf: BytesMut::new(),
        })
    }

    fn call(&mut self, seq: u64, method: &str, payload: &[u8]) -> std::io::Result<Frame> {
        self.tls
            .write_all(&Frame::request(seq, method.to_string(), payload.to_vec()).to_bytes())?;
        self.tls.flush()?;
        loop {
            if let Some(f) = Decoder::default().decode(&mut self.buf).unwrap() {
                return Ok(f);
            }
            let mut chunk = [0u8; 65536];
            let n = self.tls.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[test]
fn tls_and_plaintext_share_a_port_and_handlers_see_the_handshake() {
    let pki = Pki::new("shared");
    let (cert, key) = pki.server_cert();
    let server = serve(Config::builder().tls(s(&cert), s(&key)));
    let addr = server.local_addr();
    let config = client_config(&pki.path("ca.pem"), None, &[b"arpc"]);
    let mut tls = TlsClient::connect(addr, config.clone()).unwrap();
    assert_eq!(
        tls.tls.conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(tls.tls.conn.alpn_protocol(), Some(&b"arpc"[..]));
    // Small, a 790-byte body (first bytes 16 03 00 00 on the wire), and larger than a record.
    for (seq, len) in [(1u64, 32usize), (2, 785), (3, 100_000)] {
        let payload = vec![seq as u8; len];
        let f = tls.call(seq, "/echo", &payload).unwrap();
        assert_eq!((f.header.seq, &f.payload[..]), (seq, &payload[..]));
    }
    let who = tls.call(9, "/whoami", b"").unwrap();
    assert_eq!(&who.payload[..], b"TLSv1.3 alpn=arpc cn=- uris=[]");
    // Plaintext on the same port, even one whose first frame is 790 bytes long.
    let mut plain = RawClient::connect(addr);
    plain.echo(1, &[7u8; 774]);
    plain.send(&Frame::request(2, "/whoami", Vec::new()));
    assert_eq!(&plain.recv().payload[..], b"plaintext");
    server.handle().shutdown();
    server.join().unwrap();
}

#[test]
fn mutual_tls_hands_the_client_identity_to_handlers_and_refuses_bad_certificates() {
    let pki = Pki::new("mtls");
    let (cert, key) = pki.server_cert();
    let server = serve(
        Config::builder()
            .tls(s(&cert), s(&key))
            .tls_client_ca(Some(s(&pki.path("ca.pem"))))
            .tls_required(true),
    );
    let addr = server.local_addr();
    let ca = pki.path("ca.pem");
    let (alice, alice_key) = pki.issue("alice", "alice", &[], KeyPair::generate().unwrap(), false);
    let mut tls =
        TlsClient::connect(addr, client_config(&ca, Some((&alice, &alice_key)), &[])).unwrap();
    let who = tls.call(1, "/whoami", b"").unwrap();
    assert_eq!(
        String::from_utf8_lossy(&who.payload),
        r#"TLSv1.3 alpn=- cn=alice uris=["spiffe://acme/alice"]"#
    );

    // No certificate, an expired one, one from another CA: each refused, alone.
    let refused = |config: Arc<rustls::ClientConfig>| {
        let outcome = TlsClient::connect(addr, config).and_then(|mut c| c.call(1, "/echo", b"x"));
        assert!(outcome.is_err(), "served: {outcome:?}");
    };
    refused(client_config(&ca, None, &[]));
    let (old, old_key) = pki.issue("old", "old", &[], KeyPair::generate().unwrap(), true);
    refused(client_config(&ca, Some((&old, &old_key)), &[]));
    let other = Pki::new("mtls-other");
    let (mallory, mallory_key) = other.issue(
        "mallory",
        "mallory",
        &[],
        KeyPair::generate().unwrap(),
        false,
    );
    refused(client_config(&ca, Some((&mallory, &mallory_key)), &[]));
    // The good client was never disturbed.
    assert_eq!(
        &tls.call(2, "/echo", b"still").unwrap().payload[..],
        b"still"
    );
    server.handle().shutdown();
    server.join().unwrap();
}

#[test]
fn ringrpc_clients_speak_tls_and_refuse_a_certificate_for_another_name() {
    let pki = Pki::new("client");
    let (cert, key) = pki.issue(
        "server",
        "localhost",
        &["localhost"],
        KeyPair::generate().unwrap(),
        false,
    );
    let (alice, alice_key) = pki.issue("alice", "alice", &[], KeyPair::generate().unwrap(), false);
    let server = serve(
        Config::builder()
            .tls(s(&cert), s(&key))
            .tls_client_ca(Some(s(&pki.path("ca.pem")))),
    );
    let port = server.local_addr().port();
    let tls = ClientTls::with_ca_file(pki.path("ca.pem"))
        .unwrap()
        .client_certificate(&alice, &alice_key)
        .unwrap();
    let client = Client::builder(&format!("localhost:{port}"))
        .tls(tls.clone())
        .connect()
        .expect("connect over TLS");
    let who = client.call("/whoami", Bytes::new(), IO_TIMEOUT).unwrap();
    assert!(
        String::from_utf8_lossy(&who).contains("cn=alice"),
        "{who:?}"
    );
    let big = Bytes::from(vec![3u8; 300_000]);
    assert_eq!(client.call("/echo", big.clone(), IO_TIMEOUT).unwrap(), big);
    // 127.0.0.1 is not a name the certificate carries.
    let e = Client::builder(&format!("127.0.0.1:{port}"))
        .tls(tls)
        .connect()
        .unwrap_err();
    assert!(e.to_string().contains("TLS handshake failed"), "{e}");
    drop(client);
    server.handle().shutdown();
    server.join().unwrap();
}

#[test]
fn a_tls_only_port_refuses_plaintext_and_bad_hellos_alone() {
    let pki = Pki::new("required");
    let (cert, key) = pki.server_cert();
    let server = serve(
        Config::builder()
            .tls(s(&cert), s(&key))
            .tls_required(true)
            .read_timeout(Some(Duration::from_millis(300))),
    );
    let addr = server.local_addr();
    let config = client_config(&pki.path("ca.pem"), None, &[]);
    let mut good = TlsClient::connect(addr, config.clone()).unwrap();

    // Plain arpc: refused (an alert, then the close), never dispatched.
    let mut plain = RawClient::connect(addr);
    plain.send(&Frame::request(1, "/echo", b"x".to_vec()));
    let mut rest = Vec::new();
    let _ = plain.sock.read_to_end(&mut rest);
    assert!(
        rest.is_empty() || rest[0] == 0x15,
        "an alert or nothing: {rest:?}"
    );

    // A ClientHello cut short, then silence: closed by the read timeout.
    let mut cut = RawClient::connect(addr);
    cut.send_raw(&[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
    ]);
    cut.expect_closed();

    // A ClientHello record over 16 KiB (the limit is 16 KiB + 2 KiB): refused.
    let mut huge = RawClient::connect(addr);
    let mut record = vec![0x16, 0x03, 0x01, 0x48, 0x04, 0x01, 0x00, 0x48, 0x00];
    record.resize(5 + 0x4804, 0);
    let _ = huge.sock.write_all(&record);
    let mut rest = Vec::new();
    let _ = huge.sock.read_to_end(&mut rest);

    // A peer that closes without close_notify, mid-session.
    let abrupt = TlsClient::connect(addr, config.clone()).unwrap();
    abrupt.tls.sock.shutdown(std::net::Shutdown::Both).unwrap();
    drop(abrupt);

    assert_eq!(
        &good.call(1, "/echo", b"fine").unwrap().payload[..],
        b"fine"
    );
    server.handle().shutdown();
    let report = server.join().unwrap();
    assert_eq!(
        report.total().requests,
        1,
        "only the good client's call ran"
    );
}

#[test]
fn a_key_that_does_not_match_its_certificate_is_a_startup_error_naming_both() {
    let pki = Pki::new("mismatch");
    let (cert, _) = pki.server_cert();
    let (_, other_key) = pki.issue(
        "other",
        "other",
        &["other"],
        KeyPair::generate().unwrap(),
        false,
    );
    let e = Config::builder()
        .tls(s(&cert), s(&other_key))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Tls {
                knob: Knob::Tls,
                ..
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains(&s(&cert)) && text.contains(&s(&other_key)),
        "{text}"
    );
    assert!(text.contains("does not match"), "{text}");
    let missing = Config::builder()
        .tls("/nonexistent/cert.pem", s(&other_key))
        .build()
        .unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/cert.pem"),
        "{missing}"
    );
    let e = Config::builder().tls_required(true).build().unwrap_err();
    assert_eq!(
        e,
        ConfigError::TlsOptionWithoutTls {
            knob: Knob::TlsRequired
        }
    );
}

#[test]
fn reload_serves_the_new_certificate_keeps_open_connections_and_refuses_bad_files() {
    let pki = Pki::new("reload");
    let key = KeyPair::generate().unwrap();
    let (cert, key_file) = pki.issue("server", "first", &["localhost"], key, false);
    let server = serve(Config::builder().tls(s(&cert), s(&key_file)));
    let addr = server.local_addr();
    let config = client_config(&pki.path("ca.pem"), None, &[]);
    let mut open = TlsClient::connect(addr, config.clone()).unwrap();
    let subject = |c: &TlsClient| {
        let der = c.tls.conn.peer_certificates().unwrap()[0].to_vec();
        String::from_utf8_lossy(&der).contains("first")
    };
    assert!(subject(&open));

    // A broken file: refused, the old certificate stays.
    let good_pem = std::fs::read(&cert).unwrap();
    std::fs::write(&cert, b"not a certificate").unwrap();
    let e = server.handle().reload_tls().unwrap_err();
    assert!(e.to_string().contains(&s(&cert)), "{e}");
    assert!(subject(&TlsClient::connect(addr, config.clone()).unwrap()));
    std::fs::write(&cert, good_pem).unwrap();

    // A new certificate and key: new connections get it, the open one goes on.
    pki.issue(
        "server",
        "second",
        &["localhost"],
        KeyPair::generate().unwrap(),
        false,
    );
    server.handle().reload_tls().unwrap();
    assert!(!subject(&TlsClient::connect(addr, config.clone()).unwrap()));
    assert_eq!(&open.call(1, "/echo", b"on").unwrap().payload[..], b"on");
    server.handle().shutdown();
    server.join().unwrap();
}

#[test]
fn unix_sockets_serve_plaintext_and_tls_replace_stale_files_and_clean_up() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{UnixListener, UnixStream};
    let pki = Pki::new("unix");
    let (cert, key) = pki.server_cert();
    let path = pki.path("engine.sock");
    // A stale socket file from an earlier run (nobody accepts on it): replaced.
    drop(UnixListener::bind(&path).unwrap());
    let config = Config::builder()
        .cores(2)
        .listen(format!("unix:{}", path.display()))
        .unix_mode(Some(0o660))
        .tls(s(&cert), s(&key))
        .build()
        .unwrap();
    let server = Server::builder()
        .config(config)
        .route("/whoami", whoami)
        .build()
        .unwrap()
        .start()
        .unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o660
    );
    // A second server on the same live path: refused, the file left alone.
    let live = Config::builder()
        .cores(1)
        .listen(format!("unix:{}", path.display()))
        .build()
        .unwrap();
    let e = Server::builder().config(live).build().unwrap_err();
    assert!(e.to_string().contains("another server accepts"), "{e}");

    // Raw arpc frames over the socket.
    let mut sock = UnixStream::connect(&path).unwrap();
    sock.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    sock.write_all(&Frame::request(1, "/echo", b"over unix".to_vec()).to_bytes())
        .unwrap();
    let mut buf = BytesMut::new();
    let frame = loop {
        if let Some(f) = Decoder::default().decode(&mut buf).unwrap() {
            break f;
        }
        let mut chunk = [0u8; 4096];
        let n = sock.read(&mut chunk).unwrap();
        assert!(n > 0);
        buf.extend_from_slice(&chunk[..n]);
    };
    assert_eq!(&frame.payload[..], b"over unix");
    // ringrpc's client, over TLS on the Unix socket (the name checked is localhost).
    let client = Client::builder(&format!("unix:{}", path.display()))
        .tls(ClientTls::with_ca_file(pki.path("ca.pem")).unwrap())
        .connect()
        .unwrap();
    let who = client.call("/whoami", Bytes::new(), IO_TIMEOUT).unwrap();
    assert!(who.starts_with(b"TLSv1.3"), "{who:?}");
    drop(client);
    server.handle().shutdown();
    server.join().unwrap();
    assert!(!path.exists(), "the socket file is removed at shutdown");

    // A path that is not a socket is never removed.
    std::fs::write(&path, b"precious").unwrap();
    let e = Server::builder()
        .config(
            Config::builder()
                .cores(1)
                .listen(format!("unix:{}", path.display()))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap_err();
    assert!(e.to_string().contains("is not a socket"), "{e}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    // The abstract namespace: no file at all.
    let name = format!("ringrpc-test-{}", std::process::id());
    let server = Server::builder()
        .config(
            Config::builder()
                .cores(1)
                .listen(format!("unix:@{name}"))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
        .start()
        .unwrap();
    let client = Client::builder(&format!("unix:@{name}")).connect().unwrap();
    assert_eq!(
        &client
            .call("/echo", Bytes::from_static(b"@"), IO_TIMEOUT)
            .unwrap()[..],
        b"@"
    );
    drop(client);
    server.handle().shutdown();
    server.join().unwrap();
}
