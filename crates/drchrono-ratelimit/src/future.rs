//! [`ResponseFuture`] of [`DrChronoRateLimit`](crate::DrChronoRateLimit).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::SystemTime;

use http::Response;
use pin_project_lite::pin_project;
use tower::Service;

use crate::observe::throttled_until;
use crate::{Priority, RateLimiter};

/// The wait for a permit, or the report of a 429 to the shared state. One allocation per
/// request: waiting involves the turn, the backend and a timer, and must own its limiter.
type Boxed<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

pin_project! {
    /// Waits for a permit, calls the inner service, and reports a 429 to the limiter.
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
            permit: Option<Boxed<SystemTime>>,
            service: S,
            request: Option<Req>,
        },
        Calling {
            #[pin]
            future: S::Future,
        },
        Reporting {
            pause: Boxed<()>,
            outcome: Option<Result<S::Response, S::Error>>,
        },
        Done,
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    pub(crate) fn new(service: S, request: Req, limiter: RateLimiter, priority: Priority) -> Self {
        let permit_limiter = limiter.clone();
        let permit: Boxed<SystemTime> =
            Box::pin(async move { permit_limiter.acquire(priority).await });
        Self {
            state: State::Waiting {
                permit: Some(permit),
                service,
                request: Some(request),
            },
            limiter,
        }
    }
}

impl<S, Req, ResBody> Future for ResponseFuture<S, Req>
where
    S: Service<Req, Response = Response<ResBody>>,
    S::Error: 'static,
{
    type Output = Result<Response<ResBody>, S::Error>;

    /// # Panics
    /// When polled again after it completed.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Waiting {
                    permit,
                    service,
                    request,
                } => {
                    if let Some(waiting) = permit {
                        ready!(waiting.as_mut().poll(cx));
                        *permit = None;
                    }
                    ready!(service.poll_ready(cx))?;
                    let request = request.take().expect("request taken only when calling");
                    let future = service.call(request);
                    this.state.set(State::Calling { future });
                }
                StateProj::Calling { future } => {
                    let outcome = ready!(future.poll(cx));
                    let Some(until) = throttled_until(&outcome, this.limiter.clock()) else {
                        this.state.set(State::Done);
                        return Poll::Ready(outcome);
                    };
                    let limiter = this.limiter.clone();
                    let pause: Boxed<()> =
                        Box::pin(async move { limiter.pause_until(until).await });
                    this.state.set(State::Reporting {
                        pause,
                        outcome: Some(outcome),
                    });
                }
                StateProj::Reporting { pause, outcome } => {
                    ready!(pause.as_mut().poll(cx));
                    let outcome = outcome.take().expect("outcome taken only once");
                    this.state.set(State::Done);
                    return Poll::Ready(outcome);
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
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
            State::Reporting { .. } => "reporting a 429",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
