//! The `axum`, `hyper`, `reqwest_client`, `otel_stdout` and `tonic` examples, run in-process.
//!
//! Each example's `main` is a thin wrapper around a module of the `examples` library
//! (`examples::axum_service`, `examples::hyper_stack`, `examples::reqwest_transport`,
//! `examples::tonic_channel`), so these tests run exactly what
//! `cargo run -p examples --example <name>` runs, without spawning cargo.
//! They talk to real loopback sockets (an embedded `drchrono-sim`, a tonic-health server)
//! in real time: the limiter's waits are real, so timing is only checked from below (a
//! rule is never broken), never from above.

use std::time::Duration;

use bytes::Bytes;
use drchrono_core::{DrChronoError, ErrorContext, FieldErrors};
use drchrono_ratelimit::RateLimitConfig;
use examples::axum_service::{self, Options, error_response};
use http::StatusCode;
use http::header::RETRY_AFTER;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

/// A context as the classifier fills it: the request's URI (with a patient's name in the
/// query) and DrChrono's body snippet (with the name again).
fn context(status: StatusCode) -> Box<ErrorContext> {
    let mut context = ErrorContext::new();
    context.uri = Some(
        "https://app.drchrono.com/api/patients?last_name=Lovelace"
            .parse()
            .unwrap(),
    );
    context.status = Some(status);
    context.body_snippet = Some(r#"{"first_name": "Ada Lovelace"}"#.to_owned());
    Box::new(context)
}

async fn answer(error: DrChronoError) -> (StatusCode, Option<String>, Value, String) {
    let response = error_response(&error);
    let status = response.status();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8(body.to_vec()).unwrap();
    (
        status,
        retry_after,
        serde_json::from_str(&text).unwrap(),
        text,
    )
}

#[tokio::test]
async fn axum_error_answers_map_statuses_and_leak_nothing() {
    let mut fields = FieldErrors::new();
    fields.insert(
        "date_of_birth".into(),
        vec!["Ada Lovelace is not a date.".into()],
    );
    let cases = [
        (
            DrChronoError::NotFound {
                detail: Some("Not found.".into()),
                context: context(StatusCode::NOT_FOUND),
            },
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            DrChronoError::Throttled {
                retry_after: Some(Duration::from_millis(2_500)),
                available_at: None,
                context: context(StatusCode::TOO_MANY_REQUESTS),
            },
            StatusCode::SERVICE_UNAVAILABLE,
            Some("3"),
        ),
        (
            DrChronoError::Throttled {
                retry_after: None,
                available_at: None,
                context: context(StatusCode::TOO_MANY_REQUESTS),
            },
            StatusCode::SERVICE_UNAVAILABLE,
            Some("60"),
        ),
        (
            DrChronoError::Server {
                status: StatusCode::BAD_GATEWAY,
                context: context(StatusCode::BAD_GATEWAY),
            },
            StatusCode::BAD_GATEWAY,
            None,
        ),
        (
            DrChronoError::ReauthorizationRequired {
                description: None,
                context: context(StatusCode::UNAUTHORIZED),
            },
            StatusCode::SERVICE_UNAVAILABLE,
            None,
        ),
        (
            DrChronoError::InvalidClient {
                description: None,
                context: context(StatusCode::UNAUTHORIZED),
            },
            StatusCode::INTERNAL_SERVER_ERROR,
            None,
        ),
        (
            DrChronoError::AppointmentConflict {
                overlapping_id: Some(323_351_400),
                detail: "Appointment overlaps with 323351400".into(),
                context: context(StatusCode::CONFLICT),
            },
            StatusCode::CONFLICT,
            None,
        ),
        (
            DrChronoError::BadRequest {
                field_errors: fields,
                detail: None,
                context: context(StatusCode::BAD_REQUEST),
            },
            StatusCode::BAD_REQUEST,
            None,
        ),
    ];
    for (error, status, retry_after) in cases {
        let kind = error.kind_name();
        let (got, got_retry_after, body, text) = answer(error).await;
        assert_eq!(got, status, "{kind}");
        assert_eq!(got_retry_after.as_deref(), retry_after, "{kind}");
        assert_eq!(body["kind"], kind);
        assert!(
            !text.contains("Lovelace") && !text.contains("Ada"),
            "{kind} leaked: {text}"
        );
    }
    let (_, _, body, _) = answer(DrChronoError::BadRequest {
        field_errors: [("doctor".to_owned(), vec!["Required.".to_owned()])].into(),
        detail: None,
        context: context(StatusCode::BAD_REQUEST),
    })
    .await;
    assert_eq!(body["fields"], serde_json::json!(["doctor"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_self_test_passes() {
    let demo = axum_service::start(Options::self_test()).await.unwrap();
    let report = axum_service::self_test(&demo).await.unwrap();
    assert!(report.passed(), "{report}");
    for name in [
        "me",
        "patient_not_found",
        "burst_shares_one_budget",
        "5xx_retried",
        "5xx_exhausted_is_502",
        "429_waited_out",
        "429_is_503_retry_after",
    ] {
        assert!(
            report.check(name).is_some_and(|c| c.passed),
            "{name}: {report}"
        );
    }
    let sim = demo.simulator().unwrap().stats();
    assert_eq!(
        sim.token_refreshes, 1,
        "one refresh shared by every handler"
    );
    demo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_handler_sheds_load_past_max_wait() {
    let mut options = Options::demo();
    options.max_wait = Duration::from_millis(500);
    options.rate_limit = RateLimitConfig::builder()
        .max_per_second(1)
        .build()
        .unwrap();
    let demo = axum_service::start(options).await.unwrap();
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let calls = (0..3).map(|_| {
        let http = http.clone();
        let uri = format!("{}/me", demo.url());
        async move {
            let response = http.get(uri.parse().unwrap()).await.unwrap();
            let status = response.status();
            let retry_after = response.headers().get(RETRY_AFTER).cloned();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&body).unwrap();
            (status, retry_after, body)
        }
    });
    let answers = futures::future::join_all(calls).await;
    let ok = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "one permit per second: {answers:?}");
    for (status, retry_after, body) in answers.iter().filter(|(s, _, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["kind"], "timeout");
        let secs: u64 = retry_after
            .as_ref()
            .unwrap()
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(secs >= 1);
    }
    let stats = demo.simulator().unwrap().stats();
    assert_eq!(stats.accepted, 1, "shed requests never reached DrChrono");
    demo.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hyper_example_passes() {
    let report = examples::hyper_stack::run().await.unwrap();
    assert!(report.passed(), "{report}");
    for name in [
        "first_call_refreshes",
        "limiter_paces_burst",
        "5xx_retried",
        "404_typed",
        "405_typed",
        "409_overlapping_id",
        "reauthorization_required",
        "resumes_after_set_tokens",
    ] {
        assert!(
            report.check(name).is_some_and(|c| c.passed),
            "{name}: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqwest_example_passes() {
    let report = examples::reqwest_transport::run().await.unwrap();
    assert!(report.passed(), "{report}");
    for name in [
        "first_call_refreshes",
        "409_overlapping_id",
        "503_retried",
        "token_refreshed_again",
        "connect_error_not_sent",
    ] {
        assert!(
            report.check(name).is_some_and(|c| c.passed),
            "{name}: {report}"
        );
    }
}

/// On a current-thread runtime, as the example's `main`: its subscriber is the thread's
/// default, and the stack's spawned refresh must be seen by it.
#[tokio::test(flavor = "current_thread")]
async fn otel_example_exports_the_span_tree() {
    let report = examples::otel_traces::run().await.unwrap();
    assert!(report.passed(), "{report}");
    for name in [
        "request_succeeded",
        "request_span",
        "three_attempts",
        "limiter_wait_names_rule",
        "refresh_span",
        "no_phi",
    ] {
        assert!(
            report.check(name).is_some_and(|c| c.passed),
            "{name}: {report}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_example_paces_and_retries() {
    let run = examples::tonic_channel::run(examples::tonic_channel::Options::default())
        .await
        .unwrap();
    assert!(run.report.passed(), "{}", run.report);
    // 1 refused attempt + 1 retry + 6 calls, at most 3 in any rolling second.
    assert_eq!(run.attempts.len(), 8, "{:?}", run.attempts);
    assert_eq!(run.calls.len(), 7);
    for window in run.attempts.windows(4) {
        assert!(
            window[3] - window[0] >= Duration::from_secs(1),
            "{:?}",
            run.attempts
        );
    }
    assert!(run.attempts[7] - run.attempts[0] >= Duration::from_secs(2));
    assert_eq!(run.calls[0].outcome, "SERVING");
    assert_eq!(run.calls.last().unwrap().outcome, "NotFound");
}
