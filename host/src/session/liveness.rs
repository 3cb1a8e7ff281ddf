//! Is a runner that holds a claim still making progress? A pure decision, tested by table; the
//! supervisor gathers the inputs and acts on the verdict.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::Config;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Liveness {
    /// Nothing claimed, or the runner beat recently enough.
    Healthy,
    /// Holding a claim and silent for longer than allowed: stop it and re-queue.
    Stuck { silent_for: Duration },
}

pub struct Inputs {
    pub now: DateTime<Utc>,
    /// When this host started the runner.
    pub started_at: DateTime<Utc>,
    /// The heartbeat file's mtime, if it exists.
    pub last_beat: Option<DateTime<Utc>>,
    /// Whether the runner holds any claim for the current attempt.
    pub holds_claim: bool,
    /// `CLAIM_STUCK_MS`.
    pub tolerance: Duration,
    /// The declared timeout of the tool the runner is in, if any.
    pub tool_timeout: Option<Duration>,
}

/// A heartbeat older than three periods (at least 5 s) means the runner is not beating: stuck,
/// or gone. (The host's liveness check has its own, longer tolerance before it acts.)
pub fn stale_after(config: &Config) -> u64 {
    u64::try_from(config.heartbeat.as_millis().saturating_mul(3))
        .unwrap_or(u64::MAX)
        .max(5_000)
}

pub fn judge(i: &Inputs) -> Liveness {
    if !i.holds_claim {
        return Liveness::Healthy;
    }
    // A beat from before this runner started belongs to its predecessor.
    let last = i.last_beat.map_or(i.started_at, |b| b.max(i.started_at));
    let silent_for = (i.now - last).to_std().unwrap_or(Duration::ZERO);
    // A runner blocked inside a long tool still beats (the heartbeat is a timer), but give it
    // the tool's own timeout in case the tool starves it.
    let allowed = i
        .tool_timeout
        .map_or(i.tolerance, |t| i.tolerance.max(t + i.tolerance));
    if silent_for > allowed {
        Liveness::Stuck { silent_for }
    } else {
        Liveness::Healthy
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20000);
        let s = |n: i64| t0 + chrono::Duration::seconds(n);
        let tol = Duration::from_secs(60);
        // (started, beat, now, claim, tool timeout, stuck?)
        type Row = (i64, Option<i64>, i64, bool, Option<u64>, bool);
        let table: &[Row] = &[
            (0, None, 30, true, None, false),       // young runner, no beat yet
            (0, None, 61, true, None, true),        // never beat, past tolerance
            (0, Some(50), 100, true, None, false),  // beat 50 s ago
            (0, Some(10), 100, true, None, true),   // beat 90 s ago
            (0, Some(10), 100, false, None, false), // silent but holds nothing
            (0, Some(10), 100, true, Some(300), false), // long tool declared
            (0, Some(10), 400, true, Some(300), true), // past tool timeout + tolerance
            (200, Some(10), 230, true, None, false), // old beat from a predecessor
        ];
        for &(started, beat, now, claim, tool, stuck) in table {
            let v = judge(&Inputs {
                now: s(now),
                started_at: s(started),
                last_beat: beat.map(s),
                holds_claim: claim,
                tolerance: tol,
                tool_timeout: tool.map(Duration::from_secs),
            });
            assert_eq!(
                matches!(v, Liveness::Stuck { .. }),
                stuck,
                "started {started} beat {beat:?} now {now} claim {claim} tool {tool:?}"
            );
        }
    }
}
