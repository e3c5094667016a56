//! chat/1 over QUIC (docs/protocol.md §6), on quinn.
//!
//! Each message travels on its own unidirectional stream, so messages never
//! wait behind each other; acknowledgements travel on a dedicated control
//! stream, so an ack never waits behind message data. The parts:
//! - [`endpoint`]: listening, connecting, the handshake and QUIC settings;
//! - [`control`]: the control stream both ways, and the bound on acks a peer
//!   leaves unread;
//! - [`streams`]: the message streams both ways;
//! - this module: [`QuicTransport`], the connection as the session sees it,
//!   and the tasks it runs (control writer, message sender, stream acceptor,
//!   close watcher, control-stream watchdog; a short task per message
//!   stream received, and per outgoing message stream that has to wait).

mod control;
mod endpoint;
mod receive_budget;
mod streams;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use quinn::{ConnectionError, VarInt};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::warn;

use super::{Disconnect, EndReason, Event, Limits, Opening, PeerInfo, Side, Transport};
use crate::protocol::codec::Version;
use crate::protocol::received::ReceivedIds;
use crate::protocol::{Frame, MessageId, clip_reason, close_code, codec};
use control::{ControlQueue, control_deadline};
use endpoint::varint;
pub use endpoint::{ConnectFailure, Handshaken, Listener, QuicSetupError, connect};
use streams::{accept_streams, write_streams};

/// Events buffered between the connection's tasks and the session. Small on
/// purpose: when the session falls behind, stream readers stop reading and
/// QUIC flow control pushes back on the peer.
const EVENT_QUEUE: usize = 64;

/// Messages read into memory at once. A message stream that finishes frees
/// its QUIC stream slot, so stream credit alone does not bound what a fast
/// peer can make us buffer while the session is busy; this does: at most
/// this many bodies (each within the size limit) are being read or waiting
/// for the session, and further streams wait unread under flow control.
const MAX_READING: usize = 16;

/// Longest we wait, when closing, for queued acknowledgements to reach the
/// peer before CONNECTION_CLOSE discards them.
const CLOSE_GRACE: Duration = Duration::from_millis(100);

/// A chat/1 connection over QUIC.
pub struct QuicTransport {
    conn: quinn::Connection,
    /// A client owns its endpoint and waits on it when closing, so that the
    /// CONNECTION_CLOSE leaves before the process exits.
    endpoint: Option<quinn::Endpoint>,
    outgoing: mpsc::UnboundedSender<(MessageId, Bytes)>,
    control: ControlQueue,
    events: mpsc::Receiver<Event>,
    end: EndReason,
    _tasks: super::Tasks,
}

/// What the per-connection tasks share.
#[derive(Clone)]
pub(super) struct Shared {
    conn: quinn::Connection,
    limits: Limits,
    events: mpsc::Sender<Event>,
    control: ControlQueue,
    end: EndReason,
    received: Arc<Mutex<ReceivedIds>>,
    peer_control_seen: Arc<AtomicBool>,
    reading: Arc<tokio::sync::Semaphore>,
    /// Message data read and not yet handed to the session.
    budget: Arc<receive_budget::SharedBudget>,
    version: Version,
    side: Side,
    /// Whether the peer's opening frame (chat/2) has come: message streams
    /// wait for it.
    open: Arc<watch::Sender<bool>>,
}

impl Shared {
    /// The peer broke the protocol: close with PROTOCOL_ERROR and a reason.
    pub(super) fn violation(&self, reason: String) {
        warn!(
            peer = %crate::transport::strangers::plain(self.conn.remote_address()),
            "protocol error: {reason}"
        );
        let reason = clip_reason(&reason).to_string();
        self.end.set(Disconnect::Violation {
            reason: reason.clone(),
        });
        self.conn
            .close(varint(close_code::PROTOCOL_ERROR), reason.as_bytes());
    }

    pub(super) fn record_received(&self, id: MessageId) -> bool {
        let refused = match self.received.lock() {
            Ok(mut r) => r.insert(id).err(),
            Err(_) => return false,
        };
        match refused {
            None => true,
            Some(crate::protocol::received::Refused::Duplicate) => {
                self.violation(format!("message id {id} received twice"));
                false
            }
            Some(crate::protocol::received::Refused::TooFragmented) => {
                self.violation("too many gaps in message ids".into());
                false
            }
        }
    }
}

impl QuicTransport {
    pub(super) async fn start(
        conn: quinn::Connection,
        endpoint: Option<quinn::Endpoint>,
        limits: Limits,
        peer: &PeerInfo,
        side: Side,
    ) -> Self {
        let opening = Opening::new(peer.version, side);
        let (events_tx, events) = mpsc::channel(EVENT_QUEUE);
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        let control = ControlQueue {
            tx: control_tx,
            backlog: Arc::default(),
        };
        let (outgoing, outgoing_rx) = mpsc::unbounded_channel();
        let shared = Shared {
            conn: conn.clone(),
            limits,
            events: events_tx,
            control: control.clone(),
            end: EndReason::default(),
            received: Arc::default(),
            peer_control_seen: Arc::default(),
            reading: Arc::new(tokio::sync::Semaphore::new(MAX_READING)),
            budget: Arc::default(),
            version: peer.version,
            side,
            open: Arc::new(watch::channel(opening.is_open()).0),
        };
        let mut tasks = vec![
            tokio::spawn(watch_close(shared.clone())),
            tokio::spawn(accept_streams(shared.clone())),
            tokio::spawn(write_streams(
                conn.clone(),
                control_rx,
                control.backlog.clone(),
                outgoing_rx,
                side == Side::Client && peer.version == Version::V2,
            )),
        ];
        if peer.version == Version::V1 {
            // On chat/2 the deadlines for HELLO and WELCOME cover it.
            tasks.push(tokio::spawn(control_deadline(shared.clone())));
        }
        QuicTransport {
            conn,
            endpoint,
            outgoing,
            control,
            events,
            end: shared.end,
            _tasks: super::Tasks(tasks),
        }
    }
}

impl QuicTransport {
    /// The server admitted the peer: it may send as much as QUIC's own
    /// flow control allows (see `BEFORE_ADMISSION_WINDOW`).
    pub(super) fn admitted(&self) {
        self.conn.set_receive_window(VarInt::MAX);
    }

    /// See [`Link::abandon`](super::Link::abandon).
    pub(super) fn abandon(self) {
        self.conn.close(varint(close_code::NO_ERROR), b"");
        if let Some(endpoint) = self.endpoint {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
            });
        }
    }
}

impl Transport for QuicTransport {
    fn send(&mut self, id: MessageId, body: Bytes) {
        let _ = self.outgoing.send((id, body));
    }

    fn ack(&mut self, id: MessageId) {
        self.control.frame(Frame::Ack { id });
    }

    fn send_control(&mut self, frame: Frame) {
        self.control.frame(frame);
    }

    fn reject(&mut self, id: MessageId, code: u64, reason: &str) {
        let reason = Bytes::copy_from_slice(clip_reason(reason).as_bytes());
        self.control.frame(Frame::Reject { id, code, reason });
    }

    async fn next_event(&mut self) -> Event {
        match self.events.recv().await {
            Some(e) => e,
            None => Event::Closed(self.end.get().unwrap_or(Disconnect::Lost {
                reason: "connection lost".into(),
            })),
        }
    }

    async fn close(&mut self, code: u64, reason: &str) {
        let reason = clip_reason(reason);
        self.end.set(Disconnect::Local {
            code,
            reason: reason.to_string(),
        });
        // CONNECTION_CLOSE discards stream data not yet delivered, so first
        // let queued acknowledgements reach quinn and give them about a round
        // trip to reach the peer.
        let (tx, rx) = oneshot::channel();
        if self.control.flush(tx) {
            let _ = tokio::time::timeout(CLOSE_GRACE, rx).await;
            let grace = (self.conn.rtt() * 2).min(CLOSE_GRACE);
            tokio::time::sleep(grace).await;
        }
        self.conn.close(varint(code), reason.as_bytes());
    }

    async fn finish(self) {
        // A client owns its endpoint: give the CONNECTION_CLOSE (ours or the
        // answer to the peer's) time to leave before the process exits. A
        // server's endpoint lives on.
        if let Some(endpoint) = &self.endpoint {
            let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
        }
    }
}

/// Reports the end of the connection, whoever ended it.
async fn watch_close(shared: Shared) {
    let err = shared.conn.closed().await;
    let d = shared.end.set(match err {
        ConnectionError::ApplicationClosed(c) => Disconnect::Peer {
            code: c.error_code.into_inner(),
            reason: codec::reason_text(&c.reason),
        },
        ConnectionError::TimedOut => Disconnect::Lost {
            reason: "connection lost (idle timeout)".into(),
        },
        ConnectionError::LocallyClosed => Disconnect::Local {
            code: close_code::NO_ERROR,
            reason: "closed".into(),
        },
        ConnectionError::Reset => Disconnect::Lost {
            reason: "connection lost (reset by peer)".into(),
        },
        other => Disconnect::Lost {
            reason: format!("connection lost ({other})"),
        },
    });
    let _ = shared.events.send(Event::Closed(d)).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::codec::{put_varint, stream_type};
    use crate::transport::testing;
    use bytes::BytesMut;
    use control::MAX_CONTROL_BACKLOG;
    use quinn::VarInt;
    use std::sync::atomic::Ordering;

    /// A peer that sends messages and never reads its acks: once
    /// [`MAX_CONTROL_BACKLOG`] acks wait, no new message stream is read (so
    /// the peer gets no new stream credit either), rather than one more ack
    /// being queued per message for as long as the peer goes on.
    #[tokio::test]
    async fn a_peer_that_never_reads_its_acks_gets_no_new_stream_read() {
        let id = testing::identity("quic-backlog");
        let limits = Limits {
            max_message_size: 1024,
            idle_timeout: Duration::from_secs(60),
        };
        let listener = Listener::bind(
            "127.0.0.1:0".parse().unwrap(),
            &id,
            &limits,
            Duration::from_secs(5),
        )
        .unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut handshaken) = mpsc::channel(1);
        let _acceptor = listener.spawn_acceptor(tx, Default::default());

        let client_tls = testing::client_tls();
        let _peer = tokio::spawn(async move {
            let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls).unwrap();
            let mut config = quinn::ClientConfig::new(Arc::new(crypto));
            let mut transport = quinn::TransportConfig::default();
            // Little room for the acks it never reads.
            transport.stream_receive_window(VarInt::from_u32(1024));
            config.transport_config(Arc::new(transport));
            let endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
            let conn = endpoint
                .connect_with(config, addr, "chat")
                .unwrap()
                .await
                .unwrap();
            let mut control = conn.open_uni().await.unwrap();
            let mut header = BytesMut::new();
            put_varint(&mut header, stream_type::CONTROL);
            control.write_all(&header).await.unwrap();
            for id in 0u64.. {
                let Ok(mut stream) = conn.open_uni().await else {
                    return;
                };
                header.clear();
                put_varint(&mut header, stream_type::MESSAGE);
                put_varint(&mut header, id);
                if stream.write_all(&header).await.is_err() {
                    return;
                }
                let _ = stream.finish();
            }
        });

        let Some(crate::transport::Handshaken::Quic(conn)) = handshaken.recv().await else {
            panic!("no QUIC connection");
        };
        let mut transport = conn.start(limits).await;
        // The session's part: ack each message. Once no new stream is
        // read, no event comes for a while.
        let messages = testing::ack_until_quiet(&mut transport, 50_000).await;
        assert!(
            messages < 50_000,
            "the transport went on reading a peer that reads nothing"
        );
        let backlog = transport.control.backlog.frames.load(Ordering::Acquire);
        assert!(
            (MAX_CONTROL_BACKLOG..MAX_CONTROL_BACKLOG + 200).contains(&backlog),
            "{backlog} acks queued after {messages} messages"
        );
    }
}
