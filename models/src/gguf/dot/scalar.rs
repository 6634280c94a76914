//! The plain loops: integer sums per block, as the SIMD kernels compute them.

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
