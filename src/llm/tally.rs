//! What an answer reported and what the gateway counted in it: `Usage`
//! in the ledger's convention, a stream's running tally, and the text
//! counted for answers that report no usage. Plain data shared by the
//! per-API readers (`api`) and the framing (`usage`).

use super::tokens;

/// Token usage as reported by the upstream, in the ledger's convention:
/// `prompt_tokens` holds EVERY input token (cache reads and writes
/// included), `completion_tokens` every output token (reasoning included).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub reasoning_tokens: u64,
    pub cache_write_tokens: u64,
}

/// What a response revealed about its token usage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParsedUsage {
    /// The upstream's own figures (the last `usage` seen), if any.
    pub usage: Option<Usage>,
    /// `usage` holds only part of the report (an Anthropic stream cut
    /// before its `message_delta`: the input is known, the output is not).
    pub partial: bool,
    /// Locally counted tokens of the generated text, for billing an estimate
    /// when `usage` is `None` or partial. In JSON mode, and in SSE mode
    /// after [`UsageParser::finish_for_billing`], it is only computed then.
    pub completion_text_tokens: u64,
    /// Size of a JSON answer too large to parse whole (0 otherwise): its
    /// text was delivered uncounted, so a bill without usage must cover it.
    pub unread_bytes: u64,
}

/// What an SSE stream has revealed so far; updated per event by the API.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamTally {
    pub usage: Option<Usage>,
    /// `usage` is the upstream's final report, not only its input side.
    pub usage_final: bool,
    /// The generated text, counted when something needs the count.
    pub text: TextTally,
}

impl StreamTally {
    pub(super) fn reported_output(&self) -> u64 {
        self.usage.map_or(0, |u| u.completion_tokens)
    }

    /// Output generated so far, by the upstream's count or ours.
    pub fn output_so_far(&mut self) -> u64 {
        self.reported_output().max(self.text.count())
    }

    /// Never below [`Self::output_so_far`], and free: no tokenizer run.
    pub fn output_upper_bound(&self) -> u64 {
        self.reported_output().max(self.text.upper_bound())
    }
}

/// Above this many untokenized bytes a stream's text is counted, so an
/// endless stream holds a bounded amount of it.
pub(super) const MAX_PENDING_TEXT_BYTES: usize = 64 * 1024;

/// Generated text whose tokens are counted only when something needs them.
/// Counting every delta as it passed cost a tokenizer run per event; yet a
/// stream that reports its own usage (the normal case) never needs the
/// count, and the cap check works on an upper bound (a token covers at
/// least one byte). Texts are counted one by one, as the upstream sent
/// them, so the count is the same whenever it is taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextTally {
    counted: u64,
    /// Texts not counted yet, back to back; `ends` marks where each ends.
    pending: String,
    ends: Vec<usize>,
}

impl TextTally {
    pub fn add(&mut self, text: &str) {
        if text.is_empty() {
            return;
        }
        self.pending.push_str(text);
        self.ends.push(self.pending.len());
        if self.pending.len() > MAX_PENDING_TEXT_BYTES {
            self.count();
        }
    }

    /// The texts of one stream event that are present (a delta carries
    /// some of its optional text fields).
    pub fn add_present<S: AsRef<str>>(&mut self, texts: impl IntoIterator<Item = Option<S>>) {
        for text in texts.into_iter().flatten() {
            self.add(text.as_ref());
        }
    }

    /// At least the token count, without counting.
    pub fn upper_bound(&self) -> u64 {
        self.counted.saturating_add(self.pending.len() as u64)
    }

    /// Whether [`Self::count`] would run the tokenizer.
    pub fn has_uncounted(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The exact count of every text added so far.
    pub fn count(&mut self) -> u64 {
        let mut start = 0;
        for &end in &self.ends {
            let n = tokens::count_text(&self.pending[start..end]);
            self.counted = self.counted.saturating_add(n);
            start = end;
        }
        self.ends.clear();
        if self.pending.capacity() > KEEP_BUFFER_CAPACITY {
            self.pending = String::new();
        } else {
            self.pending.clear();
        }
        self.counted
    }
}

/// Above this, a buffer is freed instead of reused, so one large event does not
/// pin up to `MAX_SSE_EVENT_BYTES` for the rest of a long stream.
pub(super) const KEEP_BUFFER_CAPACITY: usize = 16 * 1024;

#[cfg(test)]
mod tests {
    use super::*;

    const WORDS: [&str; 8] = [
        "Hello", " there", "!", " How", " can", " I", " help", " today?",
    ];

    #[test]
    fn text_tally_counts_lazily_and_the_same_whenever_counted() {
        let mut eager = TextTally::default();
        let mut lazy = TextTally::default();
        let mut expected = 0;
        for (i, w) in WORDS.iter().cycle().take(40).enumerate() {
            expected += tokens::count_text(w);
            eager.add(w);
            assert_eq!(eager.count(), expected);
            lazy.add(w);
            assert!(lazy.upper_bound() >= expected, "bound below count at {i}");
            if i == 17 {
                assert_eq!(lazy.count(), expected, "counted midway");
            }
        }
        assert!(lazy.has_uncounted());
        assert_eq!(lazy.count(), expected);
        assert!(!lazy.has_uncounted());
        assert_eq!(
            lazy.upper_bound(),
            expected,
            "nothing pending: bound is exact"
        );
    }

    #[test]
    fn text_tally_holds_a_bounded_amount_of_text() {
        let mut t = TextTally::default();
        let delta = "word ".repeat(100);
        for _ in 0..1000 {
            t.add(&delta);
            assert!(t.pending.len() <= MAX_PENDING_TEXT_BYTES + delta.len());
        }
        assert_eq!(t.count(), 1000 * tokens::count_text(&delta));
    }
}
