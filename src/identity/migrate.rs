//! The identity migration: e-mail addresses in identity columns become user ids.
//!
//! Owns the table of identity columns (ours and the ltcai store's), the users-file merge, the
//! backups taken before a change, and the single transaction that rewrites a store. Everything is
//! validated and planned before the first write, so bad input leaves every file as it was, and a
//! second run finds nothing to do.
//!
//! Must not: create a store that is not there, create our `users` table in a foreign store, copy
//! `api_keys` (secrets) into a store, or know anything about the daemon or JSON-RPC. The daemon
//! only calls [`needed`] and, if it chooses to, [`migrate_connection`].

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior, params};
use serde::Serialize;
use serde_json::{Map, Value};

use super::{PREFIX, UserId, is_email, normalize_email};
use crate::clock;

/// Every `(table, column)` that names a user, in our schema and in an ltcai-style store. Only the
/// pairs a store actually has are touched. `users.id` is not here: that table is the directory of
/// users itself and gets its own pass (duplicates, upserts from the users file).
pub const IDENTITY_COLUMNS: &[(&str, &str)] = &[
    // ours (schema/)
    ("roots", "added_by"),
    ("nodes", "owner_id"),
    ("edges", "created_by"),
    ("provenance", "actor_id"),
    ("source_versions", "actor_id"),
    ("workflow_runs", "actor_id"),
    ("workflow_waits", "resolved_by"),
    ("workflow_triggers", "created_by"),
    // ltcai
    ("nodes_v2", "owner_id"),
    ("edges_v2", "created_by"),
    ("ingestion_provenance", "owner"),
];

/// The meta key recording when a store was migrated (value: [`clock::now`]).
pub const META_KEY: &str = "identity_uuid_migrated_at";

/// Marks backup files: `brain.db` -> `brain.pre-user-uuid.<stamp>.db`.
const BACKUP_TAG: &str = "pre-user-uuid";

/// Columns that make a `users` table ours; a foreign table of that name is left alone.
const USERS_COLUMNS: &[&str] = &[
    "id",
    "email",
    "display_name",
    "props",
    "created_at",
    "updated_at",
];

/// Where an ltcai-style store, which has no `meta`, records the migration.
const LTCAI_META: &str = "kg_meta";

/// The first bytes of every sqlite 3 database file.
const SQLITE_HEADER: &[u8] = b"SQLite format 3\0";

/// A locked store is worth waiting for briefly; a daemon's write transaction is short.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// What `brain identity migrate` works on.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub store: PathBuf,
    pub users: Option<PathBuf>,
}

/// What a run found and did. With `changed == false` nothing was written and no backup was made.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub changed: bool,
    pub store: PathBuf,
    pub users_file: Option<PathBuf>,
    /// One entry per identity column the store has, then `users.id` when it has our `users`.
    pub columns: Vec<ColumnReport>,
    /// Whether the store has our `users` table (an ltcai-style store does not get one).
    pub users_table: bool,
    pub users_added: usize,
    pub users_updated: usize,
    /// Rows of `users` whose id was an address and whose person already had a row under the id.
    pub users_removed: usize,
    pub conflicts: Vec<UserConflict>,
    pub conflict_count: usize,
    /// Users in the migrated users file.
    pub file_users: usize,
    /// Users that got the stable id because the file gave them none (or no `user:` one).
    pub ids_filled: usize,
    pub merged: Vec<MergedUser>,
    pub dropped: Vec<String>,
    pub dropped_count: usize,
    pub users_file_rewritten: bool,
    /// The table holding [`META_KEY`]: `meta` (ours) or `kg_meta` (ltcai).
    pub meta_table: String,
    /// The value written under [`META_KEY`] by this run.
    pub migrated_at: Option<String>,
    pub backups: Vec<PathBuf>,
}

/// Counts for one identity column. `rewritten` is what was (or, in a plan, would be) rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ColumnReport {
    pub table: String,
    pub column: String,
    pub rewritten: u64,
    pub already_ids: u64,
    pub not_email: u64,
}

/// Several users-file records that turned out to be one person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MergedUser {
    pub email: String,
    pub records: usize,
    pub id: UserId,
}

/// A disagreement between the users file and the store's `users` table. The store side is kept
/// as it is; an operator has to decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserConflict {
    pub email: String,
    /// The id the migration wanted for `email`.
    pub id: UserId,
    /// The id the store keeps for `email`, when it has a row for it.
    pub store_id: Option<String>,
    /// The address that already owns `id` in the store, when another one does.
    pub other_email: Option<String>,
}

/// One user of the migrated users file, as it lands in our `users` table.
#[derive(Debug, Clone, PartialEq)]
pub struct UserRecord {
    pub email: String,
    pub id: UserId,
    pub display_name: Option<String>,
    /// Remaining fields; never `id`, `email` or `api_keys`.
    pub props: Map<String, Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    #[error("store not found at {path}")]
    StoreMissing { path: PathBuf },
    #[error("failed to inspect store at {path}: {source}")]
    StoreStat { path: PathBuf, source: io::Error },
    #[error("failed to open store at {path}: {source}")]
    StoreOpen {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("store at {path} is not a usable sqlite database: {detail}")]
    StoreCorrupt { path: PathBuf, detail: String },
    #[error("store at {path} has none of the tables the identity migration knows")]
    StoreUnknown { path: PathBuf },
    #[error("store path {path} is not valid utf-8, which the sqlite backup needs")]
    PathNotUtf8 { path: PathBuf },
    #[error("failed to read store at {path}: {source}")]
    StoreRead {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("users file not found at {path}")]
    UsersMissing { path: PathBuf },
    #[error("failed to read users file {path}: {source}")]
    UsersRead { path: PathBuf, source: io::Error },
    #[error("users file {path} is not valid json: {source}")]
    UsersNotJson {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("users file {path} must hold a json object keyed by e-mail address, found {found}")]
    UsersNotObject { path: PathBuf, found: &'static str },
    #[error("failed to back up store {path} to {backup}: {source}")]
    BackupStore {
        path: PathBuf,
        backup: PathBuf,
        source: rusqlite::Error,
    },
    #[error("failed to back up {path} to {backup}: {source}")]
    BackupFile {
        path: PathBuf,
        backup: PathBuf,
        source: io::Error,
    },
    #[error("failed to write the new users file beside {path}: {source}")]
    UsersWrite { path: PathBuf, source: io::Error },
    #[error("failed to migrate store at {path}, it was left unchanged: {source}")]
    StoreWrite {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "store at {store} was migrated but replacing users file {path} failed: {source}; \
         run the migration again to finish it"
    )]
    UsersReplace {
        store: PathBuf,
        path: PathBuf,
        source: io::Error,
    },
}

impl MigrateError {
    /// Stable snake_case code for the error table; messages may change, these may not.
    pub fn kind(&self) -> &'static str {
        match self {
            MigrateError::StoreMissing { .. } => "store_missing",
            MigrateError::StoreStat { .. } | MigrateError::StoreOpen { .. } => "store_open",
            MigrateError::StoreCorrupt { .. } => "store_corrupt",
            MigrateError::StoreUnknown { .. } => "store_unknown",
            MigrateError::PathNotUtf8 { .. } => "path_not_utf8",
            MigrateError::StoreRead { .. } => "store_read",
            MigrateError::UsersMissing { .. } => "users_file_missing",
            MigrateError::UsersRead { .. } => "users_file_read",
            MigrateError::UsersNotJson { .. } => "users_file_not_json",
            MigrateError::UsersNotObject { .. } => "users_file_not_object",
            MigrateError::BackupStore { .. } | MigrateError::BackupFile { .. } => "backup_failed",
            MigrateError::UsersWrite { .. } | MigrateError::UsersReplace { .. } => {
                "users_file_write"
            }
            MigrateError::StoreWrite { .. } => "store_write",
        }
    }
}

/// The offline command: validate, plan, back up, rewrite.
///
/// Order, and why: all reads and checks come first, so bad input changes nothing. Then the
/// backups. The new users file is written to a temporary file beside the old one (and synced)
/// *before* the store transaction, but only renamed over the old one *after* the commit. If the
/// transaction fails, the temporary file is removed and both files are as they were. If the
/// rename fails after the commit, the store already holds exactly the ids the old users file
/// yields (the merge is deterministic), so running again finishes the job. Rewriting the users
/// file first would instead need a restore from the backup on failure, a write that can fail too.
pub fn run(opts: &Options) -> Result<Report, MigrateError> {
    let store = opts.store.as_path();
    let mut conn = open_store(store)?;
    let users = opts.users.as_deref().map(UsersFile::load).transpose()?;

    let plan = plan_store(&conn, users.as_ref()).map_err(|source| MigrateError::StoreRead {
        path: store.to_path_buf(),
        source,
    })?;
    let users_changed = users.as_ref().is_some_and(UsersFile::needs_rewrite);
    if !plan.needs_write() && !users_changed {
        return Ok(Report::new(opts, users.as_ref(), plan, Vec::new(), false));
    }

    let stamp = clock::file_stamp();
    let mut backups = vec![backup_store(&conn, store, &stamp)?];
    let staged = match users.as_ref().filter(|u| u.needs_rewrite()) {
        Some(file) => {
            backups.push(file.backup(&stamp)?);
            Some((file.path.clone(), file.stage()?))
        }
        None => None,
    };

    // Dropping `staged` on this error path removes the temporary users file.
    let done = apply_store(&mut conn, users.as_ref(), true).map_err(|source| {
        MigrateError::StoreWrite {
            path: store.to_path_buf(),
            source,
        }
    })?;
    if let Some((path, staged)) = staged {
        staged
            .commit()
            .map_err(|source| MigrateError::UsersReplace {
                store: store.to_path_buf(),
                path,
                source,
            })?;
    }
    Ok(Report::new(opts, users.as_ref(), done, backups, true))
}

/// Cheap check for the daemon on open: does this store still hold addresses where ids belong,
/// or has it rows but no record of a migration? Reads only, stops at the first hit.
pub fn needed(conn: &Connection) -> rusqlite::Result<bool> {
    let schema = Schema::read(conn)?;
    let columns = schema.all_columns();
    for &(table, column) in &columns {
        if column_has_email(conn, table, column)? {
            return Ok(true);
        }
    }
    if schema.key_present(conn)? {
        return Ok(false);
    }
    for &(table, _) in &columns {
        if table_has_rows(conn, table)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// What the store part of a migration would do, without writing anything.
pub fn plan_store(conn: &Connection, users: Option<&UsersFile>) -> rusqlite::Result<StoreChanges> {
    store_pass(conn, users, Pass::Plan)
}

/// The store part of a migration in one `BEGIN IMMEDIATE` transaction, with no backup and no
/// users-file write: for a caller that owns the connection (the daemon). Records
/// [`META_KEY`] when something changed or the key is absent. `conn` must not be inside a
/// transaction already.
pub fn migrate_connection(
    conn: &mut Connection,
    users: Option<&UsersFile>,
) -> rusqlite::Result<StoreChanges> {
    apply_store(conn, users, false)
}

/// The store side of a migration: counts, and what changed (or would change, in a plan).
#[derive(Debug, Clone, Default, Serialize)]
pub struct StoreChanges {
    pub columns: Vec<ColumnReport>,
    pub users_table: bool,
    pub users_added: usize,
    pub users_updated: usize,
    pub users_removed: usize,
    pub conflicts: Vec<UserConflict>,
    pub meta_table: String,
    /// Whether [`META_KEY`] was there before this pass.
    pub key_present: bool,
    pub migrated_at: Option<String>,
}

impl StoreChanges {
    /// Whether any row is (or would be) rewritten, added or removed.
    pub fn has_changes(&self) -> bool {
        self.columns.iter().any(|c| c.rewritten > 0)
            || self.users_added > 0
            || self.users_updated > 0
            || self.users_removed > 0
    }

    /// Whether a run has to write to the store: rows to change, or the key to record.
    pub fn needs_write(&self) -> bool {
        self.has_changes() || !self.key_present
    }
}

/// A users file, read and merged in memory. Nothing is written until [`run`] decides to.
#[derive(Clone)]
pub struct UsersFile {
    pub path: PathBuf,
    raw: Vec<u8>,
    original: Value,
    format: JsonFormat,
    /// The migrated file: keyed by normalized address, each value with `email` and `id`.
    pub migrated: Value,
    pub users: Vec<UserRecord>,
    pub merged: Vec<MergedUser>,
    pub dropped: Vec<String>,
    pub ids_filled: usize,
}

impl UsersFile {
    pub fn load(path: &Path) -> Result<UsersFile, MigrateError> {
        let raw = fs::read(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => MigrateError::UsersMissing {
                path: path.to_path_buf(),
            },
            _ => MigrateError::UsersRead {
                path: path.to_path_buf(),
                source,
            },
        })?;
        UsersFile::parse(path, raw)
    }

    /// Parses and merges `raw`; `path` is where it came from (errors and writes use it).
    pub fn parse(path: &Path, raw: Vec<u8>) -> Result<UsersFile, MigrateError> {
        let original: Value =
            serde_json::from_slice(&raw).map_err(|source| MigrateError::UsersNotJson {
                path: path.to_path_buf(),
                source,
            })?;
        let Value::Object(entries) = &original else {
            return Err(MigrateError::UsersNotObject {
                path: path.to_path_buf(),
                found: json_type(&original),
            });
        };
        let merge = merge_users(entries);
        let format = JsonFormat::detect(&String::from_utf8_lossy(&raw));
        Ok(UsersFile {
            path: path.to_path_buf(),
            raw,
            format,
            migrated: merge.value,
            users: merge.users,
            merged: merge.merged,
            dropped: merge.dropped,
            ids_filled: merge.ids_filled,
            original,
        })
    }

    /// Whether the migrated file differs from the one on disk (as JSON, not as text: a file that
    /// only differs in spacing is left alone).
    pub fn needs_rewrite(&self) -> bool {
        self.migrated != self.original
    }

    /// The migrated file in the original's format.
    pub fn render(&self) -> Result<Vec<u8>, serde_json::Error> {
        self.format.render(&self.migrated)
    }

    /// Normalized address -> id, for every user in the file.
    fn ids(&self) -> HashMap<String, UserId> {
        self.users
            .iter()
            .map(|u| (u.email.clone(), u.id.clone()))
            .collect()
    }

    fn backup(&self, stamp: &str) -> Result<PathBuf, MigrateError> {
        let backup = backup_path(&self.path, stamp, path_taken);
        write_copy(&self.path, &backup, &self.raw).map_err(|source| MigrateError::BackupFile {
            path: self.path.clone(),
            backup: backup.clone(),
            source,
        })?;
        Ok(backup)
    }

    /// Writes the migrated file to a temporary file beside the real one (resolving a symlink, so
    /// the file it points to is what gets replaced).
    fn stage(&self) -> Result<StagedFile, MigrateError> {
        let fail = |source| MigrateError::UsersWrite {
            path: self.path.clone(),
            source,
        };
        let bytes = self.render().map_err(|e| fail(io::Error::from(e)))?;
        let target = fs::canonicalize(&self.path).map_err(fail)?;
        StagedFile::write(&target, &bytes).map_err(fail)
    }
}

/// Path and counts only: the contents hold api keys, which must not end up in a log.
impl fmt::Debug for UsersFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UsersFile")
            .field("path", &self.path)
            .field("users", &self.users.len())
            .field("merged", &self.merged)
            .field("dropped", &self.dropped)
            .field("ids_filled", &self.ids_filled)
            .finish_non_exhaustive()
    }
}

struct Merge {
    value: Value,
    users: Vec<UserRecord>,
    merged: Vec<MergedUser>,
    dropped: Vec<String>,
    ids_filled: usize,
}

/// Merges the records of a users file by normalized address, in file order: later fields win,
/// `api_keys` objects are merged key by key, and the first `user:` id the file gives is kept.
fn merge_users(entries: &Map<String, Value>) -> Merge {
    struct Group {
        email: String,
        fields: Map<String, Value>,
        id: Option<UserId>,
        records: usize,
    }

    let mut groups: Vec<Group> = Vec::new();
    let mut by_email: HashMap<String, usize> = HashMap::new();
    let mut dropped = Vec::new();
    for (key, entry) in entries {
        let Some(record) = entry.as_object() else {
            dropped.push(key.clone());
            continue;
        };
        let Some(email) = entry_email(key, record) else {
            dropped.push(key.clone());
            continue;
        };
        let index = *by_email.entry(email.clone()).or_insert_with(|| {
            groups.push(Group {
                email,
                fields: Map::new(),
                id: None,
                records: 0,
            });
            groups.len() - 1
        });
        let group = &mut groups[index];
        group.records += 1;
        if group.id.is_none() {
            group.id = given_id(record);
        }
        for (field, value) in record {
            match (group.fields.get_mut(field), value) {
                (Some(Value::Object(keys)), Value::Object(more)) if field == "api_keys" => {
                    for (name, key) in more {
                        keys.insert(name.clone(), key.clone());
                    }
                }
                _ => {
                    group.fields.insert(field.clone(), value.clone());
                }
            }
        }
    }

    let mut value = Map::new();
    let mut users = Vec::new();
    let mut merged = Vec::new();
    let mut ids_filled = 0;
    for group in groups {
        let id = group.id.unwrap_or_else(|| {
            ids_filled += 1;
            UserId::for_email(&group.email)
        });
        let mut fields = group.fields;
        fields.insert("email".to_owned(), Value::String(group.email.clone()));
        fields.insert("id".to_owned(), Value::String(id.to_string()));
        if group.records > 1 {
            merged.push(MergedUser {
                email: group.email.clone(),
                records: group.records,
                id: id.clone(),
            });
        }
        users.push(UserRecord::new(&group.email, id, &fields));
        value.insert(group.email, Value::Object(fields));
    }
    Merge {
        value: Value::Object(value),
        users,
        merged,
        dropped,
        ids_filled,
    }
}

/// The normalized address of a users-file entry: its key, or else its `email` field.
fn entry_email(key: &str, record: &Map<String, Value>) -> Option<String> {
    if is_email(key) {
        return Some(normalize_email(key));
    }
    record
        .get("email")
        .and_then(Value::as_str)
        .filter(|email| is_email(email))
        .map(normalize_email)
}

/// The id a record gives, if it is a real user id (an address or a number in `id` is not).
fn given_id(record: &Map<String, Value>) -> Option<UserId> {
    record
        .get("id")
        .and_then(Value::as_str)
        .and_then(|id| UserId::parse(id.trim()))
}

impl UserRecord {
    fn new(email: &str, id: UserId, fields: &Map<String, Value>) -> UserRecord {
        let (display_name, name_field) = ["display_name", "name"]
            .into_iter()
            .find_map(|field| {
                let name = fields.get(field).and_then(Value::as_str)?;
                Some((Some(name.to_owned()), Some(field)))
            })
            .unwrap_or((None, None));
        let props = fields
            .iter()
            .filter(|(field, _)| {
                // api_keys are secrets: they stay in the users file and never reach the store.
                !matches!(field.as_str(), "id" | "email" | "api_keys")
                    && Some(field.as_str()) != name_field
            })
            .map(|(field, value)| (field.clone(), value.clone()))
            .collect();
        UserRecord {
            email: email.to_owned(),
            id,
            display_name,
            props,
        }
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// How a JSON file was laid out, so a rewrite keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct JsonFormat {
    /// `None` for compact output.
    indent: Option<String>,
    trailing_newline: bool,
}

impl JsonFormat {
    fn detect(text: &str) -> JsonFormat {
        // Only a line break inside the document makes it pretty-printed; a compact document
        // followed by a newline stays compact.
        let indent = text.trim().contains('\n').then(|| {
            text.lines()
                .skip(1)
                .find_map(|line| {
                    let unit = line.chars().next().filter(|c| *c == ' ' || *c == '\t')?;
                    Some(line.chars().take_while(|c| *c == unit).collect())
                })
                .unwrap_or_else(|| "  ".to_owned())
        });
        JsonFormat {
            indent,
            trailing_newline: text.ends_with('\n'),
        }
    }

    fn render(&self, value: &Value) -> Result<Vec<u8>, serde_json::Error> {
        let mut out = Vec::new();
        match &self.indent {
            Some(indent) => {
                let formatter = serde_json::ser::PrettyFormatter::with_indent(indent.as_bytes());
                let mut serializer = serde_json::Serializer::with_formatter(&mut out, formatter);
                value.serialize(&mut serializer)?;
            }
            None => serde_json::to_writer(&mut out, value)?,
        }
        if self.trailing_newline {
            out.push(b'\n');
        }
        Ok(out)
    }
}

/// `dir/stem.pre-user-uuid.<stamp>.ext`, or with `-1`, `-2`, ... after the stamp when taken.
fn backup_path(original: &Path, stamp: &str, taken: impl Fn(&Path) -> bool) -> PathBuf {
    let stem = original.file_stem().unwrap_or(original.as_os_str());
    let dir = original.parent().unwrap_or(Path::new(""));
    let mut n = 0u32;
    loop {
        let mut name = stem.to_os_string();
        name.push(format!(".{BACKUP_TAG}.{stamp}"));
        if n > 0 {
            name.push(format!("-{n}"));
        }
        if let Some(ext) = original.extension() {
            name.push(".");
            name.push(ext);
        }
        let candidate = dir.join(name);
        if !taken(&candidate) {
            return candidate;
        }
        n += 1;
    }
}

fn path_taken(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// A consistent copy of the store, taken by sqlite itself (safe even while others read it).
fn backup_store(conn: &Connection, store: &Path, stamp: &str) -> Result<PathBuf, MigrateError> {
    let backup = backup_path(store, stamp, path_taken);
    let Some(target) = backup.to_str() else {
        return Err(MigrateError::PathNotUtf8 {
            path: store.to_path_buf(),
        });
    };
    conn.execute("VACUUM INTO ?1", [target])
        .map_err(|source| MigrateError::BackupStore {
            path: store.to_path_buf(),
            backup: backup.clone(),
            source,
        })?;
    // The copy holds the same notes as the store: no wider permissions than the original.
    fs::metadata(store)
        .and_then(|meta| fs::set_permissions(&backup, meta.permissions()))
        .map_err(|source| MigrateError::BackupFile {
            path: store.to_path_buf(),
            backup: backup.clone(),
            source,
        })?;
    Ok(backup)
}

/// Creates `path` (never overwriting) with `bytes` and the permissions of `like`, synced.
fn write_copy(like: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let permissions = fs::metadata(like)?.permissions();
    let mut file = create_private(path)?;
    file.set_permissions(permissions)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// A new file readable by its owner only until its real permissions are set: the users file
/// holds api keys, and a world-readable moment is a leak.
fn create_private(path: &Path) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

/// A fully written temporary file waiting to replace its target; removed unless committed.
struct StagedFile {
    tmp: Option<PathBuf>,
    target: PathBuf,
}

impl StagedFile {
    fn write(target: &Path, bytes: &[u8]) -> io::Result<StagedFile> {
        let dir = parent_dir(target);
        let name = target.file_name().unwrap_or(target.as_os_str());
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".migrate-{}.tmp", std::process::id()));
        let tmp = dir.join(tmp_name);
        write_copy(target, &tmp, bytes).inspect_err(|_| {
            // Best effort: a half-written temporary file is useless; the error says what failed.
            let _ = fs::remove_file(&tmp);
        })?;
        Ok(StagedFile {
            tmp: Some(tmp),
            target: target.to_path_buf(),
        })
    }

    fn commit(mut self) -> io::Result<()> {
        let Some(tmp) = self.tmp.take() else {
            return Ok(());
        };
        if let Err(e) = fs::rename(&tmp, &self.target) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        // Make the rename itself durable. Some filesystems refuse to sync a directory; the file
        // is already replaced then, so there is nothing better to do than go on.
        if let Ok(dir) = File::open(parent_dir(&self.target)) {
            let _ = dir.sync_all();
        }
        Ok(())
    }
}

impl Drop for StagedFile {
    fn drop(&mut self) {
        if let Some(tmp) = self.tmp.take() {
            let _ = fs::remove_file(tmp);
        }
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Opens an existing store for writing and proves it is a healthy sqlite database we know,
/// without creating or changing anything.
fn open_store(path: &Path) -> Result<Connection, MigrateError> {
    let owned = || path.to_path_buf();
    match fs::metadata(path) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(MigrateError::StoreCorrupt {
                path: owned(),
                detail: "not a regular file".to_owned(),
            });
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(MigrateError::StoreMissing { path: owned() });
        }
        Err(source) => {
            return Err(MigrateError::StoreStat {
                path: owned(),
                source,
            });
        }
    }
    if path.to_str().is_none() {
        return Err(MigrateError::PathNotUtf8 { path: owned() });
    }
    // sqlite takes an empty or very short file for an empty database (and would happily turn
    // it into one on the first write), so the header is checked by hand first.
    let mut header = Vec::with_capacity(SQLITE_HEADER.len());
    File::open(path)
        .and_then(|file| {
            file.take(SQLITE_HEADER.len() as u64)
                .read_to_end(&mut header)
        })
        .map_err(|source| MigrateError::StoreStat {
            path: owned(),
            source,
        })?;
    if header != SQLITE_HEADER {
        return Err(MigrateError::StoreCorrupt {
            path: owned(),
            detail: "not a sqlite database (no sqlite header)".to_owned(),
        });
    }
    // No SQLITE_OPEN_CREATE: a mistyped path must fail, not leave an empty store behind.
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn =
        Connection::open_with_flags(path, flags).map_err(|source| MigrateError::StoreOpen {
            path: owned(),
            source,
        })?;
    conn.busy_timeout(BUSY_TIMEOUT)
        .map_err(|source| MigrateError::StoreOpen {
            path: owned(),
            source,
        })?;

    // sqlite opens any file lazily; the first read is what tells a database from anything else.
    let unusable = |source: rusqlite::Error| match source.sqlite_error_code() {
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => MigrateError::StoreCorrupt {
            path: owned(),
            detail: source.to_string(),
        },
        _ => MigrateError::StoreOpen {
            path: owned(),
            source,
        },
    };
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |row| {
        row.get::<_, i64>(0)
    })
    .map_err(unusable)?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(unusable)?;
    if problems.first().map(String::as_str) != Some("ok") {
        return Err(MigrateError::StoreCorrupt {
            path: owned(),
            detail: problems.into_iter().take(3).collect::<Vec<_>>().join("; "),
        });
    }

    let schema = Schema::read(&conn).map_err(|source| MigrateError::StoreRead {
        path: owned(),
        source,
    })?;
    if schema.columns.is_empty() && !schema.users_table && schema.meta.is_none() {
        return Err(MigrateError::StoreUnknown { path: owned() });
    }
    Ok(conn)
}

/// Which of the known tables and columns a store has.
struct Schema {
    /// Present identity columns, in [`IDENTITY_COLUMNS`] order.
    columns: Vec<(&'static str, &'static str)>,
    /// Whether `users` is ours (all of [`USERS_COLUMNS`]).
    users_table: bool,
    /// The existing table with `key` and `value` for [`META_KEY`], if any.
    meta: Option<&'static str>,
}

impl Schema {
    fn read(conn: &Connection) -> rusqlite::Result<Schema> {
        let has_all = |table: &str, wanted: &[&str]| -> rusqlite::Result<bool> {
            Ok(table_columns(conn, table)?.is_some_and(|columns| {
                wanted
                    .iter()
                    .all(|w| columns.iter().any(|c| c.eq_ignore_ascii_case(w)))
            }))
        };
        let mut columns = Vec::new();
        for &(table, column) in IDENTITY_COLUMNS {
            if has_all(table, &[column])? {
                columns.push((table, column));
            }
        }
        let users_table = has_all("users", USERS_COLUMNS)?;
        let meta = if has_all("meta", &["key", "value"])? {
            Some("meta")
        } else if has_all(LTCAI_META, &["key", "value"])? {
            Some(LTCAI_META)
        } else {
            None
        };
        Ok(Schema {
            columns,
            users_table,
            meta,
        })
    }

    /// The identity columns plus `users.id` when the users table is ours.
    fn all_columns(&self) -> Vec<(&'static str, &'static str)> {
        let mut all = self.columns.clone();
        if self.users_table {
            all.push(("users", "id"));
        }
        all
    }

    fn meta_table(&self) -> &'static str {
        self.meta.unwrap_or(LTCAI_META)
    }

    fn key_present(&self, conn: &Connection) -> rusqlite::Result<bool> {
        let Some(meta) = self.meta else {
            return Ok(false);
        };
        let sql = format!("SELECT 1 FROM {} WHERE key = ?1", quoted(meta));
        Ok(conn
            .query_row(&sql, [META_KEY], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn record_key(&self, conn: &Connection, now: &str) -> rusqlite::Result<()> {
        if self.meta.is_none() {
            conn.execute_batch(&format!(
                "CREATE TABLE IF NOT EXISTS {LTCAI_META} (key TEXT PRIMARY KEY, value TEXT)"
            ))?;
        }
        // Update-then-insert rather than an upsert: a foreign `meta` may lack a unique key.
        let table = quoted(self.meta_table());
        let updated = conn.execute(
            &format!("UPDATE {table} SET value = ?2 WHERE key = ?1"),
            params![META_KEY, now],
        )?;
        if updated == 0 {
            conn.execute(
                &format!("INSERT INTO {table} (key, value) VALUES (?1, ?2)"),
                params![META_KEY, now],
            )?;
        }
        Ok(())
    }
}

/// Column names of a table, or `None` when there is no such table (views do not count).
fn table_columns(conn: &Connection, table: &str) -> rusqlite::Result<Option<Vec<String>>> {
    let exists = conn
        .query_row(
            // A view counts when it takes updates (our `edges`, schema 0015).
            "SELECT 1 FROM sqlite_master t
             WHERE t.name = ?1 COLLATE NOCASE
               AND (t.type = 'table'
                    OR (t.type = 'view' AND EXISTS (
                        SELECT 1 FROM sqlite_master g
                        WHERE g.type = 'trigger' AND g.tbl_name = t.name
                          AND g.sql LIKE '%INSTEAD OF UPDATE%')))",
            [table],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
    let names = stmt
        .query_map([table], |row| row.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some(names))
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn column_has_email(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    let (t, c) = (quoted(table), quoted(column));
    // The LIKE narrows the scan to values with an `@` between two characters; `is_email` is the
    // judge, so the first real address ends the search.
    let sql = format!("SELECT {c} FROM {t} WHERE typeof({c}) = 'text' AND {c} LIKE '%_@_%'");
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let value: String = row.get(0)?;
        if is_email(&value) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn table_has_rows(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    let sql = format!("SELECT 1 FROM {} LIMIT 1", quoted(table));
    Ok(conn.query_row(&sql, [], |_| Ok(())).optional()?.is_some())
}

#[derive(Clone, Copy)]
enum Pass<'a> {
    Plan,
    Apply {
        now: &'a str,
        /// Record [`META_KEY`] even if the store itself needs nothing (the users file did).
        record_always: bool,
    },
}

fn apply_store(
    conn: &mut Connection,
    users: Option<&UsersFile>,
    record_always: bool,
) -> rusqlite::Result<StoreChanges> {
    let now = clock::now();
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let changes = store_pass(
        &tx,
        users,
        Pass::Apply {
            now: &now,
            record_always,
        },
    )?;
    tx.commit()?;
    Ok(changes)
}

/// One pass over the store. A plan only reads; an apply runs the same logic and writes, so the
/// counts it reports are the ones of the rows it actually changed.
fn store_pass(
    conn: &Connection,
    users: Option<&UsersFile>,
    pass: Pass<'_>,
) -> rusqlite::Result<StoreChanges> {
    let schema = Schema::read(conn)?;
    let mut changes = StoreChanges {
        users_table: schema.users_table,
        meta_table: schema.meta_table().to_owned(),
        key_present: schema.key_present(conn)?,
        ..StoreChanges::default()
    };
    let file_ids = users.map(UsersFile::ids).unwrap_or_default();
    let records = users.map_or(&[][..], |u| u.users.as_slice());

    let mut table_ids = HashMap::new();
    let mut users_column = None;
    if schema.users_table {
        let plan = plan_users_table(conn, records, &file_ids)?;
        if let Pass::Apply { now, .. } = pass {
            for action in &plan.actions {
                action.execute(conn, now)?;
            }
        }
        changes.users_added = plan.added;
        changes.users_updated = plan.updated;
        changes.users_removed = plan.removed;
        changes.conflicts = plan.conflicts;
        table_ids = plan.ids;
        users_column = Some(plan.column);
    }

    // The users file decides first (as the issue asks, even against the users table); then the
    // users table, so a store migrated before keeps the ids it has; then the stable id.
    let resolve = |value: &str| -> UserId {
        let email = normalize_email(value);
        file_ids
            .get(&email)
            .or_else(|| table_ids.get(&email))
            .cloned()
            .unwrap_or_else(|| UserId::for_email(&email))
    };
    let write = matches!(pass, Pass::Apply { .. });
    for &(table, column) in &schema.columns {
        changes
            .columns
            .push(rewrite_column(conn, table, column, &resolve, write)?);
    }
    changes.columns.extend(users_column);

    if let Pass::Apply { now, record_always } = pass
        && (record_always || changes.needs_write())
    {
        schema.record_key(conn, now)?;
        changes.migrated_at = Some(now.to_owned());
    }
    Ok(changes)
}

/// Counts one column by value and, when `write`, rewrites each address to its id.
fn rewrite_column(
    conn: &Connection,
    table: &str,
    column: &str,
    resolve: &dyn Fn(&str) -> UserId,
    write: bool,
) -> rusqlite::Result<ColumnReport> {
    let (t, c) = (quoted(table), quoted(column));
    // Grouping by value: one UPDATE per distinct address instead of one per row.
    let groups: Vec<(SqlValue, i64)> = conn
        .prepare(&format!("SELECT {c}, count(*) FROM {t} GROUP BY {c}"))?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut report = ColumnReport::new(table, column);
    for (value, rows) in groups {
        // count(*) is never negative.
        let rows = u64::try_from(rows).unwrap_or(0);
        match value {
            SqlValue::Text(s) if s.starts_with(PREFIX) => report.already_ids += rows,
            SqlValue::Text(s) if is_email(&s) => {
                report.rewritten += rows;
                if write {
                    conn.execute(
                        &format!("UPDATE {t} SET {c} = ?1 WHERE {c} = ?2"),
                        params![resolve(&s).as_str(), s],
                    )?;
                }
            }
            _ => report.not_email += rows,
        }
    }
    Ok(report)
}

impl ColumnReport {
    fn new(table: &str, column: &str) -> ColumnReport {
        ColumnReport {
            table: table.to_owned(),
            column: column.to_owned(),
            rewritten: 0,
            already_ids: 0,
            not_email: 0,
        }
    }
}

/// A row of our `users` table as the plan sees it.
struct UserRow {
    id: String,
    email: String,
    display_name: Option<String>,
    props: Option<String>,
}

enum UserAction {
    Delete {
        id: String,
    },
    Rename {
        from: String,
        to: String,
    },
    Insert {
        id: String,
        email: String,
        display_name: Option<String>,
        props: String,
    },
    Update {
        id: String,
        email: String,
        display_name: Option<String>,
        props: String,
    },
}

impl UserAction {
    fn execute(&self, conn: &Connection, now: &str) -> rusqlite::Result<()> {
        match self {
            UserAction::Delete { id } => {
                conn.execute("DELETE FROM users WHERE id = ?1", [id])?;
            }
            UserAction::Rename { from, to } => {
                conn.execute(
                    "UPDATE users SET id = ?1, updated_at = ?2 WHERE id = ?3",
                    params![to, now, from],
                )?;
            }
            UserAction::Insert {
                id,
                email,
                display_name,
                props,
            } => {
                conn.execute(
                    "INSERT INTO users (id, email, display_name, props, created_at, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
                    params![id, email, display_name, props, now],
                )?;
            }
            UserAction::Update {
                id,
                email,
                display_name,
                props,
            } => {
                conn.execute(
                    "UPDATE users SET email = ?2, display_name = ?3, props = ?4, updated_at = ?5 \
                     WHERE id = ?1",
                    params![id, email, display_name, props, now],
                )?;
            }
        }
        Ok(())
    }
}

struct UsersTablePlan {
    column: ColumnReport,
    actions: Vec<UserAction>,
    added: usize,
    updated: usize,
    removed: usize,
    conflicts: Vec<UserConflict>,
    /// Normalized address -> id, for rows that end up with a real id.
    ids: HashMap<String, UserId>,
}

/// Works out, in memory, what our `users` table needs: rows keyed by an address get their id,
/// then every users-file record is inserted or brought up to date (matched by address).
fn plan_users_table(
    conn: &Connection,
    records: &[UserRecord],
    file_ids: &HashMap<String, UserId>,
) -> rusqlite::Result<UsersTablePlan> {
    let text = |value: SqlValue| match value {
        SqlValue::Text(s) => Some(s),
        _ => None,
    };
    let mut column = ColumnReport::new("users", "id");
    let mut rows = Vec::new();
    {
        let mut stmt =
            conn.prepare("SELECT id, email, display_name, props FROM users ORDER BY rowid")?;
        let mut query = stmt.query([])?;
        while let Some(row) = query.next()? {
            let (Some(id), Some(email)) = (text(row.get(0)?), text(row.get(1)?)) else {
                // Not something a user can be matched by; left as it is.
                column.not_email += 1;
                continue;
            };
            rows.push(UserRow {
                id,
                email,
                display_name: text(row.get(2)?),
                props: text(row.get(3)?),
            });
        }
    }

    let mut plan = UsersTablePlan {
        column,
        actions: Vec::new(),
        added: 0,
        updated: 0,
        removed: 0,
        conflicts: Vec::new(),
        ids: HashMap::new(),
    };
    // id -> normalized address of the row holding it, as the plan goes.
    let mut owner: HashMap<String, String> = rows
        .iter()
        .map(|r| (r.id.clone(), normalize_email(&r.email)))
        .collect();
    // Addresses already reported, so one problem is one conflict.
    let mut reported: HashSet<String> = HashSet::new();
    let mut live = Vec::new();
    for mut row in rows {
        if row.id.starts_with(PREFIX) {
            plan.column.already_ids += 1;
        } else if is_email(&row.id) {
            let email = normalize_email(&row.id);
            let target = file_ids
                .get(&email)
                .cloned()
                .unwrap_or_else(|| UserId::for_email(&email));
            let row_email = normalize_email(&row.email);
            match owner.get(target.as_str()) {
                Some(holder) if *holder == row_email => {
                    // The same person already has a row under the id: this one is a leftover.
                    plan.actions.push(UserAction::Delete { id: row.id.clone() });
                    owner.remove(&row.id);
                    plan.removed += 1;
                    continue;
                }
                Some(holder) => {
                    plan.conflicts.push(UserConflict {
                        email: email.clone(),
                        id: target,
                        store_id: Some(row.id.clone()),
                        other_email: Some(holder.clone()),
                    });
                    reported.insert(email);
                    reported.insert(row_email);
                }
                None => {
                    plan.actions.push(UserAction::Rename {
                        from: row.id.clone(),
                        to: target.to_string(),
                    });
                    owner.remove(&row.id);
                    owner.insert(target.to_string(), row_email);
                    row.id = target.to_string();
                    plan.column.rewritten += 1;
                }
            }
        } else {
            plan.column.not_email += 1;
        }
        live.push(row);
    }

    for record in records {
        // Prefer the row whose address is already normalized: renaming another row's address
        // to it would break `email UNIQUE`.
        let found = live
            .iter()
            .position(|r| r.email == record.email)
            .or_else(|| {
                live.iter()
                    .position(|r| normalize_email(&r.email) == record.email)
            });
        let props = Value::Object(record.props.clone());
        match found {
            Some(i) => {
                let row = &mut live[i];
                if row.id != record.id.as_str() && !reported.contains(&record.email) {
                    plan.conflicts.push(UserConflict {
                        email: record.email.clone(),
                        id: record.id.clone(),
                        store_id: Some(row.id.clone()),
                        other_email: None,
                    });
                }
                let same_props = row
                    .props
                    .as_deref()
                    .and_then(|p| serde_json::from_str::<Value>(p).ok())
                    .is_some_and(|p| p == props);
                if row.email != record.email
                    || row.display_name != record.display_name
                    || !same_props
                {
                    let props = props.to_string();
                    plan.actions.push(UserAction::Update {
                        id: row.id.clone(),
                        email: record.email.clone(),
                        display_name: record.display_name.clone(),
                        props: props.clone(),
                    });
                    plan.updated += 1;
                    row.email = record.email.clone();
                    row.display_name = record.display_name.clone();
                    row.props = Some(props);
                }
            }
            None => match owner.get(record.id.as_str()) {
                Some(holder) => plan.conflicts.push(UserConflict {
                    email: record.email.clone(),
                    id: record.id.clone(),
                    store_id: None,
                    other_email: Some(holder.clone()),
                }),
                None => {
                    let props = props.to_string();
                    plan.actions.push(UserAction::Insert {
                        id: record.id.to_string(),
                        email: record.email.clone(),
                        display_name: record.display_name.clone(),
                        props: props.clone(),
                    });
                    plan.added += 1;
                    owner.insert(record.id.to_string(), record.email.clone());
                    live.push(UserRow {
                        id: record.id.to_string(),
                        email: record.email.clone(),
                        display_name: record.display_name.clone(),
                        props: Some(props),
                    });
                }
            },
        }
    }

    for row in &live {
        if let Some(id) = UserId::parse(&row.id) {
            plan.ids.entry(normalize_email(&row.email)).or_insert(id);
        }
    }
    Ok(plan)
}

impl Report {
    fn new(
        opts: &Options,
        users: Option<&UsersFile>,
        store: StoreChanges,
        backups: Vec<PathBuf>,
        changed: bool,
    ) -> Report {
        let users_file_rewritten = changed && users.is_some_and(UsersFile::needs_rewrite);
        Report {
            changed,
            store: opts.store.clone(),
            users_file: opts.users.clone(),
            columns: store.columns,
            users_table: store.users_table,
            users_added: store.users_added,
            users_updated: store.users_updated,
            users_removed: store.users_removed,
            conflict_count: store.conflicts.len(),
            conflicts: store.conflicts,
            file_users: users.map_or(0, |u| u.users.len()),
            ids_filled: users.map_or(0, |u| u.ids_filled),
            merged: users.map(|u| u.merged.clone()).unwrap_or_default(),
            dropped_count: users.map_or(0, |u| u.dropped.len()),
            dropped: users.map(|u| u.dropped.clone()).unwrap_or_default(),
            users_file_rewritten,
            meta_table: store.meta_table,
            migrated_at: store.migrated_at,
            backups,
        }
    }
}

/// Several lines, without a trailing newline (callers `println!` it).
impl fmt::Display for Report {
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = String::new();
        self.write_text(&mut text)?;
        out.write_str(text.trim_end_matches('\n'))
    }
}

impl Report {
    fn write_text(&self, f: &mut String) -> fmt::Result {
        use std::fmt::Write as _;
        if !self.changed {
            match &self.users_file {
                Some(_) => writeln!(
                    f,
                    "nothing to do: store and users file are already migrated"
                )?,
                None => writeln!(f, "nothing to do: store is already migrated")?,
            }
            return self.write_conflicts(f);
        }

        writeln!(f, "migrated user identities in {}", self.store.display())?;
        for c in &self.columns {
            writeln!(
                f,
                "  {}.{}: {} rewritten, {} already ids, {} not e-mail",
                c.table, c.column, c.rewritten, c.already_ids, c.not_email
            )?;
        }
        if self.users_table {
            writeln!(
                f,
                "  users table: {} added, {} updated, {} removed",
                self.users_added,
                self.users_updated,
                count(self.users_removed, "duplicate row", "duplicate rows")
            )?;
        } else {
            writeln!(
                f,
                "  users table: none in this store (ltcai-style), not created"
            )?;
        }
        if let Some(path) = &self.users_file {
            let state = if self.users_file_rewritten {
                "rewritten"
            } else {
                "already migrated"
            };
            writeln!(
                f,
                "  users file {}: {state}, {}, {} filled",
                path.display(),
                count(self.file_users, "user", "users"),
                count(self.ids_filled, "id", "ids")
            )?;
            for m in &self.merged {
                writeln!(
                    f,
                    "    merged {} records of {} into {}",
                    m.records, m.email, m.id
                )?;
            }
            if !self.dropped.is_empty() {
                writeln!(
                    f,
                    "    dropped {} (not an object or no e-mail address): {}",
                    count(self.dropped_count, "entry", "entries"),
                    self.dropped.join(", ")
                )?;
            }
        }
        if let Some(at) = &self.migrated_at {
            writeln!(f, "  recorded {META_KEY} = {at} in {}", self.meta_table)?;
        }
        for backup in &self.backups {
            writeln!(f, "  backup: {}", backup.display())?;
        }
        self.write_conflicts(f)
    }

    fn write_conflicts(&self, f: &mut String) -> fmt::Result {
        use std::fmt::Write as _;
        if self.conflicts.is_empty() {
            return Ok(());
        }
        writeln!(
            f,
            "{} in the users table, store rows left as they are:",
            count(self.conflict_count, "conflict", "conflicts")
        )?;
        for c in &self.conflicts {
            match (&c.store_id, &c.other_email) {
                (Some(store_id), None) => writeln!(
                    f,
                    "  {}: the users file says {}, the store keeps {}",
                    c.email, c.id, store_id
                )?,
                (_, Some(other)) => writeln!(
                    f,
                    "  {}: id {} already belongs to {} in the store",
                    c.email, c.id, other
                )?,
                (None, None) => writeln!(f, "  {}: id {}", c.email, c.id)?,
            }
        }
        Ok(())
    }
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const SCHEMA: &str = include_str!("../../schema/0001_initial.sql");
    const ALICE_FILE_ID: &str = "user:00000000-0000-4000-8000-00000000a11c";
    const CAROL_FILE_ID: &str = "user:00000000-0000-4000-8000-0000000ca201";
    const BOB_STABLE: &str = "user:efb81798-4ac8-532b-8f66-ede02501248d";
    const DAVE_STABLE: &str = "user:559cd03c-f853-572e-a6dc-97c83d61a2cf";

    fn fixtures() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/legacy")
    }

    /// Every file in `dir` with its bytes: "nothing changed" means equal snapshots.
    fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
        fs::read_dir(dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let bytes = if path.is_dir() {
                    Vec::new()
                } else {
                    fs::read(&path).unwrap()
                };
                (name, bytes)
            })
            .collect()
    }

    /// Replaces `STABLE(address)` with the stable id of that address.
    fn expand(text: &str) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("STABLE(") {
            out.push_str(&rest[..start]);
            let after = &rest[start + "STABLE(".len()..];
            let end = after.find(')').unwrap();
            out.push_str(UserId::for_email(&after[..end]).as_str());
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }

    fn parse(input: &str) -> UsersFile {
        UsersFile::parse(Path::new("users.json"), input.as_bytes().to_vec()).unwrap()
    }

    fn check_merge(input: &str, expected: &str) {
        let file = parse(input);
        let out = String::from_utf8(file.render().unwrap()).unwrap();
        assert_eq!(out, expand(expected), "input {input:?}");
        assert_eq!(file.needs_rewrite(), input != out, "input {input:?}");
    }

    #[test]
    fn users_file_merge() {
        // Duplicates by case and padding: one record, the first id wins, later fields win.
        check_merge(
            r#"{"A@X.com":{"id":"user:1"},"a@x.com ":{"id":"user:2","name":"n"}}"#,
            r#"{"a@x.com":{"id":"user:1","name":"n","email":"a@x.com"}}"#,
        );
        check_merge(
            r#"{"a@x":{"id":"user:a","role":"r1","x":1},"A@X":{"role":"r2","y":2}}"#,
            r#"{"a@x":{"id":"user:a","role":"r2","x":1,"y":2,"email":"a@x"}}"#,
        );
        // The first id the file gives, even when the first record has none.
        check_merge(
            r#"{"a@x":{"name":"first"},"A@x":{"id":"user:second"},"a@X":{"id":"user:third"}}"#,
            r#"{"a@x":{"name":"first","id":"user:second","email":"a@x"}}"#,
        );
        // api_keys are merged key by key, later keys win.
        check_merge(
            r#"{"a@x":{"api_keys":{"k1":"1","k2":"2"},"id":"user:a"}," A@x":{"api_keys":{"k2":"two","k3":"3"}}}"#,
            r#"{"a@x":{"api_keys":{"k1":"1","k2":"two","k3":"3"},"id":"user:a","email":"a@x"}}"#,
        );
        // Entries that are not objects, or have no address, are dropped.
        check_merge(
            r#"{"a@x":"nope","b@y":{"id":"user:b"},"c@z":[1],"d@w":null,"admin":{"role":"root"}}"#,
            r#"{"b@y":{"id":"user:b","email":"b@y"}}"#,
        );
        // Missing ids, and ids that are not user ids, become the stable id.
        check_merge(
            r#"{"b@y":{"name":"B"}}"#,
            r#"{"b@y":{"name":"B","email":"b@y","id":"STABLE(b@y)"}}"#,
        );
        check_merge(
            r#"{"a@x":{"id":"a@x"},"b@y":{"id":7}}"#,
            r#"{"a@x":{"id":"STABLE(a@x)","email":"a@x"},"b@y":{"id":"STABLE(b@y)","email":"b@y"}}"#,
        );
        // A key that is not an address: the record's `email` names the user.
        check_merge(
            r#"{"legacy-1":{"email":" Dan@X.org","id":"user:d"}}"#,
            r#"{"dan@x.org":{"email":"dan@x.org","id":"user:d"}}"#,
        );
        // Key order is first appearance.
        check_merge(
            r#"{"z@x":{"id":"user:z"},"a@x":{"id":"user:a"},"Z@x":{"role":"r"}}"#,
            r#"{"z@x":{"id":"user:z","role":"r","email":"z@x"},"a@x":{"id":"user:a","email":"a@x"}}"#,
        );
        // Already migrated: nothing to rewrite.
        check_merge(
            r#"{"a@x":{"id":"user:a","email":"a@x"}}"#,
            r#"{"a@x":{"id":"user:a","email":"a@x"}}"#,
        );
        check_merge("{}", "{}");
    }

    #[test]
    fn users_file_format_is_kept() {
        check_merge(
            "{\n    \"a@x\": {\n        \"id\": \"user:a\"\n    }\n}\n",
            "{\n    \"a@x\": {\n        \"id\": \"user:a\",\n        \"email\": \"a@x\"\n    }\n}\n",
        );
        check_merge(
            "{\n\t\"a@x\": {\"id\": \"user:a\"}\n}",
            "{\n\t\"a@x\": {\n\t\t\"id\": \"user:a\",\n\t\t\"email\": \"a@x\"\n\t}\n}",
        );
        check_merge(
            "{\"a@x\":{\"id\":\"user:a\"}}\n",
            "{\"a@x\":{\"id\":\"user:a\",\"email\":\"a@x\"}}\n",
        );
        // Pretty but nothing indented: two spaces.
        check_merge(
            "{\n\"a@x\": {\"id\": \"user:a\"}\n}",
            "{\n  \"a@x\": {\n    \"id\": \"user:a\",\n    \"email\": \"a@x\"\n  }\n}",
        );
    }

    fn check_merge_report(
        input: &str,
        merged: &[(&str, usize, &str)],
        dropped: &[&str],
        filled: usize,
    ) {
        let file = parse(input);
        let got: Vec<(&str, usize, &str)> = file
            .merged
            .iter()
            .map(|m| (m.email.as_str(), m.records, m.id.as_str()))
            .collect();
        assert_eq!(got, merged, "input {input:?}");
        assert_eq!(file.dropped, dropped, "input {input:?}");
        assert_eq!(file.ids_filled, filled, "input {input:?}");
    }

    #[test]
    fn users_file_merge_report() {
        check_merge_report(
            r#"{"A@x":{},"b@y":{"id":"user:b"}," a@x":{"id":"user:a"},"a@X":{}}"#,
            &[("a@x", 3, "user:a")],
            &[],
            0,
        );
        check_merge_report(r#"{"a@x":1,"b@y":{},"c":{}}"#, &[], &["a@x", "c"], 1);
    }

    fn check_record(input: &str, display_name: Option<&str>, props: &str) {
        let file = parse(input);
        let record = &file.users[0];
        assert_eq!(
            record.display_name.as_deref(),
            display_name,
            "input {input:?}"
        );
        assert_eq!(
            Value::Object(record.props.clone()).to_string(),
            props,
            "input {input:?}"
        );
    }

    #[test]
    fn users_table_record() {
        // api_keys are secrets and never reach the store.
        check_record(
            r#"{"a@x":{"name":"Al","role":"r","api_keys":{"k":"s"},"id":"user:a"}}"#,
            Some("Al"),
            r#"{"role":"r"}"#,
        );
        check_record(
            r#"{"a@x":{"name":"n","display_name":"D"}}"#,
            Some("D"),
            r#"{"name":"n"}"#,
        );
        check_record(r#"{"a@x":{"name":3}}"#, None, r#"{"name":3}"#);
    }

    fn check_backup(original: &str, taken: &[&str], expected: &str) {
        let got = backup_path(Path::new(original), "20261121T082000Z", |p| {
            taken.iter().any(|t| Path::new(t) == p)
        });
        assert_eq!(
            got,
            Path::new(expected),
            "original {original:?}, taken {taken:?}"
        );
    }

    #[test]
    fn backup_names() {
        check_backup(
            "d/brain.db",
            &[],
            "d/brain.pre-user-uuid.20261121T082000Z.db",
        );
        check_backup(
            "d/brain.db",
            &["d/brain.pre-user-uuid.20261121T082000Z.db"],
            "d/brain.pre-user-uuid.20261121T082000Z-1.db",
        );
        check_backup(
            "d/brain.db",
            &[
                "d/brain.pre-user-uuid.20261121T082000Z.db",
                "d/brain.pre-user-uuid.20261121T082000Z-1.db",
            ],
            "d/brain.pre-user-uuid.20261121T082000Z-2.db",
        );
        check_backup(
            "users.json",
            &[],
            "users.pre-user-uuid.20261121T082000Z.json",
        );
        check_backup("d/store", &[], "d/store.pre-user-uuid.20261121T082000Z");
    }

    fn column(
        table: &str,
        column: &str,
        rewritten: u64,
        already_ids: u64,
        not_email: u64,
    ) -> ColumnReport {
        ColumnReport {
            table: table.to_owned(),
            column: column.to_owned(),
            rewritten,
            already_ids,
            not_email,
        }
    }

    fn values(path: &Path, table: &str, column: &str) -> Vec<Option<String>> {
        let conn = Connection::open(path).unwrap();
        let sql = format!("SELECT {column} FROM {table} ORDER BY rowid");
        let mut stmt = conn.prepare(&sql).unwrap();
        stmt.query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn meta_value(path: &Path, table: &str) -> Option<String> {
        let conn = Connection::open(path).unwrap();
        conn.query_row(
            &format!("SELECT value FROM {table} WHERE key = ?1"),
            [META_KEY],
            |row| row.get(0),
        )
        .optional()
        .unwrap()
    }

    fn store_needed(path: &Path) -> bool {
        needed(&Connection::open(path).unwrap()).unwrap()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    /// The ltcai fixture store and users file, copied into a temporary directory.
    fn ltcai_copy(dir: &Path) -> Options {
        for name in ["ltcai.db", "users.json"] {
            fs::copy(fixtures().join(name), dir.join(name)).unwrap();
        }
        Options {
            store: dir.join("ltcai.db"),
            users: Some(dir.join("users.json")),
        }
    }

    #[test]
    fn ltcai_store_and_users_file() {
        let dir = tempfile::tempdir().unwrap();
        let opts = ltcai_copy(dir.path());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let users = opts.users.as_ref().unwrap();
            fs::set_permissions(users, fs::Permissions::from_mode(0o600)).unwrap();
        }
        let before = snapshot(dir.path());
        assert!(store_needed(&opts.store));

        let report = run(&opts).unwrap();
        assert!(report.changed);
        assert_eq!(
            report.columns,
            [
                column("nodes_v2", "owner_id", 5, 1, 3),
                column("edges_v2", "created_by", 2, 1, 1),
                column("ingestion_provenance", "owner", 3, 0, 2),
            ]
        );
        assert!(!report.users_table);
        assert_eq!(report.meta_table, "kg_meta");
        assert_eq!(
            report.merged,
            [MergedUser {
                email: "alice@example.com".to_owned(),
                records: 2,
                id: UserId::parse(ALICE_FILE_ID).unwrap(),
            }]
        );
        assert_eq!(report.dropped, ["broken@example.com"]);
        assert_eq!(report.dropped_count, 1);
        assert_eq!(report.file_users, 3);
        assert_eq!(report.ids_filled, 1);
        assert!(report.users_file_rewritten);

        // The users file is exactly the expected one, with its permissions.
        assert_eq!(
            String::from_utf8(fs::read(opts.users.as_ref().unwrap()).unwrap()).unwrap(),
            String::from_utf8(fs::read(fixtures().join("expected.json")).unwrap()).unwrap()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for path in [opts.users.as_ref().unwrap(), &report.backups[1]] {
                let mode = fs::metadata(path).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", path.display());
            }
        }

        let alice = s(ALICE_FILE_ID);
        assert_eq!(
            values(&opts.store, "nodes_v2", "owner_id"),
            [
                alice.clone(),
                alice.clone(),
                s(BOB_STABLE),
                s(BOB_STABLE),
                s(CAROL_FILE_ID),
                s("system"),
                s(""),
                None,
                s(DAVE_STABLE),
            ]
        );
        assert_eq!(
            values(&opts.store, "edges_v2", "created_by"),
            [alice.clone(), s(BOB_STABLE), s("system"), s(BOB_STABLE)]
        );
        assert_eq!(
            values(&opts.store, "ingestion_provenance", "owner"),
            [alice, s(BOB_STABLE), s("system"), s(""), s(DAVE_STABLE)]
        );
        assert_eq!(meta_value(&opts.store, "kg_meta"), report.migrated_at);
        assert!(report.migrated_at.is_some());
        assert!(!store_needed(&opts.store));
        assert!(
            table_columns(&Connection::open(&opts.store).unwrap(), "users")
                .unwrap()
                .is_none()
        );

        // Backups: the store as it was, the users file byte for byte, and nothing else new.
        assert_eq!(report.backups.len(), 2);
        let names: Vec<String> = report
            .backups
            .iter()
            .map(|b| b.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(
            names[0].starts_with("ltcai.pre-user-uuid.") && names[0].ends_with(".db"),
            "{names:?}"
        );
        assert!(
            names[1].starts_with("users.pre-user-uuid.") && names[1].ends_with(".json"),
            "{names:?}"
        );
        assert_eq!(fs::read(&report.backups[1]).unwrap(), before["users.json"]);
        assert_eq!(
            values(&report.backups[0], "nodes_v2", "owner_id")[0],
            s("  Alice@Example.COM ")
        );
        let after = snapshot(dir.path());
        let mut expected_names: Vec<String> = before.keys().cloned().chain(names).collect();
        expected_names.sort();
        assert_eq!(after.keys().cloned().collect::<Vec<_>>(), expected_names);

        // Second run: nothing to do, nothing touched, no new backup.
        let again = run(&opts).unwrap();
        assert!(!again.changed);
        assert!(again.backups.is_empty());
        assert!(again.migrated_at.is_none());
        assert_eq!(
            again.columns,
            [
                column("nodes_v2", "owner_id", 0, 6, 3),
                column("edges_v2", "created_by", 0, 3, 1),
                column("ingestion_provenance", "owner", 0, 3, 2),
            ]
        );
        assert_eq!(snapshot(dir.path()), after);
        assert_eq!(
            again.to_string(),
            "nothing to do: store and users file are already migrated"
        );
    }

    #[test]
    fn report_json_shape() {
        let dir = tempfile::tempdir().unwrap();
        let report = run(&ltcai_copy(dir.path())).unwrap();
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["changed"], true);
        assert_eq!(
            json["columns"][0],
            serde_json::json!({
                "table": "nodes_v2", "column": "owner_id",
                "rewritten": 5, "already_ids": 1, "not_email": 3,
            })
        );
        assert_eq!(
            json["merged"],
            serde_json::json!([{"email": "alice@example.com", "records": 2, "id": ALICE_FILE_ID}])
        );
        assert_eq!(json["dropped"], serde_json::json!(["broken@example.com"]));
        assert_eq!(json["users_table"], false);
        assert_eq!(json["backups"].as_array().unwrap().len(), 2);
        let text = report.to_string();
        assert!(
            text.contains("nodes_v2.owner_id: 5 rewritten, 1 already ids, 3 not e-mail"),
            "{text}"
        );
        assert!(
            text.contains("merged 2 records of alice@example.com"),
            "{text}"
        );
    }

    /// Rows in our schema: addresses padded and in mixed case, ids, sentinels, and an old
    /// `users` row keyed by an address.
    const OURS_ROWS: &str = "
        INSERT INTO meta VALUES ('schema_version', '1');
        INSERT INTO users VALUES ('Bob@Example.org', 'bob@example.org', 'Bob', '{}', 't', 't');
        INSERT INTO roots (path, added_by, added_at) VALUES
            ('/notes', '  Alice@Example.COM ', 't'), ('/work', 'system', 't');
        INSERT INTO nodes (id, kind, key, owner_id, valid_from, created_at, updated_at) VALUES
            ('n1', 'note', 'a', 'alice@example.com', 't', 't', 't'),
            ('n2', 'note', 'b', 'user:efb81798-4ac8-532b-8f66-ede02501248d', 't', 't', 't'),
            ('n3', 'note', 'c', 'system', 't', 't', 't'),
            ('n4', 'note', 'd', '', 't', 't', 't'),
            ('n5', 'note', 'e', 'Dave@Example.net', 't', 't', 't');
        INSERT INTO edges (id, src_id, dst_id, type, created_by, valid_from, created_at) VALUES
            ('e1', 'n1', 'n2', 'links_to', 'BOB@example.org', 't', 't');
        INSERT INTO provenance (node_id, extractor, extractor_version, actor_id, recorded_at) VALUES
            ('n1', 'md', '1', 'alice@example.com', 't'), ('n2', 'md', '1', 'system', 't');
        INSERT INTO workflow_definitions VALUES ('h', 'wf', '{}', 't');
        INSERT INTO workflow_runs (id, definition_hash, status, workspace, actor_id, created_at, updated_at)
            VALUES ('r1', 'h', 'running', '/w', 'alice@example.com', 't', 't');
        INSERT INTO workflow_waits (id, run_id, step_key, step_id, token_hash, status, resolved_by, created_at)
            VALUES ('w1', 'r1', 's', 's', 'x', 'resumed', 'bob@example.org', 't'),
                   ('w2', 'r1', 's2', 's2', 'y', 'open', NULL, 't');
        INSERT INTO workflow_triggers (name, definition_hash, event, pattern, created_by, created_at)
            VALUES ('t1', 'h', 'schedule', 'daily', 'Alice@example.com', 't');
    ";

    const OURS_USERS: &str = r#"{
  "Alice@Example.com": {"id": "user:00000000-0000-4000-8000-00000000a11c", "name": "Alice", "api_keys": {"k": "secret"}},
  "bob@example.org": {"name": "Bob Builder", "role": "member"},
  "carol@example.net": {"display_name": "Carol"}
}
"#;

    fn ours_store(dir: &Path, rows: &str) -> PathBuf {
        let path = dir.join("brain.db");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(rows).unwrap();
        path
    }

    fn users_rows(path: &Path) -> Vec<(String, String, Option<String>, String)> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT id, email, display_name, props FROM users ORDER BY email")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    #[test]
    fn our_store_with_users_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = ours_store(dir.path(), OURS_ROWS);
        let users = dir.path().join("users.json");
        fs::write(&users, OURS_USERS).unwrap();
        let opts = Options {
            store: store.clone(),
            users: Some(users.clone()),
        };
        assert!(store_needed(&store));

        let report = run(&opts).unwrap();
        assert!(report.changed);
        assert_eq!(
            report.columns,
            [
                column("roots", "added_by", 1, 0, 1),
                column("nodes", "owner_id", 2, 1, 2),
                column("edges", "created_by", 1, 0, 0),
                column("provenance", "actor_id", 1, 0, 1),
                column("workflow_runs", "actor_id", 1, 0, 0),
                column("workflow_waits", "resolved_by", 1, 0, 1),
                column("workflow_triggers", "created_by", 1, 0, 0),
                column("users", "id", 1, 0, 0),
            ]
        );
        assert!(report.users_table);
        assert_eq!(
            (
                report.users_added,
                report.users_updated,
                report.users_removed
            ),
            (2, 1, 0)
        );
        assert!(report.conflicts.is_empty());
        assert_eq!(report.meta_table, "meta");

        let alice = s(ALICE_FILE_ID);
        assert_eq!(
            values(&store, "roots", "added_by"),
            [alice.clone(), s("system")]
        );
        assert_eq!(
            values(&store, "nodes", "owner_id"),
            [
                alice.clone(),
                s(BOB_STABLE),
                s("system"),
                s(""),
                s(DAVE_STABLE)
            ]
        );
        assert_eq!(values(&store, "edges", "created_by"), [s(BOB_STABLE)]);
        assert_eq!(
            values(&store, "provenance", "actor_id"),
            [alice.clone(), s("system")]
        );
        assert_eq!(
            values(&store, "workflow_runs", "actor_id"),
            std::slice::from_ref(&alice)
        );
        assert_eq!(
            values(&store, "workflow_waits", "resolved_by"),
            [s(BOB_STABLE), None]
        );
        assert_eq!(values(&store, "workflow_triggers", "created_by"), [alice]);
        let carol = UserId::for_email("carol@example.net").to_string();
        assert_eq!(
            users_rows(&store),
            [
                (
                    ALICE_FILE_ID.to_owned(),
                    "alice@example.com".to_owned(),
                    s("Alice"),
                    "{}".to_owned()
                ),
                (
                    BOB_STABLE.to_owned(),
                    "bob@example.org".to_owned(),
                    s("Bob Builder"),
                    r#"{"role":"member"}"#.to_owned()
                ),
                (
                    carol,
                    "carol@example.net".to_owned(),
                    s("Carol"),
                    "{}".to_owned()
                ),
            ]
        );
        assert_eq!(meta_value(&store, "meta"), report.migrated_at);
        assert!(!store_needed(&store));

        let after = snapshot(dir.path());
        let again = run(&opts).unwrap();
        assert!(!again.changed, "{again}");
        assert_eq!(snapshot(dir.path()), after);
    }

    #[test]
    fn users_table_conflict_keeps_the_store_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = ours_store(
            dir.path(),
            "INSERT INTO users VALUES ('user:old-alice', 'alice@example.com', 'A', '{}', 't', 't');
             INSERT INTO roots (path, added_by, added_at) VALUES ('/n', 'Alice@example.com', 't');",
        );
        let users = dir.path().join("users.json");
        fs::write(
            &users,
            format!(r#"{{"alice@example.com":{{"id":"{ALICE_FILE_ID}","name":"A"}}}}"#),
        )
        .unwrap();
        let opts = Options {
            store: store.clone(),
            users: Some(users),
        };
        let report = run(&opts).unwrap();
        let conflict = UserConflict {
            email: "alice@example.com".to_owned(),
            id: UserId::parse(ALICE_FILE_ID).unwrap(),
            store_id: s("user:old-alice"),
            other_email: None,
        };
        assert_eq!(report.conflicts, std::slice::from_ref(&conflict));
        assert_eq!(report.conflict_count, 1);
        // The users file decides the columns; the users table keeps its row.
        assert_eq!(values(&store, "roots", "added_by"), [s(ALICE_FILE_ID)]);
        assert_eq!(values(&store, "users", "id"), [s("user:old-alice")]);

        let again = run(&opts).unwrap();
        assert!(!again.changed);
        assert_eq!(again.conflicts, [conflict]);
        assert!(
            again.to_string().contains("the store keeps user:old-alice"),
            "{again}"
        );
    }

    #[test]
    fn users_table_ids_without_users_file() {
        let dir = tempfile::tempdir().unwrap();
        let alice_stable = UserId::for_email("alice@example.com").to_string();
        let store = ours_store(
            dir.path(),
            &format!(
                "INSERT INTO users VALUES ('user:old-carol', 'carol@example.net', NULL, '{{}}', 't', 't');
                 INSERT INTO users VALUES ('{alice_stable}', 'alice@example.com', NULL, '{{}}', 't', 't');
                 INSERT INTO users VALUES ('alice@example.com', 'Alice@example.com', NULL, '{{}}', 't', 't');
                 INSERT INTO users VALUES ('dave@example.net', 'dave@example.net', NULL, '{{}}', 't', 't');
                 INSERT INTO roots (path, added_by, added_at) VALUES
                     ('/a', 'Carol@example.net', 't'), ('/b', 'alice@example.com', 't');"
            ),
        );
        let report = run(&Options {
            store: store.clone(),
            users: None,
        })
        .unwrap();
        assert!(report.changed);
        // A store migrated before keeps its ids; a leftover row keyed by an address goes.
        assert_eq!(
            values(&store, "roots", "added_by"),
            [s("user:old-carol"), s(&alice_stable)]
        );
        assert_eq!(report.users_removed, 1);
        assert_eq!(
            values(&store, "users", "id"),
            [s("user:old-carol"), s(&alice_stable), s(DAVE_STABLE)]
        );
        assert_eq!(report.columns.last(), Some(&column("users", "id", 1, 2, 0)));
        assert_eq!(report.backups.len(), 1);
        assert!(!run(&Options { store, users: None }).unwrap().changed);
    }

    #[test]
    fn clean_store_records_the_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = ours_store(dir.path(), "");
        assert!(!store_needed(&store));
        let opts = Options {
            store: store.clone(),
            users: None,
        };
        let report = run(&opts).unwrap();
        assert!(report.changed);
        assert_eq!(report.backups.len(), 1);
        assert!(report.backups[0].exists());
        assert!(meta_value(&store, "meta").is_some());
        let after = snapshot(dir.path());
        let again = run(&opts).unwrap();
        assert!(!again.changed);
        assert_eq!(
            again.to_string(),
            "nothing to do: store is already migrated"
        );
        assert_eq!(snapshot(dir.path()), after);
    }

    #[test]
    fn needed_on_rows_without_the_key() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        assert!(!needed(&conn).unwrap());
        conn.execute(
            "INSERT INTO roots (path, added_by, added_at) VALUES ('/a', ?1, 't')",
            [BOB_STABLE],
        )
        .unwrap();
        assert!(needed(&conn).unwrap());
        conn.execute("INSERT INTO meta VALUES (?1, 't')", [META_KEY])
            .unwrap();
        assert!(!needed(&conn).unwrap());
        conn.execute("UPDATE roots SET added_by = 'a b@c'", [])
            .unwrap();
        assert!(!needed(&conn).unwrap());
        conn.execute("UPDATE roots SET added_by = ' Bob@Example.org'", [])
            .unwrap();
        assert!(needed(&conn).unwrap());
    }

    #[test]
    fn migrate_connection_for_the_daemon() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(SCHEMA).unwrap();
        conn.execute_batch(OURS_ROWS).unwrap();
        assert!(plan_store(&conn, None).unwrap().needs_write());
        let changes = migrate_connection(&mut conn, None).unwrap();
        assert!(changes.has_changes());
        assert!(changes.migrated_at.is_some());
        assert!(!needed(&conn).unwrap());
        let again = migrate_connection(&mut conn, None).unwrap();
        assert!(!again.has_changes());
        assert!(again.migrated_at.is_none());
    }

    /// A link edge at schema 0014 names its acting user through the file version it cites: the
    /// version's address becomes the id, and so does one written out on the edge.
    #[test]
    fn an_edge_without_its_own_user_answers_the_id_of_its_version() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::store::migrations::apply(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO roots(id, path, added_by, added_at) VALUES (1, '/v', 'Bob@Example.org', 't');
             INSERT INTO sources(id, root_id, rel_path, file_type, status, first_seen_at, last_seen_at)
                 VALUES (1, 1, 'a.md', 'markdown', 'indexed', 't', 't');
             INSERT INTO source_versions(id, source_id, content_hash, extractor, extractor_version, actor_id, recorded_at)
                 VALUES (1, 1, 'h1', 'md', '1', 'Bob@Example.org', 't'),
                        (2, 1, 'h2', 'md', '1', 'alice@example.com', 't');
             INSERT INTO nodes(id, kind, key, owner_id, source_id, valid_from, created_at, updated_at)
                 VALUES ('n', 'note', 'source:1', 'bob@example.org', 1, 't', 't', 't');
             INSERT INTO edges(id, src_id, dst_id, type, key, created_by, valid_from, cite_version)
                 VALUES ('derived', 'n', 'n', 'links_to', 'k#1', NULL, 't', 1),
                        ('kept', 'n', 'n', 'links_to', 'k#2', ' BOB@example.org', 't', 2);",
        )
        .unwrap();
        let changes = migrate_connection(&mut conn, None).unwrap();
        assert!(changes.has_changes());
        let actors: Vec<(String, String)> = conn
            .prepare(&format!(
                "SELECT {} FROM edges e ORDER BY e.id",
                crate::graph::edge_columns!()
            ))
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(5)?)))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert_eq!(
            actors,
            [
                ("derived".to_owned(), BOB_STABLE.to_owned()),
                ("kept".to_owned(), BOB_STABLE.to_owned())
            ]
        );
    }

    /// Runs on a broken setup and checks the error kind and that no file changed or appeared.
    fn check_bad(break_it: impl FnOnce(&Path, &mut Options), kind: &str) {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = ltcai_copy(dir.path());
        break_it(dir.path(), &mut opts);
        let before = snapshot(dir.path());
        let err = run(&opts).unwrap_err();
        assert_eq!(err.kind(), kind, "{err}");
        assert_eq!(snapshot(dir.path()), before, "{err}");
    }

    #[test]
    fn bad_input_changes_nothing() {
        check_bad(|dir, o| o.store = dir.join("missing.db"), "store_missing");
        check_bad(
            |_, o| fs::write(&o.store, "not a database, just some text\n".repeat(100)).unwrap(),
            "store_corrupt",
        );
        check_bad(|_, o| fs::write(&o.store, "x").unwrap(), "store_corrupt");
        check_bad(|_, o| fs::write(&o.store, "").unwrap(), "store_corrupt");
        check_bad(
            |_, o| {
                // A real header followed by garbage: sqlite itself has to notice.
                let mut bytes = fs::read(&o.store).unwrap();
                bytes[16..].fill(0xA5);
                fs::write(&o.store, bytes).unwrap();
            },
            "store_corrupt",
        );
        check_bad(
            |dir, o| {
                fs::create_dir(dir.join("dir.db")).unwrap();
                o.store = dir.join("dir.db");
            },
            "store_corrupt",
        );
        check_bad(
            |dir, o| {
                let path = dir.join("other.db");
                Connection::open(&path)
                    .unwrap()
                    .execute_batch("CREATE TABLE t (x)")
                    .unwrap();
                o.store = path;
            },
            "store_unknown",
        );
        check_bad(
            |dir, o| o.users = Some(dir.join("missing.json")),
            "users_file_missing",
        );
        check_bad(
            |_, o| fs::write(o.users.as_ref().unwrap(), "{\"a@x\": {").unwrap(),
            "users_file_not_json",
        );
        check_bad(
            |_, o| fs::write(o.users.as_ref().unwrap(), r#"[{"email": "a@x"}]"#).unwrap(),
            "users_file_not_object",
        );
    }

    #[test]
    fn error_messages_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut opts = ltcai_copy(dir.path());
        fs::write(opts.users.as_ref().unwrap(), "[]").unwrap();
        let err = run(&opts).unwrap_err().to_string();
        assert!(
            err.contains("users.json") && err.contains("found an array"),
            "{err}"
        );
        opts.store = dir.path().join("nope.db");
        let err = run(&opts).unwrap_err().to_string();
        assert!(
            err.starts_with("store not found at ") && err.ends_with("nope.db"),
            "{err}"
        );
    }
}
