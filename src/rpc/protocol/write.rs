//! Wire types of the graph and note writes clients make (`node.upsert`, `edge.link`,
//! `node.retire`, `edge.retire`, `note.write`) and of `store.backup`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `node.upsert`: idempotent by `kind` + `key`, as the `Upsert_` workflow step.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeUpsertParams {
    /// What the node is (`person`, `project`, `concept`, ...); not a kind brain derives from
    /// files (`note`, `section`, `chunk`, `tag`, ...).
    pub kind: String,
    /// The node's identity within its kind: the same kind and key update the same node.
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Properties, replacing the node's when given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<Map<String, Value>>,
    /// Tags to attach (`#a/b` or `a/b`); existing tags stay.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Text kept with the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Who is writing (`claude-desktop`, a script's name), recorded in the provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// `edge.link`: idempotent by `from` + `to` + `type`.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeLinkParams {
    /// The source node's id.
    pub from: String,
    /// The target node's id.
    pub to: String,
    /// The relation (`works_on`, `related`, ...); not a type brain derives from files.
    #[serde(rename = "type")]
    pub edge_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub props: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// `node.upsert` and `edge.link`: the written fact's id, and whether it is new.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct WriteResult {
    pub id: String,
    pub created: bool,
}

/// `node.retire`, `edge.retire`: the fact stops being current (it is kept, with `valid_to`).
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetireParams {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct RetireResult {
    pub id: String,
    /// When the fact stopped being current.
    pub valid_to: String,
    /// With a node: how many of its edges were retired with it.
    pub edges_retired: u64,
}

/// How `note.write` treats a file already at the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NoteWriteMode {
    /// Refuse if the file exists.
    Create,
    /// Write the file whole, whether it exists or not.
    Replace,
    /// Add to the end of the file (creating it if missing).
    Append,
}

/// `note.write`: a Markdown file inside a watched root, then ingested.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NoteWriteParams {
    /// Absolute path of the file, inside a watched folder.
    pub path: String,
    pub content: String,
    pub mode: NoteWriteMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct NoteWriteResult {
    /// The note's node id, as `node.get` knows it.
    pub id: String,
    pub path: String,
    /// Whether the file was new.
    pub created: bool,
    /// The file's size after the write.
    pub bytes: u64,
    /// blake3 of the file as written.
    pub content_hash: String,
}

/// `store.backup`: a consistent copy of the store, made while the daemon runs.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackupParams {
    /// Absolute path of the copy; must not exist yet.
    pub path: String,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct BackupResult {
    pub path: String,
    pub bytes: u64,
}

impl From<NodeUpsertParams> for crate::workflow::steps::GraphWrite {
    fn from(p: NodeUpsertParams) -> Self {
        crate::workflow::steps::GraphWrite::Upsert {
            kind: p.kind,
            key: p.key,
            title: p.title,
            props: p.props.map(Value::Object),
            tags: p.tags,
            content: p.content,
        }
    }
}

impl From<EdgeLinkParams> for crate::workflow::steps::GraphWrite {
    fn from(p: EdgeLinkParams) -> Self {
        crate::workflow::steps::GraphWrite::Link {
            from: p.from,
            to: p.to,
            edge_type: p.edge_type,
            props: p.props.map(Value::Object),
        }
    }
}

impl From<NoteWriteMode> for crate::brain::NoteMode {
    fn from(m: NoteWriteMode) -> Self {
        match m {
            NoteWriteMode::Create => crate::brain::NoteMode::Create,
            NoteWriteMode::Replace => crate::brain::NoteMode::Replace,
            NoteWriteMode::Append => crate::brain::NoteMode::Append,
        }
    }
}

impl RetireResult {
    pub fn new(id: String, r: crate::brain::Retired) -> Self {
        RetireResult {
            id,
            valid_to: r.valid_to,
            edges_retired: r.edges_retired,
        }
    }
}

impl From<crate::brain::NoteWritten> for NoteWriteResult {
    fn from(w: crate::brain::NoteWritten) -> Self {
        NoteWriteResult {
            id: w.node_id,
            path: w.path.display().to_string(),
            created: w.created,
            bytes: w.bytes,
            content_hash: w.content_hash,
        }
    }
}
