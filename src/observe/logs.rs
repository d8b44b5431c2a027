//! Access and audit logs: one JSON object per line, written by a dedicated
//! thread so a slow disk or terminal never stalls a request. The queue is
//! bounded; when it is full, lines are dropped and counted rather than
//! letting memory grow under a flood.

use crate::config::schema::LogTarget;
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::{self, BufWriter, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;

const QUEUE: usize = 64 * 1024;
const BATCH_DELAY: std::time::Duration = std::time::Duration::from_millis(20);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Access,
    Audit,
}

pub struct LogSink {
    tx: SyncSender<(Stream, String)>,
    /// Set by SIGUSR1: the writer reopens its files before the next batch.
    reopen: Arc<AtomicBool>,
    dropped: AtomicU64,
    access_on: bool,
    audit_on: bool,
}

/// Where a log stream goes; files are reopened on SIGUSR1 (logrotate).
#[derive(Debug, Clone)]
enum Target {
    Stdout,
    Stderr,
    File(String),
}

impl Target {
    fn of(target: &LogTarget) -> Option<Target> {
        match target {
            LogTarget::Off => None,
            LogTarget::Stdout => Some(Target::Stdout),
            LogTarget::Stderr => Some(Target::Stderr),
            LogTarget::File(path) => Some(Target::File(path.clone())),
        }
    }

    fn open(&self) -> io::Result<BufWriter<Box<dyn Write + Send>>> {
        let out: Box<dyn Write + Send> = match self {
            Target::Stdout => Box::new(io::stdout()),
            Target::Stderr => Box::new(io::stderr()),
            Target::File(path) => {
                Box::new(OpenOptions::new().create(true).append(true).open(path)?)
            }
        };
        Ok(BufWriter::new(out))
    }
}

/// An open log stream and where it goes.
struct Output {
    target: Target,
    out: BufWriter<Box<dyn Write + Send>>,
}

impl Output {
    fn start(target: Option<Target>) -> io::Result<Option<Output>> {
        target
            .map(|target| {
                Ok(Output {
                    out: target.open()?,
                    target,
                })
            })
            .transpose()
    }

    /// After a rotation the old file was renamed: open the path anew. If
    /// that fails the old handle is kept, so no line is lost.
    fn reopen(&mut self) {
        let _ = self.out.flush();
        if matches!(self.target, Target::File(_)) {
            match self.target.open() {
                Ok(out) => self.out = out,
                Err(e) => tracing::error!("cannot reopen log file: {e}"),
            }
        }
    }
}

impl LogSink {
    pub fn start(access: &LogTarget, audit: &LogTarget) -> io::Result<LogSink> {
        let access_out = Output::start(Target::of(access))?;
        let audit_out = if audit == access {
            None
        } else {
            Output::start(Target::of(audit))?
        };
        let shared = audit == access;
        let (tx, rx) = sync_channel(QUEUE);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer_reopen = reopen.clone();
        std::thread::Builder::new()
            .name("tollgate-logs".into())
            .spawn(move || write_loop(rx, access_out, audit_out, shared, &writer_reopen))?;
        Ok(LogSink {
            tx,
            reopen,
            dropped: AtomicU64::new(0),
            access_on: *access != LogTarget::Off,
            audit_on: *audit != LogTarget::Off,
        })
    }

    /// Builds the line only when the access log is on: JSON rendering is
    /// a measurable share of a proxied request.
    pub fn access<L: Serialize>(&self, line: impl FnOnce() -> L) {
        if self.access_on {
            self.send(Stream::Access, &line());
        }
    }

    pub fn audit<L: Serialize>(&self, line: impl FnOnce() -> L) {
        if self.audit_on {
            self.send(Stream::Audit, &line());
        }
    }

    /// Reopens the log files before the next line (logrotate's
    /// `postrotate`): lines already written are in the renamed file, later
    /// ones in the new one.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// A line that cannot be rendered (no type logged here fails to) or
    /// queued is counted as dropped.
    fn send(&self, stream: Stream, line: &impl Serialize) {
        let sent = serde_json::to_string(line)
            .ok()
            .is_some_and(|text| self.tx.try_send((stream, text)).is_ok());
        if !sent {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn write_loop(
    rx: Receiver<(Stream, String)>,
    mut access: Option<Output>,
    mut audit: Option<Output>,
    shared: bool,
    reopen: &AtomicBool,
) {
    while let Ok(first) = rx.recv() {
        if reopen.swap(false, Ordering::AcqRel) {
            access
                .iter_mut()
                .chain(audit.iter_mut())
                .for_each(Output::reopen);
        }
        let mut next = Some(first);
        // Drain what is queued, then flush once: one syscall per burst.
        while let Some((stream, line)) = next {
            let out = match (stream, shared) {
                (Stream::Access, _) | (Stream::Audit, true) => access.as_mut(),
                (Stream::Audit, false) => audit.as_mut(),
            };
            if let Some(out) = out {
                let _ = out.out.write_all(line.as_bytes());
                let _ = out.out.write_all(b"\n");
            }
            next = rx.try_recv().ok();
        }
        for out in access.iter_mut().chain(audit.iter_mut()) {
            let _ = out.out.flush();
        }
        // Let lines accumulate: while this thread sleeps, senders enqueue
        // without waking it, so a busy gateway pays no context switch per
        // request. Lines reach the file within this delay.
        std::thread::sleep(BATCH_DELAY);
    }
}
