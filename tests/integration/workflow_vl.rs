//! Workflows as a VL author writes them: VL's step fields, its run events, its refusals, and the
//! graph steps brain adds, through the real daemon.

use serde_json::{Value, json};

use crate::harness::{Daemon, temp_layout};
use crate::workflow::{count, doc, events, settle, start};

/// For every file write, `file_start` comes before `file_done` for the same step key.
fn assert_file_events_ordered(ev: &[Value]) {
    let mut started: Vec<&str> = Vec::new();
    let mut done = 0;
    for e in ev {
        let key = e["step_key"].as_str().unwrap_or("");
        match e["type"].as_str() {
            Some("file_start") => started.push(key),
            Some("file_done") => {
                assert!(started.contains(&key), "file_done before file_start: {e}");
                done += 1;
            }
            _ => {}
        }
    }
    assert!(done > 0, "no file_done events");
}

#[test]
fn write_takes_vl_target_value_and_mode_and_the_in_form_is_its_alias() {
    let d = Daemon::start();
    let w = json!({ "version": "brain/1", "name": "vl-write",
        "registry": { "params": ["tag(STRING) = \"alpha\""], "vars": ["$err(STRING)"],
                      "files": { "artifacts": ["digests/*"] }, "permissions": { "fileWrite": ["digests/*"] } },
        "steps": [
            { "id": "Write_File", "target": "='digests/' + tag + '.md'", "value": "='# Digest ' + tag + '\\n'",
              "mode": "overwrite", "next": "Write_more" },
            { "id": "Write_more", "in": { "path": "digests/alpha.md", "content": "body\n", "mode": "append" },
              "next": "Write_head" },
            { "id": "Write_head", "target": "digests/alpha.md", "value": "front\n", "mode": "prepend",
              "next": "Write_again" },
            { "id": "Write_again", "target": "digests/alpha.md", "value": "x", "mode": "failIfExists",
              "onError": "Set_err", "next": "Stop_end" },
            { "id": "Set_err", "target": "$err", "value": "=_error.kind", "next": "Stop_end" },
            { "id": "Stop_end" }
        ] });
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    let ws = std::path::PathBuf::from(run["workspace"].as_str().unwrap());
    assert_eq!(
        std::fs::read_to_string(ws.join("digests/alpha.md")).unwrap(),
        "front\n# Digest alpha\nbody\n"
    );
    assert_eq!(run["vars"]["$err"], "file_exists");
    let ev = events(&d, &id);
    assert_file_events_ordered(&ev);
    assert_eq!(
        count(&ev, "file_start", None),
        3,
        "the refused write started nothing"
    );
    assert_eq!(count(&ev, "file_done", None), 3);
    let done = ev
        .iter()
        .find(|e| e["type"] == "step_done" && e["step_id"] == "Write_File")
        .unwrap();
    assert_eq!(done["payload"]["result"]["path"], "digests/alpha.md");

    // Both forms get the same checks: a path outside the globs is refused either way.
    for step in [
        json!({ "id": "Write_x", "target": "notes/x.md", "value": "x", "next": "Stop_end" }),
        json!({ "id": "Write_x", "in": { "path": "notes/x.md", "content": "x" }, "next": "Stop_end" }),
    ] {
        let mut bad = w.clone();
        bad["steps"] = json!([step, { "id": "Stop_end" }]);
        let v = d
            .call("workflow.validate", json!({ "definition": bad }))
            .unwrap();
        assert_eq!(v["errors"][0]["code"], "path_outside_globs", "{v:#}");
    }
    d.stop();
}

#[test]
fn vl_required_fields_and_platform_only_steps_are_refused_with_their_codes() {
    let d = Daemon::start();
    let cases = [
        (
            json!({ "id": "Pause_p", "reason": "ok?", "next": "Stop_end" }),
            "missing_field",
            "/steps/0/resumeResultTarget",
        ),
        (
            json!({ "id": "Loop_w", "while": "true", "mode": "serial", "children": ["Stop_end"], "next": "Stop_end" }),
            "while_without_max_iterations",
            "/steps/0/maxIterations",
        ),
        (
            json!({ "id": "Pause_p", "resumeResultTarget": "$a", "timeout": { "sec": 0 }, "next": "Stop_end" }),
            "invalid_timeout",
            "/steps/0/timeout/sec",
        ),
        (
            json!({ "id": "Write_w", "target": "a.md", "next": "Stop_end" }),
            "missing_field",
            "/steps/0/value",
        ),
        (
            json!({ "id": "Download_zip", "source": "https://example.com/x.zip", "next": "Stop_end" }),
            "platform_only_step",
            "/steps/0/id",
        ),
        (
            json!({ "id": "Service_crm", "next": "Stop_end" }),
            "platform_only_step",
            "/steps/0/id",
        ),
    ];
    for (step, code, path) in cases {
        let w = doc(json!([step, { "id": "Stop_end" }]), &["$a(OBJECT)"]);
        let v = d
            .call("workflow.validate", json!({ "definition": w }))
            .unwrap();
        let hit = v["errors"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["code"] == code && e["path"] == path);
        let hit = hit.unwrap_or_else(|| panic!("{code} at {path} missing: {v:#}"));
        assert_eq!(hit["step_id"], step["id"]);
        if code == "platform_only_step" {
            assert!(
                hit["message"].as_str().unwrap().contains("VL platform"),
                "{hit}"
            );
            assert_eq!(v["errors"].as_array().unwrap().len(), 1, "one error: {v:#}");
        }
        let r = d.call("workflow.run", json!({ "definition": w }));
        assert_eq!(crate::workflow::kind(r), "workflow_invalid");
    }
    d.stop();
}

#[test]
fn out_takes_the_vl_var_shorthand() {
    let d = Daemon::start();
    let w = doc(
        json!([
            { "id": "Search_q", "in": { "query": "anything", "k": 5 }, "out": "$found", "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$found(OBJECT)"],
    );
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    // `"$found"` is `{"$found": "=_result"}`: the whole result lands in the var.
    assert!(run["vars"]["$found"]["hits"].is_array(), "{run:#}");
    assert!(run["vars"]["$found"]["total"].is_number(), "{run:#}");
    d.stop();
}

#[test]
fn graph_path_returns_a_shortest_path_with_its_nodes_and_edges() {
    let d = Daemon::start();
    let vault = d.dir.join("vault");
    std::fs::create_dir_all(&vault).unwrap();
    // a → b → c, and a longer way a → x → y → c.
    for (name, body) in [
        ("a", "[[b]] and [[x]]\n"),
        ("b", "[[c]]\n"),
        ("x", "[[y]]\n"),
        ("y", "[[c]]\n"),
        ("c", "end\n"),
        ("lonely", "nothing\n"),
    ] {
        std::fs::write(vault.join(format!("{name}.md")), body).unwrap();
    }
    d.call("ingest.path", json!({ "path": vault })).unwrap();
    let id_of = |t: &str| {
        d.call("node.get", json!({ "title": t })).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (a, b, c, lonely) = (id_of("a"), id_of("b"), id_of("c"), id_of("lonely"));
    let w = json!({ "version": "brain/1", "name": "path",
        "registry": { "params": ["from(STRING)", "to(STRING)"], "vars": ["$path(OBJECT)"] },
        "steps": [
            { "id": "Graph_path", "in": { "op": "path", "id": "=from", "to": "=to", "direction": "out" },
              "out": "$path", "next": "Stop_end" },
            { "id": "Stop_end" }
        ] });
    let id = start(&d, &w, json!({ "params": { "from": a, "to": c } }));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    let p = &run["vars"]["$path"];
    let nodes: Vec<&str> = p["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, [a.as_str(), b.as_str(), c.as_str()], "{p:#}");
    assert_eq!(p["length"], 2);
    let edges = p["edges"].as_array().unwrap();
    assert_eq!(edges.len(), 2, "{p:#}");
    for (i, e) in edges.iter().enumerate() {
        assert_eq!(e["from"], nodes[i]);
        assert_eq!(e["to"], nodes[i + 1]);
        assert_eq!(e["type"], "links_to");
    }
    // Unreachable: empty, not an error.
    let id = start(&d, &w, json!({ "params": { "from": a, "to": lonely } }));
    let run = settle(&d, &id, &["completed", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$path"]["nodes"], json!([]));
    assert_eq!(run["vars"]["$path"]["length"], Value::Null);
    d.stop();
}

/// A fake OpenAI-compatible server that streams `pieces` as server-sent events when asked to
/// stream, and answers in one JSON object otherwise. Returns its URL and the requests it saw.
fn streaming_server(
    pieces: &'static [&'static str],
) -> (String, std::thread::JoinHandle<Vec<String>>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 16 * 1024];
        let n = s.read(&mut buf).unwrap();
        let req = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(req.contains("\"stream\":true"), "{req}");
        write!(
            s,
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        for p in pieces {
            let chunk = json!({ "choices": [{ "delta": { "content": p } }] });
            write!(s, "data: {chunk}\n\n").unwrap();
            s.flush().unwrap();
        }
        write!(s, "data: [DONE]\n\n").unwrap();
        vec![req]
    });
    (url, server)
}

#[test]
fn a_streaming_llm_step_emits_tokens_before_llm_done() {
    const PIECES: &[&str] = &["a ", "short ", "summary"];
    let (url, server) = streaming_server(PIECES);
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
            { "id": "LLM_sum", "model": "big", "stream": true, "in": { "prompt": "Summarize" },
              "out": "$summary", "next": "Stop_end" },
            { "id": "Stop_end" }
        ]),
        &["$summary(STRING)"],
    );
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["completed", "completed_partial", "failed"]);
    assert_eq!(run["status"], "completed", "{run:#}");
    assert_eq!(run["vars"]["$summary"], "a short summary");
    let ev = events(&d, &id);
    let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
    let tokens: Vec<&str> = ev
        .iter()
        .filter(|e| e["type"] == "llm_token")
        .map(|e| e["payload"]["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, PIECES, "{types:?}");
    let done = types
        .iter()
        .position(|t| *t == "llm_done")
        .expect("llm_done");
    let last_token = types.iter().rposition(|t| *t == "llm_token").unwrap();
    assert!(last_token < done, "{types:?}");
    assert_eq!(ev[done]["payload"]["model"], "big");
    let req = server.join().unwrap().remove(0);
    assert!(
        req.contains("\"model\":\"big\""),
        "VL's top-level model wins: {req}"
    );
    d.stop();
}

/// Whether `want` appears in `have` in order, not necessarily next to each other.
fn is_subsequence(want: &[&str], have: &[&str]) -> bool {
    let mut it = have.iter();
    want.iter().all(|w| it.any(|h| h == w))
}

/// Every document in `fixtures/workflows/vl/` — one per VL field and step type brain shares,
/// and one per field or family it refuses — gives the result its `expect` states: a run's
/// status, vars (a subset) and event types (in order), or a refusal's code and JSON path.
#[test]
fn vl_conformance_fixtures_run_or_are_refused_as_stated() {
    let d = Daemon::start();
    let vault = d.dir.join("notes");
    std::fs::create_dir_all(&vault).unwrap();
    std::fs::write(
        vault.join("project alpha.md"),
        "# Project alpha\n\nFirst.\n",
    )
    .unwrap();
    std::fs::write(vault.join("project beta.md"), "# Project beta\n\nSecond.\n").unwrap();
    std::fs::write(vault.join("other.md"), "# Other\n\nNothing here.\n").unwrap();
    d.call("ingest.path", json!({ "path": vault })).unwrap();

    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/workflows/vl");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{} fixtures", files.len());
    for f in files {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        let case: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let (w, expect) = (&case["workflow"], &case["expect"]);
        assert!(case["about"].is_string(), "{name}: say what it covers");
        if let Some(code) = expect["refused"].as_str() {
            let v = d
                .call("workflow.validate", json!({ "definition": w }))
                .unwrap();
            assert!(
                v["errors"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|e| e["code"] == code && e["path"] == expect["path"]),
                "{name}: {v:#}"
            );
            let r = d.call("workflow.run", json!({ "definition": w }));
            assert_eq!(crate::workflow::kind(r), "workflow_invalid", "{name}");
            continue;
        }
        let v = d
            .call("workflow.validate", json!({ "definition": w }))
            .unwrap();
        assert_eq!(v["valid"], true, "{name}: {v:#}");
        let mut params = case["run"].clone();
        if params.is_null() {
            params = json!({});
        }
        let id = start(&d, w, params);
        let mut run = settle(
            &d,
            &id,
            &["completed", "completed_partial", "failed", "paused"],
        );
        if run["status"] == "paused"
            && let Some(resume) = case["resume"].as_object()
        {
            // The status reads `paused` as soon as the wait opens; the run parks (and says
            // `workflow_paused`) once its drive has finished. A resume before that is taken
            // by the same drive, with no park to report, so wait for the park.
            crate::harness::wait_until(&format!("{name} to park"), || {
                events(&d, &id)
                    .iter()
                    .any(|e| e["type"] == "workflow_paused")
            });
            let wait_id = crate::workflow::open_wait(&run);
            let mut body = json!({ "run_id": id, "wait_id": wait_id, "request_id": "conformance" });
            body.as_object_mut().unwrap().extend(resume.clone());
            d.call("workflow.resume", body).unwrap();
            run = settle(&d, &id, &["completed", "completed_partial", "failed"]);
        } else if run["status"] == "paused" && expect["status"] != "paused" {
            // A timeout resolves it.
            run = settle(&d, &id, &["completed", "completed_partial", "failed"]);
        }
        assert_eq!(run["status"], expect["status"], "{name}: {run:#}");
        for (k, want) in expect["vars"].as_object().into_iter().flatten() {
            assert_eq!(&run["vars"][k], want, "{name}: {k} in {run:#}");
        }
        let ev = events(&d, &id);
        let types: Vec<&str> = ev.iter().map(|e| e["type"].as_str().unwrap()).collect();
        let want: Vec<&str> = expect["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| t.as_str().unwrap())
            .collect();
        assert!(
            is_subsequence(&want, &types),
            "{name}: {want:?} in {types:?}"
        );
        if types.contains(&"file_done") {
            assert_file_events_ordered(&ev);
        }
    }
    d.stop();
}

#[test]
fn approving_a_vl_write_shows_its_resolved_target_value_and_mode() {
    let d = Daemon::start();
    let w = json!({ "version": "brain/1", "name": "approve-write",
        "registry": { "params": ["name(STRING) = \"a\""], "files": { "artifacts": ["out/*"] },
                      "permissions": { "fileWrite": ["out/*"] } },
        "steps": [
            { "id": "Write_it", "approval": { "reason": "write it?" }, "target": "='out/' + name + '.md'",
              "value": "hello", "mode": "append", "next": "Stop_end" },
            { "id": "Stop_end" }
        ] });
    let id = start(&d, &w, json!({}));
    let run = settle(&d, &id, &["paused", "completed", "failed"]);
    assert_eq!(run["status"], "paused", "{run:#}");
    let preview = &run["waits"][0]["preview"];
    assert_eq!(
        (&preview["target"], &preview["value"], &preview["mode"]),
        (&json!("out/a.md"), &json!("hello"), &json!("append")),
        "{run:#}"
    );
    d.stop();
}
