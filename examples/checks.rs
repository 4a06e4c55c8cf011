//! [`Report`]: the checks an example ran, printed one line each; shared by the examples.

use std::fmt;

/// One check: something an example expected of the stack, and what it saw.
#[derive(Debug, Clone)]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether the stack behaved as expected.
    pub passed: bool,
    /// What was observed (statuses, counters, timings; never a body or a token).
    pub detail: String,
}

/// Every check of a run, in order.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// The checks, in the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// Whether every check passed (and there was at least one).
    pub fn passed(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed)
    }

    /// The check called `name`.
    pub fn check(&self, name: &str) -> Option<&Check> {
        self.checks.iter().find(|c| c.name == name)
    }

    /// Adds a check.
    pub fn record(&mut self, name: &'static str, passed: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name,
            passed,
            detail: detail.into(),
        });
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for check in &self.checks {
            let mark = if check.passed { "ok  " } else { "FAIL" };
            writeln!(f, "{mark} {:<28} {}", check.name, check.detail)?;
        }
        let passed = self.checks.iter().filter(|c| c.passed).count();
        write!(f, "{passed}/{} checks passed", self.checks.len())
    }
}
