//! The sending half of a TCP connection: control frames ahead of message
//! data, messages cut into chunks and interleaved round-robin, writes
//! gathered into batches, and the keep-alive PING (docs/protocol.md §7).

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncWrite;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::{MAX_IN_PROGRESS, Stream};
use crate::protocol::MessageId;
use crate::protocol::codec::{Frame, MAX_CHUNK, encode_chunk_header, frame_type};
use crate::transport::receive_budget;
use crate::ui::render::sanitize_line;

/// Bytes of frames gathered into one write when many small messages wait.
const WRITE_BATCH: usize = 64 * 1024;

pub(super) struct Writer {
    /// ACK, REJECT, PING and CLOSE frames: written ahead of message data.
    control: BytesMut,
    /// Bytes being written (control frames, then message chunks).
    out: BytesMut,
    /// Started, unfinished messages, served round-robin.
    active: VecDeque<Outgoing>,
    /// Messages not started yet because `active` is full.
    waiting: VecDeque<(MessageId, Bytes)>,
    /// The socket took less than we had: go on when it is writable again.
    blocked: bool,
    /// After what is queued: close_notify and FIN (the peer sent CLOSE, or
    /// we owe one for a protocol error).
    shutdown_due: bool,
    /// Why writing failed, if it did (see `failed`).
    error: Option<String>,
    last_write: Instant,
    ping: Pin<Box<Sleep>>,
    ping_every: Duration,
}

/// A message being sent.
struct Outgoing {
    id: MessageId,
    /// Its whole size: what the receiver may come to hold of it.
    size: u64,
    body: Bytes,
    /// The peer rejected it: what is left is replaced by an empty END.
    aborted: bool,
}

impl Writer {
    pub(super) fn new(ping_every: Duration) -> Self {
        Writer {
            control: BytesMut::new(),
            out: BytesMut::with_capacity(WRITE_BATCH + 1024),
            active: VecDeque::new(),
            waiting: VecDeque::new(),
            blocked: false,
            shutdown_due: false,
            error: None,
            last_write: Instant::now(),
            ping: Box::pin(tokio::time::sleep(ping_every)),
            ping_every,
        }
    }

    /// Keep-alives after `every` without writing, from now on.
    pub(super) fn set_ping_every(&mut self, every: Duration) {
        self.ping_every = every;
        self.ping.as_mut().reset(self.last_write + every);
    }

    pub(super) fn send(&mut self, id: MessageId, body: Bytes) {
        self.waiting.push_back((id, body));
    }

    /// Queues a control frame ahead of any message data not yet written.
    pub(super) fn control(&mut self, frame: &Frame) {
        frame.encode(&mut self.control);
    }

    /// Control frames queued and not yet handed to the socket.
    pub(super) fn control_backlog(&self) -> usize {
        self.control.len()
    }

    /// The peer rejected message `id`: stop sending its data.
    pub(super) fn abort(&mut self, id: MessageId) {
        if let Some(m) = self.active.iter_mut().find(|m| m.id == id) {
            m.aborted = true;
        }
    }

    /// The chat is over: message data not yet written is dropped (it is
    /// unconfirmed, and reported so); what is queued, then close_notify and
    /// FIN, are still owed.
    pub(super) fn end(&mut self) {
        self.active.clear();
        self.waiting.clear();
        self.shutdown_due = true;
    }

    pub(super) fn is_blocked(&self) -> bool {
        self.blocked
    }

    pub(super) fn shutdown_due(&self) -> bool {
        self.shutdown_due
    }

    /// We close the chat ourselves (`close` writes and shuts down at once).
    pub(super) fn shutdown_done(&mut self) {
        self.shutdown_due = false;
    }

    /// Why writing failed, if it did.
    pub(super) fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Writes as much as the socket takes now. `Ready` once everything is
    /// written (or the connection failed), `Pending` if the socket is full.
    pub(super) fn poll_write(&mut self, io: &mut Stream, cx: &mut Context<'_>) -> Poll<()> {
        if self.error.is_some() {
            self.control.clear();
            return Poll::Ready(());
        }
        loop {
            if self.out.is_empty() {
                // Copied rather than swapped in, so that both buffers keep
                // the room they grew to instead of growing again each batch.
                self.out.clear();
                self.out.extend_from_slice(&self.control);
                self.control.clear();
                self.fill_with_data();
            }
            if self.out.is_empty() {
                break;
            }
            match Pin::new(&mut *io).poll_write(cx, &self.out) {
                Poll::Ready(Ok(0)) => {
                    self.failed("connection lost (write returned 0)".into());
                    return Poll::Ready(());
                }
                Poll::Ready(Ok(n)) => {
                    self.out.advance(n);
                    self.last_write = Instant::now();
                }
                Poll::Ready(Err(e)) => {
                    self.failed(format!("connection lost ({e})"));
                    return Poll::Ready(());
                }
                Poll::Pending => {
                    self.blocked = true;
                    return Poll::Pending;
                }
            }
        }
        // TLS records the socket did not take yet.
        match Pin::new(&mut *io).poll_flush(cx) {
            Poll::Ready(Ok(())) => {
                self.blocked = false;
                Poll::Ready(())
            }
            Poll::Ready(Err(e)) => {
                self.failed(format!("connection lost ({e})"));
                Poll::Ready(())
            }
            Poll::Pending => {
                self.blocked = true;
                Poll::Pending
            }
        }
    }

    /// Writing is over. The connection is not declared lost yet: the peer
    /// may have closed it properly, and its CLOSE may be waiting unread
    /// (say, while the user was asked whether to trust it). The reading
    /// side decides, once it has read what there is.
    fn failed(&mut self, reason: String) {
        debug!("write failed: {}", sanitize_line(&reason));
        self.out.clear();
        self.control.clear();
        self.active.clear();
        self.waiting.clear();
        self.blocked = false;
        self.shutdown_due = false;
        self.error.get_or_insert(reason);
    }

    /// Appends message chunks, round-robin, until a batch is full.
    fn fill_with_data(&mut self) {
        while self.out.len() < WRITE_BATCH {
            while self.active.len() < MAX_IN_PROGRESS {
                // A message starts only if the receiver, holding it next to
                // those in progress, stays within its receive budget: it
                // would stop reading otherwise, and a TCP receiver cannot
                // read on one message and leave another. One that does not
                // fit yet lets the next that does (a short one always
                // does) go ahead of it.
                let active = receive_budget::InProgress::of(self.active.iter().map(|m| m.size));
                let next = self
                    .waiting
                    .iter()
                    .position(|(_, body)| active.fits(body.len() as u64));
                let Some((id, body)) = next.and_then(|at| self.waiting.remove(at)) else {
                    break;
                };
                self.active.push_back(Outgoing {
                    id,
                    size: body.len() as u64,
                    body,
                    aborted: false,
                });
            }
            let Some(mut m) = self.active.pop_front() else {
                return;
            };
            if m.aborted {
                encode_chunk_header(&mut self.out, frame_type::END, m.id, 0);
                continue;
            }
            let n = m.body.len().min(MAX_CHUNK);
            let chunk = m.body.split_to(n);
            let last = m.body.is_empty();
            let ty = if last {
                frame_type::END
            } else {
                frame_type::DATA
            };
            encode_chunk_header(&mut self.out, ty, m.id, n);
            self.out.extend_from_slice(&chunk);
            if !last {
                self.active.push_back(m);
            }
        }
    }

    /// Sends a PING when nothing has been written for a third of the idle
    /// timeout. One timer for the whole connection, moved only when it
    /// fires: a timer set per write would cost the runtime a wake-up per
    /// round trip.
    pub(super) fn poll_ping(&mut self, io: &mut Stream, cx: &mut Context<'_>) {
        while self.ping.as_mut().poll(cx).is_ready() {
            let due = self.last_write + self.ping_every;
            let now = Instant::now();
            if now >= due {
                Frame::Ping.encode(&mut self.control);
                self.ping.as_mut().reset(now + self.ping_every);
                let _ = self.poll_write(io, cx);
            } else {
                self.ping.as_mut().reset(due);
            }
        }
    }
}
