//! SCRAM-SHA-256 verifiers of API keys, so that a Postgres client proves it
//! holds a key without sending it (RFC 5802 and 7677, in PostgreSQL's form).
//!
//! ```text
//!  twinflow keys create ─▶ [[auth.keys]] scram = "SCRAM-SHA-256$4096:<salt>$<StoredKey>:<ServerKey>"
//!  psql -U <key's name> ─▶ AuthenticationSASL [SCRAM-SHA-256, SCRAM-SHA-256-PLUS with TLS]
//!                       ─▶ proof checked against StoredKey ─▶ the key's Principal (needs `read`)
//! ```
//!
//! The server keeps only the verifier: `StoredKey = H(HMAC(SaltedPassword,
//! "Client Key"))` and `ServerKey = HMAC(SaltedPassword, "Server Key")`,
//! neither of which logs anyone in. The generated admin key gets a verifier
//! derived at start, with a fresh salt.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use pgwire::api::auth::sasl::scram::{ScramSecret, gen_salted_password};

/// The iterations of a new verifier (PostgreSQL's default). Keys are 256
/// random bits, so the count guards nothing guessable; clients pay it once
/// per login.
pub const ITERATIONS: usize = 4096;

const METHOD: &str = "SCRAM-SHA-256";

/// A key's SCRAM-SHA-256 verifier.
#[derive(Clone, PartialEq, Eq)]
pub struct Verifier {
    salt: Vec<u8>,
    iterations: usize,
    stored_key: Vec<u8>,
    server_key: Vec<u8>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier").field("iterations", &self.iterations).finish_non_exhaustive()
    }
}

impl Verifier {
    /// The verifier of `key`, with a random 16-byte salt.
    pub fn derive(key: &str) -> std::io::Result<Self> {
        let mut salt = vec![0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| std::io::Error::other(e.to_string()))?;
        let salted = gen_salted_password(key, &salt, ITERATIONS);
        match ScramSecret::verifier_from_salted_password(salt, salted, ITERATIONS) {
            ScramSecret::Verifier { salt, iterations, stored_key, server_key } => {
                Ok(Self { salt, iterations, stored_key, server_key })
            }
            ScramSecret::SaltedPassword { .. } => Err(std::io::Error::other("pgwire derived no SCRAM verifier")),
        }
    }

    /// Reads `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`
    /// (base64 parts, as PostgreSQL stores them in `pg_authid`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let form = format!("expected {METHOD}$<iterations>:<salt>$<StoredKey>:<ServerKey>");
        let rest = text.strip_prefix(METHOD).and_then(|r| r.strip_prefix('$')).ok_or_else(|| form.clone())?;
        let (params, keys) = rest.split_once('$').ok_or_else(|| form.clone())?;
        let (iterations, salt) = params.split_once(':').ok_or_else(|| form.clone())?;
        let (stored_key, server_key) = keys.split_once(':').ok_or_else(|| form.clone())?;
        let iterations: usize = iterations.parse().map_err(|_| format!("iterations {iterations:?} is not a number"))?;
        if iterations == 0 {
            return Err("iterations must be at least 1".into());
        }
        let decode = |part: &str, what: &str| STANDARD.decode(part).map_err(|e| format!("{what}: {e}"));
        let salt = decode(salt, "salt")?;
        let (stored_key, server_key) = (decode(stored_key, "StoredKey")?, decode(server_key, "ServerKey")?);
        if salt.is_empty() {
            return Err("the salt is empty".into());
        }
        if stored_key.len() != 32 || server_key.len() != 32 {
            return Err("StoredKey and ServerKey must be 32 bytes (SHA-256) each".into());
        }
        Ok(Self { salt, iterations, stored_key, server_key })
    }

    /// What pgwire checks a client's proof against.
    pub fn secret(&self) -> ScramSecret {
        ScramSecret::Verifier {
            salt: self.salt.clone(),
            iterations: self.iterations,
            stored_key: self.stored_key.clone(),
            server_key: self.server_key.clone(),
        }
    }
}

impl std::fmt::Display for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (salt, stored, server) =
            (STANDARD.encode(&self.salt), STANDARD.encode(&self.stored_key), STANDARD.encode(&self.server_key));
        write!(f, "{METHOD}${}:{salt}${stored}:{server}", self.iterations)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_derived_verifier_reads_back_and_salts_differ() {
        let verifier = Verifier::derive("tfk_key").unwrap();
        let text = verifier.to_string();
        assert!(text.starts_with("SCRAM-SHA-256$4096:"), "{text}");
        assert_eq!(Verifier::parse(&text).unwrap(), verifier);
        assert_ne!(Verifier::derive("tfk_key").unwrap(), verifier, "each derivation draws its own salt");
        assert!(!format!("{verifier:?}").contains(&STANDARD.encode(&verifier.stored_key)), "Debug hides the keys");
    }

    #[test]
    fn postgres_verifiers_are_read_and_malformed_ones_named() {
        // PostgreSQL's form (as in `pg_authid.rolpassword`), with made-up keys.
        let postgres = "SCRAM-SHA-256$4096:c2FsdHNhbHRzYWx0c2FsdA==$\
                        AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=:AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        let verifier = Verifier::parse(postgres).unwrap();
        assert_eq!((verifier.iterations, verifier.salt.as_slice()), (4096, b"saltsaltsaltsalt".as_slice()));
        assert_eq!(verifier.to_string(), postgres);
        for (bad, says) in [
            ("MD5$4096:c2FsdA==$AA==:AA==", "expected SCRAM-SHA-256$"),
            ("SCRAM-SHA-256$x:c2FsdA==$AA==:AA==", "not a number"),
            ("SCRAM-SHA-256$0:c2FsdA==$AA==:AA==", "at least 1"),
            ("SCRAM-SHA-256$4096:c2FsdA==$AA==:AA==", "32 bytes"),
            ("SCRAM-SHA-256$4096:!!$AA==:AA==", "salt"),
            ("SCRAM-SHA-256$4096:c2FsdA==", "expected"),
        ] {
            let error = Verifier::parse(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
    }
}
