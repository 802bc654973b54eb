//! A failed step: its kind (what `onError` handlers, `retry.on` and `_error.kind` see) and
//! whether trying again may help.
//!
//! The kinds are an enum so that what is retryable is decided in one place, by the kind, not by
//! matching strings where the error is handled. Their names are the stable strings documents
//! and events carry.

use serde_json::{Value, json};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorKind {
    ExpressionError,
    TypeError,
    InvalidInput,
    InvalidTarget,
    PathInvalid,
    PathOutsideGlobs,
    FileExists,
    Io,
    Store,
    Llm,
    Timeout,
    QueryTimeout,
    ModelUnavailable,
    NoRunner,
    LimitExceeded,
    ApprovalRequired,
    ApprovalDenied,
    WaitExpired,
    NodeNotFound,
    Internal,
    /// A kind from the rest of brain (`error::Kind`, e.g. `not_found`) or from an older journal,
    /// kept by its name.
    Other(String),
}

impl ErrorKind {
    pub fn as_str(&self) -> &str {
        match self {
            ErrorKind::ExpressionError => "expression_error",
            ErrorKind::TypeError => "type_error",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::InvalidTarget => "invalid_target",
            ErrorKind::PathInvalid => "path_invalid",
            ErrorKind::PathOutsideGlobs => "path_outside_globs",
            ErrorKind::FileExists => "file_exists",
            ErrorKind::Io => "io_error",
            ErrorKind::Store => "store_error",
            ErrorKind::Llm => "llm_error",
            ErrorKind::Timeout => "timeout",
            ErrorKind::QueryTimeout => "query_timeout",
            ErrorKind::ModelUnavailable => "model_unavailable",
            ErrorKind::NoRunner => "no_runner",
            ErrorKind::LimitExceeded => "limit_exceeded",
            ErrorKind::ApprovalRequired => "approval_required",
            ErrorKind::ApprovalDenied => "approval_denied",
            ErrorKind::WaitExpired => "wait_expired",
            ErrorKind::NodeNotFound => "node_not_found",
            ErrorKind::Internal => "internal",
            ErrorKind::Other(s) => s,
        }
    }

    pub fn parse(s: &str) -> ErrorKind {
        match s {
            "expression_error" => ErrorKind::ExpressionError,
            "type_error" => ErrorKind::TypeError,
            "invalid_input" => ErrorKind::InvalidInput,
            "invalid_target" => ErrorKind::InvalidTarget,
            "path_invalid" => ErrorKind::PathInvalid,
            "path_outside_globs" => ErrorKind::PathOutsideGlobs,
            "file_exists" => ErrorKind::FileExists,
            "io_error" => ErrorKind::Io,
            "store_error" => ErrorKind::Store,
            "llm_error" => ErrorKind::Llm,
            "timeout" => ErrorKind::Timeout,
            "query_timeout" => ErrorKind::QueryTimeout,
            "model_unavailable" => ErrorKind::ModelUnavailable,
            "no_runner" => ErrorKind::NoRunner,
            "limit_exceeded" => ErrorKind::LimitExceeded,
            "approval_required" => ErrorKind::ApprovalRequired,
            "approval_denied" => ErrorKind::ApprovalDenied,
            "wait_expired" => ErrorKind::WaitExpired,
            "node_not_found" => ErrorKind::NodeNotFound,
            "internal" => ErrorKind::Internal,
            other => ErrorKind::Other(other.to_owned()),
        }
    }

    /// Failures of something outside the run (disk, store, model server, a deadline) may pass;
    /// a wrong input or a refusal will fail the same way again.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            ErrorKind::Io | ErrorKind::Store | ErrorKind::Llm | ErrorKind::Timeout
        )
    }
}

impl PartialEq<&str> for ErrorKind {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepError {
    pub kind: ErrorKind,
    pub message: String,
    pub retryable: bool,
}

impl StepError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> StepError {
        StepError {
            retryable: kind.retryable(),
            kind,
            message: message.into(),
        }
    }

    pub fn to_json(&self) -> Value {
        json!({ "kind": self.kind.as_str(), "message": self.message, "retryable": self.retryable })
    }

    /// A failure as the journal recorded it; `retryable` is what was decided then.
    pub fn from_json(v: &Value) -> StepError {
        StepError {
            kind: ErrorKind::parse(v["kind"].as_str().unwrap_or("error")),
            message: v["message"].as_str().unwrap_or("").to_owned(),
            retryable: v["retryable"].as_bool().unwrap_or(false),
        }
    }
}

impl From<rusqlite::Error> for StepError {
    fn from(e: rusqlite::Error) -> Self {
        StepError::new(ErrorKind::Store, format!("store query failed: {e}"))
    }
}

impl From<crate::error::Error> for StepError {
    fn from(e: crate::error::Error) -> Self {
        StepError::new(ErrorKind::parse(e.kind.as_str()), e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_by_name() {
        for k in [
            ErrorKind::Io,
            ErrorKind::LimitExceeded,
            ErrorKind::Other("not_found".into()),
        ] {
            assert_eq!(ErrorKind::parse(k.as_str()), k);
        }
        assert!(ErrorKind::Llm.retryable() && !ErrorKind::InvalidInput.retryable());
    }
}
