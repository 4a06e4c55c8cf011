//! Paused-time tests of what the layer does beyond the schedule: server 429s, priority,
//! smooth pacing, status.

mod support;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use drchrono_core::{BoxError, DrChronoError};
use drchrono_ratelimit::{DrChronoRateLimitLayer, Priority, RateLimitConfig, RateLimiter};
use http::{Request, Response, StatusCode};
use support::{Log, limiter, limiter_with, recorded, secs, start};
use tower::{Layer, ServiceExt, service_fn};

/// A layer over a service whose first answer is `first`, and 200 afterwards.
fn throttled_once<E, F>(
    limiter: &RateLimiter,
    first: F,
) -> impl tower::Service<Request<()>, Response = Response<()>, Error = E, Future: Send> + Clone + use<E, F>
where
    E: drchrono_core::LayerError + Send + 'static,
    F: Fn() -> Result<Response<()>, E> + Clone + Send + 'static,
{
    let answered = Arc::new(AtomicBool::new(false));
    let inner = service_fn(move |_request: Request<()>| {
        let answer = if answered.swap(true, Ordering::SeqCst) {
            Ok(Response::new(()))
        } else {
            first()
        };
        std::future::ready(answer)
    });
    DrChronoRateLimitLayer::new(limiter.clone()).layer(inner)
}

async fn released_at<S, E>(service: S) -> Duration
where
    S: tower::Service<Request<()>, Response = Response<()>, Error = E>,
    E: std::fmt::Debug,
{
    let origin = tokio::time::Instant::now();
    let _ = service.oneshot(Request::new(())).await;
    origin.elapsed()
}

fn raw_429() -> Result<Response<()>, Infallible> {
    Ok(Response::builder()
        .status(StatusCode::TOO_MANY_REQUESTS)
        .header("retry-after", "7")
        .body(())
        .unwrap())
}

#[tokio::test(start_paused = true)]
async fn a_raw_429_seen_by_one_clone_holds_every_clone() {
    let limiter = limiter(0);
    let service = throttled_once(&limiter, raw_429);
    let response = service.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    // Other clones, in other tasks, wait the 7 s; the budget still allows 8 more now.
    let others: Vec<_> = (0..3)
        .map(|_| tokio::spawn(released_at(service.clone())))
        .collect();
    for other in others {
        assert_eq!(other.await.unwrap(), secs(7.0));
    }
    assert_eq!(limiter.status().await.unwrap().rules[2].remaining, 496);
}

#[tokio::test(start_paused = true)]
async fn a_typed_throttled_error_holds_every_clone_until_available_at() {
    let limiter = limiter(0);
    let typed = || {
        Err(DrChronoError::Throttled {
            retry_after: Some(Duration::from_secs(7)),
            available_at: Some(tokio::time::Instant::now() + Duration::from_secs(7)),
            context: Box::default(),
        })
    };
    let service = throttled_once(&limiter, typed);
    let error = service.clone().oneshot(Request::new(())).await.unwrap_err();
    assert!(matches!(error, DrChronoError::Throttled { .. }));
    assert_eq!(released_at(service.clone()).await, secs(7.0));
}

#[tokio::test(start_paused = true)]
async fn a_boxed_throttled_error_counts_too() {
    let limiter = limiter(0);
    let boxed = || -> Result<Response<()>, BoxError> {
        Err(Box::new(DrChronoError::Throttled {
            retry_after: Some(Duration::from_secs(3)),
            available_at: None,
            context: Box::default(),
        }))
    };
    let service = throttled_once(&limiter, boxed);
    assert!(service.clone().oneshot(Request::new(())).await.is_err());
    assert_eq!(released_at(service).await, secs(3.0));
}

#[tokio::test(start_paused = true)]
async fn other_errors_and_responses_pause_nobody() {
    let limiter = limiter(0);
    let service = throttled_once(&limiter, || -> Result<Response<()>, BoxError> {
        Err("connection reset".into())
    });
    assert!(service.clone().oneshot(Request::new(())).await.is_err());
    assert_eq!(released_at(service.clone()).await, secs(0.0));
    assert_eq!(limiter.status().await.unwrap().paused_until, None);
}

#[tokio::test(start_paused = true)]
async fn a_429_until_the_top_of_the_hour_spends_the_hour() {
    // At 10:37:00, the server says: come back at 11:00:00 (1380 s).
    let limiter = limiter(100);
    let until_top = || {
        Ok::<_, Infallible>(
            Response::builder()
                .status(429)
                .header("retry-after", "1380")
                .body(())
                .unwrap(),
        )
    };
    let service = throttled_once(&limiter, until_top);
    let _ = service.clone().oneshot(Request::new(())).await;
    let status = limiter.status().await.unwrap();
    assert_eq!(status.rules[2].remaining, 0);
    assert_eq!(status.paused_until, Some(start() + secs(1380.0)));
    assert_eq!(status.next_available, start() + secs(1380.1));
    // The hour opens at 11:00:00 plus the margin.
    assert_eq!(released_at(service).await, secs(1380.1));
}

#[tokio::test(start_paused = true)]
async fn background_work_leaves_the_reserve_and_yields_to_interactive() {
    // 20 per hour: background may take 18.
    let limiter = limiter_with(
        RateLimitConfig::builder()
            .max_per_hour(20)
            .safety_margin(Duration::ZERO),
    );
    let log = Log::default();
    let service = recorded(&limiter, &log);
    let background: Vec<_> = (0..19)
        .map(|i| {
            let mut request = Request::new(i);
            request.extensions_mut().insert(Priority::Background);
            tokio::spawn(service.clone().oneshot(request))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(log.by_index().len(), 18);
    let status = limiter.status().await.unwrap();
    assert_eq!(status.rules[2].remaining, 2);
    assert_eq!(status.next_available, start() + secs(5.0));
    assert_eq!(status.next_available_background, start() + secs(1380.0));
    // An interactive request goes now, past the waiting background one.
    service.clone().oneshot(Request::new(100)).await.unwrap();
    assert_eq!(log.by_index().last(), Some(&(100, secs(5.0))));
    for task in background {
        task.await.unwrap().unwrap();
    }
    // The 19th background request waited for 11:00.
    assert_eq!(log.by_index()[18], (18, secs(1380.0)));
}

/// A request queued behind others, or asleep until its instant, holds nothing that getting
/// ready reserved. With a `ConcurrencyLimit` of one below the limiter, the request queued
/// behind the 10th of a second (the service polled ready before it was called) held the
/// only permit, and the 10th, waking at its turn, could never get ready: nine went, the other
/// ten never did, and no other request could get ready either.
#[tokio::test(start_paused = true)]
async fn a_sleeping_waiter_holds_no_permit_of_the_service_below() {
    // 20 per hour: background may take 18.
    let limiter = limiter_with(
        RateLimitConfig::builder()
            .max_per_hour(20)
            .safety_margin(Duration::ZERO),
    );
    let answer = service_fn(|_request: Request<u32>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(())))
    });
    let service = DrChronoRateLimitLayer::new(limiter.clone())
        .layer(tower::limit::ConcurrencyLimit::new(answer, 1));
    let background: Vec<_> = (0..19)
        .map(|i| {
            let mut request = Request::new(i);
            request.extensions_mut().insert(Priority::Background);
            tokio::spawn(service.clone().oneshot(request))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let interactive = tokio::time::timeout(
        Duration::from_secs(60),
        service.clone().oneshot(Request::new(100)),
    )
    .await;
    assert!(
        interactive.is_ok(),
        "the interactive request waited on the sleeper's permit"
    );
    for task in background {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn smooth_pacing_spreads_the_hour_evenly() {
    // At 10:37:00 with 10 per hour: the 1380 s left until 11:00 split evenly, one every
    // 138 s instead of a burst; the 11th opens the next hour.
    let limiter = limiter_with(
        RateLimitConfig::builder()
            .max_per_hour(10)
            .safety_margin(Duration::ZERO)
            .smooth_pacing(true),
    );
    let origin = tokio::time::Instant::now();
    let mut released = Vec::new();
    for _ in 0..11 {
        limiter.acquire(Priority::Interactive).await.unwrap();
        released.push(origin.elapsed());
    }
    let expected: Vec<_> = (0..=10).map(|k| secs(138.0 * f64::from(k))).collect();
    assert_eq!(released, expected);
}

#[tokio::test(start_paused = true)]
async fn status_reports_budgets_resets_and_the_next_instant() {
    let limiter = limiter(100);
    for _ in 0..9 {
        limiter.acquire(Priority::Interactive).await.unwrap();
    }
    let status = limiter.status().await.unwrap();
    assert_eq!(status.at, start());
    let remaining: Vec<_> = status.rules.iter().map(|r| r.remaining).collect();
    assert_eq!(remaining, [0, 281, 491]);
    assert_eq!(status.rules[0].resets_at, Some(start() + secs(1.1)));
    assert_eq!(status.rules[1].resets_at, Some(start() + secs(600.1)));
    assert_eq!(status.rules[2].resets_at, Some(start() + secs(1380.1)));
    assert_eq!(status.next_reset, Some(start() + secs(1.1)));
    assert_eq!(status.next_available, start() + secs(1.1));
    assert_eq!(status.paused_until, None);
    tokio::time::advance(secs(2.0)).await;
    let status = DrChronoRateLimitLayer::new(limiter)
        .limiter()
        .status()
        .await
        .unwrap();
    assert_eq!(status.rules[0].remaining, 9);
    assert_eq!(status.rules[0].resets_at, None);
    assert_eq!(status.next_available, start() + secs(2.0));
}

/// An attempt that waited for its permit says how long, to the retry layer above: in the
/// response's extensions, or in the error's context. One admitted at once says nothing.
#[tokio::test(start_paused = true)]
async fn an_attempt_that_waited_reports_its_wait() {
    use drchrono_core::{ErrorContext, PermitWait};

    let limiter = limiter_with(
        RateLimitConfig::builder()
            .max_per_second(1)
            .safety_margin(Duration::ZERO),
    );
    let ok =
        DrChronoRateLimitLayer::new(limiter.clone()).layer(service_fn(|_request: Request<()>| {
            std::future::ready(Ok::<_, Infallible>(Response::new(())))
        }));
    let first = ok.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(PermitWait::of_response(&first), None);
    let second = ok.clone().oneshot(Request::new(())).await.unwrap();
    assert_eq!(PermitWait::of_response(&second), Some(secs(1.0)));

    // A typed error, and a boxed one, carry it in their context.
    let failing = |boxed: bool| {
        DrChronoRateLimitLayer::new(limiter.clone()).layer(service_fn(
            move |_request: Request<()>| {
                let error = DrChronoError::Server {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    context: Box::new(ErrorContext::new()),
                };
                let error: BoxError = if boxed {
                    Box::new(error)
                } else {
                    Box::new(std::io::Error::other("unused"))
                };
                std::future::ready(Err::<Response<()>, BoxError>(error))
            },
        ))
    };
    let error = failing(true).oneshot(Request::new(())).await.unwrap_err();
    let error = error.downcast_ref::<DrChronoError>().unwrap();
    assert_eq!(PermitWait::of_error(error), Some(secs(1.0)));
    let typed =
        DrChronoRateLimitLayer::new(limiter.clone()).layer(service_fn(|_request: Request<()>| {
            std::future::ready(Err::<Response<()>, _>(DrChronoError::Server {
                status: StatusCode::BAD_GATEWAY,
                context: Box::new(ErrorContext::new()),
            }))
        }));
    let error = typed.oneshot(Request::new(())).await.unwrap_err();
    assert_eq!(PermitWait::of_error(&error), Some(secs(1.0)));
    // Any other error type goes through untouched.
    let other = failing(false).oneshot(Request::new(())).await.unwrap_err();
    assert!(other.downcast_ref::<std::io::Error>().is_some());
}

/// Answers 200, recording the instant each `call_at` was given.
#[derive(Clone, Default)]
struct ReadingLog(Arc<std::sync::Mutex<Vec<tokio::time::Instant>>>);

impl tower::Service<Request<()>> for ReadingLog {
    type Response = Response<()>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<()>, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        drchrono_core::CallAt::call_at(self, request, tokio::time::Instant::now())
    }
}

impl drchrono_core::CallAt<Request<()>> for ReadingLog {
    fn call_at(&mut self, _request: Request<()>, now: tokio::time::Instant) -> Self::Future {
        self.0.lock().unwrap().push(now);
        std::future::ready(Ok(Response::new(())))
    }
}

/// `call_at` charges the request at its caller's reading of tokio's clock, not at one of
/// its own, and calls the service below at that reading too.
#[tokio::test(start_paused = true)]
async fn call_at_charges_at_the_callers_reading() {
    use drchrono_core::CallAt;

    let limiter = limiter_with(
        RateLimitConfig::builder()
            .max_per_second(1)
            .safety_margin(Duration::ZERO),
    );
    let readings = ReadingLog::default();
    let mut service = DrChronoRateLimitLayer::new(limiter.clone()).layer(readings.clone());
    let read = tokio::time::Instant::now();
    tokio::time::advance(secs(0.4)).await;
    service.ready().await.unwrap();
    service.call_at(Request::new(()), read).await.unwrap();
    assert_eq!(*readings.0.lock().unwrap(), [read]);
    // Charged at `read`: the next permit is one second after it, not after the call.
    let status = limiter.status().await.unwrap();
    assert_eq!(status.next_available, start() + secs(1.0));
}
