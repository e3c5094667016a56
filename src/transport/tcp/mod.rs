//! chat/1 over TLS 1.3 over TCP (docs/protocol.md §7), the fallback for
//! networks that block UDP.
//!
//! One TLS stream carries frames both ways, driven by the session's own
//! task (see [`TcpTransport`]). The parts:
//! - [`endpoint`]: listening, connecting, the TLS handshake, socket options;
//! - [`writer`]: control frames (ACK, REJECT, PING, CLOSE) always ahead of
//!   message data, messages cut into chunks of at most 64 KiB interleaved
//!   round-robin, so neither an ack nor a small message waits behind a
//!   large one for more than one chunk;
//! - [`reader`]: frames in, messages put back together, the idle timer;
//! - this module: the connection's life (events, protocol errors, closing
//!   and lingering) between the two.

mod endpoint;
mod reader;
mod writer;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsStream;
use tracing::warn;

use super::{Disconnect, Event, Limits, Opening, PeerInfo, Side, Transport};
use crate::protocol::codec::{self, Frame};
use crate::protocol::{MessageId, clip_reason, close_code, reject_code};
pub use endpoint::{Handshaken, Listener, TcpSetupError, connect};
use reader::{Assembled, Fill, Reader, Reassembly};
use writer::Writer;

/// The TLS stream both halves use.
type Stream = TlsStream<TcpStream>;

/// Messages a receiver accepts in progress at once (docs/protocol.md §7); a
/// sender keeps no more than this many started and unfinished.
const MAX_IN_PROGRESS: usize = 64;

/// How long a closing endpoint keeps reading so its CLOSE is not destroyed
/// by a reset (docs/protocol.md §7).
const LINGER: Duration = Duration::from_secs(1);

/// How long a chat/2 peer may be silent before its opening frame: the 10 s
/// deadline for HELLO (or for WELCOME after HELLO), and a second of slack.
const OPENING_SILENCE: Duration = Duration::from_secs(11);

/// A keep-alive interval that means none (before WELCOME, at a server).
const NO_PING: Duration = Duration::from_secs(24 * 60 * 60);

/// Control frames (acks) queued and not yet written beyond which nothing
/// more is read from the peer.
const MAX_CONTROL_BACKLOG: usize = 64 * 1024;

/// A chat/1 connection over TLS over TCP.
///
/// There are no background tasks: the session drives the socket itself,
/// reading whenever it waits for the next event and writing what it queued
/// when it is about to wait ([`Transport::flush`]) or once the socket takes
/// more. An acknowledgement thus leaves in the same turn of the runtime in
/// which its message was read, with no hand-over between tasks; on loopback
/// those hand-overs were most of what the chat added to a bare TLS round
/// trip.
pub struct TcpTransport {
    io: Stream,
    /// For log lines: which peer broke the protocol.
    peer: SocketAddr,
    /// Why the connection ended, once it has; the first reason stands.
    end: Option<Disconnect>,
    /// Closed is reported once; after it nothing more is read or written,
    /// except by `close`/`finish`.
    reported: bool,
    /// Events decoded and not yet taken by the session.
    events: VecDeque<Event>,
    writer: Writer,
    reader: Reader,
    messages: Reassembly,
    /// chat/2's opening frames (HELLO, WELCOME) and their order.
    opening: Opening,
    /// We closed: `finish` lingers, so that our CLOSE is not destroyed by
    /// a reset (in `finish`, not `close`, so that the caller can go on at
    /// once: a server hands a resumed chat to the new connection without
    /// waiting for the old one to go).
    linger_due: bool,
}

impl TcpTransport {
    /// Starts the chat protocol the handshake chose on an established TLS
    /// stream.
    fn start(io: Stream, limits: Limits, peer: &PeerInfo, side: Side) -> Self {
        TcpTransport {
            io,
            peer: peer.addr,
            end: None,
            reported: false,
            events: VecDeque::new(),
            // A chat/2 server sends nothing before WELCOME, PING included
            // (docs/protocol.md §12.3): its keep-alives start with the
            // agreed idle timeout, at admission.
            writer: Writer::new(
                if side.first_from_peer(peer.version).is_some() && side == Side::Server {
                    NO_PING
                } else {
                    limits.idle_timeout / 3
                },
            ),
            // Before chat/2's opening frame the peer may be silent for as
            // long as its deadline allows (10 s), whatever the idle timeout:
            // the agreed one applies from then on (`set_idle_timeout`).
            reader: Reader::new(
                if side.first_from_peer(peer.version).is_some() {
                    limits.idle_timeout.max(OPENING_SILENCE)
                } else {
                    limits.idle_timeout
                },
                peer.version,
            ),
            messages: Reassembly::new(limits.max_message_size),
            opening: Opening::new(peer.version, side),
            linger_due: false,
        }
    }

    /// Records why the connection ended (the first reason stands) and
    /// reports it to the session.
    fn ended(&mut self, d: Disconnect) {
        if self.end.is_none() {
            self.end = Some(d.clone());
            self.events.push_back(Event::Closed(d));
        }
    }

    /// The peer broke the protocol: CLOSE with PROTOCOL_ERROR (written by
    /// `finish`, after what is queued), and the chat ends.
    fn violation(&mut self, reason: String) {
        warn!(peer = %self.peer, "protocol error: {reason}");
        let reason = clip_reason(&reason).to_string();
        if self.end.is_none() {
            self.queue_close(close_code::PROTOCOL_ERROR, &reason);
        }
        self.ended(Disconnect::Violation { reason });
    }

    /// Queues CLOSE behind the control frames already queued; message data
    /// not yet written is dropped (it is unconfirmed, and reported so).
    fn queue_close(&mut self, code: u64, reason: &str) {
        self.writer.control(&Frame::Close {
            code,
            reason: Bytes::copy_from_slice(reason.as_bytes()),
        });
        self.writer.end();
    }

    /// Reads and decodes until an event is ready, the socket has nothing
    /// more, or this turn's share of bytes is used up.
    fn poll_read_in(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            let mut framed = false;
            while self.events.is_empty() {
                match self.reader.next_frame() {
                    Ok(Some(frame)) => {
                        framed = true;
                        self.handle(frame);
                    }
                    Ok(None) => break,
                    Err(e) => self.violation(e.to_string()),
                }
            }
            if framed {
                self.reader.heard();
            }
            if !self.events.is_empty() {
                return Poll::Ready(());
            }
            if self.messages.over_budget() {
                return self.poll_idle(cx);
            }
            match self.reader.poll_fill(&mut self.io, cx) {
                Poll::Ready(Fill::Bytes) => {}
                Poll::Ready(Fill::TurnUsed) => return Poll::Pending,
                Poll::Ready(Fill::Eof) => self.ended(Disconnect::Lost {
                    reason: "connection lost (closed without CLOSE)".into(),
                }),
                Poll::Ready(Fill::Failed(e)) => self.ended(Disconnect::Lost {
                    reason: format!("connection lost ({e})"),
                }),
                Poll::Pending => return self.poll_idle(cx),
            }
        }
    }

    /// Ends the connection once the peer has been silent for the idle
    /// timeout.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.reader.poll_idle(cx).is_pending() {
            return Poll::Pending;
        }
        self.ended(Disconnect::Lost {
            reason: "connection lost (idle timeout)".into(),
        });
        Poll::Ready(())
    }

    fn handle(&mut self, frame: Frame) {
        if let Err(reason) = self.opening.check(&frame) {
            return self.violation(reason);
        }
        match frame {
            Frame::Reject { id, .. } => {
                self.writer.abort(id);
                self.events.extend(Event::of_control(frame));
            }
            Frame::Data { id, chunk } => self.chunk(id, chunk, false),
            Frame::End { id, chunk } => self.chunk(id, chunk, true),
            Frame::Close { code, reason } => {
                // Our answer is close_notify, after what is queued.
                self.writer.end();
                self.ended(Disconnect::Peer {
                    code,
                    reason: codec::reason_text(&reason),
                });
            }
            // A PARTIAL that `opening` let through belongs to a resume; this
            // version sends no files, so it names none of ours and is
            // ignored (docs/protocol.md §12.6).
            Frame::Ping | Frame::Unknown { .. } | Frame::Partial { .. } => {}
            control => self.events.extend(Event::of_control(control)),
        }
    }

    fn chunk(&mut self, id: MessageId, chunk: Bytes, last: bool) {
        match self.messages.chunk(id, chunk, last) {
            Ok(Assembled::Nothing) => {}
            Ok(Assembled::TooLarge { limit }) => self.writer.control(&Frame::Reject {
                id,
                code: reject_code::TOO_LARGE,
                reason: Bytes::from(format!("message exceeds the limit of {limit} bytes")),
            }),
            Ok(Assembled::Message(body)) => self.events.push_back(Event::Message { id, body }),
            Err(reason) => self.violation(reason),
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Event> {
        loop {
            if let Some(e) = self.events.pop_front() {
                if matches!(e, Event::Closed(_)) {
                    self.reported = true;
                }
                return Poll::Ready(e);
            }
            if self.reported {
                // Closed was reported; the session asks again only if it
                // goes on waiting, which it should not.
                return Poll::Pending;
            }
            if self.writer.is_blocked() {
                let _ = self.writer.poll_write(&mut self.io, cx);
            }
            self.writer.poll_ping(&mut self.io, cx);
            if self.writer.is_blocked() && self.writer.control_backlog() >= MAX_CONTROL_BACKLOG {
                // The peer does not read the acks it is owed: read nothing
                // more from it until it does (each message read would add
                // one). Being writable again wakes us; a peer that stays
                // like this is dropped at the idle timeout.
                if self.poll_idle(cx).is_ready() {
                    continue;
                }
                return Poll::Pending;
            }
            if self.events.is_empty() && self.poll_read_in(cx).is_pending() {
                // Nothing more to read: control frames queued meanwhile
                // (acks, and REJECTs the reading itself produced, which
                // the session never sees) leave now, with any data.
                if self.writer.control_backlog() > 0 && !self.writer.is_blocked() {
                    let _ = self.writer.poll_write(&mut self.io, cx);
                }
                // Everything the peer sent before writing failed has been
                // read (a CLOSE among it would have ended the chat
                // properly): now the connection is lost.
                if let Some(reason) = self.writer.error() {
                    let reason = reason.to_string();
                    self.ended(Disconnect::Lost { reason });
                }
                if self.events.is_empty() {
                    return Poll::Pending;
                }
            }
        }
    }

    /// Writes what is queued, then close_notify and FIN; waits for the
    /// socket at most [`LINGER`] for all of it.
    async fn write_and_shut_down(&mut self) {
        let _ = tokio::time::timeout(LINGER, async {
            std::future::poll_fn(|cx| self.writer.poll_write(&mut self.io, cx)).await;
            if self.writer.error().is_none() {
                let _ = self.io.shutdown().await;
            }
        })
        .await;
    }

    /// After we close: reads and discards until the peer closes too, or
    /// the linger time is up, so that our CLOSE is not destroyed by a reset
    /// (docs/protocol.md §7).
    async fn linger(&mut self) {
        let mut sink = [0u8; 16 * 1024];
        let _ = tokio::time::timeout(LINGER, async {
            while let Ok(n) = self.io.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
    }
}

impl TcpTransport {
    /// The server admitted the peer (see [`Link::admitted`](super::Link::admitted)):
    /// nothing to lift over TCP, whose reading is bounded per message.
    pub(super) fn admitted(&self) {}

    /// See [`Link::abandon`](super::Link::abandon): close_notify and FIN,
    /// nothing else.
    pub(super) async fn abandon(mut self) {
        let _ = tokio::time::timeout(LINGER, self.io.shutdown()).await;
    }
}

impl Transport for TcpTransport {
    fn send(&mut self, id: MessageId, body: Bytes) {
        if self.end.is_none() {
            self.writer.send(id, body);
        }
    }

    fn ack(&mut self, id: MessageId) {
        if self.end.is_none() {
            self.writer.control(&Frame::Ack { id });
        }
    }

    fn reject(&mut self, id: MessageId, code: u64, reason: &str) {
        if self.end.is_none() {
            let reason = Bytes::copy_from_slice(clip_reason(reason).as_bytes());
            self.writer.control(&Frame::Reject { id, code, reason });
        }
    }

    fn send_control(&mut self, frame: Frame) {
        if self.end.is_none() {
            if matches!(frame, Frame::Hello { .. }) {
                // The server owes WELCOME within 10 s of HELLO and may send
                // nothing before it: its silence counts from here.
                self.reader.heard();
            }
            self.writer.control(&frame);
        }
    }

    fn set_idle_timeout(&mut self, idle: Duration) {
        self.reader.set_idle_timeout(idle);
        self.writer.set_ping_every(idle / 3);
    }

    fn flush(&mut self) {
        if self.end.is_none() && !self.writer.is_blocked() {
            // Without waiting: if the socket is full, the rest goes from
            // `next_event`, which waits for it to take more.
            let _ = self.writer.poll_write(
                &mut self.io,
                &mut Context::from_waker(std::task::Waker::noop()),
            );
        }
    }

    async fn hold(&mut self) -> std::convert::Infallible {
        // Keep-alives (and whatever is left to write); reading waits, and
        // the peer's frames, keep-alives included, are read later, before
        // its silence is judged.
        std::future::poll_fn(|cx| {
            if self.writer.is_blocked() {
                let _ = self.writer.poll_write(&mut self.io, cx);
            }
            self.writer.poll_ping(&mut self.io, cx);
            Poll::Pending
        })
        .await
    }

    async fn next_event(&mut self) -> Event {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    async fn close(&mut self, code: u64, reason: &str) {
        if self.end.is_some() {
            return;
        }
        let reason = clip_reason(reason).to_string();
        self.end = Some(Disconnect::Local {
            code,
            reason: reason.clone(),
        });
        self.reported = true;
        // Queued acknowledgements go first, then CLOSE, close_notify, FIN.
        self.queue_close(code, &reason);
        self.writer.shutdown_done();
        self.write_and_shut_down().await;
        self.linger_due = true;
    }

    async fn finish(mut self) {
        // A CLOSE we owe (protocol error) or our answer to the peer's: what
        // is queued, then close_notify and FIN. A lost connection owes
        // nothing.
        if self.writer.shutdown_due() {
            self.write_and_shut_down().await;
            if matches!(self.end, Some(Disconnect::Violation { .. })) {
                self.linger().await;
            }
        } else if self.linger_due {
            self.linger().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::{encode_chunk_header, frame_type};
    use crate::transport::testing;
    use bytes::BytesMut;
    use std::sync::Arc;
    use tokio::sync::mpsc;
    use tokio_rustls::TlsConnector;

    /// A peer that sends messages and never reads its acks: the transport
    /// stops reading once [`MAX_CONTROL_BACKLOG`] of acks wait, rather than
    /// queueing one more ack per message for as long as the peer goes on.
    #[tokio::test]
    async fn a_peer_that_never_reads_its_acks_is_not_read_either() {
        let id = testing::identity("tcp-backlog");
        let listener = endpoint::Listener::bind("127.0.0.1:0".parse().unwrap(), &id, LINGER * 5)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut handshaken) = mpsc::channel(1);
        let _acceptor = listener.spawn_acceptor(tx, Default::default());

        let client_tls = testing::client_tls();
        let _peer = tokio::spawn(async move {
            // A small receive buffer, so that unread acks fill it soon.
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.set_recv_buffer_size(4096).unwrap();
            let tcp = socket.connect(addr).await.unwrap();
            let name = rustls_pki_types::ServerName::try_from("chat").unwrap();
            let mut tls = TlsConnector::from(Arc::new(client_tls))
                .connect(name, tcp)
                .await
                .unwrap();
            let mut frames = BytesMut::new();
            for id in 0.. {
                encode_chunk_header(&mut frames, frame_type::END, id, 0);
                if frames.len() >= 16 * 1024 {
                    if tls.write_all(&frames).await.is_err() {
                        return;
                    }
                    frames.clear();
                }
            }
        });

        let limits = Limits {
            max_message_size: 1024,
            idle_timeout: Duration::from_secs(60),
        };
        let Some(crate::transport::Handshaken::Tcp(conn)) = handshaken.recv().await else {
            panic!("no TCP connection");
        };
        let mut transport = conn.start(limits);
        // The session's part: ack each message. Once the transport stops
        // reading, no event comes for a while.
        let messages = testing::ack_until_quiet(&mut transport, 2_000_000).await;
        assert!(
            messages < 2_000_000,
            "the transport went on reading a peer that reads nothing"
        );
        assert!(
            transport.writer.control_backlog() <= MAX_CONTROL_BACKLOG + 64,
            "{} bytes of acks queued after {messages} messages",
            transport.writer.control_backlog()
        );
        assert!(transport.writer.is_blocked());
    }
}
