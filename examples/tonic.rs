//! DrChrono's rate-limit and retry layers on a tonic `Channel`, calling tonic-health's
//! generated `HealthClient` against a tonic-health server on `127.0.0.1` (no protoc).
//!
//! ```sh
//! cargo run -p examples --example tonic [-- --per-second 3 --calls 6]
//! ```
//!
//! The limiter runs a custom rule (3 calls in any rolling second by default), so the run
//! visibly waits; the retry policy retries the first call, whose first attempt is refused
//! because the server is not listening yet. It prints when the limiter released each
//! attempt and when each call returned, then one line per check; exits 0 when all pass.
//! Why a body-buffering adapter sits above `Retry`, and what gRPC errors mean to the
//! policy: see `examples::tonic_channel`.

use std::process::ExitCode;

use clap::Parser;
use examples::tonic_channel::{self, Options};

/// Rate-limited, retried gRPC health checks.
#[derive(Debug, Parser)]
#[command(name = "tonic", about)]
struct Args {
    /// The limiter's rule: at most this many calls in any rolling second.
    #[arg(long, default_value_t = 3)]
    per_second: u32,
    /// Calls sent at once after the first.
    #[arg(long, default_value_t = 6)]
    calls: usize,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut options = Options::default();
    options.per_second = args.per_second;
    options.concurrent_calls = args.calls;
    let run = match tonic_channel::run(options).await {
        Ok(run) => run,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    for (i, at) in run.attempts.iter().enumerate() {
        println!("attempt {i:>2} released at {:>6.3} s", at.as_secs_f64());
    }
    for call in &run.calls {
        println!(
            "{:<26} {:>6.3} s -> {:>6.3} s: {}",
            format!("Check({:?})", call.service),
            call.started.as_secs_f64(),
            call.finished.as_secs_f64(),
            call.outcome
        );
    }
    println!("{}", run.report);
    if run.report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
