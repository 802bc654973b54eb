//! What action steps do: search, graph reads, file reads and writes, and the graph writes that
//! the engine applies inside a step's done transaction.
//!
//! Architecture Invariant: graph writes never commit here; [`apply`] runs inside the engine's
//! transaction B, so a step and its writes land together or not at all. Every written node and
//! edge gets a provenance row naming the run, the step key and the acting user.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Map, Value, json};

use super::files;
use super::model::WriteMode;
pub use super::step_error::{ErrorKind, StepError};
use crate::clock;
use crate::graph::{self, Direction, NodeRef, NodeView, Subgraph};
use crate::rpc::protocol::DirectionWire;
use crate::store::{Store, edge_props};

fn str_field<'a>(input: &'a Value, name: &str) -> Result<&'a str, StepError> {
    input.get(name).and_then(Value::as_str).ok_or_else(|| {
        StepError::new(
            ErrorKind::InvalidInput,
            format!("in.{name} must be a string"),
        )
    })
}

/// `Search_`: the same parameters and hits as `search.query` (hybrid BM25 + dense + graph),
/// through the same wire types, so a step's output is what a socket client would see.
pub fn search(search: &crate::search::Search, input: &Value) -> Result<Value, StepError> {
    use crate::rpc::protocol::{SearchParams, SearchResultWire};
    use crate::search::SearchError;
    let params: SearchParams = serde_json::from_value(input.clone())
        .map_err(|e| StepError::new(ErrorKind::InvalidInput, format!("Search_ input: {e}")))?;
    let to_step = |e: SearchError| {
        let kind = match &e {
            SearchError::InvalidParams(_) => ErrorKind::InvalidInput,
            SearchError::ModelUnavailable(_) | SearchError::Embed(_) => ErrorKind::ModelUnavailable,
            SearchError::Store(_) => ErrorKind::Store,
            SearchError::Index(_) => ErrorKind::Io,
            SearchError::Timeout { .. } => ErrorKind::QueryTimeout,
        };
        StepError::new(kind, e.to_string())
    };
    let req = params.into_request().map_err(to_step)?;
    let resp = SearchResultWire::from(search.query(&req).map_err(to_step)?);
    Ok(json!({ "hits": resp.hits, "total": resp.total, "mode": resp.mode }))
}

/// `Graph_`: `node`, `neighbors`, `subgraph` (the node and its neighbourhood) and `path` (a
/// shortest path from `id` to `to` of at most `depth` edges: its nodes and edges in order).
pub fn graph_read(store: &Store, input: &Value) -> Result<Value, StepError> {
    let op = str_field(input, "op")?;
    let id = str_field(input, "id")?;
    let depth = input
        .get("depth")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .clamp(1, 3) as u32;
    let limit = input
        .get("limit")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .min(1000) as usize;
    let direction: Direction = match input.get("direction") {
        None | Some(Value::Null) => DirectionWire::Both,
        Some(d) => serde_json::from_value(d.clone()).map_err(|_| {
            StepError::new(
                ErrorKind::InvalidInput,
                format!("direction must be out, in or both, not {d}"),
            )
        })?,
    }
    .into();
    let edge_types: Vec<String> = input["edgeTypes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    store.read(|c: &Connection| -> Result<Value, StepError> {
        let node = graph::node_get(c, &NodeRef::Id(id.to_owned()))?;
        match op {
            "node" => Ok(json!({ "nodes": [node_json(&node)], "edges": [] })),
            "neighbors" => Ok(subgraph_json(
                &graph::neighbors(c, id, direction, &edge_types, depth, limit)?,
                None,
            )),
            "subgraph" => Ok(subgraph_json(
                &graph::neighbors(c, id, direction, &edge_types, depth, limit)?,
                Some(&node),
            )),
            "path" => {
                let to = str_field(input, "to")?;
                // `depth` is the longest path looked for; the whole neighbourhood is read (not
                // `limit` nodes of it), so a path inside it is never missed.
                let max_hops = input
                    .get("depth")
                    .and_then(Value::as_u64)
                    .map_or(graph::MAX_DEPTH, |d| {
                        d.clamp(1, graph::MAX_DEPTH as u64) as u32
                    });
                let g = graph::neighbors(
                    c,
                    id,
                    direction,
                    &edge_types,
                    max_hops,
                    graph::MAX_NODES_LIMIT,
                )?;
                Ok(shortest_path(&node, &g, to, direction))
            }
            other => Err(StepError::new(
                ErrorKind::InvalidInput,
                format!("unknown op {other:?}"),
            )),
        }
    })
}

/// The shortest path from `start` to `to` over the edges of `g` (a breadth-first neighbourhood
/// of `start`), followed as `direction` allows: `{nodes, edges, length}` in path order, or empty
/// lists and a null length when `to` is not within reach.
fn shortest_path(start: &NodeView, g: &Subgraph, to: &str, direction: Direction) -> Value {
    use std::collections::{HashMap, VecDeque};
    let mut adjacent: HashMap<&str, Vec<(usize, &str)>> = HashMap::new();
    for (i, e) in g.edges.iter().enumerate() {
        if direction != Direction::In {
            adjacent.entry(&e.src_id).or_default().push((i, &e.dst_id));
        }
        if direction != Direction::Out {
            adjacent.entry(&e.dst_id).or_default().push((i, &e.src_id));
        }
    }
    // Breadth first, so the first time `to` is reached is over a shortest path.
    let mut came_from: HashMap<&str, (usize, &str)> = HashMap::new();
    let mut queue = VecDeque::from([start.id.as_str()]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            break;
        }
        for &(edge, next) in adjacent.get(at).into_iter().flatten() {
            if next != start.id && !came_from.contains_key(next) {
                came_from.insert(next, (edge, at));
                queue.push_back(next);
            }
        }
    }
    if to != start.id && !came_from.contains_key(to) {
        return json!({ "nodes": [], "edges": [], "length": null });
    }
    let mut node_ids = vec![to];
    let mut edge_ix = Vec::new();
    let mut at = to;
    while let Some(&(edge, prev)) = came_from.get(at) {
        edge_ix.push(edge);
        node_ids.push(prev);
        at = prev;
    }
    node_ids.reverse();
    edge_ix.reverse();
    let views: HashMap<&str, &NodeView> = std::iter::once(start)
        .chain(&g.nodes)
        .map(|n| (n.id.as_str(), n))
        .collect();
    let nodes: Vec<Value> = node_ids
        .iter()
        .filter_map(|id| views.get(id).map(|n| node_json(n)))
        .collect();
    let edges: Vec<Value> = edge_ix.iter().map(|&i| edge_json(&g.edges[i])).collect();
    json!({ "nodes": nodes, "edges": edges, "length": edge_ix.len() })
}

fn edge_json(e: &graph::EdgeView) -> Value {
    json!({ "id": e.id, "from": e.src_id, "to": e.dst_id, "type": e.edge_type, "props": e.props })
}

fn node_json(n: &NodeView) -> Value {
    json!({ "id": n.id, "kind": n.kind, "key": n.key, "title": n.title, "path": n.path, "props": n.props })
}

fn subgraph_json(g: &Subgraph, start: Option<&NodeView>) -> Value {
    let nodes: Vec<Value> = start.into_iter().chain(&g.nodes).map(node_json).collect();
    let edges: Vec<Value> = g.edges.iter().map(edge_json).collect();
    json!({ "nodes": nodes, "edges": edges })
}

/// `Read_`: a file inside the workspace whose path matches the declared globs.
pub fn read_file(
    workspace: &Path,
    rel: &str,
    globs: &[String],
    max_bytes: usize,
) -> Result<Value, StepError> {
    let rel = files::normalize(rel).map_err(|m| StepError::new(ErrorKind::PathInvalid, m))?;
    if !files::matches_any(globs, &rel) {
        return Err(StepError::new(
            ErrorKind::PathOutsideGlobs,
            format!("{rel} is outside the declared file globs"),
        ));
    }
    let full =
        files::resolve(workspace, &rel).map_err(|m| StepError::new(ErrorKind::PathInvalid, m))?;
    let bytes = std::fs::read(&full)
        .map_err(|e| StepError::new(ErrorKind::Io, format!("cannot read {rel}: {e}")))?;
    if bytes.len() > max_bytes {
        return Err(StepError::new(
            ErrorKind::LimitExceeded,
            format!("{rel} is larger than the payload limit ({max_bytes} bytes)"),
        ));
    }
    Ok(json!({
        "path": rel, "text": String::from_utf8_lossy(&bytes), "size": bytes.len(), "hash": files::hash(&bytes),
    }))
}

/// A graph change a step asks for; applied by [`apply`] inside the step's done transaction.
#[derive(Debug, Clone, PartialEq)]
pub enum GraphWrite {
    Upsert {
        kind: String,
        key: String,
        title: Option<String>,
        props: Option<Value>,
        tags: Vec<String>,
        content: Option<String>,
    },
    Link {
        from: String,
        to: String,
        edge_type: String,
        props: Option<Value>,
    },
}

impl GraphWrite {
    pub fn upsert(input: &Value) -> Result<GraphWrite, StepError> {
        Ok(GraphWrite::Upsert {
            kind: str_field(input, "kind")?.to_owned(),
            key: str_field(input, "key")?.to_owned(),
            title: input
                .get("title")
                .and_then(Value::as_str)
                .map(str::to_owned),
            props: input.get("props").filter(|p| p.is_object()).cloned(),
            tags: input["tags"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            content: input
                .get("content")
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }

    pub fn link(input: &Value) -> Result<GraphWrite, StepError> {
        Ok(GraphWrite::Link {
            from: str_field(input, "from")?.to_owned(),
            to: str_field(input, "to")?.to_owned(),
            edge_type: str_field(input, "type")?.to_owned(),
            props: input.get("props").filter(|p| p.is_object()).cloned(),
        })
    }

    /// `Ingest_`: given text (or a workspace file's text, read by the caller) as a note node.
    pub fn ingest(key: &str, title: &str, text: &str) -> GraphWrite {
        GraphWrite::Upsert {
            kind: "note".into(),
            key: format!("workflow:{key}"),
            title: Some(title.to_owned()),
            props: Some(json!({ "ingested_by": "workflow" })),
            tags: Vec::new(),
            content: Some(text.to_owned()),
        }
    }

    /// What a dry run shows instead of writing.
    pub fn plan(&self) -> Value {
        match self {
            GraphWrite::Upsert {
                kind,
                key,
                title,
                props,
                tags,
                ..
            } => {
                json!({ "op": "upsert", "kind": kind, "key": key, "title": title, "props": props, "tags": tags })
            }
            GraphWrite::Link {
                from,
                to,
                edge_type,
                props,
            } => {
                json!({ "op": "link", "from": from, "to": to, "type": edge_type, "props": props })
            }
        }
    }
}

/// Who and what a graph write is attributed to.
pub struct Prov<'a> {
    pub actor: &'a str,
    pub origin: Origin<'a>,
}

/// What made a graph write: a workflow step, or a client writing through the socket.
pub enum Origin<'a> {
    Step {
        run_id: &'a str,
        step_key: &'a str,
    },
    /// A socket client, with the label it gave (`claude-desktop`), if any.
    Client {
        label: Option<&'a str>,
    },
}

const EXTRACTOR: &str = "workflow";

/// The extractor of a client's write; a labelled client is `client:LABEL`, so citations say
/// which program wrote the fact as well as which user.
const CLIENT_EXTRACTOR: &str = "client";

fn provenance(
    tx: &Transaction<'_>,
    p: &Prov<'_>,
    node: Option<&str>,
    edge: Option<&str>,
    now: &str,
) -> rusqlite::Result<()> {
    let (extractor, version, run_id, step_key) = match &p.origin {
        Origin::Step { run_id, step_key } => (
            EXTRACTOR.to_owned(),
            super::model::VERSION,
            Some(*run_id),
            Some(*step_key),
        ),
        Origin::Client { label } => (
            label.map_or_else(
                || CLIENT_EXTRACTOR.to_owned(),
                |l| format!("{CLIENT_EXTRACTOR}:{l}"),
            ),
            env!("CARGO_PKG_VERSION"),
            None,
            None,
        ),
    };
    tx.prepare_cached(
        "INSERT INTO provenance(node_id, edge_id, extractor, extractor_version, actor_id, run_id, step_key, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![node, edge, extractor, version, p.actor, run_id, step_key, now])?;
    Ok(())
}

/// Node kinds that files make; only ingest writes them, so a client or step may not.
pub const DERIVED_NODE_KINDS: &[&str] = &["note", "file", "section", "chunk", "tag", "placeholder"];

/// Edge types that files make (tags are written through `tags` of an upsert).
pub const DERIVED_EDGE_TYPES: &[&str] =
    &["links_to", "has_section", "has_chunk", "tagged", "child_of"];

/// Retires a node (and its current edges) or an edge that was written by a client or a step:
/// `valid_to` is set on it and its provenance, nothing is deleted. Facts read from files are
/// refused: the next ingest of the file would say them again.
pub fn retire(
    tx: &Transaction<'_>,
    id: &str,
    node: bool,
    now: &str,
) -> Result<u64, crate::error::Error> {
    use crate::error::{Error, Kind};
    if node {
        let row: Option<(String, Option<i64>)> = tx
            .prepare_cached("SELECT kind, source_id FROM nodes WHERE id = ?1 AND valid_to IS NULL")?
            .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((kind, source)) = row else {
            return Err(Error::new(
                Kind::NodeNotFound,
                format!("no current node {id}"),
            ));
        };
        if source.is_some() || DERIVED_NODE_KINDS.contains(&kind.as_str()) {
            return Err(Error::new(
                Kind::InvalidParams,
                format!("node {id} is a {kind} read from a file; edit or delete the file instead"),
            ));
        }
        let edges: Vec<String> = tx
            .prepare_cached(
                "SELECT id FROM edges WHERE (src_id = ?1 OR dst_id = ?1) AND valid_to IS NULL",
            )?
            .query_map([id], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?;
        for e in &edges {
            retire_edge_row(tx, e, now)?;
        }
        tx.prepare_cached("UPDATE nodes SET valid_to = ?2, updated_at = ?2 WHERE id = ?1")?
            .execute(params![id, now])?;
        tx.prepare_cached(
            "UPDATE provenance SET valid_to = ?2 WHERE node_id = ?1 AND valid_to IS NULL",
        )?
        .execute(params![id, now])?;
        crate::search::written::queue(tx, id)?;
        return Ok(edges.len() as u64);
    }
    let ty: Option<String> = tx
        .prepare_cached(concat!(
            "SELECT type FROM edges WHERE rowid = ",
            crate::store::edge_id::row_of!(),
            " AND id = ?1 AND valid_to IS NULL"
        ))?
        .query_row([id], |r| r.get(0))
        .optional()?;
    let Some(ty) = ty else {
        return Err(Error::new(Kind::NotFound, format!("no current edge {id}")));
    };
    if DERIVED_EDGE_TYPES.contains(&ty.as_str()) {
        return Err(Error::new(
            Kind::InvalidParams,
            format!("edge {id} is a {ty} edge read from a file; edit the file instead"),
        ));
    }
    retire_edge_row(tx, id, now)?;
    Ok(0)
}

fn retire_edge_row(tx: &Transaction<'_>, id: &str, now: &str) -> rusqlite::Result<()> {
    // By its row: a link read from a file (the edges of a written node it points at) has its
    // id from its row (`store::edge_id`).
    tx.prepare_cached(concat!(
        "UPDATE edge_rows SET valid_to = ?2 WHERE rid = ",
        crate::store::edge_id::row_of!()
    ))?
    .execute(params![id, now])?;
    tx.prepare_cached(
        "UPDATE provenance SET valid_to = ?2 WHERE edge_id = ?1 AND valid_to IS NULL",
    )?
    .execute(params![id, now])?;
    Ok(())
}

fn current_node(tx: &Transaction<'_>, kind: &str, key: &str) -> rusqlite::Result<Option<String>> {
    tx.prepare_cached("SELECT id FROM nodes WHERE kind = ?1 AND key = ?2 AND valid_to IS NULL")?
        .query_row([kind, key], |r| r.get(0))
        .optional()
}

/// Applies `w` in `tx`. Returns the step result and the `graph_write` event payloads.
pub fn apply(
    tx: &Transaction<'_>,
    w: &GraphWrite,
    p: &Prov<'_>,
) -> Result<(Value, Vec<Value>), StepError> {
    let now = clock::now();
    match w {
        GraphWrite::Upsert {
            kind,
            key,
            title,
            props,
            tags,
            content,
        } => {
            let (id, created) = match current_node(tx, kind, key)? {
                Some(id) => {
                    tx.prepare_cached(
                        "UPDATE nodes SET title = coalesce(?2, title), props = coalesce(?3, props),
                                content = coalesce(?4, content), updated_at = ?5 WHERE id = ?1",
                    )?
                    .execute(params![
                        id,
                        title,
                        props.as_ref().map(Value::to_string),
                        content,
                        now
                    ])?;
                    (id, false)
                }
                None => {
                    let id = uuid::Uuid::now_v7().to_string();
                    tx.prepare_cached(
                        "INSERT INTO nodes(id, kind, key, title, props, content, owner_id, valid_from, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?8)",
                    )?
                    .execute(params![
                        id,
                        kind,
                        key,
                        title,
                        props.as_ref().map_or_else(|| "{}".to_owned(), Value::to_string),
                        content,
                        p.actor,
                        now
                    ])?;
                    (id, true)
                }
            };
            provenance(tx, p, Some(&id), None, &now)?;
            crate::search::written::queue(tx, &id)?;
            let mut events = vec![
                json!({ "op": "upsert", "node_id": id, "kind": kind, "key": key, "created": created }),
            ];
            for tag in tags {
                let name = tag.trim_matches(|c| c == '#' || c == '/');
                let tag_key = format!("tag:{}", name.to_lowercase());
                let tag_id = match current_node(tx, "tag", &tag_key)? {
                    Some(t) => t,
                    None => {
                        let t = uuid::Uuid::now_v7().to_string();
                        tx.prepare_cached(
                            "INSERT INTO nodes(id, kind, key, title, owner_id, valid_from, created_at, updated_at)
                             VALUES (?1, 'tag', ?2, ?3, ?4, ?5, ?5, ?5)",
                        )?
                        .execute(params![t, tag_key, name, p.actor, now])?;
                        provenance(tx, p, Some(&t), None, &now)?;
                        t
                    }
                };
                let (edge_id, _) = ensure_edge(tx, &id, &tag_id, "tagged", None, p, &now)?;
                events.push(json!({ "op": "link", "edge_id": edge_id, "type": "tagged" }));
            }
            Ok((json!({ "id": id, "created": created }), events))
        }
        GraphWrite::Link {
            from,
            to,
            edge_type,
            props,
        } => {
            for n in [from, to] {
                let live: bool = tx
                    .prepare_cached(
                        "SELECT count(*) FROM nodes WHERE id = ?1 AND valid_to IS NULL",
                    )?
                    .query_row([n], |r| r.get::<_, i64>(0))?
                    > 0;
                if !live {
                    return Err(StepError::new(
                        ErrorKind::NodeNotFound,
                        format!("no current node {n}"),
                    ));
                }
            }
            let (id, created) = ensure_edge(tx, from, to, edge_type, props.as_ref(), p, &now)?;
            Ok((
                json!({ "id": id, "created": created }),
                vec![json!({ "op": "link", "edge_id": id, "type": edge_type, "created": created })],
            ))
        }
    }
}

/// An edge, idempotent on (from, to, type).
fn ensure_edge(
    tx: &Transaction<'_>,
    from: &str,
    to: &str,
    edge_type: &str,
    props: Option<&Value>,
    p: &Prov<'_>,
    now: &str,
) -> rusqlite::Result<(String, bool)> {
    let existing: Option<String> = tx
        .prepare_cached("SELECT id FROM edges WHERE src_id = ?1 AND dst_id = ?2 AND type = ?3 AND key = '' AND valid_to IS NULL")?
        .query_row([from, to, edge_type], |r| r.get(0))
        .optional()?;
    if let Some(id) = existing {
        if let Some(props) = props {
            tx.prepare_cached(concat!(
                "UPDATE edge_rows SET props = ?2 WHERE rid = ",
                crate::store::edge_id::row_of!()
            ))?
            .execute(params![id, edge_props::column(props)])?;
        }
        provenance(tx, p, None, Some(&id), now)?;
        return Ok((id, false));
    }
    let id = uuid::Uuid::now_v7().to_string();
    tx.prepare_cached(
        "INSERT INTO edges(id, src_id, dst_id, type, key, props, created_by, valid_from)
         VALUES (?1, ?2, ?3, ?4, '', ?5, ?6, ?7)",
    )?
    .execute(params![
        id,
        from,
        to,
        edge_type,
        props.and_then(edge_props::column),
        p.actor,
        now
    ])?;
    provenance(tx, p, None, Some(&id), now)?;
    Ok((id, true))
}

/// The bytes a `Write_` leaves in the file, given what is there now.
pub fn write_bytes(
    mode: WriteMode,
    existing: Option<&[u8]>,
    content: &[u8],
    rel: &str,
) -> Result<Vec<u8>, StepError> {
    match (mode, existing) {
        (WriteMode::Overwrite, _) | (_, None) => Ok(content.to_vec()),
        (WriteMode::FailIfExists, Some(_)) => Err(StepError::new(
            ErrorKind::FileExists,
            format!("{rel} already exists"),
        )),
        (WriteMode::Append, Some(old)) => Ok([old, content].concat()),
        (WriteMode::Prepend, Some(old)) => Ok([content, old].concat()),
    }
}

/// Converts a JSON object of `in` into a map, for steps that take named inputs.
pub fn as_map(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}
