//! A Redis failover without over-admission: the limiter's journal (issue 17).
//!
//! Three clients (each with its own Redis backend, as three processes have) share one
//! application's budget (40 per 10 s) in a Redis primary with one replica,
//! through a small TCP proxy. The replica is detached (`REPLICAOF NO ONE`) while the primary
//! keeps taking decisions for 5 s; then the proxy switches every client to the detached
//! replica, as a DNS or VIP switch looks to a client. The replica lacks the decisions of
//! those 5 s: without the journal the clients believe the window holds fewer than it does
//! and DrChrono (the simulator) throttles them; with it, each re-asserts its own charges
//! before deciding again, and nothing is throttled.
//!
//! The token pair lives in the same Redis, with 3-second tokens: it rotates during the
//! detach, so the replica holds an older pair than the processes, and no refresh token may be
//! spent twice across the switch (a refresh never goes ahead without reading the store).
//!
//! Real time (real servers, real sockets); the assertions are on the simulator's counters.

mod redis_server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drchrono_ratelimit::{RateLimitConfig, RateLimiter, RedisRateLimitBackend};
use drchrono_sim::SimConfig;
use drchrono_tower::DrChronoClient;
use drchrono_tower::oauth::{RedisRefreshLease, RedisTokenStore};
use drchrono_tower::retry::RetryPolicy;
use redis_server::TestRedis;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A TCP proxy whose target can be switched; switching drops every open connection.
struct Proxy {
    addr: SocketAddr,
    target: Arc<Mutex<SocketAddr>>,
    connections: Arc<Mutex<JoinSet<()>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = Arc::new(Mutex::new(target));
        let connections = Arc::new(Mutex::new(JoinSet::new()));
        let (to, open) = (Arc::clone(&target), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = *to.lock().unwrap();
                open.lock().unwrap().spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        Self {
            addr,
            target,
            connections,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// New connections go to `target`; open ones are cut.
    fn switch(&self, target: SocketAddr) {
        *self.target.lock().unwrap() = target;
        self.connections.lock().unwrap().abort_all();
    }
}

fn address(redis: &TestRedis) -> SocketAddr {
    redis
        .url()
        .trim_start_matches("redis://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// What the simulator counted: requests throttled, requests answered.
async fn failover(journal: bool) -> (u64, u64) {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .try_init();
    let primary = TestRedis::private();
    let replica = TestRedis::private();
    replica.replicate(&primary);
    let proxy = Proxy::start(address(&primary)).await;

    let limits = SimConfig::default()
        .max_per_second(100)
        .max_per_window(40)
        .window(Duration::from_secs(10))
        .max_per_hour(100_000)
        .token_lifetime(Duration::from_secs(3));
    let sim = drchrono_sim::spawn(limits).await.unwrap();
    let credentials = sim.credentials();
    let config = RateLimitConfig::builder()
        .max_per_second(100)
        .max_per_window(40)
        .window(Duration::from_secs(10))
        .max_per_hour(100_000)
        .application(format!("failover-{journal}"))
        .build()
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let mut clients = JoinSet::new();
    for worker in 0..3u64 {
        // The switch cuts the connection under a decision: asked again 20 ms later (not
        // 1 s), the retries carry the requests over to the new primary.
        let backend = RedisRateLimitBackend::builder(&config)
            .failover_journal(journal)
            .retry_interval(Duration::from_millis(20))
            .connect(&proxy.url())
            .await
            .unwrap();
        let limiter = RateLimiter::builder(config.clone())
            .backend(backend)
            .build();
        let client = DrChronoClient::builder()
            .credentials(
                credentials.client_id.clone(),
                credentials.client_secret.clone(),
            )
            // One token family in the same Redis: 3-second tokens rotate during the
            // detach, so the replica holds an older pair than the processes.
            .refresh_token(credentials.refresh_token.clone())
            .token_store(
                RedisTokenStore::connect(&proxy.url(), format!("{{failover-{journal}}}:tokens"))
                    .await
                    .unwrap(),
            )
            .refresh_lease(Arc::new(
                RedisRefreshLease::connect(
                    &proxy.url(),
                    format!("{{failover-{journal}}}:lease"),
                    Duration::from_millis(1_500),
                )
                .await
                .unwrap(),
            ))
            .base_url(sim.base_url())
            .token_url(sim.token_url())
            .rate_limiter(limiter)
            // A request the switch left undecided (the backend's connection was cut) is
            // retried at once, not after DrChrono's 25-30 s.
            .retry(
                RetryPolicy::builder()
                    .first_delay(Duration::from_millis(50), Duration::from_millis(100))
                    .max_delay(Duration::from_millis(400))
                    .max_retries(6)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        // Five requests a second from each client, each on its own: a backlog builds up in
        // each client's queue once the window is full.
        let (stop, answered) = (Arc::clone(&stop), Arc::clone(&answered));
        clients.spawn(async move {
            let mut requests = JoinSet::new();
            let mut tick = tokio::time::interval(Duration::from_millis(200));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let (client, answered) = (client.clone(), Arc::clone(&answered));
                requests.spawn(async move {
                    match client.get("/api/users/current").await {
                        Ok(_) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(error) => eprintln!("worker {worker}: {error}"),
                    }
                });
            }
            // The backlog still waiting is dropped: cancel-safe, nothing charged.
            requests.abort_all();
        });
    }

    // 15 a second until the window holds 40 (2.7 s): the replica is detached half-way,
    // while the primary decides on, for 5 s; by the switch it lacks the last 18 or so.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    replica.detach();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before_switch = sim.stats().throttled.total();
    proxy.switch(address(&replica));
    // Past the end of the first window: admissions resume on what the replica holds.
    tokio::time::sleep(Duration::from_secs(7)).await;
    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    let stats = sim.stats();
    eprintln!(
        "journal {journal}: {stats:?}, answered {}",
        answered.load(Ordering::Relaxed)
    );
    assert_eq!(before_switch, 0, "throttled before the switch: {stats:?}");
    // The tokens rotated across the switch, and no refresh token was spent twice.
    assert!(stats.token_refreshes >= 3, "{stats:?}");
    assert_eq!(stats.invalid_grant, 0, "{stats:?}");
    (stats.throttled.total(), answered.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_replica_that_lacks_5_s_of_decisions_throttles_nothing() {
    let (throttled, answered) = failover(true).await;
    assert_eq!(throttled, 0);
    // The clients kept going after the switch: 40 in the first window, more in the next.
    assert!(answered > 40, "{answered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_journal_the_same_failover_is_throttled() {
    let (throttled, _) = failover(false).await;
    assert!(throttled > 0, "the journal made no difference");
}
