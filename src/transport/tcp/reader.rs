//! The receiving half of a TCP connection: bytes in, frames out, message
//! chunks put back together (docs/protocol.md §7), and the idle timer that
//! notices a silent peer.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use super::{MAX_IN_PROGRESS, Stream};
use crate::protocol::codec::{CodecError, Frame, FrameDecoder, Version};
use crate::protocol::received::ReceivedIds;
use crate::protocol::{Body, MessageId};
use crate::transport::receive_budget::Held;

/// Bytes the reader takes in before it lets the other tasks run. The whole
/// process is one thread; left to tokio's budget alone, a reader fed a large
/// message decrypts megabytes per turn while the session waits to ack the
/// small messages that came with it.
const READ_TURN: usize = 64 * 1024;

/// Room the read buffer grows by. Each chunk of a message keeps the block it
/// was read into until the message is handed on, so a block holds many
/// chunks: with 64 KiB blocks each held about one 64 KiB chunk and the start
/// of the next (copied on), and a large message cost 1.4× its size.
const READ_BLOCK: usize = 1 << 20;

pub(super) struct Reader {
    buf: BytesMut,
    /// Bytes read since the session last had a turn (see [`READ_TURN`]).
    this_turn: usize,
    last_frame: Instant,
    idle: Pin<Box<Sleep>>,
    idle_timeout: Duration,
    version: Version,
}

/// What one read from the socket gave.
pub(super) enum Fill {
    /// More bytes are buffered.
    Bytes,
    /// The peer closed its side.
    Eof,
    Failed(std::io::Error),
    /// This turn's share is used up: the task is woken to read on later.
    TurnUsed,
}

impl Reader {
    pub(super) fn new(idle_timeout: Duration, version: Version) -> Self {
        Reader {
            buf: BytesMut::with_capacity(64 * 1024),
            this_turn: 0,
            last_frame: Instant::now(),
            idle: Box::pin(tokio::time::sleep(idle_timeout)),
            idle_timeout,
            version,
        }
    }

    /// The next whole frame already read, if any.
    pub(super) fn next_frame(&mut self) -> Result<Option<Frame>, CodecError> {
        FrameDecoder.decode_as(self.version, &mut self.buf)
    }

    /// A new idle timeout, agreed with the peer; it counts from the last
    /// frame heard, as before.
    pub(super) fn set_idle_timeout(&mut self, idle: Duration) {
        self.idle_timeout = idle;
        self.idle.as_mut().reset(self.last_frame + idle);
    }

    /// The peer was heard from: its silence counts from now.
    pub(super) fn heard(&mut self) {
        self.last_frame = Instant::now();
    }

    /// Reads once from the socket. `Pending` when it has nothing.
    pub(super) fn poll_fill(&mut self, io: &mut Stream, cx: &mut Context<'_>) -> Poll<Fill> {
        if self.this_turn >= READ_TURN {
            // Let the session write its acks (and the runtime run others)
            // before reading on.
            self.this_turn = 0;
            cx.waker().wake_by_ref();
            return Poll::Ready(Fill::TurnUsed);
        }
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(READ_BLOCK);
        }
        let read = {
            let read = io.read_buf(&mut self.buf);
            std::pin::pin!(read).poll(cx)
        };
        match read {
            Poll::Ready(Ok(0)) => Poll::Ready(Fill::Eof),
            Poll::Ready(Ok(n)) => {
                self.this_turn += n;
                Poll::Ready(Fill::Bytes)
            }
            Poll::Ready(Err(e)) => Poll::Ready(Fill::Failed(e)),
            Poll::Pending => {
                self.this_turn = 0;
                Poll::Pending
            }
        }
    }

    /// `Ready` once the peer has been silent for the idle timeout. One
    /// timer for the whole connection, moved only when it fires: a timer
    /// set per read would cost the runtime a wake-up per round trip.
    pub(super) fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.idle.as_mut().poll(cx).is_ready() {
            let due = self.last_frame + self.idle_timeout;
            if Instant::now() >= due {
                return Poll::Ready(());
            }
            self.idle.as_mut().reset(due);
        }
        Poll::Pending
    }
}

/// Messages being received, put back together from their DATA and END
/// frames, and the ids already received.
pub(super) struct Reassembly {
    partial: HashMap<MessageId, Partial>,
    /// What `partial` holds, against the receive budget.
    held: Held,
    received: ReceivedIds,
    limit: u64,
}

/// A message being received.
#[derive(Default)]
struct Partial {
    body: Body,
    /// Over the limit and rejected: the rest is read and dropped.
    discarding: bool,
}

/// What a chunk completed.
pub(super) enum Assembled {
    Nothing,
    /// The message just passed the size limit: the caller sends REJECT
    /// (TOO_LARGE); its remaining chunks are dropped.
    TooLarge {
        limit: u64,
    },
    /// A whole message.
    Message(Body),
}

impl Reassembly {
    pub(super) fn new(limit: u64) -> Self {
        Reassembly {
            partial: HashMap::new(),
            held: Held::default(),
            received: ReceivedIds::default(),
            limit,
        }
    }

    /// Messages in progress hold more than the receive budget allows: read
    /// nothing more from the socket. A TCP receiver cannot read one
    /// message's frames and leave another's, and our senders never go
    /// beyond the budget (`receive_budget::fits_alongside`), so only a peer that
    /// ignores it gets here; TCP flow control holds it, and its silence
    /// ends the connection at the idle timeout.
    pub(super) fn over_budget(&self) -> bool {
        self.held.over()
    }

    /// Takes one DATA (`last` false) or END (`last` true) frame's chunk.
    /// An error is a protocol violation, with its reason.
    pub(super) fn chunk(
        &mut self,
        id: MessageId,
        chunk: Bytes,
        last: bool,
    ) -> Result<Assembled, String> {
        if self.received.contains(id) {
            return Err(format!("message id {id} received twice"));
        }
        if !self.partial.contains_key(&id) && !last && self.partial.len() >= MAX_IN_PROGRESS {
            return Err(format!("more than {MAX_IN_PROGRESS} messages in progress"));
        }
        let limit = self.limit;
        let p = self.partial.entry(id).or_default();
        let mut outcome = Assembled::Nothing;
        if !p.discarding {
            if (p.body.len() + chunk.len()) as u64 > limit {
                p.discarding = true;
                p.body = Body::default();
                self.held.remove(id);
                debug!(id, limit, "rejecting message over the size limit");
                outcome = Assembled::TooLarge { limit };
            } else {
                self.held.add(id, chunk.len());
                p.body.push_copy(&chunk);
            }
        }
        if !last {
            return Ok(outcome);
        }
        let Some(p) = self.partial.remove(&id) else {
            return Ok(outcome);
        };
        // Handed to the session now (or dropped): no longer held here.
        self.held.remove(id);
        if let Err(e) = self.received.insert(id) {
            return Err(format!("cannot record message id {id}: {e:?}"));
        }
        if p.discarding {
            Ok(outcome)
        } else {
            Ok(Assembled::Message(p.body))
        }
    }
}
