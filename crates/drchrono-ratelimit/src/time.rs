//! Time as integer nanoseconds since the Unix epoch: the core's exact arithmetic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Nanoseconds per millisecond: tokio's timer grid.
pub(crate) const NANOS_PER_MS: u64 = 1_000_000;

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
}
