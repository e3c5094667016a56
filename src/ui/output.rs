//! What the user sees, as values ([`Shown`]), and the bounded queue that
//! carries them to the thread that writes them.
//!
//! The chat never writes to stdout itself. A terminal slow to draw, or a
//! pipe that nobody reads (`chat --mode server --json | sleep 1e5`), would
//! otherwise stop the chat with it: no acknowledgement would leave, no
//! keep-alive, no handshake would finish, and Ctrl-C would wait behind the
//! blocked write. So the session hands [`Shown`] values to an [`Output`],
//! which passes them in batches to a writer thread that renders them through
//! a [`Sink`] (plain lines, JSON, the line editor). Rendering a large
//! message (escaping, base64) happens there too, off the chat's thread.
//!
//! The queue is bounded in events and in bytes of message bodies. When it is
//! full, per-message events are skipped, counted, and the count is shown
//! (`skipped`) as soon as there is room again; nothing is lost silently.
//! Events about the chat itself (listening, connected, disconnected) are
//! always queued, within a larger hard bound.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::protocol::{Body, MessageId};
use crate::session::Resumption;
use crate::transport::{Disconnect, TransportKind};
use crate::trust::identity::Fingerprint;

/// Events queued and not yet written beyond which per-message events are
/// skipped. A reader that keeps up never comes near it: it is 32 times the
/// session's bound on unconfirmed messages.
const MAX_QUEUED_EVENTS: usize = 32 * 1024;

/// Bytes of received messages queued and not yet written beyond which
/// messages are skipped (one message larger than this is still shown when
/// nothing else is queued).
const MAX_QUEUED_BYTES: usize = 64 << 20;

/// Events queued beyond which even the essential ones are skipped: only a
/// stdout that never moves, and a stream of clients, get here.
const HARD_MAX_QUEUED_EVENTS: usize = 2 * MAX_QUEUED_EVENTS;

/// How a list of transports is named: `quic`, `tcp`, or `quic, tcp`.
pub fn transports_text(transports: &[TransportKind]) -> String {
    transports
        .iter()
        .map(|t| t.name())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Something the user should see.
#[derive(Debug, Clone)]
pub enum Shown {
    /// The server listens.
    Listening {
        /// QUIC first.
        transports: Vec<TransportKind>,
        addr: SocketAddr,
        fingerprint: Fingerprint,
    },
    /// The client starts a connection attempt (it may race several).
    Connecting {
        transport: TransportKind,
        addr: SocketAddr,
    },
    /// A chat began. `label` is the allow list's name for the peer.
    Connected {
        transport: TransportKind,
        peer: SocketAddr,
        fingerprint: Option<Fingerprint>,
        label: Option<String>,
        /// Why this transport, when it is not the first choice (the
        /// client fell back to TCP).
        fallback: Option<String>,
    },
    /// The server turned a client away (BUSY, UNAUTHORIZED).
    Refused {
        transport: TransportKind,
        peer: SocketAddr,
        fingerprint: Option<Fingerprint>,
        code: u64,
    },
    /// We sent a message (the body, for a terminal's preview of it).
    Sent {
        id: MessageId,
        body: Bytes,
    },
    /// The peer acknowledged one of our messages.
    Ack {
        id: MessageId,
        rtt: Duration,
    },
    /// The peer refused one of our messages.
    Rejected {
        id: MessageId,
        code: u64,
        reason: String,
    },
    /// A message from the peer.
    Message {
        id: MessageId,
        body: Body,
    },
    /// The chat ended; `unacked` were never confirmed.
    Disconnected {
        why: Disconnect,
        unacked: Vec<MessageId>,
    },
    /// Server: the client's connection was lost and the chat is held for
    /// it for `window` (docs/protocol.md §12.4).
    Suspended {
        reason: String,
        window: Duration,
    },
    /// Client: the connection was lost; attempt `attempt` to resume starts.
    Reconnecting {
        attempt: u32,
        reason: String,
    },
    /// The chat went on over a new connection (docs/protocol.md §12.5).
    Resumed {
        transport: TransportKind,
        peer: SocketAddr,
        resumption: Resumption,
    },
    Error(String),
    /// A status line for people (JSON has no such event).
    Info(String),
    /// A status line only worth showing to a person at a terminal.
    Notice(String),
    /// Events that could not be shown because the output fell behind.
    Skipped {
        events: u64,
        messages: u64,
    },
}

impl Shown {
    /// Kept even when the queue is full (within its hard bound): without
    /// them, what is shown would not say which chat it belongs to.
    fn essential(&self) -> bool {
        matches!(
            self,
            Shown::Listening { .. }
                | Shown::Connected { .. }
                | Shown::Disconnected { .. }
                | Shown::Suspended { .. }
                | Shown::Reconnecting { .. }
                | Shown::Resumed { .. }
                | Shown::Skipped { .. }
        )
    }

    /// Bytes it holds that nothing else does.
    fn held_bytes(&self) -> usize {
        match self {
            Shown::Message { body, .. } => body.len(),
            _ => 0,
        }
    }
}

/// Renders what is shown: plain lines, JSON, the line editor.
pub trait Sink: Send + 'static {
    fn show(&mut self, shown: Shown);
    /// Writes out what `show` buffered. Called whenever the queue is empty,
    /// so a burst of events costs one write and a lone event is not held.
    fn flush(&mut self) {}
}

/// What the writer thread takes.
enum Item {
    Batch(Vec<Shown>),
    /// Show everything before this, flush, say so and stop.
    Close(SyncSender<()>),
}

/// Counts shared between the outputs and the writer thread.
#[derive(Default)]
struct Queued {
    events: AtomicUsize,
    bytes: AtomicUsize,
    /// Bytes the sink's writer has got rid of (see [`Progress`]).
    written: AtomicU64,
}

/// Lets a sink's writer say that it is moving, so that closing can tell a
/// slow stdout (wait for it) from one that takes nothing (give up).
#[derive(Clone)]
pub struct Progress(Arc<Queued>);

impl Progress {
    /// Wraps `w` so that every byte it takes is counted.
    pub fn writer<W: Write>(&self, w: W) -> Counted<W> {
        Counted {
            inner: w,
            progress: self.clone(),
        }
    }
}

/// A writer whose progress is counted (see [`Progress`]).
pub struct Counted<W> {
    inner: W,
    progress: Progress,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress
            .0
            .written
            .fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

enum Route {
    Thread {
        tx: Sender<Item>,
        queued: Arc<Queued>,
    },
    /// The sink is called at `flush`, on the caller's thread: for tests and
    /// benchmarks whose sink never blocks.
    Inline(Arc<Mutex<dyn Sink>>),
}

/// Where the chat puts what the user should see. Events wait in a batch
/// until [`flush`](Self::flush); clones share the queue (and each keeps
/// its own batch).
pub struct Output {
    route: Arc<Route>,
    batch: Vec<Shown>,
    skipped: Skipped,
    /// When the log last said the output fell behind: a stdout that keeps
    /// falling behind would otherwise log a line per wave of skips.
    warned: Option<Instant>,
}

/// How often, at most, the log says the output fell behind.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Events skipped and not yet reported.
#[derive(Default, Clone, Copy)]
struct Skipped {
    events: u64,
    messages: u64,
}

impl Skipped {
    fn count(&mut self, shown: &Shown) {
        self.events += 1;
        if matches!(shown, Shown::Message { .. }) {
            self.messages += 1;
        }
    }

    fn take(&mut self) -> Option<Shown> {
        let s = std::mem::take(self);
        (s.events > 0).then_some(Shown::Skipped {
            events: s.events,
            messages: s.messages,
        })
    }
}

impl Clone for Output {
    fn clone(&self) -> Self {
        Output {
            route: self.route.clone(),
            batch: Vec::new(),
            skipped: Skipped::default(),
            warned: None,
        }
    }
}

/// The thread that writes what the chat shows.
pub struct OutputThread {
    tx: Sender<Item>,
    queued: Arc<Queued>,
}

impl OutputThread {
    /// Waits for everything queued to be written, for as long as the
    /// output keeps moving. Returns false once it has taken nothing for
    /// `stall` (a stdout that nobody reads): the thread is left behind,
    /// blocked in its write, and the process may exit regardless.
    pub fn close(self, stall: Duration) -> bool {
        let (done_tx, done) = sync_channel(1);
        if self.tx.send(Item::Close(done_tx)).is_err() {
            return true;
        }
        let moved = || {
            (
                self.queued.events.load(Ordering::Acquire),
                self.queued.written.load(Ordering::Acquire),
            )
        };
        let (mut last, mut since) = (moved(), Instant::now());
        loop {
            match done.recv_timeout(Duration::from_millis(100)) {
                Ok(()) | Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return true,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    let now = moved();
                    if now != last {
                        (last, since) = (now, Instant::now());
                    } else if since.elapsed() >= stall {
                        return false;
                    }
                }
            }
        }
    }
}

impl Output {
    /// Starts a writer thread for the sink `make` returns; `make` gets a
    /// [`Progress`] to wrap the sink's writer in.
    pub fn spawn<S: Sink>(make: impl FnOnce(Progress) -> S) -> (Output, OutputThread) {
        let (tx, rx) = channel();
        let queued = Arc::new(Queued::default());
        let counts = queued.clone();
        let mut sink = make(Progress(queued.clone()));
        // A thread of its own, not a tokio task: a blocked write must not
        // hold up the runtime, and a thread stuck in one can be left behind
        // when the process exits.
        let spawned = std::thread::Builder::new()
            .name("output".into())
            .spawn(move || write(&rx, &mut sink, &counts));
        if let Err(e) = spawned {
            tracing::error!("cannot start the output thread: {e}");
        }
        let out = Output {
            route: Arc::new(Route::Thread {
                tx: tx.clone(),
                queued: queued.clone(),
            }),
            batch: Vec::new(),
            skipped: Skipped::default(),
            warned: None,
        };
        (out, OutputThread { tx, queued })
    }

    /// An output that calls `sink` on the flushing thread.
    pub fn inline(sink: impl Sink) -> Output {
        Output {
            route: Arc::new(Route::Inline(Arc::new(Mutex::new(sink)))),
            batch: Vec::new(),
            skipped: Skipped::default(),
            warned: None,
        }
    }

    /// Queues `shown` until the next [`flush`](Self::flush).
    pub fn show(&mut self, shown: Shown) {
        self.batch.push(shown);
    }

    /// Queues `shown` and flushes.
    pub fn show_now(&mut self, shown: Shown) {
        self.show(shown);
        self.flush();
    }

    pub fn error(&mut self, message: impl Into<String>) {
        self.show_now(Shown::Error(message.into()));
    }

    pub fn info(&mut self, message: impl Into<String>) {
        self.show_now(Shown::Info(message.into()));
    }

    pub fn notice(&mut self, message: impl Into<String>) {
        self.show_now(Shown::Notice(message.into()));
    }

    /// Hands the batch to the writer, skipping (and counting) what does not
    /// fit in the queue. Never waits.
    pub fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.batch);
        match &*self.route {
            Route::Inline(sink) => {
                let mut sink = match sink.lock() {
                    Ok(s) => s,
                    Err(poisoned) => poisoned.into_inner(),
                };
                for shown in batch {
                    sink.show(shown);
                }
                sink.flush();
            }
            Route::Thread { tx, queued } => {
                let mut events = queued.events.load(Ordering::Acquire);
                let mut bytes = queued.bytes.load(Ordering::Acquire);
                let (events_before, bytes_before) = (events, bytes);
                let mut admitted = Vec::with_capacity(batch.len() + 1);
                for shown in batch {
                    let size = shown.held_bytes();
                    let room = if shown.essential() {
                        events < HARD_MAX_QUEUED_EVENTS
                    } else {
                        events < MAX_QUEUED_EVENTS
                            && (bytes == 0 || bytes + size <= MAX_QUEUED_BYTES)
                    };
                    if !room {
                        if self.skipped.events == 0
                            && self.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY)
                        {
                            tracing::warn!(
                                "the output is not keeping up: events are skipped, counted, \
                                 and reported once it takes more (said at most every {} s)",
                                WARN_EVERY.as_secs()
                            );
                            self.warned = Some(Instant::now());
                        }
                        self.skipped.count(&shown);
                        continue;
                    }
                    if let Some(note) = self.skipped.take() {
                        admitted.push(note);
                        events += 1;
                    }
                    admitted.push(shown);
                    events += 1;
                    bytes += size;
                }
                if admitted.is_empty() {
                    return;
                }
                queued
                    .events
                    .fetch_add(events - events_before, Ordering::AcqRel);
                queued
                    .bytes
                    .fetch_add(bytes - bytes_before, Ordering::AcqRel);
                // The writer is gone only if its thread could not start:
                // nothing more can be shown then.
                let _ = tx.send(Item::Batch(admitted));
            }
        }
    }

    /// Flushes, with a last count of what was skipped, if anything was.
    pub fn finish(&mut self) {
        if let Some(note) = self.skipped.take() {
            self.batch.push(note);
        }
        self.flush();
    }
}

/// The writer thread: shows batches as they come, flushes the sink when
/// nothing more is waiting, stops at `Close`.
fn write(rx: &Receiver<Item>, sink: &mut impl Sink, queued: &Queued) {
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(item) = next {
            match item {
                Item::Batch(batch) => {
                    for shown in batch {
                        let size = shown.held_bytes();
                        sink.show(shown);
                        queued.events.fetch_sub(1, Ordering::AcqRel);
                        queued.bytes.fetch_sub(size, Ordering::AcqRel);
                    }
                }
                Item::Close(done) => {
                    sink.flush();
                    let _ = done.send(());
                    return;
                }
            }
            next = rx.try_recv().ok();
        }
        sink.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    /// A sink that blocks until told to go on, like a stdout nobody reads.
    struct Stuck {
        gate: mpsc::Receiver<()>,
        seen: Arc<Mutex<Vec<String>>>,
    }

    impl Sink for Stuck {
        fn show(&mut self, shown: Shown) {
            let _ = self.gate.recv();
            let line = match shown {
                Shown::Message { id, .. } => format!("message {id}"),
                Shown::Skipped { events, messages } => format!("skipped {events} {messages}"),
                Shown::Disconnected { .. } => "disconnected".into(),
                other => format!("{other:?}"),
            };
            self.seen.lock().unwrap().push(line);
        }
    }

    #[test]
    fn a_blocked_sink_never_blocks_the_chat_and_skips_are_counted() {
        let (go, gate) = mpsc::channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (mut out, thread) = Output::spawn(|_| Stuck {
            gate,
            seen: seen.clone(),
        });
        let started = std::time::Instant::now();
        let n = MAX_QUEUED_EVENTS as u64 + 100;
        for id in 0..n {
            out.show(Shown::Message {
                id,
                body: Body::from(&b"x"[..]),
            });
            out.flush();
        }
        out.show_now(Shown::Disconnected {
            why: Disconnect::Lost {
                reason: "gone".into(),
            },
            unacked: vec![],
        });
        // Never waited for the sink: all of it took far less than a second.
        assert!(started.elapsed() < Duration::from_secs(5));
        // Let it all through; what did not fit is counted, then shown.
        for _ in 0..(n + 10) {
            let _ = go.send(());
        }
        out.finish();
        assert!(thread.close(Duration::from_secs(10)));
        let seen = seen.lock().unwrap();
        let shown = seen.iter().filter(|l| l.starts_with("message")).count() as u64;
        assert!(
            seen.contains(&"disconnected".to_string()),
            "{:?}",
            &seen[seen.len() - 3..]
        );
        let skipped: u64 = seen
            .iter()
            .filter_map(|l| l.strip_prefix("skipped "))
            .map(|l| l.split(' ').next().unwrap().parse::<u64>().unwrap())
            .sum();
        assert!(skipped > 0);
        assert_eq!(shown + skipped, n, "every message shown or counted");
    }
}
