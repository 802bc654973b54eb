//! `brain mcp` end to end, driven by the official Python MCP SDK (`mcp` on PyPI), which `.ci/run`
//! installs into `.venv-mcp`: tools listed with their schemas and hints, a note written and found
//! by search, a node upserted, linked, edited and its history read, its text found by search,
//! recent changes, resources listed and read, a workflow run, paused and resumed; and, with no
//! daemon running, tools that say how to start one.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{BIN, DEADLINE, Daemon, temp_layout};

/// The Python that has the SDK: `BRAIN_MCP_PYTHON`, else the venv `.ci/run` makes.
fn python() -> PathBuf {
    let p = std::env::var_os("BRAIN_MCP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv-mcp/bin/python"));
    let ok = Command::new(&p)
        .args(["-c", "import mcp.client.stdio"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "the MCP end-to-end test needs the Python `mcp` SDK at {} (none there). Install it with \
         `.ci/run`, or: python3 -m venv .venv-mcp && .venv-mcp/bin/pip install mcp; or point \
         BRAIN_MCP_PYTHON at a Python that has it",
        p.display()
    );
    p
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/integration/mcp_client.py")
}

/// The environment `brain mcp` gets from the client: only what finds the test's daemon.
fn env_file(dir: &Path, data_dir: &Path, socket: &Path) -> PathBuf {
    let env = json!({
        "BRAIN_SOCKET": socket,
        "BRAIN_DATA_DIR": data_dir,
        "XDG_CONFIG_HOME": data_dir.join("no-config"),
        "BRAIN_LOG": "warn",
    });
    let f = dir.join("mcp-env.json");
    std::fs::write(&f, env.to_string()).unwrap();
    f
}

/// Runs the script with `args`, killing it past the deadline; returns its last stdout line.
fn run_script(args: &[&std::ffi::OsStr]) -> Value {
    let mut child = Command::new(python())
        .arg(script())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run python");
    let start = Instant::now();
    let limit = DEADLINE * 4;
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            break;
        }
        // Waiting on a child process to exit; there is no state to poll more precisely.
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "MCP client failed ({}):\n{}\n{}",
        out.status,
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

#[test]
fn an_mcp_client_searches_writes_links_and_resumes_a_workflow() {
    let d = Daemon::start();
    let vault = d.dir.join("vault");
    std::fs::create_dir_all(&vault).unwrap();
    std::fs::write(vault.join("Start.md"), "# Start\n\nFirst note.\n").unwrap();
    d.call("watch.add", json!({ "path": vault })).unwrap();
    d.call("ingest.path", json!({ "path": vault })).unwrap();
    let vault = std::fs::canonicalize(vault).unwrap();
    let env = env_file(&d.dir, &d.data_dir, &d.socket);
    let seen = run_script(&[BIN.as_ref(), vault.as_os_str(), env.as_os_str()]);
    assert_eq!(seen["workflow"], "completed", "{seen}");
    assert!(seen["search_hits"].as_u64().unwrap() >= 1, "{seen}");
    assert_eq!(seen["history_versions"], 2, "{seen}");
    assert!(seen["recent"].as_u64().unwrap() >= 2, "{seen}");
    assert!(seen["resources"].as_u64().unwrap() >= 2, "{seen}");
    assert!(
        seen["bad_write"].as_str().unwrap().contains("absolute"),
        "{seen}"
    );
    // What the MCP client wrote is in the store, cited to it.
    let note = d
        .call("node.get", json!({ "id": seen["note_id"] }))
        .unwrap();
    assert_eq!(note["title"], "Airships");
    assert!(vault.join("Airships.md").is_file());
}

#[test]
fn without_a_daemon_mcp_tools_say_how_to_start_one() {
    let (temp, data, socket) = temp_layout();
    let env = env_file(temp.path(), &data, &socket);
    let seen = run_script(&["--no-daemon".as_ref(), BIN.as_ref(), env.as_os_str()]);
    let text = seen["no_daemon"].as_str().unwrap();
    assert!(text.contains(&socket.display().to_string()), "{text}");
}
