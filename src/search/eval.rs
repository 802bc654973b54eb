//! `brain eval beir`: retrieval quality on a BEIR dataset, measured in-process on a throwaway
//! store through the same ingest and search code the daemon runs.
//!
//! Each corpus document becomes a Markdown note (`title` in front matter, text as body) and is
//! ingested like any note; a query's ranking is its hits grouped per note, so a document's
//! score is its best chunk's. Metrics follow the BEIR / trec_eval definitions: nDCG@10 with
//! graded gains and the ideal ranking from the qrels, Recall@100, MRR@10.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde::{Deserialize, Serialize};

use super::{Mode, Request, Search, Tuning, index::Filters, models};
use crate::identity::UserId;
use crate::ingest::Ingestor;
use crate::store::{self, Store};

const FILE_NAME: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.');

#[derive(Debug, Clone)]
pub struct Options {
    pub dir: PathBuf,
    pub mode: Mode,
    pub model: Option<PathBuf>,
    pub split: String,
    pub run_file: Option<PathBuf>,
    pub graph: bool,
    pub tuning: Tuning,
    /// Only the first N queries (all when `None`).
    pub limit_queries: Option<usize>,
    /// Also score these fusion settings on the same store (hybrid), reported in `sweep`.
    pub sweep: Vec<Tuning>,
    /// Keep the store, index and vectors here and reuse them on the next run (the corpus is
    /// ingested once, and each chunk embedded once per model); a throwaway folder otherwise.
    pub work_dir: Option<PathBuf>,
}

fn mode_name<S: serde::Serializer>(m: &Mode, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(m.as_str())
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub dataset: String,
    #[serde(serialize_with = "mode_name")]
    pub mode: Mode,
    pub split: String,
    pub documents: usize,
    pub chunks: u64,
    pub queries: usize,
    pub ndcg_at_10: f64,
    pub recall_at_100: f64,
    pub mrr_at_10: f64,
    pub index_secs: f64,
    pub embed_secs: f64,
    /// Chunks embedded by this run (a kept `--work-dir` embeds only what is new).
    pub embedded_chunks: u64,
    pub embed_chunks_per_sec: f64,
    pub query_p50_ms: f64,
    pub query_p95_ms: f64,
    pub model: Option<String>,
    /// nDCG@10 per swept setting: (rrf_k, weight_bm25, weight_dense, nDCG@10).
    pub sweep: Vec<(f32, f32, f32, f64)>,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} ({} split, mode {:?}{}): {} documents, {} chunks, {} queries",
            self.dataset,
            self.split,
            self.mode,
            self.model
                .as_deref()
                .map(|m| format!(", model {m}"))
                .unwrap_or_default(),
            self.documents,
            self.chunks,
            self.queries
        )?;
        writeln!(f, "  nDCG@10    {:.4}", self.ndcg_at_10)?;
        writeln!(f, "  Recall@100 {:.4}", self.recall_at_100)?;
        writeln!(f, "  MRR@10     {:.4}", self.mrr_at_10)?;
        writeln!(f, "  index      {:.1} s", self.index_secs)?;
        if self.embedded_chunks > 0 {
            writeln!(
                f,
                "  embed      {} chunks in {:.1} s ({:.1} chunks/s)",
                self.embedded_chunks, self.embed_secs, self.embed_chunks_per_sec
            )?;
        } else if self.model.is_some() {
            writeln!(f, "  embed      nothing new (vectors kept in the work dir)")?;
        }
        write!(
            f,
            "  query      p50 {:.2} ms, p95 {:.2} ms",
            self.query_p50_ms, self.query_p95_ms
        )?;
        for (k, wb, wd, n) in &self.sweep {
            write!(
                f,
                "\n  sweep rrf_k {k:>5} bm25 {wb:.2} dense {wd:.2}: nDCG@10 {n:.4}"
            )?;
        }
        Ok(())
    }
}

#[derive(Deserialize)]
struct CorpusDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    title: String,
    #[serde(default)]
    text: String,
}

#[derive(Deserialize)]
struct QueryRow {
    #[serde(rename = "_id")]
    id: String,
    text: String,
}

/// A temporary folder removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let dir = &opts.dir;
    let corpus = read_jsonl::<CorpusDoc>(&dir.join("corpus.jsonl"))?;
    let queries: HashMap<String, String> = read_jsonl::<QueryRow>(&dir.join("queries.jsonl"))?
        .into_iter()
        .map(|q| (q.id, q.text))
        .collect();
    let qrels = read_qrels(&dir.join("qrels").join(format!("{}.tsv", opts.split)))?;
    let mut qids: Vec<&String> = qrels.keys().filter(|q| queries.contains_key(*q)).collect();
    qids.sort_by(|a, b| natural(a).cmp(&natural(b)));
    if let Some(n) = opts.limit_queries {
        qids.truncate(n);
    }
    if qids.is_empty() {
        bail!("no query in {} has judgements", opts.split);
    }

    let (_scratch, work) = match &opts.work_dir {
        Some(d) => (None, d.clone()),
        None => {
            let d = std::env::temp_dir().join(format!(
                "brain-eval-{}-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            (Some(Scratch(d.clone())), d)
        }
    };
    let notes = work.join("corpus");
    let marker = work.join("ingested");
    let started = Instant::now();
    let store = Arc::new(Store::open(&work.join("brain.db"))?);
    if !marker.exists() {
        std::fs::create_dir_all(&notes).with_context(|| format!("creating {}", notes.display()))?;
        for d in &corpus {
            let name = format!("{}.md", utf8_percent_encode(&d.id, FILE_NAME));
            let title = serde_json::to_string(&d.title)?;
            let body = format!("---\ntitle: {title}\n---\n{}\n", d.text);
            std::fs::write(notes.join(name), body)?;
        }
        let rep = ingest_folder(&store, "eval@localhost", &notes, false)?;
        if rep.indexed as usize != corpus.len() {
            bail!(
                "only {} of {} documents were indexed ({} failed, {} skipped)",
                rep.indexed,
                corpus.len(),
                rep.failed,
                rep.skipped
            );
        }
        std::fs::write(&marker, b"")?;
    }
    let search = Search::open_with(
        store.clone(),
        &work.join("index"),
        opts.tuning,
        super::Limits::offline(),
    )?;
    if opts.work_dir.is_some() {
        // A kept index may come from other settings: rebuild it, from the kept store.
        search.rebuild()?;
    } else {
        search.bring_up_to_date()?;
    }
    let index_secs = started.elapsed().as_secs_f64();
    let chunks = search.status()?.total_chunks;

    let (mut embed_secs, mut model_id, mut embedded) = (0.0, None, 0u64);
    if opts.mode != Mode::Bm25 {
        let Some(path) = &opts.model else {
            bail!("--mode {:?} needs --model PATH (a model folder)", opts.mode);
        };
        let embedder = models::load(path)?;
        model_id = Some(embedder.model_id().to_owned());
        search.set_model(embedder)?;
        let t = Instant::now();
        loop {
            let n = search.embed_batch(64)?;
            if n == 0 {
                break;
            }
            embedded += n as u64;
        }
        embed_secs = t.elapsed().as_secs_f64();
    }

    let mut run_out = match &opts.run_file {
        Some(p) => Some(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("creating {}", p.display()))?,
        )),
        None => None,
    };
    let tag = format!("brain-{:?}", opts.mode).to_lowercase();
    // One ranking per document (best chunk), as BEIR judges documents.
    let request = |qid: &str, k: usize, tuning: Option<Tuning>| Request {
        query: queries[qid].clone(),
        mode: Some(opts.mode),
        k,
        filters: Filters::default(),
        graph: opts.graph,
        explain: false,
        group_by_note: true,
        tuning,
    };
    let (mut ndcg, mut recall, mut mrr) = (0.0, 0.0, 0.0);
    let mut latencies = Vec::with_capacity(qids.len());
    for qid in &qids {
        let req = request(qid, 100, None);
        let t = Instant::now();
        let resp = search.query(&req)?;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        let ranked: Vec<(String, f32)> = resp
            .hits
            .iter()
            .map(|h| (doc_id(&h.path), h.score))
            .collect();
        if let Some(w) = run_out.as_mut() {
            for (i, (doc, score)) in ranked.iter().enumerate() {
                writeln!(w, "{qid} Q0 {doc} {} {score:.6} {tag}", i + 1)?;
            }
        }
        let judged = &qrels[*qid];
        let docs: Vec<&str> = ranked.iter().map(|(d, _)| d.as_str()).collect();
        ndcg += ndcg_at(&docs, judged, 10);
        recall += recall_at(&docs, judged, 100);
        mrr += mrr_at(&docs, judged, 10);
    }
    if let Some(mut w) = run_out {
        w.flush()?;
    }
    let n = qids.len() as f64;
    latencies.sort_by(f64::total_cmp);
    let mut sweep = Vec::new();
    for t in &opts.sweep {
        let mut total = 0.0;
        for qid in &qids {
            let req = request(qid, 10, Some(*t));
            let docs: Vec<String> = search
                .query(&req)?
                .hits
                .iter()
                .map(|h| doc_id(&h.path))
                .collect();
            let docs: Vec<&str> = docs.iter().map(String::as_str).collect();
            total += ndcg_at(&docs, &qrels[*qid], 10);
        }
        sweep.push((t.rrf_k, t.weight_bm25, t.weight_dense, total / n));
    }
    Ok(Report {
        dataset: dir
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        mode: opts.mode,
        split: opts.split.clone(),
        documents: corpus.len(),
        chunks,
        queries: qids.len(),
        ndcg_at_10: ndcg / n,
        recall_at_100: recall / n,
        mrr_at_10: mrr / n,
        index_secs,
        embed_secs,
        embedded_chunks: embedded,
        embed_chunks_per_sec: if embedded > 0 {
            embedded as f64 / embed_secs
        } else {
            0.0
        },
        query_p50_ms: percentile(&latencies, 0.50),
        query_p95_ms: percentile(&latencies, 0.95),
        model: model_id,
        sweep,
    })
}

/// Ingests `folder` into `store` in-process, acting as `email`, as a root (watched or not) —
/// how the measuring tools build their stores without a daemon.
pub fn ingest_folder(
    store: &Arc<Store>,
    email: &str,
    folder: &Path,
    watched: bool,
) -> anyhow::Result<crate::ingest::SyncReport> {
    let user = UserId::for_email(email);
    store.write(|tx| store::ensure_user(tx, &user, email))?;
    let ingestor = Ingestor::new(
        store.clone(),
        user.as_str(),
        crate::ingest::DEFAULT_MAX_FILE_BYTES,
    );
    let root = ingestor.add_root(folder, watched)?;
    Ok(ingestor.sync(&root, &crate::ingest::Scope::All, &mut |_| {})?)
}

/// The corpus id a note path stands for.
fn doc_id(path: &str) -> String {
    let name = path.rsplit('/').next().unwrap_or(path);
    let stem = name.strip_suffix(".md").unwrap_or(name);
    percent_decode_str(stem).decode_utf8_lossy().into_owned()
}

/// Numeric ids sort as numbers, the rest as text.
fn natural(s: &str) -> (u64, &str) {
    (s.parse().unwrap_or(u64::MAX), s)
}

fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not a valid record", path.display(), i + 1))?,
        );
    }
    Ok(out)
}

/// query id → (doc id → relevance), relevance > 0 only.
fn read_qrels(path: &Path) -> anyhow::Result<HashMap<String, HashMap<String, u32>>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out: HashMap<String, HashMap<String, u32>> = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols.len() < 3 || (i == 0 && cols[0] == "query-id") {
            continue;
        }
        let Ok(rel) = cols[2].trim().parse::<i64>() else {
            continue;
        };
        if rel > 0 {
            out.entry(cols[0].to_owned())
                .or_default()
                .insert(cols[1].to_owned(), rel as u32);
        }
    }
    Ok(out)
}

pub fn ndcg_at(ranked: &[&str], judged: &HashMap<String, u32>, k: usize) -> f64 {
    let gain = |rel: u32| f64::from(rel);
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, d)| {
            judged
                .get(*d)
                .map_or(0.0, |r| gain(*r) / (i as f64 + 2.0).log2())
        })
        .sum();
    let mut ideal: Vec<u32> = judged.values().copied().collect();
    ideal.sort_unstable_by(|a, b| b.cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, r)| gain(*r) / (i as f64 + 2.0).log2())
        .sum();
    if idcg == 0.0 { 0.0 } else { dcg / idcg }
}

pub fn recall_at(ranked: &[&str], judged: &HashMap<String, u32>, k: usize) -> f64 {
    if judged.is_empty() {
        return 0.0;
    }
    let found: HashSet<&str> = ranked
        .iter()
        .take(k)
        .filter(|d| judged.contains_key(**d))
        .copied()
        .collect();
    found.len() as f64 / judged.len() as f64
}

pub fn mrr_at(ranked: &[&str], judged: &HashMap<String, u32>, k: usize) -> f64 {
    ranked
        .iter()
        .take(k)
        .position(|d| judged.contains_key(*d))
        .map_or(0.0, |i| 1.0 / (i as f64 + 1.0))
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, u32)]) -> HashMap<String, u32> {
        pairs.iter().map(|(d, r)| (d.to_string(), *r)).collect()
    }

    #[test]
    fn metrics_match_hand_computed_values() {
        let j = judged(&[("a", 1), ("b", 1)]);
        // Perfect ranking.
        assert!((ndcg_at(&["a", "b", "x"], &j, 10) - 1.0).abs() < 1e-12);
        // One relevant at rank 2: DCG = 1/log2(3); IDCG = 1 + 1/log2(3).
        let expect = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg_at(&["x", "a"], &j, 10) - expect).abs() < 1e-12);
        assert_eq!(recall_at(&["x", "a"], &j, 100), 0.5);
        assert_eq!(mrr_at(&["x", "a"], &j, 10), 0.5);
        assert_eq!(mrr_at(&["x"], &j, 10), 0.0);
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.5), 3.0);
    }

    #[test]
    fn ids_survive_the_file_name_round_trip() {
        for id in ["4983", "a/b c", "ünï", "x.y-z_1"] {
            let name = format!("/tmp/c/{}.md", utf8_percent_encode(id, FILE_NAME));
            assert_eq!(doc_id(&name), id);
        }
    }
}
