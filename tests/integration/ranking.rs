//! Ranking as people search notes: question words, Obsidian comments and note titles, through
//! the real daemon; and `brain eval questions` on a small folder with the tiny model.

use std::path::Path;

use serde_json::{Value, json};

use crate::embed::tiny;
use crate::harness::{Daemon, stderr, temp_layout};

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn bm25(d: &Daemon, query: &str) -> Vec<Value> {
    let r = d
        .call(
            "search.query",
            json!({ "query": query, "mode": "bm25", "k": 10 }),
        )
        .expect("search.query");
    r["hits"].as_array().unwrap().clone()
}

fn titles(hits: &[Value]) -> Vec<&str> {
    hits.iter().map(|h| h["title"].as_str().unwrap()).collect()
}

#[test]
fn a_question_word_in_a_title_or_path_does_not_outrank_a_content_match() {
    let d = Daemon::start();
    let v = d.dir.join("vault");
    // Titles and paths made of question words, as in a real vault (`doing`, `muhammadv-i`).
    write(&v.join("doing.md"), "A list of chores for the week.\n");
    write(&v.join("people/muhammadv-i.md"), "Profile page.\n");
    write(
        &v.join("How/What I Do.md"),
        "# What I Do\n\nConsulting work.\n",
    );
    write(
        &v.join("garden/Tomatoes.md"),
        "# Tomatoes\n\nWater tomatoes deeply twice a week.\n",
    );
    d.call("ingest.path", json!({ "path": v })).unwrap();

    let hits = bm25(&d, "how do I water tomatoes");
    assert_eq!(titles(&hits), ["Tomatoes"], "{hits:?}");
    // A question of nothing but question words matches nothing at all.
    assert!(bm25(&d, "how do I").is_empty());
}

#[test]
fn comments_are_neither_searchable_nor_shown() {
    let d = Daemon::start();
    let v = d.dir.join("vault");
    write(
        &v.join("Lanterns.md"),
        "# Lanterns\n\nPaper lanterns glow %%zeppelin plans%% at night.\n\n%%\nA hidden \
         paragraph about zeppelin hangars.\n%%\n\nMore about lanterns.\n",
    );
    d.call("ingest.path", json!({ "path": v })).unwrap();

    assert!(bm25(&d, "zeppelin").is_empty());
    assert!(bm25(&d, "hangars").is_empty());
    let hits = bm25(&d, "lanterns glow");
    assert_eq!(titles(&hits), ["Lanterns"], "{hits:?}");
    let snippet = hits[0]["snippet"].as_str().unwrap();
    assert!(snippet.contains("glow"), "{snippet}");
    assert!(!snippet.contains("zeppelin"), "{snippet}");
    assert!(!snippet.contains("%%"), "{snippet}");
    // The citation still points at the file's own lines: the chunk runs from the title on.
    assert_eq!(hits[0]["lines"][0], 1, "{:?}", hits[0]);
}

#[test]
fn notes_are_titled_as_obsidian_titles_them() {
    let d = Daemon::start();
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/titles");
    let v = d.dir.join("titles");
    std::fs::create_dir_all(&v).unwrap();
    for e in std::fs::read_dir(&fixtures).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), v.join(e.file_name())).unwrap();
    }
    d.call("ingest.path", json!({ "path": v })).unwrap();
    for (file, title, aliases) in [
        (
            "front-matter.md",
            "Front Matter Wins",
            json!(["Opening Heading"]),
        ),
        ("opening-h1.md", "Opening Heading", json!([])),
        ("late-h1.md", "late-h1", json!(["This note in GitHub"])),
        ("comment-first.md", "After A Comment", json!([])),
        ("no-heading.md", "no-heading", json!([])),
    ] {
        let node = d.call("node.get", json!({ "path": v.join(file) })).unwrap();
        assert_eq!(node["title"], title, "{file}: {node}");
        assert_eq!(node["aliases"], aliases, "{file}: {node}");
    }
    // A first H1 kept as an alias still finds its note by words.
    let hits = bm25(&d, "github");
    assert_eq!(titles(&hits), ["late-h1"], "{hits:?}");
}

#[test]
fn eval_questions_scores_a_folder_beside_fts5() {
    let (temp, data, socket) = temp_layout();
    let notes = temp.path().join("notes");
    write(
        &notes.join("garden/Tomatoes.md"),
        "# Tomatoes\n\nWater tomatoes deeply twice a week; stake them in June.\n",
    );
    write(
        &notes.join("garden/Roses.md"),
        "# Roses\n\nPrune roses in late winter, just above an outward bud.\n",
    );
    write(
        &notes.join("Index.md"),
        "# Index\n\nSee [[Tomatoes]] and [[Roses]].\n",
    );
    let file = temp.path().join("questions.jsonl");
    write(
        &file,
        concat!(
            r#"{"question": "how do I water tomatoes", "answers": ["garden/Tomatoes.md"]}"#,
            "\n",
            r#"{"question": "when should I prune my roses", "answers": ["garden/Roses.md"]}"#,
            "\n",
        ),
    );
    let model = temp.path().join("tiny-bert");
    tiny::write_tiny_bert(&model, 3).unwrap();
    let out = crate::harness::brain_cmd(&data, &socket)
        .args(["eval", "questions", file.to_str().unwrap(), "--json"])
        .args(["--folder", notes.to_str().unwrap()])
        .args(["--model", model.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["questions"], 2, "{r}");
    assert_eq!(r["notes"], 3, "{r}");
    let systems: Vec<&str> = r["systems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["system"].as_str().unwrap())
        .collect();
    assert_eq!(
        systems,
        [
            "fts5-porter",
            "bm25",
            "bm25+graph",
            "dense",
            "dense+graph",
            "hybrid",
            "hybrid+graph"
        ],
        "{r}"
    );
    for s in r["systems"].as_array().unwrap() {
        if ["fts5-porter", "bm25"].contains(&s["system"].as_str().unwrap()) {
            assert_eq!(s["success_at_1"], 1.0, "{s}");
            assert_eq!(s["mrr_at_10"], 1.0, "{s}");
        }
    }

    // An answer that is not a note of the folder is refused before any work.
    write(
        &file,
        "{\"question\": \"x\", \"answers\": [\"missing.md\"]}\n",
    );
    let out = crate::harness::brain_cmd(&data, &socket)
        .args(["eval", "questions", file.to_str().unwrap()])
        .args(["--folder", notes.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing.md"), "{}", stderr(&out));
}

#[test]
fn graph_proximity_follows_links_from_the_best_hits_and_ignores_tags_everyone_has() {
    let d = Daemon::start();
    let v = d.dir.join("vault");
    write(
        &v.join("Alpha.md"),
        "# Alpha\n\nquokka quokka quokka sightings. #common\n\nSee [[Target One]].\n",
    );
    write(
        &v.join("Beta.md"),
        "# Beta\n\nOne quokka and many other animals of the island.\n\nSee [[Target Two]].\n",
    );
    write(&v.join("Target One.md"), "# Target One\n\nBoats.\n");
    write(&v.join("Target Two.md"), "# Target Two\n\nTrains.\n");
    // A tag on more notes than the cap relates none of them.
    for i in 0..60 {
        write(&v.join(format!("crowd/n{i}.md")), "Crowd note. #common\n");
    }
    d.call("ingest.path", json!({ "path": v })).unwrap();

    let r = d
        .call(
            "search.query",
            json!({ "query": "quokka", "mode": "bm25", "graph": true, "explain": true, "k": 20 }),
        )
        .unwrap();
    let hits = r["hits"].as_array().unwrap();
    let t = titles(hits);
    assert_eq!(t[..2], ["Alpha", "Beta"], "{r}");
    let at = |title: &str| t.iter().position(|x| *x == title);
    assert!(
        at("Target One") < at("Target Two"),
        "closer to the best hit first: {r}"
    );
    let graph_rank = |title: &str| {
        hits.iter()
            .find(|h| h["title"] == title)
            .map(|h| h["explain"]["graph"]["rank"].clone())
    };
    assert_eq!(graph_rank("Target One"), Some(json!(1)), "{r}");
    assert_eq!(graph_rank("Target Two"), Some(json!(2)), "{r}");
    assert!(
        !t.iter().any(|x| x.starts_with('n')),
        "notes sharing only a crowded tag are not neighbours: {r}"
    );
}
