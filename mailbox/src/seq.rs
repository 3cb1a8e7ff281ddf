//! Seq parity: inbound rows get even seqs, outbound rows odd ones, so a seq alone says which
//! table a message lives in (`<message id="12">`, `send_message → id 13`).
//!
//! Seqs are bounded by [`MAX_SEQ`]. The container writes `outbound.db` as it likes, so a seq
//! there may be anything up to `i64::MAX`; both sides compute "the max of both tables" over
//! seqs up to [`MAX_SEQ`] only ([`MAX_SEQ_FILTER`]), so one forged row can neither overflow the
//! next seq nor push the host's own counter out of range. A row above it is out of range: the
//! host reports it as undeliverable and goes on.

/// Which side of the mailbox a seq belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parity {
    /// Even: `inbound.messages_in`, written by the host.
    Inbound,
    /// Odd: `outbound.messages_out`, written by the container.
    Outbound,
}

impl Parity {
    pub fn of(seq: i64) -> Parity {
        if seq.rem_euclid(2) == 0 {
            Parity::Inbound
        } else {
            Parity::Outbound
        }
    }
}

/// The largest seq either side allocates or accepts: 2^53 − 1, the largest integer a JSON
/// number keeps exactly (the model sees seqs as message ids), and far below `i64::MAX`, so the
/// next seq never overflows.
pub const MAX_SEQ: i64 = (1 << 53) - 1;

/// The SQL condition that keeps a seq column within range when taking a max.
pub(crate) const MAX_SEQ_FILTER: &str = "seq <= 9007199254740991";

/// Whether `seq` is one the host accepts from the container.
pub fn in_range(seq: i64) -> bool {
    (1..=MAX_SEQ).contains(&seq)
}

/// The smallest seq of `parity` strictly greater than `max_seen` (the max over both tables).
pub fn next_seq(parity: Parity, max_seen: i64) -> i64 {
    let candidate = max_seen.max(0) + 1;
    if Parity::of(candidate) == parity {
        candidate
    } else {
        candidate + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_seq_keeps_parity_and_grows() {
        let table = [
            (Parity::Inbound, 0, 2),
            (Parity::Inbound, 1, 2),
            (Parity::Inbound, 2, 4),
            (Parity::Inbound, 7, 8),
            (Parity::Outbound, 0, 1),
            (Parity::Outbound, 1, 3),
            (Parity::Outbound, 2, 3),
            (Parity::Outbound, 8, 9),
            (Parity::Outbound, -5, 1),
        ];
        for (parity, max, want) in table {
            assert_eq!(next_seq(parity, max), want, "{parity:?} after {max}");
            assert_eq!(Parity::of(want), parity);
        }
    }

    #[test]
    fn range() {
        assert_eq!(MAX_SEQ_FILTER, format!("seq <= {MAX_SEQ}"));
        for (seq, ok) in [
            (0, false),
            (1, true),
            (MAX_SEQ, true),
            (MAX_SEQ + 1, false),
            (i64::MAX, false),
            (-3, false),
        ] {
            assert_eq!(in_range(seq), ok, "{seq}");
        }
    }
}
