//! What the layers of one `call` share: one reading of the clock, and who keeps the request.
//!
//! `drchrono-tower`'s `DrChronoService` runs each `call` through its four layers inside
//! [`run`]. Outside [`run`] (a layer used alone, a response future being polled, a refresh
//! in the background) every layer works on its own, exactly as before.
//!
//! **One clock reading.** The retry policy dates the request (its deadline and budget), the
//! limiter decides and charges at that instant, the token layer checks that the token is
//! still fresh. Those reads happen inside one synchronous `call`, nanoseconds apart, and
//! each costs a `clock_gettime`; inside [`run`], [`now`] returns the one reading taken when
//! it began. It is tokio's [`Instant`], so paused time (`tokio::time::pause`) applies.
//!
//! **Who keeps the request.** The classifier copies the request's method and URI (and a
//! [`RequestPayload`](crate::RequestPayload)) into every error it makes, for support reports
//! and for its log event. The retry policy above it holds a copy of the whole request anyway.
//! When it calls [`keep_request`], the classifier of that call copies nothing: its errors
//! wait for [`DrChronoError::complete_request_context`](crate::DrChronoError::complete_request_context),
//! which the retry policy calls on every failed attempt, and which adds the method, URI and
//! payload and then emits the error's one log event. (A layer in between that replaces an
//! error drops its event with it: the token layer, when the refresh a 401 called for fails,
//! returns and logs the refresh's own error instead.)
//!
//! ```
//! use drchrono_classify::call;
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() {
//! let (first, second) = call::run(|| {
//!     let first = call::now();
//!     std::thread::sleep(std::time::Duration::from_millis(1));
//!     (first, call::now())
//! });
//! assert_eq!(first, second);
//! # }
//! ```

use std::cell::Cell;

use tokio::time::Instant;

/// The state of the innermost [`run`] on this thread.
#[derive(Clone, Copy)]
struct Scope {
    reading: Instant,
    request_kept: bool,
}

thread_local! {
    static SCOPE: Cell<Option<Scope>> = const { Cell::new(None) };
}

/// tokio's current instant: the reading of the [`run`] this code runs inside, or a fresh
/// [`Instant::now`] outside one.
#[inline]
pub fn now() -> Instant {
    match SCOPE.with(Cell::get) {
        Some(scope) => scope.reading,
        None => Instant::now(),
    }
}

/// Runs `f` with one reading of the clock, which every [`now`] on this thread returns until
/// `f` returns (or unwinds). A `run` inside another keeps the outer reading but starts with
/// no request kept, and gives the outer state back when it ends.
///
/// Meant for one synchronous `Service::call` through a stack of layers: keep `f` short, as
/// time stands still for it.
#[inline]
pub fn run<R>(f: impl FnOnce() -> R) -> R {
    /// Puts the outer state back when `f` returns or unwinds.
    struct Restore(Option<Scope>);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPE.with(|scope| scope.set(self.0));
        }
    }
    let outer = SCOPE.with(Cell::get);
    let reading = outer.map_or_else(Instant::now, |scope| scope.reading);
    SCOPE.with(|scope| {
        scope.set(Some(Scope {
            reading,
            request_kept: false,
        }))
    });
    let _restore = Restore(outer);
    f()
}

/// Tells the classifier of this call that the caller keeps a copy of the request and will
/// call [`DrChronoError::complete_request_context`](crate::DrChronoError::complete_request_context)
/// on every error of this attempt. Returns `false`, and does nothing, outside [`run`].
///
/// The first classifier called after it takes the promise; a classifier called later (in a
/// response future, after a wait for a permit or a token) copies the request itself.
pub fn keep_request() -> bool {
    SCOPE.with(|cell| match cell.get() {
        Some(scope) => {
            cell.set(Some(Scope {
                request_kept: true,
                ..scope
            }));
            true
        }
        None => false,
    })
}

/// Whether a caller above promised to complete the request context: true at most once per
/// [`keep_request`].
#[inline]
pub(crate) fn take_request_kept() -> bool {
    SCOPE.with(|cell| match cell.get() {
        Some(scope) if scope.request_kept => {
            cell.set(Some(Scope {
                request_kept: false,
                ..scope
            }));
            true
        }
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn current() -> Option<Scope> {
        SCOPE.with(Cell::get)
    }

    #[tokio::test(start_paused = true)]
    async fn the_reading_is_tokios_paused_clock() {
        let before = now();
        tokio::time::advance(Duration::from_secs(3)).await;
        let inside = run(now);
        assert_eq!(inside, before + Duration::from_secs(3));
        assert_eq!(now(), inside);
    }

    #[test]
    fn the_reading_stays_fixed_while_real_time_moves() {
        let (first, second) = run(|| {
            let first = now();
            std::thread::sleep(Duration::from_millis(2));
            (first, now())
        });
        assert_eq!(first, second);
        // Fresh readings again after `run`.
        assert!(now() >= first + Duration::from_millis(2));
        assert!(current().is_none());
    }

    #[test]
    fn nested_runs_keep_the_outer_reading_and_give_the_outer_state_back() {
        run(|| {
            let outer = now();
            assert!(keep_request());
            std::thread::sleep(Duration::from_millis(2));
            run(|| {
                assert_eq!(now(), outer);
                // The outer promise is not the inner call's.
                assert!(!take_request_kept());
            });
            assert_eq!(now(), outer);
            assert!(take_request_kept());
        });
        assert!(current().is_none());
    }

    #[test]
    fn a_promise_is_taken_once_and_only_inside_a_run() {
        assert!(!keep_request());
        assert!(!take_request_kept());
        run(|| {
            assert!(!take_request_kept());
            assert!(keep_request());
            assert!(take_request_kept());
            assert!(!take_request_kept());
        });
    }

    #[test]
    fn a_panic_inside_gives_the_state_back() {
        let result = std::panic::catch_unwind(|| {
            run(|| {
                keep_request();
                panic!("inside")
            })
        });
        assert!(result.is_err());
        assert!(current().is_none());
    }

    #[test]
    fn scopes_are_per_thread() {
        run(|| {
            let here = now();
            assert!(keep_request());
            std::thread::sleep(Duration::from_millis(2));
            let (there, kept) = std::thread::spawn(|| (now(), take_request_kept()))
                .join()
                .expect("the thread ran");
            assert!(there > here);
            assert!(!kept);
        });
    }
}
