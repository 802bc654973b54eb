//! The watched set through the real daemon: roots never overlap, a root that goes missing is
//! reported and kept, a sync that fails for lack of space is reported and retried, and a
//! folder that cannot be watched leaves the rest of its root watched.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{BIN, Daemon, brain_env, temp_layout, wait_until};

fn write(path: &Path, body: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, body).unwrap();
}

fn node(d: &Daemon, p: &Path) -> Option<Value> {
    d.call("node.get", json!({ "path": p })).ok()
}

fn wait_node(d: &Daemon, p: &Path) -> Value {
    let mut out = Value::Null;
    wait_until(&format!("node for {}", p.display()), || match node(d, p) {
        Some(v) => {
            out = v;
            true
        }
        None => false,
    });
    out
}

fn status(d: &Daemon) -> Value {
    d.call("daemon.status", json!({})).unwrap()
}

fn notes(d: &Daemon) -> i64 {
    status(d)["counts"]["nodes"]["note"].as_i64().unwrap_or(0)
}

fn hits(d: &Daemon, q: &str) -> Vec<String> {
    let r = d
        .call("search.query", json!({ "query": q, "mode": "bm25" }))
        .unwrap();
    r["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap_or("").to_owned())
        .collect()
}

#[test]
fn a_folder_inside_a_root_is_refused_and_a_root_around_roots_folds_them_in() {
    let d = Daemon::start();
    let vault = std::fs::canonicalize(&d.dir).unwrap().join("vault");
    write(
        &vault.join("a.md"),
        "# Alpha\n\nAlpha talks about quinces.\n",
    );
    write(
        &vault.join("sub/b.md"),
        "# Bee\n\nBee links [[a]] and mentions quinces.\n",
    );

    // The inner folder first: its link to `a` has nothing to resolve to inside it.
    d.call("watch.add", json!({ "path": vault.join("sub") }))
        .unwrap();
    let b = wait_node(&d, &vault.join("sub/b.md"));

    // The folder around it folds it in: one root, each note once, b keeps its id and its link
    // now resolves against the whole vault.
    d.call("watch.add", json!({ "path": vault })).unwrap();
    wait_node(&d, &vault.join("a.md"));
    let roots = d.call("watch.list", json!({})).unwrap()["roots"].clone();
    assert_eq!(roots.as_array().unwrap().len(), 1, "{roots}");
    assert_eq!(roots[0]["path"], vault.display().to_string());
    assert_eq!(node(&d, &vault.join("sub/b.md")).unwrap()["id"], b["id"]);
    wait_until("b's link to resolve to a", || {
        let g = d
            .call(
                "graph.neighbors",
                json!({ "id": b["id"], "direction": "out", "edge_types": ["links_to"] }),
            )
            .unwrap();
        g["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["kind"] == "note" && n["title"] == "Alpha")
    });
    wait_until("each note once", || notes(&d) == 2);
    let both = [
        vault.join("a.md").display().to_string(),
        vault.join("sub/b.md").display().to_string(),
    ];
    wait_until("each note to be found once", || {
        let mut found = hits(&d, "quinces");
        found.sort();
        found == both
    });

    // A folder inside the root is refused, naming the root; nothing is indexed twice.
    let err = d
        .call("watch.add", json!({ "path": vault.join("sub") }))
        .unwrap_err();
    assert_eq!(err.kind(), Some("invalid_params"), "{err}");
    assert!(
        err.to_string().contains(&vault.display().to_string()),
        "{err}"
    );
    let out = d.cli(&["watch", "add", vault.join("sub").to_str().unwrap()]);
    assert!(!out.status.success());
    assert_eq!(d.call("watch.list", json!({})).unwrap()["roots"], roots);
    assert_eq!(notes(&d), 2);

    // A folder holding the daemon's own data would have it index its own files for ever.
    let err = d.call("watch.add", json!({ "path": d.dir })).unwrap_err();
    assert_eq!(err.kind(), Some("invalid_params"), "{err}");
    assert!(err.to_string().contains("data directory"), "{err}");
    assert_eq!(d.call("watch.list", json!({})).unwrap()["roots"], roots);
    d.stop();
}

#[test]
fn a_root_moved_away_is_reported_missing_kept_and_reconciled_when_back() {
    let d = Daemon::start();
    let base = std::fs::canonicalize(&d.dir).unwrap();
    let vault = base.join("notes");
    let away = base.join("elsewhere");
    write(&vault.join("a.md"), "first words\n");
    d.call("watch.add", json!({ "path": vault })).unwrap();
    let a = wait_node(&d, &vault.join("a.md"));

    std::fs::rename(&vault, &away).unwrap();
    // Something happening inside the moved folder is what a user would do next.
    write(&away.join("a.md"), "edited while away, with quokkas\n");
    write(&away.join("new.md"), "written while away\n");
    wait_until("the root to be reported missing", || {
        let s = status(&d);
        s["watcher"]["missing"] == json!([vault.display().to_string()])
            && s["watcher"]["state"] == "missing_root"
    });
    // Nothing is retired while it is away, and search says why it may be stale.
    assert_eq!(node(&d, &vault.join("a.md")).unwrap()["id"], a["id"]);
    let plain = crate::harness::stdout(&d.cli(&["status"]));
    assert!(
        plain.contains(&format!("missing: {}", vault.display())),
        "{plain}"
    );
    let r = d
        .call("search.query", json!({ "query": "first", "mode": "bm25" }))
        .unwrap();
    assert!(
        r["warnings"].to_string().contains("missing"),
        "{}",
        r["warnings"]
    );

    std::fs::rename(&away, &vault).unwrap();
    wait_node(&d, &vault.join("new.md"));
    wait_until("the edit made while away to be read", || {
        hits(&d, "quokkas") == [vault.join("a.md").display().to_string()]
    });
    assert_eq!(node(&d, &vault.join("a.md")).unwrap()["id"], a["id"]);
    let s = status(&d);
    assert_eq!(s["watcher"]["missing"], json!([]));
    assert_eq!(s["watcher"]["state"], "watching");
    // Watched again: a change after the return is seen too.
    write(&vault.join("later.md"), "after the return\n");
    wait_node(&d, &vault.join("later.md"));
    d.stop();
}

/// Free bytes of the file system holding `path`.
fn free_bytes(path: &Path) -> u64 {
    let s = rustix::fs::statvfs(path).unwrap();
    s.f_bavail * s.f_frsize
}

/// The daemon with its data dir on a small tmpfs of its own: a private mount namespace made by
/// `unshare`, so the test needs no privileges beyond user namespaces and leaves no mount behind.
/// The test reaches the tmpfs through `/proc/PID/root`.
fn daemon_on_small_disk(dir: &Path, data: &Path, socket: &Path, mib: u64) -> Daemon {
    std::fs::create_dir_all(data).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "-Urm",
        "sh",
        "-c",
        &format!("mount -t tmpfs -o size={mib}m tmpfs \"$BRAIN_DATA_DIR\" && exec \"$0\" daemon"),
        BIN,
    ]);
    let mut d = Daemon::spawn_under(cmd, dir, data, socket, "daemon-small-disk.log");
    d.wait_ready();
    d
}

#[test]
fn a_sync_that_fails_for_lack_of_space_is_reported_and_retried_until_it_succeeds() {
    let (temp, data, socket) = temp_layout();
    let d = daemon_on_small_disk(temp.path(), &data, &socket, 16);
    let inside: PathBuf =
        PathBuf::from(format!("/proc/{}/root", d.pid())).join(data.strip_prefix("/").unwrap());
    let vault = std::fs::canonicalize(temp.path()).unwrap().join("vault");
    const NOTES: usize = 400;
    for i in 0..NOTES {
        let words: String = (0..150).map(|w| format!("w{i}x{w} ")).collect();
        write(
            &vault.join(format!("n{i:03}.md")),
            &format!("# Note {i}\n\n{words}\n"),
        );
    }
    write(&vault.join("last.md"), "the zyzzyva note\n");

    // Leave the store room for the files' source rows but not for their notes.
    let filler = inside.join("filler");
    let room = 900 * 1024;
    let fill = free_bytes(&inside).saturating_sub(room);
    std::fs::write(&filler, vec![7u8; fill as usize]).unwrap();

    d.call("watch.add", json!({ "path": vault })).unwrap();
    wait_until("the failure to be reported", || {
        let s = status(&d);
        s["watcher"]["state"] == "retrying"
            && s["watcher"]["error"]
                .as_str()
                .is_some_and(|e| e.contains("full"))
    });
    let r = d
        .call("search.query", json!({ "query": "note", "mode": "bm25" }))
        .unwrap();
    assert!(
        r["warnings"].to_string().contains("full"),
        "{}",
        r["warnings"]
    );
    // Files registered but not yet written say why they wait.
    let pending = d
        .call("source.list", json!({ "status": "pending", "limit": 1000 }))
        .unwrap();
    let pending = pending["sources"].as_array().unwrap();
    assert!(
        !pending.is_empty(),
        "the room left fits the source rows, not the notes"
    );
    for s in pending {
        assert!(
            s["reason"].as_str().is_some_and(|r| r.contains("full")),
            "{s}"
        );
    }

    // Space comes back: the retry finishes the job with no one asking.
    std::fs::remove_file(&filler).unwrap();
    wait_until("every note to be indexed", || {
        let s = status(&d);
        s["counts"]["sources"]["indexed"].as_i64() == Some(NOTES as i64 + 1)
            && s["watcher"]["error"].is_null()
            && s["watcher"]["state"] == "watching"
    });
    wait_until("the last note to be searchable", || {
        hits(&d, "zyzzyva") == [vault.join("last.md").display().to_string()]
    });
    d.stop();
}

#[test]
fn a_panic_in_the_ingest_worker_is_reported_and_the_worker_starts_again_and_finishes() {
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(
        temp.path(),
        &data,
        &socket,
        &[("BRAIN_FAILPOINT", "ingest_panic")],
    );
    d.wait_ready();
    let vault = std::fs::canonicalize(temp.path()).unwrap().join("vault");
    write(&vault.join("a.md"), "the axolotl note\n");
    // The first sync (this root's) panics; the restarted worker reconciles the root.
    d.call("watch.add", json!({ "path": vault })).unwrap();
    wait_until("the panic to be reported", || {
        status(&d)["workers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w["name"] == "brain-ingest" && w["restarts"] == 1)
    });
    let s = status(&d);
    let w = s["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "brain-ingest")
        .unwrap();
    assert!(
        w["last_panic"].as_str().unwrap().contains("ingest_panic"),
        "{w}"
    );
    let plain = crate::harness::stdout(&d.cli(&["status"]));
    assert!(
        plain.contains("worker    brain-ingest restarted 1 times"),
        "{plain}"
    );
    wait_until("the root to be ingested after all", || {
        hits(&d, "axolotl") == [vault.join("a.md").display().to_string()]
    });
    // And it keeps watching.
    write(&vault.join("b.md"), "the second capybara\n");
    wait_until("a later change to be seen", || {
        hits(&d, "capybara") == [vault.join("b.md").display().to_string()]
    });
    d.stop();
}

#[test]
fn a_folder_made_a_root_by_a_one_off_ingest_can_be_removed_and_its_cut_short_ingest_finishes() {
    let (temp, data, socket) = temp_layout();
    let base = std::fs::canonicalize(temp.path()).unwrap();
    let dl = base.join("dl");
    for i in 0..20 {
        write(
            &dl.join(format!("n{i:02}.md")),
            &format!("note {i} about kiwis\n"),
        );
    }
    write(&dl.join("bad.md"), "the file in flight at the crash\n");
    write(&dl.join("sub/keep.md"), "a note in a subfolder\n");

    // The ingest is cut short by a crash while bad.md is in flight.
    let failpoint = [("BRAIN_FAILPOINT", "ingest_file:bad.md")];
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &failpoint);
    d.wait_ready();
    assert!(d.call("ingest.path", json!({ "path": dl })).is_err());
    assert!(!d.wait_exit().success(), "{}", d.log());

    // The next start finishes what was asked, though nobody watches the folder.
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    wait_until("the cut-short ingest to finish", || {
        let s = status(&d);
        s["counts"]["sources"]["pending"].is_null()
            && s["counts"]["sources"]["indexed"].as_i64() == Some(22)
    });
    wait_until("its notes to be searchable", || {
        hits(&d, "kiwis").len() == 10
    });

    // The folder is a root now; a folder inside it cannot be watched on its own until the
    // user takes it away, as the refusal says.
    let err = d
        .call("watch.add", json!({ "path": dl.join("sub") }))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("brain watch remove {}", dl.display())),
        "{err}"
    );
    d.call("watch.remove", json!({ "path": dl })).unwrap();
    d.call("watch.add", json!({ "path": dl.join("sub") }))
        .unwrap();
    wait_node(&d, &dl.join("sub/keep.md"));
    wait_until("the rest of the folder to be retired", || {
        hits(&d, "kiwis").is_empty()
    });
    d.stop();
}

#[test]
fn symlinks_never_make_a_second_path_to_the_same_notes() {
    let d = Daemon::start();
    let base = std::fs::canonicalize(&d.dir).unwrap();
    let (a, b) = (base.join("A"), base.join("B"));
    write(&a.join("a1.md"), "the first aardvark\n");
    write(&a.join("real/x.md"), "the xylophone note\n");
    std::os::unix::fs::symlink(a.join("real"), a.join("link")).unwrap();
    write(&b.join("b1.md"), "the first bison\n");
    d.call("watch.add", json!({ "path": a })).unwrap();
    d.call("watch.add", json!({ "path": b })).unwrap();
    wait_node(&d, &a.join("a1.md"));
    wait_node(&d, &b.join("b1.md"));

    // A symlinked folder inside a root is not followed: its files are indexed where they are.
    wait_until("x.md to be found once, at its real path", || {
        hits(&d, "xylophone") == [a.join("real/x.md").display().to_string()]
    });
    let skipped = d
        .call("source.list", json!({ "status": "skipped" }))
        .unwrap();
    assert!(
        skipped["sources"].as_array().unwrap().iter().any(|s| {
            s["path"] == a.join("link").display().to_string() && s["reason"] == "symlinked_folder"
        }),
        "{skipped}"
    );

    // A root replaced by a link to another root stays missing: no second copy of A.
    std::fs::rename(&b, base.join("B.old")).unwrap();
    wait_until("B to be missing", || {
        status(&d)["watcher"]["missing"] == json!([b.display().to_string()])
    });
    std::os::unix::fs::symlink(&a, &b).unwrap();
    write(&a.join("a2.md"), "the second aardvark\n");
    wait_node(&d, &a.join("a2.md"));
    let s = status(&d);
    assert_eq!(
        s["watcher"]["missing"],
        json!([b.display().to_string()]),
        "{s}"
    );
    assert!(node(&d, &b.join("a2.md")).is_none());
    wait_until("A's notes to be found once each", || {
        let mut found = hits(&d, "aardvark");
        found.sort();
        found
            == [
                a.join("a1.md").display().to_string(),
                a.join("a2.md").display().to_string(),
            ]
    });
    // Taking B away leaves A watched.
    d.call("watch.remove", json!({ "path": b })).unwrap();
    write(&a.join("a3.md"), "the third aardvark\n");
    wait_node(&d, &a.join("a3.md"));
    d.stop();
}

/// The user a daemon without privileges runs as, when the tests run as root.
const NOBODY: u32 = 65534;

/// The daemon as a user without privileges: as root (who reads any folder whatever its mode)
/// it runs under `setpriv` as [`NOBODY`], and everything under `dir` is handed to that user.
fn daemon_without_privileges(dir: &Path, data: &Path, socket: &Path) -> Daemon {
    std::fs::create_dir_all(data).unwrap();
    let cmd = if rustix::process::geteuid().is_root() {
        let chown = Command::new("chown")
            .args(["-R", &format!("{NOBODY}:{NOBODY}")])
            .arg(dir)
            .status()
            .unwrap();
        assert!(chown.success());
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            BIN,
            "daemon",
        ]);
        cmd
    } else {
        let mut cmd = Command::new(BIN);
        cmd.arg("daemon");
        cmd
    };
    let d = Daemon::spawn_under(cmd, dir, data, socket, "daemon-unprivileged.log");
    wait_until("the daemon to answer", || {
        as_daemon_user(&d, "daemon.status", json!({})).is_ok()
    });
    d
}

/// A call made as the daemon's user (the daemon refuses peers of another user): as root, from
/// a thread that takes that user's ids, which a thread can do alone on Linux.
fn as_daemon_user(
    d: &Daemon,
    method: &str,
    params: Value,
) -> Result<Value, brain::rpc::client::ClientError> {
    let call =
        || brain::rpc::client::Client::connect(&d.socket).and_then(|mut c| c.call(method, params));
    if !rustix::process::geteuid().is_root() {
        return call();
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            rustix::thread::set_thread_groups(&[]).unwrap();
            rustix::thread::set_thread_gid(rustix::process::Gid::from_raw(NOBODY)).unwrap();
            rustix::thread::set_thread_uid(rustix::process::Uid::from_raw(NOBODY)).unwrap();
            call()
        })
        .join()
        .unwrap()
    })
}

/// `brain ARGS` as the daemon's user; its standard output.
fn cli_as_daemon_user(d: &Daemon, args: &[&str]) -> String {
    let mut cmd = if rustix::process::geteuid().is_root() {
        let mut cmd = Command::new("setpriv");
        cmd.args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
            BIN,
        ]);
        cmd
    } else {
        Command::new(BIN)
    };
    brain_env(&mut cmd, &d.data_dir, &d.socket);
    let out = cmd.args(args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn set_mode(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn a_folder_that_cannot_be_watched_leaves_the_rest_of_its_root_watched() {
    let (temp, data, socket) = temp_layout();
    set_mode(temp.path(), 0o755);
    let vault = std::fs::canonicalize(temp.path()).unwrap().join("vault");
    write(&vault.join("a/a1.md"), "# A1\n\nApricots.\n");
    write(&vault.join("secret/s1.md"), "# S1\n\nSaffron.\n");
    std::fs::create_dir_all(vault.join("b")).unwrap();
    let d = daemon_without_privileges(temp.path(), &data, &socket);
    let secret = vault.join("secret");
    set_mode(&secret, 0o000);
    let call = |m: &str, p: Value| as_daemon_user(&d, m, p);
    let status = || call("daemon.status", json!({})).unwrap();
    let wait_note = |p: PathBuf| {
        wait_until(&format!("node for {}", p.display()), || {
            call("node.get", json!({ "path": p })).is_ok()
        })
    };

    call("watch.add", json!({ "path": vault })).unwrap();
    wait_note(vault.join("a/a1.md"));
    let s = status();
    let w = &s["watcher"];
    assert_eq!(w["state"], "watching", "{s}");
    assert_eq!(w["roots"], json!([vault]), "{s}");
    assert_eq!(w["unwatched"], json!([secret]), "{s}");
    assert_eq!(w["unwatched_count"], 1, "{s}");
    assert_eq!(w["error"], Value::Null, "{s}");
    let out = cli_as_daemon_user(&d, &["status"]);
    assert!(
        out.contains(&format!("unwatched: {}", secret.display())) && out.contains("watching"),
        "{out}"
    );

    // The rest of the root is watched: a folder there before, and one made after the watch.
    write(&vault.join("b/new.md"), "# New\n\nNectarines.\n");
    wait_note(vault.join("b/new.md"));
    write(&vault.join("c/first.md"), "# First\n\nFigs.\n");
    wait_note(vault.join("c/first.md"));
    write(&vault.join("c/second.md"), "# Second\n\nSloes.\n");
    wait_note(vault.join("c/second.md"));

    // Readable again: the folder is watched and what it holds is indexed.
    set_mode(&secret, 0o755);
    wait_note(secret.join("s1.md"));
    wait_until("no folder left unwatched", || {
        status()["watcher"]["unwatched_count"] == 0
    });
    write(&secret.join("s2.md"), "# S2\n\nSorrel.\n");
    wait_note(secret.join("s2.md"));
    let s = status();
    assert_eq!(s["counts"]["nodes"]["note"], 6, "{s}");
    assert_eq!(s["watcher"]["state"], "watching", "{s}");
    d.stop();
}

#[test]
fn a_root_found_replaced_by_a_link_at_start_leaves_its_targets_watch_alone() {
    let (temp, data, socket) = temp_layout();
    let base = std::fs::canonicalize(temp.path()).unwrap();
    let (a, b) = (base.join("A"), base.join("B"));
    write(&a.join("a1.md"), "the first anteater\n");
    write(&b.join("b1.md"), "the first bison\n");
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    d.call("watch.add", json!({ "path": a })).unwrap();
    d.call("watch.add", json!({ "path": b })).unwrap();
    wait_node(&d, &b.join("b1.md"));
    d.stop();

    // While the daemon is down, B becomes a link to A.
    std::fs::rename(&b, base.join("B.old")).unwrap();
    std::os::unix::fs::symlink(&a, &b).unwrap();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    wait_until("B to be missing", || {
        status(&d)["watcher"]["missing"] == json!([b.display().to_string()])
    });
    // A is still watched: a change in it is seen, before and after B is taken away.
    write(&a.join("a2.md"), "the second anteater\n");
    wait_node(&d, &a.join("a2.md"));
    d.call("watch.remove", json!({ "path": b })).unwrap();
    write(&a.join("a3.md"), "the third anteater\n");
    wait_node(&d, &a.join("a3.md"));
    d.stop();
}
