//! Supervised worker threads: a panic in a worker is caught, counted, reported in
//! `daemon.status`, and the worker runs again after a backoff.
//!
//! Owns the process-wide registry of supervised workers. Architecture Invariant: a supervised
//! body returns only when its worker is meant to stop; a panic never ends the worker, and
//! never takes the process down. Knows nothing of what the workers do.

use std::any::Any;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The first wait before a restart; doubled after each panic that follows a short run.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait before a restart: a worker that keeps panicking costs little, and is back
/// within a minute of its cause going away.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A run at least this long was healthy: the next panic starts the backoff over.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// What `daemon.status` shows of one worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    pub name: String,
    /// Times the worker panicked and was started again.
    pub restarts: u64,
    /// The last panic's message.
    pub last_panic: Option<String>,
    /// When it happened (RFC 3339).
    pub last_panic_at: Option<String>,
}

static REGISTRY: Mutex<Vec<Arc<Mutex<WorkerStatus>>>> = Mutex::new(Vec::new());

/// Every supervised worker now running, in the order they were started.
pub fn workers() -> Vec<WorkerStatus> {
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|w| w.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .collect()
}

/// Starts `body` on a thread named `name` and runs it again whenever it panics, after a
/// backoff. The worker leaves the registry when `body` returns.
pub fn spawn<F>(name: &str, mut body: F) -> std::io::Result<JoinHandle<()>>
where
    F: FnMut() + Send + 'static,
{
    let entry = Arc::new(Mutex::new(WorkerStatus {
        name: name.to_owned(),
        restarts: 0,
        last_panic: None,
        last_panic_at: None,
    }));
    REGISTRY
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(entry.clone());
    let mine = entry.clone();
    let thread_name = name.to_owned();
    let spawned = std::thread::Builder::new()
        .name(thread_name.clone())
        .spawn(move || {
            let mut backoff = FIRST_BACKOFF;
            loop {
                let started = Instant::now();
                match std::panic::catch_unwind(AssertUnwindSafe(&mut body)) {
                    Ok(()) => break,
                    Err(panic) => {
                        let message = panic_message(panic.as_ref());
                        tracing::error!(
                            worker = %thread_name,
                            panic = %message,
                            "worker panicked; restarting"
                        );
                        {
                            let mut s = entry.lock().unwrap_or_else(|p| p.into_inner());
                            s.restarts += 1;
                            s.last_panic = Some(message);
                            s.last_panic_at = Some(crate::clock::now());
                        }
                        if started.elapsed() >= HEALTHY_RUN {
                            backoff = FIRST_BACKOFF;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            REGISTRY
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|e| !Arc::ptr_eq(e, &entry));
        });
    if spawned.is_err() {
        REGISTRY
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|e| !Arc::ptr_eq(e, &mine));
    }
    spawned
}

/// The text of a panic payload (`panic!` with a literal or a formatted message).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn a_panicking_worker_is_restarted_and_its_panics_are_reported() {
        let runs = Arc::new(AtomicU32::new(0));
        let seen = runs.clone();
        let handle = spawn("test-panics-twice", move || {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            if n < 2 {
                panic!("run {n} failed");
            }
        })
        .unwrap();
        handle.join().unwrap();
        assert_eq!(
            runs.load(Ordering::SeqCst),
            3,
            "two panics, then a run that returns"
        );
        // A worker that returned has left the registry.
        assert!(workers().iter().all(|w| w.name != "test-panics-twice"));
    }

    #[test]
    fn a_running_worker_shows_its_restarts() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let rx = Arc::new(Mutex::new(rx));
        let mut first = true;
        let handle = spawn("test-shows-restarts", move || {
            if std::mem::take(&mut first) {
                panic!("boom");
            }
            // Stays up until told to stop.
            let _ = rx.lock().unwrap().recv();
        })
        .unwrap();
        let start = Instant::now();
        let status = loop {
            let w = workers()
                .into_iter()
                .find(|w| w.name == "test-shows-restarts")
                .unwrap();
            if w.restarts == 1 {
                break w;
            }
            assert!(start.elapsed() < Duration::from_secs(10), "{w:?}");
            std::thread::yield_now();
        };
        assert_eq!(status.last_panic.as_deref(), Some("boom"));
        assert!(status.last_panic_at.is_some());
        tx.send(()).unwrap();
        handle.join().unwrap();
    }

    #[test]
    fn panic_messages_are_read_from_either_payload() {
        let p = std::panic::catch_unwind(|| panic!("literal")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "literal");
        let n = 7;
        let p = std::panic::catch_unwind(|| panic!("formatted {n}")).unwrap_err();
        assert_eq!(panic_message(p.as_ref()), "formatted 7");
    }
}
