//! `StartMethod::ForkServer`: a forked worker inherits what an exec'd one
//! would, from the parent as it is at the start, not as it was when its
//! template started; a template that dies with a request costs no start.
//! (From a review of the fork server: each test failed before its fix.)

use std::time::Duration;

use actix::Addr;
use actix_webworker::{Event, Restart, StartMethod, Worker, WorkerAddrExt};
use libtest_mimic::Trial;

use crate::common::*;
use crate::fork_server::FAKE;

pub fn trials() -> Vec<Trial> {
    crate::trials![
        fork_state::a_forked_worker_starts_where_the_parent_is_now,
        fork_state::a_forked_worker_runs_as_the_parent_is_now,
        fork_state::a_template_that_dies_with_a_request_costs_no_start,
    ]
}

pub fn roles() -> Vec<Trial> {
    crate::inner![
        fork_state::directory_role,
        fork_state::user_role,
        fork_state::dying_template_role,
    ]
}

/// A worker started with `method`, online: its address, events and pid.
async fn started(method: StartMethod, tag: &str) -> (Addr<Worker<Test>>, Events<Test>, u32) {
    let (rec, mut events) = events::<Test>();
    let worker =
        builder(rec).env("AWW_TEMPLATE_TEST", tag).start_method(method).start().unwrap();
    worker.post(Cmd::Pid);
    let Reply::Pid(pid) = events.message().await.data else { panic!("a pid") };
    (worker, events, pid)
}

/// Ends a worker and waits for its exit.
async fn ended(worker: Addr<Worker<Test>>, mut events: Events<Test>) {
    worker.post(Cmd::Exit(0));
    assert!(events.exit().await.success());
}

/// With no directory set, a worker starts in the parent's directory as it
/// is at the start: a forked one too, after the parent moved since its
/// template started (before: in the template's, the old one).
pub fn a_forked_worker_starts_where_the_parent_is_now() {
    isolated("fork_state::directory_role");
}

pub fn directory_role() {
    run(async {
        let tag = format!("cwd-{}", std::process::id());
        let (first, first_events, first_pid) = started(StartMethod::ForkServer, &tag).await;
        assert!(forked(first_pid), "the first is forked");
        let moved = std::env::temp_dir().join(format!("aww-cwd-{}", std::process::id()));
        std::fs::create_dir_all(&moved).unwrap();
        std::env::set_current_dir(&moved).unwrap();
        let moved = std::env::current_dir().unwrap();
        let (second, second_events, pid) = started(StartMethod::ForkServer, &tag).await;
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        println!("FORK_STATE the second worker: forked {}, in {cwd:?}", forked(pid));
        assert!(forked(pid), "forked, from a new template");
        assert_eq!(cwd, moved, "where the parent is now");
        let templates = templates(&format!("AWW_TEMPLATE_TEST={tag}"), &[first_pid, pid]);
        assert_eq!(templates.len(), 1, "the old template let go: {templates:?}");
        ended(first, first_events).await;
        ended(second, second_events).await;
        std::fs::remove_dir(&moved).unwrap();
    });
}

/// A parent that starts as root (to bind a port, say) and then drops to
/// an unprivileged user: its next worker runs as that user, forked from
/// a template of that user's, as an exec'd one does; the parent can
/// signal it. Before: forked from the template started as root, it ran as
/// root, and its parent could not even signal it. (Root only.)
pub fn a_forked_worker_runs_as_the_parent_is_now() {
    // SAFETY: getuid has no failure.
    if unsafe { libc::getuid() } != 0 {
        return skip("needs root, to drop to another user");
    }
    isolated("fork_state::user_role");
}

fn uid_of(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap_or_default().trim().to_owned()
}

pub fn user_role() {
    run(async {
        let tag = format!("uid-{}", std::process::id());
        let (first, first_events, first_pid) = started(StartMethod::ForkServer, &tag).await;
        assert!(forked(first_pid), "the first is forked");
        // Drops to nobody, as a server does once its port is bound.
        // SAFETY: plain system calls; glibc applies them to every thread.
        unsafe {
            assert_eq!(libc::setgroups(0, std::ptr::null()), 0);
            assert_eq!(libc::setresgid(65534, 65534, 65534), 0);
            assert_eq!(libc::setresuid(65534, 65534, 65534), 0);
        }
        let (second, second_events, pid) = started(StartMethod::ForkServer, &tag).await;
        let uid = uid_of(pid);
        // SAFETY: signal 0 only checks permission.
        let may_signal = unsafe { libc::kill(pid as i32, 0) } == 0;
        println!("FORK_STATE the second worker runs as {uid:?}; its parent may signal it: {may_signal}");
        assert!(uid.split_whitespace().all(|u| u == "65534"), "runs as {uid}, not as its parent");
        assert!(may_signal, "its parent may signal it");
        assert!(forked(pid), "forked, from a template of the parent's new user");
        // The first (root's) goes as it was asked to; the old template was
        // let go (it ended on its own: nobody may signal root's process).
        ended(first, first_events).await;
        ended(second, second_events).await;
    });
}

/// A template that dies with a request (it reads it and exits, as one the
/// OOM killer takes): that start is exec'd, with new descriptors, and the
/// worker comes online; no restart, nothing given up. Before: the start
/// failed ("the template is gone") and the worker was given up, whatever
/// its restart policy.
pub fn a_template_that_dies_with_a_request_costs_no_start() {
    isolated("fork_state::dying_template_role");
}

pub fn dying_template_role() {
    run(async {
        for _ in 0..2 {
            let (rec, mut events) = events::<Test>();
            let worker = builder(rec)
                .env(FAKE, "dies")
                .restart(fast(Restart::Never))
                .start_method(StartMethod::ForkServer)
                .start()
                .unwrap();
            worker.post(Cmd::Pid);
            let outcome = loop {
                match events.next().await {
                    Event::Message(m) => break Ok(m.data),
                    Event::GaveUp(g) => break Err(g.reason),
                    _ => continue,
                }
            };
            let Ok(Reply::Pid(pid)) = outcome else { panic!("given up: {outcome:?}") };
            assert!(!forked(pid), "exec'd");
            ended(worker, events).await;
        }
        // Nothing of ours left behind: the templates that died were reaped.
        let clean = within(Duration::from_secs(10), || children().is_empty()).await;
        assert!(clean, "children left: {:?}", children());
    });
}
