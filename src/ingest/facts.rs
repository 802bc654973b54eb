//! Writing one file's facts into the graph, inside the caller's transaction.
//!
//! Identity rules: a file's own node is keyed by its source row (`source:<id>`), which survives
//! edits, renames and moves; its sections and chunks (`parts`) are keyed by that source row,
//! its edges under its node, so what a file still says keeps its id on re-ingest and what it no longer says is retired
//! (`valid_to`), never deleted. Tags, placeholders and URLs are shared by key.
//!
//! Citations: each ingest of a file records one `source_versions` row (hash, extractor, actor,
//! time), and every fact the file still states is cited afresh. The file's own facts (its
//! node, sections, chunks, and the edges from it) carry their span and version in their own
//! `cite_*` columns; facts shared with other files (tags, `child_of`) get provenance rows,
//! and the file's earlier rows are retired first.
//! Architecture Invariant: nothing here commits; the caller's transaction makes a file's
//! writes all-or-nothing.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use super::parse::{self, Document, LinkKind, Span, Subpath};
use super::parts;
use super::resolve::{self, Target};
use crate::store::edge_props;

/// What every write needs to know.
pub struct Ctx<'a> {
    pub now: &'a str,
    /// `now` in milliseconds, for the integer time columns of sections and chunks.
    pub now_ms: i64,
    pub user: &'a str,
    pub root_id: i64,
    /// Lookups already answered in the current transaction; see [`Lookups`].
    pub lookups: RefCell<Lookups>,
}

impl<'a> Ctx<'a> {
    pub fn new(now: &'a str, user: &'a str, root_id: i64) -> Ctx<'a> {
        Ctx {
            now,
            now_ms: crate::clock::millis(now),
            user,
            root_id,
            lookups: RefCell::default(),
        }
    }
}

/// Answers to the lookups a batch of files repeats most: shared nodes by kind and key (one
/// URL or tag is cited by many files), and link targets by name. Valid inside one transaction
/// only, since nothing else writes while it is open: the caller clears them when a transaction
/// begins or ends. Writes that could change an answer clear the affected map.
#[derive(Default)]
pub struct Lookups {
    shared: HashMap<(&'static str, String), NodeRef>,
    /// The row of the node each target resolves to.
    targets: HashMap<Target, Option<i64>>,
}

/// A node as the writer refers to it: its public id, and its row, by which edges and names
/// refer to it (schema 0015).
#[derive(Clone)]
struct NodeRef {
    id: String,
    rid: i64,
}

impl Lookups {
    pub fn clear(&mut self) {
        self.shared.clear();
        self.targets.clear();
    }
}

/// The file version being written.
pub struct FileVersion<'a> {
    pub source_id: i64,
    pub rel_path: &'a str,
    pub content_hash: &'a str,
    pub size: u64,
    pub lines: u32,
}

/// Node and edge ids: UUID v7, time-ordered, so that inserts land at the end of the primary-key
/// and provenance indexes instead of at random pages (random v4 ids made a cold ingest of a
/// large vault mostly page-cache misses).
fn new_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// A file's node, as [`ensure_file_node`] found or made it.
pub struct FileNode {
    pub id: String,
    /// Made just now: it has no names yet.
    pub created: bool,
    /// Names gained or lost.
    pub changed: Vec<String>,
}

/// Creates or finds the node of a file (`note` for parsed files, `file` for the rest) and
/// registers the names links can use for it. A file whose node was retired (it was moved in
/// two steps, or ignored for a while) takes that node back.
pub fn ensure_file_node(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    source_id: i64,
    rel_path: &str,
    kind: &str,
    is_markdown: bool,
) -> rusqlite::Result<FileNode> {
    let key = format!("source:{source_id}");
    let mut existing: Option<(String, String)> = tx
        .prepare_cached(
            "SELECT id, kind FROM nodes WHERE key = ?1 AND kind IN ('note', 'file') AND valid_to IS NULL",
        )?
        .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if existing.is_none() {
        // The file is back (moved in two steps, or no longer ignored): its last node becomes
        // current again, so the note keeps its id. What the file says is written afresh by
        // `write_document`; the node's old facts stay retired. For a new source this is one
        // seek into a partial index of retired file nodes, which finds nothing.
        existing = tx
            .prepare_cached(
                "SELECT id, kind FROM nodes
                 WHERE key = ?1 AND valid_to IS NOT NULL AND kind IN ('note', 'file')
                 ORDER BY valid_to DESC LIMIT 1",
            )?
            .query_row([&key], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        if let Some((id, _)) = &existing {
            tx.prepare_cached("UPDATE nodes SET valid_to = NULL, updated_at = ?2 WHERE id = ?1")?
                .execute(params![id, ctx.now])?;
        }
    }
    let stem = rel_path.rsplit('/').next().unwrap_or(rel_path);
    let title = if is_markdown {
        stem.strip_suffix(".md").unwrap_or(stem)
    } else {
        stem
    };
    let created = existing.is_none();
    let id = match existing {
        Some((id, old_kind)) => {
            if old_kind != kind {
                tx.prepare_cached("UPDATE nodes SET kind = ?2, updated_at = ?3 WHERE id = ?1")?
                    .execute(params![id, kind, ctx.now])?;
            }
            id
        }
        None => {
            let id = new_id();
            tx.prepare_cached(
                "INSERT INTO nodes(id, kind, key, title, source_id, owner_id, valid_from, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7, ?7)",
            )?
            .execute(params![id, kind, key, title, source_id, ctx.user, ctx.now])?;
            id
        }
    };
    // A node made just now has no names to read.
    let old: HashSet<String> = if created {
        HashSet::new()
    } else {
        names_of(tx, &id, &["stem", "path"])?
    };
    let new = resolve::names_for(rel_path, is_markdown);
    let new_set: HashSet<String> = new.iter().map(|(n, _)| n.clone()).collect();
    let mut changed = Vec::new();
    if old != new_set {
        if !old.is_empty() {
            tx.prepare_cached(
                "DELETE FROM note_names
                 WHERE node = (SELECT rid FROM nodes WHERE id = ?1) AND how IN ('stem', 'path')",
            )?
            .execute([&id])?;
        }
        let mut ins = tx.prepare_cached(
            "INSERT INTO note_names(root_id, name, how, node, depth, rel_path)
             VALUES (?1, ?2, ?3, (SELECT rid FROM nodes WHERE id = ?4), ?5, ?6)",
        )?;
        for (name, how) in &new {
            ins.execute(params![
                ctx.root_id,
                name,
                how,
                id,
                resolve::depth(rel_path),
                rel_path
            ])?;
        }
        changed.extend(old.symmetric_difference(&new_set).cloned());
        ctx.lookups.borrow_mut().targets.clear();
    }
    Ok(FileNode {
        id,
        created,
        changed,
    })
}

/// Registers the aliases of a node [`ensure_file_node`] returned; one it made just now has
/// none yet to read.
pub fn write_file_node_aliases(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    node: &FileNode,
    rel_path: &str,
    aliases: &[String],
) -> rusqlite::Result<Vec<String>> {
    if node.created {
        write_aliases_over(tx, ctx, &node.id, rel_path, aliases, HashSet::new())
    } else {
        write_aliases(tx, ctx, &node.id, rel_path, aliases)
    }
}

fn names_of(
    tx: &Transaction<'_>,
    node_id: &str,
    hows: &[&str],
) -> rusqlite::Result<HashSet<String>> {
    let mut stmt = tx.prepare_cached(
        "SELECT name, how FROM note_names WHERE node = (SELECT rid FROM nodes WHERE id = ?1)",
    )?;
    let rows = stmt.query_map([node_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
    })?;
    let mut out = HashSet::new();
    for row in rows {
        let (name, how) = row?;
        if hows.contains(&how.as_str()) {
            out.insert(name);
        }
    }
    Ok(out)
}

struct WantedEdge<'a> {
    /// The row of the node it points at.
    dst: i64,
    edge_type: &'a str,
    key: String,
    /// The `props` column as written.
    props: Option<&'a SqlValue>,
    span: Option<Span>,
}

/// A `tagged` edge's props column, by whether the tag is in the front matter: two values,
/// made once rather than per edge.
static TAG_PROPS: LazyLock<[Option<SqlValue>; 2]> = LazyLock::new(|| {
    [false, true].map(|from_front_matter| {
        edge_props::column(&json!({ "from_front_matter": from_front_matter }))
    })
});

/// A parsed file with what writing it needs computed ahead, on the parsing threads, so that
/// the one writer binds ready values and runs SQL. Only what needs no store is here: link
/// targets are resolved, and shared nodes found, by the writer.
pub struct Prepared {
    /// The document, with only what the writer reads from it: its title, aliases, tags and
    /// links (the rest moved into the planned values, so a batch holds it once).
    pub doc: Document,
    parts: parts::Plan,
    /// The note's `title`, `aliases` and `props` columns.
    title: String,
    aliases: Option<String>,
    props: Option<String>,
    links: Vec<PlannedLink>,
    /// Names whose appearance may change where this file's links resolve (`link_refs`).
    refs: HashSet<String>,
    /// The `sources.diagnostics` column.
    pub diagnostics: String,
}

/// Where a link points, as far as the file alone tells.
enum LinkDst {
    /// A URL: its shared node, keyed by the link's target.
    Url,
    /// A link into the same note (`[[#Heading]]`).
    SameNote,
    /// Another note, to resolve against the names.
    Note(Target),
}

/// One link of a [`Prepared`] file.
struct PlannedLink {
    dst: LinkDst,
    /// The edges' `props` column.
    props: Option<SqlValue>,
    span: Span,
    /// Each edge the link makes.
    edges: Vec<PlannedEdge>,
}

struct PlannedEdge {
    edge_type: Cow<'static, str>,
    /// The hash of what tells the edge apart from the note's other links to the same target
    /// (type, link kind, subpath and display): its key's first part, and what links are
    /// counted by (256 bits stand for the text itself).
    base: blake3::Hash,
}

impl Prepared {
    /// Plans the writes of `doc`, parsed from the file at `rel_path`.
    pub fn new(mut doc: Document, rel_path: &str) -> Prepared {
        let parts = parts::plan(&mut doc);
        doc.chunks = Vec::new();
        doc.headings = Vec::new();
        doc.inline_fields = Vec::new();
        let mut props = std::mem::take(&mut doc.properties);
        if !doc.block_ids.is_empty() {
            let blocks: serde_json::Map<String, Value> = doc
                .block_ids
                .iter()
                .map(|b| (b.id.clone(), json!([b.span.line_start, b.span.line_end])))
                .collect();
            props.insert("_blocks".into(), Value::Object(blocks));
            doc.block_ids = Vec::new();
        }
        if let Some(id) = &doc.front_matter_id {
            props.insert("_id".into(), json!(id));
        }
        let stem = rel_path.rsplit('/').next().unwrap_or(rel_path);
        let stem = stem.strip_suffix(".md").unwrap_or(stem);
        let title = doc.title.clone().unwrap_or_else(|| stem.to_owned());
        let diagnostics: Vec<Value> = doc
            .diagnostics
            .iter()
            .map(|x| json!({ "message": x.message, "lines": x.span.map(|s| [s.line_start, s.line_end]) }))
            .collect();
        doc.diagnostics = Vec::new();
        let (links, refs) = plan_links(&doc, rel_path);
        Prepared {
            parts,
            title,
            aliases: aliases_column(&doc.aliases),
            props: edge_props::text_column(&Value::Object(props)),
            links,
            refs,
            diagnostics: Value::from(diagnostics).to_string(),
            doc,
        }
    }
}

/// Writes everything `doc` says about the file whose node is `note_id`. Returns the names whose
/// resolution may have changed (aliases gained or lost).
pub fn write_document(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    note_id: &str,
    file: &FileVersion<'_>,
    doc: Option<&Prepared>,
) -> rusqlite::Result<Vec<String>> {
    // This version replaces every citation the file made before: the provenance rows here,
    // the citations kept on its own facts as each is written below.
    tx.prepare_cached(
        "UPDATE provenance SET valid_to = ?2 WHERE source_id = ?1 AND valid_to IS NULL",
    )?
    .execute(params![file.source_id, ctx.now])?;
    tx.prepare_cached(
        "INSERT INTO source_versions(source_id, content_hash, extractor, extractor_version, actor_id, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        file.source_id,
        file.content_hash,
        parse::EXTRACTOR,
        parse::EXTRACTOR_VERSION,
        ctx.user,
        ctx.now
    ])?;
    let version = tx.last_insert_rowid();
    let whole = Span {
        byte_start: 0,
        byte_end: file.size as usize,
        line_start: 1,
        line_end: file.lines.max(1),
    };
    cite_node(tx, note_id, &Cite::new(version, Some(whole)))?;

    let mut changed_names = Vec::new();
    let mut edges = Vec::new();
    let note_rid: i64 = tx
        .prepare_cached("SELECT rid FROM nodes WHERE id = ?1")?
        .query_row([note_id], |r| r.get(0))?;
    tx.prepare_cached("DELETE FROM link_refs WHERE src = ?1")?
        .execute([note_rid])?;

    if let Some(p) = doc {
        tx.prepare_cached(
            "UPDATE nodes SET title = ?2, aliases = ?3, props = ?4, updated_at = ?5 WHERE id = ?1
               AND (title IS NOT ?2 OR aliases IS NOT ?3 OR props IS NOT ?4)",
        )?
        .execute(params![note_id, p.title, p.aliases, p.props, ctx.now])?;
        changed_names.extend(write_aliases(
            tx,
            ctx,
            note_id,
            file.rel_path,
            &p.doc.aliases,
        )?);
        plan_tags(tx, ctx, file, &p.doc, &mut edges)?;
        resolve_links(tx, ctx, note_rid, p, &mut edges)?;
    } else {
        changed_names.extend(write_aliases(tx, ctx, note_id, file.rel_path, &[])?);
    }

    parts::write(
        tx,
        file.source_id,
        version,
        ctx.now_ms,
        doc.map(|p| &p.parts),
    )?;
    write_edges(tx, ctx, note_rid, version, edges)?;
    // What the triggers would queue, once, whether or not they are on (see Store::write_bulk).
    tx.prepare_cached("INSERT INTO search_outbox(note_id) VALUES (?1)")?
        .execute([note_id])?;
    Ok(changed_names)
}

/// Registers the aliases a note's front matter gives; returns the names gained or lost.
pub fn write_aliases(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    note_id: &str,
    rel_path: &str,
    aliases: &[String],
) -> rusqlite::Result<Vec<String>> {
    let old = names_of(tx, note_id, &["alias"])?;
    write_aliases_over(tx, ctx, note_id, rel_path, aliases, old)
}

/// [`write_aliases`] for a node whose aliases are known to be `old`.
fn write_aliases_over(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    note_id: &str,
    rel_path: &str,
    aliases: &[String],
    old: HashSet<String>,
) -> rusqlite::Result<Vec<String>> {
    let new: HashSet<String> = aliases
        .iter()
        .map(|a| a.trim().to_lowercase())
        .filter(|a| !a.is_empty())
        .collect();
    if old == new {
        return Ok(Vec::new());
    }
    ctx.lookups.borrow_mut().targets.clear();
    if !old.is_empty() {
        tx.prepare_cached(
            "DELETE FROM note_names
             WHERE node = (SELECT rid FROM nodes WHERE id = ?1) AND how = 'alias'",
        )?
        .execute([note_id])?;
    }
    let mut ins = tx.prepare_cached(
        "INSERT INTO note_names(root_id, name, how, node, depth, rel_path)
         VALUES (?1, ?2, 'alias', (SELECT rid FROM nodes WHERE id = ?3), ?4, ?5)",
    )?;
    for a in &new {
        ins.execute(params![
            ctx.root_id,
            a,
            note_id,
            resolve::depth(rel_path),
            rel_path
        ])?;
    }
    Ok(old.symmetric_difference(&new).cloned().collect())
}

/// Gets or creates a shared node (tag, placeholder, url) by kind and key.
fn shared_node(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    kind: &'static str,
    key: &str,
    title: &str,
) -> rusqlite::Result<NodeRef> {
    let cache_key = (kind, key.to_owned());
    if let Some(node) = ctx.lookups.borrow().shared.get(&cache_key) {
        return Ok(node.clone());
    }
    let found: Option<NodeRef> = tx
        .prepare_cached(
            "SELECT id, rid FROM nodes WHERE kind = ?1 AND key = ?2 AND valid_to IS NULL",
        )?
        .query_row([kind, key], |r| {
            Ok(NodeRef {
                id: r.get(0)?,
                rid: r.get(1)?,
            })
        })
        .optional()?;
    let node = match found {
        Some(node) => node,
        None => {
            let id = new_id();
            tx.prepare_cached(
                "INSERT INTO nodes(id, kind, key, title, owner_id, valid_from, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?6)",
            )?
            .execute(params![id, kind, key, title, ctx.user, ctx.now])?;
            NodeRef {
                id,
                rid: tx.last_insert_rowid(),
            }
        }
    };
    ctx.lookups
        .borrow_mut()
        .shared
        .insert(cache_key, node.clone());
    Ok(node)
}

/// [`resolve::resolve`], remembered for the rest of the transaction.
fn resolve_cached(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    target: &Target,
) -> rusqlite::Result<Option<i64>> {
    if let Some(found) = ctx.lookups.borrow().targets.get(target) {
        return Ok(*found);
    }
    let found = resolve::resolve(tx, ctx.root_id, target)?;
    ctx.lookups
        .borrow_mut()
        .targets
        .insert(target.clone(), found);
    Ok(found)
}

fn plan_tags(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    file: &FileVersion<'_>,
    doc: &Document,
    edges: &mut Vec<WantedEdge<'_>>,
) -> rusqlite::Result<()> {
    let mut done = HashSet::new();
    for tag in &doc.tags {
        let name = tag.name.trim_matches('/').to_owned();
        let lower = name.to_lowercase();
        if lower.is_empty() || !done.insert(lower.clone()) {
            continue;
        }
        let tag_node = shared_node(tx, ctx, "tag", &format!("tag:{lower}"), &name)?;
        add_provenance(tx, ctx, file, Some(&tag_node.id), None, Some(tag.span))?;
        edges.push(WantedEdge {
            dst: tag_node.rid,
            edge_type: "tagged",
            key: String::new(),
            props: TAG_PROPS[usize::from(tag.from_front_matter)].as_ref(),
            span: Some(tag.span),
        });
        // Nested tags: a/b/c child_of a/b child_of a. These edges belong to the tags, not to
        // this file, so they are created once and cited by every file that implies them.
        let mut child = (tag_node.id, name.clone());
        while let Some((parent, _)) = child.1.rsplit_once('/') {
            let parent = parent.to_owned();
            let pid = shared_node(
                tx,
                ctx,
                "tag",
                &format!("tag:{}", parent.to_lowercase()),
                &parent,
            )?
            .id;
            add_provenance(tx, ctx, file, Some(&pid), None, Some(tag.span))?;
            let eid = shared_edge(tx, ctx, &child.0, &pid, "child_of")?;
            add_provenance(tx, ctx, file, None, Some(&eid), Some(tag.span))?;
            child = (pid, parent);
        }
    }
    Ok(())
}

fn shared_edge(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    src: &str,
    dst: &str,
    edge_type: &str,
) -> rusqlite::Result<String> {
    let found: Option<String> = tx
        .prepare_cached(
            "SELECT id FROM edges WHERE src_id = ?1 AND dst_id = ?2 AND type = ?3 AND key = '' AND valid_to IS NULL",
        )?
        .query_row([src, dst, edge_type], |r| r.get(0))
        .optional()?;
    if let Some(id) = found {
        return Ok(id);
    }
    let id = new_id();
    // The ingester runs with triggers off, so it writes the rows under the `edges` view.
    tx.prepare_cached(
        "INSERT INTO edge_rows(id, src, dst, type, key, created_by, valid_from)
         VALUES (?1, (SELECT rid FROM nodes WHERE id = ?2), (SELECT rid FROM nodes WHERE id = ?3),
                 ?4, '', ?5, ?6)",
    )?
    .execute(params![id, src, dst, edge_type, ctx.user, ctx.now])?;
    Ok(id)
}

/// Plans a document's links: their targets as far as the file tells, their props and the
/// bases of their keys. Returns them and the names they watch.
fn plan_links(doc: &Document, rel_path: &str) -> (Vec<PlannedLink>, HashSet<String>) {
    let mut refs = HashSet::new();
    let in_front_matter = |s: &Span| {
        doc.front_matter
            .is_some_and(|fm| s.byte_start >= fm.byte_start && s.byte_end <= fm.byte_end)
    };
    let mut links = Vec::with_capacity(doc.links.len());
    for link in &doc.links {
        let (dst, subpath_json) = if link.kind == LinkKind::External {
            (LinkDst::Url, Value::Null)
        } else {
            let subpath = match &link.subpath {
                Some(Subpath::Heading(h)) => json!({ "heading": h }),
                Some(Subpath::Block(b)) => json!({ "block": b }),
                None => Value::Null,
            };
            match Target::new(&link.target, rel_path) {
                None => (LinkDst::SameNote, subpath),
                Some(target) => {
                    refs.extend(target.watch_names());
                    (LinkDst::Note(target), subpath)
                }
            }
        };
        let kind = match (&link.subpath, link.kind) {
            (_, LinkKind::External) => "external",
            (Some(Subpath::Heading(_)), _) => "heading",
            (Some(Subpath::Block(_)), _) => "block",
            (None, k) => parse::link_kind_name(&k),
        };
        let props = json!({
            "kind": kind,
            "syntax": parse::link_kind_name(&link.kind),
            "target": link.target,
            "subpath": subpath_json,
            "display": link.display,
        });
        let mut types = Vec::new();
        if !in_front_matter(&link.span) {
            types.push(Cow::Borrowed("links_to"));
        }
        if let Some(p) = &link.property {
            types.push(Cow::Owned(p.trim().to_owned()));
        }
        let edges = types
            .into_iter()
            .map(|edge_type| {
                let base = format!(
                    "{edge_type}|{kind}|{subpath_json}|{}",
                    link.display.as_deref().unwrap_or("")
                );
                PlannedEdge {
                    edge_type,
                    base: blake3::hash(base.as_bytes()),
                }
            })
            .collect();
        // A URL node's key is the link's target: the `edges` view puts it back.
        let props = if matches!(dst, LinkDst::Url) {
            edge_props::column_to_dst_key(&props)
        } else {
            edge_props::column(&props)
        };
        links.push(PlannedLink {
            dst,
            props,
            span: link.span,
            edges,
        });
    }
    (links, refs)
}

/// Finds or creates each planned link's target and adds its edges to `edges`; records the
/// names the links watch.
fn resolve_links<'a>(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    note_rid: i64,
    p: &'a Prepared,
    edges: &mut Vec<WantedEdge<'a>>,
) -> rusqlite::Result<()> {
    // Links of one note to one target with one base, counted for their keys.
    let mut seen: HashMap<(i64, blake3::Hash), usize> = HashMap::new();
    for (link, planned) in p.doc.links.iter().zip(&p.links) {
        let dst = match &planned.dst {
            LinkDst::Url => shared_node(tx, ctx, "url", &link.target, &link.target)?.rid,
            LinkDst::SameNote => note_rid,
            LinkDst::Note(target) => match resolve_cached(tx, ctx, target)? {
                Some(rid) => rid,
                None => {
                    let key = format!("{}:{}", ctx.root_id, target.name);
                    let title = link.target.trim().to_owned();
                    shared_node(tx, ctx, "placeholder", &key, &title)?.rid
                }
            },
        };
        for e in &planned.edges {
            let n = seen.entry((dst, e.base)).or_default();
            *n += 1;
            edges.push(WantedEdge {
                dst,
                edge_type: &e.edge_type,
                key: key_of_hash(&e.base, *n),
                props: planned.props.as_ref(),
                span: Some(planned.span),
            });
        }
    }
    let mut ins =
        tx.prepare_cached("INSERT INTO link_refs(root_id, name, src) VALUES (?1, ?2, ?3)")?;
    for name in &p.refs {
        ins.execute(params![ctx.root_id, name, note_rid])?;
    }
    Ok(())
}

/// Bytes of a link edge's key kept from the hash of what tells it apart. The key only has to
/// tell apart the links of one note to one target with one edge type (a dozen at most in real
/// notes), so 64 bits make a clash vanishingly unlikely; a clash would fail that file's ingest
/// on the unique index, not merge two links.
const LINK_KEY_HEX: usize = 16;

/// The key of the `n`th link of a note described by `base` (type, link kind, subpath and
/// display): a hash of it, since the edge's props already say all of it in full (the key
/// spelled it out again, about a tenth of a link's row and of its unique index entry).
fn link_key(base: &str, n: usize) -> String {
    key_of_hash(&blake3::hash(base.as_bytes()), n)
}

/// [`link_key`] of a base already hashed.
fn key_of_hash(hash: &blake3::Hash, n: usize) -> String {
    format!("{}#{n}", &hash.to_hex()[..LINK_KEY_HEX])
}

/// A key as [`link_key`] writes it. Keys written before it spelled the base out
/// (`<type>|<kind>|<subpath>|<display>#n`, always with a `|`); such an edge is matched by its
/// hashed form, so it keeps its id, and takes that form when its file is next ingested.
fn current_key(key: &str) -> String {
    match key.rsplit_once('#') {
        Some((base, n)) if base.contains('|') => match n.parse() {
            Ok(n) => link_key(base, n),
            Err(_) => key.to_owned(),
        },
        _ => key.to_owned(),
    }
}

/// Current edges from the note: keep those still wanted, create new ones, retire the rest.
/// Each is cited by file version `version`.
fn write_edges(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    note_rid: i64,
    version: i64,
    wanted: Vec<WantedEdge<'_>>,
) -> rusqlite::Result<()> {
    // (target's row, type, key in today's form) → the edge's row
    let mut existing: HashMap<(i64, String, String), i64> = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT rid, dst, type, key FROM edge_rows WHERE src = ?1 AND valid_to IS NULL",
        )?;
        let rows = stmt.query_map([note_rid], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
        })?;
        for row in rows {
            let (rid, dst, t, k) = row?;
            existing.insert((dst, t, current_key(&k)), rid);
        }
    }
    // The acting user and the creation time are the cited version's and the edge's start
    // (schema 0014): neither is written.
    let mut ins = tx.prepare_cached(
        "INSERT INTO edge_rows(id, src, dst, type, key, props, valid_from,
                               cite_version, cite_byte_start, cite_byte_end, cite_line_start,
                               cite_line_end)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?;
    // An edge that took its acting user from the version it cited keeps that user when it is
    // cited by a version another user recorded: it is written out first. Prepared only when
    // there are edges to keep (a statement cache lookup hashes the whole SQL text).
    let mut keep = (!existing.is_empty())
        .then(|| {
            tx.prepare_cached(
                "UPDATE edge_rows SET props = ?2, cite_version = ?3, cite_byte_start = ?4,
                              cite_byte_end = ?5, cite_line_start = ?6, cite_line_end = ?7,
                              key = ?8,
                              created_by = coalesce(created_by,
                                  (SELECT v.actor_id FROM source_versions v
                                   WHERE v.id = edge_rows.cite_version AND v.actor_id IS NOT ?9))
         WHERE rid = ?1",
            )
        })
        .transpose()?;
    for e in wanted {
        let cite = Cite::new(version, e.span);
        // A file written for the first time has no edges to match.
        let kept = if existing.is_empty() {
            None
        } else {
            existing.remove(&(e.dst, e.edge_type.to_owned(), e.key.clone()))
        };
        match kept.zip(keep.as_mut()) {
            Some((rid, keep)) => {
                keep.execute(params![
                    rid,
                    e.props,
                    cite.version,
                    cite.byte_start,
                    cite.byte_end,
                    cite.line_start,
                    cite.line_end,
                    e.key,
                    ctx.user
                ])?;
            }
            None => {
                // A link (an edge with a key) takes its id from its row (`store::edge_id`); a
                // tag, which a workflow may cite, gets one stored.
                ins.execute(params![
                    e.key.is_empty().then(new_id),
                    note_rid,
                    e.dst,
                    e.edge_type,
                    e.key,
                    e.props,
                    ctx.now,
                    cite.version,
                    cite.byte_start,
                    cite.byte_end,
                    cite.line_start,
                    cite.line_end
                ])?;
            }
        }
    }
    if existing.is_empty() {
        return Ok(());
    }
    let mut retire = tx.prepare_cached("UPDATE edge_rows SET valid_to = ?2 WHERE rid = ?1")?;
    for rid in existing.into_values() {
        retire.execute(params![rid, ctx.now])?;
    }
    Ok(())
}

/// A list of aliases as its column: absent (NULL) when there are none.
fn aliases_column(aliases: &[String]) -> Option<String> {
    (!aliases.is_empty()).then(|| Value::from(aliases.to_vec()).to_string())
}

/// A citation kept on a file's own fact: the file version, and the span when there is one.
struct Cite {
    version: i64,
    byte_start: Option<i64>,
    byte_end: Option<i64>,
    line_start: Option<u32>,
    line_end: Option<u32>,
}

impl Cite {
    fn new(version: i64, span: Option<Span>) -> Cite {
        let (byte_start, byte_end, line_start, line_end) = span_columns(span);
        Cite {
            version,
            byte_start,
            byte_end,
            line_start,
            line_end,
        }
    }
}

/// A span as the four columns every citation stores it in (all NULL without a span).
fn span_columns(span: Option<Span>) -> (Option<i64>, Option<i64>, Option<u32>, Option<u32>) {
    (
        span.map(|s| s.byte_start as i64),
        span.map(|s| s.byte_end as i64),
        span.map(|s| s.line_start),
        span.map(|s| s.line_end),
    )
}

/// Cites a node the file states (its own node, a section, a chunk) in this version.
fn cite_node(tx: &Transaction<'_>, id: &str, cite: &Cite) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE nodes SET cite_version = ?2, cite_byte_start = ?3, cite_byte_end = ?4,
                          cite_line_start = ?5, cite_line_end = ?6
         WHERE id = ?1",
    )?
    .execute(params![
        id,
        cite.version,
        cite.byte_start,
        cite.byte_end,
        cite.line_start,
        cite.line_end
    ])?;
    Ok(())
}

/// Cites a shared fact (a tag, a `child_of` edge) by a provenance row.
fn add_provenance(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    file: &FileVersion<'_>,
    node: Option<&str>,
    edge: Option<&str>,
    span: Option<Span>,
) -> rusqlite::Result<()> {
    let (byte_start, byte_end, line_start, line_end) = span_columns(span);
    tx.prepare_cached(
        "INSERT INTO provenance(node_id, edge_id, source_id, byte_start, byte_end, line_start, line_end,
                                content_hash, extractor, extractor_version, actor_id, recorded_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
    )?
    .execute(params![
        node,
        edge,
        file.source_id,
        byte_start,
        byte_end,
        line_start,
        line_end,
        file.content_hash,
        parse::EXTRACTOR,
        parse::EXTRACTOR_VERSION,
        ctx.user,
        ctx.now
    ])?;
    Ok(())
}

/// Retires a node and every current edge touching it.
pub fn retire_node(tx: &Transaction<'_>, ctx: &Ctx<'_>, id: &str) -> rusqlite::Result<()> {
    // It may be a remembered shared node or link target.
    ctx.lookups.borrow_mut().clear();
    tx.prepare_cached("UPDATE nodes SET valid_to = ?2 WHERE id = ?1 AND valid_to IS NULL")?
        .execute(params![id, ctx.now])?;
    // Two statements, not one with `OR`: each uses its own index, where the `OR` made SQLite
    // scan every current edge.
    tx.prepare_cached(
        "UPDATE edge_rows SET valid_to = ?2
         WHERE src = (SELECT rid FROM nodes WHERE id = ?1) AND valid_to IS NULL",
    )?
    .execute(params![id, ctx.now])?;
    tx.prepare_cached(
        "UPDATE edge_rows SET valid_to = ?2
         WHERE dst = (SELECT rid FROM nodes WHERE id = ?1) AND valid_to IS NULL",
    )?
    .execute(params![id, ctx.now])?;
    tx.prepare_cached(
        "UPDATE provenance SET valid_to = ?2 WHERE node_id = ?1 AND valid_to IS NULL",
    )?
    .execute(params![id, ctx.now])?;
    Ok(())
}

/// Retires everything a file said, and the file's node. Returns the names that went away.
pub fn retire_file(
    tx: &Transaction<'_>,
    ctx: &Ctx<'_>,
    source_id: i64,
) -> rusqlite::Result<Vec<String>> {
    let ids: Vec<String> = tx
        .prepare_cached("SELECT id FROM nodes WHERE source_id = ?1 AND valid_to IS NULL")?
        .query_map([source_id], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut names = Vec::new();
    for id in &ids {
        names.extend(names_of(tx, id, &["stem", "path", "alias"])?);
        // `retire_node` below forgets the remembered lookups.
        tx.prepare_cached(
            "DELETE FROM note_names WHERE node = (SELECT rid FROM nodes WHERE id = ?1)",
        )?
        .execute([id])?;
        tx.prepare_cached(
            "DELETE FROM link_refs WHERE src = (SELECT rid FROM nodes WHERE id = ?1)",
        )?
        .execute([id])?;
        retire_node(tx, ctx, id)?;
    }
    super::parts::retire(tx, source_id, ctx.now_ms)?;
    tx.prepare_cached(
        "UPDATE provenance SET valid_to = ?2 WHERE source_id = ?1 AND valid_to IS NULL",
    )?
    .execute(params![source_id, ctx.now])?;
    Ok(names)
}

/// Retires shared nodes nothing points at any more: placeholders and URLs without incoming
/// edges, tags without files or child tags. Only nodes that lost an incoming edge in this sync
/// (edges retired at `ctx.now`) can have become orphans, so only they are checked: a sync
/// costs what it changed, not the size of the graph.
pub fn collect_garbage(tx: &Transaction<'_>, ctx: &Ctx<'_>) -> rusqlite::Result<usize> {
    let mut total = 0;
    loop {
        let ids: Vec<String> = tx
            // From the edges retired now to their targets, by row: asked the other way round
            // (targets among the nodes of those kinds), SQLite scanned every current URL and
            // tag, 50 ms a sync on obsidian-hub's 43k URLs even when nothing was retired.
            .prepare_cached(
                "SELECT DISTINCT d.id FROM edge_rows r JOIN nodes d ON d.rid = r.dst
                 WHERE r.valid_to = ?1 AND d.kind IN ('placeholder', 'url', 'tag')
                   AND d.valid_to IS NULL
                   AND NOT EXISTS (SELECT 1 FROM edge_rows e WHERE e.dst = d.rid AND e.valid_to IS NULL)",
            )?
            .query_map([ctx.now], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(total);
        }
        total += ids.len();
        for id in ids {
            retire_node(tx, ctx, &id)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use crate::graph::{self, Direction, NodeRef};
    use crate::ingest::{DEFAULT_MAX_FILE_BYTES, Ingestor, Scope};
    use crate::store::Store;

    /// A link edge takes its acting user from the file version it cites (schema 0014), and
    /// keeps it when a version another user recorded cites it again.
    #[test]
    fn a_link_keeps_the_user_who_wrote_it_when_another_user_ingests_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        std::fs::create_dir(&vault).unwrap();
        let note = vault.join("n.md");
        std::fs::write(&note, "See [[a]].\n").unwrap();
        let store = Arc::new(Store::open(&dir.path().join("brain.db")).unwrap());
        let alice = Ingestor::new(store.clone(), "user:alice", DEFAULT_MAX_FILE_BYTES);
        let root = alice.add_root(&vault, false).unwrap();
        alice.sync(&root, &Scope::All, &mut |_| {}).unwrap();
        std::fs::write(&note, "See [[a]] and [[b]].\n").unwrap();
        let bob = Ingestor::new(store.clone(), "user:bob", DEFAULT_MAX_FILE_BYTES);
        bob.sync(&root, &Scope::All, &mut |_| {}).unwrap();
        // Twice: an edge already written out stays as it is.
        std::fs::write(&note, "See [[a]], [[b]].\n").unwrap();
        bob.sync(&root, &Scope::All, &mut |_| {}).unwrap();

        let (answered, stored) = store
            .read(|c| {
                let id = graph::node_get(c, &NodeRef::Path(note.clone())).unwrap().id;
                let g =
                    graph::neighbors(c, &id, Direction::Out, &["links_to".into()], 1, 10).unwrap();
                let mut answered: Vec<(String, String)> = g
                    .edges
                    .iter()
                    .map(|e| {
                        (
                            e.props["target"].as_str().unwrap().to_owned(),
                            e.created_by.clone(),
                        )
                    })
                    .collect();
                answered.sort();
                let stored: Vec<Option<String>> = c
                    .prepare("SELECT created_by FROM edges WHERE type = 'links_to' ORDER BY rowid")?
                    .query_map([], |r| r.get(0))?
                    .collect::<rusqlite::Result<_>>()?;
                Ok::<_, rusqlite::Error>((answered, stored))
            })
            .unwrap();
        assert_eq!(
            answered,
            [
                ("a".to_owned(), "user:alice".to_owned()),
                ("b".to_owned(), "user:bob".to_owned())
            ]
        );
        assert_eq!(stored, [Some("user:alice".to_owned()), None]);
    }

    /// A link read from a file stores no id: it answers to the one its row gives it
    /// (`store::edge_id`), keeps it while the file still says the link, and is found by it. A
    /// tag's edge, which a workflow may cite, stores its id.
    #[test]
    fn a_link_answers_to_its_rows_id_and_keeps_it_across_edits() {
        let dir = tempfile::tempdir().unwrap();
        let vault = dir.path().join("vault");
        std::fs::create_dir(&vault).unwrap();
        let note = vault.join("n.md");
        std::fs::write(&note, "See [[a]] and https://x.org #t\n").unwrap();
        let store = Arc::new(Store::open(&dir.path().join("brain.db")).unwrap());
        let ingestor = Ingestor::new(store.clone(), "user:u", DEFAULT_MAX_FILE_BYTES);
        let root = ingestor.add_root(&vault, false).unwrap();
        ingestor.sync(&root, &Scope::All, &mut |_| {}).unwrap();
        // (type, id as answered, id as stored) of the current edges.
        let edges = || {
            store
                .read(|c| {
                    c.prepare(
                        "SELECT e.type, e.id, r.id FROM edges e JOIN edge_rows r ON r.rid = e.rowid
                         WHERE e.valid_to IS NULL ORDER BY e.type, e.id",
                    )?
                    .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<rusqlite::Result<Vec<(String, String, Option<String>)>>>()
                })
                .unwrap()
        };
        let before = edges();
        assert_eq!(before.len(), 3, "{before:?}");
        for (ty, id, stored) in &before {
            if ty == "tagged" {
                assert_eq!(stored.as_deref(), Some(id.as_str()));
            } else {
                assert_eq!(*stored, None, "{ty}");
                assert!(crate::store::edge_id::parse(id).is_some(), "{id}");
                // Found by its id, with its citation.
                let cited: i64 = store
                    .read(|c| {
                        c.query_row(
                            concat!(
                                "SELECT count(*) FROM edges WHERE rowid = ",
                                crate::store::edge_id::row_of!(),
                                " AND id = ?1 AND cite_version IS NOT NULL"
                            ),
                            [id],
                            |r| r.get(0),
                        )
                    })
                    .unwrap();
                assert_eq!(cited, 1, "{id}");
            }
        }
        std::fs::write(&note, "Intro.\n\nSee [[a]] and https://x.org #t\n").unwrap();
        ingestor.sync(&root, &Scope::All, &mut |_| {}).unwrap();
        assert_eq!(edges(), before, "the same edges under the same ids");
    }

    #[test]
    fn link_keys_are_short_and_older_keys_match_in_their_hashed_form() {
        let base = "links_to|heading|{\"heading\":\"A#1\"}|see #2";
        let key = link_key(base, 3);
        assert_eq!(key.len(), LINK_KEY_HEX + 2, "{key}");
        assert_ne!(key, link_key(base, 1));
        assert_ne!(key, link_key("links_to|wikilink|null|", 3));
        // What an older version wrote for the same link.
        assert_eq!(current_key(&format!("{base}#3")), key);
        // Today's keys, a tag's empty key and a workflow's own keys are taken as they are.
        for k in [key.as_str(), "", "mine", "a#b", "x|y#z"] {
            assert_eq!(current_key(k), k);
        }
    }
}
