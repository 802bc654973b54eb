//! The text of written nodes (a `node.upsert` or `Upsert_` step with `content`, no file) as
//! search sees it: one document per node, queued through the same outbox as notes, and hits
//! cited to the write that stated the text (who, through which client or run, when) instead of
//! a file span.
//!
//! Architecture Invariant: the writer queues the node in its own transaction ([`queue`]), as the
//! triggers of schema 0003 do for notes, so a write is searchable once the catch-up after its
//! commit returns and a retired node leaves the index the same way.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::index::{self, ChunkDoc, IndexError};
use super::{Hit, WrittenBy};

/// A written node's current text with what the index files beside it. Derived kinds come from
/// files and have no text of their own here; a node with a source is a file's.
const SQL: &str = "SELECT n.id, n.kind, n.title, n.aliases, n.props, n.content, n.updated_at
                   FROM nodes n
                   WHERE n.source_id IS NULL AND n.content IS NOT NULL AND n.valid_to IS NULL
                     AND n.kind NOT IN ('note', 'file', 'section', 'chunk', 'tag', 'placeholder')";

/// Queues written node `id` for reindexing in the writer's transaction.
pub fn queue(tx: &Transaction<'_>, id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("INSERT INTO search_outbox(note_id) VALUES (?1)")?
        .execute([id])?;
    Ok(())
}

/// Hands `f` the document of each written node among `ids` that has text (every one when
/// `None`); an id that is not a written node's yields nothing.
pub fn each_doc(
    conn: &Connection,
    ids: Option<&[String]>,
    f: &mut dyn FnMut(ChunkDoc) -> Result<(), IndexError>,
) -> Result<(), IndexError> {
    let mut tags_stmt = conn.prepare_cached(
        "SELECT t.key FROM edges e JOIN nodes t ON t.id = e.dst_id
         WHERE e.src_id = ?1 AND e.type = 'tagged' AND e.valid_to IS NULL",
    )?;
    let mut emit = |r: &rusqlite::Row<'_>| -> Result<(), IndexError> {
        let id: String = r.get(0)?;
        let mut title: String = r.get::<_, Option<String>>(2)?.unwrap_or_default();
        let aliases: String = r.get::<_, Option<String>>(3)?.unwrap_or_default();
        if let Ok(serde_json::Value::Array(a)) = serde_json::from_str(&aliases) {
            for alias in a.iter().filter_map(|v| v.as_str()) {
                title.push('\n');
                title.push_str(alias);
            }
        }
        let tags: Vec<String> = tags_stmt
            .query_map([&id], |t| t.get::<_, String>(0))?
            .map(|k| k.map(|k| k.strip_prefix("tag:").unwrap_or(&k).to_owned()))
            .collect::<Result<_, _>>()?;
        let updated: String = r.get(6)?;
        let mut props = index::scalar_props(&r.get::<_, Option<String>>(4)?.unwrap_or_default());
        props.truncate(index::MAX_INDEXED_PROPS);
        f(ChunkDoc {
            note_id: id.as_str().into(),
            chunk_id: id,
            title: title.into(),
            heading: String::new(),
            body: r.get(5)?,
            tags: tags.into(),
            path: Arc::from(""),
            rel_path: Arc::from(""),
            kinds: Arc::new([r.get(1)?]),
            mtime_secs: crate::clock::millis(&updated).div_euclid(1000),
            props: Arc::from(props),
        })
    };
    match ids {
        None => {
            let mut stmt = conn.prepare(SQL)?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                emit(r)?;
            }
        }
        Some(ids) => {
            let mut stmt = conn.prepare_cached(&format!("{SQL} AND n.id = ?1"))?;
            for id in ids {
                let mut rows = stmt.query([id])?;
                while let Some(r) = rows.next()? {
                    emit(r)?;
                }
            }
        }
    }
    Ok(())
}

/// What a hit on written node `id` shows: its text, and the latest write of it as the
/// citation. `None` when it is not a current written node.
pub fn hydrate(c: &Connection, id: &str) -> rusqlite::Result<Option<Hit>> {
    c.prepare_cached(&format!(
        "SELECT n.id, n.title, n.content, p.extractor, p.actor_id, p.run_id, p.recorded_at
         FROM ({SQL} AND n.id = ?1) n
         LEFT JOIN provenance p ON p.id = (SELECT max(id) FROM provenance WHERE node_id = n.id)"
    ))?
    .query_row(params![id], |r| {
        let text: String = r.get(2)?;
        let lines = text.lines().count().max(1);
        Ok(Hit {
            node_id: r.get(0)?,
            chunk_id: id.to_owned(),
            title: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            path: String::new(),
            lines: [1, u32::try_from(lines).unwrap_or(u32::MAX)],
            bytes: [0, text.len() as u64],
            content_hash: blake3::hash(text.as_bytes()).to_hex().to_string(),
            heading_path: Vec::new(),
            score: 0.0,
            snippet: text,
            highlights: Vec::new(),
            explain: None,
            written: match r.get::<_, Option<String>>(3)? {
                Some(extractor) => Some(WrittenBy {
                    extractor,
                    actor_id: r.get(4)?,
                    run_id: r.get(5)?,
                    recorded_at: r.get(6)?,
                }),
                None => None,
            },
        })
    })
    .optional()
}
