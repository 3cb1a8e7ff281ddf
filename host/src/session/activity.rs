//! What an agent is doing in one session, in a sentence for a chat (`/status`): idle, thinking
//! (model step n), or running a tool, for how long, and how many messages wait. Read from the
//! runner's own record in `outbound.db` and its heartbeat, never from the runner itself, so it
//! answers even while the agent is busy. The sentence is a pure function of what was read.

use std::time::Duration;

use chrono::{DateTime, Utc};
use mailbox::{Activity, InboundReader, OutboundReader, RunnerState, heartbeat};

use crate::config::Config;
use crate::session::resolve::SessionInfo;

/// The sentence for `/status`.
pub fn sentence(
    agent: &str,
    state: Option<&RunnerState>,
    alive: bool,
    waiting: usize,
    now: DateTime<Utc>,
) -> String {
    let since = |t: DateTime<Utc>| {
        let s = (now - t).num_seconds().max(0);
        if s < 120 {
            format!("{s} s")
        } else {
            format!("{} min", s / 60)
        }
    };
    let doing = match state.filter(|_| alive) {
        None => format!("{agent} is idle (no runner is up; the next message starts one)."),
        Some(s) => match s.activity {
            Activity::Starting => format!("{agent} is starting up."),
            Activity::Idle => format!("{agent} is idle."),
            Activity::Model => format!(
                "{agent} is thinking (step {}, for {}).",
                s.step.max(1),
                since(s.updated_at)
            ),
            Activity::Tool => format!(
                "{agent} is running {} (step {}, for {}).",
                s.tool.as_deref().unwrap_or("a tool"),
                s.step.max(1),
                since(s.updated_at)
            ),
        },
    };
    match waiting {
        0 => doing,
        1 => format!("{doing} 1 message is waiting."),
        n => format!("{doing} {n} messages are waiting."),
    }
}

/// Reads the session's mailbox and describes it; problems reading it are said, not hidden. A
/// runner counts as up by the same heartbeat rule as `clawbox status`'s.
pub async fn describe(info: &SessionInfo, config: &Config) -> String {
    let alive_within = Duration::from_millis(crate::session::liveness::stale_after(config));
    let agent = info.agent.name.clone();
    let paths = info.paths.clone();
    let read = tokio::task::spawn_blocking(move || -> mailbox::Result<_> {
        let now = Utc::now();
        let due = match InboundReader::open(&paths.inbound_db()) {
            Ok(r) => r.due(now)?.into_iter().filter(|m| m.trigger).collect(),
            Err(_) => Vec::new(), // no message ever reached this session
        };
        let (state, acks) = match OutboundReader::open(&paths.outbound_db()) {
            Ok(r) if r.is_ready()? => {
                let seqs: Vec<i64> = due.iter().map(|m| m.seq).collect();
                (r.runner_state()?, r.latest_acks(&seqs)?)
            }
            _ => (None, Default::default()),
        };
        // Messages being worked on are not waiting.
        let waiting = due
            .iter()
            .filter(|m| mailbox::outbound::is_claimable(m, acks.get(&m.seq)))
            .count();
        let alive = heartbeat::last_beat(&paths.heartbeat())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age <= alive_within);
        Ok((state, alive, waiting, now))
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r.map_err(|e| e.to_string()));
    match read {
        Ok((state, alive, waiting, now)) => sentence(&agent, state.as_ref(), alive, waiting, now),
        Err(e) => format!("{agent}: its status cannot be read right now ({e})."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(
        activity: Activity,
        step: u32,
        tool: Option<&str>,
        age_s: i64,
        now: DateTime<Utc>,
    ) -> RunnerState {
        RunnerState {
            pid: 1,
            started_at: now,
            activity,
            step,
            tool: tool.map(str::to_owned),
            tool_timeout_ms: None,
            updated_at: now - chrono::Duration::seconds(age_s),
        }
    }

    #[test]
    fn sentences() {
        let now = Utc::now();
        let table = [
            (
                None,
                false,
                0,
                "Andy is idle (no runner is up; the next message starts one).",
            ),
            (
                Some(state(Activity::Idle, 0, None, 5, now)),
                true,
                0,
                "Andy is idle.",
            ),
            (
                Some(state(Activity::Model, 2, None, 12, now)),
                true,
                1,
                "Andy is thinking (step 2, for 12 s). 1 message is waiting.",
            ),
            (
                Some(state(Activity::Tool, 3, Some("run_bash"), 300, now)),
                true,
                2,
                "Andy is running run_bash (step 3, for 5 min). 2 messages are waiting.",
            ),
            // A record left by a runner that is gone says nothing about now.
            (
                Some(state(Activity::Tool, 3, Some("run_bash"), 300, now)),
                false,
                0,
                "Andy is idle (no runner is up; the next message starts one).",
            ),
            (
                Some(state(Activity::Starting, 0, None, 1, now)),
                true,
                0,
                "Andy is starting up.",
            ),
        ];
        for (s, alive, waiting, want) in table {
            assert_eq!(sentence("Andy", s.as_ref(), alive, waiting, now), want);
        }
    }
}
