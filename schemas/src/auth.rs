//! API keys: their format, their hash, the check of a presented key, and
//! the admin key file a first start creates.
//!
//! ```text
//!  key      = "tfk_" + base64url(32 random bytes)        (given to a client once)
//!  config   = { name, scopes, sha256 = hex(SHA-256(key)) } (what the server keeps)
//!  request  = Authorization: Bearer <key>  ─▶ KeyRing::check ─▶ Principal { name, scopes }
//! ```
//!
//! Keys are 256 random bits, so one SHA-256 is the right hash (a slow
//! password hash protects guessable secrets; these are not). The check
//! compares the presented key's digest with every configured digest in
//! constant time, without stopping at the first match.

use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::KeyConfig;

/// What a key may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Search, SQL, RAG, chat, embeddings, status, metrics.
    Read,
    /// Ingest (`POST /v1/documents`).
    Write,
    /// Training, the twin, promotion and rollback, snapshots, datasets; implies the others.
    Admin,
}

impl Scope {
    /// Every scope, for the generated admin key.
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        })
    }
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Anyone, without a key (`/healthz`, and the login itself).
    Open,
    /// A key (or a session made from one) with this scope.
    Key(Scope),
    /// Another process of the same cluster, with the cluster's shared secret.
    Cluster,
}

impl Access {
    /// Read access: search, SQL, answers, status.
    pub const READ: Access = Access::Key(Scope::Read);
    /// Write access: ingest.
    pub const WRITE: Access = Access::Key(Scope::Write);
    /// Admin access: training, promotion, snapshots; the default of a route.
    pub const ADMIN: Access = Access::Key(Scope::Admin);
}

/// Who a request is from: the name of its key and what the key may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Principal {
    /// Whether this key may do what `scope` covers (`admin` may do everything).
    pub fn allows(&self, scope: Scope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&Scope::Admin)
    }
}

/// A configured key that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key {name:?}: sha256 must be 64 hexadecimal digits")]
    BadDigest { name: String },
    #[error("key {name:?}: no scopes")]
    NoScopes { name: String },
}

/// The prefix of every key this project makes (so a leaked key is recognisable).
pub const KEY_PREFIX: &str = "tfk_";

/// The cookie of a dashboard session.
pub const SESSION_COOKIE: &str = "twinflow_session";

/// A new random key.
pub fn generate_key() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(format!("{KEY_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)))
}

/// A random token of 32 bytes (base64url), e.g. a session id or a shared secret.
pub fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The lower-case hex SHA-256 of `key`, as configured.
pub fn key_sha256(key: &str) -> String {
    Sha256::digest(key.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// The configured keys, ready to check presented ones.
#[derive(Clone, Default)]
pub struct KeyRing {
    keys: Vec<([u8; 32], Principal)>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.keys.iter().map(|(_, p)| &p.name)).finish()
    }
}

impl KeyRing {
    /// The ring of `keys`; a malformed digest or a key without scopes is an error.
    pub fn new(keys: &[KeyConfig]) -> Result<Self, KeyError> {
        let keys = keys
            .iter()
            .map(|k| {
                let digest = parse_hex(&k.sha256.to_ascii_lowercase())
                    .ok_or_else(|| KeyError::BadDigest { name: k.name.clone() })?;
                if k.scopes.is_empty() {
                    return Err(KeyError::NoScopes { name: k.name.clone() });
                }
                Ok((digest, Principal { name: k.name.clone(), scopes: k.scopes.clone() }))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { keys })
    }

    /// Adds a key given in full (the generated admin key).
    pub fn with_key(mut self, name: &str, key: &str, scopes: &[Scope]) -> Self {
        let digest: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.keys.push((digest, Principal { name: name.to_owned(), scopes: scopes.to_vec() }));
        self
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Who holds `presented`, if any configured key is it. Every digest is
    /// compared, each in constant time.
    pub fn check(&self, presented: &str) -> Option<Principal> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (expected, principal) in &self.keys {
            if bool::from(expected.ct_eq(&digest)) && found.is_none() {
                found = Some(principal);
            }
        }
        found.cloned()
    }
}

/// Where a first start keeps the admin key it generated.
pub fn admin_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("_auth").join("admin.key")
}

/// The admin key of `data_dir`, created (32 random bytes, file mode 0600 in
/// a 0700 folder) when there is none yet. Returns the key and whether it
/// was created now.
pub fn load_or_create_admin_key(data_dir: &Path) -> std::io::Result<(String, bool)> {
    let path = admin_key_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(key) if !key.trim().is_empty() => return Ok((key.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let dir = path.parent().expect("a folder");
    create_private_dir(dir)?;
    let key = generate_key()?;
    let tmp = dir.join(".admin.key.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut file = private_file(&tmp)?;
    file.write_all(format!("{key}\n").as_bytes())?;
    file.sync_all()?;
    crate::fs::rename_durably(&tmp, &path)?;
    Ok((key, true))
}

/// Reads the admin key of `data_dir` if there is one (for the CLI).
pub fn read_admin_key(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(admin_key_path(data_dir)).ok().map(|k| k.trim().to_owned()).filter(|k| !k.is_empty())
}

/// The secret in `path`, or a new random one written there (mode 0600)
/// when there is none. Processes that start at once agree: the file
/// appears whole (written aside, then linked into place, which fails if
/// another process linked first) and every process reads the one that won.
pub fn load_or_create_secret(path: &Path) -> std::io::Result<String> {
    let read = |path: &Path| -> std::io::Result<Option<String>> {
        match std::fs::read_to_string(path) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    };
    if let Some(secret) = read(path)? {
        return Ok(secret);
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("secret");
    let tmp = dir.join(format!(".{name}.{}.tmp", &random_token()?[..12]));
    let mut file = private_file(&tmp)?;
    file.write_all(format!("{}\n", random_token()?).as_bytes())?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    read(path)?.ok_or_else(|| std::io::Error::other(format!("{} is empty", path.display())))
}

#[cfg(unix)]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new().write(true).create_new(true).open(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_key_is_found_by_its_hash_and_no_other_is() {
        let key = generate_key().unwrap();
        assert!(key.starts_with(KEY_PREFIX) && key.len() == KEY_PREFIX.len() + 43, "{key}");
        let ring = KeyRing::new(&[
            KeyConfig {
                name: "reader".into(),
                scopes: vec![Scope::Read],
                sha256: key_sha256(&key).to_uppercase(),
                scram: None,
            },
            KeyConfig {
                name: "other".into(),
                scopes: vec![Scope::Write],
                sha256: key_sha256("tfk_other"),
                scram: None,
            },
        ])
        .unwrap();
        let who = ring.check(&key).unwrap();
        assert_eq!(who.name, "reader");
        assert!(who.allows(Scope::Read) && !who.allows(Scope::Write) && !who.allows(Scope::Admin));
        assert_eq!(ring.check("tfk_other").unwrap().name, "other");
        assert!(ring.check(&key[..key.len() - 1]).is_none());
        assert!(ring.check("").is_none());
        let admin = Principal { name: "a".into(), scopes: vec![Scope::Admin] };
        assert!(admin.allows(Scope::Read) && admin.allows(Scope::Write));
    }

    #[test]
    fn malformed_keys_are_refused_by_name() {
        let bad = KeyConfig { name: "x".into(), scopes: vec![Scope::Read], sha256: "12ab".into(), scram: None };
        assert!(matches!(KeyRing::new(&[bad]), Err(KeyError::BadDigest { name }) if name == "x"));
        let none = KeyConfig { name: "y".into(), scopes: vec![], sha256: key_sha256("k"), scram: None };
        assert!(matches!(KeyRing::new(&[none]), Err(KeyError::NoScopes { .. })));
    }

    #[test]
    fn processes_sharing_a_folder_agree_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        let secrets: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| load_or_create_secret(&path).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.iter().all(|s| s == &secrets[0] && s.len() == 43), "{secrets:?}");
        assert_eq!(load_or_create_secret(&path).unwrap(), secrets[0]);
    }

    #[cfg(unix)]
    #[test]
    fn the_admin_key_is_created_once_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (key, created) = load_or_create_admin_key(dir.path()).unwrap();
        assert!(created);
        let (again, created) = load_or_create_admin_key(dir.path()).unwrap();
        assert!(!created);
        assert_eq!(key, again);
        assert_eq!(read_admin_key(dir.path()).as_deref(), Some(key.as_str()));
        let mode = std::fs::metadata(admin_key_path(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(admin_key_path(dir.path()).parent().unwrap()).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
    }
}
