//! `brain eval`: retrieval quality measured in-process on a throwaway store, through the same
//! ingest and search code the daemon runs. `beir` scores a BEIR dataset, `questions` a judged
//! question set over a folder of notes (beside SQLite FTS5, `fts5`); `metrics` holds the
//! measures both share.
//!
//! Lives outside `search` so that the engine does not depend on ingest: only the measuring
//! tools put the two together.

pub mod beir;
pub mod fts5;
pub mod metrics;
pub mod questions;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use serde::Deserialize;

use crate::identity::UserId;
use crate::ingest::Ingestor;
use crate::search::{Limits, Mode, Search, Tuning, models};
use crate::store::{self, Store};

/// A temporary folder removed on drop.
pub struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Scratch {
    /// A fresh folder under the system's temporary folder, named for this process.
    pub fn new(what: &str) -> Scratch {
        Scratch(std::env::temp_dir().join(format!(
            "brain-{what}-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

/// The kept `dir`, or a scratch folder removed when the returned guard drops.
pub fn work_dir(kept: Option<&PathBuf>, what: &str) -> (Option<Scratch>, PathBuf) {
    match kept {
        Some(d) => (None, d.clone()),
        None => {
            let s = Scratch::new(what);
            let d = s.path().to_owned();
            (Some(s), d)
        }
    }
}

/// Ingests `folder` into `store` in-process, acting as `email`, as a root (watched or not) —
/// how the measuring tools build their stores without a daemon.
pub fn ingest_folder(
    store: &Arc<Store>,
    email: &str,
    folder: &Path,
    watched: bool,
) -> anyhow::Result<crate::ingest::SyncReport> {
    let user = UserId::for_email(email);
    store.write(|tx| store::ensure_user(tx, &user, email))?;
    let ingestor = Ingestor::new(
        store.clone(),
        user.as_str(),
        crate::ingest::DEFAULT_MAX_FILE_BYTES,
    );
    let root = ingestor.add_root(folder, watched)?;
    Ok(ingestor.sync(&root, &crate::ingest::Scope::All, &mut |_| {})?)
}

/// A search engine over an ingested store, with every chunk embedded when a model is given.
pub struct Prepared {
    pub search: Arc<Search>,
    pub index_secs: f64,
    pub embed_secs: f64,
    /// Chunks embedded by this run (a kept work dir embeds only what is new).
    pub embedded: u64,
    pub model_id: Option<String>,
}

/// Opens the search engine of the store in `work`, indexes it (`rebuild`: from scratch, for a
/// kept index that other settings may have built), and embeds every chunk with `model`.
pub fn prepare(
    store: &Arc<Store>,
    work: &Path,
    tuning: Tuning,
    rebuild: bool,
    model: Option<&Path>,
) -> anyhow::Result<Prepared> {
    let started = Instant::now();
    let search = Search::open_with(
        store.clone(),
        &work.join("index"),
        tuning,
        Limits::offline(),
    )?;
    if rebuild {
        search.rebuild()?;
    } else {
        search.bring_up_to_date()?;
    }
    let index_secs = started.elapsed().as_secs_f64();
    let (mut embed_secs, mut model_id, mut embedded) = (0.0, None, 0u64);
    if let Some(path) = model {
        let embedder = models::load(path)?;
        model_id = Some(embedder.model_id().to_owned());
        search.set_model(embedder)?;
        let t = Instant::now();
        loop {
            let n = search.embed_batch(64)?;
            if n == 0 {
                break;
            }
            embedded += n as u64;
        }
        embed_secs = t.elapsed().as_secs_f64();
    }
    Ok(Prepared {
        search,
        index_secs,
        embed_secs,
        embedded,
        model_id,
    })
}

/// The model folder a mode needs, refused when missing.
pub fn model_for(mode: Mode, model: Option<&PathBuf>) -> anyhow::Result<Option<&Path>> {
    match (mode, model) {
        (Mode::Bm25, _) => Ok(None),
        (_, Some(p)) => Ok(Some(p.as_path())),
        (m, None) => bail!("--mode {m:?} needs --model PATH (a model folder)"),
    }
}

pub fn read_jsonl<T: for<'de> Deserialize<'de>>(path: &Path) -> anyhow::Result<Vec<T>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.with_context(|| format!("reading {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        out.push(
            serde_json::from_str(&line)
                .with_context(|| format!("{}:{}: not a valid record", path.display(), i + 1))?,
        );
    }
    Ok(out)
}
