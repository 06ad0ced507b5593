//! Every wait of a run, in one place: look at a condition until it holds or a deadline
//! passes, report progress while it takes long, and decide explicitly what a stop request
//! does: it interrupts a wait that changes nothing (members to serve reads, the pause between
//! members), but not one that is part of finishing the member under way (its catch-up, the
//! leader's handover), which must end first.

use std::future::Future;
use std::time::Duration;

// Tokio's clock, so that the scenario tests' paused time drives every wait.
use tokio::time::Instant;

use tokio_util::sync::CancellationToken;

/// How often a wait looks again.
pub(super) const POLL_EVERY: Duration = Duration::from_millis(200);
/// How often a long wait or call reports that it is still going.
pub(super) const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// What a stop request does to a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum OnStop {
    /// The wait ends at once with [`WaitError::Stopped`].
    Interrupt,
    /// The wait goes on to its end.
    Finish,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum WaitError {
    /// The deadline passed; `last` is what was still missing.
    TimedOut {
        after: Duration,
        last: String,
    },
    Stopped,
}

/// How a wait is bounded.
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds<'a> {
    pub within: Duration,
    pub on_stop: OnStop,
    pub stop: &'a CancellationToken,
}

/// A wait for a condition the caller checks in a loop:
///
/// ```ignore
/// let mut waiter = Waiter::new(bounds);
/// let value = loop {
///     match check().await {
///         Ok(value) => break value,
///         Err(missing) => waiter.missed(&missing, |elapsed, missing| report()).await?,
///     }
/// };
/// ```
pub(super) struct Waiter<'a> {
    bounds: Bounds<'a>,
    started: Instant,
    reported: Option<Instant>,
}

impl<'a> Waiter<'a> {
    pub(super) fn new(bounds: Bounds<'a>) -> Self {
        Waiter {
            bounds,
            started: Instant::now(),
            reported: None,
        }
    }

    pub(super) fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// The condition does not hold yet; `missing` says why. Ends the wait once its deadline
    /// passed (and, with [`OnStop::Interrupt`], on a stop request); otherwise reports
    /// progress at the first miss and every [`PROGRESS_EVERY`], and sleeps [`POLL_EVERY`]
    /// before the next look.
    pub(super) async fn missed(
        &mut self,
        missing: &str,
        progress: impl FnOnce(Duration, &str),
    ) -> Result<(), WaitError> {
        if self.started.elapsed() >= self.bounds.within {
            return Err(WaitError::TimedOut {
                after: self.bounds.within,
                last: missing.to_string(),
            });
        }
        if self
            .reported
            .is_none_or(|at| at.elapsed() >= PROGRESS_EVERY)
        {
            self.reported = Some(Instant::now());
            progress(self.started.elapsed(), missing);
        }
        pause(POLL_EVERY, self.bounds.on_stop, self.bounds.stop).await
    }
}

/// Sleeps `duration`; with [`OnStop::Interrupt`], a stop request ends it early.
pub(super) async fn pause(
    duration: Duration,
    on_stop: OnStop,
    stop: &CancellationToken,
) -> Result<(), WaitError> {
    if on_stop == OnStop::Interrupt && stop.is_cancelled() {
        return Err(WaitError::Stopped);
    }
    match on_stop {
        OnStop::Finish => tokio::time::sleep(duration).await,
        OnStop::Interrupt => tokio::select! {
            _ = tokio::time::sleep(duration) => {}
            _ = stop.cancelled() => return Err(WaitError::Stopped),
        },
    }
    Ok(())
}

/// Waits at most `within` for `call`, calling `progress` with the time taken every
/// [`PROGRESS_EVERY`]. A stop request does not end it: the call's work goes on in etcd
/// anyway, and it is the member under way. `None` when `within` passed; the call itself is
/// borrowed, so the caller decides whether it goes on.
pub(super) async fn call<T>(
    within: Duration,
    mut progress: impl FnMut(Duration),
    call: impl Future<Output = T> + Unpin,
) -> Option<T> {
    let started = Instant::now();
    let call = tokio::time::timeout(within, call);
    tokio::pin!(call);
    let first = Instant::now() + PROGRESS_EVERY;
    let mut ticks = tokio::time::interval_at(first, PROGRESS_EVERY);
    loop {
        tokio::select! {
            result = &mut call => return result.ok(),
            _ = ticks.tick() => progress(started.elapsed()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(stop: &CancellationToken, on_stop: OnStop) -> Bounds<'_> {
        Bounds {
            within: Duration::from_secs(10),
            on_stop,
            stop,
        }
    }

    /// Waits until the `ready_at`-th look, as the engine's loops do.
    async fn wait(
        mut waiter: Waiter<'_>,
        ready_at: usize,
        reports: &mut Vec<Duration>,
    ) -> Result<usize, WaitError> {
        let mut looks = 0;
        loop {
            looks += 1;
            if looks == ready_at {
                return Ok(looks);
            }
            waiter
                .missed(&format!("look {looks}"), |elapsed, _| reports.push(elapsed))
                .await?;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_when_the_condition_holds_or_at_its_deadline() {
        let stop = CancellationToken::new();
        let mut reports = Vec::new();
        let bounded = bounds(&stop, OnStop::Interrupt);
        assert_eq!(wait(Waiter::new(bounded), 3, &mut reports).await, Ok(3));

        let started = tokio::time::Instant::now();
        let mut reports = Vec::new();
        let never = wait(Waiter::new(bounded), usize::MAX, &mut reports).await;
        assert_eq!(
            never,
            Err(WaitError::TimedOut {
                after: Duration::from_secs(10),
                last: "look 51".into()
            })
        );
        assert!(started.elapsed() >= Duration::from_secs(10));
        // At the first miss and five seconds later; at ten the wait is over.
        assert_eq!(reports.len(), 2, "{reports:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_interrupts_only_the_waits_that_may_be_interrupted() {
        let stop = CancellationToken::new();
        stop.cancel();
        let mut reports = Vec::new();
        let interrupted = wait(
            Waiter::new(bounds(&stop, OnStop::Interrupt)),
            usize::MAX,
            &mut reports,
        )
        .await;
        assert_eq!(interrupted, Err(WaitError::Stopped));
        let finished = wait(Waiter::new(bounds(&stop, OnStop::Finish)), 4, &mut reports).await;
        assert_eq!(finished, Ok(4));
        assert_eq!(
            pause(Duration::from_secs(5), OnStop::Interrupt, &stop).await,
            Err(WaitError::Stopped)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_call_reports_progress_and_gives_up_at_its_limit() {
        let mut reports = 0;
        let answer = call(
            Duration::from_secs(60),
            |_| reports += 1,
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(12)).await;
                7
            }),
        )
        .await;
        assert_eq!(answer, Some(7));
        assert_eq!(reports, 2);
        let late = call(Duration::from_secs(3), |_| {}, std::future::pending::<()>()).await;
        assert_eq!(late, None);
    }
}
