//! The engine: runs validated documents on its own threads, journaling every step.
//!
//! Durability model: a run is re-driven from its first step whenever it (re)starts — after a
//! pause is resolved, after a crash, after a restart. A step whose key is journaled as done
//! (or skipped, or failed into a handler) is not executed again: its recorded output and
//! variable writes are replayed, so the run reaches the same state without repeating effects.
//! Each executed step commits twice: started (transaction A), then done with its output, its
//! graph writes, the run's vars and its events (transaction B). A crash between the two leaves
//! a started step that runs again on recovery; its graph writes never committed, so they happen
//! once. Architecture Invariant: no tokio, no sockets; callers reach this through `Brain`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};
use tracing::{info, info_span, warn};

use super::expr::{self, Cache};
use super::journal::{self, Event, RunRow, StepRow, WaitRow};
use super::llm::Provider;
use super::model::{self, Document, Step, StepType};
use super::steps::{self, GraphWrite, Prov, StepError};
use super::vars;
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
    /// Defaults plus `BRAIN_LLM_URL`/`BRAIN_LLM_MODEL` and `BRAIN_FAILPOINT` from the environment.
    pub fn from_env(user: &str, data_dir: &std::path::Path) -> EngineConfig {
        let llm: Option<Arc<dyn Provider>> = std::env::var("BRAIN_LLM_URL").ok().and_then(|url| {
            let model = std::env::var("BRAIN_LLM_MODEL").unwrap_or_else(|_| "default".into());
            match super::llm::OpenAiCompatible::new(&url, &model) {
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
            sysvars: json!({}),
        }
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

fn err(kind: Kind, msg: impl Into<String>) -> Error {
    Error::new(kind, msg)
}

#[derive(Clone)]
pub struct Engine {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    pub(super) store: Arc<Store>,
    pub(super) cfg: EngineConfig,
    exprs: Cache,
    /// Runs with a live driver thread, and whether they must be driven again when it ends.
    active: Mutex<HashMap<String, Arc<Handle>>>,
    /// Bumped after every commit that adds events; followers wait on it.
    events: (Mutex<u64>, Condvar),
    /// Wakes the timer when a wait with an expiry is created.
    timer: (Mutex<bool>, Condvar),
    stopping: AtomicBool,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

#[derive(Default)]
struct Handle {
    redrive: AtomicBool,
    cancelled: AtomicBool,
}

impl Engine {
    /// Starts the engine: recovers runs that were running, and starts the pause timer.
    pub fn start(store: Arc<Store>, cfg: EngineConfig) -> Result<Engine, Error> {
        let inner = Arc::new(Inner {
            store,
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
    pub fn shutdown(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.inner.timer.1.notify_all();
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
    pub fn run(&self, doc: &Value, opts: RunOptions) -> Result<String, Error> {
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
            journal::emit(tx, &run_id, "workflow_start", None, json!({ "workflow": parsed.name, "definition_hash": hash, "dry_run": opts.dry_run, "trigger": opts.trigger }))?;
            Ok(())
        })?;
        self.inner.notify_events();
        Inner::activate(&self.inner, &run_id);
        Ok(run_id)
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

fn approval_key(step_key: &str) -> String {
    format!("{step_key}~approval")
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

impl Inner {
    fn notify_events(&self) {
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
            Ok((run, steps))
        });
        let (run, steps) = match loaded {
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
                    &StepError::new("internal", format!("pinned definition does not parse: {e}")),
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
            inner: self.clone(),
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
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60))
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

    fn failpoint(&self, point: &str, step_id: &str) {
        if let Some(fp) = &self.cfg.failpoint
            && fp.split_once(':') == Some((point, step_id))
        {
            warn!(point, step_id, "failpoint hit; aborting");
            std::process::abort();
        }
    }
}

/// How a chain ended.
#[derive(Debug, Clone, PartialEq)]
enum Flow {
    /// RETURN, or a chain that ran out.
    Return,
    Break,
    ExitBranch,
    /// A `Stop_`: the run ends normally.
    Stop,
    /// A branch waits for a resume.
    Suspended,
    Fail(StepError),
    Cancelled,
    /// Another branch failed or stopped the run; this one stopped at a step boundary.
    Halted,
    /// The daemon is shutting down; the run stays `running` and is recovered later.
    Parked,
}

/// Where a step sends control next.
enum Next {
    Goto(String),
    End(Flow),
}

/// Scope of one chain: loop position and the names only it sees.
#[derive(Clone, Default)]
struct Scope {
    /// `[i]` per enclosing loop iteration.
    suffix: String,
    loop_index: Option<usize>,
    locals: BTreeMap<String, Value>,
}

struct RunCtx {
    inner: Arc<Inner>,
    handle: Arc<Handle>,
    run_id: String,
    actor: String,
    workspace: PathBuf,
    dry_run: bool,
    /// The workspace is a watched root (a file trigger's `in_root`), not a run's own folder.
    in_watched_root: bool,
    limits: Limits,
    doc: Document,
    index: HashMap<String, usize>,
    names: BTreeMap<String, Value>,
    vars: Mutex<Map<String, Value>>,
    journal: HashMap<String, StepRow>,
    /// Visits per key, so a step reached twice in one scope gets distinct keys.
    keys: Mutex<HashMap<String, u32>>,
    halt: AtomicBool,
    steps_run: AtomicU64,
    started: Instant,
}

/// A step's result before it is committed.
struct Done {
    result: Value,
    events: Vec<(&'static str, Value)>,
    graph: Option<GraphWrite>,
}

impl RunCtx {
    fn step_def(&self, id: &str) -> &Step {
        // Validation guarantees every target names a step.
        &self.doc.steps[self.index[id]]
    }

    fn vars_snapshot(&self) -> Map<String, Value> {
        self.vars.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn run_entries(&self) -> Flow {
        let referenced: HashSet<&str> = self
            .doc
            .steps
            .iter()
            .flat_map(|s| s.targets().into_iter().map(|(_, t)| t))
            .collect();
        let entries: Vec<String> = self
            .doc
            .steps
            .iter()
            .map(|s| s.id.clone())
            .filter(|id| !referenced.contains(id.as_str()))
            .collect();
        self.fan_out(&Scope::default(), &entries)
    }

    /// Runs chains in parallel and joins them.
    fn fan_out(&self, sc: &Scope, starts: &[String]) -> Flow {
        if let [only] = starts {
            return self.chain(sc.clone(), only);
        }
        let flows: Vec<Flow> = std::thread::scope(|s| {
            let hs: Vec<_> = starts
                .iter()
                .map(|st| s.spawn(move || self.chain(sc.clone(), st)))
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Flow::Fail(StepError::new("internal", "a branch panicked"))
                    })
                })
                .collect()
        });
        merge(flows)
    }

    fn chain(&self, mut sc: Scope, start: &str) -> Flow {
        let mut cur = start.to_owned();
        loop {
            match cur.as_str() {
                "RETURN" => return Flow::Return,
                "BREAK" => return Flow::Break,
                "EXIT_BRANCH" => return Flow::ExitBranch,
                _ => {}
            }
            if let Some(f) = self.boundary() {
                return f;
            }
            match self.step(&mut sc, &cur) {
                Next::Goto(n) => cur = n,
                Next::End(f) => {
                    if matches!(f, Flow::Fail(_) | Flow::Stop) {
                        self.halt.store(true, Ordering::SeqCst);
                    }
                    return f;
                }
            }
        }
    }

    /// Checks made before every step: cancellation, shutdown, siblings' failure, limits.
    fn boundary(&self) -> Option<Flow> {
        if self.handle.cancelled.load(Ordering::SeqCst) {
            return Some(Flow::Cancelled);
        }
        if self.inner.stopping.load(Ordering::SeqCst) {
            return Some(Flow::Parked);
        }
        if self.halt.load(Ordering::SeqCst) {
            return Some(Flow::Halted);
        }
        if self.steps_run.fetch_add(1, Ordering::SeqCst) >= self.limits.steps {
            return Some(limit("steps", self.limits.steps));
        }
        if self.started.elapsed().as_secs() >= self.limits.wall_clock_secs {
            return Some(limit("wall_clock_secs", self.limits.wall_clock_secs));
        }
        None
    }

    fn key(&self, sc: &Scope, id: &str) -> String {
        let base = format!("{id}{}", sc.suffix);
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let n = keys.entry(base.clone()).or_insert(0);
        *n += 1;
        if *n == 1 { base } else { format!("{base}#{n}") }
    }

    fn eval_str(
        &self,
        sc: &Scope,
        src: &str,
        extra: &[(&str, &Value)],
    ) -> Result<Value, StepError> {
        let c = self
            .inner
            .exprs
            .get(src)
            .map_err(|e| StepError::new("expression_error", e.to_string()))?;
        let mut names = self.names.clone();
        for (k, v) in &sc.locals {
            names.insert(k.clone(), v.clone());
        }
        for (k, v) in extra {
            names.insert((*k).to_owned(), (*v).clone());
        }
        let vars = self.vars.lock().unwrap_or_else(|p| p.into_inner()).clone();
        expr::eval(
            &c,
            &expr::Scope {
                names: &names,
                vars: &vars,
            },
        )
        .map_err(|m| StepError::new("expression_error", format!("{src}: {m}")))
    }

    /// Resolves every expression leaf of `v`.
    fn resolve(&self, sc: &Scope, v: &Value, extra: &[(&str, &Value)]) -> Result<Value, StepError> {
        Ok(match v {
            Value::String(s) => match expr::as_expression(s) {
                Some(src) => self.eval_str(sc, src, extra)?,
                None => Value::String(expr::literal(s).to_owned()),
            },
            Value::Array(a) => Value::Array(
                a.iter()
                    .map(|x| self.resolve(sc, x, extra))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(m) => {
                let mut out = Map::new();
                for (k, x) in m {
                    out.insert(k.clone(), self.resolve(sc, x, extra)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// A condition (`if`, `while`, cases): `=` optional, booleans as they are.
    fn condition(&self, sc: &Scope, v: &Value) -> Result<bool, StepError> {
        match v {
            Value::Bool(b) => Ok(*b),
            Value::String(s) => match self.eval_str(sc, s.strip_prefix('=').unwrap_or(s), &[])? {
                Value::Bool(b) => Ok(b),
                Value::Null => Ok(false),
                other => Err(StepError::new(
                    "type_error",
                    format!("condition {s:?} gave {other}, not a boolean"),
                )),
            },
            other => Err(StepError::new(
                "type_error",
                format!("condition {other} is not a string or boolean"),
            )),
        }
    }

    fn write_var(
        &self,
        sc: &Scope,
        target: &str,
        value: Value,
        writes: &mut Vec<Value>,
    ) -> Result<(), StepError> {
        let t = vars::parse_target(target).map_err(|m| StepError::new("invalid_target", m))?;
        vars::write(
            &mut self.vars.lock().unwrap_or_else(|p| p.into_inner()),
            &t,
            sc.loop_index,
            value.clone(),
        )
        .map_err(|m| StepError::new("invalid_target", m))?;
        writes.push(json!([target, value]));
        Ok(())
    }

    fn replay_writes(&self, sc: &Scope, row: &StepRow) {
        let writes = row
            .output
            .as_ref()
            .and_then(|o| o.get("writes"))
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let mut sink = Vec::new();
        for w in writes {
            if let (Some(t), Some(v)) = (w.get(0).and_then(Value::as_str), w.get(1)) {
                let _ = self.write_var(sc, t, v.clone(), &mut sink);
            }
        }
    }

    /// Commits a step's done record with its graph changes, its `out` writes, the run's vars
    /// and its events, all in one transaction (B). `writes` are writes made before (a `Set_`).
    fn commit_done(
        &self,
        sc: &Scope,
        step: &Step,
        key: &str,
        mut done: Done,
        mut writes: Vec<Value>,
        route: Option<&str>,
    ) -> Result<Value, StepError> {
        let prov = Prov {
            actor: &self.actor,
            run_id: &self.run_id,
            step_key: key,
        };
        let ty = step.step_type();
        let result = self.inner.store.write(|tx| -> Result<Value, StepError> {
            if let Some(g) = &done.graph {
                let (result, evs) = steps::apply(tx, g, &prov)?;
                done.result = if ty == Some(StepType::Ingest) {
                    json!({ "nodeIds": [result["id"]] })
                } else {
                    result
                };
                for e in evs {
                    journal::emit(tx, &self.run_id, "graph_write", Some((&step.id, key)), e)?;
                }
            }
            // `out` sees the result as committed, ids included.
            if !matches!(
                ty,
                Some(StepType::Loop | StepType::Branch | StepType::Pause)
            ) {
                self.apply_out(sc, step, &done.result, &mut writes)?;
            }
            let output = json!({ "result": done.result, "writes": writes, "route": route });
            if output.to_string().len() as u64 > self.limits.payload_bytes {
                return Err(StepError::new(
                    "limit_exceeded",
                    format!(
                        "limit payload_bytes ({}) exceeded by the output of {key}",
                        self.limits.payload_bytes
                    ),
                ));
            }
            journal::step_finished(tx, &self.run_id, key, &step.id, "done", Some(&output), None)?;
            journal::set_vars(tx, &self.run_id, &Value::Object(self.vars_snapshot()))?;
            for (kind, payload) in &done.events {
                journal::emit(
                    tx,
                    &self.run_id,
                    kind,
                    Some((&step.id, key)),
                    payload.clone(),
                )?;
            }
            let kind = if ty == Some(StepType::Loop) {
                "loop_done"
            } else {
                "step_done"
            };
            let seq = journal::emit(
                tx,
                &self.run_id,
                kind,
                Some((&step.id, key)),
                json!({ "result": done.result, "dry_run": self.dry_run }),
            )?;
            if seq as u64 > self.limits.events {
                return Err(StepError::new(
                    "limit_exceeded",
                    format!("limit events ({}) exceeded", self.limits.events),
                ));
            }
            Ok(done.result.clone())
        });
        self.inner.notify_events();
        if result.is_ok() {
            self.inner.failpoint("step_done", &step.id);
        }
        result
    }

    fn commit_started(&self, step: &Step, key: &str, attempt: i64) -> Result<(), StepError> {
        let kind = if step.step_type() == Some(StepType::Loop) {
            "loop_start"
        } else {
            "step_start"
        };
        self.inner.store.write(|tx| -> Result<(), StepError> {
            journal::step_started(tx, &self.run_id, key, &step.id, attempt)?;
            journal::emit(
                tx,
                &self.run_id,
                kind,
                Some((&step.id, key)),
                json!({ "attempt": attempt }),
            )?;
            Ok(())
        })?;
        self.inner.notify_events();
        self.inner.failpoint("step_started", &step.id);
        Ok(())
    }

    fn commit_simple(
        &self,
        step: &Step,
        key: &str,
        status: &str,
        kind: &str,
        output: Value,
        error: Option<&Value>,
    ) -> Result<(), StepError> {
        self.inner.store.write(|tx| -> Result<(), StepError> {
            journal::step_finished(
                tx,
                &self.run_id,
                key,
                &step.id,
                status,
                Some(&output),
                error,
            )?;
            journal::emit(
                tx,
                &self.run_id,
                kind,
                Some((&step.id, key)),
                error.cloned().unwrap_or_else(|| output.clone()),
            )?;
            Ok(())
        })?;
        self.inner.notify_events();
        Ok(())
    }

    /// Runs one step (or replays it) and says where control goes.
    fn step(&self, sc: &mut Scope, id: &str) -> Next {
        let step = self.step_def(id);
        let key = self.key(sc, id);
        let rec = self.journal.get(&key);
        let next = || match &step.next {
            Some(n) => Next::Goto(n.clone()),
            None => Next::End(Flow::Stop),
        };
        // Replayed skip, or a fresh `if`.
        if rec.is_some_and(|r| r.status == "skipped") {
            return next();
        }
        if rec.is_none_or(|r| r.status == "started")
            && let Some(cond) = &step.if_
        {
            match self.condition(sc, cond) {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(e) = self.commit_simple(
                        step,
                        &key,
                        "skipped",
                        "step_skipped",
                        json!({ "reason": "if_false" }),
                        None,
                    ) {
                        return Next::End(Flow::Fail(e));
                    }
                    return next();
                }
                Err(e) => return self.on_error(sc, step, &key, e),
            }
        }
        // Replayed failure that went to a handler.
        if let Some(r) = rec.filter(|r| r.status == "failed") {
            let e = r
                .error
                .as_ref()
                .map(StepError::from_json)
                .unwrap_or_else(|| StepError::new("error", ""));
            return match &step.on_error {
                Some(h) => {
                    sc.locals.insert("_error".into(), e.to_json());
                    Next::Goto(h.clone())
                }
                None => Next::End(Flow::Fail(e)),
            };
        }
        let ty = step.step_type().unwrap_or(StepType::Noop);
        match ty {
            StepType::Loop => return self.loop_step(sc, step, &key, rec),
            StepType::Branch => return self.branch_step(sc, step, &key, rec),
            StepType::Pause => return self.pause_step(sc, step, &key, rec),
            _ => {}
        }
        if ty == StepType::Llm
            && self.inner.cfg.llm.is_none()
            && rec.is_none_or(|r| r.status != "done")
        {
            let r = self.inner.store.write(|tx| -> Result<(), StepError> {
                journal::set_partial(tx, &self.run_id)?;
                Ok(())
            });
            if let Err(e) = r.and_then(|()| {
                self.commit_simple(
                    step,
                    &key,
                    "skipped",
                    "step_skipped",
                    json!({ "reason": "no_runner" }),
                    None,
                )
            }) {
                return Next::End(Flow::Fail(e));
            }
            return next();
        }
        let done_rec = rec.filter(|r| r.status == "done");
        if let Some(r) = done_rec {
            self.replay_writes(sc, r);
        } else {
            match self.execute(sc, step, &key, rec) {
                Ok(()) => {}
                Err(Next::End(f)) => return Next::End(f),
                Err(goto) => return goto,
            }
        }
        if !step.children.is_empty() {
            let f = self.fan_out(sc, &step.children);
            match f {
                Flow::Return | Flow::ExitBranch => {}
                other => return Next::End(other),
            }
        }
        if ty == StepType::Stop {
            return Next::End(Flow::Stop);
        }
        next()
    }

    /// Sends a failure to the step's handler, or fails the run. Limits bypass handlers.
    fn on_error(&self, sc: &mut Scope, step: &Step, key: &str, e: StepError) -> Next {
        let handler = step
            .on_error
            .as_ref()
            .filter(|_| e.kind != "limit_exceeded");
        let output = json!({ "route": handler });
        if let Err(e2) = self.commit_simple(
            step,
            key,
            "failed",
            "step_error",
            output,
            Some(&e.to_json()),
        ) {
            return Next::End(Flow::Fail(e2));
        }
        match handler {
            Some(h) => {
                sc.locals.insert("_error".into(), e.to_json());
                Next::Goto(h.clone())
            }
            None => Next::End(Flow::Fail(e)),
        }
    }

    /// A fresh (or re-run) action step: approval, started, effect with retries, done.
    /// `Ok` continues normally; `Err` carries where control goes instead.
    fn execute(
        &self,
        sc: &mut Scope,
        step: &Step,
        key: &str,
        rec: Option<&StepRow>,
    ) -> Result<(), Next> {
        let input = match step
            .input
            .as_ref()
            .map(|i| self.resolve(sc, i, &[]))
            .transpose()
        {
            Ok(i) => i.unwrap_or(Value::Null),
            Err(e) => return Err(self.on_error(sc, step, key, e)),
        };
        let approved = match self.approval_decision(step, key) {
            Ok(a) => a,
            Err(e) => return Err(self.on_error(sc, step, key, e)),
        };
        if let Some(a) = &step.approval
            && !self.dry_run
            && !approved
        {
            return match self.ask_approval(sc, step, key, a, &input) {
                Ok(()) => Err(Next::End(Flow::Suspended)),
                Err(e) => Err(self.on_error(sc, step, key, e)),
            };
        }
        let mut attempt = rec.map_or(1, |r| r.attempt + 1);
        if let Err(e) = self.commit_started(step, key, attempt) {
            return Err(Next::End(Flow::Fail(e)));
        }
        loop {
            let res = self.effect(sc, step, key, &input, rec, approved);
            let done = match res {
                Ok(d) => d,
                // The runner asks a person before this side effect: pause, then run it again
                // with the approval on record.
                Err(e) if e.kind == "approval_required" && !approved => {
                    let preview = Some(json!({ "in": input }));
                    return match self.open_wait(
                        step,
                        key,
                        "approval",
                        Some(e.message),
                        preview,
                        None,
                    ) {
                        Ok(()) => Err(Next::End(Flow::Suspended)),
                        Err(e) => Err(Next::End(Flow::Fail(e))),
                    };
                }
                Err(e) => {
                    let retry = step.retry.as_ref().filter(|r| {
                        (attempt as u32) < r.max_attempts
                            && (if r.on.is_empty() {
                                e.retryable
                            } else {
                                r.on.contains(&e.kind)
                            })
                    });
                    if let Some(r) = retry {
                        let wait = r.backoff_sec.max(0.0) * 2f64.powi(attempt as i32 - 1);
                        let _ = self.inner.store.write(|tx| journal::emit(tx, &self.run_id, "step_retry", Some((&step.id, key)), json!({ "attempt": attempt, "error": e.to_json(), "backoff_sec": wait })));
                        self.inner.notify_events();
                        std::thread::sleep(Duration::from_secs_f64(wait.min(300.0)));
                        attempt += 1;
                        let _ = self.inner.store.write(|tx| {
                            journal::step_started(tx, &self.run_id, key, &step.id, attempt)
                        });
                        continue;
                    }
                    return Err(self.on_error(sc, step, key, e));
                }
            };
            self.inner.failpoint("step_effect", &step.id);
            return self.finish_step(sc, step, key, done);
        }
    }

    fn finish_step(
        &self,
        sc: &mut Scope,
        step: &Step,
        key: &str,
        mut done: Done,
    ) -> Result<(), Next> {
        if let Some(p) = &step.print {
            match self.resolve(sc, p, &[]) {
                Ok(v) => done.events.push((
                    "step_print",
                    json!({ "message": v.as_str().map_or_else(|| v.to_string(), str::to_owned) }),
                )),
                Err(e) => return Err(self.on_error(sc, step, key, e)),
            }
        }
        let mut writes = Vec::new();
        if step.step_type() == Some(StepType::Set)
            && let (Some(t), Some(v)) = (&step.target, done.result.get("value"))
        {
            if let Err(e) = self.write_var(sc, t, v.clone(), &mut writes) {
                return Err(self.on_error(sc, step, key, e));
            }
            done.result = Value::Null;
        }
        match self.commit_done(sc, step, key, done, writes, None) {
            Ok(_) => Ok(()),
            Err(e) if e.kind == "limit_exceeded" || e.kind == "store_error" => {
                Err(Next::End(Flow::Fail(e)))
            }
            Err(e) => Err(self.on_error(sc, step, key, e)),
        }
    }

    fn apply_out(
        &self,
        sc: &Scope,
        step: &Step,
        result: &Value,
        writes: &mut Vec<Value>,
    ) -> Result<(), StepError> {
        let Some(out) = &step.out else { return Ok(()) };
        let meta = step.meta.clone().unwrap_or(Value::Null);
        for (target, e) in out {
            let v = self.resolve(sc, e, &[("_result", result), ("_meta", &meta)])?;
            self.write_var(sc, target, v, writes)?;
        }
        Ok(())
    }

    /// The effect of an action step. Graph writes are returned, not applied.
    fn effect(
        &self,
        sc: &Scope,
        step: &Step,
        key: &str,
        input: &Value,
        rec: Option<&StepRow>,
        approved: bool,
    ) -> Result<Done, StepError> {
        let plain = |result: Value| Done {
            result,
            events: Vec::new(),
            graph: None,
        };
        let files = &self.doc.registry.files;
        let ty = step.step_type().unwrap_or(StepType::Noop);
        match ty {
            StepType::Noop | StepType::Stop => Ok(plain(Value::Null)),
            StepType::Set => {
                let v = self.resolve(sc, step.value.as_ref().unwrap_or(&Value::Null), &[])?;
                Ok(plain(json!({ "value": v })))
            }
            StepType::Search => steps::search(&self.inner.store, input).map(plain),
            StepType::Graph => steps::graph_read(&self.inner.store, input).map(plain),
            StepType::Read => {
                let path = input
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| StepError::new("invalid_input", "in.path must be a string"))?;
                let globs: Vec<String> = files
                    .inputs
                    .iter()
                    .chain(&files.artifacts)
                    .cloned()
                    .collect();
                steps::read_file(
                    &self.workspace,
                    path,
                    &globs,
                    self.limits.payload_bytes as usize,
                )
                .map(plain)
            }
            StepType::Upsert | StepType::Link | StepType::Ingest => {
                let g = match ty {
                    StepType::Upsert => GraphWrite::upsert(input)?,
                    StepType::Link => GraphWrite::link(input)?,
                    _ => {
                        let (k, title, text) = match input.get("path").and_then(Value::as_str) {
                            Some(p) => {
                                let globs: Vec<String> = files
                                    .inputs
                                    .iter()
                                    .chain(&files.artifacts)
                                    .cloned()
                                    .collect();
                                let r = steps::read_file(
                                    &self.workspace,
                                    p,
                                    &globs,
                                    self.limits.payload_bytes as usize,
                                )?;
                                (
                                    p.to_owned(),
                                    p.rsplit('/')
                                        .next()
                                        .unwrap_or(p)
                                        .trim_end_matches(".md")
                                        .to_owned(),
                                    r["text"].as_str().unwrap_or("").to_owned(),
                                )
                            }
                            None => {
                                let text =
                                    input.get("text").and_then(Value::as_str).ok_or_else(|| {
                                        StepError::new(
                                            "invalid_input",
                                            "Ingest_ needs in.path or in.text",
                                        )
                                    })?;
                                let title = input
                                    .get("title")
                                    .and_then(Value::as_str)
                                    .unwrap_or("untitled");
                                let k = input
                                    .get("key")
                                    .and_then(Value::as_str)
                                    .map_or_else(|| files::hash(text.as_bytes()), str::to_owned);
                                (k, title.to_owned(), text.to_owned())
                            }
                        };
                        GraphWrite::ingest(&k, &title, &text)
                    }
                };
                if self.dry_run {
                    // Later steps still need an id to refer to; a planned write gets a placeholder.
                    let id = match &g {
                        GraphWrite::Upsert { kind, key, .. } => format!("planned:{kind}:{key}"),
                        GraphWrite::Link {
                            from,
                            to,
                            edge_type,
                            ..
                        } => {
                            format!("planned:{from}-{edge_type}-{to}")
                        }
                    };
                    let result = if ty == StepType::Ingest {
                        json!({ "nodeIds": [id], "planned": g.plan() })
                    } else {
                        json!({ "id": id, "created": false, "planned": g.plan() })
                    };
                    return Ok(Done {
                        result,
                        events: vec![("graph_write", json!({ "planned": g.plan() }))],
                        graph: None,
                    });
                }
                Ok(Done {
                    result: Value::Null,
                    events: Vec::new(),
                    graph: Some(g),
                })
            }
            StepType::Write => self.write_file(step, key, input, rec, approved),
            StepType::Llm => self.llm(input),
            StepType::Loop | StepType::Branch | StepType::Pause => Ok(plain(Value::Null)),
        }
    }

    fn write_file(
        &self,
        step: &Step,
        key: &str,
        input: &Value,
        rec: Option<&StepRow>,
        approved: bool,
    ) -> Result<Done, StepError> {
        let path = input
            .get("path")
            .and_then(Value::as_str)
            .ok_or_else(|| StepError::new("invalid_input", "in.path must be a string"))?;
        let rel = files::normalize(path).map_err(|m| StepError::new("path_invalid", m))?;
        let reg = &self.doc.registry;
        if !files::matches_any(&reg.files.artifacts, &rel)
            || !files::matches_any(&reg.permissions.file_write, &rel)
        {
            return Err(StepError::new(
                "path_outside_globs",
                format!("{rel} is outside files.artifacts or permissions.fileWrite"),
            ));
        }
        let content = match input.get("content") {
            Some(Value::String(s)) => s.clone(),
            Some(other) => serde_json::to_string_pretty(other).unwrap_or_default(),
            None => String::new(),
        };
        let mode = input
            .get("mode")
            .and_then(Value::as_str)
            .unwrap_or("overwrite");
        let full =
            files::resolve(&self.workspace, &rel).map_err(|m| StepError::new("path_invalid", m))?;
        let existing = std::fs::read(&full).ok();
        // A re-run after a crash: if the file already holds what the first attempt meant to
        // write, the write happened; do not append twice.
        let intent = rec
            .and_then(|r| r.output.as_ref())
            .and_then(|o| o.get("intent"))
            .cloned();
        if let (Some(intent), Some(bytes)) = (&intent, &existing)
            && intent["hash"].as_str() == Some(files::hash(bytes).as_str())
        {
            let size = bytes.len();
            return Ok(Done {
                result: json!({ "path": rel, "size": size, "hash": intent["hash"] }),
                events: vec![(
                    "file_done",
                    json!({ "path": rel, "size": size, "hash": intent["hash"] }),
                )],
                graph: None,
            });
        }
        let bytes = steps::write_bytes(mode, existing.as_deref(), content.as_bytes(), &rel)?;
        let hash = files::hash(&bytes);
        if self.dry_run {
            return Ok(Done {
                result: json!({ "path": rel, "size": bytes.len(), "hash": hash, "planned": true }),
                events: vec![("file_done", json!({ "path": rel, "planned": true }))],
                graph: None,
            });
        }
        // Changing a file someone wrote in their watched folder is the runner's call to ask
        // about, not the workflow's to assume.
        if self.in_watched_root && existing.is_some() && !approved {
            return Err(StepError::new(
                "approval_required",
                format!("{} would change {rel} in a watched folder", step.id),
            ));
        }
        self.inner.store.write(|tx| {
            journal::step_intent(tx, &self.run_id, key, &json!({ "path": rel, "hash": hash }))
        })?;
        files::write_atomic(&full, &bytes)
            .map_err(|e| StepError::new("io_error", format!("cannot write {rel}: {e}")))?;
        Ok(Done {
            result: json!({ "path": rel, "size": bytes.len(), "hash": hash }),
            events: vec![(
                "file_done",
                json!({ "path": rel, "size": bytes.len(), "hash": hash }),
            )],
            graph: None,
        })
    }

    fn llm(&self, input: &Value) -> Result<Done, StepError> {
        let Some(p) = &self.inner.cfg.llm else {
            return Err(StepError::new(
                "no_runner",
                "no model provider is configured",
            ));
        };
        let mut messages = Vec::new();
        if let Some(s) = input.get("system").and_then(Value::as_str) {
            messages.push(json!({ "role": "system", "content": s }));
        }
        let prompt = input
            .get("prompt")
            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
            .unwrap_or_default();
        messages.push(json!({ "role": "user", "content": prompt }));
        let text = p.complete(input.get("model").and_then(Value::as_str), &messages)?;
        let result = if input.get("json").and_then(Value::as_bool) == Some(true) {
            serde_json::from_str(&text)
                .map_err(|e| StepError::new("llm_error", format!("reply is not JSON: {e}")))?
        } else {
            Value::String(text)
        };
        Ok(Done {
            result,
            events: Vec::new(),
            graph: None,
        })
    }

    /// Approval before a step's side effects: Ok(true) approved, Ok(false) waiting.
    /// The decision recorded for an approval of this step: `Ok(true)` approved, `Ok(false)`
    /// none yet; a denial or an expiry is the step's error.
    fn approval_decision(&self, step: &Step, key: &str) -> Result<bool, StepError> {
        let Some(r) = self
            .journal
            .get(&approval_key(key))
            .filter(|r| r.status == "done")
        else {
            return Ok(false);
        };
        let out = r.output.clone().unwrap_or(Value::Null);
        if out["timed_out"] == true {
            return Err(StepError::new("wait_expired", "the approval wait expired"));
        }
        if out["resume"]["approved"] == true {
            return Ok(true);
        }
        Err(StepError::new(
            "approval_denied",
            format!("{} was not approved", step.id),
        ))
    }

    /// Opens the wait of a step's declared `approval`, showing its resolved inputs.
    fn ask_approval(
        &self,
        sc: &Scope,
        step: &Step,
        key: &str,
        a: &model::Approval,
        input: &Value,
    ) -> Result<(), StepError> {
        let reason = a
            .reason
            .as_ref()
            .map(|r| self.resolve(sc, r, &[]))
            .transpose()?
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        self.open_wait(
            step,
            key,
            "approval",
            reason,
            Some(json!({ "in": input })),
            None,
        )
    }

    fn open_wait(
        &self,
        step: &Step,
        key: &str,
        kind: &str,
        reason: Option<String>,
        preview: Option<Value>,
        timeout: Option<f64>,
    ) -> Result<(), StepError> {
        if self
            .inner
            .store
            .read(|c| journal::open_wait_for(c, &self.run_id, key))?
            .is_some()
        {
            return Ok(()); // still waiting from an earlier drive
        }
        let cap = self.limits.pause_secs as f64;
        let (secs, on_expiry) = match timeout {
            Some(t) if t <= cap => (t, "timeout"),
            _ => (cap, "limit"),
        };
        let expires = clock::format(SystemTime::now() + Duration::from_secs_f64(secs.max(0.0)));
        // The token is random and never stored; a caller without local authority gets one from
        // `workflow.token`, which replaces this hash.
        let token = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let w = WaitRow {
            id: format!("wait_{}", uuid::Uuid::new_v4().simple()),
            run_id: self.run_id.clone(),
            step_key: key.to_owned(),
            step_id: step.id.clone(),
            kind: kind.to_owned(),
            reason: reason.clone(),
            preview: preview.clone(),
            token_hash: files::hash(token.as_bytes()),
            status: "open".into(),
            expires_at: Some(expires.clone()),
            on_expiry: on_expiry.into(),
            request_id: None,
            resolution: None,
            resolved_by: None,
            created_at: clock::now(),
            resolved_at: None,
        };
        let vars = Value::Object(self.vars_snapshot());
        self.inner.store.write(|tx| -> Result<(), StepError> {
            journal::insert_wait(tx, &w)?;
            if kind == "pause" {
                journal::step_started(tx, &self.run_id, key, &step.id, 1)?;
            }
            journal::set_vars(tx, &self.run_id, &vars)?;
            journal::set_status(tx, &self.run_id, "paused", None)?;
            journal::emit(tx, &self.run_id, "pause_start", Some((&step.id, key)), json!({ "wait_id": w.id, "kind": kind, "reason": reason, "preview": preview, "expires_at": expires }))?;
            Ok(())
        })?;
        self.inner.notify_events();
        self.inner.poke_timer();
        Ok(())
    }

    fn pause_step(&self, sc: &mut Scope, step: &Step, key: &str, rec: Option<&StepRow>) -> Next {
        let next = || match &step.next {
            Some(n) => Next::Goto(n.clone()),
            None => Next::End(Flow::Return),
        };
        if let Some(r) = rec.filter(|r| r.status == "done") {
            let out = r.output.clone().unwrap_or(Value::Null);
            if out["timed_out"] == true {
                if out["on_expiry"] == "limit" {
                    return Next::End(limit("pause_secs", self.limits.pause_secs));
                }
                return match step.timeout.as_ref().and_then(|t| t.on.clone()) {
                    Some(on) => Next::Goto(on),
                    None => self.on_error(
                        sc,
                        step,
                        key,
                        StepError::new("wait_expired", format!("{} timed out", step.id)),
                    ),
                };
            }
            if let Some(t) = &step.resume_result_target {
                let mut sink = Vec::new();
                if let Err(e) = self.write_var(sc, t, out["resume"].clone(), &mut sink) {
                    return Next::End(Flow::Fail(e));
                }
            }
            self.replay_writes(sc, r);
            return next();
        }
        if self.dry_run {
            let resume = json!({ "approved": true, "payload": null, "dry_run": true });
            let mut writes = Vec::new();
            if let Some(t) = &step.resume_result_target
                && let Err(e) = self.write_var(sc, t, resume.clone(), &mut writes)
            {
                return Next::End(Flow::Fail(e));
            }
            let done = Done {
                result: json!({ "planned": "pause", "resume": resume }),
                events: vec![("pause_start", json!({ "planned": true }))],
                graph: None,
            };
            if let Err(e) = self.commit_done(sc, step, key, done, writes, None) {
                return Next::End(Flow::Fail(e));
            }
            return next();
        }
        let reason = match step
            .reason
            .as_ref()
            .map(|r| self.resolve(sc, r, &[]))
            .transpose()
        {
            Ok(r) => r.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
            Err(e) => return self.on_error(sc, step, key, e),
        };
        let preview = match step
            .preview
            .as_ref()
            .map(|p| self.resolve(sc, p, &[]))
            .transpose()
        {
            Ok(p) => p,
            Err(e) => return self.on_error(sc, step, key, e),
        };
        match self.open_wait(
            step,
            key,
            "pause",
            reason,
            preview,
            step.timeout.as_ref().map(|t| t.sec),
        ) {
            Ok(()) => Next::End(Flow::Suspended),
            Err(e) => Next::End(Flow::Fail(e)),
        }
    }

    fn branch_step(&self, sc: &mut Scope, step: &Step, key: &str, rec: Option<&StepRow>) -> Next {
        let target: Option<String> = match rec.filter(|r| r.status == "done") {
            Some(r) => r
                .output
                .as_ref()
                .and_then(|o| o["route"].as_str())
                .map(str::to_owned),
            None => {
                let mut chosen = None;
                for (i, c) in step.cases.iter().flatten().enumerate() {
                    let (Some(cond), Some(t)) = (c.first(), c.get(1).and_then(Value::as_str))
                    else {
                        continue;
                    };
                    let hit = if cond == "ELSE" {
                        true
                    } else {
                        match self.condition(sc, cond) {
                            Ok(b) => b,
                            Err(e) => return self.on_error(sc, step, key, e),
                        }
                    };
                    if hit {
                        chosen = Some((i, t.to_owned()));
                        break;
                    }
                }
                let done = Done {
                    result: json!({ "case": chosen.as_ref().map(|c| c.0) }),
                    events: Vec::new(),
                    graph: None,
                };
                if let Err(e) = self.commit_done(
                    sc,
                    step,
                    key,
                    done,
                    Vec::new(),
                    chosen.as_ref().map(|c| c.1.as_str()),
                ) {
                    return Next::End(Flow::Fail(e));
                }
                chosen.map(|c| c.1)
            }
        };
        if let Some(t) = target {
            match self.chain(sc.clone(), &t) {
                Flow::Return => {}
                other => return Next::End(other),
            }
        }
        match &step.next {
            Some(n) => Next::Goto(n.clone()),
            None => Next::End(Flow::Return),
        }
    }

    fn loop_step(&self, sc: &mut Scope, step: &Step, key: &str, rec: Option<&StepRow>) -> Next {
        let done_before = rec.is_some_and(|r| r.status == "done");
        if rec.is_none()
            && let Err(e) = self.commit_started(step, key, 1)
        {
            return Next::End(Flow::Fail(e));
        }
        let items: Option<Vec<Value>> = match &step.source {
            None => None,
            Some(src) => match self.resolve(sc, src, &[]) {
                Ok(Value::Null) => Some(Vec::new()),
                Ok(Value::Array(a)) => Some(a),
                Ok(other) => {
                    return self.on_error(
                        sc,
                        step,
                        key,
                        StepError::new(
                            "type_error",
                            format!("loop source is {other}, not an array"),
                        ),
                    );
                }
                Err(e) => return self.on_error(sc, step, key, e),
            },
        };
        if let Some(items) = &items
            && items.len() as u64 > self.limits.loop_items
        {
            return Next::End(limit("loop_items", self.limits.loop_items));
        }
        let max = step
            .max_iterations
            .unwrap_or(u64::MAX)
            .min(self.limits.loop_items);
        let parallel = step.mode.as_deref() == Some("parallel");
        let iteration = |i: usize| -> Scope {
            let mut s = sc.clone();
            s.suffix = format!("{}[{i}]", sc.suffix);
            s.loop_index = Some(i);
            s.locals.insert("_index".into(), json!(i));
            if let Some(items) = &items {
                s.locals.insert("_item".into(), items[i].clone());
            }
            s
        };
        let mut exhausted = false;
        let mut count = 0usize;
        let flow = if parallel && items.is_some() {
            let n = items.as_ref().map_or(0, Vec::len);
            let workers = (step.concurrency.unwrap_or(4) as u64)
                .min(self.limits.concurrency)
                .max(1) as usize;
            let next_i = AtomicUsize::new(0);
            let stop = AtomicBool::new(false);
            let flows: Vec<Flow> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..workers.min(n.max(1)))
                    .map(|_| {
                        s.spawn(|| {
                            let mut mine = Vec::new();
                            loop {
                                if stop.load(Ordering::SeqCst) {
                                    break;
                                }
                                let i = next_i.fetch_add(1, Ordering::SeqCst);
                                if i >= n {
                                    break;
                                }
                                let f = self.fan_out(&iteration(i), &step.children);
                                if !matches!(f, Flow::Return | Flow::ExitBranch | Flow::Suspended) {
                                    // BREAK and failures stop new iterations; running ones finish.
                                    stop.store(true, Ordering::SeqCst);
                                }
                                mine.push(f);
                            }
                            mine
                        })
                    })
                    .collect();
                hs.into_iter()
                    .flat_map(|h| {
                        h.join().unwrap_or_else(|_| {
                            vec![Flow::Fail(StepError::new(
                                "internal",
                                "an iteration panicked",
                            ))]
                        })
                    })
                    .collect()
            });
            count = next_i.load(Ordering::SeqCst).min(n);
            merge(
                flows
                    .into_iter()
                    .map(|f| if f == Flow::Break { Flow::Return } else { f })
                    .collect(),
            )
        } else {
            let mut result = Flow::Return;
            let mut i = 0usize;
            loop {
                if let Some(items) = &items {
                    if i >= items.len() {
                        break;
                    }
                } else if let Some(w) = &step.while_ {
                    match self.condition(&iteration(i), w) {
                        Ok(true) => {}
                        Ok(false) => break,
                        Err(e) => return self.on_error(sc, step, key, e),
                    }
                }
                if i as u64 >= max {
                    exhausted = true;
                    break;
                }
                count = i + 1;
                match self.fan_out(&iteration(i), &step.children) {
                    Flow::Return | Flow::ExitBranch => {}
                    Flow::Break => break,
                    other => {
                        result = other;
                        break;
                    }
                }
                i += 1;
            }
            result
        };
        if flow != Flow::Return {
            return Next::End(flow);
        }
        if !done_before {
            let done = Done {
                result: json!({ "iterations": count, "exhausted": exhausted }),
                events: Vec::new(),
                graph: None,
            };
            if let Err(e) = self.commit_done(sc, step, key, done, Vec::new(), None) {
                return Next::End(Flow::Fail(e));
            }
        }
        match &step.next {
            Some(n) => Next::Goto(n.clone()),
            None => Next::End(Flow::Return),
        }
    }
}

fn limit(name: &str, value: u64) -> Flow {
    Flow::Fail(StepError {
        kind: "limit_exceeded".into(),
        message: format!("limit {name} ({value}) exceeded"),
        retryable: false,
    })
}

/// Joins parallel flows: a failure wins, then cancellation, a stop, a pause; else they returned.
fn merge(flows: Vec<Flow>) -> Flow {
    let rank = |f: &Flow| match f {
        Flow::Fail(_) => 0,
        Flow::Cancelled => 1,
        Flow::Parked => 2,
        Flow::Stop => 3,
        Flow::Break => 4,
        Flow::Suspended => 5,
        Flow::Halted => 6,
        Flow::Return | Flow::ExitBranch => 7,
    };
    flows
        .into_iter()
        .min_by_key(rank)
        .map_or(Flow::Return, |f| {
            if f == Flow::ExitBranch {
                Flow::Return
            } else {
                f
            }
        })
}
