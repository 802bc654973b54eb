//! The SQLite store: the only ground truth.
//!
//! Owns opening (pragmas, migrations), the single write connection and a pool of read
//! connections. Architecture Invariant: every mutation goes through [`Store::write`], which
//! serializes writers on one connection; readers never wait on it (WAL). This module knows
//! nothing about tokio, sockets or JSON-RPC; callers on async threads must hop to a blocking
//! thread first.

pub mod edge_id;
pub mod edge_props;
pub mod history;
mod index_audit;
pub mod migrations;
pub mod part_id;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior};

use crate::clock;
use crate::identity::UserId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to open store at {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("failed to create directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("migration {name} failed: {source}")]
    Migration {
        name: String,
        source: rusqlite::Error,
    },
    #[error(
        "store has schema version {found}, this build supports up to {supported}; upgrade brain"
    )]
    TooNew { found: u32, supported: u32 },
    #[error("store is not a brain store or is corrupt: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Sqlite(#[from] rusqlite::Error),
}

/// How long a connection waits for a lock held by another process (an offline tool, say)
/// before giving up. Our own writers are serialized by a mutex and never contend here.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Prepared statements kept per connection: more than the ingest and query paths use.
const STATEMENT_CACHE: usize = 256;

/// Read connections kept open for reuse; more are opened on demand and dropped after use.
const READ_POOL_SIZE: usize = 8;

pub struct Store {
    path: PathBuf,
    // std Mutex, not tokio's: the writer is only ever used from blocking threads, and a guard
    // is never held across an await.
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

impl Store {
    /// Opens (creating if needed) the store at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let mut conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_owned(),
            source,
        })?;
        configure(&conn).map_err(|e| corrupt_or(path, e))?;
        migrations::apply(&mut conn)?;
        Ok(Store {
            path: path.to_owned(),
            writer: Mutex::new(conn),
            readers: Mutex::new(Vec::new()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` inside one IMMEDIATE transaction on the write connection and commits it.
    /// If `f` fails, nothing it did is kept.
    pub fn write<T, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<rusqlite::Error>,
    {
        // A poisoned lock means a writer panicked mid-closure; its transaction was rolled back
        // when the guard unwound, so the connection is still consistent and safe to reuse.
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        in_transaction(&mut conn, f)
    }

    /// Runs `f` like [`Store::write`], with the store's triggers and foreign-key checks off for
    /// that one transaction, for a writer that does itself what they do: it queues the notes
    /// it changes for search, and refers only to rows it has just written or read in the same
    /// transaction. Both come back on when the transaction ends, committed or not; no other
    /// writer can run meanwhile, since there is one write connection behind a mutex.
    ///
    /// Why: the triggers (schema 0003) make SQLite keep a statement journal for every insert
    /// into `nodes` and `edges` (a copy of each page the statement touches, in case it must be
    /// undone alone), and every foreign key is a lookup per row; the ingest of a batch of files
    /// pays both about 40 times per file. Measured on obsidian-hub's cold ingest (6.5k notes),
    /// medians of paired runs: triggers off 8.8 → 7.8 s (six each); foreign keys off as well,
    /// 7.39 → 6.94 s (twelve each).
    pub fn write_bulk<T, E>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T, E>) -> Result<T, E>
    where
        E: From<rusqlite::Error>,
    {
        let mut conn = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let checks = ChecksOff::new(&mut conn)?;
        in_transaction(checks.0, f)
    }

    /// Runs `f` on a read connection from the pool.
    pub fn read<T, E>(&self, f: impl FnOnce(&Connection) -> Result<T, E>) -> Result<T, E>
    where
        E: From<rusqlite::Error>,
    {
        let pooled = self.readers.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
                    | OpenFlags::SQLITE_OPEN_NO_MUTEX
                    | OpenFlags::SQLITE_OPEN_URI;
                let c = Connection::open_with_flags(&self.path, flags)?;
                configure_any(&c)?;
                c
            }
        };
        let out = f(&conn);
        let mut pool = self.readers.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < READ_POOL_SIZE {
            pool.push(conn);
        }
        out
    }

    /// Frees what the page caches hold once a burst of work is over: the write connection's,
    /// unless a write is running, and the pooled read connections', which are closed (the next
    /// read opens one). The pages come back from disk, or the OS's file cache, as they are
    /// needed again.
    pub fn release_memory(&self) {
        let writer = match self.writer.try_lock() {
            Ok(conn) => Some(conn),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        if let Some(conn) = writer
            && let Err(e) = conn.execute_batch("PRAGMA shrink_memory")
        {
            tracing::debug!(error = %e, "could not shrink the write connection's cache");
        }
        self.readers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Bytes on disk: the database plus its write-ahead log.
    pub fn size_bytes(&self) -> u64 {
        let wal = PathBuf::from(format!("{}-wal", self.path.display()));
        [self.path.as_path(), wal.as_path()]
            .iter()
            .filter_map(|p| std::fs::metadata(p).ok())
            .map(|m| m.len())
            .sum()
    }
}

/// Runs `f` inside one IMMEDIATE transaction on `conn` and commits it; if `f` fails, nothing
/// it did is kept.
fn in_transaction<T, E>(
    conn: &mut Connection,
    f: impl FnOnce(&Transaction<'_>) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<rusqlite::Error>,
{
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let out = f(&tx)?;
    tx.commit()?;
    Ok(out)
}

/// Keeps the write connection's triggers and foreign-key checks off while it lives, and turns
/// them on again when dropped, after the transaction it encloses has ended, whether by commit,
/// error or panic.
struct ChecksOff<'c>(&'c mut Connection);

impl<'c> ChecksOff<'c> {
    fn new(conn: &'c mut Connection) -> rusqlite::Result<ChecksOff<'c>> {
        // `PRAGMA foreign_keys` is a no-op inside a transaction: this runs before it begins.
        conn.pragma_update(None, "foreign_keys", false)?;
        let off = ChecksOff(conn);
        off.0
            .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
        Ok(off)
    }
}

impl Drop for ChecksOff<'_> {
    fn drop(&mut self) {
        // Neither can fail on an open connection outside a transaction; if one ever did, the
        // next writer would go unchecked or unqueued, so it is logged loudly.
        if let Err(e) = self
            .0
            .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true)
        {
            tracing::error!(error = %e, "could not turn the store's triggers back on");
        }
        if let Err(e) = self.0.pragma_update(None, "foreign_keys", true) {
            tracing::error!(error = %e, "could not turn foreign-key checks back on");
        }
    }
}

/// What every connection gets, the read-only ones included.
fn configure_any(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // rusqlite keeps 16 prepared statements by default; writing one file's facts uses about
    // 40, so most were compiled again for every file.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// The write connection's settings, which also bring a new store into WAL mode.
fn configure(conn: &Connection) -> rusqlite::Result<()> {
    configure_any(conn)?;
    // Only a store without tables takes this at once (a new one); an older store keeps its
    // mode until `brain compact` rewrites it (`Store::compact`). Incremental, not full: pages
    // are given back in one go after a large deletion (`Store::reclaim`), not on every commit.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    // WAL lets readers run beside the writer. synchronous=NORMAL is crash-safe in WAL mode (a
    // killed process loses nothing committed); only a power cut can drop the last commits.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    // A 16 MiB page cache (the default is 2 MiB): a big vault's graph outgrows the default at
    // once and every miss is a pread. Measured on obsidian-hub's cold ingest: 2 MiB 56 s,
    // 16 MiB 15 s at 101 MiB peak RSS; 64 MiB plus a 256 MiB mmap was 12 s but 341 MiB, too
    // much for a background daemon. Per connection; it costs memory only as pages are touched.
    conn.pragma_update(None, "cache_size", -16_384)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoint the WAL every ~40 MB instead of every 4 MB: a long ingest copies pages back
    // into the database a tenth as often (obsidian-hub cold ingest 15.2 s → 12.2-13.4 s).
    conn.pragma_update(None, "wal_autocheckpoint", 10_000)?;
    Ok(())
}

fn corrupt_or(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => {
            StoreError::Corrupt(format!("{}: {e}", path.display()))
        }
        _ => StoreError::Open {
            path: path.to_owned(),
            source: e,
        },
    }
}

/// Reads a value from the meta table.
pub fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

pub fn meta_set(tx: &Transaction<'_>, key: &str, value: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO meta(key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        [key, value],
    )?;
    Ok(())
}

/// Makes sure the acting user has a row. An existing row for the e-mail keeps its id, which is
/// what a users file may have assigned; that id is returned.
pub fn ensure_user(tx: &Transaction<'_>, id: &UserId, email: &str) -> rusqlite::Result<UserId> {
    let now = clock::now();
    tx.execute(
        "INSERT INTO users(id, email, created_at, updated_at) VALUES (?1, ?2, ?3, ?3)
         ON CONFLICT DO NOTHING",
        rusqlite::params![id.as_str(), email, now],
    )?;
    let existing: String = tx.query_row("SELECT id FROM users WHERE email = ?1", [email], |r| {
        r.get(0)
    })?;
    Ok(UserId::parse(&existing).unwrap_or_else(|| id.clone()))
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    pub users: i64,
    /// Current nodes by kind.
    pub nodes: BTreeMap<String, i64>,
    /// Current edges by type.
    pub edges: BTreeMap<String, i64>,
    /// Live sources by status.
    pub sources: BTreeMap<String, i64>,
}

pub fn counts(conn: &Connection) -> rusqlite::Result<Counts> {
    fn grouped(conn: &Connection, sql: &str) -> rusqlite::Result<BTreeMap<String, i64>> {
        let mut stmt = conn.prepare_cached(sql)?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        rows.collect()
    }
    let mut nodes = grouped(
        conn,
        "SELECT kind, count(*) FROM nodes WHERE valid_to IS NULL GROUP BY kind",
    )?;
    let mut edges = grouped(
        conn,
        // The rows under the `edges` view: counting needs neither end's id.
        "SELECT type, count(*) FROM edge_rows WHERE valid_to IS NULL GROUP BY type",
    )?;
    // Sections and chunks show as nodes with an edge from their note each (schema 0010).
    for (table, kind, edge_type) in [
        ("sections", "section", "has_section"),
        ("chunks", "chunk", "has_chunk"),
    ] {
        let n: i64 = conn.query_row(
            &format!("SELECT count(*) FROM {table} WHERE valid_to IS NULL"),
            [],
            |r| r.get(0),
        )?;
        if n > 0 {
            nodes.insert(kind.to_owned(), n);
            edges.insert(edge_type.to_owned(), n);
        }
    }
    Ok(Counts {
        users: conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?,
        nodes,
        edges,
        sources: grouped(
            conn,
            "SELECT status, count(*) FROM sources WHERE deleted_at IS NULL GROUP BY status",
        )?,
    })
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRow {
    pub id: String,
    pub email: String,
    pub display_name: Option<String>,
    pub created_at: String,
}

pub fn list_users(conn: &Connection) -> rusqlite::Result<Vec<UserRow>> {
    let mut stmt = conn
        .prepare_cached("SELECT id, email, display_name, created_at FROM users ORDER BY email")?;
    let rows = stmt.query_map([], |r| {
        Ok(UserRow {
            id: r.get(0)?,
            email: r.get(1)?,
            display_name: r.get(2)?,
            created_at: r.get(3)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_creates_a_wal_store_with_the_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/brain.db");
        let store = Store::open(&path).unwrap();
        let mode: String = store
            .read(|c| c.query_row("PRAGMA journal_mode", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(mode, "wal");
        let fk: i64 = store
            .write(|tx| tx.query_row("PRAGMA foreign_keys", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(fk, 1);
        assert!(store.size_bytes() > 0);
    }

    #[test]
    fn a_failed_write_keeps_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("brain.db")).unwrap();
        let r: Result<(), rusqlite::Error> = store.write(|tx| {
            meta_set(tx, "k", "v")?;
            Err(rusqlite::Error::InvalidQuery)
        });
        assert!(r.is_err());
        let v = store.read(|c| meta_get(c, "k")).unwrap();
        assert_eq!(v, None);
    }

    #[test]
    fn ensure_user_is_idempotent_and_counts_see_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("brain.db")).unwrap();
        let id = UserId::for_email("a@b.c");
        for _ in 0..2 {
            let got = store.write(|tx| ensure_user(tx, &id, "a@b.c")).unwrap();
            assert_eq!(got, id);
        }
        let c = store.read(counts).unwrap();
        assert_eq!(c.users, 1);
        assert!(c.nodes.is_empty());
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_reported_as_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("brain.db");
        std::fs::write(&path, vec![b'x'; 4096]).unwrap();
        let err = Store::open(&path).err().expect("must fail");
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![b'x'; 4096]);
    }
}
