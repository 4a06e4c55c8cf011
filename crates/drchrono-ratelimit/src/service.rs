//! [`DrChronoRateLimit`]: the rate-limited service.

use std::mem;
use std::task::{Context, Poll};

use drchrono_core::{CallAt, ErrorContext, LayerError};
use http::{Request, Response};
use tokio::time::Instant;
use tower::Service;

use crate::future::ResponseFuture;
use crate::{DrChronoRateLimitLayer, Priority, RateLimiter, Tenant};

/// Waits for a permit of the shared [`RateLimiter`] before each request, and pauses every
/// caller when the server answers 429.
///
/// # A permit is spent only when the request leaves
/// DrChrono counts a request when it arrives, so nothing may wait between the instant a
/// request is charged and the instant it is sent. `poll_ready` forwards to the inner
/// service, which does whatever it must wait for first (the token layer below refreshes
/// there; a transport connects there). When nobody waits ahead and the budget admits the
/// request now (decided synchronously by an in-memory backend), `call` charges it and calls
/// the inner service at once. Otherwise `call` keeps a clone and moves the service that was
/// polled ready into the future, which queues first-come first-served; at the head of the
/// queue it polls the service ready again before each decision, and calls it in the same
/// poll as the charge. A token refresh that takes seconds therefore delays the queue
/// *before* anything is charged, and the requests then leave at the limiter's pace, not
/// all at once.
///
/// A queued request holds nothing its service's readiness reserved (a `ConcurrencyLimit`
/// permit, a connection) while others go first or while it sleeps until its instant: the
/// service is replaced by a fresh clone, and polled ready again at the head. Else one
/// below the limiter with a single permit would deadlock the queue.
///
/// An error from the inner `poll_ready` (a token refresh that failed, say) is returned as
/// it is, by `poll_ready` or, for a request that was queued, by its response future, with
/// nothing charged.
///
/// Called through [`CallAt::call_at`], the request is charged at its caller's reading of
/// tokio's clock (and the inner service called with it) instead of one of the limiter's
/// own: `drchrono-tower`'s stack reads the clock once per attempt.
///
/// Every attempt is charged when it is released and never refunded, as DrChrono counts a
/// throttled request in the rules that allowed it. The outcome is inspected: a 429 (a
/// [`DrChronoError::Throttled`](drchrono_core::DrChronoError::Throttled) that the inner
/// error type holds, see [`LayerError`], or a raw response with `Retry-After`) holds every
/// caller until the advertised instant.
///
/// When the [`Backend`](crate::Backend) cannot be consulted (Redis unreachable, no
/// fallback), the request is not sent (fail closed). If the inner error type can hold a
/// [`DrChronoError`](drchrono_core::DrChronoError) ([`LayerError::from_drchrono`]:
/// `DrChronoError` itself, the recommended stack, or
/// [`BoxError`](drchrono_core::BoxError)), the future fails with
/// [`DrChronoError::Transport`](drchrono_core::DrChronoError::Transport) with
/// `not_sent: true`, the request's method and URI in its context, and the
/// [`BackendError`](crate::BackendError) as its source, so a retry policy may retry it. A
/// type that cannot hold one (`Infallible`) cannot carry it: the request then waits, asking
/// the backend again every second.
///
/// # Tracing: the `rate_limit.wait` span
/// A request that must wait for its permit waits inside one `tracing` span, at the `INFO`
/// level, shaped for OpenTelemetry (`tracing-opentelemetry` exports it as it is):
///
/// ```text
/// rate_limit.wait   drchrono.rate_limit.rule      sliding_1s | sliding_600s | aligned_3600s
///                   drchrono.rate_limit.priority  interactive | background
/// ```
///
/// - It is created in `call`, as a child of the span current there (in `drchrono-tower`'s
///   stack, the attempt's `http.client.attempt`), whichever span polls the response future.
/// - It is entered around every poll of the wait and closes when the permit is charged,
///   before the inner service is called: its duration is the wait, and the call is not
///   part of it. What the inner service does in `poll_ready` at the head of the queue (a
///   token refresh) is part of the wait, so its spans are this one's children.
/// - `drchrono.rate_limit.rule` is the [name](crate::Rule::name) of the rule that held the
///   request: the one named by the last refusal before it was admitted that named one
///   ([`NotUntil::rule`](crate::NotUntil::rule)). It stays empty when none did: the request
///   waited only for those queued ahead of it, or for a server 429's pause, or on a
///   backend that cannot tell (Redis).
/// - A request admitted at once creates no span (and allocates nothing).
#[derive(Debug, Clone)]
pub struct DrChronoRateLimit<S> {
    inner: S,
    limiter: RateLimiter,
}

impl<S> DrChronoRateLimit<S> {
    /// Wraps `inner`, drawing on `limiter`'s budget.
    pub fn new(inner: S, limiter: RateLimiter) -> Self {
        Self { inner, limiter }
    }

    /// A layer drawing on `limiter`'s budget.
    pub fn layer(limiter: RateLimiter) -> DrChronoRateLimitLayer {
        DrChronoRateLimitLayer::new(limiter)
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

    /// The shared limiter.
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for DrChronoRateLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: LayerError + Send + 'static,
    ReqBody: Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S, Request<ReqBody>>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        match self.try_admit(&request, Instant::now()) {
            Ok(()) => {
                // Admitted and charged: the service that was polled ready is called at once.
                let future = self.inner.call(request);
                ResponseFuture::called(future, &self.limiter)
            }
            Err((priority, tenant)) => self.wait_for_permit(request, priority, tenant),
        }
    }
}

/// `call` at `now`: the request is charged at `now` and, if admitted, the inner service is
/// called at `now` too.
impl<S, ReqBody, ResBody> CallAt<Request<ReqBody>> for DrChronoRateLimit<S>
where
    S: CallAt<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Error: LayerError + Send + 'static,
    ReqBody: Send + 'static,
{
    #[inline]
    fn call_at(&mut self, request: Request<ReqBody>, now: Instant) -> Self::Future {
        match self.try_admit(&request, now) {
            Ok(()) => {
                let future = self.inner.call_at(request, now);
                ResponseFuture::called(future, &self.limiter)
            }
            Err((priority, tenant)) => self.wait_for_permit(request, priority, tenant),
        }
    }
}

impl<S> DrChronoRateLimit<S> {
    /// Charges `request` at `now` if it may go at once; otherwise what it queues with.
    #[inline]
    fn try_admit<ReqBody>(
        &self,
        request: &Request<ReqBody>,
        now: Instant,
    ) -> Result<(), (Priority, Option<Tenant>)> {
        let priority = Priority::of(request);
        let tenant = Tenant::of(request);
        if self.limiter.try_acquire_at(priority, tenant.is_some(), now) {
            Ok(())
        } else {
            Err((priority, tenant.cloned()))
        }
    }

    /// `call` when the request must wait: keeps the service that was polled ready for it and
    /// leaves a clone in its place. Out of line, so that the admitted path stays small.
    #[cold]
    #[inline(never)]
    fn wait_for_permit<ReqBody, ResBody>(
        &mut self,
        request: Request<ReqBody>,
        priority: Priority,
        tenant: Option<Tenant>,
    ) -> ResponseFuture<S, Request<ReqBody>>
    where
        S: Service<Request<ReqBody>, Response = Response<ResBody>> + Clone + Send + 'static,
        S::Error: LayerError + Send + 'static,
        ReqBody: Send + 'static,
    {
        let clone = self.inner.clone();
        let inner = mem::replace(&mut self.inner, clone);
        ResponseFuture::waiting(
            inner,
            request,
            self.limiter.clone(),
            priority,
            tenant,
            ErrorContext::from_request::<ReqBody>,
        )
    }
}
