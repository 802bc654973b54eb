//! One drive of a run: chains of steps, their commits, loops, branches, pauses and approvals.
//! What an action step does lives in `effect`; this file only decides when it runs.
//!
//! A `RunCtx` lives for one drive. It replays the journal it was loaded with: a step whose key
//! is recorded as done (or skipped, or failed into a handler) is not executed; its recorded
//! output and var writes are applied instead. Architecture Invariant: every state change here
//! goes through a transaction that also writes the event describing it; a step's graph writes,
//! `out` writes and vars commit together in its done transaction (B).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value, json};

use super::engine::{Handle, Limits, approval_key};
use super::expr;
use super::expr::Cache;
use super::files;
use super::journal::{self, StepRow, WaitRow};
use super::llm::Provider;
use super::model::{self, Document, Step, StepType};
use super::steps::{self, ErrorKind, GraphWrite, Prov, StepError};
use super::vars;
use crate::clock;
use crate::search::Search;
use crate::store::Store;

/// How a chain ended.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Flow {
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
pub(super) struct Scope {
    /// `[i]` per enclosing loop iteration.
    suffix: String,
    loop_index: Option<usize>,
    locals: BTreeMap<String, Value>,
    /// Set when a step of the innermost loop's iteration goes to `BREAK`, before that step's
    /// end is journaled: a parallel loop's other workers start no iteration once it is.
    loop_stop: Option<Arc<AtomicBool>>,
}

/// What a drive needs from the engine that runs it, and nothing more: the store and search it
/// works on, the model provider, the expression cache, whether the daemon is stopping, and the
/// wake-ups its commits owe followers and the timer. The engine's own state (active runs, the
/// timer, its threads) stays out of reach.
pub(super) trait Host: Send + Sync {
    fn store(&self) -> &Store;
    fn search(&self) -> &Search;
    fn llm(&self) -> Option<&dyn Provider>;
    fn exprs(&self) -> &Cache;
    fn stopping(&self) -> bool;
    /// Events were committed: wake followers.
    fn events_committed(&self);
    /// A wait with an expiry was opened: wake the timer.
    fn wait_opened(&self);
    /// Aborts the process at a named commit point when asked to (crash tests).
    fn failpoint(&self, point: &str, step_id: &str);
}

pub(super) struct RunCtx {
    pub(super) host: Arc<dyn Host>,
    pub(super) handle: Arc<Handle>,
    pub(super) run_id: String,
    pub(super) actor: String,
    pub(super) workspace: PathBuf,
    pub(super) dry_run: bool,
    /// The workspace is a watched root (a file trigger's `in_root`), not a run's own folder.
    pub(super) in_watched_root: bool,
    pub(super) limits: Limits,
    pub(super) doc: Document,
    pub(super) index: HashMap<String, usize>,
    pub(super) names: BTreeMap<String, Value>,
    pub(super) vars: Mutex<Map<String, Value>>,
    pub(super) journal: HashMap<String, StepRow>,
    /// Visits per key, so a step reached twice in one scope gets distinct keys.
    pub(super) keys: Mutex<HashMap<String, u32>>,
    pub(super) halt: AtomicBool,
    pub(super) steps_run: AtomicU64,
    /// When this drive started, and how long the run ran in earlier drives: the wall-clock
    /// limit counts both.
    pub(super) started: Instant,
    pub(super) used_before: Duration,
    /// `RunParams.nodes`: the only steps that run; `None` is all.
    pub(super) selected: Option<HashSet<String>>,
    /// Threads running parallel-loop iterations besides the threads that started the loops.
    /// Nested loops draw on this one pool, so the run never has more than
    /// `limits.concurrency` iterations running at once.
    pub(super) loop_threads: AtomicU64,
}

/// A step's result before it is committed.
pub(super) struct Done {
    pub(super) result: Value,
    pub(super) events: Vec<(&'static str, Value)>,
    pub(super) graph: Option<GraphWrite>,
}

impl RunCtx {
    fn step_def(&self, id: &str) -> &Step {
        // Validation guarantees every target names a step.
        &self.doc.steps[self.index[id]]
    }

    pub(super) fn vars_snapshot(&self) -> Map<String, Value> {
        self.vars.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(super) fn run_entries(&self) -> Flow {
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
                .map(|st| {
                    // Branch threads log inside the run's span.
                    let span = tracing::Span::current();
                    s.spawn(move || span.in_scope(|| self.chain(sc.clone(), st)))
                })
                .collect();
            hs.into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Flow::Fail(StepError::new(ErrorKind::Internal, "a branch panicked"))
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
        if self.host.stopping() {
            return Some(Flow::Parked);
        }
        if self.halt.load(Ordering::SeqCst) {
            return Some(Flow::Halted);
        }
        if self.steps_run.fetch_add(1, Ordering::SeqCst) >= self.limits.steps {
            return Some(limit("steps", self.limits.steps));
        }
        if (self.used_before + self.started.elapsed()).as_secs() >= self.limits.wall_clock_secs {
            return Some(limit("wall_clock_secs", self.limits.wall_clock_secs));
        }
        None
    }

    /// Takes up to `want` helper threads from the run's pool of `limits.concurrency - 1` (the
    /// driving thread is the first); returns how many it got, which the caller gives back.
    fn reserve_loop_threads(&self, want: usize) -> usize {
        let cap = self.limits.concurrency.saturating_sub(1);
        let mut got = 0;
        let _ = self
            .loop_threads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                got = cap.saturating_sub(used).min(want as u64);
                Some(used + got)
            });
        got as usize
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
            .host
            .exprs()
            .get(src)
            .map_err(|e| StepError::new(ErrorKind::ExpressionError, e.to_string()))?;
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
        .map_err(|m| StepError::new(ErrorKind::ExpressionError, format!("{src}: {m}")))
    }

    /// Resolves every expression leaf of `v`.
    pub(super) fn resolve(
        &self,
        sc: &Scope,
        v: &Value,
        extra: &[(&str, &Value)],
    ) -> Result<Value, StepError> {
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
                    ErrorKind::TypeError,
                    format!("condition {s:?} gave {other}, not a boolean"),
                )),
            },
            other => Err(StepError::new(
                ErrorKind::TypeError,
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
        let t =
            vars::parse_target(target).map_err(|m| StepError::new(ErrorKind::InvalidTarget, m))?;
        vars::write(
            &mut self.vars.lock().unwrap_or_else(|p| p.into_inner()),
            &t,
            sc.loop_index,
            value.clone(),
        )
        .map_err(|m| StepError::new(ErrorKind::InvalidTarget, m))?;
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
            origin: steps::Origin::Step {
                run_id: &self.run_id,
                step_key: key,
            },
        };
        let ty = step.step_type();
        if route.or(step.next.as_deref()) == Some("BREAK")
            && let Some(stop) = &sc.loop_stop
        {
            stop.store(true, Ordering::SeqCst);
        }
        let result = self.host.store().write(|tx| -> Result<Value, StepError> {
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
                    ErrorKind::LimitExceeded,
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
                    ErrorKind::LimitExceeded,
                    format!("limit events ({}) exceeded", self.limits.events),
                ));
            }
            Ok(done.result.clone())
        });
        self.host.events_committed();
        if result.is_ok() {
            self.host.failpoint("step_done", &step.id);
            // A graph write may have changed what search sees; the outbox holds it durably,
            // so a failure here only delays it to the next catch-up.
            if done.graph.is_some()
                && let Err(e) = self.host.search().bring_up_to_date()
            {
                tracing::warn!(error = %e, "search index catch-up after a workflow write failed");
            }
        }
        result
    }

    fn commit_started(&self, step: &Step, key: &str, attempt: i64) -> Result<(), StepError> {
        let kind = if step.step_type() == Some(StepType::Loop) {
            "loop_start"
        } else {
            "step_start"
        };
        self.host.store().write(|tx| -> Result<(), StepError> {
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
        self.host.events_committed();
        self.host.failpoint("step_started", &step.id);
        Ok(())
    }

    /// Journals `step` as skipped for `reason`, with its `step_skipped` event.
    fn skip(&self, step: &Step, key: &str, reason: &str) -> Result<(), StepError> {
        self.commit_simple(
            step,
            key,
            "skipped",
            "step_skipped",
            json!({ "reason": reason }),
            None,
        )
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
        self.host.store().write(|tx| -> Result<(), StepError> {
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
        self.host.events_committed();
        Ok(())
    }

    /// Runs one step (or replays it) and says where control goes.
    fn step(&self, sc: &mut Scope, id: &str) -> Next {
        let step = self.step_def(id);
        let key = self.key(sc, id);
        let _span = tracing::debug_span!("step", step_key = %key).entered();
        let rec = self.journal.get(&key);
        let next = || match &step.next {
            Some(n) => Next::Goto(n.clone()),
            None => Next::End(Flow::Stop),
        };
        // Replayed skip, a step the run did not select, or a fresh `if`.
        if rec.is_some_and(|r| r.status == "skipped") {
            return next();
        }
        if rec.is_none_or(|r| r.status == "started")
            && self.selected.as_ref().is_some_and(|s| !s.contains(id))
        {
            if let Err(e) = self.skip(step, &key, "not_selected") {
                return Next::End(Flow::Fail(e));
            }
            return next();
        }
        if rec.is_none_or(|r| r.status == "started")
            && let Some(cond) = &step.if_
        {
            match self.condition(sc, cond) {
                Ok(true) => {}
                Ok(false) => {
                    if let Err(e) = self.skip(step, &key, "if_false") {
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
                .unwrap_or_else(|| StepError::new(ErrorKind::Other("error".into()), ""));
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
            && self.host.llm().is_none()
            && rec.is_none_or(|r| r.status != "done")
        {
            let r = self.host.store().write(|tx| -> Result<(), StepError> {
                journal::set_partial(tx, &self.run_id)?;
                Ok(())
            });
            if let Err(e) = r.and_then(|()| self.skip(step, &key, "no_runner")) {
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
            .filter(|_| e.kind != ErrorKind::LimitExceeded);
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
                Err(e) if e.kind == ErrorKind::ApprovalRequired && !approved => {
                    let preview = Some(self.preview(sc, step, &input));
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
                                r.on.iter().any(|k| k == e.kind.as_str())
                            })
                    });
                    if let Some(r) = retry {
                        let wait = r.backoff_sec.max(0.0) * 2f64.powi(attempt as i32 - 1);
                        let _ = self.host.store().write(|tx| journal::emit(tx, &self.run_id, "step_retry", Some((&step.id, key)), json!({ "attempt": attempt, "error": e.to_json(), "backoff_sec": wait })));
                        self.host.events_committed();
                        std::thread::sleep(Duration::from_secs_f64(wait.min(300.0)));
                        attempt += 1;
                        let _ = self.host.store().write(|tx| {
                            journal::step_started(tx, &self.run_id, key, &step.id, attempt)
                        });
                        continue;
                    }
                    return Err(self.on_error(sc, step, key, e));
                }
            };
            self.host.failpoint("step_effect", &step.id);
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
            Err(e) if e.kind == ErrorKind::LimitExceeded || e.kind == ErrorKind::Store => {
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
            return Err(StepError::new(
                ErrorKind::WaitExpired,
                "the approval wait expired",
            ));
        }
        if out["resume"]["approved"] == true {
            return Ok(true);
        }
        Err(StepError::new(
            ErrorKind::ApprovalDenied,
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
            Some(self.preview(sc, step, input)),
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
            .host
            .store()
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
        self.host.store().write(|tx| -> Result<(), StepError> {
            journal::insert_wait(tx, &w)?;
            if kind == "pause" {
                journal::step_started(tx, &self.run_id, key, &step.id, 1)?;
            }
            journal::set_vars(tx, &self.run_id, &vars)?;
            journal::set_status(tx, &self.run_id, "paused", None)?;
            journal::emit(tx, &self.run_id, "pause_start", Some((&step.id, key)), json!({ "wait_id": w.id, "kind": kind, "reason": reason, "preview": preview, "expires_at": expires }))?;
            Ok(())
        })?;
        self.host.events_committed();
        self.host.wait_opened();
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
                        StepError::new(ErrorKind::WaitExpired, format!("{} timed out", step.id)),
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
                if rec.is_none()
                    && let Err(e) = self.commit_started(step, key, 1)
                {
                    return Next::End(Flow::Fail(e));
                }
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
                            ErrorKind::TypeError,
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
        let stop = Arc::new(AtomicBool::new(false));
        let iteration = |i: usize| -> Scope {
            let mut s = sc.clone();
            s.suffix = format!("{}[{i}]", sc.suffix);
            s.loop_index = Some(i);
            s.loop_stop = Some(stop.clone());
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
            let work = || {
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
            };
            // This thread runs iterations too; helpers come from the run's pool, so a loop
            // nested in a parallel loop adds to the same count instead of multiplying it.
            let helpers = self.reserve_loop_threads(workers.min(n).saturating_sub(1));
            let flows: Vec<Flow> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..helpers)
                    .map(|_| {
                        let span = tracing::Span::current();
                        let work = &work;
                        s.spawn(move || {
                            let _in_run = span.enter();
                            work()
                        })
                    })
                    .collect();
                let mut flows = work();
                flows.extend(hs.into_iter().flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Flow::Fail(StepError::new(
                            ErrorKind::Internal,
                            "an iteration panicked",
                        ))]
                    })
                }));
                flows
            });
            self.loop_threads
                .fetch_sub(helpers as u64, Ordering::SeqCst);
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
        kind: ErrorKind::LimitExceeded,
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
