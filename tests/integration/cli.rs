//! The command line as a person uses it, through the real binary: `stop` that waits, the
//! service manager told READY/STOPPING, closed pipes, plain-text logs, graph commands by title
//! with typed edges, typo-tolerant node search, suggestions, refused daemon settings, paging,
//! models, completions and the manual, and plain `status`.

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::embed::tiny;
use crate::harness::{BIN, DEADLINE, Daemon, brain_cmd, stderr, stdout, temp_layout, wait_until};

pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), &dest).unwrap();
        }
    }
}

/// A copy of fixtures/vault in `dir`, canonical, ingested by `d`.
pub fn fixture_vault(d: &Daemon, dir: &Path) -> PathBuf {
    let v = dir.join("vault");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vault"),
        &v,
    );
    let v = std::fs::canonicalize(v).unwrap();
    d.call("ingest.path", json!({ "path": v })).unwrap();
    v
}

fn ok(o: &std::process::Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

#[test]
fn stop_waits_for_the_exit_so_a_new_daemon_starts_at_once() {
    let d = Daemon::start();
    let out = ok(&d.cli(&["stop"]));
    assert!(out.contains("stopped"), "{out}");
    // Started the moment `stop` returns: the data dir and the socket are free.
    let mut next = Daemon::spawn(&d.dir, &d.data_dir, &d.socket, &[]);
    next.wait_ready();
    let log = next.log();
    assert!(!log.contains("already using"), "{log}");

    let out = ok(&next.cli(&["stop", "--no-wait"]));
    assert!(out.contains("is stopping"), "{out}");
    let s = next.wait_exit();
    assert!(s.success(), "{s}");
}

#[test]
fn the_service_manager_hears_ready_and_stopping() {
    let (temp, data, socket) = temp_layout();
    let notify = temp.path().join("notify.sock");
    let listener = UnixDatagram::bind(&notify).unwrap();
    listener.set_read_timeout(Some(DEADLINE)).unwrap();
    let notify_str = notify.to_str().unwrap().to_owned();
    let mut d = Daemon::spawn(
        temp.path(),
        &data,
        &socket,
        &[("NOTIFY_SOCKET", &notify_str)],
    );
    let mut buf = [0u8; 256];
    let n = listener
        .recv(&mut buf)
        .expect("READY=1 within the deadline");
    assert_eq!(&buf[..n], b"READY=1");
    // Ready means served.
    d.call("daemon.status", json!({})).unwrap();
    ok(&d.cli(&["stop"]));
    let n = listener.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
    d.wait_exit();
}

#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let d = Daemon::start();
    fixture_vault(&d, &d.dir);
    for args in [
        &["sources"][..],
        &["status"],
        &["node", "search", "a"],
        &["man"],
    ] {
        let mut child = brain_cmd(&d.data_dir, &d.socket)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the first line is printed.
        drop(child.stdout.take());
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let s = child.wait().unwrap();
        assert!(s.success(), "brain {args:?}: {s}\n{err}");
        assert!(!err.contains("panicked"), "brain {args:?}: {err}");
    }
    // As a person types it.
    let o = Command::new("bash")
        .args(["-c", "set -o pipefail; \"$0\" sources | head -1", BIN])
        .env("BRAIN_DATA_DIR", &d.data_dir)
        .env("BRAIN_SOCKET", &d.socket)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(stdout(&o).lines().count(), 1);
}

#[test]
fn the_daemon_log_is_plain_text_in_a_file() {
    let d = Daemon::start();
    let log = d.log();
    assert!(log.contains("daemon ready"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "colour codes in the log file: {log:?}"
    );
}

#[test]
fn graph_commands_take_a_title_and_show_edge_types_and_directions() {
    let d = Daemon::start();
    let v = fixture_vault(&d, &d.dir);
    let out = ok(&d.cli(&["graph", "backlinks", "--title", "Alpha"]));
    assert!(out.contains("← links_to"), "{out}");
    assert!(out.contains("Meeting Notes"), "{out}");
    assert!(out.contains("Home"), "{out}");

    let out = ok(&d.cli(&[
        "graph",
        "neighbors",
        "--title",
        "Meeting Notes",
        "--direction",
        "out",
    ]));
    assert!(out.contains("→ links_to"), "{out}");
    assert!(out.contains("→ tagged"), "{out}");
    assert!(out.contains("meeting"), "{out}");

    let alpha = v.join("Projects/Alpha.md");
    let by_path = ok(&d.cli(&["graph", "backlinks", "--path", alpha.to_str().unwrap()]));
    let id = d.call("node.get", json!({ "title": "Alpha" })).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let by_id = ok(&d.cli(&["graph", "backlinks", "--id", &id]));
    let positional = ok(&d.cli(&["graph", "backlinks", &id]));
    assert_eq!(by_path, by_id);
    assert_eq!(by_id, positional);

    let o = d.cli(&["graph", "backlinks", "--title", "No Such Note"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("No Such Note"), "{}", stderr(&o));
}

#[test]
fn node_search_forgives_typos_and_finds_tags_and_workflow_nodes() {
    let d = Daemon::start();
    fixture_vault(&d, &d.dir);
    let out = ok(&d.cli(&["node", "search", "metting notes"]));
    assert!(out.contains("Meeting Notes"), "{out}");
    let out = ok(&d.cli(&["node", "search", "meeting/weekly"]));
    assert!(out.lines().any(|l| l.starts_with("tag")), "{out}");
    let out = ok(&d.cli(&["node", "search", "zzzqqq"]));
    assert!(out.contains("no node titled like"), "{out}");

    // A node a workflow wrote.
    let wf =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/workflows/valid/weekly-digest.json");
    // It pauses for approval, which `--wait` reports with its own exit code.
    let out = stdout(&d.cli(&[
        "workflow",
        "run",
        wf.to_str().unwrap(),
        "-p",
        "tag=project",
        "--wait",
    ]));
    let run = out
        .split_whitespace()
        .find(|w| w.starts_with("run_"))
        .unwrap_or_else(|| panic!("no run id in {out}"))
        .trim_end_matches(':')
        .to_owned();
    ok(&d.cli(&["workflow", "resume", &run]));
    wait_until("the digest node", || {
        let hits = d
            .call("node.search_title", json!({ "query": "digst" }))
            .unwrap();
        hits["hits"]
            .as_array()
            .unwrap()
            .iter()
            .any(|h| h["kind"] == "digest")
    });
    let out = ok(&d.cli(&["node", "search", "digst"]));
    assert!(out.lines().any(|l| l.starts_with("digest")), "{out}");
}

#[test]
fn mistyped_commands_and_flags_get_a_suggestion() {
    let (temp, data, socket) = temp_layout();
    let o = brain_cmd(&data, &socket)
        .args(["serch", "x"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("'search'"), "{}", stderr(&o));
    let o = brain_cmd(&data, &socket)
        .args(["status", "--jsn"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--json"), "{}", stderr(&o));
    drop(temp);
}

#[test]
fn a_daemon_setting_is_refused_on_a_client_command() {
    let d = Daemon::start();
    let o = d.cli(&["status", "--user-email", "a@example.com"]);
    assert_eq!(o.status.code(), Some(2), "{o:?}");
    assert!(stderr(&o).contains("daemon setting"), "{}", stderr(&o));
    // The same setting in the environment is the daemon's business and does not stop clients.
    let o = brain_cmd(&d.data_dir, &d.socket)
        .env("BRAIN_USER_EMAIL", "a@example.com")
        .arg("status")
        .output()
        .unwrap();
    ok(&o);
}

#[test]
fn sources_page_with_offset_and_take_any_folder_inside_a_root() {
    let d = Daemon::start();
    let v = fixture_vault(&d, &d.dir);
    let first = ok(&d.cli(&["sources", "--limit", "2"]));
    let lines: Vec<&str> = first.lines().collect();
    assert_eq!(lines.len(), 3, "{first}");
    assert!(lines[2].contains("next page: --offset 2"), "{first}");
    let second = ok(&d.cli(&["sources", "--limit", "2", "--offset", "2"]));
    assert!(!second.contains(lines[0]), "{second}");
    assert!(
        second.lines().last().unwrap().starts_with("3-4 of"),
        "{second}"
    );

    let projects = v.join("Projects");
    let out = ok(&d.cli(&["sources", "--root", projects.to_str().unwrap()]));
    let files: Vec<&str> = out.lines().filter(|l| l.contains('/')).collect();
    assert_eq!(files.len(), 2, "{out}");
    assert!(files.iter().all(|l| l.contains("/Projects/")), "{out}");
    assert!(out.ends_with("2 of 2\n"), "{out}");
}

#[test]
fn models_can_be_removed_and_using_the_active_one_changes_nothing() {
    let d = Daemon::start();
    let model = d.dir.join("tiny-bert");
    tiny::write_tiny_bert(&model, 3).unwrap();
    let m = model.to_str().unwrap();
    ok(&d.cli(&["models", "add", "tiny", m]));
    ok(&d.cli(&["models", "add", "spare", m]));
    let out = ok(&d.cli(&["models", "use", "tiny"]));
    assert!(out.contains("already active; nothing to re-embed"), "{out}");

    let o = d.cli(&["models", "remove", "tiny"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("active model"), "{}", stderr(&o));
    ok(&d.cli(&["models", "remove", "spare"]));
    let list = ok(&d.cli(&["models", "list"]));
    assert!(list.contains("tiny") && !list.contains("spare"), "{list}");
    assert!(!d.data_dir.join("models/spare").exists());
    // The name is free again.
    ok(&d.cli(&["models", "add", "spare", m]));
}

#[test]
fn plain_status_shows_watcher_index_model_embedding_and_memory() {
    let d = Daemon::start();
    fixture_vault(&d, &d.dir);
    let model = d.dir.join("tiny-bert");
    tiny::write_tiny_bert(&model, 5).unwrap();
    ok(&d.cli(&["models", "add", "tiny", model.to_str().unwrap()]));
    wait_until("every chunk embedded", || {
        let s = d.call("daemon.status", json!({})).unwrap();
        s["search"]["model_state"] == "ready"
            && s["search"]["embedded_chunks"] == s["search"]["total_chunks"]
    });
    let out = ok(&d.cli(&["status"]));
    for want in [
        "watcher   ",
        "index     ready",
        "model     tiny",
        "embedded  ",
        "memory    ",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
    let embedded = out.lines().find(|l| l.starts_with("embedded")).unwrap();
    assert!(embedded.contains("(100%)"), "{embedded}");
}

#[test]
fn completions_for_each_shell_and_a_manual_page() {
    let (temp, data, socket) = temp_layout();
    for shell in ["bash", "zsh", "fish"] {
        let o = brain_cmd(&data, &socket)
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = ok(&o);
        assert!(script.contains("brain"), "{shell}");
        assert!(
            script.contains("backlinks"),
            "{shell}: subcommands completed"
        );
        // Each script must at least parse in its shell, where that shell is installed.
        let file = temp.path().join(format!("brain.{shell}"));
        std::fs::write(&file, &script).unwrap();
        let check = match shell {
            "fish" => Command::new("fish").arg("--no-execute").arg(&file).output(),
            sh => Command::new(sh).arg("-n").arg(&file).output(),
        };
        match check {
            Ok(c) => assert!(c.status.success(), "{shell} -n: {}", stderr(&c)),
            Err(_) => eprintln!("{shell} not installed: its completion script was not parsed"),
        }
    }
    let o = brain_cmd(&data, &socket).arg("man").output().unwrap();
    let page = ok(&o);
    assert!(
        page.starts_with(".ie") || page.contains(".TH brain"),
        "{page}"
    );
    assert!(page.contains("doctor"), "{page}");
}

/// Parses `--limit` and `-k` the same, on search as elsewhere.
#[test]
fn search_takes_limit_as_well_as_k() {
    let d = Daemon::start();
    fixture_vault(&d, &d.dir);
    let hits = |args: &[&str]| -> usize {
        let mut a = vec!["search", "project", "--json"];
        a.extend_from_slice(args);
        let v: Value = serde_json::from_str(&ok(&d.cli(&a))).unwrap();
        v["hits"].as_array().unwrap().len()
    };
    assert_eq!(hits(&["--limit", "1"]), 1);
    assert_eq!(hits(&["-k", "2"]), 2);
}

#[test]
fn colours_only_on_a_terminal_and_never_with_no_color() {
    let d = Daemon::start();
    fixture_vault(&d, &d.dir);
    // `script` (util-linux) gives the command a terminal of its own.
    let on_terminal = |no_color: Option<&str>| -> String {
        let mut cmd = Command::new("script");
        cmd.args([
            "-qec",
            &format!("{BIN} search prototype --mode bm25"),
            "/dev/null",
        ]);
        cmd.env("BRAIN_DATA_DIR", &d.data_dir)
            .env("BRAIN_SOCKET", &d.socket)
            .env_remove("NO_COLOR");
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let o = cmd.output().expect("run script(1)");
        assert!(o.status.success(), "{o:?}");
        stdout(&o)
    };
    let coloured = on_terminal(None);
    assert!(coloured.contains("\x1b[1m"), "{coloured:?}");
    let plain = on_terminal(Some("1"));
    assert!(!plain.contains('\x1b'), "{plain:?}");
    assert!(plain.contains("**"), "{plain:?}");
    let piped = ok(&d.cli(&["search", "prototype", "--mode", "bm25"]));
    assert!(!piped.contains('\x1b') && piped.contains("**"), "{piped:?}");
}
