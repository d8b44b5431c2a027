//! `${env:NAME}` references in config values (upstream `set_headers`),
//! resolved when a pool is built.

/// Expands `${env:NAME}` references; a missing variable is an error.
pub fn expand_env(value: &str) -> Result<String, String> {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(start) = rest.find("${env:") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 6..];
        let end = after
            .find('}')
            .ok_or_else(|| "unterminated ${env:...} reference".to_string())?;
        let name = &after[..end];
        let resolved =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        out.push_str(&resolved);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_expansion() {
        std::env::set_var("TOLLGATE_TEST_EXPAND", "s3cr3t");
        assert_eq!(
            expand_env("Bearer ${env:TOLLGATE_TEST_EXPAND}!").unwrap(),
            "Bearer s3cr3t!"
        );
        assert_eq!(expand_env("plain").unwrap(), "plain");
        assert!(expand_env("${env:TOLLGATE_SURELY_MISSING_VAR}").is_err());
        assert!(expand_env("${env:UNTERMINATED").is_err());
    }
}
