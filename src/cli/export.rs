//! `brain export`: the whole graph as of a time, as JSON lines or GraphML, written page by
//! page as the daemon answers them (`graph.export`), so memory stays one page whatever the
//! graph's size.
//!
//! Talks to the daemon only through the client. A file given with `--output` is written next
//! to its place and renamed into it once complete, so a failed export leaves no partial file.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use crate::rpc::client::{Client, ClientError};
use crate::rpc::protocol::history::{EdgeSpanWire, ExportLine, ExportParams};
use crate::rpc::protocol::methods::GraphExport;
use crate::rpc::protocol::{NodeWire, ProvenanceWire};

/// The formats `--format` takes.
pub const FORMATS: [&str; 2] = ["jsonl", "graphml"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object a line: `{"record": "node", ...}`, then `{"record": "edge", ...}`.
    Jsonl,
    /// GraphML (XML); props and citations as JSON text in `data` elements.
    Graphml,
}

impl Format {
    pub fn parse(s: &str) -> Option<Format> {
        match s {
            "jsonl" => Some(Format::Jsonl),
            "graphml" => Some(Format::Graphml),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ExportError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("failed to write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Runs the export; the exit code says how it went.
pub fn run(
    socket: &Path,
    timeout: Duration,
    as_of: Option<&str>,
    format: Format,
    output: Option<&Path>,
) -> ExitCode {
    let result = match output {
        None => {
            let stdout = std::io::stdout();
            let path = PathBuf::from("standard output");
            export(socket, timeout, as_of, format, stdout.lock(), &path)
        }
        Some(dest) => to_file(socket, timeout, as_of, format, dest),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(ExportError::Client(e)) => super::report_client_error(&e),
        Err(e) => {
            eprintln!("brain: {e}");
            ExitCode::FAILURE
        }
    }
}

fn to_file(
    socket: &Path,
    timeout: Duration,
    as_of: Option<&str>,
    format: Format,
    dest: &Path,
) -> Result<(), ExportError> {
    let write_err = |path: &Path| {
        let path = path.to_owned();
        move |source| ExportError::Write { path, source }
    };
    let mut name = dest.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    let partial = dest.with_file_name(name);
    let file = File::create(&partial).map_err(write_err(&partial))?;
    match export(socket, timeout, as_of, format, file, &partial) {
        Ok(()) => std::fs::rename(&partial, dest).map_err(write_err(dest)),
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            Err(e)
        }
    }
}

fn export(
    socket: &Path,
    timeout: Duration,
    as_of: Option<&str>,
    format: Format,
    out: impl Write,
    path: &Path,
) -> Result<(), ExportError> {
    let mut client = Client::connect_timeout(socket, Some(timeout))?;
    let mut out = BufWriter::new(out);
    let io = |source| ExportError::Write {
        path: path.to_owned(),
        source,
    };
    if format == Format::Graphml {
        out.write_all(GRAPHML_HEAD.as_bytes()).map_err(io)?;
    }
    let mut params = ExportParams {
        as_of: as_of.map(str::to_owned),
        ..ExportParams::default()
    };
    loop {
        let page = client.request::<GraphExport>(&params)?;
        for node in page.nodes {
            match format {
                Format::Jsonl => line(&mut out, &ExportLine::Node(node)),
                Format::Graphml => graphml_node(&mut out, &node),
            }
            .map_err(io)?;
        }
        for edge in page.edges {
            match format {
                Format::Jsonl => line(&mut out, &ExportLine::Edge(edge)),
                Format::Graphml => graphml_edge(&mut out, &edge),
            }
            .map_err(io)?;
        }
        match page.next_cursor {
            Some(c) => params.cursor = Some(c),
            None => break,
        }
    }
    if format == Format::Graphml {
        out.write_all(b"  </graph>\n</graphml>\n").map_err(io)?;
    }
    out.flush().map_err(io)
}

fn line(out: &mut impl Write, l: &ExportLine) -> std::io::Result<()> {
    serde_json::to_writer(&mut *out, l)?;
    out.write_all(b"\n")
}

/// The GraphML header: the attribute keys every node and edge may carry.
const GRAPHML_HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<graphml xmlns="http://graphml.graphdrawing.org/xmlns">
  <key id="kind" for="node" attr.name="kind" attr.type="string"/>
  <key id="key" for="node" attr.name="key" attr.type="string"/>
  <key id="title" for="node" attr.name="title" attr.type="string"/>
  <key id="path" for="node" attr.name="path" attr.type="string"/>
  <key id="aliases" for="node" attr.name="aliases" attr.type="string"/>
  <key id="type" for="edge" attr.name="type" attr.type="string"/>
  <key id="props" for="all" attr.name="props" attr.type="string"/>
  <key id="valid_from" for="all" attr.name="valid_from" attr.type="string"/>
  <key id="valid_to" for="all" attr.name="valid_to" attr.type="string"/>
  <key id="citations" for="all" attr.name="citations" attr.type="string"/>
  <graph id="brain" edgedefault="directed">
"#;

fn graphml_node(out: &mut impl Write, n: &NodeWire) -> std::io::Result<()> {
    writeln!(out, "    <node id=\"{}\">", escape(&n.id))?;
    data(out, "kind", Some(&n.kind))?;
    data(out, "key", Some(&n.key))?;
    data(out, "title", n.title.as_deref())?;
    data(out, "path", n.path.as_deref())?;
    if !n.aliases.is_empty() {
        data(out, "aliases", Some(&serde_json::to_string(&n.aliases)?))?;
    }
    data(out, "props", Some(&n.props.to_string()))?;
    data(out, "valid_from", Some(&n.valid_from))?;
    data(out, "valid_to", n.valid_to.as_deref())?;
    citations(out, &n.provenance)?;
    writeln!(out, "    </node>")
}

fn graphml_edge(out: &mut impl Write, e: &EdgeSpanWire) -> std::io::Result<()> {
    writeln!(
        out,
        "    <edge id=\"{}\" source=\"{}\" target=\"{}\">",
        escape(&e.edge.id),
        escape(&e.edge.src_id),
        escape(&e.edge.dst_id)
    )?;
    data(out, "type", Some(&e.edge.edge_type))?;
    data(out, "props", Some(&e.edge.props.to_string()))?;
    data(out, "valid_from", Some(&e.valid_from))?;
    data(out, "valid_to", e.valid_to.as_deref())?;
    citations(out, &e.edge.provenance)?;
    writeln!(out, "    </edge>")
}

fn citations(out: &mut impl Write, p: &[ProvenanceWire]) -> std::io::Result<()> {
    if p.is_empty() {
        return Ok(());
    }
    data(out, "citations", Some(&serde_json::to_string(p)?))
}

fn data(out: &mut impl Write, key: &str, value: Option<&str>) -> std::io::Result<()> {
    match value {
        Some(v) => writeln!(out, "      <data key=\"{key}\">{}</data>", escape(v)),
        None => Ok(()),
    }
}

/// Text fit for XML content and attribute values. Characters XML 1.0 forbids (control
/// characters other than tab, newline and carriage return) are dropped: a note may hold them,
/// an XML parser refuses them.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: &str) {
        assert_eq!(escape(input), expected);
    }

    #[test]
    fn escapes() {
        check("a & b", "a &amp; b");
        check("<x y=\"1\">", "&lt;x y=&quot;1&quot;&gt;");
        check("it's", "it&apos;s");
        check("bell\u{7}tab\t", "belltab\t");
        check("naïve", "naïve");
    }

    #[test]
    fn formats() {
        assert_eq!(Format::parse("jsonl"), Some(Format::Jsonl));
        assert_eq!(Format::parse("graphml"), Some(Format::Graphml));
        assert_eq!(Format::parse("xml"), None);
        for f in FORMATS {
            assert!(Format::parse(f).is_some());
        }
    }
}
