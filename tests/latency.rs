//! The limiter's promise under real latency: a permit is spent only when the request leaves.
//!
//! DrChrono counts a request when it arrives. These scenarios put the waits that real
//! deployments have between "the limiter released it" and "it left" (a token endpoint that
//! takes seconds, as django-oauth-toolkit's does; a transport whose first connection takes
//! seconds) and check that the server still refuses nothing: every wait happens before a
//! request is charged. All under paused time, with the simulator's router as the transport.

mod support;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use drchrono_sim::SimConfig;
use drchrono_tower::DrChronoClient;
use drchrono_tower::ratelimit::RateLimitConfig;
use http::{Request, StatusCode};
use tokio::task::JoinSet;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::Service;

use support::{
    MONDAY_10_37_UTC, WireLog, client_builder, limiter, record, seeded_policy, simulator, utc,
};

/// `requests` concurrent `GET /api/patients/{i}` through `client`; every one must succeed.
async fn concurrent_gets(client: &DrChronoClient, requests: u64) {
    let mut tasks = JoinSet::new();
    for id in 1..=requests {
        let client = client.clone();
        tasks.spawn(async move { (id, client.get(&format!("/api/patients/{id}")).await) });
    }
    while let Some(joined) = tasks.join_next().await {
        let (id, result) = joined.unwrap();
        let response = result.unwrap_or_else(|e| panic!("patient {id}: {e:?}"));
        assert_eq!(response.status(), StatusCode::OK, "patient {id}");
    }
}

/// The most API requests the transport handed on within any rolling second.
fn busiest_second(wire: &WireLog) -> usize {
    let sent: Vec<Instant> = wire.api().iter().map(|e| e.sent_at).collect();
    sent.iter()
        .map(|&from| {
            sent.iter()
                .filter(|&&t| t >= from && t < from + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0)
}

#[tokio::test(start_paused = true)]
async fn a_slow_token_endpoint_delays_requests_before_they_are_counted() {
    let start = utc(MONDAY_10_37_UTC);
    let sim = simulator(
        SimConfig::default().token_delay(Duration::from_secs(3)),
        start,
    );
    let (transport, wire) = record(sim.router());
    let client = client_builder(&sim, limiter(RateLimitConfig::default(), start))
        .retry(seeded_policy())
        .build_with_transport(transport)
        .unwrap();
    let t0 = Instant::now();

    // 30 concurrent GETs, starting from a refresh token only: the first one's refresh
    // takes 3 s, and every request waits for it before it is charged.
    concurrent_gets(&client, 30).await;

    let stats = sim.stats();
    assert_eq!(stats.throttled.total(), 0, "{stats:?}");
    assert!(stats.peak_second <= 9, "{stats:?}");
    assert_eq!(stats.token_refreshes, 1);
    assert_eq!(stats.unauthorized, 0);
    assert_eq!(stats.requests, 30, "no request was retried: {stats:?}");
    let api = wire.api();
    assert!(
        api.iter().all(|e| e.sent_at >= t0 + Duration::from_secs(3)),
        "no API request left before the token came"
    );
    assert!(busiest_second(&wire) <= 9);
    // And the limiter paced them from the instant the token came: 9, 9, 9, then 3.
    let last = api.iter().map(|e| e.sent_at).max().unwrap();
    assert!(last >= t0 + Duration::from_secs(6), "{:?}", last - t0);
}

/// A transport that connects in `poll_ready`, as tower's `Reconnect` does: until the first
/// connection is up (`connect` after the first poll: a slow TLS handshake, a cold
/// load balancer), no request can be handed to it.
struct SlowFirstConnect<S> {
    inner: S,
    connected_at: Arc<Mutex<Option<Instant>>>,
    connect: Duration,
    waiting: Option<Pin<Box<Sleep>>>,
}

impl<S: Clone> Clone for SlowFirstConnect<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            connected_at: Arc::clone(&self.connected_at),
            connect: self.connect,
            waiting: None,
        }
    }
}

impl<S> fmt::Debug for SlowFirstConnect<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlowFirstConnect").finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for SlowFirstConnect<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let connected_at = *self
            .connected_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_or_insert_with(|| Instant::now() + self.connect);
        if Instant::now() < connected_at {
            let waiting = self
                .waiting
                .get_or_insert_with(|| Box::pin(sleep_until(connected_at)));
            ready!(waiting.as_mut().poll(cx));
        }
        self.waiting = None;
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> S::Future {
        self.inner.call(request)
    }
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_connection_and_a_slow_token_endpoint_send_nothing_at_once() {
    let start = utc(MONDAY_10_37_UTC);
    let sim = simulator(
        SimConfig::default().token_delay(Duration::from_secs(3)),
        start,
    );
    let (recorded, wire) = record(sim.router());
    let transport = SlowFirstConnect {
        inner: recorded,
        connected_at: Arc::default(),
        connect: Duration::from_secs(2),
        waiting: None,
    };
    let client = client_builder(&sim, limiter(RateLimitConfig::default(), start))
        .retry(seeded_policy())
        .build_with_transport(transport)
        .unwrap();
    let t0 = Instant::now();

    concurrent_gets(&client, 30).await;

    let stats = sim.stats();
    assert_eq!(stats.throttled.total(), 0, "{stats:?}");
    assert!(stats.peak_second <= 9, "{stats:?}");
    assert_eq!((stats.token_refreshes, stats.unauthorized), (1, 0));
    assert!(busiest_second(&wire) <= 9);
    // The connection (2 s) and then the grant (3 s) came before any API request.
    let first = wire.api().iter().map(|e| e.sent_at).min().unwrap();
    assert!(first >= t0 + Duration::from_secs(5), "{:?}", first - t0);
}

#[tokio::test(start_paused = true)]
async fn a_request_queued_across_a_refresh_is_sent_with_the_new_token() {
    // 12-second tokens, refreshed 1.2 s before expiry; the grant takes 2 s. 120 requests at
    // 9 a second keep the queue busy for 13 s, across the first token's expiry.
    let start = utc(MONDAY_10_37_UTC);
    let sim = simulator(
        SimConfig::default()
            .token_lifetime(Duration::from_secs(12))
            .token_delay(Duration::from_secs(2)),
        start,
    );
    let (transport, wire) = record(sim.router());
    let client = client_builder(&sim, limiter(RateLimitConfig::default(), start))
        .retry(seeded_policy())
        .build_with_transport(transport)
        .unwrap();

    concurrent_gets(&client, 120).await;

    let stats = sim.stats();
    // No expired or revoked token reached the server, nothing was throttled, and no request
    // needed a second attempt.
    assert_eq!(stats.unauthorized, 0, "{stats:?}");
    assert_eq!(stats.throttled.total(), 0, "{stats:?}");
    assert_eq!(stats.requests, 120, "{stats:?}");
    assert!(stats.token_refreshes >= 2, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0);
    assert!(busiest_second(&wire) <= 9);
}
