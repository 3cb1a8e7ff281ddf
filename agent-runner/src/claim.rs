//! Decides what the runner works on next and claims it. Owns the batching rules (oldest first,
//! the trigger rule, the batch cap, `/clear`, resuming a crashed turn) as one pure function,
//! [`decide`], with a table of tests, and the claim transaction. Running the turn is
//! `turn.rs`'s business.
//!
//! Rules:
//! - Only due rows (`process_after` passed) whose latest ack is from an older attempt
//!   ([`mailbox::outbound::is_claimable`]) are considered, in seq order.
//! - A batch starts only if some such row has `trigger = true`. It holds every claimable row up
//!   to the first triggering one (context rows are never cut off) and then further rows up to
//!   [`MAX_BATCH`] in total.
//! - If the batch contains `/clear`, the rows up to the last `/clear` are answered by the clear
//!   itself; the rows after it wait for the next decision (and start the new conversation).
//! - `/compact` (a triggering one: the host let it through only from an owner or admin) is
//!   handled alone, between turns: the rows before it in the window form the turn before it; when
//!   it is the first trigger, it is answered with the context rows before it (they go into the
//!   history first, so nothing they said is lost). `/clear` in the same window wins.
//! - A scheduled task with a script runs alone: its script may end the run without the model
//!   (see `script.rs`), which must not leave other messages unanswered. When it is the first
//!   trigger it is the whole batch (context rows before it wait for the next trigger); a later
//!   one ends the batch before it and waits for the next decision.
//! - The kv record `turn` names the turn a claim belongs to. If it exists on a decision, the
//!   previous attempt died: its still-pending rows are resumed as exactly that batch once due
//!   and claimable again (the host re-queued them), and nothing newer starts before; once none
//!   of them is pending (the host gave up on them) the record is dropped.
//! - The claim transaction also records the activity Model(first step of the turn): the turn's
//!   first model request needs no commit of its own (see `activity.rs`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use mailbox::outbound::{OutboundTx, is_claimable};
use mailbox::{Ack, AckStatus, InboundKind, InboundMessage, InboundStatus};
use serde::{Deserialize, Serialize};

use crate::activity::ActivityRows;
use crate::resume::resume_point;
use crate::script::task_script;
use crate::store::Dbs;

/// The most messages one turn takes beyond the context rows that precede its first trigger.
pub const MAX_BATCH: usize = 20;
/// The kv key of the turn in progress.
pub const TURN_KEY: &str = "turn";

/// The kv `turn` record: which turn the claimed rows belong to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnRecord {
    /// The turn key: seq of the first message of the original batch.
    pub turn: i64,
    pub seqs: Vec<i64>,
}

/// A claimed batch of inbound messages, ready for `run_turn`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// Turn key under which history is stored.
    pub turn: i64,
    /// Oldest first, never empty.
    pub messages: Vec<InboundMessage>,
    /// A crashed attempt of this turn left persisted steps to continue from.
    pub resume: bool,
}

impl Batch {
    /// `(seq, attempt)` of every message, as the verdict acks need them.
    pub fn claims(&self) -> Vec<(i64, u32)> {
        self.messages.iter().map(|m| (m.seq, m.attempt())).collect()
    }

    /// The kv record naming this batch's rows, as the claim wrote it.
    pub fn record(&self) -> TurnRecord {
        TurnRecord {
            turn: self.turn,
            seqs: self.messages.iter().map(|m| m.seq).collect(),
        }
    }

    /// The message a reply answers: the last triggering one (the last one if none triggers,
    /// which only a resumed batch can have).
    pub fn origin(&self) -> Option<&InboundMessage> {
        self.messages
            .iter()
            .rev()
            .find(|m| m.trigger)
            .or(self.messages.last())
    }
}

/// What to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Nothing claimable with a trigger; wait for a wake-up.
    Idle,
    /// A crashed turn's rows are pending but not yet due or not yet re-queued by the host; start
    /// nothing newer (oldest first), wait.
    WaitForResume,
    /// Clear the conversation, answering these rows (the last is the `/clear`).
    Clear(Vec<InboundMessage>),
    /// Compact the conversation now, answering these rows (the last is the `/compact`; the
    /// ones before it are context rows to keep in the history).
    Compact(Vec<InboundMessage>),
    /// Run this (already claimed) batch.
    Turn(Batch),
}

/// The pure part of the decision, before any write.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Idle,
    WaitForResume,
    /// The record names no pending row any more: delete it and decide again.
    DropRecord,
    Clear(Vec<InboundMessage>),
    Compact(Vec<InboundMessage>),
    Turn {
        turn: i64,
        messages: Vec<InboundMessage>,
        resume: bool,
    },
}

/// Decides from the due rows (oldest first), their latest acks, the kv record and which of the
/// record's seqs are still pending (due or not).
pub fn decide(
    due: &[InboundMessage],
    acks: &HashMap<i64, Ack>,
    record: Option<&TurnRecord>,
    record_pending: &[i64],
) -> Decision {
    let claimable = |m: &&InboundMessage| is_claimable(m, acks.get(&m.seq));
    if let Some(record) = record {
        if record_pending.is_empty() {
            return Decision::DropRecord;
        }
        let resumable: Vec<InboundMessage> = due
            .iter()
            .filter(|m| record_pending.contains(&m.seq))
            .filter(claimable)
            .cloned()
            .collect();
        if resumable.is_empty() {
            return Decision::WaitForResume;
        }
        return Decision::Turn {
            turn: record.turn,
            messages: resumable,
            resume: true,
        };
    }

    let candidates: Vec<&InboundMessage> = due.iter().filter(claimable).collect();
    let Some(first_trigger) = candidates.iter().position(|m| m.trigger) else {
        return Decision::Idle;
    };
    if task_script(candidates[first_trigger]).is_some() {
        return Decision::Turn {
            turn: candidates[first_trigger].seq,
            messages: vec![candidates[first_trigger].clone()],
            resume: false,
        };
    }
    let mut end = (first_trigger + 1).max(MAX_BATCH.min(candidates.len()));
    if let Some(gated) = candidates[first_trigger + 1..end]
        .iter()
        .position(|m| task_script(m).is_some())
    {
        end = first_trigger + 1 + gated;
    }
    let mut window = &candidates[..end];
    if let Some(last_clear) = window.iter().rposition(|m| is_clear(m)) {
        return Decision::Clear(window[..=last_clear].iter().map(|m| (*m).clone()).collect());
    }
    if let Some(compact) = window.iter().position(|m| is_compact(m)) {
        if compact == first_trigger {
            return Decision::Compact(window[..=compact].iter().map(|m| (*m).clone()).collect());
        }
        window = &window[..compact];
    }
    Decision::Turn {
        turn: window[0].seq,
        messages: window.iter().map(|m| (*m).clone()).collect(),
        resume: false,
    }
}

/// A chat message the host authorised to clear the conversation. The text alone never clears:
/// an unaddressed `/clear` from a sender without a role reaches the mailbox as context, unmarked.
pub fn is_clear(m: &InboundMessage) -> bool {
    m.authorised_command() == Some("/clear")
}

/// A chat message the host authorised to compact the conversation now (only a triggering one:
/// an unaddressed `/compact` is context).
pub fn is_compact(m: &InboundMessage) -> bool {
    m.trigger && m.authorised_command() == Some("/compact")
}

/// Steering: the rows that join a running turn before its next model request, oldest first.
/// They are the claimable rows not yet in the turn (`claimed`), taken while they are plain chat
/// messages (a command, a task or a host notice stops the run: it keeps its place in the order
/// and waits for the next decision), ending at the last triggering one (context rows alone do
/// not join a turn; they wait for the trigger that will bring them), at most `room` of them.
pub fn steerable(
    due: &[InboundMessage],
    acks: &HashMap<i64, Ack>,
    claimed: &[i64],
    room: usize,
) -> Vec<InboundMessage> {
    let joining: Vec<&InboundMessage> = due
        .iter()
        .filter(|m| !claimed.contains(&m.seq) && is_claimable(m, acks.get(&m.seq)))
        .take_while(|m| m.kind == InboundKind::Chat && m.authorised_command().is_none())
        .take(room)
        .collect();
    let end = joining
        .iter()
        .rposition(|m| m.trigger)
        .map_or(0, |last| last + 1);
    joining[..end].iter().map(|m| (*m).clone()).collect()
}

/// Reads which rows join the turn of `record` (see [`steerable`]); the caller claims them with
/// [`claim_joined`] in the transaction that persists the step they follow.
pub fn joining(
    dbs: &Dbs,
    record: &TurnRecord,
    now: DateTime<Utc>,
) -> Result<Vec<InboundMessage>, mailbox::Error> {
    let room = MAX_BATCH.saturating_sub(record.seqs.len());
    if room == 0 {
        return Ok(Vec::new());
    }
    let due = dbs.inbound.due(now)?;
    let seqs: Vec<i64> = due.iter().map(|m| m.seq).collect();
    let acks = dbs.outbound.latest_acks(&seqs)?;
    Ok(steerable(&due, &acks, &record.seqs, room))
}

/// Claims `joined` for the running turn inside `tx`: their `processing` acks and the kv record
/// naming them, so that a crash resumes them with the turn (and the verdict acks them with it).
pub fn claim_joined(
    tx: &mut OutboundTx<'_>,
    record: &mut TurnRecord,
    joined: &[InboundMessage],
    now: DateTime<Utc>,
) -> Result<(), mailbox::Error> {
    for m in joined {
        tx.ack(m.seq, m.attempt(), AckStatus::Processing, None, now)?;
        record.seqs.push(m.seq);
    }
    tx.set_kv(TURN_KEY, &encode_record(record)?)
}

fn encode_record(record: &TurnRecord) -> Result<String, mailbox::Error> {
    serde_json::to_string(record).map_err(|e| mailbox::Error::Malformed {
        table: "kv",
        detail: format!("cannot encode the turn record: {e}"),
    })
}

/// Decides and, for a turn, claims: `processing` acks for the batch, the kv record and the
/// activity of the turn's first step, in one transaction. Also returns when the next
/// not-yet-due row becomes due.
pub fn next(
    dbs: &mut Dbs,
    rows: ActivityRows,
    now: DateTime<Utc>,
) -> Result<(Plan, Option<DateTime<Utc>>), mailbox::Error> {
    let next_due = dbs.inbound.next_due_after(now)?;
    let due = dbs.inbound.due(now)?;
    let seqs: Vec<i64> = due.iter().map(|m| m.seq).collect();
    let acks = dbs.outbound.latest_acks(&seqs)?;
    let record = match dbs.outbound.kv(TURN_KEY)? {
        None => None,
        Some(text) => match serde_json::from_str::<TurnRecord>(&text) {
            Ok(record) => Some(record),
            Err(err) => {
                // Only this runner writes the record; an unreadable one cannot be resumed, and
                // the host re-queues or fails its rows on its own.
                tracing::warn!(record = %text, error = %err, "dropping unreadable turn record");
                drop_record(dbs)?;
                None
            }
        },
    };
    let mut record_pending = Vec::new();
    if let Some(record) = &record {
        for &seq in &record.seqs {
            if let Some(m) = dbs.inbound.get(seq)?
                && m.status == InboundStatus::Pending
            {
                record_pending.push(seq);
            }
        }
    }

    let mut decision = decide(&due, &acks, record.as_ref(), &record_pending);
    if decision == Decision::DropRecord {
        tracing::info!(
            ?record,
            "the host settled the unfinished turn; dropping its record"
        );
        drop_record(dbs)?;
        decision = decide(&due, &acks, None, &[]);
    }
    let plan = match decision {
        // Without a record `decide` neither drops nor waits; idle is the safe reading.
        Decision::Idle | Decision::DropRecord => Plan::Idle,
        Decision::WaitForResume => Plan::WaitForResume,
        Decision::Clear(messages) => Plan::Clear(messages),
        Decision::Compact(messages) => Plan::Compact(messages),
        Decision::Turn {
            turn,
            messages,
            resume,
        } => Plan::Turn(claim(dbs, rows, turn, messages, resume, now)?),
    };
    Ok((plan, next_due))
}

fn drop_record(dbs: &mut Dbs) -> Result<(), mailbox::Error> {
    let mut tx = dbs.outbound.transaction()?;
    tx.delete_kv(TURN_KEY)?;
    tx.commit()
}

fn claim(
    dbs: &mut Dbs,
    rows: ActivityRows,
    turn: i64,
    messages: Vec<InboundMessage>,
    resume: bool,
    now: DateTime<Utc>,
) -> Result<Batch, mailbox::Error> {
    let batch = Batch {
        turn,
        messages,
        resume,
    };
    let record = encode_record(&batch.record())?;
    // A resumed turn continues after the steps its crashed attempt persisted; reading the
    // history for that is only paid on resume.
    let first_step = if resume {
        resume_point(&dbs.outbound.history()?, turn, resume).unwrap_or(0) + 1
    } else {
        1
    };
    let mut tx = dbs.outbound.transaction()?;
    for m in &batch.messages {
        tx.ack(m.seq, m.attempt(), AckStatus::Processing, None, now)?;
    }
    tx.set_kv(TURN_KEY, &record)?;
    tx.set_runner_state(&rows.model(first_step))?;
    tx.commit()?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use mailbox::{InboundKind, Route};
    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    fn msg(seq: i64, text: &str, trigger: bool, tries: u32) -> InboundMessage {
        InboundMessage {
            seq,
            id: format!("m{seq}"),
            kind: InboundKind::Chat,
            created_at: Utc::now(),
            status: InboundStatus::Pending,
            process_after: None,
            tries,
            trigger,
            route: Route::new("cli", "local"),
            sender_id: None,
            sender_name: None,
            content: json!({ "text": text }),
            error: None,
            detail: None,
        }
    }

    /// A chat message whose command the host authorised (it marks the row, as the router does).
    fn cmd(seq: i64, text: &str, trigger: bool, tries: u32) -> InboundMessage {
        let mut m = msg(seq, text, trigger, tries);
        let command = mailbox::command_of(text).unwrap();
        m.content[mailbox::COMMAND_FIELD] = json!(command);
        m
    }

    fn task(seq: i64, script: Option<&str>) -> InboundMessage {
        InboundMessage {
            kind: InboundKind::Task,
            content: json!({ "prompt": "check", "task_id": "task-1", "script": script }),
            ..msg(seq, "", true, 0)
        }
    }

    fn ack(seq: i64, attempt: u32, status: AckStatus) -> (i64, Ack) {
        (
            seq,
            Ack {
                id: seq,
                message_seq: seq,
                attempt,
                status,
                error: None,
                detail: None,
                at: Utc::now(),
            },
        )
    }

    fn seqs(decision: &Decision) -> (&'static str, Vec<i64>) {
        match decision {
            Decision::Idle => ("idle", vec![]),
            Decision::WaitForResume => ("wait", vec![]),
            Decision::DropRecord => ("drop", vec![]),
            Decision::Clear(m) => ("clear", m.iter().map(|m| m.seq).collect()),
            Decision::Compact(m) => ("compact", m.iter().map(|m| m.seq).collect()),
            Decision::Turn {
                turn,
                messages,
                resume,
            } => {
                let mut s = vec![*turn];
                s.extend(messages.iter().map(|m| m.seq));
                (if *resume { "resume" } else { "turn" }, s)
            }
        }
    }

    #[test]
    fn decisions() {
        let many: Vec<InboundMessage> = (1..=25).map(|i| msg(i * 2, "x", true, 0)).collect();
        let context_first: Vec<InboundMessage> =
            (1..=25).map(|i| msg(i * 2, "x", i == 23, 0)).collect();
        let record = TurnRecord {
            turn: 2,
            seqs: vec![2, 4],
        };
        type Case<'a> = (
            &'a str,
            Vec<InboundMessage>,
            Vec<(i64, Ack)>,
            Option<&'a TurnRecord>,
            Vec<i64>,
            (&'static str, Vec<i64>),
        );
        let cases: Vec<Case<'_>> = vec![
            (
                "nothing due",
                vec![],
                vec![],
                None,
                vec![],
                ("idle", vec![]),
            ),
            (
                "context only waits",
                vec![msg(2, "a", false, 0), msg(4, "b", false, 0)],
                vec![],
                None,
                vec![],
                ("idle", vec![]),
            ),
            (
                "context joins the trigger, oldest first",
                vec![
                    msg(2, "a", false, 0),
                    msg(4, "b", true, 0),
                    msg(6, "c", false, 0),
                ],
                vec![],
                None,
                vec![],
                ("turn", vec![2, 2, 4, 6]),
            ),
            (
                "already claimed in this attempt",
                vec![msg(2, "a", true, 0), msg(4, "b", true, 0)],
                vec![ack(2, 1, AckStatus::Processing)],
                None,
                vec![],
                ("turn", vec![4, 4]),
            ),
            (
                "stale ack of an older attempt",
                vec![msg(2, "a", true, 1)],
                vec![ack(2, 1, AckStatus::Processing)],
                None,
                vec![],
                ("turn", vec![2, 2]),
            ),
            (
                "batch cap",
                many,
                vec![],
                None,
                vec![],
                (
                    "turn",
                    std::iter::once(2).chain((1..=20).map(|i| i * 2)).collect(),
                ),
            ),
            (
                "context before the first trigger is never cut",
                context_first,
                vec![],
                None,
                vec![],
                (
                    "turn",
                    std::iter::once(2).chain((1..=23).map(|i| i * 2)).collect(),
                ),
            ),
            (
                "clear takes everything up to the last /clear",
                vec![
                    msg(2, "a", true, 0),
                    cmd(4, "/clear", true, 0),
                    msg(6, "b", true, 0),
                    cmd(8, "/CLEAR@bot", true, 0),
                    msg(10, "c", true, 0),
                ],
                vec![],
                None,
                vec![],
                ("clear", vec![2, 4, 6, 8]),
            ),
            (
                "a task with a script runs alone",
                vec![
                    msg(2, "ctx", false, 0),
                    task(4, Some("check.sh")),
                    msg(6, "a", true, 0),
                ],
                vec![],
                None,
                vec![],
                ("turn", vec![4, 4]),
            ),
            (
                "a later task with a script waits for its own batch",
                vec![
                    msg(2, "a", true, 0),
                    task(4, None),
                    task(6, Some("check.sh")),
                    msg(8, "b", true, 0),
                ],
                vec![],
                None,
                vec![],
                ("turn", vec![2, 2, 4]),
            ),
            (
                "after it, the rest as usual",
                vec![msg(2, "ctx", false, 0), msg(8, "b", true, 0)],
                vec![],
                None,
                vec![],
                ("turn", vec![2, 2, 8]),
            ),
            (
                "a blank script is no script",
                vec![task(4, Some("  ")), msg(6, "a", true, 0)],
                vec![],
                None,
                vec![],
                ("turn", vec![4, 4, 6]),
            ),
            (
                "/compact is answered alone, with the context rows before it",
                vec![
                    msg(2, "ctx", false, 0),
                    cmd(4, "/compact", true, 0),
                    msg(6, "a", true, 0),
                ],
                vec![],
                None,
                vec![],
                ("compact", vec![2, 4]),
            ),
            (
                "the turn before a /compact ends before it",
                vec![
                    msg(2, "a", true, 0),
                    cmd(4, "/Compact@bot", true, 0),
                    msg(6, "b", true, 0),
                ],
                vec![],
                None,
                vec![],
                ("turn", vec![2, 2]),
            ),
            (
                "an unaddressed /compact is only context",
                vec![cmd(2, "/compact", false, 0), msg(4, "a", true, 0)],
                vec![],
                None,
                vec![],
                ("turn", vec![2, 2, 4]),
            ),
            (
                "/clear wins over /compact",
                vec![cmd(2, "/compact", true, 0), cmd(4, "/clear", true, 0)],
                vec![],
                None,
                vec![],
                ("clear", vec![2, 4]),
            ),
            (
                "a /clear the host did not authorise is only text",
                vec![
                    msg(2, "a", true, 0),
                    msg(4, "/clear", false, 0),
                    msg(6, "/clear", true, 0),
                ],
                vec![],
                None,
                vec![],
                ("turn", vec![2, 2, 4, 6]),
            ),
            (
                "/clearx is not /clear",
                vec![msg(2, "/clearx", true, 0)],
                vec![],
                None,
                vec![],
                ("turn", vec![2, 2]),
            ),
            (
                "resume exactly the record's rows",
                vec![
                    msg(2, "a", true, 1),
                    msg(4, "b", true, 1),
                    msg(6, "c", true, 0),
                ],
                vec![
                    ack(2, 1, AckStatus::Processing),
                    ack(4, 1, AckStatus::Processing),
                ],
                Some(&record),
                vec![2, 4],
                ("resume", vec![2, 2, 4]),
            ),
            (
                "resume after the host failed one of them",
                vec![msg(4, "b", true, 1), msg(6, "c", true, 0)],
                vec![ack(4, 1, AckStatus::Processing)],
                Some(&record),
                vec![4],
                ("resume", vec![2, 4]),
            ),
            (
                "not yet re-queued: wait, start nothing newer",
                vec![
                    msg(2, "a", true, 0),
                    msg(4, "b", true, 0),
                    msg(6, "c", true, 0),
                ],
                vec![
                    ack(2, 1, AckStatus::Processing),
                    ack(4, 1, AckStatus::Processing),
                ],
                Some(&record),
                vec![2, 4],
                ("wait", vec![]),
            ),
            (
                "re-queued but backing off: wait",
                vec![msg(6, "c", true, 0)],
                vec![],
                Some(&record),
                vec![2, 4],
                ("wait", vec![]),
            ),
            (
                "record of rows the host settled",
                vec![msg(6, "c", true, 0)],
                vec![],
                Some(&record),
                vec![],
                ("drop", vec![]),
            ),
        ];
        for (case, due, acks, record, pending, want) in cases {
            let acks: HashMap<i64, Ack> = acks.into_iter().collect();
            let got = decide(&due, &acks, record, &pending);
            assert_eq!(seqs(&got), want, "{case}");
        }
    }

    #[test]
    fn origin_is_the_last_trigger() {
        let batch = Batch {
            turn: 2,
            messages: vec![
                msg(2, "a", true, 0),
                msg(4, "b", true, 0),
                msg(6, "c", false, 0),
            ],
            resume: false,
        };
        assert_eq!(batch.origin().map(|m| m.seq), Some(4));
    }

    #[test]
    fn what_joins_a_running_turn() {
        let claimed = [2, 4];
        let system = |seq| InboundMessage {
            kind: InboundKind::System,
            ..msg(seq, "notice", true, 0)
        };
        type Case = (
            &'static str,
            Vec<InboundMessage>,
            Vec<(i64, Ack)>,
            usize,
            Vec<i64>,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing new",
                vec![msg(2, "a", true, 0), msg(4, "b", true, 0)],
                vec![],
                18,
                vec![],
            ),
            (
                "new messages join, the turn's own do not again",
                vec![
                    msg(2, "a", true, 0),
                    msg(6, "c", true, 0),
                    msg(8, "d", true, 0),
                ],
                vec![],
                18,
                vec![6, 8],
            ),
            (
                "context rows join only with a trigger after them",
                vec![
                    msg(6, "c", false, 0),
                    msg(8, "d", true, 0),
                    msg(10, "e", false, 0),
                ],
                vec![],
                18,
                vec![6, 8],
            ),
            (
                "context rows alone wait",
                vec![msg(6, "c", false, 0)],
                vec![],
                18,
                vec![],
            ),
            (
                "a command keeps its place: nothing after it joins",
                vec![
                    msg(6, "c", true, 0),
                    cmd(8, "/clear", true, 0),
                    msg(10, "e", true, 0),
                ],
                vec![],
                18,
                vec![6],
            ),
            (
                "a /clear the host did not mark is plain text",
                vec![msg(6, "/clear", true, 0), msg(8, "d", true, 0)],
                vec![],
                18,
                vec![6, 8],
            ),
            (
                "a task or a host notice stops the run too",
                vec![task(6, None), msg(8, "d", true, 0)],
                vec![],
                18,
                vec![],
            ),
            (
                "a host notice",
                vec![system(6), msg(8, "d", true, 0)],
                vec![],
                18,
                vec![],
            ),
            (
                "a row claimed by this attempt already is not claimable",
                vec![msg(6, "c", true, 1), msg(8, "d", true, 0)],
                vec![ack(6, 2, AckStatus::Processing)],
                18,
                vec![8],
            ),
            (
                "at most the room left in the batch, ending at a trigger",
                vec![
                    msg(6, "c", true, 0),
                    msg(8, "d", false, 0),
                    msg(10, "e", true, 0),
                ],
                vec![],
                2,
                vec![6],
            ),
        ];
        for (case, due, acks, room, want) in cases {
            let acks: HashMap<i64, Ack> = acks.into_iter().collect();
            let got: Vec<i64> = steerable(&due, &acks, &claimed, room)
                .iter()
                .map(|m| m.seq)
                .collect();
            assert_eq!(got, want, "{case}");
        }
    }
}
