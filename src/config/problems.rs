//! Problems found in a configuration file, collected by field path and
//! positioned like compiler errors (`tollgate check`). A leaf: every layer
//! that validates a part of the config reports through it.

use super::locate::PositionIndex;
use std::fmt;

/// One problem in a configuration file, positioned like a compiler error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub line: usize,
    pub column: usize,
    pub path: String,
    pub message: String,
}

/// Every problem found in one file (`tollgate check` prints them all).
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub problems: Vec<ConfigProblem>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}:{}:{}: ", self.file, p.line, p.column)?;
            if !p.path.is_empty() {
                write!(f, "{}: ", p.path)?;
            }
            write!(f, "{}", p.message)?;
        }
        Ok(())
    }
}

impl ConfigError {
    pub(super) fn single(file: &str, path: &str, message: String) -> Self {
        Self {
            file: file.to_string(),
            problems: vec![ConfigProblem {
                line: 1,
                column: 1,
                path: path.to_string(),
                message,
            }],
        }
    }

    /// The problems as plain strings, for the admin API's JSON answer.
    pub fn lines(&self) -> Vec<String> {
        self.to_string().lines().map(str::to_string).collect()
    }
}

/// Collects problems by field path; positions are resolved at the end.
#[derive(Debug, Default)]
pub struct Problems {
    items: Vec<(String, String)>,
}

impl Problems {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.items.push((path.into(), message.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Positions are looked up only here, on failure: indexing every field
    /// of a large file (100,000 API keys) costs more memory than the
    /// compiled config itself, so a valid file is never indexed.
    pub(super) fn into_error(self, file: &str, source: &str) -> ConfigError {
        let index = PositionIndex::build(source);
        let problems = self
            .items
            .into_iter()
            .map(|(path, message)| {
                let (line, column) = index.locate(&path);
                ConfigProblem {
                    line,
                    column,
                    path,
                    message,
                }
            })
            .collect();
        ConfigError {
            file: file.to_string(),
            problems,
        }
    }
}
