//! Trouble with something the proxy depends on but can serve without (the disk tier, the
//! shared tier): every failure is counted by its owner, but logged at most once a minute with
//! how many failures the quiet time hid, and the recovery is logged once.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How often trouble is logged at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// Whether the last attempt failed, and when trouble was last logged.
#[derive(Default)]
pub struct Trouble {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    failing: bool,
    last_logged: Option<Instant>,
    unlogged: u64,
}

impl Trouble {
    /// Notes a failure. `Some(hidden)` when it should be logged now, `hidden` being the
    /// failures not logged since the last line; `None` within a minute of that line.
    pub fn failed(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.failing = true;
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
        if !state.failing {
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
}
