//! `create-agent` as the real binary against a real central DB in a temporary directory: create,
//! re-run, a second chat, every validation error (nothing written), `--remove`, `--list --json`,
//! `--cli`, and an agent added while the host runs answering the next terminal message.

use std::path::{Path, PathBuf};
use std::process::Output;

use host::admin::protocol::Event;
use host::channels::cli::ChatEvent;
use pretty_assertions::assert_eq;
use rusqlite::Connection;
use testkit::Reply;

use super::support::*;

const BIN: &str = env!("CARGO_BIN_EXE_create-agent");

/// A `DATA_DIR` and `GROUPS_DIR` of their own.
struct Dirs {
    root: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Dirs {
    fn new() -> Dirs {
        let tmp = tempfile::tempdir().unwrap();
        Dirs {
            root: tmp.path().to_owned(),
            _tmp: Some(tmp),
        }
    }

    fn data(&self) -> PathBuf {
        self.root.join("data")
    }

    fn groups(&self) -> PathBuf {
        self.root.join("groups")
    }

    /// Runs `create-agent` in `root` (so no stray `.env` is read) with only these directories set.
    fn run(&self, args: &[&str]) -> Output {
        let mut cmd = std::process::Command::new(BIN);
        cmd.args(args)
            .env_clear()
            .env("DATA_DIR", self.data())
            .env("GROUPS_DIR", self.groups())
            .current_dir(&self.root);
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.output().unwrap()
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn db(&self) -> Connection {
        Connection::open(self.data().join("clawbox.db")).unwrap()
    }

    /// Every row of the provisioning tables, in a stable order.
    fn dump(&self) -> Vec<String> {
        let conn = self.db();
        let mut rows = Vec::new();
        for (table, order) in [
            ("agent_groups", "id"),
            ("messaging_groups", "id"),
            ("wirings", "id"),
            ("users", "id"),
            ("user_roles", "user_id, agent_group_id"),
            ("destinations", "agent_group_id, name"),
            ("sessions", "id"),
        ] {
            let mut stmt = conn
                .prepare(&format!("SELECT * FROM {table} ORDER BY {order}"))
                .unwrap();
            let n = stmt.column_count();
            let mut q = stmt.query([]).unwrap();
            while let Some(r) = q.next().unwrap() {
                let cols: Vec<String> = (0..n)
                    .map(|i| format!("{:?}", r.get::<_, rusqlite::types::Value>(i).unwrap()))
                    .collect();
                rows.push(format!("{table}: {}", cols.join(" | ")));
            }
        }
        rows
    }

    fn one<T: rusqlite::types::FromSql>(&self, sql: &str) -> T {
        self.db().query_row(sql, [], |r| r.get(0)).unwrap()
    }

    fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries {
                let p = e.unwrap().path();
                out.push(p.clone());
                if p.is_dir() {
                    walk(&p, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.groups(), &mut out);
        out.sort();
        out
    }
}

/// (engage_mode, engage_pattern, sticky_window_s, session_mode) of one wiring.
fn wiring(d: &Dirs, chat: &str, agent: &str) -> (String, Option<String>, i64, String) {
    d.db()
        .query_row(
            "SELECT w.engage_mode, w.engage_pattern, w.sticky_window_s, w.session_mode
             FROM wirings w JOIN messaging_groups m ON m.id = w.messaging_group_id
             WHERE m.channel_type || ':' || m.platform_id = ?1 AND w.agent_group_id = ?2",
            [chat, agent],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
}

fn destinations(d: &Dirs, agent: &str) -> Vec<(String, String, String, String)> {
    let conn = d.db();
    let mut stmt = conn
        .prepare(
            "SELECT name, channel_type, platform_id, created_at FROM destinations
             WHERE agent_group_id = ?1 ORDER BY name",
        )
        .unwrap();
    stmt.query_map([agent], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

#[test]
fn creates_an_agent_wired_to_a_telegram_group() {
    let d = Dirs::new();
    let out = d.ok(&[
        "--agent-id",
        "sales",
        "--agent-name",
        "Sales bot",
        "--agent-folder",
        "sales-folder",
        "--telegram-chat-id",
        "-1001234",
        "--owner-user-id",
        "telegram:42",
    ]);
    assert!(out.starts_with("created agent sales"), "{out}");
    assert_eq!(
        d.one::<String>("SELECT name || '/' || folder || '/' || COALESCE(model, '-') FROM agent_groups WHERE id = 'sales'"),
        "Sales bot/sales-folder/-"
    );
    assert_eq!(
        d.one::<String>(
            "SELECT id || ' ' || is_group || ' ' || unknown_sender_policy FROM messaging_groups
             WHERE channel_type = 'telegram' AND platform_id = '-1001234'"
        ),
        "mg:telegram:-1001234 1 strict"
    );
    assert_eq!(
        wiring(&d, "telegram:-1001234", "sales"),
        ("mention-sticky".into(), None, 1800, "shared".into())
    );
    let dest: Vec<_> = destinations(&d, "sales")
        .into_iter()
        .map(|(n, c, p, _)| (n, c, p))
        .collect();
    assert_eq!(
        dest,
        vec![(
            "telegram--1001234".to_owned(),
            "telegram".to_owned(),
            "-1001234".to_owned()
        )]
    );
    let conn = d.db();
    assert_eq!(
        host::db::role_of(&conn, "telegram:42", "sales")
            .unwrap()
            .as_deref(),
        Some("owner")
    );
    assert_eq!(
        host::db::role_of(&conn, "cli:local", "sales")
            .unwrap()
            .as_deref(),
        Some("owner")
    );
    // The defaults exist too, as if the host had run.
    assert_eq!(
        d.one::<i64>("SELECT COUNT(*) FROM wirings WHERE agent_group_id = 'default'"),
        1
    );
    for f in ["CLAUDE.md", "CLAUDE.local.md", "container.json", "skills"] {
        assert!(d.groups().join("sales-folder").join(f).exists(), "{f}");
    }
    // A private chat (positive id) is not a group.
    d.ok(&["--agent-id", "sales", "--telegram-chat-id", "777"]);
    assert_eq!(
        d.one::<i64>("SELECT is_group FROM messaging_groups WHERE platform_id = '777'"),
        0
    );
}

#[test]
fn rerun_changes_only_what_its_flags_name() {
    let d = Dirs::new();
    d.ok(&[
        "--agent-id",
        "sales",
        "--agent-name",
        "Sales",
        "--model",
        "model-a",
        "--telegram-chat-id",
        "-5",
        "--engage-mode",
        "pattern",
        "--engage-pattern",
        "(?i)sales",
        "--sticky-window",
        "30m",
        "--session-mode",
        "per-thread",
        "--unknown-sender-policy",
        "public",
        "--owner-user-id",
        "telegram:42",
    ]);
    let folder = d.groups().join("sales");
    std::fs::write(folder.join("CLAUDE.md"), "custom prompt").unwrap();
    let custom = r#"{"mcp_servers":[{"name":"time","command":"uvx","args":["mcp-server-time"]}],"memory_mb":2048}"#;
    std::fs::write(folder.join("container.json"), custom).unwrap();
    std::fs::write(folder.join("CLAUDE.local.md"), "memory").unwrap();
    assert_eq!(
        wiring(&d, "telegram:-5", "sales"),
        (
            "pattern".into(),
            Some("(?i)sales".into()),
            1800,
            "per-thread".into()
        )
    );
    let before = d.dump();

    // One changed flag: the sticky window.
    let out = d.ok(&[
        "--agent-id",
        "sales",
        "--telegram-chat-id",
        "-5",
        "--sticky-window",
        "90",
    ]);
    assert!(out.starts_with("updated agent sales"), "{out}");
    assert_eq!(
        wiring(&d, "telegram:-5", "sales"),
        (
            "pattern".into(),
            Some("(?i)sales".into()),
            90,
            "per-thread".into()
        )
    );
    let after = d.dump();
    let changed: Vec<_> = after.iter().filter(|r| !before.contains(r)).collect();
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert!(changed[0].starts_with("wirings:"), "{changed:?}");

    // Name and model: the chat, its policy and the files stay as they are.
    d.ok(&[
        "--agent-id",
        "sales",
        "--agent-name",
        "Renamed",
        "--model",
        "model-b",
    ]);
    assert_eq!(
        d.one::<String>("SELECT name || '/' || model FROM agent_groups WHERE id = 'sales'"),
        "Renamed/model-b"
    );
    assert_eq!(
        d.one::<String>(
            "SELECT unknown_sender_policy FROM messaging_groups WHERE platform_id = '-5'"
        ),
        "public"
    );
    assert_eq!(
        wiring(&d, "telegram:-5", "sales"),
        (
            "pattern".into(),
            Some("(?i)sales".into()),
            90,
            "per-thread".into()
        )
    );
    // Switching to a mention mode drops the pattern; `--model ""` goes back to DEFAULT_MODEL.
    d.ok(&[
        "--agent-id",
        "sales",
        "--telegram-chat-id",
        "-5",
        "--engage-mode",
        "mention",
        "--model",
        "",
    ]);
    assert_eq!(
        wiring(&d, "telegram:-5", "sales"),
        ("mention".into(), None, 90, "per-thread".into())
    );
    assert_eq!(
        d.one::<Option<String>>("SELECT model FROM agent_groups WHERE id = 'sales'"),
        None
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("CLAUDE.md")).unwrap(),
        "custom prompt"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("container.json")).unwrap(),
        custom
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("CLAUDE.local.md")).unwrap(),
        "memory"
    );
}

#[test]
fn a_second_chat_gets_its_own_destination_and_replies_stay_in_their_chat() {
    let d = Dirs::new();
    d.ok(&["--agent-id", "sales", "--telegram-chat-id", "-111"]);
    let first = destinations(&d, "sales");
    assert_eq!(first.len(), 1);
    d.ok(&["--agent-id", "sales", "--telegram-chat-id", "-222"]);
    let both = destinations(&d, "sales");
    assert_eq!(both.len(), 2);
    // The first chat's destination is exactly as it was (clawside re-pointed it).
    assert!(both.contains(&first[0]), "{both:?}");
    assert_eq!(both[1].0, "telegram--222");
    assert_eq!(both[1].2, "-222");

    // A session in each chat answers into its own chat.
    let mut conn = d.db();
    for chat in ["-111", "-222"] {
        let mg = host::db::messaging_group_by_platform(&conn, "telegram", chat)
            .unwrap()
            .unwrap();
        let w = host::db::wirings_of(&conn, &mg.id).unwrap().remove(0);
        let info =
            host::session::resolve::resolve(&mut conn, &d.data().join("sessions"), &w, &mg, None)
                .unwrap();
        assert_eq!(info.route.channel_type, "telegram");
        assert_eq!(info.route.platform_id, chat);
        assert_eq!(info.destinations.len(), 2);
    }
}

#[test]
fn every_validation_error_names_its_flag_and_writes_nothing() {
    let d = Dirs::new();
    d.ok(&["--agent-id", "sales", "--telegram-chat-id", "-1"]);
    std::fs::write(d.groups().join("sales/CLAUDE.md"), "mine").unwrap();
    let before = d.dump();
    let files = d.files();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--agent-id", "x", "--agent-folder", "../x"],
            "--agent-folder",
        ),
        (
            &["--agent-id", "x", "--agent-folder", "/etc"],
            "--agent-folder",
        ),
        (
            &["--agent-id", "x", "--agent-folder", "a/b"],
            "--agent-folder",
        ),
        (
            &["--agent-id", "x", "--agent-folder", ".hidden"],
            "--agent-folder",
        ),
        (
            &["--agent-id", "x", "--agent-folder", ".."],
            "--agent-folder",
        ),
        (
            &["--agent-id", "x", "--agent-folder", "global"],
            "--agent-folder",
        ),
        (
            &["--agent-id", "x", "--agent-folder", "sales"],
            "--agent-folder",
        ),
        (
            &["--agent-id", "sales", "--agent-folder", "other"],
            "--agent-folder",
        ),
        (&["--agent-id", "bad/id"], "--agent-id"),
        (&["--agent-id", ".x"], "--agent-id"),
        (&["--agent-name", "x"], "--agent-id"),
        (
            &["--agent-id", "x", "--telegram-chat-id", "abc"],
            "--telegram-chat-id",
        ),
        (
            &["--agent-id", "x", "--telegram-chat-id", "12.5"],
            "--telegram-chat-id",
        ),
        (
            &["--agent-id", "x", "--telegram-chat-id", "0"],
            "--telegram-chat-id",
        ),
        (
            &["--agent-id", "x", "--telegram-chat-id", "@group"],
            "--telegram-chat-id",
        ),
        (
            &["--agent-id", "x", "--owner-user-id", "bob"],
            "--owner-user-id",
        ),
        (
            &["--agent-id", "x", "--owner-user-id", "telegram:@bob"],
            "5-32",
        ),
        (
            &["--agent-id", "x", "--owner-user-id", "telegram:12a"],
            "--owner-user-id",
        ),
        (
            &[
                "--agent-id",
                "x",
                "--telegram-chat-id",
                "5",
                "--engage-mode",
                "sometimes",
            ],
            "--engage-mode",
        ),
        (
            &[
                "--agent-id",
                "x",
                "--telegram-chat-id",
                "5",
                "--engage-mode",
                "pattern",
                "--engage-pattern",
                "(unclosed",
            ],
            "--engage-pattern",
        ),
        (
            &[
                "--agent-id",
                "x",
                "--telegram-chat-id",
                "5",
                "--engage-mode",
                "pattern",
            ],
            "--engage-pattern",
        ),
        (
            &[
                "--agent-id",
                "x",
                "--telegram-chat-id",
                "5",
                "--engage-pattern",
                "hi",
            ],
            "--engage-pattern",
        ),
        (
            &[
                "--agent-id",
                "x",
                "--telegram-chat-id",
                "5",
                "--session-mode",
                "bogus",
            ],
            "--session-mode",
        ),
        (
            &[
                "--agent-id",
                "x",
                "--telegram-chat-id",
                "5",
                "--unknown-sender-policy",
                "lenient",
            ],
            "--unknown-sender-policy",
        ),
        (
            &[
                "--agent-id",
                "x",
                "--telegram-chat-id",
                "5",
                "--ignored-messages",
                "keep",
            ],
            "--ignored-messages",
        ),
        (
            &[
                "--agent-id",
                "x",
                "--telegram-chat-id",
                "5",
                "--sticky-window",
                "5x",
            ],
            "--sticky-window",
        ),
        (
            &[
                "--agent-id",
                "x",
                "--telegram-chat-id",
                "5",
                "--sticky-window",
                "-1",
            ],
            "--sticky-window",
        ),
        (
            &["--agent-id", "x", "--sticky-window", "30m"],
            "--telegram-chat-id",
        ),
        (&["--agent-id", "default", "--remove"], "--remove"),
        (&["--agent-id", "nobody", "--remove"], "--agent-id"),
        (&["--agent-id", "sales", "--remove", "--cli"], "--cli"),
        (&["--list", "--remove", "--agent-id", "sales"], "--remove"),
    ];
    for (args, flag) in cases {
        let out = d.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
        assert_eq!(d.dump(), before, "{args:?} wrote to the DB");
        assert_eq!(d.files(), files, "{args:?} wrote files");
    }
    assert_eq!(
        std::fs::read_to_string(d.groups().join("sales/CLAUDE.md")).unwrap(),
        "mine"
    );

    // A destination of that name already points elsewhere: refused (status 1), not re-pointed.
    d.db()
        .execute(
            "INSERT INTO destinations (agent_group_id, name, channel_type, platform_id, created_at)
             VALUES ('sales', 'telegram-9', 'telegram', '10', 'x')",
            [],
        )
        .unwrap();
    let before = d.dump();
    let out = d.run(&["--agent-id", "sales", "--telegram-chat-id", "9"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refusing to re-point"), "{stderr}");
    assert_eq!(d.dump(), before);
}

#[test]
fn remove_drops_the_rows_and_keeps_the_files() {
    let d = Dirs::new();
    d.ok(&[
        "--agent-id",
        "sales",
        "--telegram-chat-id",
        "-1",
        "--owner-user-id",
        "telegram:42",
        "--cli",
    ]);
    d.ok(&["--agent-id", "support", "--telegram-chat-id", "-2"]);
    let session_data = d.data().join("sessions/sales/sess-1/workspace");
    std::fs::create_dir_all(&session_data).unwrap();
    std::fs::write(session_data.join("notes.txt"), "kept").unwrap();
    d.db()
        .execute(
            "INSERT INTO sessions (id, agent_group_id, messaging_group_id, last_activity, created_at)
             VALUES ('sess-1', 'sales', 'mg:telegram:-1', 'x', 'x')",
            [],
        )
        .unwrap();
    // A session with a live runner blocks removal.
    d.db()
        .execute("UPDATE sessions SET runner_state = 'running'", [])
        .unwrap();
    let before = d.dump();
    let out = d.run(&["--agent-id", "sales", "--remove"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(d.dump(), before);
    d.db()
        .execute("UPDATE sessions SET runner_state = 'stopped'", [])
        .unwrap();

    let out = d.ok(&["--agent-id", "sales", "--remove"]);
    assert!(
        out.contains(&d.data().join("sessions/sales").display().to_string()),
        "{out}"
    );
    for (table, column) in [
        ("agent_groups", "id"),
        ("wirings", "agent_group_id"),
        ("user_roles", "agent_group_id"),
        ("destinations", "agent_group_id"),
        ("sessions", "agent_group_id"),
    ] {
        assert_eq!(
            d.one::<i64>(&format!(
                "SELECT COUNT(*) FROM {table} WHERE {column} = 'sales'"
            )),
            0,
            "{table}"
        );
    }
    // Its chat is gone, the others' and the terminal's stay; the default agent is untouched.
    let chats: Vec<String> = {
        let conn = d.db();
        let mut stmt = conn
            .prepare("SELECT id FROM messaging_groups ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    assert_eq!(chats, vec!["cli:local", "mg:telegram:-2"]);
    assert_eq!(
        d.one::<i64>("SELECT COUNT(*) FROM wirings WHERE agent_group_id = 'default'"),
        1
    );
    assert!(d.groups().join("sales/CLAUDE.md").is_file());
    assert_eq!(
        std::fs::read_to_string(session_data.join("notes.txt")).unwrap(),
        "kept"
    );
    // Creating it again starts from the kept folder.
    d.ok(&["--agent-id", "sales"]);
}

#[test]
fn list_json_and_cli_wiring() {
    let d = Dirs::new();
    d.ok(&[
        "--agent-id",
        "helper",
        "--agent-name",
        "Helper",
        "--model",
        "m",
        "--cli",
        "--telegram-chat-id",
        "-3",
        "--owner-user-id",
        "telegram:7",
    ]);
    // The terminal wiring answers every message (a terminal has no mentions), next to `default`.
    assert_eq!(
        wiring(&d, "cli:local", "helper"),
        ("pattern".into(), Some(".".into()), 600, "shared".into())
    );
    assert_eq!(
        wiring(&d, "cli:local", "default"),
        ("pattern".into(), Some(".".into()), 600, "shared".into())
    );

    let text = d.ok(&["--list"]);
    assert!(text.contains("helper  \"Helper\""), "{text}");
    let json: serde_json::Value = serde_json::from_str(&d.ok(&["--list", "--json"])).unwrap();
    let agents = json["agents"].as_array().unwrap();
    let ids: Vec<&str> = agents.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, vec!["default", "helper"]);
    let helper = &agents[1];
    assert_eq!(helper["name"], "Helper");
    assert_eq!(helper["folder"], "helper");
    assert_eq!(helper["model"], "m");
    let chats: Vec<String> = helper["wirings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            format!(
                "{}:{} {}",
                w["channel_type"].as_str().unwrap(),
                w["platform_id"].as_str().unwrap(),
                w["engage_mode"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        chats,
        vec!["cli:local pattern", "telegram:-3 mention-sticky"]
    );
    let dests: Vec<&str> = helper["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["name"].as_str().unwrap())
        .collect();
    assert_eq!(dests, vec!["cli", "telegram--3"]);
    let roles: Vec<String> = helper["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["role"].as_str().unwrap(),
                r["user_id"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(roles, vec!["owner cli:local", "owner telegram:7"]);
    // `--cli` again is a no-op.
    let before = d.dump();
    d.ok(&["--agent-id", "helper", "--cli"]);
    assert_eq!(d.dump(), before);
}

/// An agent created with `--cli` while the host runs answers the next terminal message, next to
/// the default agent: the router reads wirings from the DB on every message.
#[tokio::test]
async fn an_agent_added_while_the_host_runs_answers_the_terminal() {
    let (model, mut fixture) = setup().await;
    fixture.start().await.unwrap();
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (_, seq) = client.send("before").await.unwrap();
    client.done(seq).await.unwrap();

    let d = Dirs {
        root: fixture.root().to_owned(),
        _tmp: None,
    };
    d.ok(&["--agent-id", "helper", "--cli", "--model", "helper-model"]);
    model.push_for("helper-model", Reply::text("helper here"));

    let (default_session, seq) = client.send("hello").await.unwrap();
    let helper_reply = client
        .wait_for(
            |e| matches!(e, Event::Chat(ChatEvent::Reply { text, .. }) if text == "helper here"),
        )
        .await
        .unwrap();
    let Event::Chat(ChatEvent::Reply { session_id, .. }) = helper_reply else {
        unreachable!()
    };
    assert_ne!(session_id, default_session);
    assert!(
        fixture
            .data_dir()
            .join("sessions/helper")
            .join(&session_id)
            .is_dir()
    );
    // The default agent still answers too.
    assert_eq!(
        client.done(seq).await.unwrap().0,
        mailbox::InboundStatus::Completed
    );
    assert_eq!(client.replies_to(seq), vec!["echo: hello".to_owned()]);
    fixture.stop().await.unwrap();
}

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Agent folders, session folders and the databases are private to the host's user: a new
/// agent's folder is 0700 with 0600 files, an agent folder left world-readable by an older
/// install is closed at start, and a session's folders and mailbox files are 0700/0600.
#[tokio::test]
async fn agent_and_session_folders_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let (_model, mut fixture) = setup().await;
    // What an older install left: a world-readable agent folder and memory.
    let default = fixture.groups_dir().join("default");
    std::fs::create_dir_all(&default).unwrap();
    std::fs::write(
        default.join("CLAUDE.local.md"),
        "remember: the door code is 1234",
    )
    .unwrap();
    for (path, mode) in [(&default, 0o755), (&default.join("CLAUDE.local.md"), 0o644)] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let d = Dirs {
        root: fixture.root().to_owned(),
        _tmp: None,
    };
    d.ok(&["--agent-id", "helper", "--cli"]);
    let helper = fixture.groups_dir().join("helper");
    assert_eq!(mode_of(&helper), 0o700);
    assert_eq!(mode_of(&helper.join("skills")), 0o700);
    for file in ["CLAUDE.md", "CLAUDE.local.md", "container.json"] {
        assert_eq!(mode_of(&helper.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode_of(&fixture.data_dir().join("clawbox.db")), 0o600);

    fixture.start().await.unwrap();
    assert_eq!(mode_of(&default), 0o700, "tightened at start");
    let mut client = Client::attach(&fixture.socket_path()).await.unwrap();
    let (session, seq) = client.send("hello").await.unwrap();
    assert_eq!(
        client.done(seq).await.unwrap().0,
        mailbox::InboundStatus::Completed
    );
    let dir = session_dir(&fixture, &session);
    for sub in ["", "inbound", "outbound", "workspace"] {
        assert_eq!(mode_of(&dir.join(sub)), 0o700, "{sub:?}");
    }
    assert_eq!(mode_of(&fixture.data_dir().join("sessions/default")), 0o700);
    for file in ["inbound/inbound.db", "outbound/outbound.db"] {
        assert_eq!(mode_of(&dir.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode_of(&fixture.data_dir().join("clawbox.db")), 0o600);
    fixture.stop().await.unwrap();
}
