//! The fixed prompt and the prompt cache, measured against a real server: llama-cpp-python with
//! SmolLM2-135M (testkit's `LlamaServer`; `make llama` builds it). `make bench-prompt` runs it.
//!
//! 1. The fixed prompt: the bytes of the system prompt and of the built-in tool list as
//!    requested, and their tokens as the server counts them (`usage.prompt_tokens`), with all
//!    tool groups on and with only the file tools.
//! 2. Per-turn wall time over N turns (default 20, `PROMPT_BENCH_TURNS`), once with the request
//!    prefix as clawbox sends it (the time in the new user message) and once as before, with a
//!    clock line in the system prompt that changes every turn, as it does when a conversation's
//!    turns are minutes apart. The server reuses the evaluated prefix of the previous request,
//!    so a stable prefix costs only the new tokens.
//!
//! Usage: `cargo run --release -p agent-runner --example prompt_bench -- <mcp-tools binary>`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use agent_runner::mcp::{McpManager, ServerRole, ServerSpec};
use agent_runner::model::{ModelClient, ModelSettings, ToolSpec};
use agent_runner::prompt::{PromptContext, PromptFiles, local_date_time, system_prompt, with_now};
use anyhow::Context as _;
use chrono::Utc;
use serde_json::{Value, json};
use testkit::{LlamaOptions, LlamaServer};
use tokio_util::sync::CancellationToken;

const GROUPS_OFF_BUT_FILES: &[&str] = &["bash", "messages", "questions", "tasks", "skills"];

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mcp_tools = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .context("usage: prompt_bench <mcp-tools binary>")?
        .canonicalize()
        .context("the mcp-tools binary")?;
    let turns: usize = std::env::var("PROMPT_BENCH_TURNS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir()?;
    for sub in ["inbound", "outbound", "workspace", "agent"] {
        std::fs::create_dir_all(dir.path().join(sub))?;
    }
    let path = |sub: &str| dir.path().join(sub).display().to_string();
    let spec = ServerSpec {
        name: "mcp-tools".to_owned(),
        role: ServerRole::Builtin,
        command: mcp_tools,
        args: Vec::new(),
        env: vec![
            ("PATH".to_owned(), std::env::var("PATH").unwrap_or_default()),
            (
                "CLAWBOX_MAILBOX_DIR".to_owned(),
                dir.path().display().to_string(),
            ),
            ("CLAWBOX_WORKSPACE".to_owned(), path("workspace")),
            ("CLAWBOX_AGENT_DIR".to_owned(), path("agent")),
        ],
        cwd: Some(dir.path().join("workspace")),
        startup_timeout: Duration::from_secs(30),
        call_timeout: None,
    };
    let mut mcp = McpManager::start(vec![spec], Duration::from_secs(30)).await?;
    let all_tools = mcp.tools().to_vec();
    let groups = agent_runner::container_config::parse(
        json!({ "tools": GROUPS_OFF_BUT_FILES.iter().map(|g| (g.to_string(), json!(false))).collect::<serde_json::Map<_, _>>() })
            .to_string()
            .as_bytes(),
    );
    mcp.retain_builtin(|name| groups.builtin_enabled(name));
    let file_tools = mcp.tools().to_vec();
    mcp.shutdown().await;

    let files = PromptFiles {
        instructions: Some("You are a helpful assistant. Answer briefly.".to_owned()),
        ..PromptFiles::default()
    };
    let ctx = PromptContext {
        timezone: chrono_tz::Europe::Berlin,
        assistant_name: "Andy",
        channel: Some("cli"),
        destinations: &[],
        first_message_in_session: false,
        setup_problems: &[],
        task_tools: true,
    };
    let system = system_prompt(&files, &ctx);

    let server = LlamaServer::start(LlamaOptions { n_ctx: 16384 }).await?;
    let client = ModelClient::new(ModelSettings {
        base_url: server.base_url(),
        api_key: String::new(),
        socket: None,
        model: testkit::llama::MODEL_ALIAS.to_owned(),
        timeout: Duration::from_secs(900),
        retries: 0,
        backoff: Duration::from_millis(10),
        params: json!({ "max_tokens": 8, "temperature": 0 })
            .as_object()
            .cloned()
            .unwrap_or_default(),
        tool_call_content: agent_runner::model::ToolCallContent::Empty,
        stream: false,
    })?;

    println!("## Fixed prompt");
    println!("system prompt: {} bytes", system.len());
    for (label, tools) in [
        ("all tool groups", &all_tools),
        ("file tools only", &file_tools),
    ] {
        let json = serde_json::to_string(&client.request_body(&[], tools)["tools"])?;
        let tokens = count_tokens(&server, &json).await?;
        println!(
            "tools ({label}): {} tools, {} bytes, {tokens} tokens (as JSON, server tokenizer)",
            tools.len(),
            json.len()
        );
    }
    // The fixed prompt as a prompt: system message and the tool list rendered as text (this
    // server's chat format does not count offered tools in usage).
    for (label, tools) in [
        ("all tool groups", &all_tools),
        ("file tools only", &file_tools),
    ] {
        let with_tools = format!("{system}\n\n# Tools\n{}", tool_text(tools));
        let reply = client
            .complete(
                &[
                    json!({ "role": "system", "content": with_tools }),
                    json!({ "role": "user", "content": "hi" }),
                ],
                &[],
                &CancellationToken::new(),
            )
            .await?;
        println!(
            "fixed prompt ({label}) usage.prompt_tokens: {:?}",
            reply.usage.prompt_tokens
        );
    }

    // The per-turn figures use the file tools' schemas as text in the system prompt (plain
    // chat format: the same tokens whether offered as tools or not, and no grammar passes).
    let fixed = format!("{system}\n\n# Tools\n{}", tool_text(&file_tools));
    println!("\n## {turns} turns, seconds per turn (max_tokens 8)");
    for stable in [true, false] {
        let mut history: Vec<Value> = Vec::new();
        let mut times = Vec::new();
        let start = Utc::now();
        for turn in 0..turns {
            let now = start + chrono::Duration::minutes(turn as i64 + 1);
            let (system_text, user_text) = if stable {
                (
                    fixed.clone(),
                    with_now(
                        now,
                        ctx.timezone,
                        &format!(
                            "<message id=\"{}\">Tell me fact {turn}.</message>",
                            turn * 2
                        ),
                    ),
                )
            } else {
                (
                    format!(
                        "{fixed}\nCurrent date and time: {}.",
                        local_date_time(now, ctx.timezone)
                    ),
                    format!(
                        "<message id=\"{}\">Tell me fact {turn}.</message>",
                        turn * 2
                    ),
                )
            };
            let mut messages = vec![json!({ "role": "system", "content": system_text })];
            messages.extend(history.iter().cloned());
            let user = json!({ "role": "user", "content": user_text });
            messages.push(user.clone());
            let began = Instant::now();
            let reply = client
                .complete(&messages, &[], &CancellationToken::new())
                .await?;
            times.push(began.elapsed().as_secs_f64());
            history.push(user);
            history
                .push(json!({ "role": "assistant", "content": reply.content.unwrap_or_default() }));
        }
        let label = if stable {
            "stable prefix (time in the user message)"
        } else {
            "old prefix (clock in the system prompt)"
        };
        let mean = times.iter().sum::<f64>() / times.len().max(1) as f64;
        let rest = &times[1.min(times.len())..];
        let mean_rest = rest.iter().sum::<f64>() / rest.len().max(1) as f64;
        println!(
            "{label}: first {:.2} s, mean {mean:.2} s, mean after the first {mean_rest:.2} s, max {:.2} s",
            times.first().copied().unwrap_or_default(),
            times.iter().copied().fold(0.0, f64::max)
        );
        println!(
            "  per turn: {}",
            times
                .iter()
                .map(|t| format!("{t:.2}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    Ok(())
}

/// Tokens of `text` by the server's own tokenizer (`/extras/tokenize/count`).
async fn count_tokens(server: &LlamaServer, text: &str) -> anyhow::Result<u64> {
    let base = server.base_url();
    let root = base.trim_end_matches("/v1");
    let answer: Value = reqwest::Client::new()
        .post(format!("{root}/extras/tokenize/count"))
        .json(&json!({ "input": text, "model": testkit::llama::MODEL_ALIAS }))
        .send()
        .await?
        .json()
        .await?;
    answer["count"]
        .as_u64()
        .context("no count in the tokenizer's answer")
}

/// The tool list as text, one JSON line per tool.
fn tool_text(tools: &[ToolSpec]) -> String {
    tools
        .iter()
        .map(|t| {
            json!({ "name": t.name, "description": t.description, "parameters": t.parameters })
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}
