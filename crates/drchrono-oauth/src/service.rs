//! [`OAuthRefresh`]: the service.

use std::mem;
use std::task::{Context, Poll};

use drchrono_classify::DrChronoError;
use http::Request;
use http::header::AUTHORIZATION;
use tower::Service;

use crate::future::ResponseFuture;
use crate::{OAuthRefreshLayer, TokenManager};

/// Attaches `Authorization: Bearer …` (marked sensitive) to each request, refreshing the
/// token before it expires, and triages 401s.
///
/// # Errors and 401 triage
/// The error type is [`DrChronoError`]; the inner service's error is converted with
/// `Into<DrChronoError>` (an `ErrorClassifyLayer` stack below already produces it). A
/// [`DrChronoError::Unauthorized`] is triaged by the generation of the token the request
/// carried:
/// - an older generation than the current one: `replay_with_current_token` is set and the
///   error returned at once, with no refresh; the retry policy replays it once;
/// - the current generation: one single-flight refresh, then the mark is set;
/// - the refresh fails with `invalid_grant`: every waiter gets
///   [`DrChronoError::ReauthorizationRequired`] and no further refresh is attempted until
///   [`TokenManager::set_tokens`].
///
/// Responses (including a 401 the inner service returns as `Ok`) pass through untouched:
/// 401 triage needs the classification layer below this one.
#[derive(Clone, Debug)]
pub struct OAuthRefresh<S> {
    inner: S,
    manager: TokenManager,
}

impl<S> OAuthRefresh<S> {
    /// Wraps `inner` with `manager`'s token family.
    pub fn new(inner: S, manager: TokenManager) -> Self {
        Self { inner, manager }
    }

    /// A layer for `manager`'s token family.
    pub fn layer(manager: TokenManager) -> OAuthRefreshLayer {
        OAuthRefreshLayer::new(manager)
    }

    /// The token manager.
    pub fn manager(&self) -> &TokenManager {
        &self.manager
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
}

impl<S, ReqB> Service<Request<ReqB>> for OAuthRefresh<S>
where
    S: Service<Request<ReqB>> + Clone,
    S::Error: Into<DrChronoError>,
{
    type Response = S::Response;
    type Error = DrChronoError;
    type Future = ResponseFuture<S, ReqB>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        match self.manager.fast_bearer() {
            Some((header, generation)) => {
                request.headers_mut().insert(AUTHORIZATION, header);
                let future = self.inner.call(request);
                ResponseFuture::called(future, generation, self.manager.clone())
            }
            None => self.acquire_first(request),
        }
    }
}

impl<S> OAuthRefresh<S> {
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
