//! The one integration-test binary: every test here drives the real `brain` binary.

mod compat;
mod daemon;
mod embed;
mod harness;
mod hostile_conn;
mod hostile_files;
mod hostile_search;
mod identity;
mod ingest;
mod layering;
mod ranking;
mod roots;
mod search;
mod store;
mod workflow;
