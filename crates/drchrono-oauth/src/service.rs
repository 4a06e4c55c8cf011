//! [`OAuthRefresh`]: the service.

use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tracing::Instrument;

use drchrono_core::{CallAt, DrChronoError};
use http::Request;
use http::header::AUTHORIZATION;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::Service;

use crate::error::join_failure;
use crate::future::ResponseFuture;
use crate::manager::SendableBearer;
use crate::{Bearer, OAuthRefreshLayer, TokenManager};

/// Attaches `Authorization: Bearer …` (marked sensitive) to each request, refreshing the
/// token before it expires, and triages 401s.
///
/// # Readiness first, token at the moment of sending
/// `poll_ready` does the token work: it loads the pair, or waits for the single-flight
/// refresh when the token is due (proactively, see
/// [`RefreshTiming`](crate::RefreshTiming)), and only then polls the inner service. `call`
/// attaches the token current at that instant, synchronously. So a layer above that
/// charges something when it calls (a rate limiter: DrChrono counts a request when it
/// arrives) can drive this service ready first and then charge and call with nothing
/// waiting in between: a slow token endpoint delays requests *before* they are counted,
/// never after. A request whose token went stale between `poll_ready` and `call` (a
/// caller that waited in between) waits for the token in its response future instead.
///
/// Neither takes a lock while the token stays the same: `poll_ready` reads the token's
/// freshness from one atomic number, and a service keeps the bearer it attached last and
/// attaches it again while the manager's state has not changed since (another atomic
/// number) and it is not within the expiry skew of its expiry (one clock read; none when
/// called through [`CallAt::call_at`] with its caller's reading, as `drchrono-tower`'s
/// stack does).
///
/// The token work started by `poll_ready` runs on its own tokio task (the refresh already
/// does, so that no cancelled caller abandons a rotation half-way): `poll_ready` must be
/// called inside a tokio runtime. Its failure (`invalid_grant`, an unreachable token
/// endpoint, …) is returned by `poll_ready` as a [`DrChronoError`].
///
/// # Errors and 401 triage
/// The error type is [`DrChronoError`]; the inner service's error is converted with
/// `Into<DrChronoError>` (an `ErrorClassifyLayer` stack below already produces it). A
/// [`DrChronoError::Unauthorized`] is triaged by the generation of the token the request
/// carried:
/// - an older generation than the current one: `replay_with_current_token` is set and the
///   error returned at once, with no refresh; the retry policy replays it once;
/// - the current generation: one single-flight refresh, then the mark is set;
/// - the current generation, less than
///   [`RefreshTiming::unauthorized_refresh_interval`](crate::RefreshTiming::unauthorized_refresh_interval)
///   (60 s) after a refresh caused by a 401 (typically the replay of a request whose 401
///   caused that refresh): no refresh, since a new token evidently does not cure it (a
///   deactivated user, a proxy that strips `Authorization`). The store is re-read (another
///   process may have rotated the pair: then the mark is set), otherwise the
///   [`DrChronoError::Unauthorized`] is returned with `replay_with_current_token: false`.
///   So a 401 causes at most one refresh per token generation and per interval: never a
///   refresh loop;
/// - the refresh fails with `invalid_grant`: every waiter gets
///   [`DrChronoError::ReauthorizationRequired`] and no further refresh is attempted until
///   [`TokenManager::set_tokens`], or until another process saves a newer pair in the
///   shared store (re-read at most every
///   [`RefreshTiming::store_recheck_interval`](crate::RefreshTiming::store_recheck_interval),
///   5 s).
///
/// Responses (including a 401 the inner service returns as `Ok`) pass through untouched:
/// 401 triage needs the classification layer below this one.
pub struct OAuthRefresh<S> {
    inner: S,
    manager: TokenManager,
    /// The token work `poll_ready` waits for, if any.
    token: Option<JoinHandle<Result<Bearer, DrChronoError>>>,
    /// The bearer last attached, attached again with no lock while the snapshot it was read
    /// from has not changed and it has not expired.
    bearer: Option<SendableBearer>,
}

impl<S: Clone> Clone for OAuthRefresh<S> {
    /// A clone with the same inner service and token family, not (yet) ready.
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            manager: self.manager.clone(),
            token: None,
            bearer: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for OAuthRefresh<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthRefresh")
            .field("inner", &self.inner)
            .field("manager", &self.manager)
            .field("waiting_for_token", &self.token.is_some())
            .finish()
    }
}

impl<S> OAuthRefresh<S> {
    /// Wraps `inner` with `manager`'s token family.
    pub fn new(inner: S, manager: TokenManager) -> Self {
        Self {
            inner,
            manager,
            token: None,
            bearer: None,
        }
    }

    /// A layer for `manager`'s token family.
    pub fn layer(manager: TokenManager) -> OAuthRefreshLayer {
        OAuthRefreshLayer::new(manager)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, consuming `self`.
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// Waits for a token that needs no work before sending (loading or refreshing it
    /// first, once).
    fn poll_token(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), DrChronoError>> {
        if self.token.is_none() {
            if self.manager.is_fresh() {
                return Poll::Ready(Ok(()));
            }
            if let Some(error) = self.manager.latched_error() {
                return Poll::Ready(Err(error));
            }
            let manager = self.manager.clone();
            // The task's spans (a refresh) belong to the request that started it.
            let work = async move { manager.bearer().await }.in_current_span();
            self.token = Some(tokio::spawn(work));
        }
        let Some(token) = &mut self.token else {
            return Poll::Ready(Ok(()));
        };
        let outcome = ready!(Pin::new(token).poll(cx));
        self.token = None;
        // A refresh that failed transiently while the token is still valid returns that
        // token: it is sent, and the next refresh is tried later.
        Poll::Ready(outcome.map_err(join_failure)?.map(drop))
    }
}

impl<S, ReqB> Service<Request<ReqB>> for OAuthRefresh<S>
where
    S: Service<Request<ReqB>> + Clone,
    S::Error: Into<DrChronoError>,
{
    type Response = S::Response;
    type Error = DrChronoError;
    type Future = ResponseFuture<S, ReqB>;

    /// Ready when a token can be attached with no waiting (see the type's docs) and the
    /// inner service is ready.
    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        ready!(self.poll_token(cx))?;
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        self.call_at(request, Instant::now())
    }
}

/// `call` at `now`: the token attached is one that has not expired at `now`.
impl<S, ReqB> CallAt<Request<ReqB>> for OAuthRefresh<S>
where
    S: Service<Request<ReqB>> + Clone,
    S::Error: Into<DrChronoError>,
{
    #[inline]
    fn call_at(&mut self, mut request: Request<ReqB>, now: Instant) -> Self::Future {
        let version = self.manager.shared.freshness.version();
        let bearer = match &self.bearer {
            Some(bearer) if bearer.holds(version, now) => bearer,
            _ => match self.read_bearer(now) {
                Some(bearer) => bearer,
                None => return self.acquire_first(request),
            },
        };
        let generation = bearer.generation;
        request
            .headers_mut()
            .insert(AUTHORIZATION, bearer.header.clone());
        let future = self.inner.call(request);
        ResponseFuture::called(future, generation, &self.manager)
    }
}

impl<S> OAuthRefresh<S> {
    /// The bearer a request may carry at `now`, read under the snapshot's lock and kept
    /// for the next calls. `None`: the request must wait for a token.
    #[cold]
    fn read_bearer(&mut self, now: Instant) -> Option<&SendableBearer> {
        self.bearer = self.manager.sendable_bearer();
        self.bearer
            .as_ref()
            .filter(|bearer| now < bearer.expires_at)
    }

    /// `call` when the token must be obtained first: keeps the service that was polled ready
    /// and leaves a fresh clone in its place. Out of line, so that the common path stays
    /// small.
    #[cold]
    #[inline(never)]
    fn acquire_first<ReqB>(&mut self, request: Request<ReqB>) -> ResponseFuture<S, ReqB>
    where
        S: Service<Request<ReqB>> + Clone,
    {
        let clone = self.inner.clone();
        let ready = mem::replace(&mut self.inner, clone);
        ResponseFuture::acquiring(ready, request, self.manager.clone())
    }
}
