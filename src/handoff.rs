//! What a parent hands a worker at exec, known to both sides: the
//! environment variables that name the socket, the entry and the message
//! limit, the secrets block a remote worker reads from its stdin, the
//! worker runtime's exit codes, and how each side tells who the other is.

pub(crate) mod template;

/// Environment variable that tells the child which descriptor is its socket.
pub(crate) const ENV_FD: &str = "ACTIX_WEBWORKER_FD";
/// Environment variable that names the worker entry to run.
pub(crate) const ENV_ENTRY: &str = "ACTIX_WEBWORKER_ENTRY";
/// Environment variable with the largest message either side may send.
pub(crate) const ENV_MAX_MESSAGE: &str = "ACTIX_WEBWORKER_MAX_MESSAGE";
/// Environment variable with the `host:port` a remote worker connects back
/// to (instead of [`ENV_FD`]).
pub(crate) const ENV_CONNECT: &str = "ACTIX_WEBWORKER_CONNECT";
/// Environment variable that says where a remote worker's secrets are:
/// `stdin`, the only value, for the block of [`secrets_block`]. Not secret
/// itself: the secrets never go in an environment or an argument list,
/// which every user of the host may read (`/proc/PID/cmdline`, and the
/// environment a launcher such as `ssh` passes on as arguments).
pub(crate) const ENV_SECRETS: &str = "ACTIX_WEBWORKER_SECRETS";
/// The key, in the secrets block, of the one-time token a remote worker
/// presents.
#[cfg(feature = "tcp")]
pub(crate) const SECRET_TOKEN: &str = "ACTIX_WEBWORKER_TOKEN";
/// The key, in the secrets block, of the SHA-256 (hex) of the parent's TLS
/// certificate: given, the worker connects with TLS and trusts only that.
#[cfg(feature = "tcp")]
pub(crate) const SECRET_TLS_PIN: &str = "ACTIX_WEBWORKER_TLS_PIN";
/// The key, in the secrets block, of a second one-time secret the parent
/// sends back once the worker's token is accepted, over TCP in the clear:
/// the worker serves only a parent that knows it (whoever holds the port
/// once its parent has given the launch up learns the token, not this).
#[cfg(feature = "tcp")]
pub(crate) const SECRET_PROOF: &str = "ACTIX_WEBWORKER_PARENT_PROOF";
/// Bit 0 of the `Auth` message's second byte: the worker asks the parent
/// to prove itself (PROTOCOL.md, section 1).
#[cfg(feature = "tcp")]
pub(crate) const AUTH_ASKS_PROOF: u8 = 1;
/// The largest secrets block a worker reads.
#[cfg(feature = "tcp")]
pub(crate) const MAX_SECRETS: usize = 4096;

/// The secrets block a remote worker reads from its stdin: one
/// `KEY=value` line per secret, then an empty line. The empty line ends
/// it, not the end of the input, since a launcher may keep stdin open
/// (`kubectl exec -i`).
#[cfg(feature = "tcp")]
pub(crate) fn secrets_block(token: &str, pin: Option<&str>, proof: Option<&str>) -> String {
    let mut block = format!("{SECRET_TOKEN}={token}\n");
    if let Some(pin) = pin {
        block.push_str(&format!("{SECRET_TLS_PIN}={pin}\n"));
    }
    if let Some(proof) = proof {
        block.push_str(&format!("{SECRET_PROOF}={proof}\n"));
    }
    block.push('\n');
    block
}

/// The secrets a remote worker was given: its token, the pin of the
/// parent's certificate when over TLS, and what the parent proves itself
/// with when in the clear.
#[cfg(feature = "tcp")]
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Secrets {
    pub token: String,
    pub pin: Option<String>,
    pub proof: Option<String>,
}

/// Reads a secrets block (see [`secrets_block`]) from the lines of
/// `block`, up to its empty line; keys it does not know are skipped, for
/// later versions to add some.
#[cfg(feature = "tcp")]
pub(crate) fn parse_secrets(block: &str) -> Secrets {
    let mut secrets = Secrets::default();
    for line in block.lines().take_while(|l| !l.is_empty()) {
        match line.split_once('=') {
            Some((SECRET_TOKEN, token)) => secrets.token = token.to_owned(),
            Some((SECRET_TLS_PIN, pin)) => secrets.pin = Some(pin.to_owned()),
            Some((SECRET_PROOF, proof)) => secrets.proof = Some(proof.to_owned()),
            _ => {}
        }
    }
    secrets
}

/// Whether `a` and `b` are equal, in time that does not depend on where
/// they differ (a token, a proof).
#[cfg(feature = "tcp")]
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// What one descriptor weighs in a bound of bytes where it travels with a
/// few bytes only (a shared buffer's): a stream's window (each item's
/// descriptors, counted so on both sides: PROTOCOL.md, section 9), and
/// the bytes of the peer's requests being answered. Without it a few
/// bytes each hold a descriptor each, thousands of them within the bytes.
pub(crate) const DESCRIPTOR_WEIGHT: usize = 64 << 10;

/// The largest message either side may send, unless told otherwise.
pub(crate) const DEFAULT_MAX_MESSAGE: usize = 64 << 20;

/// Mailbox capacity of the actors on both sides: large enough never to
/// make a `send` wait (which would let later `do_send`s overtake it), small
/// enough for actix's arithmetic.
pub(crate) const MAILBOX_CAPACITY: usize = 1 << 40;

/// Exit codes of the worker runtime itself.
pub mod exit_code {
    /// A panic the actor could not recover from, as Rust's own panics.
    pub const PANIC: i32 = 101;
    /// The process was not started as a worker (no socket in its environment)
    /// or names an entry that is not registered.
    pub const NOT_A_WORKER: i32 = 64;
    /// The handshake failed: another protocol version or other message types.
    pub const MISMATCH: i32 = 78;
    /// The socket to the parent could not be used (or, after a refusal,
    /// the parent never closed it).
    pub const IO: i32 = 74;
    /// The worker reached its soft CPU limit
    /// ([`ResourceLimits::cpu_seconds`](crate::ResourceLimits::cpu_seconds)):
    /// SIGXCPU, after which `on_close` ran. 128 + SIGXCPU, as a shell says.
    pub const CPU_LIMIT: i32 = 152;
    /// The worker was sent SIGTERM while its parent lived, by someone
    /// other than the parent's going (a cluster's cancel or preemption, an
    /// operator's `kill`): `on_close` ran, and the exit says it did not
    /// finish of its own accord. 128 + SIGTERM, as a shell says.
    pub const SIGTERM: i32 = 143;
}

/// How many generations apart a worker and its parent may be: the worker
/// may run under a wrapper (`sh -c`, a debugger) that the parent started.
const MAX_GENERATIONS: usize = 16;

/// Whether process `pid` is `ancestor` or descends from it, within
/// [`MAX_GENERATIONS`]; false when `/proc` cannot tell.
pub(crate) fn descends_from(pid: i32, ancestor: i32) -> bool {
    let mut current = pid;
    for _ in 0..=MAX_GENERATIONS {
        if current == ancestor {
            return true;
        }
        match parent_of(current) {
            Some(p) if p > 0 && p != current => current = p,
            _ => return false,
        }
    }
    false
}

/// The parent of process `pid`, from `/proc/<pid>/stat`.
pub(crate) fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...: comm may hold anything, so split after ')'.
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "tcp")]
    #[test]
    fn a_secrets_block_reads_back_up_to_its_empty_line() {
        let block = secrets_block(&"a".repeat(64), Some(&"b".repeat(64)), None);
        let read = parse_secrets(&format!("{block}{SECRET_TOKEN}=later\n"));
        assert_eq!(read, Secrets { token: "a".repeat(64), pin: Some("b".repeat(64)), proof: None });
        let plain = parse_secrets(&secrets_block("t", None, Some("p")));
        assert_eq!(plain, Secrets { token: "t".into(), pin: None, proof: Some("p".into()) });
        assert_eq!(parse_secrets("OTHER=x\nACTIX_WEBWORKER_TOKEN=t\n\n").token, "t");
    }

    #[test]
    fn ancestry() {
        let me = std::process::id() as i32;
        let parent = std::os::unix::process::parent_id() as i32;
        assert!(descends_from(me, me));
        assert!(descends_from(me, parent));
        assert!(descends_from(me, 1));
        assert!(!descends_from(parent, me));
    }
}
