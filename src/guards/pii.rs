//! PII detection for prompts: e-mail addresses, phone numbers, payment
//! card numbers (Luhn-checked), US SSNs and IBANs (mod-97-checked).
//! Checksums keep order numbers and timestamps from being flagged.

use regex::Regex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiiKind {
    Email,
    Phone,
    CreditCard,
    Ssn,
    Iban,
}

impl PiiKind {
    pub fn parse(name: &str) -> Option<PiiKind> {
        Some(match name {
            "email" => PiiKind::Email,
            "phone" => PiiKind::Phone,
            "credit_card" => PiiKind::CreditCard,
            "ssn" => PiiKind::Ssn,
            "iban" => PiiKind::Iban,
            _ => return None,
        })
    }

    fn placeholder(self) -> &'static str {
        match self {
            PiiKind::Email => "[REDACTED_EMAIL]",
            PiiKind::Phone => "[REDACTED_PHONE]",
            PiiKind::CreditCard => "[REDACTED_CREDIT_CARD]",
            PiiKind::Ssn => "[REDACTED_SSN]",
            PiiKind::Iban => "[REDACTED_IBAN]",
        }
    }

    fn pattern(self) -> &'static str {
        match self {
            PiiKind::Email => r"(?i)\b[a-z0-9._%+-]+@[a-z0-9.-]+\.[a-z]{2,}\b",
            // Cards before phones: both are digit runs, cards are checked.
            PiiKind::CreditCard => r"\b\d(?:[ -]?\d){12,18}\b",
            PiiKind::Ssn => r"\b(\d{3})-(\d{2})-(\d{4})\b",
            PiiKind::Iban => r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b",
            // International (+CC ...), (NNN) NNN-NNNN, or NNN-NNN-NNNN:
            // bare digit groups are too often order or ticket numbers.
            PiiKind::Phone => concat!(
                r"(?:\+\d{1,3}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){1,4}\d{2,4}\b)",
                r"|(?:\(\d{3}\) ?\d{3}[ .-]\d{4}\b)",
                r"|(?:\b\d{3}[.-]\d{3}[.-]\d{4}\b)"
            ),
        }
    }

    /// Checksum or range validation on a regex match.
    pub(crate) fn confirms(self, text: &str) -> bool {
        match self {
            PiiKind::CreditCard => luhn(text),
            PiiKind::Iban => iban_checksum(text),
            PiiKind::Ssn => ssn_plausible(text),
            PiiKind::Email | PiiKind::Phone => true,
        }
    }
}

fn digits(text: &str) -> Vec<u32> {
    text.chars().filter_map(|c| c.to_digit(10)).collect()
}

fn luhn(text: &str) -> bool {
    let d = digits(text);
    if !(13..=19).contains(&d.len()) {
        return false;
    }
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 1 {
                if x * 2 > 9 {
                    x * 2 - 9
                } else {
                    x * 2
                }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

fn iban_checksum(text: &str) -> bool {
    let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    if !(15..=34).contains(&compact.len()) {
        return false;
    }
    let (head, tail) = compact.split_at(4);
    let mut remainder: u64 = 0;
    for c in tail.chars().chain(head.chars()) {
        let value = match c.to_digit(36) {
            Some(v) => v as u64,
            None => return false,
        };
        let width = if value >= 10 { 100 } else { 10 };
        remainder = (remainder * width + value) % 97;
    }
    remainder == 1
}

fn ssn_plausible(text: &str) -> bool {
    let d = digits(text);
    let area = d[..3].iter().fold(0, |a, x| a * 10 + x);
    let group = d[3..5].iter().fold(0, |a, x| a * 10 + x);
    let serial = d[5..].iter().fold(0, |a, x| a * 10 + x);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

pub struct PiiDetector {
    detectors: Vec<(PiiKind, Regex)>,
}

impl PiiDetector {
    pub fn new(kinds: &[PiiKind]) -> Result<PiiDetector, regex::Error> {
        // Fixed order, so overlapping matches resolve the same way always.
        let order = [
            PiiKind::Email,
            PiiKind::Iban,
            PiiKind::CreditCard,
            PiiKind::Ssn,
            PiiKind::Phone,
        ];
        let detectors = order
            .into_iter()
            .filter(|k| kinds.contains(k))
            .map(|k| Ok((k, Regex::new(k.pattern())?)))
            .collect::<Result<_, regex::Error>>()?;
        Ok(PiiDetector { detectors })
    }

    /// The kinds of PII found in `text` (never the matched text itself).
    pub fn find(&self, text: &str) -> Vec<PiiKind> {
        self.scan(text).1
    }

    /// `text` with every confirmed match replaced by a placeholder, or
    /// `None` when nothing was found.
    pub fn redact(&self, text: &str) -> Option<String> {
        self.scan(text).0
    }

    /// Detectors run in order over the text as redacted so far, so a card
    /// number is not reported a second time as a phone number.
    fn scan(&self, text: &str) -> (Option<String>, Vec<PiiKind>) {
        let mut found = Vec::new();
        let mut current: Option<String> = None;
        for (kind, re) in &self.detectors {
            let source = current.as_deref().unwrap_or(text);
            let mut changed = false;
            let replaced = re.replace_all(source, |caps: &regex::Captures<'_>| {
                let m = caps.get(0).map_or("", |m| m.as_str());
                if kind.confirms(m) {
                    changed = true;
                    kind.placeholder().to_string()
                } else {
                    m.to_string()
                }
            });
            if changed {
                found.push(*kind);
                current = Some(replaced.into_owned());
            }
        }
        (current, found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> PiiDetector {
        PiiDetector::new(&[
            PiiKind::Email,
            PiiKind::Phone,
            PiiKind::CreditCard,
            PiiKind::Ssn,
            PiiKind::Iban,
        ])
        .unwrap()
    }

    #[test]
    fn finds_each_kind() {
        let d = all();
        assert_eq!(
            d.find("mail me at jane.doe@example.com"),
            vec![PiiKind::Email]
        );
        assert_eq!(
            d.find("card 4111 1111 1111 1111 please"),
            vec![PiiKind::CreditCard]
        );
        assert_eq!(d.find("ssn 123-45-6789"), vec![PiiKind::Ssn]);
        assert_eq!(
            d.find("IBAN DE89 3704 0044 0532 0130 00"),
            vec![PiiKind::Iban]
        );
        assert_eq!(d.find("call +1 415-555-2671"), vec![PiiKind::Phone]);
        assert_eq!(d.find("call (415) 555-2671"), vec![PiiKind::Phone]);
        assert_eq!(d.find("call 415.555.2671"), vec![PiiKind::Phone]);
    }

    #[test]
    fn checksums_avoid_false_positives() {
        let d = all();
        assert!(d.find("order 4111 1111 1111 1112").is_empty(), "bad Luhn");
        assert!(d.find("ref 000-12-3456").is_empty(), "invalid SSN area");
        assert!(d
            .find("DE00 3704 0044 0532 0130 00")
            .iter()
            .all(|k| *k != PiiKind::Iban));
        assert!(d.find("How do I reset my password?").is_empty());
        assert!(d.find("ticket 2024 1107 5512 was closed").is_empty());
    }

    #[test]
    fn redacts_in_place() {
        let d = all();
        let out = d
            .redact("I am jane@example.com, card 4111-1111-1111-1111.")
            .unwrap();
        assert_eq!(out, "I am [REDACTED_EMAIL], card [REDACTED_CREDIT_CARD].");
        assert_eq!(d.redact("nothing here"), None);
    }
}
