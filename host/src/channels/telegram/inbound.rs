//! A Telegram message as the router sees it: who sent it (the numeric id is the identity, the
//! username only an alias), where (chat, forum topic), whether it addresses this bot (a mention,
//! a `text_mention`, a reply to one of its messages, a `/command@bot`), its text or caption, and
//! the files it carries. Pure functions of the message and the bot's identity.

use teloxide::types::{Message, MessageEntityKind, User};

use crate::session::inbound_files::IncomingFile;
use crate::session::router::InboundEvent;

/// This bot, as `getMe` described it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotIdentity {
    pub id: u64,
    /// Without the `@`, lowercased.
    pub username: String,
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Route(Box<InboundEvent>),
    /// Not for the router; the reason is logged.
    Ignore(&'static str),
}

/// The user id as clawbox knows it.
pub fn user_id(user: &User) -> String {
    format!("telegram:{}", user.id.0)
}

/// Whether every entity starts and ends inside `text` on a character boundary, counted in
/// UTF-16 code units as Telegram counts them.
pub fn entities_fit(text: &str, entities: &[teloxide::types::MessageEntity]) -> bool {
    let mut boundaries = Vec::with_capacity(text.len() + 1);
    let mut at = 0usize;
    boundaries.push(0);
    for c in text.chars() {
        at += c.len_utf16();
        boundaries.push(at);
    }
    entities.iter().all(|e| {
        e.offset.checked_add(e.length).is_some_and(|end| {
            boundaries.binary_search(&e.offset).is_ok() && boundaries.binary_search(&end).is_ok()
        })
    })
}

/// A display name: the full name, with the username when there is one.
pub fn display_name(user: &User) -> String {
    match &user.username {
        Some(u) => format!("{} (@{u})", user.full_name()),
        None => user.full_name(),
    }
}

pub fn event_of(msg: &Message, me: &BotIdentity) -> Incoming {
    let Some(from) = &msg.from else {
        return Incoming::Ignore("no sender (a channel post or an anonymous admin)");
    };
    if from.id.0 == me.id {
        return Incoming::Ignore("the bot's own message");
    }
    if msg.chat.is_channel() {
        return Incoming::Ignore("a channel");
    }
    let text = msg.text().or(msg.caption()).unwrap_or_default();
    // teloxide slices the text at the entities' offsets and panics when one lies outside it,
    // which a client can send: entities are checked first, and a message whose entities do not
    // fit its text is read without them.
    let raw = msg
        .entities()
        .or(msg.caption_entities())
        .unwrap_or_default();
    let entities = if entities_fit(text, raw) {
        msg.parse_entities()
            .or_else(|| msg.parse_caption_entities())
            .unwrap_or_default()
    } else {
        tracing::warn!(
            chat_id = msg.chat.id.0,
            message_id = msg.id.0,
            "ignoring message entities that do not fit the text"
        );
        Vec::new()
    };
    let me_at = format!("@{}", me.username);
    // `/cmd@otherbot` in a group is addressed to another bot.
    if let Some(first) = entities.first()
        && first.start() == 0
        && matches!(first.kind(), MessageEntityKind::BotCommand)
        && let Some((_, target)) = first.text().split_once('@')
        && !target.eq_ignore_ascii_case(&me.username)
    {
        return Incoming::Ignore("a command for another bot");
    }
    let mentioned = entities.iter().any(|e| match e.kind() {
        MessageEntityKind::Mention => e.text().eq_ignore_ascii_case(&me_at),
        MessageEntityKind::TextMention { user } => user.id.0 == me.id,
        MessageEntityKind::BotCommand => e.text().to_lowercase().ends_with(&me_at.to_lowercase()),
        _ => false,
    });
    // In a forum topic every message "replies" to the topic's first message; only a real
    // reply to one of the bot's messages counts.
    let replied_to_bot = msg.reply_to_message().is_some_and(|r| {
        r.forum_topic_created().is_none() && r.from.as_ref().is_some_and(|u| u.id.0 == me.id)
    });

    let mut text = text.to_owned();
    let (files, description) = attachments(msg);
    if let Some(d) = description {
        text = if text.is_empty() {
            d
        } else {
            format!("{d}\n{text}")
        };
    }
    if text.trim().is_empty() && files.is_empty() {
        return Incoming::Ignore("no text or file (a service message)");
    }
    let thread_id = msg
        .is_topic_message
        .then_some(msg.thread_id)
        .flatten()
        .map(|t| t.0.0.to_string());
    Incoming::Route(Box::new(InboundEvent {
        channel_type: "telegram".into(),
        platform_id: msg.chat.id.0.to_string(),
        thread_id,
        message_id: msg.id.0.to_string(),
        sender_id: user_id(from),
        sender_name: Some(display_name(from)),
        sender_aliases: from
            .username
            .iter()
            .map(|u| format!("telegram:@{}", u.to_lowercase()))
            .collect(),
        text,
        is_mention: mentioned || replied_to_bot,
        is_group: msg.chat.is_group() || msg.chat.is_supergroup(),
        files,
        engaged_before: false,
    }))
}

fn mime<T: std::fmt::Display>(m: Option<&T>) -> Option<String> {
    m.map(ToString::to_string)
}

/// The files of a message, and a description of what it carries that is not text or a file
/// (a sticker, a location …).
fn attachments(msg: &Message) -> (Vec<IncomingFile>, Option<String>) {
    let file = |kind: &str,
                name: Option<&str>,
                fallback: &str,
                mime: Option<String>,
                size: u32,
                id: &str| IncomingFile {
        kind: kind.to_owned(),
        name: name.unwrap_or(fallback).to_owned(),
        mime,
        size: (size > 0).then_some(u64::from(size)),
        source: id.to_owned(),
    };
    if let Some(sizes) = msg.photo() {
        // The largest rendition; Telegram lists them smallest first.
        return match sizes
            .iter()
            .max_by_key(|p| u64::from(p.width) * u64::from(p.height))
        {
            Some(p) => (
                vec![file(
                    "photo",
                    None,
                    "photo.jpg",
                    Some("image/jpeg".into()),
                    p.file.size,
                    &p.file.id.0,
                )],
                None,
            ),
            None => (Vec::new(), None),
        };
    }
    if let Some(d) = msg.document() {
        return (
            vec![file(
                "document",
                d.file_name.as_deref(),
                "document",
                mime(d.mime_type.as_ref()),
                d.file.size,
                &d.file.id.0,
            )],
            None,
        );
    }
    if let Some(v) = msg.voice() {
        return (
            vec![file(
                "voice",
                None,
                "voice.ogg",
                mime(v.mime_type.as_ref()),
                v.file.size,
                &v.file.id.0,
            )],
            Some(format!("[voice note, {} s]", v.duration.seconds())),
        );
    }
    if let Some(a) = msg.audio() {
        return (
            vec![file(
                "audio",
                a.file_name.as_deref(),
                "audio.mp3",
                mime(a.mime_type.as_ref()),
                a.file.size,
                &a.file.id.0,
            )],
            None,
        );
    }
    if let Some(v) = msg.video() {
        return (
            vec![file(
                "video",
                v.file_name.as_deref(),
                "video.mp4",
                mime(v.mime_type.as_ref()),
                v.file.size,
                &v.file.id.0,
            )],
            None,
        );
    }
    if let Some(a) = msg.animation() {
        return (
            vec![file(
                "animation",
                a.file_name.as_deref(),
                "animation.mp4",
                mime(a.mime_type.as_ref()),
                a.file.size,
                &a.file.id.0,
            )],
            None,
        );
    }
    if let Some(v) = msg.video_note() {
        return (
            vec![file(
                "video",
                None,
                "video_note.mp4",
                Some("video/mp4".into()),
                v.file.size,
                &v.file.id.0,
            )],
            None,
        );
    }
    let description = if let Some(s) = msg.sticker() {
        Some(format!(
            "[sticker {}]",
            s.emoji.as_deref().unwrap_or_default()
        ))
    } else if let Some(l) = msg.location() {
        Some(format!("[location {:.6}, {:.6}]", l.latitude, l.longitude))
    } else if let Some(c) = msg.contact() {
        Some(format!(
            "[contact {} {}: {}]",
            c.first_name,
            c.last_name.as_deref().unwrap_or_default(),
            c.phone_number
        ))
    } else {
        msg.poll().map(|p| format!("[poll: {}]", p.question))
    };
    (Vec::new(), description)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use serde_json::{Value, json};

    use super::*;

    fn me() -> BotIdentity {
        BotIdentity {
            id: 42,
            username: "andy_bot".into(),
        }
    }

    fn message(extra: Value) -> Message {
        let mut m = json!({
            "message_id": 7, "date": 1_700_000_000,
            "chat": { "id": -100123, "type": "supergroup", "title": "team" },
            "from": { "id": 5, "is_bot": false, "first_name": "Ann", "last_name": "Lee", "username": "AnnL" },
        });
        for (k, v) in extra.as_object().unwrap() {
            m[k] = v.clone();
        }
        serde_json::from_value(m).unwrap()
    }

    fn routed(extra: Value) -> InboundEvent {
        match event_of(&message(extra), &me()) {
            Incoming::Route(e) => *e,
            Incoming::Ignore(why) => panic!("ignored: {why}"),
        }
    }

    fn entity(kind: &str, offset: usize, length: usize) -> Value {
        json!({ "type": kind, "offset": offset, "length": length })
    }

    #[test]
    fn entities_must_fit_the_text_in_utf16() {
        use teloxide::types::MessageEntity;
        let e = |offset, length| MessageEntity::bold(offset, length);
        let table = [
            ("hi", vec![e(0, 2)], true),
            ("hi", vec![e(0, 3)], false),
            ("hi", vec![e(50, 9)], false),
            ("hi", vec![e(usize::MAX, 2)], false),
            ("hi", vec![e(1, usize::MAX)], false),
            // 😀 is two UTF-16 units: offsets 1 and 3 split it or not.
            ("😀 ok", vec![e(0, 2)], true),
            ("😀 ok", vec![e(1, 2)], false),
            ("😀 ok", vec![e(3, 2)], true),
            ("", vec![], true),
            ("", vec![e(0, 0)], true),
        ];
        for (text, entities, fits) in table {
            assert_eq!(entities_fit(text, &entities), fits, "{text:?} {entities:?}");
        }
    }

    #[test]
    fn identity_is_the_numeric_id() {
        let e = routed(json!({ "text": "hi" }));
        assert_eq!(e.sender_id, "telegram:5");
        assert_eq!(e.sender_aliases, vec!["telegram:@annl".to_owned()]);
        assert_eq!(e.sender_name.as_deref(), Some("Ann Lee (@AnnL)"));
        assert_eq!(
            (e.platform_id.as_str(), e.message_id.as_str()),
            ("-100123", "7")
        );
        assert!(e.is_group);
        assert!(!e.is_mention);
    }

    #[test]
    fn what_counts_as_a_mention() {
        let table = [
            (
                json!({ "text": "@andy_bot hi", "entities": [entity("mention", 0, 9)] }),
                true,
            ),
            (
                json!({ "text": "@ANDY_BOT hi", "entities": [entity("mention", 0, 9)] }),
                true,
            ),
            (
                json!({ "text": "@other hi", "entities": [entity("mention", 0, 6)] }),
                false,
            ),
            (
                json!({ "text": "Andy hi", "entities": [{ "type": "text_mention", "offset": 0, "length": 4, "user": { "id": 42, "is_bot": true, "first_name": "Andy" } }] }),
                true,
            ),
            (
                json!({ "text": "/clear@andy_bot", "entities": [entity("bot_command", 0, 15)] }),
                true,
            ),
            (
                json!({ "text": "/clear", "entities": [entity("bot_command", 0, 6)] }),
                false,
            ),
            (
                json!({ "text": "yes", "reply_to_message": { "message_id": 3, "date": 1, "chat": { "id": -100123, "type": "supergroup", "title": "t" }, "from": { "id": 42, "is_bot": true, "first_name": "Andy" }, "text": "question?" } }),
                true,
            ),
            (
                json!({ "text": "yes", "reply_to_message": { "message_id": 3, "date": 1, "chat": { "id": -100123, "type": "supergroup", "title": "t" }, "from": { "id": 9, "is_bot": false, "first_name": "Bob" }, "text": "hm" } }),
                false,
            ),
            // A topic message points at the topic's first message, even when the bot made it.
            (
                json!({ "text": "hi", "message_thread_id": 3, "is_topic_message": true, "reply_to_message": { "message_id": 3, "date": 1, "chat": { "id": -100123, "type": "supergroup", "title": "t" }, "from": { "id": 42, "is_bot": true, "first_name": "Andy" }, "forum_topic_created": { "name": "x", "icon_color": 1 } } }),
                false,
            ),
        ];
        for (extra, want) in table {
            assert_eq!(routed(extra.clone()).is_mention, want, "{extra}");
        }
    }

    #[test]
    fn commands_for_other_bots_and_service_messages_are_ignored() {
        let m = message(
            json!({ "text": "/clear@other_bot", "entities": [entity("bot_command", 0, 16)] }),
        );
        assert_eq!(
            event_of(&m, &me()),
            Incoming::Ignore("a command for another bot")
        );
        let m = message(
            json!({ "new_chat_members": [{ "id": 9, "is_bot": false, "first_name": "B" }] }),
        );
        assert!(matches!(event_of(&m, &me()), Incoming::Ignore(_)));
        let mut m = message(json!({ "text": "x" }));
        m.from = None;
        assert!(matches!(event_of(&m, &me()), Incoming::Ignore(_)));
    }

    #[test]
    fn topics_are_threads() {
        let e = routed(json!({ "text": "hi", "message_thread_id": 77, "is_topic_message": true }));
        assert_eq!(e.thread_id.as_deref(), Some("77"));
        // A reply thread outside a forum is not a topic.
        let e = routed(json!({ "text": "hi", "message_thread_id": 77 }));
        assert_eq!(e.thread_id, None);
    }

    #[test]
    fn media_become_files_and_captions_text() {
        let e = routed(json!({
            "caption": "look @andy_bot", "caption_entities": [entity("mention", 5, 9)],
            "photo": [
                { "file_id": "small", "file_unique_id": "s", "width": 90, "height": 90, "file_size": 100 },
                { "file_id": "big", "file_unique_id": "b", "width": 800, "height": 600, "file_size": 5000 },
            ],
        }));
        assert_eq!(e.text, "look @andy_bot");
        assert!(e.is_mention);
        assert_eq!(e.files.len(), 1);
        assert_eq!(
            (e.files[0].source.as_str(), e.files[0].size),
            ("big", Some(5000))
        );
        let e = routed(
            json!({ "document": { "file_id": "d", "file_unique_id": "d", "file_name": "r.pdf", "mime_type": "application/pdf", "file_size": 10 } }),
        );
        assert_eq!(
            (e.files[0].kind.as_str(), e.files[0].name.as_str()),
            ("document", "r.pdf")
        );
        assert_eq!(e.files[0].mime.as_deref(), Some("application/pdf"));
        let e = routed(
            json!({ "voice": { "file_id": "v", "file_unique_id": "v", "duration": 3, "mime_type": "audio/ogg", "file_size": 10 } }),
        );
        assert_eq!(e.text, "[voice note, 3 s]");
        assert_eq!(e.files[0].name, "voice.ogg");
        let e = routed(json!({ "location": { "latitude": 52.5, "longitude": 13.4 } }));
        assert_eq!(e.text, "[location 52.500000, 13.400000]");
    }
}
