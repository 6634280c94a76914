//! The endpoints on their sockets: the API over HTTP, or HTTPS when
//! `[server.tls]` is set, and SQL over the Postgres protocol (TLS too).

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::app::App;

/// Serves the API on `listener` until `shutdown` completes (then lets the
/// requests in flight finish): HTTPS only when `[server.tls]` is set.
pub async fn serve_http(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = crate::router(app.clone());
    match &app.config.server.tls {
        Some(tls) => {
            let config = crate::tls::server_config(tls, &[b"http/1.1"])?;
            let listener = crate::tls::TlsListener::new(listener, config)?;
            axum::serve(listener, router).with_graceful_shutdown(shutdown).await?;
        }
        None => axum::serve(listener, router).with_graceful_shutdown(shutdown).await?,
    }
    Ok(())
}

/// The Postgres endpoint of `app` (with TLS when `[server.tls]` is set);
/// serve it with [`crate::pgwire::PgServer::serve`].
pub fn pg_server(app: &App) -> anyhow::Result<crate::pgwire::PgServer> {
    let server = crate::pgwire::PgServer::new(app.store.clone(), app.config.server.sql_timeout, app.gate.clone())
        .with_search(app.sql_encoder());
    Ok(match &app.config.server.tls {
        Some(tls) => {
            let certificate = std::fs::read(&tls.cert)
                .map_err(|e| anyhow::anyhow!("cannot read the TLS certificate {}: {e}", tls.cert.display()))?;
            server.with_tls(crate::tls::server_config(tls, &[b"postgresql"])?, &certificate)
        }
        None => server,
    })
}

/// The scheme clients reach `app`'s HTTP endpoint with.
pub fn scheme(app: &App) -> &'static str {
    if app.config.server.tls.is_some() { "https" } else { "http" }
}
