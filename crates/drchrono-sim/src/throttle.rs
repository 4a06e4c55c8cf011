//! Throttling, written the most obviously-correct way: a log of the requests each rule
//! recorded, counted on every decision. It is the test oracle for the client's limiter and
//! shares no code with it.
//!
//! As in Django REST Framework, every rule is asked about every request; a rule that allows
//! it records it, even when another rule refuses (so a 429 still spends budget in the
//! others); the rule that refuses does not record it.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use crate::clock::SimClock;

/// Which rule refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rule {
    Second,
    Window,
    Hour,
}

/// A rolling-window rule: at most `max` recorded requests in any `(t - window, t]`.
#[derive(Debug)]
struct Sliding {
    max: u32,
    window: Duration,
    log: Vec<Instant>,
}

impl Sliding {
    /// `None` when `now` is allowed, else how long until it would be.
    fn check(&mut self, now: Instant) -> Option<Duration> {
        // An entry at exactly `now - window` has left the window (DRF: `<= now - duration`).
        self.log.retain(|&at| at + self.window > now);
        let max = self.max as usize;
        if self.log.len() < max {
            return None;
        }
        // The count drops below `max` once the entry `len - max` places from the newest
        // leaves the window. With max == 0 the rule never admits anything.
        let Some(&pivot) = self.log.get(self.log.len() - max) else {
            return Some(self.window);
        };
        Some((pivot + self.window).saturating_duration_since(now))
    }
}

/// Periods (of the wall clock) kept per aligned count: a day of hours. A wall clock set back
/// further finds a fresh period.
const PERIODS_KEPT: u128 = 24;

/// Counts per aligned period index, so that a wall clock set back into an earlier period
/// finds what that period already holds (as a server keeping one counter per period does).
#[derive(Debug, Default)]
struct PeriodCounts(BTreeMap<u128, u64>);

impl PeriodCounts {
    fn get(&self, index: u128) -> u64 {
        self.0.get(&index).copied().unwrap_or(0)
    }

    /// Adds one to `index`; returns its new count.
    fn add(&mut self, index: u128) -> u64 {
        let count = self.0.entry(index).or_default();
        *count += 1;
        let count = *count;
        let latest = self.0.last_key_value().map_or(index, |(&latest, _)| latest);
        self.0.retain(|&kept, _| kept + PERIODS_KEPT > latest);
        count
    }
}

/// A rule aligned to the clock: at most `max` recorded requests per period, periods counted
/// from the Unix epoch on the wall clock.
#[derive(Debug)]
struct Aligned {
    max: u32,
    period: Duration,
    /// Recorded requests per period index.
    counts: PeriodCounts,
}

impl Aligned {
    fn check(&mut self, clock: &SimClock, now: Instant) -> (u128, Option<Duration>) {
        let (index, ends_at) = clock.period(now, self.period);
        if self.counts.get(index) < u64::from(self.max) {
            (index, None)
        } else {
            (index, Some(ends_at.saturating_duration_since(now)))
        }
    }
}

/// The three rules of one application.
#[derive(Debug)]
pub(crate) struct Throttles {
    second: Sliding,
    window: Sliding,
    hour: Aligned,
}

/// The outcome of asking every rule about one request.
#[derive(Debug)]
pub(crate) struct Decision {
    /// The rules that refused, with their waits.
    pub(crate) refused: Vec<(Rule, Duration)>,
}

impl Decision {
    /// DRF's wait: the longest among the refusing rules, rounded up to whole seconds.
    pub(crate) fn wait_secs(&self) -> Option<u64> {
        let longest = self.refused.iter().map(|&(_, wait)| wait).max()?;
        let secs = longest.as_secs() + u64::from(longest.subsec_nanos() > 0);
        Some(secs.max(1))
    }
}

impl Throttles {
    pub(crate) fn new(
        max_per_second: u32,
        max_per_window: u32,
        window: Duration,
        max_per_hour: u32,
        hour: Duration,
    ) -> Self {
        Self {
            second: Sliding {
                max: max_per_second,
                window: Duration::from_secs(1),
                log: Vec::new(),
            },
            window: Sliding {
                max: max_per_window,
                window,
                log: Vec::new(),
            },
            hour: Aligned {
                max: max_per_hour,
                period: hour,
                counts: PeriodCounts::default(),
            },
        }
    }

    /// Asks every rule; records the request in each rule that allowed it.
    pub(crate) fn decide(&mut self, clock: &SimClock, now: Instant) -> Decision {
        let mut refused = Vec::new();
        match self.second.check(now) {
            None => self.second.log.push(now),
            Some(wait) => refused.push((Rule::Second, wait)),
        }
        match self.window.check(now) {
            None => self.window.log.push(now),
            Some(wait) => refused.push((Rule::Window, wait)),
        }
        match self.hour.check(clock, now) {
            (index, None) => {
                self.hour.counts.add(index);
            }
            (_, Some(wait)) => refused.push((Rule::Hour, wait)),
        }
        Decision { refused }
    }
}

/// The most accepted requests seen in any rolling second, any rolling window and any
/// aligned hour (counted per hour of the wall clock, wherever it was set): what
/// `/sim/stats` reports as peaks.
#[derive(Debug)]
pub(crate) struct Peaks {
    window: Duration,
    hour: Duration,
    accepted: Vec<Instant>,
    per_hour: PeriodCounts,
    pub(crate) second: u64,
    pub(crate) rolling: u64,
    pub(crate) aligned: u64,
}

impl Peaks {
    pub(crate) fn new(window: Duration, hour: Duration) -> Self {
        Self {
            window,
            hour,
            accepted: Vec::new(),
            per_hour: PeriodCounts::default(),
            second: 0,
            rolling: 0,
            aligned: 0,
        }
    }

    /// Records an accepted request. The busiest window of any length ends at an accepted
    /// request, so counting at each one finds every peak.
    pub(crate) fn record(&mut self, clock: &SimClock, now: Instant) {
        let keep = self.window.max(Duration::from_secs(1));
        self.accepted.retain(|&at| at + keep > now);
        self.accepted.push(now);
        let count_in =
            |len: Duration| self.accepted.iter().filter(|&&at| at + len > now).count() as u64;
        self.second = self.second.max(count_in(Duration::from_secs(1)));
        self.rolling = self.rolling.max(count_in(self.window));
        let (index, _) = clock.period(now, self.hour);
        self.aligned = self.aligned.max(self.per_hour.add(index));
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use super::*;

    #[test]
    fn the_hour_follows_the_wall_clock_and_remembers_earlier_hours() {
        // 2026-01-05T10:59:50Z.
        let start = UNIX_EPOCH + Duration::from_secs(1_767_610_790);
        let secs = Duration::from_secs;
        let clock = SimClock::new(Some(start));
        let hour = secs(3600);
        let mut throttles = Throttles::new(100, 100, secs(600), 2, hour);
        let mut peaks = Peaks::new(secs(600), hour);
        let mut decide = |at: SystemTime| {
            clock.set_wall(at);
            let now = clock.now();
            let decision = throttles.decide(&clock, now);
            if decision.refused.is_empty() {
                peaks.record(&clock, now);
            }
            decision
                .refused
                .iter()
                .map(|&(rule, _)| rule)
                .collect::<Vec<_>>()
        };
        assert_eq!(decide(start), []);
        assert_eq!(decide(start), []);
        assert_eq!(decide(start), [Rule::Hour]);
        // Stepped into 11:00: a fresh hour; then back into 10:00, still full.
        assert_eq!(decide(start + secs(20)), []);
        assert_eq!(decide(start + secs(5)), [Rule::Hour]);
        assert_eq!(decide(start + secs(25)), []);
        assert_eq!(decide(start + secs(26)), [Rule::Hour]);
        assert_eq!(peaks.aligned, 2);
    }
}
