//! Pairing codes: how a new user becomes an agent's owner from a private chat without knowing
//! their numeric Telegram id. `clawbox setup` (or `clawbox pair`) stores a code here; the user
//! sends it to the bot (`/start <code>`); the router redeems it: in one transaction the code is
//! spent, the sender becomes the agent's owner, and the private chat is wired to the agent.
//! Owns the codes, their expiry and the rate limit on guesses; deciding whether a message *is*
//! a pairing attempt is `session::router`'s.
//!
//! Only a SHA-256 hash of each code is stored, so a copy of the database (a backup) does not
//! hold a usable code. Every refusal (wrong, expired, spent) reads the same, so a guesser
//! learns nothing about which codes exist; guesses are limited per sender and in total.

use chrono::{DateTime, Duration, Utc};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use sha2::{Digest, Sha256};

use super::{DbResult, ts};

/// How long a code works.
pub const CODE_TTL: Duration = Duration::minutes(10);
/// The window of the rate limit on wrong codes.
pub const ATTEMPT_WINDOW: Duration = Duration::minutes(10);
/// Wrong codes one sender may send per window; further attempts are refused unchecked.
pub const MAX_ATTEMPTS_PER_SENDER: i64 = 5;
/// Wrong codes all senders together may send per window (many accounts guessing). With 31^8
/// possible codes, this bounds the chance of guessing a live one to about 4e-11 per window.
pub const MAX_ATTEMPTS_TOTAL: i64 = 30;
/// Characters of a code: no 0/O, 1/I/L, so a code read off a screen is typed right.
const ALPHABET: &[u8] = b"ABCDEFGHJKMNPQRSTUVWXYZ23456789";
/// Characters in a code.
pub const CODE_LEN: usize = 8;

/// A new code, shown once: `ABCD-EFGH`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCode {
    /// As shown to the user, with a dash in the middle.
    pub display: String,
    /// The same without the dash (a Telegram `start` deep-link parameter).
    pub compact: String,
    pub expires_at: DateTime<Utc>,
}

/// Who sends a code, and from which private chat.
#[derive(Debug, Clone, Copy)]
pub struct Claimant<'a> {
    pub channel_type: &'a str,
    /// The private chat's platform id (for Telegram, the user's own id).
    pub platform_id: &'a str,
    /// Stable id, `telegram:<numeric id>`.
    pub user_id: &'a str,
    pub display_name: Option<&'a str>,
}

/// The outcome of a redemption.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redeemed {
    /// The sender owns the agent now and the chat is wired to it.
    Paired {
        agent_id: String,
        agent_name: String,
    },
    /// Wrong, expired or already used: the same answer for all three.
    Refused,
    /// Too many wrong codes lately; this one was not looked at.
    TooManyAttempts,
}

/// Normalises what a user typed: case, spaces and dashes do not matter. `None` unless it has
/// the shape of a code.
pub fn normalize(text: &str) -> Option<String> {
    let code: String = text
        .chars()
        .filter(|c| !matches!(c, '-' | ' '))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    (code.len() == CODE_LEN && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(code)
}

fn hash(code: &str) -> String {
    Sha256::digest(code.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Creates a code for `agent_id`, valid for [`CODE_TTL`]; codes that expired are deleted.
/// `None` when there is no such agent.
pub fn create(conn: &Connection, agent_id: &str, now: DateTime<Utc>) -> DbResult<Option<NewCode>> {
    use rand::Rng;
    let exists = conn
        .query_row(
            "SELECT 1 FROM agent_groups WHERE id = ?1",
            [agent_id],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !exists {
        return Ok(None);
    }
    let mut rng = rand::rng();
    let compact: String = (0..CODE_LEN)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    let expires_at = now + CODE_TTL;
    conn.execute(
        "DELETE FROM pairing_codes WHERE expires_at <= ?1",
        [ts(now)],
    )?;
    conn.execute(
        "INSERT INTO pairing_codes (code_hash, agent_group_id, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4)",
        params![hash(&compact), agent_id, ts(now), ts(expires_at)],
    )?;
    Ok(Some(NewCode {
        display: format!("{}-{}", &compact[..CODE_LEN / 2], &compact[CODE_LEN / 2..]),
        compact,
        expires_at,
    }))
}

/// Tries `code` (as typed) for `who`. On success, in one transaction: the code is spent, the
/// sender is the agent's owner, the chat exists (private, strict) and is wired to the agent
/// (mention-sticky, which in a private chat answers every message), and the agent may send
/// to it (destination `<channel>-<chat id>`). Only the code's agent is wired: other agents
/// already wired to the chat stay as they are.
pub fn redeem(
    conn: &mut Connection,
    code: &str,
    who: Claimant<'_>,
    now: DateTime<Utc>,
) -> DbResult<Redeemed> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let since = ts(now - ATTEMPT_WINDOW);
    tx.execute("DELETE FROM pairing_attempts WHERE at <= ?1", [&since])?;
    let (mine, total): (i64, i64) = tx.query_row(
        "SELECT COUNT(*) FILTER (WHERE sender_id = ?1), COUNT(*) FROM pairing_attempts",
        [who.user_id],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    if mine >= MAX_ATTEMPTS_PER_SENDER || total >= MAX_ATTEMPTS_TOTAL {
        tx.commit()?;
        return Ok(Redeemed::TooManyAttempts);
    }
    let code_hash = normalize(code).map(|c| hash(&c));
    let found: Option<(String, String)> = match &code_hash {
        None => None,
        Some(code_hash) => tx
            .query_row(
                "SELECT p.agent_group_id, a.name FROM pairing_codes p
                 JOIN agent_groups a ON a.id = p.agent_group_id
                 WHERE p.code_hash = ?1 AND p.used_at IS NULL AND p.expires_at > ?2",
                params![code_hash, ts(now)],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?,
    };
    let Some((agent_id, agent_name)) = found else {
        tx.execute(
            "INSERT INTO pairing_attempts (sender_id, at) VALUES (?1, ?2)",
            params![who.user_id, ts(now)],
        )?;
        tx.commit()?;
        return Ok(Redeemed::Refused);
    };
    let now_s = ts(now);
    tx.execute(
        "UPDATE pairing_codes SET used_at = ?1, used_by = ?2 WHERE code_hash = ?3",
        params![now_s, who.user_id, code_hash],
    )?;
    let kind = who.user_id.split(':').next().unwrap_or("unknown");
    tx.execute(
        "INSERT INTO users (id, kind, display_name, created_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (id) DO UPDATE SET display_name = COALESCE(excluded.display_name, display_name)",
        params![who.user_id, kind, who.display_name, now_s],
    )?;
    tx.execute(
        "INSERT INTO user_roles (user_id, agent_group_id, role, granted_by, granted_at)
         VALUES (?1, ?2, 'owner', 'pairing', ?3)
         ON CONFLICT (user_id, agent_group_id) DO UPDATE SET role = 'owner'",
        params![who.user_id, agent_id, now_s],
    )?;
    let chat_id: String = match tx
        .query_row(
            "SELECT id FROM messaging_groups WHERE channel_type = ?1 AND platform_id = ?2",
            params![who.channel_type, who.platform_id],
            |r| r.get(0),
        )
        .optional()?
    {
        Some(id) => id,
        None => {
            let id = format!("mg:{}:{}", who.channel_type, who.platform_id);
            tx.execute(
                "INSERT INTO messaging_groups (id, channel_type, platform_id, name, is_group,
                                               unknown_sender_policy, created_at)
                 VALUES (?1, ?2, ?3, ?4, 0, 'strict', ?5)",
                params![
                    id,
                    who.channel_type,
                    who.platform_id,
                    who.display_name.unwrap_or(who.platform_id),
                    now_s
                ],
            )?;
            id
        }
    };
    tx.execute(
        "INSERT OR IGNORE INTO wirings (id, messaging_group_id, agent_group_id, engage_mode,
                                        sticky_window_s, created_at)
         VALUES (?1, ?2, ?3, 'mention-sticky', ?4, ?5)",
        params![
            format!("wire:{chat_id}:{agent_id}"),
            chat_id,
            agent_id,
            /*sticky_window_s*/ 30 * 60,
            now_s
        ],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO destinations (agent_group_id, name, display_name, channel_type,
                                             platform_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            agent_id,
            format!("{}-{}", who.channel_type, who.platform_id),
            who.display_name,
            who.channel_type,
            who.platform_id,
            now_s
        ],
    )?;
    tx.commit()?;
    Ok(Redeemed::Paired {
        agent_id,
        agent_name,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::db::Db;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("c.db")).unwrap();
        db.conn
            .lock()
            .unwrap()
            .execute_batch(
                "INSERT INTO agent_groups (id, name, folder, created_at) VALUES ('andy', 'Andy', 'andy', 'x');",
            )
            .unwrap();
        (dir, db)
    }

    fn who(user: &str) -> Claimant<'_> {
        Claimant {
            channel_type: "telegram",
            platform_id: user.trim_start_matches("telegram:"),
            user_id: user,
            display_name: Some("Olga"),
        }
    }

    #[test]
    fn codes_have_one_shape_and_typing_does_not_matter() {
        for (typed, want) in [
            ("ABCD-EFGH", Some("ABCDEFGH")),
            ("abcd efgh", Some("ABCDEFGH")),
            ("  abcdefgh ", Some("ABCDEFGH")),
            ("ABCDEFG", None),
            ("ABCDEFGHJ", None),
            // 0, O, 1, I and L are never in a code.
            ("ABCDEFG0", None),
            ("HELLOBOB", None),
            ("", None),
            ("ABCD-EFGÄ", None),
        ] {
            assert_eq!(normalize(typed).as_deref(), want, "{typed:?}");
        }
    }

    #[test]
    fn a_code_pairs_once_and_wires_only_its_agent() {
        let (_dir, db) = db();
        {
            let conn = &mut *db.conn.lock().unwrap();
            let now = Utc::now();
            let code = create(conn, "andy", now).unwrap().unwrap();
            assert_eq!(normalize(&code.display), Some(code.compact.clone()));
            assert_eq!(code.expires_at, now + CODE_TTL);
            // Only the hash is stored.
            let stored: String = conn
                .query_row("SELECT code_hash FROM pairing_codes", [], |r| r.get(0))
                .unwrap();
            assert!(!stored.contains(&code.compact));
            let paired =
                redeem(conn, &code.display.to_lowercase(), who("telegram:100"), now).unwrap();
            assert_eq!(
                paired,
                Redeemed::Paired {
                    agent_id: "andy".into(),
                    agent_name: "Andy".into()
                }
            );
            assert_eq!(
                crate::db::role_of(conn, "telegram:100", "andy")
                    .unwrap()
                    .as_deref(),
                Some("owner")
            );
            let chat = crate::db::messaging_group_by_platform(conn, "telegram", "100")
                .unwrap()
                .unwrap();
            let wirings = crate::db::wirings_of(conn, &chat.id).unwrap();
            assert_eq!(wirings.len(), 1);
            assert_eq!(wirings[0].agent_group_id, "andy");
            // Spent: a second use (by anyone) is refused.
            assert_eq!(
                redeem(conn, &code.compact, who("telegram:200"), now).unwrap(),
                Redeemed::Refused
            );
            assert_eq!(
                crate::db::role_of(conn, "telegram:200", "andy").unwrap(),
                None
            );
        }
    }

    #[test]
    fn expired_and_wrong_codes_are_refused_alike() {
        let (_dir, db) = db();
        {
            let conn = &mut *db.conn.lock().unwrap();
            let then = Utc::now() - CODE_TTL - Duration::seconds(1);
            let old = create(conn, "andy", then).unwrap().unwrap();
            let now = Utc::now();
            assert_eq!(
                redeem(conn, &old.compact, who("telegram:100"), now).unwrap(),
                Redeemed::Refused
            );
            assert_eq!(
                redeem(conn, "ZZZZ-ZZZZ", who("telegram:100"), now).unwrap(),
                Redeemed::Refused
            );
            assert_eq!(
                redeem(conn, "not a code at all", who("telegram:100"), now).unwrap(),
                Redeemed::Refused
            );
            assert_eq!(
                crate::db::role_of(conn, "telegram:100", "andy").unwrap(),
                None
            );
            // Creating a new code clears the expired one.
            create(conn, "andy", now).unwrap();
            let left: i64 = conn
                .query_row("SELECT COUNT(*) FROM pairing_codes", [], |r| r.get(0))
                .unwrap();
            assert_eq!(left, 1);
            assert_eq!(create(conn, "nobody", now).unwrap(), None);
        }
    }

    #[test]
    fn guesses_are_limited_per_sender_and_in_total() {
        let (_dir, db) = db();
        {
            let conn = &mut *db.conn.lock().unwrap();
            let now = Utc::now();
            let code = create(conn, "andy", now).unwrap().unwrap();
            for _ in 0..MAX_ATTEMPTS_PER_SENDER {
                assert_eq!(
                    redeem(conn, "ZZZZ-ZZZZ", who("telegram:300"), now).unwrap(),
                    Redeemed::Refused
                );
            }
            // Now even the right code is not looked at for this sender, and stays unspent.
            assert_eq!(
                redeem(conn, &code.compact, who("telegram:300"), now).unwrap(),
                Redeemed::TooManyAttempts
            );
            // After the window the sender may try again.
            let later = now + ATTEMPT_WINDOW + Duration::seconds(1);
            assert_eq!(
                redeem(conn, "ZZZZ-ZZZZ", who("telegram:300"), later).unwrap(),
                Redeemed::Refused
            );
            // Many senders together hit the total limit.
            let mut refused = 0;
            for n in 0..MAX_ATTEMPTS_TOTAL {
                let user = format!("telegram:{}", 1000 + n);
                if redeem(conn, "ZZZZ-ZZZZ", who(&user), later).unwrap() == Redeemed::Refused {
                    refused += 1;
                }
            }
            assert_eq!(refused, MAX_ATTEMPTS_TOTAL - 1);
            assert_eq!(
                redeem(conn, &code.compact, who("telegram:100"), later).unwrap(),
                Redeemed::TooManyAttempts
            );
            // Once the window has passed, a code works again.
            let much_later = later + ATTEMPT_WINDOW + Duration::seconds(1);
            let fresh = create(conn, "andy", much_later).unwrap().unwrap();
            assert!(matches!(
                redeem(conn, &fresh.compact, who("telegram:100"), much_later).unwrap(),
                Redeemed::Paired { .. }
            ));
        }
    }
}
