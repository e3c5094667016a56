//! Getting a lost chat back (docs/protocol.md §12.5): reconnect over the
//! same transports, with pauses growing from 100 ms to 2 s, for as long as
//! the server holds the chat, and open each connection with HELLO(token)
//! and our RECEIVED.
//!
//! It runs while the session is held ([`crate::session::Session::hold`]),
//! so the user's lines are taken meanwhile; it only needs what the session
//! had received, computed before.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{debug, info};

use super::race::{self, Plan};
use super::{Opened, Refused, Resume, open};
use crate::protocol::close_code;
use crate::transport::{Disconnect, Limits, Link, PeerInfo, Transport};
use crate::ui::output::{Output, Shown};
use crate::ui::render::sanitize_line;

/// The first pause between attempts; it doubles up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const MAX_PAUSE: Duration = Duration::from_secs(2);

/// How long one reconnect attempt may take. A handshake on a working path
/// takes a round trip or two; an attempt started while the path is still
/// down would otherwise wait for the stacks' own retransmissions (QUIC's
/// and TCP's back off to several seconds) after the path is back, where a
/// fresh attempt gets through at once.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);

/// How to reach the server again: the first connection's plan, with the
/// server's certificate now pinned.
pub(super) struct Redial {
    plan: Plan,
    tls: rustls::ClientConfig,
    pub limits: Limits,
}

impl Redial {
    pub fn new(plan: Plan, tls: rustls::ClientConfig, limits: Limits) -> Self {
        Redial {
            plan: Plan {
                timeout: ATTEMPT_TIMEOUT,
                ..plan
            },
            tls,
            limits,
        }
    }
}

/// How reconnecting ended.
pub(super) enum Reconnected {
    /// A connection whose chat is open: the old one resumed, or a new one.
    Back(Box<(Link, PeerInfo, Opened)>),
    /// The server's window passed (or it turned us away): why.
    GaveUp(Disconnect),
}

/// Tries until `deadline` (the end of the server's window, as we count it).
/// `lost` says why the last connection ended.
pub(super) async fn reconnect(
    redial: &Redial,
    resume: Resume,
    lost: &Disconnect,
    deadline: Instant,
    mut out: Output,
) -> Reconnected {
    let mut pause = FIRST_PAUSE;
    let mut reason = lost.describe();
    for attempt in 1.. {
        info!(attempt, "connection lost; reconnecting");
        out.show_now(Shown::Reconnecting {
            attempt,
            reason: reason.clone(),
        });
        let tried = async {
            let won = tokio::time::timeout_at(
                deadline,
                race::race(&redial.plan, &redial.tls, &redial.limits, |_, _| {}),
            )
            .await;
            let mut won = match won {
                Ok(Ok(won)) => won,
                Ok(Err(failures)) => {
                    let listed: Vec<String> = failures.iter().map(|f| f.to_string()).collect();
                    return Ok(Err(listed.join("; ")));
                }
                Err(_) => return Err(()),
            };
            // Past the deadline the attempt is closed, not dropped: a
            // server that took the resume would otherwise hold the chat
            // for a whole new window.
            let opened = tokio::select! {
                opened = open(&mut won.link, &won.peer, &redial.limits, Some(&resume)) => opened,
                () = tokio::time::sleep_until(deadline) => {
                    won.link.close(close_code::NO_ERROR, "the client gave up").await;
                    won.link.finish().await;
                    return Err(());
                }
            };
            match opened {
                Ok(opened) => Ok(Ok(Ok((won.link, won.peer, opened)))),
                Err(Refused(why)) => {
                    won.link.finish().await;
                    Ok(Ok(Err(why)))
                }
            }
        }
        .await;
        // Err: the deadline passed; Ok(Err): no connection; Ok(Ok(Err)):
        // a connection, and the chat not opened on it.
        match tried {
            Ok(Ok(Ok(back))) => return Reconnected::Back(Box::new(back)),
            // Turned away by the server we reached (BUSY: another client
            // has it; UNAUTHORIZED; its own protocol error): the chat is
            // not held for us, and trying again would not change that.
            // What went wrong on our side of this attempt — the connection
            // lost while opening, no WELCOME in time — is tried again.
            Ok(Ok(Err(why))) => match why {
                Disconnect::Lost { reason: r } | Disconnect::Violation { reason: r } => reason = r,
                why => return Reconnected::GaveUp(why),
            },
            Ok(Err(why)) => reason = why,
            Err(()) => break,
        }
        debug!(
            ?pause,
            "pausing before the next attempt: {}",
            sanitize_line(&reason)
        );
        if Instant::now() + pause >= deadline {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
    Reconnected::GaveUp(Disconnect::Lost {
        reason: format!("could not get the chat back in time (last: {reason})"),
    })
}

/// Whether a connection that ended this way may be resumed: it was lost,
/// or the server closed it with REPLACED (docs/protocol.md §12.5).
pub(super) fn resumable(d: &Disconnect) -> bool {
    matches!(d, Disconnect::Lost { .. })
        || matches!(d, Disconnect::Peer { code, .. } if *code == close_code::REPLACED)
}
