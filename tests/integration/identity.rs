//! `brain identity id` and `brain identity migrate` through the real binary, and the daemon's
//! automatic migration on open.

use std::path::{Path, PathBuf};
use std::process::Command;

use rusqlite::Connection;
use serde_json::{Value, json};

use crate::harness::{BIN, Daemon, stderr, stdout, temp_layout};

const ALICE: &str = "user:00000000-0000-4000-8000-00000000a11c";
const BOB: &str = "user:efb81798-4ac8-532b-8f66-ede02501248d";
const CAROL: &str = "user:00000000-0000-4000-8000-0000000ca201";
const DAVE: &str = "user:559cd03c-f853-572e-a6dc-97c83d61a2cf";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/legacy")
        .join(name)
}

/// Copies the legacy store and users file into a fresh temp dir.
fn legacy_copy() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("ltcai.db");
    let users = dir.path().join("users.json");
    std::fs::copy(fixture("ltcai.db"), &store).unwrap();
    std::fs::copy(fixture("users.json"), &users).unwrap();
    (dir, store, users)
}

fn migrate(args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(["identity", "migrate"])
        .args(args)
        .output()
        .unwrap()
}

fn column(store: &Path, sql: &str) -> Vec<Option<String>> {
    let c = Connection::open(store).unwrap();
    let mut stmt = c.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn dir_listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn identity_id_prints_only_the_id() {
    let out = Command::new(BIN)
        .args(["identity", "id", "  Bob@Example.ORG "])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("{BOB}\n"));
    let out = Command::new(BIN)
        .args(["identity", "id", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stdout(&out).is_empty());
}

#[test]
fn migrating_the_legacy_store_rewrites_emails_and_is_idempotent() {
    let (dir, store, users) = legacy_copy();
    let s = store.to_str().unwrap();
    let u = users.to_str().unwrap();
    let out = migrate(&["--store", s, "--users", u, "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_str(&stdout(&out)).expect("--json prints JSON");
    assert_eq!(report["changed"], true);

    let owners = column(&store, "SELECT owner_id FROM nodes_v2 ORDER BY id");
    let expected = [
        Some(ALICE),
        Some(ALICE),
        Some(BOB),
        Some(BOB),
        Some(CAROL),
        Some("system"),
        Some(""),
        None,
        Some(DAVE),
    ];
    let expected: Vec<Option<String>> = expected.iter().map(|o| o.map(str::to_owned)).collect();
    assert_eq!(owners, expected);
    for (table, col) in [
        ("edges_v2", "created_by"),
        ("ingestion_provenance", "owner"),
    ] {
        for v in column(&store, &format!("SELECT {col} FROM {table}"))
            .into_iter()
            .flatten()
        {
            assert!(
                !brain::identity::is_email(&v),
                "{table}.{col} still holds {v:?}"
            );
        }
    }
    let stamp = column(
        &store,
        "SELECT value FROM kg_meta WHERE key = 'identity_uuid_migrated_at'",
    );
    assert_eq!(stamp.len(), 1);

    // The users file is normalized and merged, in the fixture's expected form.
    let got: Value = serde_json::from_slice(&std::fs::read(&users).unwrap()).unwrap();
    let want: Value =
        serde_json::from_slice(&std::fs::read(fixture("expected.json")).unwrap()).unwrap();
    assert_eq!(got, want);
    assert_eq!(got["alice@example.com"]["id"], ALICE);

    // Backups of both files sit beside them.
    let listing = dir_listing(dir.path());
    assert!(
        listing
            .iter()
            .any(|n| n.starts_with("ltcai.pre-user-uuid.") && n.ends_with(".db")),
        "{listing:?}"
    );
    assert!(
        listing
            .iter()
            .any(|n| n.starts_with("users.pre-user-uuid.") && n.ends_with(".json")),
        "{listing:?}"
    );

    // A second run changes nothing and says so.
    let store_bytes = std::fs::read(&store).unwrap();
    let users_bytes = std::fs::read(&users).unwrap();
    let out = migrate(&["--store", s, "--users", u]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("nothing to do"), "{}", stdout(&out));
    assert_eq!(std::fs::read(&store).unwrap(), store_bytes);
    assert_eq!(std::fs::read(&users).unwrap(), users_bytes);
    assert_eq!(dir_listing(dir.path()), listing, "no new backups");
}

#[test]
fn bad_input_is_a_clear_error_and_modifies_nothing() {
    let (dir, store, users) = legacy_copy();
    let not_json = dir.path().join("not-json.json");
    std::fs::write(&not_json, "{ this is not json").unwrap();
    let array = dir.path().join("array.json");
    std::fs::write(&array, "[1, 2]").unwrap();
    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, "SQLite? no. ".repeat(500)).unwrap();
    let before: Vec<(String, Vec<u8>)> = dir_listing(dir.path())
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(dir.path().join(&n)).unwrap()))
        .collect();
    let s = store.to_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--store", "/nonexistent/brain.db"],
            "/nonexistent/brain.db",
        ),
        (&["--store", corrupt.to_str().unwrap()], "corrupt.db"),
        (
            &["--store", s, "--users", not_json.to_str().unwrap()],
            "not-json.json",
        ),
        (
            &["--store", s, "--users", array.to_str().unwrap()],
            "array.json",
        ),
        (
            &["--store", s, "--users", "/nonexistent/users.json"],
            "/nonexistent/users.json",
        ),
    ];
    for (args, mention) in cases {
        let out = migrate(args);
        assert!(!out.status.success(), "{args:?} must fail");
        assert!(stderr(&out).contains(mention), "{args:?}: {}", stderr(&out));
    }
    let after: Vec<(String, Vec<u8>)> = dir_listing(dir.path())
        .into_iter()
        .map(|n| (n.clone(), std::fs::read(dir.path().join(&n)).unwrap()))
        .collect();
    assert!(before == after, "bad input modified files");
    assert!(!Path::new("/nonexistent/brain.db").exists());
    let _ = users;
}

#[test]
fn the_daemon_migrates_email_identities_on_open() {
    let (temp, data, socket) = temp_layout();
    // An older store of ours, with e-mail addresses where ids belong.
    {
        let store = brain::store::Store::open(&data.join("brain.db")).unwrap();
        store
            .write(|tx| {
                tx.execute_batch(
                    "INSERT INTO users(id, email, created_at, updated_at)
                       VALUES ('Old@Example.com', 'old@example.com', 't', 't');
                     INSERT INTO nodes(id, kind, key, owner_id, valid_from, created_at, updated_at)
                       VALUES ('n1', 'note', 'k1', ' Old@Example.com', 't', 't', 't');",
                )
            })
            .unwrap();
    }
    let mut d = Daemon::spawn(
        temp.path(),
        &data,
        &socket,
        &[("BRAIN_USER_EMAIL", "old@example.com")],
    );
    d.wait_ready();
    let expected = brain::identity::UserId::for_email("old@example.com").to_string();
    let users = d.call("user.list", json!({})).unwrap();
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");
    assert_eq!(users["users"][0]["id"], expected);
    let status = d.call("daemon.status", json!({})).unwrap();
    assert_eq!(status["user_id"], expected);
    d.stop();
    let owner = column(&data.join("brain.db"), "SELECT owner_id FROM nodes");
    assert_eq!(owner, [Some(expected)]);
    let listing = dir_listing(&data);
    assert!(
        listing
            .iter()
            .any(|n| n.starts_with("brain.pre-user-uuid.")),
        "{listing:?}"
    );
}
