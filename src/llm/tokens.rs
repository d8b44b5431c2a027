//! Token counting with the o200k_base BPE (GPT-4o family).
//!
//! Counts are estimates used for budget reservation; the upstream's reported
//! usage is what gets billed whenever it is available.

use once_cell::sync::Lazy;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use tiktoken_rs::CoreBPE;

use super::chat::{ChatRequest, Part};

/// Loaded on first use (or by [`warm_up`]). `None` if the embedded BPE could not
/// be built, in which case counting degrades to a byte heuristic.
static BPE: Lazy<Option<CoreBPE>> = Lazy::new(|| tiktoken_rs::o200k_base().ok());

/// OpenAI's documented framing overhead per message (`<|start|>role ... <|end|>`).
const TOKENS_PER_MESSAGE: u64 = 3;
/// Every reply is primed with `<|start|>assistant<|message|>`.
const REPLY_PRIMING_TOKENS: u64 = 3;
/// Images are charged 85 tokens at "low" detail and 85 + 170 per 512px tile at
/// "high"; the tile count needs the image dimensions, which we do not fetch, so
/// reserve the minimum and let the upstream's usage correct it. Other non-text
/// parts (audio, files) get the same placeholder.
const NON_TEXT_PART_TOKENS: u64 = 85;

/// Builds the tokenizer now (parsing the embedded BPE is slow) rather than
/// during the first request.
/// Returns false if the BPE is unavailable and the byte heuristic is in use.
pub fn warm_up() -> bool {
    BPE.is_some()
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
            .map(|segment| bpe.encode_ordinary(segment).len() as u64)
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

/// Prompt tokens as OpenAI's cookbook approximates them for chat models.
pub fn estimate_prompt_tokens(req: &ChatRequest) -> u64 {
    let mut total = REPLY_PRIMING_TOKENS;
    for msg in req.messages() {
        total = total
            .saturating_add(TOKENS_PER_MESSAGE)
            .saturating_add(count_text(msg.role()));
        msg.for_each_part(|part| {
            let n = match part {
                Part::Text(t) => count_text(t),
                Part::Other => NON_TEXT_PART_TOKENS,
            };
            total = total.saturating_add(n);
        });
    }
    total
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
    fn fallback_rounds_up() {
        assert_eq!(fallback_count(""), 0);
        assert_eq!(fallback_count("a"), 1);
        assert_eq!(fallback_count("abcd"), 1);
        assert_eq!(fallback_count("abcde"), 2);
    }

    #[test]
    fn estimates_prompt_with_overheads_and_images() {
        let body = br#"{"model":"m","messages":[
            {"role":"system","content":"Hello, world!"},
            {"role":"user","content":[{"type":"text","text":"Hello, world!"},
                {"type":"image_url","image_url":{"url":"data:..."}}]},
            {"role":"assistant","content":null}
        ]}"#;
        let req = ChatRequest::parse(body).unwrap();
        let roles: u64 = ["system", "user", "assistant"]
            .iter()
            .map(|r| count_text(r))
            .sum();
        let expected = REPLY_PRIMING_TOKENS + 3 * TOKENS_PER_MESSAGE + roles + 4 + 4 + 85;
        assert_eq!(estimate_prompt_tokens(&req), expected);
    }
}
