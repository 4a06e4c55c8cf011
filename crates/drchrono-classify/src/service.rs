//! [`ErrorClassify`]: the middleware service.

use std::task::{Context, Poll};

use http::{Request, Response};
use http_body::Body;
use tower::Service;

use crate::future::{RequestContext, ResponseFuture};
use crate::layer::Config;
use crate::{ErrorClassifyLayer, trace};
use drchrono_core::{BoxError, DrChronoError, ErrorContext};

/// Middleware that turns DrChrono error responses into [`DrChronoError`]s.
///
/// - A response with a status below 400 passes through untouched, its body still streaming.
/// - For a status of 400 or more, the body is read up to the limit (64 KiB by default; the
///   rest is dropped unread), classified by [`classify_response`](drchrono_core::classify_response), and returned as
///   `Err(DrChronoError)`.
/// - An inner service error becomes [`DrChronoError::Transport`], with `not_sent` from the
///   layer's predicate (an error from `poll_ready` is always `not_sent`: no request was
///   given to the service).
///
/// Every error is logged as exactly one `tracing` event, with PHI-free fields only.
/// Attach a [`RequestPayload`](drchrono_core::RequestPayload) extension to have the payload, redacted, in the
/// error's [`ErrorContext`].
///
/// Each call copies the request's method and URI (and payload, when attached) for the
/// error's context.
#[derive(Clone, Debug)]
pub struct ErrorClassify<S> {
    inner: S,
    config: Config,
}

impl<S> ErrorClassify<S> {
    /// Wraps `inner` with the defaults of [`ErrorClassifyLayer::new`].
    pub fn new(inner: S) -> Self {
        Self::with_config(inner, Config::default())
    }

    pub(crate) fn with_config(inner: S, config: Config) -> Self {
        Self { inner, config }
    }

    /// A layer that wraps services with `ErrorClassify` (defaults as
    /// [`ErrorClassifyLayer::new`]).
    pub fn layer() -> ErrorClassifyLayer {
        ErrorClassifyLayer::new()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for ErrorClassify<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    S::Error: Into<BoxError>,
    ResBody: Body,
{
    type Response = Response<ResBody>;
    type Error = DrChronoError;
    type Future = ResponseFuture<S::Future, ResBody>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(|error| {
            let error = DrChronoError::Transport {
                not_sent: true,
                source: error.into(),
                context: Box::new(ErrorContext::now()),
            };
            trace::emit(&error);
            error
        })
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let context = RequestContext::of(&request);
        ResponseFuture::new(self.inner.call(request), context, self.config)
    }
}
