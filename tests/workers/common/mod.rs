//! What the tests share: the test protocol and the worker they run
//! (`worker.rs`), a worker's events as the test reads them (`events.rs`),
//! what the operating system says about processes and descriptors
//! (`os.rs`), and the runs of this binary in roles of its own: among them
//! the keeper of a Slurm cluster of the tests' own (`slurm.rs`) and a
//! stand-in for `kubectl exec` (`kubectl.rs`).

mod events;
pub mod kubectl;
mod os;
pub mod slurm;
mod worker;

use std::future::Future;
use std::time::Duration;

pub use self::events::*;
pub use self::os::*;
pub use self::worker::*;

/// How long any one wait may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

/// Runs `f` in a fresh actix System.
pub fn run<F: Future<Output = ()>>(f: F) {
    actix::System::new().block_on(f);
}

/// This test binary, set to run test `name` alone (one of the roles, marked
/// ignored, that only run when asked for this way).
pub fn role(name: &str) -> std::process::Command {
    let mut cmd = std::process::Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([name, "--exact", "--ignored", "--test-threads=1", "--nocapture"])
        .env("AWW_ISOLATED", "1");
    cmd
}

/// Runs one test of this binary alone in a fresh process (for tests that
/// count descriptors and children of the whole process) and checks it passed.
pub fn isolated(name: &str) {
    let out = role(name).output().expect("test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "isolated test {name} failed:\n{stdout}\n{stderr}"
    );
}

/// Plain TCP on loopback, any free port: how a launched worker connects
/// back in the tests.
pub fn loopback() -> actix_webworker::Transport {
    actix_webworker::Transport::plain_tcp("127.0.0.1:0".parse().unwrap())
}
