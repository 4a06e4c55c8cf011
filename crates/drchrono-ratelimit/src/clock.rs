//! [`Clock`]: wall time for the limiter, and the bridge to tokio's timer.

use std::fmt;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::time::{duration_nanos, floor_ms_time, to_nanos};

/// Supplies the wall-clock `now` the limiter decides on, and maps wall instants to tokio
/// instants for sleeping.
///
/// Aligned rules need wall time (the UTC top of the hour); sleeping needs tokio's clock. The
/// default conversions assume the two advance together from this very moment.
pub trait Clock: fmt::Debug + Send + Sync + 'static {
    /// The current wall-clock time.
    fn now(&self) -> SystemTime;

    /// The tokio instant at which this clock will read `t` (now, if `t` has passed).
    fn instant_at(&self, t: SystemTime) -> Instant {
        let (wall, instant) = (self.now(), Instant::now());
        t.duration_since(wall).map_or(instant, |d| {
            instant.checked_add(d).unwrap_or_else(far_future)
        })
    }

    /// The wall time this clock reads at tokio instant `i`.
    fn wall_at(&self, i: Instant) -> SystemTime {
        let (wall, instant) = (self.now(), Instant::now());
        if i >= instant {
            wall.checked_add(i - instant).unwrap_or(wall)
        } else {
            wall.checked_sub(instant - i)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }
}

/// The default clock: wall time follows tokio's clock from an anchor,
/// `now = anchor_wall + (tokio::time::Instant::now() - anchor_instant)`.
///
/// So paused-time tests (`tokio::time::pause`, `start_paused = true`) move the wall clock
/// too, and a 24-hour run takes milliseconds. The anchor's wall time is rounded down to a
/// whole millisecond, so that whole-millisecond instants of the wall clock fall on tokio's
/// 1 ms timer ticks when the anchor instant does (always under paused time): sleeps then
/// end exactly on the instants the limiter computed.
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use drchrono_ratelimit::{Clock, TokioClock};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420);
/// let clock = TokioClock::starting_at(start);
/// tokio::time::sleep(Duration::from_secs(5)).await;
/// assert_eq!(clock.now(), start + Duration::from_secs(5));
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    anchor_wall: SystemTime,
    /// `anchor_wall` in nanoseconds since the Unix epoch (`None` before it).
    anchor_nanos: Option<u64>,
    anchor_instant: Instant,
}

impl TokioClock {
    /// Anchored at `SystemTime::now()` (rounded down to the millisecond) and tokio's now
    /// (the runtime's clock inside a runtime, the system's monotonic clock outside).
    pub fn new() -> Self {
        Self::starting_at(SystemTime::now())
    }

    /// Reads `start` (rounded down to the millisecond) at tokio's current instant: for
    /// planning and tests under paused time.
    pub fn starting_at(start: SystemTime) -> Self {
        let anchor_wall = floor_ms_time(start);
        Self {
            anchor_wall,
            anchor_nanos: anchor_wall
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(duration_nanos),
            anchor_instant: Instant::now(),
        }
    }

    /// [`Clock::now`] in nanoseconds since the Unix epoch, in integer arithmetic: what the
    /// limiter decides on.
    #[inline]
    pub(crate) fn now_nanos(&self) -> u64 {
        let instant = drchrono_classify::call::now();
        if let Some(anchor) = self.anchor_nanos
            && instant >= self.anchor_instant
            && let Some(now) = anchor.checked_add(duration_nanos(instant - self.anchor_instant))
        {
            return now;
        }
        to_nanos(self.wall_at(instant))
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    /// Inside [`drchrono_classify::call::run`], the reading shared by the layers of one
    /// `call`.
    fn now(&self) -> SystemTime {
        self.wall_at(drchrono_classify::call::now())
    }

    fn instant_at(&self, t: SystemTime) -> Instant {
        match t.duration_since(self.anchor_wall) {
            Ok(d) => self
                .anchor_instant
                .checked_add(d)
                .unwrap_or_else(far_future),
            Err(e) => self
                .anchor_instant
                .checked_sub(e.duration())
                .unwrap_or_else(Instant::now),
        }
    }

    fn wall_at(&self, i: Instant) -> SystemTime {
        if i >= self.anchor_instant {
            let ahead = i - self.anchor_instant;
            self.anchor_wall
                .checked_add(ahead)
                .unwrap_or(self.anchor_wall)
        } else {
            let back = self.anchor_instant - i;
            self.anchor_wall
                .checked_sub(back)
                .unwrap_or(SystemTime::UNIX_EPOCH)
        }
    }
}

/// An instant no wait reaches (30 years ahead), as tokio uses for "never".
fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365 * 30)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn now_nanos_is_now_in_nanoseconds() {
        let starts = [
            UNIX_EPOCH + Duration::new(1_767_609_420, 123_456_789),
            UNIX_EPOCH,
            UNIX_EPOCH - Duration::from_secs(5),
        ];
        for start in starts {
            let clock = TokioClock::starting_at(start);
            for step in [0, 1, 999_999, 1_000_000, 3_600_000_000_000] {
                tokio::time::advance(Duration::from_nanos(step)).await;
                assert_eq!(
                    clock.now_nanos(),
                    to_nanos(clock.now()),
                    "{start:?} +{step}"
                );
            }
        }
    }
}
