//! A [`BackendError`] as the inner service's error: fail closed, typed.
//!
//! The layer's error type is the inner service's. When the inner error type is
//! [`DrChronoError`] (the recommended stack) or [`BoxError`], a backend failure becomes
//! [`DrChronoError::Transport`] with `not_sent: true` and the [`BackendError`] as its source.
//! Any other error type cannot carry it: the request then waits for the backend instead,
//! retrying every [`BACKEND_RETRY_INTERVAL`]. Either way, nothing is sent without a permit.

use std::any::{Any, TypeId};
use std::time::Duration;

use drchrono_classify::{BoxError, DrChronoError, ErrorContext};

use crate::BackendError;

/// How often a request whose error type cannot carry a [`BackendError`] asks the backend
/// again: 1 s.
pub(crate) const BACKEND_RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// Whether errors of type `E` can carry a [`BackendError`].
pub(crate) fn can_carry<E: 'static>() -> bool {
    let id = TypeId::of::<E>();
    id == TypeId::of::<DrChronoError>() || id == TypeId::of::<BoxError>()
}

/// `error` as an `E` (see the module docs), or `None` when `E` cannot carry it.
pub(crate) fn carry<E: 'static>(error: BackendError, context: ErrorContext) -> Option<E> {
    let mut typed = Some(DrChronoError::Transport {
        not_sent: true,
        source: Box::new(error),
        context: Box::new(context),
    });
    let mut slot: Option<E> = None;
    let any: &mut dyn Any = &mut slot;
    if let Some(slot) = any.downcast_mut::<Option<DrChronoError>>() {
        *slot = typed.take();
    } else if let Some(slot) = any.downcast_mut::<Option<BoxError>>() {
        *slot = typed.take().map(|typed| Box::new(typed) as BoxError);
    }
    slot
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    fn failure() -> BackendError {
        BackendError::new("redis", "connection refused")
    }

    #[test]
    fn typed_for_drchrono_and_boxed_errors_only() {
        assert!(can_carry::<DrChronoError>());
        assert!(can_carry::<BoxError>());
        assert!(!can_carry::<Infallible>());
        assert!(!can_carry::<std::io::Error>());

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
