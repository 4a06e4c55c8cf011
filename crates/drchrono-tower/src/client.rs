//! [`DrChronoClient`]: the full stack on a transport, with JSON and paging helpers.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::time::SystemTime;

use bytes::Bytes;
use drchrono_core::{BoxError, DrChronoError, ErrorContext, RequestPayload};
use drchrono_ratelimit::Tenant;
use futures::Stream;
use http::header::{ACCEPT, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, Uri};
use http_body::Body;
use http_body_util::Full;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceExt};

use crate::attempt::{Attempt, AttemptBody, Limits, ReadError, read_whole};
use crate::builder::DrChronoClientBuilder;
use crate::layer::DrChronoLayer;
use crate::origin::ApiOrigin;
use crate::paging::{self, RepeatedPage};
use crate::redirect;

type Inner = BoxCloneSyncService<Request<Full<Bytes>>, Response<Bytes>, DrChronoError>;

/// A DrChrono API client: the recommended stack ([`DrChronoLayer`]) on a transport, with
/// relative paths, JSON through `serde`, and paging through DrChrono's `next` links.
///
/// It keeps the access token home and never hangs:
/// - **Origin pinning.** Requests go only to the base URL's origin (scheme, host, port); an
///   absolute URL or a `next` link elsewhere is refused before anything is sent
///   ([`DrChronoError::ForeignOrigin`](crate::DrChronoError::ForeignOrigin)); one that differs only by `http` against
///   `https` on the same host is sent to the configured scheme. Redirects are followed on
///   the origin only ([`max_redirects`](DrChronoClientBuilder::max_redirects)).
/// - **Timeouts.** Each attempt, each retry included, must see its response head within
///   60 s and read its success body within 60 s; a new connection must be up within 10 s;
///   a success body is at most 32 MiB. All configurable on the builder; see
///   [`TimedOut`](crate::TimedOut) and [`BodyTooLarge`](crate::BodyTooLarge).
///
/// Cheap to clone; clones share the rate limiter's budget, the token family and the retry
/// budget, so one client serves a whole application (every handler of an axum service, every
/// task of a sync job).
///
/// # Example
/// ```
/// use drchrono_tower::DrChronoClient;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let sim = drchrono_sim::spawn(drchrono_sim::SimConfig::default()).await?;
/// # let credentials = sim.credentials();
/// # let (client_id, client_secret, refresh_token) =
/// #     (credentials.client_id, credentials.client_secret, credentials.refresh_token);
/// let client = DrChronoClient::builder()
///     .credentials(client_id, client_secret)
///     .refresh_token(refresh_token)
///     .base_url(sim.base_url())          // default: https://app.drchrono.com
///     .token_url(sim.token_url())        // default: https://drchrono.com/o/token/
///     .build()?;
/// let me: serde_json::Value = client.get_json("/api/users/current").await?;
/// assert!(me["is_doctor"].as_bool().unwrap());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DrChronoClient {
    service: Inner,
    layer: DrChronoLayer,
    base: Uri,
    origin: ApiOrigin,
    max_redirects: usize,
    tenant: Option<Tenant>,
}

/// What the builder configures beyond the layer.
#[derive(Debug, Clone)]
pub(crate) struct ClientConfig {
    pub(crate) limits: Limits,
    pub(crate) max_redirects: usize,
    pub(crate) tenant: Option<Tenant>,
}

impl fmt::Debug for DrChronoClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrChronoClient")
            .field("base", &self.base)
            .field("layer", &self.layer)
            .field("max_redirects", &self.max_redirects)
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl DrChronoClient {
    /// Configures a client.
    pub fn builder() -> DrChronoClientBuilder {
        DrChronoClientBuilder::default()
    }

    pub(crate) fn new<S, B>(
        layer: DrChronoLayer,
        transport: S,
        base: Uri,
        config: ClientConfig,
    ) -> Self
    where
        S: Service<Request<Full<Bytes>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // Below the classifier, so below the retry layer: every attempt gets its own
        // response-head timeout and reads its success body itself, so that a body that
        // stalls or breaks off is a transport failure the retry policy retries by
        // idempotency, like a 5xx.
        let limits = config.limits;
        let stack = layer.layer(Attempt::new(transport, limits)).and_then(
            move |response: Response<AttemptBody<B>>| async move {
                let (parts, body) = response.into_parts();
                let read = match body {
                    AttemptBody::Read(data) => Ok(data.unwrap_or_default()),
                    AttemptBody::TooLarge(too_large) => Err(Box::new(too_large) as BoxError),
                    // Error statuses never get here (the classifier turns them into
                    // errors); read one anyway under the same bounds.
                    streaming @ AttemptBody::Streaming(_) => {
                        read_whole(streaming, limits).await.map_err(|e| match e {
                            ReadError::TooLarge(e) => Box::new(e) as BoxError,
                            ReadError::TimedOut(e) => Box::new(e) as BoxError,
                            ReadError::Failed(e) => e,
                        })
                    }
                };
                match read {
                    Ok(bytes) => Ok(Response::from_parts(parts, bytes)),
                    Err(source) => Err(DrChronoError::Decode {
                        source,
                        context: with_status(parts.status),
                    }),
                }
            },
        );
        Self {
            service: BoxCloneSyncService::new(stack),
            layer,
            origin: ApiOrigin::new(&base),
            base,
            max_redirects: config.max_redirects,
            tenant: config.tenant,
        }
    }

    /// The stack's layers: the rate limiter's status, the token manager, retry statistics
    /// and, with the `metrics` feature, `DrChronoLayer::metrics`.
    pub fn layer(&self) -> &DrChronoLayer {
        &self.layer
    }

    /// The [`Tenant`] every request of this client carries, if one was set
    /// ([`DrChronoClientBuilder::tenant`]; the user's key for a client of a
    /// [`DrChronoApp`](crate::DrChronoApp)).
    pub fn tenant(&self) -> Option<&Tenant> {
        self.tenant.as_ref()
    }

    /// Resolves a path (`/api/patients?since=…`) against the base URL; absolute URLs (such as
    /// DrChrono's `next` links) are pinned to the API origin.
    fn resolve(&self, method: &Method, path_or_url: &str) -> Result<Uri, DrChronoError> {
        let invalid = |source: BoxError| DrChronoError::Transport {
            not_sent: true,
            source,
            context: Box::new(ErrorContext::new()),
        };
        let uri: Uri = path_or_url.parse().map_err(|e| invalid(Box::new(e)))?;
        if uri.scheme().is_some() {
            return self.pin(method, uri);
        }
        let mut parts = self.base.clone().into_parts();
        let base_path = self.base.path().trim_end_matches('/');
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        parts.path_and_query = Some(
            format!("{base_path}{path}")
                .parse()
                .map_err(|e: http::uri::InvalidUri| invalid(Box::new(e)))?,
        );
        Uri::from_parts(parts).map_err(|e| invalid(Box::new(e)))
    }

    /// `uri` on the API origin (see [`ApiOrigin::pin`]), or the typed refusal.
    fn pin(&self, method: &Method, uri: Uri) -> Result<Uri, DrChronoError> {
        self.origin.pin(uri).map_err(|refused| {
            tracing::warn!(
                method = %method,
                origin = %refused.origin,
                "refused to send a request outside the API origin",
            );
            let mut context = ErrorContext::new();
            context.method = Some(method.clone());
            context.occurred_at = Some(SystemTime::now());
            DrChronoError::ForeignOrigin {
                origin: refused.origin,
                expected: refused.expected,
                context: Box::new(context),
            }
        })
    }

    /// Sends a request through the whole stack; relative URIs are resolved against the base
    /// URL, absolute ones must be on its origin. Redirects on the origin are followed (up to
    /// [`max_redirects`](DrChronoClientBuilder::max_redirects)); any other is returned as
    /// it came. The response body is read whole.
    ///
    /// # Errors
    /// Every failure as a typed [`DrChronoError`], after the retries the policy allows. A
    /// URL outside the API origin is refused before anything is sent:
    /// [`DrChronoError::ForeignOrigin`].
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<Response<Bytes>, DrChronoError> {
        let uri = request.uri().clone();
        *request.uri_mut() = if uri.scheme().is_none() {
            self.resolve(request.method(), &uri.to_string())?
        } else {
            self.pin(request.method(), uri)?
        };
        if let Some(tenant) = &self.tenant {
            // Outside the retry layer: every attempt and every redirect is a copy of this
            // request, extensions included, so the limiter sees the tenant each time.
            request.extensions_mut().insert(tenant.clone());
        }
        let mut followed = 0;
        loop {
            let replay = (followed < self.max_redirects).then(|| redirect::copy(&request));
            let response = self.service.clone().oneshot(request).await?;
            match replay.and_then(|replay| redirect::follow(&self.origin, replay, &response)) {
                Some(next) => {
                    request = next;
                    followed += 1;
                }
                None => return Ok(response),
            }
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        json: Option<Bytes>,
    ) -> Result<Response<Bytes>, DrChronoError> {
        let uri = self.resolve(&method, path)?;
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if json.is_some() {
            request = request.header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        let body = json.clone().unwrap_or_default();
        let mut request = request
            .body(Full::new(body))
            .map_err(|e| DrChronoError::Transport {
                not_sent: true,
                source: Box::new(e),
                context: Box::new(ErrorContext::new()),
            })?;
        if let Some(json) = json {
            // For a SupportReport: stored redacted by the classifier, never logged.
            request.extensions_mut().insert(RequestPayload(json));
        }
        self.send(request).await
    }

    fn encode(body: &impl Serialize) -> Result<Bytes, DrChronoError> {
        serde_json::to_vec(body)
            .map(Bytes::from)
            .map_err(|e| DrChronoError::Transport {
                not_sent: true,
                source: Box::new(e),
                context: Box::new(ErrorContext::new()),
            })
    }

    /// Decodes a response's JSON body.
    ///
    /// # Errors
    /// [`DrChronoError::Decode`] when the body is not the expected JSON.
    pub fn json<T: DeserializeOwned>(response: &Response<Bytes>) -> Result<T, DrChronoError> {
        serde_json::from_slice(response.body()).map_err(|e| DrChronoError::Decode {
            source: Box::new(e),
            context: with_status(response.status()),
        })
    }

    /// `GET` a path or URL.
    ///
    /// # Errors
    /// Every failure as a typed [`DrChronoError`].
    pub async fn get(&self, path: &str) -> Result<Response<Bytes>, DrChronoError> {
        self.call(Method::GET, path, None).await
    }

    /// `DELETE` a path or URL.
    ///
    /// # Errors
    /// Every failure as a typed [`DrChronoError`].
    pub async fn delete(&self, path: &str) -> Result<Response<Bytes>, DrChronoError> {
        self.call(Method::DELETE, path, None).await
    }

    /// `POST` a JSON body. Not retried after a 5xx unless the request opts in (see
    /// `drchrono_retry::Idempotent`): a 500 may hide a created appointment.
    ///
    /// # Errors
    /// Every failure as a typed [`DrChronoError`].
    pub async fn post(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Response<Bytes>, DrChronoError> {
        self.call(Method::POST, path, Some(Self::encode(body)?))
            .await
    }

    /// `PATCH` a JSON body. Not retried after a 5xx unless opted in.
    ///
    /// # Errors
    /// Every failure as a typed [`DrChronoError`].
    pub async fn patch(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Response<Bytes>, DrChronoError> {
        self.call(Method::PATCH, path, Some(Self::encode(body)?))
            .await
    }

    /// `GET` a path and decode its JSON.
    ///
    /// # Errors
    /// Every failure as a typed [`DrChronoError`].
    pub async fn get_json<T: DeserializeOwned>(&self, path: &str) -> Result<T, DrChronoError> {
        Self::json(&self.get(path).await?)
    }

    /// `POST` JSON and decode the JSON answer.
    ///
    /// # Errors
    /// Every failure as a typed [`DrChronoError`].
    pub async fn post_json<T: DeserializeOwned>(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<T, DrChronoError> {
        Self::json(&self.post(path, body).await?)
    }

    /// Every item of a paginated DrChrono list (`{"next", "previous", "results"}`, or `data`
    /// in place of `results`, as DrChrono's API schema names it), page by page, following
    /// the `next` links as they are (absolute URLs). Each page is one request through the
    /// stack. [`with_page_size`](crate::with_page_size) asks for pages as large as the
    /// endpoint serves.
    ///
    /// A `next` link outside the API origin ends the stream with a
    /// [`DrChronoError::ForeignOrigin`], sending nothing there; one that differs only by `http` against `https` on the API host is followed on
    /// the configured scheme (Django REST Framework writes `http://` links behind a
    /// TLS-terminating proxy).
    ///
    /// ```
    /// # async fn run(client: drchrono_tower::DrChronoClient) -> Result<(), drchrono_tower::DrChronoError> {
    /// use futures::TryStreamExt;
    /// let patients: Vec<serde_json::Value> =
    ///     client.pages("/api/patients?page_size=250").try_collect().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn pages<T>(
        &self,
        path: &str,
    ) -> impl Stream<Item = Result<T, DrChronoError>> + Send + 'static
    where
        T: DeserializeOwned + Send + 'static,
    {
        let state = Paging {
            client: self.clone(),
            next: Some(path.to_owned()),
            buffered: VecDeque::new(),
            read: HashSet::new(),
        };
        futures::stream::try_unfold(state, |mut state| async move {
            loop {
                if let Some(item) = state.buffered.pop_front() {
                    return Ok(Some((item, state)));
                }
                let Some(next) = state.next.take() else {
                    return Ok(None);
                };
                if !state.read.insert(paging::page_key(&next)) {
                    return Err(repeated_page(&next));
                }
                let page: Page<T> = state.client.get_json(&next).await?;
                // `"next": ""` ends the listing as `null` does.
                state.next = page.next.filter(|link| !link.is_empty());
                state.buffered = page.results.into();
            }
        })
    }
}

struct Paging<T> {
    client: DrChronoClient,
    next: Option<String>,
    buffered: VecDeque<T>,
    /// The pages read so far ([`paging::page_key`]): a `next` link back to one ends the
    /// listing with [`RepeatedPage`].
    read: HashSet<String>,
}

/// The error that ends a listing whose `next` link leads back to a page already read.
#[cold]
fn repeated_page(link: &str) -> DrChronoError {
    let path = link
        .parse::<http::Uri>()
        .map_or_else(|_| String::new(), |uri| uri.path().to_owned());
    DrChronoError::Decode {
        source: Box::new(RepeatedPage { path }),
        context: Box::new(ErrorContext::new()),
    }
}

/// One page of a DrChrono list: its items under `results` (DrChrono's prose and DRF's
/// default) or `data` (DrChrono's API schema).
#[derive(serde::Deserialize)]
struct Page<T> {
    next: Option<String>,
    #[serde(alias = "data")]
    results: Vec<T>,
}

fn with_status(status: http::StatusCode) -> Box<ErrorContext> {
    let mut context = ErrorContext::new();
    context.status = Some(status);
    Box::new(context)
}
