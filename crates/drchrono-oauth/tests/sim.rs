//! Acceptance against `drchrono-sim` over real loopback HTTP (and, where time must be
//! virtual, with the simulator's router as the transport).

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use drchrono_classify::ErrorClassifyLayer;
use drchrono_core::DrChronoError;
use drchrono_oauth::{
    ClientCredentials, FileTokenStore, MemoryTokenStore, OAuthRefreshLayer, TokenClient,
    TokenManager, TokenSet, TokenStore,
};
use drchrono_sim::{RunningSimulator, SimConfig, Simulator};
use futures::future::join_all;
use http::{Request, StatusCode};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use support::{ReplayOnce, get};
use tokio::sync::{Semaphore, mpsc};
use tower::retry::Retry;
use tower::{ServiceBuilder, ServiceExt};

type Http = Client<HttpConnector, Full<Bytes>>;

fn unthrottled() -> SimConfig {
    SimConfig::default()
        .max_per_second(1_000_000)
        .max_per_window(1_000_000)
        .max_per_hour(1_000_000)
}

fn http() -> Http {
    Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>()
}

fn token_client(sim: &RunningSimulator, http: &Http) -> TokenClient {
    let credentials = sim.credentials();
    TokenClient::new(
        http.clone(),
        ClientCredentials::new(credentials.client_id, credentials.client_secret),
    )
    .token_url(sim.token_url().parse().unwrap())
}

fn from_refresh_token(sim: &RunningSimulator) -> TokenSet {
    TokenSet::from_refresh_token(sim.credentials().refresh_token)
}

fn patient(sim: &RunningSimulator, id: u64) -> Request<Full<Bytes>> {
    get(&format!("{}/api/patients/{id}", sim.base_url()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_from_a_refresh_token_make_one_token_call() {
    let sim = drchrono_sim::spawn(unthrottled()).await.unwrap();
    let http = http();
    let manager = TokenManager::builder(token_client(&sim, &http))
        .initial_tokens(from_refresh_token(&sim))
        .build();
    let api = ServiceBuilder::new()
        .layer(OAuthRefreshLayer::new(manager.clone()))
        .layer(ErrorClassifyLayer::new())
        .service(http);
    let tasks = (1..=1_000).map(|id| tokio::spawn(api.clone().oneshot(patient(&sim, id))));
    for result in join_all(tasks).await {
        assert_eq!(result.unwrap().unwrap().status(), StatusCode::OK);
    }
    let stats = sim.stats();
    assert_eq!(stats.token_refreshes, 1);
    assert_eq!(stats.accepted, 1_000);
    assert_eq!(stats.unauthorized, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_concurrent_requests_crossing_the_refresh_instant_make_one_token_call() {
    let sim = drchrono_sim::spawn(unthrottled()).await.unwrap();
    let http = http();
    let first_store = Arc::new(MemoryTokenStore::new());
    let first = TokenManager::builder(token_client(&sim, &http))
        .shared_store(first_store.clone())
        .initial_tokens(from_refresh_token(&sim))
        .build();
    first.bearer().await.unwrap();
    assert_eq!(sim.stats().token_refreshes, 1);

    // The same valid pair, 2 minutes from expiry: inside the 5-minute margin.
    let valid = first_store.load().await.unwrap().unwrap();
    let nearly_expired = TokenSet::new(
        valid.access_token,
        valid.refresh_token,
        SystemTime::now() + Duration::from_secs(120),
    )
    .with_generation(5);
    let manager = TokenManager::builder(token_client(&sim, &http))
        .store(MemoryTokenStore::with_tokens(nearly_expired))
        .build();
    let api = Retry::new(
        ReplayOnce::default(),
        ServiceBuilder::new()
            .layer(OAuthRefreshLayer::new(manager.clone()))
            .layer(ErrorClassifyLayer::new())
            .service(http),
    );
    let tasks = (1..=1_000).map(|id| tokio::spawn(api.clone().oneshot(patient(&sim, id))));
    for result in join_all(tasks).await {
        assert_eq!(result.unwrap().unwrap().status(), StatusCode::OK);
    }
    let stats = sim.stats();
    assert_eq!(stats.token_refreshes, 2);
    assert_eq!(stats.unauthorized, 0);
    assert_eq!(manager.generation(), Some(6));
}

/// Holds API requests (not token requests) until opened, counting arrivals.
struct Gate {
    closed: AtomicBool,
    arrivals: mpsc::UnboundedSender<()>,
    open: Semaphore,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_in_flight_during_a_refresh_are_replayed_without_a_second_refresh() {
    const IN_FLIGHT: usize = 50;
    let sim = drchrono_sim::spawn(unthrottled()).await.unwrap();
    let http = http();
    let (arrivals, mut arrived) = mpsc::unbounded_channel();
    let gate = Arc::new(Gate {
        closed: AtomicBool::new(false),
        arrivals,
        open: Semaphore::new(0),
    });
    let gated = {
        let gate = Arc::clone(&gate);
        let http = http.clone();
        tower::service_fn(move |request: Request<Full<Bytes>>| {
            let gate = Arc::clone(&gate);
            let http = http.clone();
            async move {
                if gate.closed.load(Ordering::SeqCst) {
                    gate.arrivals.send(()).unwrap();
                    gate.open.acquire().await.unwrap().forget();
                }
                http.request(request).await
            }
        })
    };
    let manager = TokenManager::builder(token_client(&sim, &http))
        .initial_tokens(from_refresh_token(&sim))
        .build();
    let api = Retry::new(
        ReplayOnce::default(),
        ServiceBuilder::new()
            .layer(OAuthRefreshLayer::new(manager.clone()))
            .layer(ErrorClassifyLayer::new())
            .service(gated),
    );
    manager.bearer().await.unwrap();
    assert_eq!(sim.stats().token_refreshes, 1);

    gate.closed.store(true, Ordering::SeqCst);
    let tasks: Vec<_> = (1..=IN_FLIGHT as u64)
        .map(|id| tokio::spawn(api.clone().oneshot(patient(&sim, id))))
        .collect();
    for _ in 0..IN_FLIGHT {
        arrived.recv().await.unwrap();
    }
    // Every request carries the old token; now the token is rotated under them.
    assert_eq!(manager.refresh_now().await.unwrap(), 3);
    gate.closed.store(false, Ordering::SeqCst);
    gate.open.add_permits(IN_FLIGHT);

    for result in join_all(tasks).await {
        assert_eq!(result.unwrap().unwrap().status(), StatusCode::OK);
    }
    let stats = sim.stats();
    assert_eq!(
        stats.unauthorized, IN_FLIGHT as u64,
        "each carried the revoked token"
    );
    assert_eq!(
        stats.token_refreshes, 2,
        "no refresh beyond the one that rotated"
    );
    assert_eq!(stats.accepted, IN_FLIGHT as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reauthorisation_gives_every_caller_a_typed_error_once_until_set_tokens() {
    let sim = drchrono_sim::spawn(unthrottled()).await.unwrap();
    let http = http();
    let fired = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&fired);
    let manager = TokenManager::builder(token_client(&sim, &http))
        .initial_tokens(from_refresh_token(&sim))
        .on_reauthorization(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let api = Retry::new(
        ReplayOnce::default(),
        ServiceBuilder::new()
            .layer(OAuthRefreshLayer::new(manager.clone()))
            .layer(ErrorClassifyLayer::new())
            .service(http),
    );
    api.clone().oneshot(patient(&sim, 1)).await.unwrap();

    let fresh = sim.simulator().reauthorize(None);
    let tasks = (1..=100).map(|id| tokio::spawn(api.clone().oneshot(patient(&sim, id))));
    for result in join_all(tasks).await {
        let result = result.unwrap();
        assert!(
            matches!(result, Err(DrChronoError::ReauthorizationRequired { .. })),
            "{result:?}"
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.token_refreshes, 1);
    assert_eq!(stats.invalid_grant, 1);
    assert_eq!(fired.load(Ordering::SeqCst), 1);

    // No further token call, however many requests follow.
    for id in 1..=10 {
        assert!(matches!(
            api.clone().oneshot(patient(&sim, id)).await,
            Err(DrChronoError::ReauthorizationRequired { .. })
        ));
    }
    let stats = sim.stats();
    assert_eq!((stats.token_refreshes, stats.invalid_grant), (1, 1));

    let expires_at = SystemTime::now() + Duration::from_secs(fresh.expires_in);
    manager
        .set_tokens(TokenSet::new(
            fresh.access_token,
            fresh.refresh_token,
            expires_at,
        ))
        .await
        .unwrap();
    assert_eq!(
        api.clone()
            .oneshot(patient(&sim, 2))
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    // And refreshing works again with the new refresh token.
    manager.refresh_now().await.unwrap();
    assert_eq!(sim.stats().token_refreshes, 2);
    assert_eq!(fired.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_token_endpoint_answering_503_twice_then_200_is_retried() {
    let sim = Simulator::new(SimConfig::default());
    let credentials = sim.credentials();
    let client = TokenClient::new(
        sim.router(),
        ClientCredentials::new(credentials.client_id, credentials.client_secret),
    )
    .token_url("http://sim.test/o/token/".parse().unwrap());
    let manager = TokenManager::builder(client)
        .initial_tokens(TokenSet::from_refresh_token(credentials.refresh_token))
        .build();
    let api = ServiceBuilder::new()
        .layer(OAuthRefreshLayer::new(manager.clone()))
        .layer(ErrorClassifyLayer::new())
        .service(sim.router());

    sim.fail_next_token([
        StatusCode::SERVICE_UNAVAILABLE,
        StatusCode::SERVICE_UNAVAILABLE,
    ]);
    let start = tokio::time::Instant::now();
    let response = api
        .oneshot(get("http://sim.test/api/users/current"))
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(3),
        "1 s then 2 s of backoff"
    );
    assert_eq!(sim.stats().token_refreshes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_process_continues_from_the_token_file_without_reauthorisation() {
    let sim = drchrono_sim::spawn(unthrottled()).await.unwrap();
    let http = http();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens.json");
    let service = |manager: &TokenManager| {
        ServiceBuilder::new()
            .layer(OAuthRefreshLayer::new(manager.clone()))
            .layer(ErrorClassifyLayer::new())
            .service(http.clone())
    };
    {
        let first = TokenManager::builder(token_client(&sim, &http))
            .store(FileTokenStore::new(&path))
            .initial_tokens(from_refresh_token(&sim))
            .build();
        service(&first).oneshot(patient(&sim, 1)).await.unwrap();
        assert_eq!(sim.stats().token_refreshes, 1);
    }
    // "Restart": a second store and manager on the same file, with no initial tokens.
    let second = TokenManager::builder(token_client(&sim, &http))
        .store(FileTokenStore::new(&path))
        .build();
    let response = service(&second).oneshot(patient(&sim, 2)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        sim.stats().token_refreshes,
        1,
        "the persisted access token was reused"
    );
    // Its refresh token is the rotated one: refreshing works.
    assert_eq!(second.refresh_now().await.unwrap(), 3);
    service(&second).oneshot(patient(&sim, 3)).await.unwrap();

    let third = TokenManager::builder(token_client(&sim, &http))
        .store(FileTokenStore::new(&path))
        .build();
    service(&third).oneshot(patient(&sim, 4)).await.unwrap();
    let stats = sim.stats();
    assert_eq!(stats.token_refreshes, 2);
    assert_eq!(stats.invalid_grant, 0);
    assert_eq!(stats.unauthorized, 0);
}
