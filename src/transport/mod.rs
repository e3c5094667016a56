//! The `Transport` trait: everything the chat logic needs from a connection,
//! and nothing about how bytes move.
//!
//! Two implementations carry chat/1 and chat/2: [`quic`] (one unidirectional stream per
//! message, acks on a control stream) and [`tcp`] (TLS 1.3 over TCP, framed
//! and interleaved). The calls below never block on the network: QUIC runs
//! its socket work in background tasks that talk to the session through
//! channels; TCP is driven from the session's own task, through
//! `next_event` and `flush`. Either way a large message being sent never
//! delays an acknowledgement.

mod handshake;
pub mod handshakes;
mod link;
mod listener;
pub mod quic;
pub mod receive_budget;
mod socket;
pub(crate) mod strangers;
pub mod tcp;

pub use handshake::AlpnMismatch;
pub use link::{ConnectError, Link, connect};
pub use listener::{BindError, HANDSHAKE_TIMEOUT, Handshaken, Listener};

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use crate::protocol::codec::{Frame, Token, Version, frame_type, reason_text};
use crate::protocol::{Body, MessageId, close_code};
use crate::trust::identity::Fingerprint;

/// Something that happened on a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A whole message from the peer. The session acknowledges it.
    Message { id: MessageId, body: Body },
    /// The peer acknowledged one of our messages.
    Ack { id: MessageId },
    /// The peer refused one of our messages.
    Rejected {
        id: MessageId,
        code: u64,
        reason: String,
    },
    /// chat/2, at a server: the client's HELLO, its first frame (the
    /// transport refuses anything else first).
    Hello {
        idle_timeout_ms: u64,
        token: Option<Token>,
    },
    /// chat/2, at a client: the server's WELCOME, its first frame.
    Welcome {
        token: Token,
        resume_window_ms: u64,
        resumed: bool,
        idle_timeout_ms: u64,
    },
    /// chat/2, in a resume: the peer has accepted every message of ours
    /// below `below`, and each of `ids` (docs/protocol.md §12.6).
    Received {
        below: MessageId,
        ids: Vec<MessageId>,
    },
    /// The connection is over; no further events follow.
    Closed(Disconnect),
}

impl Event {
    /// The event a control frame carries: ACK, REJECT, HELLO, WELCOME or
    /// RECEIVED (the same on both transports); `None` for any other frame.
    pub(crate) fn of_control(frame: Frame) -> Option<Event> {
        Some(match frame {
            Frame::Ack { id } => Event::Ack { id },
            Frame::Reject { id, code, reason } => Event::Rejected {
                id,
                code,
                reason: reason_text(&reason),
            },
            Frame::Hello {
                idle_timeout_ms,
                token,
            } => Event::Hello {
                idle_timeout_ms,
                token,
            },
            Frame::Welcome {
                token,
                resume_window_ms,
                resumed,
                idle_timeout_ms,
            } => Event::Welcome {
                token,
                resume_window_ms,
                resumed,
                idle_timeout_ms,
            },
            Frame::Received { below, ids } => Event::Received { below, ids },
            _ => return None,
        })
    }
}

/// Which end of a connection this is: on chat/2 it decides which frame
/// must come first from the peer (HELLO at a server, WELCOME at a client).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
}

impl Side {
    /// The frame type the peer must send first on a `version` connection,
    /// if any.
    pub(crate) fn first_from_peer(self, version: Version) -> Option<u64> {
        match (version, self) {
            (Version::V1, _) => None,
            (Version::V2, Side::Server) => Some(frame_type::HELLO),
            (Version::V2, Side::Client) => Some(frame_type::WELCOME),
        }
    }
}

/// Where a connection stands with chat/2's opening frames (docs/protocol.md
/// §12.3, §12.6): before HELLO (at a server) or WELCOME (at a client) only
/// PING, CLOSE and unknown frames may come; that frame comes once. When it
/// opens a resume (HELLO with a token, WELCOME with `resumed` = 1), only
/// PARTIAL, PING, CLOSE and unknown frames may come until the peer's
/// RECEIVED; RECEIVED and PARTIAL are refused anywhere else.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Opening {
    stage: Stage,
    side: Side,
    version: Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// The peer's opening frame (of this type) has not come yet.
    Expect(u64),
    /// A resume: the peer's RECEIVED has not come yet.
    Resume,
    /// Messages may flow.
    Open,
}

impl Opening {
    pub fn new(version: Version, side: Side) -> Self {
        Opening {
            stage: side
                .first_from_peer(version)
                .map_or(Stage::Open, Stage::Expect),
            side,
            version,
        }
    }

    /// Whether messages may flow: the opening (and, in a resume, the
    /// peer's RECEIVED) has come; always, on chat/1.
    pub fn is_open(&self) -> bool {
        self.stage == Stage::Open
    }

    /// Checks `frame` against the rules; `Err` is a protocol violation.
    /// `Ok(true)` when this frame opens the connection for messages.
    pub fn check(&mut self, frame: &Frame) -> Result<bool, String> {
        let opening = matches!(frame, Frame::Hello { .. } | Frame::Welcome { .. });
        let resuming = matches!(
            frame,
            Frame::Hello { token: Some(_), .. } | Frame::Welcome { resumed: true, .. }
        );
        match (self.stage, frame) {
            (_, Frame::Ping | Frame::Unknown { .. } | Frame::Close { .. }) => Ok(false),
            (Stage::Expect(ty), f) if f.ty() == ty => {
                if resuming {
                    self.stage = Stage::Resume;
                    Ok(false)
                } else {
                    self.stage = Stage::Open;
                    Ok(true)
                }
            }
            (Stage::Expect(ty), f) => Err(format!(
                "{} frame before {}",
                f.name(),
                if ty == frame_type::HELLO {
                    "HELLO"
                } else {
                    "WELCOME"
                }
            )),
            (Stage::Resume, Frame::Partial { .. }) => Ok(false),
            (Stage::Resume, Frame::Received { .. }) => {
                self.stage = Stage::Open;
                Ok(true)
            }
            (Stage::Resume, f) => Err(format!("{} frame before RECEIVED in a resume", f.name())),
            (Stage::Open, f) if opening => Err(match self.side.first_from_peer(self.version) {
                Some(ty) if ty == f.ty() => format!("a second {}", f.name()),
                _ => format!("{} frame from the wrong side", f.name()),
            }),
            (Stage::Open, f @ (Frame::Received { .. } | Frame::Partial { .. })) => {
                Err(format!("{} outside a resume", f.name()))
            }
            (Stage::Open, _) => Ok(false),
        }
    }
}

/// Who ended a connection, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disconnect {
    /// We closed it with this code (user quit, or refusing the peer).
    Local { code: u64, reason: String },
    /// The peer closed it with this code and reason phrase.
    Peer { code: u64, reason: String },
    /// The peer broke the protocol; we closed with PROTOCOL_ERROR.
    Violation { reason: String },
    /// The connection died without a close: idle timeout, reset, EOF.
    Lost { reason: String },
}

impl Disconnect {
    /// The close code that ended the connection, if one was exchanged.
    pub fn code(&self) -> Option<u64> {
        match self {
            Disconnect::Local { code, .. } | Disconnect::Peer { code, .. } => Some(*code),
            Disconnect::Violation { .. } => Some(close_code::PROTOCOL_ERROR),
            Disconnect::Lost { .. } => None,
        }
    }

    /// One line saying what happened, for people.
    pub fn describe(&self) -> String {
        match self {
            Disconnect::Local { reason, .. } => reason.clone(),
            Disconnect::Peer { code, reason } if reason.is_empty() => {
                format!("peer closed the connection ({})", close_code::name(*code))
            }
            Disconnect::Peer { reason, .. } => reason.clone(),
            Disconnect::Violation { reason } => format!("protocol error: {reason}"),
            Disconnect::Lost { reason } => reason.clone(),
        }
    }

    /// Whether this end counts as normal for the exit status: either side
    /// ended the chat on purpose (NO_ERROR, or the server going away).
    pub fn is_normal(&self) -> bool {
        matches!(
            self,
            Disconnect::Local {
                code: close_code::NO_ERROR | close_code::GOING_AWAY,
                ..
            } | Disconnect::Peer {
                code: close_code::NO_ERROR | close_code::GOING_AWAY,
                ..
            }
        )
    }
}

/// The first reason a connection ended wins: a protocol error we detected
/// must not be reported later as "closed locally" by the stack.
#[derive(Debug, Clone, Default)]
pub(crate) struct EndReason(Arc<OnceLock<Disconnect>>);

impl EndReason {
    /// Records `d` unless a reason is already recorded; returns the one that
    /// stands.
    pub fn set(&self, d: Disconnect) -> Disconnect {
        self.0.get_or_init(|| d).clone()
    }

    pub fn get(&self) -> Option<Disconnect> {
        self.0.get().cloned()
    }
}

/// A connection's background tasks, aborted when the transport is dropped so
/// that nothing outlives the chat it served.
pub(crate) struct Tasks(pub Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The idle timeout two chat/2 peers agree on: the smaller non-zero one of
/// ours and theirs (`theirs_ms` 0: the peer has none; docs/protocol.md §12.4).
pub fn agreed_idle_timeout(ours: Duration, theirs_ms: u64) -> Duration {
    if theirs_ms == 0 {
        ours
    } else {
        ours.min(Duration::from_millis(theirs_ms))
    }
}

/// Milliseconds of `d`, as HELLO and WELCOME carry them.
pub fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Settings both transports share.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message we accept; larger ones are rejected with TOO_LARGE.
    pub max_message_size: u64,
    /// How long a silent peer is tolerated.
    pub idle_timeout: Duration,
}

/// The two ways a chat travels. One type for the command line, the events
/// (`"transport": "quic"`), the tests and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum TransportKind {
    /// QUIC (UDP), one stream per message.
    Quic,
    /// TLS 1.3 over TCP, framed and interleaved.
    Tcp,
}

impl TransportKind {
    /// The name used on the command line and in events.
    pub fn name(self) -> &'static str {
        match self {
            TransportKind::Quic => "quic",
            TransportKind::Tcp => "tcp",
        }
    }
}

impl std::fmt::Display for TransportKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What is known about the peer once the handshake is done.
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub addr: SocketAddr,
    /// Fingerprint of the certificate the peer presented, if any.
    pub fingerprint: Option<Fingerprint>,
    pub transport: TransportKind,
    /// chat/1 or chat/2, as the handshake's ALPN chose.
    pub version: Version,
}

/// A chat connection (chat/1 or chat/2) as the chat logic sees it.
///
/// `send`, `ack` and `reject` queue work and return at once; results come
/// back as [`Event`]s. After [`Event::Closed`] the connection is finished.
pub trait Transport: Send + 'static {
    /// Sends a message. Its acknowledgement arrives as [`Event::Ack`].
    fn send(&mut self, id: MessageId, body: Bytes);

    /// Acknowledges a message received whole.
    fn ack(&mut self, id: MessageId);

    /// Refuses a message received whole (the receiving transport already
    /// refuses messages over the size limit by itself).
    fn reject(&mut self, id: MessageId, code: u64, reason: &str);

    /// Starts writing what `send`, `ack` and `reject` queued, without
    /// waiting. The session calls it whenever it is about to wait, so that
    /// everything queued in one turn leaves together; a transport whose
    /// writing runs in tasks of its own has nothing to do here.
    fn flush(&mut self) {}

    /// Sends a chat/2 control frame (HELLO, WELCOME) ahead of any message
    /// data.
    fn send_control(&mut self, frame: Frame);

    /// Applies an idle timeout agreed with the peer (chat/2: the smaller of
    /// the two). A transport whose stack negotiates it itself (QUIC) has
    /// nothing to do here.
    fn set_idle_timeout(&mut self, _idle: Duration) {}

    /// Keeps the connection alive, without taking events, while the chat
    /// has not started yet (a person deciding whether to trust the server
    /// may take longer than the peer's idle timeout). What arrives
    /// meanwhile waits for `next_event`. Never resolves; cancel-safe.
    fn hold(&mut self) -> impl Future<Output = std::convert::Infallible> + Send {
        std::future::pending()
    }

    /// Waits for the next event, and meanwhile keeps the connection going
    /// (a transport without tasks of its own reads, and finishes writes the
    /// socket could not take at once, only in here). Cancel-safe.
    fn next_event(&mut self) -> impl Future<Output = Event> + Send;

    /// Ends the connection with a close code and reason phrase, giving
    /// already-queued acknowledgements a chance to leave first.
    fn close(&mut self, code: u64, reason: &str) -> impl Future<Output = ()> + Send;

    /// Once the connection has ended (either way), waits, bounded, for its
    /// last work: a CLOSE or close_notify being written, the linger that
    /// keeps a reset from destroying it, a CONNECTION_CLOSE leaving. Call it
    /// instead of dropping the transport where the process goes on or exits.
    fn finish(self) -> impl Future<Output = ()> + Send;
}

#[cfg(test)]
mod opening_tests {
    use super::*;

    fn hello(token: Option<Token>) -> Frame {
        Frame::Hello {
            idle_timeout_ms: 0,
            token,
        }
    }

    fn received() -> Frame {
        Frame::Received {
            below: 0,
            ids: vec![],
        }
    }

    fn ack() -> Frame {
        Frame::Ack { id: 0 }
    }

    #[test]
    fn a_resume_is_open_only_after_the_peers_received() {
        let mut o = Opening::new(Version::V2, Side::Server);
        assert_eq!(o.check(&hello(Some(Token([7; 16])))), Ok(false));
        assert!(!o.is_open());
        assert_eq!(o.check(&Frame::Partial { id: 1, held: 5 }), Ok(false));
        assert_eq!(o.check(&Frame::Ping), Ok(false));
        assert!(o.check(&ack()).is_err(), "only PARTIAL before RECEIVED");
        let mut o = Opening::new(Version::V2, Side::Server);
        o.check(&hello(Some(Token([7; 16])))).unwrap();
        assert_eq!(o.check(&received()), Ok(true));
        assert!(o.is_open());
        assert!(o.check(&received()).is_err(), "a second RECEIVED");
        assert!(o.check(&hello(None)).is_err(), "a second HELLO");
    }

    #[test]
    fn received_and_partial_outside_a_resume_are_errors() {
        let mut o = Opening::new(Version::V2, Side::Server);
        assert_eq!(o.check(&hello(None)), Ok(true));
        assert!(o.check(&received()).is_err());
        assert!(o.check(&Frame::Partial { id: 1, held: 5 }).is_err());
        let mut client = Opening::new(Version::V2, Side::Client);
        let welcome = |resumed| Frame::Welcome {
            token: Token([1; 16]),
            resume_window_ms: 1000,
            resumed,
            idle_timeout_ms: 0,
        };
        assert_eq!(client.check(&welcome(false)), Ok(true));
        assert!(client.check(&received()).is_err());
        let mut client = Opening::new(Version::V2, Side::Client);
        assert_eq!(client.check(&welcome(true)), Ok(false));
        assert_eq!(client.check(&received()), Ok(true));
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! What the transports' tests share.
    use super::{Event, Transport};
    use crate::trust::identity::{self, Identity};
    use crate::trust::tls::{self, FingerprintVerifier, ServerTrust};
    use std::time::Duration;

    /// A fresh identity, as `chat cert` makes one.
    pub fn identity(name: &str) -> Identity {
        let dir = std::env::temp_dir().join(format!("chat-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        identity::write_new(&dir, &[], true).unwrap();
        let id = Identity::load(
            &dir.join(identity::CERT_FILE),
            &dir.join(identity::KEY_FILE),
        )
        .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        id
    }

    /// A chat/1 client that trusts any server.
    pub fn client_tls() -> rustls::ClientConfig {
        let mut config = tls::client_config(
            FingerprintVerifier::new(ServerTrust::AnyValidSignature),
            None,
        )
        .unwrap();
        config.alpn_protocols = vec![tls::ALPN_V1.to_vec()];
        config
    }

    /// Plays the session: acknowledges each message until none comes for a
    /// second, or `max` were read. Returns how many were read.
    pub async fn ack_until_quiet<T: Transport>(transport: &mut T, max: u64) -> u64 {
        let mut messages = 0;
        while messages < max {
            match tokio::time::timeout(Duration::from_secs(1), transport.next_event()).await {
                Ok(Event::Message { id, .. }) => {
                    transport.ack(id);
                    messages += 1;
                }
                Ok(other) => panic!("unexpected event {other:?}"),
                Err(_) => break,
            }
        }
        messages
    }
}
