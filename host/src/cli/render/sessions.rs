//! `clawbox status` and `clawbox sessions`.

use super::*;

pub fn status(report: &StatusReport) -> String {
    let now = report.generated_at;
    let mut out = String::new();
    let runtime = if report.isolated {
        format!("{} runtime", report.runtime)
    } else {
        format!("{} runtime (NOT isolated)", report.runtime)
    };
    let containers = match (report.containers.cap, report.runtime.as_str()) {
        (Some(cap), "process") => format!("runners {}/{cap}", report.containers.running),
        (Some(cap), _) => format!("containers {}/{cap}", report.containers.running),
        (None, _) => format!(
            "{} (not capped)",
            plural(report.containers.running as u64, "runner", "runners")
        ),
    };
    let live = plural(
        report.sessions.len() as u64,
        "live session",
        "live sessions",
    );
    let tokens = format!("{} tokens today", thousands(report.tokens_today));
    match &report.host {
        Some(host) => {
            let runtime = match &host.image {
                Some(image) => format!("{runtime} ({image})"),
                None => runtime,
            };
            out.push_str(&format!(
                "host up {} · {runtime} · {containers} · {live} · {tokens}\n",
                duration(host.uptime_s)
            ));
            let r = &host.retention;
            if r.rows > 0 || r.sessions > 0 {
                let retired = match r.sessions {
                    0 => String::new(),
                    1 => "1 idle session retired, ".to_owned(),
                    n => format!("{} idle sessions retired, ", thousands(n)),
                };
                out.push_str(&format!(
                    "retention: {} old rows deleted, {retired}{} reclaimed since the host \
                     started\n",
                    thousands(r.rows),
                    bytes(r.bytes)
                ));
            }
        }
        None => {
            out.push_str(
                "no host is running — this is what the files say; sessions listed are those \
                 the last host left busy\n",
            );
            out.push_str(&format!(
                "{runtime} (configured) · {} left busy · {tokens}\n",
                plural(report.sessions.len() as u64, "session", "sessions")
            ));
        }
    }
    if report.sessions.is_empty() {
        out.push_str(match report.host {
            Some(_) => "\nno live sessions (`clawbox sessions` lists every session)\n",
            None => "\nnothing was left busy (`clawbox sessions` lists every session)\n",
        });
        return out;
    }
    out.push('\n');
    let mut table = Table::new(&[
        ("SESSION", false),
        ("AGENT", false),
        ("CHAT", false),
        ("CONTAINER", false),
        ("DOING", false),
        ("IN", true),
        ("OUT", true),
        ("TOKENS", true),
        ("LAST ERROR", false),
    ]);
    for s in &report.sessions {
        table.row(vec![
            s.id.clone(),
            s.agent.clone(),
            chat(&s.chat, s.thread.as_deref()),
            container(&s.container, &s.chat, now),
            doing(s.doing.as_ref(), now),
            s.pending_in.to_string(),
            out_cell(s),
            thousands(s.tokens_today.total()),
            match &s.last_error {
                Some(e) => one_line(
                    &match e.at {
                        Some(at) => format!("{} ago: {}", duration(since(at, now)), e.text),
                        None => e.text.clone(),
                    },
                    TEXT_CELL,
                ),
                None => "-".to_owned(),
            },
        ]);
    }
    out.push_str(&table.render(""));
    out.push_str(
        "\nIN: messages waiting for the agent · OUT: replies not yet delivered · TOKENS: today\n",
    );
    out
}

fn chat(chat: &str, thread: Option<&str>) -> String {
    match thread {
        Some(t) => format!("{chat}#{t}"),
        None => chat.to_owned(),
    }
}

/// Undelivered replies, and those given up on.
fn out_cell(s: &SessionStatus) -> String {
    match s.failed_deliveries {
        0 => s.undelivered_out.to_string(),
        n => format!("{} ({n} failed)", s.undelivered_out),
    }
}

fn container(state: &ContainerState, chat: &str, now: DateTime<Utc>) -> String {
    match state {
        ContainerState::Running { uptime_s, .. } => format!("running {}", duration(*uptime_s)),
        ContainerState::WaitingForSlot => "waiting for a slot".to_owned(),
        ContainerState::Retrying { at } if *at > now => {
            format!("retry in {}", duration(since(now, *at).max(1)))
        }
        ContainerState::Retrying { .. } => "retry due".to_owned(),
        ContainerState::WaitingForChannel if chat.starts_with("cli:") => {
            "replies wait for a terminal".to_owned()
        }
        ContainerState::WaitingForChannel => "replies wait for the chat".to_owned(),
        ContainerState::Stopped => "stopped".to_owned(),
        ContainerState::Recorded { recorded } => format!("{recorded} (last host)"),
    }
}

fn doing(doing: Option<&Doing>, now: DateTime<Utc>) -> String {
    let Some(d) = doing else {
        return "-".to_owned();
    };
    let for_ = duration(since(d.since, now));
    let what = match d.activity {
        Activity::Starting => format!("starting ({for_})"),
        Activity::Idle => "idle".to_owned(),
        Activity::Model => format!("model step {} ({for_})", d.step),
        Activity::Tool => format!(
            "tool {} ({for_})",
            d.tool
                .as_deref()
                .map_or("?".to_owned(), |t| one_line(t, 30))
        ),
    };
    match (d.heartbeat_stale, d.heartbeat_age_ms) {
        (true, Some(age)) => format!("{what}, no heartbeat for {}", duration(age / 1000)),
        (true, None) => format!("{what}, no heartbeat"),
        (false, _) => what,
    }
}

// ---------------------------------------------------------------------------------------------
// clawbox sessions

pub fn sessions(list: &SessionList) -> String {
    let now = list.generated_at;
    let mut out = String::new();
    if !list.host_running {
        out.push_str("no host is running — states are what the last host recorded\n\n");
    }
    if list.sessions.is_empty() {
        out.push_str("no sessions yet\n");
        return out;
    }
    let mut table = Table::new(&[
        ("SESSION", false),
        ("AGENT", false),
        ("CHAT", false),
        ("STATE", false),
        ("LAST ACTIVE", false),
        ("IN", true),
        ("OUT", true),
        ("PENDING", true),
        ("FAILED", true),
        ("UNDELIVERED", true),
        ("TOKENS TODAY", true),
    ]);
    for s in &list.sessions {
        let state = match (&s.container, s.status.as_str()) {
            (_, "closed") => "closed".to_owned(),
            (Some(c), _) => container(c, &s.chat, now),
            (None, _) if !list.host_running && s.recorded != "stopped" => {
                format!("{} (last host)", s.recorded)
            }
            (None, _) => "idle".to_owned(),
        };
        table.row(vec![
            s.id.clone(),
            s.agent.clone(),
            chat(&s.chat, s.thread.as_deref()),
            state,
            format!("{} ago", duration(since(s.last_activity, now))),
            thousands(s.messages_in),
            thousands(s.messages_out),
            s.pending_in.to_string(),
            s.failed_in.to_string(),
            s.undelivered_out.to_string(),
            thousands(s.tokens_today),
        ]);
    }
    out.push_str(&table.render(""));
    out.push_str(&format!(
        "\n{}; IN/OUT count messages to and from the agent\n",
        plural(list.sessions.len() as u64, "session", "sessions")
    ));
    out
}
