//! The engine: runs validated documents on its own threads, journaling every step.
//!
//! Durability model: a run is re-driven from its first step whenever it (re)starts — after a
//! pause is resolved, after a crash, after a restart. A step whose key is journaled as done
//! (or skipped, or failed into a handler) is not executed again: its recorded output and
//! variable writes are replayed, so the run reaches the same state without repeating effects.
//! Each executed step commits twice: started (transaction A), then done with its output, its
//! graph writes, the run's vars and its events (transaction B). A crash between the two leaves
//! a started step that runs again on recovery; its graph writes never committed, so they happen
//! once. This file owns the engine's life (start, recovery, shutdown), run requests, resumes and
//! the timer; `run` owns one drive of a run. Architecture Invariant: no tokio, no sockets;
//! callers reach this through `Brain`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};
use tracing::{info, info_span, warn};

use super::expr::Cache;
use super::journal::{self, Event, RunRow, StepRow, WaitRow};
use super::llm::Provider;
use super::model::{self, Document};
use super::run::{Flow, Host, RunCtx};
use super::steps::{ErrorKind, StepError};
use super::{Runners, files};
use crate::clock;
use crate::error::{Error, Kind};
use crate::store::Store;

/// Caps on one run. Defaults are generous; a run may lower them, never raise them.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Limits {
    pub steps: u64,
    pub events: u64,
    pub payload_bytes: u64,
    pub loop_items: u64,
    pub concurrency: u64,
    pub pause_secs: u64,
    pub wall_clock_secs: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            steps: 100_000,
            events: 500_000,
            payload_bytes: 1 << 20,
            loop_items: 10_000,
            concurrency: 32,
            pause_secs: 30 * 24 * 3600,
            wall_clock_secs: 24 * 3600,
        }
    }
}

impl Limits {
    /// `self` lowered by whatever `requested` sets lower.
    pub fn lowered(self, requested: &Value) -> Limits {
        let mut out = self;
        let get = |k: &str, cur: u64| {
            requested
                .get(k)
                .and_then(Value::as_u64)
                .map_or(cur, |v| v.min(cur))
        };
        out.steps = get("steps", self.steps);
        out.events = get("events", self.events);
        out.payload_bytes = get("payload_bytes", self.payload_bytes);
        out.loop_items = get("loop_items", self.loop_items);
        out.concurrency = get("concurrency", self.concurrency).max(1);
        out.pause_secs = get("pause_secs", self.pause_secs);
        out.wall_clock_secs = get("wall_clock_secs", self.wall_clock_secs);
        out
    }
}

pub struct EngineConfig {
    pub user: String,
    /// Per-run workspaces live under here.
    pub workspaces: PathBuf,
    pub limits: Limits,
    pub llm: Option<Arc<dyn Provider>>,
    /// `point:StepId` — abort the process at that commit point (crash tests).
    pub failpoint: Option<String>,
    /// Read-only settings expressions see as `SYSVAR`.
    pub sysvars: Value,
}

impl EngineConfig {
    /// Defaults plus `BRAIN_LLM_URL`/`BRAIN_LLM_MODEL`/`BRAIN_LLM_ALLOW_INSECURE` and
    /// `BRAIN_FAILPOINT` from the environment.
    pub fn from_env(user: &str, data_dir: &std::path::Path) -> EngineConfig {
        let llm: Option<Arc<dyn Provider>> = std::env::var("BRAIN_LLM_URL").ok().and_then(|url| {
            let model = std::env::var("BRAIN_LLM_MODEL").unwrap_or_else(|_| "default".into());
            let insecure = std::env::var(super::llm::ALLOW_INSECURE_ENV).is_ok_and(|v| v == "1");
            match super::llm::OpenAiCompatible::new(&url, &model, insecure) {
                Ok(p) => Some(Arc::new(p) as Arc<dyn Provider>),
                Err(e) => {
                    warn!(error = %e, "ignoring BRAIN_LLM_URL");
                    None
                }
            }
        });
        EngineConfig {
            user: user.to_owned(),
            workspaces: data_dir.join("workspaces"),
            limits: Limits::default(),
            llm,
            failpoint: std::env::var("BRAIN_FAILPOINT")
                .ok()
                .filter(|s| !s.is_empty()),
            // What a workflow may know about where it runs; never secrets.
            sysvars: json!({ "user_id": user, "version": env!("CARGO_PKG_VERSION") }),
        }
    }
}

/// A run's id: `run_` + 32 hex digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RunId(String);

impl RunId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Options of one run request.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub params: Map<String, Value>,
    pub dry_run: bool,
    pub limits: Value,
    pub trigger: Option<Value>,
    /// Run in this folder instead of a fresh per-run workspace (a watched root, when a trigger
    /// was created to allow it).
    pub workspace: Option<PathBuf>,
    /// VL's `RunParams.nodes`: run only these step ids; every other step is skipped as if its
    /// `if` were false (reason `not_selected`). `None` runs them all.
    pub nodes: Option<Vec<String>>,
}

/// A resume request. `token` is for callers without local authority.
#[derive(Debug, Clone)]
pub struct ResumeRequest {
    pub run_id: String,
    pub wait_id: String,
    pub request_id: String,
    pub approved: bool,
    pub payload: Value,
    pub token: Option<String>,
    pub actor: String,
}

/// A run as callers see it.
#[derive(Debug, Clone)]
pub struct RunView {
    pub run: RunRow,
    pub waits: Vec<WaitRow>,
    pub steps: Vec<StepRow>,
}

/// Longest the timer sleeps with nothing due: an idle daemon wakes once an hour at most (new
/// waits and triggers wake it at once).
pub(super) const IDLE_WAKE: Duration = Duration::from_secs(3600);

fn err(kind: Kind, msg: impl Into<String>) -> Error {
    Error::new(kind, msg)
}

#[derive(Clone)]
pub struct Engine {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) store: Arc<Store>,
    pub(super) search: Arc<crate::search::Search>,
    pub(super) cfg: EngineConfig,
    pub(super) exprs: Cache,
    /// Runs with a live driver thread, and whether they must be driven again when it ends.
    active: Mutex<HashMap<String, Arc<Handle>>>,
    /// Bumped after every commit that adds events; followers wait on it.
    events: (Mutex<u64>, Condvar),
    /// Wakes the timer when a wait with an expiry is created.
    timer: (Mutex<bool>, Condvar),
    pub(super) stopping: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
pub(super) struct Handle {
    redrive: AtomicBool,
    pub(super) cancelled: AtomicBool,
}

impl Engine {
    /// Starts the engine: recovers runs that were running, and starts the pause timer.
    pub fn start(
        store: Arc<Store>,
        search: Arc<crate::search::Search>,
        cfg: EngineConfig,
    ) -> Result<Engine, Error> {
        let inner = Arc::new(Inner {
            store,
            search,
            cfg,
            exprs: Cache::default(),
            active: Mutex::new(HashMap::new()),
            events: (Mutex::new(0), Condvar::new()),
            timer: (Mutex::new(false), Condvar::new()),
            stopping: AtomicBool::new(false),
            threads: Mutex::new(Vec::new()),
        });
        let running = inner
            .store
            .read(|c| journal::run_ids_with_status(c, "running"))?;
        for id in running {
            info!(run_id = %id, "recovering a run that was running");
            inner
                .store
                .write(|tx| journal::emit(tx, &id, "run_recovered", None, json!({})))?;
            Inner::activate(&inner, &id);
        }
        let t = inner.clone();
        let timer = std::thread::Builder::new()
            .name("workflow-timer".into())
            .spawn(move || t.timer_loop())
            .map_err(|e| {
                err(
                    Kind::Internal,
                    format!("cannot start the workflow timer: {e}"),
                )
            })?;
        inner
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(timer);
        Ok(Engine { inner })
    }

    pub fn runners(&self) -> Runners {
        Runners {
            llm: self.inner.cfg.llm.is_some(),
        }
    }

    /// Stops the timer and asks run threads to park at their next step boundary; a parked run
    /// stays `running` and is recovered on the next start.
    /// Asks run threads to park at their next step boundary and followers to return, without
    /// waiting; [`Engine::shutdown`] waits.
    pub fn begin_shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.timer.1.notify_all();
        self.inner.notify_events();
    }

    pub fn shutdown(&self) {
        self.begin_shutdown();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline
            && !self
                .inner
                .active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        let threads =
            std::mem::take(&mut *self.inner.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Validates, pins and starts a run; returns its id at once.
    pub fn run(&self, doc: &Value, opts: RunOptions) -> Result<RunId, Error> {
        let (report, parsed) = super::validate(doc, self.runners());
        let Some(parsed) = parsed else {
            let first = report
                .errors
                .first()
                .map(|d| format!("{} at {}: {}", d.code, d.path, d.message))
                .unwrap_or_default();
            return Err(err(
                Kind::WorkflowInvalid,
                format!(
                    "workflow has {} validation errors; first: {first}",
                    report.errors.len()
                ),
            ));
        };
        let params = bind_params(&parsed, opts.params)?;
        if let Some(nodes) = &opts.nodes {
            check_nodes(&parsed, nodes)?;
        }
        let mut vars = Map::new();
        for v in &parsed.registry.vars {
            if let Ok(d) = model::parse_decl(v) {
                vars.insert(d.name, d.default.unwrap_or(Value::Null));
            }
        }
        let canonical =
            serde_json::to_string(doc).map_err(|e| err(Kind::Internal, e.to_string()))?;
        let hash = files::hash(canonical.as_bytes());
        let run_id = format!("run_{}", uuid::Uuid::new_v4().simple());
        let workspace = opts
            .workspace
            .clone()
            .unwrap_or_else(|| self.inner.cfg.workspaces.join(&run_id));
        std::fs::create_dir_all(&workspace).map_err(|e| {
            err(
                Kind::Io,
                format!("cannot create workspace {}: {e}", workspace.display()),
            )
        })?;
        // Stored absolute, so the run finds it whatever the daemon's working directory.
        let workspace = std::fs::canonicalize(&workspace).unwrap_or(workspace);
        let limits = self.inner.cfg.limits.lowered(&opts.limits);
        let now = clock::now();
        let user = self.inner.cfg.user.clone();
        self.inner.store.write(|tx| -> Result<(), Error> {
            tx.execute(
                "INSERT INTO workflow_definitions(hash, name, body, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                rusqlite::params![hash, parsed.name, canonical, now],
            )?;
            tx.execute(
                "INSERT INTO workflow_runs(id, definition_hash, status, params, vars, workspace, dry_run, trigger, actor_id,
                                           created_at, updated_at, limits)
                 VALUES (?1, ?2, 'running', ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9, ?10)",
                rusqlite::params![
                    run_id,
                    hash,
                    Value::Object(params).to_string(),
                    Value::Object(vars).to_string(),
                    workspace.display().to_string(),
                    opts.dry_run as i64,
                    opts.trigger.as_ref().map(Value::to_string),
                    user,
                    now,
                    serde_json::to_string(&limits).unwrap_or_else(|_| "{}".into())
                ],
            )?;
            // The journal keeps the selected steps on the run's first event; every drive reads them
            // there.
            journal::emit(tx, &run_id, "workflow_start", None, json!({ "workflow": parsed.name, "definition_hash": hash, "dry_run": opts.dry_run, "trigger": opts.trigger, "nodes": opts.nodes }))?;
            Ok(())
        })?;
        self.inner.notify_events();
        Inner::activate(&self.inner, &run_id);
        Ok(RunId(run_id))
    }

    pub fn get(&self, run_id: &str) -> Result<RunView, Error> {
        self.inner.store.read(|c| -> Result<RunView, Error> {
            let run = journal::run(c, run_id)?
                .ok_or_else(|| err(Kind::RunNotFound, format!("no run {run_id}")))?;
            Ok(RunView {
                waits: journal::waits(c, run_id)?,
                steps: journal::steps(c, run_id)?,
                run,
            })
        })
    }

    pub fn list(&self, status: Option<&str>, limit: usize) -> Result<Vec<RunRow>, Error> {
        Ok(self
            .inner
            .store
            .read(|c| journal::runs(c, status, limit as i64))?)
    }

    /// Events after `since`, and the run's status when they were read.
    pub fn events(
        &self,
        run_id: &str,
        since: i64,
        limit: usize,
    ) -> Result<(Vec<Event>, String), Error> {
        self.inner.store.read(|c| -> Result<_, Error> {
            let status = journal::run_status(c, run_id)?
                .ok_or_else(|| err(Kind::RunNotFound, format!("no run {run_id}")))?;
            Ok((journal::events(c, run_id, since, limit as i64)?, status))
        })
    }

    /// Blocks until some run commits events or `timeout` passes.
    pub fn wait_for_events(&self, seen: u64, timeout: Duration) -> u64 {
        let (m, cv) = &self.inner.events;
        let g = m.lock().unwrap_or_else(|p| p.into_inner());
        let (g, _) = cv
            .wait_timeout_while(g, timeout, |n| *n == seen)
            .unwrap_or_else(|p| p.into_inner());
        *g
    }

    /// Whether a driver thread is working on the run right now.
    pub fn is_active(&self, run_id: &str) -> bool {
        self.inner
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(run_id)
    }

    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::SeqCst)
    }

    pub fn event_generation(&self) -> u64 {
        *self
            .inner
            .events
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn cancel(&self, run_id: &str) -> Result<String, Error> {
        let status = self.inner.store.write(|tx| -> Result<String, Error> {
            let status = journal::run_status(tx, run_id)?
                .ok_or_else(|| err(Kind::RunNotFound, format!("no run {run_id}")))?;
            if !matches!(status.as_str(), "running" | "paused") {
                return Ok(status);
            }
            journal::cancel_waits(tx, run_id)?;
            journal::set_status(tx, run_id, "cancelled", None)?;
            journal::emit(tx, run_id, "workflow_cancelled", None, json!({}))?;
            Ok("cancelled".into())
        })?;
        if let Some(h) = self
            .inner
            .active
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(run_id)
        {
            h.cancelled.store(true, Ordering::SeqCst);
        }
        self.inner.notify_events();
        Ok(status)
    }

    /// Mints a fresh single-use token for an open wait, replacing any earlier one. Only its
    /// hash is stored; the caller hands it to whoever may resume without local authority.
    pub fn mint_token(&self, run_id: &str, wait_id: &str) -> Result<String, Error> {
        let token = format!(
            "wt_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let hash = files::hash(token.as_bytes());
        let ok = self.inner.store.write(|tx| -> Result<bool, Error> {
            match journal::wait(tx, wait_id)? {
                Some(w) if w.run_id == run_id => Ok(journal::set_token_hash(tx, wait_id, &hash)?),
                _ => Err(err(
                    Kind::WaitNotFound,
                    format!("run {run_id} has no wait {wait_id}"),
                )),
            }
        })?;
        if !ok {
            return Err(err(
                Kind::WaitAlreadyResolved,
                format!("wait {wait_id} is no longer open"),
            ));
        }
        Ok(token)
    }

    /// Resolves a wait. One transaction with compare-and-set on the wait; a repeated
    /// `request_id` returns the first outcome.
    pub fn resume(&self, req: &ResumeRequest) -> Result<Value, Error> {
        let r = self.resolve(req);
        if let Err(e) = &r
            && !matches!(
                e.kind,
                Kind::RunNotFound | Kind::WaitNotFound | Kind::StoreError
            )
        {
            // Recorded beside the run, without the token, so the history shows the attempt.
            let payload = json!({ "wait_id": req.wait_id, "request_id": req.request_id, "reason": e.kind.as_str() });
            let _ = self
                .inner
                .store
                .write(|tx| journal::emit(tx, &req.run_id, "pause_rejected", None, payload));
            self.inner.notify_events();
        }
        r
    }

    fn resolve(&self, req: &ResumeRequest) -> Result<Value, Error> {
        if req.payload.to_string().len() as u64 > self.inner.cfg.limits.payload_bytes {
            return Err(err(
                Kind::PayloadInvalid,
                "payload is larger than the payload limit",
            ));
        }
        let outcome = self.inner.store.write(|tx| -> Result<Value, Error> {
            let run = journal::run(tx, &req.run_id)?.ok_or_else(|| err(Kind::RunNotFound, format!("no run {}", req.run_id)))?;
            let w = match journal::wait(tx, &req.wait_id)? {
                Some(w) if w.run_id == req.run_id => w,
                _ => return Err(err(Kind::WaitNotFound, format!("run {} has no wait {}", req.run_id, req.wait_id))),
            };
            if w.request_id.as_deref() == Some(req.request_id.as_str())
                && let Some(first) = &w.resolution
            {
                return Ok(first.clone());
            }
            if let Some(t) = &req.token
                && files::hash(t.as_bytes()) != w.token_hash
            {
                return Err(err(Kind::TokenMismatch, "the token does not match this wait"));
            }
            match w.status.as_str() {
                "open" => {}
                "timed_out" => return Err(err(Kind::WaitExpired, format!("wait {} expired", w.id))),
                // Closed because the run ended (cancelled, failed, stopped), not by a resume.
                "cancelled" => return Err(err(Kind::RunNotPaused, format!("run {} is {}", run.id, run.status))),
                _ => return Err(err(Kind::WaitAlreadyResolved, format!("wait {} was already resolved", w.id))),
            }
            if run.status != "paused" && run.status != "running" {
                return Err(err(Kind::RunNotPaused, format!("run {} is {}", run.id, run.status)));
            }
            if w.expires_at.as_deref().is_some_and(|e| e <= clock::now().as_str()) {
                return Err(err(Kind::WaitExpired, format!("wait {} expired", w.id)));
            }
            let resolution = json!({
                "run_id": run.id, "wait_id": w.id, "request_id": req.request_id,
                "outcome": if req.approved { "approved" } else { "denied" },
            });
            if !journal::resolve_wait(tx, &w.id, "resumed", Some(&req.request_id), &resolution, &req.actor)? {
                return Err(err(Kind::WaitAlreadyResolved, format!("wait {} was already resolved", w.id)));
            }
            let output = json!({ "resume": { "approved": req.approved, "payload": req.payload, "resolvedBy": req.actor } });
            let key = if w.kind == "approval" { approval_key(&w.step_key) } else { w.step_key.clone() };
            journal::step_finished(tx, &run.id, &key, &w.step_id, "done", Some(&output), None)?;
            journal::set_status(tx, &run.id, "running", None)?;
            journal::emit(tx, &run.id, "pause_resumed", Some((&w.step_id, &w.step_key)), json!({ "wait_id": w.id, "approved": req.approved, "by": req.actor }))?;
            journal::emit(tx, &run.id, "workflow_resumed", None, json!({}))?;
            Ok(resolution)
        })?;
        self.inner.notify_events();
        Inner::activate(&self.inner, &req.run_id);
        Ok(outcome)
    }
}

pub(super) fn approval_key(step_key: &str) -> String {
    format!("{step_key}~approval")
}

/// Most step ids a run may select: far above any real document, and bounding the work of
/// checking them.
pub const MAX_SELECTED_NODES: usize = 10_000;

/// `nodes` must name steps of the document, at least one, each once at most.
fn check_nodes(doc: &Document, nodes: &[String]) -> Result<(), Error> {
    if nodes.is_empty() || nodes.len() > MAX_SELECTED_NODES {
        return Err(err(
            Kind::InvalidParams,
            format!("nodes must list 1 to {MAX_SELECTED_NODES} step ids"),
        ));
    }
    for n in nodes {
        if !doc.steps.iter().any(|s| &s.id == n) {
            return Err(err(
                Kind::InvalidParams,
                format!("nodes names {n:?}, which is not a step of the workflow"),
            ));
        }
    }
    Ok(())
}

fn bind_params(doc: &Document, mut given: Map<String, Value>) -> Result<Map<String, Value>, Error> {
    let mut out = Map::new();
    for p in &doc.registry.params {
        let Ok(d) = model::parse_decl(p) else {
            continue;
        };
        let v = match given.remove(&d.name).or(d.default.clone()) {
            Some(v) => v,
            None => {
                return Err(err(
                    Kind::InvalidParams,
                    format!("param {} is required", d.name),
                ));
            }
        };
        if !model::type_matches(&d.ty, &v) {
            return Err(err(
                Kind::InvalidParams,
                format!("param {} must be {}", d.name, d.ty),
            ));
        }
        out.insert(d.name, v);
    }
    if let Some(k) = given.keys().next() {
        return Err(err(Kind::InvalidParams, format!("unknown param {k}")));
    }
    Ok(out)
}

impl Host for Inner {
    fn store(&self) -> &Store {
        &self.store
    }

    fn search(&self) -> &crate::search::Search {
        &self.search
    }

    fn llm(&self) -> Option<&dyn Provider> {
        self.cfg.llm.as_deref()
    }

    fn exprs(&self) -> &Cache {
        &self.exprs
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    fn events_committed(&self) {
        self.notify_events();
    }

    fn wait_opened(&self) {
        self.poke_timer();
    }

    fn failpoint(&self, point: &str, step_id: &str) {
        Inner::failpoint(self, point, step_id);
    }
}

impl Inner {
    pub(super) fn notify_events(&self) {
        let (m, cv) = &self.events;
        *m.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        cv.notify_all();
    }

    /// Starts a driver thread for the run, or asks the live one to drive again when it ends.
    fn activate(this: &Arc<Inner>, run_id: &str) {
        if this.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut active = this.active.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = active.get(run_id) {
            h.redrive.store(true, Ordering::SeqCst);
            return;
        }
        let h = Arc::new(Handle::default());
        active.insert(run_id.to_owned(), h.clone());
        drop(active);
        let (me, id) = (this.clone(), run_id.to_owned());
        let spawned = std::thread::Builder::new()
            .name("workflow-run".into())
            .spawn(move || {
                loop {
                    h.redrive.store(false, Ordering::SeqCst);
                    let again = me.drive(&id, &h);
                    let mut active = me.active.lock().unwrap_or_else(|p| p.into_inner());
                    if !(again || h.redrive.load(Ordering::SeqCst))
                        || me.stopping.load(Ordering::SeqCst)
                    {
                        active.remove(&id);
                        break;
                    }
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, run_id, "cannot start a run thread");
            this.active
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(run_id);
        }
    }

    /// Drives a run from its first step, replaying the journal. Returns true when it must be
    /// driven again (a wait was resolved while it was finishing).
    fn drive(self: &Arc<Inner>, run_id: &str, h: &Arc<Handle>) -> bool {
        let span = info_span!("workflow_run", run_id);
        let _g = span.enter();
        let loaded = self.store.read(|c| -> Result<_, Error> {
            let run = journal::run(c, run_id)?
                .ok_or_else(|| err(Kind::RunNotFound, run_id.to_owned()))?;
            let steps = journal::steps(c, run_id)?;
            let selected: Option<HashSet<String>> = journal::events(c, run_id, 0, 1)?
                .first()
                .and_then(|e| serde_json::from_value(e.payload["nodes"].clone()).ok());
            let used = journal::running_time(c, run_id, SystemTime::now())?;
            Ok((run, steps, selected, used))
        });
        let (run, steps, selected, used_before) = match loaded {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "cannot load run");
                return false;
            }
        };
        if run.status != "running" {
            return false;
        }
        let doc: Document = match serde_json::from_value(run.definition.clone()) {
            Ok(d) => d,
            Err(e) => {
                self.finish_failed(
                    run_id,
                    &StepError::new(
                        ErrorKind::Internal,
                        format!("pinned definition does not parse: {e}"),
                    ),
                );
                return false;
            }
        };
        let limits: Limits = serde_json::from_value(run.limits.clone()).unwrap_or_default();
        let mut initial_vars = Map::new();
        for v in &doc.registry.vars {
            if let Ok(d) = model::parse_decl(v) {
                initial_vars.insert(d.name, d.default.unwrap_or(Value::Null));
            }
        }
        let mut names = BTreeMap::new();
        if let Some(p) = run.params.as_object() {
            for (k, v) in p {
                names.insert(k.clone(), v.clone());
            }
        }
        names.insert("SYSVAR".into(), self.cfg.sysvars.clone());
        names.insert(
            "RUN".into(),
            json!({ "id": run.id, "date": run.created_at.chars().take(10).collect::<String>(), "startedAt": run.created_at, "workflow": doc.name, "trigger": run.trigger }),
        );
        let index = doc
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.id.clone(), i))
            .collect();
        let ctx = RunCtx {
            host: self.clone(),
            handle: h.clone(),
            run_id: run_id.to_owned(),
            actor: run.actor_id.clone(),
            workspace: PathBuf::from(&run.workspace),
            dry_run: run.dry_run,
            in_watched_root: !PathBuf::from(&run.workspace).starts_with(
                std::fs::canonicalize(&self.cfg.workspaces).unwrap_or(self.cfg.workspaces.clone()),
            ),
            limits,
            doc,
            index,
            names,
            vars: Mutex::new(initial_vars),
            journal: steps.into_iter().map(|s| (s.step_key.clone(), s)).collect(),
            keys: Mutex::new(HashMap::new()),
            halt: AtomicBool::new(false),
            steps_run: AtomicU64::new(0),
            started: Instant::now(),
            used_before,
            selected,
            loop_threads: AtomicU64::new(0),
        };
        let flow = ctx.run_entries();
        self.finish(&ctx, flow)
    }

    fn finish(&self, ctx: &RunCtx, flow: Flow) -> bool {
        let run_id = ctx.run_id.as_str();
        let vars = Value::Object(ctx.vars_snapshot());
        let result = match flow {
            Flow::Fail(e) => {
                self.finish_failed(run_id, &e);
                false
            }
            Flow::Cancelled | Flow::Parked => false,
            Flow::Suspended => {
                let r = self.store.write(|tx| -> Result<bool, Error> {
                    if journal::run_status(tx, run_id)?.as_deref() != Some("running")
                        && journal::run_status(tx, run_id)?.as_deref() != Some("paused")
                    {
                        return Ok(false);
                    }
                    if journal::open_waits(tx, run_id)? == 0 {
                        // Resolved while this drive was finishing: drive again.
                        return Ok(true);
                    }
                    journal::set_vars(tx, run_id, &vars)?;
                    journal::set_status(tx, run_id, "paused", None)?;
                    journal::emit(tx, run_id, "workflow_paused", None, json!({}))?;
                    Ok(false)
                });
                r.unwrap_or_else(|e| {
                    warn!(error = %e, "cannot record a pause");
                    false
                })
            }
            Flow::Return | Flow::Stop | Flow::Break | Flow::ExitBranch | Flow::Halted => {
                let r = self.store.write(|tx| -> Result<(), Error> {
                    if !matches!(
                        journal::run_status(tx, run_id)?.as_deref(),
                        Some("running" | "paused")
                    ) {
                        return Ok(());
                    }
                    // A Stop_ ends the run even while another branch waits.
                    journal::cancel_waits(tx, run_id)?;
                    let partial: i64 = tx.query_row(
                        "SELECT partial FROM workflow_runs WHERE id = ?1",
                        [run_id],
                        |r| r.get(0),
                    )?;
                    let status = if partial != 0 {
                        "completed_partial"
                    } else {
                        "completed"
                    };
                    journal::set_vars(tx, run_id, &vars)?;
                    journal::set_status(tx, run_id, status, None)?;
                    journal::emit(
                        tx,
                        run_id,
                        "workflow_done",
                        None,
                        json!({ "status": status }),
                    )?;
                    Ok(())
                });
                if let Err(e) = r {
                    warn!(error = %e, "cannot record the end of a run");
                }
                false
            }
        };
        self.notify_events();
        result
    }

    fn finish_failed(&self, run_id: &str, e: &StepError) {
        let r = self.store.write(|tx| -> Result<(), Error> {
            if !matches!(
                journal::run_status(tx, run_id)?.as_deref(),
                Some("running" | "paused")
            ) {
                return Ok(());
            }
            journal::cancel_waits(tx, run_id)?;
            journal::set_status(tx, run_id, "failed", Some(&e.to_json()))?;
            journal::emit(tx, run_id, "workflow_failed", None, e.to_json())?;
            Ok(())
        });
        if let Err(e) = r {
            warn!(error = %e, "cannot record a failed run");
        }
        self.notify_events();
    }

    /// Fires expired waits; sleeps until the next expiry or until a new wait is created.
    fn timer_loop(self: Arc<Inner>) {
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let now = clock::now();
            let (due, next) = match self.store.read(|c| journal::expired_waits(c, &now)) {
                Ok(x) => x,
                Err(e) => {
                    warn!(error = %e, "timer cannot read waits");
                    (Vec::new(), None)
                }
            };
            for w in due {
                self.expire(&w);
            }
            let schedule_in = Engine {
                inner: self.clone(),
            }
            .fire_schedules();
            let sleep = next
                .and_then(|n| humantime::parse_rfc3339(&n).ok())
                .and_then(|t| t.duration_since(SystemTime::now()).ok())
                .unwrap_or(IDLE_WAKE)
                .min(IDLE_WAKE)
                .min(schedule_in);
            let (m, cv) = &self.timer;
            let g = m.lock().unwrap_or_else(|p| p.into_inner());
            let (mut g, _) = cv
                .wait_timeout_while(g, sleep, |poked| {
                    !*poked && !self.stopping.load(Ordering::SeqCst)
                })
                .unwrap_or_else(|p| p.into_inner());
            *g = false;
        }
    }

    pub(super) fn poke_timer(&self) {
        *self.timer.0.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.timer.1.notify_all();
    }

    /// A wait's expiry: compare-and-set against a racing resume; the loser changes nothing.
    fn expire(self: &Arc<Inner>, w: &WaitRow) {
        let won = self.store.write(|tx| -> Result<bool, Error> {
            let resolution = json!({ "outcome": "timed_out" });
            if !journal::resolve_wait(tx, &w.id, "timed_out", None, &resolution, "timer")? {
                return Ok(false);
            }
            let key = if w.kind == "approval" {
                approval_key(&w.step_key)
            } else {
                w.step_key.clone()
            };
            journal::step_finished(
                tx,
                &w.run_id,
                &key,
                &w.step_id,
                "done",
                Some(&json!({ "timed_out": true, "on_expiry": w.on_expiry })),
                None,
            )?;
            journal::set_status(tx, &w.run_id, "running", None)?;
            journal::emit(
                tx,
                &w.run_id,
                "pause_timeout",
                Some((&w.step_id, &w.step_key)),
                json!({ "wait_id": w.id }),
            )?;
            Ok(true)
        });
        match won {
            Ok(true) => {
                self.notify_events();
                Inner::activate(self, &w.run_id);
            }
            Ok(false) => {}
            Err(e) => warn!(error = %e, "cannot expire a wait"),
        }
    }

    pub(super) fn failpoint(&self, point: &str, step_id: &str) {
        if let Some(fp) = &self.cfg.failpoint
            && fp.split_once(':') == Some((point, step_id))
        {
            warn!(point, step_id, "failpoint hit; aborting");
            std::process::abort();
        }
    }
}
