//! `brain doctor`: checks what a user cannot see, and says what to do about each problem.
//!
//! Reads the store through its own read-only SQLite connection (whether or not a daemon runs:
//! the store's WAL lets a reader in beside the writer), looks at the data dir, socket, roots and
//! disk itself, and asks a running daemon for what only it knows (how far the text index and
//! the vectors are). Architecture Invariant: doctor never writes anything, and never repairs;
//! each finding names the command or step that does.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::config::{self, Config, Overrides};
use crate::rpc::client::{Client, ClientError};
use crate::rpc::protocol::StatusWire;
use crate::search::models;

/// Lines of `PRAGMA quick_check` and rows of `PRAGMA foreign_key_check` read at most: enough
/// to say what is wrong; a badly damaged store could list millions.
const MAX_STORE_FINDINGS: usize = 20;
/// How long doctor waits for a daemon: one that does not answer this fast is itself a finding.
const DAEMON_TIMEOUT: Duration = Duration::from_secs(5);
/// Below this much free space, writes fail soon: an ingest batch, a WAL checkpoint and an
/// index merge each need some tens of MiB.
const MIN_FREE_BYTES: u64 = 256 * 1024 * 1024;
/// Share of the inotify watch limit past which other programs (editors, IDEs, sync clients,
/// which watch too) may leave brain short.
const WATCH_WARN_SHARE: f64 = 0.8;
/// Where Linux keeps the per-user inotify watch limit.
const MAX_USER_WATCHES: &str = "/proc/sys/fs/inotify/max_user_watches";
/// Overrides [`MAX_USER_WATCHES`]: the limit cannot be lowered without root, so tests set it.
const MAX_USER_WATCHES_ENV: &str = "BRAIN_INOTIFY_MAX_USER_WATCHES";
/// Folders the daemon never watches (the walker's built-in ignores).
const UNWATCHED_NAMES: &[&str] = &[".git", ".obsidian", "node_modules"];

/// How one check came out. A `Warning` is something that will right itself or may soon stop
/// working; a `Problem` needs the user. `Skipped` checks needed a daemon that is not running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Warning,
    Problem,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable name: `daemon`, `store`, `index`, `vectors`, `model`, `permissions`, `roots`,
    /// `overlapping_roots`, `inotify`, `disk`.
    pub check: &'static str,
    pub outcome: Outcome,
    pub detail: String,
    /// What to do, when something is to be done.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn ok(check: &'static str, detail: impl Into<String>) -> Check {
        Check {
            check,
            outcome: Outcome::Ok,
            detail: detail.into(),
            fix: None,
        }
    }

    fn bad(
        check: &'static str,
        outcome: Outcome,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            check,
            outcome,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub healthy: bool,
    pub checks: Vec<Check>,
}

/// Runs every check and prints the report; exit 0 only when nothing is a warning or problem.
pub fn run(overrides: &Overrides, as_json: bool) -> ExitCode {
    let config = match config::resolve(overrides) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("brain: {e}");
            return ExitCode::FAILURE;
        }
    };
    let report = check_all(&config);
    if as_json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("brain: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        for c in &report.checks {
            let mark = match c.outcome {
                Outcome::Ok => "ok     ",
                Outcome::Warning => "warning",
                Outcome::Problem => "PROBLEM",
                Outcome::Skipped => "skipped",
            };
            println!("{mark}  {:<17} {}", c.check, c.detail);
            if let Some(f) = &c.fix {
                println!("         {:<17} → {f}", "");
            }
        }
        println!(
            "{}",
            if report.healthy {
                "all is well"
            } else {
                "brain needs attention (see above)"
            }
        );
    }
    if report.healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

pub fn check_all(config: &Config) -> Report {
    let mut checks = Vec::new();
    let status = daemon(config, &mut checks);
    let store = open_store(&config.store_path());
    checks.push(store_integrity(&config.store_path(), &store));
    checks.push(index(config, status.as_ref()));
    checks.push(vectors(status.as_ref()));
    checks.push(model(config, &store));
    checks.push(permissions(config));
    let roots = match &store {
        Ok(conn) => read_roots(conn).map_err(|e| e.to_string()),
        Err(e) => Err(e.clone()),
    };
    checks.extend(roots_checks(&roots));
    checks.push(disk(&config.data_dir, &config.store_path()));
    let healthy = checks
        .iter()
        .all(|c| matches!(c.outcome, Outcome::Ok | Outcome::Skipped));
    Report { healthy, checks }
}

fn daemon(config: &Config, checks: &mut Vec<Check>) -> Option<StatusWire> {
    let answer = Client::connect_timeout(&config.socket, Some(DAEMON_TIMEOUT))
        .and_then(|mut c| c.call("daemon.status", serde_json::json!({})));
    match answer.map(serde_json::from_value::<StatusWire>) {
        Ok(Ok(s)) => {
            checks.push(Check::ok(
                "daemon",
                format!("running (pid {}) at {}", s.pid, config.socket.display()),
            ));
            Some(s)
        }
        Ok(Err(e)) => {
            checks.push(Check::bad(
                "daemon",
                Outcome::Problem,
                format!("unexpected status answer: {e}"),
                "the daemon is another version than this command; restart it",
            ));
            None
        }
        Err(ClientError::NoDaemon { .. }) => {
            checks.push(Check::bad(
                "daemon",
                Outcome::Warning,
                format!(
                    "not running at {}; index and vectors not checked",
                    config.socket.display()
                ),
                "start it: `brain daemon`, or `brain service install`",
            ));
            None
        }
        Err(e) => {
            checks.push(Check::bad(
                "daemon",
                Outcome::Problem,
                e.to_string(),
                "see `journalctl --user -u brain` or the daemon's log",
            ));
            None
        }
    }
}

/// A read-only connection, never creating the store.
fn open_store(path: &Path) -> Result<Connection, String> {
    if !path.exists() {
        return Err(format!("no store at {}", path.display()));
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    // Waits for the writer's checkpoint rather than failing at once.
    conn.busy_timeout(DAEMON_TIMEOUT)
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

fn store_integrity(path: &Path, store: &Result<Connection, String>) -> Check {
    const NAME: &str = "store";
    let conn = match store {
        Ok(c) => c,
        Err(e) if !path.exists() => {
            return Check::bad(
                NAME,
                Outcome::Warning,
                e.clone(),
                "the daemon creates it when it first starts",
            );
        }
        Err(e) => {
            return Check::bad(
                NAME,
                Outcome::Problem,
                e.clone(),
                "restore the store from a backup, or move it aside and let the daemon build a new one",
            );
        }
    };
    let findings = (|| -> rusqlite::Result<Vec<String>> {
        let mut out = Vec::new();
        let mut stmt = conn.prepare(&format!("PRAGMA quick_check({MAX_STORE_FINDINGS})"))?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let line: String = r.get(0)?;
            if line != "ok" {
                out.push(line);
            }
        }
        let mut stmt = conn.prepare("PRAGMA foreign_key_check")?;
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            if out.len() >= MAX_STORE_FINDINGS {
                break;
            }
            let table: String = r.get(0)?;
            let rowid: Option<i64> = r.get(1)?;
            let parent: String = r.get(2)?;
            out.push(format!(
                "{table} row {} refers to a missing {parent} row",
                rowid.map_or("?".into(), |r| r.to_string())
            ));
        }
        Ok(out)
    })();
    match findings {
        Ok(f) if f.is_empty() => Check::ok(
            NAME,
            format!("{}: integrity and foreign keys ok", path.display()),
        ),
        Ok(f) => Check::bad(
            NAME,
            Outcome::Problem,
            format!("{}: {}", path.display(), f.join("; ")),
            "stop the daemon, back the store up, then restore it from a backup or run `sqlite3 brain.db .recover`",
        ),
        Err(e) => Check::bad(
            NAME,
            Outcome::Problem,
            format!("{}: {e}", path.display()),
            "stop the daemon, back the store up, then restore it from a backup or run `sqlite3 brain.db .recover`",
        ),
    }
}

fn index(config: &Config, status: Option<&StatusWire>) -> Check {
    const NAME: &str = "index";
    let dir = crate::search::index_dir(&config.data_dir);
    let Some(s) = status else {
        return if dir.join("meta.json").is_file() {
            Check {
                check: NAME,
                outcome: Outcome::Skipped,
                detail: format!("{} present; its lag needs the daemon", dir.display()),
                fix: None,
            }
        } else {
            Check::bad(
                NAME,
                Outcome::Warning,
                format!("no text index at {}", dir.display()),
                "start the daemon: it rebuilds the index from the store",
            )
        };
    };
    let lag = (s.search.outbox_head - s.search.index_seq).max(0);
    let st = &s.search.index_state;
    if let Some(err) = st.strip_prefix("error: ") {
        return Check::bad(
            NAME,
            Outcome::Problem,
            format!("the index cannot catch up: {err}"),
            "it is retried on its own; if it persists, `brain reindex`",
        );
    }
    if st != "ready" || lag > 0 {
        return Check::bad(
            NAME,
            Outcome::Warning,
            format!("{st}, {lag} store changes not yet indexed"),
            "wait: the daemon is catching up (`brain status`)",
        );
    }
    if s.search.indexed_chunks != s.search.total_chunks {
        return Check::bad(
            NAME,
            Outcome::Problem,
            format!(
                "the index holds {} chunks, the store {}",
                s.search.indexed_chunks, s.search.total_chunks
            ),
            "`brain reindex`",
        );
    }
    Check::ok(
        NAME,
        format!(
            "in step with the store ({} chunks)",
            s.search.indexed_chunks
        ),
    )
}

fn vectors(status: Option<&StatusWire>) -> Check {
    const NAME: &str = "vectors";
    let Some(s) = status else {
        return Check {
            check: NAME,
            outcome: Outcome::Skipped,
            detail: "needs the daemon".into(),
            fix: None,
        };
    };
    let (done, total) = (s.search.embedded_chunks as u64, s.search.total_chunks);
    match (&s.search.model, s.search.model_state.as_str()) {
        (None, "none") => Check::ok(NAME, "no model: search is by words only"),
        (_, "loading") => Check::bad(
            NAME,
            Outcome::Warning,
            "the model is loading",
            "wait a moment (`brain status`)",
        ),
        (_, st) if st.starts_with("error") => Check::bad(
            NAME,
            Outcome::Problem,
            format!("no vectors: model {st}"),
            "fix the model (see `model`), or `brain models use` another",
        ),
        (Some(m), _) if done < total => Check::bad(
            NAME,
            Outcome::Warning,
            format!("{done} of {total} chunks embedded for {m}"),
            "wait: embedding goes on in the background (`brain status` shows the time left)",
        ),
        (Some(m), _) => Check::ok(NAME, format!("every chunk ({total}) embedded for {m}")),
        (None, st) => Check::bad(
            NAME,
            Outcome::Warning,
            format!("model {st}"),
            "`brain status`",
        ),
    }
}

fn model(config: &Config, store: &Result<Connection, String>) -> Check {
    const NAME: &str = "model";
    let stored = store
        .as_ref()
        .ok()
        .and_then(|c| crate::store::meta_get(c, "search.model").ok().flatten());
    let Some(name) = config.search_model.clone().or(stored) else {
        return Check::ok(NAME, "none active");
    };
    let dir = models::models_dir(&config.data_dir).join(&name);
    match models::check_folder(&dir) {
        Ok(()) => Check::ok(NAME, format!("{name} at {}", dir.display())),
        Err(e) => Check::bad(
            NAME,
            Outcome::Problem,
            format!("active model {name}: {e}"),
            format!(
                "add it again (`brain models remove {name}`, then `brain models add {name} PATH`), or `brain models use` another"
            ),
        ),
    }
}

fn permissions(config: &Config) -> Check {
    const NAME: &str = "permissions";
    let own = rustix::process::getuid().as_raw();
    let mut found = Vec::new();
    let mut fixes = Vec::new();
    let mut private = |path: &Path, dir: bool| {
        let Ok(m) = std::fs::symlink_metadata(path) else {
            return;
        };
        if m.uid() != own {
            found.push(format!("{} belongs to uid {}", path.display(), m.uid()));
            fixes.push(format!("chown {own} {}", path.display()));
        } else if m.mode() & 0o077 != 0 {
            found.push(format!(
                "{} is open to other users (mode {:o})",
                path.display(),
                m.mode() & 0o777
            ));
            fixes.push(format!(
                "chmod {} {}",
                if dir { "700" } else { "600" },
                path.display()
            ));
        }
    };
    private(&config.data_dir, true);
    private(&config.store_path(), false);
    match std::fs::symlink_metadata(&config.socket) {
        Ok(m) if !m.file_type().is_socket() => {
            found.push(format!(
                "{} is not a socket; the daemon refuses to replace it",
                config.socket.display()
            ));
            fixes.push(format!("remove {}", config.socket.display()));
        }
        Ok(_) => private(&config.socket, false),
        Err(_) => {}
    }
    if let Some(dir) = config.socket.parent()
        && let Ok(m) = std::fs::metadata(dir)
        && let Some(problem) = crate::daemon::socket_dir_problem(m.uid(), m.mode(), own)
    {
        found.push(format!("socket directory {}: {problem}", dir.display()));
        fixes.push(format!(
            "chmod go-w {} or choose another socket",
            dir.display()
        ));
    }
    if found.is_empty() {
        Check::ok(
            NAME,
            format!(
                "{} and {} are private",
                config.data_dir.display(),
                config.socket.display()
            ),
        )
    } else {
        Check::bad(NAME, Outcome::Problem, found.join("; "), fixes.join("; "))
    }
}

/// Live roots: (path, watched).
fn read_roots(conn: &Connection) -> rusqlite::Result<Vec<(PathBuf, bool)>> {
    let mut stmt =
        conn.prepare("SELECT path, watched FROM roots WHERE removed_at IS NULL ORDER BY path")?;
    let rows = stmt.query_map([], |r| {
        Ok((PathBuf::from(r.get::<_, String>(0)?), r.get::<_, bool>(1)?))
    })?;
    rows.collect()
}

/// The `roots`, `overlapping_roots` and `inotify` checks.
fn roots_checks(roots: &Result<Vec<(PathBuf, bool)>, String>) -> Vec<Check> {
    let roots = match roots {
        Ok(r) => r,
        Err(e) => {
            return ["roots", "overlapping_roots", "inotify"]
                .into_iter()
                .map(|check| Check {
                    check,
                    outcome: Outcome::Skipped,
                    detail: format!("needs the store: {e}"),
                    fix: None,
                })
                .collect();
        }
    };
    let mut out = Vec::new();
    let missing: Vec<&PathBuf> = roots
        .iter()
        .filter(|(p, _)| !p.is_dir())
        .map(|(p, _)| p)
        .collect();
    out.push(if missing.is_empty() {
        Check::ok("roots", format!("{} roots, all present", roots.len()))
    } else {
        let list: Vec<String> = missing.iter().map(|p| p.display().to_string()).collect();
        Check::bad(
            "roots",
            Outcome::Problem,
            format!(
                "missing: {} (their notes are kept as last seen)",
                list.join(", ")
            ),
            format!(
                "bring them back (a drive to mount?), or `brain watch remove {}`",
                list[0]
            ),
        )
    });
    // Compared where they lead now: a folder replaced by a link can make two roots one.
    let real: Vec<(PathBuf, PathBuf)> = roots
        .iter()
        .map(|(p, _)| {
            (
                p.clone(),
                std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()),
            )
        })
        .collect();
    let mut overlaps = Vec::new();
    for (a, ra) in &real {
        for (b, rb) in &real {
            if a != b && ra.starts_with(rb) {
                overlaps.push((a, b));
            }
        }
    }
    out.push(match overlaps.first() {
        None => Check::ok("overlapping_roots", "no root inside another"),
        Some((inner, outer)) => Check::bad(
            "overlapping_roots",
            Outcome::Problem,
            overlaps
                .iter()
                .map(|(a, b)| format!("{} is inside {}", a.display(), b.display()))
                .collect::<Vec<_>>()
                .join("; "),
            format!(
                "its files are indexed twice; `brain watch remove {}` (the outer root {} keeps them)",
                inner.display(),
                outer.display()
            ),
        ),
    });
    let watched: Vec<&PathBuf> = roots.iter().filter(|(_, w)| *w).map(|(p, _)| p).collect();
    out.push(inotify(&watched));
    out
}

fn max_user_watches() -> Option<u64> {
    let text = match std::env::var(MAX_USER_WATCHES_ENV) {
        Ok(v) => v,
        Err(_) => std::fs::read_to_string(MAX_USER_WATCHES).ok()?,
    };
    text.trim().parse().ok()
}

fn inotify(watched: &[&PathBuf]) -> Check {
    const NAME: &str = "inotify";
    let Some(limit) = max_user_watches() else {
        return Check {
            check: NAME,
            outcome: Outcome::Skipped,
            detail: format!("cannot read {MAX_USER_WATCHES}"),
            fix: None,
        };
    };
    // Counting stops past the limit: what matters then is only that it is past.
    let cap = limit.saturating_add(1);
    let mut folders = 0u64;
    for root in watched {
        folders += count_folders(root, cap - folders.min(cap));
        if folders >= cap {
            break;
        }
    }
    let fix = format!(
        "raise the limit: `echo fs.inotify.max_user_watches={} | sudo tee /etc/sysctl.d/90-brain.conf && sudo sysctl --system`",
        (folders.max(limit) * 2).max(524_288)
    );
    if folders > limit {
        Check::bad(
            NAME,
            Outcome::Problem,
            format!(
                "over {limit} folders watched, more than the inotify limit ({limit}); changes in the rest are seen only on restart"
            ),
            fix,
        )
    } else if folders as f64 > limit as f64 * WATCH_WARN_SHARE {
        Check::bad(
            NAME,
            Outcome::Warning,
            format!(
                "{folders} folders watched of an inotify limit of {limit}, which other programs share"
            ),
            fix,
        )
    } else {
        Check::ok(
            NAME,
            format!("{folders} folders watched; the limit is {limit}"),
        )
    }
}

/// Folders under `root` (itself included) as the watcher would watch them, counted up to `cap`.
/// Links are not followed and unreadable folders are skipped, as the watcher does.
fn count_folders(root: &Path, cap: u64) -> u64 {
    let mut count = 0u64;
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        count += 1;
        if count >= cap {
            return count;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            let name = e.file_name();
            if is_dir && !UNWATCHED_NAMES.iter().any(|n| name == *n) {
                stack.push(e.path());
            }
        }
    }
    count
}

fn disk(data_dir: &Path, store: &Path) -> Check {
    const NAME: &str = "disk";
    // The data dir may not exist before the first start; its nearest parent then tells.
    let probe = data_dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    let st = match rustix::fs::statvfs(probe) {
        Ok(s) => s,
        Err(e) => {
            return Check {
                check: NAME,
                outcome: Outcome::Skipped,
                detail: format!("cannot read free space of {}: {e}", probe.display()),
                fix: None,
            };
        }
    };
    let free = st.f_bavail.saturating_mul(st.f_frsize);
    let store_bytes = std::fs::metadata(store).map(|m| m.len()).unwrap_or(0);
    let human = crate::cli::human_bytes;
    if free < MIN_FREE_BYTES {
        Check::bad(
            NAME,
            Outcome::Problem,
            format!(
                "{} free at {}; writes will fail below a few MiB",
                human(free),
                probe.display()
            ),
            "free some space; the daemon retries what failed once there is room",
        )
    } else if free < store_bytes {
        Check::bad(
            NAME,
            Outcome::Warning,
            format!(
                "{} free at {}, less than the store ({}): `brain compact` could not run",
                human(free),
                probe.display(),
                human(store_bytes)
            ),
            "free some space",
        )
    } else {
        Check::ok(NAME, format!("{} free at {}", human(free), probe.display()))
    }
}
