//! `chat`: a one-on-one terminal chat over QUIC, with TLS over TCP as the
//! fallback for networks that block UDP.
//!
//! Layers, bottom up:
//! - [`codec`]: varints and frames of the chat/1 wire protocol;
//! - [`identity`] and [`tls`]: self-signed certificates, fingerprints, and
//!   TLS 1.3 configurations that verify peers by fingerprint;
//! - [`transport`]: the `Transport` trait and its QUIC and TCP
//!   implementations;
//! - [`session`]: one chat (numbering, acknowledgements, round-trip times);
//! - [`input`], [`output`], [`terminal`] and [`render`]: what the user
//!   types and sees;
//! - [`server`], [`client`] and [`cli`]: the program's two modes and its
//!   command line.

pub mod allow;
pub mod body;
pub mod cli;
pub mod client;
pub mod codec;
pub mod identity;
pub mod input;
pub mod known_hosts;
pub mod output;
pub mod render;
pub mod server;
pub mod session;
pub mod terminal;
pub mod tls;
pub mod transport;
pub mod tty;
pub mod unconfirmed;

pub use transport::TransportKind;
