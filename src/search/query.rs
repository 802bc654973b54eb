//! Answering a query: BM25 and dense candidate lists, reciprocal-rank fusion, graph proximity,
//! grouping per note and hydration from the store with snippets. Must not change the index.

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, params};

use super::index::{self, IndexError, TextIndex};
use super::vectors::Vectors;
use super::{
    Budget, Explain, Hit, IndexState, MAX_K, Mode, Request, Response, Search, SearchError, Signal,
    Tuning, VectorCoverage, proximity,
};
use crate::store::part_id::{self, PartKind};

/// Words of a query looked up in the store while the text index cannot answer; each is a scan
/// of every current chunk, so only the longest (the most selective) are.
const FALLBACK_WORDS: usize = 4;
/// Chunks one fallback word may match at most: bounds the memory of a common word.
const FALLBACK_ROWS: i64 = 2000;

impl Search {
    pub fn query(&self, req: &Request) -> Result<Response, SearchError> {
        let started = Instant::now();
        self.limits.check(req)?;
        let budget = if self.failpoint.as_deref() == Some("search_budget_spent") {
            Budget::spent(started, self.limits.timeout)
        } else {
            Budget::new(started, self.limits.timeout)
        };
        let out_of_time = |phase: &'static str| {
            move |e: IndexError| match e {
                IndexError::OutOfTime => SearchError::Timeout {
                    ms: budget.limit.as_millis() as u64,
                    phase,
                },
                e => e.into(),
            }
        };
        let k = req.k.clamp(1, MAX_K);
        let mut warnings = Vec::new();
        let has_model = self
            .model
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .is_some();
        let mode = match req.mode {
            Some(m) => m,
            None if self.has_vectors() => Mode::Hybrid,
            None => Mode::Bm25,
        };
        if mode != Mode::Bm25 && !has_model {
            return Err(SearchError::ModelUnavailable(format!(
                "{} search needs an embedding model and none is configured; add one with \
                 `brain models add NAME PATH`, or use --mode bm25",
                if mode == Mode::Dense {
                    "dense"
                } else {
                    "hybrid"
                }
            )));
        }
        let text = self.text();
        let depth = (k * 4).max(100);
        let t = req.tuning.unwrap_or(self.tuning);
        budget.check("parsing the query")?;
        let tq = text.text_query(&req.query, &t.boosts, self.limits.max_prefix_expansions);
        // What the index cannot answer because it is damaged is left out, with a warning; the
        // worker replaces the index and rebuilds it meanwhile.
        let mut damaged = false;
        budget.check("filtering")?;
        // A property filter reads the index (the notes that have the property).
        let filter = self
            .shielded(&text, || text.filter_query(&req.filters, budget.deadline()))
            .map_err(out_of_time("filtering"))?
            .unwrap_or_else(|| {
                // Nothing is known to pass the filters.
                damaged = true;
                Some(Box::new(tantivy::query::EmptyQuery))
            });
        // The chunks the filters allow, for the signals that do not come from the index
        // (dense vectors, graph neighbours); computed once per query.
        let allowed = match &filter {
            Some(f) if mode != Mode::Bm25 || req.graph => {
                let found = self.shielded(&text, || {
                    text.matching_chunks(f.as_ref(), budget.deadline())
                });
                match found.map_err(out_of_time("filtering"))? {
                    Some(a) => Some(a),
                    // Nothing is known to pass the filters.
                    None => {
                        damaged = true;
                        Some(HashSet::new())
                    }
                }
            }
            _ => None,
        };

        budget.check("the text search")?;
        let bm25 = if mode != Mode::Dense {
            let found = self.shielded(&text, || {
                text.search(
                    tq.box_clone(),
                    filter.as_ref().map(|f| f.box_clone()),
                    depth,
                    budget.deadline(),
                )
            });
            found
                .map_err(out_of_time("the text search"))?
                .unwrap_or_else(|| {
                    damaged = true;
                    Vec::new()
                })
        } else {
            Vec::new()
        };
        if mode != Mode::Dense && !damaged {
            let max = self.limits.max_prefix_expansions;
            let cut = self.shielded(&text, || text.cut_prefixes(&req.query, max));
            for word in cut
                .map_err(out_of_time("the text search"))?
                .unwrap_or_default()
            {
                warnings.push(format!(
                    "{word}* stands for more than {max} index terms; only the first {max} in \
                     alphabetical order were searched ([search] max_prefix_expansions)"
                ));
            }
        }
        // With no index to ask (damaged, or empty while it is rebuilt), words are looked up
        // in the store instead: slower and unranked, but the notes are found.
        let no_index = damaged || (self.rebuilding.load(Ordering::SeqCst) && text.num_docs() == 0);
        let bm25 = if mode != Mode::Dense && no_index && req.filters.is_empty() {
            self.words_in_store(&req.query, depth, &budget)?
        } else {
            bm25
        };
        if damaged {
            warnings.push(
                "the text index is damaged and is being rebuilt from the store; results may \
                 be incomplete until it is done"
                    .into(),
            );
        } else if self.rebuilding.load(Ordering::SeqCst) {
            warnings.push("the text index is being rebuilt; results may be incomplete".into());
        } else if let IndexState::Failed(e) = self.state() {
            warnings.push(format!(
                "the text index could not take the latest changes ({e}); results may be stale \
                 until it can, which is retried"
            ));
        }
        budget.check("the vector search")?;
        let dense = if mode != Mode::Bm25 {
            let guard = self.model.read().unwrap_or_else(|p| p.into_inner());
            let m = guard.as_ref().ok_or_else(|| {
                SearchError::ModelUnavailable("the embedding model was unloaded".into())
            })?;
            // The index holds every current chunk; counting it costs nothing.
            let total = text.num_docs();
            if (m.vectors.len() as u64) < total {
                warnings.push(format!(
                    "embedding in progress: {} of {} chunks have vectors",
                    m.vectors.len(),
                    total
                ));
            }
            let q = m
                .embedder
                .embed_query(&req.query)
                .map_err(SearchError::Embed)?;
            budget.check("the vector search")?;
            m.vectors.top(&q, depth, allowed.as_ref())
        } else {
            Vec::new()
        };

        let vectors = if has_model && !bm25.is_empty() {
            let guard = self.model.read().unwrap_or_else(|p| p.into_inner());
            guard.as_ref().map(|m| coverage(&bm25, &m.vectors))
        } else {
            None
        };

        // Reciprocal-rank fusion over chunks.
        let mut fused: HashMap<String, Candidate> = HashMap::new();
        let w_bm25 = if mode == Mode::Dense {
            0.0
        } else {
            t.weight_bm25
        };
        let w_dense = if mode == Mode::Bm25 {
            0.0
        } else {
            t.weight_dense
        };
        fuse(&mut fused, &bm25, w_bm25, t.rrf_k, |c| &mut c.bm25);
        fuse(&mut fused, &dense, w_dense, t.rrf_k, |c| &mut c.dense);
        if mode != Mode::Hybrid && !req.graph {
            // A single signal keeps its own scores, so BM25 and cosine values stay meaningful.
            // With the graph it is fused by rank like any other: a BM25 score of 5 to 30 and a
            // graph term of 1/(rrf_k + rank) would not add up to anything.
            for c in fused.values_mut() {
                c.fused = c.bm25.or(c.dense).map_or(0.0, |s| s.score);
            }
        }
        if req.graph && !fused.is_empty() {
            budget.check("graph expansion")?;
            self.graph_expand(&mut fused, allowed.as_ref(), &t)?;
        }
        let total = fused.len();
        let mut ranked: Vec<(String, Candidate)> = fused.into_iter().collect();
        ranked.sort_by(|a, b| b.1.fused.total_cmp(&a.1.fused).then_with(|| a.0.cmp(&b.0)));
        if req.group_by_note {
            let mut seen = HashSet::new();
            ranked.retain(|(_, c)| seen.insert(c.note.clone()));
        }

        // Hydrate from the store; a chunk retired since it was indexed drops out here.
        budget.check("reading the hits")?;
        let searcher = text.reader.searcher();
        let mut snippets = if damaged {
            None
        } else {
            let made = std::panic::catch_unwind(AssertUnwindSafe(|| {
                tantivy::snippet::SnippetGenerator::create(&searcher, tq.as_ref(), text.fields.body)
            }));
            made.ok().and_then(Result::ok)
        };
        if let Some(s) = snippets.as_mut() {
            s.set_max_num_chars(240);
        }
        let mut hits = Vec::with_capacity(k);
        self.store.read(|c| {
            for (chunk, cand) in &ranked {
                if hits.len() >= k {
                    break;
                }
                budget.check("reading the hits")?;
                if let Some(mut hit) = hydrate(c, chunk)? {
                    hit.score = cand.fused;
                    let (snippet, highlights) = snippet_for(snippets.as_ref(), &hit.snippet);
                    hit.snippet = snippet;
                    hit.highlights = highlights;
                    if req.explain {
                        hit.explain = Some(Explain {
                            bm25: cand.bm25,
                            dense: cand.dense,
                            graph: cand.graph,
                            fused: cand.fused,
                        });
                    }
                    hits.push(hit);
                }
            }
            Ok::<_, SearchError>(())
        })?;
        Ok(Response {
            mode,
            hits,
            total,
            took_ms: started.elapsed().as_secs_f64() * 1000.0,
            warnings,
            vectors,
        })
    }

    /// The fallback for words while the text index cannot answer: chunks whose text or note
    /// title contains the query's longest words ([`FALLBACK_WORDS`] of them, each a bounded
    /// scan of the store), ranked by how many they contain. Excluded words (`-x`) are ignored.
    fn words_in_store(
        &self,
        query: &str,
        depth: usize,
        budget: &Budget,
    ) -> Result<Vec<(String, String, f32)>, SearchError> {
        let mut words: Vec<String> = query
            .split_whitespace()
            .filter(|p| !p.starts_with('-'))
            .flat_map(|p| p.split(|c: char| !c.is_alphanumeric()))
            .filter(|w| w.chars().count() >= 2)
            .map(str::to_lowercase)
            .collect();
        words.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        words.dedup();
        words.truncate(FALLBACK_WORDS);
        let mut found: HashMap<String, (String, f32)> = HashMap::new();
        self.store.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT ch.rid, ch.legacy_id, n.id FROM chunks ch
                 JOIN nodes n ON n.kind IN ('note', 'file') AND n.key = 'source:' || ch.source_id
                             AND n.valid_to IS NULL
                 WHERE ch.valid_to IS NULL
                   AND (ch.content LIKE ?1 ESCAPE '\\' OR n.title LIKE ?1 ESCAPE '\\')
                 LIMIT ?2",
            )?;
            for w in &words {
                budget.check("the text search")?;
                let pattern = format!("%{}%", crate::graph::escape_like(w));
                let rows = stmt.query_map(params![pattern, FALLBACK_ROWS], |r| {
                    Ok((
                        part_id::of_row(PartKind::Chunk, r.get(0)?, r.get(1)?),
                        r.get::<_, String>(2)?,
                    ))
                })?;
                for row in rows {
                    let (chunk, note) = row?;
                    found.entry(chunk).or_insert((note, 0.0)).1 += 1.0;
                }
            }
            Ok::<_, SearchError>(())
        })?;
        let mut ranked: Vec<(String, String, f32)> =
            found.into_iter().map(|(c, (n, s))| (c, n, s)).collect();
        ranked.sort_by(|a, b| b.2.total_cmp(&a.2).then_with(|| a.0.cmp(&b.0)));
        ranked.truncate(depth);
        Ok(ranked)
    }

    /// Runs a read of `text`, catching a panic inside tantivy. `Ok(None)` when the index turned
    /// out damaged (reported, so the worker repairs it); the time budget running out is the
    /// one error passed on.
    fn shielded<T>(
        &self,
        text: &Arc<TextIndex>,
        read: impl FnOnce() -> Result<T, IndexError>,
    ) -> Result<Option<T>, IndexError> {
        let reason = match std::panic::catch_unwind(AssertUnwindSafe(read)) {
            Ok(Ok(v)) => return Ok(Some(v)),
            Ok(Err(IndexError::OutOfTime)) => return Err(IndexError::OutOfTime),
            // A query tantivy will not run says nothing about the files. (A damaged document
            // store shows as an invalid argument, "failed to lookup doc", so that one counts.)
            Ok(Err(
                e @ IndexError::Tantivy(
                    tantivy::TantivyError::SchemaError(_) | tantivy::TantivyError::FieldNotFound(_),
                ),
            )) => return Err(e),
            Ok(Err(e)) => e.to_string(),
            Err(panic) => format!(
                "panic while searching: {}",
                crate::supervise::panic_message(panic.as_ref())
            ),
        };
        self.report_damage(text, reason);
        Ok(None)
    }

    /// Graph proximity: the notes around the best notes so far ([`proximity`], one SQL query)
    /// gain a third ranked signal; notes not yet among the candidates join with their first
    /// chunk.
    fn graph_expand(
        &self,
        fused: &mut HashMap<String, Candidate>,
        allowed: Option<&HashSet<String>>,
        t: &Tuning,
    ) -> Result<(), SearchError> {
        let mut best: Vec<(&String, &Candidate)> = fused.iter().collect();
        best.sort_by(|a, b| b.1.fused.total_cmp(&a.1.fused).then_with(|| a.0.cmp(b.0)));
        let mut seeds: Vec<String> = Vec::new();
        for (_, c) in best {
            if !seeds.contains(&c.note) {
                seeds.push(c.note.clone());
            }
            if seeds.len() >= proximity::SEEDS {
                break;
            }
        }
        let ranked = self
            .store
            .read(|c| proximity::neighbours(c, &seeds, t.rrf_k))?;
        let w = t.weight_graph;
        let k = t.rrf_k;
        for (i, (note, closeness)) in ranked.iter().enumerate() {
            let signal = Signal {
                rank: i + 1,
                score: *closeness,
            };
            let add = w / (k + (i + 1) as f32);
            let mut found = false;
            for c in fused.values_mut().filter(|c| &c.note == note) {
                c.graph = Some(signal);
                c.fused += add;
                found = true;
            }
            if !found {
                let first: Option<String> = self.store.read(|c| {
                    c.query_row(
                        "SELECT c.rid, c.legacy_id FROM chunks c
                         WHERE c.source_id = (SELECT source_id FROM nodes WHERE id = ?1)
                           AND c.valid_to IS NULL
                         ORDER BY c.ordinal LIMIT 1",
                        [note],
                        |r| Ok(part_id::of_row(PartKind::Chunk, r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                })?;
                if let Some(chunk) = first
                    && allowed.is_none_or(|a| a.contains(&chunk))
                {
                    let mut cand = Candidate::new(note);
                    cand.graph = Some(signal);
                    cand.fused = add;
                    fused.insert(chunk, cand);
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone)]
pub(super) struct Candidate {
    note: String,
    bm25: Option<Signal>,
    dense: Option<Signal>,
    graph: Option<Signal>,
    fused: f32,
}

impl Candidate {
    fn new(note: &str) -> Candidate {
        Candidate {
            note: note.to_owned(),
            bm25: None,
            dense: None,
            graph: None,
            fused: 0.0,
        }
    }
}

/// How many notes of the text matches `(chunk, note, score)` have a vector for each of their
/// matched chunks.
pub(super) fn coverage(matches: &[(String, String, f32)], vectors: &Vectors) -> VectorCoverage {
    let mut notes: HashMap<&str, bool> = HashMap::new();
    for (chunk, note, _) in matches {
        let covered = notes.entry(note.as_str()).or_insert(true);
        *covered &= vectors.contains(chunk);
    }
    VectorCoverage {
        matching_notes: notes.len(),
        with_vectors: notes.values().filter(|c| **c).count(),
    }
}

/// Adds one ranked list to the fusion: each chunk gets its rank and score in `signal` and
/// `weight / (rrf_k + rank)` added to its fused score.
pub(super) fn fuse(
    fused: &mut HashMap<String, Candidate>,
    list: &[(String, String, f32)],
    weight: f32,
    rrf_k: f32,
    signal: impl Fn(&mut Candidate) -> &mut Option<Signal>,
) {
    for (i, (chunk, note, score)) in list.iter().enumerate() {
        let c = fused
            .entry(chunk.clone())
            .or_insert_with(|| Candidate::new(note));
        *signal(c) = Some(Signal {
            rank: i + 1,
            score: *score,
        });
        c.fused += weight / (rrf_k + (i + 1) as f32);
    }
}

/// Reads what a hit shows; `None` when the chunk is no longer current. The snippet field is
/// filled with the chunk's whole text, cut down by the caller.
pub(super) fn hydrate(c: &Connection, chunk_id: &str) -> rusqlite::Result<Option<Hit>> {
    let (by, key): (&str, rusqlite::types::Value) = match part_id::parse(chunk_id) {
        Some((PartKind::Chunk, rid)) => ("ch.rid", rid.into()),
        _ => ("ch.legacy_id", chunk_id.to_owned().into()),
    };
    let hit = c
        .prepare_cached(&format!(
            "SELECT n.id, n.title, ch.content,
                    coalesce(ch.heading_path, (SELECT s0.path FROM sections s0
                        WHERE s0.source_id = ch.source_id AND s0.ordinal = ch.section
                          AND s0.valid_to IS NULL)),
                    ch.byte_start, ch.byte_end,
                ch.line_start, ch.line_end, v.content_hash, r.path, s.rel_path
         FROM chunks ch
         JOIN nodes n ON n.kind IN ('note', 'file') AND n.key = 'source:' || ch.source_id
                     AND n.valid_to IS NULL
         JOIN sources s ON s.id = ch.source_id
         JOIN roots r ON r.id = s.root_id
         LEFT JOIN source_versions v ON v.id = ch.cite_version
         WHERE {by} = ?1 AND ch.valid_to IS NULL
         LIMIT 1"
        ))?
        .query_row([key], |r| {
            let heading: Option<String> = r.get(3)?;
            let heading_path = index::heading_path(heading.as_deref());
            Ok(Hit {
                node_id: r.get(0)?,
                chunk_id: chunk_id.to_owned(),
                title: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                snippet: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                heading_path,
                bytes: [
                    r.get::<_, Option<i64>>(4)?.unwrap_or(0) as u64,
                    r.get::<_, Option<i64>>(5)?.unwrap_or(0) as u64,
                ],
                lines: [
                    r.get::<_, Option<i64>>(6)?.unwrap_or(0) as u32,
                    r.get::<_, Option<i64>>(7)?.unwrap_or(0) as u32,
                ],
                content_hash: r.get::<_, Option<String>>(8)?.unwrap_or_default(),
                path: index::join_path(&r.get::<_, String>(9)?, &r.get::<_, String>(10)?),
                score: 0.0,
                highlights: Vec::new(),
                explain: None,
                written: None,
            })
        })
        .optional()?;
    match hit {
        Some(h) => Ok(Some(h)),
        // Not a chunk of a file: a written node's text is its own document.
        None if !by.starts_with("ch.rid") => super::written::hydrate(c, chunk_id),
        None => Ok(None),
    }
}

/// A window of `text` around the query's words, with their ranges; the start of the text when
/// no word matches (a dense-only hit).
pub(super) fn snippet_for(
    generator: Option<&tantivy::snippet::SnippetGenerator>,
    text: &str,
) -> (String, Vec<[usize; 2]>) {
    if let Some(g) = generator {
        let s = g.snippet(text);
        if !s.highlighted().is_empty() {
            let hl = s.highlighted().iter().map(|r| [r.start, r.end]).collect();
            return (s.fragment().to_owned(), hl);
        }
    }
    let mut end = text.len().min(240);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_owned(), Vec::new())
}
