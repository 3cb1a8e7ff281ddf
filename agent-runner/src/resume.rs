//! Where a turn continues after a crashed attempt: pure functions of the persisted history.
//! The claim uses them to record the activity of the turn's first step, the turn to skip the
//! steps already done.

use mailbox::outbound::HistoryEntry;
use serde_json::Value;

/// Where `turn` continues, given the history: `Some(steps)` when a resumed batch goes on after
/// the `steps` whole steps a crashed attempt persisted (0: only its user message), `None` when
/// the turn starts over (discarding whatever it wrote before). The claim uses this too, to record
/// the activity of the turn's first step.
pub fn resume_point(history: &[HistoryEntry], turn: i64, resume: bool) -> Option<u32> {
    if !resume {
        return None;
    }
    let own: Vec<&Value> = history
        .iter()
        .filter(|e| e.turn == turn)
        .map(|e| &e.message)
        .collect();
    (!own.is_empty() && resumable(&own))
        .then(|| own.iter().filter(|m| m["role"] == "assistant").count() as u32)
}

/// Whether a crashed attempt's persisted entries can be continued: they start with the user
/// message and every tool call has its result.
pub fn resumable(own: &[&Value]) -> bool {
    let Some(first) = own.first() else {
        return false;
    };
    if first["role"] != "user" {
        return false;
    }
    let mut waiting: Vec<&str> = Vec::new();
    for message in own {
        match message["role"].as_str() {
            Some("tool") => {
                let id = message["tool_call_id"].as_str().unwrap_or_default();
                let Some(at) = waiting.iter().position(|w| *w == id) else {
                    return false;
                };
                waiting.remove(at);
            }
            _ if !waiting.is_empty() => return false,
            Some("assistant") => {
                if let Some(calls) = message["tool_calls"].as_array() {
                    waiting.extend(calls.iter().filter_map(|c| c["id"].as_str()));
                }
            }
            _ => {}
        }
    }
    waiting.is_empty()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;
    use serde_json::json;

    use super::*;

    #[test]
    fn resumable_entries() {
        let user = json!({ "role": "user", "content": "hi" });
        let asks = json!({ "role": "assistant", "content": null, "tool_calls": [
            { "id": "a", "type": "function", "function": { "name": "f", "arguments": "{}" } },
            { "id": "b", "type": "function", "function": { "name": "f", "arguments": "{}" } },
        ]});
        let ra = json!({ "role": "tool", "tool_call_id": "a", "content": "ok" });
        let rb = json!({ "role": "tool", "tool_call_id": "b", "content": "ok" });
        let table: [(&str, Vec<&Value>, bool); 6] = [
            ("empty", vec![], false),
            ("user only", vec![&user], true),
            ("whole step", vec![&user, &asks, &ra, &rb], true),
            ("missing result", vec![&user, &asks, &ra], false),
            ("orphan result", vec![&user, &ra], false),
            ("no user message", vec![&asks, &ra, &rb], false),
        ];
        for (case, own, want) in table {
            assert_eq!(resumable(&own), want, "{case}");
        }
    }
}
