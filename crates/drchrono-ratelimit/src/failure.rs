//! A [`BackendError`] as the inner service's error: fail closed, typed.
//!
//! The layer's error type is the inner service's. When that type can hold a
//! [`DrChronoError`] ([`LayerError::from_drchrono`]: `DrChronoError` itself, the
//! recommended stack, or [`BoxError`](drchrono_core::BoxError)), a backend failure
//! becomes [`DrChronoError::Transport`] with `not_sent: true` and the [`BackendError`] as its
//! source. A type that cannot hold one (`Infallible`) cannot carry it: the request then
//! waits for the backend instead, retrying every [`BACKEND_RETRY_INTERVAL`]. Either way,
//! nothing is sent without a permit.

use std::time::Duration;

use drchrono_core::{DrChronoError, ErrorContext, LayerError};

use crate::BackendError;

/// How often a request whose error type cannot carry a [`BackendError`] asks the backend
/// again: 1 s.
pub(crate) const BACKEND_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// `error` as an `E` (see the module docs), or `None` when `E` cannot carry it.
pub(crate) fn carry<E: LayerError>(error: BackendError, context: ErrorContext) -> Option<E> {
    E::from_drchrono(DrChronoError::Transport {
        not_sent: true,
        source: Box::new(error),
        context: Box::new(context),
    })
    .ok()
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use drchrono_core::BoxError;

    use super::*;

    fn failure() -> BackendError {
        BackendError::new("redis", "connection refused")
    }

    #[test]
    fn typed_for_drchrono_and_boxed_errors_only() {
        let typed: DrChronoError = carry(failure(), ErrorContext::new()).unwrap();
        assert!(typed.is_not_sent());
        let DrChronoError::Transport { source, .. } = typed else {
            panic!("not a transport error");
        };
        let backend = source.downcast_ref::<BackendError>().unwrap();
        assert_eq!(backend.backend(), "redis");
        assert_eq!(
            backend.to_string(),
            "rate-limit backend redis unavailable: request not sent"
        );

        let boxed: BoxError = carry(failure(), ErrorContext::new()).unwrap();
        assert!(boxed.downcast_ref::<DrChronoError>().unwrap().is_not_sent());
        assert!(carry::<Infallible>(failure(), ErrorContext::new()).is_none());
    }
}
