//! The simulator's clock: tokio's monotonic clock, plus a wall clock anchored to it that a
//! test can set, as NTP steps a host's clock.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

/// Tokio's clock for rolling windows, token lifetimes and delays, and a wall clock that
/// advances with it from an anchor, for the hourly rule aligned to the Unix epoch. Setting
/// the wall clock moves the anchor: from then on it advances from the new reading.
#[derive(Debug)]
pub(crate) struct SimClock {
    /// A tokio instant and the wall clock's reading at it.
    anchor: Mutex<(Instant, SystemTime)>,
}

impl SimClock {
    pub(crate) fn new(start: Option<SystemTime>) -> Self {
        Self {
            anchor: Mutex::new((Instant::now(), start.unwrap_or_else(SystemTime::now))),
        }
    }

    pub(crate) fn now(&self) -> Instant {
        Instant::now()
    }

    /// The wall clock reads `wall` now.
    pub(crate) fn set_wall(&self, wall: SystemTime) {
        *self.anchor.lock().unwrap_or_else(PoisonError::into_inner) = (Instant::now(), wall);
    }

    /// The wall-clock reading at `instant` (not before the latest setting).
    pub(crate) fn wall_at(&self, instant: Instant) -> SystemTime {
        let (anchor_instant, anchor_wall) =
            *self.anchor.lock().unwrap_or_else(PoisonError::into_inner);
        anchor_wall + instant.saturating_duration_since(anchor_instant)
    }

    /// Time since the Unix epoch at `instant`.
    pub(crate) fn since_epoch(&self, instant: Instant) -> Duration {
        self.wall_at(instant)
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
    }

    /// The index of the aligned period containing `instant`, and the instant it ends (were
    /// the wall clock not set again meanwhile).
    pub(crate) fn period(&self, instant: Instant, period: Duration) -> (u128, Instant) {
        let since = self.since_epoch(instant).as_nanos();
        let len = period.as_nanos().max(1);
        let index = since / len;
        let remaining = len - since % len;
        let remaining = Duration::from_nanos(u64::try_from(remaining).unwrap_or(u64::MAX));
        (index, instant + remaining)
    }
}
