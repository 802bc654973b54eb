//! The one integration-test binary: every test here drives the real `brain` binary.

mod daemon;
mod embed;
mod harness;
mod hostile_files;
mod identity;
mod ingest;
mod layering;
mod search;
mod workflow;
