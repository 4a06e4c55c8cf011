//! [`ResponseFuture`] of [`OAuthRefresh`](crate::OAuthRefresh).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use drchrono_core::DrChronoError;
use futures::future::BoxFuture;
use http::Request;
use http::header::AUTHORIZATION;
use pin_project_lite::pin_project;
use tower::Service;

use crate::manager::{ManagerId, Triage};
use crate::{Bearer, TokenManager};

pin_project! {
    /// The response future of [`OAuthRefresh`](crate::OAuthRefresh).
    ///
    /// # Panics
    /// When polled again after it completed.
    pub struct ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        #[pin]
        state: State<S, ReqB>,
        manager: Handle,
    }
}

/// How a response future reaches its manager to triage a 401.
enum Handle {
    /// Called at once: by its id, found only on a 401 (see [`ManagerId`]).
    Id(ManagerId),
    /// Called after waiting for the token, which held the manager anyway.
    Held(TokenManager),
}

impl Handle {
    /// The manager, unless it was dropped (every handle of it: nobody is left to refresh).
    #[cold]
    fn manager(&self) -> Option<TokenManager> {
        match self {
            Self::Id(id) => {
                let manager = id.upgrade();
                if manager.is_none() {
                    tracing::warn!(
                        "DrChrono answered 401 to a request whose token manager was dropped \
                         meanwhile: the error is returned as it came"
                    );
                }
                manager
            }
            Self::Held(manager) => Some(manager.clone()),
        }
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, ReqB>
    where
        S: Service<Request<ReqB>>,
    {
        // Waiting for the token (load or refresh) before calling the ready service. Boxed:
        // only the first request and those after an expiry get here, and the future of
        // every other call stays as small as the inner one plus a few words.
        Acquire {
            acquire: Box<Acquire<S, ReqB>>,
        },
        // The inner call, with the generation of the token it carries.
        Call {
            #[pin]
            future: S::Future,
            generation: u64,
        },
        // A 401 on the current token: waiting for the single-flight refresh (or for the
        // store re-read that replaces it soon after a refresh caused by a 401).
        Triage {
            outcome: BoxFuture<'static, DrChronoError>,
        },
        Done,
    }
}

/// A request waiting for its token, with the service that was polled ready for it.
struct Acquire<S, ReqB> {
    bearer: BoxFuture<'static, Result<Bearer, DrChronoError>>,
    service: Option<S>,
    request: Option<Request<ReqB>>,
}

impl<S, ReqB> ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    #[inline]
    pub(crate) fn called(future: S::Future, generation: u64, manager: &TokenManager) -> Self {
        Self {
            state: State::Call { future, generation },
            manager: Handle::Id(manager.id()),
        }
    }

    pub(crate) fn acquiring(service: S, request: Request<ReqB>, manager: TokenManager) -> Self {
        let handle = manager.clone();
        Self {
            state: State::Acquire {
                acquire: Box::new(Acquire {
                    bearer: Box::pin(async move { handle.bearer().await }),
                    service: Some(service),
                    request: Some(request),
                }),
            },
            manager: Handle::Held(manager),
        }
    }
}

impl<S, ReqB> Future for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
    S::Error: Into<DrChronoError>,
{
    type Output = Result<S::Response, DrChronoError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Acquire { acquire } => {
                    let Acquire {
                        bearer,
                        service,
                        request,
                    } = &mut **acquire;
                    let bearer = match ready!(bearer.as_mut().poll(cx)) {
                        Ok(bearer) => bearer,
                        Err(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                    };
                    let (Some(mut service), Some(mut request)) = (service.take(), request.take())
                    else {
                        panic!("ResponseFuture polled after completion");
                    };
                    request
                        .headers_mut()
                        .insert(AUTHORIZATION, bearer.header().clone());
                    let future = service.call(request);
                    this.state.set(State::Call {
                        future,
                        generation: bearer.generation(),
                    });
                }
                StateProj::Call { future, generation } => {
                    let generation = *generation;
                    let error = match ready!(future.poll(cx)) {
                        Ok(response) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(response));
                        }
                        Err(error) => error.into(),
                    };
                    if !matches!(error, DrChronoError::Unauthorized { .. }) {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    }
                    let Some(manager) = this.manager.manager() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(error));
                    };
                    match manager.triage(generation) {
                        Triage::Replay => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(mark_for_replay(error)));
                        }
                        Triage::Fail(error) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(error));
                        }
                        Triage::SlowPath => {
                            let shared = manager.shared;
                            let outcome = async move {
                                match shared.after_unauthorized(generation).await {
                                    Ok(Some(_)) => mark_for_replay(error),
                                    // The 401 persisted after a refresh a moment ago: it is
                                    // returned as it came, not marked for replay.
                                    Ok(None) => mark_persisted(error),
                                    Err(refresh_error) => refresh_error,
                                }
                            };
                            this.state.set(State::Triage {
                                outcome: Box::pin(outcome),
                            });
                        }
                    }
                }
                StateProj::Triage { outcome } => {
                    let error = ready!(outcome.as_mut().poll(cx));
                    this.state.set(State::Done);
                    return Poll::Ready(Err(error));
                }
                StateProj::Done => panic!("ResponseFuture polled after completion"),
            }
        }
    }
}

/// Sets `persisted_after_refresh` on a 401 that a refresh a moment ago did not cure.
fn mark_persisted(mut error: DrChronoError) -> DrChronoError {
    if let DrChronoError::Unauthorized {
        persisted_after_refresh,
        ..
    } = &mut error
    {
        *persisted_after_refresh = true;
    }
    error
}

/// Sets `replay_with_current_token` on a 401.
fn mark_for_replay(mut error: DrChronoError) -> DrChronoError {
    if let DrChronoError::Unauthorized {
        replay_with_current_token,
        ..
    } = &mut error
    {
        *replay_with_current_token = true;
    }
    error
}

impl<S, ReqB> fmt::Debug for ResponseFuture<S, ReqB>
where
    S: Service<Request<ReqB>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Acquire { .. } => "acquire",
            State::Call { .. } => "call",
            State::Triage { .. } => "triage",
            State::Done => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish_non_exhaustive()
    }
}
