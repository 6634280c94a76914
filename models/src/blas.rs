//! Choosing OpenBLAS's kernels for this CPU, with the opt-in `openblas`
//! feature (`matmul.rs`); without it everything here does nothing.
//!
//! OpenBLAS picks its kernels once, when the library initialises (before
//! `main`), from the CPU id or from `OPENBLAS_CORETYPE`. Debian 12's 0.3.21
//! does not know AMD's Zen 5 and falls back to its AVX2 (Haswell) kernels,
//! although the CPU has AVX-512; its SkylakeX kernels ran the MiniLM forward
//! pass 1.65× faster here (`twinflow-bench embed`, issue 3 notes). Since the
//! choice is made before any of our code runs, the only way to make it is the
//! process environment: [`select_kernels`] re-executes the program with
//! `OPENBLAS_CORETYPE=SkylakeX` when that is safe and better.

/// Makes every OpenBLAS call run on the calling thread only, once per process.
///
/// The fused path calls BLAS from rayon's threads, one row block each, so
/// OpenBLAS's own thread pool would only compete with rayon's for the cores.
#[cfg(feature = "openblas")]
pub(crate) fn single_threaded() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(ffi::set_one_thread);
}

#[cfg(feature = "openblas")]
#[allow(unsafe_code)] // The one FFI call of the workspace; see models/Cargo.toml.
mod ffi {
    unsafe extern "C" {
        fn openblas_set_num_threads(num_threads: std::ffi::c_int);
    }

    pub(super) fn set_one_thread() {
        // SAFETY: a plain setter of OpenBLAS (linked by build.rs) taking an int;
        // it touches only OpenBLAS's own globals and may be called at any time.
        unsafe { openblas_set_num_threads(1) }
    }
}

/// The variable OpenBLAS reads.
pub const CORETYPE_VAR: &str = "OPENBLAS_CORETYPE";

/// The kernels OpenBLAS should use on this CPU when it would choose worse by
/// itself: `Some("SkylakeX")` on an AMD CPU with AVX-512 F/CD/BW/DQ/VL.
pub fn preferred_coretype() -> Option<&'static str> {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    {
        let avx512 = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512cd")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512dq")
            && std::arch::is_x86_feature_detected!("avx512vl");
        let amd = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| info.contains("AuthenticAMD"));
        if avx512 && amd {
            return Some("SkylakeX");
        }
    }
    None
}

/// Call first thing in `main`. With the `openblas` feature, when
/// `OPENBLAS_CORETYPE` is unset and [`preferred_coretype`] names better
/// kernels, replaces the process with the same program, arguments and
/// environment plus `OPENBLAS_CORETYPE` (same pid; nothing has run yet).
/// Returns when there is nothing to do, or if the re-execution failed (the
/// program then simply runs with OpenBLAS's own choice). Setting the variable
/// yourself, to any value, turns this off.
pub fn select_kernels() {
    if !cfg!(feature = "openblas") || std::env::var_os(CORETYPE_VAR).is_some() {
        return;
    }
    let Some(coretype) = preferred_coretype() else { return };
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let Ok(exe) = std::env::current_exe() else { return };
        let mut args = std::env::args_os();
        let mut command = std::process::Command::new(exe);
        if let Some(arg0) = args.next() {
            command.arg0(arg0);
        }
        let error = command.args(args).env(CORETYPE_VAR, coretype).exec();
        eprintln!("note: could not re-execute with {CORETYPE_VAR}={coretype} ({error}); using OpenBLAS's own kernels");
    }
    #[cfg(not(unix))]
    let _ = coretype;
}
