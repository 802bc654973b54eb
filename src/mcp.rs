//! `brain mcp`: an MCP server on stdin/stdout that answers from the running daemon.
//!
//! Every tool is one socket method: its input schema is the method's params schema and its
//! output schema the method's result schema, both from `rpc::protocol`, and a call is that
//! method through `rpc::client`. Notes are resources `brain://node/ID`.
//! Architecture Invariant: knows nothing of the store or the engine; it is a client like the
//! CLI, so a daemon that is down or restarted never takes it down — each call connects anew
//! and a failure is the tool's error result, saying how to start the daemon.

use std::borrow::Cow;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListResourceTemplatesResult, ListResourcesResult, ListToolsResult, PaginatedRequestParams,
    ReadResourceRequestParams, ReadResourceResponse, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate, ServerCapabilities, ServerConfig, Tool, ToolAnnotations,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData, RoleServer, ServerHandler, ServiceExt};
use serde_json::{Map, Value};

use crate::rpc::client::{Client, ClientError};
use crate::rpc::protocol::methods::{self as m, Method, schema_of};
use crate::rpc::protocol::recent::{ChangeWire, RecentChangeWire, RecentParams};
use crate::rpc::protocol::{DirectionWire, NeighborsParams, NodeGetParams, NodeWire};

/// The URI prefix of a node resource.
pub const NODE_URI: &str = "brain://node/";

/// Resources one `resources/list` page holds: the most recently changed notes and nodes first,
/// the next page through the cursor.
pub const RESOURCE_PAGE: usize = 50;

/// Chunks of a note a resource read gathers: the most one `graph.neighbors` answers (the
/// daemon clamps larger limits to it), so a note past it reads as its first chunks.
const MAX_NOTE_CHUNKS: usize = 1000;

/// A changed node as a resource a client can list and read.
fn resource(c: RecentChangeWire) -> Resource {
    let note = matches!(c.kind.as_str(), "note" | "file");
    let mut description = format!("{} {} {}", c.kind, change_word(c.change), c.at);
    if let Some(p) = &c.path {
        description.push_str(&format!(" ({p})"));
    }
    let mut r = Resource::new(
        format!("{NODE_URI}{}", c.id),
        c.title.clone().unwrap_or_else(|| c.id.clone()),
    )
    .with_description(description)
    .with_mime_type(if note {
        "text/markdown"
    } else {
        "application/json"
    });
    if let Some(t) = c.title {
        r = r.with_title(t);
    }
    r
}

fn change_word(c: ChangeWire) -> &'static str {
    match c {
        ChangeWire::Created => "created",
        ChangeWire::Updated => "updated",
        ChangeWire::Retired => "retired",
    }
}

/// How a tool touches the brain, for the MCP annotations a client shows or gates on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Reads only; calling it twice answers the same.
    Read,
    /// Writes; calling it again with the same input changes nothing more.
    IdempotentWrite,
    /// Writes; calling it again does something again (a new run, an append).
    Write,
    /// Retires facts: they leave the current graph (kept as history).
    Destructive,
}

/// One tool: its name, what a model should know to choose it, and the method behind it.
struct ToolDef {
    name: &'static str,
    description: &'static str,
    effect: Effect,
    method: &'static str,
    input: Value,
    output: Value,
}

fn tool<M: Method>(name: &'static str, effect: Effect, description: &'static str) -> ToolDef {
    ToolDef {
        name,
        description,
        effect,
        method: M::NAME,
        input: schema_of::<M::Params>(),
        output: schema_of::<M::Result>(),
    }
}

/// The tools, each a socket method. Names say what they do; descriptions say when to use
/// them rather than a neighbour.
fn tools() -> Vec<ToolDef> {
    use Effect::*;
    vec![
        tool::<m::SearchQuery>(
            "search_notes",
            Read,
            "Search the user's notes by words and meaning (hybrid BM25 + embeddings). Use this \
             first to find what the user has written about a topic. Each hit cites its file \
             path, line range and content hash; pass its node_id to get_node for the whole note.",
        ),
        tool::<m::NodeSearchTitle>(
            "search_titles",
            Read,
            "Find notes whose title or alias matches a name (fuzzy). Use when you know roughly \
             what a note is called; use search_notes to search inside notes.",
        ),
        tool::<m::NodeGet>(
            "get_node",
            Read,
            "Get one node (a note, section, tag, or a node written by a client) by id, by \
             absolute file path or by exact title, with its properties and citations: which \
             file, lines and version each fact came from, and who wrote it.",
        ),
        tool::<m::GraphNeighbors>(
            "graph_neighbors",
            Read,
            "List the nodes connected to a node (links, tags, sections, typed relations), with \
             the edges. direction out = what it points to, in = what points to it.",
        ),
        tool::<m::GraphBacklinks>(
            "graph_backlinks",
            Read,
            "List the notes that link to a node. Use to see where a note or idea is referenced.",
        ),
        tool::<m::NodeHistory>(
            "node_history",
            Read,
            "Every version of a node (what a note or written node said, and when) and every \
             edge it ever had, each with valid_from/valid_to and its citations. Use to see how \
             something changed; get_node with as_of answers one past moment.",
        ),
        tool::<m::GraphRecent>(
            "recent_changes",
            Read,
            "What changed lately: notes and written nodes created, updated or retired, newest \
             first, each with its time, title, file path and who wrote it (a file, a client \
             such as claude-desktop, or a workflow run). Use to catch up on what the user or \
             other tools did since a time (since), or to find a note just written.",
        ),
        tool::<m::DaemonStatus>(
            "brain_status",
            Read,
            "The brain daemon's state: counts of notes and facts, watched folders, search index \
             and embedding progress. Use to check that the brain is up and what it holds.",
        ),
        tool::<m::NoteWrite>(
            "write_note",
            Write,
            "Write a Markdown note (create a new file, replace one, or append to one) at an \
             absolute path inside a folder brain watches, then index it: the note is searchable \
             when this returns. Use for anything the user should be able to read and edit as a \
             file.",
        ),
        tool::<m::NodeUpsert>(
            "upsert_node",
            IdempotentWrite,
            "Create or update a structured node (a person, project, concept...) identified by \
             kind + key; the same kind and key always update the same node. Use for facts that \
             are not a note file. Returns the node id for link_nodes.",
        ),
        tool::<m::EdgeLink>(
            "link_nodes",
            IdempotentWrite,
            "Create or update a typed edge from one node id to another (works_on, related, \
             ...). Linking the same pair with the same type again updates the same edge.",
        ),
        tool::<m::NodeRetire>(
            "retire_node",
            Destructive,
            "Retire a node written by upsert_node, with its edges: it leaves the current graph \
             but is kept in history. Notes read from files cannot be retired this way.",
        ),
        tool::<m::EdgeRetire>(
            "retire_edge",
            Destructive,
            "Retire an edge written by link_nodes: it leaves the current graph but is kept in \
             history.",
        ),
        tool::<m::WorkflowRun>(
            "workflow_run",
            Write,
            "Start a workflow run from a brain/1 workflow document (inline) or a workflow file \
             (absolute path). Returns a run_id; check it with workflow_get.",
        ),
        tool::<m::WorkflowList>(
            "workflow_list",
            Read,
            "List recent workflow runs with their status (running, paused, completed, failed).",
        ),
        tool::<m::WorkflowGet>(
            "workflow_get",
            Read,
            "A workflow run's status, steps and open waits. A paused run lists its waits; pass \
             a wait_id to workflow_resume to continue it.",
        ),
        tool::<m::WorkflowResume>(
            "workflow_resume",
            IdempotentWrite,
            "Approve (or deny, approved: false) a paused workflow run's wait so it continues. \
             request_id makes the call idempotent: repeating it returns the first outcome.",
        ),
    ]
}

impl ToolDef {
    fn to_tool(&self) -> Tool {
        let annotations = ToolAnnotations::new()
            .read_only(self.effect == Effect::Read)
            .destructive(self.effect == Effect::Destructive)
            .idempotent(matches!(
                self.effect,
                Effect::Read | Effect::IdempotentWrite
            ))
            .open_world(false);
        let mut t = Tool::new(self.name, self.description, Arc::new(object(&self.input)))
            .with_annotations(annotations);
        t.output_schema = Some(Arc::new(object(&self.output)));
        t
    }
}

fn object(v: &Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap_or_default()
}

/// The server: where the daemon is, and how long a call may wait for it.
#[derive(Clone)]
pub struct BrainMcp {
    socket: PathBuf,
    timeout: Duration,
    tools: Arc<Vec<ToolDef>>,
}

impl BrainMcp {
    pub fn new(socket: PathBuf, timeout: Duration) -> BrainMcp {
        BrainMcp {
            socket,
            timeout,
            tools: Arc::new(tools()),
        }
    }

    /// Calls method `M` on a fresh connection, on a blocking thread (the client is blocking).
    async fn request<M: Method>(&self, params: M::Params) -> Result<M::Result, ClientError>
    where
        M::Params: Send + 'static,
        M::Result: Send + 'static,
    {
        let (socket, timeout) = (self.socket.clone(), self.timeout);
        tokio::task::spawn_blocking(move || {
            Client::connect_timeout(&socket, Some(timeout))?.request::<M>(&params)
        })
        .await
        .map_err(|e| ClientError::Protocol(format!("call interrupted: {e}")))?
    }

    /// A note's text as brain indexed it: its chunks in file order, each the exact bytes its
    /// citation names, so what a client reads is what search cites.
    async fn note_text(&self, id: &str) -> Result<String, ClientError> {
        let g = self
            .request::<m::GraphNeighbors>(NeighborsParams {
                id: id.to_owned(),
                direction: DirectionWire::Out,
                edge_types: vec!["has_chunk".into()],
                depth: Some(1),
                limit: Some(MAX_NOTE_CHUNKS),
                as_of: None,
            })
            .await?;
        let mut chunks: Vec<(u64, String)> = g
            .nodes
            .into_iter()
            .filter(|n| n.kind == "chunk")
            .map(|n| {
                let start = n
                    .provenance
                    .first()
                    .and_then(|p| p.bytes)
                    .map_or(0, |b| b[0]);
                (start, n.content.unwrap_or_default())
            })
            .collect();
        chunks.sort_by_key(|c| c.0);
        let texts: Vec<String> = chunks.into_iter().map(|c| c.1).collect();
        Ok(texts.join("\n\n"))
    }

    /// Calls `method` on a fresh connection, on a blocking thread (the client is blocking).
    async fn call(&self, method: &'static str, params: Value) -> Result<Value, ClientError> {
        let (socket, timeout) = (self.socket.clone(), self.timeout);
        tokio::task::spawn_blocking(move || {
            Client::connect_timeout(&socket, Some(timeout))?.call(method, params)
        })
        .await
        .map_err(|e| ClientError::Protocol(format!("call interrupted: {e}")))?
    }
}

/// A failed call as a tool result the model can read and act on.
fn failure(e: &ClientError) -> CallToolResult {
    let text = match e {
        ClientError::NoDaemon { socket } => format!(
            "brain's daemon is not running (no daemon at {}). Start it with `brain daemon` \
             (or `systemctl --user start brain` where it is installed as a service), then retry.",
            socket.display()
        ),
        ClientError::Rpc(r) => format!("{} ({})", r.message, r.kind),
        other => other.to_string(),
    };
    CallToolResult::error(vec![ContentBlock::text(text)])
}

impl ServerHandler for BrainMcp {
    fn get_info(&self) -> ServerConfig {
        let caps = ServerCapabilities::builder()
            .enable_tools()
            .enable_resources()
            .build();
        ServerConfig::new(caps)
            .with_server_info(Implementation::new("brain", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "brain is the user's personal knowledge graph over their notes. Search with \
                 search_notes, read with get_node, follow links with graph_neighbors and \
                 graph_backlinks. Write notes with write_note and structured facts with \
                 upsert_node and link_nodes; every write is attributed to the user and cited.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        Ok(ListToolsResult::with_all_items(
            self.tools.iter().map(ToolDef::to_tool).collect(),
        ))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        self.tools
            .iter()
            .find(|t| t.name == name)
            .map(ToolDef::to_tool)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, ErrorData> {
        let Some(def) = self.tools.iter().find(|t| t.name == request.name) else {
            return Err(ErrorData::invalid_params(
                format!("unknown tool {:?}", request.name),
                None,
            ));
        };
        let params = Value::Object(request.arguments.unwrap_or_default());
        let result = match self.call(def.method, params).await {
            Ok(v) => {
                let text = serde_json::to_string(&v).unwrap_or_default();
                let mut r = CallToolResult::success(vec![ContentBlock::text(text)]);
                r.structured_content = Some(v);
                r
            }
            Err(e) => failure(&e),
        };
        Ok(result.into())
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, ErrorData> {
        let offset = match request.and_then(|r| r.cursor) {
            None => 0,
            Some(c) => c.parse::<usize>().map_err(|_| {
                ErrorData::invalid_params(format!("not a cursor of this server: {c:?}"), None)
            })?,
        };
        let page = match self
            .request::<m::GraphRecent>(RecentParams {
                limit: Some(RESOURCE_PAGE),
                offset: Some(offset),
                ..Default::default()
            })
            .await
        {
            Ok(page) => page,
            // Clients list resources as they connect; with no daemon there are none to show,
            // and the tools say how to start one.
            Err(ClientError::NoDaemon { .. }) => {
                return Ok(ListResourcesResult::with_all_items(Vec::new()));
            }
            Err(e) => return Err(ErrorData::internal_error(failure_text(&e), None)),
        };
        let next = offset + page.changes.len();
        let resources = page
            .changes
            .into_iter()
            .filter(|c| c.change != ChangeWire::Retired)
            .map(resource)
            .collect();
        let mut result = ListResourcesResult::with_all_items(resources);
        if page.more {
            result.next_cursor = Some(next.to_string());
        }
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, ErrorData> {
        let t = ResourceTemplate::new(format!("{NODE_URI}{{id}}"), "node")
            .with_description(
                "A node of the brain (a note, or a node a client wrote) with its citations; \
                 ids come from search_notes and get_node.",
            )
            .with_mime_type("application/json");
        Ok(ListResourceTemplatesResult::with_all_items(vec![t]))
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, ErrorData> {
        let Some(id) = request
            .uri
            .strip_prefix(NODE_URI)
            .filter(|id| !id.is_empty())
        else {
            return Err(ErrorData::resource_not_found(
                format!("not a brain resource: {}", request.uri),
                None,
            ));
        };
        let params = serde_json::to_value(NodeGetParams {
            id: Some(id.to_owned()),
            ..Default::default()
        })
        .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let v = self
            .call(m::NodeGet::NAME, params)
            .await
            .map_err(|e| match &e {
                ClientError::Rpc(r) if r.kind == "node_not_found" => {
                    ErrorData::resource_not_found(e.to_string(), None)
                }
                _ => ErrorData::internal_error(failure_text(&e), None),
            })?;
        let node: NodeWire = serde_json::from_value(v.clone())
            .map_err(|e| ErrorData::internal_error(e.to_string(), None))?;
        let text = match node.content {
            Some(text) => Some(text),
            None if matches!(node.kind.as_str(), "note" | "file") => Some(
                self.note_text(&node.id)
                    .await
                    .map_err(|e| ErrorData::internal_error(failure_text(&e).into_owned(), None))?,
            ),
            None => None,
        };
        let mut contents = vec![
            ResourceContents::text(v.to_string(), request.uri.clone())
                .with_mime_type("application/json"),
        ];
        if let Some(text) = text {
            contents
                .push(ResourceContents::text(text, request.uri).with_mime_type("text/markdown"));
        }
        Ok(ReadResourceResult::new(contents).into())
    }
}

fn failure_text(e: &ClientError) -> Cow<'static, str> {
    match failure(e).content.first().and_then(|c| c.as_text()) {
        Some(t) => Cow::Owned(t.text.clone()),
        None => Cow::Owned(e.to_string()),
    }
}

/// Serves MCP on stdin/stdout until the client closes them.
pub fn serve_stdio(socket: PathBuf, timeout: Duration) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("brain mcp: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let server = BrainMcp::new(socket, timeout);
    let r = rt.block_on(async {
        let running = server
            .serve(rmcp::transport::io::stdio())
            .await
            .map_err(|e| e.to_string())?;
        running.waiting().await.map_err(|e| e.to_string())
    });
    match r {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brain mcp: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tool_is_a_method_with_object_schemas() {
        let mut names = std::collections::HashSet::new();
        for t in tools() {
            assert!(names.insert(t.name), "{} twice", t.name);
            assert!(m::exists(t.method), "{}", t.method);
            assert_eq!(t.input["type"], "object", "{}", t.name);
            assert_eq!(t.output["type"], "object", "{}", t.name);
            let tool = t.to_tool();
            let a = tool.annotations.unwrap_or_default();
            assert_eq!(
                a.read_only_hint,
                Some(t.effect == Effect::Read),
                "{}",
                t.name
            );
        }
        for needle in [
            "search",
            "write_note",
            "upsert",
            "link",
            "workflow_run",
            "workflow_resume",
            "recent",
        ] {
            assert!(names.iter().any(|n| n.contains(needle)), "{needle}");
        }
    }
}
