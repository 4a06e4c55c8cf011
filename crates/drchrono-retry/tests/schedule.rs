//! 5xx, transport and 401 schedules under paused time.

mod support;

use bytes::Bytes;
use drchrono_core::DrChronoError;
use drchrono_retry::{Backoff, Idempotent, RetryOverride, RetryPolicy};
use http::{Method, Request, StatusCode};
use http_body_util::Full;
use rand::SeedableRng;
use rand::rngs::StdRng;
use support::*;
use tower::{Service, ServiceBuilder, ServiceExt};

fn policy() -> RetryPolicy {
    RetryPolicy::builder().seed(1).build().unwrap()
}

async fn send(policy: RetryPolicy, script: &Script, req: Request<Full<Bytes>>) -> Outcome {
    ServiceBuilder::new()
        .layer(policy.layer())
        .service(script.service())
        .oneshot(req)
        .await
}

/// The delays the policy draws with `seed`, in order.
fn expected_delays(seed: u64, n: u32) -> Vec<std::time::Duration> {
    let mut rng = StdRng::seed_from_u64(seed);
    (1..=n)
        .map(|k| Backoff::default().delay(k, &mut rng))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn get_meeting_503_502_200_succeeds_on_the_third_attempt() {
    let script = Script::new(vec![server_error(503), server_error(502)]);
    let response = send(policy(), &script, request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(script.attempts(), 3);
    let gaps = script.gaps();
    assert_within(gaps[0], (secs(25), secs(30)));
    assert_within(gaps[1], (secs(50), secs(60)));
    // Exactly the seeded draws: virtual time adds nothing.
    assert_eq!(gaps, expected_delays(1, 2));
}

#[tokio::test(start_paused = true)]
async fn raw_5xx_responses_are_retried_without_the_classifier() {
    let script = Script::new(vec![raw(503), raw(502)]);
    let response = send(policy(), &script, request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(script.gaps(), expected_delays(1, 2));

    // A raw 5xx that outlives the retries is returned as the response it is.
    let script = Script::new((0..4).map(|_| raw(504)).collect());
    let response = send(policy(), &script, request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(script.attempts(), 4);
}

#[tokio::test(start_paused = true)]
async fn get_meeting_four_500s_fails_after_three_retries() {
    let script = Script::new((0..4).map(|_| server_error(500)).collect());
    let p = policy();
    let error = send(p.clone(), &script, request(Method::GET))
        .await
        .unwrap_err();
    assert!(matches!(error, DrChronoError::Server { status, .. } if status == 500));
    assert_eq!(script.attempts(), 4);
    let gaps = script.gaps();
    for (k, gap) in gaps.iter().enumerate() {
        assert_within(*gap, Backoff::default().bounds(k as u32 + 1));
    }
    assert_eq!(gaps, expected_delays(1, 3));
    let stats = p.stats();
    assert_eq!(
        (stats.requests, stats.server_error_retries, stats.gave_up),
        (1, 3, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn post_after_500_is_not_retried_by_default() {
    for method in [Method::POST, Method::PATCH] {
        let script = Script::new(vec![server_error(500)]);
        let error = send(policy(), &script, request(method)).await.unwrap_err();
        assert_eq!(error.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
        assert_eq!(script.attempts(), 1);
    }
    // Idempotent methods are.
    for method in [Method::PUT, Method::DELETE, Method::HEAD, Method::OPTIONS] {
        let script = Script::new(vec![server_error(500)]);
        send(policy(), &script, request(method)).await.unwrap();
        assert_eq!(script.attempts(), 2);
    }
}

#[tokio::test(start_paused = true)]
async fn post_after_500_is_retried_when_opted_in() {
    // Globally.
    let script = Script::new(vec![server_error(500)]);
    let opted = RetryPolicy::builder()
        .retry_non_idempotent(true)
        .seed(1)
        .build()
        .unwrap();
    send(opted, &script, request(Method::POST)).await.unwrap();
    assert_eq!(script.attempts(), 2);
    assert_within(script.gaps()[0], (secs(25), secs(30)));

    // Per request, with the marker.
    let script = Script::new(vec![server_error(502)]);
    let mut req = request(Method::POST);
    req.extensions_mut().insert(Idempotent);
    send(policy(), &script, req).await.unwrap();
    assert_eq!(script.attempts(), 2);

    // Per request, with an override.
    let script = Script::new(vec![server_error(503)]);
    let mut req = request(Method::PATCH);
    req.extensions_mut()
        .insert(RetryOverride::new().retry_non_idempotent(true));
    send(policy(), &script, req).await.unwrap();
    assert_eq!(script.attempts(), 2);

    // And an override can forbid what the policy allows.
    let script = Script::new(vec![server_error(503)]);
    let opted = RetryPolicy::builder()
        .retry_non_idempotent(true)
        .build()
        .unwrap();
    let mut req = request(Method::POST);
    req.extensions_mut()
        .insert(RetryOverride::new().retry_non_idempotent(false));
    send(opted, &script, req).await.unwrap_err();
    assert_eq!(script.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn post_after_a_connect_error_or_a_429_is_retried() {
    let script = Script::new(vec![transport(true)]);
    let response = send(policy(), &script, request(Method::POST))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(script.attempts(), 2);
    assert_eq!(script.gaps(), expected_delays(1, 1));

    let script = Script::new(vec![throttled(Some(secs(3)))]);
    send(policy(), &script, request(Method::POST))
        .await
        .unwrap();
    assert_eq!(script.gaps(), vec![secs(3)]);
}

#[tokio::test(start_paused = true)]
async fn transport_errors_that_may_have_been_sent_follow_the_5xx_rule() {
    let script = Script::new(vec![transport(false)]);
    let error = send(policy(), &script, request(Method::POST))
        .await
        .unwrap_err();
    assert!(matches!(
        error,
        DrChronoError::Transport {
            not_sent: false,
            ..
        }
    ));
    assert_eq!(script.attempts(), 1);

    let script = Script::new(vec![transport(false), transport(false)]);
    let p = policy();
    send(p.clone(), &script, request(Method::GET))
        .await
        .unwrap();
    assert_eq!(script.attempts(), 3);
    assert_eq!(script.gaps(), expected_delays(1, 2));
    assert_eq!(p.stats().transport_retries, 2);
}

#[tokio::test(start_paused = true)]
async fn a_curable_401_is_replayed_once_at_once() {
    let script = Script::new(vec![unauthorized(true), unauthorized(true)]);
    let p = policy();
    let error = send(p.clone(), &script, request(Method::POST))
        .await
        .unwrap_err();
    assert!(matches!(error, DrChronoError::Unauthorized { .. }));
    assert_eq!(script.attempts(), 2);
    assert_eq!(script.gaps(), vec![secs(0)]);
    assert_eq!(p.stats().unauthorized_replays, 1);

    // A replay then a 5xx: the 5xx schedule still starts at its first delay.
    let script = Script::new(vec![unauthorized(true), server_error(503)]);
    send(policy(), &script, request(Method::GET)).await.unwrap();
    assert_eq!(script.gaps(), vec![secs(0), expected_delays(1, 1)[0]]);

    // Not marked curable: returned as is.
    let script = Script::new(vec![unauthorized(false)]);
    send(policy(), &script, request(Method::GET))
        .await
        .unwrap_err();
    assert_eq!(script.attempts(), 1);

    // Disabled per request.
    let script = Script::new(vec![unauthorized(true)]);
    let mut req = request(Method::GET);
    req.extensions_mut().insert(RetryOverride::disabled());
    send(policy(), &script, req).await.unwrap_err();
    assert_eq!(script.attempts(), 1);
}

/// The 401 replay is immediate, but not past the deadline: an attempt that answered its
/// 401 after the deadline ends the request there, as a 5xx or a 429 would.
#[tokio::test(start_paused = true)]
async fn no_401_replay_passes_the_deadline() {
    let policy = || {
        RetryPolicy::builder()
            .deadline(Some(secs(1)))
            .build()
            .unwrap()
    };
    let slow = |script: &Script, answer_after: std::time::Duration| {
        let inner = script.service();
        tower::service_fn(move |req| {
            let answer = inner.clone().oneshot(req);
            async move {
                tokio::time::sleep(answer_after).await;
                answer.await
            }
        })
    };
    for (answer_after, attempts) in [(secs(2), 1), (std::time::Duration::from_millis(400), 2)] {
        let script = Script::new(vec![unauthorized(true), unauthorized(true)]);
        let p = policy();
        let error = ServiceBuilder::new()
            .layer(p.clone().layer())
            .service(slow(&script, answer_after))
            .oneshot(request(Method::GET))
            .await
            .unwrap_err();
        assert!(matches!(error, DrChronoError::Unauthorized { .. }));
        assert_eq!(script.attempts(), attempts, "{answer_after:?}");
        assert_eq!(p.stats().unauthorized_replays, attempts as u64 - 1);
    }
}

#[tokio::test(start_paused = true)]
async fn other_errors_are_final() {
    let script = Script::new(vec![not_found()]);
    let p = policy();
    send(p.clone(), &script, request(Method::GET))
        .await
        .unwrap_err();
    assert_eq!(script.attempts(), 1);
    assert_eq!(p.stats().gave_up, 0);

    let script = Script::new(vec![raw(501), raw(404)]);
    let response = send(policy(), &script, request(Method::GET)).await.unwrap();
    assert_eq!(response.status(), StatusCode::NOT_IMPLEMENTED);
    assert_eq!(script.attempts(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_sleep_passes_the_deadline() {
    // 25-30 s fits in 60 s; the next 50-60 s would end past it.
    let p = RetryPolicy::builder()
        .deadline(Some(secs(60)))
        .seed(1)
        .build()
        .unwrap();
    let script = Script::new((0..4).map(|_| server_error(503)).collect());
    let start = tokio::time::Instant::now();
    let error = send(p, &script, request(Method::GET)).await.unwrap_err();
    assert_eq!(error.status(), Some(StatusCode::SERVICE_UNAVAILABLE));
    assert_eq!(script.attempts(), 2);
    // Returned at once when the second attempt failed, not after a sleep.
    assert_eq!(start.elapsed(), expected_delays(1, 1)[0]);

    // Per request: the override's deadline wins; `no_deadline` lifts it.
    let script = Script::new((0..4).map(|_| server_error(503)).collect());
    let mut req = request(Method::GET);
    req.extensions_mut()
        .insert(RetryOverride::new().deadline(secs(20)));
    send(policy(), &script, req).await.unwrap_err();
    assert_eq!(script.attempts(), 1);

    let tight = RetryPolicy::builder()
        .deadline(Some(secs(1)))
        .build()
        .unwrap();
    let script = Script::new(vec![server_error(503)]);
    let mut req = request(Method::GET);
    req.extensions_mut()
        .insert(RetryOverride::new().no_deadline());
    send(tight, &script, req).await.unwrap();
    assert_eq!(script.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn every_number_is_configurable() {
    let p = RetryPolicy::builder()
        .max_retries(2)
        .first_delay(secs(1), secs(1))
        .multiplier(3.0)
        .max_delay(secs(5))
        .build()
        .unwrap();
    let script = Script::new((0..5).map(|_| server_error(500)).collect());
    send(p, &script, request(Method::GET)).await.unwrap_err();
    assert_eq!(script.gaps(), vec![secs(1), secs(3)]);

    let p = RetryPolicy::builder()
        .max_retries(4)
        .first_delay(secs(1), secs(1))
        .multiplier(3.0)
        .max_delay(secs(5))
        .build()
        .unwrap();
    let script = Script::new((0..5).map(|_| server_error(500)).collect());
    send(p, &script, request(Method::GET)).await.unwrap_err();
    assert_eq!(script.gaps(), vec![secs(1), secs(3), secs(5), secs(5)]);

    // Per request.
    let script = Script::new((0..5).map(|_| server_error(500)).collect());
    let mut req = request(Method::GET);
    req.extensions_mut()
        .insert(RetryOverride::new().max_retries(1));
    send(policy(), &script, req).await.unwrap_err();
    assert_eq!(script.attempts(), 2);
}

#[tokio::test(start_paused = true)]
async fn state_is_per_request_on_a_reused_service() {
    let script = Script::new((0..8).map(|_| server_error(503)).collect());
    let p = policy();
    let mut svc = ServiceBuilder::new()
        .layer(p.clone().layer())
        .service(script.service());
    for _ in 0..2 {
        svc.ready().await.unwrap();
        svc.call(request(Method::GET)).await.unwrap_err();
    }
    // Each request got its own 3 retries.
    assert_eq!(script.attempts(), 8);
    let stats = p.stats();
    assert_eq!((stats.requests, stats.retries), (2, 6));
}

/// A first attempt that took 40 minutes (longer than the 30-minute deadline) and then met a
/// 503: retried when those 40 minutes were spent waiting for the rate limiter's permit (the
/// limiter reports them as `permit_wait`), not when they were spent anywhere else.
#[tokio::test(start_paused = true)]
async fn waiting_for_the_limiters_permit_does_not_count_against_the_deadline() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use drchrono_core::{ErrorContext, PermitWait};

    let forty_minutes = Duration::from_secs(40 * 60);
    let attempts = |permit_wait: Option<Duration>| {
        let calls = Arc::new(AtomicU32::new(0));
        let counted = calls.clone();
        let service = tower::service_fn(move |_request: Request<Full<Bytes>>| {
            let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
            async move {
                if !first {
                    return Ok(http::Response::new(Full::new(Bytes::new())));
                }
                tokio::time::sleep(forty_minutes).await;
                let mut context = ErrorContext::new();
                if let Some(wait) = permit_wait {
                    context.extensions.insert(PermitWait(wait));
                }
                Err(DrChronoError::Server {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    context: Box::new(context),
                })
            }
        });
        async move {
            let outcome = ServiceBuilder::new()
                .layer(policy().layer())
                .service(service)
                .oneshot(request(Method::GET))
                .await;
            (outcome, calls.load(Ordering::SeqCst))
        }
    };

    let (queued, calls) = attempts(Some(forty_minutes)).await;
    assert!(queued.is_ok(), "{queued:?}");
    assert_eq!(calls, 2);

    let (stuck, calls) = attempts(None).await;
    assert!(
        matches!(stuck, Err(DrChronoError::Server { .. })),
        "{stuck:?}"
    );
    assert_eq!(calls, 1);
}
