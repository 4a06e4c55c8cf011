//! Runnable examples of drchrono-tower. Each example's `main` (beside this file) is a thin
//! wrapper around a module of this library, so that `tests/examples.rs` in the
//! integration-tests package runs the same code in-process.
//!
//! - [`axum_service`] (example `axum`): an axum service whose handlers share one
//!   `DrChronoClient`.
//! - [`hyper_stack`] (example `hyper`): the four layers composed by hand on hyper-util's
//!   client.
//! - [`loadgen_engine`] (example `loadgen`): the load generator's engine.
//! - [`otel_traces`] (example `otel_stdout`): the stack's spans exported through
//!   `tracing-opentelemetry` and OpenTelemetry's stdout exporter.
//! - [`reqwest_transport`] (example `reqwest_client`): `DrChronoClient` on the application's
//!   own `reqwest::Client`.
//! - [`tenants_scenario`] (example `tenants`): three practices of one application sharing
//!   its budget fairly.
//! - [`tonic_channel`] (example `tonic`): the rate-limit and retry layers on a tonic
//!   `Channel`.
//! - [`checks`]: the [`Report`](checks::Report) of checks the examples print.

pub mod axum_service;
pub mod checks;
pub mod hyper_stack;
pub mod loadgen_engine;
pub mod otel_traces;
pub mod reqwest_transport;
pub mod tenants_scenario;
pub mod tonic_channel;

/// The error the example modules return: anything, boxed (examples print it and exit 1).
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
