//! Runaway upstream streams: an upstream that keeps generating past the
//! request's output cap would be billed without limit (an endless stream
//! with `max_tokens: 100` was billed 3 million tokens before this). The
//! gateway counts the output of every stream as it passes and cuts it off
//! once the count exceeds the cap by [`margin`].

/// Tokens tolerated past the cap: a quarter of the cap plus 16. The local
/// count (o200k_base over each delta) is not the upstream's tokenizer, and
/// real upstreams stop at the cap, so the margin only has to absorb the
/// difference between the two counts; it must never cut an honest stream.
pub fn margin(cap: u64) -> u64 {
    cap / 4 + 16
}

/// Whether a stream whose output was counted at `counted` tokens so far
/// must be cut off. A cap of 0 (APIs without output) never cuts.
pub fn exceeds(cap: u64, counted: u64) -> bool {
    cap > 0 && counted > cap.saturating_add(margin(cap))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_only_past_the_stated_margin() {
        assert!(!exceeds(100, 100));
        assert!(!exceeds(100, 141));
        assert!(exceeds(100, 142));
        assert!(!exceeds(0, u64::MAX));
        assert!(!exceeds(1, 17));
        assert!(exceeds(1, 18));
    }
}
