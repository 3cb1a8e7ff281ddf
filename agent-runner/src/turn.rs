//! The ReAct loop for one claimed batch: a **turn** is one batch, a **step** one model request,
//! a **call** one tool call. Owns the conversation as sent to the model, the persistence of each
//! step, and the turn's verdict (reply + history + acks in one transaction). What to claim is
//! `claim.rs`'s business; talking HTTP and MCP is `model.rs`'s and `mcp.rs`'s.
//!
//! Invariants:
//! - Every tool call gets exactly one tool result, in call order: also an unknown tool,
//!   malformed arguments (`invalid arguments: …`), a timeout, a server error, cancellation.
//!   Each result passes through `hygiene::clean_tool_output` before the model or the history
//!   sees it.
//! - After every step with tool calls, the turn's user message (first step only), the assistant
//!   message and all its results are appended to history in one transaction, so a
//!   tool-call/result pair is never split and a crashed attempt can resume from there.
//! - The end of a turn is one transaction: the reply row (if the final text is not empty), the
//!   final assistant message, `completed` acks and the deletion of the kv `turn` record and of
//!   the turn's draft (while a streamed step runs, `draft.rs` publishes its growing text). A model
//!   failure is one transaction too: the user message (kept so nothing the user said is lost),
//!   `failed` acks with the readable reason, the record deleted.
//! - Reaching `CLAWBOX_MAX_STEPS` is not a failure: the work so far is kept and the turn
//!   completes with a reply saying that the agent stopped and how to let it continue.
//! - A scheduled task with a script (alone in its batch, see `claim.rs`) runs the script
//!   before the first model request (`script.rs`). `wakeAgent: false` or a failing script ends
//!   the turn at once, with no model request, no reply and no history: one transaction with the
//!   `completed` ack, whose detail tells the host what the script decided. `true` puts the
//!   script's data in the user message and the turn goes on; its verdict carries the detail
//!   too. A resumed turn continues from its persisted steps without running the script again.
//! - The activity row rides along with these transactions (see `activity.rs`): the claim
//!   recorded Model(first step), a step's transaction records Model(step + 1) when another
//!   request follows, the verdict and `/clear` record Idle. A plain turn commits twice: the claim
//!   and the verdict.
//! - So do the runner's events (`clawbox logs`): a step's `model_step` event and its calls'
//!   `tool_call` events commit with the step's history, the last step's with the verdict, a
//!   model failure's `model_failed` with the failure.

pub mod compact;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::future::join_all;
use mailbox::tasks::ScriptReport;
use mailbox::{
    AckStatus, Destination, Draft, DraftCall, InboundMessage, NewOutbound, OutboundKind,
    RunnerEvent,
};
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::activity::{ActivityLog, ActivityRows};
use crate::budget::{Budget, RATIO_KEY, Sizer, cut_message, fit_request, raw_request};
use crate::claim::{self, Batch, TURN_KEY};
use crate::config::Config;
use crate::draft::{DraftKey, with_draft};
use crate::hygiene::clean_tool_output;
use crate::mcp::{McpManager, ToolOutput};
use crate::model::{ModelCall, ModelClient, ModelError};
use crate::overflow::{is_context_overflow, stated_context};
use crate::prompt::{
    PromptContext, PromptFiles, format_batch, format_batch_with, read_prompt_files, system_prompt,
    with_now,
};
use crate::resume::resume_point;
use crate::script::{self, Gate, task_script};
use crate::store::{Store, StoreError};
use compact::{CompactError, CompactRequest, compact};

/// The kv key of the context a model's refusal stated, when smaller than the budget.
pub const STATED_CONTEXT_KEY: &str = "context_stated";

/// The reply to `/clear`.
pub const CLEARED: &str = "Conversation cleared.";

/// What a turn needs from the runner.
pub struct TurnEnv<'a> {
    pub config: &'a Config,
    pub store: &'a Store,
    pub model: &'a ModelClient,
    pub mcp: &'a McpManager,
    pub activity: &'a ActivityLog,
    /// What failed to load at startup (`container.json`, user MCP servers), one line each; shown
    /// to the agent in every turn's context.
    pub setup_problems: &'a [String],
    /// The context budget of every request (`CLAWBOX_CONTEXT_TOKENS`, or the agent's
    /// `context_tokens`).
    pub budget: Budget,
    /// Token counting for the model, uncalibrated; each turn applies the session's ratio.
    pub sizer: &'a Sizer,
}

/// How a turn ended (both are verdicts already written to the mailbox).
#[derive(Debug, Clone, PartialEq)]
pub enum TurnEnd {
    /// Answered; `reply_seq` is the reply row, `None` when the final text was empty.
    Completed { reply_seq: Option<i64>, steps: u32 },
    /// The model failed for good; the batch was acked `failed` with this reason.
    Failed { reason: String },
    /// A task's script ended the run without the model (`wakeAgent: false`, or it failed).
    Gated { report: ScriptReport },
}

/// A turn stopped without a verdict.
#[derive(Debug, thiserror::Error)]
pub enum TurnError {
    /// The mailbox could not be read or written. The runner exits; the host re-queues the
    /// claim and a new runner resumes from the last persisted step.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runner is shutting down. Finished steps are persisted (a step interrupted during its
    /// tool calls is persisted with "cancelled" results); the kv record stays, so the host
    /// re-queues the claim and the next runner resumes.
    #[error("the turn was cancelled")]
    Cancelled,
}

/// Runs one turn to its verdict. The claim already recorded the activity of its first step.
pub async fn run_turn(
    env: &TurnEnv<'_>,
    batch: &Batch,
    cancel: &CancellationToken,
) -> Result<TurnEnd, TurnError> {
    // Grows when messages join the running turn (steering).
    let mut batch = batch.clone();
    let batch = &mut batch;
    let turn = batch.turn;
    let Some(origin) = batch.origin().cloned() else {
        // `claim` never builds an empty batch; nothing to answer if it did.
        env.activity.idle().await?;
        return Ok(TurnEnd::Completed {
            reply_seq: None,
            steps: 0,
        });
    };
    let Start {
        mut conversation,
        mut pending_user,
        steps_done,
        destinations,
        first_message_in_session,
        mut sizer,
        mut budget,
    } = start(env, batch).await?;

    // The script gate: only for a fresh start (a resumed turn already has its user message).
    let mut detail = None;
    if pending_user.is_some()
        && let [task] = batch.messages.as_slice()
        && let Some(code) = task_script(task)
    {
        let timeout = env.config.task_script_timeout;
        env.activity
            .tools(
                /*step*/ 1,
                "task script".to_owned(),
                timeout,
                /*draft*/ None,
            )
            .await?;
        let mut script_env = env.config.inherited_env.clone();
        // The task's own zone: the one its schedule (and so its script's idea of "now") is in.
        let zone = task
            .content
            .get("timezone")
            .and_then(Value::as_str)
            .and_then(|name| name.parse::<chrono_tz::Tz>().ok())
            .unwrap_or(env.config.timezone);
        script_env.push(("TZ".to_owned(), zone.name().to_owned()));
        let gate = script::run(code, &env.config.workspace, &script_env, timeout).await;
        let report = match gate {
            Gate::Wake { data } => {
                pending_user = Some(user_message(
                    &format_batch_with(
                        &batch.messages,
                        env.config.timezone,
                        Some((task.seq, &data)),
                    ),
                    env.config.timezone,
                    Utc::now(),
                ));
                ScriptReport::Wake
            }
            Gate::Skip => ScriptReport::Skip,
            Gate::Error { reason } => ScriptReport::Error { reason },
        };
        tracing::info!(turn, report = ?report, "task script ran");
        if report != ScriptReport::Wake {
            return end_gated(env, batch, report).await;
        }
        detail = Some(report.detail());
        // The claim recorded the first model step; the script's activity replaced it.
        env.activity.model(1).await?;
    }

    let system = system_message(
        env,
        &origin.route.channel_type,
        &destinations,
        first_message_in_session,
    )
    .await;

    // A message too large for any request is cut for good (the history keeps the cut one, so
    // that no later request carries it whole).
    if let Some(user) = &pending_user
        && let Some(cut) = cut_message(&sizer, user, budget.message_cap())
    {
        tracing::warn!(
            turn,
            "the turn's messages are too long for the budget; cutting them"
        );
        pending_user = Some(cut);
    }

    let max_steps = env.config.max_steps;
    let mut step = steps_done;
    let mut overflowed = false;
    while step < max_steps {
        step += 1;
        if cancel.is_cancelled() {
            return Err(TurnError::Cancelled);
        }
        let span = tracing::info_span!("step", step);
        let build = |conversation: &[Value], pending_user: &Option<Value>| {
            let mut request = Vec::with_capacity(conversation.len() + 2);
            request.push(system.clone());
            request.extend(conversation.iter().cloned());
            request.extend(pending_user.iter().cloned());
            request
        };
        let mut request = build(&conversation, &pending_user);
        let size = sizer.scale(raw_request(&sizer, &request, env.mcp.tools()));
        if size > budget.threshold() {
            tracing::info!(parent: &span, size, threshold = budget.threshold(), "over the compaction threshold");
            let compacted = compact(
                env,
                &sizer,
                budget,
                CompactRequest {
                    system: &system,
                    turn: Some(turn),
                    keep: budget.keep(false),
                },
                cancel,
            )
            .instrument(span.clone())
            .await;
            if let Some(new) = compacted_conversation(compacted)? {
                conversation = new;
                request = build(&conversation, &pending_user);
            }
        }
        let size = fit_request(&sizer, budget.limit(), &mut request, env.mcp.tools());
        let raw = raw_request(&sizer, &request, env.mcp.tools());
        tracing::debug!(parent: &span, size, limit = budget.limit(), "request sized");
        let asked = Instant::now();
        let answer = if env.model.streams() {
            let key = DraftKey {
                turn,
                reply_to: origin.seq,
                step,
            };
            let request = &request;
            with_draft(env.store, key, |sink| async move {
                env.model
                    .complete_streaming(request, env.mcp.tools(), cancel, Some(&sink))
                    .await
            })
            .instrument(span.clone())
            .await
        } else {
            env.model
                .complete(&request, env.mcp.tools(), cancel)
                .instrument(span.clone())
                .await
        };
        let reply = match answer {
            Ok(reply) => reply,
            Err(ModelError::Cancelled) => return Err(TurnError::Cancelled),
            // Runners reach the model only through the host's proxy, which lives in the host:
            // no connection to it means the host is gone. Failing the message would tell the
            // user the model is down; leaving the claim lets the next host re-queue it.
            Err(err @ ModelError::Unreachable { .. }) => {
                tracing::warn!(parent: &span, error = %err,
                    "the host's model proxy is gone; leaving the turn to the next host");
                return Err(TurnError::Cancelled);
            }
            Err(err) if is_context_overflow(&err) && !overflowed => {
                // The model counts more than we do: trust it, compact harder, try once more.
                overflowed = true;
                sizer.distrust();
                if let ModelError::Status { detail, .. } | ModelError::ContextLength { detail, .. } =
                    &err
                    && let Some(stated) = stated_context(detail)
                    && stated < budget.context
                {
                    tracing::warn!(
                        stated,
                        budget = budget.context,
                        "the model's context is smaller than the budget"
                    );
                    budget = Budget::new(stated);
                    // Kept for later turns and runners, so they do not hit the wall again.
                    env.store
                        .run(move |dbs| {
                            let mut tx = dbs.outbound.transaction()?;
                            tx.set_kv(STATED_CONTEXT_KEY, &stated.to_string())?;
                            tx.commit()
                        })
                        .await?;
                }
                tracing::warn!(parent: &span, error = %err, size, "the model refused the request as too long; compacting harder");
                let compacted = compact(
                    env,
                    &sizer,
                    budget,
                    CompactRequest {
                        system: &system,
                        turn: Some(turn),
                        keep: budget.keep(true),
                    },
                    cancel,
                )
                .instrument(span.clone())
                .await;
                if let Some(new) = compacted_conversation(compacted)? {
                    conversation = new;
                }
                if let Some(user) = &pending_user
                    && let Some(cut) = cut_message(&sizer, user, budget.keep(true))
                {
                    pending_user = Some(cut);
                }
                step -= 1;
                continue;
            }
            Err(err) => {
                tracing::warn!(parent: &span, error = %err, "model failed; failing the turn");
                let event = RunnerEvent::ModelFailed {
                    turn,
                    step,
                    latency_ms: millis(asked.elapsed()),
                    error: err.to_string(),
                };
                let reason = if is_context_overflow(&err) {
                    // Kept small, so that the next message is not refused for this one.
                    if let Some(user) = &pending_user
                        && let Some(cut) = cut_message(&sizer, user, budget.keep(true) / 2)
                    {
                        pending_user = Some(cut);
                    }
                    let prefix = sizer.scale(raw_request(
                        &sizer,
                        std::slice::from_ref(&system),
                        env.mcp.tools(),
                    ));
                    context_failure(&err, prefix, budget)
                } else {
                    err.user_message()
                };
                return fail(env, batch, pending_user, reason, event, detail).await;
            }
        };
        let step_event = (
            Utc::now(),
            RunnerEvent::ModelStep {
                turn,
                step,
                latency_ms: millis(asked.elapsed()),
                attempts: reply.attempts,
                prompt_tokens: reply.usage.prompt_tokens,
                completion_tokens: reply.usage.completion_tokens,
                tool_calls: u32::try_from(reply.tool_calls.len()).unwrap_or(u32::MAX),
                finish_reason: reply.finish_reason.clone(),
            },
        );
        tracing::info!(
            parent: &span,
            finish_reason = reply.finish_reason.as_deref().unwrap_or(""),
            tool_calls = reply.tool_calls.len(),
            prompt_tokens = reply.usage.prompt_tokens,
            completion_tokens = reply.usage.completion_tokens,
            "model replied"
        );
        sizer.calibrate(raw, reply.usage.prompt_tokens);
        let ratio = sizer.ratio();
        let mut reply = reply;
        if reply.tool_calls.is_empty() {
            let final_message = reply.to_message();
            let text = reply.content.take().filter(|t| !t.trim().is_empty());
            let ending = Ending {
                text,
                final_message,
                steps: step,
                events: vec![step_event],
                detail,
                ratio,
            };
            return finish(env, batch, &origin, pending_user, ending).await;
        }
        unique_call_ids(&mut reply.tool_calls);
        let assistant = reply.to_message();
        // The chat shows what the calls do under the step's text (or alone: a model that
        // does not stream, or wrote nothing before calling).
        let shown = Shown {
            key: DraftKey {
                turn,
                reply_to: origin.seq,
                step,
            },
            text: if env.model.streams() {
                reply.content.clone().unwrap_or_default()
            } else {
                String::new()
            },
        };
        let (results, call_events) =
            run_calls(env, &reply.tool_calls, turn, step, Some(shown), cancel)
                .instrument(span)
                .await?;
        let mut events = Vec::with_capacity(call_events.len() + 1);
        events.push(step_event);
        events.extend(call_events);

        let mut step_messages = Vec::with_capacity(results.len() + 2);
        step_messages.extend(pending_user.take());
        step_messages.push(assistant);
        step_messages.extend(results);
        // Another model request follows unless this was the last step (then `finish` follows
        // at once and records Idle).
        let next_step = (step < max_steps).then_some(step + 1);
        // Messages that arrived while the step ran join the turn before its next request.
        let joining = match next_step {
            Some(_) => {
                let record = batch.record();
                env.store
                    .run(move |dbs| claim::joining(dbs, &record, Utc::now()))
                    .await?
            }
            None => Vec::new(),
        };
        let joined_note = (!joining.is_empty()).then(|| {
            let note = joined_message(&joining, env.config.timezone, Utc::now());
            cut_message(&sizer, &note, budget.message_cap()).unwrap_or(note)
        });
        if let Some(note) = &joined_note {
            step_messages.push(note.clone());
        }
        let persisted = step_messages.clone();
        let mut record = batch.record();
        let claimed = joining.clone();
        let rows = env.activity.rows();
        env.store
            .run(move |dbs| {
                let mut tx = dbs.outbound.transaction()?;
                tx.append_history(turn, &persisted)?;
                if !claimed.is_empty() {
                    claim::claim_joined(&mut tx, &mut record, &claimed, Utc::now())?;
                }
                tx.record_events(&events)?;
                tx.set_kv(RATIO_KEY, &ratio.to_string())?;
                if let Some(next_step) = next_step {
                    tx.set_runner_state(&rows.model(next_step))?;
                }
                tx.commit()
            })
            .await?;
        conversation.extend(step_messages);
        if !joining.is_empty() {
            tracing::info!(
                turn,
                step,
                seqs = ?joining.iter().map(|m| m.seq).collect::<Vec<_>>(),
                "new messages joined the turn"
            );
            // The reply still answers the message the turn started for: it takes over the
            // draft shown for that message, and the joined ones are answered with it.
            batch.messages.extend(joining);
        }
        if cancel.is_cancelled() {
            return Err(TurnError::Cancelled);
        }
    }

    tracing::warn!(turn, max_steps, "step limit reached; ending the turn");
    let text = format!(
        "I stopped after {max_steps} steps without finishing. Send me a message if you want me \
         to continue."
    );
    let final_message = json!({ "role": "assistant", "content": text });
    let ending = Ending {
        text: Some(text),
        final_message,
        steps: step,
        // The last step's events were committed with its history.
        events: Vec::new(),
        detail,
        ratio: sizer.ratio(),
    };
    finish(env, batch, &origin, pending_user, ending).await
}

/// The conversation after a compaction, `None` when nothing was compacted (nothing to compact,
/// or the summary failed: the turn goes on with the history as it is, and the request is fitted
/// by cutting).
fn compacted_conversation(
    result: Result<Option<compact::Compacted>, CompactError>,
) -> Result<Option<Vec<Value>>, TurnError> {
    match result {
        Ok(compacted) => Ok(compacted.map(|c| c.conversation)),
        Err(CompactError::Store(err)) => Err(TurnError::Store(err)),
        Err(CompactError::Model(ModelError::Cancelled)) => Err(TurnError::Cancelled),
        Err(err @ (CompactError::Model(_) | CompactError::Archive { .. })) => {
            tracing::warn!(error = %err, "compaction failed; going on without it");
            Ok(None)
        }
    }
}

/// The reason shown when the model refused a request as too long even after compacting;
/// `prefix` is the size of what every request carries (system prompt and tool schemas).
pub fn context_failure(err: &ModelError, prefix: u64, budget: Budget) -> String {
    let detail = match err {
        ModelError::Status { status, detail, .. }
        | ModelError::ContextLength { status, detail } => format!("HTTP {status} {detail}"),
        other => other.to_string(),
    };
    if prefix > budget.limit() {
        return format!(
            "The model refused the request as too long for its context ({detail}). The agent's \
             instructions, memory and tool descriptions alone take about {prefix} tokens, more \
             than the budget of {} leaves for a request: raise CONTEXT_TOKENS (or \
             context_tokens in the agent's container.json) if the model's context allows, or \
             shorten CLAUDE.md and CLAUDE.local.md.",
            budget.context
        );
    }
    format!(
        "The model refused the conversation as too long for its context, even after it was \
         compacted ({detail}). The model's context is probably smaller than the budget clawbox \
         was given: lower CONTEXT_TOKENS (or context_tokens in the agent's container.json). \
         Your message was kept, shortened; send /compact to compact the conversation now, or \
         /clear to start a new one."
    )
}

/// The turn's system message.
pub async fn system_message(
    env: &TurnEnv<'_>,
    channel: &str,
    destinations: &[Destination],
    first_message_in_session: bool,
) -> Value {
    let files = prompt_files(env.config).await;
    let system = system_prompt(
        &files,
        &PromptContext {
            timezone: env.config.timezone,
            assistant_name: &env.config.assistant_name,
            channel: Some(channel),
            destinations,
            first_message_in_session,
            setup_problems: env.setup_problems,
            task_tools: env.mcp.has_tool("schedule_task"),
        },
    );
    json!({ "role": "system", "content": system })
}

/// Milliseconds, saturating (for event fields).
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The longest text a `tool_call` event keeps of an error, the arguments or the result (the
/// model sees the whole result; the history keeps it).
const EVENT_TEXT_CHARS: usize = 300;

/// The first line of a failed call's result, shortened, for its `tool_call` event.
pub fn event_error(text: &str) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    shortened(line.trim(), EVENT_TEXT_CHARS)
}

/// `text` cut to at most `max` characters, with `…` where it was cut.
fn shortened(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut short: String = text.chars().take(max - 1).collect();
    short.push('…');
    short
}

/// Where a turn starts: the conversation so far, the user message still to persist (`None` when
/// a resumed turn already has it), and the steps a crashed attempt completed.
struct Start {
    conversation: Vec<Value>,
    pending_user: Option<Value>,
    steps_done: u32,
    destinations: Vec<Destination>,
    /// No assistant message in the conversation before this turn (a resumed turn's own steps
    /// do not count, so its prompt is the one its first attempt had).
    first_message_in_session: bool,
    /// The counter with the session's calibration.
    sizer: Sizer,
    /// The budget: the configured one, or the smaller context a model's refusal stated.
    budget: Budget,
}

/// Loads the conversation. A resumed turn continues from its persisted steps if they are whole;
/// anything else this turn wrote before is discarded and the turn starts over.
async fn start(env: &TurnEnv<'_>, batch: &Batch) -> Result<Start, TurnError> {
    let turn = batch.turn;
    let (history, destinations, ratio, stated) = env
        .store
        .run(|dbs| {
            Ok((
                dbs.outbound.history()?,
                dbs.inbound.destinations()?,
                dbs.outbound.kv(RATIO_KEY)?,
                dbs.outbound.kv(STATED_CONTEXT_KEY)?,
            ))
        })
        .await?;
    let budget = match stated.and_then(|s| s.parse::<u64>().ok()) {
        Some(stated) if stated < env.budget.context => Budget::new(stated),
        _ => env.budget,
    };
    let mut sizer = env.sizer.clone();
    if let Some(ratio) = ratio.and_then(|r| r.parse::<f64>().ok()) {
        sizer.set_ratio(ratio);
    }
    let resumed = resume_point(&history, turn, batch.resume);
    let continue_own = resumed.is_some();
    let steps_done = resumed.unwrap_or(0);
    let first_message_in_session = !history.iter().any(|e| {
        e.turn == mailbox::outbound::SUMMARY_TURN
            || (e.turn != turn && e.message["role"] == "assistant")
    });
    let own = history.iter().filter(|e| e.turn == turn).count();
    if continue_own {
        tracing::info!(
            turn,
            steps_done,
            "resuming the turn from its persisted steps"
        );
    } else if own > 0 {
        tracing::warn!(
            turn,
            entries = own,
            "discarding incomplete steps of this turn"
        );
        env.store
            .run(move |dbs| {
                let mut tx = dbs.outbound.transaction()?;
                tx.discard_turn(turn)?;
                tx.commit()
            })
            .await?;
    }
    let conversation = history
        .into_iter()
        .filter(|e| continue_own || e.turn != turn)
        .map(|e| e.message)
        .collect();
    let pending_user = (!continue_own).then(|| {
        user_message(
            &format_batch(&batch.messages, env.config.timezone),
            env.config.timezone,
            Utc::now(),
        )
    });
    Ok(Start {
        conversation,
        pending_user,
        steps_done,
        destinations,
        first_message_in_session,
        sizer,
        budget,
    })
}

/// A turn's user message: the batch, opened by the time `now` (see `prompt::with_now`).
pub fn user_message(batch: &str, tz: chrono_tz::Tz, now: DateTime<Utc>) -> Value {
    json!({ "role": "user", "content": with_now(now, tz, batch) })
}

/// The messages that joined a running turn, shown to the model after the step's tool results
/// (see `claim::steerable`), opened by the time like every user message.
pub fn joined_message(messages: &[InboundMessage], tz: chrono_tz::Tz, now: DateTime<Utc>) -> Value {
    let text = format!(
        "New messages arrived while you were working. Take them into account before you go \
         on:\n{}",
        format_batch(messages, tz)
    );
    json!({ "role": "user", "content": with_now(now, tz, &text) })
}

/// Some servers repeat an id across the calls of one message; results must be told apart.
fn unique_call_ids(calls: &mut [ModelCall]) {
    let mut seen = HashSet::new();
    for (i, call) in calls.iter_mut().enumerate() {
        if !seen.insert(call.id.clone()) {
            call.id = format!("{}_{i}", call.id);
            seen.insert(call.id.clone());
        }
    }
}

async fn prompt_files(config: &Config) -> PromptFiles {
    let agent_dir = config.agent_dir.clone();
    let global_dir = config.global_dir.clone();
    let skills_dir = config.skills_dir.clone();
    match tokio::task::spawn_blocking(move || {
        read_prompt_files(&agent_dir, global_dir.as_deref(), skills_dir.as_deref())
    })
    .await
    {
        Ok(files) => files,
        Err(err) => {
            // Only a panic in the reader gets here; answer without the files rather than not.
            tracing::error!(error = %err, "reading the prompt files failed");
            PromptFiles::default()
        }
    }
}

/// How one call will run, decided before any runs.
enum Prepared {
    Run {
        arguments: Map<String, Value>,
        timeout: Duration,
    },
    Answered(ToolOutput),
}

/// Parses a call's arguments: a JSON object; empty text or `null` mean no arguments; a JSON
/// string holding an object (double-encoded by some models) is unwrapped.
pub fn parse_arguments(text: &str) -> Result<Map<String, Value>, String> {
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match value {
        Value::Object(map) => Ok(map),
        Value::Null => Ok(Map::new()),
        Value::String(inner) => match serde_json::from_str::<Value>(&inner) {
            Ok(Value::Object(map)) => Ok(map),
            _ => Err("expected a JSON object, got a string".to_owned()),
        },
        Value::Array(_) => Err("expected a JSON object, got an array".to_owned()),
        Value::Bool(_) | Value::Number(_) => Err(format!("expected a JSON object, got {value}")),
    }
}

/// The draft a step's calls are shown under while they run.
pub(crate) struct Shown {
    pub key: DraftKey,
    /// The step's text (what the model wrote before calling).
    pub text: String,
}

/// Runs a step's calls concurrently; returns one `tool` message per call, in call order, and
/// one `tool_call` event per call. With `shown`, the calls that run are named in the turn's
/// draft (in the commit that records the Tool activity) for the chat's progress line.
pub(crate) async fn run_calls(
    env: &TurnEnv<'_>,
    calls: &[ModelCall],
    turn: i64,
    step: u32,
    shown: Option<Shown>,
    cancel: &CancellationToken,
) -> Result<(Vec<Value>, Vec<(DateTime<Utc>, RunnerEvent)>), TurnError> {
    let prepared: Vec<Prepared> = calls
        .iter()
        .map(|call| {
            if !env.mcp.has_tool(&call.name) {
                return Prepared::Answered(env.mcp.unknown_tool(&call.name));
            }
            match parse_arguments(&call.arguments) {
                Ok(arguments) => Prepared::Run {
                    timeout: env.mcp.call_timeout(&call.name, &arguments),
                    arguments,
                },
                Err(reason) => {
                    Prepared::Answered(ToolOutput::error(format!("invalid arguments: {reason}")))
                }
            }
        })
        .collect();
    let longest = prepared
        .iter()
        .filter_map(|p| match p {
            Prepared::Run { timeout, .. } => Some(*timeout),
            Prepared::Answered(_) => None,
        })
        .max();
    // When every call is answered without running (unknown tool, bad arguments) there is
    // nothing for the host to wait for, and no reason to pay a commit.
    if let Some(longest) = longest {
        let names = calls
            .iter()
            .map(|c| c.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let draft = shown.map(|shown| Draft {
            turn: shown.key.turn,
            reply_to: shown.key.reply_to,
            step: shown.key.step,
            text: shown.text,
            calls: calls
                .iter()
                .zip(&prepared)
                .filter_map(|(call, p)| match p {
                    Prepared::Run { arguments, .. } => Some(DraftCall::new(
                        &call.name,
                        &Value::Object(arguments.clone()),
                    )),
                    Prepared::Answered(_) => None,
                })
                .collect(),
            updated_at: Utc::now(),
        });
        env.activity.tools(step, names, longest, draft).await?;
    }

    let runs = calls.iter().zip(prepared).map(|(call, prepared)| {
        let span = tracing::info_span!("call", call_id = %call.id, tool = %call.name);
        async move {
            let began = Instant::now();
            let output = match prepared {
                Prepared::Answered(output) => output,
                Prepared::Run { arguments, timeout } => {
                    env.mcp.call(&call.name, arguments, timeout, cancel).await
                }
            };
            let duration_ms = millis(began.elapsed());
            let text = clean_tool_output(&output.text);
            if output.is_error {
                tracing::info!(result = %text, "tool call failed");
            } else {
                tracing::debug!(chars = text.len(), "tool call done");
            }
            let event = RunnerEvent::ToolCall {
                turn,
                step,
                call_id: call.id.clone(),
                tool: call.name.clone(),
                duration_ms,
                ok: !output.is_error,
                error: output.is_error.then(|| event_error(&text)),
                arguments: Some(shortened(&call.arguments, EVENT_TEXT_CHARS)),
                result: Some(shortened(&text, EVENT_TEXT_CHARS)),
            };
            let message = json!({ "role": "tool", "tool_call_id": call.id, "content": text });
            (message, (Utc::now(), event))
        }
        .instrument(span)
    });
    Ok(join_all(runs).await.into_iter().unzip())
}

/// How a turn ends with an answer.
struct Ending {
    /// The reply's text; `None` when the final answer was empty (no reply row).
    text: Option<String>,
    final_message: Value,
    steps: u32,
    /// Events not yet committed (the last step's), recorded with the verdict.
    events: Vec<(DateTime<Utc>, RunnerEvent)>,
    /// The verdict's detail for the host (what a task's script decided).
    detail: Option<Value>,
    /// The calibration ratio to keep (`budget.rs`).
    ratio: f64,
}

/// Ends the turn with its answer: one transaction for reply, history, acks, events and the
/// record.
async fn finish(
    env: &TurnEnv<'_>,
    batch: &Batch,
    origin: &InboundMessage,
    pending_user: Option<Value>,
    ending: Ending,
) -> Result<TurnEnd, TurnError> {
    let Ending {
        text,
        final_message,
        steps,
        events,
        detail,
        ratio,
    } = ending;
    let turn = batch.turn;
    let acks = batch.claims();
    let mut messages: Vec<Value> = pending_user.into_iter().collect();
    // An empty final answer is not stored: several OpenAI-compatible servers reject an assistant
    // message with neither text nor tool calls. (The model often ends empty after replying
    // with send_message.)
    let reply = text.map(|text| {
        messages.push(final_message);
        NewOutbound {
            id: format!("reply-{turn}-{:016x}", rand::random::<u64>()),
            kind: OutboundKind::Chat,
            in_reply_to: Some(origin.seq),
            route: origin.route.clone(),
            content: json!({ "text": text }),
        }
    });
    let rows = env.activity.rows();
    let reply_seq = env
        .store
        .run(move |dbs| {
            let now = Utc::now();
            let mut tx = dbs.outbound.transaction()?;
            tx.append_history(turn, &messages)?;
            tx.record_events(&events)?;
            tx.set_kv(RATIO_KEY, &ratio.to_string())?;
            let reply_seq = match &reply {
                Some(reply) => Some(tx.insert_message(reply, now)?),
                None => None,
            };
            for (seq, attempt) in acks {
                tx.ack_with_detail(
                    seq,
                    attempt,
                    AckStatus::Completed,
                    None,
                    detail.as_ref(),
                    now,
                )?;
            }
            tx.delete_kv(TURN_KEY)?;
            tx.delete_draft(turn)?;
            tx.set_runner_state(&rows.idle())?;
            tx.commit()?;
            Ok(reply_seq)
        })
        .await?;
    tracing::info!(turn, steps, reply_seq, "turn completed");
    Ok(TurnEnd::Completed { reply_seq, steps })
}

/// Ends the turn with a failure the host reports to the user; `event` says what failed.
async fn fail(
    env: &TurnEnv<'_>,
    batch: &Batch,
    pending_user: Option<Value>,
    reason: String,
    event: RunnerEvent,
    detail: Option<Value>,
) -> Result<TurnEnd, TurnError> {
    let turn = batch.turn;
    let acks = batch.claims();
    let error = reason.clone();
    let rows = env.activity.rows();
    env.store
        .run(move |dbs| {
            let now = Utc::now();
            let mut tx = dbs.outbound.transaction()?;
            if let Some(user) = pending_user {
                tx.append_history(turn, &[user])?;
            }
            tx.record_events(&[(now, event)])?;
            for (seq, attempt) in acks {
                tx.ack_with_detail(
                    seq,
                    attempt,
                    AckStatus::Failed,
                    Some(&error),
                    detail.as_ref(),
                    now,
                )?;
            }
            tx.delete_kv(TURN_KEY)?;
            tx.delete_draft(turn)?;
            tx.set_runner_state(&rows.idle())?;
            tx.commit()
        })
        .await?;
    tracing::warn!(turn, reason = %reason, "turn failed");
    Ok(TurnEnd::Failed { reason })
}

/// Ends a task's turn that its script decided without the model: the `completed` ack with the
/// script's report, the record deleted, Idle — one transaction, nothing else.
async fn end_gated(
    env: &TurnEnv<'_>,
    batch: &Batch,
    report: ScriptReport,
) -> Result<TurnEnd, TurnError> {
    let acks = batch.claims();
    let detail = report.detail();
    let rows = env.activity.rows();
    env.store
        .run(move |dbs| {
            let now = Utc::now();
            let mut tx = dbs.outbound.transaction()?;
            for (seq, attempt) in acks {
                tx.ack_with_detail(seq, attempt, AckStatus::Completed, None, Some(&detail), now)?;
            }
            tx.delete_kv(TURN_KEY)?;
            tx.set_runner_state(&rows.idle())?;
            tx.commit()
        })
        .await?;
    Ok(TurnEnd::Gated { report })
}

/// `/clear`: starts a new conversation and answers `messages` (the last is the `/clear`; the
/// ones before it belong to the cleared conversation) in one transaction, which also records
/// Idle. Returns the reply's seq.
pub async fn clear_conversation(
    store: &Store,
    rows: ActivityRows,
    messages: Vec<InboundMessage>,
) -> Result<Option<i64>, StoreError> {
    let Some(clear) = messages.last().cloned() else {
        return Ok(None);
    };
    let reply = NewOutbound {
        id: format!("clear-{}-{:016x}", clear.seq, rand::random::<u64>()),
        kind: OutboundKind::Chat,
        in_reply_to: Some(clear.seq),
        route: clear.route.clone(),
        content: json!({ "text": CLEARED }),
    };
    let seq = store
        .run(move |dbs| {
            let now = Utc::now();
            let mut tx = dbs.outbound.transaction()?;
            tx.clear_history()?;
            let seq = tx.insert_message(&reply, now)?;
            for m in &messages {
                tx.ack(m.seq, m.attempt(), AckStatus::Completed, None, now)?;
            }
            tx.set_runner_state(&rows.idle())?;
            tx.commit()?;
            Ok(seq)
        })
        .await?;
    tracing::info!(clear = clear.seq, reply_seq = seq, "conversation cleared");
    Ok(Some(seq))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;

    use super::*;

    #[test]
    fn arguments() {
        let ok = |text: &str| Value::Object(parse_arguments(text).unwrap());
        assert_eq!(ok(r#"{"path": "a"}"#), json!({ "path": "a" }));
        assert_eq!(ok(""), json!({}));
        assert_eq!(ok("null"), json!({}));
        assert_eq!(ok(r#""{\"path\": \"a\"}""#), json!({ "path": "a" }));
        let table = [
            (r#"{"path": "a""#, "EOF while parsing"),
            ("[1]", "expected a JSON object, got an array"),
            ("42", "expected a JSON object, got 42"),
            (r#""hello""#, "expected a JSON object, got a string"),
        ];
        for (text, want) in table {
            let err = parse_arguments(text).unwrap_err();
            assert!(err.contains(want), "{text}: {err}");
        }
    }

    #[test]
    fn event_errors_are_one_short_line() {
        let long = "x".repeat(400);
        let table = [
            ("Error: boom", "Error: boom".to_owned()),
            ("\n  Error: first\nsecond", "Error: first".to_owned()),
            ("", String::new()),
            (
                long.as_str(),
                format!("{}…", "x".repeat(EVENT_TEXT_CHARS - 1)),
            ),
        ];
        for (text, want) in table {
            assert_eq!(event_error(text), want, "{text:?}");
        }
    }

    /// The request prefix (system prompt, tools, earlier turns) of two turns a minute apart is
    /// the same bytes: the clock is in the new user message only.
    #[test]
    fn the_prefix_is_byte_stable_across_turns() {
        use chrono::TimeZone;

        use crate::model::{ModelClient, ModelSettings, ToolSpec};
        use crate::prompt::{PromptContext, PromptFiles, system_prompt};

        let client = ModelClient::new(ModelSettings {
            base_url: "http://127.0.0.1:9/v1".to_owned(),
            api_key: String::new(),
            socket: None,
            model: "m".to_owned(),
            timeout: Duration::from_secs(1),
            retries: 0,
            backoff: Duration::from_millis(1),
            params: Map::new(),
            tool_call_content: crate::model::ToolCallContent::Empty,
            stream: false,
        })
        .unwrap();
        let tools = [ToolSpec {
            name: "read_file".to_owned(),
            description: "Read a file.".to_owned(),
            parameters: json!({ "type": "object", "properties": { "path": { "type": "string" } } }),
        }];
        let tz = chrono_tz::Europe::Berlin;
        let files = PromptFiles {
            instructions: Some("Be brief.".to_owned()),
            ..PromptFiles::default()
        };
        let ctx = PromptContext {
            timezone: tz,
            assistant_name: "Andy",
            channel: Some("telegram"),
            destinations: &[],
            first_message_in_session: false,
            setup_problems: &[],
            task_tools: true,
        };
        let first_at = Utc.with_ymd_and_hms(2026, 11, 23, 15, 4, 30).unwrap();
        let second_at = first_at + chrono::Duration::seconds(61);

        // Turn 1 at 16:04, turn 2 at 16:05 (local): each builds its system prompt anew.
        let user1 = user_message("<message id=\"2\">hi</message>", tz, first_at);
        let answer = json!({ "role": "assistant", "content": "hello" });
        let turn1 = vec![
            json!({ "role": "system", "content": system_prompt(&files, &ctx) }),
            user1.clone(),
        ];
        let user2 = user_message("<message id=\"4\">again</message>", tz, second_at);
        let turn2 = vec![
            json!({ "role": "system", "content": system_prompt(&files, &ctx) }),
            user1,
            answer,
            user2.clone(),
        ];
        let body1 = client.request_body(&turn1, &tools);
        let body2 = client.request_body(&turn2, &tools);
        let bytes = |v: &Value| serde_json::to_vec(v).unwrap();
        assert_eq!(bytes(&body1["tools"]), bytes(&body2["tools"]));
        // Every message of turn 1 is, byte for byte, the start of turn 2's.
        for (i, message) in body1["messages"].as_array().unwrap().iter().enumerate() {
            assert_eq!(bytes(message), bytes(&body2["messages"][i]), "message {i}");
        }
        // The clock moved, and only in the new user message.
        assert!(
            user2["content"]
                .as_str()
                .unwrap()
                .starts_with("<now>2026-11-23 16:05 ")
        );
        assert!(
            !body2["messages"][0]["content"]
                .as_str()
                .unwrap()
                .contains("16:0")
        );
    }

    #[test]
    fn context_failures_say_what_to_do() {
        let err = ModelError::Status {
            status: 400,
            detail: "This model's maximum context length is 8192 tokens.".to_owned(),
            attempts: 1,
        };
        let budget = Budget::new(32_000);
        let history = context_failure(&err, /*prefix*/ 2_000, budget);
        assert!(
            history.contains("HTTP 400 This model's maximum context length"),
            "{history}"
        );
        assert!(history.contains("lower CONTEXT_TOKENS"), "{history}");
        assert!(
            history.contains("/compact") && history.contains("/clear"),
            "{history}"
        );
        let prompt = context_failure(&err, /*prefix*/ 40_000, budget);
        assert!(
            prompt.contains("tool descriptions alone take about 40000 tokens"),
            "{prompt}"
        );
        assert!(prompt.contains("raise CONTEXT_TOKENS"), "{prompt}");
    }

    #[test]
    fn duplicate_call_ids_are_renamed() {
        let call = |id: &str| ModelCall {
            id: id.to_owned(),
            name: "f".to_owned(),
            arguments: "{}".to_owned(),
        };
        let mut calls = vec![call("x"), call("x"), call("y")];
        unique_call_ids(&mut calls);
        let ids: Vec<&str> = calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["x", "x_1", "y"]);
    }
}
