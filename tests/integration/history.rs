//! The graph's past through the socket and the CLI: `node.history`, `as_of` on `node.get`,
//! `graph.neighbors` and `graph.backlinks`, `include_retired`, and `brain export`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::cli::fixture_vault;
use crate::harness::{Daemon, stderr, stdout};

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn kind_of(r: Result<Value, brain::rpc::client::ClientError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.kind().unwrap_or("none").to_owned(),
    }
}

fn hash(text: &str) -> String {
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

const PLAN_V1: &str = "---\ntitle: First plan\n---\nSee [[Other]].\n";
const PLAN_V2: &str = "---\ntitle: Second plan\n---\nSee [[Third]] now, not the other one.\n";

/// A vault of three notes, ingested, then `Plan.md` edited (new title, its link moved from
/// Other to Third) and ingested again. Returns the vault and the ids of Plan, Other, Third.
fn edited_vault(d: &Daemon) -> (PathBuf, String, String, String) {
    let v = d.dir.join("vault");
    write(&v.join("Plan.md"), PLAN_V1);
    write(&v.join("Other.md"), "# Other\n");
    write(&v.join("Third.md"), "# Third\n");
    let v = std::fs::canonicalize(v).unwrap();
    d.call("ingest.path", json!({ "path": v })).unwrap();
    let id = |name: &str| {
        d.call("node.get", json!({ "path": v.join(name) })).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (plan, other, third) = (id("Plan.md"), id("Other.md"), id("Third.md"));
    write(&v.join("Plan.md"), PLAN_V2);
    d.call("ingest.path", json!({ "path": v })).unwrap();
    (v, plan, other, third)
}

fn ids(list: &Value) -> HashSet<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_edited_note_has_every_version_with_its_citations_and_edges() {
    let d = Daemon::start();
    let (v, plan, other, third) = edited_vault(&d);
    let h = d.call("node.history", json!({ "id": plan })).unwrap();
    assert_eq!(h["truncated"], false);
    let versions = h["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{h}");
    let (old, new) = (&versions[0], &versions[1]);
    assert_eq!(old["title"], "First plan");
    assert_eq!(new["title"], "Second plan");
    assert_eq!(
        old["valid_to"], new["valid_from"],
        "versions are contiguous"
    );
    assert!(new["valid_to"].is_null());
    assert!(old["valid_from"].as_str().unwrap() < old["valid_to"].as_str().unwrap());
    let path = v.join("Plan.md").to_string_lossy().into_owned();
    for (version, text) in [(old, PLAN_V1), (new, PLAN_V2)] {
        let cite = &version["provenance"][0];
        assert_eq!(cite["path"], path.as_str(), "{version}");
        assert_eq!(cite["content_hash"], hash(text), "{version}");
        assert_eq!(cite["bytes"], json!([0, text.len()]), "{version}");
    }
    assert_eq!(h["node"]["title"], "Second plan");

    // The link to Other held during the first version only; the one to Third holds now.
    let edges = h["edges"].as_array().unwrap();
    let link = |to: &str| {
        edges
            .iter()
            .find(|e| e["type"] == "links_to" && e["dst_id"] == to)
            .unwrap_or_else(|| panic!("no link to {to}: {h}"))
    };
    assert_eq!(link(&other)["valid_to"], old["valid_to"]);
    assert!(link(&third)["valid_to"].is_null());
    for to in [&other, &third] {
        let cite = &link(to)["provenance"][0];
        assert_eq!(cite["path"], path.as_str());
        assert!(cite["bytes"].is_array(), "{cite}");
    }
    assert!(
        link(&third)["provenance"][0]["content_hash"] == hash(PLAN_V2),
        "a link cites the version that states it"
    );
}

#[test]
fn as_of_answers_the_graph_as_it_was() {
    let d = Daemon::start();
    let (_, plan, other, third) = edited_vault(&d);
    let h = d.call("node.history", json!({ "id": plan })).unwrap();
    let before = h["versions"][0]["valid_from"].as_str().unwrap().to_owned();

    let then = d
        .call("node.get", json!({ "id": plan, "as_of": before }))
        .unwrap();
    assert_eq!(then["title"], "First plan");
    assert_eq!(then["provenance"][0]["content_hash"], hash(PLAN_V1));
    assert_eq!(then["valid_to"], h["versions"][0]["valid_to"]);
    let now = d.call("node.get", json!({ "id": plan })).unwrap();
    assert_eq!(now["title"], "Second plan");

    let around = |as_of: Option<&str>| {
        let mut p = json!({ "id": plan, "edge_types": ["links_to"] });
        if let Some(t) = as_of {
            p["as_of"] = json!(t);
        }
        ids(&d.call("graph.neighbors", p).unwrap()["nodes"])
    };
    assert_eq!(around(Some(&before)), HashSet::from([other.clone()]));
    assert_eq!(around(None), HashSet::from([third.clone()]));

    let back = |to: &str, as_of: Option<&str>| {
        let mut p = json!({ "id": to });
        if let Some(t) = as_of {
            p["as_of"] = json!(t);
        }
        let g = d.call("graph.backlinks", p).unwrap();
        ids(&g["nodes"])
    };
    assert!(back(&other, Some(&before)).contains(&plan));
    assert!(!back(&other, None).contains(&plan));
    assert!(!back(&third, Some(&before)).contains(&plan));
    assert!(back(&third, None).contains(&plan));
    // The neighbour answered as of then carries its version of then.
    let g = d
        .call("graph.backlinks", json!({ "id": other, "as_of": before }))
        .unwrap();
    let src = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == plan.as_str())
        .unwrap();
    assert_eq!(src["title"], "First plan");

    // Before the note existed there was nothing.
    let r = d.call(
        "node.get",
        json!({ "id": plan, "as_of": "2001-01-01T00:00:00Z" }),
    );
    assert_eq!(kind_of(r), "node_not_found");
}

#[test]
fn bad_as_of_is_refused_on_every_method() {
    let d = Daemon::start();
    let (_, plan, ..) = edited_vault(&d);
    for as_of in [
        "yesterday",
        "2026-13-01T00:00:00Z",
        "2999-01-01T00:00:00Z",
        "",
    ] {
        for (method, params) in [
            ("node.get", json!({ "id": plan, "as_of": as_of })),
            ("graph.neighbors", json!({ "id": plan, "as_of": as_of })),
            ("graph.backlinks", json!({ "id": plan, "as_of": as_of })),
            ("graph.export", json!({ "as_of": as_of })),
        ] {
            assert_eq!(
                kind_of(d.call(method, params)),
                "invalid_params",
                "{method} {as_of:?}"
            );
        }
    }
    let r = d.call("graph.export", json!({ "cursor": "nonsense" }));
    assert_eq!(kind_of(r), "invalid_params");
    let r = d.call("node.history", json!({ "id": "no-such-node" }));
    assert_eq!(kind_of(r), "node_not_found");
    // Nothing was written: the note is as it was.
    let now = d.call("node.get", json!({ "id": plan })).unwrap();
    assert_eq!(now["title"], "Second plan");
}

#[test]
fn written_nodes_keep_their_versions_and_a_retired_one_still_answers() {
    let d = Daemon::start();
    let first = d
        .call(
            "node.upsert",
            json!({ "kind": "person", "key": "ada", "title": "Ada", "client": "test" }),
        )
        .unwrap();
    let id = first["id"].as_str().unwrap().to_owned();
    d.call(
        "node.upsert",
        json!({ "kind": "person", "key": "ada", "title": "Ada Lovelace", "props": { "born": 1815 } }),
    )
    .unwrap();
    let h = d.call("node.history", json!({ "id": id })).unwrap();
    let versions = h["versions"].as_array().unwrap();
    assert_eq!(versions.len(), 2, "{h}");
    assert_eq!(versions[0]["title"], "Ada");
    assert_eq!(versions[1]["title"], "Ada Lovelace");
    assert_eq!(versions[1]["props"]["born"], 1815);
    assert_eq!(
        versions[0]["provenance"][0]["extractor"],
        versions[1]["provenance"][0]["extractor"]
    );
    let t0 = versions[0]["valid_from"].as_str().unwrap().to_owned();

    d.call("node.retire", json!({ "id": id })).unwrap();
    assert_eq!(
        kind_of(d.call("node.get", json!({ "id": id }))),
        "node_not_found"
    );
    let last = d
        .call("node.get", json!({ "id": id, "include_retired": true }))
        .unwrap();
    assert_eq!(last["title"], "Ada Lovelace");
    assert!(last["valid_to"].is_string(), "{last}");
    let then = d
        .call("node.get", json!({ "id": id, "as_of": t0 }))
        .unwrap();
    assert_eq!(then["title"], "Ada");
    let h = d.call("node.history", json!({ "id": id })).unwrap();
    assert_eq!(h["versions"].as_array().unwrap().len(), 2);
    assert_eq!(h["versions"][1]["valid_to"], last["valid_to"]);
}

/// Every line of a JSON-lines export, parsed.
fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstderr: {}",
        o.status,
        stderr(o)
    );
    stdout(o)
}

#[test]
fn export_jsonl_holds_every_note_and_link_with_citations() {
    let d = Daemon::start();
    let v = fixture_vault(&d, &d.dir);
    let out = d.dir.join("graph.jsonl");
    ok(&d.cli(&["export", "--output", out.to_str().unwrap()]));
    let all = lines(&std::fs::read_to_string(&out).unwrap());
    let nodes: Vec<&Value> = all.iter().filter(|l| l["record"] == "node").collect();
    let edges: Vec<&Value> = all.iter().filter(|l| l["record"] == "edge").collect();
    assert!(
        all.len() == nodes.len() + edges.len(),
        "every line is a node or an edge"
    );
    let node_ids: HashSet<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    let edge_ids: HashSet<&str> = edges.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(node_ids.len(), nodes.len(), "each node once");
    assert_eq!(edge_ids.len(), edges.len(), "each edge once");

    let listed = d
        .call("source.list", json!({ "status": "indexed" }))
        .unwrap();
    let mut notes = 0;
    for s in listed["sources"].as_array().unwrap() {
        let path = s["path"].as_str().unwrap();
        if !path.ends_with(".md") {
            continue;
        }
        notes += 1;
        let node = d.call("node.get", json!({ "path": path })).unwrap();
        let line = nodes
            .iter()
            .find(|n| n["id"] == node["id"])
            .unwrap_or_else(|| panic!("{path} not exported"));
        assert_eq!(line["title"], node["title"]);
        assert_eq!(line["provenance"][0]["path"], path, "{line}");
        assert_eq!(line["provenance"][0]["content_hash"], s["content_hash"]);
        // Every link out of it, with its citation.
        let g = d
            .call(
                "graph.neighbors",
                json!({ "id": node["id"], "direction": "out", "edge_types": ["links_to"] }),
            )
            .unwrap();
        for e in g["edges"].as_array().unwrap() {
            let line = edges
                .iter()
                .find(|l| l["id"] == e["id"])
                .unwrap_or_else(|| panic!("link {e} not exported"));
            assert_eq!(line["src_id"], node["id"]);
            assert_eq!(line["type"], "links_to");
            assert!(line["valid_to"].is_null());
            assert_eq!(line["provenance"][0]["path"], path, "{line}");
            assert!(line["provenance"][0]["bytes"].is_array(), "{line}");
        }
    }
    assert!(notes >= 10, "the fixture vault has its notes: {notes}");
    assert!(v.join("Home.md").exists());
    // Small pages give the same export.
    let mut paged: HashSet<String> = HashSet::new();
    let mut params = json!({ "limit": 7 });
    let mut pages = 0;
    loop {
        let page = d.call("graph.export", params.clone()).unwrap();
        pages += 1;
        assert!(
            page["nodes"].as_array().unwrap().len() + page["edges"].as_array().unwrap().len() <= 7
        );
        for x in page["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .chain(page["edges"].as_array().unwrap())
        {
            assert!(
                paged.insert(x["id"].as_str().unwrap().to_owned()),
                "{x} twice"
            );
        }
        match page["next_cursor"].as_str() {
            Some(c) => params = json!({ "cursor": c, "limit": 7 }),
            None => break,
        }
    }
    assert!(pages > 2);
    let whole: HashSet<String> = node_ids
        .iter()
        .chain(&edge_ids)
        .map(|s| s.to_string())
        .collect();
    assert_eq!(paged, whole);
}

#[test]
fn export_graphml_is_well_formed_and_as_of_shows_the_old_title() {
    let d = Daemon::start();
    let (_, plan, other, _) = edited_vault(&d);
    let h = d.call("node.history", json!({ "id": plan })).unwrap();
    let before = h["versions"][0]["valid_from"].as_str().unwrap().to_owned();

    let old = lines(&ok(&d.cli(&["export", "--as-of", &before])));
    let line = old.iter().find(|l| l["id"] == plan.as_str()).unwrap();
    assert_eq!(line["title"], "First plan");
    assert!(
        old.iter().any(|l| l["record"] == "edge"
            && l["src_id"] == plan.as_str()
            && l["dst_id"] == other.as_str()),
        "the link of then"
    );
    let now = lines(&ok(&d.cli(&["export"])));
    let line = now.iter().find(|l| l["id"] == plan.as_str()).unwrap();
    assert_eq!(line["title"], "Second plan");

    let out = d.dir.join("graph.graphml");
    ok(&d.cli(&["export", "--format", "graphml", "-o", out.to_str().unwrap()]));
    // Parsed by Python's XML parser, not by anything of ours.
    let script = "import sys, xml.etree.ElementTree as ET\n\
        ns = {'g': 'http://graphml.graphdrawing.org/xmlns'}\n\
        g = ET.parse(sys.argv[1]).getroot().find('g:graph', ns)\n\
        print(len(g.findall('g:node', ns)), len(g.findall('g:edge', ns)))\n\
        print([d.text for n in g.findall('g:node', ns) if n.get('id') == sys.argv[2] for d in n.findall('g:data', ns) if d.get('key') == 'title'][0])";
    let py = Command::new("python3")
        .args(["-c", script, out.to_str().unwrap(), &plan])
        .output()
        .expect("run python3");
    let text = ok(&py);
    let mut rows = text.lines();
    let counts: Vec<usize> = rows
        .next()
        .unwrap()
        .split(' ')
        .map(|n| n.parse().unwrap())
        .collect();
    let json_nodes = now.iter().filter(|l| l["record"] == "node").count();
    let json_edges = now.iter().filter(|l| l["record"] == "edge").count();
    assert_eq!(counts, [json_nodes, json_edges]);
    assert_eq!(rows.next(), Some("Second plan"));

    let bad = d.cli(&["export", "--as-of", "tomorrow-ish"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("as_of"), "{}", stderr(&bad));
}
