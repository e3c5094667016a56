//! What both transports check once a TLS handshake is done: that the two
//! sides agreed on chat/1 (ALPN), and who the peer is (the fingerprint of
//! the certificate it presented, if any).

use std::net::SocketAddr;

use rustls_pki_types::CertificateDer;

use super::{PeerInfo, TransportKind};
use crate::trust::identity::Fingerprint;
use crate::trust::tls;

/// The handshake ended without ALPN `chat/1` (docs/protocol.md §6, §7).
#[derive(Debug, thiserror::Error)]
#[error("the peer did not agree to ALPN chat/1")]
pub struct AlpnMismatch;

/// Fails unless the handshake selected ALPN `chat/1`. rustls already
/// refuses a peer that offers only other protocols; this catches one that
/// offered none.
pub(crate) fn check_alpn(selected: Option<&[u8]>) -> Result<(), AlpnMismatch> {
    if selected == Some(tls::ALPN) {
        Ok(())
    } else {
        Err(AlpnMismatch)
    }
}

/// The peer as the rest of the program knows it.
pub(crate) fn peer_info(
    addr: SocketAddr,
    certs: Option<&[CertificateDer<'_>]>,
    transport: TransportKind,
) -> PeerInfo {
    PeerInfo {
        addr: canonical(addr),
        fingerprint: certs.and_then(|c| c.first()).map(|c| Fingerprint::of(c)),
        transport,
    }
}

/// Shows an IPv4 peer reached through a dual-stack socket as plain IPv4
/// (`127.0.0.1`, not `::ffff:127.0.0.1`).
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}
