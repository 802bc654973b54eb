//! Sections and chunks as the graph shows them: nodes of kind `section` and `chunk` with a
//! `has_section`/`has_chunk` edge from their note, derived from the rows of schema 0010 so
//! that `node.get`, `graph.neighbors` and the status counts answer as they did when these
//! were stored as nodes and edges.

use rusqlite::{Connection, OptionalExtension, Row};
use serde_json::{Value, json};

use super::{Direction, EdgeView, NodeView, Provenance, file_path, span};
use crate::clock;
use crate::error::Error;
use crate::store::part_id::{self, PartKind};

/// A part's row, joined with its note and its citation's file version; `{key}` is the key's
/// text (a chunk's is stored compactly, schema 0013).
const PART_COLUMNS: &str = "p.rid, {key}, p.cite_version, p.byte_start, p.byte_end,
     p.line_start, p.line_end, p.valid_from, p.edge_id, n.id, coalesce(v.actor_id, n.owner_id),
     r.path, s.rel_path, v.content_hash, v.extractor, v.extractor_version, v.recorded_at,
     p.legacy_id";

fn part_sql(part: Part, extra: &str, filter: &str) -> String {
    let table = part.table();
    let key = match part {
        Part::Chunk => part_id::chunk_key_text("p.key"),
        Part::Section => "p.key".to_owned(),
    };
    let columns = PART_COLUMNS.replace("{key}", &key);
    format!(
        "SELECT {columns}{extra}
         FROM {table} p
         JOIN nodes n ON n.kind IN ('note', 'file') AND n.key = 'source:' || p.source_id
                     AND n.valid_to IS NULL
         JOIN sources s ON s.id = p.source_id
         JOIN roots r ON r.id = s.root_id
         LEFT JOIN source_versions v ON v.id = p.cite_version
         WHERE {filter} AND p.valid_to IS NULL"
    )
}

type Part = PartKind;

fn kind_name(part: Part) -> &'static str {
    match part {
        Part::Section => "section",
        Part::Chunk => "chunk",
    }
}

fn edge_type(part: Part) -> &'static str {
    match part {
        Part::Section => "has_section",
        Part::Chunk => "has_chunk",
    }
}

/// The infix of the key a node of this kind had: `<note id>/h/<key>`.
fn key_infix(part: Part) -> &'static str {
    match part {
        Part::Section => "h",
        Part::Chunk => "c",
    }
}

/// A chunk's heading path and text; the path is its section's unless written out (schema 0011).
const CHUNK_EXTRA: &str = ", coalesce(p.heading_path, (SELECT s0.path FROM sections s0
        WHERE s0.source_id = p.source_id AND s0.ordinal = p.section AND s0.valid_to IS NULL)),
     p.content";

/// Column 18 onwards: a section's level; a chunk's heading path and text.
fn part_query(part: Part, filter: &str) -> String {
    match part {
        Part::Section => part_sql(part, ", p.level", filter),
        Part::Chunk => part_sql(part, CHUNK_EXTRA, filter),
    }
}

/// A part read from its row: the node it shows as and the structural edge into it.
struct Shown {
    node: NodeView,
    edge: EdgeView,
}

fn shown(part: Part, r: &Row<'_>) -> rusqlite::Result<Shown> {
    let id = part_id::of_row(part, r.get(0)?, r.get(17)?);
    let key: String = r.get(1)?;
    let note_id: String = r.get(9)?;
    let actor: String = r.get(10)?;
    let path = file_path(r.get(11)?, r.get(12)?);
    let (title, props, content) = match part {
        Part::Section => {
            let heading_path = section_heading_path(&key);
            let level: i64 = r.get(18)?;
            let title = heading_path.last().cloned().unwrap_or_default();
            (
                title,
                json!({ "level": level, "heading_path": heading_path }),
                None,
            )
        }
        Part::Chunk => {
            let heading_path: Vec<String> = r
                .get::<_, Option<String>>(18)?
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            let title = heading_path.last().cloned().unwrap_or_default();
            (
                title,
                json!({ "heading_path": heading_path }),
                r.get::<_, Option<String>>(19)?,
            )
        }
    };
    let citation = match r.get::<_, Option<i64>>(2)? {
        Some(_) => vec![Provenance {
            path: path.clone(),
            lines: span(r.get(5)?, r.get(6)?),
            bytes: span(r.get(3)?, r.get(4)?),
            content_hash: r.get(13)?,
            extractor: r.get::<_, Option<String>>(14)?.unwrap_or_default(),
            extractor_version: r.get::<_, Option<String>>(15)?.unwrap_or_default(),
            actor_id: actor.clone(),
            run_id: None,
            step_key: None,
            recorded_at: r.get::<_, Option<String>>(16)?.unwrap_or_default(),
        }],
        None => Vec::new(),
    };
    let edge_id = r
        .get::<_, Option<String>>(8)?
        .unwrap_or_else(|| derived_edge_id(&id, part));
    let node = NodeView {
        key: format!("{note_id}/{}/{key}", key_infix(part)),
        id: id.clone(),
        kind: kind_name(part).to_owned(),
        title: Some(title),
        path,
        aliases: Vec::new(),
        props,
        content,
        parent_id: Some(note_id.clone()),
        owner_id: actor.clone(),
        valid_from: clock::from_millis(r.get(7)?),
        valid_to: None,
        provenance: citation.clone(),
    };
    let edge = EdgeView {
        id: edge_id,
        src_id: note_id,
        dst_id: id,
        edge_type: edge_type(part).to_owned(),
        props: Value::Object(serde_json::Map::new()),
        created_by: actor,
        provenance: citation,
    };
    Ok(Shown { node, edge })
}

/// A section's heading path, from its key (`["A","B"]#2`).
fn section_heading_path(key: &str) -> Vec<String> {
    let json = key.rfind('#').map_or(key, |i| &key[..i]);
    serde_json::from_str(json).unwrap_or_default()
}

/// The id of the structural edge into a part written after schema 0010: stable, derived from
/// the part's own id, and shaped like every other edge id.
fn derived_edge_id(part_id: &str, part: Part) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_OID,
        format!("{}:{part_id}", edge_type(part)).as_bytes(),
    )
    .to_string()
}

fn by_id(conn: &Connection, id: &str) -> Result<Option<Shown>, Error> {
    if let Some((part, rid)) = part_id::parse(id) {
        return Ok(conn
            .prepare_cached(&part_query(part, "p.rid = ?1"))?
            .query_row([rid], |r| shown(part, r))
            .optional()?);
    }
    for part in [Part::Chunk, Part::Section] {
        let found = conn
            .prepare_cached(&part_query(part, "p.legacy_id = ?1"))?
            .query_row([id], |r| shown(part, r))
            .optional()?;
        if found.is_some() {
            return Ok(found);
        }
    }
    Ok(None)
}

/// The current section or chunk `id`, shown as a node; None when `id` is neither.
pub fn node(conn: &Connection, id: &str) -> Result<Option<NodeView>, Error> {
    Ok(by_id(conn, id)?.map(|s| s.node))
}

/// The structural edges at `at` in `direction` whose type is in `types` (all when empty), with
/// the node at their other end: from a note to its sections and chunks, and into a part from
/// its note. Ordered by type, then the other end's id, as every incident edge is.
pub fn incident(
    conn: &Connection,
    direction: Direction,
    types: &[String],
    at: &str,
) -> Result<Vec<(EdgeView, String)>, Error> {
    let wanted = |part: Part| types.is_empty() || types.iter().any(|t| t == edge_type(part));
    let mut found = Vec::new();
    if matches!(direction, Direction::Out | Direction::Both) {
        for part in [Part::Chunk, Part::Section] {
            if !wanted(part) {
                continue;
            }
            let mut stmt = conn.prepare_cached(&part_query(
                part,
                "p.source_id = (SELECT source_id FROM nodes WHERE id = ?1 AND valid_to IS NULL
                                AND kind IN ('note', 'file') AND key = 'source:' || source_id)",
            ))?;
            let rows = stmt.query_map([at], |r| shown(part, r))?;
            let mut edges = rows
                .map(|s| s.map(|s| (s.edge.clone(), s.edge.dst_id)))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            edges.sort_by(|a, b| a.1.cmp(&b.1));
            found.extend(edges);
        }
    }
    if matches!(direction, Direction::In | Direction::Both)
        && let Some(s) = by_id(conn, at)?
    {
        let part = if s.node.kind == "chunk" {
            Part::Chunk
        } else {
            Part::Section
        };
        if wanted(part) {
            let other = s.edge.src_id.clone();
            found.push((s.edge, other));
        }
    }
    Ok(found)
}
