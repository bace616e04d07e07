//! Workers launched by the engines of a cluster, with the recipes of
//! `docs/cluster.md`: a real Slurm of one node on localhost
//! (`common::slurm`: `munged`, `slurmctld`, `slurmd` of the test's own),
//! every worker a job step started by `srun`; and `kubectl exec -i`,
//! played by a stub that behaves as it does (`common::kubectl`). Each
//! worker connects back over TCP or TLS on loopback with the token it read
//! from its launcher's stdin. Where Slurm is not installed (or this is not
//! root) the Slurm tests are skipped, saying so. They need the crate's
//! `tcp` feature (without it they are listed as ignored, saying so), and
//! run over TLS too with its `tls`.

#[cfg(feature = "tcp")]
use std::collections::HashSet;
#[cfg(feature = "tcp")]
use std::time::{Duration, Instant};

#[cfg(feature = "tcp")]
use actix::prelude::*;
#[cfg(feature = "tcp")]
use actix_webworker::{
    Event, Join, Lost, PoolEvent, Restart, RestartPolicy, Transport, WireError, WorkerAddrExt,
    WorkerBuilder, WorkerError, WorkerEvent, WorkerPool,
};
use libtest_mimic::Trial;

#[cfg(feature = "tcp")]
use crate::common::kubectl::KUBECTL_STUB;
#[cfg(feature = "tcp")]
use crate::common::slurm::{self, Cluster};
#[cfg(feature = "tcp")]
use crate::common::*;
#[cfg(feature = "tcp")]
use crate::remote::{secret, LAUNCHER};

pub fn trials() -> Vec<Trial> {
    crate::with_feature!(
        "tcp",
        trials![
            cluster::a_worker_launched_with_srun_is_a_job_step_and_answers,
            cluster::a_cancelled_step_is_a_lost_worker_restarted_as_a_new_step,
            cluster::a_step_that_never_connects_is_timed_out_and_its_job_ends,
            cluster::a_silent_step_is_lost_and_its_job_ends,
            cluster::a_pool_launched_with_srun_has_a_job_step_per_member,
            cluster::no_secret_of_an_srun_launch_is_in_any_argument_environment_or_file,
            cluster::through_kubectl_exec_i_a_worker_answers_and_shows_no_secret,
            cluster::through_kubectl_exec_without_i_the_worker_gets_no_token,
            cluster::a_dead_parents_srun_cancels_its_step,
        ]
    )
}

pub fn roles() -> Vec<Trial> {
    crate::with_feature!("tcp", inner![cluster::srun_parent_role])
}

/// The Slurm recipe: one task on one node, whose stdin `srun` forwards.
#[cfg(feature = "tcp")]
const SRUN: [&str; 4] = ["srun", "-N1", "-n1", "--"];

/// The Kubernetes recipe's arguments after `kubectl`.
#[cfg(feature = "tcp")]
const KUBECTL_EXEC: [&str; 4] = ["exec", "-i", "pod-1", "--"];

/// The cluster of this run; or `None`, the test skipped with the reason,
/// where Slurm is not installed or this is not root. A cluster that does
/// not start where the packages are installed is a failure in CI (which
/// installs them to run these tests) and a skip elsewhere.
#[cfg(feature = "tcp")]
fn slurm() -> Option<&'static Cluster> {
    if let Some(why) = slurm::missing() {
        skip(why);
        return None;
    }
    match slurm::cluster() {
        Ok(cluster) => Some(cluster),
        Err(why) if std::env::var_os("CI").is_some() => panic!("{why}"),
        Err(why) => {
            skip(why);
            None
        }
    }
}

/// The transports each test runs over: TCP, and TLS when built with it.
#[cfg(feature = "tls")]
fn transports() -> Vec<(&'static str, Transport)> {
    vec![("tcp", loopback()), ("tls", Transport::tls("127.0.0.1:0".parse().unwrap()))]
}

#[cfg(all(feature = "tcp", not(feature = "tls")))]
fn transports() -> Vec<(&'static str, Transport)> {
    vec![("tcp", loopback())]
}

/// The test worker, launched with `srun` on `cluster`. `srun`'s own words
/// (a step cancelled) go to the parent's log, not the run's output.
#[cfg(feature = "tcp")]
fn through_srun(cluster: &Cluster, events: Recipient<WorkerEvent<Test>>) -> WorkerBuilder<Test> {
    builder(events)
        .launcher(SRUN)
        .env("SLURM_CONF", &cluster.conf)
        .handshake_timeout(WAIT)
        .capture_output()
}

/// The worker's job step, `(SLURM_JOB_ID, SLURM_STEP_ID)`, as it sees them.
#[cfg(feature = "tcp")]
async fn step_of(worker: &Addr<actix_webworker::Worker<Test>>) -> (String, String) {
    let asked = Getenv(vec!["SLURM_JOB_ID".into(), "SLURM_STEP_ID".into()]);
    match worker.ask(asked).await.unwrap().as_slice() {
        [Some(job), Some(step)] => (job.clone(), step.clone()),
        other => panic!("not a job step: {other:?}"),
    }
}

/// `JOB.STEP`, as `squeue` and `scancel` name a step.
#[cfg(feature = "tcp")]
fn named((job, step): &(String, String)) -> String {
    format!("{job}.{step}")
}

/// Waits (asking `squeue` every 100 ms: Slurm's bookkeeping is no event
/// here) until `step` is no longer listed; whether it went within `WAIT`.
#[cfg(feature = "tcp")]
async fn step_ends(cluster: &Cluster, step: &str) -> bool {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if !cluster.steps().iter().any(|s| s == step) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The short name of process `pid` (`/proc/PID/comm`).
#[cfg(feature = "tcp")]
fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned()
}

/// Over TCP and over TLS: a worker launched with `srun` comes online,
/// answers posts and requests, and runs as a Slurm job step (its
/// `SLURM_JOB_ID` and `SLURM_STEP_ID`, the step listed by `squeue`, its
/// parent `slurmstepd`, not this process). Terminated, it closes, `srun`
/// exits with its 0, and the step is gone.
#[cfg(feature = "tcp")]
pub fn a_worker_launched_with_srun_is_a_job_step_and_answers() {
    let Some(cluster) = slurm() else { return };
    println!("SRUN cluster started in {:?}", cluster.started_in);
    run(async {
        for (what, transport) in transports() {
            let (rec, mut events) = events::<Test>();
            let t0 = Instant::now();
            let worker = through_srun(cluster, rec).transport(transport).start().unwrap();
            events.online().await;
            let online = t0.elapsed();
            assert_eq!(worker.ask(Sum(vec![20, 22])).await.unwrap(), 42, "{what}");
            worker.post(Cmd::Echo(0));
            assert_eq!(events.message().await.data, Reply::Echo(0), "{what}");
            let step = step_of(&worker).await;
            assert_eq!(step.1, "0", "{what}: srun's one step of its own job");
            let listed = cluster.steps();
            assert!(listed.contains(&named(&step)), "{what}: {step:?} not in {listed:?}");
            let pid = worker.ask(WhichPid).await.unwrap();
            let up = parent_of(pid).unwrap_or(0);
            assert_eq!(comm(up), "slurmstepd", "{what}: the worker's parent {up}");
            println!("SRUN {what}: online {online:?} after start, as step {}", named(&step));
            worker.terminate();
            let status = events.exit().await;
            assert!(status.success(), "{what}: {status}");
            assert!(step_ends(cluster, &named(&step)).await, "{what}: {step:?} outlived srun");
        }
    });
}

/// `scancel` of a worker's step: Slurm kills the worker, its connection
/// ends without its close, and the parent says so: a request in flight
/// fails with `WorkerError::Exited`, the exit is `Lost::Disconnected` (a
/// failure), and the policy (`Restart::OnFailure`) starts a new `srun`,
/// whose step answers. From outside an allocation that is a new job; from
/// inside one, a new step of the same job.
#[cfg(feature = "tcp")]
pub fn a_cancelled_step_is_a_lost_worker_restarted_as_a_new_step() {
    let Some(cluster) = slurm() else { return };
    run(async {
        let (first, second) = cancelled_and_back(cluster, &SRUN, &[]).await;
        assert_ne!(second.0, first.0, "a new srun, a new job");

        let allocation = Allocation::make(cluster, 2);
        let inside = ["srun", "-N1", "-n1", "--exact", "--"];
        let env = [("SLURM_JOB_ID", allocation.job.as_str())];
        let (first, second) = cancelled_and_back(cluster, &inside, &env).await;
        assert_eq!((&first.0, &second.0), (&allocation.job, &allocation.job));
        assert_ne!(first.1, second.1, "a new step of the allocation");
    });
}

/// Starts a worker with `launcher` (and `env`), `scancel`s its step, and
/// checks what the parent says (see
/// `a_cancelled_step_is_a_lost_worker_restarted_as_a_new_step`); the steps
/// before and after.
#[cfg(feature = "tcp")]
async fn cancelled_and_back(
    cluster: &Cluster,
    launcher: &[&str],
    env: &[(&str, &str)],
) -> ((String, String), (String, String)) {
    let (rec, mut events) = events::<Test>();
    let mut builder = through_srun(cluster, rec).launcher(launcher);
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let worker =
        builder.transport(loopback()).restart(fast(Restart::OnFailure)).start().unwrap();
    let first = step_of(&worker).await;
    let held = worker.ask(Never);
    // Answered after it: `Never` is in the worker.
    assert_eq!(worker.ask(Sum(vec![1])).await.unwrap(), 1);
    let t0 = Instant::now();
    cluster.run("scancel", &[&named(&first)]).unwrap();
    let status = events.exit().await;
    let lost = t0.elapsed();
    assert_eq!(status.lost, Some(Lost::Disconnected), "{status:?}");
    assert!(!status.success(), "{status}");
    let failed = held.await;
    assert!(matches!(failed, Err(WorkerError::Exited(ref s)) if !s.success()), "{failed:?}");
    events.online().await;
    let back = t0.elapsed();
    let second = step_of(&worker).await;
    assert_ne!(second, first, "a new step");
    assert!(cluster.steps().contains(&named(&second)), "{second:?} runs");
    assert!(step_ends(cluster, &named(&first)).await, "{first:?} was cancelled");
    assert_eq!(worker.ask(Sum(vec![2, 3])).await.unwrap(), 5);
    println!(
        "SCANCEL {launcher:?} step {}: the exit told after {lost:?} ({status}), back online as \
         step {} after {back:?}",
        named(&first),
        named(&second)
    );
    worker.terminate();
    events.successful_exit().await;
    (first, second)
}

/// A step whose program never connects (`sleep 600` in the worker's
/// place): on the handshake timeout its `srun` is sent SIGTERM, on which
/// it cancels its job (SIGKILL, as before, left the job running: still
/// there 60 s later). Asserted: the job seen running before the timeout,
/// gone from `squeue` after it.
#[cfg(feature = "tcp")]
pub fn a_step_that_never_connects_is_timed_out_and_its_job_ends() {
    let Some(cluster) = slurm() else { return };
    let name = format!("aww-never-{}", std::process::id());
    let named = format!("--job-name={name}");
    let jobs = || cluster.run("squeue", &["-h", "-n", &name, "-o", "%i"]).unwrap_or_default();
    run(async {
        let (rec, mut events) = events::<Test>();
        let limit = Duration::from_secs(10);
        let worker = through_srun(cluster, rec)
            .launcher(["srun", "-N1", "-n1", &named, "--"])
            .program("/bin/sleep")
            .args(["600"])
            .transport(loopback())
            .handshake_timeout(limit)
            .start()
            .unwrap();
        let (mut seen, mut timed_out) = (false, false);
        let status = loop {
            tokio::select! {
                ev = events.next() => match ev {
                    Event::WireError(WireError::HandshakeTimeout(_)) => timed_out = true,
                    Event::Exit(status) => break status,
                    _ => {}
                },
                // Slurm's account is no event: asked every 200 ms.
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    seen |= !jobs().trim().is_empty();
                }
            }
        };
        let t0 = Instant::now();
        assert!(timed_out, "the exit came without the timeout: {status}");
        // `srun` says 137 (its step's SIGKILL) once it has cancelled it.
        assert_eq!(status.code, Some(137), "srun cancelled its job: {status}");
        assert!(seen, "the job {name} never ran within the {limit:?} of the handshake");
        let deadline = t0 + WAIT;
        while !jobs().trim().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let left = jobs();
        println!("SRUN_TIMEOUT the job gone {:?} after srun was told to go", t0.elapsed());
        assert!(left.trim().is_empty(), "the job outlived its srun: {left}");
        drop(worker);
    });
}

/// A worker that goes silent in its step (stopped with SIGSTOP, as on a
/// node that froze): its heartbeat finds it lost (`Lost::Silent`), and
/// its step ends too (`srun` is asked to go, and cancels it), where a
/// SIGKILL to `srun` would leave the job holding its CPU for good.
#[cfg(feature = "tcp")]
pub fn a_silent_step_is_lost_and_its_job_ends() {
    let Some(cluster) = slurm() else { return };
    run(async {
        let (rec, mut events) = events::<Test>();
        let lost_after = Duration::from_secs(2);
        let worker = through_srun(cluster, rec)
            .transport(loopback())
            .heartbeat(Duration::from_millis(100), lost_after)
            .start()
            .unwrap();
        let step = named(&step_of(&worker).await);
        let pid = worker.ask(WhichPid).await.unwrap();
        kill(pid, Signal::SIGSTOP);
        let t0 = Instant::now();
        let mut silent = false;
        let status = loop {
            match events.next().await {
                Event::WireError(WireError::Silent(_)) => silent = true,
                Event::Exit(status) => break status,
                _ => {}
            }
        };
        let told = t0.elapsed();
        assert!(silent, "the exit came without the silence: {status}");
        assert_eq!(status.lost, Some(Lost::Silent), "{status:?}");
        let ended = step_ends(cluster, &step).await;
        println!(
            "SRUN_SILENT step {step}: lost {told:?} after it stopped ({status}), the step gone \
             after {:?}: {ended}",
            t0.elapsed()
        );
        if !ended {
            kill(pid, Signal::SIGKILL);
        }
        assert!(ended, "the step {step} of a lost worker still holds its CPU");
        drop(worker);
    });
}

/// An allocation of `n` CPUs on `cluster` (`salloc --no-shell`), as a
/// batch script or `salloc` holds one for the parent; cancelled on drop.
#[cfg(feature = "tcp")]
struct Allocation<'a> {
    cluster: &'a Cluster,
    job: String,
}

#[cfg(feature = "tcp")]
impl<'a> Allocation<'a> {
    fn make(cluster: &'a Cluster, n: usize) -> Allocation<'a> {
        let out = cluster
            .command("salloc")
            .args(["--no-shell", "-N1", &format!("-n{n}"), "-J", "aww-allocation"])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        let job = said.split_whitespace().last().filter(|_| said.contains("Granted job allocation"));
        Allocation { cluster, job: job.unwrap_or_else(|| panic!("no allocation: {said}")).into() }
    }
}

#[cfg(feature = "tcp")]
impl Drop for Allocation<'_> {
    fn drop(&mut self) {
        let _ = self.cluster.run("scancel", &[&self.job]);
    }
}

/// The steps of a pool of three launched with `launcher` (and `env`) on
/// `cluster`: once all three are online, a batch of 300 asks is answered,
/// by all three, each from a job step of its own that `squeue` lists.
/// Terminated, every member closes and every step ends.
#[cfg(feature = "tcp")]
async fn pool_steps(cluster: &Cluster, launcher: &[&str], env: &[(&str, &str)]) -> Vec<String> {
    let (recipient, mut rx) = pool_events();
    let t0 = Instant::now();
    let mut builder = WorkerPool::<Test>::builder()
        .entry("test")
        .env("RUST_BACKTRACE", "0")
        .restart(RestartPolicy::never())
        .events(recipient)
        .launcher(launcher)
        .env("SLURM_CONF", &cluster.conf)
        .handshake_timeout(WAIT)
        .capture_output()
        .transport(loopback())
        .size(3);
    for (k, v) in env {
        builder = builder.env(k, v);
    }
    let pool = builder.start().unwrap();
    let mut online = 0;
    while online < 3 {
        let ev = tokio::time::timeout(WAIT, rx.recv()).await.expect("members in time");
        match ev.expect("events go on") {
            PoolEvent::Member { event, .. } if matches!(event.kind, Event::Online) => online += 1,
            PoolEvent::Member { event, .. } if matches!(event.kind, Event::Exit(_)) => {
                panic!("a member exited: {:?}", event.kind)
            }
            _ => {}
        }
    }
    let all_online = t0.elapsed();
    let asked = Getenv(vec!["SLURM_JOB_ID".into(), "SLURM_STEP_ID".into()]);
    let answers = futures_util::future::join_all((0..300).map(|_| pool.ask(asked.clone())));
    let mut steps = HashSet::new();
    for answer in answers.await {
        match answer.unwrap().as_slice() {
            [Some(job), Some(step)] => steps.insert(format!("{job}.{step}")),
            other => panic!("not a job step: {other:?}"),
        };
    }
    assert_eq!(steps.len(), 3, "each member a step of its own: {steps:?}");
    let listed = cluster.steps();
    assert!(steps.iter().all(|s| listed.contains(s)), "{steps:?} not all in {listed:?}");
    let mut steps: Vec<String> = steps.into_iter().collect();
    steps.sort();
    println!("SRUN_POOL {launcher:?}: 3 members online {all_online:?} after start, steps {steps:?}");
    pool.terminate();
    assert!(pool.send(Join).await.unwrap().success());
    for step in &steps {
        assert!(step_ends(cluster, step).await, "{step} outlived the pool");
    }
    steps
}

/// A pool of three launched with `srun`: from outside any allocation
/// (a login node), each member is a job of its own (step 0 of each);
/// from inside one (an allocation of three CPUs, its `SLURM_JOB_ID` in
/// the parent's environment as `sbatch` and `salloc` set it), each is a
/// step of that job, with `--exact` (a step takes only what it asks for,
/// so that three run at once).
#[cfg(feature = "tcp")]
pub fn a_pool_launched_with_srun_has_a_job_step_per_member() {
    let Some(cluster) = slurm() else { return };
    run(async {
        let steps = pool_steps(cluster, &SRUN, &[]).await;
        let jobs: HashSet<&str> = steps.iter().filter_map(|s| s.split('.').next()).collect();
        assert_eq!(jobs.len(), 3, "a job each: {steps:?}");

        let allocation = Allocation::make(cluster, 3);
        let inside = ["srun", "-N1", "-n1", "--exact", "--"];
        let steps = pool_steps(cluster, &inside, &[("SLURM_JOB_ID", &allocation.job)]).await;
        let of_it = |s: &String| s.split('.').next() == Some(allocation.job.as_str());
        assert!(steps.iter().all(of_it), "steps of job {}: {steps:?}", allocation.job);
    });
}

/// Every process of the host whose arguments or environment show a
/// secret or a secret's name: `(pid, comm)`; and how many were read.
#[cfg(feature = "tcp")]
pub(crate) fn showing(secrets: &[String]) -> (Vec<(u32, String)>, usize) {
    let names = ["ACTIX_WEBWORKER_TOKEN", "ACTIX_WEBWORKER_TLS_PIN"];
    let (mut found, mut read) = (Vec::new(), 0);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let seen = shown(p);
        read += 1;
        let needles = names.iter().copied().chain(secrets.iter().map(String::as_str));
        if needles.into_iter().any(|n| seen.contains(n)) {
            found.push((p, comm(p)));
        }
    }
    (found, read)
}

/// The files under `dir` (recursively) that hold one of `secrets`.
#[cfg(feature = "tcp")]
fn files_holding(dir: &std::path::Path, secrets: &[String]) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return found };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(files_holding(&path, secrets));
        } else if let Ok(bytes) = std::fs::read(&path) {
            let holds = |s: &String| bytes.windows(s.len()).any(|w| w == s.as_bytes());
            if secrets.iter().any(holds) {
                found.push(path);
            }
        }
    }
    found
}

/// A file a launcher writes for the test, removed however the test ends.
#[cfg(feature = "tcp")]
pub(crate) struct Note(pub(crate) std::path::PathBuf);

#[cfg(feature = "tcp")]
impl Note {
    pub(crate) fn new(what: &str) -> Note {
        Note(std::env::temp_dir().join(format!("aww-{what}-{}", std::process::id())))
    }
}

#[cfg(feature = "tcp")]
impl Drop for Note {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The secrets a recording launcher (the test binary, `AWW_LAUNCHER=record`,
/// or the kubectl stub with `AWW_NOTE`) wrote to `note`: the token, and
/// over TLS the pin.
#[cfg(feature = "tcp")]
pub(crate) fn recorded(note: &std::path::Path, tls: bool) -> Vec<String> {
    let block = std::fs::read_to_string(note).unwrap();
    let _ = std::fs::remove_file(note);
    let keys = ["ACTIX_WEBWORKER_TOKEN", "ACTIX_WEBWORKER_TLS_PIN"];
    let secrets: Vec<String> = keys.iter().filter_map(|k| secret(&block, k)).collect();
    assert_eq!(secrets.len(), 1 + usize::from(tls), "{block}");
    assert!(secrets.iter().all(|s| s.len() == 64), "{secrets:?}");
    secrets
}

/// Over TCP and TLS, launched with `srun` (behind a launcher that records
/// the secrets block it forwards, and keeps `srun` under a shell): once
/// the worker answers, no process of the host (`srun`, `slurmstepd`, the
/// worker, the daemons) shows the token or the pin, or their names, in
/// its arguments or environment; nor does Slurm's account of the job
/// (`squeue`, `scontrol show job` and `step`), nor any file of the
/// cluster's (state, spool, logs).
#[cfg(feature = "tcp")]
pub fn no_secret_of_an_srun_launch_is_in_any_argument_environment_or_file() {
    let Some(cluster) = slurm() else { return };
    let note = Note::new("srun-secrets");
    let exe = std::env::current_exe().unwrap().display().to_string();
    let launcher: Vec<String> = [exe.as_str()].into_iter().chain(SRUN).map(String::from).collect();
    run(async {
        for (what, transport) in transports() {
            let (rec, mut events) = events::<Test>();
            let worker = through_srun(cluster, rec)
                .launcher(launcher.clone())
                .env(LAUNCHER, "record")
                .env("AWW_NOTE", &note.0)
                .transport(transport)
                .start()
                .unwrap();
            let step = named(&step_of(&worker).await);
            let secrets = recorded(&note.0, what == "tls");
            let pid = worker.ask(WhichPid).await.unwrap();
            let (found, read) = showing(&secrets);
            assert!(found.is_empty(), "{what}: processes show a secret: {found:?}");
            // Those that carried it were there to be read.
            let alive: HashSet<String> = std::fs::read_dir("/proc")
                .unwrap()
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
                .map(comm)
                .collect();
            for carrier in ["srun", "slurmstepd", "slurmd", "slurmctld", "munged"] {
                assert!(alive.contains(carrier), "{what}: no {carrier} was searched");
            }
            assert!(!shown(pid).is_empty(), "{what}: the worker was searched");
            let mut told = String::new();
            for args in [
                &["squeue", "-h", "-s", "-o", "%i %j"][..],
                &["squeue", "-h", "-o", "%i %j %o %k"],
                &["scontrol", "show", "job", "-d"],
                &["scontrol", "show", "step", &step],
            ] {
                told += &cluster.run(args[0], &args[1..]).unwrap();
            }
            assert!(!secrets.iter().any(|s| told.contains(s.as_str())), "{what}: {told}");
            let files = files_holding(&cluster.dir, &secrets);
            assert!(files.is_empty(), "{what}: files hold a secret: {files:?}");
            let job = step.split('.').next().unwrap_or_default();
            let shows = cluster.run("squeue", &["-h", "-j", job, "-o", "%i %j %o"]).unwrap();
            println!(
                "SRUN_SECRETS {what}: {read} processes and the cluster's files searched, {} \
                 secrets found nowhere; squeue shows the job as {:?}",
                secrets.len(),
                shows.trim()
            );
            worker.terminate();
            events.successful_exit().await;
        }
    });
}

/// The test worker launched through the kubectl stub, `exec` with `args`.
#[cfg(feature = "tcp")]
fn through_kubectl(events: Recipient<WorkerEvent<Test>>, args: &[&str]) -> WorkerBuilder<Test> {
    let exe = std::env::current_exe().unwrap().display().to_string();
    let launcher: Vec<String> = [exe.as_str()].iter().chain(args).map(|a| a.to_string()).collect();
    // Its "command terminated with exit code N" goes to the parent's log.
    builder(events)
        .launcher(launcher)
        .env(KUBECTL_STUB, "1")
        .handshake_timeout(WAIT)
        .capture_output()
}

/// Through `kubectl exec -i pod-1 --` (the stub: a new process in a
/// session of its own, the pod's environment, its stdin streamed), over
/// TCP and TLS: the worker answers, sees the pod's environment and none of
/// the caller's, and no process shows the token or the pin; the exit code
/// comes back through it (lost: the worker ended without its close).
#[cfg(feature = "tcp")]
pub fn through_kubectl_exec_i_a_worker_answers_and_shows_no_secret() {
    crate::common::kubectl::parse_cases().unwrap();
    let note = Note::new("kubectl-secrets");
    run(async {
        for (what, transport) in transports() {
            let (rec, mut events) = events::<Test>();
            let t0 = Instant::now();
            let worker = through_kubectl(rec, &KUBECTL_EXEC)
                .env("AWW_NOTE", &note.0)
                .transport(transport)
                .start()
                .unwrap();
            assert_eq!(worker.ask(Sum(vec![4, 5])).await.unwrap(), 9, "{what}");
            let online = t0.elapsed();
            let secrets = recorded(&note.0, what == "tls");
            let asked = ["HOSTNAME", "RUST_BACKTRACE", KUBECTL_STUB].map(String::from).to_vec();
            let env = worker.ask(Getenv(asked)).await.unwrap();
            assert_eq!(env, [Some("pod-1".to_owned()), None, None], "{what}: the pod's own");
            let pid = worker.ask(WhichPid).await.unwrap();
            let stub = parent_of(pid).unwrap();
            assert_eq!(parent_of(stub), Some(std::process::id()), "{what}: a new process");
            // SAFETY: getsid has no preconditions.
            let (its, ours) = unsafe { (libc::getsid(pid as i32), libc::getsid(0)) };
            assert_ne!(its, ours, "{what}: the worker runs in a session of its own");
            let (found, read) = showing(&secrets);
            assert!(found.is_empty(), "{what}: processes show a secret: {found:?}");
            println!(
                "KUBECTL {what}: answered {online:?} after start; {read} processes searched, {} \
                 secrets found nowhere",
                secrets.len()
            );
            worker.post(Cmd::Exit(7));
            let status = events.exit().await;
            assert_eq!((status.code, status.lost), (Some(7), Some(Lost::Disconnected)), "{what}");
        }
    });
}

/// Through `kubectl exec pod-1 --`, without `-i`: the command gets no
/// stdin, so the worker has no token. It says so and exits with 64, which
/// `kubectl` passes on; it never comes online.
#[cfg(feature = "tcp")]
pub fn through_kubectl_exec_without_i_the_worker_gets_no_token() {
    run(async {
        let (rec, mut events) = events::<Test>();
        let worker = through_kubectl(rec, &["exec", "pod-1", "--"])
            .transport(loopback())
            .start()
            .unwrap();
        let status = loop {
            match events.next().await {
                Event::Online => panic!("online without its token"),
                Event::Exit(status) => break status,
                _ => {}
            }
        };
        assert_eq!(status.code, Some(64), "{status}");
        drop(worker);
    });
}

/// The parent side of `a_dead_parents_srun_cancels_its_step`: starts the
/// test worker through `srun` (the cluster's configuration in
/// `AWW_SLURM_CONF`), has it block in a handler for 10 minutes (it reads
/// nothing meanwhile, so the end of its connection cannot end it), prints
/// its step and pid, and waits to be killed.
#[cfg(feature = "tcp")]
pub fn srun_parent_role() {
    let conf = std::env::var_os("AWW_SLURM_CONF").expect("AWW_SLURM_CONF");
    run(async move {
        let (rec, mut events) = events::<Test>();
        let worker = builder(rec)
            .launcher(SRUN)
            .env("SLURM_CONF", &conf)
            .transport(loopback())
            .handshake_timeout(WAIT)
            .capture_output()
            .start()
            .unwrap();
        events.online().await;
        let step = step_of(&worker).await;
        let pid = worker.ask(WhichPid).await.unwrap();
        worker.post(Cmd::Busy(600_000));
        assert_eq!(events.message().await.data, Reply::Busy);
        println!("STEP={}", named(&step));
        println!("WORKER_PID={pid}");
        std::future::pending::<()>().await;
    });
}

/// docs/cluster.md, Slurm, Ending: "A parent that dies leaves each `srun`
/// a SIGTERM (the launcher's parent death signal): `srun` cancels its
/// step." A parent (a process of its own) SIGKILLed while its worker, a
/// step, blocks in a handler: the step is gone, and the worker with it,
/// long before the handler would end (without the signal, `srun` would
/// wait for its task, and the task for its handler's 10 minutes).
#[cfg(feature = "tcp")]
pub fn a_dead_parents_srun_cancels_its_step() {
    use std::io::BufRead;
    let Some(cluster) = slurm() else { return };
    let mut parent = role("cluster::srun_parent_role")
        .env("AWW_SLURM_CONF", &cluster.conf)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = std::io::BufReader::new(parent.stdout.take().unwrap());
    // Killed however this test ends.
    struct Killed(std::process::Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut parent = Killed(parent);
    let (mut step, mut pid) = (None, None);
    for line in stdout.lines() {
        let line = line.unwrap();
        // (libtest's "test NAME ... " comes before the first line)
        if let Some((_, s)) = line.split_once("STEP=") {
            step = Some(s.trim().to_owned());
        }
        if let Some((_, p)) = line.split_once("WORKER_PID=") {
            pid = Some(p.trim().parse::<u32>().unwrap());
            break;
        }
    }
    let (step, pid) = (step.expect("the parent printed its step"), pid.expect("and its pid"));
    assert!(cluster.steps().contains(&step), "{step} not listed: {:?}", cluster.steps());
    let t0 = Instant::now();
    parent.0.kill().unwrap();
    parent.0.wait().unwrap();
    run(async {
        let ended = step_ends(cluster, &step).await;
        let took = t0.elapsed();
        let gone = wait_gone(pid, WAIT);
        if !gone {
            // Not to leave it blocking for 10 minutes.
            let _ = cluster.run("scancel", &[&step]);
            kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        println!("SRUN_PARENT_DEATH step {step} gone {took:?} after its parent's SIGKILL");
        assert!(ended, "step {step} outlived its parent by {took:?}");
        assert!(gone, "worker {pid} outlived its parent's death");
    });
}
