//! Run-level controls through the real daemon: selected steps (`nodes`), the concurrency cap
//! across nested parallel loops, and the wall-clock limit across pauses and restarts.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::harness::{Daemon, temp_layout};
use crate::workflow::{doc, events, kind, open_wait, settle, start};

#[test]
fn run_params_nodes_runs_only_the_selected_steps_and_the_journal_records_them() {
    let d = Daemon::start();
    let w = doc(
        json!([
            { "id": "Set_a", "target": "$a", "value": 1, "next": "Set_b" },
            { "id": "Set_b", "target": "$b", "value": 2, "next": "Set_c" },
            { "id": "Set_c", "target": "$c", "value": 3, "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$a(INT) = 0", "$b(INT) = 0", "$c(INT) = 0"],
    );
    let nodes = json!(["Set_a", "Set_c", "Stop_end"]);
    let id = start(&d, &w, json!({ "nodes": nodes }));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(
        (&run["vars"]["$a"], &run["vars"]["$b"], &run["vars"]["$c"]),
        (&json!(1), &json!(0), &json!(3))
    );
    let ev = events(&d, &id);
    assert_eq!(ev[0]["type"], "workflow_start");
    assert_eq!(ev[0]["payload"]["nodes"], nodes);
    let skipped: Vec<(&str, &str)> = ev
        .iter()
        .filter(|e| e["type"] == "step_skipped")
        .map(|e| {
            (
                e["step_id"].as_str().unwrap(),
                e["payload"]["reason"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(skipped, [("Set_b", "not_selected")]);
    for bad in [json!(["Set_nope"]), json!([])] {
        let r = d.call("workflow.run", json!({ "definition": w, "nodes": bad }));
        assert_eq!(kind(r), "invalid_params");
    }
    d.stop();
}

/// What a fake model server saw: connections open now, and the most at once.
#[derive(Default)]
struct Seen {
    open: usize,
    most: usize,
    calls: usize,
}

/// A fake OpenAI-compatible server. Each answer is held until `release_at` connections are open
/// at once or `hold` has passed, so concurrent callers overlap for sure.
fn slow_model_server(hold: Duration, release_at: usize) -> (String, Arc<(Mutex<Seen>, Condvar)>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new((Mutex::new(Seen::default()), Condvar::new()));
    let shared = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut s) = conn else { continue };
            let seen = shared.clone();
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 16 * 1024];
                let _ = s.read(&mut buf);
                let (m, cv) = &*seen;
                let mut g = m.lock().unwrap();
                g.open += 1;
                g.calls += 1;
                g.most = g.most.max(g.open);
                cv.notify_all();
                let (mut g, _) = cv
                    .wait_timeout_while(g, hold, |g| g.open < release_at)
                    .unwrap();
                g.open -= 1;
                drop(g);
                let body = r#"{"choices":[{"message":{"role":"assistant","content":"ok"}}]}"#;
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    (url, seen)
}

#[test]
fn nested_parallel_loops_never_exceed_the_runs_concurrency_cap_in_total() {
    const CAP: usize = 3;
    // One over the cap releases everyone at once: a run over the cap is seen, not waited out.
    let (url, seen) = slow_model_server(Duration::from_millis(150), CAP + 1);
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &[("BRAIN_LLM_URL", &url)]);
    d.wait_ready();
    let w = doc(
        json!([
            { "id": "Loop_outer", "source": "=[1,2,3,4]", "mode": "parallel", "concurrency": 4,
              "children": ["Loop_inner"], "next": "Stop_end" },
            { "id": "Loop_inner", "source": "=[1,2,3,4]", "mode": "parallel", "concurrency": 4,
              "children": ["LLM_call"], "next": "RETURN" },
            { "id": "LLM_call", "in": { "prompt": "hi" }, "next": "RETURN" },
            { "id": "Stop_end" }
        ]),
        &[],
    );
    let id = start(&d, &w, json!({ "limits": { "concurrency": CAP } }));
    let run = settle(&d, &id, &["completed", "completed_partial", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    let g = seen.0.lock().unwrap();
    assert_eq!(g.calls, 16);
    assert!(g.most <= CAP, "{} calls at once, cap {CAP}", g.most);
    assert!(g.most >= 2, "the loops ran in parallel at all");
    drop(g);
    d.stop();
}

#[test]
fn the_wall_clock_limit_counts_running_time_across_a_pause_and_a_restart() {
    // Each model call takes 1.2 s: one drive stays under the 2 s limit, both together do not.
    let (url, _seen) = slow_model_server(Duration::from_millis(1200), usize::MAX);
    let env = [("BRAIN_LLM_URL", url.as_str())];
    let w = doc(
        json!([
            { "id": "LLM_first", "in": { "prompt": "hi" }, "next": "Pause_p" },
            { "id": "Pause_p", "resumeResultTarget": "$answer", "next": "LLM_second" },
            { "id": "LLM_second", "in": { "prompt": "hi" }, "next": "Set_after" },
            { "id": "Set_after", "target": "$after", "value": true, "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$answer(OBJECT)", "$after(BOOL) = false"],
    );
    let (temp, data, socket) = temp_layout();
    let mut d = Daemon::spawn(temp.path(), &data, &socket, &env);
    d.wait_ready();
    let id = start(&d, &w, json!({ "limits": { "wall_clock_secs": 2 } }));
    let run = settle(&d, &id, &["paused", "failed"]);
    assert_eq!(run["status"], "paused", "{run:#}");
    let wait_id = open_wait(&run);
    d.stop();

    let mut d = Daemon::spawn(temp.path(), &data, &socket, &env);
    d.wait_ready();
    d.call(
        "workflow.resume",
        json!({ "run_id": id, "wait_id": wait_id, "request_id": "r1" }),
    )
    .unwrap();
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(run["error"]["kind"], "limit_exceeded", "{run:#}");
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("wall_clock_secs"),
        "{run:#}"
    );
    assert_eq!(run["vars"]["$after"], Value::Bool(false));
    d.stop();
}

#[test]
fn run_wait_prints_one_line_per_step_and_a_pause_its_preview_and_how_to_resume() {
    let d = Daemon::start();
    let w = doc(
        json!([
            { "id": "Set_a", "target": "$a", "value": 1, "print": "set a", "next": "Noop_skip" },
            { "id": "Noop_skip", "if": "false", "next": "Pause_ok" },
            { "id": "Pause_ok", "reason": "publish?", "preview": { "title": "Weekly digest" },
              "resumeResultTarget": "$answer", "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$a(INT)", "$answer(OBJECT)"],
    );
    let f = d.dir.join("w.json");
    std::fs::write(&f, w.to_string()).unwrap();
    let out = d.cli(&["workflow", "run", f.to_str().unwrap(), "--wait"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        crate::harness::stderr(&out)
    );
    let text = crate::harness::stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("run run_"), "{text}");
    let of = |key: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| l.split_whitespace().nth(1) == Some(key))
            .collect()
    };
    let set_a = of("Set_a");
    assert_eq!(set_a.len(), 1, "one line for the step: {text}");
    assert!(
        set_a[0].starts_with("done") && set_a[0].contains("set a"),
        "{text}"
    );
    let skipped = of("Noop_skip");
    assert!(
        skipped.len() == 1 && skipped[0].starts_with("skipped") && skipped[0].contains("if_false"),
        "{text}"
    );
    assert!(of("Pause_ok")[0].starts_with("paused"), "{text}");
    assert!(!text.contains("step_start"), "no raw events: {text}");
    assert!(
        text.contains("Weekly digest"),
        "the preview is shown: {text}"
    );
    let run_id = lines[0].strip_prefix("run ").unwrap();
    assert!(
        text.contains(&format!("brain workflow resume {run_id}")),
        "{text}"
    );

    // --events brings back every event.
    let out = d.cli(&["workflow", "run", f.to_str().unwrap(), "--wait", "--events"]);
    let text = crate::harness::stdout(&out);
    assert!(
        text.contains("step_start") && text.contains("pause_start"),
        "{text}"
    );
    d.stop();
}

/// Runs started by the trigger `name`, oldest first, as `(tag, note_id)` of their trigger.
fn tag_runs(d: &Daemon, name: &str) -> Vec<(String, String)> {
    let runs = d.call("workflow.list", json!({})).unwrap();
    let mut out: Vec<(String, String)> = runs["runs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["trigger"]["name"] == name)
        .map(|r| {
            (
                r["trigger"]["tag"].as_str().unwrap().to_owned(),
                r["trigger"]["note_id"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.reverse();
    out
}

#[test]
fn a_tag_added_trigger_fires_when_a_note_gains_a_matching_tag_and_not_when_it_keeps_one() {
    let d = Daemon::start();
    let vault = d.dir.join("vault");
    std::fs::create_dir_all(&vault).unwrap();
    let w = doc(
        json!([
            { "id": "Set_tag", "target": "$tag", "value": "=RUN.trigger.tag", "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$tag(STRING)"],
    );
    d.call(
        "workflow.trigger_add",
        json!({ "name": "on-project", "definition": w, "event": "tag_added", "pattern": "project*" }),
    )
    .unwrap();
    let note = vault.join("a.md");
    let ingest = |body: &str| {
        std::fs::write(&note, body).unwrap();
        d.call("ingest.path", json!({ "path": vault })).unwrap();
    };
    ingest("# A\n\n#project and #other\n");
    let a = d.call("node.get", json!({ "title": "A" })).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        tag_runs(&d, "on-project"),
        [("project".to_owned(), a.clone())]
    );
    // The note changes but keeps its tag: not a new tag.
    ingest("# A\n\n#project and #other, with more text\n");
    assert_eq!(tag_runs(&d, "on-project").len(), 1);
    // A new tag that does not match, then one that does.
    ingest("# A\n\n#project and #other #misc\n");
    assert_eq!(tag_runs(&d, "on-project").len(), 1);
    ingest("# A\n\n#project and #other #misc #Projects\n");
    let runs = tag_runs(&d, "on-project");
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert_eq!(runs[1], ("Projects".to_owned(), a));
    let list = d.call("workflow.list", json!({})).unwrap();
    let id = list["runs"][0]["run_id"].as_str().unwrap().to_owned();
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["vars"]["$tag"], "Projects", "{run:#}");
    d.stop();
}
