//! TLS (rustls, with ring's cryptography) for both endpoints, from the
//! certificate and key files of `[server.tls]`.
//!
//! ```text
//!  TCP accept ─▶ handshake task (≤ 10 s, one per connection) ─▶ channel ─▶ axum::serve (HTTP/1.1 over TLS)
//!  pgwire: SSLRequest (or direct TLS, ALPN "postgresql") ─▶ the same certificate
//! ```
//!
//! Handshakes run in their own tasks so a client that connects and stays
//! silent holds up no one else; a failed handshake is logged at debug level
//! and the connection dropped.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;
use twinflow_schemas::config::TlsConfig;

/// Longest time a client may take to finish its TLS handshake.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// The rustls configuration of `tls`'s certificate chain and key, offering
/// the `alpn` protocols (most preferred first).
pub fn server_config(tls: &TlsConfig, alpn: &[&[u8]]) -> anyhow::Result<Arc<ServerConfig>> {
    let read = |path: &Path, what: &str| {
        std::fs::read(path).with_context(|| format!("cannot read the TLS {what} {} ([server.tls])", path.display()))
    };
    let pem = read(&tls.cert, "certificate")?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", tls.cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "{} holds no PEM certificate", tls.cert.display());
    let key = PrivateKeyDer::from_pem_slice(&read(&tls.key, "key")?)
        .with_context(|| format!("{} is not a PEM private key", tls.key.display()))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("the TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!("the key {} does not fit the certificate {}", tls.key.display(), tls.cert.display())
        })?;
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// A listener whose connections have finished their TLS handshake: what
/// `axum::serve` serves HTTPS on.
#[derive(Debug)]
pub struct TlsListener {
    accepted: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Accepts on `listener` and hands over the connections whose handshake
    /// with `config` succeeded. Call within a tokio runtime.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (sender, accepted) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            while !sender.is_closed() {
                let (tcp, peer) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "HTTPS listener: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let (acceptor, sender) = (acceptor.clone(), sender.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender.send((stream, peer)).await;
                        }
                        Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { accepted, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => connection,
            // The accepting task only ends when this listener is gone.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}
