//! `drchrono-sim`: serve the DrChrono API simulator on a socket.
//!
//! The first line on stdout is one JSON object with the addresses and credentials:
//! `{"event":"listening","base_url":…,"token_url":…,"client_id":…,"client_secret":…,
//! "refresh_token":…,"scope":…}`.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use drchrono_sim::{SimConfig, Simulator};

/// A faithful simulator of the DrChrono EHR API server.
#[derive(Debug, Parser)]
#[command(name = "drchrono-sim", version, about)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Accepted requests allowed in any rolling second before 429.
    #[arg(long, default_value_t = 9)]
    max_per_second: u32,
    /// Accepted requests allowed in any rolling window of --window-secs.
    #[arg(long, default_value_t = 290)]
    max_per_window: u32,
    /// Length of the rolling window, in seconds.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(1..))]
    window_secs: u64,
    /// Accepted requests allowed per period of --hour-secs aligned to the Unix epoch.
    #[arg(long, default_value_t = 500)]
    max_per_hour: u32,
    /// Length of the aligned "hour", in seconds (3600: resets at the UTC top of the hour).
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    hour_secs: u64,
    /// Lifetime of access tokens, in seconds (DrChrono: 48 hours).
    #[arg(long, default_value_t = 172_800)]
    token_lifetime_secs: u64,
    /// Share of /api/* requests answered with 500/502/503/504, from 0.0 to 1.0.
    #[arg(long, default_value_t = 0.0, value_parser = fault_rate)]
    fault_rate: f64,
    /// Seed of the fault and credential generators.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Allow appointments to overlap in one exam room ("Allow Exam Room Overlaps").
    #[arg(long)]
    allow_overlaps: bool,
    /// Milliseconds the token endpoint (and /sim/reauthorize) takes to answer; the grant
    /// takes effect when it answers.
    #[arg(long, default_value_t = 0)]
    token_delay_ms: u64,
    /// Milliseconds each /api/* response is sent after the request was counted.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
}

fn fault_rate(value: &str) -> Result<f64, String> {
    let rate: f64 = value.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not within 0.0..=1.0"))
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = SimConfig::default()
        .max_per_second(args.max_per_second)
        .max_per_window(args.max_per_window)
        .window(Duration::from_secs(args.window_secs))
        .max_per_hour(args.max_per_hour)
        .hour(Duration::from_secs(args.hour_secs))
        .token_lifetime(Duration::from_secs(args.token_lifetime_secs))
        .fault_rate(args.fault_rate)
        .seed(args.seed)
        .allow_overlaps(args.allow_overlaps)
        .token_delay(Duration::from_millis(args.token_delay_ms))
        .latency(Duration::from_millis(args.latency_ms));
    let running = match Simulator::new(config).serve(args.addr).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("drchrono-sim: cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let credentials = running.credentials();
    // Keys in the documented order: tools read this line.
    #[derive(serde::Serialize)]
    struct Listening<'a> {
        event: &'a str,
        base_url: String,
        token_url: String,
        client_id: &'a str,
        client_secret: &'a str,
        refresh_token: &'a str,
        scope: &'a str,
    }
    let line = serde_json::to_string(&Listening {
        event: "listening",
        base_url: running.base_url(),
        token_url: running.token_url(),
        client_id: &credentials.client_id,
        client_secret: &credentials.client_secret,
        refresh_token: &credentials.refresh_token,
        scope: &credentials.scope,
    })
    .unwrap_or_default();
    let mut stdout = std::io::stdout().lock();
    if writeln!(stdout, "{line}")
        .and_then(|()| stdout.flush())
        .is_err()
    {
        return ExitCode::FAILURE;
    }
    drop(stdout);
    tokio::select! {
        result = running.wait() => match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("drchrono-sim: {e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}
