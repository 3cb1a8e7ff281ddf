//! Seq parity: inbound rows get even seqs, outbound rows odd ones, so a seq alone says which
//! table a message lives in (`<message id="12">`, `send_message → id 13`).

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
}
