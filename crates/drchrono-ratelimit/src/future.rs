//! [`ResponseFuture`] of [`DrChronoRateLimit`](crate::DrChronoRateLimit).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use drchrono_core::{ErrorContext, LayerError, PermitWait};
use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::Service;
use tracing::{Instrument, Span};

use crate::failure::{BACKEND_RETRY_INTERVAL, carry};
use crate::observe::{is_throttled, throttled_until};
use crate::rate_limiter::{LimiterId, Readiness, Refused};
use crate::{NotUntil, Priority, RateLimiter, Tenant};

/// The wait for a permit, or the report of a 429 to the shared state: waiting involves the
/// turn, the backend and a timer, and must own its limiter.
type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A 429's pause of every caller, and the outcome to return once it is recorded.
type Paused<T> = (Boxed<()>, Box<T>);

/// The inner service called the instant its permit was charged, and how long the request
/// waited for it; or why it was not sent.
type Sending<S, Req> =
    Boxed<Result<(<S as Service<Req>>::Future, Duration), <S as Service<Req>>::Error>>;

/// What an attempt ended with.
type Outcome<B, E> = Result<Response<B>, E>;

pin_project! {
    /// Calls the inner service (at once, or after waiting for a permit) and reports a 429 to
    /// the limiter.
    ///
    /// A request admitted when the service was called holds only the inner future and its
    /// limiter's id; the wait for a permit is boxed, off that path.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
        limiter: Handle,
    }
}

/// How a response future reaches its limiter to report a 429.
enum Handle {
    /// Admitted at once: by its id, found only on a 429 (see [`LimiterId`]).
    Id(LimiterId),
    /// Admitted after a wait, which held the limiter anyway.
    Held(RateLimiter),
}

impl Handle {
    /// The limiter, unless it was dropped (every handle of it: nobody is left to pause).
    fn limiter(&self) -> Option<RateLimiter> {
        match self {
            Self::Id(id) => {
                let limiter = id.upgrade();
                if limiter.is_none() {
                    tracing::warn!(
                        "DrChrono throttled a request whose rate limiter was dropped meanwhile: \
                         no caller is paused"
                    );
                }
                limiter
            }
            Self::Held(limiter) => Some(limiter.clone()),
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        // Waiting for the permit, the inner service's readiness polled before each decision;
        // ends with the inner service called the instant the permit was charged.
        Waiting {
            sending: Sending<S, Req>,
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

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    /// A request admitted and charged at once: `future` is the inner service's.
    #[inline]
    pub(crate) fn called(future: S::Future, limiter: &RateLimiter) -> Self {
        Self {
            state: State::Calling { future },
            limiter: Handle::Id(limiter.id()),
        }
    }

    /// A request that must wait for a permit before `service` is called: the service is
    /// driven ready at the head of the queue, then charged and called in the same poll.
    pub(crate) fn waiting(
        service: S,
        request: Req,
        limiter: RateLimiter,
        priority: Priority,
        tenant: Option<Tenant>,
        context_of: fn(&Req) -> ErrorContext,
    ) -> Self
    where
        S: Clone + Send + 'static,
        Req: Send + 'static,
        S::Error: LayerError + Send + 'static,
    {
        let sending = send_when_admitted(
            service,
            request,
            limiter.clone(),
            priority,
            tenant,
            context_of,
        );
        Self {
            state: State::Waiting { sending },
            limiter: Handle::Held(limiter),
        }
    }
}

/// Waits for the permit, then calls `service`. At the head of the queue the service is
/// polled ready before each decision (a token refresh, a connection: whatever it must wait
/// for happens before the request is charged), and the call follows the charge with
/// nothing in between: DrChrono counts the request when it arrives.
///
/// A backend failure ends the wait when the error type can carry it (see
/// [`carry`](crate::failure)); otherwise the backend is asked again every
/// [`BACKEND_RETRY_INTERVAL`].
///
/// The wait runs in a `rate_limit.wait` span (see [`wait_span`]), created here, in the
/// layer's `call`: a child of the span current where the request was called. It closes
/// when the permit is charged, before the inner service is called.
fn send_when_admitted<S, Req>(
    mut service: S,
    mut request: Req,
    limiter: RateLimiter,
    priority: Priority,
    tenant: Option<Tenant>,
    context_of: fn(&Req) -> ErrorContext,
) -> Sending<S, Req>
where
    S: Service<Req> + Clone + Send + 'static,
    Req: Send + 'static,
    S::Error: LayerError + Send + 'static,
{
    let span = wait_span(priority);
    Box::pin(async move {
        let queued_at = Instant::now();
        // The wait borrows what it needs; the request mutably, so that the wait is `Send`
        // whenever the request is.
        let (pending, ready, recorder, limiter) = (&mut request, &mut service, &span, &limiter);
        let wait = async move {
            loop {
                let admitted = limiter
                    .acquire_when_ready(
                        priority,
                        tenant.as_ref(),
                        ServiceReadiness(&mut *ready, PhantomData),
                        |refused| record_rule(recorder, refused),
                    )
                    .await;
                let error = match admitted {
                    Ok(_) => return Ok(()),
                    Err(Refused::NotReady(error)) => return Err(error),
                    Err(Refused::Backend(error)) => error,
                };
                let backend = error.backend();
                if let Some(error) = carry::<S::Error>(error, context_of(pending)) {
                    return Err(error);
                }
                tracing::warn!(
                    application = limiter.config().application(),
                    backend,
                    "rate-limit backend unavailable: holding the request until it answers"
                );
                tokio::time::sleep(BACKEND_RETRY_INTERVAL).await;
            }
        };
        let admitted = wait.instrument(span.clone()).await;
        // The wait is over: the span closes before the call, which is not part of it.
        drop(span);
        admitted?;
        let waited = Instant::now().saturating_duration_since(queued_at);
        Ok((service.call(request), waited))
    })
}

/// The inner service's readiness, for the wait: released by replacing the service polled
/// ready with a fresh clone (dropping whatever its readiness reserved).
struct ServiceReadiness<'a, S, Req>(&'a mut S, PhantomData<fn(Req)>);

impl<S, Req> Readiness for ServiceReadiness<'_, S, Req>
where
    S: Service<Req> + Clone,
{
    type Error = S::Error;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn release(&mut self) {
        *self.0 = self.0.clone();
    }
}

/// The span of one request's wait for its permit:
/// `rate_limit.wait { drchrono.rate_limit.rule, drchrono.rate_limit.priority }`.
fn wait_span(priority: Priority) -> Span {
    tracing::info_span!(
        "rate_limit.wait",
        drchrono.rate_limit.rule = tracing::field::Empty,
        drchrono.rate_limit.priority = priority.as_str(),
    )
}

/// Records in the wait's span the rule a refusal names ([`Rule::name`](crate::Rule::name)),
/// replacing an earlier one: the span ends up naming the last rule that held the request.
/// A refusal that names none (a server's pause, a backend that cannot tell) records nothing.
fn record_rule(span: &Span, refused: &NotUntil) {
    if let Some(rule) = refused.rule() {
        span.record(
            "drchrono.rate_limit.rule",
            tracing::field::display(rule.name()),
        );
    }
}

impl<S, Req, ResBody> Future for ResponseFuture<S, Req>
where
    S: Service<Req, Response = Response<ResBody>>,
    S::Error: LayerError,
{
    type Output = Result<Response<ResBody>, S::Error>;

    /// # Panics
    /// When polled again after it completed.
    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            // An attempt that waited for its permit or met a 429 ends below the match.
            let (outcome, waited, limiter) = match this.state.as_mut().project() {
                StateProj::Waiting { sending } => {
                    match ready!(sending.as_mut().poll(cx)) {
                        Ok((future, waited)) => this.state.set(State::CalledAfterWait {
                            future: Box::pin(future),
                            waited,
                        }),
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    }
                    continue;
                }
                StateProj::Calling { future } => {
                    // The outcome is inspected in place and returned as polled, which spares
                    // a copy of the response on the common path.
                    let polled = future.poll(cx);
                    let throttled = match &polled {
                        Poll::Ready(outcome) => is_throttled(outcome),
                        Poll::Pending => return Poll::Pending,
                    };
                    if !throttled {
                        this.state.set(State::Done);
                        return polled;
                    }
                    // Ready: `Pending` returned above.
                    let Poll::Ready(outcome) = polled else {
                        return Poll::Pending;
                    };
                    (outcome, None, this.limiter.limiter())
                }
                StateProj::CalledAfterWait { future, waited } => {
                    let outcome = ready!(future.as_mut().poll(cx));
                    let limiter = is_throttled(&outcome)
                        .then(|| this.limiter.limiter())
                        .flatten();
                    (outcome, Some(*waited), limiter)
                }
                StateProj::Reporting { pause, outcome } => {
                    ready!(pause.as_mut().poll(cx));
                    let outcome = outcome.take().expect("outcome taken only once");
                    this.state.set(State::Done);
                    return Poll::Ready(*outcome);
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            };
            match after_wait_or_429(outcome, waited, limiter) {
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

/// The outcome of an attempt that waited for its permit (`waited`) or met a 429 (with its
/// `limiter`, if it is still alive): the wait recorded in it, and, for a 429 that says until
/// when, the pause every caller must now wait for before it is returned. Out of line: most
/// attempts neither waited nor were throttled.
#[cold]
#[inline(never)]
fn after_wait_or_429<B, E: LayerError>(
    mut outcome: Outcome<B, E>,
    waited: Option<Duration>,
    limiter: Option<RateLimiter>,
) -> Result<Outcome<B, E>, Paused<Outcome<B, E>>> {
    if let Some(waited) = waited {
        record_wait(&mut outcome, waited);
    }
    let Some((limiter, until)) = limiter.and_then(|limiter| {
        let until = throttled_until(&outcome, limiter.clock())?;
        Some((limiter, until))
    }) else {
        return Ok(outcome);
    };
    // A pause the backend could not record is logged by the limiter; the caller still gets
    // the server's answer.
    let pause: Boxed<()> = Box::pin(async move {
        let _ = limiter.pause_until(until).await;
    });
    Err((pause, Box::new(outcome)))
}

/// Tells the layers above how long the attempt waited for its permit ([`PermitWait`]): in
/// the response's extensions, or in a [`DrChronoError`](drchrono_core::DrChronoError)'s context (boxed or not). An error
/// of any other type cannot carry it.
fn record_wait<B, E: LayerError>(outcome: &mut Result<Response<B>, E>, waited: Duration) {
    match outcome {
        Ok(response) => {
            response.extensions_mut().insert(PermitWait(waited));
        }
        Err(error) => {
            if let Some(error) = error.as_drchrono_mut() {
                error.context_mut().extensions.insert(PermitWait(waited));
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
