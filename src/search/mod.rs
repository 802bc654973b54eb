//! Hybrid retrieval: BM25 over a tantivy index, exact dense vectors, graph proximity, fused by
//! reciprocal rank.
//!
//! Owns the text index, the in-memory vectors, the embedding worker and query planning, each
//! lifecycle in its own file: `indexer` (catch-up, rebuilds, repair, the indexing worker),
//! `embedder` (the model, its vectors, the embedding worker) and `query` (answering), over
//! `index` (tantivy), `vectors`, `proximity` (graph SQL) and `stopwords`. This file holds the
//! shared state, opening and status. Architecture Invariant: everything here is derived from the store and can be rebuilt from
//! it; hits are hydrated from SQLite (text, spans, hashes), never from the index. Knows nothing
//! about sockets.

mod analyzer;
pub mod index;
pub mod models;

mod embedder;
mod indexer;
mod proximity;
mod query;
mod stopwords;
pub mod written;

pub use embedder::{EMBED_BATCH, embed_text};
pub mod vectors;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::clock;
use crate::store::{self, Store};
use index::{Boosts, Filters, IndexError, Opened, TextIndex};
use vectors::Vectors;

/// A sentence-embedding model as search uses it.
pub trait Embed: Send + Sync {
    fn model_id(&self) -> &str;
    fn dim(&self) -> usize;
    /// L2-normalized vectors of passages (chunks), one per text.
    fn embed_passages(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, String>;
    /// The L2-normalized vector of a query (models such as e5 and bge prefix queries).
    fn embed_query(&self, text: &str) -> Result<Vec<f32>, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error("search: {0}")]
    Store(#[from] rusqlite::Error),
    #[error("{0}")]
    InvalidParams(String),
    #[error("{0}")]
    ModelUnavailable(String),
    #[error("embedding the query failed: {0}")]
    Embed(String),
    #[error(
        "the query ran out of time before {phase}; the limit is {ms} ms \
         ([search] query_timeout_ms): use fewer or longer words"
    )]
    Timeout { ms: u64, phase: &'static str },
}

impl From<SearchError> for crate::error::Error {
    fn from(e: SearchError) -> Self {
        use crate::error::{Error, Kind};
        let kind = match &e {
            SearchError::Index(_) => Kind::IndexError,
            SearchError::Store(_) => Kind::StoreError,
            SearchError::InvalidParams(_) => Kind::InvalidParams,
            SearchError::ModelUnavailable(_) | SearchError::Embed(_) => Kind::ModelUnavailable,
            SearchError::Timeout { .. } => Kind::QueryTimeout,
        };
        Error::new(kind, e.to_string())
    }
}

impl From<models::ModelError> for crate::error::Error {
    fn from(e: models::ModelError) -> Self {
        use crate::error::{Error, Kind};
        let kind = match &e {
            models::ModelError::Io { .. } => Kind::Io,
            models::ModelError::Unknown(_) => Kind::NotFound,
            _ => Kind::InvalidParams,
        };
        Error::new(kind, e.to_string())
    }
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        SearchError::Index(IndexError::Tantivy(e))
    }
}

/// Fusion settings. Defaults were chosen on BEIR SciFact (see the README).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tuning {
    pub rrf_k: f32,
    pub weight_bm25: f32,
    pub weight_dense: f32,
    pub weight_graph: f32,
    pub boosts: Boosts,
}

impl Default for Tuning {
    fn default() -> Self {
        // rrf_k 20 measured best on SciFact hybrid with all-MiniLM-L6-v2 (nDCG@10: k 5 0.7185,
        // 10 0.7152, 20 0.7188, 30 0.7156, 60 0.7138, 100 0.7125); equal weights beat 1.5:1
        // either way. `brain eval beir --sweep K:WB:WD` repeats the measurement.
        Tuning {
            rrf_k: 20.0,
            weight_bm25: 1.0,
            weight_dense: 1.0,
            weight_graph: 0.5,
            boosts: Boosts::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Bm25,
    Dense,
    Hybrid,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Bm25 => "bm25",
            Mode::Dense => "dense",
            Mode::Hybrid => "hybrid",
        }
    }

    pub fn parse(s: &str) -> Result<Mode, SearchError> {
        match s {
            "bm25" => Ok(Mode::Bm25),
            "dense" => Ok(Mode::Dense),
            "hybrid" => Ok(Mode::Hybrid),
            other => Err(SearchError::InvalidParams(format!(
                "mode must be bm25, dense or hybrid, not {other:?}"
            ))),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Request {
    pub query: String,
    /// `None`: hybrid when vectors exist, else BM25.
    pub mode: Option<Mode>,
    pub k: usize,
    pub filters: Filters,
    pub graph: bool,
    pub explain: bool,
    /// One hit per note (the best chunk) when true, else one per chunk.
    pub group_by_note: bool,
    /// Fusion settings for this query instead of the configured ones (used by `brain eval`).
    pub tuning: Option<Tuning>,
}

pub const MAX_K: usize = 200;

/// Deepest nesting of parentheses a query may have: tantivy's query parser recurses once per
/// level, and about a thousand levels (2 KB of `(`) overflow a thread's stack, which aborts
/// the daemon. People nest two or three.
pub const MAX_QUERY_NESTING: usize = 16;

/// Longest tag, kind, property or path prefix a filter may name: the longest path Linux
/// accepts (`PATH_MAX`); anything longer cannot match and only costs work.
pub const MAX_FILTER_VALUE_BYTES: usize = 4096;

/// What one query may cost: sizes are checked before any work, and the time limit between its
/// phases and between index segments. Settings in `[search]` (see the README).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Bytes of query text: a question or a pasted paragraph fits; a 15 KB `a* a* …` does not.
    pub max_query_bytes: usize,
    /// Words in the query, as the tokenizer splits them: each is a term lookup in five fields.
    pub max_query_terms: usize,
    /// `prefix*` words in the query: each walks the term dictionary of five fields.
    pub max_prefix_terms: usize,
    /// Index terms one `prefix*` stands for, per field: a one-letter prefix would otherwise
    /// stand for most of the dictionary.
    pub max_prefix_expansions: u32,
    /// Tags, kinds and properties a query's filters may list together.
    pub max_filter_values: usize,
    /// Wall-clock time one query may take before it is answered with `query_timeout`.
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_query_bytes: 4096,
            max_query_terms: 128,
            max_prefix_terms: 8,
            max_prefix_expansions: 64,
            max_filter_values: 64,
            timeout: Duration::from_secs(2),
        }
    }
}

impl Limits {
    /// For `brain eval`, which runs a dataset's own queries in-process: nothing hostile arrives
    /// there, and some datasets' queries are whole paragraphs (ArguAna's run to hundreds of
    /// words). Prefixes stay bounded; the time limit only catches a runaway.
    pub fn offline() -> Limits {
        Limits {
            max_query_bytes: usize::MAX,
            max_query_terms: usize::MAX,
            max_filter_values: usize::MAX,
            timeout: Duration::from_secs(600),
            ..Limits::default()
        }
    }

    /// Refuses a request over any size limit, naming the limit and its setting. Runs before any
    /// other work on the request.
    pub fn check(&self, req: &Request) -> Result<(), SearchError> {
        let over = |what: String, limit: usize, setting: &str| {
            SearchError::InvalidParams(format!("{what}; the limit is {limit} ([search] {setting})"))
        };
        let q = &req.query;
        if q.len() > self.max_query_bytes {
            return Err(over(
                format!("query is {} bytes", q.len()),
                self.max_query_bytes,
                "max_query_bytes",
            ));
        }
        let terms = index::term_count(q);
        if terms > self.max_query_terms {
            return Err(over(
                format!("query has {terms} terms"),
                self.max_query_terms,
                "max_query_terms",
            ));
        }
        let depth = index::nesting_depth(q);
        if depth > MAX_QUERY_NESTING {
            return Err(SearchError::InvalidParams(format!(
                "query nests parentheses {depth} deep; the limit is {MAX_QUERY_NESTING}"
            )));
        }
        let prefixes = index::prefix_count(q);
        if prefixes > self.max_prefix_terms {
            return Err(over(
                format!("query has {prefixes} prefix terms"),
                self.max_prefix_terms,
                "max_prefix_terms",
            ));
        }
        let f = &req.filters;
        let values = f.tags.len() + f.kinds.len() + f.props.len();
        if values > self.max_filter_values {
            return Err(over(
                format!("filters list {values} values"),
                self.max_filter_values,
                "max_filter_values",
            ));
        }
        let long = f
            .tags
            .iter()
            .chain(&f.kinds)
            .chain(f.path_prefix.iter())
            .chain(f.props.iter().flat_map(|(k, v)| [k, v]))
            .find(|v| v.len() > MAX_FILTER_VALUE_BYTES);
        if let Some(v) = long {
            return Err(SearchError::InvalidParams(format!(
                "a filter value is {} bytes; the limit is {MAX_FILTER_VALUE_BYTES}",
                v.len()
            )));
        }
        Ok(())
    }
}

/// A query's time budget: checked between phases, and before each index segment is searched.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    deadline: Instant,
    limit: Duration,
}

impl Budget {
    pub fn new(started: Instant, limit: Duration) -> Budget {
        Budget {
            deadline: started + limit,
            limit,
        }
    }

    /// A budget with no time left (the `search_budget_spent` failpoint).
    pub fn spent(now: Instant, limit: Duration) -> Budget {
        Budget {
            deadline: now,
            limit,
        }
    }

    /// `Err` once the deadline has passed; `phase` names what was about to start.
    pub fn check(&self, phase: &'static str) -> Result<(), SearchError> {
        self.check_at(Instant::now(), phase)
    }

    fn check_at(&self, now: Instant, phase: &'static str) -> Result<(), SearchError> {
        if now >= self.deadline {
            return Err(SearchError::Timeout {
                ms: self.limit.as_millis() as u64,
                phase,
            });
        }
        Ok(())
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }
}

#[derive(Debug, Clone)]
pub struct Hit {
    pub node_id: String,
    pub chunk_id: String,
    pub title: String,
    pub path: String,
    pub lines: [u32; 2],
    pub bytes: [u64; 2],
    pub content_hash: String,
    pub heading_path: Vec<String>,
    pub score: f32,
    pub snippet: String,
    /// Byte ranges of the matched words inside `snippet`.
    pub highlights: Vec<[usize; 2]>,
    pub explain: Option<Explain>,
    /// A written node's hit: the write that stated its text (it has no file to cite).
    pub written: Option<WrittenBy>,
}

/// Who wrote a written node's text, through what, and when.
#[derive(Debug, Clone)]
pub struct WrittenBy {
    /// `client:LABEL`, `client` or `workflow`.
    pub extractor: String,
    pub actor_id: String,
    pub run_id: Option<String>,
    pub recorded_at: String,
}

#[derive(Debug, Clone, Default)]
pub struct Explain {
    pub bm25: Option<Signal>,
    pub dense: Option<Signal>,
    pub graph: Option<Signal>,
    /// Sum of weight / (rrf_k + rank) over the signals.
    pub fused: f32,
}

#[derive(Debug, Clone, Copy)]
pub struct Signal {
    /// 1-based rank of the chunk in this signal's list.
    pub rank: usize,
    pub score: f32,
}

#[derive(Debug, Clone)]
pub struct Response {
    pub mode: Mode,
    pub hits: Vec<Hit>,
    /// Candidates considered after filtering, before cutting to `k`.
    pub total: usize,
    pub took_ms: f64,
    pub warnings: Vec<String>,
    /// With a model loaded and words matched: how many of the notes the words matched had
    /// vectors for every matched chunk when the query ran, so a caller sees how much of the
    /// answer meaning-search could reach while embedding is still under way.
    pub vectors: Option<VectorCoverage>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VectorCoverage {
    /// Notes among the text matches (the first `max(4k, 100)` matching chunks).
    pub matching_notes: usize,
    pub with_vectors: usize,
}

/// What `daemon.status` shows.
#[derive(Debug, Clone)]
pub struct SearchStatus {
    pub index_state: String,
    pub indexed_chunks: u64,
    pub index_seq: i64,
    pub outbox_head: i64,
    pub model: Option<String>,
    pub model_state: String,
    pub embedded_chunks: usize,
    pub total_chunks: u64,
    /// When the text index was last found damaged (and replaced), and why.
    pub last_damage: Option<String>,
}

/// Where the text index stands, as `daemon.status` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum IndexState {
    Ready,
    Rebuilding,
    /// The last catch-up or rebuild failed (a full disk, say); it is retried. Searches still
    /// answer from the last commit.
    Failed(String),
}

impl std::fmt::Display for IndexState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IndexState::Ready => f.write_str("ready"),
            IndexState::Rebuilding => f.write_str("rebuilding"),
            IndexState::Failed(e) => write!(f, "error: {e}"),
        }
    }
}

struct Model {
    embedder: Arc<dyn Embed>,
    vectors: Vectors,
}

pub struct Search {
    store: Arc<Store>,
    /// Where the text index lives; the index itself is swapped for an empty one when it is
    /// found damaged, so readers take their own handle ([`Search::text`]).
    dir: PathBuf,
    text: RwLock<Arc<TextIndex>>,
    /// Held by whoever changes the index or swaps it: catch-up, rebuild, recovery.
    index_lock: Mutex<()>,
    /// Damage a reader found, for the indexing worker to repair ([`Search::report_damage`]).
    damage: Mutex<Option<String>>,
    /// The last damage repaired, and when: shown in `daemon.status`.
    last_damage: Mutex<Option<String>>,
    /// Whether the worker should check the index's checksums before its first catch-up (an
    /// index found on disk, which may have been damaged while the daemon was down).
    verify: AtomicBool,
    /// Whether a panic failpoint has fired (it fires once per process).
    failpoint_fired: AtomicBool,
    store_id: String,
    applied: AtomicI64,
    /// Set while a rebuild is running or pending.
    rebuilding: AtomicBool,
    state: Mutex<IndexState>,
    model: RwLock<Option<Model>>,
    model_state: Mutex<String>,
    tuning: Tuning,
    limits: Limits,
    /// `BRAIN_FAILPOINT`, read once: `search_budget_spent` starts every query out of time,
    /// `search_index_panic` panics the indexing worker once, `embed_panic` the embedding
    /// worker once, before its first batch (fault tests).
    failpoint: Option<String>,
    /// Wakes the embedding worker.
    embed_signal: (Mutex<bool>, Condvar),
    /// Wakes the indexing worker.
    index_signal: (Mutex<bool>, Condvar),
    stopping: AtomicBool,
    /// Notes reindexed (chunks, for a rebuild) since memory was last given back, by whichever
    /// thread applied them; see [`Search::index_loop`].
    burst: AtomicUsize,
}

impl Search {
    /// Opens (or creates) the index under `dir` with the default query limits.
    pub fn open(store: Arc<Store>, dir: &Path, tuning: Tuning) -> Result<Arc<Search>, SearchError> {
        Search::open_with(store, dir, tuning, Limits::default())
    }

    /// Opens (or creates) the index under `dir`. A fresh index is marked for a rebuild that
    /// [`Search::start_background`] runs while the daemon serves.
    pub fn open_with(
        store: Arc<Store>,
        dir: &Path,
        tuning: Tuning,
        limits: Limits,
    ) -> Result<Arc<Search>, SearchError> {
        let store_id = store.write(|tx| {
            if let Some(id) = store::meta_get(tx, "store_id")? {
                return Ok::<_, rusqlite::Error>(id);
            }
            let id = uuid::Uuid::new_v4().to_string();
            store::meta_set(tx, "store_id", &id)?;
            Ok(id)
        })?;
        let (text, opened) = TextIndex::open(dir, &store_id)?;
        let mut last_damage = None;
        let (applied, rebuild) = match &opened {
            Opened::Existing(p) => {
                let head = store.read(index::outbox_head)?;
                if p.seq > head && head > 0 {
                    // The index claims changes the store never made: a restored or swapped
                    // store. Only a rebuild is trustworthy.
                    info!(
                        index_seq = p.seq,
                        head, "search index is ahead of the store; rebuilding"
                    );
                    (0, true)
                } else {
                    (p.seq, false)
                }
            }
            Opened::Fresh(reason) => {
                info!(%reason, dir = %dir.display(), "search index will be rebuilt");
                (0, true)
            }
            Opened::Damaged(reason) => {
                info!(%reason, dir = %dir.display(), "search index will be rebuilt");
                last_damage = Some(format!("{}: {reason}", clock::now()));
                (0, true)
            }
        };
        Ok(Arc::new(Search {
            store,
            dir: dir.to_owned(),
            text: RwLock::new(Arc::new(text)),
            index_lock: Mutex::new(()),
            damage: Mutex::new(None),
            last_damage: Mutex::new(last_damage),
            verify: AtomicBool::new(matches!(opened, Opened::Existing(_))),
            failpoint_fired: AtomicBool::new(false),
            store_id,
            applied: AtomicI64::new(applied),
            rebuilding: AtomicBool::new(rebuild),
            state: Mutex::new(if rebuild {
                IndexState::Rebuilding
            } else {
                IndexState::Ready
            }),
            model: RwLock::new(None),
            model_state: Mutex::new("none".into()),
            tuning,
            limits,
            failpoint: std::env::var("BRAIN_FAILPOINT")
                .ok()
                .filter(|s| !s.is_empty()),
            embed_signal: (Mutex::new(false), Condvar::new()),
            index_signal: (Mutex::new(false), Condvar::new()),
            stopping: AtomicBool::new(false),
            burst: AtomicUsize::new(0),
        }))
    }

    pub fn index_dir(&self) -> &Path {
        &self.dir
    }

    /// Starts the indexing worker (which first runs a pending rebuild or catch-up) and the
    /// embedding worker, each on its own supervised thread (a panic is reported in
    /// `daemon.status` and the worker restarts), so the daemon serves meanwhile.
    pub fn start_background(self: &Arc<Search>) {
        let me = self.clone();
        if let Err(e) = crate::supervise::spawn("search-index", move || me.index_loop()) {
            warn!(error = %e, "cannot start the search-index worker");
        }
        let me = self.clone();
        if let Err(e) = crate::supervise::spawn("embedder", move || me.embed_loop()) {
            warn!(error = %e, "cannot start the embedding worker");
        }
    }

    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        self.kick_embedder();
        self.kick_indexer();
    }

    pub fn status(&self) -> Result<SearchStatus, SearchError> {
        let (head, total) = self.store.read(|c| {
            let head = index::outbox_head(c)?;
            let total: i64 = c.query_row(
                "SELECT COUNT(*) FROM chunks WHERE valid_to IS NULL",
                [],
                |r| r.get(0),
            )?;
            Ok::<_, rusqlite::Error>((head, total as u64))
        })?;
        let model = self.model.read().unwrap_or_else(|p| p.into_inner());
        Ok(SearchStatus {
            index_state: self.state().to_string(),
            indexed_chunks: self.text().num_docs(),
            index_seq: self.applied.load(Ordering::SeqCst),
            outbox_head: head.max(self.applied.load(Ordering::SeqCst)),
            model: model.as_ref().map(|m| m.embedder.model_id().to_owned()),
            model_state: self
                .model_state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            embedded_chunks: model.as_ref().map_or(0, |m| m.vectors.len()),
            total_chunks: total,
            last_damage: self
                .last_damage
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        })
    }
}

/// Parses a time bound: RFC 3339, a bare date (`2024-05-01`), Unix seconds, or an age such as
/// `7d` / `12h` (that long ago).
pub fn parse_time(s: &str) -> Result<i64, SearchError> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Ok(n);
    }
    let as_date = if s.len() == 10 && s.as_bytes().get(4) == Some(&b'-') {
        format!("{s}T00:00:00Z")
    } else {
        s.to_owned()
    };
    if let Ok(t) = humantime::parse_rfc3339_weak(&as_date) {
        return Ok(t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64));
    }
    if let Ok(d) = humantime::parse_duration(s) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        return Ok(now.saturating_sub(d).as_secs() as i64);
    }
    Err(SearchError::InvalidParams(format!(
        "cannot read {s:?} as a time: use RFC 3339, YYYY-MM-DD, Unix seconds or an age like 7d"
    )))
}

/// Where the index of a data dir lives.
pub fn index_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("index")
}

/// Lowers the calling thread's scheduling priority (nice 10), so background work yields to
/// everything interactive. Best effort.
pub fn lower_thread_priority() {
    // On Linux `setpriority(PRIO_PROCESS, 0)` applies to the calling thread only.
    let _ = rustix::process::setpriority_process(None, 10);
}

#[cfg(test)]
mod tests {
    use super::query::{coverage, hydrate};
    use super::*;
    use crate::store::part_id::PartKind;

    #[test]
    fn times_parse_in_every_accepted_form() {
        assert_eq!(parse_time("86400").unwrap(), 86400);
        assert_eq!(parse_time("1970-01-02").unwrap(), 86400);
        assert_eq!(parse_time("1970-01-02T00:00:00Z").unwrap(), 86400);
        let week_ago = parse_time("7d").unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        assert!((now - 7 * 86400 - week_ago).abs() < 5);
        assert!(parse_time("last tuesday").is_err());
    }

    #[test]
    fn a_hit_cites_its_chunk_with_the_span_and_version_kept_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("brain.db")).unwrap();
        store
            .write(|tx| {
                tx.execute_batch(
                    "INSERT INTO roots(id, path, added_by, added_at) VALUES (1, '/v', 'user:u', 't');
                     INSERT INTO sources(id, root_id, rel_path, file_type, status, first_seen_at, last_seen_at)
                         VALUES (1, 1, 'a.md', 'markdown', 'indexed', 't', 't');
                     INSERT INTO source_versions(id, source_id, content_hash, extractor, extractor_version, actor_id, recorded_at)
                         VALUES (1, 1, 'new', 'brain-parse', '1', 'user:u', 't');
                     INSERT INTO nodes(id, kind, key, title, source_id, owner_id, valid_from, created_at, updated_at)
                         VALUES ('n', 'note', 'source:1', 'A', 1, 'user:u', 't', 't', 't');
                     INSERT INTO chunks(legacy_id, source_id, ordinal, key, heading_path, content, cite_version,
                                        byte_start, byte_end, line_start, line_end, valid_from)
                         VALUES ('kept', 1, 0, 'k#1', '[\"H\"]', 'one', 1, 10, 20, 3, 4, 0);
                     INSERT INTO chunks(legacy_id, source_id, ordinal, key, content, valid_from, valid_to)
                         VALUES ('gone', 1, 1, 'g#1', 'two', 0, 5);
                     INSERT INTO chunks(source_id, ordinal, key, content, cite_version, byte_start,
                                        byte_end, line_start, line_end, valid_from)
                         VALUES (1, 2, 'n#1', 'three', 1, 30, 40, 6, 7, 0);",
                )
            })
            .unwrap();
        let new_id = crate::store::part_id::format(PartKind::Chunk, 3);
        let (kept, gone, new) = store
            .read(|c| {
                Ok::<_, rusqlite::Error>((
                    hydrate(c, "kept")?,
                    hydrate(c, "gone")?,
                    hydrate(c, &new_id)?,
                ))
            })
            .unwrap();
        let kept = kept.unwrap();
        assert_eq!((kept.bytes, kept.lines), ([10, 20], [3, 4]));
        assert_eq!(kept.content_hash, "new");
        assert_eq!(kept.path, "/v/a.md");
        assert_eq!(
            (kept.node_id.as_str(), kept.heading_path.as_slice()),
            ("n", &["H".to_owned()][..])
        );
        assert!(gone.is_none(), "a retired chunk is not a hit");
        let new = new.unwrap();
        assert_eq!(
            (new.chunk_id.as_str(), new.snippet.as_str()),
            (new_id.as_str(), "three")
        );
        assert_eq!((new.bytes, new.lines), ([30, 40], [6, 7]));
    }

    #[test]
    fn limits_refuse_the_request_one_past_each_and_name_the_setting() {
        let limits = Limits {
            max_query_bytes: 40,
            max_query_terms: 4,
            max_prefix_terms: 2,
            max_prefix_expansions: 8,
            max_filter_values: 2,
            timeout: Duration::from_secs(1),
        };
        let check = |query: &str, tags: usize, want: Option<&str>| {
            let req = Request {
                query: query.into(),
                mode: None,
                k: 10,
                filters: Filters {
                    tags: (0..tags).map(|i| format!("t{i}")).collect(),
                    ..Filters::default()
                },
                graph: false,
                explain: false,
                group_by_note: true,
                tuning: None,
            };
            match (limits.check(&req), want) {
                (Ok(()), None) => {}
                (Err(e), Some(w)) => assert!(e.to_string().contains(w), "{query:?}: {e}"),
                (got, _) => panic!("{query:?} {tags}: {got:?}, want {want:?}"),
            }
        };
        check("a b c d", 2, None);
        check(
            "a b c d e",
            0,
            Some("query has 5 terms; the limit is 4 ([search] max_query_terms)"),
        );
        check(&"x".repeat(40), 0, None);
        check(
            &"x".repeat(41),
            0,
            Some("query is 41 bytes; the limit is 40 ([search] max_query_bytes)"),
        );
        check("a* b*", 0, None);
        check(
            "a* b* c*",
            0,
            Some("query has 3 prefix terms; the limit is 2 ([search] max_prefix_terms)"),
        );
        check(
            "a",
            3,
            Some("filters list 3 values; the limit is 2 ([search] max_filter_values)"),
        );
    }

    #[test]
    fn a_budget_runs_out_at_its_deadline_and_names_the_phase() {
        let start = Instant::now();
        let b = Budget::new(start, Duration::from_millis(50));
        assert!(b.check_at(start, "x").is_ok());
        assert!(b.check_at(start + Duration::from_millis(49), "x").is_ok());
        let e = b
            .check_at(start + Duration::from_millis(50), "the text search")
            .unwrap_err();
        assert!(matches!(e, SearchError::Timeout { ms: 50, .. }), "{e:?}");
        assert!(e.to_string().contains("before the text search"), "{e}");
        assert!(e.to_string().contains("([search] query_timeout_ms)"), "{e}");
    }

    #[test]
    fn coverage_counts_a_note_only_when_every_matched_chunk_has_a_vector() {
        let mut v = Vectors::new("m", 2);
        v.insert("c1".into(), "n1".into(), &[1.0, 0.0]);
        v.insert("c2".into(), "n2".into(), &[0.0, 1.0]);
        let m = |c: &str, n: &str| (c.to_owned(), n.to_owned(), 1.0);
        let found = coverage(
            &[m("c1", "n1"), m("c2", "n2"), m("c3", "n2"), m("c4", "n3")],
            &v,
        );
        assert_eq!(
            found,
            VectorCoverage {
                matching_notes: 3,
                with_vectors: 1
            }
        );
    }

    #[test]
    fn embed_text_carries_title_and_heading() {
        let t = embed_text("Tomatoes", Some(r#"["Tomatoes","Watering"]"#), "daily");
        assert_eq!(t, "Tomatoes / Watering\ndaily");
    }
}
