//! The four layers composed by hand with `tower::ServiceBuilder` on a plain hyper-util
//! client, against an embedded `drchrono-sim`.
//!
//! ```sh
//! cargo run -p examples --example hyper
//! ```
//!
//! `DrChronoLayer` (and `DrChronoClient`) compose the stack for you; this example writes
//! it out, outermost first: `tower::retry::RetryLayer` with `RetryPolicy` →
//! `DrChronoRateLimitLayer` → `OAuthRefreshLayer` → `ErrorClassifyLayer` → hyper-util's
//! `Client`. It then walks through DrChrono's behaviours (first call refreshes the token, a
//! burst paced at 9/s, 503/504 retried, typed 404/405/409, a re-authorisation elsewhere and
//! recovery with `TokenManager::set_tokens`), prints one line per check and exits 0 when
//! all pass. The logic lives in `examples::hyper_stack`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .init();
    match examples::hyper_stack::run().await {
        Ok(report) => {
            println!("{report}");
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
