//! The matrix products of the fused CPU paths (`bert/fused.rs`,
//! `llama/fused.rs`): every one goes through [`matmul`], so the library that
//! computes them is chosen here and nowhere else.
//!
//! ```text
//!  fused path ─▶ matmul(α, a, b, β, c) ─┬─ Backend::Gemm      the `gemm` crate (default, pure Rust)
//!                                       └─ Backend::OpenBlas  cblas_sgemm / sgemv (`openblas` feature)
//! ```
//!
//! By default the products run on `gemm`, the pure-Rust kernels behind faer
//! and candle: it picks AVX-512, AVX2+FMA or NEON at run time, needs no
//! system library and handles strided and transposed views directly. Each
//! call is single-threaded (`Parallelism::None`): the fused paths already
//! give every rayon thread its own block of rows or columns.
//!
//! The `openblas` feature adds Debian's OpenBLAS (`build.rs` links it) as an
//! opt-in alternative and makes it the process's default; [`set_backend`]
//! switches between the two at run time, so `twinflow-bench embed` times both
//! on the same texts in one run.

use std::sync::atomic::{AtomicU8, Ordering};

use ndarray::{ArrayView2, ArrayViewMut2};

/// The library that computes the fused paths' matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The `gemm` crate: pure Rust, runtime dispatch to AVX-512 / AVX2 / NEON.
    Gemm,
    /// The system OpenBLAS (`openblas` feature).
    #[cfg(feature = "openblas")]
    OpenBlas,
}

impl Backend {
    /// Every backend compiled into this build, the default first.
    #[cfg(feature = "openblas")]
    pub const AVAILABLE: &[Backend] = &[Backend::OpenBlas, Backend::Gemm];
    /// Every backend compiled into this build, the default first.
    #[cfg(not(feature = "openblas"))]
    pub const AVAILABLE: &[Backend] = &[Backend::Gemm];

    /// `"gemm"` or `"openblas"`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Gemm => "gemm",
            #[cfg(feature = "openblas")]
            Backend::OpenBlas => "openblas",
        }
    }
}

/// Index into [`Backend::AVAILABLE`] of the backend in use; 0 is the default.
static CURRENT: AtomicU8 = AtomicU8::new(0);

/// The backend the fused paths' products run on now.
pub fn backend() -> Backend {
    Backend::AVAILABLE[CURRENT.load(Ordering::Relaxed) as usize % Backend::AVAILABLE.len()]
}

/// Runs every later product of the process on `backend` (a benchmark's switch:
/// products already under way finish on the one they started with).
pub fn set_backend(backend: Backend) {
    let index = Backend::AVAILABLE.iter().position(|&b| b == backend).unwrap_or(0);
    CURRENT.store(index as u8, Ordering::Relaxed);
}

/// `c ← α·a·b + β·c` on the calling thread, for any strides (transposed and
/// sliced views included). With `β = 0`, `c`'s old values are not read.
///
/// # Panics
///
/// If the shapes do not chain: `a` `[m, k]`, `b` `[k, n]`, `c` `[m, n]`.
pub(crate) fn matmul(alpha: f32, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, beta: f32, c: ArrayViewMut2<'_, f32>) {
    let ((m, k), (k2, n)) = (a.dim(), b.dim());
    assert!(k == k2 && c.dim() == (m, n), "matmul of [{m}, {k}] by [{k2}, {n}] into {:?}", c.dim());
    match backend() {
        Backend::Gemm => gemm_f32(alpha, a, b, beta, c),
        #[cfg(feature = "openblas")]
        Backend::OpenBlas => openblas(alpha, a, b, beta, c),
    }
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

/// Through ndarray's `blas` feature: `cblas_sgemm`, or `cblas_sgemv` for one
/// row (decoding), which streams the weights once instead of packing them.
#[cfg(feature = "openblas")]
fn openblas(alpha: f32, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, beta: f32, mut c: ArrayViewMut2<'_, f32>) {
    crate::blas::single_threaded();
    if a.nrows() == 1 {
        ndarray::linalg::general_mat_vec_mul(alpha, &b.t(), &a.row(0), beta, &mut c.row_mut(0));
    } else {
        ndarray::linalg::general_mat_mul(alpha, &a, &b, beta, &mut c);
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{Array2, s};

    use super::*;

    /// Seeded values in [-1, 1).
    fn matrix(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
        let mut rng = twinflow_schemas::rng::SeededRng::new(seed);
        Array2::from_shape_fn((rows, cols), |_| (rng.unit() * 2.0 - 1.0) as f32)
    }

    /// `α·a·b + β·c` by the textbook triple loop, in f64.
    fn naive(alpha: f32, a: ArrayView2<'_, f32>, b: ArrayView2<'_, f32>, beta: f32, c: &Array2<f32>) -> Array2<f32> {
        Array2::from_shape_fn(c.dim(), |(i, j)| {
            let dot: f64 = (0..a.ncols()).map(|p| f64::from(a[[i, p]]) * f64::from(b[[p, j]])).sum();
            (f64::from(alpha) * dot + f64::from(beta) * f64::from(c[[i, j]])) as f32
        })
    }

    /// Equal up to f32 rounding over sums of `k` products of values in [-1, 1).
    fn assert_close(got: &Array2<f32>, want: &Array2<f32>, k: usize, what: &str) {
        let worst = got.iter().zip(want).map(|(g, w)| (g - w).abs()).fold(0f32, f32::max);
        assert!(worst <= 1e-5 * k.max(1) as f32, "{what}: off by {worst}");
    }

    /// The shapes and layouts the fused paths use: row blocks times a weight
    /// (β = 1 accumulating onto bias rows), Q·Kᵀ of column slices, one row
    /// times a transposed weight (decoding), and a product into a column block.
    #[test]
    fn every_backend_matches_the_triple_loop_on_the_fused_paths_layouts() {
        for &backend in Backend::AVAILABLE {
            set_backend(backend);
            let what = |case: &str| format!("{}: {case}", backend.name());
            for (m, k, n) in [(1, 1, 1), (7, 384, 1152), (119, 1536, 384), (33, 5, 70)] {
                let (a, b, c0) = (matrix(m, k, 1), matrix(k, n, 2), matrix(m, n, 3));
                for (alpha, beta) in [(1.0, 1.0), (0.25, 0.0), (1.0, -0.5)] {
                    let mut c = c0.clone();
                    matmul(alpha, a.view(), b.view(), beta, c.view_mut());
                    assert_close(&c, &naive(alpha, a.view(), b.view(), beta, &c0), k, &what(&format!("{m}×{k}×{n}")));
                }
            }
            // Q·Kᵀ/√d over column slices of a packed [rows, 3h] matrix.
            let qkv = matrix(50, 96, 4);
            let (q, kt) = (qkv.slice(s![.., 0..32]), qkv.slice(s![.., 32..64]).reversed_axes());
            let mut scores = Array2::from_elem((50, 50), f32::NAN);
            matmul(0.125, q, kt, 0.0, scores.view_mut());
            let zeros = Array2::zeros((50, 50));
            assert_close(&scores, &naive(0.125, q, kt, 0.0, &zeros), 32, &what("Q·Kᵀ of slices, NaN not read"));
            // One token times a transposed [out, in] weight, into a column block of the output.
            let (x, w) = (matrix(1, 576, 5), matrix(1536, 576, 6));
            let mut y = Array2::zeros((1, 3072));
            matmul(1.0, x.view(), w.t(), 0.0, y.slice_mut(s![.., 1536..]));
            let want = naive(1.0, x.view(), w.t(), 0.0, &Array2::zeros((1, 1536)));
            assert_close(&y.slice(s![.., 1536..]).to_owned(), &want, 576, &what("decode row"));
            assert!(y.slice(s![.., ..1536]).iter().all(|&v| v == 0.0), "{}", what("wrote outside its block"));
        }
        set_backend(Backend::AVAILABLE[0]);
    }
}
