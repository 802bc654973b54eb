//! `brain eval questions`: a judged question set over a folder of notes, asked the way people
//! type ("how do I …"), each question judged by the note(s) that answer it.
//!
//! The folder is ingested into a throwaway store; every question is asked in each mode the
//! run can (BM25 always; dense and hybrid with a model), with and without graph proximity,
//! and beside SQLite FTS5 with the porter stemmer over the same notes (`fts5`). Reported per
//! system: nDCG@10, MRR@10 and success@1, over all questions and over the linked ones — those
//! whose best BM25 note is not an answer but links to one, or is linked from one — where graph
//! proximity has something to find.
//!
//! The file is JSON lines: `{"question": "…", "answers": ["path/in/folder.md", …]}`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::fts5::Fts5;
use super::metrics::{mrr_at, ndcg_at, percentile, success_at_1};
use crate::search::{Mode, Request, Tuning, index::Filters};
use crate::store::Store;

/// Hits asked of each system per question: nDCG@10 and MRR@10 read no further.
const DEPTH: usize = 10;

#[derive(Debug, Clone)]
pub struct Options {
    pub file: PathBuf,
    pub folder: PathBuf,
    /// Dense and hybrid are measured too when given.
    pub model: Option<PathBuf>,
    pub tuning: Tuning,
    pub limit_questions: Option<usize>,
    pub work_dir: Option<PathBuf>,
}

#[derive(Deserialize)]
struct Question {
    question: String,
    answers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub folder: String,
    pub notes: usize,
    pub questions: usize,
    /// Questions whose best BM25 note links to an answer (or is linked from one) without being
    /// one.
    pub linked_questions: usize,
    pub model: Option<String>,
    pub systems: Vec<SystemFigures>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SystemFigures {
    pub system: String,
    pub ndcg_at_10: f64,
    pub mrr_at_10: f64,
    pub success_at_1: f64,
    /// The same on the linked questions.
    pub linked_ndcg_at_10: f64,
    pub linked_mrr_at_10: f64,
    pub linked_success_at_1: f64,
    /// Median time to answer a question, in process (what `--graph` costs shows here).
    pub query_p50_ms: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{}: {} notes, {} questions ({} linked){}",
            self.folder,
            self.notes,
            self.questions,
            self.linked_questions,
            self.model
                .as_deref()
                .map(|m| format!(", model {m}"))
                .unwrap_or_default()
        )?;
        write!(
            f,
            "  {:<13} {:>8} {:>7} {:>7}   linked: {:>8} {:>7} {:>7}   p50 ms",
            "system", "nDCG@10", "MRR@10", "S@1", "nDCG@10", "MRR@10", "S@1"
        )?;
        for s in &self.systems {
            write!(
                f,
                "\n  {:<13} {:>8.4} {:>7.4} {:>7.4}           {:>8.4} {:>7.4} {:>7.4}   {:>6.2}",
                s.system,
                s.ndcg_at_10,
                s.mrr_at_10,
                s.success_at_1,
                s.linked_ndcg_at_10,
                s.linked_mrr_at_10,
                s.linked_success_at_1,
                s.query_p50_ms
            )?;
        }
        Ok(())
    }
}

pub fn run(opts: &Options) -> anyhow::Result<Report> {
    let mut questions = super::read_jsonl::<Question>(&opts.file)?;
    if let Some(n) = opts.limit_questions {
        questions.truncate(n);
    }
    if questions.is_empty() {
        bail!("{} holds no question", opts.file.display());
    }
    let folder = std::fs::canonicalize(&opts.folder)
        .with_context(|| format!("opening {}", opts.folder.display()))?;
    for q in &questions {
        for a in &q.answers {
            if !folder.join(a).is_file() {
                bail!(
                    "{}: the answer {a:?} of {:?} is not a file in {}",
                    opts.file.display(),
                    q.question,
                    folder.display()
                );
            }
        }
    }

    let (_scratch, work) = super::work_dir(opts.work_dir.as_ref(), "eval-questions");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let store = Arc::new(Store::open(&work.join("brain.db"))?);
    let marker = work.join("ingested");
    if !marker.exists() {
        super::ingest_folder(&store, "eval@localhost", &folder, false)?;
        std::fs::write(&marker, b"")?;
    }
    let prepared = super::prepare(
        &store,
        &work,
        opts.tuning,
        opts.work_dir.is_some(),
        opts.model.as_deref(),
    )?;
    let search = &prepared.search;
    let notes: Vec<String> = store.read(|c| {
        let mut stmt = c.prepare(
            "SELECT rel_path FROM sources WHERE status = 'indexed' AND rel_path LIKE '%.md'
             ORDER BY rel_path",
        )?;
        let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
        rows.collect::<Result<Vec<_>, _>>()
    })?;
    let fts5 = Fts5::build(&folder, &notes)?;

    let judged: Vec<HashMap<String, u32>> = questions
        .iter()
        .map(|q| q.answers.iter().map(|a| (a.clone(), 1)).collect())
        .collect();
    let prefix = format!("{}/", folder.display());
    let ask = |q: &str, mode: Mode, graph: bool| -> anyhow::Result<Vec<(String, String)>> {
        let resp = search.query(&Request {
            query: q.to_owned(),
            mode: Some(mode),
            k: DEPTH,
            filters: Filters::default(),
            graph,
            explain: false,
            group_by_note: true,
            tuning: None,
        })?;
        Ok(resp
            .hits
            .into_iter()
            .map(|h| {
                let rel = h.path.strip_prefix(&prefix).unwrap_or(&h.path).to_owned();
                (h.node_id, rel)
            })
            .collect())
    };

    // The linked questions, by the graph around each question's best BM25 note.
    let mut linked = vec![false; questions.len()];
    for (i, q) in questions.iter().enumerate() {
        let top = ask(&q.question, Mode::Bm25, false)?;
        let Some((node, rel)) = top.first() else {
            continue;
        };
        if judged[i].contains_key(rel) {
            continue;
        }
        let near = neighbours(&store, node, &prefix)?;
        linked[i] = q.answers.iter().any(|a| near.contains(a));
    }

    let mut systems: Vec<(String, Vec<Vec<String>>, f64)> = Vec::new();
    let mut fts = Vec::with_capacity(questions.len());
    let mut took = Vec::with_capacity(questions.len());
    for q in &questions {
        let t = Instant::now();
        fts.push(fts5.search(&q.question, DEPTH)?);
        took.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    systems.push(("fts5-porter".into(), fts, median(took)));
    let mut modes = vec![Mode::Bm25];
    if prepared.model_id.is_some() {
        modes.extend([Mode::Dense, Mode::Hybrid]);
    }
    for mode in modes {
        for graph in [false, true] {
            let mut ranked = Vec::with_capacity(questions.len());
            let mut took = Vec::with_capacity(questions.len());
            for q in &questions {
                let t = Instant::now();
                let hits = ask(&q.question, mode, graph)?;
                took.push(t.elapsed().as_secs_f64() * 1000.0);
                ranked.push(hits.into_iter().map(|(_, rel)| rel).collect());
            }
            let name = format!("{mode:?}{}", if graph { "+graph" } else { "" }).to_lowercase();
            systems.push((name, ranked, median(took)));
        }
    }
    let figures = systems
        .into_iter()
        .map(|(system, ranked, p50)| figures(system, &ranked, &judged, &linked, p50))
        .collect();
    Ok(Report {
        folder: folder.display().to_string(),
        notes: notes.len(),
        questions: questions.len(),
        linked_questions: linked.iter().filter(|l| **l).count(),
        model: prepared.model_id.clone(),
        systems: figures,
    })
}

/// The notes `node` links to or is linked from, as paths relative to the folder.
fn neighbours(store: &Store, node: &str, prefix: &str) -> anyhow::Result<HashSet<String>> {
    let sub = store.read(|c| {
        crate::graph::neighbors(
            c,
            node,
            crate::graph::Direction::Both,
            &["links_to".to_owned()],
            1,
            crate::graph::MAX_NODES_LIMIT,
        )
    })?;
    Ok(sub
        .nodes
        .into_iter()
        .filter_map(|n| n.path)
        .map(|p| p.strip_prefix(prefix).unwrap_or(&p).to_owned())
        .collect())
}

/// One question's score from its ranking and its judgements.
type Metric = dyn Fn(&[&str], &HashMap<String, u32>) -> f64;

fn figures(
    system: String,
    ranked: &[Vec<String>],
    judged: &[HashMap<String, u32>],
    linked: &[bool],
    query_p50_ms: f64,
) -> SystemFigures {
    let mean = |only_linked: bool, f: &Metric| {
        let (mut n, mut sum) = (0usize, 0.0);
        for (i, r) in ranked.iter().enumerate() {
            if only_linked && !linked[i] {
                continue;
            }
            let docs: Vec<&str> = r.iter().map(String::as_str).collect();
            sum += f(&docs, &judged[i]);
            n += 1;
        }
        if n == 0 { 0.0 } else { sum / n as f64 }
    };
    let ndcg = |d: &[&str], j: &HashMap<String, u32>| ndcg_at(d, j, 10);
    let mrr = |d: &[&str], j: &HashMap<String, u32>| mrr_at(d, j, 10);
    SystemFigures {
        system,
        ndcg_at_10: mean(false, &ndcg),
        mrr_at_10: mean(false, &mrr),
        success_at_1: mean(false, &success_at_1),
        linked_ndcg_at_10: mean(true, &ndcg),
        linked_mrr_at_10: mean(true, &mrr),
        linked_success_at_1: mean(true, &success_at_1),
        query_p50_ms,
    }
}

fn median(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    percentile(&ms, 0.5)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shipped question set is what the README says: at least 40 questions, each judged by
    /// notes given as Markdown paths inside the vault.
    #[test]
    fn the_obsidian_hub_question_set_is_well_formed() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/questions/obsidian-hub.jsonl");
        let questions = super::super::read_jsonl::<Question>(&file).unwrap();
        assert!(questions.len() >= 40, "{} questions", questions.len());
        let mut seen = HashSet::new();
        for q in &questions {
            assert!(
                seen.insert(q.question.clone()),
                "asked twice: {}",
                q.question
            );
            assert!(!q.answers.is_empty(), "{}", q.question);
            for a in &q.answers {
                assert!(a.ends_with(".md") && !a.starts_with('/'), "{a}");
            }
        }
    }
}
