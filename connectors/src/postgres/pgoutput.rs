//! The messages of PostgreSQL's `pgoutput` logical decoding plugin, protocol
//! version 1 (what `pg_logical_slot_peek_binary_changes` returns, one
//! message per row): transactions, relations and their row changes, with
//! tuple values in text format.

use std::fmt;

use tokio_postgres::types::PgLsn;

/// A log sequence number: a byte position in the server's write-ahead log.
/// Read from and written to SQL as tokio-postgres's [`PgLsn`]; in JSON (a
/// committed position) as Postgres prints it, `16/B374D848`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Lsn(pub u64);

impl From<PgLsn> for Lsn {
    fn from(lsn: PgLsn) -> Self {
        Self(lsn.into())
    }
}

impl From<Lsn> for PgLsn {
    fn from(lsn: Lsn) -> Self {
        lsn.0.into()
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        PgLsn::from(*self).fmt(f)
    }
}

impl std::str::FromStr for Lsn {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<PgLsn>().map(Self::from).map_err(|_| format!("{s:?} is not an LSN"))
    }
}

impl TryFrom<String> for Lsn {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Lsn> for String {
    fn from(lsn: Lsn) -> Self {
        lsn.to_string()
    }
}

/// One column of a relation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// Part of the replica identity (the key sent with deletes).
    pub key: bool,
}

/// A value of a tuple.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Null,
    /// A TOASTed value the change left as it was: not sent.
    Unchanged,
    Text(String),
}

/// A decoded message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
    },
    Relation {
        id: u32,
        schema: String,
        name: String,
        columns: Vec<Column>,
    },
    Insert {
        relation: u32,
        new: Vec<Value>,
    },
    /// `old` is the key (or, with `REPLICA IDENTITY FULL`, the whole old
    /// row) when the key changed or the identity is full.
    Update {
        relation: u32,
        old: Option<Vec<Value>>,
        new: Vec<Value>,
    },
    Delete {
        relation: u32,
        old: Vec<Value>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// Origin, type and logical messages: nothing to do.
    Other(u8),
}

/// Why a message could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed pgoutput message: {0}")]
pub struct Malformed(String);

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if self.bytes.len() < n {
            return Err(Malformed(format!("{n} more bytes wanted, {} left", self.bytes.len())));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Malformed> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("two bytes")))
    }

    fn u32(&mut self) -> Result<u32, Malformed> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("four bytes")))
    }

    fn u64(&mut self) -> Result<u64, Malformed> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("eight bytes")))
    }

    fn string(&mut self) -> Result<String, Malformed> {
        let end = self.bytes.iter().position(|b| *b == 0).ok_or_else(|| Malformed("unterminated string".into()))?;
        let text = String::from_utf8(self.take(end)?.to_vec()).map_err(|e| Malformed(e.to_string()))?;
        self.take(1)?;
        Ok(text)
    }

    fn tuple(&mut self) -> Result<Vec<Value>, Malformed> {
        let count = self.u16()?;
        (0..count)
            .map(|_| match self.u8()? {
                b'n' => Ok(Value::Null),
                b'u' => Ok(Value::Unchanged),
                b't' => {
                    let len = self.u32()? as usize;
                    let text = std::str::from_utf8(self.take(len)?).map_err(|e| Malformed(e.to_string()))?;
                    Ok(Value::Text(text.to_owned()))
                }
                other => Err(Malformed(format!("tuple value of kind {:?}", other as char))),
            })
            .collect()
    }
}

/// Decodes one message.
pub fn decode(bytes: &[u8]) -> Result<Message, Malformed> {
    let mut r = Reader { bytes };
    let tag = r.u8()?;
    let message = match tag {
        b'B' => {
            let final_lsn = Lsn(r.u64()?);
            let _commit_time = r.u64()?;
            Message::Begin { final_lsn, xid: r.u32()? }
        }
        b'C' => {
            let _flags = r.u8()?;
            let commit_lsn = Lsn(r.u64()?);
            let end_lsn = Lsn(r.u64()?);
            Message::Commit { commit_lsn, end_lsn }
        }
        b'R' => {
            let id = r.u32()?;
            let schema = r.string()?;
            let name = r.string()?;
            let _replica_identity = r.u8()?;
            let count = r.u16()?;
            let columns = (0..count)
                .map(|_| {
                    let flags = r.u8()?;
                    let name = r.string()?;
                    let _type_oid = r.u32()?;
                    let _type_modifier = r.u32()?;
                    Ok(Column { name, key: flags & 1 == 1 })
                })
                .collect::<Result<_, Malformed>>()?;
            Message::Relation { id, schema, name, columns }
        }
        b'I' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'N' => Message::Insert { relation, new: r.tuple()? },
                other => return Err(Malformed(format!("insert with a {:?} tuple", other as char))),
            }
        }
        b'U' => {
            let relation = r.u32()?;
            let (old, marker) = match r.u8()? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    (Some(old), r.u8()?)
                }
                marker => (None, marker),
            };
            if marker != b'N' {
                return Err(Malformed(format!("update with a {:?} tuple", marker as char)));
            }
            Message::Update { relation, old, new: r.tuple()? }
        }
        b'D' => {
            let relation = r.u32()?;
            match r.u8()? {
                b'K' | b'O' => Message::Delete { relation, old: r.tuple()? },
                other => return Err(Malformed(format!("delete with a {:?} tuple", other as char))),
            }
        }
        b'T' => {
            let count = r.u32()?;
            let _options = r.u8()?;
            Message::Truncate { relations: (0..count).map(|_| r.u32()).collect::<Result<_, _>>()? }
        }
        b'O' | b'Y' | b'M' => Message::Other(tag),
        other => return Err(Malformed(format!("unknown message {:?}", other as char))),
    };
    Ok(message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> Vec<u8> {
        let mut bytes = vec![b't'];
        bytes.extend((value.len() as u32).to_be_bytes());
        bytes.extend(value.as_bytes());
        bytes
    }

    #[test]
    fn lsns_read_and_print_as_postgres_writes_them() {
        let lsn: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(lsn, Lsn((0x16 << 32) | 0xB374_D848));
        assert_eq!(lsn.to_string(), "16/B374D848");
        assert!("16-B3".parse::<Lsn>().is_err());
    }

    #[test]
    fn relations_and_updates_decode() {
        let mut relation = vec![b'R'];
        relation.extend(7u32.to_be_bytes());
        relation.extend(b"public\0notes\0");
        relation.push(b'd');
        relation.extend(2u16.to_be_bytes());
        for (flags, name) in [(1u8, "id"), (0, "body")] {
            relation.push(flags);
            relation.extend(name.as_bytes());
            relation.push(0);
            relation.extend(25u32.to_be_bytes());
            relation.extend(u32::MAX.to_be_bytes());
        }
        assert_eq!(
            decode(&relation).unwrap(),
            Message::Relation {
                id: 7,
                schema: "public".into(),
                name: "notes".into(),
                columns: vec![Column { name: "id".into(), key: true }, Column { name: "body".into(), key: false }],
            }
        );

        let mut update = vec![b'U'];
        update.extend(7u32.to_be_bytes());
        update.push(b'N');
        update.extend(2u16.to_be_bytes());
        update.extend(text("42"));
        update.push(b'u');
        assert_eq!(
            decode(&update).unwrap(),
            Message::Update { relation: 7, old: None, new: vec![Value::Text("42".into()), Value::Unchanged] }
        );
        assert!(decode(&update[..update.len() - 2]).is_err(), "a cut message is refused, not read short");
        assert!(decode(b"Z").is_err());
    }
}
