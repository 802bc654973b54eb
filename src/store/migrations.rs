//! Schema migrations: plain SQL files in `schema/`, embedded at build time, applied in order.
//!
//! The version lives in `PRAGMA user_version`. All pending migrations run inside one
//! exclusive transaction, so a store is either at the old version or the new one, never between.
//! Architecture Invariant: migrations are append-only; a shipped file is never edited.

use rusqlite::{Connection, TransactionBehavior};

use super::StoreError;

/// Every migration, in order. A file's number is the `user_version` after it has run; numbers
/// increase but may skip one that another branch reserved.
pub const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_initial.sql",
        include_str!("../../schema/0001_initial.sql"),
    ),
    (
        "0002_link_resolution.sql",
        include_str!("../../schema/0002_link_resolution.sql"),
    ),
    (
        "0003_search.sql",
        include_str!("../../schema/0003_search.sql"),
    ),
    (
        "0004_workflows.sql",
        include_str!("../../schema/0004_workflows.sql"),
    ),
    (
        "0005_retired_file_nodes.sql",
        include_str!("../../schema/0005_retired_file_nodes.sql"),
    ),
    (
        "0006_leaner_indexes.sql",
        include_str!("../../schema/0006_leaner_indexes.sql"),
    ),
    (
        "0007_inline_citations.sql",
        include_str!("../../schema/0007_inline_citations.sql"),
    ),
    (
        "0008_ingest_in_flight.sql",
        include_str!("../../schema/0008_ingest_in_flight.sql"),
    ),
    (
        "0009_retired_text.sql",
        include_str!("../../schema/0009_retired_text.sql"),
    ),
];

/// The schema version this build writes.
pub fn latest_version() -> u32 {
    MIGRATIONS.last().map_or(0, |(name, _)| number(name))
}

/// The number a migration file starts with (`0004_x.sql` → 4).
fn number(name: &str) -> u32 {
    // The names are our own constants, checked by `migration_files_are_numbered_in_order`.
    name.get(..4).and_then(|n| n.parse().ok()).unwrap_or(0)
}

/// Brings `conn` up to [`latest_version`]. Refuses a store written by a newer build.
pub fn apply(conn: &mut Connection) -> Result<u32, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let current: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let latest = latest_version();
    if current > latest {
        return Err(StoreError::TooNew {
            found: current,
            supported: latest,
        });
    }
    for (name, sql) in MIGRATIONS.iter().filter(|(name, _)| number(name) > current) {
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migration {
                name: (*name).to_owned(),
                source,
            })?;
        // user_version cannot be bound as a parameter; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", number(name)))?;
    }
    tx.commit()?;
    Ok(latest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables(conn: &Connection) -> Vec<String> {
        let mut stmt = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn applies_all_migrations_to_an_empty_store() {
        let mut conn = Connection::open_in_memory().unwrap();
        assert_eq!(apply(&mut conn).unwrap(), latest_version());
        let v: u32 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, latest_version());
        let names = tables(&conn);
        for t in [
            "meta",
            "users",
            "roots",
            "sources",
            "nodes",
            "edges",
            "provenance",
            "embeddings",
            "workflow_runs",
            "workflow_events",
        ] {
            assert!(names.iter().any(|n| n == t), "missing table {t}: {names:?}");
        }
    }

    #[test]
    fn migrate_twice_is_a_no_op() {
        let mut conn = Connection::open_in_memory().unwrap();
        apply(&mut conn).unwrap();
        let before = tables(&conn);
        assert_eq!(apply(&mut conn).unwrap(), latest_version());
        assert_eq!(tables(&conn), before);
    }

    #[test]
    fn refuses_a_newer_store() {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("PRAGMA user_version = 999").unwrap();
        let err = apply(&mut conn).unwrap_err();
        assert!(
            matches!(err, StoreError::TooNew { found: 999, .. }),
            "{err}"
        );
    }

    #[test]
    fn migration_files_are_numbered_in_order() {
        let mut last = 0;
        for (name, sql) in MIGRATIONS {
            let n = number(name);
            assert!(n > last && name.as_bytes().get(4) == Some(&b'_'), "{name}");
            last = n;
            assert!(
                sql.trim_start().starts_with("--"),
                "{name} must open with a why-comment"
            );
        }
    }
}
