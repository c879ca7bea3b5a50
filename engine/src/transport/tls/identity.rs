//! What a TLS handshake settled, as handlers see it in [`ConnInfo::tls`](crate::ConnInfo):
//! the version, ALPN, server name, and the client certificate's subject and names.
//!
//! Invariants: only a certificate rustls verified reaches here (mutual TLS: verified against
//! the client CA, or the handshake failed); a certificate whose names cannot be parsed still
//! yields its DER bytes, with empty names.

use std::net::IpAddr;

use rustls::pki_types::CertificateDer;
use x509_cert::Certificate;
use x509_cert::der::Decode;
use x509_cert::der::oid::db::rfc4519;
use x509_cert::ext::pkix::SubjectAltName;
use x509_cert::ext::pkix::name::GeneralName;

use crate::ids::{PeerCertificate, TlsInfo};

/// What `conn`'s finished handshake settled.
pub(crate) fn tls_info(conn: &rustls::Connection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "TLS",
    };
    let server_name = match conn {
        rustls::Connection::Server(s) => s.server_name().map(str::to_string),
        rustls::Connection::Client(_) => None,
    };
    TlsInfo {
        version,
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        server_name,
        peer: conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(peer_certificate),
    }
}

/// The subject and names of a (verified) certificate.
pub(crate) fn peer_certificate(der: &CertificateDer<'_>) -> PeerCertificate {
    let mut peer = PeerCertificate {
        subject: String::new(),
        common_name: None,
        dns_names: Vec::new(),
        uris: Vec::new(),
        emails: Vec::new(),
        ip_addrs: Vec::new(),
        der: der.to_vec(),
    };
    let Ok(cert) = Certificate::from_der(der) else {
        return peer;
    };
    let subject = &cert.tbs_certificate.subject;
    peer.subject = subject.to_string();
    peer.common_name = subject
        .0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == rfc4519::CN)
        .and_then(|atv| atv.to_string().split_once('=').map(|(_, v)| v.to_string()));
    if let Ok(Some((_, SubjectAltName(names)))) = cert.tbs_certificate.get::<SubjectAltName>() {
        for name in names {
            match name {
                GeneralName::DnsName(n) => peer.dns_names.push(n.to_string()),
                GeneralName::UniformResourceIdentifier(u) => peer.uris.push(u.to_string()),
                GeneralName::Rfc822Name(e) => peer.emails.push(e.to_string()),
                GeneralName::IpAddress(ip) => {
                    let b = ip.as_bytes();
                    if let Ok(v4) = <[u8; 4]>::try_from(b) {
                        peer.ip_addrs.push(IpAddr::from(v4));
                    } else if let Ok(v6) = <[u8; 16]>::try_from(b) {
                        peer.ip_addrs.push(IpAddr::from(v6));
                    }
                }
                _ => {}
            }
        }
    }
    peer
}
