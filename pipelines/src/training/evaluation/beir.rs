//! A question set in the BEIR layout: `corpus.jsonl` (`_id`, `title`,
//! `text`), `queries.jsonl` (`_id`, `text`) and `qrels/<split>.tsv`
//! (`query-id`, `corpus-id`, `score`, with a header line). Only the queries
//! with at least one relevant document are kept.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::training::Error;

/// One document of the corpus.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct BeirDoc {
    #[serde(rename = "_id")]
    pub id: String,
    #[serde(default)]
    pub title: String,
    pub text: String,
}

#[derive(Deserialize)]
struct BeirQuery {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

/// A corpus, its queries and their judged relevant documents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BeirSet {
    /// The folder's name.
    pub name: String,
    pub corpus: Vec<BeirDoc>,
    /// `(query id, text)`, in the file's order.
    pub queries: Vec<(String, String)>,
    /// query id → document id → graded relevance (> 0).
    pub qrels: BTreeMap<String, BTreeMap<String, u32>>,
}

impl BeirSet {
    /// Reads the set in `dir`, judged by `qrels/<split>.tsv`.
    pub fn load(dir: &Path, split: &str) -> Result<Self, Error> {
        let read = |name: &str| {
            std::fs::read_to_string(dir.join(name))
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", dir.join(name).display())))
        };
        let corpus: Vec<BeirDoc> = jsonl(&read("corpus.jsonl")?, "corpus.jsonl")?;
        let queries: Vec<BeirQuery> = jsonl(&read("queries.jsonl")?, "queries.jsonl")?;
        let qrels_file = format!("qrels/{split}.tsv");
        let mut qrels: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
        for (n, line) in read(&qrels_file)?.lines().enumerate() {
            let fields: Vec<&str> = line.split('\t').map(str::trim).collect();
            if line.trim().is_empty() || (n == 0 && fields.first().is_some_and(|f| f.starts_with("query"))) {
                continue;
            }
            let [query, doc, score] = fields[..] else {
                return Err(Error::Config(format!("{qrels_file} line {}: expected query-id, corpus-id, score", n + 1)));
            };
            let score: u32 =
                score.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(|s| s.round() as u32).ok_or_else(
                    || Error::Config(format!("{qrels_file} line {}: score {score:?} is not a number", n + 1)),
                )?;
            if score > 0 {
                qrels.entry(query.to_owned()).or_default().insert(doc.to_owned(), score);
            }
        }
        let known: std::collections::HashSet<&str> = corpus.iter().map(|d| d.id.as_str()).collect();
        if let Some((query, doc)) = qrels
            .iter()
            .flat_map(|(q, docs)| docs.keys().map(move |d| (q, d)))
            .find(|(_, d)| !known.contains(d.as_str()))
        {
            return Err(Error::Config(format!("{qrels_file}: query {query} names document {doc}, not in the corpus")));
        }
        let queries: Vec<(String, String)> =
            queries.into_iter().filter(|q| qrels.contains_key(&q.id)).map(|q| (q.id, q.text)).collect();
        if queries.is_empty() {
            return Err(Error::Config(format!("{}: no query has a relevant document in {qrels_file}", dir.display())));
        }
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok(Self { name, corpus, queries, qrels })
    }
}

fn jsonl<T: serde::de::DeserializeOwned>(text: &str, file: &str) -> Result<Vec<T>, Error> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(n, line)| serde_json::from_str(line).map_err(|e| Error::Config(format!("{file} line {}: {e}", n + 1))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_set_and_keeps_judged_queries_only() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("qrels")).unwrap();
        std::fs::write(
            dir.path().join("corpus.jsonl"),
            "{\"_id\":\"d1\",\"title\":\"One\",\"text\":\"first\"}\n{\"_id\":\"d2\",\"text\":\"second\"}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("queries.jsonl"),
            "{\"_id\":\"q1\",\"text\":\"a?\"}\n{\"_id\":\"q2\",\"text\":\"b?\"}\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("qrels/test.tsv"), "query-id\tcorpus-id\tscore\nq1\td2\t1\nq2\td1\t0\n")
            .unwrap();
        let set = BeirSet::load(dir.path(), "test").unwrap();
        assert_eq!(set.corpus.len(), 2);
        assert_eq!(set.corpus[1].title, "");
        assert_eq!(set.queries, [("q1".to_owned(), "a?".to_owned())], "q2 has no relevant document");
        assert_eq!(set.qrels["q1"]["d2"], 1);
        std::fs::write(dir.path().join("qrels/test.tsv"), "q1\td9\t1\n").unwrap();
        let error = BeirSet::load(dir.path(), "test").unwrap_err().to_string();
        assert!(error.contains("d9"), "{error}");
        assert!(BeirSet::load(dir.path(), "dev").unwrap_err().to_string().contains("qrels/dev.tsv"));
    }
}
