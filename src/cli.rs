//! Command-line definitions and the client side of every subcommand.
//!
//! Architecture Invariant: client commands reach the daemon only through `rpc::client`; they
//! never open the store. The daemon itself and offline maintenance (`identity migrate`) are
//! dispatched by `main.rs` to the library directly.

pub mod workflow;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub use self::workflow::WorkflowCommand;
use crate::config::{self, Overrides};
use crate::identity::{self, UserId};
use crate::rpc::client::{
    Client, ClientError, DEFAULT_TIMEOUT, RemoteError, connect_stream, io_error,
};
use crate::rpc::protocol::{
    CompactResult, ModelListResult, ModelWire, NodeWire, ProgressWire, ProvenanceWire, PurgedWire,
    ReindexResult, RootWire, SearchResultWire, SourceListResult, StatusWire, SubgraphWire,
    SyncReportWire, TitleHitWire, UserListResult, WatchListResult, WatchRemoveResult,
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
    /// The e-mail of the user the daemon acts as [default: $USER@localhost]
    #[arg(long, global = true, env = "BRAIN_USER_EMAIL", value_name = "EMAIL")]
    pub user_email: Option<String>,
    /// Seconds a client command waits for the daemon, to connect and for each answer
    /// (`--follow` and `--wait` wait without limit) [default: 30]
    #[arg(long, global = true, env = "BRAIN_TIMEOUT", value_name = "SECS", value_parser = timeout_secs)]
    pub timeout: Option<Duration>,
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
    /// Stop the daemon
    Stop,
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
        /// Only sources under this root
        #[arg(long, value_name = "PATH", value_parser = absolute_path)]
        root: Option<String>,
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
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
    #[arg(short, long, default_value_t = 10)]
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
        #[arg(long)]
        json: bool,
    },
    /// Find nodes by title or alias
    Search {
        query: String,
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
    /// Nodes linked to a node
    Neighbors {
        id: String,
        #[arg(long, value_parser = ["out", "in", "both"], default_value = "both")]
        direction: String,
        /// Follow only edges of this type (repeatable)
        #[arg(long = "edge-type", value_name = "TYPE")]
        edge_types: Vec<String>,
        #[arg(long, value_name = "N")]
        depth: Option<u32>,
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Nodes that link to a node
    Backlinks {
        id: String,
        #[arg(long)]
        json: bool,
    },
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
    if let Command::Workflow(cmd) = command {
        return self::workflow::run(&socket, timeout, cmd);
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
        Command::Stop => {
            client.call("daemon.shutdown", json!({}))?;
            println!("daemon at {} is stopping", socket.display());
            Ok(())
        }
        Command::User(UserCommand::List { json }) => user_list(&mut client, *json),
        Command::Watch(WatchCommand::Add { path, json }) => {
            watch_change(&mut client, "watch.add", path, *json)
        }
        Command::Watch(WatchCommand::Remove {
            path,
            purge: false,
            json,
        }) => watch_change(&mut client, "watch.remove", path, *json),
        Command::Watch(WatchCommand::Remove {
            path,
            purge: true,
            json,
        }) => {
            // Grows with the store and sends nothing until done: no timeout, as the daemon gives
            // it none.
            client.set_timeout(None)?;
            let v = client.call("watch.remove", json!({ "path": path, "purge": true }))?;
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
            let v = client.call("store.compact", json!({}))?;
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
        Command::Watch(WatchCommand::List { json }) => watch_list(&mut client, *json),
        Command::Sources {
            status,
            root,
            limit,
            json,
        } => {
            let params = json!({ "status": status, "root": root, "limit": limit });
            sources(&mut client, params, *json)
        }
        Command::Node(NodeCommand::Get { by, json }) => {
            let params = json!({ "id": by.id, "path": by.path, "title": by.title });
            node_get(&mut client, params, *json)
        }
        Command::Node(NodeCommand::Search { query, limit, json }) => node_search(
            &mut client,
            json!({ "query": query, "limit": limit }),
            *json,
        ),
        Command::Graph(GraphCommand::Neighbors {
            id,
            direction,
            edge_types,
            depth,
            limit,
            json,
        }) => {
            let params = json!({
                "id": id, "direction": direction, "edge_types": edge_types,
                "depth": depth, "limit": limit,
            });
            subgraph(&mut client, "graph.neighbors", params, *json)
        }
        Command::Graph(GraphCommand::Backlinks { id, json }) => {
            subgraph(&mut client, "graph.backlinks", json!({ "id": id }), *json)
        }
        Command::Search(args) => search(&mut client, args),
        Command::Reindex { json } => {
            // Grows with the store and sends nothing until done: no timeout, as the daemon gives
            // it none.
            client.set_timeout(None)?;
            let v = client.call("search.reindex", json!({}))?;
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
            let v = client.call(
                "models.add",
                json!({ "name": name, "path": path, "link": link, "activate": activate }),
            )?;
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
            let v = client.call("models.use", json!({ "name": name }))?;
            if *json {
                return print_json(&v);
            }
            println!("model {name} is active; chunks are embedded for it in the background");
            Ok(())
        }
        Command::Models(ModelsCommand::List { json }) => {
            let v = client.call("models.list", json!({}))?;
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
        | Command::Eval(_)
        | Command::Bench(_)
        | Command::Workflow(_) => {
            unreachable!("dispatched before connecting")
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report_client_error(&e),
    }
}

/// Builds `search.query` parameters from the command line.
pub fn search_params(args: &SearchArgs) -> Result<Value, ClientError> {
    let mut props = serde_json::Map::new();
    for p in &args.props {
        let Some((k, v)) = p.split_once('=') else {
            return Err(ClientError::Usage(format!(
                "--prop takes KEY=VALUE, not {p:?}"
            )));
        };
        props.insert(k.trim().to_owned(), Value::String(v.trim().to_owned()));
    }
    Ok(json!({
        "query": args.query,
        "mode": args.mode,
        "k": args.k,
        "filters": {
            "tags": args.tags,
            "path_prefix": args.path,
            "kinds": args.kinds,
            "since": args.since,
            "until": args.until,
            "props": props,
        },
        "graph": args.graph,
        "explain": args.explain,
        "group": if args.chunks { "chunk" } else { "note" },
    }))
}

fn search(client: &mut Client, args: &SearchArgs) -> Result<(), ClientError> {
    let v = client.call("search.query", search_params(args)?)?;
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
    let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
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
    println!(
        "watcher   {} ({} roots, {} queued)",
        s.watcher.state,
        s.watcher.roots.len(),
        s.watcher.queue_depth
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
    println!(
        "index     {} ({} chunks)",
        s.search.index_state, s.search.indexed_chunks
    );
    if let Some(d) = &s.search.last_damage {
        println!("          last damage: {d}");
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

fn decode<T: DeserializeOwned>(method: &str, v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v).map_err(|e| ClientError::Protocol(format!("{method}: {e}")))
}

fn watch_change(
    client: &mut Client,
    method: &str,
    path: &str,
    as_json: bool,
) -> Result<(), ClientError> {
    let v = client.call(method, json!({ "path": path }))?;
    if as_json {
        return print_json(&v);
    }
    let root: RootWire = decode(method, v)?;
    // The answer describes the root as it was, so the verb comes from the request.
    let done = if method == "watch.add" {
        "watching"
    } else {
        "stopped watching"
    };
    println!("{done} {}", root.path);
    Ok(())
}

fn watch_list(client: &mut Client, as_json: bool) -> Result<(), ClientError> {
    let v = client.call("watch.list", json!({}))?;
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
    let io = |source| io_error(socket, "ingest.path", Some(timeout), source);
    let mut stream = connect_stream(socket, Some(timeout))?;
    let req =
        json!({ "jsonrpc": "2.0", "id": 1, "method": "ingest.path", "params": { "path": path } });
    let mut line = serde_json::to_vec(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io)?;

    let bar = (!as_json).then(progress_bar);
    let mut reader = BufReader::new(stream);
    let result = loop {
        let mut buf = String::new();
        if reader.read_line(&mut buf).map_err(io)? == 0 {
            return Err(ClientError::Closed);
        }
        let mut msg: Value =
            serde_json::from_str(&buf).map_err(|e| ClientError::Protocol(e.to_string()))?;
        if msg.get("id").is_none_or(Value::is_null) && msg.get("method").is_some() {
            if msg["method"] != "ingest.progress" {
                continue;
            }
            let params = msg["params"].take();
            if let Some(bar) = &bar {
                let p: ProgressWire = decode("ingest.progress", params)?;
                bar.set_length(p.total);
                bar.set_position(p.done);
                bar.set_message(p.path);
            } else {
                print_event("progress", params)?;
            }
            continue;
        }
        if let Some(bar) = &bar {
            bar.finish_and_clear();
        }
        break answer_result(msg)?;
    };
    if as_json {
        return print_event("done", result);
    }
    let r: SyncReportWire = decode("ingest.path", result)?;
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
    obj.insert("event".into(), json!(event));
    if let Value::Object(fields) = fields {
        obj.extend(fields);
    }
    let s = serde_json::to_string(&obj).map_err(|e| ClientError::Protocol(e.to_string()))?;
    println!("{s}");
    Ok(())
}

/// The result of an answer, or the daemon's error as `ClientError::Rpc`.
fn answer_result(mut answer: Value) -> Result<Value, ClientError> {
    if let Some(err) = answer.get_mut("error") {
        let data = err.get_mut("data").map(Value::take).unwrap_or(Value::Null);
        return Err(ClientError::Rpc(Box::new(RemoteError {
            code: err.get("code").and_then(Value::as_i64).unwrap_or(0),
            kind: data
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
            message: err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            data,
        })));
    }
    answer
        .get_mut("result")
        .map(Value::take)
        .ok_or_else(|| ClientError::Protocol("answer without result or error".into()))
}

fn sources(client: &mut Client, params: Value, as_json: bool) -> Result<(), ClientError> {
    let v = client.call("source.list", params)?;
    if as_json {
        return print_json(&v);
    }
    let list: SourceListResult = decode("source.list", v)?;
    let shown = list.sources.len();
    for s in list.sources {
        let reason = s.reason.as_deref().unwrap_or("-");
        println!("{:<9} {:<16} {}", s.status, reason, s.path);
    }
    println!("{shown} of {}", list.total);
    Ok(())
}

fn node_get(client: &mut Client, params: Value, as_json: bool) -> Result<(), ClientError> {
    let v = client.call("node.get", params)?;
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

fn node_search(client: &mut Client, params: Value, as_json: bool) -> Result<(), ClientError> {
    let v = client.call("node.search_title", params)?;
    if as_json {
        return print_json(&v);
    }
    #[derive(serde::Deserialize)]
    struct Hits {
        hits: Vec<TitleHitWire>,
    }
    let found: Hits = decode("node.search_title", v)?;
    for h in found.hits {
        println!(
            "{:.3}  {}  {}",
            h.score,
            h.title.as_deref().unwrap_or("-"),
            h.path.as_deref().unwrap_or("-")
        );
    }
    Ok(())
}

fn subgraph(
    client: &mut Client,
    method: &str,
    params: Value,
    as_json: bool,
) -> Result<(), ClientError> {
    let v = client.call(method, params)?;
    if as_json {
        return print_json(&v);
    }
    let g: SubgraphWire = decode(method, v)?;
    for n in &g.nodes {
        println!(
            "{}  {}  {}  {}",
            n.kind,
            n.title.as_deref().unwrap_or("-"),
            n.path.as_deref().unwrap_or("-"),
            n.id
        );
    }
    println!("{} edges", g.edges.len());
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
