//! Tidy test: the import rules from ARCHITECTURE.md, checked by reading the sources.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// Files under `module` (a file `src/<module>.rs` or a folder `src/<module>/`).
fn module_files(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.exists() {
        files.push(file);
    }
    let dir = src.join(module);
    if dir.is_dir() {
        rust_files(&dir, &mut files);
    }
    assert!(!files.is_empty(), "no module {module}");
    files
}

fn check(modules: &[&str], forbidden: &[&str], why: &str) {
    let mut violations = Vec::new();
    for m in modules {
        for f in module_files(m) {
            let text = std::fs::read_to_string(&f).unwrap();
            // Unit tests at the end of a file may build what they check.
            let code_lines = text.lines().take_while(|l| l.trim() != "#[cfg(test)]");
            for (n, line) in code_lines.enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for bad in forbidden {
                    if code.contains(bad) {
                        violations.push(format!("{}:{}: `{bad}` ({why})", f.display(), n + 1));
                    }
                }
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn engine_modules_know_nothing_of_transport() {
    check(
        ENGINE,
        &[
            "crate::rpc::server",
            "crate::rpc::client",
            "crate::rpc::workflow",
            "rpc::{",
            "tokio::net",
            "jsonrpc",
            "crate::cli",
            "crate::daemon",
            "crate::mcp",
        ],
        "engine modules never import rpc, cli or sockets",
    );
    // The wire types are shared by exactly one engine file: `Search_` and `Graph_` steps answer
    // and parse what `search.query` and `graph.neighbors` do.
    let protocol_users: Vec<String> = ENGINE
        .iter()
        .flat_map(|m| module_files(m))
        .filter(|f| {
            std::fs::read_to_string(f).unwrap().lines().any(|l| {
                l.split("//")
                    .next()
                    .unwrap_or("")
                    .contains("crate::rpc::protocol")
            })
        })
        .map(|f| f.display().to_string())
        .collect();
    assert!(
        protocol_users
            .iter()
            .all(|f| f.ends_with("src/workflow/steps.rs")),
        "engine files importing wire types: {protocol_users:?}"
    );
}

/// The engine: everything below the façade and the socket.
const ENGINE: &[&str] = &[
    "store",
    "identity",
    "ingest",
    "graph",
    "brain",
    "config",
    "clock",
    "error",
    "search",
    "embed",
    "workflow",
    "supervise",
];

/// Files (relative to `src/`) outside `rpc::protocol` that may derive serde, with why: they
/// are formats on disk or reports of offline commands, never answers on the socket.
const SERDE_ALLOWED: &[&str] = &[
    "config.rs",            // the TOML config file
    "identity/mod.rs",      // user ids in the users file
    "identity/migrate.rs",  // the offline migration's report (`--json`)
    "search/index.rs",      // the tantivy commit payload
    "eval/beir.rs",         // BEIR files and the offline eval's report
    "eval/questions.rs",    // the question set's file and the eval's report
    "embed/mod.rs",         // model folder files (config.json, tokenizer settings)
    "embed/bert.rs",        // a model's config.json
    "workflow/model.rs",    // the workflow document model
    "workflow/engine.rs",   // run limits, stored with each run
    "workflow/validate.rs", // the offline validator's report, golden fixtures
    "bench.rs",             // the bench's printed report
    "doctor.rs",            // doctor's --json report
    "cli.rs",               // decoding answers the CLI prints
];

#[test]
fn only_wire_types_and_formats_on_disk_derive_serde() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut violations = Vec::new();
    for f in files {
        let rel = f
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel.starts_with("rpc/protocol") || SERDE_ALLOWED.contains(&rel.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if code.contains("derive(")
                && (code.contains("Serialize") || code.contains("Deserialize"))
            {
                violations.push(format!("{rel}:{}", n + 1));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "serde derived outside rpc::protocol (convert at the edge instead):\n{}",
        violations.join("\n")
    );
}

#[test]
fn answers_are_built_only_in_the_protocol() {
    check(
        &["rpc/server", "rpc/workflow", "rpc/client", "mcp", "brain"],
        &["json!("],
        "answers and requests are wire types of rpc::protocol, not json! values",
    );
}

#[test]
fn the_server_dispatches_on_the_method_table() {
    // Every arm of the dispatch is a method type's NAME, so a method exists on the wire only
    // if rpc.discover lists it.
    for m in ["rpc/server", "rpc/workflow"] {
        for f in module_files(m) {
            let text = std::fs::read_to_string(&f).unwrap();
            for (n, line) in text.lines().enumerate() {
                let arm = line.trim_start();
                // A match arm on a `noun.verb` literal.
                let literal = arm
                    .strip_prefix('"')
                    .and_then(|rest| rest.split_once('"'))
                    .filter(|(_, after)| after.contains("=>"))
                    .map(|(lit, _)| lit);
                assert!(
                    !literal.is_some_and(|l| l.contains('.') && !l.contains(' ')),
                    "{}:{}: dispatch on a string literal; add a method type to \
                     rpc::protocol::methods instead",
                    f.display(),
                    n + 1
                );
            }
        }
    }
}

#[test]
fn store_and_pure_modules_have_no_tokio() {
    check(
        &[
            "store",
            "identity",
            "ingest",
            "graph",
            "clock",
            "config",
            "search",
            "embed",
            "workflow",
            "supervise",
        ],
        &["tokio"],
        "store, identity and pure modules are synchronous",
    );
}

#[test]
fn search_does_not_know_ingest() {
    check(
        &["search"],
        &["crate::ingest"],
        "search reads the store; only eval and the façade put ingest and search together",
    );
}

#[test]
fn the_cli_reaches_the_daemon_only_through_the_client() {
    check(
        &["cli"],
        &[
            "crate::store",
            "crate::brain",
            "crate::daemon",
            "crate::graph",
            "crate::search",
            "rpc::server",
            "rpc::workflow",
            "connect_stream",
            "\"jsonrpc\"",
        ],
        "the CLI talks to the daemon over the socket, through rpc::client",
    );
}

#[test]
fn the_cli_calls_methods_through_their_types() {
    // A request built as a `json!` value or sent by a method-name string escapes the params
    // type's schema; every call names its method type (`call_method::<M>`, `request::<M>`).
    check(
        &["cli"],
        &[
            "json!(",
            ".call(",
            ".send(",
            "call_streaming(",
            "call_typed(",
        ],
        "the CLI calls socket methods as types of rpc::protocol::methods with their params types",
    );
}

#[test]
fn the_server_reaches_the_engine_only_through_the_facade() {
    check(
        &["rpc/server", "rpc/workflow"],
        &["crate::store", "rusqlite", "crate::search", "crate::embed"],
        "the server calls the Brain façade, which owns the store and the index",
    );
}

#[test]
fn socket_clients_know_only_the_protocol() {
    check(
        &["rpc/client", "mcp"],
        &[
            "crate::brain",
            "crate::graph",
            "crate::workflow",
            "crate::store",
            "crate::search",
            "crate::ingest",
            "rpc::server",
        ],
        "the client and brain mcp speak the wire types only, like any other client",
    );
}

#[test]
fn every_source_file_says_what_it_owns() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.starts_with("//!"),
            "{} must start with a //! comment",
            f.display()
        );
    }
}
