//! Hybrid retrieval: BM25 over a tantivy index, exact dense vectors, graph proximity, fused by
//! reciprocal rank.
//!
//! Owns the text index, the in-memory vectors, the embedding worker and query planning.
//! Architecture Invariant: everything here is derived from the store and can be rebuilt from
//! it; hits are hydrated from SQLite (text, spans, hashes), never from the index. Knows nothing
//! about sockets.

pub mod index;
pub mod models;
mod proximity;
mod stopwords;
pub mod vectors;

use std::collections::{HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::{debug, info, warn};

use crate::clock;
use crate::store::{self, Store};
use index::{Boosts, ChunkDoc, Filters, IndexError, Opened, Payload, TextIndex};
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Bm25,
    Dense,
    Hybrid,
}

impl Mode {
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

/// `search.query` parameters as they arrive on the wire (and in `Search_` workflow steps).
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(default)]
    pub filters: QueryFilters,
    #[serde(default)]
    pub explain: bool,
    /// Add graph proximity (links and shared tags of the top notes) as a signal.
    #[serde(default)]
    pub graph: bool,
    /// `note` (default: the best chunk per note) or `chunk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QueryFilters {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// RFC 3339, YYYY-MM-DD, Unix seconds, or an age such as `7d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Value>,
    /// Front-matter property equals value.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub props: std::collections::BTreeMap<String, Value>,
}

impl QueryParams {
    /// Checks the parameters and turns them into a request.
    pub fn into_request(self) -> Result<Request, SearchError> {
        let bad = |m: String| SearchError::InvalidParams(m);
        if self.query.trim().is_empty() {
            return Err(bad("query must not be empty".into()));
        }
        let mode = self.mode.as_deref().map(Mode::parse).transpose()?;
        let time = |v: &Option<Value>, name: &str| -> Result<Option<i64>, SearchError> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| bad(format!("{name} must be whole seconds"))),
                Some(Value::String(s)) => Ok(Some(parse_time(s)?)),
                Some(_) => Err(bad(format!("{name} must be a time string or Unix seconds"))),
            }
        };
        let mut props = Vec::new();
        for (k, v) in &self.filters.props {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                _ => {
                    return Err(bad(format!(
                        "filters.props.{k} must be a string, number or boolean"
                    )));
                }
            };
            props.push((k.clone(), v));
        }
        let group_by_note = match self.group.as_deref() {
            None | Some("note") => true,
            Some("chunk") => false,
            Some(other) => return Err(bad(format!("group must be note or chunk, not {other:?}"))),
        };
        let k = self.k.unwrap_or(10);
        if k == 0 || k > MAX_K {
            return Err(bad(format!("k must be between 1 and {MAX_K}")));
        }
        Ok(Request {
            query: self.query,
            mode,
            k,
            filters: Filters {
                tags: self.filters.tags,
                path_prefix: self.filters.path_prefix,
                kinds: self.filters.kinds,
                since: time(&self.filters.since, "filters.since")?,
                until: time(&self.filters.until, "filters.until")?,
                props,
            },
            graph: self.graph,
            explain: self.explain,
            group_by_note,
            tuning: None,
        })
    }
}

#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explain: Option<Explain>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Explain {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bm25: Option<Signal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dense: Option<Signal>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph: Option<Signal>,
    /// Sum of weight / (rrf_k + rank) over the signals.
    pub fused: f32,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Signal {
    /// 1-based rank of the chunk in this signal's list.
    pub rank: usize,
    pub score: f32,
}

#[derive(Debug, Clone, Serialize)]
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct VectorCoverage {
    /// Notes among the text matches (the first `max(4k, 100)` matching chunks).
    pub matching_notes: usize,
    pub with_vectors: usize,
}

/// What `daemon.status` shows.
#[derive(Debug, Clone, Serialize)]
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

/// Chunks embedded per batch; each batch is one store transaction.
const EMBED_BATCH: usize = 32;
/// Outbox rows applied per index commit during catch-up.
const APPLY_PAGE: usize = 20_000;
/// Notes reindexed that make a burst worth giving memory back after: a large ingest, not the
/// edits of someone typing.
const BURST_NOTES: usize = 256;
/// How long the indexer waits, after a burst, for more work before giving memory back.
const QUIET_AFTER_BURST: Duration = Duration::from_secs(3);
/// After a failed catch-up (a full disk, a damaged index being replaced) the indexer tries
/// again this soon without being asked, doubling the wait each time up to [`RETRY_MAX`]: the
/// index catches up on its own once the cause is gone.
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// Words of a query looked up in the store while the text index cannot answer; each is a scan
/// of every current chunk, so only the longest (the most selective) are.
const FALLBACK_WORDS: usize = 4;
/// Chunks one fallback word may match at most: bounds the memory of a common word.
const FALLBACK_ROWS: i64 = 2000;

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

    fn state(&self) -> IndexState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_state(&self, s: IndexState) {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = s;
    }

    /// The text index as it is now; a reader keeps its handle for the whole query even if the
    /// index is swapped meanwhile.
    fn text(&self) -> Arc<TextIndex> {
        self.text.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A reader found `text` damaged: the indexing worker moves it aside and rebuilds. Damage
    /// found in an index already replaced is old news and ignored.
    fn report_damage(&self, text: &Arc<TextIndex>, reason: String) {
        if !Arc::ptr_eq(text, &self.text()) {
            return;
        }
        warn!(%reason, "search index damaged; it will be rebuilt");
        let mut d = self.damage.lock().unwrap_or_else(|p| p.into_inner());
        if d.is_none() {
            *d = Some(reason);
        }
        drop(d);
        self.kick_indexer();
    }

    /// Moves the damaged index aside, puts an empty one in its place and marks it for a
    /// rebuild. The caller holds `index_lock`.
    fn replace_damaged(&self, reason: &str) -> Result<(), SearchError> {
        let (fresh, _) = TextIndex::replace_damaged(&self.dir, reason)?;
        *self.text.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(fresh);
        self.applied.store(0, Ordering::SeqCst);
        self.rebuilding.store(true, Ordering::SeqCst);
        self.verify.store(false, Ordering::SeqCst);
        self.set_state(IndexState::Rebuilding);
        *self.last_damage.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(format!("{}: {reason}", clock::now()));
        Ok(())
    }

    /// Repairs what readers reported, and on the first run checks an index found on disk
    /// against its checksums. The caller holds `index_lock`.
    fn repair_if_damaged(&self) -> Result<(), SearchError> {
        let reported = self.damage.lock().unwrap_or_else(|p| p.into_inner()).take();
        let reason = match reported {
            Some(r) => Some(r),
            None if self.verify.swap(false, Ordering::SeqCst) => {
                let damaged = self.text().damaged_files();
                (!damaged.is_empty())
                    .then(|| format!("checksum mismatch in {}", damaged.join(", ")))
            }
            None => None,
        };
        let Some(reason) = reason else {
            return Ok(());
        };
        self.replace_damaged(&reason).inspect_err(|_| {
            // Not repaired (no room for an empty index, say): the worker's retry tries again.
            *self.damage.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason.clone());
        })
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

    /// Asks the indexing worker to apply what the store queued, without waiting for it: a long
    /// write (a large ingest) calls this between its transactions, so indexing overlaps with
    /// writing instead of stalling it.
    pub fn kick_indexer(&self) {
        let (lock, cv) = &self.index_signal;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// The indexing worker: brings the index up to date, then again each time it is kicked.
    ///
    /// The index is the last stage of every write (ingest → store → outbox → index), so this
    /// worker is what notices a burst of work ending: once [`BURST_NOTES`] notes were reindexed
    /// (here or by a caller's catch-up, which then kicks this worker) and it has gone
    /// [`QUIET_AFTER_BURST`] without being kicked again, it gives the memory the burst used
    /// back ([`Search::release_memory`]). The wait is one timeout, not a poll: after it the
    /// worker sleeps until kicked. After a failure (a full disk, say) it tries again after
    /// [`RETRY_FIRST`], doubling up to [`RETRY_MAX`], without waiting for a kick.
    fn index_loop(&self) {
        let mut retry = RETRY_FIRST;
        loop {
            let failed = match self.bring_up_to_date() {
                Ok(()) => {
                    retry = RETRY_FIRST;
                    false
                }
                Err(e) => {
                    warn!(error = %e, "search index catch-up failed");
                    true
                }
            };
            if self.failpoint.as_deref() == Some("search_index_panic")
                && !self.failpoint_fired.swap(true, Ordering::SeqCst)
            {
                panic!("failpoint search_index_panic");
            }
            let (lock, cv) = &self.index_signal;
            let mut kicked = lock.lock().unwrap_or_else(|p| p.into_inner());
            if failed {
                let (guard, _) = cv
                    .wait_timeout_while(kicked, retry, |k| {
                        !*k && !self.stopping.load(Ordering::SeqCst)
                    })
                    .unwrap_or_else(|p| p.into_inner());
                kicked = guard;
                retry = (retry * 2).min(RETRY_MAX);
                *kicked = true;
            } else if self.burst.load(Ordering::SeqCst) >= BURST_NOTES {
                let (guard, _) = cv
                    .wait_timeout_while(kicked, QUIET_AFTER_BURST, |k| {
                        !*k && !self.stopping.load(Ordering::SeqCst)
                    })
                    .unwrap_or_else(|p| p.into_inner());
                kicked = guard;
                if !*kicked && !self.stopping.load(Ordering::SeqCst) {
                    drop(kicked);
                    self.burst.store(0, Ordering::SeqCst);
                    self.release_memory();
                    kicked = lock.lock().unwrap_or_else(|p| p.into_inner());
                }
            }
            while !*kicked && !self.stopping.load(Ordering::SeqCst) {
                kicked = cv.wait(kicked).unwrap_or_else(|p| p.into_inner());
            }
            *kicked = false;
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
        }
    }

    /// Gives back what a burst of work left behind: the store's page caches, then whatever
    /// the allocator holds free ([`crate::memory::release`]).
    fn release_memory(&self) {
        let started = Instant::now();
        self.store.release_memory();
        crate::memory::release();
        debug!(
            ms = started.elapsed().as_millis() as u64,
            "memory released after a burst of work"
        );
    }

    /// Repairs a damaged index, then runs a pending rebuild or catches up: the index reflects
    /// the store when it returns. A panic inside tantivy (a damaged file) is caught, reported
    /// as damage and returned as an error, so a caller's thread (an ingest) never unwinds.
    pub fn bring_up_to_date(&self) -> Result<(), SearchError> {
        let text = self.text();
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| {
            {
                let _lock = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
                self.repair_if_damaged()?;
            }
            if self.rebuilding.load(Ordering::SeqCst) {
                self.rebuild()?;
            } else {
                self.catch_up()?;
            }
            Ok(())
        }));
        match outcome {
            Ok(r) => r,
            Err(panic) => {
                let reason = format!(
                    "panic while indexing: {}",
                    crate::supervise::panic_message(panic.as_ref())
                );
                self.report_damage(&text, reason.clone());
                Err(SearchError::Index(IndexError::Panicked(reason)))
            }
        }
    }

    /// Applies every queued change to the index and commits. Returns the notes reindexed.
    /// Whichever thread fails (the worker, or an ingest catching up at its end), the state says
    /// so until a catch-up succeeds; both are decided under the index lock, so they cannot
    /// cross.
    pub fn catch_up(&self) -> Result<usize, SearchError> {
        let _lock = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        if self.rebuilding.load(Ordering::SeqCst) {
            // The rebuild owns the index until it is done; it applies the outbox too.
            return Ok(0);
        }
        let applied = self.apply_outbox();
        match &applied {
            Ok(_) if matches!(self.state(), IndexState::Failed(_)) => {
                self.set_state(IndexState::Ready)
            }
            Ok(_) => {}
            Err(e) => self.set_state(IndexState::Failed(e.to_string())),
        }
        applied
    }

    /// The body of [`Search::catch_up`]; the caller holds `index_lock`.
    fn apply_outbox(&self) -> Result<usize, SearchError> {
        let text = self.text();
        let mut total = 0;
        loop {
            let after = self.applied.load(Ordering::SeqCst);
            let (notes, head, docs) = self.store.read(|c| {
                let (notes, head) = index::outbox_after(c, after, APPLY_PAGE)?;
                let docs = index::load_docs(c, Some(&notes))?;
                Ok::<_, IndexError>((notes, head, docs))
            })?;
            if notes.is_empty() {
                break;
            }
            // A failed batch (a full disk, say) is dropped with its writer: the outbox still
            // holds it, and the next catch-up applies it whole with a new writer.
            text.with_writer(|writer| {
                for n in &notes {
                    text.delete_note(writer, n);
                }
                for d in &docs {
                    text.add(writer, d)?;
                }
                text.commit(writer, &self.payload(head))
            })
            .inspect_err(|e| self.damage_from_writer(e))?;
            self.applied.store(head, Ordering::SeqCst);
            self.after_commit(head, &notes, &docs, notes.len())?;
            total += notes.len();
        }
        Ok(total)
    }

    /// A writer error that says the index on disk is damaged (not merely a full disk) is
    /// reported, so the index is moved aside and rebuilt rather than retried for ever. An
    /// index folder removed or replaced under the daemon is damage whatever tantivy said
    /// (a lock file it cannot create, a segment it cannot write).
    fn damage_from_writer(&self, e: &IndexError) {
        use tantivy::TantivyError as T;
        let damaged = matches!(
            e,
            IndexError::Panicked(_)
                | IndexError::Tantivy(
                    T::DataCorruption(_) | T::OpenReadError(_) | T::IncompatibleIndex(_)
                )
        );
        let gone = !self.dir.join("meta.json").is_file();
        if damaged || gone {
            let reason = if gone && !damaged {
                format!("index folder gone or replaced ({e})")
            } else {
                e.to_string()
            };
            *self.damage.lock().unwrap_or_else(|p| p.into_inner()) = Some(reason);
        }
    }

    /// What a commit reflecting outbox position `seq` records.
    fn payload(&self, seq: i64) -> Payload {
        Payload {
            format: index::INDEX_FORMAT,
            store_id: self.store_id.clone(),
            seq,
        }
    }

    /// Rebuilds the index from scratch from the store's current chunks.
    pub fn rebuild(&self) -> Result<(usize, f64), SearchError> {
        let started = Instant::now();
        let lock = self.index_lock.lock().unwrap_or_else(|p| p.into_inner());
        // An index that cannot be written at all is replaced first: `search.reindex` works
        // on a damaged index too.
        self.repair_if_damaged()?;
        self.rebuilding.store(true, Ordering::SeqCst);
        self.set_state(IndexState::Rebuilding);
        let text = self.text();
        let result = (|| {
            // One read transaction: the chunks and the outbox head are the same snapshot, so
            // nothing written meanwhile is missed (it lands in the outbox after `head`).
            // The documents go to the writer as they are read, so a rebuild holds one at a
            // time (the writer flushes at its memory budget), whatever the store's size.
            let (head, count) = self
                .store
                .read(|c| {
                    let tx = c.unchecked_transaction()?;
                    let head = index::outbox_head(&tx)?;
                    let count = text.with_writer(|writer| {
                        writer.delete_all_documents()?;
                        let mut count = 0;
                        index::each_doc(&tx, None, &mut |d| {
                            count += 1;
                            text.add(writer, &d)
                        })?;
                        text.commit(writer, &self.payload(head))?;
                        Ok(count)
                    })?;
                    tx.finish()?;
                    Ok::<_, IndexError>((head, count))
                })
                .inspect_err(|e| self.damage_from_writer(e))?;
            self.applied.store(head, Ordering::SeqCst);
            self.after_commit(head, &[], &[], count)?;
            Ok::<_, SearchError>(count)
        })();
        let chunks = match result {
            Ok(c) => c,
            Err(e) => {
                // Back to the last commit (the writer was dropped with the batch); the rebuild
                // stays pending and the worker tries again.
                self.set_state(IndexState::Failed(e.to_string()));
                return Err(e);
            }
        };
        self.rebuilding.store(false, Ordering::SeqCst);
        self.set_state(IndexState::Ready);
        drop(lock);
        let secs = started.elapsed().as_secs_f64();
        info!(chunks, secs, "search index rebuilt");
        // What arrived while rebuilding.
        self.catch_up()?;
        Ok((chunks, secs))
    }

    /// After a commit: trim the outbox, record the generation, drop vectors of retired chunks,
    /// and wake the embedder.
    /// After a commit reflecting `head`: the outbox is trimmed, vectors of `notes`' chunks not
    /// among `docs` are dropped, and the `work` done counts towards a burst.
    fn after_commit(
        &self,
        head: i64,
        notes: &[String],
        docs: &[ChunkDoc],
        work: usize,
    ) -> Result<(), SearchError> {
        self.store.write(|tx| {
            tx.execute("DELETE FROM search_outbox WHERE seq <= ?1", [head])?;
            store::meta_set(tx, "search.index_seq", &head.to_string())
        })?;
        if !notes.is_empty() {
            let notes: HashSet<String> = notes.iter().cloned().collect();
            let current: HashSet<String> = docs.iter().map(|d| d.chunk_id.clone()).collect();
            if let Some(m) = self
                .model
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
            {
                m.vectors.retire_missing(&notes, &current);
            }
        }
        self.kick_embedder();
        // Count the work towards a burst; crossing the mark wakes the indexing worker (this
        // commit may have been a caller's catch-up), which gives memory back once all is quiet.
        let before = self.burst.fetch_add(work, Ordering::SeqCst);
        if before < BURST_NOTES && before + work >= BURST_NOTES {
            self.kick_indexer();
        }
        Ok(())
    }

    /// Makes `embedder` the active model: loads its stored vectors and lets the worker embed
    /// what is missing.
    pub fn set_model(&self, embedder: Arc<dyn Embed>) -> Result<(), SearchError> {
        let vectors = self
            .store
            .read(|c| Vectors::load(c, embedder.model_id(), embedder.dim()))?;
        info!(
            model = embedder.model_id(),
            vectors = vectors.len(),
            "embedding model active"
        );
        *self.model.write().unwrap_or_else(|p| p.into_inner()) = Some(Model { embedder, vectors });
        *self.model_state.lock().unwrap_or_else(|p| p.into_inner()) = "ready".into();
        self.kick_embedder();
        Ok(())
    }

    pub fn set_model_state(&self, s: &str) {
        *self.model_state.lock().unwrap_or_else(|p| p.into_inner()) = s.into();
    }

    pub fn has_vectors(&self) -> bool {
        self.model
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|m| !m.vectors.is_empty())
    }

    fn kick_embedder(&self) {
        let (lock, cv) = &self.embed_signal;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        cv.notify_all();
    }

    /// The embedding worker: sleeps until kicked, then embeds every current chunk that has no
    /// vector for the active model, a batch per transaction, and sleeps again. Resumable by
    /// construction: what is done is in the store.
    fn embed_loop(&self) {
        lower_thread_priority();
        // Half the cores (at least one), at low priority: embedding never starves queries.
        let threads = std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1));
        let pool = match crate::embed::worker_pool(threads) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot start the embedding pool");
                self.set_model_state(&format!("error: {e}"));
                return;
            }
        };
        // A start after a panic picks up what the last run left undone, without waiting for
        // the next change.
        self.kick_embedder();
        loop {
            {
                let (lock, cv) = &self.embed_signal;
                let mut kicked = lock.lock().unwrap_or_else(|p| p.into_inner());
                while !*kicked {
                    kicked = cv.wait(kicked).unwrap_or_else(|p| p.into_inner());
                }
                *kicked = false;
            }
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            loop {
                if self.stopping.load(Ordering::SeqCst) {
                    return;
                }
                match pool.install(|| self.embed_batch(EMBED_BATCH)) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => {
                        warn!(error = %e, "embedding failed; will retry on the next change");
                        self.set_model_state(&format!("error: {e}"));
                        break;
                    }
                }
            }
        }
    }

    /// Embeds up to `n` chunks lacking a vector. Returns how many were embedded.
    pub fn embed_batch(&self, n: usize) -> Result<usize, SearchError> {
        let Some(embedder) = self
            .model
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|m| m.embedder.clone())
        else {
            return Ok(0);
        };
        let model_id = embedder.model_id().to_owned();
        let todo: Vec<(String, String, String)> = self.store.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT c.id, c.parent_id, COALESCE(n.title, ''), c.props, COALESCE(c.content, '')
                 FROM nodes c JOIN nodes n ON n.id = c.parent_id
                 WHERE c.kind = 'chunk' AND c.valid_to IS NULL
                   AND NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.node_id = c.id AND e.model_id = ?1)
                 LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![model_id, n as i64], |r| {
                let props: String = r.get(3)?;
                let text = embed_text(&r.get::<_, String>(2)?, &props, &r.get::<_, String>(4)?);
                Ok((r.get(0)?, r.get::<_, Option<String>>(1)?.unwrap_or_default(), text))
            })?;
            rows.collect::<Result<Vec<_>, _>>()
        })?;
        if todo.is_empty() {
            return Ok(0);
        }
        if self.failpoint.as_deref() == Some("embed_panic")
            && !self.failpoint_fired.swap(true, Ordering::SeqCst)
        {
            panic!("failpoint embed_panic");
        }
        let texts: Vec<&str> = todo.iter().map(|t| t.2.as_str()).collect();
        let vecs = embedder
            .embed_passages(&texts)
            .map_err(SearchError::Embed)?;
        let now = clock::now();
        let dim = embedder.dim();
        self.store.write(|tx| {
            let mut ins = tx.prepare_cached(
                "INSERT OR REPLACE INTO embeddings(node_id, model_id, dim, vector, content_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?;
            for ((id, _, text), v) in todo.iter().zip(&vecs) {
                let hash = blake3::hash(text.as_bytes()).to_hex().to_string();
                ins.execute(params![id, model_id, dim as i64, vectors::encode(v), hash, now])?;
            }
            Ok::<_, rusqlite::Error>(())
        })?;
        if let Some(m) = self
            .model
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            && m.embedder.model_id() == model_id
        {
            for ((id, note, _), v) in todo.iter().zip(&vecs) {
                m.vectors.insert(id.clone(), note.clone(), v);
            }
        }
        Ok(todo.len())
    }

    pub fn status(&self) -> Result<SearchStatus, SearchError> {
        let (head, total) = self.store.read(|c| {
            let head = index::outbox_head(c)?;
            let total: i64 = c.query_row(
                "SELECT COUNT(*) FROM nodes WHERE kind = 'chunk' AND valid_to IS NULL",
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
        let filter = text.filter_query(&req.filters)?;
        // What the index cannot answer because it is damaged is left out, with a warning; the
        // worker replaces the index and rebuilds it meanwhile.
        let mut damaged = false;
        // The chunks the filters allow, for the signals that do not come from the index
        // (dense vectors, graph neighbours); computed once per query.
        budget.check("filtering")?;
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
                "SELECT ch.id, ch.parent_id FROM nodes ch
                 JOIN nodes n ON n.id = ch.parent_id AND n.valid_to IS NULL
                 WHERE ch.kind = 'chunk' AND ch.valid_to IS NULL
                   AND (ch.content LIKE ?1 ESCAPE '\\' OR n.title LIKE ?1 ESCAPE '\\')
                 LIMIT ?2",
            )?;
            for w in &words {
                budget.check("the text search")?;
                let pattern = format!("%{}%", crate::graph::escape_like(w));
                let rows = stmt.query_map(params![pattern, FALLBACK_ROWS], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
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
                        // A chunk's span is kept on it, or in a provenance row for chunks
                        // ingested before schema/0007.
                        "SELECT c.id FROM nodes c
                         LEFT JOIN provenance p
                           ON c.cite_version IS NULL AND p.node_id = c.id AND p.valid_to IS NULL
                         WHERE c.parent_id = ?1 AND c.kind = 'chunk' AND c.valid_to IS NULL
                         ORDER BY coalesce(c.cite_byte_start, p.byte_start) LIMIT 1",
                        [note],
                        |r| r.get(0),
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
struct Candidate {
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
fn coverage(matches: &[(String, String, f32)], vectors: &Vectors) -> VectorCoverage {
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
fn fuse(
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

/// The text a chunk is embedded as: its note's title and heading path give it context.
pub fn embed_text(title: &str, chunk_props: &str, content: &str) -> String {
    let heading = index::heading_path(chunk_props);
    let mut s = String::with_capacity(title.len() + content.len() + 8);
    s.push_str(title);
    for h in heading {
        if h != title {
            s.push_str(" / ");
            s.push_str(&h);
        }
    }
    s.push('\n');
    s.push_str(content);
    s
}

/// Reads what a hit shows; `None` when the chunk is no longer current. The snippet field is
/// filled with the chunk's whole text, cut down by the caller.
fn hydrate(c: &Connection, chunk_id: &str) -> rusqlite::Result<Option<Hit>> {
    c.prepare_cached(
        "SELECT ch.parent_id, n.title, ch.content, ch.props,
                coalesce(ch.cite_byte_start, p.byte_start), coalesce(ch.cite_byte_end, p.byte_end),
                coalesce(ch.cite_line_start, p.line_start), coalesce(ch.cite_line_end, p.line_end),
                coalesce(v.content_hash, p.content_hash), r.path, s.rel_path
         FROM nodes ch
         JOIN nodes n ON n.id = ch.parent_id AND n.valid_to IS NULL
         JOIN sources s ON s.id = ch.source_id
         JOIN roots r ON r.id = s.root_id
         LEFT JOIN source_versions v ON v.id = ch.cite_version
         LEFT JOIN provenance p
           ON ch.cite_version IS NULL AND p.node_id = ch.id AND p.valid_to IS NULL
         WHERE ch.id = ?1 AND ch.valid_to IS NULL
         LIMIT 1",
    )?
    .query_row([chunk_id], |r| {
        let props: String = r.get(3)?;
        let heading_path = index::heading_path(&props);
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
        })
    })
    .optional()
}

/// A window of `text` around the query's words, with their ranges; the start of the text when
/// no word matches (a dense-only hit).
fn snippet_for(
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
    use super::*;

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
    fn a_hit_cites_its_chunk_whether_the_span_is_kept_on_it_or_in_a_provenance_row() {
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
                     INSERT INTO nodes(id, kind, key, content, source_id, parent_id, owner_id, valid_from, created_at, updated_at,
                                       cite_version, cite_byte_start, cite_byte_end, cite_line_start, cite_line_end)
                         VALUES ('kept', 'chunk', 'k', 'one', 1, 'n', 'user:u', 't', 't', 't', 1, 10, 20, 3, 4);
                     -- Ingested before schema/0007: the span is a provenance row.
                     INSERT INTO nodes(id, kind, key, content, source_id, parent_id, owner_id, valid_from, created_at, updated_at)
                         VALUES ('old', 'chunk', 'o', 'two', 1, 'n', 'user:u', 't', 't', 't');
                     INSERT INTO provenance(node_id, source_id, byte_start, byte_end, line_start, line_end,
                                            content_hash, extractor, extractor_version, actor_id, recorded_at)
                         VALUES ('old', 1, 30, 40, 6, 7, 'old', 'brain-parse', '1', 'user:u', 't');",
                )
            })
            .unwrap();
        let (kept, old) = store
            .read(|c| Ok::<_, rusqlite::Error>((hydrate(c, "kept")?, hydrate(c, "old")?)))
            .unwrap();
        let (kept, old) = (kept.unwrap(), old.unwrap());
        assert_eq!((kept.bytes, kept.lines), ([10, 20], [3, 4]));
        assert_eq!(kept.content_hash, "new");
        assert_eq!((old.bytes, old.lines), ([30, 40], [6, 7]));
        assert_eq!(old.content_hash, "old");
        assert_eq!(kept.path, "/v/a.md");
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
        let t = embed_text(
            "Tomatoes",
            r#"{"heading_path":["Tomatoes","Watering"]}"#,
            "daily",
        );
        assert_eq!(t, "Tomatoes / Watering\ndaily");
    }
}
