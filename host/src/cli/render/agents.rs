//! `clawbox agents` and `clawbox dropped`.

use super::*;

pub fn agents(list: &AgentList) -> String {
    let mut out = String::new();
    if !list.host_running {
        out.push_str("no host is running — live sessions are not known\n\n");
    }
    for (i, row) in list.agents.iter().enumerate() {
        let a = &row.agent;
        if i > 0 {
            out.push('\n');
        }
        let model = match &a.model {
            Some(m) => m.clone(),
            None => format!("{} (DEFAULT_MODEL)", list.default_model),
        };
        let live = if list.host_running {
            format!(", {} live", row.live_sessions)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{} \"{}\" · model {} · folder {} · {}{live}\n",
            clean(&a.id),
            clean(&a.name),
            clean(&model),
            clean(&a.folder),
            plural(row.sessions, "session", "sessions")
        ));
        if a.wirings.is_empty() {
            out.push_str("  wired to no chat\n");
        } else {
            let mut table = Table::new(&[
                ("CHAT", false),
                ("ENGAGE", false),
                ("STICKY", false),
                ("SESSIONS", false),
                ("UNKNOWN SENDERS", false),
                ("IGNORED", false),
            ]);
            for w in &a.wirings {
                let engage = match &w.engage_pattern {
                    Some(p) => format!("{} {p:?}", w.engage_mode),
                    None => w.engage_mode.clone(),
                };
                let sticky = if w.engage_mode == "mention-sticky" {
                    duration(u64::try_from(w.sticky_window_s).unwrap_or(0))
                } else {
                    "-".to_owned()
                };
                let kind = if w.is_group { " (group)" } else { "" };
                table.row(vec![
                    format!("{}:{}{kind}", w.channel_type, w.platform_id),
                    engage,
                    sticky,
                    w.session_mode.clone(),
                    w.unknown_sender_policy.clone(),
                    w.ignored_messages.clone(),
                ]);
            }
            out.push_str(&table.render("  "));
        }
        let destinations: Vec<String> = a
            .destinations
            .iter()
            .map(|d| {
                let thread = d
                    .thread_id
                    .as_deref()
                    .map_or(String::new(), |t| format!("#{t}"));
                format!("{} → {}:{}{thread}", d.name, d.channel_type, d.platform_id)
            })
            .collect();
        out.push_str(&format!(
            "  destinations: {}\n",
            if destinations.is_empty() {
                "none".to_owned()
            } else {
                clean(&destinations.join(", "))
            }
        ));
        let roles: Vec<String> = a
            .roles
            .iter()
            .map(|r| format!("{} {}", r.role, r.user_id))
            .collect();
        out.push_str(&format!(
            "  roles: {}\n",
            if roles.is_empty() {
                "none".to_owned()
            } else {
                clean(&roles.join(", "))
            }
        ));
    }
    if list.agents.is_empty() {
        out.push_str("no agents yet (the host creates `default` at first start)\n");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// clawbox dropped

pub fn dropped(list: &DroppedList, timezone: Tz) -> String {
    let mut out = String::new();
    if !list.host_running {
        out.push_str("no host is running — read from the files\n\n");
    }
    if list.dropped.is_empty() {
        out.push_str("no refused messages on record\n");
        return out;
    }
    let mut table = Table::new(&[
        ("TIME", false),
        ("CHAT", false),
        ("SENDER", false),
        ("AGENT", false),
        ("REASON", false),
    ]);
    for d in &list.dropped {
        let sender = match (&d.sender_name, &d.sender_id) {
            (Some(name), Some(id)) => format!("{name} ({id})"),
            (Some(name), None) => name.clone(),
            (None, Some(id)) => id.clone(),
            (None, None) => "-".to_owned(),
        };
        table.row(vec![
            d.at.with_timezone(&timezone)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string(),
            d.chat.clone(),
            one_line(&sender, 40),
            d.agent.clone().unwrap_or_else(|| "-".to_owned()),
            one_line(&d.reason, TEXT_CELL),
        ]);
    }
    out.push_str(&table.render(""));
    // One command per chat (per sender for strangers of a wired chat), newest refusal first.
    let mut commands: Vec<(&str, &str)> = Vec::new();
    for d in &list.dropped {
        if let Some(command) = d.wire_command.as_deref()
            && !commands.iter().any(|(_, c)| *c == command)
        {
            commands.push((&d.chat, command));
        }
    }
    if !commands.is_empty() {
        out.push_str("\nto let them through:\n");
        for (chat, command) in commands {
            out.push_str(&format!("  {chat}: {command}\n"));
        }
    }
    let shown = list.dropped.len() as u64;
    if list.total > shown {
        out.push_str(&format!(
            "\nnewest {shown} of {}; `--limit N` shows more\n",
            thousands(list.total)
        ));
    }
    out
}
