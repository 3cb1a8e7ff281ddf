//! What the operator commands report — `clawbox status`, `sessions`, `agents`, `dropped` —
//! gathered from the central database and the session mailboxes, read-only. The same functions
//! serve a running host (which adds what only it knows: runner phases, uptime, the proxy) and
//! the commands' fallback when no host runs. Rendering the reports is `cli::render`'s business;
//! the admin socket carries them as they are (`--json` prints them).
//!
//! A session whose mailbox cannot be read does not spoil the report: its row says why in
//! `last_error`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use mailbox::{
    Activity, DeliveryStatus, InboundReader, InboundStatus, OutboundReader, SessionPaths, heartbeat,
};
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::db::{self, AgentListing, DbError, SessionView, TokenUsage};
use crate::session::liveness::stale_after;
use crate::session::retention::RetentionSummary;
use crate::session::supervisor::RunnerPhase;

#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// `clawbox logs <session>` named nothing that exists.
    #[error("no session matches {0:?} (`clawbox sessions` lists them)")]
    UnknownSession(String),
    /// `clawbox logs <session>` named several sessions.
    #[error("{arg:?} matches {} sessions: {}; give more of the id", .candidates.len(), .candidates.join(", "))]
    AmbiguousSession {
        arg: String,
        candidates: Vec<String>,
    },
}

/// What only a running host knows, for [`status`] and [`sessions`].
#[derive(Debug, Clone)]
pub struct HostFacts {
    pub install_id: String,
    pub started_at: DateTime<Utc>,
    pub runtime: String,
    pub isolated: bool,
    /// The image runners start from (docker runtime).
    pub image: Option<String>,
    /// The phase of every session with a live task.
    pub live: HashMap<String, RunnerPhase>,
    /// `MAX_CONCURRENT_CONTAINERS` (both runtimes honour it); `None` when not capped.
    pub slot_cap: Option<usize>,
    pub model_proxy: ProxySummary,
    /// What the background retention did since the host started.
    pub retention: RetentionSummary,
}

/// The model proxy of a running host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxySummary {
    /// `127.0.0.1:<port>` (process runtime runners).
    pub loopback: String,
    /// The Unix socket containers reach it through.
    pub socket: PathBuf,
    /// Runner tokens currently valid.
    pub live_tokens: usize,
    pub token_budget_per_session_day: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// clawbox status

/// `clawbox status`: the host and one row per live session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// When the snapshot was taken (ages in the table are relative to it).
    pub generated_at: DateTime<Utc>,
    /// The running host; `None`: no host runs and the rows are what the files say.
    pub host: Option<HostSummary>,
    /// The runtime: the host's, or the configured one when no host runs.
    pub runtime: String,
    pub isolated: bool,
    /// Runners alive now (with a host) and the cap on them.
    pub containers: ContainerCount,
    /// Prompt plus completion tokens of every session today (in `TIMEZONE`).
    pub tokens_today: u64,
    /// With a host: the sessions with a live task. Without: those the last host left busy.
    pub sessions: Vec<SessionStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostSummary {
    pub install_id: String,
    pub started_at: DateTime<Utc>,
    pub uptime_s: u64,
    pub data_dir: PathBuf,
    pub model_proxy: ProxySummary,
    /// What the background retention did since the host started.
    #[serde(default)]
    pub retention: RetentionSummary,
    /// The image the host starts containers from (docker runtime).
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerCount {
    pub running: usize,
    /// `MAX_CONCURRENT_CONTAINERS`; `None`: not capped.
    pub cap: Option<usize>,
}

/// One live session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionStatus {
    pub id: String,
    pub agent: String,
    pub agent_name: String,
    /// `<channel>:<platform id>`, e.g. `cli:local`, `telegram:-1001234`.
    pub chat: String,
    pub thread: Option<String>,
    pub container: ContainerState,
    /// What the runner is doing, from its `runner_state` row and heartbeat; `None` when no
    /// runner is (or, without a host, seems to be) alive.
    pub doing: Option<Doing>,
    /// Inbound messages not yet answered.
    pub pending_in: u64,
    /// Replies written but not yet delivered.
    pub undelivered_out: u64,
    /// Replies given up on.
    pub failed_deliveries: u64,
    pub tokens_today: TokenUsage,
    pub last_error: Option<LastError>,
    pub last_activity: DateTime<Utc>,
}

/// Where a session's runner is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ContainerState {
    Running {
        runner: String,
        started_at: DateTime<Utc>,
        uptime_s: u64,
    },
    WaitingForSlot,
    /// A re-queued message waits for its next attempt.
    Retrying {
        at: DateTime<Utc>,
    },
    /// Replies wait for their channel (no terminal attached).
    WaitingForChannel,
    Stopped,
    /// No host runs: what the last host recorded (`running` | `waiting` | `stopped`).
    Recorded {
        recorded: String,
    },
}

/// What a runner is doing now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Doing {
    pub activity: Activity,
    /// Model step of the current turn (0 when idle).
    pub step: u32,
    /// The tool(s) being called.
    pub tool: Option<String>,
    pub tool_timeout_ms: Option<u64>,
    /// Since when (the row's last update).
    pub since: DateTime<Utc>,
    /// Age of the heartbeat file: a runner that stops beating is stuck or gone.
    pub heartbeat_age_ms: Option<u64>,
    /// The heartbeat is older than three periods (`HEARTBEAT_MS`).
    pub heartbeat_stale: bool,
    pub pid: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastError {
    pub at: Option<DateTime<Utc>>,
    pub text: String,
}

/// The calendar day `now` falls on in `timezone`, as the proxy counts tokens.
pub fn day_of(now: DateTime<Utc>, timezone: Tz) -> String {
    now.with_timezone(&timezone).format("%Y-%m-%d").to_string()
}

/// Builds `clawbox status`. With `host`, the rows are its live sessions; without, the sessions
/// the central database records as not stopped (what a host that died left behind).
pub fn status(
    conn: &Connection,
    config: &Config,
    host: Option<&HostFacts>,
    now: DateTime<Utc>,
) -> Result<StatusReport, InspectError> {
    let sessions_dir = config.sessions_dir();
    let sessions_dir = sessions_dir.as_path();
    let views = db::session_views(conn)?;
    let tokens = db::token_usage_on(conn, &day_of(now, config.timezone))?;
    let mut sessions = Vec::new();
    for view in &views {
        let phase = match host {
            Some(h) => match h.live.get(&view.session.id) {
                Some(phase) => Some(phase),
                None => continue,
            },
            None if view.session.runner_state == "stopped" => continue,
            None => None,
        };
        let facts = MailboxFacts::read(sessions_dir, view, now, stale_after(config));
        let container = match phase {
            Some(phase) => container_state(phase, now),
            None => ContainerState::Recorded {
                recorded: view.session.runner_state.clone(),
            },
        };
        // Without a runner the row is the last runner's: not what anything does now. Without
        // a host, a runner that still beats may have outlived it.
        let alive = match &container {
            ContainerState::Running { .. } => true,
            ContainerState::Recorded { .. } => facts.beating,
            ContainerState::WaitingForSlot
            | ContainerState::Retrying { .. }
            | ContainerState::WaitingForChannel
            | ContainerState::Stopped => false,
        };
        sessions.push(SessionStatus {
            id: view.session.id.clone(),
            agent: view.session.agent_group_id.clone(),
            agent_name: view.agent_name.clone(),
            chat: format!("{}:{}", view.channel_type, view.platform_id),
            thread: view.session.thread_id.clone(),
            container,
            doing: facts.doing.filter(|_| alive),
            pending_in: facts.pending_in,
            undelivered_out: facts.undelivered_out,
            failed_deliveries: facts.failed_deliveries,
            tokens_today: tokens.get(&view.session.id).copied().unwrap_or_default(),
            last_error: facts.last_error,
            last_activity: view.session.last_activity,
        });
    }
    let (runtime, isolated, cap) = match host {
        Some(h) => (h.runtime.clone(), h.isolated, h.slot_cap),
        None => (
            config.runtime.name().to_owned(),
            config.runtime.isolated(),
            Some(config.max_concurrent_runners),
        ),
    };
    let running = match host {
        Some(h) => h
            .live
            .values()
            .filter(|p| matches!(p, RunnerPhase::Running { .. }))
            .count(),
        None => sessions.iter().filter(|s| s.doing.is_some()).count(),
    };
    Ok(StatusReport {
        generated_at: now,
        host: host.map(|h| HostSummary {
            install_id: h.install_id.clone(),
            started_at: h.started_at,
            uptime_s: seconds_between(h.started_at, now),
            data_dir: config.data_dir.clone(),
            model_proxy: h.model_proxy.clone(),
            retention: h.retention,
            image: h.image.clone(),
        }),
        runtime,
        isolated,
        containers: ContainerCount { running, cap },
        tokens_today: tokens.values().map(TokenUsage::total).sum(),
        sessions,
    })
}

fn container_state(phase: &RunnerPhase, now: DateTime<Utc>) -> ContainerState {
    match phase {
        RunnerPhase::Running { runner, since } => ContainerState::Running {
            runner: runner.clone(),
            started_at: *since,
            uptime_s: seconds_between(*since, now),
        },
        RunnerPhase::WaitingForSlot => ContainerState::WaitingForSlot,
        RunnerPhase::Backoff { until } => ContainerState::Retrying { at: *until },
        RunnerPhase::WaitingForChannel => ContainerState::WaitingForChannel,
        RunnerPhase::Stopped => ContainerState::Stopped,
    }
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_seconds()).unwrap_or(0)
}

fn millis_between(from: DateTime<Utc>, to: DateTime<Utc>) -> u64 {
    u64::try_from((to - from).num_milliseconds()).unwrap_or(0)
}

/// What one session's mailbox says.
#[derive(Debug, Default)]
struct MailboxFacts {
    messages_in: u64,
    pending_in: u64,
    failed_in: u64,
    messages_out: u64,
    undelivered_out: u64,
    failed_deliveries: u64,
    doing: Option<Doing>,
    /// The heartbeat is recent enough for the runner to be alive.
    beating: bool,
    last_error: Option<LastError>,
}

/// How far back "last error" looks in the host's event log.
const ERROR_LOOKBACK: u32 = 100;

impl MailboxFacts {
    fn read(
        sessions_dir: &Path,
        view: &SessionView,
        now: DateTime<Utc>,
        stale_after_ms: u64,
    ) -> MailboxFacts {
        match Self::try_read(sessions_dir, view, now, stale_after_ms) {
            Ok(facts) => facts,
            Err(e) => MailboxFacts {
                last_error: Some(LastError {
                    at: None,
                    text: format!("cannot read the session's mailbox: {e}"),
                }),
                ..MailboxFacts::default()
            },
        }
    }

    fn try_read(
        sessions_dir: &Path,
        view: &SessionView,
        now: DateTime<Utc>,
        stale_after_ms: u64,
    ) -> mailbox::Result<MailboxFacts> {
        let paths = SessionPaths::for_session(
            sessions_dir,
            &view.session.agent_group_id,
            &view.session.id,
        )?;
        let mut facts = MailboxFacts::default();
        if !paths.inbound_db().exists() {
            return Ok(facts);
        }
        let inbound = InboundReader::open(&paths.inbound_db())?;
        for (status, n) in inbound.status_counts()? {
            facts.messages_in += n;
            match status {
                InboundStatus::Pending => facts.pending_in = n,
                InboundStatus::Failed => facts.failed_in = n,
                InboundStatus::Completed => {}
            }
        }
        let mut open_deliveries = 0;
        for (status, n) in inbound.delivery_counts()? {
            match status {
                DeliveryStatus::Pending | DeliveryStatus::Sending => open_deliveries += n,
                DeliveryStatus::Failed => facts.failed_deliveries = n,
                DeliveryStatus::Delivered => {}
            }
        }
        let mut errors: Vec<LastError> = inbound
            .latest_host_events(ERROR_LOOKBACK)?
            .into_iter()
            .find_map(|e| {
                e.event.problem().map(|text| LastError {
                    at: Some(e.at),
                    text,
                })
            })
            .into_iter()
            .collect();
        let outbound = match paths.outbound_db().exists() {
            true => Some(OutboundReader::open(&paths.outbound_db())?).filter(|o| {
                // A file the runner has just created has no tables yet.
                o.is_ready().unwrap_or(false)
            }),
            false => None,
        };
        facts.undelivered_out = open_deliveries;
        if let Some(out) = &outbound {
            facts.messages_out = out.message_count()?;
            facts.undelivered_out += out.messages_after_count(inbound.out_cursor()?)?;
            if let Some(ack) = out.last_failed_ack()? {
                errors.push(LastError {
                    at: Some(ack.at),
                    text: format!(
                        "message {} failed: {}",
                        ack.message_seq,
                        ack.error.as_deref().unwrap_or("no reason given")
                    ),
                });
            }
            let beat = heartbeat::last_beat(&paths.heartbeat()).map(DateTime::<Utc>::from);
            let heartbeat_age_ms = beat.map(|b| millis_between(b, now));
            facts.beating = heartbeat_age_ms.is_some_and(|age| age <= stale_after_ms);
            facts.doing = out.runner_state()?.map(|state| Doing {
                activity: state.activity,
                step: state.step,
                tool: state.tool,
                tool_timeout_ms: state.tool_timeout_ms,
                since: state.updated_at,
                heartbeat_age_ms,
                heartbeat_stale: !facts.beating,
                pid: state.pid,
            });
        }
        facts.last_error = errors.into_iter().max_by_key(|e| e.at);
        Ok(facts)
    }
}

// ---------------------------------------------------------------------------------------------
// clawbox sessions

/// `clawbox sessions`: every session, live or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionList {
    pub generated_at: DateTime<Utc>,
    /// Whether a host answered (live phases are only known then).
    pub host_running: bool,
    pub sessions: Vec<SessionRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRow {
    pub id: String,
    pub agent: String,
    pub agent_name: String,
    pub chat: String,
    pub thread: Option<String>,
    /// `active` | `closed`.
    pub status: String,
    /// The host's phase of a live session; `None` for idle ones (and without a host).
    pub container: Option<ContainerState>,
    /// What the central database records (`running` | `waiting` | `stopped`).
    pub recorded: String,
    pub created_at: DateTime<Utc>,
    pub last_activity: DateTime<Utc>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub pending_in: u64,
    pub failed_in: u64,
    pub undelivered_out: u64,
    pub tokens_today: u64,
}

pub fn sessions(
    conn: &Connection,
    config: &Config,
    host: Option<&HostFacts>,
    now: DateTime<Utc>,
) -> Result<SessionList, InspectError> {
    let sessions_dir = config.sessions_dir();
    let tokens = db::token_usage_on(conn, &day_of(now, config.timezone))?;
    let rows = db::session_views(conn)?
        .iter()
        .map(|view| {
            let facts = MailboxFacts::read(&sessions_dir, view, now, stale_after(config));
            SessionRow {
                id: view.session.id.clone(),
                agent: view.session.agent_group_id.clone(),
                agent_name: view.agent_name.clone(),
                chat: format!("{}:{}", view.channel_type, view.platform_id),
                thread: view.session.thread_id.clone(),
                status: view.session.status.clone(),
                container: host
                    .and_then(|h| h.live.get(&view.session.id))
                    .map(|phase| container_state(phase, now)),
                recorded: view.session.runner_state.clone(),
                created_at: view.created_at,
                last_activity: view.session.last_activity,
                messages_in: facts.messages_in,
                messages_out: facts.messages_out,
                pending_in: facts.pending_in,
                failed_in: facts.failed_in,
                undelivered_out: facts.undelivered_out,
                tokens_today: tokens.get(&view.session.id).map_or(0, TokenUsage::total),
            }
        })
        .collect();
    Ok(SessionList {
        generated_at: now,
        host_running: host.is_some(),
        sessions: rows,
    })
}

/// Finds the session `arg` names: its id, a part of the id only one session has, or an agent
/// id (that agent's most recently active session).
pub fn resolve_session(conn: &Connection, arg: &str) -> Result<SessionView, InspectError> {
    let views = db::session_views(conn)?;
    if let Some(exact) = views.iter().find(|v| v.session.id == arg) {
        return Ok(exact.clone());
    }
    let matching: Vec<&SessionView> = views
        .iter()
        .filter(|v| !arg.is_empty() && v.session.id.contains(arg))
        .collect();
    match matching.as_slice() {
        [one] => return Ok((*one).clone()),
        [] => {}
        many => {
            return Err(InspectError::AmbiguousSession {
                arg: arg.to_owned(),
                candidates: many.iter().map(|v| v.session.id.clone()).collect(),
            });
        }
    }
    // Views are most recently active first.
    views
        .into_iter()
        .find(|v| v.session.agent_group_id == arg)
        .ok_or_else(|| InspectError::UnknownSession(arg.to_owned()))
}

// ---------------------------------------------------------------------------------------------
// clawbox agents

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentList {
    pub host_running: bool,
    /// The model of agents that name none (`DEFAULT_MODEL`).
    pub default_model: String,
    pub agents: Vec<AgentRow>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRow {
    #[serde(flatten)]
    pub agent: AgentListing,
    /// Its sessions (active ones) and those of them with a live task.
    pub sessions: u64,
    pub live_sessions: u64,
}

pub fn agents(
    conn: &Connection,
    default_model: &str,
    host: Option<&HostFacts>,
) -> Result<AgentList, InspectError> {
    let views = db::session_views(conn)?;
    let agents = db::list_agents(conn)?
        .into_iter()
        .map(|agent| {
            let mine = views
                .iter()
                .filter(|v| v.session.agent_group_id == agent.id && v.session.status == "active");
            let (sessions, live_sessions) = mine.fold((0, 0), |(all, live), v| {
                let is_live = host.is_some_and(|h| h.live.contains_key(&v.session.id));
                (all + 1, live + u64::from(is_live))
            });
            AgentRow {
                agent,
                sessions,
                live_sessions,
            }
        })
        .collect();
    Ok(AgentList {
        host_running: host.is_some(),
        default_model: default_model.to_owned(),
        agents,
    })
}

// ---------------------------------------------------------------------------------------------
// clawbox dropped

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedList {
    pub host_running: bool,
    /// All refused messages on record (the list holds the newest `limit`).
    pub total: u64,
    pub dropped: Vec<DroppedMessage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DroppedMessage {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub chat: String,
    pub sender_id: Option<String>,
    pub sender_name: Option<String>,
    pub agent: Option<String>,
    pub reason: String,
    /// The `clawbox create-agent` command that lets the next such message through, for the
    /// refusals wiring fixes (an unknown chat or sender).
    #[serde(default)]
    pub wire_command: Option<String>,
}

pub fn dropped(
    conn: &Connection,
    limit: u32,
    host_running: bool,
) -> Result<DroppedList, InspectError> {
    let (rows, total) = db::dropped(conn, limit)?;
    Ok(DroppedList {
        host_running,
        total,
        dropped: rows
            .into_iter()
            .map(|d| DroppedMessage {
                id: d.id,
                at: d.at,
                chat: format!("{}:{}", d.channel_type, d.platform_id),
                wire_command: crate::session::first_contact::wiring_command(
                    &d.channel_type,
                    &d.platform_id,
                    d.agent_group_id.as_deref(),
                    d.sender_id.as_deref(),
                    &d.reason,
                ),
                sender_id: d.sender_id,
                sender_name: d.sender_name,
                agent: d.agent_group_id,
                reason: d.reason,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn phases_become_container_states() {
        let t0 = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20000);
        let later = t0 + chrono::Duration::seconds(125);
        let table = [
            (
                RunnerPhase::Running {
                    runner: "pid 7".into(),
                    since: t0,
                },
                ContainerState::Running {
                    runner: "pid 7".into(),
                    started_at: t0,
                    uptime_s: 125,
                },
            ),
            (RunnerPhase::WaitingForSlot, ContainerState::WaitingForSlot),
            (
                RunnerPhase::Backoff { until: later },
                ContainerState::Retrying { at: later },
            ),
            (
                RunnerPhase::WaitingForChannel,
                ContainerState::WaitingForChannel,
            ),
            (RunnerPhase::Stopped, ContainerState::Stopped),
        ];
        for (phase, want) in table {
            assert_eq!(container_state(&phase, later), want, "{phase:?}");
        }
    }

    #[test]
    fn days_follow_the_time_zone() {
        let t = DateTime::parse_from_rfc3339("2026-03-01T23:30:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(day_of(t, Tz::UTC), "2026-03-01");
        assert_eq!(day_of(t, Tz::Europe__Berlin), "2026-03-02");
        assert_eq!(day_of(t, Tz::America__New_York), "2026-03-01");
    }
}
