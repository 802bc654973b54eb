//! Wire types of the `workflow.*` methods, and their conversions from the engine's rows.
//!
//! Workflow documents, params, vars and step payloads are JSON by nature (the workflow
//! document model), so they cross as `Value`; everything around them is typed here.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::workflow::journal::{RunRow, StepRow, WaitRow};
use crate::workflow::triggers::Trigger;
use crate::workflow::{Event, RunView};

/// `workflow.run`: a document inline or a file the daemon reads (exactly one).
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// A `brain/1` workflow document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
    /// An absolute path to a workflow document the daemon can read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Values for the document's declared params.
    #[serde(default)]
    pub params: Map<String, Value>,
    /// Plan the run: graph and file writes are shown, not made.
    #[serde(default)]
    pub dry_run: bool,
    /// Lower limits for this run (never higher than the daemon's).
    #[serde(default)]
    pub limits: Value,
    /// VL's `RunParams.nodes`: the only step ids to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nodes: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunStarted {
    pub run_id: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunIdParams {
    pub run_id: String,
}

#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// Only runs in this status (`running`, `paused`, `completed`, `failed`, `cancelled`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ResumeParams {
    pub run_id: String,
    /// The paused step's wait (see `waits` in `workflow.get`).
    pub wait_id: String,
    /// Idempotency key: a repeated request id answers the first outcome.
    pub request_id: String,
    #[serde(default = "yes")]
    pub approved: bool,
    #[serde(default)]
    pub payload: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// The outcome of a resume, as recorded with the wait (a repeated request gets the same).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ResumeResult {
    pub run_id: String,
    pub wait_id: String,
    pub request_id: String,
    /// `approved` or `denied`.
    pub outcome: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventsParams {
    pub run_id: String,
    /// Only events after this sequence number.
    #[serde(default)]
    pub since: i64,
    /// Stream events as `workflow.event` notifications until the run stops moving.
    #[serde(default)]
    pub follow: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenParams {
    pub run_id: String,
    pub wait_id: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TokenResult {
    pub token: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct CancelResult {
    pub run_id: String,
    pub status: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerAddParams {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub definition: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    pub event: String,
    pub pattern: String,
    #[serde(default)]
    pub params: Map<String, Value>,
    #[serde(default)]
    pub in_root: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerNameParams {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TriggerRemoved {
    pub name: String,
    pub removed: bool,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TriggerWire {
    pub name: String,
    pub workflow: String,
    pub definition_hash: String,
    pub event: String,
    pub pattern: String,
    pub params: Value,
    pub enabled: bool,
    pub in_root: bool,
    pub created_by: String,
    pub created_at: String,
    pub last_fired_at: Option<String>,
}

impl From<&Trigger> for TriggerWire {
    fn from(t: &Trigger) -> Self {
        TriggerWire {
            name: t.name.clone(),
            workflow: t.workflow.clone(),
            definition_hash: t.definition_hash.clone(),
            event: t.event.clone(),
            pattern: t.pattern.clone(),
            params: t.params.clone(),
            enabled: t.enabled,
            in_root: t.in_root,
            created_by: t.created_by.clone(),
            created_at: t.created_at.clone(),
            last_fired_at: t.last_fired_at.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct TriggerList {
    pub triggers: Vec<TriggerWire>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct EventWire {
    pub run_id: String,
    pub seq: i64,
    pub ts: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub step_id: Option<String>,
    pub step_key: Option<String>,
    pub payload: Value,
}

impl From<&Event> for EventWire {
    fn from(e: &Event) -> Self {
        EventWire {
            run_id: e.run_id.clone(),
            seq: e.seq,
            ts: e.ts.clone(),
            kind: e.kind.clone(),
            step_id: e.step_id.clone(),
            step_key: e.step_key.clone(),
            payload: e.payload.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct EventsResult {
    pub events: Vec<EventWire>,
    pub status: String,
    /// With `follow`: the last sequence number sent as a notification.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seq: Option<i64>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunSummary {
    pub run_id: String,
    pub name: String,
    pub status: String,
    pub dry_run: bool,
    pub trigger: Option<Value>,
    pub created_at: String,
    pub finished_at: Option<String>,
}

impl From<RunRow> for RunSummary {
    fn from(r: RunRow) -> Self {
        RunSummary {
            run_id: r.id,
            name: r.name,
            status: r.status,
            dry_run: r.dry_run,
            trigger: r.trigger,
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunList {
    pub runs: Vec<RunSummary>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WaitWire {
    pub wait_id: String,
    pub step_id: String,
    pub step_key: String,
    pub kind: String,
    pub reason: Option<String>,
    pub preview: Option<Value>,
    pub status: String,
    pub expires_at: Option<String>,
    pub created_at: String,
    pub resolved_at: Option<String>,
    pub resolved_by: Option<String>,
}

impl From<&WaitRow> for WaitWire {
    fn from(w: &WaitRow) -> Self {
        WaitWire {
            wait_id: w.id.clone(),
            step_id: w.step_id.clone(),
            step_key: w.step_key.clone(),
            kind: w.kind.clone(),
            reason: w.reason.clone(),
            preview: w.preview.clone(),
            status: w.status.clone(),
            expires_at: w.expires_at.clone(),
            created_at: w.created_at.clone(),
            resolved_at: w.resolved_at.clone(),
            resolved_by: w.resolved_by.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct StepWire {
    pub step_key: String,
    pub step_id: String,
    pub status: String,
    pub attempt: i64,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<Value>,
}

impl From<&StepRow> for StepWire {
    fn from(s: &StepRow) -> Self {
        StepWire {
            step_key: s.step_key.clone(),
            step_id: s.step_id.clone(),
            status: s.status.clone(),
            attempt: s.attempt,
            started_at: s.started_at.clone(),
            finished_at: s.finished_at.clone(),
            error: s.error.clone(),
        }
    }
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RunWire {
    pub run_id: String,
    pub name: String,
    pub definition_hash: String,
    pub status: String,
    pub dry_run: bool,
    pub params: Value,
    pub vars: Value,
    pub workspace: String,
    pub trigger: Option<Value>,
    pub actor_id: String,
    pub error: Option<Value>,
    pub limits: Value,
    pub waits: Vec<WaitWire>,
    pub steps: Vec<StepWire>,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
}

impl From<&RunView> for RunWire {
    fn from(v: &RunView) -> Self {
        let r = &v.run;
        RunWire {
            run_id: r.id.clone(),
            name: r.name.clone(),
            definition_hash: r.definition_hash.clone(),
            status: r.status.clone(),
            dry_run: r.dry_run,
            params: r.params.clone(),
            vars: r.vars.clone(),
            workspace: r.workspace.clone(),
            trigger: r.trigger.clone(),
            actor_id: r.actor_id.clone(),
            error: r.error.clone(),
            limits: r.limits.clone(),
            waits: v.waits.iter().map(Into::into).collect(),
            steps: v.steps.iter().map(Into::into).collect(),
            created_at: r.created_at.clone(),
            updated_at: r.updated_at.clone(),
            finished_at: r.finished_at.clone(),
        }
    }
}
