//! A chat connection over either transport, as one type: what a server
//! admits and a client connects, so that neither needs to be generic over
//! the transport (nor, later, care which one a resumed chat comes back on).

use std::net::SocketAddr;

use bytes::Bytes;

use super::{Event, Limits, PeerInfo, Transport, TransportKind, quic, tcp};
use std::time::Duration;

use crate::protocol::{Frame, MessageId};

/// A connection over QUIC or TCP.
pub enum Link {
    Quic(quic::QuicTransport),
    /// Boxed: the TCP transport holds its TLS stream and buffers inline.
    Tcp(Box<tcp::TcpTransport>),
}

impl Link {
    /// The server admitted the peer to a chat: limits that apply only to
    /// connections not yet admitted are lifted.
    pub fn admitted(&mut self) {
        match self {
            Link::Quic(t) => t.admitted(),
            Link::Tcp(t) => t.admitted(),
        }
    }

    /// Closes a connection on which no frame of the chat protocol was sent
    /// (one that lost a client's race): over QUIC with CONNECTION_CLOSE
    /// NO_ERROR, over TCP with TLS close_notify alone (docs/protocol.md
    /// §12.3). What is left of it finishes in the background.
    pub fn abandon(self) {
        match self {
            Link::Quic(t) => t.abandon(),
            Link::Tcp(t) => {
                tokio::spawn(t.abandon());
            }
        }
    }
}

/// Why a connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Quic(#[from] quic::ConnectFailure),
    #[error(transparent)]
    Tcp(std::io::Error),
    #[error("timed out")]
    TimedOut,
}

/// Connects to `addr` over `transport` as a client.
pub async fn connect(
    transport: TransportKind,
    addr: SocketAddr,
    client_tls: rustls::ClientConfig,
    limits: &Limits,
) -> Result<(Link, PeerInfo), ConnectError> {
    match transport {
        TransportKind::Quic => {
            let (t, peer) = quic::connect(addr, client_tls, limits).await?;
            Ok((Link::Quic(t), peer))
        }
        TransportKind::Tcp => {
            let (t, peer) = tcp::connect(addr, client_tls, limits)
                .await
                .map_err(ConnectError::Tcp)?;
            Ok((Link::Tcp(Box::new(t)), peer))
        }
    }
}

impl Transport for Link {
    fn send(&mut self, id: MessageId, body: Bytes) {
        match self {
            Link::Quic(t) => t.send(id, body),
            Link::Tcp(t) => t.send(id, body),
        }
    }

    fn ack(&mut self, id: MessageId) {
        match self {
            Link::Quic(t) => t.ack(id),
            Link::Tcp(t) => t.ack(id),
        }
    }

    fn reject(&mut self, id: MessageId, code: u64, reason: &str) {
        match self {
            Link::Quic(t) => t.reject(id, code, reason),
            Link::Tcp(t) => t.reject(id, code, reason),
        }
    }

    fn flush(&mut self) {
        match self {
            Link::Quic(t) => t.flush(),
            Link::Tcp(t) => t.flush(),
        }
    }

    fn send_control(&mut self, frame: Frame) {
        match self {
            Link::Quic(t) => t.send_control(frame),
            Link::Tcp(t) => t.send_control(frame),
        }
    }

    fn set_idle_timeout(&mut self, idle: Duration) {
        match self {
            Link::Quic(t) => t.set_idle_timeout(idle),
            Link::Tcp(t) => t.set_idle_timeout(idle),
        }
    }

    async fn hold(&mut self) -> std::convert::Infallible {
        match self {
            Link::Quic(t) => t.hold().await,
            Link::Tcp(t) => t.hold().await,
        }
    }

    async fn next_event(&mut self) -> Event {
        match self {
            Link::Quic(t) => t.next_event().await,
            Link::Tcp(t) => t.next_event().await,
        }
    }

    async fn close(&mut self, code: u64, reason: &str) {
        match self {
            Link::Quic(t) => t.close(code, reason).await,
            Link::Tcp(t) => t.close(code, reason).await,
        }
    }

    async fn finish(self) {
        match self {
            Link::Quic(t) => t.finish().await,
            Link::Tcp(t) => t.finish().await,
        }
    }
}
