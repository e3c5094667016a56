//! Reaching the server (docs/protocol.md §13): QUIC first, TCP too once QUIC
//! has had a short head start or has failed; the addresses of a host name
//! interleaved by family as RFC 8305 does; the first handshake to finish
//! wins, and the others are closed without a frame of the chat protocol.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::debug;

use crate::transport::{self, ConnectError, Limits, Link, PeerInfo, TransportKind};
use crate::ui::render::sanitize_line;

/// How long one attempt may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long QUIC attempts still get once every TCP attempt was refused (at
/// least; 4 × the head start if that is longer): enough for QUIC to resend
/// a lost first packet (about 1 s) and be answered.
const QUIC_GRACE: Duration = Duration::from_secs(2);

/// What to try.
pub(super) struct Plan {
    /// The transports allowed, QUIC first.
    pub kinds: Vec<TransportKind>,
    pub addrs: Vec<SocketAddr>,
    /// The head start of one attempt over the next.
    pub delay: Duration,
    /// Start TCP together with QUIC: QUIC did not answer on this network
    /// recently.
    pub together: bool,
    /// How long one attempt may take ([`CONNECT_TIMEOUT`] for a first
    /// connection).
    pub timeout: Duration,
}

/// The attempt that won.
pub(super) struct Won {
    pub link: Link,
    pub peer: PeerInfo,
    /// Why not QUIC, when TCP won over a QUIC attempt.
    pub fallback: Option<String>,
    /// Whether a QUIC attempt was started and did not answer in time (it
    /// failed, or TCP won while it waited).
    pub quic_unanswered: bool,
    /// Its handshake, from its start.
    pub took: Duration,
}

/// One failed attempt.
#[derive(Debug)]
pub(super) struct Failure {
    pub kind: TransportKind,
    pub addr: SocketAddr,
    pub error: AttemptError,
}

#[derive(Debug)]
pub(super) enum AttemptError {
    /// No answer within the plan's timeout (or before the race gave up).
    NoAnswer,
    /// TCP: nothing listens there.
    Refused,
    Other(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.error {
            AttemptError::NoAnswer => write!(f, "{} over {}: no answer", self.addr, self.kind),
            AttemptError::Refused => {
                write!(f, "{} over {}: connection refused", self.addr, self.kind)
            }
            AttemptError::Other(e) => write!(f, "{} over {}: {e}", self.addr, self.kind),
        }
    }
}

/// The order of the attempts: addresses alternating between IPv6 and IPv4
/// (starting with the family of the first), and for each, the transports
/// in order.
pub(super) fn attempts(plan: &Plan) -> Vec<(TransportKind, SocketAddr)> {
    interleave(&plan.addrs)
        .into_iter()
        .flat_map(|addr| plan.kinds.iter().map(move |&k| (k, addr)))
        .collect()
}

fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return Vec::new();
    };
    let (mut same, mut other): (Vec<_>, Vec<_>) = addrs
        .iter()
        .copied()
        .partition(|a| a.is_ipv6() == first.is_ipv6());
    same.reverse();
    other.reverse();
    let mut out = Vec::with_capacity(addrs.len());
    while let Some(a) = same.pop() {
        out.push(a);
        if let Some(b) = other.pop() {
            out.push(b);
        }
    }
    out.extend(other.into_iter().rev());
    out
}

/// What an attempt task gives back: its index and how it went.
type Outcome = (usize, Duration, Result<(Link, PeerInfo), AttemptError>);

/// Runs the race. `started` hears of each attempt as it starts.
pub(super) async fn race(
    plan: &Plan,
    tls: &rustls::ClientConfig,
    limits: &Limits,
    mut started: impl FnMut(TransportKind, SocketAddr),
) -> Result<Won, Vec<Failure>> {
    let list = attempts(plan);
    let mut tasks: JoinSet<Outcome> = JoinSet::new();
    let mut started_at: Vec<Instant> = Vec::with_capacity(list.len());
    let mut failures = Vec::new();
    // Which attempt each task is, for one that panics.
    let mut ids = std::collections::HashMap::new();
    let mut next = 0;
    let mut next_due = Instant::now();
    // Once every TCP attempt was refused and only QUIC ones are left, they
    // get this long: a server that refuses TCP rarely answers QUIC late.
    let mut give_up_at: Option<Instant> = None;
    loop {
        let now = Instant::now();
        if next < list.len() && (tasks.is_empty() || now >= next_due) {
            let (kind, addr) = list[next];
            let (tls, limits, timeout) = (tls.clone(), limits.clone(), plan.timeout);
            let index = next;
            let handle = tasks.spawn(async move {
                let t0 = Instant::now();
                let result =
                    tokio::time::timeout(timeout, transport::connect(kind, addr, tls, &limits))
                        .await;
                let result = match result {
                    Ok(Ok(won)) => Ok(won),
                    Ok(Err(e)) => Err(classify(&e)),
                    Err(_) => Err(AttemptError::NoAnswer),
                };
                (index, t0.elapsed(), result)
            });
            ids.insert(handle.id(), index);
            started(kind, addr);
            started_at.push(now);
            next += 1;
            let same_addr_next = list.get(next).is_some_and(|&(_, a)| a == addr);
            next_due = if plan.together && same_addr_next {
                now
            } else {
                now + plan.delay
            };
            continue;
        }
        if tasks.is_empty() {
            return Err(failures);
        }
        let wake = if next < list.len() {
            Some(next_due)
        } else {
            give_up_at
        };
        tokio::select! {
            joined = tasks.join_next() => {
                let Some(joined) = joined else { continue };
                let (index, took, result) = match joined {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        // Only a panic ends an attempt this way (none is
                        // aborted while the race runs); it still counts.
                        debug!("connection attempt failed: {e}");
                        if let Some(&(kind, addr)) = ids.get(&e.id()).and_then(|&i| list.get(i)) {
                            failures.push(Failure { kind, addr, error: AttemptError::Other(e.to_string()) });
                        }
                        continue;
                    }
                };
                let (kind, addr) = list[index];
                match result {
                    Ok((link, peer)) => {
                        let (fallback, quic_unanswered) =
                            why_not_quic(plan, &list, &started_at, index, &failures);
                        abandon_the_rest(tasks).await;
                        return Ok(Won { link, peer, fallback, quic_unanswered, took });
                    }
                    Err(error) => {
                        debug!(%addr, transport = %kind, "attempt failed: {error:?}");
                        failures.push(Failure { kind, addr, error });
                        // The next attempt need not wait for its turn.
                        next_due = Instant::now();
                        if next >= list.len() && only_quic_left(&list, &failures) {
                            give_up_at.get_or_insert(Instant::now() + (plan.delay * 4).max(QUIC_GRACE));
                        }
                    }
                }
            }
            () = sleep_until_some(wake) => {
                if next >= list.len() && give_up_at.is_some_and(|at| Instant::now() >= at) {
                    for (kind, addr) in list.iter().copied().filter(|&(k, _)| k == TransportKind::Quic) {
                        if !failures.iter().any(|f| f.kind == kind && f.addr == addr) {
                            failures.push(Failure { kind, addr, error: AttemptError::NoAnswer });
                        }
                    }
                    tasks.abort_all();
                    return Err(failures);
                }
            }
        }
    }
}

/// Whether every TCP attempt failed because nothing listens (so the only
/// ones still running are QUIC's).
fn only_quic_left(list: &[(TransportKind, SocketAddr)], failures: &[Failure]) -> bool {
    let tcp = list
        .iter()
        .filter(|(k, _)| *k == TransportKind::Tcp)
        .count();
    tcp > 0
        && failures
            .iter()
            .filter(|f| f.kind == TransportKind::Tcp && matches!(f.error, AttemptError::Refused))
            .count()
            == tcp
}

/// When TCP won: why not QUIC, in words, and whether QUIC went unanswered.
fn why_not_quic(
    plan: &Plan,
    list: &[(TransportKind, SocketAddr)],
    started_at: &[Instant],
    winner: usize,
    failures: &[Failure],
) -> (Option<String>, bool) {
    let (kind, addr) = list[winner];
    if kind != TransportKind::Tcp {
        return (None, false);
    }
    let quic = list
        .iter()
        .position(|&(k, a)| k == TransportKind::Quic && a == addr);
    let Some(quic) = quic.filter(|&q| q < started_at.len()) else {
        return (None, false);
    };
    match failures
        .iter()
        .find(|f| f.kind == TransportKind::Quic && f.addr == addr)
    {
        Some(Failure {
            error: AttemptError::Other(e),
            ..
        }) => (Some(format!("QUIC failed: {e}")), true),
        _ if plan.together => (
            Some("QUIC has not answered from this network lately; both were tried at once".into()),
            true,
        ),
        _ => {
            let head = started_at[winner].saturating_duration_since(started_at[quic]);
            (
                Some(format!("no answer over QUIC after {} ms", head.as_millis())),
                true,
            )
        }
    }
}

/// Closes the attempts that lost: those still running are dropped, those
/// that finished too are closed without a frame of the chat protocol
/// (docs/protocol.md §12.3).
async fn abandon_the_rest(mut tasks: JoinSet<Outcome>) {
    tasks.abort_all();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((_, _, Ok((link, peer)))) = joined {
            debug!(peer = %peer.addr, "closing the connection that lost the race");
            link.abandon();
        }
    }
}

fn classify(e: &ConnectError) -> AttemptError {
    match e {
        ConnectError::Tcp(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            AttemptError::Refused
        }
        ConnectError::TimedOut => AttemptError::NoAnswer,
        other => AttemptError::Other(sanitize_line(&other.to_string())),
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn families_alternate_starting_with_the_first() {
        let addrs = [a("[::1]:1"), a("[::2]:1"), a("10.0.0.1:1"), a("[::3]:1")];
        assert_eq!(
            interleave(&addrs),
            vec![a("[::1]:1"), a("10.0.0.1:1"), a("[::2]:1"), a("[::3]:1")]
        );
        let v4first = [a("10.0.0.1:1"), a("10.0.0.2:1"), a("[::1]:1")];
        assert_eq!(
            interleave(&v4first),
            vec![a("10.0.0.1:1"), a("[::1]:1"), a("10.0.0.2:1")]
        );
    }

    #[test]
    fn each_address_is_tried_over_quic_then_tcp() {
        let plan = Plan {
            kinds: vec![TransportKind::Quic, TransportKind::Tcp],
            addrs: vec![a("[::1]:7"), a("127.0.0.1:7")],
            delay: Duration::from_millis(250),
            together: false,
            timeout: CONNECT_TIMEOUT,
        };
        assert_eq!(
            attempts(&plan),
            vec![
                (TransportKind::Quic, a("[::1]:7")),
                (TransportKind::Tcp, a("[::1]:7")),
                (TransportKind::Quic, a("127.0.0.1:7")),
                (TransportKind::Tcp, a("127.0.0.1:7")),
            ]
        );
    }
}
