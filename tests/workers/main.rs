//! Tests with real worker processes. The test binary is its own worker: it
//! is re-run with a worker entry in the environment, and `main` hands over
//! to the worker runtime before the test harness starts.

mod common;

use libtest_mimic::Arguments;

#[macro_export]
macro_rules! trials {
    ($($module:ident :: $test:ident),* $(,)?) => {
        vec![$(libtest_mimic::Trial::ignorable_test(concat!(stringify!($module), "::", stringify!($test)), || {
            $crate::$module::$test();
            // A test that could not run here (`common::skip`) is ignored,
            // with its reason, not passed.
            Ok(match $crate::common::take_skip() {
                Some(reason) => libtest_mimic::Completion::ignored_with(reason),
                None => libtest_mimic::Completion::Completed,
            })
        })),*]
    };
}

/// Tests that only run when another test starts them in a process of their
/// own (they count the whole process's descriptors, or get killed): roles,
/// not tests, so a run that is not one of theirs does not list them (see
/// `main`).
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

/// The test modules, each once, with the lists of tests it keeps
/// (`trials`, and `roles` for those run in a process of their own): this
/// declares the modules, gathers their tests, and keeps each module's
/// source for the guard that every test written is in a list
/// (`listing::every_test_is_listed`).
macro_rules! modules {
    ($($module:ident: $($list:ident)+),* $(,)?) => {
        $(mod $module;)*

        /// Each module's name and source.
        const SOURCES: &[(&str, &str)] =
            &[$((stringify!($module), include_str!(concat!(stringify!($module), ".rs")))),*];

        /// Every test of every list.
        fn listed_trials() -> Vec<libtest_mimic::Trial> {
            let mut tests = Vec::new();
            $($(tests.extend($module::$list());)+)*
            tests
        }
    };
}

modules![
    basics: trials roles,
    bounds: trials,
    channels: trials roles,
    cluster: trials roles,
    conformance: trials,
    data: trials,
    declared: trials,
    delivery: trials,
    errors: trials roles,
    faults: trials roles,
    fds: trials roles,
    floods: trials roles,
    fork_server: trials roles,
    fork_state: trials roles,
    hostile: trials,
    hostile_streams: trials,
    hosts: trials,
    inline: trials,
    lifecycle: trials roles,
    load: trials roles,
    misuse: trials,
    pool: trials,
    port: trials roles,
    remote: trials roles,
    requests: trials,
    review_net: trials roles,
    review_pool: trials roles,
    review_trace: trials roles,
    text_floods: trials roles,
    shared: trials roles,
    spawn: trials roles,
    startup: trials,
    stream: trials,
    streams: trials roles,
    supervise: trials roles,
    trace: trials roles,
];

/// Functions that take no arguments and are not tests.
const NOT_TESTS: &[&str] = &[
    "trials",
    "roles",
    "run_if_raw_worker",
    "run_if_raw_streamer",
    "run_if_text_flooder",
    "run_if_launcher",
    "run_if_raw",
    "run_if_fake_template",
];

/// The tests written in `sources` (`(module, source)`: each `pub fn
/// name() {`) that `listed` does not name: written, but never run.
fn unlisted(sources: &[(&str, &str)], listed: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for (module, source) in sources {
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

/// The modules that say "SKIPPED" themselves: a test that prints it and
/// returns is counted as passed. `common::skip` has it reported as
/// ignored, with its reason.
fn skips_by_printing(sources: &[(&str, &str)]) -> Vec<String> {
    let said = concat!("\"SKIP", "PED");
    sources.iter().filter(|(_, text)| text.contains(said)).map(|(m, _)| (*m).to_owned()).collect()
}

/// The files of this directory that are no module of the list: tests
/// written there would never be compiled.
fn modules_not_listed(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .expect("the tests' directory")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".rs").map(str::to_owned))
        .filter(|name| name != "main" && !SOURCES.iter().any(|(m, _)| m == name))
        .collect();
    out.sort();
    out
}

/// Whether this process is one of the tests' workers (the parent told it
/// its socket or where to connect).
fn is_a_worker() -> bool {
    ["ACTIX_WEBWORKER_FD", "ACTIX_WEBWORKER_CONNECT", "ACTIX_WEBWORKER_TEMPLATE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some())
}

/// In a test's worker, a panic is the test's own doing (it posts
/// `Cmd::Panic` and checks the report its parent gets, with file, line and
/// a backtrace when asked): the default hook's message on the run's stderr
/// would read as a failure. The crate's hook, installed after this one,
/// still makes every report. `AWW_WORKER_PANICS=1` shows them.
fn quiet_worker_panics() {
    if is_a_worker() && std::env::var_os("AWW_WORKER_PANICS").is_none() {
        std::panic::set_hook(Box::new(|_| {}));
    }
}

fn main() {
    #[cfg(feature = "tcp")]
    common::slurm::run_if_keeper();
    #[cfg(feature = "tcp")]
    common::kubectl::run_if_kubectl_stub();
    hostile::run_if_raw_worker();
    text_floods::run_if_text_flooder();
    fork_server::run_if_fake_template();
    trace::run_if_raw_worker();
    hostile_streams::run_if_raw_streamer();
    remote::run_if_launcher();
    review_net::run_if_raw();
    review_trace::run_if_raw();
    quiet_worker_panics();
    // A worker records its spans when its test asks (as an application
    // installs its subscriber: before the worker runs).
    common::install_if_asked();
    actix_webworker::run_if_worker(common::entries());
    common::keep_callsites_open();

    let args = Arguments::from_args();
    let mut tests = listed_trials();
    let listed: Vec<String> = tests.iter().map(|t| t.name().to_owned()).collect();
    // Roles (`inner!`) run only in a process a test starts for one of them
    // (`common::role`); elsewhere they would read as ignored tests.
    let roles: Vec<String> =
        tests.iter().filter(|t| t.has_ignored_flag()).map(|t| t.name().to_owned()).collect();
    if std::env::var_os("AWW_ISOLATED").is_none() {
        tests.retain(|t| !t.has_ignored_flag());
    }
    tests.push(libtest_mimic::Trial::test("listing::roles_are_not_listed_as_tests", move || {
        let listing = |isolated: bool| {
            let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
            cmd.args(["--list", "--format=terse"]).env_remove("AWW_ISOLATED");
            if isolated {
                cmd.env("AWW_ISOLATED", "1");
            }
            let out = cmd.output().map_err(|e| e.to_string())?;
            Ok::<_, String>(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let named = |text: &str, role: &str| text.lines().any(|l| l == format!("{role}: test"));
        let (plain, isolated) = (listing(false)?, listing(true)?);
        let listed: Vec<&String> = roles.iter().filter(|r| named(&plain, r)).collect();
        let missing: Vec<&String> = roles.iter().filter(|r| !named(&isolated, r)).collect();
        if roles.is_empty() || !listed.is_empty() || !missing.is_empty() {
            return Err(format!("roles listed: {listed:?}; not there to run: {missing:?}").into());
        }
        Ok(())
    }));
    tests.push(libtest_mimic::Trial::test(
        "listing::every_test_is_listed",
        move || match unlisted(SOURCES, &listed).as_slice() {
            [] => Ok(()),
            missing => Err(format!("written but in no list: {missing:?}").into()),
        },
    ));
    tests.push(libtest_mimic::Trial::test("listing::every_module_is_listed", || {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/workers");
        match modules_not_listed(&dir).as_slice() {
            [] => Ok(()),
            missing => Err(format!("modules in no list: {missing:?}").into()),
        }
    }));
    tests.push(libtest_mimic::Trial::test("listing::a_test_that_cannot_run_says_skipped", || {
        match skips_by_printing(SOURCES).as_slice() {
            [] => Ok(()),
            found => Err(format!("print SKIPPED and pass (use common::skip): {found:?}").into()),
        }
    }));
    // The guards themselves, each given what it must reject.
    tests.push(libtest_mimic::Trial::test("listing::the_guards_reject_what_is_missing", || {
        let fixture = [("fixture", "pub fn listed() {\n}\npub fn forgotten() {\n}\n")];
        let found = unlisted(&fixture, &["fixture::listed".to_owned()]);
        if found != ["fixture::forgotten"] {
            return Err(format!("the test guard found {found:?}").into());
        }
        let printing = concat!("pub fn t() {\n    println!(\"SKIP", "PED: no tool\");\n}\n");
        let found = skips_by_printing(&[("quiet", "pub fn t() {}\n"), ("loud", printing)]);
        if found != ["loud"] {
            return Err(format!("the skip guard found {found:?}").into());
        }
        let dir = std::env::temp_dir().join(format!("aww-listing-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for file in ["main.rs", "basics.rs", "stray.rs"] {
            std::fs::write(dir.join(file), "").map_err(|e| e.to_string())?;
        }
        let found = modules_not_listed(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        match found.as_slice() {
            [stray] if stray == "stray" => Ok(()),
            other => Err(format!("the module guard found {other:?}").into()),
        }
    }));
    let conclusion = libtest_mimic::run(&args, tests);
    // The Slurm cluster, if a test started one: its daemons and every job
    // step's process gone, its directory removed, before the run says it
    // is over.
    #[cfg(feature = "tcp")]
    common::slurm::shut_down();
    conclusion.exit();
}
