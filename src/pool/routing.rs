//! Which member a request or a post goes to: pure functions over a
//! snapshot of each member, so that the rules read and are tested apart
//! from the actor (as `supervise.rs` decides restarts).

/// What routing looks at of one member, read once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// It takes work (`Member::takes_work`): not leaving, not gone.
    pub takes_work: bool,
    /// A request can go to it now (`Member::ready`): it takes work, is
    /// online, and its process is not known to be down.
    pub ready: bool,
    /// Requests it has in flight.
    pub in_flight: usize,
    /// It runs on another machine.
    pub remote: bool,
}

/// The member a request goes to, of the `n` that `seen` shows: the ready
/// member with fewer than `max` in flight and the fewest of all, looking
/// in turn from position `turn` (of equals, the first in turn, or with
/// `prefer_local` the first on this machine; one with nothing in flight,
/// and local if preferred, at once); `None` when none has room.
pub(crate) fn pick(
    n: usize,
    turn: usize,
    max: usize,
    prefer_local: bool,
    seen: impl Fn(usize) -> Snapshot,
) -> Option<usize> {
    let rank = |m: &Snapshot| (m.in_flight, prefer_local && m.remote);
    let mut best: Option<(usize, (usize, bool))> = None;
    for k in 0..n {
        let at = (turn + k) % n;
        let m = seen(at);
        if !m.ready || m.in_flight >= max {
            continue;
        }
        if best.is_none_or(|(_, least)| rank(&m) < least) {
            best = Some((at, rank(&m)));
            if rank(&m) == (0, false) {
                break;
            }
        }
    }
    best.map(|(at, _)| at)
}

/// The member a post goes to, of the `n` that `seen` shows: the next in
/// turn from position `turn` that is ready, else the next that takes work
/// (one still starting queues it); `None` when none takes work.
pub(crate) fn pick_for_post(
    n: usize,
    turn: usize,
    seen: impl Fn(usize) -> Snapshot,
) -> Option<usize> {
    let order = (0..n).map(|k| (turn + k) % n);
    order
        .clone()
        .find(|&at| seen(at).ready)
        .or_else(|| order.clone().find(|&at| seen(at).takes_work))
}

#[cfg(test)]
mod tests {
    use super::{pick, pick_for_post, Snapshot};

    /// Online and taking work, with `in_flight` requests.
    const fn up(in_flight: usize) -> Snapshot {
        Snapshot { takes_work: true, ready: true, in_flight, remote: false }
    }
    /// The same, on another host.
    const fn far(in_flight: usize) -> Snapshot {
        Snapshot { takes_work: true, ready: true, in_flight, remote: true }
    }
    /// Taking work but not ready: still starting, or its process down.
    const STARTING: Snapshot =
        Snapshot { takes_work: true, ready: false, in_flight: 0, remote: false };
    /// Recycled, shrunk away or gone.
    const LEAVING: Snapshot =
        Snapshot { takes_work: false, ready: false, in_flight: 0, remote: false };

    #[test]
    fn a_request_goes_to_the_ready_member_with_room_and_the_fewest_in_flight() {
        // (members, turn, max in flight per member, where it goes)
        let table: &[(&[Snapshot], usize, usize, Option<usize>)] = &[
            (&[], 0, 4, None),
            // The fewest in flight, wherever the turn starts.
            (&[up(3), up(1), up(2)], 0, 4, Some(1)),
            (&[up(3), up(1), up(2)], 2, 4, Some(1)),
            // Of equals, the first in turn.
            (&[up(1), up(1), up(1)], 0, 4, Some(0)),
            (&[up(1), up(1), up(1)], 1, 4, Some(1)),
            (&[up(1), up(1), up(1)], 2, 4, Some(2)),
            // An idle member at once, the turn wrapping round.
            (&[up(0), up(2), up(0)], 1, 4, Some(2)),
            (&[up(0), up(2), up(1)], 1, 4, Some(0)),
            // A full member is passed over; with none that has room, none.
            (&[up(4), up(3)], 0, 4, Some(1)),
            (&[up(4), up(4)], 0, 4, None),
            (&[up(1), up(1)], 0, 1, None),
            // Only ready members: none starting, down, or leaving.
            (&[STARTING, LEAVING, up(3)], 0, 4, Some(2)),
            (&[STARTING, LEAVING], 0, 4, None),
        ];
        for (row, &(members, turn, max, goes_to)) in table.iter().enumerate() {
            // Every member here: the preference changes nothing.
            for prefer_local in [true, false] {
                let at = pick(members.len(), turn, max, prefer_local, |at| members[at]);
                assert_eq!(at, goes_to, "row {row}");
            }
        }
    }

    #[test]
    fn of_members_as_loaded_one_here_goes_first_unless_told_otherwise() {
        // (members, turn, where it goes with prefer_local, and without)
        type Row<'a> = (&'a [Snapshot], usize, Option<usize>, Option<usize>);
        let table: &[Row] = &[
            (&[far(0), up(0)], 0, Some(1), Some(0)),
            (&[far(1), far(1), up(1)], 0, Some(2), Some(0)),
            (&[far(1), up(1), up(1)], 2, Some(2), Some(2)),
            // Fewer in flight still wins, wherever it runs.
            (&[up(2), far(1)], 0, Some(1), Some(1)),
            // An idle one far away is not taken at once: one here may be idle too.
            (&[far(0), up(1), up(0)], 0, Some(2), Some(0)),
            // Only far ones: as before.
            (&[far(2), far(1)], 0, Some(1), Some(1)),
        ];
        for (row, &(members, turn, local, anywhere)) in table.iter().enumerate() {
            assert_eq!(pick(members.len(), turn, 4, true, |at| members[at]), local, "row {row}");
            assert_eq!(
                pick(members.len(), turn, 4, false, |at| members[at]),
                anywhere,
                "row {row}"
            );
        }
    }

    #[test]
    fn a_post_goes_to_the_next_ready_member_in_turn_else_to_one_starting() {
        // (members, turn, where it goes)
        let table: &[(&[Snapshot], usize, Option<usize>)] = &[
            (&[], 0, None),
            // In turn, whatever the load: posts do not count.
            (&[up(9), up(0), up(5)], 0, Some(0)),
            (&[up(9), up(0), up(5)], 2, Some(2)),
            // The next ready one, passing over the others.
            (&[up(0), STARTING, LEAVING, up(0)], 1, Some(3)),
            // None ready: the next that takes work queues it.
            (&[LEAVING, STARTING, STARTING], 0, Some(1)),
            (&[LEAVING, STARTING, STARTING], 2, Some(2)),
            // None takes work: none.
            (&[LEAVING, LEAVING], 0, None),
        ];
        for (row, &(members, turn, goes_to)) in table.iter().enumerate() {
            assert_eq!(pick_for_post(members.len(), turn, |at| members[at]), goes_to, "row {row}");
        }
    }
}
