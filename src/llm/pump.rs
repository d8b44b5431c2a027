//! Forwards an LLM answer's body from the upstream to the client, feeding
//! the usage parser as it passes and cutting off a stream that runs past its
//! output cap.
//!
//! What the upstream has already sent leaves in one client write: after each
//! read the pump takes whatever further reads complete without waiting, up
//! to [`COALESCE_LIMIT`], before it writes. An answer that arrives in two
//! socket reads (a 5.6 KiB stream behind a 4 KiB header read) then costs one
//! `sendto` and one wake-up of the client instead of two, as a bare Pingora
//! hop's buffering does; a stream whose events trickle in is forwarded
//! event by event exactly as before, since nothing here waits.

use super::api::{Dialect, LlmApi};
use super::output_guard::{SseGuard, SseVerdict};
use super::runaway;
use super::tokens;
use super::translate::StreamTranslator;
use super::usage::UsageParser;
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use pingora::protocols::http::client::HttpSession;
use pingora::proxy::Session;

/// Upper bound on the bytes gathered into one client write.
const COALESCE_LIMIT: usize = 64 * 1024;

/// How a stream is ended when it runs past its output cap.
pub struct CutOff {
    pub api: LlmApi,
    /// The upstream model name, for the closing event.
    pub model: String,
    /// The output cap sent upstream (0: none).
    pub cap: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PumpEnd {
    /// Both sides finished cleanly.
    Clean,
    /// The upstream ran past the output cap and was cut off; the client's
    /// stream was ended cleanly in its API's format.
    CutOff,
    /// An output guard blocked the answer; the client's stream was ended
    /// with the API's content-filter ending.
    Blocked,
    /// A side failed or went away.
    Failed,
}

/// The bytes of one client write: the first read as it came, later ones
/// appended (one copy, amortised growth: a flood of tiny reads stays linear).
struct Outgoing {
    first: Bytes,
    joined: Option<BytesMut>,
}

impl Outgoing {
    fn new(first: Bytes) -> Outgoing {
        Outgoing {
            first,
            joined: None,
        }
    }

    fn len(&self) -> usize {
        self.joined.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    fn push(&mut self, more: &[u8]) {
        let first = &self.first;
        self.joined
            .get_or_insert_with(|| {
                let mut joined = BytesMut::with_capacity(first.len() + more.len());
                joined.extend_from_slice(first);
                joined
            })
            .extend_from_slice(more);
    }

    fn into_bytes(self) -> Bytes {
        self.joined.map_or(self.first, BytesMut::freeze)
    }
}

/// What one step of the pump read from the upstream.
enum Read {
    Data(Bytes),
    End,
    Failed,
}

/// The upstream's body as the client's API: as it came, or through a
/// translator (which ends a failed stream with the client's error event).
pub struct Source<'a> {
    upstream: &'a mut HttpSession,
    translator: Option<&'a mut StreamTranslator>,
    /// An end that follows the translator's last events.
    pending: Option<Read>,
    /// The answer's start, read before it was chosen (fallback).
    primed: Option<Bytes>,
}

impl<'a> Source<'a> {
    /// `primed`: the answer's start, read before it was chosen.
    pub fn new(
        upstream: &'a mut HttpSession,
        translator: Option<&'a mut StreamTranslator>,
        primed: Bytes,
    ) -> Self {
        Source {
            upstream,
            translator,
            pending: None,
            primed: (!primed.is_empty()).then_some(primed),
        }
    }

    async fn read(&mut self) -> Read {
        if let Some(read) = self.pending.take() {
            return read;
        }
        if let Some(read) = self
            .primed
            .take()
            .and_then(|b| self.translate(Read::Data(b)))
        {
            return read;
        }
        loop {
            let read = classify(self.upstream.read_response_body().await);
            if let Some(read) = self.translate(read) {
                return read;
            }
        }
    }

    /// A read that completes without waiting, if any.
    fn read_now(&mut self) -> Option<Read> {
        if let Some(read) = self.pending.take() {
            return Some(read);
        }
        loop {
            let read = classify(self.upstream.read_response_body().now_or_never()?);
            if let Some(read) = self.translate(read) {
                return Some(read);
            }
        }
    }

    /// `None` when the read translated to nothing yet (a partial event).
    fn translate(&mut self, read: Read) -> Option<Read> {
        let Some(t) = self.translator.as_deref_mut() else {
            return Some(read);
        };
        let mut out = Vec::new();
        let end = match read {
            Read::Data(bytes) => {
                t.feed(&bytes, &mut out);
                None
            }
            Read::End => {
                t.finish(&mut out);
                Some(Read::End)
            }
            Read::Failed => {
                t.fail(&mut out);
                Some(Read::Failed)
            }
        };
        match (out.is_empty(), end) {
            (true, None) => None,
            (false, None) => Some(Read::Data(Bytes::from(out))),
            (true, Some(end)) => Some(end),
            (false, Some(end)) => {
                self.pending = Some(end);
                Some(Read::Data(Bytes::from(out)))
            }
        }
    }
}

/// Copies the body, counting usage, until it ends or runs away. With an
/// output guard, each read leaves as the guard rewrote it (whole events).
pub async fn pump(
    session: &mut Session,
    upstream: &mut Source<'_>,
    parser: &mut UsageParser,
    cut_off: &CutOff,
    mut guard: Option<&mut SseGuard>,
) -> PumpEnd {
    loop {
        let read = tokio::select! {
            read = upstream.read() => read,
            _ = crate::edge::client::gone(session, "response") => return PumpEnd::Failed,
        };
        let first = match read {
            Read::Data(bytes) => bytes,
            Read::End => return end(session, parser, guard, Outgoing::new(Bytes::new())).await,
            Read::Failed => return PumpEnd::Failed,
        };
        if let Some(counted) = ran_away(parser, cut_off, &first).await {
            return end_runaway(session, parser, cut_off, first, counted, guard).await;
        }
        let first = match filter(&mut guard, first) {
            Ok(bytes) => bytes,
            Err(before) => return end_blocked(session, parser, guard, before).await,
        };
        let mut out = Outgoing::new(first);
        while out.len() < COALESCE_LIMIT {
            // Polled once: `None` when nothing more has arrived. Dropping a
            // pending body read loses nothing: Pingora's body readers commit
            // their state before each await (pingora-core v1/body.rs), and
            // a socket read that is pending has consumed no bytes.
            let Some(read) = upstream.read_now() else {
                break;
            };
            match read {
                Read::Data(more) => {
                    if let Some(counted) = ran_away(parser, cut_off, &more).await {
                        if write(session, out.into_bytes(), false).await == PumpEnd::Failed {
                            return PumpEnd::Failed;
                        }
                        return end_runaway(session, parser, cut_off, more, counted, guard).await;
                    }
                    match filter(&mut guard, more) {
                        Ok(more) => out.push(&more),
                        Err(before) => {
                            out.push(&before);
                            return end_blocked(session, parser, guard, out.into_bytes()).await;
                        }
                    }
                }
                Read::End => return end(session, parser, guard, out).await,
                // What was read before the upstream failed still reaches
                // the client, as it would have without coalescing.
                Read::Failed => {
                    write(session, out.into_bytes(), false).await;
                    return PumpEnd::Failed;
                }
            }
        }
        if write(session, out.into_bytes(), false).await == PumpEnd::Failed {
            return PumpEnd::Failed;
        }
    }
}

/// A read as it leaves: as it came without a guard (no copy), else the
/// guard's rewrite; `Err` holds what leaves before a blocking match.
fn filter(guard: &mut Option<&mut SseGuard>, bytes: Bytes) -> Result<Bytes, Bytes> {
    let Some(g) = guard.as_deref_mut() else {
        return Ok(bytes);
    };
    let mut out = Vec::with_capacity(bytes.len() + 64);
    match g.feed(&bytes, &mut out) {
        SseVerdict::Continue => Ok(Bytes::from(out)),
        SseVerdict::Blocked => Err(Bytes::from(out)),
    }
}

/// The upstream ended: a guard releases what it still held.
async fn end(
    session: &mut Session,
    parser: &mut UsageParser,
    guard: Option<&mut SseGuard>,
    mut out: Outgoing,
) -> PumpEnd {
    if let Some(g) = guard {
        let mut rest = Vec::new();
        let verdict = g.finish(&mut rest);
        out.push(&rest);
        if verdict == SseVerdict::Blocked {
            return end_blocked(session, parser, Some(g), out.into_bytes()).await;
        }
    }
    write(session, out.into_bytes(), true).await
}

/// Ends a stream an output guard blocked: what was released before the
/// match, then the API's content-filter ending. The output generated so
/// far is billed (the parser saw every upstream byte).
async fn end_blocked(
    session: &mut Session,
    parser: &mut UsageParser,
    guard: Option<&mut SseGuard>,
    before: Bytes,
) -> PumpEnd {
    tokens::load_off_loop().await;
    let counted = parser.output_so_far();
    let tail = guard.map(|g| g.ending(counted)).unwrap_or_default();
    let written = async {
        if !before.is_empty() {
            session.write_response_body(Some(before), false).await?;
        }
        session
            .write_response_body(Some(Bytes::from(tail)), true)
            .await
    }
    .await;
    if written.is_err() {
        tracing::info!("client went away while its blocked stream was ended");
    }
    PumpEnd::Blocked
}

fn classify(read: pingora::Result<Option<Bytes>>) -> Read {
    match read {
        Ok(Some(bytes)) => Read::Data(bytes),
        Ok(None) => Read::End,
        Err(e) => {
            tracing::warn!("upstream failed mid-response: {e}");
            Read::Failed
        }
    }
}

/// Writes to the client: `Clean` once written (the end of the answer when
/// `end`), `Failed` when the client is gone.
async fn write(session: &mut Session, bytes: Bytes, end: bool) -> PumpEnd {
    match session.write_response_body(Some(bytes), end).await {
        Ok(()) => PumpEnd::Clean,
        Err(_) => PumpEnd::Failed,
    }
}

/// Feeds a read to the parser: `Some(counted)` when the stream has run past
/// its cap. The free bound first: the tokenizer runs only near the cap.
async fn ran_away(parser: &mut UsageParser, cut_off: &CutOff, bytes: &[u8]) -> Option<u64> {
    parser.feed(bytes);
    if !runaway::exceeds(cut_off.cap, parser.output_upper_bound()) {
        return None;
    }
    tokens::load_off_loop().await;
    let counted = parser.output_so_far();
    runaway::exceeds(cut_off.cap, counted).then_some(counted)
}

/// Forwards the whole events of the last read, then ends the client's
/// stream with the API's own "stopped at the cap" events.
async fn end_runaway(
    session: &mut Session,
    parser: &UsageParser,
    cut_off: &CutOff,
    bytes: Bytes,
    counted: u64,
    guard: Option<&mut SseGuard>,
) -> PumpEnd {
    tracing::warn!(
        model = %cut_off.model,
        cap = cut_off.cap,
        counted,
        "upstream stream ran past the output cap: cut off"
    );
    let mut whole = parser
        .last_event_end()
        .map_or_else(Bytes::new, |end| bytes.slice(..end));
    if let Some(g) = guard {
        // Guarded like any read; text still held back is dropped with
        // the rest of the runaway answer.
        let mut out = Vec::new();
        g.feed(&whole, &mut out);
        whole = Bytes::from(out);
    }
    let tail = Bytes::from(cut_off.api.cut_off_tail(&cut_off.model, counted));
    let written = async {
        if !whole.is_empty() {
            session.write_response_body(Some(whole), false).await?;
        }
        session.write_response_body(Some(tail), true).await
    }
    .await;
    if written.is_err() {
        tracing::info!("client went away while its runaway stream was ended");
    }
    PumpEnd::CutOff
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outgoing_passes_a_single_read_through_without_a_copy() {
        let first = Bytes::from_static(b"data: one\n\n");
        let out = Outgoing::new(first.clone());
        assert_eq!(out.len(), first.len());
        let bytes = out.into_bytes();
        assert_eq!(bytes.as_ptr(), first.as_ptr());
    }

    #[test]
    fn outgoing_joins_reads_in_order() {
        let mut out = Outgoing::new(Bytes::from_static(b"data: one\n\n"));
        out.push(b"data: two\n\n");
        out.push(b"data: [DONE]\n\n");
        assert_eq!(out.len(), 36);
        assert_eq!(
            &out.into_bytes()[..],
            b"data: one\n\ndata: two\n\ndata: [DONE]\n\n"
        );
    }
}
