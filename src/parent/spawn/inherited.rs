//! What a worker inherits from its parent beside its command: who the
//! parent is now (its user, groups, capabilities, the filters it put on
//! itself), where it is (its directory, namespaces, cgroup) and what it
//! set for its children (umask, resource limits, niceness, the CPUs it
//! may run on).
//!
//! An exec'd worker takes these from the parent as it is at the start; a
//! forked one from its template, as the parent was when the template
//! started. A parent that starts as root and drops to a user of its own
//! once its port is bound, or moves to another directory, would have
//! forked workers that run as root, in the old directory (from a review
//! of the fork server): a template serves only while the parent's
//! `Inherited` is the one it started with.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;

/// The lines of `/proc/thread-self/status` a process's children inherit
/// (its threads may differ: the spawner thread's are the ones a start
/// gives).
const STATUS: [&[u8]; 13] = [
    b"Umask:",
    b"Uid:",
    b"Gid:",
    b"Groups:",
    b"NoNewPrivs:",
    b"Seccomp:",
    b"CapInh:",
    b"CapPrm:",
    b"CapEff:",
    b"CapBnd:",
    b"CapAmb:",
    b"Cpus_allowed_list:",
    b"Mems_allowed_list:",
];

/// The namespaces a child starts in.
const NAMESPACES: [&str; 7] = ["mnt", "net", "user", "uts", "ipc", "pid_for_children", "cgroup"];

/// A snapshot of what the calling thread's children would inherit, to
/// compare with another: equal when nothing of it changed. What cannot
/// be read (a kernel without a file) is left out of both alike; a
/// snapshot this process is too short of descriptors or memory to take
/// is none at all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Inherited(Vec<u8>);

impl Inherited {
    /// The calling thread's, now; `None` if this process is too short of
    /// descriptors or memory to tell.
    pub(crate) fn now() -> Option<Inherited> {
        let mut snap = Vec::with_capacity(1024);
        let mut buf = Vec::with_capacity(4096);
        if read_into("/proc/thread-self/status", &mut buf)? {
            for line in buf.split(|&b| b == b'\n') {
                if STATUS.iter().any(|key| line.starts_with(key)) {
                    snap.extend_from_slice(line);
                    snap.push(b'\n');
                }
            }
        }
        for file in ["/proc/self/limits", "/proc/self/cgroup"] {
            if read_into(file, &mut buf)? {
                snap.extend_from_slice(&buf);
            }
        }
        let links = NAMESPACES.map(|ns| std::fs::read_link(format!("/proc/thread-self/ns/{ns}")));
        let dir = std::env::current_dir();
        for link in links.iter().chain([&dir]) {
            match link {
                Ok(path) => {
                    snap.extend_from_slice(path.as_os_str().as_bytes());
                    snap.push(b'\n');
                }
                Err(e) if crate::os::scarce(e) => return None,
                Err(_) => {}
            }
        }
        // SAFETY: no pointer; 0 is the calling thread. -1 is also a
        // niceness: kept as it is, as on every call.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        snap.extend_from_slice(&nice.to_le_bytes());
        Some(Inherited(snap))
    }
}

/// Reads `path` whole into `buf` (cleared first); false if it cannot,
/// `None` if this process is too short to.
fn read_into(path: &str, buf: &mut Vec<u8>) -> Option<bool> {
    buf.clear();
    match std::fs::File::open(path).and_then(|mut file| file.read_to_end(buf)) {
        Ok(_) => Some(true),
        Err(e) if crate::os::scarce(&e) => None,
        Err(_) => Some(false),
    }
}

#[cfg(test)]
mod tests {
    use super::Inherited;

    /// Equal while nothing changes; a change is seen: here the niceness of
    /// the calling thread (its own on Linux, and the harness's thread ends
    /// with the test; the directory, the umask and the user are the
    /// whole process's, and are shown by the fork server's tests, each in
    /// a process of its own).
    #[test]
    fn a_snapshot_is_equal_until_something_children_inherit_changes() {
        let before = Inherited::now().expect("descriptors to spare");
        assert_eq!(Inherited::now(), Some(before.clone()), "nothing changed");
        // SAFETY: no pointer; 0 is this thread.
        let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
        // SAFETY: as above; a higher niceness needs no privilege.
        assert_eq!(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice + 1) }, 0);
        assert_ne!(Inherited::now(), Some(before), "a new niceness is seen");
    }
}
