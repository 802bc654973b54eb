//! Writes clients make through the façade: graph facts (through the same path as workflow
//! steps, `workflow::steps::apply`), Markdown notes inside watched folders (written, then
//! ingested like any other file), and backups of the store.
//!
//! Architecture Invariant: every client write names the acting user and the client in its
//! provenance; a note file is only ever written inside a watched root, never through a link.

use std::path::{Component, Path, PathBuf};

use super::Brain;
use crate::error::{Error, Kind};
use crate::graph::NodeRef;
use crate::workflow::files;
use crate::workflow::steps::{self, GraphWrite, Origin, Prov, StepError};

/// Longest client label (`claude-desktop`): it is stored with every fact the client writes.
pub const MAX_CLIENT_LABEL: usize = 64;

/// Longest node kind, key or edge type: they are identifiers, stored and indexed on every row,
/// and a key is usually a slug or a name.
pub const MAX_NAME_BYTES: usize = 512;

/// Tags one upsert may attach: each is a node and an edge written in the caller's transaction.
pub const MAX_TAGS: usize = 64;

/// How a note write treats an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoteMode {
    Create,
    Replace,
    Append,
}

/// What a note write did.
#[derive(Debug, Clone)]
pub struct NoteWritten {
    pub node_id: String,
    pub path: PathBuf,
    pub created: bool,
    pub bytes: u64,
    pub content_hash: String,
}

/// A retired fact.
#[derive(Debug, Clone)]
pub struct Retired {
    pub valid_to: String,
    pub edges_retired: u64,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(Kind::InvalidParams, msg)
}

fn check_label(label: Option<&str>) -> Result<(), Error> {
    let Some(l) = label else { return Ok(()) };
    let ok = !l.is_empty()
        && l.len() <= MAX_CLIENT_LABEL
        && l.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "client must be 1 to {MAX_CLIENT_LABEL} letters, digits, '-', '_' or '.', not {l:?}"
        )))
    }
}

/// A kind or edge type: a lowercase identifier (`person`, `works_on`).
fn check_identifier(what: &str, v: &str) -> Result<(), Error> {
    let ok = v.len() <= MAX_NAME_BYTES
        && v.starts_with(|c: char| c.is_ascii_lowercase())
        && v.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{what} must be a lowercase identifier (a-z, 0-9, '_', '-'), not {v:?}"
        )))
    }
}

fn check_write(w: &GraphWrite) -> Result<(), Error> {
    match w {
        GraphWrite::Upsert {
            kind, key, tags, ..
        } => {
            check_identifier("kind", kind)?;
            if steps::DERIVED_NODE_KINDS.contains(&kind.as_str()) {
                return Err(invalid(format!(
                    "kind {kind:?} is made from files; write a note with note.write instead"
                )));
            }
            if key.trim().is_empty() || key.len() > MAX_NAME_BYTES {
                return Err(invalid(format!(
                    "key must be 1 to {MAX_NAME_BYTES} bytes, not blank"
                )));
            }
            if tags.len() > MAX_TAGS {
                return Err(invalid(format!("at most {MAX_TAGS} tags per upsert")));
            }
            if let Some(t) = tags
                .iter()
                .find(|t| t.trim_matches(['#', '/']).is_empty() || t.len() > MAX_NAME_BYTES)
            {
                return Err(invalid(format!("tag {t:?} is empty or too long")));
            }
            Ok(())
        }
        GraphWrite::Link {
            from,
            to,
            edge_type,
            ..
        } => {
            check_identifier("type", edge_type)?;
            if steps::DERIVED_EDGE_TYPES.contains(&edge_type.as_str()) {
                return Err(invalid(format!(
                    "type {edge_type:?} is made from files; link in a note instead"
                )));
            }
            if from.is_empty() || to.is_empty() {
                return Err(invalid("from and to must be node ids"));
            }
            Ok(())
        }
    }
}

fn step_error(e: StepError) -> Error {
    let kind = match e.kind.as_str() {
        "node_not_found" => Kind::NodeNotFound,
        "store_error" => Kind::StoreError,
        _ => Kind::InvalidParams,
    };
    Error::new(kind, e.message)
}

impl Brain {
    /// Applies a node upsert or a link as the daemon's user and `client`; returns the fact's id
    /// and whether it is new. Search sees it when this returns.
    pub fn graph_write(
        &self,
        w: &GraphWrite,
        client: Option<&str>,
    ) -> Result<(String, bool), Error> {
        check_label(client)?;
        check_write(w)?;
        let prov = Prov {
            actor: self.user_id.as_str(),
            origin: Origin::Client { label: client },
        };
        let (result, _events) = self
            .store
            .write(|tx| steps::apply(tx, w, &prov))
            .map_err(step_error)?;
        self.index_now();
        // `apply` answers `{id, created}` for both writes (the step result workflows see).
        match (result["id"].as_str(), result["created"].as_bool()) {
            (Some(id), Some(created)) => Ok((id.to_owned(), created)),
            _ => Err(Error::new(
                Kind::Internal,
                format!("graph write answered {result}"),
            )),
        }
    }

    /// Retires a node (with its edges) or an edge a client or workflow wrote.
    pub fn retire(&self, id: &str, node: bool, client: Option<&str>) -> Result<Retired, Error> {
        check_label(client)?;
        let now = crate::clock::now();
        let edges_retired = self.store.write(|tx| steps::retire(tx, id, node, &now))?;
        self.index_now();
        Ok(Retired {
            valid_to: now,
            edges_retired,
        })
    }

    /// Brings search up to date with a write that just committed, so the caller's next
    /// search sees it; a failure leaves the background indexer to catch up.
    fn index_now(&self) {
        if let Err(e) = self.search.bring_up_to_date() {
            tracing::warn!(error = %e, "search index catch-up after a write failed");
        }
    }

    /// Writes a Markdown note at `path` (absolute, inside a watched root) and ingests it.
    pub fn note_write(
        &self,
        path: &Path,
        content: &str,
        mode: NoteMode,
        client: Option<&str>,
    ) -> Result<NoteWritten, Error> {
        check_label(client)?;
        let (full, root) = self.note_target(path)?;
        let cap = self.max_file_bytes;
        let existing = match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(invalid(format!("{} is a symbolic link", path.display())));
            }
            Ok(m) if !m.is_file() => {
                return Err(invalid(format!("{} is not a regular file", path.display())));
            }
            Ok(_) => Some(
                crate::ingest::walk::read_regular(&full, cap)
                    .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::new(Kind::Io, format!("{}: {e}", path.display()))),
        };
        let bytes = match (mode, existing) {
            (NoteMode::Create, Some(_)) => {
                return Err(Error::new(
                    Kind::AlreadyExists,
                    format!("{} already exists (mode create)", path.display()),
                ));
            }
            (NoteMode::Append, Some(old)) => {
                let mut b = old;
                if !b.is_empty() && !b.ends_with(b"\n") {
                    b.push(b'\n');
                }
                b.extend_from_slice(content.as_bytes());
                b
            }
            (_, _) => content.as_bytes().to_vec(),
        };
        let created = !full.exists();
        if bytes.len() as u64 > cap {
            return Err(invalid(format!(
                "the note would be {} bytes, over the {cap}-byte file cap (max_file_bytes)",
                bytes.len()
            )));
        }
        files::write_atomic(&full, &bytes)
            .map_err(|e| Error::new(Kind::Io, format!("cannot write {}: {e}", full.display())))?;
        tracing::debug!(root = %root.display(), client, "note written");
        self.ingest_path(&full, None)?;
        let node = self.node_get(&NodeRef::Path(full.clone()))?;
        Ok(NoteWritten {
            node_id: node.id,
            path: full,
            created,
            bytes: bytes.len() as u64,
            content_hash: files::hash(&bytes),
        })
    }

    /// The real path a note write may use, and its watched root: absolute, no `..`, a
    /// Markdown name, inside a watched root once links are resolved.
    fn note_target(&self, path: &Path) -> Result<(PathBuf, PathBuf), Error> {
        if !path.is_absolute() {
            return Err(invalid(format!(
                "path must be absolute: {}",
                path.display()
            )));
        }
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(invalid(format!(
                "path must not contain `..`: {}",
                path.display()
            )));
        }
        let md = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("md") || e.eq_ignore_ascii_case("markdown"));
        if !md {
            return Err(invalid(format!(
                "a note's name ends in .md: {}",
                path.display()
            )));
        }
        for root in self.ingestor.roots(false)? {
            if !root.watched {
                continue;
            }
            let Ok(rel) = path.strip_prefix(&root.path) else {
                continue;
            };
            let rel = rel.to_str().ok_or_else(|| invalid("path is not UTF-8"))?;
            // Checks the deepest existing folder's real path: a link inside the root that
            // points out of it is refused.
            let full = files::resolve(&root.path, rel)
                .map_err(|m| invalid(format!("cannot write {}: {m}", path.display())))?;
            return Ok((full, root.path));
        }
        Err(invalid(format!(
            "{} is outside every watched folder (brain watch list)",
            path.display()
        )))
    }

    /// Writes a consistent copy of the store to `dest` (which must not exist) while the
    /// daemon runs: `VACUUM INTO` on a reader connection, so writers are not held up.
    pub fn backup(&self, dest: &Path) -> Result<u64, Error> {
        if !dest.is_absolute() {
            return Err(invalid(format!(
                "path must be absolute: {}",
                dest.display()
            )));
        }
        match std::fs::symlink_metadata(dest) {
            Ok(_) => {
                return Err(Error::new(
                    Kind::AlreadyExists,
                    format!("{} already exists", dest.display()),
                ));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::new(Kind::Io, format!("{}: {e}", dest.display()))),
        }
        dest.parent()
            .filter(|p| p.is_dir())
            .ok_or_else(|| invalid(format!("the folder of {} does not exist", dest.display())))?;
        let target = dest
            .to_str()
            .ok_or_else(|| invalid("path is not UTF-8"))?
            .to_owned();
        self.store
            .read(|c| c.execute("VACUUM INTO ?1", [&target]).map(drop))?;
        let bytes = std::fs::metadata(dest)
            .map(|m| m.len())
            .map_err(|e| Error::new(Kind::Io, format!("{}: {e}", dest.display())))?;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upsert(kind: &str, key: &str, tags: &[&str]) -> GraphWrite {
        GraphWrite::Upsert {
            kind: kind.into(),
            key: key.into(),
            title: None,
            props: None,
            tags: tags.iter().map(|t| t.to_string()).collect(),
            content: None,
        }
    }

    fn check(w: GraphWrite, ok: bool) {
        assert_eq!(check_write(&w).is_ok(), ok, "{w:?}");
    }

    #[test]
    fn writes_are_checked_before_the_store_sees_them() {
        check(upsert("person", "ada", &["people/x"]), true);
        check(upsert("project-x_2", "k", &[]), true);
        check(upsert("note", "k", &[]), false);
        check(upsert("chunk", "k", &[]), false);
        check(upsert("Person", "k", &[]), false);
        check(upsert("a b", "k", &[]), false);
        check(upsert("", "k", &[]), false);
        check(upsert("person", " ", &[]), false);
        check(
            upsert("person", &"k".repeat(MAX_NAME_BYTES + 1), &[]),
            false,
        );
        check(upsert("person", "k", &["#/"]), false);
        check(upsert("person", "k", &["t"; MAX_TAGS + 1]), false);
        let link = |ty: &str| GraphWrite::Link {
            from: "a".into(),
            to: "b".into(),
            edge_type: ty.into(),
            props: None,
        };
        check(link("works_on"), true);
        check(link("links_to"), false);
        check(link("tagged"), false);
        check(link("Works On"), false);
    }

    #[test]
    fn client_labels() {
        for (l, ok) in [
            (None, true),
            (Some("claude-desktop"), true),
            (Some("my.script_2"), true),
            (Some(""), false),
            (Some("a b"), false),
            (Some("x/y"), false),
            (Some(&*"x".repeat(MAX_CLIENT_LABEL + 1)), false),
        ] {
            assert_eq!(check_label(l).is_ok(), ok, "{l:?}");
        }
    }
}
