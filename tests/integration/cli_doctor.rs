//! `brain doctor` on a healthy brain, then on stores, folders and settings broken on purpose:
//! each check must find its own problem.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::cli::fixture_vault;
use crate::harness::{BIN, Daemon, brain_cmd, brain_env, stdout, temp_layout, wait_until};

fn doctor(data: &Path, socket: &Path, env: &[(&str, &str)]) -> (bool, Value) {
    let mut cmd = brain_cmd(data, socket);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let o = cmd.args(["doctor", "--json"]).output().unwrap();
    let v: Value =
        serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {}", stdout(&o)));
    assert_eq!(v["healthy"], o.status.success(), "{v:#}");
    (o.status.success(), v)
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap_or_else(|| panic!("no {name} check in {report:#}"))
}

fn outcome(report: &Value, name: &str) -> String {
    check(report, name)["outcome"].as_str().unwrap().to_owned()
}

fn caught_up(d: &Daemon) -> bool {
    let s = d.call("daemon.status", json!({})).unwrap();
    s["search"]["index_state"] == "ready"
        && s["search"]["index_seq"] == s["search"]["outbox_head"]
        && s["search"]["indexed_chunks"] == s["search"]["total_chunks"]
        && s["watcher"]["queue_depth"] == 0
        && s["watcher"]["busy"] == false
}

fn sql(data: &Path, statements: &str) {
    let c = rusqlite::Connection::open(data.join("brain.db")).unwrap();
    c.execute_batch(statements).unwrap();
}

#[test]
fn doctor_passes_a_healthy_brain_and_finds_what_the_daemon_knows_is_wrong() {
    let d = Daemon::start();
    let v = fixture_vault(&d, &d.dir);
    d.call("watch.add", json!({ "path": v })).unwrap();
    wait_until("the index to catch up", || caught_up(&d));
    let (healthy, r) = doctor(&d.data_dir, &d.socket, &[]);
    assert!(healthy, "{r:#}");
    for name in [
        "daemon",
        "store",
        "index",
        "vectors",
        "model",
        "permissions",
        "roots",
        "overlapping_roots",
        "inotify",
        "disk",
    ] {
        assert_eq!(outcome(&r, name), "ok", "{name}: {r:#}");
    }
    let plain = stdout(
        &brain_cmd(&d.data_dir, &d.socket)
            .arg("doctor")
            .output()
            .unwrap(),
    );
    assert!(plain.contains("all is well"), "{plain}");

    // More folders than inotify watches.
    let (healthy, r) = doctor(
        &d.data_dir,
        &d.socket,
        &[("BRAIN_INOTIFY_MAX_USER_WATCHES", "3")],
    );
    assert!(!healthy);
    assert_eq!(outcome(&r, "inotify"), "problem", "{r:#}");
    assert!(
        check(&r, "inotify")["fix"]
            .as_str()
            .unwrap()
            .contains("max_user_watches")
    );

    // A watched root gone.
    std::fs::rename(&v, d.dir.join("moved")).unwrap();
    let (healthy, r) = doctor(&d.data_dir, &d.socket, &[]);
    assert!(!healthy);
    assert_eq!(outcome(&r, "roots"), "problem", "{r:#}");
    assert!(
        check(&r, "roots")["detail"]
            .as_str()
            .unwrap()
            .contains(v.to_str().unwrap())
    );
}

#[test]
fn doctor_finds_each_problem_of_a_stopped_brain_broken_on_purpose() {
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    let v = fixture_vault(&d, temp.path());
    wait_until("the index to catch up", || caught_up(&d));
    d.stop();

    let (healthy, r) = doctor(&data, &socket, &[]);
    assert!(!healthy, "no daemon is a warning");
    assert_eq!(outcome(&r, "daemon"), "warning");
    assert_eq!(outcome(&r, "store"), "ok", "{r:#}");
    assert_eq!(outcome(&r, "index"), "skipped", "{r:#}");

    // The text index gone.
    std::fs::remove_dir_all(data.join("index")).unwrap();
    let (_, r) = doctor(&data, &socket, &[]);
    assert_eq!(outcome(&r, "index"), "warning", "{r:#}");

    // An active model whose folder is missing.
    sql(
        &data,
        "INSERT INTO meta(key, value) VALUES ('search.model', 'ghost')
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    );
    let (_, r) = doctor(&data, &socket, &[]);
    assert_eq!(outcome(&r, "model"), "problem", "{r:#}");
    assert!(
        check(&r, "model")["detail"]
            .as_str()
            .unwrap()
            .contains("ghost")
    );
    sql(&data, "DELETE FROM meta WHERE key = 'search.model'");

    // Two roots, one inside the other (written past the daemon, which refuses it).
    let inner = v.join("Projects");
    sql(
        &data,
        &format!(
            "INSERT INTO roots(path, watched, added_by, added_at)
             VALUES ('{}', 1, 'user:x', '2026-01-01T00:00:00Z')",
            inner.display()
        ),
    );
    let (_, r) = doctor(&data, &socket, &[]);
    assert_eq!(outcome(&r, "overlapping_roots"), "problem", "{r:#}");
    assert!(
        check(&r, "overlapping_roots")["detail"]
            .as_str()
            .unwrap()
            .contains("Projects")
    );
    sql(&data, "DELETE FROM roots WHERE path LIKE '%/Projects'");

    // A row pointing at nothing.
    sql(
        &data,
        "PRAGMA foreign_keys = OFF;
         UPDATE sources SET root_id = 9999 WHERE id = (SELECT min(id) FROM sources);",
    );
    let (_, r) = doctor(&data, &socket, &[]);
    assert_eq!(outcome(&r, "store"), "problem", "{r:#}");
    assert!(
        check(&r, "store")["detail"]
            .as_str()
            .unwrap()
            .contains("sources")
    );

    // A data dir, and a socket directory, open to others.
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, r) = doctor(&data, &socket, &[]);
    assert_eq!(outcome(&r, "permissions"), "problem", "{r:#}");
    assert!(
        check(&r, "permissions")["fix"]
            .as_str()
            .unwrap()
            .contains("chmod 700")
    );
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o700)).unwrap();
    let sock_dir = socket.parent().unwrap();
    let before = std::fs::metadata(sock_dir).unwrap().permissions();
    std::fs::set_permissions(sock_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, r) = doctor(&data, &socket, &[]);
    std::fs::set_permissions(sock_dir, before).unwrap();
    assert_eq!(outcome(&r, "permissions"), "problem", "{r:#}");
    assert!(
        check(&r, "permissions")["detail"]
            .as_str()
            .unwrap()
            .contains("writable")
    );
}

#[test]
fn doctor_finds_a_daemon_without_its_model_and_a_full_disk() {
    let (temp, data, socket) = temp_layout();
    // The store names a model that is not there: the daemon cannot embed.
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    d.stop();
    sql(
        &data,
        "INSERT INTO meta(key, value) VALUES ('search.model', 'ghost')
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    );
    let d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    let mut d = d;
    d.wait_ready();
    wait_until("the model to fail", || {
        let s = d.call("daemon.status", json!({})).unwrap();
        s["search"]["model_state"]
            .as_str()
            .unwrap()
            .starts_with("error")
    });
    let (healthy, r) = doctor(&data, &socket, &[]);
    assert!(!healthy);
    assert_eq!(outcome(&r, "vectors"), "problem", "{r:#}");
    assert_eq!(outcome(&r, "model"), "problem", "{r:#}");
    d.stop();

    // A data dir on a 16 MiB file system, in a mount namespace of its own.
    let small = temp.path().join("small");
    std::fs::create_dir_all(&small).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-Urm",
        "sh",
        "-c",
        "mount -t tmpfs -o size=16m tmpfs \"$BRAIN_DATA_DIR\" && exec \"$0\" doctor --json",
        BIN,
    ]);
    brain_env(&mut cmd, &small, &socket);
    let o = cmd.output().unwrap();
    let r: Value = serde_json::from_str(&stdout(&o)).unwrap_or_else(|e| panic!("{e}: {o:?}"));
    assert!(!o.status.success());
    assert_eq!(outcome(&r, "disk"), "problem", "{r:#}");
    assert!(
        check(&r, "disk")["fix"]
            .as_str()
            .unwrap()
            .contains("free some space")
    );
}
