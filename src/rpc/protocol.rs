//! Wire types: every shape a client sees, and the conversions from engine types.
//!
//! Architecture Invariant: engine types are never serialized directly; they are converted here,
//! so renaming a field inside the engine cannot break a client.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::brain::Status;
use crate::error::{Error, Kind};
use crate::graph::{EdgeView, NodeView, Provenance, SourceView, Subgraph, TitleHit};
use crate::ingest::{RootInfo, SyncReport};
use crate::store::UserRow;

pub mod history;
pub mod methods;
pub mod recent;
pub mod workflow;
pub mod write;

pub use methods::Method;

pub const JSONRPC: &str = "2.0";

/// A parsed request. `id` is `None` for a notification (no answer is sent).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Option<Value>,
    pub method: String,
    pub params: Value,
}

/// Parses one line. On failure returns the id to answer with (null when unknown) and the error.
pub fn parse_request(line: &[u8]) -> Result<Request, (Value, Error)> {
    let value: Value = serde_json::from_slice(line).map_err(|e| {
        (
            Value::Null,
            Error::new(Kind::ParseError, format!("invalid JSON: {e}")),
        )
    })?;
    let Value::Object(mut obj) = value else {
        let what = if value.is_array() {
            "batch requests are not supported; send one object per line"
        } else {
            "a request must be a JSON object"
        };
        return Err((Value::Null, Error::new(Kind::InvalidRequest, what)));
    };
    let id = obj.remove("id");
    let answer_id = id.clone().unwrap_or(Value::Null);
    let invalid = |msg: &str| (answer_id.clone(), Error::new(Kind::InvalidRequest, msg));
    if let Some(id) = &id
        && !(id.is_string() || id.is_number() || id.is_null())
    {
        return Err((
            Value::Null,
            Error::new(Kind::InvalidRequest, "id must be a string, number or null"),
        ));
    }
    if obj.get("jsonrpc").and_then(Value::as_str) != Some(JSONRPC) {
        return Err(invalid("\"jsonrpc\" must be \"2.0\""));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => return Err(invalid("\"method\" must be a non-empty string")),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(p @ (Value::Object(_) | Value::Array(_))) => p,
        Some(_) => return Err(invalid("\"params\" must be an object or an array")),
    };
    Ok(Request { id, method, params })
}

/// The notification a long `ingest.path` sends, with [`ProgressWire`] params.
pub const INGEST_PROGRESS: &str = "ingest.progress";

/// The notification `workflow.events` with `follow` sends, with [`workflow::EventWire`] params.
pub const WORKFLOW_EVENT: &str = "workflow.event";

/// A notification (no id, no answer expected).
pub fn notification<P: Serialize>(method: &str, params: &P) -> Value {
    json!({ "jsonrpc": JSONRPC, "method": method, "params": params })
}

/// A request line's object.
pub fn request<P: Serialize>(id: u64, method: &str, params: &P) -> Value {
    json!({ "jsonrpc": JSONRPC, "id": id, "method": method, "params": params })
}

pub fn ok_response(id: Value, result: Value) -> Value {
    json!({ "jsonrpc": JSONRPC, "id": id, "result": result })
}

pub fn error_response(id: Value, e: &Error) -> Value {
    json!({
        "jsonrpc": JSONRPC,
        "id": id,
        "error": { "code": e.kind.code(), "message": e.message, "data": { "kind": e.kind.as_str() } },
    })
}

/// Decodes params into a method's parameter type, as an `invalid_params` error on mismatch.
pub fn params<T: serde::de::DeserializeOwned>(method: &str, v: Value) -> Result<T, Error> {
    serde_json::from_value(v).map_err(|e| {
        Error::new(
            Kind::InvalidParams,
            format!("invalid params for {method}: {e}"),
        )
    })
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ShutdownResult {
    pub stopping: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TitleSearchResult {
    pub hits: Vec<TitleHitWire>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ModelUseResult {
    pub active: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ModelRemoveResult {
    pub removed: String,
}

/// Which edges of a node to follow: parsed here once, for the socket and `Graph_` steps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DirectionWire {
    Out,
    In,
    #[default]
    Both,
}

impl From<DirectionWire> for crate::graph::Direction {
    fn from(d: DirectionWire) -> Self {
        match d {
            DirectionWire::Out => crate::graph::Direction::Out,
            DirectionWire::In => crate::graph::Direction::In,
            DirectionWire::Both => crate::graph::Direction::Both,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IdentityIdParams {
    pub email: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct IdentityIdResult {
    pub id: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CountsWire {
    pub users: i64,
    pub nodes: std::collections::BTreeMap<String, i64>,
    pub edges: std::collections::BTreeMap<String, i64>,
    pub sources: std::collections::BTreeMap<String, i64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct StatusWire {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: f64,
    pub data_dir: String,
    pub store_path: String,
    pub store_bytes: u64,
    pub schema_version: u32,
    pub user_id: String,
    pub user_email: String,
    pub counts: CountsWire,
    pub watcher: WatcherWire,
    pub search: SearchStatusWire,
    pub memory: MemoryWire,
    /// Supervised worker threads: a panic is caught, counted here, and the worker restarts.
    #[serde(default)]
    pub workers: Vec<WorkerWire>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WorkerWire {
    pub name: String,
    pub restarts: u64,
    pub last_panic: Option<String>,
    pub last_panic_at: Option<String>,
}

/// The daemon's memory: resident now and at its peak (absent off Linux), and how many times it
/// gave memory back after a burst of work.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct MemoryWire {
    pub resident_bytes: Option<u64>,
    pub peak_resident_bytes: Option<u64>,
    pub releases: u64,
}

/// The text index and the embedding progress.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SearchStatusWire {
    /// `ready`, `rebuilding` or `error: ...`.
    pub index_state: String,
    pub indexed_chunks: u64,
    /// The store change (outbox sequence number) the index reflects, and the newest one.
    pub index_seq: i64,
    pub outbox_head: i64,
    pub model: Option<String>,
    /// `none`, `loading`, `ready` or `error: ...`.
    pub model_state: String,
    pub embedded_chunks: usize,
    pub total_chunks: u64,
    /// When the index was last found damaged and replaced (it is rebuilt from the store), and
    /// why; `null` if never in this process.
    pub last_damage: Option<String>,
}

/// Unwatched folders listed in `daemon.status`: out of inotify watches, every folder past the
/// limit fails, and a status answer must stay small.
pub const UNWATCHED_LISTED: usize = 50;

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WatcherWire {
    /// `watching`, `idle` (no roots), `unavailable` (the OS refused a watch), `retrying` (a sync
    /// failed, e.g. for lack of space, and is retried) or `missing_root` (see `missing`).
    pub state: String,
    pub roots: Vec<String>,
    /// Watched roots not on disk now; their notes are kept as last seen.
    pub missing: Vec<String>,
    /// Folders inside watched roots that could not be watched (no permission, out of inotify
    /// watches): changes there are seen only on the next full sync. At most
    /// [`UNWATCHED_LISTED`]; `unwatched_count` says how many there are.
    #[serde(default)]
    pub unwatched: Vec<String>,
    #[serde(default)]
    pub unwatched_count: usize,
    pub queue_depth: usize,
    pub busy: bool,
    /// Why the watcher is unavailable, or why syncs are failing (and being retried).
    pub error: Option<String>,
}

impl From<Status> for StatusWire {
    fn from(s: Status) -> StatusWire {
        StatusWire {
            version: s.version.to_owned(),
            pid: s.pid,
            uptime_secs: s.uptime_secs,
            data_dir: s.data_dir.display().to_string(),
            store_path: s.store_path.display().to_string(),
            store_bytes: s.store_bytes,
            schema_version: s.schema_version,
            user_id: s.user_id.to_string(),
            user_email: s.user_email,
            counts: CountsWire {
                users: s.counts.users,
                nodes: s.counts.nodes,
                edges: s.counts.edges,
                sources: s.counts.sources,
            },
            watcher: WatcherWire {
                state: if s.worker.watcher_error.is_some() {
                    "unavailable"
                } else if s.worker.sync_error.is_some() {
                    "retrying"
                } else if !s.worker.missing.is_empty() {
                    "missing_root"
                } else if s.worker.watching.is_empty() {
                    "idle"
                } else {
                    "watching"
                }
                .into(),
                roots: s
                    .worker
                    .watching
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                missing: s
                    .worker
                    .missing
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect(),
                unwatched: s
                    .worker
                    .unwatched
                    .iter()
                    .take(UNWATCHED_LISTED)
                    .map(|p| p.display().to_string())
                    .collect(),
                unwatched_count: s.worker.unwatched.len(),
                queue_depth: s.worker.queue_depth,
                busy: s.worker.busy,
                error: s.worker.watcher_error.or(s.worker.sync_error),
            },
            search: SearchStatusWire {
                index_state: s.search.index_state,
                indexed_chunks: s.search.indexed_chunks,
                index_seq: s.search.index_seq,
                outbox_head: s.search.outbox_head,
                model: s.search.model,
                model_state: s.search.model_state,
                embedded_chunks: s.search.embedded_chunks,
                total_chunks: s.search.total_chunks,
                last_damage: s.search.last_damage,
            },
            memory: MemoryWire {
                resident_bytes: s.memory.map(|m| m.0),
                peak_resident_bytes: s.memory.map(|m| m.1),
                releases: s.memory_releases,
            },
            workers: s
                .workers
                .into_iter()
                .map(|w| WorkerWire {
                    name: w.name,
                    restarts: w.restarts,
                    last_panic: w.last_panic,
                    last_panic_at: w.last_panic_at,
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct UserWire {
    pub id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub created_at: String,
}

impl From<UserRow> for UserWire {
    fn from(u: UserRow) -> UserWire {
        UserWire {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            created_at: u.created_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct UserListResult {
    pub users: Vec<UserWire>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ProvenanceWire {
    pub path: Option<String>,
    pub lines: Option<[u32; 2]>,
    pub bytes: Option<[u64; 2]>,
    pub content_hash: Option<String>,
    pub extractor: String,
    pub extractor_version: String,
    pub actor_id: String,
    pub run_id: Option<String>,
    pub step_key: Option<String>,
    pub recorded_at: String,
}

impl From<Provenance> for ProvenanceWire {
    fn from(p: Provenance) -> Self {
        ProvenanceWire {
            path: p.path,
            lines: p.lines.map(|(a, b)| [a, b]),
            bytes: p.bytes.map(|(a, b)| [a, b]),
            content_hash: p.content_hash,
            extractor: p.extractor,
            extractor_version: p.extractor_version,
            actor_id: p.actor_id,
            run_id: p.run_id,
            step_key: p.step_key,
            recorded_at: p.recorded_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct NodeWire {
    pub id: String,
    pub kind: String,
    pub key: String,
    pub title: Option<String>,
    pub path: Option<String>,
    pub aliases: Vec<String>,
    pub props: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    pub parent_id: Option<String>,
    pub owner_id: String,
    pub valid_from: String,
    pub valid_to: Option<String>,
    pub provenance: Vec<ProvenanceWire>,
}

impl From<NodeView> for NodeWire {
    fn from(n: NodeView) -> Self {
        NodeWire {
            id: n.id,
            kind: n.kind,
            key: n.key,
            title: n.title,
            path: n.path,
            aliases: n.aliases,
            props: n.props,
            content: n.content,
            parent_id: n.parent_id,
            owner_id: n.owner_id,
            valid_from: n.valid_from,
            valid_to: n.valid_to,
            provenance: n.provenance.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct EdgeWire {
    pub id: String,
    pub src_id: String,
    pub dst_id: String,
    #[serde(rename = "type")]
    pub edge_type: String,
    pub props: Value,
    pub created_by: String,
    pub provenance: Vec<ProvenanceWire>,
}

impl From<EdgeView> for EdgeWire {
    fn from(e: EdgeView) -> Self {
        EdgeWire {
            id: e.id,
            src_id: e.src_id,
            dst_id: e.dst_id,
            edge_type: e.edge_type,
            props: e.props,
            created_by: e.created_by,
            provenance: e.provenance.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SubgraphWire {
    pub nodes: Vec<NodeWire>,
    pub edges: Vec<EdgeWire>,
}

impl From<Subgraph> for SubgraphWire {
    fn from(g: Subgraph) -> Self {
        SubgraphWire {
            nodes: g.nodes.into_iter().map(Into::into).collect(),
            edges: g.edges.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeGetParams {
    pub id: Option<String>,
    pub path: Option<String>,
    pub title: Option<String>,
    /// RFC 3339 UTC (`2026-12-07T10:00:00Z`): the node as it was then. Not in the future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// A retired node answers with its last version instead of `node_not_found`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_retired: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchTitleParams {
    pub query: String,
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TitleHitWire {
    pub id: String,
    pub kind: String,
    pub title: Option<String>,
    pub path: Option<String>,
    pub matched: String,
    pub score: f64,
}

impl From<TitleHit> for TitleHitWire {
    fn from(h: TitleHit) -> Self {
        TitleHitWire {
            id: h.node.id,
            kind: h.node.kind,
            title: h.node.title,
            path: h.node.path,
            matched: h.matched,
            score: h.score,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NeighborsParams {
    pub id: String,
    #[serde(default)]
    pub direction: DirectionWire,
    #[serde(default)]
    pub edge_types: Vec<String>,
    pub depth: Option<u32>,
    pub limit: Option<usize>,
    /// RFC 3339 UTC: the graph as it was then (stored edges only, no sections or chunks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BacklinksParams {
    pub id: String,
    pub limit: Option<usize>,
    /// RFC 3339 UTC: the graph as it was then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SourceListParams {
    pub status: Option<String>,
    pub root: Option<String>,
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SourceWire {
    pub id: i64,
    pub root: String,
    pub path: String,
    pub rel_path: String,
    pub file_type: String,
    pub status: String,
    pub reason: Option<String>,
    pub size: Option<i64>,
    pub content_hash: Option<String>,
    pub diagnostics: Value,
    pub indexed_at: Option<String>,
    pub last_seen_at: String,
}

impl From<SourceView> for SourceWire {
    fn from(s: SourceView) -> Self {
        SourceWire {
            id: s.id,
            root: s.root,
            path: s.path,
            rel_path: s.rel_path,
            file_type: s.file_type,
            status: s.status.as_str().to_owned(),
            reason: s.reason,
            size: s.size,
            content_hash: s.content_hash,
            diagnostics: s.diagnostics,
            indexed_at: s.indexed_at,
            last_seen_at: s.last_seen_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SourceListResult {
    pub sources: Vec<SourceWire>,
    pub total: u64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathParams {
    pub path: String,
}

/// `watch.remove`: `purge` also deletes what the root's files said (see `ingest::purge`).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchRemoveParams {
    pub path: String,
    #[serde(default)]
    pub purge: bool,
}

/// `watch.remove`'s answer: the root as it was, and with `purge` what was deleted.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WatchRemoveResult {
    #[serde(flatten)]
    pub root: RootWire,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged: Option<PurgedWire>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct PurgedWire {
    pub nodes: u64,
    pub edges: u64,
    pub sources: u64,
}

impl From<crate::ingest::purge::Purged> for PurgedWire {
    fn from(p: crate::ingest::purge::Purged) -> Self {
        PurgedWire {
            nodes: p.nodes,
            edges: p.edges,
            sources: p.sources,
        }
    }
}

/// `store.compact`: the database plus its write-ahead log, before and after.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CompactResult {
    pub bytes_before: u64,
    pub bytes_after: u64,
}

impl From<crate::store::history::Compaction> for CompactResult {
    fn from(c: crate::store::history::Compaction) -> Self {
        CompactResult {
            bytes_before: c.bytes_before,
            bytes_after: c.bytes_after,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RootWire {
    pub id: i64,
    pub path: String,
    pub watched: bool,
    pub added_at: String,
}

impl From<RootInfo> for RootWire {
    fn from(r: RootInfo) -> Self {
        RootWire {
            id: r.id,
            path: r.path.display().to_string(),
            watched: r.watched,
            added_at: r.added_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WatchListResult {
    pub roots: Vec<RootWire>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SyncReportWire {
    pub seen: u64,
    pub indexed: u64,
    pub unchanged: u64,
    pub skipped: u64,
    pub failed: u64,
    pub deleted: u64,
    pub moved: u64,
    pub reresolved: u64,
    pub bytes: u64,
    pub elapsed_ms: u64,
}

impl From<SyncReport> for SyncReportWire {
    fn from(r: SyncReport) -> Self {
        SyncReportWire {
            seen: r.seen,
            indexed: r.indexed,
            unchanged: r.unchanged,
            skipped: r.skipped,
            failed: r.failed,
            deleted: r.deleted,
            moved: r.moved,
            reresolved: r.reresolved,
            bytes: r.bytes,
            elapsed_ms: r.elapsed_ms,
        }
    }
}

/// `ingest.progress` notification params.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ProgressWire {
    pub done: u64,
    pub total: u64,
    pub bytes: u64,
    pub path: String,
}

/// `workflow.validate` params: a document inline or a file the daemon can read.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkflowSourceParams {
    pub definition: Option<Value>,
    pub path: Option<String>,
    #[serde(default)]
    pub strict: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct DiagnosticWire {
    pub code: String,
    pub severity: String,
    pub step_id: Option<String>,
    pub path: String,
    pub message: String,
}

impl From<crate::workflow::Diagnostic> for DiagnosticWire {
    fn from(d: crate::workflow::Diagnostic) -> Self {
        DiagnosticWire {
            code: d.code.to_owned(),
            severity: match d.severity {
                crate::workflow::Severity::Error => "error",
                crate::workflow::Severity::Warning => "warning",
            }
            .to_owned(),
            step_id: d.step_id,
            path: d.path,
            message: d.message,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ValidateResult {
    pub valid: bool,
    pub errors: Vec<DiagnosticWire>,
    pub warnings: Vec<DiagnosticWire>,
}

impl ValidateResult {
    pub fn from_report(r: crate::workflow::Report, strict: bool) -> Self {
        ValidateResult {
            valid: r.is_valid(strict),
            errors: r.errors.into_iter().map(Into::into).collect(),
            warnings: r.warnings.into_iter().map(Into::into).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_err(line: &str, kind: Kind, id: Value) {
        let (got_id, e) = parse_request(line.as_bytes()).unwrap_err();
        assert_eq!(e.kind, kind, "{line}: {}", e.message);
        assert_eq!(got_id, id, "{line}");
    }

    #[test]
    fn malformed_requests() {
        check_err("not json", Kind::ParseError, Value::Null);
        check_err("{\"jsonrpc\":\"2.0\",", Kind::ParseError, Value::Null);
        check_err("[1,2]", Kind::InvalidRequest, Value::Null);
        check_err("42", Kind::InvalidRequest, Value::Null);
        check_err(r#"{"id":1,"method":"x"}"#, Kind::InvalidRequest, json!(1));
        check_err(
            r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
            Kind::InvalidRequest,
            json!(1),
        );
        check_err(
            r#"{"jsonrpc":"2.0","id":"a","method":7}"#,
            Kind::InvalidRequest,
            json!("a"),
        );
        check_err(
            r#"{"jsonrpc":"2.0","id":2,"method":"x","params":3}"#,
            Kind::InvalidRequest,
            json!(2),
        );
        check_err(
            r#"{"jsonrpc":"2.0","id":{},"method":"x"}"#,
            Kind::InvalidRequest,
            Value::Null,
        );
    }

    #[test]
    fn well_formed_requests() {
        let r = parse_request(br#"{"jsonrpc":"2.0","id":7,"method":"daemon.status"}"#).unwrap();
        assert_eq!(r.id, Some(json!(7)));
        assert_eq!(r.method, "daemon.status");
        assert_eq!(r.params, json!({}));
        let n = parse_request(br#"{"jsonrpc":"2.0","method":"x","params":[1]}"#).unwrap();
        assert_eq!(n.id, None);
        assert_eq!(n.params, json!([1]));
    }

    #[test]
    fn error_responses_carry_kind_and_code() {
        let v = error_response(
            json!(3),
            &Error::new(Kind::MethodNotFound, "no such method"),
        );
        assert_eq!(v["error"]["code"], -32601);
        assert_eq!(v["error"]["data"]["kind"], "method_not_found");
        assert_eq!(v["id"], 3);
    }
}

use crate::search::{self, SearchError};

/// `search.query` parameters as they arrive on the wire (and in `Search_` workflow steps).
#[derive(Debug, Clone, Serialize, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    #[serde(default)]
    pub filters: SearchFilters,
    #[serde(default)]
    pub explain: bool,
    /// Add graph proximity (links and shared tags of the top notes) as a signal.
    #[serde(default)]
    pub graph: bool,
    /// `note` (default: the best chunk per note) or `chunk`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SearchFilters {
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

impl SearchParams {
    /// Checks the parameters and turns them into a request.
    pub fn into_request(self) -> Result<search::Request, SearchError> {
        let bad = |m: String| SearchError::InvalidParams(m);
        if self.query.trim().is_empty() {
            return Err(bad("query must not be empty".into()));
        }
        let mode = self.mode.as_deref().map(search::Mode::parse).transpose()?;
        let time = |v: &Option<Value>, name: &str| -> Result<Option<i64>, SearchError> {
            match v {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Number(n)) => n
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| bad(format!("{name} must be whole seconds"))),
                Some(Value::String(s)) => Ok(Some(search::parse_time(s)?)),
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
        if k == 0 || k > search::MAX_K {
            return Err(bad(format!("k must be between 1 and {}", search::MAX_K)));
        }
        Ok(search::Request {
            query: self.query,
            mode,
            k,
            filters: search::index::Filters {
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

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SignalWire {
    pub rank: usize,
    pub score: f32,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ExplainWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bm25: Option<SignalWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense: Option<SignalWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graph: Option<SignalWire>,
    pub fused: f32,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SearchHitWire {
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
    pub highlights: Vec<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explain: Option<ExplainWire>,
    /// For a node a client or workflow wrote (no file, so `path` is empty): the write that
    /// stated the text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written_by: Option<WrittenByWire>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WrittenByWire {
    /// `client:LABEL` (`client:claude-desktop`), `client`, or `workflow`.
    pub extractor: String,
    pub actor_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub recorded_at: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct SearchResultWire {
    pub mode: String,
    pub hits: Vec<SearchHitWire>,
    pub total: usize,
    pub took_ms: f64,
    pub warnings: Vec<String>,
    /// With a model: how many of the notes the words matched had vectors when the query ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vectors: Option<VectorCoverageWire>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct VectorCoverageWire {
    pub matching_notes: usize,
    pub with_vectors: usize,
    /// `with_vectors / matching_notes`.
    pub share: f64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ReindexResult {
    pub chunks: usize,
    pub secs: f64,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelAddParams {
    pub name: String,
    pub path: String,
    #[serde(default)]
    pub link: bool,
    #[serde(default)]
    pub activate: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ModelNameParams {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ModelWire {
    pub name: String,
    pub path: String,
    pub linked: bool,
    pub active: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ModelListResult {
    pub models: Vec<ModelWire>,
}

impl From<crate::search::Signal> for SignalWire {
    fn from(s: crate::search::Signal) -> Self {
        SignalWire {
            rank: s.rank,
            score: s.score,
        }
    }
}

impl From<crate::search::Hit> for SearchHitWire {
    fn from(h: crate::search::Hit) -> Self {
        SearchHitWire {
            node_id: h.node_id,
            chunk_id: h.chunk_id,
            title: h.title,
            path: h.path,
            lines: h.lines,
            bytes: h.bytes,
            content_hash: h.content_hash,
            heading_path: h.heading_path,
            score: h.score,
            snippet: h.snippet,
            highlights: h.highlights,
            explain: h.explain.map(|e| ExplainWire {
                bm25: e.bm25.map(Into::into),
                dense: e.dense.map(Into::into),
                graph: e.graph.map(Into::into),
                fused: e.fused,
            }),
            written_by: h.written.map(|w| WrittenByWire {
                extractor: w.extractor,
                actor_id: w.actor_id,
                run_id: w.run_id,
                recorded_at: w.recorded_at,
            }),
        }
    }
}

impl From<crate::search::Response> for SearchResultWire {
    fn from(r: crate::search::Response) -> Self {
        SearchResultWire {
            mode: r.mode.as_str().into(),
            hits: r.hits.into_iter().map(Into::into).collect(),
            total: r.total,
            took_ms: r.took_ms,
            warnings: r.warnings,
            vectors: r.vectors.map(|v| VectorCoverageWire {
                matching_notes: v.matching_notes,
                with_vectors: v.with_vectors,
                share: if v.matching_notes == 0 {
                    1.0
                } else {
                    v.with_vectors as f64 / v.matching_notes as f64
                },
            }),
        }
    }
}

impl From<crate::search::models::ModelInfo> for ModelWire {
    fn from(m: crate::search::models::ModelInfo) -> Self {
        ModelWire {
            name: m.name,
            path: m.path.display().to_string(),
            linked: m.linked,
            active: m.active,
        }
    }
}
