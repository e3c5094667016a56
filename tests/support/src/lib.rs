//! Shared helpers for the integration test suites (`tests/*/main.rs`): spawn
//! the real `chat` binary (server and client as separate processes), talk to
//! it through its `--json` stdin/stdout contract or on a pseudo-terminal, and
//! wait for events with generous timeouts.
//!
//! Every test is run for both transports through [`both_transports!`].
//! Suites import everything at once: `use support::*;`.

mod bin;
mod client;
mod conversation;
mod data;
mod homes;
pub mod netns;
mod peer;
mod process;
pub mod pty;
mod readdress;
mod server;
mod temp;
mod tmpfs;

use std::time::Duration;

pub use bin::chat_bin;
pub use client::*;
pub use conversation::*;
pub use data::*;
pub use homes::*;
pub use peer::*;
pub use process::{ChatProcess, Process, fd_count, proc_status_kib, rss_kib};
pub use server::*;
pub use temp::TempDir;
pub use tmpfs::Tmpfs;

/// Default timeout for one expected event. CI is a loaded 2-core machine
/// running a debug build, so this is deliberately generous.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Timeout for bulk work (thousands of messages, multi-MiB messages).
pub const LONG_TIMEOUT: Duration = Duration::from_secs(120);

/// The transport a test runs over: the program's own type, so that its
/// names on the command line and in events are the program's too.
pub use chat::TransportKind;

/// Generates one `#[test]` per transport for each listed function
/// `fn name(t: TransportKind)`: `quic::name` and `tcp::name`.
#[macro_export]
macro_rules! both_transports {
    ($($name:ident),* $(,)?) => {
        mod quic {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::TransportKind::Quic)
                }
            )*
        }
        mod tcp {
            $(
                #[test]
                fn $name() {
                    super::$name($crate::TransportKind::Tcp)
                }
            )*
        }
    };
}
