//! brain: a personal knowledge-graph daemon.
//!
//! The library holds everything; the `brain` binary only parses arguments and calls in here.
//! Layering (enforced by `tests/layering.rs`): `cli` talks to the daemon through `rpc::client`
//! only; `rpc::server` calls the `brain` façade; the engine modules (`store`, `identity`, ...)
//! know nothing about sockets or JSON-RPC.
// Denied, not forbidden: one module (`embed::int8`, the int8 matrix kernel) needs vector
// loads and stores through pointers, measured at twice the f32 embedding rate; it allows
// unsafe for itself and says why each block holds.
#![deny(unsafe_code)]

pub mod bench;
pub mod brain;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod doctor;
pub mod embed;
pub mod error;
pub mod eval;
pub mod graph;
pub mod identity;
pub mod ingest;
pub mod mcp;
pub mod memory;
pub mod rpc;
pub mod search;
pub mod store;
pub mod supervise;
pub mod workflow;
