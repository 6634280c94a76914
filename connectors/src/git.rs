//! The git repository source: the files at the head of a branch as
//! `repository` documents, then exactly what each new commit changed.
//!
//! ```text
//!  open: committed position {"commit": C}? ─no─▶ every file of HEAD's tree ─▶ upserts
//!                                          └yes─▶ diff(C's tree, HEAD's tree) ─▶ added/modified: upserts
//!                                                                                deleted: deletes
//!  poll every `poll` ─▶ HEAD moved? ─▶ the same diff from the last position
//!  each look ends with the position {"commit": HEAD} (committed with the epoch of its changes)
//! ```
//!
//! Files are filtered by `include`/`exclude` globs, binary files (libgit2's
//! heuristic, or invalid UTF-8) are skipped, files over `max_file` become
//! ingest errors. A rename is a delete and an add. If the committed commit
//! is no longer in the repository (history rewritten), every file of HEAD is
//! upserted again; documents of files deleted meanwhile cannot be known and stay.

use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;
use git2::{Delta, ObjectType, Oid, Repository, Tree, TreeWalkMode, TreeWalkResult};
use globset::{Glob, GlobSet, GlobSetBuilder};
use twinflow_schemas::config::GitSourceConfig;
use twinflow_schemas::{ContentFormat, Document, DocumentChange, DocumentKind};

use crate::handle::{Halt, Outbox};
use crate::{Error, Result, SourceEvent, SourceHandle, SourcePosition};

/// Changes sent per event.
const BATCH: usize = 64;

/// The source; see the module docs.
#[derive(Debug)]
pub struct GitSource;

impl GitSource {
    /// Opens the repository (fatal if it cannot be, or the branch does not
    /// exist) and follows it on a thread from `resume` (the committed position).
    pub fn spawn(
        name: String,
        config: GitSourceConfig,
        resume: Option<SourcePosition>,
        tx: Sender<SourceEvent>,
    ) -> Result<SourceHandle> {
        let follower = Follower::open(&name, config, resume)?;
        SourceHandle::spawn(name, tx, move |outbox| follower.run(&outbox))
    }
}

struct Follower {
    config: GitSourceConfig,
    path: PathBuf,
    /// The repository's directory name: documents are `git:<repo>/<path>`.
    /// What the files' `doc_id`s start with.
    id_prefix: String,
    include: Option<GlobSet>,
    exclude: Option<GlobSet>,
    last: Option<Oid>,
    /// The first look sends its position even when nothing changed (the
    /// position the source resumed from, confirmed).
    looked: bool,
}

fn git_error(config: &GitSourceConfig, e: &git2::Error) -> Error {
    let retryable = matches!(e.code(), git2::ErrorCode::Locked | git2::ErrorCode::Modified);
    Error::Git { repo: config.repo.clone(), reason: e.message().to_owned(), retryable }
}

fn globs(name: &str, patterns: &[String]) -> Result<Option<GlobSet>> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = Glob::new(pattern).map_err(|e| Error::Config {
            source_name: name.to_owned(),
            reason: format!("bad glob {pattern:?}: {e}"),
        })?;
        builder.add(glob);
    }
    builder.build().map(Some).map_err(|e| Error::Config { source_name: name.to_owned(), reason: e.to_string() })
}

impl Follower {
    fn open(name: &str, config: GitSourceConfig, resume: Option<SourcePosition>) -> Result<Self> {
        let path = config.path();
        let follower = Self {
            include: globs(name, &config.include)?,
            exclude: globs(name, &config.exclude)?,
            id_prefix: config.id_prefix(),
            last: resume.as_ref().and_then(|p| p.get("commit")?.as_str().and_then(|c| Oid::from_str(c).ok())),
            path,
            config,
            looked: false,
        };
        // Fail now on a missing repository or branch, not in the thread.
        let repo = follower.repository()?;
        follower.head(&repo)?;
        Ok(follower)
    }

    fn repository(&self) -> Result<Repository> {
        Repository::open(&self.path).map_err(|e| git_error(&self.config, &e))
    }

    /// The commit at the head of the followed branch.
    fn head(&self, repo: &Repository) -> Result<Oid> {
        let reference = match &self.config.branch {
            Some(branch) => repo
                .find_branch(branch, git2::BranchType::Local)
                .map(git2::Branch::into_reference)
                .map_err(|e| git_error(&self.config, &e))?,
            None => repo.head().map_err(|e| git_error(&self.config, &e))?,
        };
        reference.peel_to_commit().map(|c| c.id()).map_err(|e| git_error(&self.config, &e))
    }

    fn run(mut self, outbox: &Outbox) -> Result<(), Halt> {
        loop {
            match self.look(outbox) {
                Ok(()) => {}
                Err(Halt::Fatal(e)) if e.is_retryable() => {
                    tracing::warn!(source = outbox.name(), error = %e, "reading the repository failed; retrying");
                }
                Err(halt) => return Err(halt),
            }
            if self.config.poll.is_zero() {
                return Ok(());
            }
            outbox.sleep(self.config.poll)?;
        }
    }

    /// Sends what changed between the last position and the head.
    fn look(&mut self, outbox: &Outbox) -> Result<(), Halt> {
        let repo = self.repository()?;
        let head = self.head(&repo)?;
        if self.last == Some(head) && self.looked {
            return Ok(());
        }
        self.looked = true;
        let tree_of = |oid: Oid| repo.find_commit(oid).and_then(|c| c.tree());
        let new_tree = tree_of(head).map_err(|e| git_error(&self.config, &e))?;
        let old_tree = self.last.and_then(|oid| match tree_of(oid) {
            Ok(tree) => Some(tree),
            Err(_) => {
                tracing::warn!(source = outbox.name(), commit = %oid, "the committed commit is gone; reading every file again");
                None
            }
        });
        let author = match self.config.author.as_str() {
            "" => repo.find_commit(head).ok().and_then(|c| c.author().name().map(str::to_owned)).unwrap_or_default(),
            author => author.to_owned(),
        };
        let mut changes = Vec::new();
        match &old_tree {
            Some(_) if self.last == Some(head) => {}
            Some(old) => self.diff(&repo, old, &new_tree, &author, outbox, &mut changes)?,
            None => self.all_files(&repo, &new_tree, &author, outbox, &mut changes)?,
        }
        let position = serde_json::json!({ "commit": head.to_string() });
        let mut batches: Vec<Vec<DocumentChange>> = changes.chunks(BATCH).map(<[_]>::to_vec).collect();
        let last = batches.pop().unwrap_or_default();
        for batch in batches {
            outbox.changes(batch)?;
        }
        outbox.changes_at(last, position)?;
        tracing::info!(source = outbox.name(), commit = %head, changes = changes.len(), "repository read");
        self.last = Some(head);
        Ok(())
    }

    fn wanted(&self, path: &str) -> bool {
        self.include.as_ref().is_none_or(|set| set.is_match(path))
            && !self.exclude.as_ref().is_some_and(|set| set.is_match(path))
    }

    fn doc_id(&self, path: &str) -> String {
        format!("{}{path}", self.id_prefix)
    }

    /// The document of the blob at `path` (a PDF, DOCX or EPUB read as
    /// Markdown), `None` when it is otherwise binary or not UTF-8
    /// (skipped); an ingest error when it is too large or unreadable.
    fn document(
        &self,
        repo: &Repository,
        oid: Oid,
        path: &str,
        author: &str,
        outbox: &Outbox,
    ) -> Result<Option<Document>, Halt> {
        let blob = repo.find_blob(oid).map_err(|e| git_error(&self.config, &e))?;
        if blob.size() as u64 > self.config.max_file.as_u64() {
            outbox.error(
                self.doc_id(path),
                format!("{} bytes is over the limit of {} (max_file)", blob.size(), self.config.max_file.as_u64()),
            )?;
            return Ok(None);
        }
        let extension = Path::new(path).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if let Some(binary) = crate::formats::Binary::of_extension(&extension) {
            return match crate::formats::extract(binary, blob.content()) {
                Ok(extracted) => Ok(Some(Document {
                    doc_id: self.doc_id(path),
                    kind: DocumentKind::Repository,
                    author: author.to_owned(),
                    title: extracted.title.unwrap_or_else(|| path.to_owned()),
                    url: format!("file://{}#{path}", self.path.display()),
                    source: String::new(),
                    format: Some(ContentFormat::Markdown),
                    fetched_at: None,
                    content: extracted.markdown,
                })),
                Err(reason) => {
                    outbox.error(self.doc_id(path), reason)?;
                    Ok(None)
                }
            };
        }
        if blob.is_binary() {
            return Ok(None);
        }
        let Ok(content) = std::str::from_utf8(blob.content()) else { return Ok(None) };
        let (format, content) = match extension.as_str() {
            "md" | "markdown" => (ContentFormat::Markdown, content.to_owned()),
            "txt" | "rst" | "" => (ContentFormat::Text, content.to_owned()),
            // Its main content, as Markdown.
            "html" | "htm" => (ContentFormat::Markdown, crate::formats::html_page(content).markdown),
            _ => (ContentFormat::Code, content.to_owned()),
        };
        Ok(Some(Document {
            doc_id: self.doc_id(path),
            kind: DocumentKind::Repository,
            author: author.to_owned(),
            title: path.to_owned(),
            url: format!("file://{}#{path}", self.path.display()),
            source: String::new(),
            format: Some(format),
            fetched_at: None,
            content,
        }))
    }

    fn all_files(
        &self,
        repo: &Repository,
        tree: &Tree<'_>,
        author: &str,
        outbox: &Outbox,
        changes: &mut Vec<DocumentChange>,
    ) -> Result<(), Halt> {
        let mut blobs = Vec::new();
        tree.walk(TreeWalkMode::PreOrder, |root, entry| {
            if entry.kind() == Some(ObjectType::Blob)
                && let Some(name) = entry.name()
            {
                blobs.push((format!("{root}{name}"), entry.id()));
            }
            TreeWalkResult::Ok
        })
        .map_err(|e| git_error(&self.config, &e))?;
        for (path, oid) in blobs.into_iter().filter(|(path, _)| self.wanted(path)) {
            if let Some(document) = self.document(repo, oid, &path, author, outbox)? {
                changes.push(DocumentChange::Upsert(document));
            }
        }
        Ok(())
    }

    fn diff(
        &self,
        repo: &Repository,
        old: &Tree<'_>,
        new: &Tree<'_>,
        author: &str,
        outbox: &Outbox,
        changes: &mut Vec<DocumentChange>,
    ) -> Result<(), Halt> {
        let diff = repo.diff_tree_to_tree(Some(old), Some(new), None).map_err(|e| git_error(&self.config, &e))?;
        for delta in diff.deltas() {
            let path_of = |file: git2::DiffFile<'_>| file.path().map(|p| p.to_string_lossy().replace('\\', "/"));
            let (old_path, new_path) = (path_of(delta.old_file()), path_of(delta.new_file()));
            match delta.status() {
                Delta::Deleted => {
                    if let Some(path) = old_path.filter(|p| self.wanted(p)) {
                        changes.push(DocumentChange::Delete { doc_id: self.doc_id(&path) });
                    }
                }
                Delta::Added | Delta::Modified | Delta::Renamed | Delta::Copied | Delta::Typechange => {
                    if delta.status() == Delta::Renamed
                        && let Some(path) = old_path.filter(|p| self.wanted(p))
                    {
                        changes.push(DocumentChange::Delete { doc_id: self.doc_id(&path) });
                    }
                    let Some(path) = new_path.filter(|p| self.wanted(p)) else { continue };
                    if delta.new_file().mode() == git2::FileMode::Commit {
                        continue;
                    }
                    match self.document(repo, delta.new_file().id(), &path, author, outbox)? {
                        Some(document) => changes.push(DocumentChange::Upsert(document)),
                        // Now binary or too large: its earlier text version goes.
                        None => changes.push(DocumentChange::Delete { doc_id: self.doc_id(&path) }),
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }
}
