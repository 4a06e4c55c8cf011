//! 429s: waits until the server's instant, maximum wait, missing hints, outside the budget.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use drchrono_core::{DrChronoError, ErrorContext};
use drchrono_retry::{RetryBudget, RetryOverride, RetryPolicy};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use support::*;
use tokio::time::Instant;
use tower::retry::Policy;
use tower::{ServiceBuilder, ServiceExt};

async fn send(policy: RetryPolicy, script: &Script, req: Request<Full<Bytes>>) -> Outcome {
    ServiceBuilder::new()
        .layer(policy.layer())
        .service(script.service())
        .oneshot(req)
        .await
}

fn fixed_wall_clock() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(1_767_225_600) // 2026-01-01T00:00:00Z
}

#[tokio::test(start_paused = true)]
async fn a_429_is_retried_exactly_when_the_server_said() {
    let script = Script::new(vec![throttled(Some(secs(12)))]);
    let p = RetryPolicy::new();
    let response = send(p.clone(), &script, request(Method::GET))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(script.gaps(), vec![secs(12)]);
    assert_eq!(p.stats().throttled_retries, 1);
}

#[tokio::test(start_paused = true)]
async fn the_wait_ends_at_available_at_so_it_overlaps_the_limiters() {
    // The classifier stamped the 429 at an instant that has partly passed (the limiter has
    // been holding callers since): the policy sleeps until that instant, not for the full
    // `retry_after` again.
    let mut policy = RetryPolicy::new();
    let mut req = request(Method::GET);
    let _ =
        Policy::<_, http::Response<Full<Bytes>>, DrChronoError>::clone_request(&mut policy, &req);
    let start = Instant::now();
    let mut result: Outcome = Err(DrChronoError::Throttled {
        retry_after: Some(secs(20)),
        available_at: Some(start + secs(8)),
        context: Box::new(ErrorContext::default()),
    });
    let wait = policy
        .retry(&mut req, &mut result)
        .expect("a 429 is retried");
    wait.await;
    assert_eq!(start.elapsed(), secs(8));

    // An instant already past: no wait at all.
    let mut result: Outcome = Err(DrChronoError::Throttled {
        retry_after: Some(secs(20)),
        available_at: Some(Instant::now() - secs(1)),
        context: Box::new(ErrorContext::default()),
    });
    let before = Instant::now();
    policy.retry(&mut req, &mut result).unwrap().await;
    assert_eq!(before.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn retry_after_as_an_http_date_is_honoured() {
    let at = fixed_wall_clock() + secs(40);
    let script = Script::new(vec![raw_with(
        429,
        "retry-after",
        httpdate::fmt_http_date(at),
    )]);
    let p = RetryPolicy::builder()
        .wall_clock(fixed_wall_clock)
        .build()
        .unwrap();
    let response = send(p, &script, request(Method::POST)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(script.gaps(), vec![secs(40)]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_seconds_on_a_raw_response() {
    let script = Script::new(vec![raw_with(429, "retry-after", "7".into())]);
    send(RetryPolicy::new(), &script, request(Method::GET))
        .await
        .unwrap();
    assert_eq!(script.gaps(), vec![secs(7)]);
}

#[tokio::test(start_paused = true)]
async fn a_hint_beyond_the_maximum_returns_at_once() {
    // DrChrono's hourly limit: the reset can be most of an hour away.
    let script = Script::new(vec![throttled(Some(secs(45 * 60)))]);
    let p = RetryPolicy::new();
    let start = Instant::now();
    let error = send(p.clone(), &script, request(Method::GET))
        .await
        .unwrap_err();
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(script.attempts(), 1);
    // The caller gets the Throttled error with the instant it clears.
    assert_eq!(error.available_at(), Some(start + secs(45 * 60)));
    assert_eq!(p.stats().gave_up, 1);

    // A raw response is returned as it is.
    let script = Script::new(vec![raw_with(429, "retry-after", "3600".into())]);
    let response = send(RetryPolicy::new(), &script, request(Method::GET))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(start.elapsed(), Duration::ZERO);

    // Raising the maximum (a batch job that rides out the hourly reset) waits instead.
    let patient = RetryPolicy::builder()
        .max_throttle_wait(secs(61 * 60))
        .deadline(None)
        .build()
        .unwrap();
    let script = Script::new(vec![throttled(Some(secs(45 * 60)))]);
    send(patient, &script, request(Method::GET)).await.unwrap();
    assert_eq!(script.gaps(), vec![secs(45 * 60)]);

    // And per request.
    let script = Script::new(vec![throttled(Some(secs(90)))]);
    let mut req = request(Method::GET);
    req.extensions_mut()
        .insert(RetryOverride::new().max_throttle_wait(secs(60)));
    send(RetryPolicy::new(), &script, req).await.unwrap_err();
    assert_eq!(script.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_429_without_a_hint_waits_the_default() {
    let script = Script::new(vec![throttled(None), raw(429)]);
    send(RetryPolicy::new(), &script, request(Method::GET))
        .await
        .unwrap();
    assert_eq!(script.gaps(), vec![secs(60), secs(60)]);

    let script = Script::new(vec![throttled(None)]);
    let p = RetryPolicy::builder()
        .default_throttle_wait(secs(5))
        .build()
        .unwrap();
    send(p, &script, request(Method::GET)).await.unwrap();
    assert_eq!(script.gaps(), vec![secs(5)]);
}

#[tokio::test(start_paused = true)]
async fn repeated_429s_are_bounded() {
    let script = Script::new((0..7).map(|_| throttled(Some(secs(1)))).collect());
    let error = send(RetryPolicy::new(), &script, request(Method::GET))
        .await
        .unwrap_err();
    assert!(matches!(error, DrChronoError::Throttled { .. }));
    assert_eq!(script.attempts(), 6);

    let script = Script::new((0..3).map(|_| throttled(Some(secs(1)))).collect());
    let p = RetryPolicy::builder()
        .max_throttled_retries(1)
        .build()
        .unwrap();
    send(p, &script, request(Method::GET)).await.unwrap_err();
    assert_eq!(script.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn throttles_and_5xx_are_counted_apart_and_share_the_deadline() {
    // Three 5xx retries are still available after 429s.
    let script = Script::new(vec![
        throttled(Some(secs(2))),
        server_error(503),
        throttled(Some(secs(2))),
        server_error(503),
        server_error(503),
    ]);
    let p = RetryPolicy::builder().seed(3).build().unwrap();
    send(p.clone(), &script, request(Method::GET))
        .await
        .unwrap();
    assert_eq!(script.attempts(), 6);
    let stats = p.stats();
    assert_eq!(
        (stats.throttled_retries, stats.server_error_retries),
        (2, 3)
    );

    // A 429 wait that would end past the deadline is not started.
    let p = RetryPolicy::builder()
        .deadline(Some(secs(100)))
        .build()
        .unwrap();
    let script = Script::new(vec![throttled(Some(secs(60))), throttled(Some(secs(60)))]);
    let start = Instant::now();
    send(p, &script, request(Method::GET)).await.unwrap_err();
    assert_eq!(script.attempts(), 2);
    assert_eq!(start.elapsed(), secs(60));
}

#[tokio::test(start_paused = true)]
async fn no_kind_of_429_wait_draws_from_the_budget() {
    // A budget with no token at all: every 5xx retry is refused.
    let p = RetryPolicy::builder()
        .budget(RetryBudget::new(secs(600), 0.0, 0).unwrap())
        .build()
        .unwrap();
    // A raw `Retry-After`, the classifier's instant, and no hint at all (the default wait).
    let script = Script::new(vec![
        raw_with(429, "retry-after", "4".into()),
        throttled(Some(secs(3))),
        throttled(None),
    ]);
    let response = send(p.clone(), &script, request(Method::GET))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(script.gaps(), vec![secs(4), secs(3), secs(60)]);
    let stats = p.stats();
    assert_eq!((stats.throttled_retries, stats.budget_exhausted), (3, 0));

    // The same policy's 5xx retries still withdraw, and find the budget empty.
    let script = Script::new(vec![throttled(Some(secs(1))), server_error(503)]);
    let error = send(p.clone(), &script, request(Method::GET))
        .await
        .unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(script.attempts(), 2);
    let stats = p.stats();
    assert_eq!(
        (stats.throttled_retries, stats.server_error_retries),
        (4, 0)
    );
    assert_eq!((stats.budget_exhausted, stats.gave_up), (1, 1));
}
