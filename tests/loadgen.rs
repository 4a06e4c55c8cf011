//! `loadgen` against `drchrono-sim` with small windows, 10 % faults and 5-second tokens:
//! every request succeeds, the simulator throttles nothing and sees no `invalid_grant`, and
//! the `--json` line is the contracted one.

use std::time::Duration;

use clap::Parser;
use drchrono_sim::SimConfig;
use examples::loadgen_engine::{Args, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_survives_small_windows_faults_and_short_tokens() {
    let sim = drchrono_sim::spawn(
        SimConfig::default()
            .max_per_second(20)
            .max_per_window(100)
            .window(Duration::from_secs(5))
            .max_per_hour(1000)
            .hour(Duration::from_secs(60))
            .token_lifetime(Duration::from_secs(5))
            .fault_rate(0.1)
            .seed(3),
    )
    .await
    .unwrap();
    let args = small_window_args(&sim, 150);
    let summary = run(args, false).await.expect("loadgen runs");
    let stats = sim.stats();
    assert_eq!((summary.succeeded, summary.failed), (150, 0), "{summary:?}");
    assert_eq!(stats.throttled.total(), 0);
    assert_eq!(stats.invalid_grant, 0);
    assert_eq!(summary.throttled_by_server, 0);
    assert!(stats.faults > 0, "the run met faults: {stats:?}");
    // Every fault was retried: the server saw one attempt per request plus one per retry.
    assert_eq!(stats.requests, 150 + summary.retries);
    assert_eq!(summary.refreshes, stats.token_refreshes);
    assert!(
        summary.refreshes >= 2,
        "5 s tokens were refreshed during the run"
    );

    let line = serde_json::to_string(&summary).unwrap();
    let keys = [
        "requests",
        "succeeded",
        "failed",
        "throttled_by_server",
        "retries",
        "refreshes",
        "elapsed_secs",
        "failures",
    ];
    let positions: Vec<usize> = keys
        .iter()
        .map(|k| {
            line.find(&format!("\"{k}\":"))
                .unwrap_or_else(|| panic!("{k} in {line}"))
        })
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{line}");
    let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(parsed.as_object().unwrap().len(), keys.len());
    assert!(parsed["elapsed_secs"].is_f64());
    assert_eq!(parsed["failures"], serde_json::json!({}));
}

/// `loadgen`'s arguments for `sim`, with small windows (20 a second, 100 per 5 s, 1000 per
/// 60 s), up to 6 retries 100 ms apart, `requests` requests from 8 tasks.
///
/// Six retries, not DrChrono's three: at a 10 % fault rate a request loses all four
/// attempts once in 10,000, about once in four runs of 2,400 requests; with seven attempts,
/// once in ten million.
fn small_window_args(sim: &drchrono_sim::RunningSimulator, requests: u64) -> Args {
    let c = sim.credentials();
    let (base, token) = (sim.base_url(), sim.token_url());
    let requests = requests.to_string();
    Args::try_parse_from([
        "loadgen",
        "--base-url",
        &base,
        "--token-url",
        &token,
        "--client-id",
        &c.client_id,
        "--client-secret",
        &c.client_secret,
        "--refresh-token",
        &c.refresh_token,
        "--requests",
        &requests,
        "--concurrency",
        "8",
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
        "100",
        "--retry-base-ms",
        "100",
        "--max-retries",
        "6",
        "--json",
    ])
    .expect("the documented flags parse")
}

/// The issue's acceptance run, over real sockets: 6-second tokens whose grant takes
/// 1.5 s (django-oauth-toolkit hashes secrets), 10 % faults, small windows; 20 seeds, run
/// side by side (each its own simulator and client). Every request succeeds, nothing is
/// throttled, no refresh token is spent twice and no expired token reaches the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadgen_with_a_slow_token_endpoint_survives_20_seeds() {
    let mut runs = tokio::task::JoinSet::new();
    for seed in 1..=20 {
        runs.spawn(async move {
            let sim = drchrono_sim::spawn(
                SimConfig::default()
                    .max_per_second(20)
                    .max_per_window(100)
                    .window(Duration::from_secs(5))
                    .max_per_hour(1000)
                    .hour(Duration::from_secs(60))
                    .token_lifetime(Duration::from_secs(6))
                    .token_delay(Duration::from_millis(1500))
                    .fault_rate(0.1)
                    .seed(seed),
            )
            .await
            .unwrap();
            let summary = run(small_window_args(&sim, 120), false)
                .await
                .expect("loadgen runs");
            (seed, summary, sim.stats())
        });
    }
    let mut refreshes = 0;
    while let Some(joined) = runs.join_next().await {
        let (seed, summary, stats) = joined.unwrap();
        assert_eq!(
            (summary.succeeded, summary.failed),
            (120, 0),
            "seed {seed}: {summary:?}"
        );
        assert_eq!(stats.throttled.total(), 0, "seed {seed}: {stats:?}");
        assert_eq!(summary.throttled_by_server, 0, "seed {seed}");
        assert_eq!(stats.invalid_grant, 0, "seed {seed}: {stats:?}");
        assert_eq!(
            stats.unauthorized, 0,
            "seed {seed}: an expired token was sent"
        );
        assert_eq!(stats.requests, 120 + summary.retries, "seed {seed}");
        refreshes += stats.token_refreshes;
    }
    assert!(refreshes >= 20, "tokens were refreshed during the runs");
}

#[test]
fn loadgen_flags_are_checked() {
    let base = [
        "loadgen",
        "--base-url",
        "u",
        "--token-url",
        "t",
        "--client-id",
        "i",
        "--client-secret",
        "s",
        "--refresh-token",
        "r",
    ];
    let missing = Args::try_parse_from(base.iter().chain(&["--requests", "1"]));
    assert!(missing.is_err(), "--concurrency is required");
    let zero = Args::try_parse_from(
        base.iter()
            .chain(&["--requests", "1", "--concurrency", "0"]),
    );
    assert!(zero.is_err(), "--concurrency 0 is refused");
}
