//! JSON-RPC 2.0 over a Unix socket, one JSON object per line.
//!
//! `protocol` holds the wire types (the only serialized shapes clients see), `server` accepts
//! connections and dispatches to the [`crate::brain::Brain`] façade, `client` is the blocking
//! client the CLI uses.

pub mod client;
pub mod protocol;
pub mod server;
pub mod workflow;
