//! Reading the script's replies: `acquire` into a [`Decision`], `status` into a [`Status`].

use std::time::SystemTime;

use crate::{Rule, RuleStatus, Status};

/// The script's answer to `acquire`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Decided.
    Decided(Decision),
    /// The server holds only `held` of this process's charges, fewer than it was told of
    /// (a failover lost the rest): nothing decided; re-assert them first.
    Resync { held: u64 },
}

/// A decision of the script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Decision {
    /// Admitted and charged.
    pub(crate) admitted: bool,
    /// Refused: µs from the script's clock reading until the earliest admissible instant.
    pub(crate) wait: i64,
    /// The script's clock reading, µs since the Unix epoch: the instant of the charge.
    pub(crate) now: i64,
    /// The charges of this process the server holds after the decision (0 without a
    /// journal).
    pub(crate) held: u64,
    /// What each rule holds after the decision (the `used` of `status`).
    pub(crate) used: Vec<u32>,
}

/// `reply` = `{admitted (1/0), wait, now, held, used_1, …, used_n}` for `rules` rules, or
/// `{2, held, now}`.
pub(crate) fn decode_decision(reply: &[i64], rules: usize) -> Option<Answer> {
    if let [2, held, _now] = reply {
        return Some(Answer::Resync {
            held: u64::try_from(*held).ok()?,
        });
    }
    let (&[admitted, wait, now, held], used) = reply.split_first_chunk::<4>()?;
    if used.len() != rules || !matches!(admitted, 0 | 1) {
        return None;
    }
    Some(Answer::Decided(Decision {
        admitted: admitted == 1,
        wait,
        now,
        held: u64::try_from(held).ok()?,
        used: used
            .iter()
            .map(|&used| u32::try_from(used.max(0)).unwrap_or(u32::MAX))
            .collect(),
    }))
}

/// `reply` = `{now, used_1, resets_1, …, next, next_background, paused}` (offsets in µs from
/// the script's clock reading; -1: none); `at` maps an offset to the caller's clock.
pub(crate) fn decode_status(
    reply: &[i64],
    rules: &[Rule],
    at: impl Fn(i64) -> SystemTime,
) -> Option<Status> {
    if reply.len() != 4 + 2 * rules.len() {
        return None;
    }
    let rule_statuses: Vec<RuleStatus> = rules
        .iter()
        .zip(reply[1..].chunks_exact(2))
        .map(|(&rule, pair)| RuleStatus {
            rule,
            remaining: rule
                .max()
                .saturating_sub(u32::try_from(pair[0]).unwrap_or(u32::MAX)),
            resets_at: (pair[1] >= 0).then(|| at(pair[1])),
        })
        .collect();
    let tail = &reply[1 + 2 * rules.len()..];
    Some(Status {
        at: at(reply[0]),
        next_reset: rule_statuses.iter().filter_map(|r| r.resets_at).min(),
        rules: rule_statuses,
        next_available: at(tail[0]),
        next_available_background: at(tail[1]),
        paused_until: (tail[2] >= 0).then(|| at(tail[2])),
    })
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn offsets_become_instants_of_the_callers_clock() {
        let rules = [
            Rule::sliding(9, Duration::from_secs(1)).unwrap(),
            Rule::aligned(500, Duration::from_secs(3600)).unwrap(),
        ];
        let base = UNIX_EPOCH + Duration::from_secs(1_000);
        let at = |offset: i64| base + Duration::from_micros(offset as u64);
        let status = decode_status(&[5, 3, 900, 12, 2_000, 40, 50, -1], &rules, at).unwrap();
        assert_eq!(status.at, at(5));
        assert_eq!(status.rules[0].remaining, 6);
        assert_eq!(status.rules[0].resets_at, Some(at(900)));
        assert_eq!(status.rules[1].remaining, 488);
        assert_eq!(status.next_reset, Some(at(900)));
        assert_eq!(status.next_available, at(40));
        assert_eq!(status.next_available_background, at(50));
        assert_eq!(status.paused_until, None);
        let empty = decode_status(&[0, 0, -1, 0, 7, 0, 0, 9], &rules, at).unwrap();
        assert_eq!(empty.rules[0].resets_at, None);
        assert_eq!(empty.paused_until, Some(at(9)));
        assert!(decode_status(&[0, 1], &rules, at).is_none());
    }

    fn decided(answer: Option<Answer>) -> Decision {
        match answer {
            Some(Answer::Decided(decision)) => decision,
            other => panic!("not a decision: {other:?}"),
        }
    }

    #[test]
    fn decisions_carry_the_instant_and_what_each_rule_holds() {
        let admitted = decided(decode_decision(&[1, 0, 77, 5, 4, 280, 300], 3));
        assert!(admitted.admitted);
        assert_eq!(
            (admitted.now, admitted.held, admitted.used),
            (77, 5, vec![4, 280, 300])
        );
        let refused = decided(decode_decision(&[0, 1_500, 77, 0, 9, 9, -1], 3));
        assert_eq!((refused.admitted, refused.wait), (false, 1_500));
        assert_eq!(refused.used, [9, 9, 0]);
        assert_eq!(
            decode_decision(&[2, 12, 77], 3),
            Some(Answer::Resync { held: 12 })
        );
        assert!(decode_decision(&[1, 0, 77, 5, 4], 3).is_none());
        assert!(decode_decision(&[1, 0, 77, -1, 4, 280, 300], 3).is_none());
        assert!(decode_decision(&[3, 0, 77], 0).is_none());
        assert!(decode_decision(&[2, -1, 77], 0).is_none());
        assert!(decode_decision(&[1], 0).is_none());
    }
}
