//! Where QUIC connections come from: the server's endpoint and its
//! handshakes, the client's connect, and the QUIC settings both use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{ConnectionError, VarInt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use super::QuicTransport;
use crate::protocol::codec::Version;
use crate::protocol::{clip_reason, close_code};
use crate::transport::{Limits, PeerInfo, Side, TransportKind, handshake, listener};
use crate::trust::identity::Identity;
use crate::trust::tls;
use crate::ui::render::sanitize_line;

/// Concurrent unidirectional streams we grant the peer (the protocol asks for
/// at least 64; quinn's default of 100 measured best).
const MAX_UNI_STREAMS: u32 = 100;

/// Bytes a server takes in from a connection before it is admitted (chat/2:
/// before its HELLO), all streams together: a stranger's connection cannot
/// make it hold more (QUIC's default is no connection-wide bound at all).
/// Admission lifts it ([`QuicTransport::admitted`](super::QuicTransport)).
const BEFORE_ADMISSION_WINDOW: u32 = 256 * 1024;

pub(super) fn transport_config(limits: &Limits) -> Result<quinn::TransportConfig, QuicSetupError> {
    let mut config = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(limits.idle_timeout)
        .map_err(|_| QuicSetupError::IdleTimeout(limits.idle_timeout))?;
    config
        .max_concurrent_bidi_streams(VarInt::from_u32(0))
        .max_concurrent_uni_streams(VarInt::from_u32(MAX_UNI_STREAMS))
        .max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(limits.idle_timeout / 3));
    Ok(config)
}

/// Errors setting up a QUIC endpoint.
#[derive(Debug, thiserror::Error)]
pub enum QuicSetupError {
    #[error("idle timeout {0:?} is out of range")]
    IdleTimeout(Duration),
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("TLS configuration is not usable for QUIC: {0}")]
    Crypto(String),
    #[error("cannot bind UDP {addr}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A server endpoint: one UDP socket, any number of handshakes.
pub struct Listener {
    endpoint: quinn::Endpoint,
    handshake_timeout: Duration,
}

impl Listener {
    pub fn bind(
        addr: SocketAddr,
        identity: &Identity,
        limits: &Limits,
        handshake_timeout: Duration,
    ) -> Result<Self, QuicSetupError> {
        let crypto =
            quinn::crypto::rustls::QuicServerConfig::try_from(tls::server_config(identity)?)
                .map_err(|e| QuicSetupError::Crypto(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = transport_config(limits)?;
        transport.receive_window(VarInt::from_u32(BEFORE_ADMISSION_WINDOW));
        config.transport_config(Arc::new(transport));
        let endpoint = quinn::Endpoint::server(config, addr)
            .map_err(|source| QuicSetupError::Bind { addr, source })?;
        Ok(Listener {
            endpoint,
            handshake_timeout,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Accepts connections forever, completing each handshake in its own task
    /// (so a stalled client holds up no one) and passing finished ones on.
    pub fn spawn_acceptor(&self, tx: mpsc::Sender<listener::Handshaken>) -> JoinHandle<()> {
        let endpoint = self.endpoint.clone();
        let timeout = self.handshake_timeout;
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let from = incoming.remote_address();
                    match tokio::time::timeout(timeout, handshake(incoming)).await {
                        Ok(Ok(conn)) => {
                            let _ = tx.send(listener::Handshaken::Quic(conn)).await;
                        }
                        Ok(Err(e)) => warn!(
                            peer = %from,
                            "QUIC handshake failed: {}",
                            sanitize_line(&e.to_string())
                        ),
                        Err(_) => warn!(peer = %from, "QUIC handshake timed out"),
                    }
                });
            }
        })
    }

    /// Closes every connection and gives the CONNECTION_CLOSE frames a moment
    /// to leave.
    pub async fn shutdown(&self) {
        self.endpoint.close(
            varint(close_code::GOING_AWAY),
            b"the server is shutting down",
        );
        let _ = tokio::time::timeout(Duration::from_secs(1), self.endpoint.wait_idle()).await;
    }
}

async fn handshake(incoming: quinn::Incoming) -> Result<Handshaken, ConnectionError> {
    let conn = incoming.accept()?.await?;
    let Ok(version) = handshake::check_alpn(alpn(&conn).as_deref()) else {
        conn.close(
            varint(close_code::PROTOCOL_ERROR),
            b"ALPN chat/2 or chat/1 required",
        );
        return Err(ConnectionError::LocallyClosed);
    };
    let peer = peer_info(&conn, version);
    Ok(Handshaken { conn, peer })
}

/// The ALPN protocol the handshake selected.
fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()
        .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
        .and_then(|d| d.protocol)
}

fn peer_info(conn: &quinn::Connection, version: Version) -> PeerInfo {
    let certs = conn.peer_identity().and_then(|id| {
        id.downcast::<Vec<rustls_pki_types::CertificateDer<'static>>>()
            .ok()
    });
    handshake::peer_info(
        conn.remote_address(),
        certs.as_deref().map(Vec::as_slice),
        TransportKind::Quic,
        version,
    )
}

/// A QUIC connection whose handshake is done, not yet admitted to a chat.
pub struct Handshaken {
    conn: quinn::Connection,
    peer: PeerInfo,
}

impl Handshaken {
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// Admits the peer: chat/1 starts on this connection.
    pub async fn start(self, limits: Limits) -> QuicTransport {
        QuicTransport::start(self.conn, None, limits, &self.peer, Side::Server).await
    }

    /// Turns the peer away with a close code and reason phrase.
    pub fn refuse(self, code: u64, reason: &str) {
        self.conn
            .close(varint(code), clip_reason(reason).as_bytes());
    }
}

pub(super) fn varint(v: u64) -> VarInt {
    VarInt::from_u64(v).unwrap_or(VarInt::MAX)
}

/// Connects to `addr` as a client.
pub async fn connect(
    addr: SocketAddr,
    client_tls: rustls::ClientConfig,
    limits: &Limits,
) -> Result<(QuicTransport, PeerInfo), ConnectFailure> {
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(client_tls)
        .map_err(|e| ConnectFailure::Setup(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(Arc::new(
        transport_config(limits).map_err(|e| ConnectFailure::Setup(e.to_string()))?,
    ));
    let local: SocketAddr = if addr.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let endpoint = quinn::Endpoint::client(local).map_err(ConnectFailure::Io)?;
    // The certificate is checked by fingerprint, so the name only has to be
    // syntactically valid.
    let connecting = endpoint
        .connect_with(config, addr, "chat")
        .map_err(|e| ConnectFailure::Setup(e.to_string()))?;
    let conn = connecting.await.map_err(ConnectFailure::Quic)?;
    let version = match handshake::check_alpn(alpn(&conn).as_deref()) {
        Ok(v) => v,
        Err(e) => {
            conn.close(
                varint(close_code::PROTOCOL_ERROR),
                b"ALPN chat/2 or chat/1 required",
            );
            return Err(e.into());
        }
    };
    let peer = peer_info(&conn, version);
    let transport =
        QuicTransport::start(conn, Some(endpoint), limits.clone(), &peer, Side::Client).await;
    Ok((transport, peer))
}

/// Why a QUIC connection attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectFailure {
    #[error("{0}")]
    Setup(String),
    #[error("{0}")]
    Io(std::io::Error),
    #[error("{0}")]
    Quic(ConnectionError),
    #[error(transparent)]
    Alpn(#[from] handshake::AlpnMismatch),
}
