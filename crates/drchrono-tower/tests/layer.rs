//! `DrChronoService` as a plain tower service: every error carries its request's context,
//! and each attempt's error is logged once.

use std::cell::Cell;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::ready;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use drchrono_tower::DrChronoError;
use drchrono_tower::DrChronoLayer;
use drchrono_tower::core::BoxError;
use drchrono_tower::core::RequestPayload;
use drchrono_tower::oauth::{ClientCredentials, TokenClient, TokenManager, TokenSet};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt, service_fn};
use tracing_subscriber::fmt::MakeWriter;

type Req = Request<Full<Bytes>>;

/// A stack around `transport` whose token never needs the (failing) token endpoint.
fn layer() -> DrChronoLayer {
    let token_endpoint = service_fn(|_request: Req| {
        ready(Err::<Response<Full<Bytes>>, BoxError>(
            "no token endpoint in this test".into(),
        ))
    });
    let client = TokenClient::new(token_endpoint, ClientCredentials::new("id", "secret"));
    let tokens = TokenManager::builder(client)
        .initial_tokens(TokenSet::new(
            "access",
            "refresh",
            SystemTime::now() + Duration::from_secs(3600),
        ))
        .build();
    DrChronoLayer::new(tokens)
}

fn request() -> Req {
    Request::get("https://app.drchrono.com/api/patients")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// A `tracing` writer into memory.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Logs {
    /// The "DrChrono API call failed" events so far.
    fn failures(&self) -> Vec<String> {
        String::from_utf8(self.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .filter(|line| line.contains("DrChrono API call failed"))
            .map(str::to_owned)
            .collect()
    }
}

fn with_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(logs.clone())
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (logs, guard)
}

/// A transport answering every request with `status` (after a first 200 that loads the
/// token), counting the calls.
fn answering<B: Send + 'static>(
    status: StatusCode,
    calls: Arc<Mutex<u32>>,
) -> impl Service<Request<B>, Response = Response<Full<Bytes>>, Error = Infallible, Future: Send> + Clone
{
    service_fn(move |_request: Request<B>| {
        let mut calls = calls.lock().unwrap();
        *calls += 1;
        let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
        if *calls > 1 {
            *response.status_mut() = status;
        }
        ready(Ok(response))
    })
}

fn conflict_request() -> Req {
    Request::post("https://app.drchrono.com/api/appointments?doctor=1")
        .extension(RequestPayload(Bytes::from_static(
            br#"{"patient":42,"notes":"Henrietta"}"#,
        )))
        .body(Full::new(Bytes::from_static(
            br#"{"patient":42,"notes":"Henrietta"}"#,
        )))
        .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn a_final_error_carries_the_request_context_and_is_logged_once_with_its_path() {
    let (logs, _guard) = with_logs();
    let calls = Arc::new(Mutex::new(0));
    let service = layer().layer(answering(StatusCode::CONFLICT, calls.clone()));
    service.clone().oneshot(request()).await.unwrap();

    let error = service.oneshot(conflict_request()).await.unwrap_err();
    assert!(
        matches!(error, DrChronoError::AppointmentConflict { .. }),
        "{error:?}"
    );
    let context = error.context();
    assert_eq!(context.method, Some(Method::POST));
    assert_eq!(
        context.uri.as_ref().map(ToString::to_string).as_deref(),
        Some("https://app.drchrono.com/api/appointments?doctor=1")
    );
    let payload = context.request_payload.as_deref().unwrap();
    assert!(
        payload.contains("REDACT") && !payload.contains("Henrietta"),
        "{payload}"
    );
    assert!(context.occurred_at.is_some());

    let failures = logs.failures();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0].contains("path=\"/api/appointments\""),
        "{}",
        failures[0]
    );
    assert!(failures[0].contains("method=\"POST\""), "{}", failures[0]);
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_failed_attempt_is_logged_once_with_its_path() {
    let (logs, _guard) = with_logs();
    let calls = Arc::new(Mutex::new(0));
    let service = layer().layer(answering(StatusCode::SERVICE_UNAVAILABLE, calls.clone()));
    service.clone().oneshot(request()).await.unwrap();

    let error = service.oneshot(request()).await.unwrap_err();
    assert!(matches!(error, DrChronoError::Server { .. }), "{error:?}");
    assert_eq!(error.context().path(), Some("/api/patients"));
    assert_eq!(error.context().method, Some(Method::GET));
    // Each attempt's classifier copied the request's context and logged its error once.
    let attempts = *calls.lock().unwrap() - 1;
    assert!(attempts > 1, "the 503 was retried");
    let failures = logs.failures();
    assert_eq!(failures.len() as u32, attempts, "{failures:#?}");
    for line in &failures {
        assert!(line.contains("path=\"/api/patients\""), "{line}");
        assert!(line.contains("status=503"), "{line}");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn a_request_that_cannot_be_retried_keeps_its_own_context() {
    let (logs, _guard) = with_logs();
    let calls = Arc::new(Mutex::new(0));
    let service = layer().layer(answering(StatusCode::NOT_FOUND, calls.clone()));
    let streamed = |path: &str| {
        let body: BoxBody<Bytes, Infallible> = Full::new(Bytes::new()).boxed();
        Request::get(format!("https://app.drchrono.com{path}"))
            .body(body)
            .unwrap()
    };
    service
        .clone()
        .oneshot(streamed("/api/doctors"))
        .await
        .unwrap();

    // A stream cannot be copied: the retry policy keeps nothing and sees no outcome, so the
    // classifier copies the request's context itself and logs at once.
    let error = service
        .oneshot(streamed("/api/patients/7"))
        .await
        .unwrap_err();
    assert!(matches!(error, DrChronoError::NotFound { .. }), "{error:?}");
    assert_eq!(error.context().path(), Some("/api/patients/7"));
    let failures = logs.failures();
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(
        failures[0].contains("path=\"/api/patients/7\""),
        "{}",
        failures[0]
    );
}

/// A transport that answers with the statuses queued, then 200s, counts its clones, fails
/// to get ready once `fail_ready` is set, and is `Send` but not `Sync` (like a
/// `BoxCloneService`).
struct Transport {
    clones: Arc<AtomicUsize>,
    answers: Arc<Mutex<VecDeque<StatusCode>>>,
    fail_ready: Arc<AtomicBool>,
    _not_sync: PhantomData<Cell<()>>,
}

impl Transport {
    fn new() -> Self {
        Self {
            clones: Arc::default(),
            answers: Arc::default(),
            fail_ready: Arc::default(),
            _not_sync: PhantomData,
        }
    }
}

impl Clone for Transport {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            clones: Arc::clone(&self.clones),
            answers: Arc::clone(&self.answers),
            fail_ready: Arc::clone(&self.fail_ready),
            _not_sync: PhantomData,
        }
    }
}

impl Service<Req> for Transport {
    type Response = Response<Full<Bytes>>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Self::Response, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.fail_ready.load(Ordering::SeqCst) {
            return Poll::Ready(Err("no connection to be had".into()));
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Req) -> Self::Future {
        let status = self.answers.lock().unwrap().pop_front();
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status.unwrap_or(StatusCode::OK);
        ready(Ok(response))
    }
}

fn assert_send<T: Send>(_: &T) {}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_request_holds_no_copy_of_the_stack_and_a_retry_clones_one() {
    let transport = Transport::new();
    let clones = Arc::clone(&transport.clones);
    let answers = Arc::clone(&transport.answers);
    let mut service = layer().layer(transport);
    let built = clones.load(Ordering::SeqCst);

    // Answered at once: no layer below the retry loop is cloned for the request.
    for _ in 0..3 {
        let future = service.ready().await.unwrap().call(request());
        assert_send(&future);
        assert_eq!(future.await.unwrap().status(), StatusCode::OK);
    }
    assert_eq!(clones.load(Ordering::SeqCst), built);

    // A 503 is retried by one fresh copy of the stack, polled ready and called.
    answers
        .lock()
        .unwrap()
        .push_back(StatusCode::SERVICE_UNAVAILABLE);
    let response = service.ready().await.unwrap().call(request()).await;
    assert_eq!(response.unwrap().status(), StatusCode::OK);
    assert_eq!(clones.load(Ordering::SeqCst), built + 1);
    assert!(answers.lock().unwrap().is_empty());
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn a_retry_whose_stack_fails_to_get_ready_ends_with_that_error() {
    let transport = Transport::new();
    let fail_ready = Arc::clone(&transport.fail_ready);
    transport
        .answers
        .lock()
        .unwrap()
        .push_back(StatusCode::SERVICE_UNAVAILABLE);
    let mut service = layer().layer(transport);
    let future = service.ready().await.unwrap().call(request());
    // The 503 is retried, but the copy of the stack for the retry cannot get ready.
    fail_ready.store(true, Ordering::SeqCst);
    match future.await {
        Err(DrChronoError::Transport { not_sent, .. }) => assert!(not_sent),
        other => panic!("expected the readiness error, got {other:?}"),
    }
}
