//! Which paths under a root are ignored: built-in defaults plus `.gitignore` and `.brainignore`
//! files at any depth, with gitignore semantics (the `ignore` crate's matcher).
//!
//! The walker and the watcher ask the same question here, so a file ignored on a full walk is
//! also ignored when it changes while the daemon runs. Knows nothing of the store.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// Per-directory ignore files, read in this order (later lines win, as in git).
pub const IGNORE_FILES: [&str; 2] = [".gitignore", ".brainignore"];

/// Directories never descended into: version control, editor state, trash, dependencies.
const IGNORED_DIRS: [&str; 5] = ["node_modules", "__pycache__", "_site", ".venv", "venv"];

/// An ignore file's patterns are compiled into one matcher per folder and kept for the root's
/// life, and a pattern costs kilobytes compiled: only the first lines of a file this large are
/// read (real ignore files are a few hundred lines), and at most so many patterns per file.
const MAX_IGNORE_FILE_BYTES: u64 = 64 * 1024;
const MAX_IGNORE_PATTERNS: usize = 2_000;

/// Cloning is cheap and clones share the cache of parsed ignore files.
#[derive(Clone)]
pub struct Rules {
    root: PathBuf,
    // std Mutex: held only for a map lookup, never across I/O on another thread's behalf.
    cache: Arc<Mutex<HashMap<PathBuf, Arc<Gitignore>>>>,
}

impl Rules {
    pub fn new(root: &Path) -> Rules {
        Rules {
            root: root.to_owned(),
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Whether `abs` (a path under the root) is ignored, by the defaults or an ignore file in
    /// the root or any directory between the root and the path.
    pub fn is_ignored(&self, abs: &Path, is_dir: bool) -> bool {
        let Ok(rel) = abs.strip_prefix(&self.root) else {
            return true;
        };
        if rel.as_os_str().is_empty() {
            return false;
        }
        let comps: Vec<_> = rel.components().collect();
        for (i, c) in comps.iter().enumerate() {
            let name = c.as_os_str().to_string_lossy();
            let last = i + 1 == comps.len();
            if default_ignored(&name, !last || is_dir) {
                return true;
            }
        }
        // Each directory's ignore files speak about paths below it; deeper files override
        // shallower ones, and an ignored directory hides everything under it.
        let mut verdict = false;
        let mut dir = self.root.clone();
        for k in 0..comps.len() {
            let m = self.matcher(&dir);
            let mut sub = dir.clone();
            for c in &comps[k..comps.len() - 1] {
                sub.push(c.as_os_str());
                if m.matched(&sub, true).is_ignore() {
                    return true;
                }
            }
            match m.matched(abs, is_dir) {
                Match::Ignore(_) => verdict = true,
                Match::Whitelist(_) => verdict = false,
                Match::None => {}
            }
            if k + 1 < comps.len() {
                dir.push(comps[k].as_os_str());
            }
        }
        verdict
    }

    /// Forgets the cached matcher of `dir`, after one of its ignore files changed.
    pub fn invalidate(&self, dir: &Path) {
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(dir);
    }

    fn matcher(&self, dir: &Path) -> Arc<Gitignore> {
        if let Some(m) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(dir)
        {
            return m.clone();
        }
        let mut b = GitignoreBuilder::new(dir);
        for name in IGNORE_FILES {
            let p = dir.join(name);
            for line in ignore_lines(&p) {
                // A malformed line is skipped; the rest of the file still applies.
                let _ = b.add_line(Some(p.clone()), &line);
            }
        }
        let m = Arc::new(b.build().unwrap_or_else(|_| Gitignore::empty()));
        self.cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_owned(), m.clone());
        m
    }
}

/// The pattern lines of an ignore file: a regular file (not a symlink, which could point
/// anywhere), its first [`MAX_IGNORE_FILE_BYTES`], at most [`MAX_IGNORE_PATTERNS`] patterns.
fn ignore_lines(p: &Path) -> Vec<String> {
    if !std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()) {
        return Vec::new();
    }
    let Ok((file, _)) = super::walk::open_regular(p) else {
        return Vec::new();
    };
    // Only the first bytes of a larger file are read.
    let mut bytes = Vec::new();
    let _ = std::io::Read::read_to_end(
        &mut std::io::Read::take(file, MAX_IGNORE_FILE_BYTES),
        &mut bytes,
    );
    let text = String::from_utf8_lossy(&bytes);
    let mut lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    // A cut inside the last line would make a different pattern of it.
    if bytes.len() as u64 == MAX_IGNORE_FILE_BYTES && !bytes.ends_with(b"\n") {
        lines.pop();
    }
    if lines.len() > MAX_IGNORE_PATTERNS || bytes.len() as u64 == MAX_IGNORE_FILE_BYTES {
        tracing::warn!(
            file = %p.display(),
            max_patterns = MAX_IGNORE_PATTERNS,
            max_bytes = MAX_IGNORE_FILE_BYTES,
            "ignore file too large; only its first patterns apply"
        );
    }
    lines.truncate(MAX_IGNORE_PATTERNS);
    lines
}

/// Built-in rules: hidden files and folders (`.git`, `.obsidian`, `.trash`, dotfiles such as
/// `.gitignore` itself), dependency folders, and editor swap, lock, temp and backup files.
pub fn default_ignored(name: &str, is_dir: bool) -> bool {
    if name.starts_with('.') {
        return true;
    }
    if is_dir {
        return IGNORED_DIRS.contains(&name);
    }
    name.ends_with('~')
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913" // vim's write-permission probe
        || name == "Thumbs.db"
        || [".swp", ".swo", ".swx", ".tmp", ".temp", ".bak", ".crdownload", ".part"]
            .iter()
            .any(|ext| name.ends_with(ext))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_default(name: &str, is_dir: bool, expected: bool) {
        assert_eq!(
            default_ignored(name, is_dir),
            expected,
            "{name} dir={is_dir}"
        );
    }

    #[test]
    fn defaults() {
        check_default(".git", true, true);
        check_default(".obsidian", true, true);
        check_default(".trash", true, true);
        check_default("node_modules", true, true);
        check_default("notes", true, false);
        check_default("note.md", false, false);
        check_default(".note.md.swp", false, true);
        check_default("note.md~", false, true);
        check_default("#note.md#", false, true);
        check_default(".#note.md", false, true);
        check_default("4913", false, true);
        check_default("draft.tmp", false, true);
        check_default("node_modules", false, false);
    }

    #[test]
    fn an_ignore_file_is_read_only_up_to_its_caps() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let mut text = String::from("# comment\n\nkeep-out.md\n");
        for i in 0..MAX_IGNORE_PATTERNS + 10 {
            text.push_str(&format!("pattern{i}.md\n"));
        }
        std::fs::write(root.join(".gitignore"), &text).unwrap();
        let lines = ignore_lines(&root.join(".gitignore"));
        assert_eq!(lines.len(), MAX_IGNORE_PATTERNS);
        assert_eq!(lines[0], "keep-out.md");
        let rules = Rules::new(root);
        assert!(rules.is_ignored(&root.join("keep-out.md"), false));
        assert!(rules.is_ignored(&root.join("pattern5.md"), false));
        let past = format!("pattern{}.md", MAX_IGNORE_PATTERNS + 5);
        assert!(!rules.is_ignored(&root.join(past), false));
        // Bytes past the cap are never read, and a line cut by it is dropped.
        let big = "x".repeat(MAX_IGNORE_FILE_BYTES as usize * 4);
        std::fs::write(root.join(".brainignore"), format!("a.md\n{big}\n")).unwrap();
        assert_eq!(ignore_lines(&root.join(".brainignore")), ["a.md"]);
        // A symlinked ignore file could point anywhere: it is not read.
        std::os::unix::fs::symlink(root.join(".gitignore"), root.join("linked")).unwrap();
        assert!(ignore_lines(&root.join("linked")).is_empty());
    }

    #[test]
    fn ignore_files_at_any_depth() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::create_dir_all(root.join("private")).unwrap();
        std::fs::write(root.join(".gitignore"), "*.log\nprivate/\n").unwrap();
        std::fs::write(root.join("a/.brainignore"), "secret.md\n!keep.log\n").unwrap();
        let rules = Rules::new(root);
        let check = |rel: &str, is_dir: bool, expected: bool| {
            assert_eq!(rules.is_ignored(&root.join(rel), is_dir), expected, "{rel}");
        };
        check("note.md", false, false);
        check("x.log", false, true);
        check("a/b/x.log", false, true);
        check("a/keep.log", false, false);
        check("a/secret.md", false, true);
        check("a/b/secret.md", false, true);
        check("secret.md", false, false);
        check("private", true, true);
        check("private/note.md", false, true);
        check(".obsidian/app.json", false, true);
        check("a/.hidden/n.md", false, true);
    }
}
