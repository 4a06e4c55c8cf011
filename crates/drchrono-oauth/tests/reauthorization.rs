//! A family that needs re-authorisation recovers from a pair another process stored; the
//! re-authorisation hook fires once per rejected refresh token, and only after the store
//! was re-read and held nothing newer. Fake token endpoint and API, paused time.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use drchrono_core::DrChronoError;
use drchrono_oauth::{
    AuthStatus, OAuthRefresh, ReauthorizationEvent, ReauthorizationReason, TokenManager, TokenSet,
    TokenStore,
};
use support::*;
use tower::ServiceExt;
use tower::retry::Retry;

const URL: &str = "http://api.test/api/patients/1";

/// A manager over `store` whose hook records its events.
fn hooked(
    auth: &Arc<FakeAuth>,
    store: Arc<dyn TokenStore>,
) -> (TokenManager, Arc<Mutex<Vec<ReauthorizationEvent>>>) {
    let events: Arc<Mutex<Vec<ReauthorizationEvent>>> = Arc::default();
    let sink = Arc::clone(&events);
    let manager = TokenManager::builder(token_client(auth))
        .shared_store(store)
        .initial_tokens(TokenSet::from_refresh_token(FIRST_REFRESH))
        .on_reauthorization(move |event| sink.lock().unwrap().push(event.clone()))
        .build();
    (manager, events)
}

fn is_reauthorization(result: &Result<http::Response<()>, DrChronoError>) -> bool {
    matches!(result, Err(DrChronoError::ReauthorizationRequired { .. }))
}

#[tokio::test(start_paused = true)]
async fn a_latched_manager_adopts_a_pair_another_manager_stored() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let store = Arc::new(FlakyStore::default());
    let (first, events) = hooked(&auth, store.clone());
    let service = Retry::new(
        ReplayOnce::default(),
        OAuthRefresh::new(api(&auth, &log, Duration::from_millis(10)), first.clone()),
    );
    service.clone().oneshot(get(URL)).await.unwrap();

    // The user re-authorises through another process: every earlier token is revoked. Our
    // next request's 401 refreshes, gets invalid_grant, re-reads the store (nothing newer
    // yet) and latches; the hook fires once.
    let (access, refresh) = auth.reauthorize();
    assert!(is_reauthorization(&service.clone().oneshot(get(URL)).await));
    assert_eq!(auth.invalid_grants(), 1);
    assert_eq!(events.lock().unwrap().len(), 1);
    assert_eq!(
        events.lock().unwrap()[0].reason,
        ReauthorizationReason::InvalidGrant
    );

    // Until the store may be re-read (5 s by default) requests fail at once, with no store
    // read and no token call.
    let loads = store.loads.load(Ordering::SeqCst);
    for _ in 0..10 {
        assert!(is_reauthorization(&service.clone().oneshot(get(URL)).await));
    }
    assert_eq!(store.loads.load(Ordering::SeqCst), loads);

    // The other process stores the re-authorised pair (a higher generation).
    let second = TokenManager::builder(token_client(&auth))
        .shared_store(store.clone())
        .build();
    let expires = SystemTime::now() + Duration::from_secs(600);
    let stored = second
        .set_tokens(TokenSet::new(access, refresh, expires))
        .await
        .unwrap();
    assert_eq!(stored, 3);

    // Once the interval has passed, our next request re-reads the store, adopts the pair
    // and succeeds: Ready again, with no token call and no second hook.
    tokio::time::advance(Duration::from_secs(5)).await;
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(first.generation(), Some(3));
    assert_eq!(
        *first.status().borrow(),
        AuthStatus::Active { generation: 3 }
    );
    assert_eq!(auth.calls(), 2, "one refresh, one invalid_grant");
    assert_eq!(events.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_latched_manager_rereads_the_store_at_most_once_per_interval() {
    let auth = FakeAuth::new(600);
    let store = Arc::new(FlakyStore::default());
    let (manager, events) = hooked(&auth, store.clone());
    manager.bearer().await.unwrap();
    auth.reauthorize();
    assert!(matches!(
        manager.refresh_now().await,
        Err(DrChronoError::ReauthorizationRequired { .. })
    ));
    let loads = store.loads.load(Ordering::SeqCst);
    // Ten minutes of a request every 100 ms: one store read per 5 s, 120 in all.
    for _ in 0..6_000 {
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(matches!(
            manager.bearer().await,
            Err(DrChronoError::ReauthorizationRequired { .. })
        ));
    }
    assert_eq!(store.loads.load(Ordering::SeqCst) - loads, 120);
    assert_eq!(events.lock().unwrap().len(), 1);
    assert_eq!(auth.invalid_grants(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_hook_never_fires_when_a_newer_pair_was_stored_before_the_rejection() {
    let auth = FakeAuth::new(600);
    let store = Arc::new(FlakyStore::default());
    let (first, events) = hooked(&auth, store.clone());
    first.bearer().await.unwrap();

    // While our refresh is at the token endpoint (50 ms), another process rotates the pair
    // and stores it: the endpoint rejects our refresh token with invalid_grant.
    let racing = Arc::clone(&store);
    let rotating = Arc::clone(&auth);
    let other = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        let (access, refresh) = rotating.rotate_elsewhere();
        let expires = SystemTime::now() + Duration::from_secs(600);
        let pair = TokenSet::new(access, refresh, expires).with_generation(3);
        racing.save(2, &pair).await.unwrap();
    });
    assert_eq!(first.refresh_now().await.unwrap(), 3);
    other.await.unwrap();
    assert_eq!(auth.invalid_grants(), 1);
    assert!(
        events.lock().unwrap().is_empty(),
        "no needless re-authorisation"
    );
    assert_eq!(
        *first.status().borrow(),
        AuthStatus::Active { generation: 3 }
    );
}

#[tokio::test(start_paused = true)]
async fn the_hook_fires_once_per_rejected_refresh_token() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let store = Arc::new(FlakyStore::default());
    let (first, events) = hooked(&auth, store.clone());
    let service = Retry::new(
        ReplayOnce::default(),
        OAuthRefresh::new(api(&auth, &log, Duration::from_millis(10)), first.clone()),
    );
    service.clone().oneshot(get(URL)).await.unwrap();
    let dead = store.load().await.unwrap().unwrap();
    auth.reauthorize();
    assert!(is_reauthorization(&service.clone().oneshot(get(URL)).await));
    assert_eq!(events.lock().unwrap().len(), 1);

    // A stale process writes its old pair back under a higher generation (as after Redis
    // lost its data): it is adopted, and its refresh token, the one already rejected, is
    // rejected again. Nothing new to tell the application.
    store
        .save(2, &dead.clone().with_generation(3))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(is_reauthorization(&service.clone().oneshot(get(URL)).await));
    assert_eq!(auth.invalid_grants(), 2);
    assert_eq!(events.lock().unwrap().len(), 1);

    // Another re-authorisation elsewhere, stored; then that pair is revoked as well: a new
    // refresh token rejected, so the hook fires again.
    let (access, refresh) = auth.reauthorize();
    let expires = SystemTime::now() + Duration::from_secs(600);
    let pair = TokenSet::new(access, refresh, expires).with_generation(4);
    store.save(3, &pair).await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(first.generation(), Some(4));
    auth.reauthorize();
    assert!(is_reauthorization(&service.clone().oneshot(get(URL)).await));
    let events = events.lock().unwrap();
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].generation, 4);
}

#[tokio::test(start_paused = true)]
async fn an_empty_store_without_tokens_recovers_when_another_process_stores_a_pair() {
    let auth = FakeAuth::new(600);
    let store = Arc::new(FlakyStore::default());
    let fired = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&fired);
    let manager = TokenManager::builder(token_client(&auth))
        .shared_store(store.clone())
        .on_reauthorization(move |_| {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    assert!(matches!(
        manager.bearer().await,
        Err(DrChronoError::ReauthorizationRequired { .. })
    ));
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    let stored = TokenSet::from_refresh_token(FIRST_REFRESH).with_generation(1);
    store.save(0, &stored).await.unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    manager.bearer().await.unwrap();
    assert_eq!(manager.generation(), Some(2));
    assert_eq!(fired.load(Ordering::SeqCst), 1);
}
