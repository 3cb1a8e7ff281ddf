//! `clawbox doctor`.

use super::*;

pub fn doctor(report: &DoctorReport) -> String {
    let mut out = String::new();
    out.push_str(if report.ran_by_host {
        "checked by the running host, with its configuration\n\n"
    } else {
        "no host is running; checked with this shell's configuration (.env and environment)\n\n"
    });
    let width = report
        .checks
        .iter()
        .map(|c| c.name.width())
        .max()
        .unwrap_or(0);
    for c in &report.checks {
        let level = match c.level {
            Level::Ok => "OK",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        };
        let pad = " ".repeat(width - c.name.width());
        out.push_str(&format!(
            "{level:<4}  {}{pad}  {}\n",
            clean(&c.name),
            clean(&c.detail)
        ));
        if let Some(hint) = &c.hint {
            out.push_str(&format!("      {}  → {}\n", " ".repeat(width), clean(hint)));
        }
    }
    let count = |level| report.checks.iter().filter(|c| c.level == level).count() as u64;
    let (failed, warned) = (count(Level::Fail), count(Level::Warn));
    out.push('\n');
    out.push_str(&match (failed, warned) {
        (0, 0) => "all checks passed\n".to_owned(),
        (0, w) => format!("no failures, {}\n", plural(w, "warning", "warnings")),
        (f, w) => format!(
            "{} failed, {}\n",
            plural(f, "check", "checks"),
            plural(w, "warning", "warnings")
        ),
    });
    out
}
