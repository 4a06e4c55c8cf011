//! `RedisTokenStore` and `RedisRefreshLease` against a real `redis-server` (the shared one
//! of `scripts/test`, or a private child process), and several managers — standing in for
//! several processes, each with its own connections — against `drchrono-sim`.
//!
//! Redis keeps its own clock, so the lease tests run in real time, with TTLs of a few
//! hundred milliseconds; they assert who holds the lease, never how long anything took.
#![cfg(feature = "redis")]

// One helper for every package that tests against Redis.
#[path = "../../../tests/redis_server/mod.rs"]
mod redis_server;

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use drchrono_oauth::{
    AuthStatus, ClientCredentials, RedisRefreshLease, RedisTokenStore, RefreshLease, StoreError,
    TokenClient, TokenManager, TokenSet, TokenStore,
};
use drchrono_sim::{RunningSimulator, SimConfig};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use redis_server::{TestRedis, unique_prefix};
use secrecy::ExposeSecret;

fn pair(generation: u64, secret: &str) -> TokenSet {
    TokenSet::new(
        format!("access-{secret}"),
        format!("refresh-{secret}"),
        UNIX_EPOCH + Duration::from_secs(2_000_000_000),
    )
    .with_issued_at(UNIX_EPOCH + Duration::from_secs(1_999_827_200))
    .with_scope("patients:read")
    .with_generation(generation)
}

async fn raw(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_store_compares_and_swaps_on_the_generation() {
    let redis = TestRedis::shared();
    let key = unique_prefix("store-cas");
    let store = RedisTokenStore::connect(redis.url(), key.clone())
        .await
        .unwrap();
    assert!(store.load().await.unwrap().is_none());

    store.save(0, &pair(1, "SECRET-one")).await.unwrap();
    let loaded = store.load().await.unwrap().unwrap();
    assert_eq!(loaded.generation, 1);
    assert_eq!(loaded.access_token.expose_secret(), "access-SECRET-one");
    assert_eq!(loaded.refresh_token.expose_secret(), "refresh-SECRET-one");
    assert_eq!(loaded.scope.as_deref(), Some("patients:read"));
    assert_eq!(loaded.lifetime(), Some(Duration::from_secs(172_800)));

    // A second writer that did not see generation 1 loses and is handed the winner.
    let other = RedisTokenStore::connect(redis.url(), key.clone())
        .await
        .unwrap();
    match other.save(0, &pair(2, "SECRET-two")).await.unwrap_err() {
        StoreError::Conflict { expected, current } => {
            assert_eq!(expected, 0);
            let current = current.unwrap();
            assert_eq!(current.generation, 1);
            assert_eq!(current.refresh_token.expose_secret(), "refresh-SECRET-one");
        }
        other => panic!("unexpected {other:?}"),
    }
    other.save(1, &pair(2, "SECRET-two")).await.unwrap();
    assert_eq!(store.load().await.unwrap().unwrap().generation, 2);
    let stale = store.save(1, &pair(3, "x")).await.unwrap_err();
    assert_eq!(stale.conflict_generation(), Some(2));

    // An emptied store conflicts with generation 0 and accepts a writer that expects it.
    let mut connection = raw(redis.url()).await;
    let () = redis::cmd("DEL")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(
        store
            .save(2, &pair(3, "x"))
            .await
            .unwrap_err()
            .conflict_generation(),
        Some(0)
    );
    store.save(0, &pair(3, "x")).await.unwrap();

    let debug = format!("{store:?} {other:?}");
    assert!(!debug.contains("SECRET"), "{debug}");
    assert!(debug.contains(&key), "{debug}");
}

#[tokio::test]
async fn the_store_rejects_what_it_cannot_read() {
    let redis = TestRedis::shared();
    let mut connection = raw(redis.url()).await;
    let key = unique_prefix("store-format");
    let store = RedisTokenStore::connect(redis.url(), key.clone())
        .await
        .unwrap();

    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("version")
        .arg(9)
        .arg("generation")
        .arg(1)
        .arg("tokens")
        .arg("{}")
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(matches!(
        store.load().await,
        Err(StoreError::UnsupportedVersion { found: 9 })
    ));

    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("version")
        .arg(1)
        .arg("tokens")
        .arg(r#"{"access_token":"SECRET-a","refresh_token":"SECRET-r","expires_at":1,"generation":7}"#)
        .query_async(&mut connection)
        .await
        .unwrap();
    match store.load().await {
        Err(StoreError::Format { reason }) => {
            assert!(reason.contains("generation 1"), "{reason}");
            assert!(!reason.contains("SECRET"), "{reason}");
        }
        other => panic!("unexpected {other:?}"),
    }

    let () = redis::cmd("HSET")
        .arg(&key)
        .arg("tokens")
        .arg(r#"{"access_token":"SECRET-a""#)
        .query_async(&mut connection)
        .await
        .unwrap();
    match store.load().await {
        Err(error @ StoreError::Format { .. }) => {
            assert!(!error.to_string().contains("SECRET"), "{error}");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_exclusive_renewed_while_held_and_expires_when_its_holder_dies() {
    let redis = TestRedis::shared();
    let key = unique_prefix("lease");
    let ttl = Duration::from_millis(300);
    let first = RedisRefreshLease::connect(redis.url(), key.clone(), ttl)
        .await
        .unwrap();
    let second = RedisRefreshLease::connect(redis.url(), key.clone(), ttl)
        .await
        .unwrap()
        .acquire_timeout(ttl * 3);

    first.acquire().await.unwrap();
    assert!(format!("{first:?}").contains("held: true"));
    // Held and renewed for three TTLs: the second process cannot take it.
    match second.acquire().await {
        Err(StoreError::Backend { source }) => {
            assert!(source.to_string().contains("still held"), "{source}");
        }
        other => panic!("the lease was taken while held: {other:?}"),
    }
    // A clean release hands it over at once.
    first.release().await;
    second.acquire().await.unwrap();
    second.release().await;

    // The holder dies (dropped without release: its renewal stops). The lease expires and
    // the waiting process takes over.
    first.acquire().await.unwrap();
    drop(first);
    let third = RedisRefreshLease::connect(redis.url(), key.clone(), ttl)
        .await
        .unwrap();
    third.acquire().await.unwrap();
    // The dead holder's owner value no longer matches: a late release by it (or by anyone
    // but the owner) cannot free the new holder's lease.
    second.release().await; // not held by `second`: no-op
    let mut connection = raw(redis.url()).await;
    let owner: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert!(owner.is_some());
    third.release().await;
    let owner: Option<String> = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut connection)
        .await
        .unwrap();
    assert_eq!(owner, None);
}

fn token_client(sim: &RunningSimulator) -> TokenClient {
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let credentials = sim.credentials();
    TokenClient::new(
        http,
        ClientCredentials::new(credentials.client_id, credentials.client_secret),
    )
    .token_url(sim.token_url().parse().unwrap())
}

/// A manager as one process would build it: its own connections to Redis.
async fn process(sim: &RunningSimulator, redis: &TestRedis, prefix: &str) -> TokenManager {
    let store = RedisTokenStore::connect(redis.url(), format!("{prefix}:tokens"))
        .await
        .unwrap();
    let lease = RedisRefreshLease::connect(
        redis.url(),
        format!("{prefix}:lease"),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    TokenManager::builder(token_client(sim))
        .store(store)
        .lease(Arc::new(lease))
        .initial_tokens(TokenSet::from_refresh_token(
            sim.credentials().refresh_token,
        ))
        .build()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_sharing_redis_refresh_once_and_adopt_each_others_pairs() {
    let redis = TestRedis::shared();
    let sim = drchrono_sim::spawn(SimConfig::default()).await.unwrap();
    let prefix = unique_prefix("managers");
    let mut managers = Vec::new();
    for _ in 0..4 {
        managers.push(process(&sim, &redis, &prefix).await);
    }

    // All start from the configured refresh token at once: one token call in total.
    let bearers = futures::future::join_all(managers.iter().map(TokenManager::bearer)).await;
    for bearer in bearers {
        assert_eq!(bearer.unwrap().generation(), 2);
    }
    assert_eq!(sim.stats().token_refreshes, 1);

    // One forces a refresh; the others, asked for a pair newer than 2, adopt it from the
    // store under the lease instead of spending the rotated refresh token again.
    assert_eq!(managers[0].refresh_now().await.unwrap(), 3);
    for manager in &managers[1..] {
        assert_eq!(manager.refresh_now().await.unwrap(), 3);
        assert_eq!(
            *manager.status().borrow(),
            AuthStatus::Active { generation: 3 }
        );
    }
    let stats = sim.stats();
    assert_eq!(stats.token_refreshes, 2);
    assert_eq!(stats.invalid_grant, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_a_typed_store_error_and_redis_back_recovers() {
    let mut redis = TestRedis::private();
    let key = unique_prefix("down");
    let store = RedisTokenStore::connect(redis.url(), key.clone())
        .await
        .unwrap();
    let lease =
        RedisRefreshLease::connect(redis.url(), format!("{key}:lease"), Duration::from_secs(1))
            .await
            .unwrap();
    store.save(0, &pair(1, "a")).await.unwrap();

    redis.stop();
    assert!(matches!(
        store.load().await,
        Err(StoreError::Backend { .. })
    ));
    assert!(matches!(
        store.save(1, &pair(2, "b")).await,
        Err(StoreError::Backend { .. })
    ));
    assert!(matches!(
        lease.acquire().await,
        Err(StoreError::Backend { .. })
    ));

    // Back, empty (no persistence): the store says so, and the lease works again.
    redis.restart();
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let loaded = loop {
        match store.load().await {
            Ok(loaded) => break loaded,
            Err(error) if std::time::Instant::now() < deadline => {
                assert!(matches!(error, StoreError::Backend { .. }), "{error:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("no recovery: {error:?}"),
        }
    };
    assert!(loaded.is_none());
    lease.acquire().await.unwrap();
    lease.release().await;
    store.save(0, &pair(2, "b")).await.unwrap();
}
