//! Connections that try to starve the daemon, clients that wait on a daemon that does not
//! answer, and who is on the other end: the socket's directory and the files' permissions.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brain::rpc::client::Client;
use serde_json::{Value, json};

use crate::harness::{BIN, DEADLINE, Daemon, brain_cmd, stderr, temp_layout, wait_until};

/// Starts a daemon with `settings` as its config file.
fn start_with(settings: &str, env: &[(&str, &str)]) -> (tempfile::TempDir, Daemon) {
    let (temp, data, socket) = temp_layout();
    let config = temp.path().join("config.toml");
    std::fs::write(&config, settings).unwrap();
    let config = config.display().to_string();
    let mut env = env.to_vec();
    env.push(("BRAIN_CONFIG", &config));
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &env);
    d.wait_ready();
    (temp, d)
}

/// A connection that waits at most the test deadline for anything.
fn connect(socket: &Path) -> UnixStream {
    let s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// The next line the daemon sends, or `None` at end of stream. Reads a byte at a time, so
/// nothing after the line is taken from the stream.
fn read_line(mut s: &UnixStream) -> Option<Value> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        let n = s.read(&mut byte).expect("an answer before the deadline");
        if n == 0 || byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    (!line.is_empty()).then(|| {
        serde_json::from_slice(&line)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&line)))
    })
}

/// Whether the daemon answered `s` with a line already (it refused it): looked at without
/// waiting and without taking anything from the stream.
fn was_refused(s: &UnixStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut byte = [0u8];
    // MSG_PEEK through `peek` is not on UnixStream in std yet; a refused stream is closed
    // after its line, so reading from it loses nothing a test looks at.
    let refused = matches!((&*s).read(&mut byte), Ok(1));
    s.set_nonblocking(false).unwrap();
    refused
}

fn error_kind(v: &Value) -> &str {
    v["error"]["data"]["kind"].as_str().unwrap_or("")
}

/// `daemon.status` on a fresh connection answers. The deadline is generous (a busy machine is
/// not a failure): without its reserved threads the call would never answer at all.
const ANSWER_DEADLINE: Duration = Duration::from_secs(10);

/// `daemon.status` on a fresh connection answers within [`ANSWER_DEADLINE`].
fn status_answers(d: &Daemon) {
    let mut c = Client::connect_timeout(&d.socket, Some(ANSWER_DEADLINE)).unwrap();
    let v = c.call("daemon.status", json!({})).expect("daemon.status");
    assert_eq!(v["pid"], d.pid());
}

#[test]
fn a_connection_over_the_cap_is_answered_at_once_and_the_daemon_serves_again_when_one_closes() {
    let d = Daemon::start();
    // The daemon takes a connection's slot when it accepts it, in order, so the 65th finds
    // the 64 before it holding every slot: unless the readiness check's connection, closed
    // just before, still held one (the daemon frees a slot when it sees the close, which on a
    // loaded machine can come after the next connections are accepted). Then one of the 64
    // was refused instead: it is replaced until all 64 hold a slot, so that the one freed
    // later is not taken for a slot of theirs.
    let mut idle: Vec<UnixStream> = (0..64).map(|_| connect(&d.socket)).collect();
    let started = Instant::now();
    let (extra, refused) = loop {
        assert!(started.elapsed() < DEADLINE, "a slot never came back");
        let extra = connect(&d.socket);
        let refused = read_line(&extra).expect("an error line, not silence");
        // Every connection before `extra` has been accepted: a refused one has its line.
        let before = idle.len();
        idle.retain(|s| !was_refused(s));
        if idle.len() == before {
            break (extra, refused);
        }
        while idle.len() < 64 {
            idle.push(connect(&d.socket));
        }
    };
    assert_eq!(error_kind(&refused), "server_busy", "{refused}");
    assert_eq!(refused["id"], Value::Null);
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("64 connections") && message.contains("max_connections"),
        "{message}"
    );
    assert_eq!(read_line(&extra), None, "closed after the error");

    // The CLI says so too, instead of hanging.
    let out = d.cli(&["status"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("server busy"), "{}", stderr(&out));

    // One of the 64 goes away: a fresh client is served again. Each try is a fresh connection
    // whose slot is freed only once the daemon sees it close, so the check is the wait itself
    // rather than one more connection right after it.
    idle.pop();
    wait_until("a slot is free again", || {
        d.call("daemon.status", json!({}))
            .is_ok_and(|v| v["pid"] == d.pid())
    });
    drop(idle);
    d.stop();
}

#[test]
fn an_idle_connection_is_closed_after_the_idle_timeout() {
    let (_temp, d) = start_with("[daemon]\nidle_timeout_secs = 1\n", &[]);
    let s = connect(&d.socket);
    (&s).write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.status\"}\n")
        .unwrap();
    let answer = read_line(&s).unwrap();
    assert_eq!(answer["id"], 1, "{answer}");
    // Then nothing: the daemon says why it closes, and closes.
    let closing = read_line(&s).expect("a closing error line");
    assert_eq!(error_kind(&closing), "timeout", "{closing}");
    assert!(
        closing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("idle_timeout_secs"),
        "{closing}"
    );
    assert_eq!(read_line(&s), None);

    // A peer that sends half a request and stalls is closed the same way.
    let s = connect(&d.socket);
    (&s).write_all(b"{\"jsonrpc\":\"2.0\",").unwrap();
    assert_eq!(error_kind(&read_line(&s).unwrap()), "timeout");
    assert_eq!(read_line(&s), None);
    status_answers(&d);
    d.stop();
}

/// A local model server that accepts one request and answers only when told to.
struct HeldLlm {
    url: String,
    release: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

fn held_llm() -> HeldLlm {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (release, wait) = std::sync::mpsc::channel::<()>();
    let thread = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let _ = s.read(&mut buf).unwrap();
        wait.recv().unwrap();
        let body = r#"{"choices":[{"message":{"role":"assistant","content":"done"}}]}"#;
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
    });
    HeldLlm {
        url,
        release,
        thread,
    }
}

/// Sends `workflow.events` with `follow` for `run_id` on a new connection.
fn follow(socket: &Path, run_id: &str) -> UnixStream {
    let c = connect(socket);
    let req = json!({"jsonrpc": "2.0", "id": 7, "method": "workflow.events",
        "params": {"run_id": run_id, "follow": true}});
    (&c).write_all(format!("{req}\n").as_bytes()).unwrap();
    c
}

fn slow_llm_workflow() -> Value {
    json!({ "version": "brain/1", "name": "t", "registry": { "vars": ["$out(STRING)"] }, "steps": [
        { "id": "LLM_slow", "in": { "prompt": "hi" }, "out": { "$out": "=_result" }, "next": "Stop_end" },
        { "id": "Stop_end" }
    ]})
}

#[test]
fn followers_have_threads_of_their_own_and_a_cap() {
    let llm = held_llm();
    let (_temp, d) = start_with(
        "[daemon]\nmax_blocking_requests = 1\n",
        &[("BRAIN_LLM_URL", &llm.url)],
    );
    let run = d
        .call("workflow.run", json!({ "definition": slow_llm_workflow() }))
        .unwrap();
    let run_id = run["run_id"].as_str().unwrap();
    // Eight followers, each under way (its first event sent) while the run waits on the model.
    let followers: Vec<UnixStream> = (0..8)
        .map(|_| {
            let f = follow(&d.socket, run_id);
            let first = read_line(&f).unwrap();
            assert_eq!(first["method"], "workflow.event", "{first}");
            f
        })
        .collect();
    let ninth = follow(&d.socket, run_id);
    let refused = read_line(&ninth).unwrap();
    assert_eq!(error_kind(&refused), "server_busy", "{refused}");
    assert_eq!(refused["id"], 7);
    // Requests still have their thread, and status its own.
    let runs = d.call("workflow.list", json!({})).unwrap();
    assert_eq!(runs["runs"][0]["status"], "running", "{runs}");
    status_answers(&d);
    llm.release.send(()).unwrap();
    llm.thread.join().unwrap();
    for f in &followers {
        let answer = loop {
            let v = read_line(f).expect("an answer");
            if v.get("id").is_some() {
                break v;
            }
        };
        assert_eq!(answer["result"]["status"], "completed", "{answer}");
    }
    d.stop();
}

#[test]
fn a_connection_following_a_run_is_not_idle() {
    let llm = held_llm();
    let (_temp, d) = start_with(
        "[daemon]\nidle_timeout_secs = 1\nrequest_timeout_secs = 1\n",
        &[("BRAIN_LLM_URL", &llm.url)],
    );
    let run = d
        .call("workflow.run", json!({ "definition": slow_llm_workflow() }))
        .unwrap();
    let run_id = run["run_id"].as_str().unwrap();
    let follower = follow(&d.socket, run_id);
    // Proof that more than the idle timeout (and the request budget) has passed: a connection
    // opened after the follower's request is closed as idle.
    let witness = connect(&d.socket);
    assert_eq!(error_kind(&read_line(&witness).unwrap()), "timeout");
    status_answers(&d);
    llm.release.send(()).unwrap();
    llm.thread.join().unwrap();
    let mut reader = BufReader::new(&follower);
    let answer = loop {
        let mut line = String::new();
        assert!(reader.read_line(&mut line).unwrap() > 0, "follower closed");
        let v: Value = serde_json::from_str(&line).unwrap();
        if v.get("id").is_some() {
            break v;
        }
        assert_eq!(v["method"], "workflow.event", "{v}");
    };
    assert_eq!(answer["id"], 7, "{answer}");
    assert_eq!(answer["result"]["status"], "completed", "{answer}");
    d.stop();
}

/// Holds SQLite's write lock on the daemon's store, as another process could: every write
/// the daemon tries waits on it.
fn hold_write_lock(d: &Daemon) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(d.data_dir.join("brain.db")).unwrap();
    c.execute_batch("BEGIN IMMEDIATE").unwrap();
    c
}

#[test]
fn requests_past_their_budget_are_answered_timeout_and_status_still_answers() {
    let (temp, d) = start_with(
        "[daemon]\nrequest_timeout_secs = 1\nmax_blocking_requests = 2\n",
        &[],
    );
    let lock = hold_write_lock(&d);
    let dirs: Vec<PathBuf> = (0..6)
        .map(|i| {
            let p = temp.path().join(format!("notes{i}"));
            std::fs::create_dir(&p).unwrap();
            p
        })
        .collect();
    // More stuck writes than the daemon has threads for requests: each is answered within
    // its budget, and none takes the thread `daemon.status` needs.
    let answers: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = dirs
            .iter()
            .enumerate()
            .map(|(i, dir)| {
                let socket = d.socket.clone();
                s.spawn(move || {
                    let c = connect(&socket);
                    let req = json!({"jsonrpc": "2.0", "id": i, "method": "watch.add",
                        "params": {"path": dir}});
                    (&c).write_all(format!("{req}\n").as_bytes()).unwrap();
                    read_line(&c).unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for a in &answers {
        assert_eq!(error_kind(a), "timeout", "{a}");
        assert!(
            a["error"]["message"]
                .as_str()
                .unwrap()
                .contains("request_timeout_secs")
                || a["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("max_blocking_requests"),
            "{a}"
        );
    }
    status_answers(&d);
    let out = d.cli(&["status"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The lock goes away: writes work again, and nothing was lost.
    drop(lock);
    let extra = temp.path().join("later");
    std::fs::create_dir(&extra).unwrap();
    wait_until("a write succeeds again", || {
        d.call("watch.add", json!({ "path": extra })).is_ok()
    });
    let roots = d.call("watch.list", json!({})).unwrap();
    let paths: Vec<&str> = roots["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&extra.canonicalize().unwrap().to_str().unwrap()),
        "{roots}"
    );
    status_answers(&d);
    d.stop();
}

#[test]
fn ingests_queued_on_the_worker_leave_threads_for_reads() {
    let (temp, d) = start_with(
        "[daemon]\nrequest_timeout_secs = 1\nmax_blocking_requests = 3\n",
        &[],
    );
    let lock = hold_write_lock(&d);
    let dirs: Vec<PathBuf> = (0..5)
        .map(|i| {
            let p = temp.path().join(format!("vault{i}"));
            std::fs::create_dir(&p).unwrap();
            std::fs::write(p.join("a.md"), format!("# A{i}\n\nword{i}\n")).unwrap();
            p
        })
        .collect();
    let conns: Vec<UnixStream> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| {
            let c = connect(&d.socket);
            let req = json!({"jsonrpc": "2.0", "id": i, "method": "ingest.path",
                "params": {"path": dir}});
            (&c).write_all(format!("{req}\n").as_bytes()).unwrap();
            c
        })
        .collect();
    let mut not_started = 0;
    for c in &conns {
        let a = read_line(c).unwrap();
        assert_eq!(error_kind(&a), "timeout", "{a}");
        if a["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not started")
        {
            not_started += 1;
        }
    }
    assert_eq!(
        not_started, 3,
        "two ingests run, the rest wait without a thread"
    );
    // Two ingests are stuck on the lock with their threads; the third thread serves reads.
    let mut c = Client::connect_timeout(&d.socket, Some(ANSWER_DEADLINE)).unwrap();
    let hits = c
        .call("search.query", json!({ "query": "word1", "mode": "bm25" }))
        .expect("a read answers while ingests are stuck");
    assert!(hits["hits"].is_array(), "{hits}");
    status_answers(&d);

    drop(lock);
    wait_until("an ingest succeeds again", || {
        d.call("ingest.path", json!({ "path": dirs[4] })).is_ok()
    });
    wait_until("the note is searchable", || {
        d.call("search.query", json!({ "query": "word4", "mode": "bm25" }))
            .is_ok_and(|v| v["hits"].as_array().is_some_and(|h| !h.is_empty()))
    });
    d.stop();
}

#[test]
fn a_call_on_one_connection_past_its_budget_does_not_stack() {
    let (_temp, d) = start_with("[daemon]\nrequest_timeout_secs = 1\n", &[]);
    let lock = hold_write_lock(&d);
    let dir = d.dir.join("notes");
    std::fs::create_dir(&dir).unwrap();
    let s = connect(&d.socket);
    let mut kinds = Vec::new();
    for id in 0..3 {
        let req =
            json!({"jsonrpc": "2.0", "id": id, "method": "watch.add", "params": {"path": dir}});
        (&s).write_all(format!("{req}\n").as_bytes()).unwrap();
        kinds.push(error_kind(&read_line(&s).unwrap()).to_owned());
    }
    // Two calls may run (one abandoned, one retry); the third is refused while they do.
    assert_eq!(kinds, ["timeout", "timeout", "server_busy"]);
    status_answers(&d);
    drop(lock);
    wait_until("the connection is served again", || {
        let req = json!({"jsonrpc": "2.0", "id": 9, "method": "daemon.status"});
        (&s).write_all(format!("{req}\n").as_bytes()).unwrap();
        read_line(&s).unwrap().get("result").is_some()
    });
    d.stop();
}

/// Runs `brain` with `args` against `socket`, failing the test if it does not exit in time.
fn run_cli_bounded(
    data: &Path,
    socket: &Path,
    env: &[(&str, &str)],
    args: &[&str],
) -> (bool, String) {
    let mut cmd = brain_cmd(data, socket);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("brain {args:?} hung");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status.success(), err)
}

#[test]
fn the_cli_gives_up_on_a_daemon_that_never_answers_and_says_on_what() {
    let (temp, data, socket) = temp_layout();
    let listener = UnixListener::bind(&socket).unwrap();
    // A peer that accepts and never answers, until the test ends.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    let (ok, err) = run_cli_bounded(&data, &socket, &[("BRAIN_TIMEOUT", "1")], &["status"]);
    assert!(!ok);
    let want = format!(
        "no answer from the daemon at {} to daemon.status within 1 s",
        socket.display()
    );
    assert!(err.contains(&want), "{err}");
    let (ok, err) = run_cli_bounded(&data, &socket, &[], &["--timeout", "0.5", "stop"]);
    assert!(!ok);
    assert!(err.contains("to daemon.shutdown within 0.5 s"), "{err}");
    let (ok, err) = run_cli_bounded(&data, &socket, &[], &["--timeout", "1", "ingest", "/tmp"]);
    assert!(!ok);
    assert!(err.contains("to ingest.path within 1 s"), "{err}");
    let (ok, err) = run_cli_bounded(&data, &socket, &[], &["--timeout", "0", "status"]);
    assert!(!ok);
    assert!(err.contains("--timeout"), "{err}");
    drop(temp);
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

    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg("umask 022; exec \"$0\" daemon").arg(BIN);
    let mut d = Daemon::spawn_under(cmd, temp.path(), &data, &socket, "daemon.log");
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

/// Maintenance that grows with the store (`store.compact`, `search.reindex`, a purge) sends no
/// progress, so it has no budget: held up past `request_timeout_secs`, it still answers.
#[test]
fn maintenance_is_not_cut_off_by_the_request_budget() {
    let (_temp, d) = start_with("[daemon]\nrequest_timeout_secs = 1\n", &[]);
    let lock = hold_write_lock(&d);
    let socket = d.socket.clone();
    let answer = std::thread::spawn(move || {
        let c = connect(&socket);
        let req = json!({"jsonrpc": "2.0", "id": 1, "method": "store.compact", "params": {}});
        (&c).write_all(format!("{req}\n").as_bytes()).unwrap();
        read_line(&c).unwrap()
    });
    // Held for three budgets (the store waits up to 5 s for its lock), then let go.
    std::thread::sleep(Duration::from_secs(3));
    status_answers(&d);
    drop(lock);
    let a = answer.join().unwrap();
    assert!(a["result"]["bytes_after"].is_u64(), "{a}");
    d.stop();
}
