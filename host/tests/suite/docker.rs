//! The docker runtime against the real engine: a chat turn through a container, the sandbox
//! seen from inside and from `docker inspect`, kills, host restarts, OOM, the container cap and
//! the image build. These tests need a reachable Docker engine (CI has one) and fail, never
//! skip, without it.
//!
//! The image is built once per test run under [`TEST_IMAGE`] (not the user's
//! `clawbox-agent:latest`) with `clawbox image build`, from the debug binaries next to the
//! test's `clawbox` — a stripped debug build is ~47 MB and takes about a second to import.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use bollard::Docker;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::ContainerInspectResponse;
use bollard::query_parameters::{
    InspectContainerOptions, KillContainerOptionsBuilder, ListContainersOptionsBuilder,
};
use futures::StreamExt;
use host::admin::protocol::{Event, Request};
use host::channels::cli::ChatEvent;
use mailbox::InboundStatus;
use serde_json::json;
use testkit::{FakeModel, HostFixture, Reply, ToolCall};

use super::support::*;
use super::tasks::{agent_calls, task_as_read, task_id, task_reply, tasks_json, wait_task};

const TEST_IMAGE: &str = "clawbox-agent:test";
/// The model key; it must never appear in a container.
const REAL_KEY: &str = "sk-real-key-that-never-enters-a-container";

fn docker_host() -> Option<String> {
    std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty())
}

/// The engine, or a failure that says what is missing.
async fn engine() -> Docker {
    match host::runtime::docker::connect_engine(docker_host().as_deref()).await {
        Ok(docker) => docker,
        Err(e) => panic!(
            "the docker runtime tests need a reachable Docker engine (CI provides one); \
             start dockerd or set DOCKER_HOST: {e}"
        ),
    }
}

/// Builds [`TEST_IMAGE`] once for the whole test binary.
fn build_test_image() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_clawbox"));
        cmd.args(["image", "build", "--tag", TEST_IMAGE])
            .env("CLAWBOX_SKILLS_DIR", concat!(env!("CARGO_MANIFEST_DIR"), "/../container/skills"));
        let out = cmd.output().expect("run clawbox image build");
        assert!(
            out.status.success(),
            "clawbox image build failed (is the Docker engine reachable? is busybox-static installed?):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// The fake model and a host fixture configured for the docker runtime.
async fn docker_setup() -> (FakeModel, HostFixture, Docker) {
    let docker = engine().await;
    tokio::task::spawn_blocking(build_test_image).await.unwrap();
    let (model, mut fixture) = setup().await;
    fixture
        .set("CONTAINER_RUNTIME", "docker")
        .set("CONTAINER_IMAGE", TEST_IMAGE)
        .set("OPENAI_API_KEY", REAL_KEY)
        .set(
            "CLAWBOX_SKILLS_DIR",
            concat!(env!("CARGO_MANIFEST_DIR"), "/../container/skills"),
        );
    if let Some(h) = docker_host() {
        fixture.set("DOCKER_HOST", h);
    }
    (model, fixture, docker)
}

/// Removes the containers of a fixture's install when the test ends, passed or failed.
struct Cleanup {
    data_dir: std::path::PathBuf,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(install) = install_id(&self.data_dir) else {
            return;
        };
        // Drop cannot await: a small runtime of its own, on its own thread.
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(docker) =
                    host::runtime::docker::connect_engine(docker_host().as_deref()).await
                else {
                    return;
                };
                for c in containers(&docker, &install, true).await {
                    let options =
                        bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .build();
                    let _ = docker.remove_container(&c, Some(options)).await;
                }
            });
        })
        .join();
    }
}

fn install_id(data_dir: &std::path::Path) -> Option<String> {
    let conn = rusqlite::Connection::open_with_flags(
        data_dir.join("clawbox.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .ok()?;
    conn.query_row("SELECT value FROM meta WHERE key = 'install_id'", [], |r| {
        r.get(0)
    })
    .ok()
}

/// Container ids of an install (running only, unless `all`).
async fn containers(docker: &Docker, install: &str, all: bool) -> Vec<String> {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("clawbox.install={install}")],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .all(all)
        .filters(&filters)
        .build();
    docker
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

/// The running container of a session, once there is one (and not `not`).
async fn container_of(
    docker: &Docker,
    session: &str,
    not: Option<&str>,
) -> ContainerInspectResponse {
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("clawbox.session={session}")],
    )]);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let options = ListContainersOptionsBuilder::default()
            .filters(&filters)
            .build();
        let found = docker.list_containers(Some(options)).await.unwrap();
        if let Some(id) = found
            .into_iter()
            .filter_map(|c| c.id)
            .find(|id| Some(id.as_str()) != not)
        {
            return docker
                .inspect_container(&id, None::<InspectContainerOptions>)
                .await
                .unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no container for session {session}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `cmd` in the container (as its user); returns the exit code and the output.
async fn exec(docker: &Docker, id: &str, cmd: &str) -> (i64, String) {
    let created = docker
        .create_exec(
            id,
            CreateExecOptions {
                cmd: Some(vec!["/bin/sh", "-c", cmd]),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let mut text = String::new();
    if let StartExecResults::Attached { mut output, .. } =
        docker.start_exec(&created.id, None).await.unwrap()
    {
        while let Some(Ok(chunk)) = output.next().await {
            text.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
    }
    let code = docker
        .inspect_exec(&created.id)
        .await
        .unwrap()
        .exit_code
        .unwrap_or(-1);
    (code, text)
}

fn tries(fixture: &HostFixture, session: &str, seq: i64) -> u32 {
    let db = session_dir(fixture, session).join("inbound/inbound.db");
    let reader = mailbox::InboundReader::open(&db).unwrap();
    reader.get(seq).unwrap().unwrap().tries
}

fn expected_uid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    match unsafe { libc::geteuid() } {
        0 => host::runtime::ownership::FALLBACK_UID,
        uid => uid,
    }
}

#[tokio::test]
async fn a_chat_turn_runs_in_a_hardened_container() {
    let (model, mut fixture, docker) = docker_setup().await;
    let agent = fixture.groups_dir().join("default");
    std::fs::create_dir_all(&agent).unwrap();
    std::fs::write(
        agent.join("container.json"),
        r#"{"mcp_servers": [], "memory_mb": 256, "cpus": 0.5, "pids_limit": 64}"#,
    )
    .unwrap();
    fixture.start().await.unwrap();
    let _cleanup = Cleanup {
        data_dir: fixture.data_dir(),
    };
    // The agent looks around with its own shell tool.
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "run_bash",
        json!({"command": "id -u; echo made > made-here.txt; touch /mailbox/inbound/x; touch /not-here; ls /sys/class/net"}),
    )]));
    model.push(Reply::text("looked around"));
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("look around").await.unwrap();
    assert_eq!(
        client.done(seq).await.unwrap(),
        (InboundStatus::Completed, None),
        "{}",
        fixture.logs()
    );
    client.settle(Duration::from_millis(200)).await;
    assert_eq!(client.replies_to(seq), vec!["looked around".to_owned()]);

    let requests = model.requests();
    assert_eq!(requests.len(), 2);
    let shell = &tool_results(&requests[1])[0];
    assert!(shell.contains(&expected_uid().to_string()), "{shell}");
    assert!(
        shell.contains("/mailbox/inbound/x: Read-only file system"),
        "{shell}"
    );
    assert!(
        shell.contains("/not-here: Read-only file system"),
        "{shell}"
    );
    assert!(!shell.contains("eth0"), "network is off: {shell}");
    // The real key went to the model service only.
    assert_eq!(
        requests[0].header("authorization"),
        Some(format!("Bearer {REAL_KEY}").as_str())
    );
    let made = session_dir(&fixture, &session).join("workspace/made-here.txt");
    assert_eq!(std::fs::read_to_string(&made).unwrap(), "made\n");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(std::fs::metadata(&made).unwrap().uid(), expected_uid());

    // The runner idles (IDLE_TIMEOUT_MS is a minute): look at its container.
    let c = container_of(&docker, &session, None).await;
    let id = c.id.clone().unwrap();
    let hc = c.host_config.clone().unwrap();
    assert_eq!(hc.memory, Some(256 << 20));
    assert_eq!(hc.memory_swap, Some(256 << 20));
    assert_eq!(hc.nano_cpus, Some(500_000_000));
    assert_eq!(hc.pids_limit, Some(64));
    assert_eq!(hc.cap_drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(hc.security_opt, Some(vec!["no-new-privileges".to_owned()]));
    assert_eq!(hc.readonly_rootfs, Some(true));
    assert_eq!(hc.network_mode.as_deref(), Some("none"));
    assert_eq!(hc.init, Some(true));
    assert_eq!(hc.privileged, Some(false));
    assert!(hc.tmpfs.unwrap().contains_key("/tmp"));
    let config = c.config.clone().unwrap();
    assert_eq!(
        config.user,
        Some(format!("{0}:{0}", expected_uid())),
        "not root"
    );
    let labels = config.labels.clone().unwrap();
    assert_eq!(labels["clawbox.session"], session);
    assert_eq!(labels["clawbox.agent"], "default");
    assert_eq!(
        Some(labels["clawbox.install"].clone()),
        install_id(&fixture.data_dir())
    );
    assert_eq!(
        c.name.as_deref(),
        Some(format!("/clawbox-default-{session}").as_str())
    );
    let env = config.env.clone().unwrap();
    assert!(
        env.iter().all(|v| !v.contains(REAL_KEY)),
        "the model key is in the container's environment: {env:?}"
    );
    let mounts: std::collections::BTreeMap<String, &str> = c
        .mounts
        .clone()
        .unwrap()
        .into_iter()
        .map(|m| {
            (
                m.destination.unwrap(),
                if m.rw.unwrap() { "rw" } else { "ro" },
            )
        })
        .collect();
    let want: std::collections::BTreeMap<String, &str> = [
        ("/mailbox/inbound", "ro"),
        ("/mailbox/outbound", "rw"),
        ("/workspace", "rw"),
        ("/workspace/agent", "rw"),
        ("/workspace/agent/container.json", "ro"),
        ("/run/clawbox/model.sock", "rw"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    // No /workspace/global: groups/global does not exist here.
    pretty_assertions::assert_eq!(mounts, want);

    // And from inside, with busybox's shell.
    // (The file is also the host's, so the permission check may answer before the mount's.)
    let (code, out) = exec(&docker, &id, "echo forged >> /mailbox/inbound/inbound.db").await;
    assert_ne!(code, 0, "{out}");
    assert!(
        out.contains("Read-only file system") || out.contains("Permission denied"),
        "{out}"
    );
    let (code, out) = exec(&docker, &id, "rm -f /mailbox/inbound/inbound.db").await;
    assert_ne!(code, 0, "{out}");
    let (code, out) = exec(
        &docker,
        &id,
        "echo '{\"network\":\"bridge\"}' > /workspace/agent/container.json",
    )
    .await;
    assert_ne!(code, 0, "the agent cannot widen its own sandbox: {out}");
    let (_, out) = exec(
        &docker,
        &id,
        "id -u; env; grep -E 'CapEff|NoNewPrivs' /proc/self/status",
    )
    .await;
    assert!(out.starts_with(&format!("{}\n", expected_uid())), "{out}");
    assert!(!out.contains(REAL_KEY), "{out}");
    assert!(!out.contains("OPENAI_API_KEY"), "{out}");
    assert!(
        out.contains("CLAWBOX_MODEL_TOKEN=cbx-"),
        "the session token, not the key: {out}"
    );
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    let (code, out) = exec(&docker, &id, "echo ok > /tmp/scratch && cat /tmp/scratch").await;
    assert_eq!((code, out.as_str()), (0, "ok\n"), "/tmp is writable");

    // A second turn in the same container.
    let (_, next) = client.send("still there?").await.unwrap();
    assert_eq!(client.done(next).await.unwrap().0, InboundStatus::Completed);
    assert_eq!(container_of(&docker, &session, None).await.id.unwrap(), id);

    // Host shutdown stops the container, and nothing is left behind.
    fixture.stop().await.unwrap();
    let install = install_id(&fixture.data_dir()).unwrap();
    assert!(containers(&docker, &install, true).await.is_empty());
}

#[tokio::test]
async fn a_container_killed_mid_turn_is_retried_and_answered_once() {
    let (model, mut fixture, docker) = docker_setup().await;
    fixture.start().await.unwrap();
    let _cleanup = Cleanup {
        data_dir: fixture.data_dir(),
    };
    model.push(Reply::Hang);
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("work hard").await.unwrap();
    model.wait_for_requests(1, WAIT).await.unwrap();
    let first = container_of(&docker, &session, None).await.id.unwrap();
    let options = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    docker.kill_container(&first, Some(options)).await.unwrap();

    // The retry runs in a new container (looked up while it works: what becomes of an idle
    // one later is not this test's business).
    let second = container_of(&docker, &session, Some(&first))
        .await
        .id
        .unwrap();
    assert_ne!(first, second);
    assert_eq!(
        client.done(seq).await.unwrap(),
        (InboundStatus::Completed, None),
        "{}",
        fixture.logs()
    );
    client.settle(Duration::from_millis(300)).await;
    assert_eq!(client.replies_to(seq), vec!["echo: work hard".to_owned()]);
    assert_eq!(tries(&fixture, &session, seq), 1);
    // The killed container was removed after its exit status was read.
    let install = install_id(&fixture.data_dir()).unwrap();
    let left = containers(&docker, &install, true).await;
    assert!(!left.contains(&first), "{left:?}");
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn a_host_restart_stops_the_orphan_and_the_conversation_continues() {
    let (model, mut fixture, docker) = docker_setup().await;
    // The runner keeps retrying the model (the proxy dies with the host) long enough for the
    // next host to find it alive.
    fixture
        .set("MODEL_RETRIES", "10")
        .set("MODEL_BACKOFF_MS", "2000");
    fixture.start().await.unwrap();
    let _cleanup = Cleanup {
        data_dir: fixture.data_dir(),
    };
    model.push(Reply::Hang);
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("long job").await.unwrap();
    model.wait_for_requests(1, WAIT).await.unwrap();
    let orphan = container_of(&docker, &session, None).await.id.unwrap();
    fixture.kill().await.unwrap();
    drop(client);
    let install = install_id(&fixture.data_dir()).unwrap();
    assert_eq!(
        containers(&docker, &install, false).await,
        vec![orphan.clone()],
        "the container outlives a killed host"
    );

    fixture.start().await.unwrap();
    let replacement = container_of(&docker, &session, Some(&orphan))
        .await
        .id
        .unwrap();
    let gone = docker
        .inspect_container(&orphan, None::<InspectContainerOptions>)
        .await;
    assert!(gone.is_err(), "the orphan is stopped and removed: {gone:?}");
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    client
        .wait_for(|e| matches!(e, Event::Chat(ChatEvent::Reply { .. })))
        .await
        .unwrap();
    client.settle(Duration::from_millis(300)).await;
    assert_eq!(client.replies_to(seq), vec!["echo: long job".to_owned()]);
    // Re-queued once for the orphan; on a loaded machine the replacement's first attempt may
    // be judged stuck and retried once more. Answered once either way.
    let tries = tries(&fixture, &session, seq);
    assert!((1..=2).contains(&tries), "tries: {tries}");
    assert!(
        fixture
            .logs()
            .contains("stopping runner left by a previous host"),
        "{}",
        fixture.logs()
    );
    let (_, next) = client.send("and now?").await.unwrap();
    assert_eq!(client.done(next).await.unwrap().0, InboundStatus::Completed);
    assert_eq!(containers(&docker, &install, true).await, vec![replacement]);
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn the_image_is_built_when_missing() {
    let (model, mut fixture, docker) = docker_setup().await;
    let tag = format!("clawbox-agent:test-auto-{}", std::process::id());
    host::runtime::image::remove(&docker, &tag).await.unwrap();
    fixture.set("CONTAINER_IMAGE", tag.clone());
    fixture.start().await.unwrap();
    let _cleanup = Cleanup {
        data_dir: fixture.data_dir(),
    };
    let image = docker.inspect_image(&tag).await.unwrap();
    let labels = image.config.unwrap().labels.unwrap();
    assert_eq!(labels[host::runtime::image::LABEL_BINARIES].len(), 64);
    let logs = fixture.logs();
    assert!(
        logs.contains(&format!("agent image {tag} not found; building it")),
        "{logs}"
    );
    assert!(logs.contains(&format!("built {tag}")), "{logs}");

    // It works, and a second start finds it current.
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (_, seq) = client.send("hi").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    fixture.stop().await.unwrap();
    fixture.start().await.unwrap();
    assert_eq!(fixture.logs().matches("building it").count(), 1);
    fixture.stop().await.unwrap();
    assert!(model.violations().is_empty());
    host::runtime::image::remove(&docker, &tag).await.unwrap();
}

#[tokio::test]
async fn an_unsafe_extra_mount_fails_the_message_with_the_reason() {
    let (model, mut fixture, _docker) = docker_setup().await;
    let agent = fixture.groups_dir().join("default");
    std::fs::create_dir_all(&agent).unwrap();
    let home = fixture.root().join("home");
    std::fs::create_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(
        agent.join("container.json"),
        json!({"additional_mounts": [{"host_path": home}]}).to_string(),
    )
    .unwrap();
    fixture.start().await.unwrap();
    let _cleanup = Cleanup {
        data_dir: fixture.data_dir(),
    };
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (_, seq) = client.send("mount it").await.unwrap();
    let (status, error) = client.done(seq).await.unwrap();
    assert_eq!(status, InboundStatus::Failed);
    let error = error.unwrap();
    assert!(error.contains("additional_mounts[0]"), "{error}");
    assert!(error.contains("contains .ssh"), "{error}");
    assert_eq!(model.request_count(), 0);

    // Fixed, the agent works.
    std::fs::remove_dir_all(home.join(".ssh")).unwrap();
    std::fs::write(home.join("notes.txt"), "from the host").unwrap();
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "run_bash",
        json!({"command": "cat /workspace/extra/home/notes.txt; touch /workspace/extra/home/new"}),
    )]));
    model.push(Reply::text("read it"));
    let (_, seq) = client.send("mount it now").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    let shell = &tool_results(&model.requests()[1])[0];
    assert!(shell.contains("from the host"), "{shell}");
    assert!(
        shell.contains("Read-only file system"),
        "read-only by default: {shell}"
    );
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn running_out_of_memory_is_reported_to_the_user() {
    let (model, mut fixture, docker) = docker_setup().await;
    let agent = fixture.groups_dir().join("default");
    std::fs::create_dir_all(&agent).unwrap();
    std::fs::write(agent.join("container.json"), r#"{"memory_mb": 64}"#).unwrap();
    fixture.start().await.unwrap();
    let _cleanup = Cleanup {
        data_dir: fixture.data_dir(),
    };
    model.push(Reply::Hang);
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("big job").await.unwrap();
    model.wait_for_requests(1, WAIT).await.unwrap();
    let id = container_of(&docker, &session, None).await.id.unwrap();
    // Fill the container's memory with shared memory (charged to its cgroup, owned by no
    // process; Docker's /dev/shm holds 64 MB), with the runner first in line for the OOM
    // killer, as the biggest process in a container usually is.
    let (_, out) = exec(
        &docker,
        &id,
        "echo 1000 > /proc/$(pidof agent-runner)/oom_score_adj; dd if=/dev/zero of=/dev/shm/fill bs=1M count=64",
    )
    .await;
    let (status, error) = client.done(seq).await.unwrap();
    assert_eq!(status, InboundStatus::Failed, "{out}\n{}", fixture.logs());
    assert_eq!(
        error.as_deref(),
        Some("the agent ran out of memory (limit 64 MB)")
    );
    client.settle(Duration::from_millis(300)).await;
    let notices = client.notices();
    assert_eq!(
        notices,
        vec![
            "⚠ Your message could not be processed: the agent ran out of memory (limit 64 MB)"
                .to_owned()
        ]
    );
    // Not retried, and the session still works.
    assert_eq!(model.request_count(), 1);
    let (_, next) = client.send("small job").await.unwrap();
    assert_eq!(client.done(next).await.unwrap().0, InboundStatus::Completed);
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn sessions_beyond_the_container_cap_wait_their_turn() {
    let (model, mut fixture, docker) = docker_setup().await;
    fixture.set("MAX_CONCURRENT_CONTAINERS", "1");
    fixture.start().await.unwrap();
    let _cleanup = Cleanup {
        data_dir: fixture.data_dir(),
    };
    // A second agent on the terminal chat: each message starts two sessions.
    let conn = rusqlite::Connection::open(fixture.data_dir().join("clawbox.db")).unwrap();
    conn.execute_batch(
        "INSERT INTO agent_groups (id, name, folder, created_at) VALUES ('second', 'Second', 'second', '2026-01-01T00:00:00.000Z');
         INSERT INTO user_roles (user_id, agent_group_id, role, granted_at) VALUES ('cli:local', 'second', 'owner', '2026-01-01T00:00:00.000Z');
         INSERT INTO wirings (id, messaging_group_id, agent_group_id, engage_mode, engage_pattern, created_at)
             VALUES ('w-second', 'cli:local', 'second', 'pattern', '.', '2026-01-01T00:00:00.000Z');",
    )
    .unwrap();
    std::fs::create_dir_all(fixture.groups_dir().join("second")).unwrap();
    drop(conn);

    model.push(Reply::Hang);
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    client
        .request(&Request::Send {
            text: "hello both".into(),
        })
        .await
        .unwrap();
    model.wait_for_requests(1, WAIT).await.unwrap();
    let install = install_id(&fixture.data_dir()).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let running = containers(&docker, &install, false).await;
    assert_eq!(running.len(), 1, "one slot: the other session waits");
    assert_eq!(model.request_count(), 1);

    // The first container dies; the waiting session gets the slot before the first one's retry.
    let options = KillContainerOptionsBuilder::default()
        .signal("SIGKILL")
        .build();
    docker
        .kill_container(&running[0], Some(options))
        .await
        .unwrap();
    let mut replies = 0;
    while replies < 2 {
        client
            .wait_for(|e| matches!(e, Event::Chat(ChatEvent::Reply { .. })))
            .await
            .unwrap();
        replies += 1;
        assert!(containers(&docker, &install, false).await.len() <= 1);
    }
    assert_eq!(model.request_count(), 3);
    assert!(
        fixture.logs().contains("every container slot is taken"),
        "{}",
        fixture.logs()
    );
    fixture.stop().await.unwrap();
}

#[tokio::test]
async fn a_task_script_runs_in_the_container_before_the_model() {
    let (model, mut fixture, _docker) = docker_setup().await;
    // A zone without daylight saving time, so its offset is known.
    fixture.set("TIMEZONE", "Asia/Kolkata");
    fixture.start().await.unwrap();
    let _cleanup = Cleanup {
        data_dir: fixture.data_dir(),
    };
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let mut schedule = async |prompt: &str, script: &str| {
        task_id(
            &agent_calls(
                &mut client,
                &model,
                "watch the build",
                "schedule_task",
                // Yearly: only the runs the test starts by hand happen while it runs.
                json!({ "prompt": prompt, "cron": "0 0 1 1 *", "script": script }),
            )
            .await,
        )
    };
    let quiet = schedule(
        "Nothing to say.",
        "pwd > quiet-ran-in; echo '{\"wakeAgent\": false}'",
    )
    .await;
    // What a real gate does: talk on its way, look at the (local) time, keep state in /tmp
    // and in the workspace, and end with the verdict.
    let loud = schedule(
        "Tell me what broke.",
        r#"echo "checking the build"
date +%z > loud-offset
echo 40 > /tmp/base
echo 2 > loud-step
n=$(( $(cat /tmp/base) + $(cat loud-step) ))
echo "found $n"
printf '{"wakeAgent": true, "data": {"n": %d}}\n' "$n""#,
    )
    .await;

    let before = model.request_count();
    tasks_json(&fixture, &["run-now", &quiet]).await;
    let quiet_run = wait_task(&fixture, &quiet, |t| t["runs"][0]["outcome"] != "fired").await;
    assert_eq!(
        model.request_count(),
        before,
        "no request reached the model"
    );
    assert_eq!(
        (
            &quiet_run["runs"][0]["outcome"],
            &quiet_run["runs"][0]["detail"]
        ),
        (
            &json!("script-false"),
            &json!("the script said wakeAgent: false")
        ),
        "{quiet_run:#}\n{}",
        fixture.logs()
    );
    // It ran in the session's workspace, inside the container.
    let session = quiet_run["task"]["session"].as_str().unwrap();
    let workspace = session_dir(&fixture, session).join("workspace");
    assert_eq!(
        std::fs::read_to_string(workspace.join("quiet-ran-in")).unwrap(),
        "/workspace\n"
    );

    tasks_json(&fixture, &["run-now", &loud]).await;
    let (_, seq) = task_reply(&mut client, "Tell me what broke.").await;
    let read = task_as_read(&model, seq);
    assert!(
        read.contains("<script_output>{&quot;n&quot;:42}</script_output>"),
        "{read}"
    );
    assert!(
        !read.contains("checking the build"),
        "only the data: {read}"
    );
    assert_eq!(
        std::fs::read_to_string(workspace.join("loud-offset")).unwrap(),
        "+0530\n",
        "the script's TZ is TIMEZONE, and the image knows the zone"
    );
    let loud_run = wait_task(&fixture, &loud, |t| t["runs"][0]["outcome"] != "fired").await;
    assert_eq!(loud_run["runs"][0]["outcome"], "completed", "{loud_run:#}");
    assert_eq!(loud_run["runs"][0]["detail"], "the script woke the agent");
    assert!(model.violations().is_empty(), "{:?}", model.violations());
    fixture.stop().await.unwrap();
}

/// A fork bomb and processes that leave the call's process group (`setsid`) fill the
/// container's pid limit, but nothing of them outlives the call: the next call runs at once,
/// and the container holds only the runner's own processes afterwards.
#[tokio::test]
async fn a_fork_bomb_ends_with_its_call_and_the_next_call_runs() {
    let (model, mut fixture, docker) = docker_setup().await;
    let agent = fixture.groups_dir().join("default");
    std::fs::create_dir_all(&agent).unwrap();
    std::fs::write(agent.join("container.json"), r#"{"pids_limit": 64}"#).unwrap();
    fixture.start().await.unwrap();
    let _cleanup = Cleanup {
        data_dir: fixture.data_dir(),
    };
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "run_bash",
        json!({
            "command": "b(){ b | b & }; b; for i in $(seq 100); do setsid sleep 600 & done; echo launched",
            "timeout_ms": 5000
        }),
    )]));
    model.push(Reply::ToolCalls(vec![ToolCall::new(
        "run_bash",
        json!({"command": "echo second call"}),
    )]));
    model.push(Reply::Hang);
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, _seq) = client.send("go wild").await.unwrap();
    let requests = model.wait_for_requests(3, WAIT).await.unwrap();
    let results = tool_results(&requests[2]);
    assert_eq!(
        results.last().map(String::as_str),
        Some("second call\n"),
        "{results:?}"
    );
    let id = container_of(&docker, &session, None).await.id.unwrap();
    // Processes in the container: agent-runner, mcp-tools, and this exec's shell and ls.
    let (_, out) = exec(&docker, &id, "ls /proc | grep -c '^[0-9]'").await;
    let count: u32 = out.trim().parse().unwrap_or(u32::MAX);
    assert!(
        count <= 6,
        "{count} processes left in the container:\n{out}"
    );
    fixture.stop().await.unwrap();
}

/// The journal of one of a session's databases, read the way `clawbox status` opens them.
fn journal_of(db: &std::path::Path) -> String {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .unwrap()
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap()
}

/// Both journal modes through a real container: in WAL mode the runner reads `inbound.db`
/// through the read-only mount (SQLite maps the host's `-shm` read-only there), sees every
/// message as soon as it is committed and answers each once; the rollback journal (what
/// `auto` picks across a VM boundary) works as before.
#[tokio::test]
async fn the_mailbox_works_through_the_read_only_mount_in_both_journal_modes() {
    use std::os::unix::fs::MetadataExt;
    for journal in ["wal", "delete"] {
        let (_model, mut fixture, _docker) = docker_setup().await;
        fixture.set("MAILBOX_JOURNAL", journal);
        fixture.start().await.unwrap();
        let _cleanup = Cleanup {
            data_dir: fixture.data_dir(),
        };
        let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
        let mut session = String::new();
        let mut seqs = Vec::new();
        for i in 0..8 {
            let (s, seq) = client.send(&format!("message {i}")).await.unwrap();
            assert_eq!(
                client.done(seq).await.unwrap(),
                (InboundStatus::Completed, None),
                "{journal}: {}",
                fixture.logs()
            );
            session = s;
            seqs.push(seq);
        }
        client.settle(Duration::from_millis(300)).await;
        for (i, seq) in seqs.iter().enumerate() {
            assert_eq!(
                client.replies_to(*seq),
                vec![format!("echo: message {i}")],
                "{journal}"
            );
        }
        let dir = session_dir(&fixture, &session);
        assert_eq!(journal_of(&dir.join("inbound/inbound.db")), journal);
        assert_eq!(journal_of(&dir.join("outbound/outbound.db")), journal);
        if journal == "wal" {
            // The host made inbound's WAL files (the container could not, read-only); the
            // runner made outbound's, as its own user.
            // SAFETY: geteuid has no preconditions.
            let host_uid = unsafe { libc::geteuid() };
            for name in ["inbound/inbound.db-wal", "inbound/inbound.db-shm"] {
                assert_eq!(dir.join(name).metadata().unwrap().uid(), host_uid, "{name}");
            }
            for name in ["outbound/outbound.db-wal", "outbound/outbound.db-shm"] {
                let meta = dir.join(name).metadata().unwrap();
                assert_eq!(meta.uid(), expected_uid(), "{name}");
            }
        }
        fixture.stop().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Image tags by content

/// A fixture for the docker runtime with no `CONTAINER_IMAGE` (the content tag) and its own
/// copies of the debug `agent-runner` and `mcp-tools`, made another version by `marker`
/// (bytes appended to the runner: the hash sees another binary, the ELF still runs).
async fn content_tagged(marker: &str) -> (FakeModel, HostFixture) {
    let (model, mut fixture) = setup().await;
    let bin = fixture.root().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let debug = std::path::Path::new(env!("CARGO_BIN_EXE_clawbox")).with_file_name("agent-runner");
    set_binaries(&bin, &debug, marker);
    fixture
        .set("CONTAINER_RUNTIME", "docker")
        .set(
            "CLAWBOX_RUNNER_BIN",
            bin.join("agent-runner").display().to_string(),
        )
        .set("OPENAI_API_KEY", REAL_KEY);
    if let Some(h) = docker_host() {
        fixture.set("DOCKER_HOST", h);
    }
    (model, fixture)
}

/// Puts copies of `debug_runner` and its sibling `mcp-tools` in `bin`, the runner with
/// `marker` appended (a unique marker per run: other runs' images never collide with these).
fn set_binaries(bin: &std::path::Path, debug_runner: &std::path::Path, marker: &str) {
    use std::io::Write as _;
    std::fs::copy(
        debug_runner.with_file_name("mcp-tools"),
        bin.join("mcp-tools"),
    )
    .unwrap();
    std::fs::copy(debug_runner, bin.join("agent-runner")).unwrap();
    let mut runner = std::fs::OpenOptions::new()
        .append(true)
        .open(bin.join("agent-runner"))
        .unwrap();
    let unique = format!(
        "\n{marker} {} {:?}\n",
        std::process::id(),
        std::time::SystemTime::now()
    );
    runner.write_all(unique.as_bytes()).unwrap();
}

/// Sets the fixture's binaries to another version.
fn new_version(fixture: &HostFixture, marker: &str) {
    let debug = std::path::Path::new(env!("CARGO_BIN_EXE_clawbox")).with_file_name("agent-runner");
    set_binaries(&fixture.root().join("bin"), &debug, marker);
}

/// `clawbox image build` for the fixture's install: the tag it printed, and its stderr.
async fn image_build(fixture: &HostFixture) -> (String, String) {
    let out = fixture.command(&["image", "build"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tag = stdout
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(tag.starts_with("clawbox-agent:"), "{stdout}");
    (tag, stderr)
}

async fn image_id(docker: &Docker, tag: &str) -> Option<String> {
    match docker.inspect_image(tag).await {
        Ok(image) => image.id,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => None,
        Err(e) => panic!("inspect {tag}: {e}"),
    }
}

/// Removes images (and the containers named) when the test ends, passed or failed.
struct RemoveImages {
    tags: Vec<String>,
    containers: Vec<String>,
}

impl Drop for RemoveImages {
    fn drop(&mut self) {
        let (tags, containers) = (self.tags.clone(), self.containers.clone());
        let _ = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            rt.block_on(async move {
                let Ok(docker) =
                    host::runtime::docker::connect_engine(docker_host().as_deref()).await
                else {
                    return;
                };
                for c in containers {
                    let options =
                        bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                            .force(true)
                            .build();
                    let _ = docker.remove_container(&c, Some(options)).await;
                }
                for tag in tags {
                    let _ = host::runtime::image::remove(&docker, &tag).await;
                }
            });
        })
        .join();
    }
}

#[tokio::test]
async fn two_versions_get_two_tags_and_a_rebuild_of_the_same_binaries_is_a_no_op() {
    let docker = engine().await;
    let (_m1, one) = content_tagged("one").await;
    let (_m2, two) = content_tagged("two").await;
    let (tag_one, _) = image_build(&one).await;
    let (tag_two, _) = image_build(&two).await;
    let _remove = RemoveImages {
        tags: vec![tag_one.clone(), tag_two.clone()],
        containers: vec![],
    };
    assert_ne!(tag_one, tag_two);
    let id_one = image_id(&docker, &tag_one)
        .await
        .expect("the first version's image");
    assert!(
        image_id(&docker, &tag_two).await.is_some(),
        "both versions coexist"
    );

    // The same bytes written again (a new mtime, so the stamp misses and the hash decides).
    let runner = one.root().join("bin/agent-runner");
    let bytes = std::fs::read(&runner).unwrap();
    std::fs::write(&runner, &bytes).unwrap();
    let (again, stderr) = image_build(&one).await;
    assert_eq!(again, tag_one);
    assert!(
        stderr.contains("is already built from these binaries; nothing to do"),
        "{stderr}"
    );
    assert_eq!(image_id(&docker, &tag_one).await, Some(id_one));
    assert!(image_id(&docker, &tag_two).await.is_some());
}

#[tokio::test]
async fn a_build_removes_this_installs_older_tags_only() {
    let docker = engine().await;
    let (_m1, one) = content_tagged("old").await;
    let (_m2, other) = content_tagged("other install").await;
    let (old, _) = image_build(&one).await;
    let (others, _) = image_build(&other).await;
    let mut remove = RemoveImages {
        tags: vec![old.clone(), others.clone()],
        containers: vec![],
    };

    new_version(&one, "new");
    let (new, stderr) = image_build(&one).await;
    remove.tags.push(new.clone());
    assert_ne!(new, old);
    assert!(
        stderr.contains(&format!(
            "removed {old}, an older agent image of this install"
        )),
        "{stderr}"
    );
    assert_eq!(
        image_id(&docker, &old).await,
        None,
        "this install's old tag is gone"
    );
    assert!(image_id(&docker, &new).await.is_some());
    assert!(
        image_id(&docker, &others).await.is_some(),
        "another install's image is never removed"
    );

    // An image a container was created from is kept.
    let container = docker
        .create_container(
            None::<bollard::query_parameters::CreateContainerOptions>,
            bollard::models::ContainerCreateBody {
                image: Some(new.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .id;
    remove.containers.push(container);
    new_version(&one, "newer");
    let (newer, stderr) = image_build(&one).await;
    remove.tags.push(newer.clone());
    assert!(!stderr.contains(&format!("removed {new}")), "{stderr}");
    assert!(image_id(&docker, &new).await.is_some(), "in use: kept");
    assert!(image_id(&docker, &newer).await.is_some());
    assert!(image_id(&docker, &others).await.is_some());
}

/// Doctor, the start's automatic build and `clawbox status` name the same content tag.
#[tokio::test]
async fn doctor_the_start_and_status_agree_on_the_content_tag() {
    let docker = engine().await;
    let (model, mut fixture) = content_tagged("auto").await;
    model.serve_models(&["fake-model"]);
    let doctor = fixture
        .command(&["doctor", "--json"])
        .output()
        .await
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&doctor.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&doctor.stdout)));
    let image = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "image")
        .unwrap_or_else(|| panic!("no image check: {report}"))["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    let tag = image
        .strip_suffix(" is not built yet")
        .unwrap_or_else(|| panic!("{image}"))
        .to_owned();
    let _remove = RemoveImages {
        tags: vec![tag.clone()],
        containers: vec![],
    };
    assert!(tag.starts_with("clawbox-agent:"), "{tag}");

    fixture.start().await.unwrap();
    let _cleanup = Cleanup {
        data_dir: fixture.data_dir(),
    };
    let logs = fixture.logs();
    assert!(
        logs.contains(&format!("agent image {tag} not found; building it")),
        "{logs}"
    );
    assert!(image_id(&docker, &tag).await.is_some());
    let status = fixture
        .command(&["status", "--json"])
        .output()
        .await
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["host"]["image"], tag.as_str(), "{status}");
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (_, seq) = client.send("hi").await.unwrap();
    assert_eq!(client.done(seq).await.unwrap().0, InboundStatus::Completed);
    fixture.stop().await.unwrap();

    // The same binaries: the next start and `image build` find it built.
    fixture.start().await.unwrap();
    assert_eq!(fixture.logs().matches("building it").count(), 1);
    fixture.stop().await.unwrap();
    assert_eq!(image_build(&fixture).await.0, tag);
    assert!(model.violations().is_empty());
}

/// The disk-fill attack of quota.rs in a container: the file-size limit (`--ulimit fsize`)
/// stops the big write at the room left, the host's watcher stops the container once the
/// session is over `SESSION_DISK_MB`, the chat is told, and the helper agent's container keeps
/// answering.
#[tokio::test]
async fn a_disk_filling_container_is_stopped_at_its_quota() {
    let (model, mut fixture, docker) = docker_setup().await;
    let marker = "97.75";
    let (client, session) = super::quota::fill_the_disk(&model, &mut fixture, marker).await;
    let _cleanup = Cleanup {
        data_dir: fixture.data_dir(),
    };
    assert!(
        super::quota::attack_ended(marker).await,
        "the container and its tool were stopped"
    );
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("clawbox.session={session}")],
    )]);
    let options = ListContainersOptionsBuilder::default()
        .filters(&filters)
        .build();
    assert!(
        docker
            .list_containers(Some(options))
            .await
            .unwrap()
            .is_empty(),
        "the session's container is not running"
    );
    super::quota::refused_until_cleaned(client, &mut fixture, &session).await;
    fixture.stop().await.unwrap();
}
