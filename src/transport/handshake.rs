//! What both transports check once a TLS handshake is done: which protocol
//! the two sides agreed on (ALPN `chat/2` or `chat/1`), and who the peer is
//! (the fingerprint of the certificate it presented, if any).

use std::net::SocketAddr;

use rustls_pki_types::CertificateDer;

use super::{PeerInfo, TransportKind};
use crate::protocol::codec::Version;
use crate::trust::identity::Fingerprint;
use crate::trust::tls;

/// The handshake ended without ALPN `chat/2` or `chat/1` (docs/protocol.md
/// §6, §7).
#[derive(Debug, thiserror::Error)]
#[error("the peer did not agree to ALPN chat/2 or chat/1")]
pub struct AlpnMismatch;

/// The protocol the handshake selected. rustls already refuses a peer that
/// offers only other protocols; this catches one that offered none.
pub(crate) fn check_alpn(selected: Option<&[u8]>) -> Result<Version, AlpnMismatch> {
    match selected {
        Some(tls::ALPN_V2) => Ok(Version::V2),
        Some(tls::ALPN_V1) => Ok(Version::V1),
        _ => Err(AlpnMismatch),
    }
}

/// The peer as the rest of the program knows it.
pub(crate) fn peer_info(
    addr: SocketAddr,
    certs: Option<&[CertificateDer<'_>]>,
    transport: TransportKind,
    version: Version,
) -> PeerInfo {
    PeerInfo {
        addr: canonical(addr),
        fingerprint: certs.and_then(|c| c.first()).map(|c| Fingerprint::of(c)),
        transport,
        version,
    }
}

/// Shows an IPv4 peer reached through a dual-stack socket as plain IPv4
/// (`127.0.0.1`, not `::ffff:127.0.0.1`).
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
