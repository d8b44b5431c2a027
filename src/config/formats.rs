//! Value formats shared by parsing and validation.

/// What `check` says of a field that is not a SHA-256 digest in hex.
pub const NOT_A_SHA256_HEX: &str = "must be 64 hexadecimal characters (a SHA-256 digest)";

/// RFC 3339 timestamp → unix seconds.
pub fn parse_rfc3339(value: &str) -> Option<i64> {
    time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:01:00Z"), Some(60));
        assert_eq!(parse_rfc3339("2027-06-30"), None);
    }
}
