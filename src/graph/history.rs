//! The graph's past: a node's versions and edges over time, a node as it was at a time, and
//! the instant type every "as of" read takes.
//!
//! A node's earlier versions are rows of `node_revisions` (schema 0012, filled by triggers);
//! its current version is its own row. Edges are never updated in their endpoints, type or
//! time, so an edge row is its own history (`valid_from`, `valid_to`); its props and citation
//! are the last ones that held. Sections and chunks (`graph::parts`) are derived from a
//! note's file version and are not part of a node's history. Never writes to the store.

use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, Row};

use super::{EdgeView, NodeView, Provenance, file_path, join_path, parse_aliases, props_of, span};
use crate::clock;
use crate::error::{Error, Kind};

/// Most versions one history answer lists (the newest ones): a node written by a script on
/// every run could have thousands, and the answer is one frame.
pub const MAX_HISTORY_VERSIONS: usize = 500;
/// Most edges one history answer lists (newest first): a tag node has an edge per note.
pub const MAX_HISTORY_EDGES: usize = 2000;

/// A time the graph is read at, in the store's text format (`2026-12-07T10:00:00.000Z`), so
/// it compares with the stored text timestamps as text. Never in the future.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instant(String);

impl Instant {
    /// Parses RFC 3339 UTC (`2026-12-07T10:00:00Z`, fractions allowed). A time in the future is
    /// refused: the graph then is not known, and answering with today's would mislead.
    pub fn parse(text: &str) -> Result<Instant, Error> {
        let t = humantime::parse_rfc3339(text.trim()).map_err(|e| {
            Error::new(
                Kind::InvalidParams,
                format!("as_of must be an RFC 3339 UTC time such as 2026-12-07T10:00:00Z: {e}"),
            )
        })?;
        if t > SystemTime::now() {
            return Err(Error::new(
                Kind::InvalidParams,
                format!("as_of is in the future: {text}"),
            ));
        }
        Ok(Instant(clock::format(t)))
    }

    pub fn now() -> Instant {
        Instant(clock::now())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The instant one millisecond later: the end of a point as a half-open interval.
    fn next(&self) -> String {
        let ms = u64::try_from(clock::millis(&self.0)).unwrap_or(0);
        clock::format(SystemTime::UNIX_EPOCH + Duration::from_millis(ms + 1))
    }
}

/// What a node held during one interval, with the citations of that time.
#[derive(Debug, Clone, PartialEq)]
pub struct Version {
    pub title: Option<String>,
    pub aliases: Vec<String>,
    pub props: serde_json::Value,
    /// Absolute path of the node's file then.
    pub path: Option<String>,
    pub valid_from: String,
    /// `None` for the version that holds now.
    pub valid_to: Option<String>,
    pub provenance: Vec<Provenance>,
}

/// An edge with the interval it held.
#[derive(Debug, Clone, PartialEq)]
pub struct EdgeSpan {
    pub edge: EdgeView,
    pub valid_from: String,
    pub valid_to: Option<String>,
}

/// Every version of a node, oldest first, and every edge at it, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The node as it is now (or was last, when retired).
    pub node: NodeView,
    pub versions: Vec<Version>,
    pub edges: Vec<EdgeSpan>,
    /// Older versions or edges were left out ([`MAX_HISTORY_VERSIONS`], [`MAX_HISTORY_EDGES`]).
    pub truncated: bool,
}

/// A node's row, whatever its `valid_to`.
struct NodeRow {
    view: NodeView,
    root: Option<String>,
    cite: Cite,
}

/// A citation kept on a fact or a revision (schema 0007).
#[derive(Clone, Default)]
struct Cite {
    version: Option<i64>,
    bytes: (Option<i64>, Option<i64>),
    lines: (Option<i64>, Option<i64>),
}

impl Cite {
    fn read(r: &Row<'_>, at: usize) -> rusqlite::Result<Cite> {
        Ok(Cite {
            version: r.get(at)?,
            bytes: (r.get(at + 1)?, r.get(at + 2)?),
            lines: (r.get(at + 3)?, r.get(at + 4)?),
        })
    }
}

/// One stored revision: the values and the end of the interval they held.
struct Revision {
    title: Option<String>,
    aliases: String,
    props: String,
    rel_path: Option<String>,
    cite: Cite,
    valid_to: String,
    resumed_at: Option<String>,
}

fn node_row(conn: &Connection, id: &str) -> Result<Option<NodeRow>, Error> {
    Ok(conn
        .prepare_cached(
            "SELECT n.id, n.kind, n.key, n.title, n.aliases, n.props, n.content, n.parent_id,
                    n.owner_id, n.valid_from, n.valid_to, r.path, s.rel_path,
                    n.cite_version, n.cite_byte_start, n.cite_byte_end, n.cite_line_start,
                    n.cite_line_end
             FROM nodes n
             LEFT JOIN sources s ON s.id = n.source_id
             LEFT JOIN roots r ON r.id = s.root_id
             WHERE n.id = ?1",
        )?
        .query_row([id], |r| {
            let aliases: String = r.get::<_, Option<String>>(4)?.unwrap_or_default();
            let props: String = r.get::<_, Option<String>>(5)?.unwrap_or_default();
            let root: Option<String> = r.get(11)?;
            Ok(NodeRow {
                view: NodeView {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    key: r.get(2)?,
                    title: r.get(3)?,
                    path: file_path(root.clone(), r.get(12)?),
                    aliases: parse_aliases(&aliases),
                    props: props_of(&props),
                    content: r.get(6)?,
                    parent_id: r.get(7)?,
                    owner_id: r.get(8)?,
                    valid_from: r.get(9)?,
                    valid_to: r.get(10)?,
                    provenance: Vec::new(),
                },
                root,
                cite: Cite::read(r, 13)?,
            })
        })
        .optional()?)
}

/// The newest `limit + 1` revisions, oldest first; the extra one (when present) only bounds
/// the oldest one kept.
fn revisions(conn: &Connection, id: &str, limit: usize) -> Result<Vec<Revision>, Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT title, aliases, props, rel_path, cite_version, cite_byte_start, cite_byte_end,
                cite_line_start, cite_line_end, valid_to, resumed_at
         FROM node_revisions WHERE node_id = ?1 ORDER BY id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![id, (limit + 1) as i64], |r| {
        Ok(Revision {
            title: r.get(0)?,
            aliases: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
            props: r.get::<_, Option<String>>(2)?.unwrap_or_default(),
            rel_path: r.get(3)?,
            cite: Cite::read(r, 4)?,
            valid_to: r.get(9)?,
            resumed_at: r.get(10)?,
        })
    })?;
    let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    out.reverse();
    Ok(out)
}

/// The half-open interval `[from, to)` citations are looked up for.
struct Window<'a> {
    from: &'a str,
    /// Exclusive; `None` is open-ended.
    to: Option<&'a str>,
}

/// The citation kept on the fact for one version, with the file path it had then.
fn kept_citation(
    conn: &Connection,
    cite: &Cite,
    root: Option<&str>,
    rel_path: Option<&str>,
) -> Result<Option<Provenance>, Error> {
    let Some(version) = cite.version else {
        return Ok(None);
    };
    let row = conn
        .prepare_cached(
            "SELECT r.path, s.rel_path, v.content_hash, v.extractor, v.extractor_version,
                    v.actor_id, v.recorded_at
             FROM source_versions v
             LEFT JOIN sources s ON s.id = v.source_id
             LEFT JOIN roots r ON r.id = s.root_id
             WHERE v.id = ?1",
        )?
        .query_row([version], |r| {
            let vroot: Option<String> = r.get(0)?;
            let vrel: Option<String> = r.get(1)?;
            let path = match (root.map(str::to_owned).or(vroot.clone()), rel_path) {
                (Some(root), Some(rel)) => Some(join_path(&root, rel)),
                _ => file_path(vroot, vrel),
            };
            Ok(Provenance {
                path,
                lines: span(cite.lines.0, cite.lines.1),
                bytes: span(cite.bytes.0, cite.bytes.1),
                content_hash: r.get(2)?,
                extractor: r.get(3)?,
                extractor_version: r.get(4)?,
                actor_id: r.get(5)?,
                run_id: None,
                step_key: None,
                recorded_at: r.get(6)?,
            })
        })
        .optional()?;
    Ok(row)
}

/// Provenance rows of a node (`column` = `node_id`) or edge (`edge_id`) that held at some
/// point of `w`.
fn rows_in(
    conn: &Connection,
    column: &str,
    id: &str,
    w: &Window<'_>,
) -> Result<Vec<Provenance>, Error> {
    let sql = format!(
        "SELECT r.path, s.rel_path, p.line_start, p.line_end, p.byte_start, p.byte_end,
                p.content_hash, p.extractor, p.extractor_version, p.actor_id, p.run_id,
                p.step_key, p.recorded_at
         FROM provenance p
         LEFT JOIN sources s ON s.id = p.source_id
         LEFT JOIN roots r ON r.id = s.root_id
         WHERE p.{column} = ?1 AND (?3 IS NULL OR p.recorded_at < ?3)
           AND (p.valid_to IS NULL OR p.valid_to > ?2)
         ORDER BY p.byte_start IS NULL, p.byte_start, p.id"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        rusqlite::params![id, w.from, w.to],
        super::provenance_from_row,
    )?;
    Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
}

fn citations(
    conn: &Connection,
    column: &str,
    id: &str,
    kept: Option<Provenance>,
    w: &Window<'_>,
) -> Result<Vec<Provenance>, Error> {
    let mut out: Vec<Provenance> = kept.into_iter().collect();
    out.extend(rows_in(conn, column, id, w)?);
    Ok(out)
}

/// Every version of `row`'s node, oldest first: `truncated` when older ones were left out.
fn versions_of(conn: &Connection, row: &NodeRow) -> Result<(Vec<Version>, bool), Error> {
    let id = &row.view.id;
    let mut revs = revisions(conn, id, MAX_HISTORY_VERSIONS)?;
    let truncated = revs.len() > MAX_HISTORY_VERSIONS;
    let mut start = row.view.valid_from.clone();
    if truncated {
        let dropped = revs.remove(0);
        start = dropped.resumed_at.unwrap_or(dropped.valid_to);
    }
    let root = row.root.as_deref();
    let mut out = Vec::with_capacity(revs.len() + 1);
    for rev in revs {
        let w = Window {
            from: &start,
            to: Some(&rev.valid_to),
        };
        let kept = kept_citation(conn, &rev.cite, root, rev.rel_path.as_deref())?;
        let provenance = citations(conn, "node_id", id, kept, &w)?;
        out.push(Version {
            title: rev.title,
            aliases: parse_aliases(&rev.aliases),
            props: props_of(&rev.props),
            path: match (root, rev.rel_path.as_deref()) {
                (Some(root), Some(rel)) => Some(join_path(root, rel)),
                _ => row.view.path.clone(),
            },
            valid_from: start,
            valid_to: Some(rev.valid_to.clone()),
            provenance,
        });
        start = rev.resumed_at.unwrap_or(rev.valid_to);
    }
    let w = Window {
        from: &start,
        to: row.view.valid_to.as_deref(),
    };
    let kept = kept_citation(conn, &row.cite, root, None)?;
    let provenance = citations(conn, "node_id", id, kept, &w)?;
    out.push(Version {
        title: row.view.title.clone(),
        aliases: row.view.aliases.clone(),
        props: row.view.props.clone(),
        path: row.view.path.clone(),
        valid_from: start,
        valid_to: row.view.valid_to.clone(),
        provenance,
    });
    Ok((out, truncated))
}

/// Every version of node `id` and every edge that ever started or ended at it. A retired
/// node has a history too; an id never seen is `node_not_found`. Sections and chunks have
/// none of their own (they are versions of their note's file) and are refused the same way.
pub fn node_history(conn: &Connection, id: &str) -> Result<History, Error> {
    super::in_snapshot(conn, |conn| {
        let row = node_row(conn, id)?.ok_or_else(|| super::node_not_found(id))?;
        let (versions, mut truncated) = versions_of(conn, &row)?;
        let mut stmt = conn.prepare_cached(concat!(
            "SELECT ",
            super::edge_columns!(),
            ", e.valid_from, e.valid_to, e.cite_version, e.cite_byte_start, e.cite_byte_end,
               e.cite_line_start, e.cite_line_end
             FROM edges e WHERE e.src_id = ?1
             UNION ALL
             SELECT ",
            super::edge_columns!(),
            ", e.valid_from, e.valid_to, e.cite_version, e.cite_byte_start, e.cite_byte_end,
               e.cite_line_start, e.cite_line_end
             FROM edges e WHERE e.dst_id = ?1 AND e.src_id <> ?1
             ORDER BY valid_from DESC, id LIMIT ?2",
        ))?;
        let rows = stmt.query_map(rusqlite::params![id, (MAX_HISTORY_EDGES + 1) as i64], |r| {
            Ok((
                super::edge_from_row(r)?,
                r.get::<_, String>(6)?,
                r.get::<_, Option<String>>(7)?,
                Cite::read(r, 8)?,
            ))
        })?;
        let mut found = rows.collect::<rusqlite::Result<Vec<_>>>()?;
        if found.len() > MAX_HISTORY_EDGES {
            found.truncate(MAX_HISTORY_EDGES);
            truncated = true;
        }
        let mut edges = Vec::with_capacity(found.len());
        for (mut edge, valid_from, valid_to, cite) in found {
            let w = Window {
                from: &valid_from,
                to: valid_to.as_deref(),
            };
            let kept = kept_citation(conn, &cite, None, None)?;
            edge.provenance = citations(conn, "edge_id", &edge.id, kept, &w)?;
            edges.push(EdgeSpan {
                edge,
                valid_from,
                valid_to,
            });
        }
        let mut node = row.view.clone();
        if let Some(last) = versions.last() {
            node.provenance = last.provenance.clone();
        }
        Ok(History {
            node,
            versions,
            edges,
            truncated,
        })
    })
}

/// Node `id` as it was at `at`: the version that held then, with the citations of then.
/// `Ok(None)` when it did not exist then (not yet, retired, or between a retirement and its
/// return). A section or chunk answers only while it is current, as it is now.
pub fn node_at(conn: &Connection, id: &str, at: &Instant) -> Result<Option<NodeView>, Error> {
    let Some(row) = node_row(conn, id)? else {
        let part = super::parts::node(conn, id)?;
        return Ok(part.filter(|p| p.valid_from.as_str() <= at.as_str()));
    };
    if !exists_at(&row.view, at) {
        return Ok(None);
    }
    let mut start = row.view.valid_from.clone();
    let root = row.root.as_deref();
    let point_end = at.next();
    let point = Window {
        from: at.as_str(),
        to: Some(&point_end),
    };
    let mut view = row.view.clone();
    // Revisions are read oldest first; the first that ends after `at` held then. A node has
    // as many as it had edits, bounded like a history answer.
    for rev in revisions(conn, id, MAX_HISTORY_VERSIONS)? {
        if rev.valid_to.as_str() > at.as_str() {
            if start.as_str() > at.as_str() {
                return Ok(None);
            }
            view.title = rev.title;
            view.aliases = parse_aliases(&rev.aliases);
            view.props = props_of(&rev.props);
            if let (Some(root), Some(rel)) = (root, rev.rel_path.as_deref()) {
                view.path = Some(join_path(root, rel));
            }
            view.valid_from = start;
            view.valid_to = Some(rev.valid_to);
            let kept = kept_citation(conn, &rev.cite, root, rev.rel_path.as_deref())?;
            view.provenance = citations(conn, "node_id", id, kept, &point)?;
            return Ok(Some(view));
        }
        start = rev.resumed_at.unwrap_or(rev.valid_to);
    }
    if start.as_str() > at.as_str() {
        return Ok(None);
    }
    view.valid_from = start;
    let kept = kept_citation(conn, &row.cite, root, None)?;
    view.provenance = citations(conn, "node_id", id, kept, &point)?;
    Ok(Some(view))
}

/// A node that is retired answers with its last version; a current one as `node_get` does.
pub fn node_last(conn: &Connection, id: &str) -> Result<Option<NodeView>, Error> {
    let Some(row) = node_row(conn, id)? else {
        return super::parts::node(conn, id);
    };
    let Some(end) = row.view.valid_to.clone() else {
        return Ok(Some(super::current_node(conn, id)?));
    };
    let mut start = row.view.valid_from.clone();
    if let Some(rev) = revisions(conn, id, 0)?.pop() {
        start = rev.resumed_at.unwrap_or(rev.valid_to);
    }
    let w = Window {
        from: &start,
        to: Some(&end),
    };
    let kept = kept_citation(conn, &row.cite, row.root.as_deref(), None)?;
    let mut view = row.view;
    view.provenance = citations(conn, "node_id", id, kept, &w)?;
    Ok(Some(view))
}

fn exists_at(n: &NodeView, at: &Instant) -> bool {
    n.valid_from.as_str() <= at.as_str() && n.valid_to.as_deref().is_none_or(|to| to > at.as_str())
}

/// The citations of edge `id` at `at`: the one kept on it and its provenance rows then.
pub fn edge_citations_at(
    conn: &Connection,
    id: &str,
    at: &Instant,
) -> Result<Vec<Provenance>, Error> {
    let cite: Option<Cite> = conn
        .prepare_cached(concat!(
            "SELECT cite_version, cite_byte_start, cite_byte_end, cite_line_start, cite_line_end
             FROM edges WHERE rowid = ",
            crate::store::edge_id::row_of!(),
            " AND id = ?1"
        ))?
        .query_row([id], |r| Cite::read(r, 0))
        .optional()?;
    let kept = match cite {
        Some(c) => kept_citation(conn, &c, None, None)?,
        None => None,
    };
    let end = at.next();
    let point = Window {
        from: at.as_str(),
        to: Some(&end),
    };
    citations(conn, "edge_id", id, kept, &point)
}

/// The SQL condition "`alias` held at `at`" for a table with text `valid_from`/`valid_to`.
/// `at` is an [`Instant`], formatted by this program from a parsed time (digits and `-:.TZ`
/// only), so it is safe inline; inline, the query keeps its numbered parameters.
pub(super) fn held_at(alias: &str, at: &Instant) -> String {
    let t = at.as_str();
    format!(
        "{alias}.valid_from <= '{t}' AND ({alias}.valid_to IS NULL OR {alias}.valid_to > '{t}')"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    fn at(t: &str) -> Instant {
        Instant(t.to_owned())
    }

    fn title_at(conn: &Connection, id: &str, t: &str) -> Option<String> {
        node_at(conn, id, &at(t))
            .unwrap()
            .map(|n| n.title.unwrap_or_default())
    }

    /// The triggers of schema 0012 as writers meet them: an update in place, a retirement and a
    /// return, and a file's new version recorded before the note's row is overwritten (as an
    /// ingest does, with the triggers off for the second write).
    #[test]
    fn revisions_follow_updates_returns_and_file_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("brain.db")).unwrap();
        store
            .write(|tx| {
                tx.execute_batch(
                    "INSERT INTO nodes(id, kind, key, title, owner_id, valid_from, created_at, updated_at)
                     VALUES ('p', 'person', 'ada', 'Ada', 'u', '2026-01-01T00:00:00.000Z',
                             '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');
                     UPDATE nodes SET title = 'Ada L', updated_at = '2026-02-01T00:00:00.000Z' WHERE id = 'p';
                     UPDATE nodes SET valid_to = '2026-03-01T00:00:00.000Z',
                                      updated_at = '2026-03-01T00:00:00.000Z' WHERE id = 'p';
                     UPDATE nodes SET valid_to = NULL, updated_at = '2026-04-01T00:00:00.000Z' WHERE id = 'p';
                     INSERT INTO roots(id, path, added_by, added_at) VALUES (1, '/v', 'u', 'x');
                     INSERT INTO sources(id, root_id, rel_path, file_type, content_hash, status,
                                         first_seen_at, last_seen_at)
                     VALUES (7, 1, 'n.md', 'markdown', 'h1', 'indexed', '2026-01-01T00:00:00.000Z',
                             '2026-01-01T00:00:00.000Z');
                     INSERT INTO nodes(id, kind, key, title, source_id, owner_id, valid_from, created_at, updated_at)
                     VALUES ('n', 'note', 'source:7', 'One', 7, 'u', '2026-01-01T00:00:00.000Z',
                             '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:00.000Z');
                     UPDATE sources SET content_hash = 'h2', rel_path = 'm.md',
                                        last_seen_at = '2026-05-01T00:00:00.000Z' WHERE id = 7;",
                )
            })
            .unwrap();
        // The ingest's second write, with the triggers off: no second revision.
        store
            .write_bulk(|tx| {
                tx.execute(
                    "UPDATE nodes SET title = 'Two', updated_at = '2026-05-01T00:00:00.000Z' WHERE id = 'n'",
                    [],
                )
            })
            .unwrap();
        store
            .read(|c| {
                let h = node_history(c, "p")?;
                let spans: Vec<(&str, Option<&str>, Option<&str>)> = h
                    .versions
                    .iter()
                    .map(|v| {
                        (
                            v.valid_from.as_str(),
                            v.valid_to.as_deref(),
                            v.title.as_deref(),
                        )
                    })
                    .collect();
                assert_eq!(
                    spans,
                    [
                        (
                            "2026-01-01T00:00:00.000Z",
                            Some("2026-02-01T00:00:00.000Z"),
                            Some("Ada")
                        ),
                        (
                            "2026-02-01T00:00:00.000Z",
                            Some("2026-03-01T00:00:00.000Z"),
                            Some("Ada L")
                        ),
                        ("2026-04-01T00:00:00.000Z", None, Some("Ada L")),
                    ]
                );
                assert_eq!(title_at(c, "p", "2025-12-31T00:00:00.000Z"), None);
                assert_eq!(
                    title_at(c, "p", "2026-01-15T00:00:00.000Z").as_deref(),
                    Some("Ada")
                );
                assert_eq!(
                    title_at(c, "p", "2026-02-01T00:00:00.000Z").as_deref(),
                    Some("Ada L")
                );
                assert_eq!(
                    title_at(c, "p", "2026-03-15T00:00:00.000Z"),
                    None,
                    "retired then"
                );
                assert_eq!(
                    title_at(c, "p", "2026-04-15T00:00:00.000Z").as_deref(),
                    Some("Ada L")
                );

                let h = node_history(c, "n")?;
                let got: Vec<(Option<&str>, Option<&str>, Option<&str>)> = h
                    .versions
                    .iter()
                    .map(|v| (v.title.as_deref(), v.path.as_deref(), v.valid_to.as_deref()))
                    .collect();
                assert_eq!(
                    got,
                    [
                        (
                            Some("One"),
                            Some("/v/n.md"),
                            Some("2026-05-01T00:00:00.000Z")
                        ),
                        (Some("Two"), Some("/v/m.md"), None),
                    ]
                );
                assert_eq!(
                    title_at(c, "n", "2026-04-30T00:00:00.000Z").as_deref(),
                    Some("One")
                );
                Ok::<_, Error>(())
            })
            .unwrap();
    }

    fn check(text: &str, expected: Option<&str>) {
        match (Instant::parse(text), expected) {
            (Ok(t), Some(e)) => assert_eq!(t.as_str(), e, "{text}"),
            (Err(err), None) => assert_eq!(err.kind, Kind::InvalidParams, "{text}"),
            (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
        }
    }

    /// A node with more versions than one answer lists: the newest are kept, contiguous, and
    /// the answer says it left some out.
    #[test]
    fn history_keeps_the_newest_versions() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("brain.db")).unwrap();
        let extra = 7;
        store
            .write(|tx| {
                tx.execute_batch(
                    "INSERT INTO nodes(id, kind, key, title, owner_id, valid_from, created_at, updated_at)
                     VALUES ('p', 'person', 'ada', 'last', 'u', '2000-01-01T00:00:00.000Z', 'x', 'x');",
                )?;
                tx.execute(
                    "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?1)
                     INSERT INTO node_revisions(node_id, title, aliases, props, valid_to)
                     SELECT 'p', 'v' || i, '[]', '{}',
                            strftime('%Y-%m-%dT%H:%M:%fZ', '2001-01-01', '+' || i || ' minutes')
                     FROM k",
                    [(MAX_HISTORY_VERSIONS + extra) as i64],
                )
            })
            .unwrap();
        let h = store.read(|c| node_history(c, "p")).unwrap();
        assert!(h.truncated);
        assert_eq!(h.versions.len(), MAX_HISTORY_VERSIONS + 1);
        let first = &h.versions[0];
        assert_eq!(
            first.title.as_deref(),
            Some(format!("v{}", extra + 1).as_str())
        );
        assert_eq!(
            first.valid_from,
            format!("2001-01-01T00:{:02}:00.000Z", extra)
        );
        for pair in h.versions.windows(2) {
            assert_eq!(
                pair[0].valid_to.as_deref(),
                Some(pair[1].valid_from.as_str())
            );
        }
        assert_eq!(h.versions.last().unwrap().title.as_deref(), Some("last"));
    }

    #[test]
    fn instants() {
        check("2026-01-07T10:00:00Z", Some("2026-01-07T10:00:00.000Z"));
        check("2026-01-07T10:00:00.5Z", Some("2026-01-07T10:00:00.500Z"));
        check(
            " 2020-02-29T23:59:59.999Z ",
            Some("2020-02-29T23:59:59.999Z"),
        );
        check("yesterday", None);
        check("2026-13-01T00:00:00Z", None);
        check("", None);
        check("9999-01-01T00:00:00Z", None);
    }
}
