//! The time logic of scheduled tasks as pure functions: reading what an agent gives (a time, a
//! delay, a cron expression, a time zone), the next run of a cron schedule in a named zone, and
//! whether a run is late. No clock and no I/O: callers pass `now`. Storing tasks is tasks.rs's,
//! firing them scheduler.rs's.
//!
//! Rules (each has a table test below):
//! - A time with an offset (`2026-12-24T09:00:00+01:00`, `…Z`) is that instant. A time without
//!   one (`2026-12-24 09:00`) is wall-clock time in the task's zone; one that does not exist
//!   there (skipped by a daylight-saving change) is refused, one that exists twice means the
//!   first. `+10m` / `in 10 minutes` is a delay from now. Times must lie in the future.
//! - Cron has 5 fields (minute hour day-of-month month day-of-week) or 6 (seconds first), read by
//!   croner in the task's zone: a run in a skipped hour moves to the first minute after the gap
//!   (it still runs that day), one in a repeated hour runs once. Schedules more frequent than
//!   [`MIN_INTERVAL`] are refused: a task starts a model turn, and the overlap rule would only
//!   skip most of its runs.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// The shortest interval between two runs of a cron schedule.
pub const MIN_INTERVAL: Duration = Duration::from_secs(60);
/// A run that starts more than this after its scheduled time is late, and the agent is told.
pub const LATE_AFTER: Duration = Duration::from_secs(60);
/// Occurrences looked at when checking [`MIN_INTERVAL`].
const INTERVAL_PROBES: usize = 24;

const FIELDS_5: [&str; 5] = ["minute", "hour", "day-of-month", "month", "day-of-week"];
const FIELDS_6: [&str; 6] = [
    "second",
    "minute",
    "hour",
    "day-of-month",
    "month",
    "day-of-week",
];

/// Why a schedule was refused. The text is what the agent (or operator) reads: it names the
/// value and says what would be accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error(
        "unknown time zone {name:?}; use an IANA name such as Europe/Berlin, America/New_York or UTC"
    )]
    UnknownTimezone { name: String },
    #[error(
        "invalid time {text:?}: {problem}; use YYYY-MM-DD HH:MM (local time in the task's time \
         zone), a time with an offset such as 2026-12-24T09:00:00+01:00 or …Z, or a delay such \
         as +10m"
    )]
    InvalidTime { text: String, problem: String },
    #[error(
        "{text} does not exist in {zone}: the clocks skip that hour for daylight saving time; \
         give another time or one with a UTC offset"
    )]
    NonexistentTime { text: String, zone: String },
    #[error("{at} is in the past (it is now {now})")]
    InPast { at: String, now: String },
    #[error("invalid cron expression {expr:?}: {problem}")]
    InvalidCron { expr: String, problem: String },
    #[error("cron expression {expr:?} never matches a date")]
    NeverRuns { expr: String },
    #[error(
        "cron expression {expr:?} runs every {every}; the shortest interval allowed is 1 minute"
    )]
    TooFrequent { expr: String, every: String },
}

/// An IANA zone name.
pub fn parse_timezone(name: &str) -> Result<Tz, ScheduleError> {
    Tz::from_str(name.trim()).map_err(|_| ScheduleError::UnknownTimezone {
        name: name.to_owned(),
    })
}

/// A one-shot time as an agent writes it (see the module rules), which must lie after `now`.
pub fn parse_time(text: &str, tz: Tz, now: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
    let at = parse_instant(text, tz, now)?;
    if at <= now {
        return Err(ScheduleError::InPast {
            at: local(at, tz),
            now: local(now, tz),
        });
    }
    Ok(at)
}

fn parse_instant(text: &str, tz: Tz, now: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
    let trimmed = text.trim();
    let invalid = |problem: &str| ScheduleError::InvalidTime {
        text: text.to_owned(),
        problem: problem.to_owned(),
    };
    if trimmed.is_empty() {
        return Err(invalid("it is empty"));
    }
    if let Some(delay) = parse_delay(trimmed) {
        let delay = delay.map_err(|p| invalid(&p))?;
        return chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .ok_or_else(|| invalid("the delay is too long"));
    }
    // `Z` is an offset like any other; chrono's `%:z` wants it spelled out.
    let spelled = match trimmed.strip_suffix(['Z', 'z']) {
        Some(rest) => format!("{rest}+00:00"),
        None => trimmed.to_owned(),
    };
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f%:z",
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M%:z",
        "%Y-%m-%d %H:%M%:z",
    ] {
        if let Ok(at) = DateTime::parse_from_str(&spelled, format) {
            return Ok(at.with_timezone(&Utc));
        }
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(trimmed, format) {
            return match tz.from_local_datetime(&naive) {
                LocalResult::Single(at) => Ok(at.with_timezone(&Utc)),
                // The hour that happens twice (clocks go back): the first one.
                LocalResult::Ambiguous(first, _) => Ok(first.with_timezone(&Utc)),
                LocalResult::None => Err(ScheduleError::NonexistentTime {
                    text: trimmed.to_owned(),
                    zone: tz.name().to_owned(),
                }),
            };
        }
    }
    if NaiveDateTime::parse_from_str(&format!("{trimmed} 00:00"), "%Y-%m-%d %H:%M").is_ok() {
        return Err(invalid("it has no time of day"));
    }
    Err(invalid("not a date and time"))
}

/// `+10m`, `+2h`, `in 90 seconds`, `in 1 day`: `None` when `text` is not written as a delay.
fn parse_delay(text: &str) -> Option<Result<Duration, String>> {
    let rest = match text.strip_prefix('+') {
        Some(rest) => rest,
        None => text.strip_prefix("in ")?,
    };
    let rest = rest.trim();
    let split = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (number, unit) = rest.split_at(split);
    let Ok(n) = number.parse::<u64>() else {
        return Some(Err("a delay is a whole number and a unit, e.g. +10m".into()));
    };
    let unit_secs = match unit.trim().to_ascii_lowercase().as_str() {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 604_800,
        _ => {
            return Some(Err(
                "the unit of a delay is s, m, h, d or w (seconds, minutes, hours, days, weeks)"
                    .into(),
            ));
        }
    };
    if n == 0 {
        return Some(Err("a delay must be more than zero".into()));
    }
    Some(
        n.checked_mul(unit_secs)
            .map(Duration::from_secs)
            .ok_or_else(|| "the delay is too long".to_owned()),
    )
}

/// A validated cron expression: 5 or 6 fields, normalised to single spaces.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub expr: String,
    cron: Cron,
}

impl CronSchedule {
    /// Parses `expr`, naming the field at fault when one is.
    pub fn parse(expr: &str) -> Result<CronSchedule, ScheduleError> {
        let invalid = |problem: String| ScheduleError::InvalidCron {
            expr: expr.to_owned(),
            problem,
        };
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let names: &[&str] = match fields.len() {
            0 => return Err(invalid("it is empty".into())),
            5 => &FIELDS_5,
            6 => &FIELDS_6,
            n => {
                return Err(invalid(format!(
                    "it has {n} field{}; use 5 (minute hour day-of-month month day-of-week) or 6 \
                     (second minute hour day-of-month month day-of-week)",
                    if n == 1 { "" } else { "s" }
                )));
            }
        };
        let normalised = fields.join(" ");
        match parser().parse(&normalised) {
            Ok(cron) => Ok(CronSchedule {
                expr: normalised,
                cron,
            }),
            Err(whole) => {
                // Try each field alone (the others `*`) to say which one is wrong.
                for (i, field) in fields.iter().enumerate() {
                    let mut probe = vec!["*"; fields.len()];
                    probe[i] = field;
                    if let Err(e) = parser().parse(&probe.join(" ")) {
                        return Err(invalid(format!(
                            "the {} field {field:?} is invalid ({})",
                            names[i],
                            croner_message(&e)
                        )));
                    }
                }
                Err(invalid(croner_message(&whole)))
            }
        }
    }

    /// The first run strictly after `after`, in `tz`.
    pub fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&tz), false)
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| ScheduleError::NeverRuns {
                expr: self.expr.clone(),
            })
    }

    /// The next run after `now`, once the schedule is known to run at all and not more often
    /// than [`MIN_INTERVAL`].
    pub fn validate(&self, tz: Tz, now: DateTime<Utc>) -> Result<DateTime<Utc>, ScheduleError> {
        let first = self.next_after(tz, now)?;
        let mut previous = first;
        let mut shortest: Option<chrono::Duration> = None;
        for _ in 0..INTERVAL_PROBES {
            let Ok(next) = self.next_after(tz, previous) else {
                break; // a schedule that ends (a year field would) has no further gaps
            };
            let gap = next - previous;
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            previous = next;
        }
        if let Some(gap) = shortest.and_then(|g| g.to_std().ok())
            && gap < MIN_INTERVAL
        {
            return Err(ScheduleError::TooFrequent {
                expr: self.expr.clone(),
                every: format!("{} s", gap.as_secs()),
            });
        }
        Ok(first)
    }
}

/// croner, configured for clawbox: seconds optional (5 or 6 fields), no year field.
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// croner's message without its type prefix and final period.
fn croner_message(e: &croner::errors::CronError) -> String {
    let text = e.to_string();
    let text = text
        .strip_prefix("Component error: ")
        .or_else(|| text.strip_prefix("Invalid pattern: "))
        .unwrap_or(&text);
    text.trim_end_matches('.').to_owned()
}

/// `2026-12-24 09:00 CET (Europe/Berlin)` (`… 09:00 UTC` in UTC); seconds only when they
/// are not zero.
pub fn local(t: DateTime<Utc>, tz: Tz) -> String {
    let zoned = t.with_timezone(&tz);
    let clock = if t.timestamp_subsec_millis() == 0 && zoned.format("%S").to_string() == "00" {
        zoned.format("%Y-%m-%d %H:%M %Z")
    } else {
        zoned.format("%Y-%m-%d %H:%M:%S %Z")
    };
    if tz == Tz::UTC {
        clock.to_string()
    } else {
        format!("{clock} ({})", tz.name())
    }
}

/// Whether a run that was due at `scheduled` and starts at `fired` is late.
pub fn is_late(scheduled: DateTime<Utc>, fired: DateTime<Utc>) -> bool {
    (fired - scheduled)
        .to_std()
        .is_ok_and(|late| late > LATE_AFTER)
}

/// `2 h 5 min` — how late a run is, for the agent and the history.
pub fn human_duration(d: chrono::Duration) -> String {
    let secs = d.num_seconds().max(0);
    let (days, hours, mins) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (days, hours, mins) {
        (0, 0, 0) => format!("{secs} s"),
        (0, 0, m) => format!("{m} min"),
        (0, h, 0) => format!("{h} h"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, 0, _) => format!("{d} d"),
        (d, h, _) => format!("{d} d {h} h"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use chrono_tz::America::New_York;
    use chrono_tz::Europe::Berlin;
    use pretty_assertions::assert_eq;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn times_as_agents_write_them() {
        let now = utc("2026-03-01T12:00:00Z");
        let table: [(&str, Tz, Result<&str, &str>); 17] = [
            // Naive: wall-clock time in the task's zone.
            ("2026-12-24 09:00", Berlin, Ok("2026-12-24T08:00:00Z")),
            ("2026-12-24T09:00", Berlin, Ok("2026-12-24T08:00:00Z")),
            ("2026-07-01 09:00:30", Berlin, Ok("2026-07-01T07:00:30Z")),
            ("2026-12-24 09:00", New_York, Ok("2026-12-24T14:00:00Z")),
            // An offset is honoured whatever the zone.
            (
                "2026-12-24T09:00:00+01:00",
                New_York,
                Ok("2026-12-24T08:00:00Z"),
            ),
            ("2026-12-24T09:00:00Z", Berlin, Ok("2026-12-24T09:00:00Z")),
            ("2026-12-24 09:00Z", Berlin, Ok("2026-12-24T09:00:00Z")),
            ("2026-12-24T09:00-05:00", Berlin, Ok("2026-12-24T14:00:00Z")),
            // Delays.
            ("+10m", Berlin, Ok("2026-03-01T12:10:00Z")),
            ("in 2 hours", Berlin, Ok("2026-03-01T14:00:00Z")),
            ("+1d", New_York, Ok("2026-03-02T12:00:00Z")),
            // Daylight saving: 02:30 is skipped in Berlin on 2026-03-29, repeated on 10-25.
            (
                "2026-03-29 02:30",
                Berlin,
                Err("does not exist in Europe/Berlin"),
            ),
            ("2026-10-25 02:30", Berlin, Ok("2026-10-25T00:30:00Z")),
            // Refusals.
            (
                "2026-01-01 09:00",
                Berlin,
                Err("is in the past (it is now 2026-03-01 13:00 CET"),
            ),
            ("2026-12-24", Berlin, Err("it has no time of day")),
            ("tomorrow at nine", Berlin, Err("not a date and time")),
            ("+10 fortnights", Berlin, Err("the unit of a delay")),
        ];
        for (text, tz, want) in table {
            let got = parse_time(text, tz, now).map_err(|e| e.to_string());
            match (got, want) {
                (Ok(at), Ok(want)) => assert_eq!(at, utc(want), "{text} in {tz}"),
                (Err(e), Err(needle)) => assert!(e.contains(needle), "{text}: {e}"),
                (got, want) => panic!("{text} in {tz}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn cron_errors_name_the_problem() {
        let table = [
            ("", "it is empty"),
            ("0 9 * *", "it has 4 fields; use 5"),
            ("0 0 9 * * * 2027", "it has 7 fields"),
            ("0 25 * * *", "the hour field \"25\" is invalid"),
            ("61 * * * *", "the minute field \"61\" is invalid"),
            ("0 9 * 13 *", "the month field \"13\" is invalid"),
            ("0 9 * * funday", "the day-of-week field \"FUNDAY\""),
            ("70 0 9 * * *", "the second field \"70\" is invalid"),
        ];
        for (expr, needle) in table {
            let err = CronSchedule::parse(expr).unwrap_err().to_string();
            assert!(
                err.to_lowercase().contains(&needle.to_lowercase()),
                "{expr:?}: {err}"
            );
            assert!(err.starts_with("invalid cron expression"), "{err}");
        }
        let now = utc("2026-01-01T00:00:00Z");
        let never = CronSchedule::parse("0 0 30 2 *")
            .unwrap()
            .validate(Berlin, now);
        assert!(
            matches!(never, Err(ScheduleError::NeverRuns { .. })),
            "{never:?}"
        );
        let busy = CronSchedule::parse("*/10 * * * * *")
            .unwrap()
            .validate(Berlin, now)
            .unwrap_err();
        assert_eq!(
            busy.to_string(),
            "cron expression \"*/10 * * * * *\" runs every 10 s; the shortest interval allowed is 1 minute"
        );
        let every_minute = CronSchedule::parse("* * * * *").unwrap();
        assert_eq!(
            every_minute.validate(Berlin, now).unwrap(),
            utc("2026-01-01T00:01:00Z")
        );
        assert_eq!(
            CronSchedule::parse("  0   9 * * 1-5 ").unwrap().expr,
            "0 9 * * 1-5"
        );
    }

    /// The runs of `expr` in `tz` after `from`, in UTC.
    fn runs(expr: &str, tz: Tz, from: &str, n: usize) -> Vec<String> {
        let cron = CronSchedule::parse(expr).unwrap();
        let mut at = utc(from);
        (0..n)
            .map(|_| {
                at = cron.next_after(tz, at).unwrap();
                format!("{} = {}", at.format("%Y-%m-%dT%H:%M:%SZ"), local(at, tz))
            })
            .collect()
    }

    #[test]
    fn cron_in_berlin_across_daylight_saving() {
        // Spring forward, 2026-03-29 02:00 CET -> 03:00 CEST.
        assert_eq!(
            runs("0 9 * * *", Berlin, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T08:00:00Z = 2026-03-28 09:00 CET (Europe/Berlin)",
                "2026-03-29T07:00:00Z = 2026-03-29 09:00 CEST (Europe/Berlin)",
                "2026-03-30T07:00:00Z = 2026-03-30 09:00 CEST (Europe/Berlin)",
            ]
        );
        // 02:30 does not exist that night: the run moves to 03:00 and still happens once.
        assert_eq!(
            runs("30 2 * * *", Berlin, "2026-03-28T12:00:00Z", 2),
            [
                "2026-03-29T01:00:00Z = 2026-03-29 03:00 CEST (Europe/Berlin)",
                "2026-03-30T00:30:00Z = 2026-03-30 02:30 CEST (Europe/Berlin)",
            ]
        );
        // Fall back, 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 happens twice, the job once.
        assert_eq!(
            runs("30 2 * * *", Berlin, "2026-10-24T12:00:00Z", 2),
            [
                "2026-10-25T00:30:00Z = 2026-10-25 02:30 CEST (Europe/Berlin)",
                "2026-10-26T01:30:00Z = 2026-10-26 02:30 CET (Europe/Berlin)",
            ]
        );
        // An interval job runs in both passes of the repeated hour, in order.
        assert_eq!(
            runs("*/30 * * * *", Berlin, "2026-10-24T23:45:00Z", 5),
            [
                "2026-10-25T00:00:00Z = 2026-10-25 02:00 CEST (Europe/Berlin)",
                "2026-10-25T00:30:00Z = 2026-10-25 02:30 CEST (Europe/Berlin)",
                "2026-10-25T01:00:00Z = 2026-10-25 02:00 CET (Europe/Berlin)",
                "2026-10-25T01:30:00Z = 2026-10-25 02:30 CET (Europe/Berlin)",
                "2026-10-25T02:00:00Z = 2026-10-25 03:00 CET (Europe/Berlin)",
            ]
        );
    }

    #[test]
    fn cron_in_new_york_across_daylight_saving() {
        // Weekdays at 9: Friday before and Monday after 2026-03-08 (EST -> EDT).
        assert_eq!(
            runs("0 9 * * 1-5", New_York, "2026-03-06T12:00:00Z", 2),
            [
                "2026-03-06T14:00:00Z = 2026-03-06 09:00 EST (America/New_York)",
                "2026-03-09T13:00:00Z = 2026-03-09 09:00 EDT (America/New_York)",
            ]
        );
        assert_eq!(
            runs("30 2 * * *", New_York, "2026-03-07T12:00:00Z", 2),
            [
                "2026-03-08T07:00:00Z = 2026-03-08 03:00 EDT (America/New_York)",
                "2026-03-09T06:30:00Z = 2026-03-09 02:30 EDT (America/New_York)",
            ]
        );
        // 2026-11-01 02:00 EDT -> 01:00 EST: 01:30 happens twice, the job runs once.
        assert_eq!(
            runs("30 1 * * *", New_York, "2026-10-31T12:00:00Z", 2),
            [
                "2026-11-01T05:30:00Z = 2026-11-01 01:30 EDT (America/New_York)",
                "2026-11-02T06:30:00Z = 2026-11-02 01:30 EST (America/New_York)",
            ]
        );
        // Six fields: seconds first.
        assert_eq!(
            runs("15 0 12 * * *", New_York, "2026-06-01T00:00:00Z", 1),
            ["2026-06-01T16:00:15Z = 2026-06-01 12:00:15 EDT (America/New_York)"]
        );
    }

    #[test]
    fn lateness() {
        let t = utc("2026-01-01T09:00:00Z");
        let table = [
            (0, false),
            (59, false),
            (60, false),
            (61, true),
            (7200, true),
        ];
        for (secs, want) in table {
            assert_eq!(
                is_late(t, t + chrono::Duration::seconds(secs)),
                want,
                "{secs}"
            );
        }
        assert!(!is_late(t, t - chrono::Duration::seconds(5)));
        let table = [
            (42, "42 s"),
            (600, "10 min"),
            (7200, "2 h"),
            (7500, "2 h 5 min"),
            (86_400 * 3 + 60, "3 d"),
            (90_000, "1 d 1 h"),
        ];
        for (secs, want) in table {
            assert_eq!(human_duration(chrono::Duration::seconds(secs)), want);
        }
    }

    #[test]
    fn local_times_are_shown_with_their_zone() {
        let t = utc("2026-12-24T08:00:00Z");
        assert_eq!(local(t, Berlin), "2026-12-24 09:00 CET (Europe/Berlin)");
        assert_eq!(local(t, Tz::UTC), "2026-12-24 08:00 UTC");
        assert_eq!(
            local(t + chrono::Duration::seconds(5), New_York),
            "2026-12-24 03:00:05 EST (America/New_York)"
        );
    }

    #[test]
    fn time_zones() {
        assert_eq!(parse_timezone("Europe/Berlin").unwrap(), Berlin);
        assert_eq!(parse_timezone(" UTC ").unwrap(), Tz::UTC);
        let err = parse_timezone("Mars/Olympus").unwrap_err().to_string();
        assert!(
            err.starts_with("unknown time zone \"Mars/Olympus\""),
            "{err}"
        );
    }
}
