//! Q4_0, Q4_1 and Q8_0 rows repacked for decoding.
//!
//! GGUF interleaves each block's `f16` scale (and minimum) with its 16 bytes
//! of nibbles, so a kernel converts two scalars per block and splits every
//! block's nibbles apart. Repacked, a row holds its scales, then (Q4_1) its
//! minimums, as `f16` arrays, then its 4-bit values two blocks to a run of 32
//! bytes: block `2i` in the low nibbles, `2i + 1` in the high, each in
//! element order. Eight blocks' scales then convert in one instruction, their
//! offsets are one vector multiply-add against the activations' block sums,
//! and a pair of blocks unpacks with a shift and two masks. The bytes are
//! GGUF's (18 or 20 per block), except that the scale (and minimum) arrays
//! are padded with zeros to a whole number of groups of eight, so the kernels
//! read every group alike (18 blocks: 24 scales, 3% more bytes); an odd last
//! block keeps GGUF's 16-byte layout. Q8_0 rows hold their padded scales, then
//! each block's 32 `i8`s.
//!
//! ```text
//!  GGUF:     [d m q₀…q₁₅] [d m q₀…q₁₅] [d m q₀…q₁₅] …           (q: two 4-bit values per byte)
//!  packed:   [d d d … 0 0] [m m m … 0 0] [b₀|b₁ ×32] [b₂|b₃ ×32] … [odd last block as GGUF]
//! ```

use super::dot::Q8Row;
use super::quants::{GgmlType, f16};

/// Whether rows of `ty` repack (Q4_0, Q4_1, Q8_0).
pub fn packable(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
}

/// A dot product of one packed row with `x` given as one or two passes of
/// quantised activations (their sum stands for `x`, see `Q8Row::quantize_residual`).
pub type PackedKernel = fn(&[u8], &[Q8Row]) -> f32;

/// Whether `ty`'s blocks carry a minimum (Q4_1).
fn has_min(ty: GgmlType) -> bool {
    ty == GgmlType::Q4_1
}

/// The 32 4-bit values of a GGUF block's 16 bytes, in element order.
fn values(qs: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for (i, byte) in qs[..16].iter().enumerate() {
        q[i] = byte & 0x0f;
        q[i + 16] = byte >> 4;
    }
    q
}

/// `rows` rows of `cols` values of `ty` (GGUF's blocks, row after row) repacked.
pub fn pack(ty: GgmlType, data: &[u8], rows: usize, cols: usize) -> Vec<u8> {
    assert!(packable(ty), "{} does not repack", ty.name());
    let (_, block_bytes) = ty.block();
    let nb = cols / 32;
    let head = if ty == GgmlType::Q8_0 { 2 } else { block_bytes - 16 };
    let mut out = Vec::with_capacity(rows * row_bytes(ty, cols));
    for row in data.chunks_exact(nb * block_bytes).take(rows) {
        let blocks: Vec<&[u8]> = row.chunks_exact(block_bytes).collect();
        for field in 0..head / 2 {
            blocks.iter().for_each(|b| out.extend_from_slice(&b[2 * field..2 * field + 2]));
            out.resize(out.len() + 2 * (nb.next_multiple_of(8) - nb), 0);
        }
        if ty == GgmlType::Q8_0 {
            blocks.iter().for_each(|b| out.extend_from_slice(&b[head..]));
            continue;
        }
        for pair in blocks.chunks(2) {
            match pair {
                [a, b] => {
                    let (a, b) = (values(&a[head..]), values(&b[head..]));
                    out.extend(a.iter().zip(b).map(|(lo, hi)| lo | (hi << 4)));
                }
                [a] => out.extend_from_slice(&a[head..]),
                _ => unreachable!("chunks of two"),
            }
        }
    }
    out
}

/// Bytes of a packed row of `cols` values of `ty`.
pub fn row_bytes(ty: GgmlType, cols: usize) -> usize {
    let (_, block_bytes) = ty.block();
    let nb = cols / 32;
    let heads = if ty == GgmlType::Q8_0 { 1 } else { (block_bytes - 16) / 2 };
    heads * 2 * (nb.next_multiple_of(8) - nb) + nb * block_bytes
}

/// The values of packed rows (whole rows of `cols`), appended to `out`:
/// compiled for this CPU's SIMD (a short prompt's product dequantises every
/// weight once, so this loop is most of its time).
pub fn dequantize(ty: GgmlType, data: &[u8], cols: usize, out: &mut Vec<f32>) {
    struct Rows<'a> {
        ty: GgmlType,
        data: &'a [u8],
        cols: usize,
        out: &'a mut Vec<f32>,
    }
    impl pulp::WithSimd for Rows<'_> {
        type Output = ();

        #[inline(always)]
        fn with_simd<S: pulp::Simd>(self, _: S) {
            dequantize_rows(self.ty, self.data, self.cols, self.out);
        }
    }
    pulp::Arch::new().dispatch(Rows { ty, data, cols, out });
}

#[inline(always)]
fn dequantize_rows(ty: GgmlType, data: &[u8], cols: usize, out: &mut Vec<f32>) {
    let nb = cols / 32;
    for row in data.chunks_exact(row_bytes(ty, cols)) {
        let row = Row::new(ty, row, nb);
        let start = out.len();
        out.resize(start + 32 * nb, 0.0);
        // Fixed-size blocks, so that the loops vectorise.
        for (b, dst) in out[start..].chunks_exact_mut(32).enumerate() {
            let dst: &mut [f32; 32] = dst.try_into().expect("32 values");
            let (d, m) = row.scales(b);
            if ty == GgmlType::Q8_0 {
                let q: &[u8; 32] = row.qs[32 * b..][..32].try_into().expect("32 bytes");
                for i in 0..32 {
                    dst[i] = d * f32::from(q[i] as i8);
                }
            } else if b % 2 == 1 || b + 1 < nb {
                let run: &[u8; 32] = row.qs[16 * (b - b % 2)..][..32].try_into().expect("32 bytes");
                let shift = 4 * (b % 2) as u32;
                for i in 0..32 {
                    dst[i] = d * f32::from((run[i] >> shift) & 0x0f) + m;
                }
            } else {
                let q: &[u8; 16] = row.qs[16 * b..][..16].try_into().expect("16 bytes");
                for i in 0..16 {
                    dst[i] = d * f32::from(q[i] & 0x0f) + m;
                    dst[i + 16] = d * f32::from(q[i] >> 4) + m;
                }
            }
        }
    }
}

/// One packed row's parts.
struct Row<'a> {
    ty: GgmlType,
    d: &'a [u8],
    m: &'a [u8],
    qs: &'a [u8],
    nb: usize,
}

impl<'a> Row<'a> {
    #[inline(always)]
    fn new(ty: GgmlType, row: &'a [u8], nb: usize) -> Self {
        let padded = nb.next_multiple_of(8);
        let (d, rest) = row.split_at(2 * padded);
        let (m, qs) = if has_min(ty) { rest.split_at(2 * padded) } else { (&rest[..0], rest) };
        Self { ty, d, m, qs, nb }
    }

    /// Block `b`'s value = `d·q + m`: Q4_1's minimum, Q4_0's `−8·d`, Q8_0's 0.
    #[inline(always)]
    fn scales(&self, b: usize) -> (f32, f32) {
        let d = f16(self.d[2 * b], self.d[2 * b + 1]);
        let m = match self.ty {
            GgmlType::Q4_1 => f16(self.m[2 * b], self.m[2 * b + 1]),
            GgmlType::Q4_0 => -8.0 * d,
            _ => 0.0,
        };
        (d, m)
    }

    /// Block `b`'s quantised values in element order.
    fn block(&self, b: usize) -> [i32; 32] {
        let mut q = [0i32; 32];
        if self.ty == GgmlType::Q8_0 {
            for (q, &byte) in q.iter_mut().zip(&self.qs[32 * b..][..32]) {
                *q = i32::from(byte as i8);
            }
        } else if b % 2 == 1 || b + 1 < self.nb {
            let run = &self.qs[16 * (b - b % 2)..][..32];
            for (q, byte) in q.iter_mut().zip(run) {
                *q = i32::from(if b % 2 == 0 { byte & 0x0f } else { byte >> 4 });
            }
        } else {
            for (q, v) in q.iter_mut().zip(values(&self.qs[16 * b..])) {
                *q = i32::from(v);
            }
        }
        q
    }
}

/// The plain loop over a packed row: integer sums per block, as the SIMD
/// kernels (`dot.rs`) compute them.
pub(super) fn dot_scalar(ty: GgmlType, row: &[u8], passes: &[Q8Row]) -> f32 {
    let mut sum = 0.0;
    for x in passes {
        let row = Row::new(ty, row, x.len() / 32);
        for b in 0..row.nb {
            let (d, m) = row.scales(b);
            let dot: i32 = row.block(b).iter().zip(x.block(b)).map(|(&q, &x)| q * i32::from(x)).sum();
            sum += x.scales[b] * (d * dot as f32 + m * x.sum(b) as f32);
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::dequantize as dequantize_gguf;
    use twinflow_schemas::rng::SeededRng;

    #[test]
    fn packed_rows_hold_the_same_values() {
        let mut rng = SeededRng::new(3);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let (_, block_bytes) = ty.block();
            // 9 blocks: four pairs and an odd last block.
            let (rows, cols) = (3, 9 * 32);
            let mut data: Vec<u8> = (0..rows * 9 * block_bytes).map(|_| rng.below(256) as u8).collect();
            for block in data.chunks_exact_mut(block_bytes) {
                let head = if ty == GgmlType::Q8_0 { 2 } else { block_bytes - 16 };
                for at in (0..head).step_by(2) {
                    block[at..at + 2].copy_from_slice(&((14u16 << 10) | rng.below(1024) as u16).to_le_bytes());
                }
            }
            let packed = pack(ty, &data, rows, cols);
            assert_eq!(packed.len(), rows * row_bytes(ty, cols));
            let mut values = Vec::new();
            super::dequantize(ty, &packed, cols, &mut values);
            assert_eq!(values, dequantize_gguf(ty, &data), "{}", ty.name());
        }
    }
}
