//! Who is who: identities (self-signed certificates and their fingerprints),
//! the TLS configurations that verify peers by fingerprint, the client's
//! known hosts and the server's allow list.

pub mod allow;
pub mod files;
pub mod identity;
pub mod known_hosts;
pub mod tls;
