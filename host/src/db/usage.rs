//! Model tokens per session and day (`token_usage`), recorded by the model proxy.

use rusqlite::{Connection, OptionalExtension, params};

use super::DbResult;

/// Tokens per session on `day` (`YYYY-MM-DD`).
pub fn token_usage_on(
    conn: &Connection,
    day: &str,
) -> DbResult<std::collections::HashMap<String, TokenUsage>> {
    let mut stmt = conn.prepare_cached(
        "SELECT session_id, prompt_tokens, completion_tokens, requests FROM token_usage WHERE day = ?1",
    )?;
    let rows = stmt.query_map([day], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    rows.map(|r| {
        let (session, p, c, n) = r?;
        Ok((
            session,
            TokenUsage {
                prompt_tokens: count(p),
                completion_tokens: count(c),
                requests: count(n),
            },
        ))
    })
    .collect()
}

/// Tokens of one session on one day, as the model proxy counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenUsage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub requests: u64,
}

impl TokenUsage {
    pub fn total(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// Adds one forwarded request and its tokens to the session's count for `day` (`YYYY-MM-DD`).
pub fn add_token_usage(
    conn: &Connection,
    session_id: &str,
    day: &str,
    prompt_tokens: u64,
    completion_tokens: u64,
) -> DbResult<()> {
    let clamp = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    conn.execute(
        "INSERT INTO token_usage (session_id, day, prompt_tokens, completion_tokens, requests)
         VALUES (?1, ?2, ?3, ?4, 1)
         ON CONFLICT (session_id, day) DO UPDATE SET
             prompt_tokens = prompt_tokens + excluded.prompt_tokens,
             completion_tokens = completion_tokens + excluded.completion_tokens,
             requests = requests + 1",
        params![
            session_id,
            day,
            clamp(prompt_tokens),
            clamp(completion_tokens)
        ],
    )?;
    Ok(())
}

/// The session's count for `day`; zero when it made no request that day.
pub fn token_usage(conn: &Connection, session_id: &str, day: &str) -> DbResult<TokenUsage> {
    let row = conn
        .query_row(
            "SELECT prompt_tokens, completion_tokens, requests FROM token_usage
             WHERE session_id = ?1 AND day = ?2",
            params![session_id, day],
            |r| {
                Ok((
                    r.get::<_, i64>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            },
        )
        .optional()?;
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    Ok(
        row.map_or_else(TokenUsage::default, |(p, c, n)| TokenUsage {
            prompt_tokens: count(p),
            completion_tokens: count(c),
            requests: count(n),
        }),
    )
}

/// Prompt plus completion tokens per agent and day from `since_day` (`YYYY-MM-DD`) on, as
/// `(agent id, day, tokens)` ordered by day then agent: the dashboard's chart.
pub fn token_usage_by_agent_day(
    conn: &Connection,
    since_day: &str,
) -> DbResult<Vec<(String, String, u64)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT s.agent_group_id, u.day, SUM(u.prompt_tokens + u.completion_tokens)
         FROM token_usage u JOIN sessions s ON s.id = u.session_id
         WHERE u.day >= ?1 GROUP BY s.agent_group_id, u.day ORDER BY u.day, s.agent_group_id",
    )?;
    let rows = stmt.query_map([since_day], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        ))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}
