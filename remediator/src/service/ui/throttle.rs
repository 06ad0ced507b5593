//! Failed logins per client address: after a few wrong credentials in a row, that address
//! may not try again for a while, so a script cannot guess a password through the login
//! form at the speed of the network. Bounded: the oldest addresses are forgotten first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Wrong credentials an address may send before it waits.
const ATTEMPTS: u32 = 5;
/// How long it then waits; a success or the end of the wait starts afresh.
const WAIT: Duration = Duration::from_secs(60);
/// More addresses than any team uses at once.
const MAX_ADDRESSES: usize = 4096;

#[derive(Clone, Default)]
pub(crate) struct LoginThrottle {
    failures: Arc<Mutex<HashMap<IpAddr, Failures>>>,
}

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

impl LoginThrottle {
    /// How long `address` must still wait before it may try, if it must.
    pub(super) fn wait(&self, address: IpAddr, now: Instant) -> Option<Duration> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let failed = failures.get(&address)?;
        let until = failed.last + WAIT;
        (failed.count >= ATTEMPTS && until > now).then(|| until - now)
    }

    /// A wrong credential from `address`.
    pub(super) fn failed(&self, address: IpAddr, now: Instant) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&address) {
            failures.retain(|_, failed| failed.last + WAIT > now);
            if failures.len() >= MAX_ADDRESSES {
                if let Some(oldest) = failures.iter().min_by_key(|(_, f)| f.last).map(|(a, _)| *a) {
                    failures.remove(&oldest);
                }
            }
        }
        let entry = failures.entry(address).or_insert(Failures {
            count: 0,
            last: now,
        });
        if entry.last + WAIT <= now {
            entry.count = 0;
        }
        entry.count += 1;
        entry.last = now;
    }

    /// A good credential from `address`: its count starts again.
    pub(super) fn succeeded(&self, address: IpAddr) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.remove(&address);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_waits_after_a_few_failures_and_others_do_not() {
        let throttle = LoginThrottle::default();
        let guesser: IpAddr = "10.0.0.5".parse().unwrap();
        let colleague: IpAddr = "10.0.0.6".parse().unwrap();
        let start = Instant::now();
        for attempt in 0..ATTEMPTS {
            assert_eq!(throttle.wait(guesser, start), None, "attempt {attempt}");
            throttle.failed(guesser, start);
        }
        assert_eq!(throttle.wait(guesser, start), Some(WAIT));
        let later = start + Duration::from_secs(45);
        assert_eq!(throttle.wait(guesser, later), Some(Duration::from_secs(15)));
        assert_eq!(throttle.wait(colleague, later), None);
        // The wait over, one more failure does not lock it out again at once.
        let after = start + WAIT;
        assert_eq!(throttle.wait(guesser, after), None);
        throttle.failed(guesser, after);
        assert_eq!(throttle.wait(guesser, after), None);
        // A success starts afresh.
        for _ in 0..ATTEMPTS - 1 {
            throttle.failed(colleague, after);
        }
        throttle.succeeded(colleague);
        throttle.failed(colleague, after);
        assert_eq!(throttle.wait(colleague, after), None);
    }

    #[test]
    fn the_addresses_remembered_are_bounded() {
        let throttle = LoginThrottle::default();
        let now = Instant::now();
        for i in 0..(MAX_ADDRESSES as u32 + 100) {
            throttle.failed(IpAddr::from(i.to_be_bytes()), now);
        }
        let kept = throttle
            .failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert!(kept <= MAX_ADDRESSES, "{kept}");
    }
}
