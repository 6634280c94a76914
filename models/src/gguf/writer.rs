//! Writes GGUF version 3 files: what the twin's export produces and what
//! tests build small models and quantised tensors with.
//!
//! Metadata keep the width llama.cpp expects of each key (`block_count` is a
//! `u32`, `rope.freq_base` an `f32`): the loaders of other runtimes check it.

use std::path::Path;

use super::GgmlType;
use crate::{Error, Result};

/// One metadata value, with its GGUF type.
#[derive(Clone, Debug, PartialEq)]
pub enum Meta {
    U32(u32),
    I32(i32),
    U64(u64),
    F32(f32),
    Bool(bool),
    String(String),
    Strings(Vec<String>),
    I32s(Vec<i32>),
    F32s(Vec<f32>),
    /// An entry copied from another file: its type code and value bytes.
    Raw(Vec<u8>),
}

impl Meta {
    fn encode(&self, out: &mut Vec<u8>) {
        let string = |out: &mut Vec<u8>, s: &str| {
            out.extend((s.len() as u64).to_le_bytes());
            out.extend(s.as_bytes());
        };
        match self {
            Meta::U32(v) => {
                out.extend(4u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::I32(v) => {
                out.extend(5u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::F32(v) => {
                out.extend(6u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::Bool(v) => {
                out.extend(7u32.to_le_bytes());
                out.push(u8::from(*v));
            }
            Meta::String(s) => {
                out.extend(8u32.to_le_bytes());
                string(out, s);
            }
            Meta::U64(v) => {
                out.extend(10u32.to_le_bytes());
                out.extend(v.to_le_bytes());
            }
            Meta::Strings(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                for s in items {
                    string(out, s);
                }
            }
            Meta::I32s(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(5u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| out.extend(v.to_le_bytes()));
            }
            Meta::F32s(items) => {
                out.extend(9u32.to_le_bytes());
                out.extend(6u32.to_le_bytes());
                out.extend((items.len() as u64).to_le_bytes());
                items.iter().for_each(|v| out.extend(v.to_le_bytes()));
            }
            Meta::Raw(bytes) => out.extend(bytes),
        }
    }
}

/// A GGUF file being assembled in memory.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Meta)>,
    /// Name, ggml dims (fastest-varying first), type, data.
    tensors: Vec<(String, Vec<usize>, GgmlType, Vec<u8>)>,
}

/// Tensor data alignment (`general.alignment`'s default).
const ALIGNMENT: usize = 32;

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (replacing an earlier value, keeping its place).
    pub fn meta(&mut self, key: &str, value: Meta) -> &mut Self {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => self.metadata.push((key.to_owned(), value)),
        }
        self
    }

    /// Adds a tensor of `ty` from its encoded blocks; `dims` in ggml order
    /// (a `[rows, cols]` matrix is `[cols, rows]`). Fails when the bytes do
    /// not hold exactly `dims` of `ty`.
    pub fn tensor(&mut self, name: &str, dims: &[usize], ty: GgmlType, data: Vec<u8>) -> Result<&mut Self> {
        let (block, block_bytes) = ty.block();
        let elements: usize = dims.iter().product();
        let fits = dims.first().is_some_and(|d| d % block == 0) && elements / block * block_bytes == data.len();
        if !fits || dims.len() > 4 {
            return Err(Error::Weights {
                path: name.into(),
                reason: format!("{} bytes are not a {} tensor of {dims:?}", data.len(), ty.name()),
            });
        }
        self.tensors.push((name.to_owned(), dims.to_vec(), ty, data));
        Ok(self)
    }

    /// Adds an `f32` tensor.
    pub fn tensor_f32(&mut self, name: &str, dims: &[usize], values: &[f32]) -> Result<&mut Self> {
        self.tensor(name, dims, GgmlType::F32, values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }

    /// The whole file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.metadata.len() as u64).to_le_bytes());
        for (key, value) in &self.metadata {
            out.extend((key.len() as u64).to_le_bytes());
            out.extend(key.as_bytes());
            value.encode(&mut out);
        }
        let mut offset = 0usize;
        for (name, dims, ty, data) in &self.tensors {
            out.extend((name.len() as u64).to_le_bytes());
            out.extend(name.as_bytes());
            out.extend((dims.len() as u32).to_le_bytes());
            dims.iter().for_each(|d| out.extend((*d as u64).to_le_bytes()));
            out.extend(ty.code().to_le_bytes());
            out.extend((offset as u64).to_le_bytes());
            offset = (offset + data.len()).div_ceil(ALIGNMENT) * ALIGNMENT;
        }
        for (_, _, _, data) in &self.tensors {
            out.resize(out.len().div_ceil(ALIGNMENT) * ALIGNMENT, 0);
            out.extend(data);
        }
        out
    }

    /// Writes the file to `path` (through a temporary file beside it, renamed into place).
    pub fn write(&self, path: &Path) -> Result<()> {
        let partial = path.with_extension("gguf.partial");
        std::fs::write(&partial, self.to_bytes()).map_err(|e| Error::io(&partial, e))?;
        std::fs::rename(&partial, path).map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Gguf, Value};
    use super::*;

    #[test]
    fn written_files_read_back() {
        let mut w = GgufWriter::new();
        w.meta("general.architecture", Meta::String("llama".into()))
            .meta("llama.block_count", Meta::U32(2))
            .meta("llama.rope.freq_base", Meta::F32(10_000.0))
            .meta("tokenizer.ggml.tokens", Meta::Strings(vec!["a".into(), "b".into()]))
            .meta("llama.block_count", Meta::U32(3));
        w.tensor_f32("x", &[3], &[1.0, 2.0, 3.0]).unwrap();
        w.tensor("q", &[32, 2], GgmlType::Q8_0, vec![0; 68]).unwrap();
        assert!(w.tensor("bad", &[32], GgmlType::Q8_0, vec![0; 33]).is_err());
        let gguf = Gguf::parse(Path::new("w.gguf"), w.to_bytes()).unwrap();
        assert_eq!(gguf.get_usize("llama.block_count").unwrap(), 3);
        assert_eq!(gguf.get_f64("llama.rope.freq_base").unwrap(), 10_000.0);
        assert_eq!(gguf.get_strings("tokenizer.ggml.tokens").unwrap(), ["a", "b"]);
        assert_eq!(gguf.metadata.len(), 4);
        assert_eq!(gguf.tensor_f32("x", &[3]).unwrap(), [1.0, 2.0, 3.0]);
        assert_eq!(gguf.tensor_f32("q", &[32, 2]).unwrap(), vec![0.0; 64]);
        assert!(matches!(gguf.get("general.architecture"), Ok(Value::String(_))));
    }
}
