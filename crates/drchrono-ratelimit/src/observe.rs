//! Reading a server 429 out of an attempt's outcome.

use std::time::{Duration, SystemTime};

use drchrono_core::{DrChronoError, LayerError, parse};
use http::{Response, StatusCode};

use crate::Clock;

/// The longest a server 429 holds every caller of the application: one hour, DrChrono's
/// longest throttling period (its clock-hour rule), so no throttle of DrChrono's asks for
/// longer. A longer wait (`Retry-After: 99999999999`, an HTTP-date in year 9999, a proxy's
/// ban) pauses every caller for this long, never forever and never not at all (an overflow
/// used to read as no pause); the retry policy fails the request itself at once, typed.
pub(crate) const MAX_SERVER_PAUSE: Duration = Duration::from_secs(60 * 60);

/// Whether this outcome is a 429: a raw `Ok` 429 response, or an `Err` that is (or boxes)
/// [`DrChronoError::Throttled`]. Only then is [`throttled_until`] asked, with the clock.
pub(crate) fn is_throttled<B, E: LayerError>(outcome: &Result<Response<B>, E>) -> bool {
    match outcome {
        Ok(response) => response.status() == StatusCode::TOO_MANY_REQUESTS,
        Err(error) => matches!(error.as_drchrono(), Some(DrChronoError::Throttled { .. })),
    }
}

/// Until when the server asked every caller to wait, if this outcome is a 429 that says so:
/// an `Err` that is (or boxes) [`DrChronoError::Throttled`] with `available_at` or
/// `retry_after`, or a raw `Ok` 429 response with a `Retry-After` header. At most
/// [`MAX_SERVER_PAUSE`] from now.
pub(crate) fn throttled_until<B, E: LayerError>(
    outcome: &Result<Response<B>, E>,
    clock: &dyn Clock,
) -> Option<SystemTime> {
    match outcome {
        Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
            let now = clock.now();
            let wait = parse::retry_after(response.headers(), now)?;
            now.checked_add(wait.min(MAX_SERVER_PAUSE))
        }
        Ok(_) => None,
        Err(error) => {
            let error = error.as_drchrono()?;
            match error {
                DrChronoError::Throttled {
                    available_at: Some(at),
                    ..
                } => {
                    // Capped before it is converted: the wall clock cannot reach every instant.
                    let latest = tokio::time::Instant::now().checked_add(MAX_SERVER_PAUSE);
                    Some(clock.wall_at(latest.map_or(*at, |latest| latest.min(*at))))
                }
                DrChronoError::Throttled {
                    retry_after: Some(wait),
                    ..
                } => clock.now().checked_add((*wait).min(MAX_SERVER_PAUSE)),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::TokioClock;
    use drchrono_core::BoxError;

    fn throttled(
        retry_after: Option<Duration>,
        available_at: Option<tokio::time::Instant>,
    ) -> DrChronoError {
        DrChronoError::Throttled {
            retry_after,
            available_at,
            context: Box::default(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn reads_every_kind_of_429() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420);
        let clock = TokioClock::starting_at(start);
        let secs = Duration::from_secs;

        let raw = Response::builder()
            .status(429)
            .header("retry-after", "7")
            .body(())
            .unwrap();
        assert_eq!(
            throttled_until::<_, DrChronoError>(&Ok(raw), &clock),
            Some(start + secs(7))
        );
        let no_header = Response::builder().status(429).body(()).unwrap();
        assert_eq!(
            throttled_until::<_, DrChronoError>(&Ok(no_header), &clock),
            None
        );
        let ok = Response::builder()
            .header("retry-after", "7")
            .body(())
            .unwrap();
        assert_eq!(throttled_until::<_, DrChronoError>(&Ok(ok), &clock), None);

        let at = tokio::time::Instant::now() + secs(9);
        let typed: Result<Response<()>, _> = Err(throttled(Some(secs(8)), Some(at)));
        assert_eq!(throttled_until(&typed, &clock), Some(start + secs(9)));
        let typed: Result<Response<()>, _> = Err(throttled(Some(secs(8)), None));
        assert_eq!(throttled_until(&typed, &clock), Some(start + secs(8)));
        let typed: Result<Response<()>, _> = Err(throttled(None, None));
        assert_eq!(throttled_until(&typed, &clock), None);

        let boxed: Result<Response<()>, BoxError> = Err(Box::new(throttled(Some(secs(3)), None)));
        assert_eq!(throttled_until(&boxed, &clock), Some(start + secs(3)));
        let other: Result<Response<()>, BoxError> = Err("connection reset".into());
        assert_eq!(throttled_until(&other, &clock), None);
        let server: Result<Response<()>, _> = Err(DrChronoError::Server {
            status: StatusCode::BAD_GATEWAY,
            context: Box::default(),
        });
        assert_eq!(throttled_until(&server, &clock), None);
    }

    /// A huge or far-future wait pauses for [`MAX_SERVER_PAUSE`]: never forever, never zero.
    #[tokio::test(start_paused = true)]
    async fn a_huge_wait_pauses_for_the_longest_pause() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420);
        let clock = TokioClock::starting_at(start);
        let capped = Some(start + MAX_SERVER_PAUSE);
        for value in [
            "99999999999",
            "99999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            let raw = Response::builder()
                .status(429)
                .header("retry-after", value)
                .body(())
                .unwrap();
            assert_eq!(
                throttled_until::<_, DrChronoError>(&Ok(raw), &clock),
                capped,
                "{value}"
            );
        }
        let huge = Duration::from_secs(99_999_999_999);
        let typed: Result<Response<()>, _> = Err(throttled(
            Some(huge),
            tokio::time::Instant::now().checked_add(huge),
        ));
        assert_eq!(throttled_until(&typed, &clock), capped);
        for wait in [huge, Duration::MAX] {
            let typed: Result<Response<()>, _> = Err(throttled(Some(wait), None));
            assert_eq!(throttled_until(&typed, &clock), capped);
        }
        // An hour or less is the server's.
        let typed: Result<Response<()>, _> = Err(throttled(Some(MAX_SERVER_PAUSE), None));
        assert_eq!(throttled_until(&typed, &clock), capped);
    }

    /// Through the layer: after `Retry-After: 99999999999`, the next caller goes an hour
    /// later, not in the year 2554 (nor at once).
    #[tokio::test(start_paused = true)]
    async fn after_retry_after_99999999999_the_next_caller_waits_an_hour() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};

        use tower::{Layer, ServiceExt, service_fn};

        use crate::{DrChronoRateLimitLayer, RateLimitConfig, RateLimiter};

        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_609_420);
        for typed in [false, true] {
            let limiter = RateLimiter::builder(RateLimitConfig::default())
                .start_at(start)
                .build();
            let answered = Arc::new(AtomicBool::new(false));
            let inner = service_fn(move |_request: http::Request<()>| {
                let first = !answered.swap(true, Ordering::SeqCst);
                async move {
                    let huge = Duration::from_secs(99_999_999_999);
                    match (first, typed) {
                        (true, false) => Ok(Response::builder()
                            .status(429)
                            .header("retry-after", "99999999999")
                            .body(())
                            .unwrap()),
                        (true, true) => Err(throttled(
                            Some(huge),
                            tokio::time::Instant::now().checked_add(huge),
                        )),
                        (false, _) => Ok(Response::new(())),
                    }
                }
            });
            let service = DrChronoRateLimitLayer::new(limiter.clone()).layer(inner);
            let _ = service.clone().oneshot(http::Request::new(())).await;
            let origin = tokio::time::Instant::now();
            let next = tokio::time::timeout(
                MAX_SERVER_PAUSE * 2,
                service.clone().oneshot(http::Request::new(())),
            )
            .await;
            assert!(matches!(next, Ok(Ok(_))), "typed {typed}: {next:?}");
            assert_eq!(origin.elapsed(), MAX_SERVER_PAUSE, "typed {typed}");
        }
    }
}
