//! The Telegram token, checked with `getMe` and never shown.

use super::*;

pub(super) async fn telegram_check(config: &Config) -> Check {
    const NAME: &str = "telegram";
    let Some(token) = &config.telegram_bot_token else {
        return Check::ok(NAME, "TELEGRAM_BOT_TOKEN is not set: no Telegram bot");
    };
    let api = &config.telegram_api_url;
    let http = match reqwest::Client::builder().timeout(HTTP_TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("cannot build an HTTP client: {e}"),
                "this is a bug or a broken TLS setup; please report it",
            );
        }
    };
    // The token is part of the URL: never let it into a message.
    let response = match http.get(format!("{api}/bot{token}/getMe")).send().await {
        Ok(response) => response,
        Err(e) => {
            return Check::fail(
                NAME,
                format!(
                    "cannot reach the Bot API at {api}: {}",
                    redact(&error_chain(&e.without_url()), token)
                ),
                "check this machine's access to the Bot API (or TELEGRAM_API_URL)",
            );
        }
    };
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    judge_get_me(status, &body, token)
}

/// Judges Telegram's answer to `getMe`. Pure.
pub(super) fn judge_get_me(status: u16, body: &str, token: &str) -> Check {
    const NAME: &str = "telegram";
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    if status == 200 && value["ok"] == true {
        let bot = &value["result"];
        let username = bot["username"].as_str().unwrap_or("?");
        return Check::ok(
            NAME,
            format!("token valid: bot @{username} (id {})", bot["id"]),
        );
    }
    let description = value["description"]
        .as_str()
        .map_or_else(|| excerpt(body), str::to_owned);
    let description = redact(&description, token);
    match status {
        401 | 404 => Check::fail(
            NAME,
            format!("Telegram refused TELEGRAM_BOT_TOKEN (HTTP {status}: {description})"),
            "copy the token again from @BotFather (/mybots → API Token); it looks like \
             123456789:AA…",
        ),
        _ => Check::fail(
            NAME,
            format!("getMe failed (HTTP {status}: {description})"),
            "retry later; if it persists, check TELEGRAM_API_URL",
        ),
    }
}

pub(super) fn redact(text: &str, token: &str) -> String {
    if token.is_empty() {
        text.to_owned()
    } else {
        text.replace(token, "<TELEGRAM_BOT_TOKEN>")
    }
}
