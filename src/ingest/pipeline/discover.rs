//! The discovering stage: what is on disk for a sync's scope (the walk), and what the store
//! believes of it (the live source rows).

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use rusqlite::params;

use crate::ingest::rules::{self, Rules};
use crate::ingest::walk::{self, Found};
use crate::ingest::{IngestError, RootInfo, Scope, SourceRow};
use crate::store::Store;

/// Walks the scope. Returns what was found and, for a partial scope, the relative paths it
/// covers (a path covers itself and everything below it).
pub fn discover(
    root: &RootInfo,
    canonical_root: &Path,
    rules: &Rules,
    scope: &Scope,
) -> (Vec<Found>, Option<Vec<String>>) {
    match scope {
        Scope::All => (
            walk::walk(&root.path, canonical_root, rules, &root.path),
            None,
        ),
        Scope::Paths { paths, renames } => {
            let mut all: Vec<PathBuf> = paths.clone();
            for (a, b) in renames {
                all.push(a.clone());
                all.push(b.clone());
            }
            all.sort();
            all.dedup();
            let mut found = Vec::new();
            let mut rels = Vec::new();
            for p in all {
                let Some(rel) = walk::rel_path(&root.path, &p) else {
                    continue;
                };
                if p.file_name()
                    .is_some_and(|n| rules::IGNORE_FILES.iter().any(|f| n == *f))
                    && let Some(dir) = p.parent()
                {
                    rules.invalidate(dir);
                }
                rels.push(rel.clone());
                match std::fs::symlink_metadata(&p) {
                    Ok(m) if m.is_dir() => {
                        if !rules.is_ignored(&p, true) {
                            found.extend(walk::walk(&root.path, canonical_root, rules, &p));
                        }
                    }
                    Ok(_) => {
                        let one = walk::walk(&root.path, canonical_root, rules, &p);
                        found.extend(one.into_iter().filter(|f| f.rel() == rel));
                    }
                    Err(_) => {}
                }
            }
            let mut seen = HashSet::new();
            found.retain(|f| seen.insert(f.rel().to_owned()));
            (found, Some(rels))
        }
    }
}

/// The live source rows of a root under the scope's paths (all of them when `None`), by path.
pub fn live_sources(
    store: &Store,
    root_id: i64,
    scope: Option<&[String]>,
) -> Result<BTreeMap<String, SourceRow>, IngestError> {
    Ok(store.read(|c| {
            let mut out = BTreeMap::new();
            let mut stmt = c.prepare_cached(
                "SELECT id, rel_path, content_hash, size, mtime_ns, status, reason FROM sources
                 WHERE root_id = ?1 AND deleted_at IS NULL
                   AND (?2 IS NULL OR rel_path = ?2 OR substr(rel_path, 1, length(?2) + 1) = ?2 || '/')",
            )?;
            let mut run = |prefix: Option<&str>| -> rusqlite::Result<()> {
                let rows = stmt.query_map(params![root_id, prefix], |r| {
                    Ok(SourceRow {
                        id: r.get(0)?,
                        rel: r.get(1)?,
                        hash: r.get(2)?,
                        size: r.get(3)?,
                        mtime_ns: r.get(4)?,
                        status: r.get(5)?,
                        reason: r.get(6)?,
                    })
                })?;
                for row in rows {
                    let row = row?;
                    out.insert(row.rel.clone(), row);
                }
                Ok(())
            };
            match scope {
                None => run(None)?,
                Some(rels) => {
                    for rel in rels {
                        run(Some(rel))?;
                    }
                }
            }
            Ok::<_, rusqlite::Error>(out)
        })?)
}
