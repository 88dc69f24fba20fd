//! Per-address throttling of failed sign-ins: a password sprayer who rotates through
//! accounts never trips any one account's lockout, but does trip this.
//!
//! In memory and bounded: at most [`MAX_TRACKED`] addresses; when full, the entries
//! whose failures are all older than the window go first, then the quietest.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most addresses tracked at once.
pub const MAX_TRACKED: usize = 100_000;

#[derive(Debug)]
pub struct IpThrottle {
    limit: usize,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl IpThrottle {
    pub fn new(limit: usize, window: Duration) -> Self {
        IpThrottle {
            limit: limit.max(1),
            window,
            failures: Mutex::default(),
        }
    }

    /// How long `ip` must wait before trying again; `None` if it may try now.
    pub fn blocked_for(&self, ip: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        let mut failures = self.failures.lock().ok()?;
        let times = failures.get_mut(&ip)?;
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            times.pop_front();
        }
        if times.len() < self.limit {
            return None;
        }
        let oldest = *times.front()?;
        Some(self.window.saturating_sub(now.duration_since(oldest)))
    }

    /// Counts a failed attempt from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let Ok(mut failures) = self.failures.lock() else {
            return;
        };
        if failures.len() >= MAX_TRACKED && !failures.contains_key(&ip) {
            let window = self.window;
            failures.retain(|_, times| {
                times
                    .back()
                    .is_some_and(|t| now.duration_since(*t) < window)
            });
            if failures.len() >= MAX_TRACKED
                && let Some(quietest) = failures
                    .iter()
                    .min_by_key(|(_, times)| times.len())
                    .map(|(ip, _)| *ip)
            {
                failures.remove(&quietest);
            }
        }
        let times = failures.entry(ip).or_default();
        times.push_back(now);
        while times.len() > self.limit {
            times.pop_front();
        }
    }

    /// Forgets `ip`'s failures (after a successful sign-in).
    pub fn succeeded(&self, ip: IpAddr) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(&ip);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_within_the_window() {
        let throttle = IpThrottle::new(3, Duration::from_secs(60));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.2".parse().expect("ip");
        for _ in 0..2 {
            throttle.failed(ip);
        }
        assert_eq!(throttle.blocked_for(ip), None);
        throttle.failed(ip);
        assert!(
            throttle
                .blocked_for(ip)
                .is_some_and(|d| d > Duration::from_secs(50))
        );
        assert_eq!(throttle.blocked_for(other), None, "per address");
        throttle.succeeded(ip);
        assert_eq!(throttle.blocked_for(ip), None);
    }

    #[test]
    fn failures_expire_with_the_window() {
        let throttle = IpThrottle::new(1, Duration::from_millis(20));
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        throttle.failed(ip);
        assert!(throttle.blocked_for(ip).is_some());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(throttle.blocked_for(ip), None);
    }
}
