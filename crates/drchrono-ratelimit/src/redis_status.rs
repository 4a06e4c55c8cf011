//! Reading the script's `status` reply into a [`Status`].

use std::time::SystemTime;

use crate::{Rule, RuleStatus, Status};

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
}
