//! The text index: a tantivy index on disk holding one document per current chunk.
//!
//! Owns the index schema, the analyzer, and the mapping from store rows to index documents.
//! Architecture Invariant: the index is derived — SQLite is the ground truth. The index stores
//! ids only; every text shown to a user is read back from the store. The commit payload records
//! which outbox sequence number (and which store) the index reflects, so a stale, foreign or
//! corrupt index is detected on open and rebuilt.

use std::collections::HashSet;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tantivy::collector::{DocSetCollector, TopDocs};
use tantivy::query::{
    AllQuery, BooleanQuery, BoostQuery, ConstScoreQuery, Occur, Query, QueryParser, RangeQuery,
    RegexQuery, TermQuery,
};
use tantivy::schema::{
    FAST, Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing,
    TextOptions, Value,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer,
    StopWordFilter, TextAnalyzer, TokenStream,
};
use tantivy::{DocAddress, Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

/// Bumped whenever the schema or the analyzer changes; an index built by another version is
/// rebuilt on open.
pub const INDEX_FORMAT: u32 = 1;
const ANALYZER: &str = "brain_en";
/// Memory the index writer may buffer before flushing a segment.
const WRITER_HEAP: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error("search index: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("search index directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Clone, Copy)]
pub struct Fields {
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
            .set_tokenizer(ANALYZER)
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        chunk_id: b.add_text_field("chunk_id", STRING | STORED | FAST),
        note_id: b.add_text_field("note_id", STRING | STORED | FAST),
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

/// English: Unicode word splitting, lower case, accents folded, stop words dropped, Snowball
/// stemming. The same analyzer serves indexing and queries.
fn analyzer() -> TextAnalyzer {
    let mut b = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .dynamic();
    if let Some(stop) = StopWordFilter::new(Language::English) {
        b = b.filter_dynamic(stop);
    }
    b.filter_dynamic(Stemmer::new(Language::English)).build()
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
    pub note_id: String,
    pub title: String,
    pub heading: String,
    pub body: String,
    pub tags: Vec<String>,
    pub path: String,
    pub kinds: Vec<String>,
    pub mtime_secs: i64,
    pub props: Vec<String>,
}

pub struct TextIndex {
    pub dir: PathBuf,
    pub index: Index,
    pub reader: IndexReader,
    /// tantivy allows one writer per index; holding its lock is holding the right to change
    /// the index (catch-up and rebuild both take it).
    pub writer: Mutex<IndexWriter>,
    pub fields: Fields,
}

/// How [`TextIndex::open`] found the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opened {
    /// Up to the returned payload.
    Existing(Payload),
    /// Created empty, because there was none, it was unreadable, or it was built by another
    /// format or store; the reason says which.
    Fresh(String),
}

impl TextIndex {
    /// Opens the index in `dir`, or creates an empty one (moving an unusable one aside first).
    pub fn open(dir: &Path, store_id: &str) -> Result<(TextIndex, Opened), IndexError> {
        let io = |source| IndexError::Io {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        let (schema, fields) = schema();
        let existing = if dir.join("meta.json").exists() {
            Some(Index::open_in_dir(dir).and_then(|idx| {
                let metas = idx.load_metas()?;
                Ok((idx, metas.payload))
            }))
        } else {
            None
        };
        let (index, opened) = match existing {
            Some(Ok((idx, payload))) => {
                let payload: Option<Payload> = payload.and_then(|p| serde_json::from_str(&p).ok());
                match payload {
                    Some(p) if p.format == INDEX_FORMAT && p.store_id == store_id => {
                        if idx.schema() == schema {
                            (idx, Opened::Existing(p))
                        } else {
                            (
                                recreate(dir, &schema)?,
                                Opened::Fresh("schema changed".into()),
                            )
                        }
                    }
                    Some(p) if p.store_id != store_id => (
                        recreate(dir, &schema)?,
                        Opened::Fresh("index belongs to another store".into()),
                    ),
                    Some(_) => (
                        recreate(dir, &schema)?,
                        Opened::Fresh("index format changed".into()),
                    ),
                    None => (
                        recreate(dir, &schema)?,
                        Opened::Fresh("index has no usable commit".into()),
                    ),
                }
            }
            Some(Err(e)) => (
                recreate(dir, &schema)?,
                Opened::Fresh(format!("index unreadable ({e})")),
            ),
            None => (
                Index::create_in_dir(dir, schema.clone())?,
                Opened::Fresh("no index yet".into()),
            ),
        };
        index.tokenizers().register(ANALYZER, analyzer());
        let writer = index.writer_with_num_threads(1, WRITER_HEAP)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok((
            TextIndex {
                dir: dir.to_owned(),
                index,
                reader,
                writer: Mutex::new(writer),
                fields,
            },
            opened,
        ))
    }

    pub fn add(&self, writer: &IndexWriter, d: &ChunkDoc) -> Result<(), IndexError> {
        let f = &self.fields;
        let mut doc = TantivyDocument::new();
        doc.add_text(f.chunk_id, &d.chunk_id);
        doc.add_text(f.note_id, &d.note_id);
        doc.add_text(f.title, &d.title);
        doc.add_text(f.heading, &d.heading);
        doc.add_text(f.body, &d.body);
        for t in &d.tags {
            doc.add_text(f.tags_text, t);
            // Nested tags: `a/b/c` is findable by the filters `a`, `a/b` and `a/b/c`.
            let mut at = 0;
            while let Some(i) = t[at..].find('/') {
                doc.add_text(f.tag, &t[..at + i]);
                at += i + 1;
            }
            doc.add_text(f.tag, t);
        }
        doc.add_text(f.path_text, &d.path);
        doc.add_text(f.path, &d.path);
        for k in &d.kinds {
            doc.add_text(f.kind, k);
        }
        doc.add_i64(f.mtime, d.mtime_secs);
        for p in &d.props {
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
    /// is searched as plain words.
    pub fn text_query(&self, q: &str, boosts: &Boosts) -> Box<dyn Query> {
        let f = &self.fields;
        let mut parser = QueryParser::for_index(
            &self.index,
            vec![f.title, f.heading, f.body, f.tags_text, f.path_text],
        );
        parser.set_field_boost(f.title, boosts.title);
        parser.set_field_boost(f.heading, boosts.heading);
        parser.set_field_boost(f.body, boosts.body);
        parser.set_field_boost(f.tags_text, boosts.tags);
        parser.set_field_boost(f.path_text, boosts.path);
        let (rest, prefixes) = split_prefixes(q);
        let (query, _errors) = parser.parse_query_lenient(&rest);
        if prefixes.is_empty() {
            return query;
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Should, query)];
        let mut analyzer = analyzer();
        for (occur, word) in prefixes {
            // The index holds analyzed terms: match the folded word and its stem as prefixes.
            let mut forms = vec![word.to_lowercase()];
            let mut stream = analyzer.token_stream(&word);
            while let Some(t) = stream.next() {
                forms.push(t.text.clone());
            }
            forms.sort();
            forms.dedup();
            let pattern = format!(
                "({}).*",
                forms
                    .iter()
                    .map(|f| regex_escape(f))
                    .collect::<Vec<_>>()
                    .join("|")
            );
            let per_field: Vec<(Occur, Box<dyn Query>)> = [
                (f.title, boosts.title),
                (f.heading, boosts.heading),
                (f.body, boosts.body),
                (f.tags_text, boosts.tags),
                (f.path_text, boosts.path),
            ]
            .into_iter()
            .filter_map(|(field, boost)| {
                let q = RegexQuery::from_pattern(&pattern, field).ok()?;
                let q: Box<dyn Query> = Box::new(BoostQuery::new(Box::new(q), boost));
                Some((Occur::Should, q))
            })
            .collect();
            clauses.push((occur, Box::new(BooleanQuery::new(per_field))));
        }
        Box::new(BooleanQuery::new(clauses))
    }

    /// The filters as one query, or `None` when there are none.
    pub fn filter_query(&self, filters: &Filters) -> Result<Option<Box<dyn Query>>, IndexError> {
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
            let props: Vec<String> = filters.props.iter().map(|(k, v)| prop_term(k, v)).collect();
            for p in props {
                must.push((Occur::Must, any_of(f.prop, &[p], false)));
            }
        }
        if let Some(prefix) = &filters.path_prefix {
            let pattern = format!("{}.*", regex_escape(prefix));
            must.push((
                Occur::Must,
                Box::new(RegexQuery::from_pattern(&pattern, f.path)?),
            ));
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
    pub fn search(
        &self,
        text: Box<dyn Query>,
        filter: Option<Box<dyn Query>>,
        n: usize,
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
        let top = searcher.search(&query, &TopDocs::with_limit(n.max(1)).order_by_score())?;
        let mut out = Vec::with_capacity(top.len());
        for (score, addr) in top {
            let (chunk, note) = self.ids(&searcher, addr)?;
            out.push((chunk, note, score));
        }
        Ok(out)
    }

    /// The chunk ids every document matching `filter` has.
    pub fn matching_chunks(&self, filter: &dyn Query) -> Result<HashSet<String>, IndexError> {
        let searcher = self.reader.searcher();
        let docs = searcher.search(filter, &DocSetCollector)?;
        let mut out = HashSet::with_capacity(docs.len());
        let mut columns = Vec::new();
        for seg in searcher.segment_readers() {
            columns.push(seg.fast_fields().str("chunk_id")?);
        }
        let mut s = String::new();
        for addr in docs {
            if let Some(Some(col)) = columns.get(addr.segment_ord as usize) {
                for ord in col.term_ords(addr.doc_id) {
                    s.clear();
                    if col.ord_to_str(ord, &mut s).unwrap_or(false) {
                        out.insert(s.clone());
                    }
                }
            }
        }
        Ok(out)
    }

    fn ids(
        &self,
        searcher: &tantivy::Searcher,
        addr: DocAddress,
    ) -> Result<(String, String), IndexError> {
        let doc: TantivyDocument = searcher.doc(addr)?;
        let get = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        Ok((get(self.fields.chunk_id), get(self.fields.note_id)))
    }
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

fn recreate(dir: &Path, schema: &Schema) -> Result<Index, IndexError> {
    let io = |source| IndexError::Io {
        path: dir.to_owned(),
        source,
    };
    std::fs::remove_dir_all(dir).map_err(io)?;
    std::fs::create_dir_all(dir).map_err(io)?;
    Ok(Index::create_in_dir(dir, schema.clone())?)
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

/// Escapes `s` for tantivy's regex syntax (the `regex` crate's, anchored at both ends).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\.+*?()|[]{}^$#&-~\"<>@".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reads the index documents of the given notes (all current notes when `None`) from the store.
pub fn load_docs(
    conn: &Connection,
    notes: Option<&[String]>,
) -> Result<Vec<ChunkDoc>, rusqlite::Error> {
    const SQL: &str = "SELECT c.id, c.parent_id, c.content, c.props, n.title, n.aliases, n.props,
                              n.kind, s.file_type, s.mtime_ns, r.path, s.rel_path
                       FROM nodes c
                       JOIN nodes n ON n.id = c.parent_id AND n.valid_to IS NULL
                       JOIN sources s ON s.id = c.source_id
                       JOIN roots r ON r.id = s.root_id
                       WHERE c.kind = 'chunk' AND c.valid_to IS NULL";
    let mut out = Vec::new();
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
    let mut push_rows =
        |rows: &mut rusqlite::Rows<'_>, out: &mut Vec<ChunkDoc>| -> Result<(), rusqlite::Error> {
            let mut last_note = String::new();
            let mut last_tags: Vec<String> = Vec::new();
            while let Some(r) = rows.next()? {
                let note_id: String = r.get(1)?;
                if note_id != last_note {
                    last_tags = tags_of(&note_id)?;
                    last_note = note_id.clone();
                }
                let chunk_props: String = r.get(3)?;
                let heading = heading_path(&chunk_props).join(" / ");
                let title: Option<String> = r.get(4)?;
                let aliases: String = r.get(5)?;
                let mut title = title.unwrap_or_default();
                if let Ok(serde_json::Value::Array(a)) = serde_json::from_str(&aliases) {
                    for alias in a.iter().filter_map(|v| v.as_str()) {
                        title.push('\n');
                        title.push_str(alias);
                    }
                }
                let note_props: String = r.get(6)?;
                let props = scalar_props(&note_props);
                let kind: String = r.get(7)?;
                let file_type: String = r.get(8)?;
                let mtime_ns: Option<i64> = r.get(9)?;
                let root: String = r.get(10)?;
                let rel: String = r.get(11)?;
                out.push(ChunkDoc {
                    chunk_id: r.get(0)?,
                    note_id,
                    title,
                    heading,
                    body: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
                    tags: last_tags.clone(),
                    path: join_path(&root, &rel),
                    kinds: vec![kind, file_type],
                    mtime_secs: mtime_ns.unwrap_or(0).div_euclid(1_000_000_000),
                    props,
                });
            }
            Ok(())
        };
    match notes {
        None => {
            let mut stmt = conn.prepare(&format!("{SQL} ORDER BY c.parent_id"))?;
            let mut rows = stmt.query([])?;
            push_rows(&mut rows, &mut out)?;
        }
        Some(ids) => {
            let mut stmt = conn.prepare_cached(&format!("{SQL} AND c.parent_id = ?1"))?;
            for id in ids {
                let mut rows = stmt.query(params![id])?;
                push_rows(&mut rows, &mut out)?;
            }
        }
    }
    Ok(out)
}

/// A chunk's heading path, from its `props` JSON (empty when absent or unreadable).
pub fn heading_path(chunk_props: &str) -> Vec<String> {
    serde_json::from_str::<serde_json::Value>(chunk_props)
        .ok()
        .and_then(|v| v.get("heading_path").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
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
fn scalar_props(json: &str) -> Vec<String> {
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

/// Distinct notes queued after `after`, and the highest sequence number among them.
pub fn outbox_after(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<(Vec<String>, i64), rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, note_id FROM search_outbox WHERE seq > ?1 ORDER BY seq LIMIT ?2",
    )?;
    let mut seen = HashSet::new();
    let mut notes = Vec::new();
    let mut head = after;
    let rows = stmt.query_map(params![after, limit as i64], |r| {
        Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
    })?;
    for row in rows {
        let (seq, note) = row?;
        head = head.max(seq);
        if seen.insert(note.clone()) {
            notes.push(note);
        }
    }
    Ok((notes, head))
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

    fn doc(id: &str, body: &str) -> ChunkDoc {
        ChunkDoc {
            chunk_id: id.into(),
            note_id: format!("n-{id}"),
            title: String::new(),
            heading: String::new(),
            body: body.into(),
            tags: vec!["plants/vegetable".into()],
            path: format!("/v/{id}.md"),
            kinds: vec!["note".into()],
            mtime_secs: 100,
            props: Vec::new(),
        }
    }

    #[test]
    fn queries_prefixes_and_filters_over_a_real_index() {
        let dir = tempfile::tempdir().unwrap();
        let (idx, opened) = TextIndex::open(dir.path(), "store-1").unwrap();
        assert!(matches!(opened, Opened::Fresh(_)));
        {
            let mut w = idx.writer.lock().unwrap();
            idx.add(&w, &doc("a", "a zeppelin hangar")).unwrap();
            idx.add(&w, &doc("b", "deep watering of tomatoes")).unwrap();
            let p = Payload {
                format: INDEX_FORMAT,
                store_id: "store-1".into(),
                seq: 7,
            };
            idx.commit(&mut w, &p).unwrap();
        }
        let ids = |q: &str, f: &Filters| -> Vec<String> {
            let filter = idx.filter_query(f).unwrap();
            idx.search(idx.text_query(q, &Boosts::default()), filter, 10)
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
