//! Dot products of GGUF weight rows, as stored, with activations quantised
//! to 8 bits: what a decode step's matrix-vector products compute, reading
//! a 4-bit model's ~0.6 bytes per weight instead of 4.
//!
//! A row of activations is quantised once per product ([`Q8Row`]): per
//! block of 32 a scale `dₓ = max|x| / 127` and 32 `i8`s, with their sums
//! per 16. A weight block's dot with it is integer multiply-adds of its
//! unsigned 4–6-bit (or signed 8-bit) values with those `i8`s, then one
//! float multiply-add per group scale; offsets and minimums (`q − 8`,
//! `d·q + m`, K-quant mins) come in through the activations' sums.
//!
//! ```text
//!  block of 32 weights (d, q₀..q₃₁) · block of 32 activations (dₓ, x₀..x₃₁)
//!     = d · dₓ · Σ qᵢ·xᵢ  (integers: vpmaddubsw + vpmaddwd, or vpdpbusd)  + offset · dₓ · Σ xᵢ
//! ```
//!
//! | [`Isa`] | instructions | chosen when |
//! |---|---|---|
//! | `Avx512Vnni` | AVX2 with `vpdpbusd` (AVX-512 VNNI, 256-bit) | the CPU has it |
//! | `Avx2` | AVX2, FMA, F16C: `vpmaddubsw` then `vpmaddwd` | the CPU has them |
//! | `Scalar` | plain loops | everywhere; the reference the others are tested against |
//!
//! Types with kernels: Q4_0, Q4_1, Q8_0, Q4_K, Q5_K, Q6_K ([`kernel`]);
//! the others are dequantised (`matrix.rs`).

use super::packed::PackedKernel;
use super::quants::{GgmlType, f16, scale_min_k4};

/// Values per activation block.
const QK: usize = 32;

/// One row of activations quantised per block of 32.
#[derive(Clone, Debug, Default)]
pub struct Q8Row {
    /// Per block: `dₓ` (value ≈ dₓ · q), then zeros to a multiple of 8.
    pub(super) scales: Vec<f32>,
    /// Per half block of 16: the sum of its `i8`s.
    sums: Vec<i32>,
    /// Per block: `dₓ · Σ q`, what a block's offset or minimum multiplies;
    /// zeros to a multiple of 8.
    pub(super) weighted: Vec<f32>,
    values: Vec<i8>,
}

impl Q8Row {
    /// `x` quantised (`x.len()` a multiple of 32): the nearest `i8` in
    /// −127..=127 of each value over its block's scale.
    pub fn quantize(x: &[f32]) -> Self {
        assert!(x.len().is_multiple_of(QK), "{} values are not whole blocks of {QK}", x.len());
        let mut row = Self {
            scales: Vec::with_capacity(x.len() / QK),
            sums: Vec::with_capacity(x.len() / 16),
            weighted: Vec::with_capacity(x.len() / QK),
            values: Vec::with_capacity(x.len()),
        };
        // Adding and subtracting 1.5·2²³ rounds to the nearest integer (ties
        // to even) in plain float ops, which vectorise (`round` is a libm call).
        const ROUND: f32 = 12_582_912.0;
        for block in x.chunks_exact(QK) {
            let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
            let d = max / 127.0;
            let inverse = if d > 0.0 { 1.0 / d } else { 0.0 };
            row.scales.push(d);
            let mut total = 0;
            for half in block.chunks_exact(16) {
                let mut sum = 0;
                for v in half {
                    let q = ((v * inverse + ROUND) - ROUND) as i8;
                    sum += i32::from(q);
                    row.values.push(q);
                }
                row.sums.push(sum);
                total += sum;
            }
            row.weighted.push(d * total as f32);
        }
        // Zeros to a whole group of eight blocks, which the packed kernels read at once.
        let groups = row.scales.len().next_multiple_of(8);
        row.scales.resize(groups, 0.0);
        row.weighted.resize(groups, 0.0);
        row
    }

    /// `x` as `passes` rows whose sum stands for it: each quantises what
    /// the ones before left over, so the error shrinks ~254× per pass (a dot
    /// product with `x` is the sum of the dots with each).
    pub fn quantize_residual(x: &[f32], passes: usize) -> Vec<Self> {
        if passes <= 1 {
            return vec![Self::quantize(x)];
        }
        let mut rest = x.to_vec();
        let mut rows = Vec::with_capacity(passes);
        for pass in 0..passes {
            let row = Self::quantize(&rest);
            if pass + 1 < passes {
                rest.iter_mut().zip(row.dequantize()).for_each(|(r, q)| *r -= q);
            }
            rows.push(row);
        }
        rows
    }

    /// The values it stands for (`dₓ · q`).
    pub fn dequantize(&self) -> Vec<f32> {
        self.values
            .chunks_exact(QK)
            .zip(&self.scales)
            .flat_map(|(q, d)| q.iter().map(move |&q| d * f32::from(q)))
            .collect()
    }

    /// Values in the row.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the row is empty.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The `i8`s of block `b`.
    pub(super) fn block(&self, b: usize) -> &[i8] {
        &self.values[b * QK..][..QK]
    }

    /// Σ q of block `b`.
    pub(super) fn sum(&self, b: usize) -> i32 {
        self.sums[2 * b] + self.sums[2 * b + 1]
    }
}

/// A dot product of one weight row (whole blocks, `x.len()` values) with `x`.
pub type Kernel = fn(&[u8], &Q8Row) -> f32;

/// Instruction sets with kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512Vnni,
}

impl Isa {
    /// The best this CPU runs.
    pub fn detected() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let avx2 =
                is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") && is_x86_feature_detected!("f16c");
            if avx2 && is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                return Self::Avx512Vnni;
            }
            if avx2 {
                return Self::Avx2;
            }
        }
        Self::Scalar
    }

    /// Every set this CPU runs, scalar first.
    pub fn available() -> Vec<Self> {
        match Self::detected() {
            Self::Scalar => vec![Self::Scalar],
            Self::Avx2 => vec![Self::Scalar, Self::Avx2],
            Self::Avx512Vnni => vec![Self::Scalar, Self::Avx2, Self::Avx512Vnni],
        }
    }
}

/// [`Isa::detected`], detected once.
pub(super) fn isa() -> Isa {
    static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
    *ISA.get_or_init(Isa::detected)
}

/// The fastest kernel of `ty` on this CPU (`None`: no kernel for the type).
pub fn kernel(ty: GgmlType) -> Option<Kernel> {
    kernel_for(ty, isa())
}

/// The kernel of `ty` in `isa`; `isa` must be one the CPU runs ([`Isa::available`]).
pub fn kernel_for(ty: GgmlType, isa: Isa) -> Option<Kernel> {
    #[cfg(target_arch = "x86_64")]
    {
        let simd = match isa {
            Isa::Scalar => None,
            Isa::Avx2 => x86::avx2(ty),
            Isa::Avx512Vnni => x86::vnni(ty),
        };
        if simd.is_some() {
            return simd;
        }
    }
    let _ = isa;
    Some(match ty {
        GgmlType::Q8_0 => scalar::q8_0,
        GgmlType::Q4_0 => scalar::q4_0,
        GgmlType::Q4_1 => scalar::q4_1,
        GgmlType::Q4_K => scalar::q4_k,
        GgmlType::Q5_K => scalar::q5_k,
        GgmlType::Q6_K => scalar::q6_k,
        _ => return None,
    })
}

/// The fastest kernel of rows of `ty` repacked by [`super::packed::pack`].
pub fn packed_kernel(ty: GgmlType) -> Option<PackedKernel> {
    packed_kernel_for(ty, isa())
}

/// The kernel of packed rows of `ty` in `isa` (one the CPU runs).
pub fn packed_kernel_for(ty: GgmlType, isa: Isa) -> Option<PackedKernel> {
    #[cfg(target_arch = "x86_64")]
    {
        let simd = match isa {
            Isa::Scalar => None,
            Isa::Avx2 => x86::avx2_packed(ty),
            Isa::Avx512Vnni => x86::vnni_packed(ty),
        };
        if simd.is_some() {
            return simd;
        }
    }
    let _ = isa;
    Some(match ty {
        GgmlType::Q4_0 => |row, x| super::packed::dot_scalar(GgmlType::Q4_0, row, x),
        GgmlType::Q4_1 => |row, x| super::packed::dot_scalar(GgmlType::Q4_1, row, x),
        GgmlType::Q8_0 => |row, x| super::packed::dot_scalar(GgmlType::Q8_0, row, x),
        _ => return None,
    })
}

mod scalar;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
// SIMD loads from slices, and calls of kernels whose features were detected; see models/Cargo.toml.
mod x86;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::dequantize;
    use twinflow_schemas::rng::SeededRng;

    /// Where each type's `f16` scales sit in its block.
    fn half_offsets(ty: GgmlType) -> &'static [usize] {
        match ty {
            GgmlType::Q8_0 | GgmlType::Q4_0 => &[0],
            GgmlType::Q4_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
            GgmlType::Q6_K => &[208],
            _ => unreachable!("no kernel"),
        }
    }

    /// `n` random blocks of `ty`: random bytes, with finite `f16` scales in 1/32..1/2.
    fn random_blocks(ty: GgmlType, n: usize, rng: &mut SeededRng) -> Vec<u8> {
        let (_, bytes) = ty.block();
        let mut data: Vec<u8> = (0..n * bytes).map(|_| rng.below(256) as u8).collect();
        for block in data.chunks_exact_mut(bytes) {
            for &at in half_offsets(ty) {
                let bits = ((10 + rng.below(4) as u16) << 10) | rng.below(1024) as u16;
                block[at..at + 2].copy_from_slice(&bits.to_le_bytes());
            }
        }
        data
    }

    /// Every kernel of every instruction set on this CPU, on random rows,
    /// against the dequantised weights times the dequantised activations.
    #[test]
    fn kernels_equal_the_dequantised_product() {
        let mut rng = SeededRng::new(5);
        let types = [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K];
        for ty in types {
            let (per_block, _) = ty.block();
            for blocks in [1, 3] {
                let cols = per_block * blocks * if per_block == 32 { 8 } else { 1 };
                let row = random_blocks(ty, cols / per_block, &mut rng);
                let x: Vec<f32> = (0..cols).map(|_| (rng.unit() as f32 - 0.5) * 6.0).collect();
                let q = Q8Row::quantize(&x);
                let (w, xq) = (dequantize(ty, &row), q.dequantize());
                let want: f64 = w.iter().zip(&xq).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                let size: f64 = w.iter().zip(&xq).map(|(a, b)| f64::from((a * b).abs())).sum();
                for isa in Isa::available() {
                    let got = kernel_for(ty, isa).expect("a kernel")(&row, &q);
                    assert!(
                        (f64::from(got) - want).abs() <= 1e-5 * size + 1e-6,
                        "{} {isa:?} over {cols}: {got} vs {want} (Σ|w·x| {size})",
                        ty.name()
                    );
                }
            }
        }
        assert!(kernel(GgmlType::Q2_K).is_none() && kernel(GgmlType::F32).is_none());
    }

    /// The packed Q4_0, Q4_1 and Q8_0 kernels of every instruction set, on
    /// rows with and without an odd last block and a partial group of eight,
    /// with one and two passes of activations, against the GGUF rows'
    /// dequantised product.
    #[test]
    fn packed_kernels_equal_the_dequantised_product() {
        let mut rng = SeededRng::new(6);
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            for (blocks, passes) in [(1, 1), (2, 2), (8, 1), (18, 2), (19, 1), (19, 2), (48, 1)] {
                let cols = 32 * blocks;
                let row = random_blocks(ty, blocks, &mut rng);
                let packed = crate::gguf::packed::pack(ty, &row, 1, cols);
                let x: Vec<f32> = (0..cols).map(|_| (rng.unit() as f32 - 0.5) * 6.0).collect();
                let q = Q8Row::quantize_residual(&x, passes);
                let xq: Vec<f32> = q
                    .iter()
                    .map(Q8Row::dequantize)
                    .fold(vec![0.0; cols], |sum, pass| sum.iter().zip(pass).map(|(a, b)| a + b).collect());
                let w = dequantize(ty, &row);
                let want: f64 = w.iter().zip(&xq).map(|(a, b)| f64::from(*a) * f64::from(*b)).sum();
                let size: f64 = w.iter().zip(&xq).map(|(a, b)| f64::from((a * b).abs())).sum();
                for isa in Isa::available() {
                    let got = packed_kernel_for(ty, isa).expect("a kernel")(&packed, &q);
                    assert!(
                        (f64::from(got) - want).abs() <= 1e-5 * size + 1e-6,
                        "packed {} {isa:?} over {blocks} blocks: {got} vs {want}",
                        ty.name()
                    );
                }
            }
        }
        assert!(packed_kernel(GgmlType::Q4_K).is_none());
    }

    #[test]
    fn activations_round_trip_within_half_a_step() {
        let x: Vec<f32> = (0..64).map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.37).collect();
        let q = Q8Row::quantize(&x);
        for (b, (block, back)) in x.chunks(32).zip(q.dequantize().chunks(32)).enumerate() {
            let step = q.scales[b];
            assert!(block.iter().zip(back).all(|(a, b)| (a - b).abs() <= step / 2.0 + 1e-6));
        }
        assert_eq!(q.sum(1), q.block(1).iter().map(|&v| i32::from(v)).sum::<i32>());
        // A second pass quantises the first one's error: far closer.
        let passes = Q8Row::quantize_residual(&x, 2);
        let sum: Vec<f32> = passes[0].dequantize().iter().zip(passes[1].dequantize()).map(|(a, b)| a + b).collect();
        let error = |y: &[f32]| x.iter().zip(y).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(error(&sum) * 50.0 < error(&q.dequantize()), "{} vs {}", error(&sum), error(&q.dequantize()));
        let zeros = Q8Row::quantize(&[0.0; 32]);
        assert_eq!((zeros.scales[0], zeros.sum(0)), (0.0, 0));
    }
}
