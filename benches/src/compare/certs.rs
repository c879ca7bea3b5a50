//! The certificate the TLS rows serve (engine-tls, haproxy-tls): made at compare's start
//! with rcgen (ECDSA P-256, for `localhost`) into the output directory, so nothing that
//! expires is committed.

use std::path::{Path, PathBuf};

/// PEM files of one certificate and its key.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The certificate then the key, in one file (HAProxy's `crt`).
    pub combined: PathBuf,
}

/// Makes a self-signed certificate for localhost in `dir`.
pub fn make_certificate(dir: &Path) -> Result<Certificate, String> {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .map_err(|e| format!("cannot make a TLS certificate: {e}"))?;
    let (cert_pem, key_pem) = (made.cert.pem(), made.key_pair.serialize_pem());
    let files = Certificate {
        cert: dir.join("tls-cert.pem"),
        key: dir.join("tls-key.pem"),
        combined: dir.join("tls-haproxy.pem"),
    };
    for (path, text) in [
        (&files.cert, cert_pem.clone()),
        (&files.key, key_pem.clone()),
        (&files.combined, format!("{cert_pem}{key_pem}")),
    ] {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(files)
}
