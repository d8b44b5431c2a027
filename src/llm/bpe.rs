//! A count-only o200k_base tokenizer that keeps its vocabulary in ~3 MiB.
//!
//! Written here because no maintained crate counts o200k tokens in little
//! memory (measured with jemalloc, `o200k_base` loaded and used once):
//! tiktoken-rs holds the vocabulary three times over (encoder map, decoder
//! map, sorted copy; one heap `Vec` per token in each) plus 256 regex
//! clones, ~30 MiB resident; bpe-openai is faster but ~68 MiB. Counting
//! needs only "bytes -> rank", so the vocabulary is kept once: one byte
//! blob, the end offset of every token, and a hash index of rank numbers.
//!
//! tiktoken-rs stays the source of the vocabulary and the pre-tokenizer
//! pattern, and the oracle in the tests: the merge rule below is tiktoken's
//! (always merge the adjacent pair of lowest rank, leftmost first), so the
//! counts are the same.

use hashbrown::{DefaultHashBuilder, HashTable};
use std::hash::BuildHasher;

/// o200k_base's mergeable ranks are dense, `0..O200K_RANKS` (tiktoken
/// checks this when it loads the file); special tokens come after and are
/// never produced by ordinary encoding.
const O200K_RANKS: u32 = 199_998;

/// The pre-tokenizer of o200k_base, as published by OpenAI (tiktoken's
/// `openai_public.py`): pieces are merged separately, never across.
const O200K_PATTERN: &str = concat!(
    r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
    r"|\p{N}{1,3}",
    r"| ?[^\s\p{L}\p{N}]+[\r\n/]*",
    r"|\s*[\r\n]+",
    r"|\s+(?!\S)",
    r"|\s+",
);

const NO_RANK: u32 = u32::MAX;

#[derive(Debug, thiserror::Error)]
pub enum BpeError {
    #[error("tiktoken o200k_base: {0}")]
    Vocabulary(String),
    #[error("pre-tokenizer pattern: {0}")]
    Pattern(#[from] Box<fancy_regex::Error>),
}

pub struct CompactBpe {
    /// Every token's bytes, concatenated in rank order.
    blob: Vec<u8>,
    /// `ends[r]` is where token `r` ends in `blob`; it starts where `r - 1`
    /// ends.
    ends: Vec<u32>,
    /// Ranks, hashed by their token's bytes.
    index: HashTable<u32>,
    hasher: DefaultHashBuilder,
    /// One shared instance: the regex crate keeps a per-thread cache pool
    /// inside, which is all the per-thread state counting needs.
    pretokenizer: fancy_regex::Regex,
}

impl CompactBpe {
    /// Builds the table from tiktoken-rs's o200k_base, which is dropped
    /// before returning (its ~50 MiB are transient; the caller gives the
    /// freed pages back, see `heap`).
    pub fn o200k() -> Result<Self, BpeError> {
        let source = tiktoken_rs::o200k_base().map_err(|e| BpeError::Vocabulary(e.to_string()))?;
        let pretokenizer = fancy_regex::Regex::new(O200K_PATTERN).map_err(Box::new)?;
        let mut blob = Vec::with_capacity(1 << 21);
        let mut ends = Vec::with_capacity(O200K_RANKS as usize);
        // tiktoken-rs panics on a rank it does not have; a future vocabulary
        // change must turn into an error (counting then falls back to the
        // byte estimate), not a panic on the path that loads the table.
        let copied = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            for token in source._decode_native_and_split((0..O200K_RANKS).collect()) {
                blob.extend_from_slice(&token);
                let end = u32::try_from(blob.len()).ok()?;
                ends.push(end);
            }
            Some(())
        }));
        if !matches!(copied, Ok(Some(()))) {
            return Err(BpeError::Vocabulary(format!(
                "o200k_base does not have ranks 0..{O200K_RANKS}"
            )));
        }
        drop(source);
        blob.shrink_to_fit();
        let mut table = CompactBpe {
            blob,
            ends,
            index: HashTable::with_capacity(O200K_RANKS as usize),
            hasher: DefaultHashBuilder::default(),
            pretokenizer,
        };
        table.build_index()?;
        Ok(table)
    }

    fn build_index(&mut self) -> Result<(), BpeError> {
        let CompactBpe {
            blob,
            ends,
            index,
            hasher,
            ..
        } = self;
        for rank in 0..ends.len() as u32 {
            let bytes = token_bytes(blob, ends, rank);
            let hash = hasher.hash_one(bytes);
            if index
                .find(hash, |r| token_bytes(blob, ends, *r) == bytes)
                .is_some()
            {
                return Err(BpeError::Vocabulary(format!("token {rank} is a duplicate")));
            }
            index.insert_unique(hash, rank, |r| hasher.hash_one(token_bytes(blob, ends, *r)));
        }
        Ok(())
    }

    fn token(&self, rank: u32) -> &[u8] {
        token_bytes(&self.blob, &self.ends, rank)
    }

    fn rank(&self, bytes: &[u8]) -> u32 {
        let hash = self.hasher.hash_one(bytes);
        self.index
            .find(hash, |r| self.token(*r) == bytes)
            .copied()
            .unwrap_or(NO_RANK)
    }

    /// Tokens of `text` encoded as ordinary text (special-token lookalikes
    /// are plain text, as the upstream treats user content). `None` if the
    /// pre-tokenizer gave up (backtracking limit): the caller estimates.
    pub fn count(&self, text: &str) -> Option<u64> {
        let mut total = 0u64;
        for piece in self.pretokenizer.find_iter(text) {
            let piece = piece.ok()?.as_str().as_bytes();
            total += self.piece_tokens(piece);
        }
        Some(total)
    }

    /// Byte-pair merges within one piece; returns how many tokens remain.
    fn piece_tokens(&self, piece: &[u8]) -> u64 {
        if piece.len() <= 1 || self.rank(piece) != NO_RANK {
            return piece.len().min(1) as u64;
        }
        // parts[i] = (start of part i, rank of merging part i with i + 1).
        // The two sentinels close the last real part and its pair.
        let mut parts: Vec<(usize, u32)> = (0..piece.len() - 1)
            .map(|i| (i, self.rank(&piece[i..i + 2])))
            .collect();
        parts.push((piece.len() - 1, NO_RANK));
        parts.push((piece.len(), NO_RANK));
        // Rank of the pair that part `i` forms once part `i + 1` is merged
        // into it (parts[i + 1] is still present, hence `i + 3`).
        let merged_pair = |parts: &[(usize, u32)], i: usize| {
            if i + 3 < parts.len() {
                self.rank(&piece[parts[i].0..parts[i + 3].0])
            } else {
                NO_RANK
            }
        };
        loop {
            // Lowest rank, leftmost on ties: tiktoken's order.
            let mut best = (NO_RANK, 0);
            for (i, &(_, rank)) in parts[..parts.len() - 1].iter().enumerate() {
                if rank < best.0 {
                    best = (rank, i);
                }
            }
            if best.0 == NO_RANK {
                break;
            }
            let i = best.1;
            if i > 0 {
                parts[i - 1].1 = merged_pair(&parts, i - 1);
            }
            parts[i].1 = merged_pair(&parts, i);
            parts.remove(i + 1);
        }
        (parts.len() - 1) as u64
    }
}

fn token_bytes<'a>(blob: &'a [u8], ends: &[u32], rank: u32) -> &'a [u8] {
    let rank = rank as usize;
    let start = if rank == 0 {
        0
    } else {
        ends[rank - 1] as usize
    };
    &blob[start..ends[rank] as usize]
}

#[cfg(test)]
mod tests {
    use super::*;
    use once_cell::sync::Lazy;

    static COMPACT: Lazy<CompactBpe> = Lazy::new(|| CompactBpe::o200k().unwrap());
    static ORACLE: Lazy<tiktoken_rs::CoreBPE> = Lazy::new(|| tiktoken_rs::o200k_base().unwrap());

    fn agree(text: &str) {
        assert_eq!(
            COMPACT.count(text),
            Some(ORACLE.encode_ordinary(text).len() as u64),
            "{text:?}"
        );
    }

    #[test]
    fn counts_equal_tiktoken_on_varied_text() {
        for text in [
            "",
            "a",
            " ",
            "Hello, world!",
            "<|endoftext|> is plain text here",
            "I'm sure they'll say it's what we'd've DONE'S",
            "  leading and trailing spaces   \n\n\t tabs\r\n crlf",
            "numbers 1 12 123 1234 12345 3.14159 1,000,000",
            "ünïcödé ✓ 日本語のテキスト 한국어 текст по-русски عربى",
            "emoji 👩‍👩‍👧‍👦 🇩🇪 and combining e\u{301}",
            "fn main() { let x = vec![1, 2, 3]; println!(\"{x:?}\"); }",
            "https://example.com/path/to/page?query=1&b=two#frag",
            "CamelCaseWords and snake_case_words and SCREAMING_CASE",
            "//// path/like//strings\n\n\n///",
            "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "Customer: my order #12345 hasn't arrived.\nAgent: sorry to hear that!",
        ] {
            agree(text);
        }
    }

    #[test]
    fn counts_equal_tiktoken_on_generated_text() {
        // Deterministic pseudo-random mixes of letters, digits, spaces,
        // punctuation and multibyte characters.
        let alphabet: Vec<char> = "abcXYZ019 \n\t.,'!?-_/äöü日本✓😀é".chars().collect();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..300 {
            let len = (seed % 200) as usize;
            let text: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            agree(&text);
        }
    }

    #[test]
    fn every_rank_is_found_by_its_bytes() {
        for rank in (0..O200K_RANKS).step_by(97) {
            assert_eq!(COMPACT.rank(COMPACT.token(rank)), rank);
        }
        assert_eq!(COMPACT.rank(b"not a token at all, surely"), NO_RANK);
    }
}
