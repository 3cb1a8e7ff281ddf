//! `clawbox logs`: one line per event, a date line whenever the day changes.

use super::*;

/// Renders log entries one line each, with a date line whenever the day changes.
pub struct LogPrinter {
    timezone: Tz,
    day: Option<String>,
}

impl LogPrinter {
    pub fn new(timezone: Tz) -> Self {
        LogPrinter {
            timezone,
            day: None,
        }
    }

    pub fn print(&mut self, entry: &LogEntry) -> String {
        let local = entry.at.with_timezone(&self.timezone);
        let day = local.format("%Y-%m-%d (%Z)").to_string();
        let mut out = String::new();
        if self.day.as_ref() != Some(&day) {
            out.push_str(&format!("── {day}\n"));
            self.day = Some(day);
        }
        let (what, detail) = log_line(&entry.event, self.timezone);
        out.push_str(&format!(
            "{}  {:<12} {}\n",
            local.format("%H:%M:%S%.3f"),
            clean(&what),
            clean(&detail)
        ));
        out
    }
}

fn log_line(event: &LogEvent, timezone: Tz) -> (String, String) {
    match event {
        LogEvent::MessageIn {
            seq,
            kind,
            sender,
            text,
            trigger,
        } => {
            let from = match kind {
                InboundKind::Chat => sender.clone().unwrap_or_else(|| "someone".to_owned()),
                InboundKind::Task => "scheduled task".to_owned(),
                InboundKind::System => "host notice".to_owned(),
            };
            let context = if *trigger { "" } else { " (context only)" };
            (
                format!("in #{seq}"),
                format!("{from}: {}{context}", one_line(text, LOG_TEXT)),
            )
        }
        LogEvent::Claimed { seq, attempt } => (
            format!("claim #{seq}"),
            if *attempt > 1 {
                format!("attempt {attempt}")
            } else {
                "turn started".to_owned()
            },
        ),
        LogEvent::RunnerStarted { pid, model } => (
            "runner".to_owned(),
            format!("started (pid {pid}, model {model})"),
        ),
        LogEvent::RunnerReady { tools, problems } => {
            let mut detail = format!("ready with {}", plural(u64::from(*tools), "tool", "tools"));
            for p in problems {
                detail.push_str(&format!("; problem: {}", one_line(p, LOG_TEXT)));
            }
            ("runner".to_owned(), detail)
        }
        LogEvent::ModelStep {
            step,
            latency_ms,
            attempts,
            prompt_tokens,
            completion_tokens,
            tool_calls,
            ..
        } => {
            let tokens = |n: &Option<u64>| n.map_or_else(|| "?".to_owned(), thousands);
            let mut detail = format!(
                "step {step}: {} → {} tokens, {}",
                tokens(prompt_tokens),
                tokens(completion_tokens),
                millis(*latency_ms)
            );
            if *attempts > 1 {
                detail.push_str(&format!(" ({attempts} attempts)"));
            }
            detail.push_str(&match tool_calls {
                0 => ", answered".to_owned(),
                n => format!(", {}", plural(u64::from(*n), "tool call", "tool calls")),
            });
            ("model".to_owned(), detail)
        }
        LogEvent::ModelFailed {
            step,
            latency_ms,
            error,
            ..
        } => (
            "model".to_owned(),
            format!(
                "step {step} FAILED after {}: {}",
                millis(*latency_ms),
                one_line(error, LOG_TEXT)
            ),
        ),
        LogEvent::Compacted {
            turn,
            replaced,
            kept,
            tokens_before,
            tokens_after,
            archive,
        } => (
            "compacted".to_owned(),
            format!(
                "{} summarised, {} kept, {} → {} tokens{}; archive {archive}",
                plural(u64::from(*replaced), "entry", "entries"),
                thousands(u64::from(*kept)),
                thousands(*tokens_before),
                thousands(*tokens_after),
                turn.map_or_else(|| " (/compact)".to_owned(), |t| format!(" in turn {t}")),
            ),
        ),
        LogEvent::ToolCall {
            tool,
            duration_ms,
            ok,
            error,
            arguments,
            ..
        } => {
            // The arguments, shortened further: the line is about the call, the story and
            // `--json` carry the rest.
            let call = match arguments.as_deref().filter(|a| !a.is_empty() && *a != "{}") {
                Some(arguments) => format!("{tool} {}", one_line(arguments, TOOL_ARGUMENTS)),
                None => tool.clone(),
            };
            (
                "tool".to_owned(),
                match (ok, error) {
                    (true, _) => format!("{call} ok, {}", millis(*duration_ms)),
                    (false, e) => format!(
                        "{call} FAILED, {}: {}",
                        millis(*duration_ms),
                        one_line(e.as_deref().unwrap_or("no reason given"), LOG_TEXT)
                    ),
                },
            )
        }
        LogEvent::Reply {
            seq,
            in_reply_to,
            text,
            files,
            to,
        } => {
            let mut detail = match (to, in_reply_to) {
                (Some(to), _) => format!("to {to}: "),
                (None, Some(r)) => format!("to #{r}: "),
                (None, None) => String::new(),
            };
            detail.push_str(&one_line(text, LOG_TEXT));
            for f in files {
                detail.push_str(&format!(" [file {f}]"));
            }
            (format!("reply #{seq}"), detail)
        }
        LogEvent::Edit { seq, edit_of, text } => (
            format!("edit #{seq}"),
            format!(
                "of #{}: {}",
                edit_of.map_or_else(|| "?".to_owned(), |n| n.to_string()),
                one_line(text, LOG_TEXT)
            ),
        ),
        LogEvent::Reaction {
            seq,
            reaction_to,
            emoji,
        } => (
            format!("react #{seq}"),
            format!(
                "{emoji} to #{}",
                reaction_to.map_or_else(|| "?".to_owned(), |n| n.to_string())
            ),
        ),
        LogEvent::Request { seq, op } => (format!("request #{seq}"), clean(op)),
        LogEvent::Completed { seq } => (format!("done #{seq}"), "completed".to_owned()),
        LogEvent::Failed { seq, error } => (
            format!("failed #{seq}"),
            one_line(error.as_deref().unwrap_or("no reason given"), LOG_TEXT),
        ),
        LogEvent::Requeued {
            seq,
            tries,
            retry_at,
            reason,
        } => (
            format!("retry #{seq}"),
            format!(
                "attempt {tries} ended: {}; next attempt at {}",
                one_line(reason, LOG_TEXT),
                retry_at.with_timezone(&timezone).format("%H:%M:%S")
            ),
        ),
        LogEvent::Delivered { seq, attempts } => (
            format!("sent #{seq}"),
            if *attempts > 1 {
                format!("delivered (attempt {attempts})")
            } else {
                "delivered".to_owned()
            },
        ),
        LogEvent::DeliveryFailed {
            seq,
            error,
            gave_up,
        } => (
            format!("unsent #{seq}"),
            format!(
                "{}: {}",
                if *gave_up {
                    "delivery FAILED for good"
                } else {
                    "delivery failed, will retry"
                },
                one_line(error, LOG_TEXT)
            ),
        ),
        LogEvent::RunnerExited {
            exit,
            reason,
            unexpected,
            ..
        } => (
            "runner".to_owned(),
            match (reason, unexpected) {
                (Some(reason), _) => format!("stopped ({exit}): {reason}"),
                (None, true) => format!("CRASHED ({exit})"),
                (None, false) => format!("exited ({exit})"),
            },
        ),
    }
}
