//! `load_skill`: agent skills, built-in skills, the override between them, and refusals.

use std::os::unix::fs::symlink;
use std::path::Path;

use pretty_assertions::assert_eq;
use serde_json::json;

use super::harness::Session;

fn skill(dir: &Path, name: &str, body: &str) {
    std::fs::create_dir_all(dir.join(name)).unwrap();
    std::fs::write(dir.join(name).join("SKILL.md"), body).unwrap();
}

#[tokio::test]
async fn agent_skills_override_built_in_ones() {
    let builtin = tempfile::tempdir().unwrap();
    skill(
        builtin.path(),
        "welcome",
        "---\nname: welcome\n---\nbuilt-in welcome\n",
    );
    skill(
        builtin.path(),
        "telegram-formatting",
        "built-in formatting\n",
    );
    let s = Session::start_with(&[("CLAWBOX_SKILLS_DIR", builtin.path().to_str().unwrap())]).await;
    let agent_skills = s.agent_dir.join("skills");
    skill(&agent_skills, "welcome", "the agent's own welcome\n");
    skill(&agent_skills, "notes_2", "how to take notes\n");

    let table = [
        ("welcome", "the agent's own welcome\n"),
        ("telegram-formatting", "built-in formatting\n"),
        ("notes_2", "how to take notes\n"),
        (" notes_2 ", "how to take notes\n"),
    ];
    for (name, want) in table {
        assert_eq!(
            s.call("load_skill", json!({"name": name})).await.ok(),
            want,
            "{name}"
        );
    }

    // Edits take effect on the next call: nothing is cached.
    std::fs::remove_dir_all(agent_skills.join("welcome")).unwrap();
    assert_eq!(
        s.call("load_skill", json!({"name": "welcome"})).await.ok(),
        "---\nname: welcome\n---\nbuilt-in welcome\n"
    );
}

#[tokio::test]
async fn unknown_and_invalid_names() {
    let builtin = tempfile::tempdir().unwrap();
    skill(builtin.path(), "welcome", "hi\n");
    // Not skills: no SKILL.md, or a name load_skill would refuse.
    std::fs::create_dir(builtin.path().join("empty")).unwrap();
    skill(builtin.path(), "Upper", "x\n");
    let s = Session::start_with(&[("CLAWBOX_SKILLS_DIR", builtin.path().to_str().unwrap())]).await;
    skill(&s.agent_dir.join("skills"), "mine", "m\n");
    let outside = s.dir.path().join("outside");
    skill(&outside, "stolen", "secret\n");
    symlink(outside.join("stolen"), s.agent_dir.join("skills/stolen")).unwrap();
    // A linked folder inside the agent folder: agent-runner refuses it, so does load_skill.
    symlink(
        s.agent_dir.join("skills/mine"),
        s.agent_dir.join("skills/alias"),
    )
    .unwrap();
    skill(
        &s.agent_dir.join("skills"),
        "huge",
        &"x".repeat(64 * 1024 + 1),
    );
    std::fs::create_dir(s.agent_dir.join("skills/linked")).unwrap();
    symlink(
        "../mine/SKILL.md",
        s.agent_dir.join("skills/linked/SKILL.md"),
    )
    .unwrap();

    let table = [
        (
            "nope",
            "unknown skill \"nope\"; available skills: huge, linked, mine, welcome",
        ),
        (
            "../etc",
            "invalid skill name \"../etc\": use lowercase letters, digits, '-' and '_'",
        ),
        (
            "a/b",
            "invalid skill name \"a/b\": use lowercase letters, digits, '-' and '_'",
        ),
        (
            "Welcome",
            "invalid skill name \"Welcome\": use lowercase letters, digits, '-' and '_'",
        ),
        (
            "",
            "invalid skill name \"\": use lowercase letters, digits, '-' and '_'",
        ),
        (
            "stolen",
            "path escapes the agent folder through a symbolic link: agent/skills/stolen/SKILL.md",
        ),
        (
            "alias",
            "agent/skills/alias is a symbolic link; refusing to follow it (use the path it \
             points to)",
        ),
        (
            "huge",
            "skill \"huge\" cannot be used: its SKILL.md is larger than 64 KiB",
        ),
        (
            "linked",
            "agent/skills/linked/SKILL.md is a symbolic link; refusing to follow it (use the \
             path it points to)",
        ),
    ];
    for (name, want) in table {
        assert_eq!(
            s.call("load_skill", json!({"name": name})).await.err(),
            want,
            "{name}"
        );
    }
}

#[tokio::test]
async fn no_skills_at_all() {
    let s = Session::start().await;
    assert_eq!(
        s.call("load_skill", json!({"name": "welcome"})).await.err(),
        "unknown skill \"welcome\"; no skills are installed"
    );
}
