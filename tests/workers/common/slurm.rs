//! A real Slurm cluster of one node on localhost, for the tests that launch
//! workers with `srun` (`cluster.rs`): `munged`, `slurmctld` and `slurmd`
//! with a key, a configuration, state and spool directories of the test's
//! own, in a temporary directory.
//!
//! The daemons are kept by a process of their own, the keeper: this test
//! binary run with `AWW_SLURM_KEEPER` set (see [`run_if_keeper`]). It is
//! the subreaper of everything it starts, so that the job steps' processes
//! (`slurmstepd` and the workers under it, which `slurmd` detaches) stay
//! in its tree. It starts the cluster, says `READY dir` on its stdout, and
//! waits for its stdin to end: when the test run is over ([`shut_down`])
//! or when the run dies, however it dies. Then it kills every process of
//! its tree, waits until none is left, and removes the directory.
//!
//! One cluster serves the whole run: the first test that asks for it
//! ([`cluster`]) starts it, the others wait for it. Where the packages are
//! missing (`slurm-wlm`, `munge`) or this is not root, it says why, and
//! the tests skip themselves with that reason.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Set in the environment of the keeper.
const KEEPER: &str = "AWW_SLURM_KEEPER";

/// How long the keeper waits for each daemon to come up, and for its tree
/// to go at the end.
const PATIENCE: Duration = Duration::from_secs(90);

/// The programs the cluster needs (packages `slurm-wlm` and `munge`).
const TOOLS: &[&str] =
    &["munged", "slurmctld", "slurmd", "srun", "salloc", "sinfo", "squeue", "scontrol", "scancel"];

/// The cluster of this run, as the tests use it.
pub struct Cluster {
    /// Its temporary directory: configuration, key, state, logs.
    pub dir: PathBuf,
    /// Its `slurm.conf`: `SLURM_CONF` for every client (`srun`, `squeue`).
    pub conf: PathBuf,
    /// How long it took to start, from the keeper's start to an idle node.
    pub started_in: Duration,
    keeper: Mutex<Option<Child>>,
}

static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// The cluster, started by the first caller; or why there is none here.
pub fn cluster() -> Result<&'static Cluster, String> {
    CLUSTER.get_or_init(start).as_ref().map_err(Clone::clone)
}

/// Stops the cluster, if one was started, and waits until its keeper has
/// taken everything down: called by `main` once every test has run.
pub fn shut_down() {
    let Some(Ok(cluster)) = CLUSTER.get() else { return };
    let Some(mut keeper) = cluster.keeper.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        return;
    };
    drop(keeper.stdin.take());
    if !super::wait_gone(keeper.id(), PATIENCE + Duration::from_secs(30)) {
        eprintln!("the Slurm keeper {} did not stop: killed", keeper.id());
        let _ = keeper.kill();
    }
    let _ = keeper.wait();
}

impl Cluster {
    /// A Slurm client command (`squeue`, `scancel`) of this cluster.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("SLURM_CONF", &self.conf).stdin(Stdio::null());
        cmd
    }

    /// Runs a client command; its standard output, or what went wrong.
    pub fn run(&self, program: &str, args: &[&str]) -> Result<String, String> {
        let out = self.command(program).args(args).output().map_err(|e| e.to_string())?;
        match out.status.success() {
            true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
            false => Err(format!(
                "{program} {args:?}: {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
        }
    }

    /// The job steps running now, as `JOB.STEP`.
    pub fn steps(&self) -> Vec<String> {
        let listed = self.run("squeue", &["-h", "-s", "-o", "%i"]).unwrap_or_default();
        listed.lines().map(|l| l.trim().to_owned()).filter(|l| !l.is_empty()).collect()
    }
}

/// Why the cluster cannot run here, if it cannot.
pub fn missing() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root, so no Slurm cluster of the test's own can be started".into());
    }
    let absent: Vec<&str> = TOOLS.iter().copied().filter(|tool| find(tool).is_none()).collect();
    match absent.as_slice() {
        [] => None,
        _ => Some(format!(
            "no {} (packages slurm-wlm and munge), so srun was not tried",
            absent.join(", ")
        )),
    }
}

/// Where `tool` is: on the `PATH`, or in the `sbin` directories a
/// non-login shell may not have there.
pub fn find(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(["/usr/sbin", "/sbin"].map(PathBuf::from));
    dirs.map(|d| d.join(tool)).find(|p| p.is_file())
}

/// Starts the keeper, waits for its word, then until the node is idle.
fn start() -> Result<Cluster, String> {
    if let Some(why) = missing() {
        return Err(why);
    }
    let t0 = Instant::now();
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut keeper = Command::new(exe)
        .env(KEEPER, "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("the Slurm keeper did not start: {e}"))?;
    let said = keeper.stdout.take().map(std::io::BufReader::new);
    let mut line = String::new();
    let read = said.map(|mut s| s.read_line(&mut line));
    let words: Vec<&str> = line.split_whitespace().collect();
    let (dir, daemons) = match words.as_slice() {
        ["READY", dir, daemons @ ..] => (
            PathBuf::from(dir),
            daemons.iter().filter_map(|p| p.parse().ok()).collect::<Vec<u32>>(),
        ),
        _ => {
            drop(keeper.stdin.take());
            let _ = keeper.wait();
            return Err(format!(
                "no Slurm cluster could be started here ({read:?}): {}",
                line.trim()
            ));
        }
    };
    let cluster = Cluster {
        conf: dir.join("slurm.conf"),
        dir,
        started_in: Duration::ZERO,
        keeper: Mutex::new(Some(keeper)),
    };
    // The keeper reaps what it starts, so it cannot wait for a client
    // command of its own: the node's state is asked for from here.
    let idle = || cluster.run("sinfo", &["-h", "-N", "-o", "%t"]).is_ok_and(|s| s.trim() == "idle");
    let up = || daemons.iter().all(|&pid| alive(pid));
    if let Err(why) = awaited("slurmctld and slurmd", &cluster.dir, || match up() {
        true => Some(idle()),
        false => None,
    }) {
        let mut keeper = cluster.keeper.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(mut keeper) = keeper.take() {
            drop(keeper.stdin.take());
            let _ = keeper.wait();
        }
        return Err(why);
    }
    Ok(Cluster { started_in: t0.elapsed(), ..cluster })
}

/// When this test binary is the keeper (`AWW_SLURM_KEEPER` set): starts
/// the cluster, keeps it until its stdin ends, takes it all down, exits.
pub fn run_if_keeper() {
    if std::env::var_os(KEEPER).is_none() {
        return;
    }
    // SAFETY: prctl with an integer argument; this process becomes the
    // reaper of the orphans of its tree (a job step's `slurmstepd`).
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    let dir = std::env::temp_dir().join(format!("aww-slurm-{}", std::process::id()));
    let started = Daemons::start(&dir);
    let mut out = std::io::stdout();
    let code = match &started {
        Ok(daemons) => {
            let pids = daemons.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(" ");
            let _ = writeln!(out, "READY {} {pids}", dir.display());
            let _ = out.flush();
            // Until the test run is over, or gone.
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
            let_clients_finish(&dir.join("slurm.conf"));
            0
        }
        Err(why) => {
            let _ = writeln!(out, "FAILED {}", why.replace('\n', " | "));
            1
        }
    };
    // Taken down (on drop) however the start went.
    drop(started);
    let left = tree();
    if !left.is_empty() {
        eprintln!("the Slurm keeper could not end {left:?}");
    }
    std::process::exit(code);
}

/// The daemons of the cluster, up; their whole tree is taken down on drop.
struct Daemons {
    dir: PathBuf,
    /// Those of `slurmctld` and `slurmd`.
    pids: Vec<u32>,
}

impl Drop for Daemons {
    fn drop(&mut self) {
        let _ = take_down_tree();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Daemons {
    /// Writes the key and configuration, starts `munged` and waits for its
    /// socket, then starts `slurmctld` and `slurmd`.
    fn start(dir: &Path) -> Result<Daemons, String> {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::remove_dir_all(dir);
        let mut daemons = Daemons { dir: dir.to_owned(), pids: Vec::new() };
        let io = |e: std::io::Error| format!("{}: {e}", dir.display());
        for sub in ["state", "spool"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(io)?;
        }
        // munged wants every user able to reach its socket (execute on
        // the directory), and nobody else able to write where it keeps
        // its key.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).map_err(io)?;
        let mut key = vec![0u8; 1024];
        std::fs::File::open("/dev/urandom").and_then(|mut r| r.read_exact(&mut key)).map_err(io)?;
        let key_file = dir.join("munge.key");
        std::fs::write(&key_file, key).map_err(io)?;
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o400)).map_err(io)?;
        let socket = dir.join("munge.socket");
        let p = |name: &str| dir.join(name).display().to_string();
        let munged = daemon(
            dir,
            "munged",
            &[
                "-F".into(),
                format!("--socket={}", socket.display()),
                format!("--key-file={}", key_file.display()),
                format!("--pid-file={}", p("munged.pid")),
                format!("--seed-file={}", p("munged.seed")),
                format!("--log-file={}", p("munged.log")),
            ],
        )?;
        // From here on the keeper has children: reap them, and the
        // orphans it adopts, as they end.
        std::thread::spawn(reap);
        awaited("munged", dir, || alive(munged).then(|| socket.exists()))?;
        std::fs::write(dir.join("slurm.conf"), configuration(dir, &socket)).map_err(io)?;
        let conf = p("slurm.conf");
        daemons.pids.push(daemon(dir, "slurmctld", &["-D".into(), "-f".into(), conf.clone()])?);
        let slurmd = ["-D", "-N", "localhost", "-f", &conf].map(String::from);
        daemons.pids.push(daemon(dir, "slurmd", &slurmd)?);
        Ok(daemons)
    }
}

/// The cluster's `slurm.conf`: one node, `localhost`, with 16 CPUs (more
/// than this machine has: a worker is mostly idle, and the tests run
/// several at once), no cgroups, no accounting, everything in `dir`.
fn configuration(dir: &Path, socket: &Path) -> String {
    let p = |name: &str| dir.join(name).display().to_string();
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(0)
    };
    let (ctld_port, slurmd_port) = (free_port(), free_port());
    format!(
        "ClusterName=aww\n\
         SlurmctldHost=localhost(127.0.0.1)\n\
         SlurmctldPort={ctld_port}\n\
         SlurmdPort={slurmd_port}\n\
         SlurmUser=root\n\
         SlurmdUser=root\n\
         AuthType=auth/munge\n\
         CredType=cred/munge\n\
         AuthInfo=socket={socket}\n\
         StateSaveLocation={state}\n\
         SlurmdSpoolDir={spool}\n\
         SlurmctldPidFile={ctld_pid}\n\
         SlurmdPidFile={slurmd_pid}\n\
         SlurmctldLogFile={ctld_log}\n\
         SlurmdLogFile={slurmd_log}\n\
         ProctrackType=proctrack/linuxproc\n\
         TaskPlugin=task/none\n\
         SelectType=select/cons_tres\n\
         SelectTypeParameters=CR_Core\n\
         SwitchType=switch/none\n\
         MpiDefault=none\n\
         JobAcctGatherType=jobacct_gather/none\n\
         AccountingStorageType=accounting_storage/none\n\
         ReturnToService=2\n\
         SlurmdParameters=config_overrides\n\
         KillWait=2\n\
         NodeName=localhost NodeAddr=127.0.0.1 CPUs=16 State=UNKNOWN\n\
         PartitionName=aww Nodes=localhost Default=YES MaxTime=INFINITE State=UP\n",
        socket = socket.display(),
        state = p("state"),
        spool = p("spool"),
        ctld_pid = p("slurmctld.pid"),
        slurmd_pid = p("slurmd.pid"),
        ctld_log = p("slurmctld.log"),
        slurmd_log = p("slurmd.log"),
    )
}

/// Starts `name` in the foreground, its output in `dir/name.out`; dies
/// with the keeper. Its pid.
fn daemon(dir: &Path, name: &str, args: &[String]) -> Result<u32, String> {
    use std::os::unix::process::CommandExt;
    let program = find(name).ok_or_else(|| format!("{name} is not installed"))?;
    let out = std::fs::File::create(dir.join(format!("{name}.out"))).map_err(|e| e.to_string())?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: prctl only, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    // The reaper collects it: the `Child` is not waited on.
    let child = cmd.spawn().map_err(|e| format!("{name} did not start: {e}"))?;
    Ok(child.id())
}

/// Waits (checking every 50 ms: a daemon's readiness is no event this
/// process can wait on) until `ready` says `Some(true)`, for at most
/// [`PATIENCE`]; `None` is a daemon gone. If it never is, says so with
/// what the daemons wrote.
fn awaited(what: &str, dir: &Path, mut ready: impl FnMut() -> Option<bool>) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    let mut gone = false;
    while Instant::now() < deadline {
        match ready() {
            Some(true) => return Ok(()),
            Some(false) => std::thread::sleep(Duration::from_millis(50)),
            None => {
                gone = true;
                break;
            }
        }
    }
    let said: Vec<String> = ["munged", "slurmctld", "slurmd"]
        .iter()
        .filter_map(|d| {
            let text = std::fs::read_to_string(dir.join(format!("{d}.out"))).ok()?;
            let tail: Vec<&str> = text.lines().rev().take(6).collect();
            Some(format!("{d}: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" / ")))
        })
        .collect();
    let how =
        if gone { "ended".to_owned() } else { format!("did not come up within {PATIENCE:?}") };
    Err(format!("{what} {how}: {}", said.join("; ")))
}

/// Whether process `pid` is alive (not gone, not a zombie).
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next());
    matches!(state, Some(s) if s != "Z" && s != "X")
}

/// Reaps this process's children, its own and adopted, until it has none.
fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid into a local.
        if unsafe { libc::waitpid(-1, &mut status, 0) } < 0
            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR)
        {
            return;
        }
    }
}

/// The live processes of this process's tree (children, theirs, and the
/// orphans it adopted as their subreaper).
fn tree() -> Vec<u32> {
    let me = std::process::id();
    let mut parents = std::collections::HashMap::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if let Some(ppid) = super::parent_of(pid) {
            parents.insert(pid, ppid);
        }
    }
    let under_me = |mut pid: u32| {
        for _ in 0..64 {
            match parents.get(&pid) {
                Some(&ppid) if ppid == me => return true,
                Some(&ppid) if ppid > 1 => pid = ppid,
                _ => return false,
            }
        }
        false
    };
    parents.keys().copied().filter(|&p| under_me(p) && alive(p)).collect()
}

/// The `srun` processes of the host that are clients of the cluster whose
/// configuration is `conf` (their environment says so).
fn clients(conf: &Path) -> Vec<u32> {
    let ours = format!("SLURM_CONF={}", conf.display());
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
        if comm_of(pid) == "srun"
            && alive(pid)
            && environ.split(|&b| b == 0).any(|kv| kv == ours.as_bytes())
        {
            found.push(pid);
        }
    }
    found
}

/// Lets the cluster's clients finish with it before it goes: a run that
/// died left `srun` launchers, told to end (SIGTERM, as the parent of
/// each dies), which end their steps and then tell the controller; taken
/// away first, they would wait for it for half a minute. Waits (checking
/// every 20 ms) until no `srun` of this cluster and no step
/// (`slurmstepd`) is left, for at most 20 s; then kills those left.
fn let_clients_finish(conf: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let steps = || tree().into_iter().filter(|&p| comm_of(p) == "slurmstepd").count();
    while Instant::now() < deadline && (steps() > 0 || !clients(conf).is_empty()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for pid in clients(conf) {
        super::kill(pid, super::Signal::SIGKILL);
    }
}

/// The short name of process `pid`.
fn comm_of(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default().trim().to_owned()
}

/// Ends every process of this process's tree: SIGTERM (the daemons clean
/// up, `slurmstepd` ends its step), then, for what is left after 5 s,
/// SIGKILL, until none is left; the pids that outlived [`PATIENCE`].
fn take_down_tree() -> Vec<u32> {
    let t0 = Instant::now();
    for pid in tree() {
        super::kill(pid, super::Signal::SIGTERM);
    }
    loop {
        let left = tree();
        if left.is_empty() || t0.elapsed() > PATIENCE {
            return left;
        }
        if t0.elapsed() > Duration::from_secs(5) {
            for pid in left {
                super::kill(pid, super::Signal::SIGKILL);
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
