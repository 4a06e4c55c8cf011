//! 401s that a new token does not cure (a deactivated user, a proxy that strips
//! `Authorization`): at most one refresh per token generation and per
//! `RefreshTiming::unauthorized_refresh_interval`, never a refresh loop. Fake token endpoint
//! and API (`tower::service_fn`), paused time, a replay-once retry policy as the stack has.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use drchrono_core::{DrChronoError, UnauthorizedKind};
use drchrono_oauth::{
    AuthStatus, MemoryTokenStore, OAuthRefresh, RefreshTiming, TokenManager, TokenSet,
};
use futures::future::join_all;
use support::*;
use tower::ServiceExt;
use tower::retry::Retry;

const URL: &str = "http://api.test/api/patients/1";

/// A manager whose first pair (generation 1) has an access token valid for an hour.
fn manager_with_access_token(auth: &Arc<FakeAuth>, timing: RefreshTiming) -> TokenManager {
    let tokens = TokenSet::new(
        "at-first-SECRETTOKEN",
        FIRST_REFRESH,
        SystemTime::now() + Duration::from_secs(3_600),
    );
    TokenManager::builder(token_client(auth))
        .initial_tokens(tokens)
        .timing(timing)
        .build()
}

/// The 401 as the API sent it: not marked for replay, and typed as one that persisted after
/// a refresh.
fn assert_unmarked_401(result: &Result<http::Response<()>, DrChronoError>) {
    assert!(
        matches!(
            result,
            Err(DrChronoError::Unauthorized {
                kind: UnauthorizedKind::CredentialsNotProvided,
                replay_with_current_token: false,
                persisted_after_refresh: true,
                ..
            })
        ),
        "{result:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_always_401_server_gets_one_refresh_per_interval_not_two_per_request() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let manager = manager_with_access_token(&auth, RefreshTiming::new());
    let service = Retry::new(
        ReplayOnce::default(),
        OAuthRefresh::new(always_401(&log), manager.clone()),
    );

    // The first 401 refreshes once and is replayed; the replay's 401, on the new token,
    // persisted after that refresh: returned as it came. The next four cause nothing.
    for _ in 0..5 {
        assert_unmarked_401(&service.clone().oneshot(get(URL)).await);
    }
    assert_eq!(auth.calls(), 1, "one refresh, not 10");
    assert_eq!(auth.refreshes(), 1);
    assert_eq!(log.calls.load(Ordering::SeqCst), 6, "one replay in all");
    assert_eq!(manager.generation(), Some(2));
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::Active { generation: 2 }
    );

    // Still within the minimum interval (60 s by default): no refresh.
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_unmarked_401(&service.clone().oneshot(get(URL)).await);
    assert_eq!(auth.calls(), 1);

    // A second burst after the interval may refresh once more, and only once.
    tokio::time::advance(Duration::from_secs(2)).await;
    let burst = join_all((0..5).map(|_| service.clone().oneshot(get(URL)))).await;
    burst.iter().for_each(assert_unmarked_401);
    assert_eq!(auth.calls(), 2);
    assert_eq!(manager.generation(), Some(3));
}

#[tokio::test(start_paused = true)]
async fn five_concurrent_requests_to_an_always_401_server_cause_one_refresh() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let manager = manager_with_access_token(&auth, RefreshTiming::new());
    let service = Retry::new(
        ReplayOnce::default(),
        OAuthRefresh::new(always_401(&log), manager.clone()),
    );
    let results = join_all((0..5).map(|_| service.clone().oneshot(get(URL)))).await;
    results.iter().for_each(assert_unmarked_401);
    assert_eq!(auth.calls(), 1);
    assert_eq!(
        log.calls.load(Ordering::SeqCst),
        10,
        "each request replayed once"
    );
}

#[tokio::test(start_paused = true)]
async fn the_minimum_interval_between_refreshes_after_a_401_is_configurable() {
    let auth = FakeAuth::new(3_600);
    let log = Arc::new(ApiLog::default());
    let timing = RefreshTiming::new().unauthorized_refresh_interval(Duration::from_secs(600));
    let manager = manager_with_access_token(&auth, timing);
    let service = OAuthRefresh::new(always_401(&log), manager.clone());

    // Without a retry layer: the first 401 is marked (a refresh happened), the rest not.
    assert!(matches!(
        service.clone().oneshot(get(URL)).await,
        Err(DrChronoError::Unauthorized {
            replay_with_current_token: true,
            persisted_after_refresh: false,
            ..
        })
    ));
    for _ in 0..3 {
        assert_unmarked_401(&service.clone().oneshot(get(URL)).await);
    }
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_unmarked_401(&service.clone().oneshot(get(URL)).await);
    assert_eq!(auth.calls(), 1);

    tokio::time::advance(Duration::from_secs(540)).await;
    assert!(matches!(
        service.clone().oneshot(get(URL)).await,
        Err(DrChronoError::Unauthorized {
            replay_with_current_token: true,
            persisted_after_refresh: false,
            ..
        })
    ));
    assert_eq!(auth.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn within_the_interval_a_pair_another_process_rotated_is_still_adopted_and_replayed() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let store = Arc::new(MemoryTokenStore::new());
    let tokens = TokenSet::new(
        "at-stale-SECRETTOKEN",
        FIRST_REFRESH,
        SystemTime::now() + Duration::from_secs(3_600),
    );
    let first = TokenManager::builder(token_client(&auth))
        .shared_store(store.clone())
        .initial_tokens(tokens)
        .build();
    let service = Retry::new(
        ReplayOnce::default(),
        OAuthRefresh::new(api(&auth, &log, Duration::from_millis(10)), first.clone()),
    );
    // A 401 on a stale token: one refresh, the replay succeeds.
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(auth.refreshes(), 1);

    // Seconds later another process sharing the store rotates the pair, revoking ours.
    tokio::time::advance(Duration::from_secs(5)).await;
    let second = TokenManager::builder(token_client(&auth))
        .shared_store(store.clone())
        .build();
    assert_eq!(second.refresh_now().await.unwrap(), 3);

    // Our next 401 comes within the minimum interval: no refresh of our own, but the
    // store holds the newer pair, which is adopted and the request replayed with it.
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(auth.refreshes(), 2);
    assert_eq!(first.generation(), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_401_after_every_handle_of_the_manager_was_dropped_is_returned_as_it_came() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let manager = manager_with_access_token(&auth, RefreshTiming::new());
    let mut service = OAuthRefresh::new(always_401(&log), manager);

    // The request's future holds no handle of the manager: with the service gone, the
    // manager is too, and the 401 that arrives meanwhile can cause no refresh.
    let future = tower::Service::call(service.ready().await.unwrap(), get(URL));
    drop(service);
    let result = future.await;
    assert!(
        matches!(
            result,
            Err(DrChronoError::Unauthorized {
                replay_with_current_token: false,
                persisted_after_refresh: false,
                ..
            })
        ),
        "{result:?}"
    );
    assert_eq!(auth.calls(), 0, "no refresh for a manager nobody holds");
    assert_eq!(log.calls.load(Ordering::SeqCst), 1);
}

/// The store re-read that replaces a refresh soon after one a 401 caused holds the lease,
/// and gives it back whatever happens inside, a panic included: a lease left held, and
/// renewed, would stop every process's refresh for good. The panic reaches the caller as an
/// unsent `Transport` error, as a panicking refresh does, and the manager goes on working.
#[tokio::test(start_paused = true)]
async fn the_lease_is_released_when_the_store_panics_in_the_re_read_after_a_401() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let lease = Arc::new(CountingLease::default());
    // Load 1: the first load; 2: before the refresh the first 401 causes; 3: the re-read
    // the replay's 401 causes, with the lease held.
    let store = Arc::new(FlakyStore {
        panic_on_load: AtomicUsize::new(3),
        ..FlakyStore::default()
    });
    let tokens = TokenSet::new(
        "at-first-SECRETTOKEN",
        FIRST_REFRESH,
        SystemTime::now() + Duration::from_secs(3_600),
    );
    let manager = TokenManager::builder(token_client(&auth))
        .shared_store(store.clone())
        .lease(lease.clone())
        .initial_tokens(tokens)
        .build();
    let service = Retry::new(
        ReplayOnce::default(),
        OAuthRefresh::new(always_401(&log), manager.clone()),
    );

    match service.clone().oneshot(get(URL)).await {
        Err(DrChronoError::Transport {
            not_sent: true,
            source,
            ..
        }) => {
            let join = source.downcast_ref::<tokio::task::JoinError>().unwrap();
            assert!(join.is_panic(), "{join:?}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(store.loads.load(Ordering::SeqCst), 3);
    assert_eq!(auth.calls(), 1);
    assert_eq!(log.calls.load(Ordering::SeqCst), 2, "one replay");
    assert_eq!(lease.acquired.load(Ordering::SeqCst), 2);
    assert_eq!(lease.released.load(Ordering::SeqCst), 2);

    // The manager goes on: after the interval, a 401 refreshes once more, with the lease.
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_unmarked_401(&service.clone().oneshot(get(URL)).await);
    assert_eq!(auth.calls(), 2);
    assert_eq!(manager.generation(), Some(3));
    assert_eq!(
        lease.acquired.load(Ordering::SeqCst),
        lease.released.load(Ordering::SeqCst)
    );
}
