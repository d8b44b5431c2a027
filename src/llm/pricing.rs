//! Model prices and cost arithmetic in integer micro-dollars (µUSD).
//!
//! Integers keep budget accounting exact and associative; floats appear only
//! when converting configured USD amounts, once, at load time.

use thiserror::Error;

pub const MICRO_USD_PER_USD: u64 = 1_000_000;
const TOKENS_PER_MTOK: u128 = 1_000_000;
/// No real model costs anywhere near this; a larger value is a config typo.
const MAX_USD_PER_MTOK: f64 = 100_000.0;
/// 2^53 µUSD (~$9 billion): beyond this an f64 no longer holds whole µUSD exactly.
const MAX_MICRO_USD_FROM_F64: f64 = 9_007_199_254_740_992.0;

#[derive(Debug, Clone, Copy, PartialEq, Error)]
pub enum PriceError {
    #[error("amount must be a finite number")]
    NotFinite,
    #[error("amount must not be negative")]
    Negative,
    #[error("amount {usd} USD exceeds the maximum of {max} USD")]
    TooLarge { usd: f64, max: f64 },
}

/// Price in µUSD per million tokens: $0.15/Mtok is 150_000.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input_micro_usd_per_mtok: u64,
    pub output_micro_usd_per_mtok: u64,
    /// Cache-read input tokens (OpenAI `cached_tokens`, Anthropic
    /// `cache_read_input_tokens`).
    pub cached_input_micro_usd_per_mtok: u64,
    /// Anthropic `cache_creation_input_tokens`.
    pub cache_write_micro_usd_per_mtok: u64,
}

/// Tokens of one call by price class. `input_tokens` holds EVERY input
/// token, cache reads and writes included (the ledger's `prompt_tokens`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenClasses {
    pub input_tokens: u64,
    pub cached_tokens: u64,
    pub cache_write_tokens: u64,
    pub output_tokens: u64,
}

impl Price {
    /// Cache prices default to the input price.
    pub fn from_usd_per_mtok(input: f64, output: f64) -> Result<Price, PriceError> {
        let input = per_mtok(input)?;
        Ok(Price {
            input_micro_usd_per_mtok: input,
            output_micro_usd_per_mtok: per_mtok(output)?,
            cached_input_micro_usd_per_mtok: input,
            cache_write_micro_usd_per_mtok: input,
        })
    }

    pub fn with_cache_prices(
        mut self,
        cached_input: Option<f64>,
        cache_write: Option<f64>,
    ) -> Result<Price, PriceError> {
        if let Some(usd) = cached_input {
            self.cached_input_micro_usd_per_mtok = per_mtok(usd)?;
        }
        if let Some(usd) = cache_write {
            self.cache_write_micro_usd_per_mtok = per_mtok(usd)?;
        }
        Ok(self)
    }

    /// The cost of an estimate (no cache classes known yet): input at the
    /// dearest input price, so a reservation is never below the bill.
    pub fn cost_micro_usd(&self, prompt_tokens: u64, completion_tokens: u64) -> u64 {
        let dearest = self
            .input_micro_usd_per_mtok
            .max(self.cache_write_micro_usd_per_mtok);
        round_up(
            u128::from(prompt_tokens) * u128::from(dearest),
            u128::from(completion_tokens) * u128::from(self.output_micro_usd_per_mtok),
        )
    }

    /// The cost of reported usage: (input − cached − cache writes) × input
    /// price + cached × cached price + cache writes × write price + output
    /// × output price, rounded up once.
    pub fn cost_of(&self, t: &TokenClasses) -> u64 {
        let cached = t.cached_tokens.min(t.input_tokens);
        let writes = t.cache_write_tokens.min(t.input_tokens - cached);
        let plain = t.input_tokens - cached - writes;
        let input = (u128::from(plain) * u128::from(self.input_micro_usd_per_mtok))
            .saturating_add(u128::from(cached) * u128::from(self.cached_input_micro_usd_per_mtok))
            .saturating_add(u128::from(writes) * u128::from(self.cache_write_micro_usd_per_mtok));
        round_up(
            input,
            u128::from(t.output_tokens) * u128::from(self.output_micro_usd_per_mtok),
        )
    }
}

/// Rounds up so that any non-zero priced usage costs at least 1 µUSD:
/// otherwise many small requests could be served for free.
fn round_up(input: u128, output: u128) -> u64 {
    // Each product fits in u128 (< 2^128); only sums can overflow.
    let total = input.saturating_add(output).div_ceil(TOKENS_PER_MTOK);
    u64::try_from(total).unwrap_or(u64::MAX)
}

fn per_mtok(usd: f64) -> Result<u64, PriceError> {
    let micro = micro_usd_from_usd(usd)?;
    if usd > MAX_USD_PER_MTOK {
        return Err(PriceError::TooLarge {
            usd,
            max: MAX_USD_PER_MTOK,
        });
    }
    Ok(micro)
}

/// Converts a USD amount to µUSD, rounding to the nearest µUSD.
pub fn micro_usd_from_usd(usd: f64) -> Result<u64, PriceError> {
    if !usd.is_finite() {
        return Err(PriceError::NotFinite);
    }
    if usd < 0.0 {
        return Err(PriceError::Negative);
    }
    let micro = (usd * MICRO_USD_PER_USD as f64).round();
    if micro > MAX_MICRO_USD_FROM_F64 {
        return Err(PriceError::TooLarge {
            usd,
            max: MAX_MICRO_USD_FROM_F64 / MICRO_USD_PER_USD as f64,
        });
    }
    // In range and integral, so the cast is exact.
    Ok(micro as u64)
}

/// Formats µUSD as a decimal USD string with 6 fractional digits ("12.345678").
/// Integer arithmetic only, so large values print exactly.
pub fn usd_string(micro: u64) -> String {
    format!(
        "{}.{:06}",
        micro / MICRO_USD_PER_USD,
        micro % MICRO_USD_PER_USD
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes(input: u64, cached: u64, cache_write: u64, output: u64) -> TokenClasses {
        TokenClasses {
            input_tokens: input,
            cached_tokens: cached,
            cache_write_tokens: cache_write,
            output_tokens: output,
        }
    }

    #[test]
    fn converts_usd_rounding_to_nearest() {
        assert_eq!(micro_usd_from_usd(0.0), Ok(0));
        assert_eq!(micro_usd_from_usd(-0.0), Ok(0));
        assert_eq!(micro_usd_from_usd(0.15), Ok(150_000));
        // 12.345678 * 1e6 is 12345677.999999998 in f64.
        assert_eq!(micro_usd_from_usd(12.345678), Ok(12_345_678));
        assert_eq!(micro_usd_from_usd(0.000_000_4), Ok(0));
        assert_eq!(micro_usd_from_usd(0.000_000_6), Ok(1));
        assert_eq!(micro_usd_from_usd(1e9), Ok(1_000_000_000_000_000));
    }

    #[test]
    fn rejects_invalid_amounts() {
        assert_eq!(micro_usd_from_usd(f64::NAN), Err(PriceError::NotFinite));
        assert_eq!(
            micro_usd_from_usd(f64::INFINITY),
            Err(PriceError::NotFinite)
        );
        assert_eq!(micro_usd_from_usd(-0.01), Err(PriceError::Negative));
        assert!(matches!(
            micro_usd_from_usd(1e10),
            Err(PriceError::TooLarge { .. })
        ));
    }

    #[test]
    fn price_from_usd_per_mtok() {
        let p = Price::from_usd_per_mtok(0.15, 0.6).unwrap();
        assert_eq!(p.input_micro_usd_per_mtok, 150_000);
        assert_eq!(p.output_micro_usd_per_mtok, 600_000);
        assert!(Price::from_usd_per_mtok(100_000.0, 0.0).is_ok());
        assert!(matches!(
            Price::from_usd_per_mtok(0.1, 100_000.01),
            Err(PriceError::TooLarge { .. })
        ));
        assert_eq!(
            Price::from_usd_per_mtok(f64::NAN, 1.0),
            Err(PriceError::NotFinite)
        );
        assert_eq!(
            Price::from_usd_per_mtok(1.0, -1.0),
            Err(PriceError::Negative)
        );
    }

    #[test]
    fn cost_is_exact_and_rounds_up() {
        let p = Price::from_usd_per_mtok(0.15, 0.6).unwrap();
        // 1M in + 1M out = $0.75
        assert_eq!(p.cost_micro_usd(1_000_000, 1_000_000), 750_000);
        // 1000 * 0.15 + 500 * 0.6 = 150 + 300 µUSD exactly.
        assert_eq!(p.cost_micro_usd(1000, 500), 450);
        // 1 prompt token = 0.15 µUSD -> rounds up to 1.
        assert_eq!(p.cost_micro_usd(1, 0), 1);
        // 7 * 0.15 + 3 * 0.6 = 2.85 -> 3.
        assert_eq!(p.cost_micro_usd(7, 3), 3);
        assert_eq!(p.cost_micro_usd(0, 0), 0);
        assert_eq!(Price::default().cost_micro_usd(1_000, 1_000), 0);
    }

    #[test]
    fn cost_saturates_instead_of_overflowing() {
        let p = Price {
            input_micro_usd_per_mtok: u64::MAX,
            output_micro_usd_per_mtok: u64::MAX,
            cached_input_micro_usd_per_mtok: u64::MAX,
            cache_write_micro_usd_per_mtok: u64::MAX,
        };
        assert_eq!(p.cost_micro_usd(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(p.cost_micro_usd(u64::MAX, 0), u64::MAX);
        // Large but representable: 2^40 tokens at $1/Mtok.
        let one = Price::from_usd_per_mtok(1.0, 0.0).unwrap();
        assert_eq!(one.cost_micro_usd(1 << 40, 0), 1 << 40);
    }

    #[test]
    fn cached_classes_are_priced_apart_and_rounded_once() {
        // $3 in, $0.30 cache read, $3.75 cache write, $15 out (Anthropic-like).
        let p = Price::from_usd_per_mtok(3.0, 15.0)
            .unwrap()
            .with_cache_prices(Some(0.3), Some(3.75))
            .unwrap();
        // Anthropic: input 100 + cache_read 1000 + cache_creation 200, out 50.
        let t = classes(1300, 1000, 200, 50);
        // 100*3 + 1000*0.3 + 200*3.75 + 50*15 = 300+300+750+750 = 2100 µUSD.
        assert_eq!(p.cost_of(&t), 2100);
        // One rounding for the whole call: 1 token at each of 0.3 and 0.3.
        let t = classes(2, 2, 0, 0);
        assert_eq!(p.cost_of(&t), 1);
        // Defaults: cache prices equal the input price.
        let d = Price::from_usd_per_mtok(0.15, 0.6).unwrap();
        let t = classes(1000, 600, 0, 500);
        assert_eq!(d.cost_of(&t), d.cost_micro_usd(1000, 500));
        // Inconsistent reports (cached > input) never underflow.
        let t = classes(10, 50, 50, 0);
        assert_eq!(p.cost_of(&t), 3);
        // Estimates take the dearest input price.
        assert_eq!(p.cost_micro_usd(1000, 0), 3750);
    }

    #[test]
    fn formats_usd_strings() {
        assert_eq!(usd_string(0), "0.000000");
        assert_eq!(usd_string(1), "0.000001");
        assert_eq!(usd_string(12_345_678), "12.345678");
        assert_eq!(usd_string(1_000_000), "1.000000");
        assert_eq!(usd_string(u64::MAX), "18446744073709.551615");
    }
}
