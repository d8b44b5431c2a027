//! Configuration: the YAML schema, its validation, and its compilation into
//! the immutable [`Snapshot`] every request reads.

pub mod api_keys;
pub mod locate;
pub mod schema;
pub mod snapshot;
pub mod validate;

pub use schema::Config;
pub use snapshot::Snapshot;

use locate::PositionIndex;
use std::fmt;
use std::path::Path;

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
    fn single(file: &str, path: &str, message: String) -> Self {
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
    fn into_error(self, file: &str, source: &str) -> ConfigError {
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

/// Reads, parses, validates and compiles a configuration file.
/// `generation` is stamped on the resulting snapshot.
pub fn load_snapshot(path: &Path, generation: u64) -> Result<Snapshot, ConfigError> {
    load_snapshot_with_previous(path, generation, None)
}

/// As [`load_snapshot`], reusing unchanged pools and API-key identities of
/// `previous` (reload).
///
/// The file is parsed as it is read (never held whole: 20 MiB for 100,000
/// keys); it is read again only to position the problems of a bad file.
pub fn load_snapshot_with_previous(
    path: &Path,
    generation: u64,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, ConfigError> {
    let file = path.display().to_string();
    let cannot_read =
        |e: std::io::Error| ConfigError::single(&file, "", format!("cannot read file: {e}"));
    let reader = std::io::BufReader::new(std::fs::File::open(path).map_err(cannot_read)?);
    let previous_keys = previous.map(|p| p.auth.shared_keys());
    let parsed = api_keys::with_previous_keys(previous_keys.clone(), || {
        serde_saphyr::from_reader_with_options::<_, Config>(reader, saphyr_options()).ok()
    });
    let config = match parsed {
        Some(config) => config,
        None => {
            let source = std::fs::read_to_string(path).map_err(cannot_read)?;
            api_keys::with_previous_keys(previous_keys, || parse_with_serde_yaml(&source, &file))?
        }
    };
    let source_again = || std::fs::read_to_string(path).unwrap_or_default();
    compile(config, &file, generation, previous, source_again)
}

pub fn load_snapshot_from_str(
    source: &str,
    file: &str,
    generation: u64,
    previous: Option<&Snapshot>,
) -> Result<Snapshot, ConfigError> {
    let previous_keys = previous.map(|p| p.auth.shared_keys());
    let config = api_keys::with_previous_keys(previous_keys, || parse(source, file))?;
    compile(config, file, generation, previous, || source.to_string())
}

/// Validates and compiles a parsed file; `source` gives its text back to
/// position the problems if there are any.
fn compile(
    config: Config,
    file: &str,
    generation: u64,
    previous: Option<&Snapshot>,
    source: impl Fn() -> String,
) -> Result<Snapshot, ConfigError> {
    let mut problems = Problems::default();
    validate::validate(&config, &mut problems);
    if !problems.is_empty() {
        return Err(problems.into_error(file, &source()));
    }
    Snapshot::compile_with(config, generation, previous, &mut problems)
        .ok_or_else(|| problems.into_error(file, &source()))
}

fn saphyr_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        // YAML 1.2 booleans only, like serde_yaml (`on`/`yes` stay strings).
        strict_booleans: true,
        // The file is the operator's: size is bounded by what they write,
        // alias expansion stays bounded by the default alias limits.
        budget: serde_saphyr::budget! {
            max_nodes: usize::MAX,
            max_events: usize::MAX,
            max_reader_input_bytes: None,
        },
    }
}

/// Parses with serde-saphyr, which streams: serde_yaml 0.9 buffers every
/// parser event of the document before deserialising (about 2.5 KiB per API
/// key entry: 250 MB for a 100,000-key file, at every reload). serde_yaml
/// stays the reference: when serde-saphyr refuses a file, serde_yaml parses
/// it again and its answer counts (its error names the field path we
/// report), so a file the gateway accepted before is still accepted and
/// error messages are unchanged.
fn parse(source: &str, file: &str) -> Result<Config, ConfigError> {
    match serde_saphyr::from_str_with_options::<Config>(source, saphyr_options()) {
        Ok(config) => Ok(config),
        Err(_) => parse_with_serde_yaml(source, file),
    }
}

fn parse_with_serde_yaml(source: &str, file: &str) -> Result<Config, ConfigError> {
    serde_yaml::from_str::<Config>(source).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        // serde_yaml renders "path: message at line L column C"; we print the
        // position ourselves, in front, so strip its suffix.
        let text = e.to_string();
        let text = match text.rfind(" at line ") {
            Some(cut) => text[..cut].to_string(),
            None => text,
        };
        let (mut path, message) = match text.split_once(": ") {
            Some((p, m)) if !p.contains(' ') => (p.to_string(), m.to_string()),
            _ => (String::new(), text),
        };
        // Name the misspelled field itself, not only its parent.
        if let Some(field) = message
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split('`').next())
        {
            path = if path.is_empty() {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
        }
        ConfigError {
            file: file.to_string(),
            problems: vec![ConfigProblem {
                line,
                column,
                path,
                message,
            }],
        }
    })
}
