//! Command-line definitions and the client side of every subcommand.
//!
//! Architecture Invariant: client commands reach the daemon only through `rpc::client`; they
//! never open the store. The daemon itself and offline maintenance (`identity migrate`) are
//! dispatched by `main.rs` to the library directly.

pub mod export;
pub mod graph;
pub mod service;
pub mod workflow;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::Value;

pub use self::workflow::WorkflowCommand;
use crate::config::{self, Overrides};
use crate::identity::{self, UserId};
use crate::rpc::client::{Client, ClientError, DEFAULT_TIMEOUT};
use crate::rpc::protocol::methods::{self as m, IngestPath, StoreBackup};
use crate::rpc::protocol::write::BackupParams;
use crate::rpc::protocol::{
    BacklinksParams, DirectionWire, ModelAddParams, ModelNameParams, ModelUseResult,
    NeighborsParams, NoParams, NodeGetParams, SearchFilters, SearchParams, SearchTitleParams,
    SourceListParams, WatchRemoveParams,
};
use crate::rpc::protocol::{
    CompactResult, INGEST_PROGRESS, Method, ModelListResult, ModelWire, NodeWire, PathParams,
    ProgressWire, ProvenanceWire, PurgedWire, ReindexResult, RootWire, SearchResultWire,
    SourceListResult, StatusWire, SyncReportWire, TitleHitWire, UserListResult, WatchListResult,
    WatchRemoveResult,
};

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
    /// The e-mail of the user the daemon acts as (for `daemon` and `service install`; refused
    /// by client commands) [default: $USER@localhost]
    #[arg(long, global = true, env = "BRAIN_USER_EMAIL", value_name = "EMAIL")]
    pub user_email: Option<String>,
    /// Seconds a client command waits for the daemon, to connect and for each answer
    /// (`--follow` and `--wait` wait without limit) [default: 30]
    #[arg(long, global = true, env = "BRAIN_TIMEOUT", value_name = "SECS", value_parser = timeout_secs)]
    pub timeout: Option<Duration>,
    /// Whether `--user-email` was given as a flag (not by the environment): client commands
    /// refuse it, as only the daemon acts as a user. Set by the binary from clap's matches.
    #[arg(skip)]
    pub user_email_on_command_line: bool,
}

fn timeout_secs(s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= MAX_TIMEOUT_SECS => {
            Ok(Duration::from_secs_f64(v))
        }
        _ => Err(format!(
            "must be a number of seconds above 0 and at most {MAX_TIMEOUT_SECS}"
        )),
    }
}

/// A day: longer waits are better served by `--follow`/`--wait`, and the cap keeps a typo from
/// overflowing the clock.
const MAX_TIMEOUT_SECS: f64 = 86_400.0;

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
    /// Stop the daemon and wait until it has exited
    Stop {
        /// Return once the daemon has been asked to stop, without waiting for it to exit
        #[arg(long)]
        no_wait: bool,
    },
    /// Check the store, index, vectors, model, permissions, roots and disk; exit 0 only when
    /// all is well
    Doctor {
        #[arg(long)]
        json: bool,
    },
    /// Run the daemon as a systemd user service
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Print a shell completion script: `brain completions bash > ~/.local/share/bash-completion/completions/brain`
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff): `brain man | man -l -`
    Man,
    /// User identities
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// Users known to the store
    #[command(subcommand)]
    User(UserCommand),
    /// Folders the daemon keeps in sync
    #[command(subcommand)]
    Watch(WatchCommand),
    /// Index a file or folder now, showing progress
    Ingest {
        #[arg(value_parser = absolute_path)]
        path: String,
        /// One JSON object a line: progress events, then the report
        #[arg(long)]
        json: bool,
    },
    /// Files the daemon has seen, with their status
    Sources {
        /// Only sources with this status
        #[arg(long, value_name = "STATUS")]
        status: Option<String>,
        /// Only sources under this folder (a root or any folder inside one)
        #[arg(long, value_name = "PATH", value_parser = absolute_path)]
        root: Option<String>,
        /// At most N sources [default: 1000]
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Skip the first N sources (the next page starts where the last one ended)
        #[arg(long, value_name = "N", default_value_t = 0)]
        offset: usize,
        #[arg(long)]
        json: bool,
    },
    /// Nodes of the graph
    #[command(subcommand)]
    Node(NodeCommand),
    /// Walk the graph
    #[command(subcommand)]
    Graph(GraphCommand),
    /// Search notes by words and meaning
    Search(SearchArgs),
    /// Give the store's free pages back to the file system
    Compact {
        #[arg(long)]
        json: bool,
    },
    /// Write a consistent copy of the store to FILE while the daemon runs
    Backup {
        #[arg(value_parser = absolute_path)]
        file: String,
        #[arg(long)]
        json: bool,
    },
    /// Write the whole graph (nodes, edges, citations) as it is, or was at --as-of
    Export {
        /// RFC 3339 UTC time, e.g. 2026-12-07T10:00:00Z
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long, default_value = "jsonl", value_parser = self::export::FORMATS)]
        format: String,
        /// Write to FILE instead of standard output
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
    /// Serve MCP over stdin/stdout, answering from the running daemon
    Mcp,
    /// Rebuild the search index from the store
    Reindex {
        #[arg(long)]
        json: bool,
    },
    /// Embedding models for search by meaning
    #[command(subcommand)]
    Models(ModelsCommand),
    /// Measure retrieval quality; runs in-process, no daemon needed
    #[command(subcommand)]
    Eval(EvalCommand),
    /// Measure speed
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Durable JSON workflows
    #[command(subcommand)]
    Workflow(WorkflowCommand),
}

#[derive(Debug, Args)]
pub struct SearchArgs {
    pub query: String,
    /// bm25, dense or hybrid [default: hybrid when vectors exist, else bm25]
    #[arg(long, value_parser = ["bm25", "dense", "hybrid"])]
    pub mode: Option<String>,
    /// Number of hits
    #[arg(
        short = 'k',
        long = "limit",
        visible_alias = "k",
        value_name = "N",
        default_value_t = 10
    )]
    pub k: usize,
    /// Only notes with this tag or a tag below it (repeatable; any of them)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only files under this path
    #[arg(long, value_name = "PATH", value_parser = absolute_path)]
    pub path: Option<String>,
    /// Only nodes of this kind or file type: note, file, markdown, text, code, html (repeatable)
    #[arg(long = "kind", value_name = "KIND")]
    pub kinds: Vec<String>,
    /// Modified at or after: RFC 3339, YYYY-MM-DD, Unix seconds, or an age like 7d
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Modified at or before
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Front-matter property equals value (repeatable): --prop status=done
    #[arg(long = "prop", value_name = "KEY=VALUE")]
    pub props: Vec<String>,
    /// Boost and add notes linked to the top hits
    #[arg(long)]
    pub graph: bool,
    /// One hit per chunk instead of the best chunk per note
    #[arg(long)]
    pub chunks: bool,
    /// Show each signal's rank and score
    #[arg(long)]
    pub explain: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ModelsCommand {
    /// Copy (or link) a model folder into the data dir
    Add {
        name: String,
        #[arg(value_parser = absolute_path)]
        path: String,
        /// Link to the folder instead of copying it
        #[arg(long)]
        link: bool,
        /// Make it the active model (the first model added always is)
        #[arg(long)]
        activate: bool,
        #[arg(long)]
        json: bool,
    },
    /// Make a model the active one; chunks are re-embedded in the background
    Use {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List models
    List {
        #[arg(long)]
        json: bool,
    },
    /// Delete a model that is not the active one (a linked model loses only its link)
    Remove {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Write the systemd user unit (~/.config/systemd/user/brain.service), enable and start it
    Install,
    /// Stop and disable the service and delete its unit
    Uninstall,
    /// Whether the unit is installed, enabled and running
    Status,
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Run a BEIR dataset (corpus.jsonl, queries.jsonl, qrels/SPLIT.tsv) on a throwaway store
    Beir {
        dir: PathBuf,
        #[arg(long, value_parser = ["bm25", "dense", "hybrid"], default_value = "bm25")]
        mode: String,
        /// Model folder for dense and hybrid
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        #[arg(long, default_value = "test")]
        split: String,
        /// Write a TREC run file (qid Q0 docid rank score tag), top 100 per query
        #[arg(long, value_name = "FILE")]
        run_file: Option<PathBuf>,
        /// Add graph proximity
        #[arg(long)]
        graph: bool,
        /// Only the first N queries
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Also score fusion settings RRF_K:W_BM25:W_DENSE (repeatable) on the same store
        #[arg(long, value_name = "K:WB:WD")]
        sweep: Vec<String>,
        /// Keep the store and vectors in DIR and reuse them next time (embed once)
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Ask a judged question set (JSON lines: question, answers) of a folder of notes, in every
    /// mode, with and without graph proximity, beside SQLite FTS5 with the porter stemmer
    Questions {
        file: PathBuf,
        /// The folder of notes the answers are paths in
        #[arg(long)]
        folder: PathBuf,
        /// Model folder; with it dense and hybrid are measured too
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        /// Only the first N questions
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Keep the store and vectors in DIR and reuse them next time (embed once)
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Latency of search.query through the socket over a generated corpus
    Search {
        /// Where to build (or reuse) the corpus and its store [default: a temporary folder]
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Chunks in the generated corpus
        #[arg(long, default_value_t = 100_000)]
        chunks: usize,
        /// Queries per mode
        #[arg(long, default_value_t = 200)]
        queries: usize,
        /// Model folder; with it dense and hybrid are measured too
        #[arg(long, value_name = "PATH")]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Embedding throughput on a BEIR corpus, against the machine's matrix-product rate
    Embed {
        /// BEIR dataset folder (with corpus.jsonl)
        dir: PathBuf,
        /// Model folder
        #[arg(long, value_name = "PATH")]
        model: PathBuf,
        /// Passages to embed (the corpus's first)
        #[arg(long, default_value_t = 1000)]
        texts: usize,
        /// Threads [default: those of the background embedding pool]
        #[arg(long)]
        threads: Option<usize>,
        /// f32 or int8 [default: int8 where the CPU has AVX-512 VNNI, else f32]
        #[arg(long, value_parser = parse_precision)]
        precision: Option<crate::embed::Precision>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum WatchCommand {
    /// Start watching a folder
    Add {
        #[arg(value_parser = absolute_path)]
        path: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop watching a folder; its notes are retired (kept as history)
    Remove {
        #[arg(value_parser = absolute_path)]
        path: String,
        /// Delete the folder's notes and their history from the store instead (also for a
        /// folder removed earlier); `brain compact` then gives the space back
        #[arg(long)]
        purge: bool,
        #[arg(long)]
        json: bool,
    },
    /// List watched folders
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Show one node and where it came from
    Get {
        #[command(flatten)]
        by: NodeSelector,
        /// The version that held at this time (RFC 3339, e.g. 2026-12-07T10:00:00Z)
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        /// A retired node answers with its last version
        #[arg(long)]
        include_retired: bool,
        #[arg(long)]
        json: bool,
    },
    /// Find nodes by title or alias, tolerating typos; tags and workflow-written nodes too
    Search {
        query: String,
        /// At most N hits [default: 20]
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

/// Exactly one way to name a node.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct NodeSelector {
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long, value_parser = absolute_path)]
    pub path: Option<String>,
    #[arg(long)]
    pub title: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum GraphCommand {
    /// Nodes linked to a node, with each edge's type and direction
    Neighbors {
        #[command(flatten)]
        node: GraphTarget,
        #[arg(long, value_parser = ["out", "in", "both"], default_value = "both")]
        direction: String,
        /// Follow only edges of this type (repeatable)
        #[arg(long = "edge-type", value_name = "TYPE")]
        edge_types: Vec<String>,
        #[arg(long, value_name = "N")]
        depth: Option<u32>,
        /// At most N nodes [default: 100]
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// The graph as it was at this time (RFC 3339, e.g. 2026-12-07T10:00:00Z)
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Nodes that link to a node, with each edge's type
    Backlinks {
        #[command(flatten)]
        node: GraphTarget,
        /// At most N linking nodes [default: 100]
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// The graph as it was at this time (RFC 3339, e.g. 2026-12-07T10:00:00Z)
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

/// The node a graph command starts from: an id (positional or `--id`), a file, or a title.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct GraphTarget {
    /// The node's id
    #[arg(value_name = "ID")]
    pub node_id: Option<String>,
    /// The node's id
    #[arg(long)]
    pub id: Option<String>,
    /// The note or file at this path
    #[arg(long, value_parser = absolute_path)]
    pub path: Option<String>,
    /// A note's title, file name or alias
    #[arg(long)]
    pub title: Option<String>,
}

/// Paths are resolved here, against the caller's working directory, not the daemon's.
fn absolute_path(s: &str) -> Result<String, String> {
    let p = std::path::absolute(s).map_err(|e| format!("cannot resolve {s:?}: {e}"))?;
    p.into_os_string()
        .into_string()
        .map_err(|p| format!("{} is not valid UTF-8", Path::new(&p).display()))
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
/// Exit code for a command line that is refused, as clap uses for its own usage errors.
pub const EXIT_USAGE: u8 = 2;
/// How often `brain stop` looks whether the daemon has exited.
const STOP_POLL: Duration = Duration::from_millis(50);

/// Whether to colour what goes to `stream`: only a terminal, and not when `NO_COLOR` is set to
/// anything but the empty string (<https://no-color.org>).
pub fn color_on(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// `brain completions SHELL`: the script, from the clap definitions.
pub fn completions(shell: clap_complete::Shell) -> ExitCode {
    use clap::CommandFactory;
    clap_complete::generate(shell, &mut Cli::command(), "brain", &mut std::io::stdout());
    ExitCode::SUCCESS
}

/// `brain man`: the manual page in roff, from the clap definitions.
pub fn man() -> ExitCode {
    use clap::CommandFactory;
    let mut out = std::io::stdout().lock();
    match clap_mangen::Man::new(Cli::command()).render(&mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brain: cannot write the manual: {e}");
            ExitCode::FAILURE
        }
    }
}

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
    let timeout = global.timeout.unwrap_or(DEFAULT_TIMEOUT);
    if global.user_email_on_command_line {
        eprintln!(
            "brain: --user-email is a daemon setting (the user the daemon acts as); give it to `brain daemon`, not to a client command"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    if let Command::Workflow(cmd) = command {
        return self::workflow::run(&socket, timeout, cmd);
    }
    if let Command::Mcp = command {
        return crate::mcp::serve_stdio(socket, timeout);
    }
    if let Command::Export {
        as_of,
        format,
        output,
    } = command
    {
        let Some(format) = self::export::Format::parse(format) else {
            eprintln!("brain: unknown export format {format:?}");
            return ExitCode::from(EXIT_USAGE);
        };
        return self::export::run(
            &socket,
            timeout,
            as_of.as_deref(),
            format,
            output.as_deref(),
        );
    }
    // Ingest reads progress notifications, which `Client::call` skips, so it owns its stream.
    if let Command::Ingest { path, json } = command {
        return match ingest(&socket, timeout, path, *json) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => report_client_error(&e),
        };
    }
    let connect = || Client::connect_timeout(&socket, Some(timeout));
    let result = connect().and_then(|mut client| match command {
        Command::Status { json } => status(&mut client, *json),
        Command::Stop { no_wait } => stop(&mut client, &socket, timeout, *no_wait),
        Command::User(UserCommand::List { json }) => user_list(&mut client, *json),
        Command::Watch(WatchCommand::Add { path, json }) => {
            watch_change(&mut client, path, true, *json)
        }
        Command::Watch(WatchCommand::Remove {
            path,
            purge: false,
            json,
        }) => watch_change(&mut client, path, false, *json),
        Command::Watch(WatchCommand::Remove {
            path,
            purge: true,
            json,
        }) => {
            // Grows with the store and sends nothing until done: no timeout, as the daemon gives
            // it none.
            client.set_timeout(None)?;
            let v = client.call_method::<m::WatchRemove>(&WatchRemoveParams {
                path: path.clone(),
                purge: true,
            })?;
            if *json {
                return print_json(&v);
            }
            let r: WatchRemoveResult = decode("watch.remove", v)?;
            let p = r.purged.unwrap_or(PurgedWire {
                nodes: 0,
                edges: 0,
                sources: 0,
            });
            println!(
                "stopped watching {} and deleted {} nodes, {} edges and {} files' records",
                r.root.path, p.nodes, p.edges, p.sources
            );
            Ok(())
        }
        Command::Compact { json } => {
            // Grows with the store and sends nothing until done: no timeout, as the daemon gives
            // it none.
            client.set_timeout(None)?;
            let v = client.call_method::<m::StoreCompact>(&NoParams {})?;
            if *json {
                return print_json(&v);
            }
            let r: CompactResult = decode("store.compact", v)?;
            println!(
                "store: {:.1} MiB before, {:.1} MiB after",
                r.bytes_before as f64 / 1_048_576.0,
                r.bytes_after as f64 / 1_048_576.0
            );
            Ok(())
        }
        Command::Backup { file, json } => {
            // Copies the whole store and sends nothing until done, like compact.
            client.set_timeout(None)?;
            let r = client.request::<StoreBackup>(&BackupParams { path: file.clone() })?;
            if *json {
                let v =
                    serde_json::to_value(&r).map_err(|e| ClientError::Protocol(e.to_string()))?;
                return print_json(&v);
            }
            println!("store copied to {} ({} bytes)", r.path, r.bytes);
            Ok(())
        }
        Command::Watch(WatchCommand::List { json }) => watch_list(&mut client, *json),
        Command::Sources {
            status,
            root,
            limit,
            offset,
            json,
        } => {
            let params = SourceListParams {
                status: status.clone(),
                root: root.clone(),
                limit: *limit,
                offset: Some(*offset),
            };
            sources(&mut client, &params, *offset, *json)
        }
        Command::Node(NodeCommand::Get {
            by,
            as_of,
            include_retired,
            json,
        }) => {
            let params = NodeGetParams {
                id: by.id.clone(),
                path: by.path.clone(),
                title: by.title.clone(),
                as_of: as_of.clone(),
                include_retired: *include_retired,
            };
            node_get(&mut client, &params, *json)
        }
        Command::Node(NodeCommand::Search { query, limit, json }) => {
            let params = SearchTitleParams {
                query: query.clone(),
                limit: *limit,
            };
            node_search(&mut client, query, &params, *json)
        }
        Command::Graph(GraphCommand::Neighbors {
            node,
            direction,
            edge_types,
            depth,
            limit,
            as_of,
            json,
        }) => {
            let start = self::graph::resolve(&mut client, node)?;
            let params = NeighborsParams {
                id: start.id.clone(),
                direction: direction_wire(direction)?,
                edge_types: edge_types.clone(),
                depth: *depth,
                limit: *limit,
                as_of: as_of.clone(),
            };
            self::graph::walk::<m::GraphNeighbors>(&mut client, &start, &params, *json)
        }
        Command::Graph(GraphCommand::Backlinks {
            node,
            limit,
            as_of,
            json,
        }) => {
            let start = self::graph::resolve(&mut client, node)?;
            let params = BacklinksParams {
                id: start.id.clone(),
                limit: *limit,
                as_of: as_of.clone(),
            };
            self::graph::walk::<m::GraphBacklinks>(&mut client, &start, &params, *json)
        }
        Command::Search(args) => search(&mut client, args),
        Command::Reindex { json } => {
            // Grows with the store and sends nothing until done: no timeout, as the daemon gives
            // it none.
            client.set_timeout(None)?;
            let v = client.call_method::<m::SearchReindex>(&NoParams {})?;
            if *json {
                return print_json(&v);
            }
            let r: ReindexResult = decode("search.reindex", v)?;
            println!("reindexed {} chunks in {:.1} s", r.chunks, r.secs);
            Ok(())
        }
        Command::Models(ModelsCommand::Add {
            name,
            path,
            link,
            activate,
            json,
        }) => {
            let v = client.call_method::<m::ModelsAdd>(&ModelAddParams {
                name: name.clone(),
                path: path.clone(),
                link: *link,
                activate: *activate,
            })?;
            if *json {
                return print_json(&v);
            }
            let m: ModelWire = decode("models.add", v)?;
            let how = if m.linked { "linked" } else { "copied" };
            let active = if m.active {
                "; active — chunks are being embedded in the background (`brain status`)"
            } else {
                ""
            };
            println!("model {} {how} to {}{active}", m.name, m.path);
            Ok(())
        }
        Command::Models(ModelsCommand::Use { name, json }) => {
            let list = client.request::<m::ModelsList>(&NoParams {})?;
            // Activating the active model again would only reload it.
            if list.models.iter().any(|m| m.active && m.name == *name) {
                if *json {
                    let same = ModelUseResult {
                        active: name.clone(),
                    };
                    let v = serde_json::to_value(same)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    return print_json(&v);
                }
                println!("model {name} is already active; nothing to re-embed");
                return Ok(());
            }
            let v = client.call_method::<m::ModelsUse>(&ModelNameParams { name: name.clone() })?;
            if *json {
                return print_json(&v);
            } else {
                println!("model {name} is active; chunks are embedded for it in the background (`brain status`)");
            }
            Ok(())
        }
        Command::Models(ModelsCommand::Remove { name, json }) => {
            let v = client.call_method::<m::ModelsRemove>(&ModelNameParams { name: name.clone() })?;
            if *json {
                return print_json(&v);
            }
            println!("model {name} removed");
            Ok(())
        }
        Command::Models(ModelsCommand::List { json }) => {
            let v = client.call_method::<m::ModelsList>(&NoParams {})?;
            if *json {
                return print_json(&v);
            }
            let list: ModelListResult = decode("models.list", v)?;
            if list.models.is_empty() {
                println!("no models; add one with `brain models add NAME PATH`");
            }
            for m in list.models {
                let mark = if m.active { "*" } else { " " };
                println!("{mark} {:<24} {}", m.name, m.path);
            }
            Ok(())
        }
        Command::Daemon { .. }
        | Command::Identity(_)
        | Command::Ingest { .. }
        | Command::Export { .. }
        | Command::Mcp
        | Command::Eval(_)
        | Command::Bench(_)
        | Command::Workflow(_)
        | Command::Doctor { .. }
        | Command::Service(_)
        | Command::Completions { .. }
        | Command::Man => {
            unreachable!("dispatched before connecting")
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report_client_error(&e),
    }
}

/// Builds `search.query` parameters from the command line.
pub fn search_params(args: &SearchArgs) -> Result<SearchParams, ClientError> {
    let mut props = std::collections::BTreeMap::new();
    for p in &args.props {
        let Some((k, v)) = p.split_once('=') else {
            return Err(ClientError::Usage(format!(
                "--prop takes KEY=VALUE, not {p:?}"
            )));
        };
        props.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
    }
    Ok(SearchParams {
        query: args.query.clone(),
        mode: args.mode.clone(),
        k: Some(args.k),
        filters: SearchFilters {
            tags: args.tags.clone(),
            path_prefix: args.path.clone(),
            kinds: args.kinds.clone(),
            since: args.since.clone().map(Value::String),
            until: args.until.clone().map(Value::String),
            props,
        },
        graph: args.graph,
        explain: args.explain,
        group: Some(if args.chunks { "chunk" } else { "note" }.to_owned()),
    })
}

/// `--direction` as the wire names it (clap has checked it is one of them).
fn direction_wire(d: &str) -> Result<DirectionWire, ClientError> {
    match d {
        "out" => Ok(DirectionWire::Out),
        "in" => Ok(DirectionWire::In),
        "both" => Ok(DirectionWire::Both),
        other => Err(ClientError::Usage(format!(
            "--direction is out, in or both, not {other:?}"
        ))),
    }
}

fn search(client: &mut Client, args: &SearchArgs) -> Result<(), ClientError> {
    let v = client.call_method::<m::SearchQuery>(&search_params(args)?)?;
    if args.json {
        return print_json(&v);
    }
    let r: SearchResultWire = decode("search.query", v)?;
    for w in &r.warnings {
        eprintln!("note: {w}");
    }
    if r.hits.is_empty() {
        println!("no hits ({} search)", r.mode);
        return Ok(());
    }
    let color = color_on(&std::io::stdout());
    for (i, h) in r.hits.iter().enumerate() {
        let heading = if h.heading_path.is_empty() {
            String::new()
        } else {
            format!(" › {}", h.heading_path.join(" › "))
        };
        println!("{:>2}. {}{heading}  [{:.4}]", i + 1, h.title, h.score);
        println!("    {}:{}-{}", h.path, h.lines[0], h.lines[1]);
        println!("    {}", render_snippet(&h.snippet, &h.highlights, color));
        if let Some(e) = &h.explain {
            let sig = |name: &str, s: &Option<crate::rpc::protocol::SignalWire>| {
                s.as_ref()
                    .map(|s| format!("{name} #{} ({:.4})", s.rank, s.score))
                    .unwrap_or_else(|| format!("{name} —"))
            };
            println!(
                "    explain: {}, {}, {}, fused {:.5}",
                sig("bm25", &e.bm25),
                sig("dense", &e.dense),
                sig("graph", &e.graph),
                e.fused
            );
        }
    }
    println!(
        "{} search, {} hits of {} candidates, {:.1} ms",
        r.mode,
        r.hits.len(),
        r.total,
        r.took_ms
    );
    Ok(())
}

/// One line of snippet with the matched words emphasized (bold on a terminal, `**` otherwise).
fn render_snippet(s: &str, highlights: &[[usize; 2]], color: bool) -> String {
    let (on, off) = if color {
        ("\x1b[1m", "\x1b[0m")
    } else {
        ("**", "**")
    };
    let mut out = String::with_capacity(s.len() + highlights.len() * 8);
    let mut at = 0;
    for [a, b] in highlights {
        let (a, b) = ((*a).min(s.len()), (*b).min(s.len()));
        if a < at || !s.is_char_boundary(a) || !s.is_char_boundary(b) {
            continue;
        }
        out.push_str(&s[at..a]);
        out.push_str(on);
        out.push_str(&s[a..b]);
        out.push_str(off);
        at = b;
    }
    out.push_str(&s[at..]);
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn print_json(v: &Value) -> Result<(), ClientError> {
    let s = serde_json::to_string_pretty(v).map_err(|e| ClientError::Protocol(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn status(client: &mut Client, as_json: bool) -> Result<(), ClientError> {
    let v = client.call_method::<m::DaemonStatus>(&NoParams {})?;
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
    println!(
        "watcher   {} ({} roots, {} queued{})",
        s.watcher.state,
        s.watcher.roots.len(),
        s.watcher.queue_depth,
        if s.watcher.busy { ", syncing" } else { "" }
    );
    for m in &s.watcher.missing {
        println!("          missing: {m} (its notes are kept until it is back)");
    }
    for u in &s.watcher.unwatched {
        println!("          unwatched: {u} (cannot be watched; changes there are seen on restart)");
    }
    if s.watcher.unwatched_count > s.watcher.unwatched.len() {
        println!(
            "          unwatched: {} more folders",
            s.watcher.unwatched_count - s.watcher.unwatched.len()
        );
    }
    if let Some(e) = &s.watcher.error {
        println!("          error: {e}");
    }
    let lag = (s.search.outbox_head - s.search.index_seq).max(0);
    println!(
        "index     {} ({} chunks, {})",
        s.search.index_state,
        s.search.indexed_chunks,
        if lag == 0 {
            "up to date".to_owned()
        } else {
            format!("{lag} changes behind")
        }
    );
    if let Some(d) = &s.search.last_damage {
        println!("          last damage: {d}");
    }
    match &s.search.model {
        None if s.search.model_state == "none" => {
            println!("model     none (search by words only; `brain models add NAME PATH`)")
        }
        None => println!("model     {}", s.search.model_state),
        Some(m) => println!("model     {m} ({})", s.search.model_state),
    }
    if s.search.model.is_some() {
        println!("embedded  {}", embedding_progress(client, &s)?);
    }
    for w in s.workers.iter().filter(|w| w.restarts > 0) {
        println!(
            "worker    {} restarted {} times; last panic: {}",
            w.name,
            w.restarts,
            w.last_panic.as_deref().unwrap_or("?")
        );
    }
    if let (Some(now), Some(peak)) = (s.memory.resident_bytes, s.memory.peak_resident_bytes) {
        println!(
            "memory    {} resident, {} at peak",
            human_bytes(now),
            human_bytes(peak)
        );
    }
    Ok(())
}

/// How long `brain status` watches embedding progress to tell its rate, when it is under way.
const RATE_SAMPLE: Duration = Duration::from_secs(1);

/// `done / total (pct)`, and while embedding is under way its rate and the time left, from a
/// second status taken [`RATE_SAMPLE`] later.
fn embedding_progress(client: &mut Client, s: &StatusWire) -> Result<String, ClientError> {
    let (done, total) = (s.search.embedded_chunks as u64, s.search.total_chunks);
    let pct = if total == 0 {
        100.0
    } else {
        done as f64 * 100.0 / total as f64
    };
    let mut line = format!("{done} / {total} chunks ({pct:.0}%)");
    if done >= total || s.search.model_state != "ready" {
        return Ok(line);
    }
    let started = std::time::Instant::now();
    std::thread::sleep(RATE_SAMPLE);
    let later = client.request::<m::DaemonStatus>(&NoParams {})?;
    let secs = started.elapsed().as_secs_f64();
    let gained = (later.search.embedded_chunks as u64).saturating_sub(done);
    if gained == 0 {
        line.push_str(", waiting");
        return Ok(line);
    }
    let rate = gained as f64 / secs;
    let left = total.saturating_sub(later.search.embedded_chunks as u64) as f64 / rate;
    line.push_str(&format!(
        ", {rate:.0} chunks/s, about {} left",
        humantime::format_duration(Duration::from_secs(left.ceil() as u64))
    ));
    Ok(line)
}

fn user_list(client: &mut Client, as_json: bool) -> Result<(), ClientError> {
    let v = client.call_method::<m::UserList>(&NoParams {})?;
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

fn decode<T: DeserializeOwned>(method: &str, v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Protocol(format!("{method}: {e}")))
}

fn watch_change(
    client: &mut Client,
    path: &str,
    add: bool,
    as_json: bool,
) -> Result<(), ClientError> {
    let path = path.to_owned();
    let v = if add {
        client.call_method::<m::WatchAdd>(&PathParams { path })?
    } else {
        client.call_method::<m::WatchRemove>(&WatchRemoveParams { path, purge: false })?
    };
    if as_json {
        return print_json(&v);
    }
    let root: RootWire = if add {
        decode(m::WatchAdd::NAME, v)?
    } else {
        decode::<WatchRemoveResult>(m::WatchRemove::NAME, v)?.root
    };
    // The answer describes the root as it was, so the verb comes from the request.
    let done = if add { "watching" } else { "stopped watching" };
    println!("{done} {}", root.path);
    Ok(())
}

fn watch_list(client: &mut Client, as_json: bool) -> Result<(), ClientError> {
    let v = client.call_method::<m::WatchList>(&NoParams {})?;
    if as_json {
        return print_json(&v);
    }
    let list: WatchListResult = decode("watch.list", v)?;
    if list.roots.is_empty() {
        println!("no watched folders");
    }
    for r in list.roots {
        let state = if r.watched { "watched" } else { "paused" };
        println!("{state:<8}  {}", r.path);
    }
    Ok(())
}

/// `brain ingest PATH`: one request, then progress notifications until the report arrives.
/// The timeout is on silence: a long ingest that keeps reporting progress is never cut off.
fn ingest(socket: &Path, timeout: Duration, path: &str, as_json: bool) -> Result<(), ClientError> {
    let mut client = Client::connect_timeout(socket, Some(timeout))?;
    let bar = (!as_json).then(progress_bar);
    let params = PathParams { path: path.into() };
    let result = client.call_method_streaming::<IngestPath>(&params, |method, params| {
        if method != INGEST_PROGRESS {
            return Ok(());
        }
        match &bar {
            Some(bar) => {
                let p: ProgressWire = decode(INGEST_PROGRESS, params)?;
                bar.set_length(p.total);
                bar.set_position(p.done);
                bar.set_message(p.path);
                Ok(())
            }
            None => print_event("progress", params),
        }
    });
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let result = result?;
    if as_json {
        return print_event("done", result);
    }
    let r: SyncReportWire = decode(IngestPath::NAME, result)?;
    println!(
        "indexed {}, unchanged {}, skipped {}, failed {}, deleted {}, moved {} in {} ms",
        r.indexed, r.unchanged, r.skipped, r.failed, r.deleted, r.moved, r.elapsed_ms
    );
    Ok(())
}

fn progress_bar() -> indicatif::ProgressBar {
    // Drawn to stderr, and hidden when stderr is not a terminal.
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} files {per_sec} {msg}")
    {
        bar.set_style(style);
    }
    bar
}

/// One line of `brain ingest --json`: `{"event": EVENT, ...fields}`.
fn print_event(event: &str, fields: Value) -> Result<(), ClientError> {
    let mut obj = serde_json::Map::new();
    obj.insert("event".into(), Value::String(event.to_owned()));
    if let Value::Object(fields) = fields {
        obj.extend(fields);
    }
    let s = serde_json::to_string(&obj).map_err(|e| ClientError::Protocol(e.to_string()))?;
    println!("{s}");
    Ok(())
}

fn sources(
    client: &mut Client,
    params: &SourceListParams,
    offset: usize,
    as_json: bool,
) -> Result<(), ClientError> {
    let v = client.call_method::<m::SourceList>(params)?;
    if as_json {
        return print_json(&v);
    }
    let list: SourceListResult = decode("source.list", v)?;
    let shown = list.sources.len();
    for s in list.sources {
        let reason = s.reason.as_deref().unwrap_or("-");
        println!("{:<9} {:<16} {}", s.status, reason, s.path);
    }
    let end = offset + shown;
    if shown == 0 {
        println!("none of {} (from {offset})", list.total);
    } else if (end as u64) < list.total {
        println!(
            "{}-{end} of {}; next page: --offset {end}",
            offset + 1,
            list.total
        );
    } else if offset > 0 {
        println!("{}-{end} of {}", offset + 1, list.total);
    } else {
        println!("{shown} of {}", list.total);
    }
    Ok(())
}

/// `brain stop`: asks the daemon to stop, then waits until its process has exited, and with it
/// its instance lock, so a `brain daemon` started next finds the data dir free.
fn stop(
    client: &mut Client,
    socket: &Path,
    timeout: Duration,
    no_wait: bool,
) -> Result<(), ClientError> {
    let pid = client.peer_pid();
    client.call_method::<m::DaemonShutdown>(&NoParams {})?;
    let Some(pid) = pid.filter(|_| !no_wait) else {
        println!("daemon is stopping");
        return Ok(());
    };
    let deadline = std::time::Instant::now() + timeout;
    while !exited(pid) {
        if std::time::Instant::now() >= deadline {
            return Err(ClientError::Timeout {
                socket: socket.to_owned(),
                what: format!(
                    "stop: pid {} is still finishing its work (wait longer with --timeout)",
                    pid.as_raw_nonzero()
                ),
                timeout,
            });
        }
        std::thread::sleep(STOP_POLL);
    }
    println!("daemon (pid {}) stopped", pid.as_raw_nonzero());
    Ok(())
}

/// Whether process `pid` has exited: it is gone, or a zombie, which has closed its files (the
/// instance lock among them) and waits only for its parent to collect its status.
fn exited(pid: rustix::process::Pid) -> bool {
    if rustix::process::test_kill_process(pid).is_err() {
        return true;
    }
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", pid.as_raw_nonzero()));
    match stat {
        // The state follows the command name, which is in parentheses and may hold any byte.
        Ok(s) => s
            .rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))),
        // Gone between the two looks; without /proc, trust the signal test alone.
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    }
}

fn node_get(client: &mut Client, params: &NodeGetParams, as_json: bool) -> Result<(), ClientError> {
    let v = client.call_method::<m::NodeGet>(params)?;
    if as_json {
        return print_json(&v);
    }
    let n: NodeWire = decode("node.get", v)?;
    println!("id     {}", n.id);
    println!("kind   {}", n.kind);
    println!("title  {}", n.title.as_deref().unwrap_or("-"));
    println!("path   {}", n.path.as_deref().unwrap_or("-"));
    for p in &n.provenance {
        println!("  {}", provenance_line(p));
    }
    Ok(())
}

/// `path:L1-L2 bytes B1..B2 HASH12 extractor@version [run=… step=…]`, leaving out what is unknown.
fn provenance_line(p: &ProvenanceWire) -> String {
    let mut parts = Vec::new();
    match (&p.path, p.lines) {
        (Some(path), Some([a, b])) => parts.push(format!("{path}:{a}-{b}")),
        (Some(path), None) => parts.push(path.clone()),
        (None, _) => {}
    }
    if let Some([a, b]) = p.bytes {
        parts.push(format!("bytes {a}..{b}"));
    }
    if let Some(h) = &p.content_hash {
        parts.push(h.chars().take(12).collect());
    }
    parts.push(format!("{}@{}", p.extractor, p.extractor_version));
    if let Some(r) = &p.run_id {
        parts.push(format!("run={r}"));
    }
    if let Some(s) = &p.step_key {
        parts.push(format!("step={s}"));
    }
    parts.join(" ")
}

fn node_search(
    client: &mut Client,
    query: &str,
    params: &SearchTitleParams,
    as_json: bool,
) -> Result<(), ClientError> {
    let v = client.call_method::<m::NodeSearchTitle>(params)?;
    if as_json {
        return print_json(&v);
    }
    #[derive(serde::Deserialize)]
    struct Hits {
        hits: Vec<TitleHitWire>,
    }
    let found: Hits = decode("node.search_title", v)?;
    if found.hits.is_empty() {
        println!("no node titled like {query:?}");
    }
    for h in found.hits {
        println!(
            "{:<11} {}  {}  {}",
            h.kind,
            h.title.as_deref().unwrap_or("-"),
            h.path.as_deref().unwrap_or("-"),
            h.id
        );
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

fn parse_precision(s: &str) -> Result<crate::embed::Precision, String> {
    crate::embed::Precision::parse(s).ok_or_else(|| format!("{s:?} is neither f32 nor int8"))
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
    fn node_get_takes_exactly_one_selector() {
        let parses = |args: &[&str]| Cli::try_parse_from(args).is_ok();
        assert!(parses(&["brain", "node", "get", "--id", "x"]));
        assert!(parses(&["brain", "node", "get", "--title", "Home"]));
        assert!(!parses(&["brain", "node", "get"]));
        assert!(!parses(&[
            "brain", "node", "get", "--id", "x", "--title", "y"
        ]));
    }

    #[test]
    fn one_name_for_one_idea() {
        let k = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Search(a)) => Some(a.k),
            _ => None,
        };
        assert_eq!(k(&["brain", "search", "x", "--limit", "3"]), Some(3));
        assert_eq!(k(&["brain", "search", "x", "-k", "4"]), Some(4));
        assert_eq!(k(&["brain", "search", "x", "--k", "5"]), Some(5));
        assert_eq!(k(&["brain", "search", "x"]), Some(10));
        let parses = |args: &[&str]| Cli::try_parse_from(args).is_ok();
        for cmd in [["graph", "backlinks"], ["graph", "neighbors"]] {
            let with = |extra: &[&str]| {
                let mut a = vec!["brain", cmd[0], cmd[1]];
                a.extend_from_slice(extra);
                parses(&a)
            };
            assert!(with(&["ID"]));
            assert!(with(&["--id", "x"]));
            assert!(with(&["--title", "Alpha"]));
            assert!(with(&["--path", "a.md"]));
            assert!(with(&["--title", "Alpha", "--limit", "5"]));
            assert!(!with(&[]));
            assert!(!with(&["ID", "--title", "Alpha"]));
        }
    }

    #[test]
    fn typos_get_a_suggestion() {
        let err = |args: &[&str]| Cli::try_parse_from(args).unwrap_err().to_string();
        assert!(err(&["brain", "serch", "x"]).contains("'search'"));
        assert!(err(&["brain", "status", "--jsn"]).contains("--json"));
    }

    #[test]
    fn paths_are_made_absolute() {
        let Cli { command, .. } = Cli::try_parse_from(["brain", "ingest", "notes"]).unwrap();
        let Command::Ingest { path, .. } = command else {
            panic!("parsed {command:?}");
        };
        assert!(Path::new(&path).is_absolute(), "{path}");
        assert!(path.ends_with("notes"), "{path}");
    }

    #[test]
    fn bytes_are_human() {
        assert_eq!(human_bytes(12), "12 B");
        assert_eq!(human_bytes(2048), "2.0 KiB");
        assert_eq!(human_bytes(5 * 1024 * 1024), "5.0 MiB");
    }
}
