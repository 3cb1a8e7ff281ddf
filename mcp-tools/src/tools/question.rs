//! `ask_user_question`: asks the person the agent is talking to, and waits for the choice.
//! The question is a request to the host (`mailbox::questions`): the host shows it as buttons
//! (Telegram) or numbered options (the terminal), lets only the right people answer, and answers
//! the request when someone chose or the time ran out. The tool validates first, so a bad
//! question is refused before anyone sees it, and on an answer it marks the host's notice of the
//! same answer handled, so the agent does not get it a second time as a new message.

use std::time::Duration;

use chrono::Utc;
use mailbox::questions::{self, AskQuestion, Choice, Outcome};
use mailbox::request::{self, WaitError, WaitOptions};
use mailbox::{AckStatus, OutboundDb};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Deserialize;

use super::message::new_message_id;
use super::{Context, Tools};
use crate::error::{ToolError, tool_result};

/// Waited beyond the question's own timeout for the host to withdraw it.
const WITHDRAW_GRACE: Duration = Duration::from_secs(5);
/// How often a waiting question checks that the runner that asked is still there.
const ORPHAN_CHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AskUserQuestionArgs {
    /// A short heading, e.g. "Deploy".
    pub title: String,
    /// The question itself.
    pub question: String,
    /// The choices, 1 to 10: plain labels (the label is the value you get back), or
    /// `{"label": "Production", "value": "prod"}`. Labels at most 40 characters.
    pub options: Vec<OptionArg>,
    /// How long to wait for an answer, in seconds (10 to 86400; default 300).
    #[serde(default)]
    pub timeout_s: Option<u64>,
}

/// An option as the model may give it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum OptionArg {
    Label(String),
    Choice { label: String, value: String },
}

#[tool_router(router = question_router, vis = "pub(crate)")]
impl Tools {
    #[tool(
        description = "Ask the person you are talking to a question with fixed choices, and wait \
                       for their answer (buttons in Telegram, numbered options in the terminal). \
                       Returns the chosen value, or says that nobody answered in time. Use it \
                       before acting on something the person must decide.",
        annotations(read_only_hint = true, open_world_hint = true)
    )]
    async fn ask_user_question(
        &self,
        Parameters(args): Parameters<AskUserQuestionArgs>,
    ) -> CallToolResult {
        tool_result(
            "ask_user_question",
            ask_user_question(&self.ctx, args).await,
        )
    }
}

async fn ask_user_question(ctx: &Context, args: AskUserQuestionArgs) -> Result<String, ToolError> {
    let ask = AskQuestion {
        title: args.title,
        question: args.question,
        options: args
            .options
            .into_iter()
            .map(|o| match o {
                OptionArg::Label(label) => Choice {
                    value: label.clone(),
                    label,
                },
                OptionArg::Choice { label, value } => Choice { label, value },
            })
            .collect(),
        timeout_s: args.timeout_s.unwrap_or(questions::DEFAULT_TIMEOUT_S),
    };
    ask.validate().map_err(ToolError::InvalidQuestion)?;
    let body = serde_json::to_value(&ask).map_err(|e| ToolError::BadAnswer(e.to_string()))?;
    let session = ctx.session.clone();
    let wait = Duration::from_secs(ask.timeout_s) + WITHDRAW_GRACE;
    let answer = tokio::task::spawn_blocking(move || {
        let row = request::outbound(new_message_id(), questions::ASK_QUESTION, body);
        let seq = OutboundDb::open(&session)?.insert_message(&row, Utc::now())?;
        tracing::info!(seq, "question asked");
        // The runner that started this server. If it dies (a crash, a kill) this process is
        // orphaned: its answer would reach nobody, and acking the host's notice would hide
        // the answer from the runner that retries the turn. So the wait checks, in slices.
        let runner = std::os::unix::process::parent_id();
        let orphaned = || std::os::unix::process::parent_id() != runner;
        let started = std::time::Instant::now();
        let waited = loop {
            let left = wait.saturating_sub(started.elapsed());
            let slice = WaitOptions::with_timeout(left.min(ORPHAN_CHECK));
            match request::wait_for_response(&session.inbound_dir, seq, slice) {
                Err(WaitError::Timeout { .. }) if !left.is_zero() && !orphaned() => continue,
                other => break other,
            }
        };
        if orphaned() {
            tracing::warn!(
                seq,
                "the runner is gone; the question's answer is left to its successor"
            );
            return Err(ToolError::Refused(
                "the agent runner that asked is gone".into(),
            ));
        }
        match waited {
            Ok(answer) if answer.ok => {
                let outcome: Outcome = serde_json::from_value(answer.body)
                    .map_err(|e| ToolError::BadAnswer(e.to_string()))?;
                if let Outcome::Answered {
                    notice_seq: Some(notice),
                    ..
                } = &outcome
                {
                    // The answer is this tool's result; its notice must not start a turn.
                    OutboundDb::open(&session)?.ack(
                        *notice,
                        /*attempt*/ 1,
                        AckStatus::Completed,
                        None,
                        Utc::now(),
                    )?;
                }
                Ok(Some(outcome))
            }
            Ok(answer) => Err(ToolError::Refused(answer.error_text())),
            Err(WaitError::Timeout { .. }) => Ok(None),
            Err(WaitError::Mailbox(e)) => Err(ToolError::Mailbox(e)),
        }
    })
    .await??;
    Ok(describe(&ask, answer))
}

/// The result as the model reads it.
fn describe(ask: &AskQuestion, outcome: Option<Outcome>) -> String {
    match outcome {
        Some(Outcome::Answered {
            value,
            label,
            answered_by,
            answered_by_name,
            ..
        }) => {
            let who = answered_by_name.unwrap_or(answered_by);
            if value == label {
                format!("Answer: {value:?} (chosen by {who})")
            } else {
                format!("Answer: {value:?} (the option {label:?}, chosen by {who})")
            }
        }
        Some(Outcome::Expired { timeout_s }) => format!(
            "No answer: nobody chose within {timeout_s} s and the question {:?} was withdrawn. \
             Decide without it, or ask again later.",
            ask.title
        ),
        None => format!(
            "No answer: the question {:?} got no answer within {} s. Decide without it, or ask \
             again later.",
            ask.title, ask.timeout_s
        ),
    }
}
