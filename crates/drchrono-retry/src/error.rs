//! [`ConfigError`]: an invalid retry configuration, reported by the builders.

use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

/// A retry setting that cannot work, reported by [`crate::RetryPolicyBuilder::build`],
/// [`crate::Backoff::new`] and [`crate::RetryBudget::new`] instead of a panic.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The first delay's lower bound exceeds its upper bound.
    DelayRange {
        /// The lower bound given.
        min: Duration,
        /// The upper bound given.
        max: Duration,
    },
    /// The backoff multiplier is not a finite number of at least 1.
    Multiplier(f64),
    /// The budget window is too short to be split into its slots (it must be at least
    /// 10 nanoseconds; real windows are seconds to minutes).
    BudgetWindow(Duration),
    /// The budget's retry share is negative or not a finite number.
    BudgetRatio(f64),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DelayRange { min, max } => write!(
                f,
                "retry delay range is empty: lower bound {min:?} exceeds upper bound {max:?}"
            ),
            Self::Multiplier(m) => {
                write!(
                    f,
                    "backoff multiplier must be finite and at least 1, got {m}"
                )
            }
            Self::BudgetWindow(w) => {
                write!(f, "retry budget window {w:?} is too short")
            }
            Self::BudgetRatio(r) => {
                write!(
                    f,
                    "retry budget share must be finite and non-negative, got {r}"
                )
            }
        }
    }
}

impl StdError for ConfigError {}
