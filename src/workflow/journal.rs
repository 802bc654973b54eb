//! The run journal in SQLite: runs, steps, waits and events, each written inside the caller's
//! transaction so a state change and the event describing it commit together.
//!
//! Architecture Invariant: nothing here commits; the engine opens one transaction per commit
//! point (step started, step done, wait created or resolved) and calls in here.

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde_json::{Value, json};

use crate::clock;

/// A stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub run_id: String,
    pub seq: i64,
    pub ts: String,
    pub kind: String,
    pub step_id: Option<String>,
    pub step_key: Option<String>,
    pub payload: Value,
}

/// Appends an event; returns its sequence number (1-based, per run).
pub fn emit(
    tx: &Transaction<'_>,
    run_id: &str,
    kind: &str,
    step: Option<(&str, &str)>,
    payload: Value,
) -> rusqlite::Result<i64> {
    let seq: i64 = tx
        .prepare_cached("SELECT coalesce(max(seq), 0) + 1 FROM workflow_events WHERE run_id = ?1")?
        .query_row([run_id], |r| r.get(0))?;
    tx.prepare_cached(
        "INSERT INTO workflow_events(run_id, seq, ts, type, step_id, step_key, payload)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        run_id,
        seq,
        clock::now(),
        kind,
        step.map(|s| s.0),
        step.map(|s| s.1),
        payload.to_string()
    ])?;
    Ok(seq)
}

pub fn events(
    conn: &Connection,
    run_id: &str,
    since: i64,
    limit: i64,
) -> rusqlite::Result<Vec<Event>> {
    let mut stmt = conn.prepare_cached(
        "SELECT run_id, seq, ts, type, step_id, step_key, payload FROM workflow_events
         WHERE run_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![run_id, since, limit], |r| {
        let payload: String = r.get(6)?;
        Ok(Event {
            run_id: r.get(0)?,
            seq: r.get(1)?,
            ts: r.get(2)?,
            kind: r.get(3)?,
            step_id: r.get(4)?,
            step_key: r.get(5)?,
            payload: serde_json::from_str(&payload).unwrap_or(Value::Null),
        })
    })?;
    rows.collect()
}

/// How long a run has been running before `now`, over all its drives: from its start, a
/// resume or a fired timeout until it paused, and across a restart until its last event before
/// `run_recovered` (the daemon was down, not the run). Time spent paused does not count; the
/// pause limit bounds that.
pub fn running_time(
    conn: &Connection,
    run_id: &str,
    now: std::time::SystemTime,
) -> rusqlite::Result<std::time::Duration> {
    use std::time::{Duration, SystemTime};
    let mut stmt = conn.prepare_cached(
        "SELECT type, ts, prev_ts FROM (
             SELECT seq, type, ts, lag(ts) OVER (ORDER BY seq) AS prev_ts
             FROM workflow_events WHERE run_id = ?1)
         WHERE type IN ('workflow_start', 'workflow_resumed', 'pause_timeout', 'run_recovered',
                        'workflow_paused')
         ORDER BY seq",
    )?;
    let parse = |ts: &str| humantime::parse_rfc3339(ts).ok();
    let between = |from: SystemTime, to: SystemTime| to.duration_since(from).unwrap_or_default();
    let mut used = Duration::ZERO;
    let mut running_since: Option<SystemTime> = None;
    let mut rows = stmt.query([run_id])?;
    while let Some(r) = rows.next()? {
        let kind: String = r.get(0)?;
        let Some(ts) = parse(&r.get::<_, String>(1)?) else {
            continue;
        };
        match kind.as_str() {
            "workflow_paused" => {
                if let Some(s) = running_since.take() {
                    used += between(s, ts);
                }
            }
            "run_recovered" => {
                let stopped = r.get::<_, Option<String>>(2)?.and_then(|p| parse(&p));
                if let (Some(s), Some(stopped)) = (running_since, stopped) {
                    used += between(s, stopped);
                }
                running_since = Some(ts);
            }
            _ => {
                running_since.get_or_insert(ts);
            }
        }
    }
    if let Some(s) = running_since {
        used += between(s, now);
    }
    Ok(used)
}

/// A run as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RunRow {
    pub id: String,
    pub name: String,
    pub definition_hash: String,
    pub definition: Value,
    pub status: String,
    pub params: Value,
    pub vars: Value,
    pub workspace: String,
    pub dry_run: bool,
    pub trigger: Option<Value>,
    pub actor_id: String,
    pub error: Option<Value>,
    pub limits: Value,
    pub partial: bool,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
}

const RUN_COLS: &str = "r.id, d.name, r.definition_hash, d.body, r.status, r.params, r.vars, r.workspace,
     r.dry_run, r.trigger, r.actor_id, r.error, r.limits, r.partial, r.created_at, r.updated_at, r.finished_at";

fn json_col(s: Option<String>) -> Option<Value> {
    s.and_then(|s| serde_json::from_str(&s).ok())
}

fn run_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RunRow> {
    Ok(RunRow {
        id: r.get(0)?,
        name: r.get(1)?,
        definition_hash: r.get(2)?,
        definition: json_col(r.get(3)?).unwrap_or(Value::Null),
        status: r.get(4)?,
        params: json_col(r.get(5)?).unwrap_or(json!({})),
        vars: json_col(r.get(6)?).unwrap_or(json!({})),
        workspace: r.get(7)?,
        dry_run: r.get::<_, i64>(8)? != 0,
        trigger: json_col(r.get(9)?),
        actor_id: r.get(10)?,
        error: json_col(r.get(11)?),
        limits: json_col(r.get(12)?).unwrap_or(json!({})),
        partial: r.get::<_, i64>(13)? != 0,
        created_at: r.get(14)?,
        updated_at: r.get(15)?,
        finished_at: r.get(16)?,
    })
}

pub fn run(conn: &Connection, run_id: &str) -> rusqlite::Result<Option<RunRow>> {
    conn.prepare_cached(&format!(
        "SELECT {RUN_COLS} FROM workflow_runs r JOIN workflow_definitions d ON d.hash = r.definition_hash WHERE r.id = ?1"
    ))?
    .query_row([run_id], run_from_row)
    .optional()
}

pub fn runs(conn: &Connection, status: Option<&str>, limit: i64) -> rusqlite::Result<Vec<RunRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {RUN_COLS} FROM workflow_runs r JOIN workflow_definitions d ON d.hash = r.definition_hash
         WHERE ?1 IS NULL OR r.status = ?1 ORDER BY r.created_at DESC, r.id LIMIT ?2"
    ))?;
    let rows = stmt.query_map(params![status, limit], run_from_row)?;
    rows.collect()
}

pub fn run_ids_with_status(conn: &Connection, status: &str) -> rusqlite::Result<Vec<String>> {
    let mut stmt =
        conn.prepare_cached("SELECT id FROM workflow_runs WHERE status = ?1 ORDER BY created_at")?;
    let rows = stmt.query_map([status], |r| r.get(0))?;
    rows.collect()
}

pub fn run_status(conn: &Connection, run_id: &str) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached("SELECT status FROM workflow_runs WHERE id = ?1")?
        .query_row([run_id], |r| r.get(0))
        .optional()
}

pub fn set_status(
    tx: &Transaction<'_>,
    run_id: &str,
    status: &str,
    error: Option<&Value>,
) -> rusqlite::Result<()> {
    let now = clock::now();
    let finished = matches!(
        status,
        "completed" | "completed_partial" | "failed" | "cancelled"
    )
    .then_some(now.clone());
    tx.prepare_cached(
        "UPDATE workflow_runs SET status = ?2, error = coalesce(?3, error), updated_at = ?4,
                finished_at = coalesce(?5, finished_at) WHERE id = ?1",
    )?
    .execute(params![
        run_id,
        status,
        error.map(Value::to_string),
        now,
        finished
    ])?;
    Ok(())
}

pub fn set_vars(tx: &Transaction<'_>, run_id: &str, vars: &Value) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE workflow_runs SET vars = ?2, updated_at = ?3 WHERE id = ?1")?
        .execute(params![run_id, vars.to_string(), clock::now()])?;
    Ok(())
}

pub fn set_partial(tx: &Transaction<'_>, run_id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE workflow_runs SET partial = 1 WHERE id = ?1")?
        .execute([run_id])?;
    Ok(())
}

/// A journaled step.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub step_key: String,
    pub step_id: String,
    pub status: String,
    pub attempt: i64,
    pub output: Option<Value>,
    pub error: Option<Value>,
    pub started_at: String,
    pub finished_at: Option<String>,
}

const STEP_COLUMNS: &str =
    "step_key, step_id, status, attempt, output, error, started_at, finished_at";

fn step_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StepRow> {
    Ok(StepRow {
        step_key: r.get(0)?,
        step_id: r.get(1)?,
        status: r.get(2)?,
        attempt: r.get(3)?,
        output: json_col(r.get(4)?),
        error: json_col(r.get(5)?),
        started_at: r.get(6)?,
        finished_at: r.get(7)?,
    })
}

pub fn steps(conn: &Connection, run_id: &str) -> rusqlite::Result<Vec<StepRow>> {
    conn.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM workflow_steps WHERE run_id = ?1 ORDER BY started_at, step_key"
    ))?
    .query_map([run_id], step_row)?
    .collect()
}

pub fn step(conn: &Connection, run_id: &str, key: &str) -> rusqlite::Result<Option<StepRow>> {
    conn.prepare_cached(&format!(
        "SELECT {STEP_COLUMNS} FROM workflow_steps WHERE run_id = ?1 AND step_key = ?2"
    ))?
    .query_row([run_id, key], step_row)
    .optional()
}

/// Marks a step started (a re-run after a crash keeps its row and counts the attempt).
pub fn step_started(
    tx: &Transaction<'_>,
    run_id: &str,
    key: &str,
    step_id: &str,
    attempt: i64,
) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO workflow_steps(run_id, step_key, step_id, status, attempt, started_at)
         VALUES (?1, ?2, ?3, 'started', ?4, ?5)
         ON CONFLICT(run_id, step_key) DO UPDATE SET attempt = excluded.attempt, status = 'started'",
    )?
    .execute(params![run_id, key, step_id, attempt, clock::now()])?;
    Ok(())
}

/// Records a step's final state: `done`, `skipped` or `failed`, with its output or error.
pub fn step_finished(
    tx: &Transaction<'_>,
    run_id: &str,
    key: &str,
    step_id: &str,
    status: &str,
    output: Option<&Value>,
    error: Option<&Value>,
) -> rusqlite::Result<()> {
    let now = clock::now();
    tx.prepare_cached(
        "INSERT INTO workflow_steps(run_id, step_key, step_id, status, attempt, output, error, started_at, finished_at)
         VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6, ?7, ?7)
         ON CONFLICT(run_id, step_key) DO UPDATE SET status = excluded.status, output = excluded.output,
             error = excluded.error, finished_at = excluded.finished_at",
    )?
    .execute(params![
        run_id,
        key,
        step_id,
        status,
        output.map(Value::to_string),
        error.map(Value::to_string),
        now
    ])?;
    Ok(())
}

/// Stores what a step is about to do outside the store (a file write), so a re-run after a
/// crash can tell whether it already happened.
pub fn step_intent(
    tx: &Transaction<'_>,
    run_id: &str,
    key: &str,
    intent: &Value,
) -> rusqlite::Result<()> {
    tx.prepare_cached("UPDATE workflow_steps SET output = ?3 WHERE run_id = ?1 AND step_key = ?2")?
        .execute(params![
            run_id,
            key,
            json!({ "intent": intent }).to_string()
        ])?;
    Ok(())
}

/// A wait as stored; never holds the token itself.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitRow {
    pub id: String,
    pub run_id: String,
    pub step_key: String,
    pub step_id: String,
    pub kind: String,
    pub reason: Option<String>,
    pub preview: Option<Value>,
    pub token_hash: String,
    pub status: String,
    pub expires_at: Option<String>,
    pub on_expiry: String,
    pub request_id: Option<String>,
    pub resolution: Option<Value>,
    pub resolved_by: Option<String>,
    pub created_at: String,
    pub resolved_at: Option<String>,
}

const WAIT_COLS: &str =
    "id, run_id, step_key, step_id, kind, reason, preview, token_hash, status, expires_at,
     on_expiry, request_id, resolution, resolved_by, created_at, resolved_at";

fn wait_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<WaitRow> {
    Ok(WaitRow {
        id: r.get(0)?,
        run_id: r.get(1)?,
        step_key: r.get(2)?,
        step_id: r.get(3)?,
        kind: r.get(4)?,
        reason: r.get(5)?,
        preview: json_col(r.get(6)?),
        token_hash: r.get(7)?,
        status: r.get(8)?,
        expires_at: r.get(9)?,
        on_expiry: r.get(10)?,
        request_id: r.get(11)?,
        resolution: json_col(r.get(12)?),
        resolved_by: r.get(13)?,
        created_at: r.get(14)?,
        resolved_at: r.get(15)?,
    })
}

pub fn waits(conn: &Connection, run_id: &str) -> rusqlite::Result<Vec<WaitRow>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {WAIT_COLS} FROM workflow_waits WHERE run_id = ?1 ORDER BY created_at, id"
    ))?;
    let rows = stmt.query_map([run_id], wait_from_row)?;
    rows.collect()
}

pub fn wait(conn: &Connection, wait_id: &str) -> rusqlite::Result<Option<WaitRow>> {
    conn.prepare_cached(&format!(
        "SELECT {WAIT_COLS} FROM workflow_waits WHERE id = ?1"
    ))?
    .query_row([wait_id], wait_from_row)
    .optional()
}

/// The open wait of a step, if any.
pub fn open_wait_for(
    conn: &Connection,
    run_id: &str,
    key: &str,
) -> rusqlite::Result<Option<WaitRow>> {
    conn.prepare_cached(&format!(
        "SELECT {WAIT_COLS} FROM workflow_waits WHERE run_id = ?1 AND step_key = ?2 AND status = 'open'"
    ))?
    .query_row([run_id, key], wait_from_row)
    .optional()
}

pub fn open_waits(conn: &Connection, run_id: &str) -> rusqlite::Result<i64> {
    conn.prepare_cached(
        "SELECT count(*) FROM workflow_waits WHERE run_id = ?1 AND status = 'open'",
    )?
    .query_row([run_id], |r| r.get(0))
}

/// Open waits whose expiry has passed, and the next expiry after `now`.
pub fn expired_waits(
    conn: &Connection,
    now: &str,
) -> rusqlite::Result<(Vec<WaitRow>, Option<String>)> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {WAIT_COLS} FROM workflow_waits WHERE status = 'open' AND expires_at <= ?1"
    ))?;
    let due: Vec<WaitRow> = stmt
        .query_map([now], wait_from_row)?
        .collect::<Result<_, _>>()?;
    let next: Option<String> = conn
        .prepare_cached(
            "SELECT min(expires_at) FROM workflow_waits WHERE status = 'open' AND expires_at > ?1",
        )?
        .query_row([now], |r| r.get(0))?;
    Ok((due, next))
}

#[allow(clippy::too_many_arguments)]
pub fn insert_wait(tx: &Transaction<'_>, w: &WaitRow) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "INSERT INTO workflow_waits(id, run_id, step_key, step_id, kind, reason, preview, token_hash, status,
                                    expires_at, on_expiry, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'open', ?9, ?10, ?11)",
    )?
    .execute(params![
        w.id,
        w.run_id,
        w.step_key,
        w.step_id,
        w.kind,
        w.reason,
        w.preview.as_ref().map(Value::to_string),
        w.token_hash,
        w.expires_at,
        w.on_expiry,
        w.created_at
    ])?;
    Ok(())
}

/// Compare-and-set on an open wait: true when this call resolved it.
pub fn resolve_wait(
    tx: &Transaction<'_>,
    wait_id: &str,
    status: &str,
    request_id: Option<&str>,
    resolution: &Value,
    by: &str,
) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE workflow_waits SET status = ?2, request_id = ?3, resolution = ?4, resolved_by = ?5, resolved_at = ?6
             WHERE id = ?1 AND status = 'open'",
        )?
        .execute(params![wait_id, status, request_id, resolution.to_string(), by, clock::now()])?;
    Ok(n == 1)
}

pub fn set_token_hash(tx: &Transaction<'_>, wait_id: &str, hash: &str) -> rusqlite::Result<bool> {
    let n = tx
        .prepare_cached(
            "UPDATE workflow_waits SET token_hash = ?2 WHERE id = ?1 AND status = 'open'",
        )?
        .execute([wait_id, hash])?;
    Ok(n == 1)
}

pub fn cancel_waits(tx: &Transaction<'_>, run_id: &str) -> rusqlite::Result<()> {
    tx.prepare_cached(
        "UPDATE workflow_waits SET status = 'cancelled', resolved_at = ?2 WHERE run_id = ?1 AND status = 'open'",
    )?
    .execute([run_id, &clock::now()])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `events` are `(type, seconds after 10:00:00)`; `now` likewise.
    fn check(events: &[(&str, u64)], now: u64, expected_secs: u64) {
        let c = Connection::open_in_memory().unwrap();
        c.execute_batch(
            "CREATE TABLE workflow_events (run_id TEXT, seq INTEGER, ts TEXT, type TEXT,
                                           step_id TEXT, step_key TEXT, payload TEXT)",
        )
        .unwrap();
        let at = |s: u64| {
            humantime::parse_rfc3339("2026-01-01T10:00:00Z").unwrap()
                + std::time::Duration::from_secs(s)
        };
        for (i, (kind, s)) in events.iter().enumerate() {
            c.execute(
                "INSERT INTO workflow_events VALUES ('r', ?1, ?2, ?3, NULL, NULL, '{}')",
                params![i as i64 + 1, clock::format(at(*s)), kind],
            )
            .unwrap();
        }
        let got = running_time(&c, "r", at(now)).unwrap().as_secs();
        assert_eq!(got, expected_secs, "{events:?} now {now}");
    }

    #[test]
    fn running_time_spans_drives_but_not_pauses_or_downtime() {
        check(&[("workflow_start", 0)], 5, 5);
        // Paused from 3 to 10, running again until 12.
        let paused = [
            ("workflow_start", 0),
            ("step_done", 3),
            ("workflow_paused", 3),
            ("workflow_resumed", 10),
        ];
        check(&paused, 12, 5);
        // A timeout resumes it too.
        check(
            &[
                ("workflow_start", 0),
                ("workflow_paused", 2),
                ("pause_timeout", 7),
            ],
            8,
            3,
        );
        // The daemon died after its last event at 4 and came back at 100.
        check(
            &[
                ("workflow_start", 0),
                ("step_done", 4),
                ("run_recovered", 100),
            ],
            101,
            5,
        );
    }
}
