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
        fork_state::a_template_killed_while_it_forks_leaves_no_zombie,
        fork_state::a_failed_fork_never_reaps_a_child_not_the_templates,
        fork_state::a_template_killed_with_the_request_unread_costs_no_start,
        fork_state::a_moment_at_the_descriptor_limit_does_not_end_the_fork_server,
        fork_state::a_cut_copy_packet_never_kills_a_child_not_the_templates,
        fork_state::a_pidfd_the_template_opened_never_makes_anothers_child_a_worker,
        fork_state::a_template_that_sends_too_many_descriptors_is_refused_and_leaks_none,
    ]
}

pub fn roles() -> Vec<Trial> {
    crate::inner![
        fork_state::directory_role,
        fork_state::user_role,
        fork_state::dying_template_role,
        fork_state::killed_mid_fork_role,
        fork_state::failed_sibling_role,
        fork_state::unread_request_role,
        fork_state::descriptor_limit_role,
        fork_state::cut_sibling_role,
        fork_state::pidfd_sibling_role,
        fork_state::cut_answer_role,
    ]
}

/// A worker, its events and its pid.
type Online = (Addr<Worker<Test>>, Events<Test>, u32);

/// A worker started with `method`, online, its template tagged `tag`.
async fn started(method: StartMethod, tag: &str) -> Online {
    let online = tried_by(method, &[("AWW_TEMPLATE_TEST", tag)]).await;
    online.unwrap_or_else(|why| panic!("not online: {why}"))
}

/// A worker started by the fork server with the variables `env`, online,
/// or why it was given up or ended (its link failing, say, at the
/// descriptor limit).
async fn tried(env: &[(&str, &str)]) -> Result<Online, String> {
    tried_by(StartMethod::ForkServer, env).await
}

/// [`tried`], started with `method`.
async fn tried_by(method: StartMethod, env: &[(&str, &str)]) -> Result<Online, String> {
    let (rec, mut events) = events::<Test>();
    let builder = env.iter().fold(builder(rec), |b, &(key, value)| b.env(key, value));
    let worker = builder.start_method(method).start().unwrap();
    worker.post(Cmd::Pid);
    loop {
        match events.next().await {
            Event::Message(m) => match m.data {
                Reply::Pid(pid) => return Ok((worker, events, pid)),
                other => panic!("{other:?}"),
            },
            Event::GaveUp(g) => return Err(g.reason),
            Event::Exit(status) => return Err(format!("ended: {status:?}")),
            _ => continue,
        }
    }
}

/// A template of this process's, tagged `name`, serving: its tag, and its
/// pid (it forked a first worker, which has ended).
async fn serving(name: &str) -> (String, u32) {
    let tag = format!("{name}-{}", std::process::id());
    let (first, first_events, first_pid) = started(StartMethod::ForkServer, &tag).await;
    assert!(forked(first_pid));
    let template = templates(&format!("AWW_TEMPLATE_TEST={tag}"), &[first_pid])[0];
    ended(first, first_events).await;
    (tag, template)
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
            let met = tried(&[(FAKE, "dies")]).await;
            let (worker, events, pid) = met.unwrap_or_else(|why| panic!("given up: {why}"));
            assert!(!forked(pid), "exec'd");
            ended(worker, events).await;
        }
        // Nothing of ours left behind: the templates that died were reaped.
        let clean = within(Duration::from_secs(10), || children().is_empty()).await;
        assert!(clean, "children left: {:?}", children());
    });
}

/// The template SIGKILLed after its fork and before its answer (seen in
/// `read`, waiting on its fork's report): the fork is already the
/// parent's child (`CLONE_PARENT`), and said so with a pidfd of itself
/// before its steps; the parent ends and reaps it, and the start is
/// exec'd. No zombie, no child of ours left. Before: the parent never
/// learnt the fork's pid, and it stayed a zombie until the parent exited
/// (4 runs of 4 in the review).
pub fn a_template_killed_while_it_forks_leaves_no_zombie() {
    isolated("fork_state::killed_mid_fork_role");
}

pub fn killed_mid_fork_role() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    run(async {
        let (tag, template) = serving("midfork").await;
        // Kills the template the moment it is seen in `read` (syscall 0):
        // after its fork, before its answer.
        let (hit, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let killer = {
            let (hit, stop) = (hit.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let at = std::fs::read_to_string(format!("/proc/{template}/syscall"));
                    if at.unwrap_or_default().starts_with("0 ") {
                        assert!(kill(template, nix::sys::signal::Signal::SIGKILL));
                        hit.store(true, Ordering::Relaxed);
                        return;
                    }
                }
            })
        };
        let mut starts = 0;
        while !hit.load(Ordering::Relaxed) && starts < 2000 {
            let (worker, events, _) = started(StartMethod::ForkServer, &tag).await;
            ended(worker, events).await;
            starts += 1;
        }
        stop.store(true, Ordering::Relaxed);
        killer.join().unwrap();
        if !hit.load(Ordering::Relaxed) {
            return skip("the template was never seen between its fork and its answer");
        }
        println!("FORK_STATE template {template} killed mid-fork at start {starts}");
        // The start it met came online (exec'd); the next forks again.
        let (next, next_events, pid) = started(StartMethod::ForkServer, &tag).await;
        assert!(forked(pid), "the next start forks, from a new template");
        ended(next, next_events).await;
        // Every worker of ours exited and was reaped: nothing of ours is
        // left but the new template.
        let tag = format!("AWW_TEMPLATE_TEST={tag}");
        let only_templates = || children().iter().all(|(pid, _)| templates(&tag, &[]).contains(pid));
        let clean = within(Duration::from_secs(10), only_templates).await;
        assert!(clean, "children of ours left, nobody's to reap: {:?}", children());
    });
}

/// A template that answers `Failed` naming a child of the parent's that is
/// not its fork (the application's own `sleep 1`, said to be its fork,
/// without a pidfd of it): the start fails, and the parent neither
/// signals nor reaps that child: the application's own `wait` gets its
/// status. Before: the parent waited for it and reaped it (`ECHILD` for
/// the application).
pub fn a_failed_fork_never_reaps_a_child_not_the_templates() {
    isolated("fork_state::failed_sibling_role");
}

pub fn failed_sibling_role() {
    run(async {
        let mut own = std::process::Command::new("sleep").arg("1").spawn().unwrap();
        let own_pid = own.id().to_string();
        let outcome = tried(&[(FAKE, "failed-sibling"), ("AWW_FAKE_SIBLING", &own_pid)]).await;
        let outcome = outcome.map(|(.., pid)| pid);
        println!("FORK_STATE the start: {outcome:?}");
        assert!(matches!(&outcome, Err(why) if why.contains("without a pidfd")), "{outcome:?}");
        let waited = own.wait();
        assert!(waited.as_ref().is_ok_and(|s| s.success()), "the application's own: {waited:?}");
    });
}

/// The template killed while the request waits unread in its queue (it is
/// stopped): the parent's read gets `ECONNRESET`, not the end; that start
/// too is exec'd, and the next forks from a new template. Before: the
/// start was given up ("Connection reset by peer") and the command's
/// workers were exec'd for good (from a review of this change).
pub fn a_template_killed_with_the_request_unread_costs_no_start() {
    isolated("fork_state::unread_request_role");
}

pub fn unread_request_role() {
    run(async {
        let (tag, template) = serving("unread").await;
        // Stopped, it reads nothing; killed once the request waits.
        assert!(kill(template, nix::sys::signal::Signal::SIGSTOP));
        let killer = std::thread::spawn(move || {
            // The start below is made at once; the request waits then.
            std::thread::sleep(Duration::from_millis(500));
            assert!(kill(template, nix::sys::signal::Signal::SIGKILL));
        });
        let met = tried(&[("AWW_TEMPLATE_TEST", &tag)]).await;
        killer.join().unwrap();
        let (worker, events, pid) = met.unwrap_or_else(|why| panic!("the start it met: {why}"));
        // Exec'd; or, on a machine so loaded that the kill came before the
        // request, forked from a new template: online either way.
        println!("FORK_STATE the start the kill met: forked {}", forked(pid));
        ended(worker, events).await;
        let (next, next_events, pid) = started(StartMethod::ForkServer, &tag).await;
        assert!(forked(pid), "the next forks, from a new template");
        ended(next, next_events).await;
    });
}

/// A start made while this process has all but a few descriptors in use
/// (a server under load at its limit, for a moment), for each few from 0
/// to 7, in a process of its own: it starts or fails, and afterwards, with
/// descriptors to spare, three starts fork again and no child of ours is
/// left unreaped. Before: at 3 to 5 free, the fork server was ended for
/// good (the command refused, its workers exec'd); at 4 free, a fork was
/// left a zombie (from a review of this change).
pub fn a_moment_at_the_descriptor_limit_does_not_end_the_fork_server() {
    let mut broken = Vec::new();
    for free in 0..8 {
        let mut role = role("fork_state::descriptor_limit_role");
        let out = role.env("AWW_FREE", free.to_string()).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let said: Vec<&str> = stdout.lines().filter(|l| l.contains("FORK_STATE")).collect();
        println!("{}", said.join("\n"));
        if !out.status.success() || !stdout.contains("1 passed") {
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            let why = stderr.lines().skip_while(|l| !l.contains("panicked")).nth(1);
            broken.push((free, why.unwrap_or("no panic").to_owned()));
        }
    }
    assert!(broken.is_empty(), "after a moment at the limit: {broken:?}");
}

pub fn descriptor_limit_role() {
    run(async {
        let free: usize = std::env::var("AWW_FREE").unwrap().parse().unwrap();
        let tag = format!("limit-{}", std::process::id());
        let limit = open_fds() as u64 + 200;
        use nix::sys::resource::{setrlimit, Resource};
        setrlimit(Resource::RLIMIT_NOFILE, limit, limit).unwrap();
        let (first, first_events, pid) = started(StartMethod::ForkServer, &tag).await;
        assert!(forked(pid));
        ended(first, first_events).await;
        // Every descriptor taken but `free`.
        let mut held = Vec::new();
        while let Ok(file) = std::fs::File::open("/dev/null") {
            held.push(file);
        }
        held.truncate(held.len().saturating_sub(free));
        let met = tried(&[("AWW_TEMPLATE_TEST", &tag)]).await;
        drop(held);
        let what = match &met {
            Ok((_, _, pid)) => format!("online, forked {}", forked(*pid)),
            Err(why) => format!("given up: {why}"),
        };
        if let Ok((worker, events, _)) = met {
            ended(worker, events).await;
        }
        let mut later = Vec::new();
        for _ in 0..3 {
            let (worker, events, pid) = started(StartMethod::ForkServer, &tag).await;
            later.push(forked(pid));
            ended(worker, events).await;
        }
        let tag = format!("AWW_TEMPLATE_TEST={tag}");
        let only_templates = || children().iter().all(|(pid, _)| templates(&tag, &[]).contains(pid));
        let clean = within(Duration::from_secs(10), only_templates).await;
        println!("FORK_STATE free {free}: the start {what}; later forked {later:?}");
        assert!(later.iter().all(|&f| f), "the fork server ended for good: {later:?}");
        assert!(clean, "children of ours left: {:?}", children());
    });
}

/// A template whose `copy:` packet names the application's own child,
/// sent with more descriptors than a packet carries, then `Failed` for it:
/// the parent neither signals nor reaps that child (never by a bare pid).
/// Before: taken for a fork whose pidfd was cut, it was killed and reaped
/// (from the review of `c9c094a`).
pub fn a_cut_copy_packet_never_kills_a_child_not_the_templates() {
    isolated("fork_state::cut_sibling_role");
}

/// A template that answers `Started` with the pid of the application's
/// own child, no `copy:` packet, and a pidfd of it that it opened itself:
/// that child is not taken for a worker (signalled, reaped). Before, a
/// `Started` without the fork's own word was believed on its pidfd (from
/// the review of `c9c094a`).
pub fn a_pidfd_the_template_opened_never_makes_anothers_child_a_worker() {
    isolated("fork_state::pidfd_sibling_role");
}

async fn own_child_survives(fake: &'static str) {
    let mut own = std::process::Command::new("sleep").arg("2").spawn().unwrap();
    let (rec, mut events) = events::<Test>();
    let _worker = builder(rec)
        .env(FAKE, fake)
        .env("AWW_FAKE_SIBLING", own.id().to_string())
        .restart(fast(Restart::Never))
        .start_method(StartMethod::ForkServer)
        .start()
        .unwrap();
    let outcome = tokio::time::timeout(Duration::from_secs(4), async {
        loop {
            match events.next().await {
                Event::Online => continue,
                Event::GaveUp(g) => break Err(g.reason),
                Event::Exit(e) => break Ok(format!("exited {e:?}")),
                _ => continue,
            }
        }
    })
    .await;
    println!("FORK_STATE {fake}: {outcome:?}");
    let waited = own.wait();
    println!("FORK_STATE {fake}: the application's own: {waited:?}");
    assert!(waited.as_ref().is_ok_and(|s| s.success()), "the application's own: {waited:?}");
}

pub fn cut_sibling_role() {
    run(own_child_survives("cut-failed-sibling"));
}

pub fn pidfd_sibling_role() {
    run(own_child_survives("pidfd-sibling"));
}

/// A template whose every answer carries five descriptors (more than a
/// packet may carry, the parent with descriptors to spare) is a template
/// at fault: refused, not made again at each start, and the descriptors
/// it sent do not stay here. Before: taken for a shortage, a new template
/// each start, each failing, 4 descriptors kept each time (16 -> 36; from
/// the review of `c9c094a`).
pub fn a_template_that_sends_too_many_descriptors_is_refused_and_leaks_none() {
    isolated("fork_state::cut_answer_role");
}

pub fn cut_answer_role() {
    run(async {
        let start = || async {
            let (worker, events, pid) = tried(&[(FAKE, "cut-answer")]).await?;
            ended(worker, events).await;
            Ok::<_, String>(pid)
        };
        let _ = start().await;
        let before = open_fds();
        let mut met = Vec::new();
        for _ in 0..5 {
            met.push(start().await.map(forked));
        }
        let after = open_fds();
        println!("FORK_STATE cut-answer: {met:?}; descriptors {before} -> {after}");
        assert!(met.iter().all(|m| matches!(m, Ok(false))), "exec'd, the template refused: {met:?}");
        assert!(after <= before + 2, "descriptors leaked: {before} -> {after}");
    });
}
