//! What the client remembers about reaching each server, in `reach` in its
//! home: the last round-trip time (it sets QUIC's head start, 1.5 × that
//! within 100 ms … 2 s, docs/protocol.md §13), and whether QUIC went
//! unanswered from this local network, so that the next attempts start TCP
//! together with QUIC for a while (5 minutes, doubling each time QUIC fails
//! again once it is tried first again), as browsers do.
//!
//! One line per server and local address: `HOST:PORT LOCAL-IP RTT-µs
//! TCP-TOGETHER-UNTIL BACKOFF-s` (the times in seconds since the epoch).
//! It is a hint: a line lost to two clients writing at once costs one
//! slower connect, so the file is replaced atomically but not locked. It is
//! read and written as the other files of the home are
//! ([`crate::trust::files`]): a link or a file another user could have
//! written is ignored (with a warning), never followed.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, warn};

use crate::trust::files::{self, FileError, Kind, Links};

/// The file, in the client's home.
pub(super) const FILE_NAME: &str = "reach";

/// QUIC's head start without a remembered round-trip time.
pub(super) const DEFAULT_DELAY: Duration = Duration::from_millis(250);
const MIN_DELAY: Duration = Duration::from_millis(100);
const MAX_DELAY: Duration = Duration::from_secs(2);

/// How long TCP starts together with QUIC after QUIC first went
/// unanswered; doubled each time it goes unanswered again.
const FIRST_BACKOFF: Duration = Duration::from_secs(5 * 60);
/// The longest that gets.
const MAX_BACKOFF: Duration = Duration::from_secs(24 * 60 * 60);

/// Lines kept at most (the oldest go first).
const MAX_LINES: usize = 256;

pub(super) struct Memory {
    path: PathBuf,
}

/// What is remembered about one server from one local network.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Entry {
    pub rtt: Option<Duration>,
    /// Until when TCP starts together with QUIC (seconds since the epoch).
    pub together_until: u64,
    /// How long the next such period lasts.
    pub backoff: Duration,
}

impl Entry {
    /// QUIC's head start over TCP.
    pub fn delay(&self) -> Duration {
        self.rtt.map_or(DEFAULT_DELAY, |rtt| {
            (rtt * 3 / 2).clamp(MIN_DELAY, MAX_DELAY)
        })
    }

    /// Whether TCP should start together with QUIC now.
    pub fn together(&self) -> bool {
        now() < self.together_until
    }
}

/// Where a server is remembered: its name and our address towards it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Key {
    host: String,
    local: IpAddr,
}

impl Key {
    /// `host` as known_hosts names it; the local address is the one the
    /// system would use to reach `server` (found without sending anything).
    pub fn new(host: &str, server: SocketAddr) -> Option<Key> {
        let any: SocketAddr = if server.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(any).ok()?;
        socket.connect(server).ok()?;
        let local = socket.local_addr().ok()?.ip();
        Some(Key {
            host: host.to_string(),
            local,
        })
    }
}

impl Memory {
    pub fn in_home(home: &Path) -> Memory {
        Memory {
            path: home.join(FILE_NAME),
        }
    }

    /// What is remembered for `key` (nothing, if the file is missing or
    /// unreadable).
    pub fn recall(&self, key: &Key) -> Entry {
        self.lines()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, e)| e)
            .unwrap_or_default()
    }

    /// Records how reaching the server went: the round-trip time seen, and
    /// whether QUIC went unanswered.
    pub fn note(&self, key: &Key, rtt: Duration, quic_unanswered: bool) {
        let mut lines = self.lines();
        let old = lines
            .iter()
            .position(|(k, _)| k == key)
            .map(|i| lines.remove(i).1)
            .unwrap_or_default();
        let mut entry = Entry {
            rtt: Some(rtt),
            ..Entry::default()
        };
        if quic_unanswered {
            if old.together() {
                // Within a period: it is not extended, so that QUIC is
                // tried first again when it ends (docs/protocol.md §13).
                entry.together_until = old.together_until;
                entry.backoff = old.backoff;
            } else {
                // QUIC was tried first (again) and did not answer: the
                // next period is twice as long as the last.
                entry.backoff = if old.backoff.is_zero() {
                    FIRST_BACKOFF
                } else {
                    (old.backoff * 2).min(MAX_BACKOFF)
                };
                entry.together_until = now() + entry.backoff.as_secs();
            }
        }
        lines.push((key.clone(), entry));
        let skip = lines.len().saturating_sub(MAX_LINES);
        let text: String = lines
            .iter()
            .skip(skip)
            .map(|(k, e)| {
                format!(
                    "{} {} {} {} {}\n",
                    k.host,
                    k.local,
                    e.rtt.map_or(0, |r| r.as_micros()),
                    e.together_until,
                    e.backoff.as_secs()
                )
            })
            .collect();
        let write = || -> Result<(), FileError> {
            if let Some(dir) = self.path.parent() {
                files::ensure_dir(dir)?;
            }
            files::write(&self.path, text.as_bytes(), 0o600)
        };
        if let Err(e) = write() {
            debug!("{e}");
        }
    }

    fn lines(&self) -> Vec<(Key, Entry)> {
        let bytes = match files::read(&self.path, Kind::Public, Links::Refuse) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Vec::new(),
            Err(e @ FileError::Io { .. }) => {
                debug!("{e}");
                return Vec::new();
            }
            // Only a hint: the chat goes on without it, but the user hears
            // that something in the home is wrong.
            Err(e) => {
                warn!("{e}; going on without it");
                return Vec::new();
            }
        };
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(parse)
            .collect()
    }
}

fn parse(line: &str) -> Option<(Key, Entry)> {
    let mut f = line.split_whitespace();
    let host = f.next()?.to_string();
    let local = f.next()?.parse().ok()?;
    let rtt_us: u64 = f.next()?.parse().ok()?;
    let together_until = f.next()?.parse().ok()?;
    let backoff = Duration::from_secs(f.next()?.parse().ok()?);
    let rtt = (rtt_us > 0).then(|| Duration::from_micros(rtt_us));
    Some((
        Key { host, local },
        Entry {
            rtt,
            together_until,
            backoff,
        },
    ))
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("chat-reach-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn the_head_start_follows_the_round_trip_time_within_bounds() {
        let e = |ms| Entry {
            rtt: Some(Duration::from_millis(ms)),
            ..Entry::default()
        };
        assert_eq!(Entry::default().delay(), DEFAULT_DELAY);
        assert_eq!(e(1).delay(), MIN_DELAY);
        assert_eq!(e(200).delay(), Duration::from_millis(300));
        assert_eq!(e(5000).delay(), MAX_DELAY);
    }

    #[test]
    fn quic_unanswered_starts_tcp_together_and_the_period_doubles() {
        let dir = home("backoff");
        let memory = Memory::in_home(&dir);
        let key = Key::new("localhost:7200", "127.0.0.1:7200".parse().unwrap()).unwrap();
        assert_eq!(memory.recall(&key), Entry::default());
        memory.note(&key, Duration::from_millis(2), true);
        let first = memory.recall(&key);
        assert!(first.together());
        assert_eq!(first.backoff, FIRST_BACKOFF);
        // Still within the period: it does not grow.
        memory.note(&key, Duration::from_millis(2), true);
        assert_eq!(memory.recall(&key).backoff, FIRST_BACKOFF);
        // The period passed, QUIC was tried first and failed again.
        let text = format!(
            "{} {} 2000 0 {}\n",
            key.host,
            key.local,
            FIRST_BACKOFF.as_secs()
        );
        std::fs::write(&memory.path, text).unwrap();
        memory.note(&key, Duration::from_millis(2), true);
        assert_eq!(memory.recall(&key).backoff, FIRST_BACKOFF * 2);
        // QUIC answered: back to QUIC first.
        memory.note(&key, Duration::from_millis(3), false);
        let e = memory.recall(&key);
        assert!(!e.together());
        assert_eq!(e.rtt, Some(Duration::from_millis(3)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
