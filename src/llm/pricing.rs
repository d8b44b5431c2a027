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
}

impl Price {
    pub fn from_usd_per_mtok(input: f64, output: f64) -> Result<Price, PriceError> {
        Ok(Price {
            input_micro_usd_per_mtok: per_mtok(input)?,
            output_micro_usd_per_mtok: per_mtok(output)?,
        })
    }

    /// Rounds up so that any non-zero priced usage costs at least 1 µUSD:
    /// otherwise many small requests could be served for free.
    pub fn cost_micro_usd(&self, prompt_tokens: u64, completion_tokens: u64) -> u64 {
        let input = u128::from(prompt_tokens) * u128::from(self.input_micro_usd_per_mtok);
        let output = u128::from(completion_tokens) * u128::from(self.output_micro_usd_per_mtok);
        // Each product fits in u128 (< 2^128); only their sum can overflow.
        let total = input.saturating_add(output).div_ceil(TOKENS_PER_MTOK);
        u64::try_from(total).unwrap_or(u64::MAX)
    }
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
        let p = Price {
            input_micro_usd_per_mtok: 150_000,
            output_micro_usd_per_mtok: 600_000,
        };
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
        };
        assert_eq!(p.cost_micro_usd(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(p.cost_micro_usd(u64::MAX, 0), u64::MAX);
        // Large but representable: 2^40 tokens at $1/Mtok.
        let one = Price {
            input_micro_usd_per_mtok: 1_000_000,
            output_micro_usd_per_mtok: 0,
        };
        assert_eq!(one.cost_micro_usd(1 << 40, 0), 1 << 40);
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
