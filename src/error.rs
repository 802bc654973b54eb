//! The product-wide error-code table.
//!
//! Every error that reaches a client has a stable snake_case `kind` (the contract; messages may
//! change) and a JSON-RPC code: the reserved -32700..-32603 for protocol faults, -32000..-32099
//! for ours. Engine modules keep their own `thiserror` enums and map into [`Error`] here.

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The line was not JSON.
    ParseError,
    /// JSON, but not a JSON-RPC 2.0 request.
    InvalidRequest,
    MethodNotFound,
    InvalidParams,
    Internal,
    /// A frame longer than the configured limit.
    FrameTooLarge,
    /// The store failed (I/O, corruption, a full disk).
    StoreError,
    NodeNotFound,
    NotFound,
    /// A write that must create something found it there (`note.write` in `create` mode, a
    /// backup file).
    AlreadyExists,
    Io,
    ShuttingDown,
    /// The peer on the socket is another user.
    PermissionDenied,
    /// A capacity limit is reached (connections, calls in flight); the message names the
    /// setting. Retrying later can succeed.
    ServerBusy,
    /// A request ran past its time budget, or a connection sat idle past its timeout.
    Timeout,
    /// A search mode needs an embedding model and none is loaded.
    ModelUnavailable,
    /// The search index failed (I/O, a full disk, corruption).
    IndexError,
    /// A search ran past its time budget (`[search] query_timeout_ms`).
    QueryTimeout,
    /// A workflow document has validation errors.
    WorkflowInvalid,
    RunNotFound,
    RunNotPaused,
    WaitNotFound,
    /// A resume with a new request id on a wait that was already resolved.
    WaitAlreadyResolved,
    TokenMismatch,
    WaitExpired,
    PayloadInvalid,
}

impl Kind {
    pub const ALL: &[Kind] = &[
        Kind::ParseError,
        Kind::InvalidRequest,
        Kind::MethodNotFound,
        Kind::InvalidParams,
        Kind::Internal,
        Kind::FrameTooLarge,
        Kind::StoreError,
        Kind::NodeNotFound,
        Kind::NotFound,
        Kind::AlreadyExists,
        Kind::Io,
        Kind::ShuttingDown,
        Kind::PermissionDenied,
        Kind::ServerBusy,
        Kind::Timeout,
        Kind::ModelUnavailable,
        Kind::IndexError,
        Kind::QueryTimeout,
        Kind::WorkflowInvalid,
        Kind::RunNotFound,
        Kind::RunNotPaused,
        Kind::WaitNotFound,
        Kind::WaitAlreadyResolved,
        Kind::TokenMismatch,
        Kind::WaitExpired,
        Kind::PayloadInvalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ParseError => "parse_error",
            Kind::InvalidRequest => "invalid_request",
            Kind::MethodNotFound => "method_not_found",
            Kind::InvalidParams => "invalid_params",
            Kind::Internal => "internal",
            Kind::FrameTooLarge => "frame_too_large",
            Kind::StoreError => "store_error",
            Kind::NodeNotFound => "node_not_found",
            Kind::NotFound => "not_found",
            Kind::AlreadyExists => "already_exists",
            Kind::Io => "io_error",
            Kind::ShuttingDown => "shutting_down",
            Kind::PermissionDenied => "permission_denied",
            Kind::ServerBusy => "server_busy",
            Kind::Timeout => "timeout",
            Kind::ModelUnavailable => "model_unavailable",
            Kind::IndexError => "index_error",
            Kind::QueryTimeout => "query_timeout",
            Kind::WorkflowInvalid => "workflow_invalid",
            Kind::RunNotFound => "run_not_found",
            Kind::RunNotPaused => "run_not_paused",
            Kind::WaitNotFound => "wait_not_found",
            Kind::WaitAlreadyResolved => "wait_already_resolved",
            Kind::TokenMismatch => "token_mismatch",
            Kind::WaitExpired => "wait_expired",
            Kind::PayloadInvalid => "payload_invalid",
        }
    }

    pub fn code(self) -> i64 {
        match self {
            Kind::ParseError => -32700,
            Kind::InvalidRequest | Kind::FrameTooLarge => -32600,
            Kind::MethodNotFound => -32601,
            Kind::InvalidParams => -32602,
            Kind::Internal => -32603,
            Kind::StoreError => -32000,
            Kind::NodeNotFound => -32001,
            Kind::NotFound => -32002,
            Kind::AlreadyExists => -32030,
            Kind::Io => -32003,
            Kind::ShuttingDown => -32004,
            Kind::PermissionDenied => -32005,
            Kind::ServerBusy => -32006,
            Kind::Timeout => -32007,
            Kind::ModelUnavailable => -32020,
            Kind::IndexError => -32021,
            Kind::QueryTimeout => -32022,
            Kind::WorkflowInvalid => -32010,
            Kind::RunNotFound => -32011,
            Kind::RunNotPaused => -32012,
            Kind::WaitNotFound => -32013,
            Kind::WaitAlreadyResolved => -32014,
            Kind::TokenMismatch => -32015,
            Kind::WaitExpired => -32016,
            Kind::PayloadInvalid => -32017,
        }
    }
}

/// An error as the façade reports it: a kind from the table plus a human message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: Kind,
    pub message: String,
}

impl Error {
    pub fn new(kind: Kind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<crate::store::StoreError> for Error {
    fn from(e: crate::store::StoreError) -> Error {
        Error::new(Kind::StoreError, e.to_string())
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Error {
        Error::new(Kind::StoreError, format!("store query failed: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn kinds_are_unique_snake_case_and_codes_in_range() {
        let mut seen = HashSet::new();
        for k in Kind::ALL {
            let s = k.as_str();
            assert!(seen.insert(s), "duplicate kind {s}");
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s}");
            let c = k.code();
            assert!(
                (-32700..=-32600).contains(&c) || (-32099..=-32000).contains(&c),
                "{s} {c}"
            );
        }
    }
}
