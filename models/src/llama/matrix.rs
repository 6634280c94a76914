//! The weight matrices of the fused path: rows `[out, in]`, stacked from
//! parts (Q, K and V; gate and up), each part either `f32` or the GGUF
//! blocks as stored (Q4_K, Q6_K, Q8_0, …).
//!
//! Kept as blocks, a part is read as it is stored: for a few rows of `x`
//! (decoding), each row of `x` is quantised to 8 bits once and every weight
//! row's blocks are dotted with it by the integer kernels of
//! `gguf::dot`; for a prompt, the blocks are dequantised one tile of rows
//! at a time into a buffer that stays in cache, then multiplied like the
//! `f32` rows. Either way the weights' bytes are read once per product (a
//! 4-bit model a seventh of the `f32` traffic) and a model that would take
//! GBs as `f32` fits.
//!
//! ```text
//!  x [s, in] ─┬─ part f32    [r₁, in] ──── matmul ──────────────────▶ y[:, 0..r₁]
//!             └─ part blocks [r₂, in] ─┬─ s ≤ DOT_ROWS: x rows → Q8 ─ integer dots per row ─▶ y[:, r₁..]
//!                                      └─ else, per thread: tiles of TILE rows
//!                                         ─ dequantise ─ matmul ────▶ y[:, r₁..r₁ + r₂]
//! ```

use std::ops::Range;

use ndarray::{Array2, ArrayView2, Axis, s};
use rayon::prelude::*;

use crate::gguf::dot::{Kernel, Q8Row, kernel, packed_kernel};
use crate::gguf::packed::PackedKernel;
use crate::gguf::{GgmlType, dequantize_into, packed};
use crate::matmul::matmul;

/// Rows dequantised at a time: 32 rows of 576–4,096 `f32` stay in L2.
const TILE: usize = 32;

/// Rows of `x` up to which block parts are multiplied by the integer
/// kernels; above, a dequantised tile is reused by every row of `x`.
const DOT_ROWS: usize = 4;

/// One part of a stacked matrix.
pub(crate) enum Part {
    F32(Array2<f32>),
    /// `rows` rows of `cols` values as whole blocks of `ty`, row after row:
    /// GGUF's layout, or repacked for the decoding kernels (`packed`, see
    /// `gguf::packed`).
    Blocks {
        ty: GgmlType,
        rows: usize,
        cols: usize,
        data: Vec<u8>,
        packed: bool,
    },
}

impl Part {
    /// `rows` rows of GGUF blocks, repacked where the type has packed kernels.
    pub(crate) fn blocks(ty: GgmlType, rows: usize, cols: usize, data: Vec<u8>) -> Self {
        if packed::packable(ty) && cols.is_multiple_of(32) {
            let data = packed::pack(ty, &data, rows, cols);
            Part::Blocks { ty, rows, cols, data, packed: true }
        } else {
            Part::Blocks { ty, rows, cols, data, packed: false }
        }
    }

    /// The values of `rows` (a part of blocks), appended to `out`.
    fn dequantize_rows(&self, rows: Range<usize>, out: &mut Vec<f32>) {
        if let Part::Blocks { ty, cols, data, packed, .. } = self {
            let row_bytes = data.len() / self.rows();
            let bytes = &data[rows.start * row_bytes..rows.end * row_bytes];
            if *packed { packed::dequantize(*ty, bytes, *cols, out) } else { dequantize_into(*ty, bytes, out) }
        }
    }

    fn rows(&self) -> usize {
        match self {
            Part::F32(m) => m.nrows(),
            Part::Blocks { rows, .. } => *rows,
        }
    }

    fn to_f32(&self) -> Array2<f32> {
        match self {
            Part::F32(m) => m.clone(),
            Part::Blocks { rows, cols, .. } => {
                let mut values = Vec::with_capacity(rows * cols);
                self.dequantize_rows(0..*rows, &mut values);
                Array2::from_shape_vec((*rows, *cols), values).expect("rows × cols values")
            }
        }
    }

    /// Whether the part is multiplied by integer kernels (blocks of a type with one).
    fn has_kernel(&self) -> bool {
        match self {
            Part::F32(_) => false,
            Part::Blocks { ty, packed: true, .. } => packed_kernel(*ty).is_some(),
            Part::Blocks { ty, .. } => kernel(*ty).is_some(),
        }
    }

    /// The integer dot of a row of blocks with `passes` of quantised
    /// activations, where the part has a kernel.
    fn dot(&self) -> Option<Dot> {
        match self {
            Part::F32(_) => None,
            Part::Blocks { ty, packed: true, .. } => packed_kernel(*ty).map(Dot::Packed),
            Part::Blocks { ty, .. } => kernel(*ty).map(Dot::Rows),
        }
    }

    /// Bytes the part takes in memory.
    fn bytes(&self) -> usize {
        match self {
            Part::F32(m) => m.len() * 4,
            Part::Blocks { data, .. } => data.len(),
        }
    }
}

/// A part's integer kernel.
#[derive(Clone, Copy)]
enum Dot {
    Packed(PackedKernel),
    Rows(Kernel),
}

impl Dot {
    /// One row of blocks dotted with every pass of the quantised activations.
    #[inline]
    fn row(self, w: &[u8], passes: &[Q8Row]) -> f32 {
        match self {
            Dot::Packed(kernel) => kernel(w, passes),
            Dot::Rows(kernel) => passes.iter().map(|x| kernel(w, x)).sum(),
        }
    }
}

/// Rows stacked from parts.
pub(crate) struct Matrix {
    parts: Vec<Part>,
    /// Passes of activation quantisation in the integer products (2: each
    /// row of `x` and its quantisation error, for products read directly,
    /// such as the logits).
    passes: usize,
}

impl Matrix {
    pub(crate) fn new(parts: Vec<Part>) -> Self {
        Self { parts, passes: 1 }
    }

    /// This matrix, its integer products taking `x` in two passes (its 8-bit
    /// quantisation, then that one's error): close to `f32` activations at
    /// twice the integer work and the same weight traffic.
    pub(crate) fn precise(mut self) -> Self {
        self.passes = 2;
        self
    }

    /// All rows.
    pub(crate) fn rows(&self) -> usize {
        self.parts.iter().map(Part::rows).sum()
    }

    /// Bytes the matrix takes in memory.
    pub(crate) fn bytes(&self) -> usize {
        self.parts.iter().map(Part::bytes).sum()
    }

    /// The rows as one `f32` matrix, replacing the parts (what a LoRA
    /// update is added to).
    pub(crate) fn as_f32_mut(&mut self) -> &mut Array2<f32> {
        if !matches!(self.parts.as_slice(), [Part::F32(_)]) {
            let parts: Vec<Array2<f32>> = self.parts.iter().map(Part::to_f32).collect();
            let views: Vec<ArrayView2<f32>> = parts.iter().map(|p| p.view()).collect();
            let stacked = ndarray::concatenate(Axis(0), &views).expect("parts of one width");
            self.parts = vec![Part::F32(stacked)];
        }
        match &mut self.parts[0] {
            Part::F32(m) => m,
            Part::Blocks { .. } => unreachable!("just made f32"),
        }
    }

    /// `x` quantised for this matrix's integer products (empty when no part
    /// has a kernel): what [`rows_into`](Self::rows_into) takes.
    pub(crate) fn quantized(&self, x: &[f32]) -> Vec<Q8Row> {
        if self.parts.iter().any(Part::has_kernel) { Q8Row::quantize_residual(x, self.passes) } else { Vec::new() }
    }

    /// Rows `rows` of `x · selfᵀ` for one row `x` (a decoding step's share of
    /// a product) into `out`, single-threaded: parts with a kernel by integer
    /// dots with `q` (`self.quantized(x)`), the others in `f32` (a row of
    /// blocks dequantised at a time).
    pub(crate) fn rows_into(&self, rows: Range<usize>, x: &[f32], q: &[Q8Row], out: &mut [f32]) {
        debug_assert_eq!(rows.len(), out.len());
        let mut start = 0;
        let mut buffer = Vec::new();
        for part in &self.parts {
            let n = part.rows();
            let (from, to) = (rows.start.max(start), rows.end.min(start + n));
            if from < to {
                let out = &mut out[from - rows.start..to - rows.start];
                let local = from - start..to - start;
                match part {
                    Part::F32(w) => {
                        for (o, r) in out.iter_mut().zip(local) {
                            *o = super::fused::dot_f32(w.row(r).as_slice().expect("standard layout"), x);
                        }
                    }
                    Part::Blocks { data, .. } if part.has_kernel() && !q.is_empty() => {
                        let dot = part.dot().expect("checked");
                        let row_bytes = data.len() / n;
                        for (o, r) in out.iter_mut().zip(local) {
                            *o = dot.row(&data[r * row_bytes..][..row_bytes], q);
                        }
                    }
                    Part::Blocks { .. } => {
                        for (o, r) in out.iter_mut().zip(local) {
                            buffer.clear();
                            part.dequantize_rows(r..r + 1, &mut buffer);
                            *o = super::fused::dot_f32(&buffer, x);
                        }
                    }
                }
            }
            start += n;
        }
    }

    /// `x · selfᵀ` for `x` `[s, in]`: `[s, rows]`. Each part's rows are split
    /// into one block per rayon thread, each block one single-threaded
    /// product written in place (for blocks, tile by tile).
    pub(crate) fn product(&self, x: &Array2<f32>) -> Array2<f32> {
        let mut y = Array2::<f32>::zeros((x.nrows(), self.rows()));
        let threads = rayon::current_num_threads().max(1);
        let few = x.nrows() <= DOT_ROWS;
        let quantized: Vec<Vec<Q8Row>> = if few && self.parts.iter().any(Part::has_kernel) {
            let x = x.as_standard_layout();
            x.rows()
                .into_iter()
                .map(|row| Q8Row::quantize_residual(row.as_slice().expect("standard layout"), self.passes))
                .collect()
        } else {
            Vec::new()
        };
        let mut start = 0;
        for part in &self.parts {
            let rows = part.rows();
            let block = rows.div_ceil(threads).max(1);
            let mut y_part = y.slice_mut(s![.., start..start + rows]);
            let y_blocks: Vec<_> = y_part.axis_chunks_iter_mut(Axis(1), block).collect();
            match part {
                Part::F32(w) => {
                    let w_blocks: Vec<ArrayView2<f32>> = w.axis_chunks_iter(Axis(0), block).collect();
                    w_blocks.into_par_iter().zip(y_blocks).for_each(|(w, y)| matmul(1.0, x.view(), w.t(), 0.0, y));
                }
                Part::Blocks { data, .. } if !quantized.is_empty() && part.has_kernel() => {
                    let dot = part.dot().expect("checked");
                    let row_bytes = data.len() / rows;
                    y_blocks.into_par_iter().enumerate().for_each(|(i, mut y)| {
                        let first = i * block;
                        for r in 0..y.ncols() {
                            let w = &data[(first + r) * row_bytes..][..row_bytes];
                            for (s, passes) in quantized.iter().enumerate() {
                                y[[s, r]] = dot.row(w, passes);
                            }
                        }
                    });
                }
                Part::Blocks { cols, .. } => {
                    y_blocks.into_par_iter().enumerate().for_each(|(i, mut y)| {
                        let first = i * block;
                        let mut buffer = Vec::with_capacity(TILE * cols);
                        let n = y.ncols();
                        for tile in (0..n).step_by(TILE) {
                            let end = (tile + TILE).min(n);
                            buffer.clear();
                            part.dequantize_rows(first + tile..first + end, &mut buffer);
                            let w = ArrayView2::from_shape((end - tile, *cols), &buffer).expect("tile rows × cols");
                            matmul(1.0, x.view(), w.t(), 0.0, y.slice_mut(s![.., tile..end]));
                        }
                    });
                }
            }
            start += rows;
        }
        y
    }
}
