//! Wire types of the graph's past: `node.history` and `graph.export`, and the lines
//! `brain export` writes. Times are RFC 3339 UTC text, as everywhere on the wire.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EdgeWire, NodeWire, ProvenanceWire};
use crate::graph::{EdgeSpan, ExportPage, History, Instant, Version};

/// `node.history`.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeHistoryParams {
    pub id: String,
}

/// What a node held during one interval, with that time's citations.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct VersionWire {
    pub title: Option<String>,
    pub aliases: Vec<String>,
    pub props: Value,
    /// The node's file then, for a file's node.
    pub path: Option<String>,
    pub valid_from: String,
    /// Absent for the version that holds now.
    pub valid_to: Option<String>,
    pub provenance: Vec<ProvenanceWire>,
}

impl From<Version> for VersionWire {
    fn from(v: Version) -> Self {
        VersionWire {
            title: v.title,
            aliases: v.aliases,
            props: v.props,
            path: v.path,
            valid_from: v.valid_from,
            valid_to: v.valid_to,
            provenance: v.provenance.into_iter().map(Into::into).collect(),
        }
    }
}

/// An edge with the interval it held (`valid_to` absent while it holds).
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct EdgeSpanWire {
    #[serde(flatten)]
    pub edge: EdgeWire,
    pub valid_from: String,
    pub valid_to: Option<String>,
}

impl From<EdgeSpan> for EdgeSpanWire {
    fn from(e: EdgeSpan) -> Self {
        EdgeSpanWire {
            edge: e.edge.into(),
            valid_from: e.valid_from,
            valid_to: e.valid_to,
        }
    }
}

/// `node.history`: every version, oldest first; every edge from or to the node, newest first.
#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct NodeHistoryResult {
    /// The node as it is now, or was last when retired.
    pub node: NodeWire,
    pub versions: Vec<VersionWire>,
    pub edges: Vec<EdgeSpanWire>,
    /// Older versions or edges were left out (500 versions, 2000 edges at most).
    pub truncated: bool,
}

impl From<History> for NodeHistoryResult {
    fn from(h: History) -> Self {
        NodeHistoryResult {
            node: h.node.into(),
            versions: h.versions.into_iter().map(Into::into).collect(),
            edges: h.edges.into_iter().map(Into::into).collect(),
            truncated: h.truncated,
        }
    }
}

/// `graph.export`: one page of the whole graph as of one time.
#[derive(Debug, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportParams {
    /// RFC 3339 UTC; the first page's default is now. Later pages take the cursor's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub as_of: Option<String>,
    /// `next_cursor` of the page before; absent for the first page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
    /// Rows per page, 1 to 500 (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[derive(Debug, Serialize, Deserialize, JsonSchema)]
pub struct ExportPageWire {
    /// The time every page of this export shows the graph at.
    pub as_of: String,
    pub nodes: Vec<NodeWire>,
    pub edges: Vec<EdgeSpanWire>,
    /// Pass it back for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

impl ExportPageWire {
    pub fn new(at: &Instant, page: ExportPage) -> Self {
        ExportPageWire {
            as_of: at.as_str().to_owned(),
            next_cursor: page.next.and_then(|c| c.token(at)),
            nodes: page.nodes.into_iter().map(Into::into).collect(),
            edges: page.edges.into_iter().map(Into::into).collect(),
        }
    }
}

/// One line of `brain export --format jsonl`: `record` says which (an edge's own `type` is
/// its edge type).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "lowercase")]
pub enum ExportLine {
    Node(NodeWire),
    Edge(EdgeSpanWire),
}
