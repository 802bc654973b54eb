//! Settings: defaults, then the TOML config file, then environment variables and flags.
//!
//! Flags and environment variables arrive together through clap (`env = ...`), so this module
//! only merges them over the file. No config file is needed for the defaults to work.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::identity::{self, UserId};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no data directory: set --data-dir or BRAIN_DATA_DIR (no home directory found)")]
    NoDataDir,
    #[error("invalid setting {name}: {message}")]
    Invalid { name: &'static str, message: String },
}

/// The config file, as written by a person. Every field is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    data_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
    #[serde(default)]
    user: UserSection,
    #[serde(default)]
    identity: IdentitySection,
    #[serde(default)]
    daemon: DaemonSection,
    #[serde(default)]
    search: SearchSection,
    #[serde(default)]
    ingest: IngestSection,
    #[serde(default)]
    store: StoreSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IngestSection {
    max_file_bytes: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreSection {
    retired_text_days: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchSection {
    /// A model name under `<data_dir>/models/` (see `brain models add`); overrides the one
    /// chosen with `brain models use`.
    model: Option<String>,
    rrf_k: Option<f32>,
    weight_bm25: Option<f32>,
    weight_dense: Option<f32>,
    weight_graph: Option<f32>,
    boost_title: Option<f32>,
    boost_heading: Option<f32>,
    boost_body: Option<f32>,
    boost_tags: Option<f32>,
    boost_path: Option<f32>,
    max_query_bytes: Option<usize>,
    max_query_terms: Option<usize>,
    max_prefix_terms: Option<usize>,
    max_prefix_expansions: Option<u32>,
    max_filter_values: Option<usize>,
    query_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSection {
    email: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IdentitySection {
    users_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DaemonSection {
    max_frame_bytes: Option<usize>,
    max_connections: Option<usize>,
    idle_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    max_blocking_requests: Option<usize>,
}

/// What flags and environment variables set (clap fills both).
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub socket: Option<PathBuf>,
    pub user_email: Option<String>,
    pub users_file: Option<PathBuf>,
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub socket: PathBuf,
    pub user_email: String,
    pub user_id: UserId,
    /// A users file whose ids the automatic identity migration honours.
    pub users_file: Option<PathBuf>,
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    /// How long a connection may sit without sending a request before it is closed.
    pub idle_timeout: Duration,
    /// How long a request may run before its client is answered `timeout`.
    pub request_timeout: Duration,
    /// How many requests may hold a blocking thread at once.
    pub max_blocking_requests: usize,
    /// The config file that was read, if any.
    pub config_file: Option<PathBuf>,
    /// The embedding model named in the config file, if any.
    pub search_model: Option<String>,
    pub search_tuning: crate::search::Tuning,
    /// What one search may cost (`[search] max_*`, `query_timeout_ms`).
    pub search_limits: crate::search::Limits,
    /// Files larger than this are recorded as skipped (`too_large`) and never read past it.
    pub max_file_bytes: u64,
    /// How long the text of a retired chunk is kept (`[store] retired_text_days`).
    pub retired_text_retention: Duration,
}

pub const DEFAULT_MAX_FRAME_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;
/// Long enough for a person between two commands of a script, short enough that forgotten
/// connections do not pile up against `max_connections`.
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 300;
/// Shorter than the CLI's default wait (30 s), so that a slow request is reported by the
/// daemon, which can say which request it was, rather than by a client that gave up.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 20;
/// Requests park on SQLite, the index and files; twelve keep two cores busy through such waits,
/// and the cap keeps the blocking pool from being used up by requests that never return.
pub const DEFAULT_MAX_BLOCKING_REQUESTS: usize = 12;
/// A month of history to look back on (what a note said before last week's edit), after
/// which retired chunk text goes; the facts and their citations stay.
pub const DEFAULT_RETIRED_TEXT_DAYS: u64 = 30;
/// Over a century: a larger number could not be subtracted from the clock.
pub const MAX_RETIRED_TEXT_DAYS: u64 = 36_500;
/// Linux's `sun_path` holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

impl Config {
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("brain.db")
    }

    pub fn lock_path(&self) -> PathBuf {
        self.data_dir.join("brain.lock")
    }
}

/// The default config file: `$XDG_CONFIG_HOME/brain/config.toml`.
pub fn default_config_path() -> Option<PathBuf> {
    dirs::config_dir().map(|d| d.join("brain").join("config.toml"))
}

/// The default data dir: `$XDG_DATA_HOME/brain`, else `~/.local/share/brain`.
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|d| d.join("brain"))
}

/// The default socket: `$XDG_RUNTIME_DIR/brain.sock`, else `brain.sock` in the data dir.
pub fn default_socket(data_dir: &Path) -> PathBuf {
    match dirs::runtime_dir() {
        Some(run) => run.join("brain.sock"),
        None => data_dir.join("brain.sock"),
    }
}

pub fn resolve(o: &Overrides) -> Result<Config, ConfigError> {
    let (file, config_file) = load_file(o.config.as_deref())?;
    let data_dir = o
        .data_dir
        .clone()
        .or(file.data_dir)
        .or_else(default_data_dir)
        .ok_or(ConfigError::NoDataDir)?;
    let data_dir = absolute(&data_dir, "data_dir")?;
    let socket = o
        .socket
        .clone()
        .or(file.socket)
        .unwrap_or_else(|| default_socket(&data_dir));
    let socket = absolute(&socket, "socket")?;
    if socket.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(ConfigError::Invalid {
            name: "socket",
            message: format!(
                "{} is longer than {MAX_SOCKET_PATH} bytes, which Unix sockets cannot use",
                socket.display()
            ),
        });
    }
    let raw_email = o
        .user_email
        .clone()
        .or(file.user.email)
        .unwrap_or_else(identity::default_email);
    let user_email = identity::normalize_email(&raw_email);
    if !identity::is_email(&user_email) {
        return Err(ConfigError::Invalid {
            name: "user.email",
            message: format!("{raw_email:?} is not an e-mail address"),
        });
    }
    let users_file = o.users_file.clone().or(file.identity.users_file);
    let max_frame_bytes = file
        .daemon
        .max_frame_bytes
        .unwrap_or(DEFAULT_MAX_FRAME_BYTES);
    if max_frame_bytes < 1024 {
        return Err(ConfigError::Invalid {
            name: "daemon.max_frame_bytes",
            message: "must be at least 1024".into(),
        });
    }
    let d = &file.daemon;
    let idle_timeout_secs = d.idle_timeout_secs.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS);
    let request_timeout_secs = d
        .request_timeout_secs
        .unwrap_or(DEFAULT_REQUEST_TIMEOUT_SECS);
    for (name, v) in [
        ("daemon.idle_timeout_secs", idle_timeout_secs),
        ("daemon.request_timeout_secs", request_timeout_secs),
    ] {
        if v == 0 {
            return Err(ConfigError::Invalid {
                name,
                message: "must be at least 1".into(),
            });
        }
    }
    let max_blocking_requests = d
        .max_blocking_requests
        .unwrap_or(DEFAULT_MAX_BLOCKING_REQUESTS);
    if max_blocking_requests == 0 {
        return Err(ConfigError::Invalid {
            name: "daemon.max_blocking_requests",
            message: "must be at least 1".into(),
        });
    }
    let mut tuning = crate::search::Tuning::default();
    let s = &file.search;
    for (name, v, slot) in [
        ("search.rrf_k", s.rrf_k, &mut tuning.rrf_k),
        ("search.weight_bm25", s.weight_bm25, &mut tuning.weight_bm25),
        (
            "search.weight_dense",
            s.weight_dense,
            &mut tuning.weight_dense,
        ),
        (
            "search.weight_graph",
            s.weight_graph,
            &mut tuning.weight_graph,
        ),
        (
            "search.boost_title",
            s.boost_title,
            &mut tuning.boosts.title,
        ),
        (
            "search.boost_heading",
            s.boost_heading,
            &mut tuning.boosts.heading,
        ),
        ("search.boost_body", s.boost_body, &mut tuning.boosts.body),
        ("search.boost_tags", s.boost_tags, &mut tuning.boosts.tags),
        ("search.boost_path", s.boost_path, &mut tuning.boosts.path),
    ] {
        if let Some(v) = v {
            if !v.is_finite() || v < 0.0 {
                return Err(ConfigError::Invalid {
                    name,
                    message: format!("must be a non-negative number, not {v}"),
                });
            }
            *slot = v;
        }
    }
    let search_limits = search_limits(&file.search)?;
    let retired_text_days = file
        .store
        .retired_text_days
        .unwrap_or(DEFAULT_RETIRED_TEXT_DAYS);
    if retired_text_days > MAX_RETIRED_TEXT_DAYS {
        return Err(ConfigError::Invalid {
            name: "store.retired_text_days",
            message: format!("must be at most {MAX_RETIRED_TEXT_DAYS}"),
        });
    }
    let max_connections = file
        .daemon
        .max_connections
        .unwrap_or(DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(ConfigError::Invalid {
            name: "daemon.max_connections",
            message: "must be at least 1".into(),
        });
    }
    Ok(Config {
        retired_text_retention: Duration::from_secs(retired_text_days * 24 * 60 * 60),
        search_model: file.search.model.clone(),
        search_tuning: tuning,
        search_limits,
        user_id: UserId::for_email(&user_email),
        user_email,
        data_dir,
        socket,
        users_file,
        max_frame_bytes,
        max_file_bytes: file
            .ingest
            .max_file_bytes
            .unwrap_or(crate::ingest::DEFAULT_MAX_FILE_BYTES),
        max_connections,
        idle_timeout: Duration::from_secs(idle_timeout_secs),
        request_timeout: Duration::from_secs(request_timeout_secs),
        max_blocking_requests,
        config_file,
    })
}

/// The `[search]` budgets over their defaults. Each must be at least 1: a zero would refuse
/// every query.
fn search_limits(s: &SearchSection) -> Result<crate::search::Limits, ConfigError> {
    let mut l = crate::search::Limits::default();
    let at_least_one = |name: &'static str, v: Option<u64>| match v {
        Some(0) => Err(ConfigError::Invalid {
            name,
            message: "must be at least 1".into(),
        }),
        _ => Ok(()),
    };
    let as_u64 = |v: Option<usize>| v.map(|v| v as u64);
    at_least_one("search.max_query_bytes", as_u64(s.max_query_bytes))?;
    at_least_one("search.max_query_terms", as_u64(s.max_query_terms))?;
    at_least_one("search.max_prefix_terms", as_u64(s.max_prefix_terms))?;
    at_least_one(
        "search.max_prefix_expansions",
        s.max_prefix_expansions.map(u64::from),
    )?;
    at_least_one("search.max_filter_values", as_u64(s.max_filter_values))?;
    at_least_one("search.query_timeout_ms", s.query_timeout_ms)?;
    l.max_query_bytes = s.max_query_bytes.unwrap_or(l.max_query_bytes);
    l.max_query_terms = s.max_query_terms.unwrap_or(l.max_query_terms);
    l.max_prefix_terms = s.max_prefix_terms.unwrap_or(l.max_prefix_terms);
    l.max_prefix_expansions = s.max_prefix_expansions.unwrap_or(l.max_prefix_expansions);
    l.max_filter_values = s.max_filter_values.unwrap_or(l.max_filter_values);
    if let Some(ms) = s.query_timeout_ms {
        l.timeout = std::time::Duration::from_millis(ms);
    }
    Ok(l)
}

/// Socket path only, for clients: they need no data dir when `BRAIN_SOCKET` is set.
pub fn resolve_socket(o: &Overrides) -> Result<PathBuf, ConfigError> {
    if let Some(s) = &o.socket {
        return absolute(s, "socket");
    }
    resolve(o).map(|c| c.socket)
}

fn load_file(explicit: Option<&Path>) -> Result<(FileConfig, Option<PathBuf>), ConfigError> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => match default_config_path() {
            Some(p) if p.exists() => p,
            _ => return Ok((FileConfig::default(), None)),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
        path: path.clone(),
        source,
    })?;
    let file = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.clone(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    Ok((file, Some(path)))
}

fn absolute(p: &Path, name: &'static str) -> Result<PathBuf, ConfigError> {
    std::path::absolute(p).map_err(|e| ConfigError::Invalid {
        name,
        message: format!("{}: {e}", p.display()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_file(toml: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml).unwrap();
        resolve(&Overrides {
            config: Some(path),
            ..Overrides::default()
        })
    }

    #[test]
    fn file_settings_apply() {
        let c = with_file(
            "data_dir = \"/tmp/b\"\nsocket = \"/tmp/b/s.sock\"\n[user]\nemail = \" Me@X.org \"\n",
        )
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/b"));
        assert_eq!(c.socket, PathBuf::from("/tmp/b/s.sock"));
        assert_eq!(c.user_email, "me@x.org");
        assert_eq!(c.user_id, UserId::for_email("me@x.org"));
        assert_eq!(c.store_path(), PathBuf::from("/tmp/b/brain.db"));
        let c = with_file("[search]\nmax_query_terms = 9\nquery_timeout_ms = 250\n").unwrap();
        assert_eq!(c.search_limits.max_query_terms, 9);
        assert_eq!(c.search_limits.timeout.as_millis(), 250);
        assert_eq!(
            c.search_limits.max_prefix_terms,
            crate::search::Limits::default().max_prefix_terms
        );
    }

    #[test]
    fn the_file_size_cap_is_a_setting() {
        let c = with_file("data_dir = \"/tmp/b\"\n").unwrap();
        assert_eq!(c.max_file_bytes, crate::ingest::DEFAULT_MAX_FILE_BYTES);
        let c = with_file("data_dir = \"/tmp/b\"\n[ingest]\nmax_file_bytes = 4096\n").unwrap();
        assert_eq!(c.max_file_bytes, 4096);
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "data_dir = \"/tmp/file\"\n").unwrap();
        let c = resolve(&Overrides {
            config: Some(path),
            data_dir: Some("/tmp/flag".into()),
            socket: Some("/tmp/flag.sock".into()),
            ..Overrides::default()
        })
        .unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/tmp/flag"));
    }

    #[test]
    fn bad_files_are_clear_errors() {
        let e = with_file("data_dir = [").unwrap_err();
        assert!(e.to_string().starts_with("invalid config file"), "{e}");
        let e = with_file("colour = 1").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = with_file("[user]\nemail = \"nobody\"").unwrap_err();
        assert!(e.to_string().contains("user.email"), "{e}");
        let e = with_file("[search]\nmax_query_terms = 0").unwrap_err();
        assert!(e.to_string().contains("search.max_query_terms"), "{e}");
        let e = with_file("[daemon]\nmax_connections = 0").unwrap_err();
        assert!(e.to_string().contains("daemon.max_connections"), "{e}");
        let e = resolve(&Overrides {
            config: Some("/nonexistent/brain.toml".into()),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/brain.toml"), "{e}");
    }

    #[test]
    fn daemon_limits() {
        let c = with_file("").unwrap();
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.request_timeout, Duration::from_secs(20));
        assert_eq!(c.max_blocking_requests, 12);
        assert_eq!(c.retired_text_retention, Duration::from_secs(30 * 86_400));
        let c = with_file("[store]\nretired_text_days = 0\n").unwrap();
        assert_eq!(c.retired_text_retention, Duration::ZERO);
        let e = with_file("[store]\nretired_text_days = 36501\n").unwrap_err();
        assert!(e.to_string().contains("store.retired_text_days"), "{e}");
        let c = with_file(
            "[daemon]\nidle_timeout_secs = 2\nrequest_timeout_secs = 3\nmax_blocking_requests = 4\n",
        )
        .unwrap();
        assert_eq!(c.idle_timeout, Duration::from_secs(2));
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(c.max_blocking_requests, 4);
        for zero in [
            "idle_timeout_secs",
            "request_timeout_secs",
            "max_blocking_requests",
        ] {
            let e = with_file(&format!("[daemon]\n{zero} = 0\n")).unwrap_err();
            assert!(e.to_string().contains(zero), "{e}");
        }
    }

    #[test]
    fn long_socket_paths_are_refused() {
        let long = format!("/tmp/{}/s.sock", "x".repeat(120));
        let e = resolve(&Overrides {
            data_dir: Some("/tmp/b".into()),
            socket: Some(long.into()),
            config: Some("/dev/null".into()),
            ..Overrides::default()
        })
        .unwrap_err();
        assert!(e.to_string().contains("socket"), "{e}");
    }
}
