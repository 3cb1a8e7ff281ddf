//! Questions agents ask people (`ask_user_question`). The tool's request (`ask_question`,
//! `mailbox::questions`) is taken by the session's delivery pass: the question is recorded
//! here, shown by the session's channel (Telegram buttons, numbered options in the terminal),
//! and the request marked taken. An answer — only from the person whose message started the
//! turn, or an owner/admin of the agent — or the timeout closes it: the card shows the outcome
//! and the outcome reaches the session's inbox, as the request's answer (the waiting tool
//! returns it) together with a message saying the same (the agent gets that one only if the
//! tool is gone, e.g. after a container restart: a waiting tool marks it handled).
//!
//! Everything is in the central DB before it is shown, and an outcome stays "undelivered" until
//! it is in the inbox, so a host restart loses neither a question nor an answer. One loop per
//! host sleeps until the next question expires and delivers outcomes left undelivered.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use mailbox::questions::{AskQuestion, Choice, Outcome};
use mailbox::request::Request;
use mailbox::{InboundKind, NewInbound, Route};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::HostError;
use crate::db::random_id;
use crate::db::{self, Db, DbError, DbResult, parse_ts, ts};
use crate::session::outlet::Outlet;
use crate::session::requests::Answer;
use crate::session::supervisor::Supervisor;

/// The longest the loop sleeps without a reason (a safety net against a missed signal).
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// Wakes the loop when a question was added.
#[derive(Clone, Default)]
pub struct QuestionSignal(Arc<Notify>);

impl QuestionSignal {
    pub fn notify(&self) {
        self.0.notify_one();
    }
}

/// A question as recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct Question {
    pub id: String,
    pub session_id: String,
    pub agent_group_id: String,
    pub request_seq: i64,
    /// Where it is shown: the chat (and topic) of the session.
    pub route: Route,
    /// Whose message started the turn that asked.
    pub asked_by: Option<String>,
    pub title: String,
    pub question: String,
    pub options: Vec<Choice>,
    pub timeout_s: u64,
    /// `pending` | `answered` | `expired`.
    pub status: String,
    /// Set once it was shown: the platform's id of the message showing it (empty where the
    /// channel has none, the terminal).
    pub card: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub outcome: Option<Outcome>,
    pub delivered: bool,
}

impl Question {
    /// A line saying how it ended, for cards and the terminal.
    pub fn outcome_text(&self) -> Option<String> {
        match self.outcome.as_ref()? {
            Outcome::Answered {
                label,
                answered_by,
                answered_by_name,
                ..
            } => Some(format!(
                "✅ {label} — chosen by {}",
                answered_by_name.as_deref().unwrap_or(answered_by)
            )),
            Outcome::Expired { .. } => {
                Some("⌛ No answer in time; this question has expired.".to_owned())
            }
        }
    }
}

const COLS: &str = "id, session_id, agent_group_id, request_seq, channel_type, platform_id, \
    thread_id, asked_by, title, question, options, timeout_s, status, card, created_at, \
    expires_at, outcome, delivered";

/// A row as stored: times and JSON still text.
struct Raw {
    q: Question,
    options: String,
    created_at: String,
    expires_at: String,
    outcome: Option<String>,
}

fn row(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok(Raw {
        q: Question {
            id: r.get(0)?,
            session_id: r.get(1)?,
            agent_group_id: r.get(2)?,
            request_seq: r.get(3)?,
            route: Route {
                channel_type: r.get(4)?,
                platform_id: r.get(5)?,
                thread_id: r.get(6)?,
            },
            asked_by: r.get(7)?,
            title: r.get(8)?,
            question: r.get(9)?,
            options: Vec::new(),
            timeout_s: u64::try_from(r.get::<_, i64>(11)?).unwrap_or(0),
            status: r.get(12)?,
            card: r.get(13)?,
            created_at: DateTime::<Utc>::UNIX_EPOCH,
            expires_at: DateTime::<Utc>::UNIX_EPOCH,
            outcome: None,
            delivered: r.get(17)?,
        },
        options: r.get(10)?,
        created_at: r.get(14)?,
        expires_at: r.get(15)?,
        outcome: r.get(16)?,
    })
}

fn decode(raw: Raw) -> DbResult<Question> {
    let mut q = raw.q;
    let id = q.id.clone();
    let bad =
        |what: &str, e: serde_json::Error| DbError::Malformed(format!("question {id} {what}: {e}"));
    q.options = serde_json::from_str(&raw.options).map_err(|e| bad("options", e))?;
    q.outcome = raw
        .outcome
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| bad("outcome", e))?;
    q.created_at = parse_ts(&raw.created_at)?;
    q.expires_at = parse_ts(&raw.expires_at)?;
    Ok(q)
}

fn query(conn: &Connection, filter: &str, p: impl rusqlite::Params) -> DbResult<Vec<Question>> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLS} FROM questions {filter}"))?;
    let rows = stmt.query_map(p, row)?;
    rows.map(|r| decode(r?)).collect()
}

pub fn get(conn: &Connection, id: &str) -> DbResult<Option<Question>> {
    Ok(query(conn, "WHERE id = ?1", [id])?.into_iter().next())
}

/// Open questions shown in one chat, oldest first (a terminal that attaches sees them).
pub fn open_in_chat(conn: &Connection, route: &Route) -> DbResult<Vec<Question>> {
    query(
        conn,
        "WHERE status = 'pending' AND channel_type = ?1 AND platform_id = ?2 ORDER BY created_at",
        params![route.channel_type, route.platform_id],
    )
}

/// A question as a request asks it.
struct Draft<'a> {
    session_id: &'a str,
    agent_id: &'a str,
    route: &'a Route,
    request_seq: i64,
    asked_by: Option<&'a str>,
    ask: &'a AskQuestion,
}

/// Records the question of a request (or returns the one recorded before: a request handled
/// again after a host restart).
fn record(conn: &Connection, d: &Draft<'_>, now: DateTime<Utc>) -> DbResult<Question> {
    let (ask, route) = (d.ask, d.route);
    let existing = query(
        conn,
        "WHERE session_id = ?1 AND request_seq = ?2",
        params![d.session_id, d.request_seq],
    )?;
    if let Some(q) = existing.into_iter().next() {
        return Ok(q);
    }
    let id = random_id(10);
    let options =
        serde_json::to_string(&ask.options).map_err(|e| DbError::Malformed(e.to_string()))?;
    let expires =
        now + chrono::Duration::seconds(i64::try_from(ask.timeout_s).unwrap_or(i64::MAX / 2));
    conn.execute(
        "INSERT INTO questions (id, session_id, agent_group_id, request_seq, channel_type,
             platform_id, thread_id, asked_by, title, question, options, timeout_s, created_at,
             expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)",
        params![
            id,
            d.session_id,
            d.agent_id,
            d.request_seq,
            route.channel_type,
            route.platform_id,
            route.thread_id,
            d.asked_by,
            ask.title,
            ask.question,
            options,
            i64::try_from(ask.timeout_s).unwrap_or(i64::MAX),
            ts(now),
            ts(expires)
        ],
    )?;
    get(conn, &id)?.ok_or_else(|| DbError::Malformed(format!("question {id} vanished")))
}

/// Closes a pending question with `outcome`; `None` if it was closed already.
fn close(
    conn: &Connection,
    id: &str,
    outcome: &Outcome,
    now: DateTime<Utc>,
) -> DbResult<Option<Question>> {
    let status = match outcome {
        Outcome::Answered { .. } => "answered",
        Outcome::Expired { .. } => "expired",
    };
    let json = serde_json::to_string(outcome).map_err(|e| DbError::Malformed(e.to_string()))?;
    let changed = conn.execute(
        "UPDATE questions SET status = ?1, outcome = ?2, closed_at = ?3
         WHERE id = ?4 AND status = 'pending'",
        params![status, json, ts(now), id],
    )?;
    if changed == 0 {
        return Ok(None);
    }
    get(conn, id)
}

/// What taking an `ask_question` request did.
#[derive(Debug, Clone, PartialEq)]
pub enum Asked {
    /// Recorded and shown: the answer comes later.
    Deferred,
    /// Not asked; this is the request's answer.
    Refused(Answer),
}

/// Everything a session's delivery pass needs to take a question.
pub struct Asking<'a> {
    pub db: &'a Db,
    pub outlet: &'a Arc<dyn Outlet>,
    pub signal: &'a QuestionSignal,
    pub session_id: &'a str,
    pub agent_id: &'a str,
    /// The session's chat: where the question is shown.
    pub route: &'a Route,
    /// Whose message started the turn.
    pub asked_by: Option<String>,
    /// Whether the runner that asked may still wait (see requests.rs).
    pub waiting: bool,
}

impl Asking<'_> {
    pub async fn ask(&self, request: Request) -> Asked {
        let refuse = |error: String, code: &str| Asked::Refused(Answer::refused(error, code));
        let ask: AskQuestion = match serde_json::from_value(request.args.clone()) {
            Ok(a) => a,
            Err(e) => return refuse(format!("malformed question: {e}"), "malformed"),
        };
        if let Err(e) = ask.validate() {
            return refuse(e, "invalid");
        }
        let (session, agent, route, asked_by) = (
            self.session_id.to_owned(),
            self.agent_id.to_owned(),
            self.route.clone(),
            self.asked_by.clone(),
        );
        let waiting = self.waiting;
        let request_seq = request.seq;
        let recorded = self
            .db
            .call(move |conn| {
                let draft = Draft {
                    session_id: &session,
                    agent_id: &agent,
                    route: &route,
                    request_seq,
                    asked_by: asked_by.as_deref(),
                    ask: &ask,
                };
                let q = record(conn, &draft, Utc::now())?;
                // A request left by a runner that is gone: nobody waits for the answer.
                if !waiting && q.status == "pending" && q.card.is_none() {
                    close(
                        conn,
                        &q.id,
                        &Outcome::Expired {
                            timeout_s: q.timeout_s,
                        },
                        Utc::now(),
                    )?;
                    return Ok(None);
                }
                Ok(Some(q))
            })
            .await;
        let q = match recorded {
            Ok(Some(q)) => q,
            Ok(None) => {
                return refuse(
                    "the agent runner that asked stopped before the question was shown; it was not asked".into(),
                    "asker_gone",
                );
            }
            Err(e) => {
                return refuse(
                    format!("the question could not be recorded: {e}"),
                    "internal",
                );
            }
        };
        if q.status != "pending" || q.card.is_some() {
            // Shown (and perhaps answered) before a host restart; the loop delivers outcomes.
            return Asked::Deferred;
        }
        match self.outlet.ask(&q).await {
            Ok(card) => {
                let id = q.id.clone();
                if let Err(e) = self
                    .db
                    .call(move |conn| {
                        conn.execute(
                            "UPDATE questions SET card = ?1 WHERE id = ?2",
                            params![card.unwrap_or_default(), id],
                        )?;
                        Ok(())
                    })
                    .await
                {
                    tracing::warn!(question = %q.id, "cannot record the question's card: {e}");
                }
                self.signal.notify();
                Asked::Deferred
            }
            Err(e) => {
                let id = q.id.clone();
                let _ = self
                    .db
                    .call(move |conn| {
                        close(conn, &id, &Outcome::Expired { timeout_s: 0 }, Utc::now())
                    })
                    .await;
                refuse(
                    format!("the question could not be shown: {e}"),
                    "undeliverable",
                )
            }
        }
    }
}

/// What pressing an option did.
#[derive(Debug, Clone, PartialEq)]
pub enum Pressed {
    Unknown,
    /// Answered or expired before.
    Closed(Question),
    /// Not the asker, nor an owner or admin of the agent.
    NotAllowed {
        asker: String,
    },
    /// No such option.
    NoSuchOption {
        count: usize,
    },
    Answered(Question),
}

/// Someone chose option `index` (0-based) of question `id`.
pub async fn answer(
    supervisor: &Supervisor,
    id: &str,
    index: usize,
    by: &str,
    by_name: Option<&str>,
) -> Result<Pressed, HostError> {
    let (id, by, by_name) = (id.to_owned(), by.to_owned(), by_name.map(str::to_owned));
    let pressed = supervisor
        .shared()
        .db
        .call(move |conn| {
            let Some(q) = get(conn, &id)? else {
                return Ok(Pressed::Unknown);
            };
            if q.status != "pending" {
                return Ok(Pressed::Closed(q));
            }
            let role = db::role_of(conn, &by, &q.agent_group_id)?;
            let allowed = q.asked_by.as_deref() == Some(by.as_str())
                || matches!(role.as_deref(), Some("owner" | "admin"));
            if !allowed {
                let asker = match q.asked_by.as_deref() {
                    Some(user) => display_name(conn, user)?,
                    None => "the person who asked".to_owned(),
                };
                return Ok(Pressed::NotAllowed { asker });
            }
            let Some(choice) = q.options.get(index) else {
                return Ok(Pressed::NoSuchOption {
                    count: q.options.len(),
                });
            };
            let outcome = Outcome::Answered {
                value: choice.value.clone(),
                label: choice.label.clone(),
                answered_by: by.clone(),
                answered_by_name: by_name,
                notice_seq: None,
            };
            Ok(match close(conn, &q.id, &outcome, Utc::now())? {
                Some(q) => Pressed::Answered(q),
                None => Pressed::Closed(q),
            })
        })
        .await?;
    if let Pressed::Answered(q) = &pressed {
        finish(supervisor, q.clone()).await;
    }
    Ok(pressed)
}

fn display_name(conn: &Connection, user: &str) -> DbResult<String> {
    Ok(conn
        .query_row(
            "SELECT display_name FROM users WHERE id = ?1",
            [user],
            |r| r.get::<_, Option<String>>(0),
        )
        .optional()?
        .flatten()
        .unwrap_or_else(|| user.to_owned()))
}

/// Shows how a closed question ended and puts the outcome into the session's inbox.
async fn finish(supervisor: &Supervisor, q: Question) {
    if let Err(e) = supervisor.shared().outlet.close_question(&q).await {
        tracing::warn!(question = %q.id, "cannot update the question's card: {e}");
    }
    deliver(supervisor, q).await;
}

/// The outcome into the inbox: the request's answer and, for an answer, the notice; then the
/// question is marked delivered.
async fn deliver(supervisor: &Supervisor, q: Question) {
    let Some(outcome) = q.outcome.clone() else {
        return;
    };
    let notice = match &outcome {
        Outcome::Answered {
            value,
            label,
            answered_by,
            answered_by_name,
            ..
        } => Some(NewInbound {
            id: format!("question:{}", q.id),
            kind: InboundKind::System,
            trigger: true,
            route: q.route.clone(),
            sender_id: None,
            sender_name: Some("clawbox".into()),
            content: json!({
                "text": format!(
                    "Answer to your question {:?} ({}): {value:?}{}, chosen by {}.",
                    q.title,
                    q.question,
                    if value == label { String::new() } else { format!(" (the option {label:?})") },
                    answered_by_name.as_deref().unwrap_or(answered_by)
                ),
                "question_id": q.id,
            }),
            process_after: None,
        }),
        Outcome::Expired { .. } => None,
    };
    let seq = q.request_seq;
    let body = move |notice_seq: Option<i64>| -> Value {
        let mut o = outcome;
        if let Outcome::Answered {
            notice_seq: slot, ..
        } = &mut o
        {
            *slot = notice_seq;
        }
        serde_json::to_value(&o).unwrap_or(Value::Null)
    };
    let written = supervisor
        .update_inbox(&q.session_id, move |inbound| {
            inbound.answer_later(seq, body, notice.as_ref(), Utc::now())
        })
        .await;
    match written {
        Ok(_) => {
            let id = q.id.clone();
            if let Err(e) = supervisor
                .shared()
                .db
                .call(move |conn| {
                    conn.execute("UPDATE questions SET delivered = 1 WHERE id = ?1", [id])?;
                    Ok(())
                })
                .await
            {
                tracing::warn!(question = %q.id, "cannot mark the question delivered: {e}");
            }
        }
        // Left undelivered: the loop tries again.
        Err(e) => tracing::warn!(question = %q.id, "cannot deliver the question's outcome: {e}"),
    }
}

/// The host's loop: expires questions on time and delivers outcomes a crash left undelivered.
pub async fn run(supervisor: Supervisor, signal: QuestionSignal, cancel: CancellationToken) {
    loop {
        let now = Utc::now();
        let step = supervisor
            .shared()
            .db
            .call(move |conn| {
                let mut expired = Vec::new();
                for q in query(
                    conn,
                    "WHERE status = 'pending' AND expires_at <= ?1",
                    [ts(now)],
                )? {
                    if let Some(q) = close(
                        conn,
                        &q.id,
                        &Outcome::Expired {
                            timeout_s: q.timeout_s,
                        },
                        now,
                    )? {
                        expired.push(q);
                    }
                }
                // Recent ones are being delivered by whoever closed them.
                let undelivered = query(
                    conn,
                    "WHERE status != 'pending' AND delivered = 0 AND closed_at <= ?1",
                    [ts(now - chrono::Duration::seconds(5))],
                )?;
                let next: Option<String> = conn.query_row(
                    "SELECT MIN(expires_at) FROM questions WHERE status = 'pending'",
                    [],
                    |r| r.get(0),
                )?;
                Ok((
                    expired,
                    undelivered,
                    next.map(|n| parse_ts(&n)).transpose()?,
                ))
            })
            .await;
        let sleep = match step {
            Ok((expired, undelivered, next)) => {
                for q in expired {
                    tracing::info!(question = %q.id, "question expired");
                    finish(&supervisor, q).await;
                }
                for q in undelivered.into_iter().filter(|q| q.outcome.is_some()) {
                    deliver(&supervisor, q).await;
                }
                next.and_then(|t| (t - Utc::now()).to_std().ok())
                    .unwrap_or(MAX_SLEEP)
                    .min(MAX_SLEEP)
            }
            Err(e) => {
                tracing::error!("questions: cannot read the central database: {e}");
                Duration::from_secs(5)
            }
        };
        tokio::select! {
            () = cancel.cancelled() => return,
            () = signal.0.notified() => {}
            () = tokio::time::sleep(sleep) => {}
        }
    }
}
