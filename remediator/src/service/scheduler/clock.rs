//! The scheduler's clock. In the field it is the system's; in the scenario tests it follows
//! tokio's clock, which a test pauses and moves on by minutes or hours (a retry's delay, a
//! window's opening, a cooldown) without waiting for them.

use std::time::SystemTime;

#[derive(Debug, Clone)]
pub(crate) enum Clock {
    System,
    /// The system's time when it was made, moved on as far as the clock of the runtime
    /// `handle` moved since: read on any thread (the store's own too), it is that runtime's.
    #[cfg_attr(not(test), allow(dead_code))]
    FollowsTokio {
        started: SystemTime,
        at: tokio::time::Instant,
        handle: tokio::runtime::Handle,
    },
}

impl Clock {
    pub(crate) fn now(&self) -> SystemTime {
        match self {
            Clock::System => SystemTime::now(),
            Clock::FollowsTokio {
                started,
                at,
                handle,
            } => {
                let _runtime = handle.enter();
                *started + at.elapsed()
            }
        }
    }

    /// A clock that moves only as tokio's does (paused in a test, it moves when the test
    /// advances it or every task waits on a timer).
    #[cfg(test)]
    pub(crate) fn following_tokio() -> Clock {
        Clock::FollowsTokio {
            started: SystemTime::now(),
            at: tokio::time::Instant::now(),
            handle: tokio::runtime::Handle::current(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_clock_following_tokio_moves_when_tokio_time_is_advanced() {
        let clock = Clock::following_tokio();
        let before = clock.now();
        tokio::time::advance(Duration::from_secs(3600)).await;
        let moved = clock.now().duration_since(before).unwrap();
        assert!(moved >= Duration::from_secs(3600), "{moved:?}");
        assert!(moved < Duration::from_secs(3601), "{moved:?}");
        // The same on another thread, as the store's is.
        let elsewhere = clock.clone();
        let there = std::thread::spawn(move || elsewhere.now()).join().unwrap();
        let moved = there.duration_since(before).unwrap();
        assert!(
            moved >= Duration::from_secs(3600),
            "on another thread: {moved:?}"
        );
    }
}
