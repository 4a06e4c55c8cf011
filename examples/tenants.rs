//! `tenants`: one application, three practices, one DrChrono budget, under paused time.
//!
//! ```sh
//! cargo run --release --example tenants -- [--fifo] [--json]
//! ```
//!
//! Practice A queues 1,000 background requests at the top of an hour; practices B and C
//! each send one interactive request every 30 s for that hour. Everything runs against an
//! embedded `drchrono-sim` with no socket, so the two simulated hours take seconds. With
//! `--fifo` the limiter serves one first-come first-served queue ([`FairShares::off`])
//! instead of fair shares, to show what fairness changes. With `--json` the last stdout line
//! is
//! `{"tenants":{"A":{"requests":…,"succeeded":…,"p50_wait_s":…,"p99_wait_s":…,"max_wait_s":…},"B":{…},"C":{…}},"server":{"throttled":0,"peak_second":…,"peak_window":…,"peak_hour":…},"makespan_s":…}`.
//! It exits 0 iff every request succeeded and the simulator throttled none.
//!
//! [`FairShares::off`]: drchrono_tower::ratelimit::FairShares::off

use std::process::ExitCode;

use clap::Parser;
use examples::tenants_scenario::{BACKFILL, config, optimum_makespan_s, run};

/// Three practices of one application sharing its DrChrono budget.
#[derive(Debug, Parser)]
#[command(name = "tenants", about)]
struct Args {
    /// One first-come first-served queue instead of fair shares.
    #[arg(long)]
    fifo: bool,
    /// Print the summary as one JSON line (last line of stdout).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let outcome = match run(!args.fifo) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("tenants: {e}");
            return ExitCode::from(2);
        }
    };
    let total: usize = outcome.tenants.values().map(|t| t.requests).sum();
    let optimum = match config() {
        Ok(config) => optimum_makespan_s(total, &config),
        Err(e) => {
            eprintln!("tenants: {e}");
            return ExitCode::from(2);
        }
    };
    let queue = if args.fifo {
        "first-come first-served"
    } else {
        "fair shares"
    };
    println!(
        "one application, three practices ({queue}): A queues {BACKFILL} background requests at \
         the top of the hour, B and C send one every 30 s"
    );
    for (practice, t) in &outcome.tenants {
        println!(
            "  {practice}: {}/{} succeeded, wait p50 {:.3} s, p99 {:.3} s, max {:.3} s, last answer at {:.1} s",
            t.succeeded, t.requests, t.p50_wait_s, t.p99_wait_s, t.max_wait_s, t.last_answer_s
        );
    }
    println!(
        "  server: {} throttled, peaks {} / s, {} / 10 min, {} / hour",
        outcome.server.throttled,
        outcome.server.peak_second,
        outcome.server.peak_window,
        outcome.server.peak_hour
    );
    println!(
        "  makespan {:.1} s; the optimum for {total} requests is {optimum:.1} s",
        outcome.makespan_s
    );
    if args.json {
        match serde_json::to_string(&outcome) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("tenants: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let all_served = outcome.tenants.values().all(|t| t.succeeded == t.requests);
    if all_served && outcome.server.throttled == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
