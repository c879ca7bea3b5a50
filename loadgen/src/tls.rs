//! `--tls`: arpc over TLS, client side, with rustls driven sans-IO as the engine drives it
//! (ciphertext in → plaintext out; plaintext in → records out), so either I/O engine keeps
//! its own sockets and sends. [`TlsSettings`] is what the flags configure (roots or
//! `--tls-insecure`, the server name, ALPN `arpc`); `TlsSession` is one connection's state.
//!
//! Invariants: the handshake runs blocking on the connecting thread before a connection is
//! handed to an I/O thread (so a reconnect's handshake is part of the I/O thread's work);
//! every handshake is a full one (no session resumption);
//! plaintext is sealed only after the handshake; records leave in the order sealed.
//!
//! Why not the engine's `ClientTls`: loadgen is published without depending on ringrpc, and
//! the engine's TLS layer is built around its own output queue.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// The ALPN value arpc over TLS offers (the engine's `ALPN_ARPC`).
pub const ALPN_ARPC: &[u8] = b"arpc";

/// How every connection of a run speaks TLS.
#[derive(Clone)]
pub struct TlsSettings {
    config: Arc<ClientConfig>,
    server_name: ServerName<'static>,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .finish()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsSettings {
    /// Trusts the CAs of `ca` (PEM) or, with `insecure`, any certificate (its handshake
    /// signature is still checked, so the work is a real client's); `server_name` is the
    /// name the certificate must carry (also sent as SNI).
    pub fn new(
        ca: Option<&Path>,
        insecure: bool,
        server_name: &str,
    ) -> Result<TlsSettings, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS versions: {e}"))?;
        let builder = if insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCertificate(
                    provider().signature_verification_algorithms,
                )))
        } else {
            let mut roots = RootCertStore::empty();
            if let Some(ca) = ca {
                let certs = CertificateDer::pem_file_iter(ca)
                    .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
                for cert in certs {
                    let cert = cert.map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("--tls-ca {}: {e}", ca.display()))?;
                }
            }
            if roots.is_empty() {
                return Err(
                    "--tls needs --tls-ca FILE (the server's CA) or --tls-insecure".to_string(),
                );
            }
            builder.with_root_certificates(roots)
        };
        let mut config = builder.with_no_client_auth();
        config.alpn_protocols = vec![ALPN_ARPC.to_vec()];
        // Every handshake a full one, as Go's tls.Dial makes without a session cache: a
        // resumed one would skip the certificate's signature, the cost being measured.
        config.resumption = rustls::client::Resumption::disabled();
        let server_name = ServerName::try_from(server_name.to_string())
            .map_err(|_| format!("{server_name:?} is not a valid TLS server name"))?;
        Ok(TlsSettings {
            config: Arc::new(config),
            server_name,
        })
    }

    /// Runs a handshake over `stream` (blocking, within its timeouts).
    pub(crate) fn handshake(&self, stream: &mut (impl Read + Write)) -> io::Result<TlsSession> {
        let mut conn = ClientConnection::new(self.config.clone(), self.server_name.clone())
            .map_err(io::Error::other)?;
        while conn.is_handshaking() {
            conn.complete_io(stream)?;
        }
        conn.set_buffer_limit(None);
        Ok(TlsSession {
            conn,
            plain: Vec::new(),
            sealed: BytesMut::new(),
        })
    }
}

/// One connection's TLS, after its handshake.
pub(crate) struct TlsSession {
    conn: ClientConnection,
    /// Plaintext of the read being handled (reused).
    plain: Vec<u8>,
    /// Records sealed and not yet taken.
    sealed: BytesMut,
}

impl fmt::Debug for TlsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSession")
            .field("sealed", &self.sealed.len())
            .finish()
    }
}

impl TlsSession {
    /// Takes `data` (ciphertext) and lends the plaintext it carried to `f`.
    pub(crate) fn open<R>(
        &mut self,
        mut data: &[u8],
        f: impl FnOnce(&[u8]) -> Result<R, String>,
    ) -> Result<R, String> {
        self.plain.clear();
        while !data.is_empty() {
            self.conn
                .read_tls(&mut data)
                .map_err(|e| format!("TLS read: {e}"))?;
            let state = self
                .conn
                .process_new_packets()
                .map_err(|e| format!("TLS: {e}"))?;
            let n = state.plaintext_bytes_to_read();
            let start = self.plain.len();
            self.plain.resize(start + n, 0);
            self.conn
                .reader()
                .read_exact(&mut self.plain[start..])
                .map_err(|e| format!("TLS read: {e}"))?;
        }
        let plain = std::mem::take(&mut self.plain);
        let result = f(&plain);
        self.plain = plain;
        result
    }

    /// Seals `segments` (plaintext, in order) into records.
    pub(crate) fn seal<'a>(&mut self, segments: impl IntoIterator<Item = &'a [u8]>) {
        for segment in segments {
            // No buffer limit once the handshake is done: the writer takes everything.
            let _ = self.conn.writer().write_all(segment);
        }
        while self.conn.wants_write() {
            if self
                .conn
                .write_tls(&mut (&mut self.sealed).writer())
                .is_err()
            {
                break;
            }
        }
    }

    /// The records sealed so far, if any.
    pub(crate) fn take_sealed(&mut self) -> Option<Bytes> {
        (!self.sealed.is_empty()).then(|| self.sealed.split().freeze())
    }
}

/// `--tls-insecure`: any certificate chain is accepted; handshake signatures are checked.
#[derive(Debug)]
struct AnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
