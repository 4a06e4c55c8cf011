//! [`Attempt`]: what [`DrChronoClient`](crate::DrChronoClient) puts around its transport, below
//! the retry layer, so that every attempt (each retry included) gets its own bounds: a time
//! limit for the response head, then a time and a size limit for reading a success body.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use drchrono_core::BoxError;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tower::Service;

/// How long an attempt may wait for its response head by default: 60 s.
pub(crate) const DEFAULT_RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(60);
/// How long reading a success body may take by default: 60 s.
pub(crate) const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest success body read by default: 32 MiB.
pub(crate) const DEFAULT_MAX_BODY_SIZE: usize = 32 * 1024 * 1024;

/// Which part of an attempt ran out of time (see [`TimedOut`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutPhase {
    /// Setting up the connection (TCP and TLS): the request was **not** sent.
    Connect,
    /// Waiting for the response's status and headers, from the moment the attempt was
    /// handed to the transport: the request **may** have been sent.
    ResponseHead,
    /// Reading a success response's body: the request was sent.
    Body,
}

/// An attempt that took longer than one of its timeouts: the source of a
/// [`DrChronoError::Transport`](crate::DrChronoError::Transport) whose `not_sent` is `true`
/// only for [`TimeoutPhase::Connect`], so that the retry policy retries it by idempotency
/// like any transport failure (any method when not sent, idempotent ones otherwise).
///
/// Find it in the error's `source()` chain (hyper-util wraps a connect timeout in its own
/// error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut {
    phase: TimeoutPhase,
    after: Duration,
}

impl TimedOut {
    pub(crate) fn new(phase: TimeoutPhase, after: Duration) -> Self {
        Self { phase, after }
    }

    /// Which part of the attempt ran out of time.
    pub fn phase(&self) -> TimeoutPhase {
        self.phase
    }

    /// The timeout that elapsed.
    pub fn after(&self) -> Duration {
        self.after
    }

    /// Whether the request may have reached the server: `false` only for a connect
    /// timeout.
    pub(crate) fn may_have_been_sent(&self) -> bool {
        self.phase != TimeoutPhase::Connect
    }
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let after = self.after;
        match self.phase {
            TimeoutPhase::Connect => {
                write!(
                    f,
                    "no connection within {after:?}: the request was not sent"
                )
            }
            TimeoutPhase::ResponseHead => write!(
                f,
                "no response within {after:?}: the request may have been sent"
            ),
            TimeoutPhase::Body => write!(f, "the response body was not read within {after:?}"),
        }
    }
}

impl std::error::Error for TimedOut {}

/// A success response whose body is larger than the client's limit
/// ([`DrChronoClientBuilder::max_body_size`](crate::DrChronoClientBuilder::max_body_size),
/// 32 MiB by default): the source of a
/// [`DrChronoError::Decode`](crate::DrChronoError::Decode). Not retried (the body would be
/// as large again). Reading stops at the limit; the rest is never buffered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge {
    limit: usize,
    length: Option<u64>,
}

impl BodyTooLarge {
    /// The limit, in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The body's length when the response declared it (`Content-Length`).
    pub fn length(&self) -> Option<u64> {
        self.length
    }
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.length {
            Some(length) => write!(
                f,
                "the response body ({length} bytes) is larger than the {} byte limit",
                self.limit
            ),
            None => write!(
                f,
                "the response body is larger than the {} byte limit",
                self.limit
            ),
        }
    }
}

impl std::error::Error for BodyTooLarge {}

/// A success body that broke off before its end (the connection closed or reset): the
/// request was sent, so the retry policy retries it by idempotency, like a 5xx.
#[derive(Debug)]
struct BodyBrokeOff(BoxError);

impl fmt::Display for BodyBrokeOff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the response body broke off before its end")
    }
}

impl std::error::Error for BodyBrokeOff {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}

/// Whether `error` is a failure that happened after the response head arrived (the request
/// was sent).
pub(crate) fn after_response_head(error: &(dyn std::error::Error + 'static)) -> bool {
    error.is::<BodyBrokeOff>()
}

/// The bounds of each attempt.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) response_head: Duration,
    pub(crate) body_read: Duration,
    pub(crate) max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            response_head: DEFAULT_RESPONSE_HEAD_TIMEOUT,
            body_read: DEFAULT_BODY_READ_TIMEOUT,
            max_body: DEFAULT_MAX_BODY_SIZE,
        }
    }
}

/// The transport adapter: the response head within `limits.response_head` (else
/// [`TimedOut`] of phase [`TimeoutPhase::ResponseHead`]); a success body (status below 400)
/// read whole within `limits.body_read` and `limits.max_body`. Error bodies stream on to
/// the classifier, which reads them under its own bound.
///
/// Failures are errors of the transport, so the classifier above types them
/// ([`DrChronoError::Transport`](crate::DrChronoError::Transport)) and the retry policy
/// retries them by idempotency. A body over the size limit is not a failure of the attempt
/// (a retry would meet the same body): it comes back as a response carrying
/// [`AttemptBody::TooLarge`], which the client turns into its error.
#[derive(Debug, Clone)]
pub(crate) struct Attempt<S> {
    inner: S,
    limits: Limits,
}

impl<S> Attempt<S> {
    pub(crate) fn new(inner: S, limits: Limits) -> Self {
        Self { inner, limits }
    }
}

type AttemptFuture<B> =
    Pin<Box<dyn Future<Output = Result<Response<AttemptBody<B>>, BoxError>> + Send>>;

impl<S, ReqBody, B> Service<Request<ReqBody>> for Attempt<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<AttemptBody<B>>;
    type Error = BoxError;
    // One allocation per attempt, next to a network round trip; the client boxes its
    // stack's future anyway.
    type Future = AttemptFuture<B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let limits = self.limits;
        let head = self.inner.call(request);
        Box::pin(async move {
            let response = match tokio::time::timeout(limits.response_head, head).await {
                Ok(response) => response.map_err(Into::into)?,
                Err(_) => {
                    let timed_out = TimedOut::new(TimeoutPhase::ResponseHead, limits.response_head);
                    return Err(Box::new(timed_out) as BoxError);
                }
            };
            if response.status().as_u16() >= 400 {
                return Ok(response.map(|body| AttemptBody::Streaming(Box::pin(body))));
            }
            let (parts, body) = response.into_parts();
            let body = match read_whole(body, limits).await {
                Ok(bytes) => AttemptBody::Read(Some(bytes)),
                Err(ReadError::TooLarge(too_large)) => AttemptBody::TooLarge(too_large),
                Err(ReadError::TimedOut(timed_out)) => return Err(Box::new(timed_out) as BoxError),
                Err(ReadError::Failed(error)) => {
                    return Err(Box::new(BodyBrokeOff(error)) as BoxError);
                }
            };
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// The body of a response that passed through [`Attempt`].
pub(crate) enum AttemptBody<B> {
    /// A success body, read whole.
    Read(Option<Bytes>),
    /// A success body over the size limit, left unread.
    TooLarge(BodyTooLarge),
    /// An error body, streaming on to the classifier.
    Streaming(Pin<Box<B>>),
}

impl<B> fmt::Debug for AttemptBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the bytes: they may hold patient data.
        match self {
            Self::Read(data) => f
                .debug_struct("Read")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Self::TooLarge(too_large) => f.debug_tuple("TooLarge").field(too_large).finish(),
            Self::Streaming(_) => f.write_str("Streaming"),
        }
    }
}

impl<B: Body<Data = Bytes>> Body for AttemptBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.get_mut() {
            Self::Read(data) => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
            Self::TooLarge(_) => Poll::Ready(None),
            Self::Streaming(body) => body.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Read(data) => data.is_none(),
            Self::TooLarge(_) => true,
            Self::Streaming(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Read(data) => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Self::TooLarge(_) => SizeHint::with_exact(0),
            Self::Streaming(body) => body.size_hint(),
        }
    }
}

/// Why a body was not read whole.
pub(crate) enum ReadError {
    TooLarge(BodyTooLarge),
    TimedOut(TimedOut),
    Failed(BoxError),
}

/// Reads `body` whole within `limits.body_read` and `limits.max_body`. A declared length
/// over the limit fails before anything is read.
pub(crate) async fn read_whole<B>(body: B, limits: Limits) -> Result<Bytes, ReadError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let limit = limits.max_body;
    let declared = body.size_hint().exact();
    if body.size_hint().lower() > limit as u64 {
        return Err(ReadError::TooLarge(BodyTooLarge {
            limit,
            length: declared,
        }));
    }
    let reading = async {
        let mut body = std::pin::pin!(body);
        let mut first: Option<Bytes> = None;
        let mut joined = BytesMut::new();
        let mut length = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| ReadError::Failed(e.into()))?;
            let Ok(data) = frame.into_data() else {
                continue; // trailers
            };
            length = length.saturating_add(data.len());
            if length > limit {
                return Err(ReadError::TooLarge(BodyTooLarge {
                    limit,
                    length: declared,
                }));
            }
            // The usual single-frame body is kept as it came, without a copy.
            match first.take() {
                None if joined.is_empty() => first = Some(data),
                None => joined.extend_from_slice(&data),
                Some(earlier) => {
                    joined.extend_from_slice(&earlier);
                    joined.extend_from_slice(&data);
                }
            }
        }
        Ok(first.unwrap_or_else(|| joined.freeze()))
    };
    match tokio::time::timeout(limits.body_read, reading).await {
        Ok(read) => read,
        Err(_) => Err(ReadError::TimedOut(TimedOut::new(
            TimeoutPhase::Body,
            limits.body_read,
        ))),
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::Full;

    use super::*;

    fn limits(max_body: usize) -> Limits {
        Limits {
            max_body,
            ..Limits::default()
        }
    }

    /// A body of `chunks`, one frame each, with no declared length.
    fn chunked(chunks: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = BoxError> + use<> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        http_body_util::StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn bodies_are_joined_up_to_the_limit() {
        let read = read_whole(chunked(&[b"ab", b"cd", b"e"]), limits(5)).await;
        assert_eq!(read.ok(), Some(Bytes::from_static(b"abcde")));
        let single = read_whole(Full::new(Bytes::from_static(b"abc")), limits(3)).await;
        assert_eq!(single.ok(), Some(Bytes::from_static(b"abc")));
        let empty = read_whole(Full::new(Bytes::new()), limits(0)).await;
        assert_eq!(empty.ok(), Some(Bytes::new()));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_refused() {
        let Err(ReadError::TooLarge(streamed)) =
            read_whole(chunked(&[b"ab", b"cd", b"ef"]), limits(5)).await
        else {
            panic!("expected TooLarge");
        };
        assert_eq!((streamed.limit(), streamed.length()), (5, None));
        let Err(ReadError::TooLarge(declared)) =
            read_whole(Full::new(Bytes::from_static(b"abcdef")), limits(5)).await
        else {
            panic!("expected TooLarge");
        };
        assert_eq!(declared.length(), Some(6));
        assert_eq!(
            declared.to_string(),
            "the response body (6 bytes) is larger than the 5 byte limit"
        );
    }

    #[test]
    fn timeouts_say_whether_the_request_may_have_been_sent() {
        let connect = TimedOut::new(TimeoutPhase::Connect, Duration::from_secs(10));
        assert!(!connect.may_have_been_sent());
        assert_eq!(
            connect.to_string(),
            "no connection within 10s: the request was not sent"
        );
        let head = TimedOut::new(TimeoutPhase::ResponseHead, Duration::from_secs(60));
        assert!(head.may_have_been_sent());
        assert_eq!(
            head.to_string(),
            "no response within 60s: the request may have been sent"
        );
        assert!(TimedOut::new(TimeoutPhase::Body, Duration::ZERO).may_have_been_sent());
    }
}
