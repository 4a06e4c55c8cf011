//! `DrChronoClient` on the application's own `reqwest::Client`, against an embedded
//! `drchrono-sim`.
//!
//! ```sh
//! cargo run --release -p examples --example reqwest_client
//! ```
//!
//! An application that already has a `reqwest::Client` (its TLS roots, proxy, pool and
//! timeouts) hands it to `DrChronoClientBuilder::build_with_reqwest` (feature `reqwest` of
//! drchrono-tower): the whole stack, and the token endpoint, then run on it. The example
//! shows, through that client, a token refresh from a refresh token and another before
//! expiry, a typed 409 with the overlapping appointment's id, a 503 retried with backoff,
//! and a refused connection reported as not sent. It prints one line per check and exits 0
//! when all pass, in about 2 s. The logic lives in `examples::reqwest_transport`.

use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    match examples::reqwest_transport::run().await {
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
