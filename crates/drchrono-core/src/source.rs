//! What [`DrChronoError::source`](std::error::Error::source) shows: the underlying error,
//! unless its message may quote the values of a body.
//!
//! A `serde_json::Error` quotes the values it choked on (`invalid type: string "Jane Doe,
//! DOB 1970-01-01", expected u64 at line 1 column 42`, `` unknown variant `Jane` ``), and
//! those values are a response's (a `Decode` error) or a request's (a body that could not be
//! encoded). When the chain of a `Transport` or `Decode` error's source holds one, `source()`
//! returns a [`RedactedJsonError`] in place of the whole chain: its category, line and
//! column, not its message.
//!
//! Any other source is returned as it is: the transport's errors. hyper's and hyper-util's
//! errors name a kind and at most a socket address (`client error (Connect)`, `tcp connect
//! error`, `connection closed before message completed`, `error reading a body from
//! connection`), never a URI, a header or a body.

use std::error::Error as StdError;
use std::fmt;
use std::sync::OnceLock;

use serde_json::error::Category;

/// A PHI-free stand-in for a `serde_json::Error` in a [`crate::DrChronoError`]'s `source()`
/// chain: the error's category, line and column, without its message (which quotes the
/// values that could not be decoded).
///
/// ```
/// use std::error::Error;
/// use drchrono_core::{DrChronoError, ErrorContext, RedactedJsonError};
///
/// #[derive(Debug, serde::Deserialize)]
/// struct Patient { id: u64 }
///
/// let body = br#"{"id": "Jane Doe, DOB 1970-01-01"}"#;
/// let serde_error = serde_json::from_slice::<Patient>(body).unwrap_err();
/// assert!(serde_error.to_string().contains("Jane Doe")); // serde quotes the value
///
/// let error = DrChronoError::Decode {
///     source: Box::new(serde_error),
///     context: Box::new(ErrorContext::new()),
/// };
/// let source = error.source().unwrap();
/// assert_eq!(
///     source.to_string(),
///     "JSON data error (a value of the wrong type, or a missing or unknown field) at line 1 \
///      column 33"
/// );
/// let redacted = source.downcast_ref::<RedactedJsonError>().unwrap();
/// assert_eq!((redacted.line(), redacted.column()), (1, 33));
/// assert!(!format!("{error:?}").contains("Jane"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RedactedJsonError {
    category: Category,
    line: usize,
    column: usize,
}

impl RedactedJsonError {
    /// What kind of failure it was: `Syntax`, `Data`, `Eof` or `Io`.
    pub fn category(&self) -> Category {
        self.category
    }

    /// The line of the input where it happened (1-based; 0 when unknown, as for `Io`).
    pub fn line(&self) -> usize {
        self.line
    }

    /// The column of the input where it happened (1-based; 0 when unknown).
    pub fn column(&self) -> usize {
        self.column
    }

    /// The stand-in for the first `serde_json::Error` in `error`'s chain (the error itself,
    /// its `source()`s, and the inner error of an `io::Error`), if any.
    pub(crate) fn find(error: &(dyn StdError + 'static)) -> Option<Self> {
        let mut pending: Vec<&(dyn StdError + 'static)> = vec![error];
        let mut visited = 0;
        while let Some(current) = pending.pop() {
            visited += 1;
            if visited > 64 {
                break;
            }
            if let Some(json) = current.downcast_ref::<serde_json::Error>() {
                return Some(Self::from(json));
            }
            // `io::Error::source` skips a custom error's own inner error: look at it too.
            if let Some(inner) = current
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::get_ref)
            {
                pending.push(inner);
            }
            if let Some(source) = current.source() {
                pending.push(source);
            }
        }
        None
    }
}

impl From<&serde_json::Error> for RedactedJsonError {
    fn from(error: &serde_json::Error) -> Self {
        Self {
            category: error.classify(),
            line: error.line(),
            column: error.column(),
        }
    }
}

impl fmt::Display for RedactedJsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.category {
            Category::Syntax => "JSON syntax error",
            Category::Data => {
                "JSON data error (a value of the wrong type, or a missing or unknown field)"
            }
            Category::Eof => "JSON input ended early",
            Category::Io => "I/O error while reading JSON",
        })?;
        if self.line > 0 {
            write!(f, " at line {} column {}", self.line, self.column)?;
        }
        Ok(())
    }
}

impl StdError for RedactedJsonError {}

/// The [`RedactedJsonError`] of one error's source, decided the first time `source()` is
/// called (the source is given in the error's variant, by whoever built it). Kept in the
/// error's context; a clone of the context starts empty.
#[derive(Default)]
pub(crate) struct SourceCache(OnceLock<(usize, Option<RedactedJsonError>)>);

impl Clone for SourceCache {
    fn clone(&self) -> Self {
        Self::default()
    }
}

impl SourceCache {
    /// What `source()` shows of `source` (see the module docs).
    pub(crate) fn visible<'a>(
        &'a self,
        source: &'a (dyn StdError + 'static),
    ) -> Option<&'a (dyn StdError + 'static)> {
        let address = address_of(source);
        let (cached_for, redacted) = self
            .0
            .get_or_init(|| (address, RedactedJsonError::find(source)));
        if *cached_for != address {
            // The context moved to an error with another source: decide again, and show
            // nothing rather than a message that may quote a body.
            return match RedactedJsonError::find(source) {
                Some(_) => None,
                None => Some(source),
            };
        }
        match redacted {
            Some(redacted) => Some(redacted),
            None => Some(source),
        }
    }
}

impl fmt::Debug for SourceCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SourceCache")
    }
}

/// The address of an error, to tell which one a [`SourceCache`] was filled for.
fn address_of(error: &(dyn StdError + 'static)) -> usize {
    (error as *const dyn StdError).cast::<()>() as usize
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    fn serde_error(body: &str) -> serde_json::Error {
        serde_json::from_str::<Vec<u64>>(body).unwrap_err()
    }

    #[test]
    fn categories_lines_and_columns_without_the_message() {
        let data = serde_error(r#"["Jane Doe"]"#);
        assert!(data.to_string().contains("Jane Doe"));
        let redacted = RedactedJsonError::from(&data);
        assert_eq!(redacted.category(), Category::Data);
        assert_eq!((redacted.line(), redacted.column()), (1, 11));
        assert!(!redacted.to_string().contains("Jane"));
        assert_eq!(
            RedactedJsonError::from(&serde_error("[1,")).to_string(),
            "JSON input ended early at line 1 column 3"
        );
        assert_eq!(
            RedactedJsonError::from(&serde_error("[1 x")).category(),
            Category::Syntax
        );
        let io = serde_json::Error::io(io::Error::other("Jane Doe"));
        assert_eq!(
            RedactedJsonError::from(&io).to_string(),
            "I/O error while reading JSON"
        );
    }

    #[test]
    fn found_anywhere_in_the_chain() {
        let wrapped = io::Error::other(serde_error(r#"["Jane"]"#));
        assert!(RedactedJsonError::find(&wrapped).is_some());
        assert!(RedactedJsonError::find(&io::Error::other("reset")).is_none());
    }

    #[test]
    fn a_cache_filled_for_another_source_shows_nothing_that_may_quote() {
        let cache = SourceCache::default();
        let first: Box<dyn StdError + Send + Sync> = Box::new(serde_error(r#"["Jane"]"#));
        assert!(cache.visible(&*first).unwrap().is::<RedactedJsonError>());
        let second: Box<dyn StdError + Send + Sync> = Box::new(serde_error(r#"["Ada"]"#));
        assert!(cache.visible(&*second).is_none());
        let plain: Box<dyn StdError + Send + Sync> = "connection reset".into();
        assert_eq!(
            cache.visible(&*plain).unwrap().to_string(),
            "connection reset"
        );
        assert!(cache.clone().visible(&*second).is_some());
    }
}
