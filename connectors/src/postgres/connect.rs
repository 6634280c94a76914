//! How the source reaches the server: the connection settings, and TLS
//! when the connection string asks for it (`sslmode=require`): rustls on
//! ring, checking the server's certificate chain and host name against the
//! public CAs (webpki-roots) and, when configured, a private CA's PEM file.

use std::path::Path;
use std::sync::Arc;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// The connector, trusting the public CAs and those in `ca`; the reason
/// when `ca` cannot be read or holds no certificate.
fn connector(ca: Option<&Path>) -> Result<MakeRustlsConnect, String> {
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

/// The connection settings, and the TLS connector when they ask for TLS.
#[derive(Clone)]
pub(super) struct Connect {
    config: tokio_postgres::Config,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect").field("config", &self.config).field("tls", &self.tls.is_some()).finish()
    }
}

impl Connect {
    /// TLS with `sslmode=require` (trusting `ca` too); a CA without it is
    /// refused (the reason). A plain connection to a host that is not local
    /// is allowed, with a warning naming `source`.
    pub(super) fn new(config: tokio_postgres::Config, ca: Option<&Path>, source: &str) -> Result<Self, String> {
        let tls = match (config.get_ssl_mode(), ca) {
            (SslMode::Require, ca) => Some(connector(ca)?),
            (_, Some(_)) => {
                return Err(
                    "a CA is configured but the connection string does not ask for TLS: add sslmode=require".into()
                );
            }
            (_, None) => None,
        };
        let remote = |host: &Host| match host {
            Host::Tcp(host) => !matches!(host.as_str(), "localhost" | "127.0.0.1" | "::1"),
            _ => false,
        };
        if tls.is_none() && config.get_hosts().iter().any(remote) {
            tracing::warn!(source, "connecting to a remote server without TLS: add sslmode=require to the url");
        }
        Ok(Self { config, tls })
    }

    /// A new session; its connection runs on the current runtime.
    pub(super) async fn client(&self) -> Result<Client, tokio_postgres::Error> {
        async fn drive<F: std::future::Future<Output = Result<(), tokio_postgres::Error>>>(connection: F) {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "postgres connection ended");
            }
        }
        match &self.tls {
            Some(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
            None => {
                let (client, connection) = self.config.connect(NoTls).await?;
                tokio::spawn(drive(connection));
                Ok(client)
            }
        }
    }
}
