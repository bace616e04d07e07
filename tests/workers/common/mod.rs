//! What the tests share: the test protocol and the worker they run
//! (`worker.rs`), a worker's events as the test reads them (`events.rs`),
//! what the operating system says about processes and descriptors
//! (`os.rs`), and the runs of this binary in roles of its own: among them
//! the keeper of a Slurm cluster of the tests' own (`slurm.rs`) and a
//! stand-in for `kubectl exec` (`kubectl.rs`).

mod events;
#[cfg(feature = "tcp")]
pub mod kubectl;
mod os;
#[cfg(feature = "tcp")]
pub mod slurm;
mod spans;
mod worker;

use std::future::Future;
use std::time::Duration;

pub use self::events::*;
pub use self::os::*;
pub use self::spans::*;
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

/// Starts role `name` in a process of its own and reads its stdout up to
/// the line `WORKER_PID=N`: the process, and N.
pub fn role_with_worker(name: &str) -> (std::process::Child, u32) {
    use std::io::BufRead;
    let mut parent = role(name).stdout(std::process::Stdio::piped()).spawn().unwrap();
    let stdout = std::io::BufReader::new(parent.stdout.take().unwrap());
    let pid = stdout.lines().find_map(|line| {
        let line = line.ok()?;
        line.split_once("WORKER_PID=").map(|(_, p)| p.trim().parse::<u32>().unwrap())
    });
    (parent, pid.expect("the intermediate parent printed its worker's pid"))
}

/// Runs one test of this binary alone in a fresh process (for tests that
/// count descriptors and children of the whole process, or its memory) and
/// checks it passed; what it printed.
pub fn isolated(name: &str) -> String {
    let out = role(name).output().expect("test binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "isolated test {name} failed:\n{stdout}\n{stderr}"
    );
    stdout.into_owned()
}

/// Plain TCP on loopback, any free port: how a launched worker connects
/// back in the tests.
#[cfg(feature = "tcp")]
pub fn loopback() -> actix_webworker::Transport {
    actix_webworker::Transport::plain_tcp("127.0.0.1:0".parse().unwrap())
}

/// Tests that need a cargo feature of the crate (`tcp`, `tls`): with it,
/// the list as `trials!` (or `inner!`, for roles) makes it; without it,
/// every test of the list is still there, and reported as ignored, with
/// the feature it needs and the command that runs it (roles stay roles:
/// nothing starts them). Their functions are `#[cfg(feature = ...)]`.
#[macro_export]
macro_rules! with_feature {
    ($feature:literal, trials![$($module:ident :: $test:ident),* $(,)?]) => {{
        #[cfg(feature = $feature)]
        let list = $crate::trials![$($module::$test),*];
        #[cfg(not(feature = $feature))]
        let list = vec![$($crate::common::needs_feature(
            concat!(stringify!($module), "::", stringify!($test)),
            $feature,
        )),*];
        list
    }};
    ($feature:literal, inner![$($module:ident :: $test:ident),* $(,)?]) => {{
        #[cfg(feature = $feature)]
        let list = $crate::inner![$($module::$test),*];
        #[cfg(not(feature = $feature))]
        let list = vec![$(libtest_mimic::Trial::test(
            concat!(stringify!($module), "::", stringify!($test)),
            || Ok(()),
        )
        .with_ignored_flag(true)),*];
        list
    }};
}

/// Test `name`, which this build cannot run: reported as ignored, saying
/// which feature of the crate it needs.
#[cfg(not(all(feature = "tcp", feature = "tls")))]
pub fn needs_feature(name: &str, feature: &'static str) -> libtest_mimic::Trial {
    libtest_mimic::Trial::ignorable_test(name, move || {
        Ok(libtest_mimic::Completion::ignored_with(format!(
            "needs the crate's `{feature}` feature: cargo test --features {feature}"
        )))
    })
}
