//! Time as integer nanoseconds: the core's exact arithmetic, and [`Reading`], the two clock
//! readings a decision is made on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds per millisecond: tokio's timer grid.
pub(crate) const NANOS_PER_MS: u64 = 1_000_000;

/// One decision's readings of the two clocks, in nanoseconds.
///
/// `mono` is on the monotonic line, which no step of the system clock moves: everything the
/// core remembers (sliding logs, pauses, the last charge) and every instant it computes is
/// kept on it. `wall` is the wall clock, nanoseconds since the Unix epoch: it places a request
/// in the aligned periods. Their offset (`wall - mono`) is taken as constant for the decision:
/// a wall instant (an aligned boundary) maps to the monotonic line and back by it. Readings
/// of clocks that agree have `mono == wall`, and then every mapping is the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Reading {
    pub(crate) mono: u64,
    pub(crate) wall: u64,
}

impl Reading {
    /// `wall - mono`, wrapping: equal for readings whose clocks are offset alike.
    pub(crate) fn offset(self) -> u64 {
        self.wall.wrapping_sub(self.mono)
    }

    /// The wall clock's reading at monotonic instant `mono`, at this reading's offset
    /// (saturating).
    pub(crate) fn wall_at(self, mono: u64) -> u64 {
        if self.wall >= self.mono {
            mono.saturating_add(self.wall - self.mono)
        } else {
            mono.saturating_sub(self.mono - self.wall)
        }
    }

    /// The monotonic instant at which the wall clock reads `wall`, at this reading's offset
    /// (saturating).
    pub(crate) fn mono_at(self, wall: u64) -> u64 {
        if self.wall >= self.mono {
            wall.saturating_sub(self.wall - self.mono)
        } else {
            wall.saturating_add(self.mono - self.wall)
        }
    }

    /// This reading, or, when its monotonic reading is before `floor`, both clocks moved
    /// forward together to it (the offset kept).
    pub(crate) fn not_before(self, floor: u64) -> Self {
        if self.mono >= floor {
            self
        } else {
            Self {
                mono: floor,
                wall: self.wall_at(floor),
            }
        }
    }
}

/// `t` as nanoseconds since the Unix epoch; instants before the epoch are 0, instants past
/// the year 2554 saturate.
pub(crate) fn to_nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, duration_nanos)
}

/// `d` in nanoseconds, saturating.
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::from(d.subsec_nanos()))
}

/// The wall instant `n` nanoseconds after the Unix epoch.
pub(crate) fn from_nanos(n: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(n)
}

/// `n` rounded up to a whole millisecond since the epoch.
pub(crate) fn ceil_ms(n: u64) -> u64 {
    n.div_ceil(NANOS_PER_MS).saturating_mul(NANOS_PER_MS)
}

/// `t` rounded up to a whole millisecond since the epoch.
pub(crate) fn ceil_ms_time(t: SystemTime) -> SystemTime {
    from_nanos(ceil_ms(to_nanos(t)))
}

/// `t` rounded down to a whole millisecond since the epoch.
pub(crate) fn floor_ms_time(t: SystemTime) -> SystemTime {
    let n = to_nanos(t);
    from_nanos(n - n % NANOS_PER_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rounds() {
        let t = UNIX_EPOCH + Duration::new(1_767_609_420, 1_500_001);
        assert_eq!(from_nanos(to_nanos(t)), t);
        assert_eq!(
            ceil_ms_time(t),
            UNIX_EPOCH + Duration::new(1_767_609_420, 2_000_000)
        );
        assert_eq!(
            floor_ms_time(t),
            UNIX_EPOCH + Duration::new(1_767_609_420, 1_000_000)
        );
        assert_eq!(ceil_ms(3 * NANOS_PER_MS), 3 * NANOS_PER_MS);
        assert_eq!(to_nanos(UNIX_EPOCH - Duration::from_secs(1)), 0);
        assert_eq!(duration_nanos(Duration::MAX), u64::MAX);
        assert_eq!(ceil_ms(u64::MAX), u64::MAX);
    }

    #[test]
    fn a_reading_maps_between_its_clocks_at_its_offset() {
        let agreeing = Reading { mono: 7, wall: 7 };
        assert_eq!((agreeing.wall_at(9), agreeing.mono_at(9)), (9, 9));
        assert_eq!(agreeing.offset(), 0);
        // The wall clock 60 ahead of the monotonic one, then 60 behind.
        let ahead = Reading {
            mono: 100,
            wall: 160,
        };
        assert_eq!((ahead.wall_at(110), ahead.mono_at(230)), (170, 170));
        assert_eq!(ahead.mono_at(10), 0);
        assert_eq!(ahead.wall_at(u64::MAX), u64::MAX);
        let behind = Reading {
            mono: 160,
            wall: 100,
        };
        assert_eq!((behind.wall_at(170), behind.mono_at(110)), (110, 170));
        assert_eq!(behind.wall_at(10), 0);
        assert_ne!(ahead.offset(), behind.offset());
        assert_eq!(ahead.offset(), Reading { mono: 0, wall: 60 }.offset());
        // Moved forward together, or left alone.
        assert_eq!(
            behind.not_before(200),
            Reading {
                mono: 200,
                wall: 140
            }
        );
        assert_eq!(behind.not_before(150), behind);
    }
}
