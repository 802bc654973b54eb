//! The `workflow.*` socket methods: decode params, call the engine through the façade, encode
//! wire shapes.
//!
//! Kept apart from `server` so the workflow surface is one file; runs on the server's blocking
//! threads like every other method. `workflow.events` with `follow` sends each event as a
//! `workflow.event` notification and answers when the run stops moving.

use std::time::Duration;

use serde_json::Value;

use super::protocol::methods as m;
use super::protocol::workflow::{
    CancelResult, EventWire, EventsResult, ResumeResult, RunList, RunStarted, RunWire, TokenResult,
    TriggerList, TriggerRemoved, TriggerWire,
};
use super::protocol::{self, Method, ValidateResult};
use super::server::{Notifier, serve};
use crate::brain::Brain;
use crate::error::{Error, Kind};
use crate::workflow::{ResumeRequest, RunOptions};

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
        m::WorkflowValidate::NAME => serve::<m::WorkflowValidate>(params, |p| {
            let doc = document(brain, p.definition, p.path)?;
            let report = brain.workflow_validate(&doc);
            Ok(ValidateResult::from_report(report, p.strict))
        }),
        m::WorkflowRun::NAME => serve::<m::WorkflowRun>(params, |p| {
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
            Ok(RunStarted {
                run_id: run_id.as_str().to_owned(),
            })
        }),
        m::WorkflowGet::NAME => {
            serve::<m::WorkflowGet>(params, |p| Ok(RunWire::from(&wf.get(&p.run_id)?)))
        }
        m::WorkflowList::NAME => serve::<m::WorkflowList>(params, |p| {
            let runs = wf.list(p.status.as_deref(), p.limit.unwrap_or(50).min(1000))?;
            Ok(RunList {
                runs: runs.into_iter().map(Into::into).collect(),
            })
        }),
        m::WorkflowResume::NAME => serve::<m::WorkflowResume>(params, |p| {
            // A socket client is authenticated by the socket's permissions: it acts as the
            // daemon's user and needs no token, though it may present one.
            let outcome = wf.resume(&ResumeRequest {
                run_id: p.run_id,
                wait_id: p.wait_id,
                request_id: p.request_id,
                approved: p.approved,
                payload: p.payload,
                token: p.token,
                actor: brain.user_id().to_string(),
            })?;
            serde_json::from_value::<ResumeResult>(outcome)
                .map_err(|e| Error::new(Kind::Internal, format!("resume recorded no outcome: {e}")))
        }),
        m::WorkflowToken::NAME => serve::<m::WorkflowToken>(params, |p| {
            Ok(TokenResult {
                token: wf.mint_token(&p.run_id, &p.wait_id)?,
            })
        }),
        m::WorkflowCancel::NAME => serve::<m::WorkflowCancel>(params, |p| {
            let status = wf.cancel(&p.run_id)?;
            Ok(CancelResult {
                run_id: p.run_id,
                status,
            })
        }),
        m::WorkflowEvents::NAME => serve::<m::WorkflowEvents>(params, |p| {
            if !p.follow {
                let (events, status) = wf.events(&p.run_id, p.since, 10_000)?;
                return Ok(EventsResult {
                    events: events.iter().map(Into::into).collect(),
                    status,
                    last_seq: None,
                });
            }
            follow(brain, &p.run_id, p.since, notes)
        }),
        m::WorkflowTriggers::NAME => serve::<m::WorkflowTriggers>(params, |_| {
            Ok(TriggerList {
                triggers: wf.triggers()?.iter().map(Into::into).collect(),
            })
        }),
        m::WorkflowTriggerAdd::NAME => serve::<m::WorkflowTriggerAdd>(params, |p| {
            let doc = document(brain, p.definition, p.path)?;
            let t = wf.trigger_add(&p.name, &doc, &p.event, &p.pattern, p.params, p.in_root)?;
            Ok(TriggerWire::from(&t))
        }),
        m::WorkflowTriggerRemove::NAME => serve::<m::WorkflowTriggerRemove>(params, |p| {
            wf.trigger_remove(&p.name)?;
            Ok(TriggerRemoved {
                name: p.name,
                removed: true,
            })
        }),
        _ => Err(Error::new(
            Kind::MethodNotFound,
            format!("unknown method {method:?}"),
        )),
    }
}

/// Sends events as notifications until the run has ended, or is paused with nothing left
/// running; then answers with the status and the last sequence number sent.
fn follow(
    brain: &Brain,
    run_id: &str,
    mut since: i64,
    notes: &Notifier,
) -> Result<EventsResult, Error> {
    let wf = brain.workflows();
    loop {
        // Read the generation first, so an event committed after the read below wakes us.
        let generation = wf.event_generation();
        let (events, status) = wf.events(run_id, since, 1000)?;
        for e in &events {
            since = e.seq;
            let _ = notes.send(protocol::notification(
                protocol::WORKFLOW_EVENT,
                &EventWire::from(e),
            ));
        }
        let settled = match status.as_str() {
            "running" => false,
            "paused" => !wf.is_active(run_id),
            _ => true,
        };
        if events.is_empty() && (settled || wf.is_stopping()) {
            return Ok(EventsResult {
                events: Vec::new(),
                status,
                last_seq: Some(since),
            });
        }
        if events.is_empty() {
            wf.wait_for_events(generation, Duration::from_millis(500));
        }
    }
}
