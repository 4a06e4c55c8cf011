//! [`Replay`]: the copy of a request that a retry loop of one's own keeps for the next
//! attempt.

use std::fmt;

use drchrono_core::UriText;

use crate::policy::Next;
use http::{Extensions, HeaderMap, Method, Request, Uri, Version};

/// A copy of a request for its next attempt, made by
/// [`RetryPolicy::clone_request_for`](crate::RetryPolicy::clone_request_for): the method,
/// version, headers, extensions and body as they were, and the URI as its text, parsed
/// again only when the attempt fails (the policy's events name its path) or is sent again
/// ([`into_request`](Self::into_request)).
///
/// A copy that is never sent, as for every request that succeeds at once, so costs no
/// clone of the [`Uri`] (whose two shared parts a clone and its drop write four times).
///
/// ```
/// use drchrono_retry::{RequestRetries, RetryPolicy};
/// use http_body_util::Full;
/// use tokio::time::Instant;
///
/// let policy = RetryPolicy::default();
/// let request = http::Request::post("https://app.drchrono.com/api/patients?doctor=7")
///     .header("content-type", "application/json")
///     .body(Full::new(bytes::Bytes::from_static(b"{}")))
///     .unwrap();
/// let replay = policy
///     .clone_request_for(&mut RequestRetries::default(), &request, Instant::now())
///     .unwrap();
/// let again = replay.into_request().unwrap();
/// assert_eq!(again.uri(), request.uri());
/// assert_eq!(again.method(), request.method());
/// assert_eq!(again.headers(), request.headers());
/// ```
pub struct Replay<B> {
    method: Method,
    uri: ReplayUri,
    version: Version,
    headers: HeaderMap,
    extensions: Extensions,
    body: B,
}

/// The copy's URI: its text until it is needed, then parsed once.
enum ReplayUri {
    Text(UriText),
    Parsed(Option<Uri>),
}

impl<B> Replay<B> {
    /// A copy of `request` with `body`.
    #[inline]
    pub(crate) fn of(request: &Request<B>, body: B) -> Self {
        Self {
            method: request.method().clone(),
            uri: ReplayUri::Text(UriText::of(request.uri())),
            version: request.version(),
            headers: request.headers().clone(),
            extensions: request.extensions().clone(),
            body,
        }
    }

    /// The request to send again. `None` only if the URI's text did not parse again, which
    /// text taken from a [`Uri`] always does: a loop then ends with the last outcome, as
    /// when the policy does not retry.
    pub fn into_request(self) -> Option<Request<B>> {
        let uri = match self.uri {
            ReplayUri::Text(text) => text.to_uri(),
            ReplayUri::Parsed(uri) => uri,
        }?;
        let mut request = Request::new(self.body);
        *request.method_mut() = self.method;
        *request.uri_mut() = uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        *request.extensions_mut() = self.extensions;
        Some(request)
    }
}

/// What the policy reads of the copy, and marks on it.
impl<B> Next for Replay<B> {
    fn method(&self) -> &Method {
        &self.method
    }

    fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// Parses the URI's text, once: the policy's events name the path of a failed attempt.
    fn prepare(&mut self) {
        if let ReplayUri::Text(text) = &self.uri {
            self.uri = ReplayUri::Parsed(text.to_uri());
        }
    }

    /// The URI's path once parsed ([`prepare`](Next::prepare)); empty before.
    fn path(&self) -> &str {
        match &self.uri {
            ReplayUri::Parsed(Some(uri)) => uri.path(),
            _ => "",
        }
    }
}

impl<B> fmt::Debug for Replay<B> {
    /// The method and the path: never the query, a header or the body.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = match &self.uri {
            ReplayUri::Text(text) => text.to_uri().map(|uri| uri.path().to_owned()),
            ReplayUri::Parsed(uri) => uri.as_ref().map(|uri| uri.path().to_owned()),
        };
        f.debug_struct("Replay")
            .field("method", &self.method)
            .field("path", &path)
            .finish_non_exhaustive()
    }
}
