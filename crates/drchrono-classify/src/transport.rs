//! Transport failures: was the request sent?

use std::error::Error as StdError;
use std::io::ErrorKind;

use crate::BoxError;

/// Decides whether an inner service's error proves the request was never sent.
pub type NotSentPredicate = fn(&BoxError) -> bool;

/// The default [`NotSentPredicate`]: `true` when the error, or any error in its `source()`
/// chain, is an [`std::io::Error`] of kind `ConnectionRefused`, `AddrNotAvailable` or
/// `NotConnected`, or says it is a connect error (hyper-util's `client error (Connect)`,
/// `tcp connect error`, a `kind: Connect` debug representation).
///
/// A connect error means the request never left the machine, so any method, even a `POST`,
/// may be retried.
///
/// ```
/// use std::io;
/// use drchrono_classify::{BoxError, is_connect_error};
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
        if let Some(io) = current.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::NotConnected
            ) {
                return true;
            }
            // `io::Error::source` skips a custom error's own inner error: look at it too.
            if let Some(inner) = io.get_ref() {
                pending.push(inner);
            }
        }
        if says_connect(current) {
            return true;
        }
        if let Some(source) = current.source() {
            pending.push(source);
        }
    }
    false
}

fn says_connect(error: &(dyn StdError + 'static)) -> bool {
    let display = error.to_string().to_ascii_lowercase();
    if display.contains("connect error")
        || display.contains("client error (connect)")
        || display.contains("error trying to connect")
    {
        return true;
    }
    // hyper-util's `Error { kind: Connect, .. }`, but not `kind: ConnectionReset`.
    format!("{error:?}")
        .split("kind: Connect")
        .skip(1)
        .any(|rest| !rest.starts_with(|c: char| c.is_alphanumeric() || c == '_'))
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
            io::ErrorKind::NotConnected,
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
    fn messages() {
        assert!(is_connect_error(&boxed(Wrapper(
            "client error (Connect)",
            None
        ))));
        assert!(is_connect_error(&boxed(Wrapper("tcp connect error", None))));
        assert!(!is_connect_error(&boxed(Wrapper(
            "connection closed",
            None
        ))));
        assert!(!is_connect_error(&boxed(Wrapper(
            "request timed out",
            None
        ))));
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    enum Kind {
        Connect,
        ConnectionReset,
    }

    #[derive(Debug)]
    #[allow(dead_code)]
    struct HyperLike {
        kind: Kind,
    }

    impl fmt::Display for HyperLike {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("client error")
        }
    }

    impl StdError for HyperLike {}

    #[test]
    fn debug_kind_connect() {
        assert!(is_connect_error(&boxed(HyperLike {
            kind: Kind::Connect
        })));
        assert!(!is_connect_error(&boxed(HyperLike {
            kind: Kind::ConnectionReset
        })));
    }
}
