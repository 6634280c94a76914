//! Committed tables in an object store (S3 and what speaks its API,
//! through the `object_store` crate). A primary ships its data directory
//! there after each commit ([`Shipper`]): every new or changed file first,
//! the manifest last, so the bucket always holds a committed state under
//! the same layout (DuckDB, Spark or pandas read the Parquet files as they
//! read the directory). A read replica keeps a local mirror of it
//! ([`Mirror`]): the files the manifest lists, then the manifest, which
//! [`crate::Store::follow`] then applies as it applies a shared directory.
//!
//! What stays with the process that made it is never shipped: API keys
//! (`_auth`), the input log, the embedding cache, subscriptions, source
//! state, the drift monitor's state and the generations cache.
//!
//! Credentials and endpoint come from the usual environment variables
//! (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
//! `AWS_ENDPOINT`, `AWS_ALLOW_HTTP`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::manifest::{MANIFEST_FILE, Manifest};
use crate::parquet_io::write_file_atomic;

/// Top-level folders and files a process keeps to itself.
const PRIVATE: &[&str] = &["_auth", "_input_log", "_embed_cache", "_subscriptions", "_sources", "_drift"];

/// Folders whose files the manifest lists (written once, never changed).
const TABLE_DIRS: &[&str] = &["documents", "chunks", "embeddings", "instruct", "drift", "ingest_errors", "traces"];

/// An object store and the prefix a data directory lives under.
pub struct Remote {
    url: String,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    /// `object_store` is async; shippers and mirrors run on threads of their own.
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote").field("url", &self.url).finish_non_exhaustive()
    }
}

/// True when `location` names an object store rather than a directory.
pub fn is_remote(location: &str) -> bool {
    location.starts_with("s3://") || location.starts_with("s3a://")
}

impl Remote {
    /// Opens `url` (`s3://bucket/prefix`), configured from the environment
    /// and then `options` (`object_store`'s names: `aws_endpoint`, …).
    pub fn open(url: &str, options: &BTreeMap<String, String>) -> Result<Remote> {
        let fail = |reason: String| Error::Remote { url: url.to_owned(), reason };
        let parsed = url::Url::parse(url).map_err(|e| fail(format!("not a URL: {e}")))?;
        let bucket = parsed.host_str().ok_or_else(|| fail("no bucket".into()))?;
        let mut builder = object_store::aws::AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in options {
            let key: object_store::aws::AmazonS3ConfigKey =
                key.parse().map_err(|e| fail(format!("unknown option {key:?}: {e}")))?;
            builder = builder.with_config(key, value);
        }
        let store = builder.build().map_err(|e| fail(e.to_string()))?;
        let prefix = ObjectPath::from(parsed.path().trim_matches('/'));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start its runtime: {e}")))?;
        Ok(Remote { url: url.to_owned(), store: Arc::new(store), prefix, runtime })
    }

    /// The URL it was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn location(&self, relative: &str) -> ObjectPath {
        relative.split('/').fold(self.prefix.clone(), |path, part| path.join(part))
    }

    fn relative(&self, location: &ObjectPath) -> Option<String> {
        let parts: Vec<String> = location.prefix_match(&self.prefix)?.map(|p| p.as_ref().to_owned()).collect();
        (!parts.is_empty()).then(|| parts.join("/"))
    }

    fn fail(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Remote { url: self.url.clone(), reason: format!("{what}: {e}") }
    }

    fn put(&self, relative: &str, bytes: Vec<u8>) -> Result<()> {
        let location = self.location(relative);
        self.runtime
            .block_on(self.store.put(&location, PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.fail(&format!("writing {relative}"), e))
    }

    /// The object's bytes, `None` when there is none.
    fn get(&self, relative: &str) -> Result<Option<Vec<u8>>> {
        let location = self.location(relative);
        self.runtime
            .block_on(async {
                match self.store.get(&location).await {
                    Ok(result) => result.bytes().await.map(|b| Some(b.to_vec())),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .map_err(|e| self.fail(&format!("reading {relative}"), e))
    }

    /// The object's size and tag, `None` when there is none.
    fn head(&self, relative: &str) -> Result<Option<object_store::ObjectMeta>> {
        let location = self.location(relative);
        match self.runtime.block_on(self.store.head(&location)) {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.fail(&format!("reading {relative}"), e)),
        }
    }

    fn delete(&self, relative: &str) -> Result<()> {
        let location = self.location(relative);
        match self.runtime.block_on(self.store.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.fail(&format!("deleting {relative}"), e)),
        }
    }

    /// Every object under `folder` (relative), with its size and tag.
    fn list(&self, folder: &str) -> Result<Vec<(String, u64, Option<String>)>> {
        let location = if folder.is_empty() { self.prefix.clone() } else { self.location(folder) };
        let listed: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.store.list(Some(&location)).try_collect())
            .map_err(|e| self.fail(&format!("listing {folder:?}"), e))?;
        Ok(listed.into_iter().filter_map(|m| Some((self.relative(&m.location)?, m.size, m.e_tag))).collect())
    }

    /// The top-level folders under the prefix, and the objects beside them.
    fn top(&self) -> Result<(Vec<String>, Vec<String>)> {
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&self.prefix)))
            .map_err(|e| self.fail("listing the top level", e))?;
        let folders = listed.common_prefixes.iter().filter_map(|p| self.relative(p)).collect();
        let files = listed.objects.iter().filter_map(|m| self.relative(&m.location)).collect();
        Ok((folders, files))
    }
}

/// True for a path (relative to the data directory) that is shipped.
fn shipped(relative: &str) -> bool {
    let top = relative.split('/').next().unwrap_or("");
    let name = relative.rsplit('/').next().unwrap_or("");
    !PRIVATE.contains(&top)
        && !top.starts_with("_process-")
        && !relative.starts_with("datasets/_cache")
        && !name.starts_with('.')
        && !name.ends_with(".tmp")
}

/// What one [`Shipper::ship`] sent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Shipped {
    pub files: usize,
    pub bytes: u64,
    pub deleted: usize,
    /// The committed epoch of the manifest shipped (`None`: unchanged).
    pub epoch: Option<u64>,
}

/// Ships a primary's data directory to a [`Remote`].
#[derive(Debug)]
pub struct Shipper {
    remote: Remote,
    dir: PathBuf,
    /// Relative path → (size, modified) as last shipped.
    sent: Mutex<HashMap<String, (u64, SystemTime)>>,
    /// The files the shipped manifest lists: never deleted while it does.
    listed: Mutex<std::collections::HashSet<String>>,
}

impl Shipper {
    /// Ships `dir` to `remote` from now on; files already there with the
    /// same size are taken as shipped when the manifest lists them (those
    /// are never rewritten), every other file is sent again once.
    pub fn new(remote: Remote, dir: &Path) -> Result<Shipper> {
        let mut sent = HashMap::new();
        for (relative, size, _) in remote.list("")? {
            let top = relative.split('/').next().unwrap_or("");
            let local = dir.join(&relative);
            if TABLE_DIRS.contains(&top)
                && let Ok(meta) = std::fs::metadata(&local)
                && meta.len() == size
            {
                sent.insert(relative, (size, meta.modified().unwrap_or(SystemTime::UNIX_EPOCH)));
            }
        }
        Ok(Shipper { remote, dir: dir.to_owned(), sent: Mutex::new(sent), listed: Mutex::default() })
    }

    /// The remote it ships to.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Sends every new or changed file, then the manifest, then deletes the
    /// objects whose files are gone (old snapshots): the remote manifest
    /// never names an object that is not there.
    pub fn ship(&self) -> Result<Shipped> {
        let mut sent = self.sent.lock();
        let mut shipped = Shipped::default();
        // The manifest is read first: every file it names was written before
        // it, so the walk after it finds them all, and it goes up last.
        let path = self.dir.join(MANIFEST_FILE);
        let manifest = match std::fs::metadata(&path) {
            Ok(meta) => {
                let mark = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
                let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
                (sent.get(MANIFEST_FILE) != Some(&mark)).then_some((mark, bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut present = Vec::new();
        walk(&self.dir, &self.dir, &mut present)?;
        for (relative, meta) in &present {
            let mark = (meta.len(), meta.modified().unwrap_or(SystemTime::UNIX_EPOCH));
            if relative == MANIFEST_FILE || sent.get(relative) == Some(&mark) {
                continue;
            }
            let bytes = std::fs::read(self.dir.join(relative)).map_err(|e| Error::io(self.dir.join(relative), e))?;
            shipped.bytes += bytes.len() as u64;
            self.remote.put(relative, bytes)?;
            sent.insert(relative.clone(), mark);
            shipped.files += 1;
        }
        if let Some((mark, bytes)) = manifest {
            let parsed: Manifest = serde_json::from_slice(&bytes)
                .map_err(|e| Error::corrupt(&path, format!("not a valid manifest ({e})")))?;
            // The files it names were read from disk before it: shipped above, or earlier.
            shipped.bytes += bytes.len() as u64;
            self.remote.put(MANIFEST_FILE, bytes)?;
            sent.insert(MANIFEST_FILE.to_owned(), mark);
            shipped.files += 1;
            shipped.epoch = Some(parsed.committed_epoch);
            *self.listed.lock() = listed_files(&parsed).into_iter().collect();
        }
        // Files gone here (old snapshots) go there too, once the manifest there no longer lists them.
        let listed = self.listed.lock();
        let here: std::collections::HashSet<&String> = present.iter().map(|(r, _)| r).collect();
        let gone: Vec<String> = sent.keys().filter(|r| !here.contains(r) && !listed.contains(*r)).cloned().collect();
        for relative in gone {
            self.remote.delete(&relative)?;
            sent.remove(&relative);
            shipped.deleted += 1;
        }
        Ok(shipped)
    }
}

/// The shipped files under `dir`, relative to `root`, with their metadata.
fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, std::fs::Metadata)>) -> Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(dir, e)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let Ok(relative) = path.strip_prefix(root) else { continue };
        let relative = relative.to_string_lossy().replace('\\', "/");
        if !shipped(&relative) {
            continue;
        }
        // A file removed meanwhile (a snapshot dropped) is simply not there.
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            walk(root, &path, out)?;
        } else if meta.is_file() {
            out.push((relative, meta));
        }
    }
    Ok(())
}

/// A replica's local copy of a [`Remote`] data directory.
#[derive(Debug)]
pub struct Mirror {
    remote: Remote,
    dir: PathBuf,
    /// The manifest as last fetched.
    manifest: Mutex<Option<Vec<u8>>>,
    /// Relative path → tag (or size) of the other files as last fetched.
    others: Mutex<BTreeMap<String, String>>,
}

impl Mirror {
    /// A mirror of `remote` in `dir` (created).
    pub fn new(remote: Remote, dir: &Path) -> Result<Mirror> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        Ok(Mirror { remote, dir: dir.to_owned(), manifest: Mutex::default(), others: Mutex::default() })
    }

    /// The remote it mirrors.
    pub fn remote(&self) -> &Remote {
        &self.remote
    }

    /// Fetches the remote manifest; when it changed, every file it lists
    /// that is not here yet, then the manifest itself (replaced atomically).
    /// Returns whether the manifest changed.
    pub fn pull_tables(&self) -> Result<bool> {
        let Some(bytes) = self.remote.get(MANIFEST_FILE)? else { return Ok(false) };
        let mut last = self.manifest.lock();
        if last.as_deref() == Some(bytes.as_slice()) {
            return Ok(false);
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| self.remote.fail("reading the manifest", format!("not a valid manifest ({e})")))?;
        for relative in listed_files(&manifest) {
            let local = self.dir.join(&relative);
            if local.is_file() {
                continue;
            }
            let data = self
                .remote
                .get(&relative)?
                .ok_or_else(|| self.remote.fail("reading a listed file", format!("{relative} is missing")))?;
            write_file_atomic(&local, &data)?;
        }
        write_file_atomic(&self.dir.join(MANIFEST_FILE), &bytes)?;
        *last = Some(bytes);
        Ok(true)
    }

    /// Fetches the files beside the tables that changed: the vector graphs
    /// saved with snapshots, the model registries, evaluations, datasets.
    /// Returns how many.
    pub fn pull_others(&self) -> Result<usize> {
        let (folders, files) = self.remote.top()?;
        let mut wanted = Vec::new();
        for folder in folders.iter().filter(|f| !TABLE_DIRS.contains(&f.as_str()) && shipped(f)) {
            wanted.extend(self.remote.list(folder)?);
        }
        for file in files.iter().filter(|f| f.as_str() != MANIFEST_FILE && shipped(f)) {
            if let Some(meta) = self.remote.head(file)? {
                wanted.push((file.clone(), meta.size, meta.e_tag));
            }
        }
        let mut others = self.others.lock();
        let mut fetched = 0;
        for (relative, size, tag) in wanted {
            let tag = tag.unwrap_or_else(|| size.to_string());
            if others.get(&relative) == Some(&tag) || !shipped(&relative) {
                continue;
            }
            if let Some(data) = self.remote.get(&relative)? {
                write_file_atomic(&self.dir.join(&relative), &data)?;
                others.insert(relative, tag);
                fetched += 1;
            }
        }
        Ok(fetched)
    }
}

/// Every file a manifest names: epochs' parts and logs, snapshots' parts.
fn listed_files(manifest: &Manifest) -> Vec<String> {
    let mut files = Vec::new();
    for entry in &manifest.epochs {
        files.extend(entry.files.values().flatten().cloned());
        files.extend(entry.drift.iter().cloned());
        files.extend(entry.ingest_errors.iter().cloned());
        files.extend(entry.traces.iter().cloned());
    }
    for snapshot in &manifest.snapshots {
        files.extend(snapshot.files.values().flatten().cloned());
    }
    files
}

#[cfg(test)]
mod tests {
    use super::shipped;

    #[test]
    fn what_stays_with_the_process_is_not_shipped() {
        for path in
            ["_manifest.json", "chunks/epoch=3/part-0.parquet", "_index/v1/shard-0.usearch", "_models/index.json"]
        {
            assert!(shipped(path), "{path}");
        }
        for path in [
            "_auth/admin.key",
            "_input_log/segment-1",
            "_embed_cache/minilm.vec",
            "_subscriptions/x.json",
            "_process-1/_embed_cache/x",
            "datasets/_cache/generations.jsonl",
            "chunks/epoch=3/.part-0.parquet.tmp",
        ] {
            assert!(!shipped(path), "{path}");
        }
    }
}
