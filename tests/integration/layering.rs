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
            for (n, line) in text.lines().enumerate() {
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
        &[
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
        ],
        &[
            "crate::rpc",
            "tokio::net",
            "jsonrpc",
            "crate::cli",
            "crate::daemon",
        ],
        "engine modules never import rpc, cli or sockets",
    );
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
            "rpc::server",
        ],
        "the CLI talks to the daemon over the socket",
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
