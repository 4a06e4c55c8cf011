//! [`LayerError`]: how the layers of this workspace see a service's error type.

use std::convert::Infallible;

use crate::{BoxError, DrChronoError};

/// An error type the layers of this workspace can look into, and build a [`DrChronoError`]
/// in.
///
/// The rate limiter and the retry policy wrap any service, whatever its `Error` type, and
/// need two things from it: to find the [`DrChronoError`] an attempt failed with (a 429 to
/// pause for, an error to retry, a context to record the permit wait in), and to fail a
/// request with a typed error of their own (a rate-limit backend that could not be
/// consulted). This trait says how, per type, with no run-time type test.
///
/// Implemented for [`DrChronoError`], [`BoxError`] (tower's and hyper's usual error type:
/// it finds a `DrChronoError` boxed in it) and [`Infallible`]. For an error type of your
/// own, say what it holds:
///
/// ```
/// use drchrono_core::{DrChronoError, LayerError};
///
/// #[derive(Debug)]
/// enum MyError {
///     DrChrono(DrChronoError),
///     Other(String),
/// }
///
/// impl LayerError for MyError {
///     fn as_drchrono(&self) -> Option<&DrChronoError> {
///         match self {
///             MyError::DrChrono(error) => Some(error),
///             MyError::Other(_) => None,
///         }
///     }
///
///     fn as_drchrono_mut(&mut self) -> Option<&mut DrChronoError> {
///         match self {
///             MyError::DrChrono(error) => Some(error),
///             MyError::Other(_) => None,
///         }
///     }
///
///     fn from_drchrono(error: DrChronoError) -> Result<Self, DrChronoError> {
///         Ok(MyError::DrChrono(error))
///     }
/// }
///
/// let other = MyError::Other("no".into());
/// assert!(other.as_drchrono().is_none());
/// ```
pub trait LayerError: Sized {
    /// The [`DrChronoError`] this error is or holds, if any.
    fn as_drchrono(&self) -> Option<&DrChronoError>;

    /// [`as_drchrono`](Self::as_drchrono), mutably.
    fn as_drchrono_mut(&mut self) -> Option<&mut DrChronoError>;

    /// `error` as this type, or `Err(error)` when this type cannot hold one (a layer then
    /// does without: the rate limiter, for one, keeps the request waiting instead of
    /// failing it).
    ///
    /// # Errors
    /// `error` itself, when this type cannot hold a [`DrChronoError`].
    fn from_drchrono(error: DrChronoError) -> Result<Self, DrChronoError>;
}

impl LayerError for DrChronoError {
    #[inline]
    fn as_drchrono(&self) -> Option<&DrChronoError> {
        Some(self)
    }

    #[inline]
    fn as_drchrono_mut(&mut self) -> Option<&mut DrChronoError> {
        Some(self)
    }

    fn from_drchrono(error: DrChronoError) -> Result<Self, DrChronoError> {
        Ok(error)
    }
}

/// Finds a [`DrChronoError`] boxed directly in the box (not in its `source()` chain).
impl LayerError for BoxError {
    #[inline]
    fn as_drchrono(&self) -> Option<&DrChronoError> {
        self.downcast_ref::<DrChronoError>()
    }

    #[inline]
    fn as_drchrono_mut(&mut self) -> Option<&mut DrChronoError> {
        self.downcast_mut::<DrChronoError>()
    }

    fn from_drchrono(error: DrChronoError) -> Result<Self, DrChronoError> {
        Ok(Box::new(error))
    }
}

/// Never holds one, and cannot hold one.
impl LayerError for Infallible {
    fn as_drchrono(&self) -> Option<&DrChronoError> {
        match *self {}
    }

    fn as_drchrono_mut(&mut self) -> Option<&mut DrChronoError> {
        match *self {}
    }

    fn from_drchrono(error: DrChronoError) -> Result<Self, DrChronoError> {
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::ErrorContext;

    fn server_error() -> DrChronoError {
        DrChronoError::Server {
            status: StatusCode::BAD_GATEWAY,
            context: Box::new(ErrorContext::new()),
        }
    }

    #[test]
    fn a_box_holds_a_drchrono_error_and_nothing_else() {
        let mut boxed = BoxError::from_drchrono(server_error()).unwrap();
        assert!(matches!(
            boxed.as_drchrono(),
            Some(DrChronoError::Server { .. })
        ));
        assert!(boxed.as_drchrono_mut().is_some());
        let other: BoxError = "not ours".into();
        assert!(other.as_drchrono().is_none());
    }

    #[test]
    fn infallible_cannot_hold_one() {
        assert!(Infallible::from_drchrono(server_error()).is_err());
        let mut error = DrChronoError::from_drchrono(server_error()).unwrap();
        assert!(error.as_drchrono_mut().is_some());
    }
}
