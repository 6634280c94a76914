//! The persistent embedding cache: every vector the model computes is
//! appended to `<data>/_embed_cache/<model>.vec`, keyed by chunk hash, so
//! after a restart (a crash before the commit, a document deleted and
//! added again) no text is encoded twice by the same model.
//!
//! ```text
//!  header  = "TWVC1\n" │ dim: u32 LE │ model id length: u32 LE │ model id
//!  record  = chunk hash: u128 LE │ dim × f32 LE
//! ```
//!
//! - Vectors of committed chunks are also in the `embeddings` table (they
//!   are restored from there); the file matters for the others. At open it is
//!   compacted to the newest [`KEEP`] records that are not live.
//! - Appends are buffered and flushed per batch, not fsynced: it is a cache.
//!   An append that fails (a full disk) is cut off the file, so later
//!   records stay aligned; if it cannot be cut, appends stop. A torn last
//!   record (a crash) is ignored; a file of another model or dimension,
//!   or with a bad header, is set aside (`.bad`) and a new one started.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use twinflow_schemas::ids::Hash128;

use crate::error::{Error, Result};

/// The cache's folder under the data directory.
pub const VECTOR_CACHE_DIR: &str = "_embed_cache";
/// Records kept at open besides the live ones (which the tables hold).
pub const KEEP: usize = 200_000;
const MAGIC: &[u8] = b"TWVC1\n";

/// One model's cache file. See the module documentation.
#[derive(Debug)]
pub struct VectorCache {
    path: PathBuf,
    dim: usize,
    writer: Mutex<Appender>,
}

/// The open file, its length after the last whole append, and whether
/// appends stopped (a failed append could not be cut off).
#[derive(Debug)]
struct Appender {
    out: Option<BufWriter<File>>,
    len: u64,
}

fn header(model_id: &str, dim: usize) -> Vec<u8> {
    let mut header = MAGIC.to_vec();
    header.extend_from_slice(&(dim as u32).to_le_bytes());
    header.extend_from_slice(&(model_id.len() as u32).to_le_bytes());
    header.extend_from_slice(model_id.as_bytes());
    header
}

fn file_name(model_id: &str) -> String {
    let safe: String =
        model_id.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.@".contains(c) { c } else { '_' }).collect();
    format!("{safe}.vec")
}

impl VectorCache {
    /// Opens (creating) the cache of `model_id` vectors of `dim` under
    /// `data_dir`, compacts it against the `live` chunk hashes, and returns
    /// the vectors it keeps (to seed the in-memory cache).
    pub fn open(
        data_dir: &Path,
        model_id: &str,
        dim: usize,
        live: &HashSet<Hash128>,
    ) -> Result<(Self, Vec<(Hash128, Vec<f32>)>)> {
        let dir = data_dir.join(VECTOR_CACHE_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(file_name(model_id));
        let expected = header(model_id, dim);
        let mut kept = Vec::new();
        let mut total = 0;
        if path.exists() {
            let mut bytes = Vec::new();
            File::open(&path).and_then(|mut f| f.read_to_end(&mut bytes)).map_err(|e| Error::io(&path, e))?;
            if bytes.starts_with(&expected) {
                let record = 16 + 4 * dim;
                for chunk in bytes[expected.len()..].chunks_exact(record) {
                    total += 1;
                    let hash = Hash128(u128::from_le_bytes(chunk[..16].try_into().expect("16 bytes")));
                    if live.contains(&hash) {
                        continue;
                    }
                    let vector =
                        chunk[16..].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4 bytes")));
                    kept.push((hash, vector.collect::<Vec<f32>>()));
                }
                let mut seen = HashSet::new();
                // The newest record of each hash, the newest KEEP of them.
                kept.reverse();
                kept.retain(|(hash, _)| seen.insert(*hash));
                kept.truncate(KEEP);
                kept.reverse();
            } else {
                let aside = path.with_extension("vec.bad");
                tracing::warn!(file = %path.display(), aside = %aside.display(), "embedding cache of another model or damaged: set aside");
                std::fs::rename(&path, &aside).map_err(|e| Error::io(&path, e))?;
            }
        }
        // Rewrite what is kept (through a temporary file and a rename).
        let mut out = Vec::with_capacity(expected.len() + kept.len() * (16 + 4 * dim));
        out.extend_from_slice(&expected);
        for (hash, vector) in &kept {
            write_record(&mut out, *hash, vector).map_err(|e| Error::io(&path, e))?;
        }
        twinflow_schemas::fs::write_atomic(&path, &out).map_err(|e| Error::io(&path, e))?;
        if total > kept.len() {
            tracing::info!(file = %path.display(), records = total, kept = kept.len(), "embedding cache compacted");
        }
        let file = OpenOptions::new().append(true).open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        Ok((Self { path, dim, writer: Mutex::new(Appender { out: Some(BufWriter::new(file)), len }) }, kept))
    }

    /// Appends computed vectors (those of another dimension are skipped).
    /// On failure nothing of this call stays in the file.
    pub fn append(&self, vectors: &[(Hash128, &[f32])]) -> Result<()> {
        let mut appender = self.writer.lock();
        let Appender { out, len } = &mut *appender;
        let Some(writer) = out.as_mut() else {
            return Err(Error::io(&self.path, std::io::Error::other("appends stopped after a failed write")));
        };
        let mut added = 0u64;
        let mut write = || -> std::io::Result<()> {
            for (hash, vector) in vectors.iter().filter(|(_, v)| v.len() == self.dim) {
                write_record(&mut *writer, *hash, vector)?;
                added += (16 + 4 * vector.len()) as u64;
            }
            writer.flush()
        };
        match write() {
            Ok(()) => {
                *len += added;
                Ok(())
            }
            Err(e) => {
                // Drop what is buffered, cut what reached the file: the records after stay aligned.
                let (file, _) = out.take().expect("checked above").into_parts();
                match file.set_len(*len) {
                    Ok(()) => *out = Some(BufWriter::new(file)),
                    Err(cut) => tracing::error!(
                        file = %self.path.display(), error = %cut,
                        "could not cut a failed append off the embedding cache; no more appends this run"
                    ),
                }
                Err(Error::io(&self.path, e))
            }
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn write_record(out: &mut impl Write, hash: Hash128, vector: &[f32]) -> std::io::Result<()> {
    out.write_all(&hash.0.to_le_bytes())?;
    for x in vector {
        out.write_all(&x.to_le_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_survive_reopen_live_ones_are_dropped_and_another_model_starts_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let none = HashSet::new();
        let (cache, kept) = VectorCache::open(dir.path(), "m@1", 3, &none).unwrap();
        assert!(kept.is_empty());
        cache.append(&[(Hash128(1), &[1.0, 2.0, 3.0]), (Hash128(2), &[4.0, 5.0, 6.0])]).unwrap();
        cache.append(&[(Hash128(1), &[7.0, 8.0, 9.0])]).unwrap();
        drop(cache);
        // A torn record at the end is ignored.
        let path = dir.path().join(VECTOR_CACHE_DIR).join("m@1.vec");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[1, 2, 3]).unwrap();
        drop(f);

        let live: HashSet<Hash128> = [Hash128(2)].into();
        let (cache, kept) = VectorCache::open(dir.path(), "m@1", 3, &live).unwrap();
        assert_eq!(kept, vec![(Hash128(1), vec![7.0, 8.0, 9.0])], "the newest of hash 1; hash 2 is live");
        drop(cache);
        let (_, kept) = VectorCache::open(dir.path(), "m@1", 3, &none).unwrap();
        assert_eq!(kept.len(), 1, "compacted at the last open");

        let (_, kept) = VectorCache::open(dir.path(), "m@1", 4, &none).unwrap();
        assert!(kept.is_empty(), "another dimension starts fresh");
        assert!(path.with_extension("vec.bad").exists(), "the old file is set aside");
    }
}
