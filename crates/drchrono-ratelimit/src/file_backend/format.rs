//! The state file's format, version 1: one JSON object.
//!
//! ```json
//! {"version":1,"application":"default","now_ns":1767609420000000000,
//!  "paused_until_ns":null,"last_charge_ns":1767609420000000000,
//!  "rules":[
//!   {"kind":"sliding","max":9,"window_ns":1000000000,"charged_ns":[1767609420000000000]},
//!   {"kind":"aligned","max":500,"period_ns":3600000000000,
//!    "latest":{"index":490891,"count":1,"next":0},"before":{"index":0,"count":0,"next":0}}]}
//! ```
//!
//! Instants are nanoseconds since the Unix epoch on the host's wall clock. `now_ns` is the
//! latest decision; `charged_ns`, the instants a sliding rule charged that are still inside
//! its window plus the margin (at most `max`, oldest first); an aligned rule's `latest` is
//! the period (its index since the epoch) it last charged in with its count and the next
//! period's (a request within the margin of the boundary counts in both), `before` the same
//! before the latest move.

use serde::{Deserialize, Serialize};

use crate::algorithm::snapshot::{Memory, PeriodCounts, RuleSnapshot, Snapshot};

/// The format version this crate writes and reads.
pub(crate) const VERSION: u64 = 1;

/// Why a file could not be decoded.
#[derive(Debug)]
pub(crate) enum Undecodable {
    /// Another format version.
    Version(u64),
    /// Not this format.
    Corrupt(String),
}

#[derive(Deserialize)]
struct Header {
    version: u64,
}

/// Every field is required (`null` where none) and no other is allowed: a file missing one
/// (a pause dropped by an edit, a field misspelled) is not a state this crate wrote.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    version: u64,
    application: String,
    now_ns: u64,
    #[serde(deserialize_with = "Option::deserialize")]
    paused_until_ns: Option<u64>,
    #[serde(deserialize_with = "Option::deserialize")]
    last_charge_ns: Option<u64>,
    rules: Vec<FileRule>,
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum FileRule {
    Sliding {
        max: u32,
        window_ns: u64,
        charged_ns: Vec<u64>,
    },
    Aligned {
        max: u32,
        period_ns: u64,
        latest: FilePeriod,
        before: FilePeriod,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePeriod {
    index: u64,
    count: u32,
    next: u32,
}

impl From<PeriodCounts> for FilePeriod {
    fn from(counts: PeriodCounts) -> Self {
        Self {
            index: counts.period,
            count: counts.count,
            next: counts.next,
        }
    }
}

impl From<FilePeriod> for PeriodCounts {
    fn from(period: FilePeriod) -> Self {
        Self {
            period: period.index,
            count: period.count,
            next: period.next,
        }
    }
}

/// The file's bytes for `application`'s `snapshot`.
pub(crate) fn encode(application: &str, snapshot: &Snapshot) -> Vec<u8> {
    let rules = snapshot
        .rules
        .iter()
        .map(|rule| match &rule.memory {
            Memory::Sliding(charged) => FileRule::Sliding {
                max: rule.max,
                window_ns: rule.period,
                charged_ns: charged.clone(),
            },
            Memory::Aligned { latest, before } => FileRule::Aligned {
                max: rule.max,
                period_ns: rule.period,
                latest: (*latest).into(),
                before: (*before).into(),
            },
        })
        .collect();
    let file = StateFile {
        version: VERSION,
        application: application.to_owned(),
        now_ns: snapshot.last_now,
        paused_until_ns: (snapshot.paused_until != 0).then_some(snapshot.paused_until),
        last_charge_ns: snapshot.last_charge,
        rules,
    };
    let mut bytes = serde_json::to_vec(&file).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// The application key and the snapshot in `bytes`.
pub(crate) fn decode(bytes: &[u8]) -> Result<(String, Snapshot), Undecodable> {
    let corrupt = |error: serde_json::Error| Undecodable::Corrupt(error.to_string());
    let header: Header = serde_json::from_slice(bytes).map_err(corrupt)?;
    if header.version != VERSION {
        return Err(Undecodable::Version(header.version));
    }
    let file: StateFile = serde_json::from_slice(bytes).map_err(corrupt)?;
    let rules = file
        .rules
        .into_iter()
        .map(|rule| match rule {
            FileRule::Sliding {
                max,
                window_ns,
                charged_ns,
            } => RuleSnapshot {
                max,
                period: window_ns,
                memory: Memory::Sliding(charged_ns),
            },
            FileRule::Aligned {
                max,
                period_ns,
                latest,
                before,
            } => RuleSnapshot {
                max,
                period: period_ns,
                memory: Memory::Aligned {
                    latest: latest.into(),
                    before: before.into(),
                },
            },
        })
        .collect();
    let snapshot = Snapshot {
        last_now: file.now_ns,
        paused_until: file.paused_until_ns.unwrap_or(0),
        last_charge: file.last_charge_ns,
        rules,
    };
    Ok((file.application, snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            last_now: 1_767_609_420_000_000_000,
            paused_until: 0,
            last_charge: Some(1_767_609_420_000_000_000),
            rules: vec![
                RuleSnapshot {
                    max: 9,
                    period: 1_000_000_000,
                    memory: Memory::Sliding(vec![1_767_609_420_000_000_000]),
                },
                RuleSnapshot {
                    max: 500,
                    period: 3_600_000_000_000,
                    memory: Memory::Aligned {
                        latest: PeriodCounts {
                            period: 490_891,
                            count: 1,
                            next: 0,
                        },
                        before: PeriodCounts::default(),
                    },
                },
            ],
        }
    }

    #[test]
    fn encodes_the_documented_format_and_decodes_it_back() {
        let bytes = encode("default", &snapshot());
        let text = String::from_utf8(bytes.clone()).unwrap();
        let documented = "{\"version\":1,\"application\":\"default\",\"now_ns\":1767609420000000000,\
            \"paused_until_ns\":null,\"last_charge_ns\":1767609420000000000,\
            \"rules\":[\
            {\"kind\":\"sliding\",\"max\":9,\"window_ns\":1000000000,\"charged_ns\":[1767609420000000000]},\
            {\"kind\":\"aligned\",\"max\":500,\"period_ns\":3600000000000,\
            \"latest\":{\"index\":490891,\"count\":1,\"next\":0},\"before\":{\"index\":0,\"count\":0,\"next\":0}}]}\n";
        assert_eq!(text, documented);
        let (application, decoded) = decode(&bytes).unwrap();
        assert_eq!(application, "default");
        assert_eq!(decoded, snapshot());
    }

    #[test]
    fn another_version_or_anything_else_is_undecodable() {
        assert!(matches!(
            decode(b"{\"version\":2,\"whatever\":true}"),
            Err(Undecodable::Version(2))
        ));
        for bytes in [
            &b""[..],
            b"{\"version\":1}",
            b"{\"version\":1,\"application\":\"a\",\"now_ns\":-1,\"paused_until_ns\":null,\"last_charge_ns\":null,\"rules\":[]}",
            b"\0\0\0\0",
            b"{\"version\":1,\"application\":\"a\",\"now_ns\":1,\"paused_until_ns\":null,\"last_charge_ns\":null,\"rules\":[{\"kind\":\"leaky\"}]}",
        ] {
            assert!(
                matches!(decode(bytes), Err(Undecodable::Corrupt(_))),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    /// A valid JSON that is not the whole format: a field missing (a missing pause would
    /// read as none, a missing latest charge as none), misspelled, or one it does not have.
    /// Numbers out of their type's range or not integers.
    #[test]
    fn a_missing_misspelled_or_unknown_field_is_undecodable() {
        let good = String::from_utf8(encode("default", &snapshot())).unwrap();
        assert!(decode(good.as_bytes()).is_ok());
        let edits = [
            (r#""paused_until_ns":null,"#, ""),
            (r#""last_charge_ns":1767609420000000000,"#, ""),
            (r#""now_ns":1767609420000000000,"#, ""),
            (r#","charged_ns":[1767609420000000000]"#, ""),
            (r#","next":0},"before""#, r#"},"before""#),
            ("paused_until_ns", "paused_until"),
            ("last_charge_ns", "last_charge"),
            (r#""version":1,"#, r#""version":1,"spare":true,"#),
            (r#""kind":"sliding","#, r#""kind":"sliding","spare":1,"#),
            (r#""index":490891,"#, r#""index":490891,"spare":1,"#),
            (r#""max":9,"#, r#""max":4294967296,"#),
            (r#""count":1,"#, r#""count":-1,"#),
            (r#""count":1,"#, r#""count":1.5,"#),
            (r#""index":490891,"#, r#""index":1e6,"#),
            (
                r#""now_ns":1767609420000000000,"#,
                r#""now_ns":18446744073709551616,"#,
            ),
        ];
        for (from, to) in edits {
            assert_eq!(good.matches(from).count(), 1, "{from}");
            let edited = good.replacen(from, to, 1);
            assert!(
                matches!(decode(edited.as_bytes()), Err(Undecodable::Corrupt(_))),
                "{edited}"
            );
        }
        // A key twice, or a second value after the state.
        let twice = good.replacen(r#""now_ns":"#, r#""now_ns":1,"now_ns":"#, 1);
        let trailing = format!("{}{{}}", good.trim_end());
        for edited in [twice, trailing] {
            assert!(
                matches!(decode(edited.as_bytes()), Err(Undecodable::Corrupt(_))),
                "{edited}"
            );
        }
    }
}
