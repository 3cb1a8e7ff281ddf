//! Skills: `<name>/SKILL.md` files with YAML front matter (`name`, `description`, `triggers`),
//! from the built-in skills directory (`CLAWBOX_SKILLS_DIR`) and the agent's `skills/` folder,
//! which overrides a built-in skill of the same name. Owns reading, parsing, trigger decisions
//! and the prompt section: triggered skills are inlined (body only), the others are listed for
//! `load_skill` (a tool of `mcp-tools`, which reads the same folders). A skill that cannot be
//! used is left out with a note in the section, so the agent can tell the user. The files are
//! read for every turn, so edits apply to the next message.
//!
//! A skill's name is its folder's name: that is what `load_skill(name)` finds and what overrides
//! a built-in skill, so it follows `load_skill`'s rule (`[a-z0-9_-]`, at most 64 characters). A
//! front-matter `name` that differs is reported, not obeyed. An agent skill that cannot be used
//! still overrides the built-in one of its name (`load_skill` would return the agent's file).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The file in each skill folder.
pub const SKILL_FILE: &str = "SKILL.md";
/// A bigger `SKILL.md` is not used (it would crowd the prompt; skills are short instructions).
pub const MAX_SKILL_BYTES: usize = 64 * 1024;
/// Skill folders read per directory, in name order; the rest are reported.
const MAX_SKILLS_PER_DIR: usize = 100;
/// The longest skill (folder) name `load_skill` accepts.
const MAX_NAME_CHARS: usize = 64;

/// `[a-z0-9_-]`, 1–64 characters: the names `load_skill` can load.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_'))
}

/// When a skill is inlined into the system prompt.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "on", rename_all = "snake_case")]
pub enum Trigger {
    /// Every turn.
    Always,
    /// When the conversation has no answer from the agent yet (a new session, or after
    /// `/clear`).
    FirstMessageInSession,
    /// When the turn's messages came from this kind of channel (`telegram`, `cli`).
    ChannelType { value: String },
}

/// The front matter as written.
#[derive(Debug, Deserialize)]
struct FrontMatter {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    triggers: Vec<Trigger>,
}

/// Where a skill comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The built-in skills directory (the image's `/app/skills`).
    Builtin,
    /// The agent's `skills/` folder.
    Agent,
}

/// One usable skill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    pub name: String,
    pub description: Option<String>,
    pub triggers: Vec<Trigger>,
    /// The text after the front matter, trimmed.
    pub body: String,
    pub origin: Origin,
}

/// A skill file left out, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillProblem {
    /// Where, as the agent would name it (`agent/skills/x/SKILL.md`, `built-in skill x`).
    pub location: String,
    pub reason: String,
}

/// All skills of a turn, by name, and the files that could not be used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkillSet {
    pub skills: BTreeMap<String, Skill>,
    pub problems: Vec<SkillProblem>,
}

/// The facts triggers are decided on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TriggerContext<'a> {
    /// The channel type of the turn's origin.
    pub channel_type: Option<&'a str>,
    /// No assistant message in the conversation before this turn.
    pub first_message_in_session: bool,
}

impl Trigger {
    pub fn fires(&self, ctx: &TriggerContext<'_>) -> bool {
        match self {
            Trigger::Always => true,
            Trigger::FirstMessageInSession => ctx.first_message_in_session,
            Trigger::ChannelType { value } => ctx
                .channel_type
                .is_some_and(|channel| channel.eq_ignore_ascii_case(value.trim())),
        }
    }
}

impl Skill {
    pub fn is_triggered(&self, ctx: &TriggerContext<'_>) -> bool {
        self.triggers.iter().any(|t| t.fires(ctx))
    }
}

/// Splits `---\n<yaml>\n---\n<body>`; `None` when the text does not start with front matter or
/// it is not closed.
pub fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let text = text.strip_prefix('\u{FEFF}').unwrap_or(text);
    let (first, mut rest) = text.split_once('\n')?;
    if first.trim_end() != "---" {
        return None;
    }
    let yaml_start = rest;
    let mut yaml_len = 0;
    loop {
        let (line, after) = match rest.split_once('\n') {
            Some((line, after)) => (line, after),
            None => (rest, ""),
        };
        if matches!(line.trim_end(), "---" | "...") {
            return Some((&yaml_start[..yaml_len], after));
        }
        if after.is_empty() && line.len() == rest.len() {
            return None;
        }
        yaml_len += line.len() + 1;
        rest = after;
    }
}

/// Parses one `SKILL.md` of the folder `name`. Returns the skill and notes about it (a
/// front-matter name that differs from the folder), or why it cannot be used.
pub fn parse_skill(name: &str, text: &str, origin: Origin) -> Result<(Skill, Vec<String>), String> {
    let Some((yaml, body)) = split_front_matter(text) else {
        return Err(
            "no front matter (the file must start with a `---` line, then YAML with name, \
             description and triggers, then `---`)"
                .to_owned(),
        );
    };
    let front: FrontMatter = if yaml.trim().is_empty() {
        FrontMatter {
            name: None,
            description: None,
            triggers: Vec::new(),
        }
    } else {
        serde_yaml_ng::from_str(yaml).map_err(|e| format!("invalid front matter: {e}"))?
    };
    let mut notes = Vec::new();
    if let Some(declared) = front.name.as_deref().map(str::trim)
        && declared != name
    {
        notes.push(format!(
            "its front matter says name \"{declared}\"; it is known by its folder name \"{name}\""
        ));
    }
    let description = front
        .description
        .map(|d| d.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|d| !d.is_empty());
    Ok((
        Skill {
            name: name.to_owned(),
            description,
            triggers: front.triggers,
            body: body.trim().to_owned(),
            origin,
        },
        notes,
    ))
}

/// Reads the built-in skills, then the agent's (blocking: call it off the async threads).
pub fn load_skills(builtin_dir: Option<&Path>, agent_dir: &Path) -> SkillSet {
    let mut set = SkillSet::default();
    if let Some(dir) = builtin_dir {
        read_dir_into(&mut set, dir, Origin::Builtin);
    }
    read_dir_into(&mut set, &agent_dir.join("skills"), Origin::Agent);
    set
}

/// Where a problem is, as the agent would name it; `None`: the folder as a whole.
fn location(origin: Origin, name: Option<&str>) -> String {
    match (origin, name) {
        (Origin::Builtin, Some(name)) => format!("built-in skill {name}"),
        (Origin::Builtin, None) => "built-in skills".to_owned(),
        (Origin::Agent, Some(name)) => format!("agent/skills/{name}/{SKILL_FILE}"),
        (Origin::Agent, None) => "agent/skills".to_owned(),
    }
}

fn read_dir_into(set: &mut SkillSet, dir: &Path, origin: Origin) {
    let mut problem = |name: Option<&str>, reason: String| {
        let location = location(origin, name);
        tracing::warn!(skill = %location, reason = %reason, "skill problem");
        set.problems.push(SkillProblem { location, reason });
    };
    // The agent's folder is the agent's to write: a symlink there could pull any file the runner
    // can read into the prompt. (The agent's own tools refuse symlinks for the same reason.)
    let follow = origin == Origin::Builtin;
    match std::fs::symlink_metadata(dir) {
        Ok(meta) if meta.is_dir() || (follow && meta.file_type().is_symlink()) => {}
        Ok(meta) if meta.file_type().is_symlink() => {
            problem(
                None,
                "the skills folder is a symlink; skills were not read".to_owned(),
            );
            return;
        }
        Ok(_) => return,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return,
        Err(err) => {
            problem(None, format!("cannot read the skills folder: {err}"));
            return;
        }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) => {
            problem(None, format!("cannot read the skills folder: {err}"));
            return;
        }
    };
    let mut folders: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        folders.push((name, entry.path()));
    }
    folders.sort();
    if folders.len() > MAX_SKILLS_PER_DIR {
        let dropped: Vec<&str> = folders[MAX_SKILLS_PER_DIR..]
            .iter()
            .map(|(name, _)| name.as_str())
            .collect();
        problem(
            None,
            format!(
                "more than {MAX_SKILLS_PER_DIR} skill folders; not read: {}",
                dropped.join(", ")
            ),
        );
        folders.truncate(MAX_SKILLS_PER_DIR);
    }
    for (name, path) in folders {
        let meta = if follow {
            std::fs::metadata(&path)
        } else {
            std::fs::symlink_metadata(&path)
        };
        if let Ok(meta) = &meta
            && !meta.is_dir()
            && !meta.file_type().is_symlink()
        {
            // Plain files next to the skill folders (a README) are not skills.
            continue;
        }
        if !valid_name(&name) {
            problem(
                Some(&name.escape_debug().to_string()),
                format!(
                    "a skill folder's name must be lowercase letters, digits, - and _ (at most \
                     {MAX_NAME_CHARS})"
                ),
            );
            continue;
        }
        let parsed = match meta {
            Ok(meta) if !meta.is_dir() && !meta.file_type().is_symlink() => continue,
            Ok(meta) if meta.file_type().is_symlink() => Err("the folder is a symlink".to_owned()),
            Ok(_) => match read_capped(&path.join(SKILL_FILE), follow) {
                Ok(Some(text)) => parse_skill(&name, &text, origin),
                Ok(None) => {
                    // Not a skill (yet): a built-in skill of that name stays, as it does for
                    // `load_skill`.
                    problem(Some(&name), format!("the folder has no {SKILL_FILE}"));
                    continue;
                }
                Err(reason) => Err(reason),
            },
            Err(err) => Err(err.to_string()),
        };
        match parsed {
            Ok((skill, notes)) => {
                for note in notes {
                    problem(Some(&name), note);
                }
                set.skills.insert(name, skill);
            }
            Err(reason) => {
                // The agent's file still overrides: `load_skill(name)` would return it, not the
                // built-in skill, so listing the built-in one would promise what is not loaded.
                let reason = if set.skills.remove(&name).is_some() {
                    format!(
                        "{reason} (it overrides the built-in skill of that name, so neither is \
                         used)"
                    )
                } else {
                    reason
                };
                problem(Some(&name), reason);
            }
        }
    }
}

/// Reads a file of at most [`MAX_SKILL_BYTES`]; `Ok(None)` if it does not exist.
fn read_capped(path: &Path, follow: bool) -> Result<Option<String>, String> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    if !follow {
        options.custom_flags(libc::O_NOFOLLOW);
    }
    let file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
            return Err(format!("{SKILL_FILE} is a symlink"));
        }
        Err(err) => return Err(format!("cannot read {SKILL_FILE}: {err}")),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SKILL_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| format!("cannot read {SKILL_FILE}: {err}"))?;
    if bytes.len() > MAX_SKILL_BYTES {
        return Err(format!(
            "{SKILL_FILE} is larger than {} KiB",
            MAX_SKILL_BYTES / 1024
        ));
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| format!("{SKILL_FILE} is not UTF-8 text"))
}

/// The skills part of the system prompt, `None` when there are no skills and no problems.
pub fn render(set: &SkillSet, ctx: &TriggerContext<'_>) -> Option<String> {
    let (inline, listed): (Vec<&Skill>, Vec<&Skill>) =
        set.skills.values().partition(|s| s.is_triggered(ctx));
    if inline.is_empty() && listed.is_empty() && set.problems.is_empty() {
        return None;
    }
    let mut out = String::from("## Skills");
    for skill in &inline {
        out.push_str(&format!("\n\n### Skill: {}\n\n{}", skill.name, skill.body));
    }
    if !listed.is_empty() {
        out.push_str(
            "\n\n### Other skills\n\nCall load_skill(name) to read a skill's instructions before \
             you use it.",
        );
        for skill in &listed {
            let description = skill.description.as_deref().unwrap_or("(no description)");
            out.push_str(&format!("\n- {}: {description}", skill.name));
        }
    }
    if !set.problems.is_empty() {
        out.push_str(
            "\n\n### Skill problems\n\nThese skill files have problems (tell the user if it \
             matters; they can fix the files):",
        );
        for p in &set.problems {
            out.push_str(&format!("\n- {}: {}", p.location, p.reason));
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use pretty_assertions::assert_eq;

    use super::*;

    const TELEGRAM: TriggerContext<'static> = TriggerContext {
        channel_type: Some("telegram"),
        first_message_in_session: false,
    };

    fn skill(text: &str) -> Skill {
        parse_skill("x", text, Origin::Agent).unwrap().0
    }

    #[test]
    fn front_matter_is_split_from_the_body() {
        let table = [
            ("---\nname: a\n---\nbody\n", Some(("name: a\n", "body\n"))),
            (
                "\u{FEFF}---\r\nname: a\r\n---\r\nbody",
                Some(("name: a\r\n", "body")),
            ),
            ("---\n---\nbody", Some(("", "body"))),
            ("---\nname: a\n...\nbody", Some(("name: a\n", "body"))),
            ("---\nname: a\n---", Some(("name: a\n", ""))),
            ("---\nname: a\nbody without end", None),
            ("# Title\n---\nname: a\n---\n", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(split_front_matter(text), want, "{text:?}");
        }
    }

    #[test]
    fn triggers_parse_and_fire() {
        let s = skill(
            "---\nname: x\ndescription: >\n  Formats\n  replies.\ntriggers:\n  - on: always\n  - on: first_message_in_session\n  - on: channel_type\n    value: telegram\n---\n\n# Body\n",
        );
        assert_eq!(
            s,
            Skill {
                name: "x".to_owned(),
                description: Some("Formats replies.".to_owned()),
                triggers: vec![
                    Trigger::Always,
                    Trigger::FirstMessageInSession,
                    Trigger::ChannelType {
                        value: "telegram".to_owned()
                    },
                ],
                body: "# Body".to_owned(),
                origin: Origin::Agent,
            }
        );
        let first = TriggerContext {
            channel_type: Some("cli"),
            first_message_in_session: true,
        };
        let later_cli = TriggerContext {
            channel_type: Some("cli"),
            first_message_in_session: false,
        };
        let none = TriggerContext {
            channel_type: None,
            first_message_in_session: false,
        };
        let table = [
            (Trigger::Always, [true, true, true, true]),
            (Trigger::FirstMessageInSession, [true, false, false, false]),
            (
                Trigger::ChannelType {
                    value: "telegram".to_owned(),
                },
                [false, false, false, true],
            ),
            (
                Trigger::ChannelType {
                    value: " Telegram ".to_owned(),
                },
                [false, false, false, true],
            ),
        ];
        for (trigger, want) in table {
            let got = [first, later_cli, none, TELEGRAM].map(|ctx| trigger.fires(&ctx));
            assert_eq!(got, want, "{trigger:?}");
        }
        assert!(!skill("---\ndescription: lazy\n---\nbody").is_triggered(&TELEGRAM));
    }

    #[test]
    fn malformed_front_matter_is_an_error() {
        let table = [
            ("no front matter", "no front matter"),
            (
                "---\ntriggers: [{on: sometimes}]\n---\n",
                "invalid front matter: ",
            ),
            (
                "---\ntriggers: [{on: channel_type}]\n---\n",
                "missing field `value`",
            ),
            ("---\ntriggers: always\n---\n", "invalid front matter: "),
            ("---\nname: [unclosed\n---\n", "invalid front matter: "),
            (
                "---\ndescription: 42: x: y\n---\n",
                "invalid front matter: ",
            ),
        ];
        for (text, want) in table {
            let err = parse_skill("x", text, Origin::Agent).unwrap_err();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_different_front_matter_name_is_noted() {
        let (s, notes) =
            parse_skill("folder", "---\nname: other\n---\nbody", Origin::Builtin).unwrap();
        assert_eq!(s.name, "folder");
        assert_eq!(
            notes,
            ["its front matter says name \"other\"; it is known by its folder name \"folder\""]
        );
    }

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::create_dir_all(dir.join(name)).unwrap();
        std::fs::write(dir.join(name).join(SKILL_FILE), text).unwrap();
    }

    #[test]
    fn agent_skills_override_builtin_ones_and_problems_are_kept() {
        let builtin = tempfile::tempdir().unwrap();
        let agent = tempfile::tempdir().unwrap();
        let skills = agent.path().join("skills");
        write(
            builtin.path(),
            "welcome",
            "---\nname: welcome\ndescription: built-in welcome\ntriggers: [{on: first_message_in_session}]\n---\nBuilt-in welcome.",
        );
        write(
            builtin.path(),
            "telegram-formatting",
            "---\nname: telegram-formatting\ndescription: Telegram\ntriggers: [{on: channel_type, value: telegram}]\n---\nUse HTML.",
        );
        write(
            &skills,
            "welcome",
            "---\nname: welcome\ndescription: our welcome\ntriggers: [{on: always}]\n---\nOur welcome.",
        );
        write(&skills, "broken", "---\ntriggers: [{on: nope}]\n---\nx");
        write(
            &skills,
            "big",
            &format!("---\n---\n{}", "x".repeat(MAX_SKILL_BYTES)),
        );
        write(
            &skills,
            "notes",
            "---\ndescription: Note taking\n---\nTake notes.",
        );
        std::fs::create_dir_all(skills.join("empty")).unwrap();
        std::fs::write(skills.join("README.md"), "not a skill").unwrap();
        std::fs::create_dir_all(skills.join(".hidden")).unwrap();
        write(&skills, "Bad Name", "---\n---\nx");
        std::os::unix::fs::symlink(builtin.path().join("welcome"), skills.join("linked")).unwrap();

        let set = load_skills(Some(builtin.path()), agent.path());
        let names: Vec<&str> = set.skills.keys().map(String::as_str).collect();
        assert_eq!(names, ["notes", "telegram-formatting", "welcome"]);
        assert_eq!(set.skills["welcome"].origin, Origin::Agent);
        assert_eq!(set.skills["welcome"].body, "Our welcome.");
        let problems: Vec<(&str, &str)> = set
            .problems
            .iter()
            .map(|p| (p.location.as_str(), p.reason.as_str()))
            .collect();
        assert_eq!(
            problems,
            [
                (
                    "agent/skills/Bad Name/SKILL.md",
                    "a skill folder's name must be lowercase letters, digits, - and _ (at most 64)"
                ),
                (
                    "agent/skills/big/SKILL.md",
                    "SKILL.md is larger than 64 KiB"
                ),
                (
                    "agent/skills/broken/SKILL.md",
                    problems[2].1 // checked below
                ),
                ("agent/skills/empty/SKILL.md", "the folder has no SKILL.md"),
                ("agent/skills/linked/SKILL.md", "the folder is a symlink"),
            ]
        );
        assert!(
            problems[2].1.starts_with("invalid front matter: "),
            "{}",
            problems[2].1
        );

        let prompt = render(&set, &TELEGRAM).unwrap();
        assert_eq!(
            prompt,
            "## Skills\n\n\
             ### Skill: telegram-formatting\n\nUse HTML.\n\n\
             ### Skill: welcome\n\nOur welcome.\n\n\
             ### Other skills\n\nCall load_skill(name) to read a skill's instructions before you use it.\n\
             - notes: Note taking\n\n\
             ### Skill problems\n\nThese skill files have problems (tell the user if it matters; they can fix the files):\n\
             - agent/skills/Bad Name/SKILL.md: a skill folder's name must be lowercase letters, digits, - and _ (at most 64)\n\
             - agent/skills/big/SKILL.md: SKILL.md is larger than 64 KiB\n\
             - agent/skills/broken/SKILL.md: ".to_owned()
                + problems[2].1
                + "\n\
             - agent/skills/empty/SKILL.md: the folder has no SKILL.md\n\
             - agent/skills/linked/SKILL.md: the folder is a symlink"
        );
    }

    #[test]
    fn a_broken_override_still_overrides() {
        let builtin = tempfile::tempdir().unwrap();
        let agent = tempfile::tempdir().unwrap();
        write(
            builtin.path(),
            "welcome",
            "---\ndescription: hi\n---\nHello.",
        );
        write(builtin.path(), "kept", "---\ndescription: hi\n---\nHello.");
        write(&agent.path().join("skills"), "welcome", "no front matter");
        std::fs::create_dir_all(agent.path().join("skills/kept")).unwrap();
        let set = load_skills(Some(builtin.path()), agent.path());
        let names: Vec<&str> = set.skills.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            ["kept"],
            "a folder without SKILL.md overrides nothing"
        );
        assert!(
            set.problems[1]
                .reason
                .ends_with("(it overrides the built-in skill of that name, so neither is used)"),
            "{:?}",
            set.problems
        );
    }

    #[test]
    fn skill_names_follow_load_skill() {
        for good in ["welcome", "telegram-formatting", "a_b", "x1"] {
            assert!(valid_name(good), "{good}");
        }
        let long = "a".repeat(65);
        for bad in ["", "Welcome", "a b", "a.b", "line\nbreak", long.as_str()] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn nothing_renders_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let set = load_skills(None, dir.path());
        assert_eq!(set, SkillSet::default());
        assert_eq!(render(&set, &TELEGRAM), None);
    }
}
