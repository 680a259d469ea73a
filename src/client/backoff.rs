//! Reconnect delays, as the AMPS HAClient computes them.
//!
//! Each server keeps its own count of consecutive failed attempts. The first attempt to a server
//! is immediate; after `n` failures the next waits `initial * 2^(n-1)`, capped at `max`, with
//! up to `jitter` of it randomly added or removed so that many clients do not retry in step.
//! A successful logon resets every count.

use std::time::Duration;

use crate::client::config::Backoff;

/// Per-server failure counts and the jitter source.
#[derive(Debug)]
pub(crate) struct Reconnects {
    failures: Vec<u32>,
    rng: u64,
}

impl Reconnects {
    pub(crate) fn new(servers: usize) -> Reconnects {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
            | 1;
        Reconnects {
            failures: vec![0; servers.max(1)],
            rng: seed,
        }
    }

    /// Records a failed attempt on `server`.
    pub(crate) fn failed(&mut self, server: usize) {
        if let Some(f) = self.failures.get_mut(server) {
            *f = f.saturating_add(1);
        }
    }

    /// Counts at least `n` failures on `server` (a server that broke the protocol `n` times in
    /// a row is retried with the delay of `n` failed attempts).
    pub(crate) fn penalize(&mut self, server: usize, n: u32) {
        if let Some(f) = self.failures.get_mut(server) {
            *f = (*f).max(n);
        }
    }

    /// Forgets every failure (after a successful logon).
    pub(crate) fn reset(&mut self) {
        self.failures.iter_mut().for_each(|f| *f = 0);
    }

    /// How long to wait before the next attempt on `server`.
    pub(crate) fn delay(&mut self, policy: &Backoff, server: usize) -> Duration {
        let n = self.failures.get(server).copied().unwrap_or(0);
        if n == 0 {
            return Duration::ZERO;
        }
        match *policy {
            Backoff::Fixed(d) => d,
            Backoff::Exponential {
                initial,
                max,
                jitter,
            } => {
                let base = initial.saturating_mul(1u32 << (n - 1).min(20)).min(max);
                let jitter = jitter.clamp(0.0, 1.0);
                // xorshift64: uniform enough for spreading retries.
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                let unit = (self.rng >> 11) as f64 / (1u64 << 53) as f64; // [0, 1)
                let factor = 1.0 + jitter * (2.0 * unit - 1.0);
                base.mul_f64(factor).min(max)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_attempt_immediate_then_doubling_to_the_cap() {
        let policy = Backoff::Exponential {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(20),
            jitter: 0.0,
        };
        let mut r = Reconnects::new(2);
        assert_eq!(r.delay(&policy, 0), Duration::ZERO);
        let mut seen = Vec::new();
        for _ in 0..10 {
            r.failed(0);
            seen.push(r.delay(&policy, 0).as_millis());
        }
        assert_eq!(
            seen,
            [200, 400, 800, 1600, 3200, 6400, 12800, 20000, 20000, 20000]
        );
        assert_eq!(
            r.delay(&policy, 1),
            Duration::ZERO,
            "each server has its own count"
        );
        r.reset();
        assert_eq!(r.delay(&policy, 0), Duration::ZERO);
    }

    #[test]
    fn a_protocol_violation_streak_delays_the_retry() {
        let policy = Backoff::Exponential {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(20),
            jitter: 0.0,
        };
        let mut r = Reconnects::new(1);
        r.penalize(0, 3);
        assert_eq!(r.delay(&policy, 0), Duration::from_millis(800));
        r.penalize(0, 1);
        assert_eq!(
            r.delay(&policy, 0),
            Duration::from_millis(800),
            "never lowers the count"
        );
    }

    #[test]
    fn jitter_stays_within_bounds_and_fixed_is_fixed() {
        let policy = Backoff::Exponential {
            initial: Duration::from_millis(1000),
            max: Duration::from_secs(20),
            jitter: 0.2,
        };
        let mut r = Reconnects::new(1);
        r.failed(0);
        for _ in 0..100 {
            let d = r.delay(&policy, 0).as_millis();
            assert!((800..=1200).contains(&d), "{d}");
        }
        assert_eq!(
            r.delay(&Backoff::Fixed(Duration::from_millis(50)), 0),
            Duration::from_millis(50)
        );
    }
}
