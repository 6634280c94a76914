//! Content hashes used as identities: chunk ids, content hashes, sample ids.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A 128-bit content hash (the first 16 bytes of BLAKE3).
///
/// Shown and serialised to humans (JSON, Parquet, SQL) as 32 lowercase hex
/// digits; serialised to binary formats (timely's exchange) as a `u128`.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hash128(pub u128);

impl Hash128 {
    /// Hash of one byte string.
    pub fn of(bytes: &[u8]) -> Self {
        Self::of_parts(&[bytes])
    }

    /// Hash of several byte strings, each length-prefixed so that
    /// `["ab", "c"]` and `["a", "bc"]` differ.
    pub fn of_parts(parts: &[&[u8]]) -> Self {
        let mut hasher = blake3::Hasher::new();
        for part in parts {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        let digest = hasher.finalize();
        let mut first = [0u8; 16];
        first.copy_from_slice(&digest.as_bytes()[..16]);
        Self(u128::from_be_bytes(first))
    }

    /// 32 lowercase hex digits.
    pub fn to_hex(&self) -> String {
        format!("{:032x}", self.0)
    }

    /// A cheap 64-bit value for partitioning (workers, splits).
    pub fn low64(&self) -> u64 {
        self.0 as u64
    }
}

impl fmt::Display for Hash128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Debug for Hash128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Error parsing a [`Hash128`] from hex.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid hash {0:?}: expected 32 hex digits")]
pub struct InvalidHash(pub String);

impl FromStr for Hash128 {
    type Err = InvalidHash;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 32 {
            return Err(InvalidHash(s.to_owned()));
        }
        u128::from_str_radix(s, 16).map(Hash128).map_err(|_| InvalidHash(s.to_owned()))
    }
}

impl Serialize for Hash128 {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            serializer.serialize_str(&self.to_hex())
        } else {
            serializer.serialize_u128(self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Hash128 {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            let s = String::deserialize(deserializer)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            u128::deserialize(deserializer).map(Hash128)
        }
    }
}

/// A stable 64-bit hash of a string, for partitioning work by key
/// (documents by `doc_id`). Stable across processes and platforms.
pub fn partition_hash(key: &str) -> u64 {
    Hash128::of(key.as_bytes()).low64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_json_form() {
        let h = Hash128::of(b"hello");
        assert_eq!(h.to_hex().len(), 32);
        assert_eq!(h.to_hex().parse::<Hash128>().unwrap(), h);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(json, format!("\"{}\"", h.to_hex()));
        assert_eq!(serde_json::from_str::<Hash128>(&json).unwrap(), h);
        assert!("xyz".parse::<Hash128>().is_err());
    }

    #[test]
    fn parts_are_length_prefixed() {
        assert_ne!(Hash128::of_parts(&[b"ab", b"c"]), Hash128::of_parts(&[b"a", b"bc"]));
        assert_ne!(Hash128::of(b"a"), Hash128::of(b"b"));
    }
}

impl schemars::JsonSchema for Hash128 {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Hash128".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^[0-9a-f]{32}$",
            "description": "A 128-bit content hash as 32 lowercase hex digits",
        })
    }
}
