//! The model endpoint: reachable, key accepted, and every model the agents use listed.

use super::*;

pub(super) async fn model_checks(
    config: &Config,
    agents: &[AgentInfo],
    timeout: Duration,
) -> Vec<Check> {
    let url = format!("{}/models", config.openai_base_url);
    let http = match reqwest::Client::builder().timeout(timeout).build() {
        Ok(http) => http,
        Err(e) => {
            return vec![Check::fail(
                "model endpoint",
                format!("cannot build an HTTP client: {e}"),
                "this is a bug or a broken TLS setup; please report it",
            )];
        }
    };
    let mut request = http.get(&url);
    if let Some(key) = &config.openai_api_key {
        request = request.bearer_auth(key);
    }
    let listing = match request.send().await {
        Err(e) => {
            return vec![Check::fail(
                "model endpoint",
                format!("cannot reach {url}: {}", error_chain(&e.without_url())),
                format!(
                    "is the model server running, and reachable from here? OPENAI_BASE_URL is \
                     {} (it includes /v1)",
                    config.openai_base_url
                ),
            )];
        }
        Ok(response) => {
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            judge_model_list(
                &url,
                status.as_u16(),
                &body,
                config.openai_api_key.is_some(),
            )
        }
    };
    let mut checks = vec![listing.check];
    if let Some(models) = listing.models {
        checks.extend(model_usage_checks(config, agents, &models, &url));
    }
    checks
}

/// What the model list said.
pub(super) struct Listing {
    pub(super) check: Check,
    /// The served models, when there was a list.
    pub(super) models: Option<Vec<String>>,
}

/// Judges `GET /models`. Pure, so the table of answers is a unit test.
pub(super) fn judge_model_list(url: &str, status: u16, body: &str, has_key: bool) -> Listing {
    const NAME: &str = "model endpoint";
    let check = match status {
        200 => match model_ids(body) {
            Some(models) => {
                return Listing {
                    check: Check::ok(
                        NAME,
                        match models.len() {
                            1 => format!("{url} lists 1 model"),
                            n => format!("{url} lists {n} models"),
                        },
                    ),
                    models: Some(models),
                };
            }
            None => Check::warn(
                NAME,
                format!("{url} answered, but not with a model list"),
                "the models cannot be checked; OPENAI_BASE_URL should be the API base including \
                 /v1",
            ),
        },
        401 | 403 => Check::fail(
            NAME,
            format!(
                "{url} refused the request (HTTP {status}): {}",
                excerpt(body)
            ),
            if has_key {
                "check OPENAI_API_KEY"
            } else {
                "set OPENAI_API_KEY: this endpoint needs a key"
            },
        ),
        404 | 405 => Check::warn(
            NAME,
            format!("{url} has no model list (HTTP {status})"),
            "fine for servers without one, but the models cannot be checked; make sure \
             OPENAI_BASE_URL includes /v1",
        ),
        _ => Check::fail(
            NAME,
            format!("{url} answered HTTP {status}: {}", excerpt(body)),
            "the model service has a problem, or OPENAI_BASE_URL points at something else",
        ),
    };
    Listing {
        check,
        models: None,
    }
}

/// `data[].id` of an OpenAI model list.
pub fn model_ids(body: &str) -> Option<Vec<String>> {
    let value: serde_json::Value = serde_json::from_str(body).ok()?;
    let data = value.get("data")?.as_array()?;
    Some(
        data.iter()
            .filter_map(|m| m.get("id")?.as_str().map(str::to_owned))
            .collect(),
    )
}

/// One check per model in use: `DEFAULT_MODEL` and each agent's own.
pub(super) fn model_usage_checks(
    config: &Config,
    agents: &[AgentInfo],
    served: &[String],
    url: &str,
) -> Vec<Check> {
    let mut used: Vec<(String, Vec<&str>)> = Vec::new();
    for agent in agents {
        let model = agent.model.as_deref().unwrap_or(&config.default_model);
        match used.iter_mut().find(|(m, _)| m == model) {
            Some((_, users)) => users.push(&agent.id),
            None => used.push((model.to_owned(), vec![&agent.id])),
        }
    }
    if !used.iter().any(|(m, _)| *m == config.default_model) {
        used.insert(0, (config.default_model.clone(), Vec::new()));
    }
    used.into_iter()
        .map(|(model, users)| {
            let name = format!("model {model}");
            let who = if users.is_empty() {
                "DEFAULT_MODEL".to_owned()
            } else {
                format!("used by {}", users.join(", "))
            };
            if is_listed(&model, served) {
                Check::ok(name, format!("served ({who})"))
            } else {
                let shown: Vec<&str> = served
                    .iter()
                    .take(HINT_MODELS)
                    .map(String::as_str)
                    .collect();
                let more = served.len().saturating_sub(HINT_MODELS);
                let available = match (shown.is_empty(), more) {
                    (true, _) => "it lists none".to_owned(),
                    (false, 0) => format!("it lists {}", shown.join(", ")),
                    (false, n) => format!("it lists {} and {n} more", shown.join(", ")),
                };
                Check::fail(
                    name,
                    format!("not listed by {url} ({who}); {available}"),
                    "set DEFAULT_MODEL, or the agent's model (`clawbox create-agent --agent-id \
                     <id> --model <name>`), to a listed one; an endpoint that accepts names it does \
                     not list (an alias) can ignore this",
                )
            }
        })
        .collect()
}

/// Listed as is, or as Ollama's `name:latest`.
pub fn is_listed(model: &str, served: &[String]) -> bool {
    served
        .iter()
        .any(|s| s == model || s.strip_suffix(":latest") == Some(model))
}
