//! The relinking stage: notes elsewhere in the root whose links use a name that was gained or
//! lost are read and written again, so their links resolve against the names as they are now.

use std::collections::HashSet;

use rusqlite::{OptionalExtension, params};

use super::batches::Item;
use super::job::Job;
use super::write::write_job;
use crate::ingest::facts::Ctx;
use crate::ingest::walk::DiskFile;
use crate::ingest::{Checks, IngestError, RootInfo, write_with};
use crate::store::Store;

/// Rewrites the notes of one root that use changed names.
pub struct Relinker<'a> {
    pub store: &'a Store,
    pub root: &'a RootInfo,
    pub max_file_bytes: u64,
}

impl Relinker<'_> {
    /// The notes whose links use any of `names`, in one statement: a cold ingest changes every
    /// name of the root, and one lookup each from here cost a statement round trip per name.
    pub fn referrers(&self, names: &HashSet<String>) -> Result<HashSet<String>, IngestError> {
        if names.is_empty() {
            return Ok(HashSet::new());
        }
        let names = serde_json::Value::from(names.iter().map(String::as_str).collect::<Vec<_>>())
            .to_string();
        Ok(self.store.read(|c| {
            c.prepare_cached(
                "SELECT DISTINCT n.id FROM json_each(?2) AS j
                 CROSS JOIN link_refs AS r ON r.root_id = ?1 AND r.name = j.value
                 JOIN nodes n ON n.rid = r.src",
            )?
            .query_map(params![self.root.id, names], |r| r.get::<_, String>(0))?
            .collect::<rusqlite::Result<HashSet<String>>>()
        })?)
    }

    /// Re-reads and rewrites the given notes so their links resolve against the current names.
    /// Returns how many were rewritten.
    pub fn relink(&self, ctx: &Ctx<'_>, ids: &HashSet<String>) -> Result<u64, IngestError> {
        let mut n = 0;
        for id in ids {
            let row: Option<(i64, String)> = self.store.read(|c| {
                c.query_row(
                    "SELECT s.id, s.rel_path FROM nodes n JOIN sources s ON s.id = n.source_id
                     WHERE n.id = ?1 AND n.valid_to IS NULL AND s.deleted_at IS NULL",
                    [id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
            })?;
            let Some((sid, rel)) = row else { continue };
            let Ok(file) = DiskFile::at(&self.root.path, rel) else {
                continue;
            };
            let mut job = Job::read(Some(sid), file, self.max_file_bytes);
            job.parse(self.max_file_bytes, None);
            let item = Item {
                job,
                note_id: id.clone(),
            };
            write_with(self.store, ctx, Checks::Store, |tx| {
                write_job(tx, ctx, &item)?;
                Ok::<_, IngestError>(())
            })?;
            n += 1;
        }
        Ok(n)
    }
}
