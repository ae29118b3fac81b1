//! Limits of a whole run: `--max-duration` (a deadline for every journey of the run) and
//! `--fail-fast` (stop at the first failed journey). Every step of every journey races the
//! cutoff, so a hung backend cannot stretch a run to the sum of its step timeouts.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

pub use crate::report::model::Cut;

/// The run's cutoff, shared by every virtual user. The default never cuts.
#[derive(Debug, Clone)]
pub struct Cutoff {
    deadline: Option<(Instant, Duration)>,
    fail_fast: bool,
    stopped: Arc<watch::Sender<bool>>,
}

impl Default for Cutoff {
    fn default() -> Self {
        Self::start(None, false)
    }
}

impl Cutoff {
    /// Starts the clock now.
    pub fn start(max_duration: Option<Duration>, fail_fast: bool) -> Self {
        Self {
            deadline: max_duration.map(|d| (Instant::now() + d, d)),
            fail_fast,
            stopped: Arc::new(watch::channel(false).0),
        }
    }

    /// A journey failed: with `--fail-fast`, everything still running is cut short.
    pub fn journey_failed(&self) {
        if self.fail_fast {
            self.stopped.send_replace(true);
        }
    }

    /// Whether the run has been cut, and why.
    pub fn reached(&self) -> Option<Cut> {
        if *self.stopped.borrow() {
            return Some(Cut::FailFast);
        }
        match self.deadline {
            Some((at, d)) if Instant::now() >= at => Some(Cut::Deadline(d)),
            _ => None,
        }
    }

    /// Resolves when the run is cut; never, without limits.
    pub async fn wait(&self) -> Cut {
        let mut stopped = self.stopped.subscribe();
        let deadline = async {
            match self.deadline {
                Some((at, d)) => {
                    tokio::time::sleep_until(at).await;
                    Cut::Deadline(d)
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cut = deadline => cut,
            Ok(_) = stopped.wait_for(|s| *s) => Cut::FailFast,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_deadline_and_a_failure_cut_and_no_limits_never_do() {
        let none = Cutoff::default();
        none.journey_failed();
        assert_eq!(none.reached(), None);
        let idle = tokio::time::timeout(Duration::from_millis(20), none.wait()).await;
        assert!(idle.is_err(), "a run without limits was cut");

        let deadline = Cutoff::start(Some(Duration::from_millis(10)), false);
        assert_eq!(
            deadline.wait().await,
            Cut::Deadline(Duration::from_millis(10))
        );
        assert!(deadline.reached().is_some());

        let fast = Cutoff::start(None, true);
        let waiter = tokio::spawn({
            let fast = fast.clone();
            async move { fast.wait().await }
        });
        fast.journey_failed();
        assert_eq!(waiter.await.unwrap(), Cut::FailFast);
    }
}
