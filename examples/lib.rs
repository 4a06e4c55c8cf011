//! Runnable examples of drchrono-tower. Each example's `main` (beside this file) is a thin
//! wrapper around a module of this library, so that `tests/examples.rs` in the
//! integration-tests package runs the same code in-process.
//!
//! - [`axum_demo`]: an axum service whose handlers share one `DrChronoClient`.
//! - [`hyper_demo`]: the four layers composed by hand on hyper-util's client.
//! - [`load`]: the `loadgen` example's engine.
//! - [`tonic_demo`]: the rate-limit and retry layers on a tonic `Channel`.

pub mod axum_demo;
pub mod checks;
pub mod hyper_demo;
pub mod load;
pub mod tonic_demo;

/// The error the example modules return: anything, boxed (examples print it and exit 1).
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;
