//! The `workflow.*` socket methods: decode params, call the façade, encode wire shapes.
//!
//! Kept apart from `server` so the workflow surface is one file; runs on the server's blocking
//! threads like every other method.

use serde_json::Value;

use super::protocol::{self, ValidateResult, WorkflowSourceParams};
use super::server::Notifier;
use crate::brain::Brain;
use crate::error::{Error, Kind};

/// Reads the document a request names: inline, or a file the daemon reads.
fn document(definition: Option<Value>, path: Option<String>) -> Result<Value, Error> {
    match (definition, path) {
        (Some(d), None) => Ok(d),
        (None, Some(p)) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| Error::new(Kind::InvalidParams, format!("cannot read {p}: {e}")))?;
            serde_json::from_str(&text)
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
    _notes: &Notifier,
) -> Result<Value, Error> {
    match method {
        "workflow.validate" => {
            let p: WorkflowSourceParams = protocol::params(method, params)?;
            let doc = document(p.definition, p.path)?;
            let report = brain.workflow_validate(&doc);
            to_value(ValidateResult::from_report(report, p.strict))
        }
        _ => Err(Error::new(
            Kind::MethodNotFound,
            format!("unknown method {method:?}"),
        )),
    }
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, Error> {
    serde_json::to_value(v)
        .map_err(|e| Error::new(Kind::Internal, format!("cannot encode result: {e}")))
}
