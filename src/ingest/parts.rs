//! A note's structure: its sections and chunks, in their own tables (schema 0010), keyed by
//! the file's source row and position rather than as free-standing graph nodes.
//!
//! Identity within a file is the row's `key`: a section's heading path and occurrence, a
//! chunk's text hash and occurrence. A part the new version still has keeps its row, its public
//! id and (for a chunk) its vector, and is re-cited in place with its new position; the rest
//! are retired (`valid_to`), never deleted here.
//!
//! A section's row stores its last heading and its parent section's row, not the whole path
//! (schema 0013); the `sections` view spells the key and path out again for readers.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::LazyLock;

use rusqlite::{Transaction, params};

use super::parse::{Document, Span};
use crate::store::part_id::{self, PartKind};

/// How deep a section's parent chain may go: the `sections` view (schema 0013) joins a row to
/// at most five ancestors. Heading levels 1 to 6 never nest deeper; a deeper path is stored
/// whole in its own row.
const MAX_CHAIN: usize = 6;

/// What one version of a file says its sections and chunks are, in order, ready to bind:
/// planned on the parsing threads, so the writer only runs SQL.
#[derive(Debug, Default)]
pub struct Plan {
    sections: Vec<Planned>,
    chunks: Vec<Planned>,
}

/// One section or chunk of a [`Plan`].
#[derive(Debug)]
struct Planned {
    /// The key as readers spell it (for matching the rows the file has).
    key: String,
    /// A chunk's key as stored (schema 0013).
    stored_key: Option<Vec<u8>>,
    /// A section's stored heading: its JSON string, or the inside of its whole path's JSON when
    /// it has no parent row (schema 0013).
    heading: String,
    /// A section's parent section: its index among the file's sections.
    parent: Option<usize>,
    /// The n of the key's `#n`.
    occurrence: i64,
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

/// Plans `doc`'s sections and chunks. The chunks' texts are moved out of `doc` into the plan
/// (nothing reads them from the document after this), so they are not copied.
pub fn plan(doc: &mut Document) -> Plan {
    let mut seen: HashMap<String, usize> = HashMap::new();
    // `base#n`, the nth time `base` comes: the key is spelled in `base`'s own buffer.
    let mut occurrence = |mut base: String| {
        let n = match seen.get_mut(base.as_str()) {
            Some(n) => {
                *n += 1;
                *n
            }
            None => {
                seen.insert(base.clone(), 1);
                1
            }
        };
        // Writing into a String cannot fail.
        let _ = write!(base, "#{n}");
        (base, n as i64)
    };
    // The open headings: level, text, and index among the sections.
    let mut stack: Vec<(u8, String, usize)> = Vec::new();
    let mut sections = Vec::with_capacity(doc.headings.len());
    // Each section's heading path, as the chunks under it have theirs.
    let mut paths: Vec<Vec<String>> = Vec::with_capacity(doc.headings.len());
    for h in &doc.headings {
        while stack.last().is_some_and(|(l, _, _)| *l >= h.level) {
            stack.pop();
        }
        let parent = stack.last().map(|(_, _, i)| *i);
        stack.push((h.level, h.text.clone(), sections.len()));
        let path: Vec<String> = stack.iter().map(|(_, t, _)| t.clone()).collect();
        let path_json = json_text(&path);
        let (parent, heading) = match parent {
            Some(i) if path.len() <= MAX_CHAIN => (Some(i), json_text(&h.text)),
            // The inside of the brackets.
            _ => (None, path_json[1..path_json.len() - 1].to_owned()),
        };
        let (key, occurrence) = occurrence(path_json);
        sections.push(Planned {
            key,
            stored_key: None,
            heading,
            parent,
            occurrence,
            span: h.span,
            level: Some(h.level),
            section: None,
            heading_path: None,
            content: None,
        });
        paths.push(path);
    }
    let mut chunks = Vec::with_capacity(doc.chunks.len());
    for c in &mut doc.chunks {
        let hash = blake3::hash(c.text.as_bytes());
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
        // The hex of the stored bytes, as keys were written before schema 0013.
        let hex = hash.to_hex();
        let (key, occurrence) = occurrence(hex[..2 * part_id::CHUNK_HASH_BYTES].to_owned());
        chunks.push(Planned {
            key,
            stored_key: Some(part_id::chunk_key_blob(hash.as_bytes(), occurrence)),
            heading: String::new(),
            parent: None,
            occurrence,
            span: c.span,
            level: None,
            section,
            heading_path: (!c.heading_path.is_empty() && !same).then(|| json_text(&c.heading_path)),
            content: Some(std::mem::take(&mut c.text)),
        });
    }
    Plan { sections, chunks }
}

/// `value` as compact JSON, written straight from it: building a `serde_json::Value` first
/// copied every heading once more.
fn json_text<T: serde::Serialize + ?Sized>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Writes the sections and chunks `plan` gives the file `source_id` (none when `plan` is
/// None), cited by file version `version`, at `now_ms`.
pub fn write(
    tx: &Transaction<'_>,
    source_id: i64,
    version: i64,
    now_ms: i64,
    plan: Option<&Plan>,
) -> rusqlite::Result<()> {
    let (sections, chunks) = match plan {
        Some(p) => (p.sections.as_slice(), p.chunks.as_slice()),
        None => (&[][..], &[][..]),
    };
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

/// A file's current sections and their keys, as readers spell them.
const CURRENT_SECTIONS: &str =
    "SELECT rid, key FROM sections WHERE source_id = ?1 AND valid_to IS NULL";
/// A file's current chunks and their keys, spelled out as text (built once: the statement
/// cache is keyed by the SQL text, so the writer must not build it per file).
static CURRENT_CHUNKS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT rid, {} FROM chunks WHERE source_id = ?1 AND valid_to IS NULL",
        part_id::chunk_key_text("key")
    )
});
/// A kept part takes its new position and citation, and what the key does not fix: a
/// section's level and parent row (its heading is rewritten too: a row carried over by 0013
/// may hold its whole path), a chunk's headings (the same text moved under another heading).
const KEEP_SECTION: &str = "UPDATE section_rows SET ordinal = ?2, cite_version = ?3,
        byte_start = ?4, byte_end = ?5, line_start = ?6, line_end = ?7,
        level = ?8, parent = ?9, heading = ?10
    WHERE rid = ?1";
const KEEP_CHUNK: &str = "UPDATE chunks SET ordinal = ?2, cite_version = ?3,
        byte_start = ?4, byte_end = ?5, line_start = ?6, line_end = ?7,
        heading_path = ?8, section = ?9
    WHERE rid = ?1";
static RETIRE_CHUNK_ROW: LazyLock<String> =
    LazyLock::new(|| format!("{RETIRE_CHUNK} WHERE rid = ?1"));
static RETIRE_FILE_CHUNKS: LazyLock<String> =
    LazyLock::new(|| format!("{RETIRE_CHUNK} WHERE source_id = ?1 AND valid_to IS NULL"));

fn write_kind(
    tx: &Transaction<'_>,
    kind: PartKind,
    source_id: i64,
    version: i64,
    now_ms: i64,
    wanted: &[Planned],
) -> rusqlite::Result<()> {
    let mut existing: HashMap<String, i64> = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(match kind {
            PartKind::Section => CURRENT_SECTIONS,
            PartKind::Chunk => CURRENT_CHUNKS.as_str(),
        })?;
        let rows = stmt.query_map([source_id], |r| Ok((r.get(1)?, r.get(0)?)))?;
        for row in rows {
            let (key, rid) = row?;
            existing.insert(key, rid);
        }
    }
    // Prepared only for a file that has rows to keep: each lookup in the statement cache
    // hashes the whole SQL text, and a new file has none.
    let mut keep = match existing.is_empty() {
        true => None,
        false => Some(tx.prepare_cached(match kind {
            PartKind::Section => KEEP_SECTION,
            PartKind::Chunk => KEEP_CHUNK,
        })?),
    };
    let mut insert = match kind {
        PartKind::Section => tx.prepare_cached(
            "INSERT INTO section_rows(source_id, ordinal, heading, level, cite_version,
                                      byte_start, byte_end, line_start, line_end, valid_from,
                                      parent, occurrence)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?,
        PartKind::Chunk => tx.prepare_cached(
            "INSERT INTO chunks(source_id, ordinal, key, heading_path, content, cite_version,
                                byte_start, byte_end, line_start, line_end, valid_from, section)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        )?,
    };
    // Each section's row, in order, for its children's `parent`.
    let mut rids: Vec<i64> = Vec::with_capacity(wanted.len());
    for (ordinal, p) in wanted.iter().enumerate() {
        let s = p.span;
        let (bs, be) = (s.byte_start as i64, s.byte_end as i64);
        let parent = p.parent.and_then(|i| rids.get(i).copied());
        match existing.remove(&p.key).zip(keep.as_mut()) {
            Some((rid, keep)) => {
                rids.push(rid);
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
                        p.level.unwrap_or(1),
                        parent,
                        p.heading
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
                        p.heading,
                        p.level.unwrap_or(1),
                        version,
                        bs,
                        be,
                        s.line_start,
                        s.line_end,
                        now_ms,
                        parent,
                        p.occurrence
                    ])?,
                    PartKind::Chunk => insert.execute(params![
                        source_id,
                        ordinal as i64,
                        p.stored_key,
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
                rids.push(tx.last_insert_rowid());
            }
        }
    }
    if existing.is_empty() {
        return Ok(());
    }
    let mut retire = match kind {
        PartKind::Section => {
            tx.prepare_cached("UPDATE section_rows SET valid_to = ?2 WHERE rid = ?1")?
        }
        PartKind::Chunk => tx.prepare_cached(&RETIRE_CHUNK_ROW)?,
    };
    for rid in existing.into_values() {
        retire.execute(params![rid, now_ms])?;
    }
    Ok(())
}

/// Retires every current section and chunk of the file `source_id`.
pub fn retire(tx: &Transaction<'_>, source_id: i64, now_ms: i64) -> rusqlite::Result<()> {
    // Chunks before sections, as in `write`.
    tx.prepare_cached(&RETIRE_FILE_CHUNKS)?
        .execute(params![source_id, now_ms])?;
    tx.prepare_cached(
        "UPDATE section_rows SET valid_to = ?2 WHERE source_id = ?1 AND valid_to IS NULL",
    )?
    .execute(params![source_id, now_ms])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::parse::{self, FileType};

    /// A planned chunk's key is what the store spells from its stored form
    /// (`part_id::chunk_key_text`), so a kept chunk is matched to its row.
    #[test]
    fn a_chunk_key_is_spelled_as_the_store_spells_it() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let sql = format!("SELECT {}", part_id::chunk_key_text("?1"));
        let text = "a\n\n# H\n\nsome chunk text\n\n# H\n\nsome chunk text\n\n## é\n";
        let mut doc = parse::parse(text.as_bytes(), FileType::Markdown);
        let plan = plan(&mut doc);
        assert!(plan.chunks.len() >= 3, "{plan:?}");
        for c in &plan.chunks {
            let stored = c.stored_key.as_ref().unwrap();
            let spelled: String = conn.query_row(&sql, [stored], |r| r.get(0)).unwrap();
            assert_eq!(c.key, spelled);
            let hash = blake3::hash(c.content.as_deref().unwrap().as_bytes());
            assert_eq!(
                spelled,
                format!(
                    "{}#{}",
                    &hash.to_hex()[..2 * part_id::CHUNK_HASH_BYTES],
                    c.occurrence
                )
            );
        }
        // The same text twice is told apart by its occurrence.
        assert!(plan.chunks.iter().any(|c| c.occurrence == 2), "{plan:?}");
    }
}
