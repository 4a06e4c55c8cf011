//! What a retry sends: copies of the request, bodies that can or cannot be replayed, and
//! errors of any type.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use drchrono_core::DrChronoError;
use drchrono_retry::RetryPolicy;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use support::*;
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};

fn policy() -> RetryPolicy {
    RetryPolicy::builder().seed(1).build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn retries_copy_method_uri_version_headers_and_extensions() {
    #[derive(Clone, Debug, PartialEq)]
    struct Tag(u32);

    let seen: Arc<Mutex<Vec<Request<Full<Bytes>>>>> = Arc::default();
    let svc = {
        let seen = seen.clone();
        tower::service_fn(move |req: Request<Full<Bytes>>| {
            let mut seen = seen.lock().unwrap();
            seen.push(req);
            let outcome = if seen.len() == 1 {
                status(503)
            } else {
                status(200)
            };
            std::future::ready(Ok::<_, std::convert::Infallible>(outcome))
        })
    };
    let mut req = Request::builder()
        .method(Method::PUT)
        .uri("https://app.drchrono.com/api/patients/7")
        .version(http::Version::HTTP_11)
        .header("x-custom", "kept")
        .body(Full::new(Bytes::from_static(
            b"{\"first_name\":\"REDACT\"}",
        )))
        .unwrap();
    req.extensions_mut().insert(Tag(9));
    let response = ServiceBuilder::new()
        .layer(policy().layer())
        .service(svc)
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert_eq!(seen.len(), 2);
    let retry = &seen[1];
    assert_eq!(retry.method(), Method::PUT);
    assert_eq!(retry.uri(), "https://app.drchrono.com/api/patients/7");
    assert_eq!(retry.version(), http::Version::HTTP_11);
    assert_eq!(retry.headers()["x-custom"], "kept");
    assert_eq!(retry.extensions().get::<Tag>(), Some(&Tag(9)));
    let body = retry.body().clone().collect().await.unwrap().to_bytes();
    assert_eq!(body, "{\"first_name\":\"REDACT\"}");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_cannot_be_copied_is_sent_once() {
    type Boxed = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;
    let calls = Arc::new(Mutex::new(0));
    let svc = {
        let calls = calls.clone();
        tower::service_fn(move |_req: Request<Boxed>| {
            *calls.lock().unwrap() += 1;
            std::future::ready(Ok::<Response<Full<Bytes>>, DrChronoError>(status(503)))
        })
    };
    let req = Request::get("https://app.drchrono.com/api/patients")
        .body(Full::new(Bytes::new()).boxed())
        .unwrap();
    let response = ServiceBuilder::new()
        .layer(policy().layer())
        .service(svc)
        .oneshot(req)
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(*calls.lock().unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn unclassified_errors_are_retried_only_when_asked() {
    type BoxError = Box<dyn std::error::Error + Send + Sync>;
    let make = |calls: Arc<Mutex<u32>>| {
        tower::service_fn(move |_req: Request<Full<Bytes>>| {
            let mut n = calls.lock().unwrap();
            *n += 1;
            let outcome: Result<Response<Full<Bytes>>, BoxError> = if *n == 1 {
                Err("socket closed".into())
            } else {
                Ok(status(200))
            };
            std::future::ready(outcome)
        })
    };
    let calls = Arc::new(Mutex::new(0));
    let svc = ServiceBuilder::new()
        .layer(policy().layer())
        .service(make(calls.clone()));
    svc.oneshot(request(Method::GET)).await.unwrap_err();
    assert_eq!(*calls.lock().unwrap(), 1);

    let calls = Arc::new(Mutex::new(0));
    let p = RetryPolicy::builder()
        .retry_unclassified_errors(true)
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(p.layer())
        .service(make(calls.clone()));
    svc.oneshot(request(Method::GET)).await.unwrap();
    assert_eq!(*calls.lock().unwrap(), 2);

    // A DrChronoError boxed as a BoxError is still read.
    let calls = Arc::new(Mutex::new(0u32));
    let svc = {
        let calls = calls.clone();
        tower::service_fn(move |_req: Request<Full<Bytes>>| {
            let mut n = calls.lock().unwrap();
            *n += 1;
            let outcome: Result<Response<Full<Bytes>>, BoxError> = if *n == 1 {
                Err(Box::new(DrChronoError::Server {
                    status: StatusCode::BAD_GATEWAY,
                    context: Box::default(),
                }))
            } else {
                Ok(status(200))
            };
            std::future::ready(outcome)
        })
    };
    ServiceBuilder::new()
        .layer(policy().layer())
        .service(svc)
        .oneshot(request(Method::GET))
        .await
        .unwrap();
    assert_eq!(*calls.lock().unwrap(), 2);
}

#[test]
fn policy_and_future_are_send_sync_and_defaults_are_documented_values() {
    fn send_sync<T: Send + Sync + 'static>() {}
    send_sync::<RetryPolicy>();
    send_sync::<drchrono_retry::RetryFuture>();
    send_sync::<drchrono_retry::RetryBudget>();

    let policy = RetryPolicy::default();
    let s = std::time::Duration::from_secs;
    assert_eq!(policy.backoff().bounds(1), (s(25), s(30)));
    assert_eq!(policy.backoff().bounds(3), (s(100), s(120)));
    assert_eq!(RetryPolicy::DEFAULT_MAX_RETRIES, 3);
    assert_eq!(RetryPolicy::DEFAULT_MAX_THROTTLE_WAIT, s(15 * 60));
    assert_eq!(RetryPolicy::DEFAULT_DEADLINE, Some(s(30 * 60)));
    assert_eq!(policy.stats(), drchrono_retry::RetryStats::default());
    assert!(matches!(
        RetryPolicy::builder().first_delay(s(30), s(25)).build(),
        Err(drchrono_retry::ConfigError::DelayRange { .. })
    ));
    assert!(matches!(
        RetryPolicy::builder().multiplier(0.0).build(),
        Err(drchrono_retry::ConfigError::Multiplier(_))
    ));
    // Debug output carries no secrets to leak, but must not fail.
    assert!(format!("{policy:?}").starts_with("RetryPolicy"));
}

/// A retry loop of one's own decides as tower's `Retry` does on its per-request clone:
/// the same retries, counts and gives up at the same attempt, with no clone of the policy.
#[tokio::test(start_paused = true)]
async fn request_retries_beside_one_policy_decide_as_a_clone_per_request() {
    use drchrono_retry::RequestRetries;
    use tower::retry::Policy;

    type Req = Request<Full<Bytes>>;
    type Res = Response<Full<Bytes>>;
    let shared = policy();
    let mut cloned = policy();
    let request = || {
        Request::get("https://app.drchrono.com/api/patients")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let original = request();
    let mut retries = RequestRetries::default();
    let mut own = shared
        .clone_request_for(&mut retries, &original, Instant::now())
        .unwrap();
    let mut theirs =
        Policy::<Req, Res, DrChronoError>::clone_request(&mut cloned, &original).unwrap();
    let mut decisions = Vec::new();
    loop {
        let mut outcome = Ok::<_, DrChronoError>(status(503));
        let ours = shared
            .retry_for(&mut retries, &mut own, &mut outcome)
            .is_some();
        let mut outcome = Ok::<_, DrChronoError>(status(503));
        let tower = cloned.retry(&mut theirs, &mut outcome).is_some();
        assert_eq!(ours, tower);
        decisions.push(ours);
        if !ours {
            break;
        }
        // The copy is sent, and copied again for the attempt after it.
        let sent = own.into_request().unwrap();
        own = shared
            .clone_request_for(&mut retries, &sent, Instant::now())
            .unwrap();
        theirs = Policy::<Req, Res, DrChronoError>::clone_request(&mut cloned, &theirs).unwrap();
    }
    assert_eq!(decisions, [true, true, true, false]);
    assert_eq!(shared.stats().requests, 1);
    assert_eq!(shared.stats().server_error_retries, 3);
    assert_eq!(shared.stats().gave_up, 1);
}

/// `stats().requests` counts first attempts whichever budget the policy draws on: its own
/// (which counts them under its lock) or another.
#[tokio::test(start_paused = true)]
async fn requests_are_counted_with_the_own_budget_and_with_another() {
    use drchrono_retry::RequestRetries;
    use tower::retry::budget::TpsBudget;

    let own = policy();
    let other = RetryPolicy::builder()
        .custom_budget(TpsBudget::new(std::time::Duration::from_secs(10), 0, 0.5))
        .build()
        .unwrap();
    let request = Request::get("https://app.drchrono.com/api/patients")
        .body(Full::new(Bytes::new()))
        .unwrap();
    for policy in [&own, &other] {
        for _ in 0..3 {
            let mut retries = RequestRetries::default();
            assert!(
                policy
                    .clone_request_for(&mut retries, &request, Instant::now())
                    .is_some()
            );
        }
        assert_eq!(policy.stats().requests, 3);
    }
}

/// The reading given with a request's first attempt starts its deadline: a 503 that comes
/// more than the deadline after that reading is not retried, however soon after the copy
/// was made.
#[tokio::test(start_paused = true)]
async fn the_first_attempts_reading_starts_the_deadline() {
    use drchrono_retry::RequestRetries;

    let policy = RetryPolicy::builder()
        .seed(1)
        .deadline(Some(std::time::Duration::from_secs(60)))
        .build()
        .unwrap();
    let request = Request::get("https://app.drchrono.com/api/patients")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let read = Instant::now();
    // The first 5xx delay is 25 s to 30 s: it ends within the 60 s deadline counted from
    // now, past the one counted from `read`.
    tokio::time::advance(std::time::Duration::from_secs(36)).await;
    let retried: Vec<bool> = [read, Instant::now()]
        .into_iter()
        .map(|now| {
            let mut retries = RequestRetries::default();
            let mut copy = policy
                .clone_request_for(&mut retries, &request, now)
                .unwrap();
            let mut outcome = Ok::<_, DrChronoError>(status(503));
            policy
                .retry_for(&mut retries, &mut copy, &mut outcome)
                .is_some()
        })
        .collect();
    assert_eq!(retried, [false, true]);
}

/// A loop of one's own gets the same copy as tower's `Retry`: method, URI (a long one with a
/// query too, kept out of line), version, headers, extensions and body; marked with its
/// resend count once a retry is decided; and its `Debug` names no query.
#[tokio::test(start_paused = true)]
async fn a_replay_sends_again_what_the_request_sent() {
    use drchrono_core::ResendCount;
    use drchrono_retry::RequestRetries;

    #[derive(Clone, Debug, PartialEq)]
    struct Tag(u32);

    let policy = policy();
    for uri in [
        "https://app.drchrono.com/api/patients/7".to_owned(),
        format!(
            "http://127.0.0.1:8080/api/appointments?patient=SECRET&since=2026-01-01&{}",
            "x".repeat(100)
        ),
    ] {
        let mut request = Request::builder()
            .method(Method::PUT)
            .uri(uri.as_str())
            .version(http::Version::HTTP_10)
            .header("x-custom", "kept")
            .body(Full::new(Bytes::from_static(
                b"{\"first_name\":\"REDACT\"}",
            )))
            .unwrap();
        request.extensions_mut().insert(Tag(9));
        let mut retries = RequestRetries::default();
        let mut replay = policy
            .clone_request_for(&mut retries, &request, Instant::now())
            .unwrap();
        assert!(!format!("{replay:?}").contains("SECRET"));
        let mut outcome = Ok::<_, DrChronoError>(status(503));
        assert!(
            policy
                .retry_for(&mut retries, &mut replay, &mut outcome)
                .is_some()
        );
        let debug = format!("{replay:?}");
        assert!(
            debug.contains("/api/") && !debug.contains("SECRET"),
            "{debug}"
        );
        let again = replay.into_request().unwrap();
        assert_eq!(again.method(), Method::PUT);
        assert_eq!(again.uri(), request.uri());
        assert_eq!(again.version(), http::Version::HTTP_10);
        assert_eq!(again.headers(), request.headers());
        assert_eq!(again.extensions().get::<Tag>(), Some(&Tag(9)));
        assert_eq!(
            again.extensions().get::<ResendCount>(),
            Some(&ResendCount(1))
        );
        let body = again.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "{\"first_name\":\"REDACT\"}");
    }
}
