//! `chat`: a one-on-one terminal chat over QUIC, with TLS over TCP as the
//! fallback for networks that block UDP.
//!
//! Layers, bottom up:
//! - [`protocol`]: the wire format (varints, frames, codes), no I/O;
//! - [`trust`]: identities, fingerprints, TLS configurations that verify
//!   peers by fingerprint, known hosts and allow lists;
//! - [`transport`]: the `Transport` trait, its QUIC and TCP implementations
//!   and the server's listener for both;
//! - [`session`]: one chat's state (numbering, acknowledgements, round-trip
//!   times) and the loop that drives it over a connection;
//! - [`ui`]: what the user types and sees (line editor, plain lines, JSON);
//! - [`server`], [`client`] and [`cli`]: the program's two modes and its
//!   command line.

pub mod cli;
pub mod client;
pub mod interfaces;
pub mod protocol;
pub mod server;
pub mod session;
pub mod transport;
pub mod trust;
pub mod ui;

pub use transport::TransportKind;
