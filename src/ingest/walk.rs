//! Discovery: the files under a root, as the ingest sees them.
//!
//! Traversal is the `ignore` crate's walker (symlink-loop detection included) with its own
//! filters off; [`Rules`] decides what is ignored so that the walker and the watcher agree.
//! Symlinks are followed only when their target stays inside the root. Knows nothing of the
//! store.

use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::rules::Rules;

/// One thing found under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    File(DiskFile),
    /// A file the rules ignore (directories that are ignored are not descended into and not
    /// reported).
    Ignored {
        rel: String,
    },
    /// A symlink whose target leaves the root.
    OutsideRoot {
        rel: String,
    },
    /// Unreadable, a broken symlink, a symlink loop.
    Error {
        rel: String,
        message: String,
    },
}

impl Found {
    /// The path relative to the root, whatever was found there.
    pub fn rel(&self) -> &str {
        match self {
            Found::File(d) => &d.rel,
            Found::Ignored { rel } | Found::OutsideRoot { rel } | Found::Error { rel, .. } => rel,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFile {
    pub rel: String,
    pub abs: PathBuf,
    pub size: u64,
    pub mtime_ns: i64,
}

/// `abs` relative to `root`, '/'-separated; `None` when outside the root or not UTF-8.
pub fn rel_path(root: &Path, abs: &Path) -> Option<String> {
    let rel = abs.strip_prefix(root).ok()?;
    let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
    let joined = parts?.join("/");
    (!joined.is_empty()).then_some(joined)
}

/// Size and modification time of a regular file (following symlinks).
pub fn stat(abs: &Path) -> std::io::Result<(u64, i64)> {
    let meta = std::fs::metadata(abs)?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    Ok((meta.len(), mtime_ns))
}

/// Everything under `start` (the root or a folder inside it), in a stable order.
pub fn walk(root: &Path, canonical_root: &Path, rules: &Rules, start: &Path) -> Vec<Found> {
    let mut out = Vec::new();
    let walker = ignore::WalkBuilder::new(start)
        .standard_filters(false)
        .follow_links(true)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry({
            // `filter_entry` needs 'static; the clone shares the parsed ignore files.
            let rules = rules.clone();
            move |e| {
                let is_dir = e.file_type().is_some_and(|t| t.is_dir());
                !is_dir || e.depth() == 0 || !rules.is_ignored(e.path(), true)
            }
        })
        .build();
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(err) => {
                let rel = error_path(&err)
                    .and_then(|p| rel_path(root, &p))
                    .unwrap_or_default();
                if !rel.is_empty() && !rules.is_ignored(&root.join(&rel), false) {
                    out.push(Found::Error {
                        rel,
                        message: clean_error(&err),
                    });
                }
                continue;
            }
        };
        let path = entry.path();
        if entry.file_type().is_some_and(|t| t.is_dir()) {
            continue;
        }
        let Some(rel) = rel_path(root, path) else {
            continue;
        };
        // Hidden files (dotfiles, editor swap files such as `.note.md.swp`) are passed over
        // silently, like hidden folders: recording them would only add noise.
        if path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        {
            continue;
        }
        if rules.is_ignored(path, false) {
            out.push(Found::Ignored { rel });
            continue;
        }
        if entry.path_is_symlink() {
            match std::fs::canonicalize(path) {
                Ok(target) if target.starts_with(canonical_root) => {}
                Ok(_) => {
                    out.push(Found::OutsideRoot { rel });
                    continue;
                }
                Err(e) => {
                    out.push(Found::Error {
                        rel,
                        message: format!("broken symlink: {e}"),
                    });
                    continue;
                }
            }
        }
        match stat(path) {
            Ok((size, mtime_ns)) => out.push(Found::File(DiskFile {
                rel,
                abs: path.to_owned(),
                size,
                mtime_ns,
            })),
            Err(e) => out.push(Found::Error {
                rel,
                message: format!("cannot stat: {e}"),
            }),
        }
    }
    out
}

fn error_path(err: &ignore::Error) -> Option<PathBuf> {
    match err {
        ignore::Error::WithPath { path, .. } => Some(path.clone()),
        ignore::Error::WithDepth { err, .. } => error_path(err),
        ignore::Error::Loop { child, .. } => Some(child.clone()),
        _ => None,
    }
}

fn clean_error(err: &ignore::Error) -> String {
    match err {
        ignore::Error::WithPath { err, .. } | ignore::Error::WithDepth { err, .. } => {
            clean_error(err)
        }
        ignore::Error::Loop { ancestor, .. } => {
            format!("symlink loop back to {}", ancestor.display())
        }
        ignore::Error::Io(e) if e.kind() == std::io::ErrorKind::NotFound => {
            "broken symlink: target does not exist".into()
        }
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn walks_with_rules_and_symlink_policy() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("vault");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(root.join(".obsidian")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(root.join("a.md"), "a").unwrap();
        std::fs::write(root.join("sub/b.md"), "bb").unwrap();
        std::fs::write(root.join("a.md.swp"), "x").unwrap();
        std::fs::write(root.join(".obsidian/app.json"), "{}").unwrap();
        std::fs::write(outside.join("secret.md"), "s").unwrap();
        symlink(root.join("sub/b.md"), root.join("link-in.md")).unwrap();
        symlink(outside.join("secret.md"), root.join("link-out.md")).unwrap();
        symlink(root.join("missing.md"), root.join("broken.md")).unwrap();
        symlink(&root, root.join("sub/loop")).unwrap();
        let canonical = std::fs::canonicalize(&root).unwrap();
        let rules = Rules::new(&root);
        let found = walk(&root, &canonical, &rules, &root);
        let summary: Vec<String> = found
            .iter()
            .map(|f| match f {
                Found::File(d) => format!("file {} {}", d.rel, d.size),
                Found::Ignored { rel } => format!("ignored {rel}"),
                Found::OutsideRoot { rel } => format!("outside {rel}"),
                Found::Error { rel, .. } => format!("error {rel}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "file a.md 1",
                "ignored a.md.swp",
                "error broken.md",
                "file link-in.md 2",
                "outside link-out.md",
                "file sub/b.md 2",
                "error sub/loop",
            ],
        );
    }

    #[test]
    fn rel_paths() {
        assert_eq!(
            rel_path(Path::new("/r"), Path::new("/r/a/b.md")).as_deref(),
            Some("a/b.md")
        );
        assert_eq!(rel_path(Path::new("/r"), Path::new("/x/b.md")), None);
        assert_eq!(rel_path(Path::new("/r"), Path::new("/r")), None);
    }
}
