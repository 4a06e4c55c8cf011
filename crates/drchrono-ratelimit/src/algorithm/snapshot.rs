//! A limiter's state as plain numbers, for a backend that keeps it outside the process (the
//! file backend): exported compacted to what can still matter, imported back checked, for
//! this policy's rules, as of the decision about to be made.
//!
//! A snapshot lives on one clock, the wall clock every process of a host shares: each of its
//! instants is both readings of a [`Reading`] whose clocks agree. Such a clock can step back
//! (NTP, a virtual machine restored, a clock that was wrong at boot and then corrected), and
//! a state kept across processes outlives the step, so the import handles it:
//!
//! - A reading up to [`STEP_TOLERANCE`] behind the state's latest instant is taken as that
//!   instant (the core's rule: time never runs backwards). Processes read the clock before
//!   they take their turn at the state, so their readings arrive slightly out of order.
//! - Further behind, the clock stepped back. Every charged instant after the reading is
//!   taken as the reading itself. That is conservative whichever clock was right: if the
//!   reading is, those requests were sent before it, so they leave every window no later
//!   than counted; if the earlier readings were, our clock now runs behind by at least the
//!   step, so a window ending at `reading + W` on it ends later still on the true one. A
//!   429 pause keeps what remained of it at the latest decision. Aligned periods are left to
//!   the core, which counts a step back into an earlier period conservatively: that
//!   period's count plus everything charged since, and a period it no longer knows as full.
//! - More than the longest rule (plus the margin) behind, the state comes from a clock that
//!   was far ahead: kept as it is, it would hold the budget until the clock reached it again
//!   (years, after a clock wrong at boot), in every process to come. So each aligned count of
//!   the current period or later is added into the current period (a request charged
//!   within the margin of its end in the next one too), which is conservative if the clock
//!   is right now; if it is the one that is behind, it is corrected soon (NTP), and the
//!   server may meanwhile see one period's worth more in the period it is in.

use super::{Compiled, Counts, Periods, Policy, RuleState, State};
use crate::RuleKind;
use crate::time::duration_nanos;

/// How far behind the state's latest instant a reading may be and still be taken as that
/// instant: 1 s, in nanoseconds.
pub(crate) const STEP_TOLERANCE: u64 = 1_000_000_000;

/// Everything a [`State`] holds, compacted, with each rule's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    /// The latest instant a decision was made at.
    pub(crate) last_now: u64,
    /// End of a server 429's pause (0 = none).
    pub(crate) paused_until: u64,
    /// The latest charge.
    pub(crate) last_charge: Option<u64>,
    /// One per rule of the policy that exported it, in its order.
    pub(crate) rules: Vec<RuleSnapshot>,
}

/// What one rule remembers, and which rule it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RuleSnapshot {
    /// The rule's maximum when exported (informative: a changed maximum keeps the state).
    pub(crate) max: u32,
    /// The window or period, in nanoseconds, without the margin.
    pub(crate) period: u64,
    pub(crate) memory: Memory,
}

/// A rule's memory, by kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Memory {
    /// The charged instants still inside the window plus the margin (at most `max`), oldest
    /// first.
    Sliding(Vec<u64>),
    /// The latest periods a request was charged in, and the counts before the latest move.
    Aligned {
        latest: PeriodCounts,
        before: PeriodCounts,
    },
}

/// The counts of aligned period `period` (its index since the Unix epoch) and of the next
/// one (requests charged within the margin of the boundary between them count in both).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PeriodCounts {
    pub(crate) period: u64,
    pub(crate) count: u32,
    pub(crate) next: u32,
}

impl From<Counts> for PeriodCounts {
    fn from(counts: Counts) -> Self {
        Self {
            period: counts.period,
            count: counts.count,
            next: counts.next,
        }
    }
}

impl From<PeriodCounts> for Counts {
    fn from(counts: PeriodCounts) -> Self {
        Self {
            period: counts.period,
            count: counts.count,
            next: counts.next,
        }
    }
}

/// A snapshot no limiter can have exported: what is wrong with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct InvalidSnapshot(pub(crate) &'static str);

/// An imported state, and what the import had to make up.
#[derive(Debug)]
pub(crate) struct Imported {
    pub(crate) state: State,
    /// Rules of the policy the snapshot held nothing for (a rule added to the
    /// configuration): each counted as spent by everything up to the latest charge.
    pub(crate) unmatched: usize,
    /// How far behind the snapshot's latest instant the reading was, in nanoseconds, when
    /// beyond [`STEP_TOLERANCE`] (the clock stepped back).
    pub(crate) stepped_back: Option<u64>,
}

impl Policy {
    /// The state, compacted to what a later decision can still see: the charged instants
    /// inside each window plus the margin (at most `max` of them), a pause that has not
    /// ended, the aligned counts.
    pub(crate) fn export(&self, st: &State) -> Snapshot {
        let now = st.last_now;
        let rules = self
            .rules
            .iter()
            .zip(&st.rules)
            .map(|(c, rs)| RuleSnapshot {
                max: c.max,
                period: duration_nanos(c.rule.period()),
                memory: match rs {
                    RuleState::Sliding(log) => {
                        let gone = log.partition_point(|&e| e.saturating_add(c.span) <= now);
                        let skip = gone.max(log.len().saturating_sub(c.max as usize));
                        Memory::Sliding(log.iter().skip(skip).copied().collect())
                    }
                    RuleState::Aligned(ps) => Memory::Aligned {
                        latest: ps.latest.into(),
                        before: ps.before.into(),
                    },
                },
            })
            .collect();
        Snapshot {
            last_now: now,
            paused_until: if st.paused_until > now {
                st.paused_until
            } else {
                0
            },
            last_charge: st.last_charge,
            rules,
        }
    }

    /// The state `snapshot` describes, for this policy's rules, as of a decision at `now`
    /// (see the module docs for a `now` behind the snapshot).
    ///
    /// Rules are matched by kind and window or period, in order: a changed maximum or
    /// margin keeps what was charged. A rule the snapshot holds nothing for is counted as
    /// spent by everything up to the latest charge: a sliding one holds every request until
    /// one window after it, an aligned one has its period (and the next, within the margin
    /// of the boundary) full.
    ///
    /// # Errors
    /// [`InvalidSnapshot`] when no state can have produced `snapshot`: charged instants out
    /// of order or after its latest instant, a latest charge after it, aligned counts that
    /// moved backwards.
    pub(crate) fn import(
        &self,
        snapshot: &Snapshot,
        now: u64,
    ) -> Result<Imported, InvalidSnapshot> {
        let last_now = snapshot.last_now;
        if snapshot.last_charge.is_some_and(|t| t > last_now) {
            return Err(InvalidSnapshot(
                "the latest charge is after the latest decision",
            ));
        }
        for rule in &snapshot.rules {
            match &rule.memory {
                Memory::Sliding(charged) => {
                    if !charged.is_sorted() {
                        return Err(InvalidSnapshot("charged instants out of order"));
                    }
                    if charged.last().is_some_and(|&t| t > last_now) {
                        return Err(InvalidSnapshot(
                            "a charged instant is after the latest decision",
                        ));
                    }
                }
                Memory::Aligned { latest, before } => {
                    if before.period > latest.period {
                        return Err(InvalidSnapshot("aligned periods out of order"));
                    }
                }
            }
        }

        let mut st = self.new_state();
        st.last_now = last_now;
        st.paused_until = snapshot.paused_until;
        st.last_charge = snapshot.last_charge;
        let mut taken = vec![false; snapshot.rules.len()];
        let mut unmatched = 0;
        for (c, rs) in self.rules.iter().zip(&mut st.rules) {
            let period = duration_nanos(c.rule.period());
            let found = snapshot.rules.iter().enumerate().find(|(i, rule)| {
                !taken[*i]
                    && rule.period == period
                    && match rule.memory {
                        Memory::Sliding(_) => c.rule.kind() == RuleKind::Sliding,
                        Memory::Aligned { .. } => c.rule.kind() == RuleKind::Aligned,
                    }
            });
            match found {
                Some((i, rule)) => {
                    taken[i] = true;
                    match (&rule.memory, rs) {
                        (Memory::Sliding(charged), RuleState::Sliding(log)) => {
                            let skip = charged.len().saturating_sub(c.max as usize);
                            log.extend(&charged[skip..]);
                        }
                        (Memory::Aligned { latest, before }, RuleState::Aligned(ps)) => {
                            *ps = Periods {
                                latest: (*latest).into(),
                                before: (*before).into(),
                            };
                        }
                        // The kinds were matched above.
                        _ => {}
                    }
                }
                None => {
                    unmatched += 1;
                    if let Some(t) = snapshot.last_charge {
                        match rs {
                            // Full until one window after the latest charge: as a pause,
                            // which has the same effect and needs no `max` entries.
                            RuleState::Sliding(_) => {
                                st.paused_until = st.paused_until.max(t.saturating_add(c.span));
                            }
                            RuleState::Aligned(ps) => *ps = self.spent_at(c, t),
                        }
                    }
                }
            }
        }

        let stepped_back = now
            .checked_add(STEP_TOLERANCE)
            .filter(|&tolerated| tolerated < last_now)
            .map(|_| last_now - now);
        if let Some(step) = stepped_back {
            self.step_back(&mut st, now, step);
        }
        Ok(Imported {
            state: st,
            unmatched,
            stepped_back,
        })
    }

    /// An aligned rule's counts when every request it may hold was charged at `t`: the
    /// periods `t` may fall in are full.
    fn spent_at(&self, c: &Compiled, t: u64) -> Periods {
        let (k, k2) = self.periods_of(c, t, 0);
        let counts = Counts {
            period: k,
            count: c.max,
            next: if k2 > k { c.max } else { 0 },
        };
        Periods {
            latest: counts,
            before: Counts {
                period: k,
                ..Counts::default()
            },
        }
    }

    /// The clock reads `now`, `step` behind the state's latest instant (see the module
    /// docs).
    fn step_back(&self, st: &mut State, now: u64, step: u64) {
        let longest = self
            .rules
            .iter()
            .map(|c| c.span)
            .max()
            .unwrap_or(0)
            .saturating_add(self.margin);
        let far = step > longest;
        for (c, rs) in self.rules.iter().zip(&mut st.rules) {
            match rs {
                RuleState::Sliding(log) => {
                    for e in log.iter_mut() {
                        *e = (*e).min(now);
                    }
                }
                RuleState::Aligned(ps) if far => {
                    let (k, k2) = self.periods_of(c, now, ps.latest.period);
                    let mut total = 0_u32;
                    for counts in [ps.before, ps.latest] {
                        if counts.period >= k {
                            total = total.saturating_add(counts.count);
                        }
                        if counts.period.saturating_add(1) >= k {
                            total = total.saturating_add(counts.next);
                        }
                    }
                    let counts = Counts {
                        period: k,
                        count: total,
                        next: if k2 > k { total } else { 0 },
                    };
                    // Earlier periods are unknown now: full, should the clock step back
                    // further.
                    *ps = Periods {
                        latest: counts,
                        before: counts,
                    };
                }
                RuleState::Aligned(_) => {}
            }
        }
        if st.paused_until > now {
            let remaining = st.paused_until.saturating_sub(st.last_now);
            st.paused_until = st.paused_until.min(now.saturating_add(remaining));
        }
        st.last_charge = st.last_charge.map(|t| t.min(now));
        st.last_now = now;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::time::{Reading, from_nanos};
    use crate::{Priority, RateLimitConfig, Rule};

    const SEC: u64 = 1_000_000_000;
    /// 2026-01-05T10:37:00Z.
    const T0: u64 = 1_767_609_420 * SEC;
    /// 2026-01-05T11:00:00Z.
    const HOUR_11: u64 = 1_767_610_800 * SEC;

    fn at(t: u64) -> Reading {
        Reading { mono: t, wall: t }
    }

    fn policy(rules: impl IntoIterator<Item = Rule>, margin_ms: u64) -> Policy {
        let config = RateLimitConfig::builder()
            .rules(rules)
            .safety_margin(Duration::from_millis(margin_ms))
            .build()
            .unwrap();
        Policy::new(&config)
    }

    fn drchrono(margin_ms: u64) -> Policy {
        let config = RateLimitConfig::builder()
            .safety_margin(Duration::from_millis(margin_ms))
            .build()
            .unwrap();
        Policy::new(&config)
    }

    fn round_trip(policy: &Policy, st: &State, now: u64) -> State {
        let imported = policy.import(&policy.export(st), now).unwrap();
        assert_eq!(imported.unmatched, 0);
        imported.state
    }

    #[test]
    fn a_round_trip_decides_as_the_state_it_came_from() {
        let policy = drchrono(100);
        let mut kept = policy.new_state();
        let mut travelled = policy.new_state();
        let p = Priority::Interactive;
        let mut t = T0;
        for step in 0..3_000_u64 {
            let decision = policy.try_acquire(&mut kept, at(t), p);
            travelled = round_trip(&policy, &travelled, t);
            assert_eq!(policy.try_acquire(&mut travelled, at(t), p), decision);
            if step == 1_000 {
                policy.pause(&mut kept, at(t), t + 90 * SEC);
                policy.pause(&mut travelled, at(t), t + 90 * SEC);
            }
            t += (37 + step % 1_111) * SEC / 100;
        }
        assert_eq!(
            policy.status(&kept, at(t)),
            policy.status(&travelled, at(t))
        );
    }

    #[test]
    fn export_keeps_only_what_can_still_matter() {
        let policy = drchrono(100);
        let mut st = policy.new_state();
        let mut t = T0;
        for _ in 0..2_000 {
            let _ = policy.try_acquire(&mut st, at(t), Priority::Interactive);
            t += SEC / 4;
        }
        policy.pause(&mut st, at(t), t + SEC);
        let snapshot = policy.export(&st);
        let Memory::Sliding(second) = &snapshot.rules[0].memory else {
            panic!("rule 0 is sliding");
        };
        let Memory::Sliding(window) = &snapshot.rules[1].memory else {
            panic!("rule 1 is sliding");
        };
        assert!(second.len() <= 9 && window.len() <= 290);
        let last = st.last_now;
        assert!(second.iter().all(|&e| e + 1_100 * SEC / 1_000 > last));
        assert!(window.iter().all(|&e| e + 600 * SEC + SEC / 10 > last));
        assert_eq!(snapshot.paused_until, t + SEC);
        // A pause that has ended is dropped.
        let _ = policy.try_acquire(&mut st, at(t + 2 * SEC), Priority::Interactive);
        assert_eq!(policy.export(&st).paused_until, 0);
    }

    #[test]
    fn rules_are_matched_by_kind_and_period_and_a_new_one_counts_as_spent() {
        let hour = Duration::from_secs(3600);
        let old = policy(
            [
                Rule::sliding(3, Duration::from_secs(1)).unwrap(),
                Rule::aligned(5, hour).unwrap(),
            ],
            0,
        );
        let mut st = old.new_state();
        for _ in 0..3 {
            old.try_acquire(&mut st, at(T0), Priority::Interactive)
                .unwrap();
        }
        let snapshot = old.export(&st);
        // The hourly maximum raised, a rolling 10 s rule added.
        let new = policy(
            [
                Rule::aligned(50, hour).unwrap(),
                Rule::sliding(4, Duration::from_secs(10)).unwrap(),
                Rule::sliding(3, Duration::from_secs(1)).unwrap(),
            ],
            0,
        );
        let imported = new.import(&snapshot, T0).unwrap();
        assert_eq!(imported.unmatched, 1);
        let mut st = imported.state;
        let status = new.status(&st, at(T0));
        assert_eq!(status.rules[0].remaining, 47);
        assert_eq!(status.rules[2].remaining, 0);
        // The new 10 s rule holds everything until 10 s after the latest charge.
        assert_eq!(
            new.try_acquire(&mut st, at(T0 + SEC), Priority::Interactive),
            Err(T0 + 10 * SEC)
        );
        // An aligned rule added is full in the hour of the latest charge.
        let added = policy(
            [
                Rule::sliding(3, Duration::from_secs(1)).unwrap(),
                Rule::aligned(5, hour).unwrap(),
                Rule::aligned(7, Duration::from_secs(60)).unwrap(),
            ],
            0,
        );
        let mut st = added.import(&snapshot, T0).unwrap().state;
        assert_eq!(
            added.try_acquire(&mut st, at(T0 + SEC), Priority::Interactive),
            Err(T0 + 60 * SEC)
        );
    }

    #[test]
    fn a_snapshot_no_limiter_can_have_written_is_invalid() {
        let policy = drchrono(0);
        let mut st = policy.new_state();
        policy
            .try_acquire(&mut st, at(T0), Priority::Interactive)
            .unwrap();
        policy
            .try_acquire(&mut st, at(T0 + SEC), Priority::Interactive)
            .unwrap();
        let good = policy.export(&st);
        let mut unsorted = good.clone();
        if let Memory::Sliding(charged) = &mut unsorted.rules[1].memory {
            charged.reverse();
        }
        assert!(policy.import(&unsorted, T0).is_err());
        let mut future = good.clone();
        future.last_charge = Some(T0 + 2 * SEC);
        assert!(policy.import(&future, T0).is_err());
        let mut backwards = good;
        if let Memory::Aligned { before, .. } = &mut backwards.rules[2].memory {
            before.period = u64::MAX;
        }
        assert!(policy.import(&backwards, T0).is_err());
    }

    #[test]
    fn a_reading_slightly_behind_is_taken_as_the_latest_instant() {
        let policy = policy([Rule::sliding(2, Duration::from_secs(1)).unwrap()], 0);
        let mut st = policy.new_state();
        policy
            .try_acquire(&mut st, at(T0 + SEC / 2), Priority::Interactive)
            .unwrap();
        let imported = policy.import(&policy.export(&st), T0).unwrap();
        assert_eq!(imported.stepped_back, None);
        let mut st = imported.state;
        // Charged at T0 + 0.5 s, not at T0: both leave the window at T0 + 1.5 s.
        policy
            .try_acquire(&mut st, at(T0), Priority::Interactive)
            .unwrap();
        assert_eq!(
            policy.try_acquire(&mut st, at(T0), Priority::Interactive),
            Err(T0 + 3 * SEC / 2)
        );
    }

    #[test]
    fn a_clock_stepped_back_holds_each_window_from_the_reading() {
        let policy = policy(
            [
                Rule::sliding(2, Duration::from_secs(10)).unwrap(),
                Rule::aligned(4, Duration::from_secs(3600)).unwrap(),
            ],
            0,
        );
        let mut st = policy.new_state();
        let p = Priority::Interactive;
        policy.try_acquire(&mut st, at(T0), p).unwrap();
        policy.try_acquire(&mut st, at(T0), p).unwrap();
        policy.pause(&mut st, at(T0), T0 + 30 * SEC);
        // The clock steps back 5 minutes: within the hour, both charges are taken as made
        // now, and the pause keeps its 30 s.
        let back = T0 - 300 * SEC;
        let imported = policy.import(&policy.export(&st), back).unwrap();
        assert_eq!(imported.stepped_back, Some(300 * SEC));
        let mut st = imported.state;
        assert_eq!(
            policy.try_acquire(&mut st, at(back), p),
            Err(back + 30 * SEC)
        );
        policy.try_acquire(&mut st, at(back + 30 * SEC), p).unwrap();
        policy.try_acquire(&mut st, at(back + 30 * SEC), p).unwrap();
        // The hour holds 4 now.
        assert_eq!(
            policy.try_acquire(&mut st, at(back + 40 * SEC), p),
            Err(HOUR_11)
        );
    }

    #[test]
    fn a_state_from_a_clock_far_ahead_does_not_hold_the_budget_until_then() {
        let policy = drchrono(100);
        let p = Priority::Interactive;
        // A clock a year ahead charged 400 in its hour, then was corrected.
        let ahead = T0 + 365 * 24 * 3_600 * SEC;
        let mut st = policy.new_state();
        let mut t = ahead;
        for _ in 0..400 {
            while let Err(earliest) = policy.try_acquire(&mut st, at(t), p) {
                t = earliest;
            }
        }
        let imported = policy.import(&policy.export(&st), T0).unwrap();
        assert!(imported.stepped_back.is_some());
        let mut st = imported.state;
        // They count in the current hour (100 left), and in the rolling windows as if
        // charged now…
        let status = policy.status(&st, at(T0));
        assert_eq!(status.rules[2].remaining, 100);
        assert!(status.rules[1].remaining < 290);
        // …which they leave one window from now, not a year from now.
        let later = T0 + 600 * SEC + SEC / 10;
        assert!(status.next_available <= from_nanos(later));
        let status = policy.status(&st, at(later));
        assert_eq!(status.rules[0].remaining, 9);
        assert_eq!(status.rules[1].remaining, 290);
        policy.try_acquire(&mut st, at(later), p).unwrap();
        // And the next hour is a new one.
        let status = policy.status(&st, at(HOUR_11 + SEC));
        assert_eq!(status.rules[2].remaining, 500);
    }
}
