#![allow(clippy::unwrap_used)]

use chrono::TimeZone;
use chrono_tz::Europe::Berlin;
use mailbox::{InboundKind, Route};
use pretty_assertions::assert_eq;
use serde_json::json;

use super::*;
use crate::db::Db;

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// A central database with agents `a` and `b`, each with one session (`s-a`, `s-b`).
fn setup() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.db");
    drop(Db::open(&path).unwrap());
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(
        "PRAGMA foreign_keys = ON;
         INSERT INTO agent_groups (id, name, folder, created_at) VALUES
             ('a', 'A', 'a', 'x'), ('b', 'B', 'b', 'x');
         INSERT INTO messaging_groups (id, channel_type, platform_id, created_at)
             VALUES ('m', 'cli', 'local', 'x');
         INSERT INTO sessions (id, agent_group_id, messaging_group_id, last_activity, created_at)
             VALUES ('s-a', 'a', 'm', 'x', 'x'), ('s-b', 'b', 'm', 'x', 'x');",
    )
    .unwrap();
    (dir, conn)
}

fn agent(id: &str) -> Requester {
    Requester {
        agent_id: id.to_owned(),
        session_id: format!("s-{id}"),
        requested_by: Some("cli:local".to_owned()),
    }
}

fn once(prompt: &str, when: &str) -> ScheduleTask {
    ScheduleTask {
        prompt: prompt.to_owned(),
        process_after: Some(when.to_owned()),
        ..ScheduleTask::default()
    }
}

fn cron(prompt: &str, expr: &str) -> ScheduleTask {
    ScheduleTask {
        prompt: prompt.to_owned(),
        cron: Some(expr.to_owned()),
        ..ScheduleTask::default()
    }
}

fn count(conn: &Connection) -> i64 {
    conn.query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0))
        .unwrap()
}

const NOW: &str = "2026-12-01T10:00:00Z";

#[test]
fn a_task_is_stored_as_asked_and_shown_in_local_time_and_utc() {
    let (_dir, conn) = setup();
    let now = at(NOW);
    let task = schedule(
        &conn,
        &agent("a"),
        &once("  water the plants ", "2026-12-24 09:00"),
        Berlin,
        now,
    )
    .unwrap();
    let view = task.view();
    assert!(view.id.starts_with("task-"), "{}", view.id);
    assert_eq!(
        view,
        TaskView {
            id: view.id.clone(),
            agent: "a".into(),
            session: "s-a".into(),
            status: TaskStatus::Active,
            prompt: "water the plants".into(),
            script: None,
            cron: None,
            run_at: Some(TimeView {
                local: "2026-12-24 09:00 CET (Europe/Berlin)".into(),
                utc: "2026-12-24T08:00:00Z".into(),
            }),
            timezone: "Europe/Berlin".into(),
            next_run: Some(TimeView {
                local: "2026-12-24 09:00 CET (Europe/Berlin)".into(),
                utc: "2026-12-24T08:00:00Z".into(),
            }),
            last_run: None,
            last_outcome: None,
            run_count: 0,
            created_by: "agent:a".into(),
            requested_by: Some("cli:local".into()),
            created_at: "2026-12-01T10:00:00.000Z".into(),
        }
    );

    let repeating = schedule(
        &conn,
        &agent("a"),
        &ScheduleTask {
            timezone: Some("America/New_York".into()),
            script: Some("echo '{\"wakeAgent\": false}'".into()),
            ..cron("overview", "0   9 * * 1-5")
        },
        Berlin,
        now,
    )
    .unwrap();
    let view = repeating.view();
    assert_eq!(view.cron.as_deref(), Some("0 9 * * 1-5"));
    assert_eq!(view.timezone, "America/New_York");
    assert_eq!(
        view.next_run.unwrap().local,
        "2026-12-01 09:00 EST (America/New_York)"
    );
    assert!(view.script.is_some());
    assert_eq!(count(&conn), 2);
}

#[test]
fn bad_input_is_refused_precisely_and_nothing_is_stored() {
    let (_dir, conn) = setup();
    let now = at(NOW);
    let table: Vec<(ScheduleTask, &str, &str)> = vec![
        (
            cron("x", "0 25 * * *"),
            "invalid_cron",
            "the hour field \"25\" is invalid",
        ),
        (cron("x", "0 9 * *"), "invalid_cron", "it has 4 fields"),
        (
            cron("x", "* * * * * *"),
            "invalid_cron",
            "the shortest interval allowed is 1 minute",
        ),
        (
            once("x", "2026-11-30 09:00"),
            "time_in_past",
            "2026-11-30 09:00 CET (Europe/Berlin) is in the past",
        ),
        (
            once("x", "soonish"),
            "invalid_time",
            "invalid time \"soonish\"",
        ),
        (
            once("x", "2027-03-28 02:30"),
            "invalid_time",
            "does not exist in Europe/Berlin",
        ),
        (
            ScheduleTask {
                cron: Some("0 9 * * *".into()),
                ..once("x", "+1h")
            },
            "invalid_arguments",
            "not both",
        ),
        (
            ScheduleTask {
                prompt: "x".into(),
                ..ScheduleTask::default()
            },
            "invalid_arguments",
            "give process_after",
        ),
        (once("   ", "+1h"), "invalid_arguments", "prompt is empty"),
        (
            once(&"x".repeat(MAX_PROMPT_CHARS + 1), "+1h"),
            "invalid_arguments",
            "the limit is 8000",
        ),
        (
            ScheduleTask {
                timezone: Some("Berlin".into()),
                ..once("x", "+1h")
            },
            "invalid_timezone",
            "unknown time zone \"Berlin\"",
        ),
    ];
    for (args, code, needle) in table {
        let err = schedule(&conn, &agent("a"), &args, Berlin, now).unwrap_err();
        assert_eq!(err.code(), code, "{args:?}: {err}");
        assert!(err.to_string().contains(needle), "{args:?}: {err}");
    }
    assert_eq!(count(&conn), 0);
}

#[test]
fn an_agent_sees_and_changes_only_its_own_tasks() {
    let (_dir, conn) = setup();
    let now = at(NOW);
    let mine = schedule(&conn, &agent("a"), &cron("x", "0 9 * * *"), Berlin, now).unwrap();
    schedule(&conn, &agent("b"), &cron("y", "0 9 * * *"), Berlin, now).unwrap();

    let b = Scope::Agent("b");
    for err in [
        get(&conn, b, &mine.id).unwrap_err(),
        pause(&conn, b, &mine.id, now).unwrap_err(),
        resume(&conn, b, &mine.id, now).unwrap_err(),
        cancel(&conn, b, &mine.id, now).unwrap_err(),
        update(
            &conn,
            b,
            &UpdateTask {
                task_id: mine.id.clone(),
                prompt: Some("hijacked".into()),
                ..UpdateTask::default()
            },
            now,
        )
        .unwrap_err(),
    ] {
        assert_eq!(err.code(), "other_agent", "{err}");
        assert!(err.to_string().contains("belongs to another agent"));
    }
    assert_eq!(get(&conn, Scope::Operator, &mine.id).unwrap(), mine);
    let err = get(&conn, Scope::Agent("a"), "task-nope").unwrap_err();
    assert_eq!(err.to_string(), "there is no task \"task-nope\"");
    assert_eq!(err.code(), "unknown_task");

    let listed = |scope| {
        list(&conn, scope, &ListTasks::default())
            .unwrap()
            .into_iter()
            .map(|t| t.agent_id)
            .collect::<Vec<_>>()
    };
    assert_eq!(listed(Scope::Agent("a")), ["a"]);
    assert_eq!(listed(Scope::Agent("b")), ["b"]);
    assert_eq!(listed(Scope::Operator).len(), 2);
}

#[test]
fn pause_resume_and_cancel() {
    let (_dir, conn) = setup();
    let now = at(NOW);
    let a = Scope::Agent("a");
    let task = schedule(&conn, &agent("a"), &cron("x", "0 9 * * *"), Berlin, now).unwrap();
    assert_eq!(task.next_run, Some(at("2026-12-02T08:00:00Z")));

    let paused = pause(&conn, a, &task.id, now).unwrap();
    assert_eq!((paused.status, paused.next_run), (TaskStatus::Paused, None));
    assert_eq!(
        pause(&conn, a, &task.id, now).unwrap(),
        paused,
        "idempotent"
    );

    // Runs that fell into the pause are not made up: the next one after now.
    let later = at("2026-12-05T12:00:00Z");
    let resumed = resume(&conn, a, &task.id, later).unwrap();
    assert_eq!(resumed.status, TaskStatus::Active);
    assert_eq!(resumed.next_run, Some(at("2026-12-06T08:00:00Z")));

    let cancelled = cancel(&conn, a, &task.id, later).unwrap();
    assert_eq!(
        (cancelled.status, cancelled.next_run),
        (TaskStatus::Cancelled, None)
    );
    assert_eq!(cancel(&conn, a, &task.id, later).unwrap(), cancelled);
    for err in [
        resume(&conn, a, &task.id, later).unwrap_err(),
        pause(&conn, a, &task.id, later).unwrap_err(),
        update(
            &conn,
            a,
            &UpdateTask {
                task_id: task.id.clone(),
                cron: Some("0 10 * * *".into()),
                ..UpdateTask::default()
            },
            later,
        )
        .unwrap_err(),
    ] {
        assert_eq!(err.code(), "wrong_status", "{err}");
        assert!(err.to_string().contains("is cancelled"), "{err}");
    }
    // A paused one-shot whose time passed runs at once when resumed.
    let shot = schedule(&conn, &agent("a"), &once("x", "+1h"), Berlin, now).unwrap();
    pause(&conn, a, &shot.id, now).unwrap();
    let resumed = resume(&conn, a, &shot.id, now + chrono::Duration::hours(5)).unwrap();
    assert_eq!(resumed.next_run, Some(now + chrono::Duration::hours(1)));
}

#[test]
fn update_changes_any_field_and_switches_between_once_and_cron() {
    let (_dir, conn) = setup();
    let now = at(NOW);
    let a = Scope::Agent("a");
    let task = schedule(
        &conn,
        &agent("a"),
        &ScheduleTask {
            script: Some("true".into()),
            ..cron("x", "0 9 * * *")
        },
        Berlin,
        now,
    )
    .unwrap();
    let up = |args: UpdateTask| update(&conn, a, &args, now);
    let base = || UpdateTask {
        task_id: task.id.clone(),
        ..UpdateTask::default()
    };

    let err = up(base()).unwrap_err();
    assert!(err.to_string().starts_with("nothing to update"), "{err}");

    // Prompt and script; an empty script removes it.
    let t = up(UpdateTask {
        prompt: Some("new prompt".into()),
        script: Some(String::new()),
        ..base()
    })
    .unwrap();
    assert_eq!((t.prompt.as_str(), t.script), ("new prompt", None));
    assert_eq!(t.next_run, task.next_run, "schedule untouched");

    // Another zone moves the next run of a repeating task.
    let t = up(UpdateTask {
        timezone: Some("America/New_York".into()),
        ..base()
    })
    .unwrap();
    assert_eq!(t.next_run, Some(at("2026-12-01T14:00:00Z")));

    // cron "" ends the recurrence: the next run becomes the last.
    let t = up(UpdateTask {
        cron: Some(String::new()),
        ..base()
    })
    .unwrap();
    assert_eq!(
        t.schedule,
        Schedule::Once {
            at: at("2026-12-01T14:00:00Z")
        }
    );
    assert_eq!(t.next_run, Some(at("2026-12-01T14:00:00Z")));

    // Back to repeating, then to a one-shot at a given time.
    let t = up(UpdateTask {
        cron: Some("30 8 * * 1".into()),
        ..base()
    })
    .unwrap();
    assert_eq!(
        t.schedule,
        Schedule::Cron {
            expr: "30 8 * * 1".into()
        }
    );
    assert_eq!(t.next_run, Some(at("2026-12-07T13:30:00Z")));
    let t = up(UpdateTask {
        process_after: Some("2026-12-24 18:00".into()),
        ..base()
    })
    .unwrap();
    assert_eq!(
        t.next_run,
        Some(at("2026-12-24T23:00:00Z")),
        "New York time"
    );
    assert!(matches!(t.schedule, Schedule::Once { .. }));

    // Bad values change nothing.
    let before = get(&conn, a, &task.id).unwrap();
    for args in [
        UpdateTask {
            cron: Some("every day".into()),
            ..base()
        },
        UpdateTask {
            process_after: Some("2020-01-01 00:00".into()),
            ..base()
        },
        UpdateTask {
            process_after: Some("+1h".into()),
            cron: Some("0 9 * * *".into()),
            ..base()
        },
        UpdateTask {
            timezone: Some("Nowhere/City".into()),
            prompt: Some("changed".into()),
            ..base()
        },
    ] {
        assert!(up(args.clone()).is_err(), "{args:?}");
    }
    assert_eq!(get(&conn, a, &task.id).unwrap(), before);

    // A completed one-shot given a new time runs again.
    conn.execute(
        "UPDATE tasks SET status = 'completed', next_run = NULL WHERE id = ?1",
        [&task.id],
    )
    .unwrap();
    let t = up(UpdateTask {
        process_after: Some("+2h".into()),
        ..base()
    })
    .unwrap();
    assert_eq!(
        (t.status, t.next_run),
        (TaskStatus::Active, Some(now + chrono::Duration::hours(2)))
    );
}

#[test]
fn runs_are_recorded_once_and_advance_only_what_is_still_due() {
    let (_dir, conn) = setup();
    let now = at(NOW);
    let task = schedule(&conn, &agent("a"), &cron("x", "0 9 * * *"), Berlin, now).unwrap();
    let slot = task.next_run.unwrap();
    // The host was down for three days: one run, late, and the next after now.
    let fired_at = slot + chrono::Duration::days(3) + chrono::Duration::hours(2);
    let run = NewRun {
        scheduled_for: slot,
        fired_at,
        trigger: RunTrigger::Schedule,
        inbound_seq: Some(2),
        outcome: RunOutcome::Fired,
        detail: None,
    };
    let advance = advance_after(&task, fired_at);
    assert_eq!(advance, Advance::To(at("2026-12-06T08:00:00Z")));
    assert!(record_run(&conn, &task, &run, &advance).unwrap());
    // Recording the same slot again (a crash between the inbox and this) changes nothing.
    assert!(!record_run(&conn, &task, &run, &advance).unwrap());
    let t = get(&conn, Scope::Operator, &task.id).unwrap();
    assert_eq!(t.run_count, 1);
    assert_eq!(t.last_run, Some(slot));
    assert_eq!(t.last_outcome, Some(RunOutcome::Fired));
    assert_eq!(t.next_run, Some(at("2026-12-06T08:00:00Z")));
    assert_eq!(
        open_run(&conn, &task.id).unwrap().unwrap().inbound_seq,
        Some(2)
    );

    // A pause that came in while the run was being fired wins over the advance.
    let slot2 = t.next_run.unwrap();
    pause(&conn, Scope::Operator, &task.id, now).unwrap();
    let advance = advance_after(&t, slot2);
    record_run(
        &conn,
        &t,
        &NewRun {
            scheduled_for: slot2,
            inbound_seq: Some(4),
            ..run.clone()
        },
        &advance,
    )
    .unwrap();
    let t = get(&conn, Scope::Operator, &task.id).unwrap();
    assert_eq!((t.status, t.next_run), (TaskStatus::Paused, None));

    // Verdicts fold into their run, once.
    assert_eq!(
        fold(&conn, "s-a", 2, RunOutcome::Failed, Some("model down")).unwrap(),
        Some(task.id.clone())
    );
    assert_eq!(
        fold(&conn, "s-a", 2, RunOutcome::Completed, None).unwrap(),
        None
    );
    let history = runs(&conn, &task.id, 10).unwrap();
    let outcomes: Vec<_> = history
        .iter()
        .map(|r| (r.inbound_seq, r.outcome, r.detail.clone()))
        .collect();
    assert_eq!(
        outcomes,
        [
            (Some(4), RunOutcome::Fired, None),
            (Some(2), RunOutcome::Failed, Some("model down".into())),
        ]
    );
    // The failure did not end the series, and last_outcome follows the latest run only.
    let t = get(&conn, Scope::Operator, &task.id).unwrap();
    assert_eq!(t.last_outcome, Some(RunOutcome::Fired));

    // A one-shot completes when it fires.
    let shot = schedule(&conn, &agent("a"), &once("x", "+1h"), Berlin, now).unwrap();
    record_run(
        &conn,
        &shot,
        &NewRun {
            scheduled_for: shot.next_run.unwrap(),
            ..run
        },
        &advance_after(&shot, now),
    )
    .unwrap();
    let shot = get(&conn, Scope::Operator, &shot.id).unwrap();
    assert_eq!((shot.status, shot.next_run), (TaskStatus::Completed, None));
}

#[test]
fn the_outcome_of_a_task_message() {
    let msg = |status, error: Option<&str>, detail: Option<serde_json::Value>| InboundMessage {
        seq: 2,
        id: "task:x".into(),
        kind: InboundKind::Task,
        created_at: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
        status,
        process_after: None,
        tries: 0,
        trigger: true,
        route: Route::new("cli", "local"),
        sender_id: None,
        sender_name: None,
        content: json!({}),
        error: error.map(str::to_owned),
        detail,
    };
    let table = [
        (msg(InboundStatus::Pending, None, None), None),
        (
            msg(InboundStatus::Completed, None, None),
            Some((RunOutcome::Completed, None)),
        ),
        (
            msg(InboundStatus::Failed, Some("model down"), None),
            Some((RunOutcome::Failed, Some("model down".to_owned()))),
        ),
        (
            msg(
                InboundStatus::Completed,
                None,
                Some(ScriptReport::Skip.detail()),
            ),
            Some((
                RunOutcome::ScriptFalse,
                Some("the script said wakeAgent: false".to_owned()),
            )),
        ),
        (
            msg(
                InboundStatus::Completed,
                None,
                Some(
                    ScriptReport::Error {
                        reason: "timed out after 30 s".into(),
                    }
                    .detail(),
                ),
            ),
            Some((
                RunOutcome::ScriptError,
                Some("timed out after 30 s".to_owned()),
            )),
        ),
        (
            msg(
                InboundStatus::Completed,
                None,
                Some(ScriptReport::Wake.detail()),
            ),
            Some((
                RunOutcome::Completed,
                Some("the script woke the agent".to_owned()),
            )),
        ),
    ];
    for (m, want) in table {
        assert_eq!(outcome_of(&m), want, "{:?} {:?}", m.status, m.detail);
    }
}

#[test]
fn listing_filters_by_status() {
    let (_dir, conn) = setup();
    let now = at(NOW);
    let a = Scope::Agent("a");
    let late = schedule(&conn, &agent("a"), &once("late", "+3h"), Berlin, now).unwrap();
    let soon = schedule(&conn, &agent("a"), &once("soon", "+1h"), Berlin, now).unwrap();
    let gone = schedule(&conn, &agent("a"), &once("gone", "+2h"), Berlin, now).unwrap();
    cancel(&conn, a, &gone.id, now).unwrap();
    let paused = schedule(&conn, &agent("a"), &once("paused", "+2h"), Berlin, now).unwrap();
    pause(&conn, a, &paused.id, now).unwrap();
    let ids = |status: Option<&str>| {
        list(
            &conn,
            a,
            &ListTasks {
                status: status.map(str::to_owned),
            },
        )
        .map(|tasks| tasks.into_iter().map(|t| t.prompt).collect::<Vec<_>>())
    };
    assert_eq!(ids(None).unwrap(), ["soon", "late", "paused"]);
    assert_eq!(ids(Some("cancelled")).unwrap(), ["gone"]);
    assert_eq!(ids(Some("all")).unwrap().len(), 4);
    let err = ids(Some("finished")).unwrap_err();
    assert!(
        err.to_string().contains("unknown status \"finished\""),
        "{err}"
    );
    let _ = (late, soon);
}
