//! [`RequestFuture`]: one logical request through [`DrChronoService`](crate::DrChronoService),
//! its retries included.
//!
//! The loop is tower's `Retry` (the same `Policy` calls, in the same order), with the
//! request's and each attempt's span held beside the attempt rather than around it, one
//! shared policy beside the request's [`RequestRetries`] rather than a clone of the policy,
//! and the service for a retry cloned from one shared copy of the stack when a retry needs
//! it, not with every request. Each attempt reads tokio's clock once, for the policy and for
//! the stack ([`CallAt`]).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use drchrono_core::{CallAt, LayerError};
use drchrono_retry::{Replay, ReplayBody, RequestRetries, RetryFuture, RetryPolicy};
use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;
use tracing::Span;

use crate::span::{DurationMetric, attempt_span, record_outcome};

/// What every request of a [`DrChronoService`](crate::DrChronoService) (and of its clones)
/// shares for its retries: the policy, with no request's state, and a copy of the layers
/// below, cloned for each retry.
///
/// The copy sits behind a mutex, taken only to clone it, so that a future holding this is
/// `Send` whenever the layers are (a transport need not be `Sync`).
pub(crate) struct Retries<S> {
    pub(crate) policy: RetryPolicy,
    stack: Mutex<S>,
}

impl<S: Clone> Retries<S> {
    pub(crate) fn new(policy: RetryPolicy, stack: S) -> Self {
        Self {
            policy,
            stack: Mutex::new(stack),
        }
    }

    /// A fresh copy of the layers, for one retry. A poisoned lock still holds a whole
    /// service: cloning one does not leave it half-written.
    fn service(&self) -> S {
        self.stack
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl<S: fmt::Debug> fmt::Debug for Retries<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retries")
            .field("policy", &self.policy)
            .field("stack", &self.stack)
            .finish()
    }
}

pin_project! {
    /// The future of [`DrChronoService`](crate::DrChronoService): one logical request, its
    /// retries included.
    ///
    /// It asks the [`RetryPolicy`] about each attempt's outcome as tower's `Retry` does, and
    /// polls everything inside the request's `http.client.request` span, each attempt inside
    /// its own `http.client.attempt` span; the request's span records the outcome when it
    /// ends (and, with the `metrics` feature, the request's duration).
    ///
    /// # Panics
    /// When polled again after it completed.
    pub struct RequestFuture<S, B>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future, S>,
        // `None` while neither span is enabled: no subscriber is interested, which costs no
        // space in the future.
        spans: Option<Box<Spans>>,
        // The copy of the attempt in flight, for the next (`None`: the policy would not
        // retry this request).
        replay: Option<Replay<B>>,
        // The request the next attempt sends, once a retry is decided. Boxed: only a retry
        // gets here.
        next: Option<Box<Request<B>>>,
        // This request's state under the shared policy.
        attempts: RequestRetries,
        retries: Arc<Retries<S>>,
        duration: DurationMetric,
    }
}

/// A request's span and its current attempt's.
struct Spans {
    // The attempt's span closes before the request's: fields drop in order.
    attempt: Span,
    request: Span,
}

impl Spans {
    /// Both, unless neither is enabled.
    fn of(request: Span, attempt: Span) -> Option<Box<Self>> {
        (!request.is_disabled() || !attempt.is_disabled())
            .then(|| Box::new(Self { attempt, request }))
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, S> {
        // An attempt in flight.
        Called {
            #[pin]
            future: F,
        },
        // The policy's wait before the next attempt.
        Waiting {
            #[pin]
            wait: RetryFuture,
        },
        // The next attempt's service, polled ready before it is called. Boxed: only a
        // retry gets here.
        Retrying {
            service: Option<Box<S>>,
        },
        Done,
    }
}

impl<S, B> RequestFuture<S, B>
where
    S: CallAt<Request<B>>,
{
    /// Calls `service` (polled ready) for the request's first attempt, inside `span`.
    ///
    /// Always inlined, like the result built in place: the request and the attempt's future
    /// are each copied once less (a request is 256 bytes; the future, the stack's).
    #[inline(always)]
    pub(crate) fn first(
        service: &mut S,
        request: Request<B>,
        retries: &Arc<Retries<S>>,
        span: Span,
        duration: DurationMetric,
    ) -> Self
    where
        B: ReplayBody,
    {
        let mut attempts = RequestRetries::default();
        let entered = span.enter();
        // One reading of the clock for the attempt: the policy's deadline and budget, the
        // limiter's charge, the token's expiry.
        let now = Instant::now();
        // tower's order: the copy first, then the call.
        let replay = retries
            .policy
            .clone_request_for(&mut attempts, &request, now);
        let attempt = attempt_span(&request);
        let attempt_entered = attempt.enter();
        let future = service.call_at(request, now);
        drop(attempt_entered);
        drop(entered);
        Self {
            state: State::Called { future },
            spans: Spans::of(span, attempt),
            replay,
            next: None,
            attempts,
            retries: Arc::clone(retries),
            duration,
        }
    }
}

impl<S, B, ResBody> Future for RequestFuture<S, B>
where
    S: CallAt<Request<B>, Response = Response<ResBody>> + Clone,
    S::Error: LayerError,
    B: ReplayBody,
{
    type Output = Result<Response<ResBody>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        // A handle of the request's span (only an enabled one costs anything to copy), so
        // that the attempt's can be replaced while it is entered.
        let request_span = this.spans.as_ref().map(|spans| spans.request.clone());
        let _entered = request_span.as_ref().map(Span::enter);
        loop {
            match this.state.as_mut().project() {
                StateProj::Called { future } => {
                    let mut outcome = {
                        let _attempt = this.spans.as_ref().map(|spans| spans.attempt.enter());
                        ready!(future.poll(cx))
                    };
                    let wait = match this.replay {
                        Some(replay) => {
                            this.retries
                                .policy
                                .retry_for(this.attempts, replay, &mut outcome)
                        }
                        None => None,
                    };
                    // The copy goes next, a request again (its URI parsed once more). One
                    // whose text did not parse (a URI's own always does) ends the request
                    // as a policy that does not retry it would.
                    let next = wait
                        .is_some()
                        .then(|| this.replay.take().and_then(Replay::into_request))
                        .flatten();
                    let (Some(wait), Some(next)) = (wait, next) else {
                        // Returned from here, not after the loop: one copy of the response
                        // less. Polled again, the finished attempt's future panics.
                        finish(this.spans, this.duration, &outcome);
                        return Poll::Ready(outcome);
                    };
                    *this.next = Some(Box::new(next));
                    // The attempt is over (its span closes after the policy's event, as the
                    // attempt's future would).
                    if let Some(spans) = this.spans {
                        spans.attempt = Span::none();
                    }
                    this.state.set(State::Waiting { wait });
                }
                StateProj::Waiting { wait } => {
                    ready!(wait.poll(cx));
                    this.state.set(State::Retrying { service: None });
                }
                StateProj::Retrying { service } => {
                    let ready = service.get_or_insert_with(|| Box::new(this.retries.service()));
                    if let Err(error) = ready!(ready.poll_ready(cx)) {
                        this.state.set(State::Done);
                        let outcome = Err(error);
                        finish(this.spans, this.duration, &outcome);
                        return Poll::Ready(outcome);
                    }
                    let Some(request) = this.next.take() else {
                        panic!("a retry is decided only with the request it sends");
                    };
                    let request = *request;
                    let now = Instant::now();
                    *this.replay =
                        this.retries
                            .policy
                            .clone_request_for(this.attempts, &request, now);
                    let attempt = attempt_span(&request);
                    let future = {
                        let _attempt = attempt.enter();
                        ready.call_at(request, now)
                    };
                    match this.spans {
                        Some(spans) => spans.attempt = attempt,
                        // The request's span was disabled and stays so (it is entered, if
                        // ever, only from here on).
                        None => *this.spans = Spans::of(Span::none(), attempt),
                    }
                    this.state.set(State::Called { future });
                }
                StateProj::Done => panic!("RequestFuture polled after completion"),
            }
        }
    }
}

/// Records the request's outcome in its span, if enabled (and, with the `metrics` feature,
/// its duration).
#[inline]
fn finish<B, E: LayerError>(
    spans: &Option<Box<Spans>>,
    duration: &DurationMetric,
    outcome: &Result<Response<B>, E>,
) {
    if let Some(spans) = spans
        && !spans.request.is_disabled()
    {
        record_outcome(&spans.request, outcome);
    }
    duration.finish(outcome);
}

impl<S, B> fmt::Debug for RequestFuture<S, B>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting",
            State::Retrying { .. } => "retrying",
            State::Done => "done",
        };
        f.debug_struct("RequestFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
