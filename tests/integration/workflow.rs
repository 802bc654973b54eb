//! Workflows through the real binary: validation, runs, pauses, crashes and restarts.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::harness::{Daemon, brain_cmd, stdout, temp_layout};

fn fixture(kind: &str, name: &str) -> PathBuf {
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
