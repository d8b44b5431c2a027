//! A config value that must never be shown: its `Debug` and `Serialize`
//! print `"<redacted>"`, so `/admin/config`, logs and error messages cannot
//! leak it — including a secret field added later, as long as it is typed
//! `Secret`. Only [`Secret::expose`] reads the value.

use serde::{Deserialize, Serialize, Serializer};
use std::fmt;

pub const REDACTED: &str = "<redacted>";

#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret<T>(T);

impl<T> Secret<T> {
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The value itself, for the code that uses it (never for display).
    pub fn expose(&self) -> &T {
        &self.0
    }

    pub fn expose_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

impl<T> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl<T> Serialize for Secret<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}

impl From<String> for Secret<String> {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_shown() {
        let s = Secret::new("hunter2".to_string());
        assert_eq!(format!("{s:?}"), "\"<redacted>\"".trim_matches('"'));
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        assert_eq!(s.expose(), "hunter2");
        let parsed: Secret<String> = serde_json::from_str("\"x\"").unwrap();
        assert_eq!(parsed.expose(), "x");
    }
}
