//! Workflows through the real binary: validation, runs, pauses, crashes and restarts.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::harness::{Daemon, brain_cmd, stdout, temp_layout};

pub(crate) fn fixture(kind: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/workflows")
        .join(kind)
        .join(name)
}

#[test]
fn validate_exits_zero_for_valid_and_nonzero_for_invalid_without_a_daemon() {
    let (_t, data, socket) = temp_layout();
    let ok = brain_cmd(&data, &socket)
        .args(["workflow", "validate"])
        .arg(fixture("valid", "weekly-digest.json"))
        .output()
        .unwrap();
    assert!(ok.status.success(), "{}", stdout(&ok));
    let bad = brain_cmd(&data, &socket)
        .args(["workflow", "validate", "--json"])
        .arg(fixture("invalid", "dangling-targets.json"))
        .output()
        .unwrap();
    assert!(!bad.status.success());
    let v: Value = serde_json::from_slice(&bad.stdout).unwrap();
    assert_eq!(v["valid"], false);
    for d in v["errors"].as_array().unwrap() {
        assert!(d["step_id"].is_string(), "{d}");
        assert!(d["code"].is_string() && d["path"].is_string(), "{d}");
    }
    // --strict turns warnings (no Stop_) into failure.
    let doc =
        json!({"version": "brain/1", "name": "w", "steps": [{"id": "Noop_a", "next": "RETURN"}]});
    let f = data.parent().unwrap().join("w.json");
    std::fs::write(&f, doc.to_string()).unwrap();
    let lax = brain_cmd(&data, &socket)
        .args(["workflow", "validate"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(lax.status.success());
    let strict = brain_cmd(&data, &socket)
        .args(["workflow", "validate", "--strict"])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!strict.status.success());
}

#[test]
fn validate_over_the_socket() {
    let d = Daemon::start();
    let v = d
        .call(
            "workflow.validate",
            json!({ "path": fixture("invalid", "scope-errors.json") }),
        )
        .unwrap();
    assert_eq!(v["valid"], false);
    let codes: Vec<&str> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"undeclared_var") && codes.contains(&"item_outside_loop"),
        "{codes:?}"
    );
    let v = d
        .call("workflow.validate", json!({ "definition": serde_json::from_str::<Value>(&std::fs::read_to_string(fixture("valid", "minimal.json")).unwrap()).unwrap() }))
        .unwrap();
    assert_eq!(v["valid"], true, "{v}");
    d.stop();
}

pub(crate) fn doc(steps: Value, vars: &[&str]) -> Value {
    json!({ "version": "brain/1", "name": "t", "registry": { "vars": vars }, "steps": steps })
}

pub(crate) fn start(d: &Daemon, definition: &Value, extra: Value) -> String {
    let mut params = json!({ "definition": definition });
    if let Value::Object(m) = extra {
        params.as_object_mut().unwrap().extend(m);
    }
    let v = d.call("workflow.run", params).expect("workflow.run");
    v["run_id"].as_str().unwrap().to_owned()
}

pub(crate) fn get(d: &Daemon, run_id: &str) -> Value {
    d.call("workflow.get", json!({ "run_id": run_id })).unwrap()
}

/// Waits until the run's status is one of `want`; returns the run.
pub(crate) fn settle(d: &Daemon, run_id: &str, want: &[&str]) -> Value {
    let mut last = Value::Null;
    let start = std::time::Instant::now();
    loop {
        if let Ok(v) = d.call("workflow.get", json!({ "run_id": run_id })) {
            if want.contains(&v["status"].as_str().unwrap_or("")) {
                return v;
            }
            last = v;
        }
        assert!(
            start.elapsed() < crate::harness::DEADLINE,
            "run {run_id} never reached {want:?}: {last:#}\n{}",
            d.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub(crate) fn events(d: &Daemon, run_id: &str) -> Vec<Value> {
    let v = d
        .call("workflow.events", json!({ "run_id": run_id, "since": 0 }))
        .unwrap();
    v["events"].as_array().unwrap().clone()
}

pub(crate) fn count(events: &[Value], ty: &str, step: Option<&str>) -> usize {
    events
        .iter()
        .filter(|e| e["type"] == ty && step.is_none_or(|s| e["step_id"] == s))
        .count()
}

pub(crate) fn step_status(run: &Value, key: &str) -> Option<String> {
    run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["step_key"] == key)
        .map(|s| s["status"].as_str().unwrap().to_owned())
}

#[test]
fn fixtures_run_to_completion() {
    let d = Daemon::start();
    let minimal: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("valid", "minimal.json")).unwrap())
            .unwrap();
    let id = start(&d, &minimal, json!({}));
    let run = settle(&d, &id, &["completed"]);
    assert_eq!(run["vars"]["$x"], 2);
    assert!(Path::new(run["workspace"].as_str().unwrap()).is_absolute());

    let fan: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("valid", "fan-out.json")).unwrap())
            .unwrap();
    let id = start(&d, &fan, json!({}));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$b"], "=B");
    assert_eq!(run["vars"]["$count"], 5);
    // Read_ failed twice (retry), then the handler saw the error kind.
    assert_eq!(run["vars"]["$a"], "io_error");
    let ev = events(&d, &id);
    assert_eq!(count(&ev, "step_retry", Some("Read_missing")), 1);
    assert_eq!(count(&ev, "step_error", Some("Read_missing")), 1);
    let seqs: Vec<i64> = ev.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    assert_eq!(ev.first().unwrap()["type"], "workflow_start");
    assert_eq!(ev.last().unwrap()["type"], "workflow_done");
    d.stop();
}

#[test]
fn conformance_if_false_skips_the_step_and_its_children() {
    let d = Daemon::start();
    let w = doc(
        json!([
            { "id": "Noop_fork", "if": "1 > 2", "children": ["Set_child"], "next": "Set_after" },
            { "id": "Set_child", "target": "$child", "value": true, "next": "RETURN" },
            { "id": "Set_after", "target": "$after", "value": true, "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$child(BOOL)", "$after(BOOL)"],
    );
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$child"], Value::Null);
    assert_eq!(run["vars"]["$after"], true);
    assert_eq!(step_status(&run, "Noop_fork").as_deref(), Some("skipped"));
    assert_eq!(step_status(&run, "Set_child"), None);
    d.stop();
}

#[test]
fn conformance_branch_without_else_continues_at_next() {
    let d = Daemon::start();
    let w = doc(
        json!([
            { "id": "Branch_b", "cases": [["1 === 2", "Set_never"]], "next": "Set_after" },
            { "id": "Set_never", "target": "$never", "value": true, "next": "RETURN" },
            { "id": "Set_after", "target": "$after", "value": "=RUN.workflow", "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$never(BOOL)", "$after(STRING)"],
    );
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$never"], Value::Null);
    assert_eq!(run["vars"]["$after"], "t");
    d.stop();
}

#[test]
fn conformance_break_in_a_parallel_loop_stops_new_iterations() {
    let d = Daemon::start();
    let w = doc(
        json!([
            { "id": "Loop_p", "source": "=[0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19]", "mode": "parallel", "concurrency": 2,
              "children": ["Branch_stop"], "next": "Set_after" },
            { "id": "Branch_stop", "cases": [["_item === 3", "BREAK"]], "next": "Set_seen" },
            { "id": "Set_seen", "target": "$seen[_index]", "value": "=_item", "next": "RETURN" },
            { "id": "Set_after", "target": "$after", "value": true, "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$seen([INT])", "$after(BOOL)"],
    );
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$after"], true);
    let seen = run["vars"]["$seen"].as_array().unwrap();
    assert!(seen.get(3).is_none_or(Value::is_null), "{seen:?}");
    // Iterations already taken may finish (the other worker can be anywhere when the BREAK
    // lands, so a count of iterations would depend on scheduling), but once the BREAK is done
    // at most the one other worker starts one more.
    let ev = events(&d, &id);
    let broke = ev
        .iter()
        .position(|e| e["type"] == "step_done" && e["step_key"] == "Branch_stop[3]")
        .expect("the BREAK case ran");
    let started_after = ev[broke..]
        .iter()
        .filter(|e| e["type"] == "step_start" && e["step_id"] == "Branch_stop")
        .count();
    assert!(started_after <= 1, "the loop went on after BREAK: {seen:?}");
    d.stop();
}

#[test]
fn conformance_empty_and_null_loop_sources_run_no_iterations() {
    let d = Daemon::start();
    for source in ["=[]", "=$nothing"] {
        let w = doc(
            json!([
                { "id": "Loop_l", "source": source, "mode": "serial", "children": ["Set_body"], "next": "Stop_end" },
                { "id": "Set_body", "target": "$ran", "value": true, "next": "RETURN" },
                { "id": "Stop_end" }
            ]),
            &["$ran(BOOL)", "$nothing"],
        );
        let id = start(&d, &w, json!({}));
        let run = settle(&d, &id, &["completed", "failed"]);
        assert_eq!(run["status"], "completed", "{source}: {run:#}");
        assert_eq!(run["vars"]["$ran"], Value::Null, "{source}");
        let ev = events(&d, &id);
        assert_eq!(count(&ev, "loop_done", Some("Loop_l")), 1, "{source}");
    }
    d.stop();
}

#[test]
fn conformance_while_ends_when_max_iterations_is_exhausted() {
    let d = Daemon::start();
    let w = doc(
        json!([
            { "id": "Loop_w", "while": "true", "maxIterations": 4, "mode": "serial", "children": ["Set_inc"], "next": "Stop_end" },
            { "id": "Set_inc", "target": "$n", "value": "=$n + 1", "next": "RETURN" },
            { "id": "Stop_end" }
        ]),
        &["$n(INT) = 0"],
    );
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$n"], 4);
    let ev = events(&d, &id);
    let done = ev.iter().find(|e| e["type"] == "loop_done").unwrap();
    assert_eq!(done["payload"]["result"]["exhausted"], true);
    d.stop();
}

#[test]
fn conformance_on_error_handler_rejoins_the_main_chain() {
    let d = Daemon::start();
    let w = doc(
        json!([
            { "id": "Set_bad", "target": "$x", "value": "=1 / 0", "onError": "Set_handle", "next": "Noop_join" },
            { "id": "Set_handle", "target": "$err", "value": "=_error.kind", "next": "Noop_join" },
            { "id": "Noop_join", "next": "Set_after" },
            { "id": "Set_after", "target": "$after", "value": true, "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$x", "$err(STRING)", "$after(BOOL)"],
    );
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$err"], "expression_error");
    assert_eq!(run["vars"]["$after"], true);
    assert_eq!(step_status(&run, "Set_bad").as_deref(), Some("failed"));
    d.stop();
}

#[test]
fn conformance_stop_in_a_child_ends_the_run() {
    let d = Daemon::start();
    let w = doc(
        json!([
            { "id": "Noop_fork", "children": ["Stop_child", "Loop_slow"], "next": "Set_after" },
            { "id": "Stop_child" },
            { "id": "Loop_slow", "while": "true", "maxIterations": 1000, "mode": "serial", "children": ["Set_tick"], "next": "RETURN" },
            { "id": "Set_tick", "target": "$ticks", "value": "=$ticks + 1", "next": "RETURN" },
            { "id": "Set_after", "target": "$after", "value": true, "next": "RETURN" }
        ]),
        &["$after(BOOL)", "$ticks(INT) = 0"],
    );
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$after"], Value::Null);
    assert!(run["vars"]["$ticks"].as_i64().unwrap() < 1000);
    d.stop();
}

#[test]
fn conformance_pause_inside_a_parallel_branch() {
    let d = Daemon::start();
    let w = doc(
        json!([
            { "id": "Noop_fork", "children": ["Pause_p", "Set_sibling"], "next": "Set_after" },
            { "id": "Pause_p", "reason": "ok?", "resumeResultTarget": "$answer", "next": "RETURN" },
            { "id": "Set_sibling", "target": "$sibling", "value": true, "next": "RETURN" },
            { "id": "Set_after", "target": "$after", "value": "=$answer.payload.note", "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$answer(OBJECT)", "$sibling(BOOL)", "$after(STRING)"],
    );
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["paused"]);
    wait_sibling(&d, &id);
    let wait_id = run["waits"][0]["wait_id"].as_str().unwrap().to_owned();
    assert_eq!(run["waits"][0]["step_id"], "Pause_p");
    assert_eq!(run["waits"][0]["reason"], "ok?");
    d.call(
        "workflow.resume",
        json!({ "run_id": id, "wait_id": wait_id, "request_id": "r1", "approved": true, "payload": { "note": "fine" } }),
    )
    .unwrap();
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$after"], "fine");
    assert_eq!(run["vars"]["$sibling"], true);
    let ev = events(&d, &id);
    assert_eq!(
        count(&ev, "step_done", Some("Set_sibling")),
        1,
        "sibling ran once"
    );
    d.stop();
}

fn wait_sibling(d: &Daemon, id: &str) {
    let start = std::time::Instant::now();
    while step_status(&get(d, id), "Set_sibling").as_deref() != Some("done") {
        assert!(start.elapsed() < crate::harness::DEADLINE);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn writer_doc() -> Value {
    json!({ "version": "brain/1", "name": "writer",
        "registry": { "vars": ["$id(STRING)"], "files": { "artifacts": ["out/*"] },
                      "permissions": { "graphWrite": true, "fileWrite": ["out/*"] } },
        "steps": [
            { "id": "Upsert_n", "in": { "kind": "topic", "key": "topic:rust", "title": "Rust", "props": { "n": 1 }, "tags": ["lang"] },
              "out": { "$id": "=_result.id" }, "next": "Write_f" },
            { "id": "Write_f", "in": { "path": "out/log.md", "mode": "append", "content": "=\"line \" + $id + \"\\n\"" }, "next": "Stop_end" },
            { "id": "Stop_end" }
        ] })
}

#[test]
fn conformance_dry_run_plans_writes_without_making_them() {
    let d = Daemon::start();
    let id = start(&d, &writer_doc(), json!({ "dry_run": true }));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["dry_run"], true);
    let ws = PathBuf::from(run["workspace"].as_str().unwrap());
    assert!(!ws.join("out/log.md").exists());
    let status = d.call("daemon.status", json!({})).unwrap();
    assert!(status["counts"]["nodes"]["topic"].is_null(), "{status:#}");
    let ev = events(&d, &id);
    let planned = ev.iter().find(|e| e["type"] == "graph_write").unwrap();
    assert_eq!(planned["payload"]["planned"]["key"], "topic:rust");
    assert!(
        ev.iter()
            .any(|e| e["type"] == "file_done" && e["payload"]["planned"] == true)
    );
    d.stop();
}

#[test]
fn graph_writes_carry_provenance_and_limits_fail_runs() {
    let d = Daemon::start();
    let id = start(&d, &writer_doc(), json!({}));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    let node_id = run["vars"]["$id"].as_str().unwrap();
    let node = d.call("node.get", json!({ "id": node_id })).unwrap();
    let p = &node["provenance"][0];
    assert_eq!(p["run_id"], id.as_str());
    assert_eq!(p["step_key"], "Upsert_n");
    assert!(p["actor_id"].as_str().unwrap().starts_with("user:"));
    let ws = PathBuf::from(run["workspace"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(ws.join("out/log.md")).unwrap(),
        format!("line {node_id}\n")
    );

    let id = start(&d, &writer_doc(), json!({ "limits": { "steps": 1 } }));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "failed");
    assert_eq!(run["error"]["kind"], "limit_exceeded");
    assert!(
        run["error"]["message"].as_str().unwrap().contains("steps"),
        "{run:#}"
    );

    // Ingest_ turns text into a note; Graph_ reads it back.
    let w = json!({ "version": "brain/1", "name": "ingest",
        "registry": { "vars": ["$ids", "$title(STRING)"], "permissions": { "graphWrite": true } },
        "steps": [
            { "id": "Ingest_t", "in": { "text": "hello", "title": "Greeting", "key": "greeting" }, "out": { "$ids": "=_result.nodeIds" }, "next": "Graph_n" },
            { "id": "Graph_n", "in": { "op": "node", "id": "=$ids[0]" }, "out": { "$title": "=_result.nodes[0].title" }, "next": "Stop_end" },
            { "id": "Stop_end" }
        ] });
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$title"], "Greeting");
    let node = d
        .call("node.get", json!({ "id": run["vars"]["$ids"][0] }))
        .unwrap();
    assert_eq!(node["content"], "hello");
    assert_eq!(node["provenance"][0]["step_key"], "Ingest_t");

    // No model provider: the step is skipped and the run ends completed_partial.
    let w = doc(
        json!([
            { "id": "LLM_sum", "in": { "prompt": "hi" }, "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &[],
    );
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed_partial", "completed", "failed"]);
    assert_eq!(run["status"], "completed_partial", "{run:#}");
    let ev = events(&d, &id);
    assert!(
        ev.iter()
            .any(|e| e["type"] == "step_skipped" && e["payload"]["reason"] == "no_runner")
    );
    d.stop();
}

fn pause_doc(timeout: Option<f64>) -> Value {
    let mut pause = json!({ "id": "Pause_ok", "reason": "=\"approve \" + RUN.workflow", "preview": { "n": 1 },
                            "resumeResultTarget": "$answer", "next": "Set_after" });
    if let Some(sec) = timeout {
        pause["timeout"] = json!({ "sec": sec, "on": "Set_timedout" });
    }
    let mut steps = vec![
        json!({ "id": "Set_before", "target": "$before", "value": "=$before + 1", "next": "Pause_ok" }),
        pause,
        json!({ "id": "Set_after", "target": "$after", "value": "=$answer.approved", "next": "Stop_end" }),
        json!({ "id": "Stop_end" }),
    ];
    if timeout.is_some() {
        steps.push(json!({ "id": "Set_timedout", "target": "$timedout", "value": true, "next": "Stop_end" }));
    }
    doc(
        Value::Array(steps),
        &[
            "$before(INT) = 0",
            "$answer(OBJECT)",
            "$after(BOOL)",
            "$timedout(BOOL)",
        ],
    )
}

pub(crate) fn open_wait(run: &Value) -> String {
    run["waits"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["status"] == "open")
        .expect("an open wait")["wait_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

pub(crate) fn kind(r: Result<Value, brain::rpc::client::ClientError>) -> String {
    match r {
        Ok(v) => format!("ok {v}"),
        Err(e) => e.kind().unwrap_or("no kind").to_owned(),
    }
}

#[test]
fn a_pause_survives_a_restart_and_resumes_once() {
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    let id = start(&d, &pause_doc(None), json!({}));
    let run = settle(&d, &id, &["paused"]);
    let wait_id = open_wait(&run);
    assert_eq!(run["waits"][0]["reason"], "approve t");
    d.stop();

    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    let run = settle(&d, &id, &["paused"]);
    assert_eq!(open_wait(&run), wait_id);
    // Wrong token: rejected with its reason code, the wait stays open.
    let bad = d.call(
        "workflow.resume",
        json!({ "run_id": id, "wait_id": wait_id, "request_id": "t0", "token": "nope" }),
    );
    assert_eq!(kind(bad), "token_mismatch");
    assert_eq!(
        kind(d.call(
            "workflow.resume",
            json!({ "run_id": id, "wait_id": "wait_nope", "request_id": "t0" })
        )),
        "wait_not_found"
    );
    // A minted token works and never shows up in events or logs.
    let token = d
        .call(
            "workflow.token",
            json!({ "run_id": id, "wait_id": wait_id }),
        )
        .unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = d
        .call("workflow.resume", json!({ "run_id": id, "wait_id": wait_id, "request_id": "r1", "approved": true, "token": token }))
        .unwrap();
    let again = d
        .call(
            "workflow.resume",
            json!({ "run_id": id, "wait_id": wait_id, "request_id": "r1", "approved": false }),
        )
        .unwrap();
    assert_eq!(
        first, again,
        "a repeated request id returns the first outcome"
    );
    let other = d.call(
        "workflow.resume",
        json!({ "run_id": id, "wait_id": wait_id, "request_id": "r2" }),
    );
    assert_eq!(kind(other), "wait_already_resolved");
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$after"], true);
    assert_eq!(run["vars"]["$before"], 1, "a completed step never re-ran");
    let ev = events(&d, &id);
    assert_eq!(count(&ev, "step_done", Some("Set_before")), 1);
    assert_eq!(count(&ev, "pause_resumed", None), 1);
    let rejected: Vec<&str> = ev
        .iter()
        .filter(|e| e["type"] == "pause_rejected")
        .map(|e| e["payload"]["reason"].as_str().unwrap())
        .collect();
    assert_eq!(rejected, ["token_mismatch", "wait_already_resolved"]);
    let all = serde_json::to_string(&ev).unwrap();
    assert!(!all.contains(&token) && !d.log().contains(&token));
    let after = d.call(
        "workflow.resume",
        json!({ "run_id": id, "wait_id": wait_id, "request_id": "r3" }),
    );
    assert_eq!(kind(after), "wait_already_resolved");
    d.stop();
}

#[test]
fn an_expired_wait_rejects_resumes_and_takes_the_timeout_route() {
    let d = Daemon::start();
    let id = start(&d, &pause_doc(Some(0.3)), json!({}));
    let run = settle(&d, &id, &["paused", "completed"]);
    let wait_id = run["waits"][0]["wait_id"].as_str().unwrap().to_owned();
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$timedout"], true);
    assert_eq!(run["vars"]["$after"], Value::Null);
    let r = d.call(
        "workflow.resume",
        json!({ "run_id": id, "wait_id": wait_id, "request_id": "late" }),
    );
    assert_eq!(kind(r), "wait_expired");
    d.stop();
}

#[test]
fn a_resume_racing_a_timeout_has_one_winner() {
    let d = Daemon::start();
    for round in 0..3 {
        let id = start(&d, &pause_doc(Some(0.5)), json!({}));
        let run = settle(&d, &id, &["paused"]);
        let wait_id = open_wait(&run);
        // Aim the resume at the moment of expiry.
        std::thread::sleep(std::time::Duration::from_millis(440 + round * 30));
        let r = d.call(
            "workflow.resume",
            json!({ "run_id": id, "wait_id": wait_id, "request_id": "race" }),
        );
        let run = settle(&d, &id, &["completed", "failed"]);
        let ev = events(&d, &id);
        let resumed = count(&ev, "pause_resumed", None);
        let timed_out = count(&ev, "pause_timeout", None);
        assert_eq!(resumed + timed_out, 1, "round {round}: {ev:#?}");
        match r {
            Ok(_) => assert_eq!((resumed, run["vars"]["$after"].clone()), (1, json!(true))),
            Err(e) => {
                assert!(
                    matches!(e.kind(), Some("wait_expired" | "wait_already_resolved")),
                    "{e}"
                );
                assert_eq!(
                    (timed_out, run["vars"]["$timedout"].clone()),
                    (1, json!(true))
                );
            }
        }
    }
    d.stop();
}

#[test]
fn a_timeout_that_expired_while_the_daemon_was_down_fires_on_start() {
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    let id = start(&d, &pause_doc(Some(1.0)), json!({}));
    settle(&d, &id, &["paused"]);
    d.kill9();
    std::thread::sleep(std::time::Duration::from_millis(1200));
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["vars"]["$timedout"], true, "{run:#}");
    d.stop();
}

/// Kills the daemon at a commit point of a step, restarts it, and checks the run finished as
/// if uninterrupted: graph rows once, the file byte-identical, completed steps not re-run.
fn crash_at(point: &str, step: &str) {
    let (temp, data, socket) = temp_layout();
    let fp = format!("{point}:{step}");
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[("BRAIN_FAILPOINT", &fp)]);
    d.wait_ready();
    // The process may die before it answers; the run id is then found by listing.
    let _ = d.call("workflow.run", json!({ "definition": writer_doc() }));
    let status = d.wait_exit();
    assert!(
        !status.success(),
        "{fp}: the failpoint did not fire:\n{}",
        d.log()
    );
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    let runs = d.call("workflow.list", json!({})).unwrap();
    assert_eq!(runs["runs"].as_array().unwrap().len(), 1, "{runs}");
    let id = runs["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{fp}: {run:#}");
    let node_id = run["vars"]["$id"].as_str().unwrap().to_owned();
    let ws = PathBuf::from(run["workspace"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(ws.join("out/log.md")).unwrap(),
        format!("line {node_id}\n"),
        "{fp}"
    );
    let ev = events(&d, &id);
    for s in ["Upsert_n", "Write_f", "Stop_end"] {
        assert_eq!(
            count(&ev, "step_done", Some(s)),
            1,
            "{fp}: {s} done once: {ev:#?}"
        );
    }
    assert_eq!(count(&ev, "run_recovered", None), 1, "{fp}");
    d.stop();
    let db = rusqlite::Connection::open(data.join("brain.db")).unwrap();
    let one = |sql: &str| -> i64 { db.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(
        one("SELECT count(*) FROM nodes WHERE kind = 'topic' AND key = 'topic:rust'"),
        1,
        "{fp}"
    );
    assert_eq!(
        one("SELECT count(*) FROM nodes WHERE kind = 'tag' AND key = 'tag:lang'"),
        1,
        "{fp}"
    );
    assert_eq!(
        one("SELECT count(*) FROM edges WHERE type = 'tagged'"),
        1,
        "{fp}"
    );
    assert_eq!(
        one(
            "SELECT count(*) FROM provenance WHERE step_key = 'Upsert_n' AND node_id IS NOT NULL AND run_id IS NOT NULL"
        ),
        2,
        "{fp}: node + tag"
    );
}

#[test]
fn crash_at_every_commit_point_of_a_graph_write() {
    for point in ["step_started", "step_effect", "step_done"] {
        crash_at(point, "Upsert_n");
    }
}

#[test]
fn crash_at_every_commit_point_of_a_file_write() {
    for point in ["step_started", "step_effect", "step_done"] {
        crash_at(point, "Write_f");
    }
}

#[test]
fn weekly_digest_through_the_cli_pauses_for_approval_and_writes_the_graph_and_a_file() {
    let d = Daemon::start();
    let vault = d.dir.join("notes");
    std::fs::create_dir_all(&vault).unwrap();
    std::fs::write(
        vault.join("project alpha.md"),
        "# Project alpha\n\nFirst.\n",
    )
    .unwrap();
    std::fs::write(vault.join("project beta.md"), "# Project beta\n\nSecond.\n").unwrap();
    std::fs::write(vault.join("other.md"), "# Other\n").unwrap();
    d.call("ingest.path", json!({ "path": vault })).unwrap();

    let file = fixture("valid", "weekly-digest.json");
    let out = d.cli(&[
        "workflow",
        "run",
        file.to_str().unwrap(),
        "--wait",
        "-p",
        "tag=project",
    ]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(4),
        "paused runs exit 4:\n{text}\n{}",
        crate::harness::stderr(&out)
    );
    assert!(text.contains("brain workflow resume run_"), "{text}");
    let run_id = text
        .lines()
        .next()
        .unwrap()
        .strip_prefix("run ")
        .unwrap()
        .trim()
        .to_owned();
    let run = get(&d, &run_id);
    assert_eq!(run["status"], "paused");
    assert_eq!(run["waits"][0]["step_id"], "Pause_approve");
    assert_eq!(run["waits"][0]["reason"], "Publish a digest of 2 notes?");
    let mut lines: Vec<String> = serde_json::from_value(run["vars"]["$lines"].clone()).unwrap();
    lines.sort();
    assert_eq!(lines, ["- Project alpha", "- Project beta"]);

    let out = d.cli(&["workflow", "resume", &run_id]);
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    let out = d.cli(&["workflow", "events", &run_id, "--follow", "--json"]);
    assert!(out.status.success());
    let types: Vec<String> = stdout(&out)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(types.first().map(String::as_str), Some("workflow_start"));
    assert!(types.iter().any(|t| t == "step_print"), "{types:?}");
    assert_eq!(
        types.last().map(String::as_str),
        Some("workflow_done"),
        "{types:?}"
    );

    let out = d.cli(&["workflow", "show", &run_id, "--json"]);
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["status"], "completed", "{run:#}");
    let digest_id = run["vars"]["$digestId"].as_str().unwrap();
    let ws = PathBuf::from(run["workspace"].as_str().unwrap());
    let digest = std::fs::read_to_string(ws.join("digests/weekly.md")).unwrap();
    assert!(digest.starts_with("# Digest\n"), "{digest}");
    assert!(
        digest.contains("- Project alpha") && digest.contains("- Project beta"),
        "{digest}"
    );
    let g = d
        .call(
            "graph.neighbors",
            json!({ "id": digest_id, "direction": "out", "edge_types": ["summarizes"] }),
        )
        .unwrap();
    assert_eq!(g["nodes"].as_array().unwrap().len(), 2, "{g:#}");
    let node = d.call("node.get", json!({ "id": digest_id })).unwrap();
    assert_eq!(node["provenance"][0]["run_id"], run_id.as_str());
    assert_eq!(node["provenance"][0]["step_key"], "Upsert_digest");

    let list = d.cli(&["workflow", "list", "--json"]);
    let list: Value = serde_json::from_slice(&list.stdout).unwrap();
    assert_eq!(list["runs"][0]["run_id"], run_id.as_str());
    d.stop();
}

#[test]
fn approval_before_a_side_effect_and_cancel() {
    let d = Daemon::start();
    let w = json!({ "version": "brain/1", "name": "approve",
        "registry": { "permissions": { "graphWrite": true } },
        "steps": [
            { "id": "Upsert_n", "approval": { "reason": "create the node?" },
              "in": { "kind": "topic", "key": "=\"k:\" + RUN.id", "title": "T" }, "next": "Stop_end" },
            { "id": "Stop_end" }
        ] });
    // Denied: the step fails with approval_denied and nothing is written.
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["paused"]);
    assert_eq!(run["waits"][0]["kind"], "approval");
    assert_eq!(
        run["waits"][0]["preview"]["in"]["title"], "T",
        "the resolved inputs are shown"
    );
    let wait_id = open_wait(&run);
    d.call(
        "workflow.resume",
        json!({ "run_id": id, "wait_id": wait_id, "request_id": "x", "approved": false }),
    )
    .unwrap();
    let run = settle(&d, &id, &["failed", "completed"]);
    assert_eq!(run["error"]["kind"], "approval_denied", "{run:#}");
    // Approved: the write happens.
    let id = start(&d, &w, json!({}));
    let wait_id = open_wait(&settle(&d, &id, &["paused"]));
    d.call(
        "workflow.resume",
        json!({ "run_id": id, "wait_id": wait_id, "request_id": "y", "approved": true }),
    )
    .unwrap();
    assert_eq!(
        settle(&d, &id, &["failed", "completed"])["status"],
        "completed"
    );
    // Cancel a paused run; its wait closes and resumes are refused: the run is not paused.
    let id = start(&d, &w, json!({}));
    let wait_id = open_wait(&settle(&d, &id, &["paused"]));
    let out = d.cli(&["workflow", "cancel", &id, "--json"]);
    assert!(out.status.success());
    assert_eq!(get(&d, &id)["status"], "cancelled");
    let r = d.call(
        "workflow.resume",
        json!({ "run_id": id, "wait_id": wait_id, "request_id": "z" }),
    );
    assert_eq!(kind(r), "run_not_paused");
    d.stop();
}

#[test]
fn file_paths_are_checked_at_run_time() {
    let d = Daemon::start();
    let outside = d.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.md"), "secret").unwrap();
    let w = json!({ "version": "brain/1", "name": "paths",
        "registry": { "params": ["p(STRING)"], "vars": ["$err(STRING)"], "files": { "inputs": ["in/**"] } },
        "steps": [
            { "id": "Read_x", "in": { "path": "=p" }, "onError": "Set_err", "next": "Stop_end" },
            { "id": "Set_err", "target": "$err", "value": "=_error.kind", "next": "Stop_end" },
            { "id": "Stop_end" }
        ] });
    for (p, want) in [
        ("../outside/secret.md", "path_invalid"),
        ("/etc/passwd", "path_invalid"),
        ("other/x.md", "path_outside_globs"),
        ("in/link/secret.md", "path_invalid"),
    ] {
        let id = start(&d, &w, json!({ "params": { "p": p } }));
        let run = settle(&d, &id, &["completed", "failed"]);
        if p.starts_with("in/link") {
            // Make the symlink now that the workspace exists, and run again in it.
            let ws = PathBuf::from(run["workspace"].as_str().unwrap());
            std::fs::create_dir_all(ws.join("in")).unwrap();
            std::os::unix::fs::symlink(&outside, ws.join("in/link")).unwrap();
            let r = brain::workflow::steps::read_file(&ws, p, &["in/**".to_owned()], 1 << 20);
            assert_eq!(r.unwrap_err().kind, want);
            continue;
        }
        assert_eq!(run["vars"]["$err"], want, "{p}: {run:#}");
    }
    d.stop();
}

#[test]
fn file_and_schedule_triggers_start_runs_that_record_their_trigger() {
    let d = Daemon::start();
    let vault = d.dir.join("vault");
    std::fs::create_dir_all(vault.join("inbox")).unwrap();
    let w = json!({ "version": "brain/1", "name": "on-inbox",
        "registry": { "vars": ["$text(STRING)", "$path(STRING)"], "files": { "inputs": ["inbox/*"] } },
        "steps": [
            { "id": "Read_it", "in": { "path": "=RUN.trigger.rel" }, "out": { "$text": "=_result.text" }, "next": "Set_path" },
            { "id": "Set_path", "target": "$path", "value": "=RUN.trigger.event", "next": "Stop_end" },
            { "id": "Stop_end" }
        ] });
    let f = d.dir.join("on-inbox.json");
    std::fs::write(&f, w.to_string()).unwrap();
    let out = d.cli(&[
        "workflow",
        "trigger-add",
        "inbox",
        f.to_str().unwrap(),
        "--on",
        "file_created",
        "--pattern",
        "inbox/*.md",
        "--in-root",
    ]);
    assert!(out.status.success(), "{}", crate::harness::stderr(&out));
    d.call("watch.add", json!({ "path": vault })).unwrap();
    std::fs::write(vault.join("inbox/new.md"), "hello inbox\n").unwrap();
    std::fs::write(vault.join("elsewhere.md"), "not a match\n").unwrap();
    let run = {
        let start = std::time::Instant::now();
        loop {
            let runs = d.call("workflow.list", json!({})).unwrap();
            if let Some(r) = runs["runs"].as_array().unwrap().first() {
                break settle(&d, r["run_id"].as_str().unwrap(), &["completed", "failed"]);
            }
            assert!(
                start.elapsed() < crate::harness::DEADLINE,
                "no triggered run:\n{}",
                d.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    };
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$text"], "hello inbox\n");
    assert_eq!(run["vars"]["$path"], "file_created");
    assert_eq!(run["trigger"]["name"], "inbox");
    assert_eq!(run["trigger"]["rel"], "inbox/new.md");
    let runs = d.call("workflow.list", json!({})).unwrap();
    assert_eq!(
        runs["runs"].as_array().unwrap().len(),
        1,
        "only the matching file fired"
    );

    // A schedule.
    let tick = doc(json!([{ "id": "Stop_end" }]), &[]);
    d.call(
        "workflow.trigger_add",
        json!({ "name": "tick", "definition": tick, "event": "schedule", "pattern": "every 1s" }),
    )
    .unwrap();
    crate::harness::wait_until("a scheduled run", || {
        let runs = d.call("workflow.list", json!({})).unwrap();
        runs["runs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"]["name"] == "tick")
    });
    let out = d.cli(&["workflow", "triggers", "--json"]);
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list["triggers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["inbox", "tick"]);
    assert!(
        d.call(
            "workflow.trigger_add",
            json!({ "name": "x", "definition": tick, "event": "schedule", "pattern": "hourly" })
        )
        .is_err()
    );
    d.call("workflow.trigger_remove", json!({ "name": "tick" }))
        .unwrap();
    d.stop();
}

#[test]
fn the_runner_asks_before_changing_a_file_in_a_watched_folder() {
    let d = Daemon::start();
    let vault = d.dir.join("vault");
    std::fs::create_dir_all(vault.join("inbox")).unwrap();
    std::fs::create_dir_all(vault.join("notes")).unwrap();
    std::fs::write(vault.join("notes/a.md"), "mine\n").unwrap();
    let w = json!({ "version": "brain/1", "name": "rewrite",
        "registry": { "files": { "artifacts": ["notes/*"] }, "permissions": { "fileWrite": ["notes/*"] } },
        "steps": [
            { "id": "Write_a", "in": { "path": "notes/a.md", "content": "rewritten\n" }, "next": "Write_b" },
            { "id": "Write_b", "in": { "path": "notes/b.md", "content": "new\n" }, "next": "Stop_end" },
            { "id": "Stop_end" }
        ] });
    d.call("workflow.trigger_add", json!({ "name": "t", "definition": w, "event": "file_created", "pattern": "inbox/*.md", "in_root": true }))
        .unwrap();
    d.call("watch.add", json!({ "path": vault })).unwrap();
    std::fs::write(vault.join("inbox/go.md"), "go\n").unwrap();
    let mut id = String::new();
    crate::harness::wait_until("a triggered run", || {
        let runs = d.call("workflow.list", json!({})).unwrap();
        match runs["runs"].as_array().unwrap().first() {
            Some(r) => {
                id = r["run_id"].as_str().unwrap().to_owned();
                true
            }
            None => false,
        }
    });
    let run = settle(&d, &id, &["paused", "completed", "failed"]);
    assert_eq!(run["status"], "paused", "{run:#}");
    assert_eq!(run["waits"][0]["kind"], "approval");
    assert!(
        run["waits"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("notes/a.md"),
        "{run:#}"
    );
    assert_eq!(
        std::fs::read_to_string(vault.join("notes/a.md")).unwrap(),
        "mine\n"
    );
    let wait_id = open_wait(&run);
    d.call(
        "workflow.resume",
        json!({ "run_id": id, "wait_id": wait_id, "request_id": "ok" }),
    )
    .unwrap();
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(
        std::fs::read_to_string(vault.join("notes/a.md")).unwrap(),
        "rewritten\n"
    );
    // A new file needs no approval.
    assert_eq!(
        std::fs::read_to_string(vault.join("notes/b.md")).unwrap(),
        "new\n"
    );
    d.stop();
}

#[test]
fn a_graceful_stop_parks_a_running_run_and_the_next_start_finishes_it() {
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    let w = doc(
        json!([
            { "id": "Loop_w", "while": "$n < 3000", "maxIterations": 3000, "mode": "serial", "children": ["Set_inc"], "next": "Stop_end" },
            { "id": "Set_inc", "target": "$n", "value": "=$n + 1", "next": "RETURN" },
            { "id": "Stop_end" }
        ]),
        &["$n(INT) = 0"],
    );
    let id = start(&d, &w, json!({}));
    crate::harness::wait_until("some iterations", || {
        events(&d, &id)
            .iter()
            .filter(|e| e["type"] == "step_done")
            .count()
            > 20
    });
    // A follower gets its answer when the daemon stops, instead of holding the stop up.
    let mut follower = d.client();
    let req = follower
        .send(
            "workflow.events",
            json!({ "run_id": id, "since": 0, "follow": true }),
        )
        .unwrap();
    // Once a notification arrived, the follow is under way.
    while follower.read_message().unwrap()["method"] != "workflow.event" {}
    let follower = std::thread::spawn(move || {
        loop {
            let m = follower.read_message().unwrap();
            if m["id"] == req {
                return m;
            }
        }
    });
    d.stop();
    let answer = follower.join().unwrap();
    assert_eq!(answer["result"]["status"], "running", "{answer}");
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[]);
    d.wait_ready();
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$n"], 3000);
    let ev = events(&d, &id);
    assert_eq!(
        count(&ev, "step_done", Some("Set_inc")),
        3000,
        "each iteration ran once"
    );
    assert_eq!(count(&ev, "run_recovered", None), 1);
    d.stop();
}

#[test]
fn every_limit_fails_the_run_with_limit_exceeded_naming_it() {
    let d = Daemon::start();
    let loop_doc = doc(
        json!([
            { "id": "Loop_l", "source": "=[1,2,3,4,5]", "mode": "serial", "children": ["Set_x"], "next": "Stop_end" },
            { "id": "Set_x", "target": "$x", "value": "=_item", "next": "RETURN" },
            { "id": "Stop_end" }
        ]),
        &["$x(INT)"],
    );
    let big = doc(
        json!([
            { "id": "Set_big2", "target": "$s", "value": "=[1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31,32,33,34,35,36,37,38,39,40]", "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$s"],
    );
    let pause = pause_doc(None);
    let cases = [
        ("steps", &loop_doc, json!({ "steps": 3 })),
        ("events", &loop_doc, json!({ "events": 5 })),
        ("loop_items", &loop_doc, json!({ "loop_items": 4 })),
        ("payload_bytes", &big, json!({ "payload_bytes": 100 })),
        ("pause_secs", &pause, json!({ "pause_secs": 1 })),
    ];
    for (name, w, limits) in cases {
        let id = start(&d, w, json!({ "limits": limits }));
        let run = settle(&d, &id, &["failed", "completed"]);
        assert_eq!(run["status"], "failed", "{name}: {run:#}");
        assert_eq!(run["error"]["kind"], "limit_exceeded", "{name}: {run:#}");
        assert!(
            run["error"]["message"].as_str().unwrap().contains(name),
            "{name}: {run:#}"
        );
    }
    d.stop();
}

#[test]
fn llm_steps_call_an_openai_compatible_server() {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let n = s.read(&mut buf).unwrap();
        let req = String::from_utf8_lossy(&buf[..n]).into_owned();
        let body = r#"{"choices":[{"message":{"role":"assistant","content":"a short summary"}}]}"#;
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        req
    });
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(
        temp.path(),
        &data,
        &socket,
        &[("BRAIN_LLM_URL", &url), ("BRAIN_LLM_MODEL", "tiny")],
    );
    d.wait_ready();
    let w = doc(
        json!([
            { "id": "LLM_sum", "in": { "system": "Be brief.", "prompt": "=\"Summarize: \" + $text" }, "out": { "$summary": "=_result" }, "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$text(STRING) = \"notes\"", "$summary(STRING)"],
    );
    let v = d
        .call("workflow.validate", json!({ "definition": w }))
        .unwrap();
    assert_eq!(
        v["warnings"],
        json!([]),
        "a provider is configured: no no_runner warning"
    );
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed", "completed_partial", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$summary"], "a short summary");
    let req = server.join().unwrap();
    assert!(
        req.contains("\"model\":\"tiny\"") && req.contains("Summarize: notes"),
        "{req}"
    );
    d.stop();
}

#[test]
fn a_pathological_expression_is_a_validation_error_and_the_daemon_stays_up() {
    let d = Daemon::start();
    for src in [
        format!("={}1{}", "(".repeat(100_000), ")".repeat(100_000)),
        format!("={}1{}", "[".repeat(900), "]".repeat(900)),
        format!("={}true", "!".repeat(1500)),
        format!("={}", "a ? b : ".repeat(200)),
    ] {
        let w = doc(
            json!([{ "id": "Set_x", "target": "$x", "value": src, "next": "Stop_end" }, { "id": "Stop_end" }]),
            &["$x"],
        );
        let v = d
            .call("workflow.validate", json!({ "definition": w }))
            .unwrap();
        assert_eq!(v["valid"], false);
        let code = v["errors"][0]["code"].as_str().unwrap();
        assert!(
            code == "expression_too_long" || code == "expression_too_deep",
            "{code}"
        );
        assert_eq!(v["errors"][0]["step_id"], "Set_x");
        let r = d.call("workflow.run", json!({ "definition": w }));
        assert_eq!(kind(r), "workflow_invalid");
    }
    d.call("daemon.status", json!({})).unwrap();
    d.stop();
}
