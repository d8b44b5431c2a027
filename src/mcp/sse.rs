//! Server-sent events of an MCP stream, split into whole events with
//! bounded memory: the gateway reads each JSON-RPC message a server
//! streams (to filter `tools/list`, guard results, close answered calls),
//! so an event is held until its blank line, and never above a limit.
//!
//! Hand-written rather than a crate's: the SSE crates parse into owned
//! events for a client; a relay needs the raw bytes of events it does not
//! change, and a hard bound on an event that never ends.

use bytes::{Buf, Bytes, BytesMut};

/// One whole event: its raw bytes (blank line included) and the joined
/// `data:` lines (`None` without any).
#[derive(Debug, PartialEq, Eq)]
pub struct Event {
    pub raw: Bytes,
    pub data: Option<String>,
    /// The `id:` field, kept when the event is rewritten (resumption).
    pub id: Option<String>,
}

/// An event grew past the limit before its end.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

pub struct Splitter {
    buf: BytesMut,
    limit: usize,
}

impl Splitter {
    pub fn new(limit: usize) -> Splitter {
        Splitter {
            buf: BytesMut::new(),
            limit,
        }
    }

    /// Appends `chunk`; returns the events it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Event>, TooLarge> {
        let searched_from = self.buf.len().saturating_sub(3);
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        let mut from = searched_from;
        while let Some(end) = event_end(&self.buf, from) {
            let raw = self.buf.split_to(end).freeze();
            events.push(parse(raw));
            from = 0;
        }
        if self.buf.len() > self.limit {
            self.buf.clear();
            return Err(TooLarge);
        }
        Ok(events)
    }

    /// Bytes of an event still incomplete.
    pub fn pending(&self) -> usize {
        self.buf.remaining()
    }
}

/// The end (exclusive) of the first event: after a blank line in any of
/// SSE's line endings (`\n\n`, `\r\n\r\n`, `\r\r`).
fn event_end(buf: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while i < buf.len() {
        let rest = &buf[i..];
        if rest.starts_with(b"\r\n\r\n") {
            return Some(i + 4);
        }
        if rest.starts_with(b"\n\n") || rest.starts_with(b"\r\r") {
            return Some(i + 2);
        }
        // `\r\n` followed by `\n` (mixed endings) also ends an event.
        if rest.starts_with(b"\r\n\n") {
            return Some(i + 3);
        }
        i += 1;
    }
    None
}

fn parse(raw: Bytes) -> Event {
    let text = String::from_utf8_lossy(&raw);
    let mut data: Option<String> = None;
    let mut id = None;
    for line in text.split(['\n', '\r']) {
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => data = Some(value.to_string()),
            },
            "id" => id = Some(value.to_string()),
            _ => {}
        }
    }
    Event { raw, data, id }
}

/// One `message` event carrying `json` (and the original `id:`).
pub fn message_event(json: &str, id: Option<&str>) -> Bytes {
    let mut out = String::with_capacity(json.len() + 32);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: message\n");
    // A JSON text serialised by serde_json holds no raw newline.
    out.push_str("data: ");
    out.push_str(json);
    out.push_str("\n\n");
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const STREAM: &[u8] =
        b"event: message\nid: 1\ndata: {\"a\":1}\n\n: ping\r\n\r\ndata: x\ndata: y\n\n";

    #[test]
    fn splits_whole_events_with_their_data() {
        let mut s = Splitter::new(1024);
        let events = s.push(STREAM).unwrap();
        assert_eq!(events.len(), 3);
        assert_eq!(events[0].data.as_deref(), Some("{\"a\":1}"));
        assert_eq!(events[0].id.as_deref(), Some("1"));
        assert_eq!(events[1].data, None);
        assert_eq!(events[2].data.as_deref(), Some("x\ny"));
        let joined: Vec<u8> = events.iter().flat_map(|e| e.raw.to_vec()).collect();
        assert_eq!(joined, STREAM);
        assert_eq!(s.pending(), 0);
    }

    #[test]
    fn an_endless_event_is_refused_at_the_limit() {
        let mut s = Splitter::new(64);
        assert_eq!(s.push(b"data: ").map(|e| e.len()), Ok(0));
        assert_eq!(s.push(&[b'a'; 100]), Err(TooLarge));
        assert_eq!(s.pending(), 0, "memory released");
    }

    proptest! {
        /// Any split of a stream yields the same events as the whole.
        #[test]
        fn any_split_equals_the_whole(cuts in proptest::collection::vec(0..STREAM.len(), 0..6)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut s = Splitter::new(1024);
            let mut events = Vec::new();
            let mut at = 0;
            for cut in cuts.into_iter().chain([STREAM.len()]) {
                events.extend(s.push(&STREAM[at..cut]).unwrap());
                at = cut;
            }
            let whole = Splitter::new(1024).push(STREAM).unwrap();
            prop_assert_eq!(events, whole);
        }
    }
}
