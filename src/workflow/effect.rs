//! What action steps do within a drive: the effect of each step kind, from resolved inputs to a
//! result, events and graph writes that `run` then commits (transaction B).
//!
//! Architecture Invariant: nothing here commits a step's outcome or decides control flow; an
//! effect returns what it did (graph writes unapplied), and the only commits made here are the
//! ones that must precede a side effect (a file write's intent with `file_start`) or that stream
//! as it happens (`llm_token`).

use serde_json::{Value, json};

use super::files;
use super::journal::{self, StepRow};
use super::model::{Step, StepType, WriteForm, WriteMode};
use super::run::{Done, RunCtx, Scope};
use super::steps::{self, ErrorKind, GraphWrite, StepError};

/// What a `Write_` step writes, whichever form it was written in.
struct WriteSpec {
    path: String,
    content: String,
    mode: WriteMode,
}

impl RunCtx {
    /// What a person approving this step sees: its resolved `in`, and for a `Write_` in VL's
    /// form the resolved `target`, `value` and `mode` as well.
    pub(super) fn preview(&self, sc: &Scope, step: &Step, input: &Value) -> Value {
        if step.step_type() == Some(StepType::Write)
            && step.write_form() == WriteForm::Vl
            && let Ok(w) = self.write_spec(sc, step, input)
        {
            return json!({ "in": input, "target": w.path, "value": w.content, "mode": w.mode.name() });
        }
        json!({ "in": input })
    }

    /// The effect of an action step. Graph writes are returned, not applied.
    pub(super) fn effect(
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
            StepType::Search => steps::search(self.host.search(), input).map(plain),
            StepType::Graph => steps::graph_read(self.host.store(), input).map(plain),
            StepType::Read => {
                let path = input.get("path").and_then(Value::as_str).ok_or_else(|| {
                    StepError::new(ErrorKind::InvalidInput, "in.path must be a string")
                })?;
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
                                            ErrorKind::InvalidInput,
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
            StepType::Write => {
                let w = self.write_spec(sc, step, input)?;
                self.write_file(step, key, &w, rec, approved)
            }
            StepType::Llm => self.llm(step, key, input),
            StepType::Loop | StepType::Branch | StepType::Pause => Ok(plain(Value::Null)),
        }
    }

    /// A `Write_` step's path, content and mode, resolved from VL's `target`/`value`/`mode` or
    /// from the `in.path`/`in.content`/`in.mode` alias (already resolved in `input`).
    fn write_spec(&self, sc: &Scope, step: &Step, input: &Value) -> Result<WriteSpec, StepError> {
        let (path, content, mode) = match step.write_form() {
            WriteForm::Vl => {
                let text = |v: Option<&String>| v.map(|t| Value::String(t.clone()));
                let path = text(step.target.as_ref())
                    .map(|t| self.resolve(sc, &t, &[]))
                    .transpose()?;
                let content = step
                    .value
                    .as_ref()
                    .map(|v| self.resolve(sc, v, &[]))
                    .transpose()?;
                let mode = text(step.mode.as_ref())
                    .map(|m| self.resolve(sc, &m, &[]))
                    .transpose()?;
                (path, content, mode)
            }
            WriteForm::In => (
                input.get("path").cloned(),
                input.get("content").cloned(),
                input.get("mode").cloned(),
            ),
        };
        let [path_field, _, mode_field] = step.write_form().pointers();
        let path = match path {
            Some(Value::String(p)) => p,
            _ => {
                return Err(StepError::new(
                    ErrorKind::InvalidInput,
                    format!("{path_field} must be a string path"),
                ));
            }
        };
        let content = match content {
            Some(Value::String(s)) => s,
            None | Some(Value::Null) => String::new(),
            Some(other) => serde_json::to_string_pretty(&other).unwrap_or_default(),
        };
        let mode = match mode {
            None | Some(Value::Null) => WriteMode::Overwrite,
            Some(Value::String(m)) => WriteMode::parse(&m).ok_or_else(|| {
                StepError::new(
                    ErrorKind::InvalidInput,
                    format!(
                        "{mode_field} {m:?} is not one of {}",
                        WriteMode::NAMES.join(", ")
                    ),
                )
            })?,
            Some(other) => {
                return Err(StepError::new(
                    ErrorKind::InvalidInput,
                    format!("{mode_field} {other} is not a string"),
                ));
            }
        };
        Ok(WriteSpec {
            path,
            content,
            mode,
        })
    }

    fn write_file(
        &self,
        step: &Step,
        key: &str,
        w: &WriteSpec,
        rec: Option<&StepRow>,
        approved: bool,
    ) -> Result<Done, StepError> {
        let rel =
            files::normalize(&w.path).map_err(|m| StepError::new(ErrorKind::PathInvalid, m))?;
        let reg = &self.doc.registry;
        if !files::matches_any(&reg.files.artifacts, &rel)
            || !files::matches_any(&reg.permissions.file_write, &rel)
        {
            return Err(StepError::new(
                ErrorKind::PathOutsideGlobs,
                format!("{rel} is outside files.artifacts or permissions.fileWrite"),
            ));
        }
        let full = files::resolve(&self.workspace, &rel)
            .map_err(|m| StepError::new(ErrorKind::PathInvalid, m))?;
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
        let bytes = steps::write_bytes(w.mode, existing.as_deref(), w.content.as_bytes(), &rel)?;
        let hash = files::hash(&bytes);
        if self.dry_run {
            return Ok(Done {
                result: json!({ "path": rel, "size": bytes.len(), "hash": hash, "planned": true }),
                events: vec![
                    (
                        "file_start",
                        json!({ "path": rel, "mode": w.mode.name(), "planned": true }),
                    ),
                    ("file_done", json!({ "path": rel, "planned": true })),
                ],
                graph: None,
            });
        }
        // Changing a file someone wrote in their watched folder is the runner's call to ask
        // about, not the workflow's to assume.
        if self.in_watched_root && existing.is_some() && !approved {
            return Err(StepError::new(
                ErrorKind::ApprovalRequired,
                format!("{} would change {rel} in a watched folder", step.id),
            ));
        }
        // `file_start` commits with the intent, before the rename, so it precedes `file_done`
        // (transaction B) for every write, a re-run after a crash included.
        self.host.store().write(|tx| -> Result<(), StepError> {
            journal::step_intent(tx, &self.run_id, key, &json!({ "path": rel, "hash": hash }))?;
            journal::emit(
                tx,
                &self.run_id,
                "file_start",
                Some((&step.id, key)),
                json!({ "path": rel, "mode": w.mode.name() }),
            )?;
            Ok(())
        })?;
        self.host.events_committed();
        files::write_atomic(&full, &bytes)
            .map_err(|e| StepError::new(ErrorKind::Io, format!("cannot write {rel}: {e}")))?;
        Ok(Done {
            result: json!({ "path": rel, "size": bytes.len(), "hash": hash }),
            events: vec![(
                "file_done",
                json!({ "path": rel, "size": bytes.len(), "hash": hash }),
            )],
            graph: None,
        })
    }

    /// `LLM_`: the model is VL's top-level `model`, else `in.model`, else the provider's. With
    /// `stream`, each piece of the reply is an `llm_token` event as it arrives (committed on its
    /// own, so followers see it live); `llm_done` commits with the step.
    fn llm(&self, step: &Step, key: &str, input: &Value) -> Result<Done, StepError> {
        let Some(p) = self.host.llm() else {
            return Err(StepError::new(
                ErrorKind::NoRunner,
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
        let model = step
            .model
            .as_deref()
            .or_else(|| input.get("model").and_then(Value::as_str));
        let mut tokens = 0u64;
        let text = if step.stream == Some(true) && !self.dry_run {
            let mut on_token = |t: &str| {
                tokens += 1;
                let r = self.host.store().write(|tx| {
                    journal::emit(
                        tx,
                        &self.run_id,
                        "llm_token",
                        Some((&step.id, key)),
                        json!({ "token": t, "index": tokens - 1 }),
                    )
                });
                match r {
                    Ok(_) => self.host.events_committed(),
                    // A lost token event loses no state: the reply is in `llm_done` and the
                    // step's result.
                    Err(e) => tracing::warn!(error = %e, "cannot record an llm_token event"),
                }
            };
            p.complete_streaming(model, &messages, &mut on_token)?
        } else {
            p.complete(model, &messages)?
        };
        let done_event = json!({ "model": model, "tokens": tokens, "chars": text.chars().count() });
        let result = if input.get("json").and_then(Value::as_bool) == Some(true) {
            serde_json::from_str(&text)
                .map_err(|e| StepError::new(ErrorKind::Llm, format!("reply is not JSON: {e}")))?
        } else {
            Value::String(text)
        };
        Ok(Done {
            result,
            events: vec![("llm_done", done_event)],
            graph: None,
        })
    }
}
