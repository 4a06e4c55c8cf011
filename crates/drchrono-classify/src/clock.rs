//! One reading of tokio's clock for every layer that one `call` passes through.
//!
//! Each DrChrono layer looks at the clock when it is called: the retry policy dates the
//! request (its deadline and its budget), the limiter decides and charges at that instant,
//! the token layer checks that the token is still fresh. Those three reads happen inside one
//! synchronous `call`, nanoseconds apart, and each costs a `clock_gettime`. [`shared`] reads
//! the clock once and makes every [`now`] inside it, on this thread, return that reading;
//! `drchrono-tower`'s `DrChronoService` wraps each `call` in it. A layer used alone, and
//! any code running outside [`shared`] (a response future being polled, a refresh in the
//! background), reads the clock itself.
//!
//! The reading is tokio's [`Instant`], so paused time (`tokio::time::pause`) applies to it as
//! to every layer.
//!
//! ```
//! use drchrono_classify::clock;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let (first, second) = clock::shared(|| {
//!     let first = clock::now();
//!     std::thread::sleep(std::time::Duration::from_millis(1));
//!     (first, clock::now())
//! });
//! assert_eq!(first, second);
//! # }
//! ```

use std::cell::Cell;

use tokio::time::Instant;

thread_local! {
    /// The reading of the innermost [`shared`] running on this thread, if any.
    static READING: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// tokio's current instant: the reading of the [`shared`] call this runs inside, or a fresh
/// [`Instant::now`] outside one.
#[inline]
pub fn now() -> Instant {
    READING.with(Cell::get).unwrap_or_else(Instant::now)
}

/// Runs `f` with one reading of the clock, which every [`now`] on this thread returns until
/// `f` returns (or unwinds). Inside another `shared`, the outer reading is kept.
///
/// Meant for one synchronous `Service::call` through a stack of layers: keep `f` short, as
/// time stands still for it.
#[inline]
pub fn shared<R>(f: impl FnOnce() -> R) -> R {
    if READING.with(Cell::get).is_some() {
        return f();
    }
    /// Clears the reading when `f` returns or unwinds.
    struct Clear;
    impl Drop for Clear {
        fn drop(&mut self) {
            READING.with(|reading| reading.set(None));
        }
    }
    READING.with(|reading| reading.set(Some(Instant::now())));
    let _clear = Clear;
    f()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_reading_is_tokios_paused_clock() {
        let before = now();
        tokio::time::advance(Duration::from_secs(3)).await;
        let inside = shared(now);
        assert_eq!(inside, before + Duration::from_secs(3));
        assert_eq!(now(), inside);
    }

    #[test]
    fn outside_a_runtime_the_reading_stays_fixed_while_real_time_moves() {
        let (first, second) = shared(|| {
            let first = now();
            std::thread::sleep(Duration::from_millis(2));
            (first, now())
        });
        assert_eq!(first, second);
        // Fresh readings again after `shared`.
        let after = now();
        assert!(after >= first + Duration::from_millis(2));
    }

    #[test]
    fn nested_calls_keep_the_outer_reading_and_clear_only_at_the_end() {
        shared(|| {
            let outer = now();
            std::thread::sleep(Duration::from_millis(2));
            shared(|| assert_eq!(now(), outer));
            // Still the outer reading after the inner call returned.
            assert_eq!(now(), outer);
        });
        assert!(READING.with(Cell::get).is_none());
    }

    #[test]
    fn a_panic_inside_clears_the_reading() {
        let result = std::panic::catch_unwind(|| shared(|| panic!("inside")));
        assert!(result.is_err());
        assert!(READING.with(Cell::get).is_none());
    }

    #[test]
    fn readings_are_per_thread() {
        shared(|| {
            let here = now();
            std::thread::sleep(Duration::from_millis(2));
            let there = std::thread::spawn(now).join().expect("the thread ran");
            assert!(there > here);
        });
    }
}
