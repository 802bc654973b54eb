//! Read-only graph queries: a node with its provenance, title search, neighbourhoods,
//! backlinks and the source coverage list.
//!
//! Owns the read-side meaning of "current" (nodes, edges and provenance with `valid_to IS NULL`,
//! sources with `deleted_at IS NULL`) and the engine view types. Architecture Invariant: this
//! module never writes to the store and knows nothing of tokio or JSON-RPC; callers run it on a
//! blocking thread and convert its types to wire types at the edge.

mod export;
mod history;
mod parts;

pub use export::{ExportCursor, ExportPage, MAX_EXPORT_PAGE, export_page};
pub use history::{
    EdgeSpan, History, Instant, MAX_HISTORY_EDGES, MAX_HISTORY_VERSIONS, Version, node_at,
    node_history, node_last,
};

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};

use crate::error::{Error, Kind};
use crate::ingest::SourceStatus;
use crate::store::edge_props;

/// Largest `limit` [`search_title`] honours; larger values are clamped.
pub const MAX_SEARCH_LIMIT: usize = 200;
/// Largest `limit` [`neighbors`] and [`backlinks`] honour; larger values are clamped.
pub const MAX_NODES_LIMIT: usize = 1000;
/// Deepest breadth-first walk [`neighbors`] accepts.
pub const MAX_DEPTH: u32 = 3;
/// Longest title query: far above any title a person types, and far below SQLite's own limit
/// on LIKE patterns (50,000 bytes), which would otherwise answer with a store error.
pub const MAX_TITLE_QUERY_BYTES: usize = 1024;
/// Rows of titles or names one search pass reads at most. Keeps a one-letter query or the
/// fuzzy pass bounded on a very large graph at the price of missing hits beyond the cap.
const TITLE_SCAN_CAP: i64 = 100_000;

/// Where a node or edge came from: a span of a file, or a workflow step.
#[derive(Debug, Clone, PartialEq)]
pub struct Provenance {
    /// Absolute path of the source file.
    pub path: Option<String>,
    /// 1-based, inclusive.
    pub lines: Option<(u32, u32)>,
    /// Byte offsets, end exclusive.
    pub bytes: Option<(u64, u64)>,
    pub content_hash: Option<String>,
    pub extractor: String,
    pub extractor_version: String,
    pub actor_id: String,
    pub run_id: Option<String>,
    pub step_key: Option<String>,
    pub recorded_at: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NodeView {
    pub id: String,
    pub kind: String,
    pub key: String,
    pub title: Option<String>,
    /// Absolute path of the node's file.
    pub path: Option<String>,
    pub aliases: Vec<String>,
    pub props: serde_json::Value,
    pub content: Option<String>,
    pub parent_id: Option<String>,
    pub owner_id: String,
    pub valid_from: String,
    pub valid_to: Option<String>,
    /// Current citations: spans by `byte_start`, then the ones without a span.
    pub provenance: Vec<Provenance>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EdgeView {
    pub id: String,
    pub src_id: String,
    pub dst_id: String,
    pub edge_type: String,
    pub props: serde_json::Value,
    pub created_by: String,
    pub provenance: Vec<Provenance>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Subgraph {
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
}

/// How a caller names a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeRef {
    Id(String),
    /// Absolute path of a note's (or other file's) file.
    Path(PathBuf),
    /// A note's title, file name or alias, compared case-insensitively.
    Title(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Out,
    In,
    Both,
}

/// The few fields a search result list shows.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeSummary {
    pub id: String,
    pub kind: String,
    pub title: Option<String>,
    pub path: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TitleHit {
    pub node: NodeSummary,
    /// The title, alias or file name that matched, as written.
    pub matched: String,
    /// Higher is better: the tier (exact 4, prefix 3, word prefix 2, substring 1, fuzzy 0) plus
    /// the share of the matched text the query covers.
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SourceView {
    pub id: i64,
    /// Path of the root the file lives under.
    pub root: String,
    /// Absolute.
    pub path: String,
    pub rel_path: String,
    pub file_type: String,
    pub status: SourceStatus,
    pub reason: Option<String>,
    pub size: Option<i64>,
    pub content_hash: Option<String>,
    pub diagnostics: serde_json::Value,
    pub indexed_at: Option<String>,
    pub last_seen_at: String,
}

/// Fetches one current node with its provenance.
///
/// A path must be absolute; it resolves through the root that contains it to the live source
/// with that relative path, preferring its note over a plain file node. A title is looked up
/// among current note and file titles first, then among file names and aliases, closest to
/// the root first.
pub fn node_get(conn: &Connection, r: &NodeRef) -> Result<NodeView, Error> {
    in_snapshot(conn, |conn| {
        let id = match r {
            NodeRef::Id(id) => id.clone(),
            NodeRef::Path(path) => node_id_by_path(conn, path)?.ok_or_else(|| {
                Error::new(
                    Kind::NodeNotFound,
                    format!("no note or file at {}", path.display()),
                )
            })?,
            NodeRef::Title(title) => node_id_by_title(conn, title)?.ok_or_else(|| {
                Error::new(Kind::NodeNotFound, format!("no note titled {title:?}"))
            })?,
        };
        current_node(conn, &id)
    })
}

/// [`node_get`] as of `at` (the version that held then), or with `include_retired` a retired
/// node's last version instead of `node_not_found`. A path or title names the current node
/// first; its version at `at` is the answer.
pub fn node_get_as(
    conn: &Connection,
    r: &NodeRef,
    at: Option<&Instant>,
    include_retired: bool,
) -> Result<NodeView, Error> {
    if at.is_none() && !include_retired {
        return node_get(conn, r);
    }
    in_snapshot(conn, |conn| {
        let id = match r {
            NodeRef::Id(id) => id.clone(),
            _ => node_get(conn, r)?.id,
        };
        match at {
            Some(t) => node_at(conn, &id, t)?.ok_or_else(|| not_at(&id, t)),
            None => node_last(conn, &id)?.ok_or_else(|| node_not_found(&id)),
        }
    })
}

/// Title search over current notes and files: their titles, aliases and file names.
///
/// Ranks exact (case-insensitive) over prefix over word prefix over substring over fuzzy (the
/// query's characters in order, spaces ignored); within a tier shorter matches come first,
/// then alphabetical. One hit per node, with its best match. A blank query finds nothing;
/// `limit` is clamped to [`MAX_SEARCH_LIMIT`]; a query over [`MAX_TITLE_QUERY_BYTES`] is
/// refused before any work.
pub fn search_title(conn: &Connection, query: &str, limit: usize) -> Result<Vec<TitleHit>, Error> {
    if query.len() > MAX_TITLE_QUERY_BYTES {
        return Err(Error::new(
            Kind::InvalidParams,
            format!(
                "query is {} bytes; the limit is {MAX_TITLE_QUERY_BYTES} (title search)",
                query.len()
            ),
        ));
    }
    let limit = limit.min(MAX_SEARCH_LIMIT);
    let query = Query::new(query);
    if query.text.is_empty() || limit == 0 {
        return Ok(Vec::new());
    }
    in_snapshot(conn, |conn| {
        let mut best = HashMap::new();
        let pattern = format!("%{}%", escape_like(&query.text));
        collect_candidates(conn, &query, &pattern, &mut best)?;
        // LIKE folds ASCII case only, and finds no fuzzy matches: scan everything when the
        // substring pass may have missed something that ranks.
        if best.len() < limit || !query.text.is_ascii() {
            collect_candidates(conn, &query, "%", &mut best)?;
        }
        let mut ranked: Vec<Candidate> = best.into_values().collect();
        ranked.sort_by(Candidate::rank);
        ranked.truncate(limit);
        let mut hits = Vec::with_capacity(ranked.len());
        for c in ranked {
            if let Some(hit) = title_hit(conn, &query, c)? {
                hits.push(hit);
            }
        }
        Ok(hits)
    })
}

/// Breadth-first neighbourhood of a current node over current edges.
///
/// Returns the nodes reached (not the start), in the order found, and every edge crossed
/// between nodes of the result, each once. Edges are followed by type, then neighbour id.
/// `edge_types` empty means all types. `depth` must be 1..=[`MAX_DEPTH`]; the walk stops when
/// `limit` nodes (clamped to [`MAX_NODES_LIMIT`]) are found.
pub fn neighbors(
    conn: &Connection,
    id: &str,
    direction: Direction,
    edge_types: &[String],
    depth: u32,
    limit: usize,
) -> Result<Subgraph, Error> {
    neighbors_at(conn, id, direction, edge_types, depth, limit, None)
}

/// [`neighbors`] over the graph as it was at `at` (nodes and edges that held then, each node's
/// version of then); `None` is now. A past walk follows stored edges only: the structural
/// edges to sections and chunks are derived from the current file.
pub fn neighbors_at(
    conn: &Connection,
    id: &str,
    direction: Direction,
    edge_types: &[String],
    depth: u32,
    limit: usize,
    at: Option<&Instant>,
) -> Result<Subgraph, Error> {
    if !(1..=MAX_DEPTH).contains(&depth) {
        return Err(Error::new(
            Kind::InvalidParams,
            format!("depth must be between 1 and {MAX_DEPTH}, got {depth}"),
        ));
    }
    let limit = limit.min(MAX_NODES_LIMIT);
    in_snapshot(conn, |conn| {
        require_at(conn, id, at)?;
        let queries = IncidentQueries::new(edge_types, at);
        let mut visited = HashSet::from([id.to_owned()]);
        let mut crossed = HashSet::new();
        let mut found: Vec<String> = Vec::new();
        let mut edges: Vec<EdgeView> = Vec::new();
        let mut frontier = vec![id.to_owned()];
        'walk: for _ in 0..depth {
            let mut next = Vec::new();
            for at in &frontier {
                for (edge, other) in queries.incident(conn, direction, at)? {
                    if crossed.contains(&edge.id) {
                        continue;
                    }
                    if !visited.contains(&other) {
                        if found.len() >= limit {
                            break 'walk;
                        }
                        visited.insert(other.clone());
                        found.push(other.clone());
                        next.push(other);
                    }
                    crossed.insert(edge.id.clone());
                    edges.push(edge);
                }
            }
            frontier = next;
        }
        subgraph(conn, &found, edges, at)
    })
}

/// Current nodes that refer to `id` through a current, non-structural edge (anything but
/// `has_section`, `has_chunk`, `tagged`, `child_of`). Sections and chunks are never the end of
/// a stored edge (schema 0010), so a link to a heading is an edge to its note.
///
/// Sources are ordered by title (case-insensitive, else key), then
/// id; the edges follow their sources. `limit` counts sources and is clamped to
/// [`MAX_NODES_LIMIT`].
pub fn backlinks(conn: &Connection, id: &str, limit: usize) -> Result<Subgraph, Error> {
    backlinks_at(conn, id, limit, None)
}

/// [`backlinks`] over the graph as it was at `at`; `None` is now.
pub fn backlinks_at(
    conn: &Connection,
    id: &str,
    limit: usize,
    at: Option<&Instant>,
) -> Result<Subgraph, Error> {
    let limit = limit.min(MAX_NODES_LIMIT);
    in_snapshot(conn, |conn| {
        require_at(conn, id, at)?;
        let targets = [id.to_owned()];
        let (node_held, edge_held) = match at {
            None => (
                "s.valid_to IS NULL".to_owned(),
                "e.valid_to IS NULL".to_owned(),
            ),
            Some(t) => (history::held_at("s", t), history::held_at("e", t)),
        };
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {}, s.id, s.title, s.key
             FROM edges e
             JOIN nodes s ON s.id = e.src_id AND {node_held}
             WHERE e.dst_id = ?1 AND {edge_held}
               -- structural types describe a note's own shape, not a reference to it
               AND e.type NOT IN ('has_section', 'has_chunk', 'tagged', 'child_of')",
            edge_columns!()
        ))?;
        // (sort key, source note id, edge)
        let mut refs: Vec<(String, String, EdgeView)> = Vec::new();
        for target in &targets {
            let rows = stmt.query_map([target], |r| {
                let sort: Option<String> = r.get(7)?;
                let key: String = r.get(8)?;
                Ok((
                    sort.unwrap_or(key).to_lowercase(),
                    r.get::<_, String>(6)?,
                    edge_from_row(r)?,
                ))
            })?;
            for row in rows {
                let (sort, note, edge) = row?;
                if note != id && !targets.contains(&note) {
                    refs.push((sort, note, edge));
                }
            }
        }
        refs.sort_by(|a, b| {
            (&a.0, &a.1, &a.2.edge_type, &a.2.dst_id, &a.2.id).cmp(&(
                &b.0,
                &b.1,
                &b.2.edge_type,
                &b.2.dst_id,
                &b.2.id,
            ))
        });
        let mut notes: Vec<String> = Vec::new();
        let mut edges = Vec::new();
        for (_, note, edge) in refs {
            if notes.last() != Some(&note) {
                if notes.len() >= limit {
                    break;
                }
                notes.push(note);
            }
            edges.push(edge);
        }
        subgraph(conn, &notes, edges, at)
    })
}

/// Live sources, ordered by root path then relative path, with the number matching the
/// filters before `limit` and `offset` apply.
///
/// `status` is one of indexed, skipped, failed, pending. `root` must be absolute and is
/// compared with the stored root path as written (no symlinks resolved); an unknown root
/// matches nothing.
pub fn source_list(
    conn: &Connection,
    status: Option<&str>,
    root: Option<&Path>,
    limit: usize,
    offset: usize,
) -> Result<(Vec<SourceView>, u64), Error> {
    if let Some(s) = status
        && SourceStatus::parse(s).is_none()
    {
        let all: Vec<&str> = SourceStatus::ALL.iter().map(|s| s.as_str()).collect();
        return Err(Error::new(
            Kind::InvalidParams,
            format!(
                "unknown source status {s:?}, expected one of {}",
                all.join(", ")
            ),
        ));
    }
    let root = root.map(root_filter).transpose()?;
    list_sources(conn, status, root.as_deref(), None, limit, offset)
}

/// The one sources query: live sources with `status` (checked by the caller), of the root at
/// `root` (every root when None), whose relative path matches the LIKE pattern `under` (all
/// when None).
fn list_sources(
    conn: &Connection,
    status: Option<&str>,
    root: Option<&str>,
    under: Option<&str>,
    limit: usize,
    offset: usize,
) -> Result<(Vec<SourceView>, u64), Error> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(offset).unwrap_or(i64::MAX);
    in_snapshot(conn, |conn| {
        let total: i64 = conn.query_row(
            "SELECT count(*) FROM sources s JOIN roots r ON r.id = s.root_id
             WHERE s.deleted_at IS NULL AND (?1 IS NULL OR s.status = ?1)
               AND (?2 IS NULL OR r.path = ?2)
               AND (?3 IS NULL OR s.rel_path LIKE ?3 ESCAPE '\\')",
            params![status, root, under],
            |r| r.get(0),
        )?;
        let mut stmt = conn.prepare_cached(
            "SELECT s.id, r.path, s.rel_path, s.file_type, s.status, s.reason, s.size,
                    s.content_hash, s.diagnostics, s.indexed_at, s.last_seen_at
             FROM sources s JOIN roots r ON r.id = s.root_id
             WHERE s.deleted_at IS NULL AND (?1 IS NULL OR s.status = ?1)
               AND (?2 IS NULL OR r.path = ?2)
               AND (?3 IS NULL OR s.rel_path LIKE ?3 ESCAPE '\\')
             ORDER BY r.path, s.rel_path
             LIMIT ?4 OFFSET ?5",
        )?;
        let rows = stmt.query_map(params![status, root, under, limit, offset], source_from_row)?;
        let sources = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        Ok((sources, u64::try_from(total).unwrap_or(0)))
    })
}

/// A source row as both source queries select it: id, root path, relative path, file type,
/// status, reason, size, content hash, diagnostics, indexed at, last seen at.
fn source_from_row(r: &Row<'_>) -> rusqlite::Result<SourceView> {
    let root: String = r.get(1)?;
    let rel_path: String = r.get(2)?;
    let diagnostics: String = r.get(8)?;
    Ok(SourceView {
        id: r.get(0)?,
        path: join_path(&root, &rel_path),
        root,
        rel_path,
        file_type: r.get(3)?,
        status: r.get(4)?,
        reason: r.get(5)?,
        size: r.get(6)?,
        content_hash: r.get(7)?,
        diagnostics: json_or(&diagnostics, serde_json::Value::Array(Vec::new())),
        indexed_at: r.get(9)?,
        last_seen_at: r.get(10)?,
    })
}

/// Runs `f` inside one read transaction so that its several queries see one snapshot of the
/// store even while the writer commits. Inside a caller's transaction, `f` simply joins it.
fn in_snapshot<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<T, Error>,
) -> Result<T, Error> {
    if !conn.is_autocommit() {
        return f(conn);
    }
    let tx = conn.unchecked_transaction()?;
    let out = f(&tx)?;
    // Nothing was written; committing only ends the snapshot.
    tx.commit()?;
    Ok(out)
}

fn require_current(conn: &Connection, id: &str) -> Result<(), Error> {
    let exists: Option<i64> = conn
        .prepare_cached("SELECT 1 FROM nodes WHERE id = ?1 AND valid_to IS NULL")?
        .query_row([id], |r| r.get(0))
        .optional()?;
    match exists {
        Some(_) => Ok(()),
        None if parts::node(conn, id)?.is_some() => Ok(()),
        None => Err(node_not_found(id)),
    }
}

/// Like [`require_current`], at `at` when given.
fn require_at(conn: &Connection, id: &str, at: Option<&Instant>) -> Result<(), Error> {
    match at {
        None => require_current(conn, id),
        Some(t) => match node_at(conn, id, t)? {
            Some(_) => Ok(()),
            None => Err(not_at(id, t)),
        },
    }
}

fn not_at(id: &str, at: &Instant) -> Error {
    Error::new(
        Kind::NodeNotFound,
        format!("node not found at {}: {id}", at.as_str()),
    )
}

fn node_not_found(id: &str) -> Error {
    Error::new(Kind::NodeNotFound, format!("node not found: {id}"))
}

fn current_node(conn: &Connection, id: &str) -> Result<NodeView, Error> {
    let node = conn
        .prepare_cached(
            "SELECT n.id, n.kind, n.key, n.title, n.aliases, n.props, n.content, n.parent_id,
                    n.owner_id, n.valid_from, n.valid_to, r.path, s.rel_path
             FROM nodes n
             LEFT JOIN sources s ON s.id = n.source_id
             LEFT JOIN roots r ON r.id = s.root_id
             WHERE n.id = ?1 AND n.valid_to IS NULL",
        )?
        .query_row([id], |r| {
            let aliases: String = r.get::<_, Option<String>>(4)?.unwrap_or_default();
            let props: String = r.get::<_, Option<String>>(5)?.unwrap_or_default();
            Ok(NodeView {
                id: r.get(0)?,
                kind: r.get(1)?,
                key: r.get(2)?,
                title: r.get(3)?,
                path: file_path(r.get(11)?, r.get(12)?),
                aliases: parse_aliases(&aliases),
                props: props_of(&props),
                content: r.get(6)?,
                parent_id: r.get(7)?,
                owner_id: r.get(8)?,
                valid_from: r.get(9)?,
                valid_to: r.get(10)?,
                provenance: Vec::new(),
            })
        })
        .optional()?;
    let Some(mut node) = node else {
        return parts::node(conn, id)?.ok_or_else(|| node_not_found(id));
    };
    node.provenance = provenance(conn, PROVENANCE_OF_NODE, id)?;
    Ok(node)
}

/// The six columns [`edge_from_row`] reads, of the edges row aliased `e`. The acting user is
/// the edge's own `created_by` or, where schema 0014 left that out, the user who recorded the
/// file version it cites.
macro_rules! edge_columns {
    () => {
        "e.id, e.src_id, e.dst_id, e.type, e.props,
         coalesce(e.created_by, (SELECT v.actor_id FROM source_versions v WHERE v.id = e.cite_version))"
    };
}
pub(crate) use edge_columns;

/// A fact's current citations: the one kept on the fact itself (a file's own facts, see
/// schema/0007) and its current provenance rows (shared facts, workflow writes, and facts
/// ingested before 0007). Spans by `byte_start`, then the ones without a span.
macro_rules! provenance_sql {
    ($table:literal, $fact:expr, $column:literal) => {
        concat!(
            "SELECT r.path, s.rel_path, p.line_start, p.line_end, p.byte_start, p.byte_end,
                    p.content_hash, p.extractor, p.extractor_version, p.actor_id, p.run_id,
                    p.step_key, p.recorded_at
             FROM (
                 SELECT NULL AS id, v.source_id, f.cite_byte_start AS byte_start,
                        f.cite_byte_end AS byte_end, f.cite_line_start AS line_start,
                        f.cite_line_end AS line_end, v.content_hash, v.extractor,
                        v.extractor_version, v.actor_id, NULL AS run_id, NULL AS step_key,
                        v.recorded_at
                 FROM ",
            $table,
            " f JOIN source_versions v ON v.id = f.cite_version
                 WHERE ",
            $fact,
            " AND f.valid_to IS NULL
                 UNION ALL
                 SELECT id, source_id, byte_start, byte_end, line_start, line_end, content_hash,
                        extractor, extractor_version, actor_id, run_id, step_key, recorded_at
                 FROM provenance WHERE ",
            $column,
            " = ?1 AND valid_to IS NULL
             ) p
             LEFT JOIN sources s ON s.id = p.source_id
             LEFT JOIN roots r ON r.id = s.root_id
             ORDER BY p.byte_start IS NULL, p.byte_start, p.id NULLS FIRST"
        )
    };
}
const PROVENANCE_OF_NODE: &str = provenance_sql!("nodes", "f.id = ?1", "node_id");
// An edge by its row, whose id may be derived from it (`store::edge_id`).
const PROVENANCE_OF_EDGE: &str = provenance_sql!(
    "edges",
    concat!(
        "f.rowid = ",
        crate::store::edge_id::row_of!(),
        " AND f.id = ?1"
    ),
    "edge_id"
);

fn provenance(conn: &Connection, sql: &str, id: &str) -> Result<Vec<Provenance>, Error> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([id], provenance_from_row)?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

/// A citation from the thirteen columns every provenance query selects, in their order.
fn provenance_from_row(r: &Row<'_>) -> rusqlite::Result<Provenance> {
    Ok(Provenance {
        path: file_path(r.get(0)?, r.get(1)?),
        lines: span(r.get(2)?, r.get(3)?),
        bytes: span(r.get(4)?, r.get(5)?),
        content_hash: r.get(6)?,
        extractor: r.get(7)?,
        extractor_version: r.get(8)?,
        actor_id: r.get(9)?,
        run_id: r.get(10)?,
        step_key: r.get(11)?,
        recorded_at: r.get(12)?,
    })
}

/// A span when both ends are present and fit; a negative offset is a broken row, not a span.
fn span<T: TryFrom<i64>>(start: Option<i64>, end: Option<i64>) -> Option<(T, T)> {
    Some((T::try_from(start?).ok()?, T::try_from(end?).ok()?))
}

/// Reads the six edge columns every edge query starts with ([`edge_columns`]); provenance
/// comes later.
fn edge_from_row(r: &Row<'_>) -> rusqlite::Result<EdgeView> {
    Ok(EdgeView {
        id: r.get(0)?,
        src_id: r.get(1)?,
        dst_id: r.get(2)?,
        edge_type: r.get(3)?,
        props: edge_props::read(r.get_ref(4)?),
        // Absent only if the cited file version is gone, which a purge never leaves behind.
        created_by: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        provenance: Vec::new(),
    })
}

fn subgraph(
    conn: &Connection,
    ids: &[String],
    edges: Vec<EdgeView>,
    at: Option<&Instant>,
) -> Result<Subgraph, Error> {
    let mut nodes = Vec::with_capacity(ids.len());
    for id in ids {
        nodes.push(match at {
            None => current_node(conn, id)?,
            Some(t) => node_at(conn, id, t)?.ok_or_else(|| not_at(id, t))?,
        });
    }
    let mut with_provenance = Vec::with_capacity(edges.len());
    for mut edge in edges {
        // A structural edge (`parts`) comes with its citation.
        if let Some(t) = at {
            edge.provenance = history::edge_citations_at(conn, &edge.id, t)?;
        } else if edge.provenance.is_empty() {
            edge.provenance = provenance(conn, PROVENANCE_OF_EDGE, &edge.id)?;
        }
        with_provenance.push(edge);
    }
    Ok(Subgraph {
        nodes,
        edges: with_provenance,
    })
}

/// The two queries for a node's current edges to current neighbours, one per direction. Each
/// filters on the indexed end (`edges_current` for outgoing, `edges_dst` for incoming).
struct IncidentQueries {
    out: String,
    into: String,
    types: Vec<String>,
    /// A past walk: stored edges only (see [`neighbors_at`]).
    past: bool,
}

impl IncidentQueries {
    fn new(edge_types: &[String], at: Option<&Instant>) -> IncidentQueries {
        let (node_held, edge_held) = match at {
            None => (
                "n.valid_to IS NULL".to_owned(),
                "e.valid_to IS NULL".to_owned(),
            ),
            Some(t) => (history::held_at("n", t), history::held_at("e", t)),
        };
        let filter = if edge_types.is_empty() {
            String::new()
        } else {
            let marks: Vec<String> = (0..edge_types.len())
                .map(|i| format!("?{}", i + 2))
                .collect();
            format!(" AND e.type IN ({})", marks.join(", "))
        };
        let query = |near: &str, far: &str| {
            format!(
                "SELECT {}
                 FROM edges e JOIN nodes n ON n.id = e.{far} AND {node_held}
                 WHERE e.{near} = ?1 AND {edge_held}{filter}
                 ORDER BY e.type, e.{far}, e.key, e.id",
                edge_columns!()
            )
        };
        IncidentQueries {
            out: query("src_id", "dst_id"),
            into: query("dst_id", "src_id"),
            types: edge_types.to_vec(),
            past: at.is_some(),
        }
    }

    /// Edges at `at` with the node at their other end: outgoing first, then incoming.
    fn incident(
        &self,
        conn: &Connection,
        direction: Direction,
        at: &str,
    ) -> Result<Vec<(EdgeView, String)>, Error> {
        let mut found = Vec::new();
        // Stored and structural edges of one direction, together in (type, other end) order;
        // the sort is stable, so stored edges keep their order within that.
        let mut merge = |mut stored: Vec<(EdgeView, String)>, dir: Direction| {
            if !self.past {
                stored.extend(parts::incident(conn, dir, &self.types, at)?);
            }
            stored.sort_by(|a, b| (&a.0.edge_type, &a.1).cmp(&(&b.0.edge_type, &b.1)));
            found.extend(stored);
            Ok::<_, Error>(())
        };
        if matches!(direction, Direction::Out | Direction::Both) {
            let out = self.run(conn, &self.out, at)?;
            merge(
                out.into_iter()
                    .map(|e| {
                        let other = e.dst_id.clone();
                        (e, other)
                    })
                    .collect(),
                Direction::Out,
            )?;
        }
        if matches!(direction, Direction::In | Direction::Both) {
            let into = self.run(conn, &self.into, at)?;
            merge(
                into.into_iter()
                    .map(|e| {
                        let other = e.src_id.clone();
                        (e, other)
                    })
                    .collect(),
                Direction::In,
            )?;
        }
        Ok(found)
    }

    fn run(&self, conn: &Connection, sql: &str, at: &str) -> Result<Vec<EdgeView>, Error> {
        let mut stmt = conn.prepare_cached(sql)?;
        let args = std::iter::once(at).chain(self.types.iter().map(String::as_str));
        let rows = stmt.query_map(params_from_iter(args), edge_from_row)?;
        Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
    }
}

fn node_id_by_path(conn: &Connection, path: &Path) -> Result<Option<String>, Error> {
    if !path.is_absolute() {
        return Err(Error::new(
            Kind::InvalidParams,
            format!("path must be absolute: {}", path.display()),
        ));
    }
    let mut roots: Vec<(i64, String)> = {
        let mut stmt = conn.prepare_cached("SELECT id, path FROM roots")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    // A file under nested roots belongs to the innermost one.
    roots.sort_by_key(|(id, root)| (std::cmp::Reverse(Path::new(root).components().count()), *id));
    let mut stmt = conn.prepare_cached(
        "SELECT n.id FROM sources s
         JOIN nodes n ON n.source_id = s.id AND n.valid_to IS NULL AND n.kind IN ('note', 'file')
         WHERE s.root_id = ?1 AND s.rel_path = ?2 AND s.deleted_at IS NULL
         ORDER BY n.kind = 'note' DESC, n.id
         LIMIT 1",
    )?;
    for (root_id, root) in roots {
        let Some(rel) = path.strip_prefix(&root).ok().and_then(rel_path_of) else {
            continue;
        };
        if let Some(id) = stmt
            .query_row(params![root_id, rel], |r| r.get(0))
            .optional()?
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The '/'-separated form sources store, or None for anything that cannot be a stored
/// relative path (empty, `..`, not UTF-8).
fn rel_path_of(rel: &Path) -> Option<String> {
    let mut parts = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(part) => parts.push(part.to_str()?),
            _ => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

fn node_id_by_title(conn: &Connection, title: &str) -> Result<Option<String>, Error> {
    let title = title.trim();
    if title.is_empty() {
        return Err(Error::new(Kind::InvalidParams, "title must not be empty"));
    }
    let by_title = conn
        .prepare_cached(
            "SELECT n.id FROM nodes n LEFT JOIN sources s ON s.id = n.source_id
             WHERE n.title = ?1 COLLATE NOCASE AND n.kind IN ('note', 'file')
               AND n.valid_to IS NULL
             ORDER BY length(s.rel_path) - length(replace(s.rel_path, '/', '')) NULLS LAST,
                      s.rel_path NULLS LAST, n.id
             LIMIT 1",
        )?
        .query_row([title], |r| r.get(0))
        .optional()?;
    if by_title.is_some() {
        return Ok(by_title);
    }
    // `root_id IN (...)` lets the lookup use the (root_id, name) index; roots are few.
    let by_name = conn
        .prepare_cached(
            "SELECT n.id FROM note_names nn
             JOIN nodes n ON n.rid = nn.node AND n.valid_to IS NULL
             WHERE nn.root_id IN (SELECT id FROM roots) AND nn.name = ?1
               AND nn.how IN ('stem', 'alias')
             ORDER BY nn.depth, nn.rel_path, n.id
             LIMIT 1",
        )?
        .query_row([title.to_lowercase()], |r| r.get(0))
        .optional()?;
    Ok(by_name)
}

/// A search query, lowercased once.
struct Query {
    text: String,
    /// Its characters without whitespace, for the fuzzy tier.
    fuzzy: Vec<char>,
}

impl Query {
    fn new(raw: &str) -> Query {
        let text = raw.trim().to_lowercase();
        let fuzzy = text.chars().filter(|c| !c.is_whitespace()).collect();
        Query { text, fuzzy }
    }

    /// The tier of `candidate` (lowercased), best 4; None when it does not match at all.
    fn tier(&self, candidate: &str) -> Option<u8> {
        let q = self.text.as_str();
        if candidate == q {
            Some(4)
        } else if candidate.starts_with(q) {
            Some(3)
        } else if is_word_prefix(candidate, q) {
            Some(2)
        } else if candidate.contains(q) {
            Some(1)
        } else if is_subsequence(candidate, &self.fuzzy) {
            Some(0)
        } else {
            None
        }
    }
}

/// Whether `q` starts at the beginning of a word of `s` other than the first.
fn is_word_prefix(s: &str, q: &str) -> bool {
    let mut prev_alnum = true;
    for (i, c) in s.char_indices() {
        let alnum = c.is_alphanumeric();
        if alnum && !prev_alnum && s[i..].starts_with(q) {
            return true;
        }
        prev_alnum = alnum;
    }
    false
}

fn is_subsequence(s: &str, q: &[char]) -> bool {
    let mut want = q.iter().peekable();
    for c in s.chars() {
        if want.peek() == Some(&&c) {
            want.next();
        }
    }
    want.peek().is_none()
}

/// `%`, `_` and the escape character itself, escaped for `LIKE ... ESCAPE '\'`.
pub(crate) fn escape_like(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Where a candidate string came from; note_names holds names lowercased, so the display form
/// is recovered from the node's aliases or file name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Origin {
    Title,
    Alias,
    Stem { rel_path: String },
}

#[derive(Debug, Clone)]
struct Candidate {
    node_id: String,
    text: String,
    lower: String,
    origin: Origin,
    tier: u8,
    len: usize,
}

impl Candidate {
    /// Best first: higher tier, then shorter, then alphabetical, then node id.
    fn rank(a: &Candidate, b: &Candidate) -> Ordering {
        b.tier
            .cmp(&a.tier)
            .then(a.len.cmp(&b.len))
            .then_with(|| a.lower.cmp(&b.lower))
            .then_with(|| a.node_id.cmp(&b.node_id))
    }
}

/// Reads titles and names matching the LIKE `pattern` and keeps each node's best match.
fn collect_candidates(
    conn: &Connection,
    query: &Query,
    pattern: &str,
    best: &mut HashMap<String, Candidate>,
) -> Result<(), Error> {
    let mut keep = |node_id: String, text: String, origin: Origin| {
        let lower = text.to_lowercase();
        let Some(tier) = query.tier(&lower) else {
            return;
        };
        let len = text.chars().count();
        let c = Candidate {
            node_id,
            text,
            lower,
            origin,
            tier,
            len,
        };
        match best.get(&c.node_id) {
            Some(old) if Candidate::rank(old, &c) != Ordering::Greater => {}
            _ => {
                best.insert(c.node_id.clone(), c);
            }
        }
    };
    let mut titles = conn.prepare_cached(
        "SELECT id, title FROM nodes
         WHERE valid_to IS NULL AND kind IN ('note', 'file') AND title IS NOT NULL
           AND title LIKE ?1 ESCAPE '\\'
         LIMIT ?2",
    )?;
    let rows = titles.query_map(params![pattern, TITLE_SCAN_CAP], |r| {
        Ok((r.get(0)?, r.get(1)?))
    })?;
    for row in rows {
        let (id, title) = row?;
        keep(id, title, Origin::Title);
    }
    let mut names = conn.prepare_cached(
        "SELECT n.id, nn.name, nn.how, nn.rel_path FROM note_names nn
         JOIN nodes n ON n.rid = nn.node AND n.valid_to IS NULL
           AND n.kind IN ('note', 'file')
         WHERE nn.how IN ('stem', 'alias') AND nn.name LIKE ?1 ESCAPE '\\'
         LIMIT ?2",
    )?;
    let rows = names.query_map(params![pattern, TITLE_SCAN_CAP], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?))
    })?;
    for row in rows {
        let (id, name, how, rel_path) = row?;
        let origin = match how.as_str() {
            "alias" => Origin::Alias,
            _ => Origin::Stem { rel_path },
        };
        keep(id, name, origin);
    }
    Ok(())
}

fn title_hit(conn: &Connection, query: &Query, c: Candidate) -> Result<Option<TitleHit>, Error> {
    let row = conn
        .prepare_cached(
            "SELECT n.id, n.kind, n.title, n.aliases, r.path, s.rel_path
             FROM nodes n
             LEFT JOIN sources s ON s.id = n.source_id
             LEFT JOIN roots r ON r.id = s.root_id
             WHERE n.id = ?1 AND n.valid_to IS NULL",
        )?
        .query_row([&c.node_id], |r| {
            Ok((
                NodeSummary {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    title: r.get(2)?,
                    path: file_path(r.get(4)?, r.get(5)?),
                },
                r.get::<_, Option<String>>(3)?.unwrap_or_default(),
            ))
        })
        .optional()?;
    let Some((node, aliases)) = row else {
        return Ok(None);
    };
    let matched = match &c.origin {
        Origin::Title => Some(c.text.clone()),
        Origin::Alias => parse_aliases(&aliases)
            .into_iter()
            .find(|a| a.to_lowercase() == c.lower),
        Origin::Stem { rel_path } => {
            Some(file_stem(rel_path).to_owned()).filter(|stem| stem.to_lowercase() == c.lower)
        }
    }
    .unwrap_or_else(|| c.text.clone());
    let covered = if c.tier == 0 {
        query.fuzzy.len()
    } else {
        query.text.chars().count()
    };
    let coverage = (covered as f64 / c.len.max(1) as f64).min(1.0);
    Ok(Some(TitleHit {
        node,
        matched,
        score: f64::from(c.tier) + coverage,
    }))
}

/// The file name of a '/'-separated path without its last extension (`a/b.c.md` → `b.c`).
fn file_stem(rel_path: &str) -> &str {
    let name = rel_path.rsplit('/').next().unwrap_or(rel_path);
    match name.rfind('.') {
        Some(dot) if dot > 0 => &name[..dot],
        _ => name,
    }
}

fn root_filter(root: &Path) -> Result<String, Error> {
    if !root.is_absolute() {
        return Err(Error::new(
            Kind::InvalidParams,
            format!("root must be an absolute path: {}", root.display()),
        ));
    }
    // Rebuilding from components drops a trailing '/' and inner '.' segments.
    let normal: PathBuf = root.components().collect();
    normal.to_str().map(str::to_owned).ok_or_else(|| {
        Error::new(
            Kind::InvalidParams,
            format!("root is not valid UTF-8: {}", root.display()),
        )
    })
}

fn file_path(root: Option<String>, rel_path: Option<String>) -> Option<String> {
    Some(join_path(&root?, &rel_path?))
}

fn join_path(root: &str, rel_path: &str) -> String {
    format!("{}/{rel_path}", root.trim_end_matches('/'))
}

/// Parses a JSON column; a malformed value reads as `fallback` rather than failing the query.
fn json_or(text: &str, fallback: serde_json::Value) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or(fallback)
}

/// A props column as an object; anything else (malformed, an array) reads as `{}`.
fn props_of(text: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        _ => serde_json::Value::Object(serde_json::Map::new()),
    }
}

/// The string entries of an aliases column; anything else in it is ignored.
fn parse_aliases(text: &str) -> Vec<String> {
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(items)) => items
            .into_iter()
            .filter_map(|v| match v {
                serde_json::Value::String(s) => Some(s),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Words of a title query that may each be a typo; more words than a person types into a
/// quick switcher are matched by [`search_title`] alone.
const MAX_TYPO_WORDS: usize = 8;

/// Title search as a person types it: [`search_title`]'s hits over notes and files, plus
/// every other titled kind (tags, link placeholders, nodes written by workflows) matched the
/// same way, plus titles of any kind whose words each match a query word within a few typos
/// ("metting notes" finds "Meeting notes": one edit in a word of 4 to 7 characters, two from
/// 8, none below, as Obsidian's quick switcher allows). Sections and chunks are structure,
/// not things one names, and are left out. Typo hits rank below the others; `limit` is
/// clamped to [`MAX_SEARCH_LIMIT`].
pub fn search_title_tolerant(
    conn: &Connection,
    query: &str,
    limit: usize,
) -> Result<Vec<TitleHit>, Error> {
    let limit = limit.min(MAX_SEARCH_LIMIT);
    let q = Query::new(query);
    let words = typo_words(&q.text);
    // One snapshot for both passes; `search_title` joins it.
    in_snapshot(conn, |conn| {
        let mut hits = search_title(conn, query, limit)?;
        if q.text.is_empty() || limit == 0 {
            return Ok(hits);
        }
        let seen: HashSet<String> = hits.iter().map(|h| h.node.id.clone()).collect();
        let mut more: Vec<(f64, Candidate)> = Vec::new();
        let mut stmt = conn.prepare_cached(
            "SELECT id, kind, title FROM nodes
             WHERE valid_to IS NULL AND title IS NOT NULL
               AND kind NOT IN ('section', 'chunk')
             LIMIT ?1",
        )?;
        let rows = stmt.query_map([TITLE_SCAN_CAP], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?))
        })?;
        for row in rows {
            let (id, kind, title): (String, String, String) = row?;
            if seen.contains(&id) {
                continue;
            }
            let lower = title.to_lowercase();
            let len = title.chars().count();
            // Notes and files were ranked by `search_title` already, with their names.
            let tier = if matches!(kind.as_str(), "note" | "file") {
                None
            } else {
                q.tier(&lower)
            };
            let score = match (tier, typo_distance(&words, &lower)) {
                (Some(t), _) => {
                    let covered = if t == 0 {
                        q.fuzzy.len()
                    } else {
                        q.text.chars().count()
                    };
                    f64::from(t) + (covered as f64 / len.max(1) as f64).min(1.0)
                }
                // Below every other tier: within 0..1, fewer edits first.
                (None, Some(edits)) => -1.0 + 1.0 / (1.0 + edits as f64) * 0.999,
                (None, None) => continue,
            };
            more.push((
                score,
                Candidate {
                    node_id: id,
                    text: title,
                    lower,
                    origin: Origin::Title,
                    tier: 0,
                    len,
                },
            ));
        }
        more.sort_by(|a, b| {
            b.0.total_cmp(&a.0)
                .then_with(|| Candidate::rank(&a.1, &b.1))
        });
        for (score, c) in more {
            if let Some(mut hit) = title_hit(conn, &q, c)? {
                hit.score = score;
                hits.push(hit);
            }
        }
        hits.sort_by(|a, b| b.score.total_cmp(&a.score));
        hits.truncate(limit);
        Ok(hits)
    })
}

/// A query's words, lowercased, at most [`MAX_TYPO_WORDS`] of them.
fn typo_words(text: &str) -> Vec<Vec<char>> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .take(MAX_TYPO_WORDS)
        .map(|w| w.chars().collect())
        .collect()
}

/// Edits a word of `len` characters may carry and still match.
fn typos_allowed(len: usize) -> usize {
    match len {
        0..=3 => 0,
        4..=7 => 1,
        _ => 2,
    }
}

/// Total edits when every query word matches a distinct-or-not word of `title` (lowercased)
/// within its allowance, or a prefix of one (as typed so far); None when one does not.
fn typo_distance(words: &[Vec<char>], title: &str) -> Option<usize> {
    if words.is_empty() {
        return None;
    }
    let title_words: Vec<Vec<char>> = typo_words(title);
    let mut total = 0;
    for w in words {
        let allowed = typos_allowed(w.len());
        let best = title_words
            .iter()
            .map(|t| {
                let whole = edit_distance(w, t);
                // A word typed only in part: compare with the same length of the title word.
                let part = if t.len() > w.len() {
                    edit_distance(w, &t[..w.len()])
                } else {
                    whole
                };
                whole.min(part)
            })
            .min()?;
        if best > allowed {
            return None;
        }
        total += best;
    }
    Some(total)
}

/// Optimal string alignment distance: insertions, deletions, substitutions and swaps of two
/// neighbouring characters each count one.
fn edit_distance(a: &[char], b: &[char]) -> usize {
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    d[0] = (0..=m).collect();
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// [`source_list`] for any folder inside a root, not only a root itself: the sources of the
/// root that holds `folder` (the innermost, should roots ever nest) whose relative path lies
/// under it. A folder inside no root matches nothing.
pub fn source_list_under(
    conn: &Connection,
    status: Option<&str>,
    folder: Option<&Path>,
    limit: usize,
    offset: usize,
) -> Result<(Vec<SourceView>, u64), Error> {
    let Some(folder) = folder else {
        return source_list(conn, status, None, limit, offset);
    };
    let folder = root_filter(folder)?;
    let roots: Vec<String> = {
        let mut stmt = conn.prepare_cached("SELECT path FROM roots WHERE removed_at IS NULL")?;
        stmt.query_map([], |r| r.get(0))?
            .collect::<rusqlite::Result<_>>()?
    };
    let holder = roots
        .into_iter()
        .filter(|r| Path::new(&folder).starts_with(r))
        .max_by_key(String::len);
    let Some(root) = holder else {
        return source_list(conn, status, Some(Path::new(&folder)), limit, offset);
    };
    if root == folder {
        return source_list(conn, status, Some(Path::new(&folder)), limit, offset);
    }
    // Checked by `source_list` on the same value.
    if let Some(s) = status
        && SourceStatus::parse(s).is_none()
    {
        return source_list(conn, status, None, limit, offset);
    }
    let rel = Path::new(&folder)
        .strip_prefix(&root)
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let pattern = format!("{}/%", escape_like(&rel));
    list_sources(conn, status, Some(&root), Some(&pattern), limit, offset)
}

#[cfg(test)]
mod tolerant_tests {
    use super::*;

    #[test]
    fn typos_within_the_allowance_match() {
        let check = |q: &str, title: &str, want: Option<usize>| {
            assert_eq!(typo_distance(&typo_words(q), title), want, "{q} / {title}");
        };
        check("metting notes", "meeting notes", Some(1));
        check("meeting", "meeting notes", Some(0));
        check("meetnig", "meeting notes", Some(1));
        check("mtg", "meeting notes", None);
        check("cat", "car", None);
        check("projct alpha", "project alpha", Some(1));
        check("archtecture", "architecture", Some(1));
        check("zebra", "meeting notes", None);
        check("", "meeting notes", None);
    }

    #[test]
    fn edit_distance_counts_swaps_once() {
        let d = |a: &str, b: &str| {
            let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
            edit_distance(&a, &b)
        };
        assert_eq!(d("abc", "abc"), 0);
        assert_eq!(d("abc", "acb"), 1);
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("", "ab"), 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// A vault at /vault (and a second root at /other) with notes A, B, C, a deeper second
    /// `b.md`, a few title-only notes for ranking, sections, a chunk, a tag, a placeholder,
    /// and retired rows that must stay invisible.
    const FIXTURE: &str = "
        INSERT INTO roots(id, path, added_by, added_at) VALUES
            (1, '/vault', 'user:u', '2024'), (2, '/other', 'user:u', '2024');
        INSERT INTO sources(id, root_id, rel_path, file_type, status, reason, size, content_hash,
                            diagnostics, first_seen_at, last_seen_at, indexed_at, deleted_at) VALUES
            (1, 1, 'a.md',       'markdown', 'indexed', NULL, 120, 'ha', '[]', 't', 't1', 'i1', NULL),
            (2, 1, 'notes/b.md', 'markdown', 'indexed', NULL, 80,  'hb', '[{\"line\":3}]', 't', 't2', 'i2', NULL),
            (3, 1, 'c.md',       'markdown', 'indexed', NULL, 40,  'hc', 'oops', 't', 't3', 'i3', NULL),
            (4, 1, 'img.png',    'other',    'skipped', 'binary', 9, NULL, '[]', 't', 't4', NULL, NULL),
            (5, 1, 'old.md',     'markdown', 'indexed', NULL, 10,  'ho', '[]', 't', 't5', 'i5', 'gone'),
            (6, 1, 'x/y/b.md',   'markdown', 'indexed', NULL, 20,  'hy', '[]', 't', 't6', 'i6', NULL),
            (7, 2, 'broken.md',  'markdown', 'failed',  'bad utf-8', 5, NULL, '[]', 't', 't7', NULL, NULL),
            (8, 2, 'new.md',     'markdown', 'pending', NULL, NULL, NULL, '[]', 't', 't8', NULL, NULL);
        INSERT INTO nodes(id, kind, key, title, aliases, props, content, source_id, parent_id,
                          owner_id, valid_from, valid_to, created_at, updated_at) VALUES
            ('n-a',  'note', 'source:1', 'Alpha', '[\"First Letter\", 7]', '{\"status\":\"draft\"}', NULL, 1, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('n-a0', 'note', 'source:1', 'Alpha', '[]', '{}', NULL, 1, NULL, 'user:u', 'v0', 'v1', 't', 't'),
            ('n-b',  'note', 'notes/b.md', 'Beta Notes', 'not json', '[1]', NULL, 2, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('n-c',  'note', 'c.md', 'Gamma', '[]', 'bad', NULL, 3, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('n-b2', 'note', 'x/y/b.md', 'Beta Deep', '[]', '{}', NULL, 6, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('n-old','note', 'old.md', 'Old', '[]', '{}', NULL, 5, NULL, 'user:u', 'v0', 'v1', 't', 't'),
            ('f-img','file', 'img.png', NULL, '[]', '{}', NULL, 4, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('t-x',  'tag', 'x', '#x', '[]', '{}', NULL, NULL, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('p-d',  'placeholder', '1:delta', 'Delta', '[]', '{}', NULL, NULL, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('n-h',  'note', 'h', 'BETA', '[]', '{}', NULL, NULL, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('n-e',  'note', 'e', 'About beta', '[]', '{}', NULL, NULL, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('n-f',  'note', 'f', 'Alphabetagram', '[]', '{}', NULL, NULL, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('n-g',  'note', 'g', 'Bet a lot', '[]', '{}', NULL, NULL, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('n-u',  'note', 'u', 'Über Alles', '[]', '{}', NULL, NULL, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('n-p',  'note', 'p', '100% Done', '[]', '{}', NULL, NULL, NULL, 'user:u', 'v1', NULL, 't', 't'),
            ('n-q',  'note', 'q', '1000 Days', '[]', '{}', NULL, NULL, NULL, 'user:u', 'v1', NULL, 't', 't');
        INSERT INTO edges(id, src_id, dst_id, type, key, props, created_by, valid_from, valid_to, created_at) VALUES
            ('e1',   'n-a',  'n-b',  'links_to',    '', '{\"kind\":\"wiki\"}', 'user:u', 'v1', NULL, 't'),
            ('e2',   'n-c',  'n-a',  'links_to',    '', '{}', 'user:u', 'v1', NULL, 't'),
            ('e5',   'n-a',  't-x',  'tagged',      '', '{}', 'user:u', 'v1', NULL, 't'),
            ('e6',   'n-b',  'p-d',  'links_to',    '', '{}', 'user:u', 'v1', NULL, 't'),
            ('e7',   'n-b',  'n-c',  'mentions',    '', 'nope', 'user:u', 'v1', NULL, 't'),
            ('e8',   'n-old','n-a',  'links_to',    '', '{}', 'user:u', 'v1', NULL, 't'),
            ('e10',  'n-b2', 'n-a',  'links_to',    '', '{}', 'user:u', 'v1', NULL, 't'),
            ('e-old','n-b',  'n-a',  'links_to',    '', '{}', 'user:u', 'v0', 'v1', 't');
        INSERT INTO provenance(id, node_id, edge_id, source_id, byte_start, byte_end, line_start,
                               line_end, content_hash, extractor, extractor_version, actor_id,
                               run_id, step_key, recorded_at, valid_to) VALUES
            (1, 'n-a', NULL, 1, 50, 80, 5, 6, 'ha', 'markdown', '1', 'user:u', NULL, NULL, 'r1', NULL),
            (3, 'n-a', NULL, NULL, NULL, NULL, NULL, NULL, NULL, 'workflow', '2', 'user:w', 'run-1', 'tag[0]', 'r3', NULL),
            (4, 'n-a', NULL, 1, 0, 10, 1, 1, 'h0', 'markdown', '0', 'user:u', NULL, NULL, 'r0', 'v1'),
            (6, 'n-b', NULL, 2, -1, 5, 1, 1, 'hb', 'markdown', '1', 'user:u', NULL, NULL, 'r5', NULL);
        -- A's structure (schema/0010), with the ids its structural edges had as rows.
        INSERT INTO sections(legacy_id, source_id, ordinal, key, level, valid_from, edge_id) VALUES
            ('s-a1', 1, 0, '[\"Intro\"]#1', 1, 0, 'e3');
        INSERT INTO chunks(legacy_id, source_id, ordinal, key, content, valid_from, edge_id) VALUES
            ('c-a1', 1, 0, 'h#1', 'hello world', 0, 'e4'),
            ('c-a0', 1, 1, 'g#1', 'gone', 0, NULL);
        UPDATE chunks SET valid_to = 1 WHERE legacy_id = 'c-a0';
        -- Citations kept on the facts themselves (schema/0007), beside the rows above.
        INSERT INTO source_versions(id, source_id, content_hash, extractor, extractor_version,
                                    actor_id, recorded_at) VALUES
            (1, 1, 'ha', 'markdown', '1', 'user:u', 'r2'),
            (2, 1, 'ha', 'markdown', '1', 'user:u', 'r4');
        UPDATE nodes SET cite_version = 1, cite_byte_start = 0, cite_byte_end = 40,
                         cite_line_start = 1, cite_line_end = 4 WHERE id = 'n-a';
        UPDATE edges SET cite_version = 2, cite_byte_start = 10, cite_byte_end = 17,
                         cite_line_start = 2, cite_line_end = 2 WHERE id = 'e1';
        INSERT INTO note_names(root_id, name, how, node, depth, rel_path)
        SELECT v.column1, v.column2, v.column3, n.rid, v.column5, v.column6
        FROM (VALUES
            (1, 'a', 'stem', 'n-a', 0, 'a.md'),
            (1, 'a', 'path', 'n-a', 0, 'a.md'),
            (1, 'first letter', 'alias', 'n-a', 0, 'a.md'),
            (1, 'b', 'stem', 'n-b2', 2, 'x/y/b.md'),
            (1, 'b', 'stem', 'n-b', 1, 'notes/b.md'),
            (1, 'notes/b', 'path', 'n-b', 1, 'notes/b.md'),
            (1, 'c', 'stem', 'n-c', 0, 'c.md'),
            (1, 'old', 'stem', 'n-old', 0, 'old.md')) v
        JOIN nodes n ON n.id = v.column4;
    ";

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("brain.db")).unwrap();
        store.write(|tx| tx.execute_batch(FIXTURE)).unwrap();
        (dir, store)
    }

    fn ids(nodes: &[NodeView]) -> Vec<&str> {
        nodes.iter().map(|n| n.id.as_str()).collect()
    }

    fn edge_ids(edges: &[EdgeView]) -> Vec<&str> {
        edges.iter().map(|e| e.id.as_str()).collect()
    }

    fn prov(
        path: Option<&str>,
        lines: Option<(u32, u32)>,
        bytes: Option<(u64, u64)>,
        recorded_at: &str,
    ) -> Provenance {
        Provenance {
            path: path.map(str::to_owned),
            lines,
            bytes,
            content_hash: Some("ha".into()),
            extractor: "markdown".into(),
            extractor_version: "1".into(),
            actor_id: "user:u".into(),
            run_id: None,
            step_key: None,
            recorded_at: recorded_at.into(),
        }
    }

    #[test]
    fn node_get_returns_the_current_node_with_its_provenance() {
        let (_dir, store) = store();
        let got = store
            .read(|c| node_get(c, &NodeRef::Id("n-a".into())))
            .unwrap();
        let workflow = Provenance {
            path: None,
            lines: None,
            bytes: None,
            content_hash: None,
            extractor: "workflow".into(),
            extractor_version: "2".into(),
            actor_id: "user:w".into(),
            run_id: Some("run-1".into()),
            step_key: Some("tag[0]".into()),
            recorded_at: "r3".into(),
        };
        let want = NodeView {
            id: "n-a".into(),
            kind: "note".into(),
            key: "source:1".into(),
            title: Some("Alpha".into()),
            path: Some("/vault/a.md".into()),
            aliases: vec!["First Letter".into()],
            props: serde_json::json!({"status": "draft"}),
            content: None,
            parent_id: None,
            owner_id: "user:u".into(),
            valid_from: "v1".into(),
            valid_to: None,
            provenance: vec![
                prov(Some("/vault/a.md"), Some((1, 4)), Some((0, 40)), "r2"),
                prov(Some("/vault/a.md"), Some((5, 6)), Some((50, 80)), "r1"),
                workflow,
            ],
        };
        assert_eq!(got, want);
    }

    #[test]
    fn node_get_tolerates_bad_json_and_broken_spans() {
        let (_dir, store) = store();
        let b = store
            .read(|c| node_get(c, &NodeRef::Id("n-b".into())))
            .unwrap();
        assert_eq!(b.aliases, Vec::<String>::new());
        assert_eq!(b.props, serde_json::json!({}));
        assert_eq!(b.path.as_deref(), Some("/vault/notes/b.md"));
        assert_eq!(b.provenance.len(), 1);
        assert_eq!(b.provenance[0].bytes, None);
        assert_eq!(b.provenance[0].lines, Some((1, 1)));
        let chunk = store
            .read(|c| node_get(c, &NodeRef::Id("c-a1".into())))
            .unwrap();
        assert_eq!(chunk.parent_id.as_deref(), Some("n-a"));
        assert_eq!(chunk.content.as_deref(), Some("hello world"));
        assert_eq!(
            (
                chunk.kind.as_str(),
                chunk.key.as_str(),
                chunk.title.as_deref()
            ),
            ("chunk", "n-a/c/h#1", Some(""))
        );
        assert_eq!(chunk.props, serde_json::json!({"heading_path": []}));
        assert_eq!(chunk.path.as_deref(), Some("/vault/a.md"));
        let section = store
            .read(|c| node_get(c, &NodeRef::Id("s-a1".into())))
            .unwrap();
        assert_eq!(
            (section.key.as_str(), section.title.as_deref()),
            ("n-a/h/[\"Intro\"]#1", Some("Intro"))
        );
        assert_eq!(
            section.props,
            serde_json::json!({"level": 1, "heading_path": ["Intro"]})
        );
        let retired = store.read(|c| node_get(c, &NodeRef::Id("c-a0".into())));
        assert_eq!(retired.map_err(|e| e.kind), Err(Kind::NodeNotFound));
        let tag = store
            .read(|c| node_get(c, &NodeRef::Id("t-x".into())))
            .unwrap();
        assert_eq!((tag.path, tag.provenance), (None, vec![]));
    }

    #[test]
    fn node_get_resolves_ids_paths_and_titles() {
        let (_dir, store) = store();
        let check = |r: NodeRef, want: Result<&str, (Kind, &str)>| {
            let got = store.read(|c| node_get(c, &r));
            let got = got
                .as_ref()
                .map(|n| n.id.as_str())
                .map_err(|e| (e.kind, e.message.as_str()));
            assert_eq!(got, want, "{r:?}");
        };
        let id = |s: &str| NodeRef::Id(s.into());
        let path = |s: &str| NodeRef::Path(PathBuf::from(s));
        let title = |s: &str| NodeRef::Title(s.into());
        let missing = Kind::NodeNotFound;

        check(id("n-c"), Ok("n-c"));
        check(id("p-d"), Ok("p-d"));
        check(id("n-old"), Err((missing, "node not found: n-old")));
        check(id("n-a0"), Err((missing, "node not found: n-a0")));
        check(id("nope"), Err((missing, "node not found: nope")));

        check(path("/vault/a.md"), Ok("n-a"));
        check(path("/vault/notes/b.md"), Ok("n-b"));
        check(path("/vault/./notes/b.md"), Ok("n-b"));
        check(path("/vault/x/y/b.md"), Ok("n-b2"));
        check(path("/vault/img.png"), Ok("f-img"));
        check(
            path("/other/new.md"),
            Err((missing, "no note or file at /other/new.md")),
        );
        check(
            path("/vault/old.md"),
            Err((missing, "no note or file at /vault/old.md")),
        );
        check(
            path("/vault/x.md"),
            Err((missing, "no note or file at /vault/x.md")),
        );
        check(
            path("/vaultx/a.md"),
            Err((missing, "no note or file at /vaultx/a.md")),
        );
        check(path("/vault"), Err((missing, "no note or file at /vault")));
        check(
            path("/vault/../vault/a.md"),
            Err((missing, "no note or file at /vault/../vault/a.md")),
        );
        check(
            path("a.md"),
            Err((Kind::InvalidParams, "path must be absolute: a.md")),
        );

        check(title("Alpha"), Ok("n-a"));
        check(title("  gAMMA "), Ok("n-c"));
        check(title("beta deep"), Ok("n-b2"));
        check(title("first LETTER"), Ok("n-a"));
        check(title("B"), Ok("n-b"));
        check(title("a"), Ok("n-a"));
        check(
            title("notes/b"),
            Err((missing, "no note titled \"notes/b\"")),
        );
        check(title("Delta"), Err((missing, "no note titled \"Delta\"")));
        check(title("Old"), Err((missing, "no note titled \"Old\"")));
        check(
            title(" "),
            Err((Kind::InvalidParams, "title must not be empty")),
        );
    }

    #[test]
    fn search_title_ranks_exact_prefix_word_substring_fuzzy() {
        let (_dir, store) = store();
        let check = |query: &str, limit: usize, want: &[(&str, &str)]| {
            let hits = store.read(|c| search_title(c, query, limit)).unwrap();
            let got: Vec<(&str, &str)> = hits
                .iter()
                .map(|h| (h.node.id.as_str(), h.matched.as_str()))
                .collect();
            assert_eq!(got, want, "{query:?}");
            let scores: Vec<f64> = hits.iter().map(|h| h.score).collect();
            assert!(
                scores.windows(2).all(|w| w[0] >= w[1]),
                "{query:?} {scores:?}"
            );
        };
        check(
            "beta",
            10,
            &[
                ("n-h", "BETA"),
                ("n-b2", "Beta Deep"),
                ("n-b", "Beta Notes"),
                ("n-e", "About beta"),
                ("n-f", "Alphabetagram"),
                ("n-g", "Bet a lot"),
            ],
        );
        check("beta", 2, &[("n-h", "BETA"), ("n-b2", "Beta Deep")]);
        check("b", 3, &[("n-b", "b"), ("n-b2", "b"), ("n-h", "BETA")]);
        check("first", 5, &[("n-a", "First Letter")]);
        check("letter", 5, &[("n-a", "First Letter")]);
        check("ALPHA", 2, &[("n-a", "Alpha"), ("n-f", "Alphabetagram")]);
        check("über", 5, &[("n-u", "Über Alles")]);
        check("100%", 5, &[("n-p", "100% Done")]);
        check("bt lt", 5, &[("n-g", "Bet a lot")]);
        check("old", 5, &[]);
        check("delta", 5, &[]);
        check("  ", 5, &[]);
        check("beta", 0, &[]);
        // LIKE wildcards in the query are plain characters.
        check("b_ta", 5, &[]);
        check("%eta", 5, &[]);
    }

    #[test]
    fn search_title_refuses_a_query_over_the_byte_limit() {
        let (_dir, store) = store();
        let at = "x".repeat(MAX_TITLE_QUERY_BYTES);
        assert!(store.read(|c| search_title(c, &at, 5)).unwrap().is_empty());
        let over = format!("{at}x");
        let e = store.read(|c| search_title(c, &over, 5)).unwrap_err();
        assert_eq!(e.kind, Kind::InvalidParams);
        assert!(e.message.contains("the limit is 1024"), "{e}");
    }

    #[test]
    fn search_title_reports_node_and_score() {
        let (_dir, store) = store();
        let hits = store.read(|c| search_title(c, "beta", 1)).unwrap();
        let want = TitleHit {
            node: NodeSummary {
                id: "n-h".into(),
                kind: "note".into(),
                title: Some("BETA".into()),
                path: None,
            },
            matched: "BETA".into(),
            score: 5.0,
        };
        assert_eq!(hits, vec![want]);
        let hits = store.read(|c| search_title(c, "b", 1)).unwrap();
        assert_eq!(hits[0].node.path.as_deref(), Some("/vault/notes/b.md"));
        assert_eq!(hits[0].node.title.as_deref(), Some("Beta Notes"));
        let prefix = store.read(|c| search_title(c, "beta d", 1)).unwrap();
        assert_eq!(prefix[0].score, 3.0 + 6.0 / 9.0);
    }

    #[test]
    fn neighbors_walks_current_edges_breadth_first() {
        let (_dir, store) = store();
        type Want<'a> = Result<(Vec<&'a str>, Vec<&'a str>), Kind>;
        let check =
            |id: &str, dir: Direction, types: &[&str], depth: u32, limit: usize, want: Want<'_>| {
                let types: Vec<String> = types.iter().map(|t| t.to_string()).collect();
                let got = store.read(|c| neighbors(c, id, dir, &types, depth, limit));
                let got = got
                    .as_ref()
                    .map(|g| (ids(&g.nodes), edge_ids(&g.edges)))
                    .map_err(|e| e.kind);
                assert_eq!(got, want, "{id} {dir:?} {types:?} {depth} {limit}");
            };
        use Direction::{Both, In, Out};
        check(
            "n-a",
            Out,
            &[],
            1,
            100,
            Ok((
                vec!["c-a1", "s-a1", "n-b", "t-x"],
                vec!["e4", "e3", "e1", "e5"],
            )),
        );
        check(
            "n-a",
            Out,
            &[],
            1,
            2,
            Ok((vec!["c-a1", "s-a1"], vec!["e4", "e3"])),
        );
        check("n-a", Out, &[], 1, 0, Ok((vec![], vec![])));
        check(
            "n-a",
            Out,
            &["links_to"],
            1,
            100,
            Ok((vec!["n-b"], vec!["e1"])),
        );
        check(
            "n-a",
            Out,
            &["links_to"],
            2,
            100,
            Ok((vec!["n-b", "p-d"], vec!["e1", "e6"])),
        );
        check(
            "n-a",
            Out,
            &["links_to", "mentions"],
            3,
            100,
            Ok((vec!["n-b", "p-d", "n-c"], vec!["e1", "e6", "e7", "e2"])),
        );
        check(
            "n-a",
            In,
            &[],
            1,
            100,
            Ok((vec!["n-b2", "n-c"], vec!["e10", "e2"])),
        );
        check(
            "n-a",
            Out,
            &["has_section"],
            1,
            100,
            Ok((vec!["s-a1"], vec!["e3"])),
        );
        check("n-b", Out, &["tagged"], 3, 100, Ok((vec![], vec![])));
        check(
            "n-b",
            Both,
            &[],
            1,
            100,
            Ok((vec!["p-d", "n-c", "n-a"], vec!["e6", "e7", "e1"])),
        );
        check(
            "c-a1",
            In,
            &[],
            2,
            100,
            Ok((vec!["n-a", "n-b2", "n-c"], vec!["e4", "e10", "e2"])),
        );
        check("n-a", Out, &[], 0, 100, Err(Kind::InvalidParams));
        check("n-a", Out, &[], 4, 100, Err(Kind::InvalidParams));
        check("nope", Out, &[], 1, 100, Err(Kind::NodeNotFound));
        check("n-old", Out, &[], 1, 100, Err(Kind::NodeNotFound));
    }

    #[test]
    fn neighbors_carry_node_and_edge_provenance() {
        let (_dir, store) = store();
        let g = store
            .read(|c| neighbors(c, "n-b", Direction::In, &[], 1, 100))
            .unwrap();
        assert_eq!(ids(&g.nodes), ["n-a"]);
        assert_eq!(g.nodes[0].provenance.len(), 3);
        let want = EdgeView {
            id: "e1".into(),
            src_id: "n-a".into(),
            dst_id: "n-b".into(),
            edge_type: "links_to".into(),
            props: serde_json::json!({"kind": "wiki"}),
            created_by: "user:u".into(),
            provenance: vec![prov(
                Some("/vault/a.md"),
                Some((2, 2)),
                Some((10, 17)),
                "r4",
            )],
        };
        assert_eq!(g.edges, vec![want]);
        let g = store
            .read(|c| neighbors(c, "n-b", Direction::Out, &["mentions".into()], 1, 100))
            .unwrap();
        assert_eq!(g.edges[0].props, serde_json::json!({}));
    }

    #[test]
    fn backlinks_count_links_into_the_note() {
        let (_dir, store) = store();
        let check = |id: &str, limit: usize, want: Result<(Vec<&str>, Vec<&str>), Kind>| {
            let got = store.read(|c| backlinks(c, id, limit));
            let got = got
                .as_ref()
                .map(|g| (ids(&g.nodes), edge_ids(&g.edges)))
                .map_err(|e| e.kind);
            assert_eq!(got, want, "{id} {limit}");
        };
        check("n-a", 100, Ok((vec!["n-b2", "n-c"], vec!["e10", "e2"])));
        check("n-a", 1, Ok((vec!["n-b2"], vec!["e10"])));
        check("n-a", 0, Ok((vec![], vec![])));
        check("n-c", 100, Ok((vec!["n-b"], vec!["e7"])));
        check("p-d", 100, Ok((vec!["n-b"], vec!["e6"])));
        check("c-a1", 100, Ok((vec![], vec![])));
        check("t-x", 100, Ok((vec![], vec![])));
        check("n-b2", 100, Ok((vec![], vec![])));
        check("nope", 100, Err(Kind::NodeNotFound));
        check("n-old", 100, Err(Kind::NodeNotFound));
    }

    #[test]
    fn source_list_filters_pages_and_counts() {
        let (_dir, store) = store();
        let check = |status: Option<&str>,
                     root: Option<&str>,
                     limit: usize,
                     offset: usize,
                     want: Result<(Vec<&str>, u64), Kind>| {
            let got = store.read(|c| source_list(c, status, root.map(Path::new), limit, offset));
            let got = got
                .as_ref()
                .map(|(s, total)| (s.iter().map(|s| s.path.as_str()).collect(), *total))
                .map_err(|e| e.kind);
            assert_eq!(got, want, "{status:?} {root:?} {limit} {offset}");
        };
        let all = vec![
            "/other/broken.md",
            "/other/new.md",
            "/vault/a.md",
            "/vault/c.md",
            "/vault/img.png",
            "/vault/notes/b.md",
            "/vault/x/y/b.md",
        ];
        check(None, None, 100, 0, Ok((all, 7)));
        check(
            None,
            None,
            2,
            1,
            Ok((vec!["/other/new.md", "/vault/a.md"], 7)),
        );
        check(None, None, 2, 10, Ok((vec![], 7)));
        check(
            Some("indexed"),
            None,
            100,
            0,
            Ok((
                vec![
                    "/vault/a.md",
                    "/vault/c.md",
                    "/vault/notes/b.md",
                    "/vault/x/y/b.md",
                ],
                4,
            )),
        );
        check(
            Some("indexed"),
            None,
            2,
            1,
            Ok((vec!["/vault/c.md", "/vault/notes/b.md"], 4)),
        );
        check(
            Some("skipped"),
            None,
            100,
            0,
            Ok((vec!["/vault/img.png"], 1)),
        );
        check(
            Some("failed"),
            Some("/other/"),
            100,
            0,
            Ok((vec!["/other/broken.md"], 1)),
        );
        check(
            None,
            Some("/other"),
            100,
            0,
            Ok((vec!["/other/broken.md", "/other/new.md"], 2)),
        );
        check(Some("pending"), Some("/vault"), 100, 0, Ok((vec![], 0)));
        check(None, Some("/nowhere"), 100, 0, Ok((vec![], 0)));
        check(Some("bogus"), None, 100, 0, Err(Kind::InvalidParams));
        check(None, Some("vault"), 100, 0, Err(Kind::InvalidParams));
    }

    #[test]
    fn source_list_returns_every_field() {
        let (_dir, store) = store();
        let (sources, _) = store
            .read(|c| source_list(c, None, Some(Path::new("/vault")), 3, 1))
            .unwrap();
        let want = SourceView {
            id: 3,
            root: "/vault".into(),
            path: "/vault/c.md".into(),
            rel_path: "c.md".into(),
            file_type: "markdown".into(),
            status: SourceStatus::Indexed,
            reason: None,
            size: Some(40),
            content_hash: Some("hc".into()),
            diagnostics: serde_json::json!([]),
            indexed_at: Some("i3".into()),
            last_seen_at: "t3".into(),
        };
        assert_eq!(sources[0], want);
        assert_eq!(sources[2].rel_path, "notes/b.md");
        assert_eq!(sources[2].diagnostics, serde_json::json!([{"line": 3}]));
    }

    #[test]
    fn queries_join_a_callers_transaction() {
        let (_dir, store) = store();
        let got = store
            .write(|tx| node_get(tx, &NodeRef::Id("n-a".into())).map(|n| n.key))
            .unwrap();
        assert_eq!(got, "source:1");
    }

    #[test]
    fn helpers() {
        for (s, q, want) in [
            ("about beta", "beta", true),
            ("my-note", "note", true),
            ("beta", "beta", false),
            ("alphabeta", "beta", false),
        ] {
            assert_eq!(is_word_prefix(s, q), want, "{s} {q}");
        }
        for (s, want) in [("a%b_c\\d", "a\\%b\\_c\\\\d"), ("plain", "plain")] {
            assert_eq!(escape_like(s), want);
        }
        for (p, want) in [
            ("a/b.c.md", "b.c"),
            ("b.md", "b"),
            (".hidden", ".hidden"),
            ("x/y", "y"),
        ] {
            assert_eq!(file_stem(p), want);
        }
        for (root, rel, want) in [("/v", "a.md", "/v/a.md"), ("/", "a.md", "/a.md")] {
            assert_eq!(join_path(root, rel), want);
        }
    }
}
