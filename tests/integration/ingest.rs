//! Ingestion and watching through the real daemon: the fixture vault, live changes in a
//! watched folder, changes made while the daemon was down, and the real-world vaults.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::harness::{Daemon, temp_layout, wait_until};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dst = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dst);
        } else {
            std::fs::copy(e.path(), dst).unwrap();
        }
    }
}

/// A folder `name` in the daemon's directory holding `files` (relative path, contents).
fn new_vault(d: &Daemon, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let vault = d.dir.join(name);
    std::fs::create_dir_all(&vault).unwrap();
    for (rel, body) in files {
        let path = vault.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    vault
}

fn node_by_path(d: &Daemon, p: &Path) -> Result<Value, String> {
    d.call("node.get", json!({ "path": p }))
        .map_err(|e| e.kind().unwrap_or("").to_owned())
}

fn wait_node(d: &Daemon, p: &Path) -> Value {
    let mut out = Value::Null;
    wait_until(
        &format!("node for {}", p.display()),
        || match node_by_path(d, p) {
            Ok(v) => {
                out = v;
                true
            }
            Err(_) => false,
        },
    );
    out
}

fn wait_gone(d: &Daemon, p: &Path) {
    wait_until(&format!("{} to stop answering", p.display()), || {
        node_by_path(d, p) == Err("node_not_found".to_owned())
    });
}

fn out_links(d: &Daemon, id: &str) -> Vec<(String, String)> {
    let g = d
        .call(
            "graph.neighbors",
            json!({ "id": id, "direction": "out", "edge_types": ["links_to"] }),
        )
        .unwrap();
    let mut v: Vec<(String, String)> = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().unwrap().to_owned(),
                n["title"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn the_fixture_vault_becomes_a_cited_graph() {
    let d = Daemon::start();
    let vault = d.dir.join("vault");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vault"),
        &vault,
    );
    let report = d.call("ingest.path", json!({ "path": vault })).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    let status = d.call("daemon.status", json!({})).unwrap();
    let counts = &status["counts"];
    // 11 notes + notes.txt + script.py + page.html are parsed; the PNG is recorded as skipped.
    assert_eq!(counts["sources"]["indexed"], 14, "{counts}");
    assert_eq!(counts["sources"]["skipped"], 1, "{counts}");
    assert_eq!(counts["nodes"]["note"], 14, "{counts}");
    for kind in ["section", "chunk", "tag", "placeholder"] {
        assert!(
            counts["nodes"][kind].as_u64().unwrap_or(0) > 0,
            "{kind}: {counts}"
        );
    }
    for t in [
        "links_to",
        "has_section",
        "has_chunk",
        "tagged",
        "child_of",
        "related",
        "up",
    ] {
        assert!(
            counts["edges"][t].as_u64().unwrap_or(0) > 0,
            "{t}: {counts}"
        );
    }

    // By title, by alias, by path: the same note, with its citation.
    let home = d.call("node.get", json!({ "title": "home" })).unwrap();
    let by_alias = d.call("node.get", json!({ "title": "Dashboard" })).unwrap();
    let by_path = node_by_path(&d, &vault.join("Home.md")).unwrap();
    assert_eq!(home["id"], by_alias["id"]);
    assert_eq!(home["id"], by_path["id"]);
    assert_eq!(home["kind"], "note");
    let prov = &home["provenance"][0];
    assert_eq!(prov["path"], vault.join("Home.md").display().to_string());
    assert_eq!(prov["lines"][0], 1);
    assert_eq!(prov["extractor"], "brain-parse");
    assert_eq!(prov["content_hash"].as_str().unwrap().len(), 64);
    assert!(prov["actor_id"].as_str().unwrap().starts_with("user:"));

    // Beta's `[[Dashboard|home]]` reaches Home through its alias.
    let back = d
        .call("graph.backlinks", json!({ "id": home["id"] }))
        .unwrap();
    assert!(
        back["nodes"].as_array().unwrap().iter().any(|n| n["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("Projects/Beta.md"))),
        "{back}"
    );

    let links = out_links(&d, home["id"].as_str().unwrap());
    assert!(
        links.contains(&("note".into(), "Reading List".into())),
        "{links:?}"
    );
    assert!(
        links.contains(&("note".into(), "Project Alpha".into())),
        "{links:?}"
    );
    assert!(
        links.contains(&("placeholder".into(), "Someday Maybe".into())),
        "{links:?}"
    );
    // `[[Ideas]]` resolves to the copy closest to the root.
    let ideas = d
        .call("node.get", json!({ "path": vault.join("Ideas.md") }))
        .unwrap();
    let back = d
        .call("graph.backlinks", json!({ "id": ideas["id"] }))
        .unwrap();
    let names: Vec<&str> = back["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["title"].as_str())
        .collect();
    assert!(names.contains(&"Home"), "{names:?}");

    // Nothing failed, and the skipped file says why.
    let skipped = d
        .call("source.list", json!({ "status": "skipped" }))
        .unwrap();
    assert_eq!(skipped["sources"][0]["reason"], "binary", "{skipped}");
    d.stop();
}

/// The single edge of `edge_type` out of `id`, and the node it reaches.
fn only_out(d: &Daemon, id: &Value, edge_type: &str) -> (Value, Value) {
    let g = d
        .call(
            "graph.neighbors",
            json!({ "id": id, "direction": "out", "edge_types": [edge_type] }),
        )
        .unwrap();
    assert_eq!(g["edges"].as_array().unwrap().len(), 1, "{g}");
    let node = d
        .call("node.get", json!({ "id": g["edges"][0]["dst_id"] }))
        .unwrap();
    (g["edges"][0].clone(), node)
}

#[test]
fn every_fact_cites_its_span_in_the_file_version_that_states_it() {
    let d = Daemon::start();
    let a_v1 = "# Top\n\nSee [[b]] and #topic/sub.\n";
    let vault = new_vault(
        &d,
        "vault",
        &[("a.md", a_v1), ("b.md", "Tagged #topic/sub too.\n")],
    );
    d.call("ingest.path", json!({ "path": vault })).unwrap();
    let a = node_by_path(&d, &vault.join("a.md")).unwrap();
    let cites = a["provenance"].as_array().unwrap();
    assert_eq!(cites.len(), 1, "{a}");
    assert_eq!(cites[0]["lines"], json!([1, 4]), "{a}");
    assert_eq!(cites[0]["bytes"], json!([0, a_v1.len()]), "{a}");
    let hash_v1 = cites[0]["content_hash"].clone();
    assert_eq!(hash_v1.as_str().unwrap().len(), 64);

    // The link edge cites `[[b]]`, in the same version.
    let (link, _) = only_out(&d, &a["id"], "links_to");
    let at = a_v1.find("[[b]]").unwrap();
    assert_eq!(link["provenance"].as_array().unwrap().len(), 1, "{link}");
    assert_eq!(
        link["provenance"][0]["bytes"],
        json!([at, at + 5]),
        "{link}"
    );
    assert_eq!(link["provenance"][0]["lines"], json!([3, 3]), "{link}");
    assert_eq!(link["provenance"][0]["content_hash"], hash_v1);
    assert_eq!(link["provenance"][0]["extractor"], "brain-parse");
    // The section cites its heading line.
    let (has_section, section) = only_out(&d, &a["id"], "has_section");
    assert_eq!(section["title"], "Top");
    assert_eq!(
        section["provenance"][0]["lines"],
        json!([1, 1]),
        "{section}"
    );
    assert_eq!(has_section["provenance"][0]["lines"], json!([1, 1]));
    // A tag stated by two files is cited by both.
    let (_, tag) = only_out(&d, &a["id"], "tagged");
    let paths: HashSet<&str> = tag["provenance"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert_eq!(paths.len(), 2, "{tag}");

    // A line added above: the same facts, re-cited where they now are, in the new version.
    let a_v2 = format!("intro\n{a_v1}");
    std::fs::write(vault.join("a.md"), &a_v2).unwrap();
    d.call("ingest.path", json!({ "path": vault })).unwrap();
    let (link2, _) = only_out(&d, &a["id"], "links_to");
    assert_eq!(link2["id"], link["id"]);
    assert_eq!(link2["provenance"].as_array().unwrap().len(), 1, "{link2}");
    assert_eq!(
        link2["provenance"][0]["bytes"],
        json!([at + 6, at + 11]),
        "{link2}"
    );
    assert_eq!(link2["provenance"][0]["lines"], json!([4, 4]), "{link2}");
    let hash_v2 = &link2["provenance"][0]["content_hash"];
    assert_ne!(hash_v2, &hash_v1);
    let (_, section2) = only_out(&d, &a["id"], "has_section");
    assert_eq!(section2["id"], section["id"]);
    assert_eq!(section2["provenance"][0]["lines"], json!([2, 2]));
    assert_eq!(&section2["provenance"][0]["content_hash"], hash_v2);
    let (_, tag2) = only_out(&d, &a["id"], "tagged");
    assert_eq!(tag2["provenance"].as_array().unwrap().len(), 2, "{tag2}");
    let a2 = node_by_path(&d, &vault.join("a.md")).unwrap();
    assert_eq!(a2["provenance"][0]["bytes"], json!([0, a_v2.len()]));
    d.stop();
}

#[test]
fn a_link_to_an_alias_defined_later_in_the_same_ingest_resolves_the_first_time() {
    let d = Daemon::start();
    // `A.md` is walked and written before `Z.md`, whose front matter gives the alias.
    let vault = new_vault(
        &d,
        "aliases",
        &[
            ("A.md", "See [[Zed Alias]].\n"),
            ("Z.md", "---\naliases: [Zed Alias]\n---\nZed.\n"),
        ],
    );
    let report = d.call("ingest.path", json!({ "path": vault })).unwrap();
    assert_eq!(report["indexed"], 2, "{report}");
    // Aliases are registered before any link is written: nothing needed redoing.
    assert_eq!(report["reresolved"], 0, "{report}");
    let a = node_by_path(&d, &vault.join("A.md")).unwrap();
    let z = node_by_path(&d, &vault.join("Z.md")).unwrap();
    let links = d
        .call(
            "graph.neighbors",
            json!({ "id": a["id"], "direction": "out", "edge_types": ["links_to"] }),
        )
        .unwrap();
    let targets: Vec<&Value> = links["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| &n["id"])
        .collect();
    assert_eq!(targets, [&z["id"]], "{links}");
    let status = d.call("daemon.status", json!({})).unwrap();
    assert_eq!(
        status["counts"]["nodes"]["placeholder"]
            .as_u64()
            .unwrap_or(0),
        0,
        "{status}"
    );
}

#[test]
fn a_note_deleted_then_recreated_elsewhere_with_the_same_bytes_keeps_its_id() {
    // A copy-then-delete move seen as two separate changes: first the delete, then (another
    // sync later) the new file.
    let d = Daemon::start();
    let body = "# Trip\n\nPacking list for [[Lisbon]].\n";
    let vault = new_vault(&d, "moves", &[("trip.md", body), ("empty.md", "")]);
    std::fs::create_dir_all(vault.join("archive")).unwrap();
    d.call("watch.add", json!({ "path": vault })).unwrap();
    let old = wait_node(&d, &vault.join("trip.md"));
    let old_empty = wait_node(&d, &vault.join("empty.md"));

    std::fs::remove_file(vault.join("trip.md")).unwrap();
    std::fs::remove_file(vault.join("empty.md")).unwrap();
    wait_gone(&d, &vault.join("trip.md"));
    wait_gone(&d, &vault.join("empty.md"));

    std::fs::write(vault.join("archive/trip.md"), body).unwrap();
    std::fs::write(vault.join("archive/empty.md"), "").unwrap();
    let new = wait_node(&d, &vault.join("archive/trip.md"));
    assert_eq!(new["id"], old["id"], "the moved note keeps its id");
    // Its facts land with the next write: cited at the new path, the link current again.
    let path = vault.join("archive/trip.md").display().to_string();
    wait_until("the moved note's facts", || {
        node_by_path(&d, &vault.join("archive/trip.md"))
            .is_ok_and(|n| n["provenance"][0]["path"] == path.as_str() && n["title"] == "Trip")
    });
    let links = out_links(&d, new["id"].as_str().unwrap());
    assert_eq!(links, [("placeholder".to_owned(), "Lisbon".to_owned())]);
    // Empty files are all alike: a new empty file is a new note.
    let new_empty = wait_node(&d, &vault.join("archive/empty.md"));
    assert_ne!(new_empty["id"], old_empty["id"]);
    let status = d.call("daemon.status", json!({})).unwrap();
    assert_eq!(status["counts"]["sources"]["indexed"], 2, "{status}");
}

#[test]
fn a_note_copied_then_deleted_keeps_its_id_at_the_copy() {
    // A move by copy-then-delete seen as two changes: first the copy appears (a new note),
    // then the original goes. The copy takes over the original's id.
    let d = Daemon::start();
    let body = "# Recipe\n\nBread with [[Flour]].\n";
    let vault = new_vault(
        &d,
        "copies",
        &[("recipe.md", body), ("index.md", "See [[recipe]].\n")],
    );
    std::fs::create_dir_all(vault.join("kitchen")).unwrap();
    d.call("watch.add", json!({ "path": vault })).unwrap();
    let original = wait_node(&d, &vault.join("recipe.md"));

    std::fs::write(vault.join("kitchen/recipe.md"), body).unwrap();
    let copy = wait_node(&d, &vault.join("kitchen/recipe.md"));
    assert_ne!(copy["id"], original["id"]);

    std::fs::remove_file(vault.join("recipe.md")).unwrap();
    wait_gone(&d, &vault.join("recipe.md"));
    wait_until("the copy to take the original's id", || {
        node_by_path(&d, &vault.join("kitchen/recipe.md")).is_ok_and(|n| n["id"] == original["id"])
    });
    let err = d
        .call("node.get", json!({ "id": copy["id"] }))
        .map_err(|e| e.kind().unwrap_or("").to_owned())
        .unwrap_err();
    assert_eq!(err, "node_not_found");
    // Links to it follow: `[[recipe]]` in index.md now reaches the original id.
    let index = node_by_path(&d, &vault.join("index.md")).unwrap();
    wait_until("index's link to follow", || {
        d.call(
            "graph.neighbors",
            json!({ "id": index["id"], "direction": "out", "edge_types": ["links_to"] }),
        )
        .is_ok_and(|g| {
            g["nodes"]
                .as_array()
                .is_some_and(|n| n.len() == 1 && n[0]["id"] == original["id"])
        })
    });
    wait_until("the copy's facts under the original id", || {
        out_links(&d, original["id"].as_str().unwrap())
            == [("placeholder".to_owned(), "Flour".to_owned())]
    });
    let status = d.call("daemon.status", json!({})).unwrap();
    assert_eq!(status["counts"]["sources"]["indexed"], 2, "{status}");
}

#[test]
fn a_note_ignored_for_a_while_comes_back_with_its_id() {
    let d = Daemon::start();
    let vault = new_vault(&d, "ignored", &[("x.md", "# X\n\nStays itself.\n")]);
    d.call("ingest.path", json!({ "path": vault })).unwrap();
    let before = node_by_path(&d, &vault.join("x.md")).unwrap();

    std::fs::write(vault.join(".brainignore"), "x.md\n").unwrap();
    d.call("ingest.path", json!({ "path": vault })).unwrap();
    let err = node_by_path(&d, &vault.join("x.md")).unwrap_err();
    assert!(err.contains("node_not_found"), "{err}");

    std::fs::remove_file(vault.join(".brainignore")).unwrap();
    d.call("ingest.path", json!({ "path": vault })).unwrap();
    let after = node_by_path(&d, &vault.join("x.md")).unwrap();
    assert_eq!(after["id"], before["id"]);
    assert_eq!(after["title"], "X");
    assert_eq!(after["provenance"].as_array().unwrap().len(), 1, "{after}");
}

#[test]
fn a_watched_folder_stays_in_step_and_keeps_ids() {
    let d = Daemon::start();
    let vault = d.dir.join("notes");
    std::fs::create_dir_all(vault.join("sub")).unwrap();
    std::fs::write(vault.join("a.md"), "# A\n\nSee [[b]].\n").unwrap();
    std::fs::write(vault.join("b.md"), "# B\n\nBee.\n").unwrap();
    d.call("watch.add", json!({ "path": vault })).unwrap();
    let list = d.call("watch.list", json!({})).unwrap();
    assert_eq!(
        list["roots"][0]["path"],
        std::fs::canonicalize(&vault).unwrap().display().to_string()
    );
    let a = wait_node(&d, &vault.join("a.md"));
    let id = a["id"].as_str().unwrap().to_owned();
    // The note exists as soon as its file is registered; its links land with its facts.
    wait_until("a's link to b", || {
        out_links(&d, &id) == [("note".to_owned(), "B".to_owned())]
    });

    // Create.
    std::fs::write(vault.join("c.md"), "new note #fresh\n").unwrap();
    wait_node(&d, &vault.join("c.md"));

    // Edit: the note keeps its id, the old chunk is retired.
    std::fs::write(vault.join("a.md"), "# A\n\nSee [[b]] and [[c]].\n").unwrap();
    wait_until("edit to show", || out_links(&d, &id).len() == 2);
    assert_eq!(node_by_path(&d, &vault.join("a.md")).unwrap()["id"], id);

    // Atomic save: write a temp file, rename it over the original.
    std::fs::write(vault.join(".a.md.tmp"), "# A\n\nOnly [[c]] now.\n").unwrap();
    std::fs::rename(vault.join(".a.md.tmp"), vault.join("a.md")).unwrap();
    wait_until("atomic save to show", || {
        out_links(&d, &id) == [("note".to_owned(), "c".to_owned())]
    });
    assert_eq!(node_by_path(&d, &vault.join("a.md")).unwrap()["id"], id);

    // Rename, then move into a folder: same id, the old path stops answering.
    std::fs::rename(vault.join("a.md"), vault.join("renamed.md")).unwrap();
    let renamed = wait_node(&d, &vault.join("renamed.md"));
    assert_eq!(renamed["id"], id);
    wait_gone(&d, &vault.join("a.md"));
    std::fs::rename(vault.join("renamed.md"), vault.join("sub/moved.md")).unwrap();
    let moved = wait_node(&d, &vault.join("sub/moved.md"));
    assert_eq!(moved["id"], id);
    wait_gone(&d, &vault.join("renamed.md"));

    // Delete: the target's facts are retired and the link falls back to a placeholder; the
    // note coming back resolves it again.
    std::fs::remove_file(vault.join("c.md")).unwrap();
    wait_gone(&d, &vault.join("c.md"));
    wait_until("link to fall back to a placeholder", || {
        out_links(&d, &id) == [("placeholder".to_owned(), "c".to_owned())]
    });
    std::fs::write(vault.join("c.md"), "back again\n").unwrap();
    wait_until("link to resolve again", || {
        out_links(&d, &id) == [("note".to_owned(), "c".to_owned())]
    });
    // Nothing points at the placeholder or at c's old tag any more: both are retired.
    wait_until("orphaned placeholder and tag to be retired", || {
        let s = d.call("daemon.status", json!({})).unwrap();
        let n = |k: &str| s["counts"]["nodes"][k].as_i64().unwrap_or(0);
        n("placeholder") == 0 && n("tag") == 0
    });

    let status = d.call("daemon.status", json!({})).unwrap();
    assert_eq!(status["watcher"]["state"], "watching");
    assert_references_hold(&d);
    d.call("watch.remove", json!({ "path": vault })).unwrap();
    wait_gone(&d, &vault.join("sub/moved.md"));
    assert_references_hold(&d);
    d.stop();
}

#[test]
fn changes_made_while_the_daemon_was_down_are_picked_up() {
    let (temp, data, socket) = temp_layout();
    let vault: PathBuf = temp.path().join("notes");
    std::fs::create_dir_all(&vault).unwrap();
    std::fs::write(vault.join("keep.md"), "stays\n").unwrap();
    std::fs::write(vault.join("edit.md"), "before\n").unwrap();
    std::fs::write(vault.join("gone.md"), "going\n").unwrap();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    d.call("watch.add", json!({ "path": vault })).unwrap();
    let edit = wait_node(&d, &vault.join("edit.md"));
    wait_node(&d, &vault.join("gone.md"));
    d.stop();

    std::fs::write(vault.join("edit.md"), "after, with more text\n").unwrap();
    std::fs::remove_file(vault.join("gone.md")).unwrap();
    std::fs::write(vault.join("new.md"), "arrived\n").unwrap();

    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    wait_node(&d, &vault.join("new.md"));
    wait_gone(&d, &vault.join("gone.md"));
    wait_until("the edit to be read", || {
        let n = node_by_path(&d, &vault.join("edit.md")).unwrap();
        let hash = n["provenance"][0]["content_hash"].clone();
        hash != edit["provenance"][0]["content_hash"] && n["id"] == edit["id"]
    });
    d.stop();
}

/// The real vaults from ../shared/data: every Markdown file becomes a note, and every
/// wikilink that stays unresolved names a file the vault does not have.
#[test]
fn the_real_vaults_ingest_and_resolve_their_links() {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/vaults");
    if !base.is_dir() {
        eprintln!(
            "SKIPPED: {} is absent; the real-vault check needs it",
            base.display()
        );
        return;
    }
    let d = Daemon::start();
    for name in ["obsidian-help", "obsidian-hub"] {
        let vault = base.join(name);
        if !vault.is_dir() {
            eprintln!("SKIPPED: {} is absent", vault.display());
            continue;
        }
        let report = d.call("ingest.path", json!({ "path": vault })).unwrap();
        let mut md = Vec::new();
        collect_md(&vault, &mut md);
        assert_eq!(
            report["indexed"].as_u64().unwrap() as usize,
            md_count_with_others(&vault, md.len()),
            "{name}: {report}"
        );
        let canonical = std::fs::canonicalize(&vault).unwrap();
        let store = rusqlite::Connection::open(d.data_dir.join("brain.db")).unwrap();
        let notes: i64 = store
            .query_row(
                "SELECT count(*) FROM nodes n JOIN sources s ON s.id = n.source_id JOIN roots r ON r.id = s.root_id
                 WHERE n.kind = 'note' AND n.valid_to IS NULL AND r.path = ?1 AND s.rel_path LIKE '%.md'",
                [canonical.to_str().unwrap()],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(notes as usize, md.len(), "{name}: every .md file is a note");
        let syntax = brain::store::edge_props::sql_field("e.props", "syntax");
        let (total, resolved): (i64, i64) = store
            .query_row(
                &format!(
                    "SELECT count(*), sum(d.kind <> 'placeholder') FROM edges e
                   JOIN nodes s ON s.id = e.src_id JOIN sources src ON src.id = s.source_id
                   JOIN roots r ON r.id = src.root_id JOIN nodes d ON d.id = e.dst_id
                 WHERE e.type = 'links_to' AND e.valid_to IS NULL AND r.path = ?1
                   AND {syntax} = 'wikilink'"
                ),
                [canonical.to_str().unwrap()],
                |r| Ok((r.get(0)?, r.get::<_, Option<i64>>(1)?.unwrap_or(0))),
            )
            .unwrap();
        let share = resolved as f64 / total.max(1) as f64;
        eprintln!(
            "{name}: {} notes, {resolved}/{total} wikilinks resolved ({:.1}%)",
            md.len(),
            share * 100.0
        );
        assert!(total > 100, "{name}: too few wikilinks found: {total}");
        // Every unresolved wikilink target must really be missing from the vault.
        let stems: std::collections::HashSet<String> = md
            .iter()
            .map(|p| p.file_stem().unwrap().to_string_lossy().to_lowercase())
            .collect();
        let mut stmt = store
            .prepare(&format!(
                "SELECT DISTINCT d.title FROM edges e JOIN nodes d ON d.id = e.dst_id
                   JOIN nodes s ON s.id = e.src_id JOIN sources src ON src.id = s.source_id
                   JOIN roots r ON r.id = src.root_id
                 WHERE e.type = 'links_to' AND e.valid_to IS NULL AND d.kind = 'placeholder' AND r.path = ?1
                   AND {syntax} = 'wikilink'"
            ))
            .unwrap();
        let missing: Vec<String> = stmt
            .query_map([canonical.to_str().unwrap()], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for t in &missing {
            let last = t.rsplit('/').next().unwrap().to_lowercase();
            let last = last.strip_suffix(".md").unwrap_or(&last).to_owned();
            assert!(
                !stems.contains(&last),
                "{name}: [[{t}]] left unresolved but the vault has it"
            );
        }
        assert!(share > 0.9, "{name}: only {share:.3} of wikilinks resolved");
    }
    assert_references_hold(&d);
    d.stop();
}

/// Every reference in the store points at a row: ingest batches are written with the store's
/// foreign-key checks off (`Store::write_bulk`), so this is what keeps them honest.
fn assert_references_hold(d: &Daemon) {
    let store = rusqlite::Connection::open(d.data_dir.join("brain.db")).unwrap();
    let dangling: Vec<(String, i64, String)> = store
        .prepare("PRAGMA foreign_key_check")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        dangling,
        [],
        "rows whose references point nowhere (table, rowid, parent)"
    );
}

fn collect_md(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        if p.is_dir() {
            collect_md(&p, out);
        } else if name.ends_with(".md") {
            out.push(p);
        }
    }
}

/// Parsed files other than Markdown (JSON settings files count as code).
fn md_count_with_others(vault: &Path, md: usize) -> usize {
    let mut n = md;
    fn walk(d: &Path, n: &mut usize) {
        for e in std::fs::read_dir(d).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(&p, n);
            } else if name.ends_with(".json") {
                *n += 1;
            }
        }
    }
    walk(vault, &mut n);
    n
}

/// An ingest of more files than one write batch answers once every file is searchable by
/// words, however far the text index's own thread had got meanwhile, and says how long that
/// took.
#[test]
fn an_ingest_of_many_batches_answers_once_every_note_is_searchable() {
    let d = Daemon::start();
    // More than two write batches (256 files each), each note with a word of its own.
    let notes: Vec<(String, String)> = (0..700)
        .map(|i| {
            (
                format!("n{i:03}.md"),
                format!("# Note {i}\n\nword{i}x sits alone in this note.\n"),
            )
        })
        .collect();
    let files: Vec<(&str, &str)> = notes
        .iter()
        .map(|(p, b)| (p.as_str(), b.as_str()))
        .collect();
    let vault = new_vault(&d, "many", &files);
    let done = d.call("ingest.path", json!({ "path": vault })).unwrap();
    assert_eq!(done["indexed"], 700, "{done}");
    assert!(done["elapsed_ms"].as_u64().unwrap() > 0, "{done}");
    let status = d.call("daemon.status", json!({})).unwrap();
    assert_eq!(
        status["search"]["index_seq"], status["search"]["outbox_head"],
        "{status}"
    );
    for i in [0, 255, 256, 511, 512, 699] {
        let r = d
            .call(
                "search.query",
                json!({ "query": format!("word{i}x"), "mode": "bm25", "k": 3 }),
            )
            .unwrap();
        let hits = r["hits"].as_array().unwrap();
        assert_eq!(hits.len(), 1, "word{i}x: {r}");
        assert_eq!(hits[0]["title"], format!("Note {i}"), "{r}");
    }
}
