//! Workflows: durable JSON documents whose steps search, read and write the graph.
//!
//! `model` is the document, `validate` says whether it can run, `expr` evaluates its CEL
//! expressions, `vars` and `files` own variable writes and workspace paths. Architecture
//! Invariant: nothing here knows about sockets, JSON-RPC or tokio; the engine runs on its own
//! threads and talks to callers through the `Brain` façade.

mod effect;
pub mod engine;
pub mod expr;
pub mod files;
pub mod journal;
pub mod llm;
pub mod model;
mod run;
pub mod step_error;
pub mod steps;
pub mod triggers;
pub mod validate;
pub mod vars;

pub use engine::{Engine, EngineConfig, Limits, ResumeRequest, RunId, RunOptions, RunView};
pub use journal::Event;
pub use validate::{Diagnostic, Report, Runners, Severity, validate};
