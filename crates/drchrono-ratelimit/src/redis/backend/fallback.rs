//! The local fallback of a [`RedisRateLimitBackend`](crate::RedisRateLimitBackend) while
//! Redis is unreachable: a share of every rule, and, for the windows and periods in progress
//! when Redis went away, a share of what provably remained of them.
//!
//! Why the second part: a share limiter alone starts empty, so processes falling back
//! together would add their whole shares to windows Redis had already nearly spent (280 of
//! 290, say). So each process remembers, from every Redis decision, what each rule held
//! (`used`) and when it asked (`at`, the caller's clock). When Redis fails and the failure
//! is seen at `fail_at`, the other processes may have charged Redis between `at` and
//! `fail_at`: at most [`Fallback::charged_within`] that span, the most the tightest rule lets
//! through in it. What provably remained of a rule is then
//!
//! `left = max - used - charged_within(fail_at - at) - unsynced`
//!
//! (`unsynced`: this process's own fallback releases that Redis has not been charged for),
//! and the process releases at most `floor(left × percent / 100)` until nothing charged
//! before `fail_at` can count together with its releases: one window (plus margin) after
//! `fail_at` for a rolling rule, the end (plus margin) of the period `fail_at + margin` falls
//! in for an aligned one. Each process's `left` is at most what truly remained, so with
//! percents summing to at most 100 over all processes, together they release at most that.
//! Afterwards the shares alone apply, and they sum to at most each rule's maximum.
//!
//! A process that never heard from Redis knows nothing: `left` is 0. Every share rounds
//! down; a rule whose share is 0 makes the fallback refuse everything, until Redis answers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::time::from_nanos;
use crate::{ConfigError, LocalLimiter, NotUntil, Now, Priority, RateLimitConfig, Rule, RuleKind};

/// The local budget used while Redis is unreachable.
pub(crate) struct Fallback {
    percent: u8,
    /// Each rule's share; `None` when some rule's share rounds down to 0 (nothing admitted).
    limiter: Option<LocalLimiter>,
    rules: Vec<Bound>,
    /// The safety margin, ns.
    margin: u128,
    /// Requests the fallback released that Redis has not been charged for yet.
    unsynced: AtomicU64,
    state: Mutex<State>,
}

/// One rule, for the arithmetic of an outage.
#[derive(Debug, Clone, Copy)]
struct Bound {
    /// As configured (the share's refusals name it).
    rule: Rule,
    kind: RuleKind,
    max: u32,
    /// ns; rolling: window + margin; aligned: the period.
    span: u128,
}

#[derive(Debug, Default)]
struct State {
    /// The latest Redis decision this process saw.
    known: Option<Known>,
    /// Per rule, while Redis is unreachable.
    outage: Option<Vec<Phase>>,
}

#[derive(Debug)]
struct Known {
    /// The caller's `now` when it asked.
    at: SystemTime,
    /// What each rule held after the decision.
    used: Vec<u32>,
}

/// What a process may still release, in its fallback, of a rule's window or period that was
/// in progress when Redis went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Phase {
    /// From then on, nothing charged before the outage counts with a new request.
    until: SystemTime,
    allowance: u32,
}

impl Fallback {
    /// The fallback holding `percent` % (at most 100) of each of `config`'s rules.
    ///
    /// # Errors
    /// Never in practice: the share's configuration is derived from a valid one.
    pub(crate) fn new(config: &RateLimitConfig, percent: u8) -> Result<Self, ConfigError> {
        let margin = config.safety_margin().as_nanos();
        let rules = config
            .rules()
            .iter()
            .map(|&rule| Bound {
                rule,
                kind: rule.kind(),
                max: rule.max(),
                span: match rule.kind() {
                    RuleKind::Aligned => rule.period().as_nanos(),
                    _ => rule.period().as_nanos() + margin,
                },
            })
            .collect();
        let limiter = share(config, percent)?.map(|share| LocalLimiter::new(&share));
        if limiter.is_none() {
            tracing::warn!(
                application = %config.application(),
                percent,
                "rate-limit fallback: a rule's share rounds down to 0, so the fallback admits \
                 nothing; requests wait for Redis"
            );
        }
        Ok(Self {
            percent,
            limiter,
            rules,
            margin,
            unsynced: AtomicU64::new(0),
            state: Mutex::new(State::default()),
        })
    }

    pub(crate) fn percent(&self) -> u8 {
        self.percent
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every mutation leaves the state consistent: a panic elsewhere cannot half-do one.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests released by the fallback that Redis has not been charged for yet.
    pub(crate) fn unsynced(&self) -> u64 {
        self.unsynced.load(Ordering::Acquire)
    }

    /// Takes the backlog, to charge it to Redis.
    pub(crate) fn take_backlog(&self) -> u64 {
        self.unsynced.swap(0, Ordering::AcqRel)
    }

    /// Gives back a backlog Redis could not be charged for.
    pub(crate) fn restore_backlog(&self, backlog: u64) {
        self.unsynced.fetch_add(backlog, Ordering::AcqRel);
    }

    /// Redis decided a request the caller asked about at `at`; rule `i` then held `used[i]`.
    /// Redis answers: an outage is over.
    pub(crate) fn learned(&self, at: SystemTime, used: Vec<u32>) {
        let mut state = self.state();
        if state.known.as_ref().is_none_or(|known| known.at <= at) {
            state.known = Some(Known { at, used });
        }
        state.outage = None;
    }

    /// Redis answered another operation: an outage is over.
    pub(crate) fn answered(&self) {
        self.state().outage = None;
    }

    /// Redis failed, seen at `fail_at` (the caller's clock): an outage begins, unless one
    /// is under way.
    pub(crate) fn failed(&self, fail_at: SystemTime) {
        let mut state = self.state();
        let State { known, outage } = &mut *state;
        if outage.is_none() {
            *outage = Some(self.phases(fail_at, known.as_ref()));
        }
    }

    /// What the process may release of each rule's window or period in progress at an
    /// outage seen at `fail_at`.
    fn phases(&self, fail_at: SystemTime, known: Option<&Known>) -> Vec<Phase> {
        let unsynced = self.unsynced();
        let charged = known
            .map(|known| self.charged_within(fail_at.duration_since(known.at).unwrap_or_default()));
        self.rules
            .iter()
            .enumerate()
            .map(|(index, rule)| {
                let left = match (known, charged) {
                    (Some(known), Some(charged)) => {
                        let used = known.used.get(index).copied().unwrap_or(rule.max);
                        u64::from(rule.max)
                            .saturating_sub(u64::from(used))
                            .saturating_sub(charged)
                            .saturating_sub(unsynced)
                    }
                    _ => 0,
                };
                Phase {
                    until: self.outage_end(rule, fail_at),
                    allowance: u32::try_from(left * u64::from(self.percent) / 100)
                        .unwrap_or(u32::MAX),
                }
            })
            .collect()
    }

    /// The most requests every process together may have charged to Redis within any
    /// closed span of `d`: the least, over the rules, of what each lets through in it.
    fn charged_within(&self, d: Duration) -> u64 {
        let d = d.as_nanos();
        self.rules
            .iter()
            .map(|rule| {
                let spans = match rule.kind {
                    // Every half-open window of the span holds at most `max`.
                    RuleKind::Aligned => d / rule.span + 2,
                    // Every request falls in its own period; at most `max` fall in each.
                    _ => d / rule.span + 1,
                };
                u64::try_from(u128::from(rule.max).saturating_mul(spans)).unwrap_or(u64::MAX)
            })
            .min()
            .unwrap_or(0)
    }

    /// The first instant at which nothing charged before `fail_at` counts in `rule` with a
    /// request: a window (plus margin) later for a rolling rule; for an aligned one, the end
    /// (plus margin) of the last period a request at `fail_at` may fall in.
    fn outage_end(&self, rule: &Bound, fail_at: SystemTime) -> SystemTime {
        let fail_at = fail_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| since.as_nanos());
        let end = match rule.kind {
            RuleKind::Aligned => {
                ((fail_at + self.margin) / rule.span + 1) * rule.span + self.margin
            }
            _ => fail_at + rule.span,
        };
        let secs = u64::try_from(end / 1_000_000_000).unwrap_or(u64::MAX);
        // Below 10^9: fits.
        let nanos = u32::try_from(end % 1_000_000_000).unwrap_or(0);
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    /// Admits and charges a request at `now` if its share and its outage allowances allow
    /// it; a refusal names when to ask again (`retry_at` at the latest when only an allowance
    /// or a 0 share refused: Redis may answer by then).
    pub(crate) fn try_acquire(
        &self,
        now: SystemTime,
        priority: Priority,
        retry_at: SystemTime,
    ) -> Result<(), NotUntil> {
        let mut state = self.state();
        let State { known, outage } = &mut *state;
        // Redis was skipped without a failure of this process's own recorded (a concurrent
        // answer ended the outage): the failure was seen by now.
        let phases = outage.get_or_insert_with(|| self.phases(now, known.as_ref()));
        let Some(limiter) = &self.limiter else {
            return Err(NotUntil::new(retry_at, None));
        };
        let spent_until = phases
            .iter()
            .filter(|phase| now < phase.until && phase.allowance == 0)
            .map(|phase| phase.until)
            .max();
        if let Some(until) = spent_until {
            return Err(NotUntil::new(until.min(retry_at), None));
        }
        if let Err(refused) = limiter.try_acquire_reading(Now::from(now).reading(), priority) {
            // The share's rule at that index is a cut of the configured one: name that.
            let rule = refused.rule.map(|index| self.rules[index].rule);
            return Err(NotUntil::new(from_nanos(refused.earliest), rule));
        }
        for phase in phases.iter_mut().filter(|phase| now < phase.until) {
            phase.allowance -= 1;
        }
        self.unsynced.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// Holds the fallback's requests until `until` too (a server 429).
    pub(crate) fn pause_until(&self, now: SystemTime, until: SystemTime) {
        if let Some(limiter) = &self.limiter {
            limiter.pause_until(now, until);
        }
    }
}

/// `config` with every rule's maximum cut to `percent` %, rounded down; `None` when some
/// rule's share is 0.
fn share(config: &RateLimitConfig, percent: u8) -> Result<Option<RateLimitConfig>, ConfigError> {
    let mut rules = Vec::with_capacity(config.rules().len());
    for rule in config.rules() {
        let max =
            u32::try_from(u64::from(rule.max()) * u64::from(percent) / 100).unwrap_or(u32::MAX);
        if max == 0 {
            return Ok(None);
        }
        rules.push(match rule.kind() {
            RuleKind::Aligned => Rule::aligned(max, rule.period())?,
            _ => Rule::sliding(max, rule.period())?,
        });
    }
    RateLimitConfig::builder()
        .rules(rules)
        .safety_margin(config.safety_margin())
        .background_reserve_percent(config.background_reserve_percent())
        .smooth_pacing(config.smooth_pacing())
        .application(config.application())
        .build()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-01-05T10:37:00Z.
    fn start() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_767_609_420)
    }

    fn drchrono(margin: Duration) -> RateLimitConfig {
        RateLimitConfig::builder()
            .safety_margin(margin)
            .build()
            .unwrap()
    }

    fn admitted(fallback: &Fallback, now: SystemTime, tries: usize) -> usize {
        let retry_at = now + Duration::from_secs(1);
        (0..tries)
            .filter(|_| {
                fallback
                    .try_acquire(now, Priority::Interactive, retry_at)
                    .is_ok()
            })
            .count()
    }

    #[test]
    fn shares_round_down_and_a_share_of_0_is_none() {
        let config = drchrono(Duration::from_millis(7));
        let third = share(&config, 33).unwrap().unwrap();
        let maxima: Vec<_> = third.rules().iter().map(|rule| rule.max()).collect();
        assert_eq!(maxima, [2, 95, 165]);
        assert_eq!(third.rules()[2].kind(), RuleKind::Aligned);
        assert_eq!(third.safety_margin(), Duration::from_millis(7));
        // 9 × 12 % = 1.08: one per second; 9 × 11 % = 0.99: none.
        assert_eq!(share(&config, 12).unwrap().unwrap().rules()[0].max(), 1);
        assert!(share(&config, 11).unwrap().is_none());
        assert!(share(&config, 1).unwrap().is_none());
    }

    #[test]
    fn a_share_of_0_refuses_until_redis_may_answer() {
        let fallback = Fallback::new(&drchrono(Duration::ZERO), 10).unwrap();
        fallback.learned(start(), vec![0, 0, 0]);
        fallback.failed(start());
        for second in [0, 1, 700, 4_000] {
            let now = start() + Duration::from_secs(second);
            let retry_at = now + Duration::from_millis(300);
            let refused = fallback
                .try_acquire(now, Priority::Interactive, retry_at)
                .unwrap_err();
            assert_eq!(refused.earliest(), retry_at);
        }
        assert_eq!(fallback.unsynced(), 0);
    }

    #[test]
    fn others_may_have_charged_since_the_last_decision() {
        let fallback = Fallback::new(&drchrono(Duration::from_millis(100)), 50).unwrap();
        let second = Duration::from_millis(1_100);
        assert_eq!(fallback.charged_within(Duration::ZERO), 9);
        assert_eq!(fallback.charged_within(second - Duration::from_nanos(1)), 9);
        assert_eq!(fallback.charged_within(second), 18);
        // Ten minutes: the window rule (290 per 600.1 s) is the tightest.
        assert_eq!(fallback.charged_within(Duration::from_secs(600)), 290);
        assert_eq!(fallback.charged_within(Duration::from_secs(601)), 580);
    }

    #[test]
    fn an_outage_allows_a_share_of_what_provably_remained_until_the_window_and_hour_end() {
        let margin = Duration::from_millis(100);
        let fallback = Fallback::new(&drchrono(margin), 50).unwrap();
        // Redis said 5 / 250 / 300 used at `start`; the failure is seen half a second later:
        // others may have charged 9 more meanwhile.
        fallback.learned(start(), vec![5, 250, 300]);
        let fail_at = start() + Duration::from_millis(500);
        fallback.failed(fail_at);
        let phases = fallback.state().outage.clone().unwrap();
        // 10:37:00.5 + 1.1 s; + 600.1 s; 11:00:00.1.
        let hour = UNIX_EPOCH + Duration::from_secs(1_767_610_800) + margin;
        assert_eq!(
            phases,
            [
                Phase {
                    until: fail_at + Duration::from_millis(1_100),
                    allowance: 0, // (9 - 5 - 9) / 2
                },
                Phase {
                    until: fail_at + Duration::from_millis(600_100),
                    allowance: 15, // (290 - 250 - 9) / 2
                },
                Phase {
                    until: hour,
                    allowance: 95, // (500 - 300 - 9) / 2
                },
            ]
        );
        // Nothing before the second's phase ends; then 4 per second (its share), until the
        // window's allowance (15) is spent.
        assert_eq!(admitted(&fallback, fail_at, 10), 0);
        let refused = fallback
            .try_acquire(fail_at, Priority::Interactive, hour)
            .unwrap_err();
        assert_eq!(refused.earliest(), fail_at + Duration::from_millis(1_100));
        // A spent allowance names no rule.
        assert_eq!(refused.rule(), None);
        let mut now = fail_at + Duration::from_millis(1_100);
        let mut total = 0;
        for _ in 0..10 {
            total += admitted(&fallback, now, 10);
            now += Duration::from_millis(1_100);
        }
        assert_eq!(total, 15);
        assert_eq!(fallback.unsynced(), 15);
        // After the window's phase: the hour's allowance (95 - 15 = 80) binds, then the
        // plain shares from 11:00:00.1.
        let mut now = fail_at + Duration::from_millis(600_100);
        let mut total = 0;
        while now < hour {
            total += admitted(&fallback, now, 10);
            now += Duration::from_millis(1_100);
        }
        assert_eq!(total, 80);
        assert_eq!(admitted(&fallback, hour, 10), 4);
        // The share of the rolling second refuses the fifth: named as configured (9, not 4).
        let refused = fallback
            .try_acquire(hour, Priority::Interactive, hour + Duration::from_secs(9))
            .unwrap_err();
        assert_eq!(refused.rule(), Some(drchrono(margin).rules()[0]));
        assert_eq!(refused.earliest(), hour + Duration::from_millis(1_100));
        // A Redis answer ends the outage; the next one starts from what Redis says then,
        // less the fallback's releases Redis was not charged for yet (99).
        fallback.learned(hour, vec![0, 0, 0]);
        fallback.failed(hour);
        let phases = fallback.state().outage.clone().unwrap();
        let allowances: Vec<_> = phases.iter().map(|phase| phase.allowance).collect();
        assert_eq!(allowances, [0, (290 - 9 - 99) / 2, (500 - 9 - 99) / 2]);
    }

    #[test]
    fn a_process_that_never_heard_from_redis_waits_for_the_window_and_the_hour() {
        let margin = Duration::from_millis(100);
        let fallback = Fallback::new(&drchrono(margin), 50).unwrap();
        fallback.failed(start());
        assert_eq!(admitted(&fallback, start(), 5), 0);
        assert_eq!(
            admitted(&fallback, start() + Duration::from_secs(601), 5),
            0
        );
        let hour = UNIX_EPOCH + Duration::from_secs(1_767_610_800) + margin;
        assert_eq!(admitted(&fallback, hour - Duration::from_nanos(1), 5), 0);
        assert_eq!(admitted(&fallback, hour, 5), 4);
    }

    #[test]
    fn a_stale_decision_teaches_nothing() {
        let fallback = Fallback::new(&drchrono(Duration::ZERO), 50).unwrap();
        // Five minutes without asking Redis: others may have spent the window meanwhile,
        // and 290 of the hour (the window lets no more through in five minutes).
        fallback.learned(start(), vec![0, 0, 0]);
        fallback.failed(start() + Duration::from_secs(300));
        let phases = fallback.state().outage.clone().unwrap();
        let allowances: Vec<_> = phases.iter().map(|phase| phase.allowance).collect();
        assert_eq!(allowances, [0, 0, (500 - 290) / 2]);
        // An older answer arriving late does not replace a newer one.
        fallback.learned(start() + Duration::from_secs(10), vec![9, 290, 500]);
        fallback.learned(start(), vec![0, 0, 0]);
        fallback.failed(start() + Duration::from_secs(10));
        let phases = fallback.state().outage.clone().unwrap();
        assert!(
            phases.iter().all(|phase| phase.allowance == 0),
            "{phases:?}"
        );
    }
}
