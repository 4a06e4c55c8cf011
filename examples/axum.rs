//! An axum service whose handlers share one `DrChronoClient`.
//!
//! ```sh
//! cargo run -p examples --example axum                          # serve until Ctrl-C
//! cargo run -p examples --example axum -- --serve-for-secs 30   # serve 30 s, then exit
//! cargo run -p examples --example axum -- --self-test           # check itself, exit 0/1
//! DRCHRONO_CLIENT_ID=… DRCHRONO_CLIENT_SECRET=… DRCHRONO_REFRESH_TOKEN=… \
//!     cargo run -p examples --example axum -- --demo false      # the real DrChrono
//! ```
//!
//! It listens on `127.0.0.1:0` and prints its address. By default (`--demo true`) it starts
//! an embedded `drchrono-sim`, so it runs with no credentials. Routes:
//!
//! - `GET /me`: the DrChrono API user;
//! - `GET /patients/{id}`: DrChrono's `/api/patients/{id}`;
//! - `GET /status`: the shared limiter's remaining budget and the retry statistics.
//!
//! Every connection and handler shares one client: one rate-limit budget, one token family,
//! one retry budget. DrChrono's errors become HTTP answers without DrChrono's body, tokens or
//! patient data: 404 → 404, 429 → 503 with `Retry-After`, persistent 5xx → 502, … (see
//! `examples::axum_service::error_response`). A handler waits at most `--max-wait-ms` for
//! DrChrono.
//!
//! `--self-test` sends requests to the service itself (and, through the simulator, injects
//! 5xx and 429 answers and a burst from another user of the same application), prints one
//! line per check and exits 0 when all pass. The logic lives in `examples::axum_service`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgAction, Parser};
use examples::axum_service::{self, LiveCredentials, Options, Upstream};

/// An axum service sharing one DrChronoClient across all handlers.
#[derive(Debug, Parser)]
#[command(name = "axum", about)]
struct Args {
    /// Where to listen.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
    /// Start an embedded drchrono-sim (no credentials needed). With `false`, read
    /// DRCHRONO_CLIENT_ID, DRCHRONO_CLIENT_SECRET, DRCHRONO_REFRESH_TOKEN (and optionally
    /// DRCHRONO_BASE_URL, DRCHRONO_TOKEN_URL) from the environment.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    demo: bool,
    /// Serve this many seconds, then exit 0.
    #[arg(long)]
    serve_for_secs: Option<u64>,
    /// Send a few requests to the service itself; exit 0 iff every check passes.
    #[arg(long)]
    self_test: bool,
    /// The longest a handler waits for DrChrono before answering 503.
    #[arg(long, default_value_t = 10_000)]
    max_wait_ms: u64,
    /// Lower bound of the first 5xx retry delay; the upper bound is 1.2x. Default: DrChrono's
    /// 25 s, or 50 ms with --self-test.
    #[arg(long)]
    retry_first_delay_ms: Option<u64>,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, examples::Error> {
    let mut options = if args.self_test {
        Options::self_test()
    } else {
        Options::demo()
    };
    options.addr = args.addr;
    options.max_wait = Duration::from_millis(args.max_wait_ms);
    if let Some(ms) = args.retry_first_delay_ms {
        let min = Duration::from_millis(ms);
        options.retry_first_delay = (min, min.mul_f64(1.2));
    }
    if !args.demo {
        options.upstream = Upstream::Live(LiveCredentials::from_env()?);
    }

    let demo = axum_service::start(options).await?;
    println!("listening on {}", demo.url());
    if let Some(sim) = demo.simulator() {
        println!("DrChrono simulator at {}", sim.base_url());
    }

    let code = if args.self_test {
        let report = axum_service::self_test(&demo).await?;
        println!("{report}");
        if report.passed() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    } else {
        match args.serve_for_secs {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs)).await,
            None => tokio::signal::ctrl_c().await?,
        }
        ExitCode::SUCCESS
    };
    demo.shutdown().await?;
    Ok(code)
}
