//! `[[sources]]`: the sources `twinflow up` starts besides the HTTP
//! endpoint (directory watch, NDJSON replay, web crawl, git, Fluvio, Kafka),
//! and how a cluster shares a partitioned source's partitions.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::records::DocumentKind;

/// A source of document changes, besides `POST /v1/documents`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "config", rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceConfig {
    /// Watch a directory: created or modified files are upserts, removed
    /// files deletes.
    Watch(WatchSourceConfig),
    /// Replay an NDJSON file of changes once.
    Ndjson(NdjsonSourceConfig),
    /// Crawl web pages from seeds or a sitemap, and re-crawl on a schedule.
    Web(WebSourceConfig),
    /// Files at the head of a git branch; new commits give exactly the
    /// changed, added and deleted files.
    Git(GitSourceConfig),
    /// Records of a Fluvio topic, each one JSON change (the line format of
    /// an NDJSON change log), with offsets committed with the epoch.
    Fluvio(FluvioSourceConfig),
    /// Records of a Kafka topic, each one JSON change, with offsets
    /// committed with the epoch (and then to the consumer group).
    Kafka(KafkaSourceConfig),
    /// An RSS, Atom or JSON feed fetched on a schedule (conditional
    /// requests): each entry a document.
    Feed(FeedSourceConfig),
    /// Rows of PostgreSQL tables, through logical replication (`pgoutput`):
    /// a consistent snapshot, then every insert, update and delete.
    Postgres(PostgresSourceConfig),
}

/// Settings of a PostgreSQL change-capture source. Each row of `tables` is
/// a document: `doc_id_column` names it, `content_column` holds its text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSourceConfig {
    /// Connection string, as libpq takes it: `postgres://user@host:port/db`
    /// or `host=… port=… user=… dbname=…`. The user needs the REPLICATION
    /// attribute (or to own the slot's database) and SELECT on the tables.
    pub url: String,
    /// Name of an environment variable holding the password (kept out of
    /// the configuration file).
    pub password_env: Option<String>,
    /// PEM certificates of a private CA the server's certificate may be
    /// signed by (besides the public CAs); only with `sslmode=require` in
    /// `url`, which encrypts the connection and checks the certificate and
    /// the host name.
    pub ca: Option<std::path::PathBuf>,
    /// The tables followed, `schema.table` or `table` (in `public`).
    pub tables: Vec<String>,
    /// The publication read (default `twinflow_<source>`): created for
    /// `tables` when missing; one that exists must publish them.
    pub publication: Option<String>,
    /// The logical replication slot (default `twinflow_<source>`): created
    /// when missing. Its confirmed position moves only after an epoch
    /// commits, so the server keeps the WAL twinflow has not committed.
    pub slot: Option<String>,
    /// The column whose value names the row's document (in the table's
    /// replica identity: its primary key, or `REPLICA IDENTITY FULL`).
    pub doc_id_column: String,
    /// The column holding the text (a row whose content is NULL has no document).
    pub content_column: String,
    pub title_column: Option<String>,
    pub author_column: Option<String>,
    pub url_column: Option<String>,
    /// A column holding the kind (`article`, `post`, …); else `kind`.
    pub kind_column: Option<String>,
    /// Kind of every row's document when there is no `kind_column`.
    pub kind: DocumentKind,
    /// How the content is written (unset: inferred at ingest).
    pub format: Option<crate::records::ContentFormat>,
    /// A document's id is `<doc_id_prefix><table>/<doc_id_column>` (`table`
    /// with its schema unless it is `public`).
    pub doc_id_prefix: String,
    /// How often the slot is read for new changes.
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// Rows read per snapshot batch, and changes per streamed batch (whole
    /// transactions: a larger one comes in one batch).
    pub batch: usize,
}

impl Default for PostgresSourceConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            password_env: None,
            ca: None,
            tables: Vec::new(),
            publication: None,
            slot: None,
            doc_id_column: "id".into(),
            content_column: "content".into(),
            title_column: None,
            author_column: None,
            url_column: None,
            kind_column: None,
            kind: DocumentKind::Article,
            format: None,
            doc_id_prefix: "pg:".into(),
            poll: Duration::from_millis(200),
            batch: 1000,
        }
    }
}

impl PostgresSourceConfig {
    /// How `table` is named in its documents' ids: without `public.`.
    pub fn table_label(table: &str) -> &str {
        table.strip_prefix("public.").unwrap_or(table)
    }
}

/// Settings of a feed source (RSS, Atom or JSON Feed).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedSourceConfig {
    /// The feed's URL.
    pub url: String,
    /// Time between two fetches (`0s`: fetch once).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Delete an entry's document when it leaves the feed. Off by default:
    /// feeds list only their newest entries, and older ones scroll off.
    pub delete_missing: bool,
    /// Kind given to the entries' documents.
    pub kind: DocumentKind,
    /// Author of every entry (default: the entry's, else the feed's).
    pub author: Option<String>,
    pub user_agent: String,
    /// Per request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Feeds larger than this are refused (an ingest error).
    pub max_bytes: ByteSize,
}

impl Default for FeedSourceConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            interval: Duration::from_secs(900),
            delete_missing: false,
            kind: DocumentKind::Post,
            author: None,
            user_agent: "twinflow".into(),
            timeout: Duration::from_secs(20),
            max_bytes: ByteSize::mib(8),
        }
    }
}

/// Settings of a Kafka topic source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap brokers, `host:port[,host:port…]`.
    pub brokers: String,
    pub topic: String,
    /// The consumer group whose offsets are committed after each epoch
    /// (and used to start from when twinflow has no committed position).
    pub group: String,
    /// Partitions read (empty: all of the topic's).
    pub partitions: Vec<u32>,
    /// Where a partition with no committed offset (twinflow's or the group's) starts.
    pub start: StartFrom,
    /// Changes handed to the engine per batch at most.
    pub batch: usize,
    /// Further librdkafka settings (`security.protocol`, `sasl.mechanism`, …).
    pub options: std::collections::BTreeMap<String, String>,
    /// The `doc_id`s this source may change: those that start with this
    /// (unset: any that no directory, git or web source owns).
    pub doc_id_prefix: Option<String>,
    /// This process's share of the partitions in a cluster (set by
    /// `twinflow up`, not a setting).
    #[serde(skip)]
    pub share: Option<PartitionShare>,
}

/// The partitions one process of a cluster reads of a partitioned source
/// (Kafka, Fluvio): partition `p` goes to process `p % of`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartitionShare {
    /// This process.
    pub index: usize,
    /// Processes in the cluster.
    pub of: usize,
}

impl PartitionShare {
    /// Whether `partition` is this process's to read.
    pub fn takes(&self, partition: u32) -> bool {
        self.of <= 1 || partition as usize % self.of == self.index
    }
}

impl Default for KafkaSourceConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            topic: String::new(),
            group: "twinflow".into(),
            partitions: Vec::new(),
            start: StartFrom::Beginning,
            batch: 500,
            options: std::collections::BTreeMap::new(),
            doc_id_prefix: None,
            share: None,
        }
    }
}

/// Where a partition with no committed offset starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest record the partition still has.
    #[default]
    Beginning,
    /// Only records written after the source starts.
    End,
}

/// Settings of a Fluvio topic source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FluvioSourceConfig {
    /// The cluster's controller, `host:port` (Fluvio listens on 9003).
    pub endpoint: String,
    pub topic: String,
    /// Partitions read (empty: all of the topic's).
    pub partitions: Vec<u32>,
    /// Where a partition with no committed offset starts.
    pub start: StartFrom,
    /// Changes handed to the engine per batch at most.
    pub batch: usize,
    /// The `doc_id`s this source may change: those that start with this
    /// (unset: any that no directory, git or web source owns).
    pub doc_id_prefix: Option<String>,
    /// This process's share of the partitions in a cluster (set by
    /// `twinflow up`, not a setting).
    #[serde(skip)]
    pub share: Option<PartitionShare>,
}

impl Default for FluvioSourceConfig {
    fn default() -> Self {
        Self {
            endpoint: "127.0.0.1:9003".into(),
            topic: String::new(),
            partitions: Vec::new(),
            start: StartFrom::Beginning,
            batch: 500,
            doc_id_prefix: None,
            share: None,
        }
    }
}

/// Settings of a web crawl.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSourceConfig {
    /// Pages the crawl starts from.
    pub seeds: Vec<String>,
    /// A sitemap (`<urlset>` of `<loc>`, or a `<sitemapindex>`) whose pages are seeds too.
    pub sitemap: Option<String>,
    /// Hosts the crawl may visit (default: the hosts of the seeds and the sitemap).
    pub allowed_domains: Vec<String>,
    /// Links followed from a seed at most (0: the seeds only).
    pub max_depth: usize,
    /// Pages fetched per crawl at most.
    pub max_pages: usize,
    /// Requests per second to one host at most (a robots.txt `Crawl-delay` can lower it).
    pub rate_per_host: f64,
    /// Time between the start of two crawls (`0s`: crawl once).
    #[serde(with = "humantime_serde")]
    pub recrawl: Duration,
    /// Honour robots.txt.
    pub respect_robots: bool,
    pub user_agent: String,
    /// Kind given to the pages' documents.
    pub kind: DocumentKind,
    /// Author given to pages without a `<meta name="author">`.
    pub author: String,
    /// Pages larger than this are refused (an ingest error).
    pub max_page: ByteSize,
    /// Per request.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for WebSourceConfig {
    fn default() -> Self {
        Self {
            seeds: Vec::new(),
            sitemap: None,
            allowed_domains: Vec::new(),
            max_depth: 3,
            max_pages: 1_000,
            rate_per_host: 4.0,
            recrawl: Duration::from_secs(3600),
            respect_robots: true,
            user_agent: "twinflow".into(),
            kind: DocumentKind::Article,
            author: String::new(),
            max_page: ByteSize::mib(4),
            timeout: Duration::from_secs(20),
        }
    }
}

/// Settings of a git repository source.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GitSourceConfig {
    /// A local repository (working copy or bare), or a `file://` URL.
    pub repo: String,
    /// The branch followed (default: the repository's HEAD).
    pub branch: Option<String>,
    /// Paths taken: glob patterns (`*` within a name, `**` across folders); empty = all.
    pub include: Vec<String>,
    /// Paths left out, after `include`.
    pub exclude: Vec<String>,
    /// Files larger than this are skipped (an ingest error).
    pub max_file: ByteSize,
    /// Time between two looks at the branch (`0s`: once).
    #[serde(with = "humantime_serde")]
    pub poll: Duration,
    /// Author given to the files' documents.
    pub author: String,
    /// What the files' `doc_id`s start with (unset: `git:<repository name>/`).
    pub doc_id_prefix: Option<String>,
}

impl Default for GitSourceConfig {
    fn default() -> Self {
        Self {
            repo: String::new(),
            branch: None,
            include: Vec::new(),
            exclude: Vec::new(),
            max_file: ByteSize::kib(512),
            poll: Duration::from_secs(30),
            author: String::new(),
            doc_id_prefix: None,
        }
    }
}

impl GitSourceConfig {
    /// The repository's path (`repo` without `file://`).
    pub fn path(&self) -> PathBuf {
        PathBuf::from(self.repo.strip_prefix("file://").unwrap_or(&self.repo))
    }

    /// What the files' `doc_id`s start with: `doc_id_prefix`, or `git:` and
    /// the last component of the repository's path (without `.git`) and `/`.
    pub fn id_prefix(&self) -> String {
        if let Some(prefix) = &self.doc_id_prefix {
            return prefix.clone();
        }
        let path = self.path();
        let path = if path.file_name().is_some_and(|n| n == ".git") { path.parent().unwrap_or(&path) } else { &path };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "repo".into());
        format!("git:{}/", name.strip_suffix(".git").unwrap_or(&name))
    }
}

/// Settings of a directory watch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WatchSourceConfig {
    pub path: PathBuf,
    /// Kind given to the files' documents.
    pub kind: DocumentKind,
    /// Author given to the files' documents.
    pub author: String,
    /// File extensions taken (others are ignored).
    pub extensions: Vec<String>,
    /// Files larger than this are refused (an ingest error, not a crash).
    pub max_file: ByteSize,
    /// What the files' `doc_id`s start with, before their path relative to
    /// `path`. Two watched directories need prefixes that do not overlap.
    pub doc_id_prefix: String,
}

impl Default for WatchSourceConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("."),
            kind: DocumentKind::Article,
            author: String::new(),
            extensions: ["md", "markdown", "txt", "html", "htm", "json", "pdf", "docx", "epub"]
                .map(String::from)
                .to_vec(),
            max_file: ByteSize::mib(8),
            doc_id_prefix: "file:".into(),
        }
    }
}

/// Settings of an NDJSON replay.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NdjsonSourceConfig {
    pub path: PathBuf,
    /// The `doc_id`s this source may change: those that start with this
    /// (unset: any that no directory, git or web source owns).
    pub doc_id_prefix: Option<String>,
}

impl SourceConfig {
    /// The name of the `index`-th configured source (`watch-0`, `kafka-2`, …):
    /// its changes, errors and positions are recorded under it.
    pub fn name(&self, index: usize) -> String {
        let kind = match self {
            Self::Watch(_) => "watch",
            Self::Ndjson(_) => "ndjson",
            Self::Web(_) => "web",
            Self::Git(_) => "git",
            Self::Fluvio(_) => "fluvio",
            Self::Kafka(_) => "kafka",
            Self::Feed(_) => "feed",
            Self::Postgres(_) => "postgres",
        };
        format!("{kind}-{index}")
    }
}

/// Which `doc_id`s each source may change. A directory, git or web source
/// makes its ids itself (under its `doc_id_prefix`, `file:` and
/// `git:<repo>/` by default; its pages' URLs), so it owns those, and no two
/// of them may own overlapping ids; a source whose records carry their ids
/// (Kafka, Fluvio, NDJSON) may change only ids under its `doc_id_prefix`
/// when one is set, and otherwise any id no other source owns. HTTP clients
/// are not sources.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DocIdNamespaces {
    /// `(source, what it owns)`.
    owned: Vec<(String, Owned)>,
    /// `source → prefix` of the sources limited to one.
    limited: std::collections::BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Owned {
    Prefix(String),
    /// Pages of this host (`http(s)://host[:port]/…`).
    Host(String),
}

impl DocIdNamespaces {
    /// The namespaces of `sources`, named as [`SourceConfig::name`] names
    /// them; an error when two sources would make the same ids.
    pub fn of(sources: &[SourceConfig]) -> Result<Self, String> {
        let mut namespaces = Self::default();
        for (i, source) in sources.iter().enumerate() {
            let name = source.name(i);
            match source {
                SourceConfig::Watch(watch) => namespaces.owned.push((name, Owned::Prefix(watch.doc_id_prefix.clone()))),
                SourceConfig::Git(git) => namespaces.owned.push((name, Owned::Prefix(git.id_prefix()))),
                SourceConfig::Postgres(pg) => namespaces.owned.extend(pg.tables.iter().map(|table| {
                    let prefix = format!("{}{}/", pg.doc_id_prefix, PostgresSourceConfig::table_label(table));
                    (name.clone(), Owned::Prefix(prefix))
                })),
                SourceConfig::Web(web) => {
                    let mut hosts: Vec<String> = web.allowed_domains.iter().map(|d| d.to_ascii_lowercase()).collect();
                    if hosts.is_empty() {
                        hosts.extend(web.seeds.iter().chain(&web.sitemap).filter_map(|u| url_host(u)));
                    }
                    namespaces.owned.extend(hosts.into_iter().map(|h| (name.clone(), Owned::Host(h))));
                }
                SourceConfig::Kafka(KafkaSourceConfig { doc_id_prefix: Some(prefix), .. })
                | SourceConfig::Fluvio(FluvioSourceConfig { doc_id_prefix: Some(prefix), .. })
                | SourceConfig::Ndjson(NdjsonSourceConfig { doc_id_prefix: Some(prefix), .. }) => {
                    namespaces.limited.insert(name, prefix.clone());
                }
                _ => {}
            }
        }
        for (i, (first, a)) in namespaces.owned.iter().enumerate() {
            for (second, b) in &namespaces.owned[i + 1..] {
                let overlap = match (a, b) {
                    (Owned::Prefix(a), Owned::Prefix(b)) => a.starts_with(b.as_str()) || b.starts_with(a.as_str()),
                    (Owned::Host(a), Owned::Host(b)) => a == b,
                    _ => false,
                };
                if overlap && first != second {
                    return Err(format!(
                        "sources {first} and {second} would both make doc_ids under {}: give one of them another \
                         doc_id_prefix (or other allowed_domains)",
                        match a {
                            Owned::Prefix(p) => format!("{p:?}"),
                            Owned::Host(h) => format!("the host {h}"),
                        }
                    ));
                }
            }
        }
        Ok(namespaces)
    }

    /// Whether `source` (a name, or a cluster share `name@pI`) may change
    /// `doc_id`; why not, when it may not.
    pub fn check(&self, source: &str, doc_id: &str) -> Result<(), String> {
        let source = source.split_once('@').map_or(source, |(name, _)| name);
        if let Some(prefix) = self.limited.get(source) {
            return if doc_id.starts_with(prefix.as_str()) {
                Ok(())
            } else {
                Err(format!("doc_id {doc_id:?} is outside this source's doc_id_prefix {prefix:?}"))
            };
        }
        let host = url_host(doc_id);
        for (owner, owned) in &self.owned {
            let theirs = match owned {
                Owned::Prefix(prefix) => doc_id.starts_with(prefix.as_str()),
                Owned::Host(owned_host) => host.as_deref() == Some(owned_host.as_str()),
            };
            if theirs && owner != source {
                return Err(format!("doc_id {doc_id:?} belongs to source {owner}; set doc_id_prefix to allow"));
            }
        }
        Ok(())
    }
}

/// The lower-case host of an `http(s)://` URL.
fn url_host(url: &str) -> Option<String> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next()?
    } else {
        authority.split(':').next()?
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod namespace_tests {
    use super::*;

    #[test]
    fn a_source_changes_only_its_own_doc_ids() {
        let sources = vec![
            SourceConfig::Watch(WatchSourceConfig::default()),
            SourceConfig::Web(WebSourceConfig {
                seeds: vec!["https://Blog.example/posts".into()],
                ..Default::default()
            }),
            SourceConfig::Kafka(KafkaSourceConfig::default()),
            SourceConfig::Fluvio(FluvioSourceConfig { doc_id_prefix: Some("feed:".into()), ..Default::default() }),
        ];
        let ns = DocIdNamespaces::of(&sources).expect("no overlap");
        assert!(ns.check("watch-0", "file:notes/a.md").is_ok());
        assert!(ns.check("web-1", "https://blog.example/posts/1").is_ok());
        // The Kafka source: anything no other source owns.
        assert!(ns.check("kafka-2", "post-17").is_ok());
        assert!(ns.check("kafka-2", "https://other.example/x").is_ok());
        assert!(ns.check("kafka-2", "file:notes/a.md").unwrap_err().contains("watch-0"));
        assert!(ns.check("kafka-2@p1", "http://blog.example:80/posts/1").unwrap_err().contains("web-1"));
        // The Fluvio source: its prefix only.
        assert!(ns.check("fluvio-3", "feed:1").is_ok());
        assert!(ns.check("fluvio-3@p2", "post-17").unwrap_err().contains("doc_id_prefix"));
        assert_eq!(url_host("http://user@[::1]:8080/x").as_deref(), Some("[::1]"));
    }

    #[test]
    fn two_directories_or_repositories_need_their_own_prefixes() {
        let watch = |prefix: &str| {
            SourceConfig::Watch(WatchSourceConfig { doc_id_prefix: prefix.into(), ..Default::default() })
        };
        let git = |repo: &str| SourceConfig::Git(GitSourceConfig { repo: repo.into(), ..Default::default() });
        let clash = DocIdNamespaces::of(&[watch("file:"), watch("file:")]).unwrap_err();
        assert!(clash.contains("watch-0 and watch-1"), "{clash}");
        let nested = DocIdNamespaces::of(&[watch("file:"), watch("file:notes/")]).unwrap_err();
        assert!(nested.contains("\"file:notes/\"") || nested.contains("\"file:\""), "{nested}");
        let ns = DocIdNamespaces::of(&[watch("file:"), watch("notes:"), git("/src/a"), git("file:///src/b.git")])
            .expect("distinct prefixes");
        assert!(ns.check("watch-1", "notes:x.md").is_ok());
        assert!(ns.check("watch-1", "file:x.md").unwrap_err().contains("watch-0"));
        assert!(ns.check("git-3", "git:b/README.md").is_ok());
        assert!(ns.check("git-3", "git:a/README.md").unwrap_err().contains("git-2"));
        assert!(DocIdNamespaces::of(&[git("/src/a"), git("/elsewhere/a/.git")]).is_err());
        let web = |seed: &str| SourceConfig::Web(WebSourceConfig { seeds: vec![seed.into()], ..Default::default() });
        assert!(DocIdNamespaces::of(&[web("https://a.example/"), web("https://A.example/x")]).is_err());
    }
}
