//! Who is calling, and whether they may: the gate every request passes.
//!
//! ```text
//!  request ─▶ authenticate (every route)                 ─▶ require(access) (per route) ─▶ handler
//!             · a write from another origin: 403 cross_origin   · Open: anyone
//!             · a body not JSON/NDJSON: 415                      · Key(scope): the caller's key or
//!             · Bearer key / cluster secret / session cookie       session has it, else 401 / 403
//!               ─▶ Caller (a request extension)                 · Cluster: the cluster's secret
//! ```
//!
//! Keys are checked by [`KeyRing`] (SHA-256 digests, constant time). A
//! dashboard session is a random token in an `HttpOnly`, `SameSite=Strict`
//! cookie, made from a key by `POST /v1/session` and kept in memory (a
//! restart logs everyone out). With `[auth] mode = "none"` (loopback only)
//! every caller may do everything, except post to the cluster's route.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::header::{
    ACCEPT, AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, COOKIE, HOST, ORIGIN, TRANSFER_ENCODING,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use twinflow_schemas::api::ErrorCode;
use twinflow_schemas::auth::{Access, KeyRing, Principal, SESSION_COOKIE, Scope};
use twinflow_schemas::config::{AuthMode, Config};

use crate::api::ApiError;
use crate::app::App;
use crate::scram::Verifier;

/// The media types of request bodies the API documents. None of them is
/// one a page of another site may send without a CORS preflight.
const DOCUMENTED_BODIES: [&str; 5] =
    ["application/json", "application/x-ndjson", "application/ndjson", "application/jsonl", "application/sql"];

/// The most dashboard sessions held at once (the oldest is dropped first).
const MAX_SESSIONS: usize = 10_000;

/// Who a request is from, as the gate resolved it.
#[derive(Clone, Debug)]
pub enum Caller {
    /// `[auth] mode = "none"`: anyone may do anything but the cluster's route.
    Anyone,
    /// A key in `Authorization: Bearer`.
    Key(Principal),
    /// A dashboard session cookie.
    Session(Principal),
    /// Another process of the cluster (its shared secret as the Bearer token).
    Cluster,
    /// Nothing presented (or an expired session).
    Anonymous,
}

/// The keys, sessions and browser rules of a running server.
pub struct Gate {
    mode: AuthMode,
    ring: KeyRing,
    sessions: Mutex<HashMap<[u8; 32], (Principal, Instant)>>,
    session_ttl: Duration,
    allowed_origins: Vec<String>,
    cluster_secret: Option<String>,
    admin_key_file: Option<PathBuf>,
    /// The keys Postgres clients log in to with SCRAM, by name.
    scram: HashMap<String, (Verifier, Principal)>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate").field("mode", &self.mode).field("keys", &self.ring).finish_non_exhaustive()
    }
}

impl Gate {
    /// The gate of `config`. With no key configured, the data directory's
    /// admin key is the one key (created on the first start). `mode = "none"`
    /// is refused unless every listening address is a loopback one.
    pub fn open(config: &Config) -> anyhow::Result<Self> {
        let auth = &config.auth;
        let mut ring = KeyRing::new(&auth.keys)?;
        let mut admin_key_file = None;
        let mut scram = HashMap::new();
        match auth.mode {
            AuthMode::None => {
                let addrs = std::iter::once(config.server.addr).chain(config.server.pg_addr);
                for addr in addrs {
                    anyhow::ensure!(
                        addr.ip().is_loopback(),
                        "[auth] mode = \"none\" is allowed only on a loopback address, and the server listens on \
                         {addr}: configure keys (or listen on 127.0.0.1)"
                    );
                }
                tracing::warn!("[auth] mode = \"none\": every local client may read, write and administer");
            }
            AuthMode::Keys if ring.is_empty() => {
                let dir = &config.storage.data_dir;
                let (key, _) = twinflow_schemas::auth::load_or_create_admin_key(dir)?;
                ring = ring.with_key("admin", &key, &Scope::ALL);
                admin_key_file = Some(twinflow_schemas::auth::admin_key_path(dir));
                let principal = Principal { name: "admin".into(), scopes: Scope::ALL.to_vec() };
                scram.insert(principal.name.clone(), (Verifier::derive(&key)?, principal));
            }
            AuthMode::Keys => {
                for key in &auth.keys {
                    let Some(text) = &key.scram else { continue };
                    let verifier =
                        Verifier::parse(text).map_err(|e| anyhow::anyhow!("key {:?}: scram: {e}", key.name))?;
                    let principal = Principal { name: key.name.clone(), scopes: key.scopes.clone() };
                    anyhow::ensure!(
                        scram.insert(key.name.clone(), (verifier, principal)).is_none(),
                        "two keys named {:?} have a scram verifier: Postgres clients log in by the key's name, so \
                         it must be unique",
                        key.name
                    );
                }
            }
        }
        Ok(Self {
            mode: auth.mode,
            ring,
            sessions: Mutex::new(HashMap::new()),
            session_ttl: auth.session_ttl,
            allowed_origins: auth.allowed_origins.iter().map(|o| o.trim_end_matches('/').to_owned()).collect(),
            cluster_secret: auth.cluster_secret.clone().filter(|s| !s.is_empty()),
            admin_key_file,
            scram,
        })
    }

    /// The file of the generated admin key, when it is the key in use.
    pub fn admin_key_file(&self) -> Option<&PathBuf> {
        self.admin_key_file.as_ref()
    }

    /// Whether requests need keys.
    pub fn needs_keys(&self) -> bool {
        self.mode == AuthMode::Keys
    }

    /// Who holds `key`, if it is a configured key.
    pub fn check_key(&self, key: &str) -> Option<Principal> {
        self.ring.check(key)
    }

    /// The SCRAM verifier of the key named `name` and who holds it, when
    /// that key has one (a Postgres login as `name` then uses SCRAM).
    pub fn scram_login(&self, name: &str) -> Option<&(Verifier, Principal)> {
        self.scram.get(name)
    }

    /// A new session for `principal`: its token (the cookie's value) and lifetime.
    pub fn start_session(&self, principal: Principal) -> std::io::Result<(String, Duration)> {
        let token = twinflow_schemas::auth::random_token()?;
        let now = Instant::now();
        let mut sessions = self.sessions.lock();
        sessions.retain(|_, (_, expires)| *expires > now);
        if sessions.len() >= MAX_SESSIONS
            && let Some(oldest) = sessions.iter().min_by_key(|(_, (_, expires))| *expires).map(|(k, _)| *k)
        {
            sessions.remove(&oldest);
        }
        sessions.insert(Sha256::digest(token.as_bytes()).into(), (principal, now + self.session_ttl));
        Ok((token, self.session_ttl))
    }

    /// Ends the session of `token`; whether there was one.
    pub fn end_session(&self, token: &str) -> bool {
        self.sessions.lock().remove(&<[u8; 32]>::from(Sha256::digest(token.as_bytes()))).is_some()
    }

    fn session(&self, token: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let sessions = self.sessions.lock();
        let (principal, expires) = sessions.get(&digest)?;
        (*expires > Instant::now()).then(|| principal.clone())
    }

    fn is_cluster_secret(&self, token: &str) -> bool {
        self.cluster_secret.as_deref().is_some_and(|secret| bool::from(secret.as_bytes().ct_eq(token.as_bytes())))
    }

    /// Who `headers` say the caller is; a Bearer token that is no key is an error.
    fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if let Some(value) = headers.get(AUTHORIZATION) {
            let token = value
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim)
                .ok_or_else(|| ApiError::new(ErrorCode::Unauthorized, "Authorization must be `Bearer <key>`"))?;
            if self.is_cluster_secret(token) {
                return Ok(Caller::Cluster);
            }
            if self.mode == AuthMode::None {
                return Ok(Caller::Anyone);
            }
            return match self.ring.check(token) {
                Some(principal) => Ok(Caller::Key(principal)),
                None => Err(ApiError::new(ErrorCode::Unauthorized, "the key is not valid")),
            };
        }
        if self.mode == AuthMode::None {
            return Ok(Caller::Anyone);
        }
        Ok(session_token(headers).and_then(|t| self.session(t)).map_or(Caller::Anonymous, Caller::Session))
    }

    /// A state-changing request from a browser page of another origin is
    /// refused, and so is a body that is not JSON or NDJSON (the types a
    /// cross-site form or `fetch` cannot send without a CORS preflight,
    /// which this server never grants).
    fn browser_rules(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = headers.get(HOST).and_then(|v| v.to_str().ok()).unwrap_or_default();
        match headers.get(ORIGIN).map(|v| v.to_str().unwrap_or("null")) {
            Some(origin) => {
                let origin = origin.trim_end_matches('/');
                let authority = origin.strip_prefix("http://").or_else(|| origin.strip_prefix("https://"));
                let own = authority.is_some_and(|a| !host.is_empty() && a.eq_ignore_ascii_case(host));
                if !own && !self.allowed_origins.iter().any(|o| o.eq_ignore_ascii_case(origin)) {
                    return Err(ApiError::new(
                        ErrorCode::CrossOrigin,
                        format!("a request from {origin} may not change anything here (see [auth] allowed_origins)"),
                    ));
                }
            }
            None => {
                let site = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()).unwrap_or("none");
                if matches!(site, "cross-site" | "same-site") {
                    return Err(ApiError::new(ErrorCode::CrossOrigin, "a cross-site request may not change anything"));
                }
            }
        }
        let has_body = headers.contains_key(TRANSFER_ENCODING)
            || headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).is_some_and(|v| v.trim() != "0");
        let media = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        match media.as_deref() {
            None if !has_body => Ok(()),
            Some(media) if DOCUMENTED_BODIES.contains(&media) => Ok(()),
            other => Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!(
                    "content type {:?} is not accepted: send application/json (NDJSON changes as \
                     application/x-ndjson, a bare SQL statement as application/sql)",
                    other.unwrap_or("none")
                ),
            )),
        }
    }
}

/// The session cookie's value in `headers`.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, value)| value)
}

/// Resolves the caller of every request (and applies the browser rules to
/// those that change state), before routing.
pub async fn authenticate(State(app): State<Arc<App>>, mut request: Request, next: Next) -> Response {
    if !request.method().is_safe()
        && let Err(refused) = app.gate.browser_rules(request.headers())
    {
        return refused.into_response();
    }
    match app.gate.caller(request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(refused) => unauthorized(refused),
    }
}

/// Lets a request through to a route only if its caller has `access`.
pub async fn require(State(access): State<Access>, request: Request, next: Next) -> Response {
    let caller = request.extensions().get::<Caller>().cloned().unwrap_or(Caller::Anonymous);
    let refused = match (access, &caller) {
        (Access::Open, _) | (Access::Key(_), Caller::Anyone) | (Access::Cluster, Caller::Cluster) => None,
        // The other processes read process 0's committed source positions (`/v1/status`).
        (Access::Key(Scope::Read), Caller::Cluster) => None,
        (Access::Key(scope), Caller::Key(principal) | Caller::Session(principal)) => {
            (!principal.allows(scope)).then(|| forbidden(principal, scope))
        }
        (Access::Key(_), Caller::Cluster) | (Access::Cluster, Caller::Key(_) | Caller::Session(_) | Caller::Anyone) => {
            Some(ApiError::new(ErrorCode::Forbidden, "this route is not for this caller").into_response())
        }
        (Access::Key(_) | Access::Cluster, Caller::Anonymous) => {
            let browser = request.method() == axum::http::Method::GET
                && request.headers().get(ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|v| v.contains("text/html"));
            Some(if browser {
                crate::api::session::login_page()
            } else {
                unauthorized(ApiError::new(
                    ErrorCode::Unauthorized,
                    "this route needs a key: `Authorization: Bearer <key>` (a first start writes an admin key to \
                     <data_dir>/_auth/admin.key)",
                ))
            })
        }
    };
    match refused {
        Some(response) => response,
        None => next.run(request).await,
    }
}

fn forbidden(principal: &Principal, scope: Scope) -> Response {
    let has: Vec<String> = principal.scopes.iter().map(ToString::to_string).collect();
    ApiError::new(
        ErrorCode::Forbidden,
        format!("key {:?} has scopes [{}]; this route needs `{scope}`", principal.name, has.join(", ")),
    )
    .into_response()
}

/// A 401 with the challenge a client needs.
pub(crate) fn unauthorized(error: ApiError) -> Response {
    let mut response = error.into_response();
    response.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer realm=\"twinflow\""));
    debug_assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    response
}

/// What the fallback answers an unknown path: 404 to a caller with a key, 401 to one without.
pub(crate) fn hides_routes(caller: Option<&Caller>) -> Option<Response> {
    matches!(caller, None | Some(Caller::Anonymous))
        .then(|| unauthorized(ApiError::new(ErrorCode::Unauthorized, "this server needs a key")))
}
