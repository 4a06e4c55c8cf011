//! [`UnwrittenPause`]: a server 429's pause that the backend could not write to the file,
//! held in memory so that this process sends nothing during it, until it is written or over.
//!
//! Without it a pause whose write failed (a full disk, a permission, the directory gone) was
//! lost: once the file was usable again, the next decision read a state without the pause
//! and admitted requests during it, which DrChrono answers with more 429s.

use std::sync::{Mutex, PoisonError};

/// A server's pause: until wall instant `until`, asked at `asked_at` (nanoseconds since the
/// Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pause {
    until: u64,
    asked_at: u64,
}

impl Pause {
    /// Its end for a decision at `now`: `until`; or, when the clock reads earlier than when
    /// the pause was asked (stepped back), no more than what remained of it then, from `now`
    /// (as a pause in the file is carried over such a step).
    pub(super) fn until_at(self, now: u64) -> u64 {
        self.until
            .min(now.saturating_add(self.until.saturating_sub(self.asked_at)))
    }
}

/// The latest pause this backend could not write, while it has not ended.
#[derive(Debug, Default)]
pub(super) struct UnwrittenPause(Mutex<Option<Pause>>);

impl UnwrittenPause {
    /// Holds a pause until `until`, asked at `asked_at`, that could not be written: the one
    /// that ends later of it and the one already held.
    pub(super) fn hold(&self, asked_at: u64, until: u64) {
        if until <= asked_at {
            return;
        }
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if held.is_none_or(|pause| pause.until < until) {
            *held = Some(Pause { until, asked_at });
        }
    }

    /// The pause held, for a decision at `now`; one that has ended by then is dropped.
    pub(super) fn at(&self, now: u64) -> Option<Pause> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if held.is_some_and(|pause| pause.until_at(now) <= now) {
            *held = None;
        }
        *held
    }

    /// `pause` is in the file now: dropped, unless a later one was held meanwhile.
    pub(super) fn written(&self, pause: Pause) {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if *held == Some(pause) {
            *held = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;
    const T0: u64 = 1_767_609_420 * SEC;

    #[test]
    fn the_latest_pause_is_held_until_it_ends_or_is_written() {
        let unwritten = UnwrittenPause::default();
        assert_eq!(unwritten.at(T0), None);
        // A pause already over holds nothing.
        unwritten.hold(T0, T0);
        assert_eq!(unwritten.at(T0), None);
        unwritten.hold(T0, T0 + 30 * SEC);
        // An earlier end does not shorten it; a later one replaces it.
        unwritten.hold(T0, T0 + 10 * SEC);
        let held = unwritten.at(T0 + SEC).unwrap();
        assert_eq!(held.until_at(T0 + SEC), T0 + 30 * SEC);
        unwritten.hold(T0 + SEC, T0 + 40 * SEC);
        let later = unwritten.at(T0 + SEC).unwrap();
        assert_eq!(later.until_at(T0 + 2 * SEC), T0 + 40 * SEC);
        // Writing the one replaced does not drop the later one; writing it does.
        unwritten.written(held);
        assert_eq!(unwritten.at(T0 + 2 * SEC), Some(later));
        unwritten.written(later);
        assert_eq!(unwritten.at(T0 + 2 * SEC), None);
        // Kept while it lies in the future, dropped once over.
        unwritten.hold(T0, T0 + 30 * SEC);
        assert!(unwritten.at(T0 + 29 * SEC).is_some());
        assert_eq!(unwritten.at(T0 + 30 * SEC), None);
    }

    #[test]
    fn a_clock_stepped_back_keeps_what_remained_of_the_pause() {
        let unwritten = UnwrittenPause::default();
        unwritten.hold(T0, T0 + 30 * SEC);
        // A day back: 30 s from the reading, not a day and 30 s.
        let back = T0 - 24 * 3_600 * SEC;
        let held = unwritten.at(back).unwrap();
        assert_eq!(held.until_at(back), back + 30 * SEC);
        // Ahead: the end on the wall clock.
        assert_eq!(held.until_at(T0 + 10 * SEC), T0 + 30 * SEC);
        // Slightly back, still within it: what remained when it was asked.
        assert_eq!(held.until_at(T0 - 10 * SEC), T0 + 20 * SEC);
        assert_eq!(unwritten.at(T0 - 10 * SEC), Some(held));
    }
}
