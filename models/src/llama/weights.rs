//! The network's tensors as both forward passes read them (`Weights`).

use super::{LlamaConfig, matrix};
use crate::gguf::{GgmlType, Gguf};
use crate::{Error, Result};

/// Reads the tensors of a network for its architecture, in the layout both
/// forward passes use: rows `[out, in]`, and Q and K (weights, biases,
/// QK-norm gains) permuted so that RoPE rotates adjacent pairs everywhere.
pub(crate) struct Weights<'a> {
    gguf: &'a Gguf,
    config: &'a LlamaConfig,
}

impl<'a> Weights<'a> {
    pub(crate) fn new(gguf: &'a Gguf, config: &'a LlamaConfig) -> Self {
        Self { gguf, config }
    }

    /// `blk.<layer>.<name>.weight` as `[rows, cols]` row-major.
    pub(crate) fn matrix(&self, layer: usize, name: &str, rows: usize, cols: usize) -> Result<Vec<f32>> {
        let values = self.gguf.tensor_f32(&format!("blk.{layer}.{name}.weight"), &[cols, rows])?;
        Ok(self.rotary_rows(name, values, cols))
    }

    /// [`Self::matrix`] for the fused path: with `keep_blocks`, a tensor of
    /// a block type stays as its blocks (rows reordered as `matrix` does).
    pub(crate) fn part(
        &self,
        layer: usize,
        name: &str,
        rows: usize,
        cols: usize,
        keep_blocks: bool,
    ) -> Result<matrix::Part> {
        let tensor = format!("blk.{layer}.{name}.weight");
        let (info, bytes) = self.gguf.tensor_bytes(&tensor)?;
        let blocks = !matches!(info.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16);
        if !keep_blocks || !blocks {
            let values = self.matrix(layer, name, rows, cols)?;
            return Ok(matrix::Part::F32(ndarray::Array2::from_shape_vec((rows, cols), values).expect("rows × cols")));
        }
        if info.dims != [cols, rows] {
            return Err(Error::Weights {
                path: self.gguf.path().to_owned(),
                reason: format!("tensor {tensor} has dims {:?}, expected {:?}", info.dims, [cols, rows]),
            });
        }
        // Whole rows of blocks: reordering rows moves their bytes.
        let row_bytes = bytes.len() / rows;
        let data = self.rotary_rows(name, bytes.to_vec(), row_bytes);
        Ok(matrix::Part::blocks(info.ty, rows, cols, data))
    }

    /// `blk.<layer>.<name>.<suffix>` of `len` values.
    pub(crate) fn vector(&self, layer: usize, name: &str, suffix: &str, len: usize) -> Result<Vec<f32>> {
        let values = self.gguf.tensor_f32(&format!("blk.{layer}.{name}.{suffix}"), &[len])?;
        Ok(self.rotary_rows(name, values, 1))
    }

    /// Q, K, V biases of `layer`, where the architecture has them.
    pub(crate) fn qkv_bias(&self, layer: usize) -> Result<Option<[Vec<f32>; 3]>> {
        if !self.config.qkv_bias {
            return Ok(None);
        }
        let (q, kv) = (self.config.q_dim(), self.config.kv_dim());
        Ok(Some([
            self.vector(layer, "attn_q", "bias", q)?,
            self.vector(layer, "attn_k", "bias", kv)?,
            self.vector(layer, "attn_v", "bias", kv)?,
        ]))
    }

    /// QK-norm gains `[head_dim]` of `layer`, where the architecture has them.
    pub(crate) fn qk_norm(&self, layer: usize) -> Result<Option<[Vec<f32>; 2]>> {
        if !self.config.qk_norm {
            return Ok(None);
        }
        let d = self.config.head_dim;
        Ok(Some([self.vector(layer, "attn_q_norm", "weight", d)?, self.vector(layer, "attn_k_norm", "weight", d)?]))
    }

    /// For halves-rotating architectures, reorders the rows of a Q or K
    /// tensor within each head so that element `i` of a half goes to `2i`
    /// and element `i + d/2` to `2i + 1`: adjacent-pair RoPE on the result is
    /// the model's own RoPE, and Q·K is unchanged (both move alike).
    fn rotary_rows<T: Copy + Default>(&self, name: &str, values: Vec<T>, cols: usize) -> Vec<T> {
        let rotated = matches!(name, "attn_q" | "attn_k" | "attn_q_norm" | "attn_k_norm");
        if !rotated || !self.config.architecture.rotates_halves() {
            return values;
        }
        let d = self.config.head_dim;
        let mut out = vec![T::default(); values.len()];
        for (from, to) in values.chunks_exact(d * cols).zip(out.chunks_exact_mut(d * cols)) {
            for i in 0..d / 2 {
                to[2 * i * cols..(2 * i + 1) * cols].copy_from_slice(&from[i * cols..(i + 1) * cols]);
                to[(2 * i + 1) * cols..(2 * i + 2) * cols]
                    .copy_from_slice(&from[(i + d / 2) * cols..(i + d / 2 + 1) * cols]);
            }
        }
        out
    }
}
