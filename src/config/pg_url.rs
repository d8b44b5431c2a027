//! `ledger.postgres_url` as operators write it: libpq's URL with its
//! `sslmode`. tokio-postgres knows only `disable`, `prefer` and `require`,
//! so the mode is taken out here and the ledger applies it with rustls.

/// How the connection to PostgreSQL is protected (libpq's `sslmode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgSslMode {
    /// Plain TCP.
    Disable,
    /// TLS, certificate not verified (libpq's meaning of `require`).
    Require,
    /// TLS, certificate chain and host name verified.
    VerifyFull,
}

/// The URL without its `sslmode` parameter, and that mode. libpq's
/// default (`prefer`) is refused: a silent fall back to plain text is not
/// what an operator of a money ledger wants.
pub fn split_sslmode(url: &str) -> Result<(String, PgSslMode), String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut mode = None;
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => {
                mode = Some(match value {
                    "disable" => PgSslMode::Disable,
                    "require" => PgSslMode::Require,
                    "verify-full" => PgSslMode::VerifyFull,
                    other => {
                        return Err(format!(
                            "sslmode={other} not supported (disable, require, verify-full)"
                        ))
                    }
                })
            }
            _ => kept.push(pair),
        }
    }
    let mode = mode.ok_or("needs sslmode=disable, require or verify-full")?;
    let url = match kept.is_empty() {
        true => base.to_string(),
        false => format!("{base}?{}", kept.join("&")),
    };
    Ok((url, mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_out_of_the_url() {
        assert_eq!(
            split_sslmode("postgres://u@h:5/db?sslmode=verify-full&connect_timeout=2"),
            Ok((
                "postgres://u@h:5/db?connect_timeout=2".to_string(),
                PgSslMode::VerifyFull
            ))
        );
        assert_eq!(
            split_sslmode("postgres://u@h/db?sslmode=disable"),
            Ok(("postgres://u@h/db".to_string(), PgSslMode::Disable))
        );
        assert!(split_sslmode("postgres://u@h/db").is_err());
        assert!(split_sslmode("postgres://u@h/db?sslmode=prefer").is_err());
    }
}
