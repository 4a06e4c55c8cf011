//! What an attempt's outcome asks of the policy: read from a [`DrChronoError`] or, without
//! the classifier, from a raw response's status and `Retry-After`.

use std::fmt;
use std::time::{Duration, SystemTime};

use drchrono_core::{DrChronoError, LayerError};
use http::StatusCode;
use tokio::time::Instant;

/// A retryable outcome of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Trigger {
    /// 500, 502, 503 or 504: retried with backoff, idempotent methods only (unless opted in).
    Server(StatusCode),
    /// The transport failed. `not_sent`: provably never reached the server (any method may
    /// be retried); otherwise the 5xx idempotency rule applies.
    Transport { not_sent: bool },
    /// 429: wait for the server's hint, any method.
    Throttled {
        /// The absolute instant the throttle clears, when the classifier computed it.
        available_at: Option<Instant>,
        /// The relative wait the server asked for.
        retry_after: Option<Duration>,
    },
    /// A 401 that the token layer marked as cured by a replay with the current token.
    Unauthorized,
    /// An error that is not a [`DrChronoError`]: the policy cannot tell what happened.
    Unclassified,
}

impl Trigger {
    /// The outcome of an attempt, or `None` when it is final (a success, or an error that a
    /// retry cannot cure). `wall_now` is called only to date a raw 429's `Retry-After`.
    pub(crate) fn of<Res, E: LayerError>(
        result: &Result<http::Response<Res>, E>,
        wall_now: impl FnOnce() -> SystemTime,
    ) -> Option<Self> {
        match result {
            Ok(response) => Self::of_response(response, wall_now),
            Err(error) => match error.as_drchrono() {
                Some(error) => Self::of_error(error),
                None => Some(Self::Unclassified),
            },
        }
    }

    fn of_response<Res>(
        response: &http::Response<Res>,
        wall_now: impl FnOnce() -> SystemTime,
    ) -> Option<Self> {
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = drchrono_core::parse::retry_after(response.headers(), wall_now());
            return Some(Self::Throttled {
                available_at: None,
                retry_after,
            });
        }
        is_retried_status(status).then_some(Self::Server(status))
    }

    fn of_error(error: &DrChronoError) -> Option<Self> {
        match error {
            DrChronoError::Server { status, .. } => {
                is_retried_status(*status).then_some(Self::Server(*status))
            }
            DrChronoError::Throttled {
                retry_after,
                available_at,
                ..
            } => Some(Self::Throttled {
                available_at: *available_at,
                retry_after: *retry_after,
            }),
            DrChronoError::Unauthorized {
                replay_with_current_token: true,
                ..
            } => Some(Self::Unauthorized),
            DrChronoError::Transport { not_sent, .. } => Some(Self::Transport {
                not_sent: *not_sent,
            }),
            _ => None,
        }
    }
}

impl fmt::Display for Trigger {
    /// The reason logged with a retry: a status or a kind, never a body or a URL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Server(status) => write!(f, "{status}"),
            Self::Transport { not_sent: true } => f.write_str("connect error (not sent)"),
            Self::Transport { not_sent: false } => f.write_str("transport error"),
            Self::Throttled { .. } => f.write_str("429 Too Many Requests"),
            Self::Unauthorized => f.write_str("401 replay with current token"),
            Self::Unclassified => f.write_str("unclassified error"),
        }
    }
}

/// The 5xx statuses DrChrono lists and asks clients to retry.
pub(crate) fn is_retried_status(status: StatusCode) -> bool {
    matches!(
        status,
        StatusCode::INTERNAL_SERVER_ERROR
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use drchrono_core::{BoxError, ErrorContext};

    fn response(status: u16) -> Result<http::Response<()>, DrChronoError> {
        let mut r = http::Response::new(());
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        Ok(r)
    }

    #[test]
    fn raw_responses() {
        let now = SystemTime::now();
        for code in [500, 502, 503, 504] {
            assert!(matches!(
                Trigger::of(&response(code), || now),
                Some(Trigger::Server(_))
            ));
        }
        for code in [200, 201, 400, 401, 404, 409, 501, 505] {
            assert_eq!(Trigger::of(&response(code), || now), None, "{code}");
        }
        // The wall clock is read only to date a 429's `Retry-After`.
        let unread = || -> SystemTime { panic!("the wall clock was read") };
        assert_eq!(Trigger::of(&response(200), unread), None);
        assert!(matches!(
            Trigger::of(&response(503), unread),
            Some(Trigger::Server(_))
        ));
        let mut throttled = http::Response::new(());
        *throttled.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        throttled
            .headers_mut()
            .insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            Trigger::of(&Ok::<_, DrChronoError>(throttled), || now),
            Some(Trigger::Throttled {
                available_at: None,
                retry_after: Some(Duration::from_secs(7))
            })
        );
    }

    #[test]
    fn typed_errors_directly_or_boxed() {
        let now = SystemTime::now();
        let server = || DrChronoError::Server {
            status: StatusCode::BAD_GATEWAY,
            context: Box::new(ErrorContext::default()),
        };
        let direct: Result<http::Response<()>, _> = Err(server());
        assert_eq!(
            Trigger::of(&direct, || now),
            Some(Trigger::Server(StatusCode::BAD_GATEWAY))
        );
        let boxed: Result<http::Response<()>, BoxError> = Err(Box::new(server()));
        assert_eq!(
            Trigger::of(&boxed, || now),
            Some(Trigger::Server(StatusCode::BAD_GATEWAY))
        );
        let other: Result<http::Response<()>, BoxError> = Err("boom".into());
        assert_eq!(Trigger::of(&other, || now), Some(Trigger::Unclassified));
        let not_found: Result<http::Response<()>, _> = Err(DrChronoError::NotFound {
            detail: None,
            context: Box::new(ErrorContext::default()),
        });
        assert_eq!(Trigger::of(&not_found, || now), None);
        let not_implemented: Result<http::Response<()>, _> = Err(DrChronoError::Server {
            status: StatusCode::NOT_IMPLEMENTED,
            context: Box::new(ErrorContext::default()),
        });
        assert_eq!(Trigger::of(&not_implemented, || now), None);
    }
}
