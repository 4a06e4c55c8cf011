//! `loadgen`: push N requests through the full drchrono-tower stack against a DrChrono
//! server (usually `drchrono-sim`), starting from only a refresh token.
//!
//! ```sh
//! cargo run --release --example loadgen -- --base-url URL --token-url URL --client-id ID \
//!   --client-secret S --refresh-token RT --requests N --concurrency C [--max-per-second 9] \
//!   [--max-per-window 290] [--window-secs 600] [--max-per-hour 500] [--hour-secs 3600] \
//!   [--safety-margin-ms 100] [--retry-base-ms 25000] [--max-retries 3] \
//!   [--redis redis://…|rediss://user:password@…] [--redis-cluster URL[,URL…]] [--redis-ca FILE] [--json]
//! ```
//!
//! It sends `GET {base}/api/patients/{i}` for i = 1..=N from C concurrent tasks sharing one
//! client, shows a progress bar on stderr, and with `--json` prints as its last stdout line
//! `{"requests":N,"succeeded":N,"failed":0,"throttled_by_server":k,"retries":r,"refreshes":f,"elapsed_secs":x,"failures":{}}`
//! (`failures` counts failed requests by the kind of their final error, e.g.
//! `{"server":2,"throttled":1}`; each failure is also printed on stderr, with a count by
//! kind at the end). It exits 0 iff every request succeeded. With `--redis` (or
//! `--redis-cluster`, a Redis Cluster's nodes), the limiter's state, the tokens and the
//! refresh lease live in Redis, so several processes share one application's budget and
//! token family; `--redis-ca` trusts a private CA for `rediss://`.

use std::process::ExitCode;

use clap::Parser;
use examples::loadgen_engine::{Args, run};

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let json = args.json;
    match run(args, true).await {
        Ok(summary) => {
            if json {
                match serde_json::to_string(&summary) {
                    Ok(line) => println!("{line}"),
                    Err(e) => {
                        eprintln!("loadgen: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                println!(
                    "{} requests: {} succeeded, {} failed, {} throttled by the server, {} retries, \
                     {} token refreshes, {:.1} s",
                    summary.requests,
                    summary.succeeded,
                    summary.failed,
                    summary.throttled_by_server,
                    summary.retries,
                    summary.refreshes,
                    summary.elapsed_secs
                );
            }
            if summary.failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::from(2)
        }
    }
}
