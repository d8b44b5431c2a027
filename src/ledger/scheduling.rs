//! The ledger writer thread's OS scheduling (see [`WRITER_NICE`]).

use std::time::Duration;

/// The writer runs below the proxy threads' CPU priority, so a commit
/// never takes a core a request is waiting for. It starts as `SCHED_IDLE`
/// (it runs only on a core nothing else wants): at nice 10, where it ran
/// before, each 10 ms commit still delayed the call in flight — at one
/// connection the slow 2% of LLM calls came 10.5 ms apart, and the ledger
/// thread switched to `SCHED_IDLE` by hand (`chrt -i`) brought p99 from
/// 0.95–1.12 ms to 0.47–0.70 ms (benches/RESULTS.md). On a core that is
/// never idle an idle-class thread gets almost no time, so the writer
/// watches its own lag ([`PriorityGuard`]) and moves to nice 10 (weight 110
/// against 1024: ~10% of a contended core, far more than the ~2.5% it
/// needs at full load) while rows wait longer than [`MAX_IDLE_LAG`].
const WRITER_NICE: libc::c_int = 10;
/// The longest a row may wait for its commit, past the batch delay, before
/// the writer leaves the idle class (bounds what a crash can lose).
const MAX_IDLE_LAG: Duration = Duration::from_millis(50);
/// Commits in a row within [`MAX_IDLE_LAG`] before the writer goes back to
/// the idle class (half a second at one commit per 10 ms). Should the idle
/// class still not keep up, the next late commit moves it back: one
/// system call each way, and rows never wait much beyond the limit.
const ON_TIME_COMMITS_TO_IDLE: u32 = 50;
/// The writer thread's scheduling class (see [`WRITER_NICE`]): idle while
/// it keeps up, nice 10 while rows wait longer than [`MAX_IDLE_LAG`].
/// Best effort: a refused change leaves the thread where it was, which is
/// only slower for the proxy or the ledger, never wrong.
pub(super) struct PriorityGuard {
    idle: bool,
    on_time: u32,
}

impl PriorityGuard {
    /// Nice 10, then the idle class if this process may leave it again:
    /// an unprivileged thread needs `RLIMIT_NICE` ≥ 10 for that (the
    /// systemd unit sets `LimitNICE=10`); without it the writer stays at
    /// nice 10, as it was before the idle class.
    pub(super) fn start() -> PriorityGuard {
        set_nice(WRITER_NICE);
        let idle = idle_class_is_reversible() && set_idle_class(true);
        PriorityGuard { idle, on_time: 0 }
    }

    /// `lag`: how long the oldest row of the batch about to be committed
    /// waited beyond the batch delay.
    pub(super) fn observe(&mut self, lag: Duration) {
        if self.idle && lag > MAX_IDLE_LAG {
            self.idle = !set_idle_class(false);
            self.on_time = 0;
            if !self.idle {
                tracing::debug!(
                    lag_ms = lag.as_millis() as u64,
                    "ledger writer fell behind: nice 10"
                );
            }
        } else if !self.idle {
            self.on_time = match lag <= MAX_IDLE_LAG {
                true => self.on_time + 1,
                false => 0,
            };
            if self.on_time >= ON_TIME_COMMITS_TO_IDLE {
                self.idle = set_idle_class(true);
                self.on_time = 0;
            }
        }
    }
}

/// Whether a thread at nice 10 can leave `SCHED_IDLE` again, tried on a
/// short-lived probe thread (capabilities, `RLIMIT_NICE`, seccomp and
/// containers all decide; only the kernel's answer is certain).
fn idle_class_is_reversible() -> bool {
    std::thread::Builder::new()
        .name("tollgate-probe".into())
        .spawn(|| {
            set_nice(WRITER_NICE);
            set_idle_class(true) && set_idle_class(false)
        })
        .ok()
        .and_then(|probe| probe.join().ok())
        .unwrap_or(false)
}

/// Moves the calling thread to `SCHED_IDLE` (`idle`) or back to
/// `SCHED_OTHER` (keeping its nice value); whether the change was made.
// Raw scheduling syscalls: neither std nor a maintained crate sets a
// thread's scheduling class and nice value.
#[allow(unsafe_code)]
fn set_idle_class(idle: bool) -> bool {
    #[cfg(target_os = "linux")]
    {
        let policy = if idle {
            libc::SCHED_IDLE
        } else {
            libc::SCHED_OTHER
        };
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: acts on the calling thread (pid 0); the only memory
        // passed is a live, initialised `sched_param`.
        unsafe { libc::sched_setscheduler(0, policy, &param) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = idle;
        false
    }
}

/// Sets the calling thread's nice value (raising it is always allowed).
#[allow(unsafe_code)]
fn set_nice(nice: libc::c_int) {
    #[cfg(target_os = "linux")]
    // SAFETY: plain syscalls on the calling thread's own id; no memory is
    // passed. On Linux, PRIO_PROCESS with a thread id sets that thread only.
    unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, nice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = nice;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's (policy, nice).
    #[cfg(target_os = "linux")]
    #[allow(unsafe_code)]
    fn scheduling() -> (libc::c_int, libc::c_int) {
        // SAFETY: queries on the calling thread; no memory is passed.
        unsafe {
            let tid = libc::gettid();
            (
                libc::sched_getscheduler(0),
                libc::getpriority(libc::PRIO_PROCESS, tid as libc::id_t),
            )
        }
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn writer_is_idle_class_while_on_time_and_nice_10_while_behind() {
        // On its own thread: the class and nice value are per thread.
        let seen = std::thread::spawn(|| {
            let mut guard = PriorityGuard::start();
            let mut seen = vec![(guard.idle, scheduling())];
            guard.observe(Duration::from_millis(5));
            seen.push((guard.idle, scheduling()));
            guard.observe(MAX_IDLE_LAG + Duration::from_millis(1));
            seen.push((guard.idle, scheduling()));
            for _ in 0..ON_TIME_COMMITS_TO_IDLE {
                guard.observe(Duration::ZERO);
            }
            seen.push((guard.idle, scheduling()));
            seen
        })
        .join()
        .unwrap_or_else(|_| panic!("probe thread panicked"));
        if !idle_class_is_reversible() {
            // Unprivileged without RLIMIT_NICE: nice 10 throughout.
            assert!(seen
                .iter()
                .all(|(idle, s)| !idle && *s == (libc::SCHED_OTHER, 10)));
            return;
        }
        let idle = (true, (libc::SCHED_IDLE, WRITER_NICE));
        let behind = (false, (libc::SCHED_OTHER, WRITER_NICE));
        assert_eq!(seen, vec![idle, idle, behind, idle]);
    }
}
