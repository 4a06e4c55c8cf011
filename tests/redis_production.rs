//! Redis as production runs it: TLS with a private CA and an ACL user, and a 3-master
//! Redis Cluster, each a real `redis-server` started by the test on loopback (`openssl`
//! makes the certificates; `scripts/test` installs both).
//!
//! The acceptance runs start three `loadgen` processes against one `drchrono-sim` with small
//! windows and short tokens, sharing the limiter's state, the tokens and the refresh lease
//! in that Redis: every request succeeds, the simulator throttles nothing and sees no
//! reused refresh token, and the tokens are refreshed about once per lifetime in total. The
//! processes are this test binary run again with `--exact loadgen_entry_point` and the
//! `loadgen` arguments in `DRCHRONO_LOADGEN_ARGS`: `examples::loadgen_engine::run`, the code
//! of `cargo run --example loadgen`.

mod redis_server;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use drchrono_oauth::{
    RedisConnect, RedisRefreshLease, RedisTokenStore, RefreshLease, TokenSet, TokenStore,
};
use drchrono_ratelimit::{Priority, RateLimitConfig, RateLimiter, RedisRateLimitBackend};
use drchrono_sim::{RunningSimulator, SimConfig};
use examples::loadgen_engine::{Args, run};
use redis_server::{TestCluster, TlsRedis, unique_prefix};

/// The environment variable that turns this test binary into a `loadgen` process.
const LOADGEN_ENV: &str = "DRCHRONO_LOADGEN_ARGS";

/// The line a `loadgen` process prints its summary on.
const RESULT_PREFIX: &str = "LOADGEN_RESULT ";

/// Not a test of its own: the entry point of the `loadgen` processes the tests below spawn.
/// Without `DRCHRONO_LOADGEN_ARGS` it returns at once.
#[test]
fn loadgen_entry_point() {
    let Ok(args) = std::env::var(LOADGEN_ENV) else {
        return;
    };
    let args: Vec<String> = serde_json::from_str(&args).expect("loadgen arguments are JSON");
    let args = Args::try_parse_from(args).expect("loadgen arguments");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("loadgen runtime");
    let summary = runtime.block_on(run(args, false)).expect("loadgen runs");
    let line = serde_json::to_string(&summary).expect("summary as JSON");
    println!("\n{RESULT_PREFIX}{line}");
}

/// One application's limiter, tokens and lease over `target`: a decision, a saved and
/// reloaded token pair, and a lease taken and given back. Returns the application's key.
async fn exercise(target: &RedisConnect) -> String {
    let prefix = unique_prefix("production");
    let config = RateLimitConfig::builder()
        .application(prefix.clone())
        .build()
        .unwrap();
    let backend = RedisRateLimitBackend::builder(&config)
        .connect_with(target)
        .await
        .expect("the limiter connects");
    let limiter = RateLimiter::builder(config).backend(backend).build();
    limiter
        .acquire(Priority::Interactive)
        .await
        .expect("a decision");
    let status = limiter.status().await.expect("a status");
    assert_eq!(status.rules[2].remaining, 499, "{status:?}");

    let store = RedisTokenStore::connect_with(target, format!("{prefix}:tokens"))
        .await
        .expect("the store connects");
    let pair = TokenSet::from_refresh_token("rt-1".to_owned());
    store.save(0, &pair).await.expect("a save");
    let loaded = store.load().await.expect("a load").expect("the saved pair");
    assert_eq!(loaded.generation, pair.generation);

    let lease =
        RedisRefreshLease::connect_with(target, format!("{prefix}:lease"), Duration::from_secs(5))
            .await
            .expect("the lease connects");
    let lease: Arc<dyn RefreshLease> = Arc::new(lease);
    lease.acquire().await.expect("the lease");
    lease.release().await;
    // Given back: taken again at once.
    lease.acquire().await.expect("the lease again");
    lease.release().await;
    prefix
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_private_ca_and_an_acl_user() {
    let redis = TlsRedis::start();
    let target = RedisConnect::url(redis.url()).root_ca_pem(redis.ca_pem());
    exercise(&target).await;
    // Printed, the target names the server, never the user or the password.
    let shown = format!("{target:?} {}", target.server());
    assert!(!shown.contains(redis_server::ACL_PASSWORD), "{shown}");
    assert!(!shown.contains(redis_server::ACL_USER), "{shown}");

    // A wrong password, or a CA the client does not trust: refused, typed, no panic.
    let config = RateLimitConfig::default();
    let wrong = RedisConnect::url(redis.url_with_password("wrong")).root_ca_pem(redis.ca_pem());
    assert!(
        RedisRateLimitBackend::builder(&config)
            .connect_with(&wrong)
            .await
            .is_err()
    );
    let untrusted = RedisConnect::url(redis.url());
    assert!(
        RedisTokenStore::connect_with(&untrusted, "tokens")
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_cluster_keeps_each_applications_budget_on_one_node() {
    let cluster = TestCluster::start();
    let target = RedisConnect::cluster(cluster.urls());
    let before = cluster.keys_per_node();
    exercise(&target).await;
    // The limiter's keys share a hash slot; the store and the lease are one key each.
    let after = cluster.keys_per_node();
    assert_eq!(
        after.iter().sum::<u64>() - before.iter().sum::<u64>(),
        after.iter().zip(&before).map(|(a, b)| a - b).sum::<u64>()
    );
    assert!(
        after.iter().sum::<u64>() > before.iter().sum::<u64>(),
        "{after:?}"
    );
}

/// A simulator with small windows, 4-second tokens and 10 % faults.
async fn simulator(seed: u64) -> RunningSimulator {
    drchrono_sim::spawn(
        SimConfig::default()
            .max_per_second(20)
            .max_per_window(100)
            .window(Duration::from_secs(5))
            .max_per_hour(1000)
            .hour(Duration::from_secs(60))
            .token_lifetime(Duration::from_secs(4))
            .fault_rate(0.1)
            .seed(seed),
    )
    .await
    .unwrap()
}

/// `loadgen`'s arguments for `sim` (the simulator's windows, up to 6 retries 100 ms apart),
/// `requests` requests from 4 tasks, with `redis` flags.
fn loadgen_args(sim: &RunningSimulator, requests: u64, redis: &[String]) -> Vec<String> {
    let c = sim.credentials();
    let mut args: Vec<String> = [
        "loadgen",
        "--base-url",
        &sim.base_url(),
        "--token-url",
        &sim.token_url(),
        "--client-id",
        &c.client_id,
        "--client-secret",
        &c.client_secret,
        "--refresh-token",
        &c.refresh_token,
        "--requests",
        &requests.to_string(),
        "--concurrency",
        "4",
        "--max-per-second",
        "20",
        "--max-per-window",
        "100",
        "--window-secs",
        "5",
        "--max-per-hour",
        "1000",
        "--hour-secs",
        "60",
        "--safety-margin-ms",
        "250",
        "--retry-base-ms",
        "100",
        "--max-retries",
        "6",
        "--json",
    ]
    .iter()
    .map(|arg| (*arg).to_owned())
    .collect();
    args.extend(redis.iter().cloned());
    args
}

fn spawn_loadgen(args: &[String]) -> Child {
    Command::new(std::env::current_exe().expect("this test binary"))
        .args([
            "--exact",
            "loadgen_entry_point",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(LOADGEN_ENV, serde_json::to_string(args).expect("JSON"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn a loadgen process")
}

/// Waits for a `loadgen` process and returns its summary; fails loudly with its output.
async fn summary(child: Child) -> serde_json::Value {
    let output = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("loadgen output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "loadgen failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    let line = stdout
        .lines()
        .find_map(|line| Some(line.split_once(RESULT_PREFIX)?.1))
        .unwrap_or_else(|| panic!("no loadgen summary:\n{stdout}\n{stderr}"));
    serde_json::from_str(line).expect("the summary is JSON")
}

/// Three `loadgen` processes share `redis`: all succeed, nothing throttled, no refresh token
/// reused, and about one refresh per token lifetime in all (not one per process).
async fn three_loadgen_processes(redis: &[String], seed: u64) {
    const PER_PROCESS: u64 = 60;
    let sim = simulator(seed).await;
    let args = loadgen_args(&sim, PER_PROCESS, redis);
    let started = Instant::now();
    let processes: Vec<Child> = (0..3).map(|_| spawn_loadgen(&args)).collect();
    let mut summaries = Vec::new();
    for child in processes {
        summaries.push(summary(child).await);
    }
    let elapsed = started.elapsed();
    let stats = sim.stats();
    eprintln!("{elapsed:?}: {stats:?}; {summaries:?}");
    for summary in &summaries {
        assert_eq!(summary["succeeded"], PER_PROCESS, "{summary}");
        assert_eq!(summary["failed"], 0, "{summary}");
        assert_eq!(summary["throttled_by_server"], 0, "{summary}");
    }
    assert_eq!(stats.throttled.total(), 0, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0, "{stats:?}");
    let refreshes: u64 = summaries
        .iter()
        .map(|s| s["refreshes"].as_u64().unwrap())
        .sum();
    assert_eq!(refreshes, stats.token_refreshes);
    // One refresh per token lifetime in all: due 10 % before expiry, the expiry stored in
    // whole seconds, so a pair may be due up to 1 s early (see redis_multiprocess.rs).
    let shortest = 3.0 * 0.9;
    let bound = (elapsed.as_secs_f64() / shortest).floor() as u64 + 2;
    assert!(
        (1..=bound).contains(&stats.token_refreshes),
        "{} refreshes in {elapsed:?}: {stats:?}",
        stats.token_refreshes
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_loadgen_processes_share_a_tls_redis_with_an_acl_user() {
    let redis = TlsRedis::start();
    let flags = [
        "--redis".to_owned(),
        redis.url(),
        "--redis-ca".to_owned(),
        redis.ca_path().display().to_string(),
    ];
    three_loadgen_processes(&flags, 21).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_loadgen_processes_share_a_redis_cluster() {
    let cluster = TestCluster::start();
    let flags = ["--redis-cluster".to_owned(), cluster.urls().join(",")];
    three_loadgen_processes(&flags, 22).await;
}
