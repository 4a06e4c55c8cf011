//! The pure limiter core: rule state and the earliest admissible instant, on integer
//! nanoseconds since the Unix epoch. No clock, no locking, no I/O.

use std::collections::VecDeque;

use crate::time::{duration_nanos, from_nanos};
use crate::{Priority, RateLimitConfig, Rule, RuleKind, RuleStatus, Status};

/// A rule compiled for arithmetic: spans in nanoseconds, margin folded in.
#[derive(Debug, Clone)]
struct Compiled {
    rule: Rule,
    /// Sliding: window + margin. Aligned: the period.
    span: u64,
    max: u32,
    /// The most background work may use (aligned rules keep a reserve).
    max_background: u32,
}

/// The most an aligned rule of `max` lets background work use, keeping `percent` % (rounded
/// up, leaving background at least one request).
pub(crate) fn background_max(max: u32, percent: u64) -> u32 {
    let reserve = (u64::from(max) * percent).div_ceil(100);
    let reserve = u32::try_from(reserve)
        .unwrap_or(u32::MAX)
        .min(max.saturating_sub(1));
    max - reserve
}

/// The rules and options of one limiter.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    rules: Vec<Compiled>,
    margin: u64,
    pacing: bool,
}

/// What one rule remembers.
#[derive(Debug, Clone)]
enum RuleState {
    /// The last `max` charged instants (oldest first), pruned as they leave the window.
    Sliding(VecDeque<u64>),
    /// Counts of two neighbouring aligned periods: `period` and `period + 1`. A request
    /// within the margin of a boundary is counted in both periods it may fall in.
    Aligned { period: u64, count: u32, next: u32 },
}

/// The mutable state of one application's budget.
#[derive(Debug, Clone)]
pub(crate) struct State {
    /// Latest `now` seen: time never runs backwards inside the limiter.
    last_now: u64,
    /// End of a pause set by a server 429 (0 = none).
    paused_until: u64,
    /// The latest charge, for pacing.
    last_charge: Option<u64>,
    rules: Vec<RuleState>,
}

impl Policy {
    pub(crate) fn new(config: &RateLimitConfig) -> Self {
        let margin = duration_nanos(config.safety_margin());
        let percent = u64::from(config.background_reserve_percent());
        let rules = config
            .rules()
            .iter()
            .map(|&rule| {
                let period = duration_nanos(rule.period());
                let max = rule.max();
                let (span, max_background) = match rule.kind() {
                    RuleKind::Sliding => (period.saturating_add(margin), max),
                    RuleKind::Aligned => (period, background_max(max, percent)),
                };
                Compiled {
                    rule,
                    span,
                    max,
                    max_background,
                }
            })
            .collect();
        Self {
            rules,
            margin,
            pacing: config.smooth_pacing(),
        }
    }

    pub(crate) fn new_state(&self) -> State {
        let rules = self
            .rules
            .iter()
            .map(|c| match c.rule.kind() {
                RuleKind::Sliding => {
                    RuleState::Sliding(VecDeque::with_capacity(c.max.min(4096) as usize))
                }
                RuleKind::Aligned => RuleState::Aligned {
                    period: 0,
                    count: 0,
                    next: 0,
                },
            })
            .collect();
        State {
            last_now: 0,
            paused_until: 0,
            last_charge: None,
            rules,
        }
    }

    /// The aligned periods a request at `t` may fall in, on a server whose clock is within
    /// the margin of ours: the period of `t - margin` and that of `t + margin` (equal, or
    /// neighbours, since every period is longer than twice the margin). `known` is the
    /// period the rule's state starts at, usually the answer.
    fn periods_of(&self, c: &Compiled, t: u64, known: u64) -> (u64, u64) {
        (
            period_index(t.saturating_sub(self.margin), c.span, known),
            period_index(t.saturating_add(self.margin), c.span, known),
        )
    }

    /// The first instant at which no request may fall in period `k` any more: the boundary
    /// that ends it, plus the margin.
    fn period_end(&self, c: &Compiled, k: u64) -> u64 {
        k.saturating_add(1)
            .saturating_mul(c.span)
            .saturating_add(self.margin)
    }

    /// The earliest instant `>= t` at which rule `c` alone admits a request, given `rs`.
    fn rule_earliest(
        &self,
        c: &Compiled,
        rs: &RuleState,
        last: Option<u64>,
        t: u64,
        p: Priority,
    ) -> u64 {
        match rs {
            RuleState::Sliding(log) => {
                let max = c.max as usize;
                if log.len() >= max {
                    // The oldest entry that still matters must leave (t - span, t].
                    t.max(log[log.len() - max].saturating_add(c.span))
                } else {
                    t
                }
            }
            &RuleState::Aligned {
                period,
                count,
                next,
            } => {
                let (k, k2) = self.periods_of(c, t, period);
                let max = match p {
                    Priority::Interactive => c.max,
                    Priority::Background => c.max_background,
                };
                let used = aligned_count(period, count, next, k);
                if used >= max {
                    return self.period_end(c, k);
                }
                if aligned_count(period, count, next, k2) >= max {
                    return self.period_end(c, k2);
                }
                if let (true, Some(last), true) = (self.pacing && used > 0, last, k == period) {
                    // Spread the remaining `max - used` evenly over the rest of the period.
                    let end = self.period_end(c, k);
                    let gap = end.saturating_sub(last).div_ceil(u64::from(max - used) + 1);
                    t.max(last.saturating_add(gap))
                } else {
                    t
                }
            }
        }
    }

    /// The earliest instant `>= now` that breaks no rule: the least fixed point of the
    /// per-rule earliest functions, each monotone and idempotent.
    pub(crate) fn earliest(&self, st: &State, now: u64, p: Priority) -> u64 {
        let mut t = now.max(st.last_now).max(st.paused_until);
        loop {
            let before = t;
            for (c, rs) in self.rules.iter().zip(&st.rules) {
                t = self.rule_earliest(c, rs, st.last_charge, t, p);
            }
            if t == before {
                return t;
            }
        }
    }

    /// Admits and charges a request at `now` if no rule forbids it; otherwise returns the
    /// earliest instant that breaks no rule. Atomic over all rules.
    pub(crate) fn try_acquire(&self, st: &mut State, now: u64, p: Priority) -> Result<(), u64> {
        let now = now.max(st.last_now);
        st.last_now = now;
        let earliest = self.earliest(st, now, p);
        if earliest > now {
            return Err(earliest);
        }
        self.charge(st, now);
        Ok(())
    }

    fn charge(&self, st: &mut State, now: u64) {
        for (c, rs) in self.rules.iter().zip(&mut st.rules) {
            match rs {
                RuleState::Sliding(log) => {
                    while log
                        .front()
                        .is_some_and(|&e| e.saturating_add(c.span) <= now)
                    {
                        log.pop_front();
                    }
                    log.push_back(now);
                    if log.len() > c.max as usize {
                        log.pop_front();
                    }
                }
                RuleState::Aligned {
                    period,
                    count,
                    next,
                } => {
                    let (k, k2) = self.periods_of(c, now, *period);
                    shift_to(period, count, next, k);
                    *count = count.saturating_add(1);
                    if k2 > k {
                        *next = next.saturating_add(1);
                    }
                }
            }
        }
        st.last_charge = Some(now);
    }

    /// A server 429 asks every caller to wait until `until`. When that reaches the next top
    /// of an aligned period, the server's period is spent: mark ours full, so it reopens at
    /// the boundary plus the margin.
    pub(crate) fn pause(&self, st: &mut State, now: u64, until: u64) {
        let now = now.max(st.last_now);
        st.paused_until = st.paused_until.max(until);
        for (c, rs) in self.rules.iter().zip(&mut st.rules) {
            if let RuleState::Aligned {
                period,
                count,
                next,
            } = rs
            {
                let raw = now / c.span;
                if until >= raw.saturating_add(1).saturating_mul(c.span) {
                    if raw > period.saturating_add(1) {
                        shift_to(period, count, next, raw);
                    }
                    if raw == *period {
                        *count = (*count).max(c.max);
                    } else if raw == period.saturating_add(1) {
                        *next = (*next).max(c.max);
                    }
                }
            }
        }
    }

    pub(crate) fn status(&self, st: &State, now: u64) -> Status {
        let now = now.max(st.last_now);
        let rules: Vec<RuleStatus> = self
            .rules
            .iter()
            .zip(&st.rules)
            .map(|(c, rs)| {
                let (used, resets_at) = match rs {
                    RuleState::Sliding(log) => {
                        let gone = log.partition_point(|&e| e.saturating_add(c.span) <= now);
                        let resets = log.get(gone).map(|&e| from_nanos(e.saturating_add(c.span)));
                        (u32::try_from(log.len() - gone).unwrap_or(u32::MAX), resets)
                    }
                    &RuleState::Aligned {
                        period,
                        count,
                        next,
                    } => {
                        let (k, k2) = self.periods_of(c, now, period);
                        let used = aligned_count(period, count, next, k)
                            .max(aligned_count(period, count, next, k2));
                        (used, Some(from_nanos(self.period_end(c, k))))
                    }
                };
                RuleStatus {
                    rule: c.rule,
                    remaining: c.max.saturating_sub(used),
                    resets_at,
                }
            })
            .collect();
        let next_reset = rules.iter().filter_map(|r| r.resets_at).min();
        Status {
            at: from_nanos(now),
            rules,
            next_reset,
            next_available: from_nanos(self.earliest(st, now, Priority::Interactive)),
            next_available_background: from_nanos(self.earliest(st, now, Priority::Background)),
            paused_until: (st.paused_until > now).then(|| from_nanos(st.paused_until)),
        }
    }
}

/// `t / span`, without dividing when the answer is `known` or `known + 1` (a division costs
/// more than the rest of a decision).
fn period_index(t: u64, span: u64, known: u64) -> u64 {
    let into = known
        .checked_mul(span)
        .and_then(|start| t.checked_sub(start));
    match into {
        Some(into) if into < span => known,
        Some(into) if into - span < span => known + 1,
        _ => t / span,
    }
}

/// The count of aligned period `k` in a state holding `period` and `period + 1`. Periods
/// before `period` are never asked about: time never runs backwards in the limiter.
fn aligned_count(period: u64, count: u32, next: u32, k: u64) -> u32 {
    if k == period {
        count
    } else if k == period.saturating_add(1) {
        next
    } else if k > period {
        0
    } else {
        count
    }
}

/// Moves the two-period window so that it starts at `k` (never backwards).
fn shift_to(period: &mut u64, count: &mut u32, next: &mut u32, k: u64) {
    if k == period.saturating_add(1) {
        *count = *next;
        *next = 0;
        *period = k;
    } else if k > *period {
        *count = 0;
        *next = 0;
        *period = k;
    }
}

#[cfg(test)]
mod tests {
    use super::period_index;

    #[test]
    fn period_index_is_division_whatever_the_hint() {
        let hour = 3_600_000_000_000;
        let spans = [1, 2, 7, hour, u64::MAX / 3, u64::MAX];
        let instants = [0, 1, 6, 7, 8, 13, 14, hour, u64::MAX - 1, u64::MAX];
        for (span, t) in spans.iter().flat_map(|&s| instants.map(|t| (s, t))) {
            let exact = t / span;
            for known in [0, 1, exact - exact.min(1), exact, exact.saturating_add(1)] {
                assert_eq!(period_index(t, span, known), exact, "{t} / {span}, {known}");
            }
            assert_eq!(period_index(t, span, u64::MAX), exact);
        }
    }
}
