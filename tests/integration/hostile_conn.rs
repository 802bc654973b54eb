//! Who is on the other end: the socket's directory and the permissions of what the daemon
//! creates.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::json;

use crate::harness::{BIN, Daemon, brain_cmd, temp_layout, wait_until};

/// `daemon.status` on a fresh connection answers.
fn status_answers(d: &Daemon) {
    let v = d.call("daemon.status", json!({})).expect("daemon.status");
    assert_eq!(v["pid"], d.pid());
}

#[test]
fn the_daemon_refuses_a_socket_directory_others_can_write() {
    let (temp, data, _) = temp_layout();
    let open_dir = temp.path().join("shared");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = open_dir.join("brain.sock");
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    let status = d.wait_exit();
    assert!(!status.success());
    let log = d.log();
    assert!(
        log.contains(&format!("refusing to serve in {}", open_dir.display()))
            && log.contains("writable by its group and other users")
            && log.contains("chmod go-w"),
        "{log}"
    );
    assert!(!socket.exists());

    // Made private, the same directory is fine.
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    status_answers(&d);
    d.stop();
}

/// Every file and folder under `dir`, with its permission bits.
fn modes(dir: &Path, out: &mut Vec<(PathBuf, u32)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = e.metadata().unwrap();
        out.push((e.path(), meta.permissions().mode() & 0o777));
        if meta.is_dir() {
            modes(&e.path(), out);
        }
    }
}

#[test]
fn everything_the_daemon_creates_is_private_whatever_the_umask_and_the_folder() {
    let (temp, data, socket) = temp_layout();
    std::fs::create_dir(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A store left readable by an older version.
    std::fs::write(data.join("brain.db"), b"").unwrap();
    std::fs::set_permissions(
        data.join("brain.db"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let notes = temp.path().join("notes");
    std::fs::create_dir(&notes).unwrap();
    std::fs::write(notes.join("a.md"), "# A\n\nsome text about privacy\n").unwrap();

    let stderr_path = temp.path().join("daemon.log");
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("umask 022; exec \"$0\" daemon").arg(BIN);
    for (k, v) in brain_cmd(&data, &socket).get_envs() {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon::adopt(child, temp.path(), &data, &socket, &stderr_path);
    d.wait_ready();
    let report = d.call("ingest.path", json!({ "path": notes })).unwrap();
    assert_eq!(report["indexed"], 1, "{report}");
    wait_until("the note is searchable", || {
        d.call(
            "search.query",
            json!({ "query": "privacy", "mode": "bm25" }),
        )
        .is_ok_and(|v| v["hits"].as_array().is_some_and(|h| !h.is_empty()))
    });
    assert!(data.join("brain.db-wal").exists());

    let mut all = vec![(
        data.clone(),
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
    )];
    modes(&data, &mut all);
    assert!(all.len() > 5, "{all:?}");
    let open: Vec<_> = all.iter().filter(|(_, m)| m & 0o077 != 0).collect();
    assert!(open.is_empty(), "readable by others: {open:?}");
    assert!(d.log().contains("made private"), "{}", d.log());
    status_answers(&d);
    d.stop();
}
