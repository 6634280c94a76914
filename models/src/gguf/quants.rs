//! ggml's element types and their dequantisation to `f32`: the plain floats
//! (F32, F16, BF16), the 32-element blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) and
//! the 256-element super-blocks of the K-quants (Q2_K … Q6_K, Q8_K).
//!
//! ```text
//!  Q4_0   d:f16 · 16 B nibbles                       x = d·(q − 8)
//!  Q4_1   d, m:f16 · 16 B nibbles                    x = d·q + m
//!  Q5_0   d:f16 · qh:u32 · 16 B nibbles              x = d·(q | h<<4 − 16)
//!  Q5_1   d, m:f16 · qh:u32 · 16 B nibbles           x = d·(q | h<<4) + m
//!  Q8_0   d:f16 · 32 × i8                            x = d·q
//!  Q2_K   16 × (4-bit scale, 4-bit min) · 64 B of 2-bit q · d, dmin:f16     x = d·sc·q − dmin·m   (16 groups of 16)
//!  Q3_K   32 B high bits · 64 B of 2-bit q · 12 B of 6-bit scales · d:f16   x = d·(sc − 32)·(q − 4·!h)
//!  Q4_K   d, dmin:f16 · 12 B of 6-bit (scale, min) · 128 B nibbles          x = d·sc·q − dmin·m   (8 groups of 32)
//!  Q5_K   as Q4_K · 32 B high bits before the nibbles                      q gains a fifth bit
//!  Q6_K   128 B low nibbles · 64 B 2-bit highs · 16 × i8 scales · d:f16     x = d·sc·(q − 32)     (16 groups of 16)
//!  Q8_K   d:f32 · 256 × i8 · 16 × i16 group sums                          x = d·q
//! ```
//!
//! The products are evaluated in the order llama.cpp's reference
//! dequantisers use (`(d·sc)·q − dmin·m`, in `f32`), so the values agree with
//! it, and with the `gguf` Python package, to the bit.

/// The element types of ggml that this reader can dequantise.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2_K,
    Q3_K,
    Q4_K,
    Q5_K,
    Q6_K,
    Q8_K,
}

/// Elements in a K-quant super-block.
const QK_K: usize = 256;

impl GgmlType {
    /// Every type, in ggml's code order.
    pub const ALL: [GgmlType; 14] = [
        Self::F32,
        Self::F16,
        Self::Q4_0,
        Self::Q4_1,
        Self::Q5_0,
        Self::Q5_1,
        Self::Q8_0,
        Self::Q2_K,
        Self::Q3_K,
        Self::Q4_K,
        Self::Q5_K,
        Self::Q6_K,
        Self::Q8_K,
        Self::BF16,
    ];

    /// The type of ggml's code (`ggml_type`), if this reader knows it.
    pub fn from_code(code: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.code() == code)
    }

    /// ggml's code for the type.
    pub fn code(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q5_0 => 6,
            Self::Q5_1 => 7,
            Self::Q8_0 => 8,
            Self::Q2_K => 10,
            Self::Q3_K => 11,
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::Q8_K => 15,
            Self::BF16 => 30,
        }
    }

    /// `(elements per block, bytes per block)`.
    pub fn block(self) -> (usize, usize) {
        match self {
            Self::F32 => (1, 4),
            Self::F16 | Self::BF16 => (1, 2),
            Self::Q4_0 => (32, 18),
            Self::Q4_1 => (32, 20),
            Self::Q5_0 => (32, 22),
            Self::Q5_1 => (32, 24),
            Self::Q8_0 => (32, 34),
            Self::Q2_K => (QK_K, 84),
            Self::Q3_K => (QK_K, 110),
            Self::Q4_K => (QK_K, 144),
            Self::Q5_K => (QK_K, 176),
            Self::Q6_K => (QK_K, 210),
            Self::Q8_K => (QK_K, 292),
        }
    }

    /// The name llama.cpp gives the type (`Q4_K`, `BF16`).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2_K => "Q2_K",
            Self::Q3_K => "Q3_K",
            Self::Q4_K => "Q4_K",
            Self::Q5_K => "Q5_K",
            Self::Q6_K => "Q6_K",
            Self::Q8_K => "Q8_K",
        }
    }
}

/// Dequantises whole blocks of `ty` (`data.len()` a multiple of the block's bytes).
pub fn dequantize(ty: GgmlType, data: &[u8]) -> Vec<f32> {
    let (block, block_bytes) = ty.block();
    let mut out = Vec::with_capacity(data.len() / block_bytes * block);
    dequantize_into(ty, data, &mut out);
    out
}

/// [`dequantize`], appending to `out` (a buffer reused across calls).
pub fn dequantize_into(ty: GgmlType, data: &[u8], out: &mut Vec<f32>) {
    let (_, block_bytes) = ty.block();
    for b in data.chunks_exact(block_bytes) {
        match ty {
            GgmlType::F32 => out.push(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
            GgmlType::F16 => out.push(f16(b[0], b[1])),
            GgmlType::BF16 => out.push(f32::from_bits(u32::from(u16::from_le_bytes([b[0], b[1]])) << 16)),
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
            GgmlType::Q5_0 => {
                let d = f16(b[0], b[1]);
                let q = five_bits(u32::from_le_bytes([b[2], b[3], b[4], b[5]]), &b[6..22]);
                out.extend(q.iter().map(|&q| d * (f32::from(q) - 16.0)));
            }
            GgmlType::Q5_1 => {
                let (d, m) = (f16(b[0], b[1]), f16(b[2], b[3]));
                let q = five_bits(u32::from_le_bytes([b[4], b[5], b[6], b[7]]), &b[8..24]);
                out.extend(q.iter().map(|&q| d * f32::from(q) + m));
            }
            GgmlType::Q2_K => q2_k(b, out),
            GgmlType::Q3_K => q3_k(b, out),
            GgmlType::Q4_K => q4_k(b, out),
            GgmlType::Q5_K => q5_k(b, out),
            GgmlType::Q6_K => q6_k(b, out),
            GgmlType::Q8_K => {
                let d = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                out.extend(b[4..4 + QK_K].iter().map(|&q| d * f32::from(q as i8)));
            }
        }
    }
}

/// The 32 five-bit values of a Q5 block: nibble `j` (low) and `j + 16`
/// (high) of `qs`, each with its fifth bit from bit `j` / `j + 16` of `qh`.
fn five_bits(qh: u32, qs: &[u8]) -> [u8; 32] {
    let mut q = [0u8; 32];
    for (j, &byte) in qs.iter().enumerate() {
        q[j] = (byte & 0x0f) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (byte >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

/// Q2_K: 16 groups of 16, each with a 4-bit scale (low) and min (high).
fn q2_k(b: &[u8], out: &mut Vec<f32>) {
    let (scales, qs) = (&b[0..16], &b[16..80]);
    let (d, dmin) = (f16(b[80], b[81]), f16(b[82], b[83]));
    let mut group = 0;
    // Two halves of 128; each byte of a half's 32 holds four 2-bit values,
    // one for each quarter (shift 0, 2, 4, 6), and each quarter is two groups.
    for half in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for bytes in half.chunks_exact(16) {
                let sc = scales[group];
                let (dl, ml) = (d * f32::from(sc & 0x0f), dmin * f32::from(sc >> 4));
                out.extend(bytes.iter().map(|&q| dl * f32::from((q >> shift) & 3) - ml));
                group += 1;
            }
        }
    }
}

/// Q3_K: 16 groups of 16, 6-bit signed scales packed into 12 bytes, 2 low
/// bits per value in `qs` and the third in `hmask` (a clear bit subtracts 4).
fn q3_k(b: &[u8], out: &mut Vec<f32>) {
    let (hmask, qs, packed) = (&b[0..32], &b[32..96], &b[96..108]);
    let d = f16(b[108], b[109]);
    // Scale i: its low 4 bits are nibble (i % 8) of bytes 0..8 (low nibbles
    // first), its high 2 bits are bits 2·(i / 4 % 4) of byte 8 + i % 4.
    let scales: [i8; 16] = std::array::from_fn(|i| {
        let low = if i < 8 { packed[i] & 0x0f } else { packed[i - 8] >> 4 };
        let high = (packed[8 + i % 4] >> (2 * (i / 4))) & 3;
        (low | (high << 4)) as i8 - 32
    });
    let mut group = 0;
    let mut bit = 1u8;
    for half in qs.chunks_exact(32) {
        for shift in [0, 2, 4, 6] {
            for (part, bytes) in half.chunks_exact(16).enumerate() {
                let dl = d * f32::from(scales[group]);
                let highs = &hmask[16 * part..16 * part + 16];
                out.extend(bytes.iter().zip(highs).map(|(&q, &h)| {
                    let low = i8::try_from((q >> shift) & 3).unwrap_or(0);
                    dl * f32::from(low - if h & bit != 0 { 0 } else { 4 })
                }));
                group += 1;
            }
            bit = bit.wrapping_shl(1);
        }
    }
}

/// Scale and min `j` (0..8) of Q4_K / Q5_K's 12 packed bytes: 6 bits each,
/// the first four whole in bytes 0..8, the last four split between the
/// nibbles of bytes 8..12 and the top bits of bytes 0..8.
pub(super) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// Q4_K: 8 groups of 32; bytes 32·i..32·i + 32 of `qs` hold group 2i (low
/// nibbles) and 2i + 1 (high).
fn q4_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16(b[0], b[1]), f16(b[2], b[3]));
    let (packed, qs) = (&b[4..16], &b[16..144]);
    for (i, bytes) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * i, packed);
        let (sc2, m2) = scale_min_k4(2 * i + 1, packed);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        out.extend(bytes.iter().map(|&q| d1 * f32::from(q & 0x0f) - min1));
        out.extend(bytes.iter().map(|&q| d2 * f32::from(q >> 4) - min2));
    }
}

/// Q5_K: Q4_K with a fifth bit per value: bit 2i (group 2i) and 2i + 1
/// (group 2i + 1) of `qh[l]` for element `l` of the group.
fn q5_k(b: &[u8], out: &mut Vec<f32>) {
    let (d, dmin) = (f16(b[0], b[1]), f16(b[2], b[3]));
    let (packed, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (i, bytes) in qs.chunks_exact(32).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * i, packed);
        let (sc2, m2) = scale_min_k4(2 * i + 1, packed);
        let (d1, min1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, min2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let (u1, u2) = (1u8 << (2 * i), 1u8 << (2 * i + 1));
        out.extend(
            bytes.iter().zip(qh).map(|(&q, &h)| d1 * f32::from((q & 0x0f) + if h & u1 != 0 { 16 } else { 0 }) - min1),
        );
        out.extend(
            bytes.iter().zip(qh).map(|(&q, &h)| d2 * f32::from((q >> 4) + if h & u2 != 0 { 16 } else { 0 }) - min2),
        );
    }
}

/// Q6_K: two halves of 128; in each, element `l + 32·k` (k = 0..4) takes a
/// nibble of `ql` (bytes l, l + 32; low then high) and bits 2k..2k+2 of
/// `qh[l]`; 16 groups of 16 with an `i8` scale each.
fn q6_k(b: &[u8], out: &mut Vec<f32>) {
    let (ql, qh, scales) = (&b[0..128], &b[128..192], &b[192..208]);
    let d = f16(b[208], b[209]);
    for half in 0..2 {
        let (ql, qh, sc) = (&ql[64 * half..64 * half + 64], &qh[32 * half..32 * half + 32], &scales[8 * half..]);
        let mut values = [0f32; 128];
        for l in 0..32 {
            let group = l / 16;
            let q = [
                (ql[l] & 0x0f) | ((qh[l] & 3) << 4),
                (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4),
                (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
            ];
            for (k, q) in q.into_iter().enumerate() {
                let scale = f32::from(sc[group + 2 * k] as i8);
                values[l + 32 * k] = d * scale * f32::from(q as i8 - 32);
            }
        }
        out.extend(values);
    }
}

/// IEEE half (little-endian bytes) to `f32`.
pub(crate) fn f16(lo: u8, hi: u8) -> f32 {
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
    fn codes_round_trip_and_blocks_are_ggml_sizes() {
        for ty in GgmlType::ALL {
            assert_eq!(GgmlType::from_code(ty.code()), Some(ty));
        }
        assert_eq!(GgmlType::from_code(4), None, "Q4_2 was removed from ggml");
        // sizeof(block_q*_K) in ggml-common.h.
        let k: Vec<_> = [GgmlType::Q2_K, GgmlType::Q3_K, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K]
            .map(|t| t.block().1)
            .into();
        assert_eq!(k, [84, 110, 144, 176, 210]);
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
    fn q4_k_groups_take_their_own_scale_and_min() {
        // d = 1, dmin = 1; scales 1..=8 and mins 0..8 packed as ggml does.
        let (sc, mn): ([u8; 8], [u8; 8]) = (std::array::from_fn(|j| j as u8 + 1), std::array::from_fn(|j| j as u8));
        let mut packed = [0u8; 12];
        for j in 0..4 {
            packed[j] = sc[j];
            packed[j + 4] = mn[j];
            packed[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
        }
        let mut block = vec![0x00, 0x3c, 0x00, 0x3c];
        block.extend(packed);
        block.extend([0x21u8; 128]); // every low nibble 1, every high nibble 2
        let x = dequantize(GgmlType::Q4_K, &block);
        assert_eq!(x.len(), 256);
        for group in 0..8 {
            let q = if group % 2 == 0 { 1.0 } else { 2.0 };
            assert_eq!(x[32 * group], sc[group] as f32 * q - mn[group] as f32, "group {group}");
        }
    }
}
