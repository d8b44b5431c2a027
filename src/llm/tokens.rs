//! Token counting with the o200k_base BPE (GPT-4o family).
//!
//! Counts are estimates used for budget reservation; the upstream's reported
//! usage is what gets billed whenever it is available.

use once_cell::sync::Lazy;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use super::bpe::CompactBpe;

/// Loaded on first use (or by [`warm_up`]). `None` if the embedded BPE could not
/// be built, in which case counting degrades to a byte heuristic.
///
/// Not loaded at start: reservations use [`bytes_bound`], so a gateway whose
/// calls all report usage never needs it. Building it passes through
/// tiktoken-rs's ~50 MiB tables, freed at once and given back to the OS.
static BPE: Lazy<Option<CompactBpe>> = Lazy::new(|| {
    let bpe = CompactBpe::o200k().ok();
    crate::sys::heap::release_freed_memory();
    bpe
});

/// Builds the tokenizer now (parsing the embedded BPE takes a while).
/// Returns false if the BPE is unavailable and the byte heuristic is in use.
pub fn warm_up() -> bool {
    BPE.is_some()
}

/// Whether the tokenizer is built (counting will not stall to build it).
pub fn is_loaded() -> bool {
    Lazy::get(&BPE).is_some()
}

/// Builds the tokenizer on the blocking pool if it is not built yet, so the
/// first count does not stall an event loop for the parse.
pub async fn load_off_loop() {
    if !is_loaded() {
        // A failed join means a panic while parsing: counting then retries
        // the parse inline and degrades to the byte heuristic.
        let _ = tokio::task::spawn_blocking(warm_up).await;
    }
}

/// An upper bound on the tokens of `text` that costs nothing: every token
/// of a byte-level BPE (o200k, cl100k, Anthropic's) covers at least one
/// byte. For English it is about 4x the count.
pub fn bytes_bound(text: &str) -> u64 {
    text.len() as u64
}

/// Texts shorter than this are tokenized directly: cheaper than hashing
/// and locking for the cache.
const CACHE_MIN_BYTES: usize = 512;
/// Bounded: when full, the cache is cleared rather than grown.
const CACHE_MAX_ENTRIES: usize = 8192;

/// Counts of long texts by their hash. Chat clients resend the whole
/// conversation every turn, so earlier messages are counted only once.
static COUNT_CACHE: Lazy<Mutex<HashMap<u64, u64>>> = Lazy::new(|| Mutex::new(HashMap::new()));

fn text_key(text: &str) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    text.len().hash(&mut hasher);
    hasher.finish()
}

pub fn count_text(text: &str) -> u64 {
    if text.len() < CACHE_MIN_BYTES {
        return count_uncached(text);
    }
    let key = text_key(text);
    if let Some(n) = COUNT_CACHE.lock().ok().and_then(|c| c.get(&key).copied()) {
        return n;
    }
    let n = count_uncached(text);
    if let Ok(mut cache) = COUNT_CACHE.lock() {
        if cache.len() >= CACHE_MAX_ENTRIES {
            cache.clear();
        }
        cache.insert(key, n);
    }
    n
}

fn count_uncached(text: &str) -> u64 {
    match BPE.as_ref() {
        // Ordinary encoding: user text that looks like a special token is
        // tokenized as plain text, as the upstream does.
        Some(bpe) => bounded_segments(text)
            .map(|segment| {
                bpe.count(segment)
                    .unwrap_or_else(|| fallback_count(segment))
            })
            .sum(),
        None => fallback_count(text),
    }
}

/// Longest run without whitespace handed to the BPE in one piece.
const MAX_RUN_BYTES: usize = 256;

/// Splits `text` inside runs of non-whitespace longer than
/// [`MAX_RUN_BYTES`]. BPE merging is quadratic in the length of one
/// pre-tokenized piece: a 900 KiB prompt of a single "word" kept a core busy
/// for minutes (measured), an easy denial of service. Cutting such runs
/// changes the estimate by at most a token per cut; ordinary text (short
/// runs) is passed through in one segment.
fn bounded_segments(text: &str) -> impl Iterator<Item = &str> {
    let mut start = 0;
    let mut run = 0;
    let mut cuts = Vec::new();
    for (i, c) in text.char_indices() {
        if c.is_whitespace() {
            run = 0;
            continue;
        }
        if run >= MAX_RUN_BYTES {
            cuts.push(i);
            run = 0;
        }
        run += c.len_utf8();
    }
    cuts.push(text.len());
    cuts.into_iter().map(move |end| {
        let segment = &text[start..end];
        start = end;
        segment
    })
}

/// ~4 bytes per token is OpenAI's rule of thumb for English text.
fn fallback_count(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

#[cfg(test)]
mod tests {
    #[test]
    fn one_huge_word_is_cut_into_bounded_runs_and_counted_sensibly() {
        let word = "x".repeat(900 * 1024);
        // BPE is quadratic per run: the cut is what keeps counting linear
        // (no timing here: the bench measures speed, this the mechanism).
        assert!(bounded_segments(&word).all(|s| s.len() <= MAX_RUN_BYTES));
        let n = count_uncached(&word);
        // Runs of one letter merge into long tokens: well under 1 per byte.
        assert!(n > 0 && n < word.len() as u64 / 2, "{n}");
    }

    #[test]
    fn ordinary_text_is_one_segment() {
        let text = "How do I reset my password? ".repeat(100);
        assert_eq!(bounded_segments(&text).count(), 1);
        let long = format!("a {} b", "y".repeat(600));
        let segments: Vec<&str> = bounded_segments(&long).collect();
        assert_eq!(segments.concat(), long);
        assert!(segments.len() >= 3);
    }

    #[test]
    fn cached_counts_equal_direct_counts() {
        let long = "The quick brown fox jumps over the lazy dog. ".repeat(40);
        let direct = count_uncached(&long);
        assert_eq!(count_text(&long), direct);
        assert_eq!(
            count_text(&long),
            direct,
            "second call served from the cache"
        );
        let other = format!("{long}!");
        assert_ne!(count_text(&other), 0);
        assert_eq!(count_text("short"), count_uncached("short"));
    }

    use super::*;

    #[test]
    fn tokenizer_loads() {
        assert!(warm_up());
    }

    #[test]
    fn counts_known_strings() {
        assert_eq!(count_text(""), 0);
        // o200k_base: "Hello" "," " world" "!"
        assert_eq!(count_text("Hello, world!"), 4);
        assert_eq!(count_text("user"), 1);
        // Special-token lookalikes are plain text, so more than one token.
        assert!(count_text("<|endoftext|>") > 1);
    }

    #[test]
    fn bytes_bound_is_never_below_the_count() {
        for text in [
            "",
            "Hello, world!",
            "ünïcödé ✓ 日本語のテキスト",
            "<|endoftext|>",
            "a",
            "    \n\n\t  ",
        ] {
            assert!(bytes_bound(text) >= count_text(text), "{text:?}");
        }
        let long = "How do I reset my password? ".repeat(50);
        assert!(bytes_bound(&long) >= count_text(&long));
        assert!(is_loaded(), "counting loaded the tokenizer");
    }

    #[test]
    fn fallback_rounds_up() {
        assert_eq!(fallback_count(""), 0);
        assert_eq!(fallback_count("a"), 1);
        assert_eq!(fallback_count("abcd"), 1);
        assert_eq!(fallback_count("abcde"), 2);
    }
}
