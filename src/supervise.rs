//! Restarts driven by the worker's exit, in the spirit of Erlang/OTP
//! supervisors: a policy as data, and one pure function that decides.
//!
//! - **When**: never; on failure (a non-zero exit code or a signal, but not
//!   after `terminate` or the worker's own `close()`); always (still not
//!   after terminate or close).
//! - **How often**: at most `max_restarts` within `within` (OTP's intensity
//!   and period); one more failure and the worker stops for good.
//! - **How soon**: exponential backoff from `backoff_initial`, doubling per
//!   restart counted in the window, capped at `backoff_max`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::error::ExitStatus;

/// When a worker that exited is started again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Restart {
    /// Never.
    Never,
    /// After a non-zero exit code or a signal (the default).
    #[default]
    OnFailure,
    /// After any exit that terminate or `close()` did not ask for.
    Always,
}

/// When and how often a worker that exited is started again, in the spirit
/// of Erlang/OTP supervisors. Defaults: restart on failure, at most 5
/// restarts within 60 s, backoff from 100 ms doubling up to 5 s.
///
/// - **When**: [`Restart`]; never after `terminate` or the worker's own
///   `close()`, nor after an error certain to happen again
///   ([`WireError::is_certain`](crate::WireError::is_certain)).
/// - **How often**: at most `max_restarts` within `within` (OTP's intensity
///   and period); one more failure and the worker stops for good with
///   [`Event::GaveUp`](crate::Event::GaveUp).
/// - **How soon**: exponential backoff from `backoff_initial`, doubling per
///   restart counted in the window, capped at `backoff_max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RestartPolicy {
    /// When to restart.
    pub restart: Restart,
    /// The most restarts allowed within [`within`](Self::within).
    pub max_restarts: u32,
    /// The window the restarts are counted in.
    pub within: Duration,
    /// The delay before the first restart in a window.
    pub backoff_initial: Duration,
    /// The longest delay.
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            restart: Restart::OnFailure,
            max_restarts: 5,
            within: Duration::from_secs(60),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl RestartPolicy {
    /// Never restart.
    pub fn never() -> Self {
        RestartPolicy { restart: Restart::Never, ..Self::default() }
    }

    /// Sets when to restart.
    pub fn restart(mut self, restart: Restart) -> Self {
        self.restart = restart;
        self
    }

    /// At most `max_restarts` within `within`.
    pub fn intensity(mut self, max_restarts: u32, within: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.within = within;
        self
    }

    /// Backoff from `initial`, doubling, capped at `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max.max(initial);
        self
    }
}

/// What to do after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Start a new process after `delay`; this is restart number `attempt`
    /// in the current window.
    Restart { attempt: u32, delay: Duration },
    /// The exit was wanted, or the policy does not restart it.
    Stop,
    /// Restarting would exceed the intensity.
    GiveUp,
}

/// The times of the restarts that still count.
#[derive(Debug, Default)]
pub(crate) struct History {
    restarts: VecDeque<Instant>,
}

impl History {
    /// Decides what follows `exit`; `wanted` is true after terminate or the
    /// worker's own `close()`. Records the restart it decides on.
    pub(crate) fn decide(
        &mut self,
        policy: &RestartPolicy,
        exit: ExitStatus,
        wanted: bool,
        now: Instant,
    ) -> Decision {
        let restart = match policy.restart {
            _ if wanted => false,
            Restart::Never => false,
            Restart::OnFailure => !exit.success(),
            Restart::Always => true,
        };
        if !restart {
            return Decision::Stop;
        }
        while let Some(&first) = self.restarts.front() {
            if now.saturating_duration_since(first) >= policy.within {
                self.restarts.pop_front();
            } else {
                break;
            }
        }
        if self.restarts.len() >= policy.max_restarts as usize {
            return Decision::GiveUp;
        }
        self.restarts.push_back(now);
        let attempt = self.restarts.len() as u32;
        let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
        let delay = policy.backoff_initial.saturating_mul(factor).min(policy.backoff_max);
        Decision::Restart { attempt, delay }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAIL: ExitStatus = ExitStatus { code: Some(1), signal: None, lost: None };
    const KILLED: ExitStatus = ExitStatus { code: None, signal: Some(9), lost: None };
    const CLEAN: ExitStatus = ExitStatus { code: Some(0), signal: None, lost: None };

    fn policy() -> RestartPolicy {
        RestartPolicy::default()
            .intensity(3, Duration::from_secs(10))
            .backoff(Duration::from_millis(100), Duration::from_millis(350))
    }

    #[test]
    fn on_failure_restarts_failures_only() {
        let now = Instant::now();
        let mut h = History::default();
        assert_eq!(h.decide(&policy(), CLEAN, false, now), Decision::Stop);
        assert!(matches!(h.decide(&policy(), FAIL, false, now), Decision::Restart { .. }));
        assert!(matches!(h.decide(&policy(), KILLED, false, now), Decision::Restart { .. }));
    }

    #[test]
    fn wanted_exits_and_never_do_not_restart() {
        let now = Instant::now();
        let mut h = History::default();
        let always = policy().restart(Restart::Always);
        assert_eq!(h.decide(&always, FAIL, true, now), Decision::Stop);
        assert!(matches!(h.decide(&always, CLEAN, false, now), Decision::Restart { .. }));
        assert_eq!(h.decide(&RestartPolicy::never(), FAIL, false, now), Decision::Stop);
    }

    #[test]
    fn intensity_and_backoff() {
        let t0 = Instant::now();
        let mut h = History::default();
        let delays: Vec<_> = (0..3)
            .map(|i| match h.decide(&policy(), FAIL, false, t0 + Duration::from_secs(i)) {
                Decision::Restart { attempt, delay } => {
                    assert_eq!(attempt, i as u32 + 1);
                    delay
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(delays, [100, 200, 350].map(Duration::from_millis));
        assert_eq!(h.decide(&policy(), FAIL, false, t0 + Duration::from_secs(3)), Decision::GiveUp);
        // Once the first restart leaves the window, one more is allowed.
        assert_eq!(
            h.decide(&policy(), FAIL, false, t0 + Duration::from_secs(10)),
            Decision::Restart { attempt: 3, delay: Duration::from_millis(350) }
        );
    }
}
