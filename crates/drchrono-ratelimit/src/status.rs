//! [`Status`]: what is left of each rule's budget and when the next request may go.

use std::time::SystemTime;

use crate::Rule;

/// A snapshot of a limiter: remaining budget per rule, the next reset and the earliest
/// instants the next request may go.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The instant the snapshot describes (wall clock).
    pub at: SystemTime,
    /// One entry per rule, in the configuration's order.
    pub rules: Vec<RuleStatus>,
    /// The soonest instant at which some rule's count drops, if any will.
    pub next_reset: Option<SystemTime>,
    /// The earliest instant an interactive request may go (`at` when it may go now).
    pub next_available: SystemTime,
    /// The earliest instant a background request may go.
    pub next_available_background: SystemTime,
    /// Set while a server 429 holds every caller: the end of that pause.
    pub paused_until: Option<SystemTime>,
}

/// The state of one rule in a [`Status`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuleStatus {
    /// The rule.
    pub rule: Rule,
    /// Requests still allowed now (interactive).
    pub remaining: u32,
    /// When the count next drops: the oldest charged request leaves the window (sliding), or
    /// the next boundary plus the margin (aligned). `None` for an empty sliding window.
    pub resets_at: Option<SystemTime>,
}
