//! TLS for the source's connections (with `sslmode=require`): rustls on
//! ring, checking the server's certificate chain and host name against the
//! public CAs (webpki-roots) and, when configured, a private CA's PEM file.

use std::path::Path;
use std::sync::Arc;

use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The connector, trusting the public CAs and those in `ca`; the reason
/// when `ca` cannot be read or holds no certificate.
pub(super) fn connector(ca: Option<&Path>) -> Result<MakeRustlsConnect, String> {
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = ca {
        let unreadable = |e: &dyn std::fmt::Display| format!("the CA file {} cannot be read: {e}", path.display());
        let mut added = 0;
        for cert in CertificateDer::pem_file_iter(path).map_err(|e| unreadable(&e))? {
            let cert = cert.map_err(|e| unreadable(&e))?;
            roots.add(cert).map_err(|e| format!("a certificate of {} is not usable as a CA: {e}", path.display()))?;
            added += 1;
        }
        if added == 0 {
            return Err(format!("the CA file {} holds no PEM certificate", path.display()));
        }
    }
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
