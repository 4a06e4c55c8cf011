//! Transport failures: was the request sent?

use std::error::Error as StdError;
use std::io::ErrorKind;

use crate::BoxError;

/// Decides whether an inner service's error proves the request was never sent.
pub type NotSentPredicate = fn(&BoxError) -> bool;

/// A failure before the request left the machine (a refused connection, a failed DNS
/// lookup, a connect timeout), as a transport says so: wrap such a failure in it, and
/// [`is_connect_error`] knows by its type that the request was never sent.
///
/// ```
/// use std::io;
/// use drchrono_core::{BoxError, ConnectError, is_connect_error};
///
/// let lookup = io::Error::other("no such host: app.drchrono.com");
/// assert!(!is_connect_error(&BoxError::from(io::Error::other("no such host"))));
/// let failed: BoxError = Box::new(ConnectError::new(lookup));
/// assert!(is_connect_error(&failed));
/// ```
#[derive(Debug)]
pub struct ConnectError(BoxError);

impl ConnectError {
    /// `error`, which happened before the request left.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self(error.into())
    }

    /// The failure itself.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connect error")
    }
}

impl StdError for ConnectError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&*self.0)
    }
}

/// The default [`NotSentPredicate`]: `true` when the error, or any error in its `source()`
/// chain, is a [`ConnectError`], or an [`std::io::Error`] of kind `ConnectionRefused` or
/// `AddrNotAvailable` (not `NotConnected`: a socket that was connected, and may have sent
/// the request, reports it too after a reset). Decided by types only, never by an error's text: a
/// transport whose connect failures are of its own type says so by wrapping them in a
/// [`ConnectError`] (`drchrono-tower`'s `not_sent` adds hyper-util's and its own connect
/// timeouts).
///
/// A connect error means the request never left the machine, so any method, even a `POST`,
/// may be retried.
///
/// ```
/// use std::io;
/// use drchrono_core::{BoxError, is_connect_error};
///
/// let refused: BoxError = Box::new(io::Error::from(io::ErrorKind::ConnectionRefused));
/// assert!(is_connect_error(&refused));
/// let reset: BoxError = Box::new(io::Error::from(io::ErrorKind::ConnectionReset));
/// assert!(!is_connect_error(&reset));
/// ```
pub fn is_connect_error(error: &BoxError) -> bool {
    let mut pending: Vec<&(dyn StdError + 'static)> = vec![&**error];
    let mut visited = 0;
    while let Some(current) = pending.pop() {
        visited += 1;
        if visited > 64 {
            break;
        }
        if current.is::<ConnectError>() {
            return true;
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused | ErrorKind::AddrNotAvailable
            ) {
                return true;
            }
            // `io::Error::source` skips a custom error's own inner error: look at it too.
            if let Some(inner) = io.get_ref() {
                pending.push(inner);
            }
        }
        if let Some(source) = current.source() {
            pending.push(source);
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use std::fmt;
    use std::io;

    use super::*;

    #[derive(Debug)]
    struct Wrapper(&'static str, Option<BoxError>);

    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.0)
        }
    }

    impl StdError for Wrapper {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn StdError + 'static))
        }
    }

    fn boxed(error: impl StdError + Send + Sync + 'static) -> BoxError {
        Box::new(error)
    }

    #[test]
    fn io_kinds_in_the_chain() {
        for kind in [
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::AddrNotAvailable,
        ] {
            let chained = Wrapper(
                "outer",
                Some(boxed(Wrapper("mid", Some(boxed(io::Error::from(kind)))))),
            );
            assert!(is_connect_error(&boxed(chained)), "{kind:?}");
        }
        for kind in [
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::TimedOut,
            io::ErrorKind::BrokenPipe,
            io::ErrorKind::NotConnected,
        ] {
            assert!(!is_connect_error(&boxed(io::Error::from(kind))), "{kind:?}");
        }
    }

    #[test]
    fn custom_io_error_inner_is_visited() {
        let inner = io::Error::from(io::ErrorKind::ConnectionRefused);
        let outer = io::Error::other(inner);
        assert!(is_connect_error(&boxed(outer)));
    }

    #[test]
    fn a_connect_error_anywhere_in_the_chain() {
        let wrapped = Wrapper(
            "outer",
            Some(boxed(ConnectError::new(io::Error::other("dns")))),
        );
        assert!(is_connect_error(&boxed(wrapped)));
        let unwrapped = ConnectError::new(io::Error::other("dns")).into_inner();
        assert!(!is_connect_error(&unwrapped));
    }

    /// Text decides nothing: an error that only says "connect" is not a connect error.
    #[test]
    fn messages_decide_nothing() {
        for text in [
            "client error (Connect)",
            "tcp connect error",
            "connection closed",
            "request timed out",
        ] {
            assert!(!is_connect_error(&boxed(Wrapper(text, None))), "{text}");
        }
    }
}
