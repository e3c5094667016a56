//! Warnings about strangers (handshakes that failed, timed out or were cut
//! short, connection attempts answered with Retry or refused), rate limited.
//!
//! A flood makes thousands of these a second; written one by one they fill
//! a disk (1.1 MB/s measured) or push the chat off the screen. The first
//! [`BURST`] of each [`WINDOW`] are written as they happen, with the peer's
//! address; the rest are only counted, and one line at the end of the window
//! says how many of each there were ("312 TCP handshakes timed out in the
//! last 10 s"). Every one is still logged at debug level.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{debug, warn};

use crate::ui::render::sanitize_line;

/// How often the counts are summarised.
pub const WINDOW: Duration = Duration::from_secs(10);

/// Warnings written one by one in each window.
const BURST: usize = 50;

/// What happened to a stranger, as counted in a summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Event {
    TcpFailed,
    TcpTimedOut,
    TcpEvicted,
    QuicFailed,
    QuicTimedOut,
    QuicEvicted,
    /// Answered with Retry: the flood defence at work, not worth a line each.
    QuicRetried,
    /// Refused outright (validated but over budget, or no Retry possible).
    QuicRefused,
}

impl Event {
    /// The counted noun phrase, for `n` of them.
    fn phrase(self) -> &'static str {
        match self {
            Event::TcpFailed => "TLS handshakes failed",
            Event::TcpTimedOut => "TLS handshakes timed out",
            Event::TcpEvicted => "TLS handshakes cut short for newer ones",
            Event::QuicFailed => "QUIC handshakes failed",
            Event::QuicTimedOut => "QUIC handshakes timed out",
            Event::QuicEvicted => "QUIC handshakes cut short for newer ones",
            Event::QuicRetried => "QUIC connection attempts answered with Retry",
            Event::QuicRefused => "QUIC connection attempts refused",
        }
    }

    /// Whether each one is worth a warning of its own (within the burst).
    fn one_by_one(self) -> bool {
        !matches!(self, Event::QuicRetried | Event::QuicRefused)
    }
}

/// The rate limiter of one listener's warnings about strangers.
pub struct StrangerLog {
    window: Mutex<Window>,
}

struct Window {
    started: Instant,
    shown: usize,
    /// Events of this window not written one by one.
    held: BTreeMap<Event, u64>,
}

impl Default for StrangerLog {
    fn default() -> Self {
        StrangerLog {
            window: Mutex::new(Window {
                started: Instant::now(),
                shown: 0,
                held: BTreeMap::new(),
            }),
        }
    }
}

/// A peer's address as people read it: an IPv4 peer reached over a
/// dual-stack socket as plain IPv4 (`127.0.0.1:5000`, not
/// `[::ffff:127.0.0.1]:5000`).
pub fn plain(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

impl StrangerLog {
    /// Records `event` from `peer`; `detail` (network-controlled text) is
    /// sanitised before it is written.
    pub fn record(&self, event: Event, peer: SocketAddr, detail: &str) {
        let peer = plain(peer);
        let detail = sanitize_line(detail);
        debug!(peer = %peer, "{}: {detail}", event.phrase());
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.started.elapsed() >= WINDOW {
            Self::summarise(&mut w);
        }
        if event.one_by_one() && w.shown < BURST {
            w.shown += 1;
            drop(w);
            warn!(peer = %peer, "{detail}");
        } else {
            *w.held.entry(event).or_default() += 1;
        }
    }

    /// Writes the summary of a window that has ended; called periodically
    /// so that the last window of a flood is reported too.
    pub fn flush(&self) {
        let mut w = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        if w.started.elapsed() >= WINDOW {
            Self::summarise(&mut w);
        }
    }

    fn summarise(w: &mut Window) {
        if let Some(line) = summary(&w.held, w.started.elapsed()) {
            warn!("{line}");
        }
        w.held.clear();
        w.shown = 0;
        w.started = Instant::now();
    }
}

/// "312 TLS handshakes timed out, 20 QUIC … in the last 10 s", or nothing
/// when nothing was held back.
fn summary(held: &BTreeMap<Event, u64>, over: Duration) -> Option<String> {
    if held.is_empty() {
        return None;
    }
    let parts: Vec<String> = held
        .iter()
        .map(|(e, n)| format!("{n} {}", e.phrase()))
        .collect();
    Some(format!(
        "{} in the last {} s (not shown one by one)",
        parts.join(", "),
        over.as_secs().max(1)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_each_kind() {
        let mut held = BTreeMap::new();
        held.insert(Event::TcpTimedOut, 312);
        held.insert(Event::QuicRetried, 4);
        assert_eq!(
            summary(&held, Duration::from_secs(10)).as_deref(),
            Some(
                "312 TLS handshakes timed out, 4 QUIC connection attempts answered with Retry \
                 in the last 10 s (not shown one by one)"
            )
        );
        assert_eq!(summary(&BTreeMap::new(), WINDOW), None);
    }

    #[test]
    fn burst_then_counted() {
        let log = StrangerLog::default();
        let peer: SocketAddr = "[::ffff:10.0.0.1]:5000".parse().unwrap();
        assert_eq!(plain(peer).to_string(), "10.0.0.1:5000");
        for _ in 0..BURST + 7 {
            log.record(Event::TcpFailed, peer, "bad");
        }
        log.record(Event::QuicRetried, peer, "retry");
        let w = log.window.lock().unwrap();
        assert_eq!(w.shown, BURST);
        assert_eq!(w.held.get(&Event::TcpFailed), Some(&7));
        assert_eq!(w.held.get(&Event::QuicRetried), Some(&1));
    }
}
