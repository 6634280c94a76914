//! The matrix products of the fused CPU paths (`bert/fused.rs`,
//! `llama/fused.rs`): every one goes through [`matmul`], so the library that
//! computes them is chosen here and nowhere else.
//!
//! They run on `gemm`, the pure-Rust kernels behind faer and candle: it picks
//! AVX-512, AVX2+FMA or NEON at run time, needs no system library and handles
//! strided and transposed views directly. Each call is single-threaded
//! (`Parallelism::None`): the fused paths already give every rayon thread its
//! own block of rows or columns.
//!
//! Debian's OpenBLAS was an opt-in alternative until it measured slower where
//! it matters (issue 19, `twinflow-bench generate` and `embed`, 2 threads):
//! the encoder 0.96× gemm's speed, LLM decoding 0.82–0.85×; only the prefill
//! of short prompts was faster (1.42× at 42 tokens, 1.08× at 1,005).

use ndarray::{ArrayView2, ArrayViewMut2};

/// `c ← α·a·b + β·c` on the calling thread, for any strides (transposed and
/// sliced views included). With `β = 0`, `c`'s old values are not read.
///
/// # Panics
///
/// If the shapes do not chain: `a` `[m, k]`, `b` `[k, n]`, `c` `[m, n]`.
pub(crate) fn matmul(alpha: f32, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, beta: f32, c: ArrayViewMut2<'_, f32>) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(k == k2 && c.dim() == (m, n), "matmul of [{m}, {k}] by [{k2}, {n}] into {:?}", c.dim());
    gemm_f32(alpha, a, b, beta, c);
}

#[allow(unsafe_code)] // gemm's one entry point is an `unsafe fn` over raw parts; see models/Cargo.toml.
fn gemm_f32(alpha: f32, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, beta: f32, mut c: ArrayViewMut2<'_, f32>) {
    let ((m, k), n) = (a.dim(), b.ncols());
    let (a_rs, a_cs) = (a.strides()[0], a.strides()[1]);
    let (b_rs, b_cs) = (b.strides()[0], b.strides()[1]);
    let (c_rs, c_cs) = (c.strides()[0], c.strides()[1]);
    // SAFETY: each pointer is the first element of a view whose shape (checked
    // by `matmul` to chain as m×k · k×n → m×n) and strides are the ones passed,
    // so every element gemm addresses, `ptr + i·rs + j·cs` inside that shape,
    // lies in the view's allocation; negative strides are allowed by gemm. `c`
    // is borrowed mutably, so it overlaps neither `a` nor `b`, and gemm writes
    // only `c`'s elements. f32 is one of gemm's types, so it does not panic.
    // gemm computes dst ← alpha·dst + beta·lhs·rhs: our α and β swap places.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            c_cs,
            c_rs,
            beta != 0.0,
            a.as_ptr(),
            a_cs,
            a_rs,
            b.as_ptr(),
            b_cs,
            b_rs,
            beta,
            alpha,
            false,
            false,
            false,
            gemm::Parallelism::None,
        )
    }
}
