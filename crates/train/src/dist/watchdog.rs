//! Collective timeouts. A blocking collective whose peer died or hung would wait forever; a
//! watchdog thread ends the process when one runs past the timeout, saying which rank gave up
//! in which call. The launcher (mpirun, srun, torchrun) then stops the other ranks, so a fault
//! anywhere ends the whole job in bounded time.
//!
//! The thread never calls into MPI or NCCL (neither is safe to call from a second thread while
//! the first is inside a collective); it only prints and exits.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Exit status of a rank that gave up waiting for the others.
pub const TIMEOUT_EXIT: i32 = 3;

struct State {
    epoch: Instant,
    /// Milliseconds since `epoch` when the current collective started, +1; 0 when none runs.
    started: AtomicU64,
    /// Collectives begun so far, and the current one's name.
    count: AtomicU64,
    name: Mutex<&'static str>,
}

pub struct Watchdog {
    state: Arc<State>,
}

/// Marks one collective as running until dropped.
pub struct Timed<'a>(&'a State);

impl Drop for Timed<'_> {
    fn drop(&mut self) {
        self.0.started.store(0, Ordering::Release);
    }
}

impl Watchdog {
    /// Starts the watchdog of `rank`: a collective running longer than `timeout` ends the
    /// process with exit status `TIMEOUT_EXIT`.
    pub fn start(rank: usize, world: usize, timeout: Duration) -> Watchdog {
        let state = Arc::new(State {
            epoch: Instant::now(),
            started: AtomicU64::new(0),
            count: AtomicU64::new(0),
            name: Mutex::new(""),
        });
        let watched = Arc::downgrade(&state);
        let tick = (timeout / 20).clamp(Duration::from_millis(10), Duration::from_secs(1));
        std::thread::Builder::new()
            .name(format!("watchdog-{rank}"))
            .spawn(move || loop {
                std::thread::sleep(tick);
                let Some(s) = watched.upgrade() else { return };
                let started = s.started.load(Ordering::Acquire);
                if started == 0 {
                    continue;
                }
                let now = s.epoch.elapsed().as_millis() as u64 + 1;
                let waited = Duration::from_millis(now.saturating_sub(started));
                if waited > timeout {
                    let name = *s.name.lock().unwrap_or_else(|p| p.into_inner());
                    eprintln!(
                        "error: rank {rank} of {world}: collective #{} ({name}) waited {:.1} s for the other ranks (dist.timeout_s = {:.1}): another rank died or hung; ending this rank\nHINT: the first error above names the rank at fault; raise dist.timeout_s if a rank is only slow (evaluation, checkpoints)",
                        s.count.load(Ordering::Relaxed),
                        waited.as_secs_f64(),
                        timeout.as_secs_f64(),
                    );
                    // SAFETY: _exit ends the process without running destructors or atexit
                    // handlers, which could block on the very collective that hangs.
                    unsafe { libc::_exit(TIMEOUT_EXIT) }
                }
            })
            .expect("the watchdog thread starts");
        Watchdog { state }
    }

    /// Times the collective `name` until the guard drops.
    pub fn time(&self, name: &'static str) -> Timed<'_> {
        let s = &*self.state;
        *s.name.lock().unwrap_or_else(|p| p.into_inner()) = name;
        s.count.fetch_add(1, Ordering::Relaxed);
        s.started
            .store(s.epoch.elapsed().as_millis() as u64 + 1, Ordering::Release);
        Timed(s)
    }
}
