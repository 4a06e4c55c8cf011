//! [`Backoff`]: the jittered exponential schedule of delays before 5xx retries.

use std::time::Duration;

use rand::{Rng, RngExt};

use crate::ConfigError;

/// Exponential backoff with uniform jitter, capped: the schedule DrChrono asks for after a
/// 5xx ("a 25-30 second retry … with an exponential backoff period … jitter").
///
/// Retry `n` (1-based) waits a delay drawn uniformly, at millisecond resolution, from
/// `[min · multiplier^(n-1), max · multiplier^(n-1)]`, each bound capped at `cap`.
/// With the defaults (`25 s`, `30 s`, `×2`, cap `120 s`) the three retries wait
/// `[25, 30] s`, `[50, 60] s` and `[100, 120] s`.
///
/// The schedule is pure: the random source is an argument, so a seeded RNG reproduces it.
///
/// ```
/// use std::time::Duration;
/// use drchrono_retry::Backoff;
///
/// let backoff = Backoff::default();
/// assert_eq!(
///     backoff.bounds(2),
///     (Duration::from_secs(50), Duration::from_secs(60))
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    multiplier: f64,
    cap: Duration,
}

impl Backoff {
    /// Default lower bound of the first delay: 25 s (DrChrono: "25-30 second retry").
    pub const DEFAULT_MIN: Duration = Duration::from_secs(25);
    /// Default upper bound of the first delay: 30 s.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(30);
    /// Default growth factor between retries: 2 (exponential backoff).
    pub const DEFAULT_MULTIPLIER: f64 = 2.0;
    /// Default cap on any single delay: 120 s.
    pub const DEFAULT_CAP: Duration = Duration::from_secs(120);

    /// A schedule whose first delay lies in `[min, max]`, growing by `multiplier` per retry,
    /// no delay longer than `cap`.
    ///
    /// # Errors
    /// [`ConfigError::DelayRange`] when `min > max`; [`ConfigError::Multiplier`] when
    /// `multiplier` is not finite or is below 1.
    pub fn new(
        min: Duration,
        max: Duration,
        multiplier: f64,
        cap: Duration,
    ) -> Result<Self, ConfigError> {
        if min > max {
            return Err(ConfigError::DelayRange { min, max });
        }
        if !multiplier.is_finite() || multiplier < 1.0 {
            return Err(ConfigError::Multiplier(multiplier));
        }
        Ok(Self {
            min,
            max,
            multiplier,
            cap,
        })
    }

    /// The bounds `(lower, upper)` of the delay before retry `retry` (1-based; `0` is
    /// treated as `1`), capped, truncated to whole milliseconds.
    pub fn bounds(&self, retry: u32) -> (Duration, Duration) {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.powi(exponent);
        let scale = |base: Duration| {
            Duration::try_from_secs_f64(base.as_secs_f64() * factor)
                .map_or(self.cap, |d| d.min(self.cap))
        };
        (whole_millis(scale(self.min)), whole_millis(scale(self.max)))
    }

    /// The delay before retry `retry` (1-based): uniform within [`Backoff::bounds`], at
    /// millisecond resolution.
    pub fn delay<R: Rng + ?Sized>(&self, retry: u32, rng: &mut R) -> Duration {
        let (lo, hi) = self.bounds(retry);
        let (lo, hi) = (millis(lo), millis(hi));
        if lo >= hi {
            return Duration::from_millis(lo);
        }
        Duration::from_millis(rng.random_range(lo..=hi))
    }
}

impl Default for Backoff {
    /// `[25 s, 30 s]`, `×2`, capped at `120 s`.
    fn default() -> Self {
        Self {
            min: Self::DEFAULT_MIN,
            max: Self::DEFAULT_MAX,
            multiplier: Self::DEFAULT_MULTIPLIER,
            cap: Self::DEFAULT_CAP,
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn whole_millis(d: Duration) -> Duration {
    Duration::from_millis(millis(d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    const fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn default_schedule_follows_drchrono() {
        let b = Backoff::default();
        assert_eq!(b.bounds(1), (s(25), s(30)));
        assert_eq!(b.bounds(2), (s(50), s(60)));
        assert_eq!(b.bounds(3), (s(100), s(120)));
        // Capped from here on.
        assert_eq!(b.bounds(4), (s(120), s(120)));
        assert_eq!(b.bounds(u32::MAX), (s(120), s(120)));
        assert_eq!(b.bounds(0), b.bounds(1));
    }

    #[test]
    fn delays_stay_within_bounds_and_jitter() {
        let b = Backoff::default();
        let mut rng = StdRng::seed_from_u64(7);
        for retry in 1..=5 {
            let (lo, hi) = b.bounds(retry);
            let draws: Vec<_> = (0..200).map(|_| b.delay(retry, &mut rng)).collect();
            assert!(draws.iter().all(|d| *d >= lo && *d <= hi), "retry {retry}");
            if lo < hi {
                let first = draws[0];
                assert!(draws.iter().any(|d| *d != first), "no jitter at {retry}");
            }
        }
    }

    #[test]
    fn seeded_rng_reproduces_the_schedule() {
        let b = Backoff::default();
        let run = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..=3).map(|n| b.delay(n, &mut rng)).collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }

    #[test]
    fn invalid_settings_are_typed_errors() {
        assert_eq!(
            Backoff::new(s(30), s(25), 2.0, s(120)),
            Err(ConfigError::DelayRange {
                min: s(30),
                max: s(25)
            })
        );
        assert!(matches!(
            Backoff::new(s(1), s(2), 0.5, s(120)),
            Err(ConfigError::Multiplier(_))
        ));
        assert!(matches!(
            Backoff::new(s(1), s(2), f64::NAN, s(120)),
            Err(ConfigError::Multiplier(_))
        ));
        assert!(matches!(
            Backoff::new(s(1), s(2), f64::INFINITY, s(120)),
            Err(ConfigError::Multiplier(_))
        ));
    }

    #[test]
    fn huge_values_saturate_at_the_cap() {
        let b = Backoff::new(s(u64::MAX / 4), s(u64::MAX / 2), 1e300, s(60)).unwrap();
        assert_eq!(b.bounds(50), (s(60), s(60)));
        let fixed = Backoff::new(s(5), s(5), 1.0, s(60)).unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(fixed.delay(3, &mut rng), s(5));
    }
}
