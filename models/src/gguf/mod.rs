//! A reader for GGUF files (llama.cpp's model format, version 2 and 3):
//! the metadata key/values, the tensor table, and the tensors dequantised to
//! `f32` (every type of [`GgmlType`]: `quants.rs`); `writer.rs` writes them;
//! `dot.rs` multiplies rows of blocks with quantised activations as they are
//! (its kernels: `dot/scalar.rs`, the reference, and `dot/x86.rs`, AVX2 and AVX-512 VNNI).
//!
//! ```text
//!  "GGUF" u32 version · u64 tensors · u64 metadata entries
//!  metadata: string key · u32 type · value   (strings: u64 length + UTF-8; arrays: u32 type · u64 n · n values)
//!  tensors:  string name · u32 n_dims · n_dims × u64 ne (fastest-varying first) · u32 ggml type · u64 offset
//!  padding to `general.alignment` (32) · tensor data, each at its offset from here
//! ```
//!
//! Every length and offset is checked against the file before it is used, so
//! a damaged or truncated file is an [`Error::Weights`] naming what is wrong,
//! never a panic.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

pub mod dot;
pub mod half;
pub mod packed;
mod quants;
mod writer;

pub use quants::{GgmlType, dequantize, dequantize_into};
pub use writer::{GgufWriter, Meta};

/// One metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// Any unsigned integer type.
    U64(u64),
    /// Any signed integer type.
    I64(i64),
    /// `f32` or `f64`.
    F64(f64),
    Bool(bool),
    String(String),
    Array(Vec<Value>),
}

impl Value {
    /// The value as an unsigned integer, if it is a non-negative integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U64(v) => Some(v),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F64(v) => Some(v),
            Value::U64(v) => Some(v as f64),
            Value::I64(v) => Some(v as f64),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// One entry of the tensor table.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    /// Dimensions, fastest-varying first (ggml's `ne`): a `[rows, cols]`
    /// matrix is `[cols, rows]` here.
    pub dims: Vec<usize>,
    pub ty: GgmlType,
    /// Absolute byte range in the file.
    start: usize,
    len: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A GGUF file read into memory.
#[derive(Debug)]
pub struct Gguf {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Metadata by key.
    pub metadata: BTreeMap<String, Value>,
    /// Where each metadata value (type code and bytes) lies in `bytes`.
    spans: BTreeMap<String, std::ops::Range<usize>>,
    /// Tensors by name.
    pub tensors: BTreeMap<String, TensorInfo>,
}

impl Gguf {
    /// Reads and parses `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, bytes)
    }

    /// Parses the bytes of a GGUF file (`path` is for messages).
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let bad = |reason: String| Error::Weights { path: path.to_owned(), reason };
        let mut r = Cursor { bytes: &bytes, at: 0 };
        let header = (|| -> Option<(u32, u64, u64)> {
            (r.take(4)? == b"GGUF").then_some(())?;
            Some((r.u32()?, r.u64()?, r.u64()?))
        })();
        let Some((version, n_tensors, n_metadata)) = header else {
            return Err(bad("not a GGUF file (bad magic or truncated header)".into()));
        };
        if !(2..=3).contains(&version) {
            return Err(bad(format!("GGUF version {version} is not supported (2 or 3 are)")));
        }
        let mut metadata = BTreeMap::new();
        let mut spans = BTreeMap::new();
        for i in 0..n_metadata {
            let entry = (|| {
                let key = r.string()?;
                let start = r.at;
                Some((key, r.value(0)?, start..r.at))
            })();
            let Some((key, value, span)) = entry else {
                return Err(bad(format!("metadata entry {i} of {n_metadata} is malformed or truncated")));
            };
            spans.insert(key.clone(), span);
            metadata.insert(key, value);
        }
        let mut table = Vec::new();
        for i in 0..n_tensors {
            let entry = (|| {
                let name = r.string()?;
                let n_dims = r.u32()?;
                (n_dims <= 4).then_some(())?;
                let dims =
                    (0..n_dims).map(|_| r.u64().and_then(|d| usize::try_from(d).ok())).collect::<Option<Vec<_>>>()?;
                Some((name, dims, r.u32()?, r.u64()?))
            })();
            let Some(entry) = entry else {
                return Err(bad(format!("tensor entry {i} of {n_tensors} is malformed or truncated")));
            };
            table.push(entry);
        }
        let alignment = metadata.get("general.alignment").and_then(Value::as_u64).unwrap_or(32).max(1) as usize;
        let data_start = r.at.div_ceil(alignment) * alignment;
        let mut tensors = BTreeMap::new();
        for (name, dims, code, offset) in table {
            let ty = GgmlType::from_code(code).ok_or_else(|| {
                bad(format!("tensor {name} has ggml type {code}, which this reader cannot dequantise"))
            })?;
            let elements = dims.iter().try_fold(1usize, |acc, d| acc.checked_mul(*d));
            let (block, block_bytes) = ty.block();
            let len = elements
                .filter(|n| dims.first().is_some_and(|d| d % block == 0) && n % block == 0)
                .and_then(|n| (n / block).checked_mul(block_bytes));
            let start = usize::try_from(offset).ok().and_then(|o| o.checked_add(data_start));
            match (len, start) {
                (Some(len), Some(start)) if start.checked_add(len).is_some_and(|end| end <= bytes.len()) => {
                    tensors.insert(name, TensorInfo { dims, ty, start, len });
                }
                _ => return Err(bad(format!("tensor {name} {dims:?} {ty:?} does not fit in the file"))),
            }
        }
        Ok(Self { path: path.to_owned(), bytes, metadata, spans, tensors })
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A metadata value, or an error naming the missing key.
    pub fn get(&self, key: &str) -> Result<&Value> {
        self.metadata
            .get(key)
            .ok_or_else(|| Error::Weights { path: self.path.clone(), reason: format!("metadata has no {key}") })
    }

    /// A metadata integer.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        let value = self.get(key)?;
        value
            .as_u64()
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| self.bad(format!("{key} is not a count: {value:?}")))
    }

    /// A metadata number.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        let value = self.get(key)?;
        value.as_f64().ok_or_else(|| self.bad(format!("{key} is not a number: {value:?}")))
    }

    /// A metadata string.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        let value = self.get(key)?;
        value.as_str().ok_or_else(|| self.bad(format!("{key} is not a string")))
    }

    /// A metadata array of strings.
    pub fn get_strings(&self, key: &str) -> Result<Vec<&str>> {
        let values = self.get(key)?.as_array().ok_or_else(|| self.bad(format!("{key} is not an array")))?;
        values.iter().map(|v| v.as_str().ok_or_else(|| self.bad(format!("{key} has a non-string item")))).collect()
    }

    /// The tensor `name` as `f32` values in storage order (fastest-varying
    /// dimension last in row-major terms), checked to have `dims` (ggml order).
    pub fn tensor_f32(&self, name: &str, dims: &[usize]) -> Result<Vec<f32>> {
        let info = self.tensors.get(name).ok_or_else(|| self.bad(format!("no tensor {name}")))?;
        if info.dims != dims {
            return Err(self.bad(format!("tensor {name} has dims {:?}, expected {dims:?}", info.dims)));
        }
        Ok(dequantize(info.ty, &self.bytes[info.start..info.start + info.len]))
    }

    /// The tensor `name`'s type and encoded blocks, as stored.
    pub fn tensor_bytes(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.tensors.get(name).ok_or_else(|| self.bad(format!("no tensor {name}")))?;
        Ok((info, &self.bytes[info.start..info.start + info.len]))
    }

    /// The metadata entry `key` as it is encoded in the file (its type
    /// included), to copy into another file unchanged.
    pub fn raw_meta(&self, key: &str) -> Option<writer::Meta> {
        self.spans.get(key).map(|span| writer::Meta::Raw(self.bytes[span.clone()].to_vec()))
    }

    fn bad(&self, reason: String) -> Error {
        Error::Weights { path: self.path.clone(), reason }
    }
}

/// A bounds-checked reader over the header.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    fn string(&mut self) -> Option<String> {
        let len = usize::try_from(self.u64()?).ok()?;
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    /// One value; `depth` bounds nested arrays.
    fn value(&mut self, depth: usize) -> Option<Value> {
        let ty = self.u32()?;
        self.typed(ty, depth)
    }

    fn typed(&mut self, ty: u32, depth: usize) -> Option<Value> {
        Some(match ty {
            0 => Value::U64(u64::from(self.array::<1>()?[0])),
            1 => Value::I64(i64::from(self.array::<1>()?[0] as i8)),
            2 => Value::U64(u64::from(u16::from_le_bytes(self.array()?))),
            3 => Value::I64(i64::from(i16::from_le_bytes(self.array()?))),
            4 => Value::U64(u64::from(self.u32()?)),
            5 => Value::I64(i64::from(i32::from_le_bytes(self.array()?))),
            6 => Value::F64(f64::from(f32::from_le_bytes(self.array()?))),
            7 => Value::Bool(self.array::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 if depth < 4 => {
                let item = self.u32()?;
                let n = usize::try_from(self.u64()?).ok()?;
                // Each item takes at least one byte: a count beyond the file is damage.
                (n <= self.bytes.len() - self.at).then_some(())?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.typed(item, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.array()?)),
            12 => Value::F64(f64::from_le_bytes(self.array()?)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn damaged_files_are_errors_not_panics() {
        let path = Path::new("x.gguf");
        assert!(Gguf::parse(path, b"GGML".to_vec()).is_err());
        let mut header = b"GGUF".to_vec();
        header.extend(3u32.to_le_bytes());
        header.extend(1u64.to_le_bytes());
        header.extend(u64::MAX.to_le_bytes());
        assert!(Gguf::parse(path, header.clone()).is_err());
        // A string length beyond the file.
        let mut file = b"GGUF".to_vec();
        file.extend(3u32.to_le_bytes());
        file.extend(0u64.to_le_bytes());
        file.extend(1u64.to_le_bytes());
        file.extend(u64::MAX.to_le_bytes());
        let err = Gguf::parse(path, file).unwrap_err().to_string();
        assert!(err.contains("metadata entry 0"), "{err}");
    }
}
