//! Where a pool's members run: the hosts it was given
//! ([`PoolBuilder::hosts`](crate::PoolBuilder::hosts)), each with its
//! launcher, its limit, and whether it is taken for down; and the choice of
//! a host for the next member, a pure function tested apart.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::parent::options::Transport;

/// Where members of a pool may run: this machine, or a host reached
/// through a launcher (`ssh`, `srun`, `kubectl exec -i`; with the crate's
/// `tcp` feature, which remote members need), with at most
/// [`limit`](Host::limit) members at once. See
/// [`PoolBuilder::hosts`](crate::PoolBuilder::hosts).
///
/// ```no_run
/// use std::time::Duration;
/// use actix_webworker::{Host, Protocol, Transport, WorkerPool};
///
/// struct Jobs;
/// impl Protocol for Jobs {
///     type ToWorker = String;
///     type FromWorker = String;
/// }
///
/// # #[cfg(feature = "tls")]
/// # fn start() -> Result<(), actix_webworker::SpawnError> {
/// let listen = "0.0.0.0:0".parse().unwrap();
/// let pool = WorkerPool::<Jobs>::builder()
///     .entry("jobs")
///     .transport(Transport::tls(listen).connect_to("head.example"))
///     .heartbeat(Duration::from_millis(100), Duration::from_secs(1))
///     .hosts([
///         Host::local().limit(2),
///         Host::launched("gpu-1", ["ssh", "-T", "gpu-1", "--"]).limit(8),
///         // Slurm places each member where it likes.
///         Host::launched("slurm", ["srun", "-N1", "-n1", "--"]),
///     ])
///     .size(12)
///     .start()?;
/// # drop(pool);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Host {
    pub(crate) name: Arc<str>,
    pub(crate) launcher: Vec<OsString>,
    pub(crate) transport: Option<Transport>,
    pub(crate) limit: usize,
    pub(crate) retry_after: Duration,
}

impl Host {
    /// This machine: members started directly, over a socketpair (the
    /// pool's transport is not used for them). Named `local`.
    pub fn local() -> Self {
        Host {
            name: "local".into(),
            launcher: Vec::new(),
            transport: Some(Transport::Local),
            limit: usize::MAX,
            retry_after: Duration::from_secs(30),
        }
    }

    /// Members started through `launcher` (see
    /// [`WorkerBuilder::launcher`](crate::WorkerBuilder::launcher)), over
    /// the pool's [`transport`](crate::WorkerBuilder::transport) unless
    /// [`transport`](Host::transport) says otherwise; `name` is what stats
    /// and events call the host.
    pub fn launched<I, S>(name: impl Into<String>, launcher: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        Host {
            name: name.into().into(),
            launcher: launcher.into_iter().map(Into::into).collect(),
            transport: None,
            ..Host::local()
        }
    }

    /// At most `n` members on this host at once (at least 1). Default: no
    /// limit.
    pub fn limit(mut self, n: usize) -> Self {
        self.limit = n.max(1);
        self
    }

    /// The connection of members on this host, instead of the pool's:
    /// for a host that reaches this one by another address
    /// ([`Transport::connect_to`]).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = Some(transport);
        self
    }

    /// How long the host is passed over once taken for down (a member on
    /// it lost, or one that could not be started there). Default 30 s.
    pub fn retry_after(mut self, after: Duration) -> Self {
        self.retry_after = after;
        self
    }

    /// Its name, as stats and events give it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether its members run on this machine, with no launcher.
    pub(crate) fn is_local(&self) -> bool {
        self.launcher.is_empty()
    }
}

/// What placement looks at of one host, read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Seat {
    /// Its members that take work (starting ones included).
    pub members: usize,
    pub limit: usize,
    /// Taken for down until then.
    pub down_until: Option<Instant>,
}

/// Where the next member goes, of `seats` (in the order the hosts were
/// given) at `now`: the host up with room and the fewest members, of
/// equals the first given. `Err` with when to look again when every host
/// with room is down, or `Err(None)` when none has room.
pub(crate) fn place(seats: &[Seat], now: Instant) -> Result<usize, Option<Instant>> {
    let with_room = || seats.iter().enumerate().filter(|(_, s)| s.members < s.limit);
    let up = with_room().filter(|(_, s)| s.down_until.is_none_or(|t| t <= now));
    match up.min_by_key(|&(at, s)| (s.members, at)) {
        Some((at, _)) => Ok(at),
        None => Err(with_room().filter_map(|(_, s)| s.down_until).min()),
    }
}

#[cfg(test)]
mod tests {
    use super::{place, Seat};
    use std::time::{Duration, Instant};

    fn seat(members: usize, limit: usize) -> Seat {
        Seat { members, limit, down_until: None }
    }

    #[test]
    fn a_member_goes_to_the_host_up_with_room_and_the_fewest_members() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        let earlier = now - Duration::from_secs(1);
        let down = |members, limit, until| Seat { members, limit, down_until: Some(until) };
        // (hosts, where the member goes)
        type Row<'a> = (&'a [Seat], Result<usize, Option<Instant>>);
        let table: &[Row] = &[
            (&[], Err(None)),
            // The fewest members; of equals, the first given.
            (&[seat(2, 9), seat(1, 9), seat(1, 9)], Ok(1)),
            (&[seat(0, 9), seat(0, 9)], Ok(0)),
            // A full host is passed over; with none that has room, none.
            (&[seat(2, 2), seat(3, 9)], Ok(1)),
            (&[seat(2, 2), seat(1, 1)], Err(None)),
            // A host down is passed over until its time comes.
            (&[down(0, 9, later), seat(5, 9)], Ok(1)),
            (&[down(0, 9, earlier), seat(5, 9)], Ok(0)),
            // Every host with room down: look again at the first to come back.
            (&[down(0, 9, later), down(0, 9, later + Duration::from_secs(1))], Err(Some(later))),
            // A full host's coming back does not count.
            (&[down(1, 1, now), down(0, 9, later)], Err(Some(later))),
        ];
        for (row, (seats, goes_to)) in table.iter().enumerate() {
            assert_eq!(place(seats, now), *goes_to, "row {row}");
        }
    }
}
