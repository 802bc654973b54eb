//! Wire types of `graph.recent`: the latest changes to notes and written nodes.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::brain::{Change, RecentChange, RecentQuery, Via};

/// `graph.recent`: newest first.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RecentParams {
    /// Only changes at or after this time (RFC 3339 UTC, `2026-12-07T10:00:00Z`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// How many changes (1 to 200; 20 when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Changes to skip, for the next page (at most 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<usize>,
    /// Only nodes of these kinds (`note`, `person`, ...); every kind when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
}

/// What happened to the node last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChangeWire {
    Created,
    Updated,
    Retired,
}

/// Through what the change was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ViaWire {
    File,
    Client,
    Workflow,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RecentChangeWire {
    pub id: String,
    pub kind: String,
    pub title: Option<String>,
    /// Absolute path of the note's file; none for a node a client wrote.
    pub path: Option<String>,
    pub change: ChangeWire,
    /// When (RFC 3339 UTC).
    pub at: String,
    /// The user who acted.
    pub actor_id: String,
    pub via: ViaWire,
    /// The label the writing client gave (`claude-desktop`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The workflow run that wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// blake3 of the file version the note was last read from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RecentResult {
    pub changes: Vec<RecentChangeWire>,
    /// Whether older changes remain: ask again with `offset` + the changes received.
    pub more: bool,
}

impl From<RecentParams> for RecentQuery {
    fn from(p: RecentParams) -> Self {
        RecentQuery {
            since: p.since,
            limit: p.limit,
            offset: p.offset,
            kinds: p.kinds,
        }
    }
}

impl From<RecentChange> for RecentChangeWire {
    fn from(c: RecentChange) -> Self {
        RecentChangeWire {
            id: c.id,
            kind: c.kind,
            title: c.title,
            path: c.path,
            change: match c.change {
                Change::Created => ChangeWire::Created,
                Change::Updated => ChangeWire::Updated,
                Change::Retired => ChangeWire::Retired,
            },
            at: c.at,
            actor_id: c.actor_id,
            via: match c.via {
                Via::File => ViaWire::File,
                Via::Client => ViaWire::Client,
                Via::Workflow => ViaWire::Workflow,
            },
            client: c.client,
            run_id: c.run_id,
            content_hash: c.content_hash,
        }
    }
}

impl RecentResult {
    pub fn new(changes: Vec<RecentChange>, more: bool) -> Self {
        RecentResult {
            changes: changes.into_iter().map(Into::into).collect(),
            more,
        }
    }
}
