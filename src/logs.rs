//! Access and audit logs: one JSON object per line, written by a dedicated
//! thread so a slow disk or terminal never stalls a request. The queue is
//! bounded; when it is full, lines are dropped and counted rather than
//! letting memory grow under a flood.

use serde_json::Value;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};

const QUEUE: usize = 64 * 1024;
const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Access,
    Audit,
}

pub struct LogSink {
    tx: SyncSender<(Stream, String)>,
    dropped: AtomicU64,
    access_on: bool,
    audit_on: bool,
}

fn open_target(target: &str) -> io::Result<Option<Box<dyn Write + Send>>> {
    Ok(match target {
        "off" => None,
        "stdout" => Some(Box::new(io::stdout())),
        "stderr" => Some(Box::new(io::stderr())),
        path => Some(Box::new(
            OpenOptions::new().create(true).append(true).open(path)?,
        )),
    })
}

impl LogSink {
    /// `access` and `audit` are "stdout", "stderr", "off" or a file path.
    pub fn start(access: &str, audit: &str) -> io::Result<LogSink> {
        let access_out = open_target(access)?;
        let audit_out = if audit == access {
            None
        } else {
            open_target(audit)?
        };
        let shared = audit == access;
        let (tx, rx) = sync_channel(QUEUE);
        std::thread::Builder::new()
            .name("tollgate-logs".into())
            .spawn(move || write_loop(rx, access_out, audit_out, shared))?;
        Ok(LogSink {
            tx,
            dropped: AtomicU64::new(0),
            access_on: access != "off",
            audit_on: audit != "off",
        })
    }

    /// Builds the line only when the access log is on: JSON rendering is
    /// a measurable share of a proxied request.
    pub fn access(&self, line: impl FnOnce() -> Value) {
        if self.access_on {
            self.send(Stream::Access, &line());
        }
    }

    pub fn audit(&self, line: impl FnOnce() -> Value) {
        if self.audit_on {
            self.send(Stream::Audit, &line());
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, stream: Stream, line: &Value) {
        match self.tx.try_send((stream, line.to_string())) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

fn write_loop(
    rx: Receiver<(Stream, String)>,
    mut access: Option<Box<dyn Write + Send>>,
    mut audit: Option<Box<dyn Write + Send>>,
    shared: bool,
) {
    let mut access = access.take().map(BufWriter::new);
    let mut audit = audit.take().map(BufWriter::new);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        // Drain what is queued, then flush once: one syscall per burst.
        while let Some((stream, line)) = next {
            let out = match (stream, shared) {
                (Stream::Access, _) | (Stream::Audit, true) => access.as_mut(),
                (Stream::Audit, false) => audit.as_mut(),
            };
            if let Some(out) = out {
                let _ = out.write_all(line.as_bytes());
                let _ = out.write_all(b"\n");
            }
            next = rx.try_recv().ok();
        }
        if let Some(out) = access.as_mut() {
            let _ = out.flush();
        }
        if let Some(out) = audit.as_mut() {
            let _ = out.flush();
        }
        // Let lines accumulate: while this thread sleeps, senders enqueue
        // without waking it, so a busy gateway pays no context switch per
        // request. Lines reach the file within this delay.
        std::thread::sleep(BATCH_DELAY);
    }
}
