//! Maps a field path (`routes[2].upstream`) to its line and column in the
//! YAML source, so that semantic errors found after deserialisation can be
//! reported like parse errors: `FILE:LINE:COL: field.path: message`.
//!
//! serde_yaml keeps no spans once a value is deserialised, so we walk the
//! parser's marked events (yaml-rust2) once and record where every mapping
//! key and sequence item starts. Paths use serde_yaml's own notation.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

#[derive(Debug, Default)]
pub struct PositionIndex {
    positions: HashMap<String, (usize, usize)>,
}

impl PositionIndex {
    pub fn build(source: &str) -> Self {
        let mut builder = Builder::default();
        let mut parser = Parser::new_from_str(source);
        // A syntax error is reported by serde_yaml with its own location;
        // whatever was indexed before it is still useful.
        let _ = parser.load(&mut builder, false);
        Self {
            positions: builder.positions,
        }
    }

    /// Line and column (both 1-based) of `path`, or of its nearest indexed
    /// ancestor when the field itself is absent (e.g. a missing price).
    pub fn locate(&self, path: &str) -> (usize, usize) {
        let mut candidate = path;
        loop {
            if let Some(pos) = self.positions.get(candidate) {
                return *pos;
            }
            match parent_path(candidate) {
                Some(parent) => candidate = parent,
                None => return (1, 1),
            }
        }
    }
}

fn parent_path(path: &str) -> Option<&str> {
    let cut = path.rfind(['.', '['])?;
    Some(&path[..cut])
}

enum Frame {
    Map {
        path: String,
        pending_key: Option<String>,
        expecting_key: bool,
    },
    Seq {
        path: String,
        next_index: usize,
    },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, (usize, usize)>,
}

fn join_key(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl Builder {
    /// Path of the value that starts with the current event; records it.
    fn value_path(&mut self, mark: Marker) -> Option<String> {
        let position = (mark.line().max(1), mark.col() + 1);
        let path = match self.stack.last_mut()? {
            Frame::Map {
                path,
                pending_key,
                expecting_key,
            } => {
                *expecting_key = true;
                join_key(path, pending_key.take().as_deref().unwrap_or(""))
            }
            Frame::Seq { path, next_index } => {
                let p = format!("{path}[{next_index}]");
                *next_index += 1;
                self.positions.entry(p.clone()).or_insert(position);
                p
            }
        };
        Some(path)
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let position = (mark.line().max(1), mark.col() + 1);
        match event {
            Event::Scalar(text, ..) => {
                if let Some(Frame::Map {
                    path,
                    pending_key,
                    expecting_key,
                }) = self.stack.last_mut()
                {
                    if *expecting_key {
                        let key_path = join_key(path, &text);
                        self.positions.entry(key_path).or_insert(position);
                        *pending_key = Some(text);
                        *expecting_key = false;
                        return;
                    }
                }
                self.value_path(mark);
            }
            Event::Alias(_) => {
                self.value_path(mark);
            }
            Event::MappingStart(..) => {
                let path = self.value_path(mark).unwrap_or_default();
                self.stack.push(Frame::Map {
                    path,
                    pending_key: None,
                    expecting_key: true,
                });
            }
            Event::SequenceStart(..) => {
                let path = self.value_path(mark).unwrap_or_default();
                self.stack.push(Frame::Seq {
                    path,
                    next_index: 0,
                });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "server:\n  listen: [\"a\", \"b\"]\nroutes:\n  - name: x\n    upstream: nope\n  - name: y\n    methods:\n      - GET\n";

    #[test]
    fn locates_keys_and_items() {
        let idx = PositionIndex::build(SRC);
        assert_eq!(idx.locate("server"), (1, 1));
        assert_eq!(idx.locate("server.listen"), (2, 3));
        assert_eq!(idx.locate("routes[0].upstream"), (5, 5));
        assert_eq!(idx.locate("routes[1].name"), (6, 5));
        assert_eq!(idx.locate("routes[1].methods[0]"), (8, 9));
    }

    #[test]
    fn missing_field_falls_back_to_parent() {
        let idx = PositionIndex::build(SRC);
        assert_eq!(idx.locate("routes[1].price"), idx.locate("routes[1]"));
        assert_eq!(idx.locate("nothing.here"), (1, 1));
    }
}
