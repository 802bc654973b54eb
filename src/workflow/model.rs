//! The workflow document as data: serde types for `brain/1` documents and their step kinds.
//!
//! Owns the shape of a document and nothing of its meaning: what a valid document is lives in
//! `validate`, what a step does lives in `engine`. Type-specific inputs of action steps sit in
//! `in` (as VL has them); control steps, and the fields VL puts at the top level (`Write_`'s
//! `target`/`value`/`mode`, `LLM_`'s `model` and `stream`), keep them there.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The document version this build reads.
pub const VERSION: &str = "brain/1";

/// Targets that end a chain instead of naming a step.
pub const RESERVED: [&str; 4] = ["RETURN", "BREAK", "EXIT_BRANCH", "ELSE"];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Document {
    pub version: String,
    pub name: String,
    #[serde(default)]
    pub registry: Registry,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Registry {
    /// `name(TYPE) = default`; no default means required.
    #[serde(default)]
    pub params: Vec<String>,
    /// `$name(TYPE)`, optionally `= initial`.
    #[serde(default)]
    pub vars: Vec<String>,
    #[serde(default)]
    pub files: Files,
    #[serde(default)]
    pub permissions: Permissions,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Files {
    #[serde(default)]
    pub inputs: Vec<String>,
    #[serde(default)]
    pub artifacts: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Permissions {
    #[serde(default)]
    pub graph_write: bool,
    #[serde(default)]
    pub file_write: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    #[serde(default = "one")]
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff_sec: f64,
    /// Error kinds worth retrying; empty means every retryable error.
    #[serde(default)]
    pub on: Vec<String>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Approval {
    #[serde(default)]
    pub reason: Option<Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Timeout {
    pub sec: f64,
    #[serde(default)]
    pub on: Option<String>,
}

/// One step. Every field but `id` is optional here; `validate` says which a kind needs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Step {
    pub id: String,
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub if_: Option<Value>,
    #[serde(rename = "in", default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// `{"$var": "=expr"}`, or VL's shorthand `"$var"` for `{"$var": "=_result"}`.
    #[serde(
        default,
        deserialize_with = "out_map",
        skip_serializing_if = "Option::is_none"
    )]
    pub out: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub print: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
    /// `Branch_`: `[[when, target], ..., ["ELSE", target]]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cases: Option<Vec<Vec<Value>>>,
    /// `Loop_`: the array to iterate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Value>,
    #[serde(rename = "while", default, skip_serializing_if = "Option::is_none")]
    pub while_: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_iterations: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// `Set_`: a `$var` path. `Write_`: the file path (an expression or a literal).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Value>,
    /// `Pause_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_result_target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<Value>,
    /// `LLM_`: the model to ask instead of the provider's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `LLM_`: stream the reply as `llm_token` events when the provider streams.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<bool>,
    /// Fields no kind knows; reported as warnings.
    #[serde(flatten, default, skip_serializing)]
    pub unknown: Map<String, Value>,
}

/// `out` as VL reads it: an object, or a `"$var"` string that stands for `{"$var": "=_result"}`.
fn out_map<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Map<String, Value>>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(Value::String(var)) => {
            let mut m = Map::new();
            m.insert(var, Value::String("=_result".into()));
            Ok(Some(m))
        }
        Some(other) => Err(serde::de::Error::custom(format!(
            "out must be an object or a \"$var\" string, not {other}"
        ))),
    }
}

/// VL step families that need the VL platform (its services, HTTP APIs, UI components, network
/// downloads and archive routing). brain runs on a workstation against its own graph, with no
/// network side effects, so it refuses them by name instead of calling them unknown.
pub const PLATFORM_ONLY: [&str; 5] = ["Service_", "API_", "Component_", "Download_", "Unzip_"];

/// The platform-only family a step id belongs to, if any.
pub fn platform_only(id: &str) -> Option<&'static str> {
    PLATFORM_ONLY.iter().copied().find(|p| id.starts_with(p))
}

/// How `Write_` treats a file that exists (VL's write modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Overwrite,
    FailIfExists,
    Append,
    Prepend,
}

impl WriteMode {
    pub const NAMES: [&'static str; 4] = ["overwrite", "failIfExists", "append", "prepend"];

    pub fn parse(s: &str) -> Option<WriteMode> {
        Some(match s {
            "overwrite" => WriteMode::Overwrite,
            "failIfExists" => WriteMode::FailIfExists,
            "append" => WriteMode::Append,
            "prepend" => WriteMode::Prepend,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            WriteMode::Overwrite => "overwrite",
            WriteMode::FailIfExists => "failIfExists",
            WriteMode::Append => "append",
            WriteMode::Prepend => "prepend",
        }
    }
}

/// Where a `Write_` step keeps its path, content and mode: VL's top-level `target`/`value`/
/// `mode`, or the older `in.path`/`in.content`/`in.mode`, an alias with the same meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteForm {
    Vl,
    In,
}

impl WriteForm {
    /// JSON Pointer suffixes (under `/steps/N/`) of path, content and mode.
    pub fn pointers(self) -> [&'static str; 3] {
        match self {
            WriteForm::Vl => ["target", "value", "mode"],
            WriteForm::In => ["in/path", "in/content", "in/mode"],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepType {
    Search,
    Graph,
    Read,
    Upsert,
    Link,
    Ingest,
    Write,
    Set,
    Branch,
    Loop,
    Pause,
    Stop,
    Noop,
    Llm,
}

impl StepType {
    const PREFIXES: [(&'static str, StepType); 14] = [
        ("Search_", StepType::Search),
        ("Graph_", StepType::Graph),
        ("Read_", StepType::Read),
        ("Upsert_", StepType::Upsert),
        ("Link_", StepType::Link),
        ("Ingest_", StepType::Ingest),
        ("Write_", StepType::Write),
        ("Set_", StepType::Set),
        ("Branch_", StepType::Branch),
        ("Loop_", StepType::Loop),
        ("Pause_", StepType::Pause),
        ("Stop_", StepType::Stop),
        ("Noop_", StepType::Noop),
        ("LLM_", StepType::Llm),
    ];

    /// The type a step id's prefix names.
    pub fn of(id: &str) -> Option<StepType> {
        StepType::PREFIXES
            .iter()
            .find(|(p, _)| id.starts_with(p))
            .map(|(_, t)| *t)
    }

    /// Whether the step changes the graph.
    pub fn writes_graph(self) -> bool {
        matches!(self, StepType::Upsert | StepType::Link | StepType::Ingest)
    }

    /// Whether the step has an effect outside the run's own state, which dry runs only plan.
    pub fn has_side_effect(self) -> bool {
        self.writes_graph() || self == StepType::Write
    }
}

impl Step {
    pub fn step_type(&self) -> Option<StepType> {
        StepType::of(&self.id)
    }

    /// A `Write_` step's form: VL's when it sets `target` or `value`, else the `in` alias.
    pub fn write_form(&self) -> WriteForm {
        if self.target.is_some() || self.value.is_some() {
            WriteForm::Vl
        } else {
            WriteForm::In
        }
    }

    /// Every step id this step sends control to, with the JSON path of the reference.
    pub fn targets(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        if let Some(n) = &self.next {
            out.push(("next".to_owned(), n.as_str()));
        }
        for (i, c) in self.children.iter().enumerate() {
            out.push((format!("children/{i}"), c.as_str()));
        }
        if let Some(cases) = &self.cases {
            for (i, case) in cases.iter().enumerate() {
                if let Some(Value::String(t)) = case.get(1) {
                    out.push((format!("cases/{i}/1"), t.as_str()));
                }
            }
        }
        if let Some(h) = &self.on_error {
            out.push(("onError".to_owned(), h.as_str()));
        }
        if let Some(Timeout { on: Some(t), .. }) = &self.timeout {
            out.push(("timeout/on".to_owned(), t.as_str()));
        }
        out
    }
}

/// A declared parameter or variable: `name(TYPE) = default`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decl {
    pub name: String,
    pub ty: String,
    pub default: Option<Value>,
}

/// Parses `name(TYPE)` with an optional `= JSON` default. Variables keep their `$`.
pub fn parse_decl(s: &str) -> Result<Decl, String> {
    let (head, default) = match s.split_once('=') {
        Some((h, d)) => {
            let d = d.trim();
            let v: Value =
                serde_json::from_str(d).map_err(|e| format!("default {d:?} is not JSON: {e}"))?;
            (h.trim(), Some(v))
        }
        None => (s.trim(), None),
    };
    let (name, ty) = match head.split_once('(') {
        Some((n, rest)) => {
            let ty = rest
                .strip_suffix(')')
                .ok_or_else(|| format!("{head:?}: missing ')'"))?;
            (n.trim(), ty.trim())
        }
        None => (head, "ANY"),
    };
    let bare = name.strip_prefix('$').unwrap_or(name);
    if bare.is_empty()
        || !bare.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        || bare.starts_with(|c: char| c.is_ascii_digit())
    {
        return Err(format!("{name:?} is not a valid name"));
    }
    if !type_known(ty) {
        return Err(format!("unknown type {ty:?}"));
    }
    Ok(Decl {
        name: name.to_owned(),
        ty: ty.to_owned(),
        default,
    })
}

fn type_known(ty: &str) -> bool {
    let inner = ty
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(ty);
    matches!(
        inner,
        "STRING" | "INT" | "FLOAT" | "NUMBER" | "BOOL" | "OBJECT" | "ARRAY" | "ANY"
    )
}

/// Whether `v` fits a declared type. Null fits every type (an unset value).
pub fn type_matches(ty: &str, v: &Value) -> bool {
    if v.is_null() {
        return true;
    }
    if let Some(inner) = ty.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return v
            .as_array()
            .is_some_and(|a| a.iter().all(|x| type_matches(inner, x)));
    }
    match ty {
        "STRING" => v.is_string(),
        "INT" => v.is_i64() || v.is_u64(),
        "FLOAT" | "NUMBER" => v.is_number(),
        "BOOL" => v.is_boolean(),
        "OBJECT" => v.is_object(),
        "ARRAY" => v.is_array(),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(s: &str, expected: Result<(&str, &str, Option<Value>), ()>) {
        let got = parse_decl(s)
            .map(|d| (d.name, d.ty, d.default))
            .map_err(|_| ());
        let expected = expected.map(|(n, t, d)| (n.to_owned(), t.to_owned(), d));
        assert_eq!(got, expected, "{s}");
    }

    #[test]
    fn declarations() {
        check(
            "tag(STRING) = \"project\"",
            Ok(("tag", "STRING", Some(json!("project")))),
        );
        check("days(INT) = 7", Ok(("days", "INT", Some(json!(7)))));
        check("$notes([OBJECT])", Ok(("$notes", "[OBJECT]", None)));
        check("x", Ok(("x", "ANY", None)));
        check("x(WHAT)", Err(()));
        check("1x(INT)", Err(()));
        check("x(INT) = nope", Err(()));
    }

    #[test]
    fn types() {
        assert!(type_matches("[OBJECT]", &json!([{}, {}])));
        assert!(!type_matches("[OBJECT]", &json!([1])));
        assert!(type_matches("INT", &json!(3)));
        assert!(!type_matches("INT", &json!(3.5)));
        assert!(type_matches("STRING", &Value::Null));
    }

    #[test]
    fn prefixes() {
        assert_eq!(StepType::of("Search_notes"), Some(StepType::Search));
        assert_eq!(StepType::of("LLM_sum"), Some(StepType::Llm));
        assert_eq!(StepType::of("Foo_x"), None);
    }
}
