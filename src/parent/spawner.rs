//! The spawner: one long-lived thread of our own on which every worker
//! process is started (cloned, or forked: `spawn.rs`).
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that started the child exits,
//! not the process: a worker started on one of tokio's blocking threads,
//! which come and go, would be signalled when that thread retires. The
//! spawner thread lives as long as the process, so a worker's parent-death
//! signal means what it says. What runs there is `spawn.rs`'s.
//!
//! It also admits local starts a few at a time ([`admit`]): a start is
//! counted from its clone until its link has the worker's hello (or gave
//! up), and the next waits while as many are under way as the machine has
//! CPUs. A new worker wants its CPU for a millisecond or two (exec, the
//! loader, its runtime, the handshake); 64 started at once were 64
//! processes ready to run beside the parent's event loop, which then
//! waited its turn for milliseconds. The wait is bounded
//! ([`ADMIT_WAIT`]): a start whose worker is slow to say hello (a loop
//! blocked by its application, a worker stopped in a debugger) delays the
//! next by at most that, never blocks it.

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{mpsc, Condvar, Mutex};
use std::time::{Duration, Instant};

type Job = Box<dyn FnOnce() + Send>;

/// The spawner thread's queue, once it runs.
static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

/// How far the descriptor table had been grown ahead when the spawner
/// thread was first started (`os::reserved`; -1: not started yet).
static RESERVED_BEFORE: AtomicI32 = AtomicI32::new(-1);

/// How far the descriptor table had been grown ahead when the spawner
/// thread was first started: more than 0 in a process that had one thread
/// then (see `os::reserve_descriptors_while_alone`); `None` before. What
/// the crate's tests check.
pub(crate) fn reserved_before_spawner() -> Option<i32> {
    Some(RESERVED_BEFORE.load(Ordering::Relaxed)).filter(|&n| n >= 0)
}

fn start_spawner() -> std::io::Result<mpsc::Sender<Job>> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new().name("actix-webworker-spawner".into()).spawn(move || {
        for job in rx {
            job();
        }
    })?;
    Ok(tx)
}

/// Runs `f` on the spawner thread (started on first use); its result comes
/// on the receiver. When the thread cannot be started, or is gone, the job
/// is dropped with its sender: the receiver is closed, which the caller
/// reports as a `SpawnError`, and the next call tries again.
pub(crate) fn on_spawner<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> tokio::sync::oneshot::Receiver<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job: Job = Box::new(move || {
        let _ = tx.send(f());
    });
    let mut spawner = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
    if spawner.is_none() {
        // While this may still be the process's only thread (an actix
        // `main`), where growing the table waits for nothing.
        crate::os::reserve_descriptors_while_alone();
        let _ = RESERVED_BEFORE.compare_exchange(
            -1,
            crate::os::reserved(),
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        match start_spawner() {
            Ok(queue) => *spawner = Some(queue),
            Err(e) => tracing::warn!(error = %e, "the spawner thread could not be started"),
        }
    }
    if let Some(queue) = spawner.as_ref() {
        if queue.send(job).is_err() {
            *spawner = None;
        }
    }
    rx
}

/// Starts under way, and how many may be (see the module's doc).
pub(crate) struct Admission {
    starting: Mutex<usize>,
    /// Signalled when one of them is done.
    done: Condvar,
}

/// The process's local starts.
static ADMISSION: Admission = Admission::new();

/// The longest a start waits for another to be done.
pub(crate) const ADMIT_WAIT: Duration = Duration::from_millis(20);

/// A start under way, from before its clone until its link is opened or
/// has failed: dropped, it lets the next start in.
pub(crate) struct Starting(&'static Admission);

impl Drop for Starting {
    fn drop(&mut self) {
        let mut starting = self.0.starting.lock().unwrap_or_else(|e| e.into_inner());
        *starting = starting.saturating_sub(1);
        drop(starting);
        self.0.done.notify_one();
    }
}

impl Admission {
    pub(crate) const fn new() -> Self {
        Admission { starting: Mutex::new(0), done: Condvar::new() }
    }

    /// Counts a start, once fewer than `max` are under way or `wait` has
    /// passed.
    pub(crate) fn admit(&'static self, max: usize, wait: Duration) -> Starting {
        let deadline = Instant::now() + wait;
        let mut starting = self.starting.lock().unwrap_or_else(|e| e.into_inner());
        while *starting >= max {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let waited = self.done.wait_timeout(starting, left);
            starting = waited.unwrap_or_else(|e| e.into_inner()).0;
        }
        *starting += 1;
        Starting(self)
    }

    /// How many starts are under way now.
    #[cfg(test)]
    pub(crate) fn under_way(&self) -> usize {
        *self.starting.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// How many local starts may be under way at once: the CPUs this process
/// may run on, at least 2.
/// Asked once: `available_parallelism` reads the process's affinity and
/// its cgroup's CPU quota files each time it is called.
fn max_starting() -> usize {
    static MAX: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *MAX.get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get()).max(2))
}

/// Counts a local start, once fewer than [`max_starting`] are under way,
/// or [`ADMIT_WAIT`] has passed. Called on the spawner thread, before the
/// clone: what waits is the starts behind, never the caller's loop.
pub(crate) fn admit() -> Starting {
    ADMISSION.admit(max_starting(), ADMIT_WAIT)
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::Admission;

    #[test]
    fn a_start_past_the_limit_waits_for_one_to_be_done() {
        static ADMISSION: Admission = Admission::new();
        let long = Duration::from_secs(120);
        let (a, _b) = (ADMISSION.admit(2, long), ADMISSION.admit(2, long));
        let (entered, in_now) = mpsc::channel();
        let third = std::thread::spawn(move || {
            let third = ADMISSION.admit(2, long);
            entered.send(()).unwrap();
            third
        });
        // Not let in while two are under way (a correct admission always
        // passes this wait; one that lets it in fails it at once).
        let early = in_now.recv_timeout(Duration::from_millis(300));
        assert_eq!(early, Err(mpsc::RecvTimeoutError::Timeout), "let in past the limit");
        drop(a);
        in_now.recv_timeout(long).expect("let in once one was done");
        let _third = third.join().unwrap();
        assert_eq!(ADMISSION.under_way(), 2);
    }

    #[test]
    fn a_start_goes_in_at_its_bound_however_long_the_others_take() {
        static ADMISSION: Admission = Admission::new();
        let _held = (ADMISSION.admit(1, Duration::ZERO), ADMISSION.admit(1, Duration::ZERO));
        assert_eq!(ADMISSION.under_way(), 2, "past the limit at once, with no wait");
        let t0 = Instant::now();
        let third = ADMISSION.admit(2, Duration::from_millis(50));
        assert!(t0.elapsed() >= Duration::from_millis(50), "it waited its bound first");
        assert_eq!(ADMISSION.under_way(), 3);
        drop(third);
        assert_eq!(ADMISSION.under_way(), 2, "a start done is counted out");
    }
}
