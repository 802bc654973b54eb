//! `brain graph neighbors|backlinks`: the start node named by id, file or title (as
//! `brain node get` takes it), and every edge printed with its type and direction.
//!
//! Talks to the daemon only through the client; it never reads the store.

use std::collections::HashMap;

use super::{GraphTarget, decode, print_json};
use crate::rpc::client::{Client, ClientError};
use crate::rpc::protocol::methods::NodeGet;
use crate::rpc::protocol::{Method, NodeGetParams, NodeWire, SubgraphWire};

/// Nodes outside the answer (the sections and chunks an edge starts or ends at) looked up to
/// name the note they belong to: one request each, so a bounded number per command; past it
/// an edge shows the node's id.
const MAX_LOOKUPS: usize = 100;

/// The node `t` names, fetched from the daemon.
pub fn resolve(client: &mut Client, t: &GraphTarget) -> Result<NodeWire, ClientError> {
    let params = match (&t.node_id, &t.id, &t.path, &t.title) {
        (Some(id), ..) | (None, Some(id), ..) => by_id(id),
        (None, None, Some(path), _) => NodeGetParams {
            path: Some(path.clone()),
            ..Default::default()
        },
        (None, None, None, Some(title)) => NodeGetParams {
            title: Some(title.clone()),
            ..Default::default()
        },
        // clap's group requires one of them.
        (None, None, None, None) => {
            return Err(ClientError::Usage(
                "name the node: ID, --id, --path or --title".into(),
            ));
        }
    };
    client.request::<NodeGet>(&params)
}

fn by_id(id: &str) -> NodeGetParams {
    NodeGetParams {
        id: Some(id.to_owned()),
        ..Default::default()
    }
}

/// Calls `M` (`graph.neighbors` or `graph.backlinks`) and prints its answer from `start`'s
/// point of view: `→ TYPE  NODE` for an edge out of it, `← TYPE  NODE` for one into it (or into
/// one of its sections), `A → TYPE → B` for an edge further out.
pub fn walk<M: Method<Result = SubgraphWire>>(
    client: &mut Client,
    start: &NodeWire,
    params: &M::Params,
    as_json: bool,
) -> Result<(), ClientError> {
    let v = client.call_method::<M>(params)?;
    if as_json {
        return print_json(&v);
    }
    let g: SubgraphWire = decode(M::NAME, v)?;
    let mut names: HashMap<String, Named> = HashMap::new();
    names.insert(start.id.clone(), Named::of(start, None));
    for n in &g.nodes {
        names.insert(n.id.clone(), Named::of(n, None));
    }
    let mut lookups = 0;
    for e in &g.edges {
        for id in [&e.src_id, &e.dst_id] {
            if names.contains_key(id) || lookups >= MAX_LOOKUPS {
                continue;
            }
            lookups += 1;
            let found: Option<NodeWire> = match client.call_method::<NodeGet>(&by_id(id)) {
                Ok(v) => decode(NodeGet::NAME, v).ok(),
                // A node retired since the walk: the edge shows its id.
                Err(ClientError::Rpc(_)) => None,
                Err(e) => return Err(e),
            };
            if let Some(n) = found {
                let parent = n.parent_id.as_ref().and_then(|p| names.get(p)).cloned();
                names.insert(id.clone(), Named::of(&n, parent.as_ref()));
            }
        }
    }
    let label = |id: &str| {
        names
            .get(id)
            .map(|n| n.label.clone())
            .unwrap_or_else(|| id.to_owned())
    };
    let is_start = |id: &str| id == start.id || names.get(id).is_some_and(|n| n.under == start.id);
    println!(
        "{}  ({}{})",
        label(&start.id),
        start.kind,
        start
            .path
            .as_deref()
            .map(|p| format!(", {p}"))
            .unwrap_or_default()
    );
    for e in &g.edges {
        if is_start(&e.src_id) {
            println!("  → {:<14} {}", e.edge_type, with_path(&names, &e.dst_id));
        } else if is_start(&e.dst_id) {
            let into = if e.dst_id == start.id {
                String::new()
            } else {
                format!("  (into {})", label(&e.dst_id))
            };
            println!(
                "  ← {:<14} {}{into}",
                e.edge_type,
                with_path(&names, &e.src_id)
            );
        } else {
            println!(
                "  {} → {} → {}",
                label(&e.src_id),
                e.edge_type,
                label(&e.dst_id)
            );
        }
    }
    println!("{} nodes, {} edges", g.nodes.len(), g.edges.len());
    Ok(())
}

/// How an edge's end is shown.
#[derive(Debug, Clone)]
struct Named {
    /// The title (else the key), `[kind]` for what is not a note, `Note › Heading` for a part
    /// of a note.
    label: String,
    path: Option<String>,
    /// The note this is a section or chunk of, else its own id.
    under: String,
}

impl Named {
    fn of(n: &NodeWire, parent: Option<&Named>) -> Named {
        let own = n.title.clone().unwrap_or_else(|| n.key.clone());
        let label = match parent {
            Some(p) => format!("{} › {own}", p.label),
            None if n.kind == "note" => own,
            None => format!("{own} [{}]", n.kind),
        };
        Named {
            label,
            path: n.path.clone(),
            under: parent
                .map(|p| p.under.clone())
                .unwrap_or_else(|| n.id.clone()),
        }
    }
}

fn with_path(names: &HashMap<String, Named>, id: &str) -> String {
    match names.get(id) {
        Some(Named {
            label,
            path: Some(p),
            ..
        }) => format!("{label}  {p}"),
        Some(n) => n.label.clone(),
        None => id.to_owned(),
    }
}
