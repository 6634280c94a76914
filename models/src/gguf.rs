//! A reader for GGUF files (llama.cpp's model format, version 2 and 3):
//! the metadata key/values, the tensor table, and the tensors dequantised to
//! `f32` (F32, F16, Q8_0, Q4_0, Q4_1).
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

/// The element types of ggml that this reader can dequantise.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q8_0,
}

impl GgmlType {
    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            _ => return None,
        })
    }

    /// `(elements per block, bytes per block)`.
    fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q8_0 => (32, 34),
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
        for i in 0..n_metadata {
            let entry = (|| Some((r.string()?, r.value(0)?)))();
            let Some((key, value)) = entry else {
                return Err(bad(format!("metadata entry {i} of {n_metadata} is malformed or truncated")));
            };
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
        Ok(Self { path: path.to_owned(), bytes, metadata, tensors })
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

    fn bad(&self, reason: String) -> Error {
        Error::Weights { path: self.path.clone(), reason }
    }
}

/// Dequantises whole blocks of `ty` (`data.len()` a multiple of the block size).
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    let (block, block_bytes) = ty.block();
    let mut out = Vec::with_capacity(data.len() / block_bytes * block);
    for b in data.chunks_exact(block_bytes) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16(b[0], b[1])),
            GgmlType::Q8_0 => {
                let d = f16(b[0], b[1]);
                out.extend(b[2..34].iter().map(|&q| d * f32::from(q as i8)));
            }
            GgmlType::Q4_0 => {
                // Low nibbles are elements 0..16, high nibbles 16..32; stored offset by 8.
                let d = f16(b[0], b[1]);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| d * (f32::from(q & 0x0f) - 8.0)));
                out.extend(qs.iter().map(|&q| d * (f32::from(q >> 4) - 8.0)));
            }
            GgmlType::Q4_1 => {
                // x = d·q + m, with the same nibble order as Q4_0.
                let (d, m) = (f16(b[0], b[1]), f16(b[2], b[3]));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| d * f32::from(q & 0x0f) + m));
                out.extend(qs.iter().map(|&q| d * f32::from(q >> 4) + m));
            }
        }
    }
    out
}

/// IEEE half (little-endian bytes) to `f32`.
fn f16(lo: u8, hi: u8) -> f32 {
    let h = u16::from_le_bytes([lo, hi]);
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let mant = u32::from(h & 0x3ff);
    let bits = match (exp, mant) {
        (0, 0) => sign,
        // Subnormal: value = mant · 2^-24.
        (0, _) => return if sign != 0 { -(mant as f32) } else { mant as f32 } * (1.0 / 16_777_216.0),
        (0x1f, _) => sign | 0x7f80_0000 | (mant << 13),
        _ => sign | ((exp + 112) << 23) | (mant << 13),
    };
    f32::from_bits(bits)
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
    fn half_floats_convert() {
        for (bits, value) in
            [(0x3c00u16, 1.0f32), (0xc000, -2.0), (0x3555, 0.333_251_95), (0x0001, 5.960_464_5e-8), (0, 0.0)]
        {
            let [lo, hi] = bits.to_le_bytes();
            assert_eq!(f16(lo, hi), value, "{bits:#x}");
        }
        assert!(f16(0x00, 0x7c).is_infinite());
    }

    #[test]
    fn q8_0_and_q4_1_blocks_dequantise() {
        // Q8_0: d = 0.5, q = -16..16.
        let mut q8 = vec![0x00, 0x38];
        q8.extend((0..32).map(|i| (i as i8 - 16) as u8));
        let x = dequantize(GgmlType::Q8_0, &q8);
        assert_eq!(x.len(), 32);
        assert_eq!(x[0], -8.0);
        assert_eq!(x[31], 7.5);
        // Q4_1: d = 1, m = -1; byte j holds element j (low) and j + 16 (high).
        let mut q4 = vec![0x00, 0x3c, 0x00, 0xbc];
        q4.extend((0..16).map(|j| (j as u8) | ((15 - j as u8) << 4)));
        let x = dequantize(GgmlType::Q4_1, &q4);
        assert_eq!(x[0], -1.0);
        assert_eq!(x[15], 14.0);
        assert_eq!(x[16], 14.0);
        assert_eq!(x[31], -1.0);
    }

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
