//! Files a run may touch: paths relative to its workspace, matched against declared globs.
//!
//! Owns the path rules: no absolute paths, no `..`, no escape through a symlink (checked on
//! the resolved path at run time, since a link can appear after validation). Writes are
//! temp-then-rename in the target's folder, so a reader sees the old bytes or the new, never half.

use std::io::Write;
use std::path::{Component, Path, PathBuf};

/// A relative, `/`-separated path with no `.`, `..` or empty parts, or why not.
pub fn normalize(p: &str) -> Result<String, String> {
    if p.is_empty() {
        return Err("empty path".into());
    }
    let path = Path::new(p);
    if path.is_absolute() {
        return Err(format!(
            "{p:?} is absolute; paths are relative to the run's workspace"
        ));
    }
    let mut parts = Vec::new();
    for c in path.components() {
        match c {
            Component::Normal(s) => parts.push(
                s.to_str()
                    .ok_or_else(|| format!("{p:?} is not UTF-8"))?
                    .to_owned(),
            ),
            Component::CurDir => {}
            Component::ParentDir => return Err(format!("{p:?} contains `..`")),
            Component::RootDir | Component::Prefix(_) => return Err(format!("{p:?} is absolute")),
        }
    }
    if parts.is_empty() {
        return Err(format!("{p:?} names no file"));
    }
    Ok(parts.join("/"))
}

/// A declared glob must itself be relative and free of `..`.
pub fn check_glob(g: &str) -> Result<(), String> {
    if g.starts_with('/') {
        return Err(format!(
            "glob {g:?} is absolute; globs are relative to the workspace"
        ));
    }
    if g.split('/').any(|part| part == "..") {
        return Err(format!("glob {g:?} contains `..`"));
    }
    globset::Glob::new(g)
        .map(|_| ())
        .map_err(|e| format!("glob {g:?} is invalid: {e}"))
}

/// Whether `rel` matches one of `globs` (`*` stays within a folder, `**` crosses them).
pub fn matches_any<S: AsRef<str>>(globs: &[S], rel: &str) -> bool {
    globs.iter().any(|g| {
        globset::GlobBuilder::new(g.as_ref())
            .literal_separator(true)
            .build()
            .is_ok_and(|g| g.compile_matcher().is_match(rel))
    })
}

/// Resolves `rel` inside `workspace`, refusing symlink escapes: the deepest existing ancestor
/// is canonicalized and must stay inside the canonical workspace.
pub fn resolve(workspace: &Path, rel: &str) -> Result<PathBuf, String> {
    let rel = normalize(rel)?;
    let root = std::fs::canonicalize(workspace)
        .map_err(|e| format!("workspace {}: {e}", workspace.display()))?;
    let full = root.join(&rel);
    let mut existing = full.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        rest.push(existing.file_name().map(PathBuf::from).unwrap_or_default());
        existing = match existing.parent() {
            Some(p) => p,
            None => break,
        };
    }
    let canon = std::fs::canonicalize(existing).map_err(|e| format!("{rel}: {e}"))?;
    if !canon.starts_with(&root) {
        return Err(format!("{rel} escapes the workspace through a symlink"));
    }
    let mut out = canon;
    for part in rest.into_iter().rev() {
        out.push(part);
    }
    Ok(out)
}

pub fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Writes `bytes` to `path` atomically: a temp file in the same folder, fsynced, then renamed.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", uuid::Uuid::new_v4()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizing() {
        assert_eq!(normalize("a/./b.md"), Ok("a/b.md".into()));
        assert!(normalize("../x").is_err());
        assert!(normalize("a/../../x").is_err());
        assert!(normalize("/etc/passwd").is_err());
        assert!(normalize("").is_err());
        assert!(normalize(".").is_err());
    }

    #[test]
    fn globs() {
        assert!(matches_any(&["digests/*"], "digests/w1.md"));
        assert!(!matches_any(&["digests/*"], "digests/a/w1.md"));
        assert!(matches_any(&["notes/**"], "notes/a/b.md"));
        assert!(!matches_any(&["notes/**"], "other/b.md"));
        assert!(check_glob("/abs/*").is_err());
        assert!(check_glob("a/../*").is_err());
    }

    #[test]
    fn symlink_escapes_are_refused() {
        let ws = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), ws.path().join("link")).unwrap();
        assert!(resolve(ws.path(), "link/x.md").is_err());
        assert!(resolve(ws.path(), "new/dir/x.md").is_ok());
        write_atomic(&resolve(ws.path(), "d/x.md").unwrap(), b"hi").unwrap();
        assert_eq!(std::fs::read(ws.path().join("d/x.md")).unwrap(), b"hi");
    }
}
