//! A limiter's state as plain numbers, for a backend that keeps it outside the process (the
//! file backend): exported compacted to what can still matter, imported back checked, for
//! this policy's rules, as of the decision about to be made.
//!
//! A snapshot lives on one clock, the wall clock every process of a host shares: each of its
//! instants is both readings of a [`Reading`] whose clocks agree. Such a clock can step back
//! (NTP, a virtual machine restored, a clock that was wrong at boot and then corrected), and
//! a state kept across processes outlives the step, so the import handles it:
//!
//! - A reading up to [`STEP_TOLERANCE`](crate::algorithm::snapshot::STEP_TOLERANCE) behind the state's latest instant is taken as that
//!   instant (the core's rule: time never runs backwards). Processes read the clock before
//!   they take their turn at the state, so their readings arrive slightly out of order.
//! - Further behind, the clock stepped back. The state is kept as it is, and the decision
//!   is made on [`Imported::reading`](crate::algorithm::snapshot::Imported::reading): the
//!   state's latest instant on the monotonic line, the reading on the wall clock (a
//!   monotonic line that never goes back, as the in-memory limiter's, while the aligned
//!   periods follow the wall clock as it reads). So the
//!   charged instants, a 429 pause and what is charged meanwhile (at the latest instant)
//!   leave their windows only once the clock gets back to where they are. That is the one
//!   reading conservative whichever clock was right and whatever it does next: if the
//!   earlier readings were right and the step is undone (NTP correcting a wrong step, a
//!   virtual machine resumed behind), the server's windows hold those requests until then;
//!   instants moved back to the reading would leave them that much too early (a 429). The
//!   cost: until the clock gets back, each rolling window admits at most its maximum, less
//!   what it held. Aligned periods are left to the core, which counts a step back into an
//!   earlier period conservatively: that period's count plus everything charged since, and
//!   a period it no longer knows as full.
//! - More than the longest rule (plus the margin) behind, the state comes from a clock that
//!   was far ahead: kept as it is, it would hold the budget until the clock reached it again
//!   (years, after a clock wrong at boot), in every process to come. So it is rebased on the
//!   reading ([`Imported::rebased`](crate::algorithm::snapshot::Imported::rebased)): every
//!   charged instant after the reading is taken as the reading itself, which holds each
//!   window at least as long if the reading is right
//!   (those requests were sent before it), a 429 pause keeps what remained of it at the
//!   latest decision, and each aligned count of the current period or later is added into
//!   the current period (a request charged within the margin of its end in the next one
//!   too), which is conservative if the clock is right now; if it is the one that is
//!   behind, it is corrected soon (NTP), and the server may meanwhile see up to one window's
//!   or period's worth more.

use super::{Compiled, Counts, Periods, Policy, RuleState, State};
use crate::MAX_PERIOD;
use crate::time::{Reading, duration_nanos};

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
    /// Whether the state was rebased on the reading (a step back of more than the longest
    /// rule): to be written even if nothing is charged, since rebasing it again at a later
    /// reading would hold its charges longer each time.
    pub(crate) rebased: bool,
    /// The readings to decide on: the reading on both clocks (the core takes one up to
    /// [`STEP_TOLERANCE`] behind as the latest instant); after a step back of at most the
    /// longest rule, the state's latest instant on the monotonic line and the reading on
    /// the wall clock (see the module docs).
    pub(crate) reading: Reading,
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
    /// Rules are matched by kind and window or period: a changed maximum or margin keeps
    /// what was charged. Several rules of one kind and period in the snapshot (a
    /// configuration that had them) are read together: a sliding one takes the longest log
    /// (they are suffixes of one another), an aligned one counts in each period the most any
    /// of them does. A rule the snapshot holds nothing for is counted as spent by everything
    /// up to the latest charge: a sliding one holds every request until one window after it,
    /// an aligned one has its period (and the next, within the margin of the boundary) full.
    ///
    /// # Errors
    /// [`InvalidSnapshot`] when no state can have produced `snapshot` ([`check`]).
    pub(crate) fn import(
        &self,
        snapshot: &Snapshot,
        now: u64,
    ) -> Result<Imported, InvalidSnapshot> {
        check(snapshot)?;
        let last_now = snapshot.last_now;
        let mut st = self.new_state();
        st.last_now = last_now;
        st.paused_until = snapshot.paused_until;
        st.last_charge = snapshot.last_charge;
        let mut unmatched = 0;
        for (c, rs) in self.rules.iter().zip(&mut st.rules) {
            let period = duration_nanos(c.rule.period());
            let same = snapshot.rules.iter().filter(|rule| rule.period == period);
            let found = match rs {
                RuleState::Sliding(log) => {
                    let longest = same
                        .filter_map(|rule| match &rule.memory {
                            Memory::Sliding(charged) => Some(charged),
                            Memory::Aligned { .. } => None,
                        })
                        .max_by_key(|charged| charged.len());
                    if let Some(charged) = longest {
                        let skip = charged.len().saturating_sub(c.max as usize);
                        log.extend(&charged[skip..]);
                    }
                    longest.is_some()
                }
                RuleState::Aligned(ps) => {
                    let all: Vec<Periods> = same
                        .filter_map(|rule| match rule.memory {
                            Memory::Aligned { latest, before } => Some(Periods {
                                latest: latest.into(),
                                before: before.into(),
                            }),
                            Memory::Sliding(_) => None,
                        })
                        .collect();
                    if let Some(merged) = merged(&all) {
                        *ps = merged;
                    }
                    !all.is_empty()
                }
            };
            if !found {
                unmatched += 1;
                if let Some(t) = snapshot.last_charge {
                    match rs {
                        // Full until one window after the latest charge: as a pause, which
                        // has the same effect and needs no `max` entries.
                        RuleState::Sliding(_) => {
                            st.paused_until = st.paused_until.max(t.saturating_add(c.span));
                        }
                        RuleState::Aligned(ps) => *ps = self.spent_at(c, t),
                    }
                }
            }
        }

        let stepped_back = now
            .checked_add(STEP_TOLERANCE)
            .filter(|&tolerated| tolerated < last_now)
            .map(|_| last_now - now);
        let longest = self
            .rules
            .iter()
            .map(|c| c.span)
            .max()
            .unwrap_or(0)
            .saturating_add(self.margin);
        let rebased = stepped_back.is_some_and(|step| step > longest);
        let reading = match stepped_back {
            Some(_) if !rebased => Reading {
                mono: last_now,
                wall: now,
            },
            _ => Reading {
                mono: now,
                wall: now,
            },
        };
        if rebased {
            self.rebase(&mut st, now);
        }
        Ok(Imported {
            state: st,
            unmatched,
            stepped_back,
            rebased,
            reading,
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

    /// The clock reads `now`, more than the longest rule behind the state's latest instant:
    /// the state rebased on it (see the module docs).
    fn rebase(&self, st: &mut State, now: u64) {
        for (c, rs) in self.rules.iter().zip(&mut st.rules) {
            match rs {
                RuleState::Sliding(log) => {
                    for e in log.iter_mut() {
                        *e = (*e).min(now);
                    }
                }
                RuleState::Aligned(ps) => {
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

/// Whether a limiter can have exported `snapshot`: what no limiter can have written is
/// rejected, since reading it some way or other could take spent budget for unspent.
///
/// Each of these holds of every export: the configuration had rules, each with a maximum
/// and a period a [`Rule`](crate::Rule) can have; the latest charge is not after the latest
/// decision, and a pause kept is not over by it; a sliding rule keeps at most its maximum
/// of charged instants, oldest first, the newest of them the latest charge (each charge is
/// logged in every sliding rule, and only a log whose every entry left the window loses its
/// newest); two sliding rules of one window log the same charges, so the shorter log ends
/// the longer; an aligned rule's periods are in order and on the clock, and the latest one,
/// when the period after the one before, counts at least what the one before counted for
/// it (it starts from that count and only grows).
fn check(snapshot: &Snapshot) -> Result<(), InvalidSnapshot> {
    let last_now = snapshot.last_now;
    if snapshot.rules.is_empty() {
        return Err(InvalidSnapshot("no rules"));
    }
    if snapshot.last_charge.is_some_and(|t| t > last_now) {
        return Err(InvalidSnapshot(
            "the latest charge is after the latest decision",
        ));
    }
    if snapshot.paused_until != 0 && snapshot.paused_until <= last_now {
        return Err(InvalidSnapshot(
            "a pause kept although it ended by the latest decision",
        ));
    }
    for (i, rule) in snapshot.rules.iter().enumerate() {
        if rule.max == 0 || rule.period == 0 || rule.period > duration_nanos(MAX_PERIOD) {
            return Err(InvalidSnapshot("a rule no configuration can have"));
        }
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
                if charged.len() > rule.max as usize {
                    return Err(InvalidSnapshot(
                        "more charged instants than the rule's maximum",
                    ));
                }
                if charged
                    .last()
                    .is_some_and(|&t| snapshot.last_charge != Some(t))
                {
                    return Err(InvalidSnapshot(
                        "a rule's newest charged instant is not the latest charge",
                    ));
                }
                let disagree = snapshot.rules[..i].iter().any(|other| match &other.memory {
                    Memory::Sliding(logged) if other.period == rule.period => {
                        !(logged.ends_with(charged) || charged.ends_with(logged))
                    }
                    _ => false,
                });
                if disagree {
                    return Err(InvalidSnapshot(
                        "two sliding rules of one window logged different charges",
                    ));
                }
            }
            Memory::Aligned { latest, before } => {
                if before.period > latest.period {
                    return Err(InvalidSnapshot("aligned periods out of order"));
                }
                if latest.period.checked_mul(rule.period).is_none() {
                    return Err(InvalidSnapshot(
                        "an aligned period beyond the clock's range",
                    ));
                }
                if latest.period == before.period.saturating_add(1) && latest.count < before.next {
                    return Err(InvalidSnapshot("aligned counts moved backwards"));
                }
            }
        }
    }
    Ok(())
}

/// The counts of several aligned rules of one period (`None`: none): for every period, at
/// least what each of them counts in it ([`Periods::count_of`]); one of them as it is.
///
/// The latest period is theirs that is latest, counting the most any of them counts in it
/// and in the next. The one before is the latest one that each of them either knows from
/// before its latest move or moved past (earlier ones count as full), counting the most any
/// of them counts there apart from its latest period's count (which the latest period's,
/// added to it, covers). Periods between the two count as the latest one does: no rule
/// counts anything there apart from that.
fn merged(all: &[Periods]) -> Option<Periods> {
    let latest = all.iter().map(|ps| ps.latest.period).max()?;
    let before = all
        .iter()
        .map(|ps| {
            if ps.latest.period == latest {
                ps.before.period
            } else {
                ps.latest.period
            }
        })
        .max()?;
    let most = |count: &dyn Fn(&Periods) -> u32| all.iter().map(count).max().unwrap_or(0);
    // Apart from the latest period's count: from `before` on, which each knows.
    let apart = |ps: &Periods, k: u64| {
        if ps.latest.period == latest {
            ps.before.get(k)
        } else {
            ps.latest.get(k)
        }
    };
    Some(Periods {
        latest: Counts {
            period: latest,
            count: most(&|ps| ps.count_of(latest)),
            next: most(&|ps| ps.count_of(latest.saturating_add(1))),
        },
        before: Counts {
            period: before,
            count: most(&|ps| apart(ps, before)),
            next: most(&|ps| apart(ps, before.saturating_add(1))),
        },
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use proptest::prelude::*;

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
    fn a_clock_stepped_back_keeps_each_window_until_it_gets_back() {
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
        let exported = policy.export(&st);
        // The clock steps back 5 minutes: within the hour. The state is kept; the decision
        // is made at the latest instant on the monotonic line, the reading on the wall.
        let back = T0 - 300 * SEC;
        let imported = policy.import(&exported, back).unwrap();
        assert_eq!(imported.stepped_back, Some(300 * SEC));
        assert!(!imported.rebased);
        assert_eq!(
            imported.reading,
            Reading {
                mono: T0,
                wall: back
            }
        );
        let mut st = imported.state;
        assert_eq!(policy.export(&st), exported);
        // The pause ends 30 s on, on the monotonic line.
        assert_eq!(
            policy.try_acquire(&mut st, imported.reading, p),
            Err(T0 + 30 * SEC)
        );
        // 30 s later the clock still reads 4.5 minutes back: the line has not moved, the
        // pause holds (on a server whose clock was not stepped, it ends now).
        let later = policy.import(&exported, back + 30 * SEC).unwrap();
        assert_eq!(later.reading.mono, T0);
        assert!(policy.try_acquire(&mut st, later.reading, p).is_err());
        // The step undone 5 s after the pause was asked: it still ends where the server
        // put it, and the charges are still in the 10 s window.
        let forward = policy.import(&exported, T0 + 5 * SEC).unwrap();
        assert_eq!(forward.stepped_back, None);
        let mut st = forward.state;
        assert_eq!(
            policy.try_acquire(&mut st, forward.reading, p),
            Err(T0 + 30 * SEC)
        );
        // Had it stayed behind instead, the charges leave the window once it gets back to
        // T0 + 10 s, and the hour holds 4 then.
        let mut st = policy.import(&exported, back).unwrap().state;
        let caught_up = T0 + 30 * SEC;
        policy.try_acquire(&mut st, at(caught_up), p).unwrap();
        policy.try_acquire(&mut st, at(caught_up), p).unwrap();
        assert_eq!(
            policy.try_acquire(&mut st, at(caught_up + 10 * SEC), p),
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

    /// What `policy` admits at `now` from `snapshot`, one request after the other (at most
    /// 1,000).
    fn admitted(policy: &Policy, snapshot: &Snapshot, now: u64) -> usize {
        let mut st = policy.import(snapshot, now).unwrap().state;
        (0..1_000)
            .take_while(|_| {
                policy
                    .try_acquire(&mut st, at(now), Priority::Interactive)
                    .is_ok()
            })
            .count()
    }

    /// DrChrono's rules without a margin, after charges at T0, T0 + 0.5 s and T0 + 1 s: the
    /// rolling second holds the last two, the 10 minutes all three, the hour counts 3.
    fn charged() -> (Policy, Snapshot) {
        let policy = drchrono(0);
        let mut st = policy.new_state();
        for t in [T0, T0 + SEC / 2, T0 + SEC] {
            policy
                .try_acquire(&mut st, at(t), Priority::Interactive)
                .unwrap();
        }
        let snapshot = policy.export(&st);
        (policy, snapshot)
    }

    fn sliding(snapshot: &mut Snapshot, rule: usize) -> &mut Vec<u64> {
        match &mut snapshot.rules[rule].memory {
            Memory::Sliding(charged) => charged,
            Memory::Aligned { .. } => panic!("rule {rule} is aligned"),
        }
    }

    fn aligned(latest: (u64, u32, u32), before: (u64, u32, u32)) -> Memory {
        let counts = |(period, count, next)| PeriodCounts {
            period,
            count,
            next,
        };
        Memory::Aligned {
            latest: counts(latest),
            before: counts(before),
        }
    }

    /// Each shape no limiter can have exported, beyond those of the test above: rejected,
    /// with what is wrong. Read some way or other, each could take spent budget for unspent
    /// (the comments say how it was read before it was rejected).
    #[test]
    fn every_shape_no_limiter_can_have_written_is_rejected() {
        let (policy, good) = charged();
        assert_eq!(admitted(&policy, &good, T0 + SEC), 7);
        let hour = T0 / (3_600 * SEC);
        type Edit = fn(&mut Snapshot);
        let shapes: [(&str, Edit); 12] = [
            // Every rule of the policy unmatched, nothing charged: a full budget.
            ("no rules", |s| {
                s.rules.clear();
                s.last_charge = None;
            }),
            ("no rules", |s| s.rules.clear()),
            ("a rule no configuration can have", |s| s.rules[0].max = 0),
            ("a rule no configuration can have", |s| {
                s.rules[2].period = 0
            }),
            ("a rule no configuration can have", |s| {
                s.rules[1].period = duration_nanos(MAX_PERIOD) + 1;
            }),
            // The oldest instant dropped.
            ("more charged instants than the rule's maximum", |s| {
                s.rules[0].max = 1;
            }),
            // A rule added since counts nothing as spent, pacing starts from nothing.
            (
                "a rule's newest charged instant is not the latest charge",
                |s| s.last_charge = None,
            ),
            // A log that lost its newest entry: one more admitted in its window.
            (
                "a rule's newest charged instant is not the latest charge",
                |s| {
                    sliding(s, 1).pop();
                },
            ),
            // A rule added since is spent only until one window after the earlier charge.
            (
                "a rule's newest charged instant is not the latest charge",
                |s| s.last_charge = Some(T0 + SEC / 2),
            ),
            // The rolling second read from whichever log came first.
            (
                "two sliding rules of one window logged different charges",
                |s| {
                    let mut other = s.rules[0].clone();
                    match &mut other.memory {
                        Memory::Sliding(charged) => charged[0] = T0 + SEC / 4,
                        Memory::Aligned { .. } => unreachable!(),
                    }
                    s.rules.insert(0, other);
                },
            ),
            (
                "a pause kept although it ended by the latest decision",
                |s| {
                    s.paused_until = T0;
                },
            ),
            ("aligned counts moved backwards", |s| {
                let hour = T0 / (3_600 * SEC);
                // The hour before said 500 of this one's; this one says 3.
                s.rules[2].memory = aligned((hour, 3, 0), (hour - 1, 0, 500));
            }),
        ];
        let mut accepted = Vec::new();
        for (index, (detail, edit)) in shapes.iter().enumerate() {
            let mut shape = good.clone();
            edit(&mut shape);
            match policy.import(&shape, T0 + SEC) {
                Ok(_) => accepted.push(index),
                Err(InvalidSnapshot(found)) => assert_eq!(found, *detail, "shape {index}"),
            }
        }
        // An aligned period no clock reaches: the hour before it "stepped back" from, counted
        // as nothing.
        let mut beyond = good.clone();
        beyond.rules[2].memory = aligned((u64::MAX / 1_000, 0, 0), (hour, 3, 0));
        match policy.import(&beyond, T0 + SEC) {
            Ok(_) => accepted.push(shapes.len()),
            Err(InvalidSnapshot(found)) => {
                assert_eq!(found, "an aligned period beyond the clock's range");
            }
        }
        assert_eq!(accepted, [0_usize; 0], "shapes accepted");
    }

    /// Several rules of one kind and period in a file (a configuration that had them) are
    /// read together, whichever comes first: the longest log, the most counted.
    #[test]
    fn rules_of_one_kind_and_period_are_read_together() {
        let (drchrono, good) = charged();
        // The rolling second listed again, with an empty log (it left the window) or a
        // shorter one (a rule of a lower maximum), first.
        for (max, charged) in [(9, vec![]), (1, vec![T0 + SEC])] {
            let mut twice = good.clone();
            twice.rules.insert(
                0,
                RuleSnapshot {
                    max,
                    period: SEC,
                    memory: Memory::Sliding(charged),
                },
            );
            assert_eq!(admitted(&drchrono, &twice, T0 + SEC), 7);
        }
        // Two hourly rules, 100 and 500: a 429 marked each hour spent at its maximum.
        let hour = T0 / (3_600 * SEC);
        let mut twice = good.clone();
        twice.rules[2] = RuleSnapshot {
            max: 100,
            period: 3_600 * SEC,
            memory: aligned((hour, 100, 0), (hour - 1, 0, 0)),
        };
        twice.rules.push(RuleSnapshot {
            max: 500,
            period: 3_600 * SEC,
            memory: aligned((hour, 500, 0), (hour - 1, 0, 0)),
        });
        let status = drchrono.status(
            &drchrono.import(&twice, T0 + SEC).unwrap().state,
            at(T0 + SEC),
        );
        assert_eq!(status.rules[2].remaining, 0);
        // A configuration of several such rules keeps each one's own state.
        let both = policy(
            [
                Rule::sliding(2, Duration::from_secs(1)).unwrap(),
                Rule::sliding(3, Duration::from_secs(1)).unwrap(),
            ],
            0,
        );
        let mut st = both.new_state();
        for t in [T0, T0 + SEC / 2] {
            both.try_acquire(&mut st, at(t), Priority::Interactive)
                .unwrap();
        }
        let exported = both.export(&st);
        let imported = both.import(&exported, T0 + SEC / 2).unwrap();
        assert_eq!(both.export(&imported.state), exported);
    }

    /// Shapes that look odd but a limiter can write, or that are read conservatively: kept
    /// (each holds at least as much as a consistent reading would).
    #[test]
    fn odd_shapes_that_hold_at_least_as_much_are_accepted() {
        let (policy, good) = charged();
        let now = T0 + SEC;
        let hour = T0 / (3_600 * SEC);
        // Counts for a period in the future (a clock stepped back, less than the longest
        // rule): the hour counts them on top of its own.
        let mut future = good.clone();
        future.rules[2].memory = aligned((hour + 1, 5, 0), (hour, 3, 0));
        let st = policy.import(&future, now).unwrap().state;
        assert_eq!(policy.status(&st, at(now)).rules[2].remaining, 500 - 3 - 5);
        // A count above the maximum (a clock far ahead folded into the hour).
        let mut above = good.clone();
        above.rules[2].memory = aligned((hour, 900, 0), (hour, 900, 0));
        assert_eq!(admitted(&policy, &above, now + SEC), 0);
        // A latest decision and charges far ahead (a clock at the end of its range): taken
        // as now.
        let mut ahead = good.clone();
        ahead.last_now = u64::MAX;
        ahead.last_charge = Some(u64::MAX);
        for rule in 0..2 {
            *sliding(&mut ahead, rule) = vec![u64::MAX];
        }
        ahead.paused_until = 0;
        assert_eq!(admitted(&policy, &ahead, now), 8);
        // A pause far ahead: held (a caller's own `Backend::pause_until` may ask for it).
        let mut paused = good.clone();
        paused.paused_until = u64::MAX;
        assert_eq!(admitted(&policy, &paused, now), 0);
        // Charges long gone, an aligned rule never charged.
        let mut old = good;
        old.rules[2].memory = aligned((0, 0, 0), (0, 0, 0));
        assert_eq!(admitted(&policy, &old, now + 3_600 * SEC), 9);
    }

    /// A set of valid counts of one aligned rule: the latest period, the one before it and
    /// their counts, the latest counting at least what the one before counted for it.
    fn periods() -> impl Strategy<Value = Periods> {
        (0_u64..6, 0_u64..3, 0_u32..8, 0_u32..8, 0_u32..8, 0_u32..8).prop_map(
            |(latest, back, count, next, before_count, before_next)| {
                let before = latest.saturating_sub(back);
                let count = if before + 1 == latest {
                    count.max(before_next)
                } else {
                    count
                };
                Periods {
                    latest: Counts {
                        period: latest,
                        count,
                        next,
                    },
                    before: Counts {
                        period: before,
                        count: before_count,
                        next: before_next,
                    },
                }
            },
        )
    }

    fn snapshot_of(all: &[Periods]) -> Snapshot {
        Snapshot {
            last_now: 10 * 3_600 * SEC,
            paused_until: 0,
            last_charge: None,
            rules: all
                .iter()
                .map(|ps| RuleSnapshot {
                    max: 5,
                    period: 3_600 * SEC,
                    memory: Memory::Aligned {
                        latest: ps.latest.into(),
                        before: ps.before.into(),
                    },
                })
                .collect(),
        }
    }

    /// One step of a history the state file goes through.
    #[derive(Debug, Clone)]
    enum Op {
        /// The clock moves on (ms).
        Wait(u64),
        /// The clock steps back, or ahead, by this many seconds.
        Step(i64),
        Acquire(Priority),
        /// A server 429 asks for this many seconds.
        Pause(u64),
        /// The configuration changes to this one of [`configurations`].
        Configure(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            8 => (0_u64..1_500).prop_map(Op::Wait),
            1 => (0_u64..400_000).prop_map(Op::Wait),
            10 => prop_oneof![Just(Priority::Interactive), Just(Priority::Background)]
                .prop_map(Op::Acquire),
            1 => prop_oneof![
                -2_i64..=0,
                -700_i64..=-60,
                Just(-2 * 24 * 3_600),
                Just(24 * 3_600)
            ]
            .prop_map(Op::Step),
            1 => prop_oneof![1_u64..5, 50_u64..3_600].prop_map(Op::Pause),
            1 => (0_usize..5).prop_map(Op::Configure),
        ]
    }

    /// Configurations a file may be read with in turn: DrChrono's with and without a margin,
    /// with rules of one kind and period twice, with rules added, removed, short.
    fn configurations() -> Vec<Policy> {
        let s = Duration::from_secs;
        vec![
            drchrono(100),
            drchrono(0),
            policy(
                [
                    Rule::sliding(5, s(1)).unwrap(),
                    Rule::sliding(9, s(1)).unwrap(),
                    Rule::aligned(8, s(60)).unwrap(),
                    Rule::sliding(12, s(10)).unwrap(),
                    Rule::aligned(20, s(60)).unwrap(),
                ],
                50,
            ),
            policy(
                [
                    Rule::aligned(20, s(60)).unwrap(),
                    Rule::sliding(9, s(1)).unwrap(),
                ],
                0,
            ),
            policy(
                [
                    Rule::sliding(3, s(1)).unwrap(),
                    Rule::aligned(50, s(3_600)).unwrap(),
                    Rule::aligned(8, s(60)).unwrap(),
                ],
                100,
            ),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Whatever a limiter exports imports back, read by any configuration: through
        /// charges, refusals, 429 pauses, clocks stepped back a little, some minutes or days
        /// and ahead, and configuration changes. (The checks of `import` reject only what no
        /// limiter writes: a state file this crate wrote never fails closed as corrupt.)
        #[test]
        fn everything_a_limiter_exports_imports_back(
            ops in proptest::collection::vec(op(), 1..250),
        ) {
            let configurations = configurations();
            let mut policy = &configurations[0];
            let mut file: Option<Snapshot> = None;
            let mut now = T0;
            let load = |policy: &Policy, file: &Option<Snapshot>, now: u64| match file {
                Some(snapshot) => policy
                    .import(snapshot, now)
                    .map(|imported| (imported.state, imported.rebased, imported.reading))
                    .map_err(|invalid| TestCaseError::fail(format!("{invalid:?} from {snapshot:?}"))),
                None => Ok((policy.new_state(), false, at(now))),
            };
            for op in ops {
                match op {
                    Op::Wait(ms) => now += ms * 1_000_000,
                    Op::Step(secs) => now = now.saturating_add_signed(secs * SEC as i64),
                    Op::Configure(index) => policy = &configurations[index],
                    Op::Acquire(priority) => {
                        let (mut st, rebased, reading) = load(policy, &file, now)?;
                        let decision = policy.try_acquire(&mut st, reading, priority);
                        if decision.is_ok() || rebased {
                            file = Some(policy.export(&st));
                        }
                    }
                    Op::Pause(secs) => {
                        let (mut st, _, reading) = load(policy, &file, now)?;
                        policy.pause(&mut st, reading, now + secs * SEC);
                        file = Some(policy.export(&st));
                    }
                }
            }
            for policy in &configurations {
                load(policy, &file, now)?;
            }
        }

        /// Several aligned rules of one period read together count, in every period, at
        /// least what each of them counts; one of them is read as it is; and what they are
        /// read as is itself a state a limiter can export.
        #[test]
        fn aligned_rules_read_together_count_the_most_of_each(
            all in proptest::collection::vec(periods(), 1..4),
        ) {
            prop_assert!(check(&snapshot_of(&all)).is_ok());
            let merged = merged(&all).unwrap();
            for k in 0..10 {
                for ps in &all {
                    prop_assert!(
                        merged.count_of(k) >= ps.count_of(k),
                        "period {}: {:?} from {:?}", k, merged, all
                    );
                }
            }
            if let [one] = all.as_slice() {
                prop_assert_eq!(merged.latest, one.latest);
                prop_assert_eq!(merged.before, one.before);
            }
            prop_assert!(check(&snapshot_of(&[merged])).is_ok());
        }
    }
}
