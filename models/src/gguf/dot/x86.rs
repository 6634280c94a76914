//! The AVX2 and AVX-512 VNNI kernels: one body per type, written once by
//! `kernels!` for each instruction set's multiply-add of `u8 × i8` sums.

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
                let (mut acc0, mut acc1, mut offsets) = (_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps());
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
                            acc0 = _mm256_fmadd_ps(_mm256_set1_ps(scales[j]), _mm256_cvtepi32_ps($mac(lo, v0)), acc0);
                            acc1 =
                                _mm256_fmadd_ps(_mm256_set1_ps(scales[j + 1]), _mm256_cvtepi32_ps($mac(hi, v1)), acc1);
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
