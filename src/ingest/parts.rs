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
    /// A chunk's section: its ordinal among the file's sections, None when it is under no
    /// heading.
    section: Option<usize>,
    /// A chunk's heading path (JSON), written out only when its section's path is not the
    /// same (schema 0011).
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
    // Each section's heading path, as the chunks under it have theirs.
    let mut paths: Vec<Vec<String>> = Vec::with_capacity(doc.headings.len());
    for h in &doc.headings {
        while stack.last().is_some_and(|(l, _)| *l >= h.level) {
            stack.pop();
        }
        stack.push((h.level, h.text.clone()));
        let path: Vec<String> = stack.iter().map(|(_, t)| t.clone()).collect();
        sections.push(Planned {
            key: occurrence(Value::from(path.clone()).to_string()),
            span: h.span,
            level: Some(h.level),
            section: None,
            heading_path: None,
            content: None,
        });
        paths.push(path);
    }
    let mut chunks = Vec::with_capacity(doc.chunks.len());
    for c in &doc.chunks {
        let hash = blake3::hash(c.text.as_bytes()).to_hex();
        // The last heading that starts before the chunk; under it, the chunk's heading path is
        // the section's and need not be written (it always is, for what the parser makes).
        let section = if c.heading_path.is_empty() {
            None
        } else {
            sections
                .iter()
                .rposition(|s| s.span.byte_start <= c.span.byte_start)
        };
        let same = section.is_some_and(|i| paths[i] == c.heading_path);
        chunks.push(Planned {
            key: occurrence(hash[..32].to_owned()),
            span: c.span,
            level: None,
            section,
            heading_path: (!c.heading_path.is_empty() && !same)
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
    // Chunks first: a chunk retired here writes out its heading path from the sections its
    // `section` ordinal names, which are still the old version's.
    write_kind(tx, PartKind::Chunk, source_id, version, now_ms, chunks)?;
    write_kind(tx, PartKind::Section, source_id, version, now_ms, sections)
}

/// A retired chunk's heading path written out: its `section` ordinal names a current section
/// only while the file does not change (schema 0011). Run before the sections change.
const RETIRE_CHUNK: &str = "UPDATE chunks SET valid_to = ?2,
        heading_path = coalesce(heading_path, (
            SELECT s.path FROM sections s
            WHERE s.source_id = chunks.source_id AND s.ordinal = chunks.section
              AND s.valid_to IS NULL)),
        section = NULL";

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
        PartKind::Section => "level = ?8",
        PartKind::Chunk => "heading_path = ?8, section = ?9",
    };
    let mut keep = tx.prepare_cached(&format!(
        "UPDATE {table} SET ordinal = ?2, cite_version = ?3, byte_start = ?4, byte_end = ?5,
                            line_start = ?6, line_end = ?7, {described_by}
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
                                byte_start, byte_end, line_start, line_end, valid_from, section)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?,
    };
    for (ordinal, p) in wanted.into_iter().enumerate() {
        let s = p.span;
        let (bs, be) = (s.byte_start as i64, s.byte_end as i64);
        match existing.remove(&p.key) {
            Some(rid) => {
                let section = p.section.map(|i| i as i64);
                match kind {
                    PartKind::Section => keep.execute(params![
                        rid,
                        ordinal as i64,
                        version,
                        bs,
                        be,
                        s.line_start,
                        s.line_end,
                        p.level.unwrap_or(1)
                    ])?,
                    PartKind::Chunk => keep.execute(params![
                        rid,
                        ordinal as i64,
                        version,
                        bs,
                        be,
                        s.line_start,
                        s.line_end,
                        p.heading_path,
                        section
                    ])?,
                };
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
                        now_ms,
                        p.section.map(|i| i as i64)
                    ])?,
                };
            }
        }
    }
    let mut retire = match kind {
        PartKind::Section => {
            tx.prepare_cached("UPDATE sections SET valid_to = ?2 WHERE rid = ?1")?
        }
        PartKind::Chunk => tx.prepare_cached(&format!("{RETIRE_CHUNK} WHERE rid = ?1"))?,
    };
    for rid in existing.into_values() {
        retire.execute(params![rid, now_ms])?;
    }
    Ok(())
}

/// Retires every current section and chunk of the file `source_id`.
pub fn retire(tx: &Transaction<'_>, source_id: i64, now_ms: i64) -> rusqlite::Result<()> {
    // Chunks before sections, as in `write`.
    tx.prepare_cached(&format!(
        "{RETIRE_CHUNK} WHERE source_id = ?1 AND valid_to IS NULL"
    ))?
    .execute(params![source_id, now_ms])?;
    tx.prepare_cached(
        "UPDATE sections SET valid_to = ?2 WHERE source_id = ?1 AND valid_to IS NULL",
    )?
    .execute(params![source_id, now_ms])?;
    Ok(())
}
