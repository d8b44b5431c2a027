//! Configuration: the YAML schema (pure data), its validation, its
//! compilation into the immutable [`snapshot::Snapshot`] every request
//! reads, and reload. `schema`, `problems`, `secret`, `pg_url` and `env` are leaves
//! the lower layers may use; `snapshot`, `load` and `reload` sit above the
//! layers they compile.

pub mod api_keys;
pub mod env;
pub mod formats;
pub mod load;
pub mod locate;
pub mod pg_url;
pub mod problems;
#[cfg(test)]
mod redaction_tests;
pub mod reload;
pub mod schema;
pub mod secret;
pub mod snapshot;
pub mod validate;
