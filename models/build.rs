//! Links OpenBLAS when the opt-in `openblas` feature is on (ndarray's `blas`
//! feature calls `cblas_sgemm` and leaves the choice of library to the final
//! binary); without the feature it does nothing, and the fused paths' products
//! run on the pure-Rust `gemm` crate (`src/matmul.rs`).
//!
//! Debian's threaded build (`apt-get install libopenblas-dev`) is linked
//! statically, so the binary neither needs nor picks up another libopenblas at
//! run time. It is the threaded build because only that one may be called from
//! several threads at once (the serial build shares its buffers unlocked:
//! measured, concurrent calls corrupted each other's results); the fused path
//! then sets it to one thread per call (`blas.rs`) and runs the calls on rayon's
//! threads itself, since OpenBLAS's own threads spin against rayon's (measured:
//! 2.7× slower). `TWINFLOW_OPENBLAS_DIR` names another directory holding a
//! threaded `libopenblas.a`.

use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var_os("CARGO_FEATURE_OPENBLAS").is_none() {
        return;
    }
    println!("cargo:rerun-if-env-changed=TWINFLOW_OPENBLAS_DIR");
    let dir = std::env::var_os("TWINFLOW_OPENBLAS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/lib/x86_64-linux-gnu/openblas-pthread"));
    if !dir.join("libopenblas.a").exists() {
        eprintln!(
            "error: the `openblas` feature of twinflow-models needs OpenBLAS: {} has no libopenblas.a.\n\
             Install it with `apt-get install libopenblas-dev` (Debian/Ubuntu), set \
             TWINFLOW_OPENBLAS_DIR to a directory with a threaded libopenblas.a, or build \
             without the feature: the default pure-Rust `gemm` needs no system library.",
            dir.display()
        );
        std::process::exit(1);
    }
    println!("cargo:rustc-link-search=native={}", dir.display());
    println!("cargo:rustc-link-lib=static:-bundle=openblas");
    println!("cargo:rustc-link-lib=dylib=pthread");
    println!("cargo:rustc-link-lib=dylib=m");
}
