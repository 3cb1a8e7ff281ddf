//! Skills in the system prompt: built-in ones from `CLAWBOX_SKILLS_DIR`, the agent's overriding
//! them by name, triggers decided per turn, files re-read for every turn.

use std::path::Path;

use testkit::{FakeModel, Reply};

use super::harness::{RUN_LIMIT, Session, system_prompt};

fn write_skill(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join("SKILL.md"), text).unwrap();
}

#[tokio::test]
async fn skills_are_inlined_by_trigger_listed_otherwise_and_reread_every_turn() {
    let fake = FakeModel::start().await.unwrap();
    fake.push(Reply::text("Welcome!"));
    fake.push(Reply::text("Again."));
    let builtin = tempfile::tempdir().unwrap();
    write_skill(
        builtin.path(),
        "welcome",
        "---\nname: welcome\ndescription: Greets new users\ntriggers:\n  - on: first_message_in_session\n---\nBUILT-IN WELCOME",
    );
    write_skill(
        builtin.path(),
        "telegram-formatting",
        "---\ndescription: Telegram formatting rules\ntriggers: [{on: channel_type, value: telegram}]\n---\nTELEGRAM RULES",
    );
    write_skill(
        builtin.path(),
        "terminal",
        "---\ndescription: Terminal output\ntriggers: [{on: channel_type, value: cli}]\n---\nTERMINAL RULES",
    );
    let mut session = Session::new();
    let skills = session.agent_dir.join("skills");
    write_skill(
        &skills,
        "welcome",
        "---\nname: welcome\ndescription: Our own welcome\ntriggers: [{on: first_message_in_session}]\n---\nAGENT WELCOME",
    );
    write_skill(
        &skills,
        "house-rules",
        "---\ndescription: Always on\ntriggers: [{on: always}]\n---\nHOUSE RULES v1",
    );
    write_skill(
        &skills,
        "recipes",
        "---\nname: recipes\ndescription: How to cook\n---\nRECIPE BODY",
    );
    write_skill(
        &skills,
        "broken",
        "---\ntriggers: [{on: full_moon}]\n---\nBROKEN BODY",
    );
    session.set_env("CLAWBOX_SKILLS_DIR", builtin.path().to_str().unwrap());
    session.set_env("CLAWBOX_IDLE_TIMEOUT_MS", "10000");

    session.send("hello");
    let mut child = session.start(&fake);
    session.wait_replies(1, RUN_LIMIT).await;
    let first = system_prompt(&fake.last_request().unwrap());
    for inlined in ["AGENT WELCOME", "HOUSE RULES v1", "TERMINAL RULES"] {
        assert!(first.contains(inlined), "{inlined} not inlined in\n{first}");
    }
    for absent in [
        "BUILT-IN WELCOME",
        "TELEGRAM RULES",
        "RECIPE BODY",
        "BROKEN BODY",
        "description:",
    ] {
        assert!(!first.contains(absent), "{absent} in\n{first}");
    }
    assert!(
        first.contains(
            "Call load_skill(name) to read a skill's instructions before you use it.\n\
             - recipes: How to cook\n\
             - telegram-formatting: Telegram formatting rules"
        ),
        "{first}"
    );
    assert!(
        first.contains("- agent/skills/broken/SKILL.md: invalid front matter: "),
        "{first}"
    );

    // Edits apply to the next turn; the welcome is for the first message only.
    write_skill(
        &skills,
        "house-rules",
        "---\ndescription: Always on\ntriggers: [{on: always}]\n---\nHOUSE RULES v2",
    );
    session.send("hello again");
    session.wait_replies(2, RUN_LIMIT).await;
    let second = system_prompt(&fake.last_request().unwrap());
    assert!(second.contains("HOUSE RULES v2"), "{second}");
    assert!(!second.contains("AGENT WELCOME"), "{second}");
    assert!(second.contains("- welcome: Our own welcome"), "{second}");
    session.stop(&mut child).await;
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
}
