//! Reading a configuration file: parse (streaming), validate, compile into
//! a [`Snapshot`].

use super::api_keys;
use super::problems::{ConfigError, ConfigProblem, Problems};
use super::schema::Config;
use super::snapshot::Snapshot;
use super::validate;
use std::path::Path;

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

/// A snapshot of the smallest valid config (no routes): for contexts made
/// outside a running gateway (the bench-only bare hop, benches).
pub fn empty_snapshot() -> Result<Snapshot, ConfigError> {
    const EMPTY: &str = "server: { listen: [\"127.0.0.1:1\"], admin_listen: \"127.0.0.1:2\" }\nupstreams: {}\nroutes: []\n";
    load_snapshot_from_str(EMPTY, "empty.yaml", 0, None)
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
