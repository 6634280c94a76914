//! Parsing and validating document changes from JSON and NDJSON.
//!
//! Bad input never panics and never half-succeeds: [`parse_ndjson`] checks
//! every line before returning any change, and each error carries a stable
//! [`ErrorCode`](crate::api::ErrorCode) and the line it was found on.

use serde_json::Value;

use crate::api::ErrorCode;
use crate::records::{ContentFormat, Document, DocumentChange, DocumentKind};

/// Limits applied while parsing changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChangeLimits {
    /// Largest `content` accepted, in bytes.
    pub max_document_bytes: usize,
    /// Longest `doc_id`, in bytes.
    pub max_doc_id_bytes: usize,
}

impl Default for ChangeLimits {
    fn default() -> Self {
        Self { max_document_bytes: 8 << 20, max_doc_id_bytes: 1024 }
    }
}

/// Why a change was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ChangeError {
    /// Stable machine-readable reason.
    pub code: ErrorCode,
    /// 1-based line number in the NDJSON body (1 for a single object).
    pub line: usize,
    /// What was wrong, for a human.
    pub message: String,
}

impl ChangeError {
    fn new(code: ErrorCode, line: usize, message: impl Into<String>) -> Self {
        Self { code, line, message: message.into() }
    }
}

/// Parses one JSON object into a validated change.
pub fn parse_change(bytes: &[u8], line: usize, limits: &ChangeLimits) -> Result<DocumentChange, ChangeError> {
    let text = std::str::from_utf8(bytes).map_err(|e| {
        ChangeError::new(ErrorCode::InvalidUtf8, line, format!("invalid UTF-8 at byte {}", e.valid_up_to()))
    })?;
    let value: Value = serde_json::from_str(text)
        .map_err(|e| ChangeError::new(ErrorCode::InvalidJson, line, format!("invalid JSON: {e}")))?;
    change_from_value(value, line, limits)
}

/// Parses an NDJSON body (one change per non-blank line). Either every line
/// is valid and all changes are returned, or the first error is.
pub fn parse_ndjson(body: &[u8], limits: &ChangeLimits) -> Result<Vec<DocumentChange>, ChangeError> {
    let mut changes = Vec::new();
    for (index, raw) in body.split(|b| *b == b'\n').enumerate() {
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        if raw.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        changes.push(parse_change(raw, index + 1, limits)?);
    }
    Ok(changes)
}

/// Validates an already-parsed JSON value as a change.
pub fn change_from_value(value: Value, line: usize, limits: &ChangeLimits) -> Result<DocumentChange, ChangeError> {
    let err = |code, msg: String| ChangeError::new(code, line, msg);
    let Value::Object(mut obj) = value else {
        return Err(err(ErrorCode::InvalidJson, "expected a JSON object".into()));
    };
    let op = match obj.remove("op") {
        None => "upsert".to_owned(),
        Some(Value::String(op)) => op,
        Some(other) => return Err(err(ErrorCode::InvalidField, format!("field `op` must be a string, got {other}"))),
    };
    let doc_id = required_string(&mut obj, "doc_id", line)?;
    if doc_id.trim().is_empty() {
        return Err(err(ErrorCode::InvalidField, "field `doc_id` must not be empty".into()));
    }
    if doc_id.len() > limits.max_doc_id_bytes {
        return Err(err(
            ErrorCode::InvalidField,
            format!("field `doc_id` is {} bytes, more than the limit of {}", doc_id.len(), limits.max_doc_id_bytes),
        ));
    }
    if doc_id.chars().any(char::is_control) {
        return Err(err(ErrorCode::InvalidField, "field `doc_id` must not contain control characters".into()));
    }
    match op.as_str() {
        "delete" => Ok(DocumentChange::Delete { doc_id }),
        "upsert" => {
            let content = required_string(&mut obj, "content", line)?;
            if content.len() > limits.max_document_bytes {
                return Err(err(
                    ErrorCode::DocumentTooLarge,
                    format!(
                        "document {doc_id:?} has {} bytes of content, more than the limit of {}",
                        content.len(),
                        limits.max_document_bytes
                    ),
                ));
            }
            let kind = match optional_string(&mut obj, "kind", line)? {
                None => DocumentKind::default(),
                Some(name) => {
                    name.parse().map_err(|e: crate::records::UnknownKind| err(ErrorCode::UnknownKind, e.to_string()))?
                }
            };
            let format = match optional_string(&mut obj, "format", line)? {
                None => None,
                Some(name) => Some(name.parse::<ContentFormat>().map_err(|msg| err(ErrorCode::InvalidField, msg))?),
            };
            let fetched_at = match obj.remove("fetched_at") {
                None | Some(Value::Null) => None,
                Some(Value::Number(n)) if n.as_i64().is_some() => n.as_i64(),
                Some(other) => {
                    return Err(err(
                        ErrorCode::InvalidField,
                        format!("field `fetched_at` must be milliseconds since 1970 as an integer, got {other}"),
                    ));
                }
            };
            Ok(DocumentChange::Upsert(Document {
                author: optional_string(&mut obj, "author", line)?.unwrap_or_default(),
                title: optional_string(&mut obj, "title", line)?.unwrap_or_default(),
                url: optional_string(&mut obj, "url", line)?.unwrap_or_default(),
                source: optional_string(&mut obj, "source", line)?.unwrap_or_default(),
                doc_id,
                kind,
                format,
                fetched_at,
                content,
            }))
        }
        other => Err(err(ErrorCode::InvalidField, format!("unknown op {other:?}: expected upsert or delete"))),
    }
}

fn required_string(obj: &mut serde_json::Map<String, Value>, field: &str, line: usize) -> Result<String, ChangeError> {
    optional_string(obj, field, line)?
        .ok_or_else(|| ChangeError::new(ErrorCode::MissingField, line, format!("missing field `{field}`")))
}

fn optional_string(
    obj: &mut serde_json::Map<String, Value>,
    field: &str,
    line: usize,
) -> Result<Option<String>, ChangeError> {
    match obj.remove(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(ChangeError::new(
            ErrorCode::InvalidField,
            line,
            format!("field `{field}` must be a string, got {}", type_name(&other)),
        )),
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(body: &str) -> Result<Vec<DocumentChange>, ChangeError> {
        parse_ndjson(body.as_bytes(), &ChangeLimits::default())
    }

    #[test]
    fn good_lines_parse() {
        let body = "{\"op\":\"upsert\",\"doc_id\":\"a\",\"kind\":\"article\",\"content\":\"x\"}\n\n{\"op\":\"delete\",\"doc_id\":\"a\"}\r\n";
        let changes = parse(body).unwrap();
        assert_eq!(changes.len(), 2);
        assert!(matches!(&changes[1], DocumentChange::Delete { doc_id } if doc_id == "a"));
    }

    #[test]
    fn each_bad_input_has_its_code_and_line() {
        let ok = "{\"doc_id\":\"a\",\"content\":\"x\"}\n";
        let cases = [
            ("{\"doc_id\":\"a\",\"content\":", ErrorCode::InvalidJson),
            ("{\"content\":\"x\"}", ErrorCode::MissingField),
            ("{\"doc_id\":\"a\"}", ErrorCode::MissingField),
            ("{\"doc_id\":\"a\",\"content\":\"x\",\"kind\":\"blog\"}", ErrorCode::UnknownKind),
            ("{\"doc_id\":\"\",\"content\":\"x\"}", ErrorCode::InvalidField),
            ("{\"doc_id\":\"a\",\"content\":7}", ErrorCode::InvalidField),
            ("{\"op\":\"merge\",\"doc_id\":\"a\"}", ErrorCode::InvalidField),
            ("[1,2]", ErrorCode::InvalidJson),
        ];
        for (bad, code) in cases {
            let err = parse(&format!("{ok}{bad}\n")).unwrap_err();
            assert_eq!((err.code, err.line), (code, 2), "{bad}: {err}");
        }
        let mut invalid_utf8 = ok.as_bytes().to_vec();
        invalid_utf8.extend_from_slice(b"{\"doc_id\":\"\xff\",\"content\":\"x\"}");
        let err = parse_ndjson(&invalid_utf8, &ChangeLimits::default()).unwrap_err();
        assert_eq!((err.code, err.line), (ErrorCode::InvalidUtf8, 2));
    }

    #[test]
    fn oversize_document_is_refused() {
        let limits = ChangeLimits { max_document_bytes: 10, ..Default::default() };
        let err = parse_change(br#"{"doc_id":"a","content":"01234567890"}"#, 1, &limits).unwrap_err();
        assert_eq!(err.code, ErrorCode::DocumentTooLarge);
    }
}
