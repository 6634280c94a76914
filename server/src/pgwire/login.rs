//! How a Postgres client logs in (see the parent module's documentation):
//! SCRAM-SHA-256 as a key's name, the key as the password otherwise, and
//! the key's `read` scope checked once the key is proven.
//!
//! ```text
//!  Startup(user) ─▶ TLS only and not TLS? FATAL 28000, before any key is asked for
//!                ─▶ user names a key with a verifier? SCRAM (CheckedScram) : password (Keys)
//!                ─▶ AuthDriver: challenge … response ─▶ Authenticated(Principal)
//!                ─▶ Principal may read? AuthenticationOk : 28P01, as for a wrong key
//! ```

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use pgwire::api::ClientInfo;
use pgwire::api::auth::cleartext::CleartextPasswordAuth;
use pgwire::api::auth::mechanism::{AuthMechanism, AuthMechanismFactory, AuthState};
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, ScramSecret};
use pgwire::api::auth::{AuthDriver, AuthOutcome, AuthSource, DefaultServerParameterProvider, LoginInfo, Password};
use pgwire::api::auth::{StartupHandler, protocol_negotiation, save_startup_parameters_to_metadata};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::startup::{PasswordMessageFamily, SASLInitialResponse};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use twinflow_schemas::auth::{Principal, Scope};

use crate::auth::Gate;

/// How a client logs in: with a key, or (`mode = "none"`) not at all.
pub(super) enum Startup {
    Open(OpenStartup),
    Keys(KeyStartup),
}

impl Startup {
    /// With `tls_certificate`, only TLS connections log in, and SCRAM binds
    /// to that certificate.
    pub(super) fn new(gate: &Arc<Gate>, tls_certificate: Option<&[u8]>) -> Self {
        if !gate.needs_keys() {
            return Self::Open(OpenStartup);
        }
        let keys = Arc::new(Keys(gate.clone()));
        let mut scram = ScramAuth::new(keys.clone());
        if let Some(certificate) = tls_certificate
            && let Err(error) = scram.configure_certificate(certificate)
        {
            tracing::warn!(%error, "SCRAM without channel binding: the TLS certificate's signature is not one it supports");
        }
        Self::Keys(KeyStartup {
            driver: AuthDriver::new(DefaultServerParameterProvider::default()),
            password: CleartextPasswordAuth::new(keys),
            scram: CheckedScram(scram),
            gate: gate.clone(),
            tls_only: tls_certificate.is_some(),
        })
    }
}

impl Debug for Startup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Open(_) => "Startup::Open",
            Self::Keys(KeyStartup { tls_only: false, .. }) => "Startup::Keys",
            Self::Keys(KeyStartup { tls_only: true, .. }) => "Startup::Keys(TLS)",
        })
    }
}

#[derive(Debug)]
pub(super) struct OpenStartup;

impl NoopStartupHandler for OpenStartup {}

/// Logins with keys: SCRAM for the user names of keys with a verifier, the
/// key as the password for any other; the key's scope checked at the end.
pub(super) struct KeyStartup {
    driver: AuthDriver<DefaultServerParameterProvider, Principal>,
    password: CleartextPasswordAuth<Keys>,
    scram: CheckedScram,
    gate: Arc<Gate>,
    tls_only: bool,
}

impl KeyStartup {
    /// Finishes a login the mechanism verified, if the key may read.
    async fn finish<C>(&self, client: &mut C, outcome: AuthOutcome<Principal>) -> PgWireResult<()>
    where
        C: ClientInfo + futures_util::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as futures_util::Sink<PgWireBackendMessage>>::Error>,
    {
        match outcome {
            AuthOutcome::InProgress => Ok(()),
            AuthOutcome::Authenticated { identity: Some(principal), final_message }
                if principal.allows(Scope::Read) =>
            {
                self.driver.complete_authentication(client, final_message).await
            }
            // The same answer as a wrong key: a key without `read` logs nobody in.
            AuthOutcome::Authenticated { .. } => Err(PgWireError::InvalidPassword(user(client).to_owned())),
        }
    }
}

fn user<C: ClientInfo + ?Sized>(client: &C) -> &str {
    client.metadata().get(pgwire::api::METADATA_USER).map_or("", String::as_str)
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + futures_util::Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as futures_util::Sink<PgWireBackendMessage>>::Error>,
    {
        let keys = match self {
            Self::Open(open) => return open.on_startup(client, message).await,
            Self::Keys(keys) => keys,
        };
        if keys.tls_only && !client.is_secure() {
            // Before any key is asked for, so none crosses the network in clear.
            let info = ErrorInfo::new(
                "FATAL".to_owned(),
                "28000".to_owned(),
                "this server takes keys over TLS only: connect with sslmode=require (or verify-full)".to_owned(),
            );
            return Err(PgWireError::UserError(Box::new(info)));
        }
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                let mechanism = if keys.gate.scram_login(user(client)).is_some() {
                    keys.scram.create()
                } else {
                    AuthMechanismFactory::<Principal>::create(&keys.password)
                };
                let outcome = keys.driver.begin_authentication(client, mechanism).await?;
                keys.finish(client, outcome).await
            }
            PgWireFrontendMessage::PasswordMessageFamily(message) => {
                let outcome = keys.driver.advance_authentication(client, message).await?;
                keys.finish(client, outcome).await
            }
            _ => Ok(()),
        }
    }
}

/// The keys, as pgwire asks for them: a presented password is checked
/// against the keys' digests; a SCRAM login gets the named key's verifier.
#[derive(Debug)]
struct Keys(Arc<Gate>);

#[async_trait]
impl AuthSource<Principal> for Keys {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        // Keys are kept as digests: there is no password to hand out, only ones to check.
        Err(PgWireError::InvalidPassword(login.user().unwrap_or_default().to_owned()))
    }

    async fn verify_password(&self, login: &LoginInfo, presented: &[u8]) -> PgWireResult<Option<Principal>> {
        match std::str::from_utf8(presented).ok().and_then(|key| self.0.check_key(key.trim())) {
            Some(principal) => Ok(Some(principal)),
            None => Err(PgWireError::InvalidPassword(login.user().unwrap_or_default().to_owned())),
        }
    }

    async fn get_scram_secret(&self, login: &LoginInfo) -> PgWireResult<(ScramSecret, Option<Principal>)> {
        let name = login.user().unwrap_or_default();
        match self.0.scram_login(name) {
            Some((verifier, principal)) => Ok((verifier.secret(), Some(principal.clone()))),
            None => Err(PgWireError::InvalidPassword(name.to_owned())),
        }
    }
}

/// pgwire's SCRAM, with the client's first SASL message decoded here:
/// pgwire 0.42 decodes it unchecked, and a length past the message's end
/// panics the connection's task.
struct CheckedScram(ScramAuth<Principal>);

impl AuthMechanismFactory<Principal> for CheckedScram {
    fn create(&self) -> Box<dyn AuthMechanism<Principal>> {
        Box::new(CheckedScramMechanism { inner: self.0.create(), first: true })
    }
}

struct CheckedScramMechanism {
    inner: Box<dyn AuthMechanism<Principal>>,
    first: bool,
}

#[async_trait]
impl AuthMechanism<Principal> for CheckedScramMechanism {
    async fn begin(&mut self, client: &(dyn ClientInfo + Send + Sync)) -> PgWireResult<AuthState<Principal>> {
        self.inner.begin(client).await
    }

    async fn next(
        &mut self,
        client: &(dyn ClientInfo + Send + Sync),
        message: PasswordMessageFamily,
    ) -> PgWireResult<AuthState<Principal>> {
        let message = match (std::mem::take(&mut self.first), message) {
            (true, PasswordMessageFamily::Raw(body)) => {
                PasswordMessageFamily::SASLInitialResponse(sasl_initial_response(&body)?)
            }
            (_, message) => message,
        };
        self.inner.next(client, message).await
    }
}

/// A SASLInitialResponse body: the mechanism's name (a C string), then the
/// data's length (`-1`: none) and the data.
fn sasl_initial_response(body: &[u8]) -> PgWireResult<SASLInitialResponse> {
    let malformed = |what: &str| PgWireError::InvalidScramMessage(format!("malformed SASLInitialResponse: {what}"));
    let end = body.iter().position(|&b| b == 0).ok_or_else(|| malformed("no mechanism name"))?;
    let method = std::str::from_utf8(&body[..end]).map_err(|_| malformed("the mechanism name is not UTF-8"))?;
    let (length, rest) = body[end + 1..].split_first_chunk::<4>().ok_or_else(|| malformed("no data length"))?;
    let data = match i32::from_be_bytes(*length) {
        -1 => None,
        length => {
            let data = usize::try_from(length).ok().and_then(|n| rest.get(..n));
            Some(Bytes::copy_from_slice(data.ok_or_else(|| malformed("the data length is past its end"))?))
        }
    };
    Ok(SASLInitialResponse::new(method.to_owned(), data))
}

#[cfg(test)]
mod tests {
    use super::sasl_initial_response;

    #[test]
    fn sasl_initial_responses_are_decoded_within_their_bytes() {
        let good = [b"SCRAM-SHA-256\0".as_slice(), &5i32.to_be_bytes(), b"n,,n="].concat();
        let message = sasl_initial_response(&good).unwrap();
        assert_eq!(message.auth_method, "SCRAM-SHA-256");
        assert_eq!(message.data.as_deref(), Some(b"n,,n=".as_slice()));
        let none = [b"SCRAM-SHA-256\0".as_slice(), &(-1i32).to_be_bytes()].concat();
        assert_eq!(sasl_initial_response(&none).unwrap().data, None);
        let past_end = [b"SCRAM-SHA-256\0".as_slice(), &32i32.to_be_bytes(), b"n,,n="].concat();
        let negative = [b"SCRAM-SHA-256\0".as_slice(), &(-7i32).to_be_bytes()].concat();
        for bad in [&past_end[..], &negative, b"SCRAM-SHA-256\0\0\0", b"SCRAM-SHA-256", b"\xff\0\0\0\0\0"] {
            assert!(sasl_initial_response(bad).is_err(), "{bad:?}");
        }
    }
}
