//! Files and paths that must not starve the daemon: FIFOs, devices, pseudo file systems,
//! symlinked folders leaving a root, names that are not UTF-8, notes stating millions of facts,
//! and a file that kills the daemon while it is ingested. Each test checks that the note beside
//! the hostile file is indexed and the daemon answers.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Daemon, temp_layout, wait_until};

/// A folder `name` in the daemon's directory holding `files` (relative path, contents).
fn vault(d: &Daemon, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let vault = d.dir.join(name);
    std::fs::create_dir_all(&vault).unwrap();
    for (rel, body) in files {
        std::fs::write(vault.join(rel), body).unwrap();
    }
    vault
}

/// `daemon.status`, answered within a second on a fresh connection.
fn status_within_a_second(socket: &Path) -> Value {
    let mut stream = UnixStream::connect(socket).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    stream
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.status\",\"params\":{}}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .expect("daemon.status within a second");
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert!(answer["result"]["pid"].is_number(), "{answer}");
    answer["result"].clone()
}

/// Every live source row under `root`, keyed by relative path.
fn sources(d: &Daemon, root: &Path) -> Vec<Value> {
    let r = d
        .call("source.list", json!({ "root": root, "limit": 100_000 }))
        .unwrap();
    r["sources"].as_array().unwrap().clone()
}

fn source(d: &Daemon, root: &Path, rel: &str) -> Option<Value> {
    sources(d, root).into_iter().find(|s| s["rel_path"] == rel)
}

/// Waits until the file at `rel` has a row with `status`, and returns it.
fn wait_status(d: &Daemon, root: &Path, rel: &str, status: &str) -> Value {
    let mut row = Value::Null;
    wait_until(&format!("{rel} {status}"), || {
        match source(d, root, rel) {
            Some(s) if s["status"] == status => row = s,
            _ => return false,
        }
        true
    });
    row
}

fn search_titles(d: &Daemon, query: &str) -> Vec<String> {
    let r = d
        .call("search.query", json!({ "query": query }))
        .expect("search.query");
    r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["title"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn mkfifo(path: &Path) {
    let ok = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(ok.success(), "mkfifo {}", path.display());
}

fn kind(r: Result<Value, brain::rpc::client::ClientError>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v}"),
        Err(e) => e.kind().unwrap_or("").to_owned(),
    }
}

/// A FIFO and a device node named like notes, and a symlink to `/dev/zero`, beside a good
/// note: none is opened, each gets a `skipped` row saying why, the note is searchable, and a
/// SIGTERM still stops the daemon.
#[test]
fn fifos_and_devices_in_a_root_are_skipped_without_being_opened() {
    let d = Daemon::start();
    let root = vault(&d, "v", &[("good.md", "# Good\n\nmarmalade quarry\n")]);
    mkfifo(&root.join("x.md"));
    // The null device's numbers (1, 3): reading it would end at once, so a daemon that opened
    // it would still pass; the FIFO beside it is what would hang.
    let made = Command::new("mknod")
        .arg(root.join("null.md"))
        .args(["c", "1", "3"])
        .status()
        .unwrap();
    assert!(made.success(), "mknod needs root, as the test runs");
    std::os::unix::fs::symlink("/dev/zero", root.join("zero.md")).unwrap();
    d.call("watch.add", json!({ "path": root })).unwrap();

    wait_status(&d, &root, "good.md", "indexed");
    for rel in ["x.md", "null.md"] {
        let row = wait_status(&d, &root, rel, "skipped");
        assert_eq!(row["reason"], "not_a_regular_file", "{row}");
    }
    let row = wait_status(&d, &root, "zero.md", "skipped");
    assert_eq!(row["reason"], "symlink leaves the root", "{row}");
    wait_until("the note to be searchable", || {
        search_titles(&d, "marmalade") == ["Good"]
    });

    // A FIFO created while watched is skipped too, and the worker goes on with later changes.
    mkfifo(&root.join("later.md"));
    std::fs::write(root.join("after.md"), "# After\n\nquokka lantern\n").unwrap();
    let row = wait_status(&d, &root, "later.md", "skipped");
    assert_eq!(row["reason"], "not_a_regular_file", "{row}");
    wait_status(&d, &root, "after.md", "indexed");
    status_within_a_second(&d.socket);
    d.stop();
}

/// `ingest.path`, `watch.add` and `workflow.run` take regular files and folders only, never a
/// device, a FIFO or a pseudo file system, and are refused at once; nothing is registered.
#[test]
fn paths_handed_in_must_be_regular_files_or_folders() {
    let d = Daemon::start();
    let root = vault(&d, "v", &[("good.md", "# Good\n\nnectarine\n")]);
    for (method, path) in [
        ("ingest.path", "/dev/zero"),
        ("watch.add", "/dev/zero"),
        ("ingest.path", "/proc/self/status"),
        ("ingest.path", "/proc"),
        ("watch.add", "/sys/kernel"),
    ] {
        assert_eq!(
            kind(d.call(method, json!({ "path": path }))),
            "invalid_params",
            "{method} {path}"
        );
    }
    assert_eq!(
        kind(d.call("workflow.run", json!({ "path": "/dev/zero" }))),
        "invalid_params"
    );
    let db = rusqlite::Connection::open(d.data_dir.join("brain.db")).unwrap();
    let roots: Vec<String> = db
        .prepare("SELECT path FROM roots")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(roots, Vec::<String>::new());

    // Sixteen requests on a FIFO at once (as many as the blocking threads that once hung on
    // it): each is refused without opening it, and the daemon still answers.
    let fifo = root.join("pipe.md");
    mkfifo(&fifo);
    let refused: Vec<String> = std::thread::scope(|s| {
        let calls: Vec<_> = (0..16)
            .map(|_| s.spawn(|| kind(d.call("ingest.path", json!({ "path": fifo })))))
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    assert_eq!(refused, vec!["invalid_params".to_owned(); 16]);
    assert_eq!(
        kind(d.call("workflow.run", json!({ "path": fifo }))),
        "invalid_params"
    );
    status_within_a_second(&d.socket);

    // A workflow document one byte over the limit is refused, naming it; the good file and
    // its folder are still accepted.
    let big = d.dir.join("big.json");
    let limit = brain::rpc::workflow::MAX_DOCUMENT_BYTES as usize;
    std::fs::write(&big, format!("{{\"x\": \"{}\"}}", "a".repeat(limit - 8))).unwrap();
    assert_eq!(std::fs::metadata(&big).unwrap().len() as usize, limit + 1);
    let err = d.call("workflow.run", json!({ "path": big })).unwrap_err();
    assert_eq!(err.kind(), Some("invalid_params"));
    assert!(err.to_string().contains(&limit.to_string()), "{err}");
    d.call("ingest.path", json!({ "path": root.join("good.md") }))
        .unwrap();
    wait_status(&d, &root, "good.md", "indexed");
    d.call("watch.add", json!({ "path": root })).unwrap();
    let row = wait_status(&d, &root, "pipe.md", "skipped");
    assert_eq!(row["reason"], "not_a_regular_file");
    d.stop();
}

/// A symlinked folder whose target leaves the root is skipped like a symlinked file, and what
/// is inside it is neither indexed nor searchable; one whose target is inside is skipped too,
/// since its files are indexed where they are.
#[test]
fn symlinked_folders_leaving_the_root_are_skipped() {
    let d = Daemon::start();
    let root = vault(&d, "v", &[("good.md", "# Good\n\nplum orchard\n")]);
    let outside = vault(&d, "outside", &[("secret.md", "# Secret\n\nzanzibarite\n")]);
    let inside = root.join("sub");
    std::fs::create_dir(&inside).unwrap();
    std::fs::write(inside.join("kept.md"), "# Kept\n\ngooseberry\n").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("outside-dir")).unwrap();
    std::os::unix::fs::symlink(&inside, root.join("inside-dir")).unwrap();
    d.call("watch.add", json!({ "path": root })).unwrap();

    wait_status(&d, &root, "good.md", "indexed");
    let row = wait_status(&d, &root, "outside-dir", "skipped");
    assert_eq!(row["reason"], "symlink leaves the root", "{row}");
    // A symlinked folder inside the root is not followed: its files are indexed once, where
    // they are.
    wait_status(&d, &root, "sub/kept.md", "indexed");
    let row = wait_status(&d, &root, "inside-dir", "skipped");
    assert_eq!(row["reason"], "symlinked_folder", "{row}");
    assert!(source(&d, &root, "inside-dir/kept.md").is_none());
    let rels: Vec<String> = sources(&d, &root)
        .iter()
        .map(|s| s["rel_path"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !rels.iter().any(|r| r.contains("secret")),
        "nothing under the link is recorded: {rels:?}"
    );
    assert_eq!(
        kind(d.call(
            "node.get",
            json!({ "path": root.join("outside-dir/secret.md") })
        )),
        "node_not_found"
    );
    wait_until("the notes to be searchable", || {
        search_titles(&d, "plum") == ["Good"] && search_titles(&d, "gooseberry") == ["Kept"]
    });
    assert_eq!(search_titles(&d, "zanzibarite"), Vec::<String>::new());

    // A link made while the root is watched is synced alone, and skipped the same way.
    std::fs::remove_file(root.join("outside-dir")).unwrap();
    wait_until("the link's row to go", || {
        source(&d, &root, "outside-dir").is_none()
    });
    std::os::unix::fs::symlink(&outside, root.join("outside-dir")).unwrap();
    let row = wait_status(&d, &root, "outside-dir", "skipped");
    assert_eq!(row["reason"], "symlink leaves the root", "{row}");
    assert!(source(&d, &root, "outside-dir/secret.md").is_none());
    assert_eq!(search_titles(&d, "zanzibarite"), Vec::<String>::new());
    status_within_a_second(&d.socket);
    d.stop();
}

/// A file whose name is not UTF-8 gets one row (the name escaped), is indexed, is found again
/// by later syncs and after a restart, and is never duplicated.
#[test]
fn a_name_that_is_not_utf8_gets_one_row() {
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    let root = vault(&d, "v", &[("good.md", "# Good\n\napricot\n")]);
    let name = std::ffi::OsStr::from_bytes(b"caf\xe9.md");
    std::fs::write(root.join(name), "# Cafe\n\nquokkaberry\n").unwrap();
    d.call("watch.add", json!({ "path": root })).unwrap();

    let rel = "caf\\xe9.md";
    let first = wait_status(&d, &root, rel, "indexed");
    wait_status(&d, &root, "good.md", "indexed");
    wait_until("the note to be searchable", || {
        search_titles(&d, "quokkaberry") == ["Cafe"]
    });

    // An edit seen by the watcher rewrites the same row.
    std::fs::write(root.join(name), "# Cafe\n\nquokkaberry tamarind\n").unwrap();
    wait_until("the edit to be indexed", || {
        search_titles(&d, "tamarind") == ["Cafe"]
    });
    let count = |d: &Daemon| {
        sources(d, &root)
            .iter()
            .filter(|s| s["rel_path"] == rel)
            .count()
    };
    assert_eq!(count(&d), 1);
    assert_eq!(source(&d, &root, rel).unwrap()["id"], first["id"]);

    // A restart reconciles it without a new row.
    d.stop();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    wait_until("the restart's reconcile", || {
        let s = status_within_a_second(&d.socket);
        !s["watcher"]["busy"].as_bool().unwrap_or(true)
            && s["watcher"]["queue_depth"].as_u64() == Some(0)
    });
    assert_eq!(count(&d), 1);
    assert_eq!(source(&d, &root, rel).unwrap()["id"], first["id"]);
    assert_eq!(source(&d, &root, rel).unwrap()["status"], "indexed");
    d.stop();
}

/// Notes stating hundreds of thousands of headings, tags, fields or links are indexed as far
/// as the per-file budget allows, each with a diagnostic naming the budget, and the note
/// beside them is indexed too.
#[test]
fn notes_past_the_parse_budget_are_indexed_up_to_it() {
    let d = Daemon::start();
    let root = vault(&d, "v", &[("good.md", "# Good\n\npersimmon\n")]);
    // About 1 MiB each, ten times or more over each cap.
    let big = |line: &dyn Fn(usize) -> String| -> String { (0..110_000).map(line).collect() };
    let files = [
        (
            "headings.md",
            big(&|i| format!("# H{i}\n")),
            "headings",
            10_000,
        ),
        ("tags.md", big(&|i| format!("#t{i} ")), "tags", 200),
        (
            "fields.md",
            big(&|i| format!("k{i}:: v{i}\n")),
            "fields",
            10_000,
        ),
        (
            "links.md",
            big(&|i| format!("[[note{i}]] ")),
            "links",
            10_000,
        ),
    ];
    for (rel, body, _, _) in &files {
        std::fs::write(root.join(rel), body).unwrap();
    }
    d.call("watch.add", json!({ "path": root })).unwrap();

    wait_status(&d, &root, "good.md", "indexed");
    for (rel, _, fact, cap) in &files {
        let row = wait_status(&d, &root, rel, "indexed");
        let diagnostics = row["diagnostics"].as_array().unwrap();
        assert!(
            diagnostics.iter().any(|x| x["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("budget: more than {cap} {fact} in one file"))),
            "{rel}: {diagnostics:?}"
        );
    }
    // What the budget kept is there: the first heading's section, the first tag.
    wait_until("the note beside them to be searchable", || {
        search_titles(&d, "persimmon") == ["Good"]
    });
    let status = status_within_a_second(&d.socket);
    let sections = status["counts"]["nodes"]["section"].as_i64().unwrap();
    assert_eq!(sections, 10_000 + 1, "{status}");
    let tags = status["counts"]["nodes"]["tag"].as_i64().unwrap();
    assert_eq!(tags, 200, "{status}");
    d.stop();
}

/// A file that kills the daemon while it is ingested is retried once, alone, then
/// quarantined as `failed: ingest_aborted`; the note beside it is indexed, and later starts
/// leave it alone until it changes.
#[test]
fn a_file_that_crashes_the_ingest_is_retried_once_then_quarantined() {
    let (temp, data, socket) = temp_layout();
    let failpoint = [("BRAIN_FAILPOINT", "ingest_file:bad.md")];
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &failpoint);
    d.wait_ready();
    let root = vault(
        &d,
        "v",
        &[
            ("bad.md", "# Bad\n\nnever indexed\n"),
            ("good.md", "# Good\n\nwalnut\n"),
        ],
    );
    d.call("watch.add", json!({ "path": root })).unwrap();
    // First start: the file is in flight with the good note when the process dies.
    assert!(!d.wait_exit().success(), "{}", d.log());

    // Second start: the reconcile retries it, alone, and dies again.
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &failpoint);
    assert!(!d.wait_exit().success(), "{}", d.log());

    // Third start: quarantined; the note beside it is indexed; the daemon stays up.
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &failpoint);
    d.wait_ready();
    let row = wait_status(&d, &root, "bad.md", "failed");
    assert_eq!(row["reason"], "ingest_aborted", "{row}");
    wait_status(&d, &root, "good.md", "indexed");
    wait_until("the good note to be searchable", || {
        search_titles(&d, "walnut") == ["Good"]
    });
    status_within_a_second(&d.socket);
    d.stop();

    // Later starts do not read it again while it is unchanged.
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &failpoint);
    d.wait_ready();
    wait_until("the restart's reconcile", || {
        let s = status_within_a_second(&d.socket);
        !s["watcher"]["busy"].as_bool().unwrap_or(true)
            && s["watcher"]["queue_depth"].as_u64() == Some(0)
    });
    assert_eq!(source(&d, &root, "bad.md").unwrap()["status"], "failed");
    d.stop();

    // Once it changes (and no longer crashes the daemon) it is indexed.
    std::fs::write(root.join("bad.md"), "# Bad\n\nfixed now\n").unwrap();
    let d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    let mut d = d;
    d.wait_ready();
    wait_status(&d, &root, "bad.md", "indexed");
    d.stop();
}
