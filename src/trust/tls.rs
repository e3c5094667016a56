//! TLS 1.3 configuration shared by both transports: ALPN `chat/2` and
//! `chat/1`, and
//! certificate verification by fingerprint instead of by certificate authority.
//!
//! Pinning replaces only the chain-of-trust check. The handshake signature is
//! still verified with rustls' own `verify_tls13_signature`, so a peer must
//! hold the private key of the certificate it shows.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::trust::identity::{Fingerprint, Identity};

/// The ALPN protocol id of chat/1.
pub const ALPN_V1: &[u8] = b"chat/1";
/// The ALPN protocol id of chat/2 (docs/protocol.md §12), preferred.
pub const ALPN_V2: &[u8] = b"chat/2";

/// What we offer and accept, most preferred first.
fn alpn() -> Vec<Vec<u8>> {
    vec![ALPN_V2.to_vec(), ALPN_V1.to_vec()]
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How a client decides whether to trust the server's certificate.
#[derive(Debug, Clone)]
pub enum ServerTrust {
    /// Only a certificate with this fingerprint.
    Pinned(Fingerprint),
    /// Any certificate whose handshake signature is valid; the caller checks
    /// the fingerprint afterwards (trust on first use) or explicitly asked for
    /// no check (`--insecure`).
    AnyValidSignature,
}

/// Verifies the server's certificate by fingerprint and remembers what it saw,
/// so that a refusal can be explained with both values.
#[derive(Debug)]
pub struct FingerprintVerifier {
    trust: ServerTrust,
    algorithms: WebPkiSupportedAlgorithms,
    seen: Mutex<Option<Fingerprint>>,
}

impl FingerprintVerifier {
    pub fn new(trust: ServerTrust) -> Arc<Self> {
        Arc::new(FingerprintVerifier {
            trust,
            algorithms: provider().signature_verification_algorithms,
            seen: Mutex::new(None),
        })
    }

    /// The fingerprint of the last certificate the server presented.
    pub fn seen(&self) -> Option<Fingerprint> {
        self.seen.lock().ok().and_then(|s| *s)
    }
}

impl ServerCertVerifier for FingerprintVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fp = Fingerprint::of(end_entity);
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(fp);
        }
        match &self.trust {
            ServerTrust::Pinned(want) if *want != fp => Err(rustls::Error::General(format!(
                "server fingerprint {fp} does not match the pinned {want}"
            ))),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable in practice: every config here is TLS 1.3 only.
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Lets a client present any self-signed certificate (or none). Whether that
/// identity is welcome is decided after the handshake, by fingerprint, so the
/// server can answer with a chat/1 close code instead of a bare TLS alert.
#[derive(Debug)]
struct AnyClientCert {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Server side: TLS 1.3 only, ALPN `chat/2` or `chat/1` (the server's
/// preference decides, so chat/2 when the client offers it), optional client
/// certificates.
pub fn server_config(identity: &Identity) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(AnyClientCert {
        algorithms: provider.signature_verification_algorithms,
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.key.clone_key())?;
    config.alpn_protocols = alpn();
    Ok(config)
}

/// Client side: TLS 1.3 only, ALPN `chat/2` then `chat/1`, the given
/// verifier, and the client's own certificate when it has one.
pub fn client_config(
    verifier: Arc<FingerprintVerifier>,
    identity: Option<&Identity>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder.with_client_auth_cert(vec![id.cert.clone()], id.key.clone_key())?,
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn();
    Ok(config)
}
