//! Property test: the limiter core against an independent brute-force oracle.
//!
//! For random rule sets, margins, reserves and arrival sequences (first-come first-served),
//! every release breaks no rule and equals the earliest instant the oracle allows. The
//! oracle shares no code with the limiter: it counts releases directly, and scans the only
//! instants at which admissibility can change (the arrival, each release plus a window, the
//! next aligned boundary).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use drchrono_ratelimit::{LocalLimiter, Priority, RateLimitConfig};
use proptest::prelude::*;

mod random_rules;

use random_rules::{BASE_MS, Kind, R, rule_strategy};

#[derive(Debug, Clone)]
struct Case {
    rules: Vec<R>,
    margin: u64,
    reserve_percent: u8,
    /// (gap before this arrival in ms, background?)
    arrivals: Vec<(u64, bool)>,
}

fn ms(t: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(t)
}

/// The most requests of this priority an aligned rule allows, written from the spec: the
/// reserve is the percentage rounded up, leaving background at least one.
fn allowed(rule: &R, background: bool, reserve_percent: u8) -> u64 {
    match rule.kind {
        Kind::Sliding => rule.max,
        Kind::Aligned if background => {
            let reserve = (rule.max * u64::from(reserve_percent)).div_ceil(100);
            rule.max - reserve.min(rule.max - 1)
        }
        Kind::Aligned => rule.max,
    }
}

/// Does every rule admit one more request at `t`, given the releases so far?
fn admits(case: &Case, released: &[u64], t: u64, background: bool) -> bool {
    case.rules
        .iter()
        .all(|rule| admits_by(case, rule, released, t, background))
}

/// Does `rule` alone admit one more request at `t`?
fn admits_by(case: &Case, rule: &R, released: &[u64], t: u64, background: bool) -> bool {
    {
        let count = match rule.kind {
            Kind::Sliding => {
                let window = rule.period + case.margin;
                released
                    .iter()
                    .filter(|&&r| r + window > t && r <= t)
                    .count()
            }
            Kind::Aligned => {
                // A request may fall in the period of `t - margin` or of `t + margin` on a
                // server whose clock is within the margin of ours; each release counts in
                // every period it may fall in.
                let mine = may_fall_in(rule, case.margin, t);
                mine.iter()
                    .map(|&k| {
                        released
                            .iter()
                            .filter(|&&r| may_fall_in(rule, case.margin, r).contains(&k))
                            .count()
                    })
                    .max()
                    .unwrap_or(0)
            }
        };
        (count as u64) < allowed(rule, background, case.reserve_percent)
    }
}

/// The aligned periods a request at `t` may fall in: those of `t - margin ..= t + margin`.
fn may_fall_in(rule: &R, margin: u64, t: u64) -> Vec<u64> {
    let mut periods: Vec<u64> = (t - margin..=t + margin).map(|x| x / rule.period).collect();
    periods.dedup();
    periods
}

/// The earliest instant `>= t0` every rule admits, by scanning every candidate.
fn oracle_earliest(case: &Case, released: &[u64], t0: u64, background: bool) -> u64 {
    let mut candidates = vec![t0];
    for rule in &case.rules {
        match rule.kind {
            Kind::Sliding => {
                candidates.extend(released.iter().map(|r| r + rule.period + case.margin));
            }
            Kind::Aligned => {
                // A full period stops mattering once `t - margin` has left it.
                let first = (t0 - case.margin) / rule.period;
                let last = (t0 + case.margin) / rule.period;
                candidates.extend((first..=last + 1).map(|k| (k + 1) * rule.period + case.margin));
            }
        }
    }
    candidates.sort_unstable();
    candidates
        .into_iter()
        .filter(|&c| c >= t0)
        .find(|&c| admits(case, released, c, background))
        .expect("the next aligned boundary past every window is always admissible")
}

/// Every rolling window (ending at a release) and every aligned period holds at most `max`.
fn assert_no_rule_broken(case: &Case, released: &[u64]) {
    for rule in &case.rules {
        for &r in released {
            let count = match rule.kind {
                Kind::Sliding => released
                    .iter()
                    .filter(|&&x| x + rule.period > r && x <= r)
                    .count(),
                Kind::Aligned => {
                    // Whatever the server's offset within the margin, its period holds at
                    // most `max`.
                    let margin = case.margin as i64;
                    (-margin..=margin)
                        .map(|skew| {
                            let k = (r as i64 + skew) as u64 / rule.period;
                            released
                                .iter()
                                .filter(|&&x| (x as i64 + skew) as u64 / rule.period == k)
                                .count()
                        })
                        .max()
                        .unwrap_or(0)
                }
            };
            assert!(count as u64 <= rule.max, "{rule:?} broken at {r}: {count}");
        }
    }
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(rule_strategy(), 1..=4),
        prop_oneof![Just(0u64), 1u64..=4],
        0u8..=100,
        prop::collection::vec((0u64..=9, prop::bool::weighted(0.3)), 1..=60),
    )
        .prop_map(|(rules, margin, reserve_percent, arrivals)| {
            // Aligned periods must be longer than twice the margin (a configuration error
            // otherwise, tested elsewhere).
            let margin = rules
                .iter()
                .filter(|r| r.kind == Kind::Aligned)
                .map(|r| (r.period - 1) / 2)
                .fold(margin, u64::min);
            (rules, margin, reserve_percent, arrivals)
        })
        .prop_map(|(rules, margin, reserve_percent, arrivals)| Case {
            rules,
            margin,
            reserve_percent,
            arrivals,
        })
}

fn run(case: &Case) {
    let rules = case.rules.iter().map(R::rule);
    let config = RateLimitConfig::builder()
        .rules(rules)
        .safety_margin(Duration::from_millis(case.margin))
        .background_reserve_percent(case.reserve_percent)
        .build()
        .unwrap();
    let limiter = LocalLimiter::new(&config);

    let mut released: Vec<u64> = Vec::new();
    let mut arrival = BASE_MS;
    for &(gap, background) in &case.arrivals {
        arrival += gap;
        let priority = if background {
            Priority::Background
        } else {
            Priority::Interactive
        };
        let t0 = arrival.max(released.last().copied().unwrap_or(0));
        let expected = oracle_earliest(case, &released, t0, background);
        // The limiter's answer at t0 must be the oracle's instant, and admit there.
        let release = match limiter.try_acquire_with(ms(t0), priority) {
            Ok(()) => t0,
            Err(not_until) => {
                let at = not_until.earliest().duration_since(UNIX_EPOCH).unwrap();
                assert_eq!(at.subsec_nanos() % 1_000_000, 0, "off the ms grid: {at:?}");
                let at = at.as_millis() as u64;
                assert!(at > t0);
                assert_eq!(limiter.earliest(ms(t0), priority), ms(at));
                // The rule it names holds the request until then: alone, it refuses a
                // millisecond before (no pause here, so a rule is always named).
                let named = not_until.rule().expect("no pause: a rule is named");
                assert!(
                    case.rules.iter().any(|rule| rule.rule() == named
                        && !admits_by(case, rule, &released, at - 1, background)),
                    "{named:?} does not hold request {} of {case:?} until {at}",
                    released.len()
                );
                // Nothing earlier is admitted (the refusal charged nothing), and a refusal
                // from the cache names the same rule.
                if at > t0 + 1 {
                    let again = limiter.try_acquire_with(ms(at - 1), priority).unwrap_err();
                    assert_eq!((again.earliest(), again.rule()), (ms(at), Some(named)));
                }
                limiter
                    .try_acquire_with(ms(at), priority)
                    .unwrap_or_else(|e| panic!("refused at its own earliest instant: {e}"));
                at
            }
        };
        assert_eq!(release, expected, "request {} of {case:?}", released.len());
        assert!(admits(case, &released, release, background));
        released.push(release);
    }
    assert_no_rule_broken(case, &released);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn releases_are_the_oracles_earliest_instants(case in case_strategy()) {
        run(&case);
    }
}

#[test]
fn drchrono_rules_interplay() {
    // 9 per second, 20 per 30 ms-scaled window, 25 per aligned 100: a hand-made case where
    // the three rules take turns binding.
    let case = Case {
        rules: vec![
            R {
                kind: Kind::Sliding,
                max: 9,
                period: 10,
            },
            R {
                kind: Kind::Sliding,
                max: 20,
                period: 30,
            },
            R {
                kind: Kind::Aligned,
                max: 25,
                period: 100,
            },
        ],
        margin: 1,
        reserve_percent: 10,
        arrivals: (0..120)
            .map(|i| (u64::from(i % 7 == 0), i % 5 == 0))
            .collect(),
    };
    run(&case);
}
