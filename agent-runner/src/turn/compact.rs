//! Compaction: replaces the oldest part of the conversation with one summary written by the
//! same model, so that a conversation never outgrows the context budget (`budget.rs`) and its
//! cost per turn stays flat. Owns the choice of what to compact, the memory flush, the summary
//! requests, the archive and the compaction transaction; *when* to compact is `turn.rs`'s
//! decision (before a request that would pass the threshold, after the model refused one as too
//! long, and on `/compact`).
//!
//! Steps, in order:
//! 1. **Cut**: history is grouped by turn; the newest turns are kept verbatim up to
//!    [`Budget::keep`] (nothing for `/compact`), the turn in progress always, everything older (including an earlier
//!    summary) is compacted. Cuts fall between turns only, so a tool call and its result are
//!    never split.
//! 2. **Memory flush**: when the agent has tools, it first gets the part about to be compacted
//!    and one instruction to save lasting facts in `CLAUDE.local.md` (up to [`FLUSH_STEPS`]
//!    requests; their messages are not kept — only what the tools wrote is).
//! 3. **Summary**: the compacted part is rendered as a transcript and summarised with
//!    [`SUMMARY_PROMPT`]; a transcript too long for one request is summarised in pieces, each
//!    with the summary so far.
//! 4. **Archive**: the transcript is written to `<workspace>/conversations/<date>-<n>.md`
//!    (`n` counts this session's compactions), fsynced, so the agent can grep it later.
//! 5. **Commit**: one transaction of `outbound.db` deletes the compacted entries, inserts the
//!    summary in their place (`OutboundTx::compact_history`) and records the compaction (kv
//!    `compaction`: count, turn, time, entries replaced and kept, archive) with a `compacted`
//!    runner event for `clawbox logs` (the same, with the history's tokens before and after).
//!    A crash before the commit leaves the history as it was (the next attempt rewrites the same
//!    archive file); after it, as compacted. Never half.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use mailbox::archive::{archive_name, archive_text, transcript};
use mailbox::outbound::{HistoryEntry, SUMMARY_TURN};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use mailbox::{AckStatus, InboundMessage, NewOutbound, OutboundKind, RunnerEvent};

use crate::budget::{Budget, RATIO_KEY, Sizer, cut_message, raw_request};
use crate::model::ModelError;
use crate::prompt::format_batch;
use crate::store::StoreError;
use crate::turn::{TurnEnv, TurnError, run_calls, system_message};

/// The system prompt of a summary request. Its first words are what the testkit's fake model
/// recognises a summary request by.
pub const SUMMARY_PROMPT: &str = "You are compacting a conversation between an assistant and \
the people it works with, so that it can go on without the full transcript. Write a summary \
that replaces the transcript below. Keep, in this order:\n\
- decisions made and their reasons;\n\
- open tasks, promises and commitments (who, what, by when);\n\
- facts about the people (names, preferences, roles) and about their projects;\n\
- file paths, names, numbers, identifiers and links that were mentioned or produced;\n\
- what the assistant was doing when the transcript ends.\n\
Drop greetings, repetition and tool output that no longer matters. Write plain Markdown, \
in the language of the conversation, as facts, not as a story. Answer with the summary only.";

/// The instruction of the memory flush, sent as a user message after the part to be compacted.
pub const FLUSH_PROMPT: &str = "[clawbox] The older part of this conversation (above) is about \
to be summarised to save space; details not in the summary will only be in an archive file. If \
it holds lasting facts worth remembering in every future conversation (people's preferences, \
standing instructions, decisions, important paths), add them now to your memory file \
agent/CLAUDE.local.md with your file tools, briefly and without repeating what is already \
there. Then answer with the single word DONE. If there is nothing to save, answer DONE at once.";

/// The kv key of the last compaction's record.
pub const COMPACTION_KEY: &str = mailbox::archive::COMPACTION_KEY;
/// Requests the memory flush may take.
pub const FLUSH_STEPS: u32 = 3;
/// Folder of the archives, in the session's workspace.
pub const ARCHIVE_DIR: &str = mailbox::archive::ARCHIVE_DIR;

/// What the last compaction did (kv `compaction`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CompactionRecord {
    /// Compactions of this session so far (the archive's `n`).
    pub count: u32,
    /// The turn it happened in (`None` for `/compact` between turns).
    pub turn: Option<i64>,
    pub at: Option<DateTime<Utc>>,
    /// History entries replaced by the summary (an earlier summary included).
    pub replaced: usize,
    /// History entries kept verbatim.
    pub kept: usize,
    /// The archive, relative to the workspace.
    pub archive: String,
}

/// Which entries go: everything up to `through_id`.
#[derive(Debug, Clone, PartialEq)]
pub struct Cut {
    /// Row id of the last compacted entry.
    pub through_id: i64,
    /// The compacted messages, oldest first (an earlier summary first, if any).
    pub compacted: Vec<Value>,
    /// Entries kept verbatim.
    pub kept: usize,
    /// Their calibrated size.
    pub kept_tokens: u64,
}

/// Chooses the cut: keeps the newest whole turns that fit `keep_tokens` and the turn in progress
/// (`current`, kept whatever its size); compacts the rest. `None` when there is nothing to
/// compact beyond an earlier summary.
pub fn choose_cut(
    entries: &[(i64, HistoryEntry)],
    current: Option<i64>,
    sizer: &Sizer,
    keep_tokens: u64,
) -> Option<Cut> {
    // Runs of consecutive entries of one turn, as index ranges.
    let mut units: Vec<(usize, usize)> = Vec::new();
    for (i, (_, entry)) in entries.iter().enumerate() {
        match units.last_mut() {
            Some((start, end)) if entries[*start].1.turn == entry.turn && *end == i => *end = i + 1,
            _ => units.push((i, i + 1)),
        }
    }
    let mut kept_tokens = 0u64;
    let mut first_kept = units.len();
    for (u, &(start, end)) in units.iter().enumerate().rev() {
        let turn = entries[start].1.turn;
        let size: u64 = entries[start..end]
            .iter()
            .map(|(_, e)| sizer.message(&e.message))
            .sum();
        let in_progress = Some(turn) == current;
        if turn == SUMMARY_TURN || (!in_progress && kept_tokens + size > keep_tokens) {
            break;
        }
        kept_tokens += size;
        first_kept = u;
    }
    let compacted_end = units
        .get(first_kept)
        .map_or(entries.len(), |(start, _)| *start);
    let compacted = &entries[..compacted_end];
    if !compacted.iter().any(|(_, e)| e.turn != SUMMARY_TURN) {
        return None;
    }
    let (through_id, _) = compacted.last()?;
    Some(Cut {
        through_id: *through_id,
        compacted: compacted.iter().map(|(_, e)| e.message.clone()).collect(),
        kept: entries.len() - compacted_end,
        kept_tokens,
    })
}

/// The history entry that stands for the compacted part.
pub fn summary_message(summary: &str, archive: &str, count: u32) -> Value {
    json!({
        "role": "user",
        "content": format!(
            "[clawbox: summary of the earlier conversation (compaction {count}); the full \
             transcript is in {archive} in your workspace]\n\n{}",
            summary.trim()
        ),
    })
}

/// Why a compaction did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CompactError {
    /// The mailbox failed; the runner stops (as for any store error).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A summary request failed (after its retries). Nothing was changed; the caller goes on
    /// with the history as it is if the request still fits, else fails the turn.
    #[error("the summary request failed: {0}")]
    Model(ModelError),
    /// The archive could not be written; nothing was changed.
    #[error("cannot write the archive {path}: {source}")]
    Archive {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq)]
pub struct Compacted {
    pub record: CompactionRecord,
    /// The conversation afterwards, oldest first.
    pub conversation: Vec<Value>,
}

/// What a compaction needs besides the turn environment.
pub struct CompactRequest<'a> {
    /// The system message of the turn (for the memory flush).
    pub system: &'a Value,
    /// The turn in progress, whose entries are kept (`None` for `/compact`).
    pub turn: Option<i64>,
    /// Tokens of the newest history kept verbatim ([`Budget::keep`]; 0 for `/compact`).
    pub keep: u64,
}

/// Compacts the history now if there is anything to compact (`Ok(None)` if not).
pub async fn compact(
    env: &TurnEnv<'_>,
    sizer: &Sizer,
    budget: Budget,
    request: CompactRequest<'_>,
    cancel: &CancellationToken,
) -> Result<Option<Compacted>, CompactError> {
    let (entries, record) = env
        .store
        .run(|dbs| {
            Ok((
                dbs.outbound.history_with_ids()?,
                dbs.outbound.kv(COMPACTION_KEY)?,
            ))
        })
        .await?;
    let previous: CompactionRecord = record
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    let Some(cut) = choose_cut(&entries, request.turn, sizer, request.keep) else {
        return Ok(None);
    };
    let count = previous.count + 1;
    tracing::info!(
        compacted = cut.compacted.len(),
        kept = cut.kept,
        kept_tokens = cut.kept_tokens,
        keep = request.keep,
        "compacting the conversation"
    );

    if !env.mcp.tools().is_empty() {
        flush_memory(env, sizer, budget, request.system, &cut.compacted, cancel).await?;
    }
    let summary = summarise(env, sizer, budget, &cut.compacted, cancel).await?;

    let now = Utc::now();
    let date = now.with_timezone(&env.config.timezone).format("%Y-%m-%d");
    let archive = archive_name(&date.to_string(), count);
    let text = archive_text(
        count,
        &format!(
            "Compacted {} ({} messages); the conversation went on with a summary in their place.",
            now.with_timezone(&env.config.timezone)
                .format("%Y-%m-%d %H:%M %Z"),
            cut.compacted.len(),
        ),
        &cut.compacted,
    );
    write_archive(&env.config.workspace, &archive, text).await?;

    let summary = summary_message(&summary, &archive, count);
    let tokens_before: u64 = entries.iter().map(|(_, e)| sizer.message(&e.message)).sum();
    let event = RunnerEvent::Compacted {
        turn: request.turn,
        replaced: u32::try_from(cut.compacted.len()).unwrap_or(u32::MAX),
        kept: u32::try_from(cut.kept).unwrap_or(u32::MAX),
        tokens_before,
        tokens_after: cut.kept_tokens + sizer.message(&summary),
        archive: archive.clone(),
    };
    let record = CompactionRecord {
        count,
        turn: request.turn,
        at: Some(now),
        replaced: cut.compacted.len(),
        kept: cut.kept,
        archive,
    };
    let encoded = serde_json::to_string(&record).unwrap_or_default();
    let through_id = cut.through_id;
    let conversation = env
        .store
        .run(move |dbs| {
            let mut tx = dbs.outbound.transaction()?;
            tx.compact_history(through_id, &summary)?;
            tx.set_kv(COMPACTION_KEY, &encoded)?;
            tx.record_events(&[(now, event)])?;
            tx.commit()?;
            Ok(dbs
                .outbound
                .history()?
                .into_iter()
                .map(|e| e.message)
                .collect::<Vec<_>>())
        })
        .await?;
    tracing::info!(
        count,
        replaced = record.replaced,
        kept = record.kept,
        archive = %record.archive,
        "conversation compacted"
    );
    Ok(Some(Compacted {
        record,
        conversation,
    }))
}

/// `/compact`: compacts now, everything (the summary keeps what matters; the archive all of it),
/// then answers `messages` (the last is the `/compact`; the ones before
/// are context rows, appended to the history with the answer) with how much was kept, and
/// records Idle, in one transaction. A summary that fails answers with a `failed` ack and its
/// reason; the history is unchanged. Returns the reply's seq.
pub async fn compact_command(
    env: &TurnEnv<'_>,
    messages: Vec<InboundMessage>,
    cancel: &CancellationToken,
) -> Result<Option<i64>, TurnError> {
    let Some(command) = messages.last().cloned() else {
        return Ok(None);
    };
    let (destinations, ratio) = env
        .store
        .run(|dbs| Ok((dbs.inbound.destinations()?, dbs.outbound.kv(RATIO_KEY)?)))
        .await?;
    let mut sizer = env.sizer.clone();
    if let Some(ratio) = ratio.and_then(|r| r.parse::<f64>().ok()) {
        sizer.set_ratio(ratio);
    }
    env.activity.model(1).await?;
    let system = system_message(env, &command.route.channel_type, &destinations, false).await;
    let request = CompactRequest {
        system: &system,
        turn: None,
        keep: 0,
    };
    let outcome = compact(env, &sizer, env.budget, request, cancel).await;
    let (text, failure) = match outcome {
        Ok(compacted) => {
            let conversation = match &compacted {
                Some(c) => c.conversation.clone(),
                None => {
                    env.store
                        .run(|dbs| {
                            Ok(dbs
                                .outbound
                                .history()?
                                .into_iter()
                                .map(|e| e.message)
                                .collect::<Vec<_>>())
                        })
                        .await?
                }
            };
            let mut request = vec![system.clone()];
            request.extend(conversation.iter().cloned());
            let size = sizer.scale(raw_request(&sizer, &request, env.mcp.tools()));
            let context = env.budget.context;
            let text = match compacted {
                Some(c) => format!(
                    "Compacted the conversation: {} earlier messages are now one summary, the \
                     newest {} are kept word for word. It now takes about {size} of {context} \
                     tokens. The full transcript is in {} in the workspace.",
                    c.record.replaced, c.record.kept, c.record.archive
                ),
                None => format!(
                    "Nothing to compact yet: the conversation has {} messages, about {size} of \
                     {context} tokens.",
                    conversation.len()
                ),
            };
            (text, None)
        }
        Err(CompactError::Store(err)) => return Err(TurnError::Store(err)),
        Err(CompactError::Model(ModelError::Cancelled)) => return Err(TurnError::Cancelled),
        Err(err @ (CompactError::Model(_) | CompactError::Archive { .. })) => {
            tracing::warn!(error = %err, "/compact failed");
            let reason = format!(
                "The conversation could not be compacted ({err}); nothing was changed. Try \
                 /compact again later, or /clear to start a new conversation."
            );
            (String::new(), Some(reason))
        }
    };

    let context_rows: Vec<InboundMessage> = messages[..messages.len() - 1].to_vec();
    let context = (!context_rows.is_empty()).then(|| {
        (
            context_rows[0].seq,
            json!({
                "role": "user",
                "content": format_batch(&context_rows, env.config.timezone),
            }),
        )
    });
    let reply = failure.is_none().then(|| NewOutbound {
        id: format!("compact-{}-{:016x}", command.seq, rand::random::<u64>()),
        kind: OutboundKind::Chat,
        in_reply_to: Some(command.seq),
        route: command.route.clone(),
        content: json!({ "text": text }),
    });
    let rows = env.activity.rows();
    let seq = env
        .store
        .run(move |dbs| {
            let now = Utc::now();
            let mut tx = dbs.outbound.transaction()?;
            if let Some((turn, message)) = &context {
                tx.append_history(*turn, std::slice::from_ref(message))?;
            }
            let seq = match &reply {
                Some(reply) => Some(tx.insert_message(reply, now)?),
                None => None,
            };
            let (status, error) = match &failure {
                None => (AckStatus::Completed, None),
                Some(reason) => (AckStatus::Failed, Some(reason.as_str())),
            };
            for m in &messages {
                tx.ack(m.seq, m.attempt(), status, error, now)?;
            }
            tx.set_runner_state(&rows.idle())?;
            tx.commit()?;
            Ok(seq)
        })
        .await?;
    tracing::info!(command = command.seq, reply_seq = seq, "/compact answered");
    Ok(seq)
}

/// The memory flush: the part to be compacted, the instruction, up to [`FLUSH_STEPS`] requests
/// with tools. Skipped when it would not fit the budget. A model failure here only skips the
/// flush: the compaction matters more.
async fn flush_memory(
    env: &TurnEnv<'_>,
    sizer: &Sizer,
    budget: Budget,
    system: &Value,
    compacted: &[Value],
    cancel: &CancellationToken,
) -> Result<(), CompactError> {
    let mut messages = Vec::with_capacity(compacted.len() + 2);
    messages.push(system.clone());
    messages.extend(compacted.iter().cloned());
    messages.push(json!({ "role": "user", "content": FLUSH_PROMPT }));
    for step in 1..=FLUSH_STEPS {
        let size = sizer.scale(raw_request(sizer, &messages, env.mcp.tools()));
        if size > budget.limit() {
            tracing::info!(
                size,
                limit = budget.limit(),
                "memory flush skipped: too large"
            );
            return Ok(());
        }
        let reply = match env.model.complete(&messages, env.mcp.tools(), cancel).await {
            Ok(reply) => reply,
            Err(ModelError::Cancelled) => return Err(CompactError::Model(ModelError::Cancelled)),
            Err(err) => {
                tracing::warn!(error = %err, "memory flush failed; compacting without it");
                return Ok(());
            }
        };
        if reply.tool_calls.is_empty() {
            tracing::debug!(step, "memory flush done");
            return Ok(());
        }
        let assistant = reply.to_message();
        let (results, _events) = run_calls(env, &reply.tool_calls, 0, step, None, cancel)
            .await
            .map_err(|err| match err {
                TurnError::Store(err) => CompactError::Store(err),
                TurnError::Cancelled => CompactError::Model(ModelError::Cancelled),
            })?;
        messages.push(assistant);
        messages.extend(results);
    }
    Ok(())
}

/// Summarises `messages`, in pieces when the transcript does not fit one request.
async fn summarise(
    env: &TurnEnv<'_>,
    sizer: &Sizer,
    budget: Budget,
    messages: &[Value],
    cancel: &CancellationToken,
) -> Result<String, CompactError> {
    let system = json!({ "role": "system", "content": SUMMARY_PROMPT });
    // Room for the transcript: the limit, less the prompt and a summary carried over.
    let room = budget
        .limit()
        .saturating_sub(sizer.message(&system))
        .saturating_sub(budget.keep(true))
        .max(budget.context / 10);
    let pieces = split_for_summary(sizer, messages, room);
    let mut summary: Option<String> = None;
    for piece in pieces {
        let mut text = String::new();
        if let Some(so_far) = &summary {
            text.push_str("## Summary of the conversation before this part\n\n");
            text.push_str(so_far);
            text.push_str("\n\n## The conversation, continued\n\n");
        }
        text.push_str(&transcript(&piece));
        let request = [system.clone(), json!({ "role": "user", "content": text })];
        let reply = env
            .model
            .complete(&request, &[], cancel)
            .await
            .map_err(CompactError::Model)?;
        let Some(text) = reply.content.filter(|t| !t.trim().is_empty()) else {
            return Err(CompactError::Model(ModelError::Malformed {
                detail: "the summary is empty".to_owned(),
                attempts: reply.attempts,
            }));
        };
        summary = Some(text);
    }
    Ok(summary.unwrap_or_default())
}

/// Splits messages into pieces of at most `room` tokens each; a message bigger than half the
/// room is cut first (it is archived whole).
fn split_for_summary(sizer: &Sizer, messages: &[Value], room: u64) -> Vec<Vec<Value>> {
    let mut pieces: Vec<Vec<Value>> = Vec::new();
    let mut current: Vec<Value> = Vec::new();
    let mut size = 0u64;
    for message in messages {
        let message = cut_message(sizer, message, room / 2).unwrap_or_else(|| message.clone());
        let n = sizer.message(&message);
        if size + n > room && !current.is_empty() {
            pieces.push(std::mem::take(&mut current));
            size = 0;
        }
        size += n;
        current.push(message);
    }
    if !current.is_empty() {
        pieces.push(current);
    }
    pieces
}

/// Writes and fsyncs `<workspace>/<relative>` (off the async threads).
async fn write_archive(workspace: &Path, relative: &str, text: String) -> Result<(), CompactError> {
    let path = workspace.join(relative);
    let target = path.clone();
    let written =
        tokio::task::spawn_blocking(move || mailbox::archive::write_archive(&target, &text))
            .await
            .unwrap_or_else(|err| Err(std::io::Error::other(err.to_string())));
    written.map_err(|source| CompactError::Archive { path, source })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;

    use super::*;

    fn entry(id: i64, turn: i64, role: &str, text: &str) -> (i64, HistoryEntry) {
        (
            id,
            HistoryEntry {
                turn,
                message: json!({ "role": role, "content": text }),
            },
        )
    }

    fn history() -> Vec<(i64, HistoryEntry)> {
        let long = "x".repeat(300); // 100 tokens with the byte estimate
        vec![
            entry(1, 2, "user", &long),
            entry(2, 2, "assistant", &long),
            entry(3, 4, "user", &long),
            entry(4, 4, "assistant", &long),
            entry(5, 6, "user", &long),
            entry(6, 6, "assistant", &long),
        ]
    }

    #[test]
    fn whole_turns_are_kept_newest_first() {
        let sizer = Sizer::for_model("llama3");
        // Each turn is 2 × 104 tokens: room for one turn, not two.
        let cut = choose_cut(&history(), None, &sizer, 300).unwrap();
        assert_eq!((cut.through_id, cut.compacted.len(), cut.kept), (4, 4, 2));
        assert_eq!(cut.kept_tokens, 208);
        // Room for everything: nothing to do.
        assert_eq!(choose_cut(&history(), None, &sizer, 10_000), None);
        // No room: everything goes.
        let cut = choose_cut(&history(), None, &sizer, 0).unwrap();
        assert_eq!((cut.through_id, cut.kept), (6, 0));
    }

    #[test]
    fn the_turn_in_progress_is_always_kept() {
        let sizer = Sizer::for_model("llama3");
        let cut = choose_cut(&history(), Some(6), &sizer, 0).unwrap();
        assert_eq!((cut.through_id, cut.kept), (4, 2));
        // Only the turn in progress: nothing to compact.
        let own = vec![entry(7, 8, "user", "hi"), entry(8, 8, "assistant", "yo")];
        assert_eq!(choose_cut(&own, Some(8), &sizer, 0), None);
    }

    #[test]
    fn a_tool_call_and_its_result_stay_together() {
        let sizer = Sizer::for_model("llama3");
        let asks = json!({ "role": "assistant", "content": null, "tool_calls": [
            { "id": "c", "type": "function", "function": { "name": "f", "arguments": "{}" } }
        ]});
        let mut entries = history();
        entries.insert(
            5,
            (
                10,
                HistoryEntry {
                    turn: 6,
                    message: asks,
                },
            ),
        );
        entries.insert(6, entry(11, 6, "tool", &"y".repeat(3_000)));
        // The last turn is too big to keep: it goes whole, call and result together.
        let cut = choose_cut(&entries, None, &sizer, 300).unwrap();
        assert_eq!(cut.kept, 0);
        assert_eq!(cut.through_id, 6);
    }

    #[test]
    fn an_earlier_summary_is_compacted_again_but_not_alone() {
        let sizer = Sizer::for_model("llama3");
        let mut entries = vec![entry(4, SUMMARY_TURN, "user", "summary")];
        entries.extend(history().into_iter().skip(4));
        assert_eq!(choose_cut(&entries, None, &sizer, 10_000), None);
        assert_eq!(
            choose_cut(&entries[..1], None, &sizer, 0),
            None,
            "a summary alone is not compacted into itself"
        );
        let cut = choose_cut(&entries, None, &sizer, 0).unwrap();
        assert_eq!(cut.compacted[0]["content"], "summary");
        assert_eq!(cut.through_id, 6);
    }

    #[test]
    fn transcripts_show_calls_and_results() {
        let messages = [
            json!({ "role": "user", "content": "read a.txt" }),
            json!({ "role": "assistant", "content": null, "tool_calls": [
                { "id": "c1", "type": "function",
                  "function": { "name": "read_file", "arguments": "{\"path\":\"a.txt\"}" } }
            ]}),
            json!({ "role": "tool", "tool_call_id": "c1", "content": "hello" }),
            json!({ "role": "assistant", "content": "It says hello." }),
        ];
        assert_eq!(
            transcript(&messages),
            "### user\n\nread a.txt\n\n### assistant\n\n- calls `read_file` (c1) with \
             `{\"path\":\"a.txt\"}`\n\n### tool result (c1)\n\nhello\n\n### assistant\n\nIt \
             says hello.\n\n"
        );
    }

    #[test]
    fn long_transcripts_are_summarised_in_pieces() {
        let sizer = Sizer::for_model("llama3");
        let messages: Vec<Value> = (0..10)
            .map(|i| json!({ "role": "user", "content": format!("{i}{}", "z".repeat(299)) }))
            .collect();
        let pieces = split_for_summary(&sizer, &messages, 350);
        assert_eq!(pieces.len(), 4, "three of 104 tokens per piece");
        assert_eq!(pieces.iter().map(Vec::len).sum::<usize>(), 10);
        let huge = [json!({ "role": "user", "content": "h".repeat(30_000) })];
        let pieces = split_for_summary(&sizer, &huge, 1_000);
        assert!(sizer.message(&pieces[0][0]) <= 500);
    }
}
