//! The stack's `tracing` spans exported through OpenTelemetry, to stdout (no network).
//!
//! ```sh
//! cargo run --release -p examples --example otel_stdout
//! ```
//!
//! An application that exports traces installs `tracing-opentelemetry` over its tracer
//! provider; the stack's spans then arrive shaped like OpenTelemetry's HTTP client
//! conventions: one `GET` span per logical request, an `http.client.attempt` child per
//! resend, the limiter's waits and the token refresh as spans, and no query value. This
//! example prints them with OpenTelemetry's stdout exporter as they end, then one line per
//! check of the exported tree, and exits 0 when all pass, in about 2 s. The logic lives in
//! `examples::otel_traces`.

use std::process::ExitCode;

// One thread: the subscriber is this thread's default, and the stack's spawned work (the
// token refresh) runs here too.
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match examples::otel_traces::run().await {
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
