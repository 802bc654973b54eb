//! Stores written by older releases open, migrate and answer as they did.
//!
//! `fixtures/compat/store-vN/` holds a store written by the release at schema N and the answers
//! that daemon gave (see fixtures/compat/README.md). The test opens a copy with today's daemon
//! and asks the same questions; answers must match byte for byte once times and durations are
//! dropped from both sides and the paths of the vault and data dir are put back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Value, json};

use crate::harness::{Daemon, temp_layout, wait_until};

/// Keys whose values are times or durations: they differ between any two runs.
fn is_time_key(k: &str) -> bool {
    k.ends_with("_at") || matches!(k, "valid_from" | "valid_to" | "took_ms")
}

/// `v` with time keys dropped and every string's `from` prefix replaced by `to`.
fn normalize(v: &Value, paths: &[(&str, &str)]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !is_time_key(k))
                .map(|(k, x)| (k.clone(), normalize(x, paths)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| normalize(x, paths)).collect()),
        Value::String(s) => {
            let mut s = s.clone();
            for (from, to) in paths {
                if let Some(rest) = s.strip_prefix(from) {
                    s = format!("{to}{rest}");
                }
            }
            Value::String(s)
        }
        other => other.clone(),
    }
}

/// The text index is derived and rebuilt when its format changes, so a search may rank (and
/// cut at `k`) differently than it did; what must survive the migration is what each hit
/// cites. Hits found then and now cite the same note, path, lines, bytes, hash and headings,
/// and most of then's hits are still found.
fn same_citations(params: &Value, want: &Value, got: &Value) {
    let cited = |h: &Value| {
        let mut h = h.clone();
        if let Some(m) = h.as_object_mut() {
            for k in ["score", "snippet", "highlights", "explain"] {
                m.remove(k);
            }
        }
        h
    };
    let now: std::collections::HashMap<&str, &Value> = got["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| (h["chunk_id"].as_str().unwrap(), h))
        .collect();
    let then = want["hits"].as_array().unwrap();
    let mut kept = 0;
    for h in then {
        if let Some(n) = now.get(h["chunk_id"].as_str().unwrap()) {
            assert_eq!(cited(h), cited(n), "search.query {params}");
            kept += 1;
        }
    }
    assert!(
        kept * 2 >= then.len(),
        "search.query {params}: {kept} of {} hits found again",
        then.len()
    );
}

/// Copies `from` into `to`, every file with the mtime the store recorded.
fn copy_vault(from: &Path, to: &Path, mtime: SystemTime) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_vault(&e.path(), &dst, mtime);
        } else {
            std::fs::copy(e.path(), &dst).unwrap();
            let f = std::fs::File::options().write(true).open(&dst).unwrap();
            f.set_modified(mtime).unwrap();
        }
    }
}

fn check_store(version: u32) {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fixture = repo.join(format!("fixtures/compat/store-v{version}"));
    let expected: Value =
        serde_json::from_slice(&std::fs::read(fixture.join("expected.json")).unwrap()).unwrap();
    assert_eq!(expected["schema_version"], version);
    let old_vault = expected["vault"].as_str().unwrap();
    let old_data = expected["data_dir"].as_str().unwrap();
    let mtime = SystemTime::UNIX_EPOCH + Duration::from_secs(expected["mtime"].as_u64().unwrap());

    let (temp, data, socket) = temp_layout();
    // The store names its root by absolute path; the copy lives in this test's temp dir, and
    // the root is pointed at it before the daemon opens the store.
    let vault: PathBuf = temp.path().join("vault");
    copy_vault(&repo.join("fixtures/vault"), &vault, mtime);
    let vault = vault.canonicalize().unwrap();
    let vault_str = vault.to_str().unwrap().to_owned();
    std::fs::create_dir_all(&data).unwrap();
    let db = data.join("brain.db");
    std::fs::copy(fixture.join("brain.db"), &db).unwrap();
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        let n = conn
            .execute(
                "UPDATE roots SET path = ?1 WHERE path = ?2",
                [&vault_str, old_vault],
            )
            .unwrap();
        assert_eq!(n, 1, "the fixture's store has one root at {old_vault}");
    }

    let email = expected["user_email"].as_str().unwrap();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[("BRAIN_USER_EMAIL", email)]);
    d.wait_ready();
    // The start-up reconcile of the watched root queues on the one ingest worker; an ingest of
    // the same root waits behind it. The files are those the store saw, so nothing changes.
    let report = d.call("ingest.path", json!({ "path": vault_str })).unwrap();
    assert_eq!(report["indexed"], 0, "{report:#}");
    assert_eq!(report["deleted"], 0, "{report:#}");
    wait_until("the rebuilt text index", || {
        let s = d.call("daemon.status", json!({})).unwrap();
        s["search"]["index_state"] == "ready"
            && s["search"]["index_seq"] == s["search"]["outbox_head"]
            && s["search"]["indexed_chunks"].as_u64() > Some(0)
    });

    let data_str = data.to_str().unwrap().to_owned();
    let back = [
        (vault_str.as_str(), old_vault),
        (data_str.as_str(), old_data),
    ];
    let to_old = [(old_vault, vault_str.as_str())];
    for a in expected["answers"].as_array().unwrap() {
        let method = a["method"].as_str().unwrap();
        let params = normalize(&a["params"], &to_old);
        let got = d
            .call(method, params.clone())
            .unwrap_or_else(|e| panic!("{method} {params}: {e}"));
        let (want, got) = (normalize(&a["result"], &[]), normalize(&got, &back));
        if method == "search.query" {
            same_citations(&params, &want, &got);
            continue;
        }
        let want = serde_json::to_string_pretty(&want).unwrap();
        let got = serde_json::to_string_pretty(&got).unwrap();
        assert!(
            want == got,
            "{method} {params} answers differently:\n--- then\n{want}\n--- now\n{got}"
        );
    }

    let started = Instant::now();
    let status = d.call("daemon.status", json!({})).unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(status["counts"], expected["counts"], "{status:#}");
    assert_eq!(
        status["schema_version"],
        brain::store::migrations::latest_version()
    );
    d.stop();

    let conn = rusqlite::Connection::open(&db).unwrap();
    let fk: Vec<String> = conn
        .prepare("PRAGMA foreign_key_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(fk, Vec::<String>::new(), "dangling references");
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

#[test]
fn a_schema_7_store_migrates_and_answers_as_it_did() {
    check_store(7);
}
