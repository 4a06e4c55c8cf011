//! Failures against a fake token endpoint and API (`tower::service_fn`), in paused time:
//! invalid_grant, invalid_client, transient errors, store failures, malformed grants.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use drchrono_core::DrChronoError;
use drchrono_oauth::{
    AuthStatus, MalformedTokenResponse, MemoryTokenStore, OAuthRefresh, ReauthorizationEvent,
    ReauthorizationReason, RefreshFailed, RefreshTiming, StoreError, TokenManager, TokenSet,
    TokenStore,
};
use futures::FutureExt;
use futures::future::{BoxFuture, join_all};
use secrecy::ExposeSecret;
use support::*;
use tokio::time::Instant;
use tower::ServiceExt;
use tower::retry::Retry;

const URL: &str = "http://api.test/api/patients/1";

/// The error a request gets when the store failed: unsent, with the `StoreError` source.
#[track_caller]
fn expect_unsent_store_error<T: std::fmt::Debug>(result: Result<T, DrChronoError>) {
    match result {
        Err(DrChronoError::Transport {
            not_sent: true,
            source,
            ..
        }) => assert!(source.downcast_ref::<StoreError>().is_some()),
        other => panic!("unexpected {other:?}"),
    }
}

/// The fakes (600 s grants), [`flaky_store_from_first_refresh`] and a manager on it.
async fn on_a_flaky_store() -> (Arc<FakeAuth>, Arc<ApiLog>, Arc<FlakyStore>, TokenManager) {
    let auth = FakeAuth::new(600);
    let store = flaky_store_from_first_refresh().await;
    let manager = manager(&auth, store.clone());
    (auth, Arc::new(ApiLog::default()), store, manager)
}

/// A store that can be made to fail, holding `FIRST_REFRESH` as generation 1.
async fn flaky_store_from_first_refresh() -> Arc<FlakyStore> {
    let store = Arc::new(FlakyStore::default());
    store
        .inner
        .save(
            0,
            &TokenSet::from_refresh_token(FIRST_REFRESH).with_generation(1),
        )
        .await
        .unwrap();
    store
}

#[tokio::test(start_paused = true)]
async fn invalid_grant_stops_refreshing_until_set_tokens() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let events: Arc<Mutex<Vec<ReauthorizationEvent>>> = Arc::default();
    let sink = Arc::clone(&events);
    let manager = TokenManager::builder(token_client(&auth))
        .initial_tokens(TokenSet::from_refresh_token(FIRST_REFRESH))
        .on_reauthorization(move |event| sink.lock().unwrap().push(event.clone()))
        .build();
    let service = Retry::new(
        ReplayOnce::default(),
        OAuthRefresh::new(api(&auth, &log, Duration::from_millis(10)), manager.clone()),
    );
    service.clone().oneshot(get(URL)).await.unwrap();
    let (access, refresh) = auth.reauthorize();

    let results = join_all((0..100).map(|_| service.clone().oneshot(get(URL)))).await;
    for result in &results {
        assert!(
            matches!(result, Err(DrChronoError::ReauthorizationRequired { .. })),
            "{result:?}"
        );
    }
    assert_eq!(auth.invalid_grants(), 1);
    let calls = auth.calls();
    assert_eq!(calls, 2);
    {
        let events = events.lock().unwrap();
        assert_eq!(events.len(), 1, "the hook fires once");
        assert_eq!(events[0].reason, ReauthorizationReason::InvalidGrant);
        assert_eq!(events[0].generation, 2);
    }
    assert!(matches!(
        *manager.status().borrow(),
        AuthStatus::ReauthorizationRequired {
            reason: ReauthorizationReason::InvalidGrant,
            ..
        }
    ));
    // Later requests fail the same way, without any token call.
    tokio::time::advance(Duration::from_secs(3_600)).await;
    assert!(matches!(
        service.clone().oneshot(get(URL)).await,
        Err(DrChronoError::ReauthorizationRequired { .. })
    ));
    assert!(matches!(
        manager.refresh_now().await,
        Err(DrChronoError::ReauthorizationRequired { .. })
    ));
    assert_eq!(auth.calls(), calls);

    let expires = SystemTime::now() + Duration::from_secs(600);
    let generation = manager
        .set_tokens(TokenSet::new(access, refresh, expires))
        .await
        .unwrap();
    assert_eq!(generation, 3);
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::Active { generation: 3 }
    );
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(auth.calls(), calls);
    assert_eq!(events.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn invalid_client_is_typed_and_latched() {
    let auth = FakeAuth::new(600);
    let fired = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&fired);
    auth.script([(
        401,
        r#"{"error":"invalid_client","error_description":"bad"}"#,
    )]);
    let manager = TokenManager::builder(token_client(&auth))
        .initial_tokens(TokenSet::from_refresh_token(FIRST_REFRESH))
        .on_reauthorization(move |event| {
            assert_eq!(event.reason, ReauthorizationReason::InvalidClient);
            count.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    for _ in 0..3 {
        match manager.bearer().await {
            Err(DrChronoError::InvalidClient { description, .. }) => {
                assert_eq!(description.as_deref(), Some("bad"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(auth.calls(), 1);
    assert_eq!(fired.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn a_503_twice_then_200_is_retried_with_backoff() {
    let auth = FakeAuth::new(600);
    auth.script([(503, "unavailable"), (503, "unavailable")]);
    let manager = manager(&auth, Arc::new(MemoryTokenStore::new()));
    let start = Instant::now();
    manager.bearer().await.unwrap();
    assert_eq!(auth.calls(), 3);
    assert_eq!(auth.refreshes(), 1);
    // 1 s, then 2 s of backoff, plus the fake's 50 ms per call.
    assert_eq!(start.elapsed(), Duration::from_millis(3_150));
}

#[tokio::test(start_paused = true)]
async fn a_refresh_that_keeps_failing_is_shared_by_its_waiters() {
    let auth = FakeAuth::new(600);
    auth.script([(503, ""), (502, ""), (504, ""), (500, "")]);
    let manager = manager(&auth, Arc::new(MemoryTokenStore::new()));
    let results = join_all((0..30).map(|_| manager.bearer())).await;
    for result in results {
        match result {
            Err(DrChronoError::Transport {
                not_sent: true,
                source,
                ..
            }) => {
                let failed = source.downcast_ref::<RefreshFailed>().unwrap();
                assert!(matches!(failed.error(), DrChronoError::Server { .. }));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(auth.calls(), 4, "1 attempt + 3 retries, for all 30 callers");
    // The next caller tries again, and succeeds.
    manager.bearer().await.unwrap();
    assert_eq!(auth.refreshes(), 1);
}

/// A manager with `timing` (and no backoff between a refresh's attempts) whose first grant,
/// 600 s long, was used once 545 s ago: its proactive refresh is due. Returns the fakes, the
/// manager, and a request through an `OAuthRefresh` on it that must succeed.
async fn past_the_refresh_point(
    timing: RefreshTiming,
) -> (
    Arc<FakeAuth>,
    Arc<ApiLog>,
    TokenManager,
    impl Fn() -> BoxFuture<'static, ()>,
) {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let manager =
        TokenManager::builder(token_client(&auth).backoff(drchrono_oauth::RefreshBackoff::none()))
            .initial_tokens(TokenSet::from_refresh_token(FIRST_REFRESH))
            .timing(timing)
            .build();
    let service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());
    let send = move || {
        let request = service.clone().oneshot(get(URL));
        async move {
            request.await.unwrap();
        }
        .boxed()
    };
    send().await;
    tokio::time::advance(Duration::from_secs(545)).await;
    (auth, log, manager, send)
}

#[tokio::test(start_paused = true)]
async fn a_failed_proactive_refresh_keeps_using_the_valid_token() {
    let timing = RefreshTiming::new().retry_interval(Duration::from_secs(20));
    let (auth, _log, manager, send) = past_the_refresh_point(timing).await;

    auth.script([(503, "")]);
    send().await;
    assert_eq!(auth.calls(), 2);
    send().await;
    assert_eq!(auth.calls(), 2, "no new attempt within the retry interval");
    tokio::time::advance(Duration::from_secs(21)).await;
    send().await;
    assert_eq!(auth.calls(), 3);
    assert_eq!(manager.generation(), Some(3));
}

#[tokio::test(start_paused = true)]
async fn a_zero_retry_interval_still_waits_a_second_between_failed_refreshes() {
    let timing = RefreshTiming::new().retry_interval(Duration::ZERO);
    let (auth, log, manager, send) = past_the_refresh_point(timing).await;

    auth.script([(503, ""), (503, "")]);
    for _ in 0..50 {
        send().await;
    }
    assert_eq!(auth.calls(), 2, "one failed refresh, not one per request");
    tokio::time::advance(Duration::from_millis(1001)).await;
    send().await;
    assert_eq!(auth.calls(), 3, "the second failed refresh");
    tokio::time::advance(Duration::from_millis(1001)).await;
    send().await;
    assert_eq!(auth.calls(), 4);
    assert_eq!(manager.generation(), Some(3));
    assert_eq!(log.calls.load(Ordering::SeqCst), 53);
}

#[tokio::test(start_paused = true)]
async fn a_margin_of_the_whole_lifetime_still_sends_each_token_for_half_its_life() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let timing = RefreshTiming::new()
        .max_margin(Duration::from_secs(3600))
        .percent_of_lifetime(100);
    let manager = TokenManager::builder(token_client(&auth))
        .initial_tokens(TokenSet::from_refresh_token(FIRST_REFRESH))
        .timing(timing)
        .build();
    let service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());
    for _ in 0..30 {
        service.clone().oneshot(get(URL)).await.unwrap();
        tokio::time::advance(Duration::from_secs(9)).await;
    }
    // 270 s of one request each 9 s: the first grant (at 0 s) is due at 300 s.
    assert_eq!(auth.refreshes(), 1, "a token is sent for half its lifetime");
    tokio::time::advance(Duration::from_secs(31)).await;
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(auth.refreshes(), 2);
    assert_eq!(log.calls.load(Ordering::SeqCst), 31);
}

#[tokio::test(start_paused = true)]
async fn a_failed_save_surfaces_and_keeps_the_new_pair_for_a_later_save() {
    let (auth, log, store, manager) = on_a_flaky_store().await;
    let service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());

    store.fail_saves.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        expect_unsent_store_error(service.clone().oneshot(get(URL)).await);
    }
    assert_eq!(
        log.calls.load(Ordering::SeqCst),
        0,
        "the unsaved token is never used"
    );
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::PersistPending { generation: 2 }
    );
    assert_eq!(auth.refreshes(), 1);

    store.fail_saves.store(false, Ordering::SeqCst);
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(
        auth.refreshes(),
        1,
        "the pending pair was saved, not refreshed again"
    );
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.generation, 2);
    assert_eq!(
        stored.refresh_token.expose_secret(),
        auth.current_refresh_token()
    );
}

#[tokio::test(start_paused = true)]
async fn a_malformed_grant_is_a_typed_error() {
    let auth = FakeAuth::new(600);
    auth.script([(200, r#"{"token_type":"Bearer"}"#)]);
    let manager = manager(&auth, Arc::new(MemoryTokenStore::new()));
    match manager.bearer().await {
        Err(DrChronoError::Transport { source, .. }) => {
            let failed = source.downcast_ref::<RefreshFailed>().unwrap();
            match failed.error() {
                DrChronoError::Transport { source, .. } => assert_eq!(
                    source.downcast_ref::<MalformedTokenResponse>(),
                    Some(&MalformedTokenResponse::NotJson)
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(auth.calls(), 1, "not retried");
}

#[tokio::test(start_paused = true)]
async fn an_empty_store_without_initial_tokens_requires_authorisation() {
    let auth = FakeAuth::new(600);
    let fired = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&fired);
    let manager = TokenManager::builder(token_client(&auth))
        .on_reauthorization(move |event| {
            assert_eq!(event.reason, ReauthorizationReason::NoTokens);
            count.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    for _ in 0..2 {
        assert!(matches!(
            manager.bearer().await,
            Err(DrChronoError::ReauthorizationRequired { .. })
        ));
    }
    assert_eq!(fired.load(Ordering::SeqCst), 1);
    assert_eq!(auth.calls(), 0);
}

/// A refresh never spends the refresh token blind: the shared store may hold a pair another
/// process rotated to (after a Redis failover, its connection breaks for a moment). A store
/// that cannot be read twice, 100 ms apart, fails the request unsent; the next one, with the
/// store back, refreshes.
#[tokio::test(start_paused = true)]
async fn a_refresh_that_cannot_read_the_store_is_given_up_not_done_blind() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let store = Arc::new(FlakyStore::default());
    let manager = manager(&auth, store.clone());
    let service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(auth.refreshes(), 1);

    // The pair expires; the store cannot be read when the refresh is due.
    tokio::time::advance(Duration::from_secs(600)).await;
    store.fail_loads.store(2, Ordering::SeqCst);
    expect_unsent_store_error(service.clone().oneshot(get(URL)).await);
    assert_eq!(
        auth.refreshes(),
        1,
        "no refresh without a look at the store"
    );

    // Readable again after one failure: the refresh goes ahead.
    store.fail_loads.store(1, Ordering::SeqCst);
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(auth.refreshes(), 2);
    assert_eq!(auth.invalid_grants(), 0);
}

/// A refresh answered `invalid_grant` looks at the store for a pair another process rotated
/// to; a store that cannot be read then (twice, 100 ms apart: a Redis failover's broken
/// connection) fails the request unsent instead of calling for re-authorisation: the grant
/// was not revoked, the pair is somewhere the process cannot see yet.
#[tokio::test(start_paused = true)]
async fn an_invalid_grant_with_an_unreadable_store_is_not_a_reauthorisation() {
    let auth = FakeAuth::new(600);
    let log = Arc::new(ApiLog::default());
    let store = Arc::new(FlakyStore::default());
    let fired = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&fired);
    let manager = TokenManager::builder(token_client(&auth))
        .shared_store(store.clone())
        .initial_tokens(TokenSet::from_refresh_token(FIRST_REFRESH))
        .on_reauthorization(move |_event| {
            count.fetch_add(1, Ordering::SeqCst);
        })
        .build();
    let service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());
    service.clone().oneshot(get(URL)).await.unwrap();

    // The pair expires; another process rotates it and has not stored its pair yet.
    tokio::time::advance(Duration::from_secs(600)).await;
    auth.rotate_elsewhere();
    // The look before the refresh reads the store; the look after `invalid_grant` cannot.
    store.skip_loads.store(1, Ordering::SeqCst);
    store.fail_loads.store(2, Ordering::SeqCst);
    expect_unsent_store_error(service.clone().oneshot(get(URL)).await);
    assert_eq!(auth.invalid_grants(), 1);
    assert_eq!(
        fired.load(Ordering::SeqCst),
        0,
        "no re-authorisation called for"
    );
    assert!(!matches!(
        *manager.status().borrow(),
        drchrono_oauth::AuthStatus::ReauthorizationRequired { .. }
    ));
}

/// A grant whose `expires_in` is past anything `SystemTime` can add (a misbehaving server)
/// has still rotated the pair: it is kept (its lifetime taken as a year), not lost to an
/// overflow that would leave only the dead refresh token.
#[tokio::test(start_paused = true)]
async fn a_grant_with_an_absurd_lifetime_is_kept() {
    let auth = FakeAuth::new(600);
    auth.script([(
        200,
        r#"{"access_token":"new-access","refresh_token":"new-refresh","expires_in":18446744073709551615,"token_type":"Bearer"}"#,
    )]);
    let store = Arc::new(MemoryTokenStore::new());
    let manager = manager(&auth, store.clone());
    manager.bearer().await.unwrap();
    let stored = store.load().await.unwrap().expect("the pair is stored");
    assert_eq!(stored.refresh_token.expose_secret(), "new-refresh");
    let year = Duration::from_secs(365 * 24 * 3600);
    assert!(stored.expires_at <= SystemTime::now() + year + Duration::from_secs(1));
}

/// A grant whose `expires_in` is a string (`"7200"`) has rotated the pair like any other:
/// the new refresh token is persisted and spent by the next refresh. Refused as malformed,
/// it was lost, and the next refresh spent the old, dead one (`invalid_grant`: the practice
/// had to re-authorise).
#[tokio::test(start_paused = true)]
async fn a_grant_with_a_string_expires_in_keeps_the_rotated_refresh_token() {
    let captured = Captured::default();
    let _guard = captured.install();
    let auth = FakeAuth::new(600);
    auth.send_expires_in(serde_json::json!("7200"));
    let store = Arc::new(MemoryTokenStore::new());
    let manager = manager(&auth, store.clone());

    manager.bearer().await.unwrap();
    let (stored, rotated) = stored_rotation(&auth, &store).await;
    let lifetime = stored
        .expires_at
        .duration_since(stored.issued_at.unwrap())
        .unwrap();
    assert_eq!(lifetime, Duration::from_secs(7_200), "read, not assumed");

    assert_eq!(manager.refresh_now().await.unwrap(), 3);
    assert_eq!(
        auth.received_refresh_tokens(),
        [FIRST_REFRESH.to_owned(), rotated.clone()],
        "the next refresh spends the rotated token"
    );
    assert_eq!(auth.invalid_grants(), 0);
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.generation, 3);
    assert_eq!(
        stored.refresh_token.expose_secret(),
        auth.current_refresh_token()
    );
    assert_ne!(stored.refresh_token.expose_secret(), rotated);
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::Active { generation: 3 }
    );

    // One warning per odd grant, naming the field, never a token.
    let text = captured.text();
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("odd_fields")).collect();
    assert_eq!(warnings.len(), 2, "{text}");
    for warning in warnings {
        assert!(warning.contains(" WARN "), "{warning}");
        assert!(
            warning.contains("expires_in: string, read as whole seconds"),
            "{warning}"
        );
    }
    assert!(!text.contains("SECRETTOKEN"), "{text}");
}

/// A 2xx answer whose access token cannot be used (`fields` over a regular grant's) has
/// still rotated the pair: the request fails with `reason` (typed, unsent), the rotated
/// refresh token is stored in a pair without an access token, and the next request refreshes
/// with it, not with the dead one (`invalid_grant`: the practice had to re-authorise).
async fn an_unusable_access_token_keeps_the_rotated_refresh_token(
    fields: serde_json::Value,
    reason: MalformedTokenResponse,
) {
    let captured = Captured::default();
    let _guard = captured.install();
    let auth = FakeAuth::new(600);
    auth.garble_next_grant(fields);
    let log = Arc::new(ApiLog::default());
    let store = Arc::new(MemoryTokenStore::new());
    let manager = manager(&auth, store.clone());
    let service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());

    match service.clone().oneshot(get(URL)).await {
        Err(DrChronoError::Transport {
            not_sent: true,
            source,
            ..
        }) => {
            let failed = source.downcast_ref::<RefreshFailed>().unwrap();
            match failed.error() {
                DrChronoError::Transport {
                    not_sent: false,
                    source,
                    ..
                } => assert_eq!(
                    source.downcast_ref::<MalformedTokenResponse>(),
                    Some(&reason)
                ),
                other => panic!("unexpected {other:?}"),
            }
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(log.calls.load(Ordering::SeqCst), 0, "nothing sent unusable");
    let (stored, rotated) = stored_rotation(&auth, &store).await;
    assert!(
        stored.access_token.expose_secret().is_empty(),
        "no access token"
    );
    assert!(
        stored.expires_at <= SystemTime::now(),
        "refreshed before use"
    );
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::Active { generation: 2 }
    );

    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(
        auth.received_refresh_tokens(),
        [FIRST_REFRESH.to_owned(), rotated.clone()],
        "the next refresh spends the rotated token"
    );
    assert_eq!(auth.invalid_grants(), 0);
    assert_eq!(log.calls.load(Ordering::SeqCst), 1);
    assert_eq!(log.unauthorized.load(Ordering::SeqCst), 0);
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.generation, 3);
    assert_eq!(
        stored.refresh_token.expose_secret(),
        auth.current_refresh_token()
    );
    assert!(!stored.access_token.expose_secret().is_empty());
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::Active { generation: 3 }
    );

    let text = captured.text();
    assert!(
        text.contains("keeping the rotated refresh token for the next refresh"),
        "{text}"
    );
    assert!(!text.contains("SECRETTOKEN"), "{text}");
}

#[tokio::test(start_paused = true)]
async fn a_grant_with_a_non_bearer_token_type_keeps_the_rotated_refresh_token() {
    an_unusable_access_token_keeps_the_rotated_refresh_token(
        serde_json::json!({"token_type": "mac"}),
        MalformedTokenResponse::UnsupportedTokenType("mac".into()),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_grant_with_an_empty_access_token_keeps_the_rotated_refresh_token() {
    an_unusable_access_token_keeps_the_rotated_refresh_token(
        serde_json::json!({"access_token": ""}),
        MalformedTokenResponse::InvalidAccessToken,
    )
    .await;
}

/// The rotated refresh token of an answer without a usable access token, when the store
/// cannot save it, stays in memory as pending: no refresh spends it before it is saved,
/// and the first refresh after the save does.
#[tokio::test(start_paused = true)]
async fn a_rotated_refresh_token_that_cannot_be_saved_is_saved_before_it_is_spent() {
    let (auth, log, store, manager) = on_a_flaky_store().await;
    auth.garble_next_grant(serde_json::json!({"access_token": "not header safe"}));
    let service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());

    store.fail_saves.store(true, Ordering::SeqCst);
    match service.clone().oneshot(get(URL)).await {
        Err(DrChronoError::Transport {
            not_sent: true,
            source,
            ..
        }) => {
            let failed = source.downcast_ref::<RefreshFailed>().unwrap();
            assert!(matches!(
                failed.error(),
                DrChronoError::Transport { source, .. }
                    if source.downcast_ref::<MalformedTokenResponse>()
                        == Some(&MalformedTokenResponse::InvalidAccessToken)
            ));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::PersistPending { generation: 2 }
    );
    expect_unsent_store_error(service.clone().oneshot(get(URL)).await);
    assert_eq!(auth.calls(), 1, "not spent before it is saved");

    store.fail_saves.store(false, Ordering::SeqCst);
    service.clone().oneshot(get(URL)).await.unwrap();
    let rotated = "rt-1-SECRETTOKEN".to_owned();
    assert_eq!(
        auth.received_refresh_tokens(),
        [FIRST_REFRESH.to_owned(), rotated]
    );
    assert_eq!(auth.invalid_grants(), 0);
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.generation, 3);
    assert_eq!(
        stored.refresh_token.expose_secret(),
        auth.current_refresh_token()
    );
}

/// The lease is given back even when the refresh panics (here the application's
/// re-authorisation hook): a lease left held, and renewed, would stop every process's
/// refresh for good.
#[tokio::test(start_paused = true)]
async fn the_lease_is_released_when_the_refresh_panics() {
    let auth = FakeAuth::new(600);
    auth.rotate_elsewhere();
    let lease = Arc::new(CountingLease::default());
    let manager = TokenManager::builder(token_client(&auth))
        .initial_tokens(TokenSet::from_refresh_token(FIRST_REFRESH))
        .lease(lease.clone())
        .on_reauthorization(|_event| panic!("the application's hook failed"))
        .build();
    // The refresh runs in a task of its own: its panic reaches the caller as an error.
    assert!(manager.bearer().await.is_err());
    assert_eq!(lease.acquired.load(Ordering::SeqCst), 1);
    assert_eq!(lease.released.load(Ordering::SeqCst), 1);
}

/// The refresh token after the first refresh (not the first one), and the pair the store
/// holds, which carries it as generation 2.
async fn stored_rotation(auth: &FakeAuth, store: &MemoryTokenStore) -> (TokenSet, String) {
    let rotated = auth.current_refresh_token();
    assert_ne!(rotated, FIRST_REFRESH);
    let stored = store
        .load()
        .await
        .unwrap()
        .expect("the rotated refresh token is stored");
    assert_eq!(stored.generation, 2);
    assert_eq!(stored.refresh_token.expose_secret(), rotated);
    (stored, rotated)
}

/// Where the short-grant tests start: their events captured, a token endpoint that grants
/// 10 s tokens, and a manager with a 30 s expiry skew, starting from `FIRST_REFRESH` alone,
/// on a store of its own.
///
/// All capture: a test that met the short grant's `error` with no subscriber could leave
/// its callsite disabled for another, which runs alongside and counts it.
struct ShortGrant<S = MemoryTokenStore> {
    captured: Captured,
    _guard: tracing::subscriber::DefaultGuard,
    auth: Arc<FakeAuth>,
    log: Arc<ApiLog>,
    store: Arc<S>,
    manager: TokenManager,
}

fn short_grant() -> ShortGrant {
    short_grant_on(Arc::new(MemoryTokenStore::new()))
}

/// [`short_grant`] on `store`.
fn short_grant_on<S: TokenStore>(store: Arc<S>) -> ShortGrant<S> {
    let captured = Captured::default();
    let _guard = captured.install();
    let auth = FakeAuth::new(600);
    auth.send_expires_in(serde_json::json!(10));
    let manager = TokenManager::builder(token_client(&auth))
        .shared_store(store.clone())
        .initial_tokens(TokenSet::from_refresh_token(FIRST_REFRESH))
        .timing(RefreshTiming::new().expiry_skew(Duration::from_secs(30)))
        .build();
    ShortGrant {
        captured,
        _guard,
        auth,
        log: Arc::new(ApiLog::default()),
        store,
        manager,
    }
}

/// The error of a request failed by a grant within the expiry skew (`short_grant`): typed,
/// unsent, naming the lifetime granted and the skew configured, never a token.
fn expect_short_grant<T: std::fmt::Debug>(result: Result<T, DrChronoError>) {
    match result {
        Err(DrChronoError::Transport {
            not_sent: true,
            source,
            ..
        }) => {
            let failed = source.downcast_ref::<RefreshFailed>().unwrap();
            let DrChronoError::Transport { source, .. } = failed.error() else {
                panic!("unexpected {:?}", failed.error());
            };
            let shown = source.to_string();
            assert!(shown.contains("for 10s"), "{shown}");
            assert!(shown.contains("expiry skew of 30s"), "{shown}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// During the hold after a grant within the expiry skew, the store is re-read every
/// `store_recheck_interval` (5 s): a newer pair another process stored meanwhile is
/// adopted, which ends the hold, with no refresh.
#[tokio::test(start_paused = true)]
async fn a_newer_stored_pair_ends_the_hold_after_a_grant_within_the_skew() {
    let ShortGrant {
        captured,
        _guard,
        auth,
        log,
        store,
        manager,
    } = short_grant();
    let service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());
    assert!(service.clone().oneshot(get(URL)).await.is_err(), "held");
    assert_eq!(manager.generation(), Some(2));

    // Another process re-authorised and stored its pair.
    let (access, refresh) = auth.reauthorize();
    let expires = SystemTime::now() + Duration::from_secs(600);
    let theirs = TokenSet::new(access, refresh, expires).with_generation(3);
    store.save(2, &theirs).await.unwrap();
    tokio::time::advance(Duration::from_secs(4)).await;
    assert!(
        service.clone().oneshot(get(URL)).await.is_err(),
        "not re-read yet"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    service
        .clone()
        .oneshot(get(URL))
        .await
        .expect("the stored pair, adopted");
    assert_eq!(manager.generation(), Some(3));
    assert_eq!(auth.calls(), 1, "adopted, not refreshed");
    assert_eq!(log.calls.load(Ordering::SeqCst), 1);
    let text = captured.text();
    assert!(
        text.contains("a newer token pair in the store ends the hold on refreshes"),
        "{text}"
    );
}

/// A grant whose token lives no longer than the expiry skew (`expires_in: 10` with a 30 s
/// skew: a misbehaving server, or a skew set too large) has rotated the pair: it is kept and
/// persisted, but its token is never sent. The requests waiting on it fail (typed, unsent),
/// later ones too, with no refresh, for the retry interval: not one rotation per request.
/// Once the hold passes, the next refresh spends the rotated refresh token.
#[tokio::test(start_paused = true)]
async fn a_grant_within_the_expiry_skew_is_kept_never_sent_and_not_refreshed_per_request() {
    let ShortGrant {
        captured,
        _guard,
        auth,
        log,
        store,
        manager,
    } = short_grant();
    let sent: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = Arc::clone(&sent);
    let api = api(&auth, &log, Duration::ZERO).map_request(move |request: http::Request<_>| {
        let header = request.headers().get(http::header::AUTHORIZATION);
        let header = header.and_then(|h| h.to_str().ok()).unwrap_or_default();
        seen.lock().unwrap().push(header.to_owned());
        request
    });
    let service = Retry::new(
        ReplayOnce::default(),
        OAuthRefresh::new(api, manager.clone()),
    );
    let results = join_all((0..50).map(|_| service.clone().oneshot(get(URL)))).await;
    for result in results {
        expect_short_grant(result);
    }
    assert_eq!(auth.calls(), 1, "one refresh for 50 concurrent requests");
    // Later requests, and `refresh_now`, fail the same way with no refresh until the
    // retry interval (30 s) has passed.
    for _ in 0..3 {
        tokio::time::advance(Duration::from_secs(9)).await;
        expect_short_grant(service.clone().oneshot(get(URL)).await);
        expect_short_grant(manager.bearer().await);
    }
    assert!(manager.refresh_now().await.is_err());
    assert_eq!(auth.calls(), 1, "no refresh within the hold");
    assert!(
        sent.lock().unwrap().is_empty(),
        "the short-lived token is never sent"
    );
    assert_eq!(log.calls.load(Ordering::SeqCst), 0);

    // The rotated pair is persisted: its refresh token is the only live one.
    let (_, rotated) = stored_rotation(&auth, &store).await;

    // The server behaves again; once the hold has passed, the next refresh spends the rotated
    // refresh token.
    auth.send_expires_in(serde_json::json!(600));
    tokio::time::advance(Duration::from_secs(4)).await;
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(
        auth.received_refresh_tokens(),
        [FIRST_REFRESH.to_owned(), rotated],
        "the next refresh spends the rotated token"
    );
    assert_eq!(auth.invalid_grants(), 0);
    assert_eq!(auth.calls(), 2);
    let sent = sent.lock().unwrap().clone();
    assert_eq!(sent, ["Bearer at-2-SECRETTOKEN".to_owned()]);
    assert_eq!(log.unauthorized.load(Ordering::SeqCst), 0);
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::Active { generation: 3 }
    );

    // Logged once per short grant, with the lifetime and the skew, never a token.
    let text = captured.text();
    let errors: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("no longer than the expiry skew"))
        .collect();
    assert_eq!(errors.len(), 1, "{text}");
    assert!(errors[0].contains(" ERROR "), "{}", errors[0]);
    assert!(errors[0].contains("expires_in=10s"), "{}", errors[0]);
    assert!(errors[0].contains("expiry_skew=30s"), "{}", errors[0]);
    assert!(!text.contains("SECRETTOKEN"), "{text}");
}

/// A grant within the expiry skew holds refreshes back for the retry interval whether or
/// not its save succeeded: here the store fails the save (the pair is kept as pending) and
/// recovers at once; the next request saves the pair and fails held, with no second
/// rotation. Before, a failed save skipped the hold and the next request rotated the pair
/// again (with a store failing every other save, one rotation per two requests).
#[tokio::test(start_paused = true)]
async fn a_grant_within_the_skew_whose_save_failed_still_holds_refreshes_back() {
    let ShortGrant {
        captured,
        _guard,
        auth,
        log,
        store,
        manager,
    } = short_grant_on(flaky_store_from_first_refresh().await);
    let service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());

    store.fail_saves.store(true, Ordering::SeqCst);
    expect_unsent_store_error(service.clone().oneshot(get(URL)).await);
    assert_eq!(auth.calls(), 1);
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::PersistPending { generation: 2 }
    );

    store.fail_saves.store(false, Ordering::SeqCst);
    expect_short_grant(service.clone().oneshot(get(URL)).await);
    assert_eq!(auth.calls(), 1, "held: no second rotation");
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.generation, 2, "the pending pair was saved");
    let rotated = auth.current_refresh_token();
    assert_eq!(stored.refresh_token.expose_secret(), rotated);
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::Active { generation: 2 }
    );
    tokio::time::advance(Duration::from_secs(29)).await;
    expect_short_grant(manager.bearer().await);
    assert_eq!(auth.calls(), 1, "no refresh within the hold");

    // Once the hold has passed, the next refresh spends the rotated refresh token.
    auth.send_expires_in(serde_json::json!(600));
    tokio::time::advance(Duration::from_secs(2)).await;
    service.clone().oneshot(get(URL)).await.unwrap();
    assert_eq!(
        auth.received_refresh_tokens(),
        [FIRST_REFRESH.to_owned(), rotated]
    );
    assert_eq!(auth.invalid_grants(), 0);
    assert_eq!(
        log.calls.load(Ordering::SeqCst),
        1,
        "the short token never sent"
    );
    assert!(!captured.text().contains("SECRETTOKEN"));
}

/// `set_tokens` overwrites whatever the store holds, and still does when its save failed
/// and a later request saves the pending pair. Here the store holds the old family at
/// generation 5 (the one the re-authorisation revoked) and the manager has not loaded it:
/// the new pair is saved above it and used; before, the save met the stored generation 5,
/// adopted the old pair and dropped the new one (`invalid_grant` at the next refresh: the
/// user had to re-authorise again).
#[tokio::test(start_paused = true)]
async fn a_set_tokens_pair_whose_save_failed_still_overwrites_the_store() {
    let auth = FakeAuth::new(600);
    let store = Arc::new(FlakyStore::default());
    let expires = SystemTime::now() + Duration::from_secs(3_600);
    let old = TokenSet::new("at-old-SECRETTOKEN", "rt-old-SECRETTOKEN", expires).with_generation(5);
    store.inner.save(0, &old).await.unwrap();
    let manager = manager(&auth, store.clone());
    let (access, refresh) = auth.reauthorize();

    store.fail_saves.store(true, Ordering::SeqCst);
    let result = manager
        .set_tokens(TokenSet::new(access.clone(), refresh.clone(), expires))
        .await;
    assert!(
        matches!(result, Err(StoreError::Backend { .. })),
        "{result:?}"
    );
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::PersistPending { generation: 1 }
    );

    store.fail_saves.store(false, Ordering::SeqCst);
    let bearer = manager.bearer().await.expect("the new pair, saved");
    assert_eq!(
        bearer.header().to_str().unwrap(),
        format!("Bearer {access}")
    );
    assert!(auth.is_valid(bearer.header().to_str().unwrap()));
    let stored = store.load().await.unwrap().unwrap();
    assert!(stored.generation > 5, "{stored:?}");
    assert_eq!(stored.refresh_token.expose_secret(), refresh);
    assert_eq!(stored.access_token.expose_secret(), access);
    assert_eq!(bearer.generation(), stored.generation);
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::Active {
            generation: stored.generation
        }
    );
    assert_eq!(auth.calls(), 0);
}

/// The other side of the rule above: a pending pair from a refresh (not from `set_tokens`)
/// adopts a newer pair another process stored meanwhile (here a re-authorisation, which
/// revoked the refreshed pair) instead of overwriting it.
#[tokio::test(start_paused = true)]
async fn a_refreshed_pair_whose_save_failed_adopts_a_newer_stored_pair() {
    let (auth, log, store, manager) = on_a_flaky_store().await;
    let service = OAuthRefresh::new(api(&auth, &log, Duration::ZERO), manager.clone());

    store.fail_saves.store(true, Ordering::SeqCst);
    assert!(service.clone().oneshot(get(URL)).await.is_err());
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::PersistPending { generation: 2 }
    );

    // Another process re-authorised and stored its pair.
    let (access, refresh) = auth.reauthorize();
    let expires = SystemTime::now() + Duration::from_secs(600);
    let theirs = TokenSet::new(access, refresh.clone(), expires).with_generation(2);
    store.inner.save(1, &theirs).await.unwrap();

    store.fail_saves.store(false, Ordering::SeqCst);
    service.clone().oneshot(get(URL)).await.expect("their pair");
    assert_eq!(auth.calls(), 1, "adopted, not refreshed");
    assert_eq!(log.unauthorized.load(Ordering::SeqCst), 0);
    let stored = store.load().await.unwrap().unwrap();
    assert_eq!(stored.generation, 2);
    assert_eq!(stored.refresh_token.expose_secret(), refresh);
    assert_eq!(
        *manager.status().borrow(),
        AuthStatus::Active { generation: 2 }
    );
}
