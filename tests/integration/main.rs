//! The one integration-test binary: every test here drives the real `brain` binary.

mod agents;
mod cli;
mod cli_doctor;
mod cli_readme;
mod cli_service;
mod compat;
mod daemon;
mod embed;
mod harness;
mod history;
mod hostile_conn;
mod hostile_files;
mod hostile_search;
mod identity;
mod ingest;
mod layering;
mod mcp;
mod ranking;
mod roots;
mod search;
mod store;
mod workflow;
mod workflow_runs;
mod workflow_vl;
