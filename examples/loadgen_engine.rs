//! The `loadgen` example's engine: see `examples/loadgen.rs` for the command line.

use std::collections::BTreeMap;
use std::mem;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use drchrono_tower::oauth::{RedisRefreshLease, RedisTokenStore};
use drchrono_tower::ratelimit::{
    RateLimitConfig, RateLimiter, RedisConnect, RedisRateLimitBackend,
};
use drchrono_tower::retry::RetryPolicy;
use drchrono_tower::{DrChronoClient, DrChronoClientBuilder};
use http::{Request, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use indicatif::{ProgressBar, ProgressStyle};
use secrecy::SecretString;

/// `loadgen`'s command line (DESIGN.md's contract).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    about = "Push N requests through the full drchrono-tower stack"
)]
pub struct Args {
    /// API base URL, e.g. the simulator's `base_url`.
    #[arg(long)]
    pub base_url: String,
    /// Token endpoint URL.
    #[arg(long)]
    pub token_url: String,
    /// OAuth client id.
    #[arg(long)]
    pub client_id: String,
    /// OAuth client secret.
    #[arg(long)]
    pub client_secret: String,
    /// The refresh token to start from.
    #[arg(long)]
    pub refresh_token: String,
    /// How many requests (GET /api/patients/1..=N).
    #[arg(long)]
    pub requests: u64,
    /// Concurrent tasks sharing the client.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub concurrency: u64,
    /// Limiter: requests per rolling second.
    #[arg(long, default_value_t = 9)]
    pub max_per_second: u32,
    /// Limiter: requests per rolling window.
    #[arg(long, default_value_t = 290)]
    pub max_per_window: u32,
    /// Limiter: the rolling window, in seconds.
    #[arg(long, default_value_t = 600)]
    pub window_secs: u64,
    /// Limiter: requests per aligned hour.
    #[arg(long, default_value_t = 500)]
    pub max_per_hour: u32,
    /// Limiter: the aligned "hour", in seconds.
    #[arg(long, default_value_t = 3600)]
    pub hour_secs: u64,
    /// Limiter: safety margin added to each window and to the hour boundary, in ms.
    #[arg(long, default_value_t = 100)]
    pub safety_margin_ms: u64,
    /// Retry: the first 5xx delay is drawn from [base, 1.2 × base] ms (DrChrono: 25–30 s).
    #[arg(long, default_value_t = 25_000)]
    pub retry_base_ms: u64,
    /// Retry: retries after a 5xx or a transport error (DrChrono advises 2–3).
    #[arg(long, default_value_t = 3)]
    pub max_retries: u32,
    /// Keep the limiter's state, the tokens and the refresh lease in this Redis
    /// (`redis://` or `rediss://` for TLS; an ACL user as `rediss://user:password@host:port`).
    #[arg(long, conflicts_with = "redis_cluster")]
    pub redis: Option<String>,
    /// The same in a Redis Cluster: one or more of its nodes' URLs, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub redis_cluster: Option<Vec<String>>,
    /// Trust this CA certificate (PEM file) for `rediss://` instead of the system's roots.
    #[arg(long)]
    pub redis_ca: Option<std::path::PathBuf>,
    /// Print the summary as one JSON line on stdout.
    #[arg(long)]
    pub json: bool,
}

/// Counts what crosses the wire: successful token calls and 429 answers.
#[derive(Debug, Default)]
struct Wire {
    refreshes: AtomicU64,
    throttled: AtomicU64,
}

/// What `--json` prints, keys in the contract's order.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// Requests asked for.
    pub requests: u64,
    /// Requests that ended in success.
    pub succeeded: u64,
    /// Requests that ended in an error, after the retries the policy allows.
    pub failed: u64,
    /// 429 answers the server sent (each one paused every task).
    pub throttled_by_server: u64,
    /// Retries of every kind the policy scheduled.
    pub retries: u64,
    /// Successful token calls this process made.
    pub refreshes: u64,
    /// Wall time from the first request to the last answer, in seconds.
    pub elapsed_secs: f64,
    /// The failed requests by kind of their final error
    /// ([`DrChronoError::kind_name`](drchrono_tower::DrChronoError::kind_name): `"server"`,
    /// `"throttled"`, `"transport"`, …); empty when every request succeeded.
    pub failures: BTreeMap<String, u64>,
}

/// Runs the load: N requests from C tasks sharing one client. `progress` draws a bar on
/// stderr.
///
/// # Errors
/// A configuration that cannot work (bad limits, bad URLs, Redis unreachable).
pub async fn run(args: Args, progress: bool) -> Result<Summary, crate::Error> {
    let limits = RateLimitConfig::builder()
        .max_per_second(args.max_per_second)
        .max_per_window(args.max_per_window)
        .window(Duration::from_secs(args.window_secs))
        .max_per_hour(args.max_per_hour)
        .hour(Duration::from_secs(args.hour_secs))
        .safety_margin(Duration::from_millis(args.safety_margin_ms))
        .build()?;
    let base = Duration::from_millis(args.retry_base_ms);
    let retry = RetryPolicy::builder()
        .max_retries(args.max_retries)
        .first_delay(base, base + base / 5)
        .max_delay((base * 8).max(Duration::from_millis(1)))
        .build()?;

    let wire = Arc::new(Wire::default());
    let token_uri: Uri = args.token_url.parse()?;
    let http = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let transport = {
        let wire = Arc::clone(&wire);
        tower::service_fn(move |request: Request<Full<Bytes>>| {
            let http = http.clone();
            let wire = Arc::clone(&wire);
            let to_token_endpoint = *request.uri() == token_uri;
            async move {
                let response = http.request(request).await?;
                if to_token_endpoint && response.status().is_success() {
                    wire.refreshes.fetch_add(1, Ordering::Relaxed);
                }
                if response.status() == http::StatusCode::TOO_MANY_REQUESTS {
                    wire.throttled.fetch_add(1, Ordering::Relaxed);
                }
                Ok::<_, hyper_util::client::legacy::Error>(response)
            }
        })
    };

    let builder = DrChronoClient::builder()
        .credentials(
            args.client_id.clone(),
            SecretString::from(args.client_secret.clone()),
        )
        .refresh_token(SecretString::from(args.refresh_token.clone()))
        .base_url(args.base_url.clone())
        .token_url(args.token_url.clone())
        .retry(retry);
    let builder = match redis_target(&args)? {
        Some(target) => shared_in_redis(builder, &target, limits).await?,
        None => builder.rate_limit(limits),
    };
    let client = builder.build_with_transport(transport)?;

    let bar = if progress {
        ProgressBar::new(args.requests)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(ProgressStyle::with_template(
        "{elapsed_precise} [{bar:40}] {pos}/{len} {per_sec} {msg}",
    )?);
    let next = Arc::new(AtomicU64::new(1));
    let succeeded = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let started = Instant::now();
    let workers: Vec<_> = (0..args.concurrency.min(args.requests.max(1)))
        .map(|_| {
            let client = client.clone();
            let next = Arc::clone(&next);
            let succeeded = Arc::clone(&succeeded);
            let failures = Arc::clone(&failures);
            let bar = bar.clone();
            let total = args.requests;
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i > total {
                        break;
                    }
                    match client.get(&format!("/api/patients/{i}")).await {
                        Ok(_) => {
                            succeeded.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            bar.println(format!("request {i} failed: {e}"));
                            *failures
                                .lock()
                                .unwrap_or_else(PoisonError::into_inner)
                                .entry(e.kind_name().to_owned())
                                .or_default() += 1;
                        }
                    }
                    bar.inc(1);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await?;
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed().as_secs_f64();
    let succeeded = succeeded.load(Ordering::Relaxed);
    let failures = mem::take(&mut *failures.lock().unwrap_or_else(PoisonError::into_inner));
    if !failures.is_empty() {
        let kinds: Vec<String> = failures
            .iter()
            .map(|(kind, count)| format!("{count} {kind}"))
            .collect();
        let stats = client.layer().retry_policy().stats();
        eprintln!(
            "loadgen: {} requests failed, by kind of their final error: {}; the retry policy \
             found its budget exhausted {} times and gave up {} times (retries, 429 count or \
             deadline spent)",
            args.requests - succeeded,
            kinds.join(", "),
            stats.budget_exhausted,
            stats.gave_up,
        );
    }
    Ok(Summary {
        requests: args.requests,
        succeeded,
        failed: args.requests - succeeded,
        throttled_by_server: wire.throttled.load(Ordering::Relaxed),
        retries: client.layer().retry_policy().stats().retries,
        refreshes: wire.refreshes.load(Ordering::Relaxed),
        elapsed_secs: (elapsed * 1000.0).round() / 1000.0,
        failures,
    })
}

/// The Redis named by `--redis` or `--redis-cluster`, trusting `--redis-ca`.
fn redis_target(args: &Args) -> Result<Option<RedisConnect>, crate::Error> {
    let target = match (&args.redis, &args.redis_cluster) {
        (Some(url), _) => RedisConnect::url(url.clone()),
        (None, Some(urls)) => RedisConnect::cluster(urls.iter().cloned()),
        (None, None) if args.redis_ca.is_some() => {
            return Err("--redis-ca needs --redis or --redis-cluster".into());
        }
        (None, None) => return Ok(None),
    };
    let target = match &args.redis_ca {
        Some(path) => target.root_ca_pem(
            std::fs::read(path).map_err(|e| format!("--redis-ca {}: {e}", path.display()))?,
        ),
        None => target,
    };
    Ok(Some(target))
}

/// `--redis` or `--redis-cluster`: the limiter's state, the tokens and the refresh lease in
/// Redis, keyed by the limiter's application key, so that every process of the
/// application shares them.
async fn shared_in_redis(
    builder: DrChronoClientBuilder,
    target: &RedisConnect,
    limits: RateLimitConfig,
) -> Result<DrChronoClientBuilder, crate::Error> {
    let backend = RedisRateLimitBackend::builder(&limits)
        .connect_with(target)
        .await?;
    let app = limits.application().to_owned();
    let limiter = RateLimiter::builder(limits).backend(backend).build();
    let store = RedisTokenStore::connect_with(target, format!("drchrono:tokens:{{{app}}}")).await?;
    let lease = RedisRefreshLease::connect_with(
        target,
        format!("drchrono:lease:{{{app}}}"),
        Duration::from_secs(10),
    )
    .await?;
    Ok(builder
        .rate_limiter(limiter)
        .token_store(store)
        .refresh_lease(Arc::new(lease)))
}
