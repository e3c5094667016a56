//! Client mode: resolve the server, decide how to trust it, reach it over
//! whichever transport works, open the chat (chat/2: HELLO, WELCOME) and
//! chat until either side leaves.
//!
//! - [`addr`]: where the server is, and its name in known_hosts;
//! - [`trust`]: pinned fingerprint, known host, or first contact;
//! - [`race`]: QUIC first, TCP after a head start, the first to finish wins;
//! - [`memory`]: what is remembered about reaching each server;
//! - [`reconnect`]: getting a lost chat back.

mod addr;
mod memory;
mod race;
mod reconnect;
mod trust;

use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use tracing::{debug, info, warn};

use crate::cli::{ChatArgs, TransportChoice};
use crate::protocol::codec::{Token, Version};
use crate::protocol::{Frame, MessageId, close_code};
use crate::session::{Held, Role, Session};
use crate::transport::{
    Disconnect, Event, Limits, Link, PeerInfo, Transport, TransportKind, agreed_idle_timeout,
    millis,
};
use crate::trust::identity::Identity;
use crate::trust::tls::{self, FingerprintVerifier, ServerTrust};
use crate::ui::output::{OutputThread, Shown};
use crate::ui::render::sanitize_line;
use crate::ui::{self, Quit, UserIo};
pub use addr::{host_key, resolve};
use memory::{Key, Memory};
use race::{AttemptError, Failure, Plan, Won};
use reconnect::{Reconnected, Redial};
use trust::{Trust, TrustSource};

/// How long the output may go without taking anything before the client
/// exits without waiting for it (a stdout that nobody reads).
const OUTPUT_STALL: Duration = Duration::from_secs(2);

/// An answer to the trust question later than this is given on a new
/// connection: the server waits 10 s for HELLO (docs/protocol.md §12.3).
const ANSWER_IN_TIME: Duration = Duration::from_secs(7);

/// How long the server has to answer HELLO with WELCOME (docs/protocol.md
/// §12.3).
const WELCOME_DEADLINE: Duration = Duration::from_secs(10);

/// The user's I/O and the thread that writes its output.
type Io = (UserIo, OutputThread);

/// Runs the client until the chat ends or `quit` (Ctrl-C, /quit). Returns
/// the process exit status.
pub async fn run(args: &ChatArgs, limits: Limits, quit: Quit) -> Result<u8> {
    // Scripts see each connection attempt as an event, so their output
    // starts now. When a person may be asked whether to trust the server
    // (plain mode with stdin at a terminal), standard input must wait for
    // that question, so the output starts after it and attempts are told
    // on stderr.
    let asks = !args.json && std::io::stdin().is_terminal();
    let mut io = (!asks).then(|| ui::stdio(args.json, false, &quit, args.max_message_size));
    let result = connect_and_chat(args, limits, quit, &mut io).await;
    if let Some((mut io, output)) = io {
        io.out.finish();
        if !output.close(OUTPUT_STALL) {
            warn!("standard output took nothing for {OUTPUT_STALL:?}; leaving without it");
        }
    }
    result
}

async fn connect_and_chat(
    args: &ChatArgs,
    limits: Limits,
    mut quit: Quit,
    io: &mut Option<Io>,
) -> Result<u8> {
    let home = crate::trust::identity::home_dir(args.home.as_deref());
    let me = identity(&home)?;
    let host = host_key(&args.addr, args.port)?;
    let trust = Trust::decide(args, &home, host.clone())?;
    let config = tls::client_config(trust.verifier.clone(), Some(&me))?;
    let addrs = resolve(&args.addr, args.port).await?;
    let memory = Memory::in_home(&home);
    let key = Key::new(&host, addrs[0]);
    let known = key.as_ref().map(|k| memory.recall(k)).unwrap_or_default();
    let plan = Plan {
        kinds: args.transport.kinds(),
        addrs,
        delay: known.delay(),
        together: args.transport == TransportChoice::Auto && known.together(),
        timeout: race::CONNECT_TIMEOUT,
    };
    let announce = |kind: TransportKind, addr| {
        info!(%addr, transport = %kind, "connecting");
        match io.as_mut() {
            Some((io, _)) => io.out.show_now(Shown::Connecting {
                transport: kind,
                addr,
            }),
            None => eprintln!("connecting to {addr} over {kind}… (Ctrl-C to give up)"),
        }
    };
    let mut ctrl_c = quit.clone();
    let won = tokio::select! {
        won = race::race(&plan, &config, &limits, announce) => won,
        () = ctrl_c.wait() => bail!("interrupted while connecting to {}", args.addr),
    };
    let won = match won {
        Ok(won) => won,
        Err(failures) => {
            if let Some(f) = failures.first() {
                trust.check_seen(&f.addr)?;
            }
            return Err(unreachable(args, &failures));
        }
    };
    // Only a race teaches anything about reaching the server: a pinned
    // transport says nothing about the other one.
    if let Some(key) = &key
        && args.transport == TransportChoice::Auto
    {
        let rounds = match won.peer.transport {
            // The server's Retry, then QUIC's handshake (ours answers every
            // address it has not validated with a Retry).
            TransportKind::Quic => 2,
            // TCP's handshake, then TLS 1.3's.
            TransportKind::Tcp => 2,
        };
        memory.note(key, won.took / rounds, won.quic_unanswered);
    }
    if let Some(why) = &won.fallback {
        info!("using TCP: {why}");
    }
    let won = match trust.source {
        TrustSource::FirstContact => {
            first_contact(args, &limits, &trust, &me, &plan, won, &mut ctrl_c).await?
        }
        _ => won,
    };
    // A lost chat is got back from the same server only: its certificate
    // is pinned from now on, however it was trusted.
    let tls = match won.peer.fingerprint {
        Some(fp) => {
            tls::client_config(FingerprintVerifier::new(ServerTrust::Pinned(fp)), Some(&me))?
        }
        None => config,
    };
    let redial = Redial::new(plan, tls, limits);
    chat(args, &redial, won, io, &mut quit).await
}

/// A server seen for the first time: the user (or `--accept-new`) decides
/// whether to trust it, while the connection is kept alive. Returns the
/// connection to chat on.
async fn first_contact(
    args: &ChatArgs,
    limits: &Limits,
    trust: &Trust,
    me: &Identity,
    plan: &Plan,
    mut won: Won,
    ctrl_c: &mut Quit,
) -> Result<Won> {
    let asked = Instant::now();
    if let Err(e) = tokio::select! {
        verdict = trust.first_contact(&won.peer, args.json, args.accept_new) => verdict,
        never = won.link.hold() => match never {},
    } {
        won.link
            .close(close_code::NO_ERROR, "server not trusted")
            .await;
        won.link.finish().await;
        return Err(e);
    }
    if asked.elapsed() < ANSWER_IN_TIME {
        return Ok(won);
    }
    // The server gives a connection 10 s to say HELLO; a person may take
    // longer to decide. Now that the server is trusted, a new connection to
    // it is verified like any other, and the old one goes without a frame.
    info!(
        "the trust question took {:?}; connecting again",
        asked.elapsed()
    );
    won.link.abandon();
    let fp = won
        .peer
        .fingerprint
        .context("the server presented no certificate")?;
    let pinned = FingerprintVerifier::new(ServerTrust::Pinned(fp));
    let config = tls::client_config(pinned, Some(me))?;
    let again = tokio::select! {
        won = race::race(plan, &config, limits, |_, _| {}) => won,
        () = ctrl_c.wait() => bail!("interrupted while connecting to {}", args.addr),
    };
    again.map_err(|failures| unreachable(args, &failures))
}

/// Explains why no attempt worked, with what the user can do about it.
fn unreachable(args: &ChatArgs, failures: &[Failure]) -> anyhow::Error {
    let all = |pred: &dyn Fn(&Failure) -> bool| !failures.is_empty() && failures.iter().all(pred);
    let listed = failures
        .iter()
        .map(|f| f.to_string())
        .collect::<Vec<_>>()
        .join("; ");
    if args.transport == TransportChoice::Quic
        && all(&|f| matches!(f.error, AttemptError::NoAnswer))
    {
        return anyhow!(
            "no answer over QUIC from {} within {} s: UDP may be blocked on this network, or no \
             server listens there; try --transport auto (the default) or --transport tcp",
            args.addr,
            race::CONNECT_TIMEOUT.as_secs()
        );
    }
    let refused = failures
        .iter()
        .any(|f| matches!(f.error, AttemptError::Refused));
    if refused
        && all(&|f| {
            matches!(f.error, AttemptError::Refused)
                || (f.kind == TransportKind::Quic && matches!(f.error, AttemptError::NoAnswer))
        })
    {
        let quic = if failures.iter().any(|f| f.kind == TransportKind::Quic) {
            ", and no answer over QUIC"
        } else {
            ""
        };
        return anyhow!(
            "nothing listens on {}: TCP connection refused{quic} (is the server running, and on \
             this port?)",
            args.addr
        );
    }
    anyhow!("cannot connect to {}: {listed}", args.addr)
}

/// The chat on the connection that won: chat/2's HELLO and WELCOME, then
/// the session, over as many connections as it takes (docs/protocol.md
/// §12.5).
async fn chat(
    args: &ChatArgs,
    redial: &Redial,
    won: Won,
    io: &mut Option<Io>,
    quit: &mut Quit,
) -> Result<u8> {
    let Won {
        mut link,
        mut peer,
        fallback,
        ..
    } = won;
    let limits = &redial.limits;
    let (io, _) =
        io.get_or_insert_with(|| ui::stdio(args.json, false, quit, args.max_message_size));
    let opened = tokio::select! {
        opened = open(&mut link, &peer, limits, None) => opened,
        () = quit.wait() => {
            link.close(close_code::NO_ERROR, "the client left").await;
            link.finish().await;
            bail!("interrupted while opening the chat with {}", peer.addr);
        }
    };
    let mut opened = match opened {
        Ok(opened) => opened,
        Err(Refused(why)) => {
            // Turned away before the chat began (BUSY, UNAUTHORIZED, …).
            io.out.show_now(Shown::Disconnected {
                why,
                unacked: Vec::new(),
            });
            link.finish().await;
            return Ok(1);
        }
    };
    connected(io, &peer, fallback);
    let mut session = Session::new(Role::Client, opened.idle_timeout);
    loop {
        let ended = session
            .run(&mut link, io, quit, std::future::pending())
            .await;
        let resume = match &opened.token {
            Some(token)
                if !ended.quit
                    && !args.no_reconnect
                    && !opened.window.is_zero()
                    && reconnect::resumable(&ended.disconnect) =>
            {
                Resume {
                    token: *token,
                    received: session.received_frame(),
                }
            }
            _ => {
                link.finish().await;
                let normal = ended.disconnect.is_normal();
                session.end(ended.disconnect, io, ended.quit);
                return Ok(if normal { 0 } else { 1 });
            }
        };
        // A lost connection's last work is bounded but may take a moment;
        // it must not delay getting the chat back.
        tokio::spawn(link.finish());
        let deadline = tokio::time::Instant::now() + opened.window;
        let back = session
            .hold(
                io,
                quit,
                reconnect::reconnect(redial, resume, &ended.disconnect, deadline, io.out.clone()),
            )
            .await;
        let (new_link, new_peer, new_opened) = match back {
            Held::Done(Reconnected::Back(back)) => *back,
            Held::Done(Reconnected::GaveUp(why)) => {
                session.end(why, io, false);
                return Ok(1);
            }
            Held::Quit => {
                let why = Disconnect::Local {
                    code: close_code::NO_ERROR,
                    reason: "the client left".into(),
                };
                session.end(why, io, true);
                return Ok(0);
            }
        };
        (link, peer, opened) = (new_link, new_peer, new_opened);
        match &opened.resumed {
            Some((below, ids)) => {
                let resumption = session.resume(&mut link, *below, ids);
                link.flush();
                info!(transport = %peer.transport, "chat resumed");
                io.out.show_now(Shown::Resumed {
                    transport: peer.transport,
                    peer: peer.addr,
                    resumption,
                });
            }
            None => {
                // The server no longer holds the chat (it restarted, or the
                // window passed as it counts): what was not confirmed may
                // or may not have arrived. A new chat begins; what the user
                // typed and the session has not read yet goes to it.
                session.report_end(
                    Disconnect::Lost {
                        reason: "the server no longer holds the chat (restarted?); a new chat \
                                 begins"
                            .into(),
                    },
                    io,
                    false,
                );
                connected(io, &peer, None);
                session = session.successor(opened.idle_timeout);
            }
        }
    }
}

fn connected(io: &mut UserIo, peer: &PeerInfo, fallback: Option<String>) {
    io.out.show_now(Shown::Connected {
        transport: peer.transport,
        peer: peer.addr,
        fingerprint: peer.fingerprint,
        label: None,
        fallback,
    });
}

/// The server did not let the chat begin, and why.
struct Refused(Disconnect);

/// A chat to resume: its token, and our RECEIVED for it.
struct Resume {
    token: Token,
    received: Frame,
}

/// What the opening of a chat settled.
struct Opened {
    /// The idle timeout agreed with the server.
    idle_timeout: Duration,
    /// chat/2: the chat's token, to resume it.
    token: Option<Token>,
    /// How long the server holds the chat after a lost connection.
    window: Duration,
    /// A resume the server accepted: its RECEIVED.
    resumed: Option<(MessageId, Vec<MessageId>)>,
}

/// Opens the chat: on chat/2, HELLO (with the token and our RECEIVED, to
/// resume one), then the server's WELCOME (and, when it resumes, its
/// RECEIVED), or its refusal.
async fn open(
    link: &mut Link,
    peer: &PeerInfo,
    limits: &Limits,
    resume: Option<&Resume>,
) -> Result<Opened, Refused> {
    if peer.version == Version::V1 {
        return Ok(Opened {
            idle_timeout: limits.idle_timeout,
            token: None,
            window: Duration::ZERO,
            resumed: None,
        });
    }
    link.send_control(Frame::Hello {
        idle_timeout_ms: millis(limits.idle_timeout),
        token: resume.map(|r| r.token),
    });
    if let Some(r) = resume {
        link.send_control(r.received.clone());
    }
    link.flush();
    let violation = |reason: String| Disconnect::Violation { reason };
    let (token, window, resumed, idle) = match next_within(link, "WELCOME").await? {
        Event::Welcome {
            token,
            resume_window_ms,
            resumed,
            idle_timeout_ms,
        } => (
            token,
            Duration::from_millis(resume_window_ms),
            resumed,
            agreed_idle_timeout(limits.idle_timeout, idle_timeout_ms),
        ),
        Event::Closed(why) => return Err(Refused(why)),
        _ => {
            return Err(refuse(
                link,
                violation("the server sent something before WELCOME".into()),
            )
            .await);
        }
    };
    if resumed && resume.is_none_or(|r| r.token != token) {
        let why = violation("WELCOME resumes a chat that was never asked for".into());
        return Err(refuse(link, why).await);
    }
    link.set_idle_timeout(idle);
    let resumed = if resumed {
        match next_within(link, "RECEIVED").await? {
            Event::Received { below, ids } => Some((below, ids)),
            Event::Closed(why) => return Err(Refused(why)),
            _ => {
                return Err(refuse(
                    link,
                    violation("RECEIVED must follow a resume's WELCOME".into()),
                )
                .await);
            }
        }
    } else {
        None
    };
    debug!(?idle, resumed = resumed.is_some(), "chat/2: welcomed");
    Ok(Opened {
        idle_timeout: idle,
        token: Some(token),
        window,
        resumed,
    })
}

/// The next event, within the 10 s the server has for its opening frames.
async fn next_within(link: &mut Link, what: &str) -> Result<Event, Refused> {
    match tokio::time::timeout(WELCOME_DEADLINE, link.next_event()).await {
        Ok(event) => Ok(event),
        Err(_) => {
            let reason = format!("no {what} within {} s", WELCOME_DEADLINE.as_secs());
            warn!("protocol error: {}", sanitize_line(&reason));
            Err(refuse(link, Disconnect::Violation { reason }).await)
        }
    }
}

/// Closes `link` for a protocol error, and says why.
async fn refuse(link: &mut Link, why: Disconnect) -> Refused {
    if let Disconnect::Violation { reason } = &why {
        link.close(close_code::PROTOCOL_ERROR, reason).await;
    }
    Refused(why)
}

/// The client's own identity, created in its home on first use.
pub fn identity(home: &Path) -> Result<Identity> {
    let dir = Identity::client_dir(home);
    Identity::load_or_create(&dir, &["chat-client".to_string()]).with_context(|| {
        format!(
            "cannot load or create the client identity in {}",
            dir.display()
        )
    })
}
