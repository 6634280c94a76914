//! Conversions between `f32` and IEEE half precision (the KV cache's
//! storage): F16C where the CPU has it, plain bit arithmetic elsewhere.

use super::dot::{Isa, isa};
use super::quants::f16;

/// `src` (IEEE half-precision bits) as `f32` into `dst` (as long): F16C
/// where the CPU has it.
#[allow(unsafe_code)] // F16C, called once detected; see models/Cargo.toml.
pub fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "as many values out as in");
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: Avx2 and Avx512Vnni include F16C (`Isa::detected`).
        return unsafe { f16c::f16_to_f32(src, dst) };
    }
    for (d, &h) in dst.iter_mut().zip(src) {
        let [lo, hi] = h.to_le_bytes();
        *d = f16(lo, hi);
    }
}

/// `src` as IEEE half-precision bits into `dst`, rounded to the nearest (ties
/// to even): F16C where the CPU has it.
#[allow(unsafe_code)] // F16C, called once detected; see models/Cargo.toml.
pub fn f32_to_f16(src: &[f32], dst: &mut [u16]) {
    assert_eq!(src.len(), dst.len(), "as many values out as in");
    #[cfg(target_arch = "x86_64")]
    if isa() != Isa::Scalar {
        // SAFETY: as above.
        return unsafe { f16c::f32_to_f16(src, dst) };
    }
    for (d, &x) in dst.iter_mut().zip(src) {
        *d = half_bits(x);
    }
}

/// `x` as half-precision bits, rounded to the nearest, ties to even; beyond
/// the range, infinity; NaN stays NaN.
fn half_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    let sign = ((bits >> 16) & 0x8000) as u16;
    let exponent = ((bits >> 23) & 0xff) as i32;
    let mantissa = bits & 0x7f_ffff;
    if exponent == 0xff {
        return sign | 0x7c00 | if mantissa != 0 { 0x200 } else { 0 };
    }
    let e = exponent - 127 + 15;
    if e >= 0x1f {
        return sign | 0x7c00;
    }
    if e <= 0 {
        // A subnormal half (or zero): the value in units of 2⁻²⁴.
        if e < -10 {
            return sign;
        }
        let m = mantissa | 0x80_0000;
        let shift = (14 - e) as u32;
        let rounded = (m + (1 << (shift - 1)) - 1 + ((m >> shift) & 1)) >> shift;
        return sign | rounded as u16;
    }
    // Round the 13 dropped bits to even; a carry moves into the exponent.
    let rounded = mantissa + 0x0fff + ((mantissa >> 13) & 1);
    let half = ((e as u32) << 10) + (rounded >> 13);
    if half >= 0x7c00 { sign | 0x7c00 } else { sign | half as u16 }
}

/// The F16C loops, called only once `Isa::detected` found AVX2 (which implies F16C here).
#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)] // SIMD loads and stores on slices; see models/Cargo.toml.
mod f16c {
    use std::arch::x86_64::*;

    /// Eight halves at a time, then the rest one by one.
    #[target_feature(enable = "avx,f16c")]
    pub(super) fn f16_to_f32(src: &[u16], dst: &mut [f32]) {
        let mut chunks = dst.chunks_exact_mut(8);
        for (d, s) in (&mut chunks).zip(src.chunks_exact(8)) {
            // SAFETY: 8 halves read, 8 floats written.
            unsafe { _mm256_storeu_ps(d.as_mut_ptr(), _mm256_cvtph_ps(_mm_loadu_si128(s.as_ptr().cast()))) };
        }
        let tail = src.len() / 8 * 8;
        for (d, &h) in chunks.into_remainder().iter_mut().zip(&src[tail..]) {
            *d = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(h))));
        }
    }

    /// Eight floats at a time (round to nearest even), then the rest one by one.
    #[target_feature(enable = "avx,f16c")]
    pub(super) fn f32_to_f16(src: &[f32], dst: &mut [u16]) {
        let mut chunks = dst.chunks_exact_mut(8);
        for (d, s) in (&mut chunks).zip(src.chunks_exact(8)) {
            // SAFETY: 8 floats read, 8 halves written.
            unsafe {
                let halves = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(s.as_ptr()));
                _mm_storeu_si128(d.as_mut_ptr().cast(), halves);
            }
        }
        let tail = src.len() / 8 * 8;
        for (d, &x) in chunks.into_remainder().iter_mut().zip(&src[tail..]) {
            *d = _mm_extract_epi16::<0>(_mm_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm_set_ss(x))) as u16;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use twinflow_schemas::rng::SeededRng;

    /// The plain conversion to half precision against the CPU's (F16C), and
    /// both round trips, over normal, subnormal, tie, huge and special values.
    #[test]
    fn halves_convert_as_the_cpu_converts() {
        let mut rng = SeededRng::new(8);
        let mut values: Vec<f32> = (0..4000)
            .map(|i| {
                let magnitude = 2f32.powi(rng.below(50) as i32 - 30);
                (rng.unit() as f32 - 0.5) * magnitude * if i % 2 == 0 { 1.0 } else { 70.0 }
            })
            .collect();
        values.extend([0.0, -0.0, 1.0, 65504.0, 65520.0, 1e9, -1e9, 6.0e-8, 2.98e-8, 1.0 + 2f32.powi(-11)]);
        values.extend([1.0 + 3.0 * 2f32.powi(-11), f32::INFINITY, f32::NEG_INFINITY, 5.9604645e-8, 8.940697e-8]);
        let mut halves = vec![0u16; values.len()];
        f32_to_f16(&values, &mut halves);
        for (x, h) in values.iter().zip(&halves) {
            assert_eq!(half_bits(*x), *h, "{x:e}");
        }
        let mut back = vec![0f32; values.len()];
        f16_to_f32(&halves, &mut back);
        for ((x, h), y) in values.iter().zip(&halves).zip(&back) {
            let [lo, hi] = h.to_le_bytes();
            assert_eq!(f16(lo, hi).to_bits(), y.to_bits());
            if x.abs() < 65504.0 && x.abs() > 6.2e-5 {
                assert!((x - y).abs() <= x.abs() * 2f32.powi(-11), "{x:e} → {y:e}");
            }
        }
        assert!(half_bits(f32::NAN) & 0x7c00 == 0x7c00 && half_bits(f32::NAN) & 0x3ff != 0);
    }
}
