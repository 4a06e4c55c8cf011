//! [`ResponseFuture`] of [`DrChronoRateLimit`](crate::DrChronoRateLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use drchrono_classify::{DrChronoError, ErrorContext, PermitWait};
use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;

use crate::failure::{BACKEND_RETRY_INTERVAL, can_carry, carry};
use crate::observe::throttled_until;
use crate::{BackendError, Priority, RateLimiter};

/// The wait for a permit, or the report of a 429 to the shared state: waiting involves the
/// turn, the backend and a timer, and must own its limiter.
type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A 429's pause of every caller, and the outcome to return once it is recorded.
type Paused<T> = (Boxed<()>, Box<T>);

/// What an attempt ended with.
type Outcome<B, E> = Result<Response<B>, E>;

pin_project! {
    /// Calls the inner service (at once, or after waiting for a permit) and reports a 429 to
    /// the limiter.
    ///
    /// A request admitted when the service was called holds only the inner future and the
    /// limiter; the wait for a permit is boxed, off that path.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
        limiter: RateLimiter,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        Waiting {
            waiting: Box<Waiting<S, Req>>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        // Called after waiting for the permit: the wait is reported with the outcome. Boxed,
        // so that the state of a request admitted at once stays the inner future.
        CalledAfterWait {
            future: Pin<Box<S::Future>>,
            waited: Duration,
        },
        Reporting {
            pause: Boxed<()>,
            outcome: Option<Box<Result<S::Response, S::Error>>>,
        },
        Done,
    }
}

/// A request that waits for its permit, with the service that was polled ready for it.
struct Waiting<S, Req> {
    permit: Option<Boxed<Result<SystemTime, BackendError>>>,
    service: S,
    request: Option<Req>,
    priority: Priority,
    context_of: fn(&Req) -> ErrorContext,
    /// When the wait began (tokio's clock).
    queued_at: Instant,
    /// How long it lasted, once the permit came.
    waited: Duration,
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    /// A request admitted and charged at once: `future` is the inner service's.
    #[inline]
    pub(crate) fn called(future: S::Future, limiter: RateLimiter) -> Self {
        Self {
            state: State::Calling { future },
            limiter,
        }
    }

    /// A request that must wait for a permit before `service` (polled ready) is called.
    pub(crate) fn waiting(
        service: S,
        request: Req,
        limiter: RateLimiter,
        priority: Priority,
        context_of: fn(&Req) -> ErrorContext,
    ) -> Self
    where
        S::Error: 'static,
    {
        let fail_fast = can_carry::<S::Error>();
        Self {
            state: State::Waiting {
                waiting: Box::new(Waiting {
                    permit: Some(permit(limiter.clone(), priority, fail_fast)),
                    service,
                    request: Some(request),
                    priority,
                    context_of,
                    queued_at: Instant::now(),
                    waited: Duration::ZERO,
                }),
            },
            limiter,
        }
    }
}

/// Waits for a permit. A backend failure ends the wait when `fail_fast` (the error type can
/// carry it); otherwise the backend is asked again every [`BACKEND_RETRY_INTERVAL`].
fn permit(
    limiter: RateLimiter,
    priority: Priority,
    fail_fast: bool,
) -> Boxed<Result<SystemTime, BackendError>> {
    Box::pin(async move {
        loop {
            match limiter.acquire(priority).await {
                Ok(released) => return Ok(released),
                Err(error) if fail_fast => return Err(error),
                Err(error) => {
                    tracing::warn!(
                        application = limiter.config().application(),
                        backend = error.backend(),
                        "rate-limit backend unavailable: holding the request until it answers"
                    );
                    tokio::time::sleep(BACKEND_RETRY_INTERVAL).await;
                }
            }
        }
    })
}

impl<S, Req, ResBody> Future for ResponseFuture<S, Req>
where
    S: Service<Req, Response = Response<ResBody>>,
    S::Error: 'static,
{
    type Output = Result<Response<ResBody>, S::Error>;

    /// # Panics
    /// When polled again after it completed.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // An attempt that waited for its permit or met a 429 ends below the match.
            let (outcome, waited, until) = match this.state.as_mut().project() {
                StateProj::Waiting { waiting } => {
                    let waiting = &mut **waiting;
                    if let Some(permit) = &mut waiting.permit {
                        if let Err(error) = ready!(permit.as_mut().poll(cx)) {
                            let context = waiting
                                .request
                                .as_ref()
                                .map_or_else(ErrorContext::new, waiting.context_of);
                            match carry::<S::Error>(error, context) {
                                Some(error) => {
                                    this.state.set(State::Done);
                                    return Poll::Ready(Err(error));
                                }
                                // Unreachable (`fail_fast` checked the type): keep waiting.
                                None => {
                                    waiting.permit = Some(self::permit(
                                        this.limiter.clone(),
                                        waiting.priority,
                                        false,
                                    ));
                                    continue;
                                }
                            }
                        }
                        waiting.permit = None;
                        waiting.waited =
                            Instant::now().saturating_duration_since(waiting.queued_at);
                    }
                    ready!(waiting.service.poll_ready(cx))?;
                    let request = waiting
                        .request
                        .take()
                        .expect("request taken only when calling");
                    let future = Box::pin(waiting.service.call(request));
                    let waited = waiting.waited;
                    this.state.set(State::CalledAfterWait { future, waited });
                    continue;
                }
                StateProj::Calling { future } => {
                    // The outcome is inspected in place and returned as polled, which spares
                    // a copy of the response on the common path.
                    let polled = future.poll(cx);
                    let until = match &polled {
                        Poll::Ready(outcome) => throttled_until(outcome, this.limiter.clock()),
                        Poll::Pending => return Poll::Pending,
                    };
                    if until.is_none() {
                        this.state.set(State::Done);
                        return polled;
                    }
                    // Ready: `Pending` returned above.
                    let Poll::Ready(outcome) = polled else {
                        return Poll::Pending;
                    };
                    (outcome, None, until)
                }
                StateProj::CalledAfterWait { future, waited } => {
                    let outcome = ready!(future.as_mut().poll(cx));
                    let until = throttled_until(&outcome, this.limiter.clock());
                    (outcome, Some(*waited), until)
                }
                StateProj::Reporting { pause, outcome } => {
                    ready!(pause.as_mut().poll(cx));
                    let outcome = outcome.take().expect("outcome taken only once");
                    this.state.set(State::Done);
                    return Poll::Ready(*outcome);
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            };
            match after_wait_or_429(outcome, waited, until, this.limiter) {
                Ok(outcome) => {
                    this.state.set(State::Done);
                    return Poll::Ready(outcome);
                }
                Err((pause, outcome)) => this.state.set(State::Reporting {
                    pause,
                    outcome: Some(outcome),
                }),
            }
        }
    }
}

/// The outcome of an attempt that waited for its permit (`waited`) or met a 429 (`until`):
/// the wait recorded in it, and, for a 429, the pause every caller must now wait for before
/// it is returned. Out of line: most attempts neither waited nor were throttled.
#[cold]
#[inline(never)]
fn after_wait_or_429<B, E: 'static>(
    mut outcome: Outcome<B, E>,
    waited: Option<Duration>,
    until: Option<SystemTime>,
    limiter: &RateLimiter,
) -> Result<Outcome<B, E>, Paused<Outcome<B, E>>> {
    if let Some(waited) = waited {
        record_wait(&mut outcome, waited);
    }
    let Some(until) = until else {
        return Ok(outcome);
    };
    let limiter = limiter.clone();
    // A pause the backend could not record is logged by the limiter; the caller still gets
    // the server's answer.
    let pause: Boxed<()> = Box::pin(async move {
        let _ = limiter.pause_until(until).await;
    });
    Err((pause, Box::new(outcome)))
}

/// Tells the layers above how long the attempt waited for its permit ([`PermitWait`]): in
/// the response's extensions, or in a [`DrChronoError`]'s context (boxed or not). An error
/// of any other type cannot carry it.
fn record_wait<B, E: 'static>(outcome: &mut Result<Response<B>, E>, waited: Duration) {
    match outcome {
        Ok(response) => {
            response.extensions_mut().insert(PermitWait(waited));
        }
        Err(error) => {
            if let Some(error) = DrChronoError::find_mut(error) {
                error.context_mut().permit_wait = Some(waited);
            }
        }
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Waiting { .. } => "waiting for a permit",
            State::Calling { .. } => "calling",
            State::CalledAfterWait { .. } => "calling after waiting for a permit",
            State::Reporting { .. } => "reporting a 429",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
