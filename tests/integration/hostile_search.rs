//! Search under hostile requests and faults, through the real daemon: queries over their
//! budgets are refused naming the limit and its setting, a query out of time is answered with
//! `query_timeout`, a text index damaged on disk (before start or while running) is moved aside
//! and rebuilt with no user action (so is an index folder removed while running, or a file in
//! its place at start), and a panicking index worker is restarted and reported.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Daemon, temp_layout, wait_until};

fn write(p: &Path, text: &str) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Three notes with words no other note has.
fn vault(dir: &Path) -> PathBuf {
    let v = dir.join("vault");
    write(
        &v.join("Tomatoes.md"),
        "# Tomatoes\n\nAphids gather under the leaves of tomatoes.\n",
    );
    write(
        &v.join("Roses.md"),
        "# Roses\n\nRoses like pruning in late winter.\n",
    );
    write(
        &v.join("Zeppelins.md"),
        "# Zeppelins\n\nA zeppelin rests in its hangar.\n",
    );
    v
}

/// The daemon is up and answers `daemon.status` within a second.
fn answers_status(d: &Daemon) -> Value {
    let (tx, rx) = mpsc::channel();
    let socket = d.socket.clone();
    std::thread::spawn(move || {
        let r = brain::rpc::client::Client::connect(&socket)
            .and_then(|mut c| c.call("daemon.status", json!({})));
        let _ = tx.send(r.map_err(|e| e.to_string()));
    });
    rx.recv_timeout(Duration::from_secs(1))
        .expect("daemon.status answered within a second")
        .expect("daemon.status")
}

fn titles(r: &Value) -> Vec<String> {
    let mut t: Vec<String> = r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["title"].as_str().unwrap().to_owned())
        .collect();
    t.sort();
    t
}

fn bm25(d: &Daemon, q: &str) -> Result<Value, brain::rpc::client::ClientError> {
    d.call("search.query", json!({ "query": q, "mode": "bm25" }))
}

/// Every note is found by its own word.
fn finds_everything(d: &Daemon) -> bool {
    [
        ("aphids", "Tomatoes"),
        ("pruning", "Roses"),
        ("hangar", "Zeppelins"),
    ]
    .iter()
    .all(|(q, t)| bm25(d, q).is_ok_and(|r| titles(&r) == [*t] && r["warnings"] == json!([])))
}

fn index_caught_up(d: &Daemon) -> bool {
    let s = answers_status(d);
    s["search"]["index_state"] == "ready"
        && s["search"]["index_seq"] == s["search"]["outbox_head"]
        && s["search"]["indexed_chunks"].as_u64().unwrap_or(0) >= 3
}

fn refusal(d: &Daemon, method: &str, params: Value) -> (String, String) {
    let e = d.call(method, params).unwrap_err();
    (e.kind().unwrap_or("").to_owned(), e.to_string())
}

#[test]
fn queries_over_their_budgets_are_refused_naming_the_limit_and_its_setting() {
    let d = Daemon::start();
    let v = vault(&d.dir);
    d.call("ingest.path", json!({ "path": v })).unwrap();

    // The prefix bomb: 5,000 `a*` (15 KB).
    let bomb = vec!["a*"; 5000].join(" ");
    let (kind, msg) = refusal(&d, "search.query", json!({ "query": bomb }));
    assert_eq!(kind, "invalid_params");
    assert!(
        msg.contains("query is 14999 bytes; the limit is 4096 ([search] max_query_bytes)"),
        "{msg}"
    );
    answers_status(&d);

    // Terms: the limit passes, one more is refused.
    let words = |n: usize| vec!["w"; n].join(" ");
    bm25(&d, &words(128)).unwrap();
    let (kind, msg) = refusal(&d, "search.query", json!({ "query": words(129) }));
    assert_eq!(kind, "invalid_params");
    assert!(
        msg.contains("query has 129 terms; the limit is 128 ([search] max_query_terms)"),
        "{msg}"
    );

    // Prefixes: eight pass, nine are refused.
    let prefixes = |n: usize| vec!["zep*"; n].join(" ");
    assert_eq!(titles(&bm25(&d, &prefixes(8)).unwrap()), ["Zeppelins"]);
    let (kind, msg) = refusal(&d, "search.query", json!({ "query": prefixes(9) }));
    assert_eq!(kind, "invalid_params");
    assert!(
        msg.contains("query has 9 prefix terms; the limit is 8 ([search] max_prefix_terms)"),
        "{msg}"
    );

    // Nesting: a thousand parentheses (2 KB) overflowed the parser's stack and aborted the
    // daemon; sixteen are fine.
    let nested = |n: usize| format!("{}aphids{}", "(".repeat(n), ")".repeat(n));
    assert_eq!(titles(&bm25(&d, &nested(16)).unwrap()), ["Tomatoes"]);
    let (kind, msg) = refusal(&d, "search.query", json!({ "query": nested(1000) }));
    assert_eq!(kind, "invalid_params");
    assert!(
        msg.contains("query nests parentheses 1000 deep; the limit is 16"),
        "{msg}"
    );
    answers_status(&d);

    // Filters: how many values, and how long each.
    let tags: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    let (kind, msg) = refusal(
        &d,
        "search.query",
        json!({ "query": "aphids", "filters": { "tags": tags } }),
    );
    assert_eq!(kind, "invalid_params");
    assert!(msg.contains("([search] max_filter_values)"), "{msg}");
    let (kind, msg) = refusal(
        &d,
        "search.query",
        json!({ "query": "aphids", "filters": { "path_prefix": "/".repeat(4097) } }),
    );
    assert_eq!(kind, "invalid_params");
    assert!(msg.contains("the limit is 4096"), "{msg}");

    // Title search: a megabyte is refused as a parameter, not a store failure.
    let (kind, msg) = refusal(
        &d,
        "node.search_title",
        json!({ "query": "x".repeat(1 << 20) }),
    );
    assert_eq!(kind, "invalid_params");
    assert!(msg.contains("the limit is 1024"), "{msg}");
    let r = d
        .call("node.search_title", json!({ "query": "%" }))
        .unwrap();
    assert_eq!(r["hits"], json!([]), "a LIKE wildcard is a plain character");

    // After all that the daemon serves as before.
    answers_status(&d);
    assert!(finds_everything(&d));
    d.stop();
}

#[test]
fn the_limits_are_settings() {
    let (temp, data, socket) = temp_layout();
    // The harness points XDG_CONFIG_HOME here.
    write(
        &data.join("no-config/brain/config.toml"),
        "[search]\nmax_query_terms = 3\nmax_prefix_expansions = 1\n",
    );
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    d.call("ingest.path", json!({ "path": vault(temp.path()) }))
        .unwrap();
    assert_eq!(
        titles(&bm25(&d, "aphids leaves under").unwrap()),
        ["Tomatoes"]
    );
    let (kind, msg) = refusal(&d, "search.query", json!({ "query": "a b c d" }));
    assert_eq!(kind, "invalid_params");
    assert!(
        msg.contains("query has 4 terms; the limit is 3 ([search] max_query_terms)"),
        "{msg}"
    );
    // `l*` stands for `leav`, `late` and `like` at least: one is searched, and the answer
    // says so.
    let r = bm25(&d, "l*").unwrap();
    assert!(
        r["warnings"][0]
            .as_str()
            .is_some_and(|w| w.starts_with("l* stands for more than 1 index terms")
                && w.contains("([search] max_prefix_expansions)")),
        "{r}"
    );
    let r = bm25(&d, "zep*").unwrap();
    assert_eq!(titles(&r), ["Zeppelins"]);
    assert_eq!(r["warnings"], json!([]), "{r}");
    d.stop();
}

#[test]
fn a_query_out_of_time_is_answered_with_query_timeout() {
    let (temp, data, socket) = temp_layout();
    // Every query starts with its time already spent.
    let mut d = Daemon::spawn(
        temp.path(),
        &data,
        &socket,
        &[("BRAIN_FAILPOINT", "search_budget_spent")],
    );
    d.wait_ready();
    d.call("ingest.path", json!({ "path": vault(temp.path()) }))
        .unwrap();
    let (kind, msg) = refusal(&d, "search.query", json!({ "query": "aphids" }));
    assert_eq!(kind, "query_timeout");
    assert!(msg.contains("([search] query_timeout_ms)"), "{msg}");
    // Sizes are still checked first.
    let (kind, _) = refusal(&d, "search.query", json!({ "query": "x ".repeat(3000) }));
    assert_eq!(kind, "invalid_params");
    answers_status(&d);
    d.stop();
}

/// The index's files of one kind (`term`, `idx`, `store`).
fn segment_files(index: &Path, ext: &str) -> Vec<PathBuf> {
    let files: Vec<PathBuf> = std::fs::read_dir(index)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    assert!(!files.is_empty(), "no .{ext} file in {}", index.display());
    files
}

/// Overwrites each file's bytes in place (same length, so a reader's mapping stays valid)
/// with a pattern no encoder writes.
fn garble(files: &[PathBuf]) {
    use std::io::{Seek, SeekFrom, Write};
    for p in files {
        let len = std::fs::metadata(p).unwrap().len();
        let mut f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.seek(SeekFrom::Start(0)).unwrap();
        let junk: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(151) ^ 0xa5)
            .collect();
        f.write_all(&junk).unwrap();
        f.sync_all().unwrap();
    }
}

fn truncate(files: &[PathBuf]) {
    for p in files {
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len / 2).unwrap();
    }
}

fn broken_copies(data: &Path) -> usize {
    std::fs::read_dir(data)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with("index.broken-")
        })
        .count()
}

#[test]
fn an_index_damaged_while_the_daemon_was_down_is_rebuilt_at_start() {
    let (temp, data, socket) = temp_layout();
    let v = vault(temp.path());
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    d.call("ingest.path", json!({ "path": v })).unwrap();
    wait_until("the index to catch up", || index_caught_up(&d));
    d.stop();
    let index = data.join("index");

    type Damage = fn(&Path);
    let damages: [(&str, Damage); 3] = [
        ("a truncated term dictionary", |i| {
            truncate(&segment_files(i, "term"))
        }),
        ("garbled postings", |i| garble(&segment_files(i, "idx"))),
        ("a garbled document store", |i| {
            garble(&segment_files(i, "store"))
        }),
    ];
    for (what, damage) in damages {
        damage(&index);
        let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
        d.wait_ready();
        answers_status(&d);
        wait_until(&format!("search to recover from {what}"), || {
            finds_everything(&d) && answers_status(&d)["search"]["last_damage"].is_string()
        });
        assert_eq!(broken_copies(&data), 1, "{what}: one damaged copy is kept");
        d.stop();
    }
}

#[test]
fn an_index_damaged_while_the_daemon_runs_is_rebuilt_without_help() {
    let (temp, data, socket) = temp_layout();
    let v = vault(temp.path());
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    d.call("ingest.path", json!({ "path": v })).unwrap();
    // No search before the damage: nothing of the index is cached yet.
    wait_until("the index to catch up", || index_caught_up(&d));
    // The fast-field columns: every hit's ids are read from them.
    garble(&segment_files(&data.join("index"), "fast"));

    // The first search notices, says so, and answers from the store meanwhile.
    let r = bm25(&d, "aphids").unwrap();
    assert!(
        r["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("damaged")),
        "{r}"
    );
    assert_eq!(titles(&r), ["Tomatoes"], "{r}");
    answers_status(&d);
    wait_until("search to recover", || finds_everything(&d));
    assert_eq!(broken_copies(&data), 1);
    // The rebuilt index follows new writes, and `search.reindex` works on it.
    write(&v.join("Basil.md"), "# Basil\n\nBasil loves heat.\n");
    d.call("ingest.path", json!({ "path": v })).unwrap();
    wait_until("the new note", || {
        bm25(&d, "basil").is_ok_and(|r| titles(&r) == ["Basil"])
    });
    let r = d.call("search.reindex", json!({})).unwrap();
    assert!(r["chunks"].as_u64().unwrap() >= 4, "{r}");
    assert!(finds_everything(&d));
    d.stop();
}

#[test]
fn an_index_folder_removed_while_the_daemon_runs_is_rebuilt_without_help() {
    let (temp, data, socket) = temp_layout();
    let v = vault(temp.path());
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    d.call("ingest.path", json!({ "path": v })).unwrap();
    wait_until("the index to catch up", || index_caught_up(&d));
    std::fs::remove_dir_all(data.join("index")).unwrap();

    // An edit after the removal: the failed write is taken for damage, not retried for ever.
    write(
        &v.join("Roses.md"),
        "# Roses

Roses like pruning in late winter, and marigolds beside them.
",
    );
    d.call("ingest.path", json!({ "path": v })).unwrap();
    answers_status(&d);
    wait_until("the edit to be searchable", || {
        bm25(&d, "marigolds").is_ok_and(|r| titles(&r) == ["Roses"] && r["warnings"] == json!([]))
    });
    wait_until("every note to be found again", || finds_everything(&d));
    let s = answers_status(&d);
    assert!(s["search"]["last_damage"].is_string(), "{s}");
    assert!(data.join("index").join("meta.json").is_file());
    d.stop();
}

#[test]
fn a_file_in_place_of_the_index_folder_is_moved_aside_at_start() {
    let (temp, data, socket) = temp_layout();
    let v = vault(temp.path());
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("index"), "not an index").unwrap();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    answers_status(&d);
    d.call("ingest.path", json!({ "path": v })).unwrap();
    wait_until("search to work", || finds_everything(&d));
    assert!(data.join("index").is_dir());
    assert_eq!(broken_copies(&data), 1, "the file is kept aside");
    let s = answers_status(&d);
    assert!(s["search"]["last_damage"].is_string(), "{s}");
    d.stop();
}

#[test]
fn a_panicking_index_worker_is_restarted_and_reported() {
    let (temp, data, socket) = temp_layout();
    let v = vault(temp.path());
    let mut d = Daemon::spawn(
        temp.path(),
        &data,
        &socket,
        &[("BRAIN_FAILPOINT", "search_index_panic")],
    );
    d.wait_ready();
    wait_until("the worker's restart in daemon.status", || {
        let s = answers_status(&d);
        s["workers"].as_array().unwrap().iter().any(|w| {
            w["name"] == "search-index"
                && w["restarts"] == 1
                && w["last_panic"]
                    .as_str()
                    .is_some_and(|m| m.contains("search_index_panic"))
        })
    });
    // The restarted worker indexes what comes next.
    d.call("ingest.path", json!({ "path": v })).unwrap();
    wait_until("search after the restart", || finds_everything(&d));
    let s = answers_status(&d);
    let names: Vec<&str> = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"embedder"), "{s}");
    d.stop();
}

/// Makes a directory refuse new files, as a full disk would, until dropped: immutable
/// (`chattr +i`) when running as root, whom permission bits do not stop; read-only otherwise.
struct Unwritable(PathBuf);

impl Unwritable {
    fn new(dir: &Path) -> Unwritable {
        let ok = if rustix::process::geteuid().is_root() {
            std::process::Command::new("chattr")
                .arg("+i")
                .arg(dir)
                .status()
                .is_ok_and(|s| s.success())
        } else {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).is_ok()
        };
        assert!(ok, "cannot make {} unwritable", dir.display());
        assert!(
            std::fs::write(dir.join("probe"), b"x").is_err(),
            "{} still takes new files",
            dir.display()
        );
        Unwritable(dir.to_owned())
    }
}

impl Drop for Unwritable {
    fn drop(&mut self) {
        if rustix::process::geteuid().is_root() {
            let _ = std::process::Command::new("chattr")
                .arg("-i")
                .arg(&self.0)
                .status();
        } else {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o755));
        }
    }
}

#[test]
fn an_index_that_cannot_be_written_is_reported_and_catches_up_once_it_can() {
    let (temp, data, socket) = temp_layout();
    let v = vault(temp.path());
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    d.call("ingest.path", json!({ "path": v })).unwrap();
    wait_until("the index to catch up", || index_caught_up(&d));

    let locked = Unwritable::new(&data.join("index"));
    write(&v.join("Basil.md"), "# Basil\n\nBasil loves heat.\n");
    d.call("ingest.path", json!({ "path": v })).unwrap();
    // The store has the note; the index cannot take it, and says so where users look.
    let s = answers_status(&d);
    assert!(
        s["search"]["index_state"]
            .as_str()
            .unwrap()
            .starts_with("error:"),
        "{s}"
    );
    let r = bm25(&d, "aphids").unwrap();
    assert_eq!(titles(&r), ["Tomatoes"], "the last commit still answers");
    assert!(
        r["warnings"][0]
            .as_str()
            .is_some_and(|w| w.contains("results may be stale")),
        "{r}"
    );

    // Space comes back: the worker's retry applies the change with a new writer.
    drop(locked);
    wait_until("the index to take the change", || {
        bm25(&d, "basil").is_ok_and(|r| titles(&r) == ["Basil"] && r["warnings"] == json!([]))
    });
    assert_eq!(answers_status(&d)["search"]["index_state"], "ready");
    let r = d.call("search.reindex", json!({})).unwrap();
    assert!(r["chunks"].as_u64().unwrap() >= 4, "{r}");
    assert!(finds_everything(&d));
    d.stop();
}

#[test]
fn a_panicking_embedding_worker_is_restarted_and_finishes_its_work() {
    let (temp, data, socket) = temp_layout();
    let v = vault(temp.path());
    let model = temp.path().join("tiny-bert");
    crate::embed::tiny::write_tiny_bert(&model, 5).unwrap();
    let mut d = Daemon::spawn(
        temp.path(),
        &data,
        &socket,
        &[("BRAIN_FAILPOINT", "embed_panic")],
    );
    d.wait_ready();
    d.call("ingest.path", json!({ "path": v })).unwrap();
    d.call("models.add", json!({ "name": "tiny", "path": model }))
        .unwrap();
    // Its first batch panics; the restarted worker embeds every chunk with no further change.
    wait_until("every chunk embedded after the restart", || {
        let s = answers_status(&d);
        let restarted = s["workers"].as_array().unwrap().iter().any(|w| {
            w["name"] == "embedder"
                && w["restarts"] == 1
                && w["last_panic"]
                    .as_str()
                    .is_some_and(|m| m.contains("embed_panic"))
        });
        let s = &s["search"];
        restarted
            && s["total_chunks"].as_u64().unwrap() > 0
            && s["embedded_chunks"] == s["total_chunks"]
    });
    let r = d
        .call(
            "search.query",
            json!({ "query": "aphids", "mode": "dense", "k": 3 }),
        )
        .unwrap();
    assert_eq!(r["hits"].as_array().unwrap().len(), 3, "{r}");
    d.stop();
}
