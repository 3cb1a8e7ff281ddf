//! `clawbox doctor` with and without a host: an unreachable model endpoint, a model the endpoint
//! does not serve, a broken MCP server next to a real one from PyPI, a data directory that is
//! not one, the Telegram token (against a fake Bot API), and the real Docker engine (read-only:
//! version and image inspect).

use std::process::Output;

use axum::Router;
use axum::extract::Path;
use axum::routing::get;
use host::report::doctor::{Check, DoctorReport, Level};
use pretty_assertions::assert_eq;
use serde_json::json;
use testkit::{FakeModel, HostFixture};

use super::support::*;

async fn doctor(fixture: &HostFixture, json: bool) -> Output {
    let args: &[&str] = if json {
        &["doctor", "--json"]
    } else {
        &["doctor"]
    };
    fixture.command(args).output().await.unwrap()
}

fn report_of(out: &Output) -> DoctorReport {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn check<'a>(report: &'a DoctorReport, name: &str) -> &'a Check {
    report
        .checks
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report:#?}"))
}

/// The Python of the test venv (`make venv`), which has `mcp-server-time` from PyPI.
fn python() -> std::path::PathBuf {
    let path = std::env::var_os("CLAWBOX_TEST_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
        });
    assert!(
        path.exists(),
        "{} is missing: run `make venv` (or set CLAWBOX_TEST_PYTHON)",
        path.display()
    );
    path
}

fn write_container_json(fixture: &HostFixture, agent_folder: &str, value: &serde_json::Value) {
    let dir = fixture.groups_dir().join(agent_folder);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("container.json"),
        serde_json::to_vec_pretty(value).unwrap(),
    )
    .unwrap();
}

#[tokio::test]
async fn without_a_host_each_problem_fails_with_a_hint() {
    let model = FakeModel::start().await.unwrap();
    let mut fixture = HostFixture::new(env!("CARGO_BIN_EXE_clawbox"), &model.base_url()).unwrap();
    // Nothing listens on port 1.
    fixture.set("OPENAI_BASE_URL", "http://127.0.0.1:1/v1");
    // A file where the data directory should be: unusable even for root.
    let not_a_dir = fixture.root().join("data-file");
    std::fs::write(&not_a_dir, "x").unwrap();
    fixture.set("DATA_DIR", not_a_dir.display().to_string());
    write_container_json(
        &fixture,
        "default",
        &json!({ "mcp_servers": [
            { "name": "time", "command": python(), "args": ["-m", "mcp_server_time"] },
            { "name": "broken", "command": "/nonexistent/mcp-server" },
        ]}),
    );

    let out = doctor(&fixture, false).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.starts_with("no host is running"), "{shown}");

    let out = doctor(&fixture, true).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = report_of(&out);
    assert!(!report.ran_by_host);
    let endpoint = check(&report, "model endpoint");
    assert_eq!(endpoint.level, Level::Fail, "{endpoint:?}");
    assert!(
        endpoint
            .detail
            .contains("cannot reach http://127.0.0.1:1/v1/models"),
        "{endpoint:?}"
    );
    assert!(
        endpoint
            .hint
            .as_deref()
            .unwrap()
            .contains("is the model server running"),
        "{endpoint:?}"
    );
    let data = check(&report, "data dir");
    assert_eq!(data.level, Level::Fail, "{data:?}");
    assert!(data.detail.contains("is not a directory"), "{data:?}");
    assert!(data.hint.as_deref().unwrap().contains("DATA_DIR"));
    let broken = check(&report, "mcp default/broken");
    assert_eq!(broken.level, Level::Fail, "{broken:?}");
    assert!(
        broken.detail.contains("/nonexistent/mcp-server"),
        "{broken:?}"
    );
    assert!(
        broken.hint.as_deref().unwrap().contains("\"broken\""),
        "{broken:?}"
    );
    let time = check(&report, "mcp default/time");
    assert_eq!(time.level, Level::Ok, "{time:?}");
    assert!(time.detail.contains("get_current_time"), "{time:?}");
    let runtime = check(&report, "runtime");
    assert_eq!(runtime.level, Level::Warn);
    assert!(runtime.detail.contains("NOT isolated"), "{runtime:?}");
    assert_eq!(check(&report, "agent-runner").level, Level::Ok);
    assert_eq!(check(&report, "telegram").level, Level::Ok);
    assert_eq!(check(&report, "groups dir").level, Level::Ok);
    // Every problem has a hint; nothing fine has one.
    for c in &report.checks {
        assert_eq!(c.hint.is_some(), c.level != Level::Ok, "{c:?}");
    }

    // A container.json that is not JSON fails naming the file.
    write_container_json(&fixture, "default", &json!(["not", "an", "object"]));
    let report = report_of(&doctor(&fixture, true).await);
    let file = check(&report, "mcp default");
    assert_eq!(file.level, Level::Fail);
    assert!(file.detail.contains("container.json"), "{file:?}");
}

#[tokio::test]
async fn through_the_host_models_are_checked_against_the_endpoints_list() {
    let (model, mut fixture) = setup().await;
    model.serve_models(&["other-model", "llama3:latest"]);
    fixture.start().await.unwrap();
    let create = std::process::Command::new(env!("CARGO_BIN_EXE_create-agent"))
        .args(["--agent-id", "helper", "--model", "llama3"])
        .env_clear()
        .env("DATA_DIR", fixture.data_dir())
        .env("GROUPS_DIR", fixture.groups_dir())
        .current_dir(fixture.root())
        .output()
        .unwrap();
    assert!(create.status.success(), "{create:?}");

    let out = doctor(&fixture, true).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = report_of(&out);
    assert!(report.ran_by_host);
    let endpoint = check(&report, "model endpoint");
    assert_eq!(endpoint.level, Level::Ok, "{endpoint:?}");
    assert!(endpoint.detail.contains("lists 2 models"), "{endpoint:?}");
    let missing = check(&report, "model fake-model");
    assert_eq!(missing.level, Level::Fail, "{missing:?}");
    assert!(
        missing
            .detail
            .contains("it lists other-model, llama3:latest"),
        "{missing:?}"
    );
    assert!(missing.detail.contains("used by default"), "{missing:?}");
    assert!(missing.hint.as_deref().unwrap().contains("DEFAULT_MODEL"));
    // Ollama's `name:latest` serves `name`.
    let llama = check(&report, "model llama3");
    assert_eq!(llama.level, Level::Ok, "{llama:?}");
    assert!(llama.detail.contains("used by helper"), "{llama:?}");
    assert_eq!(check(&report, "database").level, Level::Ok);
    assert_eq!(check(&report, "data dir").level, Level::Ok);
    assert_eq!(
        check(&report, "mcp servers").level,
        Level::Ok,
        "no agent has servers of its own"
    );

    // Once the endpoint serves it, only the unisolated runtime is worth a warning.
    model.serve_models(&["fake-model", "llama3"]);
    let out = doctor(&fixture, false).await;
    assert!(out.status.success(), "{out:?}");
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.starts_with("checked by the running host"), "{shown}");
    assert!(shown.contains("OK    model fake-model"), "{shown}");
    assert!(shown.ends_with("no failures, 1 warning\n"), "{shown}");
    // The doctor does not leave its probe files behind.
    let leftovers: Vec<_> = std::fs::read_dir(fixture.data_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("doctor"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    fixture.stop().await.unwrap();
}

/// A fake Bot API: `getMe` knows one token.
async fn fake_telegram() -> String {
    async fn get_me(
        Path(bot): Path<String>,
    ) -> (axum::http::StatusCode, axum::Json<serde_json::Value>) {
        if bot == "bot123:GOOD-TOKEN" {
            (
                axum::http::StatusCode::OK,
                axum::Json(json!({ "ok": true, "result": {
                    "id": 123, "is_bot": true, "first_name": "Claw", "username": "clawbox_test_bot"
                }})),
            )
        } else {
            (
                axum::http::StatusCode::UNAUTHORIZED,
                axum::Json(
                    json!({ "ok": false, "error_code": 401, "description": "Unauthorized" }),
                ),
            )
        }
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/{bot}/getMe", get(get_me));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

#[tokio::test]
async fn the_telegram_token_is_checked_and_never_shown() {
    let (model, mut fixture) = setup().await;
    model.serve_models(&["fake-model"]);
    let api = fake_telegram().await;
    fixture.set("TELEGRAM_API_URL", &api);

    fixture.set("TELEGRAM_BOT_TOKEN", "123:GOOD-TOKEN");
    let report = report_of(&doctor(&fixture, true).await);
    let telegram = check(&report, "telegram");
    assert_eq!(telegram.level, Level::Ok, "{telegram:?}");
    assert!(
        telegram.detail.contains("@clawbox_test_bot"),
        "{telegram:?}"
    );

    fixture.set("TELEGRAM_BOT_TOKEN", "123:BAD-TOKEN");
    let out = doctor(&fixture, false).await;
    assert_eq!(out.status.code(), Some(1));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("FAIL  telegram"), "{shown}");
    assert!(shown.contains("@BotFather"), "{shown}");
    assert!(!shown.contains("BAD-TOKEN"), "the token leaked: {shown}");

    // Unreachable: the error names the server, never the URL with the token in it.
    fixture.set("TELEGRAM_API_URL", "http://127.0.0.1:1");
    let out = doctor(&fixture, true).await;
    let telegram = check(&report_of(&out), "telegram").clone();
    assert_eq!(telegram.level, Level::Fail);
    assert!(
        telegram
            .detail
            .contains("cannot reach the Bot API at http://127.0.0.1:1"),
        "{telegram:?}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("BAD-TOKEN"));
}

/// The real Docker engine, read-only: version and image inspect. A user server that starts on
/// this machine is only a warning with the docker runtime: its container has what its image has.
#[tokio::test]
async fn the_docker_engine_and_a_missing_image_are_reported() {
    let (model, mut fixture) = setup().await;
    model.serve_models(&["fake-model"]);
    fixture.set("CONTAINER_RUNTIME", "docker");
    fixture.set("CONTAINER_IMAGE", "clawbox-doctor-test:never-built");
    write_container_json(
        &fixture,
        "default",
        &json!({ "mcp_servers": [
            { "name": "time", "command": python(), "args": ["-m", "mcp_server_time"] },
        ]}),
    );
    let report = report_of(&doctor(&fixture, true).await);
    let runtime = check(&report, "runtime");
    assert_eq!(runtime.level, Level::Ok, "is dockerd running? {runtime:?}");
    assert!(runtime.detail.starts_with("docker: engine "), "{runtime:?}");
    let image = check(&report, "image");
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .any(|p| std::path::Path::new(p).is_file());
    let want = if busybox { Level::Warn } else { Level::Fail };
    assert_eq!(image.level, want, "{image:?}");
    assert!(
        image
            .detail
            .contains("clawbox-doctor-test:never-built is not built"),
        "{image:?}"
    );
    let time = check(&report, "mcp default/time");
    assert_eq!(time.level, Level::Warn, "{time:?}");
    assert!(
        time.hint.as_deref().unwrap().contains("busybox"),
        "{time:?}"
    );

    // Nothing to build it from: that fails, and so does the MCP check, which needs the runner.
    fixture.set("CLAWBOX_RUNNER_BIN", "/nonexistent/agent-runner");
    let report = report_of(&doctor(&fixture, true).await);
    let image = check(&report, "image");
    assert_eq!(image.level, Level::Fail, "{image:?}");
    assert!(image.detail.contains("it cannot be"), "{image:?}");
    let mcp = check(&report, "mcp default");
    assert_eq!(mcp.level, Level::Fail, "{mcp:?}");
    assert!(mcp.detail.contains("agent-runner not found"), "{mcp:?}");

    fixture.set("DOCKER_HOST", "unix:///nonexistent/docker.sock");
    let report = report_of(&doctor(&fixture, true).await);
    let runtime = check(&report, "runtime");
    assert_eq!(runtime.level, Level::Fail, "{runtime:?}");
    assert!(
        runtime
            .hint
            .as_deref()
            .unwrap()
            .contains("CONTAINER_RUNTIME=process"),
        "{runtime:?}"
    );
}

/// One case per mistake doctor must find in the operator's files without running the agent:
/// the failing check, what its detail names, and what its hint says to do.
#[tokio::test]
async fn doctor_finds_each_mistake_in_the_files() {
    let model = FakeModel::start().await.unwrap();
    let fixture = HostFixture::new(env!("CARGO_BIN_EXE_clawbox"), &model.base_url()).unwrap();
    struct Case {
        container_json: Option<serde_json::Value>,
        env_file: Option<&'static str>,
        check: &'static str,
        detail: &'static str,
        hint: &'static str,
    }
    let table = [
        Case {
            container_json: Some(json!({ "memory_mb": "lots" })),
            env_file: None,
            check: "container.json default",
            detail: "`memory_mb` must be a whole number of MB, not \"lots\"",
            hint: "container.json",
        },
        Case {
            container_json: Some(json!({ "memroy_mb": 512 })),
            env_file: None,
            check: "container.json default",
            detail: "`memroy_mb` is not a container.json key; did you mean `memory_mb`?",
            hint: "container.json",
        },
        Case {
            container_json: Some(json!({ "additional_mounts": [{ "host_path": "/etc" }] })),
            env_file: None,
            check: "container.json default",
            detail: "is a system location (/etc)",
            hint: "container.json",
        },
        Case {
            container_json: None,
            env_file: Some("TELEGRAM_BOT_TOKE=123:abc\n"),
            check: ".env",
            detail: "sets TELEGRAM_BOT_TOKE, which clawbox does not read; it looks like TELEGRAM_BOT_TOKEN",
            hint: "rename TELEGRAM_BOT_TOKE to TELEGRAM_BOT_TOKEN",
        },
    ];
    let json_file = fixture.groups_dir().join("default/container.json");
    let env_file = fixture.root().join(".env");
    for case in table {
        let _ = std::fs::remove_file(&json_file);
        let _ = std::fs::remove_file(&env_file);
        if let Some(value) = &case.container_json {
            write_container_json(&fixture, "default", value);
        }
        if let Some(text) = case.env_file {
            std::fs::write(&env_file, text).unwrap();
        }
        let out = doctor(&fixture, true).await;
        assert_eq!(out.status.code(), Some(1), "{}: {out:?}", case.check);
        let report = report_of(&out);
        let found = check(&report, case.check);
        assert_eq!(found.level, Level::Fail, "{found:?}");
        assert!(found.detail.contains(case.detail), "{found:?}");
        assert!(
            found
                .hint
                .as_deref()
                .unwrap_or_default()
                .contains(case.hint),
            "{found:?}"
        );
    }
    // With the mistakes gone the same checks pass.
    let _ = std::fs::remove_file(&env_file);
    std::fs::write(&env_file, "TELEGRAM_BOT_TOKEN=\nSOME_OTHER_TOOL=1\n").unwrap();
    write_container_json(&fixture, "default", &json!({ "memory_mb": 512 }));
    let report = report_of(&doctor(&fixture, true).await);
    assert_eq!(check(&report, ".env").level, Level::Ok, "{report:#?}");
    assert_eq!(
        check(&report, "container.json default").level,
        Level::Ok,
        "{report:#?}"
    );
}

/// The lines of `text` that report the start-up model check.
fn startup_warnings(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| l.contains("the model will not answer"))
        .collect()
}

#[tokio::test]
async fn chat_and_run_say_in_one_line_what_is_wrong_with_the_model() {
    let model = FakeModel::start().await.unwrap();
    let mut fixture = HostFixture::new(env!("CARGO_BIN_EXE_clawbox"), &model.base_url()).unwrap();

    // Served as configured: nothing is said.
    model.serve_models(&["fake-model"]);
    let out = fixture.chat("").await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(startup_warnings(&stderr), Vec::<&str>::new(), "{stderr}");

    // The endpoint serves other models: one line, naming DEFAULT_MODEL and what is served.
    model.serve_models(&["qwen2.5-7b", "llama-3.1-8b"]);
    let out = fixture.chat("").await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the chat still starts: {stderr}");
    let lines = startup_warnings(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("model fake-model"), "{}", lines[0]);
    assert!(lines[0].contains("set DEFAULT_MODEL"), "{}", lines[0]);
    assert!(
        lines[0].contains("qwen2.5-7b, llama-3.1-8b"),
        "{}",
        lines[0]
    );

    // `clawbox run` logs the same line once, and runs.
    fixture.start().await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    while startup_warnings(&fixture.logs()).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no start-up warning in {}",
            fixture.logs()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let logs = fixture.logs();
    let lines = startup_warnings(&logs);
    assert_eq!(lines.len(), 1, "{logs}");
    assert!(lines[0].contains("WARN"), "{}", lines[0]);
    assert!(lines[0].contains("set DEFAULT_MODEL"), "{}", lines[0]);
    fixture.stop().await.unwrap();

    // Nothing listens: one line naming OPENAI_BASE_URL.
    fixture.set("OPENAI_BASE_URL", "http://127.0.0.1:1/v1");
    let out = fixture.chat("").await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines = startup_warnings(&stderr);
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(lines[0].contains("cannot reach"), "{}", lines[0]);
    assert!(lines[0].contains("OPENAI_BASE_URL"), "{}", lines[0]);
}
