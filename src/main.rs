//! The `brain` binary: parse arguments, set up logging, call the library, map errors to exit
//! codes. Nothing else lives here.

use std::process::ExitCode;

use anyhow::Context;
use brain::cli::{BenchCommand, Cli, Command, EvalCommand, IdentityCommand};
use brain::{config, daemon, identity};
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

fn main() -> ExitCode {
    quiet_on_closed_stdout();
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    // Only a flag is refused on client commands: the variable may be set for the daemon's sake
    // in the shell every command runs from.
    cli.global.user_email_on_command_line =
        matches.value_source("user_email") == Some(ValueSource::CommandLine);
    init_tracing();
    match &cli.command {
        Command::Daemon { users_file } => {
            settle_allocator();
            brain::memory::set_release_hook(trim_heap);
            report(run_daemon(&cli, users_file.clone()))
        }
        Command::Identity(IdentityCommand::Id { email }) => brain::cli::identity_id(email),
        Command::Identity(IdentityCommand::Migrate { store, users, json }) => {
            let opts = identity::migrate::Options {
                store: store.clone(),
                users: users.clone(),
            };
            match identity::migrate::run(&opts) {
                Ok(report) => {
                    if *json {
                        match serde_json::to_string_pretty(&report) {
                            Ok(s) => println!("{s}"),
                            Err(e) => return report_err(anyhow::anyhow!(e)),
                        }
                    } else {
                        println!("{report}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => report_err(anyhow::Error::new(e)),
            }
        }
        Command::Eval(EvalCommand::Beir {
            dir,
            mode,
            model,
            split,
            run_file,
            graph,
            limit,
            sweep,
            work_dir,
            json,
        }) => {
            let run = || -> anyhow::Result<()> {
                let config = config::resolve(&cli.global.overrides()).ok();
                let base = config.as_ref().map(|c| c.search_tuning).unwrap_or_default();
                let mut tunings = Vec::new();
                for s in sweep {
                    let parts: Vec<f32> = s
                        .split(':')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .map_err(|_| anyhow::anyhow!("--sweep takes K:WB:WD, not {s:?}"))?;
                    let [k, wb, wd] = parts[..] else {
                        anyhow::bail!("--sweep takes K:WB:WD, not {s:?}");
                    };
                    tunings.push(brain::search::Tuning {
                        rrf_k: k,
                        weight_bm25: wb,
                        weight_dense: wd,
                        ..base
                    });
                }
                let opts = brain::eval::beir::Options {
                    dir: dir.clone(),
                    mode: brain::search::Mode::parse(mode)?,
                    model: model.clone(),
                    split: split.clone(),
                    run_file: run_file.clone(),
                    graph: *graph,
                    tuning: base,
                    limit_queries: *limit,
                    sweep: tunings,
                    work_dir: work_dir.clone(),
                };
                let report = brain::eval::beir::run(&opts)?;
                print_eval(&report, *json)
            };
            report(run())
        }
        Command::Eval(EvalCommand::Questions {
            file,
            folder,
            model,
            limit,
            work_dir,
            json,
        }) => {
            let run = || -> anyhow::Result<()> {
                let config = config::resolve(&cli.global.overrides()).ok();
                let opts = brain::eval::questions::Options {
                    file: file.clone(),
                    folder: folder.clone(),
                    model: model.clone(),
                    tuning: config.as_ref().map(|c| c.search_tuning).unwrap_or_default(),
                    limit_questions: *limit,
                    work_dir: work_dir.clone(),
                };
                let report = brain::eval::questions::run(&opts)?;
                print_eval(&report, *json)
            };
            report(run())
        }
        Command::Bench(BenchCommand::Search {
            data,
            chunks,
            queries,
            model,
            json,
        }) => {
            let opts = brain::bench::SearchBench {
                data: data.clone(),
                chunks: *chunks,
                queries: *queries,
                model: model.clone(),
            };
            report(brain::bench::search(&opts).and_then(|r| {
                if *json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    println!("{r}");
                }
                Ok(())
            }))
        }
        Command::Bench(BenchCommand::Embed {
            dir,
            model,
            texts,
            threads,
            precision,
            json,
        }) => {
            let opts = brain::bench::EmbedBench {
                model: model.clone(),
                corpus: dir.clone(),
                texts: *texts,
                threads: *threads,
                precision: *precision,
            };
            report(brain::bench::embed(&opts).and_then(|r| {
                if *json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    println!("{r}");
                }
                Ok(())
            }))
        }
        Command::Completions { shell } => brain::cli::completions(*shell),
        Command::Man => brain::cli::man(),
        Command::Service(cmd) => brain::cli::service::run(&cli.global, cmd),
        Command::Doctor { json } => brain::doctor::run(&cli.global.overrides(), *json),
        other => brain::cli::run_client(&cli.global, other),
    }
}

/// glibc's malloc tunables the daemon runs with, unless the environment sets them already.
/// By default glibc raises its mmap and trim thresholds as large blocks are freed, after which
/// freed memory stays in the heap: after a cold ingest of a 6,500-note vault the daemon kept
/// ~97 MiB resident instead of ~66 MiB, at the same speed. A fixed trim threshold (which also
/// fixes the mmap threshold) gives freed memory back to the system. Eight arenas, not glibc's
/// eight per core: an ingest allocates on about six threads at once (parsing on every core,
/// the writer, the text index and tantivy's), and with two arenas they queued on the arenas'
/// locks. On a 94 MB docs folder eight took the ingest from 9.2–10.3 s to 7.8–8.2 s, peak RSS
/// from 156–158 to 168–181 MiB, and left idle RSS where it was (39–46 MiB).
const MALLOC_TUNABLES: &[(&str, &str)] = &[
    ("MALLOC_ARENA_MAX", "8"),
    ("MALLOC_TRIM_THRESHOLD_", "131072"),
];

/// glibc reads its tunables from the environment once, before `main`; so the daemon sets any
/// that are missing and executes itself again (same process id, arguments and descriptors).
/// If that fails it carries on with the defaults.
fn settle_allocator() {
    use std::os::unix::process::CommandExt;
    let missing: Vec<_> = MALLOC_TUNABLES
        .iter()
        .filter(|(k, _)| std::env::var_os(k).is_none())
        .collect();
    if missing.is_empty() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1));
    for (k, v) in missing {
        cmd.env(k, v);
    }
    let err = cmd.exec();
    tracing::debug!(error = %err, "could not restart with malloc tunables; running with defaults");
}

/// Returns the free pages inside glibc's heaps to the system: after a large ingest the idle
/// daemon otherwise keeps ~13 MiB of them resident (measured on obsidian-hub), because glibc
/// trims a heap only from its top.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim takes a plain integer, touches only the allocator's own state under
    // its own locks, and is documented safe to call from any thread at any time.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

fn run_daemon(cli: &Cli, users_file: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let mut overrides = cli.global.overrides();
    overrides.users_file = users_file;
    let config = config::resolve(&overrides).context("invalid configuration")?;
    daemon::run(&config)?;
    Ok(())
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report_err(e),
    }
}

fn report_err(e: anyhow::Error) -> ExitCode {
    eprintln!("brain: {e:#}");
    ExitCode::FAILURE
}

/// A closed stdout (`brain sources | head -1`) ends the command quietly and successfully.
/// Rust ignores SIGPIPE, so the first print to a closed pipe panics with this message wherever
/// it happens; catching that once here spares every print its own check.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("failed printing to stdout") && msg.contains("Broken pipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

/// Logs go to stderr, filtered by `BRAIN_LOG` (else `RUST_LOG`, else `info`), coloured only
/// on a terminal and without `NO_COLOR`: a log file or the journal gets plain text.
fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = std::env::var("BRAIN_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| "info".into());
    let filter = EnvFilter::try_new(&filter).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(brain::cli::color_on(&std::io::stderr()))
        .init();
}

/// An eval report as the person asked for it: JSON, or the table its `Display` prints.
fn print_eval(
    report: &(impl serde::Serialize + std::fmt::Display),
    json: bool,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        println!("{report}");
    }
    Ok(())
}
