//! Questions from the agent to a person (`ask_user_question`): the request's arguments, their
//! rules, and the answer, shared by the tool that asks (mcp-tools) and the host that shows the
//! question and collects the answer. A question is a request ([`crate::request`]) whose answer
//! comes later: the host takes it, shows it (Telegram buttons, numbered options in the
//! terminal), and answers it with [`crate::InboundDb::answer_later`] when someone chose or the
//! time ran out.

use serde::{Deserialize, Serialize};

/// The request op.
pub const ASK_QUESTION: &str = "ask_question";

pub const MAX_OPTIONS: usize = 10;
/// A label has to fit a button on a phone.
pub const MAX_LABEL_CHARS: usize = 40;
pub const MAX_VALUE_CHARS: usize = 200;
pub const MAX_TITLE_CHARS: usize = 100;
pub const MAX_QUESTION_CHARS: usize = 2000;
pub const DEFAULT_TIMEOUT_S: u64 = 300;
pub const MIN_TIMEOUT_S: u64 = 10;
/// A day: longer questions would outlive most conversations' context.
pub const MAX_TIMEOUT_S: u64 = 86_400;

/// One option: what the person sees, and what the agent gets back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Choice {
    pub label: String,
    pub value: String,
}

/// The request's arguments, as the host receives them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AskQuestion {
    pub title: String,
    pub question: String,
    pub options: Vec<Choice>,
    pub timeout_s: u64,
}

impl AskQuestion {
    /// Checks the rules; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        let chars = |s: &str| s.chars().count();
        if self.title.trim().is_empty() {
            return Err("title is empty".into());
        }
        if chars(&self.title) > MAX_TITLE_CHARS {
            return Err(format!("title is longer than {MAX_TITLE_CHARS} characters"));
        }
        if self.question.trim().is_empty() {
            return Err("question is empty".into());
        }
        if chars(&self.question) > MAX_QUESTION_CHARS {
            return Err(format!(
                "question is longer than {MAX_QUESTION_CHARS} characters"
            ));
        }
        if self.options.is_empty() {
            return Err("options is empty: give at least one choice".into());
        }
        if self.options.len() > MAX_OPTIONS {
            return Err(format!(
                "{} options; at most {MAX_OPTIONS} fit (ask a narrower question)",
                self.options.len()
            ));
        }
        for (i, c) in self.options.iter().enumerate() {
            let n = i + 1;
            if c.label.trim().is_empty() {
                return Err(format!("option {n} has an empty label"));
            }
            if chars(&c.label) > MAX_LABEL_CHARS {
                return Err(format!(
                    "option {n}'s label {:?} is longer than {MAX_LABEL_CHARS} characters (it has to fit a button)",
                    c.label
                ));
            }
            if c.value.is_empty() || chars(&c.value) > MAX_VALUE_CHARS {
                return Err(format!(
                    "option {n}'s value must have 1 to {MAX_VALUE_CHARS} characters"
                ));
            }
            if self.options[..i].iter().any(|o| o.label == c.label) {
                return Err(format!("two options are labelled {:?}", c.label));
            }
        }
        if !(MIN_TIMEOUT_S..=MAX_TIMEOUT_S).contains(&self.timeout_s) {
            return Err(format!(
                "timeout_s must be between {MIN_TIMEOUT_S} and {MAX_TIMEOUT_S} (seconds)"
            ));
        }
        Ok(())
    }
}

/// How a question ended: the body of the host's answer to the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    Answered {
        value: String,
        label: String,
        /// `telegram:123`, `cli:local`.
        answered_by: String,
        answered_by_name: Option<String>,
        /// The inbound message that tells the agent the same (for when the tool that asked
        /// is gone); a tool that got the answer marks it handled, so it starts no second turn.
        notice_seq: Option<i64>,
    },
    /// Nobody chose in time; the question is withdrawn.
    Expired { timeout_s: u64 },
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn ask(options: &[(&str, &str)], timeout_s: u64) -> AskQuestion {
        AskQuestion {
            title: "Deploy".into(),
            question: "Where to?".into(),
            options: options
                .iter()
                .map(|(l, v)| Choice {
                    label: (*l).into(),
                    value: (*v).into(),
                })
                .collect(),
            timeout_s,
        }
    }

    #[test]
    fn rules() {
        assert_eq!(
            ask(&[("Staging", "staging"), ("Production", "prod")], 300).validate(),
            Ok(())
        );
        let long = "x".repeat(41);
        let table = [
            (ask(&[], 300), "options is empty"),
            (ask(&[("", "v")], 300), "empty label"),
            (ask(&[(long.as_str(), "v")], 300), "fit a button"),
            (ask(&[("A", "")], 300), "value must have"),
            (ask(&[("A", "a"), ("A", "b")], 300), "two options"),
            (ask(&[("A", "a")], 5), "timeout_s"),
            (ask(&[("A", "a"); 11], 300), "at most 10"),
        ];
        for (q, want) in table {
            let err = q.validate().unwrap_err();
            assert!(err.contains(want), "{err}");
        }
    }
}
