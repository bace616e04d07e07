//! The spawner: one long-lived thread of our own on which every worker
//! process is started (cloned, or forked: `spawn.rs`).
//!
//! `PR_SET_PDEATHSIG` fires when the *thread* that started the child exits,
//! not the process: a worker started on one of tokio's blocking threads,
//! which come and go, would be signalled when that thread retires. The
//! spawner thread lives as long as the process, so a worker's parent-death
//! signal means what it says. What runs there is `spawn.rs`'s.

use std::sync::mpsc;
use std::sync::Mutex;

type Job = Box<dyn FnOnce() + Send>;

/// The spawner thread's queue, once it runs.
static SPAWNER: Mutex<Option<mpsc::Sender<Job>>> = Mutex::new(None);

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
