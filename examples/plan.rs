//! Capacity planner: how long N requests take under DrChrono's throttling rules.
//!
//! Runs the real `DrChronoRateLimitLayer` under virtual (paused) time: N requests queued at
//! `--start`, a no-op inner service that records when each was released.
//!
//! ```text
//! cargo run --release -p examples --example plan -- --requests 1000 \
//!     --start 2026-01-05T10:37:00Z --safety-margin-ms 0 [--max-per-hour 500] [--schedule]
//! ```
//!
//! Without `--schedule`: a summary (makespan, requests per clock hour, a chart per interval
//! against the limits). With `--schedule`: a JSON header line, then one line per request
//! (in queue order) with the seconds after the start at which the layer released it.

use std::convert::Infallible;
use std::error::Error;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, SecondsFormat, Utc};
use clap::Parser;
use drchrono_ratelimit::{
    DEFAULT_SAFETY_MARGIN, DrChronoRateLimitLayer, RateLimitConfig, RateLimiter,
};
use http::{Request, Response};
use serde::Serialize;
use tower::{Layer, ServiceExt, service_fn};

const MAX_PER_SECOND: u32 = 9;
const MAX_PER_WINDOW: u32 = 290;
const WINDOW_SECS: u64 = 600;
const HOUR_SECS: u64 = 3600;

/// Plan N requests through DrChronoRateLimitLayer under virtual time.
#[derive(Debug, Parser)]
#[command(name = "plan", about)]
struct Args {
    /// Number of requests, all queued at the start.
    #[arg(long)]
    requests: usize,
    /// When they are queued (RFC 3339). Default: now (UTC).
    #[arg(long, value_parser = parse_start)]
    start: Option<DateTime<Utc>>,
    /// The application's hourly maximum (DrChrono's default is 500).
    #[arg(long, default_value_t = 500)]
    max_per_hour: u32,
    /// Safety margin added to each window and to the top of the hour, in milliseconds.
    /// Default: the library's (100 ms).
    #[arg(long)]
    safety_margin_ms: Option<u64>,
    /// Print the JSON header and one release time per request instead of the summary.
    #[arg(long)]
    schedule: bool,
}

/// The `--schedule` header, keys in the documented order.
#[derive(Serialize)]
struct Header {
    max_per_second: u32,
    max_per_window: u32,
    window_secs: u64,
    max_per_hour: u32,
    hour_secs: u64,
    safety_margin_secs: f64,
    start: String,
}

fn parse_start(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("expected an RFC 3339 instant such as 2026-01-05T10:37:00Z: {e}"))
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    let start = args.start.unwrap_or_else(Utc::now);
    // The limiter's clock works on whole milliseconds.
    let start = DateTime::from_timestamp_millis(start.timestamp_millis()).ok_or("bad --start")?;
    let margin = args
        .safety_margin_ms
        .map_or(DEFAULT_SAFETY_MARGIN, Duration::from_millis);
    let config = RateLimitConfig::builder()
        .max_per_second(MAX_PER_SECOND)
        .max_per_window(MAX_PER_WINDOW)
        .window(Duration::from_secs(WINDOW_SECS))
        .max_per_hour(args.max_per_hour)
        .hour(Duration::from_secs(HOUR_SECS))
        .safety_margin(margin)
        .build()?;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let released = runtime.block_on(simulate(config, start.into(), args.requests))?;

    if args.schedule {
        let header = Header {
            max_per_second: MAX_PER_SECOND,
            max_per_window: MAX_PER_WINDOW,
            window_secs: WINDOW_SECS,
            max_per_hour: args.max_per_hour,
            hour_secs: HOUR_SECS,
            safety_margin_secs: margin.as_secs_f64(),
            start: start.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        };
        let mut out = serde_json::to_string(&header)?;
        out.push('\n');
        for offset in &released {
            out.push_str(&format!(
                "{}.{:03}\n",
                offset.as_secs(),
                offset.subsec_millis()
            ));
        }
        print!("{out}");
    } else {
        summary(&args, start, margin, &released);
    }
    Ok(())
}

/// Queues `n` requests at `start` through the layer; returns each one's release offset.
async fn simulate(
    config: RateLimitConfig,
    start: SystemTime,
    n: usize,
) -> Result<Vec<Duration>, Box<dyn Error>> {
    let limiter = RateLimiter::builder(config).start_at(start).build();
    let origin = tokio::time::Instant::now();
    let released = Arc::new(Mutex::new(vec![Duration::ZERO; n]));
    let record = Arc::clone(&released);
    let inner = service_fn(move |request: Request<usize>| {
        if let Ok(mut released) = record.lock() {
            released[*request.body()] = origin.elapsed();
        }
        std::future::ready(Ok::<_, Infallible>(Response::new(())))
    });
    let service = DrChronoRateLimitLayer::new(limiter).layer(inner);
    let tasks: Vec<_> = (0..n)
        .map(|i| tokio::spawn(service.clone().oneshot(Request::new(i))))
        .collect();
    for task in tasks {
        let Ok(_response) = task.await?;
    }
    let released = released
        .lock()
        .map_err(|_| "a request task panicked")?
        .clone();
    Ok(released)
}

/// Most releases in any window of `width` ending at a release (`sorted` ascending).
fn peak_rolling(sorted: &[Duration], width: Duration) -> usize {
    let mut first = 0;
    let mut peak = 0;
    for (i, &t) in sorted.iter().enumerate() {
        while sorted[first] + width <= t {
            first += 1;
        }
        peak = peak.max(i + 1 - first);
    }
    peak
}

/// Counts per aligned bucket of `width` seconds since the epoch: (bucket start, count).
fn per_bucket(start: DateTime<Utc>, sorted: &[Duration], width: u64) -> Vec<(i64, usize)> {
    let mut buckets: Vec<(i64, usize)> = Vec::new();
    let width = width as i64;
    for offset in sorted {
        let at = start.timestamp_millis() + offset.as_millis() as i64;
        let bucket = at.div_euclid(width * 1000) * width;
        match buckets.last_mut() {
            Some((b, count)) if *b == bucket => *count += 1,
            _ => buckets.push((bucket, 1)),
        }
    }
    buckets
}

fn bar(count: usize, limit: usize, width: usize) -> String {
    let filled = (count * width).div_ceil(limit.max(1)).min(width);
    let mut line = "#".repeat(filled) + &" ".repeat(width - filled);
    line.push('|');
    line
}

fn label(seconds: i64, format: &str) -> String {
    DateTime::from_timestamp(seconds, 0).map_or_else(String::new, |t| t.format(format).to_string())
}

fn summary(args: &Args, start: DateTime<Utc>, margin: Duration, released: &[Duration]) {
    let mut sorted = released.to_vec();
    sorted.sort();
    let stamp = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    println!(
        "DrChrono capacity plan: {} requests queued at {}",
        args.requests,
        stamp(start)
    );
    println!(
        "limits: {MAX_PER_SECOND} per rolling 1 s, {MAX_PER_WINDOW} per rolling {WINDOW_SECS} s, \
         {} per clock hour; safety margin {} ms",
        args.max_per_hour,
        margin.as_millis()
    );
    let Some(&last) = sorted.last() else {
        println!("nothing to send");
        return;
    };
    let end = start + chrono::Duration::milliseconds(last.as_millis() as i64);
    let secs = last.as_secs();
    println!(
        "makespan: {:.3} s ({} h {} min {} s); last request released at {}",
        last.as_secs_f64(),
        secs / 3600,
        secs % 3600 / 60,
        secs % 60,
        stamp(end)
    );
    let hours = per_bucket(start, &sorted, HOUR_SECS);
    println!(
        "peaks: {} in a rolling second (limit {MAX_PER_SECOND}), {} in a rolling {WINDOW_SECS} s \
         (limit {MAX_PER_WINDOW}), {} in a clock hour (limit {})",
        peak_rolling(&sorted, Duration::from_secs(1)),
        peak_rolling(&sorted, Duration::from_secs(WINDOW_SECS)),
        hours.iter().map(|&(_, n)| n).max().unwrap_or(0),
        args.max_per_hour
    );

    println!(
        "\nrequests per clock hour (| = limit {}):",
        args.max_per_hour
    );
    for &(hour, count) in &hours {
        let limit = args.max_per_hour as usize;
        println!(
            "  {}  {count:>6}  {}",
            label(hour, "%Y-%m-%d %H:00Z"),
            bar(count, limit, 50)
        );
    }

    // Intervals as long as the rolling window, while they fit on a screen.
    if last.as_secs() > 12 * HOUR_SECS {
        return;
    }
    let (width, limit) = (WINDOW_SECS, MAX_PER_WINDOW as usize);
    println!(
        "\nrequests per clock {}-minute interval (| = {limit}, the most any rolling window allows):",
        WINDOW_SECS / 60
    );
    let buckets = per_bucket(start, &sorted, width);
    if let (Some(&(first, _)), Some(&(final_bucket, _))) = (buckets.first(), buckets.last()) {
        let mut counts = buckets.iter().peekable();
        let mut bucket = first;
        while bucket <= final_bucket {
            let count = match counts.peek() {
                Some(&&(b, n)) if b == bucket => {
                    counts.next();
                    n
                }
                _ => 0,
            };
            println!(
                "  {}  {count:>6}  {}",
                label(bucket, "%m-%d %H:%M"),
                bar(count, limit, 50)
            );
            bucket += width as i64;
        }
    }
}
