//! Command-line definitions and the client side of every subcommand.
//!
//! Architecture Invariant: client commands reach the daemon only through `rpc::client`; they
//! never open the store. The daemon itself and offline maintenance (`identity migrate`) are
//! dispatched by `main.rs` to the library directly.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

use crate::config::{self, Overrides};
use crate::identity::{self, UserId};
use crate::rpc::client::{Client, ClientError};
use crate::rpc::protocol::{StatusWire, UserListResult};

#[derive(Debug, Parser)]
#[command(
    name = "brain",
    version,
    about = "A personal knowledge-graph brain",
    propagate_version = true
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Config file [default: $XDG_CONFIG_HOME/brain/config.toml]
    #[arg(long, global = true, env = "BRAIN_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [default: $XDG_DATA_HOME/brain]
    #[arg(long, global = true, env = "BRAIN_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Unix socket [default: $XDG_RUNTIME_DIR/brain.sock, else DATA_DIR/brain.sock]
    #[arg(long, global = true, env = "BRAIN_SOCKET", value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// The e-mail of the user the daemon acts as [default: $USER@localhost]
    #[arg(long, global = true, env = "BRAIN_USER_EMAIL", value_name = "EMAIL")]
    pub user_email: Option<String>,
}

impl GlobalArgs {
    pub fn overrides(&self) -> Overrides {
        Overrides {
            config: self.config.clone(),
            data_dir: self.data_dir.clone(),
            socket: self.socket.clone(),
            user_email: self.user_email.clone(),
            users_file: None,
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground
    Daemon {
        /// A users file whose ids the automatic identity migration honours
        #[arg(long, env = "BRAIN_USERS_FILE", value_name = "FILE")]
        users_file: Option<PathBuf>,
    },
    /// Show what the daemon knows
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Stop the daemon
    Stop,
    /// User identities
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Users known to the store
    #[command(subcommand)]
    User(UserCommand),
}

#[derive(Debug, Subcommand)]
pub enum IdentityCommand {
    /// Print the stable user id for an e-mail address
    Id { email: String },
    /// Rewrite e-mail identities in a store (and users file) to stable user ids; offline
    Migrate {
        /// The SQLite store (ours or an ltcai-style one)
        #[arg(long, value_name = "FILE")]
        store: PathBuf,
        /// A users file (JSON object keyed by e-mail)
        #[arg(long, value_name = "FILE")]
        users: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// List users
    List {
        #[arg(long)]
        json: bool,
    },
}

/// Exit code when no daemon answers, so scripts can tell "not running" from "failed".
pub const EXIT_NO_DAEMON: u8 = 3;

/// Prints `e` and maps it to an exit code.
pub fn report_client_error(e: &ClientError) -> ExitCode {
    eprintln!("brain: {e}");
    match e {
        ClientError::NoDaemon { .. } => ExitCode::from(EXIT_NO_DAEMON),
        _ => ExitCode::FAILURE,
    }
}

/// `brain identity id EMAIL`: computed locally, so it works without a daemon.
pub fn identity_id(email: &str) -> ExitCode {
    if !identity::is_email(email) {
        eprintln!("brain: {email:?} is not an e-mail address");
        return ExitCode::FAILURE;
    }
    println!("{}", UserId::for_email(email));
    ExitCode::SUCCESS
}

/// Runs a client subcommand against the daemon.
pub fn run_client(global: &GlobalArgs, command: &Command) -> ExitCode {
    let socket = match config::resolve_socket(&global.overrides()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("brain: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = Client::connect(&socket).and_then(|mut client| match command {
        Command::Status { json } => status(&mut client, *json),
        Command::Stop => {
            client.call("daemon.shutdown", json!({}))?;
            println!("daemon at {} is stopping", socket.display());
            Ok(())
        }
        Command::User(UserCommand::List { json }) => user_list(&mut client, *json),
        Command::Daemon { .. } | Command::Identity(_) => {
            unreachable!("dispatched by main before connecting")
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report_client_error(&e),
    }
}

fn print_json(v: &Value) -> Result<(), ClientError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| ClientError::Protocol(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn status(client: &mut Client, as_json: bool) -> Result<(), ClientError> {
    let v = client.call("daemon.status", json!({}))?;
    if as_json {
        return print_json(&v);
    }
    let s: StatusWire =
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))?;
    println!(
        "brain {} running (pid {}, up {})",
        s.version,
        s.pid,
        humantime::format_duration(std::time::Duration::from_secs(s.uptime_secs as u64))
    );
    println!("data dir  {}", s.data_dir);
    println!(
        "store     {} ({}, schema {})",
        s.store_path,
        human_bytes(s.store_bytes),
        s.schema_version
    );
    println!("user      {} ({})", s.user_email, s.user_id);
    println!("users     {}", s.counts.users);
    println!("nodes     {}", join_counts(&s.counts.nodes));
    println!("edges     {}", join_counts(&s.counts.edges));
    println!("sources   {}", join_counts(&s.counts.sources));
    Ok(())
}

fn user_list(client: &mut Client, as_json: bool) -> Result<(), ClientError> {
    let v = client.call("user.list", json!({}))?;
    if as_json {
        return print_json(&v);
    }
    let list: UserListResult =
        serde_json::from_value(v).map_err(|e| ClientError::Protocol(e.to_string()))?;
    for u in list.users {
        println!("{}  {}", u.id, u.email);
    }
    Ok(())
}

fn join_counts(m: &std::collections::BTreeMap<String, i64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
