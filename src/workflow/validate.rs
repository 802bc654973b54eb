//! Validation: every problem of a document at once, each with a stable code, the step id and a
//! JSON path (a JSON Pointer into the document).
//!
//! Pure: takes JSON, returns diagnostics; never touches the store or the disk. The engine
//! refuses to start a run whose document has errors, so everything checked here is something
//! the engine may rely on (targets exist, no cycles, loops are bounded, expressions compile).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::expr;
use super::files;
use super::model::{self, Document, RESERVED, Step, StepType, WriteForm};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    pub code: &'static str,
    pub severity: Severity,
    /// The offending step, when the problem belongs to one.
    pub step_id: Option<String>,
    /// JSON Pointer into the document.
    pub path: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Diagnostic>,
}

impl Report {
    /// Valid when there are no errors (and, with `strict`, no warnings).
    pub fn is_valid(&self, strict: bool) -> bool {
        self.errors.is_empty() && (!strict || self.warnings.is_empty())
    }
}

/// What the validating side knows about the runners it has.
#[derive(Debug, Clone, Copy, Default)]
pub struct Runners {
    /// An `LLM_` provider is configured.
    pub llm: bool,
}

/// Validates a document given as JSON. On success also returns the typed document.
pub fn validate(doc: &Value, runners: Runners) -> (Report, Option<Document>) {
    let mut v = Validator::default();
    let parsed = v.shape(doc);
    if let Some(d) = &parsed {
        v.document(d, runners);
    }
    let report = v.finish();
    let ok = report.errors.is_empty();
    (report, parsed.filter(|_| ok))
}

#[derive(Default)]
struct Validator {
    out: Vec<Diagnostic>,
}

impl Validator {
    fn push(
        &mut self,
        sev: Severity,
        code: &'static str,
        step: Option<&str>,
        path: String,
        msg: String,
    ) {
        self.out.push(Diagnostic {
            code,
            severity: sev,
            step_id: step.map(str::to_owned),
            path,
            message: msg,
        });
    }

    fn err(
        &mut self,
        code: &'static str,
        step: Option<&str>,
        path: String,
        msg: impl Into<String>,
    ) {
        self.push(Severity::Error, code, step, path, msg.into());
    }

    fn warn(
        &mut self,
        code: &'static str,
        step: Option<&str>,
        path: String,
        msg: impl Into<String>,
    ) {
        self.push(Severity::Warning, code, step, path, msg.into());
    }

    fn finish(self) -> Report {
        let mut r = Report::default();
        for d in self.out {
            match d.severity {
                Severity::Error => r.errors.push(d),
                Severity::Warning => r.warnings.push(d),
            }
        }
        r
    }

    /// The document's outer shape; steps are decoded one by one so one bad step does not hide
    /// the others' problems.
    fn shape(&mut self, doc: &Value) -> Option<Document> {
        let Some(obj) = doc.as_object() else {
            self.err(
                "invalid_document",
                None,
                String::new(),
                "a workflow must be a JSON object",
            );
            return None;
        };
        match obj.get("version").and_then(Value::as_str) {
            Some(model::VERSION) => {}
            Some(other) => self.err(
                "unsupported_version",
                None,
                "/version".into(),
                format!(
                    "version {other:?} is not supported; use {:?}",
                    model::VERSION
                ),
            ),
            None => self.err(
                "missing_field",
                None,
                "/version".into(),
                format!("\"version\" is required ({:?})", model::VERSION),
            ),
        }
        let name = match obj.get("name").and_then(Value::as_str) {
            Some(n) if !n.trim().is_empty() => n.to_owned(),
            _ => {
                self.err(
                    "missing_field",
                    None,
                    "/name".into(),
                    "\"name\" must be a non-empty string",
                );
                String::new()
            }
        };
        let registry = match obj.get("registry") {
            None => model::Registry::default(),
            Some(r) => match serde_json::from_value(r.clone()) {
                Ok(r) => r,
                Err(e) => {
                    self.err(
                        "invalid_field",
                        None,
                        "/registry".into(),
                        format!("invalid registry: {e}"),
                    );
                    model::Registry::default()
                }
            },
        };
        for key in obj.keys() {
            if !matches!(
                key.as_str(),
                "version" | "name" | "registry" | "steps" | "description" | "meta"
            ) {
                self.warn(
                    "unknown_field",
                    None,
                    format!("/{}", escape(key)),
                    format!("unknown field {key:?}"),
                );
            }
        }
        let Some(raw_steps) = obj.get("steps").and_then(Value::as_array) else {
            self.err(
                "missing_field",
                None,
                "/steps".into(),
                "\"steps\" must be an array",
            );
            return None;
        };
        let mut steps = Vec::new();
        for (i, raw) in raw_steps.iter().enumerate() {
            let id = raw.get("id").and_then(Value::as_str);
            match serde_json::from_value::<Step>(raw.clone()) {
                Ok(s) => steps.push(s),
                Err(e) => self.err(
                    "invalid_step",
                    id,
                    format!("/steps/{i}"),
                    format!("invalid step: {e}"),
                ),
            }
        }
        if steps.len() != raw_steps.len() {
            // Indices would no longer match paths; the per-step errors above are what to fix.
            return None;
        }
        Some(Document {
            version: model::VERSION.to_owned(),
            name,
            registry,
            steps,
        })
    }

    fn document(&mut self, doc: &Document, runners: Runners) {
        let decls = self.registry(doc);
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, s) in doc.steps.iter().enumerate() {
            let p = format!("/steps/{i}/id");
            if RESERVED.contains(&s.id.as_str()) {
                self.err(
                    "reserved_id",
                    Some(&s.id),
                    p,
                    format!("{:?} is reserved and cannot name a step", s.id),
                );
                continue;
            }
            if let Some(family) = model::platform_only(&s.id) {
                self.err(
                    "platform_only_step",
                    Some(&s.id),
                    p.clone(),
                    format!(
                        "{family} steps need the VL platform (its services, APIs, UI components, \
                         downloads or archives); brain runs workflows against its own graph and \
                         workspace and does not run them"
                    ),
                );
            } else if s.step_type().is_none() {
                self.err(
                    "unknown_prefix",
                    Some(&s.id),
                    p.clone(),
                    format!(
                        "{:?} has no known type prefix (Search_, Set_, Loop_, ...)",
                        s.id
                    ),
                );
            }
            if index.insert(&s.id, i).is_some() {
                self.err(
                    "duplicate_id",
                    Some(&s.id),
                    p,
                    format!("step id {:?} is used twice", s.id),
                );
            }
        }
        if doc.steps.is_empty() {
            self.err(
                "no_entry",
                None,
                "/steps".into(),
                "a workflow needs at least one step",
            );
            return;
        }
        for (i, s) in doc.steps.iter().enumerate() {
            self.targets(i, s, &index);
            self.fields(i, s, doc);
        }
        let (entries, reachable) = self.reachability(doc, &index);
        if entries.is_empty() {
            self.err(
                "no_entry",
                None,
                "/steps".into(),
                "no entry step: every step is the target of another",
            );
        }
        for (i, s) in doc.steps.iter().enumerate() {
            if !reachable.contains(s.id.as_str()) && index.get(s.id.as_str()) == Some(&i) {
                self.err(
                    "unreachable_step",
                    Some(&s.id),
                    format!("/steps/{i}"),
                    format!("{} can never run", s.id),
                );
            }
        }
        self.cycles(doc, &index);
        let regions = Regions::of(doc, &index);
        for (i, s) in doc.steps.iter().enumerate() {
            self.expressions(i, s, &decls, &regions);
            if s.next.as_deref() == Some("BREAK") && !regions.in_loop.contains(s.id.as_str()) {
                self.err(
                    "break_outside_loop",
                    Some(&s.id),
                    format!("/steps/{i}/next"),
                    "BREAK outside a loop body",
                );
            }
            if let Some(cases) = &s.cases {
                for (j, c) in cases.iter().enumerate() {
                    if c.get(1).and_then(Value::as_str) == Some("BREAK")
                        && !regions.in_loop.contains(s.id.as_str())
                    {
                        self.err(
                            "break_outside_loop",
                            Some(&s.id),
                            format!("/steps/{i}/cases/{j}/1"),
                            "BREAK outside a loop body",
                        );
                    }
                }
            }
            if s.step_type() == Some(StepType::Llm) && !runners.llm {
                self.warn("no_runner", Some(&s.id), format!("/steps/{i}"), "no model provider is configured; this step will be skipped and the run will end completed_partial");
            }
        }
        if !doc
            .steps
            .iter()
            .any(|s| s.step_type() == Some(StepType::Stop))
        {
            self.warn(
                "no_stop",
                None,
                "/steps".into(),
                "no Stop_ step: the run ends when its chains return",
            );
        }
    }

    /// Declared params and vars, by name.
    fn registry(&mut self, doc: &Document) -> Decls {
        let mut d = Decls::default();
        for (i, p) in doc.registry.params.iter().enumerate() {
            match model::parse_decl(p) {
                Ok(decl) if decl.name.starts_with('$') => self.err(
                    "invalid_declaration",
                    None,
                    format!("/registry/params/{i}"),
                    "params are named without `$`",
                ),
                Ok(decl) => {
                    if let Some(def) = &decl.default
                        && !model::type_matches(&decl.ty, def)
                    {
                        self.err(
                            "invalid_declaration",
                            None,
                            format!("/registry/params/{i}"),
                            format!("default of {} is not a {}", decl.name, decl.ty),
                        );
                    }
                    d.params.insert(decl.name);
                }
                Err(m) => self.err(
                    "invalid_declaration",
                    None,
                    format!("/registry/params/{i}"),
                    m,
                ),
            }
        }
        for (i, v) in doc.registry.vars.iter().enumerate() {
            match model::parse_decl(v) {
                Ok(decl) if decl.name.starts_with('$') => {
                    d.vars.insert(decl.name);
                }
                Ok(_) => self.err(
                    "invalid_declaration",
                    None,
                    format!("/registry/vars/{i}"),
                    "vars are named with a leading `$`",
                ),
                Err(m) => self.err(
                    "invalid_declaration",
                    None,
                    format!("/registry/vars/{i}"),
                    m,
                ),
            }
        }
        let f = &doc.registry.files;
        for (kind, globs) in [
            ("inputs", &f.inputs),
            ("artifacts", &f.artifacts),
            ("fileWrite", &doc.registry.permissions.file_write),
        ] {
            let base = if kind == "fileWrite" {
                "/registry/permissions/fileWrite"
            } else if kind == "inputs" {
                "/registry/files/inputs"
            } else {
                "/registry/files/artifacts"
            };
            for (i, g) in globs.iter().enumerate() {
                if let Err(m) = files::check_glob(g) {
                    self.err("path_invalid", None, format!("{base}/{i}"), m);
                }
            }
        }
        d
    }

    fn targets(&mut self, i: usize, s: &Step, index: &HashMap<&str, usize>) {
        let ty = s.step_type();
        for (field, t) in s.targets() {
            let path = format!("/steps/{i}/{field}");
            let reserved_ok = field == "next" || field.starts_with("cases/");
            if RESERVED.contains(&t) && t != "ELSE" {
                if !reserved_ok {
                    self.err(
                        "dangling_target",
                        Some(&s.id),
                        path,
                        format!("{t} is not a step; {field} must name one"),
                    );
                }
            } else if !index.contains_key(t) {
                self.err(
                    "dangling_target",
                    Some(&s.id),
                    path,
                    format!("{field} names {t:?}, which is not a step"),
                );
            } else if t == s.id {
                self.err(
                    "cycle",
                    Some(&s.id),
                    path,
                    format!("{} refers to itself", s.id),
                );
            }
        }
        match (ty, &s.next) {
            (Some(StepType::Stop), Some(_)) => self.err(
                "stop_with_next",
                Some(&s.id),
                format!("/steps/{i}/next"),
                "Stop_ ends the run and takes no next",
            ),
            (Some(StepType::Stop), None) | (None, _) => {}
            (Some(_), None) => self.err(
                "missing_next",
                Some(&s.id),
                format!("/steps/{i}"),
                format!(
                    "{} needs a next (a step, RETURN, BREAK or EXIT_BRANCH)",
                    s.id
                ),
            ),
            (Some(_), Some(_)) => {}
        }
    }

    /// Fields each type needs or forbids, permissions, and literal file paths.
    fn fields(&mut self, i: usize, s: &Step, doc: &Document) {
        let id = Some(s.id.as_str());
        let p = |f: &str| format!("/steps/{i}/{f}");
        for key in s.unknown.keys() {
            self.warn(
                "unknown_field",
                id,
                p(&escape(key)),
                format!("unknown field {key:?}"),
            );
        }
        let Some(ty) = s.step_type() else { return };
        let input = s.input.as_ref().and_then(Value::as_object);
        match ty {
            StepType::Branch => match &s.cases {
                None => self.err("missing_cases", id, p("cases"), "Branch_ needs cases"),
                Some(cases) if cases.is_empty() => self.err(
                    "missing_cases",
                    id,
                    p("cases"),
                    "Branch_ needs at least one case",
                ),
                Some(cases) => {
                    for (j, c) in cases.iter().enumerate() {
                        if c.len() != 2 || !c[1].is_string() {
                            self.err(
                                "invalid_case",
                                id,
                                p(&format!("cases/{j}")),
                                "a case is [condition, stepId]",
                            );
                        } else if c[0] == "ELSE" && j + 1 != cases.len() {
                            self.err(
                                "else_not_last",
                                id,
                                p(&format!("cases/{j}")),
                                "ELSE must be the last case",
                            );
                        }
                    }
                }
            },
            StepType::Loop => {
                match s.mode.as_deref() {
                    None => self.err(
                        "loop_without_mode",
                        id,
                        p("mode"),
                        "Loop_ needs mode serial or parallel",
                    ),
                    Some("serial" | "parallel") => {}
                    Some(m) => self.err(
                        "invalid_mode",
                        id,
                        p("mode"),
                        format!("mode {m:?} is not serial or parallel"),
                    ),
                }
                if s.children.is_empty() {
                    self.err(
                        "loop_without_children",
                        id,
                        p("children"),
                        "Loop_ needs its body in children",
                    );
                }
                match (&s.source, &s.while_) {
                    (Some(_), Some(_)) => self.err(
                        "loop_source_and_while",
                        id,
                        p("while"),
                        "Loop_ takes source or while, not both",
                    ),
                    (None, None) => self.err(
                        "loop_without_source",
                        id,
                        p("source"),
                        "Loop_ needs source or while",
                    ),
                    (None, Some(_)) if s.max_iterations.is_none() => self.err(
                        "while_without_max_iterations",
                        id,
                        p("maxIterations"),
                        "a while loop needs maxIterations",
                    ),
                    _ => {}
                }
                if s.max_iterations == Some(0) {
                    self.err(
                        "invalid_field",
                        id,
                        p("maxIterations"),
                        "maxIterations must be at least 1",
                    );
                }
                if s.while_.is_some() && s.mode.as_deref() == Some("parallel") {
                    self.warn(
                        "parallel_while",
                        id,
                        p("mode"),
                        "a while loop decides each iteration after the last; it runs serially",
                    );
                }
                if let Some(c) = s.concurrency
                    && !(1..=32).contains(&c)
                {
                    self.err(
                        "invalid_concurrency",
                        id,
                        p("concurrency"),
                        "concurrency must be 1..=32",
                    );
                }
            }
            StepType::Set => {
                if s.target.is_none() {
                    self.err("missing_field", id, p("target"), "Set_ needs a target $var");
                }
                if s.value.is_none() {
                    self.err("missing_field", id, p("value"), "Set_ needs a value");
                }
            }
            StepType::Pause => {
                if s.resume_result_target.is_none() {
                    self.err(
                        "missing_field",
                        id,
                        p("resumeResultTarget"),
                        format!(
                            "{} needs resumeResultTarget, the $var the resume payload goes to",
                            s.id
                        ),
                    );
                }
                if let Some(t) = &s.timeout
                    && t.sec <= 0.0
                {
                    self.err(
                        "invalid_timeout",
                        id,
                        p("timeout/sec"),
                        "timeout.sec must be positive",
                    );
                }
            }
            StepType::Write => self.write_fields(i, s),
            StepType::Upsert | StepType::Link => {
                let needed: &[&str] = match ty {
                    StepType::Upsert => &["kind", "key"],
                    _ => &["from", "to", "type"],
                };
                for f in needed {
                    if input.and_then(|m| m.get(*f)).is_none() {
                        self.err(
                            "missing_field",
                            id,
                            p(&format!("in/{f}")),
                            format!("{} needs in.{f}", s.id),
                        );
                    }
                }
            }
            StepType::Search => {
                if input.and_then(|m| m.get("query")).is_none() {
                    self.err("missing_field", id, p("in/query"), "Search_ needs in.query");
                }
                if let Some(k) = input.and_then(|m| m.get("k")).and_then(Value::as_u64)
                    && k > 200
                {
                    self.err("invalid_field", id, p("in/k"), "k must be at most 200");
                }
            }
            StepType::Graph => {
                let op = input.and_then(|m| m.get("op")).and_then(Value::as_str);
                if !matches!(op, Some("node" | "neighbors" | "path" | "subgraph"))
                    && !input
                        .and_then(|m| m.get("op"))
                        .and_then(Value::as_str)
                        .is_some_and(|o| o.starts_with('='))
                {
                    self.err(
                        "invalid_field",
                        id,
                        p("in/op"),
                        "Graph_ needs in.op: node, neighbors, path or subgraph",
                    );
                }
                if let Some(d) = input.and_then(|m| m.get("depth")).and_then(Value::as_u64)
                    && d > 3
                {
                    self.err(
                        "invalid_field",
                        id,
                        p("in/depth"),
                        "depth must be at most 3",
                    );
                }
            }
            _ => {}
        }
        if let Some(r) = &s.retry
            && !(1..=10).contains(&r.max_attempts)
        {
            self.err(
                "invalid_retry",
                id,
                p("retry/maxAttempts"),
                "retry.maxAttempts must be 1..=10",
            );
        }
        let perms = &doc.registry.permissions;
        if ty.writes_graph() && !perms.graph_write {
            self.err(
                "permission_denied",
                id,
                format!("/steps/{i}"),
                format!(
                    "{} writes the graph but permissions.graphWrite is not true",
                    s.id
                ),
            );
        }
        if ty == StepType::Write && perms.file_write.is_empty() {
            self.err(
                "permission_denied",
                id,
                format!("/steps/{i}"),
                format!("{} writes a file but permissions.fileWrite is empty", s.id),
            );
        }
        // Literal paths can be checked now; expressions are checked when the run resolves them.
        let (path, path_ptr) = if ty == StepType::Write && s.write_form() == WriteForm::Vl {
            (s.target.as_deref(), "target")
        } else {
            (
                input.and_then(|m| m.get("path")).and_then(Value::as_str),
                "in/path",
            )
        };
        if let Some(path) = path.filter(|x| expr::as_expression(x).is_none()) {
            let path = expr::literal(path);
            let files = &doc.registry.files;
            let allowed: Vec<&String> = match ty {
                StepType::Read | StepType::Ingest => {
                    files.inputs.iter().chain(&files.artifacts).collect()
                }
                StepType::Write => files.artifacts.iter().collect(),
                _ => Vec::new(),
            };
            if matches!(ty, StepType::Read | StepType::Ingest | StepType::Write) {
                match files::normalize(path) {
                    Err(m) => self.err("path_invalid", id, p(path_ptr), m),
                    Ok(rel) => {
                        if !files::matches_any(&allowed, &rel) {
                            self.err(
                                "path_outside_globs",
                                id,
                                p(path_ptr),
                                format!("{rel} is outside the declared file globs"),
                            );
                        } else if ty == StepType::Write
                            && !files::matches_any(
                                &perms.file_write.iter().collect::<Vec<_>>(),
                                &rel,
                            )
                        {
                            self.err(
                                "permission_denied",
                                id,
                                p(path_ptr),
                                format!("{rel} is outside permissions.fileWrite"),
                            );
                        }
                    }
                }
            }
        }
    }

    /// `Write_`: a path and a content, in VL's form (`target`, `value`, `mode`) or the `in`
    /// alias (`in.path`, `in.content`, `in.mode`), never both; a literal mode must be VL's.
    fn write_fields(&mut self, i: usize, s: &Step) {
        let id = Some(s.id.as_str());
        let p = |f: &str| format!("/steps/{i}/{f}");
        let input = s.input.as_ref().and_then(Value::as_object);
        let form = s.write_form();
        let [path_ptr, content_ptr, mode_ptr] = form.pointers();
        let (path, content, mode) = match form {
            WriteForm::Vl => {
                for alias in ["path", "content", "mode"] {
                    if input.is_some_and(|m| m.contains_key(alias)) {
                        self.err(
                            "conflicting_fields",
                            id,
                            p(&format!("in/{alias}")),
                            format!(
                                "{} sets target/value, so in.{alias} is ambiguous; use one form",
                                s.id
                            ),
                        );
                    }
                }
                (
                    s.target.is_some(),
                    s.value.is_some(),
                    s.mode.as_ref().map(|m| Value::String(m.clone())),
                )
            }
            WriteForm::In => {
                if s.mode.is_some() {
                    self.err(
                        "conflicting_fields",
                        id,
                        p("mode"),
                        format!(
                            "{} uses in.path, so a top-level mode is ambiguous; use in.mode, or \
                             target/value/mode",
                            s.id
                        ),
                    );
                }
                (
                    input.is_some_and(|m| m.contains_key("path")),
                    input.is_some_and(|m| m.contains_key("content")),
                    input.and_then(|m| m.get("mode")).cloned(),
                )
            }
        };
        if !path {
            self.err(
                "missing_field",
                id,
                p(path_ptr),
                format!("{} needs target, the file to write (or in.path)", s.id),
            );
        }
        if !content {
            self.err(
                "missing_field",
                id,
                p(content_ptr),
                format!("{} needs value, the content to write (or in.content)", s.id),
            );
        }
        match mode {
            None => {}
            Some(Value::String(m)) if expr::as_expression(&m).is_some() => {}
            Some(Value::String(m)) if model::WriteMode::parse(&m).is_some() => {}
            Some(other) => self.err(
                "invalid_mode",
                id,
                p(mode_ptr),
                format!(
                    "write mode {other} is not one of {}",
                    model::WriteMode::NAMES.join(", ")
                ),
            ),
        }
    }

    fn reachability<'d>(
        &mut self,
        doc: &'d Document,
        index: &HashMap<&str, usize>,
    ) -> (Vec<&'d str>, HashSet<&'d str>) {
        // A step whose id is reserved is not in the index and refers to nothing.
        let referenced: HashSet<&str> = doc
            .steps
            .iter()
            .filter(|s| index.contains_key(s.id.as_str()))
            .flat_map(|s| s.targets().into_iter().map(|(_, t)| t))
            .collect();
        let entries: Vec<&str> = doc
            .steps
            .iter()
            .map(|s| s.id.as_str())
            .filter(|id| !referenced.contains(id))
            .collect();
        let mut seen: HashSet<&str> = HashSet::new();
        let mut stack = entries.clone();
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            if let Some(&i) = index.get(id) {
                for (_, t) in doc.steps[i].targets() {
                    if index.contains_key(t) {
                        stack.push(t);
                    }
                }
            }
        }
        (entries, seen)
    }

    /// Any cycle over step references is an error: loops iterate inside `Loop_`, never by
    /// pointing back.
    fn cycles(&mut self, doc: &Document, index: &HashMap<&str, usize>) {
        // 0 unvisited, 1 on the stack, 2 done.
        let mut state = vec![0u8; doc.steps.len()];
        let mut reported = HashSet::new();
        for start in 0..doc.steps.len() {
            if state[start] != 0 {
                continue;
            }
            // Iterative DFS: (step, next target index).
            let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
            state[start] = 1;
            while let Some(&mut (at, ref mut k)) = stack.last_mut() {
                let targets = doc.steps[at].targets();
                if *k >= targets.len() {
                    state[at] = 2;
                    stack.pop();
                    continue;
                }
                let (field, t) = &targets[*k];
                *k += 1;
                let Some(&j) = index.get(*t) else { continue };
                if j == at {
                    continue; // reported as a self-reference already
                }
                match state[j] {
                    0 => {
                        state[j] = 1;
                        stack.push((j, 0));
                    }
                    1 => {
                        let id = &doc.steps[at].id;
                        if reported.insert(id.clone()) {
                            self.err(
                                "cycle",
                                Some(id),
                                format!("/steps/{at}/{field}"),
                                format!("{id} → {t} closes a cycle; repeat work with Loop_"),
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn expressions(&mut self, i: usize, s: &Step, decls: &Decls, regions: &Regions) {
        let id = s.id.as_str();
        if model::platform_only(id).is_some() {
            return; // one error says it all; its fields mean nothing here
        }
        let in_loop = regions.in_loop.contains(id);
        let mut found: Vec<(String, String, Place)> = Vec::new();
        let base = format!("/steps/{i}");
        let cond = |field: &str, v: &Option<Value>, found: &mut Vec<(String, String, Place)>| {
            if let Some(Value::String(text)) = v {
                let src = text.strip_prefix('=').unwrap_or(text);
                found.push((format!("{base}/{field}"), src.to_owned(), Place::Body));
            }
        };
        cond("if", &s.if_, &mut found);
        cond("while", &s.while_, &mut found);
        if let Some(cases) = &s.cases {
            for (j, c) in cases.iter().enumerate() {
                if let Some(Value::String(text)) = c.first()
                    && text != "ELSE"
                {
                    let src = text.strip_prefix('=').unwrap_or(text);
                    found.push((format!("{base}/cases/{j}/0"), src.to_owned(), Place::Body));
                }
            }
        }
        for (field, v) in [
            ("in", &s.input),
            ("value", &s.value),
            ("source", &s.source),
            ("print", &s.print),
            ("reason", &s.reason),
            ("preview", &s.preview),
        ] {
            if let Some(v) = v {
                collect(v, &format!("{base}/{field}"), Place::Body, &mut found);
            }
        }
        if let Some(a) = &s.approval
            && let Some(r) = &a.reason
        {
            collect(
                r,
                &format!("{base}/approval/reason"),
                Place::Body,
                &mut found,
            );
        }
        if let Some(out) = &s.out {
            for (k, v) in out {
                collect(
                    v,
                    &format!("{base}/out/{}", escape(k)),
                    Place::Out,
                    &mut found,
                );
            }
        }
        if s.step_type() == Some(StepType::Write)
            && let Some(src) = s.target.as_deref().and_then(expr::as_expression)
        {
            found.push((format!("{base}/target"), src.to_owned(), Place::Body));
        }
        for (path, src, place) in found {
            let c = match expr::compile(&src) {
                Ok(c) => c,
                Err(e) => {
                    self.err(e.code(), Some(id), path, e.to_string());
                    continue;
                }
            };
            for v in &c.refs.vars {
                if !decls.vars.contains(v) {
                    self.err(
                        "undeclared_var",
                        Some(id),
                        path.clone(),
                        format!("{v} is not declared in registry.vars"),
                    );
                }
            }
            for n in &c.refs.idents {
                match n.as_str() {
                    "_item" | "_index" if !in_loop => self.err(
                        "item_outside_loop",
                        Some(id),
                        path.clone(),
                        format!("{n} is only in scope inside a Loop_ body"),
                    ),
                    "_result" | "_meta" if place != Place::Out => self.err(
                        "result_outside_out",
                        Some(id),
                        path.clone(),
                        format!("{n} is only in scope in out"),
                    ),
                    _ => {}
                }
            }
        }
        // Targets of writes. A `Write_` target is a file path, an expression or a literal.
        let mut targets: Vec<(String, &str)> = Vec::new();
        if let Some(t) = &s.target
            && s.step_type() != Some(StepType::Write)
        {
            targets.push((format!("{base}/target"), t));
        }
        if let Some(t) = &s.resume_result_target {
            targets.push((format!("{base}/resumeResultTarget"), t));
        }
        if let Some(out) = &s.out {
            for k in out.keys() {
                targets.push((format!("{base}/out/{}", escape(k)), k));
            }
        }
        for (path, t) in targets {
            match super::vars::parse_target(t) {
                Err(m) => self.err("invalid_target", Some(id), path, m),
                Ok(target) => {
                    if !decls.vars.contains(&target.var) {
                        self.err(
                            "undeclared_var",
                            Some(id),
                            path.clone(),
                            format!("{} is not declared in registry.vars", target.var),
                        );
                    }
                    if regions.in_parallel_loop.contains(id) && !target.indexed() {
                        self.warn("unindexed_parallel_write", Some(id), path, format!("{t} is written by parallel iterations without an index; the last one wins"));
                    }
                }
            }
        }
    }
}

#[derive(Default)]
struct Decls {
    params: BTreeSet<String>,
    vars: BTreeSet<String>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    Body,
    Out,
}

/// Every expression among the string leaves of `v`.
fn collect(v: &Value, path: &str, place: Place, out: &mut Vec<(String, String, Place)>) {
    match v {
        Value::String(s) => {
            if let Some(src) = expr::as_expression(s) {
                out.push((path.to_owned(), src.to_owned(), place));
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                collect(x, &format!("{path}/{i}"), place, out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                collect(x, &format!("{path}/{}", escape(k)), place, out);
            }
        }
        _ => {}
    }
}

/// JSON Pointer escaping of one key.
fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// Which steps sit inside loop bodies.
struct Regions<'d> {
    in_loop: HashSet<&'d str>,
    in_parallel_loop: HashSet<&'d str>,
}

impl<'d> Regions<'d> {
    fn of(doc: &'d Document, index: &HashMap<&str, usize>) -> Regions<'d> {
        let mut in_loop = HashSet::new();
        let mut in_parallel_loop = HashSet::new();
        let mut body_of: BTreeMap<&str, bool> = BTreeMap::new();
        for s in &doc.steps {
            if s.step_type() == Some(StepType::Loop) {
                body_of.insert(&s.id, s.mode.as_deref() == Some("parallel"));
            }
        }
        for (loop_id, parallel) in body_of {
            let Some(&li) = index.get(loop_id) else {
                continue;
            };
            let mut stack: Vec<&str> = doc.steps[li].children.iter().map(String::as_str).collect();
            let mut seen = HashSet::new();
            while let Some(id) = stack.pop() {
                let Some(&i) = index.get(id) else { continue };
                if !seen.insert(i) {
                    continue;
                }
                let s = &doc.steps[i];
                in_loop.insert(s.id.as_str());
                if parallel {
                    in_parallel_loop.insert(s.id.as_str());
                }
                for (_, t) in s.targets() {
                    stack.push(t);
                }
            }
        }
        Regions {
            in_loop,
            in_parallel_loop,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codes(doc: Value) -> Vec<(&'static str, Option<String>)> {
        let (r, _) = validate(&doc, Runners::default());
        r.errors
            .iter()
            .chain(&r.warnings)
            .map(|d| (d.code, d.step_id.clone()))
            .collect()
    }

    fn fixtures(kind: &str) -> Vec<std::path::PathBuf> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/workflows")
            .join(kind);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && !p.to_string_lossy().ends_with(".expected.json")
            })
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no fixtures in {}", dir.display());
        files
    }

    fn summary(ds: &[Diagnostic]) -> Vec<Value> {
        let mut v: Vec<Value> = ds
            .iter()
            .map(|d| json!({"code": d.code, "step_id": d.step_id, "path": d.path}))
            .collect();
        v.sort_by_key(|x| x.to_string());
        v
    }

    /// Every valid fixture validates without errors; every invalid one yields exactly the
    /// diagnostics in its `NAME.expected.json` (rewritten when `BRAIN_BLESS=1`).
    #[test]
    fn fixtures_validate_as_expected() {
        for f in fixtures("valid") {
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            let (r, d) = validate(&doc, Runners::default());
            assert!(r.errors.is_empty(), "{}: {:#?}", f.display(), r.errors);
            assert!(d.is_some());
        }
        for f in fixtures("invalid") {
            let doc: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            let (r, d) = validate(&doc, Runners::default());
            assert!(
                d.is_none() && !r.errors.is_empty(),
                "{} validated",
                f.display()
            );
            let got = json!({"errors": summary(&r.errors), "warnings": summary(&r.warnings)});
            let expected_path = f.with_extension("expected.json");
            if std::env::var_os("BRAIN_BLESS").is_some() {
                std::fs::write(
                    &expected_path,
                    serde_json::to_string_pretty(&got).unwrap() + "\n",
                )
                .unwrap();
            }
            let expected: Value = serde_json::from_str(
                &std::fs::read_to_string(&expected_path)
                    .unwrap_or_else(|e| panic!("{}: {e}", expected_path.display())),
            )
            .unwrap();
            assert_eq!(got, expected, "{}", f.display());
            for d in r.errors.iter().chain(&r.warnings) {
                assert!(
                    !d.message.is_empty() && (d.path.is_empty() || d.path.starts_with('/')),
                    "{d:?}"
                );
            }
        }
    }

    #[test]
    fn a_minimal_document_is_valid() {
        let (r, d) = validate(
            &json!({"version": "brain/1", "name": "x", "steps": [{"id": "Noop_a", "next": "Stop_b"}, {"id": "Stop_b"}]}),
            Runners::default(),
        );
        assert!(r.is_valid(true), "{r:?}");
        assert!(d.is_some());
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let got = codes(json!({"version": "brain/1", "name": "x", "steps": [
            {"id": "Foo_a", "next": "Stop_z"},
            {"id": "Set_b", "target": "$nope", "value": "=_item", "next": "Nowhere"},
            {"id": "Stop_z", "next": "RETURN"},
        ]}));
        for want in [
            "unknown_prefix",
            "undeclared_var",
            "item_outside_loop",
            "dangling_target",
            "stop_with_next",
        ] {
            assert!(
                got.iter().any(|(c, _)| *c == want),
                "{want} missing from {got:?}"
            );
        }
    }
}
