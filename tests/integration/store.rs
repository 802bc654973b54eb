//! Keeping the store small, through the real daemon: `watch.remove` with `purge`,
//! `store.compact`, and the retention of retired chunk text.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Daemon, temp_layout, wait_until};

fn write(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

/// `n` notes of a few KiB each, every one with a word of its own (`zq{prefix}{i}`), a shared
/// tag, a nested tag of its own and links to its neighbours.
fn generated_vault(dir: &Path, prefix: &str, n: usize) {
    for i in 0..n {
        let mut body = format!(
            "---\ntags: [shared, {prefix}/n{i}]\n---\n# Note {prefix} {i}\n\nzq{prefix}{i} opens this note. \
             See [[{prefix}-{next}]] and [[missing-{prefix}-{i}]].\n\n",
            next = (i + 1) % n
        );
        for s in 0..6 {
            body.push_str(&format!("## Part {s}\n\n"));
            for w in 0..60 {
                body.push_str(&format!("word{prefix}{i}x{s}y{w} "));
            }
            body.push_str("\n\n");
        }
        write(&dir.join(format!("{prefix}-{i}.md")), &body);
    }
}

/// A daemon on a fresh temp dir that outlives it, so the store can be checked after a stop.
fn start() -> (tempfile::TempDir, Daemon) {
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    (temp, d)
}

fn status(d: &Daemon) -> Value {
    let started = Instant::now();
    let s = d.call("daemon.status", json!({})).unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "daemon.status took {:?}",
        started.elapsed()
    );
    s
}

fn wait_indexed(d: &Daemon) {
    wait_until("the text index to catch up", || {
        let s = d.call("daemon.status", json!({})).unwrap();
        s["search"]["index_state"] == "ready"
            && s["search"]["index_seq"] == s["search"]["outbox_head"]
    });
}

fn hits(d: &Daemon, q: &str) -> usize {
    let r = d
        .call("search.query", json!({ "query": q, "mode": "bm25" }))
        .unwrap();
    r["hits"].as_array().unwrap().len()
}

fn file_bytes(data: &Path) -> u64 {
    ["brain.db", "brain.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(data.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// Runs the checks every scenario ends with on the stopped daemon's store.
fn assert_store_sound(db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let dangling: Vec<(String, i64)> = conn
        .prepare("PRAGMA foreign_key_check")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(dangling, [], "rows whose references point nowhere");
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

fn count(db: &Path, sql: &str, p: &str) -> i64 {
    let conn = rusqlite::Connection::open(db).unwrap();
    conn.query_row(sql, [p], |r| r.get(0)).unwrap()
}

#[test]
fn purging_a_root_and_compacting_shrinks_the_store_and_keeps_the_other_root() {
    let (_temp, d) = start();
    let big = d.dir.join("big");
    let small = d.dir.join("small");
    generated_vault(&big, "big", 300);
    write(
        &small.join("keep.md"),
        "# Keep\n\nzqkeepme stays. #shared #only/small\n\nSee [[missing-big-1]].\n",
    );
    for root in [&big, &small] {
        let path = root.to_str().unwrap();
        d.call("watch.add", json!({ "path": path })).unwrap();
        // Waits behind the sync the watch queued.
        d.call("ingest.path", json!({ "path": path })).unwrap();
    }
    wait_indexed(&d);
    assert_eq!(hits(&d, "zqbig7"), 1);
    assert_eq!(hits(&d, "zqkeepme"), 1);
    let keep = d
        .call(
            "node.get",
            json!({ "path": small.join("keep.md").to_str().unwrap() }),
        )
        .unwrap();
    let gone = d
        .call(
            "node.get",
            json!({ "path": big.join("big-7.md").to_str().unwrap() }),
        )
        .unwrap();
    let tags_of_keep = || {
        let g = d
            .call(
                "graph.neighbors",
                json!({ "id": keep["id"], "direction": "out", "edge_types": ["tagged", "links_to"] }),
            )
            .unwrap();
        let mut titles: Vec<String> = g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|n| n["title"].as_str().map(str::to_owned))
            .collect();
        titles.sort();
        titles
    };
    let before_tags = tags_of_keep();
    assert!(
        before_tags.contains(&"shared".to_owned()),
        "{before_tags:?}"
    );

    // Everything written so far is in the database file itself: the baseline.
    let baseline = d.call("store.compact", json!({})).unwrap();
    let full = baseline["bytes_after"].as_u64().unwrap();
    assert_eq!(full, file_bytes(&d.data_dir));

    let r = d
        .call(
            "watch.remove",
            json!({ "path": big.to_str().unwrap(), "purge": true }),
        )
        .unwrap();
    assert_eq!(r["path"], big.canonicalize().unwrap().to_str().unwrap());
    assert_eq!(r["purged"]["sources"], 300, "{r:#}");
    assert!(r["purged"]["nodes"].as_u64().unwrap() > 300 * 10, "{r:#}");
    let c = d.call("store.compact", json!({})).unwrap();
    let after = c["bytes_after"].as_u64().unwrap();
    assert!(
        after * 2 < full,
        "the store is {after} bytes after the purge, {full} before"
    );
    assert_eq!(after, file_bytes(&d.data_dir));

    wait_indexed(&d);
    assert_eq!(hits(&d, "zqbig7"), 0, "a purged note is still found");
    assert_eq!(hits(&d, "zqkeepme"), 1);
    let e = d.call("node.get", json!({ "id": gone["id"] })).unwrap_err();
    assert_eq!(e.kind(), Some("node_not_found"), "{e}");
    assert_eq!(tags_of_keep(), before_tags, "the other root lost facts");
    let s = status(&d);
    assert_eq!(s["counts"]["sources"]["indexed"], 1, "{s:#}");
    assert_eq!(s["counts"]["nodes"]["note"], 1, "{s:#}");
    let list = d.call("watch.list", json!({})).unwrap();
    assert_eq!(list["roots"].as_array().unwrap().len(), 1, "{list:#}");
    // A second purge of the same folder has nothing left to delete.
    let again = d
        .call(
            "watch.remove",
            json!({ "path": big.to_str().unwrap(), "purge": true }),
        )
        .unwrap_err();
    assert_eq!(again.kind(), Some("not_found"), "{again}");
    let db = d.data_dir.join("brain.db");
    d.stop();

    assert_store_sound(&db);
    let big_path = big.canonicalize().unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        count(&db, "SELECT count(*) FROM roots WHERE path = ?1", &big_path),
        0
    );
    // Shared nodes only the purged root used are gone; those the other root uses stay.
    let shared = "SELECT count(*) FROM nodes WHERE key LIKE ?1";
    assert_eq!(count(&db, shared, "tag:big%"), 0);
    assert_eq!(count(&db, shared, "%:missing-big-2"), 0);
    assert_eq!(count(&db, shared, "%:missing-big-1"), 1);
    assert_eq!(count(&db, shared, "tag:only/small"), 1);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM nodes WHERE kind = 'tag' AND key = ?1",
            "tag:shared"
        ),
        1
    );
    let auto_vacuum: i64 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
        .unwrap();
    assert_eq!(auto_vacuum, 2, "a new store vacuums incrementally");
}

#[test]
fn a_watch_remove_without_purge_keeps_the_history_and_a_later_purge_drops_it() {
    let (_temp, d) = start();
    let vault = d.dir.join("v");
    generated_vault(&vault, "v", 3);
    let path = vault.to_str().unwrap();
    d.call("watch.add", json!({ "path": path })).unwrap();
    d.call("ingest.path", json!({ "path": path })).unwrap();
    // A workflow's node, tagged like the notes and linked to one of them: it is not the
    // folder's, so it and its tag stay, and only the edge into the folder goes.
    let note = d
        .call(
            "node.get",
            json!({ "path": vault.join("v-0.md").to_str().unwrap() }),
        )
        .unwrap();
    let w = json!({ "version": "brain/1", "name": "link",
        "registry": { "params": ["note(STRING)"], "vars": ["$t(STRING)"],
                      "permissions": { "graphWrite": true } },
        "steps": [
            { "id": "Upsert_t", "in": { "kind": "topic", "key": "topic:v", "title": "V", "tags": ["shared"] },
              "out": { "$t": "=_result.id" }, "next": "Link_n" },
            { "id": "Link_n", "in": { "from": "=$t", "to": "=note", "type": "about" }, "next": "Stop_end" },
            { "id": "Stop_end" }
        ] });
    let run = d
        .call(
            "workflow.run",
            json!({ "definition": w, "params": { "note": note["id"] } }),
        )
        .unwrap();
    let run_id = run["run_id"].as_str().unwrap().to_owned();
    let mut topic = String::new();
    wait_until("the workflow", || {
        let r = d.call("workflow.get", json!({ "run_id": run_id })).unwrap();
        topic = r["vars"]["$t"].as_str().unwrap_or_default().to_owned();
        r["status"] == "completed"
    });

    // An edit leaves an earlier version of the note behind, for `node.history`.
    let first = vault.join("v-0.md");
    let mut text = std::fs::read_to_string(&first).unwrap();
    text.push_str("\nOne more line.\n");
    std::fs::write(&first, text).unwrap();
    d.call("ingest.path", json!({ "path": path })).unwrap();
    let db = d.data_dir.join("brain.db");
    let revisions = "SELECT count(*) FROM node_revisions WHERE length(?1) = 0";
    assert!(count(&db, revisions, "") > 0, "the edit kept a revision");

    let r = d.call("watch.remove", json!({ "path": path })).unwrap();
    assert!(r.get("purged").is_none(), "{r:#}");
    let retired = "SELECT count(*) FROM nodes WHERE valid_to IS NOT NULL AND kind = ?1";
    assert_eq!(count(&db, retired, "note"), 3);
    // The folder is the store's only one: its sections and chunks are all there is.
    let parts = "SELECT (SELECT count(*) FROM sections) + (SELECT count(*) FROM chunks)
                      + (SELECT count(*) FROM sections WHERE valid_to IS NULL) * length(?1)";
    assert!(count(&db, parts, "") > 0);
    let out = d.cli(&["watch", "remove", path, "--purge"]);
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    assert!(
        crate::harness::stdout(&out).contains("deleted"),
        "{}",
        crate::harness::stdout(&out)
    );
    assert_eq!(count(&db, retired, "note"), 0);
    assert_eq!(
        count(&db, parts, ""),
        0,
        "the purge deleted the folder's sections and chunks"
    );
    assert_eq!(
        count(&db, revisions, ""),
        0,
        "the purge deleted the folder's notes' earlier versions"
    );
    let g = d
        .call(
            "graph.neighbors",
            json!({ "id": topic, "direction": "out" }),
        )
        .unwrap();
    let types: Vec<&str> = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["tagged"], "{g:#}");
    let out = d.cli(&["compact"]);
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    assert!(crate::harness::stdout(&out).contains("MiB after"));
    status(&d);
    d.stop();
    assert_store_sound(&db);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM nodes WHERE key = ?1",
            "tag:shared"
        ),
        1
    );
}

#[test]
fn a_folder_only_ingested_once_can_be_purged() {
    let (_temp, d) = start();
    let vault = d.dir.join("once");
    generated_vault(&vault, "once", 4);
    let path = vault.to_str().unwrap();
    d.call("ingest.path", json!({ "path": path })).unwrap();
    wait_indexed(&d);
    assert_eq!(hits(&d, "zqonce2"), 1);
    let r = d
        .call("watch.remove", json!({ "path": path, "purge": true }))
        .unwrap();
    assert_eq!(r["watched"], false, "{r:#}");
    assert_eq!(r["purged"]["sources"], 4, "{r:#}");
    wait_indexed(&d);
    assert_eq!(hits(&d, "zqonce2"), 0);
    // The root itself is gone: there is nothing left to remove.
    let e = d.call("watch.remove", json!({ "path": path })).unwrap_err();
    assert_eq!(e.kind(), Some("not_found"), "{e}");
    let db = d.data_dir.join("brain.db");
    assert_eq!(status(&d)["counts"]["sources"], json!({}));
    d.stop();
    assert_store_sound(&db);
}

#[test]
fn a_retired_chunk_past_the_retention_keeps_its_citation_and_loses_its_text() {
    let (temp, data, socket) = temp_layout();
    let config = temp.path().join("config.toml");
    std::fs::write(&config, "[store]\nretired_text_days = 0\n").unwrap();
    let config_s = config.to_str().unwrap().to_owned();
    let env = [("BRAIN_CONFIG", config_s.as_str())];
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &env);
    d.wait_ready();
    let vault: PathBuf = temp.path().join("v");
    let note = vault.join("a.md");
    write(&note, "# A\n\nthe first wording of this note\n");
    let path = vault.to_str().unwrap();
    d.call("watch.add", json!({ "path": path })).unwrap();
    d.call("ingest.path", json!({ "path": path })).unwrap();
    let id = d
        .call("node.get", json!({ "path": note.to_str().unwrap() }))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let chunks = |d: &Daemon| -> Vec<String> {
        let g = d
            .call(
                "graph.neighbors",
                json!({ "id": id, "direction": "out", "edge_types": ["has_chunk"] }),
            )
            .unwrap();
        g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["kind"] == "chunk")
            .map(|n| n["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let old = chunks(&d);
    assert_eq!(old.len(), 1);
    let old = old[0].clone();
    write(&note, "# A\n\nan entirely new wording\n");
    d.call("ingest.path", json!({ "path": path })).unwrap();
    assert!(!chunks(&d).contains(&old), "the edit retired the chunk");

    let db = data.join("brain.db");
    let rid = match brain::store::part_id::parse(&old) {
        Some((brain::store::part_id::PartKind::Chunk, rid)) => rid.to_string(),
        other => panic!("{old} is not a chunk's id: {other:?}"),
    };
    let text = "SELECT count(*) FROM chunks WHERE rid = ?1 AND content IS NOT NULL";
    // Housekeeping ran when the daemon started, before the edit; it runs again at the next start
    // (or after a sync an hour on), so the retired text is still there.
    assert_eq!(count(&db, text, &rid), 1);
    d.stop();

    let mut d = Daemon::spawn(temp.path(), &data, &socket, &env);
    d.wait_ready();
    wait_until("the retired chunk's text to be dropped", || {
        count(&db, text, &rid) == 0
    });
    let cited = count(
        &db,
        "SELECT count(*) FROM chunks c JOIN source_versions v ON v.id = c.cite_version
         WHERE c.rid = ?1 AND c.valid_to IS NOT NULL AND c.content IS NULL
           AND c.byte_start IS NOT NULL AND c.line_end IS NOT NULL",
        &rid,
    );
    assert_eq!(cited, 1, "the retired chunk keeps its citation");
    // The current text is untouched and still found.
    let node = d.call("node.get", json!({ "id": chunks(&d)[0] })).unwrap();
    assert!(
        node["content"]
            .as_str()
            .unwrap()
            .contains("an entirely new wording"),
        "{node:#}"
    );
    wait_indexed(&d);
    assert_eq!(hits(&d, "entirely"), 1);
    status(&d);
    d.stop();
    assert_store_sound(&db);
}

/// A link edge stores neither its acting user (its cited file version says it) nor the names
/// of its props, and answers both as before: the user who first wrote the link, even after
/// another user's daemon ingests the file again, and the props object in its order.
#[test]
fn a_link_edge_answers_the_user_and_props_its_file_version_gives_it() {
    let (temp, data, socket) = temp_layout();
    let vault = temp.path().join("vault");
    let note = vault.join("n.md");
    write(&note, "See [[a]] and [x](https://example.org/x).\n");
    let run_as = |email: &str| {
        let mut d = Daemon::spawn(temp.path(), &data, &socket, &[("BRAIN_USER_EMAIL", email)]);
        d.wait_ready();
        d.call("ingest.path", json!({ "path": vault })).unwrap();
        d
    };
    run_as("alice@example.org").stop();
    write(
        &note,
        "See [[a]] and [x](https://example.org/x), then [[b]].\n",
    );
    let d = run_as("bob@example.org");
    let id = d.call("node.get", json!({ "path": note })).unwrap()["id"].clone();
    let g = d
        .call(
            "graph.neighbors",
            json!({ "id": id, "direction": "out", "edge_types": ["links_to"] }),
        )
        .unwrap();
    let alice = brain::identity::UserId::for_email("alice@example.org").to_string();
    let bob = brain::identity::UserId::for_email("bob@example.org").to_string();
    let mut answered: Vec<(String, String, String)> = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["props"]["target"].as_str().unwrap().to_owned(),
                e["created_by"].as_str().unwrap().to_owned(),
                e["props"].to_string(),
            )
        })
        .collect();
    answered.sort();
    assert_eq!(
        answered,
        [
            (
                "a".to_owned(),
                alice.clone(),
                r#"{"kind":"wikilink","syntax":"wikilink","target":"a","subpath":null,"display":null}"#
                    .to_owned()
            ),
            (
                "b".to_owned(),
                bob,
                r#"{"kind":"wikilink","syntax":"wikilink","target":"b","subpath":null,"display":null}"#
                    .to_owned()
            ),
            (
                "https://example.org/x".to_owned(),
                alice.clone(),
                r#"{"kind":"external","syntax":"external","target":"https://example.org/x","subpath":null,"display":"x"}"#
                    .to_owned()
            ),
        ]
    );
    d.stop();
    let db = data.join("brain.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: Vec<(Option<String>, Option<String>, String)> = conn
        .prepare(
            "SELECT created_by, created_at, typeof(props) FROM edges WHERE type = 'links_to'
             ORDER BY rowid",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    // Alice's two links, written out once Bob's version cites them; Bob's own link, not.
    let blob = || "blob".to_owned();
    assert_eq!(
        stored,
        [
            (Some(alice.clone()), None, blob()),
            (Some(alice), None, blob()),
            (None, None, blob())
        ]
    );
    assert_store_sound(&db);
}
