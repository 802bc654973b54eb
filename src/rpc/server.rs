//! The socket server: accepts connections, frames lines, dispatches to the façade.
//!
//! Each connection is served by its own task; requests on one connection are answered in order.
//! The façade blocks on SQLite, so every call hops to a blocking thread. The server takes its
//! shutdown signal as a parameter so tests and the daemon drive it the same way.
//! Nothing a client does can starve the others: connections over the cap are refused at once,
//! idle ones are closed, each request has a time budget, and the blocking threads requests may
//! hold are capped per connection and overall, with a reserve kept for `daemon.status`.
//! Architecture Invariant: a bad frame, a bad request or a panicking method gets an error
//! answer; it never takes down the connection's peers or the daemon.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};

use super::protocol::methods::DaemonShutdown;
use super::protocol::{self, Method, Request};
use crate::brain::Brain;
use crate::error::{Error, Kind};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    /// The uid peers must have: the daemon's own.
    pub own_uid: u32,
    /// A connection that sends no complete request for this long is closed; so is one that
    /// reads none of our answer for this long.
    pub idle_timeout: Duration,
    /// How long a request may take, counted from its start or its last progress notification.
    pub request_timeout: Duration,
    /// Requests that may hold a blocking thread at once, over all connections.
    pub max_blocking_requests: usize,
}

/// A connection serves its requests in order, so it has one call running; a call that ran out
/// of time keeps running in the background (a blocking thread cannot be interrupted), and a
/// client retrying would stack abandoned calls. One more is allowed, so a retry after a
/// timeout is answered; past that the connection is answered `server_busy` until one ends.
pub const MAX_CALLS_PER_CONNECTION: usize = 2;

/// Blocking threads kept for `daemon.status` alone, so it answers when every other request is
/// stuck: it is what a user runs to see what is wrong.
pub const STATUS_RESERVE: usize = 2;

/// `workflow.events` with `follow` holds a blocking thread for as long as its run moves, with
/// no time budget; followers get their own threads so that they never starve requests, and a
/// cap so that they cannot exhaust the pool either.
pub const MAX_FOLLOWERS: usize = 8;

/// `ingest.path` and `search.reindex` wait on one worker (the ingest thread, the index writer),
/// so more of them in flight only park threads that reads could use; a sync stuck on a file
/// would otherwise collect every thread for requests as callers retry.
pub const MAX_SERIALIZED_CALLS: usize = 2;

/// Blocking threads the runtime needs for the server: every class of call above, plus one
/// for the daemon's own shutdown work.
pub fn blocking_threads(cfg: &ServerConfig) -> usize {
    cfg.max_blocking_requests + STATUS_RESERVE + MAX_FOLLOWERS + 1
}

/// The permits a blocking call can be given; one set per server.
struct Pools {
    requests: Arc<Semaphore>,
    status: Arc<Semaphore>,
    followers: Arc<Semaphore>,
    serialized: Arc<Semaphore>,
}

/// A shutdown latch: anyone holding it can trigger it; everyone can wait for it.
#[derive(Clone)]
pub struct Shutdown {
    tx: Arc<watch::Sender<bool>>,
    rx: watch::Receiver<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        let (tx, rx) = watch::channel(false);
        Shutdown {
            tx: Arc::new(tx),
            rx,
        }
    }
}

impl Shutdown {
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.rx.borrow()
    }

    pub async fn wait(&self) {
        let mut rx = self.rx.clone();
        // An error means every sender is gone, which can only happen once we are shutting down.
        let _ = rx.wait_for(|v| *v).await;
    }
}

/// Whether a peer may talk to us. Only the daemon's own user may; root is not special-cased,
/// because a root client can read the store directly anyway and needs no socket to do harm.
pub fn peer_allowed(peer_uid: u32, own_uid: u32) -> bool {
    peer_uid == own_uid
}

/// How long in-flight requests get to finish once shutdown starts.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `listener` until `shutdown` fires, then waits for open connections to finish their
/// current request.
///
/// Every connection is accepted at once: one over `max_connections` is answered with a
/// `server_busy` error line and closed, so a client never waits on a daemon that will not
/// serve it.
pub async fn run(listener: UnixListener, brain: Arc<Brain>, cfg: ServerConfig, shutdown: Shutdown) {
    let limit = Arc::new(Semaphore::new(cfg.max_connections));
    let pools = Arc::new(Pools {
        requests: Arc::new(Semaphore::new(cfg.max_blocking_requests)),
        status: Arc::new(Semaphore::new(STATUS_RESERVE)),
        followers: Arc::new(Semaphore::new(MAX_FOLLOWERS)),
        serialized: Arc::new(Semaphore::new(MAX_SERIALIZED_CALLS)),
    });
    let cfg = Arc::new(cfg);
    let next_conn = AtomicU64::new(1);
    let mut tasks = tokio::task::JoinSet::new();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let id = next_conn.fetch_add(1, Ordering::Relaxed);
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            refuse_busy(stream, cfg.max_connections);
            continue;
        };
        let (brain, cfg, pools, shutdown) =
            (brain.clone(), cfg.clone(), pools.clone(), shutdown.clone());
        tasks.spawn(
            async move {
                serve_connection(stream, brain, &cfg, &pools, shutdown).await;
                drop(permit);
            }
            .instrument(info_span!("conn", id)),
        );
        // Reap finished connections so the set does not grow without bound.
        while tasks.try_join_next().is_some() {}
    }
    info!(open = tasks.len(), "server stopping");
    if tokio::time::timeout(DRAIN_TIMEOUT, async {
        while tasks.join_next().await.is_some() {}
    })
    .await
    .is_err()
    {
        warn!("connections did not finish in time; closing them");
        tasks.abort_all();
    }
}

/// Answers a connection over the cap with one error line, without waiting: the line is far
/// smaller than a fresh socket's buffer, and a peer that cannot take it loses only the message.
/// Written by the socket's own (non-blocking) `write`, not tokio's `try_write`: the runtime has
/// not yet seen a just-accepted socket become writable, so `try_write` could give up without
/// trying, and a busy daemon then closed the connection in silence.
fn refuse_busy(stream: UnixStream, max: usize) {
    use std::io::Write;
    warn!(max_connections = max, "refusing a connection over the cap");
    let e = Error::new(
        Kind::ServerBusy,
        format!("server busy: {max} connections open (max_connections)"),
    );
    if let (Ok(mut line), Ok(mut socket)) = (
        serde_json::to_vec(&protocol::error_response(Value::Null, &e)),
        stream.into_std(),
    ) {
        line.push(b'\n');
        let _ = socket.write(&line);
    }
}

enum Frame {
    Line,
    TooLarge,
    Eof,
}

/// Reads one `\n`-terminated frame into `buf` (without the newline). A frame over `max` bytes
/// is skipped up to its newline and reported as `TooLarge`, so the stream stays in sync and
/// memory stays bounded.
async fn read_frame<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    max: usize,
) -> std::io::Result<Frame> {
    buf.clear();
    let mut too_large = false;
    loop {
        let available = r.fill_buf().await?;
        if available.is_empty() {
            return Ok(match (too_large, buf.is_empty()) {
                (true, _) => Frame::TooLarge,
                (false, true) => Frame::Eof,
                (false, false) => Frame::Line,
            });
        }
        let (chunk, consumed, done) = match available.iter().position(|&b| b == b'\n') {
            Some(i) => (&available[..i], i + 1, true),
            None => (available, available.len(), false),
        };
        if !too_large {
            buf.extend_from_slice(chunk);
            if buf.len() > max {
                too_large = true;
                buf.clear();
                buf.shrink_to(64 * 1024);
            }
        }
        r.consume(consumed);
        if done {
            return Ok(if too_large {
                Frame::TooLarge
            } else {
                Frame::Line
            });
        }
    }
}

async fn serve_connection(
    stream: UnixStream,
    brain: Arc<Brain>,
    cfg: &ServerConfig,
    pools: &Pools,
    shutdown: Shutdown,
) {
    let peer_uid = match stream.peer_cred() {
        Ok(c) => c.uid(),
        Err(e) => {
            warn!(error = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    let (rd, wr) = stream.into_split();
    let mut wr = Writer {
        inner: wr,
        timeout: cfg.idle_timeout,
    };
    if !peer_allowed(peer_uid, cfg.own_uid) {
        warn!(peer_uid, "refusing a peer of another user");
        let e = Error::new(
            Kind::PermissionDenied,
            "this daemon serves only its own user",
        );
        let _ = wr
            .write_line(&protocol::error_response(Value::Null, &e))
            .await;
        return;
    }
    debug!(peer_uid, "connected");
    let calls = Arc::new(Semaphore::new(MAX_CALLS_PER_CONNECTION));
    let mut rd = BufReader::new(rd);
    let mut buf = Vec::new();
    loop {
        // The idle timeout covers the whole frame, so a peer trickling one byte at a time
        // is closed like a silent one.
        let frame = tokio::select! {
            f = tokio::time::timeout(
                cfg.idle_timeout,
                read_frame(&mut rd, &mut buf, cfg.max_frame_bytes),
            ) => f,
            _ = shutdown.wait() => break,
        };
        let answer = match frame {
            Err(_) => {
                debug!("idle; closing");
                let e = Error::new(
                    Kind::Timeout,
                    format!(
                        "closing a connection idle for {} s (idle_timeout_secs)",
                        cfg.idle_timeout.as_secs()
                    ),
                );
                let _ = wr
                    .write_line(&protocol::error_response(Value::Null, &e))
                    .await;
                break;
            }
            Ok(Ok(Frame::Eof)) => break,
            Ok(Err(e)) => {
                debug!(error = %e, "read failed");
                break;
            }
            Ok(Ok(Frame::TooLarge)) => Some(protocol::error_response(
                Value::Null,
                &Error::new(
                    Kind::FrameTooLarge,
                    format!("request larger than {} bytes", cfg.max_frame_bytes),
                ),
            )),
            Ok(Ok(Frame::Line)) if buf.iter().all(u8::is_ascii_whitespace) => None,
            Ok(Ok(Frame::Line)) => match protocol::parse_request(&buf) {
                Err((id, e)) => Some(protocol::error_response(id, &e)),
                Ok(req) => {
                    let call = Call {
                        brain: &brain,
                        cfg,
                        pools,
                        calls: &calls,
                        shutdown: &shutdown,
                    };
                    handle(req, call, &mut wr).await
                }
            },
        };
        if let Some(answer) = answer
            && let Err(e) = wr.write_line(&answer).await
        {
            debug!(error = %e, "write failed");
            break;
        }
    }
    debug!("disconnected");
}

/// The write half of a connection. Every write has the idle timeout, so a peer that stops
/// reading cannot hold the connection's task (and a follower's thread) forever.
struct Writer<W> {
    inner: W,
    timeout: Duration,
}

impl<W: tokio::io::AsyncWrite + Unpin> Writer<W> {
    async fn write_line(&mut self, v: &Value) -> std::io::Result<()> {
        match tokio::time::timeout(self.timeout, write_line(&mut self.inner, v)).await {
            Ok(r) => r,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer stopped reading",
            )),
        }
    }
}

/// A sink for notifications a method sends before its answer (progress, for instance).
pub type Notifier = tokio::sync::mpsc::UnboundedSender<Value>;

/// What a request needs from its connection and its server.
struct Call<'a> {
    brain: &'a Arc<Brain>,
    cfg: &'a ServerConfig,
    pools: &'a Pools,
    calls: &'a Arc<Semaphore>,
    shutdown: &'a Shutdown,
}

/// How a request is run: which threads it may use, and whether it has a time budget.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Class {
    /// `daemon.status`: its own reserve of threads, the normal budget.
    Status,
    /// `workflow.events` with `follow`: its own threads, no budget (it answers when the run
    /// stops moving or the daemon stops).
    Follow,
    /// `search.reindex`, `store.compact`, `watch.remove` with `purge`: work that grows with
    /// the store and sends no progress. No budget (a purge of a 14k-file folder takes half a
    /// minute), but only [`MAX_SERIALIZED_CALLS`] of them, with `ingest.path`, run at once.
    Maintenance,
    /// Everything else.
    Request,
}

fn classify(method: &str, params: &Value) -> Class {
    use protocol::methods as m;
    let flag = |name: &str| params.get(name) == Some(&Value::Bool(true));
    match method {
        m::DaemonStatus::NAME => Class::Status,
        m::WorkflowEvents::NAME if flag("follow") => Class::Follow,
        m::SearchReindex::NAME | m::StoreCompact::NAME | m::StoreBackup::NAME => Class::Maintenance,
        m::WatchRemove::NAME if flag("purge") => Class::Maintenance,
        _ => Class::Request,
    }
}

async fn handle<W: tokio::io::AsyncWrite + Unpin>(
    req: Request,
    call: Call<'_>,
    wr: &mut Writer<W>,
) -> Option<Value> {
    let Request { id, method, params } = req;
    let span =
        info_span!("rpc", method = %method, id = %id.clone().unwrap_or(serde_json::Value::Null));
    let result = async {
        if call.shutdown.is_triggered() && method != protocol::methods::DaemonStatus::NAME {
            return Err(Error::new(Kind::ShuttingDown, "daemon is shutting down"));
        }
        if method == DaemonShutdown::NAME {
            return serve::<DaemonShutdown>(params, |_| {
                info!("shutdown requested over the socket");
                call.shutdown.trigger();
                Ok(protocol::ShutdownResult { stopping: true })
            });
        }
        let class = classify(&method, &params);
        let budget =
            matches!(class, Class::Status | Class::Request).then_some(call.cfg.request_timeout);
        let mut deadline = budget.map(|b| Instant::now() + b);
        let timed_out = || {
            Error::new(
                Kind::Timeout,
                format!(
                    "{method} did not finish within {} s (request_timeout_secs); \
                     work it started may still complete in the background",
                    call.cfg.request_timeout.as_secs()
                ),
            )
        };
        // Taken before the call and released only when its thread returns, so calls that ran
        // out of time still count against the limits until they really end.
        let Ok(own) = call.calls.clone().try_acquire_owned() else {
            return Err(Error::new(
                Kind::ServerBusy,
                format!(
                    "server busy: {MAX_CALLS_PER_CONNECTION} calls of this connection are still \
                     running (earlier ones ran out of time); retry when they end"
                ),
            ));
        };
        let pool = match class {
            Class::Status => &call.pools.status,
            Class::Follow => &call.pools.followers,
            Class::Request | Class::Maintenance => &call.pools.requests,
        };
        // Taken before a thread, so calls queued on the worker do not hold threads meanwhile.
        let serialized = match (class, method.as_str()) {
            (Class::Maintenance, _) | (_, protocol::methods::IngestPath::NAME) => Some(tokio::select! {
                p = call.pools.serialized.clone().acquire_owned() => p.map_err(|_| timed_out())?,
                _ = until(deadline) => {
                    return Err(Error::new(
                        Kind::Timeout,
                        format!(
                            "{method} was not started: {MAX_SERIALIZED_CALLS} ingests or \
                             reindexes stayed queued ahead of it for {} s",
                            call.cfg.request_timeout.as_secs()
                        ),
                    ));
                }
            }),
            _ => None,
        };
        let shared = match class {
            Class::Follow => pool.clone().try_acquire_owned().map_err(|_| {
                Error::new(
                    Kind::ServerBusy,
                    format!("server busy: {MAX_FOLLOWERS} workflow followers open"),
                )
            })?,
            // Waits in line (the semaphore is fair) for at most the request's budget.
            _ => tokio::select! {
                p = pool.clone().acquire_owned() => p.map_err(|_| timed_out())?,
                _ = until(deadline) => {
                    warn!("no thread free within the budget");
                    return Err(Error::new(
                        Kind::Timeout,
                        format!(
                            "{method} was not started: every thread for requests stayed busy \
                             for {} s ({} at most, max_blocking_requests)",
                            call.cfg.request_timeout.as_secs(),
                            call.cfg.max_blocking_requests
                        ),
                    ));
                }
            },
        };
        let brain = call.brain.clone();
        let method_name = method.clone();
        let (notes_tx, mut notes_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut task = tokio::task::spawn_blocking(move || {
            let _permits = (own, serialized, shared);
            dispatch(&brain, &method_name, params, &notes_tx)
        });
        // A client that stopped reading only loses its notes; after one write failed (or waited
        // out the idle timeout) the rest are dropped rather than each waiting again.
        let mut peer_reads = true;
        let joined = loop {
            tokio::select! {
                r = &mut task => break r,
                Some(n) = notes_rx.recv() => {
                    // A request that reports progress is alive: its budget starts again.
                    deadline = budget.map(|b| Instant::now() + b);
                    if peer_reads {
                        peer_reads = wr.write_line(&n).await.is_ok();
                    }
                }
                _ = until(deadline) => {
                    warn!("request ran out of time; its work goes on in the background");
                    return Err(timed_out());
                }
            }
        };
        while let Ok(n) = notes_rx.try_recv() {
            if peer_reads {
                peer_reads = wr.write_line(&n).await.is_ok();
            }
        }
        match joined {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "method panicked");
                Err(Error::new(
                    Kind::Internal,
                    "internal error while handling the request",
                ))
            }
        }
    }
    .instrument(span)
    .await;
    let id = id?; // a notification gets no answer, not even an error
    Some(match result {
        Ok(v) => protocol::ok_response(id, v),
        Err(e) => protocol::error_response(id, &e),
    })
}

/// Sleeps until `deadline`, or forever without one.
async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Decodes `params` as `M`'s, runs `f`, encodes its result: the one place a method's types
/// meet the wire.
pub(super) fn serve<M: Method>(
    params: Value,
    f: impl FnOnce(M::Params) -> Result<M::Result, Error>,
) -> Result<Value, Error> {
    let p = protocol::params::<M::Params>(M::NAME, params)?;
    to_value(f(p)?)
}

/// Maps a method name to a façade call. Runs on a blocking thread.
fn dispatch(brain: &Brain, method: &str, params: Value, notes: &Notifier) -> Result<Value, Error> {
    use crate::graph::NodeRef;
    use protocol::methods as m;
    use protocol::write::{NoteWriteResult, RetireResult, WriteResult};
    use protocol::{
        IdentityIdResult, NodeWire, ProgressWire, RootWire, SourceListResult, StatusWire,
        SubgraphWire, SyncReportWire, TitleSearchResult, UserListResult, WatchListResult,
    };
    match method {
        m::DaemonStatus::NAME => {
            serve::<m::DaemonStatus>(params, |_| Ok(StatusWire::from(brain.status()?)))
        }
        m::Discover::NAME => serve::<m::Discover>(params, |_| Ok(m::discover())),
        m::IdentityIdOf::NAME => serve::<m::IdentityIdOf>(params, |p| {
            Ok(IdentityIdResult {
                id: brain.identity_id(&p.email)?.to_string(),
            })
        }),
        m::UserList::NAME => serve::<m::UserList>(params, |_| {
            let users = brain.user_list()?.into_iter().map(Into::into).collect();
            Ok(UserListResult { users })
        }),
        m::WatchAdd::NAME => serve::<m::WatchAdd>(params, |p| {
            Ok(RootWire::from(brain.watch_add(&absolute(&p.path)?)?))
        }),
        m::WatchRemove::NAME => serve::<m::WatchRemove>(params, |p| {
            let (root, purged) = brain.watch_remove(&absolute(&p.path)?, p.purge)?;
            Ok(protocol::WatchRemoveResult {
                root: RootWire::from(root),
                purged: purged.map(Into::into),
            })
        }),
        m::WatchList::NAME => serve::<m::WatchList>(params, |_| {
            let roots = brain.watch_list()?.into_iter().map(Into::into).collect();
            Ok(WatchListResult { roots })
        }),
        m::IngestPath::NAME => serve::<m::IngestPath>(params, |p| {
            let notes = notes.clone();
            let mut last = std::time::Instant::now();
            let progress = Box::new(move |pr: &crate::ingest::Progress<'_>| {
                // At most ten notes a second, and always the last one.
                if pr.done == pr.total || last.elapsed() >= std::time::Duration::from_millis(100) {
                    last = std::time::Instant::now();
                    let params = ProgressWire {
                        done: pr.done,
                        total: pr.total,
                        bytes: pr.bytes,
                        path: pr.path.to_owned(),
                    };
                    let _ = notes.send(protocol::notification(protocol::INGEST_PROGRESS, &params));
                }
            });
            let report = brain.ingest_path(&absolute(&p.path)?, Some(progress))?;
            Ok(SyncReportWire::from(report))
        }),
        m::NodeGet::NAME => serve::<m::NodeGet>(params, |p| {
            let r = match (p.id, p.path, p.title) {
                (Some(id), None, None) => NodeRef::Id(id),
                (None, Some(path), None) => NodeRef::Path(absolute(&path)?),
                (None, None, Some(t)) => NodeRef::Title(t),
                _ => {
                    return Err(Error::new(
                        Kind::InvalidParams,
                        "node.get takes exactly one of id, path, title",
                    ));
                }
            };
            let at = instant(p.as_of.as_deref())?;
            Ok(NodeWire::from(brain.node_get_as(
                &r,
                at.as_ref(),
                p.include_retired,
            )?))
        }),
        m::NodeHistory::NAME => serve::<m::NodeHistory>(params, |p| {
            Ok(protocol::history::NodeHistoryResult::from(
                brain.node_history(&p.id)?,
            ))
        }),
        m::GraphExport::NAME => serve::<m::GraphExport>(params, |p| {
            let (at, cursor) = match (&p.cursor, &p.as_of) {
                (Some(token), _) => crate::graph::ExportCursor::parse(token)?,
                (None, Some(t)) => (
                    crate::graph::Instant::parse(t)?,
                    crate::graph::ExportCursor::Start,
                ),
                (None, None) => (
                    crate::graph::Instant::now(),
                    crate::graph::ExportCursor::Start,
                ),
            };
            let limit = p.limit.unwrap_or(crate::graph::MAX_EXPORT_PAGE);
            let page = brain.graph_export(&at, &cursor, limit)?;
            Ok(protocol::history::ExportPageWire::new(&at, page))
        }),
        m::NodeSearchTitle::NAME => serve::<m::NodeSearchTitle>(params, |p| {
            let hits = brain
                .node_search_title(&p.query, p.limit.unwrap_or(20).min(200))?
                .into_iter()
                .map(Into::into)
                .collect();
            Ok(TitleSearchResult { hits })
        }),
        m::GraphNeighbors::NAME => serve::<m::GraphNeighbors>(params, |p| {
            let g = brain.graph_neighbors(
                &p.id,
                p.direction.into(),
                &p.edge_types,
                p.depth.unwrap_or(1),
                p.limit.unwrap_or(100).min(1000),
                instant(p.as_of.as_deref())?.as_ref(),
            )?;
            Ok(SubgraphWire::from(g))
        }),
        m::GraphBacklinks::NAME => serve::<m::GraphBacklinks>(params, |p| {
            let at = instant(p.as_of.as_deref())?;
            let g = brain.graph_backlinks(&p.id, p.limit.unwrap_or(100).min(1000), at.as_ref())?;
            Ok(SubgraphWire::from(g))
        }),
        m::SourceList::NAME => serve::<m::SourceList>(params, |p| {
            let root = p.root.as_deref().map(absolute).transpose()?;
            let (sources, total) = brain.source_list(
                p.status.as_deref(),
                root.as_deref(),
                p.limit.unwrap_or(1000).min(100_000),
                p.offset.unwrap_or(0),
            )?;
            Ok(SourceListResult {
                sources: sources.into_iter().map(Into::into).collect(),
                total,
            })
        }),
        m::SearchQuery::NAME => serve::<m::SearchQuery>(params, |p| {
            let req = p.into_request()?;
            Ok(protocol::SearchResultWire::from(brain.search(&req)?))
        }),
        m::StoreCompact::NAME => serve::<m::StoreCompact>(params, |_| {
            Ok(protocol::CompactResult::from(brain.compact()?))
        }),
        m::StoreBackup::NAME => serve::<m::StoreBackup>(params, |p| {
            let path = absolute(&p.path)?;
            let bytes = brain.backup(&path)?;
            Ok(protocol::write::BackupResult {
                path: path.display().to_string(),
                bytes,
            })
        }),
        m::SearchReindex::NAME => serve::<m::SearchReindex>(params, |_| {
            let (chunks, secs) = brain.reindex()?;
            Ok(protocol::ReindexResult { chunks, secs })
        }),
        m::ModelsAdd::NAME => serve::<m::ModelsAdd>(params, |p| {
            let m = brain.models_add(&p.name, &absolute(&p.path)?, p.link, p.activate)?;
            Ok(protocol::ModelWire::from(m))
        }),
        m::ModelsUse::NAME => serve::<m::ModelsUse>(params, |p| {
            brain.models_use(&p.name)?;
            Ok(protocol::ModelUseResult { active: p.name })
        }),
        m::ModelsRemove::NAME => serve::<m::ModelsRemove>(params, |p| {
            brain.models_remove(&p.name)?;
            Ok(protocol::ModelRemoveResult { removed: p.name })
        }),
        m::ModelsList::NAME => serve::<m::ModelsList>(params, |_| {
            let models = brain.models_list()?.into_iter().map(Into::into).collect();
            Ok(protocol::ModelListResult { models })
        }),
        m::NodeUpsert::NAME => serve::<m::NodeUpsert>(params, |p| {
            let client = p.client.clone();
            let (id, created) = brain.graph_write(&p.into(), client.as_deref())?;
            Ok(WriteResult { id, created })
        }),
        m::EdgeLink::NAME => serve::<m::EdgeLink>(params, |p| {
            let client = p.client.clone();
            let (id, created) = brain.graph_write(&p.into(), client.as_deref())?;
            Ok(WriteResult { id, created })
        }),
        m::NodeRetire::NAME => serve::<m::NodeRetire>(params, |p| {
            let r = brain.retire(&p.id, true, p.client.as_deref())?;
            Ok(RetireResult::new(p.id, r))
        }),
        m::EdgeRetire::NAME => serve::<m::EdgeRetire>(params, |p| {
            let r = brain.retire(&p.id, false, p.client.as_deref())?;
            Ok(RetireResult::new(p.id, r))
        }),
        m::NoteWrite::NAME => serve::<m::NoteWrite>(params, |p| {
            let w = brain.note_write(
                std::path::Path::new(&p.path),
                &p.content,
                p.mode.into(),
                p.client.as_deref(),
            )?;
            Ok(NoteWriteResult::from(w))
        }),
        m::GraphRecent::NAME => serve::<m::GraphRecent>(params, |p| {
            let (changes, more) = brain.recent(&p.into())?;
            Ok(protocol::recent::RecentResult::new(changes, more))
        }),
        m if m.starts_with("workflow.") => super::workflow::dispatch(brain, m, params, notes),
        _ => Err(Error::new(
            Kind::MethodNotFound,
            format!("unknown method {method:?}"),
        )),
    }
}

fn absolute(p: &str) -> Result<std::path::PathBuf, Error> {
    let path = std::path::Path::new(p);
    if !path.is_absolute() {
        return Err(Error::new(
            Kind::InvalidParams,
            format!("path must be absolute: {p:?}"),
        ));
    }
    Ok(path.to_owned())
}

/// An `as_of` param: RFC 3339 UTC, not in the future (`invalid_params` otherwise).
fn instant(as_of: Option<&str>) -> Result<Option<crate::graph::Instant>, Error> {
    as_of.map(crate::graph::Instant::parse).transpose()
}

fn to_value<T: serde::Serialize>(v: T) -> Result<Value, Error> {
    serde_json::to_value(v)
        .map_err(|e| Error::new(Kind::Internal, format!("cannot encode result: {e}")))
}

async fn write_line<W: tokio::io::AsyncWrite + Unpin>(w: &mut W, v: &Value) -> std::io::Result<()> {
    let mut bytes = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    bytes.push(b'\n');
    w.write_all(&bytes).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_own_uid_is_allowed() {
        assert!(peer_allowed(1000, 1000));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(0, 1000));
        assert!(!peer_allowed(1000, 0));
    }

    #[test]
    fn requests_are_classed_by_method_and_follow() {
        let check = |method: &str, params: Value, want: Class| {
            assert_eq!(classify(method, &params), want, "{method} {params}");
        };
        check("daemon.status", Value::Null, Class::Status);
        check(
            "workflow.events",
            serde_json::json!({"follow": true}),
            Class::Follow,
        );
        check(
            "workflow.events",
            serde_json::json!({"follow": false}),
            Class::Request,
        );
        check(
            "workflow.events",
            serde_json::json!({"follow": "yes"}),
            Class::Request,
        );
        check("workflow.events", serde_json::json!({}), Class::Request);
        check("search.reindex", serde_json::json!({}), Class::Maintenance);
        check("store.compact", serde_json::json!({}), Class::Maintenance);
        check(
            "watch.remove",
            serde_json::json!({"path": "/v", "purge": true}),
            Class::Maintenance,
        );
        check(
            "watch.remove",
            serde_json::json!({"path": "/v"}),
            Class::Request,
        );
        check(
            "ingest.path",
            serde_json::json!({"follow": true}),
            Class::Request,
        );
        check("search.query", Value::Null, Class::Request);
    }

    async fn frames(input: &[u8], max: usize) -> Vec<String> {
        let mut r = BufReader::with_capacity(4, input);
        let mut buf = Vec::new();
        let mut out = Vec::new();
        loop {
            match read_frame(&mut r, &mut buf, max).await.unwrap() {
                Frame::Eof => break,
                Frame::TooLarge => out.push("<too large>".to_owned()),
                Frame::Line => out.push(String::from_utf8_lossy(&buf).into_owned()),
            }
        }
        out
    }

    #[tokio::test]
    async fn framing() {
        assert_eq!(frames(b"a\nbb\n", 10).await, ["a", "bb"]);
        assert_eq!(frames(b"a\nlast", 10).await, ["a", "last"]);
        assert_eq!(
            frames(b"0123456789ABC\nok\n", 10).await,
            ["<too large>", "ok"]
        );
        assert_eq!(frames(b"0123456789ABC", 10).await, ["<too large>"]);
        assert_eq!(frames(b"", 10).await, Vec::<String>::new());
    }
}

#[cfg(test)]
#[path = "framing_props.rs"]
mod framing_props;
