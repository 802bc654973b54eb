//! A note's structure: its sections and chunks, in their own tables (schema 0010), keyed by
//! the file's source row and position rather than as free-standing graph nodes.
//!
//! Identity within a file is the row's `key`: a section's heading path and occurrence, a
//! chunk's text hash and occurrence. A part the new version still has keeps its row, its public
//! id and (for a chunk) its vector, and is re-cited in place with its new position; the rest
//! are retired (`valid_to`), never deleted here.

use std::collections::HashMap;

use rusqlite::{Transaction, params};
use serde_json::Value;

use super::parse::{Document, Span};
use crate::store::part_id::PartKind;

/// What one version of a file says its sections and chunks are, in order.
struct Planned {
    key: String,
    span: Span,
    /// A section's level.
    level: Option<u8>,
    /// A chunk's heading path (JSON), None when it is under no heading.
    heading_path: Option<String>,
    content: Option<String>,
}

fn plan(doc: Option<&Document>) -> (Vec<Planned>, Vec<Planned>) {
    let Some(doc) = doc else {
        return (Vec::new(), Vec::new());
    };
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut occurrence = |base: String| {
        let n = seen.entry(base.clone()).or_default();
        *n += 1;
        format!("{base}#{n}")
    };
    let mut stack: Vec<(u8, String)> = Vec::new();
    let mut sections = Vec::with_capacity(doc.headings.len());
    for h in &doc.headings {
        while stack.last().is_some_and(|(l, _)| *l >= h.level) {
            stack.pop();
        }
        stack.push((h.level, h.text.clone()));
        let path: Vec<&str> = stack.iter().map(|(_, t)| t.as_str()).collect();
        sections.push(Planned {
            key: occurrence(Value::from(path).to_string()),
            span: h.span,
            level: Some(h.level),
            heading_path: None,
            content: None,
        });
    }
    let mut chunks = Vec::with_capacity(doc.chunks.len());
    for c in &doc.chunks {
        let hash = blake3::hash(c.text.as_bytes()).to_hex();
        chunks.push(Planned {
            key: occurrence(hash[..32].to_owned()),
            span: c.span,
            level: None,
            heading_path: (!c.heading_path.is_empty())
                .then(|| Value::from(c.heading_path.clone()).to_string()),
            content: Some(c.text.clone()),
        });
    }
    (sections, chunks)
}

/// Writes the sections and chunks `doc` gives the file `source_id` (none when `doc` is None),
/// cited by file version `version`, at `now_ms`.
pub fn write(
    tx: &Transaction<'_>,
    source_id: i64,
    version: i64,
    now_ms: i64,
    doc: Option<&Document>,
) -> rusqlite::Result<()> {
    let (sections, chunks) = plan(doc);
    write_kind(tx, PartKind::Section, source_id, version, now_ms, sections)?;
    write_kind(tx, PartKind::Chunk, source_id, version, now_ms, chunks)
}

fn write_kind(
    tx: &Transaction<'_>,
    kind: PartKind,
    source_id: i64,
    version: i64,
    now_ms: i64,
    wanted: Vec<Planned>,
) -> rusqlite::Result<()> {
    let table = kind.table();
    let mut existing: HashMap<String, i64> = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(&format!(
            "SELECT rid, key FROM {table} WHERE source_id = ?1 AND valid_to IS NULL"
        ))?;
        let rows = stmt.query_map([source_id], |r| Ok((r.get(1)?, r.get(0)?)))?;
        for row in rows {
            let (key, rid) = row?;
            existing.insert(key, rid);
        }
    }
    // A kept part takes its new position and citation, and what the key does not fix: a
    // section's level, a chunk's headings (the same text moved under another heading).
    let described_by = match kind {
        PartKind::Section => "level",
        PartKind::Chunk => "heading_path",
    };
    let mut keep = tx.prepare_cached(&format!(
        "UPDATE {table} SET ordinal = ?2, cite_version = ?3, byte_start = ?4, byte_end = ?5,
                            line_start = ?6, line_end = ?7, {described_by} = ?8
         WHERE rid = ?1"
    ))?;
    let mut insert = match kind {
        PartKind::Section => tx.prepare_cached(
            "INSERT INTO sections(source_id, ordinal, key, level, cite_version, byte_start,
                                  byte_end, line_start, line_end, valid_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?,
        PartKind::Chunk => tx.prepare_cached(
            "INSERT INTO chunks(source_id, ordinal, key, heading_path, content, cite_version,
                                byte_start, byte_end, line_start, line_end, valid_from)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )?,
    };
    for (ordinal, p) in wanted.into_iter().enumerate() {
        let s = p.span;
        let (bs, be) = (s.byte_start as i64, s.byte_end as i64);
        match existing.remove(&p.key) {
            Some(rid) => {
                let described: rusqlite::types::Value = match kind {
                    PartKind::Section => i64::from(p.level.unwrap_or(1)).into(),
                    PartKind::Chunk => p.heading_path.clone().into(),
                };
                keep.execute(params![
                    rid,
                    ordinal as i64,
                    version,
                    bs,
                    be,
                    s.line_start,
                    s.line_end,
                    described
                ])?;
            }
            None => {
                // The row's id is derived from its rid (`store::part_id`).
                match kind {
                    PartKind::Section => insert.execute(params![
                        source_id,
                        ordinal as i64,
                        p.key,
                        p.level.unwrap_or(1),
                        version,
                        bs,
                        be,
                        s.line_start,
                        s.line_end,
                        now_ms
                    ])?,
                    PartKind::Chunk => insert.execute(params![
                        source_id,
                        ordinal as i64,
                        p.key,
                        p.heading_path,
                        p.content,
                        version,
                        bs,
                        be,
                        s.line_start,
                        s.line_end,
                        now_ms
                    ])?,
                };
            }
        }
    }
    let mut retire =
        tx.prepare_cached(&format!("UPDATE {table} SET valid_to = ?2 WHERE rid = ?1"))?;
    for rid in existing.into_values() {
        retire.execute(params![rid, now_ms])?;
    }
    Ok(())
}

/// Retires every current section and chunk of the file `source_id`.
pub fn retire(tx: &Transaction<'_>, source_id: i64, now_ms: i64) -> rusqlite::Result<()> {
    for kind in [PartKind::Section, PartKind::Chunk] {
        tx.prepare_cached(&format!(
            "UPDATE {} SET valid_to = ?2 WHERE source_id = ?1 AND valid_to IS NULL",
            kind.table()
        ))?
        .execute(params![source_id, now_ms])?;
    }
    Ok(())
}
