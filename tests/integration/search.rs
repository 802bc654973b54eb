//! Search through the real daemon: the text index kept in step with the store, filters, the
//! index rebuilt when missing or corrupt, models and dense/hybrid search with a generated tiny
//! BERT, and bad parameters.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::embed::tiny;

use crate::harness::{Daemon, stderr, stdout, temp_layout, wait_until};

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A small vault whose words and tags the tests know.
fn vault(dir: &Path) -> PathBuf {
    let v = dir.join("vault");
    write(
        &v.join("garden/Tomatoes.md"),
        "---\ntags: [plants/vegetable]\nstatus: growing\n---\n# Tomatoes\n\nTomatoes need \
         sunshine and deep watering.\n\n## Pests\n\nAphids gather under the leaves; spray \
         soapy water.\n",
    );
    write(
        &v.join("garden/Roses.md"),
        "# Roses\n\nRoses are #plants that like pruning in late winter.\n",
    );
    write(
        &v.join("work/Standup.md"),
        "# Standup\n\nThe quarterly roadmap slipped; see [[Tomatoes]] for the garden \
         metaphor.\n",
    );
    write(
        &v.join("work/notes.txt"),
        "plain text about a zeppelin hangar\n",
    );
    v
}

fn search(d: &Daemon, params: Value) -> Value {
    d.call("search.query", params).expect("search.query")
}

fn titles(r: &Value) -> Vec<String> {
    r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["title"].as_str().unwrap().to_owned())
        .collect()
}

fn ingest(d: &Daemon, path: &Path) {
    d.call("ingest.path", json!({ "path": path })).unwrap();
}

#[test]
fn bm25_hits_cite_note_path_and_lines_and_filters_restrict_them() {
    let d = Daemon::start();
    let v = vault(&d.dir);
    ingest(&d, &v);

    let r = search(&d, json!({ "query": "aphids", "mode": "bm25", "k": 5 }));
    assert_eq!(titles(&r), ["Tomatoes"], "{r}");
    let hit = &r["hits"][0];
    let tomatoes = v.join("garden/Tomatoes.md");
    assert_eq!(hit["path"], json!(tomatoes.display().to_string()));
    // The Pests section: its heading on line 9, the paragraph on line 11.
    assert_eq!(hit["lines"], json!([9, 11]), "{hit}");
    let note = d.call("node.get", json!({ "path": tomatoes })).unwrap();
    assert_eq!(hit["node_id"], note["id"]);
    assert_ne!(hit["chunk_id"], hit["node_id"]);
    assert!(hit["snippet"].as_str().unwrap().contains("Aphids"));
    assert!(!hit["highlights"].as_array().unwrap().is_empty());
    assert_eq!(hit["heading_path"], json!(["Tomatoes", "Pests"]));

    // Stemming: "watered" finds "watering"; a phrase; an excluded term.
    assert_eq!(
        titles(&search(&d, json!({ "query": "watered", "mode": "bm25" }))),
        ["Tomatoes"]
    );
    assert_eq!(
        titles(&search(
            &d,
            json!({ "query": "\"deep watering\"", "mode": "bm25" })
        )),
        ["Tomatoes"]
    );
    assert_eq!(
        titles(&search(&d, json!({ "query": "zeppel*", "mode": "bm25" }))),
        ["notes.txt"]
    );
    let r = search(&d, json!({ "query": "plants -pruning", "mode": "bm25" }));
    assert!(!titles(&r).contains(&"Roses".to_owned()), "{r}");

    // Nested tags: `plants` matches `plants/vegetable` too.
    let r = search(
        &d,
        json!({ "query": "tomatoes roses standup", "mode": "bm25", "filters": { "tags": ["plants"] } }),
    );
    let mut t = titles(&r);
    t.sort();
    assert_eq!(t, ["Roses", "Tomatoes"], "{r}");
    let r = search(
        &d,
        json!({ "query": "tomatoes roses", "mode": "bm25", "filters": { "tags": ["#plants/vegetable"] } }),
    );
    assert_eq!(titles(&r), ["Tomatoes"]);

    // Path prefix, kinds, properties, time.
    let work = v.join("work");
    let r = search(
        &d,
        json!({ "query": "tomatoes garden", "mode": "bm25", "filters": { "path_prefix": work } }),
    );
    assert_eq!(titles(&r), ["Standup"], "{r}");
    let r = search(
        &d,
        json!({ "query": "zeppelin tomatoes", "mode": "bm25", "filters": { "kinds": ["text"] } }),
    );
    assert_eq!(titles(&r), ["notes.txt"]);
    let r = search(
        &d,
        json!({ "query": "tomatoes roses", "mode": "bm25", "filters": { "props": { "status": "Growing" } } }),
    );
    assert_eq!(titles(&r), ["Tomatoes"]);
    let r = search(
        &d,
        json!({ "query": "tomatoes", "mode": "bm25", "filters": { "since": "2000-01-01", "until": "1d" } }),
    );
    assert!(
        titles(&r).is_empty(),
        "files written now are not older than a day: {r}"
    );
    let r = search(
        &d,
        json!({ "query": "tomatoes", "mode": "bm25", "filters": { "since": "1h" } }),
    );
    assert_eq!(titles(&r)[0], "Tomatoes");

    // Per chunk, explain, graph expansion.
    let r = search(
        &d,
        json!({ "query": "tomatoes", "mode": "bm25", "group": "chunk", "explain": true, "k": 10 }),
    );
    let hits = r["hits"].as_array().unwrap();
    assert!(
        hits.iter().filter(|h| h["title"] == "Tomatoes").count() >= 2,
        "{r}"
    );
    assert_eq!(hits[0]["explain"]["bm25"]["rank"], 1);
    let r = search(
        &d,
        json!({ "query": "quarterly roadmap", "mode": "bm25", "graph": true, "explain": true }),
    );
    let t = titles(&r);
    assert_eq!(t[0], "Standup");
    assert!(
        t.contains(&"Tomatoes".to_owned()),
        "linked note joins by graph: {r}"
    );
    let tom = r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["title"] == "Tomatoes")
        .unwrap();
    assert!(tom["explain"]["graph"]["rank"].as_u64().is_some(), "{tom}");

    // The CLI prints the same.
    let out = d.cli(&["search", "aphids", "--mode", "bm25"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("Tomatoes › Pests"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("Tomatoes.md:9-11"),
        "{}",
        stdout(&out)
    );
    d.stop();
}

#[test]
fn the_index_follows_edits_and_deletes_and_is_rebuilt_when_lost_or_corrupt() {
    let (temp, data, socket) = temp_layout();
    let v = vault(temp.path());
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    d.call("watch.add", json!({ "path": v })).unwrap();
    let find = |d: &Daemon, q: &str| titles(&search(d, json!({ "query": q, "mode": "bm25" })));
    wait_until("initial sync", || find(&d, "aphids") == ["Tomatoes"]);

    // Edit: the new word is found, the removed one is not.
    write(
        &v.join("garden/Roses.md"),
        "# Roses\n\nRoses smell of marzipan.\n",
    );
    wait_until("edit indexed", || find(&d, "marzipan") == ["Roses"]);
    assert!(find(&d, "pruning").is_empty());
    // Delete.
    std::fs::remove_file(v.join("garden/Roses.md")).unwrap();
    wait_until("delete indexed", || find(&d, "marzipan").is_empty());
    // Rename keeps the note id and the index follows the new path.
    std::fs::rename(v.join("work/Standup.md"), v.join("garden/Standup.md")).unwrap();
    wait_until("move indexed", || {
        let r = search(&d, json!({ "query": "roadmap", "mode": "bm25" }));
        r["hits"][0]["path"] == json!(v.join("garden/Standup.md").display().to_string())
    });
    wait_until("the index to reflect every change", || {
        let s = d.call("daemon.status", json!({})).unwrap();
        s["search"]["index_state"] == "ready"
            && s["search"]["index_seq"] == s["search"]["outbox_head"]
            && s["search"]["index_seq"].as_i64().unwrap() > 0
    });
    d.stop();

    // Index deleted while stopped: rebuilt on start, while serving.
    let index = data.join("index");
    std::fs::remove_dir_all(&index).unwrap();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    wait_until("rebuilt index", || find(&d, "aphids") == ["Tomatoes"]);
    assert!(d.log().contains("will be rebuilt"), "{}", d.log());
    d.stop();

    // Corrupt: garbage in meta.json.
    std::fs::write(index.join("meta.json"), b"{ not json").unwrap();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    wait_until("index rebuilt after corruption", || {
        find(&d, "aphids") == ["Tomatoes"]
    });
    // A file changed while the daemon was down is found after start.
    d.stop();
    write(&v.join("garden/Basil.md"), "# Basil\n\nBasil loves heat.\n");
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    wait_until("offline change indexed", || find(&d, "basil") == ["Basil"]);

    // brain reindex rebuilds from scratch and says how much.
    let out = d.cli(&["reindex", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(r["chunks"].as_u64().unwrap() >= 4, "{r}");
    assert_eq!(find(&d, "basil"), ["Basil"]);
    d.stop();
}

#[test]
fn without_a_model_dense_says_so_and_bad_parameters_are_refused() {
    let d = Daemon::start();
    let v = vault(&d.dir);
    ingest(&d, &v);
    let kind = |p: Value| {
        d.call("search.query", p)
            .unwrap_err()
            .kind()
            .unwrap_or("")
            .to_owned()
    };
    assert_eq!(
        kind(json!({ "query": "tomatoes", "mode": "dense" })),
        "model_unavailable"
    );
    assert_eq!(
        kind(json!({ "query": "tomatoes", "mode": "hybrid" })),
        "model_unavailable"
    );
    // The default mode without vectors is BM25.
    let r = search(&d, json!({ "query": "tomatoes" }));
    assert_eq!(r["mode"], "bm25");
    assert_eq!(kind(json!({ "query": "" })), "invalid_params");
    assert_eq!(
        kind(json!({ "query": "x", "mode": "magic" })),
        "invalid_params"
    );
    assert_eq!(kind(json!({ "query": "x", "k": 0 })), "invalid_params");
    assert_eq!(kind(json!({ "query": "x", "k": 100000 })), "invalid_params");
    assert_eq!(
        kind(json!({ "query": "x", "filters": { "since": "someday" } })),
        "invalid_params"
    );
    assert_eq!(
        kind(json!({ "query": "x", "filters": { "colour": "red" } })),
        "invalid_params"
    );
    // Query syntax errors are searched as words, never an error.
    search(&d, json!({ "query": "tomatoes AND ( \"unclosed" }));
    let out = d.cli(&["search", "tomatoes", "--mode", "dense"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("brain models add"),
        "{}",
        stderr(&out)
    );
    d.stop();
}

#[test]
fn a_model_embeds_chunks_in_the_background_and_enables_dense_and_hybrid_search() {
    let (temp, data, socket) = temp_layout();
    let v = vault(temp.path());
    let model = temp.path().join("tiny-bert");
    tiny::write_tiny_bert(&model, 7).unwrap();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    ingest(&d, &v);

    // A folder that is not a model is refused with the missing file named.
    let bad = d
        .call("models.add", json!({ "name": "x", "path": v }))
        .unwrap_err();
    assert!(bad.to_string().contains("config.json"), "{bad}");

    let out = d.cli(&["models", "add", "tiny", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(data.join("models/tiny/model.safetensors").is_file());
    let embedded = |d: &Daemon| {
        let s = d.call("daemon.status", json!({})).unwrap();
        let s = &s["search"];
        s["model_state"] == "ready"
            && s["total_chunks"].as_u64().unwrap() > 0
            && s["embedded_chunks"] == s["total_chunks"]
    };
    wait_until("all chunks embedded", || embedded(&d));
    let r = search(
        &d,
        json!({ "query": "aphids leaves", "mode": "dense", "k": 3 }),
    );
    assert_eq!(r["mode"], "dense");
    assert_eq!(r["hits"].as_array().unwrap().len(), 3, "{r}");
    let r = search(&d, json!({ "query": "aphids", "explain": true }));
    assert_eq!(
        r["mode"], "hybrid",
        "hybrid is the default once vectors exist"
    );
    // Every note the words matched had its vectors when the query ran.
    assert_eq!(
        r["vectors"],
        json!({ "matching_notes": 1, "with_vectors": 1, "share": 1.0 }),
        "{r}"
    );
    let top = &r["hits"][0];
    assert_eq!(top["title"], "Tomatoes");
    assert!(top["explain"]["bm25"]["rank"].is_u64(), "{top}");
    assert!(top["explain"]["dense"]["rank"].is_u64(), "{top}");
    // Filters apply to dense hits too.
    let r = search(
        &d,
        json!({ "query": "anything", "mode": "dense", "filters": { "kinds": ["text"] } }),
    );
    assert_eq!(titles(&r), ["notes.txt"], "{r}");

    // Vectors are stored: after a restart nothing is embedded again, and a new note is.
    d.stop();
    let count = || -> i64 {
        let c = rusqlite::Connection::open(data.join("brain.db")).unwrap();
        c.query_row("SELECT COUNT(*) FROM chunk_vectors", [], |r| r.get(0))
            .unwrap()
    };
    let before = count();
    write(&v.join("garden/Basil.md"), "# Basil\n\nBasil loves heat.\n");
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    d.call("ingest.path", json!({ "path": v })).unwrap();
    wait_until("new note embedded", || embedded(&d));
    assert_eq!(count(), before + 1);
    let out = d.cli(&["models", "list"]);
    assert!(stdout(&out).contains("* tiny"), "{}", stdout(&out));
    d.stop();
}

#[test]
fn eval_beir_scores_a_dataset_and_writes_a_trec_run_file() {
    let (temp, data, socket) = temp_layout();
    let ds = temp.path().join("tiny-beir");
    write(
        &ds.join("corpus.jsonl"),
        concat!(
            r#"{"_id": "d1", "title": "Tomatoes", "text": "Tomatoes need sunshine and deep watering."}"#,
            "\n",
            r#"{"_id": "d/2", "title": "Roses", "text": "Roses like pruning in late winter."}"#,
            "\n",
            r#"{"_id": "d3", "title": "Zeppelins", "text": "Airships float in a hangar."}"#,
            "\n"
        ),
    );
    write(
        &ds.join("queries.jsonl"),
        concat!(
            r#"{"_id": "q1", "text": "watering tomatoes"}"#,
            "\n",
            r#"{"_id": "q2", "text": "when to prune roses"}"#,
            "\n",
            r#"{"_id": "q3", "text": "unjudged"}"#,
            "\n"
        ),
    );
    write(
        &ds.join("qrels/test.tsv"),
        "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td/2\t1\n",
    );
    let run = temp.path().join("bm25.run");
    // No daemon is needed: eval runs in-process.
    let out = crate::harness::brain_cmd(&data, &socket)
        .args([
            "eval",
            "beir",
            ds.to_str().unwrap(),
            "--mode",
            "bm25",
            "--split",
            "test",
        ])
        .args(["--run-file", run.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["queries"], 2, "{r}");
    assert_eq!(r["documents"], 3);
    assert_eq!(r["ndcg_at_10"], 1.0, "{r}");
    assert_eq!(r["mrr_at_10"], 1.0);
    // Two halves of the judged queries, one to tune on and one to report.
    assert_eq!(r["halves"][0]["name"], "tune", "{r}");
    assert_eq!(r["halves"][0]["queries"], 1, "{r}");
    assert_eq!(r["halves"][1]["name"], "held-out", "{r}");
    assert_eq!(r["halves"][1]["queries"], 1, "{r}");
    assert_eq!(r["halves"][1]["ndcg_at_10"], 1.0, "{r}");
    let text = std::fs::read_to_string(&run).unwrap();
    let first: Vec<&str> = text.lines().next().unwrap().split(' ').collect();
    assert_eq!(first[..4], ["q1", "Q0", "d1", "1"], "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("q2 Q0 d/2 1 ")),
        "{text}"
    );

    // Dense needs a model; with the tiny one it runs end to end.
    let out = crate::harness::brain_cmd(&data, &socket)
        .args(["eval", "beir", ds.to_str().unwrap(), "--mode", "dense"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--model"), "{}", stderr(&out));
    let model = temp.path().join("tiny-bert");
    tiny::write_tiny_bert(&model, 3).unwrap();
    let out = crate::harness::brain_cmd(&data, &socket)
        .args([
            "eval",
            "beir",
            ds.to_str().unwrap(),
            "--mode",
            "hybrid",
            "--json",
        ])
        .args(["--model", model.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["embedded_chunks"], 3, "{r}");
    assert!(r["ndcg_at_10"].as_f64().unwrap() > 0.0, "{r}");

    // A dataset that is not one is a clear error.
    let out = crate::harness::brain_cmd(&data, &socket)
        .args(["eval", "beir", temp.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("corpus.jsonl"), "{}", stderr(&out));
}
