//! Builds the [`JwtVerifier`] from `auth.jwt`: the I/O half that `jwt.rs`
//! leaves out. Key files and secrets are read once, at load or reload;
//! every problem is reported with its field path.

use super::jwt::{self, JwtConfigError, JwtKeySpec, JwtSettings, JwtVerifier, KeyMaterial};
use crate::config::problems::Problems;
use crate::config::schema::{JwtConfig, JwtKeyConfig};

/// Where a key's material comes from, as (field name, bytes).
fn material(key: &JwtKeyConfig) -> Result<(&'static str, KeyMaterial), (&'static str, String)> {
    if let Some(file) = &key.public_key_file {
        return std::fs::read(file)
            .map(|pem| ("public_key_file", KeyMaterial::PublicPem(pem)))
            .map_err(|e| ("public_key_file", format!("cannot read '{file}': {e}")));
    }
    if let Some(var) = key.secret_env.as_ref().map(|v| v.expose()) {
        return match std::env::var_os(var) {
            Some(v) if !v.is_empty() => {
                Ok(("secret_env", KeyMaterial::Secret(v.into_encoded_bytes())))
            }
            _ => Err((
                "secret_env",
                format!("environment variable {var} is not set"),
            )),
        };
    }
    if let Some(file) = key.secret_file.as_ref().map(|f| f.expose()) {
        return std::fs::read(file)
            .map(|mut bytes| {
                // Secret files are usually written with a trailing newline
                // (`echo`, editors); it is never part of the secret.
                while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                    bytes.pop();
                }
                ("secret_file", KeyMaterial::Secret(bytes))
            })
            .map_err(|e| ("secret_file", format!("cannot read '{file}': {e}")));
    }
    Err((
        "",
        "exactly one of public_key_file, secret_env, secret_file is required".into(),
    ))
}

/// The verifier for `auth.jwt`, or `None` with the problems pushed.
pub fn build(config: &JwtConfig, problems: &mut Problems) -> Option<JwtVerifier> {
    let mut keys = Vec::with_capacity(config.keys.len());
    // kid → field path of its material, to place verifier errors.
    let mut fields = Vec::with_capacity(config.keys.len());
    let mut ok = true;
    for (i, key) in config.keys.iter().enumerate() {
        let path = format!("auth.jwt.keys[{i}]");
        let Some(alg) = jwt::parse_algorithm(&key.alg) else {
            problems.push(format!("{path}.alg"), "unsupported algorithm");
            ok = false;
            continue;
        };
        match material(key) {
            Ok((field, material)) => {
                fields.push((key.kid.clone(), format!("{path}.{field}")));
                keys.push(JwtKeySpec {
                    kid: key.kid.clone(),
                    alg,
                    material,
                });
            }
            Err((field, message)) => {
                let at = if field.is_empty() {
                    path
                } else {
                    format!("{path}.{field}")
                };
                problems.push(at, message);
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    let settings = JwtSettings {
        issuer: config.issuer.clone(),
        audience: config.audience.clone(),
        leeway_seconds: config.leeway_seconds.unwrap_or(jwt::DEFAULT_LEEWAY_SECONDS),
        max_lifetime_seconds: config.max_lifetime_seconds,
        keys,
        claims: jwt::ClaimNames {
            user: config.claims.user.clone(),
            tenant: config.claims.tenant.clone(),
            roles: config.claims.roles.clone(),
        },
    };
    match JwtVerifier::new(settings) {
        Ok(verifier) => Some(verifier),
        Err(e) => {
            let path = match &e {
                JwtConfigError::NoKeys => "auth.jwt.keys".to_owned(),
                JwtConfigError::Empty(field) => format!("auth.jwt.{field}"),
                JwtConfigError::DuplicateKid(_) => "auth.jwt.keys".to_owned(),
                JwtConfigError::Key { kid, .. } => fields
                    .iter()
                    .find(|(k, _)| k == kid)
                    .map(|(_, p)| p.clone())
                    .unwrap_or_else(|| "auth.jwt.keys".to_owned()),
            };
            problems.push(path, e.to_string());
            None
        }
    }
}
