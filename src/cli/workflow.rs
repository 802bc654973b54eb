//! `brain workflow …`: validate locally, everything else through the socket.
//!
//! Validation is pure, so `validate` works without a daemon; `run --wait` follows the run live,
//! one line per step (`--events`: every event), and exits with its outcome. Architecture Invariant: like the rest of `cli`, this
//! reaches the daemon only through `rpc::client`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{Map, Value};

use crate::rpc::client::{Client, ClientError};
use crate::rpc::protocol::methods as m;
use crate::rpc::protocol::workflow as wf;
use crate::rpc::protocol::{NoParams, ValidateResult};

/// Exit code of `run --wait` when the run paused and waits for a resume.
pub const EXIT_PAUSED: u8 = 4;

#[derive(Debug, Subcommand)]
pub enum WorkflowCommand {
    /// Check a workflow file and report every problem
    Validate {
        file: PathBuf,
        #[arg(long)]
        json: bool,
        /// Treat warnings as errors
        #[arg(long)]
        strict: bool,
    },
    /// Start a run; prints its id at once, or follows it with --wait
    Run {
        file: PathBuf,
        /// A parameter, NAME=VALUE (VALUE is JSON when it parses as JSON, else a string)
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Execute reads, plan writes, change nothing
        #[arg(long)]
        dry_run: bool,
        /// Follow the run until it ends or pauses, one line per step; exit with its outcome
        #[arg(long)]
        wait: bool,
        /// With --wait: print every event instead of one line per step
        #[arg(long, requires = "wait")]
        events: bool,
        #[arg(long)]
        json: bool,
    },
    /// Show a run: status, waits, vars
    Show {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// List runs, newest first
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        #[arg(long)]
        json: bool,
    },
    /// Resume a paused run
    Resume {
        run_id: String,
        /// The wait to resolve [default: the run's only open wait]
        wait_id: Option<String>,
        /// Deny instead of approve
        #[arg(long)]
        deny: bool,
        /// A JSON payload handed to the workflow
        #[arg(long, value_name = "JSON")]
        payload: Option<String>,
        /// Makes a retried resume return the first outcome [default: random]
        #[arg(long, value_name = "ID")]
        request_id: Option<String>,
        /// A token from `workflow.token`, checked against the wait (not needed on this socket)
        #[arg(
            long,
            value_name = "TOKEN",
            env = "BRAIN_WAIT_TOKEN",
            hide_env_values = true
        )]
        token: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a run
    Cancel {
        run_id: String,
        #[arg(long)]
        json: bool,
    },
    /// A run's events
    Events {
        run_id: String,
        #[arg(long, default_value_t = 0)]
        since: i64,
        /// Keep streaming until the run ends or pauses
        #[arg(long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Workflows attached to file events or schedules
    Triggers {
        #[arg(long)]
        json: bool,
    },
    /// Attach a workflow to files created or changed under a glob, to notes gaining a tag, or
    /// to a schedule
    TriggerAdd {
        name: String,
        file: PathBuf,
        /// file_created, file_changed, tag_added or schedule
        #[arg(long, value_parser = ["file_created", "file_changed", "tag_added", "schedule"])]
        on: String,
        /// A glob relative to the watched root, a glob over tag names for tag_added, or
        /// `every DURATION` for a schedule
        #[arg(long)]
        pattern: String,
        #[arg(long = "param", short = 'p', value_name = "NAME=VALUE")]
        params: Vec<String>,
        /// Run with the watched root as the workspace, so the workflow can read the file
        #[arg(long)]
        in_root: bool,
        #[arg(long)]
        json: bool,
    },
    /// Detach a trigger
    TriggerRemove {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

pub fn run(socket: &Path, timeout: Duration, cmd: &WorkflowCommand) -> ExitCode {
    if let WorkflowCommand::Validate { file, json, strict } = cmd {
        return validate(file, *json, *strict);
    }
    let result = Client::connect_timeout(socket, Some(timeout)).and_then(|mut c| match cmd {
        WorkflowCommand::Validate { .. } => unreachable!("handled above"),
        WorkflowCommand::Run {
            file,
            params,
            dry_run,
            wait,
            events,
            json,
        } => {
            let view = match (*wait, *events || *json) {
                (false, _) => None,
                (true, true) => Some(View::Events),
                (true, false) => Some(View::Steps),
            };
            run_workflow(&mut c, file, params, *dry_run, view, *json)
        }
        WorkflowCommand::Show { run_id, json } => {
            show(&mut c, run_id, *json).map(|_| ExitCode::SUCCESS)
        }
        WorkflowCommand::List {
            status,
            limit,
            json,
        } => list(&mut c, status.as_deref(), *limit, *json).map(|_| ExitCode::SUCCESS),
        WorkflowCommand::Resume {
            run_id,
            wait_id,
            deny,
            payload,
            request_id,
            token,
            json,
        } => {
            let payload: Value = match payload {
                Some(p) => serde_json::from_str(p)
                    .map_err(|e| ClientError::Protocol(format!("--payload is not JSON: {e}")))?,
                None => Value::Null,
            };
            let request_id = request_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
            // The wait is named below, from the run's open waits when not given.
            let body = wf::ResumeParams {
                run_id: run_id.clone(),
                wait_id: wait_id.clone().unwrap_or_default(),
                request_id,
                approved: !*deny,
                payload,
                token: token.clone(),
            };
            resume(&mut c, wait_id.is_some(), body, *json).map(|_| ExitCode::SUCCESS)
        }
        WorkflowCommand::Cancel { run_id, json } => {
            let v = c.call_method::<m::WorkflowCancel>(&run_ref(run_id))?;
            print(&v, *json, |v| {
                println!("run {} is {}", run_id, v["status"].as_str().unwrap_or("?"))
            })?;
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Events {
            run_id,
            since,
            follow,
            json,
        } => events(&mut c, run_id, *since, *follow, *json).map(|_| ExitCode::SUCCESS),
        WorkflowCommand::TriggerAdd {
            name,
            file,
            on,
            pattern,
            params,
            in_root,
            json,
        } => {
            let doc = read_doc(file).map_err(ClientError::Protocol)?;
            let v = c.call_method::<m::WorkflowTriggerAdd>(&wf::TriggerAddParams {
                name: name.clone(),
                definition: Some(doc),
                path: None,
                event: on.clone(),
                pattern: pattern.clone(),
                params: parse_params(params)?,
                in_root: *in_root,
            })?;
            print(&v, *json, |v| {
                println!(
                    "trigger {} runs {} on {} {}",
                    name,
                    v["workflow"].as_str().unwrap_or("?"),
                    on,
                    pattern
                )
            })?;
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::TriggerRemove { name, json } => {
            let v = c.call_method::<m::WorkflowTriggerRemove>(&wf::TriggerNameParams {
                name: name.clone(),
            })?;
            print(&v, *json, |_| println!("removed trigger {name}"))?;
            Ok(ExitCode::SUCCESS)
        }
        WorkflowCommand::Triggers { json } => {
            let v = c.call_method::<m::WorkflowTriggers>(&NoParams {})?;
            print(&v, *json, |v| {
                let list = v["triggers"].as_array().cloned().unwrap_or_default();
                if list.is_empty() {
                    println!("no triggers");
                }
                for t in list {
                    println!(
                        "{}  {}  {}  {}",
                        t["name"].as_str().unwrap_or("-"),
                        t["event"].as_str().unwrap_or("-"),
                        t["pattern"].as_str().unwrap_or("-"),
                        t["workflow"].as_str().unwrap_or("-")
                    );
                }
            })?;
            Ok(ExitCode::SUCCESS)
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => super::report_client_error(&e),
    }
}

fn print(v: &Value, as_json: bool, human: impl FnOnce(&Value)) -> Result<(), ClientError> {
    if as_json {
        let s =
            serde_json::to_string_pretty(v).map_err(|e| ClientError::Protocol(e.to_string()))?;
        println!("{s}");
    } else {
        human(v);
    }
    Ok(())
}

fn read_doc(file: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", file.display()))
}

fn validate(file: &Path, as_json: bool, strict: bool) -> ExitCode {
    let doc = match read_doc(file) {
        Ok(d) => d,
        Err(m) => {
            eprintln!("brain: {m}");
            return ExitCode::FAILURE;
        }
    };
    let runners = crate::workflow::Runners {
        llm: std::env::var_os("BRAIN_LLM_URL").is_some(),
    };
    let (report, _) = crate::workflow::validate(&doc, runners);
    let r = ValidateResult::from_report(report, strict);
    if as_json {
        match serde_json::to_string_pretty(&r) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("brain: {e}"),
        }
    } else {
        for d in r.errors.iter().chain(&r.warnings) {
            println!(
                "{}: {} [{}] {} at {}: {}",
                file.display(),
                d.severity,
                d.code,
                d.step_id.as_deref().unwrap_or("-"),
                if d.path.is_empty() { "/" } else { &d.path },
                d.message
            );
        }
        println!(
            "{}: {} ({} errors, {} warnings)",
            file.display(),
            if r.valid { "valid" } else { "invalid" },
            r.errors.len(),
            r.warnings.len()
        );
    }
    if r.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn parse_params(params: &[String]) -> Result<Map<String, Value>, ClientError> {
    let mut out = serde_json::Map::new();
    for p in params {
        let (k, v) = p
            .split_once('=')
            .ok_or_else(|| ClientError::Protocol(format!("--param {p:?} is not NAME=VALUE")))?;
        let v = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.to_owned()));
        out.insert(k.to_owned(), v);
    }
    Ok(out)
}

fn run_ref(run_id: &str) -> wf::RunIdParams {
    wf::RunIdParams {
        run_id: run_id.to_owned(),
    }
}

/// How `run --wait` shows a run it follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    /// Every event, as `workflow events` prints them.
    Events,
    /// One line per step, written when it ends.
    Steps,
}

fn run_workflow(
    c: &mut Client,
    file: &Path,
    params: &[String],
    dry_run: bool,
    view: Option<View>,
    as_json: bool,
) -> Result<ExitCode, ClientError> {
    let doc = read_doc(file).map_err(ClientError::Protocol)?;
    let v = c.call_method::<m::WorkflowRun>(&wf::RunParams {
        definition: Some(doc),
        params: parse_params(params)?,
        dry_run,
        ..Default::default()
    })?;
    let run_id = v["run_id"].as_str().unwrap_or_default().to_owned();
    let Some(view) = view else {
        print(&v, as_json, |_| println!("{run_id}"))?;
        return Ok(ExitCode::SUCCESS);
    };
    if !as_json {
        println!("run {run_id}");
    }
    let status = match view {
        View::Events => follow(c, &run_id, 0, &mut |e| print_event(e, as_json))?,
        View::Steps => {
            let mut lines = StepLines::default();
            follow(c, &run_id, 0, &mut |e| lines.event(e))?
        }
    };
    let run = c.call_method::<m::WorkflowGet>(&run_ref(&run_id))?;
    Ok(outcome(&run, &status, as_json))
}

/// Exit code and closing lines for a run that stopped moving.
fn outcome(run: &Value, status: &str, as_json: bool) -> ExitCode {
    let run_id = run["run_id"].as_str().unwrap_or("");
    if as_json {
        // After the event lines, the run itself (as `workflow.get` gives it).
        println!("{run}");
    } else {
        println!("{status}");
        if status == "paused" {
            for w in run["waits"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|w| w["status"] == "open")
            {
                println!(
                    "waiting at {} ({}): resume with `brain workflow resume {run_id} {}` (add --deny to refuse)",
                    w["step_id"].as_str().unwrap_or("?"),
                    w["reason"].as_str().unwrap_or("no reason given"),
                    w["wait_id"].as_str().unwrap_or("?")
                );
                // What is being approved, so the person can decide from here.
                match &w["preview"] {
                    Value::Null => {}
                    Value::String(s) => println!("preview: {s}"),
                    other => println!(
                        "preview:\n{}",
                        serde_json::to_string_pretty(other).unwrap_or_else(|_| other.to_string())
                    ),
                }
            }
        }
        if let Some(e) = run.get("error").filter(|e| !e.is_null()) {
            println!(
                "error: {} {}",
                e["kind"].as_str().unwrap_or("?"),
                e["message"].as_str().unwrap_or("")
            );
        }
    }
    match status {
        "completed" | "completed_partial" => ExitCode::SUCCESS,
        "paused" => ExitCode::from(EXIT_PAUSED),
        _ => ExitCode::FAILURE,
    }
}

/// Folds a run's events into one line per step, printed when the step ends: its outcome, its
/// key, how long it took, and what it printed, skipped for or failed with.
#[derive(Default)]
struct StepLines {
    /// Start time and `step_print` messages of steps under way, by step key.
    open: std::collections::HashMap<String, (Option<String>, Vec<String>)>,
}

impl StepLines {
    fn event(&mut self, e: &Value) {
        let key = e["step_key"].as_str().unwrap_or("").to_owned();
        let ts = e["ts"].as_str().map(str::to_owned);
        let (outcome, detail) = match e["type"].as_str().unwrap_or("") {
            "step_start" | "loop_start" => {
                self.open.entry(key).or_default().0 = ts;
                return;
            }
            "step_print" => {
                let m = e["payload"]["message"].as_str().unwrap_or("").to_owned();
                self.open.entry(key).or_default().1.push(m);
                return;
            }
            "step_done" | "loop_done" => ("done", String::new()),
            "step_skipped" => (
                "skipped",
                e["payload"]["reason"].as_str().unwrap_or("").to_owned(),
            ),
            "step_error" => (
                "failed",
                format!(
                    "{}: {}",
                    e["payload"]["kind"].as_str().unwrap_or("error"),
                    e["payload"]["message"].as_str().unwrap_or("")
                ),
            ),
            "pause_start" => (
                "paused",
                e["payload"]["reason"].as_str().unwrap_or("").to_owned(),
            ),
            "pause_resumed" | "pause_timeout" => {
                let outcome = if e["type"] == "pause_timeout" {
                    "timed out"
                } else if e["payload"]["approved"] == false {
                    "denied"
                } else {
                    "resumed"
                };
                (outcome, String::new())
            }
            "workflow_failed" => {
                println!(
                    "failed   run: {}: {}",
                    e["payload"]["kind"].as_str().unwrap_or("error"),
                    e["payload"]["message"].as_str().unwrap_or("")
                );
                return;
            }
            _ => return,
        };
        let (started, printed) = if outcome == "paused" {
            self.open.get(&key).cloned().unwrap_or_default()
        } else {
            self.open.remove(&key).unwrap_or_default()
        };
        let took = started
            .zip(ts)
            .and_then(|(a, b)| {
                let a = humantime::parse_rfc3339(&a).ok()?;
                let b = humantime::parse_rfc3339(&b).ok()?;
                b.duration_since(a).ok()
            })
            .map(|d| format!("{} ms", d.as_millis()))
            .unwrap_or_default();
        let mut line = format!("{outcome:<8} {key}");
        for part in [took, detail].into_iter().chain(printed) {
            if !part.is_empty() {
                line.push_str("  ");
                line.push_str(&part);
            }
        }
        println!("{line}");
    }
}

fn print_event(e: &Value, as_json: bool) {
    if as_json {
        println!("{e}");
        return;
    }
    let step = e["step_key"].as_str().unwrap_or("");
    let extra = match e["type"].as_str() {
        Some("step_print") => e["payload"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default(),
        Some("step_error" | "workflow_failed") => e["payload"]["message"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default(),
        Some("step_skipped") => e["payload"]["reason"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_default(),
        _ => String::new(),
    };
    println!(
        "{:>4} {} {:<16} {step} {extra}",
        e["seq"].as_i64().unwrap_or(0),
        e["ts"].as_str().unwrap_or(""),
        e["type"].as_str().unwrap_or("")
    );
}

/// Streams events as notifications to `show` until the run ends or pauses; returns the status.
/// Waits without a timeout: a run may rightly sit in one step for a long time.
fn follow(
    c: &mut Client,
    run_id: &str,
    since: i64,
    show: &mut dyn FnMut(&Value),
) -> Result<String, ClientError> {
    let timeout = c.timeout();
    c.set_timeout(None)?;
    let status = follow_untimed(c, run_id, since, show)?;
    c.set_timeout(timeout)?;
    Ok(status)
}

fn follow_untimed(
    c: &mut Client,
    run_id: &str,
    since: i64,
    show: &mut dyn FnMut(&Value),
) -> Result<String, ClientError> {
    let id = c.send_method::<m::WorkflowEvents>(&wf::EventsParams {
        run_id: run_id.to_owned(),
        since,
        follow: true,
    })?;
    loop {
        let msg = c.read_message()?;
        if msg.get("id").is_none_or(Value::is_null) && msg.get("error").is_none() {
            if msg["method"] == "workflow.event" {
                show(&msg["params"]);
            }
            continue;
        }
        let v = crate::rpc::client::decode_answer(msg, id)?;
        for e in v["events"].as_array().into_iter().flatten() {
            show(e);
        }
        return Ok(v["status"].as_str().unwrap_or("unknown").to_owned());
    }
}

fn events(
    c: &mut Client,
    run_id: &str,
    since: i64,
    follow_: bool,
    as_json: bool,
) -> Result<(), ClientError> {
    if follow_ {
        follow(c, run_id, since, &mut |e| print_event(e, as_json))?;
        return Ok(());
    }
    let v = c.call_method::<m::WorkflowEvents>(&wf::EventsParams {
        run_id: run_id.to_owned(),
        since,
        follow: false,
    })?;
    for e in v["events"].as_array().into_iter().flatten() {
        print_event(e, as_json);
    }
    Ok(())
}

fn show(c: &mut Client, run_id: &str, as_json: bool) -> Result<(), ClientError> {
    let v = c.call_method::<m::WorkflowGet>(&run_ref(run_id))?;
    print(&v, as_json, |v| {
        println!("run        {}", v["run_id"].as_str().unwrap_or(""));
        println!("workflow   {}", v["name"].as_str().unwrap_or(""));
        println!(
            "status     {}{}",
            v["status"].as_str().unwrap_or(""),
            if v["dry_run"] == true {
                " (dry run)"
            } else {
                ""
            }
        );
        println!("workspace  {}", v["workspace"].as_str().unwrap_or(""));
        if let Some(e) = v.get("error").filter(|e| !e.is_null()) {
            println!(
                "error      {} {}",
                e["kind"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            );
        }
        for w in v["waits"].as_array().into_iter().flatten() {
            println!(
                "wait       {} {} at {} ({})",
                w["wait_id"].as_str().unwrap_or(""),
                w["status"].as_str().unwrap_or(""),
                w["step_key"].as_str().unwrap_or(""),
                w["reason"].as_str().unwrap_or("")
            );
        }
        if let Some(vars) = v["vars"].as_object() {
            for (k, x) in vars {
                println!("var        {k} = {x}");
            }
        }
    })
}

fn list(
    c: &mut Client,
    status: Option<&str>,
    limit: Option<usize>,
    as_json: bool,
) -> Result<(), ClientError> {
    let v = c.call_method::<m::WorkflowList>(&wf::ListParams {
        status: status.map(str::to_owned),
        limit,
    })?;
    print(&v, as_json, |v| {
        for r in v["runs"].as_array().into_iter().flatten() {
            println!(
                "{}  {:<17} {}  {}",
                r["run_id"].as_str().unwrap_or(""),
                r["status"].as_str().unwrap_or(""),
                r["created_at"].as_str().unwrap_or(""),
                r["name"].as_str().unwrap_or("")
            );
        }
    })
}

/// Resumes `body`'s wait; without a named wait (`named` false), the run's one open wait.
fn resume(
    c: &mut Client,
    named: bool,
    mut body: wf::ResumeParams,
    as_json: bool,
) -> Result<(), ClientError> {
    let run_id = body.run_id.clone();
    let run_id = run_id.as_str();
    let wait_id = if named {
        body.wait_id.clone()
    } else {
        let run = c.call_method::<m::WorkflowGet>(&run_ref(run_id))?;
        let open: Vec<&Value> = run["waits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|w| w["status"] == "open")
            .collect();
        match open.as_slice() {
            [w] => w["wait_id"].as_str().unwrap_or_default().to_owned(),
            [] => {
                return Err(ClientError::Protocol(format!(
                    "run {run_id} has no open wait"
                )));
            }
            _ => {
                return Err(ClientError::Protocol(format!(
                    "run {run_id} has {} open waits; name one",
                    open.len()
                )));
            }
        }
    };
    body.wait_id = wait_id.clone();
    let v = c.call_method::<m::WorkflowResume>(&body)?;
    print(&v, as_json, |v| {
        println!(
            "resumed {} ({})",
            wait_id,
            v["outcome"].as_str().unwrap_or("")
        )
    })
}
