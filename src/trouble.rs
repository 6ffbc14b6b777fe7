//! Trouble with something the proxy depends on but can serve without (the disk tier, the
//! shared tier): every failure is counted by its owner, but logged at most once a minute with
//! how many failures the quiet time hid, and the recovery is logged once.
//!
//! Some trouble flaps: a listener out of descriptors closes idle clients, accepts one, and
//! runs out again. There a success ends the trouble only once no failure came for a while
//! (`Trouble::settling`), so a flood is one line a minute, not a line per flap.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often trouble is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Whether the last attempt failed, and when trouble was last logged.
#[derive(Default)]
pub struct Trouble {
    state: Mutex<State>,
    /// How long after the last failure a success ends the trouble; zero: at once.
    settle: Duration,
}

#[derive(Default)]
struct State {
    failing: bool,
    last_failed: Option<Instant>,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl Trouble {
    /// Trouble that ends only with a success at least `settle` after the last failure.
    pub fn settling(settle: Duration) -> Trouble {
        Trouble {
            state: Mutex::default(),
            settle,
        }
    }

    /// Notes a failure. `Some(hidden)` when it should be logged now, `hidden` being the
    /// failures not logged since the last line; `None` within a minute of that line.
    pub fn failed(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.failing = true;
        state.last_failed = Some(Instant::now());
        if state.last_logged.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            state.unlogged += 1;
            return None;
        }
        state.last_logged = Some(Instant::now());
        Some(std::mem::take(&mut state.unlogged))
    }

    /// Notes a success. `Some(hidden)` when it ends trouble (log the recovery), else `None`.
    pub fn succeeded(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if !state.failing
            || state
                .last_failed
                .is_some_and(|at| at.elapsed() < self.settle)
        {
            return None;
        }
        state.failing = false;
        state.last_logged = None;
        Some(std::mem::take(&mut state.unlogged))
    }

    /// Whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .failing
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_once_a_minute_and_the_recovery_once() {
        let trouble = Trouble::default();
        assert_eq!(trouble.succeeded(), None);
        assert_eq!(trouble.failed(), Some(0));
        assert_eq!(trouble.failed(), None);
        assert_eq!(trouble.failed(), None);
        assert!(trouble.is_failing());
        assert_eq!(trouble.succeeded(), Some(2));
        assert_eq!(trouble.succeeded(), None);
        // Trouble after a recovery is news again.
        assert_eq!(trouble.failed(), Some(0));
    }

    #[test]
    fn settling_trouble_is_not_ended_by_a_success_between_failures() {
        let trouble = Trouble::settling(Duration::from_secs(3600));
        assert_eq!(trouble.failed(), Some(0));
        assert_eq!(trouble.succeeded(), None, "a flap, not a recovery");
        assert_eq!(trouble.failed(), None, "still the same trouble: quiet");
        assert!(trouble.is_failing());
        let settled = Trouble::settling(Duration::ZERO);
        assert_eq!(settled.failed(), Some(0));
        assert_eq!(settled.succeeded(), Some(0));
    }
}
