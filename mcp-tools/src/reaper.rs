//! The server as its commands' reaper: everything a `run_bash` call started dies with the call.
//! Owns the child-subreaper flag, the registry of commands in flight and the sweep that kills a
//! finished command's leftovers; spawning and output live in `tools/bash.rs`.
//!
//! A process group is not enough to contain a command: `setsid`, `setpgid` or a double fork move
//! processes out of it, and a fork bomb forks faster than one `killpg` can catch. So the server
//! marks itself a child subreaper (`PR_SET_CHILD_SUBREAPER`): a process whose parent dies is
//! re-parented to the server instead of to init, and stays findable in `/proc`. When a call ends,
//! [`Registry::sweep`] kills, round after round, every process of the call's group, every
//! descendant of those, and every orphan re-parented to the server that belongs to no other call
//! in flight, then reaps what became the server's zombies — until none is left. A SIGKILLed
//! process cannot fork again, so each round's new children are caught by the next one.
//!
//! Reaping is by pid, never `waitpid(-1)`: the bash processes of calls in flight belong to
//! tokio, which waits for them itself. The registry lock is held around each spawn and each
//! sweep, so a sweep never mistakes a bash that is being started for an orphan.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// Sweep rounds before giving up; a round kills everything it sees, so even a fork bomb at the
/// container's pid limit ends within a few rounds. Reaching this bound is logged.
const MAX_ROUNDS: usize = 10_000;

/// Makes this process the reaper of its orphaned descendants. Linux only; elsewhere (and if the
/// call fails) sweeps still kill process groups and live descendants, but not orphans that left
/// the group.
pub(crate) fn become_subreaper() {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        tracing::warn!(
            error = %std::io::Error::last_os_error(),
            "cannot become a child subreaper; orphans of commands may escape the cleanup"
        );
    }
}

/// The bash processes of calls in flight (each also the id of its call's process group).
#[derive(Debug, Default)]
pub(crate) struct Registry(Mutex<HashSet<libc::pid_t>>);

impl Registry {
    /// Holds the registry while a command is spawned; register the new bash before dropping it.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashSet<libc::pid_t>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The call whose bash is `pid` is over (tokio has reaped that bash).
    pub(crate) fn finished(&self, pid: libc::pid_t) {
        self.lock().remove(&pid);
    }

    /// Kills and reaps everything the call with process group `pgid` left behind, until nothing
    /// is left. Blocking (it reads `/proc` and may take several rounds): run it off the async
    /// threads. Returns how many processes it killed.
    pub(crate) fn sweep(&self, pgid: libc::pid_t) -> usize {
        let live_calls = self.lock();
        let me = std::process::id() as libc::pid_t;
        sweep_where(me, |table| leftovers(table, me, Some(pgid), &live_calls))
    }

    /// Kills and reaps every descendant of the server, calls in flight included (the server is
    /// stopping). Bash processes of calls in flight are killed but left to tokio to reap.
    pub(crate) fn kill_all(&self) -> usize {
        let live_calls = self.lock();
        let me = std::process::id() as libc::pid_t;
        sweep_where(me, |table| {
            let mut all = descendants(table, &HashSet::from([me]));
            all.remove(&me);
            all.into_iter()
                .map(|pid| (pid, !live_calls.contains(&pid)))
                .collect()
        })
    }
}

/// One process as `/proc/<pid>/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    ppid: libc::pid_t,
    pgrp: libc::pid_t,
    zombie: bool,
}

/// Runs kill rounds until `targets` (pid → may we reap it) names no live process and no zombie
/// of ours.
fn sweep_where(
    me: libc::pid_t,
    mut targets: impl FnMut(&HashMap<libc::pid_t, Proc>) -> Vec<(libc::pid_t, bool)>,
) -> usize {
    let mut killed = HashSet::new();
    for _round in 0..MAX_ROUNDS {
        let table = process_table();
        let mut pending = false;
        for (pid, reapable) in targets(&table) {
            let Some(proc) = table.get(&pid) else {
                continue;
            };
            if !proc.zombie {
                // SAFETY: kill only sends a signal. ESRCH (it died meanwhile) needs no handling.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                killed.insert(pid);
                pending = true;
            } else if proc.ppid == me && reapable {
                let mut status = 0;
                // SAFETY: waitpid on one specific child of ours, non-blocking; `status` is a
                // valid out-pointer for the call's duration.
                unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                pending = true;
            }
        }
        if !pending {
            return killed.len();
        }
        std::thread::yield_now();
    }
    tracing::warn!(
        killed = killed.len(),
        "processes of a command were still being created after {MAX_ROUNDS} kill rounds"
    );
    killed.len()
}

/// What a finished call left: its group's members, their descendants, and orphans re-parented
/// to the server (`me`) that are not another live call's bash or in its group — with, for each,
/// whether the server may reap it.
fn leftovers(
    table: &HashMap<libc::pid_t, Proc>,
    me: libc::pid_t,
    pgid: Option<libc::pid_t>,
    live_calls: &HashSet<libc::pid_t>,
) -> Vec<(libc::pid_t, bool)> {
    let roots: HashSet<libc::pid_t> = table
        .iter()
        .filter(|(pid, proc)| {
            if live_calls.contains(pid) || live_calls.contains(&proc.pgrp) {
                return false;
            }
            Some(proc.pgrp) == pgid || proc.ppid == me
        })
        .map(|(&pid, _)| pid)
        .collect();
    descendants(table, &roots)
        .into_iter()
        .filter(|pid| *pid != me && !live_calls.contains(pid))
        .map(|pid| (pid, true))
        .collect()
}

/// `roots` and every process below them.
fn descendants(
    table: &HashMap<libc::pid_t, Proc>,
    roots: &HashSet<libc::pid_t>,
) -> HashSet<libc::pid_t> {
    let mut children: HashMap<libc::pid_t, Vec<libc::pid_t>> = HashMap::new();
    for (&pid, proc) in table {
        children.entry(proc.ppid).or_default().push(pid);
    }
    let mut found: HashSet<libc::pid_t> = roots.clone();
    let mut stack: Vec<libc::pid_t> = roots.iter().copied().collect();
    while let Some(pid) = stack.pop() {
        for &child in children.get(&pid).map(Vec::as_slice).unwrap_or_default() {
            if found.insert(child) {
                stack.push(child);
            }
        }
    }
    found
}

/// Every process visible in `/proc`. Entries that vanish while being read are skipped.
fn process_table() -> HashMap<libc::pid_t, Proc> {
    let mut table = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return table;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(proc) = parse_stat(&stat) {
            table.insert(pid, proc);
        }
    }
    table
}

/// Parses `pid (comm) state ppid pgrp …`; the command name may hold spaces and parentheses,
/// so the fields are read after its last `)`.
fn parse_stat(stat: &str) -> Option<Proc> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Proc {
        ppid,
        pgrp,
        zombie: state == "Z" || state == "X",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(ppid: libc::pid_t, pgrp: libc::pid_t) -> Proc {
        Proc {
            ppid,
            pgrp,
            zombie: false,
        }
    }

    #[test]
    fn stat_lines() {
        assert_eq!(
            parse_stat("42 (a) b (c)) S 7 42 42 0 -1"),
            Some(proc(7, 42))
        );
        assert_eq!(
            parse_stat("43 (sh) Z 1 43 43"),
            Some(Proc {
                ppid: 1,
                pgrp: 43,
                zombie: true
            })
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S notanumber 1"), None);
    }

    /// The server is 10; call A's bash was 20 (finished), call B's bash is 30 (live).
    #[test]
    fn leftovers_of_a_finished_call() {
        let table = HashMap::from([
            (10, proc(1, 10)),
            // A's background job, still in A's group, child of a subshell of A's.
            (21, proc(22, 20)),
            (22, proc(10, 20)),
            // A's setsid escapee, re-parented to the server, with a child.
            (23, proc(10, 23)),
            (24, proc(23, 23)),
            // B and its job, and an orphan still in B's group.
            (30, proc(10, 30)),
            (31, proc(30, 30)),
            (32, proc(10, 30)),
            // Unrelated processes.
            (40, proc(1, 40)),
            (41, proc(40, 40)),
        ]);
        let mut got: Vec<_> = leftovers(&table, 10, Some(20), &HashSet::from([30]))
            .into_iter()
            .map(|(pid, _)| pid)
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![21, 22, 23, 24]);
    }
}
