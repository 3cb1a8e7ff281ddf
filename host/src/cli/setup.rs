//! `clawbox setup`, the first-run wizard, and `clawbox pair`. Setup asks for the model endpoint,
//! its key and the model, and the Telegram bot token; checks each live (`GET /models`, whose
//! list it offers; `getMe`); writes them into the config home's `.env` through `envfile.rs`
//! (edited in place, mode 0600); and prints a pairing code (`db::pairing`), which the running
//! host's router redeems when the user sends it to the bot. `--non-interactive` takes the
//! values from flags and fails where it would have asked.
//!
//! Prompts are plain lines on stdin and stdout, so a script (or a test) can also answer them
//! through a pipe. Secrets are never echoed back in full: a key is shown as its last four
//! characters, and the bot token never appears in an error (it is part of the Bot API URL).

use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;

use crate::cli::envfile::{EnvFile, EnvFileError};
use crate::cli::provision::{self, ProvisionError};
use crate::config::{Config, Home, HomeSource};
use crate::db::{self, bootstrap::DEFAULT_AGENT};
use crate::report::doctor::{is_listed, model_ids};

/// One live check (model list, `getMe`).
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// Models listed by number, at most.
const SHOWN_MODELS: usize = 30;
const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";
const DEFAULT_MODEL: &str = "gpt-4o";
const DEFAULT_TELEGRAM_API: &str = "https://api.telegram.org";

/// Flags of `clawbox setup`. Without `--non-interactive` they become the defaults offered.
#[derive(Debug, Default, clap::Args)]
pub struct SetupArgs {
    /// Ask nothing: take the flags' values, keep what `.env` has for the rest, and fail (exit
    /// status 1, nothing written) where a check fails.
    #[arg(long)]
    pub non_interactive: bool,
    /// The model endpoint (OPENAI_BASE_URL), including `/v1`.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
    /// The endpoint's key (OPENAI_API_KEY); `""` removes it.
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// The model (DEFAULT_MODEL); it must be one the endpoint lists.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    /// Accept a model the endpoint does not list (an alias it accepts anyway).
    #[arg(long)]
    pub allow_unknown_model: bool,
    /// The Telegram bot token from @BotFather (TELEGRAM_BOT_TOKEN); `""` turns Telegram off.
    #[arg(long, value_name = "TOKEN")]
    pub telegram_token: Option<String>,
    /// Print no pairing code.
    #[arg(long)]
    pub no_pair: bool,
    /// The agent a pairing code makes you the owner of.
    #[arg(long, value_name = "ID", default_value = DEFAULT_AGENT)]
    pub agent_id: String,
}

/// Flags of `clawbox pair`.
#[derive(Debug, clap::Args)]
pub struct PairArgs {
    /// The agent the code makes its sender the owner of.
    #[arg(long, value_name = "ID", default_value = DEFAULT_AGENT)]
    pub agent_id: String,
}

/// Why setup stopped; [`run`] maps each to an exit status.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    /// A flag's value is unusable (exit status 2); nothing was written.
    #[error("{0}")]
    Usage(String),
    /// A live check failed in `--non-interactive` mode (exit status 1); nothing was written.
    #[error("{0}")]
    Check(String),
    /// The input ended before setup was done (exit status 1); nothing was written.
    #[error("input ended; .env was not changed")]
    Cancelled,
    #[error(transparent)]
    EnvFile(#[from] EnvFileError),
    /// Reading the terminal or writing to it failed.
    #[error("terminal: {0}")]
    Terminal(#[from] std::io::Error),
}

/// Runs `clawbox setup`; what it prints is its whole user interface.
pub fn run(rt: &tokio::runtime::Runtime, home: &Home, args: SetupArgs) -> ExitCode {
    let stdin = std::io::stdin();
    let mut ui = Ui {
        input: Box::new(stdin.lock()),
        interactive: !args.non_interactive,
    };
    match setup(rt, home, &args, &mut ui) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = match e {
                SetupError::Usage(_) => 2,
                _ => 1,
            };
            // stderr may be gone (a closed pipe); nothing is left to report to then.
            let _ = writeln!(std::io::stderr(), "clawbox setup: {e}");
            ExitCode::from(code)
        }
    }
}

/// Prompts on stdin/stdout.
struct Ui {
    input: Box<dyn BufRead>,
    interactive: bool,
}

impl Ui {
    /// Asks one question; an empty answer takes `default`.
    fn ask(&mut self, question: &str, default: Option<&str>) -> Result<String, SetupError> {
        let mut out = std::io::stdout().lock();
        match default {
            Some(d) if !d.is_empty() => write!(out, "{question} [{d}]: ")?,
            _ => write!(out, "{question}: ")?,
        }
        out.flush()?;
        let mut line = String::new();
        if self.input.read_line(&mut line)? == 0 {
            writeln!(out)?;
            return Err(SetupError::Cancelled);
        }
        let answer = line.trim();
        Ok(if answer.is_empty() {
            default.unwrap_or_default().to_owned()
        } else {
            answer.to_owned()
        })
    }

    fn yes(&mut self, question: &str, default: bool) -> Result<bool, SetupError> {
        loop {
            let hint = if default { "Y/n" } else { "y/N" };
            let answer = self.ask(&format!("{question} ({hint})"), None)?;
            match answer.to_lowercase().as_str() {
                "" => return Ok(default),
                "y" | "yes" => return Ok(true),
                "n" | "no" => return Ok(false),
                _ => println!("  please answer y or n"),
            }
        }
    }
}

/// A secret as it may be shown: its last four characters.
fn masked(secret: &str) -> String {
    let chars: Vec<char> = secret.chars().collect();
    if chars.len() <= 8 {
        "(set)".to_owned()
    } else {
        let tail: String = chars[chars.len() - 4..].iter().collect();
        format!("…{tail}")
    }
}

fn setup(
    rt: &tokio::runtime::Runtime,
    home: &Home,
    args: &SetupArgs,
    ui: &mut Ui,
) -> Result<(), SetupError> {
    let mut env = EnvFile::read(&home.env_file())?;
    let found = match home.source {
        HomeSource::Variable => "from CLAWBOX_HOME",
        HomeSource::DotEnv => "where .env was found",
        HomeSource::UserConfig => "the user's default",
        HomeSource::WorkingDir => "the working directory (no HOME)",
    };
    println!(
        "Config home: {} ({found}); settings go to {}{}.",
        home.dir.display(),
        env.path().display(),
        if env.path().exists() {
            ", edited in place"
        } else {
            ", a new file"
        }
    );
    let (base_url, api_key, models) = ask_endpoint(rt, args, &env, ui)?;
    let model = ask_model(args, &env, models.as_deref(), ui)?;
    let telegram_api = std::env::var("TELEGRAM_API_URL")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .or_else(|| env.get("TELEGRAM_API_URL").map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_TELEGRAM_API.to_owned());
    let telegram_api = telegram_api.trim_end_matches('/').to_owned();
    let (token, bot) = ask_telegram(rt, args, &env, &telegram_api, ui)?;

    let mut changed = Vec::new();
    for (key, value) in [
        ("OPENAI_BASE_URL", Some(base_url)),
        ("OPENAI_API_KEY", api_key),
        ("DEFAULT_MODEL", Some(model)),
        ("TELEGRAM_BOT_TOKEN", token.clone()),
    ] {
        let old = env.get(key).unwrap_or_default().to_owned();
        // `None`: not set and not asked to be; an unset default stays out of the file.
        let Some(value) = value else { continue };
        if value != old {
            env.set(key, &value)?;
            changed.push(key);
        }
    }
    if changed.is_empty() {
        println!("Nothing changed; {} is as it was.", env.path().display());
    } else {
        env.write()?;
        println!(
            "Wrote {} to {} (mode 0600).",
            changed.join(", "),
            env.path().display()
        );
    }
    for key in [
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "DEFAULT_MODEL",
        "TELEGRAM_BOT_TOKEN",
    ] {
        if let Ok(value) = std::env::var(key)
            && !value.trim().is_empty()
            && env.get(key) != Some(value.as_str())
        {
            println!(
                "Note: {key} is also set in this shell's environment, which wins over .env; \
                 unset it to use what setup wrote."
            );
        }
    }

    let telegram_on = token
        .as_deref()
        .or(env.get("TELEGRAM_BOT_TOKEN"))
        .is_some_and(|t| !t.is_empty());
    if !telegram_on {
        println!("No Telegram bot: chat in the terminal with `clawbox chat`.");
        return Ok(());
    }
    if args.no_pair || (ui.interactive && !ui.yes("Pair your Telegram account now?", true)?) {
        println!("Pair later with `clawbox pair`.");
        return Ok(());
    }
    // The configuration the commands will now read: this file under the environment.
    let config = Config::from_lookup(
        |k| {
            std::env::var(k)
                .ok()
                .or_else(|| env.get(k).map(str::to_owned))
        },
        &home.dir,
    )
    .map_err(|e| SetupError::Check(format!("invalid configuration after setup: {e}")))?;
    let text = rt
        .block_on(pair_with(&config, &args.agent_id, bot.as_deref()))
        .map_err(|e| SetupError::Check(e.to_string()))?;
    print!("{text}");
    Ok(())
}

/// What `GET /models` said.
enum ModelAnswer {
    Models(Vec<String>),
    /// Answered, but with no list (404, or not a list): the model cannot be checked.
    NoList(String),
    /// The key was refused.
    Refused(String),
    /// Unreachable or broken.
    Failed(String),
}

async fn list_models(base_url: &str, key: Option<&str>) -> ModelAnswer {
    let url = format!("{base_url}/models");
    let http = match reqwest::Client::builder().timeout(HTTP_TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => return ModelAnswer::Failed(format!("cannot build an HTTP client: {e}")),
    };
    let mut request = http.get(&url);
    if let Some(key) = key.filter(|k| !k.is_empty()) {
        request = request.bearer_auth(key);
    }
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => {
            return ModelAnswer::Failed(format!("cannot reach {url}: {}", chain(&e.without_url())));
        }
    };
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    match status {
        200 => match model_ids(&body) {
            Some(models) => ModelAnswer::Models(models),
            None => ModelAnswer::NoList(format!("{url} answered, but not with a model list")),
        },
        401 | 403 => ModelAnswer::Refused(format!("{url} refused the key (HTTP {status})")),
        404 | 405 => ModelAnswer::NoList(format!("{url} has no model list (HTTP {status})")),
        _ => ModelAnswer::Failed(format!("{url} answered HTTP {status}")),
    }
}

fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text = format!("{text}: {next}");
        }
        source = s.source();
    }
    text
}

fn check_base_url(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(url.to_owned()),
        _ => Err(format!(
            "{url:?} is not an http:// or https:// URL (e.g. http://127.0.0.1:11434/v1)"
        )),
    }
}

/// Asks for the endpoint and key until the endpoint answers (or the user accepts that it does
/// not). Returns the URL, the key (`None`: leave `.env` as it is) and the listed models.
#[allow(clippy::type_complexity)]
fn ask_endpoint(
    rt: &tokio::runtime::Runtime,
    args: &SetupArgs,
    env: &EnvFile,
    ui: &mut Ui,
) -> Result<(String, Option<String>, Option<Vec<String>>), SetupError> {
    let mut base_default = args
        .base_url
        .clone()
        .or_else(|| env.get("OPENAI_BASE_URL").map(str::to_owned))
        .unwrap_or_else(|| DEFAULT_BASE_URL.to_owned());
    let mut key: Option<String> = args.api_key.clone();
    loop {
        let base_url = if ui.interactive {
            let answer = ui.ask(
                "Model endpoint, OPENAI_BASE_URL (an OpenAI-compatible API, including /v1)",
                Some(&base_default),
            )?;
            match check_base_url(&answer) {
                Ok(url) => url,
                Err(problem) => {
                    println!("  {problem}");
                    continue;
                }
            }
        } else {
            check_base_url(&base_default)
                .map_err(|p| SetupError::Usage(format!("--base-url: {p}")))?
        };
        base_default.clone_from(&base_url);
        if ui.interactive {
            let current = key
                .clone()
                .or_else(|| env.get("OPENAI_API_KEY").map(str::to_owned));
            let shown = current.as_deref().map(masked);
            let answer = ui.ask(
                "API key, OPENAI_API_KEY (Enter keeps it; `none` for no key)",
                shown.as_deref(),
            )?;
            key = if answer == "none" {
                Some(String::new())
            } else if shown.as_deref() == Some(answer.as_str()) {
                current
            } else {
                Some(answer)
            };
            // An unchanged key need not be rewritten.
            if key.as_deref() == env.get("OPENAI_API_KEY") {
                key = None;
            }
        }
        let effective = key
            .clone()
            .or_else(|| env.get("OPENAI_API_KEY").map(str::to_owned));
        println!("Checking {base_url}/models …");
        match rt.block_on(list_models(&base_url, effective.as_deref())) {
            ModelAnswer::Models(models) => {
                println!("  ok: {} models listed", models.len());
                return Ok((base_url, key, Some(models)));
            }
            ModelAnswer::NoList(why) => {
                println!("  warning: {why}; the model name cannot be checked");
                return Ok((base_url, key, None));
            }
            ModelAnswer::Refused(why) => {
                if !ui.interactive {
                    return Err(SetupError::Check(format!(
                        "{why}: check --api-key (OPENAI_API_KEY)"
                    )));
                }
                println!("  {why}; enter the key again");
                key = None;
            }
            ModelAnswer::Failed(why) => {
                if !ui.interactive {
                    return Err(SetupError::Check(format!(
                        "{why}: is the model server running, and is --base-url right?"
                    )));
                }
                println!("  {why}");
                if ui.yes(
                    "Keep this endpoint anyway (the server may come up later)?",
                    false,
                )? {
                    return Ok((base_url, key, None));
                }
            }
        }
    }
}

fn ask_model(
    args: &SetupArgs,
    env: &EnvFile,
    models: Option<&[String]>,
    ui: &mut Ui,
) -> Result<String, SetupError> {
    let current = args
        .model
        .clone()
        .or_else(|| env.get("DEFAULT_MODEL").map(str::to_owned));
    let default = match (current, models) {
        (Some(m), _) => m,
        (None, Some(list)) if is_listed(DEFAULT_MODEL, list) || list.is_empty() => {
            DEFAULT_MODEL.to_owned()
        }
        (None, Some(list)) => list[0].clone(),
        (None, None) => DEFAULT_MODEL.to_owned(),
    };
    if !ui.interactive {
        if let Some(list) = models
            && !is_listed(&default, list)
        {
            let listed = list
                .iter()
                .take(SHOWN_MODELS)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            if !args.allow_unknown_model {
                return Err(SetupError::Check(format!(
                    "model {default:?} is not listed by the endpoint (it lists {listed}); pass \
                     --model with a listed one, or --allow-unknown-model for an alias it accepts"
                )));
            }
            println!("  warning: model {default} is not listed by the endpoint");
        }
        return Ok(default);
    }
    if let Some(list) = models {
        for (i, m) in list.iter().take(SHOWN_MODELS).enumerate() {
            println!("  {:>2}. {m}", i + 1);
        }
        if list.len() > SHOWN_MODELS {
            println!("  … and {} more (type a name)", list.len() - SHOWN_MODELS);
        }
    }
    loop {
        let answer = ui.ask("Model, DEFAULT_MODEL (a number or a name)", Some(&default))?;
        let model = match (answer.parse::<usize>(), models) {
            (Ok(n), Some(list)) if (1..=list.len().min(SHOWN_MODELS)).contains(&n) => {
                list[n - 1].clone()
            }
            _ => answer,
        };
        match models {
            Some(list) if !is_listed(&model, list) => {
                println!("  {model} is not listed by the endpoint");
                if ui.yes("Use it anyway (an alias the endpoint accepts)?", false)? {
                    return Ok(model);
                }
            }
            _ => return Ok(model),
        }
    }
}

/// What `getMe` said.
enum BotAnswer {
    Bot(String),
    Refused(String),
    Failed(String),
}

async fn get_me(api: &str, token: &str) -> BotAnswer {
    let http = match reqwest::Client::builder().timeout(HTTP_TIMEOUT).build() {
        Ok(http) => http,
        Err(e) => return BotAnswer::Failed(format!("cannot build an HTTP client: {e}")),
    };
    // The token is part of the URL: errors are reported without it.
    let response = match http.get(format!("{api}/bot{token}/getMe")).send().await {
        Ok(r) => r,
        Err(e) => {
            let why = chain(&e.without_url()).replace(token, "<token>");
            return BotAnswer::Failed(format!("cannot reach the Bot API at {api}: {why}"));
        }
    };
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    if status == 200 && body["ok"] == true {
        return BotAnswer::Bot(
            body["result"]["username"]
                .as_str()
                .unwrap_or("?")
                .to_owned(),
        );
    }
    let description = body["description"]
        .as_str()
        .unwrap_or("no description")
        .replace(token, "<token>");
    match status {
        401 | 404 => BotAnswer::Refused(format!(
            "Telegram refused the token (HTTP {status}: {description})"
        )),
        _ => BotAnswer::Failed(format!("getMe failed (HTTP {status}: {description})")),
    }
}

/// `<digits>:<letters, digits, _ and ->`, as @BotFather hands them out.
fn token_shape_ok(token: &str) -> bool {
    token.split_once(':').is_some_and(|(id, secret)| {
        !id.is_empty()
            && id.bytes().all(|b| b.is_ascii_digit())
            && !secret.is_empty()
            && secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    })
}

/// Asks for the bot token until `getMe` accepts it. Returns the token (`None`: leave `.env`
/// as it is; `Some("")`: no Telegram) and the bot's username.
fn ask_telegram(
    rt: &tokio::runtime::Runtime,
    args: &SetupArgs,
    env: &EnvFile,
    api: &str,
    ui: &mut Ui,
) -> Result<(Option<String>, Option<String>), SetupError> {
    let current = env.get("TELEGRAM_BOT_TOKEN").map(str::to_owned);
    loop {
        let token = if ui.interactive {
            let shown = args
                .telegram_token
                .as_deref()
                .or(current.as_deref())
                .map(masked);
            let answer = ui.ask(
                "Telegram bot token from @BotFather, TELEGRAM_BOT_TOKEN (Enter keeps it; `none` \
                 for no Telegram)",
                shown.as_deref(),
            )?;
            if answer == "none" {
                return Ok((Some(String::new()), None));
            }
            if shown.as_deref() == Some(answer.as_str()) {
                args.telegram_token.clone().or_else(|| current.clone())
            } else {
                Some(answer)
            }
        } else {
            args.telegram_token.clone().or_else(|| current.clone())
        };
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            // Nothing to check: no token now, or one being removed.
            let removing = args.telegram_token.as_deref() == Some("");
            return Ok((removing.then(String::new), None));
        };
        if !token_shape_ok(&token) {
            let problem = "that does not look like a bot token (123456789:AA…, from @BotFather)";
            if !ui.interactive {
                return Err(SetupError::Usage(format!("--telegram-token: {problem}")));
            }
            println!("  {problem}");
            continue;
        }
        println!("Checking the token with Telegram (getMe) …");
        let why = match rt.block_on(get_me(api, &token)) {
            BotAnswer::Bot(name) => {
                println!("  ok: bot @{name}");
                return Ok((Some(token), Some(name)));
            }
            BotAnswer::Refused(why) => {
                if !ui.interactive {
                    return Err(SetupError::Check(format!(
                        "{why}: copy it again from @BotFather (/mybots → API Token)"
                    )));
                }
                println!("  {why}; copy it again from @BotFather (/mybots → API Token)");
                continue;
            }
            BotAnswer::Failed(why) => why,
        };
        if !ui.interactive {
            return Err(SetupError::Check(why));
        }
        println!("  {why}");
        if ui.yes("Keep this token anyway?", false)? {
            return Ok((Some(token), None));
        }
    }
}

/// `clawbox pair`: a new pairing code for `args.agent_id`, with what to do with it.
pub async fn pair(config: &Config, args: &PairArgs) -> anyhow::Result<String> {
    let bot = match &config.telegram_bot_token {
        None => anyhow::bail!(
            "TELEGRAM_BOT_TOKEN is not set: pairing works through a Telegram bot (run `clawbox \
             setup`)"
        ),
        Some(token) => match get_me(&config.telegram_api_url, token).await {
            BotAnswer::Bot(name) => Some(name),
            // The code still works; only the link and the bot's name are missing.
            BotAnswer::Refused(_) | BotAnswer::Failed(_) => None,
        },
    };
    pair_with(config, &args.agent_id, bot.as_deref()).await
}

/// Stores a pairing code for `agent_id` (creating the database and its defaults if no host
/// ran yet) and says how to use it.
async fn pair_with(config: &Config, agent_id: &str, bot: Option<&str>) -> anyhow::Result<String> {
    let db = provision::open_db(config)
        .await
        .map_err(|e: ProvisionError| anyhow::anyhow!(e))?;
    let agent = agent_id.to_owned();
    let created = db
        .call(move |conn| {
            let name: Option<String> = rusqlite::OptionalExtension::optional(conn.query_row(
                "SELECT name FROM agent_groups WHERE id = ?1",
                [&agent],
                |r| r.get(0),
            ))?;
            let code = db::pairing::create(conn, &agent, Utc::now())?;
            Ok(name.zip(code))
        })
        .await?;
    let Some((name, code)) = created else {
        anyhow::bail!(
            "no agent {agent_id:?}: create it first with `clawbox create-agent --agent-id \
             {agent_id}`"
        );
    };
    let until = code
        .expires_at
        .with_timezone(&config.timezone)
        .format("%H:%M %Z");
    let mut text = format!(
        "\nPairing code for {name} (agent {agent_id}): {}\nIt works once, until {until} (ten \
         minutes).\n",
        code.display
    );
    match bot {
        Some(bot) => text.push_str(&format!(
            "In a private chat with @{bot}, send:  /start {}\nor open https://t.me/{bot}?start={}\n",
            code.display, code.compact
        )),
        None => text.push_str(&format!(
            "In a private chat with your bot, send:  /start {}\n",
            code.display
        )),
    }
    let running = tokio::net::UnixStream::connect(config.socket_path())
        .await
        .is_ok();
    text.push_str(if running {
        "The host is running and will answer \"Paired\".\n"
    } else {
        "Start the host first (`clawbox run`); it answers \"Paired\" when the code arrives.\n"
    });
    text.push_str("You become the agent's owner, and that chat is wired to it.\n");
    Ok(text)
}

/// Used by tests of this module only: a `Ui` over fixed input.
#[cfg(test)]
fn scripted(input: &str) -> Ui {
    Ui {
        input: Box::new(std::io::Cursor::new(input.as_bytes().to_vec())),
        interactive: true,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::path::Path;

    #[test]
    fn secrets_show_only_their_end() {
        assert_eq!(masked("sk-1234567890abcd"), "…abcd");
        assert_eq!(masked("short"), "(set)");
    }

    #[test]
    fn token_shapes() {
        for (token, ok) in [
            ("123456:ABC-def_9", true),
            ("123456:", false),
            (":abc", false),
            ("12a:abc", false),
            ("123:abc/def", false),
            ("no colon", false),
        ] {
            assert_eq!(token_shape_ok(token), ok, "{token}");
        }
    }

    #[test]
    fn base_urls_must_be_http() {
        assert_eq!(
            check_base_url(" http://127.0.0.1:8080/v1/ ").unwrap(),
            "http://127.0.0.1:8080/v1"
        );
        assert!(check_base_url("localhost:8080").is_err());
        assert!(check_base_url("ftp://x/v1").is_err());
    }

    #[test]
    fn questions_take_defaults_and_end_with_the_input() {
        let mut ui = scripted("\nanswer\ny\n\n");
        assert_eq!(ui.ask("q", Some("dflt")).unwrap(), "dflt");
        assert_eq!(ui.ask("q", Some("dflt")).unwrap(), "answer");
        assert!(ui.yes("ok?", false).unwrap());
        assert!(!ui.yes("ok?", false).unwrap());
        assert!(matches!(ui.ask("q", None), Err(SetupError::Cancelled)));
    }

    #[test]
    fn the_model_is_picked_by_number_or_name_and_unlisted_ones_need_a_yes() {
        let env = EnvFile::parse(Path::new(".env"), "").unwrap();
        let list = vec!["llama3:latest".to_owned(), "qwen2.5".to_owned()];
        let args = SetupArgs::default();
        let pick = |input: &str| ask_model(&args, &env, Some(&list), &mut scripted(input));
        // No DEFAULT_MODEL and gpt-4o not served: the first listed is the default.
        assert_eq!(pick("\n").unwrap(), "llama3:latest");
        assert_eq!(pick("2\n").unwrap(), "qwen2.5");
        assert_eq!(pick("llama3\n").unwrap(), "llama3");
        assert_eq!(pick("gpt-5\nn\n1\n").unwrap(), "llama3:latest");
        assert_eq!(pick("gpt-5\ny\n").unwrap(), "gpt-5");
        // Without a list, any name goes.
        let any = ask_model(&args, &env, None, &mut scripted("whatever\n")).unwrap();
        assert_eq!(any, "whatever");
    }
}
