//! Message streams (docs/protocol.md §6): one new unidirectional stream
//! per message sent, in id order; and the peer's streams, each read by a
//! task of its own within the size limit, the bound on bodies in memory and
//! the receive budget.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::Poll;

use bytes::{Bytes, BytesMut};
use quinn::{ReadError, RecvStream, SendStream, VarInt};
use tokio::sync::mpsc;
use tracing::debug;

use super::Shared;
use super::control::{Backlog, ControlCmd, MAX_CONTROL_BACKLOG, read_control, write_control};
use crate::protocol::codec::{self, Frame, put_varint, stream_type};
use crate::protocol::{Body, MessageId, reject_code, stream_error};
use crate::transport::Event;
use crate::ui::render::sanitize_line;

/// Bytes a message reader takes in before it lets the other tasks run (as
/// the TCP reader does).
const READ_TURN: usize = 64 * 1024;

/// Opens our control stream, then serves it and the outgoing messages.
/// Nothing here is awaited by `start`: a peer that grants no stream credit
/// stalls only this task, never the caller (the control-stream deadline and
/// idle timeout end such a connection).
pub(super) async fn write_streams(
    conn: quinn::Connection,
    mut control: mpsc::UnboundedReceiver<ControlCmd>,
    backlog: Arc<Backlog>,
    outgoing: mpsc::UnboundedReceiver<(MessageId, Bytes)>,
    lazy: bool,
) {
    // A chat/2 client opens its control stream only with HELLO, so that a
    // connection that loses a race goes away without a frame of ours
    // (docs/protocol.md §12.3).
    let first = if lazy {
        match control.recv().await {
            Some(cmd) => Some(cmd),
            None => return,
        }
    } else {
        None
    };
    // If the control stream cannot be opened the connection is already
    // closing, and the close watcher reports why.
    let stream = match conn.open_uni().await {
        Ok(s) => s,
        Err(e) => {
            return debug!(
                "cannot open control stream: {}",
                sanitize_line(&e.to_string())
            );
        }
    };
    tokio::join!(
        write_control(stream, first, control, backlog),
        send_messages(conn, outgoing)
    );
}

/// Opens one stream per message, in id order, waiting for stream credit when
/// the peer's limit is reached (the message is delayed, never failed).
async fn send_messages(
    conn: quinn::Connection,
    mut rx: mpsc::UnboundedReceiver<(MessageId, Bytes)>,
) {
    while let Some((id, body)) = rx.recv().await {
        let stream = match conn.open_uni().await {
            Ok(s) => s,
            Err(e) => {
                debug!(
                    "cannot open message stream: {}",
                    sanitize_line(&e.to_string())
                );
                return;
            }
        };
        run_or_spawn(write_message(stream, id, body)).await;
    }
}

/// Polls `task` once here and gives it a task of its own only if it has to
/// wait. A short message usually leaves whole in that one poll, and
/// spawning a task for it costs more than the work it carries.
async fn run_or_spawn<F>(task: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let mut task = Box::pin(task);
    let first = std::future::poll_fn(|cx| Poll::Ready(task.as_mut().poll(cx))).await;
    if first.is_pending() {
        tokio::spawn(task);
    }
}

async fn write_message(mut stream: SendStream, id: MessageId, body: Bytes) {
    let mut header = BytesMut::with_capacity(9);
    put_varint(&mut header, stream_type::MESSAGE);
    put_varint(&mut header, id);
    let result = async {
        stream.write_all(&header).await?;
        stream.write_chunk(body).await?;
        Ok::<_, quinn::WriteError>(())
    }
    .await;
    match result {
        // A peer that stops the stream (TOO_LARGE) also sends a REJECT on its
        // control stream; that is what reaches the user.
        Err(e) => debug!(
            id,
            "message stream ended early: {}",
            sanitize_line(&e.to_string())
        ),
        Ok(()) => {
            let _ = stream.finish();
        }
    }
}

/// Accepts the peer's unidirectional streams and hands each to its reader.
pub(super) async fn accept_streams(shared: Shared) {
    loop {
        // A peer that does not read its acks gets no new stream read (and
        // so no more stream credit) until it does.
        shared.control.backlog.wait_below(MAX_CONTROL_BACKLOG).await;
        match shared.conn.accept_uni().await {
            // Each stream gets a task of its own, spawned in the order the
            // streams arrive: run in place, a stream whose message was
            // complete would overtake an earlier one still arriving, and
            // messages would be shown out of order far more often.
            Ok(stream) => {
                tokio::spawn(read_stream(shared.clone(), stream));
            }
            Err(e) => {
                debug!("no more streams: {}", sanitize_line(&e.to_string()));
                return;
            }
        }
    }
}

/// A receive stream with the bytes read past what has been parsed.
pub(super) struct StreamReader {
    pub(super) stream: RecvStream,
    pub(super) buf: BytesMut,
}

pub(super) enum Read<T> {
    Got(T),
    /// The stream finished.
    Finished,
    /// The stream was reset or the connection failed.
    Failed(ReadError),
}

impl StreamReader {
    /// Reads more bytes into the buffer.
    pub(super) async fn fill(&mut self) -> Read<()> {
        match self.stream.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                self.buf.extend_from_slice(&chunk.bytes);
                Read::Got(())
            }
            Ok(None) => Read::Finished,
            Err(e) => Read::Failed(e),
        }
    }

    async fn varint(&mut self) -> Read<u64> {
        loop {
            if let Some(v) = codec::get_varint(&mut self.buf) {
                return Read::Got(v);
            }
            match self.fill().await {
                Read::Got(()) => {}
                Read::Finished => return Read::Finished,
                Read::Failed(e) => return Read::Failed(e),
            }
        }
    }
}

async fn read_stream(shared: Shared, stream: RecvStream) {
    let mut reader = StreamReader {
        stream,
        buf: BytesMut::new(),
    };
    // A stream that ends before its type (and id) are complete is ignored.
    let ty = match reader.varint().await {
        Read::Got(ty) => ty,
        _ => return,
    };
    match ty {
        stream_type::CONTROL => {
            if shared.peer_control_seen.swap(true, Ordering::AcqRel) {
                shared.violation("second control stream".into());
                return;
            }
            read_control(shared, reader).await;
        }
        stream_type::MESSAGE => {
            // Held, unread, until the peer's opening frame has come; given
            // up with the connection (this task holds the connection, and
            // the sender of `open` too, so nothing else would end it).
            let mut open = shared.open.subscribe();
            let opened = tokio::select! {
                opened = open.wait_for(|&open| open) => opened.is_ok(),
                _ = shared.conn.closed() => false,
            };
            if opened {
                read_message(shared, reader).await;
            }
        }
        other => {
            debug!("ignoring stream of unknown type {other:#x}");
            let _ = reader
                .stream
                .stop(VarInt::from_u32(stream_error::UNKNOWN_STREAM_TYPE));
        }
    }
}

async fn read_message(shared: Shared, mut reader: StreamReader) {
    let id = match reader.varint().await {
        Read::Got(id) => id,
        _ => return,
    };
    if shared.received.lock().is_ok_and(|r| r.contains(id)) {
        return shared.violation(format!("message id {id} received twice"));
    }
    // Held until the message is in the session's queue.
    let Ok(_reading) = shared.reading.clone().acquire_owned().await else {
        return;
    };
    let limit = shared.limits.max_message_size;
    // Held until the message is in the session's queue, as `_reading` is.
    let charge = shared.budget.charge();
    let mut body = Body::default();
    charge.add(reader.buf.len());
    body.push_copy(&reader.buf.split());
    let mut this_turn = 0;
    loop {
        if body.len() as u64 > limit {
            // A refused message still counts as received: its id may not be
            // used again (as on TCP).
            if !shared.record_received(id) {
                return;
            }
            let _ = reader
                .stream
                .stop(VarInt::from_u32(stream_error::TOO_LARGE));
            debug!(
                id,
                size = body.len(),
                limit,
                "rejecting message over the size limit"
            );
            shared.control.frame(Frame::Reject {
                id,
                code: reject_code::TOO_LARGE,
                reason: Bytes::from(format!("message exceeds the limit of {limit} bytes")),
            });
            return;
        }
        // Past the receive budget this stream is left unread (its window
        // closes) until messages ahead of it are handed on.
        charge.room().await;
        match reader.stream.read_chunk(usize::MAX, true).await {
            Ok(Some(chunk)) => {
                this_turn += chunk.bytes.len();
                charge.add(chunk.bytes.len());
                // A copy: quinn's chunk is a slice of a receive buffer.
                body.push_copy(&chunk.bytes);
                // Reading chunks quinn already holds never waits, so without
                // this one task could take in a whole stream window (about
                // 1.25 MB) per turn while acks and small messages wait.
                if this_turn >= READ_TURN {
                    this_turn = 0;
                    tokio::task::yield_now().await;
                } else {
                    tokio::task::consume_budget().await;
                }
            }
            Ok(None) => break,
            // Reset by the sender: the message is abandoned, not acknowledged.
            Err(e) => {
                debug!(
                    id,
                    "message stream failed: {}",
                    sanitize_line(&e.to_string())
                );
                return;
            }
        }
    }
    if shared.record_received(id) {
        let _ = shared.events.send(Event::Message { id, body }).await;
    }
}
