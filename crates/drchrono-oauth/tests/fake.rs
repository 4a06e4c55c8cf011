//! The layer and manager against a fake token endpoint and API (`tower::service_fn`), in
//! paused time: single-flight, proactive refresh, 401 triage, races.

mod support;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use drchrono_core::DrChronoError;
use drchrono_oauth::{
    AuthStatus, MemoryTokenStore, OAuthRefresh, OAuthRefreshLayer, TokenManager, TokenSet,
    TokenStore,
};
use futures::future::join_all;
use secrecy::ExposeSecret;
use support::*;
use tokio::time::Instant;
use tower::retry::Retry;
use tower::{Layer, ServiceExt};

const URL: &str = "http://api.test/api/patients/1";

#[tokio::test(start_paused = true)]
async fn the_first_request_refreshes_and_persists_the_rotated_pair_before_use() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let store = Arc::new(MemoryTokenStore::new());
    let manager = manager(&auth, store.clone());
    assert_eq!(*manager.status().borrow(), AuthStatus::Unloaded);
    let service = OAuthRefreshLayer::new(manager.clone()).layer(api(&auth, &log, Duration::ZERO));

    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(auth.refreshes(), 1);
    assert!(
        log.sensitive.load(Ordering::SeqCst),
        "Authorization is marked sensitive"
    );
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(
        stored.generation, 2,
        "initial pair is generation 1, the refresh 2"
    );
    assert_eq!(
        stored.refresh_token.expose_secret(),
        auth.current_refresh_token()
    );
    assert_eq!(stored.scope.as_deref(), Some("patients:read"));
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::Active { generation: 2 }
    );

    // Later requests reuse the token.
    for _ in 0..5 {
        service.clone().oneshot(get(URL)).await.unwrap();
    }
    assert_eq!(auth.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_thousand_concurrent_requests_cause_exactly_one_refresh() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let manager = manager(&auth, Arc::new(MemoryTokenStore::new()));
    let service = OAuthRefresh::new(api(&auth, &log, Duration::from_millis(5)), manager);

    let results = join_all((0..1_000).map(|_| service.clone().oneshot(get(URL)))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(auth.calls(), 1);
    assert_eq!(log.unauthorized.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn refreshes_proactively_inside_the_margin_only() {
    let auth = FakeAuth::new(600); // margin: min(5 min, 60 s) = 60 s
    let log = Arc::new(ApiLog::default());
    let manager = manager(&auth, Arc::new(MemoryTokenStore::new()));
    let service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());
    service.clone().oneshot(get(URL)).await.unwrap();
    let issued = Instant::now();

    tokio::time::advance(Duration::from_secs(530)).await;
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(auth.refreshes(), 1, "outside the margin");

    tokio::time::sleep_until(issued + Duration::from_secs(541)).await;
    let results = join_all((0..50).map(|_| service.clone().oneshot(get(URL)))).await;
    assert!(results.iter().all(Result::is_ok));
    assert_eq!(auth.refreshes(), 2, "one proactive refresh for 50 callers");
    assert_eq!(manager.generation(), Some(3));
    assert_eq!(log.unauthorized.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_401_on_an_older_token_is_marked_for_replay_without_a_refresh() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let manager = manager(&auth, Arc::new(MemoryTokenStore::new()));
    // Requests take 1 s to reach the server: they are in flight while a refresh happens.
    let service = OAuthRefresh::new(api(&auth, &log, Duration::from_secs(1)), manager.clone());
    manager.bearer().await.unwrap();
    assert_eq!(manager.generation(), Some(2));

    let in_flight: Vec<_> = (0..20)
        .map(|_| tokio::spawn(service.clone().oneshot(get(URL))))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(manager.refresh_now().await.unwrap(), 3);

    for handle in in_flight {
        match handle.await.unwrap() {
            Err(DrChronoError::Unauthorized {
                replay_with_current_token: true,
                persisted_after_refresh: false,
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(auth.refreshes(), 2, "no refresh beyond the forced one");

    // With a replay-once policy, the same requests succeed.
    let retrying = Retry::new(ReplayOnce::default(), service.clone());
    let pending: Vec<_> = (0..20)
        .map(|_| tokio::spawn(retrying.clone().oneshot(get(URL))))
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    manager.refresh_now().await.unwrap();
    for handle in pending {
        handle.await.unwrap().unwrap();
    }
    assert_eq!(auth.refreshes(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_401_on_the_current_token_refreshes_once_then_marks_every_caller() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    // The server no longer knows the access token, which is not yet due for refresh.
    let tokens = TokenSet::new(
        "at-stale-SECRETTOKEN",
        FIRST_REFRESH,
        SystemTime::now() + Duration::from_secs(3_600),
    );
    let manager = TokenManager::builder(token_client(&auth))
        .initial_tokens(tokens)
        .build();
    let service = Retry::new(
        ReplayOnce::default(),
        OAuthRefresh::new(api(&auth, &log, Duration::from_millis(10)), manager.clone()),
    );
    let results = join_all((0..200).map(|_| service.clone().oneshot(get(URL)))).await;
    assert!(
        results.iter().all(Result::is_ok),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    assert_eq!(auth.calls(), 1);
    assert_eq!(log.unauthorized.load(Ordering::SeqCst), 200);
    assert_eq!(log.calls.load(Ordering::SeqCst), 400);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_caller_never_abandons_a_rotation() {
    let auth = FakeAuth::new(600);
    let store = Arc::new(MemoryTokenStore::new());
    let manager = manager(&auth, store.clone());
    let attempt = tokio::time::timeout(Duration::from_millis(10), manager.bearer()).await;
    assert!(
        attempt.is_err(),
        "cancelled before the token endpoint answered"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(store.load().await.unwrap().unwrap().generation, 2);
    manager.bearer().await.unwrap();
    assert_eq!(auth.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_after_a_rotation_elsewhere_adopts_the_stored_pair() {
    let auth = FakeAuth::new(600);
    let store = Arc::new(MemoryTokenStore::new());
    let first = manager(&auth, store.clone());
    first.bearer().await.unwrap();
    // A second process (sharing the store) loaded generation 2 before the first one
    // refreshes again; its own copy is now stale.
    let second = TokenManager::builder(token_client(&auth))
        .shared_store(store.clone())
        .build();
    second.bearer().await.unwrap();
    assert_eq!(first.refresh_now().await.unwrap(), 3);
    // The second process forces a refresh with its stale refresh token: the store already
    // holds generation 3, so it adopts it (no invalid_grant, no re-authorisation).
    assert_eq!(second.refresh_now().await.unwrap(), 3);
    assert_eq!(auth.invalid_grants(), 0);
    assert_eq!(auth.refreshes(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_store_race_lost_after_refreshing_adopts_the_winner() {
    let auth = FakeAuth::new(600);
    let store = Arc::new(MemoryTokenStore::new());
    let manager = manager(&auth, store.clone());
    manager.bearer().await.unwrap();
    // Another writer stores generation 7 while our refresh is at the token endpoint.
    let winner = TokenSet::new(
        "at-winner-SECRETTOKEN",
        "rt-winner-SECRETTOKEN",
        SystemTime::now() + Duration::from_secs(600),
    )
    .with_generation(7);
    let racing = Arc::clone(&store);
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        racing.save(2, &winner).await.unwrap();
    });
    let outcome = manager.refresh_now().await;
    writer.await.unwrap();
    assert_eq!(auth.refreshes(), 2, "our refresh succeeded at the server");
    assert_eq!(outcome.unwrap(), 7, "but the store's winner is adopted");
    assert_eq!(manager.generation(), Some(7));
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(
        stored.refresh_token.expose_secret(),
        "rt-winner-SECRETTOKEN"
    );
}

#[tokio::test(start_paused = true)]
async fn refresh_now_before_any_load_loads_then_refreshes() {
    let auth = FakeAuth::new(600);
    let stored = TokenSet::new(
        "at-stored-SECRETTOKEN",
        FIRST_REFRESH,
        SystemTime::now() + Duration::from_secs(3_600),
    )
    .with_generation(5);
    let manager = TokenManager::builder(token_client(&auth))
        .store(MemoryTokenStore::with_tokens(stored))
        .build();
    assert_eq!(manager.generation(), None);
    assert_eq!(manager.refresh_now().await.unwrap(), 6);
    assert_eq!(auth.refreshes(), 1);
    // Concurrent forced refreshes share one.
    let results = join_all((0..10).map(|_| manager.refresh_now())).await;
    assert!(results.iter().all(|r| matches!(r, Ok(7))), "{results:?}");
    assert_eq!(auth.refreshes(), 2);
}

/// `call_at` decides the token's expiry at its caller's reading, as `call` does at its own:
/// held ready past the expiry and called at a reading from before it, the service attaches
/// the bearer it kept (where `call`, reading the clock, waits for a new token: above).
#[tokio::test(start_paused = true)]
async fn call_at_decides_the_tokens_expiry_at_the_callers_reading() {
    use drchrono_core::CallAt;
    use tower::Service;
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let manager = manager(&auth, Arc::new(MemoryTokenStore::new()));
    let mut service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager);
    service.ready().await.unwrap().call(get(URL)).await.unwrap();
    assert_eq!(auth.refreshes(), 1);
    service.ready().await.unwrap();
    let read = tokio::time::Instant::now();
    tokio::time::advance(Duration::from_secs(600)).await;
    service.call_at(get(URL), read).await.unwrap();
    assert_eq!(auth.refreshes(), 1);
    assert_eq!(log.calls.load(Ordering::SeqCst), 2);
    assert_eq!(log.unauthorized.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn a_service_kept_for_every_request_attaches_each_new_token() {
    use tower::Service;
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let manager = manager(&auth, Arc::new(MemoryTokenStore::new()));
    // One service for every request: it keeps the bearer it attached last.
    let mut service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());
    for _ in 0..3 {
        for _ in 0..3 {
            service.ready().await.unwrap().call(get(URL)).await.unwrap();
        }
        // Rotated by another caller: the next request carries the new token, not the kept
        // one (which the server no longer accepts).
        manager.refresh_now().await.unwrap();
    }
    // Due for a proactive refresh: poll_ready refreshes, and the request carries the result.
    tokio::time::advance(Duration::from_secs(541)).await;
    service.ready().await.unwrap().call(get(URL)).await.unwrap();
    assert_eq!(auth.refreshes(), 5);
    // Held ready past the token's expiry: the kept bearer is not sent; the call waits for a
    // new token instead.
    let ready = service.ready().await.unwrap();
    tokio::time::advance(Duration::from_secs(600)).await;
    ready.call(get(URL)).await.unwrap();
    assert_eq!(auth.refreshes(), 6);
    assert_eq!(log.calls.load(Ordering::SeqCst), 11);
    assert_eq!(log.unauthorized.load(Ordering::SeqCst), 0);
}
