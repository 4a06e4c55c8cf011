//! `loadgen` against `drchrono-sim` with small windows, 10 % faults and 5-second tokens:
//! every request succeeds, the simulator throttles nothing and sees no `invalid_grant`, and
//! the `--json` line is the contracted one.

use std::time::Duration;

use clap::Parser;
use drchrono_sim::SimConfig;
use examples::load::{Args, run};

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
    let c = sim.credentials();
    let (base, token) = (sim.base_url(), sim.token_url());
    let args = Args::try_parse_from([
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
        "150",
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
        "--json",
    ])
    .expect("the documented flags parse");
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
