//! The simulator's clock: tokio's monotonic clock, plus a wall clock anchored to it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Tokio's clock for rolling windows and token lifetimes, and a wall clock that advances
/// with it from an anchor, for the hourly rule aligned to the Unix epoch.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SimClock {
    anchor_instant: Instant,
    anchor_wall: SystemTime,
}

impl SimClock {
    pub(crate) fn new(start: Option<SystemTime>) -> Self {
        Self {
            anchor_instant: Instant::now(),
            anchor_wall: start.unwrap_or_else(SystemTime::now),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::now()
    }

    /// The wall-clock reading at `instant`.
    pub(crate) fn wall_at(&self, instant: Instant) -> SystemTime {
        self.anchor_wall + instant.saturating_duration_since(self.anchor_instant)
    }

    /// Time since the Unix epoch at `instant`.
    pub(crate) fn since_epoch(&self, instant: Instant) -> Duration {
        self.wall_at(instant)
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }

    /// The index of the aligned period containing `instant`, and the instant it ends.
    pub(crate) fn period(&self, instant: Instant, period: Duration) -> (u128, Instant) {
        let since = self.since_epoch(instant).as_nanos();
        let len = period.as_nanos().max(1);
        let index = since / len;
        let remaining = len - since % len;
        let remaining = Duration::from_nanos(u64::try_from(remaining).unwrap_or(u64::MAX));
        (index, instant + remaining)
    }
}
