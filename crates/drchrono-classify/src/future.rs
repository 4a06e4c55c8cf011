//! [`ResponseFuture`]: awaits the inner service, and reads and classifies error bodies.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use bytes::{Buf, Bytes};
use http::{Method, Request, Response, Uri};
use http_body::Body;
use pin_project_lite::pin_project;

use crate::layer::Config;
use crate::trace;
use drchrono_core::{
    BoxError, DrChronoError, ErrorContext, RequestPayload, UriText, classify_response, redact,
};

/// Where the context of the request comes from, should the call fail.
#[derive(Debug)]
pub(crate) enum RequestContext {
    /// Copied when the service was called.
    Captured(RequestInfo),
    /// Already given to an error.
    Used,
}

impl RequestContext {
    /// A copy of `request`'s method, URI and payload.
    #[inline]
    pub(crate) fn of<B>(request: &Request<B>) -> Self {
        Self::Captured(RequestInfo::new(request))
    }

    /// The context of an error, once.
    fn take(&mut self) -> ErrorContext {
        match std::mem::replace(self, Self::Used) {
            Self::Captured(info) => info.into_context(),
            Self::Used => {
                let mut context = ErrorContext::new();
                context.occurred_at = Some(SystemTime::now());
                context
            }
        }
    }
}

/// Logs `error`: its one `tracing` event.
fn emit(error: &DrChronoError) {
    trace::emit(error);
}

/// What the future keeps of the request, to fill an [`ErrorContext`] if needed.
///
/// The URI is kept as its text, parsed again only for an error: a clone of the `Uri` itself
/// writes the reference counts of its shared parts twice (four atomic read-modify-writes a
/// request with the drop), which costs more than the copy. The text sits in the future
/// when it is short enough, as a DrChrono API URL usually is ([`UriText`]), and the payload
/// (kept only for a request that names one) in an allocation of its own: the common request
/// allocates nothing here.
pub(crate) struct RequestInfo {
    method: Method,
    uri: UriText,
    payload: Option<Box<Bytes>>,
}

impl std::fmt::Debug for RequestInfo {
    /// The method and path: never the query string or the payload.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let uri = self.uri();
        f.debug_struct("RequestInfo")
            .field("method", &self.method)
            .field("path", &uri.as_ref().map(Uri::path))
            .field(
                "payload",
                &self.payload.as_ref().map(|payload| payload.len()),
            )
            .finish()
    }
}

impl RequestInfo {
    pub(crate) fn new<B>(request: &Request<B>) -> Self {
        Self {
            method: request.method().clone(),
            uri: UriText::of(request.uri()),
            payload: request
                .extensions()
                .get::<RequestPayload>()
                .map(|payload| Box::new(payload.0.clone())),
        }
    }

    /// The URI again (its text always parses: it is a URI's own).
    fn uri(&self) -> Option<Uri> {
        self.uri.to_uri()
    }

    /// The context of an error: the payload is redacted here, never stored raw.
    fn into_context(self) -> ErrorContext {
        let mut context = ErrorContext::new();
        context.uri = self.uri();
        context.method = Some(self.method);
        context.occurred_at = Some(SystemTime::now());
        context.request_payload = self.payload.as_deref().map(|p| redact::redact_payload(p));
        context
    }
}

pin_project! {
    /// The response future of [`crate::ErrorClassify`].
    ///
    /// # Panics
    ///
    /// Panics if polled again after it completed, like most futures.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        request: RequestContext,
        config: Config,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        /// Awaiting the inner service.
        Calling {
            #[pin]
            future: F,
        },
        /// Reading an error body, up to the limit. Boxed: only error responses get here, and
        /// the future of every successful call stays as small as the inner one.
        Reading {
            reading: Pin<Box<Reading<B>>>,
        },
        /// Completed.
        Done,
    }
}

pin_project! {
    /// An error response whose body is being read.
    #[project = ReadingProj]
    struct Reading<B> {
        #[pin]
        body: B,
        parts: http::response::Parts,
        buffer: Vec<u8>,
        truncated: bool,
        // When reading began; reading gives up `body_timeout` later
        // ([`crate::ErrorClassifyLayer::body_timeout`]).
        started: tokio::time::Instant,
        // The timer, set only once the body makes the reader wait: a body that is there at
        // once never needs tokio's timer.
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F, B> ResponseFuture<F, B> {
    #[inline]
    pub(crate) fn new(future: F, request: RequestContext, config: Config) -> Self {
        Self {
            state: State::Calling { future },
            request,
            config,
        }
    }
}

impl<F, B> std::fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = match &self.state {
            State::Calling { .. } => "Calling",
            State::Reading { .. } => "Reading",
            State::Done => "Done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body,
{
    type Output = Result<Response<B>, DrChronoError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        loop {
            let mut this = self.as_mut().project();
            match this.state.as_mut().project() {
                StateProj::Calling { future } => match ready!(future.poll(cx)) {
                    Ok(response) if response.status().as_u16() < 400 => {
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(response));
                    }
                    Ok(response) => {
                        let (parts, body) = response.into_parts();
                        let capacity = initial_capacity(&body, this.config.body_limit);
                        this.state.set(State::Reading {
                            reading: Box::pin(Reading {
                                body,
                                parts,
                                buffer: Vec::with_capacity(capacity),
                                truncated: false,
                                started: tokio::time::Instant::now(),
                                deadline: None,
                            }),
                        });
                    }
                    Err(error) => {
                        let source = error.into();
                        let error = DrChronoError::Transport {
                            not_sent: (this.config.not_sent())(&source),
                            source,
                            context: Box::new(this.request.take()),
                        };
                        this.state.set(State::Done);
                        emit(&error);
                        return Poll::Ready(Err(error));
                    }
                },
                StateProj::Reading { reading } => {
                    let ReadingProj {
                        mut body,
                        buffer,
                        truncated,
                        started,
                        deadline,
                        ..
                    } = reading.as_mut().project();
                    let limit = this.config.body_limit;
                    let timeout = this.config.body_timeout;
                    loop {
                        if buffer.len() >= limit {
                            // Stop here: whatever is left is dropped with the body, unread.
                            *truncated |= !body.is_end_stream();
                            break;
                        }
                        let frame = match body.as_mut().poll_frame(cx) {
                            Poll::Ready(frame) => frame,
                            // A stalled body: classify what arrived, by status.
                            Poll::Pending => {
                                let deadline = deadline.get_or_insert_with(|| {
                                    // `Duration::MAX` (no bound) must not overflow.
                                    Box::pin(match started.checked_add(timeout) {
                                        Some(at) => tokio::time::sleep_until(at),
                                        None => tokio::time::sleep(timeout),
                                    })
                                });
                                if deadline.as_mut().poll(cx).is_pending() {
                                    return Poll::Pending;
                                }
                                *truncated = true;
                                break;
                            }
                        };
                        match frame {
                            None => break,
                            // A broken body: classify what arrived, by status.
                            Some(Err(_)) => {
                                *truncated = true;
                                break;
                            }
                            Some(Ok(frame)) => {
                                if let Ok(mut data) = frame.into_data() {
                                    append_limited(buffer, &mut data, limit);
                                    if data.has_remaining() {
                                        *truncated = true;
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    let truncated = *truncated;
                    let buffer = std::mem::take(buffer);
                    let parts = &reading.parts;
                    let context = this.request.take();
                    let error = classify_response(
                        parts.status,
                        &parts.headers,
                        &buffer,
                        truncated,
                        context,
                    )
                    .unwrap_or_else(|| DrChronoError::UnexpectedStatus {
                        status: parts.status,
                        context: Box::default(),
                    });
                    // Drops the body: no further byte is read.
                    this.state.set(State::Done);
                    emit(&error);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// The buffer's first allocation: the body's exact size when known, else a few KiB, and never
/// more than the limit.
fn initial_capacity<B: Body>(body: &B, limit: usize) -> usize {
    let hint = body.size_hint();
    let wanted = hint.exact().unwrap_or_else(|| hint.lower().max(4096));
    usize::try_from(wanted).unwrap_or(usize::MAX).min(limit)
}

/// Copies `data` into `buffer` until `buffer` holds `limit` bytes; capacity never grows past
/// `limit`.
fn append_limited(buffer: &mut Vec<u8>, data: &mut impl Buf, limit: usize) {
    while data.has_remaining() && buffer.len() < limit {
        let chunk = data.chunk();
        if chunk.is_empty() {
            break;
        }
        let n = chunk.len().min(limit - buffer.len());
        if buffer.capacity() - buffer.len() < n {
            let target = buffer
                .capacity()
                .saturating_mul(2)
                .max(buffer.len() + n)
                .min(limit);
            buffer.reserve_exact(target - buffer.len());
        }
        buffer.extend_from_slice(chunk.get(..n).unwrap_or(chunk));
        data.advance(n);
    }
}
