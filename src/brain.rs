//! The façade: the one entry point the server (and in-process tools) call.
//!
//! Methods are synchronous and may block on SQLite; async callers run them on a blocking
//! thread. Architecture Invariant: nothing here knows about sockets, JSON-RPC or wire types;
//! it returns engine types and [`crate::error::Error`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use std::path::Path;

use crate::config::Config;
use crate::error::{Error, Kind};
use crate::graph::{self, Direction, NodeRef, NodeView, SourceView, Subgraph, TitleHit};
use crate::identity::{self, UserId};
use crate::ingest::watch::{ProgressFn, Worker, WorkerState};
use crate::ingest::{self, Ingestor, RootInfo, Scope, SyncReport};
use crate::search::{self, Search, models};
use crate::store::{self, Counts, Store, UserRow};

mod recent;
mod writes;
pub use recent::{Change, RecentChange, RecentQuery, Via};
pub use writes::{NoteMode, NoteWritten, Retired};

pub struct Brain {
    store: Arc<Store>,
    ingestor: Arc<Ingestor>,
    worker: Arc<Worker>,
    search: Arc<Search>,
    /// The model named in the config file; it wins over the stored choice.
    configured_model: Option<String>,
    data_dir: PathBuf,
    user_id: UserId,
    user_email: String,
    started: Instant,
    workflows: crate::workflow::Engine,
    /// The ingest file cap: a note written by a client must stay indexable.
    max_file_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct Status {
    pub version: &'static str,
    pub pid: u32,
    pub uptime_secs: f64,
    pub data_dir: PathBuf,
    pub store_path: PathBuf,
    pub store_bytes: u64,
    pub schema_version: u32,
    pub user_id: UserId,
    pub user_email: String,
    pub counts: Counts,
    pub worker: WorkerState,
    pub search: search::SearchStatus,
    /// Resident bytes now and at the peak (`None` off Linux).
    pub memory: Option<(u64, u64)>,
    /// Times memory was given back after a burst of work.
    pub memory_releases: u64,
    /// Supervised worker threads, with their restarts after panics.
    pub workers: Vec<crate::supervise::WorkerStatus>,
}

impl Brain {
    /// Wraps an open store and records the acting user in it; opens the search index and
    /// starts its background catch-up and the embedding worker.
    pub fn new(store: Arc<Store>, config: &Config) -> Result<Brain, Error> {
        let (data_dir, user_email) = (config.data_dir.clone(), config.user_email.as_str());
        // A users file may have given this address another id; the stored one wins so that
        // every row the daemon writes agrees with the users table.
        let user_id = store.write(|tx| store::ensure_user(tx, &config.user_id, user_email))?;
        let search = Search::open_with(
            store.clone(),
            &search::index_dir(&data_dir),
            config.search_tuning,
            config.search_limits,
        )?;
        let hook = search.clone();
        let kick = search.clone();
        let housekeeper = Arc::new(store::history::Housekeeper::new(
            store.clone(),
            config.retired_text_retention,
        ));
        let after_sync = housekeeper.clone();
        let wal_store = store.clone();
        let ingestor = Arc::new(
            Ingestor::new(store.clone(), user_id.as_str(), config.max_file_bytes)
                .with_after_write(Box::new(move || {
                    if let Err(e) = hook.bring_up_to_date() {
                        tracing::warn!(error = %e, "search index catch-up failed");
                    }
                    after_sync.run_if_due();
                    if let Err(e) = wal_store.settle_wal() {
                        tracing::warn!(error = %e, "could not truncate the write-ahead log");
                    }
                }))
                .with_after_batch(Box::new(move || kick.kick_indexer())),
        );
        let worker = Worker::start(ingestor.clone());
        search.start_background();
        // Off the start-up path: a first purge of a large history takes a while.
        std::thread::Builder::new()
            .name("housekeeping".into())
            .spawn(move || housekeeper.run_if_due())
            .map_err(|e| Error::new(Kind::Internal, format!("cannot start housekeeping: {e}")))?;
        let workflows = crate::workflow::Engine::start(
            store.clone(),
            search.clone(),
            crate::workflow::EngineConfig::from_env(user_id.as_str(), &data_dir),
        )?;
        // File and tag triggers hear about every file a sync indexed.
        let hook_engine = workflows.clone();
        ingestor.set_change_hook(Arc::new(move |root, changes| {
            hook_engine.on_sync(root, changes);
        }));
        let brain = Brain {
            workflows,
            store,
            ingestor,
            worker,
            search,
            configured_model: config.search_model.clone(),
            data_dir,
            user_id,
            user_email: user_email.to_owned(),
            started: Instant::now(),
            max_file_bytes: config.max_file_bytes,
        };
        brain.load_active_model();
        Ok(brain)
    }

    /// The active model's name: the config file's, else the one stored by `models use`.
    pub fn active_model(&self) -> Result<Option<String>, Error> {
        if let Some(m) = &self.configured_model {
            return Ok(Some(m.clone()));
        }
        Ok(self.store.read(|c| store::meta_get(c, "search.model"))?)
    }

    /// Loads the active model on a background thread; search by words works meanwhile.
    fn load_active_model(&self) {
        let name = match self.active_model() {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the active model");
                return;
            }
        };
        let search = self.search.clone();
        let data_dir = self.data_dir.clone();
        search.set_model_state("loading");
        std::thread::Builder::new()
            .name("model-load".into())
            .spawn(move || {
                let r = models::folder(&data_dir, &name).and_then(|dir| models::load(&dir));
                match r {
                    Ok(e) => {
                        if let Err(e) = search.set_model(e) {
                            search.set_model_state(&format!("error: {e}"));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(model = %name, error = %e, "cannot load the embedding model");
                        search.set_model_state(&format!("error: {e}"));
                    }
                }
            })
            .ok();
    }

    pub fn search(&self, req: &search::Request) -> Result<search::Response, Error> {
        let mut res = self.search.query(req)?;
        // What search cannot see: notes that could not be brought in step.
        let worker = self.worker.state();
        if let Some(e) = worker.sync_error {
            res.warnings.push(format!("results may be stale: {e}"));
        }
        for m in worker.missing {
            res.warnings.push(format!(
                "watched folder {} is missing; its notes are as they were when last seen",
                m.display()
            ));
        }
        Ok(res)
    }

    /// Rebuilds the text index from the store. Returns (chunks, seconds).
    pub fn reindex(&self) -> Result<(usize, f64), Error> {
        Ok(self.search.rebuild()?)
    }

    /// Adds a model folder to the data dir; makes it active when asked or when none is.
    pub fn models_add(
        &self,
        name: &str,
        path: &Path,
        link: bool,
        activate: bool,
    ) -> Result<models::ModelInfo, Error> {
        let dest = models::add(&self.data_dir, name, path, link)?;
        let activate = activate || self.active_model()?.is_none();
        if activate {
            self.models_use(name)?;
        }
        Ok(models::ModelInfo {
            name: name.to_owned(),
            linked: link,
            active: self.active_model()?.as_deref() == Some(name),
            path: dest,
        })
    }

    /// Makes `name` the active model; chunks are (re-)embedded for it in the background.
    pub fn models_use(&self, name: &str) -> Result<(), Error> {
        let dir = models::folder(&self.data_dir, name)?;
        let embedder = models::load(&dir)?;
        self.store
            .write(|tx| store::meta_set(tx, "search.model", name))?;
        if self.configured_model.is_none() {
            self.search.set_model(embedder)?;
        }
        Ok(())
    }

    /// Deletes a model that is not the active one (a linked model loses only its link).
    pub fn models_remove(&self, name: &str) -> Result<(), Error> {
        if self.active_model()?.as_deref() == Some(name) {
            return Err(Error::new(
                Kind::InvalidParams,
                format!(
                    "model {name} is the active model; make another active first (`brain models use NAME`)"
                ),
            ));
        }
        Ok(models::remove(&self.data_dir, name)?)
    }

    pub fn models_list(&self) -> Result<Vec<models::ModelInfo>, Error> {
        Ok(models::list(
            &self.data_dir,
            self.active_model()?.as_deref(),
        )?)
    }

    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    pub fn status(&self) -> Result<Status, Error> {
        let counts = self.store.read(store::counts)?;
        Ok(Status {
            version: env!("CARGO_PKG_VERSION"),
            pid: std::process::id(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            data_dir: self.data_dir.clone(),
            store_path: self.store.path().to_owned(),
            store_bytes: self.store.size_bytes(),
            schema_version: store::migrations::latest_version(),
            user_id: self.user_id.clone(),
            user_email: self.user_email.clone(),
            counts,
            worker: self.worker.state(),
            search: self.search.status()?,
            memory: crate::memory::resident(std::process::id()),
            memory_releases: crate::memory::releases(),
            workers: crate::supervise::workers(),
        })
    }

    /// Watches every watched root and queues a reconcile of each against the disk, so what
    /// changed while the daemon was down is applied. Returns at once.
    pub fn start_watching(&self) -> Result<(), Error> {
        self.ingestor.fold_overlapping_roots()?;
        for root in self.ingestor.roots(false)? {
            if root.watched {
                self.worker.watch(&root.path);
                self.worker.enqueue(root, Scope::All);
                continue;
            }
            // A one-off ingest that a crash or a stop cut short is finished, and only it: the
            // rest of that folder was never asked for.
            let paths = self.ingestor.pending_files(&root)?;
            if !paths.is_empty() {
                self.worker.enqueue(
                    root,
                    Scope::Paths {
                        paths,
                        renames: Vec::new(),
                    },
                );
            }
        }
        Ok(())
    }

    /// Stops the watcher and the ingest worker; an interrupted sync is redone on next start.
    pub fn shutdown(&self) {
        self.workflows.shutdown();
        self.worker.stop();
        self.search.stop();
    }

    /// Adds a watched root, starts watching it and queues its first sync. Returns at once.
    pub fn watch_add(&self, path: &Path) -> Result<RootInfo, Error> {
        let path = client_path(path, "watch")?;
        let root = self.register_root(&path, true)?;
        self.worker.enqueue(root.clone(), Scope::All);
        Ok(root)
    }

    /// Adds a root; roots folded into it stop being watched on their own, and it is watched
    /// when it is a watched root (asked to be, or holding one that was).
    fn register_root(&self, path: &Path, watched: bool) -> Result<RootInfo, Error> {
        let added = self.ingestor.register_root(path, watched)?;
        for inner in &added.folded {
            self.worker.unwatch(inner);
        }
        if added.root.watched {
            self.worker.watch(&added.root.path);
        }
        Ok(added.root)
    }

    /// Stops watching a root and retires its facts; with `purge`, deletes them and their text
    /// (a root removed earlier, or only ingested once, may be purged too).
    pub fn watch_remove(
        &self,
        path: &Path,
        purge: bool,
    ) -> Result<(RootInfo, Option<ingest::purge::Purged>), Error> {
        let removed = self.worker.remove_wait(path);
        if !purge {
            return Ok((removed?, None));
        }
        match removed {
            Ok(_) | Err(ingest::IngestError::NoSuchWatch(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let (root, purged) = self.ingestor.purge_root(path)?;
        Ok((root, Some(purged)))
    }

    /// Returns the store's free pages to the file system.
    pub fn compact(&self) -> Result<store::history::Compaction, Error> {
        Ok(self.store.compact()?)
    }

    pub fn watch_list(&self) -> Result<Vec<RootInfo>, Error> {
        Ok(self.ingestor.roots(true)?)
    }

    /// Ingests a file or folder once and waits for it. A path inside a known root is synced as
    /// part of that root; any other folder becomes an unwatched root (a file, its folder).
    pub fn ingest_path(
        &self,
        path: &Path,
        progress: Option<ProgressFn>,
    ) -> Result<SyncReport, Error> {
        let abs = client_path(path, "ingest")?;
        let (root, scope) = match self.ingestor.root_for(&abs)? {
            Some(root) if root.path == abs => (root, Scope::All),
            Some(root) => (
                root,
                Scope::Paths {
                    paths: vec![abs.clone()],
                    renames: Vec::new(),
                },
            ),
            None if abs.is_dir() => (self.register_root(&abs, false)?, Scope::All),
            None => {
                let dir = abs.parent().unwrap_or(Path::new("/"));
                let root = self.register_root(dir, false)?;
                (
                    root,
                    Scope::Paths {
                        paths: vec![abs.clone()],
                        renames: Vec::new(),
                    },
                )
            }
        };
        Ok(self.worker.sync_wait(root, scope, progress)?)
    }

    /// A file a client names (a workflow document), read whole if it is a regular file of at
    /// most `cap` bytes.
    pub fn read_client_file(&self, path: &Path, cap: u64) -> Result<Vec<u8>, Error> {
        let abs = client_path(path, "read")?;
        ingest::walk::read_regular(&abs, cap).map_err(|e| {
            Error::new(
                Kind::InvalidParams,
                format!("cannot read {}: {e}", path.display()),
            )
        })
    }

    pub fn node_get(&self, r: &NodeRef) -> Result<NodeView, Error> {
        self.store.read(|c| graph::node_get(c, r))
    }

    /// [`graph::node_get_as`]: a node as of a time, or a retired one's last version.
    pub fn node_get_as(
        &self,
        r: &NodeRef,
        at: Option<&graph::Instant>,
        include_retired: bool,
    ) -> Result<NodeView, Error> {
        self.store
            .read(|c| graph::node_get_as(c, r, at, include_retired))
    }

    pub fn node_history(&self, id: &str) -> Result<graph::History, Error> {
        self.store.read(|c| graph::node_history(c, id))
    }

    pub fn graph_export(
        &self,
        at: &graph::Instant,
        cursor: &graph::ExportCursor,
        limit: usize,
    ) -> Result<graph::ExportPage, Error> {
        self.store
            .read(|c| graph::export_page(c, at, cursor, limit))
    }

    pub fn node_search_title(&self, query: &str, limit: usize) -> Result<Vec<TitleHit>, Error> {
        self.store
            .read(|c| graph::search_title_tolerant(c, query, limit))
    }

    pub fn graph_neighbors(
        &self,
        id: &str,
        direction: Direction,
        edge_types: &[String],
        depth: u32,
        limit: usize,
        at: Option<&graph::Instant>,
    ) -> Result<Subgraph, Error> {
        self.store
            .read(|c| graph::neighbors_at(c, id, direction, edge_types, depth, limit, at))
    }

    pub fn graph_backlinks(
        &self,
        id: &str,
        limit: usize,
        at: Option<&graph::Instant>,
    ) -> Result<Subgraph, Error> {
        self.store.read(|c| graph::backlinks_at(c, id, limit, at))
    }

    pub fn source_list(
        &self,
        status: Option<&str>,
        root: Option<&Path>,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<SourceView>, u64), Error> {
        let (mut rows, total) = self
            .store
            .read(|c| graph::source_list_under(c, status, root, limit, offset))?;
        // A file waiting on a sync that keeps failing (a full disk) says why: the failure
        // cannot be written to the store that has no room for it.
        if let Some(e) = self.worker.state().sync_error {
            for r in rows
                .iter_mut()
                .filter(|r| r.status == ingest::SourceStatus::Pending && r.reason.is_none())
            {
                r.reason = Some(format!("waiting to be retried: {e}"));
            }
        }
        Ok((rows, total))
    }

    pub fn identity_id(&self, email: &str) -> Result<UserId, Error> {
        if !identity::is_email(email) {
            return Err(Error::new(
                Kind::InvalidParams,
                format!("{email:?} is not an e-mail address"),
            ));
        }
        Ok(UserId::for_email(email))
    }

    pub fn user_list(&self) -> Result<Vec<UserRow>, Error> {
        Ok(self.store.read(store::list_users)?)
    }

    /// Validates a workflow document against the runners this daemon has.
    pub fn workflow_validate(&self, doc: &serde_json::Value) -> crate::workflow::Report {
        crate::workflow::validate(doc, self.workflows.runners()).0
    }

    /// The workflow engine: runs, waits and events.
    pub fn workflows(&self) -> &crate::workflow::Engine {
        &self.workflows
    }
}

/// A path a client hands in, made canonical, once it is known to be a regular file or a
/// folder and not on a pseudo file system. Checked on metadata alone: nothing is opened, so a
/// FIFO is refused at once instead of holding a thread until someone writes to it.
fn client_path(path: &Path, what: &str) -> Result<PathBuf, Error> {
    let refuse = |why: String| {
        Error::new(
            Kind::InvalidParams,
            format!("cannot {what} {}: {why}", path.display()),
        )
    };
    let abs = std::fs::canonicalize(path).map_err(|e| refuse(e.to_string()))?;
    let meta = std::fs::metadata(&abs).map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() && !meta.is_dir() {
        return Err(refuse("not a regular file or a folder".into()));
    }
    if let Some(fs) = ingest::walk::pseudo_file_system(&abs) {
        return Err(refuse(format!("{fs} is a pseudo file system")));
    }
    Ok(abs)
}
