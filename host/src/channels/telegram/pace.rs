//! The pace of the bot's messages per chat, kept under Telegram's limits: about one message a
//! second in one chat, and 20 a minute in a group. Beyond them Telegram answers `429` and a
//! flood leaves the chat stuck behind growing waits, so the channel asks [`Pacer::reserve`] for a
//! slot before every message it posts or edits, and a `429 retry_after` holds the whole chat
//! ([`Pacer::hold`]), not only the request that got it. Each chat has its own pace: a long reply
//! in one chat never holds another chat's messages behind it.
//!
//! Pure bookkeeping over instants the caller passes in (no clock, no sleeping here), so the
//! decisions are tested with made-up times; the channel sleeps until the slot it was given.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

/// Least time between two messages in one chat.
pub const CHAT_GAP: Duration = Duration::from_secs(1);
/// Messages a group (negative chat id) may get per [`GROUP_WINDOW`].
pub const GROUP_MESSAGES: usize = 20;
pub const GROUP_WINDOW: Duration = Duration::from_secs(60);
/// Chats remembered before the ones with nothing recent are forgotten.
const PRUNE_AT: usize = 256;

#[derive(Debug, Default)]
pub struct Pacer {
    chats: HashMap<i64, ChatPace>,
    /// The number of chats above which the next reservation forgets quiet chats.
    prune_at: usize,
}

#[derive(Debug, Default)]
struct ChatPace {
    /// The slots given out, oldest first: the last [`GROUP_MESSAGES`] at most.
    slots: VecDeque<Instant>,
    /// Telegram asked to wait until then (`429 retry_after`).
    hold_until: Option<Instant>,
}

impl ChatPace {
    /// The last time this chat's pace depends on.
    fn busy_until(&self) -> Option<Instant> {
        let last = self.slots.back().map(|t| *t + GROUP_WINDOW);
        last.max(self.hold_until)
    }
}

impl Pacer {
    /// Reserves the next slot for a message to `chat`, asked at `now`; returns when it may be
    /// sent (`now` when the chat has been quiet). Every call takes a slot of its own, so
    /// concurrent senders to one chat are spaced too.
    pub fn reserve(&mut self, chat: i64, now: Instant) -> Instant {
        self.prune(now);
        let pace = self.chats.entry(chat).or_default();
        let mut at = now;
        if let Some(last) = pace.slots.back() {
            at = at.max(*last + CHAT_GAP);
        }
        if chat < 0 && pace.slots.len() >= GROUP_MESSAGES {
            let first_of_window = pace.slots[pace.slots.len() - GROUP_MESSAGES];
            at = at.max(first_of_window + GROUP_WINDOW);
        }
        if let Some(hold) = pace.hold_until {
            at = at.max(hold);
        }
        pace.slots.push_back(at);
        while pace.slots.len() > GROUP_MESSAGES {
            pace.slots.pop_front();
        }
        at
    }

    /// Telegram asked to wait: nothing more goes to `chat` before `until`.
    pub fn hold(&mut self, chat: i64, until: Instant) {
        let pace = self.chats.entry(chat).or_default();
        pace.hold_until = pace.hold_until.max(Some(until));
    }

    /// Forgets chats whose pace no longer matters, once many are remembered (so a bot in many
    /// chats keeps a bounded map, and a quiet one does no work).
    fn prune(&mut self, now: Instant) {
        if self.chats.len() < self.prune_at.max(PRUNE_AT) {
            return;
        }
        self.chats
            .retain(|_, pace| pace.busy_until().is_some_and(|t| t > now));
        self.prune_at = self.chats.len() * 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn messages_to_one_chat_are_a_second_apart_and_a_quiet_chat_sends_at_once() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        // Five parts of one reply asked for at once.
        let slots: Vec<Duration> = (0..5).map(|_| p.reserve(42, t0) - t0).collect();
        assert_eq!(slots, vec![Duration::ZERO, S, 2 * S, 3 * S, 4 * S]);
        // Asked later than its slot would be: at once.
        assert_eq!(p.reserve(42, t0 + 10 * S), t0 + 10 * S);
        // Asked half a second after the last one: half a second later.
        assert_eq!(p.reserve(42, t0 + 10 * S + 500 * MS), t0 + 11 * S);
    }

    #[test]
    fn another_chat_is_not_held_behind_a_busy_one() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        for _ in 0..30 {
            p.reserve(-100, t0);
        }
        assert_eq!(p.reserve(7, t0), t0);
        assert_eq!(p.reserve(-200, t0 + MS), t0 + MS);
        assert_eq!(p.reserve(7, t0 + 2 * MS), t0 + S);
    }

    #[test]
    fn a_group_gets_at_most_twenty_messages_a_minute() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        let slots: Vec<Instant> = (0..45).map(|_| p.reserve(-100, t0)).collect();
        // The first 20 a second apart, then each 60 s after the one 20 before it.
        for (i, at) in slots.iter().enumerate().take(20) {
            assert_eq!(*at, t0 + S * i as u32);
        }
        assert_eq!(slots[20], t0 + 60 * S);
        assert_eq!(slots[21], t0 + 61 * S);
        assert_eq!(slots[40], t0 + 120 * S);
        for window in slots.windows(GROUP_MESSAGES + 1) {
            assert!(window[GROUP_MESSAGES] - window[0] >= GROUP_WINDOW);
        }
        // A private chat (positive id) has no minute limit, only the gap.
        let private: Vec<Instant> = (0..25).map(|_| p.reserve(5, t0)).collect();
        assert_eq!(private[24], t0 + 24 * S);
    }

    #[test]
    fn retry_after_holds_the_whole_chat_and_only_that_chat() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        assert_eq!(p.reserve(-100, t0), t0);
        p.hold(-100, t0 + 30 * S);
        // A shorter hold does not shorten the longer one.
        p.hold(-100, t0 + 5 * S);
        assert_eq!(p.reserve(-100, t0 + S), t0 + 30 * S);
        assert_eq!(p.reserve(-100, t0 + S), t0 + 31 * S);
        assert_eq!(p.reserve(-300, t0 + S), t0 + S);
    }

    #[test]
    fn quiet_chats_are_forgotten_and_busy_ones_kept() {
        let t0 = Instant::now();
        let mut p = Pacer::default();
        for chat in 0..PRUNE_AT as i64 {
            p.reserve(chat, t0);
        }
        p.hold(-1, t0 + 600 * S);
        // Two minutes on, every chat but the held one is quiet.
        let later = t0 + 120 * S;
        assert_eq!(p.reserve(1_000_000, later), later);
        assert_eq!(p.chats.len(), 2);
        assert_eq!(p.reserve(-1, later), t0 + 600 * S);
    }
}
