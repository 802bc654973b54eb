//! The text index: a tantivy index on disk holding one document per current chunk.
//!
//! Owns the index schema, the analyzer, and the mapping from store rows to index documents.
//! Architecture Invariant: the index is derived — SQLite is the ground truth. The index stores
//! ids only; every text shown to a user is read back from the store. The commit payload records
//! which outbox sequence number (and which store) the index reflects, so a stale, foreign or
//! corrupt index is detected on open and rebuilt.

use std::collections::HashSet;
use std::ops::Bound;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use rusqlite::{Connection, OptionalExtension, params};

use super::analyzer;
use crate::store::part_id::{self, PartKind};
use serde::{Deserialize, Serialize};
use tantivy::collector::{Collector, DocSetCollector, SegmentCollector, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, InvertedIndexRangeQuery, Occur,
    PhrasePrefixQuery, Query, QueryParser, RangeQuery, TermQuery, TermSetQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::TokenStream;
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// Bumped whenever the schema or the analyzer changes; an index built by another version is
/// rebuilt on open.
pub const INDEX_FORMAT: u32 = 5;
/// The IDF a word in more than half the chunks of a field gets (as in SQLite FTS5's `bm25()`):
/// not zero, so that a query of only such words still finds something.
const MIN_IDF: f32 = 1e-6;
/// Bytes a document takes beyond its body, heading, title and paths (ids, tags, kinds, time,
/// each value's header), as room reserved up front; a document with more grows as usual.
const DOC_SLACK: usize = 256;
/// Memory the index writer may buffer before flushing a segment.
const WRITER_HEAP: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Store(#[from] rusqlite::Error),
    /// tantivy panicked on what it read (a damaged file).
    #[error("search index: {0}")]
    Panicked(String),
    /// The query's time budget ran out before the next segment was searched.
    #[error("search index: the query ran out of time")]
    OutOfTime,
    #[error("search index directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Clone, Copy)]
pub struct Fields {
    /// A chunk's row, when its id is the one its row gives it (`store::part_id`).
    pub chunk_rid: Field,
    /// Any other document's id: a chunk carried over with an older id, a written node.
    pub chunk_id: Field,
    pub note_id: Field,
    pub title: Field,
    pub heading: Field,
    pub body: Field,
    pub tags_text: Field,
    pub path_text: Field,
    pub tag: Field,
    pub path: Field,
    pub kind: Field,
    pub mtime: Field,
    pub prop: Field,
}

fn schema() -> (Schema, Fields) {
    let mut b = Schema::builder();
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(analyzer::NAME)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        // Ids are read back from their fast-field columns, which every segment keeps anyway;
        // storing them too held a second copy of each in the document store (about a fifth of
        // the index on a docs folder). A chunk's id is never searched for (a note's is, to
        // delete its documents): not indexed, it adds no term per chunk to the dictionary
        // (a docs folder's index 35 → 33 MB, and a rebuild's CPU about 6 % less). Nearly every
        // chunk's id is its row's, kept as that number: a text column would build and sort a
        // dictionary of every id in each segment (the same folder's index 33 → 31 MB merged).
        chunk_rid: b.add_u64_field("chunk_rid", FAST),
        chunk_id: b.add_text_field("chunk_id", FAST),
        note_id: b.add_text_field("note_id", STRING | FAST),
        title: b.add_text_field("title", text.clone()),
        heading: b.add_text_field("heading", text.clone()),
        body: b.add_text_field("body", text.clone()),
        tags_text: b.add_text_field("tags", text.clone()),
        path_text: b.add_text_field("path", text),
        tag: b.add_text_field("tag", STRING),
        path: b.add_text_field("path_raw", STRING),
        kind: b.add_text_field("kind", STRING),
        mtime: b.add_i64_field("mtime", INDEXED | FAST),
        prop: b.add_text_field("prop", STRING),
    };
    (b.build(), fields)
}

/// What the commit payload says about the index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Payload {
    pub format: u32,
    /// The store this index was built from (`meta.store_id`).
    pub store_id: String,
    /// The last outbox sequence number applied.
    pub seq: i64,
}

/// A chunk as the index sees it, read from the store.
#[derive(Debug, Clone)]
pub struct ChunkDoc {
    pub chunk_id: String,
    /// The note's id, title and aliases, tags, paths, kinds and property terms are the note's,
    /// shared by each of its chunks rather than copied: a note of thousands of chunks and
    /// fields would otherwise hold chunks × fields strings, and a cold ingest allocated and
    /// freed each of them once per chunk.
    pub note_id: Arc<str>,
    pub title: Arc<str>,
    pub heading: String,
    pub body: String,
    pub tags: Arc<[String]>,
    pub path: Arc<str>,
    /// The path inside its root: the words of folder and file names (the root's own words are
    /// in every note's path and say nothing about any one).
    pub rel_path: Arc<str>,
    pub kinds: Arc<[String]>,
    pub mtime_secs: i64,
    pub props: Arc<[String]>,
}

/// Property terms indexed per note for `--prop` filters. Each is copied into every chunk's
/// document, so a note with a million inline fields must not bring them all: the first ones (in
/// key order) are filterable, and all of them stay in the store.
pub const MAX_INDEXED_PROPS: usize = 64;

pub struct TextIndex {
    pub dir: PathBuf,
    pub index: Index,
    pub reader: IndexReader,
    /// tantivy allows one writer per index; holding this lock is holding the right to change
    /// the index. `None` after a failure: the next [`TextIndex::with_writer`] makes a new one.
    writer: Mutex<Option<IndexWriter>>,
    pub fields: Fields,
}

/// How [`TextIndex::open`] found the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Up to the returned payload.
    Existing(Payload),
    /// Created empty, because there was none or it was built by another format or store; the
    /// reason says which.
    Fresh(String),
    /// Created empty in place of a damaged index, which was moved aside.
    Damaged(String),
}

impl TextIndex {
    /// Opens the index in `dir`, or creates an empty one. An index that cannot be opened — an
    /// error or a panic inside tantivy on a damaged file — is moved aside
    /// ([`move_aside`]) and replaced by an empty one; only an empty index that cannot be
    /// created is an error.
    pub fn open(dir: &Path, store_id: &str) -> Result<(TextIndex, Opened), IndexError> {
        // Something else in the index's place (a file, say) is damage like any other.
        if dir.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            return TextIndex::replace_damaged(dir, "index path is not a folder");
        }
        std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let (schema, fields) = schema();
        if dir.join("meta.json").exists() {
            let opened = std::panic::catch_unwind(AssertUnwindSafe(|| {
                open_existing(dir, store_id, &schema, fields)
            }));
            match opened {
                Ok(Ok(Ok(found))) => return Ok(found),
                Ok(Ok(Err(reason))) => {
                    // Readable, but not this store's or this format's: nothing to keep.
                    remove_dir(dir)?;
                    let index = TextIndex::create(dir, &schema, fields)?;
                    return Ok((index, Opened::Fresh(reason)));
                }
                Ok(Err(e)) => {
                    let reason = format!("index unreadable ({e})");
                    return TextIndex::replace_damaged(dir, &reason);
                }
                Err(panic) => {
                    let reason = format!(
                        "index unreadable (panic: {})",
                        crate::supervise::panic_message(panic.as_ref())
                    );
                    return TextIndex::replace_damaged(dir, &reason);
                }
            }
        }
        let index = TextIndex::create(dir, &schema, fields)?;
        Ok((index, Opened::Fresh("no index yet".into())))
    }

    /// Moves the damaged index in `dir` aside and creates an empty one in its place.
    pub fn replace_damaged(dir: &Path, reason: &str) -> Result<(TextIndex, Opened), IndexError> {
        match move_aside(dir)? {
            Some(kept) => tracing::warn!(
                reason,
                kept = %kept.display(),
                "search index damaged; moved aside, rebuilding from the store"
            ),
            None => tracing::warn!(
                reason,
                "search index damaged; removed, rebuilding from the store"
            ),
        }
        let (schema, fields) = schema();
        let index = TextIndex::create(dir, &schema, fields)?;
        Ok((index, Opened::Damaged(reason.to_owned())))
    }

    fn create(dir: &Path, schema: &Schema, fields: Fields) -> Result<TextIndex, IndexError> {
        std::fs::create_dir_all(dir).map_err(|source| IndexError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let index = Index::create_in_dir(dir, schema.clone())?;
        TextIndex::ready(dir, index, fields)
    }

    /// Registers the analyzer and opens the writer and the reader.
    fn ready(dir: &Path, index: Index, fields: Fields) -> Result<TextIndex, IndexError> {
        index
            .tokenizers()
            .register(analyzer::NAME, analyzer::english());
        let writer = index.writer_with_num_threads(1, WRITER_HEAP)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(TextIndex {
            dir: dir.to_owned(),
            index,
            reader,
            writer: Mutex::new(Some(writer)),
            fields,
        })
    }

    /// Runs `f` with the writer, making a new one first if the last one failed. When `f` fails
    /// or panics the writer is dropped — with whatever it held that was not committed — so
    /// that a writer tantivy killed (a full disk during a commit, say) is never used again.
    pub fn with_writer<T>(
        &self,
        f: impl FnOnce(&mut IndexWriter) -> Result<T, IndexError>,
    ) -> Result<T, IndexError> {
        let mut guard = self.writer.lock().unwrap_or_else(|p| {
            // A panic while the writer was held: what it buffered is suspect.
            let mut g = p.into_inner();
            *g = None;
            g
        });
        self.writer.clear_poison();
        if guard.is_none() {
            *guard = Some(self.index.writer_with_num_threads(1, WRITER_HEAP)?);
        }
        // Invariant: set just above when it was `None`.
        let Some(writer) = guard.as_mut() else {
            return Err(IndexError::Panicked("index writer missing".into()));
        };
        let result = f(writer);
        if result.is_err() {
            *guard = None;
        }
        result
    }

    /// Checks every file of the current commit against its checksum (reads the whole index).
    /// Returns the damaged files' names; a panic or error while reading counts as damage too.
    pub fn damaged_files(&self) -> Vec<String> {
        let checked = std::panic::catch_unwind(AssertUnwindSafe(|| self.index.validate_checksum()));
        match checked {
            Ok(Ok(files)) => {
                let mut names: Vec<String> =
                    files.iter().map(|p| p.display().to_string()).collect();
                names.sort();
                names
            }
            Ok(Err(e)) => vec![format!("({e})")],
            Err(p) => vec![format!(
                "(panic: {})",
                crate::supervise::panic_message(p.as_ref())
            )],
        }
    }

    pub fn add(&self, writer: &IndexWriter, d: &ChunkDoc) -> Result<(), IndexError> {
        let f = &self.fields;
        // Room for the texts up front: the document is one buffer, grown by doubling otherwise.
        let mut doc = TantivyDocument::with_capacity(
            d.body.len() + d.heading.len() + d.title.len() + 2 * d.path.len() + DOC_SLACK,
        );
        match part_id::parse(&d.chunk_id) {
            Some((PartKind::Chunk, rid)) => doc.add_u64(f.chunk_rid, rid.unsigned_abs()),
            _ => doc.add_text(f.chunk_id, &d.chunk_id),
        }
        doc.add_text(f.note_id, &d.note_id);
        doc.add_text(f.title, &d.title);
        doc.add_text(f.heading, &d.heading);
        doc.add_text(f.body, &d.body);
        for t in d.tags.iter() {
            doc.add_text(f.tags_text, t);
            // Nested tags: `a/b/c` is findable by the filters `a`, `a/b` and `a/b/c`.
            let mut at = 0;
            while let Some(i) = t[at..].find('/') {
                doc.add_text(f.tag, &t[..at + i]);
                at += i + 1;
            }
            doc.add_text(f.tag, t);
        }
        doc.add_text(f.path_text, path_words(&d.rel_path));
        doc.add_text(f.path, &d.path);
        for k in d.kinds.iter() {
            doc.add_text(f.kind, k);
        }
        doc.add_i64(f.mtime, d.mtime_secs);
        for p in d.props.iter() {
            doc.add_text(f.prop, p);
        }
        writer.add_document(doc)?;
        Ok(())
    }

    pub fn delete_note(&self, writer: &IndexWriter, note_id: &str) {
        writer.delete_term(Term::from_field_text(self.fields.note_id, note_id));
    }

    pub fn commit(&self, writer: &mut IndexWriter, payload: &Payload) -> Result<(), IndexError> {
        let text = serde_json::to_string(payload).unwrap_or_default();
        let mut prepared = writer.prepare_commit()?;
        prepared.set_payload(&text);
        prepared.commit()?;
        self.reader.reload()?;
        Ok(())
    }

    pub fn num_docs(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The user's query over the text fields, with boosts. Never fails: what cannot be parsed
    /// is searched as plain words. Each `prefix*` stands for at most `max_expansions` index
    /// terms per field (the first ones in term order), so a one-letter prefix costs no more
    /// than a short list of words.
    pub fn text_query(&self, q: &str, boosts: &Boosts, max_expansions: u32) -> Box<dyn Query> {
        let f = &self.fields;
        let (rest, prefixes) = split_prefixes(q);
        let query = if has_operators(&rest) {
            let mut parser = QueryParser::for_index(
                &self.index,
                vec![f.title, f.heading, f.body, f.tags_text, f.path_text],
            );
            parser.set_field_boost(f.title, boosts.title);
            parser.set_field_boost(f.heading, boosts.heading);
            parser.set_field_boost(f.body, boosts.body);
            parser.set_field_boost(f.tags_text, boosts.tags);
            parser.set_field_boost(f.path_text, boosts.path);
            parser.parse_query_lenient(&rest).0
        } else {
            self.words_query(&rest, boosts)
        };
        if prefixes.is_empty() {
            return query;
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Should, query)];
        for (occur, word) in prefixes {
            let forms = prefix_forms(&word);
            let per_field: Vec<(Occur, Box<dyn Query>)> = [
                (f.title, boosts.title),
                (f.heading, boosts.heading),
                (f.body, boosts.body),
                (f.tags_text, boosts.tags),
                (f.path_text, boosts.path),
            ]
            .into_iter()
            .map(|(field, boost)| {
                // A one-term phrase prefix is a bounded walk of the term dictionary (no
                // automaton is built); a match scores `boost` whichever form matched.
                let mut ranges: Vec<(Occur, Box<dyn Query>)> = forms
                    .iter()
                    .map(|form| {
                        let mut q =
                            PhrasePrefixQuery::new(vec![Term::from_field_text(field, form)]);
                        q.set_max_expansions(max_expansions);
                        let q: Box<dyn Query> = Box::new(q);
                        (Occur::Should, q)
                    })
                    .collect();
                let q: Box<dyn Query> = if ranges.len() == 1 {
                    let (_, only) = ranges.remove(0);
                    Box::new(BoostQuery::new(only, boost))
                } else {
                    Box::new(ConstScoreQuery::new(
                        Box::new(BooleanQuery::new(ranges)),
                        boost,
                    ))
                };
                (Occur::Should, q)
            })
            .collect();
            clauses.push((occur, Box::new(BooleanQuery::new(per_field))));
        }
        Box::new(BooleanQuery::new(clauses))
    }

    /// Plain words, each searched in every text field with the field's boost, scored by BM25
    /// with the Robertson–Spärck Jones IDF, `ln((N - n + 0.5) / (n + 0.5))`, instead of
    /// tantivy's (Lucene's) `ln(1 + (N - n + 0.5) / (n + 0.5))`: a word in most chunks of a
    /// field says almost nothing about which one is meant, and the `1 +` keeps giving it
    /// weight (SciFact test nDCG@10 0.680 → 0.691; see the README). tantivy's IDF is fixed, so
    /// each term is boosted by the ratio of the two. A word in more than half the chunks of a
    /// field gets [`MIN_IDF`]: it still matches, it no longer ranks.
    fn words_query(&self, text: &str, boosts: &Boosts) -> Box<dyn Query> {
        let f = &self.fields;
        let searcher = self.reader.searcher();
        let n = searcher.num_docs() as f32;
        let mut analyzer = analyzer::english();
        let mut stream = analyzer.token_stream(text);
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        while let Some(token) = stream.next() {
            for (field, boost) in [
                (f.title, boosts.title),
                (f.heading, boosts.heading),
                (f.body, boosts.body),
                (f.tags_text, boosts.tags),
                (f.path_text, boosts.path),
            ] {
                let term = Term::from_field_text(field, &token.text);
                // A damaged segment answers no frequency: the term then keeps tantivy's IDF.
                let df = searcher.doc_freq(&term).unwrap_or(0) as f32;
                let ratio = if df > 0.0 && n > 0.0 {
                    let lucene = (1.0 + (n - df + 0.5) / (df + 0.5)).ln();
                    let rsj = ((n - df + 0.5) / (df + 0.5)).ln().max(MIN_IDF);
                    rsj / lucene
                } else {
                    1.0
                };
                let q: Box<dyn Query> =
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs));
                clauses.push((Occur::Should, Box::new(BoostQuery::new(q, boost * ratio))));
            }
        }
        Box::new(BooleanQuery::new(clauses))
    }

    /// The `prefix*` words of `q` that stand for more than `max_expansions` terms in some field
    /// of some segment, so that only the first of them were searched.
    pub fn cut_prefixes(&self, q: &str, max_expansions: u32) -> Result<Vec<String>, IndexError> {
        let f = &self.fields;
        let searcher = self.reader.searcher();
        let mut cut = Vec::new();
        for (_, word) in split_prefixes(q).1 {
            'word: for form in prefix_forms(&word) {
                let end = bytes_after_prefix(form.as_bytes());
                for seg in searcher.segment_readers() {
                    for field in [f.title, f.heading, f.body, f.tags_text, f.path_text] {
                        let inverted = seg.inverted_index(field)?;
                        let mut range = inverted.terms().range().ge(form.as_bytes());
                        if let Some(end) = &end {
                            range = range.lt(end);
                        }
                        let mut terms = range
                            .into_stream()
                            .map_err(|e| IndexError::Tantivy(e.into()))?;
                        let mut n = 0u32;
                        while terms.advance() {
                            n += 1;
                            if n > max_expansions {
                                cut.push(word.clone());
                                break 'word;
                            }
                        }
                    }
                }
            }
        }
        cut.dedup();
        Ok(cut)
    }

    /// The filters as one query, or `None` when there are none. A property filter is resolved
    /// to the notes that have the property before `deadline` ([`IndexError::OutOfTime`] after
    /// it).
    pub fn filter_query(
        &self,
        filters: &Filters,
        deadline: Instant,
    ) -> Result<Option<Box<dyn Query>>, IndexError> {
        let f = &self.fields;
        let mut must: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        let any_of = |field: Field, values: &[String], lower: bool| -> Box<dyn Query> {
            let clauses: Vec<(Occur, Box<dyn Query>)> = values
                .iter()
                .map(|v| {
                    let v = if lower { v.to_lowercase() } else { v.clone() };
                    let q: Box<dyn Query> = Box::new(TermQuery::new(
                        Term::from_field_text(field, &v),
                        IndexRecordOption::Basic,
                    ));
                    (Occur::Should, q)
                })
                .collect();
            Box::new(BooleanQuery::new(clauses))
        };
        if !filters.tags.is_empty() {
            let tags: Vec<String> = filters
                .tags
                .iter()
                .map(|t| t.trim_start_matches('#').trim_matches('/').to_owned())
                .collect();
            must.push((Occur::Must, any_of(f.tag, &tags, true)));
        }
        if !filters.kinds.is_empty() {
            must.push((Occur::Must, any_of(f.kind, &filters.kinds, true)));
        }
        if !filters.props.is_empty() {
            // Property terms are on each note's first document only (see `each_doc`): each
            // property is the notes that have it, and so every chunk of those notes.
            let searcher = self.reader.searcher();
            // Only the note ids are read.
            let note_columns = searcher
                .segment_readers()
                .iter()
                .map(|s| s.fast_fields().str("note_id"))
                .collect::<Result<Vec<_>, _>>()?;
            for (k, v) in &filters.props {
                let term = Term::from_field_text(f.prop, &prop_term(k, v));
                let docs = Deadline::new(DocSetCollector, deadline)
                    .search(&searcher, &TermQuery::new(term, IndexRecordOption::Basic))?;
                let mut notes = Vec::with_capacity(docs.len());
                for addr in docs {
                    if let Some(column) = note_columns.get(addr.segment_ord as usize) {
                        let note = first_str(column, addr.doc_id)?;
                        notes.push(Term::from_field_text(f.note_id, &note));
                    }
                }
                must.push((Occur::Must, Box::new(TermSetQuery::new(notes))));
            }
        }
        if let Some(prefix) = &filters.path_prefix {
            // Every path starting with the prefix: a range of the term dictionary.
            let lo = Bound::Included(Term::from_field_text(f.path, prefix));
            let hi = match bytes_after_prefix(prefix.as_bytes()) {
                Some(end) => {
                    let mut t = Term::from_field_text(f.path, "");
                    t.append_bytes(&end);
                    Bound::Excluded(t)
                }
                None => Bound::Unbounded,
            };
            must.push((Occur::Must, Box::new(InvertedIndexRangeQuery::new(lo, hi))));
        }
        if filters.since.is_some() || filters.until.is_some() {
            let lo = filters.since.map_or(Bound::Unbounded, |s| {
                Bound::Included(Term::from_field_i64(f.mtime, s))
            });
            let hi = filters.until.map_or(Bound::Unbounded, |s| {
                Bound::Included(Term::from_field_i64(f.mtime, s))
            });
            must.push((Occur::Must, Box::new(RangeQuery::new(lo, hi))));
        }
        if must.is_empty() {
            return Ok(None);
        }
        must.push((Occur::Must, Box::new(AllQuery)));
        Ok(Some(Box::new(BooleanQuery::new(must))))
    }

    /// BM25 top `n` for `text` restricted by `filter`: (chunk id, note id, score), best first.
    /// Stops with [`IndexError::OutOfTime`] before the first segment searched after `deadline`.
    pub fn search(
        &self,
        text: Box<dyn Query>,
        filter: Option<Box<dyn Query>>,
        n: usize,
        deadline: Instant,
    ) -> Result<Vec<(String, String, f32)>, IndexError> {
        let searcher = self.reader.searcher();
        let query: Box<dyn Query> = match filter {
            Some(f) => Box::new(BooleanQuery::new(vec![
                (Occur::Must, text),
                // Scores come from the text alone: the filter only restricts.
                (Occur::Must, Box::new(ConstScoreQuery::new(f, 0.0))),
            ])),
            None => text,
        };
        let top = Deadline::new(TopDocs::with_limit(n.max(1)).order_by_score(), deadline)
            .search(&searcher, &query)?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let (chunk, note) = self.ids(&searcher, addr)?;
            out.push((chunk, note, score));
        }
        Ok(out)
    }

    /// The chunk ids every document matching `filter` has.
    pub fn matching_chunks(
        &self,
        filter: &dyn Query,
        deadline: Instant,
    ) -> Result<HashSet<String>, IndexError> {
        let searcher = self.reader.searcher();
        let docs = Deadline::new(DocSetCollector, deadline).search(&searcher, filter)?;
        let mut out = HashSet::with_capacity(docs.len());
        let columns = searcher
            .segment_readers()
            .iter()
            .map(IdColumns::of)
            .collect::<Result<Vec<_>, _>>()?;
        for addr in docs {
            if let Some(ids) = columns.get(addr.segment_ord as usize) {
                out.insert(ids.chunk_id(addr.doc_id)?);
            }
        }
        Ok(out)
    }

    fn ids(
        &self,
        searcher: &tantivy::Searcher,
        addr: DocAddress,
    ) -> Result<(String, String), IndexError> {
        let ids = IdColumns::of(searcher.segment_reader(addr.segment_ord))?;
        Ok((
            ids.chunk_id(addr.doc_id)?,
            first_str(&ids.note, addr.doc_id)?,
        ))
    }
}

/// A segment's id columns.
struct IdColumns {
    chunk_rid: Option<tantivy::columnar::Column<u64>>,
    chunk_id: Option<tantivy::columnar::StrColumn>,
    note: Option<tantivy::columnar::StrColumn>,
}

impl IdColumns {
    fn of(segment: &tantivy::SegmentReader) -> Result<IdColumns, IndexError> {
        let fast = segment.fast_fields();
        Ok(IdColumns {
            chunk_rid: fast.column_opt("chunk_rid")?,
            chunk_id: fast.str("chunk_id")?,
            note: fast.str("note_id")?,
        })
    }

    /// The id of document `doc`: from its chunk's row, else as written out.
    fn chunk_id(&self, doc: tantivy::DocId) -> Result<String, IndexError> {
        match self.chunk_rid.as_ref().and_then(|c| c.first(doc)) {
            Some(rid) => Ok(part_id::format(
                PartKind::Chunk,
                i64::try_from(rid).unwrap_or(0),
            )),
            None => first_str(&self.chunk_id, doc),
        }
    }
}

/// The first value of `doc` in a text column, or empty.
fn first_str(
    column: &Option<tantivy::columnar::StrColumn>,
    doc: tantivy::DocId,
) -> Result<String, IndexError> {
    let mut s = String::new();
    if let Some(col) = column
        && let Some(ord) = col.term_ords(doc).next()
    {
        col.ord_to_str(ord, &mut s)
            .map_err(tantivy::TantivyError::from)?;
    }
    Ok(s)
}

/// A collector that refuses to start on another segment once its deadline has passed: the
/// time budget of a query reaches into the search itself.
struct Deadline<C> {
    inner: C,
    deadline: Instant,
    expired: AtomicBool,
}

impl<C: Collector> Deadline<C> {
    fn new(inner: C, deadline: Instant) -> Deadline<C> {
        Deadline {
            inner,
            deadline,
            expired: AtomicBool::new(false),
        }
    }

    fn search(
        &self,
        searcher: &tantivy::Searcher,
        query: &dyn Query,
    ) -> Result<C::Fruit, IndexError> {
        match searcher.search(query, self) {
            Ok(f) => Ok(f),
            Err(_) if self.expired.load(Ordering::SeqCst) => Err(IndexError::OutOfTime),
            Err(e) => Err(e.into()),
        }
    }
}

impl<C: Collector> Collector for Deadline<C> {
    type Fruit = C::Fruit;
    type Child = C::Child;

    fn for_segment(
        &self,
        segment_local_id: tantivy::SegmentOrdinal,
        segment: &tantivy::SegmentReader,
    ) -> tantivy::Result<C::Child> {
        self.inner.for_segment(segment_local_id, segment)
    }

    fn requires_scoring(&self) -> bool {
        self.inner.requires_scoring()
    }

    fn merge_fruits(
        &self,
        segment_fruits: Vec<<C::Child as SegmentCollector>::Fruit>,
    ) -> tantivy::Result<C::Fruit> {
        self.inner.merge_fruits(segment_fruits)
    }

    fn collect_segment(
        &self,
        weight: &dyn tantivy::query::Weight,
        segment_ord: u32,
        reader: &tantivy::SegmentReader,
    ) -> tantivy::Result<<C::Child as SegmentCollector>::Fruit> {
        if Instant::now() >= self.deadline {
            self.expired.store(true, Ordering::SeqCst);
            return Err(tantivy::TantivyError::InvalidArgument(
                "the query ran out of time".into(),
            ));
        }
        self.inner.collect_segment(weight, segment_ord, reader)
    }
}

/// Whether `q` uses query syntax (quotes, `+`/`-` before a word, `AND`/`OR`/`NOT`, `field:`,
/// `^` boosts, `~` slop, ranges): then tantivy's parser reads it (scored with tantivy's own
/// IDF); plain words are scored by [`TextIndex::words_query`]. Parentheses alone group words
/// that are ORed anyway, so they do not count.
fn has_operators(q: &str) -> bool {
    q.contains(['"', '^', '~', '[', ']', '{', '}'])
        || q.split_whitespace().any(|w| {
            let operand = |rest: &str| rest.starts_with(|c: char| c.is_alphanumeric() || c == '(');
            w.strip_prefix(['+', '-']).is_some_and(operand)
                || w.split_once(':').is_some_and(|(field, rest)| {
                    !field.is_empty() && (operand(rest) || rest.is_empty())
                })
                || matches!(w.trim_start_matches('('), "AND" | "OR" | "NOT")
        })
}

/// tantivy's grammar knows prefixes only on phrases of two words or more; people write
/// `foo*`. Bare words ending in `*` outside quotes are taken out of the query text and returned
/// with their occurrence (`+foo*` must, `-foo*` must not, else should).
fn split_prefixes(q: &str) -> (String, Vec<(Occur, String)>) {
    let mut rest = String::with_capacity(q.len());
    let mut prefixes = Vec::new();
    let mut in_quotes = false;
    for piece in q.split(' ') {
        let quotes = piece.matches('"').count();
        let (occur, word) = match piece.as_bytes().first() {
            Some(b'+') => (Occur::Must, &piece[1..]),
            Some(b'-') => (Occur::MustNot, &piece[1..]),
            _ => (Occur::Should, piece),
        };
        let bare = word.strip_suffix('*').filter(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '-')
        });
        match bare {
            Some(w) if !in_quotes && quotes == 0 => prefixes.push((occur, w.to_owned())),
            _ => {
                if !rest.is_empty() {
                    rest.push(' ');
                }
                rest.push_str(piece);
            }
        }
        if quotes % 2 == 1 {
            in_quotes = !in_quotes;
        }
    }
    (rest, prefixes)
}

/// Opens the index in `dir` as it is. `Ok(Err(reason))` when it is readable but built for
/// another store or format, or without a usable commit.
fn open_existing(
    dir: &Path,
    store_id: &str,
    schema: &Schema,
    fields: Fields,
) -> Result<Result<(TextIndex, Opened), String>, IndexError> {
    let idx = Index::open_in_dir(dir)?;
    let metas = idx.load_metas()?;
    let payload: Option<Payload> = metas.payload.and_then(|p| serde_json::from_str(&p).ok());
    let payload = match payload {
        Some(p) if p.format == INDEX_FORMAT && p.store_id == store_id => {
            if idx.schema() != *schema {
                return Ok(Err("schema changed".into()));
            }
            p
        }
        Some(p) if p.store_id != store_id => {
            return Ok(Err("index belongs to another store".into()));
        }
        Some(_) => return Ok(Err("index format changed".into())),
        None => return Ok(Err("index has no usable commit".into())),
    };
    let text = TextIndex::ready(dir, idx, fields)?;
    // Opening a searcher opens every segment's files: a truncated one fails here, not later.
    let searcher = text.reader.searcher();
    for seg in searcher.segment_readers() {
        for field in [fields.title, fields.heading, fields.body, fields.tags_text] {
            seg.inverted_index(field)?;
        }
        seg.get_store_reader(0)
            .map_err(|e| IndexError::Tantivy(e.into()))?;
    }
    Ok(Ok((text, Opened::Existing(payload))))
}

fn remove_dir(dir: &Path) -> Result<(), IndexError> {
    std::fs::remove_dir_all(dir).map_err(|source| IndexError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Renames a damaged index `dir` to `<dir>.broken-<time>` beside it, for a look later, after
/// removing any older one: at most one damaged copy is kept. Returns where it went, or `None`
/// when it could only be removed.
pub fn move_aside(dir: &Path) -> Result<Option<PathBuf>, IndexError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "index".into());
    let parent = dir.parent().unwrap_or(Path::new("."));
    let prefix = format!("{name}.broken-");
    if let Ok(entries) = std::fs::read_dir(parent) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = remove_any(&e.path());
            }
        }
    }
    // Removed from under the daemon: there is nothing to keep.
    if dir.symlink_metadata().is_err() {
        return Ok(None);
    }
    let aside = parent.join(format!("{prefix}{}", crate::clock::file_stamp()));
    match std::fs::rename(dir, &aside) {
        Ok(()) => Ok(Some(aside)),
        Err(_) => {
            // Cannot keep it (another file system, say): it must go either way.
            remove_any(dir).map_err(|source| IndexError::Io {
                path: dir.to_owned(),
                source,
            })?;
            Ok(None)
        }
    }
}

/// Removes a folder with its contents, or a file or link standing where a folder should be.
fn remove_any(p: &Path) -> std::io::Result<()> {
    match p.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p),
        Ok(_) => std::fs::remove_file(p),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Field boosts of the text query.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Boosts {
    pub title: f32,
    pub heading: f32,
    pub body: f32,
    pub tags: f32,
    pub path: f32,
}

impl Default for Boosts {
    fn default() -> Self {
        // Chosen on BEIR SciFact (`brain eval beir --mode bm25`): the short title field scores
        // high on its own, so a title boost above 1 pushes title-only matches over passages
        // that answer the query (title 1.5: nDCG@10 0.631, 1.0: 0.655, 0.5: 0.680, 0.3: 0.682).
        Boosts {
            title: 0.5,
            heading: 0.5,
            body: 1.0,
            tags: 0.5,
            path: 0.5,
        }
    }
}

/// The words of a path inside its root that say something: without the file's extension,
/// which most notes share (`md`).
fn path_words(rel: &str) -> &str {
    match rel.rfind('.') {
        Some(dot) if !rel[dot..].contains('/') => &rel[..dot],
        _ => rel,
    }
}

/// Restrictions on which chunks may be hits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filters {
    pub tags: Vec<String>,
    pub path_prefix: Option<String>,
    pub kinds: Vec<String>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    pub until: Option<i64>,
    /// Front-matter property equals value (case-insensitive).
    pub props: Vec<(String, String)>,
}

impl Filters {
    pub fn is_empty(&self) -> bool {
        *self == Filters::default()
    }
}

fn prop_term(key: &str, value: &str) -> String {
    format!("{}={}", key.to_lowercase(), value.to_lowercase())
}

/// The index holds analyzed terms: a prefix matches as the folded word and as its stem. A form
/// that another form is a prefix of adds nothing and is dropped.
fn prefix_forms(word: &str) -> Vec<String> {
    let mut forms = vec![word.to_lowercase()];
    let mut analyzer = analyzer::english();
    let mut stream = analyzer.token_stream(word);
    while let Some(t) = stream.next() {
        forms.push(t.text.clone());
    }
    forms.sort();
    forms.dedup();
    let all = forms.clone();
    forms.retain(|f| !all.iter().any(|g| g != f && f.starts_with(g.as_str())));
    forms
}

/// How deep `q` nests parentheses (an unclosed one counts as open to the end).
pub fn nesting_depth(q: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for c in q.chars() {
        match c {
            '(' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// How many `prefix*` words [`TextIndex::text_query`] would take out of `q`.
pub fn prefix_count(q: &str) -> usize {
    split_prefixes(q).1.len()
}

/// How many words `q` holds, as the tokenizer splits them (runs of letters and digits): what a
/// query costs grows with this, whatever the operators around the words.
pub fn term_count(q: &str) -> usize {
    let mut n = 0;
    let mut in_word = false;
    for c in q.chars() {
        let w = c.is_alphanumeric();
        if w && !in_word {
            n += 1;
        }
        in_word = w;
    }
    n
}

/// The smallest byte string greater than every string starting with `prefix`, or `None` when
/// there is none (the prefix is all `0xff`).
fn bytes_after_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Reads the index documents of the given notes (all current notes when `None`) from the store.
pub fn load_docs(conn: &Connection, notes: Option<&[String]>) -> Result<Vec<ChunkDoc>, IndexError> {
    let mut out = Vec::new();
    each_doc(conn, notes, &mut |d| {
        out.push(d);
        Ok(())
    })?;
    Ok(out)
}

/// [`load_docs`], handing each document to `f` as it is read: a rebuild holds one note's
/// documents at a time, not the whole store's.
pub fn each_doc(
    conn: &Connection,
    notes: Option<&[String]>,
    f: &mut dyn FnMut(ChunkDoc) -> Result<(), IndexError>,
) -> Result<(), IndexError> {
    // A chunk's note is the current note or file node of its source (schema 0010). What
    // belongs to the note is read once per note, and its chunks by their own index after it:
    // joining each chunk to its note and section cost the indexing worker more than the rest
    // of its work on a cold ingest.
    const NOTES: &str = "SELECT s.id, n.id, n.title, n.aliases, n.props, n.kind, s.file_type,
                                s.mtime_ns, r.path, s.rel_path
                         FROM sources s
                         JOIN roots r ON r.id = s.root_id
                         JOIN nodes n ON n.kind IN ('note', 'file')
                                     AND n.key = 'source:' || s.id AND n.valid_to IS NULL";
    let mut tags_stmt = conn.prepare_cached(
        "SELECT t.key FROM edges e JOIN nodes t ON t.id = e.dst_id
         WHERE e.src_id = ?1 AND e.type = 'tagged' AND e.valid_to IS NULL",
    )?;
    let mut tags_of = |note: &str| -> Result<Vec<String>, rusqlite::Error> {
        tags_stmt
            .query_map([note], |r| r.get::<_, String>(0))?
            .map(|k| k.map(|k| k.strip_prefix("tag:").unwrap_or(&k).to_owned()))
            .collect()
    };
    let mut chunks_stmt = conn.prepare_cached(
        "SELECT rid, content, heading_path, section, legacy_id FROM chunks
         WHERE source_id = ?1 AND valid_to IS NULL ORDER BY ordinal",
    )?;
    // A chunk's heading path is its section's unless written out (schema 0011).
    let mut sections_stmt = conn.prepare_cached(
        "SELECT ordinal, path FROM sections WHERE source_id = ?1 AND valid_to IS NULL",
    )?;
    let mut push_note = |r: &rusqlite::Row<'_>| -> Result<(), IndexError> {
        let source_id: i64 = r.get(0)?;
        let note_id: Arc<str> = r.get::<_, String>(1)?.into();
        let mut chunks = chunks_stmt.query([source_id])?;
        let Some(mut chunk) = chunks.next()? else {
            return Ok(());
        };
        let tags: Arc<[String]> = tags_of(&note_id)?.into();
        let aliases: String = r.get::<_, Option<String>>(3)?.unwrap_or_default();
        let mut title: String = r.get::<_, Option<String>>(2)?.unwrap_or_default();
        if let Ok(serde_json::Value::Array(a)) = serde_json::from_str(&aliases) {
            for alias in a.iter().filter_map(|v| v.as_str()) {
                title.push('\n');
                title.push_str(alias);
            }
        }
        let title: Arc<str> = title.into();
        let mut props = scalar_props(&r.get::<_, Option<String>>(4)?.unwrap_or_default());
        props.truncate(MAX_INDEXED_PROPS);
        // The note's property terms go on its first chunk's document only: a filter finds the
        // notes that have them, then takes all their chunks ([`TextIndex::filter_query`]).
        // On every chunk's (a docs folder's notes have 7 each, on 25 chunks a note) they
        // were 4 % of its index, 33.7 MB against 32.3 MB, and lower peak memory while indexing.
        let mut props: Arc<[String]> = props.into();
        let kinds: Arc<[String]> = Arc::new([r.get(5)?, r.get(6)?]);
        let mtime_ns: Option<i64> = r.get(7)?;
        let root: String = r.get(8)?;
        let rel: String = r.get(9)?;
        let path: Arc<str> = join_path(&root, &rel).into();
        let rel: Arc<str> = rel.into();
        // Section ordinal → heading, read when the first chunk needs it.
        let mut headings: Option<std::collections::HashMap<i64, String>> = None;
        loop {
            let heading = match chunk
                .get_ref(2)?
                .as_str_or_null()
                .map_err(rusqlite::Error::from)?
            {
                Some(json) => heading_path(Some(json)).join(" / "),
                None => {
                    let section: Option<i64> = chunk.get(3)?;
                    if section.is_some() && headings.is_none() {
                        let mut m = std::collections::HashMap::new();
                        let mut rows = sections_stmt.query([source_id])?;
                        while let Some(s) = rows.next()? {
                            let json: Option<String> = s.get(1)?;
                            m.insert(s.get(0)?, heading_path(json.as_deref()).join(" / "));
                        }
                        headings = Some(m);
                    }
                    section
                        .and_then(|o| headings.as_ref().and_then(|h| h.get(&o)))
                        .cloned()
                        .unwrap_or_default()
                }
            };
            f(ChunkDoc {
                chunk_id: part_id::of_row(PartKind::Chunk, chunk.get(0)?, chunk.get(4)?),
                note_id: note_id.clone(),
                heading,
                body: chunk.get::<_, Option<String>>(1)?.unwrap_or_default(),
                title: title.clone(),
                tags: tags.clone(),
                path: path.clone(),
                rel_path: rel.clone(),
                kinds: kinds.clone(),
                mtime_secs: mtime_ns.unwrap_or(0).div_euclid(1_000_000_000),
                props: std::mem::replace(&mut props, Arc::new([])),
            })?;
            match chunks.next()? {
                Some(next) => chunk = next,
                None => break,
            }
        }
        Ok(())
    };
    match notes {
        None => {
            let mut stmt = conn.prepare(&format!("{NOTES} ORDER BY s.id"))?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                push_note(r)?;
            }
        }
        Some(ids) => {
            let mut stmt = conn.prepare_cached(&format!(
                "{NOTES} WHERE s.id = (SELECT source_id FROM nodes WHERE id = ?1)"
            ))?;
            // An id that is a note's is not a written node's (those have no source): only the
            // rest are looked up again, which on an ingest's queue is none of them.
            let mut rest = Vec::new();
            for id in ids {
                let mut rows = stmt.query(params![id])?;
                let mut found = false;
                while let Some(r) = rows.next()? {
                    found = true;
                    push_note(r)?;
                }
                if !found {
                    rest.push(id.clone());
                }
            }
            if !rest.is_empty() {
                super::written::each_doc(conn, Some(&rest), f)?;
            }
            return Ok(());
        }
    }
    // Written nodes' text goes through the same outbox and rebuilds as notes' chunks.
    super::written::each_doc(conn, notes, f)
}

/// A chunk's heading path, from its `heading_path` column (a JSON array; empty when absent or
/// unreadable).
pub fn heading_path(column: Option<&str>) -> Vec<String> {
    column
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

pub fn join_path(root: &str, rel: &str) -> String {
    if root.ends_with('/') {
        format!("{root}{rel}")
    } else {
        format!("{root}/{rel}")
    }
}

/// `key=value` terms for a note's scalar front-matter properties (and each element of a list
/// of scalars), lower-cased.
pub(super) fn scalar_props(json: &str) -> Vec<String> {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(json) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let scalar = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    };
    for (k, v) in &map {
        if k.starts_with('_') {
            continue;
        }
        match v {
            serde_json::Value::Array(a) => {
                out.extend(a.iter().filter_map(scalar).map(|s| prop_term(k, &s)))
            }
            v => out.extend(scalar(v).map(|s| prop_term(k, &s))),
        }
    }
    out
}

/// The highest outbox sequence number, or 0.
pub fn outbox_head(conn: &Connection) -> Result<i64, rusqlite::Error> {
    conn.query_row("SELECT COALESCE(MAX(seq), 0) FROM search_outbox", [], |r| {
        r.get(0)
    })
}

/// One index commit's worth of queued work: the distinct notes queued after `after`, their
/// current documents, and the sequence number the page ends at.
pub struct OutboxPage {
    pub notes: Vec<String>,
    pub docs: Vec<ChunkDoc>,
    pub head: i64,
}

/// The outbox rows after `after`, in order, up to `max_rows` rows or until the documents read
/// pass `max_bytes` of text: what a page holds in memory is bounded by its text, not by how
/// far the index has fallen behind (a cold ingest can queue every note of a large folder
/// before the indexer gets to them). A note queued again after the page's end is applied again
/// by the next page.
pub fn outbox_page(
    conn: &Connection,
    after: i64,
    max_rows: usize,
    max_bytes: usize,
) -> Result<OutboxPage, IndexError> {
    // The limit is written into the statement, not bound: SQLite plans a bound `LIMIT` by its
    // value, so binding one expires the statement and every page re-prepared it.
    let queued: Vec<(i64, String)> = conn
        .prepare_cached(&format!(
            "SELECT seq, note_id FROM search_outbox WHERE seq > ?1 ORDER BY seq LIMIT {max_rows}"
        ))?
        .query_map(params![after], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut page = OutboxPage {
        notes: Vec::new(),
        docs: Vec::new(),
        head: after,
    };
    let mut seen = HashSet::new();
    let mut bytes = 0;
    for (seq, note) in queued {
        if bytes >= max_bytes {
            break;
        }
        page.head = seq;
        if seen.insert(note.clone()) {
            each_doc(conn, Some(std::slice::from_ref(&note)), &mut |d| {
                bytes += d.body.len();
                page.docs.push(d);
                Ok(())
            })?;
            page.notes.push(note);
        }
    }
    Ok(page)
}

/// The store's identity, created on first use, so an index can tell which store it mirrors.
pub fn store_id(conn: &Connection) -> Result<Option<String>, rusqlite::Error> {
    conn.query_row("SELECT value FROM meta WHERE key = 'store_id'", [], |r| {
        r.get(0)
    })
    .optional()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_words_are_told_from_query_syntax() {
        for (q, syntax) in [
            ("how do I water tomatoes", false),
            ("G - quadruplex (telomeres)", false),
            ("proteins : UreD/UreH, IL-6", false),
            ("\"exact phrase\"", true),
            ("+must -not", true),
            ("title:tomato", true),
            ("a AND b", true),
            ("(a OR b)", true),
            ("word^2", true),
        ] {
            assert_eq!(has_operators(q), syntax, "{q:?}");
        }
    }

    fn doc(id: &str, body: &str) -> ChunkDoc {
        ChunkDoc {
            chunk_id: id.into(),
            note_id: format!("n-{id}").into(),
            title: Arc::from(""),
            heading: String::new(),
            body: body.into(),
            tags: Arc::new(["plants/vegetable".to_owned()]),
            path: format!("/v/{id}.md").into(),
            rel_path: format!("{id}.md").into(),
            kinds: Arc::new(["note".into()]),
            mtime_secs: 100,
            props: Arc::new([]),
        }
    }

    #[test]
    fn a_notes_own_fields_are_read_once_and_shared_by_its_chunks_with_props_capped() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(&dir.path().join("brain.db")).unwrap();
        let props: serde_json::Map<String, serde_json::Value> = (0..MAX_INDEXED_PROPS + 50)
            .map(|i| (format!("k{i:04}"), serde_json::json!(format!("v{i}"))))
            .collect();
        store
            .write(|tx| {
                tx.execute_batch(
                    "INSERT INTO roots(id, path, added_by, added_at) VALUES (1, '/v', 'user:u', 't');
                     INSERT INTO sources(id, root_id, rel_path, file_type, status, first_seen_at, last_seen_at)
                         VALUES (1, 1, 'a.md', 'markdown', 'indexed', 't', 't');",
                )?;
                tx.execute(
                    "INSERT INTO nodes(id, kind, key, title, aliases, props, source_id, owner_id, valid_from, created_at, updated_at)
                     VALUES ('n', 'note', 'source:1', 'A', '[\"Alias\"]', ?1, 1, 'user:u', 't', 't', 't')",
                    [serde_json::Value::Object(props).to_string()],
                )?;
                for i in 0..3 {
                    tx.execute(
                        "INSERT INTO chunks(legacy_id, source_id, ordinal, key, content, valid_from)
                         VALUES (?1, 1, ?2, ?1, 'text', 0)",
                        params![format!("c{i}"), i],
                    )?;
                }
                Ok::<_, rusqlite::Error>(())
            })
            .unwrap();
        let docs = store.read(|c| load_docs(c, None)).unwrap();
        assert_eq!(docs.len(), 3);
        assert_eq!(&*docs[0].title, "A\nAlias");
        assert_eq!(docs[0].props.len(), MAX_INDEXED_PROPS);
        assert_eq!(docs[0].props[0], prop_term("k0000", "v0"));
        for d in &docs[1..] {
            // Property terms are the first document's only.
            assert!(d.props.is_empty());
            assert!(Arc::ptr_eq(&d.tags, &docs[0].tags));
            assert!(Arc::ptr_eq(&d.title, &docs[0].title));
        }
    }

    /// Adds `docs` to `idx` and commits them as outbox position `seq`.
    fn commit_docs(idx: &TextIndex, docs: &[ChunkDoc], seq: i64) {
        idx.with_writer(|w| {
            for d in docs {
                idx.add(w, d)?;
            }
            idx.commit(w, &payload(seq))
        })
        .unwrap();
    }

    /// A property filter takes every chunk of the notes that have the property, though only
    /// a note's first document holds its property terms.
    #[test]
    fn a_property_filter_takes_every_chunk_of_the_notes_that_have_it() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = TextIndex::open(dir.path(), "store-1").unwrap();
        let chunk = |id: &str, note: &str, body: &str, props: &[&str]| ChunkDoc {
            note_id: note.into(),
            props: props
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .into(),
            ..doc(id, body)
        };
        commit_docs(
            &idx,
            &[
                chunk("a1", "a", "intro", &["status=growing"]),
                chunk("a2", "a", "zeppelin tomatoes", &[]),
                chunk("b1", "b", "zeppelin", &["status=done"]),
                chunk("c1", "c", "zeppelin", &[]),
            ],
            1,
        );
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let found = |value: &str| -> Vec<String> {
            let filter = idx
                .filter_query(
                    &Filters {
                        props: vec![("status".into(), value.into())],
                        ..Filters::default()
                    },
                    far,
                )
                .unwrap();
            hits_where(&idx, "zeppelin", 64, filter)
        };
        assert_eq!(found("growing"), ["a2"]);
        assert_eq!(found("done"), ["b1"]);
        assert!(found("wilting").is_empty());
        // Finding the notes reads the index, within the query's time.
        let spent = idx.filter_query(
            &Filters {
                props: vec![("status".into(), "growing".into())],
                ..Filters::default()
            },
            Instant::now(),
        );
        assert!(matches!(spent, Err(IndexError::OutOfTime)), "{spent:?}");
    }

    /// A chunk whose id is its row's is kept as that number, any other id as written; both
    /// come back as they went in, from a search and from a filter.
    #[test]
    fn chunk_ids_come_back_whether_kept_as_rows_or_as_text() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = TextIndex::open(dir.path(), "store-1").unwrap();
        let row = part_id::format(PartKind::Chunk, 4_000_000_007);
        let section = part_id::format(PartKind::Section, 9);
        let ids = [
            row.as_str(),
            "0190c3a4-6e5f-7b2a-9c1d-1234567890ab",
            section.as_str(),
        ];
        let docs: Vec<ChunkDoc> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| doc(id, &format!("common word{i}")))
            .collect();
        commit_docs(&idx, &docs, 1);
        let far = Instant::now() + std::time::Duration::from_secs(60);
        for (i, id) in ids.iter().enumerate() {
            let q = idx.text_query(&format!("word{i}"), &Boosts::default(), 64);
            let hits = idx.search(q, None, 10, far).unwrap();
            assert_eq!(hits.len(), 1);
            assert_eq!(
                (hits[0].0.as_str(), hits[0].1.as_str()),
                (*id, &*format!("n-{id}"))
            );
        }
        let all = idx.filter_query(
            &Filters {
                kinds: vec!["note".into()],
                ..Filters::default()
            },
            far,
        );
        let found = idx.matching_chunks(&*all.unwrap().unwrap(), far).unwrap();
        assert_eq!(found, ids.iter().map(|s| s.to_string()).collect());
    }

    #[test]
    fn queries_prefixes_and_filters_over_a_real_index() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, opened) = TextIndex::open(dir.path(), "store-1").unwrap();
        assert!(matches!(opened, Opened::Fresh(_)));
        commit_docs(
            &idx,
            &[
                doc("a", "a zeppelin hangar"),
                doc("b", "deep watering of tomatoes"),
            ],
            7,
        );
        let ids = |q: &str, f: &Filters| -> Vec<String> {
            let far = Instant::now() + std::time::Duration::from_secs(60);
            let filter = idx.filter_query(f, far).unwrap();
            idx.search(idx.text_query(q, &Boosts::default(), 64), filter, 10, far)
                .unwrap()
                .into_iter()
                .map(|h| h.0)
                .collect()
        };
        let none = Filters::default();
        assert_eq!(ids("zeppel*", &none), ["a"]);
        assert_eq!(ids("watered", &none), ["b"]);
        assert_eq!(ids("\"deep watering\"", &none), ["b"]);
        let tag = |t: &str| Filters {
            tags: vec![t.into()],
            ..Filters::default()
        };
        assert_eq!(ids("tomatoes", &tag("plants")), ["b"]);
        assert_eq!(ids("tomatoes", &tag("plants/vegetable")), ["b"]);
        assert!(ids("tomatoes", &tag("plant")).is_empty());
        let path = Filters {
            path_prefix: Some("/v/a".into()),
            ..Filters::default()
        };
        assert_eq!(ids("zeppelin tomatoes", &path), ["a"]);
        let time = Filters {
            since: Some(101),
            ..Filters::default()
        };
        assert!(ids("tomatoes", &time).is_empty());
        drop(idx);
        // Reopened: the payload says what it reflects; another store's id forces a rebuild.
        let (_, opened) = TextIndex::open(dir.path(), "store-1").unwrap();
        assert!(
            matches!(opened, Opened::Existing(Payload { seq: 7, .. })),
            "{opened:?}"
        );
        let (_, opened) = TextIndex::open(dir.path(), "store-2").unwrap();
        assert!(matches!(opened, Opened::Fresh(_)), "{opened:?}");
    }

    fn payload(seq: i64) -> Payload {
        Payload {
            format: INDEX_FORMAT,
            store_id: "store-1".into(),
            seq,
        }
    }

    fn hits(idx: &TextIndex, q: &str, max_expansions: u32) -> Vec<String> {
        hits_where(idx, q, max_expansions, None)
    }

    /// The chunk ids `q` finds among those `filter` allows, sorted.
    fn hits_where(
        idx: &TextIndex,
        q: &str,
        max_expansions: u32,
        filter: Option<Box<dyn Query>>,
    ) -> Vec<String> {
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let mut ids: Vec<String> = idx
            .search(
                idx.text_query(q, &Boosts::default(), max_expansions),
                filter,
                10,
                far,
            )
            .unwrap()
            .into_iter()
            .map(|h| h.0)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn a_prefix_stands_for_at_most_the_expansion_limit_of_terms() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = TextIndex::open(dir.path(), "store-1").unwrap();
        idx.with_writer(|w| {
            idx.add(w, &doc("a", "tomato"))?;
            idx.add(w, &doc("b", "tombola"))?;
            idx.add(w, &doc("c", "tomes"))?;
            idx.commit(w, &payload(1))
        })
        .unwrap();
        assert_eq!(hits(&idx, "tom*", 64), ["a", "b", "c"]);
        // Term order: tomato, tombola, tome (the stem of tomes).
        assert_eq!(hits(&idx, "tom*", 2), ["a", "b"]);
        assert_eq!(hits(&idx, "tom*", 1), ["a"]);
        assert_eq!(idx.cut_prefixes("tom* zzz* tomb*", 2).unwrap(), ["tom"]);
        assert!(idx.cut_prefixes("tom*", 3).unwrap().is_empty());
        // A word whose stem is not a prefix of it matches as either form, scored once.
        assert_eq!(prefix_forms("happily"), ["happili", "happily"]);
        assert_eq!(prefix_forms("Watering"), ["water"]);
    }

    #[test]
    fn a_search_past_its_deadline_stops_before_the_next_segment() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, _) = TextIndex::open(dir.path(), "store-1").unwrap();
        idx.with_writer(|w| {
            idx.add(w, &doc("a", "alpha"))?;
            idx.commit(w, &payload(1))
        })
        .unwrap();
        let q = || idx.text_query("alpha", &Boosts::default(), 64);
        let spent = Instant::now();
        let e = idx.search(q(), None, 10, spent).unwrap_err();
        assert!(matches!(e, IndexError::OutOfTime), "{e:?}");
        let filter = idx
            .filter_query(
                &Filters {
                    kinds: vec!["note".into()],
                    ..Filters::default()
                },
                Instant::now() + std::time::Duration::from_secs(60),
            )
            .unwrap()
            .unwrap();
        let e = idx.matching_chunks(filter.as_ref(), spent).unwrap_err();
        assert!(matches!(e, IndexError::OutOfTime), "{e:?}");
        let later = Instant::now() + std::time::Duration::from_secs(60);
        assert_eq!(idx.search(q(), None, 10, later).unwrap().len(), 1);
    }

    #[test]
    fn terms_and_prefixes_are_counted_as_the_limits_see_them() {
        assert_eq!(term_count("a* a* a*"), 3);
        assert_eq!(term_count("\"deep watering\" -pruning tomat*"), 4);
        assert_eq!(term_count("a-b-c.d"), 4);
        assert_eq!(term_count("  "), 0);
        assert_eq!(prefix_count("a* +b* \"c d*\" e"), 2);
        assert_eq!(nesting_depth("(a OR (b AND c)) (d)"), 2);
        assert_eq!(nesting_depth("((("), 3);
        assert_eq!(nesting_depth(")))a"), 0);
    }

    /// A directory whose writes fail while `fail` is set, as a full disk's would.
    #[derive(Clone, Debug)]
    struct FullDisk {
        inner: tantivy::directory::RamDirectory,
        fail: std::sync::Arc<AtomicBool>,
    }

    impl FullDisk {
        fn check(&self) -> std::io::Result<()> {
            if self.fail.load(Ordering::SeqCst) {
                return Err(std::io::Error::other("no space left on device"));
            }
            Ok(())
        }
    }

    impl tantivy::Directory for FullDisk {
        fn get_file_handle(
            &self,
            path: &Path,
        ) -> Result<
            std::sync::Arc<dyn tantivy::directory::FileHandle>,
            tantivy::directory::error::OpenReadError,
        > {
            self.inner.get_file_handle(path)
        }
        fn delete(&self, path: &Path) -> Result<(), tantivy::directory::error::DeleteError> {
            self.inner.delete(path)
        }
        fn exists(&self, path: &Path) -> Result<bool, tantivy::directory::error::OpenReadError> {
            self.inner.exists(path)
        }
        fn open_write(
            &self,
            path: &Path,
        ) -> Result<tantivy::directory::WritePtr, tantivy::directory::error::OpenWriteError>
        {
            self.check().map_err(|e| {
                tantivy::directory::error::OpenWriteError::wrap_io_error(e, path.to_owned())
            })?;
            self.inner.open_write(path)
        }
        fn atomic_read(
            &self,
            path: &Path,
        ) -> Result<Vec<u8>, tantivy::directory::error::OpenReadError> {
            self.inner.atomic_read(path)
        }
        fn atomic_write(&self, path: &Path, data: &[u8]) -> std::io::Result<()> {
            self.check()?;
            self.inner.atomic_write(path, data)
        }
        fn sync_directory(&self) -> std::io::Result<()> {
            self.inner.sync_directory()
        }
        fn watch(
            &self,
            cb: tantivy::directory::WatchCallback,
        ) -> tantivy::Result<tantivy::directory::WatchHandle> {
            self.inner.watch(cb)
        }
    }

    #[test]
    fn a_writer_that_failed_is_replaced_and_the_next_commit_succeeds() {
        let fail = std::sync::Arc::new(AtomicBool::new(false));
        let disk = FullDisk {
            inner: tantivy::directory::RamDirectory::create(),
            fail: fail.clone(),
        };
        let (schema, fields) = schema();
        let index = Index::create(disk, schema, tantivy::IndexSettings::default()).unwrap();
        let idx = TextIndex::ready(Path::new("ram"), index, fields).unwrap();
        idx.with_writer(|w| {
            idx.add(w, &doc("a", "alpha"))?;
            idx.commit(w, &payload(1))
        })
        .unwrap();

        // The disk fills up during a commit: the commit fails and the batch is dropped.
        fail.store(true, Ordering::SeqCst);
        let failed = idx.with_writer(|w| {
            idx.add(w, &doc("b", "beta"))?;
            idx.commit(w, &payload(2))
        });
        assert!(failed.is_err());
        fail.store(false, Ordering::SeqCst);

        // Space is back: the next batch goes through a new writer, and nothing of the failed
        // one leaks into it.
        idx.with_writer(|w| {
            idx.add(w, &doc("c", "gamma"))?;
            idx.commit(w, &payload(3))
        })
        .unwrap();
        assert_eq!(hits(&idx, "alpha beta gamma", 64), ["a", "c"]);
    }

    #[test]
    fn an_index_that_cannot_be_opened_is_moved_aside_and_replaced() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("index");
        let (idx, _) = TextIndex::open(&dir, "store-1").unwrap();
        idx.with_writer(|w| {
            idx.add(w, &doc("a", "alpha"))?;
            idx.commit(w, &payload(1))
        })
        .unwrap();
        drop(idx);
        // Every segment's term dictionary cut short.
        for e in std::fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "term") {
                let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
                f.set_len(3).unwrap();
            }
        }
        let (idx, opened) = TextIndex::open(&dir, "store-1").unwrap();
        assert!(matches!(opened, Opened::Damaged(_)), "{opened:?}");
        assert_eq!(idx.num_docs(), 0);
        let aside: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("index.broken-"))
            .collect();
        assert_eq!(aside.len(), 1, "{aside:?}");
        // A second damage keeps one copy, the newest.
        drop(idx);
        std::fs::write(dir.join("meta.json"), b"{ not json").unwrap();
        let (_, opened) = TextIndex::open(&dir, "store-1").unwrap();
        assert!(matches!(opened, Opened::Damaged(_)), "{opened:?}");
        let aside = std::fs::read_dir(root.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with("index.broken-")
            })
            .count();
        assert_eq!(aside, 1);
    }

    #[test]
    fn bare_prefixes_are_taken_out_of_the_query_text() {
        let (rest, p) = split_prefixes("a +tom* -b* c");
        assert_eq!(rest, "a c");
        assert_eq!(
            p,
            [
                (Occur::Must, "tom".to_owned()),
                (Occur::MustNot, "b".to_owned())
            ]
        );
        let (rest, p) = split_prefixes("\"x y*\" z*");
        assert_eq!((rest.as_str(), p.len()), ("\"x y*\"", 1));
        let (rest, p) = split_prefixes("* **");
        assert_eq!((rest.as_str(), p.len()), ("* **", 0));
    }
}
