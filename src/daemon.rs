//! The daemon's lifecycle: data dir, instance lock, store, socket, signals, shutdown.
//!
//! Owns process-level resources and nothing else; requests are the server's business and
//! everything they touch is the façade's. Architecture Invariant: one daemon per data dir,
//! enforced by an OS file lock that dies with the process, so a killed daemon never leaves a
//! lock behind; the socket it leaves is detected as stale and replaced. Everything it creates
//! is private to its user, and it serves only from a socket directory no one else can write.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tracing::{info, warn};

use crate::brain::Brain;
use crate::config::Config;
use crate::identity::migrate;
use crate::rpc::server::{self, ServerConfig, Shutdown};
use crate::store::{self, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("failed to create data dir {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("another brain daemon{} is already using {data_dir}", pid.map(|p| format!(" (pid {p})")).unwrap_or_default())]
    AlreadyRunning { data_dir: PathBuf, pid: Option<u32> },
    #[error("failed to lock {path}: {source}")]
    Lock {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("store query failed: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("identity migration failed: {0}")]
    Identity(#[from] migrate::MigrateError),
    #[error("{0}")]
    Brain(#[from] crate::error::Error),
    #[error("socket {} is in use by a running daemon (another data dir?); choose another with --socket or BRAIN_SOCKET", socket.display())]
    SocketInUse { socket: PathBuf },
    #[error("{} exists and is not a socket; refusing to replace it", socket.display())]
    NotASocket { socket: PathBuf },
    #[error("failed to listen on {}: {source}", socket.display())]
    Bind {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to start the runtime: {0}")]
    Runtime(std::io::Error),
    #[error("refusing to serve in {dir}: {problem}, so another user could replace the socket; use a directory only you can write (`chmod go-w {dir}`) or another socket (--socket, BRAIN_SOCKET)", dir = dir.display())]
    UnsafeSocketDir { dir: PathBuf, problem: String },
    #[error("failed to make {} private: {source}", path.display())]
    Permissions {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How long stuck blocking calls (a request that outlived its budget) may delay the exit once
/// the server has drained; they are abandoned after it.
const BLOCKING_EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// What the daemon creates is for its user alone: files 0600, folders 0700, whatever umask it
/// was started with. This covers what SQLite, tantivy and workflow steps create too.
const PRIVATE_UMASK: u32 = 0o077;

/// Runs the daemon until SIGINT, SIGTERM or `daemon.shutdown`.
pub fn run(config: &Config) -> Result<(), DaemonError> {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(PRIVATE_UMASK));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&config.data_dir)
        .map_err(|source| DaemonError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    make_private(&config.data_dir, 0o700)?;
    prepare_socket_dir(&config.socket)?;
    let _lock = acquire_lock(&config.lock_path(), &config.data_dir)?;
    let store_path = config.store_path();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = store_path.clone().into_os_string();
        p.push(suffix);
        make_private(Path::new(&p), 0o600)?;
    }

    let store = Arc::new(Store::open(&config.store_path())?);
    migrate_identities(&store, config)?;
    let brain = Arc::new(Brain::new(store, config)?);

    let cfg = ServerConfig {
        max_frame_bytes: config.max_frame_bytes,
        max_connections: config.max_connections,
        own_uid: rustix::process::getuid().as_raw(),
        idle_timeout: config.idle_timeout,
        request_timeout: config.request_timeout,
        max_blocking_requests: config.max_blocking_requests,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(server::blocking_threads(&cfg))
        .enable_all()
        .build()
        .map_err(DaemonError::Runtime)?;
    let result = runtime.block_on(async {
        let (listener, bound) = bind(&config.socket)?;
        let shutdown = Shutdown::default();
        tokio::spawn(forward_signals(shutdown.clone()));
        info!(
            socket = %config.socket.display(),
            data_dir = %config.data_dir.display(),
            user = %brain.user_id(),
            "daemon ready"
        );
        brain.start_watching()?;
        // Workflow runs park and event followers return as soon as shutdown starts, so the
        // server's drain does not wait on them.
        tokio::spawn({
            let (brain, shutdown) = (brain.clone(), shutdown.clone());
            async move {
                shutdown.wait().await;
                notify_service_manager("STOPPING=1");
                brain.workflows().begin_shutdown();
            }
        });
        // The socket is bound: connections made from now on are served.
        notify_service_manager("READY=1");
        server::run(listener, brain.clone(), cfg, shutdown).await;
        let b = brain.clone();
        // Joining the ingest worker blocks; it finishes its current write batch first.
        let _ = tokio::task::spawn_blocking(move || b.shutdown()).await;
        remove_socket_if_ours(&config.socket, bound);
        info!("daemon stopped");
        Ok(())
    });
    // Dropping the runtime would wait for every blocking call, including one stuck past its
    // budget; the store is closed by now, so such a call is abandoned instead.
    runtime.shutdown_timeout(BLOCKING_EXIT_TIMEOUT);
    result
}

/// Takes group and other permissions away from `path` if it exists with any, saying so: a data
/// dir made 0755 by hand, or a store written by an older version under a lax umask.
fn make_private(path: &Path, mode: u32) -> Result<(), DaemonError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(DaemonError::Permissions {
                path: path.to_owned(),
                source,
            });
        }
    };
    let current = meta.permissions().mode() & 0o777;
    if meta.file_type().is_symlink() || current & 0o077 == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(|source| {
        DaemonError::Permissions {
            path: path.to_owned(),
            source,
        }
    })?;
    warn!(path = %path.display(), from = format!("{current:o}"), to = format!("{mode:o}"), "made private: other users could read it");
    Ok(())
}

/// Why a socket in a directory with this owner and mode could be replaced by another user, if
/// it could. Sticky directories like /tmp are refused too: a name there can be taken by
/// whoever creates it first, before the daemon starts.
pub fn socket_dir_problem(dir_uid: u32, dir_mode: u32, own_uid: u32) -> Option<String> {
    if dir_uid != own_uid && dir_uid != 0 {
        return Some(format!("the directory belongs to uid {dir_uid}"));
    }
    if dir_mode & 0o022 != 0 {
        let who = match (dir_mode & 0o020 != 0, dir_mode & 0o002 != 0) {
            (true, true) => "its group and other users",
            (true, false) => "its group",
            _ => "other users",
        };
        return Some(format!(
            "the directory is writable by {who} (mode {:o})",
            dir_mode & 0o7777
        ));
    }
    None
}

/// Holds the instance lock for as long as it lives.
struct InstanceLock {
    _file: File,
}

fn acquire_lock(path: &Path, data_dir: &Path) -> Result<InstanceLock, DaemonError> {
    let lock_err = |source| DaemonError::Lock {
        path: path.to_owned(),
        source,
    };
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(lock_err)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(DaemonError::AlreadyRunning {
                data_dir: data_dir.to_owned(),
                pid: text.trim().parse().ok(),
            });
        }
        Err(TryLockError::Error(e)) => return Err(lock_err(e)),
    }
    // The pid is only for the message a second instance prints; the lock is what counts.
    file.set_len(0).map_err(lock_err)?;
    file.rewind().map_err(lock_err)?;
    writeln!(file, "{}", std::process::id()).map_err(lock_err)?;
    Ok(InstanceLock { _file: file })
}

/// Runs the identity migration when the store still holds e-mail addresses where user ids
/// belong. A store that needs nothing is stamped as migrated without a backup.
fn migrate_identities(store: &Store, config: &Config) -> Result<(), DaemonError> {
    let needed = store.read(migrate::needed)?;
    if needed {
        info!("store holds e-mail identities; migrating them to user ids");
        let report = migrate::run(&migrate::Options {
            store: store.path().to_owned(),
            users: config.users_file.clone(),
        })?;
        info!(%report, "identity migration done");
    } else if store
        .read(|c| store::meta_get(c, migrate::META_KEY))?
        .is_none()
    {
        store.write(|tx| store::meta_set(tx, migrate::META_KEY, &crate::clock::now()))?;
    }
    Ok(())
}

/// Creates the socket's directory if it is missing, and refuses one another user could write:
/// they could replace the socket and capture what clients send.
fn prepare_socket_dir(socket: &Path) -> Result<(), DaemonError> {
    let Some(dir) = socket.parent() else {
        return Ok(());
    };
    let err = |source| DaemonError::Bind {
        socket: socket.to_owned(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let meta = std::fs::metadata(dir).map_err(err)?;
    let own = rustix::process::getuid().as_raw();
    match socket_dir_problem(meta.uid(), meta.mode(), own) {
        Some(problem) => Err(DaemonError::UnsafeSocketDir {
            dir: dir.to_owned(),
            problem,
        }),
        None => Ok(()),
    }
}

/// Binds the socket, replacing a stale one left by a killed daemon. Returns the listener and
/// the socket file's inode, so shutdown removes only the file it created.
fn bind(socket: &Path) -> Result<(UnixListener, (u64, u64)), DaemonError> {
    let bind_err = |source| DaemonError::Bind {
        socket: socket.to_owned(),
        source,
    };
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        if !meta.file_type().is_socket() {
            return Err(DaemonError::NotASocket {
                socket: socket.to_owned(),
            });
        }
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(DaemonError::SocketInUse {
                socket: socket.to_owned(),
            });
        }
        warn!(socket = %socket.display(), "replacing a stale socket");
        std::fs::remove_file(socket).map_err(bind_err)?;
    }
    let std_listener = std::os::unix::net::UnixListener::bind(socket).map_err(bind_err)?;
    // Between bind and chmod the socket has the umask's mode; a peer of another user that
    // connects in that window is still refused by the SO_PEERCRED check.
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    std_listener.set_nonblocking(true).map_err(bind_err)?;
    let meta = std::fs::metadata(socket).map_err(bind_err)?;
    let listener = UnixListener::from_std(std_listener).map_err(bind_err)?;
    Ok((listener, (meta.dev(), meta.ino())))
}

fn remove_socket_if_ours(socket: &Path, bound: (u64, u64)) {
    match std::fs::symlink_metadata(socket) {
        Ok(m) if (m.dev(), m.ino()) == bound => {
            if let Err(e) = std::fs::remove_file(socket) {
                warn!(error = %e, socket = %socket.display(), "failed to remove socket");
            }
        }
        _ => {}
    }
}

/// Tells systemd (a `Type=notify` unit) how the daemon stands, when it runs under one: one
/// datagram to `$NOTIFY_SOCKET`, a path or `@`abstract name (sd_notify(3)). Written over std's
/// Unix datagram socket rather than with a crate: the protocol is one send, and a failure is
/// only logged, as a daemon run by hand has no service manager to tell.
fn notify_service_manager(state: &str) {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = target.as_bytes();
        match bytes.strip_prefix(b"@") {
            #[cfg(target_os = "linux")]
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(state.as_bytes(), &addr)
            }
            _ => sock.send_to(state.as_bytes(), Path::new(&target)),
        }
    });
    if let Err(e) = sent {
        warn!(error = %e, state, "cannot notify the service manager");
    }
}

async fn forward_signals(shutdown: Shutdown) {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut int, mut term) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(i), Ok(t)) => (i, t),
        (Err(e), _) | (_, Err(e)) => {
            warn!(error = %e, "cannot install signal handlers; use `brain stop`");
            return;
        }
    };
    tokio::select! {
        _ = int.recv() => info!("SIGINT received"),
        _ = term.recv() => info!("SIGTERM received"),
    }
    shutdown.trigger();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_dirs_only_we_can_write() {
        let check = |uid, mode| socket_dir_problem(uid, mode, 1000);
        assert_eq!(check(1000, 0o40700), None);
        assert_eq!(check(1000, 0o40755), None);
        assert_eq!(check(0, 0o40755), None);
        assert!(
            check(1000, 0o40777)
                .unwrap()
                .contains("its group and other users")
        );
        assert!(
            check(1000, 0o40770)
                .unwrap()
                .contains("writable by its group")
        );
        assert!(check(1000, 0o40702).unwrap().contains("other users"));
        assert!(check(0, 0o41777).unwrap().contains("1777"));
        assert!(check(1001, 0o40700).unwrap().contains("uid 1001"));
    }
}
