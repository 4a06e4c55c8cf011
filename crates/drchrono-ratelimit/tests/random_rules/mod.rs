//! Random rule sets for the property tests that check the limiter against a brute-force
//! count (`oracle.rs`, `wall_steps.rs`): periods in milliseconds, small maxima, so that
//! every rule binds within a few dozen arrivals.

use std::time::Duration;

use drchrono_ratelimit::Rule;
use proptest::prelude::*;

/// 2026-01-05T10:37:00Z in milliseconds.
pub(crate) const BASE_MS: u64 = 1_767_609_420_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Sliding,
    Aligned,
}

/// A rule as the oracle counts it: `max` requests per `period` milliseconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct R {
    pub(crate) kind: Kind,
    pub(crate) max: u64,
    pub(crate) period: u64,
}

impl R {
    /// The limiter's rule for it.
    pub(crate) fn rule(&self) -> Rule {
        let (max, period) = (self.max as u32, Duration::from_millis(self.period));
        match self.kind {
            Kind::Sliding => Rule::sliding(max, period).unwrap(),
            Kind::Aligned => Rule::aligned(max, period).unwrap(),
        }
    }
}

pub(crate) fn rule_strategy() -> impl Strategy<Value = R> {
    prop_oneof![
        (1u64..=6, 1u64..=40).prop_map(|(max, period)| R {
            kind: Kind::Sliding,
            max,
            period
        }),
        (1u64..=12, 3u64..=80).prop_map(|(max, period)| R {
            kind: Kind::Aligned,
            max,
            period
        }),
    ]
}
