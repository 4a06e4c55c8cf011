//! Several OS processes share one application's budget and one token family through Redis,
//! against one simulator: the limiter's Redis backend, the Redis token store and the Redis
//! refresh lease, end to end.
//!
//! The worker processes are this very test binary, run again with
//! `--exact worker_entry_point` and the worker's settings in `DRCHRONO_REDIS_WORKER`: each
//! builds the real stack (retry → rate limit on Redis → OAuth with a Redis store and lease →
//! `ErrorClassifyLayer` → hyper-util) and sends its share of `GET /api/patients/{id}`.
//! Everything runs in real time (separate processes, a real Redis); the assertions are on the
//! simulator's counters, never on how long anything took.

mod redis_server;

use std::io::{BufRead, BufReader, Read};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use drchrono_classify::ErrorClassifyLayer;
use drchrono_core::DrChronoError;
use drchrono_oauth::{
    ClientCredentials, OAuthRefreshLayer, RedisRefreshLease, RedisTokenStore, TokenClient,
    TokenManager, TokenSet, TokenStore,
};
use drchrono_ratelimit::{
    DrChronoRateLimitLayer, RateLimitConfig, RateLimiter, RedisRateLimitBackend,
};
use drchrono_retry::RetryPolicy;
use drchrono_sim::{RunningSimulator, SimConfig};
use futures::StreamExt;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use redis_server::{TestRedis, unique_prefix};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};

/// The environment variable that turns this test binary into a worker.
const WORKER_ENV: &str = "DRCHRONO_REDIS_WORKER";

/// The line a worker prints its outcome on.
const RESULT_PREFIX: &str = "WORKER_RESULT ";

/// Not a test of its own: the entry point of the worker processes the tests below spawn.
/// Without `DRCHRONO_REDIS_WORKER` it returns at once.
#[test]
fn worker_entry_point() {
    let Ok(spec) = std::env::var(WORKER_ENV) else {
        return;
    };
    let spec: Value = serde_json::from_str(&spec).expect("worker settings are JSON");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("worker runtime");
    let outcome = runtime.block_on(worker(&spec));
    // On a line of its own: the test harness has printed `test worker_entry_point ... `.
    println!("\n{RESULT_PREFIX}{outcome}");
}

fn text<'a>(spec: &'a Value, key: &str) -> &'a str {
    spec[key]
        .as_str()
        .unwrap_or_else(|| panic!("worker setting {key}"))
}

fn number(spec: &Value, key: &str) -> u64 {
    spec[key]
        .as_u64()
        .unwrap_or_else(|| panic!("worker setting {key}"))
}

fn millis(spec: &Value, key: &str) -> Duration {
    Duration::from_millis(number(spec, key))
}

/// One process: the full stack on Redis, `count` requests from `first_id`, `concurrency` at
/// a time.
async fn worker(spec: &Value) -> Value {
    let redis = text(spec, "redis_url");
    let prefix = text(spec, "prefix");
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

    let config = RateLimitConfig::builder()
        .max_per_second(number(spec, "max_per_second") as u32)
        .max_per_window(number(spec, "max_per_window") as u32)
        .window(millis(spec, "window_ms"))
        .max_per_hour(number(spec, "max_per_hour") as u32)
        .hour(millis(spec, "hour_ms"))
        .safety_margin(millis(spec, "margin_ms"))
        .application(prefix)
        .build()
        .expect("limiter configuration");
    let backend = RedisRateLimitBackend::builder(&config)
        .key_prefix(format!("{prefix}:ratelimit"))
        .connect(redis)
        .await
        .expect("limiter connects to Redis");
    let limiter = RateLimiter::builder(config).backend(backend).build();

    let token_client = TokenClient::new(
        http.clone(),
        ClientCredentials::new(
            text(spec, "client_id"),
            text(spec, "client_secret").to_owned(),
        ),
    )
    .token_url(text(spec, "token_url").parse().expect("token URL"))
    .attempt_timeout(Duration::from_secs(120));
    let store = RedisTokenStore::connect(redis, format!("{prefix}:tokens"))
        .await
        .expect("store connects to Redis");
    let lease = RedisRefreshLease::connect(
        redis,
        format!("{prefix}:lease"),
        millis(spec, "lease_ttl_ms"),
    )
    .await
    .expect("lease connects to Redis");
    let manager = TokenManager::builder(token_client)
        .store(store)
        .lease(Arc::new(lease))
        .initial_tokens(TokenSet::from_refresh_token(
            text(spec, "refresh_token").to_owned(),
        ))
        .build();

    let policy = RetryPolicy::builder()
        .first_delay(Duration::from_millis(50), Duration::from_millis(100))
        .max_delay(Duration::from_millis(400))
        .max_retries(6)
        .build()
        .expect("retry policy");
    let stack = ServiceBuilder::new()
        .layer(policy.clone().layer())
        .layer(DrChronoRateLimitLayer::new(limiter))
        .layer(OAuthRefreshLayer::new(manager.clone()))
        .layer(ErrorClassifyLayer::new())
        .service(http);

    let base = text(spec, "base_url");
    let first = number(spec, "first_id");
    let requests = (first..first + number(spec, "count")).map(|id| {
        let stack = stack.clone();
        let request = http::Request::get(format!("{base}/api/patients/{id}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        async move { stack.oneshot(request).await }
    });
    let outcomes: Vec<Result<_, DrChronoError>> = futures::stream::iter(requests)
        .buffer_unordered(number(spec, "concurrency") as usize)
        .collect()
        .await;
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            Ok(response) if response.status() == http::StatusCode::OK => None,
            Ok(response) => Some(format!("status {}", response.status())),
            Err(error) => Some(format!("{}: {error}", error.kind_name())),
        })
        .collect();
    json!({
        "succeeded": outcomes.len() - failures.len(),
        "failures": failures,
        "generation": manager.generation(),
        "retries": policy.stats().retries,
    })
}

/// The settings every worker of one test shares.
fn settings(redis: &TestRedis, sim: &RunningSimulator, prefix: &str, limits: &SimConfig) -> Value {
    let credentials = sim.credentials();
    json!({
        "redis_url": redis.url(),
        "prefix": prefix,
        "base_url": sim.base_url(),
        "token_url": sim.token_url(),
        "client_id": credentials.client_id,
        "client_secret": credentials.client_secret,
        "refresh_token": credentials.refresh_token,
        "max_per_second": limits.get_max_per_second(),
        "max_per_window": limits.get_max_per_window(),
        "window_ms": limits.get_window().as_millis() as u64,
        "max_per_hour": limits.get_max_per_hour(),
        "hour_ms": limits.get_hour().as_millis() as u64,
        "margin_ms": 250,
        "lease_ttl_ms": 1_500,
        "concurrency": 2,
    })
}

fn with(settings: &Value, changes: Value) -> Value {
    let mut merged = settings.clone();
    for (key, value) in changes.as_object().expect("an object") {
        merged[key] = value.clone();
    }
    merged
}

fn spawn_worker(spec: &Value) -> Child {
    Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "worker_entry_point",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(WORKER_ENV, spec.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a worker process")
}

/// Waits for a worker and returns its outcome; fails loudly with its output if it failed.
async fn outcome(child: Child) -> Value {
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("worker output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "worker failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .find_map(|line| Some(line.split_once(RESULT_PREFIX)?.1))
        .unwrap_or_else(|| panic!("no worker result:\n{stdout}\n{stderr}"));
    serde_json::from_str(line).expect("worker result is JSON")
}

fn assert_all_succeeded(outcome: &Value, count: u64) {
    assert_eq!(outcome["failures"], json!([]), "{outcome}");
    assert_eq!(outcome["succeeded"], json!(count), "{outcome}");
}

async fn stored_generation(redis: &TestRedis, prefix: &str) -> u64 {
    RedisTokenStore::connect(redis.url(), format!("{prefix}:tokens"))
        .await
        .unwrap()
        .load()
        .await
        .unwrap()
        .expect("a stored pair")
        .generation
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_budget_and_refresh_once_per_token_lifetime() {
    let redis = TestRedis::shared();
    let lifetime = Duration::from_secs(4);
    // Small windows, short tokens, faults: the simulator enforces exactly what the workers'
    // limiter is configured with.
    let limits = SimConfig::default()
        .max_per_second(4)
        .max_per_window(10)
        .window(Duration::from_secs(3))
        .max_per_hour(20)
        .hour(Duration::from_secs(6))
        .token_lifetime(lifetime)
        .fault_rate(0.1)
        .seed(11);
    let sim = drchrono_sim::spawn(limits.clone()).await.unwrap();
    let prefix = unique_prefix("three-processes");
    let common = settings(&redis, &sim, &prefix, &limits);
    const PER_WORKER: u64 = 12;

    let started = Instant::now();
    let workers: Vec<Child> = (0..3)
        .map(|i| {
            spawn_worker(&with(
                &common,
                json!({"first_id": 1 + i * PER_WORKER, "count": PER_WORKER}),
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for child in workers {
        outcomes.push(outcome(child).await);
    }
    let elapsed = started.elapsed();
    for outcome in &outcomes {
        assert_all_succeeded(outcome, PER_WORKER);
    }

    let stats = sim.stats();
    eprintln!("{elapsed:?}: {stats:?}; workers: {outcomes:?}");
    assert_eq!(stats.throttled.second, 0, "{stats:?}");
    assert_eq!(stats.throttled.window, 0, "{stats:?}");
    assert_eq!(stats.throttled.hour, 0, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0, "{stats:?}");
    assert!(stats.accepted >= 3 * PER_WORKER, "{stats:?}");
    // One refresh per token lifetime in total, not one per process (three processes
    // refreshing on their own would make three times as many). A refresh is due 10 % of the
    // lifetime before expiry, and the store keeps the expiry in whole seconds, so a process
    // that adopted a pair may see it due up to 1 s early.
    let shortest = (lifetime - Duration::from_secs(1)).as_secs_f64() * 0.9;
    let lifetimes = elapsed.as_secs_f64() / shortest;
    let bound = lifetimes.floor() as u64 + 2;
    assert!(
        stats.token_refreshes >= 1 && stats.token_refreshes <= bound,
        "{} refreshes in {elapsed:?} ({lifetimes:.1} token lifetimes): {stats:?}",
        stats.token_refreshes
    );
    // Each refresh was saved exactly once: generation 1 is the configured refresh token.
    assert_eq!(
        stored_generation(&redis, &prefix).await,
        1 + stats.token_refreshes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_wait_for_a_slow_lease_holder_before_they_are_counted() {
    let redis = TestRedis::shared();
    // The token endpoint takes 3 s to grant (django-oauth-toolkit hashes secrets): the
    // lease holder's refresh takes that long, and the other processes wait on the lease.
    // Requests wait for the token before the limiter charges them, so none of them reaches
    // the server in a burst when the token comes.
    let limits = SimConfig::default()
        .max_per_second(5)
        .max_per_window(20)
        .window(Duration::from_secs(3))
        .max_per_hour(200)
        .hour(Duration::from_secs(60))
        .token_lifetime(Duration::from_secs(8))
        .token_delay(Duration::from_secs(3))
        .seed(5);
    let sim = drchrono_sim::spawn(limits.clone()).await.unwrap();
    let prefix = unique_prefix("slow-lease-holder");
    let common = with(
        &settings(&redis, &sim, &prefix, &limits),
        json!({"concurrency": 8}),
    );
    const PER_WORKER: u64 = 16;

    let workers: Vec<Child> = (0..3)
        .map(|i| {
            spawn_worker(&with(
                &common,
                json!({"first_id": 1 + i * PER_WORKER, "count": PER_WORKER}),
            ))
        })
        .collect();
    let mut outcomes = Vec::new();
    for child in workers {
        outcomes.push(outcome(child).await);
    }
    for outcome in &outcomes {
        assert_all_succeeded(outcome, PER_WORKER);
    }
    let stats = sim.stats();
    assert_eq!(
        stats.throttled.total(),
        0,
        "{stats:?}; workers: {outcomes:?}"
    );
    assert!(stats.peak_second <= 5, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0, "{stats:?}");
    assert_eq!(
        stats.unauthorized, 0,
        "no expired token was sent: {stats:?}"
    );
    assert_eq!(stats.accepted, 3 * PER_WORKER, "{stats:?}");
    assert!(stats.token_refreshes >= 2, "{stats:?}");
    assert_eq!(
        stored_generation(&redis, &prefix).await,
        1 + stats.token_refreshes
    );
}

/// A token endpoint that accepts a connection, reports the request line and never answers.
fn black_hole() -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/o/token/", listener.local_addr().unwrap());
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let sender = sender.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                let mut line = String::new();
                if reader.read_line(&mut line).is_ok() {
                    let _ = sender.send(line.trim().to_owned());
                }
                // Hold the connection open until the client goes away.
                let mut sink = [0u8; 1024];
                while matches!(reader.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
    });
    (url, receiver)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_holder_killed_mid_refresh_is_taken_over_and_no_request_is_lost() {
    let redis = TestRedis::shared();
    let limits = SimConfig::default();
    let sim = drchrono_sim::spawn(limits.clone()).await.unwrap();
    let prefix = unique_prefix("killed-holder");
    let common = settings(&redis, &sim, &prefix, &limits);
    let lease_key = format!("{prefix}:lease");

    // The victim starts from the configured refresh token, takes the lease and sends its
    // refresh to an endpoint that never answers.
    let (hole_url, requests) = black_hole();
    let mut victim = spawn_worker(&with(
        &common,
        json!({"token_url": hole_url, "first_id": 1, "count": 1, "concurrency": 1}),
    ));
    let request_line =
        tokio::task::spawn_blocking(move || requests.recv_timeout(Duration::from_secs(60)))
            .await
            .unwrap()
            .expect("the victim sent its refresh");
    assert!(request_line.starts_with("POST /o/token/"), "{request_line}");
    let holder = redis_server::get(redis.url(), &lease_key).expect("the victim holds the lease");
    assert!(holder.starts_with(&format!("{}:", victim.id())), "{holder}");

    // Two more processes need a token: they wait on the lease the victim keeps renewing.
    let workers: Vec<Child> = (0..2)
        .map(|i| {
            spawn_worker(&with(
                &common,
                json!({"first_id": 10 + i * 6, "count": 6, "concurrency": 1}),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(sim.stats().token_refreshes, 0);

    // Killed mid-refresh: its lease expires and one of the others refreshes.
    victim.kill().unwrap();
    victim.wait().unwrap();
    for child in workers {
        assert_all_succeeded(&outcome(child).await, 6);
    }
    let stats = sim.stats();
    assert_eq!(stats.token_refreshes, 1, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0, "{stats:?}");
    assert_eq!(stats.accepted, 12, "{stats:?}");
    assert_eq!(stored_generation(&redis, &prefix).await, 2);
    let holder_now = redis_server::get(redis.url(), &lease_key);
    assert_ne!(holder_now.as_deref(), Some(holder.as_str()));
}
