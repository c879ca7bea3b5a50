//! TLS settings loaded from PEM files: the server's certificate chain, key and client CA
//! ([`ServerTls`], reloadable), a client's roots, server name and certificate
//! ([`ClientTls`]), and why a file was refused ([`TlsError`]).
//!
//! Invariants: a [`ServerTls`] always holds a working rustls configuration (a reload that
//! fails leaves the old one in place); the key is checked against the certificate when
//! loaded, so a mismatch is a startup error naming both files, never a handshake failure;
//! every error names the file and says what to do.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

/// The ALPN protocol of arpc over TLS.
pub const ALPN_ARPC: &[u8] = b"arpc";
/// The ALPN protocol of WebSocket (`wss://`): HTTP/1.1, then the upgrade.
pub const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why TLS settings could not be loaded or a TLS client could not be configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsError(String);

impl TlsError {
    /// A reload asked of a server without TLS.
    pub(crate) fn not_configured() -> TlsError {
        TlsError("this server serves no TLS: nothing to reload (give ConfigBuilder::tls)".into())
    }

    fn file(what: &str, path: &Path, why: impl fmt::Display) -> TlsError {
        TlsError(format!("{what} {}: {why}", path.display()))
    }
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The crypto provider every configuration uses: ring (pure Rust and assembly built with
/// the C compiler only; no cmake or Go toolchain, unlike aws-lc-rs).
fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain (leaf first), refusing a file with none.
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::file(what, path, pem_error(e)))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::file(what, path, pem_error(e)))?;
    if certs.is_empty() {
        return Err(TlsError::file(
            what,
            path,
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
        ));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::file("TLS key", path, pem_error(e)))
}

fn pem_error(e: rustls::pki_types::pem::Error) -> String {
    match e {
        rustls::pki_types::pem::Error::Io(e) => e.to_string(),
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PEM private key (-----BEGIN PRIVATE KEY-----, RSA or EC) in it".into()
        }
        other => format!("not valid PEM: {other:?}"),
    }
}

/// Reads the trust anchors of a PEM file into a root store.
fn read_roots(path: &Path, what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path, what)? {
        roots
            .add(cert)
            .map_err(|e| TlsError::file(what, path, format!("not a usable CA certificate: {e}")))?;
    }
    Ok(roots)
}

/// The files a server's TLS is loaded from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TlsFiles {
    pub(crate) cert: PathBuf,
    pub(crate) key: PathBuf,
    pub(crate) client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Builds the rustls configuration, or names the file at fault.
    fn load(&self) -> Result<ServerConfig, TlsError> {
        let certs = read_certs(&self.cert, "TLS certificate")?;
        let key = read_key(&self.key)?;
        let builder = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("TLS versions: {e}")))?;
        let builder = match &self.client_ca {
            Some(ca) => {
                let roots = read_roots(ca, "TLS client CA")?;
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                        .build()
                        .map_err(|e| TlsError::file("TLS client CA", ca, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => TlsError(format!(
                "TLS key {} does not match certificate {}: give the key the certificate was issued for",
                self.key.display(),
                self.cert.display()
            )),
            other => TlsError(format!(
                "TLS certificate {} with key {}: {other}",
                self.cert.display(),
                self.key.display()
            )),
        })?;
        config.alpn_protocols = vec![ALPN_ARPC.to_vec(), ALPN_HTTP1.to_vec()];
        Ok(config)
    }
}

/// A server's TLS: its files and the configuration loaded from them, which every new
/// connection reads and [`ServerTls::reload`] replaces.
pub(crate) struct ServerTls {
    files: TlsFiles,
    /// Only TLS is served (no plaintext arpc or WebSocket on the same port).
    required: bool,
    current: RwLock<Arc<ServerConfig>>,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("files", &self.files)
            .field("required", &self.required)
            .finish()
    }
}

impl ServerTls {
    /// Loads `files`, checking the key against the certificate.
    pub(crate) fn load(files: TlsFiles, required: bool) -> Result<ServerTls, TlsError> {
        let config = files.load()?;
        Ok(ServerTls {
            files,
            required,
            current: RwLock::new(Arc::new(config)),
        })
    }

    /// Only TLS is served: no plaintext arpc or WebSocket beside it on the same port.
    pub(crate) fn required(&self) -> bool {
        self.required
    }

    /// The configuration new connections use.
    pub(crate) fn config(&self) -> Arc<ServerConfig> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Reads the files again; on success new connections use them (open ones keep theirs),
    /// on failure the old configuration stays and the error says why.
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let config = self.files.load()?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        Ok(())
    }
}

/// How a [`Client`](crate::Client) speaks TLS: the roots it trusts, the name it expects
/// the server's certificate to carry, and its own certificate for mutual TLS.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use ringrpc::{Client, ClientTls};
///
/// let tls = ClientTls::with_ca_file("ca.pem")?.server_name("api.example.com");
/// let client = Client::builder("api.example.com:8888").tls(tls).connect()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientTls {
    roots: Arc<RootCertStore>,
    server_name: Option<String>,
    identity: Option<(Vec<CertificateDer<'static>>, Arc<PrivateKeyDer<'static>>)>,
    alpn: Vec<Vec<u8>>,
}

impl fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientTls")
            .field("roots", &self.roots.len())
            .field("server_name", &self.server_name)
            .field("client_certificate", &self.identity.is_some())
            .finish()
    }
}

impl ClientTls {
    fn with_roots(roots: RootCertStore) -> ClientTls {
        ClientTls {
            roots: Arc::new(roots),
            server_name: None,
            identity: None,
            alpn: vec![ALPN_ARPC.to_vec()],
        }
    }

    /// Trusts the CA certificates of a PEM file (a private CA, or a self-signed server
    /// certificate).
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<ClientTls, TlsError> {
        Ok(Self::with_roots(read_roots(path.as_ref(), "TLS CA")?))
    }

    /// Trusts the Mozilla root CAs compiled in (`webpki-roots`): public certificates.
    pub fn with_webpki_roots() -> ClientTls {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        Self::with_roots(roots)
    }

    /// Trusts the system's CA store (`rustls-native-certs`); fails if it has none usable.
    pub fn with_system_roots() -> Result<ClientTls, TlsError> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(TlsError(format!(
                "no usable CA certificate in the system store ({} errors; install ca-certificates or give a CA file)",
                found.errors.len()
            )));
        }
        Ok(Self::with_roots(roots))
    }

    /// The name the server's certificate must carry (default: the target's host name or
    /// IP address).
    pub fn server_name(mut self, name: impl Into<String>) -> ClientTls {
        self.server_name = Some(name.into());
        self
    }

    /// Presents this certificate chain and key (PEM files) to a server that asks for one
    /// (mutual TLS).
    pub fn client_certificate(
        mut self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<ClientTls, TlsError> {
        let certs = read_certs(cert.as_ref(), "TLS client certificate")?;
        let key = read_key(key.as_ref())?;
        self.identity = Some((certs, Arc::new(key)));
        Ok(self)
    }

    /// The rustls configuration and server name for a connection to `host`.
    pub(crate) fn connector(
        &self,
        host: &str,
    ) -> Result<(Arc<ClientConfig>, ServerName<'static>), TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let server_name = ServerName::try_from(name.to_string()).map_err(|_| {
            TlsError(format!(
                "{name:?} is not a valid TLS server name: give ClientTls::server_name"
            ))
        })?;
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError(format!("TLS versions: {e}")))?
            .with_root_certificates(self.roots.clone());
        let mut config = match &self.identity {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs.clone(), key.clone_key())
                .map_err(|e| TlsError(format!("TLS client certificate: {e}")))?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = self.alpn.clone();
        Ok((Arc::new(config), server_name))
    }
}
