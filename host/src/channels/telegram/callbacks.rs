//! Inline buttons: answers to agents' questions (`q:<question id>:<option index>`, the rules are
//! questions.rs's) and approving unknown senders (`request_approval` chats). The owners and
//! admins of the agent get a card with Allow / Deny in their private chat with the bot (or, when
//! none of them can be reached there, in the chat the message came from); only they may press
//! it — anyone else gets a short alert and nothing changes. Allow makes the sender a member and
//! replays the held messages; Deny discards them and later messages of that sender are refused.
//! Every card is edited to show the outcome and who decided.
//!
//! Approval callback data is `ap:<approval id>:y|n`; all callback data stays well under
//! Telegram's 64 bytes.

use chrono::Utc;
use teloxide::payloads::{AnswerCallbackQuerySetters, SendMessageSetters};
use teloxide::prelude::*;
use teloxide::types::{CallbackQuery, InlineKeyboardButton, InlineKeyboardMarkup, ParseMode};

use super::format::escape_text;
use super::inbound::{display_name, user_id};
use super::poll::message_id;
use super::{call, thread_of};
use crate::db::{self, Decision};
use crate::session::questions::Pressed;
use crate::session::router::InboundEvent;

use super::poll::Chats;

const APPROVAL_PREFIX: &str = "ap:";
pub(super) const QUESTION_PREFIX: &str = "q:";

/// Sends the cards asking the agent's owners and admins about a held sender.
pub(super) async fn ask_approval(chats: &Chats, approval_id: &str, origin: &mailbox::Route) {
    let id = approval_id.to_owned();
    let loaded = chats
        .ctx()
        .db
        .call(move |conn| {
            let Some(a) = db::approval(conn, &id)? else {
                return Ok(None);
            };
            let agent = db::agent_group(conn, &a.agent_group_id)?
                .map_or_else(|| a.agent_group_id.clone(), |g| g.name);
            let deciders = db::users_with_roles(conn, &a.agent_group_id, &["owner", "admin"])?;
            let first = db::first_held_message(conn, &id)?;
            Ok(Some((a, agent, deciders, first)))
        })
        .await;
    let (approval, agent, deciders, first) = match loaded {
        Ok(Some(l)) => l,
        Ok(None) => return,
        Err(e) => {
            tracing::error!("Telegram: cannot load approval {approval_id}: {e}");
            return;
        }
    };
    let excerpt = first
        .and_then(|e: String| serde_json::from_str::<InboundEvent>(&e).ok())
        .map(|e| e.text.chars().take(300).collect::<String>())
        .unwrap_or_default();
    let who = approval
        .sender_name
        .as_deref()
        .unwrap_or(&approval.sender_id);
    let text = format!(
        "🔐 <b>{}</b> ({}) wants to talk to <b>{}</b> in chat {}:\n\n<blockquote>{}</blockquote>\n\nAllow them as a member?",
        escape_text(who),
        escape_text(&approval.sender_id),
        escape_text(&agent),
        escape_text(&origin.platform_id),
        escape_text(&excerpt),
    );
    let keyboard = InlineKeyboardMarkup::new(vec![vec![
        InlineKeyboardButton::callback("✅ Allow", format!("{APPROVAL_PREFIX}{approval_id}:y")),
        InlineKeyboardButton::callback("🚫 Deny", format!("{APPROVAL_PREFIX}{approval_id}:n")),
    ]]);
    let bot = chats.tg().bot();
    let mut cards = Vec::new();
    // Private chats with the deciders (a private chat's id is the user's id); a user who
    // never started the bot cannot be written to, which Telegram reports.
    for user in &deciders {
        let Some(numeric) = user
            .strip_prefix("telegram:")
            .and_then(|n| n.parse::<i64>().ok())
        else {
            continue;
        };
        let req = bot
            .send_message(ChatId(numeric), &text)
            .parse_mode(ParseMode::Html)
            .reply_markup(keyboard.clone());
        match chats.tg().paced(ChatId(numeric), &req).await {
            Ok(m) => cards.push((numeric.to_string(), m.id.0.to_string())),
            Err(e) => tracing::warn!(user, "Telegram: cannot send the approval card: {e}"),
        }
    }
    if cards.is_empty() {
        let Ok(chat) = origin.platform_id.parse::<i64>() else {
            return;
        };
        let mut req = bot
            .send_message(ChatId(chat), &text)
            .parse_mode(ParseMode::Html)
            .reply_markup(keyboard);
        if let Some(t) = thread_of(origin) {
            req = req.message_thread_id(t);
        }
        match chats.tg().paced(ChatId(chat), &req).await {
            Ok(m) => cards.push((chat.to_string(), m.id.0.to_string())),
            Err(e) => {
                tracing::error!(
                    "Telegram: no approval card could be sent for {}: {e}",
                    approval.sender_id
                );
            }
        }
    }
    let id = approval_id.to_owned();
    let recorded = chats
        .ctx()
        .db
        .call(move |conn| {
            for (chat, message) in &cards {
                db::add_approval_card(conn, &id, chat, message)?;
            }
            Ok(())
        })
        .await;
    if let Err(e) = recorded {
        tracing::error!("Telegram: cannot record approval cards: {e}");
    }
}

/// A button press.
pub(super) async fn handle(chats: &Chats, query: CallbackQuery) {
    let data = query.data.clone().unwrap_or_default();
    if let Some(rest) = data.strip_prefix(QUESTION_PREFIX) {
        answer_question(chats, &query, rest).await;
        return;
    }
    let Some(rest) = data.strip_prefix(APPROVAL_PREFIX) else {
        answer(chats, &query, "This button is no longer active.", false).await;
        return;
    };
    let Some((id, choice)) = rest.rsplit_once(':') else {
        answer(chats, &query, "This button is no longer active.", false).await;
        return;
    };
    let allow = choice == "y";
    let presser = user_id(&query.from);
    let presser_name = display_name(&query.from);
    let approval_id = id.to_owned();
    let pressed = chats
        .ctx()
        .db
        .call(move |conn| {
            let Some(a) = db::approval(conn, &approval_id)? else {
                return Ok(Press::Unknown);
            };
            let agent = db::agent_group(conn, &a.agent_group_id)?
                .map_or_else(|| a.agent_group_id.clone(), |g| g.name);
            let role = db::role_of(conn, &presser, &a.agent_group_id)?;
            if !matches!(role.as_deref(), Some("owner" | "admin")) {
                return Ok(Press::NotAllowed { agent });
            }
            let decision = db::decide_approval(conn, &approval_id, allow, &presser, Utc::now())?;
            Ok(Press::Decided {
                agent,
                decision: Box::new(decision),
            })
        })
        .await;
    let (agent, decision) = match pressed {
        Ok(Press::Decided { agent, decision }) => (agent, *decision),
        Ok(Press::Unknown) => (String::new(), Decision::Unknown),
        Ok(Press::NotAllowed { agent }) => {
            let text = format!("Only an owner or admin of {agent} can decide this.");
            answer(chats, &query, &text, true).await;
            return;
        }
        Err(e) => {
            tracing::error!("Telegram: cannot decide approval {id}: {e}");
            answer(
                chats,
                &query,
                "Something went wrong; please try again.",
                true,
            )
            .await;
            return;
        }
    };
    match decision {
        Decision::Unknown => {
            answer(chats, &query, "This request is no longer known.", false).await;
        }
        Decision::AlreadyDecided(a) => {
            answer(
                chats,
                &query,
                &format!("Already decided: {}.", a.status),
                false,
            )
            .await;
        }
        Decision::Decided { approval, held } => {
            let who = approval
                .sender_name
                .as_deref()
                .unwrap_or(&approval.sender_id);
            let outcome = if allow {
                format!(
                    "✅ {} may now talk to {} (allowed by {}).",
                    escape_text(who),
                    escape_text(&agent),
                    escape_text(&presser_name)
                )
            } else {
                format!(
                    "🚫 {} was not allowed to talk to {} (denied by {}).",
                    escape_text(who),
                    escape_text(&agent),
                    escape_text(&presser_name)
                )
            };
            answer(
                chats,
                &query,
                if allow { "Allowed." } else { "Denied." },
                false,
            )
            .await;
            for (chat, message) in &approval.cards {
                let (Ok(chat), Some(message)) = (chat.parse::<i64>(), message_id(message)) else {
                    continue;
                };
                // Editing without a keyboard removes the buttons.
                let req = chats
                    .tg()
                    .bot()
                    .edit_message_text(ChatId(chat), message, &outcome)
                    .parse_mode(ParseMode::Html);
                if let Err(e) = chats.tg().paced(ChatId(chat), &req).await {
                    tracing::warn!("Telegram: cannot update an approval card: {e}");
                }
            }
            for event in held {
                match serde_json::from_str::<InboundEvent>(&event) {
                    Ok(mut event) => {
                        event.engaged_before = true;
                        chats.route(event).await;
                    }
                    Err(e) => tracing::error!("Telegram: a held message cannot be read: {e}"),
                }
            }
        }
    }
}

/// A press on a question's option.
async fn answer_question(chats: &Chats, query: &CallbackQuery, data: &str) {
    let inactive = "This button is no longer active.";
    let Some((id, index)) = data
        .rsplit_once(':')
        .and_then(|(id, i)| Some((id, i.parse::<usize>().ok()?)))
    else {
        answer(chats, query, inactive, false).await;
        return;
    };
    let by = user_id(&query.from);
    let name = display_name(&query.from);
    let pressed =
        crate::session::questions::answer(&chats.ctx().supervisor, id, index, &by, Some(&name))
            .await;
    let (text, alert) = match pressed {
        Ok(Pressed::Answered(q)) => {
            let label = q.options.get(index).map_or("", |c| c.label.as_str());
            (format!("Noted: {label}"), false)
        }
        Ok(Pressed::Unknown | Pressed::NoSuchOption { .. }) => (inactive.to_owned(), false),
        Ok(Pressed::Closed(q)) if q.status == "expired" => {
            ("This question has expired.".to_owned(), false)
        }
        Ok(Pressed::Closed(_)) => ("This question was answered already.".to_owned(), false),
        Ok(Pressed::NotAllowed { asker }) => (
            format!("Only {asker} or an owner or admin of the agent can answer this."),
            true,
        ),
        Err(e) => {
            tracing::error!("Telegram: cannot record an answer: {e}");
            ("Something went wrong; please try again.".to_owned(), true)
        }
    };
    answer(chats, query, &text, alert).await;
}

/// What a press on an approval button found.
enum Press {
    Unknown,
    /// The presser is no owner or admin of the agent.
    NotAllowed {
        agent: String,
    },
    Decided {
        agent: String,
        decision: Box<Decision>,
    },
}

async fn answer(chats: &Chats, query: &CallbackQuery, text: &str, alert: bool) {
    let req = chats
        .tg()
        .bot()
        .answer_callback_query(query.id.clone())
        .text(text)
        .show_alert(alert);
    if let Err(e) = call(&req).await {
        tracing::warn!("Telegram: cannot answer a button press: {e}");
    }
}
