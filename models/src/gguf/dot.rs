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

/// The plain loops: integer sums per block, as the SIMD kernels compute them.
mod scalar {
    use super::*;

    fn dot_i8(w: impl Iterator<Item = i32>, x: &[i8]) -> i32 {
        w.zip(x).map(|(w, &x)| w * i32::from(x)).sum()
    }

    /// The 32 nibbles of 16 bytes: low nibbles first, then high.
    fn nibbles(qs: &[u8]) -> impl Iterator<Item = i32> + '_ {
        qs.iter().map(|q| i32::from(q & 0x0f)).chain(qs.iter().map(|q| i32::from(q >> 4)))
    }

    pub(super) fn q8_0(row: &[u8], x: &Q8Row) -> f32 {
        let mut sum = 0.0;
        for (b, block) in row.chunks_exact(34).enumerate() {
            let dot = dot_i8(block[2..34].iter().map(|&q| i32::from(q as i8)), x.block(b));
            sum += f16(block[0], block[1]) * x.scales[b] * dot as f32;
        }
        sum
    }

    pub(super) fn q4_0(row: &[u8], x: &Q8Row) -> f32 {
        let mut sum = 0.0;
        for (b, block) in row.chunks_exact(18).enumerate() {
            let dot = dot_i8(nibbles(&block[2..18]), x.block(b)) - 8 * x.sum(b);
            sum += f16(block[0], block[1]) * x.scales[b] * dot as f32;
        }
        sum
    }

    pub(super) fn q4_1(row: &[u8], x: &Q8Row) -> f32 {
        let mut sum = 0.0;
        for (b, block) in row.chunks_exact(20).enumerate() {
            let dot = dot_i8(nibbles(&block[4..20]), x.block(b));
            let (d, m) = (f16(block[0], block[1]), f16(block[2], block[3]));
            sum += x.scales[b] * (d * dot as f32 + m * x.sum(b) as f32);
        }
        sum
    }

    /// Q4_K and Q5_K: 8 groups of 32, each `d·scale·q − dmin·min`; `fifth`
    /// gives element `l`'s fifth bit of group `g` (Q5_K).
    fn k4(row: &[u8], x: &Q8Row, bytes: usize, fifth: Option<fn(&[u8], usize, usize) -> i32>) -> f32 {
        let mut sum = 0.0;
        for (s, block) in row.chunks_exact(bytes).enumerate() {
            let (d, dmin) = (f16(block[0], block[1]), f16(block[2], block[3]));
            let packed = &block[4..16];
            let qs = &block[bytes - 128..];
            for g in 0..8 {
                let b = 8 * s + g;
                let chunk = &qs[32 * (g / 2)..][..32];
                let high = |l: usize| fifth.map_or(0, |f| f(&block[16..48], g, l));
                let q = (0..32).map(|l| i32::from(if g % 2 == 0 { chunk[l] & 0x0f } else { chunk[l] >> 4 }) + high(l));
                let (scale, min) = scale_min_k4(g, packed);
                let dot = dot_i8(q, x.block(b));
                sum += x.scales[b] * (d * f32::from(scale) * dot as f32 - dmin * f32::from(min) * x.sum(b) as f32);
            }
        }
        sum
    }

    pub(super) fn q4_k(row: &[u8], x: &Q8Row) -> f32 {
        k4(row, x, 144, None)
    }

    pub(super) fn q5_k(row: &[u8], x: &Q8Row) -> f32 {
        k4(row, x, 176, Some(|qh, g, l| if qh[l] & (1 << g) != 0 { 16 } else { 0 }))
    }

    pub(super) fn q6_k(row: &[u8], x: &Q8Row) -> f32 {
        let mut sum = 0.0;
        for (s, block) in row.chunks_exact(210).enumerate() {
            let d = f16(block[208], block[209]);
            for half in 0..2 {
                let (ql, qh) = (&block[64 * half..][..64], &block[128 + 32 * half..][..32]);
                for k in 0..4 {
                    let b = 8 * s + 4 * half + k;
                    let q = (0..32).map(|l| {
                        // Run k: the low (k < 2) or high nibbles of bytes 32·(k % 2)..
                        let byte = ql[l + 32 * (k % 2)];
                        let low = if k < 2 { byte & 0x0f } else { byte >> 4 };
                        i32::from(low | (((qh[l] >> (2 * k)) & 3) << 4))
                    });
                    let products: Vec<i32> = q.zip(x.block(b)).map(|(q, &x)| q * i32::from(x)).collect();
                    let scales = [192 + 8 * half + 2 * k, 192 + 8 * half + 2 * k + 1].map(|i| block[i] as i8);
                    let mut dot = 0;
                    for (h, scale) in scales.into_iter().enumerate() {
                        let part: i32 = products[16 * h..][..16].iter().sum::<i32>() - 32 * x.sums[2 * b + h];
                        dot += i32::from(scale) * part;
                    }
                    sum += d * x.scales[b] * dot as f32;
                }
            }
        }
        sum
    }
}

/// The AVX2 and AVX-512 VNNI kernels: one body per type, written once by
/// `kernels!` for each instruction set's multiply-add of `u8 × i8` sums.
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)] // SIMD loads from slices, and calls of kernels whose features were detected; see models/Cargo.toml.
mod x86 {
    use std::arch::x86_64::*;

    use super::{GgmlType, Kernel, PackedKernel, Q8Row, scale_min_k4};

    /// Σ of 4 adjacent `u8 × i8` products in each `i32` lane.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn mac_avx2(w: __m256i, x: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1))
    }

    #[inline]
    #[target_feature(enable = "avx2,avx512vnni,avx512vl")]
    fn mac_vnni(w: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(_mm256_setzero_si256(), w, x)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }

    #[inline]
    #[target_feature(enable = "f16c")]
    fn half(lo: u8, hi: u8) -> f32 {
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(u16::from_le_bytes([lo, hi])))))
    }

    /// 32 bytes at `p`.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load(p: *const u8) -> __m256i {
        // SAFETY: the caller passes 32 readable bytes.
        unsafe { _mm256_loadu_si256(p.cast()) }
    }

    /// The 32 nibbles of the 16 bytes at `p` as bytes: low nibbles, then high.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn nibbles(p: *const u8) -> __m256i {
        // SAFETY: the caller passes 16 readable bytes.
        let q = unsafe { _mm_loadu_si128(p.cast()) };
        let m4 = _mm_set1_epi8(0x0f);
        _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16::<4>(q), m4), _mm_and_si128(q, m4))
    }

    macro_rules! kernels {
        ($isa:ident, $features:literal, $mac:ident) => {
            pub(super) mod $isa {
                use std::arch::x86_64::*;

                use super::*;

                #[target_feature(enable = $features)]
                pub(super) fn q8_0(row: &[u8], x: &Q8Row) -> f32 {
                    let mut acc = _mm256_setzero_ps();
                    for (b, block) in row.chunks_exact(34).enumerate() {
                        // SAFETY: a Q8_0 block holds 32 values after its scale; x has 32 per block.
                        let (w, v) = unsafe { (load(block[2..].as_ptr()), load(x.block(b).as_ptr().cast())) };
                        // u8 × i8: |w| times x with w's sign.
                        let p = $mac(_mm256_sign_epi8(w, w), _mm256_sign_epi8(v, w));
                        let scale = _mm256_set1_ps(half(block[0], block[1]) * x.scales[b]);
                        acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps(p), acc);
                    }
                    hsum(acc)
                }

                #[target_feature(enable = $features)]
                pub(super) fn q4_0(row: &[u8], x: &Q8Row) -> f32 {
                    let (mut acc, mut offset) = (_mm256_setzero_ps(), 0.0);
                    for (b, block) in row.chunks_exact(18).enumerate() {
                        // SAFETY: 16 bytes of nibbles after the scale; x has 32 per block.
                        let (w, v) = unsafe { (nibbles(block[2..].as_ptr()), load(x.block(b).as_ptr().cast())) };
                        let scale = half(block[0], block[1]) * x.scales[b];
                        acc = _mm256_fmadd_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps($mac(w, v)), acc);
                        offset -= 8.0 * scale * x.sum(b) as f32;
                    }
                    hsum(acc) + offset
                }

                #[target_feature(enable = $features)]
                pub(super) fn q4_1(row: &[u8], x: &Q8Row) -> f32 {
                    let (mut acc, mut offset) = (_mm256_setzero_ps(), 0.0);
                    for (b, block) in row.chunks_exact(20).enumerate() {
                        // SAFETY: 16 bytes of nibbles after the scale and min; x has 32 per block.
                        let (w, v) = unsafe { (nibbles(block[4..].as_ptr()), load(x.block(b).as_ptr().cast())) };
                        let scale = _mm256_set1_ps(half(block[0], block[1]) * x.scales[b]);
                        acc = _mm256_fmadd_ps(scale, _mm256_cvtepi32_ps($mac(w, v)), acc);
                        offset += half(block[2], block[3]) * x.scales[b] * x.sum(b) as f32;
                    }
                    hsum(acc) + offset
                }

                /// Packed Q4_0 and Q4_1 rows (`MIN`; `gguf::packed`): per group of
                /// eight blocks, their scales and offsets in a few vector operations (the
                /// scales are padded to whole groups, with zeros), then a pair of blocks
                /// per 32 bytes of nibbles (low nibbles block `b`, high `b + 1`).
                #[inline]
                #[target_feature(enable = $features)]
                fn q4_packed<const MIN: bool>(row: &[u8], x: &Q8Row) -> f32 {
                    let nb = x.values.len() / 32;
                    let padded = nb.next_multiple_of(8);
                    let heads = if MIN { 4 * padded } else { 2 * padded };
                    assert!(
                        row.len() == heads + 16 * nb && x.scales.len() == padded && x.weighted.len() == padded,
                        "a packed row of {nb} blocks"
                    );
                    let (d, m, qs) = (row.as_ptr(), row[2 * padded..].as_ptr(), row[heads..].as_ptr());
                    let (xv, xs, xw) = (x.values.as_ptr(), x.scales.as_ptr(), x.weighted.as_ptr());
                    let m4 = _mm256_set1_epi8(0x0f);
                    let (mut acc0, mut acc1, mut offsets) =
                        (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
                    let mut scales = [0f32; 8];
                    let mut b = 0;
                    while b < nb {
                        let group = (nb - b).min(8);
                        // SAFETY: the lengths were checked above: 2·padded bytes of scales (and
                        // of minimums), padded scales and sums of x, 16·nb bytes of nibbles and
                        // 32·nb i8s of x, of which the pairs below read whole blocks.
                        unsafe {
                            let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.add(2 * b).cast()));
                            let mins = if MIN { _mm256_cvtph_ps(_mm_loadu_si128(m.add(2 * b).cast())) } else { dw };
                            offsets = _mm256_fmadd_ps(mins, _mm256_loadu_ps(xw.add(b)), offsets);
                            _mm256_storeu_ps(scales.as_mut_ptr(), _mm256_mul_ps(dw, _mm256_loadu_ps(xs.add(b))));
                            let mut j = 0;
                            while j + 1 < group {
                                let at = b + j;
                                let q = load(qs.add(16 * at));
                                let (v0, v1) = (load(xv.add(32 * at).cast()), load(xv.add(32 * at + 32).cast()));
                                let lo = _mm256_and_si256(q, m4);
                                let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4);
                                acc0 =
                                    _mm256_fmadd_ps(_mm256_set1_ps(scales[j]), _mm256_cvtepi32_ps($mac(lo, v0)), acc0);
                                acc1 = _mm256_fmadd_ps(
                                    _mm256_set1_ps(scales[j + 1]),
                                    _mm256_cvtepi32_ps($mac(hi, v1)),
                                    acc1,
                                );
                                j += 2;
                            }
                            if j < group {
                                // The odd last block keeps GGUF's 16 bytes of nibbles.
                                let at = b + j;
                                let (w, v) = (nibbles(qs.add(16 * at)), load(xv.add(32 * at).cast()));
                                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(scales[j]), _mm256_cvtepi32_ps($mac(w, v)), acc0);
                            }
                        }
                        b += group;
                    }
                    // Q4_1 adds m·Σx per block; Q4_0 subtracts 8·d·Σx.
                    let offsets = if MIN { offsets } else { _mm256_mul_ps(offsets, _mm256_set1_ps(-8.0)) };
                    hsum(_mm256_add_ps(_mm256_add_ps(acc0, acc1), offsets))
                }

                #[target_feature(enable = $features)]
                pub(super) fn q4_0_packed(row: &[u8], passes: &[Q8Row]) -> f32 {
                    passes.iter().map(|x| q4_packed::<false>(row, x)).sum()
                }

                #[target_feature(enable = $features)]
                pub(super) fn q4_1_packed(row: &[u8], passes: &[Q8Row]) -> f32 {
                    passes.iter().map(|x| q4_packed::<true>(row, x)).sum()
                }

                /// Packed Q8_0 rows (`gguf::packed`) with one or (`TWO`) two passes of
                /// activations: each block's weights loaded once for both; the scales are
                /// padded to whole groups of eight.
                #[inline]
                #[target_feature(enable = $features)]
                fn q8_packed<const TWO: bool>(row: &[u8], x0: &Q8Row, x1: &Q8Row) -> f32 {
                    let nb = x0.values.len() / 32;
                    let padded = nb.next_multiple_of(8);
                    assert!(
                        row.len() == 2 * padded + 32 * nb
                            && x1.values.len() == 32 * nb
                            && x0.scales.len() == padded
                            && x1.scales.len() == padded,
                        "a packed row of {nb} blocks"
                    );
                    let (d, qs) = (row.as_ptr(), row[2 * padded..].as_ptr());
                    let (v0p, v1p, s0, s1) =
                        (x0.values.as_ptr(), x1.values.as_ptr(), x0.scales.as_ptr(), x1.scales.as_ptr());
                    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
                    let (mut scales0, mut scales1) = ([0f32; 8], [0f32; 8]);
                    let mut b = 0;
                    while b < nb {
                        let group = (nb - b).min(8);
                        // SAFETY: the lengths were checked above (2·padded bytes of scales and
                        // padded scales per pass, 32·nb bytes of weights and i8s per pass).
                        unsafe {
                            let dw = _mm256_cvtph_ps(_mm_loadu_si128(d.add(2 * b).cast()));
                            _mm256_storeu_ps(scales0.as_mut_ptr(), _mm256_mul_ps(dw, _mm256_loadu_ps(s0.add(b))));
                            if TWO {
                                _mm256_storeu_ps(scales1.as_mut_ptr(), _mm256_mul_ps(dw, _mm256_loadu_ps(s1.add(b))));
                            }
                            for j in 0..group {
                                let at = b + j;
                                let (w, v) = (load(qs.add(32 * at)), load(v0p.add(32 * at).cast()));
                                // u8 × i8: |w| times x with w's sign.
                                let magnitude = _mm256_sign_epi8(w, w);
                                let p = $mac(magnitude, _mm256_sign_epi8(v, w));
                                acc0 = _mm256_fmadd_ps(_mm256_set1_ps(scales0[j]), _mm256_cvtepi32_ps(p), acc0);
                                if TWO {
                                    let v = load(v1p.add(32 * at).cast());
                                    let p = $mac(magnitude, _mm256_sign_epi8(v, w));
                                    acc1 = _mm256_fmadd_ps(_mm256_set1_ps(scales1[j]), _mm256_cvtepi32_ps(p), acc1);
                                }
                            }
                        }
                        b += group;
                    }
                    hsum(_mm256_add_ps(acc0, acc1))
                }

                #[target_feature(enable = $features)]
                pub(super) fn q8_0_packed(row: &[u8], passes: &[Q8Row]) -> f32 {
                    passes
                        .chunks(2)
                        .map(|pair| match pair {
                            [x0, x1] => q8_packed::<true>(row, x0, x1),
                            [x0] => q8_packed::<false>(row, x0, x0),
                            _ => 0.0,
                        })
                        .sum()
                }

                /// Q4_K and Q5_K (`FIVE`): groups `2i` and `2i + 1` are the low and high
                /// nibbles of bytes `32i..32i + 32`, Q5_K's fifth bits bit `g` of `qh[l]`.
                #[inline]
                #[target_feature(enable = $features)]
                fn k4<const FIVE: bool>(row: &[u8], x: &Q8Row, bytes: usize) -> f32 {
                    let (mut acc, mut offset) = (_mm256_setzero_ps(), 0.0);
                    let m4 = _mm256_set1_epi8(0x0f);
                    for (s, block) in row.chunks_exact(bytes).enumerate() {
                        let (d, dmin) = (half(block[0], block[1]), half(block[2], block[3]));
                        let packed = &block[4..16];
                        let qs = &block[bytes - 128..];
                        // SAFETY: Q5_K's 32 bytes of fifth bits follow the scales.
                        let qh = if FIVE { unsafe { load(block[16..].as_ptr()) } } else { _mm256_setzero_si256() };
                        for i in 0..4 {
                            // SAFETY: 128 bytes of nibbles, 32 per pair of groups.
                            let q = unsafe { load(qs[32 * i..].as_ptr()) };
                            let halves = [_mm256_and_si256(q, m4), _mm256_and_si256(_mm256_srli_epi16::<4>(q), m4)];
                            for (j, mut w) in halves.into_iter().enumerate() {
                                let g = 2 * i + j;
                                if FIVE {
                                    let bit = _mm256_set1_epi8(1 << g);
                                    let set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
                                    w = _mm256_or_si256(w, _mm256_and_si256(set, _mm256_set1_epi8(16)));
                                }
                                let b = 8 * s + g;
                                // SAFETY: x has 32 values per block.
                                let v = unsafe { load(x.block(b).as_ptr().cast()) };
                                let (scale, min) = scale_min_k4(g, packed);
                                let factor = _mm256_set1_ps(d * f32::from(scale) * x.scales[b]);
                                acc = _mm256_fmadd_ps(factor, _mm256_cvtepi32_ps($mac(w, v)), acc);
                                offset -= dmin * f32::from(min) * x.scales[b] * x.sum(b) as f32;
                            }
                        }
                    }
                    hsum(acc) + offset
                }

                #[target_feature(enable = $features)]
                pub(super) fn q4_k(row: &[u8], x: &Q8Row) -> f32 {
                    k4::<false>(row, x, 144)
                }

                #[target_feature(enable = $features)]
                pub(super) fn q5_k(row: &[u8], x: &Q8Row) -> f32 {
                    k4::<true>(row, x, 176)
                }

                /// Q6_K: per half of 128, run `k` (0..4) of 32 takes nibble `k / 2` (low,
                /// high) of bytes `32·(k % 2)..` of `ql` and bits `2k..2k + 2` of `qh`, minus 32;
                /// its two groups of 16 each have an `i8` scale.
                #[target_feature(enable = $features)]
                pub(super) fn q6_k(row: &[u8], x: &Q8Row) -> f32 {
                    let (mut acc, mut offset) = (_mm256_setzero_ps(), 0.0);
                    let (m4, m2) = (_mm256_set1_epi8(0x0f), _mm256_set1_epi8(3));
                    for (s, block) in row.chunks_exact(210).enumerate() {
                        let d = half(block[208], block[209]);
                        for h in 0..2 {
                            // SAFETY: 64 bytes of ql and 32 of qh per half.
                            let (ql0, ql1, qh) = unsafe {
                                (
                                    load(block[64 * h..].as_ptr()),
                                    load(block[64 * h + 32..].as_ptr()),
                                    load(block[128 + 32 * h..].as_ptr()),
                                )
                            };
                            let lows = [
                                _mm256_and_si256(ql0, m4),
                                _mm256_and_si256(ql1, m4),
                                _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                                _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                            ];
                            let highs = [
                                _mm256_and_si256(qh, m2),
                                _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2),
                                _mm256_and_si256(_mm256_srli_epi16::<4>(qh), m2),
                                _mm256_and_si256(_mm256_srli_epi16::<6>(qh), m2),
                            ];
                            for k in 0..4 {
                                let w = _mm256_or_si256(lows[k], _mm256_slli_epi16::<4>(highs[k]));
                                let b = 8 * s + 4 * h + k;
                                // SAFETY: x has 32 values per block.
                                let v = unsafe { load(x.block(b).as_ptr().cast()) };
                                let [sa, sb] = [0, 1].map(|j| f32::from(block[192 + 8 * h + 2 * k + j] as i8));
                                let scale = d * x.scales[b];
                                // Lanes 0..4 sum elements 0..16 (the first group), 4..8 the second.
                                let factor = _mm256_set_m128(_mm_set1_ps(scale * sb), _mm_set1_ps(scale * sa));
                                acc = _mm256_fmadd_ps(factor, _mm256_cvtepi32_ps($mac(w, v)), acc);
                                offset -= 32.0 * scale * (sa * x.sums[2 * b] as f32 + sb * x.sums[2 * b + 1] as f32);
                            }
                        }
                    }
                    hsum(acc) + offset
                }
            }
        };
    }

    kernels!(with_avx2, "avx2,fma,f16c", mac_avx2);
    kernels!(with_vnni, "avx2,fma,f16c,avx512vnni,avx512vl", mac_vnni);

    macro_rules! table {
        ($isa:ident, $ty:expr) => {{
            // SAFETY (of each entry): only called after `Isa::detected` found the features.
            let kernel: Kernel = match $ty {
                GgmlType::Q8_0 => |r, x| unsafe { $isa::q8_0(r, x) },
                GgmlType::Q4_0 => |r, x| unsafe { $isa::q4_0(r, x) },
                GgmlType::Q4_1 => |r, x| unsafe { $isa::q4_1(r, x) },
                GgmlType::Q4_K => |r, x| unsafe { $isa::q4_k(r, x) },
                GgmlType::Q5_K => |r, x| unsafe { $isa::q5_k(r, x) },
                GgmlType::Q6_K => |r, x| unsafe { $isa::q6_k(r, x) },
                _ => return None,
            };
            Some(kernel)
        }};
    }

    pub(super) fn avx2(ty: GgmlType) -> Option<Kernel> {
        table!(with_avx2, ty)
    }

    pub(super) fn vnni(ty: GgmlType) -> Option<Kernel> {
        table!(with_vnni, ty)
    }

    macro_rules! packed_table {
        ($isa:ident, $ty:expr) => {{
            // SAFETY (of each entry): only called after `Isa::detected` found the features.
            let kernel: PackedKernel = match $ty {
                GgmlType::Q4_0 => |r, x| unsafe { $isa::q4_0_packed(r, x) },
                GgmlType::Q4_1 => |r, x| unsafe { $isa::q4_1_packed(r, x) },
                GgmlType::Q8_0 => |r, x| unsafe { $isa::q8_0_packed(r, x) },
                _ => return None,
            };
            Some(kernel)
        }};
    }

    pub(super) fn avx2_packed(ty: GgmlType) -> Option<PackedKernel> {
        packed_table!(with_avx2, ty)
    }

    pub(super) fn vnni_packed(ty: GgmlType) -> Option<PackedKernel> {
        packed_table!(with_vnni, ty)
    }
}

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
