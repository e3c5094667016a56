//! The control streams (docs/protocol.md §6): ours carries ACK and REJECT
//! frames, batched; the peer's is read for its frames, and must be opened
//! within [`CONTROL_STREAM_DEADLINE`] and never closed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use quinn::{ReadError, SendStream};
use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::Shared;
use super::streams::{Read, StreamReader};
use crate::protocol::codec::{Frame, FrameDecoder, put_varint, stream_type};
use crate::transport::{Event, Opening};
use crate::ui::render::sanitize_line;

/// How long a peer has to open its control stream (docs/protocol.md §6).
const CONTROL_STREAM_DEADLINE: Duration = Duration::from_secs(10);

/// Control frames (acks) queued and not yet taken by quinn beyond which no
/// new message stream is read: a peer that does not read its acks cannot
/// make us queue one per message without end. (Our own sender keeps at most
/// 1,024 messages unacknowledged, far below.)
pub(super) const MAX_CONTROL_BACKLOG: usize = 8192;

pub(super) enum ControlCmd {
    Frame(Frame),
    /// Answered once every frame queued before it has been written.
    Flush(oneshot::Sender<()>),
}

/// What goes to the control-stream writer, counted: the stream acceptor
/// takes no new message while a peer leaves too many of the acks it is owed
/// unread (each message taken would queue one more).
#[derive(Clone)]
pub(super) struct ControlQueue {
    pub(super) tx: mpsc::UnboundedSender<ControlCmd>,
    pub(super) backlog: Arc<Backlog>,
}

/// Control frames queued and not yet taken by quinn.
#[derive(Default)]
pub(super) struct Backlog {
    pub(super) frames: AtomicUsize,
    drained: tokio::sync::Notify,
}

impl ControlQueue {
    pub(super) fn frame(&self, f: Frame) {
        self.backlog.frames.fetch_add(1, Ordering::AcqRel);
        let _ = self.tx.send(ControlCmd::Frame(f));
    }

    /// Asks to be told once everything queued so far is written.
    pub(super) fn flush(&self, done: oneshot::Sender<()>) -> bool {
        self.tx.send(ControlCmd::Flush(done)).is_ok()
    }
}

impl Backlog {
    pub(super) fn written(&self, frames: usize) {
        self.frames.fetch_sub(frames, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    pub(super) async fn wait_below(&self, max: usize) {
        loop {
            let drained = self.drained.notified();
            if self.frames.load(Ordering::Acquire) < max {
                return;
            }
            drained.await;
        }
    }
}

/// Closes the connection if the peer never opens its control stream.
pub(super) async fn control_deadline(shared: Shared) {
    tokio::time::sleep(CONTROL_STREAM_DEADLINE).await;
    if !shared.peer_control_seen.load(Ordering::Acquire) {
        shared.violation(format!(
            "no control stream within {} s",
            CONTROL_STREAM_DEADLINE.as_secs()
        ));
    }
}

/// Writes our control stream: its type, then control frames (`first`, if
/// given, then what `rx` brings), batching whatever is queued into one
/// write.
pub(super) async fn write_control(
    mut stream: SendStream,
    first: Option<ControlCmd>,
    mut rx: mpsc::UnboundedReceiver<ControlCmd>,
    backlog: Arc<Backlog>,
) {
    let mut first = first;
    let mut buf = BytesMut::with_capacity(256);
    put_varint(&mut buf, stream_type::CONTROL);
    let mut flushes = Vec::new();
    let mut frames = 0;
    loop {
        if !buf.is_empty() {
            if let Err(e) = stream.write_all(&buf).await {
                debug!(
                    "control stream write failed: {}",
                    sanitize_line(&e.to_string())
                );
                return;
            }
            buf.clear();
            backlog.written(frames);
            frames = 0;
        }
        for f in flushes.drain(..) {
            let _: Result<(), ()> = oneshot::Sender::send(f, ());
        }
        let cmd = match first.take() {
            Some(cmd) => cmd,
            None => match rx.recv().await {
                Some(cmd) => cmd,
                None => return,
            },
        };
        let mut next = Some(cmd);
        while let Some(cmd) = next {
            match cmd {
                ControlCmd::Frame(f) => {
                    f.encode(&mut buf);
                    frames += 1;
                }
                ControlCmd::Flush(tx) => flushes.push(tx),
            }
            next = rx.try_recv().ok();
        }
    }
}

pub(super) async fn read_control(shared: Shared, mut reader: StreamReader) {
    let mut opening = Opening::new(shared.version, shared.side);
    loop {
        loop {
            let frame = match FrameDecoder.decode_as(shared.version, &mut reader.buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    return shared
                        .violation(format!("control stream: {}", sanitize_line(&e.to_string())));
                }
            };
            let opened = match opening.check(&frame) {
                Ok(opened) => opened,
                Err(reason) => return shared.violation(reason),
            };
            let event = match frame {
                // Unknown types are skipped; a PING is meaningless here but
                // harmless, so it is skipped too.
                Frame::Unknown { .. } | Frame::Ping => continue,
                f @ (Frame::Data { .. } | Frame::End { .. } | Frame::Close { .. }) => {
                    return shared.violation(format!("{} frame on the control stream", f.name()));
                }
                // `opening` let it through, so it belongs to a resume; this
                // version sends no files, so it names none of ours and is
                // ignored (docs/protocol.md §12.6).
                Frame::Partial { .. } => continue,
                control => match Event::of_control(control) {
                    Some(event) => event,
                    None => continue,
                },
            };
            if shared.events.send(event).await.is_err() {
                return;
            }
            if opened {
                // Message streams that came before HELLO (or WELCOME, or
                // a resume's RECEIVED) were held unread until now
                // (docs/protocol.md §12.3, §12.6).
                shared.open.send_replace(true);
            }
        }
        match reader.fill().await {
            Read::Got(()) => {}
            Read::Finished => return shared.violation("peer finished its control stream".into()),
            Read::Failed(ReadError::Reset(_)) => {
                return shared.violation("peer reset its control stream".into());
            }
            Read::Failed(_) => return,
        }
    }
}
