//! The whole graph as of one instant, a page at a time: every node that held then (in its
//! version of then), then every edge that held then, each with its citations of then.
//!
//! A page is one read transaction over a bounded number of rows, keyed by id after a cursor,
//! so an export of any size holds one page in memory; pinning every page to the instant of
//! the first makes the pages one consistent picture even while the writer commits between
//! them (what changed after it is answered from history). Sections and chunks are not
//! exported: they are derived from the files the citations name.

use rusqlite::Connection;

use super::history::{self, EdgeSpan, Instant};
use super::{Error, Kind, NodeView};
use crate::store::edge_id;

/// Most rows one page holds: the answer is one frame, and a node with its citations is a few
/// hundred bytes (front matter can make it kilobytes).
pub const MAX_EXPORT_PAGE: usize = 500;

/// Where the next page starts: after a node id, or after an edge id once nodes are done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExportCursor {
    Start,
    Nodes { after: String },
    Edges { after: String },
}

/// One page: nodes first, then (on later pages) edges; `next` is `None` on the last.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportPage {
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeSpan>,
    pub next: Option<ExportCursor>,
}

impl ExportCursor {
    /// The cursor with its instant as one opaque token: `INSTANT n ID` or `INSTANT e ID`.
    pub fn token(&self, at: &Instant) -> Option<String> {
        match self {
            ExportCursor::Start => None,
            ExportCursor::Nodes { after } => Some(format!("{} n {after}", at.as_str())),
            ExportCursor::Edges { after } => Some(format!("{} e {after}", at.as_str())),
        }
    }

    /// Reads a token [`ExportCursor::token`] made.
    pub fn parse(token: &str) -> Result<(Instant, ExportCursor), Error> {
        let bad = || {
            Error::new(
                Kind::InvalidParams,
                format!("not an export cursor: {token:?}"),
            )
        };
        let mut parts = token.splitn(3, ' ');
        let (Some(at), Some(what), Some(after)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let at = Instant::parse(at).map_err(|_| bad())?;
        let after = after.to_owned();
        let cursor = match what {
            "n" => ExportCursor::Nodes { after },
            "e" => ExportCursor::Edges { after },
            _ => return Err(bad()),
        };
        Ok((at, cursor))
    }
}

/// The page after `cursor` of the graph at `at`, of at most `limit` rows (clamped to
/// 1..=[`MAX_EXPORT_PAGE`]).
pub fn export_page(
    conn: &Connection,
    at: &Instant,
    cursor: &ExportCursor,
    limit: usize,
) -> Result<ExportPage, Error> {
    let limit = limit.clamp(1, MAX_EXPORT_PAGE);
    super::in_snapshot(conn, |conn| {
        let mut page = ExportPage {
            nodes: Vec::new(),
            edges: Vec::new(),
            next: None,
        };
        let node_after = match cursor {
            ExportCursor::Start => Some(""),
            ExportCursor::Nodes { after } => Some(after.as_str()),
            ExportCursor::Edges { .. } => None,
        };
        if let Some(after) = node_after {
            let ids = ids_after(conn, "nodes", "n", at, after, limit)?;
            for id in &ids {
                // Held at `at` by the query; a row the writer changed since answers from history.
                if let Some(node) = history::node_at(conn, id, at)? {
                    page.nodes.push(node);
                }
            }
            if ids.len() == limit {
                page.next = ids
                    .last()
                    .map(|id| ExportCursor::Nodes { after: id.clone() });
                return Ok(page);
            }
        }
        let edge_after = match cursor {
            ExportCursor::Edges { after } => after.as_str(),
            _ => "",
        };
        // Fewer than `limit` nodes were left, or the page would have ended above.
        let room = limit - page.nodes.len();
        // Edges with a stored id come in its index's order, and those whose id is derived from
        // their row (`store::edge_id`) in row order, which is their ids' order: each stream is
        // one range scan, and the page takes the first `room` of the two.
        let held = history::held_at("r", at);
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {}, e.valid_from, e.valid_to FROM edges e
             WHERE e.rowid IN (
                 SELECT rid FROM (SELECT r.rid FROM edge_rows r
                                  WHERE r.id > ?1 AND {held} ORDER BY r.id LIMIT ?2)
                 UNION ALL
                 SELECT rid FROM (SELECT r.rid FROM edge_rows r
                                  WHERE r.id IS NULL AND r.rid >= ?3 AND {held}
                                    AND {} > ?1
                                  ORDER BY r.rid LIMIT ?2))
             ORDER BY e.id LIMIT ?2",
            super::edge_columns!(),
            edge_id::sql_id("r.rid"),
        ))?;
        let first_derived = edge_id::first_row_after(edge_after);
        let rows = stmt.query_map(
            rusqlite::params![edge_after, room as i64, first_derived],
            |r| {
                Ok(EdgeSpan {
                    edge: super::edge_from_row(r)?,
                    valid_from: r.get(6)?,
                    valid_to: r.get(7)?,
                })
            },
        )?;
        let found = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        let full = found.len() == room;
        for mut e in found {
            e.edge.provenance = history::edge_citations_at(conn, &e.edge.id, at)?;
            page.edges.push(e);
        }
        if full {
            page.next = page.edges.last().map(|e| ExportCursor::Edges {
                after: e.edge.id.clone(),
            });
        }
        Ok(page)
    })
}

/// Up to `limit` ids of `table` rows that held at `at`, after `after`, in id order (the
/// primary key's order, so each page is one range scan).
fn ids_after(
    conn: &Connection,
    table: &str,
    alias: &str,
    at: &Instant,
    after: &str,
    limit: usize,
) -> Result<Vec<String>, Error> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {alias}.id FROM {table} {alias} WHERE {alias}.id > ?1 AND {}
         ORDER BY {alias}.id LIMIT ?2",
        history::held_at(alias, at)
    ))?;
    let rows = stmt.query_map(rusqlite::params![after, limit as i64], |r| r.get(0))?;
    Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(token: &str, ok: bool) {
        assert_eq!(ExportCursor::parse(token).is_ok(), ok, "{token}");
    }

    #[test]
    fn cursors() {
        let at = Instant::parse("2026-01-02T03:04:05Z").unwrap();
        for c in [
            ExportCursor::Nodes {
                after: "a b".into(),
            },
            ExportCursor::Edges { after: "x".into() },
        ] {
            let token = c.token(&at).unwrap();
            assert_eq!(ExportCursor::parse(&token).unwrap(), (at.clone(), c));
        }
        assert_eq!(ExportCursor::Start.token(&at), None);
        check("2026-01-02T03:04:05.000Z n x", true);
        check("2026-01-02T03:04:05.000Z q x", false);
        check("2026-01-02T03:04:05.000Z n", false);
        check("later n x", false);
        check("", false);
    }
}
