//! The blocking HTTP client every caller of a twinflow server builds: the
//! CLI, the other processes of a cluster, the benches and the tests.

use std::time::Duration;

use twinflow_schemas::config::TlsConfig;

/// A client whose requests time out after `timeout` and, with `bearer`,
/// all carry `Authorization: Bearer <bearer>` (marked sensitive, so it is
/// never logged). An error names what was wrong.
pub fn blocking_client(timeout: Duration, bearer: Option<&str>) -> Result<reqwest::blocking::Client, String> {
    blocking_client_trusting(timeout, bearer, None)
}

/// [`blocking_client`] that, for HTTPS, also trusts the certificates of the
/// PEM `roots` (a private CA, or a self-signed server certificate) besides
/// the public ones.
pub fn blocking_client_trusting(
    timeout: Duration,
    bearer: Option<&str>,
    roots: Option<&[u8]>,
) -> Result<reqwest::blocking::Client, String> {
    let mut builder = reqwest::blocking::Client::builder().timeout(timeout);
    if let Some(token) = bearer {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .map_err(|_| "the key is not a valid header value".to_owned())?;
        value.set_sensitive(true);
        builder =
            builder.default_headers(reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]));
    }
    if let Some(pem) = roots {
        let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| format!("not PEM certificates: {e}"))?;
        if certs.is_empty() {
            return Err("no PEM certificate to trust".into());
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// What the clients of a server configured with `tls` trust (PEM): its
/// `ca` when set, or else its own certificate (self-signed).
pub fn tls_roots(tls: &TlsConfig) -> Result<Vec<u8>, String> {
    let path = tls.ca.as_ref().unwrap_or(&tls.cert);
    std::fs::read(path).map_err(|e| format!("cannot read {} ([server.tls]): {e}", path.display()))
}
