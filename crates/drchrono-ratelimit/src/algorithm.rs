//! The pure limiter core: rule state and the earliest admissible instant, on integer
//! nanoseconds. No clock, no locking, no I/O.
//!
//! Each decision gets two readings ([`Reading`]). Everything the core remembers (the sliding
//! rules' charged instants, pauses, the last charge) and every instant it computes is on the
//! monotonic one, which no step of the system clock moves. The wall clock's reading places a
//! request in the aligned periods, afresh at each decision; an aligned boundary becomes a
//! monotonic instant at the decision's offset between the two. When both readings agree (no
//! step since the state began), every decision is the one-clock decision it always was.

use std::collections::VecDeque;

use crate::time::{Reading, duration_nanos, from_nanos};
use crate::{NotUntil, Priority, RateLimitConfig, Rule, RuleKind, RuleStatus, Status};

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

/// A refused request: the earliest admissible instant, in nanoseconds, and the index of the
/// rule that set it ([`Policy::binding`]; `None`: a server's pause).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Refusal {
    pub(crate) earliest: u64,
    pub(crate) rule: Option<usize>,
}

impl Refusal {
    /// As a [`NotUntil`], the instant on the wall clock, the rule `policy`'s.
    #[inline]
    pub(crate) fn not_until(self, policy: &Policy) -> NotUntil {
        NotUntil::new(from_nanos(self.earliest), self.rule.map(|i| policy.rule(i)))
    }
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
    /// The last `max` charged instants (monotonic, oldest first), pruned as they leave the
    /// window.
    Sliding(VecDeque<u64>),
    /// Counts of aligned periods, by the wall clock.
    Aligned(Periods),
}

/// Counts of two neighbouring aligned periods: `period` and `period + 1`. A request within
/// the margin of a boundary is counted in both periods it may fall in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counts {
    period: u64,
    count: u32,
    next: u32,
}

impl Counts {
    /// The count of period `k >= self.period`.
    fn get(&self, k: u64) -> u32 {
        if k == self.period {
            self.count
        } else if k == self.period.saturating_add(1) {
            self.next
        } else {
            0
        }
    }
}

/// What an aligned rule remembers: the latest periods a request was charged in (the wall
/// clock only moves them forward), and the counts they held before the latest move, for a
/// wall clock that steps back.
#[derive(Debug, Clone, Copy, Default)]
struct Periods {
    latest: Counts,
    before: Counts,
}

impl Periods {
    /// The most requests the server may hold in period `k`, as far as the limiter can tell.
    ///
    /// From the latest period on, its counts. Behind it (the wall clock stepped back), the
    /// server may place in `k` every request charged since: the server's clock may be the
    /// one that was behind, or it stepped back with ours. So `k` holds what it held when it
    /// was current, if the limiter still knows (it keeps the counts from before the latest
    /// move), plus everything charged in the latest period; a period it no longer knows
    /// counts as full.
    fn count_of(&self, k: u64) -> u32 {
        if k >= self.latest.period {
            self.latest.get(k)
        } else if k >= self.before.period {
            self.before.get(k).saturating_add(self.latest.count)
        } else {
            u32::MAX
        }
    }

    /// Moves the latest periods forward to start at `k` (never backwards).
    fn shift_to(&mut self, k: u64) {
        let latest = &mut self.latest;
        if k <= latest.period {
            return;
        }
        self.before = *latest;
        *latest = Counts {
            period: k,
            count: latest.get(k),
            next: 0,
        };
    }
}

/// What one charge added to a [`State`] ([`Policy::try_acquire_charge`]), to take it back
/// ([`Policy::uncharge`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Charge {
    /// The monotonic instant charged: each sliding log's entry.
    mono: u64,
    /// Per rule, in order (`None` for a sliding one): the aligned period the charge was
    /// counted in, and whether it was counted in the next one too.
    periods: Vec<Option<(u64, bool)>>,
}

/// The mutable state of one application's budget. Instants are monotonic.
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

impl State {
    /// The latest monotonic reading a decision was made on.
    pub(crate) fn last_now(&self) -> u64 {
        self.last_now
    }
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
                RuleKind::Aligned => RuleState::Aligned(Periods::default()),
            })
            .collect();
        State {
            last_now: 0,
            paused_until: 0,
            last_charge: None,
            rules,
        }
    }

    /// The aligned periods a request at wall instant `w` may fall in, on a server whose
    /// clock is within the margin of ours: the period of `w - margin` and that of
    /// `w + margin` (equal, or neighbours, since every period is longer than twice the
    /// margin). `known` is the period the rule's state starts at, usually the answer.
    fn periods_of(&self, c: &Compiled, w: u64, known: u64) -> (u64, u64) {
        (
            period_index(w.saturating_sub(self.margin), c.span, known),
            period_index(w.saturating_add(self.margin), c.span, known),
        )
    }

    /// Where a request charged at wall instant `w` is counted: the period of `w - margin`
    /// (or the latest one, if that is behind it), and whether the next period too (`w` is
    /// within the margin of its top).
    #[inline]
    fn counted_in(&self, c: &Compiled, ps: &Periods, w: u64) -> (u64, bool) {
        let (k, k2) = self.periods_of(c, w, ps.latest.period);
        (k, k2 > k && k >= ps.latest.period)
    }

    /// The first wall instant at which no request may fall in period `k` any more: the
    /// boundary that ends it, plus the margin.
    fn period_end(&self, c: &Compiled, k: u64) -> u64 {
        k.saturating_add(1)
            .saturating_mul(c.span)
            .saturating_add(self.margin)
    }

    /// For a request that period `k` is too full for: the first wall instant at which it may
    /// fall in a later period that is not known to be full. The end of `k`; or, when `k` is
    /// one of the periods the limiter no longer knows (all counted as full), the end of the
    /// last of them.
    fn full_until(&self, c: &Compiled, ps: &Periods, k: u64) -> u64 {
        if k < ps.before.period {
            self.period_end(c, ps.before.period - 1)
        } else {
            self.period_end(c, k)
        }
    }

    /// The earliest monotonic instant `>= t` at which rule `c` alone admits a request, given
    /// `rs`; `now` maps wall instants to monotonic ones.
    fn rule_earliest(
        &self,
        c: &Compiled,
        rs: &RuleState,
        last: Option<u64>,
        t: u64,
        now: Reading,
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
            RuleState::Aligned(ps) => {
                let (k, k2) = self.periods_of(c, now.wall_at(t), ps.latest.period);
                let max = match p {
                    Priority::Interactive => c.max,
                    Priority::Background => c.max_background,
                };
                let used = ps.count_of(k);
                if used >= max {
                    return t.max(now.mono_at(self.full_until(c, ps, k)));
                }
                if ps.count_of(k2) >= max {
                    return t.max(now.mono_at(self.period_end(c, k2)));
                }
                let pacing = self.pacing && used > 0 && k == ps.latest.period;
                if let (true, Some(last)) = (pacing, last) {
                    // Spread the remaining `max - used` evenly over the rest of the period.
                    let end = now.mono_at(self.period_end(c, k));
                    let gap = end.saturating_sub(last).div_ceil(u64::from(max - used) + 1);
                    t.max(last.saturating_add(gap))
                } else {
                    t
                }
            }
        }
    }

    /// The earliest monotonic instant `>= now` that breaks no rule: the least fixed point of
    /// the per-rule earliest functions, each monotone and idempotent.
    pub(crate) fn earliest(&self, st: &State, now: Reading, p: Priority) -> u64 {
        self.fixed_point(st, now, p, |_| {})
    }

    /// Which bound set the [`earliest`](Self::earliest) instant of a refused request: the
    /// index of the rule that moved it last on the way to the fixed point, which is the rule
    /// whose own earliest instant is the latest; `None` when no rule moves it past the end
    /// of a server's pause (a rule that frees up at that very instant leaves it to the
    /// pause). Asked only on refusal, so that admissions pay nothing for it.
    pub(crate) fn binding(&self, st: &State, now: Reading, p: Priority) -> Option<usize> {
        let mut binding = None;
        self.fixed_point(st, now, p, |rule| binding = Some(rule));
        binding
    }

    /// The rule at `index` of [`binding`](Self::binding).
    ///
    /// # Panics
    /// When `index` is not one of the policy's rules.
    pub(crate) fn rule(&self, index: usize) -> Rule {
        self.rules[index].rule
    }

    /// The least fixed point from `now` (or the end of a pause), telling `moved` the index
    /// of each rule that moves it. Inlined: for [`earliest`](Self::earliest), `moved` does
    /// nothing and the bookkeeping compiles away.
    #[inline(always)]
    fn fixed_point(
        &self,
        st: &State,
        now: Reading,
        p: Priority,
        mut moved: impl FnMut(usize),
    ) -> u64 {
        let now = now.not_before(st.last_now);
        let mut t = now.mono.max(st.paused_until);
        loop {
            let before = t;
            for (index, (c, rs)) in self.rules.iter().zip(&st.rules).enumerate() {
                let next = self.rule_earliest(c, rs, st.last_charge, t, now, p);
                if next != t {
                    moved(index);
                }
                t = next;
            }
            if t == before {
                return t;
            }
        }
    }

    /// Admits and charges a request at `now` if no rule forbids it; otherwise returns the
    /// earliest monotonic instant that breaks no rule. Atomic over all rules.
    pub(crate) fn try_acquire(&self, st: &mut State, now: Reading, p: Priority) -> Result<(), u64> {
        let now = self.admit(st, now, p)?;
        self.charge(st, now);
        Ok(())
    }

    /// [`try_acquire`](Self::try_acquire), returning what the charge added, so that it can
    /// be taken back ([`uncharge`](Self::uncharge)) if its request is never sent.
    pub(crate) fn try_acquire_charge(
        &self,
        st: &mut State,
        now: Reading,
        p: Priority,
    ) -> Result<Charge, u64> {
        let now = self.admit(st, now, p)?;
        Ok(self.charge_with_receipt(st, now))
    }

    /// [`charge`](Self::charge), returning what it added.
    fn charge_with_receipt(&self, st: &mut State, now: Reading) -> Charge {
        let periods = self
            .rules
            .iter()
            .zip(&st.rules)
            .map(|(c, rs)| match rs {
                RuleState::Sliding(_) => None,
                RuleState::Aligned(ps) => {
                    let (k, next) = self.counted_in(c, ps, now.wall);
                    Some((k.max(ps.latest.period), next))
                }
            })
            .collect();
        self.charge(st, now);
        Charge {
            mono: now.mono,
            periods,
        }
    }

    /// The reading a request is decided on (time never runs backwards), if no rule forbids
    /// it then; otherwise the earliest monotonic instant that breaks no rule.
    #[inline(always)]
    fn admit(&self, st: &mut State, now: Reading, p: Priority) -> Result<Reading, u64> {
        let now = now.not_before(st.last_now);
        st.last_now = now.mono;
        let earliest = self.earliest(st, now, p);
        if earliest > now.mono {
            return Err(earliest);
        }
        Ok(now)
    }

    /// Takes back what `charge` added, for a request that was never sent: its entry in each
    /// sliding log (if it is still there) and its count in each aligned period the rule
    /// still remembers. What it cannot take back stays charged (the pacing's last charge,
    /// an entry a rebase moved): the error is on the safe side.
    pub(crate) fn uncharge(&self, st: &mut State, charge: &Charge) {
        for (rs, counted) in st.rules.iter_mut().zip(&charge.periods) {
            match (rs, counted) {
                (RuleState::Sliding(log), _) => {
                    if let Some(i) = log.iter().rposition(|&e| e == charge.mono) {
                        log.remove(i);
                    }
                }
                (RuleState::Aligned(ps), Some((period, next))) => {
                    // The counts hold the charge in the period it was counted in, and in
                    // the next one if it was counted there too: in the latest counts, and
                    // in the earlier ones if they were moved on since (a copy made after
                    // the charge, the only kind whose period can match).
                    for counts in [&mut ps.latest, &mut ps.before] {
                        if counts.period == *period {
                            counts.count = counts.count.saturating_sub(1);
                            if *next {
                                counts.next = counts.next.saturating_sub(1);
                            }
                        } else if *next && counts.period == period.saturating_add(1) {
                            counts.count = counts.count.saturating_sub(1);
                        }
                    }
                }
                (RuleState::Aligned(_), None) => {}
            }
        }
    }

    /// Charges a request admitted at `now` by a credit ([`Credits`](crate::credits::Credits)):
    /// one the headroom at the credit's grant covered, so no rule forbids it.
    pub(crate) fn charge_credited(&self, st: &mut State, now: Reading) {
        let now = now.not_before(st.last_now);
        st.last_now = now.mono;
        self.charge(st, now);
    }

    /// How many more requests of either priority every rule admits at any instant from `now`
    /// on, at `now`'s offset between the clocks, had they all been charged at once: what
    /// may be granted as credits. Sliding windows only lose entries as time passes; the
    /// aligned periods of later wall instants are this one's, the next, or fresh ones. None
    /// while a server's pause lasts, with pacing (each charge moves the next instant), and
    /// while the wall clock stands behind an aligned rule's latest period (after a step
    /// back: a request then counts against earlier periods too).
    pub(crate) fn headroom(&self, st: &State, now: Reading) -> u32 {
        let now = now.not_before(st.last_now);
        if self.pacing || st.paused_until > now.mono {
            return 0;
        }
        let mut room = u32::MAX;
        for (c, rs) in self.rules.iter().zip(&st.rules) {
            let left = match rs {
                RuleState::Sliding(log) => {
                    // Every charge prunes what left the window: usually nothing has since,
                    // and a long log is not searched.
                    let expired = |&e: &u64| e.saturating_add(c.span) <= now.mono;
                    let gone = if log.front().is_some_and(expired) {
                        log.partition_point(expired)
                    } else {
                        0
                    };
                    let held = u32::try_from(log.len() - gone).unwrap_or(u32::MAX);
                    c.max.saturating_sub(held)
                }
                RuleState::Aligned(ps) => {
                    let (k, k2) = self.periods_of(c, now.wall, ps.latest.period);
                    if k < ps.latest.period {
                        return 0;
                    }
                    let used = ps.count_of(k).max(ps.count_of(k2));
                    c.max_background.saturating_sub(used)
                }
            };
            room = room.min(left);
        }
        room
    }

    fn charge(&self, st: &mut State, now: Reading) {
        for (c, rs) in self.rules.iter().zip(&mut st.rules) {
            match rs {
                RuleState::Sliding(log) => {
                    while log
                        .front()
                        .is_some_and(|&e| e.saturating_add(c.span) <= now.mono)
                    {
                        log.pop_front();
                    }
                    log.push_back(now.mono);
                    if log.len() > c.max as usize {
                        log.pop_front();
                    }
                }
                RuleState::Aligned(ps) => {
                    let (k, next) = self.counted_in(c, ps, now.wall);
                    // Behind the latest period (the wall clock stepped back), the request is
                    // counted in the latest one, which every earlier period's count includes.
                    ps.shift_to(k);
                    let latest = &mut ps.latest;
                    latest.count = latest.count.saturating_add(1);
                    if next {
                        latest.next = latest.next.saturating_add(1);
                    }
                }
            }
        }
        st.last_charge = Some(now.mono);
    }

    /// A server 429 asks every caller to wait until wall instant `until`. When that reaches
    /// the next top of an aligned period, the server's period is spent: mark ours full, so it
    /// reopens at the boundary plus the margin.
    pub(crate) fn pause(&self, st: &mut State, now: Reading, until: u64) {
        let now = now.not_before(st.last_now);
        st.paused_until = st.paused_until.max(now.mono_at(until));
        for (c, rs) in self.rules.iter().zip(&mut st.rules) {
            if let RuleState::Aligned(ps) = rs {
                let raw = period_index(now.wall, c.span, ps.latest.period);
                if until >= raw.saturating_add(1).saturating_mul(c.span) {
                    if raw > ps.latest.period.saturating_add(1) {
                        ps.shift_to(raw);
                    }
                    let counts = if raw >= ps.latest.period {
                        &mut ps.latest
                    } else {
                        &mut ps.before
                    };
                    if raw == counts.period {
                        counts.count = counts.count.max(c.max);
                    } else if raw == counts.period.saturating_add(1) {
                        counts.next = counts.next.max(c.max);
                    }
                }
            }
        }
    }

    pub(crate) fn status(&self, st: &State, now: Reading) -> Status {
        let now = now.not_before(st.last_now);
        let wall = |mono: u64| from_nanos(now.wall_at(mono));
        let rules: Vec<RuleStatus> = self
            .rules
            .iter()
            .zip(&st.rules)
            .map(|(c, rs)| {
                let (used, resets_at) = match rs {
                    RuleState::Sliding(log) => {
                        let gone = log.partition_point(|&e| e.saturating_add(c.span) <= now.mono);
                        let resets = log.get(gone).map(|&e| wall(e.saturating_add(c.span)));
                        (u32::try_from(log.len() - gone).unwrap_or(u32::MAX), resets)
                    }
                    RuleState::Aligned(ps) => {
                        let (k, k2) = self.periods_of(c, now.wall, ps.latest.period);
                        let used = ps.count_of(k).max(ps.count_of(k2));
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
            at: from_nanos(now.wall),
            rules,
            next_reset,
            next_available: wall(self.earliest(st, now, Priority::Interactive)),
            next_available_background: wall(self.earliest(st, now, Priority::Background)),
            paused_until: (st.paused_until > now.mono).then(|| wall(st.paused_until)),
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

/// The state as plain numbers, for a backend that keeps it outside the process.
pub(crate) mod snapshot;

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Rule;

    const SEC: u64 = 1_000_000_000;
    /// 2026-01-05T10:59:00Z.
    const T0: u64 = 1_767_610_740 * SEC;
    const HOUR_11: u64 = 1_767_610_800 * SEC;

    fn policy(rules: impl IntoIterator<Item = Rule>) -> Policy {
        let config = RateLimitConfig::builder()
            .rules(rules)
            .safety_margin(Duration::ZERO)
            .build()
            .unwrap();
        Policy::new(&config)
    }

    /// Monotonic `mono`, the wall clock `step` ahead (negative: behind).
    fn at(mono: u64, step: i64) -> Reading {
        Reading {
            mono,
            wall: mono.saturating_add_signed(step),
        }
    }

    #[test]
    fn sliding_windows_ignore_steps_of_the_wall_clock() {
        let policy = policy([Rule::sliding(2, Duration::from_secs(1)).unwrap()]);
        for step in [60 * SEC as i64, -60 * SEC as i64, 3_600 * SEC as i64] {
            let mut st = policy.new_state();
            let p = Priority::Interactive;
            policy.try_acquire(&mut st, at(T0, 0), p).unwrap();
            policy.try_acquire(&mut st, at(T0, 0), p).unwrap();
            // 1 ms later on the monotonic clock, the wall clock stepped: still the same
            // rolling second, which ends 1 s after the first two on the monotonic clock.
            let stepped = at(T0 + 1_000_000, step);
            assert_eq!(policy.try_acquire(&mut st, stepped, p), Err(T0 + SEC));
            assert!(policy.try_acquire(&mut st, at(T0 + SEC, step), p).is_ok());
            let status = policy.status(&st, at(T0 + SEC, step));
            assert_eq!(status.at, from_nanos(stepped.wall_at(T0 + SEC)));
            assert_eq!(status.rules[0].remaining, 1);
            assert_eq!(
                status.rules[0].resets_at,
                Some(from_nanos(stepped.wall_at(T0 + 2 * SEC)))
            );
        }
    }

    #[test]
    fn aligned_rules_follow_the_wall_clock_at_each_decision() {
        let policy = policy([Rule::aligned(1, Duration::from_secs(3600)).unwrap()]);
        let mut st = policy.new_state();
        let p = Priority::Interactive;
        policy.try_acquire(&mut st, at(T0, 0), p).unwrap();
        // Full until 11:00 on the wall clock: 60 s on the monotonic clock at this offset…
        assert_eq!(
            policy.try_acquire(&mut st, at(T0 + SEC, 0), p),
            Err(T0 + 60 * SEC)
        );
        // …and 30 s once the wall clock stepped 30 s ahead.
        let step = 30 * SEC as i64;
        assert_eq!(
            policy.try_acquire(&mut st, at(T0 + 2 * SEC, step), p),
            Err(T0 + 30 * SEC)
        );
        // A step of 60 s into the next hour opens it at once.
        let step = 60 * SEC as i64;
        assert!(
            policy
                .try_acquire(&mut st, at(T0 + 3 * SEC, step), p)
                .is_ok()
        );
        // Which is then full until 12:00 on the wall clock.
        let refused = policy.try_acquire(&mut st, at(T0 + 4 * SEC, step), p);
        assert_eq!(refused, Err(HOUR_11 + 3_600 * SEC - 60 * SEC));
    }

    #[test]
    fn a_wall_clock_stepping_back_counts_everything_charged_since() {
        let policy = policy([Rule::aligned(3, Duration::from_secs(3600)).unwrap()]);
        let mut st = policy.new_state();
        let p = Priority::Interactive;
        // Two in the hour of 10:00, one at 11:00:10 (the monotonic and wall clocks agree).
        policy.try_acquire(&mut st, at(T0, 0), p).unwrap();
        policy.try_acquire(&mut st, at(T0, 0), p).unwrap();
        let eleven = HOUR_11 + 10 * SEC;
        policy.try_acquire(&mut st, at(eleven, 0), p).unwrap();
        // NTP steps the wall clock 60 s back, into the hour of 10:00 again: a server whose
        // clock stepped back too holds 2 there, one whose clock was behind holds 3 (ours of
        // 11:00 included). Nothing goes until the wall clock is in the hour of 11:00 again.
        let back = -60 * SEC as i64;
        let refused = policy.try_acquire(&mut st, at(eleven + SEC, back), p);
        assert_eq!(refused, Err(eleven + 50 * SEC));
        let status = policy.status(&st, at(eleven + SEC, back));
        assert_eq!(status.rules[0].remaining, 0);
        assert_eq!(status.next_available, from_nanos(HOUR_11));
        // Then the hour of 11:00 has 2 left.
        policy
            .try_acquire(&mut st, at(eleven + 50 * SEC, back), p)
            .unwrap();
        policy
            .try_acquire(&mut st, at(eleven + 51 * SEC, back), p)
            .unwrap();
        assert!(
            policy
                .try_acquire(&mut st, at(eleven + 52 * SEC, back), p)
                .is_err()
        );
    }

    #[test]
    fn a_request_behind_the_latest_period_is_counted_in_it() {
        let policy = policy([Rule::aligned(3, Duration::from_secs(3600)).unwrap()]);
        let mut st = policy.new_state();
        let p = Priority::Interactive;
        let eleven = HOUR_11 + 10 * SEC;
        policy.try_acquire(&mut st, at(eleven, 0), p).unwrap();
        // Back in the hour of 10:00, which had nothing: 2 more may go there…
        let back = -60 * SEC as i64;
        policy
            .try_acquire(&mut st, at(eleven + SEC, back), p)
            .unwrap();
        policy
            .try_acquire(&mut st, at(eleven + 2 * SEC, back), p)
            .unwrap();
        assert!(
            policy
                .try_acquire(&mut st, at(eleven + 3 * SEC, back), p)
                .is_err()
        );
        // …and they count in the hour of 11:00 too (a server whose clock did not step).
        assert!(
            policy
                .try_acquire(&mut st, at(eleven + 60 * SEC, back), p)
                .is_err()
        );
        assert_eq!(
            policy.status(&st, at(eleven + 60 * SEC, back)).rules[0].remaining,
            0
        );
    }

    #[test]
    fn a_period_the_limiter_forgot_counts_as_full() {
        let policy = policy([Rule::aligned(3, Duration::from_secs(3600)).unwrap()]);
        let mut st = policy.new_state();
        let p = Priority::Interactive;
        policy.try_acquire(&mut st, at(T0, 0), p).unwrap();
        policy.try_acquire(&mut st, at(HOUR_11, 0), p).unwrap();
        policy
            .try_acquire(&mut st, at(HOUR_11 + 3_600 * SEC, 0), p)
            .unwrap();
        // The limiter remembers the hours of 11:00 and 12:00, not that of 10:00: stepped
        // two hours back, into it, nothing goes until the wall clock reaches 11:00.
        let mono = HOUR_11 + 3_601 * SEC;
        let back = -7_200 * SEC as i64;
        let refused = policy.try_acquire(&mut st, at(mono, back), p);
        assert_eq!(refused, Err(mono + 3_599 * SEC));
        // A glitch forward and back: the hour before the glitch is remembered.
        let mut st = policy.new_state();
        policy.try_acquire(&mut st, at(T0, 0), p).unwrap();
        policy
            .try_acquire(&mut st, at(T0 + SEC, 7_200 * SEC as i64), p)
            .unwrap();
        // Back at 10:59:02: 1 + 1 charged; one more may go.
        policy.try_acquire(&mut st, at(T0 + 2 * SEC, 0), p).unwrap();
        assert_eq!(
            policy.try_acquire(&mut st, at(T0 + 3 * SEC, 0), p),
            Err(HOUR_11)
        );
    }

    #[test]
    fn a_pause_marks_the_servers_period_spent_on_the_wall_clock() {
        let policy = policy([Rule::aligned(5, Duration::from_secs(3600)).unwrap()]);
        let mut st = policy.new_state();
        let p = Priority::Interactive;
        let ahead = 30 * SEC as i64;
        policy.try_acquire(&mut st, at(T0, ahead), p).unwrap();
        // At 10:59:31 (wall), the server asks for 40 s: past 11:00, the hour is spent.
        let now = at(T0 + SEC, ahead);
        policy.pause(&mut st, now, now.wall + 40 * SEC);
        // The pause runs 40 s on the monotonic clock; the hour of 11:00 reopens at once.
        assert_eq!(policy.earliest(&st, now, p), T0 + 41 * SEC);
        assert!(
            policy
                .try_acquire(&mut st, at(T0 + 41 * SEC, ahead), p)
                .is_ok()
        );
    }

    /// DrChrono's three rules (rolling second, rolling 10 minutes, clock hour) with these
    /// maxima, no margin.
    fn drchrono(second: u32, window: u32, hour: u32) -> Policy {
        policy([
            Rule::sliding(second, Duration::from_secs(1)).unwrap(),
            Rule::sliding(window, Duration::from_secs(600)).unwrap(),
            Rule::aligned(hour, Duration::from_secs(3600)).unwrap(),
        ])
    }

    /// The binding rule of a request at `now` after `charges` at the top of the hour of
    /// 11:00, and the earliest instant it names.
    fn refused_by(policy: &Policy, charges: u32, now: Reading) -> (Option<usize>, u64) {
        let mut st = policy.new_state();
        let p = Priority::Interactive;
        for _ in 0..charges {
            policy.try_acquire(&mut st, at(HOUR_11, 0), p).unwrap();
        }
        let earliest = policy.try_acquire(&mut st, now, p).unwrap_err();
        (policy.binding(&st, now, p), earliest)
    }

    #[test]
    fn the_binding_rule_is_the_one_whose_earliest_instant_is_the_latest() {
        let now = at(HOUR_11, 0);
        // Each rule alone refusing.
        let per_second = drchrono(1, 10, 10);
        assert_eq!(refused_by(&per_second, 1, now), (Some(0), HOUR_11 + SEC));
        let per_window = drchrono(5, 2, 10);
        assert_eq!(
            refused_by(&per_window, 2, now),
            (Some(1), HOUR_11 + 600 * SEC)
        );
        let per_hour = drchrono(5, 10, 2);
        assert_eq!(
            refused_by(&per_hour, 2, now),
            (Some(2), HOUR_11 + 3_600 * SEC)
        );
        // Several refusing: the one that frees up last.
        let all = drchrono(1, 1, 1);
        assert_eq!(refused_by(&all, 1, now), (Some(2), HOUR_11 + 3_600 * SEC));
        let second_and_window = drchrono(1, 1, 5);
        assert_eq!(
            refused_by(&second_and_window, 1, now),
            (Some(1), HOUR_11 + 600 * SEC)
        );
        // Later in the second, once it has passed, the window still refuses.
        let later = at(HOUR_11 + 2 * SEC, 0);
        assert_eq!(
            refused_by(&second_and_window, 1, later),
            (Some(1), HOUR_11 + 600 * SEC)
        );
    }

    #[test]
    fn a_pause_binds_unless_a_rule_holds_the_request_longer() {
        let policy = drchrono(1, 10, 10);
        let p = Priority::Interactive;
        let now = at(HOUR_11, 0);
        let mut st = policy.new_state();
        // Nothing charged: the pause alone holds the request.
        policy.pause(&mut st, now, HOUR_11 + 7 * SEC);
        assert_eq!(policy.try_acquire(&mut st, now, p), Err(HOUR_11 + 7 * SEC));
        assert_eq!(policy.binding(&st, now, p), None);
        // A pause shorter than the rolling second: the rule holds it longer.
        let mut st = policy.new_state();
        policy.try_acquire(&mut st, now, p).unwrap();
        policy.pause(&mut st, now, HOUR_11 + SEC / 2);
        assert_eq!(policy.try_acquire(&mut st, now, p), Err(HOUR_11 + SEC));
        assert_eq!(policy.binding(&st, now, p), Some(0));
        // One ending as the second does: the pause set the instant first.
        policy.pause(&mut st, now, HOUR_11 + SEC);
        assert_eq!(policy.binding(&st, now, p), None);
        // One past it.
        policy.pause(&mut st, now, HOUR_11 + 2 * SEC);
        assert_eq!(policy.try_acquire(&mut st, now, p), Err(HOUR_11 + 2 * SEC));
        assert_eq!(policy.binding(&st, now, p), None);
        assert_eq!(
            policy.rule(0),
            Rule::sliding(1, Duration::from_secs(1)).unwrap()
        );
    }

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

    /// DrChrono's three rules with a 100 ms margin around the top of the hour.
    fn drchrono_policy() -> Policy {
        Policy::new(&RateLimitConfig::builder().build().unwrap())
    }

    #[test]
    fn an_uncharged_request_leaves_the_state_it_found() {
        let policy = drchrono_policy();
        let p = Priority::Interactive;
        // Within the margin of the top of the hour: counted in both hours.
        for t in [T0, HOUR_11 - 50_000_000, HOUR_11 + 50_000_000] {
            let mut st = policy.new_state();
            // Within every window, so that the charge prunes nothing the uncharge cannot
            // put back (what it prunes has left the window and no longer counts).
            policy.try_acquire(&mut st, at(t - SEC / 2, 0), p).unwrap();
            let before = st.rules.clone();
            let charge = policy.try_acquire_charge(&mut st, at(t, 0), p).unwrap();
            assert_ne!(format!("{:?}", st.rules), format!("{before:?}"));
            policy.uncharge(&mut st, &charge);
            assert_eq!(format!("{:?}", st.rules), format!("{before:?}"), "{t}");
        }
    }

    #[test]
    fn an_uncharge_after_the_hour_moved_on_takes_back_both_hours_counts() {
        let policy = policy([Rule::aligned(2, Duration::from_secs(3_600)).unwrap()]);
        let p = Priority::Interactive;
        let mut st = policy.new_state();
        let charge = policy.try_acquire_charge(&mut st, at(T0, 0), p).unwrap();
        policy.try_acquire(&mut st, at(T0, 0), p).unwrap();
        // Another request in the next hour moves the counts on.
        policy.try_acquire(&mut st, at(HOUR_11, 0), p).unwrap();
        policy.uncharge(&mut st, &charge);
        // 10:00-11:00 holds one again (the state, read back as a step would read it).
        let RuleState::Aligned(ps) = &st.rules[0] else {
            unreachable!()
        };
        assert_eq!(ps.count_of(HOUR_11 / (3_600 * SEC) - 1), 1 + 1);
        assert_eq!(ps.before.count, 1);
        assert_eq!(ps.latest.count, 1);
    }

    #[test]
    fn an_uncharge_within_the_margin_takes_back_the_next_hours_count_after_it_moved_on() {
        let config = RateLimitConfig::builder()
            .rules([Rule::aligned(3, Duration::from_secs(3_600)).unwrap()])
            .safety_margin(Duration::from_millis(100))
            .build()
            .unwrap();
        let policy = Policy::new(&config);
        let p = Priority::Interactive;
        let mut st = policy.new_state();
        // 50 ms before 11:00: counted in 10:00-11:00 and in 11:00-12:00.
        let charge = policy
            .try_acquire_charge(&mut st, at(HOUR_11 - 50_000_000, 0), p)
            .unwrap();
        policy
            .try_acquire(&mut st, at(HOUR_11 + SEC, 0), p)
            .unwrap();
        policy.uncharge(&mut st, &charge);
        let RuleState::Aligned(ps) = &st.rules[0] else {
            unreachable!()
        };
        let hour_11 = HOUR_11 / (3_600 * SEC);
        assert_eq!((ps.latest.period, ps.latest.count), (hour_11, 1));
        assert_eq!((ps.before.count, ps.before.next), (0, 0));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(200))]

        /// Taking back one charge among many decides every later request as if it had
        /// never been made: small maxima, so that every rule binds, and arrivals across the
        /// top of the hour (within the margin of it too).
        #[test]
        fn an_uncharge_is_as_if_the_charge_had_never_been_made(
            gaps in proptest::collection::vec(0u64..200, 1..60),
            pick in 0usize..60,
            probes in proptest::collection::vec(0u64..5_000, 1..8),
        ) {
            let config = RateLimitConfig::builder()
                .rules([
                    Rule::sliding(3, Duration::from_secs(1)).unwrap(),
                    Rule::sliding(6, Duration::from_secs(60)).unwrap(),
                    Rule::aligned(4, Duration::from_secs(3_600)).unwrap(),
                ])
                .safety_margin(Duration::from_millis(100))
                .background_reserve_percent(0)
                .build()
                .unwrap();
            let policy = Policy::new(&config);
            let p = Priority::Interactive;
            let start = HOUR_11 - 2 * SEC;
            let mut instants = Vec::new();
            let mut t = start;
            for gap in gaps {
                t += gap * 1_000_000;
                instants.push(t);
            }
            // The requests the rules admit, in order (an admitted request never overfills
            // a sliding log, whose oldest entries would be dropped).
            let mut admitted = Vec::new();
            let mut all = policy.new_state();
            for &t in &instants {
                if policy.try_acquire(&mut all, at(t, 0), p).is_ok() {
                    admitted.push(t);
                }
            }
            let pick = pick % admitted.len();
            // The same charges, one of them with its receipt; and all but that one.
            let mut with = policy.new_state();
            let mut without = policy.new_state();
            let mut charge = None;
            for (i, &t) in admitted.iter().enumerate() {
                if i == pick {
                    with.last_now = t;
                    charge = Some(policy.charge_with_receipt(&mut with, at(t, 0)));
                } else {
                    policy.charge_credited(&mut with, at(t, 0));
                    policy.charge_credited(&mut without, at(t, 0));
                }
            }
            policy.uncharge(&mut with, &charge.unwrap());
            for probe in probes {
                let now = at(t + probe * 1_000_000, 0);
                for p in [p, Priority::Background] {
                    proptest::prop_assert_eq!(
                        policy.earliest(&with, now, p),
                        policy.earliest(&without, now, p)
                    );
                }
            }
        }
    }
}
