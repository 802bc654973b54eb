//! The tiny BERT generator is shared with these tests through `#[path]`, so it must compile
//! outside the crate; what it writes must load through the library's public API. And the
//! embedding worker as the daemon runs it: what it embeds first, and at what priority.

#[path = "../../src/embed/tiny.rs"]
pub mod tiny;

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use brain::embed::Embedder;
use serde_json::json;

use crate::harness::{Daemon, stderr, temp_layout, wait_until};

#[test]
fn the_shared_tiny_model_loads_and_embeds() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tiny-bert");
    tiny::write_tiny_bert(&dir, 1).unwrap();
    let e = Embedder::load(&dir).unwrap();
    assert_eq!(e.dim(), tiny::HIDDEN);
    assert!(e.model_id().starts_with("tiny-bert@"));
    let v = e.embed(&["hello world", ""]).unwrap();
    assert_eq!(v.len(), 2);
    let norm: f32 = v[0].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5);
}

/// Notes `n1.md` … `n9.md`, each about its own made-up word, all modified long ago except
/// `n5.md`, the newest (neither first nor last by name or by ingest order).
fn notes_of_different_ages(dir: &Path) -> PathBuf {
    let v = dir.join("vault");
    std::fs::create_dir_all(&v).unwrap();
    let long_ago = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    for i in 1..=9 {
        let path = v.join(format!("n{i}.md"));
        std::fs::write(
            &path,
            format!("# Note {i}\n\nThe word of this note is zorblax{i}.\n\nA second paragraph.\n"),
        )
        .unwrap();
        let when = if i == 5 {
            SystemTime::now()
        } else {
            long_ago + Duration::from_secs(i * 86_400)
        };
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
    v
}

/// The nice value of each of the daemon's threads named `prefix…`.
fn thread_nice(pid: u32, prefix: &str) -> Vec<i64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !comm.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(task.join("stat")).unwrap();
        // Fields after the parenthesised name: state is field 3, nice field 19.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        out.push(after.split(' ').nth(16).unwrap().parse().unwrap());
    }
    out
}

#[test]
fn the_newest_note_is_embedded_first_at_idle_priority_while_queries_answer() {
    let (temp, data, socket) = temp_layout();
    let vault = notes_of_different_ages(temp.path());
    let model = temp.path().join("tiny-bert");
    tiny::write_tiny_bert(&model, 7).unwrap();
    // The worker embeds one chunk, the first it picks, then holds: embedding stays under way.
    let mut d = Daemon::spawn(
        temp.path(),
        &data,
        &socket,
        &[("BRAIN_FAILPOINT", "embed_hold_after_one")],
    );
    d.wait_ready();
    d.call("ingest.path", json!({ "path": vault })).unwrap();
    let out = d.cli(&["models", "add", "tiny", model.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let status = |d: &Daemon| d.call("daemon.status", json!({})).unwrap()["search"].clone();
    wait_until("the first chunk embedded", || {
        let s = status(&d);
        s["model_state"] == "ready" && s["embedded_chunks"] == 1
    });
    let s = status(&d);
    assert!(s["total_chunks"].as_u64().unwrap() >= 9, "{s}");

    // The one vector is the newest note's.
    let r = d
        .call(
            "search.query",
            json!({ "query": "the word of this note", "mode": "dense", "k": 10 }),
        )
        .unwrap();
    let hits = r["hits"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{r}");
    assert!(hits[0]["path"].as_str().unwrap().ends_with("/n5.md"), "{r}");

    // Mid-way, queries answer, and say how much of what matched had vectors.
    let r = d
        .call("search.query", json!({ "query": "zorblax3", "k": 5 }))
        .unwrap();
    assert_eq!(r["hits"][0]["title"], "Note 3", "{r}");
    assert_eq!(r["vectors"]["with_vectors"], 0, "{r}");
    let r = d
        .call(
            "search.query",
            json!({ "query": "zorblax5", "mode": "bm25", "k": 5 }),
        )
        .unwrap();
    assert_eq!(r["hits"][0]["title"], "Note 5", "{r}");

    // Every thread of the embedding pool runs at the lowest priority.
    let nice = thread_nice(d.pid(), "brain-embed");
    assert!(!nice.is_empty(), "no embedding thread found");
    assert!(nice.iter().all(|&n| n == 19), "{nice:?}");
    d.stop();
}
