//! Tests with real worker processes. The test binary is its own worker: it
//! is re-run with a worker entry in the environment, and `main` hands over
//! to the worker runtime before the test harness starts.

mod basics;
mod bounds;
mod common;
mod conformance;
mod delivery;
mod errors;
mod faults;
mod fds;
mod floods;
mod hostile;
mod lifecycle;
mod load;
mod misuse;
mod pool;
mod port;
mod remote;
mod requests;
mod shared;
mod startup;
mod stream;
mod supervise;

use libtest_mimic::Arguments;

#[macro_export]
macro_rules! trials {
    ($($module:ident :: $test:ident),* $(,)?) => {
        vec![$(libtest_mimic::Trial::test(concat!(stringify!($module), "::", stringify!($test)), || {
            $crate::$module::$test();
            Ok(())
        })),*]
    };
}

/// Tests that only run when another test starts them in a process of their
/// own (they count the whole process's descriptors, or get killed).
#[macro_export]
macro_rules! inner {
    ($($module:ident :: $test:ident),* $(,)?) => {
        vec![$(libtest_mimic::Trial::test(concat!(stringify!($module), "::", stringify!($test)), || {
            if std::env::var_os("AWW_ISOLATED").is_some() {
                $crate::$module::$test();
            }
            Ok(())
        }).with_ignored_flag(true)),*]
    };
}

/// Each module with its source: every `pub fn name()` in it is a test that
/// must be in the module's `trials()` or `roles()` (see `listing`).
macro_rules! modules {
    ($($module:ident),* $(,)?) => {
        const SOURCES: &[(&str, &str)] =
            &[$((stringify!($module), include_str!(concat!(stringify!($module), ".rs")))),*];
    };
}

modules![
    basics,
    bounds,
    conformance,
    delivery,
    errors,
    faults,
    fds,
    floods,
    hostile,
    lifecycle,
    load,
    misuse,
    pool,
    port,
    requests,
    shared,
    startup,
    stream,
    supervise,
];

/// Functions that take no arguments and are not tests.
const NOT_TESTS: &[&str] = &["trials", "roles", "run_if_raw_worker", "run_if_launcher"];

/// The tests of [`SOURCES`] that no list names: written, but never run.
fn unlisted(listed: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (module, source) in SOURCES {
        for line in source.lines() {
            let Some(name) = line.strip_prefix("pub fn ").and_then(|l| l.strip_suffix("() {"))
            else {
                continue;
            };
            let full = format!("{module}::{name}");
            if !NOT_TESTS.contains(&name) && !listed.contains(&full) {
                out.push(full);
            }
        }
    }
    out
}

fn main() {
    hostile::run_if_raw_worker();
    remote::run_if_launcher();
    actix_webworker::run_if_worker(common::entries());

    let args = Arguments::from_args();
    let mut tests = Vec::new();
    for module in [
        basics::trials,
        basics::roles,
        bounds::trials,
        conformance::trials,
        delivery::trials,
        errors::trials,
        errors::roles,
        faults::trials,
        faults::roles,
        fds::trials,
        fds::roles,
        floods::trials,
        floods::roles,
        hostile::trials,
        lifecycle::trials,
        lifecycle::roles,
        load::trials,
        load::roles,
        misuse::trials,
        pool::trials,
        port::trials,
        port::roles,
        remote::trials,
        remote::roles,
        requests::trials,
        shared::trials,
        shared::roles,
        startup::trials,
        stream::trials,
        supervise::trials,
        supervise::roles,
    ] {
        tests.extend(module());
    }
    let listed: Vec<String> = tests.iter().map(|t| t.name().to_owned()).collect();
    tests.push(libtest_mimic::Trial::test(
        "listing::every_test_is_listed",
        move || match unlisted(&listed).as_slice() {
            [] => Ok(()),
            missing => Err(format!("written but in no list: {missing:?}").into()),
        },
    ));
    libtest_mimic::run(&args, tests).exit();
}
