//! Where QUIC connections come from: the server's endpoint and its
//! handshakes (address validation with Retry, a budget of handshakes in
//! progress, a deadline), the client's connect, and the QUIC
//! settings both use.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{ConnectionError, VarInt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::QuicTransport;
use crate::protocol::codec::Version;
use crate::protocol::{clip_reason, close_code};
use crate::transport::handshakes::Budget;
use crate::transport::strangers::{Event, StrangerLog};
use crate::transport::{Limits, PeerInfo, Side, TransportKind, handshake, listener, socket};
use crate::trust::identity::Identity;
use crate::trust::tls;

/// QUIC handshakes allowed in progress at once (each holds ~50 KB in
/// quinn); when full, the oldest is cut short (docs/protocol.md §14).
pub const MAX_HANDSHAKES: usize = 1024;

/// QUIC handshakes one source (IPv4 address, IPv6 /64) may have in
/// progress; only validated addresses get that far (see [`RETRY_THRESHOLD`]).
pub const MAX_HANDSHAKES_PER_SOURCE: usize = 32;

/// Handshakes in progress past which a peer whose address is not validated
/// is answered with a Retry (a stateless packet of ~100 bytes) instead of a
/// handshake: a flood from spoofed addresses then costs no state at all,
/// and an honest client pays one more round trip.
///
/// Zero: every unvalidated peer proves its address first. With any other
/// value a lone Initial from an address that never answers (1,200 B) drew
/// 3,738 B back (3.12×, over RFC 9000's 3×): quinn's first flight (three
/// full datagrams, as its own anti-amplification check lets through) and a
/// 138 B packet on top. One round trip per connection is the price.
pub const RETRY_THRESHOLD: usize = 0;

/// Connection attempts quinn holds before we look at them; beyond, it
/// refuses them itself. Our acceptor decides at once, so this is only
/// reached if it falls behind.
const MAX_INCOMING: usize = 4096;

/// Bytes quinn buffers for all those attempts together, beyond each one's
/// first datagram (quinn's default is 100 MiB).
const INCOMING_BUFFER_TOTAL: u64 = 4 * 1024 * 1024;

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
    #[error("cannot bind UDP {addr} ({families})", families = socket::families(*addr))]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A server endpoint: one UDP socket, any number of handshakes.
pub struct Listener {
    endpoint: quinn::Endpoint,
    handshake_timeout: Duration,
    /// [`RETRY_THRESHOLD`]. A value, not the constant, in the comparison:
    /// at 0 the comparison is always true, which is the point, and a lint
    /// would reject it written with the constant.
    retry_threshold: usize,
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
        config
            .max_incoming(MAX_INCOMING)
            .incoming_buffer_size_total(INCOMING_BUFFER_TOTAL);
        let endpoint = socket::udp_socket(addr)
            .and_then(|udp| {
                quinn::Endpoint::new(
                    quinn::EndpointConfig::default(),
                    Some(config),
                    udp,
                    Arc::new(quinn::TokioRuntime),
                )
            })
            .map_err(|source| QuicSetupError::Bind { addr, source })?;
        Ok(Listener {
            endpoint,
            handshake_timeout,
            retry_threshold: RETRY_THRESHOLD,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Accepts connections forever, completing each handshake in its own task
    /// (so a stalled client holds up no one) and passing finished ones on.
    ///
    /// Past [`RETRY_THRESHOLD`] handshakes in progress (0: always) a peer
    /// must first prove its address with a Retry; validated peers share the
    /// budget, in which the oldest handshake makes room for the newest.
    pub fn spawn_acceptor(
        &self,
        tx: mpsc::Sender<listener::Handshaken>,
        log: Arc<StrangerLog>,
    ) -> JoinHandle<()> {
        let endpoint = self.endpoint.clone();
        let (timeout, retry_threshold) = (self.handshake_timeout, self.retry_threshold);
        let budget = Budget::new(MAX_HANDSHAKES, MAX_HANDSHAKES_PER_SOURCE);
        tokio::spawn(async move {
            while let Some(incoming) = endpoint.accept().await {
                let from = incoming.remote_address();
                if !incoming.remote_address_validated() && budget.len() >= retry_threshold {
                    // A peer that cannot receive at its address never comes
                    // back with the token; one that can pays a round trip.
                    if let Err(e) = incoming.retry() {
                        e.into_incoming().refuse();
                        log.record(Event::QuicRefused, from, "QUIC connection attempt refused");
                    } else {
                        log.record(
                            Event::QuicRetried,
                            from,
                            "QUIC connection attempt answered with Retry",
                        );
                    }
                    continue;
                }
                let (mut slot, _) = budget.admit(from.ip());
                let (tx, log) = (tx.clone(), log.clone());
                tokio::spawn(async move {
                    let outcome = tokio::select! {
                        r = tokio::time::timeout(timeout, handshake(incoming)) => r,
                        () = slot.evicted() => {
                            log.record(Event::QuicEvicted, from, "QUIC handshake cut short: too many in progress, this one the oldest");
                            return;
                        }
                    };
                    drop(slot);
                    match outcome {
                        Ok(Ok(conn)) => {
                            let _ = tx.send(listener::Handshaken::Quic(conn)).await;
                        }
                        Ok(Err(e)) => log.record(
                            Event::QuicFailed,
                            from,
                            &format!("QUIC handshake failed: {e}"),
                        ),
                        Err(_) => log.record(Event::QuicTimedOut, from, "QUIC handshake timed out"),
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
