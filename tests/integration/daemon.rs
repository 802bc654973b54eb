//! The daemon and the socket: lifecycle, protocol faults, the CLI client.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixStream;

use serde_json::{Value, json};

use crate::harness::{Daemon, brain_cmd, stderr, stdout, temp_layout, wait_until};

/// Sends raw lines on one connection and returns one parsed answer per line sent.
fn raw_exchange(socket: &std::path::Path, lines: &[&[u8]]) -> Vec<Value> {
    let mut s = UnixStream::connect(socket).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut out = Vec::new();
    for line in lines {
        s.write_all(line).unwrap();
        s.write_all(b"\n").unwrap();
        let mut answer = String::new();
        r.read_line(&mut answer).unwrap();
        out.push(serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{e}: {answer:?}")));
    }
    out
}

#[test]
fn status_round_trip_through_cli_and_socket() {
    let d = Daemon::start();
    let v = d.call("daemon.status", json!({})).unwrap();
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["data_dir"], d.data_dir.display().to_string());
    assert_eq!(
        v["store_path"],
        d.data_dir.join("brain.db").display().to_string()
    );
    assert!(v["store_bytes"].as_u64().unwrap() > 0);
    assert!(v["user_id"].as_str().unwrap().starts_with("user:"));
    assert_eq!(v["counts"]["users"], 1);
    for k in ["nodes", "edges", "sources"] {
        assert!(v["counts"][k].is_object(), "{k}: {v}");
    }

    let out = d.cli(&["status", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let parsed: Value = serde_json::from_str(&stdout(&out)).expect("one JSON object");
    assert_eq!(parsed["pid"], d.pid());

    let out = d.cli(&["status"]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("running"), "{}", stdout(&out));
    d.stop();
}

#[test]
fn acting_user_comes_from_env_and_is_listed() {
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(
        temp.path(),
        &data,
        &socket,
        &[("BRAIN_USER_EMAIL", " Ada@Example.ORG ")],
    );
    d.wait_ready();
    let expected = brain::identity::UserId::for_email("ada@example.org").to_string();
    let v = d.call("daemon.status", json!({})).unwrap();
    assert_eq!(v["user_id"], expected);
    assert_eq!(v["user_email"], "ada@example.org");
    let users = d.call("user.list", json!({})).unwrap();
    assert_eq!(users["users"][0]["id"], expected);
    assert_eq!(users["users"][0]["email"], "ada@example.org");
    let out = d.cli(&["user", "list"]);
    assert!(stdout(&out).contains(&expected));
    let id = d
        .call("identity.id", json!({"email": "ADA@example.org"}))
        .unwrap();
    assert_eq!(id["id"], expected);
    d.stop();
}

#[test]
fn socket_is_private_to_the_user() {
    let d = Daemon::start();
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    d.stop();
}

#[test]
fn malformed_input_gets_errors_and_the_connection_survives() {
    let d = Daemon::start();
    let big = vec![b'x'; 9 * 1024 * 1024];
    let answers = raw_exchange(
        &d.socket,
        &[
            b"this is not json",
            b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"no.such\"}",
            b"[]",
            b"{\"jsonrpc\":\"2.0\",\"id\":2}",
            b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"identity.id\",\"params\":{\"mail\":1}}",
            b"\xff\xfe\x00garbage",
            &big,
            b"{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"daemon.status\"}",
        ],
    );
    let codes: Vec<_> = answers.iter().map(|a| a["error"]["code"].clone()).collect();
    assert_eq!(
        codes,
        [
            json!(-32700),
            json!(-32601),
            json!(-32600),
            json!(-32600),
            json!(-32602),
            json!(-32700),
            json!(-32600),
            Value::Null
        ]
    );
    assert_eq!(answers[0]["id"], Value::Null);
    assert_eq!(answers[0]["jsonrpc"], "2.0");
    assert_eq!(answers[0]["error"]["data"]["kind"], "parse_error");
    assert_eq!(answers[1]["id"], 1);
    assert_eq!(answers[1]["error"]["data"]["kind"], "method_not_found");
    assert_eq!(answers[6]["error"]["data"]["kind"], "frame_too_large");
    assert_eq!(answers[7]["id"], 4);
    assert!(answers[7]["result"]["version"].is_string());
    // The daemon is still serving new connections.
    assert!(d.call("daemon.status", json!({})).is_ok());
    d.stop();
}

#[test]
fn notifications_get_no_answer() {
    let d = Daemon::start();
    let mut s = UnixStream::connect(&d.socket).unwrap();
    s.write_all(b"{\"jsonrpc\":\"2.0\",\"method\":\"daemon.status\"}\n")
        .unwrap();
    s.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":\"after\",\"method\":\"daemon.status\"}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["id"], "after", "the notification must not be answered");
    d.stop();
}

#[test]
fn a_second_daemon_on_the_same_data_dir_is_refused() {
    let d = Daemon::start();
    let other_socket = d.dir.join("other.sock");
    let out = brain_cmd(&d.data_dir, &other_socket)
        .arg("daemon")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("already using"), "{err}");
    assert!(err.contains(&d.pid().to_string()), "{err}");
    assert!(!other_socket.exists());
    // The first keeps serving.
    assert!(d.call("daemon.status", json!({})).is_ok());
    d.stop();
}

#[test]
fn a_stale_socket_from_a_killed_daemon_is_replaced() {
    let (temp, data, socket) = temp_layout();
    let mut first = Daemon::spawn(temp.path(), &data, &socket, &[]);
    first.wait_ready();
    first.kill9();
    assert!(socket.exists(), "a killed daemon leaves its socket behind");
    assert!(matches!(
        brain::rpc::client::Client::connect(&socket),
        Err(brain::rpc::client::ClientError::NoDaemon { .. })
    ));
    let mut second = Daemon::spawn(temp.path(), &data, &socket, &[]);
    second.wait_ready();
    assert!(second.log().contains("stale socket"), "{}", second.log());
    second.stop();
}

#[test]
fn sigterm_sigint_and_stop_shut_down_gracefully_and_remove_the_socket() {
    use rustix::process::Signal;
    for how in ["TERM", "INT", "stop"] {
        let (temp, data, socket) = temp_layout();
        let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
        d.wait_ready();
        // An idle open connection must not hold up shutdown.
        let _idle = UnixStream::connect(&socket).unwrap();
        match how {
            "TERM" => d.signal(Signal::TERM),
            "INT" => d.signal(Signal::INT),
            _ => {
                let out = d.cli(&["stop"]);
                assert!(out.status.success(), "{}", stderr(&out));
            }
        }
        let status = d.wait_exit();
        assert!(status.success(), "{how}: {status}\n{}", d.log());
        assert!(!socket.exists(), "{how}: socket left behind");
        assert!(d.log().contains("daemon stopped"), "{}", d.log());
    }
}

#[test]
fn clients_without_a_daemon_say_so() {
    let (_temp, data, socket) = temp_layout();
    let out = brain_cmd(&data, &socket).args(["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(brain::cli::EXIT_NO_DAEMON as i32));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("no daemon at {}", socket.display())),
        "{err}"
    );
    assert!(err.contains("brain daemon"), "{err}");
    let out = brain_cmd(&data, &socket).args(["stop"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn a_store_that_is_not_sqlite_stops_the_daemon_with_a_clear_error() {
    let (temp, data, socket) = temp_layout();
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("brain.db"),
        b"definitely not a database, just text".repeat(200),
    )
    .unwrap();
    let out = brain_cmd(&data, &socket).arg("daemon").output().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("corrupt"), "{}", stderr(&out));
    assert!(!socket.exists());
    drop(temp);
}

#[test]
fn the_daemon_is_quiet_while_idle() {
    // Not a timing assertion: it checks that an idle daemon does not wake up on its own, by
    // reading its CPU ticks from /proc before and after an idle second.
    let d = Daemon::start();
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", d.pid())).unwrap();
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<&str> = after.split(' ').collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let mut settled = ticks();
    wait_until("start-up work to settle", || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = ticks();
        let quiet = now == settled;
        settled = now;
        quiet
    });
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(ticks() - settled <= 1, "idle daemon used CPU");
    d.stop();
}

/// The daemon's environment as the kernel sees it.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|&b| b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn the_daemon_runs_with_malloc_tunables_and_keeps_the_ones_it_is_given() {
    // Started bare, it executes itself again (same pid) with glibc's tunables set.
    let d = Daemon::start();
    let env = environ(d.pid());
    assert!(env.contains(&"MALLOC_ARENA_MAX=8".to_owned()), "{env:?}");
    assert!(
        env.contains(&"MALLOC_TRIM_THRESHOLD_=131072".to_owned()),
        "{env:?}"
    );
    d.call("daemon.status", json!({})).unwrap();
    d.stop();

    // A value from the environment wins.
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[("MALLOC_ARENA_MAX", "4")]);
    d.wait_ready();
    let env = environ(d.pid());
    assert!(env.contains(&"MALLOC_ARENA_MAX=4".to_owned()), "{env:?}");
    assert!(!env.contains(&"MALLOC_ARENA_MAX=8".to_owned()), "{env:?}");
    assert!(
        env.contains(&"MALLOC_TRIM_THRESHOLD_=131072".to_owned()),
        "{env:?}"
    );
    d.stop();
}

#[test]
fn after_a_burst_of_work_the_daemon_gives_memory_back_and_keeps_answering() {
    let d = Daemon::start();
    let memory = |d: &Daemon| d.call("daemon.status", json!({})).unwrap()["memory"].clone();
    let before = memory(&d);
    assert_eq!(before["releases"], 0, "{before}");
    let resident = before["resident_bytes"]
        .as_u64()
        .expect("resident bytes on Linux");
    let peak = before["peak_resident_bytes"].as_u64().unwrap();
    assert!(resident > 0 && resident <= peak, "{before}");

    // A burst: more notes than the indexer counts as one (256).
    let vault = tempfile::tempdir().unwrap();
    for i in 0..300 {
        std::fs::write(
            vault.path().join(format!("note {i}.md")),
            format!(
                "# Note {i}\n\nAbout quokka number {i}, see [[note {}]].\n",
                (i + 1) % 300
            ),
        )
        .unwrap();
    }
    let path = vault.path().canonicalize().unwrap();
    let report = d
        .call("ingest.path", json!({ "path": path.to_str().unwrap() }))
        .unwrap();
    assert_eq!(report["indexed"], 300, "{report}");
    wait_until("memory to be given back after the burst", || {
        memory(&d)["releases"].as_u64().unwrap() >= 1
    });

    // The caches it dropped come back as they are needed.
    let note = d.call("node.get", json!({ "title": "note 7" })).unwrap();
    assert_eq!(note["path"], path.join("note 7.md").to_str().unwrap());
    let hits = d
        .call(
            "search.query",
            json!({ "query": "quokka number 123", "mode": "bm25" }),
        )
        .unwrap();
    assert_eq!(
        hits["hits"][0]["path"],
        path.join("note 123.md").to_str().unwrap(),
        "{hits}"
    );
    let text = stdout(&d.cli(&["status"]));
    assert!(text.contains("resident,"), "{text}");

    // A single edit is not a burst: nothing more is released for it.
    std::fs::write(path.join("note 7.md"), "# Note 7\n\nEdited.\n").unwrap();
    d.call(
        "ingest.path",
        json!({ "path": path.join("note 7.md").to_str().unwrap() }),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(4));
    assert_eq!(memory(&d)["releases"], 1);
    d.stop();
}
