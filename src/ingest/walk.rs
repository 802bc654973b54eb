//! Discovery: the files under a root, as the ingest sees them, and reading them safely.
//!
//! Traversal is the `ignore` crate's walker (symlink-loop detection included) with its own
//! filters off; [`Rules`] decides what is ignored so that the walker and the watcher agree.
//! Symlinks, to files and to folders alike, are followed only when their target stays inside
//! the root. Only regular files are ever opened for their content ([`read_regular`]): a FIFO
//! would block the reader forever and a device never ends. Knows nothing of the store.

use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
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
    /// A symlink (to a file or a folder) whose target leaves the root.
    OutsideRoot {
        rel: String,
    },
    /// A symlink to a folder inside the root: not followed, since the folder's files are
    /// indexed at their real paths (following it would index each of them twice).
    LinkedFolder {
        rel: String,
    },
    /// A FIFO, socket or device: never opened.
    NotRegular {
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
            Found::Ignored { rel }
            | Found::OutsideRoot { rel }
            | Found::LinkedFolder { rel }
            | Found::NotRegular { rel }
            | Found::Error { rel, .. } => rel,
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

impl DiskFile {
    /// The file a source row names (`rel` under `root`) as it is on disk now.
    pub fn at(root: &Path, rel: String) -> std::io::Result<DiskFile> {
        let abs = abs_path(root, &rel);
        let (size, mtime_ns, _) = stat(&abs)?;
        Ok(DiskFile {
            rel,
            abs,
            size,
            mtime_ns,
        })
    }
}

/// `abs` relative to `root`, '/'-separated; `None` when outside the root. A name that is not
/// UTF-8 is written with each byte that is not part of valid UTF-8 as `\xNN` (and `\` as
/// `\\`), so that the stored path is text, names the same file at every sync, and
/// [`abs_path`] finds the file again.
pub fn rel_path(root: &Path, abs: &Path) -> Option<String> {
    let rel = abs.strip_prefix(root).ok()?;
    let mut parts: Vec<String> = Vec::new();
    for c in rel.components() {
        match c {
            Component::Normal(name) => parts.push(escape_name(name.as_bytes())),
            _ => return None,
        }
    }
    let joined = parts.join("/");
    (!joined.is_empty()).then_some(joined)
}

/// A file name as text: itself when UTF-8, else escaped as [`rel_path`] says.
fn escape_name(name: &[u8]) -> String {
    if let Ok(s) = std::str::from_utf8(name) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(name.len() + 8);
    for piece in name.utf8_chunks() {
        for ch in piece.valid().chars() {
            if ch == '\\' {
                out.push_str("\\\\");
            } else {
                out.push(ch);
            }
        }
        for b in piece.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}

/// The bytes an escaped name stands for; `None` when it holds no escape.
fn unescape_name(name: &str) -> Option<Vec<u8>> {
    if !name.contains('\\') {
        return None;
    }
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'\\')) => {
                out.push(b'\\');
                i += 2;
            }
            (b'\\', Some(b'x')) => {
                let hex = name.get(i + 2..i + 4)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    Some(out)
}

/// The file a relative path stored by [`rel_path`] names under `root`. A name that exists as
/// written is taken as written (a UTF-8 name may hold a backslash); else its escapes are undone.
pub fn abs_path(root: &Path, rel: &str) -> PathBuf {
    let literal = root.join(rel);
    if !rel.contains('\\') || std::fs::symlink_metadata(&literal).is_ok() {
        return literal;
    }
    let mut out = root.to_owned();
    for part in rel.split('/') {
        match unescape_name(part) {
            Some(bytes) => out.push(std::ffi::OsStr::from_bytes(&bytes)),
            None => out.push(part),
        }
    }
    out
}

/// Why a file's content was not read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A FIFO, socket or device: reading it would block or never end.
    #[error("not a regular file")]
    NotRegular,
    /// Over the cap, whether at the check or by growing while being read.
    #[error("larger than {cap} bytes")]
    TooLarge { cap: u64 },
    #[error("cannot read: {0}")]
    Io(#[from] std::io::Error),
}

/// The content of a regular file, at most `cap` bytes. Opened without blocking (a FIFO put in
/// a file's place after it was listed opens at once instead of waiting for a writer) and
/// checked on the open descriptor before a byte is read; a file that grows past `cap` while
/// being read is refused after `cap + 1` bytes, never read to its end.
pub fn read_regular(abs: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let (file, meta) = open_regular(abs)?;
    if meta.len() > cap {
        return Err(ReadError::TooLarge { cap });
    }
    // The size at the check bounds the first allocation; `take` bounds the read itself.
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge { cap });
    }
    Ok(bytes)
}

/// `abs` opened for reading if it is a regular file, with its metadata: opened without
/// blocking (a FIFO put in its place opens at once), then checked on the open descriptor.
pub fn open_regular(abs: &Path) -> Result<(std::fs::File, std::fs::Metadata), ReadError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(abs)?;
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        return Err(ReadError::NotRegular);
    }
    Ok((file, meta))
}

/// Kernel file systems whose files are views of the running system, not documents: reading
/// them can block, never end, or change with every read. Magic numbers from `linux/magic.h`.
/// (`/dev` is devtmpfs, which shares tmpfs's number and cannot be told apart; its files are
/// devices, which [`read_regular`] and the walker refuse anyway.)
const PSEUDO_FILE_SYSTEMS: &[(i64, &str)] = &[
    (0x9fa0, "proc"),
    (0x6265_6572, "sysfs"),
    (0x1cd1, "devpts"),
    (0x6462_6720, "debugfs"),
    (0x7472_6163, "tracefs"),
    (0x7363_6673, "securityfs"),
    (0x0027_e0eb, "cgroup"),
    (0x6367_7270, "cgroup2"),
    (0xcafe_4a11, "bpf"),
    (0x6265_6570, "configfs"),
    (0x6165_676c, "pstore"),
    (0xde5e_81e4, "efivarfs"),
    (0x6573_5543, "fusectl"),
    (0x4249_4e4d, "binfmt_misc"),
    (0x1980_0202, "mqueue"),
];

/// The name of the pseudo file system `path` lies on, if it does.
pub fn pseudo_file_system(path: &Path) -> Option<&'static str> {
    let fs = rustix::fs::statfs(path).ok()?;
    // `f_type`'s integer type differs between targets.
    #[allow(clippy::unnecessary_cast)]
    let magic = fs.f_type as i64;
    PSEUDO_FILE_SYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

/// Size and modification time of a file (following symlinks), and whether it is a regular
/// file.
pub fn stat(abs: &Path) -> std::io::Result<(u64, i64, bool)> {
    let meta = std::fs::metadata(abs)?;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    Ok((meta.len(), mtime_ns, meta.file_type().is_file()))
}

/// Whether a root's folder is there as itself: roots are stored canonical, so one replaced by
/// a symlink (to another root, say) or reached through one now reads as missing, not as a
/// second path to the same files.
pub fn root_present(root: &Path) -> bool {
    root.is_dir() && std::fs::canonicalize(root).is_ok_and(|c| c == root)
}

/// Everything under `start` (the root or a folder inside it), in a stable order.
pub fn walk(root: &Path, canonical_root: &Path, rules: &Rules, start: &Path) -> Vec<Found> {
    let mut out = Vec::new();
    // The walker does not say whether the path it starts from is a symlink.
    if start != root
        && let Some(rel) = rel_path(root, start)
        && std::fs::symlink_metadata(start).is_ok_and(|m| m.file_type().is_symlink())
        && let Ok(target) = std::fs::canonicalize(start)
        && (!target.starts_with(canonical_root) || target.is_dir())
    {
        let hidden = start
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && !rules.is_ignored(start, target.is_dir()) {
            out.push(if target.starts_with(canonical_root) {
                Found::LinkedFolder { rel }
            } else {
                Found::OutsideRoot { rel }
            });
        }
        return out;
    }
    // Symlinked folders (and whether they leave the root), noticed by the entry filter (which
    // decides what is descended into, and can only answer yes or no) and reported in walk
    // order. None is followed: one inside the root would index its files twice.
    let outside: Arc<Mutex<Vec<(PathBuf, bool)>>> = Arc::default();
    let walker = ignore::WalkBuilder::new(start)
        .standard_filters(false)
        .follow_links(true)
        .sort_by_file_name(|a, b| a.cmp(b))
        .filter_entry({
            // `filter_entry` needs 'static; the clone shares the parsed ignore files.
            let rules = rules.clone();
            let outside = outside.clone();
            let canonical_root = canonical_root.to_owned();
            move |e| {
                let is_dir = e.file_type().is_some_and(|t| t.is_dir());
                if !is_dir {
                    return true;
                }
                if e.depth() > 0 && e.path_is_symlink() {
                    let leaves = std::fs::canonicalize(e.path())
                        .map_or(true, |target| !target.starts_with(&canonical_root));
                    outside
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push((e.path().to_owned(), leaves));
                    return false;
                }
                e.depth() == 0 || !rules.is_ignored(e.path(), true)
            }
        })
        .build();
    let take_outside = |out: &mut Vec<Found>| {
        let mut dirs = outside.lock().unwrap_or_else(|p| p.into_inner());
        for (dir, leaves) in dirs.drain(..) {
            if let Some(rel) = rel_path(root, &dir)
                && !rules.is_ignored(&dir, true)
            {
                out.push(if leaves {
                    Found::OutsideRoot { rel }
                } else {
                    Found::LinkedFolder { rel }
                });
            }
        }
    };
    for entry in walker {
        take_outside(&mut out);
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
            Ok((size, mtime_ns, true)) => out.push(Found::File(DiskFile {
                rel,
                abs: path.to_owned(),
                size,
                mtime_ns,
            })),
            Ok((_, _, false)) => out.push(Found::NotRegular { rel }),
            Err(e) => out.push(Found::Error {
                rel,
                message: format!("cannot stat: {e}"),
            }),
        }
    }
    take_outside(&mut out);
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
        symlink(&outside, root.join("outside-dir")).unwrap();
        symlink(root.join("sub"), root.join("inside-dir")).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(root.join("pipe.md"))
            .status()
            .unwrap();
        assert!(fifo.success());
        let canonical = std::fs::canonicalize(&root).unwrap();
        let rules = Rules::new(&root);
        let found = walk(&root, &canonical, &rules, &root);
        let summary: Vec<String> = found
            .iter()
            .map(|f| match f {
                Found::File(d) => format!("file {} {}", d.rel, d.size),
                Found::Ignored { rel } => format!("ignored {rel}"),
                Found::OutsideRoot { rel } => format!("outside {rel}"),
                Found::LinkedFolder { rel } => format!("linked folder {rel}"),
                Found::NotRegular { rel } => format!("not regular {rel}"),
                Found::Error { rel, .. } => format!("error {rel}"),
            })
            .collect();
        assert_eq!(
            summary,
            [
                "file a.md 1",
                "ignored a.md.swp",
                "error broken.md",
                // Not followed: sub/b.md is indexed where it is.
                "linked folder inside-dir",
                "file link-in.md 2",
                "outside link-out.md",
                "outside outside-dir",
                "not regular pipe.md",
                "file sub/b.md 2",
                "error sub/loop",
            ],
        );
        // The link alone, as a watcher event names it.
        let alone = walk(&root, &canonical, &rules, &root.join("outside-dir"));
        assert_eq!(
            alone,
            [Found::OutsideRoot {
                rel: "outside-dir".into()
            }]
        );
        let alone = walk(&root, &canonical, &rules, &root.join("inside-dir"));
        assert_eq!(
            alone,
            [Found::LinkedFolder {
                rel: "inside-dir".into()
            }]
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

    fn check_name(bytes: &[u8], stored: &str) {
        let dir = tempfile::tempdir().unwrap();
        let abs = dir
            .path()
            .join("sub")
            .join(std::ffi::OsStr::from_bytes(bytes));
        std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
        std::fs::write(&abs, "x").unwrap();
        let rel = rel_path(dir.path(), &abs).unwrap();
        assert_eq!(rel, format!("sub/{stored}"), "{bytes:?}");
        assert_eq!(abs_path(dir.path(), &rel), abs, "{bytes:?}");
    }

    #[test]
    fn names_that_are_not_utf8_are_escaped_and_found_again() {
        check_name(b"plain.md", "plain.md");
        check_name(b"caf\xe9.md", "caf\\xe9.md");
        check_name(b"caf\xe9 literal.md", "caf\\xe9 literal.md");
        check_name(b"lit\\xe9.md", r"lit\xe9.md");
        check_name(b"\xff\xfe", "\\xff\\xfe");
        check_name(b"a\\b\x80.md", "a\\\\b\\x80.md");
        check_name(b"\xc3\xa9\x80", r"é\x80");
    }

    #[test]
    fn only_regular_files_are_read_and_never_past_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("n.md");
        std::fs::write(&file, "12345").unwrap();
        assert_eq!(read_regular(&file, 5).unwrap(), b"12345");
        assert!(matches!(
            read_regular(&file, 4),
            Err(ReadError::TooLarge { cap: 4 })
        ));
        let fifo = dir.path().join("pipe.md");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        // Opened without blocking and refused before any read.
        assert!(matches!(read_regular(&fifo, 5), Err(ReadError::NotRegular)));
        assert!(matches!(
            read_regular(Path::new("/dev/zero"), 5),
            Err(ReadError::NotRegular)
        ));
        assert!(matches!(
            read_regular(dir.path(), 5),
            Err(ReadError::NotRegular)
        ));
    }

    #[test]
    fn pseudo_file_systems_are_named() {
        assert_eq!(pseudo_file_system(Path::new("/proc/self")), Some("proc"));
        assert_eq!(pseudo_file_system(Path::new("/sys/kernel")), Some("sysfs"));
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(pseudo_file_system(dir.path()), None);
    }
}
