//! `send_message`: writes a chat message into `outbound.db` for the host to deliver. Owns the
//! choice of route; delivery, the destination ACL and retries are the host's.

use chrono::Utc;
use mailbox::{Destination, InboundReader, NewOutbound, OutboundDb, OutboundKind, Route};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use serde::Deserialize;

use crate::error::{ToolError, tool_result};
use crate::server::{Context, Tools};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct SendMessageArgs {
    /// The message text, as the recipient should read it.
    pub text: String,
    /// Name of the destination to send to, as listed in your context. Leave it out to write to
    /// the chat this conversation comes from.
    #[serde(default)]
    pub to: Option<String>,
}

#[tool_router(router = message_router, vis = "pub(crate)")]
impl Tools {
    #[tool(
        description = "Send a chat message right away, while you keep working: a progress \
                       update in this chat, or a message to another destination (`to`). Your \
                       final answer at the end of the turn is delivered without this tool. \
                       Returns the message id.",
        annotations(destructive_hint = false, open_world_hint = true)
    )]
    async fn send_message(&self, Parameters(args): Parameters<SendMessageArgs>) -> CallToolResult {
        tool_result("send_message", send_message(&self.ctx, args).await)
    }
}

async fn send_message(ctx: &Context, args: SendMessageArgs) -> Result<String, ToolError> {
    if args.text.trim().is_empty() {
        return Err(ToolError::EmptyText);
    }
    // An empty `to` is how some models say "no destination".
    let to = args
        .to
        .map(|to| to.trim().to_owned())
        .filter(|to| !to.is_empty());
    let session = ctx.session.clone();
    // SQLite is blocking: keep it off the async threads.
    tokio::task::spawn_blocking(move || {
        // Opened per call: the host rewrites routing and destinations at any time.
        let inbound = InboundReader::open(&session.inbound_db())?;
        let route = choose_route(to.as_deref(), inbound.routing()?, &inbound.destinations()?)?;
        let message = NewOutbound {
            id: message_id(),
            kind: OutboundKind::Chat,
            in_reply_to: None,
            route,
            content: serde_json::json!({ "text": args.text }),
        };
        let seq = OutboundDb::open(&session)?.insert_message(&message, Utc::now())?;
        tracing::info!(seq, id = %message.id, to = ?to, "message written");
        Ok(match to {
            Some(name) => format!("sent to {name} (id {seq})"),
            None => format!("sent (id {seq})"),
        })
    })
    .await?
}

/// `out-` and 128 random bits: unique without coordinating with agent-runner's ids.
fn message_id() -> String {
    format!("out-{:032x}", rand::random::<u128>())
}

/// The route of a message: the destination named `to`, or the session's own chat.
///
/// A named destination on the session's own chat keeps the session's thread (so a reply to
/// "this chat" by name lands in the same topic); one elsewhere uses its own route.
fn choose_route(
    to: Option<&str>,
    session: Option<Route>,
    destinations: &[Destination],
) -> Result<Route, ToolError> {
    let names = || destinations.iter().map(|d| d.name.clone()).collect();
    let Some(name) = to else {
        return session.ok_or_else(|| ToolError::NoDefaultRoute { valid: names() });
    };
    let Some(dest) = destinations.iter().find(|d| d.name == name) else {
        return Err(ToolError::UnknownDestination {
            name: name.to_owned(),
            valid: names(),
        });
    };
    let mut route = dest.route.clone();
    if let Some(session) = session
        && route.thread_id.is_none()
        && route.channel_type == session.channel_type
        && route.platform_id == session.platform_id
    {
        route.thread_id = session.thread_id;
    }
    Ok(route)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn route(channel: &str, platform: &str, thread: Option<&str>) -> Route {
        Route {
            channel_type: channel.into(),
            platform_id: platform.into(),
            thread_id: thread.map(Into::into),
        }
    }

    fn dest(name: &str, route: Route) -> Destination {
        Destination {
            name: name.into(),
            display_name: None,
            route,
        }
    }

    #[test]
    fn route_choice() {
        let session = Some(route("telegram", "100", Some("7")));
        let dests = [
            dest("family", route("telegram", "100", None)),
            dest("work", route("telegram", "200", None)),
            dest("topic", route("telegram", "100", Some("9"))),
        ];
        /// (to, session routing, route or error)
        type Case = (
            Option<&'static str>,
            Option<Route>,
            Result<Route, &'static str>,
        );
        let table: [Case; 6] = [
            (
                None,
                session.clone(),
                Ok(route("telegram", "100", Some("7"))),
            ),
            (
                Some("family"),
                session.clone(),
                Ok(route("telegram", "100", Some("7"))),
            ),
            (
                Some("work"),
                session.clone(),
                Ok(route("telegram", "200", None)),
            ),
            (
                Some("topic"),
                session.clone(),
                Ok(route("telegram", "100", Some("9"))),
            ),
            (
                Some("nope"),
                session,
                Err("unknown destination \"nope\"; valid destinations: family, work, topic"),
            ),
            (
                None,
                None,
                Err(
                    "this session has no default chat to reply to; pass `to`: valid destinations: family, work, topic",
                ),
            ),
        ];
        for (to, session, want) in table {
            let got = choose_route(to, session, &dests).map_err(|e| e.to_string());
            assert_eq!(got, want.map_err(str::to_owned), "{to:?}");
        }
        assert_eq!(
            choose_route(Some("x"), None, &[]).unwrap_err().to_string(),
            "unknown destination \"x\"; this session has no destinations"
        );
    }

    #[test]
    fn message_ids_are_distinct() {
        let (a, b) = (message_id(), message_id());
        assert_ne!(a, b);
        assert!(a.starts_with("out-") && a.len() == 36, "{a}");
    }
}
