//! Obsidian-style link resolution against the `note_names` table.
//!
//! A target resolves, in order: as a path (relative to the linking note's folder, then to the
//! root, then as a path suffix), by file name (case-insensitive, `.md` optional), by alias.
//! When several files share a name the one closest to the root wins, then the first by path.
//! What does not resolve becomes a placeholder named by the lowercased target.

use rusqlite::{OptionalExtension, Transaction};

/// How a file can be named in links: `(name, how)` pairs, lowercased.
pub fn names_for(rel_path: &str, is_markdown: bool) -> Vec<(String, &'static str)> {
    let lower = rel_path.to_lowercase();
    let file = lower.rsplit('/').next().unwrap_or(&lower).to_owned();
    let (stem, path) = if is_markdown {
        (strip_md(&file).to_owned(), strip_md(&lower).to_owned())
    } else {
        (file.clone(), lower.clone())
    };
    vec![(stem, "stem"), (path, "path")]
}

pub fn depth(rel_path: &str) -> i64 {
    rel_path.matches('/').count() as i64
}

fn strip_md(s: &str) -> &str {
    s.strip_suffix(".md").unwrap_or(s)
}

/// A link target, normalized for lookup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Lowercased, `/`-separated, without a leading `/` or `./` and without `.md`.
    pub name: String,
    /// Path candidates to try first (relative to the linking note, then to the root).
    pub paths: Vec<String>,
}

impl Target {
    /// `None` for an empty target (a link into the same note).
    pub fn new(raw: &str, from_rel: &str) -> Option<Target> {
        let t = raw.trim().replace('\\', "/").to_lowercase();
        let t = t.trim_start_matches("./").trim_start_matches('/');
        let t = strip_md(t).trim_end_matches('/');
        if t.is_empty() {
            return None;
        }
        let mut paths = Vec::new();
        if t.contains('/') {
            let from_dir = from_rel.to_lowercase();
            let from_dir = from_dir.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
            if let Some(p) = normalize(&format!("{from_dir}/{t}")) {
                paths.push(p);
            }
            if let Some(p) = normalize(t)
                && !paths.contains(&p)
            {
                paths.push(p);
            }
        }
        Some(Target {
            name: t.to_owned(),
            paths,
        })
    }

    /// The names whose appearance or disappearance can change what this target resolves to.
    pub fn watch_names(&self) -> Vec<String> {
        let mut v = self.paths.clone();
        let last = self
            .name
            .rsplit('/')
            .next()
            .unwrap_or(&self.name)
            .to_owned();
        if !v.contains(&self.name) {
            v.push(self.name.clone());
        }
        if !v.contains(&last) {
            v.push(last);
        }
        v
    }
}

/// Resolves `..` and `.` segments; `None` when the path climbs out of the root.
fn normalize(p: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for seg in p.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    (!out.is_empty()).then(|| out.join("/"))
}

/// The row of the node a target resolves to in `root_id`, if any.
pub fn resolve(
    tx: &Transaction<'_>,
    root_id: i64,
    target: &Target,
) -> rusqlite::Result<Option<i64>> {
    let mut by = tx.prepare_cached(
        "SELECT node FROM note_names WHERE root_id = ?1 AND name = ?2 AND how = ?3
         ORDER BY depth, rel_path LIMIT 1",
    )?;
    for p in &target.paths {
        if let Some(id) = by
            .query_row(rusqlite::params![root_id, p, "path"], |r| r.get(0))
            .optional()?
        {
            return Ok(Some(id));
        }
    }
    if target.name.contains('/') {
        // A partial path (`folder/Note`) matches any file whose path ends with it.
        let last = target.name.rsplit('/').next().unwrap_or(&target.name);
        let suffix = format!("/{}", target.name);
        let mut stmt = tx.prepare_cached(
            "SELECT n.node, p.name FROM note_names n
               JOIN note_names p ON p.node = n.node AND p.how = 'path'
             WHERE n.root_id = ?1 AND n.name = ?2 AND n.how = 'stem'
             ORDER BY n.depth, n.rel_path",
        )?;
        let rows = stmt.query_map(rusqlite::params![root_id, last], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
        })?;
        for row in rows {
            let (rid, path) = row?;
            if path.ends_with(&suffix) || path == target.name {
                return Ok(Some(rid));
            }
        }
        return Ok(None);
    }
    for how in ["stem", "alias"] {
        if let Some(id) = by
            .query_row(rusqlite::params![root_id, target.name, how], |r| r.get(0))
            .optional()?
        {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_target(raw: &str, from: &str, name: &str, paths: &[&str]) {
        let t = Target::new(raw, from).unwrap();
        assert_eq!(t.name, name, "{raw}");
        assert_eq!(t.paths, paths, "{raw}");
    }

    #[test]
    fn targets() {
        check_target("Note", "a/b.md", "note", &[]);
        check_target("Note.md", "a/b.md", "note", &[]);
        check_target(
            "folder/Note",
            "a/b.md",
            "folder/note",
            &["a/folder/note", "folder/note"],
        );
        check_target("../x/Y.md", "a/b.md", "../x/y", &["x/y"]);
        check_target("/top/Z", "a/b.md", "top/z", &["a/top/z", "top/z"]);
        check_target("diagram.png", "a.md", "diagram.png", &[]);
        assert_eq!(Target::new("  ", "a.md"), None);
    }

    #[test]
    fn names() {
        assert_eq!(
            names_for("Folder/My Note.md", true),
            [
                ("my note".to_owned(), "stem"),
                ("folder/my note".to_owned(), "path")
            ]
        );
        assert_eq!(
            names_for("assets/Diagram.PNG", false),
            [
                ("diagram.png".to_owned(), "stem"),
                ("assets/diagram.png".to_owned(), "path")
            ]
        );
        assert_eq!(depth("a/b/c.md"), 2);
    }
}
