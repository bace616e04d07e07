//! Workers defined in a test binary with the default harness.
//!
//! A worker is the current executable started again. In a test binary built
//! by libtest (`#[test]`, `#[actix::test]`), that would run every test again,
//! each starting workers of its own. [`test_workers!`](crate::test_workers)
//! defines one more test, the one a worker process runs (alone, with
//! `--exact`), and switches the builder to start workers that way. The
//! switch is a function the loader runs before `main` (an `.init_array`
//! entry, as the `ctor` crate makes), so no test has to remember it.

use std::ffi::OsString;
use std::sync::OnceLock;

/// The name of the test a worker process runs, once enabled.
static HELPER: OnceLock<String> = OnceLock::new();

/// The test that `test_workers!` defines, without its module path.
pub const HELPER_TEST: &str = "__actix_webworker_worker";

/// Turns test mode on; `module_path` is where `test_workers!` was invoked.
/// Called before `main` by the start-up function `test_workers!` emits.
pub fn enable(module_path: &str) {
    // The test's name as libtest knows it: the module path without the
    // crate's own name.
    let name = match module_path.split_once("::") {
        Some((_, module)) => format!("{module}::{HELPER_TEST}"),
        None => HELPER_TEST.to_owned(),
    };
    let _ = HELPER.set(name);
}

/// The arguments that make this test binary run only the worker's test,
/// when test mode is on.
pub(crate) fn worker_args() -> Option<Vec<OsString>> {
    let name = HELPER.get()?;
    Some(
        [name.as_str(), "--exact", "--test-threads=1", "--nocapture", "--quiet"]
            .into_iter()
            .map(OsString::from)
            .collect(),
    )
}

/// Makes the workers of a test binary with the default harness work:
/// invoke it once, at the top level of the test crate, with the entries of
/// the workers the tests start.
///
/// ```ignore
/// actix_webworker::test_workers![Entry::new("double", |parent| Doubler { parent })];
///
/// #[actix::test]
/// async fn doubles() {
///     let worker = Worker::<Doubling>::builder().entry("double").start().unwrap();
///     assert_eq!(worker.ask(Double(21)).await.unwrap(), 42);
/// }
/// ```
///
/// It defines a test named `__actix_webworker_worker`, which a worker
/// process runs alone (with `--exact`) and which does nothing in a normal
/// run, and it has workers started with the current executable (the
/// default `program`) given the arguments that select that test. A test
/// binary with `harness = false` needs none of this: it calls
/// [`run_if_worker`](crate::run_if_worker) on the first line of its own
/// `main`.
#[macro_export]
macro_rules! test_workers {
    ($($entry:expr),* $(,)?) => {
        #[test]
        fn __actix_webworker_worker() {
            $crate::run_if_worker([$($entry),*]);
        }

        #[used]
        #[unsafe(link_section = ".init_array")]
        static __ACTIX_WEBWORKER_TEST_MODE: extern "C" fn() = {
            extern "C" fn enable() {
                $crate::__private::testing::enable(::std::module_path!());
            }
            enable
        };
    };
}
