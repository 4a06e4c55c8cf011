//! Reading a server 429 out of an attempt's outcome.

use std::time::SystemTime;

use drchrono_classify::{DrChronoError, parse};
use http::{Response, StatusCode};

use crate::Clock;

/// Until when the server asked every caller to wait, if this outcome is a 429 that says so:
/// an `Err` that is (or boxes) [`DrChronoError::Throttled`] with `available_at` or
/// `retry_after`, or a raw `Ok` 429 response with a `Retry-After` header.
pub(crate) fn throttled_until<B, E: 'static>(
    outcome: &Result<Response<B>, E>,
    clock: &dyn Clock,
) -> Option<SystemTime> {
    match outcome {
        Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => {
            let now = clock.now();
            let wait = parse::retry_after(response.headers(), now)?;
            now.checked_add(wait)
        }
        Ok(_) => None,
        Err(error) => {
            let error = DrChronoError::find(error)?;
            match error {
                DrChronoError::Throttled {
                    available_at: Some(at),
                    ..
                } => Some(clock.wall_at(*at)),
                DrChronoError::Throttled {
                    retry_after: Some(wait),
                    ..
                } => clock.now().checked_add(*wait),
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
    use drchrono_classify::BoxError;

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
}
