//! Giving memory back to the system once a burst of work is over.
//!
//! A large ingest fills SQLite's page caches and the allocator's free lists; the daemon then
//! sits idle for hours holding pages it no longer uses. glibc returns freed memory only from
//! the top of its heaps, and a burst leaves the top pinned by a few live blocks, so the rest
//! stays resident until the allocator is asked to trim. Asking needs a call into the C
//! library, which this crate does not make (it forbids `unsafe`): the binary registers the
//! call here at start, and [`release`] runs it.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static HOOK: OnceLock<fn()> = OnceLock::new();
static RELEASES: AtomicU64 = AtomicU64::new(0);

/// Registers what [`release`] runs, once per process; a later registration is ignored.
pub fn set_release_hook(hook: fn()) {
    let _ = HOOK.set(hook);
}

/// Hands freed memory back to the system, when the process registered a way to.
pub fn release() {
    if let Some(hook) = HOOK.get() {
        hook();
    }
    RELEASES.fetch_add(1, Ordering::Relaxed);
}

/// How many times this process gave memory back after a burst of work.
pub fn releases() -> u64 {
    RELEASES.load(Ordering::Relaxed)
}

/// A process's resident memory now and at its peak, in bytes (`VmRSS`, `VmHWM`); `None`
/// where `/proc/PID/status` does not exist.
pub fn resident(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn resident_memory_is_read_from_proc_and_never_exceeds_its_peak() {
        let (now, peak) = resident(std::process::id()).expect("/proc/PID/status on Linux");
        assert!(now > 0);
        assert!(now <= peak, "VmRSS {now} above VmHWM {peak}");
    }
}
