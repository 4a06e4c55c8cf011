//! Shared test helpers: a fake DrChrono token endpoint and API on `tower::service_fn`, a
//! replay-once retry policy, and a `tracing` capture.

#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use drchrono_core::{DrChronoError, ErrorContext, UnauthorizedKind};
use drchrono_oauth::{
    ClientCredentials, MemoryTokenStore, RefreshBackoff, StoreError, TokenClient, TokenSet,
    TokenStore,
};
use futures::future::BoxFuture;
use http::{Request, Response};
use http_body_util::Full;
use tower::retry::Policy;

pub const CLIENT_ID: &str = "client-id";
pub const CLIENT_SECRET: &str = "CLIENTSECRET-xyzzy";
pub const FIRST_REFRESH: &str = "rt-0-SECRETTOKEN";

/// A fake token endpoint with DrChrono's rotation semantics.
pub struct FakeAuth {
    state: Mutex<AuthState>,
}

struct AuthState {
    refresh_token: String,
    access_token: Option<String>,
    issued: u64,
    calls: u64,
    invalid_grant: u64,
    lifetime_secs: u64,
    /// What grants carry as `expires_in` instead of `lifetime_secs`.
    expires_in: Option<serde_json::Value>,
    /// Fields the next grants carry over the regular ones, one object per grant.
    garbled: VecDeque<serde_json::Value>,
    /// Every refresh token received, in order.
    received: Vec<String>,
    delay: Duration,
    script: VecDeque<(u16, String)>,
}

impl FakeAuth {
    pub fn new(lifetime_secs: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(AuthState {
                refresh_token: FIRST_REFRESH.to_owned(),
                access_token: None,
                issued: 0,
                calls: 0,
                invalid_grant: 0,
                lifetime_secs,
                expires_in: None,
                garbled: VecDeque::new(),
                received: Vec::new(),
                delay: Duration::from_millis(50),
                script: VecDeque::new(),
            }),
        })
    }

    /// Successful refreshes so far.
    pub fn refreshes(&self) -> u64 {
        self.state.lock().unwrap().issued
    }

    /// Requests to the token endpoint so far.
    pub fn calls(&self) -> u64 {
        self.state.lock().unwrap().calls
    }

    pub fn invalid_grants(&self) -> u64 {
        self.state.lock().unwrap().invalid_grant
    }

    /// The next token requests get these answers, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = (u16, &'static str)>) {
        let mut state = self.state.lock().unwrap();
        state
            .script
            .extend(answers.into_iter().map(|(s, b)| (s, b.to_owned())));
    }

    /// Grants from now on carry this `expires_in` (a misbehaving server: `"7200"`, `-1`…);
    /// they still rotate the pair.
    pub fn send_expires_in(&self, expires_in: serde_json::Value) {
        self.state.lock().unwrap().expires_in = Some(expires_in);
    }

    /// The next grant carries these fields (a JSON object) over the regular ones (a
    /// misbehaving server: `{"token_type":"mac"}`, `{"access_token":""}`); it still rotates
    /// the pair. Grants after it are regular again.
    pub fn garble_next_grant(&self, fields: serde_json::Value) {
        self.state.lock().unwrap().garbled.push_back(fields);
    }

    /// Every refresh token the token endpoint received, in order.
    pub fn received_refresh_tokens(&self) -> Vec<String> {
        self.state.lock().unwrap().received.clone()
    }

    /// The user re-authorised: every earlier token is revoked. Returns the new pair.
    pub fn reauthorize(&self) -> (String, String) {
        let mut state = self.state.lock().unwrap();
        state.issued += 1;
        let n = state.issued;
        state.refresh_token = format!("rt-{n}-REAUTHSECRET");
        state.access_token = Some(format!("at-{n}-REAUTHSECRET"));
        (
            state.access_token.clone().unwrap(),
            state.refresh_token.clone(),
        )
    }

    /// The current refresh token (as another process would hold it).
    pub fn current_refresh_token(&self) -> String {
        self.state.lock().unwrap().refresh_token.clone()
    }

    /// Rotates as if another process refreshed; returns the new pair.
    pub fn rotate_elsewhere(&self) -> (String, String) {
        let mut state = self.state.lock().unwrap();
        state.issued += 1;
        let n = state.issued;
        state.refresh_token = format!("rt-{n}-SECRETTOKEN");
        state.access_token = Some(format!("at-{n}-SECRETTOKEN"));
        (
            state.access_token.clone().unwrap(),
            state.refresh_token.clone(),
        )
    }

    pub fn is_valid(&self, bearer: &str) -> bool {
        let state = self.state.lock().unwrap();
        state
            .access_token
            .as_deref()
            .is_some_and(|token| bearer == format!("Bearer {token}"))
    }

    async fn handle(self: Arc<Self>, request: Request<Full<Bytes>>) -> Response<Full<Bytes>> {
        use http_body_util::BodyExt;
        let delay = self.state.lock().unwrap().delay;
        tokio::time::sleep(delay).await;
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(
            request.headers()[http::header::CONTENT_TYPE],
            "application/x-www-form-urlencoded"
        );
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(&body).unwrap();
        let mut state = self.state.lock().unwrap();
        state.calls += 1;
        if let Some(refresh_token) = form.get("refresh_token") {
            state.received.push(refresh_token.clone());
        }
        if let Some((status, body)) = state.script.pop_front() {
            return respond(status, body);
        }
        if form.get("client_id").map(String::as_str) != Some(CLIENT_ID)
            || form.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
        {
            return respond(401, r#"{"error":"invalid_client"}"#.into());
        }
        if form.get("grant_type").map(String::as_str) != Some("refresh_token") {
            return respond(400, r#"{"error":"unsupported_grant_type"}"#.into());
        }
        if form.get("refresh_token") != Some(&state.refresh_token) {
            state.invalid_grant += 1;
            return respond(401, r#"{"error":"invalid_grant"}"#.into());
        }
        state.issued += 1;
        let n = state.issued;
        state.refresh_token = format!("rt-{n}-SECRETTOKEN");
        state.access_token = Some(format!("at-{n}-SECRETTOKEN"));
        let mut body = serde_json::json!({
            "access_token": state.access_token,
            "token_type": "Bearer",
            "expires_in": state.expires_in.clone().unwrap_or(state.lifetime_secs.into()),
            "refresh_token": state.refresh_token,
            "scope": "patients:read",
        });
        if let Some(serde_json::Value::Object(fields)) = state.garbled.pop_front() {
            body.as_object_mut().unwrap().extend(fields);
        }
        respond(200, body.to_string())
    }
}

fn respond(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// A token client over the fake.
pub fn token_client(auth: &Arc<FakeAuth>) -> TokenClient {
    let auth = Arc::clone(auth);
    let transport = tower::service_fn(move |request: Request<Full<Bytes>>| {
        let auth = Arc::clone(&auth);
        async move { Ok::<_, Infallible>(auth.handle(request).await) }
    });
    TokenClient::new(transport, ClientCredentials::new(CLIENT_ID, CLIENT_SECRET))
        .backoff(RefreshBackoff::new())
}

/// What the fake API saw.
#[derive(Default)]
pub struct ApiLog {
    pub calls: AtomicUsize,
    pub unauthorized: AtomicUsize,
    pub sensitive: AtomicBool,
    pub debug: Mutex<Vec<String>>,
}

/// A fake API: 200 with a valid bearer, else `DrChronoError::Unauthorized` (what the
/// classification layer produces from DrChrono's 401).
pub fn api(
    auth: &Arc<FakeAuth>,
    log: &Arc<ApiLog>,
    delay: Duration,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<()>,
    Error = DrChronoError,
    Future = BoxFuture<'static, Result<Response<()>, DrChronoError>>,
> + Clone
+ Send
+ use<> {
    let auth = Arc::clone(auth);
    let log = Arc::clone(log);
    tower::service_fn(move |request: Request<Full<Bytes>>| {
        let auth = Arc::clone(&auth);
        let log = Arc::clone(&log);
        Box::pin(async move {
            log.calls.fetch_add(1, Ordering::SeqCst);
            let header = request.headers().get(http::header::AUTHORIZATION).cloned();
            log.debug.lock().unwrap().push(format!("{request:?}"));
            if let Some(header) = &header {
                log.sensitive.store(header.is_sensitive(), Ordering::SeqCst);
            }
            // The request travels to the server; the check happens on arrival.
            tokio::time::sleep(delay).await;
            let valid = header
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .is_some_and(|h| auth.is_valid(h));
            if valid {
                Ok(Response::new(()))
            } else {
                log.unauthorized.fetch_add(1, Ordering::SeqCst);
                Err(DrChronoError::Unauthorized {
                    kind: UnauthorizedKind::TokenInvalid,
                    replay_with_current_token: false,
                    persisted_after_refresh: false,
                    context: Box::new(ErrorContext::new()),
                })
            }
        }) as BoxFuture<'static, _>
    })
}

/// An API that answers every request 401, whatever token it carries (a deactivated user, a
/// proxy that strips `Authorization`).
pub fn always_401(
    log: &Arc<ApiLog>,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<()>,
    Error = DrChronoError,
    Future = BoxFuture<'static, Result<Response<()>, DrChronoError>>,
> + Clone
+ Send
+ 'static {
    let log = Arc::clone(log);
    tower::service_fn(move |_request: Request<Full<Bytes>>| {
        let log = Arc::clone(&log);
        Box::pin(async move {
            log.calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
            log.unauthorized.fetch_add(1, Ordering::SeqCst);
            Err(DrChronoError::Unauthorized {
                kind: UnauthorizedKind::CredentialsNotProvided,
                replay_with_current_token: false,
                persisted_after_refresh: false,
                context: Box::new(ErrorContext::new()),
            })
        }) as BoxFuture<'static, _>
    })
}

pub fn get(uri: &str) -> Request<Full<Bytes>> {
    Request::get(uri).body(Full::new(Bytes::new())).unwrap()
}

/// The test-only retry policy: replays a request once when the OAuth layer marked its 401
/// `replay_with_current_token` (the real policy lives in another crate).
#[derive(Clone, Debug, Default)]
pub struct ReplayOnce {
    replayed: bool,
}

impl<Res> Policy<Request<Full<Bytes>>, Res, DrChronoError> for ReplayOnce {
    type Future = Ready<()>;

    fn retry(
        &mut self,
        _request: &mut Request<Full<Bytes>>,
        result: &mut Result<Res, DrChronoError>,
    ) -> Option<Self::Future> {
        match result {
            Err(DrChronoError::Unauthorized {
                replay_with_current_token: true,
                persisted_after_refresh: false,
                ..
            }) if !self.replayed => {
                self.replayed = true;
                Some(ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, request: &Request<Full<Bytes>>) -> Option<Request<Full<Bytes>>> {
        let mut clone = Request::new(request.body().clone());
        *clone.method_mut() = request.method().clone();
        *clone.uri_mut() = request.uri().clone();
        *clone.headers_mut() = request.headers().clone();
        Some(clone)
    }
}

/// A memory store whose saves (and loads) can be made to fail.
#[derive(Debug, Default)]
pub struct FlakyStore {
    pub inner: MemoryTokenStore,
    pub fail_saves: AtomicBool,
    /// The next this many loads fail (after `skip_loads`).
    pub fail_loads: AtomicUsize,
    /// The next this many loads succeed before `fail_loads` apply.
    pub skip_loads: AtomicUsize,
    pub saves: AtomicUsize,
    pub loads: AtomicUsize,
    /// The load with this number (counting from 1) panics, as a store with a bug would;
    /// 0: none.
    pub panic_on_load: AtomicUsize,
}

impl TokenStore for FlakyStore {
    fn load(&self) -> BoxFuture<'_, Result<Option<TokenSet>, StoreError>> {
        let load = self.loads.fetch_add(1, Ordering::SeqCst) + 1;
        if load == self.panic_on_load.load(Ordering::SeqCst) {
            panic!("the application's token store failed");
        }
        let skipped = self
            .skip_loads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if skipped {
            return self.inner.load();
        }
        let failing = self
            .fail_loads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Box::pin(ready(Err(StoreError::Backend {
                source: "connection reset".into(),
            })));
        }
        self.inner.load()
    }

    fn save<'a>(
        &'a self,
        expected_generation: u64,
        tokens: &'a TokenSet,
    ) -> BoxFuture<'a, Result<(), StoreError>> {
        self.saves.fetch_add(1, Ordering::SeqCst);
        if self.fail_saves.load(Ordering::SeqCst) {
            return Box::pin(ready(Err(StoreError::Backend {
                source: "disk full".into(),
            })));
        }
        self.inner.save(expected_generation, tokens)
    }
}

/// Counts the lease's acquisitions and releases.
#[derive(Debug, Default)]
pub struct CountingLease {
    pub acquired: AtomicUsize,
    pub released: AtomicUsize,
}

impl drchrono_oauth::RefreshLease for CountingLease {
    fn acquire(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        self.acquired.fetch_add(1, Ordering::SeqCst);
        Box::pin(ready(Ok(())))
    }

    fn release(&self) -> BoxFuture<'_, ()> {
        self.released.fetch_add(1, Ordering::SeqCst);
        Box::pin(ready(()))
    }
}

/// A `tracing` writer that keeps everything written.
#[derive(Clone, Default)]
pub struct Captured(pub Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Captures every event of this thread, at every level, until the guard is dropped.
    pub fn install(&self) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(self.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// A manager over the fake, starting from `FIRST_REFRESH` (generation 1) when `store` is
/// empty.
pub fn manager(auth: &Arc<FakeAuth>, store: Arc<dyn TokenStore>) -> drchrono_oauth::TokenManager {
    drchrono_oauth::TokenManager::builder(token_client(auth))
        .shared_store(store)
        .initial_tokens(TokenSet::from_refresh_token(FIRST_REFRESH))
        .build()
}
