//! The `workflow.*` socket methods: decode params, call the engine through the façade, encode
//! wire shapes.
//!
//! Kept apart from `server` so the workflow surface is one file; runs on the server's blocking
//! threads like every other method. `workflow.events` with `follow` sends each event as a
//! `workflow.event` notification and answers when the run stops moving.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::protocol::{self, JSONRPC, ValidateResult, WorkflowSourceParams};
use super::server::Notifier;
use crate::brain::Brain;
use crate::error::{Error, Kind};
use crate::workflow::{Event, ResumeRequest, RunOptions, RunView};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunParams {
    definition: Option<Value>,
    path: Option<String>,
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    dry_run: bool,
    /// Lower limits for this run (never higher than the daemon's).
    #[serde(default)]
    limits: Value,
    /// VL's `RunParams.nodes`: the only step ids to run.
    nodes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunIdParams {
    run_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    status: Option<String>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResumeParams {
    run_id: String,
    wait_id: String,
    request_id: String,
    #[serde(default = "yes")]
    approved: bool,
    #[serde(default)]
    payload: Value,
    token: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsParams {
    run_id: String,
    #[serde(default)]
    since: i64,
    #[serde(default)]
    follow: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenParams {
    run_id: String,
    wait_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerAddParams {
    name: String,
    definition: Option<Value>,
    path: Option<String>,
    event: String,
    pattern: String,
    #[serde(default)]
    params: Map<String, Value>,
    #[serde(default)]
    in_root: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TriggerNameParams {
    name: String,
}

fn trigger_wire(t: &crate::workflow::triggers::Trigger) -> Value {
    json!({
        "name": t.name, "workflow": t.workflow, "definition_hash": t.definition_hash, "event": t.event,
        "pattern": t.pattern, "params": t.params, "enabled": t.enabled, "in_root": t.in_root,
        "created_by": t.created_by, "created_at": t.created_at, "last_fired_at": t.last_fired_at,
    })
}

/// The largest workflow document read from a file: the largest shipped example is a few KiB,
/// and the whole document is held and validated in memory.
pub const MAX_DOCUMENT_BYTES: u64 = 1024 * 1024;

/// Reads the document a request names: inline, or a file the daemon reads.
fn document(
    brain: &Brain,
    definition: Option<Value>,
    path: Option<String>,
) -> Result<Value, Error> {
    match (definition, path) {
        (Some(d), None) => Ok(d),
        (None, Some(p)) => {
            if !std::path::Path::new(&p).is_absolute() {
                return Err(Error::new(
                    Kind::InvalidParams,
                    format!("path must be absolute: {p:?}"),
                ));
            }
            let bytes = brain.read_client_file(std::path::Path::new(&p), MAX_DOCUMENT_BYTES)?;
            serde_json::from_slice(&bytes)
                .map_err(|e| Error::new(Kind::InvalidParams, format!("{p} is not JSON: {e}")))
        }
        _ => Err(Error::new(
            Kind::InvalidParams,
            "give exactly one of definition, path",
        )),
    }
}

pub fn dispatch(
    brain: &Brain,
    method: &str,
    params: Value,
    notes: &Notifier,
) -> Result<Value, Error> {
    let wf = brain.workflows();
    match method {
        "workflow.validate" => {
            let p: WorkflowSourceParams = protocol::params(method, params)?;
            let doc = document(brain, p.definition, p.path)?;
            let report = brain.workflow_validate(&doc);
            to_value(ValidateResult::from_report(report, p.strict))
        }
        "workflow.run" => {
            let p: RunParams = protocol::params(method, params)?;
            let doc = document(brain, p.definition, p.path)?;
            let run_id = wf.run(
                &doc,
                RunOptions {
                    params: p.params,
                    dry_run: p.dry_run,
                    limits: p.limits,
                    trigger: None,
                    workspace: None,
                    nodes: p.nodes,
                },
            )?;
            Ok(json!({ "run_id": run_id.as_str() }))
        }
        "workflow.get" => {
            let p: RunIdParams = protocol::params(method, params)?;
            Ok(run_wire(&wf.get(&p.run_id)?))
        }
        "workflow.list" => {
            let p: ListParams = protocol::params(method, params)?;
            let runs = wf.list(p.status.as_deref(), p.limit.unwrap_or(50).min(1000))?;
            let runs: Vec<Value> = runs
                .into_iter()
                .map(|r| {
                    json!({
                        "run_id": r.id, "name": r.name, "status": r.status, "dry_run": r.dry_run,
                        "trigger": r.trigger, "created_at": r.created_at, "finished_at": r.finished_at,
                    })
                })
                .collect();
            Ok(json!({ "runs": runs }))
        }
        "workflow.resume" => {
            let p: ResumeParams = protocol::params(method, params)?;
            // A socket client is authenticated by the socket's permissions: it acts as the
            // daemon's user and needs no token, though it may present one.
            wf.resume(&ResumeRequest {
                run_id: p.run_id,
                wait_id: p.wait_id,
                request_id: p.request_id,
                approved: p.approved,
                payload: p.payload,
                token: p.token,
                actor: brain.user_id().to_string(),
            })
        }
        "workflow.token" => {
            let p: TokenParams = protocol::params(method, params)?;
            Ok(json!({ "token": wf.mint_token(&p.run_id, &p.wait_id)? }))
        }
        "workflow.cancel" => {
            let p: RunIdParams = protocol::params(method, params)?;
            Ok(json!({ "run_id": p.run_id, "status": wf.cancel(&p.run_id)? }))
        }
        "workflow.events" => {
            let p: EventsParams = protocol::params(method, params)?;
            if !p.follow {
                let (events, status) = wf.events(&p.run_id, p.since, 10_000)?;
                let events: Vec<Value> = events.iter().map(event_wire).collect();
                return Ok(json!({ "events": events, "status": status }));
            }
            follow(brain, &p.run_id, p.since, notes)
        }
        "workflow.triggers" => {
            let _: protocol::NoParams = protocol::params(method, params)?;
            let list: Vec<Value> = wf.triggers()?.iter().map(trigger_wire).collect();
            Ok(json!({ "triggers": list }))
        }
        "workflow.trigger_add" => {
            let p: TriggerAddParams = protocol::params(method, params)?;
            let doc = document(brain, p.definition, p.path)?;
            let t = wf.trigger_add(&p.name, &doc, &p.event, &p.pattern, p.params, p.in_root)?;
            Ok(trigger_wire(&t))
        }
        "workflow.trigger_remove" => {
            let p: TriggerNameParams = protocol::params(method, params)?;
            wf.trigger_remove(&p.name)?;
            Ok(json!({ "name": p.name, "removed": true }))
        }
        _ => Err(Error::new(
            Kind::MethodNotFound,
            format!("unknown method {method:?}"),
        )),
    }
}

/// Sends events as notifications until the run has ended, or is paused with nothing left
/// running; then answers with the status and the last sequence number sent.
fn follow(brain: &Brain, run_id: &str, mut since: i64, notes: &Notifier) -> Result<Value, Error> {
    let wf = brain.workflows();
    loop {
        // Read the generation first, so an event committed after the read below wakes us.
        let generation = wf.event_generation();
        let (events, status) = wf.events(run_id, since, 1000)?;
        for e in &events {
            since = e.seq;
            let _ = notes.send(
                json!({ "jsonrpc": JSONRPC, "method": "workflow.event", "params": event_wire(e) }),
            );
        }
        let settled = match status.as_str() {
            "running" => false,
            "paused" => !wf.is_active(run_id),
            _ => true,
        };
        if events.is_empty() && (settled || wf.is_stopping()) {
            return Ok(json!({ "events": [], "status": status, "last_seq": since }));
        }
        if events.is_empty() {
            wf.wait_for_events(generation, Duration::from_millis(500));
        }
    }
}

fn event_wire(e: &Event) -> Value {
    json!({
        "run_id": e.run_id, "seq": e.seq, "ts": e.ts, "type": e.kind,
        "step_id": e.step_id, "step_key": e.step_key, "payload": e.payload,
    })
}

fn run_wire(v: &RunView) -> Value {
    let r = &v.run;
    let waits: Vec<Value> = v
        .waits
        .iter()
        .map(|w| {
            json!({
                "wait_id": w.id, "step_id": w.step_id, "step_key": w.step_key, "kind": w.kind,
                "reason": w.reason, "preview": w.preview, "status": w.status,
                "expires_at": w.expires_at, "created_at": w.created_at, "resolved_at": w.resolved_at,
                "resolved_by": w.resolved_by,
            })
        })
        .collect();
    let steps: Vec<Value> = v
        .steps
        .iter()
        .map(|s| {
            json!({
                "step_key": s.step_key, "step_id": s.step_id, "status": s.status, "attempt": s.attempt,
                "started_at": s.started_at, "finished_at": s.finished_at, "error": s.error,
            })
        })
        .collect();
    json!({
        "run_id": r.id, "name": r.name, "definition_hash": r.definition_hash, "status": r.status,
        "dry_run": r.dry_run, "params": r.params, "vars": r.vars, "workspace": r.workspace,
        "trigger": r.trigger, "actor_id": r.actor_id, "error": r.error, "limits": r.limits,
        "waits": waits, "steps": steps, "created_at": r.created_at, "updated_at": r.updated_at,
        "finished_at": r.finished_at,
    })
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, Error> {
    serde_json::to_value(v)
        .map_err(|e| Error::new(Kind::Internal, format!("cannot encode result: {e}")))
}
