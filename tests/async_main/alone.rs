//! What the actix-main tests check before their first start: the process
//! has one thread. Then the crate grows the descriptor table before its
//! spawner thread exists, where the kernel does not wait for an RCU grace
//! period (`os::reserve_descriptors_while_alone`), and the start after the
//! first does not wait for a growth on the spawner thread.

/// Fails unless this process has one thread (`Threads:` of
/// `/proc/self/status`).
pub fn assert_one_thread() {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status.lines().find_map(|l| l.strip_prefix("Threads:")).expect("Threads:");
    let threads: usize = line.trim().parse().expect("a number");
    assert_eq!(threads, 1, "an actix main has one thread before its first start");
}

/// After the first start: fails unless the descriptor table had been
/// grown ahead (on this thread, while it was the only one) before the
/// crate's spawner thread was started.
pub fn assert_grown_before_the_spawner() {
    let reserved = actix_webworker::__private::testing::reserved_before_spawner();
    let reserved = reserved.expect("the spawner thread has been started");
    assert!(reserved >= 256, "the table was grown to {reserved} before the spawner thread");
}
