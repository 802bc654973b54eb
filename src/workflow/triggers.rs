//! Triggers: a workflow attached to file events under a glob (created, changed), to a note
//! gaining a tag whose name matches a glob (`tag_added`), or to a schedule (`every 1h`). A
//! triggered run is an ordinary run with its trigger recorded.
//!
//! File and tag events come from ingest after each successful sync (the façade wires the hook);
//! the tags a note gained are read back from the graph's `tagged` edges. Schedules are checked by
//! the engine's timer thread. Architecture Invariant: a trigger pins
//! its definition by hash when it is created, like a run does.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use super::engine::{Engine, RunOptions};
use super::files;
use crate::clock;
use crate::error::{Error, Kind};
use crate::ingest::{FileChange, RootInfo};

pub const EVENTS: [&str; 4] = ["file_created", "file_changed", "tag_added", "schedule"];

/// A trigger as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Trigger {
    pub name: String,
    pub workflow: String,
    pub definition_hash: String,
    pub event: String,
    pub pattern: String,
    pub params: Value,
    pub enabled: bool,
    /// File triggers: run with the watched root as the workspace.
    pub in_root: bool,
    pub created_by: String,
    pub created_at: String,
    pub last_fired_at: Option<String>,
}

/// `every 90s`, `every 1h 30m` → the interval.
pub fn parse_schedule(pattern: &str) -> Result<Duration, String> {
    let rest = pattern.trim().strip_prefix("every ").ok_or_else(|| {
        format!("schedule {pattern:?} must read `every DURATION`, e.g. `every 1h`")
    })?;
    let d =
        humantime::parse_duration(rest.trim()).map_err(|e| format!("schedule {pattern:?}: {e}"))?;
    if d < Duration::from_secs(1) {
        return Err(format!("schedule {pattern:?} is shorter than a second"));
    }
    Ok(d)
}

impl Engine {
    /// Attaches a valid document to an event. `params` are the runs' params.
    pub fn trigger_add(
        &self,
        name: &str,
        doc: &Value,
        event: &str,
        pattern: &str,
        params: Map<String, Value>,
        in_root: bool,
    ) -> Result<Trigger, Error> {
        if !EVENTS.contains(&event) {
            return Err(Error::new(
                Kind::InvalidParams,
                format!("event must be one of {}", EVENTS.join(", ")),
            ));
        }
        match event {
            "schedule" => {
                parse_schedule(pattern).map_err(|m| Error::new(Kind::InvalidParams, m))?;
            }
            _ => files::check_glob(pattern).map_err(|m| Error::new(Kind::InvalidParams, m))?,
        }
        let (report, parsed) = super::validate(doc, self.runners());
        let Some(parsed) = parsed else {
            return Err(Error::new(
                Kind::WorkflowInvalid,
                format!("workflow has {} validation errors", report.errors.len()),
            ));
        };
        let canonical = doc.to_string();
        let hash = files::hash(canonical.as_bytes());
        let now = clock::now();
        let user = self.inner.cfg.user.clone();
        self.inner.store.write(|tx| -> Result<(), Error> {
            tx.execute(
                "INSERT INTO workflow_definitions(hash, name, body, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                params![hash, parsed.name, canonical, now],
            )?;
            tx.execute(
                "INSERT INTO workflow_triggers(name, definition_hash, event, pattern, params, created_by, created_at, in_root)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT(name) DO UPDATE SET definition_hash = excluded.definition_hash, event = excluded.event,
                     pattern = excluded.pattern, params = excluded.params, in_root = excluded.in_root, enabled = 1",
                params![name, hash, event, pattern, Value::Object(params).to_string(), user, now, in_root as i64],
            )?;
            Ok(())
        })?;
        self.inner.poke_timer();
        self.triggers()?
            .into_iter()
            .find(|t| t.name == name)
            .ok_or_else(|| Error::new(Kind::Internal, "trigger vanished"))
    }

    pub fn trigger_remove(&self, name: &str) -> Result<(), Error> {
        let n = self
            .inner
            .store
            .write(|tx| tx.execute("DELETE FROM workflow_triggers WHERE name = ?1", [name]))?;
        if n == 0 {
            return Err(Error::new(Kind::NotFound, format!("no trigger {name:?}")));
        }
        Ok(())
    }

    pub fn triggers(&self) -> Result<Vec<Trigger>, Error> {
        Ok(self.inner.store.read(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT t.name, d.name, t.definition_hash, t.event, t.pattern, t.params, t.enabled, t.created_by,
                        t.created_at, t.last_fired_at, t.in_root
                 FROM workflow_triggers t JOIN workflow_definitions d ON d.hash = t.definition_hash ORDER BY t.name",
            )?;
            let rows = stmt.query_map([], |r| {
                let params: String = r.get(5)?;
                Ok(Trigger {
                    name: r.get(0)?,
                    workflow: r.get(1)?,
                    definition_hash: r.get(2)?,
                    event: r.get(3)?,
                    pattern: r.get(4)?,
                    params: serde_json::from_str(&params).unwrap_or(json!({})),
                    enabled: r.get::<_, i64>(6)? != 0,
                    created_by: r.get(7)?,
                    created_at: r.get(8)?,
                    last_fired_at: r.get(9)?,
                    in_root: r.get::<_, i64>(10)? != 0,
                })
            })?;
            rows.collect::<rusqlite::Result<Vec<_>>>()
        })?)
    }

    /// Starts the runs of file and tag triggers for the files a sync indexed.
    pub fn on_sync(&self, root: &RootInfo, changes: &[FileChange]) {
        for c in changes {
            self.on_file(&root.path, &c.rel, &c.abs, c.created);
        }
        let tag_triggers: Vec<Trigger> = match self.triggers() {
            Ok(t) => t
                .into_iter()
                .filter(|t| t.enabled && t.event == "tag_added")
                .collect(),
            Err(e) => {
                warn!(error = %e, "cannot read triggers");
                return;
            }
        };
        if tag_triggers.is_empty() {
            return;
        }
        for c in changes {
            let added = self
                .inner
                .store
                .read(|conn| tags_added(conn, root.id, &c.rel, &c.sync_started_at));
            let (note_id, tags) = match added {
                Ok(Some(x)) => x,
                Ok(None) => continue,
                Err(e) => {
                    warn!(error = %e, "cannot read the tags a note gained");
                    continue;
                }
            };
            for tag in &tags {
                // Tags are one tag whatever their case (their node key is lowercase).
                let lower = tag.to_lowercase();
                for t in tag_triggers.iter().filter(|t| {
                    files::matches_any(&[t.pattern.as_str()], tag)
                        || files::matches_any(&[t.pattern.as_str()], &lower)
                }) {
                    let trigger = json!({ "name": t.name, "event": "tag_added", "tag": tag, "note_id": note_id,
                                          "root": root.path.display().to_string(), "path": c.abs.display().to_string(), "rel": c.rel });
                    let workspace = t.in_root.then(|| root.path.clone());
                    self.fire(t, trigger, workspace);
                }
            }
        }
    }

    /// Starts the runs of file triggers matching an indexed file.
    pub fn on_file(&self, root: &Path, rel: &str, abs: &Path, created: bool) {
        let event = if created {
            "file_created"
        } else {
            "file_changed"
        };
        let triggers = match self.triggers() {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "cannot read triggers");
                return;
            }
        };
        for t in triggers.into_iter().filter(|t| {
            t.enabled && t.event == event && files::matches_any(&[t.pattern.as_str()], rel)
        }) {
            let trigger = json!({ "name": t.name, "event": event, "root": root.display().to_string(), "path": abs.display().to_string(), "rel": rel });
            let workspace = t.in_root.then(|| root.to_owned());
            self.fire(&t, trigger, workspace);
        }
    }

    /// Fires schedule triggers that are due; returns how long until the next one.
    pub(super) fn fire_schedules(&self) -> Duration {
        let mut next = super::engine::IDLE_WAKE;
        let Ok(triggers) = self.triggers() else {
            return next;
        };
        let now = SystemTime::now();
        for t in triggers
            .into_iter()
            .filter(|t| t.enabled && t.event == "schedule")
        {
            let Ok(every) = parse_schedule(&t.pattern) else {
                continue;
            };
            let last = t.last_fired_at.as_deref().unwrap_or(&t.created_at);
            let Ok(last) = humantime::parse_rfc3339(last) else {
                continue;
            };
            let due = last + every;
            match due.duration_since(now) {
                Ok(wait) => next = next.min(wait),
                Err(_) => {
                    self.fire(
                        &t,
                        json!({ "name": t.name, "event": "schedule", "at": clock::now() }),
                        None,
                    );
                    next = next.min(every);
                }
            }
        }
        next
    }

    fn fire(&self, t: &Trigger, trigger: Value, workspace: Option<std::path::PathBuf>) {
        let body: Option<String> = self
            .inner
            .store
            .read(|c| {
                c.query_row(
                    "SELECT body FROM workflow_definitions WHERE hash = ?1",
                    [&t.definition_hash],
                    |r| r.get(0),
                )
                .optional()
            })
            .ok()
            .flatten();
        let Some(doc) = body.and_then(|b| serde_json::from_str::<Value>(&b).ok()) else {
            warn!(trigger = %t.name, "trigger's definition is missing");
            return;
        };
        let _ = self.inner.store.write(|tx| {
            tx.execute(
                "UPDATE workflow_triggers SET last_fired_at = ?2 WHERE name = ?1",
                params![t.name, clock::now()],
            )
        });
        let opts = RunOptions {
            params: t.params.as_object().cloned().unwrap_or_default(),
            trigger: Some(trigger),
            workspace,
            ..RunOptions::default()
        };
        match self.run(&doc, opts) {
            Ok(id) => info!(trigger = %t.name, run_id = %id, "trigger started a run"),
            Err(e) => warn!(trigger = %t.name, error = %e, "trigger could not start a run"),
        }
    }
}

/// The note of a live file and the tags it gained in the sync that began at `since`: current
/// `tagged` edges from the note that began then or later, and that do not merely re-state a
/// `tagged` edge to the same tag retired at that same moment.
fn tags_added(
    conn: &Connection,
    root_id: i64,
    rel: &str,
    since: &str,
) -> rusqlite::Result<Option<(String, Vec<String>)>> {
    let note: Option<String> = conn
        .prepare_cached(
            "SELECT n.id FROM sources s
             JOIN nodes n ON n.source_id = s.id AND n.kind = 'note' AND n.valid_to IS NULL
             WHERE s.root_id = ?1 AND s.rel_path = ?2 AND s.deleted_at IS NULL",
        )?
        .query_row(params![root_id, rel], |r| r.get(0))
        .optional()?;
    let Some(note) = note else { return Ok(None) };
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT coalesce(t.title, t.key) FROM edges e
         JOIN nodes t ON t.id = e.dst_id
         WHERE e.src_id = ?1 AND e.type = 'tagged' AND e.valid_to IS NULL AND e.valid_from >= ?2
           AND NOT EXISTS (SELECT 1 FROM edges r
                           WHERE r.src_id = e.src_id AND r.dst_id = e.dst_id AND r.type = 'tagged'
                             AND r.valid_to = e.valid_from)
         ORDER BY 1",
    )?;
    let tags = stmt
        .query_map(params![note, since], |r| r.get::<_, String>(0))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(Some((note, tags)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        assert_eq!(parse_schedule("every 1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_schedule("every 90s"), Ok(Duration::from_secs(90)));
        assert!(parse_schedule("hourly").is_err());
        assert!(parse_schedule("every 1ms").is_err());
    }
}
