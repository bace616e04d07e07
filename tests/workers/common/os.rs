//! What the operating system says: descriptors, children, processes gone;
//! signals sent to a process; and bytes as a raw peer writes them.

use std::io::{Read, Write};
use std::time::Duration;

pub use nix::sys::signal::Signal;

/// Sends `signal` to process `pid` (a worker the test started, or its
/// launcher); whether it was sent.
pub fn kill(pid: u32, signal: Signal) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).is_ok()
}

/// The read end of a pipe that holds `n`.
pub fn pipe_holding(n: u64) -> std::os::fd::OwnedFd {
    let (r, mut w) = std::io::pipe().expect("pipe");
    w.write_all(&n.to_le_bytes()).expect("write");
    r.into()
}

/// Reads the `u64` a [`pipe_holding`] holds.
pub fn read_u64(fd: std::os::fd::OwnedFd) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::from(fd).read_exact(&mut b).expect("read");
    u64::from_le_bytes(b)
}

/// Waits until `f` holds, checking every 10 ms, for at most 10 s: for
/// what settles without an event to wait on (a descriptor closed by a task
/// winding down, a child reaped by another thread).
pub async fn settles(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..1000 {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

/// Waits until `f` holds, checking every millisecond, for at most `limit`:
/// for what must settle promptly after an event.
pub async fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    f()
}

/// A field of this process's `/proc/self/status` in KiB (`"VmRSS:"`,
/// `"VmHWM:"`, `"VmPTE:"`).
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// This process's descriptor limit, set to `n`.
pub fn set_nofile(n: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit on locals.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = n.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

/// Open descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

/// Children of this process (`ppid` is us), zombies included: its
/// workers and what else it started, but not the templates its workers
/// are forked from (`StartMethod::ForkServer`), which stay for the life
/// of the process.
pub fn children() -> Vec<(u32, char)> {
    all_children().into_iter().filter(|(pid, _)| !is_template(*pid)).collect()
}

/// Whether process `pid` is a template (`StartMethod::ForkServer`): it
/// holds the packet socket its environment names. A worker forked from it
/// shows the same environment, but has closed that descriptor.
pub fn is_template(pid: u32) -> bool {
    let env = environ(pid);
    let fd = env.iter().find_map(|v| v.strip_prefix("ACTIX_WEBWORKER_TEMPLATE="));
    let Some(link) = fd.and_then(|fd| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok())
    else {
        return false;
    };
    seqpacket_inodes().contains(&link.display().to_string())
}

/// The UNIX packet sockets of this network namespace, as a process's
/// `/proc/PID/fd` names them (`socket:[INODE]`).
pub fn seqpacket_inodes() -> Vec<String> {
    let table = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    // Num RefCount Protocol Flags Type St Inode Path: Type 0005 is a
    // SOCK_SEQPACKET.
    let rows = table.lines().skip(1).map(|l| l.split_whitespace().collect::<Vec<_>>());
    let packets = rows.filter(|f| f.get(4) == Some(&"0005"));
    packets.filter_map(|f| Some(format!("socket:[{}]", f.get(6)?))).collect()
}

/// Children of this process, templates included.
fn all_children() -> Vec<(u32, char)> {
    let me = std::process::id();
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so split after ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(me) {
            out.push((pid, state));
        }
    }
    out
}

/// Waits (on a pidfd, no polling) until process `pid` has exited.
pub fn wait_gone(pid: u32, timeout: Duration) -> bool {
    // SAFETY: pidfd_open with a pid and no flags.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return true; // no such process
    }
    let mut pfd = libc::pollfd { fd: fd as i32, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) };
    // SAFETY: closing the pidfd we opened.
    unsafe { libc::close(fd as i32) };
    r > 0
}

/// What a process shows every user of the host: its arguments, and (to
/// its own user and root) its environment; empty when it is gone.
#[cfg(feature = "tcp")]
pub fn shown(pid: u32) -> String {
    let read = |what: &str| std::fs::read(format!("/proc/{pid}/{what}")).unwrap_or_default();
    let (cmdline, environ) = (read("cmdline"), read("environ"));
    format!("{} {}", String::from_utf8_lossy(&cmdline), String::from_utf8_lossy(&environ))
}

/// The environment process `pid` was started with (`/proc/PID/environ`:
/// what its exec was given, or its template's for a forked worker), one
/// `K=V` each.
pub fn environ(pid: u32) -> Vec<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    bytes.split(|&b| b == 0).map(|v| String::from_utf8_lossy(v).into_owned()).collect()
}

/// Whether worker `pid` was forked from a template
/// (`StartMethod::ForkServer`) rather than exec'd: it shows the
/// template's environment, which names the template's exchange, where an
/// exec'd worker's names its socket.
pub fn forked(pid: u32) -> bool {
    let env = environ(pid);
    let has = |var: &str| env.iter().any(|v| v.starts_with(var));
    has("ACTIX_WEBWORKER_TEMPLATE=") && !has("ACTIX_WEBWORKER_FD=")
}

/// This process's live templates started with `K=V` `tag` in their
/// environment, other than `workers`.
pub fn templates(tag: &str, workers: &[u32]) -> Vec<u32> {
    let tagged = |pid: &u32| is_template(*pid) && environ(*pid).iter().any(|v| v == tag);
    let children = all_children().into_iter().filter(|(_, state)| *state != 'Z');
    children.map(|(pid, _)| pid).filter(|p| !workers.contains(p)).filter(tagged).collect()
}

/// The parent of `pid`, from `/proc/PID/stat`.
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.split_whitespace().nth(1)?.parse().ok()
}

/// The next WebSocket frame's payload from the other side (unmasked, as
/// ours write), or `None` at the end: what a raw peer reads.
pub fn read_frame(sock: &mut impl std::io::Read) -> Option<Vec<u8>> {
    let mut head = [0u8; 2];
    sock.read_exact(&mut head).ok()?;
    let len = match head[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            sock.read_exact(&mut b).ok()?;
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            sock.read_exact(&mut b).ok()?;
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut payload = vec![0u8; usize::try_from(len).ok()?];
    sock.read_exact(&mut payload).ok()?;
    Some(payload)
}

/// The messages in one frame's payload: a batch's (kind 9) entries, or
/// the message itself.
pub fn messages(payload: &[u8]) -> Vec<Vec<u8>> {
    if payload.first() != Some(&9) {
        return vec![payload.to_vec()];
    }
    let (mut out, mut pos) = (Vec::new(), 2);
    while pos + 4 <= payload.len() {
        let len = u32::from_le_bytes(payload[pos..pos + 4].try_into().unwrap()) as usize;
        out.push(payload[pos + 4..pos + 4 + len].to_vec());
        pos += 4 + len;
    }
    out
}

/// One unmasked WebSocket frame with FIN set, as either side sends it
/// (`opcode` 2: binary): what a raw peer writes.
pub fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n <= 0xffff => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out
}

thread_local! {
    /// Why the test running on this thread skipped itself, if it did.
    static SKIPPED: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// The running test cannot run here (a tool is missing, or this is not
/// root): it says why, and returns. The harness reports it as ignored,
/// with `reason`, never as passed (`trials!`).
pub fn skip(reason: impl Into<String>) {
    let reason = reason.into();
    println!("SKIPPED: {reason}");
    SKIPPED.with(|s| *s.borrow_mut() = Some(reason));
}

/// Why the test that just ran on this thread skipped itself (taken).
pub fn take_skip() -> Option<String> {
    SKIPPED.with(|s| s.borrow_mut().take())
}

/// Runs `ip args...` (iproute2: the tests' network namespaces); its error
/// output if it fails.
#[cfg(feature = "tcp")]
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip").args(args).output().map_err(|e| e.to_string())?;
    match out.status.success() {
        true => Ok(()),
        false => Err(format!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr))),
    }
}

/// The protocol version PROTOCOL.md documents, from its title: a peer
/// written by hand from the document speaks it (and a title left behind
/// by a new version fails the tests that use it).
pub fn documented_version() -> u32 {
    let doc = include_str!("../../../PROTOCOL.md");
    let title = doc.lines().next().unwrap_or_default();
    let version =
        title.strip_prefix("# The wire protocol (version ").and_then(|v| v.strip_suffix(')'));
    version.and_then(|v| v.parse().ok()).expect("PROTOCOL.md's title names its version")
}

/// A request type's tag: FNV-1a of its wire name (PROTOCOL.md, section 5).
pub fn tag_of(name: &str) -> [u8; 8] {
    let mut fnv = 0xcbf2_9ce4_8422_2325_u64;
    for b in name.bytes() {
        fnv = (fnv ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    fnv.to_le_bytes()
}
