//! The method table: every socket method as a type naming its params and result, and
//! `rpc.discover`'s OpenRPC document built from it.
//!
//! Architecture Invariant: a method exists on the wire only if it is listed in
//! [`methods!`]: the server dispatches on these names, the client calls through these types,
//! `brain mcp` builds its tools from them, and `rpc.discover` lists them.

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::history as hist;
use super::recent;
use super::workflow as wf;
use super::write;
use super::*;

/// One socket method: its name, what it does, and the types of its params and result.
pub trait Method {
    const NAME: &'static str;
    const SUMMARY: &'static str;
    type Params: Serialize + DeserializeOwned + JsonSchema;
    type Result: Serialize + DeserializeOwned + JsonSchema;
}

/// Declares the method types and the table `rpc.discover` walks.
macro_rules! methods {
    ($( $(#[$doc:meta])* $ty:ident = $name:literal ($params:ty) -> $result:ty, $summary:literal; )*) => {
        $(
            $(#[$doc])*
            pub enum $ty {}
            impl Method for $ty {
                const NAME: &'static str = $name;
                const SUMMARY: &'static str = $summary;
                type Params = $params;
                type Result = $result;
            }
        )*
        /// Every method, in the order `rpc.discover` lists them.
        pub fn all() -> Vec<MethodDoc> {
            vec![$( MethodDoc::of::<$ty>() ),*]
        }
        /// Whether `name` is a method of this table.
        pub fn exists(name: &str) -> bool {
            matches!(name, $( $name )|*)
        }
    };
}

methods! {
    DaemonStatus = "daemon.status" (NoParams) -> StatusWire,
        "the daemon's version, uptime, store size, counts, watcher, search index and memory";
    DaemonShutdown = "daemon.shutdown" (NoParams) -> ShutdownResult,
        "stops the daemon after in-flight requests finish";
    Discover = "rpc.discover" (NoParams) -> OpenRpcDocument,
        "this list: every method with the JSON Schemas of its params and result (OpenRPC)";
    IdentityIdOf = "identity.id" (IdentityIdParams) -> IdentityIdResult,
        "the stable user id of an e-mail address";
    UserList = "user.list" (NoParams) -> UserListResult, "the users the store knows";
    WatchAdd = "watch.add" (PathParams) -> RootWire,
        "watches a folder: indexes it now and follows its changes";
    WatchRemove = "watch.remove" (WatchRemoveParams) -> WatchRemoveResult,
        "stops watching a folder and retires its facts (with purge: deletes them)";
    WatchList = "watch.list" (NoParams) -> WatchListResult, "the watched folders";
    IngestPath = "ingest.path" (PathParams) -> SyncReportWire,
        "indexes a file or folder once and waits; sends ingest.progress notifications";
    NodeGet = "node.get" (NodeGetParams) -> NodeWire,
        "one node by id, path or title, with its citations";
    NodeSearchTitle = "node.search_title" (SearchTitleParams) -> TitleSearchResult,
        "notes whose title or alias matches";
    GraphNeighbors = "graph.neighbors" (NeighborsParams) -> SubgraphWire,
        "the nodes linked to a node, with the edges, up to a depth";
    GraphBacklinks = "graph.backlinks" (BacklinksParams) -> SubgraphWire,
        "the notes that link to a node";
    NodeHistory = "node.history" (hist::NodeHistoryParams) -> hist::NodeHistoryResult,
        "every version of a node and every edge it had, each with its time span and citations";
    GraphExport = "graph.export" (hist::ExportParams) -> hist::ExportPageWire,
        "one page of the whole graph as of a time, with citations; pass next_cursor for the next";
    SourceList = "source.list" (SourceListParams) -> SourceListResult,
        "files seen, with their status and reason (indexed, skipped, failed)";
    SearchQuery = "search.query" (SearchParams) -> SearchResultWire,
        "hybrid search (BM25, vectors, graph) with cited hits";
    SearchReindex = "search.reindex" (NoParams) -> ReindexResult,
        "rebuilds the text index from the store";
    StoreCompact = "store.compact" (NoParams) -> CompactResult,
        "gives the store's free pages back to the file system";
    StoreBackup = "store.backup" (write::BackupParams) -> write::BackupResult,
        "writes a consistent copy of the store to a new file, while the daemon runs";
    ModelsAdd = "models.add" (ModelAddParams) -> ModelWire, "adds an embedding model folder";
    ModelsUse = "models.use" (ModelNameParams) -> ModelUseResult,
        "makes a model the active one";
    ModelsRemove = "models.remove" (ModelNameParams) -> ModelRemoveResult,
        "forgets a model that is not the active one";
    ModelsList = "models.list" (NoParams) -> ModelListResult, "the embedding models";
    NodeUpsert = "node.upsert" (write::NodeUpsertParams) -> write::WriteResult,
        "creates or updates the node of a kind and key, with the caller's provenance";
    EdgeLink = "edge.link" (write::EdgeLinkParams) -> write::WriteResult,
        "creates or updates a typed edge between two nodes, with the caller's provenance";
    NodeRetire = "node.retire" (write::RetireParams) -> write::RetireResult,
        "retires a written node and its edges (kept as history)";
    EdgeRetire = "edge.retire" (write::RetireParams) -> write::RetireResult,
        "retires a written edge (kept as history)";
    NoteWrite = "note.write" (write::NoteWriteParams) -> write::NoteWriteResult,
        "writes a Markdown file inside a watched folder and indexes it";
    GraphRecent = "graph.recent" (recent::RecentParams) -> recent::RecentResult,
        "the latest created, updated and retired notes and written nodes, newest first";
    WorkflowValidate = "workflow.validate" (WorkflowSourceParams) -> ValidateResult,
        "checks a workflow document";
    WorkflowRun = "workflow.run" (wf::RunParams) -> wf::RunStarted, "starts a workflow run";
    WorkflowGet = "workflow.get" (wf::RunIdParams) -> wf::RunWire,
        "a run with its steps and waits";
    WorkflowList = "workflow.list" (wf::ListParams) -> wf::RunList, "recent runs";
    WorkflowResume = "workflow.resume" (wf::ResumeParams) -> wf::ResumeResult,
        "approves or denies a paused run's wait";
    WorkflowToken = "workflow.token" (wf::TokenParams) -> wf::TokenResult,
        "a token that resumes one wait";
    WorkflowCancel = "workflow.cancel" (wf::RunIdParams) -> wf::CancelResult, "cancels a run";
    WorkflowEvents = "workflow.events" (wf::EventsParams) -> wf::EventsResult,
        "a run's events; with follow, streamed as workflow.event notifications";
    WorkflowTriggers = "workflow.triggers" (NoParams) -> wf::TriggerList, "the triggers";
    WorkflowTriggerAdd = "workflow.trigger_add" (wf::TriggerAddParams) -> wf::TriggerWire,
        "adds a file or schedule trigger";
    WorkflowTriggerRemove = "workflow.trigger_remove" (wf::TriggerNameParams)
        -> wf::TriggerRemoved, "removes a trigger";
}

/// The generator every schema comes from: subschemas inlined, so each params schema stands
/// alone (an MCP tool's input schema, one OpenRPC param) without a shared `$defs`.
fn settings() -> SchemaSettings {
    SchemaSettings::draft2020_12().with(|s| s.inline_subschemas = true)
}

/// The JSON Schema of `T`, standing alone.
pub fn schema_of<T: JsonSchema>() -> Value {
    let schema: Schema = settings().into_generator().into_root_schema_for::<T>();
    schema.to_value()
}

/// One method's entry in `rpc.discover`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct MethodDoc {
    pub name: String,
    pub summary: String,
    /// Always `by-name`: params are one JSON object.
    #[serde(rename = "paramStructure")]
    pub param_structure: String,
    pub params: Vec<ContentDescriptor>,
    pub result: ContentDescriptor,
}

/// An OpenRPC content descriptor: a named value and its schema.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct ContentDescriptor {
    pub name: String,
    #[serde(default)]
    pub required: bool,
    pub schema: Value,
}

impl MethodDoc {
    fn of<M: Method>() -> MethodDoc {
        let params = schema_of::<M::Params>();
        let required: Vec<&str> = params
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let props = params
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        MethodDoc {
            name: M::NAME.to_owned(),
            summary: M::SUMMARY.to_owned(),
            param_structure: "by-name".into(),
            params: props
                .into_iter()
                .map(|(name, schema)| ContentDescriptor {
                    required: required.contains(&name.as_str()),
                    name,
                    schema,
                })
                .collect(),
            result: ContentDescriptor {
                name: "result".into(),
                required: true,
                schema: schema_of::<M::Result>(),
            },
        }
    }

    /// The params as one object schema, as the method decodes them (unknown fields refused
    /// where the type says so).
    pub fn params_schema(&self) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for p in &self.params {
            properties.insert(p.name.clone(), p.schema.clone());
            if p.required {
                required.push(Value::String(p.name.clone()));
            }
        }
        serde_json::json!({ "type": "object", "properties": properties, "required": required })
    }
}

/// `rpc.discover`'s answer (OpenRPC 1.3 shape).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OpenRpcDocument {
    pub openrpc: String,
    pub info: OpenRpcInfo,
    pub methods: Vec<MethodDoc>,
}

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct OpenRpcInfo {
    pub title: String,
    pub version: String,
}

/// The OpenRPC document of this build.
pub fn discover() -> OpenRpcDocument {
    OpenRpcDocument {
        openrpc: "1.3.2".into(),
        info: OpenRpcInfo {
            title: "brain".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        methods: all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_method_is_listed_once_with_object_params() {
        let doc = discover();
        let mut names: Vec<&str> = doc.methods.iter().map(|m| m.name.as_str()).collect();
        let n = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), n, "a method is listed twice");
        for m in &doc.methods {
            assert!(exists(&m.name));
            let p = schema_of_params(&m.name);
            assert_eq!(p["type"], "object", "{}: {p}", m.name);
        }
        let upsert = doc
            .methods
            .iter()
            .find(|m| m.name == "node.upsert")
            .unwrap();
        let req: Vec<&str> = upsert
            .params
            .iter()
            .filter(|p| p.required)
            .map(|p| p.name.as_str())
            .collect();
        assert_eq!(req, ["kind", "key"]);
    }

    fn schema_of_params(name: &str) -> Value {
        all()
            .into_iter()
            .find(|m| m.name == name)
            .map(|m| m.params_schema())
            .unwrap_or_default()
    }
}
