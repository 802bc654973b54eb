//! What agents and scripts use through the socket: the method table (`rpc.discover`), graph
//! writes with provenance (`node.upsert`, `edge.link`, `node.retire`, `edge.retire`), notes
//! written into watched folders (`note.write`), online backups, and bad input refused with
//! nothing written.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::harness::{Daemon, stderr, wait_until};

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A watched vault with one note, synced.
fn watched_vault(d: &Daemon) -> PathBuf {
    let v = d.dir.join("vault");
    write(&v.join("Garden.md"), "# Garden\n\nTomatoes and basil.\n");
    d.call("watch.add", json!({ "path": v })).unwrap();
    d.call("ingest.path", json!({ "path": v })).unwrap();
    std::fs::canonicalize(v).unwrap()
}

fn kind_of(r: Result<Value, brain::rpc::client::ClientError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.kind().unwrap_or("none").to_owned(),
    }
}

fn counts(d: &Daemon) -> Value {
    d.call("daemon.status", json!({})).unwrap()["counts"].clone()
}

#[test]
fn discover_lists_every_method_with_its_schemas() {
    let d = Daemon::start();
    let doc = d.call("rpc.discover", json!({})).unwrap();
    assert!(doc["openrpc"].as_str().unwrap().starts_with("1."));
    let methods = doc["methods"].as_array().unwrap();
    let find = |name: &str| {
        methods
            .iter()
            .find(|m| m["name"] == name)
            .unwrap_or_else(|| panic!("{name} not listed"))
    };
    for name in [
        "daemon.status",
        "search.query",
        "node.get",
        "node.upsert",
        "edge.link",
        "node.retire",
        "edge.retire",
        "note.write",
        "graph.recent",
        "store.backup",
        "workflow.run",
        "workflow.resume",
        "rpc.discover",
    ] {
        let m = find(name);
        assert_eq!(m["paramStructure"], "by-name", "{name}");
        assert_eq!(m["result"]["schema"]["type"], "object", "{name}: {m}");
    }
    let upsert = find("node.upsert");
    let required: Vec<&str> = upsert["params"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["required"] == true)
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(required, ["kind", "key"]);
    let mode = find("note.write")["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "mode")
        .unwrap()["schema"]
        .to_string();
    for m in ["create", "replace", "append"] {
        assert!(mode.contains(m), "{mode}");
    }
    // Every method the server answers is listed: a name not in the table is unknown.
    assert_eq!(
        kind_of(d.call("node.nonsense", json!({}))),
        "method_not_found"
    );
}

#[test]
fn clients_write_nodes_and_edges_with_their_provenance() {
    let d = Daemon::start();
    let vault = watched_vault(&d);
    let note = d
        .call("node.get", json!({ "path": vault.join("Garden.md") }))
        .unwrap();
    let user = d.call("daemon.status", json!({})).unwrap()["user_id"].clone();

    let p = json!({ "kind": "person", "key": "ada", "title": "Ada Lovelace",
        "props": { "born": 1815 }, "tags": ["people/historic"], "client": "test-suite" });
    let first = d.call("node.upsert", p.clone()).unwrap();
    assert_eq!(first["created"], true);
    let again = d.call("node.upsert", p).unwrap();
    assert_eq!(again["created"], false);
    assert_eq!(again["id"], first["id"]);

    let ada = d.call("node.get", json!({ "id": first["id"] })).unwrap();
    assert_eq!(ada["title"], "Ada Lovelace");
    assert_eq!(ada["props"]["born"], 1815);
    let prov = &ada["provenance"][0];
    assert_eq!(prov["extractor"], "client:test-suite", "{ada}");
    assert_eq!(prov["actor_id"], user);
    assert!(prov["run_id"].is_null());

    let link = json!({ "from": first["id"], "to": note["id"], "type": "gardens_in",
        "client": "test-suite" });
    let edge = d.call("edge.link", link.clone()).unwrap();
    assert_eq!(edge["created"], true);
    assert_eq!(d.call("edge.link", link).unwrap()["id"], edge["id"]);
    let out = d
        .call(
            "graph.neighbors",
            json!({ "id": first["id"], "direction": "out", "edge_types": ["gardens_in"] }),
        )
        .unwrap();
    let edges = out["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 1, "{out}");
    assert_eq!(edges[0]["provenance"][0]["extractor"], "client:test-suite");

    // Retiring the edge leaves the node; retiring the node takes its remaining edges.
    let r = d.call("edge.retire", json!({ "id": edge["id"] })).unwrap();
    assert!(r["valid_to"].is_string());
    let out = d
        .call(
            "graph.neighbors",
            json!({ "id": first["id"], "direction": "out", "edge_types": ["gardens_in"] }),
        )
        .unwrap();
    assert!(out["edges"].as_array().unwrap().is_empty(), "{out}");
    assert_eq!(
        kind_of(d.call("edge.retire", json!({ "id": edge["id"] }))),
        "not_found"
    );
    let r = d.call("node.retire", json!({ "id": first["id"] })).unwrap();
    assert_eq!(r["edges_retired"], 1, "the tag edge: {r}");
    assert_eq!(
        kind_of(d.call("node.get", json!({ "id": first["id"] }))),
        "node_not_found"
    );
    // A retired key starts a new node.
    let reborn = d
        .call("node.upsert", json!({ "kind": "person", "key": "ada" }))
        .unwrap();
    assert_eq!(reborn["created"], true);
    assert_ne!(reborn["id"], first["id"]);
}

#[test]
fn bad_graph_writes_are_refused_and_write_nothing() {
    let d = Daemon::start();
    let vault = watched_vault(&d);
    let note = d
        .call("node.get", json!({ "path": vault.join("Garden.md") }))
        .unwrap();
    write(&vault.join("Beds.md"), "See [[Garden]].\n");
    d.call("ingest.path", json!({ "path": vault })).unwrap();
    let beds = d
        .call("node.get", json!({ "path": vault.join("Beds.md") }))
        .unwrap();
    let before = counts(&d);
    let check = |method: &str, params: Value, want: &str| {
        assert_eq!(
            kind_of(d.call(method, params.clone())),
            want,
            "{method} {params}"
        );
    };
    check(
        "node.upsert",
        json!({ "kind": "note", "key": "x" }),
        "invalid_params",
    );
    check(
        "node.upsert",
        json!({ "kind": "Not A Kind", "key": "x" }),
        "invalid_params",
    );
    check(
        "node.upsert",
        json!({ "kind": "person", "key": "  " }),
        "invalid_params",
    );
    check("node.upsert", json!({ "kind": "person" }), "invalid_params");
    check(
        "node.upsert",
        json!({ "kind": "person", "key": "x", "colour": "red" }),
        "invalid_params",
    );
    check(
        "node.upsert",
        json!({ "kind": "person", "key": "x", "client": "a b/c" }),
        "invalid_params",
    );
    check(
        "edge.link",
        json!({ "from": note["id"], "to": "no-such-node", "type": "related" }),
        "node_not_found",
    );
    check(
        "edge.link",
        json!({ "from": note["id"], "to": note["id"], "type": "links_to" }),
        "invalid_params",
    );
    check("node.retire", json!({ "id": note["id"] }), "invalid_params");
    check(
        "node.retire",
        json!({ "id": "no-such-node" }),
        "node_not_found",
    );
    check("edge.retire", json!({ "id": "no-such-edge" }), "not_found");
    // A link read from a file is found by its id, and refused.
    let links = d
        .call(
            "graph.neighbors",
            json!({ "id": beds["id"], "direction": "out", "edge_types": ["links_to"] }),
        )
        .unwrap();
    let link = &links["edges"][0];
    assert!(
        link["id"].is_string(),
        "Beds.md links to Garden.md: {links}"
    );
    check("edge.retire", json!({ "id": link["id"] }), "invalid_params");
    assert_eq!(counts(&d), before, "a refused write changed the store");
    assert!(
        d.call("node.get", json!({ "id": note["id"] })).is_ok(),
        "the note survived"
    );
}

#[test]
fn note_write_creates_indexes_and_refuses_escapes() {
    let d = Daemon::start();
    let vault = watched_vault(&d);
    let path = vault.join("ideas/Zeppelins.md");
    let w = d
        .call(
            "note.write",
            json!({ "path": path, "mode": "create", "client": "test-suite",
                "content": "# Zeppelins\n\nA hangar for quiet airships.\n" }),
        )
        .unwrap();
    assert_eq!(w["created"], true);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        "# Zeppelins\n\nA hangar for quiet airships.\n"
    );
    let node = d.call("node.get", json!({ "id": w["id"] })).unwrap();
    assert_eq!(node["title"], "Zeppelins");
    let hits = d
        .call("search.query", json!({ "query": "airships hangar" }))
        .unwrap();
    assert_eq!(hits["hits"][0]["node_id"], w["id"], "{hits}");

    // Create refuses an existing file; append keeps it and its id.
    let again = json!({ "path": path, "mode": "create", "content": "x" });
    assert_eq!(kind_of(d.call("note.write", again)), "already_exists");
    let appended = d
        .call(
            "note.write",
            json!({ "path": path, "mode": "append", "content": "Also blimps.\n" }),
        )
        .unwrap();
    assert_eq!(appended["id"], w["id"]);
    assert_eq!(appended["created"], false);
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .ends_with("airships.\nAlso blimps.\n")
    );
    let hits = d
        .call("search.query", json!({ "query": "blimps" }))
        .unwrap();
    assert_eq!(hits["hits"][0]["node_id"], w["id"], "{hits}");

    // Escapes: relative, `..`, outside every root, through a link, not Markdown.
    let outside = d.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, vault.join("door")).unwrap();
    for (p, why) in [
        ("ideas/Rel.md".to_owned(), "relative"),
        (
            format!("{}/ideas/../../outside/Up.md", vault.display()),
            "..",
        ),
        (format!("{}/Out.md", outside.display()), "outside"),
        (format!("{}/door/Linked.md", vault.display()), "symlink"),
        (format!("{}/script.sh", vault.display()), "not markdown"),
    ] {
        let r = d.call(
            "note.write",
            json!({ "path": p, "mode": "replace", "content": "# escaped\n" }),
        );
        assert_eq!(kind_of(r), "invalid_params", "{why}: {p}");
    }
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "a file was written outside the vault"
    );
    assert!(!vault.join("script.sh").exists());
    assert_eq!(
        kind_of(d.call(
            "note.write",
            json!({ "path": path, "mode": "overwrite", "content": "x" })
        )),
        "invalid_params"
    );
}

#[test]
fn backup_is_a_consistent_copy_made_while_running() {
    let d = Daemon::start();
    watched_vault(&d);
    d.call("node.upsert", json!({ "kind": "person", "key": "grace" }))
        .unwrap();
    let dest = d.dir.join("copy.db");
    let out = d.cli(&["backup", dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let db = rusqlite::Connection::open(&dest).unwrap();
    let ok: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
    let people: i64 = db
        .query_row(
            "SELECT count(*) FROM nodes WHERE kind = 'person' AND key = 'grace'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(people, 1);
    // The copy is never written over, and the path must be absolute.
    assert_eq!(
        kind_of(d.call("store.backup", json!({ "path": dest }))),
        "already_exists"
    );
    assert_eq!(
        kind_of(d.call("store.backup", json!({ "path": "copy2.db" }))),
        "invalid_params"
    );
    let out = d.cli(&["backup", dest.to_str().unwrap()]);
    assert!(!out.status.success());
}

/// The hits of `query` on written node `id`.
fn hits_on(d: &Daemon, query: &str, id: &Value) -> Vec<Value> {
    let r = d
        .call(
            "search.query",
            json!({ "query": query, "mode": "bm25", "k": 10 }),
        )
        .unwrap();
    r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|h| h["node_id"] == *id)
        .cloned()
        .collect()
}

#[test]
fn upserted_content_is_searchable_cited_to_its_write_until_retired() {
    let d = Daemon::start();
    watched_vault(&d);
    let ada = d
        .call(
            "node.upsert",
            json!({ "kind": "person", "key": "ada", "title": "Ada Lovelace",
                "content": "Wrote the first algorithm for the analytical engine: quixotryne.",
                "client": "test-suite" }),
        )
        .unwrap();
    wait_until("the upserted text is searchable", || {
        !hits_on(&d, "quixotryne", &ada["id"]).is_empty()
    });
    let hit = &hits_on(&d, "quixotryne", &ada["id"])[0];
    assert_eq!(hit["title"], "Ada Lovelace");
    assert!(
        hit["snippet"].as_str().unwrap().contains("quixotryne"),
        "{hit}"
    );
    assert_eq!(hit["written_by"]["extractor"], "client:test-suite", "{hit}");
    assert_eq!(hit["path"], "", "no file to cite: {hit}");

    // New content replaces the old in the index; a rebuild keeps written text.
    d.call(
        "node.upsert",
        json!({ "kind": "person", "key": "ada", "content": "Now about zorbulite." }),
    )
    .unwrap();
    wait_until("the new text replaces the old", || {
        !hits_on(&d, "zorbulite", &ada["id"]).is_empty()
            && hits_on(&d, "quixotryne", &ada["id"]).is_empty()
    });
    d.call("search.reindex", json!({})).unwrap();
    assert_eq!(hits_on(&d, "zorbulite", &ada["id"]).len(), 1);

    d.call("node.retire", json!({ "id": ada["id"] })).unwrap();
    wait_until("the retired node leaves search", || {
        hits_on(&d, "zorbulite", &ada["id"]).is_empty()
    });
}

fn recent(d: &Daemon, params: Value) -> Vec<Value> {
    let r = d.call("graph.recent", params).unwrap();
    let changes = r["changes"].as_array().unwrap().clone();
    let times: Vec<&str> = changes.iter().map(|c| c["at"].as_str().unwrap()).collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "not newest first: {r}"
    );
    changes
}

fn change_of<'a>(changes: &'a [Value], id: &Value) -> &'a Value {
    changes
        .iter()
        .find(|c| c["id"] == *id)
        .unwrap_or_else(|| panic!("{id} not among {changes:?}"))
}

#[test]
fn recent_changes_name_what_changed_when_and_by_whom() {
    let d = Daemon::start();
    let vault = watched_vault(&d);
    let user = d.call("daemon.status", json!({})).unwrap()["user_id"].clone();
    let garden = d
        .call("node.get", json!({ "path": vault.join("Garden.md") }))
        .unwrap();
    write(
        &vault.join("Links.md"),
        "# Links\n\n#seeds [[Nowhere]] and [seeds](https://example.org/seeds).\n",
    );
    d.call("ingest.path", json!({ "path": vault })).unwrap();
    let all = recent(&d, json!({}));
    let g = change_of(&all, &garden["id"]);
    assert_eq!(g["change"], "created", "{g}");
    assert_eq!(g["via"], "file", "{g}");
    assert_eq!(g["title"], "Garden");
    assert_eq!(g["path"], vault.join("Garden.md").to_str().unwrap());
    assert_eq!(g["actor_id"], user);
    let first_hash = g["content_hash"].clone();
    assert!(first_hash.is_string(), "{g}");
    // Tags, URLs and link placeholders are parts of notes, not changes of their own.
    assert!(all.iter().all(|c| c["kind"] == "note"), "{all:?}");
    assert_eq!(all.len(), 2, "{all:?}");
    let links = d
        .call("node.get", json!({ "path": vault.join("Links.md") }))
        .unwrap();
    let out = d
        .call(
            "graph.neighbors",
            json!({ "id": links["id"], "direction": "out" }),
        )
        .unwrap();
    let kinds: Vec<&str> = out["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["kind"].as_str())
        .collect();
    for part in ["tag", "placeholder", "url"] {
        assert!(kinds.contains(&part), "no {part} node to leave out: {out}");
    }

    let ada = d
        .call(
            "node.upsert",
            json!({ "kind": "person", "key": "ada", "title": "Ada", "client": "test-suite" }),
        )
        .unwrap();
    let all = recent(&d, json!({}));
    assert_eq!(all[0]["id"], ada["id"], "the newest change first: {all:?}");
    assert_eq!(all[0]["change"], "created");
    assert_eq!(all[0]["via"], "client");
    assert_eq!(all[0]["client"], "test-suite");
    assert!(all[0]["path"].is_null());

    // An edited file is an update of its note, cited to the new version.
    write(
        &vault.join("Garden.md"),
        "# Garden\n\nTomatoes, basil and sage.\n",
    );
    d.call("ingest.path", json!({ "path": vault })).unwrap();
    let g = change_of(&recent(&d, json!({})), &garden["id"]).clone();
    assert_eq!(g["change"], "updated", "{g}");
    assert_ne!(g["content_hash"], first_hash, "{g}");

    d.call(
        "node.retire",
        json!({ "id": ada["id"], "client": "test-suite" }),
    )
    .unwrap();
    let all = recent(&d, json!({ "kinds": ["person"] }));
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["change"], "retired", "{all:?}");
    let notes = recent(&d, json!({ "kinds": ["note"] }));
    assert!(notes.iter().all(|c| c["kind"] == "note"), "{notes:?}");

    // Pages: limit, offset and `more`.
    let page = d.call("graph.recent", json!({ "limit": 1 })).unwrap();
    assert_eq!(page["changes"].as_array().unwrap().len(), 1);
    assert_eq!(page["more"], true);
    let rest = d
        .call("graph.recent", json!({ "limit": 200, "offset": 1 }))
        .unwrap();
    assert_eq!(rest["more"], false);
    assert_ne!(rest["changes"][0]["id"], page["changes"][0]["id"]);
    assert!(
        recent(&d, json!({ "since": "2999-01-01T00:00:00Z" })).is_empty(),
        "nothing changed in the future"
    );
    let since = g["at"].as_str().unwrap();
    assert!(
        recent(&d, json!({ "since": since }))
            .iter()
            .any(|c| c["id"] == garden["id"])
    );

    for bad in [
        json!({ "limit": 0 }),
        json!({ "limit": 201 }),
        json!({ "offset": 10_001 }),
        json!({ "since": "yesterday" }),
        json!({ "kinds": vec!["note"; 33] }),
        json!({ "colour": "red" }),
    ] {
        assert_eq!(
            kind_of(d.call("graph.recent", bad.clone())),
            "invalid_params",
            "{bad}"
        );
    }
}

/// The request lines of the README's ```jsonl blocks.
fn readme_examples() -> Vec<Value> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        match line.trim() {
            "```jsonl" => inside = true,
            "```" => inside = false,
            l if inside && !l.is_empty() => out.push(serde_json::from_str(l).unwrap()),
            _ => {}
        }
    }
    out
}

/// The parts of JSON Schema the derived schemas use: type, properties, required,
/// additionalProperties, items, enum, const, oneOf/anyOf. Returns what does not fit.
fn schema_errors(schema: &Value, v: &Value, at: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if let Some(alts) = schema
        .get("oneOf")
        .or(schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        if !alts.iter().any(|a| schema_errors(a, v, at).is_empty()) {
            errs.push(format!("{at}: {v} fits none of {schema}"));
        }
        return errs;
    }
    if let Some(c) = schema.get("const")
        && c != v
    {
        errs.push(format!("{at}: {v} is not {c}"));
    }
    if let Some(e) = schema.get("enum").and_then(Value::as_array)
        && !e.contains(v)
    {
        errs.push(format!("{at}: {v} not in {e:?}"));
    }
    let type_ok = |t: &str| match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        _ => true,
    };
    match schema.get("type") {
        Some(Value::String(t)) if !type_ok(t) => errs.push(format!("{at}: {v} is not {t}")),
        Some(Value::Array(ts)) if !ts.iter().filter_map(Value::as_str).any(type_ok) => {
            errs.push(format!("{at}: {v} is none of {ts:?}"))
        }
        _ => {}
    }
    if let Some(obj) = v.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        for r in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if !obj.contains_key(r.as_str().unwrap()) {
                errs.push(format!("{at}: missing {r}"));
            }
        }
        for (k, x) in obj {
            match props.and_then(|p| p.get(k)) {
                Some(s) => errs.extend(schema_errors(s, x, &format!("{at}.{k}"))),
                None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                    errs.push(format!("{at}: unknown field {k}"))
                }
                None => {}
            }
        }
    }
    if let (Some(items), Some(arr)) = (schema.get("items"), v.as_array()) {
        for (i, x) in arr.iter().enumerate() {
            errs.extend(schema_errors(items, x, &format!("{at}[{i}]")));
        }
    }
    errs
}

#[test]
fn discover_schemas_validate_the_readme_examples() {
    let d = Daemon::start();
    let doc = d.call("rpc.discover", json!({})).unwrap();
    let examples = readme_examples();
    assert!(examples.len() >= 5, "README examples: {examples:?}");
    // A method's params as one object schema, strict about unknown fields as the daemon is.
    let params_schema = |method: &str| {
        let m = doc["methods"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == method)
            .unwrap_or_else(|| panic!("README example of an unlisted method {method}"));
        let mut properties = serde_json::Map::new();
        let mut required = Vec::new();
        for p in m["params"].as_array().unwrap() {
            properties.insert(p["name"].as_str().unwrap().into(), p["schema"].clone());
            if p["required"] == true {
                required.push(p["name"].clone());
            }
        }
        json!({ "type": "object", "properties": properties,
            "required": required, "additionalProperties": false })
    };
    for ex in &examples {
        let method = ex["method"].as_str().unwrap();
        let errs = schema_errors(&params_schema(method), &ex["params"], method);
        assert!(errs.is_empty(), "README example of {method}: {errs:?}");
    }
    // The check refuses what the daemon refuses.
    for (method, bad) in [
        ("node.upsert", json!({ "kind": "person" })),
        (
            "node.upsert",
            json!({ "kind": "person", "key": "x", "colour": 1 }),
        ),
        (
            "note.write",
            json!({ "path": "/a.md", "content": "", "mode": "overwrite" }),
        ),
        (
            "graph.neighbors",
            json!({ "id": "x", "direction": "sideways" }),
        ),
    ] {
        assert!(
            !schema_errors(&params_schema(method), &bad, method).is_empty(),
            "{method} {bad}"
        );
        assert_eq!(kind_of(d.call(method, bad)), "invalid_params");
    }
}
